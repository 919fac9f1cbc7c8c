/* api_pool.h — the SES API's worker pool: base/workpool.h, each worker with a SigV4
 * signing-key cache of its own (mta/sigv4.h) as its context, handed to every work function
 * as `ctx` (a sigv4_keycache *). What runs on it is api/api_prep.c. */
#ifndef KILN_API_POOL_H
#define KILN_API_POOL_H

#include <stddef.h>

#include "base/workpool.h"

struct ev_loop;

/* nthreads workers (1..16), at most queue_max waiting jobs. Free with workpool_free. */
workpool *api_pool_new(struct ev_loop *loop, int nthreads, size_t queue_max);
/* A signing-key cache like each worker's, for the requests prepared on the loop itself
 * (api.c). Free with sigv4_keycache_free. */
struct sigv4_keycache *api_pool_keycache_new(void);

#endif
