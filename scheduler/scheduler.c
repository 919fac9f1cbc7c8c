/* scheduler.c — the delivery scheduler (see scheduler.h).
 *
 * State, all in memory and rebuilt from the spool at start-up:
 *   - jobs: the non-final recipients of one message for one destination domain. A job is
 *     in exactly one place: the ready FIFO (due now), the timer heap (deferred, ordered by
 *     its earliest next attempt; one ev_timer for the top), or the active list (being
 *     delivered: resolving its next hop, waiting for a connection slot, or in a session).
 *   - sessions: open SMTP client connections, each bound to a source IP of a pool and
 *     connected to one next hop (address, port). An idle session is reused by the next
 *     job for the same hop whose pool contains its IP, while that IP is active and has
 *     warm-up headroom; it QUITs after SCHED_IDLE_MS, or after its transaction when its IP
 *     is draining (released by a reload) or down (circuit open, zone down).
 *   - the dedicated-IP state (pools/pools.h): warm-up, usage, health, zones, lease and
 *     release. The scheduler asks it for a source IP per new session, tells it every
 *     session and outcome, and saves it in the spool (key "pools") at most once a second
 *     when it changed, and at stop.
 *
 * A job's attempt: load the message from the spool, find the next hop (static route, or
 * MX via mta/dns), reuse an idle session or choose a source IP of the configuration set's
 * pool with pools_choose (site = next-hop host name, provider by MX suffix) and open one
 * within the caps (SCHED_MAX_SESSIONS overall, shaping connections per source IP and hop),
 * run the transaction, and settle every recipient: the spool row and its SES event in the
 * current spool batch (the loop commits it).
 *
 * Warm-up caps count recipients: a session is handed at most the chosen IP's headroom
 * minus the recipients already handed to that IP's sessions and not yet settled (the
 * reservation, which keeps concurrent sessions from overshooting a cap before their sends
 * are recorded); a job with more recipients is split. pools_record_send counts the
 * recipients the remote accepted, when the transaction ends.
 *
 * Failures: a bind failure takes the IP down (pools) and the job at once tries another IP
 * of the pool (another zone first); a connect failure, timeout or refused greeting tries
 * one other IP (another zone first) on the same hop, then the next MX address. When the
 * pool has no usable IP (all down, zone down, none configured) the recipients get a
 * DeliveryDelay "IPFailure"; when every usable IP is at its cap, the pool's overflow pool
 * is tried (one hop), else a DeliveryDelay "SendingDeferral". Both retry when the pools
 * say a retry can succeed (a usage window frees, a cool-down ends), at once when an
 * operator or a reload changes the pools, and never bounce before max_delivery_time.
 * Other deferrals use the backoff of scheduler/retry; past max_delivery_time, a bounce.
 *
 * Route hosts that are not IP literals are looked up like a domain (MX, then A/AAAA),
 * as Postfix does for a transport next hop without brackets; a failed lookup of a route
 * host defers (it is a configuration problem, not the recipient's). */
#include "scheduler.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "config.h"
#include "dns.h"
#include "events.h"
#include "kiln.h"
#include "pools.h"
#include "retry.h"
#include "smtp_client.h"
#include "spool.h"
#include "tls.h"
#include "util.h"

#define SCHED_MAX_SESSIONS 100      /* open client connections, all destinations */
#define SCHED_MAX_ACTIVE 200        /* jobs started and not finished (bodies in memory) */
#define SCHED_IDLE_MS 5000          /* an unused connection QUITs after this */
#define SCHED_EVICT_BATCH 16        /* idle connections QUITting at once to make room */
#define SCHED_MAX_HOPS 10           /* MX addresses tried per attempt */
#define SCHED_DEFAULT_CONNECTIONS 10
#define SCHED_DEFAULT_MSGS_PER_CONN 100
#define SCHED_SAVE_INTERVAL 1.0     /* seconds between saves of a changed pools state */
#define SCHED_CAP_RETRY_MS 60000    /* SendingDeferral retry when the pools name no time */
#define SCHED_CONNECT_IP_TRIES 2    /* source IPs tried per hop after connect failures */
#define SCHED_POOLS_KEY "pools"     /* spool kv key of the pools state */

typedef struct sched_rcpt {
    int64_t rowid;
    char *address;
    int attempts;
    int64_t next_attempt_ms;
} sched_rcpt;

typedef struct sched_hop {
    char *name;                 /* MX host name, or the route host */
    char *addr;                 /* IP literal */
    int port;
} sched_hop;

typedef struct sched_session sched_session;

typedef struct sched_job {
    char *msg_id;
    char *domain;               /* lower-case */
    sched_rcpt *rcpts;
    size_t nrcpts, cap;
    int64_t due_ms;
    struct sched_job *next;     /* ready FIFO */
    struct sched_job *aprev, *anext;   /* active list */

    /* while active */
    spool_loaded msg;
    bool loaded;
    char *set_name;
    char *pool;
    bool require_tls;
    int64_t max_delivery_ms;
    bool via_route;
    sched_hop *hops;
    size_t nhops, hop_idx;
    bool waiting;               /* for a connection slot, or for headroom reserved by
                                   sessions in flight */
    char *avoid_ip;             /* a source IP that failed (bind or connect) for this hop */
    char *avoid_zone;           /* its zone: another zone first */
    bool strict_avoid;          /* after a connect failure: never avoid_ip again on this hop */
    size_t ip_tries;            /* source IPs tried for the current hop */
    const char *provider;       /* pools_provider_of the current hop (static string) */
    pools_ip *res_ip;           /* recipients reserved on this IP (handed to a session) */
    int64_t res_n;
    int64_t defer_at_ms;        /* a pools deferral's retry time for this attempt; 0: backoff */
    bool pool_wait;             /* deferred by the pools (set before settling): retried at
                                   once when they change, never bounced before expiry */
    bool no_tls;                /* TLS failed with this hop: retry in clear (tls_policy optional) */
    bool no_reuse;              /* a reused connection turned out dead: open a fresh one */
    retry_failure last_fail;
    char *last_error;
    char *last_src;             /* for events of the final outcome */
    char *last_peer;
    char **addrs;               /* recipients as handed to the SMTP client */
} sched_job;

typedef enum { SESS_CONNECTING, SESS_BUSY, SESS_IDLE, SESS_QUITTING, SESS_DEAD } sess_state;

struct sched_session {
    struct scheduler *s;
    smtp_client *c;
    config *cfg;                /* the config it started under */
    char *src;
    char *peer;
    int port;
    char *peer_name;
    pools_ip *ip;               /* its source IP in the pools state */
    bool started;               /* pools_session_started was called */
    sess_state state;
    sched_job *job;
    int nmsgs;
    bool retire;                /* its IP is draining or down: QUIT after the transaction */
    bool evicted;               /* QUIT to free a connection slot for other work */
    ev_timer idle;
    sched_session *prev, *next;
};

/* Recipients handed to sessions of one IP and not settled yet (IPs with none are not
 * listed, so a forgotten IP leaves no entry behind). */
typedef struct ip_reservation {
    pools_ip *ip;
    int64_t n;
} ip_reservation;

struct scheduler {
    kiln_ctx *ctx;
    dns *dns;
    char *dns_error;            /* why dns is NULL */
    tls_ctx *tls;

    sched_job *ready_head, *ready_tail;
    sched_job **heap;
    size_t nheap, heap_cap;
    sched_job *active_head, *active_tail;
    int nactive;
    sched_session *sessions;
    int nsessions;
    int nevicting;              /* idle sessions QUITting to make room (see evict_idle) */
    int64_t nqueued, ndeferred;   /* recipients */

    pools *pools;
    ip_reservation *res;
    size_t nres;

    ev_timer due_timer;
    ev_timer pump_timer;
    ev_timer save_timer;
    bool stopping;
    void (*stop_done)(void *arg);
    void *stop_arg;
    bool stop_reported;
};

static void job_connect(scheduler *s, sched_job *j);
static void schedule_pump(scheduler *s);
static void session_next(sched_session *ss, bool take_parked);

/* ------------------------------------------------------------------ small helpers */

static klog *lg(const scheduler *s) { return s->ctx->log; }

static int addr_family(const char *a)
{
    unsigned char buf[16];
    if (inet_pton(AF_INET, a, buf) == 1) return AF_INET;
    if (inet_pton(AF_INET6, a, buf) == 1) return AF_INET6;
    return 0;
}

static int conn_cap(const config *cfg)
{
    int n = cfg->shaping_default.connections;
    return n > 0 ? n : SCHED_DEFAULT_CONNECTIONS;
}

static int msgs_per_conn(const config *cfg)
{
    int n = cfg->shaping_default.messages_per_connection;
    return n > 0 ? n : SCHED_DEFAULT_MSGS_PER_CONN;
}

static void set_str(char **dst, const char *src)
{
    char *d = util_strdup(src);
    free(*dst);
    *dst = d;
}

/* ------------------------------------------------------------------ pools: state, headroom */

/* Saves the pools state in the spool batch if it changed. */
static void save_pools(scheduler *s)
{
    if (!pools_dirty(s->pools)) return;
    char *json = pools_state_json(s->pools);
    if (spool_kv_put(s->ctx->spool, SCHED_POOLS_KEY, json) != 0)
        log_write(lg(s), KLOG_ERROR, "pools.save", "error=%s note=\"kept in memory; saved again at the next change\"",
                  log_q(lg(s), spool_errmsg(s->ctx->spool)));
    free(json);
}

static void on_save(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    save_pools(w->data);
}

static ip_reservation *reservation_of(const scheduler *s, const pools_ip *ip)
{
    for (size_t i = 0; i < s->nres; i++)
        if (s->res[i].ip == ip) return &s->res[i];
    return NULL;
}

static void reserve(scheduler *s, pools_ip *ip, int64_t n)
{
    ip_reservation *r = reservation_of(s, ip);
    if (!r) {
        s->res = util_realloc(s->res, (s->nres + 1) * sizeof *s->res);
        r = &s->res[s->nres++];
        r->ip = ip;
        r->n = 0;
    }
    r->n += n;
    if (r->n < 0) util_fatal("scheduler: reservation of %s below zero", pools_ip_address(ip));
    if (r->n == 0) *r = s->res[--s->nres];   /* only IPs with recipients in flight are listed */
}

/* Gives back what job j reserved (no-op if nothing). */
static void job_unreserve(scheduler *s, sched_job *j)
{
    if (!j->res_ip) return;
    reserve(s, j->res_ip, -j->res_n);
    j->res_ip = NULL;
    j->res_n = 0;
}

static bool ip_usable(const scheduler *s, const pools_ip *ip, int64_t now)
{
    pools_ip_info in;
    pools_ip_info_of(s->pools, ip, now, &in);
    return in.state == POOLS_STATE_ACTIVE;
}

/* Recipients ip may still be handed now for provider: the smallest headroom under its
 * caps minus what sessions in flight hold. INT64_MAX when no cap applies. */
static int64_t ip_room(const scheduler *s, const pools_ip *ip, const char *provider, int64_t now)
{
    int64_t room = pools_headroom(s->pools, ip, provider, now);
    if (room < 0) room = INT64_MAX;
    const ip_reservation *r = reservation_of(s, ip);
    if (r && room != INT64_MAX) room -= r->n;
    return room;
}

/* A drained IP is dropped from the pools once no session uses it any more. */
static void maybe_forget(scheduler *s, pools_ip *ip)
{
    pools_ip_info in;
    pools_ip_info_of(s->pools, ip, kiln_now_ms(s->ctx), &in);
    if (in.state != POOLS_STATE_DRAINING) return;
    for (const sched_session *ss = s->sessions; ss; ss = ss->next)
        if (ss->ip == ip) return;
    if (reservation_of(s, ip)) return;   /* a job still holds recipients on it */
    char *addr = util_strdup(pools_ip_address(ip));
    pools_forget(s->pools, addr);
    log_write(lg(s), KLOG_INFO, "pools.forget", "ip=%s reason=\"released and drained\"", addr);
    free(addr);
}

/* ------------------------------------------------------------------ jobs: lists and heap */

static void job_free(sched_job *j)
{
    for (size_t i = 0; i < j->nrcpts; i++) free(j->rcpts[i].address);
    free(j->rcpts);
    free(j->msg_id);
    free(j->domain);
    free(j);
}

static void ready_push(scheduler *s, sched_job *j)
{
    j->next = NULL;
    if (s->ready_tail) s->ready_tail->next = j;
    else s->ready_head = j;
    s->ready_tail = j;
}

static sched_job *ready_pop(scheduler *s)
{
    sched_job *j = s->ready_head;
    if (!j) return NULL;
    s->ready_head = j->next;
    if (!s->ready_head) s->ready_tail = NULL;
    j->next = NULL;
    return j;
}

static void heap_swap(scheduler *s, size_t a, size_t b)
{
    sched_job *t = s->heap[a];
    s->heap[a] = s->heap[b];
    s->heap[b] = t;
}

static void heap_push(scheduler *s, sched_job *j)
{
    if (s->nheap == s->heap_cap) {
        s->heap_cap = s->heap_cap ? s->heap_cap * 2 : 64;
        s->heap = util_realloc(s->heap, s->heap_cap * sizeof *s->heap);
    }
    size_t i = s->nheap++;
    s->heap[i] = j;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (s->heap[p]->due_ms <= s->heap[i]->due_ms) break;
        heap_swap(s, p, i);
        i = p;
    }
}

static sched_job *heap_pop(scheduler *s)
{
    if (!s->nheap) return NULL;
    sched_job *top = s->heap[0];
    s->heap[0] = s->heap[--s->nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->nheap && s->heap[l]->due_ms < s->heap[m]->due_ms) m = l;
        if (r < s->nheap && s->heap[r]->due_ms < s->heap[m]->due_ms) m = r;
        if (m == i) break;
        heap_swap(s, i, m);
        i = m;
    }
    return top;
}

/* One ev_timer for the earliest deferred job. */
static void arm_due_timer(scheduler *s)
{
    ev_timer_stop(s->ctx->loop, &s->due_timer);
    if (!s->nheap || s->stopping) return;
    int64_t wait = s->heap[0]->due_ms - kiln_now_ms(s->ctx);
    if (wait < 0) wait = 0;
    ev_timer_set(&s->due_timer, (double)wait / 1000.0, 0.0);
    ev_timer_start(s->ctx->loop, &s->due_timer);
}

static void on_due(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    scheduler *s = w->data;
    int64_t now = kiln_now_ms(s->ctx);
    while (s->nheap && s->heap[0]->due_ms <= now) {
        sched_job *j = heap_pop(s);
        s->ndeferred -= (int64_t)j->nrcpts;
        s->nqueued += (int64_t)j->nrcpts;
        ready_push(s, j);
    }
    arm_due_timer(s);
    schedule_pump(s);
}

static void deferred_push(scheduler *s, sched_job *j)
{
    s->ndeferred += (int64_t)j->nrcpts;
    heap_push(s, j);
    if (s->heap[0] == j) arm_due_timer(s);
}

/* A job is due when its earliest recipient is. */
static int64_t job_due(const sched_job *j)
{
    int64_t due = INT64_MAX;
    for (size_t i = 0; i < j->nrcpts; i++)
        if (j->rcpts[i].next_attempt_ms < due) due = j->rcpts[i].next_attempt_ms;
    return due;
}

/* A job loaded from the spool: ready now, or in the heap until it is due. */
static void job_place(scheduler *s, sched_job *j)
{
    j->due_ms = job_due(j);
    if (j->due_ms <= kiln_now_ms(s->ctx)) {
        s->nqueued += (int64_t)j->nrcpts;
        ready_push(s, j);
    } else {
        deferred_push(s, j);
    }
}

static void active_link(scheduler *s, sched_job *j)
{
    j->anext = NULL;
    j->aprev = s->active_tail;
    if (s->active_tail) s->active_tail->anext = j;
    else s->active_head = j;
    s->active_tail = j;
    s->nactive++;
}

static void active_unlink(scheduler *s, sched_job *j)
{
    if (j->aprev) j->aprev->anext = j->anext;
    else s->active_head = j->anext;
    if (j->anext) j->anext->aprev = j->aprev;
    else s->active_tail = j->aprev;
    j->aprev = j->anext = NULL;
    s->nactive--;
}

/* Forgets everything an attempt built (message body, hops, choices, reservation). */
static void job_clear_attempt(scheduler *s, sched_job *j)
{
    job_unreserve(s, j);
    if (j->loaded) spool_loaded_free(&j->msg);
    j->loaded = false;
    for (size_t i = 0; i < j->nhops; i++) {
        free(j->hops[i].name);
        free(j->hops[i].addr);
    }
    free(j->hops);
    j->hops = NULL;
    j->nhops = j->hop_idx = 0;
    free(j->set_name);
    free(j->pool);
    free(j->avoid_ip);
    free(j->avoid_zone);
    free(j->last_error);
    free(j->last_src);
    free(j->last_peer);
    free(j->addrs);
    j->set_name = j->pool = j->avoid_ip = j->avoid_zone = j->last_error = j->last_src =
        j->last_peer = NULL;
    j->addrs = NULL;
    j->waiting = j->no_tls = j->no_reuse = j->strict_avoid = false;
    j->ip_tries = 0;
    j->provider = NULL;
    j->defer_at_ms = 0;
}

/* The attempt is over: deferred recipients wait in the heap, a job without any is freed. */
static void job_done(scheduler *s, sched_job *j)
{
    active_unlink(s, j);
    job_clear_attempt(s, j);
    s->nqueued -= (int64_t)j->nrcpts;
    if (j->nrcpts == 0) {
        job_free(j);
    } else {
        j->due_ms = job_due(j);
        deferred_push(s, j);
    }
    schedule_pump(s);
}

/* Not attempted after all (graceful stop): back to the ready list, nothing recorded. */
static void job_release(scheduler *s, sched_job *j)
{
    active_unlink(s, j);
    job_clear_attempt(s, j);
    ready_push(s, j);
}

/* ------------------------------------------------------------------ outcomes */

typedef struct outcome {
    retry_class cls;
    const char *text;           /* reply line or failure description */
    bool remote;                /* text is the recipient server's reply */
} outcome;

static char *diagnostic(const outcome *o)
{
    return o->remote ? util_asprintf("smtp; %s", o->text) : util_strdup(o->text);
}

/* The SES events of one attempt, in the spool batch: one Delivery event for the recipients
 * delivered, one Bounce event per bounce type/subtype, one DeliveryDelay per delay type. */
static void add_events(scheduler *s, const sched_job *j, const outcome *out, const char *src,
                       const char *peer, int64_t now)
{
    kiln_ctx *ctx = s->ctx;
    size_t n = j->nrcpts;
    int64_t expiry = j->msg.created_ms + j->max_delivery_ms;
    char *reporting = events_reporting_mta(ctx->cfg);
    const char *set = j->set_name;
    char **list = util_calloc(n ? n : 1, sizeof *list);
    events_rcpt_status *st = util_calloc(n ? n : 1, sizeof *st);
    char **diags = util_calloc(n ? n : 1, sizeof *diags);
    bool *done = util_calloc(n ? n : 1, sizeof *done);
    size_t nl = 0;
    const char *smtp_response = NULL;
    for (size_t i = 0; i < n; i++) {
        if (out[i].cls.verdict != RETRY_DELIVERED) continue;
        list[nl++] = j->rcpts[i].address;
        if (!smtp_response) smtp_response = out[i].text;
    }
    if (nl) {
        char *ev = events_delivery(j->msg.mail_json, src, now, now - j->msg.created_ms, list, nl,
                                   smtp_response, reporting, peer);
        spool_add_event(ctx->spool, set, ev);
        free(ev);
    }
    for (size_t i = 0; i < n; i++) {
        if (done[i] || out[i].cls.verdict == RETRY_DELIVERED) continue;
        const retry_class *c = &out[i].cls;
        size_t ns = 0;
        for (size_t k = i; k < n; k++) {
            const retry_class *d = &out[k].cls;
            if (done[k] || d->verdict != c->verdict) continue;
            if (c->verdict == RETRY_BOUNCE && (strcmp(d->bounce_type, c->bounce_type) != 0 ||
                                               strcmp(d->bounce_subtype, c->bounce_subtype) != 0))
                continue;
            if (c->verdict == RETRY_DEFER && strcmp(d->delay_type, c->delay_type) != 0) continue;
            done[k] = true;
            diags[ns] = diagnostic(&out[k]);
            st[ns].email = j->rcpts[k].address;
            st[ns].action = c->verdict == RETRY_BOUNCE ? "failed" : NULL;
            st[ns].status = d->status;
            st[ns].diagnostic = diags[ns];
            ns++;
        }
        char *ev = c->verdict == RETRY_BOUNCE
                       ? events_bounce(j->msg.mail_json, src, now, c->bounce_type,
                                       c->bounce_subtype, st, ns, reporting, peer)
                       : events_delay(j->msg.mail_json, src, now, c->delay_type, expiry, st, ns,
                                      reporting, peer);
        spool_add_event(ctx->spool, set, ev);
        free(ev);
        for (size_t k = 0; k < ns; k++) free(diags[k]);
    }
    free(list);
    free(st);
    free(diags);
    free(done);
    free(reporting);
}

/* Records one outcome per recipient (a deferral past max_delivery_time becomes a Transient
 * bounce): spool rows, suppression, events, logs. Final recipients leave the job. */
static void settle(scheduler *s, sched_job *j, outcome *out, const char *src, const char *peer)
{
    kiln_ctx *ctx = s->ctx;
    const config *cfg = ctx->cfg;
    int64_t now = kiln_now_ms(ctx);
    size_t n = j->nrcpts;

    /* decide */
    int64_t *next = util_calloc(n ? n : 1, sizeof *next);
    for (size_t i = 0; i < n; i++) {
        sched_rcpt *r = &j->rcpts[i];
        r->attempts++;
        if (out[i].cls.verdict != RETRY_DEFER) continue;
        if (j->pool_wait) {
            /* a pools deferral: at the time the pools name (else the backoff), but never
             * past the expiry, so the recipient is not bounced before max_delivery_time */
            int64_t expiry = j->msg.created_ms + j->max_delivery_ms;
            if (j->defer_at_ms > 0) next[i] = j->defer_at_ms > now ? j->defer_at_ms : now + 1;
            else next[i] = now + retry_next_delay_ms(cfg, r->attempts);
            if (next[i] > expiry) next[i] = expiry;
            if (next[i] <= now) retry_classify_expired(&out[i].cls);
        } else {
            next[i] = now + retry_next_delay_ms(cfg, r->attempts);
            if (retry_expired(j->msg.created_ms, next[i], j->max_delivery_ms))
                retry_classify_expired(&out[i].cls);
        }
    }

    /* spool rows and logs */
    for (size_t i = 0; i < n; i++) {
        sched_rcpt *r = &j->rcpts[i];
        const retry_class *c = &out[i].cls;
        switch (c->verdict) {
        case RETRY_DELIVERED:
            spool_update_rcpt(ctx->spool, r->rowid, SPOOL_RCPT_DELIVERED, r->attempts, 0, out[i].text);
            log_write(lg(s), KLOG_INFO, "delivery.ok", "id=%s rcpt=%s ip=%s hop=%s reply=%s",
                      log_q(lg(s), j->msg_id), log_q(lg(s), r->address), src ? src : "-",
                      peer ? peer : "-", log_q(lg(s), out[i].text));
            break;
        case RETRY_BOUNCE:
            spool_update_rcpt(ctx->spool, r->rowid, SPOOL_RCPT_BOUNCED, r->attempts, 0, out[i].text);
            if (c->suppress && (cfg->suppression_reasons & CONFIG_SUPPRESS_BOUNCE))
                spool_suppression_put(ctx->spool, r->address, "BOUNCE", now);
            log_write(lg(s), KLOG_INFO, "delivery.bounce",
                      "id=%s rcpt=%s ip=%s hop=%s type=%s subtype=%s status=%s attempts=%d reply=%s",
                      log_q(lg(s), j->msg_id), log_q(lg(s), r->address), src ? src : "-",
                      peer ? peer : "-", c->bounce_type, c->bounce_subtype, c->status, r->attempts,
                      log_q(lg(s), out[i].text));
            break;
        case RETRY_DEFER: {
            r->next_attempt_ms = next[i];
            spool_update_rcpt(ctx->spool, r->rowid, SPOOL_RCPT_DEFERRED, r->attempts, next[i],
                              out[i].text);
            char at[32];
            util_iso8601(next[i], at);
            log_write(lg(s), KLOG_INFO, "delivery.defer",
                      "id=%s rcpt=%s ip=%s hop=%s delay_type=%s status=%s attempts=%d next=%s reply=%s",
                      log_q(lg(s), j->msg_id), log_q(lg(s), r->address), src ? src : "-",
                      peer ? peer : "-", c->delay_type, c->status, r->attempts, at,
                      log_q(lg(s), out[i].text));
            break;
        }
        }
    }

    add_events(s, j, out, src, peer, now);

    /* final recipients leave the job */
    size_t keep = 0;
    for (size_t i = 0; i < n; i++) {
        if (out[i].cls.verdict == RETRY_DEFER) {
            j->rcpts[keep++] = j->rcpts[i];
        } else {
            free(j->rcpts[i].address);
            s->nqueued--;
        }
    }
    j->nrcpts = keep;
    free(next);
}

/* Every recipient of the job gets the same local outcome; the attempt ends. */
static void job_fail_all(scheduler *s, sched_job *j, retry_failure f, const char *text)
{
    outcome *out = util_calloc(j->nrcpts ? j->nrcpts : 1, sizeof *out);
    for (size_t i = 0; i < j->nrcpts; i++) {
        retry_classify_failure(f, &out[i].cls);
        out[i].text = text;
    }
    settle(s, j, out, j->last_src, j->last_peer);
    free(out);
    job_done(s, j);
}

/* A failure of this hop: remember it and try the next one. */
static void job_next_hop(scheduler *s, sched_job *j, retry_failure f, const char *text)
{
    j->last_fail = f;
    set_str(&j->last_error, text);
    j->hop_idx++;
    j->ip_tries = 0;
    j->no_tls = false;
    j->no_reuse = false;
    j->strict_avoid = false;
    free(j->avoid_ip);
    free(j->avoid_zone);
    j->avoid_ip = j->avoid_zone = NULL;
    job_connect(s, j);
}

/* The pools cannot give the job an IP now: every recipient is deferred with delay_type
 * ("IPFailure" or "SendingDeferral") until at_ms (0: the retry backoff), and the job is
 * tried again at once if an operator or a reload changes the pools. */
static void job_defer_pools(scheduler *s, sched_job *j, const char *delay_type, const char *text,
                            int64_t at_ms)
{
    outcome *out = util_calloc(j->nrcpts ? j->nrcpts : 1, sizeof *out);
    for (size_t i = 0; i < j->nrcpts; i++) {
        if (strcmp(delay_type, "IPFailure") == 0) {
            retry_classify_failure(RETRY_FAIL_IP, &out[i].cls);
        } else {
            out[i].cls.verdict = RETRY_DEFER;
            out[i].cls.delay_type = delay_type;
            snprintf(out[i].cls.status, sizeof out[i].cls.status, "4.4.5");
        }
        out[i].text = text;
    }
    j->defer_at_ms = at_ms;
    j->pool_wait = true;
    settle(s, j, out, j->last_src, j->last_peer);
    free(out);
    job_done(s, j);
}

/* ------------------------------------------------------------------ sessions */

static void session_unlink(scheduler *s, sched_session *ss)
{
    if (ss->evicted) s->nevicting--;
    if (ss->prev) ss->prev->next = ss->next;
    else s->sessions = ss->next;
    if (ss->next) ss->next->prev = ss->prev;
    ss->prev = ss->next = NULL;
    s->nsessions--;
}

/* Frees an unlinked session; its IP is told the session ended, and dropped from the pools
 * if it was released and this was its last session. */
static void session_free(sched_session *ss)
{
    scheduler *s = ss->s;
    ev_timer_stop(s->ctx->loop, &ss->idle);
    if (ss->c) smtp_client_free(ss->c);
    pools_ip *ip = ss->ip;
    if (ss->started) pools_session_ended(s->pools, ip);
    config_unref(ss->cfg);
    free(ss->src);
    free(ss->peer);
    free(ss->peer_name);
    free(ss);
    if (ip) maybe_forget(s, ip);
}

static void check_stop_done(scheduler *s)
{
    if (s->stopping && !s->stop_reported && s->nsessions == 0) {
        s->stop_reported = true;
        save_pools(s);
        log_write(lg(s), KLOG_INFO, "scheduler.stop", "result=done");
        if (s->stop_done) s->stop_done(s->stop_arg);
    }
}

static void session_quit(sched_session *ss)
{
    ev_timer_stop(ss->s->ctx->loop, &ss->idle);
    ss->state = SESS_QUITTING;
    smtp_client_quit(ss->c);
}

static void on_idle_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sched_session *ss = w->data;
    log_write(lg(ss->s), KLOG_DEBUG, "sched.session", "session=%s action=quit reason=idle",
              log_q(lg(ss->s), smtp_client_to_text(ss->c)));
    session_quit(ss);
}

/* At the session limit, connections kept idle for reuse give way to work that needs a new
 * connection (as Postfix's connection cache does): the idle session closest to its idle
 * timeout QUITs, and the waiting job is pumped when it has closed. At most
 * SCHED_EVICT_BATCH are QUITting for that at once, so one burst does not empty the cache. */
static void evict_idle(scheduler *s)
{
    if (s->nevicting >= SCHED_EVICT_BATCH) return;
    sched_session *victim = NULL;
    double least = 0;
    for (sched_session *ss = s->sessions; ss; ss = ss->next) {
        if (ss->state != SESS_IDLE) continue;
        double left = ev_timer_remaining(s->ctx->loop, &ss->idle);
        if (!victim || left < least) {
            victim = ss;
            least = left;
        }
    }
    if (!victim) return;
    victim->evicted = true;
    s->nevicting++;
    log_write(lg(s), KLOG_DEBUG, "sched.session", "session=%s action=quit reason=%s",
              log_q(lg(s), smtp_client_to_text(victim->c)),
              log_q(lg(s), "session limit reached: idle connection gives way to other work"));
    session_quit(victim);
}

/* Sessions whose IP is no longer active (released, circuit open, zone down) take no new
 * transaction: idle ones QUIT now, busy ones after their transaction. */
static void retire_unusable_sessions(scheduler *s)
{
    int64_t now = kiln_now_ms(s->ctx);
    for (sched_session *ss = s->sessions, *nx; ss; ss = nx) {
        nx = ss->next;
        if (ss->retire || ss->state == SESS_QUITTING || ss->state == SESS_DEAD) continue;
        if (ip_usable(s, ss->ip, now)) continue;
        ss->retire = true;
        log_write(lg(s), KLOG_INFO, "sched.session", "session=%s action=retire state=%s reason=%s",
                  log_q(lg(s), smtp_client_to_text(ss->c)),
                  ss->state == SESS_IDLE ? "idle" : ss->state == SESS_BUSY ? "busy" : "connecting",
                  log_q(lg(s), "source IP draining or down: no new transaction"));
        if (ss->state == SESS_IDLE) session_quit(ss);
    }
}

static int count_sessions(const scheduler *s, const char *src, const sched_hop *h)
{
    int n = 0;
    for (const sched_session *ss = s->sessions; ss; ss = ss->next)
        if (ss->state != SESS_DEAD && ss->port == h->port && strcmp(ss->src, src) == 0 &&
            strcmp(ss->peer, h->addr) == 0)
            n++;
    return n;
}

/* True if the session's IP belongs to pool now. */
static bool session_in_pool(const scheduler *s, const sched_session *ss, const char *pool,
                            int64_t now)
{
    pools_ip_info in;
    pools_ip_info_of(s->pools, ss->ip, now, &in);
    return in.pool && strcmp(in.pool, pool) == 0;
}

/* The session can take job j (for hop h, from pool): same hop, IP of the pool, active and
 * with room for at least one recipient, TLS when required. */
static bool session_fits(const scheduler *s, const sched_session *ss, const sched_job *j,
                         const char *pool, const sched_hop *h, int64_t now)
{
    return ss->port == h->port && strcmp(ss->peer, h->addr) == 0 && !ss->retire &&
           (!j->require_tls || smtp_client_tls_active(ss->c)) &&
           session_in_pool(s, ss, pool, now) && ip_usable(s, ss->ip, now) &&
           ip_room(s, ss->ip, j->provider, now) >= 1;
}

static sched_session *find_idle(scheduler *s, const sched_job *j, const char *pool,
                                const sched_hop *h, int64_t now)
{
    for (sched_session *ss = s->sessions; ss; ss = ss->next)
        if (ss->state == SESS_IDLE && session_fits(s, ss, j, pool, h, now)) return ss;
    return NULL;
}

/* Reserves up to the IP's room for job j; a job with more recipients is split and the
 * rest goes back to the ready list (a job of its own). */
static void job_take(scheduler *s, sched_job *j, pools_ip *ip, int64_t now)
{
    job_unreserve(s, j);
    int64_t room = ip_room(s, ip, j->provider, now);
    if (room < 1) util_fatal("scheduler: job %s handed to %s without room", j->msg_id,
                             pools_ip_address(ip));
    if ((int64_t)j->nrcpts > room) {
        sched_job *rest = util_calloc(1, sizeof *rest);
        rest->msg_id = util_strdup(j->msg_id);
        rest->domain = util_strdup(j->domain);
        rest->nrcpts = rest->cap = j->nrcpts - (size_t)room;
        rest->rcpts = util_calloc(rest->cap, sizeof *rest->rcpts);
        memcpy(rest->rcpts, j->rcpts + room, rest->nrcpts * sizeof *rest->rcpts);
        j->nrcpts = (size_t)room;
        log_write(lg(s), KLOG_DEBUG, "sched.pick",
                  "id=%s domain=%s ip=%s split=%zu+%zu reason=\"warm-up headroom of the IP\"",
                  log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), pools_ip_address(ip),
                  j->nrcpts, rest->nrcpts);
        ready_push(s, rest);   /* still counted in nqueued */
    }
    j->res_ip = ip;
    j->res_n = (int64_t)j->nrcpts;
    reserve(s, ip, j->res_n);
}

static void on_client(void *arg, smtp_client *c, const smtp_client_event *ev);

static sched_session *session_open(scheduler *s, sched_job *j, pools_ip *ip, const sched_hop *h)
{
    const config *cfg = s->ctx->cfg;
    sched_session *ss = util_calloc(1, sizeof *ss);
    ss->s = s;
    ss->cfg = config_ref(s->ctx->cfg);
    ss->ip = ip;
    ss->src = util_strdup(pools_ip_address(ip));
    ss->peer = util_strdup(h->addr);
    ss->port = h->port;
    ss->peer_name = util_strdup(h->name);
    ss->state = SESS_CONNECTING;
    ss->job = j;
    ev_timer_init(&ss->idle, on_idle_timeout, (double)SCHED_IDLE_MS / 1000.0, 0.0);
    ss->idle.data = ss;
    ss->next = s->sessions;
    if (s->sessions) s->sessions->prev = ss;
    s->sessions = ss;
    s->nsessions++;
    pools_session_started(s->pools, ip);
    ss->started = true;
    smtp_client_opts o;
    memset(&o, 0, sizeof o);
    o.source_ip = ss->src;
    o.peer_ip = h->addr;
    o.port = h->port;
    o.peer_name = h->name;
    o.ehlo_name = pools_ip_ehlo(ip) ? pools_ip_ehlo(ip) : cfg->hostname;
    o.tls = j->no_tls ? NULL : s->tls;
    smtp_client_default_timeouts(&o.timeouts, cfg->connect_timeout_ms);
    ss->c = smtp_client_new(s->ctx->loop, lg(s), &o, on_client, ss);
    return ss;
}

/* Hands the job's message (its reserved recipients) to a ready session. */
static void job_send(scheduler *s, sched_job *j, sched_session *ss)
{
    ev_timer_stop(s->ctx->loop, &ss->idle);
    set_str(&j->last_src, ss->src);
    set_str(&j->last_peer, ss->peer);
    free(j->addrs);
    j->addrs = util_calloc(j->nrcpts ? j->nrcpts : 1, sizeof *j->addrs);
    for (size_t i = 0; i < j->nrcpts; i++) j->addrs[i] = j->rcpts[i].address;
    smtp_client_msg m = {
        .id = j->msg_id,
        .mail_from = j->msg.mail_from,
        .rcpts = j->addrs,
        .nrcpts = j->nrcpts,
        .data = j->msg.data,
        .data_len = j->msg.data_len,
        .require_tls = j->require_tls,
    };
    smtp_client_status why = SMTP_CLIENT_OK;
    char *err = NULL;
    if (smtp_client_send(ss->c, &m, &why, &err) == 0) {
        ss->state = SESS_BUSY;
        ss->job = j;
        ss->nmsgs++;
        return;
    }
    /* refused before anything was sent: the session stays usable for others */
    job_unreserve(s, j);
    ss->job = NULL;
    ss->state = SESS_IDLE;
    log_write(lg(s), KLOG_DEBUG, "sched.pick", "id=%s domain=%s session=%s result=refused reason=%s",
              log_q(lg(s), j->msg_id), log_q(lg(s), j->domain),
              log_q(lg(s), smtp_client_to_text(ss->c)), log_q(lg(s), err));
    if (why == SMTP_CLIENT_FAIL_TOO_BIG) {
        job_fail_all(s, j, RETRY_FAIL_TOO_BIG, err);
    } else {
        /* TLS required and this hop has none: maybe the next MX does */
        job_next_hop(s, j, RETRY_FAIL_TLS_REQUIRED, err);
    }
    free(err);
    session_next(ss, false);
}

/* What choosing an IP for a hop came to. */
typedef enum {
    PICK_CHOSEN,      /* *ip: open a session from it */
    PICK_WAIT,        /* usable IPs exist but their connections or headroom are taken by
                         sessions in flight: park the job */
    PICK_FAMILY,      /* no IP of the pool has the hop's address family */
    PICK_NO_OTHER,    /* after a connect failure: no other IP than the one that failed */
    PICK_POOLS,       /* the pools' verdict (choice): no IP, all down, all at cap */
} pick_result;

/* Chooses a source IP of pool for the job's current hop with pools_choose, skipping IPs
 * whose address family differs from the hop's, whose connections to the hop are at the
 * shaping cap, or whose headroom is all reserved (each skipped IP is avoided in the next
 * call, so the choice moves on to the others). */
static pick_result pick_ip(scheduler *s, sched_job *j, const char *pool, const sched_hop *h,
                           int64_t now, pools_choice *ch)
{
    int fam = addr_family(h->addr);
    int cap = conn_cap(s->ctx->cfg);
    size_t tries = 2 * pools_count(s->pools) + 2;
    bool blocked = false, saw_failed = false;
    char *last = NULL;
    for (size_t k = 0; k < tries; k++) {
        pools_choose(s->pools, pool, h->name, j->provider, last ? last : j->avoid_ip,
                     j->avoid_zone, now, ch);
        if (ch->verdict != POOLS_CHOSEN) {
            free(last);
            if (blocked) return PICK_WAIT;
            if (k == 0) return PICK_POOLS;
            return saw_failed ? PICK_NO_OTHER : PICK_FAMILY;
        }
        const char *addr = pools_ip_address(ch->ip);
        if (j->strict_avoid && j->avoid_ip && strcmp(addr, j->avoid_ip) == 0) {
            saw_failed = true;
        } else if (addr_family(addr) == fam) {
            if (ip_room(s, ch->ip, j->provider, now) >= 1 && count_sessions(s, addr, h) < cap) {
                free(last);
                return PICK_CHOSEN;
            }
            blocked = true;
        }
        set_str(&last, addr);
    }
    free(last);
    if (blocked) return PICK_WAIT;
    return saw_failed ? PICK_NO_OTHER : PICK_FAMILY;
}

/* Finds or opens a connection for the job's current hop from an IP of pool: an idle
 * session, else a new one from the IP the pools choose. Returns PICK_CHOSEN when the job
 * went to a session. */
static pick_result connect_from(scheduler *s, sched_job *j, const char *pool, const sched_hop *h,
                                int64_t now, pools_choice *ch)
{
    if (!j->no_reuse) {
        sched_session *idle = find_idle(s, j, pool, h, now);
        if (idle) {
            log_write(lg(s), KLOG_DEBUG, "sched.pick",
                      "id=%s domain=%s ip=%s hop=%s:%d pool=%s reason=\"reuse idle connection\"",
                      log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), idle->src, h->addr,
                      h->port, pool);
            job_take(s, j, idle->ip, now);
            job_send(s, j, idle);
            return PICK_CHOSEN;
        }
    }
    pick_result r = pick_ip(s, j, pool, h, now, ch);
    if (r != PICK_CHOSEN) return r;
    if (s->nsessions >= SCHED_MAX_SESSIONS) {
        evict_idle(s);
        return PICK_WAIT;
    }
    log_write(lg(s), KLOG_DEBUG, "sched.pick",
              "id=%s domain=%s ip=%s zone=%s hop=%s:%d mx=%s pool=%s provider=%s reason=\"new connection\"",
              log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), pools_ip_address(ch->ip),
              log_q(lg(s), pools_ip_zone(ch->ip)), h->addr, h->port, log_q(lg(s), h->name), pool,
              j->provider);
    job_take(s, j, ch->ip, now);
    session_open(s, j, ch->ip, h);
    return PICK_CHOSEN;
}

/* Finds or opens a connection for the job's current hop, parks it until one frees up, or
 * defers it when the pools have no IP for it. */
static void job_connect(scheduler *s, sched_job *j)
{
    j->waiting = false;
    if (s->stopping) {
        job_release(s, j);
        return;
    }
    int64_t now = kiln_now_ms(s->ctx);
    while (j->hop_idx < j->nhops) {
        const sched_hop *h = &j->hops[j->hop_idx];
        j->provider = pools_provider_of(h->name);
        pools_choice ch;
        memset(&ch, 0, sizeof ch);
        pick_result r = connect_from(s, j, j->pool, h, now, &ch);
        if (r == PICK_POOLS && ch.verdict == POOLS_ALL_AT_CAP) {
            /* every usable IP at its cap: the overflow pool, one hop only */
            const config_pool *cp = config_find_pool(s->ctx->cfg, j->pool);
            if (cp && cp->overflow && strcmp(cp->overflow, j->pool) != 0 &&
                config_find_pool(s->ctx->cfg, cp->overflow)) {
                pools_choice och;
                memset(&och, 0, sizeof och);
                pick_result o = connect_from(s, j, cp->overflow, h, now, &och);
                if (o == PICK_CHOSEN) {
                    log_write(lg(s), KLOG_DEBUG, "sched.pick",
                              "id=%s domain=%s pool=%s overflow=%s reason=%s",
                              log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), j->pool,
                              cp->overflow, log_q(lg(s), ch.reason));
                    return;
                }
                if (o == PICK_WAIT) r = PICK_WAIT;
                else if (o == PICK_POOLS && och.retry_at_ms > 0 &&
                         (ch.retry_at_ms <= 0 || och.retry_at_ms < ch.retry_at_ms))
                    ch.retry_at_ms = och.retry_at_ms;
            }
        }
        switch (r) {
        case PICK_CHOSEN:
            return;
        case PICK_WAIT:
            j->waiting = true;
            log_write(lg(s), KLOG_DEBUG, "sched.pick",
                      "id=%s domain=%s hop=%s:%d result=wait reason=\"%s\"",
                      log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), h->addr, h->port,
                      s->nsessions >= SCHED_MAX_SESSIONS
                          ? "session limit reached"
                          : "connections or headroom of the pool's IPs taken by sessions in flight");
            return;
        case PICK_FAMILY: {
            char *t = util_asprintf("no IP of pool %s can reach %s (address family)", j->pool,
                                    h->addr);
            j->hop_idx++;
            j->ip_tries = 0;
            j->strict_avoid = false;
            j->last_fail = RETRY_FAIL_CONNECT;
            set_str(&j->last_error, t);
            free(t);
            continue;
        }
        case PICK_NO_OTHER:
            /* the IP that just failed is the only one: the next hop */
            j->hop_idx++;
            j->ip_tries = 0;
            j->strict_avoid = false;
            continue;
        case PICK_POOLS:
            break;
        }
        /* the pools have no IP for this job now */
        const char *type = ch.verdict == POOLS_ALL_AT_CAP ? "SendingDeferral" : "IPFailure";
        int64_t at = ch.retry_at_ms;
        if (ch.verdict == POOLS_ALL_AT_CAP && at <= now) at = now + SCHED_CAP_RETRY_MS;
        if (ch.verdict != POOLS_ALL_AT_CAP && at <= now) at = 0;   /* the retry backoff */
        char *t = util_asprintf("%s", ch.reason[0] ? ch.reason : "no usable dedicated IP");
        log_write(lg(s), KLOG_INFO, "sched.pick", "id=%s domain=%s pool=%s result=defer delay_type=%s reason=%s",
                  log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), j->pool, type, log_q(lg(s), t));
        job_defer_pools(s, j, type, t, at);
        free(t);
        return;
    }
    /* every hop failed */
    job_fail_all(s, j, j->last_error ? j->last_fail : RETRY_FAIL_CONNECT,
                 j->last_error ? j->last_error : "no next hop");
}

/* A session can take more work: a parked job for its hop (take_parked), else it idles
 * (parked jobs find it through the pump) or QUITs. */
static void session_next(sched_session *ss, bool take_parked)
{
    scheduler *s = ss->s;
    if (ss->state != SESS_IDLE || ss->job) return;
    int64_t now = kiln_now_ms(s->ctx);
    if (!ss->retire && !ip_usable(s, ss->ip, now)) ss->retire = true;
    if (s->stopping || ss->retire || ss->nmsgs >= msgs_per_conn(s->ctx->cfg)) {
        session_quit(ss);
        return;
    }
    sched_hop h = {.name = ss->peer_name, .addr = ss->peer, .port = ss->port};
    for (sched_job *j = take_parked ? s->active_head : NULL; j; j = j->anext) {
        if (!j->waiting || j->hop_idx >= j->nhops) continue;
        const sched_hop *jh = &j->hops[j->hop_idx];
        if (jh->port != h.port || strcmp(jh->addr, h.addr) != 0) continue;
        if (j->no_reuse) continue;
        if (!session_fits(s, ss, j, j->pool, &h, now)) continue;
        j->waiting = false;
        log_write(lg(s), KLOG_DEBUG, "sched.pick",
                  "id=%s domain=%s ip=%s hop=%s:%d reason=\"reuse connection after its transaction\"",
                  log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), ss->src, h.addr, h.port);
        job_take(s, j, ss->ip, now);
        job_send(s, j, ss);
        return;
    }
    ev_timer_stop(s->ctx->loop, &ss->idle);
    ev_timer_set(&ss->idle, (double)SCHED_IDLE_MS / 1000.0, 0.0);
    ev_timer_start(s->ctx->loop, &ss->idle);
    schedule_pump(s);
}

static retry_failure failure_of(smtp_client_status st)
{
    switch (st) {
    case SMTP_CLIENT_FAIL_BIND: return RETRY_FAIL_IP;
    case SMTP_CLIENT_FAIL_TLS: return RETRY_FAIL_TLS;
    case SMTP_CLIENT_FAIL_TLS_REQUIRED: return RETRY_FAIL_TLS_REQUIRED;
    case SMTP_CLIENT_FAIL_TOO_BIG: return RETRY_FAIL_TOO_BIG;
    default: return RETRY_FAIL_CONNECT;
    }
}

/* A reply that says the site throttles this IP: 421, or a 4xx about rate or reputation. */
static bool reply_throttles(int code, const char *enhanced, const char *text)
{
    if (code == 421) return true;
    if (code < 400 || code >= 500) return false;
    retry_class c;
    retry_classify_reply(code, enhanced, text, &c);
    if (c.delay_type && strcmp(c.delay_type, "SpamDetected") == 0) return true;
    return text && (strcasestr(text, "rate") || strcasestr(text, "too many") ||
                    strcasestr(text, "throttl"));
}

/* A transaction ended with per-recipient results. */
static void on_done(scheduler *s, sched_session *ss, sched_job *j, const smtp_client_event *ev)
{
    job_unreserve(s, j);
    if (ev->nothing_done) {
        const char *why = ev->nrcpts ? ev->rcpts[0].reply.line : "connection failed";
        if (ss->nmsgs > 1 && !j->no_reuse) {
            /* a reused connection died before the transaction began: once more, fresh */
            log_write(lg(s), KLOG_DEBUG, "sched.pick",
                      "id=%s domain=%s result=retry reason=\"reused connection failed: %s\"",
                      log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), why);
            j->no_reuse = true;
            job_connect(s, j);
        } else {
            job_next_hop(s, j, RETRY_FAIL_CONNECT, why);
        }
        return;
    }
    int64_t now = kiln_now_ms(s->ctx);
    outcome *out = util_calloc(j->nrcpts ? j->nrcpts : 1, sizeof *out);
    unsigned accepted = 0;
    bool throttled = false;
    for (size_t i = 0; i < j->nrcpts && i < ev->nrcpts; i++) {
        const smtp_client_rcpt_result *r = &ev->rcpts[i];
        out[i].text = r->reply.line;
        if (r->status == SMTP_CLIENT_OK) {
            retry_classify_reply(r->reply.code, r->reply.enhanced, r->reply.text, &out[i].cls);
            out[i].remote = true;
            if (out[i].cls.verdict == RETRY_DELIVERED) accepted++;
            if (reply_throttles(r->reply.code, r->reply.enhanced, r->reply.text)) throttled = true;
        } else {
            retry_classify_failure(failure_of(r->status), &out[i].cls);
        }
    }
    if (accepted) pools_record_send(s->pools, ss->ip, j->provider, accepted, now);
    pools_record_result(s->pools, ss->ip, ss->peer_name, j->provider,
                        throttled ? POOLS_RESULT_THROTTLED : POOLS_RESULT_OK, accepted, now);
    if (throttled)
        log_write(lg(s), KLOG_INFO, "pools.throttled", "ip=%s site=%s provider=%s id=%s",
                  ss->src, log_q(lg(s), ss->peer_name), j->provider, log_q(lg(s), j->msg_id));
    settle(s, j, out, ss->src, ss->peer);
    free(out);
    job_done(s, j);
}

/* After a failure from the session's IP: prefer another IP and another zone. */
static void job_avoid(sched_job *j, const sched_session *ss)
{
    set_str(&j->avoid_ip, ss->src);
    set_str(&j->avoid_zone, pools_ip_zone(ss->ip));
}

/* The session ended; a job still attached never got its transaction started. */
static void on_closed(scheduler *s, sched_session *ss, const smtp_client_event *ev)
{
    sched_job *j = ss->job;
    int64_t now = kiln_now_ms(s->ctx);
    session_unlink(s, ss);
    ss->job = NULL;
    if (j) {
        job_unreserve(s, j);
        const char *err = ev->error ? ev->error : "connection closed";
        set_str(&j->last_src, ss->src);
        set_str(&j->last_peer, ss->peer);
        log_write(lg(s), KLOG_DEBUG, "sched.pick", "id=%s domain=%s session=%s failure=%s error=%s",
                  log_q(lg(s), j->msg_id), log_q(lg(s), j->domain),
                  log_q(lg(s), smtp_client_to_text(ss->c)), smtp_client_status_name(ev->status),
                  log_q(lg(s), err));
        bool throttled = ev->status == SMTP_CLIENT_FAIL_REJECTED && ev->reply &&
                         reply_throttles(ev->reply->code, ev->reply->enhanced, ev->reply->text);
        if (ev->status == SMTP_CLIENT_FAIL_BIND) {
            pools_record_result(s->pools, ss->ip, ss->peer_name, j->provider,
                                POOLS_RESULT_BIND_FAILED, 0, now);
            log_write(lg(s), KLOG_WARNING, "pools.ip_failed", "ip=%s zone=%s result=bind_failed error=%s",
                      ss->src, log_q(lg(s), pools_ip_zone(ss->ip)), log_q(lg(s), err));
        } else if (ev->status == SMTP_CLIENT_FAIL_CONNECT || ev->status == SMTP_CLIENT_FAIL_IO ||
                   (ev->status == SMTP_CLIENT_FAIL_REJECTED && !throttled)) {
            pools_record_result(s->pools, ss->ip, ss->peer_name, j->provider,
                                POOLS_RESULT_CONNECT_FAILED, 0, now);
        } else if (throttled) {
            pools_record_result(s->pools, ss->ip, ss->peer_name, j->provider,
                                POOLS_RESULT_THROTTLED, 0, now);
        }
        if (s->stopping) {
            job_release(s, j);
        } else if (ev->status == SMTP_CLIENT_FAIL_BIND) {
            /* the source IP is unusable (now down): another IP of the pool, same hop */
            job_avoid(j, ss);
            j->last_fail = RETRY_FAIL_IP;
            set_str(&j->last_error, err);
            if (++j->ip_tries <= pools_count(s->pools)) job_connect(s, j);
            else job_fail_all(s, j, RETRY_FAIL_IP, err);
        } else if (ev->status == SMTP_CLIENT_FAIL_TLS && !j->require_tls && !j->no_tls) {
            /* opportunistic TLS failed: the same hop once more, in clear */
            j->no_tls = true;
            j->no_reuse = true;
            j->last_fail = RETRY_FAIL_TLS;
            set_str(&j->last_error, err);
            job_connect(s, j);
        } else if (!throttled && ev->status != SMTP_CLIENT_FAIL_TLS &&
                   ++j->ip_tries < SCHED_CONNECT_IP_TRIES) {
            /* maybe this IP cannot reach the site: once more from another IP (another
             * zone first), then the next hop */
            job_avoid(j, ss);
            j->strict_avoid = true;
            j->last_fail = failure_of(ev->status);
            set_str(&j->last_error, err);
            job_connect(s, j);
        } else {
            job_next_hop(s, j, failure_of(ev->status), err);
        }
    }
    session_free(ss);
    schedule_pump(s);
    check_stop_done(s);
}

static void on_client(void *arg, smtp_client *c, const smtp_client_event *ev)
{
    (void)c;
    sched_session *ss = arg;
    scheduler *s = ss->s;
    switch (ev->type) {
    case SMTP_CLIENT_EV_READY:
        ss->state = SESS_IDLE;
        if (ss->job) {
            sched_job *j = ss->job;
            ss->job = NULL;
            if (!ip_usable(s, ss->ip, kiln_now_ms(s->ctx))) {
                /* its IP went down or was released while connecting: no transaction here */
                ss->retire = true;
                job_unreserve(s, j);
                session_quit(ss);
                job_connect(s, j);
                break;
            }
            job_send(s, j, ss);
        } else {
            session_next(ss, true);
        }
        break;
    case SMTP_CLIENT_EV_DONE: {
        sched_job *j = ss->job;
        ss->job = NULL;
        ss->state = ev->usable ? SESS_IDLE : SESS_DEAD;
        if (j) on_done(s, ss, j, ev);
        if (ss->state == SESS_IDLE) session_next(ss, true);
        break;
    }
    case SMTP_CLIENT_EV_CLOSED:
        on_closed(s, ss, ev);
        break;
    }
}

/* ------------------------------------------------------------------ starting a job */

static void hops_add(sched_job *j, const char *name, const char *addr, int port)
{
    if (j->nhops >= SCHED_MAX_HOPS) return;
    j->hops = util_realloc(j->hops, (j->nhops + 1) * sizeof *j->hops);
    j->hops[j->nhops].name = util_strdup(name);
    j->hops[j->nhops].addr = util_strdup(addr);
    j->hops[j->nhops].port = port;
    j->nhops++;
}

static int job_port(const scheduler *s, const sched_job *j)
{
    const config_route *rt = config_find_route(s->ctx->cfg, j->domain);
    return rt ? rt->port : s->ctx->cfg->remote_port;
}

typedef struct mx_wait {
    scheduler *s;
    sched_job *j;
} mx_wait;

static void on_resolved(void *arg, const dns_mx_result *res)
{
    mx_wait *w = arg;
    scheduler *s = w->s;
    sched_job *j = w->j;
    free(w);
    if (s->stopping) {
        job_release(s, j);
        check_stop_done(s);
        return;
    }
    if (res->status == DNS_OK) {
        int port = job_port(s, j);
        for (size_t h = 0; h < res->nhosts; h++)
            for (size_t a = 0; a < res->hosts[h].naddrs; a++)
                hops_add(j, res->hosts[h].name, res->hosts[h].addrs[a], port);
        log_write(lg(s), KLOG_DEBUG, "sched.pick", "id=%s domain=%s hops=%zu first=%s implicit=%d",
                  log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), j->nhops,
                  j->nhops ? j->hops[0].addr : "-", res->implicit);
        job_connect(s, j);
        return;
    }
    const char *why = res->error ? res->error : "no usable answer";
    char *t = j->via_route
                  ? util_asprintf("DNS lookup of the route host for %s failed: %s", j->domain, why)
                  : util_asprintf("DNS lookup for %s failed: %s", j->domain, why);
    retry_failure f = RETRY_FAIL_DNS_TEMP;
    if (!j->via_route) {
        if (res->status == DNS_NXDOMAIN) f = RETRY_FAIL_DNS_NXDOMAIN;
        else if (res->status == DNS_NULLMX) f = RETRY_FAIL_DNS_NULLMX;
        else if (res->status == DNS_NOHOST) f = RETRY_FAIL_DNS_NOHOST;
    }
    job_fail_all(s, j, f, t);
    free(t);
}

static void job_start(scheduler *s, sched_job *j)
{
    kiln_ctx *ctx = s->ctx;
    const config *cfg = ctx->cfg;
    active_link(s, j);
    j->pool_wait = false;
    if (spool_load_message(ctx->spool, j->msg_id, &j->msg) != 0) {
        /* a recipient without its message breaks the spool's contract */
        log_write(lg(s), KLOG_ERROR, "scheduler.job",
                  "id=%s domain=%s error=\"message missing from the spool; recipients left as they are\" spool_error=%s",
                  log_q(lg(s), j->msg_id), log_q(lg(s), j->domain),
                  log_q(lg(s), spool_errmsg(ctx->spool)));
        active_unlink(s, j);
        s->nqueued -= (int64_t)j->nrcpts;
        job_free(j);
        return;
    }
    j->loaded = true;
    const config_set *set = config_find_set(cfg, j->msg.config_set);
    if (!set && cfg->default_set) set = config_find_set(cfg, cfg->default_set);
    set_str(&j->set_name, j->msg.config_set);
    j->max_delivery_ms = set ? set->max_delivery_time_ms : 14LL * 3600 * 1000;
    j->require_tls = set && set->tls_policy == CONFIG_TLS_REQUIRE;
    if (!set) {
        char *t = util_asprintf("configuration set %s no longer exists and there is no default set",
                                j->msg.config_set);
        job_fail_all(s, j, RETRY_FAIL_INTERNAL, t);
        free(t);
        return;
    }
    set_str(&j->pool, set->pool);

    const config_route *rt = config_find_route(cfg, j->domain);
    j->via_route = rt != NULL;
    const char *target = rt ? rt->host : j->domain;
    if (rt && addr_family(rt->host)) {
        hops_add(j, rt->host, rt->host, rt->port);
        log_write(lg(s), KLOG_DEBUG, "sched.pick", "id=%s domain=%s route=%s:%d",
                  log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), rt->host, rt->port);
        job_connect(s, j);
        return;
    }
    if (!s->dns) {
        char *t = util_asprintf("no DNS resolver: %s", s->dns_error ? s->dns_error : "not configured");
        job_fail_all(s, j, RETRY_FAIL_DNS_TEMP, t);
        free(t);
        return;
    }
    mx_wait *w = util_calloc(1, sizeof *w);
    w->s = s;
    w->j = j;
    dns_resolve_mx(s->dns, target, on_resolved, w);
}

/* ------------------------------------------------------------------ the pump */

static void pump(scheduler *s)
{
    if (s->stopping) return;
    /* parked jobs first: a slot may have freed up */
    for (sched_job *j = s->active_head, *nx; j; j = nx) {
        nx = j->anext;
        /* job_connect changes no job but j (sessions it finds take no parked job
         * synchronously), so nx stays valid */
        if (j->waiting) job_connect(s, j);
    }
    /* Jobs start even at the session limit: connect_from parks them and evicts idle
     * connections to make room (bodies in memory stay bounded by SCHED_MAX_ACTIVE). */
    while (s->ready_head && s->nactive < SCHED_MAX_ACTIVE) {
        sched_job *j = ready_pop(s);
        job_start(s, j);
    }
}

static void on_pump(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    pump(w->data);
}

static void schedule_pump(scheduler *s)
{
    if (s->stopping || ev_is_active(&s->pump_timer)) return;
    ev_timer_set(&s->pump_timer, 0.0, 0.0);
    ev_timer_start(s->ctx->loop, &s->pump_timer);
}

/* ------------------------------------------------------------------ loading from the spool */

typedef struct loaded_rcpt {
    char *msg_id;
    char *domain;
    sched_rcpt r;
} loaded_rcpt;

typedef struct load_acc {
    loaded_rcpt *v;
    size_t n, cap;
} load_acc;

static void load_cb(void *arg, const spool_rcpt *r)
{
    load_acc *a = arg;
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = util_realloc(a->v, a->cap * sizeof *a->v);
    }
    loaded_rcpt *l = &a->v[a->n++];
    l->msg_id = util_strdup(r->msg_id);
    l->domain = util_strdup(util_addr_domain(r->address));
    util_lowercase(l->domain);
    l->r.rowid = r->rowid;
    l->r.address = util_strdup(r->address);
    l->r.attempts = r->attempts;
    l->r.next_attempt_ms = r->state == SPOOL_RCPT_QUEUED ? 0 : r->next_attempt_ms;
}

static int cmp_loaded(const void *a, const void *b)
{
    const loaded_rcpt *x = a, *y = b;
    int c = strcmp(x->msg_id, y->msg_id);
    if (c) return c;
    c = strcmp(x->domain, y->domain);
    if (c) return c;
    return x->r.rowid < y->r.rowid ? -1 : x->r.rowid > y->r.rowid;
}

/* Groups recipients by (message, domain) into jobs placed in the ready list or heap. */
static int64_t load_rcpts(scheduler *s, const char *msg_id)
{
    load_acc a = {0};
    if (spool_each_pending_rcpt(s->ctx->spool, msg_id, load_cb, &a) != 0) {
        for (size_t i = 0; i < a.n; i++) {
            free(a.v[i].msg_id);
            free(a.v[i].domain);
            free(a.v[i].r.address);
        }
        free(a.v);
        return -1;
    }
    if (a.n) qsort(a.v, a.n, sizeof *a.v, cmp_loaded);
    sched_job *j = NULL;
    for (size_t i = 0; i < a.n; i++) {
        loaded_rcpt *l = &a.v[i];
        if (!j || strcmp(j->msg_id, l->msg_id) != 0 || strcmp(j->domain, l->domain) != 0) {
            if (j) job_place(s, j);
            j = util_calloc(1, sizeof *j);
            j->msg_id = l->msg_id;
            j->domain = l->domain;
        } else {
            free(l->msg_id);
            free(l->domain);
        }
        if (j->nrcpts == j->cap) {
            j->cap = j->cap ? j->cap * 2 : 4;
            j->rcpts = util_realloc(j->rcpts, j->cap * sizeof *j->rcpts);
        }
        j->rcpts[j->nrcpts++] = l->r;
    }
    if (j) job_place(s, j);
    free(a.v);
    arm_due_timer(s);
    schedule_pump(s);
    return (int64_t)a.n;
}

/* ------------------------------------------------------------------ public API */

scheduler *scheduler_new(kiln_ctx *ctx)
{
    scheduler *s = util_calloc(1, sizeof *s);
    s->ctx = ctx;
    char *err = NULL;
    s->dns = dns_new(ctx->loop, ctx->cfg, ctx->log, &err);
    if (!s->dns) {
        log_write(ctx->log, KLOG_ERROR, "scheduler.dns",
                  "error=%s note=\"domains without a static route are deferred\"", log_q(ctx->log, err));
        s->dns_error = err;
    }
    err = NULL;
    s->tls = tls_client_ctx_new(false, &err);
    if (!s->tls) {
        log_write(ctx->log, KLOG_WARNING, "scheduler.tls",
                  "error=%s note=\"outbound STARTTLS disabled\"", log_q(ctx->log, err));
        free(err);
    }
    ev_timer_init(&s->due_timer, on_due, 0.0, 0.0);
    s->due_timer.data = s;
    ev_timer_init(&s->pump_timer, on_pump, 0.0, 0.0);
    s->pump_timer.data = s;

    /* the dedicated-IP state: the config's IPs, then what the spool kept of them */
    int64_t now = kiln_now_ms(ctx);
    pools_opts po;
    pools_opts_default(&po);
    s->pools = pools_new(ctx->cfg, &po, now);
    char *saved = NULL;
    if (spool_kv_get(ctx->spool, SCHED_POOLS_KEY, &saved) != 0) {
        log_write(ctx->log, KLOG_ERROR, "pools.load",
                  "error=%s note=\"IPs start from the config: new ones at 0 %% warm-up, no usage\"",
                  log_q(ctx->log, spool_errmsg(ctx->spool)));
    } else if (saved) {
        err = NULL;
        if (pools_state_load(s->pools, saved, now, &err) != 0) {
            log_write(ctx->log, KLOG_ERROR, "pools.load",
                      "error=%s note=\"saved state ignored; IPs start from the config\"",
                      log_q(ctx->log, err ? err : "malformed"));
            free(err);
        }
    }
    free(saved);
    for (size_t i = 0; i < pools_count(s->pools); i++) {
        pools_ip_info in;
        pools_info(s->pools, i, now, &in);
        log_write(ctx->log, KLOG_INFO, "pools.ip",
                  "ip=%s pool=%s zone=%s warmup=%s pct=%d sent_24h=%lld daily_cap=%lld state=%s",
                  in.address, log_q(ctx->log, in.pool), log_q(ctx->log, in.zone), in.warmup_status,
                  in.warmup_percentage, (long long)in.sent_24h, (long long)in.daily_cap,
                  pools_state_name(in.state));
    }
    ev_timer_init(&s->save_timer, on_save, SCHED_SAVE_INTERVAL, SCHED_SAVE_INTERVAL);
    s->save_timer.data = s;
    ev_timer_start(ctx->loop, &s->save_timer);
    return s;
}

void scheduler_free(scheduler *s)
{
    if (!s) return;
    ev_timer_stop(s->ctx->loop, &s->due_timer);
    ev_timer_stop(s->ctx->loop, &s->pump_timer);
    ev_timer_stop(s->ctx->loop, &s->save_timer);
    while (s->sessions) {
        sched_session *ss = s->sessions;
        session_unlink(s, ss);
        session_free(ss);
    }
    if (s->dns) dns_free(s->dns);   /* pending lookups are dropped without callbacks */
    while (s->active_head) {
        sched_job *j = s->active_head;
        active_unlink(s, j);
        job_clear_attempt(s, j);
        job_free(j);
    }
    for (sched_job *j = s->ready_head, *nx; j; j = nx) {
        nx = j->next;
        job_free(j);
    }
    for (size_t i = 0; i < s->nheap; i++) job_free(s->heap[i]);
    free(s->heap);
    save_pools(s);   /* the daemon flushes the spool after this */
    pools_free(s->pools);
    free(s->res);
    if (s->tls) tls_ctx_free(s->tls);
    free(s->dns_error);
    free(s);
}

int64_t scheduler_recover(scheduler *s)
{
    int64_t n = load_rcpts(s, NULL);
    if (n >= 0)
        log_write(lg(s), KLOG_INFO, "scheduler.recover", "recipients=%lld queued=%lld deferred=%lld",
                  (long long)n, (long long)s->nqueued, (long long)s->ndeferred);
    return n;
}

void scheduler_message_committed(scheduler *s, const char *msg_id)
{
    if (load_rcpts(s, msg_id) < 0)
        log_write(lg(s), KLOG_ERROR, "scheduler.queue",
                  "id=%s error=%s note=\"recipients stay in the spool and are queued at the next start\"",
                  log_q(lg(s), msg_id), log_q(lg(s), spool_errmsg(s->ctx->spool)));
}

/* Jobs the pools deferred (no IP, all at cap) are due now: the pools just changed. */
static void requeue_pool_waiting(scheduler *s)
{
    size_t keep = 0, moved = 0;
    sched_job **old = s->heap;
    size_t n = s->nheap;
    s->heap = NULL;
    s->nheap = s->heap_cap = 0;
    for (size_t i = 0; i < n; i++) {
        sched_job *j = old[i];
        if (j->pool_wait) {
            s->ndeferred -= (int64_t)j->nrcpts;
            s->nqueued += (int64_t)j->nrcpts;
            j->pool_wait = false;
            ready_push(s, j);
            moved++;
        } else {
            heap_push(s, j);
            keep++;
        }
    }
    free(old);
    if (moved)
        log_write(lg(s), KLOG_INFO, "pools.requeue", "jobs=%zu deferred_left=%zu reason=%s", moved, keep,
                  log_q(lg(s), "the pools changed: mail waiting for an IP is tried again now"));
    arm_due_timer(s);
    schedule_pump(s);
}

/* "a,b,c" or "-" (malloc'd) for logs. */
static char *join_addrs(char **v, size_t n)
{
    if (n == 0) return util_strdup("-");
    strbuf sb;
    strbuf_init(&sb);
    for (size_t i = 0; i < n; i++) {
        if (i) strbuf_puts(&sb, ",");
        strbuf_puts(&sb, v[i]);
    }
    return strbuf_steal(&sb);
}

void scheduler_config_changed(scheduler *s)
{
    const config *cfg = s->ctx->cfg;
    if (s->dns) {
        char *err = NULL;
        if (dns_reconfigure(s->dns, cfg, &err) != 0) {
            log_write(lg(s), KLOG_ERROR, "scheduler.dns", "error=%s note=\"previous DNS settings kept\"",
                      log_q(lg(s), err));
            free(err);
        }
    }
    /* lease / release: new IPs start warming up, removed ones drain, moved ones keep their
     * warm-up */
    int64_t now = kiln_now_ms(s->ctx);
    pools_diff d;
    memset(&d, 0, sizeof d);
    pools_apply_config(s->pools, cfg, now, &d);
    char *added = join_addrs(d.added, d.nadded);
    char *removed = join_addrs(d.removed, d.nremoved);
    char *moved = join_addrs(d.moved, d.nmoved);
    log_write(lg(s), KLOG_INFO, "pools.reload", "added=%s removed=%s moved=%s", added, removed, moved);
    free(added);
    free(removed);
    free(moved);
    /* connections from released IPs drain: no new transaction, QUIT when idle; a released
     * IP without a session is dropped at once */
    retire_unusable_sessions(s);
    for (size_t i = 0; i < d.nremoved; i++) {
        pools_ip_info in;
        if (pools_info_by_address(s->pools, d.removed[i], now, &in) != 0) continue;
        bool used = false;
        for (const sched_session *ss = s->sessions; ss && !used; ss = ss->next)
            used = strcmp(ss->src, d.removed[i]) == 0;
        if (!used) {
            pools_forget(s->pools, d.removed[i]);
            log_write(lg(s), KLOG_INFO, "pools.forget", "ip=%s reason=\"released; no open session\"",
                      d.removed[i]);
        }
    }
    pools_diff_free(&d);
    save_pools(s);
    requeue_pool_waiting(s);
}

void scheduler_stop(scheduler *s, void (*done)(void *arg), void *arg)
{
    s->stopping = true;
    s->stop_done = done;
    s->stop_arg = arg;
    ev_timer_stop(s->ctx->loop, &s->due_timer);
    ev_timer_stop(s->ctx->loop, &s->pump_timer);
    ev_timer_stop(s->ctx->loop, &s->save_timer);
    save_pools(s);
    /* parked jobs never started: they stay queued in the spool */
    for (sched_job *j = s->active_head, *nx; j; j = nx) {
        nx = j->anext;
        if (j->waiting) job_release(s, j);
    }
    for (sched_session *ss = s->sessions, *nx; ss; ss = nx) {
        nx = ss->next;
        if (ss->state == SESS_CONNECTING) {
            /* no transaction yet: drop the connection, the job stays queued */
            sched_job *j = ss->job;
            ss->job = NULL;
            session_unlink(s, ss);
            session_free(ss);
            if (j) job_release(s, j);
        } else if (ss->state == SESS_IDLE) {
            session_quit(ss);
        }
        /* busy sessions QUIT after their transaction (session_next) */
    }
    log_write(lg(s), KLOG_INFO, "scheduler.stop", "result=begin sessions=%d", s->nsessions);
    check_stop_done(s);
}

void scheduler_counts(const scheduler *s, int64_t *queued, int64_t *deferred, int *sessions)
{
    if (queued) *queued = s->nqueued;
    if (deferred) *deferred = s->ndeferred;
    if (sessions) *sessions = s->nsessions;
}

struct pools *scheduler_pools(scheduler *s)
{
    return s->pools;
}

void scheduler_pools_changed(scheduler *s)
{
    save_pools(s);
    if (s->stopping) return;
    retire_unusable_sessions(s);
    requeue_pool_waiting(s);
}
