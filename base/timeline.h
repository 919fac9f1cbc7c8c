/* timeline.h — the last TIMELINE_MAX notable events of a kilnd run, newest kept, oldest
 * dropped (a bounded ring): IPs failed, degraded, recovered or drained, zones down and up,
 * config reloads. Fed where the matching log lines are written (mta/delivery_session.c,
 * mta/control_cmd.c, scheduler/ipstate.c, daemon/daemon.c) and read by the web page's
 * /api/state.json (api/web.c). One per kilnd, reached through kiln_ctx.timeline (NULL:
 * nothing is recorded). Loop thread only; in memory only (a restart starts it empty).
 *
 * Beside it, a second ring of the last TIMELINE_OUTCOMES deferrals and bounces (fed by
 * scheduler/settle.c, where kiln_recipients_total is counted): the page's "recent
 * deferrals/bounces by reason" groups them by outcome and SES reason. */
#ifndef KILN_TIMELINE_H
#define KILN_TIMELINE_H

#include <stddef.h>
#include <stdint.h>

#define TIMELINE_MAX 100

typedef struct timeline timeline;

typedef struct timeline_event {
    int64_t at_ms;
    char kind[32];       /* "ip_failed", "ip_recovered", "ip_degraded", "ip_drained",
                            "zone_down", "zone_up", "config_reload", "config_rejected", ... */
    char subject[64];    /* the IP, zone or file it is about ("" when none) */
    char text[200];      /* one line in words, truncated to fit */
} timeline_event;

timeline *timeline_new(void);
void timeline_free(timeline *t);
/* Records an event (t NULL: nothing); the oldest goes when TIMELINE_MAX are kept. */
void timeline_add(timeline *t, int64_t at_ms, const char *kind, const char *subject,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
size_t timeline_count(const timeline *t);
/* The i-th event kept, 0 = the newest. */
const timeline_event *timeline_get(const timeline *t, size_t i);
/* Events ever recorded (including the dropped ones). */
uint64_t timeline_total(const timeline *t);

#define TIMELINE_OUTCOMES 500

typedef struct timeline_outcome {
    int64_t at_ms;
    char outcome[16];    /* "deferred" | "bounced" */
    char reason[48];     /* deferred: SES delayType; bounced: "bounceType/bounceSubType" */
    char domain[64];     /* the recipient's domain */
    char ip[48];         /* the source IP ("" when no session) */
    char reply[160];     /* the reply or failure, truncated */
} timeline_outcome;

/* Records one deferral or bounce (t NULL: nothing); the oldest goes past TIMELINE_OUTCOMES. */
void timeline_add_outcome(timeline *t, int64_t at_ms, const char *outcome, const char *reason,
                          const char *domain, const char *ip, const char *reply);
size_t timeline_outcome_count(const timeline *t);
/* The i-th outcome kept, 0 = the newest. */
const timeline_outcome *timeline_outcome_get(const timeline *t, size_t i);

#endif
