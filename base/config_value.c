/* config_value.c — the pure value parsers and checks under kiln's configuration (SPEC
 * section 1): sizes, durations, rates, host:port, CIDR networks, host names, SES-style names,
 * identities, URLs and the shape of crypt(3) hashes; the formatters that turn values back
 * into the same notation (for the summary and messages); and paths resolved against the
 * config file's directory.
 *
 * Promises: no YAML and no struct config here, and no I/O but config_file_dir's realpath.
 * Every parser takes a NUL-terminated string, accepts exactly the format it documents, and
 * on bad input returns -1 without touching its output. They are hand-written: a few lines
 * each over formats kiln defines, exported (config.h) for table-driven tests. */
#include "base/config_internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define NAME_MAX_LEN 64

/* ------------------------------------------------------------------------------------------
 * Pure value parsers
 * ---------------------------------------------------------------------------------------- */

/* One or more decimal digits at *sp into *out; advances *sp. -1 on no digit or overflow. */
static int config_parse_digits(const char **sp, uint64_t *out)
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
int config_parse_int(const char *s, int64_t *out)
{
    bool neg = *s == '-';
    if (neg) s++;
    uint64_t v;
    if (config_parse_digits(&s, &v) < 0 || *s) return -1;
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
int config_parse_decimal(const char *s, double *out)
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
    if (config_parse_digits(&s, &v) < 0) return -1;
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
    if (config_parse_digits(&s, &v) < 0) return -1;
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
    if (config_parse_digits(&s, &v) < 0 || v == 0 || v > (uint64_t)INT64_MAX) return -1;
    int64_t per;
    if (strcmp(s, "/s") == 0) per = MS_SECOND;
    else if (strcmp(s, "/m") == 0) per = MS_MINUTE;
    else if (strcmp(s, "/h") == 0) per = MS_HOUR;
    else return -1;
    rate->count = (int64_t)v;
    rate->per_ms = per;
    return 0;
}

static bool config_is_ipv4(const char *s)
{
    struct in_addr a;
    return inet_pton(AF_INET, s, &a) == 1;
}

static bool config_is_ipv6(const char *s)
{
    struct in6_addr a;
    return inet_pton(AF_INET6, s, &a) == 1;
}

bool config_is_ip(const char *s) { return config_is_ipv4(s) || config_is_ipv6(s); }

/* DNS name: dot-separated labels of letters, digits, '-' and '_' (not at a label's ends
 * for '-'), 1..63 bytes each, 253 in all; no leading, trailing or double dot. */
bool config_valid_hostname(const char *s)
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

static bool config_valid_host(const char *s)
{
    return config_is_ipv4(s) || config_valid_hostname(s);
}

bool config_valid_next_hop(const char *s) { return config_is_ip(s) || config_valid_hostname(s); }

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
        if (!config_is_ipv6(buf)) return -1;
    } else {
        const char *colon = strchr(s, ':');
        if (colon && strchr(colon + 1, ':')) {
            /* Several colons and no brackets: a bare IPv6 literal, no port. */
            if (!config_is_ipv6(s)) return -1;
            host = s;
            hlen = strlen(s);
        } else {
            host = s;
            hlen = colon ? (size_t)(colon - s) : strlen(s);
            if (colon) port = colon + 1;
            if (hlen == 0 || hlen >= sizeof buf) return -1;
            memcpy(buf, host, hlen);
            buf[hlen] = '\0';
            if (!config_valid_host(buf)) return -1;
        }
    }
    int portnum;
    if (port) {
        uint64_t v;
        if (config_parse_digits(&port, &v) < 0 || *port || v < 1 || v > 65535) return -1;
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
int config_cidr_parse(const char *s, config_cidr *c, bool strict)
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
        if (config_parse_digits(&q, &v) < 0 || *q || v > (uint64_t)max) return -1;
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

int config_parse_cidr(const char *s, config_cidr *c) { return config_cidr_parse(s, c, true); }

bool config_cidr_match(const config_cidr *c, int family, const unsigned char *addr)
{
    if (c->family != family) return false;
    int full = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(c->addr, addr, (size_t)full) != 0) return false;
    if (rest == 0) return true;
    unsigned char m = (unsigned char)(0xffu << (8 - rest));
    return (c->addr[full] & m) == (addr[full] & m);
}

void config_cidr_to_text(const config_cidr *c, strbuf *sb)
{
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(c->family, c->addr, buf, sizeof buf);
    strbuf_printf(sb, "%s/%d", buf, c->prefix);
}

/* ------------------------------------------------------------------------------------------
 * Small checks and formatting
 * ---------------------------------------------------------------------------------------- */

/* Zone, pool, configuration set and provider names: SES-style names. */
bool config_valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NAME_MAX_LEN) return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_') return false;
    return true;
}

static bool config_has_blank_or_control(const char *s)
{
    for (; *s; s++)
        if (isspace((unsigned char)*s) || iscntrl((unsigned char)*s)) return true;
    return false;
}

static bool config_nonblank_text(const char *s) { return *s && !config_has_blank_or_control(s); }

/* A domain ("example.test") or an address ("ops@example.test"). */
bool config_valid_identity(const char *s)
{
    if (!*s || config_has_blank_or_control(s)) return false;
    const char *at = strrchr(s, '@');
    if (!at) return config_valid_hostname(s);
    return at != s && config_valid_hostname(at + 1);
}

/* The shape of a crypt(3) hash, "$id$rest" with something after the second '$'. Whether
 * this system's libcrypt implements the method (argon2, for one, is not in Debian's) is the
 * caller's config_hash_check, as it needs libcrypt. */
bool config_valid_crypt_hash(const char *s)
{
    if (s[0] != '$' || config_has_blank_or_control(s)) return false;
    const char *q = s + 1;
    while (isalnum((unsigned char)*q) || *q == '-') q++;
    return q > s + 1 && *q == '$' && q[1];
}

bool config_valid_user(const char *s) { return config_nonblank_text(s) && strlen(s) <= 255; }

void config_fmt_duration(strbuf *sb, int64_t ms)
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

void config_fmt_size(strbuf *sb, int64_t b)
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

void config_fmt_rate(strbuf *sb, const config_rate *r)
{
    if (r->count < 0) {
        strbuf_puts(sb, "none");
        return;
    }
    strbuf_printf(sb, "%lld/%s", (long long)r->count,
                  r->per_ms == MS_SECOND ? "s" : r->per_ms == MS_MINUTE ? "m" : "h");
}

void config_fmt_hostport(strbuf *sb, const char *host, int port)
{
    if (strchr(host, ':')) strbuf_printf(sb, "[%s]:%d", host, port);
    else strbuf_printf(sb, "%s:%d", host, port);
}

void config_fmt_list(strbuf *sb, char *const *names, size_t n)
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
