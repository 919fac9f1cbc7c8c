/* config_tls.c — the outbound TLS keys of the delivery section: `tls_ca_file` (the PEM CA
 * bundle that `verify` and MTA-STS trust; default the system store) and `mta_sts`
 * (`fetch_timeout`, `cache_size`, and `port`, a lab/test key for an MTA-STS policy server
 * on another port than 443). The per-set level itself, configuration_sets[].tls_policy, is
 * read with the sets (config_sending.c).
 *
 * Promises: every value is checked here, so a bad one is a --check-config error naming the
 * file, line and key; defaults are set before reading. */
#include <stdint.h>

#include "base/config.h"
#include "base/config_internal.h"

#define MTA_STS_TIMEOUT_DEFAULT_MS (10 * MS_SECOND)
#define MTA_STS_TIMEOUT_MAX_MS (5 * MS_MINUTE)
#define MTA_STS_CACHE_DEFAULT 10000
#define MTA_STS_CACHE_MAX 10000000

void config_tls_defaults(config *c)
{
    c->tls_ca_file = NULL;
    c->mta_sts_fetch_timeout_ms = MTA_STS_TIMEOUT_DEFAULT_MS;
    c->mta_sts_cache_size = MTA_STS_CACHE_DEFAULT;
    c->mta_sts_port = 443;
}

static int config_read_mta_sts(config_parser *p, yaml_node_t *v)
{
    static const char *const keys[] = {"fetch_timeout", "cache_size", "port", NULL};
    config *c = p->cfg;
    if (config_as_map(p, v, keys) <= 0) return p->err ? -1 : 0;
    FIELD(v, "fetch_timeout", f, config_as_duration(p, f, true, &c->mta_sts_fetch_timeout_ms));
    yaml_node_t *t = config_lookup(p, v, "fetch_timeout", NULL);
    if (t && c->mta_sts_fetch_timeout_ms > MTA_STS_TIMEOUT_MAX_MS) {
        config_push_key(p, "fetch_timeout");
        return config_fail(p, t, "must be at most 5m, not %s", config_sval(t));
    }
    FIELD(v, "cache_size", f,
          config_as_int(p, f, 1, MTA_STS_CACHE_MAX, "a number of domains from 1 to 10000000",
                        &c->mta_sts_cache_size));
    FIELD(v, "port", f, config_as_int32(p, f, 1, 65535, NULL, &c->mta_sts_port));
    return 0;
}

int config_read_delivery_tls(config_parser *p, yaml_node_t *m)
{
    config *c = p->cfg;
    FIELD(m, "tls_ca_file", f, config_read_readable_file(p, f, &c->tls_ca_file));
    FIELD(m, "mta_sts", f, config_read_mta_sts(p, f));
    return 0;
}
