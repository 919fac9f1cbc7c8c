/* webhook_resp.c — the few things kiln reads from a webhook endpoint's answer itself (see
 * webhook_resp.h): the reason phrase and the start of the body, within fixed limits. curl
 * parses the HTTP framing, the status code and Retry-After; written by hand because no
 * library call keeps a bounded, printable excerpt of an answer for an error message. */
#include "mta/webhook_resp.h"

#include <stdio.h>
#include <string.h>

#include "base/util.h"

void webhook_resp_reset(webhook_resp *r)
{
    memset(r, 0, sizeof *r);
}

/* Copies at most max bytes of src into dst (NUL-terminated): blanks and control bytes as
 * ' ', anything else that is not printable ASCII as '?'. Returns the bytes copied. */
static size_t webhook_resp_keep(char *dst, size_t max, const char *src, size_t len)
{
    size_t n = len < max ? len : max;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : ch < 0x20 || ch == 0x7f ? ' ' : '?';
    }
    dst[n] = '\0';
    return n;
}

static bool webhook_resp_is_ws(char ch) { return ch == ' ' || ch == '\t'; }

/* "HTTP/1.1 503 Service Unavailable" / "HTTP/2 200": 1 with status and reason set, 0 if
 * the line is not a status line. */
static int webhook_resp_status_line(webhook_resp *r, const char *s, size_t len)
{
    if (len < 5 || memcmp(s, "HTTP/", 5) != 0) return 0;
    size_t i = 5;
    while (i < len && !webhook_resp_is_ws(s[i])) i++;       /* version */
    while (i < len && webhook_resp_is_ws(s[i])) i++;
    if (i + 3 > len) return 0;
    int code = 0;
    for (size_t k = 0; k < 3; k++) {
        if (s[i + k] < '0' || s[i + k] > '9') return 0;
        code = code * 10 + (s[i + k] - '0');
    }
    if (code < 100 || code > 599) return 0;
    i += 3;
    if (i < len && !webhook_resp_is_ws(s[i])) return 0;
    while (i < len && webhook_resp_is_ws(s[i])) i++;
    webhook_resp_reset(r);      /* a new answer (after a 1xx): nothing of the last counts */
    r->status = code;
    size_t n = webhook_resp_keep(r->reason, WEBHOOK_RESP_REASON_KEEP, s + i, len - i);
    while (n && r->reason[n - 1] == ' ') r->reason[--n] = '\0';
    return 1;
}

int webhook_resp_header(webhook_resp *r, const char *line, size_t len)
{
    size_t n = len;
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
    if (webhook_resp_status_line(r, line, n)) {
        r->header_bytes = len;
        return len > WEBHOOK_RESP_MAX_HEADER_BYTES ? -1 : 0;
    }
    r->header_bytes += len;
    return r->header_bytes > WEBHOOK_RESP_MAX_HEADER_BYTES ? -1 : 0;
}

void webhook_resp_body(webhook_resp *r, const char *data, size_t len)
{
    r->body_total += len;
    if (r->body_len < WEBHOOK_RESP_BODY_KEEP)
        r->body_len += webhook_resp_keep(r->body + r->body_len,
                                         WEBHOOK_RESP_BODY_KEEP - r->body_len, data, len);
}

char *webhook_resp_error(const webhook_resp *r, long status)
{
    /* the body's kept bytes with every run of blanks made one space, trimmed */
    char text[WEBHOOK_RESP_BODY_KEEP + 1];
    size_t n = 0;
    for (const char *p = r->body; *p; p++) {
        if (*p == ' ' && (n == 0 || text[n - 1] == ' ')) continue;
        text[n++] = *p;
    }
    while (n && text[n - 1] == ' ') n--;
    text[n] = '\0';
    const char *reason = r->status == status ? r->reason : "";
    return util_asprintf("HTTP status %ld%s%s%s%s%s", status, *reason ? " (" : "", reason,
                         *reason ? ")" : "", n ? ": " : "", text);
}
