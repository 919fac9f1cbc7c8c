/* explain.c — kilnctl queue --explain over the scheduler's state: scheduler_explain (per
 * pending recipient of one message, what it waits for and until when), and the walk over
 * every job and the state and pool texts that queue_report.c (kilnctl queue) shares.
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
void sched_each_job(scheduler *s, void (*fn)(void *arg, scheduler *s, sched_job *j), void *arg)
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

const char *sched_job_state_text(const sched_job *j)
{
    switch (j->where) {
    case JOB_READY: return "ready";
    case JOB_DEFERRED: return "deferred";
    case JOB_HELD: return "waiting";
    case JOB_ACTIVE: return j->wdest ? "waiting" : "active";
    }
    return "?";
}

const char *sched_job_pool_text(const scheduler *s, const sched_job *j)
{
    if (j->where == JOB_ACTIVE && j->pool) return j->pool;
    if (j->where == JOB_HELD && j->hdest) return j->hdest->pool;
    const config_set *cs = sched_set_config(s->ctx->cfg, j->set->name);
    return cs ? cs->pool : "-";
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
        if (j->pool_wait && j->why) return util_strdup(j->why);
        return util_strdup("deferred: waiting for its retry time after a temporary failure");
    case JOB_HELD:
        if (j->hdest && sched_dest_blocked(j->hdest, kiln_now_ms(s->ctx))) {
            *until = j->hdest->blocked_until_ms;
            return util_strdup(j->hdest->why);
        }
        return util_strdup(j->why ? j->why : "held for its site");
    case JOB_ACTIVE:
        if (s->exec) {
            char *r = s->exec->job_reason(s->exec_arg, j);
            if (r) return r;
        }
        return util_strdup(j->why ? j->why : "being scheduled");
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
        row->pool = util_strdup(sched_job_pool_text(s, j));
        row->state = sched_job_state_text(j);
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
    sched_each_job(s, explain_cb, &a);
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
