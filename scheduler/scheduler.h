/* scheduler.h — the delivery scheduler: keeps queued and deferred recipients in memory
 * (read from the spool, within a memory budget: see scheduler.c), groups them by message
 * and destination domain into jobs, serves the configuration sets by priority, holds
 * work per destination, and hands jobs to a delivery executor (mta/delivery.c: next hop,
 * source IP, SMTP session) through the ops below; the executor reports each outcome
 * (delivered, deferred with backoff, bounced) back (scheduler/job.h), which the scheduler
 * records in the spool with its event. */
#ifndef KILN_SCHEDULER_H
#define KILN_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/spool.h"

struct kiln_ctx;
struct pools;
struct sched_job;
typedef struct scheduler scheduler;

/* Recipients held in memory at most (the others are paged in from the spool). */
#define SCHEDULER_MEM_RCPTS_DEFAULT 200000

typedef struct scheduler_options {
    int64_t mem_rcpts;          /* memory budget in recipients; <= 0: the default */
} scheduler_options;

/* The delivery executor the scheduler hands jobs to (wired by the daemon; a fake one in
 * the unit tests). arg is the executor's own. Every op is called from the loop. */
typedef struct scheduler_exec_ops {
    /* An active job (message loaded) begins its attempt: see scheduler/job.h. */
    void (*start)(void *arg, struct sched_job *j);
    /* The pump: active jobs waiting for a connection slot or rate token may proceed. */
    void (*retry_waiting)(void *arg);
    /* The config was replaced (before the scheduler looks at it). */
    void (*config_changed)(void *arg);
    /* The pools state changed: sessions from IPs no longer usable take no new work. */
    void (*pools_changed)(void *arg);
    /* Whether a session uses source IP addr (a released IP is forgotten once none does). */
    bool (*ip_in_use)(void *arg, const char *addr);
    /* The graceful stop began: waiting jobs are released already; drop connections that
     * have no transaction yet (releasing their jobs), QUIT idle ones. */
    void (*stop)(void *arg);
    /* Open sessions (kilnctl status; the stop completes at 0). */
    int (*sessions)(void *arg);
    /* For explain: what active job j is doing on which session (malloc'd), or NULL. */
    char *(*job_reason)(void *arg, const struct sched_job *j);
} scheduler_exec_ops;

/* opts may be NULL (defaults). */
scheduler *scheduler_new(struct kiln_ctx *ctx, const scheduler_options *opts);
/* Wires the executor (before scheduler_recover; ops must outlive the scheduler). */
void scheduler_set_exec(scheduler *s, const scheduler_exec_ops *ops, void *arg);
/* The executor is freed first (its sessions end; pending lookups are dropped). */
void scheduler_free(scheduler *s);
/* Loads the non-final recipients from the spool, up to the scheduler's memory budget (the
 * others are paged in later); returns how many it loaded, or -1. */
int64_t scheduler_recover(scheduler *s);
/* A message was committed: queue its pending recipients. */
void scheduler_message_committed(scheduler *s, const char *msg_id);
/* The config was replaced (ctx->cfg is the new one). */
void scheduler_config_changed(scheduler *s);
/* Graceful stop: start no new session, let open ones finish their transaction and QUIT;
 * calls done(arg) when no session is left (possibly at once). */
void scheduler_stop(scheduler *s, void (*done)(void *arg), void *arg);
/* For kilnctl status. */
void scheduler_counts(const scheduler *s, int64_t *queued, int64_t *deferred, int *sessions);
/* The dedicated-IP state the scheduler chooses source IPs from (kilnctl ips, ip warmup,
 * zone down|up). Owned by the scheduler. */
struct pools *scheduler_pools(scheduler *s);
/* An operator changed the pools state (warm-up percentage, zone down or up): sessions from
 * IPs that may no longer be used QUIT after their transaction, mail waiting for an IP is
 * tried again now, and the state is saved to the spool. */
void scheduler_pools_changed(scheduler *s);

/* kilnctl queue: recipients grouped by pool, configuration set, domain and state, sorted by
 * those; only domain's (case-insensitive) unless domain is NULL or "". States: "ready"
 * (due, not started yet), "active" (resolving, connecting or in a transaction), "waiting"
 * (for a connection slot, a rate token, or the end of a site's throttling backoff) and
 * "deferred" (until a retry time). Returns the number of rows; *rows is malloc'd (free
 * with scheduler_queue_free). */
typedef struct scheduler_queue_row {
    char *pool, *set, *domain;
    const char *state;
    int64_t recipients;
} scheduler_queue_row;
size_t scheduler_queue(scheduler *s, const char *domain, scheduler_queue_row **rows);
void scheduler_queue_free(scheduler_queue_row *rows, size_t n);

/* The same report in two halves, so that the slow part can run away from the loop (the
 * control socket does it on a worker thread with a read-only spool connection of its own):
 *   1. on the loop, scheduler_queue_snapshot copies what is in memory (bounded by the
 *      memory budget, never by the length of the queue);
 *   2. anywhere, if scheduler_queue_snap_wants_spool says that some pending recipients are
 *      in the spool only, the spool's counts per group (spool_count_by, or
 *      spool_reader_count_by on another thread) are fed to scheduler_queue_snap_spool;
 *   3. anywhere, scheduler_queue_finish makes the rows (as scheduler_queue) and frees the
 *      snapshot.
 * The recipients in the spool only are the spool's counts minus those in memory at the
 * snapshot: when the spool is read later, on another connection, recipients that changed
 * state in between may show in their old state. */
typedef struct scheduler_queue_snap scheduler_queue_snap;
scheduler_queue_snap *scheduler_queue_snapshot(scheduler *s, const char *domain);
bool scheduler_queue_snap_wants_spool(const scheduler_queue_snap *q);
/* The domain filter (lower-case), or NULL for every domain. */
const char *scheduler_queue_snap_domain(const scheduler_queue_snap *q);
/* A spool_count_cb (store/spool.h) with q as its argument: one group of the spool's counts. */
void scheduler_queue_snap_spool(void *q, const char *config_set, const char *domain,
                                spool_rcpt_state state, int64_t count);
size_t scheduler_queue_finish(scheduler_queue_snap *q, scheduler_queue_row **rows);
void scheduler_queue_snap_free(scheduler_queue_snap *q);

/* kilnctl queue --explain: for each pending recipient of message msg_id (sorted by
 * address), what it waits for: its retry time (deferred; last_reply says why), the cap of
 * which IP (a pools deferral), the shaping limit or backoff of which site, no usable IP,
 * the session it is in flight on, or that it is ready. Returns the number of rows (0: no
 * pending recipient of that message); free with scheduler_explain_free. */
typedef struct scheduler_explain_row {
    char *recipient, *domain, *set, *pool;
    const char *state;          /* as in scheduler_queue_row */
    char *reason;
    int64_t until_ms;           /* when that wait ends (wall clock), or 0 if unknown */
    int attempts;
    char *last_reply;           /* reply or failure of its last deferral, or NULL */
} scheduler_explain_row;
size_t scheduler_explain(scheduler *s, const char *msg_id, scheduler_explain_row **rows);
void scheduler_explain_free(scheduler_explain_row *rows, size_t n);

#endif
