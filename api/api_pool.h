/* api_pool.h — the SES API's pure, CPU-heavy request work off the event loop: a few worker
 * threads (pthreads) take jobs from a bounded queue, run each job's work function, and hand
 * the finished jobs back to the loop through one ev_async; each job's done callback then
 * runs on the loop thread. The pattern is mta/auth_pool.c's.
 *
 * Promises: at most `queue_max` jobs wait (api_pool_submit says no beyond that); a work
 * function runs on a worker thread and must touch only what its job owns or what no other
 * thread changes while the job is out (the request, a config it holds a reference to);
 * every job submitted gets exactly one done call on the loop thread: done(arg, false) after
 * its work ran, or done(arg, true) from api_pool_free when the pool is freed first (whether
 * the job was waiting, running or finished: a dropped job's result is not to be used).
 * Each worker keeps its own SigV4 signing-key cache (mta/sigv4.h), handed to the work. */
#ifndef KILN_API_POOL_H
#define KILN_API_POOL_H

#include <stdbool.h>
#include <stddef.h>

struct ev_loop;
struct sigv4_keycache;
typedef struct api_pool api_pool;

/* Runs on a worker thread; kc is that worker's own signing-key cache. */
typedef void api_pool_work(void *arg, struct sigv4_keycache *kc);
/* Runs on the loop thread, once per job; dropped: the pool was freed before the result
 * was handed back (the work may or may not have run). */
typedef void api_pool_done(void *arg, bool dropped);

/* nthreads workers (1..16), at most queue_max waiting jobs (at least 1). Aborts when the
 * threads cannot be started. */
api_pool *api_pool_new(struct ev_loop *loop, int nthreads, size_t queue_max);
/* Stops and joins the workers (a running job is finished first), then calls done(arg,
 * true) for every job not handed back yet, in submission order. NULL is fine. */
void api_pool_free(api_pool *p);

/* Queues a job; false (nothing queued, done never called) when queue_max jobs wait. */
bool api_pool_submit(api_pool *p, api_pool_work *work, api_pool_done *done, void *arg);
/* Jobs waiting for a worker now, and jobs submitted but not yet called back. */
size_t api_pool_queued(api_pool *p);
size_t api_pool_outstanding(const api_pool *p);

#endif
