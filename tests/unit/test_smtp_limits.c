/* test_smtp_limits.c — issue items 4 and 8 in pure logic: the submission limits' config keys
 * (defaults, every value form, errors naming the key), the byte-rate parser, the caps derived
 * from RLIMIT_NOFILE (formula, lowering with warnings), admission (max_sessions, the reserved
 * share, per-client sessions, the per-client connection rate window, exemption, promotion
 * after AUTH, release) and the bounded client table. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/util.h"
#include "mta/auth.h"
#include "mta/smtp_limits.h"
#include "tests/unit/testlib.h"

#define BASE                                                                                  \
    "server: {hostname: mta.example.test}\n"                                                  \
    "zones: [az1, az2, az3]\n"                                                                \
    "ips: [{address: 127.0.0.10, zone: az1, pool: p}]\n"                                      \
    "pools: [{name: p}]\n"                                                                    \
    "configuration_sets: [{name: s, pool: p}]\n"                                              \
    "default_configuration_set: s\n"                                                          \
    "submission:\n"

/* Loads BASE + the submission lines in SUB from a scratch file. */
static config *load_sub(const char *sub, char **err)
{
    const char *dir = testlib_tmpdir("limits");
    char *path = util_asprintf("%s/kiln.yaml", dir);
    FILE *f = fopen(path, "w");
    ck_assert(f != NULL);
    fputs(BASE, f);
    fputs(sub, f);
    fclose(f);
    config *c = config_load(path, auth_hash_usable, err);
    free(path);
    testlib_tmpdir_remove(dir);
    return c;
}

static void expect_error(const char *sub, const char *fragment)
{
    char *err = NULL;
    config *c = load_sub(sub, &err);
    ck_assert_msg(c == NULL, "accepted: %s", sub);
    ck_assert_msg(err && strstr(err, fragment), "error for %s: %s (wanted %s)", sub, err, fragment);
    free(err);
}

START_TEST(test_defaults)
{
    char *err = NULL;
    config *c = load_sub("  max_recipients: 50\n", &err);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(c->max_sessions, 0);
    ck_assert_int_eq(c->reserved_sessions, -1);
    ck_assert_int_eq(c->max_sessions_per_client, 50);
    ck_assert_int_eq(c->max_connection_rate_per_client.count, 100);
    ck_assert_int_eq(c->max_connection_rate_per_client.per_ms, 60000);
    ck_assert(!c->limit_trusted_clients);
    ck_assert_int_eq(c->session_deadline_ms, 3600000);
    ck_assert_int_eq(c->min_data_rate, 500);
    ck_assert_int_eq(c->min_data_rate_window_ms, 30000);
    ck_assert_int_eq(c->max_junk_commands, 100);
    config_unref(c);
}
END_TEST

START_TEST(test_values)
{
    char *err = NULL;
    config *c = load_sub("  max_sessions: 300\n  reserved_sessions: 40\n"
                         "  max_sessions_per_client: -1\n"
                         "  max_connection_rate_per_client: 5/s\n  limit_trusted_clients: true\n"
                         "  session_deadline: 10m\n  min_data_rate: 2KB/s\n"
                         "  min_data_rate_window: 45s\n  max_junk_commands: 0\n", &err);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(c->max_sessions, 300);
    ck_assert_int_eq(c->reserved_sessions, 40);
    ck_assert_int_eq(c->max_sessions_per_client, -1);
    ck_assert_int_eq(c->max_connection_rate_per_client.count, 5);
    ck_assert_int_eq(c->max_connection_rate_per_client.per_ms, 1000);
    ck_assert(c->limit_trusted_clients);
    ck_assert_int_eq(c->session_deadline_ms, 600000);
    ck_assert_int_eq(c->min_data_rate, 2048);
    ck_assert_int_eq(c->min_data_rate_window_ms, 45000);
    ck_assert_int_eq(c->max_junk_commands, 0);
    config_unref(c);
    c = load_sub("  max_sessions: auto\n  reserved_sessions: auto\n"
                 "  max_connection_rate_per_client: -1\n  session_deadline: 0s\n"
                 "  min_data_rate: 0\n", &err);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(c->max_sessions, 0);
    ck_assert_int_eq(c->reserved_sessions, -1);
    ck_assert_int_eq(c->max_connection_rate_per_client.count, -1);
    ck_assert_int_eq(c->session_deadline_ms, 0);
    ck_assert_int_eq(c->min_data_rate, 0);
    config_unref(c);
}
END_TEST

START_TEST(test_errors)
{
    expect_error("  max_sessions: 0\n", "submission.max_sessions: ");
    expect_error("  max_sessions: lots\n", "submission.max_sessions: 'lots' is not auto or a whole number");
    expect_error("  reserved_sessions: -2\n", "submission.reserved_sessions: ");
    expect_error("  max_sessions: 10\n  reserved_sessions: 10\n",
                 "submission.reserved_sessions: 10 leaves no session for other clients");
    expect_error("  max_sessions_per_client: 0\n", "submission.max_sessions_per_client: must be -1");
    expect_error("  max_connection_rate_per_client: 10\n",
                 "submission.max_connection_rate_per_client: '10' is not a rate");
    expect_error("  limit_trusted_clients: yes\n", "submission.limit_trusted_clients: ");
    expect_error("  session_deadline: forever\n", "submission.session_deadline: ");
    expect_error("  min_data_rate: fast\n", "submission.min_data_rate: 'fast' is not a transfer rate");
    expect_error("  min_data_rate: -5\n", "submission.min_data_rate: '-5' is not a transfer rate");
    expect_error("  min_data_rate_window: 0s\n", "submission.min_data_rate_window: ");
    expect_error("  max_junk_commands: -2\n", "submission.max_junk_commands: ");
    expect_error("  max_session: 10\n", "max_session");        /* unknown keys stay errors */
}
END_TEST

START_TEST(test_byte_rate_parser)
{
    static const struct { const char *in; int64_t out; } ok[] = {
        {"500", 500}, {"0", 0}, {"2KB", 2048}, {"2KB/s", 2048}, {"1MB/s", 1048576}, {"7/s", 7},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t v = -1;
        ck_assert_msg(config_parse_byte_rate(ok[i].in, &v) == 0, "%s", ok[i].in);
        ck_assert_int_eq(v, ok[i].out);
    }
    static const char *const bad[] = {"", "/s", "-1", "+5", "5/m", "5 /s", "fast", "2KB/s/s", NULL};
    for (size_t i = 0; bad[i]; i++) {
        int64_t v;
        ck_assert_msg(config_parse_byte_rate(bad[i], &v) < 0, "accepted '%s'", bad[i]);
    }
    int64_t v;
    ck_assert(config_parse_byte_rate(NULL, &v) < 0);
}
END_TEST

START_TEST(test_derive)
{
    config *c = testlib_config_new();
    smtp_limits_caps caps;
    char *warn = NULL;
    /* auto: min(1000, nofile - 164), reserved a fifth */
    smtp_limits_derive(c, 1048576, &caps, &warn);
    ck_assert_ptr_null(warn);
    ck_assert_int_eq(caps.max_sessions, 1000);
    ck_assert_int_eq(caps.reserved, 200);
    ck_assert_int_eq(caps.per_client, 50);
    smtp_limits_derive(c, 1024, &caps, &warn);
    ck_assert_ptr_null(warn);
    ck_assert_int_eq(caps.max_sessions, 1024 - 164);
    ck_assert_int_eq(caps.reserved, (1024 - 164) / 5);
    /* too few descriptors: the minimum, with a warning naming the limit */
    smtp_limits_derive(c, 100, &caps, &warn);
    ck_assert_int_eq(caps.max_sessions, SMTP_LIMITS_MIN_SESSIONS);
    ck_assert_ptr_nonnull(warn);
    ck_assert_msg(strstr(warn, "RLIMIT_NOFILE=100"), "%s", warn);
    ck_assert_int_eq(caps.per_client, SMTP_LIMITS_MIN_SESSIONS);
    free(warn);
    /* explicit values above the budget are lowered, with a warning */
    c->max_sessions = 5000;
    c->reserved_sessions = 100;
    smtp_limits_derive(c, 1024, &caps, &warn);
    ck_assert_int_eq(caps.max_sessions, 860);
    ck_assert_int_eq(caps.reserved, 100);
    ck_assert_msg(warn && strstr(warn, "submission.max_sessions 5000"), "%s", warn);
    free(warn);
    c->max_sessions = 2000;
    c->reserved_sessions = 1500;
    smtp_limits_derive(c, 1024, &caps, &warn);
    ck_assert_int_eq(caps.max_sessions, 860);
    ck_assert_int_eq(caps.reserved, 172);
    ck_assert_msg(warn && strstr(warn, "reserved_sessions 1500"), "%s", warn);
    free(warn);
    /* explicit values within the budget stay */
    c->max_sessions = 20;
    c->reserved_sessions = 0;
    c->max_sessions_per_client = -1;
    smtp_limits_derive(c, 1048576, &caps, &warn);
    ck_assert_ptr_null(warn);
    ck_assert_int_eq(caps.max_sessions, 20);
    ck_assert_int_eq(caps.reserved, 0);
    ck_assert_int_eq(caps.per_client, -1);
    config_unref(c);
}
END_TEST

static const config_rate NO_RATE = {-1, 1000};

static smtp_limits_verdict admit(smtp_limits *t, const char *ip, bool priv, bool exempt,
                                 const smtp_limits_caps *caps, const config_rate *rate,
                                 int64_t now, bool *tracked)
{
    return smtp_limits_admit(t, ip, priv, exempt, caps, rate, now, tracked);
}

START_TEST(test_reserved_share)
{
    smtp_limits *t = smtp_limits_new();
    smtp_limits_caps caps = {.max_sessions = 10, .reserved = 4, .per_client = -1};
    bool tr;
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(admit(t, "192.0.2.1", false, false, &caps, &NO_RATE, 0, &tr), SMTP_LIMITS_OK);
    ck_assert_int_eq(admit(t, "192.0.2.2", false, false, &caps, &NO_RATE, 0, &tr), SMTP_LIMITS_RESERVED);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(admit(t, "127.0.0.1", true, true, &caps, &NO_RATE, 0, &tr), SMTP_LIMITS_OK);
    ck_assert(!tr);                                     /* exempt: no per-client entry */
    ck_assert_int_eq(admit(t, "127.0.0.1", true, true, &caps, &NO_RATE, 0, &tr), SMTP_LIMITS_FULL);
    ck_assert_int_eq(smtp_limits_sessions(t), 10);
    ck_assert_int_eq(smtp_limits_unprivileged(t), 6);
    /* an untrusted session authenticates: its untrusted slot is free for another client */
    smtp_limits_promote(t);
    smtp_limits_release(t, "127.0.0.1", true, false);
    ck_assert_int_eq(admit(t, "192.0.2.2", false, false, &caps, &NO_RATE, 0, &tr), SMTP_LIMITS_OK);
    ck_assert(tr);
    ck_assert_int_eq(smtp_limits_unprivileged(t), 6);
    ck_assert_int_eq(smtp_limits_client_sessions(t, "192.0.2.2"), 1);
    smtp_limits_release(t, "192.0.2.2", false, true);
    ck_assert_int_eq(smtp_limits_client_sessions(t, "192.0.2.2"), 0);
    ck_assert_int_eq(smtp_limits_unprivileged(t), 5);
    smtp_limits_free(t);
}
END_TEST

START_TEST(test_per_client_and_exemption)
{
    smtp_limits *t = smtp_limits_new();
    smtp_limits_caps caps = {.max_sessions = 100, .reserved = 0, .per_client = 3};
    bool tr;
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(admit(t, "192.0.2.9", false, false, &caps, &NO_RATE, 0, &tr), SMTP_LIMITS_OK);
    ck_assert_int_eq(admit(t, "192.0.2.9", false, false, &caps, &NO_RATE, 0, &tr), SMTP_LIMITS_PER_CLIENT);
    ck_assert_int_eq(admit(t, "192.0.2.10", false, false, &caps, &NO_RATE, 0, &tr), SMTP_LIMITS_OK);
    /* a trusted, not exempt client (limit_trusted_clients) is limited too */
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(admit(t, "10.0.0.1", true, false, &caps, &NO_RATE, 0, &tr), SMTP_LIMITS_OK);
    ck_assert_int_eq(admit(t, "10.0.0.1", true, false, &caps, &NO_RATE, 0, &tr), SMTP_LIMITS_PER_CLIENT);
    /* exempt: no limit */
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(admit(t, "10.0.0.2", true, true, &caps, &NO_RATE, 0, &tr), SMTP_LIMITS_OK);
    smtp_limits_release(t, "192.0.2.9", false, true);
    ck_assert_int_eq(admit(t, "192.0.2.9", false, false, &caps, &NO_RATE, 0, &tr), SMTP_LIMITS_OK);
    smtp_limits_free(t);
}
END_TEST

START_TEST(test_rate_window)
{
    smtp_limits *t = smtp_limits_new();
    smtp_limits_caps caps = {.max_sessions = 100, .reserved = 0, .per_client = -1};
    config_rate rate = {3, 60000};
    bool tr;
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(admit(t, "192.0.2.5", false, false, &caps, &rate, 1000 + i, &tr), SMTP_LIMITS_OK);
        smtp_limits_release(t, "192.0.2.5", false, tr);
    }
    ck_assert_int_eq(admit(t, "192.0.2.5", false, false, &caps, &rate, 30000, &tr), SMTP_LIMITS_RATE);
    ck_assert_int_eq(admit(t, "192.0.2.6", false, false, &caps, &rate, 30000, &tr), SMTP_LIMITS_OK);
    /* refused attempts count: still refused just before the window ends */
    ck_assert_int_eq(admit(t, "192.0.2.5", false, false, &caps, &rate, 60999, &tr), SMTP_LIMITS_RATE);
    /* a new window */
    ck_assert_int_eq(admit(t, "192.0.2.5", false, false, &caps, &rate, 61000, &tr), SMTP_LIMITS_OK);
    /* exempt clients have no rate */
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(admit(t, "127.0.0.1", true, true, &caps, &rate, 1000, &tr), SMTP_LIMITS_OK);
    smtp_limits_free(t);
}
END_TEST

START_TEST(test_table_is_bounded)
{
    smtp_limits *t = smtp_limits_new();
    smtp_limits_caps caps = {.max_sessions = 1000000, .reserved = 0, .per_client = -1};
    config_rate rate = {10, 60000};
    bool tr;
    char ip[64];
    for (int i = 0; i < SMTP_LIMITS_MAX_CLIENTS; i++) {
        snprintf(ip, sizeof ip, "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        ck_assert_int_eq(admit(t, ip, false, false, &caps, &rate, 0, &tr), SMTP_LIMITS_OK);
        smtp_limits_release(t, ip, false, tr);     /* no session; the rate window lives on */
    }
    ck_assert_int_eq(smtp_limits_clients(t), SMTP_LIMITS_MAX_CLIENTS);
    /* full of live windows: a new client is refused, a known one is not */
    ck_assert_int_eq(admit(t, "192.0.2.77", false, false, &caps, &rate, 1, &tr), SMTP_LIMITS_RATE);
    ck_assert_int_eq(admit(t, "10.0.0.5", false, false, &caps, &rate, 1, &tr), SMTP_LIMITS_OK);
    smtp_limits_release(t, "10.0.0.5", false, tr);
    /* the windows end: stale entries go and new clients get in */
    ck_assert_int_eq(admit(t, "192.0.2.77", false, false, &caps, &rate, 60001, &tr), SMTP_LIMITS_OK);
    ck_assert_int_le(smtp_limits_clients(t), SMTP_LIMITS_MAX_CLIENTS);
    /* refilled with fresh windows, the stale ones are swept as a whole */
    for (int i = 0; i < 100; i++) {
        snprintf(ip, sizeof ip, "172.16.%d.%d", i / 256, i % 256);
        ck_assert_int_eq(admit(t, ip, false, false, &caps, &rate, 60002, &tr), SMTP_LIMITS_OK);
    }
    ck_assert_int_le(smtp_limits_clients(t), SMTP_LIMITS_MAX_CLIENTS);
    smtp_limits_free(t);
}
END_TEST

static Suite *limits_suite(void)
{
    Suite *s = suite_create("smtp_limits");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_values);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_byte_rate_parser);
    suite_add_tcase(s, tc);
    tc = tcase_create("admission");
    tcase_add_test(tc, test_derive);
    tcase_add_test(tc, test_reserved_share);
    tcase_add_test(tc, test_per_client_and_exemption);
    tcase_add_test(tc, test_rate_window);
    tcase_add_test(tc, test_table_is_bounded);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(limits_suite);
