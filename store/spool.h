/* spool.h — the durable queue: one SQLite database (WAL, synchronous=FULL) under server.spool.
 *
 * Writes go through a commit pipeline. Every write call (spool_add_*, spool_update_*,
 * spool_suppression_*, spool_kv_put, ...) only records the write in the "filling" batch, on
 * the calling (loop) thread, and returns. A writer thread with its own SQLite connection
 * commits one batch at a time: BEGIN IMMEDIATE, the batch's statements in order, COMMIT (one
 * fsync). While it syncs, the next batch fills (at most one batch committing, one filling),
 * so under load a batch holds everything written while the previous one synced. When a batch
 * is finished, the callbacks registered with spool_on_commit() while it filled run on the
 * loop thread, in order, from spool_reap() (or spool_flush()): ok=true once it is committed;
 * ok=false with the error's text if any of its statements or its COMMIT failed, and then
 * nothing of the batch is kept (rolled back). A batch built on top of a failed one may fail
 * too (e.g. an update of a recipient that was never committed); it is reported the same way.
 * Nothing may be acknowledged to a client before its commit callback ran with ok=true.
 *
 * Kept writes (spool_keep_begin/_end): writes that no client waits for and that must not be
 * lost (a delivery's outcome, its events and suppression entry, the event drain's progress,
 * saved state). When their batch fails they are not dropped: they are recorded again, in
 * their order, at the head of the next batch, and the callbacks registered with them run
 * only once they are committed. After a batch failed because of the environment (disk full,
 * I/O error, read-only file system, lock timeout), the writer waits before the next one:
 * 50 ms, doubling up to 2 s, so a full disk is retried without spinning; every batch in
 * that time still gets its answer (the other writes fail: 451 for a submission). A kept
 * write that fails by itself (a constraint, an unknown recipient) is dropped, never retried,
 * and the error says so. spool_close tries a few more times, briefly, then gives up what is
 * left (callbacks get ok=false).
 *
 * Wiring: the writer calls the wake function (spool_set_wake) from its thread when a batch is
 * finished; the daemon turns that into an ev_async on the loop, whose handler calls
 * spool_reap(). Once per loop iteration the daemon calls spool_submit(), which hands the
 * filling batch over if the writer is free. spool_flush() hands over and waits (start-up,
 * shutdown, tests); spool_close() flushes and joins the writer.
 *
 * Reads run on the loop thread's connection and see what is committed, never what is still
 * filling or committing (in WAL mode they never wait for the writer's fsync), with three
 * exceptions that see the loop's own writes at once: spool_kv_get, spool_suppression_get and
 * spool_suppression_delete's `existed` (an overlay of the values written and not committed
 * yet), and the ids spool_add_rcpt gives out (assigned on the loop, in increasing order). A
 * caller that must not act on a stale row (the scheduler and a recipient it has just settled)
 * keeps its own record until the commit callback.
 *
 * All functions except the writer's internals are for the loop thread only. Read callbacks
 * may call any spool function except spool_flush/spool_reap/spool_close; the strings they
 * receive are valid only during the call. Commit callbacks may write (the writes go to a
 * later batch) but must not call spool_flush, spool_reap or spool_close. */
#ifndef KILN_SPOOL_H
#define KILN_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct spool spool;

typedef enum {
    SPOOL_RCPT_QUEUED = 0,     /* waiting for a first attempt (or in flight) */
    SPOOL_RCPT_DEFERRED = 1,   /* waiting for a retry at next_attempt_ms */
    SPOOL_RCPT_DELIVERED = 2,  /* final */
    SPOOL_RCPT_BOUNCED = 3,    /* final */
} spool_rcpt_state;

typedef struct spool_rcpt {
    int64_t rowid;             /* set by the spool */
    char *msg_id;
    char *address;
    spool_rcpt_state state;
    int attempts;
    int64_t next_attempt_ms;   /* wall clock */
    char *last_reply;          /* NULL or the last remote reply / failure text */
    char *domain;              /* lower-case text after the address's last '@' ("" if none) */
} spool_rcpt;

/* A message as accepted: written once by spool_add_message (or _take). */
typedef struct spool_message {
    char id[80];
    int64_t created_ms;        /* wall clock */
    const char *config_set;
    const char *mail_from;     /* envelope sender; "" for <> */
    const char *client_ip;     /* submitting client's address */
    const char *mail_json;     /* SES "mail" object for events (JSON text) */
    const char *data;          /* the message as it will be delivered: CRLF lines, not dot-stuffed */
    size_t data_len;
    unsigned quota_count;      /* recipients counted against max_24h_send */
} spool_message;

/* Open (creating if needed) DIR/kiln.db. durable=false sets synchronous=OFF (tests, bench only). */
/* Starts the writer thread (every signal blocked in it). */
spool *spool_open(const char *dir, bool durable, char **err);
/* Commits what is pending (and what its callbacks write, a few rounds), stops the writer. */
void spool_close(spool *sp);

/* ---- writes, recorded in the filling batch ----
 * Each returns 0 once the write is recorded; whether it is committed is reported to the
 * batch's commit callbacks (and by spool_reap/spool_flush). spool_suppression_delete
 * returns -1 when it cannot read whether the address was listed (nothing recorded). */
/* Copies m's strings and its data into the batch. */
int spool_add_message(spool *sp, const spool_message *m);
/* The same, but takes m->data (malloc'd): the batch frees it with free() after the writer
 * wrote it (or the batch failed), so the body is never copied; the caller must not touch
 * it after the call. m's other strings are copied. */
int spool_add_message_take(spool *sp, const spool_message *m);
/* Adds a recipient of message msg_id in state st (QUEUED, or DELIVERED/BOUNCED for ones
 * settled at acceptance: simulator, suppressed). *rowid receives its id at once: ids are
 * given out in increasing order and never reused (a failed batch leaves a gap). */
int spool_add_rcpt(spool *sp, const char *msg_id, const char *address, spool_rcpt_state st,
                   int64_t *rowid);
/* Records an attempt's outcome for one recipient. When the message has no non-final
 * recipient left, its row and data are deleted in the same batch. A rowid unknown when the
 * batch is committed fails the batch. */
int spool_update_rcpt(spool *sp, int64_t rowid, spool_rcpt_state st, int attempts,
                      int64_t next_attempt_ms, const char *last_reply);
/* Deletes message msg_id (row, data, recipients) if none of its recipients is QUEUED or
 * DEFERRED; otherwise (or if it does not exist) changes nothing. spool_add_rcpt never does
 * this check, so a message whose recipients were all settled at acceptance (simulator,
 * suppressed) is removed by calling this after adding them, in the same batch. */
int spool_message_gc(spool *sp, const char *msg_id);
/* Appends an event (JSON text) to the outbox for configuration set `set`. */
int spool_add_event(spool *sp, const char *set, const char *json);
/* The same, taking json (malloc'd; freed by the batch). */
int spool_add_event_take(spool *sp, const char *set, char *json);
/* Removes outbox rows with id <= upto. */
int spool_delete_events(spool *sp, int64_t upto);
/* Suppression list (addresses stored lower-case). reason: "BOUNCE" or "COMPLAINT".
 * *existed: the address was listed, as the loop sees it (its own writes included). */
int spool_suppression_put(spool *sp, const char *address, const char *reason, int64_t now_ms);
int spool_suppression_delete(spool *sp, const char *address, bool *existed);
/* Cluster (issue 17): fn is told of every suppression write made through the two calls
 * above (address lower-case; reason NULL: deleted), after it is recorded, so the daemon can
 * share it; NULL: nobody. Writes that come from the cluster itself go through
 * spool_suppression_apply, which records the same way but does not call fn. */
typedef void (*spool_suppression_hook)(void *arg, const char *address, const char *reason,
                                       int64_t at_ms);
void spool_set_suppression_hook(spool *sp, spool_suppression_hook fn, void *arg);
/* reason NULL: delete. */
int spool_suppression_apply(spool *sp, const char *address, const char *reason, int64_t at_ms);
/* Stores value under key in the small key-value table (replacing an older value); for
 * state other modules keep across restarts (the scheduler's "pools": JSON text). */
int spool_kv_put(spool *sp, const char *key, const char *value);
/* Deletes key (nothing if absent). *existed (may be NULL): the key had a value, as the loop
 * sees it (its own writes included). */
int spool_kv_delete(spool *sp, const char *key, bool *existed);
/* Adds the counts to the send-statistics bucket starting at bucket_ms (created at zero if
 * absent). Buckets older than 14 days by the wall clock are pruned at open and, at most
 * once a minute, inside a committed batch. */
int spool_stats_add(spool *sp, int64_t bucket_ms, int64_t attempts, int64_t bounces,
                    int64_t complaints, int64_t rejects);

/* ---- the commit pipeline ---- */
typedef void (*spool_commit_cb)(void *arg, bool ok, const char *err);
/* Runs cb (on the loop thread, from spool_reap or spool_flush) once every write made so far
 * is committed (ok=true), or once the batch holding the last of them failed. */
void spool_on_commit(spool *sp, spool_commit_cb cb, void *arg);
/* wake(arg) is called on the writer thread each time a batch is finished (NULL: never).
 * It must only wake the loop (ev_async_send); the loop then calls spool_reap. */
void spool_set_wake(spool *sp, void (*wake)(void *arg), void *arg);
/* Batches reaped from now on are counted in m (base/metrics.h: kiln_spool_commit_seconds
 * from hand-over to reap, kiln_spool_batch_writes); NULL: not counted. */
struct metrics;
void spool_set_metrics(spool *sp, struct metrics *m);
/* Never blocks: hands the filling batch to the writer if it is free (a batch with only
 * callbacks and nothing in flight completes at once, running them). */
void spool_submit(spool *sp);
/* Never blocks: if the batch with the writer is finished, hands the filling one over and
 * runs the finished batch's callbacks. 0, or -1 if that batch failed (spool_errmsg has
 * the text). */
int spool_reap(spool *sp);
/* Writes recorded and callbacks registered from spool_keep_begin until the matching
 * spool_keep_end are kept (see the top of this file); the calls nest. */
void spool_keep_begin(spool *sp);
void spool_keep_end(spool *sp);
/* Kept writes carried over failed batches and not committed yet (0 once one commits). */
size_t spool_kept_waiting(const spool *sp);
/* Batches with writes that failed in a row (0 once one commits): for the logs. */
unsigned spool_failures(const spool *sp);
/* For tests only: the next n batches with writes that the writer runs fail at their commit
 * with the SQLite result code sqlite_code (SQLITE_FULL: as a full disk would), after every
 * statement ran; n = 0 stops it. */
void spool_test_fail_batches(spool *sp, unsigned n, int sqlite_code);
/* Hands over what is filling and waits until it and everything before it is committed (or
 * failed), running the callbacks. Writes the callbacks make go to a later batch, which is
 * not waited for. 0, or -1 if a batch failed. */
int spool_flush(spool *sp);
/* A batch is filling (writes or callbacks) or with the writer. */
bool spool_has_pending(const spool *sp);

/* ---- reads ---- */
/* Loads the stored message (all fields malloc'd, never NULL; data has a NUL after data_len;
 * free with spool_loaded_free). 0, or -1 if absent. */
typedef struct spool_loaded {
    char id[80];
    int64_t created_ms;
    char *config_set;
    char *mail_from;
    char *client_ip;
    char *mail_json;
    char *data;
    size_t data_len;
} spool_loaded;
int spool_load_message(spool *sp, const char *msg_id, spool_loaded *out);
void spool_loaded_free(spool_loaded *m);

/* Calls cb for every non-final recipient (QUEUED or DEFERRED), in rowid order.
 * msg_id == NULL: all of them (start-up recovery); else only that message's. */
typedef void (*spool_rcpt_cb)(void *arg, const spool_rcpt *r);
int spool_each_pending_rcpt(spool *sp, const char *msg_id, spool_rcpt_cb cb, void *arg);

/* One page of the recipients that are due: non-final recipients that are QUEUED, or
 * DEFERRED with next_attempt_ms < due_before_ms, whose rowid is > after_rowid; at most
 * limit of them, in rowid order. Pass the last rowid seen as after_rowid to get the next
 * page (0 for the first). Pages are read through indexes, never by scanning the table, so
 * a scheduler can keep only the recipients due soon in memory and page in the rest. With
 * 1,000,000 recipients a page of 1000 takes about 1 ms; only when more than 10,000 retries
 * are due while most DEFERRED recipients are not, a page may walk past the ones not due
 * (about 80 ms per 1,000,000 of them, once per sweep from after_rowid 0). */
int spool_each_due_rcpt(spool *sp, int64_t due_before_ms, int64_t after_rowid, size_t limit,
                        spool_rcpt_cb cb, void *arg);

/* The earliest next_attempt_ms of the DEFERRED recipients: 1 with *next_ms set, 0 when no
 * recipient is DEFERRED (*next_ms = 0), -1 on a read error. */
int spool_next_due_ms(spool *sp, int64_t *next_ms);

/* Counts of non-final recipients by state. They are maintained by the spool as recipients
 * are added and change state (store/spool_counts.c), so this reads two rows however long
 * the queue is. Like every read on the loop's connection, they count what is committed:
 * writes still in the commit pipeline show one batch later. */
int spool_count_rcpts(spool *sp, int64_t *queued, int64_t *deferred);

/* Counts of non-final recipients per (configuration set, domain, state), ordered by set,
 * then domain, then state (for `kilnctl queue`). It reads every pending recipient: about
 * 1.5 s for 1,000,000 of them, so it is for an operator's command, not for the loop (kilnd
 * runs it on a reader: spool_reader_count_by). */
typedef void (*spool_count_cb)(void *arg, const char *config_set, const char *domain,
                               spool_rcpt_state state, int64_t count);
int spool_count_by(spool *sp, spool_count_cb cb, void *arg);

/* Sum of quota_count of messages created at or after since_ms, per created_ms, in created_ms
 * order (for rebuilding the rolling 24 h window at start-up). Kept apart from the messages,
 * so it survives their deletion; rows older than 24 h by the wall clock are pruned. */
typedef void (*spool_sent_cb)(void *arg, int64_t created_ms, unsigned count);
int spool_each_sent_since(spool *sp, int64_t since_ms, spool_sent_cb cb, void *arg);

/* Suppression reads. *reason (may be NULL) receives a malloc'd copy. spool_suppression_get
 * sees the loop's uncommitted writes; spool_suppression_each lists what is committed. */
int spool_suppression_get(spool *sp, const char *address, bool *found, char **reason,
                          int64_t *updated_ms);
typedef void (*spool_suppression_cb)(void *arg, const char *address, const char *reason,
                                     int64_t updated_ms);
int spool_suppression_each(spool *sp, spool_suppression_cb cb, void *arg);
/* One page of the committed list for ListSuppressedDestinations: addresses sorting after
 * `after` (NULL: from the first), updated_ms in [since_ms, until_ms) (INT64_MIN/INT64_MAX:
 * open), reason among `reasons` (CONFIG_SUPPRESS_* bits; 0: any), in address order, at
 * most max. 0, or -1 on a read error. */
int spool_suppression_page(spool *sp, const char *after, int64_t since_ms, int64_t until_ms,
                           unsigned reasons, size_t max, spool_suppression_cb cb, void *arg);

/* Outbox: up to max events with id > after, in id order. */
typedef void (*spool_event_cb)(void *arg, int64_t id, const char *set, const char *json);
int spool_each_event(spool *sp, int64_t after, size_t max, spool_event_cb cb, void *arg);
/* The same, stopping once the rows handed to cb hold max_bytes of event text or more (at
 * least one row, so a single large row still moves): a drain's memory is bounded by bytes,
 * not only by rows. */
int spool_each_event_bytes(spool *sp, int64_t after, size_t max, size_t max_bytes,
                           spool_event_cb cb, void *arg);

/* Counting one set's outbox rows in steps (webhook backlogs): of the next at most max rows
 * with id > after (any set), *last gets the largest id (0 if there is none) and *count
 * how many belong to set. 0, or -1 on a read error. */
int spool_count_set_events(spool *sp, const char *set, int64_t after, size_t max,
                           int64_t *last, int64_t *count);
/* The id of set's n-th outbox row (n >= 1) with id > after: 1 with *id set, 0 if the set
 * has fewer rows there, -1 on a read error. */
int spool_nth_set_event(spool *sp, const char *set, int64_t after, int64_t n, int64_t *id);

/* The largest id the outbox holds or held (AUTOINCREMENT: ids are never reused), 0 if it
 * never held a row. 0, or -1 on a read error. */
int spool_last_event_id(spool *sp, int64_t *id);

/* The value stored under key (malloc'd) in *value, or NULL if there is none. 0, or -1 on
 * a read error (*value NULL). Sees the loop's uncommitted writes. */
int spool_kv_get(spool *sp, const char *key, char **value);
/* Committed kv rows whose key starts with prefix and sorts after `after` (NULL: from the
 * first), in key order, at most max of them. 0, or -1 on a read error. */
typedef void (*spool_kv_cb)(void *arg, const char *key, const char *value);
int spool_kv_each_prefix(spool *sp, const char *prefix, const char *after, size_t max,
                         spool_kv_cb cb, void *arg);

/* Send-statistics buckets with bucket_ms >= since_ms, oldest first. */
typedef void (*spool_stats_cb)(void *arg, int64_t bucket_ms, int64_t attempts, int64_t bounces,
                               int64_t complaints, int64_t rejects);
int spool_stats_each(spool *sp, int64_t since_ms, spool_stats_cb cb, void *arg);

/* Last SQLite error text of this handle (for logs). */
const char *spool_errmsg(spool *sp);

/* ---- a reader: a read-only connection of its own (store/spool_reader.c) ----
 * For reads that must not run on the loop: a worker thread opens one on the spool's
 * directory (after spool_open made the schema), reads the last committed state through it
 * while the loop's connection goes on writing (WAL: neither waits for the other), and
 * closes it. One thread at a time; spool_reader_interrupt may be called from any thread
 * and makes a read in progress fail soon. */
typedef struct spool_reader spool_reader;
spool_reader *spool_reader_open(const char *dir, char **err);
void spool_reader_close(spool_reader *rd);
void spool_reader_interrupt(spool_reader *rd);
/* As spool_count_by, over the last committed state. 0, or -1 (spool_reader_errmsg says
 * why; also after spool_reader_interrupt). */
int spool_reader_count_by(spool_reader *rd, spool_count_cb cb, void *arg);
const char *spool_reader_errmsg(const spool_reader *rd);

#endif
