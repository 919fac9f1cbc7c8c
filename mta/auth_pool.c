/* auth_pool.c — the worker pool of auth_pool.h. One mutex guards the waiting queue and the
 * done list; workers sleep on a condition variable. A finished job goes to the done list
 * and the loop is woken with ev_async_send; the ev_async callback takes the whole list
 * and calls back every job not cancelled. A job's `state` says where it is:
 * queued (in `queue`, only the loop or a worker may take it), running (a worker holds it),
 * done (in `done`). Cancelling a queued job frees it at once; a running or done one is
 * only marked and freed when it reaches the loop. */
#include "mta/auth_pool.h"

#include <crypt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>
#include <openssl/crypto.h>

#include "base/util.h"
#include "mta/auth.h"

#define AUTH_POOL_MAX_THREADS 16

typedef enum { AUTH_JOB_QUEUED, AUTH_JOB_RUNNING, AUTH_JOB_DONE } auth_job_state;

struct auth_job {
    auth_job *next;
    auth_job_state state;
    bool cancelled;           /* loop thread only */
    bool want_match;
    bool ok;
    char *pass;
    char *hash;
    auth_pool_done *done;
    void *arg;
};

struct auth_pool {
    struct ev_loop *loop;
    ev_async wake;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    auth_job *queue, *queue_tail;
    size_t nqueued, queue_max;
    auth_job *done;           /* finished, in no particular order */
    bool stopping;
    pthread_t threads[AUTH_POOL_MAX_THREADS];
    int nthreads;
};

static void auth_pool_job_free(auth_job *j)
{
    if (j->pass) {
        OPENSSL_cleanse(j->pass, strlen(j->pass));
        free(j->pass);
    }
    free(j->hash);
    free(j);
}

static void *auth_pool_worker(void *arg)
{
    auth_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->queue && !p->stopping) pthread_cond_wait(&p->cv, &p->mu);
        if (p->stopping) break;
        auth_job *j = p->queue;
        p->queue = j->next;
        if (!p->queue) p->queue_tail = NULL;
        p->nqueued--;
        j->state = AUTH_JOB_RUNNING;
        pthread_mutex_unlock(&p->mu);

        bool ok = auth_crypt_check(j->pass, j->hash, j->want_match ? j->hash : NULL);
        OPENSSL_cleanse(j->pass, strlen(j->pass));

        pthread_mutex_lock(&p->mu);
        j->ok = ok;
        j->state = AUTH_JOB_DONE;
        j->next = p->done;
        p->done = j;
        ev_async_send(p->loop, &p->wake);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void auth_pool_on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    auth_pool *p = w->data;
    pthread_mutex_lock(&p->mu);
    auth_job *list = p->done;
    p->done = NULL;
    pthread_mutex_unlock(&p->mu);
    while (list) {
        auth_job *j = list;
        list = j->next;
        if (!j->cancelled) j->done(j->arg, j->ok);
        auth_pool_job_free(j);
    }
}

auth_pool *auth_pool_new(struct ev_loop *loop, int nthreads, size_t queue_max)
{
    if (nthreads < 1) nthreads = 1;
    if (nthreads > AUTH_POOL_MAX_THREADS) nthreads = AUTH_POOL_MAX_THREADS;
    auth_pool *p = util_calloc(1, sizeof *p);
    p->loop = loop;
    p->queue_max = queue_max ? queue_max : 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    ev_async_init(&p->wake, auth_pool_on_wake);
    p->wake.data = p;
    ev_async_start(loop, &p->wake);
    for (int i = 0; i < nthreads; i++) {
        int rc = pthread_create(&p->threads[i], NULL, auth_pool_worker, p);
        if (rc != 0) util_fatal("auth_pool: cannot start worker thread %d: %s", i, strerror(rc));
        p->nthreads++;
    }
    return p;
}

void auth_pool_free(auth_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
    ev_async_stop(p->loop, &p->wake);
    for (auth_job *j = p->queue, *next; j; j = next) {
        next = j->next;
        auth_pool_job_free(j);
    }
    for (auth_job *j = p->done, *next; j; j = next) {
        next = j->next;
        auth_pool_job_free(j);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

auth_job *auth_pool_submit(auth_pool *p, const char *pass, const char *hash, bool want_match,
                           auth_pool_done *done, void *arg)
{
    pthread_mutex_lock(&p->mu);
    bool full = p->nqueued >= p->queue_max;
    pthread_mutex_unlock(&p->mu);
    if (full) return NULL;
    auth_job *j = util_calloc(1, sizeof *j);
    j->pass = util_strdup(pass);
    j->hash = util_strdup(hash);
    j->want_match = want_match;
    j->done = done;
    j->arg = arg;
    j->state = AUTH_JOB_QUEUED;
    pthread_mutex_lock(&p->mu);
    if (p->queue_tail) p->queue_tail->next = j;
    else p->queue = j;
    p->queue_tail = j;
    p->nqueued++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return j;
}

void auth_pool_cancel(auth_pool *p, auth_job *job)
{
    if (!job) return;
    pthread_mutex_lock(&p->mu);
    if (job->state == AUTH_JOB_QUEUED) {
        auth_job **pp = &p->queue, *prev = NULL;
        while (*pp != job) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        *pp = job->next;
        if (p->queue_tail == job) p->queue_tail = prev;
        p->nqueued--;
        pthread_mutex_unlock(&p->mu);
        auth_pool_job_free(job);
        return;
    }
    job->cancelled = true;    /* running or done: freed when it reaches the loop */
    pthread_mutex_unlock(&p->mu);
}

size_t auth_pool_queued(auth_pool *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->nqueued;
    pthread_mutex_unlock(&p->mu);
    return n;
}
