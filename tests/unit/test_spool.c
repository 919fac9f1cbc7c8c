/* test_spool.c — unit tests of the SQLite spool: persistence across reopen, group commit
 * (one batch, callbacks in order, a failed statement fails the whole batch, callbacks that
 * write go to the next batch, a batch never flushed is lost in a crash, reads see only
 * committed rows), deletion of finished
 * messages, the recipient, sends, suppression, event and send-statistics queries (stats
 * buckets add up and are pruned after 14 days), the key-value table (also added to a spool
 * written before it existed), paging of due recipients, the next retry time, counts
 * per configuration set and domain, the domain column (also added to a spool written before it
 * existed), and open errors. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store/spool.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

#define HOUR_MS (3600LL * 1000)

/* Base scratch directory of one test case, made and removed by the unchecked fixture (which
 * runs in the parent process, so it is removed even when a test fails). */
static const char *base_dir;

static void base_setup(void)
{
    base_dir = testlib_tmpdir("spool");
}

static void base_teardown(void)
{
    testlib_tmpdir_remove(base_dir);
}

/* A fresh directory for one spool (malloc'd). */
static char *new_dir(void)
{
    return testlib_subdir(base_dir, "s-");
}

static spool_message make_msg(const char *id, int64_t created_ms, const char *data,
                              size_t data_len, unsigned quota_count)
{
    spool_message m = {
        .created_ms = created_ms,
        .config_set = "marketing",
        .mail_from = "sender@example.test",
        .client_ip = "192.0.2.7",
        .mail_json = "{\"messageId\":\"x\"}",
        .data = data,
        .data_len = data_len,
        .quota_count = quota_count,
    };
    snprintf(m.id, sizeof m.id, "%s", id);
    return m;
}

static void add_msg(spool *sp, const char *id, int64_t created_ms, unsigned quota_count)
{
    static const char body[] = "Subject: hi\r\n\r\nhello\r\n";
    spool_message m = make_msg(id, created_ms, body, sizeof body - 1, quota_count);
    ck_assert_int_eq(spool_add_message(sp, &m), 0);
}

/* ---- collectors ---- */

typedef struct rcpt_list {
    size_t n;
    int64_t rowid[64];
    char addr[64][64];
    char msg[64][80];
    spool_rcpt_state state[64];
    int attempts[64];
    int64_t next[64];
    char reply[64][64];
    bool reply_null[64];
    char domain[64][64];
} rcpt_list;

static void collect_rcpt(void *arg, const spool_rcpt *r)
{
    rcpt_list *l = arg;
    ck_assert_uint_lt(l->n, 64);
    l->rowid[l->n] = r->rowid;
    snprintf(l->addr[l->n], sizeof l->addr[0], "%s", r->address);
    snprintf(l->msg[l->n], sizeof l->msg[0], "%s", r->msg_id);
    l->state[l->n] = r->state;
    l->attempts[l->n] = r->attempts;
    l->next[l->n] = r->next_attempt_ms;
    l->reply_null[l->n] = r->last_reply == NULL;
    snprintf(l->reply[l->n], sizeof l->reply[0], "%s", r->last_reply ? r->last_reply : "");
    snprintf(l->domain[l->n], sizeof l->domain[0], "%s", r->domain);
    l->n++;
}

static rcpt_list *pending(spool *sp, const char *msg_id)
{
    rcpt_list *l = util_calloc(1, sizeof *l);
    ck_assert_int_eq(spool_each_pending_rcpt(sp, msg_id, collect_rcpt, l), 0);
    return l;
}

typedef struct sent_list {
    size_t n;
    int64_t at[16];
    unsigned count[16];
} sent_list;

static void collect_sent(void *arg, int64_t created_ms, unsigned count)
{
    sent_list *l = arg;
    ck_assert_uint_lt(l->n, 16);
    l->at[l->n] = created_ms;
    l->count[l->n] = count;
    l->n++;
}

typedef struct supp_list {
    size_t n;
    char addr[8][64];
    char reason[8][16];
    int64_t at[8];
} supp_list;

static void collect_supp(void *arg, const char *address, const char *reason, int64_t at)
{
    supp_list *l = arg;
    ck_assert_uint_lt(l->n, 8);
    snprintf(l->addr[l->n], sizeof l->addr[0], "%s", address);
    snprintf(l->reason[l->n], sizeof l->reason[0], "%s", reason);
    l->at[l->n] = at;
    l->n++;
}

typedef struct event_list {
    size_t n;
    int64_t id[16];
    char set[16][32];
    char json[16][64];
} event_list;

static void collect_event(void *arg, int64_t id, const char *set, const char *json)
{
    event_list *l = arg;
    ck_assert_uint_lt(l->n, 16);
    l->id[l->n] = id;
    snprintf(l->set[l->n], sizeof l->set[0], "%s", set);
    snprintf(l->json[l->n], sizeof l->json[0], "%s", json);
    l->n++;
}

/* ---- tests ---- */

START_TEST(test_reopen_keeps_everything)
{
    char *dir = new_dir();
    spool *sp = testlib_spool_open(dir, true);
    int64_t now = util_wall_ms();

    /* Binary data with a NUL inside must come back byte for byte, with a NUL after it. */
    static const char data[] = "Subject: a\r\n\r\nbin\0ary\r\n";
    spool_message m = make_msg("0000018f-aaaa-0001-000000", now, data, sizeof data - 1, 2);
    m.mail_from = "";
    ck_assert_int_eq(spool_add_message(sp, &m), 0);
    int64_t r1, r2;
    ck_assert_int_eq(spool_add_rcpt(sp, m.id, "a@example.test", SPOOL_RCPT_QUEUED, &r1), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, m.id, "b@example.test", SPOOL_RCPT_QUEUED, &r2), 0);
    ck_assert_int_gt(r2, r1);
    ck_assert_int_eq(spool_update_rcpt(sp, r2, SPOOL_RCPT_DEFERRED, 1, now + 60000,
                                       "451 4.7.1 try later"), 0);
    ck_assert_int_eq(spool_add_event(sp, "marketing", "{\"eventType\":\"Send\"}"), 0);
    ck_assert_int_eq(spool_suppression_put(sp, "Bad@Example.TEST", "BOUNCE", now), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    spool_close(sp);

    sp = testlib_spool_open(dir, true);
    spool_loaded l;
    ck_assert_int_eq(spool_load_message(sp, m.id, &l), 0);
    ck_assert_str_eq(l.id, m.id);
    ck_assert_int_eq(l.created_ms, now);
    ck_assert_str_eq(l.config_set, "marketing");
    ck_assert_str_eq(l.mail_from, "");
    ck_assert_str_eq(l.client_ip, "192.0.2.7");
    ck_assert_str_eq(l.mail_json, "{\"messageId\":\"x\"}");
    ck_assert_uint_eq(l.data_len, sizeof data - 1);
    ck_assert_mem_eq(l.data, data, sizeof data - 1);
    ck_assert_int_eq(l.data[l.data_len], '\0');
    spool_loaded_free(&l);

    rcpt_list *rl = pending(sp, NULL);
    ck_assert_uint_eq(rl->n, 2);
    ck_assert_int_eq(rl->rowid[0], r1);
    ck_assert_str_eq(rl->addr[0], "a@example.test");
    ck_assert_str_eq(rl->msg[0], m.id);
    ck_assert_int_eq(rl->state[0], SPOOL_RCPT_QUEUED);
    ck_assert_int_eq(rl->attempts[0], 0);
    ck_assert(rl->reply_null[0]);
    ck_assert_int_eq(rl->rowid[1], r2);
    ck_assert_int_eq(rl->state[1], SPOOL_RCPT_DEFERRED);
    ck_assert_int_eq(rl->attempts[1], 1);
    ck_assert_int_eq(rl->next[1], now + 60000);
    ck_assert_str_eq(rl->reply[1], "451 4.7.1 try later");
    free(rl);

    event_list ev = {0};
    ck_assert_int_eq(spool_each_event(sp, 0, 10, collect_event, &ev), 0);
    ck_assert_uint_eq(ev.n, 1);
    ck_assert_str_eq(ev.set[0], "marketing");
    ck_assert_str_eq(ev.json[0], "{\"eventType\":\"Send\"}");

    bool found;
    char *reason;
    int64_t at;
    ck_assert_int_eq(spool_suppression_get(sp, "bad@example.test", &found, &reason, &at), 0);
    ck_assert(found);
    ck_assert_str_eq(reason, "BOUNCE");
    ck_assert_int_eq(at, now);
    free(reason);

    sent_list sl = {0};
    ck_assert_int_eq(spool_each_sent_since(sp, now - 24 * HOUR_MS, collect_sent, &sl), 0);
    ck_assert_uint_eq(sl.n, 1);
    ck_assert_int_eq(sl.at[0], now);
    ck_assert_uint_eq(sl.count[0], 2);
    spool_close(sp);

    /* The spool directory is created (mode 0700) when missing. */
    char *sub = util_asprintf("%s/new/spool", dir);
    sp = testlib_spool_open(sub, true);
    spool_close(sp);
    struct stat sb;
    ck_assert_int_eq(stat(sub, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 0777, 0700);
    char *dbf = util_asprintf("%s/kiln.db", sub);
    ck_assert_int_eq(stat(dbf, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 077, 0);
    free(dbf);
    free(sub);
    free(dir);
}
END_TEST

START_TEST(test_group_commit_100)
{
    char *dir = new_dir();
    spool *sp = testlib_spool_open(dir, true);
    int64_t now = util_wall_ms();
    testlib_commit_log *log = util_calloc(1, sizeof *log);
    testlib_commit_slot slots[100];
    char id[80];

    ck_assert(!spool_has_pending(sp));
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof id, "msg-%03d", i);
        add_msg(sp, id, now, 1);
        ck_assert_int_eq(spool_add_rcpt(sp, id, "r@example.test", SPOOL_RCPT_QUEUED, NULL), 0);
        slots[i] = (testlib_commit_slot){log, i};
        spool_on_commit(sp, testlib_on_commit, &slots[i]);
    }
    /* Nothing is acknowledged before the flush, and reads see only what is committed. */
    ck_assert(spool_has_pending(sp));
    ck_assert_uint_eq(log->n, 0);
    ck_assert(!testlib_spool_has(sp, "msg-042"));

    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert(!spool_has_pending(sp));
    ck_assert(testlib_spool_has(sp, "msg-042"));
    ck_assert_uint_eq(log->n, 100);
    for (int i = 0; i < 100; i++) {
        ck_assert_int_eq(log->order[i], i);
        ck_assert(log->ok[i]);
        ck_assert_str_eq(log->err[i], "");
    }
    /* A second flush with nothing pending does nothing. */
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_uint_eq(log->n, 100);
    spool_close(sp);

    sp = testlib_spool_open(dir, true);
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof id, "msg-%03d", i);
        ck_assert_msg(testlib_spool_has(sp, id), "%s lost after reopen", id);
    }
    int64_t q, d;
    ck_assert_int_eq(spool_count_rcpts(sp, &q, &d), 0);
    ck_assert_int_eq(q, 100);
    ck_assert_int_eq(d, 0);
    spool_close(sp);
    free(log);
    free(dir);
}
END_TEST

/* Waits (bounded) for a child; kills it by PID if it does not end. Returns its status. */
static int wait_child(pid_t pid)
{
    int status = 0;
    for (int i = 0; i < 1000; i++) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return status;
        ck_assert_int_eq(r, 0);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    ck_abort_msg("child %d did not finish within 10 s", (int)pid);
    return status;
}

START_TEST(test_unflushed_batch_lost_in_crash)
{
    char *dir = new_dir();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* The child: one committed batch, then one that never is, then a crash. */
        char *err = NULL;
        spool *sp = spool_open(dir, true, &err);
        if (!sp) _exit(2);
        spool_message m = make_msg("committed", util_wall_ms(), "x\r\n", 3, 1);
        if (spool_add_message(sp, &m) < 0 || spool_flush(sp) < 0) _exit(3);
        m = make_msg("never-flushed", util_wall_ms(), "y\r\n", 3, 1);
        if (spool_add_message(sp, &m) < 0) _exit(4);
        if (spool_add_rcpt(sp, m.id, "lost@example.test", SPOOL_RCPT_QUEUED, NULL) < 0) _exit(5);
        if (spool_suppression_put(sp, "lost@example.test", "BOUNCE", 1) < 0) _exit(6);
        if (!spool_has_pending(sp)) _exit(7);
        _exit(0);
    }
    int status = wait_child(pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);

    spool *sp = testlib_spool_open(dir, true);
    ck_assert(testlib_spool_has(sp, "committed"));
    ck_assert(!testlib_spool_has(sp, "never-flushed"));
    rcpt_list *rl = pending(sp, NULL);
    ck_assert_uint_eq(rl->n, 0);
    free(rl);
    bool found = true;
    ck_assert_int_eq(spool_suppression_get(sp, "lost@example.test", &found, NULL, NULL), 0);
    ck_assert(!found);
    spool_close(sp);
    free(dir);
}
END_TEST

START_TEST(test_failed_statement_fails_batch)
{
    char *dir = new_dir();
    spool *sp = testlib_spool_open(dir, true);
    int64_t now = util_wall_ms();
    testlib_commit_log *log = util_calloc(1, sizeof *log);
    testlib_commit_slot s[4] = {{log, 0}, {log, 1}, {log, 2}, {log, 3}};

    add_msg(sp, "dup", now, 1);
    ck_assert_int_eq(spool_flush(sp), 0);

    /* A batch: good writes, then a duplicate id, then more writes. The writes are only
     * recorded (0); the failure shows when the writer runs the batch. */
    add_msg(sp, "good-1", now, 1);
    ck_assert_int_eq(spool_add_rcpt(sp, "good-1", "a@example.test", SPOOL_RCPT_QUEUED, NULL), 0);
    ck_assert_int_eq(spool_add_event(sp, "marketing", "{}"), 0);
    spool_on_commit(sp, testlib_on_commit, &s[0]);
    spool_message m = make_msg("dup", now, "z", 1, 1);
    ck_assert_int_eq(spool_add_message(sp, &m), 0);
    spool_on_commit(sp, testlib_on_commit, &s[1]);
    m = make_msg("good-2", now, "z", 1, 1);
    ck_assert_int_eq(spool_add_message(sp, &m), 0);
    ck_assert_int_eq(spool_suppression_put(sp, "x@example.test", "BOUNCE", now), 0);
    spool_on_commit(sp, testlib_on_commit, &s[2]);

    ck_assert_int_eq(spool_flush(sp), -1);
    ck_assert_ptr_nonnull(strstr(spool_errmsg(sp), dir));
    ck_assert_uint_eq(log->n, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(log->order[i], i);
        ck_assert(!log->ok[i]);
        ck_assert_msg(strstr(log->err[i], "UNIQUE") && strstr(log->err[i], dir) &&
                      strstr(log->err[i], "dup"), "error text: %s", log->err[i]);
    }
    ck_assert(!spool_has_pending(sp));
    ck_assert(!testlib_spool_has(sp, "good-1"));
    ck_assert(!testlib_spool_has(sp, "good-2"));
    rcpt_list *rl = pending(sp, NULL);
    ck_assert_uint_eq(rl->n, 0);
    free(rl);
    event_list ev = {0};
    ck_assert_int_eq(spool_each_event(sp, 0, 10, collect_event, &ev), 0);
    ck_assert_uint_eq(ev.n, 0);
    sent_list sl = {0};
    ck_assert_int_eq(spool_each_sent_since(sp, 0, collect_sent, &sl), 0);
    ck_assert_uint_eq(sl.n, 1); /* only the first "dup" */

    /* The next batch works. */
    add_msg(sp, "good-1", now, 1);
    spool_on_commit(sp, testlib_on_commit, &s[3]);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_uint_eq(log->n, 4);
    ck_assert(log->ok[3]);
    spool_close(sp);

    sp = testlib_spool_open(dir, true);
    ck_assert(testlib_spool_has(sp, "good-1"));
    ck_assert(testlib_spool_has(sp, "dup"));
    ck_assert(!testlib_spool_has(sp, "good-2"));
    spool_close(sp);
    free(log);
    free(dir);
}
END_TEST

typedef struct writer_ctx {
    spool *sp;
    testlib_commit_log *log;
    testlib_commit_slot next_slot;
    int called;
    bool ok;
} writer_ctx;

/* A commit callback that writes (as accept does for an ooto reply) and waits for that. */
static void on_commit_write(void *arg, bool ok, const char *err)
{
    (void)err;
    writer_ctx *w = arg;
    w->called++;
    w->ok = ok;
    add_msg(w->sp, "written-by-callback", util_wall_ms(), 0);
    spool_on_commit(w->sp, testlib_on_commit, &w->next_slot);
}

START_TEST(test_callbacks_write_to_next_batch)
{
    char *dir = new_dir();
    spool *sp = testlib_spool_open(dir, true);
    testlib_commit_log *log = util_calloc(1, sizeof *log);
    writer_ctx w = {.sp = sp, .log = log, .next_slot = {log, 7}};

    /* A callback registered with nothing written still runs at the next flush. */
    testlib_commit_slot lone = {log, 1};
    spool_on_commit(sp, testlib_on_commit, &lone);
    ck_assert(spool_has_pending(sp));
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_uint_eq(log->n, 1);
    ck_assert(log->ok[0]);
    ck_assert(!spool_has_pending(sp));

    add_msg(sp, "first", util_wall_ms(), 0);
    spool_on_commit(sp, on_commit_write, &w);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_int_eq(w.called, 1);
    ck_assert(w.ok);
    /* The callback's write is pending in a new batch; its callback has not run. */
    ck_assert(spool_has_pending(sp));
    ck_assert_uint_eq(log->n, 1);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_uint_eq(log->n, 2);
    ck_assert_int_eq(log->order[1], 7);
    ck_assert(log->ok[1]);
    ck_assert(!spool_has_pending(sp));

    /* spool_close commits a pending batch and runs its callbacks. */
    add_msg(sp, "at-close", util_wall_ms(), 0);
    testlib_commit_slot last = {log, 9};
    spool_on_commit(sp, testlib_on_commit, &last);
    spool_close(sp);
    ck_assert_uint_eq(log->n, 3);
    ck_assert(log->ok[2]);

    sp = testlib_spool_open(dir, true);
    ck_assert(testlib_spool_has(sp, "first"));
    ck_assert(testlib_spool_has(sp, "written-by-callback"));
    ck_assert(testlib_spool_has(sp, "at-close"));
    spool_close(sp);
    free(log);
    free(dir);
}
END_TEST

START_TEST(test_update_rcpt_deletes_finished_message)
{
    char *dir = new_dir();
    spool *sp = testlib_spool_open(dir, true);
    int64_t now = util_wall_ms();
    int64_t r[3];
    add_msg(sp, "m1", now, 3);
    for (int i = 0; i < 3; i++) {
        char a[32];
        snprintf(a, sizeof a, "r%d@example.test", i);
        ck_assert_int_eq(spool_add_rcpt(sp, "m1", a, SPOOL_RCPT_QUEUED, &r[i]), 0);
    }
    ck_assert_int_eq(spool_flush(sp), 0);

    ck_assert_int_eq(spool_update_rcpt(sp, r[0], SPOOL_RCPT_DELIVERED, 1, 0, "250 ok"), 0);
    ck_assert(testlib_spool_has(sp, "m1"));
    ck_assert_int_eq(spool_update_rcpt(sp, r[1], SPOOL_RCPT_DEFERRED, 1, now + 1000, "451"), 0);
    ck_assert_int_eq(spool_update_rcpt(sp, r[2], SPOOL_RCPT_BOUNCED, 1, 0, "550 no"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert(testlib_spool_has(sp, "m1"));
    rcpt_list *rl = pending(sp, "m1");
    ck_assert_uint_eq(rl->n, 1);
    ck_assert_int_eq(rl->rowid[0], r[1]);
    free(rl);

    /* The last pending recipient settles: the message and its recipients go, same batch. */
    ck_assert_int_eq(spool_update_rcpt(sp, r[1], SPOOL_RCPT_DELIVERED, 2, 0, "250 ok"), 0);
    ck_assert(testlib_spool_has(sp, "m1"));   /* not committed yet */
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert(!testlib_spool_has(sp, "m1"));
    spool_close(sp);
    sp = testlib_spool_open(dir, true);
    ck_assert(!testlib_spool_has(sp, "m1"));
    rl = pending(sp, NULL);
    ck_assert_uint_eq(rl->n, 0);
    free(rl);

    /* Settled at acceptance: spool_add_rcpt keeps the message; spool_message_gc removes it
     * when nothing is pending and leaves one with a pending recipient alone. */
    add_msg(sp, "sim", now, 1);
    ck_assert_int_eq(spool_add_rcpt(sp, "sim", "success@simulator.amazonses.com",
                                    SPOOL_RCPT_DELIVERED, NULL), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert(testlib_spool_has(sp, "sim"));
    ck_assert_int_eq(spool_message_gc(sp, "sim"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert(!testlib_spool_has(sp, "sim"));
    add_msg(sp, "mixed", now, 2);
    ck_assert_int_eq(spool_add_rcpt(sp, "mixed", "bounce@simulator.amazonses.com",
                                    SPOOL_RCPT_BOUNCED, NULL), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "mixed", "real@example.test", SPOOL_RCPT_QUEUED, NULL),
                     0);
    ck_assert_int_eq(spool_message_gc(sp, "mixed"), 0);
    ck_assert_int_eq(spool_message_gc(sp, "no-such-message"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert(testlib_spool_has(sp, "mixed"));
    ck_assert(!testlib_spool_has(sp, "sim"));

    /* An unknown recipient id fails the batch (when the writer runs it). */
    testlib_commit_log *log = util_calloc(1, sizeof *log);
    testlib_commit_slot s = {log, 0};
    ck_assert_int_eq(spool_update_rcpt(sp, 999999, SPOOL_RCPT_DELIVERED, 1, 0, NULL), 0);
    spool_on_commit(sp, testlib_on_commit, &s);
    ck_assert_int_eq(spool_flush(sp), -1);
    ck_assert_uint_eq(log->n, 1);
    ck_assert(!log->ok[0]);
    ck_assert_ptr_nonnull(strstr(log->err[0], "999999"));
    spool_close(sp);
    free(log);
    free(dir);
}
END_TEST

START_TEST(test_pending_order_filter_and_counts)
{
    char *dir = new_dir();
    spool *sp = testlib_spool_open(dir, true);
    int64_t now = util_wall_ms();
    int64_t a1, b1, a2, b2, a3;
    add_msg(sp, "A", now, 0);
    add_msg(sp, "B", now, 0);
    /* Interleaved so that rowid order differs from grouping by message. */
    ck_assert_int_eq(spool_add_rcpt(sp, "A", "a1@x.test", SPOOL_RCPT_QUEUED, &a1), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "B", "b1@x.test", SPOOL_RCPT_QUEUED, &b1), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "A", "a2@x.test", SPOOL_RCPT_QUEUED, &a2), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "B", "b2@x.test", SPOOL_RCPT_DELIVERED, &b2), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "A", "a3@x.test", SPOOL_RCPT_QUEUED, &a3), 0);
    ck_assert_int_eq(spool_update_rcpt(sp, a2, SPOOL_RCPT_DEFERRED, 1, now + 5, "421"), 0);
    ck_assert_int_eq(spool_update_rcpt(sp, a3, SPOOL_RCPT_BOUNCED, 1, 0, "550"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);

    rcpt_list *all = pending(sp, NULL);
    ck_assert_uint_eq(all->n, 3);
    ck_assert_int_eq(all->rowid[0], a1);
    ck_assert_int_eq(all->rowid[1], b1);
    ck_assert_int_eq(all->rowid[2], a2);
    ck_assert_str_eq(all->msg[1], "B");
    free(all);

    rcpt_list *la = pending(sp, "A");
    ck_assert_uint_eq(la->n, 2);
    ck_assert_str_eq(la->addr[0], "a1@x.test");
    ck_assert_str_eq(la->addr[1], "a2@x.test");
    ck_assert_int_eq(la->state[1], SPOOL_RCPT_DEFERRED);
    free(la);
    rcpt_list *lb = pending(sp, "B");
    ck_assert_uint_eq(lb->n, 1);
    ck_assert_int_eq(lb->rowid[0], b1);
    free(lb);
    rcpt_list *lz = pending(sp, "Z");
    ck_assert_uint_eq(lz->n, 0);
    free(lz);

    int64_t q = -1, d = -1;
    ck_assert_int_eq(spool_count_rcpts(sp, &q, &d), 0);
    ck_assert_int_eq(q, 2);
    ck_assert_int_eq(d, 1);
    spool_close(sp);
    free(dir);
}
END_TEST

typedef struct recover_ctx {
    spool *sp;
    int seen;
    int nested_rows;
    int nested_all;
    bool loaded;
} recover_ctx;

static void count_row(void *arg, const spool_rcpt *r)
{
    (void)r;
    ((recover_ctx *)arg)->nested_rows++;
}

static void count_all(void *arg, const spool_rcpt *r)
{
    (void)r;
    ((recover_ctx *)arg)->nested_all++;
}

/* A start-up recovery that reads more and settles recipients while iterating. */
static void recover_rcpt(void *arg, const spool_rcpt *r)
{
    recover_ctx *c = arg;
    c->seen++;
    spool_loaded l;
    if (spool_load_message(c->sp, r->msg_id, &l) == 0) {
        c->loaded = true;
        spool_loaded_free(&l);
    }
    ck_assert_int_eq(spool_each_pending_rcpt(c->sp, r->msg_id, count_row, c), 0);
    /* The same query as the one iterating: must not disturb it. */
    ck_assert_int_eq(spool_each_pending_rcpt(c->sp, NULL, count_all, c), 0);
    ck_assert_int_eq(spool_update_rcpt(c->sp, r->rowid, SPOOL_RCPT_BOUNCED, r->attempts + 1, 0,
                                       "expired"), 0);
}

START_TEST(test_read_callbacks_may_read_and_write)
{
    char *dir = new_dir();
    spool *sp = testlib_spool_open(dir, true);
    int64_t now = util_wall_ms();
    add_msg(sp, "A", now, 0);
    add_msg(sp, "B", now, 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "A", "a1@x.test", SPOOL_RCPT_QUEUED, NULL), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "A", "a2@x.test", SPOOL_RCPT_QUEUED, NULL), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "B", "b1@x.test", SPOOL_RCPT_QUEUED, NULL), 0);
    ck_assert_int_eq(spool_flush(sp), 0);

    /* The updates made in the callbacks are recorded for the next commit: the reads inside
     * the iteration still see every committed row. */
    recover_ctx c = {.sp = sp};
    ck_assert_int_eq(spool_each_pending_rcpt(sp, NULL, recover_rcpt, &c), 0);
    ck_assert_int_eq(c.seen, 3);
    ck_assert(c.loaded);
    ck_assert_int_eq(c.nested_rows, 2 + 2 + 1); /* A: a1,a2 twice; B: b1 */
    ck_assert_int_eq(c.nested_all, 3 + 3 + 3);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert(!testlib_spool_has(sp, "A"));
    ck_assert(!testlib_spool_has(sp, "B"));
    spool_close(sp);
    free(dir);
}
END_TEST

/* ---- paging of due recipients, next retry, counts by set and domain ---- */

static rcpt_list *due_page(spool *sp, int64_t due_before, int64_t after, size_t limit)
{
    rcpt_list *l = util_calloc(1, sizeof *l);
    ck_assert_int_eq(spool_each_due_rcpt(sp, due_before, after, limit, collect_rcpt, l), 0);
    return l;
}

START_TEST(test_due_pages)
{
    char *dir = new_dir();
    spool *sp = testlib_spool_open(dir, true);
    int64_t now = util_wall_ms();
    add_msg(sp, "A", now, 0);
    add_msg(sp, "B", now, 0);
    /* rowid order: q1 d_past d_edge q2 done d_future q3 bounced */
    int64_t q1, dpast, dedge, q2, done, dfut, q3, bounced;
    ck_assert_int_eq(spool_add_rcpt(sp, "A", "Q1@Example.TEST", SPOOL_RCPT_QUEUED, &q1), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "B", "past@x.test", SPOOL_RCPT_QUEUED, &dpast), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "A", "edge@x.test", SPOOL_RCPT_QUEUED, &dedge), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "B", "\"a@b\"@Quoted.test", SPOOL_RCPT_QUEUED, &q2), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "A", "done@x.test", SPOOL_RCPT_QUEUED, &done), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "B", "later@x.test", SPOOL_RCPT_QUEUED, &dfut), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "A", "postmaster", SPOOL_RCPT_QUEUED, &q3), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "B", "gone@x.test", SPOOL_RCPT_QUEUED, &bounced), 0);
    int64_t due = now + 1000;
    ck_assert_int_eq(spool_update_rcpt(sp, dpast, SPOOL_RCPT_DEFERRED, 1, due - 1, "421 a"), 0);
    ck_assert_int_eq(spool_update_rcpt(sp, dedge, SPOOL_RCPT_DEFERRED, 2, due, "421 b"), 0);
    ck_assert_int_eq(spool_update_rcpt(sp, done, SPOOL_RCPT_DELIVERED, 1, 0, "250"), 0);
    ck_assert_int_eq(spool_update_rcpt(sp, dfut, SPOOL_RCPT_DEFERRED, 1, due + HOUR_MS, "451"), 0);
    ck_assert_int_eq(spool_update_rcpt(sp, bounced, SPOOL_RCPT_BOUNCED, 1, 0, "550"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);

    /* Everything due at once: QUEUED and past DEFERRED in rowid order; a retry time equal to
     * due_before is not due yet, final ones never are. */
    rcpt_list *l = due_page(sp, due, 0, 100);
    ck_assert_uint_eq(l->n, 4);
    ck_assert_int_eq(l->rowid[0], q1);
    ck_assert_int_eq(l->rowid[1], dpast);
    ck_assert_int_eq(l->rowid[2], q2);
    ck_assert_int_eq(l->rowid[3], q3);
    /* Every field, and the domain: lower-case, after the last '@', "" without one. */
    ck_assert_str_eq(l->addr[0], "Q1@Example.TEST");
    ck_assert_str_eq(l->domain[0], "example.test");
    ck_assert_str_eq(l->msg[1], "B");
    ck_assert_int_eq(l->state[1], SPOOL_RCPT_DEFERRED);
    ck_assert_int_eq(l->attempts[1], 1);
    ck_assert_int_eq(l->next[1], due - 1);
    ck_assert_str_eq(l->reply[1], "421 a");
    ck_assert(l->reply_null[0]);
    ck_assert_str_eq(l->domain[2], "quoted.test");
    ck_assert_str_eq(l->domain[3], "");
    free(l);

    /* Pages of 2, each starting after the last rowid of the one before. */
    l = due_page(sp, due, 0, 2);
    ck_assert_uint_eq(l->n, 2);
    ck_assert_int_eq(l->rowid[0], q1);
    ck_assert_int_eq(l->rowid[1], dpast);
    int64_t last = l->rowid[1];
    free(l);
    l = due_page(sp, due, last, 2);
    ck_assert_uint_eq(l->n, 2);
    ck_assert_int_eq(l->rowid[0], q2);
    ck_assert_int_eq(l->rowid[1], q3);
    last = l->rowid[1];
    free(l);
    l = due_page(sp, due, last, 2);
    ck_assert_uint_eq(l->n, 0);
    free(l);

    /* A later horizon takes in the edge and then the later retry, in rowid order. */
    l = due_page(sp, due + 1, 0, 100);
    ck_assert_uint_eq(l->n, 5);
    ck_assert_int_eq(l->rowid[2], dedge);
    ck_assert_int_eq(l->attempts[2], 2);
    free(l);
    l = due_page(sp, due + HOUR_MS + 1, dpast, 100);
    ck_assert_uint_eq(l->n, 4);
    ck_assert_int_eq(l->rowid[0], dedge);
    ck_assert_int_eq(l->rowid[1], q2);
    ck_assert_int_eq(l->rowid[2], dfut);
    ck_assert_int_eq(l->rowid[3], q3);
    free(l);

    /* limit 0 reads nothing; a recipient added now comes on a later page once it is
     * committed (not before). */
    l = due_page(sp, due, 0, 0);
    ck_assert_uint_eq(l->n, 0);
    free(l);
    int64_t q4;
    ck_assert_int_eq(spool_add_rcpt(sp, "B", "new@x.test", SPOOL_RCPT_QUEUED, &q4), 0);
    l = due_page(sp, due, q3, 10);
    ck_assert_uint_eq(l->n, 0);
    free(l);
    ck_assert_int_eq(spool_flush(sp), 0);
    l = due_page(sp, due, q3, 10);
    ck_assert_uint_eq(l->n, 1);
    ck_assert_int_eq(l->rowid[0], q4);
    free(l);
    spool_close(sp);
    free(dir);
}
END_TEST

/* Paging through many recipients visits each due one exactly once, in order, while the
 * callback settles some of them (as a scheduler would when it hands them over). Run with
 * few due retries (sorted by rowid) and with more than 10,000 (walked in rowid order). */
typedef struct sweep {
    spool *sp;
    int64_t due, last;
    size_t seen, settled;
    bool ordered, all_due;
} sweep;

static void sweep_rcpt(void *arg, const spool_rcpt *r)
{
    sweep *w = arg;
    if (r->rowid <= w->last) w->ordered = false;
    w->last = r->rowid;
    w->seen++;
    if (r->state != SPOOL_RCPT_QUEUED && !(r->state == SPOOL_RCPT_DEFERRED &&
                                           r->next_attempt_ms < w->due))
        w->all_due = false;
    if (r->rowid % 7 == 0) {
        ck_assert_int_eq(spool_update_rcpt(w->sp, r->rowid, SPOOL_RCPT_DELIVERED, 1, 0, "250"), 0);
        w->settled++;
    }
}

START_TEST(test_due_sweep)
{
    char *dir = new_dir();
    spool *sp = testlib_spool_open(dir, true);
    int64_t now = util_wall_ms();
    enum { PER = 50 };
    const int NMSG = _i == 0 ? 40 : 640;   /* 1/3 of 32,000 due retries: over 10,000 */
    size_t want = 0;
    for (int m = 0; m < NMSG; m++) {
        char id[16];
        snprintf(id, sizeof id, "m%d", m);
        add_msg(sp, id, now, 0);
        for (int i = 0; i < PER; i++) {
            char addr[48];
            snprintf(addr, sizeof addr, "u%d@d%d.test", i, (m * PER + i) % 13);
            int64_t rowid;
            ck_assert_int_eq(spool_add_rcpt(sp, id, addr, SPOOL_RCPT_QUEUED, &rowid), 0);
            /* a third not due (retry in an hour), a third due, a third never tried */
            if (rowid % 3 == 0)
                ck_assert_int_eq(spool_update_rcpt(sp, rowid, SPOOL_RCPT_DEFERRED, 1,
                                                   now + HOUR_MS, "451"), 0);
            else if (rowid % 3 == 1)
                ck_assert_int_eq(spool_update_rcpt(sp, rowid, SPOOL_RCPT_DEFERRED, 1, now - 1,
                                                   "451"), 0);
            if (rowid % 3 != 0) want++;
        }
    }
    ck_assert_int_eq(spool_flush(sp), 0);
    sweep w = {.sp = sp, .due = now, .ordered = true, .all_due = true};
    int pages = 0;
    for (;;) {
        size_t before = w.seen;
        ck_assert_int_eq(spool_each_due_rcpt(sp, now, w.last, 97, sweep_rcpt, &w), 0);
        size_t got = w.seen - before;
        ck_assert_uint_le(got, 97);
        if (got == 0) break;
        pages++;
        ck_assert_int_lt(pages, 1000);
    }
    ck_assert(w.ordered);
    ck_assert(w.all_due);
    ck_assert_uint_eq(w.seen, want);
    ck_assert_int_eq(pages, (int)((want + 96) / 97));
    ck_assert_int_eq(spool_flush(sp), 0);
    int64_t q, d;
    ck_assert_int_eq(spool_count_rcpts(sp, &q, &d), 0);
    ck_assert_int_eq(q + d, NMSG * PER - (int64_t)w.settled);
    spool_close(sp);
    free(dir);
}
END_TEST

START_TEST(test_next_due)
{
    char *dir = new_dir();
    spool *sp = testlib_spool_open(dir, true);
    int64_t next = -1;
    ck_assert_int_eq(spool_next_due_ms(sp, &next), 0);   /* empty spool */
    ck_assert_int_eq(next, 0);
    int64_t now = util_wall_ms();
    add_msg(sp, "A", now, 0);
    int64_t r1, r2, r3;
    ck_assert_int_eq(spool_add_rcpt(sp, "A", "a@x.test", SPOOL_RCPT_QUEUED, &r1), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "A", "b@x.test", SPOOL_RCPT_QUEUED, &r2), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "A", "c@x.test", SPOOL_RCPT_QUEUED, &r3), 0);
    ck_assert_int_eq(spool_next_due_ms(sp, &next), 0);   /* QUEUED ones do not count */
    ck_assert_int_eq(spool_update_rcpt(sp, r2, SPOOL_RCPT_DEFERRED, 1, now + 5000, "451"), 0);
    ck_assert_int_eq(spool_update_rcpt(sp, r3, SPOOL_RCPT_DEFERRED, 1, now + 3000, "451"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_int_eq(spool_next_due_ms(sp, &next), 1);
    ck_assert_int_eq(next, now + 3000);
    /* The earliest one settles: the next earliest is reported. */
    ck_assert_int_eq(spool_update_rcpt(sp, r3, SPOOL_RCPT_BOUNCED, 2, 0, "550"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_int_eq(spool_next_due_ms(sp, &next), 1);
    ck_assert_int_eq(next, now + 5000);
    ck_assert_int_eq(spool_update_rcpt(sp, r2, SPOOL_RCPT_DELIVERED, 2, 0, "250"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_int_eq(spool_next_due_ms(sp, &next), 0);
    ck_assert_int_eq(next, 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    spool_close(sp);
    free(dir);
}
END_TEST

typedef struct count_list {
    size_t n;
    char set[16][32];
    char domain[16][32];
    spool_rcpt_state state[16];
    int64_t count[16];
} count_list;

static void collect_count(void *arg, const char *set, const char *domain, spool_rcpt_state st,
                          int64_t count)
{
    count_list *l = arg;
    ck_assert_uint_lt(l->n, 16);
    snprintf(l->set[l->n], sizeof l->set[0], "%s", set);
    snprintf(l->domain[l->n], sizeof l->domain[0], "%s", domain);
    l->state[l->n] = st;
    l->count[l->n] = count;
    l->n++;
}

static void add_msg_in_set(spool *sp, const char *id, const char *set)
{
    static const char body[] = "Subject: hi\r\n\r\nhello\r\n";
    spool_message m = make_msg(id, util_wall_ms(), body, sizeof body - 1, 0);
    m.config_set = set;
    ck_assert_int_eq(spool_add_message(sp, &m), 0);
}

START_TEST(test_count_by)
{
    char *dir = new_dir();
    spool *sp = testlib_spool_open(dir, true);
    count_list l = {0};
    ck_assert_int_eq(spool_count_by(sp, collect_count, &l), 0);
    ck_assert_uint_eq(l.n, 0);

    int64_t now = util_wall_ms();
    add_msg_in_set(sp, "T1", "txn");
    add_msg_in_set(sp, "T2", "txn");
    add_msg_in_set(sp, "M1", "marketing");
    int64_t r;
    ck_assert_int_eq(spool_add_rcpt(sp, "T1", "a@B.test", SPOOL_RCPT_QUEUED, NULL), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "T2", "b@b.test", SPOOL_RCPT_QUEUED, NULL), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "T2", "c@b.test", SPOOL_RCPT_QUEUED, &r), 0);
    ck_assert_int_eq(spool_update_rcpt(sp, r, SPOOL_RCPT_DEFERRED, 1, now + 1000, "451"), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "T1", "d@a.test", SPOOL_RCPT_QUEUED, NULL), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "T1", "e@a.test", SPOOL_RCPT_DELIVERED, NULL), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "M1", "f@b.test", SPOOL_RCPT_QUEUED, NULL), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "M1", "g@c.test", SPOOL_RCPT_QUEUED, &r), 0);
    ck_assert_int_eq(spool_update_rcpt(sp, r, SPOOL_RCPT_BOUNCED, 1, 0, "550"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);

    ck_assert_int_eq(spool_count_by(sp, collect_count, &l), 0);
    static const struct { const char *set, *domain; spool_rcpt_state st; int64_t n; } want[] = {
        {"marketing", "b.test", SPOOL_RCPT_QUEUED, 1},
        {"txn", "a.test", SPOOL_RCPT_QUEUED, 1},
        {"txn", "b.test", SPOOL_RCPT_QUEUED, 2},   /* "a@B.test" counts as b.test */
        {"txn", "b.test", SPOOL_RCPT_DEFERRED, 1},
    };
    ck_assert_uint_eq(l.n, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < l.n; i++) {
        ck_assert_str_eq(l.set[i], want[i].set);
        ck_assert_str_eq(l.domain[i], want[i].domain);
        ck_assert_int_eq(l.state[i], want[i].st);
        ck_assert_int_eq(l.count[i], want[i].n);
    }
    spool_close(sp);
    free(dir);
}
END_TEST

/* 1 if the spool database at DB has an index named NAME. */
static int has_index(const char *db, const char *name)
{
    sqlite3 *h = NULL;
    ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(h, "SELECT count(*) FROM sqlite_master WHERE type ="
                                           " 'index' AND name = ?1", -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(h);
    return n;
}

/* A version-1 spool written before recipients had a domain column (and before the index for
 * paging) gets both at open, with the domain of every recipient already there, and keeps
 * schema version 1. */
START_TEST(test_domain_column_added_to_old_spool)
{
    char *dir = new_dir();
    char *db = util_asprintf("%s/kiln.db", dir);
    spool *sp = testlib_spool_open(dir, true);
    int64_t now = util_wall_ms();
    add_msg_in_set(sp, "A", "txn");
    int64_t r1, r2;
    ck_assert_int_eq(spool_add_rcpt(sp, "A", "one@Old.TEST", SPOOL_RCPT_QUEUED, &r1), 0);
    ck_assert_int_eq(spool_add_rcpt(sp, "A", "two@other.test", SPOOL_RCPT_QUEUED, &r2), 0);
    ck_assert_int_eq(spool_update_rcpt(sp, r2, SPOOL_RCPT_DEFERRED, 3, now - 10, "451"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    spool_close(sp);
    ck_assert_int_eq(has_index(db, "recipients_due"), 1);

    /* Make it look as an older kiln left it. */
    sqlite3 *h = NULL;
    ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(h, "DROP INDEX recipients_due;"
                             " ALTER TABLE recipients DROP COLUMN domain;", NULL, NULL, &msg);
    ck_assert_msg(rc == SQLITE_OK, "%s", msg ? msg : "?");
    sqlite3_close(h);
    ck_assert_int_eq(has_index(db, "recipients_due"), 0);

    sp = testlib_spool_open(dir, true);
    rcpt_list *l = due_page(sp, now, 0, 10);
    ck_assert_uint_eq(l->n, 2);
    ck_assert_int_eq(l->rowid[0], r1);
    ck_assert_str_eq(l->domain[0], "old.test");
    ck_assert_int_eq(l->rowid[1], r2);
    ck_assert_str_eq(l->domain[1], "other.test");
    ck_assert_int_eq(l->attempts[1], 3);
    free(l);
    count_list c = {0};
    ck_assert_int_eq(spool_count_by(sp, collect_count, &c), 0);
    ck_assert_uint_eq(c.n, 2);
    ck_assert_str_eq(c.domain[0], "old.test");
    ck_assert_str_eq(c.domain[1], "other.test");
    /* New recipients get theirs at insert. */
    int64_t r3;
    ck_assert_int_eq(spool_add_rcpt(sp, "A", "three@New.test", SPOOL_RCPT_QUEUED, &r3), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    rcpt_list *p = pending(sp, "A");
    ck_assert_uint_eq(p->n, 3);
    ck_assert_str_eq(p->domain[2], "new.test");
    free(p);
    spool_close(sp);
    ck_assert_int_eq(has_index(db, "recipients_due"), 1);

    /* Opening again changes nothing. */
    sp = testlib_spool_open(dir, true);
    l = due_page(sp, now, 0, 10);
    ck_assert_uint_eq(l->n, 3);
    free(l);
    spool_close(sp);
    ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int(st, 0), 1);
    sqlite3_finalize(st);
    sqlite3_close(h);
    free(db);
    free(dir);
}
END_TEST

START_TEST(test_sends_window_across_reopen)
{
    char *dir = new_dir();
    spool *sp = testlib_spool_open(dir, true);
    int64_t now = util_wall_ms();
    add_msg(sp, "old", now - 25 * HOUR_MS, 4);
    add_msg(sp, "recent-1", now - 2 * HOUR_MS, 2);
    add_msg(sp, "recent-2", now - 2 * HOUR_MS, 3);  /* same ms: summed */
    add_msg(sp, "recent-3", now - HOUR_MS, 1);
    add_msg(sp, "no-quota", now - HOUR_MS / 2, 0); /* quota_count 0: no sends row */
    ck_assert_int_eq(spool_flush(sp), 0);

    /* Sends outlive their messages. */
    ck_assert_int_eq(spool_message_gc(sp, "recent-1"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert(!testlib_spool_has(sp, "recent-1"));

    sent_list sl = {0};
    ck_assert_int_eq(spool_each_sent_since(sp, now - 3 * HOUR_MS, collect_sent, &sl), 0);
    ck_assert_uint_eq(sl.n, 2);
    ck_assert_int_eq(sl.at[0], now - 2 * HOUR_MS);
    ck_assert_uint_eq(sl.count[0], 5);
    ck_assert_int_eq(sl.at[1], now - HOUR_MS);
    ck_assert_uint_eq(sl.count[1], 1);
    spool_close(sp);

    /* After a restart the window is the same; the row older than 24 h was pruned. */
    sp = testlib_spool_open(dir, true);
    sent_list all = {0};
    ck_assert_int_eq(spool_each_sent_since(sp, 0, collect_sent, &all), 0);
    ck_assert_uint_eq(all.n, 2);
    ck_assert_int_eq(all.at[0], now - 2 * HOUR_MS);
    ck_assert_uint_eq(all.count[0], 5);
    ck_assert_uint_eq(all.count[1], 1);
    spool_close(sp);
    free(dir);
}
END_TEST

START_TEST(test_suppression)
{
    char *dir = new_dir();
    spool *sp = testlib_spool_open(dir, true);
    ck_assert_int_eq(spool_suppression_put(sp, "Zed@Example.TEST", "BOUNCE", 100), 0);
    ck_assert_int_eq(spool_suppression_put(sp, "amy@example.test", "COMPLAINT", 200), 0);
    ck_assert_int_eq(spool_suppression_put(sp, "mid@example.test", "BOUNCE", 300), 0);
    ck_assert_int_eq(spool_flush(sp), 0);

    /* Upsert, matching case-insensitively. */
    ck_assert_int_eq(spool_suppression_put(sp, "ZED@example.test", "COMPLAINT", 400), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    bool found = false;
    char *reason = NULL;
    int64_t at = 0;
    ck_assert_int_eq(spool_suppression_get(sp, "zEd@EXAMPLE.test", &found, &reason, &at), 0);
    ck_assert(found);
    ck_assert_str_eq(reason, "COMPLAINT");
    ck_assert_int_eq(at, 400);
    free(reason);

    supp_list l = {0};
    ck_assert_int_eq(spool_suppression_each(sp, collect_supp, &l), 0);
    ck_assert_uint_eq(l.n, 3);
    ck_assert_str_eq(l.addr[0], "amy@example.test");
    ck_assert_str_eq(l.addr[1], "mid@example.test");
    ck_assert_str_eq(l.addr[2], "zed@example.test");
    ck_assert_str_eq(l.reason[0], "COMPLAINT");
    ck_assert_int_eq(l.at[2], 400);

    bool existed = false;
    ck_assert_int_eq(spool_suppression_delete(sp, "MID@example.test", &existed), 0);
    ck_assert(existed);
    ck_assert_int_eq(spool_suppression_delete(sp, "nobody@example.test", &existed), 0);
    ck_assert(!existed);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_int_eq(spool_suppression_get(sp, "mid@example.test", &found, &reason, &at), 0);
    ck_assert(!found);
    ck_assert_ptr_null(reason);
    spool_close(sp);

    sp = testlib_spool_open(dir, true);
    supp_list l2 = {0};
    ck_assert_int_eq(spool_suppression_each(sp, collect_supp, &l2), 0);
    ck_assert_uint_eq(l2.n, 2);
    ck_assert_str_eq(l2.addr[0], "amy@example.test");
    ck_assert_str_eq(l2.addr[1], "zed@example.test");
    spool_close(sp);
    free(dir);
}
END_TEST

START_TEST(test_events_outbox)
{
    char *dir = new_dir();
    spool *sp = testlib_spool_open(dir, true);
    for (int i = 0; i < 5; i++) {
        char json[32];
        snprintf(json, sizeof json, "{\"n\":%d}", i);
        ck_assert_int_eq(spool_add_event(sp, i % 2 ? "odd" : "even", json), 0);
    }
    ck_assert_int_eq(spool_flush(sp), 0);

    event_list l = {0};
    ck_assert_int_eq(spool_each_event(sp, 0, 3, collect_event, &l), 0);
    ck_assert_uint_eq(l.n, 3);
    ck_assert_str_eq(l.json[0], "{\"n\":0}");
    ck_assert_str_eq(l.set[1], "odd");
    ck_assert_int_lt(l.id[0], l.id[1]);
    ck_assert_int_lt(l.id[1], l.id[2]);

    event_list rest = {0};
    ck_assert_int_eq(spool_each_event(sp, l.id[2], 100, collect_event, &rest), 0);
    ck_assert_uint_eq(rest.n, 2);
    ck_assert_str_eq(rest.json[0], "{\"n\":3}");
    ck_assert_str_eq(rest.json[1], "{\"n\":4}");

    ck_assert_int_eq(spool_delete_events(sp, l.id[2]), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    spool_close(sp);

    sp = testlib_spool_open(dir, true);
    event_list after = {0};
    ck_assert_int_eq(spool_each_event(sp, 0, 100, collect_event, &after), 0);
    ck_assert_uint_eq(after.n, 2);
    ck_assert_int_eq(after.id[0], rest.id[0]);
    /* Ids are never reused, even after the newest rows are deleted. */
    ck_assert_int_eq(spool_delete_events(sp, INT64_MAX), 0);
    ck_assert_int_eq(spool_add_event(sp, "even", "{}"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    event_list fresh = {0};
    ck_assert_int_eq(spool_each_event(sp, 0, 100, collect_event, &fresh), 0);
    ck_assert_uint_eq(fresh.n, 1);
    ck_assert_int_gt(fresh.id[0], rest.id[1]);
    spool_close(sp);
    free(dir);
}
END_TEST

typedef struct stats_list {
    size_t n;
    int64_t v[8][5];
} stats_list;

static void collect_stats(void *arg, int64_t bucket_ms, int64_t attempts, int64_t bounces,
                          int64_t complaints, int64_t rejects)
{
    stats_list *l = arg;
    ck_assert_uint_lt(l->n, 8);
    int64_t *r = l->v[l->n++];
    r[0] = bucket_ms, r[1] = attempts, r[2] = bounces, r[3] = complaints, r[4] = rejects;
}

/* Counts of one bucket add up (also within one batch), buckets come oldest first from
 * since_ms on, survive a restart, and buckets older than 14 days are pruned. */
START_TEST(test_stats_buckets)
{
    const int64_t q = 15 * 60 * 1000LL;
    char *dir = new_dir();
    spool *sp = testlib_spool_open(dir, true);
    int64_t now = util_wall_ms() / q * q;
    ck_assert_int_eq(spool_stats_add(sp, now, 1, 0, 0, 0), 0);
    ck_assert_int_eq(spool_stats_add(sp, now, 2, 1, 0, 1), 0);   /* same batch: summed */
    ck_assert_int_eq(spool_stats_add(sp, now - 4 * q, 5, 0, 1, 0), 0);
    ck_assert_int_eq(spool_stats_add(sp, now - 15 * 24 * HOUR_MS, 9, 9, 9, 9), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_int_eq(spool_stats_add(sp, now, 0, 0, 2, 0), 0);   /* next batch: summed */
    ck_assert_int_eq(spool_flush(sp), 0);

    stats_list l = {0};
    ck_assert_int_eq(spool_stats_each(sp, now - 4 * q, collect_stats, &l), 0);
    ck_assert_uint_eq(l.n, 2);
    ck_assert_int_eq(l.v[0][0], now - 4 * q);
    ck_assert_int_eq(l.v[0][1], 5);
    ck_assert_int_eq(l.v[0][3], 1);
    ck_assert_int_eq(l.v[1][0], now);
    ck_assert_int_eq(l.v[1][1], 3);
    ck_assert_int_eq(l.v[1][2], 1);
    ck_assert_int_eq(l.v[1][3], 2);
    ck_assert_int_eq(l.v[1][4], 1);
    l.n = 0;
    ck_assert_int_eq(spool_stats_each(sp, now - 3 * q, collect_stats, &l), 0);
    ck_assert_uint_eq(l.n, 1);
    spool_close(sp);

    /* After a restart the recent buckets are there; the 15-day-old one was pruned. */
    sp = testlib_spool_open(dir, true);
    l.n = 0;
    ck_assert_int_eq(spool_stats_each(sp, 0, collect_stats, &l), 0);
    ck_assert_uint_eq(l.n, 2);
    ck_assert_int_eq(l.v[0][0], now - 4 * q);
    ck_assert_int_eq(l.v[1][0], now);
    ck_assert_int_eq(l.v[1][1], 3);
    spool_close(sp);
    free(dir);
}
END_TEST

START_TEST(test_kv)
{
    char *dir = new_dir();
    spool *sp = testlib_spool_open(dir, true);
    char *v = (char *)"sentinel";
    /* Absent key: NULL, not an error. */
    ck_assert_int_eq(spool_kv_get(sp, "pools", &v), 0);
    ck_assert_ptr_null(v);

    ck_assert_int_eq(spool_kv_put(sp, "pools", "{\"ips\":[]}"), 0);
    ck_assert_int_eq(spool_kv_put(sp, "other", ""), 0);
    /* Reads see the open batch. */
    ck_assert_int_eq(spool_kv_get(sp, "pools", &v), 0);
    ck_assert_str_eq(v, "{\"ips\":[]}");
    free(v);
    ck_assert_int_eq(spool_flush(sp), 0);

    /* A later put replaces the value. */
    ck_assert_int_eq(spool_kv_put(sp, "pools", "{\"ips\":[1]}"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    spool_close(sp);

    sp = testlib_spool_open(dir, true);
    ck_assert_int_eq(spool_kv_get(sp, "pools", &v), 0);
    ck_assert_str_eq(v, "{\"ips\":[1]}");
    free(v);
    ck_assert_int_eq(spool_kv_get(sp, "other", &v), 0);
    ck_assert_str_eq(v, "");
    free(v);
    spool_close(sp);

    /* A version-1 spool written before the kv table existed gets it at open and keeps its
     * messages. */
    char *db = util_asprintf("%s/kiln.db", dir);
    sp = testlib_spool_open(dir, true);
    add_msg(sp, "kept", util_wall_ms(), 1);
    ck_assert_int_eq(spool_flush(sp), 0);
    spool_close(sp);
    sqlite3 *h = NULL;
    ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(h, "DROP TABLE kv", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);
    sp = testlib_spool_open(dir, true);
    ck_assert(testlib_spool_has(sp, "kept"));
    ck_assert_int_eq(spool_kv_get(sp, "pools", &v), 0);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(spool_kv_put(sp, "pools", "x"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_int_eq(spool_kv_get(sp, "pools", &v), 0);
    ck_assert_str_eq(v, "x");
    free(v);
    spool_close(sp);
    ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int(st, 0), 1);
    sqlite3_finalize(st);
    sqlite3_close(h);
    free(db);
    free(dir);
}
END_TEST

START_TEST(test_open_errors)
{
    char *dir = new_dir();
    char *db = util_asprintf("%s/kiln.db", dir);
    char *err = NULL;

    /* A file that is not a database. */
    FILE *f = fopen(db, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 200; i++) fputs("this is not an SQLite database\n", f);
    fclose(f);
    ck_assert_ptr_null(spool_open(dir, true, &err));
    ck_assert_ptr_nonnull(err);
    ck_assert_msg(strstr(err, db) != NULL, "error does not name %s: %s", db, err);
    free(err);
    err = NULL;
    unlink(db);

    /* A schema written by a newer kiln. */
    spool *sp = testlib_spool_open(dir, true);
    spool_close(sp);
    sqlite3 *h = NULL;
    ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(h, "PRAGMA user_version = 7", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);
    ck_assert_ptr_null(spool_open(dir, true, &err));
    ck_assert_ptr_nonnull(err);
    ck_assert_msg(strstr(err, db) && strstr(err, "version 7"), "error: %s", err);
    free(err);
    err = NULL;

    /* A spool directory that cannot be created (its parent is a file). */
    char *bad = util_asprintf("%s/sub", db);
    ck_assert_ptr_null(spool_open(bad, true, &err));
    ck_assert_ptr_nonnull(err);
    ck_assert_msg(strstr(err, bad) != NULL, "error does not name %s: %s", bad, err);
    free(err);
    free(bad);
    free(db);
    free(dir);
}
END_TEST

static Suite *spool_suite(void)
{
    Suite *s = suite_create("spool");
    TCase *tc = tcase_create("spool");
    tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_reopen_keeps_everything);
    tcase_add_test(tc, test_group_commit_100);
    tcase_add_test(tc, test_unflushed_batch_lost_in_crash);
    tcase_add_test(tc, test_failed_statement_fails_batch);
    tcase_add_test(tc, test_callbacks_write_to_next_batch);
    tcase_add_test(tc, test_update_rcpt_deletes_finished_message);
    tcase_add_test(tc, test_pending_order_filter_and_counts);
    tcase_add_test(tc, test_read_callbacks_may_read_and_write);
    tcase_add_test(tc, test_due_pages);
    tcase_add_loop_test(tc, test_due_sweep, 0, 2);
    tcase_add_test(tc, test_next_due);
    tcase_add_test(tc, test_count_by);
    tcase_add_test(tc, test_domain_column_added_to_old_spool);
    tcase_add_test(tc, test_sends_window_across_reopen);
    tcase_add_test(tc, test_stats_buckets);
    tcase_add_test(tc, test_suppression);
    tcase_add_test(tc, test_events_outbox);
    tcase_add_test(tc, test_kv);
    tcase_add_test(tc, test_open_errors);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(spool_suite);
