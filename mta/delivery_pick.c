/* delivery_pick.c — the delivery executor's choice of a connection for a job (see
 * delivery.h): the source IP first, by the pool's rule (pools_choose: zone, health,
 * warm-up headroom, smooth weighted round robin), then a connection of that IP — an idle
 * cached session for the same hop and site, else a new one within shaping and the session
 * limit. An IP that cannot take the job now (headroom reserved by sessions in flight,
 * shaping window, rate token, backoff) is skipped and the choice moves on to the pool's
 * other IPs.
 *
 * Promises (issue 11 item 5): a cached idle connection is reused only when its IP is the
 * one the pool's choice names, so reuse never skews the pool's distribution away from
 * the headroom-weighted choice: an IP back after `zone up` or a closed circuit gets its
 * share of new sessions while the other IPs' connections sit idle. Reuse keeps its
 * benefit: each IP carries its share over its own cached connections. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/kiln.h"
#include "base/util.h"
#include "mta/delivery_int.h"
#include "pools/pools.h"
#include "scheduler/job.h"
#include "scheduler/shaping.h"

static void delivery_wait_slot(delivery_wait *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void delivery_wait_slot(delivery_wait *w, const char *fmt, ...)
{
    if (!w->slot) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->slot_why, sizeof w->slot_why, fmt, ap);
        va_end(ap);
    }
    w->slot = true;
}

/* A shaping verdict other than OK for one IP. */
static void delivery_wait_shaping(delivery_wait *w, shaping_verdict v, int64_t until, const char *reason)
{
    if (v == SHAPING_WAIT_CONNECTIONS) {
        delivery_wait_slot(w, "shaping: %s", reason);
        return;
    }
    if (!w->until || until < w->until) {
        w->until = until;
        snprintf(w->time_why, sizeof w->time_why, "%s", reason);
    }
}

/* The shaping entry of (ip, the job's site). */
static shaping_dest *delivery_job_shaping(delivery *dl, const sched_job *j, const char *ip)
{
    return shaping_get(dl->shaping, ip, j->site, j->mx, j->nmx);
}

/* An idle session of ip that can take job j for hop h from pool, or NULL. */
static delivery_session *delivery_idle_of(delivery *dl, const sched_job *j, const char *pool,
                                          const sched_hop *h, const pools_ip *ip, int64_t now)
{
    for (delivery_session *ss = dl->sessions; ss; ss = ss->next)
        if (ss->ip == ip && ss->state == SESS_IDLE && delivery_session_fits(dl, ss, j, pool, h, now))
            return ss;
    return NULL;
}

delivery_place_result delivery_place(delivery *dl, sched_job *j, const char *pool,
                                     const sched_hop *h, pools_ip *ip, int64_t now,
                                     delivery_wait *w)
{
    const char *addr = sched_ip_to_text(ip);
    if (sched_ip_room(dl->s, ip, j->provider, now) < 1) {
        delivery_wait_slot(w, "warm-up headroom of %s taken by sessions in flight", addr);
        return PLACE_BLOCKED;
    }
    char why[256];
    int64_t until = 0;
    delivery_session *idle = j->no_reuse ? NULL : delivery_idle_of(dl, j, pool, h, ip, now);
    if (idle) {
        /* every session of (ip, site) shares one shaping entry: its verdict is the IP's */
        shaping_verdict v = shaping_take_message(idle->sd, now, &until, why, sizeof why);
        if (v != SHAPING_OK) {
            delivery_wait_shaping(w, v, until, why);
            return PLACE_BLOCKED;
        }
        log_write(delivery_lg(dl), KLOG_DEBUG, "sched.pick",
                  "id=%s domain=%s ip=%s hop=%s:%d site=%s pool=%s reason=\"reuse idle connection of the chosen IP\"",
                  log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain), addr, h->addr,
                  h->port, log_q(delivery_lg(dl), sched_site_to_text(j->site)), pool);
        delivery_job_take(dl, j, ip, now);
        delivery_job_send(dl, j, idle);
        return PLACE_DONE;
    }
    shaping_dest *sd = delivery_job_shaping(dl, j, addr);
    shaping_verdict v = shaping_may_connect(sd, now, &until, why, sizeof why);
    if (v == SHAPING_OK && dl->nsessions >= DELIVERY_MAX_SESSIONS) return PLACE_LIMIT;
    if (v == SHAPING_OK) v = shaping_take_message(sd, now, &until, why, sizeof why);
    if (v != SHAPING_OK) {
        delivery_wait_shaping(w, v, until, why);
        if (delivery_debug(dl))
            log_write(delivery_lg(dl), KLOG_DEBUG, "sched.skip", "id=%s domain=%s ip=%s site=%s reason=%s",
                      log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain), addr,
                      log_q(delivery_lg(dl), sched_site_to_text(j->site)), log_q(delivery_lg(dl), why));
        return PLACE_BLOCKED;
    }
    log_write(delivery_lg(dl), KLOG_DEBUG, "sched.pick",
              "id=%s domain=%s ip=%s zone=%s hop=%s:%d mx=%s site=%s pool=%s provider=%s reason=\"new connection\"",
              log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain), addr,
              log_q(delivery_lg(dl), pools_ip_zone(ip)), h->addr, h->port, log_q(delivery_lg(dl), h->name),
              log_q(delivery_lg(dl), sched_site_to_text(j->site)), pool, j->provider);
    delivery_job_take(dl, j, ip, now);
    delivery_session_open(dl, j, ip, h, sd);
    return PLACE_DONE;
}

/* Chooses a source IP of pool for the job's current hop with pools_choose and places the
 * job on it (delivery_place), skipping IPs whose address family differs from the hop's or
 * that cannot take the job now; each skipped IP is avoided in the next call, so the choice
 * moves on to the pool's other IPs. At the session limit, IPs with an idle connection may
 * still take the job; else the idle connection closest to its timeout gives way. */
static delivery_pick delivery_pick_ip(delivery *dl, sched_job *j, const char *pool, const sched_hop *h,
                                      int64_t now, pools_choice *ch, delivery_wait *w)
{
    int fam = delivery_addr_family(h->addr);
    size_t nips = pools_count(dl->pools);
    size_t tries = 3 * nips + 2;
    bool blocked = false, saw_failed = false, at_limit = false;
    const char *last = NULL;   /* addresses are the pools' own: stable during this call */
    const char **seen = util_calloc(nips + 1, sizeof *seen);
    size_t nseen = 0;
    delivery_pick res = PICK_FAMILY;
    bool done = false;
    for (size_t k = 0; k < tries && !done; k++) {
        pools_choose(dl->pools, pool, h->name, j->provider, last ? last : j->avoid_ip,
                     j->avoid_zone, now, ch);
        if (ch->verdict != POOLS_CHOSEN) {
            if (blocked) res = PICK_WAIT;
            else if (k == 0) res = PICK_POOLS;
            else res = saw_failed ? PICK_NO_OTHER : PICK_FAMILY;
            done = true;
            break;
        }
        const char *addr = sched_ip_to_text(ch->ip);
        bool fresh = true;
        for (size_t i = 0; i < nseen; i++)
            if (strcmp(seen[i], addr) == 0) fresh = false;
        if (fresh && nseen < nips) seen[nseen++] = addr;
        if (!fresh) {
            /* pools_choose rotates (weighted round-robin): go on until every IP was seen;
             * the IP just avoided coming back means there is no other */
            if (nseen >= nips || (last && strcmp(addr, last) == 0)) break;
        } else if (j->strict_avoid && j->avoid_ip && strcmp(addr, j->avoid_ip) == 0) {
            saw_failed = true;
        } else if (delivery_addr_family(addr) == fam) {
            delivery_place_result r = delivery_place(dl, j, pool, h, ch->ip, now, w);
            if (r == PLACE_DONE) {
                res = PICK_CHOSEN;
                done = true;
                break;
            }
            blocked = true;
            if (r == PLACE_LIMIT) at_limit = true;
        }
        last = addr;
    }
    if (!done) res = blocked ? PICK_WAIT : saw_failed ? PICK_NO_OTHER : PICK_FAMILY;
    if (res == PICK_WAIT && at_limit) {
        /* shaping would allow a connection, the overall session limit does not */
        delivery_wait_slot(w, "session limit of %d connections reached", DELIVERY_MAX_SESSIONS);
        delivery_evict_idle(dl);
    }
    free(seen);
    return res;
}

delivery_pick delivery_connect_from(delivery *dl, sched_job *j, const char *pool, const sched_hop *h,
                                    int64_t now, pools_choice *ch, delivery_wait *w)
{
    delivery_pick r = delivery_pick_ip(dl, j, pool, h, now, ch, w);
    /* an idle connection that had no rate token also makes the job wait */
    if (r != PICK_CHOSEN && w->until && (r == PICK_FAMILY || r == PICK_NO_OTHER)) r = PICK_WAIT;
    return r;
}
