/* load.c — the scheduler's recipients come from the spool: at start-up (recover), when a
 * message is committed, and by paging within the memory budget (queue_pager of queue.h;
 * the policy is described in scheduler.c's file comment).
 *
 * Promises: no recipient is ever held twice (the rowids in memory are kept in a set and
 * passed over, and so are those settled whose spool update is not committed yet: the
 * spool's reads show them still pending); pages read only rows known to be committed; a read error leaves the
 * recipients in the spool and paging is tried again; at most SCHED_PAGE_MAX recipients
 * are read per scheduling pass, so the loop is never held up long. Recipients are grouped
 * by (message, domain) into jobs of the message's configuration set, ready or deferred;
 * for a set whose List-Unsubscribe URL names {recipient}, each recipient is a job. */
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "base/util.h"
#include "scheduler/internal.h"
#include "store/spool.h"

#define SCHED_PAGE_CHUNK 1000       /* rows per spool read while paging in */
#define SCHED_PAGE_MAX 5000         /* recipients paged in per scheduling pass (the rest at
                                       the next pass: the loop is never held up long) */
#define SCHED_PAGE_RETRY_MS 1000    /* paging blocked (budget full, uncommitted batch) */

typedef struct load_rcpt {
    char *msg_id;
    char *domain;
    sched_rcpt r;
} load_rcpt;

typedef struct load_acc {
    load_rcpt *v;
    size_t n, cap;
    const queue_idset *skip;    /* rows already in memory: passed over */
    const queue_idset *held;    /* rows settled and not committed yet: passed over too */
    int64_t max_rowid;          /* rows after this are not read (not known committed) */
    int64_t last_rowid;         /* the last row read or passed over */
    int64_t min_seen, max_seen; /* rowids of the rows read or passed over */
    size_t nseen;               /* rows the spool returned */
    bool past_max;              /* a row after max_rowid came */
} load_acc;

static void load_on_rcpt(void *arg, const spool_rcpt *r)
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
    if (a->held && queue_idset_has(a->held, r->rowid)) return;
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = util_realloc(a->v, a->cap * sizeof *a->v);
    }
    load_rcpt *l = &a->v[a->n++];
    l->msg_id = util_strdup(r->msg_id);
    l->domain = util_strdup(util_addr_domain(r->address));
    util_lowercase(l->domain);
    l->r.rowid = r->rowid;
    l->r.address = util_strdup(r->address);
    l->r.attempts = r->attempts;
    l->r.next_attempt_ms = r->state == SPOOL_RCPT_QUEUED ? 0 : r->next_attempt_ms;
    l->r.last_reply = r->state == SPOOL_RCPT_DEFERRED ? util_strdup(r->last_reply) : NULL;
}

bool sched_set_per_recipient(const scheduler *s, const sched_set *st)
{
    return st && config_set_per_recipient(sched_set_config(s->ctx->cfg, st->name));
}

static int load_cmp(const void *a, const void *b)
{
    const load_rcpt *x = a, *y = b;
    int c = strcmp(x->msg_id, y->msg_id);
    if (c) return c;
    c = strcmp(x->domain, y->domain);
    if (c) return c;
    return x->r.rowid < y->r.rowid ? -1 : x->r.rowid > y->r.rowid;
}

static void load_rcpt_free(load_rcpt *l)
{
    free(l->msg_id);
    free(l->domain);
    free(l->r.address);
    free(l->r.last_reply);
}

static void load_acc_free(load_acc *a)
{
    for (size_t i = 0; i < a->n; i++) load_rcpt_free(&a->v[i]);
    free(a->v);
    a->v = NULL;
    a->n = a->cap = 0;
}

/* A job's recipients take no more room than they need (jobs held in memory are many). */
static void load_trim(sched_job *j)
{
    if (j->cap > j->nrcpts) {
        j->cap = j->nrcpts;
        j->rcpts = util_realloc(j->rcpts, j->cap * sizeof *j->rcpts);
    }
}

/* Groups the recipients read (a, emptied) by (message, domain) into jobs of the message's
 * configuration set, placed in its ready queue or the heap. Returns how many. */
static int64_t load_place(scheduler *s, load_acc *acc)
{
    load_acc a = *acc;
    acc->v = NULL;
    acc->n = acc->cap = 0;
    if (a.n) qsort(a.v, a.n, sizeof *a.v, load_cmp);
    sched_job *j = NULL;
    sched_set *set = NULL;
    char *set_of = NULL;         /* the message whose set is `set` */
    spool_loaded m;              /* that message, until a job of it takes it */
    bool have_m = false, missing = false;
    bool one_rcpt = false;       /* `set` gives each recipient a job of its own */
    int64_t n = 0;
    memset(&m, 0, sizeof m);
    for (size_t i = 0; i < a.n; i++) {
        load_rcpt *l = &a.v[i];
        bool new_msg = !set_of || strcmp(set_of, l->msg_id) != 0;
        if (j && (new_msg || one_rcpt || strcmp(j->domain, l->domain) != 0)) {
            load_trim(j);
            sched_job_place(s, j);
            if (have_m && j->where == JOB_READY) {
                sched_job_preload(s, j, &m);
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
                log_write(sched_lg(s), KLOG_ERROR, "scheduler.job",
                          "id=%s error=\"message missing from the spool; recipients left as they are\" spool_error=%s",
                          log_q(sched_lg(s), l->msg_id), log_q(sched_lg(s), spool_errmsg(s->ctx->spool)));
            } else {
                set = sched_set_get(s, m.config_set);
                one_rcpt = sched_set_per_recipient(s, set);
            }
            sched_set_str(&set_of, l->msg_id);
        }
        if (missing) {
            load_rcpt_free(l);
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
            j->cap = j->cap ? j->cap * 2 : 1;
            j->rcpts = util_realloc(j->rcpts, j->cap * sizeof *j->rcpts);
        }
        if (!queue_idset_add(&s->mem, l->r.rowid)) {
            char jt[SCHED_TEXT_LEN];
            util_fatal("scheduler: recipient %lld loaded twice, into job %s", (long long)l->r.rowid,
                       sched_job_to_text(j, jt, sizeof jt));
        }
        if (l->r.attempts > 0) s->nmem_retry++;
        j->rcpts[j->nrcpts++] = l->r;
        n++;
    }
    if (j) {
        load_trim(j);
        sched_job_place(s, j);
        if (have_m && j->where == JOB_READY) {
            sched_job_preload(s, j, &m);
            have_m = false;
        }
    }
    if (have_m) spool_loaded_free(&m);
    free(set_of);
    free(a.v);
    if (n) {
        sched_arm_due_timer(s);
        sched_pump_soon(s);
    }
    return n;
}

/* Reads pages of recipients from the spool while the pager says so (see the file
 * comment). Returns how many were loaded, or -1 on a read error (retried later). */
int64_t sched_page_in(scheduler *s)
{
    spool *sp = s->ctx->spool;
    int64_t now = kiln_now_ms(s->ctx), total = 0;
    if (s->pager.out_deferred && now >= s->pager.check_ms && sched_in_mem(s) < s->pager.budget) {
        int64_t next = 0;
        int r = spool_next_due_ms(sp, &next);
        if (r >= 0) queue_pager_check(&s->pager, r == 1 ? next : 0, now);
    }
    queue_page pg;
    while (total < SCHED_PAGE_MAX &&
           queue_pager_plan(&s->pager, sched_in_mem(s), now, spool_has_pending(sp), &pg)) {
        if (pg.limit > (size_t)(SCHED_PAGE_MAX - total)) pg.limit = (size_t)(SCHED_PAGE_MAX - total);
        load_acc a = {.skip = &s->mem, .held = &s->settling, .max_rowid = pg.max_rowid,
                      .last_rowid = pg.after_rowid};
        bool at_end = false;
        while (a.n < pg.limit) {
            size_t want = pg.limit - a.n, seen = a.nseen;
            if (want > SCHED_PAGE_CHUNK) want = SCHED_PAGE_CHUNK;
            if (spool_each_due_rcpt(sp, pg.due_before_ms, a.last_rowid, want, load_on_rcpt, &a) != 0) {
                log_write(sched_lg(s), KLOG_ERROR, "sched.page",
                          "error=%s note=\"recipients stay in the spool; paging is tried again\"",
                          log_q(sched_lg(s), spool_errmsg(sp)));
                load_acc_free(&a);
                sched_arm_page_timer(s, now);
                return -1;
            }
            if (a.past_max || a.nseen - seen < want) {
                at_end = true;
                break;
            }
        }
        int64_t last = a.last_rowid;
        int64_t n = load_place(s, &a);
        queue_pager_read(&s->pager, &pg, last, at_end, now);
        total += n;
        if (sched_debug(s))
            log_write(sched_lg(s), KLOG_DEBUG, "sched.page",
                      "kind=%s after=%lld last=%lld loaded=%lld in_memory=%lld budget=%lld end=%s",
                      pg.sweep ? "sweep" : "forward", (long long)pg.after_rowid, (long long)last,
                      (long long)n, (long long)sched_in_mem(s), (long long)s->pager.budget,
                      at_end ? "yes" : "no");
    }
    sched_arm_page_timer(s, now);
    return total;
}

static void load_on_page(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    scheduler *s = w->data;
    s->page_at_ms = 0;
    sched_page_in(s);
    sched_pump_soon(s);
}

/* One ev_timer: the next sweep for deferred recipients in the spool, or a retry soon when
 * paging is wanted but was blocked (budget full, nothing committed to read, read error). */
void sched_arm_page_timer(scheduler *s, int64_t now)
{
    if (s->stopping) return;
    int64_t at = queue_pager_wake_ms(&s->pager);
    if ((at && at <= now) || queue_pager_hungry(&s->pager, sched_in_mem(s))) {
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
void sched_load_message(scheduler *s, const char *msg_id)
{
    load_acc a = {.skip = &s->mem, .held = &s->settling, .max_rowid = INT64_MAX};
    if (spool_each_pending_rcpt(s->ctx->spool, msg_id, load_on_rcpt, &a) != 0) {
        load_acc_free(&a);
        log_write(sched_lg(s), KLOG_ERROR, "scheduler.queue",
                  "id=%s error=%s note=\"recipients stay in the spool and are queued at the next start\"",
                  log_q(sched_lg(s), msg_id), log_q(sched_lg(s), spool_errmsg(s->ctx->spool)));
        return;
    }
    if (!a.nseen) return;
    if (queue_pager_direct(&s->pager, sched_in_mem(s), a.n, a.min_seen, a.max_seen)) {
        load_place(s, &a);
        return;
    }
    if (sched_debug(s))
        log_write(sched_lg(s), KLOG_DEBUG, "sched.page", "id=%s recipients=%zu in_memory=%lld budget=%lld reason=%s",
                  log_q(sched_lg(s), msg_id), a.n, (long long)sched_in_mem(s), (long long)s->pager.budget,
                  log_q(sched_lg(s), "memory budget: read from the spool in rowid order"));
    load_acc_free(&a);
    sched_pump_soon(s);
}

void sched_load_init(scheduler *s, int64_t budget)
{
    queue_pager_init(&s->pager, budget, SCHED_HORIZON_MS);
    ev_timer_init(&s->page_timer, load_on_page, 0.0, 0.0);
    s->page_timer.data = s;
}
