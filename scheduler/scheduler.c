/* scheduler.c — the delivery scheduler (see scheduler.h).
 *
 * State, all in memory and rebuilt from the spool at start-up:
 *   - jobs: the non-final recipients of one message for one destination domain, tagged at
 *     enqueue with the message's configuration set. A job is in exactly one place:
 *       ready     the FIFO of its configuration set (due now; queue_fair of queue.h);
 *       deferred  the timer heap (its earliest next attempt; queue_heap of queue.h, one
 *                 ev_timer for the top);
 *       held      the FIFO of a destination queue (below): not started, no body in memory;
 *       active    being delivered: resolving its next hop, waiting for a connection slot
 *                 or a rate token, or in a session (at most SCHED_MAX_ACTIVE: bodies in
 *                 memory).
 *   - configuration sets: the ready work is kept per set and served round-robin across
 *     sets of the same `priority`, higher priorities first, both when jobs start and when
 *     a connection slot frees up (a waiting job of the highest priority, the set served
 *     least recently, the job waiting longest); so a large low-priority backlog cannot
 *     starve a high-priority set that competes with it for the same limits.
 *   - destination queues (set, pool, site): how many of the set's jobs wait at the site
 *     (at most SCHED_DEST_WAITING; more are held there, FIFO, and released one by one as
 *     the waiting ones get connections), and whether every IP of the pool is blocked for
 *     the site by shaping (throttling backoff) until a time: then its jobs are held until
 *     that time (one ev_timer) instead of occupying active slots, so a slow or throttling
 *     site never holds up other sites, sets or IPs. A job whose site is known from an
 *     earlier attempt is held before it is even loaded.
 *   - sessions: open SMTP client connections, each bound to a source IP of a pool and
 *     connected to one next hop (address, port) of one site. An idle session is reused by
 *     the next job for the same hop and site whose pool contains its IP, while that IP is
 *     active and has warm-up headroom; it QUITs after SCHED_IDLE_MS, after the site's
 *     messages_per_connection, or after its transaction when its IP is draining (released
 *     by a reload) or down (circuit open, zone down).
 *   - shaping (scheduler/shaping.h): per (source IP, site) connection window with slow
 *     start, messages per connection, message rate and throttling backoff. A site is the
 *     sorted set of the domain's MX host names (the route host for routes). Before a new
 *     connection shaping_may_connect, before each transaction shaping_take_message; every
 *     outcome is recorded (OK, FAILED: connect failure, timeout, drop; THROTTLED: 421 or a
 *     4xx about rate, too many connections/messages, throttling, slowing down). An IP
 *     blocked by shaping for a site makes the job try the pool's other IPs first.
 *   - the dedicated-IP state (pools/pools.h): warm-up, usage, health, zones, lease and
 *     release. The scheduler asks it for a source IP per new session, tells it every
 *     session and outcome, and saves it in the spool (key "pools") at most once a second
 *     when it changed, and at stop.
 *
 * Memory budget (queue_pager of queue.h): at most SCHED_MEM_RCPTS recipients are held in
 * memory (the environment variable KILN_SCHED_MEM_RCPTS, read once by scheduler_new,
 * overrides it: a knob for tests and tuning); the others, and deferred recipients not due
 * within SCHED_HORIZON_MS, stay only in the spool. They are paged in by rowid: forward
 * from a cursor when fewer than half the budget are in memory, and by sweeps from the
 * start for deferred ones before they are due (one ev_timer). A committed message is
 * loaded at once only while the pager is caught up and it fits; otherwise the pager reads
 * it in rowid order. The rowids in memory are kept in a set, so that no recipient is ever
 * loaded twice, and pages read only rows known to be committed. While some recipients
 * are in the spool only, kilnctl status and queue count them from the spool.
 *
 * A job's attempt: load the message from the spool, find the next hop (static route, or
 * MX via mta/dns), reuse an idle session or choose a source IP of the configuration set's
 * pool with pools_choose (provider by MX suffix) and open one within the caps
 * (SCHED_MAX_SESSIONS overall, shaping per source IP and site), run the transaction, and
 * settle every recipient: the spool row and its SES event in the current spool batch (the
 * loop commits it). Every job keeps the last reason it could not proceed (and until when),
 * which `kilnctl queue --explain` reports and the debug log shows at each decision.
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
#include "scheduler/scheduler.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "base/config.h"
#include "mta/dns.h"
#include "mta/events.h"
#include "base/kiln.h"
#include "pools/pools.h"
#include "scheduler/queue.h"
#include "scheduler/retry.h"
#include "scheduler/shaping.h"
#include "mta/smtp_client.h"
#include "store/spool.h"
#include "mta/tls.h"
#include "base/util.h"

#define SCHED_MAX_SESSIONS 100      /* open client connections, all destinations */
#define SCHED_MAX_ACTIVE 200        /* jobs started and not finished (bodies in memory) */
#define SCHED_DEST_WAITING 32       /* jobs of one set waiting at one site; more are held */
#define SCHED_HOLD_MIN_MS 1000      /* a wait at least this long (backoff) holds the job */
#define SCHED_IDLE_MS 5000          /* an unused connection QUITs after this */
#define SCHED_EVICT_BATCH 16        /* idle connections QUITting at once to make room */
#define SCHED_MAX_HOPS 10           /* MX addresses tried per attempt */
#define SCHED_SAVE_INTERVAL 1.0     /* seconds between saves of a changed pools state */
#define SCHED_GC_TICKS 60           /* save intervals between shaping garbage collections */
#define SCHED_SHAPING_IDLE_MS (10 * 60 * 1000)   /* shaping entries unused this long go */
#define SCHED_CAP_RETRY_MS 60000    /* SendingDeferral retry when the pools name no time */
#define SCHED_CONNECT_IP_TRIES 2    /* source IPs tried per hop after connect failures */
#define SCHED_POOLS_KEY "pools"     /* spool kv key of the pools state */
#define SCHED_WHY_LEN 320           /* a job's last reason */
#define SCHED_PRELOAD_JOBS 512      /* ready jobs keeping the message read at enqueue */
#define SCHED_PRELOAD_BYTES (64L * 1024 * 1024)   /* and their bodies' total size */
#define SCHED_MEM_RCPTS 200000      /* recipients in memory at most (KILN_SCHED_MEM_RCPTS) */
#define SCHED_HORIZON_MS (10 * 60 * 1000)   /* deferred ones due later stay in the spool */
#define SCHED_PAGE_CHUNK 1000       /* rows per spool read while paging in */
#define SCHED_PAGE_MAX 20000        /* recipients paged in per scheduling pass (the rest at
                                       the next pass: the loop is never held up long) */
#define SCHED_PAGE_RETRY_MS 1000    /* paging blocked (budget full, uncommitted batch) */

typedef struct sched_rcpt {
    int64_t rowid;
    char *address;
    int attempts;
    int64_t next_attempt_ms;
    char *last_reply;           /* the reply or failure of its last deferral, or NULL */
} sched_rcpt;

typedef struct sched_hop {
    char *name;                 /* MX host name, or the route host */
    char *addr;                 /* IP literal */
    int port;
} sched_hop;

typedef struct sched_session sched_session;
typedef struct sched_set sched_set;
typedef struct sched_dest sched_dest;

typedef enum { JOB_READY, JOB_DEFERRED, JOB_HELD, JOB_ACTIVE } job_where;

typedef struct sched_job {
    char *msg_id;
    char *domain;               /* lower-case */
    sched_rcpt *rcpts;
    size_t nrcpts, cap;
    int64_t due_ms;
    job_where where;
    sched_set *set;             /* the message's configuration set (its ready queue) */
    char *site;                 /* shaping site of its last attempt (hint for holding) */
    queue_link rlink;           /* in the ready queue of its set */
    struct sched_job *next;     /* held FIFO of its destination */
    struct sched_job *aprev, *anext;   /* active list */
    sched_dest *wdest;          /* waiting at this destination (counted in nwaiting) */
    sched_dest *rdest;          /* released from this destination's held FIFO and not yet
                                   through a decision (counted in nreleased) */
    sched_dest *hdest;          /* held here */
    uint64_t wait_seq;          /* when it began waiting (FIFO among waiting jobs) */
    int64_t wait_until_ms;      /* waiting for a rate token until then; 0: for a slot */
    char why[SCHED_WHY_LEN];    /* the last reason it could not proceed */
    int64_t why_until_ms;       /* and until when, if known */

    /* while active (and, for a few ready jobs, since enqueue: see job_preload) */
    spool_loaded msg;
    bool loaded;
    char *pool;
    bool require_tls;
    int64_t max_delivery_ms;
    bool via_route;
    sched_hop *hops;
    size_t nhops, hop_idx;
    char **mx;                  /* the site's host names (shaping provider match) */
    size_t nmx;
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

/* The ready work of one configuration set. Never freed while the scheduler lives (jobs
 * point here); a handful per config. */
struct sched_set {
    char *name;
    queue_set q;                /* its ready jobs (q.priority: configuration_sets[].priority) */
    uint64_t slot_stamp;        /* when a job of this set last got a connection */
    sched_set *next;
};

/* One configuration set's work for one site from one pool. */
struct sched_dest {
    struct scheduler *s;
    char *key;                  /* set '\n' pool '\n' site */
    uint64_t hash;
    sched_set *set;
    char *pool, *site;
    int nwaiting;               /* active jobs waiting for a connection slot or token here */
    int nreleased;              /* held jobs released to the ready queue, not yet decided */
    sched_job *held_head, *held_tail;
    size_t nheld;
    int64_t blocked_until_ms;   /* every IP blocked by shaping (backoff) until then */
    char why[SCHED_WHY_LEN];    /* why it is blocked */
    ev_timer timer;             /* fires at blocked_until_ms */
    bool in_refill;             /* on the scheduler's refill list */
    sched_dest *refill_next;
    sched_dest *hnext;          /* hash chain */
};

typedef enum { SESS_CONNECTING, SESS_BUSY, SESS_IDLE, SESS_QUITTING, SESS_DEAD } sess_state;

struct sched_session {
    struct scheduler *s;
    smtp_client *c;
    config *cfg;                /* the config it started under */
    char *src;
    char *peer;
    int port;
    char *peer_name;
    char *site;                 /* shaping site */
    shaping_dest *sd;           /* shaping state of (src, site); one connection counted */
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

    sched_set *sets;
    queue_fair ready;           /* the sets' ready jobs (sched_job.rlink) */
    queue_heap deferred;        /* deferred jobs by due_ms */
    queue_idset mem;            /* spool rowids of the recipients held in memory */
    queue_pager pager;          /* which recipients are read from the spool, and when */
    ev_timer page_timer;        /* a sweep for deferred ones comes due, or a retry */
    int64_t page_at_ms;         /* when page_timer fires (0: not armed) */
    sched_job *active_head, *active_tail;
    int nactive;
    sched_session *sessions;
    int nsessions;
    int nevicting;              /* idle sessions QUITting to make room (see evict_idle) */
    int64_t nqueued, ndeferred;   /* recipients */
    uint64_t stamp;             /* round-robin and FIFO sequence */
    size_t npreload;            /* ready jobs holding their message (job_preload) */
    size_t preload_bytes;

    sched_dest **dests;         /* hash table of destination queues */
    size_t ndest_buckets, ndests;
    sched_dest *refill;         /* destinations whose held jobs may be released */

    shaping *shaping;
    pools *pools;
    ip_reservation *res;
    size_t nres;

    ev_timer due_timer;
    ev_timer pump_timer;
    ev_timer save_timer;
    ev_timer wake_timer;        /* the earliest rate token a waiting job needs */
    int64_t wake_at_ms;
    unsigned ticks;
    bool stopping;
    void (*stop_done)(void *arg);
    void *stop_arg;
    bool stop_reported;
};

static bool job_connect(scheduler *s, sched_job *j);
static void arm_page_timer(scheduler *s, int64_t now);
static int64_t page_in(scheduler *s);
static void schedule_pump(scheduler *s);
static void session_next(sched_session *ss, bool take_parked);

/* ------------------------------------------------------------------ small helpers */

static klog *lg(const scheduler *s) { return s->ctx->log; }

static bool debug_on(const scheduler *s) { return log_enabled(s->ctx->log, KLOG_DEBUG); }

static int addr_family(const char *a)
{
    unsigned char buf[16];
    if (inet_pton(AF_INET, a, buf) == 1) return AF_INET;
    if (inet_pton(AF_INET6, a, buf) == 1) return AF_INET6;
    return 0;
}

static void set_str(char **dst, const char *src)
{
    char *d = util_strdup(src);
    free(*dst);
    *dst = d;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* Records why job j could not proceed (and until when, 0 if unknown). */
static void job_why(sched_job *j, int64_t until_ms, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void job_why(sched_job *j, int64_t until_ms, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->why, sizeof j->why, fmt, ap);
    va_end(ap);
    j->why_until_ms = until_ms;
}

/* The configuration set of a job as the config has it now (the default set when its own
 * is gone, as job_start does), or NULL. */
static const config_set *set_config(const config *cfg, const char *name)
{
    const config_set *cs = config_find_set(cfg, name);
    if (!cs && cfg->default_set) cs = config_find_set(cfg, cfg->default_set);
    return cs;
}

/* A reply that says the site throttles this IP: 421, or a 4xx about rate, too many
 * connections or messages, throttling, slowing down, or reputation (SpamDetected). */
static bool reply_throttles(int code, const char *enhanced, const char *text)
{
    if (code == 421) return true;
    if (code < 400 || code >= 500) return false;
    retry_class c;
    retry_classify_reply(code, enhanced, text, &c);
    if (c.delay_type && strcmp(c.delay_type, "SpamDetected") == 0) return true;
    if (!text) return false;
    static const char *const phrases[] = {"too many connections", "too many messages",
                                          "too many concurrent", "too many sessions",
                                          "throttl", "slow down"};
    for (size_t i = 0; i < sizeof phrases / sizeof phrases[0]; i++)
        if (strcasestr(text, phrases[i])) return true;
    /* "rate" as a word ("rate limit", "sending rate exceeded"), not in "generate" */
    for (const char *p = text; (p = strcasestr(p, "rate")) != NULL; p += 4)
        if (p == text || !isalpha((unsigned char)p[-1])) return true;
    return false;
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

/* ------------------------------------------------------------------ configuration sets */

static sched_set *set_get(scheduler *s, const char *name)
{
    for (sched_set *st = s->sets; st; st = st->next)
        if (strcmp(st->name, name) == 0) return st;
    sched_set *st = util_calloc(1, sizeof *st);
    st->name = util_strdup(name);
    const config_set *cs = set_config(s->ctx->cfg, name);
    queue_fair_add_set(&s->ready, &st->q, cs ? cs->priority : 0);
    st->next = s->sets;
    s->sets = st;
    return st;
}

/* After a reload: priorities as the config has them now. */
static void sets_refresh(scheduler *s)
{
    for (sched_set *st = s->sets; st; st = st->next) {
        const config_set *cs = set_config(s->ctx->cfg, st->name);
        st->q.priority = cs ? cs->priority : 0;
    }
}

static void ready_push(scheduler *s, sched_job *j)
{
    j->where = JOB_READY;
    queue_fair_push(&s->ready, &j->set->q, &j->rlink);
}

static void ready_push_front(scheduler *s, sched_job *j)
{
    j->where = JOB_READY;
    queue_fair_push_front(&s->ready, &j->set->q, &j->rlink);
}

/* The next job to start: from the set of the highest priority with ready work, among
 * those the one whose last start is oldest (round-robin). */
static sched_job *ready_pop(scheduler *s)
{
    queue_link *l = queue_fair_pop(&s->ready, NULL);
    return l ? QUEUE_ITEM(l, sched_job, rlink) : NULL;
}

/* Which of two jobs waiting for a connection slot goes first: higher priority, then the
 * set served least recently, then the one waiting longest. */
static bool job_before(const sched_job *a, const sched_job *b)
{
    if (a->set->q.priority != b->set->q.priority) return a->set->q.priority > b->set->q.priority;
    if (a->set != b->set) {
        if (a->set->slot_stamp != b->set->slot_stamp)
            return a->set->slot_stamp < b->set->slot_stamp;
        return strcmp(a->set->name, b->set->name) < 0;   /* neither served yet */
    }
    return a->wait_seq < b->wait_seq;
}

/* ------------------------------------------------------------------ destination queues */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = UINT64_C(1469598103934665603);
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= UINT64_C(1099511628211);
    }
    return h;
}

static char *dest_key(const sched_set *st, const char *pool, const char *site)
{
    return util_asprintf("%s\n%s\n%s", st->name, pool, site);
}

static void dest_on_timer(struct ev_loop *loop, ev_timer *w, int revents);

static sched_dest *dest_find(const scheduler *s, const sched_set *st, const char *pool,
                             const char *site)
{
    if (!s->ndest_buckets) return NULL;
    char *key = dest_key(st, pool, site);
    uint64_t h = fnv1a(key);
    sched_dest *d = s->dests[h & (s->ndest_buckets - 1)];
    while (d && (d->hash != h || strcmp(d->key, key) != 0)) d = d->hnext;
    free(key);
    return d;
}

static void dest_table_grow(scheduler *s)
{
    size_t n = s->ndest_buckets ? s->ndest_buckets * 2 : 64;
    sched_dest **b = util_calloc(n, sizeof *b);
    for (size_t i = 0; i < s->ndest_buckets; i++) {
        for (sched_dest *d = s->dests[i], *nx; d; d = nx) {
            nx = d->hnext;
            size_t k = (size_t)(d->hash & (n - 1));
            d->hnext = b[k];
            b[k] = d;
        }
    }
    free(s->dests);
    s->dests = b;
    s->ndest_buckets = n;
}

static sched_dest *dest_get(scheduler *s, sched_set *st, const char *pool, const char *site)
{
    sched_dest *d = dest_find(s, st, pool, site);
    if (d) return d;
    if (s->ndests + 1 > s->ndest_buckets / 4 * 3) dest_table_grow(s);
    d = util_calloc(1, sizeof *d);
    d->s = s;
    d->key = dest_key(st, pool, site);
    d->hash = fnv1a(d->key);
    d->set = st;
    d->pool = util_strdup(pool);
    d->site = util_strdup(site);
    ev_timer_init(&d->timer, dest_on_timer, 0.0, 0.0);
    d->timer.data = d;
    size_t k = (size_t)(d->hash & (s->ndest_buckets - 1));
    d->hnext = s->dests[k];
    s->dests[k] = d;
    s->ndests++;
    return d;
}

static bool dest_blocked(const sched_dest *d, int64_t now)
{
    return d->blocked_until_ms > now;
}

/* The destination's held jobs may be released (done by the pump). */
static void dest_mark_refill(scheduler *s, sched_dest *d)
{
    if (!d->in_refill) {
        d->in_refill = true;
        d->refill_next = s->refill;
        s->refill = d;
    }
    schedule_pump(s);
}

/* Every IP of the pool is blocked for the site until until_ms: hold its jobs until then. */
static void dest_block(scheduler *s, sched_dest *d, int64_t until_ms, const char *why, int64_t now)
{
    d->blocked_until_ms = until_ms;
    snprintf(d->why, sizeof d->why, "%s", why);
    ev_timer_stop(s->ctx->loop, &d->timer);
    int64_t wait = until_ms - now;
    if (wait < 1) wait = 1;
    ev_timer_set(&d->timer, (double)wait / 1000.0, 0.0);
    if (!s->stopping) ev_timer_start(s->ctx->loop, &d->timer);
}

static void dest_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sched_dest *d = w->data;
    scheduler *s = d->s;
    d->blocked_until_ms = 0;
    if (d->nheld && debug_on(s))
        log_write(lg(s), KLOG_DEBUG, "sched.release", "set=%s pool=%s site=%s held=%zu reason=%s",
                  log_q(lg(s), d->set->name), log_q(lg(s), d->pool), log_q(lg(s), d->site),
                  d->nheld, log_q(lg(s), "shaping backoff of the site is over"));
    dest_mark_refill(s, d);
}

/* Moves held jobs of d back to the front of their set's ready queue while the site is
 * not blocked and fewer than SCHED_DEST_WAITING of them wait or are on their way. */
static void dest_refill(scheduler *s, sched_dest *d, int64_t now)
{
    if (dest_blocked(d, now) || !d->nheld) return;
    int room = SCHED_DEST_WAITING - d->nwaiting - d->nreleased;
    if (room <= 0) return;
    sched_job **take = util_calloc((size_t)room, sizeof *take);
    int n = 0;
    while (n < room && d->held_head) {
        sched_job *j = d->held_head;
        d->held_head = j->next;
        if (!d->held_head) d->held_tail = NULL;
        d->nheld--;
        j->next = NULL;
        j->hdest = NULL;
        j->rdest = d;
        d->nreleased++;
        take[n++] = j;
    }
    for (int i = n - 1; i >= 0; i--) ready_push_front(s, take[i]);   /* oldest first */
    free(take);
    if (n && debug_on(s))
        log_write(lg(s), KLOG_DEBUG, "sched.release",
                  "set=%s pool=%s site=%s jobs=%d held=%zu waiting=%d reason=%s",
                  log_q(lg(s), d->set->name), log_q(lg(s), d->pool), log_q(lg(s), d->site), n,
                  d->nheld, d->nwaiting, log_q(lg(s), "room among the jobs waiting at the site"));
}

static void dest_free(scheduler *s, sched_dest *d)
{
    ev_timer_stop(s->ctx->loop, &d->timer);
    free(d->key);
    free(d->pool);
    free(d->site);
    free(d);
}

/* Once a second: destinations whose held jobs have room are refilled (a safety net: the
 * events that free room mark them already); with gc, those with nothing held, waiting or
 * released and no block in force are dropped. */
static void dests_tick(scheduler *s, int64_t now, bool gc)
{
    for (size_t i = 0; i < s->ndest_buckets; i++) {
        sched_dest **pp = &s->dests[i];
        while (*pp) {
            sched_dest *d = *pp;
            if (d->nheld && !dest_blocked(d, now) &&
                d->nwaiting + d->nreleased < SCHED_DEST_WAITING)
                dest_mark_refill(s, d);
            if (gc && !d->nheld && !d->nwaiting && !d->nreleased && !d->in_refill &&
                !dest_blocked(d, now)) {
                *pp = d->hnext;
                s->ndests--;
                dest_free(s, d);
            } else {
                pp = &d->hnext;
            }
        }
    }
}

/* A job leaves (or changes) the destination it waits at. */
static void job_set_waiting(scheduler *s, sched_job *j, sched_dest *d)
{
    if (j->wdest == d) return;
    if (j->wdest) {
        j->wdest->nwaiting--;
        dest_mark_refill(s, j->wdest);
    }
    j->wdest = d;
    j->wait_until_ms = 0;
    if (d) {
        d->nwaiting++;
        j->wait_seq = ++s->stamp;
    }
}

/* A released job reached a decision (or left): it no longer counts as on its way. */
static void job_unrelease(scheduler *s, sched_job *j)
{
    if (!j->rdest) return;
    j->rdest->nreleased--;
    dest_mark_refill(s, j->rdest);
    j->rdest = NULL;
}

/* ------------------------------------------------------------------ jobs: lists and heap */

static void job_free(sched_job *j)
{
    if (j->loaded) spool_loaded_free(&j->msg);
    for (size_t i = 0; i < j->nrcpts; i++) {
        free(j->rcpts[i].address);
        free(j->rcpts[i].last_reply);
    }
    free(j->rcpts);
    free(j->msg_id);
    free(j->domain);
    free(j->site);
    free(j);
}

/* A job leaves memory while its recipients stay pending in the spool (the pager reads
 * them again later). */
static void job_forget(scheduler *s, sched_job *j)
{
    for (size_t i = 0; i < j->nrcpts; i++) queue_idset_remove(&s->mem, j->rcpts[i].rowid);
    job_free(j);
}

static int64_t in_mem(const scheduler *s)
{
    return (int64_t)queue_idset_size(&s->mem);
}

/* The message is read from the spool when it is queued (for its configuration set). A few
 * ready jobs keep it, within SCHED_PRELOAD_JOBS and SCHED_PRELOAD_BYTES, so that a job
 * started soon after it was queued, the usual case, does not read it twice. Takes m (the
 * job owns it, or it is freed). */
static void job_preload(scheduler *s, sched_job *j, spool_loaded *m)
{
    if (j->loaded || s->npreload >= SCHED_PRELOAD_JOBS ||
        s->preload_bytes + m->data_len > SCHED_PRELOAD_BYTES) {
        spool_loaded_free(m);
        return;
    }
    j->msg = *m;
    memset(m, 0, sizeof *m);
    j->loaded = true;
    s->npreload++;
    s->preload_bytes += j->msg.data_len;
}

/* A preloaded job leaves the ready queue: it now holds its message as an active job
 * (start), or lets it go (keep = false). */
static void job_unpreload(scheduler *s, sched_job *j, bool keep)
{
    if (j->where != JOB_READY || !j->loaded) return;
    s->npreload--;
    s->preload_bytes -= j->msg.data_len;
    if (!keep) {
        spool_loaded_free(&j->msg);
        j->loaded = false;
    }
}

static void heap_push(scheduler *s, sched_job *j)
{
    j->where = JOB_DEFERRED;
    queue_heap_push(&s->deferred, j->due_ms, j);
}

/* One ev_timer for the earliest deferred job. */
static void arm_due_timer(scheduler *s)
{
    ev_timer_stop(s->ctx->loop, &s->due_timer);
    int64_t due;
    if (!queue_heap_peek(&s->deferred, &due) || s->stopping) return;
    int64_t wait = due - kiln_now_ms(s->ctx);
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
    int64_t due;
    while (queue_heap_peek(&s->deferred, &due) && due <= now) {
        sched_job *j = queue_heap_pop(&s->deferred);
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
    if (queue_heap_peek(&s->deferred, NULL) == j) arm_due_timer(s);
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
    j->where = JOB_ACTIVE;
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

/* Forgets everything an attempt built (message body, hops, choices, reservation, its
 * place among waiting or released jobs). */
static void job_clear_attempt(scheduler *s, sched_job *j)
{
    job_unreserve(s, j);
    job_set_waiting(s, j, NULL);
    job_unrelease(s, j);
    if (j->loaded) spool_loaded_free(&j->msg);
    j->loaded = false;
    for (size_t i = 0; i < j->nhops; i++) {
        free(j->hops[i].name);
        free(j->hops[i].addr);
    }
    free(j->hops);
    j->hops = NULL;
    j->nhops = j->hop_idx = 0;
    free_strv(j->mx, j->nmx);
    j->mx = NULL;
    j->nmx = 0;
    free(j->pool);
    free(j->avoid_ip);
    free(j->avoid_zone);
    free(j->last_error);
    free(j->last_src);
    free(j->last_peer);
    free(j->addrs);
    j->pool = j->avoid_ip = j->avoid_zone = j->last_error = j->last_src = j->last_peer = NULL;
    j->addrs = NULL;
    j->no_tls = j->no_reuse = j->strict_avoid = false;
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
        int64_t now = kiln_now_ms(s->ctx);
        if (!j->pool_wait && !queue_pager_keep(&s->pager, j->due_ms, now)) {
            /* not due soon: it waits in the spool only (the pools' deferrals stay, they are
             * retried at once when the pools change) */
            queue_pager_evicted(&s->pager, j->due_ms);
            job_forget(s, j);
            arm_page_timer(s, now);
        } else {
            deferred_push(s, j);
        }
    }
    schedule_pump(s);
}

/* Not attempted after all (graceful stop): back to the ready list, nothing recorded. */
static void job_release(scheduler *s, sched_job *j)
{
    active_unlink(s, j);
    job_clear_attempt(s, j);
    ready_push_front(s, j);
}

/* Puts a job that is not started (or whose attempt ends here, nothing recorded) in the
 * held FIFO of d; it keeps counting as queued. */
static void job_hold(scheduler *s, sched_job *j, sched_dest *d)
{
    if (j->where == JOB_ACTIVE) {
        active_unlink(s, j);
        job_clear_attempt(s, j);
        schedule_pump(s);   /* an active slot freed */
    } else {
        job_unpreload(s, j, false);
        job_unrelease(s, j);
    }
    j->where = JOB_HELD;
    j->hdest = d;
    j->next = NULL;
    if (d->held_tail) d->held_tail->next = j;
    else d->held_head = j;
    d->held_tail = j;
    d->nheld++;
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
    const char *set = j->set->name;
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
            set_str(&r->last_reply, out[i].text);
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
            queue_idset_remove(&s->mem, j->rcpts[i].rowid);
            free(j->rcpts[i].address);
            free(j->rcpts[i].last_reply);
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
    job_why(j, j->nrcpts ? job_due(j) : 0, "%s: %s",
            strcmp(delay_type, "IPFailure") == 0 ? "no usable IP" : "every IP at its cap", text);
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

/* Frees an unlinked session; its IP and its shaping entry are told the connection ended,
 * and the IP is dropped from the pools if it was released and this was its last session. */
static void session_free(sched_session *ss)
{
    scheduler *s = ss->s;
    ev_timer_stop(s->ctx->loop, &ss->idle);
    if (ss->c) smtp_client_free(ss->c);
    if (ss->sd) shaping_connection_closed(ss->sd);
    pools_ip *ip = ss->ip;
    if (ss->started) pools_session_ended(s->pools, ip);
    config_unref(ss->cfg);
    free(ss->src);
    free(ss->peer);
    free(ss->peer_name);
    free(ss->site);
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

/* True if the session's IP belongs to pool now. */
static bool session_in_pool(const scheduler *s, const sched_session *ss, const char *pool,
                            int64_t now)
{
    pools_ip_info in;
    pools_ip_info_of(s->pools, ss->ip, now, &in);
    return in.pool && strcmp(in.pool, pool) == 0;
}

/* The session can take job j (for hop h, from pool): same hop and site, messages left
 * under messages_per_connection, IP of the pool, active and with room for at least one
 * recipient, TLS when required. */
static bool session_fits(const scheduler *s, const sched_session *ss, const sched_job *j,
                         const char *pool, const sched_hop *h, int64_t now)
{
    return ss->port == h->port && strcmp(ss->peer, h->addr) == 0 && !ss->retire &&
           j->site && strcmp(ss->site, j->site) == 0 &&
           ss->nmsgs < shaping_messages_per_connection(ss->sd) &&
           (!j->require_tls || smtp_client_tls_active(ss->c)) &&
           session_in_pool(s, ss, pool, now) && ip_usable(s, ss->ip, now) &&
           ip_room(s, ss->ip, j->provider, now) >= 1;
}

/* Reserves up to the IP's room for job j; a job with more recipients is split and the
 * rest goes back to the front of its set's ready queue (a job of its own). The job leaves
 * the waiting jobs: it has its connection. */
static void job_take(scheduler *s, sched_job *j, pools_ip *ip, int64_t now)
{
    job_unreserve(s, j);
    job_set_waiting(s, j, NULL);
    job_unrelease(s, j);
    j->set->slot_stamp = ++s->stamp;
    int64_t room = ip_room(s, ip, j->provider, now);
    if (room < 1) util_fatal("scheduler: job %s handed to %s without room", j->msg_id,
                             pools_ip_address(ip));
    if ((int64_t)j->nrcpts > room) {
        sched_job *rest = util_calloc(1, sizeof *rest);
        rest->msg_id = util_strdup(j->msg_id);
        rest->domain = util_strdup(j->domain);
        rest->set = j->set;
        rest->site = util_strdup(j->site);
        rest->nrcpts = rest->cap = j->nrcpts - (size_t)room;
        rest->rcpts = util_calloc(rest->cap, sizeof *rest->rcpts);
        memcpy(rest->rcpts, j->rcpts + room, rest->nrcpts * sizeof *rest->rcpts);
        j->nrcpts = (size_t)room;
        log_write(lg(s), KLOG_DEBUG, "sched.pick",
                  "id=%s domain=%s ip=%s split=%zu+%zu reason=\"warm-up headroom of the IP\"",
                  log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), pools_ip_address(ip),
                  j->nrcpts, rest->nrcpts);
        job_why(rest, 0, "split from a job that took the warm-up headroom of %s",
                pools_ip_address(ip));
        ready_push_front(s, rest);   /* still counted in nqueued */
        schedule_pump(s);
    }
    j->res_ip = ip;
    j->res_n = (int64_t)j->nrcpts;
    reserve(s, ip, j->res_n);
}

static void on_client(void *arg, smtp_client *c, const smtp_client_event *ev);

static sched_session *session_open(scheduler *s, sched_job *j, pools_ip *ip, const sched_hop *h,
                                   shaping_dest *sd)
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
    ss->site = util_strdup(j->site);
    ss->sd = sd;
    shaping_connection_opened(sd);
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
    job_why(j, 0, "connecting: %s", smtp_client_to_text(ss->c));
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
        job_why(j, 0, "in flight on session %s", smtp_client_to_text(ss->c));
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
    PICK_CHOSEN,      /* the job went to a session (new or reused) */
    PICK_WAIT,        /* usable IPs exist but their connections, headroom, rate or the site's
                         backoff hold the job: see pick_wait */
    PICK_FAMILY,      /* no IP of the pool has the hop's address family */
    PICK_NO_OTHER,    /* after a connect failure: no other IP than the one that failed */
    PICK_POOLS,       /* the pools' verdict (choice): no IP, all down, all at cap */
} pick_result;

/* Why a job has to wait, gathered over the IPs tried. */
typedef struct pick_wait {
    bool slot;                  /* some IP waits for a connection slot, headroom reserved by
                                   sessions in flight, or the session limit: retried when
                                   sessions change */
    int64_t until;              /* earliest rate token or end of backoff among IPs blocked
                                   by time; 0: none */
    char slot_why[SCHED_WHY_LEN];
    char time_why[SCHED_WHY_LEN];   /* shaping's own words for the earliest timed wait */
} pick_wait;

static void wait_slot(pick_wait *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void wait_slot(pick_wait *w, const char *fmt, ...)
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
static void wait_shaping(pick_wait *w, shaping_verdict v, int64_t until, const char *reason)
{
    if (v == SHAPING_WAIT_CONNECTIONS) {
        wait_slot(w, "shaping: %s", reason);
        return;
    }
    if (!w->until || until < w->until) {
        w->until = until;
        snprintf(w->time_why, sizeof w->time_why, "%s", reason);
    }
}

/* The shaping entry of (ip, the job's site). */
static shaping_dest *job_shaping(scheduler *s, const sched_job *j, const char *ip)
{
    return shaping_get(s->shaping, ip, j->site, j->mx, j->nmx);
}

/* Chooses a source IP of pool for the job's current hop with pools_choose, skipping IPs
 * whose address family differs from the hop's, whose headroom is all reserved, or that
 * shaping blocks for the site (connection window full, throttling backoff, no rate
 * token); each skipped IP is avoided in the next call, so the choice moves on to the
 * pool's other IPs. On PICK_CHOSEN a rate token was taken, ch->ip is the IP and *sd_out
 * its shaping entry. */
static pick_result pick_ip(scheduler *s, sched_job *j, const char *pool, const sched_hop *h,
                           int64_t now, pools_choice *ch, pick_wait *w, shaping_dest **sd_out)
{
    int fam = addr_family(h->addr);
    size_t nips = pools_count(s->pools);
    size_t tries = 3 * nips + 2;
    bool blocked = false, saw_failed = false;
    const char *last = NULL;   /* addresses are the pools' own: stable during this call */
    const char **seen = util_calloc(nips + 1, sizeof *seen);
    size_t nseen = 0;
    pick_result res = PICK_FAMILY;
    bool done = false;
    for (size_t k = 0; k < tries && !done; k++) {
        pools_choose(s->pools, pool, h->name, j->provider, last ? last : j->avoid_ip,
                     j->avoid_zone, now, ch);
        if (ch->verdict != POOLS_CHOSEN) {
            if (blocked) res = PICK_WAIT;
            else if (k == 0) res = PICK_POOLS;
            else res = saw_failed ? PICK_NO_OTHER : PICK_FAMILY;
            done = true;
            break;
        }
        const char *addr = pools_ip_address(ch->ip);
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
        } else if (addr_family(addr) == fam) {
            if (ip_room(s, ch->ip, j->provider, now) < 1) {
                blocked = true;
                wait_slot(w, "warm-up headroom of %s taken by sessions in flight", addr);
            } else {
                shaping_dest *sd = job_shaping(s, j, addr);
                char why[256];
                int64_t until = 0;
                shaping_verdict v = shaping_may_connect(sd, now, &until, why, sizeof why);
                if (v == SHAPING_OK && s->nsessions >= SCHED_MAX_SESSIONS) {
                    /* shaping would allow it, the overall session limit does not */
                    blocked = true;
                    wait_slot(w, "session limit of %d connections reached", SCHED_MAX_SESSIONS);
                    evict_idle(s);
                    res = PICK_WAIT;
                    done = true;
                    break;
                }
                if (v == SHAPING_OK) v = shaping_take_message(sd, now, &until, why, sizeof why);
                if (v == SHAPING_OK) {
                    *sd_out = sd;
                    res = PICK_CHOSEN;
                    done = true;
                    break;
                }
                blocked = true;
                wait_shaping(w, v, until, why);
                if (debug_on(s))
                    log_write(lg(s), KLOG_DEBUG, "sched.skip", "id=%s domain=%s ip=%s site=%s reason=%s",
                              log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), addr,
                              log_q(lg(s), j->site), log_q(lg(s), why));
            }
        }
        last = addr;
    }
    if (!done) res = blocked ? PICK_WAIT : saw_failed ? PICK_NO_OTHER : PICK_FAMILY;
    free(seen);
    return res;
}

/* Finds or opens a connection for the job's current hop from an IP of pool: an idle
 * session whose (IP, site) has a rate token, else a new one from the IP the pools choose.
 * Returns PICK_CHOSEN when the job went to a session. */
static pick_result connect_from(scheduler *s, sched_job *j, const char *pool, const sched_hop *h,
                                int64_t now, pools_choice *ch, pick_wait *w)
{
    if (!j->no_reuse) {
        for (sched_session *ss = s->sessions; ss; ss = ss->next) {
            if (ss->state != SESS_IDLE || !session_fits(s, ss, j, pool, h, now)) continue;
            char why[256];
            int64_t until = 0;
            shaping_verdict v = shaping_take_message(ss->sd, now, &until, why, sizeof why);
            if (v != SHAPING_OK) {
                wait_shaping(w, v, until, why);
                continue;
            }
            log_write(lg(s), KLOG_DEBUG, "sched.pick",
                      "id=%s domain=%s ip=%s hop=%s:%d site=%s pool=%s reason=\"reuse idle connection\"",
                      log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), ss->src, h->addr,
                      h->port, log_q(lg(s), j->site), pool);
            job_take(s, j, ss->ip, now);
            job_send(s, j, ss);
            return PICK_CHOSEN;
        }
    }
    shaping_dest *sd = NULL;
    pick_result r = pick_ip(s, j, pool, h, now, ch, w, &sd);
    if (r != PICK_CHOSEN) {
        /* an idle connection that had no rate token also makes the job wait */
        if (w->until && (r == PICK_FAMILY || r == PICK_NO_OTHER)) r = PICK_WAIT;
        return r;
    }
    log_write(lg(s), KLOG_DEBUG, "sched.pick",
              "id=%s domain=%s ip=%s zone=%s hop=%s:%d mx=%s site=%s pool=%s provider=%s reason=\"new connection\"",
              log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), pools_ip_address(ch->ip),
              log_q(lg(s), pools_ip_zone(ch->ip)), h->addr, h->port, log_q(lg(s), h->name),
              log_q(lg(s), j->site), pool, j->provider);
    job_take(s, j, ch->ip, now);
    session_open(s, j, ch->ip, h, sd);
    return PICK_CHOSEN;
}

/* Arms the wake-up timer for a rate token a waiting job needs at at_ms. */
static void arm_wake(scheduler *s, int64_t at_ms)
{
    if (s->stopping) return;
    if (ev_is_active(&s->wake_timer) && s->wake_at_ms <= at_ms) return;
    int64_t wait = at_ms - kiln_now_ms(s->ctx);
    if (wait < 1) wait = 1;
    ev_timer_stop(s->ctx->loop, &s->wake_timer);
    ev_timer_set(&s->wake_timer, (double)wait / 1000.0, 0.0);
    ev_timer_start(s->ctx->loop, &s->wake_timer);
    s->wake_at_ms = at_ms;
}

static void on_wake(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    scheduler *s = w->data;
    s->wake_at_ms = 0;
    schedule_pump(s);
}

/* The job cannot get a connection now. A wait of SCHED_HOLD_MIN_MS or more on every IP
 * (throttling backoff) blocks the destination and holds the job there until it ends;
 * otherwise the job waits among the active jobs (for a slot, or a rate token: the wake
 * timer), unless SCHED_DEST_WAITING of its set already wait at the site: then it is held
 * and released when they get connections. Returns true if the job is still waiting. */
static bool job_wait(scheduler *s, sched_job *j, const sched_hop *h, const pick_wait *w, int64_t now)
{
    sched_dest *d = dest_get(s, j->set, j->pool, j->site);
    if (!w->slot && w->until && w->until - now >= SCHED_HOLD_MIN_MS) {
        char *why = util_asprintf("shaping: site %s is backing off on every IP of pool %s (%s)",
                                  j->site, j->pool, w->time_why);
        dest_block(s, d, w->until, why, now);
        job_why(j, w->until, "%s", why);
        log_write(lg(s), KLOG_DEBUG, "sched.hold", "id=%s domain=%s set=%s site=%s until_ms=%lld reason=%s",
                  log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), log_q(lg(s), j->set->name),
                  log_q(lg(s), j->site), (long long)(w->until - now), log_q(lg(s), why));
        job_hold(s, j, d);
        free(why);
        return false;
    }
    char reason[SCHED_WHY_LEN + 16];
    if (w->slot) snprintf(reason, sizeof reason, "%s", w->slot_why);
    else snprintf(reason, sizeof reason, "shaping: %s", w->time_why);
    if (j->wdest != d && d->nwaiting >= SCHED_DEST_WAITING) {
        job_why(j, 0, "queued behind %d jobs of set %s waiting for site %s (%s)", d->nwaiting,
                j->set->name, j->site, reason);
        if (debug_on(s))
            log_write(lg(s), KLOG_DEBUG, "sched.hold", "id=%s domain=%s set=%s site=%s reason=%s",
                      log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), log_q(lg(s), j->set->name),
                      log_q(lg(s), j->site), log_q(lg(s), j->why));
        job_hold(s, j, d);
        return false;
    }
    job_unrelease(s, j);
    job_set_waiting(s, j, d);
    j->wait_until_ms = !w->slot && w->until > now ? w->until : 0;
    if (w->until > now) arm_wake(s, w->until);
    job_why(j, w->slot ? 0 : w->until, "waiting: %s", reason);
    if (debug_on(s))
        log_write(lg(s), KLOG_DEBUG, "sched.pick", "id=%s domain=%s hop=%s:%d site=%s result=wait reason=%s",
                  log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), h->addr, h->port,
                  log_q(lg(s), j->site), log_q(lg(s), reason));
    return true;
}

/* Finds or opens a connection for the job's current hop, parks it until one frees up, or
 * defers it when the pools have no IP for it. Returns true if the job is (still) waiting;
 * false when it went to a session, was held, settled or freed. */
static bool job_connect(scheduler *s, sched_job *j)
{
    if (s->stopping) {
        job_release(s, j);
        return false;
    }
    int64_t now = kiln_now_ms(s->ctx);
    while (j->hop_idx < j->nhops) {
        const sched_hop *h = &j->hops[j->hop_idx];
        j->provider = pools_provider_of(h->name);
        pools_choice ch;
        memset(&ch, 0, sizeof ch);
        pick_wait w;
        memset(&w, 0, sizeof w);
        pick_result r = connect_from(s, j, j->pool, h, now, &ch, &w);
        if (r == PICK_POOLS && ch.verdict == POOLS_ALL_AT_CAP) {
            /* every usable IP at its cap: the overflow pool, one hop only */
            const config_pool *cp = config_find_pool(s->ctx->cfg, j->pool);
            if (cp && cp->overflow && strcmp(cp->overflow, j->pool) != 0 &&
                config_find_pool(s->ctx->cfg, cp->overflow)) {
                pools_choice och;
                memset(&och, 0, sizeof och);
                pick_result o = connect_from(s, j, cp->overflow, h, now, &och, &w);
                if (o == PICK_CHOSEN) {
                    log_write(lg(s), KLOG_DEBUG, "sched.pick",
                              "id=%s domain=%s pool=%s overflow=%s reason=%s",
                              log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), j->pool,
                              cp->overflow, log_q(lg(s), ch.reason));
                    return false;
                }
                if (o == PICK_WAIT) r = PICK_WAIT;
                else if (o == PICK_POOLS && och.retry_at_ms > 0 &&
                         (ch.retry_at_ms <= 0 || och.retry_at_ms < ch.retry_at_ms))
                    ch.retry_at_ms = och.retry_at_ms;
            }
        }
        switch (r) {
        case PICK_CHOSEN:
            return false;
        case PICK_WAIT:
            return job_wait(s, j, h, &w, now);
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
        return false;
    }
    /* every hop failed */
    job_fail_all(s, j, j->last_error ? j->last_fail : RETRY_FAIL_CONNECT,
                 j->last_error ? j->last_error : "no next hop");
    return false;
}

/* A session can take more work: the first waiting job for its hop and site (highest
 * priority, the set served least recently, the job waiting longest) when take_parked and
 * the (IP, site) has a rate token; else it idles (waiting jobs find it through the pump)
 * or QUITs (messages_per_connection reached, IP retired, site backing off). */
static void session_next(sched_session *ss, bool take_parked)
{
    scheduler *s = ss->s;
    if (ss->state != SESS_IDLE || ss->job) return;
    int64_t now = kiln_now_ms(s->ctx);
    if (!ss->retire && !ip_usable(s, ss->ip, now)) ss->retire = true;
    bool used_up = ss->nmsgs >= shaping_messages_per_connection(ss->sd);
    if (s->stopping || ss->retire || used_up) {
        if (used_up && debug_on(s))
            log_write(lg(s), KLOG_DEBUG, "sched.session", "session=%s action=quit reason=%s",
                      log_q(lg(s), smtp_client_to_text(ss->c)),
                      log_q(lg(s), "messages_per_connection reached"));
        session_quit(ss);
        return;
    }
    sched_hop h = {.name = ss->peer_name, .addr = ss->peer, .port = ss->port};
    sched_job *best = NULL;
    for (sched_job *j = take_parked ? s->active_head : NULL; j; j = j->anext) {
        if (!j->wdest || j->hop_idx >= j->nhops || j->no_reuse) continue;
        if (best && !job_before(j, best)) continue;
        const sched_hop *jh = &j->hops[j->hop_idx];
        if (jh->port != h.port || strcmp(jh->addr, h.addr) != 0) continue;
        j->provider = pools_provider_of(jh->name);
        if (!session_fits(s, ss, j, j->pool, &h, now)) continue;
        best = j;
    }
    if (best) {
        char why[256];
        int64_t until = 0;
        shaping_verdict v = shaping_take_message(ss->sd, now, &until, why, sizeof why);
        if (v == SHAPING_OK) {
            log_write(lg(s), KLOG_DEBUG, "sched.pick",
                      "id=%s domain=%s ip=%s hop=%s:%d set=%s priority=%d reason=\"reuse connection after its transaction\"",
                      log_q(lg(s), best->msg_id), log_q(lg(s), best->domain), ss->src, h.addr,
                      h.port, log_q(lg(s), best->set->name), best->set->q.priority);
            job_take(s, best, ss->ip, now);
            job_send(s, best, ss);
            return;
        }
        if (v == SHAPING_WAIT_BACKOFF) {
            log_write(lg(s), KLOG_DEBUG, "sched.session", "session=%s action=quit reason=%s",
                      log_q(lg(s), smtp_client_to_text(ss->c)), log_q(lg(s), why));
            session_quit(ss);
            schedule_pump(s);
            return;
        }
        if (until > now) arm_wake(s, until);
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

/* A transaction ended with per-recipient results. */
static void on_done(scheduler *s, sched_session *ss, sched_job *j, const smtp_client_event *ev)
{
    job_unreserve(s, j);
    int64_t now = kiln_now_ms(s->ctx);
    if (ev->nothing_done) {
        const char *why = ev->nrcpts ? ev->rcpts[0].reply.line : "connection failed";
        if (ss->nmsgs > 1 && !j->no_reuse) {
            /* a reused connection died before the transaction began: once more, fresh
             * (servers close idle connections; not a failure of the site) */
            log_write(lg(s), KLOG_DEBUG, "sched.pick",
                      "id=%s domain=%s result=retry reason=\"reused connection failed: %s\"",
                      log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), why);
            j->no_reuse = true;
            job_connect(s, j);
        } else {
            shaping_record(ss->sd, SHAPING_RESULT_FAILED, now);
            job_next_hop(s, j, RETRY_FAIL_CONNECT, why);
        }
        return;
    }
    outcome *out = util_calloc(j->nrcpts ? j->nrcpts : 1, sizeof *out);
    unsigned accepted = 0;
    bool throttled = false, lost = false;
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
            lost = true;
        }
    }
    if (accepted) pools_record_send(s->pools, ss->ip, j->provider, accepted, now);
    pools_record_result(s->pools, ss->ip, ss->peer_name, j->provider,
                        throttled ? POOLS_RESULT_THROTTLED : POOLS_RESULT_OK, accepted, now);
    shaping_record(ss->sd, throttled ? SHAPING_RESULT_THROTTLED
                           : lost    ? SHAPING_RESULT_FAILED
                                     : SHAPING_RESULT_OK, now);
    if (throttled)
        log_write(lg(s), KLOG_INFO, "shaping.throttled", "ip=%s site=%s provider=%s id=%s",
                  ss->src, log_q(lg(s), ss->site), j->provider, log_q(lg(s), j->msg_id));
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
            shaping_record(ss->sd, SHAPING_RESULT_FAILED, now);
        } else if (throttled) {
            pools_record_result(s->pools, ss->ip, ss->peer_name, j->provider,
                                POOLS_RESULT_THROTTLED, 0, now);
            shaping_record(ss->sd, SHAPING_RESULT_THROTTLED, now);
            log_write(lg(s), KLOG_INFO, "shaping.throttled", "ip=%s site=%s provider=%s id=%s reply=%s",
                      ss->src, log_q(lg(s), ss->site), j->provider, log_q(lg(s), j->msg_id),
                      log_q(lg(s), err));
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
            int64_t now = kiln_now_ms(s->ctx);
            shaping_info si;
            shaping_get_info(ss->sd, now, &si);
            if (!ip_usable(s, ss->ip, now) || si.backoff_until_ms > now) {
                /* its IP went down or was released while connecting, or another session
                 * got the site's throttling reply meanwhile: no transaction here */
                if (!ip_usable(s, ss->ip, now)) ss->retire = true;
                log_write(lg(s), KLOG_DEBUG, "sched.session", "session=%s action=quit id=%s reason=%s",
                          log_q(lg(s), smtp_client_to_text(ss->c)), log_q(lg(s), j->msg_id),
                          log_q(lg(s), ss->retire ? "source IP draining or down"
                                                  : "the site is throttling this IP: backing off"));
                job_unreserve(s, j);
                session_quit(ss);
                job_connect(s, j);
                break;
            }
            job_send(s, j, ss);   /* its rate token was taken when the connection opened */
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

/* The attempt's shaping site: the given host names (MX hosts, or the route host). */
static void job_set_site(sched_job *j, char *const *hosts, size_t n)
{
    free_strv(j->mx, j->nmx);
    j->mx = util_calloc(n ? n : 1, sizeof *j->mx);
    j->nmx = n;
    for (size_t i = 0; i < n; i++) j->mx[i] = util_strdup(hosts[i]);
    free(j->site);
    j->site = shaping_site_key(hosts, n);
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
        if (j->via_route) {
            const config_route *rt = config_find_route(s->ctx->cfg, j->domain);
            char *host = rt ? rt->host : j->domain;
            job_set_site(j, &host, 1);
        } else {
            char **names = util_calloc(res->nhosts ? res->nhosts : 1, sizeof *names);
            for (size_t h = 0; h < res->nhosts; h++) names[h] = res->hosts[h].name;
            job_set_site(j, names, res->nhosts);
            free(names);
        }
        log_write(lg(s), KLOG_DEBUG, "sched.pick", "id=%s domain=%s hops=%zu first=%s site=%s implicit=%d",
                  log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), j->nhops,
                  j->nhops ? j->hops[0].addr : "-", log_q(lg(s), j->site), res->implicit);
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
    job_unpreload(s, j, true);
    active_link(s, j);
    j->pool_wait = false;
    if (!j->loaded && spool_load_message(ctx->spool, j->msg_id, &j->msg) != 0) {
        /* a recipient without its message breaks the spool's contract */
        log_write(lg(s), KLOG_ERROR, "scheduler.job",
                  "id=%s domain=%s error=\"message missing from the spool; recipients left as they are\" spool_error=%s",
                  log_q(lg(s), j->msg_id), log_q(lg(s), j->domain),
                  log_q(lg(s), spool_errmsg(ctx->spool)));
        active_unlink(s, j);
        job_clear_attempt(s, j);
        s->nqueued -= (int64_t)j->nrcpts;
        job_forget(s, j);
        return;
    }
    j->loaded = true;
    const config_set *set = set_config(cfg, j->msg.config_set);
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
    job_why(j, 0, "resolving the next hop of %s", j->domain);

    const config_route *rt = config_find_route(cfg, j->domain);
    j->via_route = rt != NULL;
    const char *target = rt ? rt->host : j->domain;
    if (rt && addr_family(rt->host)) {
        hops_add(j, rt->host, rt->host, rt->port);
        char *host = rt->host;
        job_set_site(j, &host, 1);
        log_write(lg(s), KLOG_DEBUG, "sched.pick", "id=%s domain=%s route=%s:%d site=%s",
                  log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), rt->host, rt->port,
                  log_q(lg(s), j->site));
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

/* A job about to start whose site is known from an earlier attempt is held at once (not
 * loaded) when the site is blocked for its pool, or when its set already has
 * SCHED_DEST_WAITING jobs waiting there (or others held before it). */
static bool job_prehold(scheduler *s, sched_job *j, int64_t now)
{
    if (!j->site) return false;
    const config_set *cs = set_config(s->ctx->cfg, j->set->name);
    if (!cs) return false;
    sched_dest *d = dest_find(s, j->set, cs->pool, j->site);
    if (!d) return false;
    if (dest_blocked(d, now)) {
        job_why(j, d->blocked_until_ms, "%s", d->why);
    } else if (!j->rdest && (d->nheld || d->nwaiting + d->nreleased >= SCHED_DEST_WAITING)) {
        job_why(j, 0, "queued behind %d jobs of set %s waiting for site %s", d->nwaiting,
                j->set->name, j->site);
    } else {
        return false;
    }
    if (debug_on(s))
        log_write(lg(s), KLOG_DEBUG, "sched.hold", "id=%s domain=%s set=%s site=%s reason=%s",
                  log_q(lg(s), j->msg_id), log_q(lg(s), j->domain), log_q(lg(s), j->set->name),
                  log_q(lg(s), j->site), log_q(lg(s), j->why));
    job_hold(s, j, d);
    return true;
}

static int cmp_waiting(const void *a, const void *b)
{
    const sched_job *x = *(sched_job *const *)a, *y = *(sched_job *const *)b;
    if (job_before(x, y)) return -1;
    if (job_before(y, x)) return 1;
    return 0;
}

/* What a waiting job needs, for skipping the others that need the same in one pump. */
typedef struct wait_key {
    const char *pool, *addr, *site;
    int port;
    bool tls, no_reuse;
} wait_key;

static wait_key key_of(const sched_job *j)
{
    const sched_hop *h = &j->hops[j->hop_idx];
    return (wait_key){j->pool, h->addr, j->site, h->port, j->require_tls, j->no_reuse};
}

static bool key_eq(const wait_key *a, const wait_key *b)
{
    return a->port == b->port && a->tls == b->tls && a->no_reuse == b->no_reuse &&
           strcmp(a->pool, b->pool) == 0 && strcmp(a->addr, b->addr) == 0 &&
           strcmp(a->site, b->site) == 0;
}

static void pump(scheduler *s)
{
    if (s->stopping) return;
    page_in(s);
    int64_t now = kiln_now_ms(s->ctx);
    /* destinations whose held jobs may move on */
    while (s->refill) {
        sched_dest *d = s->refill;
        s->refill = d->refill_next;
        d->in_refill = false;
        d->refill_next = NULL;
        dest_refill(s, d, now);
    }
    /* waiting jobs first, in serving order: a slot or a token may have freed up. One job
     * that keeps waiting stands for the later ones that need the same pool, hop and site. */
    size_t nw = 0;
    sched_job **w = NULL;
    for (sched_job *j = s->active_head; j; j = j->anext)
        if (j->wdest && j->hop_idx < j->nhops) nw++;
    if (nw) {
        w = util_calloc(nw, sizeof *w);
        size_t k = 0;
        for (sched_job *j = s->active_head; j; j = j->anext)
            if (j->wdest && j->hop_idx < j->nhops) w[k++] = j;
        qsort(w, nw, sizeof *w, cmp_waiting);
        wait_key *still = util_calloc(nw, sizeof *still);
        size_t nstill = 0;
        for (size_t i = 0; i < nw; i++) {
            /* job_connect changes no job but w[i] (and may free it): the others stay valid */
            sched_job *j = w[i];
            wait_key key = key_of(j);
            bool same = false;
            for (size_t m = 0; m < nstill && !same; m++) same = key_eq(&still[m], &key);
            if (same) continue;
            if (job_connect(s, j)) still[nstill++] = key_of(j);
        }
        free(still);
        free(w);
    }
    /* then new work: the highest priority first, round-robin among equal sets; jobs whose
     * site is known to be busy or blocked are held without being loaded */
    while (queue_fair_size(&s->ready) && s->nactive < SCHED_MAX_ACTIVE) {
        sched_job *j = ready_pop(s);
        if (job_prehold(s, j, now)) continue;
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

static void on_save(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    scheduler *s = w->data;
    save_pools(s);
    int64_t now = kiln_now_ms(s->ctx);
    bool gc = ++s->ticks % SCHED_GC_TICKS == 0;
    if (gc) shaping_gc(s->shaping, now, SCHED_SHAPING_IDLE_MS);
    dests_tick(s, now, gc);
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
    const queue_idset *skip;    /* rows already in memory: passed over */
    int64_t max_rowid;          /* rows after this are not read (not known committed) */
    int64_t last_rowid;         /* the last row read or passed over */
    int64_t min_seen, max_seen; /* rowids of the rows read or passed over */
    size_t nseen;               /* rows the spool returned */
    bool past_max;              /* a row after max_rowid came */
} load_acc;

static void load_cb(void *arg, const spool_rcpt *r)
{
    load_acc *a = arg;
    a->nseen++;
    if (r->rowid > a->max_rowid) {
        a->past_max = true;
        return;
    }
    a->last_rowid = r->rowid;
    if (!a->min_seen || r->rowid < a->min_seen) a->min_seen = r->rowid;
    if (r->rowid > a->max_seen) a->max_seen = r->rowid;
    if (a->skip && queue_idset_has(a->skip, r->rowid)) return;
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
    l->r.last_reply = r->state == SPOOL_RCPT_DEFERRED ? util_strdup(r->last_reply) : NULL;
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

static void loaded_free(loaded_rcpt *l)
{
    free(l->msg_id);
    free(l->domain);
    free(l->r.address);
    free(l->r.last_reply);
}

static void load_acc_free(load_acc *a)
{
    for (size_t i = 0; i < a->n; i++) loaded_free(&a->v[i]);
    free(a->v);
    a->v = NULL;
    a->n = a->cap = 0;
}

/* Groups the recipients read (a, emptied) by (message, domain) into jobs of the message's
 * configuration set, placed in its ready queue or the heap. Returns how many. */
static int64_t place_loaded(scheduler *s, load_acc *acc)
{
    load_acc a = *acc;
    acc->v = NULL;
    acc->n = acc->cap = 0;
    if (a.n) qsort(a.v, a.n, sizeof *a.v, cmp_loaded);
    sched_job *j = NULL;
    sched_set *set = NULL;
    char *set_of = NULL;         /* the message whose set is `set` */
    spool_loaded m;              /* that message, until a job of it takes it */
    bool have_m = false, missing = false;
    int64_t n = 0;
    memset(&m, 0, sizeof m);
    for (size_t i = 0; i < a.n; i++) {
        loaded_rcpt *l = &a.v[i];
        bool new_msg = !set_of || strcmp(set_of, l->msg_id) != 0;
        if (j && (new_msg || strcmp(j->domain, l->domain) != 0)) {
            job_place(s, j);
            if (have_m && j->where == JOB_READY) {
                job_preload(s, j, &m);
                have_m = false;
            }
            j = NULL;
        }
        if (new_msg) {
            /* a new message: its configuration set */
            if (have_m) spool_loaded_free(&m);
            missing = spool_load_message(s->ctx->spool, l->msg_id, &m) != 0;
            have_m = !missing;
            if (missing) {
                log_write(lg(s), KLOG_ERROR, "scheduler.job",
                          "id=%s error=\"message missing from the spool; recipients left as they are\" spool_error=%s",
                          log_q(lg(s), l->msg_id), log_q(lg(s), spool_errmsg(s->ctx->spool)));
            } else {
                set = set_get(s, m.config_set);
            }
            set_str(&set_of, l->msg_id);
        }
        if (missing) {
            loaded_free(l);
            continue;
        }
        if (!j) {
            j = util_calloc(1, sizeof *j);
            j->msg_id = l->msg_id;
            j->domain = l->domain;
            j->set = set;
        } else {
            free(l->msg_id);
            free(l->domain);
        }
        if (j->nrcpts == j->cap) {
            j->cap = j->cap ? j->cap * 2 : 4;
            j->rcpts = util_realloc(j->rcpts, j->cap * sizeof *j->rcpts);
        }
        if (!queue_idset_add(&s->mem, l->r.rowid))
            util_fatal("scheduler: recipient %lld of message %s loaded twice",
                       (long long)l->r.rowid, j->msg_id);
        j->rcpts[j->nrcpts++] = l->r;
        n++;
    }
    if (j) {
        job_place(s, j);
        if (have_m && j->where == JOB_READY) {
            job_preload(s, j, &m);
            have_m = false;
        }
    }
    if (have_m) spool_loaded_free(&m);
    free(set_of);
    free(a.v);
    if (n) {
        arm_due_timer(s);
        schedule_pump(s);
    }
    return n;
}

/* Reads pages of recipients from the spool while the pager says so (see the file
 * comment). Returns how many were loaded, or -1 on a read error (retried later). */
static int64_t page_in(scheduler *s)
{
    spool *sp = s->ctx->spool;
    int64_t now = kiln_now_ms(s->ctx), total = 0;
    if (s->pager.out_deferred && now >= s->pager.check_ms && in_mem(s) < s->pager.budget) {
        int64_t next = 0;
        int r = spool_next_due_ms(sp, &next);
        if (r >= 0) queue_pager_check(&s->pager, r == 1 ? next : 0, now);
    }
    queue_page pg;
    while (total < SCHED_PAGE_MAX &&
           queue_pager_plan(&s->pager, in_mem(s), now, spool_has_pending(sp), &pg)) {
        if (pg.limit > (size_t)(SCHED_PAGE_MAX - total)) pg.limit = (size_t)(SCHED_PAGE_MAX - total);
        load_acc a = {.skip = &s->mem, .max_rowid = pg.max_rowid, .last_rowid = pg.after_rowid};
        bool at_end = false;
        while (a.n < pg.limit) {
            size_t want = pg.limit - a.n, seen = a.nseen;
            if (want > SCHED_PAGE_CHUNK) want = SCHED_PAGE_CHUNK;
            if (spool_each_due_rcpt(sp, pg.due_before_ms, a.last_rowid, want, load_cb, &a) != 0) {
                log_write(lg(s), KLOG_ERROR, "sched.page",
                          "error=%s note=\"recipients stay in the spool; paging is tried again\"",
                          log_q(lg(s), spool_errmsg(sp)));
                load_acc_free(&a);
                arm_page_timer(s, now);
                return -1;
            }
            if (a.past_max || a.nseen - seen < want) {
                at_end = true;
                break;
            }
        }
        int64_t last = a.last_rowid;
        int64_t n = place_loaded(s, &a);
        queue_pager_read(&s->pager, &pg, last, at_end, now);
        total += n;
        if (debug_on(s))
            log_write(lg(s), KLOG_DEBUG, "sched.page",
                      "kind=%s after=%lld last=%lld loaded=%lld in_memory=%lld budget=%lld end=%s",
                      pg.sweep ? "sweep" : "forward", (long long)pg.after_rowid, (long long)last,
                      (long long)n, (long long)in_mem(s), (long long)s->pager.budget,
                      at_end ? "yes" : "no");
    }
    arm_page_timer(s, now);
    return total;
}

static void on_page(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    scheduler *s = w->data;
    s->page_at_ms = 0;
    page_in(s);
    schedule_pump(s);
}

/* One ev_timer: the next sweep for deferred recipients in the spool, or a retry soon when
 * paging is wanted but was blocked (budget full, nothing committed to read, read error). */
static void arm_page_timer(scheduler *s, int64_t now)
{
    if (s->stopping) return;
    int64_t at = queue_pager_wake_ms(&s->pager);
    if ((at && at <= now) || queue_pager_hungry(&s->pager, in_mem(s))) {
        int64_t retry = now + SCHED_PAGE_RETRY_MS;
        if (!at || at <= now || retry < at) at = retry;
    }
    if (!at) return;   /* a timer still armed only pages in early: harmless */
    if (ev_is_active(&s->page_timer) && s->page_at_ms <= at) return;
    ev_timer_stop(s->ctx->loop, &s->page_timer);
    s->page_at_ms = at;
    ev_timer_set(&s->page_timer, (double)(at - now) / 1000.0, 0.0);
    ev_timer_start(s->ctx->loop, &s->page_timer);
}

/* A committed message: loaded at once when the pager is caught up and it fits, else left
 * to the pager. */
static void load_message(scheduler *s, const char *msg_id)
{
    load_acc a = {.skip = &s->mem, .max_rowid = INT64_MAX};
    if (spool_each_pending_rcpt(s->ctx->spool, msg_id, load_cb, &a) != 0) {
        load_acc_free(&a);
        log_write(lg(s), KLOG_ERROR, "scheduler.queue",
                  "id=%s error=%s note=\"recipients stay in the spool and are queued at the next start\"",
                  log_q(lg(s), msg_id), log_q(lg(s), spool_errmsg(s->ctx->spool)));
        return;
    }
    if (!a.nseen) return;
    if (queue_pager_direct(&s->pager, in_mem(s), a.n, a.min_seen, a.max_seen)) {
        place_loaded(s, &a);
        return;
    }
    if (debug_on(s))
        log_write(lg(s), KLOG_DEBUG, "sched.page", "id=%s recipients=%zu in_memory=%lld budget=%lld reason=%s",
                  log_q(lg(s), msg_id), a.n, (long long)in_mem(s), (long long)s->pager.budget,
                  log_q(lg(s), "memory budget: read from the spool in rowid order"));
    load_acc_free(&a);
    schedule_pump(s);
}

/* ------------------------------------------------------------------ public API */

scheduler *scheduler_new(kiln_ctx *ctx)
{
    scheduler *s = util_calloc(1, sizeof *s);
    s->ctx = ctx;
    queue_fair_init(&s->ready);
    queue_heap_init(&s->deferred);
    queue_idset_init(&s->mem);
    int64_t budget = SCHED_MEM_RCPTS;
    const char *env = getenv("KILN_SCHED_MEM_RCPTS");
    if (env && *env) {
        char *end = NULL;
        long long v = strtoll(env, &end, 10);
        if (*end == '\0' && v > 0) budget = v;
        else
            log_write(ctx->log, KLOG_WARNING, "scheduler.memory",
                      "value=%s note=\"KILN_SCHED_MEM_RCPTS is not a positive number; using %d\"",
                      log_q(ctx->log, env), SCHED_MEM_RCPTS);
    }
    queue_pager_init(&s->pager, budget, SCHED_HORIZON_MS);
    ev_timer_init(&s->page_timer, on_page, 0.0, 0.0);
    s->page_timer.data = s;
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
    ev_timer_init(&s->wake_timer, on_wake, 0.0, 0.0);
    s->wake_timer.data = s;
    s->shaping = shaping_new(ctx->cfg, NULL, NULL);
    dest_table_grow(s);

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
    s->stopping = true;   /* nothing below may schedule work */
    ev_timer_stop(s->ctx->loop, &s->due_timer);
    ev_timer_stop(s->ctx->loop, &s->pump_timer);
    ev_timer_stop(s->ctx->loop, &s->save_timer);
    ev_timer_stop(s->ctx->loop, &s->wake_timer);
    ev_timer_stop(s->ctx->loop, &s->page_timer);
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
    for (sched_set *st = s->sets, *nst; st; st = nst) {
        nst = st->next;
        for (queue_link *l = st->q.head, *nx; l; l = nx) {
            nx = l->next;
            job_free(QUEUE_ITEM(l, sched_job, rlink));
        }
        free(st->name);
        free(st);
    }
    for (size_t i = 0; i < queue_heap_size(&s->deferred); i++)
        job_free(queue_heap_at(&s->deferred, i));
    queue_heap_clear(&s->deferred);
    queue_idset_clear(&s->mem);
    for (size_t i = 0; i < s->ndest_buckets; i++) {
        for (sched_dest *d = s->dests[i], *nd; d; d = nd) {
            nd = d->hnext;
            for (sched_job *j = d->held_head, *nx; j; j = nx) {
                nx = j->next;
                job_free(j);
            }
            dest_free(s, d);
        }
    }
    free(s->dests);
    save_pools(s);   /* the daemon flushes the spool after this */
    pools_free(s->pools);
    shaping_free(s->shaping);
    free(s->res);
    if (s->tls) tls_ctx_free(s->tls);
    free(s->dns_error);
    free(s);
}

int64_t scheduler_recover(scheduler *s)
{
    int64_t n = page_in(s);
    if (n >= 0) {
        int64_t q = 0, d = 0;
        scheduler_counts(s, &q, &d, NULL);
        log_write(lg(s), KLOG_INFO, "scheduler.recover",
                  "recipients=%lld queued=%lld deferred=%lld in_memory=%lld memory_budget=%lld",
                  (long long)n, (long long)q, (long long)d, (long long)in_mem(s),
                  (long long)s->pager.budget);
    }
    return n;
}

void scheduler_message_committed(scheduler *s, const char *msg_id)
{
    load_message(s, msg_id);
}

/* Jobs the pools deferred (no IP, all at cap) are due now: the pools just changed. So are
 * sites blocked by shaping (other IPs may serve them now): their held jobs are tried
 * again, and hold again at once if nothing changed for them. */
static bool take_pool_waiting(void *arg, void *item)
{
    scheduler *s = arg;
    sched_job *j = item;
    if (!j->pool_wait) return false;
    s->ndeferred -= (int64_t)j->nrcpts;
    s->nqueued += (int64_t)j->nrcpts;
    j->pool_wait = false;
    ready_push(s, j);
    return true;
}

static void requeue_pool_waiting(scheduler *s)
{
    size_t moved = queue_heap_remove_if(&s->deferred, take_pool_waiting, s);
    size_t keep = queue_heap_size(&s->deferred);
    if (moved)
        log_write(lg(s), KLOG_INFO, "pools.requeue", "jobs=%zu deferred_left=%zu reason=%s", moved, keep,
                  log_q(lg(s), "the pools changed: mail waiting for an IP is tried again now"));
    for (size_t i = 0; i < s->ndest_buckets; i++)
        for (sched_dest *d = s->dests[i]; d; d = d->hnext) {
            if (!d->blocked_until_ms) continue;
            d->blocked_until_ms = 0;
            ev_timer_stop(s->ctx->loop, &d->timer);
            dest_mark_refill(s, d);
        }
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
    shaping_config_changed(s->shaping, cfg);
    sets_refresh(s);
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
    ev_timer_stop(s->ctx->loop, &s->wake_timer);
    ev_timer_stop(s->ctx->loop, &s->page_timer);
    for (size_t i = 0; i < s->ndest_buckets; i++)
        for (sched_dest *d = s->dests[i]; d; d = d->hnext) ev_timer_stop(s->ctx->loop, &d->timer);
    save_pools(s);
    /* waiting jobs never started their transaction: they stay queued in the spool */
    for (sched_job *j = s->active_head, *nx; j; j = nx) {
        nx = j->anext;
        if (j->wdest) job_release(s, j);
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
    int64_t q = s->nqueued, d = s->ndeferred, sq, sd;
    /* recipients in the spool only: count them all there */
    if (queue_pager_outside(&s->pager) && spool_count_rcpts(s->ctx->spool, &sq, &sd) == 0 &&
        sq + sd != in_mem(s)) {
        q = sq;
        d = sd;
    }
    if (queued) *queued = q;
    if (deferred) *deferred = d;
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

/* ------------------------------------------------------------------ kilnctl queue */

/* Calls fn for every job the scheduler holds, wherever it is. */
static void each_job(scheduler *s, void (*fn)(void *arg, scheduler *s, sched_job *j), void *arg)
{
    for (sched_set *st = s->sets; st; st = st->next)
            for (queue_link *l = st->q.head; l; l = l->next) fn(arg, s, QUEUE_ITEM(l, sched_job, rlink));
    for (size_t i = 0; i < queue_heap_size(&s->deferred); i++)
        fn(arg, s, queue_heap_at(&s->deferred, i));
    for (sched_job *j = s->active_head; j; j = j->anext) fn(arg, s, j);
    for (size_t i = 0; i < s->ndest_buckets; i++)
        for (sched_dest *d = s->dests[i]; d; d = d->hnext)
            for (sched_job *j = d->held_head; j; j = j->next) fn(arg, s, j);
}

static const char *job_state(const sched_job *j)
{
    switch (j->where) {
    case JOB_READY: return "ready";
    case JOB_DEFERRED: return "deferred";
    case JOB_HELD: return "waiting";
    case JOB_ACTIVE: return j->wdest ? "waiting" : "active";
    }
    return "?";
}

static const char *job_pool(const scheduler *s, const sched_job *j)
{
    if (j->where == JOB_ACTIVE && j->pool) return j->pool;
    if (j->where == JOB_HELD && j->hdest) return j->hdest->pool;
    const config_set *cs = set_config(s->ctx->cfg, j->set->name);
    return cs ? cs->pool : "-";
}

typedef struct queue_acc {
    const char *domain;
    scheduler_queue_row *v;
    size_t n, cap;
} queue_acc;

static void queue_cb(void *arg, scheduler *s, sched_job *j)
{
    queue_acc *a = arg;
    if (a->domain && !util_streq_ci(a->domain, j->domain)) return;
    if (!j->nrcpts) return;
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 32;
        a->v = util_realloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = (scheduler_queue_row){(char *)job_pool(s, j), j->set->name, j->domain,
                                         job_state(j), (int64_t)j->nrcpts};
}

static int cmp_row(const void *a, const void *b)
{
    const scheduler_queue_row *x = a, *y = b;
    int c = strcmp(x->pool, y->pool);
    if (!c) c = strcmp(x->set, y->set);
    if (!c) c = strcmp(x->domain, y->domain);
    if (!c) c = strcmp(x->state, y->state);
    return c;
}

/* Recipients in memory per (set, domain, spool state), for telling those in the spool
 * only apart. */
typedef struct mem_tally {
    const char *set, *domain;
    int deferred;               /* its spool state: DEFERRED once attempted, else QUEUED */
    int64_t n;
} mem_tally;

typedef struct tally_acc {
    mem_tally *v;
    size_t n, cap;
} tally_acc;

static void tally_cb(void *arg, scheduler *s, sched_job *j)
{
    (void)s;
    tally_acc *a = arg;
    int64_t n[2] = {0, 0};
    for (size_t i = 0; i < j->nrcpts; i++) n[j->rcpts[i].attempts > 0]++;
    for (int k = 0; k < 2; k++) {
        if (!n[k]) continue;
        if (a->n == a->cap) {
            a->cap = a->cap ? a->cap * 2 : 32;
            a->v = util_realloc(a->v, a->cap * sizeof *a->v);
        }
        a->v[a->n++] = (mem_tally){j->set->name, j->domain, k, n[k]};
    }
}

static int cmp_tally(const void *a, const void *b)
{
    const mem_tally *x = a, *y = b;
    int c = strcmp(x->set, y->set);
    if (!c) c = strcmp(x->domain, y->domain);
    if (!c) c = x->deferred - y->deferred;
    return c;
}

typedef struct outside_acc {
    scheduler *s;
    queue_acc *rows;
    const mem_tally *tally;
    size_t ntally;
    char **owned;               /* strings of the rows added here */
    size_t nowned;
} outside_acc;

static void outside_cb(void *arg, const char *set_name, const char *domain,
                       spool_rcpt_state state, int64_t count)
{
    outside_acc *o = arg;
    queue_acc *a = o->rows;
    if (a->domain && !util_streq_ci(a->domain, domain)) return;
    mem_tally key = {set_name, domain, state == SPOOL_RCPT_DEFERRED, 0};
    const mem_tally *t = bsearch(&key, o->tally, o->ntally, sizeof *o->tally, cmp_tally);
    int64_t out = count - (t ? t->n : 0);
    if (out <= 0) return;
    const config_set *cs = set_config(o->s->ctx->cfg, set_name);
    o->owned = util_realloc(o->owned, (o->nowned + 3) * sizeof *o->owned);
    char *pool = o->owned[o->nowned++] = util_strdup(cs ? cs->pool : "-");
    char *set = o->owned[o->nowned++] = util_strdup(set_name);
    char *dom = o->owned[o->nowned++] = util_strdup(domain);
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 32;
        a->v = util_realloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = (scheduler_queue_row){pool, set, dom,
                                         state == SPOOL_RCPT_DEFERRED ? "deferred" : "ready", out};
}

/* Whether some pending recipients are in the spool only. */
static bool some_outside(const scheduler *s)
{
    int64_t q, d;
    return queue_pager_outside(&s->pager) && spool_count_rcpts(s->ctx->spool, &q, &d) == 0 &&
           q + d != in_mem(s);
}

size_t scheduler_queue(scheduler *s, const char *domain, scheduler_queue_row **rows)
{
    queue_acc a = {.domain = domain && *domain ? domain : NULL};
    each_job(s, queue_cb, &a);
    outside_acc o = {.s = s, .rows = &a};
    if (some_outside(s)) {
        /* those in the spool only: "ready" (queued) or "deferred" */
        tally_acc t = {0};
        each_job(s, tally_cb, &t);
        if (t.n) qsort(t.v, t.n, sizeof *t.v, cmp_tally);
        size_t m = 0;
        for (size_t i = 0; i < t.n; i++) {
            if (m && cmp_tally(&t.v[m - 1], &t.v[i]) == 0) t.v[m - 1].n += t.v[i].n;
            else t.v[m++] = t.v[i];
        }
        o.tally = t.v;
        o.ntally = m;
        if (spool_count_by(s->ctx->spool, outside_cb, &o) != 0)
            log_write(lg(s), KLOG_ERROR, "scheduler.queue",
                      "error=%s note=\"recipients in the spool only are not listed\"",
                      log_q(lg(s), spool_errmsg(s->ctx->spool)));
        free(t.v);
    }
    if (a.n) qsort(a.v, a.n, sizeof *a.v, cmp_row);
    /* merge equal groups; the strings become the caller's */
    size_t m = 0;
    for (size_t i = 0; i < a.n; i++) {
        if (m && cmp_row(&a.v[m - 1], &a.v[i]) == 0) {
            a.v[m - 1].recipients += a.v[i].recipients;
            continue;
        }
        a.v[m++] = a.v[i];
    }
    for (size_t i = 0; i < m; i++) {
        a.v[i].pool = util_strdup(a.v[i].pool);
        a.v[i].set = util_strdup(a.v[i].set);
        a.v[i].domain = util_strdup(a.v[i].domain);
    }
    free_strv(o.owned, o.nowned);
    *rows = a.v;
    return m;
}

void scheduler_queue_free(scheduler_queue_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(rows[i].pool);
        free(rows[i].set);
        free(rows[i].domain);
    }
    free(rows);
}

typedef struct explain_acc {
    const char *msg_id;
    scheduler_explain_row *v;
    size_t n, cap;
} explain_acc;

/* What job j waits for now (malloc'd) and until when. */
static char *job_reason(const scheduler *s, const sched_job *j, int64_t *until)
{
    *until = j->why_until_ms;
    switch (j->where) {
    case JOB_READY:
        *until = 0;
        if (s->nactive >= SCHED_MAX_ACTIVE)
            return util_asprintf("ready: waiting for a delivery slot (%d jobs active, the limit); "
                                 "set %s has priority %d",
                                 s->nactive, j->set->name, j->set->q.priority);
        return util_asprintf("ready: starts at the next scheduling pass (set %s, priority %d)",
                             j->set->name, j->set->q.priority);
    case JOB_DEFERRED:
        *until = j->due_ms;
        if (j->pool_wait && j->why[0]) return util_strdup(j->why);
        return util_strdup("deferred: waiting for its retry time after a temporary failure");
    case JOB_HELD:
        if (j->hdest && dest_blocked(j->hdest, kiln_now_ms(s->ctx))) {
            *until = j->hdest->blocked_until_ms;
            return util_strdup(j->hdest->why);
        }
        return util_strdup(j->why[0] ? j->why : "held for its site");
    case JOB_ACTIVE:
        for (const sched_session *ss = s->sessions; ss; ss = ss->next)
            if (ss->job == j)
                return util_asprintf("%s on session %s",
                                     ss->state == SESS_CONNECTING ? "connecting" : "in flight",
                                     smtp_client_to_text(ss->c));
        return util_strdup(j->why[0] ? j->why : "being scheduled");
    }
    return util_strdup("?");
}

static void explain_cb(void *arg, scheduler *s, sched_job *j)
{
    explain_acc *a = arg;
    if (strcmp(a->msg_id, j->msg_id) != 0) return;
    int64_t until = 0;
    char *reason = job_reason(s, j, &until);
    for (size_t i = 0; i < j->nrcpts; i++) {
        const sched_rcpt *r = &j->rcpts[i];
        if (a->n == a->cap) {
            a->cap = a->cap ? a->cap * 2 : 8;
            a->v = util_realloc(a->v, a->cap * sizeof *a->v);
        }
        scheduler_explain_row *row = &a->v[a->n++];
        memset(row, 0, sizeof *row);
        row->recipient = util_strdup(r->address);
        row->domain = util_strdup(j->domain);
        row->set = util_strdup(j->set->name);
        row->pool = util_strdup(job_pool(s, j));
        row->state = job_state(j);
        row->reason = util_strdup(reason);
        row->until_ms = j->where == JOB_DEFERRED ? r->next_attempt_ms : until;
        row->attempts = r->attempts;
        row->last_reply = util_strdup(r->last_reply);
    }
    free(reason);
}

static int cmp_explain(const void *a, const void *b)
{
    const scheduler_explain_row *x = a, *y = b;
    return strcmp(x->recipient, y->recipient);
}

typedef struct explain_out {
    scheduler *s;
    explain_acc *a;
    spool_loaded m;
    int have_m;                 /* 0 not read yet, 1 read, -1 missing */
} explain_out;

/* A pending recipient of the message that is in the spool only. */
static void explain_out_cb(void *arg, const spool_rcpt *r)
{
    explain_out *o = arg;
    scheduler *s = o->s;
    if (queue_idset_has(&s->mem, r->rowid)) return;
    if (!o->have_m) o->have_m = spool_load_message(s->ctx->spool, r->msg_id, &o->m) == 0 ? 1 : -1;
    const char *set = o->have_m > 0 ? o->m.config_set : "-";
    const config_set *cs = o->have_m > 0 ? set_config(s->ctx->cfg, set) : NULL;
    explain_acc *a = o->a;
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 8;
        a->v = util_realloc(a->v, a->cap * sizeof *a->v);
    }
    scheduler_explain_row *row = &a->v[a->n++];
    memset(row, 0, sizeof *row);
    row->recipient = util_strdup(r->address);
    row->domain = util_strdup(r->domain);
    row->set = util_strdup(set);
    row->pool = util_strdup(cs ? cs->pool : "-");
    bool deferred = r->state == SPOOL_RCPT_DEFERRED;
    row->state = deferred ? "deferred" : "ready";
    row->reason = deferred
        ? util_strdup("deferred: waiting for its retry time after a temporary failure (kept in "
                      "the spool until it is due soon)")
        : util_asprintf("ready: in the spool, read into memory when there is room (memory budget "
                        "of %lld recipients)", (long long)s->pager.budget);
    row->until_ms = deferred ? r->next_attempt_ms : 0;
    row->attempts = r->attempts;
    row->last_reply = util_strdup(r->last_reply);
}

size_t scheduler_explain(scheduler *s, const char *msg_id, scheduler_explain_row **rows)
{
    explain_acc a = {.msg_id = msg_id};
    each_job(s, explain_cb, &a);
    if (queue_pager_outside(&s->pager)) {
        explain_out o = {.s = s, .a = &a};
        if (spool_each_pending_rcpt(s->ctx->spool, msg_id, explain_out_cb, &o) != 0)
            log_write(lg(s), KLOG_ERROR, "scheduler.explain",
                      "id=%s error=%s note=\"recipients in the spool only are not listed\"",
                      log_q(lg(s), msg_id), log_q(lg(s), spool_errmsg(s->ctx->spool)));
        if (o.have_m > 0) spool_loaded_free(&o.m);
    }
    if (a.n > 1) qsort(a.v, a.n, sizeof *a.v, cmp_explain);
    *rows = a.v;
    return a.n;
}

void scheduler_explain_free(scheduler_explain_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(rows[i].recipient);
        free(rows[i].domain);
        free(rows[i].set);
        free(rows[i].pool);
        free(rows[i].reason);
        free(rows[i].last_reply);
    }
    free(rows);
}
