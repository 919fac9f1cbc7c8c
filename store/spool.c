/* spool.c — the durable queue on SQLite (see spool.h for the contract): the schema, the
 * statements, the two connections and open/close.
 *
 * Two connections to DIR/kiln.db, both in WAL mode with the same pragmas: the loop's, which
 * reads (spool_read.c), and the writer thread's (spool_writer.c), which runs the batches the
 * loop records (spool_write.c) as BEGIN IMMEDIATE, statements, COMMIT (one fsync with
 * synchronous=FULL). In WAL mode a reader never waits for the writer's fsync; it sees what is
 * committed. Every statement is prepared once at open, the reads on the loop's connection,
 * the writes on the writer's.
 *
 * Schema (PRAGMA user_version 1):
 *   messages     one row per accepted message that still has a non-final recipient
 *   recipients   its recipients (ON DELETE CASCADE with the message), with the lower-case
 *                domain of each address (column `domain`, filled at insert by the SQL
 *                function kiln_addr_domain this file registers on both connections); ids
 *                are given out by the loop (spool_add_rcpt) and inserted explicitly
 *   sends        (created_ms, count) per accepted message with quota_count > 0, kept apart
 *                from messages so the rolling 24 h quota survives deletion and restarts;
 *                rows older than 24 h (wall clock) are pruned at open and, at most once a
 *                minute, inside a committed batch
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
 * maintained counts of pending recipients per state, kept by triggers (spool_counts.c);
 * and the feedback intake's tables sent_mail and feedback_inbox (spool_feedback.c).
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

/* The Message-ID of a mail object (SES "mail" JSON text) as sent_mail keeps it: its
 * commonHeaders.messageId without angle brackets and blanks around it; NULL when the text is
 * not JSON (json_extract would fail the statement, and with it the batch) or has none. */
#define SPOOL_MAIL_MESSAGE_ID(col) \
    "(CASE WHEN json_valid(" col ") THEN nullif(trim(json_extract(" col \
    ", '$.commonHeaders.messageId'), '<> ' || char(9, 10, 13)), '') END)"

const char *const spool_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_ADD_MSG] = "INSERT INTO messages (id, created_ms, config_set, mail_from, client_ip,"
                   " mail_json, data, quota_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_ADD_SEND] = "INSERT INTO sends (created_ms, count) VALUES (?1, ?2)",
    [ST_PRUNE_SENDS] = "DELETE FROM sends WHERE created_ms < ?1",
    [ST_ADD_RCPT] = "INSERT INTO recipients (id, msg_id, address, state, domain)"
                    " VALUES (?4, ?1, ?2, ?3, kiln_addr_domain(?2))",
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
    [ST_KV_DEL] = "DELETE FROM kv WHERE key = ?1",
    /* The keys starting with a prefix, as a range of the primary key's index: from ?1 (the
     * prefix, or the last key shown: >= or >) up to ?2 (the prefix's successor, or a blob,
     * which sorts after every text, when it has none). Not LIKE: '%' and '_' in a key are
     * literal, and a range reads only the rows of the page. */
    [ST_KV_PREFIX_FROM] = "SELECT key, value FROM kv WHERE key >= ?1 AND key < ?2"
                          " ORDER BY key LIMIT ?3",
    [ST_KV_PREFIX_AFTER] = "SELECT key, value FROM kv WHERE key > ?1 AND key < ?2"
                           " ORDER BY key LIMIT ?3",
    /* A page of the suppression list in address order (the primary key's index), from ?1
     * (>= '' for the first page, > the last address shown), updated_ms in [?2, ?3), BOUNCE
     * entries if ?4, COMPLAINT entries if ?5. */
    [ST_SUPP_PAGE_FROM] = "SELECT address, reason, updated_ms FROM suppression"
                          " WHERE address >= ?1 AND updated_ms >= ?2 AND updated_ms < ?3"
                          " AND ((?4 AND reason = 'BOUNCE') OR (?5 AND reason = 'COMPLAINT'))"
                          " ORDER BY address LIMIT ?6",
    [ST_SUPP_PAGE_AFTER] = "SELECT address, reason, updated_ms FROM suppression"
                           " WHERE address > ?1 AND updated_ms >= ?2 AND updated_ms < ?3"
                           " AND ((?4 AND reason = 'BOUNCE') OR (?5 AND reason = 'COMPLAINT'))"
                           " ORDER BY address LIMIT ?6",
    [ST_STATS_ADD] = "INSERT INTO stats (bucket_ms, attempts, bounces, complaints, rejects)"
                     " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (bucket_ms) DO UPDATE SET"
                     " attempts = attempts + excluded.attempts,"
                     " bounces = bounces + excluded.bounces,"
                     " complaints = complaints + excluded.complaints,"
                     " rejects = rejects + excluded.rejects",
    [ST_STATS_EACH] = "SELECT bucket_ms, attempts, bounces, complaints, rejects FROM stats"
                      " WHERE bucket_ms >= ?1 ORDER BY bucket_ms",
    [ST_PRUNE_STATS] = "DELETE FROM stats WHERE bucket_ms < ?1",
    /* One snapshot: the last id among the next ?2 outbox rows after ?1, and how many of
     * them belong to set ?3 (config_set precedes json in the row: no overflow pages read). */
    [ST_COUNT_SET_EVENTS] = "SELECT coalesce(max(id), 0), coalesce(sum(config_set = ?3), 0)"
                            " FROM (SELECT id, config_set FROM events WHERE id > ?1"
                            " ORDER BY id LIMIT ?2)",
    [ST_NTH_SET_EVENT] = "SELECT id FROM events WHERE id > ?1 AND config_set = ?2 ORDER BY id"
                         " LIMIT 1 OFFSET ?3",
    /* spool_feedback.c: a message about to be deleted as finished (the same condition as
     * ST_GC_MSG), copied first when spool_keep_sent is on */
    [ST_SENT_COPY] = "INSERT OR REPLACE INTO sent_mail (msg_id, created_ms, config_set,"
                     " mail_json, message_id) SELECT id, created_ms, config_set, mail_json, "
                     SPOOL_MAIL_MESSAGE_ID("mail_json") " FROM messages WHERE id = ?1 AND"
                     " NOT EXISTS (SELECT 1 FROM recipients WHERE msg_id = ?1 AND state IN "
                     SPOOL_STATE_PENDING ")",
    [ST_SENT_PRUNE] = "DELETE FROM sent_mail WHERE created_ms < ?1",
    [ST_FBIN_ADD] = "INSERT INTO feedback_inbox (id, received_ms, client_ip, mail_from, rcpts,"
                    " data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_FBIN_DEL] = "DELETE FROM feedback_inbox WHERE id = ?1",
    [ST_SENT_FIND_QUEUED] = "SELECT created_ms, config_set, mail_json FROM messages"
                            " WHERE id = ?1",
    [ST_SENT_FIND_KEPT] = "SELECT created_ms, config_set, mail_json FROM sent_mail"
                          " WHERE msg_id = ?1",
    [ST_SENT_MID_KEPT] = "SELECT msg_id, created_ms, config_set, mail_json FROM sent_mail"
                         " WHERE message_id = ?1 ORDER BY created_ms DESC LIMIT 1",
    [ST_FBIN_EACH] = "SELECT id, received_ms, client_ip, mail_from, rcpts, data"
                     " FROM feedback_inbox ORDER BY id",
};

const bool spool_sql_writes[ST__COUNT] = {
    [ST_BEGIN] = true,     [ST_COMMIT] = true,   [ST_ROLLBACK] = true,  [ST_ADD_MSG] = true,
    [ST_ADD_SEND] = true,  [ST_PRUNE_SENDS] = true, [ST_ADD_RCPT] = true, [ST_UPD_RCPT] = true,
    [ST_GC_MSG] = true,    [ST_ADD_EVENT] = true, [ST_DEL_EVENTS] = true, [ST_SUPP_PUT] = true,
    [ST_SUPP_DEL] = true,  [ST_KV_PUT] = true,   [ST_STATS_ADD] = true, [ST_PRUNE_STATS] = true,
    [ST_KV_DEL] = true,    [ST_SENT_COPY] = true, [ST_SENT_PRUNE] = true, [ST_FBIN_ADD] = true,
    [ST_FBIN_DEL] = true,
};

/* ---- errors ---- */

void spool_set_last_err(spool *sp, char *msg)
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

static int spool_exec_sql(sqlite3 *db, const char *path, const char *sql, const char *what,
                          char **err)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        *err = util_asprintf("spool %s: %s: %s", path, what, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* Single-value PRAGMA query ("PRAGMA journal_mode=WAL" -> "wal"). */
static int spool_pragma_text(sqlite3 *db, const char *path, const char *sql, char *out,
                             size_t outsz, char **err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        *err = util_asprintf("spool %s: %s: %s", path, sql, sqlite3_errmsg(db));
        sqlite3_finalize(st);
        return -1;
    }
    const unsigned char *v = sqlite3_column_text(st, 0);
    snprintf(out, outsz, "%s", v ? (const char *)v : "");
    sqlite3_finalize(st);
    return 0;
}

/* A single integer from sql (0 when it yields NULL). */
static int spool_query_int(sqlite3 *db, const char *path, const char *sql, int64_t *out,
                           char **err)
{
    char v[32];
    if (spool_pragma_text(db, path, sql, v, sizeof v, err) < 0) return -1;
    *out = strtoll(v, NULL, 10);
    return 0;
}

static int spool_setup_schema(spool *sp, char **err)
{
    char v[32];
    if (spool_pragma_text(sp->db, sp->path, "PRAGMA user_version", v, sizeof v, err) < 0)
        return -1;
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
    int rc = spool_exec_sql(sp->db, sp->path, sql, "creating the schema", err);
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
    if (spool_exec_sql(sp->db, sp->path, spool_schema_kv, "creating the kv table", err) < 0)
        return -1;
    if (spool_exec_sql(sp->db, sp->path, spool_schema_stats, "creating the stats table", err) <
        0)
        return -1;
    bool has;
    if (spool_has_column(sp, "recipients", "domain", &has, err) < 0) return -1;
    if (!has) {
        int rc =
            spool_exec_sql(sp->db, sp->path,
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
    if (spool_exec_sql(sp->db, sp->path, spool_schema_due, "creating the index recipients_due",
                       err) < 0)
        return -1;
    return spool_counts_setup(sp, err);
}

/* Opens one connection to path with the spool's settings: WAL, synchronous FULL (or OFF),
 * foreign keys enforced, the WAL trimmed to 64 MB after checkpoints, a 5 s busy timeout,
 * and kiln_addr_domain. 0, or -1 with *err set (*db may need closing). */
static int spool_connect(const char *path, bool durable, sqlite3 **db, char **err)
{
    int rc = sqlite3_open_v2(path, db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        *err = util_asprintf("spool %s: %s", path, *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
        return -1;
    }
    sqlite3_busy_timeout(*db, 5000);
    /* The spool holds message contents: owner-only, also for the -wal and -shm files, which
     * SQLite creates with the database file's mode. Best effort (the directory is 0700). */
    struct stat sb;
    if (stat(path, &sb) == 0 && (sb.st_mode & 077)) chmod(path, sb.st_mode & 0700);

    char mode[32];
    if (spool_pragma_text(*db, path, "PRAGMA journal_mode = WAL", mode, sizeof mode, err) < 0)
        return -1;
    if (strcmp(mode, "wal") != 0) {
        *err = util_asprintf("spool %s: cannot use WAL journal mode (got %s)", path, mode);
        return -1;
    }
    if (spool_exec_sql(*db, path, durable ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = OFF",
                       "setting synchronous", err) < 0 ||
        spool_exec_sql(*db, path, "PRAGMA foreign_keys = ON", "enabling foreign keys", err) < 0 ||
        spool_exec_sql(*db, path, "PRAGMA journal_size_limit = 67108864", "limiting the WAL size",
                       err) < 0)
        return -1;
    char fk[8];
    if (spool_pragma_text(*db, path, "PRAGMA foreign_keys", fk, sizeof fk, err) < 0) return -1;
    if (strcmp(fk, "1") != 0) {
        *err = util_asprintf("spool %s: this SQLite does not enforce foreign keys", path);
        return -1;
    }
    if (sqlite3_create_function(*db, "kiln_addr_domain", 1,
                                SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, NULL,
                                spool_sql_addr_domain, NULL, NULL) != SQLITE_OK) {
        *err = util_asprintf("spool %s: registering kiln_addr_domain: %s", path,
                             sqlite3_errmsg(*db));
        return -1;
    }
    return 0;
}

/* Prepares the statements of one connection: the writes (writes=true) or the reads. */
static int spool_prepare(sqlite3 *db, const char *path, bool writes, sqlite3_stmt **st,
                         char **err)
{
    for (int i = 0; i < ST__COUNT; i++) {
        if (spool_sql_writes[i] != writes) continue;
        if (sqlite3_prepare_v3(db, spool_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st[i], NULL) !=
            SQLITE_OK) {
            *err = util_asprintf("spool %s: preparing \"%s\": %s", path, spool_sql[i],
                                 sqlite3_errmsg(db));
            return -1;
        }
    }
    return 0;
}

/* The next recipient id: after every id used so far, also by rows deleted since
 * (AUTOINCREMENT's sqlite_sequence), so ids are never reused. */
static int spool_first_rcpt_id(spool *sp, char **err)
{
    int64_t seq = 0, max = 0;
    if (spool_query_int(sp->db, sp->path,
                        "SELECT coalesce((SELECT seq FROM sqlite_sequence"
                        " WHERE name = 'recipients'), 0)", &seq, err) < 0 ||
        spool_query_int(sp->db, sp->path, "SELECT coalesce(max(id), 0) FROM recipients", &max,
                        err) < 0)
        return -1;
    sp->next_rcpt_id = (seq > max ? seq : max) + 1;
    return 0;
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
    sp->w.path = sp->path;
    spool_pipeline_init(sp);

    /* the loop's connection sets the schema up; then the writer's joins it */
    if (spool_connect(sp->path, durable, &sp->db, err) < 0) goto fail;
    if (spool_setup_schema(sp, err) < 0) goto fail;
    if (spool_schema_additions(sp, err) < 0) goto fail;
    if (spool_feedback_setup(sp, err) < 0) goto fail;
    if (spool_prepare(sp->db, sp->path, false, sp->st, err) < 0) goto fail;
    if (spool_first_rcpt_id(sp, err) < 0) goto fail;
    if (spool_connect(sp->path, durable, &sp->w.db, err) < 0) goto fail;
    if (spool_prepare(sp->w.db, sp->path, true, sp->w.st, err) < 0) goto fail;
    if (spool_writer_prune(&sp->w, err) < 0) goto fail;
    if (spool_writer_start(&sp->w, err) < 0) goto fail;
    return sp;

fail:
    for (int i = 0; i < ST__COUNT; i++) {
        sqlite3_finalize(sp->st[i]);
        sqlite3_finalize(sp->w.st[i]);
    }
    sqlite3_close_v2(sp->w.db);
    sqlite3_close_v2(sp->db);
    spool_pipeline_free(sp);
    free(sp->last_err);
    free(sp->path);
    free(sp);
    return NULL;
}

/* Callbacks may write again (the control socket's next request, an ooto reply), and kept
 * writes of a failed batch are tried again (after short waits): a few rounds at most, then
 * what is left is given up, its callbacks told ok=false. */
#define SPOOL_CLOSE_ROUNDS 8

void spool_close(spool *sp)
{
    if (!sp) return;
    spool_writer_hurry(&sp->w);
    for (int i = 0; i < SPOOL_CLOSE_ROUNDS && spool_has_pending(sp); i++) spool_flush(sp);
    if (spool_has_pending(sp))
        spool_pipeline_abandon(sp, "the spool was closed before these writes could be committed");
    spool_writer_stop(&sp->w);
    for (int i = 0; i < ST__COUNT; i++) {
        sqlite3_finalize(sp->w.st[i]);
        sqlite3_finalize(sp->st[i]);
    }
    sqlite3_close_v2(sp->w.db);
    sqlite3_close_v2(sp->db);
    spool_pipeline_free(sp);
    free(sp->last_err);
    free(sp->path);
    free(sp);
}
