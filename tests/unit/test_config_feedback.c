/* test_config_feedback.c — the feedback section (base/config_feedback.c, issue 14): what
 * --check-config refuses, each error naming the file, the line, the key path
 * (feedback.addresses[1]) and what is wrong (listen addresses, the bounce domain, the
 * addresses, the secret file and its mode and length, size, retention, the complaint hold
 * rate, unknown keys); what it accepts as the config then holds it (no section: off;
 * defaults; every key; the secret's bytes without the trailing newline; lower-cased
 * domain and addresses; 0.1% and 0.001 alike); the api secret files still checked as before
 * by the shared reader; and the --check-config summary line. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/config.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

#define SECRET "0123456789abcdef0123456789abcdef"

static const char *dir;

static void put(const char *name, const char *text, size_t len, unsigned mode)
{
    testlib_write_file(dir, name, text, len, mode);
}

static void setup(void)
{
    dir = testlib_tmpdir("cfgfb");
    put("fb.key", SECRET "\n", sizeof SECRET, 0600);
    put("fb400.key", "exactly16bytes!!", 16, 0400);
    put("fbbin.key", "\x01\x00\xff binary key \r\n\t!!\n", 21, 0600);
    put("fb644.key", SECRET "\n", sizeof SECRET, 0644);
    put("fb604.key", SECRET "\n", sizeof SECRET, 0604);
    put("fbshort.key", "fifteen bytes!!\n", 16, 0600);
    put("fbempty.key", "", 0, 0600);
    char *big = util_malloc(5000);
    memset(big, 'k', 5000);
    put("fbbig.key", big, 4097, 0600);
    put("fbmax.key", big, 4096, 0600);
    free(big);
}

static void teardown(void) { testlib_tmpdir_remove(dir); }

/* The config around the feedback section, which starts at line 7 (its first key at line 8;
 * a missing key is reported at the map's first line). */
#define HEAD                                                                                  \
    "server: {hostname: mta.example.test}\n"                                                  \
    "submission: {listen: [127.0.0.1:2587]}\n"                                                \
    "api: {listen: [127.0.0.1:8080], access_keys: [{id: AKIAKILNEXAMPLE0001, "               \
    "secret_file: fb.key}]}\n"                                                                \
    "pools: [{name: p}]\n"                                                                    \
    "configuration_sets: [{name: txn, pool: p}]\n"                                            \
    "default_configuration_set: txn\n"

static config *load(const char *feedback, char **err, char *file, size_t n)
{
    snprintf(file, n, "%s/kiln.yaml", dir);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, HEAD "%s", feedback);
    fclose(f);
    return config_load(file, NULL, err);
}

#define LISTEN "  listen: [\"0.0.0.0:25\"]\n"
#define KEYFILE "  secret_file: fb.key\n"
#define BASE "feedback:\n" LISTEN KEYFILE

static const struct {
    const char *text;       /* from line 7 on */
    int line;               /* of the error */
    const char *path;       /* key path in the error */
    const char *fragment;   /* in the error */
} bad[] = {
    {"feedback:\n", 7, "feedback.listen", "required key is missing (the inbound SMTP addresses"},
    {"feedback: {}\n", 7, "feedback.listen", "required key is missing"},
    {"feedback:\n" KEYFILE, 8, "feedback.listen", "e.g. [0.0.0.0:25]"},
    {"feedback:\n" LISTEN, 8, "feedback.secret_file",
     "required key is missing (a file holding the VERP tokens' HMAC key, at least 16 bytes, "
     "mode 0600)"},
    {"feedback: [x]\n", 7, "feedback", "expected a map, got a list"},
    {"feedback:\n  listen: []\n" KEYFILE, 8, "feedback.listen",
     "at least one listen address is needed (e.g. [127.0.0.1:25])"},
    {"feedback:\n  listen: 25\n" KEYFILE, 8, "feedback.listen", "expected a list"},
    {"feedback:\n  listen: [nope]\n" KEYFILE, 8, "feedback.listen[0]",
     "'nope' is not host:port (e.g. 127.0.0.1:25, [::1]:25)"},
    {"feedback:\n  listen: [127.0.0.1:25, 127.0.0.1:2587]\n" KEYFILE, 8, "feedback.listen[1]",
     "'127.0.0.1' port 2587 is also a submission.listen address"},
    {"feedback:\n  listen: [127.0.0.1:8080]\n" KEYFILE, 8, "feedback.listen[0]",
     "'127.0.0.1' port 8080 is also an api.listen address"},
    {"feedback:\n  listen: [127.0.0.1:25, 127.0.0.1:25]\n" KEYFILE, 8, "feedback.listen[1]",
     "'127.0.0.1:25' is listed twice"},
    {BASE "  bounce_domain: x y\n", 10, "feedback.bounce_domain",
     "'x y' is not a domain name (e.g. bounce.example.com)"},
    {BASE "  bounce_domain: bounce@example.com\n", 10, "feedback.bounce_domain",
     "'bounce@example.com' is not a domain name"},
    {BASE "  bounce_domain: .example.com\n", 10, "feedback.bounce_domain", "is not a domain name"},
    {BASE "  bounce_domain: ''\n", 10, "feedback.bounce_domain", "must not be empty"},
    {BASE "  bounce_domain: [a.test]\n", 10, "feedback.bounce_domain", "expected a text value"},
    {BASE "  addresses: [fbl@example.com, x]\n", 10, "feedback.addresses[1]",
     "'x' is not an address (e.g. fbl@example.com)"},
    {BASE "  addresses: ['@example.com']\n", 10, "feedback.addresses[0]", "is not an address"},
    {BASE "  addresses: ['a b@example.com']\n", 10, "feedback.addresses[0]",
     "is not an address"},
    {BASE "  addresses: [fbl@exa_mple..com]\n", 10, "feedback.addresses[0]", "is not an address"},
    {BASE "  addresses: [Fbl@Example.com, fbl@example.COM]\n", 10, "feedback.addresses[1]",
     "'fbl@example.com' is listed twice (also as feedback.addresses[0])"},
    {BASE "  addresses: fbl@example.com\n", 10, "feedback.addresses", "expected a list"},
    {"feedback:\n" LISTEN "  secret_file: nosuch\n", 9, "feedback.secret_file",
     "/nosuch: No such file or directory"},
    {"feedback:\n" LISTEN "  secret_file: fb644.key\n", 9, "feedback.secret_file",
     "/fb644.key must not be readable by group or others (mode 0644); chmod 600 it"},
    {"feedback:\n" LISTEN "  secret_file: fb604.key\n", 9, "feedback.secret_file",
     "(mode 0604); chmod 600 it"},
    {"feedback:\n" LISTEN "  secret_file: .\n", 9, "feedback.secret_file",
     "is not a regular file"},
    {"feedback:\n" LISTEN "  secret_file: fbshort.key\n", 9, "feedback.secret_file",
     "/fbshort.key holds 15 bytes; the feedback secret needs at least 16"},
    {"feedback:\n" LISTEN "  secret_file: fbempty.key\n", 9, "feedback.secret_file",
     "/fbempty.key holds 0 bytes"},
    {"feedback:\n" LISTEN "  secret_file: fbbig.key\n", 9, "feedback.secret_file",
     "/fbbig.key holds more than 4096 bytes"},
    {BASE "  max_message_size: big\n", 10, "feedback.max_message_size", "'big' is not a size"},
    {BASE "  max_message_size: 100\n", 10, "feedback.max_message_size",
     "must be at least 1KB, not 100"},
    {BASE "  retention: forever\n", 10, "feedback.retention", "'forever' is not a duration"},
    {BASE "  retention: 0s\n", 10, "feedback.retention", "must be longer than 0"},
    {BASE "  complaint_hold_rate: high\n", 10, "feedback.complaint_hold_rate",
     "'high' is not a rate (e.g. 0.1% or 0.001; 0 = never held)"},
    {BASE "  complaint_hold_rate: 1.5\n", 10, "feedback.complaint_hold_rate",
     "must be between 0 and 1 (0% to 100%), not 1.5"},
    {BASE "  complaint_hold_rate: 101%\n", 10, "feedback.complaint_hold_rate",
     "must be between 0 and 1 (0% to 100%), not 101%"},
    {BASE "  complaint_hold_rate: -0.1%\n", 10, "feedback.complaint_hold_rate",
     "must be between 0 and 1"},
    {BASE "  complaint_hold_rate: '%'\n", 10, "feedback.complaint_hold_rate", "is not a rate"},
    {BASE "  complaint_hold_rate: 1e-3\n", 10, "feedback.complaint_hold_rate", "is not a rate"},
    {BASE "  port: 25\n", 10, "feedback.port",
     "unknown key 'port'; allowed here: listen, bounce_domain, addresses, secret_file, "
     "max_message_size, retention, complaint_hold_rate"},
};

START_TEST(test_bad)
{
    char file[300], prefix[500];
    char *err = NULL;
    config *c = load(bad[_i].text, &err, file, sizeof file);
    ck_assert_msg(c == NULL, "%s: loaded but should fail", bad[_i].text);
    snprintf(prefix, sizeof prefix, "%s:%d: %s: ", file, bad[_i].line, bad[_i].path);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "%s:\n  error:    %s\n  expected: %s",
                  bad[_i].text, err, prefix);
    ck_assert_msg(strstr(err, bad[_i].fragment) != NULL, "%s:\n  error: %s\n  expected: %s",
                  bad[_i].text, err, bad[_i].fragment);
    ck_assert_msg(strstr(err, "0123456789abcdef") == NULL, "the secret leaked: %s", err);
    free(err);
}
END_TEST

/* No section: feedback off, the defaults in place, nothing allocated. */
START_TEST(test_off)
{
    char file[300];
    char *err = NULL;
    config *c = load("", &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert(!c->feedback_on);
    ck_assert_uint_eq(c->nfeedback_listen, 0);
    ck_assert_ptr_null(c->feedback_secret);
    ck_assert_ptr_null(c->feedback_bounce_domain);
    ck_assert_int_eq(c->feedback_max_message_size, 10485760);
    ck_assert_int_eq(c->feedback_retention_ms, 14LL * 24 * 3600 * 1000);
    ck_assert(c->feedback_complaint_hold_rate == 0.001);
    char *sum = config_summary(c);
    ck_assert_ptr_null(strstr(sum, "feedback: listen"));
    free(sum);
    config_unref(c);
}
END_TEST

/* listen and secret_file only: on, the defaults for the rest, the secret without its
 * trailing newline. */
START_TEST(test_minimal_and_defaults)
{
    char file[300];
    char *err = NULL;
    config *c = load(BASE, &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert(c->feedback_on);
    ck_assert_uint_eq(c->nfeedback_listen, 1);
    ck_assert_str_eq(c->feedback_listen[0].host, "0.0.0.0");
    ck_assert_int_eq(c->feedback_listen[0].port, 25);
    ck_assert_ptr_null(c->feedback_bounce_domain);
    ck_assert_uint_eq(c->nfeedback_addresses, 0);
    ck_assert_uint_eq(c->feedback_secret_len, 32);
    ck_assert_mem_eq(c->feedback_secret, SECRET, 32);
    char want[400];
    snprintf(want, sizeof want, "%s/fb.key", c->dir);
    ck_assert_str_eq(c->feedback_secret_file, want);
    ck_assert_int_eq(c->feedback_max_message_size, 10485760);
    ck_assert_int_eq(c->feedback_retention_ms, 14LL * 24 * 3600 * 1000);
    ck_assert(c->feedback_complaint_hold_rate == 0.001);
    char *sum = config_summary(c);
    ck_assert_msg(strstr(sum, "feedback: listen 0.0.0.0:25; bounce domain none; 0 feedback "
                              "address(es); max size 10MB, retention 14d, complaint hold rate "
                              "0.1%\n") != NULL, "%s", sum);
    free(sum);
    config_unref(c);
}
END_TEST

/* Every key set: values as written, domain and addresses lower-cased, any bytes in the
 * secret (a 0400 file accepted), 4096 bytes the most. */
START_TEST(test_full)
{
    char file[300];
    char *err = NULL;
    config *c = load("feedback:\n"
                     "  listen: [\"0.0.0.0:25\", \"[::1]:2526\", localhost:2525]\n"
                     "  bounce_domain: Bounce.Example.COM\n"
                     "  addresses: [FBL@Example.com, abuse-reports@mail.example.org]\n"
                     "  secret_file: ./fbbin.key\n"
                     "  max_message_size: 2MB\n"
                     "  retention: 30d\n"
                     "  complaint_hold_rate: 0.5%\n",
                     &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert(c->feedback_on);
    ck_assert_uint_eq(c->nfeedback_listen, 3);
    ck_assert_str_eq(c->feedback_listen[1].host, "::1");
    ck_assert_int_eq(c->feedback_listen[1].port, 2526);
    ck_assert_str_eq(c->feedback_listen[2].host, "localhost");
    ck_assert_int_eq(c->feedback_listen[2].port, 2525);
    ck_assert_str_eq(c->feedback_bounce_domain, "bounce.example.com");
    ck_assert_uint_eq(c->nfeedback_addresses, 2);
    ck_assert_str_eq(c->feedback_addresses[0], "fbl@example.com");
    ck_assert_str_eq(c->feedback_addresses[1], "abuse-reports@mail.example.org");
    ck_assert_uint_eq(c->feedback_secret_len, 20);   /* 21 bytes, the last newline removed */
    ck_assert_mem_eq(c->feedback_secret, "\x01\x00\xff binary key \r\n\t!!", 20);
    ck_assert_int_eq(c->feedback_max_message_size, 2 << 20);
    ck_assert_int_eq(c->feedback_retention_ms, 30LL * 24 * 3600 * 1000);
    ck_assert(c->feedback_complaint_hold_rate > 0.00499 && c->feedback_complaint_hold_rate < 0.00501);
    char *sum = config_summary(c);
    ck_assert_msg(strstr(sum, "feedback: listen 0.0.0.0:25, [::1]:2526, localhost:2525; bounce "
                              "domain bounce.example.com; 2 feedback address(es); max size 2MB, "
                              "retention 30d, complaint hold rate 0.5%\n") != NULL, "%s", sum);
    ck_assert_ptr_null(strstr(sum, "binary key"));
    free(sum);
    config_unref(c);

    c = load("feedback:\n" LISTEN "  secret_file: fb400.key\n  complaint_hold_rate: 0.001\n"
             "  addresses: []\n",
             &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_uint_eq(c->feedback_secret_len, 16);
    ck_assert_mem_eq(c->feedback_secret, "exactly16bytes!!", 16);
    ck_assert(c->feedback_complaint_hold_rate == 0.001);
    ck_assert_uint_eq(c->nfeedback_addresses, 0);
    config_unref(c);

    const char *zero[] = {"0", "0%", "0.0"};
    for (size_t i = 0; i < 3; i++) {
        char text[300];
        snprintf(text, sizeof text, BASE "  complaint_hold_rate: '%s'\n", zero[i]);
        c = load(text, &err, file, sizeof file);
        ck_assert_msg(c != NULL, "%s: %s", zero[i], err);
        ck_assert(c->feedback_complaint_hold_rate == 0);   /* never held */
        config_unref(c);
    }
    const char *one[] = {"1", "100%"};
    for (size_t i = 0; i < 2; i++) {
        char text[300];
        snprintf(text, sizeof text, BASE "  complaint_hold_rate: '%s'\n", one[i]);
        c = load(text, &err, file, sizeof file);
        ck_assert_msg(c != NULL, "%s: %s", one[i], err);
        ck_assert(c->feedback_complaint_hold_rate == 1);
        config_unref(c);
    }
    c = load("feedback:\n" LISTEN "  secret_file: fbmax.key\n", &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_uint_eq(c->feedback_secret_len, 4096);
    config_unref(c);
}
END_TEST

/* The same text held in memory reads the secret file the same way. */
START_TEST(test_text_load)
{
    const char *text = HEAD BASE "  bounce_domain: b.example.test\n";
    char *err = NULL;
    config *c = config_load_text(text, strlen(text), "<text>", dir, NULL, &err);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert(c->feedback_on);
    ck_assert_uint_eq(c->feedback_secret_len, 32);
    ck_assert_str_eq(c->feedback_bounce_domain, "b.example.test");
    config_unref(c);
}
END_TEST

/* The documented example still loads (its feedback section is commented out: git does not
 * keep a secret file's 0600 mode). */
START_TEST(test_full_example)
{
    char *err = NULL;
    config *c = config_load(KILN_SRCDIR "/conf/examples/full.yaml", NULL, &err);
    ck_assert_msg(c != NULL, "conf/examples/full.yaml: %s", err);
    ck_assert(!c->feedback_on);
    config_unref(c);
}
END_TEST

static Suite *config_feedback_suite(void)
{
    Suite *s = suite_create("config_feedback");
    TCase *tc = tcase_create("feedback");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_bad, 0, (int)(sizeof bad / sizeof bad[0]));
    tcase_add_test(tc, test_off);
    tcase_add_test(tc, test_minimal_and_defaults);
    tcase_add_test(tc, test_full);
    tcase_add_test(tc, test_text_load);
    tcase_add_test(tc, test_full_example);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(config_feedback_suite);
