/* api.c — the SES v2 API's front: every HTTP request from api/http.c is authenticated
 * (SigV4 against api.access_keys, region server.region, service "ses"), held to its access
 * key's request rate, routed and validated against botocore's model (api/model.h), and
 * handed to one operation handler (api/api_*.c), which answers with api_ok or api_error,
 * at once or after a spool commit. Errors carry SES's x-amzn-ErrorType and a JSON
 * {"message": ...} body, as botocore parses them. One log line per answered request.
 * The pure part of a request (SigV4, routing, parsing and validating the input, decoding
 * Content.Raw) is done by api/api_prep.c: on the loop itself for a body of at most
 * API_INLINE_BODY_MAX bytes, as long as no more than API_INLINE_PER_ITERATION requests
 * were prepared there in the same loop iteration, else on a worker of api/api_pool.c (a
 * raw message may be 40 MB; its hashing and decoding never run on the loop). A small
 * request costs the loop about 20 us to prepare, less than the hand-off to a worker and
 * back (0.2-0.4 ms of latency at 2,000 msgs/s, and CPU for the wake-ups), so a request
 * that comes alone is prepared at once. When many come in one iteration (the clients a
 * group commit has just answered all send their next request together), preparing them
 * one after another on the loop would make the last wait for all the others: the first
 * two are prepared on the loop, the rest in parallel on the workers (bench_api: 0.92 of
 * SMTP's rate at full speed instead of 0.81, the same latency at 2,000 msgs/s). The
 * answers are then given on the loop in the order above, which is also where everything
 * that reads or changes kilnd's state happens. */
#include "api/api.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>
#include <openssl/rand.h>

#include "api/api_int.h"
#include "api/api_pool.h"
#include "api/api_prep.h"
#include "api/model.h"
#include "base/metrics.h"
#include "base/util.h"
#include "mta/accept.h"
#include "mta/sigv4.h"
#include "store/event.h"

#define API_KEYS_MAX_TRACKED 1024   /* rate buckets; keys beyond (never in practice) share one */
#define API_POOL_THREADS_MAX 4      /* workers: one per CPU, 1..4 */
#define API_POOL_QUEUE_MAX 1024     /* requests waiting for a worker; beyond: a large body
                                       gets 503, a small one is prepared on the loop */
#define API_INLINE_PER_ITERATION 2       /* small requests prepared on the loop per iteration */

typedef struct api_bucket {
    char *key_id;
    double tokens;
    int64_t last_ms;
} api_bucket;

struct api {
    kiln_ctx *ctx;
    http_server *http;
    workpool *pool;               /* the pure part of large requests (api/api_prep.h) */
    sigv4_keycache *kc;           /* signing keys for the requests prepared on the loop */
    unsigned iter;                /* the loop iteration inline_n counts in (ev_iteration) */
    unsigned inline_n;            /* small requests prepared on the loop in that iteration */
    api_bucket *buckets;
    size_t nbuckets;
    size_t pending;               /* calls not answered yet */
    uint64_t rid_state;           /* request ids (api_request_id) */
    bool stopping;                /* api_shutdown: new requests get 503 */
    void (*stopped)(void *arg);   /* called once pending reaches 0 while stopping */
    void *stopped_arg;
};

typedef struct api_dispatch {
    const char *op;
    api_handler fn;
} api_dispatch;

static const api_dispatch api_ops[] = {
    {"SendEmail", api_op_send_email},
    {"SendBulkEmail", api_op_send_bulk_email},
    {"CreateEmailTemplate", api_op_create_email_template},
    {"GetEmailTemplate", api_op_get_email_template},
    {"ListEmailTemplates", api_op_list_email_templates},
    {"UpdateEmailTemplate", api_op_update_email_template},
    {"DeleteEmailTemplate", api_op_delete_email_template},
    {"TestRenderEmailTemplate", api_op_test_render_email_template},
    {"GetAccount", api_op_get_account},
    {"ListEmailIdentities", api_op_list_email_identities},
    {"GetEmailIdentity", api_op_get_email_identity},
    {"ListConfigurationSets", api_op_list_configuration_sets},
    {"GetConfigurationSet", api_op_get_configuration_set},
    {"GetDedicatedIps", api_op_get_dedicated_ips},
    {"GetDedicatedIp", api_op_get_dedicated_ip},
    {"PutDedicatedIpWarmupAttributes", api_op_put_dedicated_ip_warmup_attributes},
    {"ListDedicatedIpPools", api_op_list_dedicated_ip_pools},
    {"GetDedicatedIpPool", api_op_get_dedicated_ip_pool},
    {"CreateDedicatedIpPool", api_op_config_owned},
    {"DeleteDedicatedIpPool", api_op_config_owned},
    {"PutDedicatedIpInPool", api_op_config_owned},
    {"PutSuppressedDestination", api_op_put_suppressed_destination},
    {"GetSuppressedDestination", api_op_get_suppressed_destination},
    {"DeleteSuppressedDestination", api_op_delete_suppressed_destination},
    {"ListSuppressedDestinations", api_op_list_suppressed_destinations},
};

static api_handler api_find_handler(const char *op)
{
    for (size_t i = 0; i < sizeof api_ops / sizeof api_ops[0]; i++)
        if (strcmp(api_ops[i].op, op) == 0) return api_ops[i].fn;
    return NULL;
}

/* ---- answering ---- */

static void api_call_free(api_call *c)
{
    api *a = c->api;
    json_decref(c->in);
    if (c->prep) {
        api_prep_clear(c->prep);
        free(c->prep);
    }
    config_unref((config *)c->cfg);
    free(c->key_id);
    free(c);
    if (--a->pending == 0 && a->stopping && a->stopped) {
        void (*fn)(void *) = a->stopped;
        a->stopped = NULL;
        fn(a->stopped_arg);
    }
}

static void api_log_answer(const api_call *c, int status, const char *type, const char *msg)
{
    klog *lg = c->ctx->log;
    int64_t ms = kiln_now_ms(c->ctx) - c->now_ms;
    if (type)
        log_write(lg, status >= 500 ? KLOG_ERROR : KLOG_INFO, "api.error",
                  "op=%s key=%s client=%s status=%d type=%s ms=%lld request_id=%s message=%s",
                  c->op ? c->op : "-", c->key_id ? c->key_id : "-", c->req->client_ip, status,
                  type, (long long)ms, c->request_id, log_q(lg, msg));
    else
        log_write(lg, KLOG_INFO, "api.request",
                  "op=%s key=%s client=%s status=%d ms=%lld request_id=%s", c->op,
                  c->key_id ? c->key_id : "-", c->req->client_ip, status, (long long)ms,
                  c->request_id);
}

void api_ok(api_call *c, json_t *body)
{
    if (!body) body = json_object();
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    api_ok_text(c, text);
}

void api_ok_text(api_call *c, char *text)
{
    size_t len = strlen(text);
    if (!http_reply_fits(c->x, len)) {      /* a rendered template of 40 MB, say */
        free(text);
        api_error(c, 503, "ServiceUnavailable",
                  "The answer (%zu bytes) does not fit in api.max_inflight_bytes while other "
                  "requests and answers hold it; try again", len);
        return;
    }
    int status = c->model_op ? api_model_op_status(c->model_op) : 200;
    api_log_answer(c, status, NULL, NULL);
    const char *hdrs[] = {"Content-Type", "application/json", "x-amzn-RequestId",
                          c->request_id, NULL};
    http_reply(c->x, status, hdrs, text, len);
    api_call_free(c);
}

void api_error(api_call *c, int status, const char *type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0) msg = NULL;
    va_end(ap);
    json_t *o = json_object();
    json_object_set_new(o, "message", event_jstr(msg ? msg : type));   /* U+FFFD for non-UTF-8 */
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    api_log_answer(c, status, type, msg ? msg : type);
    if (c->op && (strcmp(c->op, "SendEmail") == 0 || strcmp(c->op, "SendBulkEmail") == 0)) {
        /* a refused send, by SES error type (a fixed set: the model's and kiln's own) */
        char reason[80];
        snprintf(reason, sizeof reason, "api_%s", type);
        metrics_add(c->ctx->metrics, "kiln_submissions_total",
                    (const char *const[]){"rejected", reason}, 1);
    }
    const char *hdrs[] = {"Content-Type", "application/json", "x-amzn-ErrorType", type,
                          "x-amzn-RequestId", c->request_id, NULL};
    http_reply(c->x, status, hdrs, text, strlen(text));
    free(msg);
    api_call_free(c);
}

const char *api_in_str(const api_call *c, const char *name)
{
    json_t *v = c->in ? json_object_get(c->in, name) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

json_t *api_in(const api_call *c, const char *name)
{
    return c->in ? json_object_get(c->in, name) : NULL;
}

void api_account_id(const api_call *c, char out[16])
{
    accept_sending_account_id(c->cfg->hostname, out);
}

/* ---- one request ---- */

/* The access key's token bucket (capacity max(1, count), refilled continuously): false
 * when it is empty. */
static bool api_rate_take(api *a, const config *cfg, const char *key_id, int64_t now)
{
    const config_rate *r = &cfg->api_max_request_rate;
    if (r->count < 0 || r->per_ms <= 0) return true;
    api_bucket *b = NULL;
    for (size_t i = 0; i < a->nbuckets; i++)
        if (strcmp(a->buckets[i].key_id, key_id) == 0) b = &a->buckets[i];
    double cap = r->count < 1 ? 1.0 : (double)r->count;
    if (!b) {
        if (a->nbuckets == API_KEYS_MAX_TRACKED) {
            b = &a->buckets[a->nbuckets - 1];
        } else {
            a->buckets = util_realloc(a->buckets, (a->nbuckets + 1) * sizeof *a->buckets);
            b = &a->buckets[a->nbuckets++];
            b->key_id = util_strdup(key_id);
            b->tokens = cap;
            b->last_ms = now;
        }
    }
    if (now > b->last_ms) {
        b->tokens += (double)(now - b->last_ms) * (double)r->count / (double)r->per_ms;
        if (b->tokens > cap) b->tokens = cap;
        b->last_ms = now;
    }
    if (b->tokens < 1.0) return false;
    b->tokens -= 1.0;
    return true;
}

bool api_offload(api_call *c, workpool_work *work, workpool_done *done, void *arg)
{
    return workpool_submit(c->api->pool, work, done, arg) != NULL;
}

void api_busy(api_call *c)
{
    log_write(c->ctx->log, KLOG_WARNING, "api.busy", "client=%s queued=%zu", c->req->client_ip,
              workpool_queued(c->api->pool));
    api_error(c, 503, "ServiceUnavailable",
              "kilnd has too many requests waiting to be processed; try again");
}

/* The prep is back from the pool (api/api_prep.h): the answers in their order. */
static void api_prepared(void *arg, bool dropped)
{
    api_call *c = arg;
    api *a = c->api;
    api_prep *p = c->prep;
    if (dropped) {           /* api_stop: nothing stored, the SDK retries */
        api_error(c, 503, "ServiceUnavailable", "kilnd is stopping; try again");
        return;
    }
    const http_request *req = c->req;

    /* 1. who: SigV4 first, so an unauthenticated client learns nothing of the surface */
    if (p->auth != SIGV4_OK) {
        api_error(c, 403, sigv4_error_type(p->auth), "%s",
                  p->auth_msg ? p->auth_msg : "Access denied");
        return;
    }
    c->key_id = p->key_id;
    p->key_id = NULL;
    c->key = config_find_access_key(c->cfg, c->key_id);

    /* 2. what: the model's operation */
    c->model_op = p->op;
    if (!c->model_op) {
        if (p->path_known)
            api_error(c, 405, "MethodNotAllowedException", "Method %s is not allowed on %s",
                      req->method, req->path);
        else
            api_error(c, 404, "UnknownOperationException", "No SES v2 operation at %s %s",
                      req->method, req->path);
        return;
    }
    c->op = api_model_op_name(c->model_op);
    api_handler fn = api_find_handler(c->op);
    if (!fn || !api_model_op_has_input(c->model_op)) {
        API_BAD_REQUEST(c, "kiln does not support the SES operation %s", c->op);
        return;
    }

    /* 3. how often: the key's request rate */
    if (!api_rate_take(a, c->cfg, c->key_id, c->now_ms)) {
        api_error(c, 429, "TooManyRequestsException",
                  "Too many requests: access key %s is over api.max_request_rate", c->key_id);
        return;
    }

    /* 4. with what: the validated input */
    if (!p->in) {
        API_BAD_REQUEST(c, "%s", p->in_err ? p->in_err : "Invalid request");
        return;
    }
    c->in = p->in;
    p->in = NULL;
    fn(c);
}

static void api_prep_job(void *arg, void *kc)
{
    api_call *c = arg;
    api_prep_run(c->prep, kc);
}

/* The next of a sequence that visits every 64-bit value once (splitmix64's step and mix). */
static uint64_t api_rid_next(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* x-amzn-RequestId, shaped as a version 4 UUID ("8-4-4-4-12" hex, '4' and 'a' where a
 * UUID has them): 128 bits from splitmix64 over a counter that starts where RAND_bytes put
 * it (api_start). The pairs never repeat within a run, and no DRBG call per request on the
 * loop; the id identifies a request in logs and answers, it guards nothing. */
static void api_request_id(api *a, char out[40])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t w[2] = {api_rid_next(&a->rid_state), api_rid_next(&a->rid_state)};
    char r[32];
    for (int i = 0; i < 32; i++) r[i] = hex[(w[i / 16] >> (4 * (i % 16))) & 15];
    char *o = out;
    memcpy(o, r, 8), o += 8, *o++ = '-';
    memcpy(o, r + 8, 4), o += 4, *o++ = '-';
    *o++ = '4', memcpy(o, r + 13, 3), o += 3, *o++ = '-';
    *o++ = 'a', memcpy(o, r + 17, 3), o += 3, *o++ = '-';
    memcpy(o, r + 20, 12), o += 12, *o = '\0';
}

static void api_on_request(void *arg, const http_request *req, http_exchange *x)
{
    api *a = arg;
    kiln_ctx *ctx = a->ctx;
    api_call *c = util_calloc(1, sizeof *c);
    a->pending++;
    c->api = a;
    c->ctx = ctx;
    c->cfg = config_ref(ctx->cfg);
    c->req = req;
    c->x = x;
    c->now_ms = kiln_now_ms(ctx);
    api_request_id(a, c->request_id);

    if (a->stopping) {       /* nothing stored: the SDK retries it elsewhere or later */
        api_error(c, 503, "ServiceUnavailable", "kilnd is stopping; try again");
        return;
    }

    /* the pure work (SigV4, parsing, validation, decoding) here for a small body (the first
     * ones of an iteration, or any when the workers' queue is full), else on a worker; the
     * rest, which needs the daemon's state, on the loop in api_prepared */
    c->prep = util_calloc(1, sizeof *c->prep);
    c->prep->req = req;
    c->prep->cfg = c->cfg;
    c->prep->now_ms = c->now_ms;
    unsigned it = ev_iteration(ctx->loop);
    if (it != a->iter) {
        a->iter = it;
        a->inline_n = 0;
    }
    bool small = req->body_len <= API_INLINE_BODY_MAX;
    if ((small && a->inline_n < API_INLINE_PER_ITERATION) ||
        !workpool_submit(a->pool, api_prep_job, api_prepared, c)) {
        if (small) {
            a->inline_n++;
            api_prep_run(c->prep, a->kc);
            api_prepared(c, false);
            return;
        }
        api_busy(c);
    }
}

/* ---- life cycle ---- */

api *api_start(kiln_ctx *ctx, char **err)
{
    *err = NULL;
    const config *cfg = ctx->cfg;
    if (cfg->napi_listen == 0) return NULL;
    api *a = util_calloc(1, sizeof *a);
    a->ctx = ctx;
    if (RAND_bytes((unsigned char *)&a->rid_state, sizeof a->rid_state) != 1)
        util_fatal("api_start: RAND_bytes failed");
    http_listen *ls = util_calloc(cfg->napi_listen, sizeof *ls);
    for (size_t i = 0; i < cfg->napi_listen; i++) {
        ls[i].host = cfg->api_listen[i].host;
        ls[i].port = cfg->api_listen[i].port;
    }
    http_tls tls = {cfg->api_tls_cert, cfg->api_tls_key};
    http_limits lim = {
        .max_body = (size_t)cfg->api_max_body_size,
        .max_header = 16 * 1024,
        .max_inflight = cfg->api_max_inflight_bytes,
        .max_connections = (unsigned)cfg->api_max_connections,
        .max_per_ip = (unsigned)cfg->api_max_connections_per_client,
        .timeout_s = (unsigned)((cfg->api_timeout_ms + 999) / 1000),
    };
    a->http = http_start(ctx->loop, ctx->log, ls, cfg->napi_listen, &tls, &lim, api_on_request,
                         a, err);
    free(ls);
    if (!a->http) {
        free(a);
        return NULL;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nthreads = ncpu < 1 ? 1 : ncpu > API_POOL_THREADS_MAX ? API_POOL_THREADS_MAX : (int)ncpu;
    a->pool = api_pool_new(ctx->loop, nthreads, API_POOL_QUEUE_MAX);
    a->kc = api_pool_keycache_new();
    return a;
}

int api_port(const api *a, size_t i)
{
    return http_port(a->http, i);
}

void api_config_changed(api *a)
{
    /* keys and limits are read from ctx->cfg per request; buckets of removed keys go */
    for (size_t i = 0; i < a->nbuckets; i++) free(a->buckets[i].key_id);
    free(a->buckets);
    a->buckets = NULL;
    a->nbuckets = 0;
}

void api_shutdown(api *a, void (*done)(void *arg), void *arg)
{
    a->stopping = true;
    http_quiesce(a->http);
    log_write(a->ctx->log, KLOG_INFO, "api.stop", "pending=%zu", a->pending);
    if (a->pending == 0) {
        done(arg);
        return;
    }
    a->stopped = done;
    a->stopped_arg = arg;
}

void api_stop(api *a)
{
    if (!a) return;
    /* requests still with the workers are answered 503 (nothing was stored for them) and
     * freed; no shutdown callback any more, whoever stops us is past waiting */
    a->stopped = NULL;
    workpool_free(a->pool);
    http_stop(a->http);
    api_config_changed(a);
    sigv4_keycache_free(a->kc);
    free(a);
}
