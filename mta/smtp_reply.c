/* smtp_reply.c — the pure half of the SMTP client (see smtp_client.h): the reply parser
 * (multi-line replies, enhanced status codes), the EHLO capability parser, the DATA encoder
 * (CRLF, dot-stuffing), the RFC 5321 timeouts and the status names. Written by hand: a few
 * dozen lines of RFC 5321 framing, which no Debian library offers on its own; kept apart
 * from the session state machine (smtp_client.c) so both stay small and this part is
 * tested on buffers alone. */
#include "mta/smtp_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define REPLY_MAX (64 * 1024)

static bool smtp_client_is_enhanced_at(const char *s, size_t n, size_t *elen)
{
    /* d.ddd.ddd followed by a space or the end */
    size_t i = 0;
    if (n < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.') return false;
    i = 2;
    for (int part = 0; part < 2; part++) {
        size_t d = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            i++;
            d++;
        }
        if (d < 1 || d > 3) return false;
        if (part == 0) {
            if (i >= n || s[i] != '.') return false;
            i++;
        }
    }
    if (i < n && s[i] != ' ') return false;
    *elen = i;
    return true;
}

int smtp_client_scan_reply(const char *buf, size_t len, int *code, size_t *used)
{
    /* Find the last line and check the framing. */
    size_t pos = 0;
    for (;;) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        if (!nl) return len > REPLY_MAX ? -1 : 0;
        size_t ll = (size_t)(nl - (buf + pos));
        if (ll && buf[pos + ll - 1] == '\r') ll--;
        const char *l = buf + pos;
        if (ll < 3 || l[0] < '1' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' ||
            l[2] > '9')
            return -1;
        if (ll > 3 && l[3] != '-' && l[3] != ' ') return -1;
        pos = (size_t)(nl - buf) + 1;
        if (pos > REPLY_MAX) return -1;
        if (ll == 3 || l[3] == ' ') break;
    }
    *code = (buf[0] - '0') * 100 + (buf[1] - '0') * 10 + (buf[2] - '0');
    *used = pos;
    return 1;
}

int smtp_client_parse_reply(const char *buf, size_t len, smtp_client_reply *out, size_t *used)
{
    int code;
    size_t end, pos;
    int rc = smtp_client_scan_reply(buf, len, &code, &end);
    if (rc <= 0) return rc;

    memset(out, 0, sizeof *out);
    out->code = code;
    strbuf text, line;
    strbuf_init(&text);
    strbuf_init(&line);
    strbuf_printf(&line, "%d", out->code);
    bool first = true;
    for (pos = 0; pos < end;) {
        const char *nl = memchr(buf + pos, '\n', end - pos);
        size_t ll = (size_t)(nl - (buf + pos));
        if (ll && buf[pos + ll - 1] == '\r') ll--;
        const char *t = buf + pos + (ll > 3 ? 4 : 3);
        size_t tl = ll > 3 ? ll - 4 : 0;
        size_t elen;
        if (first && smtp_client_is_enhanced_at(t, tl, &elen) && elen < sizeof out->enhanced &&
            t[0] - '0' == out->code / 100) {
            memcpy(out->enhanced, t, elen);
            out->enhanced[elen] = '\0';
            strbuf_printf(&line, " %s", out->enhanced);
        }
        if (out->enhanced[0]) {
            size_t el = strlen(out->enhanced);
            if (tl >= el && memcmp(t, out->enhanced, el) == 0 && (tl == el || t[el] == ' ')) {
                t += el;
                tl -= el;
                while (tl && *t == ' ') {
                    t++;
                    tl--;
                }
            }
        }
        if (!first) strbuf_puts(&text, "\n");
        strbuf_append(&text, t, tl);
        if (tl) {
            strbuf_puts(&line, " ");
            strbuf_append(&line, t, tl);
        }
        first = false;
        pos = (size_t)(nl - buf) + 1;
    }
    out->text = strbuf_steal(&text);
    out->line = strbuf_steal(&line);
    *used = end;
    return 1;
}

void smtp_client_reply_free(smtp_client_reply *r)
{
    free(r->text);
    free(r->line);
    r->text = r->line = NULL;
}

void smtp_client_parse_ehlo(const smtp_client_reply *r, smtp_client_caps *out)
{
    memset(out, 0, sizeof *out);
    const char *p = r->text;
    bool first = true;
    while (p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (!first) {
            char kw[64];
            size_t k = 0;
            while (k < n && k < sizeof kw - 1 && p[k] != ' ' && p[k] != '=') {
                kw[k] = p[k];
                k++;
            }
            kw[k] = '\0';
            if (strcasecmp(kw, "PIPELINING") == 0) out->pipelining = true;
            else if (strcasecmp(kw, "STARTTLS") == 0) out->starttls = true;
            else if (strcasecmp(kw, "8BITMIME") == 0) out->eightbitmime = true;
            else if (strcasecmp(kw, "SIZE") == 0) {
                long long v = 0;
                if (k < n) sscanf(p + k + 1, "%lld", &v);
                out->size = true;
                out->size_max = v > 0 ? v : 0;
            }
        }
        first = false;
        p = nl ? nl + 1 : NULL;
    }
}

void smtp_client_encode_data(const char *data, size_t len, strbuf *out)
{
    strbuf_reserve(out, len + len / 64 + 8);
    bool bol = true;
    size_t i = 0;
    while (i < len) {
        if (bol && data[i] == '.') strbuf_append(out, ".", 1);
        size_t j = i;
        while (j < len && data[j] != '\r' && data[j] != '\n') j++;
        strbuf_append(out, data + i, j - i);
        if (j == len) {
            bol = false;
            break;
        }
        strbuf_append(out, "\r\n", 2);
        if (data[j] == '\r' && j + 1 < len && data[j + 1] == '\n') j++;
        i = j + 1;
        bol = true;
    }
    if (!bol) strbuf_append(out, "\r\n", 2);
    strbuf_append(out, ".\r\n", 3);
}

bool smtp_client_has_8bit(const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)data[i] >= 0x80) return true;
    return false;
}

void smtp_client_default_timeouts(smtp_client_timeouts *t, int64_t connect_ms)
{
    t->connect_ms = connect_ms;
    t->greeting_ms = SMTP_CLIENT_GREETING_TIMEOUT_MS;
    t->mail_ms = SMTP_CLIENT_MAIL_TIMEOUT_MS;
    t->rcpt_ms = SMTP_CLIENT_RCPT_TIMEOUT_MS;
    t->data_init_ms = SMTP_CLIENT_DATA_INIT_TIMEOUT_MS;
    t->data_block_ms = SMTP_CLIENT_DATA_BLOCK_TIMEOUT_MS;
    t->data_term_ms = SMTP_CLIENT_DATA_TERM_TIMEOUT_MS;
    t->quit_ms = SMTP_CLIENT_QUIT_TIMEOUT_MS;
}

const char *smtp_client_status_name(smtp_client_status st)
{
    switch (st) {
    case SMTP_CLIENT_OK: return "ok";
    case SMTP_CLIENT_FAIL_BIND: return "bind";
    case SMTP_CLIENT_FAIL_CONNECT: return "connect";
    case SMTP_CLIENT_FAIL_REJECTED: return "rejected";
    case SMTP_CLIENT_FAIL_TLS: return "tls";
    case SMTP_CLIENT_FAIL_IO: return "io";
    case SMTP_CLIENT_FAIL_TLS_REQUIRED: return "tls-required";
    case SMTP_CLIENT_FAIL_TOO_BIG: return "too-big";
    case SMTP_CLIENT_FAIL_LOCAL: return "local";
    case SMTP_CLIENT_FAIL_LOOP: return "loop";
    }
    return "unknown";
}
