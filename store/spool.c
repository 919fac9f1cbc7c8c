/* spool.c — the durable queue on SQLite (see spool.h for the contract).
 *
 * One connection, WAL mode, every statement prepared once at open. Writes go into one open
 * transaction ("the batch", started with BEGIN IMMEDIATE by the first write after a flush);
 * spool_flush() commits it with a single fsync (synchronous=FULL) and then runs the commit
 * callbacks. A statement that fails marks the batch failed: later writes of that batch are
 * not run (SQLite may already have rolled the transaction back, and we must never fall
 * into autocommit mode half-way through a batch), and the flush rolls it back and reports
 * ok=false with the first error's text to every callback.
 *
 * Schema (PRAGMA user_version 1):
 *   messages     one row per accepted message that still has a non-final recipient
 *   recipients   its recipients (ON DELETE CASCADE with the message), with the lower-case
 *                domain of each address (column `domain`, filled at insert by the SQL
 *                function kiln_addr_domain this file registers on its connection)
 *   sends        (created_ms, count) per accepted message with quota_count > 0, kept apart
 *                from messages so the rolling 24 h quota survives deletion and restarts;
 *                rows older than 24 h (wall clock) are pruned at open and, at most once a
 *                minute, inside a flushed batch
 *   events       the event outbox (AUTOINCREMENT ids: never reused)
 *   suppression  the account-level suppression list, addresses lower-case
 *   kv           small named values other modules persist (e.g. "pools": the dedicated-IP
 *                state as JSON); created with IF NOT EXISTS at every open, so a spool
 *                written before the table existed gets it without a schema version change
 *   stats        send statistics per 15-minute bucket (SES GetSendStatistics), added to
 *                with an upsert inside the batch; created like kv; buckets older than
 *                14 days (wall clock) are pruned together with the sends rows
 *
 * Later additions to version 1 are applied at every open, so older version-1 spools get them
 * without a version change: the kv table, the recipients.domain column (added with ALTER
 * TABLE when PRAGMA table_info lacks it, and filled for the rows already there, in one
 * transaction), and the index recipients_due (state, id, next_attempt_ms), which lets
 * spool_each_due_rcpt read one page in rowid order as index range reads (QUEUED rows, then
 * DEFERRED rows whose next_attempt_ms is past) instead of scanning the table; and the
 * maintained counts of pending recipients per state, kept by triggers (spool_counts.c).
 *
 * Read functions (spool_read.c) may be called from inside the callbacks of other reads (or
 * of the same read): a cached statement that is still stepping is not reused; a fresh one is
 * prepared. */
#include "store/spool.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <sqlite3.h>

#include "base/util.h"
#include "store/spool_internal.h"

#define SPOOL_SCHEMA_VERSION 1
#define SPOOL_BLOB_INCREMENTAL (64 * 1024) /* messages this large are written piecewise */
#define SPOOL_BLOB_STEP (1024 * 1024)         /* bytes per sqlite3_blob_write */
#define SPOOL_DAY_MS (24LL * 3600 * 1000)
#define SPOOL_PRUNE_EVERY_MS (60LL * 1000)
#define SPOOL_STATS_KEEP_MS (14 * SPOOL_DAY_MS) /* SES shows two weeks of statistics */
#define SPOOL_STATE_PENDING "(0, 1)" /* QUEUED, DEFERRED */
static const char spool_schema[] =
    "CREATE TABLE messages ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  config_set TEXT NOT NULL,"
    "  mail_from TEXT NOT NULL,"
    "  client_ip TEXT NOT NULL,"
    "  mail_json TEXT NOT NULL,"
    "  data BLOB NOT NULL,"
    "  quota_count INTEGER NOT NULL);"
    "CREATE TABLE recipients ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  msg_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,"
    "  address TEXT NOT NULL,"
    "  state INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_attempt_ms INTEGER NOT NULL DEFAULT 0,"
    "  last_reply TEXT,"
    "  domain TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX recipients_msg ON recipients(msg_id);"
    "CREATE INDEX recipients_state ON recipients(state, next_attempt_ms);"
    "CREATE TABLE sends ("
    "  created_ms INTEGER NOT NULL,"
    "  count INTEGER NOT NULL);"
    "CREATE INDEX sends_created ON sends(created_ms);"
    "CREATE TABLE events ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  config_set TEXT NOT NULL,"
    "  json TEXT NOT NULL);"
    "CREATE TABLE suppression ("
    "  address TEXT PRIMARY KEY NOT NULL,"
    "  reason TEXT NOT NULL,"
    "  updated_ms INTEGER NOT NULL);";

/* Added after version 1 shipped: created at every open, so it needs no version bump. */
static const char spool_schema_kv[] =
    "CREATE TABLE IF NOT EXISTS kv ("
    "  key TEXT PRIMARY KEY NOT NULL,"
    "  value TEXT NOT NULL);";

/* Added after version 1 shipped: created at every open, so it needs no version bump. */
static const char spool_schema_stats[] =
    "CREATE TABLE IF NOT EXISTS stats ("
    "  bucket_ms INTEGER PRIMARY KEY,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  bounces INTEGER NOT NULL DEFAULT 0,"
    "  complaints INTEGER NOT NULL DEFAULT 0,"
    "  rejects INTEGER NOT NULL DEFAULT 0);";

/* Added after version 1 shipped, applied at every open (after the domain column exists). */
static const char spool_schema_due[] =
    "CREATE INDEX IF NOT EXISTS recipients_due ON recipients(state, id, next_attempt_ms);";

static const char *const spool_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_ADD_MSG] = "INSERT INTO messages (id, created_ms, config_set, mail_from, client_ip,"
                   " mail_json, data, quota_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_ADD_SEND] = "INSERT INTO sends (created_ms, count) VALUES (?1, ?2)",
    [ST_PRUNE_SENDS] = "DELETE FROM sends WHERE created_ms < ?1",
    [ST_ADD_RCPT] = "INSERT INTO recipients (msg_id, address, state, domain)"
                    " VALUES (?1, ?2, ?3, kiln_addr_domain(?2))",
    [ST_UPD_RCPT] = "UPDATE recipients SET state = ?2, attempts = ?3, next_attempt_ms = ?4,"
                    " last_reply = ?5 WHERE id = ?1 RETURNING msg_id",
    [ST_GC_MSG] = "DELETE FROM messages WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM"
                  " recipients WHERE msg_id = ?1 AND state IN " SPOOL_STATE_PENDING ")",
    [ST_ADD_EVENT] = "INSERT INTO events (config_set, json) VALUES (?1, ?2)",
    [ST_DEL_EVENTS] = "DELETE FROM events WHERE id <= ?1",
    [ST_SUPP_PUT] = "INSERT INTO suppression (address, reason, updated_ms) VALUES (?1, ?2, ?3)"
                    " ON CONFLICT (address) DO UPDATE SET reason = excluded.reason,"
                    " updated_ms = excluded.updated_ms",
    [ST_SUPP_DEL] = "DELETE FROM suppression WHERE address = ?1",
    [ST_LOAD_MSG] = "SELECT created_ms, config_set, mail_from, client_ip, mail_json, data"
                    " FROM messages WHERE id = ?1",
    [ST_PENDING_ALL] = "SELECT " SPOOL_RCPT_COLUMNS " FROM recipients WHERE state IN "
                       SPOOL_STATE_PENDING " ORDER BY id",
    [ST_PENDING_MSG] = "SELECT " SPOOL_RCPT_COLUMNS " FROM recipients WHERE msg_id = ?1 AND"
                       " state IN " SPOOL_STATE_PENDING " ORDER BY id",
    /* The maintained counts (spool_counts.c), not a count of the rows. */
    [ST_COUNT_RCPTS] = "SELECT state, n FROM rcpt_totals WHERE state IN " SPOOL_STATE_PENDING,
    /* One page of due recipients (see spool_each_due_rcpt for the choice between the two).
     * Each arm picks at most ?3 rowids through an index; the outer query fetches those
     * rows. The indexes are named so that the plan cannot drift to a table scan.
     * EXPLAIN QUERY PLAN of DUE_SCAN: "SEARCH recipients USING COVERING INDEX recipients_due
     * (state=? AND id>?)" for both arms; of DUE_SORT: the same for QUEUED, and "SEARCH
     * recipients USING COVERING INDEX recipients_state (state=? AND next_attempt_ms<?)" with
     * a sort of those few for DEFERRED. */
    [ST_DUE_SCAN] = "SELECT " SPOOL_RCPT_COLUMNS " FROM recipients WHERE id IN ("
                    " SELECT id FROM (SELECT id FROM recipients INDEXED BY recipients_due"
                    "  WHERE state = 0 AND id > ?2 ORDER BY id LIMIT ?3)"
                    " UNION ALL"
                    " SELECT id FROM (SELECT id FROM recipients INDEXED BY recipients_due"
                    "  WHERE state = 1 AND id > ?2 AND next_attempt_ms < ?1 ORDER BY id"
                    "  LIMIT ?3))"
                    " ORDER BY id LIMIT ?3",
    [ST_DUE_SORT] = "SELECT " SPOOL_RCPT_COLUMNS " FROM recipients WHERE id IN ("
                    " SELECT id FROM (SELECT id FROM recipients INDEXED BY recipients_due"
                    "  WHERE state = 0 AND id > ?2 ORDER BY id LIMIT ?3)"
                    " UNION ALL"
                    " SELECT id FROM (SELECT id FROM recipients INDEXED BY recipients_state"
                    "  WHERE state = 1 AND next_attempt_ms < ?1 AND id > ?2 ORDER BY id"
                    "  LIMIT ?3))"
                    " ORDER BY id LIMIT ?3",
    /* Whether fewer than ?2 DEFERRED recipients are due: reads at most ?2 index entries. */
    [ST_DUE_PROBE] = "SELECT count(*) FROM (SELECT 1 FROM recipients INDEXED BY"
                     " recipients_state WHERE state = 1 AND next_attempt_ms < ?1 LIMIT ?2)",
    [ST_NEXT_DUE] = "SELECT next_attempt_ms FROM recipients WHERE state = 1"
                    " ORDER BY next_attempt_ms LIMIT 1",
    [ST_COUNT_BY] = SPOOL_COUNT_BY_SQL,
    [ST_SENT_SINCE] = "SELECT created_ms, sum(count) FROM sends WHERE created_ms >= ?1"
                      " GROUP BY created_ms ORDER BY created_ms",
    [ST_SUPP_GET] = "SELECT reason, updated_ms FROM suppression WHERE address = ?1",
    [ST_SUPP_EACH] = "SELECT address, reason, updated_ms FROM suppression ORDER BY address",
    [ST_EACH_EVENT] = "SELECT id, config_set, json FROM events WHERE id > ?1 ORDER BY id"
                      " LIMIT ?2",
    [ST_KV_PUT] = "INSERT INTO kv (key, value) VALUES (?1, ?2)"
                  " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    [ST_KV_GET] = "SELECT value FROM kv WHERE key = ?1",
    [ST_STATS_ADD] = "INSERT INTO stats (bucket_ms, attempts, bounces, complaints, rejects)"
                     " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (bucket_ms) DO UPDATE SET"
                     " attempts = attempts + excluded.attempts,"
                     " bounces = bounces + excluded.bounces,"
                     " complaints = complaints + excluded.complaints,"
                     " rejects = rejects + excluded.rejects",
    [ST_STATS_EACH] = "SELECT bucket_ms, attempts, bounces, complaints, rejects FROM stats"
                      " WHERE bucket_ms >= ?1 ORDER BY bucket_ms",
    [ST_PRUNE_STATS] = "DELETE FROM stats WHERE bucket_ms < ?1",
};

/* ---- errors ---- */

static void spool_set_last_err(spool *sp, char *msg)
{
    free(sp->last_err);
    sp->last_err = msg;
}

/* "spool PATH: WHAT KEY: sqlite text" recorded as the handle's last error. */
void spool_note_error(spool *sp, const char *what, const char *key)
{
    spool_set_last_err(sp, util_asprintf("spool %s: %s%s%s: %s", sp->path, what, key ? " " : "",
                                         key ? key : "", sqlite3_errmsg(sp->db)));
}

/* Marks the batch failed with the text just recorded by spool_note_error (the first wins). */
static void spool_fail_batch(spool *sp)
{
    if (!sp->failed) sp->batch_err = util_strdup(sp->last_err);
    sp->failed = true;
}

const char *spool_errmsg(spool *sp)
{
    return sp->last_err ? sp->last_err : sqlite3_errmsg(sp->db);
}

/* ---- statements ---- */

static void spool_stmt_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* The cached statement, or a fresh one if the cached one is still stepping (a read called
 * from inside another read's callback). *temp tells spool_stmt_release to finalize it. */
sqlite3_stmt *spool_stmt_acquire(spool *sp, int which, bool *temp)
{
    *temp = false;
    if (!sqlite3_stmt_busy(sp->st[which])) return sp->st[which];
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sp->db, spool_sql[which], -1, &st, NULL) != SQLITE_OK) {
        spool_note_error(sp, "prepare", spool_sql[which]);
        sqlite3_finalize(st);
        return NULL;
    }
    *temp = true;
    return st;
}

void spool_stmt_release(sqlite3_stmt *st, bool temp)
{
    if (temp)
        sqlite3_finalize(st);
    else
        spool_stmt_done(st);
}

/* Steps a statement to completion. 0, or -1 with the error noted. Leaves st reset. */
static int spool_stmt_run(spool *sp, sqlite3_stmt *st, const char *what, const char *key)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    if (rc != SQLITE_DONE) {
        spool_note_error(sp, what, key);
        spool_stmt_done(st);
        return -1;
    }
    spool_stmt_done(st);
    return 0;
}

void spool_bind_str(sqlite3_stmt *st, int i, const char *s)
{
    sqlite3_bind_text(st, i, s ? s : "", -1, SQLITE_STATIC);
}

/* Column text, never NULL; valid until the statement steps again. */
const char *spool_col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    return s ? (const char *)s : "";
}

char *spool_col_strdup(sqlite3_stmt *st, int i)
{
    return util_strdup(spool_col_text(st, i));
}

/* ---- the batch ---- */

/* Called by every write before its statement: opens the batch's transaction if needed.
 * 0, or -1 if the batch has failed (the write must not run). */
static int spool_batch_write(spool *sp)
{
    sp->dirty = true;
    if (sp->failed) return -1;
    if (sp->in_txn) {
        if (!sqlite3_get_autocommit(sp->db)) return 0;
        /* SQLite rolled the transaction back on its own (I/O error, disk full in a read). */
        spool_set_last_err(sp,
                           util_asprintf("spool %s: the open batch was rolled back by SQLite: %s",
                                         sp->path, sqlite3_errmsg(sp->db)));
        spool_fail_batch(sp);
        return -1;
    }
    if (spool_stmt_run(sp, sp->st[ST_BEGIN], "begin batch", NULL) < 0) {
        spool_fail_batch(sp);
        return -1;
    }
    sp->in_txn = true;
    return 0;
}

/* Runs a write statement inside the batch; a failure fails the batch. */
static int spool_batch_run(spool *sp, sqlite3_stmt *st, const char *what, const char *key)
{
    if (spool_stmt_run(sp, st, what, key) < 0) {
        spool_fail_batch(sp);
        return -1;
    }
    return 0;
}

/* Prunes sends older than 24 h and stats buckets older than 14 days (wall clock). */
static void spool_prune_sends(spool *sp, int64_t now_wall_ms)
{
    sqlite3_stmt *st = sp->st[ST_PRUNE_SENDS];
    sqlite3_bind_int64(st, 1, now_wall_ms - SPOOL_DAY_MS);
    sqlite3_stmt *st2 = sp->st[ST_PRUNE_STATS];
    sqlite3_bind_int64(st2, 1, now_wall_ms - SPOOL_STATS_KEEP_MS);
    if (sp->in_txn) {
        if (spool_batch_run(sp, st, "prune sends", NULL) == 0)
            spool_batch_run(sp, st2, "prune stats", NULL);
    } else if (spool_stmt_run(sp, st, "prune sends", NULL) == 0) {
        spool_stmt_run(sp, st2, "prune stats", NULL);
    }
    sp->last_prune_mono = util_mono_ms();
}

void spool_on_commit(spool *sp, spool_commit_cb cb, void *arg)
{
    if (sp->ncbs == sp->capcbs) {
        sp->capcbs = sp->capcbs ? sp->capcbs * 2 : 16;
        sp->cbs = util_realloc(sp->cbs, sp->capcbs * sizeof *sp->cbs);
    }
    sp->cbs[sp->ncbs++] = (spool_cb_entry){cb, arg};
}

bool spool_has_pending(const spool *sp)
{
    return sp->dirty || sp->ncbs > 0;
}

int spool_flush(spool *sp)
{
    if (!spool_has_pending(sp)) return 0;

    bool ok = !sp->failed;
    if (sp->in_txn) {
        if (ok && sqlite3_get_autocommit(sp->db)) {
            spool_set_last_err(sp, util_asprintf("spool %s: the open batch was rolled back by "
                                                 "SQLite: %s",
                                                 sp->path, sqlite3_errmsg(sp->db)));
            spool_fail_batch(sp);
            ok = false;
        }
        if (ok && util_mono_ms() - sp->last_prune_mono >= SPOOL_PRUNE_EVERY_MS) {
            spool_prune_sends(sp, util_wall_ms());
            ok = !sp->failed;
        }
        if (ok && spool_stmt_run(sp, sp->st[ST_COMMIT], "commit", NULL) < 0) {
            spool_fail_batch(sp);
            ok = false;
        }
        if (!ok && !sqlite3_get_autocommit(sp->db)) {
            /* Errors of the rollback itself are only noted: the batch is reported failed. */
            char *keep = util_strdup(sp->last_err);
            if (spool_stmt_run(sp, sp->st[ST_ROLLBACK], "rollback", NULL) == 0)
                spool_set_last_err(sp, keep);
            else free(keep);
        }
    }

    /* Detach the batch before running callbacks: their writes start a new one. */
    spool_cb_entry *cbs = sp->cbs;
    size_t ncbs = sp->ncbs;
    char *err = sp->batch_err;
    sp->cbs = NULL;
    sp->ncbs = sp->capcbs = 0;
    sp->batch_err = NULL;
    sp->dirty = sp->in_txn = sp->failed = false;

    for (size_t i = 0; i < ncbs; i++) cbs[i].cb(cbs[i].arg, ok, ok ? NULL : err);
    free(cbs);
    free(err);
    return ok ? 0 : -1;
}

/* ---- open / close ---- */

/* mkdir -p with mode 0700 for the directories it creates. 0, or -1 with errno set. */
static int spool_make_dirs(const char *dir)
{
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) return 0;
        errno = ENOTDIR;
        return -1;
    }
    char *p = util_strdup(dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST) {
            int e = errno;
            free(p);
            errno = e;
            return -1;
        }
        *s = '/';
    }
    int rc = mkdir(p, 0700);
    int e = errno;
    free(p);
    if (rc < 0 && e != EEXIST) {
        errno = e;
        return -1;
    }
    return 0;
}

static int spool_exec_sql(spool *sp, const char *sql, const char *what, char **err)
{
    char *msg = NULL;
    if (sqlite3_exec(sp->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        *err = util_asprintf("spool %s: %s: %s", sp->path, what,
                             msg ? msg : sqlite3_errmsg(sp->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* Single-value PRAGMA query ("PRAGMA journal_mode=WAL" -> "wal"). */
static int spool_pragma_text(spool *sp, const char *sql, char *out, size_t outsz, char **err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        *err = util_asprintf("spool %s: %s: %s", sp->path, sql, sqlite3_errmsg(sp->db));
        sqlite3_finalize(st);
        return -1;
    }
    const unsigned char *v = sqlite3_column_text(st, 0);
    snprintf(out, outsz, "%s", v ? (const char *)v : "");
    sqlite3_finalize(st);
    return 0;
}

static int spool_setup_schema(spool *sp, char **err)
{
    char v[32];
    if (spool_pragma_text(sp, "PRAGMA user_version", v, sizeof v, err) < 0) return -1;
    long ver = strtol(v, NULL, 10);
    if (ver == SPOOL_SCHEMA_VERSION) return 0;
    if (ver > SPOOL_SCHEMA_VERSION || ver < 0) {
        *err = util_asprintf("spool %s: schema version %ld is newer than this kiln supports "
                             "(%d); use the kiln release that wrote it", sp->path, ver,
                             SPOOL_SCHEMA_VERSION);
        return -1;
    }
    char *sql = util_asprintf("BEGIN IMMEDIATE; %s PRAGMA user_version = %d; COMMIT;",
                              spool_schema, SPOOL_SCHEMA_VERSION);
    int rc = spool_exec_sql(sp, sql, "creating the schema", err);
    free(sql);
    if (rc < 0 && !sqlite3_get_autocommit(sp->db))
        sqlite3_exec(sp->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* kiln_addr_domain(address): the lower-case text after the last '@', "" if there is none
 * (as util_addr_domain, lower-cased). NULL stays NULL. */
static void spool_sql_addr_domain(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    const unsigned char *a = sqlite3_value_text(argv[0]);
    if (!a) {
        sqlite3_result_null(ctx);
        return;
    }
    char *d = util_strdup(util_addr_domain((const char *)a));
    util_lowercase(d);
    sqlite3_result_text(ctx, d, -1, free);
}

/* True if TABLE has a column named COLUMN. */
static int spool_has_column(spool *sp, const char *table, const char *column, bool *has, char **err)
{
    *has = false;
    char *sql = util_asprintf("PRAGMA table_info(%s)", table);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
    free(sql);
    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            if (strcmp(spool_col_text(st, 1), column) == 0) *has = true;
    if (rc != SQLITE_DONE) {
        *err = util_asprintf("spool %s: reading the columns of %s: %s", sp->path, table,
                             sqlite3_errmsg(sp->db));
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_finalize(st);
    return 0;
}

/* Brings a version-1 spool written by an older kiln up to date (see the top of the file). */
static int spool_schema_additions(spool *sp, char **err)
{
    if (spool_exec_sql(sp, spool_schema_kv, "creating the kv table", err) < 0) return -1;
    if (spool_exec_sql(sp, spool_schema_stats, "creating the stats table", err) < 0) return -1;
    bool has;
    if (spool_has_column(sp, "recipients", "domain", &has, err) < 0) return -1;
    if (!has) {
        int rc =
            spool_exec_sql(sp,
                           "BEGIN IMMEDIATE;"
                           " ALTER TABLE recipients ADD COLUMN domain TEXT NOT NULL DEFAULT '';"
                           " UPDATE recipients SET domain = kiln_addr_domain(address);"
                           " COMMIT;",
                           "adding the domain column to recipients", err);
        if (rc < 0) {
            if (!sqlite3_get_autocommit(sp->db))
                sqlite3_exec(sp->db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
    }
    if (spool_exec_sql(sp, spool_schema_due, "creating the index recipients_due", err) < 0)
        return -1;
    return spool_counts_setup(sp, err);
}

spool *spool_open(const char *dir, bool durable, char **err)
{
    *err = NULL;
    if (spool_make_dirs(dir) < 0) {
        *err = util_asprintf("spool directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    spool *sp = util_calloc(1, sizeof *sp);
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    sp->path = util_asprintf("%.*s/kiln.db", (int)dl, dir);

    int rc = sqlite3_open_v2(sp->path, &sp->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        *err = util_asprintf("spool %s: %s", sp->path,
                             sp->db ? sqlite3_errmsg(sp->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_busy_timeout(sp->db, 5000);
    /* The spool holds message contents: owner-only, also for the -wal and -shm files, which
     * SQLite creates with the database file's mode. Best effort (the directory is 0700). */
    struct stat sb;
    if (stat(sp->path, &sb) == 0 && (sb.st_mode & 077)) chmod(sp->path, sb.st_mode & 0700);

    char mode[32];
    if (spool_pragma_text(sp, "PRAGMA journal_mode = WAL", mode, sizeof mode, err) < 0) goto fail;
    if (strcmp(mode, "wal") != 0) {
        *err = util_asprintf("spool %s: cannot use WAL journal mode (got %s)", sp->path, mode);
        goto fail;
    }
    if (spool_exec_sql(sp, durable ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = OFF",
                       "setting synchronous", err) < 0 ||
        spool_exec_sql(sp, "PRAGMA foreign_keys = ON", "enabling foreign keys", err) < 0 ||
        spool_exec_sql(sp, "PRAGMA journal_size_limit = 67108864", "limiting the WAL size", err) <
            0)
        goto fail;
    char fk[8];
    if (spool_pragma_text(sp, "PRAGMA foreign_keys", fk, sizeof fk, err) < 0) goto fail;
    if (strcmp(fk, "1") != 0) {
        *err = util_asprintf("spool %s: this SQLite does not enforce foreign keys", sp->path);
        goto fail;
    }
    if (sqlite3_create_function(sp->db, "kiln_addr_domain", 1,
                                SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, NULL,
                                spool_sql_addr_domain, NULL, NULL) != SQLITE_OK) {
        *err = util_asprintf("spool %s: registering kiln_addr_domain: %s", sp->path,
                             sqlite3_errmsg(sp->db));
        goto fail;
    }
    if (spool_setup_schema(sp, err) < 0) goto fail;
    if (spool_schema_additions(sp, err) < 0) goto fail;

    for (int i = 0; i < ST__COUNT; i++) {
        if (sqlite3_prepare_v3(sp->db, spool_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &sp->st[i],
                               NULL) != SQLITE_OK) {
            *err = util_asprintf("spool %s: preparing \"%s\": %s", sp->path, spool_sql[i],
                                 sqlite3_errmsg(sp->db));
            goto fail;
        }
    }

    spool_prune_sends(sp, util_wall_ms());
    if (sp->last_err) {
        *err = util_strdup(sp->last_err);
        goto fail;
    }
    return sp;

fail:
    for (int i = 0; i < ST__COUNT; i++) sqlite3_finalize(sp->st[i]);
    sqlite3_close_v2(sp->db);
    free(sp->last_err);
    free(sp->path);
    free(sp);
    return NULL;
}

void spool_close(spool *sp)
{
    if (!sp) return;
    spool_flush(sp);
    for (int i = 0; i < ST__COUNT; i++) sqlite3_finalize(sp->st[i]);
    sqlite3_close_v2(sp->db);
    free(sp->cbs);
    free(sp->batch_err);
    free(sp->last_err);
    free(sp->path);
    free(sp);
}

/* ---- writes ---- */

/* Writes m->data into the zeroblob of messages row `rowid`: 0, or -1 with the error noted. */
static int spool_write_blob(spool *sp, sqlite3_int64 rowid, const spool_message *m)
{
    sqlite3_blob *blob = NULL;
    int rc = sqlite3_blob_open(sp->db, "main", "messages", "data", rowid, 1, &blob);
    if (rc == SQLITE_OK) {
        size_t off = 0;
        while (rc == SQLITE_OK && off < m->data_len) {
            size_t n = m->data_len - off < SPOOL_BLOB_STEP ? m->data_len - off : SPOOL_BLOB_STEP;
            rc = sqlite3_blob_write(blob, m->data + off, (int)n, (int)off);
            off += n;
        }
    }
    if (rc != SQLITE_OK) spool_note_error(sp, "write data of", m->id);
    int rc2 = sqlite3_blob_close(blob);          /* NULL is a no-op */
    if (rc == SQLITE_OK && rc2 != SQLITE_OK) {
        spool_note_error(sp, "write data of", m->id);
        rc = rc2;
    }
    return rc == SQLITE_OK ? 0 : -1;
}

int spool_add_message(spool *sp, const spool_message *m)
{
    size_t idlen = strnlen(m->id, sizeof m->id);
    if (idlen == sizeof m->id || idlen == 0)
        util_fatal("spool_add_message: message id is empty or not NUL-terminated");
    if (spool_batch_write(sp) < 0) return -1;

    sqlite3_stmt *st = sp->st[ST_ADD_MSG];
    sqlite3_bind_text(st, 1, m->id, (int)idlen, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, m->created_ms);
    spool_bind_str(st, 3, m->config_set);
    spool_bind_str(st, 4, m->mail_from);
    spool_bind_str(st, 5, m->client_ip);
    spool_bind_str(st, 6, m->mail_json);
    /* A large message is inserted as a zeroblob and written into its pages with SQLite's
     * incremental blob I/O: binding it whole would make SQLite build the row record, a
     * second in-memory copy of the message. A non-NULL pointer so that an empty message is
     * an empty blob, not NULL. */
    bool incremental = m->data && m->data_len >= SPOOL_BLOB_INCREMENTAL && m->data_len <= INT_MAX;
    if (incremental)
        sqlite3_bind_zeroblob64(st, 7, m->data_len);
    else
        sqlite3_bind_blob64(st, 7, m->data ? m->data : "", m->data ? m->data_len : 0,
                            SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, m->quota_count);
    if (spool_batch_run(sp, st, "add message", m->id) < 0) return -1;
    if (incremental && spool_write_blob(sp, sqlite3_last_insert_rowid(sp->db), m) < 0) {
        spool_fail_batch(sp);
        return -1;
    }

    if (m->quota_count > 0) {
        st = sp->st[ST_ADD_SEND];
        sqlite3_bind_int64(st, 1, m->created_ms);
        sqlite3_bind_int64(st, 2, m->quota_count);
        if (spool_batch_run(sp, st, "record send of", m->id) < 0) return -1;
    }
    return 0;
}

int spool_add_rcpt(spool *sp, const char *msg_id, const char *address, spool_rcpt_state st_,
                   int64_t *rowid)
{
    if (rowid) *rowid = 0;
    if (spool_batch_write(sp) < 0) return -1;
    sqlite3_stmt *st = sp->st[ST_ADD_RCPT];
    spool_bind_str(st, 1, msg_id);
    spool_bind_str(st, 2, address);
    sqlite3_bind_int(st, 3, (int)st_);
    if (spool_batch_run(sp, st, "add recipient to", msg_id) < 0) return -1;
    if (rowid) *rowid = sqlite3_last_insert_rowid(sp->db);
    return 0;
}

static int spool_gc_message(spool *sp, const char *msg_id)
{
    sqlite3_stmt *st = sp->st[ST_GC_MSG];
    spool_bind_str(st, 1, msg_id);
    return spool_batch_run(sp, st, "delete finished message", msg_id);
}

int spool_message_gc(spool *sp, const char *msg_id)
{
    if (spool_batch_write(sp) < 0) return -1;
    return spool_gc_message(sp, msg_id);
}

int spool_update_rcpt(spool *sp, int64_t rowid, spool_rcpt_state state, int attempts,
                      int64_t next_attempt_ms, const char *last_reply)
{
    char key[32];
    snprintf(key, sizeof key, "%" PRId64, rowid);
    if (spool_batch_write(sp) < 0) return -1;

    sqlite3_stmt *st = sp->st[ST_UPD_RCPT];
    sqlite3_bind_int64(st, 1, rowid);
    sqlite3_bind_int(st, 2, (int)state);
    sqlite3_bind_int(st, 3, attempts);
    sqlite3_bind_int64(st, 4, next_attempt_ms);
    if (last_reply)
        sqlite3_bind_text(st, 5, last_reply, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 5);

    char *msg_id = NULL;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (!msg_id) msg_id = spool_col_strdup(st, 0);
    if (rc != SQLITE_DONE) {
        spool_note_error(sp, "update recipient", key);
        spool_stmt_done(st);
        spool_fail_batch(sp);
        free(msg_id);
        return -1;
    }
    spool_stmt_done(st);
    if (!msg_id) {
        spool_set_last_err(
            sp, util_asprintf("spool %s: update recipient %s: no such recipient", sp->path, key));
        spool_fail_batch(sp);
        return -1;
    }
    rc = 0;
    if (state == SPOOL_RCPT_DELIVERED || state == SPOOL_RCPT_BOUNCED)
        rc = spool_gc_message(sp, msg_id);
    free(msg_id);
    return rc;
}

int spool_add_event(spool *sp, const char *set, const char *json)
{
    if (spool_batch_write(sp) < 0) return -1;
    sqlite3_stmt *st = sp->st[ST_ADD_EVENT];
    spool_bind_str(st, 1, set);
    spool_bind_str(st, 2, json);
    return spool_batch_run(sp, st, "add event for set", set);
}

int spool_delete_events(spool *sp, int64_t upto)
{
    if (spool_batch_write(sp) < 0) return -1;
    sqlite3_stmt *st = sp->st[ST_DEL_EVENTS];
    sqlite3_bind_int64(st, 1, upto);
    return spool_batch_run(sp, st, "delete events", NULL);
}

int spool_suppression_put(spool *sp, const char *address, const char *reason, int64_t now_ms)
{
    if (spool_batch_write(sp) < 0) return -1;
    char *lc = util_strdup(address ? address : "");
    util_lowercase(lc);
    sqlite3_stmt *st = sp->st[ST_SUPP_PUT];
    sqlite3_bind_text(st, 1, lc, -1, SQLITE_STATIC);
    spool_bind_str(st, 2, reason);
    sqlite3_bind_int64(st, 3, now_ms);
    int rc = spool_batch_run(sp, st, "suppress", lc);
    free(lc);
    return rc;
}

int spool_suppression_delete(spool *sp, const char *address, bool *existed)
{
    if (existed) *existed = false;
    if (spool_batch_write(sp) < 0) return -1;
    char *lc = util_strdup(address ? address : "");
    util_lowercase(lc);
    sqlite3_stmt *st = sp->st[ST_SUPP_DEL];
    sqlite3_bind_text(st, 1, lc, -1, SQLITE_STATIC);
    int rc = spool_batch_run(sp, st, "unsuppress", lc);
    if (rc == 0 && existed) *existed = sqlite3_changes(sp->db) > 0;
    free(lc);
    return rc;
}

int spool_kv_put(spool *sp, const char *key, const char *value)
{
    if (spool_batch_write(sp) < 0) return -1;
    sqlite3_stmt *st = sp->st[ST_KV_PUT];
    spool_bind_str(st, 1, key);
    spool_bind_str(st, 2, value);
    return spool_batch_run(sp, st, "store value", key);
}

int spool_stats_add(spool *sp, int64_t bucket_ms, int64_t attempts, int64_t bounces,
                    int64_t complaints, int64_t rejects)
{
    if (spool_batch_write(sp) < 0) return -1;
    sqlite3_stmt *st = sp->st[ST_STATS_ADD];
    sqlite3_bind_int64(st, 1, bucket_ms);
    sqlite3_bind_int64(st, 2, attempts);
    sqlite3_bind_int64(st, 3, bounces);
    sqlite3_bind_int64(st, 4, complaints);
    sqlite3_bind_int64(st, 5, rejects);
    return spool_batch_run(sp, st, "add send statistics", NULL);
}
