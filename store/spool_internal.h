/* spool_internal.h — what the spool's files share: spool.c (connections, schema, statements,
 * open/close), spool_write.c (the loop's side of the writes: batches of recorded operations,
 * the commit pipeline, commit callbacks), spool_writer.c (the writer thread that runs a batch
 * on its own connection), spool_overlay.c (values written but not committed yet),
 * spool_read.c (reads) and spool_feedback.c (sent_mail and feedback_inbox). Nothing outside
 * store/ includes this file. */
#ifndef KILN_SPOOL_INTERNAL_H
#define KILN_SPOOL_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "store/spool.h"

/* spool_each_due_rcpt sorts the due DEFERRED recipients by rowid when there are fewer than
 * this many (a few milliseconds); with more, it walks recipients_due in rowid order. */
#define SPOOL_DUE_SORT_MAX 10000
/* The columns spool_read_rcpt() expects, in its order. */
#define SPOOL_RCPT_COLUMNS \
    "id, msg_id, address, state, attempts, next_attempt_ms, last_reply, domain"
#define SPOOL_BLOB_INCREMENTAL (64 * 1024) /* messages this large are written piecewise */
#define SPOOL_PRUNE_EVERY_MS (60LL * 1000)

/* The pending recipients per (set, domain, state), in that order: a GROUP BY over every
 * pending recipient (about 1.5 s per 1,000,000), for the loop's connection (small spools,
 * tests) and for a reader's (kilnctl queue, off the loop). */
#define SPOOL_COUNT_BY_SQL \
    "SELECT m.config_set, r.domain, r.state, count(*) FROM recipients r" \
    " JOIN messages m ON m.id = r.msg_id WHERE r.state IN (0, 1)" \
    " GROUP BY m.config_set, r.domain, r.state ORDER BY m.config_set, r.domain, r.state"

/* Every statement. The reads are prepared once at open on the loop's connection, the writes
 * (spool_sql_writes) on the writer's. */
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
    ST_KV_DEL,
    ST_KV_PREFIX_FROM,
    ST_KV_PREFIX_AFTER,
    ST_SUPP_PAGE_FROM,
    ST_SUPP_PAGE_AFTER,
    ST_STATS_ADD,
    ST_STATS_EACH,
    ST_PRUNE_STATS,
    ST_COUNT_SET_EVENTS,
    ST_NTH_SET_EVENT,
    /* spool_feedback.c (issue 14) */
    ST_SENT_COPY,
    ST_SENT_PRUNE,
    ST_FBIN_ADD,
    ST_FBIN_DEL,
    ST_SENT_FIND_QUEUED,
    ST_SENT_FIND_KEPT,
    ST_SENT_MID_KEPT,
    ST_FBIN_EACH,
    ST__COUNT
};

extern const char *const spool_sql[ST__COUNT];
/* true for the statements the writer runs (prepared on its connection only). */
extern const bool spool_sql_writes[ST__COUNT];

typedef struct spool_cb_entry {
    spool_commit_cb cb;        /* NULL once carried to a later batch (spool_keep.c) */
    void *arg;
    bool keep;                 /* registered between spool_keep_begin and _end */
} spool_cb_entry;

/* ---- a batch: the writes of some loop iterations, recorded for the writer ---- */

typedef enum spool_op_kind {
    SPOOL_OP_ADD_MSG,
    SPOOL_OP_ADD_RCPT,
    SPOOL_OP_UPD_RCPT,
    SPOOL_OP_GC_MSG,
    SPOOL_OP_ADD_EVENT,
    SPOOL_OP_DEL_EVENTS,
    SPOOL_OP_SUPP_PUT,
    SPOOL_OP_SUPP_DEL,
    SPOOL_OP_KV_PUT,
    SPOOL_OP_KV_DEL,
    SPOOL_OP_STATS_ADD,
    SPOOL_OP_SENT_PRUNE,
    SPOOL_OP_FBIN_ADD,
    SPOOL_OP_FBIN_DEL,
} spool_op_kind;

/* One recorded write. Strings live in the batch's arena, except `owned` (a message body or
 * an event handed over with a _take call), which the batch frees when it is recycled. */
typedef struct spool_op {
    spool_op_kind kind;
    bool keep;                 /* a kept write: carried over a failed batch (spool_keep.c) */
    void *owned;
    union {
        struct {
            const char *id, *config_set, *mail_from, *client_ip, *mail_json, *data;
            size_t data_len;
            int64_t created_ms;
            unsigned quota_count;
        } msg;
        struct {
            int64_t id;
            const char *msg_id, *address;
            int state;
        } rcpt;
        struct {
            int64_t id, next_ms;
            int state, attempts;
            const char *last_reply;   /* NULL: SQL NULL */
        } upd;
        struct {
            const char *msg_id;
        } gc;
        struct {
            const char *set, *json;
        } event;
        struct {
            int64_t upto;
        } del_events;
        struct {
            const char *address, *reason;   /* address lower-case */
            int64_t at_ms;
        } supp;
        struct {
            const char *key, *value;   /* value NULL for SPOOL_OP_KV_DEL */
        } kv;
        struct {
            int64_t bucket_ms, attempts, bounces, complaints, rejects;
        } stats;
        struct {
            int64_t before_ms;
        } sent_prune;
        struct {
            int64_t id, received_ms;      /* id only for SPOOL_OP_FBIN_DEL */
            const char *client_ip, *mail_from, *rcpts;
            const char *data;             /* == owned (NULL when len is 0) */
            size_t len;
        } fbin;
    } u;
} spool_op;

/* Bump allocation for a batch's copied strings: one chunk list, kept (the first chunk) and
 * reused when the batch is recycled, so a steady load allocates nothing per write. */
typedef struct spool_arena_chunk {
    struct spool_arena_chunk *next;
    size_t used, cap;
    char buf[];
} spool_arena_chunk;

typedef struct spool_arena {
    spool_arena_chunk *head;
} spool_arena;

/* Keys of the overlays (spool_overlay below) a batch wrote: dropped from them when the batch
 * is reaped, unless a later batch wrote the key again. */
typedef struct spool_touch {
    bool supp;                 /* the suppression overlay (else kv) */
    const char *key;           /* in the batch's arena */
} spool_touch;

typedef struct spool_batch {
    uint64_t seq;              /* batches are handed over and reaped in this order */
    spool_op *ops;
    size_t nops, capops;
    spool_cb_entry *cbs;
    size_t ncbs, capcbs;
    spool_touch *touched;
    size_t ntouched, captouched;
    spool_arena arena;
    int64_t handed_ms;         /* monotonic time of the hand-over (the loop's side: the commit
                                * latency is measured from it to the reap) */
    bool keep_sent;            /* spool_keep_sent as it was at hand-over: the writer copies a
                                * message it deletes as finished into sent_mail first */
    /* the writer's result */
    bool ok;
    char *err;                 /* malloc'd error text when !ok */
    bool transient;            /* !ok because of the environment (disk full, I/O error, ...) */
    long fail_op;              /* !ok: index of the write that failed, -1 if none did */
} spool_batch;

/* ---- values written but not committed yet (spool_overlay.c) ---- */

/* An entry: the last uncommitted write of a key (a kv value, or a suppression put or
 * delete) and the batch that holds it. */
typedef struct spool_ov_entry {
    char *key;                 /* NULL: empty slot */
    char *value;               /* kv value or suppression reason; NULL when deleted */
    int64_t at_ms;             /* suppression: updated_ms */
    uint64_t seq;              /* the batch of the last write */
} spool_ov_entry;

typedef struct spool_overlay {
    spool_ov_entry *v;         /* open addressing, linear probing */
    size_t n, cap;
} spool_overlay;

/* Records the write of key (value NULL: deleted) in batch seq, replacing an older entry. */
void spool_overlay_put(spool_overlay *o, const char *key, const char *value, int64_t at_ms,
                       uint64_t seq);
/* The entry of key, or NULL if no uncommitted batch wrote it. */
const spool_ov_entry *spool_overlay_get(const spool_overlay *o, const char *key);
/* Batch seq was reaped: drops key's entry if no later batch wrote it. */
void spool_overlay_settle(spool_overlay *o, const char *key, uint64_t seq);
void spool_overlay_free(spool_overlay *o);

/* ---- the writer thread (spool_writer.c) ---- */

typedef struct spool_writer {
    sqlite3 *db;               /* its own connection: only the writer thread uses it */
    sqlite3_stmt *st[ST__COUNT];   /* the write statements (spool_sql_writes) */
    const char *path;          /* the spool's, for error texts */
    int64_t last_prune_mono;
    pthread_t thread;
    bool started;
    /* shared with the loop thread, under mu */
    pthread_mutex_t mu;
    pthread_cond_t work;       /* a batch was handed over, or stop */
    pthread_cond_t done;       /* the batch handed over is finished */
    spool_batch *job;          /* handed over and not reaped yet */
    bool job_done;
    bool stop;
    void (*wake)(void *arg);
    void *wake_arg;
    bool hurry;                /* closing: short waits after a failed batch */
    unsigned test_fail;        /* spool_test_fail_batches: batches still to fail */
    int test_fail_code;
    /* the writer thread's own */
    unsigned fail_streak;      /* batches failed in a row by the environment */
} spool_writer;

/* Prunes sends older than 24 h and stats buckets older than 14 days (wall clock) on the
 * writer's connection, outside a batch (at open, before the thread starts). 0 or -1. */
int spool_writer_prune(spool_writer *w, char **err);
/* Starts the thread on w (db and statements ready). 0, or -1 with *err set. */
int spool_writer_start(spool_writer *w, char **err);
/* Stops and joins the thread (the batch handed over, if any, is finished first). */
void spool_writer_stop(spool_writer *w);
/* Hands b over (the writer must be free). */
void spool_writer_submit(spool_writer *w, spool_batch *b);
/* The finished batch, or NULL while it is still running (never blocks). */
spool_batch *spool_writer_take_done(spool_writer *w);
/* Waits until the batch handed over is finished. */
void spool_writer_wait(spool_writer *w);
/* Closing: a wait after a failed batch is cut short (spool_writer.c's backoff). */
void spool_writer_hurry(spool_writer *w);

/* ---- the spool ---- */

struct spool {
    struct metrics *metrics;      /* kiln_spool_commit_seconds, kiln_spool_batch_writes (NULL:
                                     not counted); touched on the loop thread only */
    sqlite3 *db;                  /* the loop's connection: reads only (after open) */
    char *path;                   /* DIR/kiln.db, for error texts */
    sqlite3_stmt *st[ST__COUNT];  /* the read statements */
    char *last_err;               /* last error text of any operation */
    /* the commit pipeline (spool_write.c) */
    spool_batch *filling;         /* takes the writes now */
    spool_batch *inflight;        /* handed to the writer and not reaped yet, or NULL */
    spool_batch *spare;           /* a recycled batch, or NULL */
    uint64_t next_seq;
    uint64_t reaped_seq;          /* batches up to this one have run their callbacks */
    int64_t next_rcpt_id;         /* recipient ids are given out here, in order */
    int64_t next_fbin_id;         /* feedback_inbox ids, the same way (spool_feedback.c) */
    bool keep_sent;               /* spool_keep_sent: copied into each batch at hand-over */
    spool_overlay kv, supp;       /* kv values and suppression entries not committed yet */
    spool_suppression_hook supp_hook;   /* told of local suppression writes (cluster) */
    void *supp_hook_arg;
    int keep_depth;               /* > 0: writes are recorded as kept (spool_keep_begin) */
    size_t kept_waiting;          /* kept writes carried over failed batches, not committed */
    unsigned failures;            /* batches failed in a row (0 once one commits) */
    spool_writer w;
};

/* spool_counts.c */
/* Makes the maintained counts of pending recipients (tables and triggers) when they are
 * missing, filled from the recipients there (spool_counts.c). 0, or -1 with *err. */
int spool_counts_setup(spool *sp, char **err);

/* spool_feedback.c */
/* Makes the tables sent_mail and feedback_inbox when they are missing and reads the next
 * feedback_inbox id. 0, or -1 with *err. */
int spool_feedback_setup(spool *sp, char **err);

/* spool_keep.c */
/* b failed: its kept writes (less the one that made it fail, when that was one of them and
 * not the environment) and its kept callbacks move, in order, to the head of the filling
 * batch (before anything recorded since). Call before b's overlay keys are settled and
 * before the filling batch is handed over. */
void spool_keep_carry(spool *sp, spool_batch *b);
/* Spool is closing and these callbacks will never see their writes committed: each runs
 * with ok=false and why. */
void spool_keep_abandon(spool *sp, const char *why);

/* spool.c */
/* Records the text of the last error: "spool PATH: what key: SQLite's message". */
void spool_note_error(spool *sp, const char *what, const char *key);
void spool_set_last_err(spool *sp, char *msg);   /* takes msg */
/* The cached statement, or a fresh one if the cached one is still stepping (a read called
 * from inside another read's callback). *temp tells spool_stmt_release to finalize it. */
sqlite3_stmt *spool_stmt_acquire(spool *sp, int which, bool *temp);
void spool_stmt_release(sqlite3_stmt *st, bool temp);
void spool_bind_str(sqlite3_stmt *st, int i, const char *s);
/* Column text, never NULL; valid until the statement steps again. */
const char *spool_col_text(sqlite3_stmt *st, int i);
char *spool_col_strdup(sqlite3_stmt *st, int i);

/* spool_write.c */
/* A new write of that kind at the end of the filling batch (zeroed, kept if between
 * spool_keep_begin and _end). */
spool_op *spool_record(spool *sp, spool_op_kind kind);
/* A copy of s in b's arena (NULL stays NULL). */
const char *spool_batch_str(spool_batch *b, const char *s);
/* Notes that the filling batch wrote key (a copy in its arena) of an overlay. */
void spool_touch_key(spool *sp, bool supp, const char *key);
void spool_pipeline_init(spool *sp);
void spool_pipeline_free(spool *sp);   /* after the writer stopped */
/* Closing with writes that would not commit: waits for the batch with the writer, then
 * runs every callback left with ok=false and why. */
void spool_pipeline_abandon(spool *sp, const char *why);
/* Uncommitted writes seen by the reads: true if the overlay answers for key (then *value
 * is a malloc'd copy, or NULL if nothing is stored). */
bool spool_pending_kv(spool *sp, const char *key, char **value);
/* The same for the suppression entry of lower-case address lc. */
bool spool_pending_suppression(spool *sp, const char *lc, bool *found, char **reason,
                               int64_t *updated_ms);

#endif
