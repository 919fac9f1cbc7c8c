/* api_pool.c — the worker pool of api_pool.h. One mutex guards the waiting queue and the
 * done list; workers sleep on a condition variable. A finished job goes to the tail of the
 * done list and the loop is woken with ev_async_send; the ev_async callback takes the
 * whole list and calls each job back. Every job is also on the loop-thread-only list of
 * outstanding jobs (submission order) until it is called back, so api_pool_free can drop
 * whatever is left, wherever it was, after joining the workers. Job records are the pool's
 * and freed by it; what a job's arg points to stays its submitter's. */
#include "api/api_pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "base/util.h"
#include "mta/sigv4.h"

#define API_POOL_MAX_THREADS 16
#define API_POOL_KEYCACHE_SLOTS 16   /* signing keys per worker: keys x days x regions */

typedef struct api_pool_job {
    struct api_pool_job *next;        /* in queue or done (under mu) */
    struct api_pool_job *oprev, *onext; /* outstanding list (loop thread only) */
    api_pool_work *work;
    api_pool_done *done;
    void *arg;
} api_pool_job;

struct api_pool {
    struct ev_loop *loop;
    ev_async wake;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    api_pool_job *queue, *queue_tail;
    size_t nqueued, queue_max;
    api_pool_job *done, *done_tail;
    bool stopping;
    api_pool_job *out_head, *out_tail; /* outstanding, in submission order */
    size_t noutstanding;
    pthread_t threads[API_POOL_MAX_THREADS];
    int nthreads;
};

static void *api_pool_worker(void *arg)
{
    api_pool *p = arg;
    sigv4_keycache *kc = sigv4_keycache_new(API_POOL_KEYCACHE_SLOTS);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->queue && !p->stopping) pthread_cond_wait(&p->cv, &p->mu);
        if (p->stopping) break;
        api_pool_job *j = p->queue;
        p->queue = j->next;
        if (!p->queue) p->queue_tail = NULL;
        p->nqueued--;
        pthread_mutex_unlock(&p->mu);

        j->work(j->arg, kc);

        pthread_mutex_lock(&p->mu);
        j->next = NULL;
        if (p->done_tail) p->done_tail->next = j;
        else p->done = j;
        p->done_tail = j;
        ev_async_send(p->loop, &p->wake);
    }
    pthread_mutex_unlock(&p->mu);
    sigv4_keycache_free(kc);
    return NULL;
}

static void api_pool_unlink(api_pool *p, api_pool_job *j)
{
    if (j->oprev) j->oprev->onext = j->onext;
    else p->out_head = j->onext;
    if (j->onext) j->onext->oprev = j->oprev;
    else p->out_tail = j->oprev;
    p->noutstanding--;
}

static void api_pool_on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    api_pool *p = w->data;
    pthread_mutex_lock(&p->mu);
    api_pool_job *list = p->done;
    p->done = p->done_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    while (list) {
        api_pool_job *j = list;
        list = j->next;
        api_pool_unlink(p, j);
        api_pool_done *done = j->done;
        void *arg = j->arg;
        free(j);
        done(arg, false);
    }
}

api_pool *api_pool_new(struct ev_loop *loop, int nthreads, size_t queue_max)
{
    if (nthreads < 1) nthreads = 1;
    if (nthreads > API_POOL_MAX_THREADS) nthreads = API_POOL_MAX_THREADS;
    api_pool *p = util_calloc(1, sizeof *p);
    p->loop = loop;
    p->queue_max = queue_max ? queue_max : 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    ev_async_init(&p->wake, api_pool_on_wake);
    p->wake.data = p;
    ev_async_start(loop, &p->wake);
    for (int i = 0; i < nthreads; i++) {
        int rc = pthread_create(&p->threads[i], NULL, api_pool_worker, p);
        if (rc != 0) util_fatal("api_pool: cannot start worker thread %d: %s", i, strerror(rc));
        p->nthreads++;
    }
    return p;
}

void api_pool_free(api_pool *p)
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
    while (p->out_head) {
        api_pool_job *j = p->out_head;
        api_pool_unlink(p, j);
        api_pool_done *done = j->done;
        void *arg = j->arg;
        free(j);
        done(arg, true);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

bool api_pool_submit(api_pool *p, api_pool_work *work, api_pool_done *done, void *arg)
{
    api_pool_job *j = util_calloc(1, sizeof *j);
    j->work = work;
    j->done = done;
    j->arg = arg;
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
        api_pool_unlink(p, j);
        free(j);
    }
    return !full;
}

size_t api_pool_queued(api_pool *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->nqueued;
    pthread_mutex_unlock(&p->mu);
    return n;
}

size_t api_pool_outstanding(const api_pool *p)
{
    return p->noutstanding;
}
