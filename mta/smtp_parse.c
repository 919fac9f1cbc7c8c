/* smtp_parse.c — pure SMTP protocol parsing on buffers: line splitting with the RFC 5321
 * length limits and smuggling checks, command verbs, MAIL/RCPT paths and parameters,
 * address syntax, reply lines.
 * Hand-written: no Debian library parses the server side of SMTP on plain buffers (libsmtp
 * style libraries are clients); the grammar pieces needed here are small and are tested
 * table by table in tests/unit/test_smtp_parse.c. */
#include "mta/smtp_parse.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- line reader ---- */

smtp_line_status smtp_line_next(smtp_linereader *lr, const char *buf, size_t len, size_t max,
                                smtp_line *out, size_t *discard)
{
    *discard = 0;
    if (len == 0) return SMTP_LINE_MORE;      /* buf may be NULL (an empty strbuf) */
    if (lr->skipping) {
        const char *lf = memchr(buf, '\n', len);
        if (!lf) {
            lr->last_cr = buf[len - 1] == '\r';
            *discard = len;
            return SMTP_LINE_MORE;
        }
        size_t i = (size_t)(lf - buf);
        bool cr = i > 0 ? buf[i - 1] == '\r' : lr->last_cr;
        lr->skipping = false;
        lr->last_cr = false;
        out->text = buf;
        out->len = 0;
        out->consumed = i + 1;
        out->flags = SMTP_LINE_TOO_LONG | (cr ? 0 : SMTP_LINE_BARE_LF);
        return SMTP_LINE_READY;
    }
    size_t scan = len < max ? len : max;
    const char *lf = memchr(buf, '\n', scan);
    if (!lf) {
        if (len < max) return SMTP_LINE_MORE;
        /* max bytes and no LF: whatever comes, this line is too long. */
        lr->skipping = true;
        lr->last_cr = buf[max - 1] == '\r';
        *discard = max;
        return SMTP_LINE_MORE;
    }
    size_t i = (size_t)(lf - buf);
    bool cr = i > 0 && buf[i - 1] == '\r';
    size_t text_len = cr ? i - 1 : i;
    out->text = buf;
    out->consumed = i + 1;
    out->flags = cr ? 0 : SMTP_LINE_BARE_LF;
    if (text_len + 2 > max) {
        out->len = 0;
        out->flags |= SMTP_LINE_TOO_LONG;
        return SMTP_LINE_READY;
    }
    out->len = text_len;
    if (memchr(buf, '\0', text_len)) out->flags |= SMTP_LINE_NUL;
    if (memchr(buf, '\r', text_len)) out->flags |= SMTP_LINE_BARE_CR;
    return SMTP_LINE_READY;
}

/* ---- commands ---- */

static const struct {
    const char *name;
    smtp_verb verb;
} verbs[] = {
    {"HELO", SMTP_CMD_HELO}, {"EHLO", SMTP_CMD_EHLO}, {"MAIL", SMTP_CMD_MAIL},
    {"RCPT", SMTP_CMD_RCPT}, {"DATA", SMTP_CMD_DATA}, {"RSET", SMTP_CMD_RSET},
    {"NOOP", SMTP_CMD_NOOP}, {"QUIT", SMTP_CMD_QUIT}, {"VRFY", SMTP_CMD_VRFY},
    {"EXPN", SMTP_CMD_EXPN}, {"HELP", SMTP_CMD_HELP}, {"STARTTLS", SMTP_CMD_STARTTLS},
    {"AUTH", SMTP_CMD_AUTH},
};

void smtp_parse_command(const char *line, size_t len, smtp_cmd *out)
{
    size_t v = 0;
    while (v < len && line[v] != ' ') v++;
    out->verb = SMTP_CMD_UNKNOWN;
    for (size_t k = 0; k < sizeof verbs / sizeof verbs[0]; k++) {
        if (strlen(verbs[k].name) == v && strncasecmp(line, verbs[k].name, v) == 0) {
            out->verb = verbs[k].verb;
            break;
        }
    }
    size_t a = v;
    while (a < len && line[a] == ' ') a++;
    size_t e = len;
    while (e > a && (line[e - 1] == ' ' || line[e - 1] == '\t')) e--;
    out->arg = line + a;
    out->arg_len = e - a;
}

const char *smtp_verb_name(smtp_verb v)
{
    for (size_t k = 0; k < sizeof verbs / sizeof verbs[0]; k++)
        if (verbs[k].verb == v) return verbs[k].name;
    return "UNKNOWN";
}

/* ---- addresses ---- */

static bool is_atext(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/* Length of a valid local part at the start of s (ending at '@'), or 0 if invalid. */
static size_t local_part_len(const char *s)
{
    const char *p = s;
    if (*p == '"') {
        p++;
        for (;;) {
            unsigned char c = (unsigned char)*p;
            if (c == '"') break;
            if (c == '\\') {
                unsigned char n = (unsigned char)p[1];
                if (n < 32 || n > 126) return 0;
                p += 2;
                continue;
            }
            if (c < 32 || c > 126) return 0;
            p++;
        }
        p++;
    } else {
        bool prev_dot = true;        /* no leading dot */
        while (*p && *p != '@') {
            unsigned char c = (unsigned char)*p;
            if (c == '.') {
                if (prev_dot) return 0;
                prev_dot = true;
            } else if (is_atext(c)) {
                prev_dot = false;
            } else {
                return 0;
            }
            p++;
        }
        if (prev_dot) return 0;      /* empty, or trailing dot */
    }
    if (*p != '@') return 0;
    return (size_t)(p - s);
}

static bool domain_valid(const char *d)
{
    size_t n = strlen(d);
    if (n == 0) return false;
    if (d[0] == '[') {
        if (n < 3 || d[n - 1] != ']' || n > 64) return false;
        char lit[64];
        memcpy(lit, d + 1, n - 2);
        lit[n - 2] = '\0';
        unsigned char tmp[16];
        if (strncasecmp(lit, "IPv6:", 5) == 0) return inet_pton(AF_INET6, lit + 5, tmp) == 1;
        return inet_pton(AF_INET, lit, tmp) == 1;
    }
    if (n > SMTP_DOMAIN_MAX) return false;
    size_t label = 0;
    char prev = '.';
    for (const char *p = d;; p++) {
        char c = *p;
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || prev == '-') return false;
            if (c == '\0') return true;
            label = 0;
        } else if (isalnum((unsigned char)c) || c == '-') {
            if (label == 0 && c == '-') return false;
            label++;
        } else {
            return false;
        }
        prev = c;
    }
}

bool smtp_addr_valid(const char *addr)
{
    if (strlen(addr) > SMTP_ADDR_MAX) return false;
    size_t l = local_part_len(addr);
    if (l == 0 || l > SMTP_LOCAL_MAX) return false;
    return domain_valid(addr + l + 1);
}

bool smtp_helo_valid(const char *arg)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)arg; *p; p++, n++)
        if (*p <= 32 || *p >= 127) return false;
    return n >= 1 && n <= 255;
}

/* ---- MAIL FROM / RCPT TO ---- */

static void set_reply(char reply[SMTP_REPLY_MAX], const char *fmt, const char *name, size_t n)
{
    if (n > 40) n = 40;
    char tmp[48];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        tmp[k++] = (c > 32 && c < 127) ? (char)c : '?';
    }
    tmp[k] = '\0';
    snprintf(reply, SMTP_REPLY_MAX, fmt, tmp);
}

static bool esmtp_value_ok(const char *v, size_t n)
{
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 33 || c > 126 || c == '=') return false;
    }
    return true;
}

static int parse_size(const char *v, size_t n, int64_t *out)
{
    if (n == 0 || n > 18) return -1;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') return -1;
        x = x * 10 + (v[i] - '0');
    }
    *out = x;
    return 0;
}

static int parse_path(const char *arg, const char *prefix, bool is_mail, smtp_path *out,
                      char reply[SMTP_REPLY_MAX])
{
    const char *syntax = is_mail ? "501 5.5.4 Syntax: MAIL FROM:<address>"
                                 : "501 5.5.4 Syntax: RCPT TO:<address>";
    const char *bad = is_mail ? "553 5.1.7 Bad sender address syntax"
                              : "553 5.1.3 Bad recipient address syntax";
    memset(out, 0, sizeof *out);
    size_t pl = strlen(prefix);
    if (strncasecmp(arg, prefix, pl) != 0) goto syntax_error;
    const char *p = arg + pl;
    while (*p == ' ') p++;
    if (*p != '<') goto syntax_error;
    p++;
    const char *start = p;
    bool quoted = false;
    for (;; p++) {
        if (*p == '\0') goto syntax_error;
        if (quoted && *p == '\\' && p[1]) {
            p++;
            continue;
        }
        if (*p == '"') quoted = !quoted;
        else if (*p == '>' && !quoted) break;
    }
    const char *end = p;      /* at '>' */
    p++;
    if (*p != '\0' && *p != ' ') goto syntax_error;

    /* Source route "@a,@b:" (RFC 5321 4.1.2, to be ignored). */
    if (start < end && *start == '@') {
        const char *colon = memchr(start, ':', (size_t)(end - start));
        if (!colon) goto bad_address;
        start = colon + 1;
    }
    size_t alen = (size_t)(end - start);
    if (alen > SMTP_ADDR_MAX) {
        snprintf(reply, SMTP_REPLY_MAX, "%s: address too long", bad);
        return -1;
    }
    memcpy(out->addr, start, alen);
    out->addr[alen] = '\0';
    if (alen == 0) {
        if (!is_mail) goto bad_address;      /* <> is only a sender */
    } else if (memchr(start, '\0', alen) || !smtp_addr_valid(out->addr)) {
        goto bad_address;
    }

    /* Parameters: SP-separated keyword[=value]. */
    bool seen_auth = false;
    while (*p) {
        while (*p == ' ') p++;
        if (!*p) break;
        const char *kw = p;
        while (*p && *p != ' ' && *p != '=') p++;
        size_t kwlen = (size_t)(p - kw);
        const char *val = NULL;
        size_t vlen = 0;
        if (*p == '=') {
            val = ++p;
            while (*p && *p != ' ') p++;
            vlen = (size_t)(p - val);
        }
        if (kwlen == 0) goto syntax_error;
        for (size_t i = 0; i < kwlen; i++)
            if (!isalnum((unsigned char)kw[i]) && kw[i] != '-') goto syntax_error;
        if (is_mail && kwlen == 4 && strncasecmp(kw, "SIZE", 4) == 0) {
            if (out->has_size) goto duplicate;
            if (!val || parse_size(val, vlen, &out->size) != 0) {
                snprintf(reply, SMTP_REPLY_MAX, "501 5.5.4 Bad SIZE parameter");
                return -1;
            }
            out->has_size = true;
        } else if (is_mail && kwlen == 4 && strncasecmp(kw, "BODY", 4) == 0) {
            if (out->body != SMTP_BODY_NONE) goto duplicate;
            if (val && vlen == 4 && strncasecmp(val, "7BIT", 4) == 0) {
                out->body = SMTP_BODY_7BIT;
            } else if (val && vlen == 8 && strncasecmp(val, "8BITMIME", 8) == 0) {
                out->body = SMTP_BODY_8BITMIME;
            } else {
                snprintf(reply, SMTP_REPLY_MAX, "501 5.5.4 Bad BODY parameter (7BIT or 8BITMIME)");
                return -1;
            }
        } else if (is_mail && kwlen == 4 && strncasecmp(kw, "AUTH", 4) == 0) {
            if (seen_auth) goto duplicate;
            if (!val || !esmtp_value_ok(val, vlen)) {
                snprintf(reply, SMTP_REPLY_MAX, "501 5.5.4 Bad AUTH parameter");
                return -1;
            }
            seen_auth = true;
        } else {
            set_reply(reply, "555 5.5.4 Unsupported parameter: %s", kw, kwlen);
            return -1;
        }
        continue;
    duplicate:
        set_reply(reply, "501 5.5.4 Duplicate parameter: %s", kw, kwlen);
        return -1;
    }
    return 0;

syntax_error:
    snprintf(reply, SMTP_REPLY_MAX, "%s", syntax);
    return -1;
bad_address:
    snprintf(reply, SMTP_REPLY_MAX, "%s", bad);
    return -1;
}

int smtp_parse_mail(const char *arg, smtp_path *out, char reply[SMTP_REPLY_MAX])
{
    return parse_path(arg, "FROM:", true, out, reply);
}

int smtp_parse_rcpt(const char *arg, smtp_path *out, char reply[SMTP_REPLY_MAX])
{
    return parse_path(arg, "TO:", false, out, reply);
}

/* ---- replies ---- */

void smtp_reply_line(strbuf *out, const char *line)
{
    strbuf_puts(out, line);
    strbuf_append(out, "\r\n", 2);
}

void smtp_reply_printf(strbuf *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = util_vasprintf(fmt, ap);
    va_end(ap);
    smtp_reply_line(out, s);
    free(s);
}

void smtp_reply_multi(strbuf *out, int code, const char *const *lines, size_t n)
{
    for (size_t i = 0; i < n; i++)
        strbuf_printf(out, "%03d%c%s\r\n", code, i + 1 < n ? '-' : ' ', lines[i]);
}

char *smtp_sanitize(const char *s, size_t len, size_t max)
{
    size_t n = len < max ? len : max;
    char *r = util_malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        r[i] = (c < 32 || c >= 127) ? '?' : (char)c;
    }
    r[n] = '\0';
    return r;
}
