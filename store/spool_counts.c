/* spool_counts.c — the spool's maintained counts of pending recipients: one row per
 * (configuration set, domain, state) in rcpt_counts and one per state in rcpt_totals, kept
 * by SQLite triggers on recipients, so that `kilnctl status` and `kilnctl queue` read a few
 * rows instead of counting millions (count(*) over 10,000,000 pending recipients takes about
 * a second; a GROUP BY with the messages' sets about 15 s).
 *
 * Promises: the counts always equal what a full count of the QUEUED and DEFERRED
 * recipients would give, for every reader: the triggers run inside the statement that
 * changes a recipient, so they commit and roll back with it (a failed batch leaves no count
 * behind), and a reader of the open batch (the loop's connection) sees its counts too.
 * Rows of rcpt_counts that fall to zero are deleted, so the table holds at most one row per
 * (set, domain, state) that has pending recipients.
 *
 * Schema (an addition to version 1, like kv and recipients_due in spool.c: created at open
 * when missing, so it needs no version change):
 *   rcpt_counts (config_set, domain, state, n)  WITHOUT ROWID, primary key in that order,
 *                                               which is the order kilnctl queue lists them
 *   rcpt_totals (state, n)                      the rows for QUEUED (0) and DEFERRED (1)
 *   triggers recipients_count_insert, _update, _delete
 * When any of them is missing (a spool written before they existed, or a half-made set),
 * all are dropped and made again in one transaction, and the counts are filled from the
 * recipients there: a one-time GROUP BY over the pending recipients (about 1.5 s per
 * 1,000,000) at the first open by a kiln that has them.
 *
 * The cost: each recipient insert runs one upsert into rcpt_counts (its message's set is
 * read from messages by primary key) and one update of rcpt_totals; each change of state
 * from or to a pending one does the same twice. The message a pending recipient belongs to
 * always exists (messages are deleted only when none of their recipients is pending), so
 * the set is always found. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "base/util.h"
#include "store/spool_internal.h"

#define COUNTS_SET_OF(r) "(SELECT config_set FROM messages WHERE id = " r ".msg_id)"

/* One pending recipient more in (set of r, r.domain, r.state): r is "new" or "old". */
#define COUNTS_ADD(r)                                                                      \
    " INSERT INTO rcpt_counts (config_set, domain, state, n)"                              \
    "  SELECT " COUNTS_SET_OF(r) ", " r ".domain, " r ".state, 1 WHERE " r ".state IN (0, 1)" \
    "  ON CONFLICT (config_set, domain, state) DO UPDATE SET n = n + 1;"                   \
    " UPDATE rcpt_totals SET n = n + 1 WHERE state = " r ".state;"

/* One fewer; a row that reaches zero goes. */
#define COUNTS_SUB(r)                                                                      \
    " UPDATE rcpt_counts SET n = n - 1 WHERE " r ".state IN (0, 1) AND config_set = "      \
    COUNTS_SET_OF(r) " AND domain = " r ".domain AND state = " r ".state;"                 \
    " DELETE FROM rcpt_counts WHERE " r ".state IN (0, 1) AND config_set = "               \
    COUNTS_SET_OF(r) " AND domain = " r ".domain AND state = " r ".state AND n <= 0;"      \
    " UPDATE rcpt_totals SET n = n - 1 WHERE state = " r ".state;"

static const char counts_drop[] =
    "DROP TRIGGER IF EXISTS recipients_count_insert;"
    "DROP TRIGGER IF EXISTS recipients_count_update;"
    "DROP TRIGGER IF EXISTS recipients_count_delete;"
    "DROP TABLE IF EXISTS rcpt_counts;"
    "DROP TABLE IF EXISTS rcpt_totals;";

static const char counts_create[] =
    "CREATE TABLE rcpt_counts ("
    "  config_set TEXT NOT NULL,"
    "  domain TEXT NOT NULL,"
    "  state INTEGER NOT NULL,"
    "  n INTEGER NOT NULL,"
    "  PRIMARY KEY (config_set, domain, state)) WITHOUT ROWID;"
    "CREATE TABLE rcpt_totals ("
    "  state INTEGER PRIMARY KEY,"
    "  n INTEGER NOT NULL);"
    "INSERT INTO rcpt_counts (config_set, domain, state, n)"
    "  SELECT m.config_set, r.domain, r.state, count(*) FROM recipients r"
    "  JOIN messages m ON m.id = r.msg_id WHERE r.state IN (0, 1)"
    "  GROUP BY m.config_set, r.domain, r.state;"
    "INSERT INTO rcpt_totals (state, n) VALUES"
    "  (0, (SELECT count(*) FROM recipients WHERE state = 0)),"
    "  (1, (SELECT count(*) FROM recipients WHERE state = 1));"
    "CREATE TRIGGER recipients_count_insert AFTER INSERT ON recipients"
    " WHEN new.state IN (0, 1) BEGIN" COUNTS_ADD("new") " END;"
    "CREATE TRIGGER recipients_count_update AFTER UPDATE OF state ON recipients"
    " WHEN old.state IS NOT new.state AND (old.state IN (0, 1) OR new.state IN (0, 1)) BEGIN"
    COUNTS_SUB("old") COUNTS_ADD("new") " END;"
    "CREATE TRIGGER recipients_count_delete AFTER DELETE ON recipients"
    " WHEN old.state IN (0, 1) BEGIN" COUNTS_SUB("old") " END;";

/* Whether every table and trigger of the counts is there. */
static int counts_present(spool *sp, bool *present, char **err)
{
    static const char sql[] =
        "SELECT count(*) FROM sqlite_master WHERE (type = 'table' AND name IN"
        " ('rcpt_counts', 'rcpt_totals')) OR (type = 'trigger' AND name IN"
        " ('recipients_count_insert',"
        " 'recipients_count_update', 'recipients_count_delete'))";
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        *err = util_asprintf("spool %s: looking for the recipient counts: %s", sp->path,
                             sqlite3_errmsg(sp->db));
        sqlite3_finalize(st);
        return -1;
    }
    *present = sqlite3_column_int(st, 0) == 5;
    sqlite3_finalize(st);
    return 0;
}

int spool_counts_setup(spool *sp, char **err)
{
    bool present;
    if (counts_present(sp, &present, err) < 0) return -1;
    if (present) return 0;
    char *sql = util_asprintf("BEGIN IMMEDIATE; %s %s COMMIT;", counts_drop, counts_create);
    char *msg = NULL;
    int rc = sqlite3_exec(sp->db, sql, NULL, NULL, &msg);
    free(sql);
    if (rc != SQLITE_OK) {
        *err = util_asprintf("spool %s: making the recipient counts: %s", sp->path,
                             msg ? msg : sqlite3_errmsg(sp->db));
        sqlite3_free(msg);
        if (!sqlite3_get_autocommit(sp->db)) sqlite3_exec(sp->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}
