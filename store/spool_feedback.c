/* spool_feedback.c — what the feedback intake (issue 14) keeps in the spool (see
 * spool_feedback.h for the contract): finished messages kept for later reports (sent_mail)
 * and the accepted reports not processed yet (feedback_inbox).
 *
 * Tables, created with IF NOT EXISTS at every open like kv and stats (spool.c), so a spool
 * written before them gets them without a schema version change:
 *   sent_mail       (msg_id, created_ms, config_set, mail_json, message_id), indexed by
 *                   message_id (reports that quote only the Message-ID) and by created_ms
 *                   (spool_sent_prune). The copy itself is the writer's (spool_writer.c,
 *                   ST_SENT_COPY in spool.c): in the batch that deletes a finished message,
 *                   just before the delete, only in batches handed over while spool_keep_sent
 *                   is on (the flag is copied into each batch at hand-over, so the writer
 *                   thread never reads the loop's copy). message_id is computed by SQLite's
 *                   JSON functions from mail_json, so the loop pays nothing for it.
 *   feedback_inbox  (id, received_ms, client_ip, mail_from, rcpts, data); id AUTOINCREMENT and
 *                   given out by the loop (spool_fbin_add) like recipient ids, so it is known
 *                   at once and never reused, also across restarts (sqlite_sequence).
 *
 * Reads run on the loop's connection and see what is committed. A Message-ID lookup reads
 * sent_mail through its index, and the queued messages by reading every row's mail_json
 * (there is no Message-ID column on messages: adding one would cost every accepted message);
 * a row's JSON is parsed only when its text contains the Message-ID, so the scan costs about
 * what reading the messages table's rows (not their bodies) costs. */
#include "store/spool_feedback.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "base/util.h"
#include "store/spool_internal.h"

static const char spool_fb_schema[] =
    "CREATE TABLE IF NOT EXISTS sent_mail ("
    "  msg_id TEXT PRIMARY KEY NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  config_set TEXT NOT NULL,"
    "  mail_json TEXT NOT NULL,"
    "  message_id TEXT);"
    "CREATE INDEX IF NOT EXISTS sent_mail_message_id ON sent_mail(message_id);"
    "CREATE INDEX IF NOT EXISTS sent_mail_created ON sent_mail(created_ms);"
    "CREATE TABLE IF NOT EXISTS feedback_inbox ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  received_ms INTEGER NOT NULL,"
    "  client_ip TEXT NOT NULL,"
    "  mail_from TEXT NOT NULL,"
    "  rcpts TEXT NOT NULL,"
    "  data BLOB NOT NULL);";

/* A single integer from sql on the loop's connection. 0, or -1 with *err. */
static int spool_fb_query_int(spool *sp, const char *sql, int64_t *out, char **err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        *err = util_asprintf("spool %s: %s: %s", sp->path, sql, sqlite3_errmsg(sp->db));
        sqlite3_finalize(st);
        return -1;
    }
    *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return 0;
}

int spool_feedback_setup(spool *sp, char **err)
{
    char *msg = NULL;
    if (sqlite3_exec(sp->db, spool_fb_schema, NULL, NULL, &msg) != SQLITE_OK) {
        *err = util_asprintf("spool %s: creating the feedback tables: %s", sp->path,
                             msg ? msg : sqlite3_errmsg(sp->db));
        sqlite3_free(msg);
        return -1;
    }
    int64_t seq = 0, max = 0;
    if (spool_fb_query_int(sp,
                           "SELECT coalesce((SELECT seq FROM sqlite_sequence"
                           " WHERE name = 'feedback_inbox'), 0)", &seq, err) < 0 ||
        spool_fb_query_int(sp, "SELECT coalesce(max(id), 0) FROM feedback_inbox", &max, err) <
            0)
        return -1;
    sp->next_fbin_id = (seq > max ? seq : max) + 1;
    return 0;
}

/* ---- sent_mail ---- */

void spool_keep_sent(spool *sp, bool on)
{
    sp->keep_sent = on;
}

int spool_sent_prune(spool *sp, int64_t before_ms)
{
    spool_op *op = spool_record(sp, SPOOL_OP_SENT_PRUNE);
    op->u.sent_prune.before_ms = before_ms;
    return 0;
}

/* The characters SPOOL_MAIL_MESSAGE_ID (spool.c) trims: keep the two in step. */
static bool spool_fb_trimmed(char c)
{
    return c == '<' || c == '>' || c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* s without the angle brackets and blanks around it (malloc'd). */
static char *spool_fb_norm_mid(const char *s)
{
    size_t a = 0, b = strlen(s);
    while (a < b && spool_fb_trimmed(s[a])) a++;
    while (b > a && spool_fb_trimmed(s[b - 1])) b--;
    char *r = util_malloc(b - a + 1);
    memcpy(r, s + a, b - a);
    r[b - a] = '\0';
    return r;
}

/* out from a row of (created_ms, config_set, mail_json) starting at column col. */
static void spool_fb_read_sent(sqlite3_stmt *st, int col, spool_sent *out)
{
    out->created_ms = sqlite3_column_int64(st, col);
    out->config_set = spool_col_strdup(st, col + 1);
    out->mail_json = spool_col_strdup(st, col + 2);
}

/* Runs statement `which` with ?1 = key and reads its
 * first row into out (msg_id from column 0 when with_id, else key). 1 found, 0 not, -1 on
 * a read error. */
static int spool_fb_find(spool *sp, int which, const char *key, bool with_id,
                         spool_sent *out, const char *what)
{
    bool temp;
    sqlite3_stmt *st = spool_stmt_acquire(sp, which, &temp);
    if (!st) return -1;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int found = 0;
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof *out);
        out->msg_id = with_id ? spool_col_strdup(st, 0) : util_strdup(key);
        spool_fb_read_sent(st, with_id ? 1 : 0, out);
        found = 1;
        rc = SQLITE_DONE;
    }
    if (rc != SQLITE_DONE) {
        spool_note_error(sp, what, key);
        found = -1;
    }
    spool_stmt_release(st, temp);
    return found;
}

int spool_sent_find(spool *sp, const char *msg_id, bool *found, spool_sent *out)
{
    *found = false;
    memset(out, 0, sizeof *out);
    const char *id = msg_id ? msg_id : "";
    int rc = spool_fb_find(sp, ST_SENT_FIND_QUEUED, id, false, out, "find queued message");
    if (rc == 1) out->in_queue = true;
    else if (rc == 0)
        rc = spool_fb_find(sp, ST_SENT_FIND_KEPT, id, false, out, "find sent message");
    if (rc < 0) return -1;
    *found = rc == 1;
    return 0;
}

int spool_sent_find_message_id(spool *sp, const char *message_id, bool *found, spool_sent *out)
{
    *found = false;
    memset(out, 0, sizeof *out);
    char *mid = spool_fb_norm_mid(message_id ? message_id : "");
    if (!*mid) {
        free(mid);
        return 0;
    }
    int rk = spool_fb_find(sp, ST_SENT_MID_KEPT, mid, true, out, "find sent message by Message-ID");
    free(mid);
    if (rk < 0) return -1;
    *found = rk == 1;
    return 0;
}

void spool_sent_free(spool_sent *s)
{
    if (!s) return;
    free(s->msg_id);
    free(s->config_set);
    free(s->mail_json);
    memset(s, 0, sizeof *s);
}

/* ---- feedback_inbox ---- */

int spool_fbin_add(spool *sp, int64_t received_ms, const char *client_ip, const char *mail_from,
                   const char *rcpts, const char *data, size_t len, int64_t *id)
{
    spool_op *op = spool_record(sp, SPOOL_OP_FBIN_ADD);
    op->u.fbin.id = sp->next_fbin_id++;
    op->u.fbin.received_ms = received_ms;
    op->u.fbin.client_ip = spool_batch_str(sp->filling, client_ip ? client_ip : "");
    op->u.fbin.mail_from = spool_batch_str(sp->filling, mail_from ? mail_from : "");
    op->u.fbin.rcpts = spool_batch_str(sp->filling, rcpts ? rcpts : "");
    if (data && len) {
        /* owned, not in the arena: a report may be large, and a kept write moves it */
        char *copy = util_malloc(len);
        memcpy(copy, data, len);
        op->owned = copy;
        op->u.fbin.data = copy;
        op->u.fbin.len = len;
    }
    if (id) *id = op->u.fbin.id;
    return 0;
}

int spool_fbin_delete(spool *sp, int64_t id)
{
    spool_op *op = spool_record(sp, SPOOL_OP_FBIN_DEL);
    op->u.fbin.id = id;
    return 0;
}

int spool_fbin_each(spool *sp, spool_fbin_cb cb, void *arg)
{
    bool temp;
    sqlite3_stmt *st = spool_stmt_acquire(sp, ST_FBIN_EACH, &temp);
    if (!st) return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        /* copies: the callback may call other reads and writes */
        int64_t id = sqlite3_column_int64(st, 0), received_ms = sqlite3_column_int64(st, 1);
        char *client_ip = spool_col_strdup(st, 2);
        char *mail_from = spool_col_strdup(st, 3);
        char *rcpts = spool_col_strdup(st, 4);
        const void *blob = sqlite3_column_blob(st, 5);
        size_t n = (size_t)sqlite3_column_bytes(st, 5);
        char *data = util_malloc(n + 1);
        if (n) memcpy(data, blob, n);
        data[n] = '\0';
        cb(arg, id, received_ms, client_ip, mail_from, rcpts, data, n);
        free(client_ip);
        free(mail_from);
        free(rcpts);
        free(data);
    }
    if (rc != SQLITE_DONE) spool_note_error(sp, "list feedback reports", NULL);
    spool_stmt_release(st, temp);
    return rc == SQLITE_DONE ? 0 : -1;
}
