/* spool_writer.c — the spool's writer thread: it runs the batches the loop hands over
 * (spool_write.c) on its own SQLite connection, as BEGIN IMMEDIATE, one statement per
 * recorded write, COMMIT (one fsync with synchronous=FULL), and hands each batch back
 * finished, with ok=false and the first error's text if any statement or the COMMIT failed,
 * in which case the transaction is rolled back: nothing of a failed batch stays.
 *
 * Promises: the thread touches only its connection and the batch it was handed (read-only,
 * except its ok/err result); no SQLite object is shared with the loop thread; the hand-over
 * and the hand-back go through one mutex and two condition variables; the wake callback runs
 * on this thread, under that mutex, once per finished batch (so a wake callback cleared with
 * spool_set_wake is never called afterwards). The thread blocks every signal: they are the
 * event loop's. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/util.h"
#include "store/spool_internal.h"

#define SPOOL_BLOB_STEP (1024 * 1024)            /* bytes per sqlite3_blob_write */
#define SPOOL_DAY_MS (24LL * 3600 * 1000)
#define SPOOL_STATS_KEEP_MS (14 * SPOOL_DAY_MS) /* SES shows two weeks of statistics */
#define SPOOL_RETRY_FIRST_MS 50                  /* the wait after a failed batch ... */
#define SPOOL_RETRY_MAX_MS 2000                  /* ... doubling up to this */
#define SPOOL_RETRY_CLOSING_MS 100               /* ... and up to this while closing */

/* Whether an SQLite result code says the environment failed (the disk is full, an I/O
 * error, a read-only file system, a lock held too long, no memory): the same writes may
 * succeed later. Any other failure is the write's own (a constraint, a missing row). */
static bool spool_writer_transient(int code)
{
    switch (code & 0xff) {
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_READONLY:
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_NOMEM:
    case SQLITE_CANTOPEN:
    case SQLITE_PROTOCOL:
        return true;
    default:
        return false;
    }
}

/* Marks b failed with "spool PATH: WHAT KEY: SQLite's message" (the first failure wins);
 * why != NULL: a failure of the write itself, with that text. */
static void spool_writer_fail(spool_writer *w, spool_batch *b, const char *what, const char *key,
                              const char *why)
{
    if (!b->ok) return;
    b->ok = false;
    b->transient = !why && spool_writer_transient(sqlite3_extended_errcode(w->db));
    b->err = util_asprintf("spool %s: %s%s%s: %s", w->path, what, key ? " " : "", key ? key : "",
                           why ? why : sqlite3_errmsg(w->db));
}

static void spool_writer_reset(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Steps st to completion: 0, or -1 with b failed. Leaves st reset. */
static int spool_writer_step(spool_writer *w, spool_batch *b, sqlite3_stmt *st, const char *what,
                             const char *key)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    if (rc != SQLITE_DONE) spool_writer_fail(w, b, what, key, NULL);
    spool_writer_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static void spool_writer_bind(sqlite3_stmt *st, int i, const char *s)
{
    sqlite3_bind_text(st, i, s ? s : "", -1, SQLITE_STATIC);
}

/* Writes data into the zeroblob of messages row `rowid`: 0, or -1 with b failed. */
static int spool_writer_blob(spool_writer *w, spool_batch *b, sqlite3_int64 rowid,
                             const spool_op *op)
{
    sqlite3_blob *blob = NULL;
    int rc = sqlite3_blob_open(w->db, "main", "messages", "data", rowid, 1, &blob);
    size_t off = 0, len = op->u.msg.data_len;
    while (rc == SQLITE_OK && off < len) {
        size_t n = len - off < SPOOL_BLOB_STEP ? len - off : SPOOL_BLOB_STEP;
        rc = sqlite3_blob_write(blob, op->u.msg.data + off, (int)n, (int)off);
        off += n;
    }
    if (rc != SQLITE_OK) spool_writer_fail(w, b, "write data of", op->u.msg.id, NULL);
    int rc2 = sqlite3_blob_close(blob);          /* NULL is a no-op */
    if (rc == SQLITE_OK && rc2 != SQLITE_OK) {
        spool_writer_fail(w, b, "write data of", op->u.msg.id, NULL);
        rc = rc2;
    }
    return rc == SQLITE_OK ? 0 : -1;
}

static int spool_writer_add_msg(spool_writer *w, spool_batch *b, const spool_op *op)
{
    sqlite3_stmt *st = w->st[ST_ADD_MSG];
    spool_writer_bind(st, 1, op->u.msg.id);
    sqlite3_bind_int64(st, 2, op->u.msg.created_ms);
    spool_writer_bind(st, 3, op->u.msg.config_set);
    spool_writer_bind(st, 4, op->u.msg.mail_from);
    spool_writer_bind(st, 5, op->u.msg.client_ip);
    spool_writer_bind(st, 6, op->u.msg.mail_json);
    /* A large message is inserted as a zeroblob and written into its pages with SQLite's
     * incremental blob I/O: binding it whole would make SQLite build the row record, a
     * second in-memory copy of the message. Smaller ones are bound as they are (no copy:
     * the batch holds them until it is reaped). A non-NULL pointer so that an empty
     * message is an empty blob, not NULL. */
    size_t len = op->u.msg.data_len;
    bool incremental = len >= SPOOL_BLOB_INCREMENTAL && len <= INT_MAX;
    if (incremental)
        sqlite3_bind_zeroblob64(st, 7, len);
    else
        sqlite3_bind_blob64(st, 7, op->u.msg.data ? op->u.msg.data : "", len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, op->u.msg.quota_count);
    if (spool_writer_step(w, b, st, "add message", op->u.msg.id) < 0) return -1;
    if (incremental && spool_writer_blob(w, b, sqlite3_last_insert_rowid(w->db), op) < 0)
        return -1;
    if (op->u.msg.quota_count == 0) return 0;
    st = w->st[ST_ADD_SEND];
    sqlite3_bind_int64(st, 1, op->u.msg.created_ms);
    sqlite3_bind_int64(st, 2, op->u.msg.quota_count);
    return spool_writer_step(w, b, st, "record send of", op->u.msg.id);
}

/* Deletes msg_id if none of its recipients is pending; with the batch's keep_sent, copies it
 * into sent_mail first (the same condition: nothing is copied while it stays queued). */
static int spool_writer_gc(spool_writer *w, spool_batch *b, const char *msg_id)
{
    sqlite3_stmt *st;
    if (b->keep_sent) {
        st = w->st[ST_SENT_COPY];
        spool_writer_bind(st, 1, msg_id);
        if (spool_writer_step(w, b, st, "keep finished message", msg_id) < 0) return -1;
    }
    st = w->st[ST_GC_MSG];
    spool_writer_bind(st, 1, msg_id);
    return spool_writer_step(w, b, st, "delete finished message", msg_id);
}

/* Records an outcome; a final one deletes the message when nothing of it is pending. */
static int spool_writer_update(spool_writer *w, spool_batch *b, const spool_op *op)
{
    char key[32];
    snprintf(key, sizeof key, "%" PRId64, op->u.upd.id);
    sqlite3_stmt *st = w->st[ST_UPD_RCPT];
    sqlite3_bind_int64(st, 1, op->u.upd.id);
    sqlite3_bind_int(st, 2, op->u.upd.state);
    sqlite3_bind_int(st, 3, op->u.upd.attempts);
    sqlite3_bind_int64(st, 4, op->u.upd.next_ms);
    if (op->u.upd.last_reply)
        sqlite3_bind_text(st, 5, op->u.upd.last_reply, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 5);
    char *msg_id = NULL;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        if (!msg_id) msg_id = util_strdup(t ? (const char *)t : "");
    }
    if (rc != SQLITE_DONE) spool_writer_fail(w, b, "update recipient", key, NULL);
    spool_writer_reset(st);
    if (rc != SQLITE_DONE) {
        free(msg_id);
        return -1;
    }
    if (!msg_id) {
        spool_writer_fail(w, b, "update recipient", key, "no such recipient");
        return -1;
    }
    rc = 0;
    if (op->u.upd.state == SPOOL_RCPT_DELIVERED || op->u.upd.state == SPOOL_RCPT_BOUNCED)
        rc = spool_writer_gc(w, b, msg_id);
    free(msg_id);
    return rc;
}

/* Runs one recorded write: 0, or -1 with b failed. */
static int spool_writer_op(spool_writer *w, spool_batch *b, const spool_op *op)
{
    sqlite3_stmt *st;
    switch (op->kind) {
    case SPOOL_OP_ADD_MSG:
        return spool_writer_add_msg(w, b, op);
    case SPOOL_OP_ADD_RCPT:
        st = w->st[ST_ADD_RCPT];
        spool_writer_bind(st, 1, op->u.rcpt.msg_id);
        spool_writer_bind(st, 2, op->u.rcpt.address);
        sqlite3_bind_int(st, 3, op->u.rcpt.state);
        sqlite3_bind_int64(st, 4, op->u.rcpt.id);
        return spool_writer_step(w, b, st, "add recipient to", op->u.rcpt.msg_id);
    case SPOOL_OP_UPD_RCPT:
        return spool_writer_update(w, b, op);
    case SPOOL_OP_GC_MSG:
        return spool_writer_gc(w, b, op->u.gc.msg_id);
    case SPOOL_OP_ADD_EVENT:
        st = w->st[ST_ADD_EVENT];
        spool_writer_bind(st, 1, op->u.event.set);
        spool_writer_bind(st, 2, op->u.event.json);
        return spool_writer_step(w, b, st, "add event for set", op->u.event.set);
    case SPOOL_OP_DEL_EVENTS:
        st = w->st[ST_DEL_EVENTS];
        sqlite3_bind_int64(st, 1, op->u.del_events.upto);
        return spool_writer_step(w, b, st, "delete events", NULL);
    case SPOOL_OP_SUPP_PUT:
        st = w->st[ST_SUPP_PUT];
        spool_writer_bind(st, 1, op->u.supp.address);
        spool_writer_bind(st, 2, op->u.supp.reason);
        sqlite3_bind_int64(st, 3, op->u.supp.at_ms);
        return spool_writer_step(w, b, st, "suppress", op->u.supp.address);
    case SPOOL_OP_SUPP_DEL:
        st = w->st[ST_SUPP_DEL];
        spool_writer_bind(st, 1, op->u.supp.address);
        return spool_writer_step(w, b, st, "unsuppress", op->u.supp.address);
    case SPOOL_OP_KV_PUT:
        st = w->st[ST_KV_PUT];
        spool_writer_bind(st, 1, op->u.kv.key);
        spool_writer_bind(st, 2, op->u.kv.value);
        return spool_writer_step(w, b, st, "store value", op->u.kv.key);
    case SPOOL_OP_KV_DEL:
        st = w->st[ST_KV_DEL];
        spool_writer_bind(st, 1, op->u.kv.key);
        return spool_writer_step(w, b, st, "delete value", op->u.kv.key);
    case SPOOL_OP_STATS_ADD:
        st = w->st[ST_STATS_ADD];
        sqlite3_bind_int64(st, 1, op->u.stats.bucket_ms);
        sqlite3_bind_int64(st, 2, op->u.stats.attempts);
        sqlite3_bind_int64(st, 3, op->u.stats.bounces);
        sqlite3_bind_int64(st, 4, op->u.stats.complaints);
        sqlite3_bind_int64(st, 5, op->u.stats.rejects);
        return spool_writer_step(w, b, st, "add send statistics", NULL);
    case SPOOL_OP_SENT_PRUNE:
        st = w->st[ST_SENT_PRUNE];
        sqlite3_bind_int64(st, 1, op->u.sent_prune.before_ms);
        return spool_writer_step(w, b, st, "prune sent mail", NULL);
    case SPOOL_OP_FBIN_ADD:
        st = w->st[ST_FBIN_ADD];
        sqlite3_bind_int64(st, 1, op->u.fbin.id);
        sqlite3_bind_int64(st, 2, op->u.fbin.received_ms);
        spool_writer_bind(st, 3, op->u.fbin.client_ip);
        spool_writer_bind(st, 4, op->u.fbin.mail_from);
        spool_writer_bind(st, 5, op->u.fbin.rcpts);
        sqlite3_bind_blob64(st, 6, op->u.fbin.data ? op->u.fbin.data : "", op->u.fbin.len,
                            SQLITE_STATIC);
        return spool_writer_step(w, b, st, "add feedback report from", op->u.fbin.client_ip);
    case SPOOL_OP_FBIN_DEL: {
        char key[32];
        snprintf(key, sizeof key, "%" PRId64, op->u.fbin.id);
        st = w->st[ST_FBIN_DEL];
        sqlite3_bind_int64(st, 1, op->u.fbin.id);
        return spool_writer_step(w, b, st, "delete feedback report", key);
    }
    }
    spool_writer_fail(w, b, "unknown write", NULL, "internal error");
    return -1;
}

/* The prune statements: 0, or -1 with b failed. */
static int spool_writer_prune_in(spool_writer *w, spool_batch *b)
{
    int64_t now = util_wall_ms();
    sqlite3_bind_int64(w->st[ST_PRUNE_SENDS], 1, now - SPOOL_DAY_MS);
    if (spool_writer_step(w, b, w->st[ST_PRUNE_SENDS], "prune sends", NULL) < 0) return -1;
    sqlite3_bind_int64(w->st[ST_PRUNE_STATS], 1, now - SPOOL_STATS_KEEP_MS);
    if (spool_writer_step(w, b, w->st[ST_PRUNE_STATS], "prune stats", NULL) < 0) return -1;
    w->last_prune_mono = util_mono_ms();
    return 0;
}

int spool_writer_prune(spool_writer *w, char **err)
{
    spool_batch b = {.ok = true};
    if (spool_writer_prune_in(w, &b) == 0) return 0;
    *err = b.err;
    return -1;
}

/* One batch: BEGIN IMMEDIATE, its writes in order, COMMIT; on any failure, ROLLBACK.
 * test_fail (spool_test_fail_batches) fails it at the commit, as a full disk would. */
static void spool_writer_run(spool_writer *w, spool_batch *b, int test_fail_code)
{
    b->ok = true;
    b->err = NULL;
    b->transient = false;
    b->fail_op = -1;
    if (b->nops == 0) return;
    if (spool_writer_step(w, b, w->st[ST_BEGIN], "begin batch", NULL) < 0) return;
    for (size_t i = 0; i < b->nops; i++)
        if (spool_writer_op(w, b, &b->ops[i]) < 0) {
            b->fail_op = (long)i;
            break;
        }
    if (b->ok && test_fail_code) {
        b->ok = false;
        b->transient = spool_writer_transient(test_fail_code);
        b->err = util_asprintf("spool %s: commit: %s (spool_test_fail_batches)", w->path,
                               sqlite3_errstr(test_fail_code));
    }
    /* SQLite may roll a transaction back on its own (I/O error, disk full): then part of
     * the batch would have run outside it */
    if (b->ok && sqlite3_get_autocommit(w->db))
        spool_writer_fail(w, b, "the batch was rolled back by SQLite", NULL, NULL);
    if (b->ok && util_mono_ms() - w->last_prune_mono >= SPOOL_PRUNE_EVERY_MS)
        spool_writer_prune_in(w, b);
    if (b->ok) spool_writer_step(w, b, w->st[ST_COMMIT], "commit", NULL);
    if (!b->ok && !sqlite3_get_autocommit(w->db)) {
        /* a failed rollback leaves the connection in its transaction: the next BEGIN
         * fails and so does that batch, which is reported the same way */
        spool_batch rb = {.ok = true};
        spool_writer_step(w, &rb, w->st[ST_ROLLBACK], "rollback", NULL);
        free(rb.err);
    }
}

/* After a batch failed because of the environment, the next one waits: 50 ms, doubling
 * with each failure in a row up to 2 s (100 ms while closing), so a full disk costs a
 * commit attempt per wait, not a spinning CPU. Returns early on stop. Called under mu. */
static void spool_writer_backoff(spool_writer *w)
{
    if (w->fail_streak == 0 || w->stop) return;
    int64_t wait = SPOOL_RETRY_FIRST_MS;
    for (unsigned i = 1; i < w->fail_streak && wait < SPOOL_RETRY_MAX_MS; i++) wait *= 2;
    if (wait > SPOOL_RETRY_MAX_MS) wait = SPOOL_RETRY_MAX_MS;
    if (w->hurry && wait > SPOOL_RETRY_CLOSING_MS) wait = SPOOL_RETRY_CLOSING_MS;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(wait / 1000);
    until.tv_nsec += (long)(wait % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    bool hurried = w->hurry;
    while (!w->stop && (hurried || !w->hurry) &&
           pthread_cond_timedwait(&w->work, &w->mu, &until) != ETIMEDOUT)
        ;
}

static void *spool_writer_main(void *arg)
{
    spool_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stop && (!w->job || w->job_done)) pthread_cond_wait(&w->work, &w->mu);
        if (w->job && !w->job_done) {
            spool_batch *b = w->job;
            spool_writer_backoff(w);
            int test_fail_code = 0;
            if (w->test_fail) {
                w->test_fail--;
                test_fail_code = w->test_fail_code;
            }
            pthread_mutex_unlock(&w->mu);
            spool_writer_run(w, b, test_fail_code);
            if (b->ok) w->fail_streak = 0;
            else if (b->transient) w->fail_streak++;
            pthread_mutex_lock(&w->mu);
            w->job_done = true;
            pthread_cond_broadcast(&w->done);
            if (w->wake) w->wake(w->wake_arg);
            continue;
        }
        if (w->stop) break;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int spool_writer_start(spool_writer *w, char **err)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&w->thread, NULL, spool_writer_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        *err = util_asprintf("spool %s: cannot start the writer thread: %s", w->path,
                             strerror(rc));
        return -1;
    }
    w->started = true;
    return 0;
}

void spool_writer_stop(spool_writer *w)
{
    if (!w->started) return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    w->started = false;
}

void spool_writer_submit(spool_writer *w, spool_batch *b)
{
    pthread_mutex_lock(&w->mu);
    if (w->job) util_fatal("spool %s: a batch was handed over while another runs", w->path);
    w->job = b;
    w->job_done = false;
    pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->mu);
}

spool_batch *spool_writer_take_done(spool_writer *w)
{
    spool_batch *b = NULL;
    pthread_mutex_lock(&w->mu);
    if (w->job && w->job_done) {
        b = w->job;
        w->job = NULL;
        w->job_done = false;
    }
    pthread_mutex_unlock(&w->mu);
    return b;
}

void spool_writer_wait(spool_writer *w)
{
    pthread_mutex_lock(&w->mu);
    while (w->job && !w->job_done) pthread_cond_wait(&w->done, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

void spool_writer_hurry(spool_writer *w)
{
    pthread_mutex_lock(&w->mu);
    w->hurry = true;
    pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->mu);
}

void spool_test_fail_batches(spool *sp, unsigned n, int sqlite_code)
{
    pthread_mutex_lock(&sp->w.mu);
    sp->w.test_fail = n;
    sp->w.test_fail_code = sqlite_code;
    pthread_mutex_unlock(&sp->w.mu);
}
