/* workpool.h — CPU-heavy work off the event loop: a few worker threads (pthreads) take jobs
 * from a bounded queue, run each job's work function, and hand the finished jobs back to
 * the loop through one ev_async; each job's done callback then runs on the loop thread.
 * Used by the SMTP AUTH password checks (mta/auth_pool.c) and the SES API's request
 * preparation (api/api_pool.c). Hand-written on pthreads and libev: the pattern is a few
 * dozen lines, smaller than a thread-pool library would be to wire into the loop.
 *
 * Promises: at most `queue_max` jobs wait (workpool_submit says no beyond that); a work
 * function runs on a worker thread with that worker's own context (made by ctx_new when the
 * worker starts, freed by ctx_free when it stops) and must touch only what its job owns or
 * what no other thread changes while the job is out; every job submitted gets exactly one
 * done call on the loop thread: done(arg, false) after its work ran, or done(arg, true)
 * when it was dropped: cancelled (at once if it was still waiting, its work never run; else
 * when it comes back) or left when the pool is freed (in submission order). A dropped
 * job's result is not to be used. */
#ifndef KILN_WORKPOOL_H
#define KILN_WORKPOOL_H

#include <stdbool.h>
#include <stddef.h>

struct ev_loop;
typedef struct workpool workpool;
typedef struct workpool_job workpool_job;

/* Runs on a worker thread; ctx is that worker's own (NULL without ctx_new). */
typedef void workpool_work(void *arg, void *ctx);
/* Runs on the loop thread, once per job. */
typedef void workpool_done(void *arg, bool dropped);
typedef void *workpool_ctx_new(void);
typedef void workpool_ctx_free(void *ctx);

/* nthreads workers (1..16), at most queue_max waiting jobs (at least 1); ctx_new/ctx_free
 * may be NULL. Aborts when the threads cannot be started (`name` says whose, in the message). */
workpool *workpool_new(struct ev_loop *loop, const char *name, int nthreads, size_t queue_max,
                       workpool_ctx_new *ctx_new, workpool_ctx_free *ctx_free);
/* Stops and joins the workers (a running job is finished first), then calls done(arg,
 * true) for every job not handed back yet, in submission order. NULL is fine. */
void workpool_free(workpool *p);
/* Queues a job: a handle valid until its done call, or NULL (nothing queued, done never
 * called) when queue_max jobs wait. */
workpool_job *workpool_submit(workpool *p, workpool_work *work, workpool_done *done, void *arg);
/* The job's result is not wanted: done(arg, true) now if it was waiting (its work never
 * runs), else when it comes back. Loop thread only. */
void workpool_cancel(workpool *p, workpool_job *j);
/* Jobs waiting for a worker now, and jobs submitted but not yet called back. */
size_t workpool_queued(workpool *p);
size_t workpool_outstanding(const workpool *p);

#endif
