/* control_query.c — the worker thread of control_query.h.
 *
 * One mutex guards the waiting queue and the done list; the worker sleeps on a condition
 * variable, takes queries in order, and for each: counts the spool's pending recipients per
 * (set, domain, state) through its own read-only connection (opened at its first query, kept until the end)
 * when the snapshot says some recipients are in the spool only, makes the rows
 * (scheduler_queue_finish) and the whole answer line (control_queue_answer); then puts the
 * query on the done list and wakes the loop with ev_async_send. On the loop, the ev_async
 * callback answers each query's client, if it is still connected, and logs it.
 *
 * The worker touches nothing the loop owns: the snapshot holds copies, the answer is built
 * from fresh jansson objects (jansson is thread-safe for objects not shared; its hash seed is
 * set on the loop by the request's own parse before any query starts), and the pending
 * reply is only touched on the loop. The worker runs at a lower priority (nice 10) than
 * the loop, and gives its arena's free pages back after each report (malloc_trim). */
#include "mta/control_query.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <string.h>

#include <ev.h>

#include "base/util.h"
#include "mta/control_internal.h"
#include "store/spool.h"

#define CONTROL_QUERY_NICE 10   /* the worker thread's niceness */

typedef struct cq_job {
    struct cq_job *next;
    control_pending *pending;   /* loop only */
    scheduler_queue_snap *snap; /* worker: consumed */
    char *domain;
    char *answer;               /* the answer line, made by the worker */
    char *error;                /* a spool read that failed (the answer lacks the spool part) */
} cq_job;

struct control_query {
    struct ev_loop *loop;
    ev_async wake;
    char *spool_dir;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    cq_job *queue, *queue_tail;
    cq_job *done, *done_tail;
    size_t inflight;            /* queued, running or done and not answered yet */
    bool stopping;
    bool started;
    pthread_t thread;
    spool_reader *rd;           /* the worker's; set and cleared under mu (for interrupt) */
};

static void cq_job_free(cq_job *j)
{
    scheduler_queue_snap_free(j->snap);
    free(j->domain);
    free(j->answer);
    free(j->error);
    free(j);
}

/* The worker's part of one query. */
static void cq_run(control_query *q, cq_job *j)
{
    if (scheduler_queue_snap_wants_spool(j->snap)) {
        if (!q->rd) {
            char *err = NULL;
            spool_reader *rd = spool_reader_open(q->spool_dir, &err);
            pthread_mutex_lock(&q->mu);
            q->rd = rd;
            pthread_mutex_unlock(&q->mu);
            if (!rd) j->error = err;
        }
        if (q->rd && spool_reader_count_by(q->rd, scheduler_queue_snap_spool, j->snap) != 0)
            j->error = util_strdup(spool_reader_errmsg(q->rd));
    }
    scheduler_queue_row *rows = NULL;
    size_t n = scheduler_queue_finish(j->snap, &rows);
    j->snap = NULL;
    j->answer = control_queue_answer(rows, n, j->domain);
    scheduler_queue_free(rows, n);
#ifdef __GLIBC__
    /* A report of a large queue went through tens of MB in this thread's malloc arena;
     * give the free pages back now rather than keep them for the next report. */
    malloc_trim(0);
#endif
}

static void *cq_worker(void *arg)
{
    control_query *q = arg;
#ifdef __linux__
    /* Below the loop: a report of a long queue takes seconds of CPU that the loop (SMTP,
     * delivery) should get first when the machine is busy. Linux niceness is per thread. */
    setpriority(PRIO_PROCESS, (id_t)gettid(), CONTROL_QUERY_NICE);
#endif
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->queue && !q->stopping) pthread_cond_wait(&q->cv, &q->mu);
        if (q->stopping) break;
        cq_job *j = q->queue;
        q->queue = j->next;
        if (!q->queue) q->queue_tail = NULL;
        j->next = NULL;
        pthread_mutex_unlock(&q->mu);

        cq_run(q, j);

        pthread_mutex_lock(&q->mu);
        if (q->done_tail) q->done_tail->next = j;
        else q->done = j;
        q->done_tail = j;
        ev_async_send(q->loop, &q->wake);
    }
    spool_reader *rd = q->rd;
    q->rd = NULL;
    pthread_mutex_unlock(&q->mu);
    spool_reader_close(rd);
    return NULL;
}

static void cq_on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    control_query *q = w->data;
    pthread_mutex_lock(&q->mu);
    cq_job *list = q->done;
    q->done = q->done_tail = NULL;
    pthread_mutex_unlock(&q->mu);
    while (list) {
        cq_job *j = list;
        list = j->next;
        q->inflight--;
        control_pending_answer(j->pending, j->answer, j->error, NULL);
        cq_job_free(j);
    }
}

control_query *control_query_new(struct ev_loop *loop, const char *spool_dir)
{
    control_query *q = util_calloc(1, sizeof *q);
    q->loop = loop;
    q->spool_dir = util_strdup(spool_dir);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    ev_async_init(&q->wake, cq_on_wake);
    q->wake.data = q;
    ev_async_start(loop, &q->wake);
    return q;
}

void control_query_free(control_query *q)
{
    if (!q) return;
    pthread_mutex_lock(&q->mu);
    q->stopping = true;
    spool_reader_interrupt(q->rd);
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    if (q->started) pthread_join(q->thread, NULL);
    ev_async_stop(q->loop, &q->wake);
    cq_job *lists[2] = {q->queue, q->done};
    for (int i = 0; i < 2; i++)
        for (cq_job *j = lists[i], *next; j; j = next) {
            next = j->next;
            control_pending_answer(j->pending, NULL, NULL, "kilnd is stopping");
            cq_job_free(j);
        }
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q->spool_dir);
    free(q);
}

bool control_query_queue(control_query *q, control_pending *p, scheduler_queue_snap *snap,
                         const char *domain)
{
    if (q->inflight >= CONTROL_QUERY_MAX) return false;
    if (!q->started) {
        int rc = pthread_create(&q->thread, NULL, cq_worker, q);
        if (rc != 0) util_fatal("control: cannot start the query thread: %s", strerror(rc));
        q->started = true;
    }
    cq_job *j = util_calloc(1, sizeof *j);
    j->pending = p;
    j->snap = snap;
    j->domain = util_strdup(domain);
    q->inflight++;
    pthread_mutex_lock(&q->mu);
    if (q->queue_tail) q->queue_tail->next = j;
    else q->queue = j;
    q->queue_tail = j;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return true;
}
