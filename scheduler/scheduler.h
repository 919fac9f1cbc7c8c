/* scheduler.h — the delivery scheduler: keeps queued and deferred recipients in memory
 * (read from the spool, within a memory budget: see scheduler.c), groups them by message
 * and destination domain, chooses the next hop (static route, or MX via DNS), opens SMTP
 * client sessions bound to an IP of the configuration set's pool, and records each
 * outcome (delivered, deferred with backoff, bounced) in the spool with its event. */
#ifndef KILN_SCHEDULER_H
#define KILN_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

struct kiln_ctx;
struct pools;
typedef struct scheduler scheduler;

scheduler *scheduler_new(struct kiln_ctx *ctx);
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
