/* health.c — circuit breaker of one dedicated IP (see health.h): closed -> open on a bind
 * failure or on connect failures that peers show are the IP's fault, half-open after the
 * cool-down for one probe, closed again by a success; and the sites the IP reached within
 * the peer window, in a hash table of its own (open addressing, linear probing, rebuilt at
 * sweeps: no deletion in place). Pure: state plus the caller's clock. */
#include "pools/health.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

void health_init(health *h, const pools_opts *o)
{
    memset(h, 0, sizeof *h);
    h->cooldown_ms = o->cooldown_ms;
}

static void health_clear_failed(health *h)
{
    for (size_t i = 0; i < h->nfailed; i++) free(h->failed[i]);
    h->nfailed = 0;
    h->consecutive = 0;
    h->timeouts = 0;
    h->degraded = false;
    h->degraded_reason[0] = '\0';
}

void health_free(health *h)
{
    health_clear_failed(h);
    for (size_t i = 0; i < h->areached; i++) free(h->reached[i].site);
    free(h->reached);
    memset(h, 0, sizeof *h);
}

pools_health health_state(const health *h, int64_t now_ms)
{
    if (!h->open) return POOLS_HEALTH_CLOSED;
    return now_ms >= h->opened_ms + h->cooldown_ms ? POOLS_HEALTH_HALF_OPEN : POOLS_HEALTH_OPEN;
}

bool health_usable(const health *h, int64_t now_ms)
{
    pools_health s = health_state(h, now_ms);
    return s == POOLS_HEALTH_CLOSED || (s == POOLS_HEALTH_HALF_OPEN && !h->probing);
}

int64_t health_down_until(const health *h)
{
    return h->open ? h->opened_ms + h->cooldown_ms : 0;
}

const char *health_reason(const health *h)
{
    return h->reason;
}

const char *health_name(pools_health s)
{
    switch (s) {
    case POOLS_HEALTH_CLOSED: return "closed";
    case POOLS_HEALTH_OPEN: return "open";
    case POOLS_HEALTH_HALF_OPEN: return "half-open";
    }
    return "unknown";
}

void health_session_started(health *h)
{
    if (h->open) h->probing = true;
}

void health_session_ended(health *h, int open_sessions)
{
    if (open_sessions <= 0) h->probing = false;
}

static void health_open_circuit(health *h, int64_t now_ms, int64_t cooldown_ms)
{
    health_clear_failed(h);
    h->open = true;
    h->opened_ms = now_ms;
    h->cooldown_ms = cooldown_ms;
    h->probing = false;
}

/* A failure while half-open: the probe failed. */
static void reopen(health *h, const pools_opts *o, int64_t now_ms, const char *what)
{
    int64_t c = h->cooldown_ms * 2;
    if (c > o->cooldown_max_ms) c = o->cooldown_max_ms;
    if (c < o->cooldown_ms) c = o->cooldown_ms;
    health_open_circuit(h, now_ms, c);
    snprintf(h->reason, sizeof h->reason, "probe failed: %s", what);
}

#define HEALTH_REACHED_MIN 64        /* table slots at first; and the first sweep */

static uint64_t health_hash(const char *s)
{
    uint64_t h = UINT64_C(1469598103934665603);
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= UINT64_C(1099511628211);
    }
    return h;
}

/* The slot of site (hash h): its entry, or the empty slot where it would go. */
static health_site *reached_slot(const health *h, const char *site, uint64_t hash)
{
    size_t mask = h->areached - 1;
    for (size_t i = (size_t)hash & mask;; i = (i + 1) & mask) {
        health_site *s = &h->reached[i];
        if (!s->site || (s->hash == hash && strcmp(s->site, site) == 0)) return s;
    }
}

/* Makes a table of cap slots holding the entries of h not older than keep_since_ms. */
static void reached_rebuild(health *h, size_t cap, int64_t keep_since_ms)
{
    health_site *old = h->reached;
    size_t nold = h->areached;
    h->reached = util_calloc(cap, sizeof *h->reached);
    h->areached = cap;
    h->nreached = 0;
    for (size_t i = 0; i < nold; i++) {
        if (!old[i].site) continue;
        if (old[i].ok_ms < keep_since_ms) {
            free(old[i].site);      /* too old to vouch for anything: drop it */
            continue;
        }
        *reached_slot(h, old[i].site, old[i].hash) = old[i];
        h->nreached++;
    }
    free(old);
}

static void remember_reached(health *h, const pools_opts *o, const char *site, int64_t now_ms)
{
    uint64_t hash = health_hash(site);
    if (h->areached) {
        health_site *s = reached_slot(h, site, hash);
        if (s->site) {
            s->ok_ms = now_ms;
            return;
        }
    }
    if (h->nreached + 1 >= h->reached_sweep_at ||
        now_ms - h->reached_swept_ms >= o->peer_success_window_ms) {
        /* drop what the window no longer covers, then size the table to 4 x what is left
         * (at least HEALTH_REACHED_MIN): the next sweep comes when it is half full, after
         * at least as many new sites as there are now, so sweeps cost O(1) per site */
        reached_rebuild(h, h->areached ? h->areached : HEALTH_REACHED_MIN,
                        now_ms - o->peer_success_window_ms);
        size_t cap = HEALTH_REACHED_MIN;
        while (cap < 4 * (h->nreached + 1)) cap *= 2;
        if (cap != h->areached) reached_rebuild(h, cap, INT64_MIN);
        h->reached_sweep_at = cap / 2;
        h->reached_swept_ms = now_ms;
    }
    health_site *s = reached_slot(h, site, hash);
    s->site = util_strdup(site);
    s->hash = hash;
    s->ok_ms = now_ms;
    h->nreached++;
}

bool health_reached_since(const health *h, const char *site, int64_t since_ms)
{
    if (!h->areached) return false;
    const health_site *s = reached_slot(h, site, health_hash(site));
    return s->site && s->ok_ms >= since_ms;
}

void health_ok(health *h, const pools_opts *o, const char *site, int64_t now_ms)
{
    if (site && *site) remember_reached(h, o, site, now_ms);
    pools_health s = health_state(h, now_ms);
    if (s == POOLS_HEALTH_OPEN) return;     /* an older session's result: the cool-down runs on */
    if (s == POOLS_HEALTH_HALF_OPEN) {      /* the probe got through */
        h->open = false;
        h->probing = false;
        h->cooldown_ms = o->cooldown_ms;
        h->reason[0] = '\0';
    }
    health_clear_failed(h);
}

void health_bind_failed(health *h, const pools_opts *o, int64_t now_ms, const char *reason)
{
    pools_health s = health_state(h, now_ms);
    if (s == POOLS_HEALTH_OPEN) return;
    if (s == POOLS_HEALTH_HALF_OPEN) {
        reopen(h, o, now_ms, reason);
        return;
    }
    health_open_circuit(h, now_ms, o->cooldown_ms);
    snprintf(h->reason, sizeof h->reason, "%s", reason);
}

static void health_add_failed_site(health *h, const char *site)
{
    for (size_t i = 0; i < h->nfailed; i++)
        if (strcmp(h->failed[i], site) == 0) return;
    if (h->nfailed == HEALTH_MAX_FAILED_SITES) {    /* keep the most recent ones */
        free(h->failed[0]);
        memmove(&h->failed[0], &h->failed[1], (h->nfailed - 1) * sizeof h->failed[0]);
        h->nfailed--;
    }
    h->failed[h->nfailed++] = util_strdup(site);
}

void health_connect_failed(health *h, const pools_opts *o, const char *site, int64_t now_ms,
                           health_peer_fn peer, void *ctx)
{
    if (!site) site = "";
    pools_health s = health_state(h, now_ms);
    if (s == POOLS_HEALTH_OPEN) return;
    if (s == POOLS_HEALTH_HALF_OPEN) {
        char what[140];
        snprintf(what, sizeof what, "connect to %s failed", *site ? site : "the site");
        reopen(h, o, now_ms, what);
        return;
    }
    h->consecutive++;
    h->last_fail_ms = now_ms;
    health_add_failed_site(h, site);
    if (h->consecutive < o->failures_to_open || (int64_t)h->nfailed < o->sites_to_open) return;

    /* Only sites that another IP of the pool reaches lately blame this IP. */
    size_t confirmed = 0;
    char names[128] = "";
    size_t used = 0;
    for (size_t i = 0; i < h->nfailed; i++) {
        if (!peer || !peer(ctx, h->failed[i], now_ms - o->peer_success_window_ms)) continue;
        confirmed++;
        if (used < sizeof names) {
            int w = snprintf(names + used, sizeof names - used, "%s%s", used ? ", " : "",
                             h->failed[i]);
            if (w > 0) used += (size_t)w;
        }
    }
    if ((int64_t)confirmed < o->sites_to_open) return;
    int failures = h->consecutive;
    health_open_circuit(h, now_ms, o->cooldown_ms);
    snprintf(h->reason, sizeof h->reason,
             "%d consecutive connect failures; other IPs of the pool reach %zu of those sites (%s)",
             failures, confirmed, names);
}

void health_note_timeout(health *h)
{
    if (!h->open && h->consecutive > 0) h->timeouts++;
}

bool health_failed_at(const health *h, const char *site)
{
    for (size_t i = 0; i < h->nfailed; i++)
        if (strcmp(h->failed[i], site ? site : "") == 0) return true;
    return false;
}

void health_update_degraded(health *h, const pools_opts *o, int64_t now_ms, health_peer_fn peer,
                            void *ctx)
{
    h->degraded = false;
    h->degraded_reason[0] = '\0';
    if (h->open || h->consecutive == 0 || !peer) return;
    size_t confirmed = 0, used = 0;
    char names[128] = "";
    for (size_t i = 0; i < h->nfailed; i++) {
        if (!peer(ctx, h->failed[i], now_ms - o->peer_success_window_ms)) continue;
        confirmed++;
        if (used < sizeof names) {
            int w = snprintf(names + used, sizeof names - used, "%s%s", used ? ", " : "",
                             h->failed[i]);
            if (w > 0) used += (size_t)w;
        }
    }
    if (!confirmed) return;
    h->degraded = true;
    snprintf(h->degraded_reason, sizeof h->degraded_reason,
             "%s to %zu site(s) from this IP while other IPs of the pool connected (%s); "
             "%d consecutive failure(s)",
             h->timeouts > 0 ? "connect timeout" : "connect failures", confirmed, names,
             h->consecutive);
}

bool health_avoid(const health *h, const pools_opts *o, int64_t now_ms)
{
    return h->degraded && !h->open && h->timeouts > 0 && now_ms < h->last_fail_ms + o->cooldown_ms;
}
