/* sts_policy.c — MTA-STS policy, TXT record and MX pattern parsing (see sts_policy.h).
 * Hand-written: Debian packages no MTA-STS parser in C, and the grammar of RFC 8461
 * sections 3.1 and 3.2 is a few lines of "key: value" and "k=v;" splitting. */
#include "mta/sts_policy.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"

const char *sts_mode_name(sts_mode m)
{
    switch (m) {
    case STS_MODE_ENFORCE: return "enforce";
    case STS_MODE_TESTING: return "testing";
    case STS_MODE_NONE: return "none";
    }
    return "?";
}

void sts_policy_clear(sts_policy *p)
{
    for (size_t i = 0; i < p->nmx; i++) free(p->mx[i]);
    free(p->mx);
    memset(p, 0, sizeof *p);
}

void sts_policy_copy(sts_policy *dst, const sts_policy *src)
{
    *dst = *src;
    dst->mx = util_calloc(src->nmx ? src->nmx : 1, sizeof *dst->mx);
    for (size_t i = 0; i < src->nmx; i++) dst->mx[i] = util_strdup(src->mx[i]);
}

/* A domain name of LDH labels (1-63 bytes each, 253 in all), optionally "*." first. */
static bool sts_valid_pattern(const char *s)
{
    if (s[0] == '*' && s[1] == '.') s += 2;
    size_t n = strlen(s);
    if (n == 0 || n > 253) return false;
    size_t label = 0;
    for (const char *p = s; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '.') {
            if (label == 0) return false;
            label = 0;
        } else if (isalnum(ch) || ch == '-' || ch == '_') {
            if (++label > 63) return false;
        } else {
            return false;
        }
    }
    return label > 0;
}

/* The value of one line, trimmed of spaces and tabs; NULL if the line has no ':'. */
static char *sts_split_line(const char *line, size_t len, char **key)
{
    const char *colon = memchr(line, ':', len);
    if (!colon) return NULL;
    const char *ke = colon;
    while (ke > line && (ke[-1] == ' ' || ke[-1] == '\t')) ke--;
    const char *v = colon + 1, *ve = line + len;
    while (v < ve && (*v == ' ' || *v == '\t')) v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    *key = util_strndup(line, (size_t)(ke - line));
    return util_strndup(v, (size_t)(ve - v));
}

static int sts_fail(sts_policy *out, char **err, char *msg)
{
    sts_policy_clear(out);
    *err = msg;
    return -1;
}

int sts_policy_parse(const char *buf, size_t len, sts_policy *out, char **err)
{
    memset(out, 0, sizeof *out);
    if (len > STS_POLICY_MAX_BYTES)
        return sts_fail(out, err, util_asprintf("policy larger than %d bytes", STS_POLICY_MAX_BYTES));
    bool have_version = false, have_mode = false, have_age = false;
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - (buf + pos)) : len - pos;
        const char *line = buf + pos;
        pos += ll + (nl ? 1 : 0);
        if (ll && line[ll - 1] == '\r') ll--;
        if (ll == 0) continue;
        if (ll > STS_POLICY_MAX_LINE)
            return sts_fail(out, err, util_asprintf("a line longer than %d bytes", STS_POLICY_MAX_LINE));
        if (memchr(line, '\0', ll)) return sts_fail(out, err, util_strdup("a NUL byte in the policy"));
        char *key = NULL;
        char *val = sts_split_line(line, ll, &key);
        if (!val) return sts_fail(out, err, util_strdup("a line without 'key: value'"));
        char *msg = NULL;
        if (strcmp(key, "version") == 0) {
            if (!have_version && strcmp(val, "STSv1") != 0)
                msg = util_asprintf("version: '%.40s' is not STSv1", val);
            have_version = true;
        } else if (strcmp(key, "mode") == 0) {
            if (!have_mode) {
                if (strcmp(val, "enforce") == 0) out->mode = STS_MODE_ENFORCE;
                else if (strcmp(val, "testing") == 0) out->mode = STS_MODE_TESTING;
                else if (strcmp(val, "none") == 0) out->mode = STS_MODE_NONE;
                else msg = util_asprintf("mode: '%.40s' is not enforce, testing or none", val);
            }
            have_mode = true;
        } else if (strcmp(key, "max_age") == 0) {
            if (!have_age) {
                size_t n = strlen(val);
                bool digits = n > 0 && n <= 10;
                for (size_t i = 0; i < n && digits; i++) digits = isdigit((unsigned char)val[i]) != 0;
                long long age = digits ? strtoll(val, NULL, 10) : -1;
                if (!digits || age > STS_MAX_AGE_MAX)
                    msg = util_asprintf("max_age: '%.40s' is not a number of seconds up to %d", val,
                                        STS_MAX_AGE_MAX);
                else out->max_age_s = age;
            }
            have_age = true;
        } else if (strcmp(key, "mx") == 0) {
            size_t n = strlen(val);
            if (n && val[n - 1] == '.') val[n - 1] = '\0';
            util_lowercase(val);
            if (!sts_valid_pattern(val))
                msg = util_asprintf("mx: '%.80s' is not a host name or *.domain pattern", val);
            else if (out->nmx >= STS_POLICY_MAX_MX)
                msg = util_asprintf("more than %d mx lines", STS_POLICY_MAX_MX);
            else {
                out->mx = util_realloc(out->mx, (out->nmx + 1) * sizeof *out->mx);
                out->mx[out->nmx++] = val;
                val = NULL;
            }
        }
        free(key);
        free(val);
        if (msg) return sts_fail(out, err, msg);
    }
    if (!have_version) return sts_fail(out, err, util_strdup("no version field"));
    if (!have_mode) return sts_fail(out, err, util_strdup("no mode field"));
    if (!have_age) return sts_fail(out, err, util_strdup("no max_age field"));
    if (out->mode != STS_MODE_NONE && out->nmx == 0)
        return sts_fail(out, err, util_asprintf("mode %s without any mx field", sts_mode_name(out->mode)));
    return 0;
}

bool sts_txt_is_sts(const char *txt, size_t len)
{
    return len >= 7 && memcmp(txt, "v=STSv1", 7) == 0 &&
           (len == 7 || txt[7] == ';' || txt[7] == ' ' || txt[7] == '\t');
}

int sts_txt_id(const char *txt, size_t len, char *id, size_t cap)
{
    if (!sts_txt_is_sts(txt, len) || cap < STS_ID_MAX + 1) return -1;
    bool have_id = false;
    size_t pos = 7;
    while (pos < len) {
        while (pos < len && (txt[pos] == ' ' || txt[pos] == '\t')) pos++;
        if (pos < len && txt[pos] == ';') {
            pos++;
            continue;
        }
        size_t start = pos;
        while (pos < len && txt[pos] != ';') pos++;
        size_t end = pos;
        while (end > start && (txt[end - 1] == ' ' || txt[end - 1] == '\t')) end--;
        const char *f = txt + start;
        size_t fl = end - start;
        const char *eq = memchr(f, '=', fl);
        if (!eq || eq == f) return -1;           /* every field is key=value */
        if ((size_t)(eq - f) == 2 && memcmp(f, "id", 2) == 0 && !have_id) {
            size_t il = fl - 3;
            if (il < 1 || il > STS_ID_MAX) return -1;
            for (size_t i = 0; i < il; i++)
                if (!isalnum((unsigned char)eq[1 + i])) return -1;
            memcpy(id, eq + 1, il);
            id[il] = '\0';
            have_id = true;
        }
    }
    return have_id ? 0 : -1;
}

bool sts_mx_match(const char *pattern, const char *host)
{
    size_t pl = strlen(pattern), hl = strlen(host);
    if (pl && pattern[pl - 1] == '.') pl--;
    if (hl && host[hl - 1] == '.') hl--;
    if (pl >= 2 && pattern[0] == '*' && pattern[1] == '.') {
        /* exactly one label, then the rest of the pattern */
        const char *dot = memchr(host, '.', hl);
        if (!dot || dot == host) return false;
        size_t rest = hl - (size_t)(dot - host);   /* ".example.com" */
        return rest == pl - 1 && strncasecmp(dot, pattern + 1, rest) == 0;
    }
    return pl == hl && pl > 0 && strncasecmp(pattern, host, pl) == 0;
}

bool sts_policy_mx_allowed(const sts_policy *p, const char *host)
{
    for (size_t i = 0; i < p->nmx; i++)
        if (sts_mx_match(p->mx[i], host)) return true;
    return false;
}
