/* api_pool.c — the SES API's worker pool (api_pool.h): a workpool whose workers each make a
 * signing-key cache when they start and free it when they stop. */
#include "api/api_pool.h"

#include "mta/sigv4.h"

#define API_POOL_KEYCACHE_SLOTS 16   /* signing keys per worker: keys x days x regions */

sigv4_keycache *api_pool_keycache_new(void)
{
    return sigv4_keycache_new(API_POOL_KEYCACHE_SLOTS);
}

static void *api_pool_ctx_new(void)
{
    return api_pool_keycache_new();
}

static void api_pool_ctx_free(void *ctx)
{
    sigv4_keycache_free(ctx);
}

workpool *api_pool_new(struct ev_loop *loop, int nthreads, size_t queue_max)
{
    return workpool_new(loop, "api_pool", nthreads, queue_max, api_pool_ctx_new,
                        api_pool_ctx_free);
}
