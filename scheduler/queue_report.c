/* queue_report.c — kilnctl queue: recipients grouped by pool, configuration set, domain and
 * state (scheduler.h: scheduler_queue, and the same in halves: snapshot on the loop, the
 * rest anywhere).
 *
 * The snapshot copies, for every job in memory that passes the domain filter, its pool,
 * set, domain, state and how many of its recipients were never attempted ("fresh": QUEUED
 * in the spool) or were (DEFERRED in the spool), into one string arena: a bounded walk (the
 * jobs in memory are bounded by the memory budget) with one copy of each job's domain, one
 * of each pool and set name, and no other allocation per job (about 50 ms on the loop for
 * 100,000 jobs of one recipient each). It also copies the sets' pools from the config, so the second half
 * reads nothing that the loop may change or free.
 *
 * The second half takes the spool's counts per (set, domain, spool state), subtracts the
 * recipients in memory of the same group (counted in their spool state, so nothing is
 * counted twice), and reports what is left as "ready" (QUEUED) or "deferred" (DEFERRED)
 * under the set's pool; then sorts everything by pool, set, domain and state and merges
 * equal groups. It touches no scheduler state: any thread may run it.
 *
 * Promises: read-only for the scheduler; every string of the rows is the caller's. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "scheduler/internal.h"
#include "store/spool.h"

#define QR_NONE SIZE_MAX
#define QR_CACHE 64

/* One group: strings are offsets into the arena. */
typedef struct qr_entry {
    size_t pool, set, domain;
    const char *state;          /* a static text */
    int64_t fresh, retry;       /* recipients never attempted / attempted */
} qr_entry;

typedef struct qr_list {
    qr_entry *v;
    size_t n, cap;
} qr_list;

struct scheduler_queue_snap {
    char *domain;               /* lower-case filter, or NULL */
    strbuf arena;               /* NUL-terminated strings, addressed by offset */
    qr_list mem;                /* jobs in memory */
    qr_list spool;              /* the spool's groups (pool unset; state: fresh or retry) */
    bool wants_spool;
    size_t *set_name, *set_pool;   /* the config's sets and their pools */
    size_t nsets;
    size_t default_set;         /* QR_NONE if none */
    const char *cache_ptr[QR_CACHE];   /* qr_str_cached, during the snapshot */
    size_t cache_off[QR_CACHE];
};

static size_t qr_str(scheduler_queue_snap *q, const char *s)
{
    size_t off = q->arena.len;
    strbuf_append(&q->arena, s, strlen(s) + 1);
    return off;
}

static qr_entry *qr_push(qr_list *l)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = util_realloc(l->v, l->cap * sizeof *l->v);
    }
    qr_entry *e = &l->v[l->n++];
    memset(e, 0, sizeof *e);
    return e;
}

/* Pool and set names are few and their strings stay put during the walk: each is copied
 * once, found again by its address (a small direct-mapped cache). */
static size_t qr_str_cached(scheduler_queue_snap *q, const char *s)
{
    uintptr_t h = ((uintptr_t)s >> 4) % QR_CACHE;
    if (q->cache_ptr[h] != s) {
        q->cache_ptr[h] = s;
        q->cache_off[h] = qr_str(q, s);
    }
    return q->cache_off[h];
}

static void qr_snap_job(void *arg, scheduler *s, sched_job *j)
{
    scheduler_queue_snap *q = arg;
    if (!j->nrcpts || (q->domain && !util_streq_ci(q->domain, j->domain))) return;
    int64_t retry = 0;
    for (size_t i = 0; i < j->nrcpts; i++) retry += j->rcpts[i].attempts > 0;
    qr_entry *e = qr_push(&q->mem);
    e->pool = qr_str_cached(q, sched_job_pool_text(s, j));
    e->set = qr_str_cached(q, j->set->name);
    e->domain = qr_str(q, j->domain);
    e->state = sched_job_state_text(j);
    e->fresh = (int64_t)j->nrcpts - retry;
    e->retry = retry;
}

/* Whether some pending recipients are in the spool only. */
static bool qr_some_outside(const scheduler *s)
{
    int64_t qn, dn;
    return queue_pager_outside(&s->pager) && spool_count_rcpts(s->ctx->spool, &qn, &dn) == 0 &&
           qn + dn != sched_in_mem(s);
}

scheduler_queue_snap *scheduler_queue_snapshot(scheduler *s, const char *domain)
{
    scheduler_queue_snap *q = util_calloc(1, sizeof *q);
    strbuf_init(&q->arena);
    if (domain && *domain) {
        q->domain = util_strdup(domain);
        util_lowercase(q->domain);
    } else {
        /* room for every job at once (at most one per recipient in memory): no copying
         * while the arrays grow */
        size_t n = (size_t)sched_in_mem(s);
        q->mem.cap = n ? n : 1;
        q->mem.v = util_malloc(q->mem.cap * sizeof *q->mem.v);
        strbuf_reserve(&q->arena, n * 16);
    }
    sched_each_job(s, qr_snap_job, q);
    q->wants_spool = qr_some_outside(s);
    const config *cfg = s->ctx->cfg;
    q->nsets = cfg->nsets;
    q->set_name = util_calloc(cfg->nsets ? cfg->nsets : 1, sizeof *q->set_name);
    q->set_pool = util_calloc(cfg->nsets ? cfg->nsets : 1, sizeof *q->set_pool);
    for (size_t i = 0; i < cfg->nsets; i++) {
        q->set_name[i] = qr_str(q, cfg->sets[i].name);
        q->set_pool[i] = qr_str(q, cfg->sets[i].pool ? cfg->sets[i].pool : "-");
    }
    q->default_set = cfg->default_set ? qr_str(q, cfg->default_set) : QR_NONE;
    return q;
}

bool scheduler_queue_snap_wants_spool(const scheduler_queue_snap *q)
{
    return q->wants_spool;
}

const char *scheduler_queue_snap_domain(const scheduler_queue_snap *q)
{
    return q->domain;
}

void scheduler_queue_snap_spool(void *arg, const char *config_set, const char *domain,
                                spool_rcpt_state state, int64_t count)
{
    scheduler_queue_snap *q = arg;
    if (count <= 0 || (q->domain && !util_streq_ci(q->domain, domain))) return;
    qr_entry *e = qr_push(&q->spool);
    e->pool = QR_NONE;
    e->set = qr_str(q, config_set);
    e->domain = qr_str(q, domain);
    if (state == SPOOL_RCPT_DEFERRED) {
        e->state = "deferred";
        e->retry = count;
    } else {
        e->state = "ready";
        e->fresh = count;
    }
}

void scheduler_queue_snap_free(scheduler_queue_snap *q)
{
    if (!q) return;
    free(q->domain);
    strbuf_free(&q->arena);
    free(q->mem.v);
    free(q->spool.v);
    free(q->set_name);
    free(q->set_pool);
    free(q);
}

/* ---- the second half ---- */

/* What is in memory of one (set, domain), in its spool states. */
typedef struct qr_tally {
    const char *set, *domain;
    int64_t fresh, retry;
} qr_tally;

static int qr_cmp_tally(const void *a, const void *b)
{
    const qr_tally *x = a, *y = b;
    int c = strcmp(x->set, y->set);
    return c ? c : strcmp(x->domain, y->domain);
}

static int qr_cmp_row(const void *a, const void *b)
{
    const scheduler_queue_row *x = a, *y = b;
    int c = strcmp(x->pool, y->pool);
    if (!c) c = strcmp(x->set, y->set);
    if (!c) c = strcmp(x->domain, y->domain);
    if (!c) c = strcmp(x->state, y->state);
    return c;
}

static const char *qr_pool_of(const scheduler_queue_snap *q, const char *set)
{
    const char *base = q->arena.buf;
    for (size_t i = 0; i < q->nsets; i++)
        if (strcmp(base + q->set_name[i], set) == 0) return base + q->set_pool[i];
    if (q->default_set != QR_NONE)
        for (size_t i = 0; i < q->nsets; i++)
            if (strcmp(base + q->set_name[i], base + q->default_set) == 0)
                return base + q->set_pool[i];
    return "-";
}

typedef struct qr_rows {
    scheduler_queue_row *v;
    size_t n, cap;
} qr_rows;

static void qr_row(qr_rows *r, const char *pool, const char *set, const char *domain,
                   const char *state, int64_t n)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 32;
        r->v = util_realloc(r->v, r->cap * sizeof *r->v);
    }
    r->v[r->n++] = (scheduler_queue_row){(char *)pool, (char *)set, (char *)domain, state, n};
}

/* The spool's groups minus what is in memory of each, as rows of their set's pool. */
static void qr_outside(const scheduler_queue_snap *q, qr_rows *r)
{
    const char *base = q->arena.buf;   /* no string is added any more: stable */
    qr_tally *t = util_calloc(q->mem.n ? q->mem.n : 1, sizeof *t);
    for (size_t i = 0; i < q->mem.n; i++) {
        const qr_entry *e = &q->mem.v[i];
        t[i] = (qr_tally){base + e->set, base + e->domain, e->fresh, e->retry};
    }
    if (q->mem.n > 1) qsort(t, q->mem.n, sizeof *t, qr_cmp_tally);
    size_t nt = 0;
    for (size_t i = 0; i < q->mem.n; i++) {
        if (nt && qr_cmp_tally(&t[nt - 1], &t[i]) == 0) {
            t[nt - 1].fresh += t[i].fresh;
            t[nt - 1].retry += t[i].retry;
        } else {
            t[nt++] = t[i];
        }
    }
    for (size_t i = 0; i < q->spool.n; i++) {
        const qr_entry *e = &q->spool.v[i];
        qr_tally key = {base + e->set, base + e->domain, 0, 0};
        const qr_tally *m = nt ? bsearch(&key, t, nt, sizeof *t, qr_cmp_tally) : NULL;
        int64_t out = e->fresh ? e->fresh - (m ? m->fresh : 0) : e->retry - (m ? m->retry : 0);
        if (out > 0) qr_row(r, qr_pool_of(q, key.set), key.set, key.domain, e->state, out);
    }
    free(t);
}

size_t scheduler_queue_finish(scheduler_queue_snap *q, scheduler_queue_row **rows)
{
    const char *base = q->arena.buf;
    qr_rows r = {0};
    for (size_t i = 0; i < q->mem.n; i++) {
        const qr_entry *e = &q->mem.v[i];
        qr_row(&r, base + e->pool, base + e->set, base + e->domain, e->state, e->fresh + e->retry);
    }
    if (q->spool.n) qr_outside(q, &r);
    if (r.n > 1) qsort(r.v, r.n, sizeof *r.v, qr_cmp_row);
    /* merge equal groups; the strings become the caller's */
    size_t m = 0;
    for (size_t i = 0; i < r.n; i++) {
        if (m && qr_cmp_row(&r.v[m - 1], &r.v[i]) == 0) r.v[m - 1].recipients += r.v[i].recipients;
        else r.v[m++] = r.v[i];
    }
    for (size_t i = 0; i < m; i++) {
        r.v[i].pool = util_strdup(r.v[i].pool);
        r.v[i].set = util_strdup(r.v[i].set);
        r.v[i].domain = util_strdup(r.v[i].domain);
    }
    scheduler_queue_snap_free(q);
    *rows = r.v;
    return m;
}

size_t scheduler_queue(scheduler *s, const char *domain, scheduler_queue_row **rows)
{
    scheduler_queue_snap *q = scheduler_queue_snapshot(s, domain);
    if (q->wants_spool && spool_count_by(s->ctx->spool, scheduler_queue_snap_spool, q) != 0)
        log_write(sched_lg(s), KLOG_ERROR, "scheduler.queue",
                  "error=%s note=\"recipients in the spool only are not listed\"",
                  log_q(sched_lg(s), spool_errmsg(s->ctx->spool)));
    return scheduler_queue_finish(q, rows);
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
