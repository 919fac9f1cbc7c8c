/* spool_reader.c — a read-only connection to the spool for reads that must not run on the
 * event loop (see spool.h: spool_reader_*). It is a connection of its own, opened with
 * SQLITE_OPEN_READONLY on the spool's database: in WAL mode it reads the last committed
 * state while the loop's connection writes and commits, and neither waits for the other.
 *
 * Promises: it never writes (the schema is the spool's, made by spool_open); one thread at a
 * time uses it (SQLITE_OPEN_NOMUTEX); spool_reader_interrupt may be called from any thread
 * while another reads, and makes that read end early with an error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "base/util.h"
#include "store/spool.h"
#include "store/spool_internal.h"

struct spool_reader {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *count_by;
    char *err;                  /* the last error's text */
};

static void reader_note(spool_reader *rd, const char *what)
{
    free(rd->err);
    rd->err = util_asprintf("spool %s: %s: %s", rd->path, what, sqlite3_errmsg(rd->db));
}

spool_reader *spool_reader_open(const char *dir, char **err)
{
    spool_reader *rd = util_calloc(1, sizeof *rd);
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    rd->path = util_asprintf("%.*s/kiln.db", (int)dl, dir);
    int rc = sqlite3_open_v2(rd->path, &rd->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(rd->db, 5000);
        rc = sqlite3_prepare_v3(rd->db, SPOOL_COUNT_BY_SQL, -1, SQLITE_PREPARE_PERSISTENT,
                                &rd->count_by, NULL);
    }
    if (rc != SQLITE_OK) {
        *err = util_asprintf("spool %s: opening a reader: %s", rd->path,
                             rd->db ? sqlite3_errmsg(rd->db) : sqlite3_errstr(rc));
        spool_reader_close(rd);
        return NULL;
    }
    return rd;
}

void spool_reader_close(spool_reader *rd)
{
    if (!rd) return;
    sqlite3_finalize(rd->count_by);
    sqlite3_close_v2(rd->db);
    free(rd->path);
    free(rd->err);
    free(rd);
}

void spool_reader_interrupt(spool_reader *rd)
{
    if (rd && rd->db) sqlite3_interrupt(rd->db);
}

const char *spool_reader_errmsg(const spool_reader *rd)
{
    return rd->err ? rd->err : "no error";
}

int spool_reader_count_by(spool_reader *rd, spool_count_cb cb, void *arg)
{
    sqlite3_stmt *st = rd->count_by;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        cb(arg, spool_col_text(st, 0), spool_col_text(st, 1),
           (spool_rcpt_state)sqlite3_column_int(st, 2), sqlite3_column_int64(st, 3));
    if (rc != SQLITE_DONE) reader_note(rd, "count recipients by set and domain");
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}
