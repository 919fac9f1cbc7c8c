/* config_sending.c — the sending side of the configuration (SPEC section 1): zones, IP
 * pools, the leased IPs (an IP's cluster node too; config_cluster.c says whether it must
 * or may be given), configuration sets (their event destinations are
 * config_events.c's, list_unsubscribe and feedback_id config_unsub.c's) and the default
 * set, warm-up and shaping. Each reader checks its cross-references (zones, pools,
 * overflow pools, sets) and reports the first problem as "FILE:LINE: KEY.PATH: what is
 * wrong" through the walker (config_yaml.c); config.c calls them in the order of
 * config_read_root and adds the warnings. */
#include "base/config_internal.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_DELIVERY_MS (14 * MS_HOUR)
#define SET_PRIORITY_MIN (-1000)
#define SET_PRIORITY_MAX 1000

static int config_name_index(char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0) return (int)i;
    return -1;
}

int config_pool_index(const config *c, const char *name)
{
    for (size_t i = 0; i < c->npools; i++)
        if (c->pools[i].name && strcmp(c->pools[i].name, name) == 0) return (int)i;
    return -1;
}

/* Error "unknown pool 'x' (pools: a, b)" at node V. */
static int config_unknown_pool(config_parser *p, yaml_node_t *v, const char *name)
{
    strbuf sb;
    strbuf_init(&sb);
    for (size_t i = 0; i < p->cfg->npools; i++)
        strbuf_printf(&sb, "%s%s", i ? ", " : "", p->cfg->pools[i].name);
    if (!sb.len) strbuf_puts(&sb, "none are defined; add it under pools");
    config_fail(p, v, "unknown pool '%s' (pools: %s)", name, sb.buf);
    strbuf_free(&sb);
    return -1;
}

int config_read_pools(config_parser *p, yaml_node_t *v)
{
    static const char *const keys[] = {"name", "scaling", "overflow", NULL};
    config *c = p->cfg;
    size_t n;
    if (config_as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    c->pools = util_calloc(n, sizeof *c->pools);
    c->npools = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = config_item(p, v, i);
        size_t m = config_push_index(p, i);
        if (config_as_map(p, it, keys) < 0) return -1;
        config_pool *pl = &c->pools[i];
        int scaling = CONFIG_SCALING_STANDARD;
        FIELD(it, "name", f, config_as_str(p, f, config_valid_name, CONFIG_WHAT_NAME, &pl->name));
        FIELD(it, "scaling", f, config_as_enum(p, f, config_scaling_names, &scaling));
        pl->scaling = (config_scaling)scaling;
        if (!pl->name) return config_missing(p, LINE(it), "name", NULL);
        yaml_node_t *nn = config_lookup(p, it, "name", NULL);
        if (strcmp(pl->name, "defer") == 0) {
            config_push_key(p, "name");
            return config_fail(p, nn,
                               "'defer' is reserved (overflow: defer means no overflow pool)");
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->pools[j].name, pl->name) == 0) {
                config_push_key(p, "name");
                return config_fail(p, nn, "pool '%s' is already defined (pools[%zu])", pl->name, j);
            }
        config_pop(p, m);
    }
    /* Overflow names another pool: checked once every name is known. */
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = config_item(p, v, i);
        size_t m = config_push_index(p, i);
        config_pool *pl = &c->pools[i];
        yaml_node_t *f = config_lookup(p, it, "overflow", NULL);
        if (f) {
            size_t mk = config_push_key(p, "overflow");
            const char *s = NULL;
            if (config_as_scalar(p, f, "defer or a pool name", &s) < 0) return -1;
            if (strcmp(s, "defer") != 0) {
                if (strcmp(s, pl->name) == 0)
                    return config_fail(p, f,
                                       "a pool cannot overflow to itself (use defer or another "
                                       "pool)");
                if (config_pool_index(c, s) < 0) return config_unknown_pool(p, f, s);
                pl->overflow = util_strdup(s);
            }
            config_pop(p, mk);
        }
        config_pop(p, m);
    }
    return 0;
}

/* An IP literal in binary: family 0 when none. */
typedef struct config_ipbin {
    int family;
    unsigned char a[16];
} config_ipbin;

static bool config_ipbin_parse(const char *s, config_ipbin *b)
{
    memset(b, 0, sizeof *b);
    if (inet_pton(AF_INET, s, b->a) == 1) b->family = AF_INET;
    else if (inet_pton(AF_INET6, s, b->a) == 1) b->family = AF_INET6;
    return b->family != 0;
}

static bool config_ipbin_eq(const config_ipbin *x, const config_ipbin *y)
{
    return x->family && x->family == y->family && memcmp(x->a, y->a, 16) == 0;
}

/* Entry i's address (pub false) or public_address (pub true), b, against every earlier
 * entry's address and public_address: -1 after the error at node f. */
static int config_ip_unique(config_parser *p, yaml_node_t *f, size_t i, bool pub,
                            const config_ipbin *b, const config_ipbin *addrs,
                            const config_ipbin *pubs)
{
    const config *c = p->cfg;
    const char *text = pub ? c->ips[i].public_address : c->ips[i].address;
    for (size_t j = 0; j < i; j++) {
        if (config_ipbin_eq(&addrs[j], b)) {
            if (!pub)
                return config_fail(p, f, "%s is listed twice (also ips[%zu] at line %d)", text, j,
                                   c->ips[j].line);
            return config_fail(p, f, "%s is also the address of ips[%zu] (line %d)", text, j,
                               c->ips[j].line);
        }
        if (config_ipbin_eq(&pubs[j], b))
            return config_fail(p, f, "%s is also the public_address of ips[%zu] (line %d)", text,
                               j, c->ips[j].line);
    }
    return 0;
}

/* ips[i].public_address at f: an IP literal of address's family, not address itself. */
static int config_read_public_address(config_parser *p, yaml_node_t *f, size_t i,
                                      config_ipbin *addrs, config_ipbin *pubs)
{
    config_ip *ip = &p->cfg->ips[i];
    if (config_as_str(p, f, NULL, NULL, &ip->public_address) < 0) return -1;
    if (!config_ipbin_parse(ip->public_address, &pubs[i]))
        return config_fail(p, f,
                           "'%s' is not an IPv4 or IPv6 address (the address the world sees, "
                           "mapped by NAT onto address)",
                           ip->public_address);
    if (pubs[i].family != addrs[i].family)
        return config_fail(p, f, "%s is %s but address %s is %s; NAT maps an address onto one of "
                                 "the same family",
                           ip->public_address, pubs[i].family == AF_INET ? "IPv4" : "IPv6",
                           ip->address, addrs[i].family == AF_INET ? "IPv4" : "IPv6");
    if (config_ipbin_eq(&pubs[i], &addrs[i]))
        return config_fail(p, f,
                           "%s is address itself; leave public_address out when the address "
                           "kiln binds is the one the world sees",
                           ip->public_address);
    return config_ip_unique(p, f, i, true, &pubs[i], addrs, pubs);
}

int config_read_ips(config_parser *p, yaml_node_t *v)
{
    static const char *const keys[] = {"address", "public_address", "zone", "pool", "ehlo",
                                       "warmup", "node", NULL};
    config *c = p->cfg;
    size_t n;
    if (config_as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    c->ips = util_calloc(n, sizeof *c->ips);
    c->nips = n;
    config_ipbin *addrs = util_calloc(n, sizeof *addrs);
    config_ipbin *pubs = util_calloc(n, sizeof *pubs);
    int rc = -1;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = config_item(p, v, i);
        size_t m = config_push_index(p, i);
        config_ip *ip = &c->ips[i];
        ip->line = LINE(it);
        if (config_as_map(p, it, keys) < 0) goto out;
        yaml_node_t *f;
        if (!(f = config_lookup(p, it, "address", NULL))) {
            config_missing(p, LINE(it), "address", NULL);
            goto out;
        }
        size_t mk = config_push_key(p, "address");
        if (config_as_str(p, f, NULL, NULL, &ip->address) < 0) goto out;
        if (!config_ipbin_parse(ip->address, &addrs[i])) {
            config_fail(p, f, "'%s' is not an IPv4 or IPv6 address", ip->address);
            goto out;
        }
        if (config_ip_unique(p, f, i, false, &addrs[i], addrs, pubs) < 0) goto out;
        config_pop(p, mk);

        if ((f = config_lookup(p, it, "public_address", NULL))) {
            mk = config_push_key(p, "public_address");
            if (config_read_public_address(p, f, i, addrs, pubs) < 0) goto out;
            config_pop(p, mk);
        }

        if (!(f = config_lookup(p, it, "zone", NULL))) {
            config_missing(p, LINE(it), "zone", NULL);
            goto out;
        }
        mk = config_push_key(p, "zone");
        if (config_as_str(p, f, NULL, NULL, &ip->zone) < 0) goto out;
        if (config_name_index(c->zones, c->nzones, ip->zone) < 0) {
            strbuf sb;
            strbuf_init(&sb);
            config_names_text(&sb, c->zones, c->nzones, "none are defined; add it under zones");
            config_fail(p, f, "unknown zone '%s' (zones: %s)", ip->zone, sb.buf);
            strbuf_free(&sb);
            goto out;
        }
        config_pop(p, mk);

        if (!(f = config_lookup(p, it, "pool", NULL))) {
            config_missing(p, LINE(it), "pool", NULL);
            goto out;
        }
        mk = config_push_key(p, "pool");
        if (config_as_str(p, f, NULL, NULL, &ip->pool) < 0) goto out;
        if (config_pool_index(c, ip->pool) < 0) {
            config_unknown_pool(p, f, ip->pool);
            goto out;
        }
        config_pop(p, mk);

        if ((f = config_lookup(p, it, "ehlo", NULL))) {
            mk = config_push_key(p, "ehlo");
            if (config_as_str(p, f, config_valid_hostname, "a valid host name", &ip->ehlo) < 0)
                goto out;
            config_pop(p, mk);
        }
        if ((f = config_lookup(p, it, "warmup", NULL))) {
            mk = config_push_key(p, "warmup");
            const char *s = NULL;
            if (config_as_scalar(p, f, "done", &s) < 0) goto out;
            if (strcmp(s, "done") != 0) {
                config_fail(p, f,
                            "only 'done' is allowed, not '%s' (leave warmup out for a new IP "
                            "that must warm up)",
                            s);
                goto out;
            }
            ip->warmup = CONFIG_WARMUP_DONE;
            config_pop(p, mk);
        }
        /* cluster (issue 17): whether it must or may be there is config_cluster.c's check */
        if ((f = config_lookup(p, it, "node", NULL))) {
            mk = config_push_key(p, "node");
            if (config_as_str(p, f, config_valid_name, CONFIG_WHAT_NAME, &ip->node) < 0)
                goto out;
            config_pop(p, mk);
        }
        config_pop(p, m);
    }
    rc = 0;
out:
    free(addrs);
    free(pubs);
    return rc;
}

static int config_read_max_delivery(config_parser *p, yaml_node_t *v, config_set *s)
{
    if (config_as_duration(p, v, true, &s->max_delivery_time_ms) < 0) return -1;
    if (s->max_delivery_time_ms > MAX_DELIVERY_MS)
        return config_fail(p, v,
                           "%s is more than 14h, the longest a message may stay queued "
                           "(as SES MaxDeliverySeconds)",
                           config_sval(v));
    return 0;
}

static int config_read_set_pool(config_parser *p, yaml_node_t *v, config_set *s)
{
    if (config_as_str(p, v, NULL, NULL, &s->pool) < 0) return -1;
    if (config_pool_index(p->cfg, s->pool) < 0) return config_unknown_pool(p, v, s->pool);
    return 0;
}

int config_read_sets(config_parser *p, yaml_node_t *v)
{
    static const char *const keys[] = {"name", "pool", "tls_policy", "max_delivery_time",
                                       "events", "priority", "list_unsubscribe",
                                       "feedback_id", NULL};
    config *c = p->cfg;
    size_t n;
    if (config_as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    c->sets = util_calloc(n, sizeof *c->sets);
    c->nsets = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = config_item(p, v, i);
        size_t m = config_push_index(p, i);
        config_set *s = &c->sets[i];
        s->max_delivery_time_ms = MAX_DELIVERY_MS;
        if (config_as_map(p, it, keys) < 0) return -1;
        FIELD(it, "name", f, config_as_str(p, f, config_valid_name, CONFIG_WHAT_NAME, &s->name));
        if (!s->name) return config_missing(p, LINE(it), "name", NULL);
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->sets[j].name, s->name) == 0) {
                config_push_key(p, "name");
                return config_fail(
                    p, config_lookup(p, it, "name", NULL),
                    "configuration set '%s' is already defined (configuration_sets[%zu])", s->name,
                    j);
            }
        if (!config_lookup(p, it, "pool", NULL))
            return config_missing(p, LINE(it), "pool", "(the IP pool this set sends from)");
        FIELD(it, "pool", f, config_read_set_pool(p, f, s));
        int tls = CONFIG_TLS_OPTIONAL;
        FIELD(it, "tls_policy", f, config_as_enum(p, f, config_tls_names, &tls));
        s->tls_policy = (config_tls_policy)tls;
        FIELD(it, "max_delivery_time", f, config_read_max_delivery(p, f, s));
        FIELD(it, "events", f, config_read_events(p, f, s));
        FIELD(it, "priority", f,
              config_as_int32(p, f, SET_PRIORITY_MIN, SET_PRIORITY_MAX,
                              "a whole number from -1000 to 1000 (higher is served first)",
                              &s->priority));
        if (config_read_set_unsub(p, it, s) < 0) return -1;
        config_pop(p, m);
    }
    return 0;
}

int config_read_default_set(config_parser *p, yaml_node_t *root)
{
    config *c = p->cfg;
    yaml_node_t *setskey = NULL, *defkey = NULL;
    config_lookup(p, root, "configuration_sets", &setskey);
    yaml_node_t *v = config_lookup(p, root, "default_configuration_set", &defkey);
    if (c->nsets == 0) {
        config_push_key(p, "configuration_sets");
        return config_fail_at(p, config_line_of(setskey, config_line_of(defkey, 1)),
                              "at least one configuration set is needed (e.g. {name: txn, pool: "
                              "transactional}), and default_configuration_set naming it");
    }
    strbuf sb;
    strbuf_init(&sb);
    for (size_t i = 0; i < c->nsets; i++)
        strbuf_printf(&sb, "%s%s", i ? ", " : "", c->sets[i].name);
    int rc = 0;
    if (!v) {
        config_push_key(p, "default_configuration_set");
        rc = config_fail_at(p, config_line_of(setskey, 1),
                            "required key is missing (the set for mail without a "
                            "X-SES-CONFIGURATION-SET header; sets: %s)",
                            sb.buf);
    } else {
        size_t m = config_push_key(p, "default_configuration_set");
        rc = config_as_str(p, v, NULL, NULL, &c->default_set);
        if (rc == 0 && !config_find_set(c, c->default_set))
            rc = config_fail(p, v, "unknown configuration set '%s' (sets: %s)", c->default_set,
                             sb.buf);
        if (rc == 0) config_pop(p, m);
    }
    strbuf_free(&sb);
    return rc;
}

int config_read_warmup(config_parser *p, yaml_node_t *m)
{
    static const char *const keys[] = {"days", "first_day", "target", "advance", "pacing", NULL};
    config_warmup *w = &p->cfg->warmup;
    if (config_as_map(p, m, keys) <= 0) return p->err ? -1 : 0;
    int advance = CONFIG_ADVANCE_CALENDAR;
    FIELD(m, "days", v, config_as_int32(p, v, 1, INT_MAX, NULL, &w->days));
    FIELD(m, "first_day", v, config_as_int(p, v, 1, INT64_MAX, NULL, &w->first_day));
    FIELD(m, "target", v, config_as_int(p, v, 1, INT64_MAX, NULL, &w->target));
    FIELD(m, "advance", v, config_as_enum(p, v, config_advance_names, &advance));
    w->advance = (config_advance)advance;
    FIELD(m, "pacing", v, config_as_int32(p, v, 0, 24, "0 (off) to 24", &w->pacing));
    if (w->target < w->first_day) {
        yaml_node_t *t = config_lookup(p, m, "target", NULL);
        config_push_key(p, t ? "target" : "first_day");
        return config_fail(p, t ? t : config_lookup(p, m, "first_day", NULL),
                           "target (%lld) must not be below first_day (%lld)", (long long)w->target,
                           (long long)w->first_day);
    }
    return 0;
}

/* connections, messages_per_connection and rate of M into L. */
static int config_read_limits(config_parser *p, yaml_node_t *m, config_shaping_limits *l)
{
    FIELD(m, "connections", v, config_as_int32(p, v, 1, INT_MAX, NULL, &l->connections));
    FIELD(m, "messages_per_connection", v,
          config_as_int32(p, v, 1, INT_MAX, NULL, &l->messages_per_connection));
    FIELD(m, "rate", v, config_as_rate(p, v, &l->rate));
    return 0;
}

static int config_read_shaping_default(config_parser *p, yaml_node_t *v)
{
    static const char *const keys[] = {"connections", "messages_per_connection", "rate", NULL};
    if (config_as_map(p, v, keys) <= 0) return p->err ? -1 : 0;
    return config_read_limits(p, v, &p->cfg->shaping_default);
}

static int config_read_providers(config_parser *p, yaml_node_t *v)
{
    static const char *const keys[] = {"name", "mx_suffix", "connections",
                                       "messages_per_connection", "rate", NULL};
    config *c = p->cfg;
    size_t n;
    if (config_as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    c->providers = util_calloc(n, sizeof *c->providers);
    c->nproviders = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = config_item(p, v, i);
        size_t m = config_push_index(p, i);
        config_provider *pr = &c->providers[i];
        pr->limits.connections = -1;
        pr->limits.messages_per_connection = -1;
        pr->limits.rate.count = -1;
        pr->limits.rate.per_ms = 0;
        if (config_as_map(p, it, keys) < 0) return -1;
        FIELD(it, "name", f, config_as_str(p, f, config_valid_name, CONFIG_WHAT_NAME, &pr->name));
        if (!pr->name) return config_missing(p, LINE(it), "name", NULL);
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->providers[j].name, pr->name) == 0) {
                config_push_key(p, "name");
                return config_fail(p, config_lookup(p, it, "name", NULL),
                                   "provider '%s' is already defined (providers[%zu])", pr->name,
                                   j);
            }
        FIELD(it, "mx_suffix", f,
              config_as_strv(p, f, config_valid_hostname, "a domain (e.g. google.com)", true, true,
                             &pr->mx_suffix, &pr->nmx_suffix));
        if (pr->nmx_suffix == 0)
            return config_missing(p, LINE(it), "mx_suffix",
                                  "(the MX host suffixes of this provider, e.g. [google.com])");
        if (config_read_limits(p, it, &pr->limits) < 0) return -1;
        config_pop(p, m);
    }
    return 0;
}

int config_read_shaping(config_parser *p, yaml_node_t *m)
{
    static const char *const keys[] = {"default", "providers", NULL};
    if (config_as_map(p, m, keys) <= 0) return p->err ? -1 : 0;
    FIELD(m, "default", v, config_read_shaping_default(p, v));
    FIELD(m, "providers", v, config_read_providers(p, v));
    return 0;
}

int config_read_zones(config_parser *p, yaml_node_t *v)
{
    return config_as_strv(p, v, config_valid_name, CONFIG_WHAT_NAME, false, true, &p->cfg->zones,
                          &p->cfg->nzones);
}

/* Warnings: legal but risky choices. */
