/* test_spool_keep.c — unit tests of the spool's kept writes (store/spool_keep.c and the
 * writer's wait after a failed batch, store/spool_writer.c), with spool_test_fail_batches
 * standing for a full disk: a failed batch drops its ordinary writes (their callbacks get
 * ok=false) and carries its kept ones, in order, ahead of what was written since, their
 * callbacks waiting until they are committed; a kept kv value or suppression entry stays
 * visible meanwhile; each kept write lands once; a kept write that fails by itself is
 * dropped (the spool does not stall on it); closing while the disk stays full gives the kept
 * writes up and tells their callbacks. */
#include <check.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "store/spool.h"
#include "tests/unit/testlib.h"

static const char *base_dir;

static void base_setup(void)
{
    base_dir = testlib_tmpdir("keep");
}

static void base_teardown(void)
{
    testlib_tmpdir_remove(base_dir);
}

typedef struct texts {
    char v[16][64];
    size_t n;
} texts;

static void collect_event(void *arg, int64_t id, const char *set, const char *json)
{
    (void)id, (void)set;
    texts *t = arg;
    ck_assert_uint_lt(t->n, 16);
    snprintf(t->v[t->n++], sizeof t->v[0], "%s", json);
}

static texts events_of(spool *sp)
{
    texts t;
    memset(&t, 0, sizeof t);
    ck_assert_int_eq(spool_each_event(sp, 0, 16, collect_event, &t), 0);
    return t;
}

static char *kv(spool *sp, const char *key)
{
    char *v = NULL;
    ck_assert_int_eq(spool_kv_get(sp, key, &v), 0);
    return v;
}

static void assert_kv(spool *sp, const char *key, const char *want)
{
    char *v = kv(sp, key);
    if (!want) ck_assert_ptr_null(v);
    else ck_assert_msg(v && strcmp(v, want) == 0, "%s = %s, want %s", key, v ? v : "(none)", want);
    free(v);
}

START_TEST(test_kept_writes_survive_failed_batches)
{
    char *dir = testlib_subdir(base_dir, "s-");
    spool *sp = testlib_spool_open(dir, false);
    testlib_commit_log log = {0};
    testlib_commit_slot s[4] = {{&log, 0}, {&log, 1}, {&log, 2}, {&log, 3}};

    /* one batch: a submission (ordinary writes) and an outcome (kept writes) */
    testlib_spool_add(sp, "submitted", "txn", 0, 1);
    ck_assert_int_eq(spool_add_event(sp, "txn", "send-event"), 0);
    spool_on_commit(sp, testlib_on_commit, &s[0]);
    spool_keep_begin(sp);
    ck_assert_int_eq(spool_add_event(sp, "txn", "delivery-event"), 0);
    ck_assert_int_eq(spool_kv_put(sp, "k", "kept"), 0);
    ck_assert_int_eq(spool_suppression_put(sp, "Gone@x.test", "BOUNCE", 5), 0);
    spool_on_commit(sp, testlib_on_commit, &s[1]);
    spool_keep_end(sp);

    /* the first fails; the second (the carried writes, handed over at once) and the third
     * (the carried writes and "newer" below) fail too */
    spool_test_fail_batches(sp, 3, SQLITE_FULL);
    ck_assert_int_eq(spool_flush(sp), -1);
    /* the submission is told, the outcome waits */
    ck_assert_uint_eq(log.n, 1);
    ck_assert_int_eq(log.order[0], 0);
    ck_assert(!log.ok[0]);
    ck_assert_msg(strstr(log.err[0], "database or disk is full"), "error: %s", log.err[0]);
    ck_assert_uint_eq(spool_kept_waiting(sp), 3);
    ck_assert_uint_eq(spool_failures(sp), 1);
    ck_assert(spool_has_pending(sp));
    /* nothing committed, but the loop still sees its kept values */
    ck_assert_uint_eq(events_of(sp).n, 0);
    assert_kv(sp, "k", "kept");
    bool found = false;
    ck_assert_int_eq(spool_suppression_get(sp, "gone@x.test", &found, NULL, NULL), 0);
    ck_assert(found);

    /* written since: after the kept writes, so this value wins */
    ck_assert_int_eq(spool_kv_put(sp, "k", "newer"), 0);
    spool_on_commit(sp, testlib_on_commit, &s[2]);
    ck_assert_int_eq(spool_flush(sp), -1);   /* the second and third failures */
    ck_assert_uint_eq(log.n, 2);
    ck_assert_int_eq(log.order[1], 2);   /* an ordinary callback: told at once */
    ck_assert(!log.ok[1]);
    ck_assert_uint_eq(spool_failures(sp), 3);
    ck_assert_uint_eq(spool_kept_waiting(sp), 3);
    assert_kv(sp, "k", "kept");   /* "newer" was dropped with its batch */

    ck_assert_int_eq(spool_kv_put(sp, "k", "newest"), 0);
    spool_on_commit(sp, testlib_on_commit, &s[3]);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_uint_eq(log.n, 4);
    ck_assert_int_eq(log.order[2], 1);   /* the kept callback, once its writes are in */
    ck_assert(log.ok[2]);
    ck_assert_int_eq(log.order[3], 3);
    ck_assert(log.ok[3]);
    ck_assert_uint_eq(spool_kept_waiting(sp), 0);
    ck_assert_uint_eq(spool_failures(sp), 0);
    ck_assert(!spool_has_pending(sp));

    /* each kept write once, nothing of the failed submission */
    texts t = events_of(sp);
    ck_assert_uint_eq(t.n, 1);
    ck_assert_str_eq(t.v[0], "delivery-event");
    ck_assert(!testlib_spool_has(sp, "submitted"));
    assert_kv(sp, "k", "newest");
    spool_close(sp);

    sp = testlib_spool_open(dir, false);
    ck_assert_int_eq(spool_suppression_get(sp, "gone@x.test", &found, NULL, NULL), 0);
    ck_assert(found);
    ck_assert_uint_eq(events_of(sp).n, 1);
    assert_kv(sp, "k", "newest");
    spool_close(sp);
    free(dir);
}
END_TEST

/* A kept write that fails by itself (an update of a recipient that does not exist) would
 * fail every batch again: it is dropped, the error says so, the other kept writes land. */
START_TEST(test_kept_write_failing_by_itself_is_dropped)
{
    char *dir = testlib_subdir(base_dir, "d-");
    spool *sp = testlib_spool_open(dir, false);
    testlib_commit_log log = {0};
    testlib_commit_slot s = {&log, 0};
    spool_keep_begin(sp);
    ck_assert_int_eq(spool_kv_put(sp, "a", "1"), 0);
    ck_assert_int_eq(spool_update_rcpt(sp, 987654, SPOOL_RCPT_DELIVERED, 1, 0, "250"), 0);
    ck_assert_int_eq(spool_add_event(sp, "txn", "after"), 0);
    spool_on_commit(sp, testlib_on_commit, &s);
    spool_keep_end(sp);
    ck_assert_int_eq(spool_flush(sp), -1);
    ck_assert_msg(strstr(spool_errmsg(sp), "987654") && strstr(spool_errmsg(sp), "dropped"),
                  "error: %s", spool_errmsg(sp));
    ck_assert_uint_eq(log.n, 0);
    ck_assert_uint_eq(spool_kept_waiting(sp), 2);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_uint_eq(log.n, 1);
    ck_assert(log.ok[0]);
    assert_kv(sp, "a", "1");
    texts t = events_of(sp);
    ck_assert_uint_eq(t.n, 1);
    ck_assert_str_eq(t.v[0], "after");
    spool_close(sp);
    free(dir);
}
END_TEST

/* The disk never comes back: spool_close tries a few more times, then gives the kept
 * writes up and tells their callbacks (ok=false), within a second or so, not forever. */
START_TEST(test_close_gives_kept_writes_up)
{
    char *dir = testlib_subdir(base_dir, "c-");
    spool *sp = testlib_spool_open(dir, false);
    testlib_commit_log log = {0};
    testlib_commit_slot s = {&log, 0};
    spool_test_fail_batches(sp, 1000, SQLITE_IOERR);
    spool_keep_begin(sp);
    ck_assert_int_eq(spool_kv_put(sp, "k", "lost"), 0);
    spool_on_commit(sp, testlib_on_commit, &s);
    spool_keep_end(sp);
    ck_assert_int_eq(spool_flush(sp), -1);
    ck_assert_uint_eq(log.n, 0);
    spool_close(sp);
    ck_assert_uint_eq(log.n, 1);
    ck_assert(!log.ok[0]);
    ck_assert_msg(strstr(log.err[0], "closed"), "error: %s", log.err[0]);
    sp = testlib_spool_open(dir, false);
    assert_kv(sp, "k", NULL);
    spool_close(sp);
    free(dir);
}
END_TEST

static Suite *keep_suite(void)
{
    Suite *s = suite_create("spool_keep");
    TCase *tc = tcase_create("keep");
    tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_kept_writes_survive_failed_batches);
    tcase_add_test(tc, test_kept_write_failing_by_itself_is_dropped);
    tcase_add_test(tc, test_close_gives_kept_writes_up);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(keep_suite);
