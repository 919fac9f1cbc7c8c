/* fuzz_mime.c — fuzz target for the SES API's messages (api/mime.h). The first byte picks
 * what the rest is:
 *
 *  0  NUL-separated fields of a Content.Simple request (from, to, to, cc, reply-to,
 *     subject, subject charset, text, text charset, html, html charset, seed; an empty
 *     field is an absent one). Promises checked on success: 7-bit CRLF text, no line over
 *     998 octets, body lines within 76, header lines all kiln's own fields or folds (no
 *     field smuggled in through a name or subject), exactly one From, Subject, Date and
 *     MIME-Version, the multipart boundary only on its three delimiter lines, and — for
 *     UTF-8 — the subject's encoded-words and every quoted-printable body decoding back to
 *     exactly what was given (lone LF as CRLF). On failure: an error that names a field.
 *  1  base64 text for mime_raw_decode (cap from the second byte): on success the output
 *     is within the cap, CRLF text without NUL or line over 998, and equal to what
 *     OpenSSL's decoder makes of the same text, normalized.
 *  2  message bytes, base64-encoded here and decoded by mime_raw_decode: they come back
 *     normalized exactly when they hold no NUL, bare CR or long line, and are refused
 *     otherwise, with the reason.
 *  3  one address: mime_header_address's output (unfolded) has the same addr-spec as the
 *     input (when it is within the input cap), and neither accepts a control character.
 *
 * Built for libFuzzer by `make fuzz`, replayed over its corpus and mutations in `make check`. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "api/mime.h"
#include "base/util.h"

#define FUZZ_FIELDS 12

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* s with lone LF as CRLF (CRLF kept, lone CR kept). */
static char *fuzz_crlf(const char *s)
{
    strbuf sb;
    strbuf_init(&sb);
    for (const char *p = s; *p; p++) {
        if (*p == '\n' && (p == s || p[-1] != '\r')) strbuf_append(&sb, "\r", 1);
        strbuf_append(&sb, p, 1);
    }
    return strbuf_steal(&sb);
}

static int fuzz_hex(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Quoted-printable s[0..n) decoded strictly (kiln writes only =XX and soft breaks). */
static char *fuzz_qp_decode(const char *s, size_t n)
{
    strbuf sb;
    strbuf_init(&sb);
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '=') {
            strbuf_append(&sb, s + i, 1);
        } else if (i + 2 < n && s[i + 1] == '\r' && s[i + 2] == '\n') {
            i += 2;
        } else {
            if (i + 2 >= n || fuzz_hex(s[i + 1]) < 0 || fuzz_hex(s[i + 2]) < 0) abort();
            char c = (char)(fuzz_hex(s[i + 1]) * 16 + fuzz_hex(s[i + 2]));
            strbuf_append(&sb, &c, 1);
            i += 2;
        }
    }
    return strbuf_steal(&sb);
}

/* A part's body: after the blank line that ends its header, up to end. */
static void fuzz_check_part(const char *part, const char *end, const char *text)
{
    const char *b = strstr(part, "\r\n\r\n");
    if (!b || b + 4 > end) abort();
    char *dec = fuzz_qp_decode(b + 4, (size_t)(end - (b + 4)));
    char *want = fuzz_crlf(text);
    if (strcmp(dec, want) != 0) abort();
    free(dec);
    free(want);
}

/* The subject's encoded-words (UTF-8) decoded, or the value itself. */
static char *fuzz_subject(const char *v, size_t n)
{
    if (n < 10 || strncmp(v, "=?UTF-8?B?", 10) != 0) return util_strndup(v, n);
    strbuf sb;
    strbuf_init(&sb);
    const char *p = v, *end = v + n;
    while (p < end) {
        if (strncmp(p, "=?UTF-8?B?", 10) != 0) abort();
        const char *e = strstr(p + 10, "?=");
        if (!e || e > end || e + 2 - p > 75) abort();
        unsigned char out[64];
        int len = EVP_DecodeBlock(out, (const unsigned char *)p + 10, (int)(e - p - 10));
        if (len < 0) abort();
        len -= (e[-1] == '=') + (e[-2] == '=');
        strbuf_append(&sb, out, (size_t)len);
        p = e + 2;
        if (p < end) {
            if (strncmp(p, "\r\n ", 3) != 0) abort();
            p += 3;
        }
    }
    return strbuf_steal(&sb);
}

static void fuzz_check_message(const mime_simple *in, const char *m, size_t len)
{
    if (len < 2 || memcmp(m + len - 2, "\r\n", 2) != 0 || strlen(m) != len) abort();
    const char *hend = strstr(m, "\r\n\r\n");
    if (!hend) abort();
    size_t nfrom = 0, nsubj = 0, ndate = 0, nmime = 0;
    const char *subj = NULL, *subj_end = NULL;
    for (const char *p = m; p < m + len;) {
        const char *e = strstr(p, "\r\n");
        if (!e || e - p > 998) abort();
        for (const char *c = p; c < e; c++)
            if (*c == '\r' || *c == '\n' || *c == '\0' || (unsigned char)*c >= 0x80) abort();
        if (p < hend) {
            static const char *const names[] = {"From: ", "To: ", "Cc: ", "Reply-To: ",
                                                "Subject: ", "Date: ", "MIME-Version: 1.0",
                                                "Content-Type: ", "Content-Transfer-Encoding: "};
            bool known = *p == ' ';
            for (size_t i = 0; i < sizeof names / sizeof *names && !known; i++)
                known = strncmp(p, names[i], strlen(names[i])) == 0;
            if (!known) abort();
            nfrom += strncmp(p, "From: ", 6) == 0;
            ndate += strncmp(p, "Date: ", 6) == 0;
            nmime += strncmp(p, "MIME-Version:", 13) == 0;
            if (strncmp(p, "Subject: ", 9) == 0) {
                nsubj++;
                subj = p + 9;
            }
            if (subj && !subj_end && p != subj - 9 && *p != ' ') subj_end = p - 2;
        } else if (p > hend && e - p > 76) {
            abort();
        }
        p = e + 2;
    }
    if (nfrom != 1 || nsubj != 1 || ndate != 1 || nmime != 1 || !subj) abort();
    if (!subj_end) subj_end = hend;
    if (!in->subject.charset) {
        char *s = fuzz_subject(subj, (size_t)(subj_end - subj));
        if (strcmp(s, in->subject.data) != 0) abort();
        free(s);
    }
    const char *body = hend + 4;
    if (in->text.data && in->html.data) {
        static const char ct[] = "\r\nContent-Type: multipart/alternative;\r\n boundary=\"";
        const char *b = strstr(m, ct);
        if (!b) abort();
        b += strlen(ct);
        char *delim = util_asprintf("\r\n--%.*s", (int)(strchr(b, '"') - b), b);
        const char *d1 = strstr(body - 2, delim);
        const char *d2 = d1 ? strstr(d1 + 1, delim) : NULL;
        const char *d3 = d2 ? strstr(d2 + 1, delim) : NULL;
        if (!d1 || d1 != body - 2 || !d2 || !d3 || strstr(d3 + 1, delim)) abort();
        if (strcmp(d3 + strlen(delim), "--\r\n") != 0) abort();
        if (!in->text.charset) fuzz_check_part(d1 + strlen(delim), d2, in->text.data);
        if (!in->html.charset) fuzz_check_part(d2 + strlen(delim), d3, in->html.data);
        free(delim);
    } else {
        const mime_part *p = in->text.data ? &in->text : &in->html;
        if (!p->charset) fuzz_check_part(hend, m + len, p->data);
    }
}

static void fuzz_simple(const char *s, size_t n)
{
    const char *f[FUZZ_FIELDS] = {0};
    size_t k = 0;
    for (const char *p = s; k < FUZZ_FIELDS && p <= s + n; k++) {
        f[k] = *p ? p : NULL;
        p += strlen(p) + 1;
    }
    const char *to[2] = {f[1] ? f[1] : "a@example.com", f[2] ? f[2] : "b@example.com"};
    const char *cc[1] = {f[3]}, *rt[1] = {f[4]};
    mime_simple in;
    memset(&in, 0, sizeof in);
    in.from = f[0] ? f[0] : "from@example.com";
    in.to = to;
    in.nto = 2;
    in.cc = cc;
    in.ncc = f[3] != NULL;
    in.reply_to = rt;
    in.nreply_to = f[4] != NULL;
    in.subject.data = f[5] ? f[5] : "";
    in.subject.charset = f[6];
    in.text.data = f[7];
    in.text.charset = f[8];
    in.html.data = f[9];
    in.html.charset = f[10];
    in.boundary_seed = f[11];
    in.now_ms = 1700000000000LL;
    if (!in.text.data && !in.html.data) in.text.data = "";
    char *err = NULL;
    size_t len = 0;
    char *m = mime_build_simple(&in, &len, &err);
    if (!m) {
        static const char *const paths[] = {"FromEmailAddress: ", "Destination.ToAddresses[",
                                            "Destination.CcAddresses[", "ReplyToAddresses[",
                                            "Content.Simple.Subject.", "Content.Simple.Body.Text.",
                                            "Content.Simple.Body.Html."};
        bool named = false;
        for (size_t i = 0; i < sizeof paths / sizeof *paths && !named; i++)
            named = err && strncmp(err, paths[i], strlen(paths[i])) == 0;
        if (!named) abort();
        free(err);
        return;
    }
    fuzz_check_message(&in, m, len);
    free(m);
}

/* What mime_raw_decode must make of bytes: normalized, or NULL when refused. */
static char *fuzz_normalize(const unsigned char *b, size_t n, size_t max, size_t *len)
{
    strbuf sb;
    strbuf_init(&sb);
    size_t line = 0;
    for (size_t i = 0; i < n; i++) {
        if (b[i] == '\r' && i + 1 < n && b[i + 1] == '\n') continue;
        if (b[i] == '\r' || b[i] == 0 || (b[i] != '\n' && ++line > 998)) goto refused;
        if (b[i] == '\n') {
            strbuf_append(&sb, "\r\n", 2);
            line = 0;
        } else {
            strbuf_append(&sb, b + i, 1);
        }
    }
    if (line > 0) strbuf_append(&sb, "\r\n", 2);
    if (sb.len == 0 || sb.len > max) goto refused;
    *len = sb.len;
    return strbuf_steal(&sb);
refused:
    strbuf_free(&sb);
    return NULL;
}

static void fuzz_raw_text(const char *s, size_t n, size_t max)
{
    char *err = NULL;
    size_t len = 0;
    char *m = mime_raw_decode(s, n, max, &len, &err);
    if (!m) {
        if (!err || strncmp(err, "Content.Raw.Data: ", 18) != 0) abort();
        free(err);
        return;
    }
    if (len > max || len < 2 || memcmp(m + len - 2, "\r\n", 2) != 0) abort();
    /* OpenSSL's reading of the same text (blanks out, padding completed) */
    strbuf t;
    strbuf_init(&t);
    for (size_t i = 0; i < n; i++)
        if (!strchr(" \t\r\n", s[i])) strbuf_append(&t, s + i, 1);
    while (t.len % 4) strbuf_append(&t, "=", 1);
    unsigned char *dec = util_malloc(t.len / 4 * 3 + 1);
    int dl = EVP_DecodeBlock(dec, (const unsigned char *)t.buf, (int)t.len);
    if (dl < 0) abort();
    for (size_t i = t.len; i > 0 && t.buf[i - 1] == '='; i--) dl--;
    size_t wl = 0;
    char *want = fuzz_normalize(dec, (size_t)dl, max, &wl);
    if (!want || wl != len || memcmp(want, m, len) != 0) abort();
    free(want);
    free(dec);
    strbuf_free(&t);
    free(m);
}

static void fuzz_raw_bytes(const uint8_t *b, size_t n)
{
    char *b64 = util_malloc(n / 3 * 4 + 8);
    EVP_EncodeBlock((unsigned char *)b64, b, (int)n);
    size_t wl = 0, len = 0;
    char *want = fuzz_normalize(b, n, 4096, &wl);
    char *err = NULL;
    char *m = mime_raw_decode(b64, strlen(b64), 4096, &len, &err);
    if (!want != !m) abort();
    if (m && (len != wl || memcmp(m, want, len) != 0)) abort();
    if (!m && (!err || strncmp(err, "Content.Raw.Data: ", 18) != 0 || strstr(err, "base64")))
        abort();
    free(err);
    free(m);
    free(want);
    free(b64);
}

static void fuzz_address(const char *a)
{
    char *err = NULL;
    char *spec = mime_addr_spec(a);
    char *h = mime_header_address(a, &err);
    bool ctl = false;
    for (const char *p = a; *p; p++) ctl = ctl || (unsigned char)*p < 0x20 || *p == 0x7f;
    if (ctl && (spec || h)) abort();
    if (!spec && h) abort();
    if (h) {
        strbuf u;
        strbuf_init(&u);
        for (const char *p = h; *p; p++) {
            if (strncmp(p, "\r\n", 2) == 0) p++;
            else strbuf_append(&u, p, 1);
            if ((unsigned char)*p >= 0x80) abort();
        }
        /* (a long name's encoded-words may pass the input cap of 900 octets) */
        char *again = mime_addr_spec(u.buf);
        if (u.len <= 900 && (!again || strcmp(again, spec) != 0)) abort();
        free(again);
        strbuf_free(&u);
    }
    free(h);
    free(err);
    free(spec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int mode = data[0] % 4;
    char *s = util_malloc(size + 1);
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    size_t n = size - 1;
    switch (mode) {
    case 0: fuzz_simple(s, n); break;
    case 1: fuzz_raw_text(s, n, size > 1 ? (size_t)data[1] * 32 : 0); break;
    case 2: fuzz_raw_bytes(data + 1, n); break;
    default: fuzz_address(s); break;
    }
    free(s);
    return 0;
}
