/* test_spool_counts.c — the spool's maintained counts of pending recipients
 * (store/spool_counts.c), as kilnctl status reads them through spool_count_rcpts, and the
 * counts per set and domain of spool_count_by and of a read-only spool_reader (kilnctl
 * queue): after a long random mix of accepted messages, deferrals, deliveries, bounces and
 * failed (rolled back) batches they equal a full count of the recipients made by a separate
 * connection; the spool's reads count what is committed (the filling batch shows after its
 * commit); groups that empty disappear; and a spool written before the counts existed (or with part
 * of them missing, or wrong) gets them at open, filled from the recipients already there. */
#include <check.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "store/spool.h"
#include "tests/unit/testlib.h"

#define MAX_GROUPS 64

static const char *base_dir;

static void base_setup(void) { base_dir = testlib_tmpdir("counts"); }
static void base_teardown(void) { testlib_tmpdir_remove(base_dir); }

static void add_msg(spool *sp, const char *id, const char *set)
{
    static const char body[] = "Subject: hi\r\n\r\nhello\r\n";
    spool_message m = {
        .created_ms = util_wall_ms(),
        .config_set = set,
        .mail_from = "sender@example.test",
        .client_ip = "192.0.2.7",
        .mail_json = "{}",
        .data = body,
        .data_len = sizeof body - 1,
    };
    snprintf(m.id, sizeof m.id, "%s", id);
    ck_assert_int_eq(spool_add_message(sp, &m), 0);
}

/* ---- groups: (set, domain, state) -> count ---- */

typedef struct groups {
    size_t n;
    char set[MAX_GROUPS][16];
    char domain[MAX_GROUPS][32];
    int state[MAX_GROUPS];
    int64_t count[MAX_GROUPS];
} groups;

static void groups_add(groups *g, const char *set, const char *domain, int state, int64_t n)
{
    ck_assert_uint_lt(g->n, MAX_GROUPS);
    snprintf(g->set[g->n], sizeof g->set[0], "%s", set);
    snprintf(g->domain[g->n], sizeof g->domain[0], "%s", domain);
    g->state[g->n] = state;
    g->count[g->n] = n;
    g->n++;
}

static void collect(void *arg, const char *set, const char *domain, spool_rcpt_state st,
                    int64_t n)
{
    groups_add(arg, set, domain, (int)st, n);
}

/* What a full count of the committed recipients gives, read by a connection of its own. */
static void oracle(const char *dir, groups *g, int64_t *queued, int64_t *deferred)
{
    char *db = util_asprintf("%s/kiln.db", dir);
    sqlite3 *h = NULL;
    ck_assert_int_eq(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(h,
                         "SELECT m.config_set, r.domain, r.state, count(*) FROM recipients r"
                         " JOIN messages m ON m.id = r.msg_id WHERE r.state IN (0, 1)"
                         " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", -1, &st, NULL), SQLITE_OK);
    memset(g, 0, sizeof *g);
    *queued = *deferred = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int state = sqlite3_column_int(st, 2);
        int64_t n = sqlite3_column_int64(st, 3);
        groups_add(g, (const char *)sqlite3_column_text(st, 0),
                   (const char *)sqlite3_column_text(st, 1), state, n);
        if (state == 0) *queued += n;
        else *deferred += n;
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    free(db);
}

static void assert_groups(const groups *got, const groups *want)
{
    ck_assert_uint_eq(got->n, want->n);
    for (size_t i = 0; i < got->n; i++) {
        ck_assert_str_eq(got->set[i], want->set[i]);
        ck_assert_str_eq(got->domain[i], want->domain[i]);
        ck_assert_int_eq(got->state[i], want->state[i]);
        ck_assert_int_eq(got->count[i], want->count[i]);
    }
}

/* The spool's counts equal the full count (of committed rows: call after a flush), and so
 * do a reader's. */
static void assert_counts(spool *sp, const char *dir)
{
    groups want, got = {0}, rgot = {0};
    int64_t wq, wd, q = -1, d = -1;
    oracle(dir, &want, &wq, &wd);
    char *err = NULL;
    spool_reader *rd = spool_reader_open(dir, &err);
    ck_assert_msg(rd != NULL, "reader: %s", err ? err : "?");
    ck_assert_int_eq(spool_reader_count_by(rd, collect, &rgot), 0);
    spool_reader_close(rd);
    assert_groups(&rgot, &want);
    ck_assert_int_eq(spool_count_by(sp, collect, &got), 0);
    ck_assert_int_eq(spool_count_rcpts(sp, &q, &d), 0);
    ck_assert_int_eq(q, wq);
    ck_assert_int_eq(d, wd);
    assert_groups(&got, &want);
}

/* ---- a random workload ---- */

static uint64_t rng_state;
static unsigned rnd(unsigned n)
{
    rng_state = rng_state * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
    return (unsigned)((rng_state >> 33) % n);
}

typedef struct live {
    int64_t rowid[4096];
    int state[4096];
    size_t n;
} live;

/* Adds a message of 1-6 recipients over a few domains (some in upper case, some settled at
 * acceptance as the simulator and the suppression list do). */
static void add_random_message(spool *sp, live *lv, int k)
{
    static const char *const sets[] = {"txn", "bulk", "alerts"};
    static const char *const doms[] = {"a.test", "B.test", "c.test", "d.test", "e.test"};
    char id[32];
    snprintf(id, sizeof id, "m%05d", k);
    add_msg(sp, id, sets[rnd(3)]);
    unsigned nr = 1 + rnd(6);
    for (unsigned i = 0; i < nr; i++) {
        char addr[64];
        snprintf(addr, sizeof addr, "u%u@%s", rnd(1000), doms[rnd(5)]);
        int st = rnd(10) == 0 ? (int)SPOOL_RCPT_DELIVERED : (int)SPOOL_RCPT_QUEUED;
        int64_t rowid;
        ck_assert_int_eq(spool_add_rcpt(sp, id, addr, (spool_rcpt_state)st, &rowid), 0);
        if (st == SPOOL_RCPT_QUEUED && lv->n < 4096) {
            lv->rowid[lv->n] = rowid;
            lv->state[lv->n++] = st;
        }
    }
    if (rnd(4) == 0) ck_assert_int_eq(spool_message_gc(sp, id), 0);
}

/* An attempt's outcome for a random pending recipient. */
static void settle_random(spool *sp, live *lv, bool *final_out)
{
    size_t i = rnd((unsigned)lv->n);
    unsigned r = rnd(3);
    int st = r == 0 ? SPOOL_RCPT_DEFERRED : r == 1 ? SPOOL_RCPT_DELIVERED : SPOOL_RCPT_BOUNCED;
    ck_assert_int_eq(spool_update_rcpt(sp, lv->rowid[i], (spool_rcpt_state)st, 1,
                                       util_wall_ms() + 1000, "451 later"), 0);
    *final_out = st != SPOOL_RCPT_DEFERRED;
    if (*final_out) {
        lv->rowid[i] = lv->rowid[lv->n - 1];
        lv->state[i] = lv->state[lv->n - 1];
        lv->n--;
    } else {
        lv->state[i] = st;
    }
}

/* Many batches of random changes; every fifth batch fails (an update of a recipient that
 * does not exist) and is rolled back. The counts match a full count after every flush. */
START_TEST(test_counts_follow_random_changes)
{
    char *dir = testlib_subdir(base_dir, "r-");
    spool *sp = testlib_spool_open(dir, false);
    assert_counts(sp, dir);   /* empty */
    rng_state = 42;
    live lv = {0}, saved;
    int k = 0;
    for (int batch = 0; batch < 120; batch++) {
        bool fail = batch % 5 == 4;
        saved = lv;
        unsigned nops = 1 + rnd(12);
        for (unsigned op = 0; op < nops; op++) {
            if (lv.n == 0 || rnd(3) == 0) {
                add_random_message(sp, &lv, k++);
            } else {
                bool fin;
                settle_random(sp, &lv, &fin);
            }
        }
        if (fail) {
            /* recorded at once; the writer finds no such row and the batch rolls back */
            ck_assert_int_eq(spool_update_rcpt(sp, 999999999, SPOOL_RCPT_DELIVERED, 1, 0, "x"), 0);
            ck_assert_int_eq(spool_flush(sp), -1);
            lv = saved;
        } else {
            ck_assert_int_eq(spool_flush(sp), 0);
        }
        assert_counts(sp, dir);
    }
    /* the workload did reach every kind of group */
    groups g = {0};
    ck_assert_int_eq(spool_count_by(sp, collect, &g), 0);
    bool some_deferred = false;
    for (size_t i = 0; i < g.n; i++) some_deferred |= g.state[i] == SPOOL_RCPT_DEFERRED;
    ck_assert(some_deferred);
    ck_assert_uint_gt(g.n, 10);
    spool_close(sp);
    /* and they survive a reopen */
    sp = testlib_spool_open(dir, false);
    assert_counts(sp, dir);
    spool_close(sp);
    free(dir);
}
END_TEST

/* The spool's reads count what is committed: the filling batch's recipients and state
 * changes show once it is committed, never before; a group whose last recipient settles
 * disappears. */
START_TEST(test_counts_follow_each_commit)
{
    char *dir = testlib_subdir(base_dir, "b-");
    spool *sp = testlib_spool_open(dir, false);
    add_msg(sp, "A", "txn");
    int64_t r1, r2;
    ck_assert_int_eq(spool_add_rcpt(sp, "A", "x@One.test", SPOOL_RCPT_QUEUED, &r1), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "A", "y@two.test", SPOOL_RCPT_QUEUED, &r2), 0);
    int64_t q = -1, d = -1;
    ck_assert_int_eq(spool_count_rcpts(sp, &q, &d), 0);
    ck_assert_int_eq(q + d, 0);              /* not committed yet */
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_int_eq(spool_count_rcpts(sp, &q, &d), 0);
    ck_assert_int_eq(q, 2);
    ck_assert_int_eq(d, 0);
    ck_assert_int_eq(spool_update_rcpt(sp, r1, SPOOL_RCPT_DEFERRED, 1, 5, "451"), 0);
    ck_assert_int_eq(spool_count_rcpts(sp, &q, &d), 0);
    ck_assert_int_eq(q, 2);                  /* the deferral is still in the filling batch */
    ck_assert_int_eq(spool_flush(sp), 0);
    groups g = {0};
    ck_assert_int_eq(spool_count_by(sp, collect, &g), 0);
    ck_assert_uint_eq(g.n, 2);
    ck_assert_str_eq(g.domain[0], "one.test");
    ck_assert_int_eq(g.state[0], SPOOL_RCPT_DEFERRED);
    ck_assert_str_eq(g.domain[1], "two.test");
    ck_assert_int_eq(g.state[1], SPOOL_RCPT_QUEUED);
    assert_counts(sp, dir);
    /* a second deferral of the same recipient changes no count */
    ck_assert_int_eq(spool_update_rcpt(sp, r1, SPOOL_RCPT_DEFERRED, 2, 9, "451"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_int_eq(spool_count_rcpts(sp, &q, &d), 0);
    ck_assert_int_eq(q, 1);
    ck_assert_int_eq(d, 1);
    ck_assert_int_eq(spool_update_rcpt(sp, r2, SPOOL_RCPT_DELIVERED, 1, 0, "250"), 0);
    ck_assert_int_eq(spool_update_rcpt(sp, r1, SPOOL_RCPT_BOUNCED, 3, 0, "550"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_int_eq(spool_count_rcpts(sp, &q, &d), 0);
    ck_assert_int_eq(q + d, 0);
    memset(&g, 0, sizeof g);
    ck_assert_int_eq(spool_count_by(sp, collect, &g), 0);
    ck_assert_uint_eq(g.n, 0);
    assert_counts(sp, dir);
    spool_close(sp);
    free(dir);
}
END_TEST

static void exec_ok(const char *dir, const char *sql)
{
    char *db = util_asprintf("%s/kiln.db", dir);
    sqlite3 *h = NULL;
    ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(h, sql, NULL, NULL, &msg);
    ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, msg ? msg : "?");
    sqlite3_close(h);
    free(db);
}

static int schema_version(const char *dir)
{
    char *db = util_asprintf("%s/kiln.db", dir);
    sqlite3 *h = NULL;
    ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(h, "PRAGMA schema_version", -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    int v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(h);
    free(db);
    return v;
}

/* A spool written before the counts existed gets them, filled; so does one where a part is
 * missing or differs; changes made afterwards keep them right; once made, an open changes
 * no schema (nothing is counted again). */
START_TEST(test_counts_added_to_old_spool)
{
    static const char *const remove[] = {
        "DROP TRIGGER recipients_count_insert; DROP TRIGGER recipients_count_update;"
        " DROP TRIGGER recipients_count_delete; DROP TABLE rcpt_totals;",
        "DROP TRIGGER recipients_count_update;",
        "DROP TRIGGER recipients_count_insert; CREATE TRIGGER recipients_count_insert AFTER"
        " INSERT ON recipients BEGIN SELECT 1; END;",
        "DROP TRIGGER recipients_count_delete; UPDATE rcpt_totals SET n = 77;",
    };
    for (size_t v = 0; v < sizeof remove / sizeof remove[0]; v++) {
        char *dir = testlib_subdir(base_dir, "o-");
        spool *sp = testlib_spool_open(dir, false);
        add_msg(sp, "A", "txn");
        add_msg(sp, "B", "bulk");
        int64_t r;
        ck_assert_int_eq(spool_add_rcpt(sp, "A", "a@x.test", SPOOL_RCPT_QUEUED, NULL), 0);
        ck_assert_int_eq(spool_add_rcpt(sp, "A", "b@x.test", SPOOL_RCPT_QUEUED, &r), 0);
        ck_assert_int_eq(spool_add_rcpt(sp, "B", "c@y.test", SPOOL_RCPT_QUEUED, NULL), 0);
        ck_assert_int_eq(spool_flush(sp), 0);
        spool_close(sp);
        exec_ok(dir, remove[v]);
        /* the old kiln went on without counts: a deferral and a new recipient */
        exec_ok(dir, "UPDATE recipients SET state = 1, attempts = 1 WHERE address = 'b@x.test';"
                     " INSERT INTO recipients (msg_id, address, state, domain)"
                     " VALUES ('B', 'd@y.test', 0, 'y.test');");
        sp = testlib_spool_open(dir, false);
        assert_counts(sp, dir);
        int64_t q, d;
        ck_assert_int_eq(spool_count_rcpts(sp, &q, &d), 0);
        ck_assert_int_eq(q, 3);
        ck_assert_int_eq(d, 1);
        ck_assert_int_eq(spool_update_rcpt(sp, r, SPOOL_RCPT_DELIVERED, 2, 0, "250"), 0);
        ck_assert_int_eq(spool_flush(sp), 0);
        assert_counts(sp, dir);
        spool_close(sp);
        int v = schema_version(dir);
        spool_close(testlib_spool_open(dir, false));
        ck_assert_int_eq(schema_version(dir), v);
        free(dir);
    }
}
END_TEST

static Suite *counts_suite(void)
{
    Suite *s = suite_create("spool_counts");
    TCase *tc = tcase_create("counts");
    tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_counts_follow_random_changes);
    tcase_add_test(tc, test_counts_follow_each_commit);
    tcase_add_test(tc, test_counts_added_to_old_spool);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(counts_suite);
