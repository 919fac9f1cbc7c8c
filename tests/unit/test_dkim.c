/* test_dkim.c — DKIM canonicalization and keys (mta/dkim_canon.h, mta/dkim_key.c): relaxed
 * canonicalization (RFC 6376 section 3.4.5's example and tables: blanks, folding, bare
 * CR/LF, 8-bit, NUL, empty bodies), bottom-up field selection, key loading (each refusal's
 * exact message), PKCS#1 and PKCS#8, generation and atomic 0600 writing, the TXT record,
 * its parser and the comparison of a record with a key. The signer is test_dkim_sign.c. */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "base/util.h"
#include "mta/dkim.h"
#include "mta/dkim_canon.h"
#include "tests/unit/testlib.h"

/* ------------------------------------------------------------------ canonicalization */

START_TEST(test_rfc6376_example)
{
    /* RFC 6376 section 3.4.5, relaxed/relaxed. */
    const char *m = "A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n";
    dkim_fields fs;
    dkim_fields_parse(m, strlen(m), &fs);
    ck_assert_uint_eq(fs.n, 2);
    strbuf h, b;
    strbuf_init(&h);
    strbuf_init(&b);
    for (size_t i = 0; i < fs.n; i++) dkim_canon_header(fs.f[i].raw, fs.f[i].len, true, &h);
    dkim_canon_body_buf(m + fs.body_off, strlen(m) - fs.body_off, &b);
    ck_assert_str_eq(h.buf, "a:X\r\nb:Y Z\r\n");
    ck_assert_str_eq(b.buf, " C\r\nD E\r\n");
    ck_assert(dkim_field_is(&fs.f[1], "b"));
    strbuf_free(&h);
    strbuf_free(&b);
    dkim_fields_free(&fs);
}
END_TEST

static const struct {
    const char *in;
    size_t len;          /* 0: strlen */
    const char *out;
    size_t outlen;       /* 0: strlen */
} body_cases[] = {
    {"", 0, "", 0},                                      /* empty body: nothing at all */
    {"\r\n", 0, "", 0},                                  /* only empty lines: nothing */
    {"\r\n\r\n \t\r\n", 0, "", 0},                       /* blank lines are empty lines */
    {"abc", 0, "abc\r\n", 0},                            /* no final line end: CRLF added */
    {"abc\r\n\r\n\r\n", 0, "abc\r\n", 0},                /* trailing empty lines removed */
    {"a \t b\t\r\n", 0, "a b\r\n", 0},                   /* runs -> one SP, trailing removed */
    {"\t lead\r\n", 0, " lead\r\n", 0},                  /* leading blanks kept as one SP */
    {"x\r\n \r\ny\r\n", 0, "x\r\n\r\ny\r\n", 0},         /* an inner blank line stays empty */
    {"a\nb\n", 0, "a\r\nb\r\n", 0},                      /* bare LF ends a line */
    {"a\rb", 0, "a\r\nb\r\n", 0},                        /* lone CR ends a line */
    {"a\r\r\nb\n\r\n", 0, "a\r\n\r\nb\r\n", 0},          /* CR then CRLF: two lines */
    {"caf\xc3\xa9  \xff\r\n", 0, "caf\xc3\xa9 \xff\r\n", 0}, /* 8-bit bytes untouched */
    {".\r\n..x\r\n.\r\n", 0, ".\r\n..x\r\n.\r\n", 0},    /* dots are not stuffed here */
    {"a\0b \r\n", 6, "a\0b\r\n", 5},                     /* NUL is a byte like another */
};

START_TEST(test_body_canon)
{
    size_t len = body_cases[_i].len ? body_cases[_i].len : strlen(body_cases[_i].in);
    size_t outlen = body_cases[_i].outlen ? body_cases[_i].outlen : strlen(body_cases[_i].out);
    strbuf b;
    strbuf_init(&b);
    dkim_canon_body_buf(body_cases[_i].in, len, &b);
    ck_assert_msg(b.len == outlen && (outlen == 0 || memcmp(b.buf, body_cases[_i].out, outlen) == 0),
                  "case %d: got %zu bytes '%s'", _i, b.len, b.buf);
    strbuf_free(&b);
}
END_TEST

static const struct {
    const char *in;
    const char *out;
} header_cases[] = {
    {"Subject:hello", "subject:hello\r\n"},              /* no space after the colon */
    {"SUBJECT :  a   b  ", "subject:a b\r\n"},           /* blanks around colon, runs */
    {"Subject: a\r\n\tb\r\n c", "subject:a b c\r\n"},    /* unfolded */
    {"To: a\n b", "to:a b\r\n"},                         /* folded with a bare LF */
    {"X-Empty:", "x-empty:\r\n"},
    {"X-Empty: \t ", "x-empty:\r\n"},
    {"Content-Type: text/plain;\r\n\tcharset=\"utf-8\"", "content-type:text/plain; charset=\"utf-8\"\r\n"},
    {"Subject: caf\xc3\xa9", "subject:caf\xc3\xa9\r\n"},
};

START_TEST(test_header_canon)
{
    strbuf h;
    strbuf_init(&h);
    dkim_canon_header(header_cases[_i].in, strlen(header_cases[_i].in), true, &h);
    ck_assert_str_eq(h.buf, header_cases[_i].out);
    strbuf_reset(&h);
    dkim_canon_header(header_cases[_i].in, strlen(header_cases[_i].in), false, &h);
    ck_assert_uint_eq(h.len, strlen(header_cases[_i].out) - 2);
    strbuf_free(&h);
}
END_TEST

START_TEST(test_fields_and_selection)
{
    const char *m = " orphan continuation\r\n"
                    "Received: one\r\n"
                    "To: a@example.test,\r\n b@example.test\r\n"
                    "no colon line\n"
                    "received: two\r"
                    "TO: c@example.test\r\n"
                    "\r\n"
                    "Body: not a field\r\n";
    dkim_fields fs;
    dkim_fields_parse(m, strlen(m), &fs);
    ck_assert_uint_eq(fs.n, 5);
    ck_assert_str_eq(m + fs.body_off, "Body: not a field\r\n");
    ck_assert_uint_eq(dkim_fields_count(&fs, "received"), 2);
    ck_assert_uint_eq(dkim_fields_count(&fs, "to"), 2);
    ck_assert_uint_eq(dkim_fields_count(&fs, "body"), 0);
    ck_assert_uint_eq(fs.f[2].name_len, 0);         /* "no colon line": never signed */
    ck_assert_uint_eq(dkim_fields_count(&fs, "no colon line"), 0);
    /* The folded To keeps its continuation line. */
    ck_assert_int_eq((int)fs.f[1].len, (int)strlen("To: a@example.test,\r\n b@example.test"));

    /* Bottom-up: each name takes the last instance not taken yet; extra names get none. */
    const char *names[] = {"to", "received", "to", "received", "to", "from"};
    const dkim_field *got[6];
    dkim_fields_select(&fs, names, 6, got);
    ck_assert_ptr_eq(got[0], &fs.f[4]);
    ck_assert_ptr_eq(got[1], &fs.f[3]);
    ck_assert_ptr_eq(got[2], &fs.f[1]);
    ck_assert_ptr_eq(got[3], &fs.f[0]);
    ck_assert_ptr_null(got[4]);
    ck_assert_ptr_null(got[5]);
    dkim_fields_free(&fs);

    /* No empty line: all header, empty body. */
    const char *h = "From: a@example.test\r\nSubject: x";
    dkim_fields_parse(h, strlen(h), &fs);
    ck_assert_uint_eq(fs.n, 2);
    ck_assert_uint_eq(fs.body_off, strlen(h));
    dkim_fields_free(&fs);
}
END_TEST

/* ------------------------------------------------------------------ keys */

static char *write_text(const char *dir, const char *name, const char *text, size_t len)
{
    char *path = util_asprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(text, 1, len, f), len);
    fclose(f);
    return path;
}

typedef enum { PEM_PKCS8, PEM_PKCS1, PEM_PUBLIC, PEM_ENCRYPTED8, PEM_ENCRYPTED1 } pem_form;

static char *write_pkey(const char *dir, const char *name, EVP_PKEY *pk, pem_form form)
{
    BIO *mem = BIO_new(BIO_s_mem());
    int ok = 0;
    switch (form) {
    case PEM_PKCS8: ok = PEM_write_bio_PKCS8PrivateKey(mem, pk, NULL, NULL, 0, NULL, NULL); break;
    case PEM_PKCS1: ok = PEM_write_bio_PrivateKey_traditional(mem, pk, NULL, NULL, 0, NULL, NULL); break;
    case PEM_PUBLIC: ok = PEM_write_bio_PUBKEY(mem, pk); break;
    case PEM_ENCRYPTED8:
        ok = PEM_write_bio_PKCS8PrivateKey(mem, pk, EVP_aes_256_cbc(), "secret", 6, NULL, NULL);
        break;
    case PEM_ENCRYPTED1:
        ok = PEM_write_bio_PrivateKey_traditional(mem, pk, EVP_aes_256_cbc(),
                                                  (unsigned char *)"secret", 6, NULL, NULL);
        break;
    }
    ck_assert_int_eq(ok, 1);
    char *data = NULL;
    long n = BIO_get_mem_data(mem, &data);
    char *path = write_text(dir, name, data, (size_t)n);
    BIO_free(mem);
    return path;
}

/* Loading path fails with exactly "dkim key <path>: <reason>". */
static void expect_load_error(const char *path, const char *reason)
{
    char *err = NULL;
    dkim_key *k = dkim_key_load_file(path, &err);
    ck_assert_ptr_null(k);
    ck_assert_ptr_nonnull(err);
    char *want = util_asprintf("dkim key %s: %s", path, reason);
    ck_assert_str_eq(err, want);
    free(want);
    free(err);
}

START_TEST(test_key_load_errors)
{
    const char *dir = testlib_tmpdir("dkimkeys");
    EVP_PKEY *rsa512 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)512);
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    ck_assert(rsa512 && ec && rsa);

    char *p = write_pkey(dir, "short.pem", rsa512, PEM_PKCS8);
    expect_load_error(p, "RSA key of 512 bits is too short (at least 1024)");
    free(p);
    p = write_pkey(dir, "short1.pem", rsa512, PEM_PKCS1);
    expect_load_error(p, "RSA key of 512 bits is too short (at least 1024)");
    free(p);
    p = write_pkey(dir, "ec.pem", ec, PEM_PKCS8);
    expect_load_error(p, "an EC key; DKIM signs with RSA (rsa-sha256) or Ed25519 "
                         "(ed25519-sha256) keys only");
    free(p);
    const char *encrypted = "the key is encrypted (kiln needs an unencrypted PEM private key; "
                            "decrypt it with `openssl pkey -in FILE -out NEWFILE`)";
    p = write_pkey(dir, "enc8.pem", rsa, PEM_ENCRYPTED8);
    expect_load_error(p, encrypted);
    free(p);
    p = write_pkey(dir, "enc1.pem", rsa, PEM_ENCRYPTED1);
    expect_load_error(p, encrypted);
    free(p);
    p = write_pkey(dir, "pub.pem", rsa, PEM_PUBLIC);
    expect_load_error(p, "a public key, not a private key (signing needs the private key)");
    free(p);

    const char *garbage = "this is not a key\n";
    p = write_text(dir, "garbage.pem", garbage, strlen(garbage));
    expect_load_error(p, "no PEM private key in it (expected -----BEGIN PRIVATE KEY----- or "
                         "-----BEGIN RSA PRIVATE KEY-----)");
    free(p);
    const char *damaged = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
                          "-----END PRIVATE KEY-----\n";
    p = write_text(dir, "damaged.pem", damaged, strlen(damaged));
    expect_load_error(p, "the PEM private key cannot be decoded (damaged or not a key)");
    free(p);
    const char *ssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
                      "-----END OPENSSH PRIVATE KEY-----\n";
    p = write_text(dir, "ssh.pem", ssh, strlen(ssh));
    expect_load_error(p, "an OpenSSH private key, not a PEM one (convert it with "
                         "`ssh-keygen -p -m PKCS8 -f FILE`)");
    free(p);
    char *big = util_malloc(DKIM_KEY_FILE_MAX + 10);
    memset(big, 'A', DKIM_KEY_FILE_MAX + 10);
    p = write_text(dir, "big.pem", big, DKIM_KEY_FILE_MAX + 10);
    free(big);
    expect_load_error(p, "65546 bytes is too large for a PEM key (at most 65536)");
    free(p);

    p = util_asprintf("%s/missing.pem", dir);
    expect_load_error(p, "cannot open: No such file or directory");
    free(p);
    expect_load_error(dir, "not a regular file");

    /* In memory, `what` names the key. */
    char *err = NULL;
    ck_assert_ptr_null(dkim_key_load_pem(garbage, strlen(garbage), "for example.com", &err));
    ck_assert_str_eq(err, "dkim key for example.com: no PEM private key in it (expected "
                          "-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)");
    free(err);
    EVP_PKEY_free(rsa512);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(rsa);
}
END_TEST

START_TEST(test_key_rsa_too_long)
{
    const char *dir = testlib_tmpdir("dkimlong");
    EVP_PKEY *big = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)4160);
    ck_assert_ptr_nonnull(big);
    char *p = write_pkey(dir, "long.pem", big, PEM_PKCS8);
    expect_load_error(p, "RSA key of 4160 bits is too long (at most 4096: verifiers need not "
                         "handle longer keys, RFC 8301 section 3.2)");
    free(p);
    EVP_PKEY_free(big);
}
END_TEST

/* The p= value decoded into an OpenSSL public key (RSA: SubjectPublicKeyInfo; Ed25519: raw). */
static EVP_PKEY *public_from_b64(const char *b64, dkim_alg alg)
{
    size_t n = strlen(b64);
    unsigned char *der = util_malloc(n);
    int len = EVP_DecodeBlock(der, (const unsigned char *)b64, (int)n);
    ck_assert_int_gt(len, 0);
    while (n > 0 && b64[n - 1] == '=') {
        n--;
        len--;
    }
    EVP_PKEY *pk;
    if (alg == DKIM_ALG_ED25519_SHA256) {
        ck_assert_int_eq(len, 32);
        pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, der, 32);
    } else {
        const unsigned char *q = der;
        pk = d2i_PUBKEY(NULL, &q, len);
        ck_assert_ptr_eq(q, der + len);
    }
    ck_assert_ptr_nonnull(pk);
    free(der);
    return pk;
}

START_TEST(test_key_forms_accepted)
{
    const char *dir = testlib_tmpdir("dkimforms");
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    char *p8 = write_pkey(dir, "rsa8.pem", rsa, PEM_PKCS8);
    char *p1 = write_pkey(dir, "rsa1.pem", rsa, PEM_PKCS1);
    char *pe = write_pkey(dir, "ed.pem", ed, PEM_PKCS8);
    char *err = NULL;
    dkim_key *k8 = dkim_key_load_file(p8, &err);
    dkim_key *k1 = dkim_key_load_file(p1, &err);
    dkim_key *ke = dkim_key_load_file(pe, &err);
    ck_assert(k8 && k1 && ke);
    ck_assert_int_eq(dkim_key_alg(k8), DKIM_ALG_RSA_SHA256);
    ck_assert_int_eq(dkim_key_bits(k1), 1024);              /* the minimum is accepted */
    ck_assert_int_eq(dkim_key_alg(ke), DKIM_ALG_ED25519_SHA256);
    char text[64];
    dkim_key_to_text(k1, text, sizeof text);
    ck_assert_str_eq(text, "rsa-sha256 1024 bits");
    dkim_key_to_text(ke, text, sizeof text);
    ck_assert_str_eq(text, "ed25519-sha256");

    /* PKCS#1 and PKCS#8 of one key publish the same p=, which decodes to that key. */
    char *b8 = dkim_key_public_b64(k8), *b1 = dkim_key_public_b64(k1), *be = dkim_key_public_b64(ke);
    ck_assert_str_eq(b8, b1);
    EVP_PKEY *pub = public_from_b64(b8, DKIM_ALG_RSA_SHA256);
    ck_assert_int_eq(EVP_PKEY_eq(pub, rsa), 1);
    EVP_PKEY_free(pub);
    pub = public_from_b64(be, DKIM_ALG_ED25519_SHA256);
    ck_assert_int_eq(EVP_PKEY_eq(pub, ed), 1);
    EVP_PKEY_free(pub);
    ck_assert_uint_eq(strlen(be), 44);                      /* 32 bytes */

    char *txt = dkim_key_txt_record(ke);
    char *want = util_asprintf("v=DKIM1; k=ed25519; p=%s", be);
    ck_assert_str_eq(txt, want);
    free(txt);
    free(want);
    txt = dkim_key_txt_record(k8);
    want = util_asprintf("v=DKIM1; k=rsa; p=%s", b8);
    ck_assert_str_eq(txt, want);
    free(txt);
    free(want);
    free(b8), free(b1), free(be), free(p8), free(p1), free(pe);
    dkim_key_free(k8), dkim_key_free(k1), dkim_key_free(ke);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ed);
}
END_TEST

static size_t count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

START_TEST(test_key_generate_and_write)
{
    const char *dir = testlib_tmpdir("dkimgen");
    for (int a = 0; a < 2; a++) {
        dkim_alg alg = a ? DKIM_ALG_ED25519_SHA256 : DKIM_ALG_RSA_SHA256;
        char *err = NULL;
        dkim_key *k = dkim_key_generate(alg, &err);
        ck_assert_ptr_nonnull(k);
        ck_assert_int_eq(dkim_key_alg(k), alg);
        if (alg == DKIM_ALG_RSA_SHA256) ck_assert_int_eq(dkim_key_bits(k), 2048);
        char *path = util_asprintf("%s/%s.pem", dir, dkim_alg_key_type(alg));
        free(write_text(dir, a ? "ed25519.pem" : "rsa.pem", "old content\n", 12)); /* replaced */
        chmod(path, 0644);
        ck_assert_int_eq(dkim_key_write_pem(k, path, &err), 0);
        struct stat st;
        ck_assert_int_eq(stat(path, &st), 0);
        ck_assert_int_eq(st.st_mode & 0777, 0600);
        size_t len = 0;
        char *text = testlib_read_file(path, &len);
        ck_assert(strncmp(text, "-----BEGIN PRIVATE KEY-----\n", 28) == 0);   /* PKCS#8 */
        dkim_key *back = dkim_key_load_pem(text, len, path, &err);
        ck_assert_ptr_nonnull(back);
        char *p1 = dkim_key_public_b64(k), *p2 = dkim_key_public_b64(back);
        ck_assert_str_eq(p1, p2);
        free(p1), free(p2), free(text), free(path);
        dkim_key_free(back);
        dkim_key_free(k);
    }
    ck_assert_uint_eq(count_entries(dir), 2);     /* the two keys: no temporary file left */

    char *err = NULL;
    dkim_key *k = dkim_key_generate(DKIM_ALG_ED25519_SHA256, &err);
    char *bad = util_asprintf("%s/no/such/dir/k.pem", dir);
    ck_assert_int_eq(dkim_key_write_pem(k, bad, &err), -1);
    char *want = util_asprintf("dkim key %s: cannot create a temporary file beside it: No such "
                               "file or directory", bad);
    ck_assert_str_eq(err, want);
    free(err), free(want), free(bad);
    dkim_key_free(k);
}
END_TEST

START_TEST(test_txt_quote)
{
    char *err = NULL;
    dkim_key *k = dkim_key_generate(DKIM_ALG_RSA_SHA256, &err);
    char *txt = dkim_key_txt_record(k);
    ck_assert_uint_gt(strlen(txt), 255);
    char *q = dkim_txt_quote(txt);
    /* "<255 bytes>" "<the rest>" */
    ck_assert_int_eq(q[0], '"');
    ck_assert_int_eq(q[256], '"');
    ck_assert_int_eq(q[257], ' ');
    ck_assert_int_eq(q[258], '"');
    ck_assert(strncmp(q + 1, txt, 255) == 0);
    ck_assert(strncmp(q + 259, txt + 255, strlen(txt) - 255) == 0);
    ck_assert_str_eq(q + 259 + strlen(txt) - 255, "\"");
    free(q);
    q = dkim_txt_quote("a\"b");
    ck_assert_str_eq(q, "\"a\\\"b\"");
    free(q);
    free(txt);
    dkim_key_free(k);
}
END_TEST

/* ------------------------------------------------------------------ key records */

static const struct {
    const char *txt;
    int rc;
    const char *k_or_err;
    const char *p;
    bool revoked, testing, sha256;
} record_cases[] = {
    {"v=DKIM1; k=rsa; p=QUJD", 0, "rsa", "QUJD", false, false, true},
    {"p=QUJD", 0, "rsa", "QUJD", false, false, true},                    /* k= defaults to rsa */
    {" v = DKIM1 ;k=ed25519;\tp= QU JD\r\n\t RA== ;", 0, "ed25519", "QUJDRA==", false, false, true},
    {"v=DKIM1; p=", 0, "rsa", "", true, false, true},                    /* revoked */
    {"v=DKIM1; t=y:s; h=sha1; n=notes ok; p=QUJD", 0, "rsa", "QUJD", false, true, false},
    {"v=DKIM1; h=sha1 : sha256; p=QUJD", 0, "rsa", "QUJD", false, false, true},
    {"v=DKIM1; k=rsa", -1, "no p= tag (the public key)", NULL, false, false, false},
    {"", -1, "no p= tag (the public key)", NULL, false, false, false},
    {"k=rsa; v=DKIM1; p=QUJD", -1, "v= is not the first tag", NULL, false, false, false},
    {"v=DKIM2; p=QUJD", -1, "v=DKIM2 is not DKIM1", NULL, false, false, false},
    {"v=DKIM1; p=QUJD; p=QUJD", -1, "tag p= appears twice", NULL, false, false, false},
    {"v=DKIM1; p=QU*D", -1, "p= holds '*', which is not base64", NULL, false, false, false},
    {"v=DKIM1; garbage; p=QUJD", -1, "'garbage' is not tag=value", NULL, false, false, false},
    {"v=DKIM1; =x; p=QUJD", -1, "a tag with no name before '='", NULL, false, false, false},
    {"v=DKIM1; k=averyveryverylongtype; p=QUJD", -1, "k=averyveryverylongtype is not a key type",
     NULL, false, false, false},
};

START_TEST(test_record_parse)
{
    dkim_record r;
    char *err = NULL;
    int rc = dkim_record_parse(record_cases[_i].txt, &r, &err);
    ck_assert_msg(rc == record_cases[_i].rc, "case %d: rc %d", _i, rc);
    if (rc == 0) {
        ck_assert_str_eq(r.k, record_cases[_i].k_or_err);
        ck_assert_str_eq(r.p, record_cases[_i].p);
        ck_assert_int_eq(r.revoked, record_cases[_i].revoked);
        ck_assert_int_eq(r.testing, record_cases[_i].testing);
        ck_assert_int_eq(r.sha256, record_cases[_i].sha256);
        dkim_record_clear(&r);
    } else {
        ck_assert_str_eq(err, record_cases[_i].k_or_err);
        ck_assert_ptr_null(r.p);
        free(err);
    }
}
END_TEST

START_TEST(test_record_matches_key)
{
    char *err = NULL;
    dkim_key *rsa = dkim_key_generate(DKIM_ALG_RSA_SHA256, &err);
    dkim_key *ed = dkim_key_generate(DKIM_ALG_ED25519_SHA256, &err);
    dkim_key *ed2 = dkim_key_generate(DKIM_ALG_ED25519_SHA256, &err);
    dkim_record r;
    const char *why = NULL;
    char *txt = dkim_key_txt_record(ed);
    ck_assert_int_eq(dkim_record_parse(txt, &r, &err), 0);
    ck_assert(dkim_key_matches_record(ed, &r, &why));
    ck_assert(!dkim_key_matches_record(ed2, &r, &why));
    ck_assert_str_eq(why, "p= is a different public key");
    ck_assert(!dkim_key_matches_record(rsa, &r, &why));
    ck_assert_str_eq(why, "the record's k= is not rsa but the key is RSA");
    dkim_record_clear(&r);
    free(txt);

    /* The RSA record as kiln prints it, and folded as a DNS console may show it. */
    char *p = dkim_key_public_b64(rsa);
    txt = util_asprintf("v=DKIM1; k=rsa; p=%.100s \" \"%s", p, p + 100);
    ck_assert_int_eq(dkim_record_parse(txt, &r, &err), -1);    /* quotes are not base64 */
    free(err);
    free(txt);
    txt = util_asprintf("v=DKIM1; k=rsa; p=%.100s %s", p, p + 100);
    ck_assert_int_eq(dkim_record_parse(txt, &r, &err), 0);
    ck_assert(dkim_key_matches_record(rsa, &r, &why));
    dkim_record_clear(&r);
    free(txt);

    /* The bare PKCS#1 RSAPublicKey some publishers put in p= is the same key. */
    EVP_PKEY *pub = public_from_b64(p, DKIM_ALG_RSA_SHA256);
    unsigned char *der = NULL;
    int n = i2d_PublicKey(pub, &der);
    ck_assert_int_gt(n, 0);
    char *b64 = util_malloc((size_t)(4 * ((n + 2) / 3) + 1));
    EVP_EncodeBlock((unsigned char *)b64, der, n);
    txt = util_asprintf("v=DKIM1; p=%s", b64);
    ck_assert_int_eq(dkim_record_parse(txt, &r, &err), 0);
    ck_assert(dkim_key_matches_record(rsa, &r, &why));
    dkim_record_clear(&r);
    free(txt), free(b64), OPENSSL_free(der), EVP_PKEY_free(pub), free(p);

    ck_assert_int_eq(dkim_record_parse("v=DKIM1; k=rsa; p=", &r, &err), 0);
    ck_assert(!dkim_key_matches_record(rsa, &r, &why));
    ck_assert_str_eq(why, "the record is revoked (empty p=)");
    dkim_record_clear(&r);
    ck_assert_int_eq(dkim_record_parse("v=DKIM1; k=ed25519; p=QUJD", &r, &err), 0);
    ck_assert(!dkim_key_matches_record(ed, &r, &why));
    ck_assert_str_eq(why, "p= is not a valid public key");
    dkim_record_clear(&r);
    dkim_key_free(rsa), dkim_key_free(ed), dkim_key_free(ed2);
}
END_TEST

static Suite *dkim_suite(void)
{
    Suite *s = suite_create("dkim");
    TCase *c = tcase_create("canon");
    tcase_add_test(c, test_rfc6376_example);
    tcase_add_loop_test(c, test_body_canon, 0, sizeof body_cases / sizeof *body_cases);
    tcase_add_loop_test(c, test_header_canon, 0, sizeof header_cases / sizeof *header_cases);
    tcase_add_test(c, test_fields_and_selection);
    suite_add_tcase(s, c);

    TCase *k = tcase_create("keys");
    tcase_set_timeout(k, 60);        /* RSA key generation (a 4160-bit one) */
    tcase_add_test(k, test_key_load_errors);
    tcase_add_test(k, test_key_rsa_too_long);
    tcase_add_test(k, test_key_forms_accepted);
    tcase_add_test(k, test_key_generate_and_write);
    tcase_add_test(k, test_txt_quote);
    tcase_add_loop_test(k, test_record_parse, 0, sizeof record_cases / sizeof *record_cases);
    tcase_add_test(k, test_record_matches_key);
    suite_add_tcase(s, k);
    return s;
}

TESTLIB_SUITES(dkim_suite);
