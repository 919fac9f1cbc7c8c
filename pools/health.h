/* health.h — the circuit breaker of one dedicated IP (SPEC section 3, Failover), pure state
 * over an injected clock.
 *
 * CLOSED: in rotation. A bind failure opens at once. Connect failures count while they run
 * consecutively and remember the sites they happened at; the circuit opens when there were
 * at least failures_to_open of them, at at least sites_to_open distinct sites, and for at
 * least sites_to_open of those sites another IP of the pool reached that site within
 * peer_success_window_ms (the caller answers that through a callback) — so an outage of
 * the destinations themselves takes no IP down. A success (or a throttling reply: the site
 * was reached) resets the count.
 * OPEN: out of rotation until opened + cool-down. Results of sessions that were already
 * open change nothing then.
 * HALF_OPEN (OPEN with the cool-down over; derived from the clock): one probe session may
 * start; its success closes the circuit and resets the cool-down, its failure re-opens
 * with the cool-down doubled (at most cooldown_max_ms). The probe slot frees when a result
 * arrives or when the IP has no open session any more.
 * DEGRADED (issue 11 item 6; a mark on a CLOSED circuit, not a state of its own): the IP's
 * current run of connect failures includes a site that another IP of the pool reached
 * within the peer window, so the fault is likely this IP's even when only one site was
 * tried. It shows in kilnctl ips with its reason; when the run has connect timeouts (SYN
 * unanswered: each costs a connect timeout), the pool prefers its other IPs until a
 * cool-down (cooldown_ms) after the last failure, then the IP gets its turn again as a
 * probe. Cleared by a success or by the circuit opening.
 * Each IP also remembers the sites it reached recently (for its peers' checks): a hash
 * table, swept of entries older than the peer window whenever it has doubled since the
 * last sweep or a window has passed since (so memory follows the sites reached within the
 * window, and each success costs O(1) however many sites there are). */
#ifndef KILN_HEALTH_H
#define KILN_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pools/pools.h"

#define HEALTH_MAX_FAILED_SITES 16   /* distinct failed sites remembered in one run */

typedef struct health_site {
    char *site;                      /* NULL: an empty slot */
    uint64_t hash;
    int64_t ok_ms;                   /* last success to that site */
} health_site;

typedef struct health {
    bool open;                       /* OPEN or HALF_OPEN (by the clock) */
    int64_t opened_ms;
    int64_t cooldown_ms;             /* of the current (or next) open period */
    bool probing;                    /* half-open probe session running */
    int consecutive;                 /* consecutive connect failures while closed */
    char *failed[HEALTH_MAX_FAILED_SITES];  /* distinct sites of this run, oldest first */
    size_t nfailed;
    health_site *reached;            /* sites reached within the peer window: a hash table
                                        (open addressing, areached slots, a power of 2), so
                                        that a success to one of 100,000 sites costs one
                                        lookup; entries past the window go at sweeps */
    size_t nreached, areached;
    size_t reached_sweep_at;         /* sweep when nreached reaches it, */
    int64_t reached_swept_ms;        /* or a peer window after the last sweep */
    char reason[256];                /* why it is open ("" when closed) */
    int timeouts;                    /* connect timeouts among the consecutive failures */
    int64_t last_fail_ms;            /* the latest of them */
    bool degraded;                   /* see DEGRADED above */
    char degraded_reason[256];       /* "" unless degraded */
} health;

/* Asked by health_connect_failed: did another IP of the pool reach `site` since since_ms? */
typedef bool (*health_peer_fn)(void *ctx, const char *site, int64_t since_ms);

void health_init(health *h, const pools_opts *o);
void health_free(health *h);

pools_health health_state(const health *h, int64_t now_ms);
/* A new session may start: closed, or half-open with no probe running. */
bool health_usable(const health *h, int64_t now_ms);
/* End of the cool-down while OPEN, else 0. */
int64_t health_down_until(const health *h);
const char *health_reason(const health *h);
const char *health_name(pools_health s);          /* "closed" | "open" | "half-open" */

/* A session of the IP starts: while the circuit is open (only half-open IPs are chosen)
 * it is the probe. */
void health_session_started(health *h);
/* open_sessions: sessions of the IP still open after this one ended. */
void health_session_ended(health *h, int open_sessions);

/* The site answered (a transaction reply or a throttling reply). */
void health_ok(health *h, const pools_opts *o, const char *site, int64_t now_ms);
/* The source address cannot be used (bind failed, or it left the host): down at once;
 * REASON (static text) is what kilnctl ips shows. */
void health_bind_failed(health *h, const pools_opts *o, int64_t now_ms, const char *reason);
void health_connect_failed(health *h, const pools_opts *o, const char *site, int64_t now_ms,
                           health_peer_fn peer, void *ctx);
/* The failure just recorded by health_connect_failed was a connect timeout. */
void health_note_timeout(health *h);
/* Re-derives the DEGRADED mark from the failed sites of the current run and the peers'
 * successes (peer: as for health_connect_failed). Call after a failure of this IP and after
 * a peer reached a site. */
void health_update_degraded(health *h, const pools_opts *o, int64_t now_ms, health_peer_fn peer,
                            void *ctx);
/* True while the pool should prefer its other IPs: degraded by connect timeouts, within
 * cooldown_ms of the last failure. */
bool health_avoid(const health *h, const pools_opts *o, int64_t now_ms);
/* True if site is among the failed sites of the current run. */
bool health_failed_at(const health *h, const char *site);
/* True if this IP reached `site` at or after since_ms. */
bool health_reached_since(const health *h, const char *site, int64_t since_ms);

#endif
