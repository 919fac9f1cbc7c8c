/* api_prep.c — the pure part of an SES API request (api/api_prep.h), run on a worker thread:
 * what api.c's request handler did itself before the first check that needs daemon state,
 * plus the Content.Raw decode that SendEmail would do later. Each step runs only when the
 * steps before it passed, as the answers given from them are ordered: SigV4, routing, the
 * input, the raw message. */
#include "api/api_prep.h"

#include <stdlib.h>
#include <string.h>

#include "api/mime.h"
#include "base/util.h"

static const char *api_prep_secret_of(void *arg, const char *id)
{
    const config_access_key *k = config_find_access_key(arg, id);
    return k ? k->secret : NULL;
}

/* SendEmail's Content.Raw.Data decoded with the config's message size cap. */
static void api_prep_raw(api_prep *p)
{
    json_t *raw = json_object_get(json_object_get(p->in, "Content"), "Raw");
    const char *b64 = json_string_value(json_object_get(raw, "Data"));
    if (!b64) return;
    p->raw.b64 = b64;
    p->raw.msg = mime_raw_decode(b64, strlen(b64), (size_t)p->cfg->max_message_size,
                                 &p->raw.len, &p->raw.err);
}

void api_prep_run(api_prep *p, sigv4_keycache *kc)
{
    const http_request *req = p->req;
    sigv4_header hsmall[32];
    sigv4_header *hs = req->nheaders <= 32 ? hsmall
                                           : util_calloc(req->nheaders, sizeof *hs);
    for (size_t i = 0; i < req->nheaders; i++) {
        hs[i].name = req->headers[i].name;
        hs[i].value = req->headers[i].value;
    }
    sigv4_request sr = {
        .method = req->method, .path = req->path, .query = req->query,
        .headers = hs, .nheaders = req->nheaders, .body = req->body, .body_len = req->body_len,
    };
    p->auth = sigv4_verify_cached(&sr, p->cfg->region, "ses", api_prep_secret_of,
                                  (void *)p->cfg, p->now_ms, kc, &p->key_id, &p->auth_msg);
    if (hs != hsmall) free(hs);
    if (p->auth != SIGV4_OK) return;

    json_t *labels = NULL;
    p->op = api_model_match(req->method, req->path, &labels, &p->path_known);
    if (p->op && api_model_op_has_input(p->op))
        p->in = api_model_input(p->op, labels, req->query, req->body, req->body_len,
                                &p->in_err);
    json_decref(labels);
    if (p->in && strcmp(api_model_op_name(p->op), "SendEmail") == 0) api_prep_raw(p);
}

void api_prep_clear(api_prep *p)
{
    free(p->key_id);
    free(p->auth_msg);
    json_decref(p->in);
    free(p->in_err);
    free(p->raw.msg);
    free(p->raw.err);
    p->key_id = p->auth_msg = p->in_err = NULL;
    p->in = NULL;
    memset(&p->raw, 0, sizeof p->raw);
}
