/* auth_pool.h — password checks off the event loop: a few worker threads (pthreads) take
 * (password, crypt(3) hash) jobs from a bounded queue, run crypt_rn, and hand each result
 * back to the loop through one ev_async; the job's callback then runs on the loop thread.
 *
 * Promises: at most `queue_max` jobs wait (auth_pool_submit says no beyond that); the
 * password is wiped (OPENSSL_cleanse) as soon as its check is done or the job is dropped;
 * a cancelled job never calls back, whether it was waiting, running or already done, so
 * the submitter may free itself right after auth_pool_cancel. Everything except the worker
 * side runs on the loop thread. */
#ifndef KILN_AUTH_POOL_H
#define KILN_AUTH_POOL_H

#include <stdbool.h>
#include <stddef.h>

struct ev_loop;
typedef struct auth_pool auth_pool;
typedef struct auth_job auth_job;

/* Runs on the loop thread with the check's result (true: the password matches). */
typedef void auth_pool_done(void *arg, bool ok);

/* nthreads workers (1..16), at most queue_max waiting jobs (at least 1). Aborts when the
 * threads cannot be started (a daemon without them could not authenticate anyone). */
auth_pool *auth_pool_new(struct ev_loop *loop, int nthreads, size_t queue_max);
/* Cancels every pending job (none calls back), stops and joins the workers. NULL is fine. */
void auth_pool_free(auth_pool *p);

/* Queues a check of pass against hash. want_match false makes it a decoy: the same crypt
 * work, then "no" (for unknown users). Both strings are copied (the caller wipes its own).
 * Returns the job (a handle for auth_pool_cancel, valid until done is called), or NULL when
 * the queue is full. */
auth_job *auth_pool_submit(auth_pool *p, const char *pass, const char *hash, bool want_match,
                           auth_pool_done *done, void *arg);
/* The job will not call back; its memory is reclaimed by the pool. */
void auth_pool_cancel(auth_pool *p, auth_job *job);
/* Jobs waiting in the queue now (for tests and logs). */
size_t auth_pool_queued(auth_pool *p);

#endif
