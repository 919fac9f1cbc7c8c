/* test_spool_pipeline.c — unit tests of the spool's commit pipeline (store/spool_write.c,
 * store/spool_writer.c): a batch commits on the writer thread while the next one fills, the
 * wake function says when, spool_reap runs the callbacks in order without blocking; a
 * COMMIT that fails on the writer (a deferred constraint) rolls the whole batch back and
 * reports ok=false with the error to every callback, the loop goes on and the next batch
 * commits; a batch built on a failed one fails the same way; reads see only what is
 * committed, except kv values and suppression entries, which read back the loop's own
 * writes at once (and fall back to the database when their batch fails); recipient ids are
 * given out at once and never reused, also across a failed batch and a restart; a body
 * handed over with spool_add_message_take is stored byte for byte, small or large. */
#include <check.h>
#include <sched.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/util.h"
#include "store/spool.h"
#include "tests/unit/testlib.h"

static const char *base_dir;

static void base_setup(void)
{
    base_dir = testlib_tmpdir("pipe");
}

static void base_teardown(void)
{
    testlib_tmpdir_remove(base_dir);
}

static void count_row(void *arg, const spool_rcpt *r)
{
    (void)r;
    (*(size_t *)arg)++;
}

static size_t pending_count(spool *sp)
{
    size_t n = 0;
    ck_assert_int_eq(spool_each_pending_rcpt(sp, NULL, count_row, &n), 0);
    return n;
}

static void count_event(void *arg, int64_t id, const char *set, const char *json)
{
    (void)id, (void)set, (void)json;
    (*(size_t *)arg)++;
}

static size_t event_count(spool *sp)
{
    size_t n = 0;
    ck_assert_int_eq(spool_each_event(sp, 0, 1000, count_event, &n), 0);
    return n;
}

/* The wake function runs on the writer thread: it only counts. */
static atomic_int wakes;

static void on_wake(void *arg)
{
    (void)arg;
    atomic_fetch_add(&wakes, 1);
}

/* Waits (at most 10 s) until the writer woke us want times. */
static void wait_wakes(int want)
{
    struct timespec ts = {0, 1000 * 1000};
    for (int i = 0; i < 10000 && atomic_load(&wakes) < want; i++) nanosleep(&ts, NULL);
    ck_assert_int_ge(atomic_load(&wakes), want);
}

START_TEST(test_next_batch_fills_while_one_commits)
{
    char *dir = testlib_subdir(base_dir, "s-");
    spool *sp = testlib_spool_open(dir, true);
    atomic_store(&wakes, 0);
    spool_set_wake(sp, on_wake, NULL);
    testlib_commit_log log = {0};
    testlib_commit_slot a = {&log, 1}, b = {&log, 2};

    testlib_spool_add(sp, "first", "txn", 0, 1);
    spool_on_commit(sp, testlib_on_commit, &a);
    spool_submit(sp);                    /* handed to the writer, not waited for */
    ck_assert(spool_has_pending(sp));
    testlib_spool_add(sp, "second", "txn", 0, 1);               /* fills the next batch meanwhile */
    spool_on_commit(sp, testlib_on_commit, &b);
    spool_submit(sp);                    /* the writer is busy (or done, not reaped): kept */
    ck_assert_uint_eq(log.n, 0);         /* callbacks run only from spool_reap */

    wait_wakes(1);
    ck_assert_int_eq(spool_reap(sp), 0);
    ck_assert_uint_eq(log.n, 1);
    ck_assert_int_eq(log.order[0], 1);
    ck_assert(log.ok[0]);
    ck_assert(testlib_spool_has(sp, "first"));
    ck_assert(spool_has_pending(sp));    /* "second" was handed over by the reap */

    wait_wakes(2);
    ck_assert_int_eq(spool_reap(sp), 0);
    ck_assert_uint_eq(log.n, 2);
    ck_assert_int_eq(log.order[1], 2);
    ck_assert(log.ok[1]);
    ck_assert(testlib_spool_has(sp, "second"));
    ck_assert(!spool_has_pending(sp));
    ck_assert_int_eq(spool_reap(sp), 0); /* nothing finished: nothing runs */
    ck_assert_uint_eq(log.n, 2);
    ck_assert_int_eq(atomic_load(&wakes), 2);
    spool_close(sp);
    free(dir);
}
END_TEST

/* Installs, through a connection of the test's own, a trap on the spool: an event with the
 * text "commit-fail" makes the writer's COMMIT fail (a deferred foreign key that has no
 * parent row), after every statement of the batch succeeded. */
static void install_commit_trap(const char *dir)
{
    char *db = util_asprintf("%s/kiln.db", dir);
    sqlite3 *h = NULL;
    ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(h,
                          "CREATE TABLE trap_parent (id INTEGER PRIMARY KEY);"
                          "CREATE TABLE trap_child (p INTEGER REFERENCES trap_parent(id)"
                          " DEFERRABLE INITIALLY DEFERRED);"
                          "CREATE TRIGGER trap AFTER INSERT ON events"
                          " WHEN new.json = 'commit-fail'"
                          " BEGIN INSERT INTO trap_child VALUES (42); END;",
                          NULL, NULL, &msg);
    ck_assert_msg(rc == SQLITE_OK, "installing the trap: %s", msg ? msg : "?");
    sqlite3_close(h);
    free(db);
}

START_TEST(test_failed_commit_rolls_back_and_reports)
{
    char *dir = testlib_subdir(base_dir, "s-");
    spool *sp = testlib_spool_open(dir, true);
    install_commit_trap(dir);
    testlib_commit_log log = {0};
    testlib_commit_slot s[4] = {{&log, 0}, {&log, 1}, {&log, 2}, {&log, 3}};

    /* one batch: a message with a recipient, a suppression entry, a kv value, events */
    testlib_spool_add(sp, "doomed", "txn", 0, 1);
    int64_t rid = 0;
    ck_assert_int_eq(spool_add_rcpt(sp, "doomed", "r@x.test", SPOOL_RCPT_QUEUED, &rid), 0);
    ck_assert_int_eq(spool_suppression_put(sp, "gone@x.test", "BOUNCE", 5), 0);
    ck_assert_int_eq(spool_kv_put(sp, "k", "doomed-value"), 0);
    ck_assert_int_eq(spool_add_event(sp, "txn", "{\"eventType\":\"Send\"}"), 0);
    spool_on_commit(sp, testlib_on_commit, &s[0]);
    ck_assert_int_eq(spool_add_event(sp, "txn", "commit-fail"), 0);
    spool_on_commit(sp, testlib_on_commit, &s[1]);
    /* the loop reads its own kv and suppression writes before the commit */
    char *v = NULL;
    ck_assert_int_eq(spool_kv_get(sp, "k", &v), 0);
    ck_assert_str_eq(v, "doomed-value");
    free(v);
    bool found = false;
    ck_assert_int_eq(spool_suppression_get(sp, "GONE@x.test", &found, NULL, NULL), 0);
    ck_assert(found);
    spool_submit(sp);
    /* a batch built on the failed one: an update of a recipient that will not exist */
    ck_assert_int_eq(spool_update_rcpt(sp, rid, SPOOL_RCPT_DELIVERED, 1, 0, "250"), 0);
    spool_on_commit(sp, testlib_on_commit, &s[2]);

    ck_assert_int_eq(spool_flush(sp), -1);
    ck_assert_uint_eq(log.n, 3);
    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_eq(log.order[i], (int)i);
        ck_assert(!log.ok[i]);
    }
    ck_assert_msg(strstr(log.err[0], "FOREIGN KEY") && strstr(log.err[0], "commit") &&
                  strstr(log.err[0], dir), "error text: %s", log.err[0]);
    ck_assert_str_eq(log.err[1], log.err[0]);
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)rid);
    ck_assert_msg(strstr(log.err[2], "no such recipient") && strstr(log.err[2], key),
                  "error text: %s", log.err[2]);
    ck_assert_ptr_nonnull(strstr(spool_errmsg(sp), "no such recipient"));

    /* nothing of the failed batch is visible, also not through the overlays */
    ck_assert(!testlib_spool_has(sp, "doomed"));
    ck_assert_uint_eq(pending_count(sp), 0);
    ck_assert_uint_eq(event_count(sp), 0);
    ck_assert_int_eq(spool_kv_get(sp, "k", &v), 0);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(spool_suppression_get(sp, "gone@x.test", &found, NULL, NULL), 0);
    ck_assert(!found);
    ck_assert(!spool_has_pending(sp));

    /* the next batch commits; its new recipient id comes after the lost one */
    testlib_spool_add(sp, "fine", "txn", 0, 1);
    int64_t rid2 = 0;
    ck_assert_int_eq(spool_add_rcpt(sp, "fine", "r@x.test", SPOOL_RCPT_QUEUED, &rid2), 0);
    ck_assert_int_gt(rid2, rid);
    ck_assert_int_eq(spool_kv_put(sp, "k", "fine-value"), 0);
    spool_on_commit(sp, testlib_on_commit, &s[3]);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_uint_eq(log.n, 4);
    ck_assert(log.ok[3]);
    ck_assert(testlib_spool_has(sp, "fine"));
    ck_assert_uint_eq(pending_count(sp), 1);
    spool_close(sp);

    sp = testlib_spool_open(dir, true);
    ck_assert(testlib_spool_has(sp, "fine"));
    ck_assert(!testlib_spool_has(sp, "doomed"));
    ck_assert_int_eq(spool_kv_get(sp, "k", &v), 0);
    ck_assert_str_eq(v, "fine-value");
    free(v);
    spool_close(sp);
    free(dir);
}
END_TEST

START_TEST(test_reads_see_committed_and_own_values)
{
    char *dir = testlib_subdir(base_dir, "s-");
    spool *sp = testlib_spool_open(dir, true);
    ck_assert_int_eq(spool_kv_put(sp, "k", "one"), 0);
    ck_assert_int_eq(spool_suppression_put(sp, "a@x.test", "BOUNCE", 10), 0);
    ck_assert_int_eq(spool_flush(sp), 0);

    /* a recipient and an event are not read before their commit */
    testlib_spool_add(sp, "m", "txn", 0, 1);
    ck_assert_int_eq(spool_add_rcpt(sp, "m", "r@x.test", SPOOL_RCPT_QUEUED, NULL), 0);
    ck_assert_int_eq(spool_add_event(sp, "txn", "{}"), 0);
    ck_assert(!testlib_spool_has(sp, "m"));
    ck_assert_uint_eq(pending_count(sp), 0);
    ck_assert_uint_eq(event_count(sp), 0);
    int64_t q = -1, d = -1;
    ck_assert_int_eq(spool_count_rcpts(sp, &q, &d), 0);
    ck_assert_int_eq(q, 0);

    /* kv values and suppression entries read back at once, the last write winning */
    ck_assert_int_eq(spool_kv_put(sp, "k", "two"), 0);
    ck_assert_int_eq(spool_kv_put(sp, "k", "three"), 0);
    char *v = NULL;
    ck_assert_int_eq(spool_kv_get(sp, "k", &v), 0);
    ck_assert_str_eq(v, "three");
    free(v);
    bool existed = false, found = true;
    char *reason = NULL;
    int64_t at = 0;
    ck_assert_int_eq(spool_suppression_delete(sp, "A@x.test", &existed), 0);
    ck_assert(existed);                        /* committed, not deleted yet */
    ck_assert_int_eq(spool_suppression_get(sp, "a@x.test", &found, &reason, &at), 0);
    ck_assert(!found);
    ck_assert_ptr_null(reason);
    ck_assert_int_eq(spool_suppression_delete(sp, "a@x.test", &existed), 0);
    ck_assert(!existed);                       /* its delete is pending */
    ck_assert_int_eq(spool_suppression_put(sp, "b@x.test", "COMPLAINT", 20), 0);
    ck_assert_int_eq(spool_suppression_delete(sp, "b@x.test", &existed), 0);
    ck_assert(existed);                        /* its put is pending */
    ck_assert_int_eq(spool_suppression_put(sp, "b@x.test", "BOUNCE", 30), 0);
    ck_assert_int_eq(spool_suppression_get(sp, "B@X.test", &found, &reason, &at), 0);
    ck_assert(found);
    ck_assert_str_eq(reason, "BOUNCE");
    ck_assert_int_eq(at, 30);
    free(reason);

    /* the batch hands over; a later write of the same key survives the first reap */
    spool_submit(sp);
    ck_assert_int_eq(spool_kv_put(sp, "k", "four"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert(testlib_spool_has(sp, "m"));
    ck_assert_uint_eq(pending_count(sp), 1);
    ck_assert_uint_eq(event_count(sp), 1);
    ck_assert_int_eq(spool_kv_get(sp, "k", &v), 0);
    ck_assert_str_eq(v, "four");
    free(v);
    spool_close(sp);

    /* and the database agrees */
    sp = testlib_spool_open(dir, true);
    ck_assert_int_eq(spool_kv_get(sp, "k", &v), 0);
    ck_assert_str_eq(v, "four");
    free(v);
    ck_assert_int_eq(spool_suppression_get(sp, "a@x.test", &found, NULL, NULL), 0);
    ck_assert(!found);
    ck_assert_int_eq(spool_suppression_get(sp, "b@x.test", &found, &reason, &at), 0);
    ck_assert(found);
    ck_assert_str_eq(reason, "BOUNCE");
    free(reason);
    spool_close(sp);
    free(dir);
}
END_TEST

START_TEST(test_rcpt_ids_never_reused)
{
    char *dir = testlib_subdir(base_dir, "s-");
    spool *sp = testlib_spool_open(dir, true);
    testlib_spool_add(sp, "m", "txn", 0, 1);
    int64_t r1, r2;
    ck_assert_int_eq(spool_add_rcpt(sp, "m", "a@x.test", SPOOL_RCPT_QUEUED, &r1), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "m", "b@x.test", SPOOL_RCPT_QUEUED, &r2), 0);
    ck_assert_int_gt(r1, 0);
    ck_assert_int_eq(r2, r1 + 1);
    ck_assert_int_eq(spool_flush(sp), 0);
    /* the rows carry the ids handed out */
    ck_assert_int_eq(spool_update_rcpt(sp, r2, SPOOL_RCPT_DELIVERED, 1, 0, "250"), 0);
    ck_assert_int_eq(spool_update_rcpt(sp, r1, SPOOL_RCPT_BOUNCED, 1, 0, "550"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert(!testlib_spool_has(sp, "m"));           /* both final: message and rows deleted */
    spool_close(sp);

    sp = testlib_spool_open(dir, true);
    testlib_spool_add(sp, "n", "txn", 0, 1);
    int64_t r3;
    ck_assert_int_eq(spool_add_rcpt(sp, "n", "c@x.test", SPOOL_RCPT_QUEUED, &r3), 0);
    ck_assert_int_gt(r3, r2);                  /* after the deleted ones */
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_uint_eq(pending_count(sp), 1);
    spool_close(sp);
    free(dir);
}
END_TEST

START_TEST(test_take_stores_body_without_copy)
{
    char *dir = testlib_subdir(base_dir, "s-");
    spool *sp = testlib_spool_open(dir, true);
    size_t sizes[] = {0, 23, 64 * 1024 - 1, 64 * 1024, 300 * 1024};
    char id[32];
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        char *body = util_malloc(sizes[k] + 1);
        for (size_t i = 0; i < sizes[k]; i++) body[i] = (char)('a' + (i * 7 + k) % 26);
        spool_message m = {.created_ms = 1, .config_set = "txn", .mail_from = "",
                           .client_ip = "192.0.2.1", .mail_json = "{}", .data = body,
                           .data_len = sizes[k]};
        snprintf(m.id, sizeof m.id, "take-%zu", k);
        ck_assert_int_eq(spool_add_message_take(sp, &m), 0);   /* body is the spool's now */
        char *ev = util_strdup("{\"eventType\":\"Send\"}");
        ck_assert_int_eq(spool_add_event_take(sp, "txn", ev), 0);
    }
    ck_assert_int_eq(spool_flush(sp), 0);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        snprintf(id, sizeof id, "take-%zu", k);
        spool_loaded l;
        ck_assert_int_eq(spool_load_message(sp, id, &l), 0);
        ck_assert_uint_eq(l.data_len, sizes[k]);
        for (size_t i = 0; i < sizes[k]; i++)
            ck_assert_msg(l.data[i] == (char)('a' + (i * 7 + k) % 26), "%s byte %zu", id, i);
        spool_loaded_free(&l);
    }
    ck_assert_uint_eq(event_count(sp), sizeof sizes / sizeof sizes[0]);
    /* a taken body of a batch that is never committed is freed at close (ASan: no leak) */
    char *body = util_strdup("x");
    spool_message m = {.created_ms = 1, .config_set = "txn", .data = body, .data_len = 1};
    snprintf(m.id, sizeof m.id, "take-%zu", (size_t)0);   /* a duplicate: the batch fails */
    ck_assert_int_eq(spool_add_message_take(sp, &m), 0);
    ck_assert_int_eq(spool_flush(sp), -1);
    spool_close(sp);
    free(dir);
}
END_TEST

static Suite *pipeline_suite(void)
{
    Suite *s = suite_create("spool_pipeline");
    TCase *tc = tcase_create("pipeline");
    tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_next_batch_fills_while_one_commits);
    tcase_add_test(tc, test_failed_commit_rolls_back_and_reports);
    tcase_add_test(tc, test_reads_see_committed_and_own_values);
    tcase_add_test(tc, test_rcpt_ids_never_reused);
    tcase_add_test(tc, test_take_stores_body_without_copy);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(pipeline_suite);
