/* config.c — loads and validates kiln's YAML configuration (SPEC section 1) into the
 * immutable, reference-counted struct config of config.h.
 *
 * The file is read with libyaml's document API (yaml_parser_load), so every node keeps its
 * line. Validation walks the tree with a key-path stack ("configuration_sets[1].events[0]")
 * and stops at the first problem, which reads "FILE:LINE: KEY.PATH: what is wrong". Unknown
 * keys, duplicate keys and wrong node types (map / list / single value) are errors; every
 * cross-reference (zones, pools, configuration sets) is checked; relative paths are made
 * absolute against the config file's directory. Findings that are legal but risky (small or
 * single-zone pools, a very short max_delivery_time) become warnings.
 *
 * The small value parsers (sizes, durations, rates, host:port, CIDR) are hand-written: they
 * are a few lines each over formats this file defines, and are exported for tests. */
#include "base/config.h"

#include "mta/auth.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <yaml.h>

#include "base/log.h"
#include "base/util.h"

#define KB ((int64_t)1 << 10)
#define MS_SECOND ((int64_t)1000)
#define MS_MINUTE (60 * MS_SECOND)
#define MS_HOUR (60 * MS_MINUTE)
#define MS_DAY (24 * MS_HOUR)
#define MAX_DELIVERY_MS (14 * MS_HOUR)
#define SHORT_DELIVERY_MS (5 * MS_MINUTE)
#define RECOMMENDED_POOL_IPS 3
#define NAME_MAX_LEN 64
#define SET_PRIORITY_MIN (-1000)
#define SET_PRIORITY_MAX 1000

/* ------------------------------------------------------------------------------------------
 * Pure value parsers
 * ---------------------------------------------------------------------------------------- */

/* One or more decimal digits at *sp into *out; advances *sp. -1 on no digit or overflow. */
static int parse_digits(const char **sp, uint64_t *out)
{
    const char *s = *sp;
    uint64_t v = 0;
    if (*s < '0' || *s > '9') return -1;
    while (*s >= '0' && *s <= '9') {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
        s++;
    }
    *sp = s;
    *out = v;
    return 0;
}

/* Whole decimal number with optional leading '-'; nothing else. */
static int parse_int(const char *s, int64_t *out)
{
    bool neg = *s == '-';
    if (neg) s++;
    uint64_t v;
    if (parse_digits(&s, &v) < 0 || *s) return -1;
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1) return -1;
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > (uint64_t)INT64_MAX) return -1;
        *out = (int64_t)v;
    }
    return 0;
}

/* Decimal number "-?D+(.D+)?" (no exponent, no inf/nan, no hex). */
static int parse_decimal(const char *s, double *out)
{
    const char *q = s;
    if (*q == '-') q++;
    if (!isdigit((unsigned char)*q)) return -1;
    while (isdigit((unsigned char)*q)) q++;
    if (*q == '.') {
        q++;
        if (!isdigit((unsigned char)*q)) return -1;
        while (isdigit((unsigned char)*q)) q++;
    }
    if (*q) return -1;
    errno = 0;
    double v = strtod(s, NULL);
    if (errno) return -1;
    *out = v;
    return 0;
}

int config_parse_size(const char *s, int64_t *bytes)
{
    if (!s) return -1;
    uint64_t v;
    if (parse_digits(&s, &v) < 0) return -1;
    const char *unit = s;
    while (*unit == ' ') unit++;
    int64_t mult;
    if (!*unit) {
        if (unit != s) return -1;   /* trailing blanks without a unit */
        mult = 1;
    } else if (strcasecmp(unit, "B") == 0) {
        mult = 1;
    } else if (strcasecmp(unit, "KB") == 0) {
        mult = KB;
    } else if (strcasecmp(unit, "MB") == 0) {
        mult = KB * KB;
    } else if (strcasecmp(unit, "GB") == 0) {
        mult = KB * KB * KB;
    } else {
        return -1;
    }
    if (v > (uint64_t)(INT64_MAX / mult)) return -1;
    *bytes = (int64_t)v * mult;
    return 0;
}

int config_parse_duration(const char *s, int64_t *ms)
{
    if (!s) return -1;
    uint64_t v;
    if (parse_digits(&s, &v) < 0) return -1;
    int64_t mult;
    if (strcmp(s, "ms") == 0) mult = 1;
    else if (strcmp(s, "s") == 0) mult = MS_SECOND;
    else if (strcmp(s, "m") == 0) mult = MS_MINUTE;
    else if (strcmp(s, "h") == 0) mult = MS_HOUR;
    else if (strcmp(s, "d") == 0) mult = MS_DAY;
    else return -1;
    if (v > (uint64_t)(INT64_MAX / mult)) return -1;
    *ms = (int64_t)v * mult;
    return 0;
}

/* "-1" (no limit) parses to {-1, 1000}, so that it stays distinct from an unset provider
 * rate ({-1, 0}, see config.h). */
int config_parse_rate(const char *s, config_rate *rate)
{
    if (!s) return -1;
    if (strcmp(s, "-1") == 0) {
        rate->count = -1;
        rate->per_ms = MS_SECOND;
        return 0;
    }
    uint64_t v;
    if (parse_digits(&s, &v) < 0 || v == 0 || v > (uint64_t)INT64_MAX) return -1;
    int64_t per;
    if (strcmp(s, "/s") == 0) per = MS_SECOND;
    else if (strcmp(s, "/m") == 0) per = MS_MINUTE;
    else if (strcmp(s, "/h") == 0) per = MS_HOUR;
    else return -1;
    rate->count = (int64_t)v;
    rate->per_ms = per;
    return 0;
}

static bool is_ipv4(const char *s)
{
    struct in_addr a;
    return inet_pton(AF_INET, s, &a) == 1;
}

static bool is_ipv6(const char *s)
{
    struct in6_addr a;
    return inet_pton(AF_INET6, s, &a) == 1;
}

static bool is_ip(const char *s) { return is_ipv4(s) || is_ipv6(s); }

/* DNS name: dot-separated labels of letters, digits, '-' and '_' (not at a label's ends
 * for '-'), 1..63 bytes each, 253 in all; no leading, trailing or double dot. */
static bool valid_hostname(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253) return false;
    size_t label = 0;
    bool digits_and_dots = true;
    for (const char *q = s;; q++) {
        if (*q == '.' || *q == '\0') {
            if (label == 0 || label > 63 || q[-1] == '-') return false;
            if (*q == '\0') break;
            label = 0;
            continue;
        }
        unsigned char c = (unsigned char)*q;
        if (!isalnum(c) && c != '-' && c != '_') return false;
        if (label == 0 && c == '-') return false;
        if (!isdigit(c)) digits_and_dots = false;
        label++;
    }
    /* "127.0.0.256" is a broken address, not a name. */
    return !digits_and_dots;
}

static bool valid_host(const char *s) { return is_ipv4(s) || valid_hostname(s); }

static bool valid_next_hop(const char *s) { return is_ip(s) || valid_hostname(s); }

int config_parse_hostport(const char *s, int default_port, config_hostport *hp)
{
    if (!s || !*s) return -1;
    const char *host, *port = NULL;
    size_t hlen;
    char buf[256];
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close) return -1;
        host = s + 1;
        hlen = (size_t)(close - host);
        if (close[1] == ':') port = close + 2;
        else if (close[1] != '\0') return -1;
        if (hlen == 0 || hlen >= sizeof buf) return -1;
        memcpy(buf, host, hlen);
        buf[hlen] = '\0';
        if (!is_ipv6(buf)) return -1;
    } else {
        const char *colon = strchr(s, ':');
        if (colon && strchr(colon + 1, ':')) {
            /* Several colons and no brackets: a bare IPv6 literal, no port. */
            if (!is_ipv6(s)) return -1;
            host = s;
            hlen = strlen(s);
        } else {
            host = s;
            hlen = colon ? (size_t)(colon - s) : strlen(s);
            if (colon) port = colon + 1;
            if (hlen == 0 || hlen >= sizeof buf) return -1;
            memcpy(buf, host, hlen);
            buf[hlen] = '\0';
            if (!valid_host(buf)) return -1;
        }
    }
    int portnum;
    if (port) {
        uint64_t v;
        if (parse_digits(&port, &v) < 0 || *port || v < 1 || v > 65535) return -1;
        portnum = (int)v;
    } else {
        if (default_port <= 0 || default_port > 65535) return -1;
        portnum = default_port;
    }
    hp->host = util_strndup(host, hlen);
    hp->port = portnum;
    return 0;
}

/* strict: host bits beyond the prefix make the network invalid; otherwise they are cleared. */
static int cidr_parse(const char *s, config_cidr *c, bool strict)
{
    if (!s) return -1;
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    char addr[INET6_ADDRSTRLEN + 1];
    if (alen == 0 || alen >= sizeof addr) return -1;
    memcpy(addr, s, alen);
    addr[alen] = '\0';
    config_cidr out;
    memset(&out, 0, sizeof out);
    int max;
    if (inet_pton(AF_INET, addr, out.addr) == 1) {
        out.family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, addr, out.addr) == 1) {
        out.family = AF_INET6;
        max = 128;
    } else {
        return -1;
    }
    out.prefix = max;
    if (slash) {
        const char *q = slash + 1;
        uint64_t v;
        if (parse_digits(&q, &v) < 0 || *q || v > (uint64_t)max) return -1;
        out.prefix = (int)v;
    }
    int nbytes = max / 8;
    for (int bit = out.prefix; bit < nbytes * 8; bit++) {
        unsigned char m = (unsigned char)(0x80u >> (bit % 8));
        if (out.addr[bit / 8] & m) {
            if (strict) return -1;
            out.addr[bit / 8] &= (unsigned char)~m;
        }
    }
    *c = out;
    return 0;
}

int config_parse_cidr(const char *s, config_cidr *c) { return cidr_parse(s, c, true); }

static bool cidr_match(const config_cidr *c, int family, const unsigned char *addr)
{
    if (c->family != family) return false;
    int full = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(c->addr, addr, (size_t)full) != 0) return false;
    if (rest == 0) return true;
    unsigned char m = (unsigned char)(0xffu << (8 - rest));
    return (c->addr[full] & m) == (addr[full] & m);
}

static void cidr_to_text(const config_cidr *c, strbuf *sb)
{
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(c->family, c->addr, buf, sizeof buf);
    strbuf_printf(sb, "%s/%d", buf, c->prefix);
}

/* ------------------------------------------------------------------------------------------
 * Small checks and formatting
 * ---------------------------------------------------------------------------------------- */

/* Zone, pool, configuration set and provider names: SES-style names. */
static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NAME_MAX_LEN) return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_') return false;
    return true;
}
#define WHAT_NAME "a valid name (letters, digits, '-' and '_', at most 64)"

static bool has_blank_or_control(const char *s)
{
    for (; *s; s++)
        if (isspace((unsigned char)*s) || iscntrl((unsigned char)*s)) return true;
    return false;
}

static bool nonblank_text(const char *s) { return *s && !has_blank_or_control(s); }

/* A domain ("example.test") or an address ("ops@example.test"). */
static bool valid_identity(const char *s)
{
    if (!*s || has_blank_or_control(s)) return false;
    const char *at = strrchr(s, '@');
    if (!at) return valid_hostname(s);
    return at != s && valid_hostname(at + 1);
}

static bool valid_url(const char *s)
{
    size_t skip;
    if (strncmp(s, "http://", 7) == 0) skip = 7;
    else if (strncmp(s, "https://", 8) == 0) skip = 8;
    else return false;
    return s[skip] && s[skip] != '/' && !has_blank_or_control(s);
}

/* "$id$rest": what crypt(3) and argon2 produce. */
/* A complete "$id$..." hash of a method this system's libcrypt implements (argon2, for
 * one, is not in Debian's libcrypt: such a hash would load and never match). */
static bool valid_crypt_hash(const char *s)
{
    if (s[0] != '$' || has_blank_or_control(s)) return false;
    const char *q = s + 1;
    while (isalnum((unsigned char)*q) || *q == '-') q++;
    return q > s + 1 && *q == '$' && q[1] && auth_hash_usable(s);
}

static bool valid_user(const char *s) { return nonblank_text(s) && strlen(s) <= 255; }

static void fmt_duration(strbuf *sb, int64_t ms)
{
    static const struct { int64_t ms; const char *unit; } units[] = {
        {MS_DAY, "d"}, {MS_HOUR, "h"}, {MS_MINUTE, "m"}, {MS_SECOND, "s"}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (ms != 0 && ms % units[i].ms == 0) {
            strbuf_printf(sb, "%lld%s", (long long)(ms / units[i].ms), units[i].unit);
            return;
        }
    strbuf_printf(sb, "%lldms", (long long)ms);
}

static void fmt_size(strbuf *sb, int64_t b)
{
    static const char *const units[] = {"GB", "MB", "KB"};
    int64_t m = KB * KB * KB;
    for (size_t i = 0; i < 3; i++, m /= KB)
        if (b != 0 && b % m == 0) {
            strbuf_printf(sb, "%lld%s", (long long)(b / m), units[i]);
            return;
        }
    strbuf_printf(sb, "%lldB", (long long)b);
}

static void fmt_rate(strbuf *sb, const config_rate *r)
{
    if (r->count < 0) {
        strbuf_puts(sb, "none");
        return;
    }
    strbuf_printf(sb, "%lld/%s", (long long)r->count,
                  r->per_ms == MS_SECOND ? "s" : r->per_ms == MS_MINUTE ? "m" : "h");
}

static void fmt_hostport(strbuf *sb, const char *host, int port)
{
    if (strchr(host, ':')) strbuf_printf(sb, "[%s]:%d", host, port);
    else strbuf_printf(sb, "%s:%d", host, port);
}

static void fmt_list(strbuf *sb, char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) strbuf_printf(sb, "%s%s", i ? ", " : "", names[i]);
}

char *config_resolve_path(const char *dir, const char *rel)
{
    if (rel[0] == '/') return util_strdup(rel);
    strbuf sb;
    strbuf_init(&sb);
    strbuf_puts(&sb, dir);
    bool leading = true;
    const char *s = rel;
    for (;;) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 0 || (n == 1 && s[0] == '.')) {
            /* nothing */
        } else if (leading && n == 2 && s[0] == '.' && s[1] == '.') {
            char *slash = strrchr(sb.buf, '/');
            sb.len = slash == sb.buf ? 1 : (size_t)(slash - sb.buf);
            sb.buf[sb.len] = '\0';
        } else {
            leading = false;
            if (sb.buf[sb.len - 1] != '/') strbuf_puts(&sb, "/");
            strbuf_append(&sb, s, n);
        }
        if (!e) break;
        s = e + 1;
    }
    return strbuf_steal(&sb);
}

/* ------------------------------------------------------------------------------------------
 * Freeing
 * ---------------------------------------------------------------------------------------- */

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

static void config_free(config *c)
{
    free(c->path);
    free(c->dir);
    free(c->hostname);
    free(c->region);
    free(c->spool);
    free(c->control_socket);
    free(c->log);
    for (size_t i = 0; i < c->ndns_servers; i++) free(c->dns_servers[i].host);
    free(c->dns_servers);
    for (size_t i = 0; i < c->nlisten; i++) free(c->listen[i].host);
    free(c->listen);
    free(c->tls_cert);
    free(c->tls_key);
    for (size_t i = 0; i < c->nauth; i++) {
        free(c->auth[i].user);
        free(c->auth[i].password_hash);
    }
    free(c->auth);
    free(c->trusted);
    free_strv(c->identities, c->nidentities);
    free_strv(c->verified_recipients, c->nverified_recipients);
    for (size_t i = 0; i < c->nroutes; i++) {
        free(c->routes[i].domain);
        free(c->routes[i].host);
    }
    free(c->routes);
    free_strv(c->zones, c->nzones);
    for (size_t i = 0; i < c->nips; i++) {
        free(c->ips[i].address);
        free(c->ips[i].zone);
        free(c->ips[i].pool);
        free(c->ips[i].ehlo);
    }
    free(c->ips);
    for (size_t i = 0; i < c->npools; i++) {
        free(c->pools[i].name);
        free(c->pools[i].overflow);
    }
    free(c->pools);
    for (size_t i = 0; i < c->nsets; i++) {
        free(c->sets[i].name);
        free(c->sets[i].pool);
        for (size_t j = 0; j < c->sets[i].nevents; j++) {
            free(c->sets[i].events[j].path);
            free(c->sets[i].events[j].url);
        }
        free(c->sets[i].events);
    }
    free(c->sets);
    free(c->default_set);
    for (size_t i = 0; i < c->nproviders; i++) {
        free(c->providers[i].name);
        free_strv(c->providers[i].mx_suffix, c->providers[i].nmx_suffix);
    }
    free(c->providers);
    free_strv(c->warnings, c->nwarnings);
    free(c);
}

config *config_ref(config *cfg)
{
    if (cfg) {
        if (cfg->refs <= 0) util_fatal("config_ref on a released config %s", cfg->path);
        cfg->refs++;
    }
    return cfg;
}

void config_unref(config *cfg)
{
    if (!cfg) return;
    if (cfg->refs <= 0) util_fatal("config_unref on a released config %s", cfg->path);
    if (--cfg->refs == 0) config_free(cfg);
}

/* ------------------------------------------------------------------------------------------
 * Tree walking: the parse state, errors with key paths, typed node readers
 * ---------------------------------------------------------------------------------------- */

typedef struct cfgp {
    const char *file;        /* as given, for messages */
    yaml_document_t *doc;
    config *cfg;
    strbuf path;             /* key path of the node being read */
    char *err;               /* first error */
} cfgp;

#define LINE(n) ((int)(n)->start_mark.line + 1)

static int vfail_at(cfgp *p, int line, const char *fmt, va_list ap)
{
    if (p->err) return -1;
    char *msg = util_vasprintf(fmt, ap);
    if (p->path.len) p->err = util_asprintf("%s:%d: %s: %s", p->file, line, p->path.buf, msg);
    else p->err = util_asprintf("%s:%d: %s", p->file, line, msg);
    free(msg);
    return -1;
}

__attribute__((format(printf, 3, 4)))
static int fail_at(cfgp *p, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail_at(p, line, fmt, ap);
    va_end(ap);
    return -1;
}

__attribute__((format(printf, 3, 4)))
static int fail(cfgp *p, const yaml_node_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail_at(p, LINE(n), fmt, ap);
    va_end(ap);
    return -1;
}

__attribute__((format(printf, 2, 3)))
static void warn(config *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    c->warnings = util_realloc(c->warnings, (c->nwarnings + 1) * sizeof *c->warnings);
    c->warnings[c->nwarnings++] = util_vasprintf(fmt, ap);
    va_end(ap);
}

static size_t push_key(cfgp *p, const char *key)
{
    size_t mark = p->path.len;
    if (mark) strbuf_puts(&p->path, ".");
    strbuf_puts(&p->path, key);
    return mark;
}

static size_t push_index(cfgp *p, size_t i)
{
    size_t mark = p->path.len;
    strbuf_printf(&p->path, "[%zu]", i);
    return mark;
}

static void pop(cfgp *p, size_t mark)
{
    p->path.len = mark;
    p->path.buf[mark] = '\0';
}

static yaml_node_t *node(cfgp *p, int id) { return yaml_document_get_node(p->doc, id); }

static const char *sval(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }

static bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = sval(n);
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
           !strcmp(v, "NULL");
}

static const char *kind(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_MAPPING_NODE: return "a map";
    case YAML_SEQUENCE_NODE: return "a list";
    default: return is_null(n) ? "nothing" : "a single value";
    }
}

/* The value of KEY in MAP (NULL map or key absent: NULL); *keyn gets the key node. */
static yaml_node_t *lookup(cfgp *p, yaml_node_t *map, const char *key, yaml_node_t **keyn)
{
    if (!map || map->type != YAML_MAPPING_NODE) return NULL;
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *k = node(p, pr->key);
        if (k->type == YAML_SCALAR_NODE && strcmp(sval(k), key) == 0) {
            if (keyn) *keyn = k;
            return node(p, pr->value);
        }
    }
    return NULL;
}

/* Every key of MAP is a name listed in ALLOWED (NULL-terminated), and none repeats. */
static int check_keys(cfgp *p, yaml_node_t *map, const char *const *allowed)
{
    yaml_node_pair_t *first = map->data.mapping.pairs.start;
    for (yaml_node_pair_t *pr = first; pr < map->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = node(p, pr->key);
        if (k->type != YAML_SCALAR_NODE)
            return fail(p, k, "a key must be a name, not %s", kind(k));
        const char *name = sval(k);
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++) ok = strcmp(*a, name) == 0;
        if (!ok) {
            strbuf list;
            strbuf_init(&list);
            for (const char *const *a = allowed; *a; a++)
                strbuf_printf(&list, "%s%s", a == allowed ? "" : ", ", *a);
            push_key(p, name);
            fail(p, k, "unknown key '%s'; allowed here: %s", name, list.buf);
            strbuf_free(&list);
            return -1;
        }
        for (yaml_node_pair_t *q = first; q < pr; q++) {
            yaml_node_t *qk = node(p, q->key);
            if (qk->type == YAML_SCALAR_NODE && strcmp(sval(qk), name) == 0) {
                push_key(p, name);
                return fail(p, k, "duplicate key (first given at line %d)", LINE(qk));
            }
        }
    }
    return 0;
}

/* 1: V is a map (with its keys checked when ALLOWED); 0: V is empty (treated as {}); -1. */
static int as_map(cfgp *p, yaml_node_t *v, const char *const *allowed)
{
    if (is_null(v)) return 0;
    if (v->type != YAML_MAPPING_NODE) return fail(p, v, "expected a map, got %s", kind(v));
    if (allowed && check_keys(p, v, allowed) < 0) return -1;
    return 1;
}

/* Number of items of list V (empty value: 0 items), or -1. */
static int as_list(cfgp *p, yaml_node_t *v, size_t *n)
{
    if (is_null(v)) {
        *n = 0;
        return 0;
    }
    if (v->type != YAML_SEQUENCE_NODE) return fail(p, v, "expected a list, got %s", kind(v));
    *n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    return 0;
}

static yaml_node_t *item(cfgp *p, yaml_node_t *list, size_t i)
{
    return node(p, list->data.sequence.items.start[i]);
}

static int as_scalar(cfgp *p, yaml_node_t *v, const char *what, const char **s)
{
    if (v->type != YAML_SCALAR_NODE) return fail(p, v, "expected %s, got %s", what, kind(v));
    if (is_null(v)) return fail(p, v, "has no value (expected %s)", what);
    if (strlen(sval(v)) != v->data.scalar.length) return fail(p, v, "contains a NUL byte");
    *s = sval(v);
    return 0;
}

/* Copy of a text value, checked by OK (NULL: any text). */
static int as_str(cfgp *p, yaml_node_t *v, bool (*ok)(const char *), const char *what, char **out)
{
    const char *s = NULL;
    if (as_scalar(p, v, "a text value", &s) < 0) return -1;
    if (!*s) return fail(p, v, "must not be empty");
    if (ok && !ok(s)) return fail(p, v, "'%s' is not %s", s, what);
    free(*out);
    *out = util_strdup(s);
    return 0;
}

static int as_path(cfgp *p, yaml_node_t *v, char **out)
{
    const char *s = NULL;
    if (as_scalar(p, v, "a file path", &s) < 0) return -1;
    if (!*s) return fail(p, v, "must not be empty");
    free(*out);
    *out = config_resolve_path(p->cfg->dir, s);
    return 0;
}

/* Whole number in [min, max]; RANGE describes the range for the message (NULL: generated). */
static int as_int(cfgp *p, yaml_node_t *v, int64_t min, int64_t max, const char *range,
                  int64_t *out)
{
    const char *s = NULL;
    if (as_scalar(p, v, "a whole number", &s) < 0) return -1;
    int64_t x;
    if (parse_int(s, &x) < 0) return fail(p, v, "'%s' is not a whole number", s);
    if (v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return fail(p, v, "'%s' is quoted text; write the number without quotes", s);
    if (x < min || x > max) {
        if (range) return fail(p, v, "must be %s, not %s", range, s);
        if (max == INT64_MAX || (max == INT_MAX && min > INT_MIN))
            return fail(p, v, "must be at least %lld, not %s", (long long)min, s);
        return fail(p, v, "must be between %lld and %lld, not %s", (long long)min,
                    (long long)max, s);
    }
    *out = x;
    return 0;
}

static int as_int32(cfgp *p, yaml_node_t *v, int min, int max, const char *range, int *out)
{
    int64_t x;
    if (as_int(p, v, min, max, range, &x) < 0) return -1;
    *out = (int)x;
    return 0;
}

static int as_decimal(cfgp *p, yaml_node_t *v, double *out)
{
    const char *s = NULL;
    if (as_scalar(p, v, "a number", &s) < 0) return -1;
    if (parse_decimal(s, out) < 0) return fail(p, v, "'%s' is not a number (e.g. 2 or 1.5)", s);
    if (v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return fail(p, v, "'%s' is quoted text; write the number without quotes", s);
    return 0;
}

static int as_size(cfgp *p, yaml_node_t *v, int64_t *out)
{
    const char *s = NULL;
    if (as_scalar(p, v, "a size", &s) < 0) return -1;
    if (config_parse_size(s, out) < 0)
        return fail(p, v, "'%s' is not a size (use e.g. 512KB, 10MB)", s);
    if (*out <= 0) return fail(p, v, "must be more than 0");
    return 0;
}

/* Duration; POSITIVE: zero is rejected. */
static int as_duration(cfgp *p, yaml_node_t *v, bool positive, int64_t *out)
{
    const char *s = NULL;
    if (as_scalar(p, v, "a duration", &s) < 0) return -1;
    if (config_parse_duration(s, out) < 0)
        return fail(p, v, "'%s' is not a duration (use e.g. 500ms, 30s, 5m, 14h, 2d)", s);
    if (positive && *out == 0) return fail(p, v, "must be longer than 0");
    return 0;
}

static int as_rate(cfgp *p, yaml_node_t *v, config_rate *out)
{
    const char *s = NULL;
    if (as_scalar(p, v, "a rate", &s) < 0) return -1;
    if (config_parse_rate(s, out) < 0)
        return fail(p, v, "'%s' is not a rate (use e.g. 50/s, 10/m, 1000/h, or -1 for no limit)",
                    s);
    return 0;
}

/* Index of V in NAMES (NULL-terminated). */
static int as_enum(cfgp *p, yaml_node_t *v, const char *const *names, int *out)
{
    const char *s = NULL;
    if (as_scalar(p, v, "a text value", &s) < 0) return -1;
    size_t n = 0;
    for (; names[n]; n++)
        if (strcmp(names[n], s) == 0) {
            *out = (int)n;
            return 0;
        }
    strbuf sb;
    strbuf_init(&sb);
    if (n == 2) {
        strbuf_printf(&sb, "%s or %s", names[0], names[1]);
    } else {
        strbuf_puts(&sb, "one of ");
        for (size_t i = 0; i < n; i++) strbuf_printf(&sb, "%s%s", i ? ", " : "", names[i]);
    }
    fail(p, v, "must be %s, not '%s'", sb.buf, s);
    strbuf_free(&sb);
    return -1;
}

/* Runs BODY (an int expression, -1 on error) with V bound to MAP's value for KEY and the key
 * path extended by KEY; skipped when the key is absent. Returns -1 from the caller on error. */
#define FIELD(map, key, v, body)                                                              \
    do {                                                                                      \
        yaml_node_t *v = lookup(p, (map), (key), NULL);                                       \
        if (v) {                                                                              \
            size_t mark_ = push_key(p, (key));                                                \
            if ((body) < 0) return -1;                                                        \
            pop(p, mark_);                                                                    \
        }                                                                                     \
    } while (0)

/* Error for a required KEY missing from the map reported at LINE. */
static int missing(cfgp *p, int line, const char *key, const char *hint)
{
    push_key(p, key);
    return fail_at(p, line, "required key is missing%s%s", hint ? " " : "", hint ? hint : "");
}

static int line_of(yaml_node_t *n, int fallback) { return n ? LINE(n) : fallback; }

static void names_text(strbuf *sb, char *const *names, size_t n, const char *none)
{
    if (n == 0) strbuf_puts(sb, none);
    else fmt_list(sb, names, n);
}

/* A list of names (zones, mx_suffix...) into a fresh char* array. CHECK validates each;
 * LOWER lower-cases; UNIQUE rejects repeats. */
static int as_strv(cfgp *p, yaml_node_t *v, bool (*check)(const char *), const char *what,
                   bool lower, bool unique, char ***out, size_t *nout)
{
    size_t n;
    if (as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    *out = util_calloc(n, sizeof **out);
    *nout = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = item(p, v, i);
        size_t m = push_index(p, i);
        if (as_str(p, it, check, what, &(*out)[i]) < 0) return -1;
        if (lower) util_lowercase((*out)[i]);
        if (unique)
            for (size_t j = 0; j < i; j++)
                if (strcmp((*out)[j], (*out)[i]) == 0)
                    return fail(p, it, "'%s' is listed twice (also as %.*s[%zu])", (*out)[i],
                                (int)m, p->path.buf, j);
        pop(p, m);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Sections
 * ---------------------------------------------------------------------------------------- */

static const char *const LEVEL_NAMES[] = {"debug", "info", "warning", "error", NULL};
static const char *const MODE_NAMES[] = {"sandbox", "production", NULL};
static const char *const SCALING_NAMES[] = {"standard", "managed", NULL};
static const char *const TLS_NAMES[] = {"optional", "require", NULL};
static const char *const ADVANCE_NAMES[] = {"calendar", "volume", NULL};
static const char *const EVENT_NAMES[] = {"file", "webhook", NULL};

static int set_log(cfgp *p, yaml_node_t *v)
{
    const char *s = NULL;
    if (as_scalar(p, v, "stderr or a file path", &s) < 0) return -1;
    if (!*s) return fail(p, v, "must not be empty (use stderr or a file path)");
    free(p->cfg->log);
    p->cfg->log = strcmp(s, "stderr") == 0 ? util_strdup(s) : config_resolve_path(p->cfg->dir, s);
    return 0;
}

static int set_log_level(cfgp *p, yaml_node_t *v)
{
    int i = 0;
    if (as_enum(p, v, LEVEL_NAMES, &i) < 0) return -1;
    p->cfg->log_level = log_level_parse(LEVEL_NAMES[i]);
    return 0;
}

static int parse_server(cfgp *p, yaml_node_t *root)
{
    static const char *const keys[] = {"hostname", "region", "spool", "control_socket", "log",
                                       "log_level", NULL};
    config *c = p->cfg;
    yaml_node_t *key = NULL;
    yaml_node_t *m = lookup(p, root, "server", &key);
    size_t mark = push_key(p, "server");
    if (m && as_map(p, m, keys) < 0) return -1;
    FIELD(m, "hostname", v, as_str(p, v, valid_hostname, "a valid host name", &c->hostname));
    if (!c->hostname)
        return missing(p, line_of(key, 1), "hostname", "(the EHLO name, e.g. mta.example.com)");
    FIELD(m, "region", v, as_str(p, v, valid_name, WHAT_NAME, &c->region));
    FIELD(m, "spool", v, as_path(p, v, &c->spool));
    FIELD(m, "control_socket", v, as_path(p, v, &c->control_socket));
    FIELD(m, "log", v, set_log(p, v));
    FIELD(m, "log_level", v, set_log_level(p, v));
    if (!c->spool) c->spool = config_resolve_path(c->dir, "spool");
    if (!c->control_socket) c->control_socket = config_resolve_path(c->spool, "kilnd.sock");
    size_t sun_max = sizeof(((struct sockaddr_un *)0)->sun_path);
    if (strlen(c->control_socket) >= sun_max) {
        yaml_node_t *ck = NULL;
        lookup(p, m, "control_socket", &ck);
        push_key(p, "control_socket");
        return fail_at(p, line_of(ck, line_of(key, 1)),
                       "'%s' is %zu bytes long; a Unix socket path must be shorter than %zu "
                       "(set a shorter server.control_socket)",
                       c->control_socket, strlen(c->control_socket), sun_max);
    }
    pop(p, mark);
    return 0;
}

static int set_dns_servers(cfgp *p, yaml_node_t *v)
{
    config *c = p->cfg;
    size_t n;
    if (as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    c->dns_servers = util_calloc(n, sizeof *c->dns_servers);
    c->ndns_servers = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = item(p, v, i);
        size_t m = push_index(p, i);
        const char *s = NULL;
        if (as_scalar(p, it, "IP or IP:port", &s) < 0) return -1;
        config_hostport hp;
        if (config_parse_hostport(s, 53, &hp) < 0)
            return fail(p, it, "'%s' is not IP or IP:port (e.g. 127.0.0.1:5353, [::1]:53)", s);
        c->dns_servers[i] = hp;
        if (!is_ip(hp.host))
            return fail(p, it, "'%s' is not an IP address (name servers are given by address)",
                        hp.host);
        pop(p, m);
    }
    return 0;
}

static int parse_dns(cfgp *p, yaml_node_t *m)
{
    static const char *const keys[] = {"servers", "timeout", NULL};
    if (as_map(p, m, keys) <= 0) return p->err ? -1 : 0;
    FIELD(m, "servers", v, set_dns_servers(p, v));
    FIELD(m, "timeout", v, as_duration(p, v, true, &p->cfg->dns_timeout_ms));
    return 0;
}

static int set_listen(cfgp *p, yaml_node_t *v)
{
    config *c = p->cfg;
    size_t n;
    if (as_list(p, v, &n) < 0) return -1;
    if (n == 0)
        return fail(p, v, "at least one listen address is needed (e.g. [127.0.0.1:2587])");
    c->listen = util_calloc(n, sizeof *c->listen);
    c->nlisten = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = item(p, v, i);
        size_t m = push_index(p, i);
        const char *s = NULL;
        if (as_scalar(p, it, "host:port", &s) < 0) return -1;
        if (config_parse_hostport(s, 0, &c->listen[i]) < 0)
            return fail(p, it, "'%s' is not host:port (e.g. 127.0.0.1:2587, [::1]:2587)", s);
        for (size_t j = 0; j < i; j++)
            if (c->listen[j].port == c->listen[i].port &&
                strcmp(c->listen[j].host, c->listen[i].host) == 0)
                return fail(p, it, "'%s' is listed twice", s);
        pop(p, m);
    }
    return 0;
}

static int readable_file(cfgp *p, yaml_node_t *v, char **path)
{
    if (as_path(p, v, path) < 0) return -1;
    struct stat st;
    if (access(*path, R_OK) < 0 || stat(*path, &st) < 0)
        return fail(p, v, "cannot read %s: %s", *path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return fail(p, v, "%s is not a regular file", *path);
    return 0;
}

static int set_tls(cfgp *p, yaml_node_t *v)
{
    static const char *const keys[] = {"cert", "key", NULL};
    config *c = p->cfg;
    if (as_map(p, v, keys) < 0) return -1;
    yaml_node_t *m = is_null(v) ? NULL : v;
    if (!lookup(p, m, "cert", NULL))
        return missing(p, LINE(v), "cert", "(STARTTLS needs both cert and key)");
    if (!lookup(p, m, "key", NULL))
        return missing(p, LINE(v), "key", "(STARTTLS needs both cert and key)");
    FIELD(m, "cert", f, readable_file(p, f, &c->tls_cert));
    FIELD(m, "key", f, readable_file(p, f, &c->tls_key));
    return 0;
}

static int set_auth(cfgp *p, yaml_node_t *v)
{
    static const char *const keys[] = {"user", "password_hash", NULL};
    config *c = p->cfg;
    size_t n;
    if (as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    c->auth = util_calloc(n, sizeof *c->auth);
    c->nauth = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = item(p, v, i);
        size_t m = push_index(p, i);
        if (as_map(p, it, keys) < 0) return -1;
        config_auth_user *a = &c->auth[i];
        FIELD(it, "user", f, as_str(p, f, valid_user, "a user name without blanks", &a->user));
        FIELD(it, "password_hash", f,
              as_str(p, f, valid_crypt_hash,
                     "a crypt(3) hash (e.g. $y$... from mkpasswd -m yescrypt, or $6$...; argon2 is not in libcrypt)",
                     &a->password_hash));
        if (!a->user) return missing(p, LINE(it), "user", NULL);
        if (!a->password_hash)
            return missing(p, LINE(it), "password_hash", "(a crypt(3) hash, e.g. $y$...)");
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->auth[j].user, a->user) == 0) {
                push_key(p, "user");
                return fail(p, lookup(p, it, "user", NULL), "user '%s' is listed twice",
                            a->user);
            }
        pop(p, m);
    }
    return 0;
}

static int set_trusted(cfgp *p, yaml_node_t *v)
{
    config *c = p->cfg;
    size_t n;
    if (as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    c->trusted = util_calloc(n, sizeof *c->trusted);
    c->ntrusted = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = item(p, v, i);
        size_t m = push_index(p, i);
        const char *s = NULL;
        if (as_scalar(p, it, "a network", &s) < 0) return -1;
        if (config_parse_cidr(s, &c->trusted[i]) < 0) {
            config_cidr loose;
            if (cidr_parse(s, &loose, false) == 0) {
                strbuf sb;
                strbuf_init(&sb);
                cidr_to_text(&loose, &sb);
                fail(p, it, "'%s' has bits set after the prefix (did you mean %s?)", s, sb.buf);
                strbuf_free(&sb);
                return -1;
            }
            return fail(p, it, "'%s' is not a network (use e.g. 127.0.0.0/8, ::1/128, 10.0.0.5)",
                        s);
        }
        pop(p, m);
    }
    return 0;
}

static int parse_submission(cfgp *p, yaml_node_t *m)
{
    static const char *const keys[] = {"listen", "tls", "auth", "trusted_networks",
                                       "max_message_size", "max_recipients", NULL};
    config *c = p->cfg;
    if (as_map(p, m, keys) <= 0) return p->err ? -1 : 0;
    FIELD(m, "listen", v, set_listen(p, v));
    FIELD(m, "tls", v, set_tls(p, v));
    FIELD(m, "auth", v, set_auth(p, v));
    FIELD(m, "trusted_networks", v, set_trusted(p, v));
    FIELD(m, "max_message_size", v, as_size(p, v, &c->max_message_size));
    FIELD(m, "max_recipients", v, as_int32(p, v, 1, INT_MAX, NULL, &c->max_recipients));
    return 0;
}

static int set_send_rate(cfgp *p, yaml_node_t *v)
{
    double x;
    if (as_decimal(p, v, &x) < 0) return -1;
    if (x != -1 && !(x > 0))
        return fail(p, v, "must be -1 (unlimited) or more than 0, not %s", sval(v));
    p->cfg->max_send_rate = x;
    return 0;
}

static int set_reasons(cfgp *p, yaml_node_t *v)
{
    static const char *const names[] = {"BOUNCE", "COMPLAINT", NULL};
    size_t n;
    if (as_list(p, v, &n) < 0) return -1;
    unsigned bits = 0;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = item(p, v, i);
        size_t m = push_index(p, i);
        int r;
        if (as_enum(p, it, names, &r) < 0) return -1;
        unsigned bit = r == 0 ? CONFIG_SUPPRESS_BOUNCE : CONFIG_SUPPRESS_COMPLAINT;
        if (bits & bit) return fail(p, it, "%s is listed twice", names[r]);
        bits |= bit;
        pop(p, m);
    }
    p->cfg->suppression_reasons = bits;
    return 0;
}

static int set_suppression(cfgp *p, yaml_node_t *v)
{
    static const char *const keys[] = {"reasons", NULL};
    if (as_map(p, v, keys) <= 0) return p->err ? -1 : 0;
    FIELD(v, "reasons", r, set_reasons(p, r));
    return 0;
}

#define WHAT_IDENTITY "a domain or an address (e.g. example.com, ops@example.com)"

static int parse_account(cfgp *p, yaml_node_t *m)
{
    static const char *const keys[] = {"mode", "max_24h_send", "max_send_rate", "identities",
                                       "verified_recipients", "suppression", NULL};
    config *c = p->cfg;
    if (as_map(p, m, keys) <= 0) return p->err ? -1 : 0;
    int mode = (int)c->mode;
    FIELD(m, "mode", v, as_enum(p, v, MODE_NAMES, &mode));
    c->mode = (config_mode)mode;
    FIELD(m, "max_24h_send", v,
          as_int(p, v, -1, INT64_MAX, "-1 (unlimited) or at least 0", &c->max_24h_send));
    FIELD(m, "max_send_rate", v, set_send_rate(p, v));
    FIELD(m, "identities", v,
          as_strv(p, v, valid_identity, WHAT_IDENTITY, true, false, &c->identities,
                  &c->nidentities));
    FIELD(m, "verified_recipients", v,
          as_strv(p, v, valid_identity, WHAT_IDENTITY, true, false, &c->verified_recipients,
                  &c->nverified_recipients));
    FIELD(m, "suppression", v, set_suppression(p, v));
    return 0;
}

static int set_retry(cfgp *p, yaml_node_t *v)
{
    static const char *const keys[] = {"first", "max_interval", "factor", NULL};
    config *c = p->cfg;
    if (as_map(p, v, keys) <= 0) return p->err ? -1 : 0;
    FIELD(v, "first", f, as_duration(p, f, true, &c->retry_first_ms));
    FIELD(v, "max_interval", f, as_duration(p, f, true, &c->retry_max_interval_ms));
    FIELD(v, "factor", f, as_decimal(p, f, &c->retry_factor));
    yaml_node_t *fn = lookup(p, v, "factor", NULL);
    if (fn && c->retry_factor < 1) {
        push_key(p, "factor");
        return fail(p, fn, "must be at least 1, not %s", sval(fn));
    }
    if (c->retry_max_interval_ms < c->retry_first_ms) {
        yaml_node_t *mi = lookup(p, v, "max_interval", NULL);
        yaml_node_t *fi = lookup(p, v, "first", NULL);
        strbuf a, b;
        strbuf_init(&a);
        strbuf_init(&b);
        fmt_duration(&a, c->retry_max_interval_ms);
        fmt_duration(&b, c->retry_first_ms);
        push_key(p, mi ? "max_interval" : "first");
        fail(p, mi ? mi : fi, "max_interval (%s) must not be shorter than first (%s)", a.buf,
             b.buf);
        strbuf_free(&a);
        strbuf_free(&b);
        return -1;
    }
    return 0;
}

static int parse_delivery(cfgp *p, yaml_node_t *m)
{
    static const char *const keys[] = {"remote_port", "retry", "connect_timeout", NULL};
    config *c = p->cfg;
    if (as_map(p, m, keys) <= 0) return p->err ? -1 : 0;
    FIELD(m, "remote_port", v, as_int32(p, v, 1, 65535, NULL, &c->remote_port));
    FIELD(m, "retry", v, set_retry(p, v));
    FIELD(m, "connect_timeout", v, as_duration(p, v, true, &c->connect_timeout_ms));
    return 0;
}

static int parse_routes(cfgp *p, yaml_node_t *v)
{
    static const char *const keys[] = {"domain", "host", "port", NULL};
    config *c = p->cfg;
    size_t n;
    if (as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    c->routes = util_calloc(n, sizeof *c->routes);
    c->nroutes = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = item(p, v, i);
        size_t m = push_index(p, i);
        if (as_map(p, it, keys) < 0) return -1;
        config_route *r = &c->routes[i];
        r->port = c->remote_port;
        FIELD(it, "domain", f, as_str(p, f, valid_hostname, "a domain", &r->domain));
        FIELD(it, "host", f, as_str(p, f, valid_next_hop, "a host name or IP address", &r->host));
        FIELD(it, "port", f, as_int32(p, f, 1, 65535, NULL, &r->port));
        if (!r->domain) return missing(p, LINE(it), "domain", NULL);
        if (!r->host) return missing(p, LINE(it), "host", "(the next hop for the domain)");
        util_lowercase(r->domain);
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->routes[j].domain, r->domain) == 0) {
                push_key(p, "domain");
                return fail(p, lookup(p, it, "domain", NULL),
                            "domain '%s' already has a route (routes[%zu])", r->domain, j);
            }
        pop(p, m);
    }
    return 0;
}

static int find_index(char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0) return (int)i;
    return -1;
}

static int pool_index(const config *c, const char *name)
{
    for (size_t i = 0; i < c->npools; i++)
        if (c->pools[i].name && strcmp(c->pools[i].name, name) == 0) return (int)i;
    return -1;
}

/* Error "unknown pool 'x' (pools: a, b)" at node V. */
static int unknown_pool(cfgp *p, yaml_node_t *v, const char *name)
{
    strbuf sb;
    strbuf_init(&sb);
    for (size_t i = 0; i < p->cfg->npools; i++)
        strbuf_printf(&sb, "%s%s", i ? ", " : "", p->cfg->pools[i].name);
    if (!sb.len) strbuf_puts(&sb, "none are defined; add it under pools");
    fail(p, v, "unknown pool '%s' (pools: %s)", name, sb.buf);
    strbuf_free(&sb);
    return -1;
}

static int parse_pools(cfgp *p, yaml_node_t *v)
{
    static const char *const keys[] = {"name", "scaling", "overflow", NULL};
    config *c = p->cfg;
    size_t n;
    if (as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    c->pools = util_calloc(n, sizeof *c->pools);
    c->npools = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = item(p, v, i);
        size_t m = push_index(p, i);
        if (as_map(p, it, keys) < 0) return -1;
        config_pool *pl = &c->pools[i];
        int scaling = CONFIG_SCALING_STANDARD;
        FIELD(it, "name", f, as_str(p, f, valid_name, WHAT_NAME, &pl->name));
        FIELD(it, "scaling", f, as_enum(p, f, SCALING_NAMES, &scaling));
        pl->scaling = (config_scaling)scaling;
        if (!pl->name) return missing(p, LINE(it), "name", NULL);
        yaml_node_t *nn = lookup(p, it, "name", NULL);
        if (strcmp(pl->name, "defer") == 0) {
            push_key(p, "name");
            return fail(p, nn, "'defer' is reserved (overflow: defer means no overflow pool)");
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->pools[j].name, pl->name) == 0) {
                push_key(p, "name");
                return fail(p, nn, "pool '%s' is already defined (pools[%zu])", pl->name, j);
            }
        pop(p, m);
    }
    /* Overflow names another pool: checked once every name is known. */
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = item(p, v, i);
        size_t m = push_index(p, i);
        config_pool *pl = &c->pools[i];
        yaml_node_t *f = lookup(p, it, "overflow", NULL);
        if (f) {
            size_t mk = push_key(p, "overflow");
            const char *s = NULL;
            if (as_scalar(p, f, "defer or a pool name", &s) < 0) return -1;
            if (strcmp(s, "defer") != 0) {
                if (strcmp(s, pl->name) == 0)
                    return fail(p, f, "a pool cannot overflow to itself (use defer or another "
                                      "pool)");
                if (pool_index(c, s) < 0) return unknown_pool(p, f, s);
                pl->overflow = util_strdup(s);
            }
            pop(p, mk);
        }
        pop(p, m);
    }
    return 0;
}

static int parse_ips(cfgp *p, yaml_node_t *v)
{
    static const char *const keys[] = {"address", "zone", "pool", "ehlo", "warmup", NULL};
    config *c = p->cfg;
    size_t n;
    if (as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    c->ips = util_calloc(n, sizeof *c->ips);
    c->nips = n;
    struct bin { int family; unsigned char a[16]; } *bins = util_calloc(n, sizeof *bins);
    int rc = -1;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = item(p, v, i);
        size_t m = push_index(p, i);
        config_ip *ip = &c->ips[i];
        ip->line = LINE(it);
        if (as_map(p, it, keys) < 0) goto out;
        yaml_node_t *f;
        if (!(f = lookup(p, it, "address", NULL))) {
            missing(p, LINE(it), "address", NULL);
            goto out;
        }
        size_t mk = push_key(p, "address");
        if (as_str(p, f, NULL, NULL, &ip->address) < 0) goto out;
        if (inet_pton(AF_INET, ip->address, bins[i].a) == 1) bins[i].family = AF_INET;
        else if (inet_pton(AF_INET6, ip->address, bins[i].a) == 1) bins[i].family = AF_INET6;
        else {
            fail(p, f, "'%s' is not an IPv4 or IPv6 address", ip->address);
            goto out;
        }
        for (size_t j = 0; j < i; j++)
            if (bins[j].family == bins[i].family && memcmp(bins[j].a, bins[i].a, 16) == 0) {
                fail(p, f, "%s is listed twice (also ips[%zu] at line %d)", ip->address, j,
                     c->ips[j].line);
                goto out;
            }
        pop(p, mk);

        if (!(f = lookup(p, it, "zone", NULL))) {
            missing(p, LINE(it), "zone", NULL);
            goto out;
        }
        mk = push_key(p, "zone");
        if (as_str(p, f, NULL, NULL, &ip->zone) < 0) goto out;
        if (find_index(c->zones, c->nzones, ip->zone) < 0) {
            strbuf sb;
            strbuf_init(&sb);
            names_text(&sb, c->zones, c->nzones, "none are defined; add it under zones");
            fail(p, f, "unknown zone '%s' (zones: %s)", ip->zone, sb.buf);
            strbuf_free(&sb);
            goto out;
        }
        pop(p, mk);

        if (!(f = lookup(p, it, "pool", NULL))) {
            missing(p, LINE(it), "pool", NULL);
            goto out;
        }
        mk = push_key(p, "pool");
        if (as_str(p, f, NULL, NULL, &ip->pool) < 0) goto out;
        if (pool_index(c, ip->pool) < 0) {
            unknown_pool(p, f, ip->pool);
            goto out;
        }
        pop(p, mk);

        if ((f = lookup(p, it, "ehlo", NULL))) {
            mk = push_key(p, "ehlo");
            if (as_str(p, f, valid_hostname, "a valid host name", &ip->ehlo) < 0) goto out;
            pop(p, mk);
        }
        if ((f = lookup(p, it, "warmup", NULL))) {
            mk = push_key(p, "warmup");
            const char *s = NULL;
            if (as_scalar(p, f, "done", &s) < 0) goto out;
            if (strcmp(s, "done") != 0) {
                fail(p, f, "only 'done' is allowed, not '%s' (leave warmup out for a new IP "
                           "that must warm up)", s);
                goto out;
            }
            ip->warmup = CONFIG_WARMUP_DONE;
            pop(p, mk);
        }
        pop(p, m);
    }
    rc = 0;
out:
    free(bins);
    return rc;
}

static int set_event(cfgp *p, yaml_node_t *it, config_event_dest *e)
{
    static const char *const file_keys[] = {"type", "path", NULL};
    static const char *const hook_keys[] = {"type", "url", NULL};
    if (as_map(p, it, NULL) < 0) return -1;
    if (is_null(it)) return fail(p, it, "expected a map like {type: file, path: ...}, got nothing");
    yaml_node_t *t = lookup(p, it, "type", NULL);
    if (!t) return missing(p, LINE(it), "type", "(file or webhook)");
    int type = CONFIG_EVENT_FILE;
    FIELD(it, "type", f, as_enum(p, f, EVENT_NAMES, &type));
    e->type = (config_event_type)type;
    if (check_keys(p, it, type == CONFIG_EVENT_FILE ? file_keys : hook_keys) < 0) return -1;
    if (e->type == CONFIG_EVENT_FILE) {
        if (!lookup(p, it, "path", NULL))
            return missing(p, LINE(it), "path", "(type file writes events to this file)");
        FIELD(it, "path", f, as_path(p, f, &e->path));
    } else {
        if (!lookup(p, it, "url", NULL))
            return missing(p, LINE(it), "url", "(type webhook posts events to this URL)");
        FIELD(it, "url", f,
              as_str(p, f, valid_url, "an http:// or https:// URL", &e->url));
    }
    return 0;
}

static int set_events(cfgp *p, yaml_node_t *v, config_set *s)
{
    size_t n;
    if (as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    s->events = util_calloc(n, sizeof *s->events);
    s->nevents = n;
    for (size_t i = 0; i < n; i++) {
        size_t m = push_index(p, i);
        if (set_event(p, item(p, v, i), &s->events[i]) < 0) return -1;
        pop(p, m);
    }
    return 0;
}

static int set_max_delivery(cfgp *p, yaml_node_t *v, config_set *s)
{
    if (as_duration(p, v, true, &s->max_delivery_time_ms) < 0) return -1;
    if (s->max_delivery_time_ms > MAX_DELIVERY_MS)
        return fail(p, v, "%s is more than 14h, the longest a message may stay queued "
                          "(as SES MaxDeliverySeconds)", sval(v));
    return 0;
}

static int set_set_pool(cfgp *p, yaml_node_t *v, config_set *s)
{
    if (as_str(p, v, NULL, NULL, &s->pool) < 0) return -1;
    if (pool_index(p->cfg, s->pool) < 0) return unknown_pool(p, v, s->pool);
    return 0;
}

static int parse_sets(cfgp *p, yaml_node_t *v)
{
    static const char *const keys[] = {"name", "pool", "tls_policy", "max_delivery_time",
                                       "events", "priority", NULL};
    config *c = p->cfg;
    size_t n;
    if (as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    c->sets = util_calloc(n, sizeof *c->sets);
    c->nsets = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = item(p, v, i);
        size_t m = push_index(p, i);
        config_set *s = &c->sets[i];
        s->max_delivery_time_ms = MAX_DELIVERY_MS;
        if (as_map(p, it, keys) < 0) return -1;
        FIELD(it, "name", f, as_str(p, f, valid_name, WHAT_NAME, &s->name));
        if (!s->name) return missing(p, LINE(it), "name", NULL);
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->sets[j].name, s->name) == 0) {
                push_key(p, "name");
                return fail(p, lookup(p, it, "name", NULL),
                            "configuration set '%s' is already defined (configuration_sets[%zu])",
                            s->name, j);
            }
        if (!lookup(p, it, "pool", NULL))
            return missing(p, LINE(it), "pool", "(the IP pool this set sends from)");
        FIELD(it, "pool", f, set_set_pool(p, f, s));
        int tls = CONFIG_TLS_OPTIONAL;
        FIELD(it, "tls_policy", f, as_enum(p, f, TLS_NAMES, &tls));
        s->tls_policy = (config_tls_policy)tls;
        FIELD(it, "max_delivery_time", f, set_max_delivery(p, f, s));
        FIELD(it, "events", f, set_events(p, f, s));
        FIELD(it, "priority", f,
              as_int32(p, f, SET_PRIORITY_MIN, SET_PRIORITY_MAX,
                       "a whole number from -1000 to 1000 (higher is served first)",
                       &s->priority));
        pop(p, m);
    }
    return 0;
}

static int parse_default_set(cfgp *p, yaml_node_t *root)
{
    config *c = p->cfg;
    yaml_node_t *setskey = NULL, *defkey = NULL;
    lookup(p, root, "configuration_sets", &setskey);
    yaml_node_t *v = lookup(p, root, "default_configuration_set", &defkey);
    if (c->nsets == 0) {
        push_key(p, "configuration_sets");
        return fail_at(p, line_of(setskey, line_of(defkey, 1)),
                       "at least one configuration set is needed (e.g. {name: txn, pool: "
                       "transactional}), and default_configuration_set naming it");
    }
    strbuf sb;
    strbuf_init(&sb);
    for (size_t i = 0; i < c->nsets; i++)
        strbuf_printf(&sb, "%s%s", i ? ", " : "", c->sets[i].name);
    int rc = 0;
    if (!v) {
        push_key(p, "default_configuration_set");
        rc = fail_at(p, line_of(setskey, 1),
                     "required key is missing (the set for mail without a "
                     "X-SES-CONFIGURATION-SET header; sets: %s)", sb.buf);
    } else {
        size_t m = push_key(p, "default_configuration_set");
        rc = as_str(p, v, NULL, NULL, &c->default_set);
        if (rc == 0 && !config_find_set(c, c->default_set))
            rc = fail(p, v, "unknown configuration set '%s' (sets: %s)", c->default_set, sb.buf);
        if (rc == 0) pop(p, m);
    }
    strbuf_free(&sb);
    return rc;
}

static int parse_warmup(cfgp *p, yaml_node_t *m)
{
    static const char *const keys[] = {"days", "first_day", "target", "advance", "pacing", NULL};
    config_warmup *w = &p->cfg->warmup;
    if (as_map(p, m, keys) <= 0) return p->err ? -1 : 0;
    int advance = CONFIG_ADVANCE_CALENDAR;
    FIELD(m, "days", v, as_int32(p, v, 1, INT_MAX, NULL, &w->days));
    FIELD(m, "first_day", v, as_int(p, v, 1, INT64_MAX, NULL, &w->first_day));
    FIELD(m, "target", v, as_int(p, v, 1, INT64_MAX, NULL, &w->target));
    FIELD(m, "advance", v, as_enum(p, v, ADVANCE_NAMES, &advance));
    w->advance = (config_advance)advance;
    FIELD(m, "pacing", v, as_int32(p, v, 0, 24, "0 (off) to 24", &w->pacing));
    if (w->target < w->first_day) {
        yaml_node_t *t = lookup(p, m, "target", NULL);
        push_key(p, t ? "target" : "first_day");
        return fail(p, t ? t : lookup(p, m, "first_day", NULL),
                    "target (%lld) must not be below first_day (%lld)", (long long)w->target,
                    (long long)w->first_day);
    }
    return 0;
}

/* connections, messages_per_connection and rate of M into L. */
static int set_limits(cfgp *p, yaml_node_t *m, config_shaping_limits *l)
{
    FIELD(m, "connections", v, as_int32(p, v, 1, INT_MAX, NULL, &l->connections));
    FIELD(m, "messages_per_connection", v,
          as_int32(p, v, 1, INT_MAX, NULL, &l->messages_per_connection));
    FIELD(m, "rate", v, as_rate(p, v, &l->rate));
    return 0;
}

static int set_shaping_default(cfgp *p, yaml_node_t *v)
{
    static const char *const keys[] = {"connections", "messages_per_connection", "rate", NULL};
    if (as_map(p, v, keys) <= 0) return p->err ? -1 : 0;
    return set_limits(p, v, &p->cfg->shaping_default);
}

static int set_providers(cfgp *p, yaml_node_t *v)
{
    static const char *const keys[] = {"name", "mx_suffix", "connections",
                                       "messages_per_connection", "rate", NULL};
    config *c = p->cfg;
    size_t n;
    if (as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    c->providers = util_calloc(n, sizeof *c->providers);
    c->nproviders = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = item(p, v, i);
        size_t m = push_index(p, i);
        config_provider *pr = &c->providers[i];
        pr->limits.connections = -1;
        pr->limits.messages_per_connection = -1;
        pr->limits.rate.count = -1;
        pr->limits.rate.per_ms = 0;
        if (as_map(p, it, keys) < 0) return -1;
        FIELD(it, "name", f, as_str(p, f, valid_name, WHAT_NAME, &pr->name));
        if (!pr->name) return missing(p, LINE(it), "name", NULL);
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->providers[j].name, pr->name) == 0) {
                push_key(p, "name");
                return fail(p, lookup(p, it, "name", NULL),
                            "provider '%s' is already defined (providers[%zu])", pr->name, j);
            }
        FIELD(it, "mx_suffix", f,
              as_strv(p, f, valid_hostname, "a domain (e.g. google.com)", true, true,
                      &pr->mx_suffix, &pr->nmx_suffix));
        if (pr->nmx_suffix == 0)
            return missing(p, LINE(it), "mx_suffix",
                           "(the MX host suffixes of this provider, e.g. [google.com])");
        if (set_limits(p, it, &pr->limits) < 0) return -1;
        pop(p, m);
    }
    return 0;
}

static int parse_shaping(cfgp *p, yaml_node_t *m)
{
    static const char *const keys[] = {"default", "providers", NULL};
    if (as_map(p, m, keys) <= 0) return p->err ? -1 : 0;
    FIELD(m, "default", v, set_shaping_default(p, v));
    FIELD(m, "providers", v, set_providers(p, v));
    return 0;
}

static int parse_zones(cfgp *p, yaml_node_t *v)
{
    return as_strv(p, v, valid_name, WHAT_NAME, false, true, &p->cfg->zones, &p->cfg->nzones);
}

/* Warnings: legal but risky choices. */
static void add_warnings(config *c)
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
            warn(c, "pool %s has no IPs; its mail waits until an IP is added", pl->name);
        } else {
            if (n < RECOMMENDED_POOL_IPS)
                warn(c, "pool %s has %zu IP%s; at least %d are recommended", pl->name, n,
                     n == 1 ? "" : "s", RECOMMENDED_POOL_IPS);
            size_t want = n < 3 ? n : 3;
            if (nz < want) {
                strbuf sb;
                strbuf_init(&sb);
                fmt_list(&sb, (char *const *)zs, nz);
                warn(c, "pool %s has its %zu IPs in %zu zone%s (%s); spread them over at "
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
            fmt_duration(&sb, c->sets[i].max_delivery_time_ms);
            warn(c, "configuration set %s: max_delivery_time %s is below 5m; a short outage "
                    "at a receiving server will bounce its mail", c->sets[i].name, sb.buf);
            strbuf_free(&sb);
        }
}

static const char *const ROOT_KEYS[] = {
    "server", "dns", "submission", "account", "delivery", "routes", "zones", "ips", "pools",
    "configuration_sets", "default_configuration_set", "warmup", "shaping", NULL};

static int parse_root(cfgp *p, yaml_node_t *root)
{
    if (root) {
        if (root->type != YAML_MAPPING_NODE && !is_null(root))
            return fail(p, root, "the file must be a map of sections (server, submission, "
                                 "pools, ...), not %s", kind(root));
        if (root->type == YAML_MAPPING_NODE && check_keys(p, root, ROOT_KEYS) < 0) return -1;
        if (root->type != YAML_MAPPING_NODE) root = NULL;
    }
    if (parse_server(p, root) < 0) return -1;
    FIELD(root, "dns", v, parse_dns(p, v));
    FIELD(root, "submission", v, parse_submission(p, v));
    FIELD(root, "account", v, parse_account(p, v));
    FIELD(root, "delivery", v, parse_delivery(p, v));
    FIELD(root, "routes", v, parse_routes(p, v));
    FIELD(root, "zones", v, parse_zones(p, v));
    FIELD(root, "pools", v, parse_pools(p, v));
    FIELD(root, "ips", v, parse_ips(p, v));
    FIELD(root, "configuration_sets", v, parse_sets(p, v));
    if (parse_default_set(p, root) < 0) return -1;
    FIELD(root, "warmup", v, parse_warmup(p, v));
    FIELD(root, "shaping", v, parse_shaping(p, v));
    return 0;
}

static void set_defaults(config *c)
{
    c->refs = 1;
    c->log_level = KLOG_INFO;
    c->dns_timeout_ms = 2 * MS_SECOND;
    c->max_message_size = 10 * KB * KB;
    c->max_recipients = 50;
    c->mode = CONFIG_MODE_SANDBOX;
    c->max_24h_send = 200;
    c->max_send_rate = 1;
    c->suppression_reasons = CONFIG_SUPPRESS_BOUNCE | CONFIG_SUPPRESS_COMPLAINT;
    c->remote_port = 25;
    c->retry_first_ms = 60 * MS_SECOND;
    c->retry_max_interval_ms = MS_HOUR;
    c->retry_factor = 2;
    c->connect_timeout_ms = 10 * MS_SECOND;
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

static void set_string_defaults(config *c)
{
    if (!c->region) c->region = util_strdup("local");
    if (!c->log) c->log = util_strdup("stderr");
    if (c->nlisten == 0) {
        c->listen = util_calloc(1, sizeof *c->listen);
        c->listen[0].host = util_strdup("127.0.0.1");
        c->listen[0].port = 2587;
        c->nlisten = 1;
    }
}

static char *yaml_error(const char *file, const yaml_parser_t *ps)
{
    const char *problem = ps->problem ? ps->problem : "cannot be parsed";
    switch (ps->error) {
    case YAML_MEMORY_ERROR:
        util_fatal("out of memory parsing %s", file);
    case YAML_READER_ERROR:
        return util_asprintf("%s: YAML error at byte %zu: %s", file, ps->problem_offset,
                             problem);
    default:
        break;
    }
    if (ps->context)
        return util_asprintf("%s:%zu: YAML syntax error: %s (%s at line %zu)", file,
                             ps->problem_mark.line + 1, problem, ps->context,
                             ps->context_mark.line + 1);
    return util_asprintf("%s:%zu: YAML syntax error: %s", file, ps->problem_mark.line + 1,
                         problem);
}

/* Absolute, symlink-free directory of PATH. */
char *config_file_dir(const char *path, char **err)
{
    char *copy = util_strdup(path);
    char *real = realpath(dirname(copy), NULL);
    if (!real && err)
        *err = util_asprintf("%s: cannot resolve its directory: %s", path, strerror(errno));
    free(copy);
    return real;
}

config *config_load(const char *path, char **err)
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
    yaml_parser_t ps;
    if (!yaml_parser_initialize(&ps)) util_fatal("out of memory initialising libyaml");
    yaml_parser_set_input_file(&ps, f);
    yaml_document_t doc;
    if (!yaml_parser_load(&ps, &doc)) {
        *err = yaml_error(path, &ps);
        yaml_parser_delete(&ps);
        fclose(f);
        free(dir);
        return NULL;
    }
    /* One document per file: a second one is most likely a stray "---". */
    yaml_document_t extra;
    if (!yaml_parser_load(&ps, &extra)) {
        *err = yaml_error(path, &ps);
    } else {
        yaml_node_t *r = yaml_document_get_root_node(&extra);
        if (r)
            *err = util_asprintf("%s:%zu: a second YAML document starts here; the file must "
                                 "hold one", path, extra.start_mark.line + 1);
        yaml_document_delete(&extra);
    }
    config *c = NULL;
    if (!*err) {
        c = util_calloc(1, sizeof *c);
        c->path = util_strdup(path);
        c->dir = dir;
        dir = NULL;
        set_defaults(c);
        cfgp p = {.file = path, .doc = &doc, .cfg = c};
        strbuf_init(&p.path);
        strbuf_append(&p.path, "", 0);
        if (parse_root(&p, yaml_document_get_root_node(&doc)) < 0) {
            *err = p.err ? p.err : util_asprintf("%s: invalid configuration", path);
            config_free(c);
            c = NULL;
        } else {
            set_string_defaults(c);
            add_warnings(c);
        }
        strbuf_free(&p.path);
    }
    free(dir);
    yaml_document_delete(&doc);
    yaml_parser_delete(&ps);
    fclose(f);
    return c;
}

/* ------------------------------------------------------------------------------------------
 * Lookups and the summary
 * ---------------------------------------------------------------------------------------- */

const config_set *config_find_set(const config *cfg, const char *name)
{
    if (!name) return NULL;
    for (size_t i = 0; i < cfg->nsets; i++)
        if (strcmp(cfg->sets[i].name, name) == 0) return &cfg->sets[i];
    return NULL;
}

const config_pool *config_find_pool(const config *cfg, const char *name)
{
    int i = name ? pool_index(cfg, name) : -1;
    return i < 0 ? NULL : &cfg->pools[i];
}

const config_route *config_find_route(const config *cfg, const char *domain)
{
    if (!domain) return NULL;
    size_t n = strlen(domain);
    if (n && domain[n - 1] == '.') n--;   /* "demo.test." is demo.test */
    for (size_t i = 0; i < cfg->nroutes; i++)
        if (strlen(cfg->routes[i].domain) == n &&
            strncasecmp(cfg->routes[i].domain, domain, n) == 0)
            return &cfg->routes[i];
    return NULL;
}

bool config_is_trusted(const config *cfg, const char *addr)
{
    if (!addr) return false;
    char buf[INET6_ADDRSTRLEN + 1];
    size_t n = strcspn(addr, "%");   /* drop an IPv6 scope ("fe80::1%eth0") */
    if (n == 0 || n >= sizeof buf) return false;
    memcpy(buf, addr, n);
    buf[n] = '\0';
    unsigned char v4[4], v6[16];
    bool has4 = false, has6 = false;
    if (inet_pton(AF_INET, buf, v4) == 1) {
        has4 = true;
        /* also as ::ffff:a.b.c.d for IPv6 networks */
        memset(v6, 0, 10);
        v6[10] = v6[11] = 0xff;
        memcpy(v6 + 12, v4, 4);
        has6 = true;
    } else if (inet_pton(AF_INET6, buf, v6) == 1) {
        has6 = true;
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(v6, mapped, 12) == 0) {
            memcpy(v4, v6 + 12, 4);
            has4 = true;
        }
    } else {
        return false;
    }
    for (size_t i = 0; i < cfg->ntrusted; i++) {
        if (has4 && cidr_match(&cfg->trusted[i], AF_INET, v4)) return true;
        if (has6 && cidr_match(&cfg->trusted[i], AF_INET6, v6)) return true;
    }
    return false;
}

static void summary_set(strbuf *sb, const config *c, const config_set *s)
{
    bool dflt = c->default_set && strcmp(c->default_set, s->name) == 0;
    strbuf_printf(sb, "  %s%s -> pool %s, tls %s, max_delivery_time ", s->name,
                  dflt ? " (default)" : "", s->pool, TLS_NAMES[s->tls_policy]);
    fmt_duration(sb, s->max_delivery_time_ms);
    strbuf_printf(sb, ", priority %d", s->priority);
    if (s->nevents == 0) strbuf_puts(sb, ", no event destinations");
    for (size_t j = 0; j < s->nevents; j++) {
        const config_event_dest *e = &s->events[j];
        strbuf_printf(sb, "%s%s %s", j ? ", " : ", events: ",
                      e->type == CONFIG_EVENT_FILE ? "file" : "webhook",
                      e->type == CONFIG_EVENT_FILE ? e->path : e->url);
    }
    strbuf_puts(sb, "\n");
}

char *config_summary(const config *cfg)
{
    const config *c = cfg;
    strbuf sb;
    strbuf_init(&sb);
    strbuf_printf(&sb, "config OK: %s\n", c->path);
    strbuf_printf(&sb, "server: %s, region %s, account mode %s (", c->hostname, c->region,
                  MODE_NAMES[c->mode]);
    if (c->max_24h_send < 0) strbuf_puts(&sb, "unlimited recipients per 24h, ");
    else strbuf_printf(&sb, "%lld recipients per 24h, ", (long long)c->max_24h_send);
    if (c->max_send_rate < 0) strbuf_puts(&sb, "no rate limit)\n");
    else strbuf_printf(&sb, "%g per second)\n", c->max_send_rate);
    strbuf_printf(&sb, "spool: %s, control socket %s, log %s (%s)\n", c->spool,
                  c->control_socket, c->log, log_level_name((klog_level)c->log_level));

    strbuf_puts(&sb, "dns: ");
    if (c->ndns_servers == 0) strbuf_puts(&sb, "servers from /etc/resolv.conf");
    for (size_t i = 0; i < c->ndns_servers; i++) {
        if (i) strbuf_puts(&sb, ", ");
        fmt_hostport(&sb, c->dns_servers[i].host, c->dns_servers[i].port);
    }
    strbuf_puts(&sb, ", timeout ");
    fmt_duration(&sb, c->dns_timeout_ms);
    strbuf_puts(&sb, "\n");

    strbuf_puts(&sb, "submission: listen ");
    for (size_t i = 0; i < c->nlisten; i++) {
        if (i) strbuf_puts(&sb, ", ");
        fmt_hostport(&sb, c->listen[i].host, c->listen[i].port);
    }
    strbuf_printf(&sb, "; STARTTLS %s; AUTH %s; trusted networks ", c->tls_cert ? "on" : "off",
                  c->nauth ? "required" : "off");
    if (c->ntrusted == 0) strbuf_puts(&sb, "none");
    for (size_t i = 0; i < c->ntrusted; i++) {
        if (i) strbuf_puts(&sb, ", ");
        cidr_to_text(&c->trusted[i], &sb);
    }
    strbuf_puts(&sb, "; max size ");
    fmt_size(&sb, c->max_message_size);
    strbuf_printf(&sb, ", %d recipients\n", c->max_recipients);

    strbuf_puts(&sb, "pools:\n");
    if (c->npools == 0) strbuf_puts(&sb, "  (none)\n");
    for (size_t i = 0; i < c->npools; i++) {
        const config_pool *pl = &c->pools[i];
        size_t n = 0, warm = 0;
        for (size_t j = 0; j < c->nips; j++)
            if (strcmp(c->ips[j].pool, pl->name) == 0) {
                n++;
                if (c->ips[j].warmup == CONFIG_WARMUP_DONE) warm++;
            }
        strbuf_printf(&sb, "  %s: %s, overflow %s, %zu IP%s (%zu warm)\n", pl->name,
                      SCALING_NAMES[pl->scaling], pl->overflow ? pl->overflow : "defer", n,
                      n == 1 ? "" : "s", warm);
    }
    strbuf_puts(&sb, "IPs per zone:\n");
    for (size_t z = 0; z < c->nzones; z++) {
        strbuf_printf(&sb, "  %s:", c->zones[z]);
        size_t n = 0;
        for (size_t j = 0; j < c->nips; j++) {
            const config_ip *ip = &c->ips[j];
            if (strcmp(ip->zone, c->zones[z]) != 0) continue;
            strbuf_printf(&sb, "%s %s (%s%s)", n++ ? "," : "", ip->address, ip->pool,
                          ip->warmup == CONFIG_WARMUP_DONE ? ", warm" : ", warming up");
        }
        strbuf_puts(&sb, n ? "\n" : " (none)\n");
    }
    strbuf_puts(&sb, "configuration sets:\n");
    for (size_t i = 0; i < c->nsets; i++) summary_set(&sb, c, &c->sets[i]);
    strbuf_puts(&sb, "routes:\n");
    if (c->nroutes == 0) strbuf_puts(&sb, "  (none: MX lookup for every domain)\n");
    for (size_t i = 0; i < c->nroutes; i++) {
        strbuf_printf(&sb, "  %s -> ", c->routes[i].domain);
        fmt_hostport(&sb, c->routes[i].host, c->routes[i].port);
        strbuf_puts(&sb, "\n");
    }
    strbuf_printf(&sb, "warm-up: %d days from %lld to %lld per IP per day, advance %s, pacing ",
                  c->warmup.days, (long long)c->warmup.first_day, (long long)c->warmup.target,
                  ADVANCE_NAMES[c->warmup.advance]);
    if (c->warmup.pacing) strbuf_printf(&sb, "%d/24\n", c->warmup.pacing);
    else strbuf_puts(&sb, "off\n");
    strbuf_printf(&sb, "shaping: %d connections, %d messages per connection, rate ",
                  c->shaping_default.connections, c->shaping_default.messages_per_connection);
    fmt_rate(&sb, &c->shaping_default.rate);
    for (size_t i = 0; i < c->nproviders; i++)
        strbuf_printf(&sb, "%s%s", i ? ", " : "; providers ", c->providers[i].name);
    strbuf_puts(&sb, "\n");
    for (size_t i = 0; i < c->nwarnings; i++) strbuf_printf(&sb, "warning: %s\n", c->warnings[i]);
    return strbuf_steal(&sb);
}
