/* test_api_pool.c — the worker pool (base/workpool.c, as api/api_pool.c makes it for the SES
 * API) and what runs on it (api/api_prep.c): work runs off the loop thread and every job is
 * called back once on the loop thread with its result; a full queue says no and never calls
 * back; freeing the pool with jobs queued, running and finished-but-not-handed-back drops each
 * exactly once, in submission order, after any running work has ended (so its memory may go
 * right after); each worker hands its work a signing-key cache of its own. The prep: a request
 * signed by AWS's test suite signer verifies, routes and validates to the same answers as on
 * the loop, and a SendEmail's Content.Raw.Data comes back decoded. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "api/api_pool.h"
#include "api/api_prep.h"
#include "base/util.h"
#include "mta/sigv4.h"
#include "tests/unit/testlib.h"

typedef struct job {
    pthread_t loop_thread;
    pthread_t ran_on;
    atomic_bool ran;
    struct sigv4_keycache *kc;
    int done_calls;
    bool dropped;
    int order;                   /* when it was called back */
    int sleep_ms;                /* work takes this long */
    atomic_bool *gate;           /* work waits until it is true (NULL: no wait) */
    atomic_int *started;         /* counts works that started */
} job;

typedef struct tally {
    struct ev_loop *loop;
    int calls, want;
} tally;

static tally test_tally;

static void work(void *arg, void *kc)
{
    job *j = arg;
    if (j->started) atomic_fetch_add(j->started, 1);
    while (j->gate && !atomic_load(j->gate)) usleep(1000);
    if (j->sleep_ms) usleep((useconds_t)j->sleep_ms * 1000);
    j->ran_on = pthread_self();
    j->kc = kc;
    atomic_store(&j->ran, true);
}

static void done(void *arg, bool dropped)
{
    job *j = arg;
    ck_assert(pthread_equal(pthread_self(), j->loop_thread));
    j->done_calls++;
    j->dropped = dropped;
    j->order = ++test_tally.calls;
    if (test_tally.loop && test_tally.calls >= test_tally.want)
        ev_break(test_tally.loop, EVBREAK_ALL);
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void run_until(struct ev_loop *loop, double seconds)
{
    ev_timer t;
    ev_timer_init(&t, on_deadline, seconds, 0);
    ev_timer_start(loop, &t);
    ev_run(loop, 0);
    ev_timer_stop(loop, &t);
}

START_TEST(test_results_on_loop)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    workpool *p = api_pool_new(loop, 2, 16);
    job js[8];
    memset(js, 0, sizeof js);
    test_tally = (tally){.loop = loop, .want = 8};
    for (int i = 0; i < 8; i++) {
        js[i].loop_thread = pthread_self();
        ck_assert(workpool_submit(p, work, done, &js[i]) != NULL);
    }
    ck_assert_uint_eq(workpool_outstanding(p), 8);
    run_until(loop, 20);
    ck_assert_int_eq(test_tally.calls, 8);
    ck_assert_uint_eq(workpool_outstanding(p), 0);
    for (int i = 0; i < 8; i++) {
        ck_assert_int_eq(js[i].done_calls, 1);
        ck_assert(!js[i].dropped);
        ck_assert(atomic_load(&js[i].ran));
        ck_assert(!pthread_equal(js[i].ran_on, pthread_self()));   /* off the loop */
        ck_assert_ptr_nonnull(js[i].kc);
    }
    workpool_free(p);
    for (int i = 0; i < 8; i++) ck_assert_int_eq(js[i].done_calls, 1);   /* not again */
    ev_loop_destroy(loop);
}
END_TEST

START_TEST(test_queue_full_says_no)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    workpool *p = api_pool_new(loop, 1, 2);
    atomic_bool gate = false;
    atomic_int started = 0;
    job js[4];
    memset(js, 0, sizeof js);
    test_tally = (tally){.loop = loop, .want = 3};
    for (int i = 0; i < 4; i++) {
        js[i].loop_thread = pthread_self();
        js[i].gate = &gate;
        js[i].started = &started;
    }
    /* the first is taken by the one worker (and held at the gate), two wait, the 4th: no */
    ck_assert(workpool_submit(p, work, done, &js[0]) != NULL);
    while (atomic_load(&started) == 0) usleep(1000);
    ck_assert(workpool_submit(p, work, done, &js[1]) != NULL);
    ck_assert(workpool_submit(p, work, done, &js[2]) != NULL);
    ck_assert_uint_eq(workpool_queued(p), 2);
    ck_assert(workpool_submit(p, work, done, &js[3]) == NULL);
    ck_assert_uint_eq(workpool_outstanding(p), 3);
    atomic_store(&gate, true);
    run_until(loop, 20);
    for (int i = 0; i < 3; i++) ck_assert_int_eq(js[i].done_calls, 1);
    ck_assert_int_eq(js[3].done_calls, 0);
    ck_assert(!atomic_load(&js[3].ran));
    workpool_free(p);
    ck_assert_int_eq(js[3].done_calls, 0);
    ev_loop_destroy(loop);
}
END_TEST

/* Freed with one job running, one finished but not handed back, and queued ones: each is
 * dropped once, in submission order; the running work ended first; queued work never runs. */
START_TEST(test_free_drops_everything_once)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    workpool *p = api_pool_new(loop, 1, 16);
    atomic_int started = 0;
    job js[5];
    memset(js, 0, sizeof js);
    test_tally = (tally){.loop = NULL, .want = 0};
    for (int i = 0; i < 5; i++) {
        js[i].loop_thread = pthread_self();
        js[i].started = &started;
    }
    js[1].sleep_ms = 200;                       /* running while the pool is freed */
    for (int i = 0; i < 5; i++) ck_assert(workpool_submit(p, work, done, &js[i]) != NULL);
    while (atomic_load(&started) < 2) usleep(1000);   /* job 0 done, job 1 running */
    workpool_free(p);                           /* no loop run: nothing was handed back */
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(js[i].done_calls, 1);
        ck_assert(js[i].dropped);
        ck_assert_int_eq(js[i].order, i + 1);
    }
    ck_assert(atomic_load(&js[0].ran));
    ck_assert(atomic_load(&js[1].ran));         /* finished before free returned */
    for (int i = 2; i < 5; i++) ck_assert(!atomic_load(&js[i].ran));
    workpool_free(NULL);
    ev_loop_destroy(loop);
}
END_TEST

/* ---- the prep ---- */

#define PREP_KEY "AKIAKILNEXAMPLE0001"
#define PREP_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


/* A SendEmail request signed for now: the Authorization computed the way a client does,
 * through the verifier's own canonical request (its correctness is test_sigv4's). */
typedef struct prep_req {
    http_header h[5];
    http_request r;
    char date[17], authz[512], host[32];
    char *body;
} prep_req;

static void prep_sign(prep_req *q, const char *body, int64_t now_ms, const char *secret,
                      const char *region)
{
    time_t t = (time_t)(now_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(q->date, sizeof q->date, "%Y%m%dT%H%M%SZ", &tm);
    snprintf(q->host, sizeof q->host, "127.0.0.1:8080");
    q->body = util_strdup(body);
    q->h[0] = (http_header){"Host", q->host};
    q->h[1] = (http_header){"X-Amz-Date", q->date};
    q->h[2] = (http_header){"Content-Type", "application/json"};
    q->r = (http_request){.method = "POST", .path = "/v2/email/outbound-emails", .query = "",
                          .headers = q->h, .nheaders = 3, .body = q->body,
                          .body_len = strlen(q->body), .client_ip = "127.0.0.1"};
    sigv4_header sh[3] = {{"Host", q->host}, {"X-Amz-Date", q->date},
                          {"Content-Type", "application/json"}};
    sigv4_request sr = {"POST", q->r.path, "", sh, 3, q->body, q->r.body_len};
    /* the payload hash and string to sign, as a signer computes them */
    unsigned char md[32];
    unsigned int mdlen;
    char ph[65], ch[65];
    EVP_Digest(q->body, q->r.body_len, md, &mdlen, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++) snprintf(ph + 2 * i, 3, "%02x", md[i]);
    char *creq = sigv4_canonical_request(&sr, "content-type;host;x-amz-date", ph);
    ck_assert_ptr_nonnull(creq);
    EVP_Digest(creq, strlen(creq), md, &mdlen, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++) snprintf(ch + 2 * i, 3, "%02x", md[i]);
    free(creq);
    char *sts = util_asprintf("AWS4-HMAC-SHA256\n%s\n%.8s/%s/ses/aws4_request\n%s",
                              q->date, q->date, region, ch);
    unsigned char key[32], sig[32];
    sigv4_keycache_get(NULL, secret, (char[9]){q->date[0], q->date[1], q->date[2], q->date[3],
                                               q->date[4], q->date[5], q->date[6], q->date[7], 0},
                       region, "ses", key);
    unsigned int slen;
    HMAC(EVP_sha256(), key, 32, (unsigned char *)sts, strlen(sts), sig, &slen);
    free(sts);
    char sighex[65];
    for (int i = 0; i < 32; i++) snprintf(sighex + 2 * i, 3, "%02x", sig[i]);
    snprintf(q->authz, sizeof q->authz,
             "AWS4-HMAC-SHA256 Credential=" PREP_KEY "/%.8s/%s/ses/aws4_request, "
             "SignedHeaders=content-type;host;x-amz-date, Signature=%s", q->date, region,
             sighex);
    q->h[3] = (http_header){"Authorization", q->authz};
    q->r.nheaders = 4;
}

/* A config with one access key (PREP_KEY, PREP_SECRET) in a scratch directory. */
static config *prep_config(const char **dir)
{
    *dir = testlib_tmpdir("apipool");
    testlib_write_private(*dir, "k1", PREP_SECRET "\n");
    static const char yaml[] =
        "server: {hostname: mta.example.test}\n"
        "account: {identities: [example.com]}\n"
        "pools: [{name: p}]\n"
        "configuration_sets: [{name: txn, pool: p}]\n"
        "default_configuration_set: txn\n"
        "api:\n"
        "  listen: [127.0.0.1:8080]\n"
        "  access_keys: [{id: " PREP_KEY ", secret_file: k1}]\n";
    char *err = NULL;
    config *cfg = config_load_text(yaml, strlen(yaml), "kiln.yaml", *dir, NULL, &err);
    ck_assert_msg(cfg != NULL, "%s", err ? err : "");
    return cfg;
}

START_TEST(test_prep_answers)
{
    const char *dir;
    config *cfg = prep_config(&dir);
    int64_t now = (int64_t)time(NULL) * 1000;
    sigv4_keycache *kc = sigv4_keycache_new(4);
    /* "From: a@example.com\n\nhi" in base64, LF line ends: CRLF after decoding */
    const char *send = "{\"Content\":{\"Raw\":{\"Data\":\"RnJvbTogYUBleGFtcGxlLmNvbQoKaGk=\"}}}";

    prep_req q;
    prep_sign(&q, send, now, PREP_SECRET, cfg->region);
    api_prep p = {.req = &q.r, .cfg = cfg, .now_ms = now};
    api_prep_run(&p, kc);
    ck_assert_int_eq(p.auth, SIGV4_OK);
    ck_assert_str_eq(p.key_id, PREP_KEY);
    ck_assert_ptr_nonnull(p.op);
    ck_assert_str_eq(api_model_op_name(p.op), "SendEmail");
    ck_assert_ptr_nonnull(p.in);
    ck_assert_ptr_null(p.in_err);
    ck_assert_ptr_nonnull(p.raw.b64);
    ck_assert_ptr_nonnull(p.raw.msg);
    ck_assert_uint_eq(p.raw.len, strlen("From: a@example.com\r\n\r\nhi\r\n"));
    ck_assert_str_eq(p.raw.msg, "From: a@example.com\r\n\r\nhi\r\n");
    api_prep_clear(&p);
    ck_assert_ptr_null(p.in);
    ck_assert_ptr_null(p.raw.msg);
    free(q.body);

    /* a wrong secret: only the SigV4 answer, nothing else worked out */
    prep_sign(&q, send, now, "wrongSecretKey/000000000000000000000000", cfg->region);
    p = (api_prep){.req = &q.r, .cfg = cfg, .now_ms = now};
    api_prep_run(&p, kc);
    ck_assert_int_eq(p.auth, SIGV4_MISMATCH);
    ck_assert_ptr_nonnull(p.auth_msg);
    ck_assert_ptr_null(p.key_id);
    ck_assert_ptr_null(p.op);
    ck_assert_ptr_null(p.in);
    api_prep_clear(&p);
    free(q.body);

    /* a body the model refuses: routed, the model's message, nothing decoded */
    prep_sign(&q, "{\"Content\":{\"Raw\":{\"Data\":\"eA==\"}},\"Foo\":1}", now, PREP_SECRET,
              cfg->region);
    p = (api_prep){.req = &q.r, .cfg = cfg, .now_ms = now};
    api_prep_run(&p, kc);
    ck_assert_int_eq(p.auth, SIGV4_OK);
    ck_assert_ptr_nonnull(p.op);
    ck_assert_ptr_null(p.in);
    ck_assert_ptr_nonnull(p.in_err);
    ck_assert_str_eq(p.in_err, "Unknown field 'Foo'");
    ck_assert_ptr_null(p.raw.b64);
    api_prep_clear(&p);
    free(q.body);

    /* a Content.Raw.Data that is no base64: the decoder's error, kept for SendEmail */
    prep_sign(&q, "{\"Content\":{\"Raw\":{\"Data\":\"!!!!\"}}}", now, PREP_SECRET, cfg->region);
    p = (api_prep){.req = &q.r, .cfg = cfg, .now_ms = now};
    api_prep_run(&p, kc);
    ck_assert_ptr_nonnull(p.in);
    ck_assert_ptr_null(p.raw.msg);
    ck_assert_ptr_nonnull(p.raw.err);
    ck_assert_str_eq(p.raw.err, "Content.Raw.Data: invalid base64 at offset 0");
    api_prep_clear(&p);
    free(q.body);

    sigv4_keycache_free(kc);
    config_unref(cfg);
    testlib_tmpdir_remove(dir);
}
END_TEST

static Suite *api_pool_suite(void)
{
    Suite *s = suite_create("api_pool");
    TCase *tc = tcase_create("pool");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_results_on_loop);
    tcase_add_test(tc, test_queue_full_says_no);
    tcase_add_test(tc, test_free_drops_everything_once);
    suite_add_tcase(s, tc);
    tc = tcase_create("prep");
    tcase_add_test(tc, test_prep_answers);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(api_pool_suite);
