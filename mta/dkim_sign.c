/* dkim_sign.c — the DKIM signer (see dkim.h): one DKIM-Signature field per signer over the
 * same message, relaxed/relaxed, rsa-sha256 (RSASSA-PKCS1-v1_5 over SHA-256, RFC 6376
 * section 3.3.1) or ed25519-sha256 (PureEdDSA over the SHA-256 digest of the canonical
 * header data, RFC 8463 section 3). The body hash is computed once for every signer; the
 * header hash of each signer covers the message's fields and its own DKIM-Signature only,
 * so dual signatures are independent (section 3.7: other signatures are not hashed).
 * Fields are folded at 78 columns with a space after CRLF, breaking h= before a colon and
 * bh=, b= inside their base64 (FWS allowed there, section 3.5). */
#include "mta/dkim.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "base/util.h"
#include "mta/dkim_canon.h"

#define DKIM_SIGN_COLS 78

/* The fields RFC 6376 section 5.4.1 suggests signing that relays leave alone, with RFC
 * 8058's List-Unsubscribe(-Post) and Gmail's Feedback-ID; in h= order. */
static const char *const dkim_sign_names[] = {
    "from", "to", "cc", "subject", "date", "message-id", "reply-to", "in-reply-to",
    "references", "mime-version", "content-type", "content-transfer-encoding",
    "content-disposition", "list-unsubscribe", "list-unsubscribe-post", "list-id",
    "feedback-id", "sender",
};

/* Named once more in h= than present (only when present; From always is). */
static bool dkim_sign_oversigned(const char *name)
{
    return strcmp(name, "from") == 0 || strcmp(name, "list-unsubscribe") == 0 ||
           strcmp(name, "list-unsubscribe-post") == 0;
}

/* d= and s=: dot-separated labels of 1..63 ASCII letters, digits, '-' and '_', at most 253
 * bytes; nothing that could end a tag or the field (';', '=', blanks, line ends). */
static bool dkim_sign_valid_name(const char *s)
{
    size_t n = strlen(s), label = 0;
    if (n == 0 || n > 253) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0) return false;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '-' || c == '_') {
            if (++label > 63) return false;
        } else {
            return false;
        }
    }
    return label > 0;
}

/* ---- folding ---- */

typedef struct dkim_fold {
    strbuf *sb;
    size_t col;           /* bytes on the current line */
} dkim_fold;

/* Appends s[0..n) unbroken; folds first (CRLF, then s's leading space or one added) when it
 * would pass the column limit and the line holds more than the fold's space. */
static void dkim_fold_put(dkim_fold *f, const char *s, size_t n, bool lead_space)
{
    size_t need = n + (lead_space ? 1 : 0);
    if (f->col + need > DKIM_SIGN_COLS && f->col > 1) {
        strbuf_append(f->sb, "\r\n ", 3);
        f->col = 1;
    } else if (lead_space) {
        strbuf_append(f->sb, " ", 1);
        f->col++;
    }
    strbuf_append(f->sb, s, n);
    f->col += n;
}

/* Appends base64 text s[0..n), broken with FWS wherever the line is full, so that the
 * last piece leaves `keep` columns for what follows it (the ';' after bh=). */
static void dkim_fold_b64(dkim_fold *f, const char *s, size_t n, size_t keep)
{
    while (n > 0) {
        size_t room = f->col < DKIM_SIGN_COLS ? DKIM_SIGN_COLS - f->col : 0;
        size_t k = n + keep <= room ? n : n > room ? room : room - keep;
        if (k == 0) {
            strbuf_append(f->sb, "\r\n ", 3);
            f->col = 1;
            continue;
        }
        strbuf_append(f->sb, s, k);
        f->col += k;
        s += k;
        n -= k;
    }
}

/* ---- hashing and signing ---- */

/* The relaxed body goes to SHA-256 through a buffer: the canonicalization hands out short
 * pieces (a word, a space), and one EVP_DigestUpdate per piece would cost more than the
 * hashing itself. */
typedef struct dkim_sign_hasher {
    EVP_MD_CTX *md;
    size_t n;
    char buf[16384];
} dkim_sign_hasher;

static void dkim_sign_hasher_flush(dkim_sign_hasher *h)
{
    if (h->n > 0 && EVP_DigestUpdate(h->md, h->buf, h->n) != 1)
        util_fatal("dkim: EVP_DigestUpdate failed");
    h->n = 0;
}

static void dkim_sign_md_sink(void *arg, const char *data, size_t n)
{
    dkim_sign_hasher *h = arg;
    if (h->n + n > sizeof h->buf) dkim_sign_hasher_flush(h);
    if (n > sizeof h->buf) {
        if (EVP_DigestUpdate(h->md, data, n) != 1) util_fatal("dkim: EVP_DigestUpdate failed");
        return;
    }
    memcpy(h->buf + h->n, data, n);
    h->n += n;
}

/* The body hash (bh=) of the relaxed body. */
static char *dkim_sign_body_hash(const char *body, size_t len)
{
    dkim_sign_hasher *h = util_malloc(sizeof *h);
    h->n = 0;
    h->md = EVP_MD_CTX_new();
    if (!h->md || EVP_DigestInit_ex(h->md, EVP_sha256(), NULL) != 1)
        util_fatal("dkim: cannot start SHA-256");
    dkim_canon_body(body, len, dkim_sign_md_sink, h);
    dkim_sign_hasher_flush(h);
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    if (EVP_DigestFinal_ex(h->md, d, &dl) != 1) util_fatal("dkim: cannot finish SHA-256");
    EVP_MD_CTX_free(h->md);
    free(h);
    char *out = util_malloc(4 * ((dl + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, d, (int)dl);
    return out;
}

/* One signer's field, appended to out; -1 and *err on failure. */
static int dkim_sign_one(const dkim_signer *s, const dkim_fields *fs, const char *bh,
                         int64_t now_s, strbuf *out, char **err)
{
    if (!s->key || !s->domain || !s->selector) {
        *err = util_strdup("dkim: a signer without a domain, selector or key");
        return -1;
    }
    if (!dkim_sign_valid_name(s->domain)) {
        *err = util_asprintf("dkim d=%s: not a DNS domain name (ASCII labels of letters, "
                             "digits, '-' and '_'; use the A-label of an IDN)", s->domain);
        return -1;
    }
    if (!dkim_sign_valid_name(s->selector)) {
        *err = util_asprintf("dkim d=%s s=%s: the selector is not a DNS name", s->domain,
                             s->selector);
        return -1;
    }

    /* Each name once per instance (+1 when over-signed): at most fs->n + 3 entries. */
    const char **h = util_calloc(fs->n + 3, sizeof *h);
    const dkim_field **picked = util_calloc(fs->n + 3, sizeof *picked);
    size_t nh = 0;
    for (size_t i = 0; i < sizeof dkim_sign_names / sizeof *dkim_sign_names; i++) {
        const char *name = dkim_sign_names[i];
        size_t c = dkim_fields_count(fs, name);
        if (c > 0 && dkim_sign_oversigned(name)) c++;
        for (; c > 0; c--) h[nh++] = name;
    }
    dkim_fields_select(fs, h, nh, picked);

    /* The field up to "b=", as it will be sent. */
    strbuf field;
    strbuf_init(&field);
    dkim_fold fold = {&field, 0};
    strbuf_puts(&field, "DKIM-Signature:");
    fold.col = field.len;
    char tag[320];
    int tl = snprintf(tag, sizeof tag, "v=1;");
    dkim_fold_put(&fold, tag, (size_t)tl, true);
    tl = snprintf(tag, sizeof tag, "a=%s;", dkim_alg_name(dkim_key_alg(s->key)));
    dkim_fold_put(&fold, tag, (size_t)tl, true);
    dkim_fold_put(&fold, "c=relaxed/relaxed;", 18, true);
    tl = snprintf(tag, sizeof tag, "d=%s;", s->domain);
    dkim_fold_put(&fold, tag, (size_t)tl, true);
    tl = snprintf(tag, sizeof tag, "s=%s;", s->selector);
    dkim_fold_put(&fold, tag, (size_t)tl, true);
    tl = snprintf(tag, sizeof tag, "t=%" PRId64 ";", now_s);
    dkim_fold_put(&fold, tag, (size_t)tl, true);
    for (size_t i = 0; i < nh; i++) {
        tl = snprintf(tag, sizeof tag, "%s%s%s", i == 0 ? "h=" : ":", h[i], i + 1 == nh ? ";" : "");
        dkim_fold_put(&fold, tag, (size_t)tl, i == 0);
    }
    dkim_fold_put(&fold, "bh=", 3, true);
    dkim_fold_b64(&fold, bh, strlen(bh), 1);
    dkim_fold_put(&fold, ";", 1, false);
    dkim_fold_put(&fold, "b=", 2, true);

    /* The header hash input: the picked fields, then this field with b= empty, no CRLF. */
    strbuf data;
    strbuf_init(&data);
    for (size_t i = 0; i < nh; i++)
        if (picked[i]) dkim_canon_header(picked[i]->raw, picked[i]->len, true, &data);
    dkim_canon_header(field.buf, field.len, false, &data);
    char *b = dkim_key_sign_b64(s->key, data.buf, data.len);
    strbuf_free(&data);
    free(h);
    free(picked);
    if (!b) {
        strbuf_free(&field);
        *err = util_asprintf("dkim d=%s s=%s: %s signing failed", s->domain, s->selector,
                             dkim_alg_name(dkim_key_alg(s->key)));
        return -1;
    }
    dkim_fold_b64(&fold, b, strlen(b), 0);
    free(b);
    strbuf_append(&field, "\r\n", 2);
    strbuf_append(out, field.buf, field.len);
    strbuf_free(&field);
    return 0;
}

char *dkim_sign(const dkim_signer *signers, size_t n, const char *msg, size_t len,
                int64_t now_s, char **err)
{
    dkim_fields fs;
    dkim_fields_parse(msg, len, &fs);
    size_t nfrom = dkim_fields_count(&fs, "from");
    if (nfrom != 1) {
        dkim_fields_free(&fs);
        *err = nfrom == 0 ? util_strdup("dkim: the message has no From header field")
                          : util_asprintf("dkim: the message has %zu From header fields "
                                          "(RFC 5322 allows one)", nfrom);
        return NULL;
    }
    char *bh = dkim_sign_body_hash(msg + fs.body_off, len - fs.body_off);
    strbuf out;
    strbuf_init(&out);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = dkim_sign_one(&signers[i], &fs, bh, now_s, &out, err);
    free(bh);
    dkim_fields_free(&fs);
    if (rc != 0) {
        strbuf_free(&out);
        return NULL;
    }
    return strbuf_steal(&out);
}
