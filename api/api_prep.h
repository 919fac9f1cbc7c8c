/* api_prep.h — the part of an SES API request that needs no daemon state, done on a worker
 * of api/api_pool.h: the SigV4 check (mta/sigv4.h, with the worker's signing-key cache),
 * routing and the input validated against the model (api/model.h: the JSON body parsed by
 * jansson and checked against botocore's shapes), and SendEmail's Content.Raw.Data decoded
 * (api/mime.h mime_raw_decode). It only computes: the loop thread (api/api.c) then answers
 * from the results in the same order and with the same errors as when it did all of this
 * itself; rate limits, policy, templates, the spool and events stay on the loop.
 *
 * Thread rules: api_prep_run reads the request and the config named in the prep and writes
 * only the prep. The caller guarantees that neither changes or goes away while the job is
 * out (the request belongs to an exchange the API holds until it replies; the config is
 * held by a reference, and a reload swaps ctx->cfg, never changes a published config). */
#ifndef KILN_API_PREP_H
#define KILN_API_PREP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "api/api_msg.h"
#include "api/http.h"
#include "api/model.h"
#include "base/config.h"
#include "mta/sigv4.h"

typedef struct api_prep {
    /* in */
    const http_request *req;
    const config *cfg;
    int64_t now_ms;
    /* out: who */
    sigv4_result auth;
    char *key_id;                 /* SIGV4_OK: the access key id */
    char *auth_msg;               /* otherwise: AWS's message (may be NULL) */
    /* out: what (only when auth is SIGV4_OK) */
    const api_model_op *op;       /* NULL: no operation; path_known says 405 or 404 */
    bool path_known;
    json_t *in;                   /* the validated input (when op has an input shape) */
    char *in_err;                 /* or why it is not valid (NULL: no message) */
    /* out: SendEmail's Content.Raw.Data, decoded when `in` holds one (api/api_msg.h: taken
       by the build of that message) */
    api_msg_raw raw;
} api_prep;

/* Fills the prep's outputs (see above). kc: the calling thread's cache, or NULL. */
void api_prep_run(api_prep *p, sigv4_keycache *kc);
/* Frees the outputs nobody took (a taker sets the field to NULL) and clears them. */
void api_prep_clear(api_prep *p);

#endif
