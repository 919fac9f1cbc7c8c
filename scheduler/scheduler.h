/* scheduler.h — the delivery scheduler: keeps queued and deferred recipients in memory
 * (rebuilt from the spool at start-up), groups them by message and destination domain,
 * chooses the next hop (static route, or MX via DNS), opens SMTP client sessions bound to
 * an IP of the configuration set's pool, and records each outcome (delivered, deferred
 * with backoff, bounced) in the spool with its event. */
#ifndef KILN_SCHEDULER_H
#define KILN_SCHEDULER_H

#include <stdint.h>

struct kiln_ctx;
struct pools;
typedef struct scheduler scheduler;

scheduler *scheduler_new(struct kiln_ctx *ctx);
void scheduler_free(scheduler *s);
/* Loads every non-final recipient from the spool; returns how many, or -1. */
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

#endif
