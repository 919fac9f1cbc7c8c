/* test_spool_feedback.c — unit tests of the feedback intake's spool tables
 * (store/spool_feedback.c): with spool_keep_sent on, a message whose last recipient becomes
 * final (by an outcome, or by spool_message_gc for one settled at acceptance) is found
 * afterwards by its id and by its Message-ID (with or without angle brackets), with its
 * configuration set and mail object, while it is still queued too; with it off nothing is
 * kept; a mail object that is not JSON does not fail the batch; pruning keeps the newer rows;
 * the report inbox returns every field (binary data intact) oldest first, forgets deleted
 * reports, gives increasing ids never reused, and keeps a report written as kept across a
 * failed batch; both tables survive a reopen, and a spool written before they existed gains
 * them. Run with --bench for a larger timing of the copy and of the Message-ID lookup
 * (printed, not asserted). */
#include <check.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/util.h"
#include "store/spool.h"
#include "store/spool_feedback.h"
#include "tests/unit/testlib.h"

static const char *base_dir;

static void base_setup(void)
{
    base_dir = testlib_tmpdir("fbstore");
}

static void base_teardown(void)
{
    testlib_tmpdir_remove(base_dir);
}

static const char mail_json_fmt[] =
    "{\"timestamp\":\"2024-05-01T10:00:00.000Z\",\"messageId\":\"%s\",\"source\":"
    "\"sender@example.test\",\"commonHeaders\":{\"messageId\":\"%s\",\"subject\":\"hi\"}}";

/* Adds message id (set "marketing", created at created_ms) whose Message-ID header is
 * header_mid (mail_json given as is when header_mid is NULL and json is not). */
static void add_msg(spool *sp, const char *id, int64_t created_ms, const char *header_mid,
                    const char *json)
{
    static const char body[] = "Subject: hi\r\n\r\nhello\r\n";
    char *mj = json ? util_strdup(json) : util_asprintf(mail_json_fmt, id, header_mid);
    spool_message m = {.created_ms = created_ms, .config_set = "marketing",
                       .mail_from = "sender@example.test", .client_ip = "192.0.2.7",
                       .mail_json = mj, .data = body, .data_len = sizeof body - 1,
                       .quota_count = 1};
    snprintf(m.id, sizeof m.id, "%s", id);
    ck_assert_int_eq(spool_add_message(sp, &m), 0);
    free(mj);
}

static int64_t add_rcpt(spool *sp, const char *id, const char *addr, spool_rcpt_state st)
{
    int64_t row = 0;
    ck_assert_int_eq(spool_add_rcpt(sp, id, addr, st, &row), 0);
    return row;
}

static void settle(spool *sp, int64_t row)
{
    ck_assert_int_eq(spool_update_rcpt(sp, row, SPOOL_RCPT_DELIVERED, 1, 0, "250 ok"), 0);
}

/* spool_sent_find: whether id is found (and then, in *out). */
static bool find(spool *sp, const char *id, spool_sent *out)
{
    bool found = true;
    ck_assert_int_eq(spool_sent_find(sp, id, &found, out), 0);
    return found;
}

static bool find_mid(spool *sp, const char *mid, spool_sent *out)
{
    bool found = true;
    ck_assert_int_eq(spool_sent_find_message_id(sp, mid, &found, out), 0);
    return found;
}

START_TEST(test_keep_sent_copies_finished_message)
{
    char *dir = testlib_subdir(base_dir, "s-");
    spool *sp = testlib_spool_open(dir, false);
    spool_keep_sent(sp, true);
    add_msg(sp, "m1", 1000, "<abc.1@example.test>", NULL);
    int64_t r1 = add_rcpt(sp, "m1", "a@example.net", SPOOL_RCPT_QUEUED);
    int64_t r2 = add_rcpt(sp, "m1", "b@example.net", SPOOL_RCPT_QUEUED);
    ck_assert_int_eq(spool_flush(sp), 0);

    /* one recipient final: still queued, found there */
    settle(sp, r1);
    ck_assert_int_eq(spool_flush(sp), 0);
    spool_sent s;
    ck_assert(find(sp, "m1", &s));
    ck_assert(s.in_queue);
    ck_assert_str_eq(s.msg_id, "m1");
    ck_assert_str_eq(s.config_set, "marketing");
    spool_sent_free(&s);
    /* by Message-ID only once finished: a queued message is never scanned for it */
    ck_assert(!find_mid(sp, "<abc.1@example.test>", &s));

    /* the last one final: gone from the queue, kept with its mail object */
    settle(sp, r2);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert(!testlib_spool_has(sp, "m1"));
    ck_assert(find(sp, "m1", &s));
    ck_assert(!s.in_queue);
    ck_assert_str_eq(s.msg_id, "m1");
    ck_assert_int_eq(s.created_ms, 1000);
    ck_assert_str_eq(s.config_set, "marketing");
    char *want = util_asprintf(mail_json_fmt, "m1", "<abc.1@example.test>");
    ck_assert_str_eq(s.mail_json, want);
    free(want);
    spool_sent_free(&s);

    /* by its Message-ID, with or without angle brackets and blanks */
    const char *forms[] = {"<abc.1@example.test>", "abc.1@example.test", " <abc.1@example.test> "};
    for (size_t i = 0; i < 3; i++) {
        ck_assert_msg(find_mid(sp, forms[i], &s), "not found as %s", forms[i]);
        ck_assert(!s.in_queue);
        ck_assert_str_eq(s.msg_id, "m1");
        ck_assert_str_eq(s.config_set, "marketing");
        spool_sent_free(&s);
    }
    ck_assert(!find_mid(sp, "<other@example.test>", &s));
    ck_assert(!find_mid(sp, "<>", &s));
    ck_assert(!find(sp, "nope", &s));
    spool_close(sp);
    free(dir);
}
END_TEST

START_TEST(test_keep_sent_off_keeps_nothing)
{
    char *dir = testlib_subdir(base_dir, "s-");
    spool *sp = testlib_spool_open(dir, false);
    add_msg(sp, "m1", 1000, "<off@example.test>", NULL);
    int64_t r = add_rcpt(sp, "m1", "a@example.net", SPOOL_RCPT_QUEUED);
    ck_assert_int_eq(spool_flush(sp), 0);
    settle(sp, r);
    ck_assert_int_eq(spool_flush(sp), 0);
    spool_sent s;
    ck_assert(!testlib_spool_has(sp, "m1"));
    ck_assert(!find(sp, "m1", &s));
    ck_assert(!find_mid(sp, "off@example.test", &s));

    /* switched off again after being on: messages finished from then on are not kept */
    spool_keep_sent(sp, true);
    add_msg(sp, "m2", 1000, "<on@example.test>", NULL);
    r = add_rcpt(sp, "m2", "a@example.net", SPOOL_RCPT_QUEUED);
    add_msg(sp, "m3", 1000, "<later@example.test>", NULL);
    int64_t r3 = add_rcpt(sp, "m3", "a@example.net", SPOOL_RCPT_QUEUED);
    settle(sp, r);
    ck_assert_int_eq(spool_flush(sp), 0);
    spool_keep_sent(sp, false);
    settle(sp, r3);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert(find(sp, "m2", &s));
    spool_sent_free(&s);
    ck_assert(!find(sp, "m3", &s));
    spool_close(sp);
    free(dir);
}
END_TEST

START_TEST(test_gc_path_and_odd_mail_json)
{
    char *dir = testlib_subdir(base_dir, "s-");
    spool *sp = testlib_spool_open(dir, false);
    spool_keep_sent(sp, true);
    /* every recipient settled at acceptance (suppressed, simulator): removed by gc */
    add_msg(sp, "g1", 2000, "<gc@example.test>", NULL);
    add_rcpt(sp, "g1", "a@example.net", SPOOL_RCPT_BOUNCED);
    add_rcpt(sp, "g1", "b@example.net", SPOOL_RCPT_DELIVERED);
    ck_assert_int_eq(spool_message_gc(sp, "g1"), 0);
    /* a mail object that is not JSON, and one without a Message-ID: kept, not failing */
    add_msg(sp, "bad", 2000, NULL, "not json {");
    add_rcpt(sp, "bad", "a@example.net", SPOOL_RCPT_DELIVERED);
    ck_assert_int_eq(spool_message_gc(sp, "bad"), 0);
    add_msg(sp, "nomid", 2000, NULL, "{\"commonHeaders\":{}}");
    add_rcpt(sp, "nomid", "a@example.net", SPOOL_RCPT_DELIVERED);
    ck_assert_int_eq(spool_message_gc(sp, "nomid"), 0);
    /* gc of a message with a recipient pending changes nothing */
    add_msg(sp, "q1", 2000, "<q@example.test>", NULL);
    add_rcpt(sp, "q1", "a@example.net", SPOOL_RCPT_QUEUED);
    ck_assert_int_eq(spool_message_gc(sp, "q1"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);

    spool_sent s;
    ck_assert(!testlib_spool_has(sp, "g1"));
    ck_assert(find(sp, "g1", &s));
    ck_assert(!s.in_queue);
    ck_assert_int_eq(s.created_ms, 2000);
    spool_sent_free(&s);
    ck_assert(find_mid(sp, "gc@example.test", &s));
    ck_assert_str_eq(s.msg_id, "g1");
    spool_sent_free(&s);
    ck_assert(find(sp, "bad", &s));
    ck_assert_str_eq(s.mail_json, "not json {");
    spool_sent_free(&s);
    ck_assert(find(sp, "nomid", &s));
    spool_sent_free(&s);
    ck_assert(find(sp, "q1", &s));
    ck_assert(s.in_queue);
    spool_sent_free(&s);
    ck_assert(!find_mid(sp, "q@example.test", &s));
    spool_close(sp);
    free(dir);
}
END_TEST

START_TEST(test_message_id_newest_wins)
{
    char *dir = testlib_subdir(base_dir, "s-");
    spool *sp = testlib_spool_open(dir, false);
    spool_keep_sent(sp, true);
    /* the same Message-ID sent several times: the newest finished one wins; queued ones are
     * not looked at (they would cost a scan of the queue) */
    add_msg(sp, "old", 1000, "<same@example.test>", NULL);
    add_rcpt(sp, "old", "a@example.net", SPOOL_RCPT_DELIVERED);
    spool_message_gc(sp, "old");
    add_msg(sp, "mid", 3000, "<same@example.test>", NULL);
    add_rcpt(sp, "mid", "a@example.net", SPOOL_RCPT_DELIVERED);
    spool_message_gc(sp, "mid");
    add_msg(sp, "queued", 2000, "<same@example.test>", NULL);
    int64_t r = add_rcpt(sp, "queued", "a@example.net", SPOOL_RCPT_QUEUED);
    ck_assert_int_eq(spool_flush(sp), 0);
    spool_sent s;
    ck_assert(find_mid(sp, "same@example.test", &s));
    ck_assert_str_eq(s.msg_id, "mid");
    ck_assert(!s.in_queue);
    spool_sent_free(&s);
    add_msg(sp, "newest", 4000, "<same@example.test>", NULL);
    add_rcpt(sp, "newest", "a@example.net", SPOOL_RCPT_QUEUED);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert(find_mid(sp, "<same@example.test>", &s));
    ck_assert_str_eq(s.msg_id, "mid");
    ck_assert(!s.in_queue);
    spool_sent_free(&s);
    /* a Message-ID JSON escapes (a '/') is found too */
    add_msg(sp, "slash", 5000, "<a/b@example.test>", NULL);
    add_rcpt(sp, "slash", "a@example.net", SPOOL_RCPT_DELIVERED);
    spool_message_gc(sp, "slash");
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert(find_mid(sp, "a/b@example.test", &s));
    ck_assert_str_eq(s.msg_id, "slash");
    spool_sent_free(&s);
    settle(sp, r);
    ck_assert_int_eq(spool_flush(sp), 0);
    spool_close(sp);
    free(dir);
}
END_TEST

START_TEST(test_prune)
{
    char *dir = testlib_subdir(base_dir, "s-");
    spool *sp = testlib_spool_open(dir, false);
    spool_keep_sent(sp, true);
    const char *ids[] = {"p1", "p2", "p3"};
    int64_t at[] = {1000, 5000, 9000};
    for (int i = 0; i < 3; i++) {
        add_msg(sp, ids[i], at[i], ids[i], NULL);
        add_rcpt(sp, ids[i], "a@example.net", SPOOL_RCPT_DELIVERED);
        spool_message_gc(sp, ids[i]);
    }
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_int_eq(spool_sent_prune(sp, 5000), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    spool_sent s;
    ck_assert(!find(sp, "p1", &s));
    ck_assert(!find_mid(sp, "p1", &s));
    ck_assert(find(sp, "p2", &s));
    spool_sent_free(&s);
    ck_assert(find(sp, "p3", &s));
    spool_sent_free(&s);
    spool_close(sp);
    free(dir);
}
END_TEST

/* ---- the inbox ---- */

typedef struct report {
    int64_t id, received_ms;
    char client_ip[64], mail_from[64], rcpts[128];
    char data[256];
    size_t len;
} report;

typedef struct reports {
    report r[8];
    size_t n;
} reports;

static void collect(void *arg, int64_t id, int64_t received_ms, const char *client_ip,
                    const char *mail_from, const char *rcpts, const char *data, size_t len)
{
    reports *rs = arg;
    ck_assert_uint_lt(rs->n, 8);
    ck_assert_uint_le(len, sizeof rs->r[0].data);
    report *r = &rs->r[rs->n++];
    r->id = id;
    r->received_ms = received_ms;
    snprintf(r->client_ip, sizeof r->client_ip, "%s", client_ip);
    snprintf(r->mail_from, sizeof r->mail_from, "%s", mail_from);
    snprintf(r->rcpts, sizeof r->rcpts, "%s", rcpts);
    memcpy(r->data, data, len);
    r->len = len;
}

static reports inbox(spool *sp)
{
    reports rs;
    memset(&rs, 0, sizeof rs);
    ck_assert_int_eq(spool_fbin_each(sp, collect, &rs), 0);
    return rs;
}

static const char report_data[] =
    "From: <>\r\nContent-Type: multipart/report\r\n\r\n\0bin\0\r\n.\r\n";

START_TEST(test_inbox)
{
    char *dir = testlib_subdir(base_dir, "s-");
    spool *sp = testlib_spool_open(dir, false);
    int64_t id[3];
    ck_assert_int_eq(spool_fbin_add(sp, 100, "198.51.100.1", "", "bounces+t1@kiln.test",
                                    report_data, sizeof report_data - 1, &id[0]), 0);
    ck_assert_int_eq(spool_fbin_add(sp, 200, "198.51.100.2", "mailer@example.net",
                                    "a@kiln.test\nb@kiln.test", "x", 1, &id[1]), 0);
    ck_assert_int_eq(spool_fbin_add(sp, 300, "2001:db8::1", "fbl@example.org", "c@kiln.test",
                                    "", 0, &id[2]), 0);
    ck_assert_int_lt(id[0], id[1]);
    ck_assert_int_lt(id[1], id[2]);
    reports rs = inbox(sp);
    ck_assert_uint_eq(rs.n, 0);   /* not committed yet */
    ck_assert_int_eq(spool_flush(sp), 0);
    rs = inbox(sp);
    ck_assert_uint_eq(rs.n, 3);
    ck_assert_int_eq(rs.r[0].id, id[0]);
    ck_assert_int_eq(rs.r[0].received_ms, 100);
    ck_assert_str_eq(rs.r[0].client_ip, "198.51.100.1");
    ck_assert_str_eq(rs.r[0].mail_from, "");
    ck_assert_str_eq(rs.r[0].rcpts, "bounces+t1@kiln.test");
    ck_assert_uint_eq(rs.r[0].len, sizeof report_data - 1);
    ck_assert(memcmp(rs.r[0].data, report_data, sizeof report_data - 1) == 0);
    ck_assert_int_eq(rs.r[1].id, id[1]);
    ck_assert_str_eq(rs.r[1].mail_from, "mailer@example.net");
    ck_assert_str_eq(rs.r[1].rcpts, "a@kiln.test\nb@kiln.test");
    ck_assert_uint_eq(rs.r[1].len, 1);
    ck_assert_int_eq(rs.r[2].id, id[2]);
    ck_assert_int_eq(rs.r[2].received_ms, 300);
    ck_assert_str_eq(rs.r[2].client_ip, "2001:db8::1");
    ck_assert_uint_eq(rs.r[2].len, 0);

    ck_assert_int_eq(spool_fbin_delete(sp, id[1]), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    rs = inbox(sp);
    ck_assert_uint_eq(rs.n, 2);
    ck_assert_int_eq(rs.r[0].id, id[0]);
    ck_assert_int_eq(rs.r[1].id, id[2]);

    /* the newest deleted, then a reopen: its id is not given out again */
    ck_assert_int_eq(spool_fbin_delete(sp, id[2]), 0);
    spool_close(sp);
    sp = testlib_spool_open(dir, false);
    int64_t id4;
    ck_assert_int_eq(spool_fbin_add(sp, 400, "192.0.2.9", "", "d@kiln.test", "y", 1, &id4), 0);
    ck_assert_int_gt(id4, id[2]);
    ck_assert_int_eq(spool_flush(sp), 0);
    rs = inbox(sp);
    ck_assert_uint_eq(rs.n, 2);
    ck_assert_int_eq(rs.r[0].id, id[0]);
    ck_assert(memcmp(rs.r[0].data, report_data, sizeof report_data - 1) == 0);
    ck_assert_int_eq(rs.r[1].id, id4);
    spool_close(sp);
    free(dir);
}
END_TEST

START_TEST(test_inbox_kept_across_failed_batch)
{
    char *dir = testlib_subdir(base_dir, "s-");
    spool *sp = testlib_spool_open(dir, false);
    spool_test_fail_batches(sp, 1, SQLITE_FULL);
    spool_keep_begin(sp);
    int64_t id;
    ck_assert_int_eq(spool_fbin_add(sp, 100, "198.51.100.1", "", "x@kiln.test", report_data,
                                    sizeof report_data - 1, &id), 0);
    spool_keep_end(sp);
    ck_assert_int_eq(spool_flush(sp), -1);
    ck_assert_uint_eq(spool_kept_waiting(sp), 1);
    ck_assert_int_eq(spool_flush(sp), 0);
    reports rs = inbox(sp);
    ck_assert_uint_eq(rs.n, 1);
    ck_assert_int_eq(rs.r[0].id, id);
    ck_assert_uint_eq(rs.r[0].len, sizeof report_data - 1);
    ck_assert(memcmp(rs.r[0].data, report_data, sizeof report_data - 1) == 0);
    spool_close(sp);
    free(dir);
}
END_TEST

/* ---- reopen, older spools ---- */

START_TEST(test_survives_reopen_and_old_spool_gains_tables)
{
    char *dir = testlib_subdir(base_dir, "s-");
    spool *sp = testlib_spool_open(dir, false);
    spool_keep_sent(sp, true);
    add_msg(sp, "r1", 1000, "<r1@example.test>", NULL);
    add_rcpt(sp, "r1", "a@example.net", SPOOL_RCPT_DELIVERED);
    spool_message_gc(sp, "r1");
    ck_assert_int_eq(spool_fbin_add(sp, 100, "198.51.100.1", "", "x@kiln.test", "r", 1, NULL),
                     0);
    spool_close(sp);

    sp = testlib_spool_open(dir, false);
    spool_sent s;
    ck_assert(find(sp, "r1", &s));
    ck_assert(!s.in_queue);
    ck_assert_str_eq(s.config_set, "marketing");
    spool_sent_free(&s);
    ck_assert(find_mid(sp, "r1@example.test", &s));
    spool_sent_free(&s);
    ck_assert_uint_eq(inbox(sp).n, 1);
    spool_close(sp);

    /* what a spool written before these tables looks like: the rest of the schema as is */
    char *path = util_asprintf("%s/kiln.db", dir);
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db, "DROP TABLE sent_mail; DROP TABLE feedback_inbox;", NULL,
                                  NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    free(path);

    sp = testlib_spool_open(dir, false);
    ck_assert(!find(sp, "r1", &s));
    ck_assert_uint_eq(inbox(sp).n, 0);
    spool_keep_sent(sp, true);
    add_msg(sp, "r2", 1000, "<r2@example.test>", NULL);
    add_rcpt(sp, "r2", "a@example.net", SPOOL_RCPT_DELIVERED);
    spool_message_gc(sp, "r2");
    ck_assert_int_eq(spool_fbin_add(sp, 100, "198.51.100.1", "", "x@kiln.test", "r", 1, NULL),
                     0);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert(find_mid(sp, "<r2@example.test>", &s));
    ck_assert_str_eq(s.msg_id, "r2");
    spool_sent_free(&s);
    ck_assert_uint_eq(inbox(sp).n, 1);
    spool_close(sp);
    free(dir);
}
END_TEST

/* ---- cost (printed, not asserted) ---- */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Finishes n one-recipient messages in one batch; returns the batch's flush time in ms. */
static double timed_finish(spool *sp, const char *tag, int n)
{
    int64_t *rows = util_malloc((size_t)n * sizeof *rows);
    for (int i = 0; i < n; i++) {
        char id[64], mid[64];
        snprintf(id, sizeof id, "%s-%d", tag, i);
        snprintf(mid, sizeof mid, "<%s.%d@example.test>", tag, i);
        add_msg(sp, id, 1000 + i, mid, NULL);
        rows[i] = add_rcpt(sp, id, "a@example.net", SPOOL_RCPT_QUEUED);
    }
    ck_assert_int_eq(spool_flush(sp), 0);
    for (int i = 0; i < n; i++) settle(sp, rows[i]);
    int64_t t0 = now_us();
    ck_assert_int_eq(spool_flush(sp), 0);
    int64_t t1 = now_us();
    free(rows);
    return (double)(t1 - t0) / 1000.0;
}

START_TEST(test_cost)
{
    int n = testlib_flag("--bench") ? 20000 : 2000;
    char *dir = testlib_subdir(base_dir, "s-");
    spool *sp = testlib_spool_open(dir, false);
    /* alternated, the best of three each (the first batches warm the database up) */
    double off = 1e18, on = 1e18;
    for (int round = 0; round < 3; round++) {
        char tag[16];
        snprintf(tag, sizeof tag, "off%d", round);
        double t = timed_finish(sp, tag, n);
        if (t < off) off = t;
        spool_keep_sent(sp, true);
        snprintf(tag, sizeof tag, "on%d", round);
        t = timed_finish(sp, tag, n);
        if (t < on) on = t;
        spool_keep_sent(sp, false);
    }
    /* the Message-ID lookup with n messages queued: an index read of sent_mail, whatever
     * the queue holds (queued messages are not searched) */
    int64_t *rows = util_malloc((size_t)n * sizeof *rows);
    for (int i = 0; i < n; i++) {
        char id[64], mid[64];
        snprintf(id, sizeof id, "q-%d", i);
        snprintf(mid, sizeof mid, "<q.%d@example.test>", i);
        add_msg(sp, id, 1000 + i, mid, NULL);
        rows[i] = add_rcpt(sp, id, "a@example.net", SPOOL_RCPT_QUEUED);
    }
    ck_assert_int_eq(spool_flush(sp), 0);
    spool_sent s;
    ck_assert(find_mid(sp, "on2.7@example.test", &s));   /* warms the statements up */
    spool_sent_free(&s);
    int64_t t0 = now_us();
    ck_assert(find_mid(sp, "on2.7@example.test", &s));
    int64_t t1 = now_us();
    ck_assert_str_eq(s.msg_id, "on2-7");
    spool_sent_free(&s);
    ck_assert(!find_mid(sp, "q.7@example.test", &s));
    fprintf(stderr,
            "test_spool_feedback cost: finishing %d messages in one batch: %.1f ms with "
            "keep_sent off, %.1f ms on (%.2f us per message more); Message-ID lookup with %d "
            "queued: %.3f ms\n",
            n, off, on, (on - off) * 1000.0 / n, n, (double)(t1 - t0) / 1000.0);
    free(rows);
    spool_close(sp);
    free(dir);
}
END_TEST

static Suite *feedback_suite(void)
{
    Suite *s = suite_create("spool_feedback");
    TCase *tc = tcase_create("feedback");
    tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_keep_sent_copies_finished_message);
    tcase_add_test(tc, test_keep_sent_off_keeps_nothing);
    tcase_add_test(tc, test_gc_path_and_odd_mail_json);
    tcase_add_test(tc, test_message_id_newest_wins);
    tcase_add_test(tc, test_prune);
    tcase_add_test(tc, test_inbox);
    tcase_add_test(tc, test_inbox_kept_across_failed_batch);
    tcase_add_test(tc, test_survives_reopen_and_old_spool_gains_tables);
    tcase_add_test(tc, test_cost);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(feedback_suite);
