/* test_dkim_sign.c — the DKIM signer (mta/dkim_sign.c): signatures checked by a verifier
 * written here against OpenSSL. It canonicalizes the received message on its own (a second,
 * simpler implementation than mta/dkim_canon.c), recomputes bh= and verifies b= with
 * EVP_DigestVerify and the public key decoded from the key's p=, for rsa-sha256 and
 * ed25519-sha256. Checked: the h= list (never Received, Return-Path, X-*, DKIM-Signature;
 * From and List-Unsubscribe(-Post) over-signed), tampered messages failing, dual signatures
 * each standing alone, folding at 78 columns, edge cases (dots, 8-bit, long folded fields,
 * empty bodies, no final CRLF, no space after the colon, repeated fields), the same
 * signature for CRLF, LF and CR line ends, and each refusal's message. */
#include <check.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "base/util.h"
#include "mta/dkim.h"
#include "tests/unit/testlib.h"

/* ------------------------------------------------------------------ a verifier of our own */

#define TV_MAX_FIELDS 64

typedef struct tv_field {
    char name[64];       /* lower case, trimmed */
    const char *value;   /* after the colon, continuation lines included */
    size_t vlen;
    bool used;
} tv_field;

/* Splits a CRLF message into fields; returns their count, *body set. */
static size_t tv_parse(const char *msg, tv_field *f, const char **body)
{
    size_t n = 0;
    const char *p = msg;
    while (*p && !(p[0] == '\r' && p[1] == '\n')) {
        const char *eol = strstr(p, "\r\n");
        ck_assert_ptr_nonnull(eol);
        if (*p == ' ' || *p == '\t') {
            ck_assert_uint_gt(n, 0);
            f[n - 1].vlen = (size_t)(eol - f[n - 1].value);
        } else {
            const char *colon = memchr(p, ':', (size_t)(eol - p));
            ck_assert_ptr_nonnull(colon);
            ck_assert_uint_lt(n, TV_MAX_FIELDS);
            size_t nl = (size_t)(colon - p);
            while (nl > 0 && (p[nl - 1] == ' ' || p[nl - 1] == '\t')) nl--;
            ck_assert_uint_lt(nl, sizeof f[n].name);
            for (size_t i = 0; i < nl; i++) f[n].name[i] = (char)tolower((unsigned char)p[i]);
            f[n].name[nl] = '\0';
            f[n].value = colon + 1;
            f[n].vlen = (size_t)(eol - colon - 1);
            f[n].used = false;
            n++;
        }
        p = eol + 2;
    }
    *body = *p ? p + 2 : p;
    return n;
}

/* name ":" value with line ends removed, blank runs one SP, trimmed; then CRLF if crlf. */
static void tv_canon_field(strbuf *out, const char *name, const char *v, size_t n, bool crlf)
{
    strbuf_puts(out, name);
    strbuf_puts(out, ":");
    strbuf tmp;
    strbuf_init(&tmp);
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (c == '\r' || c == '\n') continue;
        if (c == '\t') c = ' ';
        if (c == ' ' && (tmp.len == 0 || tmp.buf[tmp.len - 1] == ' ')) continue;
        strbuf_append(&tmp, &c, 1);
    }
    while (tmp.len > 0 && tmp.buf[tmp.len - 1] == ' ') tmp.len--;
    strbuf_append(out, tmp.buf, tmp.len);
    strbuf_free(&tmp);
    if (crlf) strbuf_puts(out, "\r\n");
}

static void tv_canon_body(strbuf *out, const char *body)
{
    size_t pending = 0;
    const char *p = body;
    while (*p) {
        const char *eol = strstr(p, "\r\n");
        ck_assert_ptr_nonnull(eol);
        strbuf line;
        strbuf_init(&line);
        for (const char *c = p; c < eol; c++) {
            char ch = *c == '\t' ? ' ' : *c;
            if (ch == ' ' && line.len > 0 && line.buf[line.len - 1] == ' ') continue;
            strbuf_append(&line, &ch, 1);
        }
        while (line.len > 0 && line.buf[line.len - 1] == ' ') line.len--;
        if (line.len == 0) {
            pending++;
        } else {
            for (; pending > 0; pending--) strbuf_puts(out, "\r\n");
            strbuf_append(out, line.buf, line.len);
            strbuf_puts(out, "\r\n");
        }
        strbuf_free(&line);
        p = eol + 2;
    }
}

/* The value of tag t in a DKIM-Signature value, whitespace removed (malloc'd), or NULL. */
static char *tv_tag(const char *v, size_t n, const char *t)
{
    size_t i = 0;
    while (i < n) {
        size_t e = i;
        while (e < n && v[e] != ';') e++;
        strbuf seg;
        strbuf_init(&seg);
        for (size_t j = i; j < e; j++)
            if (!strchr(" \t\r\n", v[j])) strbuf_append(&seg, v + j, 1);
        size_t tl = strlen(t);
        if (seg.len > tl && strncmp(seg.buf, t, tl) == 0 && seg.buf[tl] == '=') {
            char *out = util_strdup(seg.buf + tl + 1);
            strbuf_free(&seg);
            return out;
        }
        strbuf_free(&seg);
        i = e + 1;
    }
    return NULL;
}

static unsigned char *tv_unb64(const char *s, size_t *len)
{
    size_t n = strlen(s);
    unsigned char *out = util_malloc(n + 1);
    int r = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
    ck_assert_int_ge(r, 0);
    while (n > 0 && s[n - 1] == '=') {
        n--;
        r--;
    }
    *len = (size_t)r;
    return out;
}

/* Verifies the idx-th DKIM-Signature of a received (CRLF) message with public key p= of alg;
 * NULL if it verifies, else the reason. */
static const char *tv_verify(const char *msg, int idx, const char *p_b64, dkim_alg alg)
{
    tv_field f[TV_MAX_FIELDS];
    const char *body;
    size_t n = tv_parse(msg, f, &body);
    tv_field *sig = NULL;
    for (size_t i = 0; i < n && !sig; i++)
        if (strcmp(f[i].name, "dkim-signature") == 0 && idx-- == 0) sig = &f[i];
    if (!sig) return "no such signature";
    char *a = tv_tag(sig->value, sig->vlen, "a"), *bh = tv_tag(sig->value, sig->vlen, "bh");
    char *h = tv_tag(sig->value, sig->vlen, "h"), *b = tv_tag(sig->value, sig->vlen, "b");
    char *c = tv_tag(sig->value, sig->vlen, "c"), *v = tv_tag(sig->value, sig->vlen, "v");
    ck_assert(a && bh && h && b && c && v);
    ck_assert_str_eq(v, "1");
    ck_assert_str_eq(c, "relaxed/relaxed");
    ck_assert_str_eq(a, dkim_alg_name(alg));
    const char *why = NULL;

    strbuf cb;
    strbuf_init(&cb);
    tv_canon_body(&cb, body);
    unsigned char hash[32];
    EVP_Digest(cb.buf, cb.len, hash, NULL, EVP_sha256(), NULL);
    char bh_want[64];
    EVP_EncodeBlock((unsigned char *)bh_want, hash, 32);
    if (strcmp(bh, bh_want) != 0) why = "body hash mismatch";

    strbuf data;
    strbuf_init(&data);
    for (char *name = strtok(h, ":"); name; name = strtok(NULL, ":")) {
        for (size_t i = n; i-- > 0;) {
            if (!f[i].used && &f[i] != sig && strcasecmp(f[i].name, name) == 0) {
                f[i].used = true;
                tv_canon_field(&data, f[i].name, f[i].value, f[i].vlen, true);
                break;
            }
        }
    }
    /* The signature field itself, b= emptied (it is the last tag kiln writes). */
    const char *bpos = strstr(sig->value, "b=");
    while (bpos && bpos[-1] != ' ' && bpos[-1] != ';') bpos = strstr(bpos + 1, "b=");
    ck_assert_ptr_nonnull(bpos);
    tv_canon_field(&data, "dkim-signature", sig->value, (size_t)(bpos + 2 - sig->value), false);

    size_t siglen = 0, plen = 0;
    unsigned char *sigbytes = tv_unb64(b, &siglen), *pbytes = tv_unb64(p_b64, &plen);
    EVP_PKEY *pk = NULL;
    if (alg == DKIM_ALG_ED25519_SHA256) {
        pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pbytes, plen);
    } else {
        const unsigned char *q = pbytes;
        pk = d2i_PUBKEY(NULL, &q, (long)plen);
    }
    ck_assert_ptr_nonnull(pk);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok;
    if (alg == DKIM_ALG_ED25519_SHA256) {
        unsigned char d[32];
        EVP_Digest(data.buf, data.len, d, NULL, EVP_sha256(), NULL);
        ok = EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pk) == 1 &&
             EVP_DigestVerify(ctx, sigbytes, siglen, d, 32) == 1;
    } else {
        ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pk) == 1 &&
             EVP_DigestVerify(ctx, sigbytes, siglen, (unsigned char *)data.buf, data.len) == 1;
    }
    if (!ok && !why) why = "bad signature";
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pk);
    free(sigbytes), free(pbytes), free(a), free(bh), free(h), free(b), free(c), free(v);
    strbuf_free(&cb);
    strbuf_free(&data);
    return why;
}

/* ------------------------------------------------------------------ signing */

/* What the receiver gets: the signature fields, then msg with every line end made CRLF and
 * a last line ended (as smtp_client_encode_data sends it, dots unstuffed). */
static char *received(const char *sigs, const char *msg, size_t len)
{
    strbuf sb;
    strbuf_init(&sb);
    strbuf_puts(&sb, sigs);
    for (size_t i = 0; i < len; i++) {
        if (msg[i] == '\r' || msg[i] == '\n') {
            strbuf_puts(&sb, "\r\n");
            if (msg[i] == '\r' && i + 1 < len && msg[i + 1] == '\n') i++;
        } else {
            strbuf_append(&sb, msg + i, 1);
        }
    }
    if (len > 0 && msg[len - 1] != '\r' && msg[len - 1] != '\n') strbuf_puts(&sb, "\r\n");
    return strbuf_steal(&sb);
}

typedef struct signing {
    dkim_key *key;
    char *p;             /* its p= */
} signing;

static signing signing_new(dkim_alg alg)
{
    char *err = NULL;
    signing s = {dkim_key_generate(alg, &err), NULL};
    ck_assert_ptr_nonnull(s.key);
    s.p = dkim_key_public_b64(s.key);
    return s;
}

static void signing_free(signing *s)
{
    dkim_key_free(s->key);
    free(s->p);
}

/* Signs msg with one key (d=example.com s=sel t=1700000000); the field, or fails the test. */
static char *sign1(const signing *s, const char *msg, size_t len)
{
    dkim_signer sg = {"example.com", "sel", s->key};
    char *err = NULL;
    char *out = dkim_sign(&sg, 1, msg, len, 1700000000, &err);
    ck_assert_msg(out != NULL, "dkim_sign: %s", err ? err : "?");
    return out;
}

/* A field with its line ends removed (each fold's space stays). malloc'd. */
static char *unfold(const char *field)
{
    strbuf sb;
    strbuf_init(&sb);
    for (const char *p = field; *p; p++)
        if (*p != '\r' && *p != '\n') strbuf_append(&sb, p, 1);
    return strbuf_steal(&sb);
}

/* The h= value of a signature field, whitespace removed (malloc'd). */
static char *h_of(const char *field)
{
    const char *colon = strchr(field, ':');
    return tv_tag(colon + 1, strlen(colon + 1), "h");
}

static const char *std_msg =
    "Received: from relay.example.net by mx.example.net; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    "Return-Path: <bounce@example.com>\r\n"
    "From: Ann <ann@example.com>\r\n"
    "To: bob@example.net\r\n"
    "Subject: Hello\r\n"
    "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    "Message-ID: <1@example.com>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "X-Mailer: kiln-test\r\n"
    "DKIM-Signature: v=1; a=rsa-sha256; d=other.example; s=x; h=from; bh=AAAA; b=AAAA\r\n"
    "\r\n"
    "Hello Bob,\r\n"
    "  two  spaces\t\r\n"
    "\r\n";

START_TEST(test_sign_verifies)
{
    dkim_alg alg = _i ? DKIM_ALG_ED25519_SHA256 : DKIM_ALG_RSA_SHA256;
    signing s = signing_new(alg);
    char *sig = sign1(&s, std_msg, strlen(std_msg));
    char *flat = unfold(sig);
    char *want = util_asprintf("DKIM-Signature: v=1; a=%s; c=relaxed/relaxed; d=example.com; "
                               "s=sel; t=1700000000; h=", dkim_alg_name(alg));
    ck_assert_msg(strncmp(flat, want, strlen(want)) == 0, "%s", flat);
    free(want);
    free(flat);
    /* Signed: what the author wrote; never Received, Return-Path, X-*, DKIM-Signature. */
    char *h = h_of(sig);
    ck_assert_str_eq(h, "from:from:to:subject:date:message-id:mime-version:content-type");
    free(h);
    char *msg = received(sig, std_msg, strlen(std_msg));
    ck_assert_ptr_null(tv_verify(msg, 0, s.p, alg));
    free(msg);

    /* What relays add or rewrite does not break it: a Received on top, X-* changed. */
    char *relayed = util_asprintf("Received: from kiln by mx.example.net\r\n%s", std_msg);
    char *x = strstr(relayed, "kiln-test");
    memcpy(x, "KILN-TEST", 9);
    msg = received(sig, relayed, strlen(relayed));
    ck_assert_ptr_null(tv_verify(msg, 0, s.p, alg));
    free(msg);
    free(relayed);
    free(sig);
    signing_free(&s);
}
END_TEST

START_TEST(test_sign_tampered_fails)
{
    dkim_alg alg = _i ? DKIM_ALG_ED25519_SHA256 : DKIM_ALG_RSA_SHA256;
    signing s = signing_new(alg);
    char *sig = sign1(&s, std_msg, strlen(std_msg));

    char *t = util_strdup(std_msg);
    strstr(t, "Hello Bob")[6] = 'R';                        /* the body */
    char *msg = received(sig, t, strlen(t));
    ck_assert_str_eq(tv_verify(msg, 0, s.p, alg), "body hash mismatch");
    free(msg);
    free(t);

    t = util_strdup(std_msg);
    strstr(t, "Subject: Hello")[9] = 'J';                   /* a signed field */
    msg = received(sig, t, strlen(t));
    ck_assert_str_eq(tv_verify(msg, 0, s.p, alg), "bad signature");
    free(msg);
    free(t);

    /* A From added later, above or below the signed one: over-signing catches both. */
    t = util_asprintf("From: Mallory <m@evil.example>\r\n%s", std_msg);
    msg = received(sig, t, strlen(t));
    ck_assert_str_eq(tv_verify(msg, 0, s.p, alg), "bad signature");
    free(msg);
    free(t);
    const char *sep = strstr(std_msg, "\r\n\r\n");
    t = util_asprintf("%.*s\r\nFrom: Mallory <m@evil.example>%s", (int)(sep - std_msg), std_msg, sep);
    msg = received(sig, t, strlen(t));
    ck_assert_str_eq(tv_verify(msg, 0, s.p, alg), "bad signature");
    free(msg);
    free(t);

    /* Another key does not verify it. */
    signing other = signing_new(alg);
    msg = received(sig, std_msg, strlen(std_msg));
    ck_assert_str_eq(tv_verify(msg, 0, other.p, alg), "bad signature");
    free(msg);
    signing_free(&other);
    free(sig);
    signing_free(&s);
}
END_TEST

START_TEST(test_sign_dual)
{
    signing rsa = signing_new(DKIM_ALG_RSA_SHA256), ed = signing_new(DKIM_ALG_ED25519_SHA256);
    dkim_signer sg[2] = {{"example.com", "rsa1", rsa.key}, {"mail.example.com", "ed1", ed.key}};
    char *err = NULL;
    char *sigs = dkim_sign(sg, 2, std_msg, strlen(std_msg), 1700000000, &err);
    ck_assert_ptr_nonnull(sigs);
    ck_assert(strncmp(sigs, "DKIM-Signature: v=1; a=rsa-sha256;", 34) == 0);
    char *second = strstr(sigs + 1, "\r\nDKIM-Signature: ");
    ck_assert_ptr_nonnull(second);
    second += 2;
    ck_assert(strncmp(second, "DKIM-Signature: v=1; a=ed25519-sha256;", 38) == 0);
    char *flat = unfold(second);
    ck_assert_ptr_nonnull(strstr(flat, " d=mail.example.com; s=ed1;"));
    free(flat);
    char *h = h_of(second);
    ck_assert_ptr_null(strstr(h, "dkim-signature"));         /* not over the first one */
    free(h);
    char *msg = received(sigs, std_msg, strlen(std_msg));
    ck_assert_ptr_null(tv_verify(msg, 0, rsa.p, DKIM_ALG_RSA_SHA256));
    ck_assert_ptr_null(tv_verify(msg, 1, ed.p, DKIM_ALG_ED25519_SHA256));
    free(msg);
    /* Each stands alone: without the first field, the second still verifies. */
    msg = received(second, std_msg, strlen(std_msg));
    ck_assert_ptr_null(tv_verify(msg, 0, ed.p, DKIM_ALG_ED25519_SHA256));
    free(msg);
    free(sigs);
    signing_free(&rsa);
    signing_free(&ed);
}
END_TEST

START_TEST(test_sign_folding)
{
    signing s = signing_new(DKIM_ALG_RSA_SHA256);
    const char *m = "From: a@example.com\r\nTo: b@example.net\r\nCc: c@example.net\r\n"
                    "Subject: s\r\nDate: d\r\nMessage-ID: <m@x>\r\nReply-To: r@example.com\r\n"
                    "In-Reply-To: <i@x>\r\nReferences: <i@x>\r\nMIME-Version: 1.0\r\n"
                    "Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n"
                    "Content-Disposition: inline\r\nList-Unsubscribe: <https://u.example/1>\r\n"
                    "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
                    "List-Id: <news.example.com>\r\nFeedback-ID: a:b:c:kiln\r\n"
                    "Sender: s@example.com\r\n\r\nbody\r\n";
    char *sig = sign1(&s, m, strlen(m));
    char *h = h_of(sig);
    ck_assert_str_eq(h, "from:from:to:cc:subject:date:message-id:reply-to:in-reply-to:references:"
                        "mime-version:content-type:content-transfer-encoding:content-disposition:"
                        "list-unsubscribe:list-unsubscribe:list-unsubscribe-post:"
                        "list-unsubscribe-post:list-id:feedback-id:sender");
    free(h);
    /* Lines of at most 78 columns, each continuation starting with a space, CRLF last. */
    size_t lines = 0, len = strlen(sig);
    ck_assert(len > 2 && strcmp(sig + len - 2, "\r\n") == 0);
    for (const char *p = sig; *p; lines++) {
        const char *eol = strstr(p, "\r\n");
        ck_assert_ptr_nonnull(eol);
        ck_assert_msg(eol - p <= 78, "line of %d columns", (int)(eol - p));
        ck_assert_int_gt(eol - p, 1);
        if (p != sig) ck_assert_int_eq(*p, ' ');
        ck_assert(memchr(p, '\r', (size_t)(eol - p)) == NULL && memchr(p, '\n', (size_t)(eol - p)) == NULL);
        p = eol + 2;
    }
    ck_assert_uint_ge(lines, 7);
    char *msg = received(sig, m, strlen(m));
    ck_assert_ptr_null(tv_verify(msg, 0, s.p, DKIM_ALG_RSA_SHA256));
    free(msg);

    /* A second List-Unsubscribe-Post added later breaks it (over-signed). */
    char *t = util_asprintf("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n%s", m);
    msg = received(sig, t, strlen(t));
    ck_assert_str_eq(tv_verify(msg, 0, s.p, DKIM_ALG_RSA_SHA256), "bad signature");
    free(msg);
    free(t);
    free(sig);
    signing_free(&s);
}
END_TEST

#define EMPTY_BH "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="

static const struct {
    const char *what;
    const char *msg;
    size_t len;              /* 0: strlen */
    const char *h;           /* expected h= */
    const char *bh;          /* expected bh=, or NULL */
} edge_cases[] = {
    {"dot-leading lines", "From: a@example.com\r\n\r\n.hidden\r\n..two\r\n.\r\nend\r\n", 0,
     "from:from", NULL},
    {"8-bit body", "From: a@example.com\r\nSubject: Gr\xc3\xbc\xc3\x9f" "e\r\n\r\n"
     "Gr\xc3\xbc\xc3\x9f" "e \xff\xfe\r\n", 0, "from:from:subject", NULL},
    {"long folded header", "From: a@example.com\r\nSubject: "
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
     "\tbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n"
     "  cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc \r\n"
     "\t dddd\r\n\r\nbody\r\n", 0, "from:from:subject", NULL},
    {"empty body", "From: a@example.com\r\n\r\n", 0, "from:from", EMPTY_BH},
    {"blank lines only", "From: a@example.com\r\n\r\n\r\n \r\n\t\r\n", 0, "from:from", EMPTY_BH},
    {"no empty line", "From: a@example.com\r\nSubject: x\r\n", 0, "from:from:subject", EMPTY_BH},
    {"no final CRLF", "From: a@example.com\r\n\r\nlast line", 0, "from:from",
     "Iz3U+maXmP4RLYqrm1gRKfziMb1b1967QiE7wshQXs8="},   /* sha256("last line\r\n") */
    {"no space after colon", "From:a@example.com\r\nTo:b@example.net\r\nSubject:x\r\n\r\nb\r\n",
     0, "from:from:to:subject", NULL},
    {"blank before colon", "From : a@example.com\r\nSUBJECT\t: x\r\n\r\nb\r\n", 0,
     "from:from:subject", NULL},
    {"repeated headers", "To: one@example.net\r\nFrom: a@example.com\r\nTo: two@example.net\r\n"
     "Cc: c1@example.net\r\ncc: c2@example.net\r\nReceived: x\r\nReceived: y\r\n\r\nb\r\n", 0,
     "from:from:to:to:cc:cc", NULL},
    {"NUL in body", "From: a@example.com\r\n\r\na\0b\r\n", 26, "from:from", NULL},
    {"From-like body line", "From: a@example.com\r\n\r\nFrom: b@example.com\r\n", 0,
     "from:from", NULL},
};

START_TEST(test_sign_edge_cases)
{
    for (int a = 0; a < 2; a++) {
        dkim_alg alg = a ? DKIM_ALG_ED25519_SHA256 : DKIM_ALG_RSA_SHA256;
        signing s = signing_new(alg);
        for (size_t i = 0; i < sizeof edge_cases / sizeof *edge_cases; i++) {
            const char *m = edge_cases[i].msg;
            size_t len = edge_cases[i].len ? edge_cases[i].len : strlen(m);
            char *sig = sign1(&s, m, len);
            char *h = h_of(sig);
            ck_assert_msg(strcmp(h, edge_cases[i].h) == 0, "%s: h=%s", edge_cases[i].what, h);
            free(h);
            if (edge_cases[i].bh) {
                const char *colon = strchr(sig, ':');
                char *bh = tv_tag(colon + 1, strlen(colon + 1), "bh");
                ck_assert_msg(strcmp(bh, edge_cases[i].bh) == 0, "%s: bh=%s", edge_cases[i].what, bh);
                free(bh);
            }
            if (memchr(m, '\0', len) == NULL) {       /* tv_verify reads C strings */
                char *msg = received(sig, m, len);
                const char *why = tv_verify(msg, 0, s.p, alg);
                ck_assert_msg(why == NULL, "%s: %s", edge_cases[i].what, why);
                free(msg);
            }
            free(sig);
        }
        signing_free(&s);
    }
}
END_TEST

START_TEST(test_sign_line_ends)
{
    /* Bare LF, lone CR and CRLF give the same lines on the wire, so the same signature
     * (both algorithms sign deterministically). */
    const char *crlf = "From: a@example.com\r\nSubject: a\r\n b\r\n\r\nline 1\r\nline 2\r\n";
    const char *lf = "From: a@example.com\nSubject: a\n b\n\nline 1\nline 2";
    const char *cr = "From: a@example.com\rSubject: a\r b\r\rline 1\rline 2\r";
    for (int a = 0; a < 2; a++) {
        signing s = signing_new(a ? DKIM_ALG_ED25519_SHA256 : DKIM_ALG_RSA_SHA256);
        char *s1 = sign1(&s, crlf, strlen(crlf)), *s2 = sign1(&s, lf, strlen(lf));
        char *s3 = sign1(&s, cr, strlen(cr));
        ck_assert_str_eq(s1, s2);
        ck_assert_str_eq(s1, s3);
        char *h = h_of(s1);
        ck_assert_str_eq(h, "from:from:subject");
        free(h);
        free(s1), free(s2), free(s3);
        signing_free(&s);
    }
}
END_TEST

static void expect_sign_error(const dkim_signer *sg, const char *msg, const char *want)
{
    char *err = NULL;
    char *out = dkim_sign(sg, 1, msg, strlen(msg), 1700000000, &err);
    ck_assert_ptr_null(out);
    ck_assert_ptr_nonnull(err);
    ck_assert_str_eq(err, want);
    free(err);
}

START_TEST(test_sign_errors)
{
    signing s = signing_new(DKIM_ALG_ED25519_SHA256);
    dkim_signer sg = {"example.com", "sel", s.key};
    expect_sign_error(&sg, "To: b@example.net\r\n\r\nFrom: a@example.com\r\n",
                      "dkim: the message has no From header field");
    expect_sign_error(&sg, "", "dkim: the message has no From header field");
    expect_sign_error(&sg, "\r\nFrom: a@example.com\r\n", "dkim: the message has no From header field");
    expect_sign_error(&sg, "From: a@example.com\r\nfrom: b@example.com\r\n\r\nx\r\n",
                      "dkim: the message has 2 From header fields (RFC 5322 allows one)");
    const char *ok = "From: a@example.com\r\n\r\nx\r\n";
    const char *bad_domains[] = {"exa mple.com", "example.com;", "", "a..b", ".example.com",
                                 "example.com.", "ex\r\nample.com", "b\xc3\xbc" "cher.example"};
    for (size_t i = 0; i < sizeof bad_domains / sizeof *bad_domains; i++) {
        dkim_signer b = {bad_domains[i], "sel", s.key};
        char *want = util_asprintf("dkim d=%s: not a DNS domain name (ASCII labels of letters, "
                                   "digits, '-' and '_'; use the A-label of an IDN)", bad_domains[i]);
        expect_sign_error(&b, ok, want);
        free(want);
    }
    char label[80];
    memset(label, 'a', 64);
    label[64] = '\0';
    dkim_signer longl = {label, "sel", s.key};
    char *want = util_asprintf("dkim d=%s: not a DNS domain name (ASCII labels of letters, "
                               "digits, '-' and '_'; use the A-label of an IDN)", label);
    expect_sign_error(&longl, ok, want);
    free(want);
    dkim_signer badsel = {"example.com", "s1; h=x", s.key};
    expect_sign_error(&badsel, ok, "dkim d=example.com s=s1; h=x: the selector is not a DNS name");

    /* Accepted names: underscores, digits, a 63-byte label, an A-label. */
    label[63] = '\0';
    const char *good[] = {"xn--bcher-kva.example", "mail_1.example.com", label};
    for (size_t i = 0; i < 3; i++) {
        dkim_signer g = {good[i], "2024-01._s", s.key};
        char *err = NULL;
        char *out = dkim_sign(&g, 1, ok, strlen(ok), 1700000000, &err);
        ck_assert_msg(out != NULL, "%s: %s", good[i], err);
        free(out);
    }
    /* No signers: nothing to add. */
    char *err = NULL;
    char *none = dkim_sign(NULL, 0, ok, strlen(ok), 1700000000, &err);
    ck_assert_str_eq(none, "");
    free(none);
    signing_free(&s);
}
END_TEST

static Suite *dkim_sign_suite(void)
{
    Suite *s = suite_create("dkim_sign");
    TCase *g = tcase_create("sign");
    tcase_set_timeout(g, 60);        /* RSA key generation */
    tcase_add_loop_test(g, test_sign_verifies, 0, 2);
    tcase_add_loop_test(g, test_sign_tampered_fails, 0, 2);
    tcase_add_test(g, test_sign_dual);
    tcase_add_test(g, test_sign_folding);
    tcase_add_test(g, test_sign_edge_cases);
    tcase_add_test(g, test_sign_line_ends);
    tcase_add_test(g, test_sign_errors);
    suite_add_tcase(s, g);
    return s;
}

TESTLIB_SUITES(dkim_sign_suite);
