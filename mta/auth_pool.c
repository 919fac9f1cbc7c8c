/* auth_pool.c — the password checks of auth_pool.h on a base/workpool.c: a job carries
 * copies of the password and hash; the work runs crypt and wipes the password; the done
 * callback calls the submitter back unless the job was cancelled (or dropped when the pool
 * is freed) and frees the job, wiping what is left. */
#include "mta/auth_pool.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "base/util.h"
#include "base/workpool.h"
#include "mta/auth.h"

struct auth_job {
    workpool_job *wj;         /* its handle in the pool */
    bool want_match;
    bool ok;
    char *pass;
    char *hash;
    auth_pool_done *done;
    void *arg;
};

struct auth_pool {
    workpool *wp;
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

static void auth_pool_work(void *arg, void *ctx)
{
    (void)ctx;
    auth_job *j = arg;
    j->ok = auth_crypt_check(j->pass, j->hash, j->want_match ? j->hash : NULL);
    OPENSSL_cleanse(j->pass, strlen(j->pass));
}

static void auth_pool_done_job(void *arg, bool dropped)
{
    auth_job *j = arg;
    if (!dropped) j->done(j->arg, j->ok);
    auth_pool_job_free(j);
}

auth_pool *auth_pool_new(struct ev_loop *loop, int nthreads, size_t queue_max)
{
    auth_pool *p = util_calloc(1, sizeof *p);
    p->wp = workpool_new(loop, "auth_pool", nthreads, queue_max, NULL, NULL);
    return p;
}

void auth_pool_free(auth_pool *p)
{
    if (!p) return;
    workpool_free(p->wp);      /* every job left is dropped: no submitter is called */
    free(p);
}

auth_job *auth_pool_submit(auth_pool *p, const char *pass, const char *hash, bool want_match,
                           auth_pool_done *done, void *arg)
{
    auth_job *j = util_calloc(1, sizeof *j);
    j->pass = util_strdup(pass);
    j->hash = util_strdup(hash);
    j->want_match = want_match;
    j->done = done;
    j->arg = arg;
    j->wj = workpool_submit(p->wp, auth_pool_work, auth_pool_done_job, j);
    if (!j->wj) {
        auth_pool_job_free(j);
        return NULL;
    }
    return j;
}

void auth_pool_cancel(auth_pool *p, auth_job *job)
{
    if (job) workpool_cancel(p->wp, job->wj);   /* its done call frees it, calling no one */
}

size_t auth_pool_queued(auth_pool *p)
{
    return workpool_queued(p->wp);
}
