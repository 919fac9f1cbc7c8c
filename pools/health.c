/* health.c — circuit breaker of one dedicated IP (see health.h): closed -> open on a bind
 * failure or on connect failures that peers show are the IP's fault, half-open after the
 * cool-down for one probe, closed again by a success. Pure: state plus the caller's clock. */
#include "pools/health.h"

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
}

void health_free(health *h)
{
    health_clear_failed(h);
    for (size_t i = 0; i < h->nreached; i++) free(h->reached[i].site);
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

static void remember_reached(health *h, const pools_opts *o, const char *site, int64_t now_ms)
{
    size_t j = 0;
    bool found = false;
    for (size_t i = 0; i < h->nreached; i++) {
        health_site *s = &h->reached[i];
        if (strcmp(s->site, site) == 0) {
            s->ok_ms = now_ms;
            found = true;
        } else if (s->ok_ms < now_ms - o->peer_success_window_ms) {
            free(s->site);          /* too old to vouch for anything: drop it */
            continue;
        }
        h->reached[j++] = *s;
    }
    h->nreached = j;
    if (found) return;
    if (h->nreached == h->areached) {
        h->areached = h->areached ? 2 * h->areached : 8;
        h->reached = util_realloc(h->reached, h->areached * sizeof *h->reached);
    }
    h->reached[h->nreached].site = util_strdup(site);
    h->reached[h->nreached].ok_ms = now_ms;
    h->nreached++;
}

bool health_reached_since(const health *h, const char *site, int64_t since_ms)
{
    for (size_t i = 0; i < h->nreached; i++)
        if (strcmp(h->reached[i].site, site) == 0) return h->reached[i].ok_ms >= since_ms;
    return false;
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

void health_bind_failed(health *h, const pools_opts *o, int64_t now_ms)
{
    pools_health s = health_state(h, now_ms);
    if (s == POOLS_HEALTH_OPEN) return;
    if (s == POOLS_HEALTH_HALF_OPEN) {
        reopen(h, o, now_ms, "bind failed");
        return;
    }
    health_open_circuit(h, now_ms, o->cooldown_ms);
    snprintf(h->reason, sizeof h->reason, "bind failed");
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
