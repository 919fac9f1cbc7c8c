/* test_config_api.c — the api section (base/config_api.c): what --check-config refuses, each
 * error naming the file, the line and the key path (api.access_keys[0].secret_file) and what
 * is wrong (listen addresses, TLS files, key ids, secret files and their modes, scopes,
 * limits); what it accepts, as the config then holds it (defaults, secrets read from
 * files, scopes shaped like submission.auth's, config_find_access_key); and
 * conf/examples/full.yaml still loading. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/config.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

#define SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

static const char *dir;

static void put(const char *name, const char *text, unsigned mode)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    ck_assert_int_eq(chmod(path, mode), 0);
}

static void setup(void)
{
    dir = testlib_tmpdir("cfgapi");
    put("k1", SECRET "\n", 0600);
    put("k2", "0123456789abcdef", 0400);
    put("k644", SECRET "\n", 0644);
    put("k640", SECRET "\n", 0640);
    put("kshort", "abc\n", 0600);
    put("kempty", "", 0600);
    put("k2line", SECRET "\nsecond\n", 0600);
    put("kblank", "wJalrXUtnFEMI K7MDENG\n", 0600);
    put("kcrlf", SECRET "\r\n", 0600);
    char longs[200];
    memset(longs, 'x', 129);
    longs[129] = '\0';
    put("klong", longs, 0600);
    put("cert.pem", "cert\n", 0644);
    put("key.pem", "key\n", 0600);
}

static void teardown(void) { testlib_tmpdir_remove(dir); }

/* The config around the api section, which starts at line 9 (its first key at line 10). */
#define HEAD                                                                                  \
    "server: {hostname: mta.example.test}\n"                                                  \
    "submission:\n"                                                                           \
    "  listen: [127.0.0.1:2587]\n"                                                            \
    "  auth: [{user: APPUSER00000000001, password_hash: \"$6$salt$hash\"}]\n"                 \
    "account: {identities: [example.com, ops@other.test]}\n"                                  \
    "pools: [{name: p}]\n"                                                                    \
    "configuration_sets: [{name: txn, pool: p}, {name: bulk, pool: p}]\n"                     \
    "default_configuration_set: txn\n"

static config *load(const char *api, char **err, char *file, size_t n)
{
    snprintf(file, n, "%s/kiln.yaml", dir);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, HEAD "%s", api);
    fclose(f);
    return config_load(file, NULL, err);
}

#define KEY1 "  access_keys: [{id: AKIAKILNEXAMPLE0001, secret_file: k1}]\n"
#define LISTEN "  listen: [127.0.0.1:8080]\n"

static const struct {
    const char *api;        /* the text from line 9 on */
    int line;               /* of the error */
    const char *path;       /* key path in the error */
    const char *fragment;   /* in the error */
} bad[] = {
    {"api:\n" LISTEN, 10, "api.access_keys",
     "at least one key is needed when api.listen is set"},
    {"api:\n" LISTEN "  access_keys: []\n", 11, "api.access_keys",
     "at least one key is needed when api.listen is set"},
    {"api:\n  listen: [nope:x]\n" KEY1, 10, "api.listen[0]",
     "'nope:x' is not host:port (e.g. 127.0.0.1:8080, [::1]:8080)"},
    {"api:\n  listen: [127.0.0.1:2587]\n" KEY1, 10, "api.listen[0]",
     "'127.0.0.1' port 2587 is also a submission.listen address"},
    {"api:\n  listen: [127.0.0.1:8080, 127.0.0.1:8080]\n" KEY1, 10, "api.listen[1]",
     "'127.0.0.1:8080' is listed twice"},
    {"api:\n  listen: 8080\n" KEY1, 10, "api.listen", "expected a list"},
    {"api: [x]\n", 9, "api", "expected a map, got a list"},
    {"api:\n  port: 8080\n", 10, "api.port", "unknown key 'port'; allowed here: listen, tls"},
    {"api:\n  access_keys: [{id: akiakilnexample0001, secret_file: k1}]\n", 10,
     "api.access_keys[0].id",
     "'akiakilnexample0001' is not an access key id (16 to 128 upper-case letters and digits"},
    {"api:\n  access_keys: [{id: AKIA123, secret_file: k1}]\n", 10, "api.access_keys[0].id",
     "'AKIA123' is not an access key id"},
    {"api:\n  access_keys: [{id: AKIAKILN-EXAMPLE01, secret_file: k1}]\n", 10,
     "api.access_keys[0].id", "is not an access key id"},
    {"api:\n  access_keys:\n    - {id: AKIAKILNEXAMPLE0001, secret_file: k1}\n"
     "    - {id: AKIAKILNEXAMPLE0001, secret_file: k2}\n", 12, "api.access_keys[1].id",
     "access key id 'AKIAKILNEXAMPLE0001' is listed twice"},
    {"api:\n  access_keys: [{id: APPUSER00000000001, secret_file: k1}]\n", 10,
     "api.access_keys[0].id", "access key id 'APPUSER00000000001' is also a submission.auth user"},
    {"api:\n  access_keys: [{secret_file: k1}]\n", 10, "api.access_keys[0].id",
     "required key is missing"},
    {"api:\n  access_keys: [~]\n", 10, "api.access_keys[0].id", "required key is missing"},
    {"api:\n  access_keys: [{id: AKIAKILNEXAMPLE0001}]\n", 10, "api.access_keys[0].secret_file",
     "required key is missing (a file holding the secret access key, mode 0600)"},
    {"api:\n  access_keys: [{id: AKIAKILNEXAMPLE0001, secret_file: nosuch}]\n", 10,
     "api.access_keys[0].secret_file", "/nosuch: No such file or directory"},
    {"api:\n  access_keys: [{id: AKIAKILNEXAMPLE0001, secret_file: k644}]\n", 10,
     "api.access_keys[0].secret_file",
     "/k644 must not be readable by group or others (mode 0644); chmod 600 it"},
    {"api:\n  access_keys: [{id: AKIAKILNEXAMPLE0001, secret_file: k640}]\n", 10,
     "api.access_keys[0].secret_file", "(mode 0640); chmod 600 it"},
    {"api:\n  access_keys: [{id: AKIAKILNEXAMPLE0001, secret_file: .}]\n", 10,
     "api.access_keys[0].secret_file", "is not a regular file"},
    {"api:\n  access_keys: [{id: AKIAKILNEXAMPLE0001, secret_file: kshort}]\n", 10,
     "api.access_keys[0].secret_file",
     "/kshort holds 3 characters; a secret access key has 16 to 128"},
    {"api:\n  access_keys: [{id: AKIAKILNEXAMPLE0001, secret_file: kempty}]\n", 10,
     "api.access_keys[0].secret_file", "/kempty holds 0 characters"},
    {"api:\n  access_keys: [{id: AKIAKILNEXAMPLE0001, secret_file: klong}]\n", 10,
     "api.access_keys[0].secret_file", "/klong holds more than 128 characters"},
    {"api:\n  access_keys: [{id: AKIAKILNEXAMPLE0001, secret_file: k2line}]\n", 10,
     "api.access_keys[0].secret_file",
     "/k2line must hold the secret access key alone on one line: byte 41 is a blank, a line "
     "break or not printable ASCII"},
    {"api:\n  access_keys: [{id: AKIAKILNEXAMPLE0001, secret_file: kblank}]\n", 10,
     "api.access_keys[0].secret_file", "byte 14 is a blank"},
    {"api:\n  access_keys: [{id: AKIAKILNEXAMPLE0001, secret_file: kcrlf}]\n", 10,
     "api.access_keys[0].secret_file", "byte 41 is a blank, a line break"},
    {"api:\n  access_keys: [{id: AKIAKILNEXAMPLE0001, secret_file: k1, identities: [other.org]}]\n",
     10, "api.access_keys[0].identities[0]",
     "'other.org' is not one of account.identities nor under one of its domains"},
    {"api:\n  access_keys: [{id: AKIAKILNEXAMPLE0001, secret_file: k1, identities: ['a b']}]\n",
     10, "api.access_keys[0].identities[0]", "is not a domain or an address"},
    {"api:\n  access_keys: [{id: AKIAKILNEXAMPLE0001, secret_file: k1, "
     "configuration_sets: [txn, nope]}]\n",
     10, "api.access_keys[0].configuration_sets[1]", "unknown configuration set 'nope'"},
    {"api:\n  access_keys: [{id: AKIAKILNEXAMPLE0001, secret_file: k1, secret: x}]\n", 10,
     "api.access_keys[0].secret", "unknown key 'secret'"},
    {"api:\n  tls: {cert: cert.pem}\n", 10, "api.tls.key",
     "required key is missing (HTTPS needs both cert and key)"},
    {"api:\n  tls: {cert: nosuch.pem, key: key.pem}\n", 10, "api.tls.cert", "cannot read"},
    {"api:\n  max_body_size: 1KB\n", 10, "api.max_body_size", "must be at least 64KB, not 1KB"},
    {"api:\n  max_body_size: big\n", 10, "api.max_body_size", "'big' is not a size"},
    {"api:\n  max_body_size: 1MB\n  max_inflight_bytes: 512KB\n", 11, "api.max_inflight_bytes",
     "must be at least api.max_body_size, not 512KB"},
    {"api:\n  max_body_size: 300MB\n", 10, "api.max_body_size",
     "must not exceed api.max_inflight_bytes (268435456 bytes)"},
    {"api:\n  max_connections: 0\n", 10, "api.max_connections", "must be between 1 and 1000000"},
    {"api:\n  max_connections: 64\n  max_connections_per_client: 65\n", 11,
     "api.max_connections_per_client", "65 is more than api.max_connections (64)"},
    {"api:\n  max_connections_per_client: 300\n", 10, "api.max_connections_per_client",
     "300 is more than api.max_connections (256)"},
    {"api:\n  timeout: 500ms\n", 10, "api.timeout",
     "must be a whole number of seconds, at least 1s, not 500ms"},
    {"api:\n  timeout: 0s\n", 10, "api.timeout", "must be longer than 0"},
    {"api:\n  max_request_rate: fast\n", 10, "api.max_request_rate", "'fast' is not a rate"},
};

START_TEST(test_bad)
{
    char file[300], prefix[500];
    char *err = NULL;
    config *c = load(bad[_i].api, &err, file, sizeof file);
    ck_assert_msg(c == NULL, "%s: loaded but should fail", bad[_i].api);
    snprintf(prefix, sizeof prefix, "%s:%d: %s: ", file, bad[_i].line, bad[_i].path);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "%s:\n  error:    %s\n  expected: %s",
                  bad[_i].api, err, prefix);
    ck_assert_msg(strstr(err, bad[_i].fragment) != NULL, "%s:\n  error: %s\n  expected: %s",
                  bad[_i].api, err, bad[_i].fragment);
    ck_assert_msg(strstr(err, "EXAMPLEKEY") == NULL, "the secret leaked: %s", err);
    free(err);
}
END_TEST

static void assert_defaults(const config *c)
{
    ck_assert_int_eq(c->api_max_body_size, 41943040 + 1048576);
    ck_assert_int_eq(c->api_max_inflight_bytes, 268435456);
    ck_assert_int_eq(c->api_max_connections, 256);
    ck_assert_int_eq(c->api_max_connections_per_client, 64);
    ck_assert_int_eq(c->api_timeout_ms, 60000);
    ck_assert_int_eq(c->api_max_request_rate.count, 200);
    ck_assert_int_eq(c->api_max_request_rate.per_ms, 1000);
    ck_assert_ptr_null(c->api_tls_cert);
    ck_assert_ptr_null(c->api_tls_key);
}

/* No api section, an empty one, or one without listen: the API is off, limits at defaults. */
START_TEST(test_off_and_defaults)
{
    char file[300];
    char *err = NULL;
    const char *texts[] = {"", "api:\n", "api: {}\n", "api:\n  listen: []\n"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        config *c = load(texts[i], &err, file, sizeof file);
        ck_assert_msg(c != NULL, "%s: %s", texts[i], err);
        ck_assert_uint_eq(c->napi_listen, 0);
        ck_assert_uint_eq(c->napi_keys, 0);
        ck_assert_ptr_null(config_find_access_key(c, "AKIAKILNEXAMPLE0001"));
        assert_defaults(c);
        config_unref(c);
    }
}
END_TEST

/* Keys without listen serve SMTP AUTH only: accepted, the API stays off. */
START_TEST(test_keys_without_listen)
{
    char file[300];
    char *err = NULL;
    config *c = load("api:\n" KEY1, &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_uint_eq(c->napi_listen, 0);
    ck_assert_uint_eq(c->napi_keys, 1);
    const config_access_key *k = config_find_access_key(c, "AKIAKILNEXAMPLE0001");
    ck_assert_ptr_nonnull(k);
    ck_assert_str_eq(k->secret, SECRET);
    ck_assert(!k->scope.scoped_identities);
    ck_assert(!k->scope.scoped_sets);
    assert_defaults(c);
    config_unref(c);
}
END_TEST

/* Every key set: values as written, secrets read (one trailing newline dropped, a 0400 file
 * accepted), relative paths against the config's directory, scopes like submission.auth's. */
START_TEST(test_full)
{
    char file[300], want[400];
    char *err = NULL;
    config *c = load("api:\n"
                     "  listen: [127.0.0.1:8080, \"[::1]:8443\", localhost:2587]\n"
                     "  tls: {cert: cert.pem, key: ./key.pem}\n"
                     "  access_keys:\n"
                     "    - id: AKIAKILNEXAMPLE0001\n"
                     "      secret_file: k1\n"
                     "      identities: [Example.COM, sub.example.com, ops@other.test]\n"
                     "      configuration_sets: [txn]\n"
                     "    - {id: AKIAKILNEXAMPLE0002, secret_file: k2, configuration_sets: []}\n"
                     "  max_body_size: 10MB\n"
                     "  max_inflight_bytes: 1GB\n"
                     "  max_connections: 1000\n"
                     "  max_connections_per_client: 1000\n"
                     "  timeout: 2m\n"
                     "  max_request_rate: 50/m\n",
                     &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_uint_eq(c->napi_listen, 3);
    ck_assert_str_eq(c->api_listen[0].host, "127.0.0.1");
    ck_assert_int_eq(c->api_listen[0].port, 8080);
    ck_assert_str_eq(c->api_listen[1].host, "::1");
    ck_assert_int_eq(c->api_listen[1].port, 8443);
    ck_assert_str_eq(c->api_listen[2].host, "localhost");
    snprintf(want, sizeof want, "%s/cert.pem", c->dir);
    ck_assert_str_eq(c->api_tls_cert, want);
    snprintf(want, sizeof want, "%s/key.pem", c->dir);
    ck_assert_str_eq(c->api_tls_key, want);
    ck_assert_uint_eq(c->napi_keys, 2);

    const config_access_key *k = config_find_access_key(c, "AKIAKILNEXAMPLE0001");
    ck_assert_ptr_eq(k, &c->api_keys[0]);
    ck_assert_str_eq(k->id, "AKIAKILNEXAMPLE0001");
    snprintf(want, sizeof want, "%s/k1", c->dir);
    ck_assert_str_eq(k->secret_file, want);
    ck_assert_str_eq(k->secret, SECRET);
    ck_assert_str_eq(k->scope.user, "AKIAKILNEXAMPLE0001");
    ck_assert_ptr_null(k->scope.password_hash);
    ck_assert(k->scope.scoped_identities);
    ck_assert_uint_eq(k->scope.nidentities, 3);
    ck_assert_str_eq(k->scope.identities[0], "example.com");   /* lower-cased, as auth's */
    ck_assert_str_eq(k->scope.identities[2], "ops@other.test");
    ck_assert(k->scope.scoped_sets);
    ck_assert_uint_eq(k->scope.nconfiguration_sets, 1);
    ck_assert_str_eq(k->scope.configuration_sets[0], "txn");

    k = config_find_access_key(c, "AKIAKILNEXAMPLE0002");
    ck_assert_ptr_eq(k, &c->api_keys[1]);
    ck_assert_str_eq(k->secret, "0123456789abcdef");
    ck_assert(!k->scope.scoped_identities);
    ck_assert(k->scope.scoped_sets);                /* an empty list: no set at all */
    ck_assert_uint_eq(k->scope.nconfiguration_sets, 0);
    ck_assert_ptr_null(config_find_access_key(c, "akiakilnexample0002"));
    ck_assert_ptr_null(config_find_access_key(c, "AKIAKILNEXAMPLE000"));

    ck_assert_int_eq(c->api_max_body_size, 10 << 20);
    ck_assert_int_eq(c->api_max_inflight_bytes, 1 << 30);
    ck_assert_int_eq(c->api_max_connections, 1000);
    ck_assert_int_eq(c->api_max_connections_per_client, 1000);
    ck_assert_int_eq(c->api_timeout_ms, 120000);
    ck_assert_int_eq(c->api_max_request_rate.count, 50);
    ck_assert_int_eq(c->api_max_request_rate.per_ms, 60000);
    config_unref(c);

    c = load("api: {max_request_rate: -1}\n", &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(c->api_max_request_rate.count, -1);
    config_unref(c);
}
END_TEST

/* The same text held in memory loads the same keys (config_load_text reads secret files). */
START_TEST(test_text_load)
{
    const char *text = HEAD "api:\n" LISTEN KEY1;
    char *err = NULL;
    config *c = config_load_text(text, strlen(text), "<text>", dir, NULL, &err);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_uint_eq(c->napi_listen, 1);
    ck_assert_str_eq(config_find_access_key(c, "AKIAKILNEXAMPLE0001")->secret, SECRET);
    config_unref(c);
}
END_TEST

/* The documented example still loads; its api section keeps the API off (the key example is
 * commented out: git cannot keep a secret file's 0600 mode). */
START_TEST(test_full_example)
{
    char *err = NULL;
    config *c = config_load(KILN_SRCDIR "/conf/examples/full.yaml", NULL, &err);
    ck_assert_msg(c != NULL, "conf/examples/full.yaml: %s", err);
    ck_assert_uint_eq(c->napi_listen, 0);
    ck_assert_uint_eq(c->napi_keys, 0);
    ck_assert_int_eq(c->api_max_body_size, 41943040 + 1048576);
    ck_assert_int_eq(c->api_max_request_rate.count, 200);
    config_unref(c);
}
END_TEST

static Suite *config_api_suite(void)
{
    Suite *s = suite_create("config_api");
    TCase *tc = tcase_create("api");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_bad, 0, (int)(sizeof bad / sizeof bad[0]));
    tcase_add_test(tc, test_off_and_defaults);
    tcase_add_test(tc, test_keys_without_listen);
    tcase_add_test(tc, test_full);
    tcase_add_test(tc, test_text_load);
    tcase_add_test(tc, test_full_example);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(config_api_suite);
