/* config.c — loads and validates kiln's YAML configuration (SPEC section 1) into the
 * immutable, reference-counted struct config of config.h: the sections, their defaults and
 * cross-references, and the warnings.
 *
 * Promises: config_load stops at the first problem, reported by the walker (config_yaml.c)
 * as "FILE:LINE: KEY.PATH: what is wrong"; every cross-reference (zones, pools,
 * configuration sets, overflow pools) is checked; relative paths are made absolute against
 * the config file's directory; findings that are legal but risky (small or single-zone
 * pools, a very short max_delivery_time) become warnings. Whether this system can check a
 * password hash is the caller's to say (config_hash_check): base/ knows no mta/ code.
 * This file reads server, dns, submission, account, delivery and routes; the sending side
 * (zones, pools, IPs, configuration sets, warm-up, shaping) is config_sending.c, the api
 * section config_api.c, the feedback section config_feedback.c, the cluster section
 * config_cluster.c. */
#include "base/config_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/log.h"

#define SHORT_DELIVERY_MS (5 * MS_MINUTE)
#define RECOMMENDED_POOL_IPS 3
#define QUEUE_MEMORY_DEFAULT 200000
#define QUEUE_MEMORY_MIN 100

__attribute__((format(printf, 2, 3)))
static void config_warn(config *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    c->warnings = util_realloc(c->warnings, (c->nwarnings + 1) * sizeof *c->warnings);
    c->warnings[c->nwarnings++] = util_vasprintf(fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------------------------
 * Sections
 * ---------------------------------------------------------------------------------------- */

static const char *const config_level_names[] = {"debug", "info", "warning", "error", NULL};
const char *const config_mode_names[] = {"sandbox", "production", NULL};
const char *const config_scaling_names[] = {"standard", "managed", NULL};
const char *const config_tls_names[] = {"optional", "require", "verify", "dane", "mta-sts", NULL};
const char *const config_advance_names[] = {"calendar", "volume", NULL};

void config_names_text(strbuf *sb, char *const *names, size_t n, const char *none)
{
    if (n == 0) strbuf_puts(sb, none);
    else config_fmt_list(sb, names, n);
}

static int config_read_log(config_parser *p, yaml_node_t *v)
{
    const char *s = NULL;
    if (config_as_scalar(p, v, "stderr or a file path", &s) < 0) return -1;
    if (!*s) return config_fail(p, v, "must not be empty (use stderr or a file path)");
    free(p->cfg->log);
    p->cfg->log = strcmp(s, "stderr") == 0 ? util_strdup(s) : config_resolve_path(p->cfg->dir, s);
    return 0;
}

static int config_read_log_level(config_parser *p, yaml_node_t *v)
{
    int i = 0;
    if (config_as_enum(p, v, config_level_names, &i) < 0) return -1;
    p->cfg->log_level = log_level_parse(config_level_names[i]);
    return 0;
}

static int config_read_server(config_parser *p, yaml_node_t *root)
{
    static const char *const keys[] = {"hostname", "region", "spool", "control_socket", "log",
                                       "log_level", "user", "group", NULL};
    config *c = p->cfg;
    yaml_node_t *key = NULL;
    yaml_node_t *m = config_lookup(p, root, "server", &key);
    size_t mark = config_push_key(p, "server");
    if (m && config_as_map(p, m, keys) < 0) return -1;
    FIELD(m, "hostname", v,
          config_as_str(p, v, config_valid_hostname, "a valid host name", &c->hostname));
    if (!c->hostname)
        return config_missing(p, config_line_of(key, 1), "hostname",
                              "(the EHLO name, e.g. mta.example.com)");
    FIELD(m, "region", v, config_as_str(p, v, config_valid_name, CONFIG_WHAT_NAME, &c->region));
    FIELD(m, "spool", v, config_as_path(p, v, &c->spool));
    FIELD(m, "control_socket", v, config_as_path(p, v, &c->control_socket));
    FIELD(m, "log", v, config_read_log(p, v));
    FIELD(m, "log_level", v, config_read_log_level(p, v));
    FIELD(m, "user", v, config_as_str(p, v, config_valid_account, WHAT_ACCOUNT, &c->user));
    FIELD(m, "group", v, config_as_str(p, v, config_valid_account, WHAT_ACCOUNT, &c->group));
    if (!c->spool) c->spool = config_resolve_path(c->dir, "spool");
    if (!c->control_socket) c->control_socket = config_resolve_path(c->spool, "kilnd.sock");
    size_t sun_max = sizeof(((struct sockaddr_un *)0)->sun_path);
    if (strlen(c->control_socket) >= sun_max) {
        yaml_node_t *ck = NULL;
        config_lookup(p, m, "control_socket", &ck);
        config_push_key(p, "control_socket");
        return config_fail_at(p, config_line_of(ck, config_line_of(key, 1)),
                              "'%s' is %zu bytes long; a Unix socket path must be shorter than %zu "
                              "(set a shorter server.control_socket)",
                              c->control_socket, strlen(c->control_socket), sun_max);
    }
    config_pop(p, mark);
    return 0;
}

static int config_read_dns_servers(config_parser *p, yaml_node_t *v)
{
    config *c = p->cfg;
    size_t n;
    if (config_as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    c->dns_servers = util_calloc(n, sizeof *c->dns_servers);
    c->ndns_servers = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = config_item(p, v, i);
        size_t m = config_push_index(p, i);
        const char *s = NULL;
        if (config_as_scalar(p, it, "IP or IP:port", &s) < 0) return -1;
        config_hostport hp;
        if (config_parse_hostport(s, 53, &hp) < 0)
            return config_fail(p, it, "'%s' is not IP or IP:port (e.g. 127.0.0.1:5353, [::1]:53)",
                               s);
        c->dns_servers[i] = hp;
        if (!config_is_ip(hp.host))
            return config_fail(
                p, it, "'%s' is not an IP address (name servers are given by address)", hp.host);
        config_pop(p, m);
    }
    return 0;
}

static int config_read_dns(config_parser *p, yaml_node_t *m)
{
    static const char *const keys[] = {"servers", "timeout", NULL};
    if (config_as_map(p, m, keys) <= 0) return p->err ? -1 : 0;
    FIELD(m, "servers", v, config_read_dns_servers(p, v));
    FIELD(m, "timeout", v, config_as_duration(p, v, true, &p->cfg->dns_timeout_ms));
    return 0;
}

int config_read_hostports(config_parser *p, yaml_node_t *v, bool need_one, int example_port,
                          config_hostport **out, size_t *nout)
{
    size_t n;
    if (config_as_list(p, v, &n) < 0) return -1;
    if (n == 0) {
        if (!need_one) return 0;
        return config_fail(p, v, "at least one listen address is needed (e.g. [127.0.0.1:%d])",
                           example_port);
    }
    config_hostport *hp = *out = util_calloc(n, sizeof *hp);
    *nout = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = config_item(p, v, i);
        size_t m = config_push_index(p, i);
        const char *s = NULL;
        if (config_as_scalar(p, it, "host:port", &s) < 0) return -1;
        if (config_parse_hostport(s, 0, &hp[i]) < 0)
            return config_fail(p, it, "'%s' is not host:port (e.g. 127.0.0.1:%d, [::1]:%d)", s,
                               example_port, example_port);
        for (size_t j = 0; j < i; j++)
            if (hp[j].port == hp[i].port && strcmp(hp[j].host, hp[i].host) == 0)
                return config_fail(p, it, "'%s' is listed twice", s);
        config_pop(p, m);
    }
    return 0;
}

static int config_read_listen(config_parser *p, yaml_node_t *v)
{
    return config_read_hostports(p, v, true, 2587, &p->cfg->listen, &p->cfg->nlisten);
}

int config_read_readable_file(config_parser *p, yaml_node_t *v, char **path)
{
    if (config_as_path(p, v, path) < 0) return -1;
    struct stat st;
    if (access(*path, R_OK) < 0 || stat(*path, &st) < 0)
        return config_fail(p, v, "cannot read %s: %s", *path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return config_fail(p, v, "%s is not a regular file", *path);
    return 0;
}

static int config_read_tls(config_parser *p, yaml_node_t *v)
{
    static const char *const keys[] = {"cert", "key", NULL};
    config *c = p->cfg;
    if (config_as_map(p, v, keys) < 0) return -1;
    yaml_node_t *m = config_is_null(v) ? NULL : v;
    if (!config_lookup(p, m, "cert", NULL))
        return config_missing(p, LINE(v), "cert", "(STARTTLS needs both cert and key)");
    if (!config_lookup(p, m, "key", NULL))
        return config_missing(p, LINE(v), "key", "(STARTTLS needs both cert and key)");
    FIELD(m, "cert", f, config_read_readable_file(p, f, &c->tls_cert));
    FIELD(m, "key", f, config_read_readable_file(p, f, &c->tls_key));
    return 0;
}

#define WHAT_HASH                                                                             \
    "a crypt(3) hash (e.g. $y$... from mkpasswd -m yescrypt, or $6$...; argon2 is not in "    \
    "libcrypt)"

/* A "$id$..." hash of a method this system's libcrypt implements, as the caller's
 * hash_usable says (argon2, for one, is not in Debian's libcrypt: such a hash would load and
 * never match). Without hash_usable only the shape is checked. */
static int config_read_password_hash(config_parser *p, yaml_node_t *v, char **out)
{
    if (config_as_str(p, v, config_valid_crypt_hash, WHAT_HASH, out) < 0) return -1;
    if (p->hash_usable && !p->hash_usable(*out))
        return config_fail(p, v, "'%s' is not %s", *out, WHAT_HASH);
    return 0;
}

static int config_read_auth(config_parser *p, yaml_node_t *v)
{
    static const char *const keys[] = {"user", "password_hash", "identities",
                                       "configuration_sets", NULL};
    config *c = p->cfg;
    size_t n;
    if (config_as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    c->auth = util_calloc(n, sizeof *c->auth);
    c->nauth = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = config_item(p, v, i);
        size_t m = config_push_index(p, i);
        if (config_as_map(p, it, keys) < 0) return -1;
        config_auth_user *a = &c->auth[i];
        FIELD(it, "user", f,
              config_as_str(p, f, config_valid_user, "a user name without blanks", &a->user));
        FIELD(it, "password_hash", f, config_read_password_hash(p, f, &a->password_hash));
        if (config_read_scope(p, it, a) < 0) return -1;
        if (!a->user) return config_missing(p, LINE(it), "user", NULL);
        if (!a->password_hash)
            return config_missing(p, LINE(it), "password_hash", "(a crypt(3) hash, e.g. $y$...)");
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->auth[j].user, a->user) == 0) {
                config_push_key(p, "user");
                return config_fail(p, config_lookup(p, it, "user", NULL),
                                   "user '%s' is listed twice", a->user);
            }
        config_pop(p, m);
    }
    return 0;
}

/* submission.auth_failures: {max, window} */
static int config_read_auth_failures(config_parser *p, yaml_node_t *v)
{
    static const char *const keys[] = {"max", "window", NULL};
    config *c = p->cfg;
    if (config_as_map(p, v, keys) <= 0) return p->err ? -1 : 0;
    FIELD(v, "max", f, config_as_int32(p, f, 1, 1000000, NULL, &c->auth_failures_max));
    FIELD(v, "window", f, config_as_duration(p, f, true, &c->auth_failures_window_ms));
    return 0;
}

static int config_read_trusted(config_parser *p, yaml_node_t *v)
{
    config *c = p->cfg;
    size_t n;
    if (config_as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    c->trusted = util_calloc(n, sizeof *c->trusted);
    c->ntrusted = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = config_item(p, v, i);
        size_t m = config_push_index(p, i);
        const char *s = NULL;
        if (config_as_scalar(p, it, "a network", &s) < 0) return -1;
        if (config_parse_cidr(s, &c->trusted[i]) < 0) {
            config_cidr loose;
            if (config_cidr_parse(s, &loose, false) == 0) {
                strbuf sb;
                strbuf_init(&sb);
                config_cidr_to_text(&loose, &sb);
                config_fail(p, it, "'%s' has bits set after the prefix (did you mean %s?)", s,
                            sb.buf);
                strbuf_free(&sb);
                return -1;
            }
            return config_fail(
                p, it, "'%s' is not a network (use e.g. 127.0.0.0/8, ::1/128, 10.0.0.5)", s);
        }
        config_pop(p, m);
    }
    return 0;
}

/* submission.max_inflight_bytes: a size, at least 1MB and at least max_message_size (read
 * before it in config_read_submission). */
static int config_read_inflight(config_parser *p, yaml_node_t *v)
{
    int64_t x;
    if (config_as_size(p, v, &x) < 0) return -1;
    if (x < KB * KB) return config_fail(p, v, "must be at least 1MB, not %s", config_sval(v));
    if (x < p->cfg->max_message_size)
        return config_fail(p, v,
                           "must be at least submission.max_message_size (%lld bytes), or no "
                           "message of the largest size could ever be accepted",
                           (long long)p->cfg->max_message_size);
    p->cfg->max_inflight_bytes = x;
    return 0;
}

static int config_read_submission(config_parser *p, yaml_node_t *m)
{
    static const char *const keys[] = {"listen", "tls", "auth", "trusted_networks",
                                       "max_message_size", "max_recipients",
                                       "auth_failures", "max_sessions", "reserved_sessions",
                                       "max_sessions_per_client",
                                       "max_connection_rate_per_client",
                                       "limit_trusted_clients", "session_deadline",
                                       "min_data_rate", "min_data_rate_window",
                                       "max_junk_commands", "max_inflight_bytes", NULL};
    config *c = p->cfg;
    if (config_as_map(p, m, keys) <= 0) return p->err ? -1 : 0;
    FIELD(m, "listen", v, config_read_listen(p, v));
    FIELD(m, "tls", v, config_read_tls(p, v));
    FIELD(m, "auth", v, config_read_auth(p, v));
    FIELD(m, "trusted_networks", v, config_read_trusted(p, v));
    FIELD(m, "max_message_size", v, config_as_size(p, v, &c->max_message_size));
    FIELD(m, "max_recipients", v, config_as_int32(p, v, 1, INT_MAX, NULL, &c->max_recipients));
    FIELD(m, "auth_failures", v, config_read_auth_failures(p, v));
    if (config_read_submission_limits(p, m) < 0) return -1;
    FIELD(m, "max_inflight_bytes", v, config_read_inflight(p, v));
    return 0;
}

static int config_read_send_rate(config_parser *p, yaml_node_t *v)
{
    double x;
    if (config_as_decimal(p, v, &x) < 0) return -1;
    if (x != -1 && !(x > 0))
        return config_fail(p, v, "must be -1 (unlimited) or more than 0, not %s", config_sval(v));
    p->cfg->max_send_rate = x;
    return 0;
}

static int config_read_reasons(config_parser *p, yaml_node_t *v)
{
    static const char *const names[] = {"BOUNCE", "COMPLAINT", NULL};
    size_t n;
    if (config_as_list(p, v, &n) < 0) return -1;
    unsigned bits = 0;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = config_item(p, v, i);
        size_t m = config_push_index(p, i);
        int r;
        if (config_as_enum(p, it, names, &r) < 0) return -1;
        unsigned bit = r == 0 ? CONFIG_SUPPRESS_BOUNCE : CONFIG_SUPPRESS_COMPLAINT;
        if (bits & bit) return config_fail(p, it, "%s is listed twice", names[r]);
        bits |= bit;
        config_pop(p, m);
    }
    p->cfg->suppression_reasons = bits;
    return 0;
}

static int config_read_suppression(config_parser *p, yaml_node_t *v)
{
    static const char *const keys[] = {"reasons", NULL};
    if (config_as_map(p, v, keys) <= 0) return p->err ? -1 : 0;
    FIELD(v, "reasons", r, config_read_reasons(p, r));
    return 0;
}

#define WHAT_IDENTITY "a domain or an address (e.g. example.com, ops@example.com)"

static int config_read_account(config_parser *p, yaml_node_t *m)
{
    static const char *const keys[] = {"mode", "max_24h_send", "max_send_rate", "identities",
                                       "verified_recipients", "suppression", NULL};
    config *c = p->cfg;
    if (config_as_map(p, m, keys) <= 0) return p->err ? -1 : 0;
    int mode = (int)c->mode;
    FIELD(m, "mode", v, config_as_enum(p, v, config_mode_names, &mode));
    c->mode = (config_mode)mode;
    FIELD(m, "max_24h_send", v,
          config_as_int(p, v, -1, INT64_MAX, "-1 (unlimited) or at least 0", &c->max_24h_send));
    FIELD(m, "max_send_rate", v, config_read_send_rate(p, v));
    FIELD(m, "identities", v, config_read_identities(p, v));
    FIELD(m, "verified_recipients", v,
          config_as_strv(p, v, config_valid_identity, WHAT_IDENTITY, true, false,
                         &c->verified_recipients, &c->nverified_recipients));
    FIELD(m, "suppression", v, config_read_suppression(p, v));
    return 0;
}

static int config_read_retry(config_parser *p, yaml_node_t *v)
{
    static const char *const keys[] = {"first", "max_interval", "factor", NULL};
    config *c = p->cfg;
    if (config_as_map(p, v, keys) <= 0) return p->err ? -1 : 0;
    FIELD(v, "first", f, config_as_duration(p, f, true, &c->retry_first_ms));
    FIELD(v, "max_interval", f, config_as_duration(p, f, true, &c->retry_max_interval_ms));
    FIELD(v, "factor", f, config_as_decimal(p, f, &c->retry_factor));
    yaml_node_t *fn = config_lookup(p, v, "factor", NULL);
    if (fn && c->retry_factor < 1) {
        config_push_key(p, "factor");
        return config_fail(p, fn, "must be at least 1, not %s", config_sval(fn));
    }
    if (c->retry_max_interval_ms < c->retry_first_ms) {
        yaml_node_t *mi = config_lookup(p, v, "max_interval", NULL);
        yaml_node_t *fi = config_lookup(p, v, "first", NULL);
        strbuf a, b;
        strbuf_init(&a);
        strbuf_init(&b);
        config_fmt_duration(&a, c->retry_max_interval_ms);
        config_fmt_duration(&b, c->retry_first_ms);
        config_push_key(p, mi ? "max_interval" : "first");
        config_fail(p, mi ? mi : fi, "max_interval (%s) must not be shorter than first (%s)", a.buf,
                    b.buf);
        strbuf_free(&a);
        strbuf_free(&b);
        return -1;
    }
    return 0;
}

static int config_read_delivery(config_parser *p, yaml_node_t *m)
{
    static const char *const keys[] = {"remote_port", "retry", "connect_timeout",
                                       "queue_memory_recipients", "allow_private_mx",
                                       "tls_ca_file", "mta_sts", NULL};
    static const char *const bools[] = {"false", "true", NULL};
    config *c = p->cfg;
    if (config_as_map(p, m, keys) <= 0) return p->err ? -1 : 0;
    FIELD(m, "remote_port", v, config_as_int32(p, v, 1, 65535, NULL, &c->remote_port));
    FIELD(m, "retry", v, config_read_retry(p, v));
    FIELD(m, "connect_timeout", v, config_as_duration(p, v, true, &c->connect_timeout_ms));
    FIELD(m, "queue_memory_recipients", v,
          config_as_int(p, v, QUEUE_MEMORY_MIN, INT64_MAX, NULL, &c->queue_memory_recipients));
    int allow = 0;
    FIELD(m, "allow_private_mx", v, config_as_enum(p, v, bools, &allow));
    c->allow_private_mx = allow == 1;
    return config_read_delivery_tls(p, m);
}

static int config_read_routes(config_parser *p, yaml_node_t *v)
{
    static const char *const keys[] = {"domain", "host", "port", NULL};
    config *c = p->cfg;
    size_t n;
    if (config_as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    c->routes = util_calloc(n, sizeof *c->routes);
    c->nroutes = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = config_item(p, v, i);
        size_t m = config_push_index(p, i);
        if (config_as_map(p, it, keys) < 0) return -1;
        config_route *r = &c->routes[i];
        r->port = c->remote_port;
        FIELD(it, "domain", f, config_as_str(p, f, config_valid_hostname, "a domain", &r->domain));
        FIELD(it, "host", f,
              config_as_str(p, f, config_valid_next_hop, "a host name or IP address", &r->host));
        FIELD(it, "port", f, config_as_int32(p, f, 1, 65535, NULL, &r->port));
        if (!r->domain) return config_missing(p, LINE(it), "domain", NULL);
        if (!r->host) return config_missing(p, LINE(it), "host", "(the next hop for the domain)");
        util_lowercase(r->domain);
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->routes[j].domain, r->domain) == 0) {
                config_push_key(p, "domain");
                return config_fail(p, config_lookup(p, it, "domain", NULL),
                                   "domain '%s' already has a route (routes[%zu])", r->domain, j);
            }
        config_pop(p, m);
    }
    return 0;
}

static void config_add_warnings(config *c)
{
    for (size_t i = 0; i < c->npools; i++) {
        const config_pool *pl = &c->pools[i];
        size_t n = 0, nz = 0;
        const char **zs = util_calloc(c->nips + 1, sizeof *zs);
        for (size_t j = 0; j < c->nips; j++) {
            if (strcmp(c->ips[j].pool, pl->name) != 0) continue;
            n++;
            size_t k = 0;
            while (k < nz && strcmp(zs[k], c->ips[j].zone) != 0) k++;
            if (k == nz) zs[nz++] = c->ips[j].zone;
        }
        if (n == 0) {
            config_warn(c, "pool %s has no IPs; its mail waits until an IP is added", pl->name);
        } else {
            if (n < RECOMMENDED_POOL_IPS)
                config_warn(c, "pool %s has %zu IP%s; at least %d are recommended", pl->name, n,
                            n == 1 ? "" : "s", RECOMMENDED_POOL_IPS);
            size_t want = n < 3 ? n : 3;
            if (nz < want) {
                strbuf sb;
                strbuf_init(&sb);
                config_fmt_list(&sb, (char *const *)zs, nz);
                config_warn(c,
                            "pool %s has its %zu IPs in %zu zone%s (%s); spread them over at "
                            "least %zu zones so that one zone outage does not stop the pool",
                            pl->name, n, nz, nz == 1 ? "" : "s", sb.buf, want);
                strbuf_free(&sb);
            }
        }
        free(zs);
    }
    for (size_t i = 0; i < c->nsets; i++)
        if (c->sets[i].max_delivery_time_ms < SHORT_DELIVERY_MS) {
            strbuf sb;
            strbuf_init(&sb);
            config_fmt_duration(&sb, c->sets[i].max_delivery_time_ms);
            config_warn(c,
                        "configuration set %s: max_delivery_time %s is below 5m; a short outage "
                        "at a receiving server will bounce its mail",
                        c->sets[i].name, sb.buf);
            strbuf_free(&sb);
        }
}

static const char *const ROOT_KEYS[] = {
    "server", "dns", "submission", "account", "delivery", "routes", "zones", "ips", "pools",
    "configuration_sets", "default_configuration_set", "warmup", "shaping", "api", "feedback",
    "metrics", "cluster",
    NULL};

static int config_read_root(config_parser *p, yaml_node_t *root)
{
    if (root) {
        if (root->type != YAML_MAPPING_NODE && !config_is_null(root))
            return config_fail(p, root,
                               "the file must be a map of sections (server, submission, "
                               "pools, ...), not %s",
                               config_kind(root));
        if (root->type == YAML_MAPPING_NODE && config_check_keys(p, root, ROOT_KEYS) < 0) return -1;
        if (root->type != YAML_MAPPING_NODE) root = NULL;
    }
    if (config_read_server(p, root) < 0) return -1;
    FIELD(root, "dns", v, config_read_dns(p, v));
    FIELD(root, "submission", v, config_read_submission(p, v));
    FIELD(root, "account", v, config_read_account(p, v));
    FIELD(root, "delivery", v, config_read_delivery(p, v));
    FIELD(root, "routes", v, config_read_routes(p, v));
    FIELD(root, "zones", v, config_read_zones(p, v));
    FIELD(root, "pools", v, config_read_pools(p, v));
    FIELD(root, "ips", v, config_read_ips(p, v));
    FIELD(root, "configuration_sets", v, config_read_sets(p, v));
    if (config_read_default_set(p, root) < 0) return -1;
    if (config_check_auth_scope(p, root) < 0) return -1;
    if (config_read_api(p, root) < 0) return -1;    /* after auth, identities and sets */
    if (config_read_feedback(p, root) < 0) return -1;   /* after submission and api */
    if (config_read_metrics(p, root) < 0) return -1;    /* after feedback */
    if (config_read_cluster(p, root) < 0) return -1;    /* after ips */
    FIELD(root, "warmup", v, config_read_warmup(p, v));
    FIELD(root, "shaping", v, config_read_shaping(p, v));
    return 0;
}

static void config_set_defaults(config *c)
{
    c->refs = 1;
    c->log_level = KLOG_INFO;
    c->dns_timeout_ms = 2 * MS_SECOND;
    c->max_message_size = 10 * KB * KB;
    c->max_recipients = 50;
    c->auth_failures_max = 10;
    c->auth_failures_window_ms = 5 * MS_MINUTE;
    config_limits_defaults(c);
    config_api_defaults(c);
    config_feedback_defaults(c);
    config_cluster_defaults(c);
    c->mode = CONFIG_MODE_SANDBOX;
    c->max_24h_send = 200;
    c->max_send_rate = 1;
    c->suppression_reasons = CONFIG_SUPPRESS_BOUNCE | CONFIG_SUPPRESS_COMPLAINT;
    c->remote_port = 25;
    c->retry_first_ms = 60 * MS_SECOND;
    c->retry_max_interval_ms = MS_HOUR;
    c->retry_factor = 2;
    c->connect_timeout_ms = 10 * MS_SECOND;
    c->queue_memory_recipients = QUEUE_MEMORY_DEFAULT;
    config_tls_defaults(c);
    c->warmup.days = 45;
    c->warmup.first_day = 50;
    c->warmup.target = 50000;
    c->warmup.advance = CONFIG_ADVANCE_CALENDAR;
    c->warmup.pacing = 4;
    c->shaping_default.connections = 10;
    c->shaping_default.messages_per_connection = 100;
    c->shaping_default.rate.count = 50;
    c->shaping_default.rate.per_ms = MS_SECOND;
}

static void config_set_string_defaults(config *c)
{
    if (c->max_inflight_bytes == 0)       /* depends on max_message_size: set after reading */
        c->max_inflight_bytes = config_default_inflight_bytes(c->max_message_size);
    if (!c->region) c->region = util_strdup("local");
    if (!c->log) c->log = util_strdup("stderr");
    if (c->nlisten == 0) {
        c->listen = util_calloc(1, sizeof *c->listen);
        c->listen[0].host = util_strdup("127.0.0.1");
        c->listen[0].port = 2587;
        c->nlisten = 1;
    }
}

/* The part of a load after the YAML is read: the sections, the cross-checks, defaults and
 * warnings. Takes dir (the directory relative paths resolve against) and deletes doc. */
static config *config_load_doc(const char *path, char *dir, yaml_document_t *doc,
                               config_hash_check *hash_usable, char **err)
{
    config *c = util_calloc(1, sizeof *c);
    c->path = util_strdup(path);
    c->dir = dir;
    config_set_defaults(c);
    config_parser p = {.file = path, .doc = doc, .cfg = c, .hash_usable = hash_usable};
    strbuf_init(&p.path);
    strbuf_append(&p.path, "", 0);
    if (config_read_root(&p, yaml_document_get_root_node(doc)) < 0) {
        *err = p.err ? p.err : util_asprintf("%s: invalid configuration", path);
        config_free(c);
        c = NULL;
    } else {
        config_set_string_defaults(c);
        config_add_warnings(c);
        config_add_security_warnings(c);
    }
    strbuf_free(&p.path);
    yaml_document_delete(doc);
    return c;
}

config *config_load(const char *path, config_hash_check *hash_usable, char **err)
{
    *err = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        *err = util_asprintf("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        *err = util_asprintf("%s: is a directory, not a config file", path);
        fclose(f);
        return NULL;
    }
    char *dir = config_file_dir(path, err);
    if (!dir) {
        fclose(f);
        return NULL;
    }
    yaml_document_t doc;
    int rc = config_yaml_read(path, f, &doc, err);
    fclose(f);
    if (rc < 0) {
        free(dir);
        return NULL;
    }
    return config_load_doc(path, dir, &doc, hash_usable, err);
}

config *config_load_text(const char *text, size_t len, const char *name, const char *dir,
                         config_hash_check *hash_usable, char **err)
{
    *err = NULL;
    if (!dir || dir[0] != '/') {
        *err = util_asprintf("%s: the directory for relative paths must be absolute", name);
        return NULL;
    }
    yaml_document_t doc;
    if (config_yaml_read_text(name, text, len, &doc, err) < 0) return NULL;
    return config_load_doc(name, util_strdup(dir), &doc, hash_usable, err);
}
