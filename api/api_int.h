/* api_int.h — what an operation handler of the SES v2 API sees: one call (the request, the
 * authenticated access key, the model-validated input) and the two ways to answer it.
 * A handler answers at once or later from the loop (after a spool commit); exactly once. */
#ifndef KILN_API_INT_H
#define KILN_API_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "api/http.h"
#include "base/config.h"
#include "base/kiln.h"
#include "base/workpool.h"

typedef struct api_call {
    struct api *api;                /* the front that counts it */
    kiln_ctx *ctx;
    const config *cfg;              /* ref held for the call's life */
    const http_request *req;
    http_exchange *x;
    const char *op;                 /* "SendEmail" (NULL before routing) */
    const struct api_model_op *model_op;
    char *key_id;                   /* the authenticated access key id (NULL before) */
    const config_access_key *key;   /* the authenticated key (its scope: key->scope) */
    json_t *in;                     /* validated input, keyed by the model's member names */
    char request_id[40];            /* x-amzn-RequestId of the answer */
    struct api_prep *prep;          /* what a worker worked out (api/api_prep.h) */
    int64_t now_ms;
    int limit_asks;                 /* cluster leases this call waited for (api_send.c) */
} api_call;

/* 2xx with body (taken; NULL: "{}"), status from the model. Frees the call. */
void api_ok(api_call *c, json_t *body);
/* 2xx whose JSON body is text already (taken). Frees the call. */
void api_ok_text(api_call *c, char *text);
/* Error answer: status, x-amzn-ErrorType: type, body {"message": msg} (botocore reads
 * both). Frees the call. Logs api.error op= type= message=. */
void api_error(api_call *c, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Shorthands for SES's error types. */
#define API_BAD_REQUEST(c, ...)  api_error((c), 400, "BadRequestException", __VA_ARGS__)
#define API_NOT_FOUND(c, ...)    api_error((c), 404, "NotFoundException", __VA_ARGS__)

/* Helpers over c->in. */
const char *api_in_str(const api_call *c, const char *name);     /* NULL if absent */
json_t *api_in(const api_call *c, const char *name);             /* borrowed; NULL if absent */

/* Request bodies up to this size are prepared on the loop (at most ~0.15 ms); a larger one
 * is prepared on a worker (api.c), and SendEmail builds its message there too (api_send.c:
 * a Simple body of 8 MB takes the MIME encoder about 0.3 s). */
#define API_INLINE_BODY_MAX (16 * 1024)

/* Work too long for the loop (a template rendered, up to 10 MB a part): work(arg, ctx) on
 * a worker of the API's pool, then done(arg, dropped) back on the loop (dropped: kilnd is
 * stopping; the work did not run or its result is not to be used, and nothing may be
 * offloaded from done any more). While it is out, the loop leaves what work reads alone.
 * false when API_POOL_QUEUE_MAX jobs wait already: nothing queued, done never called. */
bool api_offload(api_call *c, workpool_work *work, workpool_done *done, void *arg);
/* The answer when api_offload says no (503 ServiceUnavailable). */
void api_busy(api_call *c);

/* The account's 12-digit id (ARNs). */
void api_account_id(const api_call *c, char out[16]);

/* ---- operation handlers (one per model operation kiln answers) ---- */
typedef void (*api_handler)(api_call *c);

/* api/api_send.c */
void api_op_send_email(api_call *c);
void api_op_send_bulk_email(api_call *c);
/* api/api_templates.c */
void api_op_create_email_template(api_call *c);
void api_op_get_email_template(api_call *c);
void api_op_list_email_templates(api_call *c);
void api_op_update_email_template(api_call *c);
void api_op_delete_email_template(api_call *c);
void api_op_test_render_email_template(api_call *c);
/* Looks up a stored template: 0 with *subject, *text, *html (malloc'd or NULL), 1 if there
 * is none, -1 on a spool error. Used by SendEmail's Content.Template too. */
int api_template_get(kiln_ctx *ctx, const char *name, char **subject, char **text, char **html);
/* api/api_account.c: GetAccount, identities and configuration sets (read-only) */
void api_op_get_account(api_call *c);
void api_op_list_email_identities(api_call *c);
void api_op_get_email_identity(api_call *c);
void api_op_list_configuration_sets(api_call *c);
void api_op_get_configuration_set(api_call *c);
/* api/api_ips.c */
void api_op_get_dedicated_ips(api_call *c);
void api_op_get_dedicated_ip(api_call *c);
void api_op_put_dedicated_ip_warmup_attributes(api_call *c);
void api_op_list_dedicated_ip_pools(api_call *c);
void api_op_get_dedicated_ip_pool(api_call *c);
void api_op_config_owned(api_call *c);   /* Create/DeleteDedicatedIpPool, PutDedicatedIpInPool */
/* api/api_suppression.c */
void api_op_put_suppressed_destination(api_call *c);
void api_op_get_suppressed_destination(api_call *c);
void api_op_delete_suppressed_destination(api_call *c);
void api_op_list_suppressed_destinations(api_call *c);

/* Paging tokens (NextToken): an opaque base64url string of the last key shown, bound to
 * the operation (a token of another operation is InvalidNextTokenException / 400). */
char *api_next_token(const char *op, const char *last_key);
char *api_next_token_key(const char *op, const char *token);   /* NULL if not ours */
/* PageSize (1..max; absent: def) and NextToken of c's list operation: *page, and *after the
 * last key shown (malloc'd, NULL without a token). -1 after answering the error (a bad
 * token: bad_token_type, InvalidNextTokenException where the model lists it, else
 * BadRequestException). */
int api_page_args(api_call *c, size_t def, size_t max, const char *bad_token_type,
                  size_t *page, char **after);

#endif
