/* spool_internal.h — what spool.c (connection, schema, statements, the batch, writes) and
 * spool_read.c (reads) share: the prepared-statement table, struct spool and the statement
 * helpers. Nothing outside store/ includes this file. */
#ifndef KILN_SPOOL_INTERNAL_H
#define KILN_SPOOL_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <sqlite3.h>

#include "store/spool.h"

/* spool_each_due_rcpt sorts the due DEFERRED recipients by rowid when there are fewer than
 * this many (a few milliseconds); with more, it walks recipients_due in rowid order. */
#define SPOOL_DUE_SORT_MAX 10000
/* The columns spool_read_rcpt() expects, in its order. */
#define SPOOL_RCPT_COLUMNS \
    "id, msg_id, address, state, attempts, next_attempt_ms, last_reply, domain"

/* The pending recipients per (set, domain, state), in that order: a GROUP BY over every
 * pending recipient (about 1.5 s per 1,000,000), for the loop's connection (small spools,
 * tests) and for a reader's (kilnctl queue, off the loop). */
#define SPOOL_COUNT_BY_SQL \
    "SELECT m.config_set, r.domain, r.state, count(*) FROM recipients r" \
    " JOIN messages m ON m.id = r.msg_id WHERE r.state IN (0, 1)" \
    " GROUP BY m.config_set, r.domain, r.state ORDER BY m.config_set, r.domain, r.state"

/* Every statement, prepared once at open. */
enum {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_ADD_MSG,
    ST_ADD_SEND,
    ST_PRUNE_SENDS,
    ST_ADD_RCPT,
    ST_UPD_RCPT,
    ST_GC_MSG,
    ST_ADD_EVENT,
    ST_DEL_EVENTS,
    ST_SUPP_PUT,
    ST_SUPP_DEL,
    ST_LOAD_MSG,
    ST_PENDING_ALL,
    ST_PENDING_MSG,
    ST_COUNT_RCPTS,
    ST_DUE_SCAN,
    ST_DUE_SORT,
    ST_DUE_PROBE,
    ST_NEXT_DUE,
    ST_COUNT_BY,
    ST_SENT_SINCE,
    ST_SUPP_GET,
    ST_SUPP_EACH,
    ST_EACH_EVENT,
    ST_KV_PUT,
    ST_KV_GET,
    ST_STATS_ADD,
    ST_STATS_EACH,
    ST_PRUNE_STATS,
    ST__COUNT
};

typedef struct spool_cb_entry {
    spool_commit_cb cb;
    void *arg;
} spool_cb_entry;

struct spool {
    sqlite3 *db;
    char *path;                   /* DIR/kiln.db, for error texts */
    sqlite3_stmt *st[ST__COUNT];
    /* the batch */
    bool dirty;                   /* a write was attempted since the last flush */
    bool in_txn;                  /* BEGIN IMMEDIATE succeeded */
    bool failed;                  /* a statement of the batch failed */
    char *batch_err;              /* first failure's text */
    spool_cb_entry *cbs;
    size_t ncbs, capcbs;
    /* housekeeping */
    int64_t last_prune_mono;
    char *last_err;               /* last error text of any operation */
};

/* Makes the maintained counts of pending recipients (tables and triggers) when they are
 * missing, filled from the recipients there (spool_counts.c). 0, or -1 with *err. */
int spool_counts_setup(spool *sp, char **err);
/* Records the text of the last error: "spool PATH: what key: SQLite's message". */
void spool_note_error(spool *sp, const char *what, const char *key);
/* The cached statement, or a fresh one if the cached one is still stepping (a read called
 * from inside another read's callback). *temp tells spool_stmt_release to finalize it. */
sqlite3_stmt *spool_stmt_acquire(spool *sp, int which, bool *temp);
void spool_stmt_release(sqlite3_stmt *st, bool temp);
void spool_bind_str(sqlite3_stmt *st, int i, const char *s);
/* Column text, never NULL; valid until the statement steps again. */
const char *spool_col_text(sqlite3_stmt *st, int i);
char *spool_col_strdup(sqlite3_stmt *st, int i);

#endif
