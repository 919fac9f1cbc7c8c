/* fuzz_dkim.c — fuzz target for DKIM signing (mta/dkim_sign.c, mta/dkim_canon.c) and the key
 * record parser (mta/dkim_key.c): the input is signed as a message with a fixed Ed25519
 * key (fast, deterministic), canonicalized, parsed as a DKIM key record and as PEM text.
 * Promises checked:
 *  - a message with exactly one From is signed: one DKIM-Signature field, lines of at most
 *    78 columns ending in CRLF, continuation lines starting with a space; any other
 *    message gets an error and no field;
 *  - the same message with every line end made CRLF (what the wire carries) gets the same
 *    signature;
 *  - the relaxed body has only CRLF line ends, no blank run, no blank before CRLF, no empty
 *    line at the end, and canonicalizing it again changes nothing; a relaxed header field
 *    has no line end but its final CRLF;
 *  - a parsed record has a non-empty k= and a p= of base64 characters only, empty exactly
 *    when revoked; a refused one has an error;
 *  - PEM-looking text that is not a key is refused with "dkim key fuzz: ...".
 * Built as a libFuzzer target by `make fuzz` (clang) and as a corpus + mutation replay in
 * `make check` (gcc). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/dkim.h"
#include "mta/dkim_canon.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char fuzz_dkim_pem[] = "-----BEGIN PRIVATE KEY-----\n"
                                    "MC4CAQAwBQYDK2VwBCIEINGlHEVrzEWJRqPPnnu69ws/MGFHsSd/+FFqERaB1ZM/\n"
                                    "-----END PRIVATE KEY-----\n";

static dkim_key *fuzz_dkim_key(void)
{
    static dkim_key *key;
    if (!key) {
        char *err = NULL;
        key = dkim_key_load_pem(fuzz_dkim_pem, sizeof fuzz_dkim_pem - 1, "fuzz", &err);
        if (!key) abort();
    }
    return key;
}

static void fuzz_dkim_check_field(const char *f, size_t len)
{
    if (len < 2 || strncmp(f, "DKIM-Signature: v=1; a=ed25519-sha256;", 38) != 0) abort();
    if (f[len - 2] != '\r' || f[len - 1] != '\n') abort();
    size_t i = 0, lines = 0;
    while (i < len) {
        const char *eol = memchr(f + i, '\r', len - i);
        if (!eol || (size_t)(eol - f) + 1 >= len || eol[1] != '\n') abort();
        size_t n = (size_t)(eol - (f + i));
        if (n > 78 || n < 2) abort();
        if (lines > 0 && f[i] != ' ') abort();
        if (memchr(f + i, '\n', n)) abort();
        i += n + 2;
        lines++;
    }
}

static void fuzz_dkim_check_body(const strbuf *b)
{
    const char *s = b->buf;
    size_t n = b->len;
    if (n == 0) return;
    if (n < 2 || s[n - 2] != '\r' || s[n - 1] != '\n') abort();
    if (n >= 4 && memcmp(s + n - 4, "\r\n\r\n", 4) == 0) abort();
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r' && (i + 1 >= n || s[i + 1] != '\n')) abort();
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) abort();
        if (s[i] == '\t') abort();
        if (s[i] == ' ' && i + 1 < n && (s[i + 1] == ' ' || s[i + 1] == '\r')) abort();
    }
    strbuf again;
    strbuf_init(&again);
    dkim_canon_body_buf(s, n, &again);
    if (again.len != n || memcmp(again.buf, s, n) != 0) abort();
    strbuf_free(&again);
}

/* msg with each line end (CRLF, lone CR, lone LF) made CRLF and the last line ended. */
static char *fuzz_dkim_crlf(const char *m, size_t len, size_t *out_len)
{
    strbuf sb;
    strbuf_init(&sb);
    size_t i = 0;
    while (i < len) {
        size_t next, end = dkim_canon_line_end(m, len, i, &next);
        strbuf_append(&sb, m + i, end - i);
        strbuf_append(&sb, "\r\n", 2);
        i = next;
    }
    *out_len = sb.len;
    return strbuf_steal(&sb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *msg = (const char *)data;
    dkim_key *key = fuzz_dkim_key();
    dkim_signer sg = {"example.com", "fuzz", key};

    dkim_fields fs;
    dkim_fields_parse(msg, size, &fs);
    if (fs.body_off > size) abort();
    size_t nfrom = dkim_fields_count(&fs, "from");
    strbuf h;
    strbuf_init(&h);
    for (size_t i = 0; i < fs.n; i++) {
        const dkim_field *f = &fs.f[i];
        if (f->raw < msg || f->raw + f->len > msg + size || f->name_len > f->len) abort();
        strbuf_reset(&h);
        dkim_canon_header(f->raw, f->len, true, &h);
        if (h.len < 2 || memchr(h.buf, '\r', h.len - 2) || memchr(h.buf, '\n', h.len - 2)) abort();
    }
    strbuf_free(&h);
    strbuf body;
    strbuf_init(&body);
    dkim_canon_body_buf(msg + fs.body_off, size - fs.body_off, &body);
    fuzz_dkim_check_body(&body);
    strbuf_free(&body);
    dkim_fields_free(&fs);

    char *err = NULL;
    char *sig = dkim_sign(&sg, 1, msg, size, 1700000000, &err);
    if (nfrom == 1) {
        if (!sig || err) abort();
        fuzz_dkim_check_field(sig, strlen(sig));
        size_t n2 = 0;
        char *crlf = fuzz_dkim_crlf(msg, size, &n2);
        if (n2 != size || memcmp(crlf, msg, size) != 0) {   /* not CRLF already */
            char *err2 = NULL;
            char *sig2 = dkim_sign(&sg, 1, crlf, n2, 1700000000, &err2);
            if (!sig2 || strcmp(sig, sig2) != 0) abort();
            free(sig2);
        }
        free(crlf);
        free(sig);
    } else {
        if (sig || !err || !err[0]) abort();
        free(err);
    }

    char *txt = util_strndup(msg, size);   /* up to the first NUL, as a TXT string */
    dkim_record r;
    char *rerr = NULL;
    if (dkim_record_parse(txt, &r, &rerr) == 0) {
        if (!r.k[0] || !r.p) abort();
        if (r.revoked != (r.p[0] == '\0')) abort();
        for (const char *c = r.p; *c; c++)
            if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", *c))
                abort();
        (void)dkim_key_matches_record(key, &r, NULL);
        dkim_record_clear(&r);
    } else {
        if (!rerr || !rerr[0]) abort();
        free(rerr);
    }
    free(txt);

    /* PEM text (OpenSSL's decoders are slow: only inputs that look like PEM). */
    if (!memmem(msg, size, "-----", 5)) return 0;
    dkim_key *k = dkim_key_load_pem(msg, size, "fuzz", &err);
    if (k) {
        dkim_key_free(k);
    } else {
        if (!err || strncmp(err, "dkim key fuzz: ", 15) != 0) abort();
        free(err);
    }
    return 0;
}
