/* webhook.c — the `webhook` event destination: a small non-blocking HTTP/1.1 client on the
 * libev loop that posts one event per request (Connection: close), in outbox order, with
 * durable progress in the spool kv table (see webhook.h).
 *
 * Why no HTTP library: kiln needs exactly one request shape (POST, fixed headers, JSON
 * body) and only the status line of the answer; libcurl's multi interface on libev would
 * be a new dependency larger than this file. The status line is parsed by hand below.
 * The socket, buffers and the 10 s attempt timer are one mta/conn (plain TCP: https URLs
 * are refused as unusable). */
#include "mta/webhook.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/conn.h"
#include "store/spool.h"
#include "base/log.h"
#include "base/util.h"

#define WEBHOOK_TIMEOUT_S 10.0
#define WEBHOOK_BACKOFF_FIRST_MS 1000
#define WEBHOOK_BACKOFF_MAX_MS (5 * 60 * 1000)
#define WEBHOOK_WARN_EVERY_MS (60 * 1000)
#define WEBHOOK_SCAN_BATCH 1000
#define WEBHOOK_WINDOW_BYTES (4u << 20)  /* event text held in the window (at least one) */
#define WEBHOOK_SCAN_BYTES (4u << 20)    /* event text one outbox read walks over */
#define WEBHOOK_MAX_RESPONSE 65536

typedef struct webhook_event {
    int64_t id;
    char *json;
} webhook_event;

typedef enum { WH_IDLE = 0, WH_CONNECTING, WH_SENDING, WH_READING } webhook_state;

struct webhook {
    struct ev_loop *loop;
    klog *lg;
    spool *sp;
    char *set, *url, *key;
    /* parsed URL; unusable != NULL: why nothing can be posted (logged once) */
    char *host, *path;
    int port;
    char *unusable;
    struct sockaddr_storage addr;
    socklen_t addrlen;

    int64_t acked;          /* durable progress (see webhook_acked) */
    int64_t scanned;        /* highest outbox id looked at for this set */
    webhook_event q[WEBHOOK_WINDOW];
    size_t qhead, qlen;
    size_t qbytes;          /* event text held in q */

    webhook_state state;
    conn conn;              /* the request's connection; its timer bounds the attempt */

    int failures;           /* consecutive failures; 0 = healthy */
    int64_t next_try_ms;    /* loop time (ms) before which no new attempt starts */
    int64_t warned_ms;      /* last backlog warning */
    char *last_error;
};

/* ------------------------------------------------------------------- pure helpers ---- */

int webhook_parse_url(const char *url, bool *https, char **host, int *port, char **path,
                      char **err)
{
    const char *p;
    if (strncmp(url, "http://", 7) == 0) {
        *https = false, *port = 80, p = url + 7;
    } else if (strncmp(url, "https://", 8) == 0) {
        *https = true, *port = 443, p = url + 8;
    } else {
        *err = util_asprintf("webhook URL %s: must start with http:// or https://", url);
        return -1;
    }
    const char *slash = strchr(p, '/');
    const char *hend = slash ? slash : p + strlen(p);
    const char *hstart = p, *colon = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(hend - p));
        if (!rb) {
            *err = util_asprintf("webhook URL %s: unclosed [ in the host", url);
            return -1;
        }
        hstart = p + 1;
        colon = rb + 1 < hend && rb[1] == ':' ? rb + 1 : NULL;
        if (rb + 1 < hend && !colon) {
            *err = util_asprintf("webhook URL %s: unexpected text after ]", url);
            return -1;
        }
        *host = util_strndup(hstart, (size_t)(rb - hstart));
    } else {
        colon = memchr(p, ':', (size_t)(hend - p));
        *host = util_strndup(p, (size_t)((colon ? colon : hend) - p));
    }
    if (**host == '\0' || memchr(p, '@', (size_t)(hend - p))) {
        *err = util_asprintf("webhook URL %s: needs a host (and no user info)", url);
        free(*host);
        *host = NULL;
        return -1;
    }
    if (colon) {
        char *end;
        long v = strtol(colon + 1, &end, 10);
        if (end != hend || end == colon + 1 || v < 1 || v > 65535) {
            *err = util_asprintf("webhook URL %s: the port must be 1..65535", url);
            free(*host);
            *host = NULL;
            return -1;
        }
        *port = (int)v;
    }
    *path = util_strdup(slash ? slash : "/");
    return 0;
}

int webhook_response_status(const char *buf, size_t len)
{
    const char *eol = memchr(buf, '\n', len);
    if (!eol) return len > 1024 ? -1 : 0;
    /* "HTTP/1.x NNN" */
    if ((size_t)(eol - buf) < 12 || strncmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ')
        return -1;
    int code = 0;
    for (int i = 9; i < 12; i++) {
        if (buf[i] < '0' || buf[i] > '9') return -1;
        code = code * 10 + (buf[i] - '0');
    }
    if (code < 100 || code > 599) return -1;
    if (buf[12] != ' ' && buf[12] != '\r' && buf[12] != '\n') return -1;
    return code;
}

int64_t webhook_backoff_ms(int failures)
{
    int64_t ms = WEBHOOK_BACKOFF_FIRST_MS;
    for (int i = 1; i < failures && ms < WEBHOOK_BACKOFF_MAX_MS; i++) ms *= 2;
    return ms < WEBHOOK_BACKOFF_MAX_MS ? ms : WEBHOOK_BACKOFF_MAX_MS;
}

/* ----------------------------------------------------------------------- progress ---- */

static int64_t webhook_now_ms(const webhook *w)
{
    return (int64_t)(ev_now(w->loop) * 1000.0);
}

static void webhook_save_acked(webhook *w, int64_t acked)
{
    if (acked <= w->acked) return;
    w->acked = acked;
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)acked);
    if (spool_kv_put(w->sp, w->key, v) < 0)
        log_write(w->lg, KLOG_ERROR, "webhook_error", "set=%s url=%s op=save error=%s",
                  log_q(w->lg, w->set), log_q(w->lg, w->url), log_q(w->lg, spool_errmsg(w->sp)));
}

typedef struct scan_ctx {
    webhook *w;
    int64_t last;          /* last id looked at */
    size_t rows;
    bool full;             /* window filled: stop taking rows */
    int64_t backlog;       /* count mode: rows of the set */
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
 * everything scanned counts as acknowledged. */
static void webhook_refill(webhook *w)
{
    while (w->qlen < WEBHOOK_WINDOW && (w->qlen == 0 || w->qbytes < WEBHOOK_WINDOW_BYTES)) {
        scan_ctx c = {w, w->scanned, 0, false, 0, 0};
        if (spool_each_event_bytes(w->sp, w->scanned, WEBHOOK_SCAN_BATCH, WEBHOOK_SCAN_BYTES,
                                   webhook_scan_row, &c) < 0) {
            log_write(w->lg, KLOG_ERROR, "webhook_error", "set=%s url=%s op=read error=%s",
                      log_q(w->lg, w->set), log_q(w->lg, w->url),
                      log_q(w->lg, spool_errmsg(w->sp)));
            return;
        }
        w->scanned = c.last;
        if (c.full) break;
        if (c.rows < WEBHOOK_SCAN_BATCH && c.bytes < WEBHOOK_SCAN_BYTES) break;
    }
    webhook_save_acked(w, w->qlen ? w->q[w->qhead].id - 1 : w->scanned);
}

static void webhook_count_row(void *arg, int64_t id, const char *set, const char *json)
{
    (void)json;
    scan_ctx *c = arg;
    c->rows++;
    c->last = id;
    if (strcmp(set ? set : "", c->w->set) == 0) c->backlog++;
}

/* Outbox rows of the set not yet acknowledged (read once a minute while failing). */
static int64_t webhook_count_backlog(webhook *w)
{
    scan_ctx c = {w, w->acked, 0, false, 0, 0};
    for (;;) {
        c.rows = 0;
        if (spool_each_event(w->sp, c.last, WEBHOOK_SCAN_BATCH, webhook_count_row, &c) < 0) return -1;
        if (c.rows < WEBHOOK_SCAN_BATCH) break;
    }
    return c.backlog;
}

/* --------------------------------------------------------------------- the client ---- */

static void webhook_conn_close(webhook *w)
{
    conn_close(&w->conn, false);
    w->state = WH_IDLE;
}

static void webhook_start_post(webhook *w);

static void webhook_attempt_failed(webhook *w, const char *why)
{
    webhook_conn_close(w);
    w->failures++;
    int64_t now = webhook_now_ms(w);
    int64_t wait = webhook_backoff_ms(w->failures);
    w->next_try_ms = now + wait;
    log_write(w->lg, w->failures == 1 ? KLOG_WARNING : KLOG_DEBUG, "webhook_failed",
              "set=%s url=%s event_id=%lld failures=%d retry_in_ms=%lld error=%s",
              log_q(w->lg, w->set), log_q(w->lg, w->url), (long long)w->q[w->qhead].id,
              w->failures, (long long)wait, log_q(w->lg, why));
    if (w->failures == 1) w->warned_ms = now;
    free(w->last_error);
    w->last_error = util_strdup(why);
}

static void webhook_attempt_done(webhook *w)
{
    webhook_conn_close(w);
    if (w->failures > 0)
        log_write(w->lg, KLOG_INFO, "webhook_recovered", "set=%s url=%s failures=%d",
                  log_q(w->lg, w->set), log_q(w->lg, w->url), w->failures);
    w->failures = 0;
    w->next_try_ms = 0;
    webhook_event *e = &w->q[w->qhead];
    int64_t id = e->id;
    w->qbytes -= strlen(e->json);
    free(e->json);
    e->json = NULL;
    w->qhead = (w->qhead + 1) % WEBHOOK_WINDOW;
    w->qlen--;
    webhook_save_acked(w, w->qlen ? w->q[w->qhead].id - 1 : id);
    if (w->qlen == 0) webhook_refill(w);
    if (w->qlen > 0) webhook_start_post(w);
}

static void webhook_on_timeout(void *arg)
{
    webhook_attempt_failed(arg, "no answer within 10s");
}

static void webhook_failed_errno(webhook *w, const char *op, int err)
{
    char *why = util_asprintf("%s: %s", op, strerror(err));
    webhook_attempt_failed(w, why);
    free(why);
}

static void webhook_on_io(void *arg, int revents)
{
    (void)revents;
    webhook *w = arg;
    if (w->state == WH_CONNECTING) {
        int soerr = conn_connected(&w->conn);
        if (soerr != 0) {
            webhook_failed_errno(w, "connect", soerr);
            return;
        }
        w->state = WH_SENDING;
    }
    if (w->state == WH_SENDING) {
        conn_status st = conn_flush(&w->conn, NULL);
        if (st == CONN_ERROR) {
            webhook_failed_errno(w, "send", conn_errno(&w->conn));
            return;
        }
        if (st == CONN_OK) w->state = WH_READING;
        conn_update(&w->conn, w->state == WH_READING);
        return;
    }
    conn_status st = conn_read(&w->conn, NULL);
    if (st == CONN_AGAIN) return;
    if (st == CONN_ERROR) {
        webhook_failed_errno(w, "recv", conn_errno(&w->conn));
        return;
    }
    const strbuf *in = &w->conn.in;
    bool eof = st == CONN_EOF;
    bool headers_end = in->len && memmem(in->buf, in->len, "\r\n\r\n", 4) != NULL;
    if (!eof && !headers_end && in->len < WEBHOOK_MAX_RESPONSE) return;
    int code = in->len ? webhook_response_status(in->buf, in->len) : -1;
    if (code >= 200 && code <= 299) {
        webhook_attempt_done(w);
    } else if (code > 0) {
        char *why = util_asprintf("HTTP status %d", code);
        webhook_attempt_failed(w, why);
        free(why);
    } else {
        webhook_attempt_failed(w, in->len ? "the answer is not an HTTP/1.x response"
                                          : "connection closed without an answer");
    }
}

static const conn_ops webhook_conn_ops = {.on_io = webhook_on_io, .on_timeout = webhook_on_timeout};

static void webhook_start_post(webhook *w)
{
    const webhook_event *e = &w->q[w->qhead];
    strbuf *out = &w->conn.out;
    strbuf_reset(out);
    bool v6 = w->addr.ss_family == AF_INET6;
    strbuf_printf(out,
                  "POST %s HTTP/1.1\r\nHost: %s%s%s:%d\r\nUser-Agent: kiln\r\n"
                  "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                  "Connection: close\r\n\r\n",
                  w->path, v6 ? "[" : "", w->host, v6 ? "]" : "", w->port, strlen(e->json));
    strbuf_puts(out, e->json);
    w->state = WH_CONNECTING;
    conn_timer_set(&w->conn, WEBHOOK_TIMEOUT_S);
    conn_step step;
    if (conn_connect(&w->conn, (struct sockaddr *)&w->addr, w->addrlen, NULL, 0, false,
                     &step) != 0) {
        webhook_failed_errno(w, step == CONN_STEP_SOCKET ? "socket" : "connect",
                             conn_errno(&w->conn));
        return;
    }
    conn_update(&w->conn, false);
}

/* --------------------------------------------------------------------- public API ---- */

webhook *webhook_new(struct ev_loop *loop, klog *lg, spool *sp, const char *set, const char *url)
{
    webhook *w = util_calloc(1, sizeof *w);
    w->loop = loop;
    w->lg = lg;
    w->sp = sp;
    w->set = util_strdup(set);
    w->url = util_strdup(url);
    w->key = util_asprintf("webhook:%s:%s", set, url);
    conn_init(&w->conn, loop, &webhook_conn_ops, w);   /* nothing starts without a loop */

    char *v = NULL;
    if (spool_kv_get(sp, w->key, &v) == 0 && v) w->acked = strtoll(v, NULL, 10);
    free(v);
    w->scanned = w->acked;

    bool https = false;
    char *err = NULL;
    if (webhook_parse_url(url, &https, &w->host, &w->port, &w->path, &err) != 0) {
        w->unusable = err;
    } else if (https) {
        w->unusable = util_strdup("https webhooks are not supported yet; use an http:// URL "
                                  "(events stay queued in the spool outbox)");
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&w->addr;
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&w->addr;
        const char *h = strcmp(w->host, "localhost") == 0 ? "127.0.0.1" : w->host;
        if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
            a4->sin_family = AF_INET;
            a4->sin_port = htons((uint16_t)w->port);
            w->addrlen = sizeof *a4;
        } else if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
            a6->sin6_family = AF_INET6;
            a6->sin6_port = htons((uint16_t)w->port);
            w->addrlen = sizeof *a6;
        } else {
            w->unusable = util_asprintf("webhook host %s is a name; only IP addresses (or "
                                        "localhost) are supported yet (events stay queued "
                                        "in the spool outbox)", w->host);
        }
    }
    if (w->unusable)
        log_write(lg, KLOG_ERROR, "webhook_unusable", "set=%s url=%s error=%s",
                  log_q(lg, set), log_q(lg, url), log_q(lg, w->unusable));
    return w;
}

void webhook_free(webhook *w)
{
    if (!w) return;
    if (w->loop) webhook_conn_close(w);
    for (size_t i = 0; i < w->qlen; i++) free(w->q[(w->qhead + i) % WEBHOOK_WINDOW].json);
    strbuf_free(&w->conn.in);           /* never opened without a loop: no conn_free */
    strbuf_free(&w->conn.out);
    free(w->set);
    free(w->url);
    free(w->key);
    free(w->host);
    free(w->path);
    free(w->unusable);
    free(w->last_error);
    free(w);
}

void webhook_poll(webhook *w)
{
    if (!w->loop || w->unusable) {
        /* Nothing can be posted: still hold only this set's rows, not everyone's. */
        if (w->qlen == 0) webhook_refill(w);
        return;
    }
    int64_t now = webhook_now_ms(w);
    if (w->failures > 0) {
        if (now - w->warned_ms >= WEBHOOK_WARN_EVERY_MS) {
            w->warned_ms = now;
            log_write(w->lg, KLOG_WARNING, "webhook_backlog",
                      "set=%s url=%s backlog=%lld failures=%d error=%s",
                      log_q(w->lg, w->set), log_q(w->lg, w->url), (long long)webhook_count_backlog(w),
                      w->failures, log_q(w->lg, w->last_error));
        }
    }
    if (w->state != WH_IDLE || (w->failures > 0 && now < w->next_try_ms)) return;
    if (w->qlen == 0) webhook_refill(w);
    if (w->qlen > 0) webhook_start_post(w);
}

int64_t webhook_acked(const webhook *w)
{
    return w->acked;
}
