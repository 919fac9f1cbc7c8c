/* scheduler.c — the scheduler as a data structure (see scheduler.h): jobs, configuration
 * sets, destination queues, the ready queue, the deferred heap, the pump and the public
 * API. Beside it: load.c (recover, paging), settle.c (outcomes into spool rows and
 * events), explain.c (kilnctl queue reports), ipstate.c (the dedicated-IP state and
 * warm-up reservations). Delivery sessions (next hop, source IP, SMTP client, connection
 * cache) are the executor's (mta/delivery.c), reached through scheduler_exec_ops; it
 * reports back through scheduler/job.h.
 *
 * State, all in memory and rebuilt from the spool at start-up:
 *   - jobs: the non-final recipients of one message for one destination domain, tagged at
 *     enqueue with the message's configuration set; one recipient each for a set whose
 *     List-Unsubscribe URL names {recipient} (config_set_per_recipient: each recipient's
 *     message differs; a job made before a reload marked its set is split as it starts).
 *     A job is in exactly one place:
 *       ready     the FIFO of its configuration set (due now; queue_fair of queue.h);
 *       deferred  the timer heap (its earliest next attempt; queue_heap of queue.h, one
 *                 ev_timer for the top);
 *       held      the FIFO of a destination queue (below): not started, no body in memory;
 *       active    with the executor: resolving its next hop, waiting for a connection
 *                 slot or a rate token, or in a session (at most SCHED_MAX_ACTIVE: bodies
 *                 in memory).
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
 *   - shaping (scheduler/shaping.h) and the dedicated-IP state (pools/pools.h): owned
 *     here (collected and saved on the save timer), consulted by the executor.
 *
 * Memory budget (queue_pager of queue.h): at most scheduler_options.mem_rcpts recipients
 * (SCHEDULER_MEM_RCPTS_DEFAULT unless the caller says otherwise) are held in memory; the
 * others, and deferred recipients not due within SCHED_HORIZON_MS, stay only in the
 * spool. They are paged in by rowid: forward from a cursor when fewer than half the
 * budget are in memory, and by sweeps from the start for deferred ones before they are
 * due (one ev_timer). A committed message is loaded at once only while the pager is
 * caught up and it fits; otherwise the pager reads it in rowid order. While some
 * recipients are in the spool only, kilnctl status adds those from the spool's maintained
 * totals (minus those in memory, by spool state: queue_status_counts), and kilnctl queue
 * from the spool's counts per set and domain (queue_report.c).
 *
 * The pump (a zero-delay timer, so nothing re-enters): pages in, releases held jobs with
 * room, offers the waiting jobs to the executor, then starts ready jobs (message loaded)
 * while fewer than SCHED_MAX_ACTIVE are active. Every job keeps the last reason it could
 * not proceed (and until when), which `kilnctl queue --explain` reports and the debug log
 * shows at each decision. */
#include "scheduler/scheduler.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "base/config.h"
#include "base/kiln.h"
#include "base/util.h"
#include "pools/pools.h"
#include "scheduler/internal.h"
#include "scheduler/job.h"
#include "scheduler/queue.h"
#include "scheduler/retry.h"
#include "scheduler/shaping.h"
#include "store/spool.h"

#define SCHED_SAVE_INTERVAL 1.0     /* seconds between saves of a changed pools state */
#define SCHED_GC_TICKS 60           /* save intervals between shaping garbage collections */
#define SCHED_SHAPING_IDLE_MS (10 * 60 * 1000)   /* shaping entries unused this long go */
#define SCHED_PRELOAD_JOBS 512      /* ready jobs keeping the message read at enqueue */
#define SCHED_PRELOAD_BYTES (64L * 1024 * 1024)   /* and their bodies' total size */

/* ------------------------------------------------------------------ small helpers */
klog *sched_lg(const scheduler *s) { return s->ctx->log; }

bool sched_debug(const scheduler *s) { return log_enabled(s->ctx->log, KLOG_DEBUG); }

void sched_set_str(char **dst, const char *src)
{
    char *d = util_strdup(src);
    free(*dst);
    *dst = d;
}

void sched_free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* Records why job j could not proceed (and until when, 0 if unknown). */
void sched_job_why(sched_job *j, int64_t until_ms, const char *fmt, ...)
{
    char buf[SCHED_WHY_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    j->why_until_ms = until_ms;
    if (j->why && strcmp(j->why, buf) == 0) return;
    size_t n = strlen(buf) + 1;
    j->why = util_realloc(j->why, n);
    memcpy(j->why, buf, n);
}

const char *sched_job_why_text(const sched_job *j)
{
    return j->why ? j->why : "";
}

/* The configuration set of a job as the config has it now (the default set when its own
 * is gone, as job_start does), or NULL. */
const config_set *sched_set_config(const config *cfg, const char *name)
{
    const config_set *cs = config_find_set(cfg, name);
    if (!cs && cfg->default_set) cs = config_find_set(cfg, cfg->default_set);
    return cs;
}


/* ------------------------------------------------------------------ texts, accessors */

const char *sched_job_to_text(const sched_job *j, char *buf, size_t len)
{
    snprintf(buf, len, "%s %s (%zu recipients, set %s)", j->msg_id, j->domain, j->nrcpts,
             j->set ? j->set->name : "-");
    return buf;
}

const char *sched_site_to_text(const char *site)
{
    return site ? site : "";
}

const char *sched_ip_to_text(const pools_ip *ip)
{
    return pools_ip_address(ip);
}

bool sched_stopping(const scheduler *s) { return s->stopping; }

shaping *sched_shaping(scheduler *s) { return s->shaping; }

sched_job *sched_active_first(const scheduler *s) { return s->active_head; }

static int sched_sessions(const scheduler *s)
{
    return s->exec ? s->exec->sessions(s->exec_arg) : 0;
}

void sched_check_stop(scheduler *s)
{
    if (s->stopping && !s->stop_reported && sched_sessions(s) == 0) {
        s->stop_reported = true;
        sched_save_pools(s);
        log_write(sched_lg(s), KLOG_INFO, "scheduler.stop", "result=done");
        if (s->stop_done) s->stop_done(s->stop_arg);
    }
}

/* ------------------------------------------------------------------ configuration sets */

sched_set *sched_set_get(scheduler *s, const char *name)
{
    for (sched_set *st = s->sets; st; st = st->next)
        if (strcmp(st->name, name) == 0) return st;
    sched_set *st = util_calloc(1, sizeof *st);
    st->name = util_strdup(name);
    const config_set *cs = sched_set_config(s->ctx->cfg, name);
    queue_fair_add_set(&s->ready, &st->q, cs ? cs->priority : 0);
    st->next = s->sets;
    s->sets = st;
    return st;
}

/* After a reload: priorities as the config has them now. */
static void sched_sets_refresh(scheduler *s)
{
    for (sched_set *st = s->sets; st; st = st->next) {
        const config_set *cs = sched_set_config(s->ctx->cfg, st->name);
        st->q.priority = cs ? cs->priority : 0;
    }
}

static void sched_ready_push(scheduler *s, sched_job *j)
{
    j->where = JOB_READY;
    queue_fair_push(&s->ready, &j->set->q, &j->rlink);
}

static void sched_ready_push_front(scheduler *s, sched_job *j)
{
    j->where = JOB_READY;
    queue_fair_push_front(&s->ready, &j->set->q, &j->rlink);
}

/* The next job to start: from the set of the highest priority with ready work, among
 * those the one whose last start is oldest (round-robin). */
static sched_job *sched_ready_pop(scheduler *s)
{
    queue_link *l = queue_fair_pop(&s->ready, NULL);
    return l ? QUEUE_ITEM(l, sched_job, rlink) : NULL;
}

/* Which of two jobs waiting for a connection slot goes first: higher priority, then the
 * set served least recently, then the one waiting longest. */
bool sched_job_before(const sched_job *a, const sched_job *b)
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

static uint64_t sched_fnv1a(const char *s)
{
    uint64_t h = UINT64_C(1469598103934665603);
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= UINT64_C(1099511628211);
    }
    return h;
}

static char *sched_dest_key(const sched_set *st, const char *pool, const char *site)
{
    return util_asprintf("%s\n%s\n%s", st->name, pool, site);
}

static void sched_dest_on_timer(struct ev_loop *loop, ev_timer *w, int revents);

static sched_dest *sched_dest_find(const scheduler *s, const sched_set *st, const char *pool,
                             const char *site)
{
    if (!s->ndest_buckets) return NULL;
    char *key = sched_dest_key(st, pool, site);
    uint64_t h = sched_fnv1a(key);
    sched_dest *d = s->dests[h & (s->ndest_buckets - 1)];
    while (d && (d->hash != h || strcmp(d->key, key) != 0)) d = d->hnext;
    free(key);
    return d;
}

static void sched_dest_table_grow(scheduler *s)
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

sched_dest *sched_dest_get(scheduler *s, sched_set *st, const char *pool, const char *site)
{
    sched_dest *d = sched_dest_find(s, st, pool, site);
    if (d) return d;
    if (s->ndests + 1 > s->ndest_buckets / 4 * 3) sched_dest_table_grow(s);
    d = util_calloc(1, sizeof *d);
    d->s = s;
    d->key = sched_dest_key(st, pool, site);
    d->hash = sched_fnv1a(d->key);
    d->set = st;
    d->pool = util_strdup(pool);
    d->site = util_strdup(site);
    ev_timer_init(&d->timer, sched_dest_on_timer, 0.0, 0.0);
    d->timer.data = d;
    size_t k = (size_t)(d->hash & (s->ndest_buckets - 1));
    d->hnext = s->dests[k];
    s->dests[k] = d;
    s->ndests++;
    return d;
}

bool sched_dest_blocked(const sched_dest *d, int64_t now)
{
    return d->blocked_until_ms > now;
}

/* The destination's held jobs may be released (done by the pump). */
static void sched_dest_mark_refill(scheduler *s, sched_dest *d)
{
    if (!d->in_refill) {
        d->in_refill = true;
        d->refill_next = s->refill;
        s->refill = d;
    }
    sched_pump_soon(s);
}

/* Every IP of the pool is blocked for the site until until_ms: hold its jobs until then. */
void sched_dest_block(scheduler *s, sched_dest *d, int64_t until_ms, const char *why, int64_t now)
{
    d->blocked_until_ms = until_ms;
    snprintf(d->why, sizeof d->why, "%s", why);
    ev_timer_stop(s->ctx->loop, &d->timer);
    int64_t wait = until_ms - now;
    if (wait < 1) wait = 1;
    ev_timer_set(&d->timer, (double)wait / 1000.0, 0.0);
    if (!s->stopping) ev_timer_start(s->ctx->loop, &d->timer);
}

static void sched_dest_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sched_dest *d = w->data;
    scheduler *s = d->s;
    d->blocked_until_ms = 0;
    if (d->nheld && sched_debug(s))
        log_write(sched_lg(s), KLOG_DEBUG, "sched.release", "set=%s pool=%s site=%s held=%zu reason=%s",
                  log_q(sched_lg(s), d->set->name), log_q(sched_lg(s), d->pool), log_q(sched_lg(s), sched_site_to_text(d->site)),
                  d->nheld, log_q(sched_lg(s), "shaping backoff of the site is over"));
    sched_dest_mark_refill(s, d);
}

/* Moves held jobs of d back to the front of their set's ready queue while the site is
 * not blocked and fewer than SCHED_DEST_WAITING of them wait or are on their way. */
static void sched_dest_refill(scheduler *s, sched_dest *d, int64_t now)
{
    if (sched_dest_blocked(d, now) || !d->nheld) return;
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
    for (int i = n - 1; i >= 0; i--) sched_ready_push_front(s, take[i]);   /* oldest first */
    free(take);
    if (n && sched_debug(s))
        log_write(sched_lg(s), KLOG_DEBUG, "sched.release",
                  "set=%s pool=%s site=%s jobs=%d held=%zu waiting=%d reason=%s",
                  log_q(sched_lg(s), d->set->name), log_q(sched_lg(s), d->pool), log_q(sched_lg(s), sched_site_to_text(d->site)), n,
                  d->nheld, d->nwaiting, log_q(sched_lg(s), "room among the jobs waiting at the site"));
}

static void sched_dest_free(scheduler *s, sched_dest *d)
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
static void sched_dests_tick(scheduler *s, int64_t now, bool gc)
{
    for (size_t i = 0; i < s->ndest_buckets; i++) {
        sched_dest **pp = &s->dests[i];
        while (*pp) {
            sched_dest *d = *pp;
            if (d->nheld && !sched_dest_blocked(d, now) &&
                d->nwaiting + d->nreleased < SCHED_DEST_WAITING)
                sched_dest_mark_refill(s, d);
            if (gc && !d->nheld && !d->nwaiting && !d->nreleased && !d->in_refill &&
                !sched_dest_blocked(d, now)) {
                *pp = d->hnext;
                s->ndests--;
                sched_dest_free(s, d);
            } else {
                pp = &d->hnext;
            }
        }
    }
}

/* A job leaves (or changes) the destination it waits at. */
void sched_job_set_waiting(scheduler *s, sched_job *j, sched_dest *d)
{
    if (j->wdest == d) return;
    if (j->wdest) {
        j->wdest->nwaiting--;
        sched_dest_mark_refill(s, j->wdest);
    }
    j->wdest = d;
    j->wait_until_ms = 0;
    if (d) {
        d->nwaiting++;
        j->wait_seq = ++s->stamp;
    }
}

/* A released job reached a decision (or left): it no longer counts as on its way. */
void sched_job_unrelease(scheduler *s, sched_job *j)
{
    if (!j->rdest) return;
    j->rdest->nreleased--;
    sched_dest_mark_refill(s, j->rdest);
    j->rdest = NULL;
}

/* ------------------------------------------------------------------ jobs: lists and heap */

void sched_job_free(sched_job *j)
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
    free(j->why);
    free(j);
}

int64_t sched_in_mem(const scheduler *s)
{
    return (int64_t)queue_idset_size(&s->mem);
}

/* The message is read from the spool when it is queued (for its configuration set). A few
 * ready jobs keep it, within SCHED_PRELOAD_JOBS and SCHED_PRELOAD_BYTES, so that a job
 * started soon after it was queued, the usual case, does not read it twice. Takes m (the
 * job owns it, or it is freed). */
void sched_job_preload(scheduler *s, sched_job *j, spool_loaded *m)
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
static void sched_job_unpreload(scheduler *s, sched_job *j, bool keep)
{
    if (j->where != JOB_READY || !j->loaded) return;
    s->npreload--;
    s->preload_bytes -= j->msg.data_len;
    if (!keep) {
        spool_loaded_free(&j->msg);
        j->loaded = false;
    }
}

static void sched_heap_push(scheduler *s, sched_job *j)
{
    j->where = JOB_DEFERRED;
    queue_heap_push(&s->deferred, j->due_ms, j);
}

/* One ev_timer for the earliest deferred job. */
void sched_arm_due_timer(scheduler *s)
{
    ev_timer_stop(s->ctx->loop, &s->due_timer);
    int64_t due;
    if (!queue_heap_peek(&s->deferred, &due) || s->stopping) return;
    int64_t wait = due - kiln_now_ms(s->ctx);
    if (wait < 0) wait = 0;
    ev_timer_set(&s->due_timer, (double)wait / 1000.0, 0.0);
    ev_timer_start(s->ctx->loop, &s->due_timer);
}

static void sched_on_due(struct ev_loop *loop, ev_timer *w, int revents)
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
        sched_ready_push(s, j);
    }
    sched_arm_due_timer(s);
    sched_pump_soon(s);
}

static void sched_deferred_push(scheduler *s, sched_job *j)
{
    s->ndeferred += (int64_t)j->nrcpts;
    sched_heap_push(s, j);
    if (queue_heap_peek(&s->deferred, NULL) == j) sched_arm_due_timer(s);
}

/* A job is due when its earliest recipient is. */
int64_t sched_job_due(const sched_job *j)
{
    int64_t due = INT64_MAX;
    for (size_t i = 0; i < j->nrcpts; i++)
        if (j->rcpts[i].next_attempt_ms < due) due = j->rcpts[i].next_attempt_ms;
    return due;
}

/* A job loaded from the spool: ready now, or in the heap until it is due. */
void sched_job_place(scheduler *s, sched_job *j)
{
    j->due_ms = sched_job_due(j);
    if (j->due_ms <= kiln_now_ms(s->ctx)) {
        s->nqueued += (int64_t)j->nrcpts;
        sched_ready_push(s, j);
    } else {
        sched_deferred_push(s, j);
    }
}

static void sched_active_link(scheduler *s, sched_job *j)
{
    j->where = JOB_ACTIVE;
    j->anext = NULL;
    j->aprev = s->active_tail;
    if (s->active_tail) s->active_tail->anext = j;
    else s->active_head = j;
    s->active_tail = j;
    s->nactive++;
}

static void sched_active_unlink(scheduler *s, sched_job *j)
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
static void sched_job_clear_attempt(scheduler *s, sched_job *j)
{
    sched_job_unreserve(s, j);
    sched_job_set_waiting(s, j, NULL);
    sched_job_unrelease(s, j);
    if (j->loaded) spool_loaded_free(&j->msg);
    j->loaded = false;
    for (size_t i = 0; i < j->nhops; i++) {
        free(j->hops[i].name);
        free(j->hops[i].addr);
        free(j->hops[i].tlsa);
    }
    free(j->hops);
    j->hops = NULL;
    j->nhops = j->hop_idx = 0;
    sched_free_strv(j->mx, j->nmx);
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
void sched_job_done(scheduler *s, sched_job *j)
{
    sched_active_unlink(s, j);
    sched_job_clear_attempt(s, j);
    s->nqueued -= (int64_t)j->nrcpts;
    if (j->nrcpts == 0) {
        sched_job_free(j);
    } else {
        j->due_ms = sched_job_due(j);
        int64_t now = kiln_now_ms(s->ctx);
        if (!j->pool_wait && !queue_pager_keep(&s->pager, j->due_ms, now)) {
            /* not due soon: it waits in the spool only (the pools' deferrals stay, they are
             * retried at once when the pools change) */
            queue_pager_evicted(&s->pager, j->due_ms);
            sched_job_forget(s, j);
            sched_arm_page_timer(s, now);
        } else {
            sched_deferred_push(s, j);
        }
    }
    sched_pump_soon(s);
}

/* Not attempted after all (graceful stop): back to the ready list, nothing recorded. */
void sched_job_release(scheduler *s, sched_job *j)
{
    sched_active_unlink(s, j);
    sched_job_clear_attempt(s, j);
    sched_ready_push_front(s, j);
}

/* Puts a job that is not started (or whose attempt ends here, nothing recorded) in the
 * held FIFO of d; it keeps counting as queued. */
void sched_job_hold(scheduler *s, sched_job *j, sched_dest *d)
{
    if (j->where == JOB_ACTIVE) {
        sched_active_unlink(s, j);
        sched_job_clear_attempt(s, j);
        sched_pump_soon(s);   /* an active slot freed */
    } else {
        sched_job_unpreload(s, j, false);
        sched_job_unrelease(s, j);
    }
    j->where = JOB_HELD;
    j->hdest = d;
    j->next = NULL;
    if (d->held_tail) d->held_tail->next = j;
    else d->held_head = j;
    d->held_tail = j;
    d->nheld++;
}

void sched_job_connected(scheduler *s, sched_job *j)
{
    sched_job_set_waiting(s, j, NULL);
    sched_job_unrelease(s, j);
    j->set->slot_stamp = ++s->stamp;
}

sched_job *sched_job_split(scheduler *s, sched_job *j, size_t keep)
{
    sched_job *rest = util_calloc(1, sizeof *rest);
    rest->msg_id = util_strdup(j->msg_id);
    rest->domain = util_strdup(j->domain);
    rest->set = j->set;
    rest->site = util_strdup(j->site);
    rest->nrcpts = rest->cap = j->nrcpts - keep;
    rest->rcpts = util_calloc(rest->cap, sizeof *rest->rcpts);
    memcpy(rest->rcpts, j->rcpts + keep, rest->nrcpts * sizeof *rest->rcpts);
    j->nrcpts = keep;
    sched_ready_push_front(s, rest);   /* still counted in nqueued */
    sched_pump_soon(s);
    return rest;
}

void scheduler_set_exec(scheduler *s, const scheduler_exec_ops *ops, void *arg)
{
    s->exec = ops;
    s->exec_arg = arg;
}

/* Arms the wake-up timer for a rate token a waiting job needs at at_ms. */
void sched_wake_at(scheduler *s, int64_t at_ms)
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

static void sched_on_wake(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    scheduler *s = w->data;
    s->wake_at_ms = 0;
    sched_pump_soon(s);
}


/* ------------------------------------------------------------------ the pump */

/* A job about to start whose site is known from an earlier attempt is held at once (not
 * loaded) when the site is blocked for its pool, or when its set already has
 * SCHED_DEST_WAITING jobs waiting there (or others held before it). */
static bool sched_job_prehold(scheduler *s, sched_job *j, int64_t now)
{
    if (!j->site) return false;
    const config_set *cs = sched_set_config(s->ctx->cfg, j->set->name);
    if (!cs) return false;
    sched_dest *d = sched_dest_find(s, j->set, cs->pool, j->site);
    if (!d) return false;
    if (sched_dest_blocked(d, now)) {
        sched_job_why(j, d->blocked_until_ms, "%s", d->why);
    } else if (!j->rdest && (d->nheld || d->nwaiting + d->nreleased >= SCHED_DEST_WAITING)) {
        sched_job_why(j, 0, "queued behind %d jobs of set %s waiting for site %s", d->nwaiting,
                j->set->name, j->site);
    } else {
        return false;
    }
    if (sched_debug(s))
        log_write(sched_lg(s), KLOG_DEBUG, "sched.hold", "id=%s domain=%s set=%s site=%s reason=%s",
                  log_q(sched_lg(s), j->msg_id), log_q(sched_lg(s), j->domain), log_q(sched_lg(s), j->set->name),
                  log_q(sched_lg(s), sched_site_to_text(j->site)), log_q(sched_lg(s), sched_job_why_text(j)));
    sched_job_hold(s, j, d);
    return true;
}

/* The job becomes active with its message loaded and goes to the executor. */
static void sched_job_start(scheduler *s, sched_job *j)
{
    kiln_ctx *ctx = s->ctx;
    if (j->nrcpts > 1 && sched_set_per_recipient(s, j->set)) {
        /* made before a reload marked its set: one recipient now, the rest next */
        sched_job *rest = sched_job_split(s, j, 1);
        log_write(sched_lg(s), KLOG_DEBUG, "sched.split", "id=%s domain=%s split=1+%zu reason=%s",
                  log_q(sched_lg(s), j->msg_id), log_q(sched_lg(s), j->domain), rest->nrcpts,
                  log_q(sched_lg(s), "one recipient per delivery: the set's URL names {recipient}"));
    }
    sched_job_unpreload(s, j, true);
    sched_active_link(s, j);
    j->pool_wait = false;
    if (!j->loaded && spool_load_message(ctx->spool, j->msg_id, &j->msg) != 0) {
        /* a recipient without its message breaks the spool's contract */
        log_write(sched_lg(s), KLOG_ERROR, "scheduler.job",
                  "id=%s domain=%s error=\"message missing from the spool; recipients left as they are\" spool_error=%s",
                  log_q(sched_lg(s), j->msg_id), log_q(sched_lg(s), j->domain),
                  log_q(sched_lg(s), spool_errmsg(ctx->spool)));
        sched_active_unlink(s, j);
        sched_job_clear_attempt(s, j);
        s->nqueued -= (int64_t)j->nrcpts;
        sched_job_forget(s, j);
        return;
    }
    j->loaded = true;
    if (s->exec) s->exec->start(s->exec_arg, j);
}

static void sched_pump(scheduler *s)
{
    if (s->stopping) return;
    sched_page_in(s);
    int64_t now = kiln_now_ms(s->ctx);
    /* destinations whose held jobs may move on */
    while (s->refill) {
        sched_dest *d = s->refill;
        s->refill = d->refill_next;
        d->in_refill = false;
        d->refill_next = NULL;
        sched_dest_refill(s, d, now);
    }
    /* waiting jobs first, in serving order: a slot or a token may have freed up */
    if (s->exec) s->exec->retry_waiting(s->exec_arg);
    /* then new work: the highest priority first, round-robin among equal sets; jobs whose
     * site is known to be busy or blocked are held without being loaded */
    while (queue_fair_size(&s->ready) && s->nactive < SCHED_MAX_ACTIVE) {
        sched_job *j = sched_ready_pop(s);
        if (sched_job_prehold(s, j, now)) continue;
        sched_job_start(s, j);
    }
}

static void sched_on_pump(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sched_pump(w->data);
}

void sched_pump_soon(scheduler *s)
{
    if (s->stopping || ev_is_active(&s->pump_timer)) return;
    ev_timer_set(&s->pump_timer, 0.0, 0.0);
    ev_timer_start(s->ctx->loop, &s->pump_timer);
}

static void sched_on_save(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    scheduler *s = w->data;
    sched_save_pools(s);
    int64_t now = kiln_now_ms(s->ctx);
    bool gc = ++s->ticks % SCHED_GC_TICKS == 0;
    if (gc) shaping_gc(s->shaping, now, SCHED_SHAPING_IDLE_MS);
    sched_dests_tick(s, now, gc);
}

/* ------------------------------------------------------------------ public API */

scheduler *scheduler_new(kiln_ctx *ctx, const scheduler_options *opts)
{
    scheduler *s = util_calloc(1, sizeof *s);
    s->ctx = ctx;
    queue_fair_init(&s->ready);
    queue_heap_init(&s->deferred);
    queue_idset_init(&s->mem);
    queue_idset_init(&s->settling);
    sched_load_init(s, opts && opts->mem_rcpts > 0 ? opts->mem_rcpts : SCHEDULER_MEM_RCPTS_DEFAULT);
    ev_timer_init(&s->due_timer, sched_on_due, 0.0, 0.0);
    s->due_timer.data = s;
    ev_timer_init(&s->pump_timer, sched_on_pump, 0.0, 0.0);
    s->pump_timer.data = s;
    ev_timer_init(&s->wake_timer, sched_on_wake, 0.0, 0.0);
    s->wake_timer.data = s;
    s->shaping = shaping_new(ctx->cfg, NULL, NULL);
    sched_dest_table_grow(s);

    sched_pools_load(s);
    ev_timer_init(&s->save_timer, sched_on_save, SCHED_SAVE_INTERVAL, SCHED_SAVE_INTERVAL);
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
    while (s->active_head) {
        sched_job *j = s->active_head;
        sched_active_unlink(s, j);
        sched_job_clear_attempt(s, j);
        sched_job_free(j);
    }
    for (sched_set *st = s->sets, *nst; st; st = nst) {
        nst = st->next;
        for (queue_link *l = st->q.head, *nx; l; l = nx) {
            nx = l->next;
            sched_job_free(QUEUE_ITEM(l, sched_job, rlink));
        }
        free(st->name);
        free(st);
    }
    for (size_t i = 0; i < queue_heap_size(&s->deferred); i++)
        sched_job_free(queue_heap_at(&s->deferred, i));
    queue_heap_clear(&s->deferred);
    queue_idset_clear(&s->mem);
    sched_holds_detach(s);
    queue_idset_clear(&s->settling);
    for (size_t i = 0; i < s->ndest_buckets; i++) {
        for (sched_dest *d = s->dests[i], *nd; d; d = nd) {
            nd = d->hnext;
            for (sched_job *j = d->held_head, *nx; j; j = nx) {
                nx = j->next;
                sched_job_free(j);
            }
            sched_dest_free(s, d);
        }
    }
    free(s->dests);
    sched_save_pools(s);   /* the daemon flushes the spool after this */
    pools_free(s->pools);
    shaping_free(s->shaping);
    free(s->res);
    free(s);
}

int64_t scheduler_recover(scheduler *s)
{
    int64_t n = sched_page_in(s);
    if (n >= 0) {
        int64_t q = 0, d = 0;
        scheduler_counts(s, &q, &d, NULL);
        log_write(sched_lg(s), KLOG_INFO, "scheduler.recover",
                  "recipients=%lld queued=%lld deferred=%lld in_memory=%lld memory_budget=%lld",
                  (long long)n, (long long)q, (long long)d, (long long)sched_in_mem(s),
                  (long long)s->pager.budget);
    }
    return n;
}

void scheduler_message_committed(scheduler *s, const char *msg_id)
{
    sched_load_message(s, msg_id);
}

/* Jobs the pools deferred (no IP, all at cap) are due now: the pools just changed. So are
 * sites blocked by shaping (other IPs may serve them now): their held jobs are tried
 * again, and hold again at once if nothing changed for them. */
static bool sched_take_pool_waiting(void *arg, void *item)
{
    scheduler *s = arg;
    sched_job *j = item;
    if (!j->pool_wait) return false;
    s->ndeferred -= (int64_t)j->nrcpts;
    s->nqueued += (int64_t)j->nrcpts;
    j->pool_wait = false;
    sched_ready_push(s, j);
    return true;
}

static void sched_requeue_pool_waiting(scheduler *s)
{
    size_t moved = queue_heap_remove_if(&s->deferred, sched_take_pool_waiting, s);
    size_t keep = queue_heap_size(&s->deferred);
    if (moved)
        log_write(sched_lg(s), KLOG_INFO, "pools.requeue", "jobs=%zu deferred_left=%zu reason=%s", moved, keep,
                  log_q(sched_lg(s), "the pools changed: mail waiting for an IP is tried again now"));
    for (size_t i = 0; i < s->ndest_buckets; i++)
        for (sched_dest *d = s->dests[i]; d; d = d->hnext) {
            if (!d->blocked_until_ms) continue;
            d->blocked_until_ms = 0;
            ev_timer_stop(s->ctx->loop, &d->timer);
            sched_dest_mark_refill(s, d);
        }
    sched_arm_due_timer(s);
    sched_pump_soon(s);
}

void scheduler_config_changed(scheduler *s)
{
    const config *cfg = s->ctx->cfg;
    if (s->exec) s->exec->config_changed(s->exec_arg);
    shaping_config_changed(s->shaping, cfg);
    sched_sets_refresh(s);
    sched_pools_reload(s);
    sched_save_pools(s);
    sched_requeue_pool_waiting(s);
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
    sched_save_pools(s);
    /* waiting jobs never started their transaction: they stay queued in the spool */
    for (sched_job *j = s->active_head, *nx; j; j = nx) {
        nx = j->anext;
        if (j->wdest) sched_job_release(s, j);
    }
    /* sessions without a transaction yet drop their connection (the job stays queued),
     * idle ones QUIT, busy ones QUIT after their transaction */
    if (s->exec) s->exec->stop(s->exec_arg);
    log_write(sched_lg(s), KLOG_INFO, "scheduler.stop", "result=begin sessions=%d", sched_sessions(s));
    sched_check_stop(s);
}

void scheduler_counts(const scheduler *s, int64_t *queued, int64_t *deferred, int *sessions)
{
    int64_t q = s->nqueued, d = s->ndeferred, sq, sd;
    /* recipients in the spool only: the spool's maintained counts (two rows) tell how many */
    if (queue_pager_outside(&s->pager) && spool_count_rcpts(s->ctx->spool, &sq, &sd) == 0 &&
        sq + sd != sched_in_mem(s)) {
        queue_mem_counts mem = {s->nqueued, s->ndeferred, sched_in_mem(s) - s->nmem_retry,
                                s->nmem_retry};
        queue_status_counts(&mem, sq, sd, &q, &d);
    }
    if (queued) *queued = q;
    if (deferred) *deferred = d;
    if (sessions) *sessions = sched_sessions(s);
}

struct pools *scheduler_pools(scheduler *s)
{
    return s->pools;
}

void scheduler_pools_changed(scheduler *s)
{
    sched_save_pools(s);
    if (s->stopping) return;
    if (s->exec) s->exec->pools_changed(s->exec_arg);
    sched_requeue_pool_waiting(s);
}

