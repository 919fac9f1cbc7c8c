/* webhook.c — the `webhook` event destination (see webhook.h): a window of its set's
 * outbox events, one POST at a time through a reused curl easy handle on the shared
 * curl_ev (keep-alive), durable progress in the spool kv table, backoff, the backlog count
 * and the max_backlog drop. curl does HTTP, TLS and name resolution; what kiln reads of an
 * answer besides the status code and Retry-After is webhook_resp.c's. */
#include "mta/webhook.h"

#include <curl/curl.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "mta/curl_ev.h"
#include "mta/webhook_resp.h"
#include "store/spool.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0.1.0"
#endif

#define WEBHOOK_TIMEOUT_MS 10000L
#define WEBHOOK_BACKOFF_FIRST_MS 1000
#define WEBHOOK_BACKOFF_MAX_MS (5 * 60 * 1000)
#define WEBHOOK_WARN_EVERY_MS (60 * 1000)
#define WEBHOOK_SCAN_BATCH 1000
#define WEBHOOK_WINDOW_BYTES (4u << 20)  /* event text held in the window (at least one) */
#define WEBHOOK_SCAN_BYTES (4u << 20)    /* event text one outbox read walks over */

typedef struct webhook_event {
    int64_t id;
    char *json;
} webhook_event;

struct webhook {
    struct ev_loop *loop;
    curl_ev *cev;
    klog *lg;
    spool *sp;
    char *set, *url, *key, *dropped_key;
    int batch;
    int64_t max_backlog;
    char *unusable;         /* why nothing can be posted (logged once), or NULL */

    CURL *easy;             /* reused for every POST: its connection stays in the cache */
    struct curl_slist *headers;
    curl_ev_xfer xfer;
    char errbuf[CURL_ERROR_SIZE];
    strbuf body;            /* the POST in flight */
    size_t inflight;        /* events of the window in that POST (from qhead); 0 = idle */
    webhook_resp resp;
    bool resp_too_large;

    int64_t acked;          /* durable progress (see webhook_acked) */
    int64_t scanned;        /* highest outbox id looked at for this set */
    webhook_event q[WEBHOOK_WINDOW];
    size_t qhead, qlen;
    size_t qbytes;          /* event text held in q */

    int64_t counted_upto;   /* >= acked: the set's rows in (acked, counted_upto] are... */
    int64_t backlog;        /* ...this many (undelivered, not dropped) */
    int64_t dropped;

    int failures;           /* consecutive failures; 0 = healthy */
    int64_t next_try_ms;    /* loop time (ms) before which no new attempt starts */
    int64_t warned_ms;      /* last backlog warning */
    char *last_error;
};

int64_t webhook_backoff_ms(int failures)
{
    int64_t ms = WEBHOOK_BACKOFF_FIRST_MS;
    for (int i = 1; i < failures && ms < WEBHOOK_BACKOFF_MAX_MS; i++) ms *= 2;
    return ms < WEBHOOK_BACKOFF_MAX_MS ? ms : WEBHOOK_BACKOFF_MAX_MS;
}

/* ----------------------------------------------------------------------- progress ---- */

static int64_t webhook_now_ms(const webhook *w)
{
    return w->loop ? (int64_t)(ev_now(w->loop) * 1000.0) : 0;
}

static void webhook_kv_error(webhook *w, const char *op)
{
    log_write(w->lg, KLOG_ERROR, "webhook_error", "set=%s url=%s op=%s error=%s",
              log_q(w->lg, w->set), log_q(w->lg, w->url), op,
              log_q(w->lg, spool_errmsg(w->sp)));
}

static void webhook_kv_put_int(webhook *w, const char *key, int64_t v)
{
    char s[32];
    snprintf(s, sizeof s, "%lld", (long long)v);
    if (spool_kv_put(w->sp, key, s) < 0) webhook_kv_error(w, "save");
}

static int64_t webhook_kv_get_int(webhook *w, const char *key)
{
    char *v = NULL;
    int64_t n = 0;
    if (spool_kv_get(w->sp, key, &v) == 0 && v) n = strtoll(v, NULL, 10);
    free(v);
    return n;
}

/* Moves the progress to acked (never back). Rows between the counted range and acked were
 * never counted, and none of them is pending: the count goes on from acked. */
static void webhook_save_acked(webhook *w, int64_t acked)
{
    if (acked <= w->acked) return;
    w->acked = acked;
    if (w->counted_upto < acked) w->counted_upto = acked;
    webhook_kv_put_int(w, w->key, acked);
}

/* Removes the first n events of the window; each one that was counted leaves the backlog. */
static void webhook_window_pop(webhook *w, size_t n)
{
    for (size_t i = 0; i < n && w->qlen > 0; i++) {
        webhook_event *e = &w->q[w->qhead];
        if (e->id <= w->counted_upto && w->backlog > 0) w->backlog--;
        w->qbytes -= strlen(e->json);
        free(e->json);
        e->json = NULL;
        w->qhead = (w->qhead + 1) % WEBHOOK_WINDOW;
        w->qlen--;
    }
}

typedef struct scan_ctx {
    webhook *w;
    int64_t last;          /* last id looked at */
    size_t rows;
    bool full;             /* window filled: stop taking rows */
    size_t bytes;          /* event text of the rows looked at */
} scan_ctx;

static void webhook_scan_row(void *arg, int64_t id, const char *set, const char *json)
{
    scan_ctx *c = arg;
    webhook *w = c->w;
    c->rows++;
    c->bytes += json ? strlen(json) : 0;
    if (c->full) return;
    c->last = id;
    if (strcmp(set ? set : "", w->set) != 0) return;
    webhook_event *e = &w->q[(w->qhead + w->qlen) % WEBHOOK_WINDOW];
    e->id = id;
    e->json = util_strdup(json ? json : "");
    w->qbytes += strlen(e->json);
    if (++w->qlen == WEBHOOK_WINDOW || w->qbytes >= WEBHOOK_WINDOW_BYTES) c->full = true;
}

/* Fills the window with the next events of the set after `scanned`; with none pending,
 * everything scanned counts as acknowledged. Never while a POST is in flight. */
static void webhook_refill(webhook *w)
{
    while (w->qlen < WEBHOOK_WINDOW && (w->qlen == 0 || w->qbytes < WEBHOOK_WINDOW_BYTES)) {
        scan_ctx c = {w, w->scanned, 0, false, 0};
        if (spool_each_event_bytes(w->sp, w->scanned, WEBHOOK_SCAN_BATCH, WEBHOOK_SCAN_BYTES,
                                   webhook_scan_row, &c) < 0) {
            webhook_kv_error(w, "read");
            return;
        }
        w->scanned = c.last;
        if (c.full) break;
        if (c.rows < WEBHOOK_SCAN_BATCH && c.bytes < WEBHOOK_SCAN_BYTES) break;
    }
    webhook_save_acked(w, w->qlen ? w->q[w->qhead].id - 1 : w->scanned);
}

/* Counts the set's rows that arrived after counted_upto (at most WEBHOOK_COUNT_STEP rows
 * read per call). */
static void webhook_count(webhook *w)
{
    int64_t last = 0, n = 0;
    if (spool_count_set_events(w->sp, w->set, w->counted_upto, WEBHOOK_COUNT_STEP, &last, &n) < 0) {
        webhook_kv_error(w, "count");
        return;
    }
    if (last > w->counted_upto) {
        w->counted_upto = last;
        w->backlog += n;
    }
}

/* ------------------------------------------------------------------------- the POST ---- */

static void webhook_abandon(webhook *w)
{
    if (w->inflight && w->cev) curl_ev_remove(w->cev, &w->xfer);
    w->inflight = 0;
}

/* Past max_backlog: the oldest events of the set are dropped (progress moves over them).
 * The window holds the set's first rows after acked, in order, and the set has no row in
 * (last of the window, scanned]; the k oldest end in the window or after scanned. All of
 * them are counted (k <= backlog), so the backlog goes down by exactly k. */
static void webhook_drop(webhook *w)
{
    int64_t k = w->backlog - w->max_backlog;
    if (k <= 0) return;
    int64_t cut;
    if ((size_t)k <= w->qlen) {
        cut = w->q[(w->qhead + (size_t)k - 1) % WEBHOOK_WINDOW].id;
    } else {
        int r = spool_nth_set_event(w->sp, w->set, w->scanned, k - (int64_t)w->qlen, &cut);
        if (r < 0) webhook_kv_error(w, "find");
        if (r <= 0) return;
    }
    int64_t after = w->acked;
    webhook_abandon(w);     /* a POST in flight carries the oldest events */
    size_t in_window = (size_t)k < w->qlen ? (size_t)k : w->qlen;
    webhook_window_pop(w, in_window);
    w->backlog -= k - (int64_t)in_window;
    if (w->backlog < 0) w->backlog = 0;
    if (w->qlen == 0 && cut > w->scanned) w->scanned = cut;
    w->dropped += k;
    webhook_kv_put_int(w, w->dropped_key, w->dropped);
    log_write(w->lg, KLOG_WARNING, "webhook_dropped",
              "set=%s url=%s dropped=%lld after_id=%lld upto_id=%lld max_backlog=%lld "
              "total_dropped=%lld",
              log_q(w->lg, w->set), log_q(w->lg, w->url), (long long)k, (long long)after,
              (long long)cut, (long long)w->max_backlog, (long long)w->dropped);
    webhook_save_acked(w, w->qlen ? w->q[w->qhead].id - 1 : cut);
}

static void webhook_set_error(webhook *w, const char *why)
{
    free(w->last_error);
    w->last_error = util_strdup(why);
}

static void webhook_attempt_failed(webhook *w, const char *why, int64_t retry_after_ms)
{
    size_t n = w->inflight;
    w->inflight = 0;
    w->failures++;
    int64_t now = webhook_now_ms(w);
    int64_t wait = webhook_backoff_ms(w->failures);
    if (retry_after_ms > wait) wait = retry_after_ms < WEBHOOK_BACKOFF_MAX_MS ? retry_after_ms
                                                                              : WEBHOOK_BACKOFF_MAX_MS;
    w->next_try_ms = now + wait;
    log_write(w->lg, w->failures == 1 ? KLOG_WARNING : KLOG_DEBUG, "webhook_failed",
              "set=%s url=%s event_id=%lld events=%zu failures=%d retry_in_ms=%lld error=%s",
              log_q(w->lg, w->set), log_q(w->lg, w->url),
              (long long)(w->qlen ? w->q[w->qhead].id : 0), n, w->failures, (long long)wait,
              log_q(w->lg, why));
    if (w->failures == 1) w->warned_ms = now;
    webhook_set_error(w, why);
}

static void webhook_start_post(webhook *w);

static void webhook_attempt_done(webhook *w)
{
    if (w->failures > 0)
        log_write(w->lg, KLOG_INFO, "webhook_recovered", "set=%s url=%s failures=%d",
                  log_q(w->lg, w->set), log_q(w->lg, w->url), w->failures);
    w->failures = 0;
    w->next_try_ms = 0;
    size_t n = w->inflight;
    w->inflight = 0;
    int64_t last = w->q[(w->qhead + n - 1) % WEBHOOK_WINDOW].id;
    webhook_window_pop(w, n);
    webhook_save_acked(w, w->qlen ? w->q[w->qhead].id - 1 : last);
    if (w->qlen < (size_t)w->batch) webhook_refill(w);
    if (w->qlen > 0) webhook_start_post(w);
}

static void webhook_on_done(void *arg, CURL *easy, CURLcode result)
{
    webhook *w = arg;
    if (result != CURLE_OK) {
        char *why;
        if (w->resp_too_large)
            why = util_asprintf("the answer's header is larger than %u bytes",
                                WEBHOOK_RESP_MAX_HEADER_BYTES);
        else {
            long os_errno = 0;      /* curl's text names no errno: "Connection refused" */
            curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os_errno);
            why = util_asprintf("%s%s%s%s", w->errbuf[0] ? w->errbuf : curl_easy_strerror(result),
                                os_errno ? " (" : "", os_errno ? strerror((int)os_errno) : "",
                                os_errno ? ")" : "");
        }
        webhook_attempt_failed(w, why, -1);
        free(why);
        return;
    }
    long code = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 200 && code <= 299) {
        webhook_attempt_done(w);
        return;
    }
    curl_off_t retry_s = 0;
    if (curl_easy_getinfo(easy, CURLINFO_RETRY_AFTER, &retry_s) != CURLE_OK || retry_s < 0)
        retry_s = 0;
    char *why = webhook_resp_error(&w->resp, code);
    webhook_attempt_failed(w, why, retry_s > WEBHOOK_BACKOFF_MAX_MS / 1000
                                       ? WEBHOOK_BACKOFF_MAX_MS
                                       : (int64_t)retry_s * 1000);
    free(why);
}

static size_t webhook_on_header(char *line, size_t size, size_t n, void *arg)
{
    webhook *w = arg;
    if (webhook_resp_header(&w->resp, line, size * n) < 0) {
        w->resp_too_large = true;
        return 0;   /* curl aborts the transfer */
    }
    return size * n;
}

static size_t webhook_on_body(char *data, size_t size, size_t n, void *arg)
{
    webhook_resp_body(&((webhook *)arg)->resp, data, size * n);
    return size * n;
}

static void webhook_start_post(webhook *w)
{
    size_t n = w->qlen < (size_t)w->batch ? w->qlen : (size_t)w->batch;
    strbuf_reset(&w->body);
    if (w->batch > 1) strbuf_puts(&w->body, "[");
    for (size_t i = 0; i < n; i++) {
        if (i) strbuf_puts(&w->body, ",");
        strbuf_puts(&w->body, w->q[(w->qhead + i) % WEBHOOK_WINDOW].json);
    }
    if (w->batch > 1) strbuf_puts(&w->body, "]");
    webhook_resp_reset(&w->resp);
    w->resp_too_large = false;
    w->errbuf[0] = '\0';
    curl_easy_setopt(w->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)w->body.len);
    curl_easy_setopt(w->easy, CURLOPT_POSTFIELDS, w->body.buf);
    w->inflight = n;
    char *err = NULL;
    if (curl_ev_add(w->cev, &w->xfer, w->easy, webhook_on_done, w, &err) != 0) {
        webhook_attempt_failed(w, err, -1);
        free(err);
    }
}

/* ------------------------------------------------------------------- the easy handle ---- */

/* Sets up the one easy handle of the destination; NULL, or why it cannot (malloc'd). */
static char *webhook_easy_setup(webhook *w, const config_event_dest *d)
{
    w->easy = curl_easy_init();
    if (!w->easy) return util_strdup("curl_easy_init failed");
    w->headers = curl_slist_append(NULL, "Content-Type: application/json");
    w->headers = curl_slist_append(w->headers, "Expect:");  /* no 100-continue wait */
    if (!w->headers) util_fatal("webhook: out of memory");
    CURL *e = w->easy;
    CURLcode rc = CURLE_OK;
#define WEBHOOK_OPT(opt, val) \
    if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val)
    WEBHOOK_OPT(CURLOPT_URL, w->url);
    WEBHOOK_OPT(CURLOPT_PROTOCOLS_STR, "http,https");
    WEBHOOK_OPT(CURLOPT_FOLLOWLOCATION, 0L);
    WEBHOOK_OPT(CURLOPT_NOSIGNAL, 1L);
    WEBHOOK_OPT(CURLOPT_POST, 1L);
    WEBHOOK_OPT(CURLOPT_HTTPHEADER, w->headers);
    WEBHOOK_OPT(CURLOPT_USERAGENT, "kiln/" PACKAGE_VERSION);
    WEBHOOK_OPT(CURLOPT_TIMEOUT_MS, WEBHOOK_TIMEOUT_MS);
    WEBHOOK_OPT(CURLOPT_SSL_VERIFYPEER, 1L);
    WEBHOOK_OPT(CURLOPT_SSL_VERIFYHOST, 2L);
    WEBHOOK_OPT(CURLOPT_ERRORBUFFER, w->errbuf);
    WEBHOOK_OPT(CURLOPT_HEADERFUNCTION, webhook_on_header);
    WEBHOOK_OPT(CURLOPT_HEADERDATA, w);
    WEBHOOK_OPT(CURLOPT_WRITEFUNCTION, webhook_on_body);
    WEBHOOK_OPT(CURLOPT_WRITEDATA, w);
    if (d->ca_file) {
        WEBHOOK_OPT(CURLOPT_CAINFO, d->ca_file);
        WEBHOOK_OPT(CURLOPT_CAPATH, NULL);   /* only the CAs of ca_file */
    }
#undef WEBHOOK_OPT
    if (rc != CURLE_OK) return util_asprintf("curl refuses the destination: %s", curl_easy_strerror(rc));
    return NULL;
}

/* --------------------------------------------------------------------- public API ---- */

webhook *webhook_new(struct ev_loop *loop, curl_ev *cev, klog *lg, spool *sp, const char *set,
                     const config_event_dest *d)
{
    webhook *w = util_calloc(1, sizeof *w);
    w->loop = loop;
    w->cev = cev;
    w->lg = lg;
    w->sp = sp;
    w->set = util_strdup(set);
    w->url = util_strdup(d->url);
    w->batch = d->batch >= 1 && d->batch <= WEBHOOK_WINDOW ? d->batch : 1;
    w->max_backlog = d->max_backlog >= 1 ? d->max_backlog : CONFIG_WEBHOOK_BACKLOG_DEFAULT;
    w->key = util_asprintf("webhook:%s:%s", set, d->url);
    w->dropped_key = util_asprintf("webhook_dropped:%s:%s", set, d->url);
    strbuf_init(&w->body);
    w->acked = webhook_kv_get_int(w, w->key);
    w->dropped = webhook_kv_get_int(w, w->dropped_key);
    w->scanned = w->counted_upto = w->acked;
    if (cev) w->unusable = webhook_easy_setup(w, d);
    if (w->unusable)
        log_write(lg, KLOG_ERROR, "webhook_unusable", "set=%s url=%s error=%s",
                  log_q(lg, set), log_q(lg, d->url), log_q(lg, w->unusable));
    return w;
}

void webhook_free(webhook *w)
{
    if (!w) return;
    webhook_abandon(w);
    if (w->easy) curl_easy_cleanup(w->easy);
    curl_slist_free_all(w->headers);
    webhook_window_pop(w, w->qlen);
    strbuf_free(&w->body);
    free(w->set);
    free(w->url);
    free(w->key);
    free(w->dropped_key);
    free(w->unusable);
    free(w->last_error);
    free(w);
}

void webhook_poll(webhook *w)
{
    webhook_count(w);
    if (w->backlog > w->max_backlog) webhook_drop(w);
    if (!w->cev || w->unusable) {
        /* Nothing can be posted: still hold only this set's rows, not everyone's. */
        if (w->qlen == 0) webhook_refill(w);
        return;
    }
    int64_t now = webhook_now_ms(w);
    if (w->failures > 0 && now - w->warned_ms >= WEBHOOK_WARN_EVERY_MS) {
        w->warned_ms = now;
        log_write(w->lg, KLOG_WARNING, "webhook_backlog",
                  "set=%s url=%s backlog=%lld dropped=%lld failures=%d error=%s",
                  log_q(w->lg, w->set), log_q(w->lg, w->url), (long long)w->backlog,
                  (long long)w->dropped, w->failures, log_q(w->lg, w->last_error));
    }
    if (w->inflight || (w->failures > 0 && now < w->next_try_ms)) return;
    if (w->qlen < (size_t)w->batch) webhook_refill(w);
    if (w->qlen > 0) webhook_start_post(w);
}

int64_t webhook_acked(const webhook *w)
{
    return w->acked;
}

void webhook_get_info(const webhook *w, webhook_info *out)
{
    out->set = w->set;
    out->url = w->url;
    out->backlog = w->backlog;
    out->dropped = w->dropped;
    out->max_backlog = w->max_backlog;
    out->failures = w->failures;
    out->last_error = w->unusable ? w->unusable : w->last_error;
}
