/* spool_read.c — the spool's reads (see spool.h): a stored message, pending and due
 * recipients in rowid pages, counts, the 24 h send history, the suppression list (whole or
 * in pages), the event outbox, kv values (one, or the keys of a prefix in pages) and send
 * statistics. Every read runs on the loop's connection and sees
 * what is committed (spool_kv_get and spool_suppression_get first look at the writes not
 * committed yet, spool_write.c's overlay); a read may be called from inside another read's
 * callback. */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "base/config.h"
#include "base/util.h"
#include "store/spool.h"
#include "store/spool_internal.h"

int spool_load_message(spool *sp, const char *msg_id, spool_loaded *out)
{
    memset(out, 0, sizeof *out);
    size_t idlen = strlen(msg_id);
    if (idlen >= sizeof out->id) return -1;
    bool temp;
    sqlite3_stmt *st = spool_stmt_acquire(sp, ST_LOAD_MSG, &temp);
    if (!st) return -1;
    sqlite3_bind_text(st, 1, msg_id, (int)idlen, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        if (rc != SQLITE_DONE) spool_note_error(sp, "load message", msg_id);
        spool_stmt_release(st, temp);
        return -1;
    }
    memcpy(out->id, msg_id, idlen + 1);
    out->created_ms = sqlite3_column_int64(st, 0);
    out->config_set = spool_col_strdup(st, 1);
    out->mail_from = spool_col_strdup(st, 2);
    out->client_ip = spool_col_strdup(st, 3);
    out->mail_json = spool_col_strdup(st, 4);
    const void *blob = sqlite3_column_blob(st, 5);
    size_t n = (size_t)sqlite3_column_bytes(st, 5);
    out->data = util_malloc(n + 1);
    if (n) memcpy(out->data, blob, n);
    out->data[n] = '\0';
    out->data_len = n;
    spool_stmt_release(st, temp);
    return 0;
}

void spool_loaded_free(spool_loaded *m)
{
    if (!m) return;
    free(m->config_set);
    free(m->mail_from);
    free(m->client_ip);
    free(m->mail_json);
    free(m->data);
    memset(m, 0, sizeof *m);
}

/* Finishes a read loop: 0 if it ended with DONE, else -1 with the error noted. */
static int spool_read_end(spool *sp, sqlite3_stmt *st, bool temp, int rc, const char *what)
{
    if (rc != SQLITE_DONE) spool_note_error(sp, what, NULL);
    spool_stmt_release(st, temp);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Hands the current row (SPOOL_RCPT_COLUMNS) to cb. Copies: the callback may write to the
 * spool, which can move SQLite's buffers. */
static void spool_read_rcpt(sqlite3_stmt *st, spool_rcpt_cb cb, void *arg)
{
    spool_rcpt r = {
        .rowid = sqlite3_column_int64(st, 0),
        .msg_id = spool_col_strdup(st, 1),
        .address = spool_col_strdup(st, 2),
        .state = (spool_rcpt_state)sqlite3_column_int(st, 3),
        .attempts = sqlite3_column_int(st, 4),
        .next_attempt_ms = sqlite3_column_int64(st, 5),
        .last_reply = sqlite3_column_type(st, 6) == SQLITE_NULL ? NULL : spool_col_strdup(st, 6),
        .domain = spool_col_strdup(st, 7),
    };
    cb(arg, &r);
    free(r.msg_id);
    free(r.address);
    free(r.last_reply);
    free(r.domain);
}

int spool_each_pending_rcpt(spool *sp, const char *msg_id, spool_rcpt_cb cb, void *arg)
{
    bool temp;
    sqlite3_stmt *st = spool_stmt_acquire(sp, msg_id ? ST_PENDING_MSG : ST_PENDING_ALL, &temp);
    if (!st) return -1;
    if (msg_id) sqlite3_bind_text(st, 1, msg_id, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) spool_read_rcpt(st, cb, arg);
    return spool_read_end(sp, st, temp, rc, "list pending recipients");
}

/* The page's DEFERRED recipients can be found two ways. Walking recipients_due from
 * after_rowid in rowid order is cheap per page when many are due, but it passes over every
 * DEFERRED recipient that is not due yet: with a million retries waiting for later and a
 * few due, one page reads a million index entries (~80 ms). Reading the due ones from
 * recipients_state (ordered by next_attempt_ms) and sorting them by rowid costs what there
 * is to sort. So: a probe of at most SPOOL_DUE_SORT_MAX index entries counts the due ones;
 * fewer than that are sorted, more are walked. Either way a page reads a bounded range of
 * an index, never the table. */
int spool_each_due_rcpt(spool *sp, int64_t due_before_ms, int64_t after_rowid, size_t limit,
                        spool_rcpt_cb cb, void *arg)
{
    if (limit == 0) return 0;
    bool temp;
    sqlite3_stmt *st = spool_stmt_acquire(sp, ST_DUE_PROBE, &temp);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, due_before_ms);
    sqlite3_bind_int64(st, 2, SPOOL_DUE_SORT_MAX);
    int rc = sqlite3_step(st);
    int64_t ndue = 0;
    if (rc == SQLITE_ROW) {
        ndue = sqlite3_column_int64(st, 0);
        rc = SQLITE_DONE;
    }
    if (spool_read_end(sp, st, temp, rc, "count due recipients") < 0) return -1;

    st = spool_stmt_acquire(sp, ndue < SPOOL_DUE_SORT_MAX ? ST_DUE_SORT : ST_DUE_SCAN, &temp);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, due_before_ms);
    sqlite3_bind_int64(st, 2, after_rowid);
    sqlite3_bind_int64(st, 3, limit > (size_t)INT64_MAX ? INT64_MAX : (int64_t)limit);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) spool_read_rcpt(st, cb, arg);
    return spool_read_end(sp, st, temp, rc, "list due recipients");
}

int spool_next_due_ms(spool *sp, int64_t *next_ms)
{
    *next_ms = 0;
    bool temp;
    sqlite3_stmt *st = spool_stmt_acquire(sp, ST_NEXT_DUE, &temp);
    if (!st) return -1;
    int found = 0;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *next_ms = sqlite3_column_int64(st, 0);
        found = 1;
        rc = SQLITE_DONE;
    }
    if (spool_read_end(sp, st, temp, rc, "find the next retry") < 0) return -1;
    return found;
}

int spool_count_by(spool *sp, spool_count_cb cb, void *arg)
{
    bool temp;
    sqlite3_stmt *st = spool_stmt_acquire(sp, ST_COUNT_BY, &temp);
    if (!st) return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        /* Copies, as in spool_read_rcpt. */
        char *set = spool_col_strdup(st, 0), *domain = spool_col_strdup(st, 1);
        cb(arg, set, domain, (spool_rcpt_state)sqlite3_column_int(st, 2),
           sqlite3_column_int64(st, 3));
        free(set);
        free(domain);
    }
    return spool_read_end(sp, st, temp, rc, "count recipients by set and domain");
}

int spool_count_rcpts(spool *sp, int64_t *queued, int64_t *deferred)
{
    int64_t q = 0, d = 0;
    bool temp;
    sqlite3_stmt *st = spool_stmt_acquire(sp, ST_COUNT_RCPTS, &temp);
    if (!st) return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int state = sqlite3_column_int(st, 0);
        int64_t n = sqlite3_column_int64(st, 1);
        if (state == SPOOL_RCPT_QUEUED) q = n;
        else if (state == SPOOL_RCPT_DEFERRED) d = n;
    }
    if (queued) *queued = q;
    if (deferred) *deferred = d;
    return spool_read_end(sp, st, temp, rc, "count recipients");
}

int spool_each_sent_since(spool *sp, int64_t since_ms, spool_sent_cb cb, void *arg)
{
    bool temp;
    sqlite3_stmt *st = spool_stmt_acquire(sp, ST_SENT_SINCE, &temp);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, since_ms);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t n = sqlite3_column_int64(st, 1);
        cb(arg, sqlite3_column_int64(st, 0), n > (int64_t)UINT_MAX ? UINT_MAX : (unsigned)n);
    }
    return spool_read_end(sp, st, temp, rc, "list sends");
}

int spool_suppression_get(spool *sp, const char *address, bool *found, char **reason,
                          int64_t *updated_ms)
{
    *found = false;
    if (reason) *reason = NULL;
    if (updated_ms) *updated_ms = 0;
    bool temp;
    sqlite3_stmt *st = spool_stmt_acquire(sp, ST_SUPP_GET, &temp);
    if (!st) return -1;
    char *lc = util_strdup(address ? address : "");
    util_lowercase(lc);
    if (spool_pending_suppression(sp, lc, found, reason, updated_ms)) {
        spool_stmt_release(st, temp);
        free(lc);
        return 0;
    }
    sqlite3_bind_text(st, 1, lc, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *found = true;
        if (reason) *reason = spool_col_strdup(st, 0);
        if (updated_ms) *updated_ms = sqlite3_column_int64(st, 1);
        rc = SQLITE_DONE;
    }
    rc = spool_read_end(sp, st, temp, rc, "look up suppression");
    free(lc);
    return rc;
}

int spool_suppression_each(spool *sp, spool_suppression_cb cb, void *arg)
{
    bool temp;
    sqlite3_stmt *st = spool_stmt_acquire(sp, ST_SUPP_EACH, &temp);
    if (!st) return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        cb(arg, spool_col_text(st, 0), spool_col_text(st, 1), sqlite3_column_int64(st, 2));
    return spool_read_end(sp, st, temp, rc, "list suppression");
}

int spool_each_event(spool *sp, int64_t after, size_t max, spool_event_cb cb, void *arg)
{
    return spool_each_event_bytes(sp, after, max, SIZE_MAX, cb, arg);
}

int spool_each_event_bytes(spool *sp, int64_t after, size_t max, size_t max_bytes,
                           spool_event_cb cb, void *arg)
{
    if (max == 0) return 0;
    bool temp;
    sqlite3_stmt *st = spool_stmt_acquire(sp, ST_EACH_EVENT, &temp);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, after);
    sqlite3_bind_int64(st, 2, max > (size_t)INT64_MAX ? INT64_MAX : (int64_t)max);
    int rc = SQLITE_DONE;
    size_t bytes = 0;
    while (bytes < max_bytes && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *json = spool_col_text(st, 2);
        bytes += (size_t)sqlite3_column_bytes(st, 2);
        cb(arg, sqlite3_column_int64(st, 0), spool_col_text(st, 1), json);
    }
    if (bytes >= max_bytes) rc = SQLITE_DONE;
    return spool_read_end(sp, st, temp, rc, "list events");
}

int spool_count_set_events(spool *sp, const char *set, int64_t after, size_t max,
                           int64_t *last, int64_t *count)
{
    *last = *count = 0;
    bool temp;
    sqlite3_stmt *st = spool_stmt_acquire(sp, ST_COUNT_SET_EVENTS, &temp);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, after);
    sqlite3_bind_int64(st, 2, max > (size_t)INT64_MAX ? INT64_MAX : (int64_t)max);
    spool_bind_str(st, 3, set);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *last = sqlite3_column_int64(st, 0);
        *count = sqlite3_column_int64(st, 1);
        rc = SQLITE_DONE;
    }
    return spool_read_end(sp, st, temp, rc, "count events");
}

int spool_nth_set_event(spool *sp, const char *set, int64_t after, int64_t n, int64_t *id)
{
    *id = 0;
    if (n < 1) return 0;
    bool temp;
    sqlite3_stmt *st = spool_stmt_acquire(sp, ST_NTH_SET_EVENT, &temp);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, after);
    spool_bind_str(st, 2, set);
    sqlite3_bind_int64(st, 3, n - 1);
    int rc = sqlite3_step(st);
    bool found = rc == SQLITE_ROW;
    if (found) {
        *id = sqlite3_column_int64(st, 0);
        rc = SQLITE_DONE;
    }
    if (spool_read_end(sp, st, temp, rc, "find an event") < 0) return -1;
    return found ? 1 : 0;
}

int spool_kv_get(spool *sp, const char *key, char **value)
{
    *value = NULL;
    if (spool_pending_kv(sp, key, value)) return 0;
    bool temp;
    sqlite3_stmt *st = spool_stmt_acquire(sp, ST_KV_GET, &temp);
    if (!st) return -1;
    spool_bind_str(st, 1, key);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *value = spool_col_strdup(st, 0);
        rc = SQLITE_DONE;
    }
    return spool_read_end(sp, st, temp, rc, "read value");
}

/* The smallest string greater than every string starting with prefix (malloc'd): the prefix
 * cut after its last byte below 0xff, that byte incremented. NULL when there is none (an
 * empty prefix, or one of 0xff bytes only): then nothing bounds the range above. */
static char *spool_prefix_successor(const char *prefix)
{
    size_t n = strlen(prefix);
    while (n > 0 && (unsigned char)prefix[n - 1] == 0xff) n--;
    if (n == 0) return NULL;
    char *s = util_malloc(n + 1);
    memcpy(s, prefix, n);
    s[n - 1] = (char)((unsigned char)s[n - 1] + 1);
    s[n] = '\0';
    return s;
}

int spool_kv_each_prefix(spool *sp, const char *prefix, const char *after, size_t max,
                         spool_kv_cb cb, void *arg)
{
    if (max == 0) return 0;
    if (!prefix) prefix = "";
    /* start at the prefix, or just past `after` when that lies at or past it */
    bool past = after && strcmp(after, prefix) >= 0;
    char *upper = spool_prefix_successor(prefix);
    if (upper && past && strcmp(after, upper) >= 0) {   /* after the whole range */
        free(upper);
        return 0;
    }
    bool temp;
    sqlite3_stmt *st = spool_stmt_acquire(sp, past ? ST_KV_PREFIX_AFTER : ST_KV_PREFIX_FROM,
                                          &temp);
    if (!st) {
        free(upper);
        return -1;
    }
    spool_bind_str(st, 1, past ? after : prefix);
    if (upper)
        sqlite3_bind_text(st, 2, upper, -1, SQLITE_STATIC);
    else
        sqlite3_bind_zeroblob(st, 2, 0);   /* a blob sorts after every text */
    sqlite3_bind_int64(st, 3, max > (size_t)INT64_MAX ? INT64_MAX : (int64_t)max);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        cb(arg, spool_col_text(st, 0), spool_col_text(st, 1));
    rc = spool_read_end(sp, st, temp, rc, "list values");
    free(upper);
    return rc;
}

int spool_suppression_page(spool *sp, const char *after, int64_t since_ms, int64_t until_ms,
                           unsigned reasons, size_t max, spool_suppression_cb cb, void *arg)
{
    if (max == 0 || since_ms >= until_ms) return 0;
    if (reasons == 0) reasons = CONFIG_SUPPRESS_BOUNCE | CONFIG_SUPPRESS_COMPLAINT;
    bool temp;
    sqlite3_stmt *st = spool_stmt_acquire(sp, after ? ST_SUPP_PAGE_AFTER : ST_SUPP_PAGE_FROM,
                                          &temp);
    if (!st) return -1;
    spool_bind_str(st, 1, after ? after : "");
    sqlite3_bind_int64(st, 2, since_ms);
    sqlite3_bind_int64(st, 3, until_ms);
    sqlite3_bind_int(st, 4, (reasons & CONFIG_SUPPRESS_BOUNCE) != 0);
    sqlite3_bind_int(st, 5, (reasons & CONFIG_SUPPRESS_COMPLAINT) != 0);
    sqlite3_bind_int64(st, 6, max > (size_t)INT64_MAX ? INT64_MAX : (int64_t)max);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        cb(arg, spool_col_text(st, 0), spool_col_text(st, 1), sqlite3_column_int64(st, 2));
    return spool_read_end(sp, st, temp, rc, "list a page of the suppression list");
}

int spool_stats_each(spool *sp, int64_t since_ms, spool_stats_cb cb, void *arg)
{
    bool temp;
    sqlite3_stmt *st = spool_stmt_acquire(sp, ST_STATS_EACH, &temp);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, since_ms);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        cb(arg, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
           sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3),
           sqlite3_column_int64(st, 4));
    return spool_read_end(sp, st, temp, rc, "list send statistics");
}

int spool_last_event_id(spool *sp, int64_t *id)
{
    *id = 0;
    /* sqlite_sequence keeps the largest id even after the rows are deleted; max(id) covers
     * a database whose sequence row is missing. Start-up only: not a cached statement. */
    static const char sql[] = "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE"
                              " name = 'events'), 0), coalesce((SELECT max(id) FROM events), 0))";
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        rc = SQLITE_DONE;
    }
    if (rc != SQLITE_DONE) spool_note_error(sp, "read the last event id", NULL);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}
