/* explain.c — the kilnctl queue reports over the scheduler's state: scheduler_queue
 * (recipients grouped by pool, set, domain and state) and scheduler_explain (per pending
 * recipient of one message, what it waits for and until when).
 *
 * Promises: read-only (nothing is scheduled, nothing changes); recipients held in the
 * spool only (memory budget) are counted and listed from the spool, never twice; the
 * reasons are the ones the debug log gives at each decision (sched_job_why), and for an
 * active job on a session the executor's own words (scheduler_exec_ops.job_reason). */
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "scheduler/internal.h"
#include "store/spool.h"

/* Calls fn for every job the scheduler holds, wherever it is. */
static void explain_each_job(scheduler *s, void (*fn)(void *arg, scheduler *s, sched_job *j), void *arg)
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

static const char *explain_job_state(const sched_job *j)
{
    switch (j->where) {
    case JOB_READY: return "ready";
    case JOB_DEFERRED: return "deferred";
    case JOB_HELD: return "waiting";
    case JOB_ACTIVE: return j->wdest ? "waiting" : "active";
    }
    return "?";
}

static const char *explain_job_pool(const scheduler *s, const sched_job *j)
{
    if (j->where == JOB_ACTIVE && j->pool) return j->pool;
    if (j->where == JOB_HELD && j->hdest) return j->hdest->pool;
    const config_set *cs = sched_set_config(s->ctx->cfg, j->set->name);
    return cs ? cs->pool : "-";
}

typedef struct explain_queue_acc {
    const char *domain;
    scheduler_queue_row *v;
    size_t n, cap;
} explain_queue_acc;

static void explain_queue_cb(void *arg, scheduler *s, sched_job *j)
{
    explain_queue_acc *a = arg;
    if (a->domain && !util_streq_ci(a->domain, j->domain)) return;
    if (!j->nrcpts) return;
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 32;
        a->v = util_realloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = (scheduler_queue_row){(char *)explain_job_pool(s, j), j->set->name, j->domain,
                                         explain_job_state(j), (int64_t)j->nrcpts};
}

static int explain_cmp_row(const void *a, const void *b)
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
typedef struct explain_tally {
    const char *set, *domain;
    int deferred;               /* its spool state: DEFERRED once attempted, else QUEUED */
    int64_t n;
} explain_tally;

typedef struct explain_tally_acc {
    explain_tally *v;
    size_t n, cap;
} explain_tally_acc;

static void explain_tally_cb(void *arg, scheduler *s, sched_job *j)
{
    (void)s;
    explain_tally_acc *a = arg;
    int64_t n[2] = {0, 0};
    for (size_t i = 0; i < j->nrcpts; i++) n[j->rcpts[i].attempts > 0]++;
    for (int k = 0; k < 2; k++) {
        if (!n[k]) continue;
        if (a->n == a->cap) {
            a->cap = a->cap ? a->cap * 2 : 32;
            a->v = util_realloc(a->v, a->cap * sizeof *a->v);
        }
        a->v[a->n++] = (explain_tally){j->set->name, j->domain, k, n[k]};
    }
}

static int explain_cmp_tally(const void *a, const void *b)
{
    const explain_tally *x = a, *y = b;
    int c = strcmp(x->set, y->set);
    if (!c) c = strcmp(x->domain, y->domain);
    if (!c) c = x->deferred - y->deferred;
    return c;
}

typedef struct explain_outside_acc {
    scheduler *s;
    explain_queue_acc *rows;
    const explain_tally *tally;
    size_t ntally;
    char **owned;               /* strings of the rows added here */
    size_t nowned;
} explain_outside_acc;

static void explain_outside_cb(void *arg, const char *set_name, const char *domain,
                       spool_rcpt_state state, int64_t count)
{
    explain_outside_acc *o = arg;
    explain_queue_acc *a = o->rows;
    if (a->domain && !util_streq_ci(a->domain, domain)) return;
    explain_tally key = {set_name, domain, state == SPOOL_RCPT_DEFERRED, 0};
    const explain_tally *t = bsearch(&key, o->tally, o->ntally, sizeof *o->tally, explain_cmp_tally);
    int64_t out = count - (t ? t->n : 0);
    if (out <= 0) return;
    const config_set *cs = sched_set_config(o->s->ctx->cfg, set_name);
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
static bool explain_some_outside(const scheduler *s)
{
    int64_t q, d;
    return queue_pager_outside(&s->pager) && spool_count_rcpts(s->ctx->spool, &q, &d) == 0 &&
           q + d != sched_in_mem(s);
}

size_t scheduler_queue(scheduler *s, const char *domain, scheduler_queue_row **rows)
{
    explain_queue_acc a = {.domain = domain && *domain ? domain : NULL};
    explain_each_job(s, explain_queue_cb, &a);
    explain_outside_acc o = {.s = s, .rows = &a};
    if (explain_some_outside(s)) {
        /* those in the spool only: "ready" (queued) or "deferred" */
        explain_tally_acc t = {0};
        explain_each_job(s, explain_tally_cb, &t);
        if (t.n) qsort(t.v, t.n, sizeof *t.v, explain_cmp_tally);
        size_t m = 0;
        for (size_t i = 0; i < t.n; i++) {
            if (m && explain_cmp_tally(&t.v[m - 1], &t.v[i]) == 0) t.v[m - 1].n += t.v[i].n;
            else t.v[m++] = t.v[i];
        }
        o.tally = t.v;
        o.ntally = m;
        if (spool_count_by(s->ctx->spool, explain_outside_cb, &o) != 0)
            log_write(sched_lg(s), KLOG_ERROR, "scheduler.queue",
                      "error=%s note=\"recipients in the spool only are not listed\"",
                      log_q(sched_lg(s), spool_errmsg(s->ctx->spool)));
        free(t.v);
    }
    if (a.n) qsort(a.v, a.n, sizeof *a.v, explain_cmp_row);
    /* merge equal groups; the strings become the caller's */
    size_t m = 0;
    for (size_t i = 0; i < a.n; i++) {
        if (m && explain_cmp_row(&a.v[m - 1], &a.v[i]) == 0) {
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
    sched_free_strv(o.owned, o.nowned);
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
static char *explain_job_reason(const scheduler *s, const sched_job *j, int64_t *until)
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
        if (j->hdest && sched_dest_blocked(j->hdest, kiln_now_ms(s->ctx))) {
            *until = j->hdest->blocked_until_ms;
            return util_strdup(j->hdest->why);
        }
        return util_strdup(j->why[0] ? j->why : "held for its site");
    case JOB_ACTIVE:
        if (s->exec) {
            char *r = s->exec->job_reason(s->exec_arg, j);
            if (r) return r;
        }
        return util_strdup(j->why[0] ? j->why : "being scheduled");
    }
    return util_strdup("?");
}

static void explain_cb(void *arg, scheduler *s, sched_job *j)
{
    explain_acc *a = arg;
    if (strcmp(a->msg_id, j->msg_id) != 0) return;
    int64_t until = 0;
    char *reason = explain_job_reason(s, j, &until);
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
        row->pool = util_strdup(explain_job_pool(s, j));
        row->state = explain_job_state(j);
        row->reason = util_strdup(reason);
        row->until_ms = j->where == JOB_DEFERRED ? r->next_attempt_ms : until;
        row->attempts = r->attempts;
        row->last_reply = util_strdup(r->last_reply);
    }
    free(reason);
}

static int explain_cmp(const void *a, const void *b)
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
    const config_set *cs = o->have_m > 0 ? sched_set_config(s->ctx->cfg, set) : NULL;
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
    explain_each_job(s, explain_cb, &a);
    if (queue_pager_outside(&s->pager)) {
        explain_out o = {.s = s, .a = &a};
        if (spool_each_pending_rcpt(s->ctx->spool, msg_id, explain_out_cb, &o) != 0)
            log_write(sched_lg(s), KLOG_ERROR, "scheduler.explain",
                      "id=%s error=%s note=\"recipients in the spool only are not listed\"",
                      log_q(sched_lg(s), msg_id), log_q(sched_lg(s), spool_errmsg(s->ctx->spool)));
        if (o.have_m > 0) spool_loaded_free(&o.m);
    }
    if (a.n > 1) qsort(a.v, a.n, sizeof *a.v, explain_cmp);
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
