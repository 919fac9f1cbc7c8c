/* spool_counts.c — the spool's maintained counts of pending recipients: one row per state
 * (QUEUED, DEFERRED) in rcpt_totals, kept by SQLite triggers on recipients, so that
 * `kilnctl status` reads two rows instead of counting millions (count(*) over 10,000,000
 * pending recipients takes about 0.7 s, on the loop, at every status).
 *
 * Promises: the counts always equal what a full count of the QUEUED and DEFERRED
 * recipients would give, for every reader: the triggers run inside the statement that
 * changes a recipient, so they commit and roll back with it (a failed batch leaves no count
 * behind), and a reader of the open batch (the loop's connection) sees its counts too.
 *
 * Schema (an addition to version 1, like kv and recipients_due in spool.c: created at open
 * when missing, so it needs no version change):
 *   rcpt_totals (state, n)      the rows for QUEUED (0) and DEFERRED (1)
 *   triggers recipients_count_insert, _update (OF state), _delete
 * When any of them is missing or differs from the text here (a spool written before they
 * existed, or by a kiln that made them differently), all are dropped and made again in one
 * transaction, and the totals are filled from the
 * recipients there: a one-time count of the pending recipients (about 1 s per 10,000,000)
 * at the first open by a kiln that has them.
 *
 * The cost: each recipient insert updates one row of rcpt_totals (its page stays in the
 * cache); each change of state from or to a pending one updates one or two. Counts per
 * (set, domain) were kept the same way at first (an upsert per recipient into a table keyed
 * by set, domain and state): that cost about a third of the enqueue rate at 50 recipients
 * per message, so `kilnctl queue` counts those on a worker thread instead
 * (mta/control_query.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "base/util.h"
#include "store/spool_internal.h"

/* The schema objects, each as SQLite keeps its text in sqlite_master (without the ';'). */
static const struct counts_object {
    const char *name;
    const char *sql;
} counts_objects[] = {
    {"rcpt_totals", "CREATE TABLE rcpt_totals (state INTEGER PRIMARY KEY, n INTEGER NOT NULL)"},
    {"recipients_count_insert",
     "CREATE TRIGGER recipients_count_insert AFTER INSERT ON recipients"
     " WHEN new.state IN (0, 1) BEGIN"
     " UPDATE rcpt_totals SET n = n + 1 WHERE state = new.state; END"},
    {"recipients_count_update",
     "CREATE TRIGGER recipients_count_update AFTER UPDATE OF state ON recipients"
     " WHEN old.state IS NOT new.state AND (old.state IN (0, 1) OR new.state IN (0, 1)) BEGIN"
     " UPDATE rcpt_totals SET n = n - 1 WHERE state = old.state;"
     " UPDATE rcpt_totals SET n = n + 1 WHERE state = new.state; END"},
    {"recipients_count_delete",
     "CREATE TRIGGER recipients_count_delete AFTER DELETE ON recipients"
     " WHEN old.state IN (0, 1) BEGIN"
     " UPDATE rcpt_totals SET n = n - 1 WHERE state = old.state; END"},
};
#define COUNTS_NOBJECTS (sizeof counts_objects / sizeof counts_objects[0])

static const char counts_drop[] =
    "DROP TRIGGER IF EXISTS recipients_count_insert;"
    "DROP TRIGGER IF EXISTS recipients_count_update;"
    "DROP TRIGGER IF EXISTS recipients_count_delete;"
    "DROP TABLE IF EXISTS rcpt_totals;";

/* After the table is made, before the triggers. */
static const char counts_fill[] =
    "INSERT INTO rcpt_totals (state, n) VALUES"
    "  (0, (SELECT count(*) FROM recipients WHERE state = 0)),"
    "  (1, (SELECT count(*) FROM recipients WHERE state = 1));";

/* Whether every object of the counts is there, as this file makes it (a spool written by an
 * older kiln may lack them, or have them as a different version made them). */
static int counts_present(spool *sp, bool *present, char **err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(sp->db, "SELECT sql FROM sqlite_master WHERE name = ?1", -1, &st,
                                NULL);
    *present = true;
    for (size_t i = 0; rc == SQLITE_OK && i < COUNTS_NOBJECTS && *present; i++) {
        sqlite3_bind_text(st, 1, counts_objects[i].name, -1, SQLITE_STATIC);
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW) *present = strcmp(spool_col_text(st, 0), counts_objects[i].sql) == 0;
        else if (step == SQLITE_DONE) *present = false;
        else rc = step;
        sqlite3_reset(st);
    }
    if (rc != SQLITE_OK) {
        *err = util_asprintf("spool %s: looking for the recipient counts: %s", sp->path,
                             sqlite3_errmsg(sp->db));
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_finalize(st);
    return 0;
}

int spool_counts_setup(spool *sp, char **err)
{
    bool present;
    if (counts_present(sp, &present, err) < 0) return -1;
    if (present) return 0;
    strbuf sb;
    strbuf_init(&sb);
    strbuf_printf(&sb, "BEGIN IMMEDIATE; %s %s;", counts_drop, counts_objects[0].sql);
    strbuf_puts(&sb, counts_fill);
    for (size_t i = 1; i < COUNTS_NOBJECTS; i++) strbuf_printf(&sb, " %s;", counts_objects[i].sql);
    strbuf_puts(&sb, " COMMIT;");
    char *sql = strbuf_steal(&sb);
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
