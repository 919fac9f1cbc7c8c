/* workpool.c — the worker pool of workpool.h. One mutex guards the waiting queue and the
 * done list; workers sleep on a condition variable. A finished job goes to the tail of the
 * done list and the loop is woken with ev_async_send; the ev_async callback takes the
 * whole list and calls each job back. Every job is also on the loop-thread-only list of
 * outstanding jobs (submission order) until it is called back, so workpool_free can drop
 * whatever is left, wherever it was, after joining the workers. Job records are the pool's
 * and freed by it; what a job's arg points to stays its submitter's. */
#include "base/workpool.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "base/util.h"

#define WORKPOOL_MAX_THREADS 16

typedef enum { WORKPOOL_QUEUED, WORKPOOL_RUNNING, WORKPOOL_DONE } workpool_state;

struct workpool_job {
    struct workpool_job *next;          /* in queue or done (under mu) */
    struct workpool_job *oprev, *onext; /* outstanding list (loop thread only) */
    workpool_state state;               /* under mu */
    bool cancelled;                     /* loop thread only */
    workpool_work *work;
    workpool_done *done;
    void *arg;
};

struct workpool {
    struct ev_loop *loop;
    char *name;
    ev_async wake;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    workpool_job *queue, *queue_tail;
    size_t nqueued, queue_max;
    workpool_job *done, *done_tail;
    bool stopping;
    workpool_job *out_head, *out_tail;  /* outstanding, in submission order */
    size_t noutstanding;
    workpool_ctx_new *ctx_new;
    workpool_ctx_free *ctx_free;
    pthread_t threads[WORKPOOL_MAX_THREADS];
    int nthreads;
};

static void *workpool_worker(void *arg)
{
    workpool *p = arg;
    void *ctx = p->ctx_new ? p->ctx_new() : NULL;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->queue && !p->stopping) pthread_cond_wait(&p->cv, &p->mu);
        if (p->stopping) break;
        workpool_job *j = p->queue;
        p->queue = j->next;
        if (!p->queue) p->queue_tail = NULL;
        p->nqueued--;
        j->state = WORKPOOL_RUNNING;
        pthread_mutex_unlock(&p->mu);

        j->work(j->arg, ctx);

        pthread_mutex_lock(&p->mu);
        j->state = WORKPOOL_DONE;
        j->next = NULL;
        if (p->done_tail) p->done_tail->next = j;
        else p->done = j;
        p->done_tail = j;
        ev_async_send(p->loop, &p->wake);
    }
    pthread_mutex_unlock(&p->mu);
    if (p->ctx_free) p->ctx_free(ctx);
    return NULL;
}

static void workpool_unlink(workpool *p, workpool_job *j)
{
    if (j->oprev) j->oprev->onext = j->onext;
    else p->out_head = j->onext;
    if (j->onext) j->onext->oprev = j->oprev;
    else p->out_tail = j->oprev;
    p->noutstanding--;
}

/* The job's one done call; its record is freed first (done may submit again). */
static void workpool_finish(workpool *p, workpool_job *j, bool dropped)
{
    workpool_unlink(p, j);
    workpool_done *done = j->done;
    void *arg = j->arg;
    dropped = dropped || j->cancelled;
    free(j);
    done(arg, dropped);
}

static void workpool_on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    workpool *p = w->data;
    pthread_mutex_lock(&p->mu);
    workpool_job *list = p->done;
    p->done = p->done_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    while (list) {
        workpool_job *j = list;
        list = j->next;
        workpool_finish(p, j, false);
    }
}

workpool *workpool_new(struct ev_loop *loop, const char *name, int nthreads, size_t queue_max,
                       workpool_ctx_new *ctx_new, workpool_ctx_free *ctx_free)
{
    if (nthreads < 1) nthreads = 1;
    if (nthreads > WORKPOOL_MAX_THREADS) nthreads = WORKPOOL_MAX_THREADS;
    workpool *p = util_calloc(1, sizeof *p);
    p->loop = loop;
    p->name = util_strdup(name);
    p->queue_max = queue_max ? queue_max : 1;
    p->ctx_new = ctx_new;
    p->ctx_free = ctx_free;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    ev_async_init(&p->wake, workpool_on_wake);
    p->wake.data = p;
    ev_async_start(loop, &p->wake);
    for (int i = 0; i < nthreads; i++) {
        int rc = pthread_create(&p->threads[i], NULL, workpool_worker, p);
        if (rc != 0)
            util_fatal("%s: cannot start worker thread %d: %s", p->name, i, strerror(rc));
        p->nthreads++;
    }
    return p;
}

void workpool_free(workpool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
    ev_async_stop(p->loop, &p->wake);
    /* no worker is left: whatever is outstanding (queued, or done and not handed back)
     * is dropped, in submission order */
    while (p->out_head) workpool_finish(p, p->out_head, true);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->name);
    free(p);
}

workpool_job *workpool_submit(workpool *p, workpool_work *work, workpool_done *done, void *arg)
{
    workpool_job *j = util_calloc(1, sizeof *j);
    j->work = work;
    j->done = done;
    j->arg = arg;
    j->state = WORKPOOL_QUEUED;
    j->oprev = p->out_tail;                  /* outstanding first: a worker may finish it */
    if (p->out_tail) p->out_tail->onext = j; /* before this function returns */
    else p->out_head = j;
    p->out_tail = j;
    p->noutstanding++;
    pthread_mutex_lock(&p->mu);
    bool full = p->nqueued >= p->queue_max;
    if (!full) {
        if (p->queue_tail) p->queue_tail->next = j;
        else p->queue = j;
        p->queue_tail = j;
        p->nqueued++;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    if (full) {
        workpool_unlink(p, j);
        free(j);
        return NULL;
    }
    return j;
}

void workpool_cancel(workpool *p, workpool_job *j)
{
    if (!j) return;
    pthread_mutex_lock(&p->mu);
    if (j->state == WORKPOOL_QUEUED) {        /* no worker has it: out of the queue now */
        workpool_job **pp = &p->queue, *prev = NULL;
        while (*pp != j) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        *pp = j->next;
        if (p->queue_tail == j) p->queue_tail = prev;
        p->nqueued--;
        pthread_mutex_unlock(&p->mu);
        workpool_finish(p, j, true);
        return;
    }
    j->cancelled = true;                      /* running or done: dropped when it comes back */
    pthread_mutex_unlock(&p->mu);
}

size_t workpool_queued(workpool *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->nqueued;
    pthread_mutex_unlock(&p->mu);
    return n;
}

size_t workpool_outstanding(const workpool *p)
{
    return p->noutstanding;
}
