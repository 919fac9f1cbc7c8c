/* test_auth_pool.c — AUTH hardening pieces: the worker pool (mta/auth_pool.c: results come
 * back on the loop, a full queue says no, cancelled jobs never call back), the per-client
 * failure table (mta/auth_fail.c: blocks after max in the window, only that client, expires,
 * stays bounded), AUTH's argument split (auth_split_command), the per-user scope checks and
 * replies (mta/policy.c) and their validation at config load (submission.auth identities /
 * configuration_sets, submission.auth_failures). */
#include <check.h>
#include <crypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "base/config.h"
#include "mta/auth.h"
#include "mta/auth_fail.h"
#include "mta/auth_pool.h"
#include "mta/message.h"
#include "mta/policy.h"
#include "tests/unit/testlib.h"

/* ---- helpers ---- */

/* A SHA-512 crypt hash of password with that many rounds (1000: about 1 ms to check). */
static char *test_hash_rounds(const char *password, unsigned long rounds)
{
    struct crypt_data data;
    memset(&data, 0, sizeof data);
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    ck_assert_ptr_nonnull(crypt_gensalt_rn("$6$", rounds, NULL, 0, salt, sizeof salt));
    const char *h = crypt_rn(password, salt, &data, (int)sizeof data);
    ck_assert_ptr_nonnull(h);
    return strdup(h);
}

static char *test_hash(const char *password)
{
    return test_hash_rounds(password, 1000);
}

typedef struct {
    int calls;
    int oks;
    struct ev_loop *loop;
    int want;
} results;

static void on_result(void *arg, bool ok)
{
    results *r = arg;
    r->calls++;
    if (ok) r->oks++;
    if (r->calls >= r->want) ev_break(r->loop, EVBREAK_ALL);
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void run_until(struct ev_loop *loop, double seconds)
{
    ev_timer t;
    ev_timer_init(&t, on_deadline, seconds, 0);
    ev_timer_start(loop, &t);
    ev_run(loop, 0);
    ev_timer_stop(loop, &t);
}

/* ---- pool ---- */

START_TEST(test_pool_results_on_loop)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    char *h = test_hash("right");
    auth_pool *p = auth_pool_new(loop, 2, 16);
    results r = {.loop = loop, .want = 3};
    ck_assert_ptr_nonnull(auth_pool_submit(p, "right", h, true, on_result, &r));
    ck_assert_ptr_nonnull(auth_pool_submit(p, "wrong", h, true, on_result, &r));
    ck_assert_ptr_nonnull(auth_pool_submit(p, "right", h, false, on_result, &r)); /* decoy */
    run_until(loop, 20);
    ck_assert_int_eq(r.calls, 3);
    ck_assert_int_eq(r.oks, 1);        /* only the real check of the right password */
    auth_pool_free(p);
    free(h);
    ev_loop_destroy(loop);
}
END_TEST

START_TEST(test_pool_full_and_cancel)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    char *h = test_hash("pw");
    /* The first job's check takes about 0.2 s: the one worker is busy with it while the
     * others are submitted (with 1 ms jobs, a main thread descheduled for a few ms on a busy
     * machine let the worker finish some, and more than 5 were accepted). */
    char *slow = test_hash_rounds("pw", 200000);
    auth_pool *p = auth_pool_new(loop, 1, 4);
    results r = {.loop = loop, .want = 1000};
    auth_job *jobs[64];
    size_t n = 0;
    /* One worker may take one job at once: at most 4 wait, so at most 5 are accepted. */
    for (int i = 0; i < 64; i++) {
        auth_job *j = auth_pool_submit(p, "pw", i == 0 ? slow : h, true, on_result, &r);
        if (j) jobs[n++] = j;
    }
    ck_assert_uint_ge(n, 4);
    ck_assert_uint_le(n, 5);
    ck_assert_uint_le(auth_pool_queued(p), 4);
    for (size_t i = 0; i < n; i++) auth_pool_cancel(p, jobs[i]);
    ck_assert_uint_eq(auth_pool_queued(p), 0);
    run_until(loop, 1.0);
    ck_assert_int_eq(r.calls, 0);      /* cancelled jobs never call back */
    /* The queue has room again. */
    r.want = 1;
    ck_assert_ptr_nonnull(auth_pool_submit(p, "pw", h, true, on_result, &r));
    run_until(loop, 20);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.oks, 1);
    auth_pool_free(p);
    free(h);
    free(slow);
    ev_loop_destroy(loop);
}
END_TEST

START_TEST(test_pool_free_with_pending)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    char *h = test_hash("pw");
    auth_pool *p = auth_pool_new(loop, 2, 32);
    results r = {.loop = loop, .want = 1000};
    for (int i = 0; i < 20; i++) ck_assert_ptr_nonnull(auth_pool_submit(p, "pw", h, true, on_result, &r));
    auth_pool_free(p);                 /* no leak, no call back (ASan/LSan in make check) */
    ck_assert_int_eq(r.calls, 0);
    free(h);
    ev_loop_destroy(loop);
}
END_TEST

/* ---- failure table ---- */

START_TEST(test_fail_blocks_one_client)
{
    auth_fail *t = auth_fail_new();
    int64_t w = 300000;
    for (int i = 1; i <= 3; i++) {
        ck_assert(!auth_fail_blocked(t, "127.0.0.2", 3, w, 1000));
        ck_assert_int_eq(auth_fail_record(t, "127.0.0.2", w, 1000 + i), i);
    }
    ck_assert(auth_fail_blocked(t, "127.0.0.2", 3, w, 2000));
    ck_assert(!auth_fail_blocked(t, "127.0.0.3", 3, w, 2000));      /* another client */
    ck_assert(!auth_fail_blocked(t, "127.0.0.2", 4, w, 2000));      /* a higher max */
    ck_assert(!auth_fail_blocked(t, "127.0.0.2", 3, w, 1001 + w));  /* window over */
    ck_assert_int_eq(auth_fail_record(t, "127.0.0.2", w, 1001 + w), 1);   /* new window */
    /* IPv6: one /64 is one client. */
    auth_fail_record(t, "2001:db8:1:2::1", w, 0);
    ck_assert_int_eq(auth_fail_record(t, "2001:db8:1:2:ffff::9", w, 0), 2);
    ck_assert_int_eq(auth_fail_record(t, "2001:db8:1:3::1", w, 0), 1);
    auth_fail_free(t);
}
END_TEST

START_TEST(test_fail_bounded)
{
    auth_fail *t = auth_fail_new();
    char ip[32];
    for (int i = 0; i < AUTH_FAIL_TABLE_MAX + 500; i++) {
        snprintf(ip, sizeof ip, "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        auth_fail_record(t, ip, 1000000, i);
    }
    ck_assert_uint_eq(auth_fail_size(t), AUTH_FAIL_TABLE_MAX);
    /* The newest are still tracked; the oldest windows were evicted. */
    ck_assert(auth_fail_blocked(t, ip, 1, 1000000, AUTH_FAIL_TABLE_MAX + 500));
    ck_assert(!auth_fail_blocked(t, "10.0.0.0", 1, 1000000, AUTH_FAIL_TABLE_MAX + 500));
    /* Expired entries go first. */
    auth_fail_record(t, "192.0.2.1", 10, 5000000);
    ck_assert_uint_le(auth_fail_size(t), AUTH_FAIL_TABLE_MAX);
    auth_fail_free(t);
}
END_TEST

/* ---- AUTH argument ---- */

START_TEST(test_split_command)
{
    char *m = NULL, *ir = NULL;
    ck_assert_int_eq(auth_split_command("PLAIN", &m, &ir), 0);
    ck_assert_str_eq(m, "PLAIN");
    ck_assert_ptr_null(ir);
    free(m);
    ck_assert_int_eq(auth_split_command("PLAIN  AGFwcABzZWNyZXQ=", &m, &ir), 0);
    ck_assert_str_eq(m, "PLAIN");
    ck_assert_str_eq(ir, "AGFwcABzZWNyZXQ=");
    free(m);
    free(ir);
    ck_assert_int_eq(auth_split_command("LOGIN =", &m, &ir), 0);
    ck_assert_str_eq(ir, "");
    free(m);
    free(ir);
    ck_assert_int_eq(auth_split_command("PLAIN ", &m, &ir), -1);
    ck_assert_int_eq(auth_split_command("PLAIN a b", &m, &ir), -1);
}
END_TEST

/* ---- scope ---- */

static config_auth_user scoped_user(char **ids, size_t nids, char **sets, size_t nsets)
{
    config_auth_user u = {.user = "app", .scoped_identities = ids != NULL, .identities = ids,
                          .nidentities = nids, .scoped_sets = sets != NULL,
                          .configuration_sets = sets, .nconfiguration_sets = nsets};
    return u;
}

START_TEST(test_scope_checks)
{
    config *c = testlib_config_new();
    free(c->region);
    c->region = strdup("eu-west-1");
    char *ids[] = {"a.example.test"};
    char *sets[] = {"x"};
    config_auth_user u = scoped_user(ids, 1, sets, 1);
    ck_assert(policy_user_may_send_as(&u, "app@a.example.test"));
    ck_assert(policy_user_may_send_as(&u, "app@sub.a.example.test"));
    ck_assert(!policy_user_may_send_as(&u, "app@b.example.test"));
    ck_assert(policy_user_may_use_set(&u, "x"));
    ck_assert(!policy_user_may_use_set(&u, "y"));
    ck_assert(policy_user_may_send_as(NULL, "anyone@anywhere.test"));   /* no AUTH: no scope */
    config_auth_user all = scoped_user(NULL, 0, NULL, 0);
    ck_assert(policy_user_may_send_as(&all, "x@b.example.test"));
    ck_assert(policy_user_may_use_set(&all, "y"));

    char *r = policy_check_mail_from_scope(c, &u, "123456789012", "ceo@b.example.test");
    ck_assert_str_eq(r, "554 5.7.1 Message rejected: User 'app' is not authorized to perform "
                        "'ses:SendRawEmail' on resource "
                        "'arn:aws:ses:eu-west-1:123456789012:identity/ceo@b.example.test'");
    free(r);
    ck_assert_ptr_null(policy_check_mail_from_scope(c, &u, "123456789012", ""));
    ck_assert_ptr_null(policy_check_mail_from_scope(c, &u, "123456789012", "x@a.example.test"));

    const char msg[] = "From: App <app@a.example.test>\r\nSender: boss@b.example.test\r\n\r\nhi\r\n";
    msg_headers hs;
    message_parse_headers(msg, sizeof msg - 1, &hs);
    r = policy_check_headers_scope(c, &u, "123456789012", &hs);
    ck_assert_ptr_nonnull(r);
    ck_assert_ptr_nonnull(strstr(r, "identity/boss@b.example.test'"));
    free(r);
    ck_assert_ptr_null(policy_check_headers_scope(c, &all, "123456789012", &hs));
    message_headers_free(&hs);

    r = policy_scope_reply(c, "app\r\nX", "123456789012", "configuration-set", "y");
    ck_assert_str_eq(r, "554 5.7.1 Message rejected: User 'app??X' is not authorized to perform "
                        "'ses:SendRawEmail' on resource "
                        "'arn:aws:ses:eu-west-1:123456789012:configuration-set/y'");
    free(r);
    char longname[2000];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    r = policy_scope_reply(c, "app", "123456789012", "identity", longname);
    ck_assert_uint_le(strlen(r), 510);
    free(r);
    config_unref(c);
}
END_TEST

/* ---- config ---- */

static char *write_config(const char *body)
{
    const char *dir = testlib_tmpdir("auth_scope");
    char *path = NULL;
    ck_assert_int_ne(asprintf(&path, "%s/kiln.yaml", dir), -1);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(body, f);
    fclose(f);
    return path;
}

#define CFG_HEAD                                                                              \
    "server: {hostname: mta.example.test}\n"                                                 \
    "zones: [az1]\n"                                                                          \
    "pools: [{name: p, scaling: standard}]\n"                                                 \
    "ips: [{address: 127.0.0.10, zone: az1, pool: p}]\n"                                      \
    "configuration_sets:\n"                                                                   \
    "  - {name: x, pool: p}\n"                                                                \
    "  - {name: y, pool: p}\n"                                                                \
    "default_configuration_set: x\n"                                                          \
    "account: {identities: [a.example.test, ops@b.example.test]}\n"

#define HASH "$6$abcdefgh$D7W7qyozKBT.t6FD3DVYHvADbIO0eSyI4.p20LaEUjro8PqTGYYo/EQcuNjhFbzo9Yg5ir1KIEqFY/yJpgFph0"

START_TEST(test_config_scope_ok)
{
    char *path = write_config(CFG_HEAD
                              "submission:\n"
                              "  auth_failures: {max: 3, window: 90s}\n"
                              "  auth:\n"
                              "    - {user: a, password_hash: \"" HASH "\",\n"
                              "       identities: [sub.a.example.test, ops@b.example.test],\n"
                              "       configuration_sets: [y]}\n"
                              "    - {user: b, password_hash: \"" HASH "\"}\n");
    char *err = NULL;
    config *c = config_load(path, NULL, &err);
    ck_assert_msg(c != NULL, "%s", err ? err : "");
    ck_assert_int_eq(c->auth_failures_max, 3);
    ck_assert_int_eq(c->auth_failures_window_ms, 90000);
    ck_assert(c->auth[0].scoped_identities);
    ck_assert_uint_eq(c->auth[0].nidentities, 2);
    ck_assert_str_eq(c->auth[0].configuration_sets[0], "y");
    ck_assert(!c->auth[1].scoped_identities);
    ck_assert(!c->auth[1].scoped_sets);
    config_unref(c);
    free(path);
    path = write_config(CFG_HEAD);
    c = config_load(path, NULL, &err);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(c->auth_failures_max, 10);          /* defaults */
    ck_assert_int_eq(c->auth_failures_window_ms, 300000);
    config_unref(c);
    free(path);
}
END_TEST

START_TEST(test_config_scope_errors)
{
    char *path = write_config(CFG_HEAD
                              "submission:\n"
                              "  auth:\n"
                              "    - user: a\n"
                              "      password_hash: \"" HASH "\"\n"
                              "      identities: [a.example.test, other.test]\n");
    char *err = NULL;
    ck_assert_ptr_null(config_load(path, NULL, &err));
    ck_assert_msg(strstr(err, "kiln.yaml:14: submission.auth[0].identities[1]: 'other.test' is "
                              "not one of account.identities") != NULL, "%s", err);
    free(err);
    free(path);
    path = write_config(CFG_HEAD
                        "submission:\n"
                        "  auth:\n"
                        "    - user: a\n"
                        "      password_hash: \"" HASH "\"\n"
                        "      configuration_sets:\n"
                        "        - x\n"
                        "        - nope\n");
    ck_assert_ptr_null(config_load(path, NULL, &err));
    ck_assert_msg(strstr(err, "kiln.yaml:16: submission.auth[0].configuration_sets[1]: unknown "
                              "configuration set 'nope'") != NULL, "%s", err);
    free(err);
    free(path);
    path = write_config(CFG_HEAD "submission: {auth_failures: {max: 0}}\n");
    ck_assert_ptr_null(config_load(path, NULL, &err));
    ck_assert_msg(strstr(err, "submission.auth_failures.max") != NULL, "%s", err);
    free(err);
    free(path);
}
END_TEST

START_TEST(test_full_example_documents_the_keys)
{
    char *err = NULL;
    config *c = config_load(KILN_SRCDIR "/conf/examples/full.yaml", NULL, &err);
    ck_assert_msg(c != NULL, "%s", err ? err : "");
    ck_assert_int_eq(c->auth_failures_max, 10);
    ck_assert_int_eq(c->auth_failures_window_ms, 300000);
    ck_assert(c->auth[0].scoped_identities);
    ck_assert(c->auth[0].scoped_sets);
    ck_assert_uint_eq(c->auth[0].nconfiguration_sets, 2);
    config_unref(c);
}
END_TEST

static Suite *auth_pool_suite(void)
{
    Suite *s = suite_create("auth_pool");
    TCase *p = tcase_create("pool");
    tcase_set_timeout(p, 60);
    tcase_add_test(p, test_pool_results_on_loop);
    tcase_add_test(p, test_pool_full_and_cancel);
    tcase_add_test(p, test_pool_free_with_pending);
    suite_add_tcase(s, p);
    TCase *f = tcase_create("failures");
    tcase_add_test(f, test_fail_blocks_one_client);
    tcase_add_test(f, test_fail_bounded);
    suite_add_tcase(s, f);
    TCase *sc = tcase_create("scope");
    tcase_add_test(sc, test_split_command);
    tcase_add_test(sc, test_scope_checks);
    tcase_add_test(sc, test_config_scope_ok);
    tcase_add_test(sc, test_config_scope_errors);
    tcase_add_test(sc, test_full_example_documents_the_keys);
    suite_add_tcase(s, sc);
    return s;
}

TESTLIB_SUITES(auth_pool_suite);
