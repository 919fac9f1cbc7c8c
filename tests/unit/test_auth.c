/* test_auth.c — SMTP AUTH pieces (mta/auth.c): base64 both ways, SASL PLAIN and LOGIN
 * responses, password checks against yescrypt and SHA-512 crypt hashes made here, and SES
 * SMTP passwords of api.access_keys (the values AWS's documented script derives). */
#include <check.h>
#include <crypt.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/auth.h"
#include "tests/unit/testlib.h"

/* ---- base64 ---- */

typedef struct {
    const char *raw;
    size_t raw_len;
    const char *b64;
} b64_case;

static const b64_case b64_cases[] = {       /* RFC 4648 section 10, plus NULs and high bytes */
    {"", 0, ""},
    {"f", 1, "Zg=="},
    {"fo", 2, "Zm8="},
    {"foo", 3, "Zm9v"},
    {"foob", 4, "Zm9vYg=="},
    {"fooba", 5, "Zm9vYmE="},
    {"foobar", 6, "Zm9vYmFy"},
    {"\0app\0secret", 11, "AGFwcABzZWNyZXQ="},
    {"\xff\xfe\xfd", 3, "//79"},
    {"\xfb\xef", 2, "++8="},
};

START_TEST(test_b64_vectors)
{
    const b64_case *c = &b64_cases[_i];
    char *enc = auth_b64_encode(c->raw, c->raw_len);
    ck_assert_str_eq(enc, c->b64);
    free(enc);
    size_t len = 99;
    char *dec = auth_b64_decode(c->b64, &len);
    ck_assert_ptr_nonnull(dec);
    ck_assert_uint_eq(len, c->raw_len);
    ck_assert(memcmp(dec, c->raw, len) == 0);
    ck_assert_int_eq(dec[len], '\0');
    free(dec);
}
END_TEST

START_TEST(test_b64_round_trip)
{
    unsigned char buf[300];
    for (size_t n = 0; n <= sizeof buf; n++) {
        for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)(i * 37 + n * 11);
        char *enc = auth_b64_encode(buf, n);
        ck_assert_uint_eq(strlen(enc), 4 * ((n + 2) / 3));
        size_t len = 0;
        char *dec = auth_b64_decode(enc, &len);
        ck_assert_msg(dec != NULL && len == n && memcmp(dec, buf, n) == 0, "length %zu", n);
        free(enc);
        free(dec);
    }
}
END_TEST

START_TEST(test_b64_invalid)
{
    static const char *bad[] = {
        "Zg=", "Zg", "Z", "Zm9vY", "Z===", "====", "=Zg=", "Zg==Zg==", "Zm=v", "Zm9v\r\n",
        " Zm9v", "Zm9v YmFy", "Zm9v!mFy", "Zm9-", "Zm9_", "=", "Zm9v\tYmFy",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = 0;
        ck_assert_msg(auth_b64_decode(bad[i], &len) == NULL, "'%s' accepted", bad[i]);
    }
}
END_TEST

/* ---- SASL PLAIN and LOGIN ---- */

typedef struct {
    const char *b64;
    const char *user;               /* NULL: must be refused */
    const char *pass;
} plain_case;

static const plain_case plain_cases[] = {
    {"AGFwcABzZWNyZXQ=", "app", "secret"},                  /* \0app\0secret */
    {"YXBwAGFwcABzZWNyZXQ=", "app", "secret"},              /* app\0app\0secret */
    {"AGFwcABww6Qgc3M=", "app", "p\xc3\xa4 ss"},            /* UTF-8 and a space */
    {"b3RoZXIAYXBwAHNlY3JldA==", NULL, NULL},               /* other\0app\0secret */
    {"AGFwcAA=", NULL, NULL},                               /* \0app\0 (no password) */
    {"AABzZWNyZXQ=", NULL, NULL},                           /* \0\0secret (no user) */
    {"YXBwAHNlY3JldA==", NULL, NULL},                       /* app\0secret (one NUL) */
    {"AGFwcABzZWMAcmV0", NULL, NULL},                       /* \0app\0sec\0ret */
    {"YXBw", NULL, NULL},                                   /* app */
    {"", NULL, NULL},
    {"=", NULL, NULL},
    {"AGFwcABzZWNyZXQ", NULL, NULL},                        /* padding missing */
    {"!!!!", NULL, NULL},
};

START_TEST(test_plain)
{
    const plain_case *c = &plain_cases[_i];
    char *user = NULL, *pass = NULL;
    int rc = auth_decode_plain(c->b64, &user, &pass);
    if (!c->user) {
        ck_assert_msg(rc == -1, "'%s' accepted", c->b64);
        ck_assert_ptr_null(user);
        ck_assert_ptr_null(pass);
        return;
    }
    ck_assert_msg(rc == 0, "'%s' refused", c->b64);
    ck_assert_str_eq(user, c->user);
    ck_assert_str_eq(pass, c->pass);
    free(user);
    free(pass);
}
END_TEST

START_TEST(test_login)
{
    char *s = auth_decode_login("YXBw");
    ck_assert_str_eq(s, "app");
    free(s);
    s = auth_decode_login("cMOkIHNz");                     /* "pä ss" */
    ck_assert_str_eq(s, "p\xc3\xa4 ss");
    free(s);
    ck_assert_ptr_null(auth_decode_login("YQBi"));          /* a\0b */
    ck_assert_ptr_null(auth_decode_login(""));
    ck_assert_ptr_null(auth_decode_login("*"));
    ck_assert_ptr_null(auth_decode_login("YXBw\r\n"));
    /* The prompts are "Username:" and "Password:". */
    size_t len = 0;
    char *p = auth_b64_decode(AUTH_LOGIN_PROMPT_USER + 4, &len);
    ck_assert_str_eq(p, "Username:");
    free(p);
    p = auth_b64_decode(AUTH_LOGIN_PROMPT_PASS + 4, &len);
    ck_assert_str_eq(p, "Password:");
    free(p);
}
END_TEST

/* ---- password verification ---- */

static char *make_hash(const char *prefix, const char *password)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    ck_assert_ptr_nonnull(crypt_gensalt_rn(prefix, 0, NULL, 0, setting, sizeof setting));
    struct crypt_data *data = calloc(1, sizeof *data);
    const char *h = crypt_rn(password, setting, data, (int)sizeof *data);
    ck_assert_ptr_nonnull(h);
    ck_assert(strncmp(h, prefix, strlen(prefix)) == 0);
    char *copy = strdup(h);
    free(data);
    return copy;
}

typedef struct {
    const char *user;
    const char *pass;
    bool ok;
} verify_case;

static const verify_case verify_cases[] = {
    {"app", "correct horse", true},
    {"legacy", "s3cret\xc3\xa4", true},
    {"app", "correct hors", false},
    {"app", "correct horse ", false},
    {"app", "Correct horse", false},
    {"app", "", false},
    {"app", "s3cret\xc3\xa4", false},                       /* another user's password */
    {"legacy", "correct horse", false},
    {"App", "correct horse", false},                          /* user names are exact */
    {"nobody", "correct horse", false},
    {"", "correct horse", false},
    {"broken", "anything", false},
};

START_TEST(test_verify)
{
    char *yes = make_hash("$y$", "correct horse");
    char *sha = make_hash("$6$", "s3cret\xc3\xa4");
    config *cfg = testlib_config_new();
    testlib_config_add_auth_user(cfg, "app", yes);
    testlib_config_add_auth_user(cfg, "legacy", sha);
    testlib_config_add_auth_user(cfg, "broken", "not-a-crypt-hash");
    for (size_t i = 0; i < sizeof verify_cases / sizeof verify_cases[0]; i++) {
        const verify_case *c = &verify_cases[i];
        ck_assert_msg(auth_verify(cfg, c->user, c->pass) == c->ok, "user '%s' pass '%s': want %s",
                      c->user, c->pass, c->ok ? "accepted" : "refused");
    }
    ck_assert(!auth_verify(cfg, NULL, "x"));
    ck_assert(!auth_verify(cfg, "app", NULL));
    /* No users configured: nobody gets in. */
    cfg->nauth = 0;
    ck_assert(!auth_verify(cfg, "app", "correct horse"));
    cfg->nauth = 3;
    config_unref(cfg);
    free(yes);
    free(sha);
}
END_TEST

START_TEST(test_verify_plain_end_to_end)
{
    char *hash = make_hash("$y$", "secret");
    config *cfg = testlib_config_new();
    testlib_config_add_auth_user(cfg, "app", hash);
    char *user = NULL, *pass = NULL;
    ck_assert_int_eq(auth_decode_plain("AGFwcABzZWNyZXQ=", &user, &pass), 0);
    ck_assert(auth_verify(cfg, user, pass));
    config_unref(cfg);
    free(user);
    free(pass);
    free(hash);
}
END_TEST

START_TEST(test_hash_usable)
{
    char *yes = make_hash("$y$", "x");
    char *sha = make_hash("$6$", "x");
    char *sha256 = make_hash("$5$", "x");
    ck_assert(auth_hash_usable(yes));
    ck_assert(auth_hash_usable(sha));
    ck_assert(auth_hash_usable(sha256));
    ck_assert(!auth_hash_usable("not-a-crypt-hash"));        /* would be a DES salt */
    ck_assert(!auth_hash_usable("$6$onlyasalt"));
    ck_assert(!auth_hash_usable("$6$onlyasalt$"));
    ck_assert(!auth_hash_usable("$9$unknown$method"));
    ck_assert(!auth_hash_usable("$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA"));
    ck_assert(!auth_hash_usable("!"));
    ck_assert(!auth_hash_usable(""));
    ck_assert(!auth_hash_usable(NULL));
    free(yes);
    free(sha);
    free(sha256);
}
END_TEST

/* ---- SES SMTP passwords of access keys ---- */

/* AWS's documented derivation (tests/unit/sigv4_vectors.py) of this secret's SMTP password
 * for regions "local" (kiln's default) and "us-east-1". */
#define KEY_SECRET "kilnTestSecretKey/0123456789abcdefghijklm"
#define KEY_PASS_LOCAL "BHVl2N1uvgd+VhhN7w/nIn8dX3WQ5wMNOSqc9CYOzare"
#define KEY_PASS_US_EAST_1 "BORx+Dd3PICtlwDes7JenEFbV0iuOfZN5yjjcdM/dVr9"

START_TEST(test_access_keys)
{
    config *cfg = testlib_config_new();                /* region "local" */
    char id0[] = "AKIAKILNTEST0000001", id1[] = "AKIAKILNTEST0000002";
    char secret0[] = KEY_SECRET, secret1[] = "anotherSecretKey/0123456789abcdefghijklmn";
    char *ids[] = {(char *)"example.com"};
    config_access_key keys[2];
    memset(keys, 0, sizeof keys);
    keys[0].id = id0;
    keys[0].secret = secret0;
    keys[0].scope.user = id0;
    keys[0].scope.scoped_identities = true;
    keys[0].scope.identities = ids;
    keys[0].scope.nidentities = 1;
    keys[1].id = id1;
    keys[1].secret = secret1;
    keys[1].scope.user = id1;

    ck_assert(!auth_enabled(cfg));
    cfg->api_keys = keys;
    cfg->napi_keys = 2;
    ck_assert(auth_enabled(cfg));                      /* keys alone turn SMTP AUTH on */
    ck_assert_ptr_eq(config_find_access_key(cfg, id1), &keys[1]);
    ck_assert_ptr_null(config_find_access_key(cfg, "akiakilntest0000001"));   /* ids are exact */
    ck_assert_ptr_null(config_find_access_key(cfg, NULL));

    /* the key's SES SMTP password: the session gets the key, with its scope */
    const config_access_key *k = auth_access_key_match(cfg, id0, KEY_PASS_LOCAL);
    ck_assert_ptr_eq(k, &keys[0]);
    ck_assert(k->scope.scoped_identities);
    ck_assert_str_eq(k->scope.identities[0], "example.com");
    /* the password derived for another region is another password */
    ck_assert_ptr_null(auth_access_key_match(cfg, id0, KEY_PASS_US_EAST_1));
    free(cfg->region);
    cfg->region = util_strdup("us-east-1");
    ck_assert_ptr_eq(auth_access_key_match(cfg, id0, KEY_PASS_US_EAST_1), &keys[0]);
    ck_assert_ptr_null(auth_access_key_match(cfg, id0, KEY_PASS_LOCAL));
    /* not the password: the secret itself, one character off, cut short, a newline more */
    const char *bad[] = {KEY_SECRET, "CORx+Dd3PICtlwDes7JenEFbV0iuOfZN5yjjcdM/dVr9",
                         "BORx+Dd3PICtlwDes7JenEFbV0iuOfZN5yjjcdM/dVr",
                         KEY_PASS_US_EAST_1 "\n", "", NULL};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_ptr_null(auth_access_key_match(cfg, id0, bad[i]));
    /* another key's name with this key's password; no such key */
    ck_assert_ptr_null(auth_access_key_match(cfg, id1, KEY_PASS_US_EAST_1));
    ck_assert_ptr_null(auth_access_key_match(cfg, "AKIAKILNTEST0000009", KEY_PASS_US_EAST_1));
    /* a key whose secret could not be read matches nothing */
    keys[0].secret = NULL;
    ck_assert_ptr_null(auth_access_key_match(cfg, id0, KEY_PASS_US_EAST_1));

    cfg->api_keys = NULL;          /* the keys are this test's, not the config's */
    cfg->napi_keys = 0;
    config_unref(cfg);
}
END_TEST

static Suite *auth_suite(void)
{
    Suite *s = suite_create("auth");
    TCase *b = tcase_create("base64");
    tcase_add_loop_test(b, test_b64_vectors, 0, sizeof b64_cases / sizeof b64_cases[0]);
    tcase_add_test(b, test_b64_round_trip);
    tcase_add_test(b, test_b64_invalid);
    suite_add_tcase(s, b);
    TCase *sasl = tcase_create("sasl");
    tcase_add_loop_test(sasl, test_plain, 0, sizeof plain_cases / sizeof plain_cases[0]);
    tcase_add_test(sasl, test_login);
    suite_add_tcase(s, sasl);
    TCase *v = tcase_create("verify");
    tcase_set_timeout(v, 30);               /* yescrypt is deliberately slow, more so under ASan */
    tcase_add_test(v, test_verify);
    tcase_add_test(v, test_verify_plain_end_to_end);
    tcase_add_test(v, test_hash_usable);
    tcase_add_test(v, test_access_keys);
    suite_add_tcase(s, v);
    return s;
}

TESTLIB_SUITES(auth_suite);
