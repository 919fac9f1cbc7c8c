/* apiload_http.c — kiln-apiload's keep-alive HTTP/1.1 client connection and answer parser
 * (see apiload_http.h for why it is written by hand and what it promises). */
#include "tools/apiload_http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <ev.h>

#include "mta/conn.h"
#include "mta/tls.h"

int64_t ah_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- the answer parser ---- */

/* The header line [p, e) named name (lowercase, with its ':')? Then its value, blanks
 * trimmed, in [*v, *ve). */
static bool ah_header_is(const char *p, const char *e, const char *name, const char **v,
                         const char **ve)
{
    size_t n = strlen(name);
    if ((size_t)(e - p) < n || strncasecmp(p, name, n) != 0) return false;
    p += n;
    while (p < e && (*p == ' ' || *p == '\t')) p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t')) e--;
    *v = p;
    *ve = e;
    return true;
}

/* One answer (status line to the end of its body) at buf[0..len): as ah_parse_answer, and
 * *interim set for a 1xx answer (no body). */
static long ah_parse_one(const char *buf, size_t len, ah_answer *a, bool *interim,
                         const char **why)
{
    size_t scan = len < AH_MAX_HEADER ? len : AH_MAX_HEADER;
    const char *end = NULL;
    for (size_t i = 3; i < scan; i++) {
        if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r') {
            end = buf + i + 1;
            break;
        }
    }
    if (!end) {
        if (len >= AH_MAX_HEADER) {
            *why = "answer header over 64 KB";
            return -1;
        }
        return 0;
    }
    memset(a, 0, sizeof *a);
    if (end - buf < 13 || strncmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ' ||
        buf[9] < '1' || buf[9] > '5' || buf[10] < '0' || buf[10] > '9' || buf[11] < '0' ||
        buf[11] > '9' || (buf[12] != ' ' && buf[12] != '\r')) {
        *why = "malformed status line";
        return -1;
    }
    a->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    *interim = a->status < 200;
    long long clen = -1;
    const char *p = memchr(buf, '\n', (size_t)(end - buf)) + 1;
    while (p < end - 2) {
        const char *le = memchr(p, '\n', (size_t)(end - p));
        const char *e = le[-1] == '\r' ? le - 1 : le;
        const char *v, *ve;
        if (ah_header_is(p, e, "content-length:", &v, &ve)) {
            clen = 0;
            if (v == ve || ve - v > 10) {
                *why = "bad Content-Length";
                return -1;
            }
            for (; v < ve; v++) {
                if (*v < '0' || *v > '9') {
                    *why = "bad Content-Length";
                    return -1;
                }
                clen = clen * 10 + (*v - '0');
            }
        } else if (ah_header_is(p, e, "transfer-encoding:", &v, &ve)) {
            *why = "answer with Transfer-Encoding (not read by kiln-apiload)";
            return -1;
        } else if (ah_header_is(p, e, "connection:", &v, &ve)) {
            if (ve - v == 5 && strncasecmp(v, "close", 5) == 0) a->close = true;
        } else if (ah_header_is(p, e, "x-amzn-errortype:", &v, &ve)) {
            size_t k = 0;
            while (v + k < ve && v[k] != ':' && k < sizeof a->errtype - 1) k++;
            memcpy(a->errtype, v, k);
            a->errtype[k] = '\0';
        }
        p = le + 1;
    }
    size_t head = (size_t)(end - buf);
    if (*interim) return (long)head;
    if (clen < 0) {
        *why = "answer without Content-Length";
        return -1;
    }
    if (clen > (long long)AH_MAX_BODY) {
        *why = "answer body over 1 MB";
        return -1;
    }
    if (len - head < (size_t)clen) return 0;
    a->body_off = head;
    a->body_len = (size_t)clen;
    return (long)(head + (size_t)clen);
}

long ah_parse_answer(const char *buf, size_t len, ah_answer *a, const char **why)
{
    size_t off = 0;
    for (int k = 0; k < 8; k++) {              /* a few 100 Continue / 102 at most */
        bool interim = false;
        long n = ah_parse_one(buf + off, len - off, a, &interim, why);
        if (n <= 0) return n;
        if (!interim) {
            a->body_off += off;
            return (long)off + n;
        }
        off += (size_t)n;
    }
    *why = "more than 8 interim answers";
    return -1;
}

/* ---- the connection ---- */

struct ah_conn {
    const ah_target *t;
    ah_done_fn done;
    void *arg;
    conn cn;
    strbuf req;                /* the request in flight (kept for one resend) */
    bool busy;                 /* a request is waiting for its answer */
    bool connecting, handshaking;
    bool resent;               /* the request went out once more already */
    unsigned answers;          /* answers read on the current connection */
    uint64_t opened;
    int64_t sent_us;
    int revents;               /* of the io event being handled (0: none) */
    bool start;                /* ah_conn_send handed a request over: start it in ah_run */
    bool in_run, again;        /* ah_run is on the stack / must go round once more */
    char why[200];             /* the text of the last failure, handed to done */
};

static void ah_run(ah_conn *c);

static void ah_close(ah_conn *c)
{
    conn_close(&c->cn, false);
    c->connecting = c->handshaking = false;
    c->answers = 0;
}

/* The request ends without an answer: the connection is closed, done told why. */
static void ah_fail(ah_conn *c, const char *why)
{
    ah_close(c);
    if (!c->busy) return;
    c->busy = false;
    ah_result r = {.error = why, .sent_us = c->sent_us};
    c->done(c->arg, &r);
}

static void ah_start_connect(ah_conn *c)
{
    conn_step step;
    c->opened++;
    if (conn_connect(&c->cn, (const struct sockaddr *)&c->t->addr, c->t->addr_len, NULL, 0,
                     true, &step) != 0) {
        snprintf(c->why, sizeof c->why, "%s: %s", step == CONN_STEP_SOCKET ? "socket" : "connect",
                 strerror(conn_errno(&c->cn)));
        ah_fail(c, c->why);
        return;
    }
    c->connecting = true;
    c->revents = 0;             /* its writability is still to come */
}

/* The connection is up (TLS included): the request goes out. */
static void ah_write_request(ah_conn *c)
{
    strbuf_append(&c->cn.out, c->req.buf, c->req.len);
    c->sent_us = ah_now_us();
}

/* The connection ended before an answer (EOF or error): once, a request on a reused
 * connection that got no byte back goes out again on a new one. */
static void ah_lost(ah_conn *c, const char *why)
{
    if (c->busy && c->answers > 0 && c->cn.in.len == 0 && !c->resent) {
        c->resent = true;
        ah_close(c);
        conn_timer_set(&c->cn, c->t->timeout);
        ah_start_connect(c);
        return;
    }
    ah_fail(c, why);
}

static const char *ah_io_error(const ah_conn *c, bool writing)
{
    int e = conn_errno(&c->cn);
    if (conn_tls(&c->cn)) return "tls error";
    if (e == ECONNRESET || (writing && e == EPIPE)) return "connection reset";
    return writing ? "write error" : "read error";
}

/* Answers complete in the input: at most one, as one request is in flight. */
static void ah_parse_input(ah_conn *c)
{
    if (!c->busy) {                            /* bytes nobody asked for */
        ah_close(c);
        return;
    }
    ah_answer a;
    const char *why = NULL;
    long n = ah_parse_answer(c->cn.in.buf, c->cn.in.len, &a, &why);
    if (n == 0) return;
    if (n < 0) {
        ah_fail(c, why);
        return;
    }
    c->busy = false;
    c->answers++;
    conn_timer_stop(&c->cn);
    ah_result r = {.a = &a, .body = c->cn.in.buf + a.body_off, .sent_us = c->sent_us};
    c->done(c->arg, &r);        /* may hand over the next request: it starts in ah_run */
    strbuf_consume(&c->cn.in, (size_t)n);
    if (a.close) ah_close(c);
}

/* The request handed over goes out: on the open connection, or on a new one. */
static void ah_start_request(ah_conn *c)
{
    conn_timer_set(&c->cn, c->t->timeout);
    if (!conn_is_open(&c->cn)) ah_start_connect(c);
    else if (!c->connecting && !c->handshaking) ah_write_request(c);
}

static void ah_step(ah_conn *c)
{
    if (c->start) {
        c->start = false;
        ah_start_request(c);
    }
    if (!conn_is_open(&c->cn)) return;
    if (c->connecting) {
        if (!(c->revents & EV_WRITE)) return;
        int err = conn_connected(&c->cn);
        c->connecting = false;
        if (err) {
            snprintf(c->why, sizeof c->why, "connect: %s", strerror(err));
            ah_fail(c, c->why);
            return;
        }
        if (c->t->tls) {
            conn_starttls(&c->cn, c->t->tls, c->t->server_name);
            c->handshaking = true;
        } else if (c->busy) {
            ah_write_request(c);
        }
    }
    if (c->handshaking) {
        switch (conn_handshake(&c->cn)) {
        case CONN_OK:
            c->handshaking = false;
            if (c->busy) ah_write_request(c);
            break;
        case CONN_AGAIN: return;
        default: {
            snprintf(c->why, sizeof c->why, "tls handshake: %s", conn_error(&c->cn));
            ah_fail(c, c->why);
            return;
        }
        }
    }
    if (conn_flush(&c->cn, NULL) == CONN_ERROR) {
        ah_lost(c, ah_io_error(c, true));
        return;
    }
    for (int k = 0; k < 16 && conn_is_open(&c->cn); k++) {
        switch (conn_read(&c->cn, NULL)) {
        case CONN_OK: break;
        case CONN_AGAIN: return;
        case CONN_EOF:
            if (!c->busy) ah_close(c);         /* the server ended an idle connection */
            else ah_lost(c, "connection closed before the answer");
            return;
        case CONN_ERROR:
            if (!c->busy) ah_close(c);
            else ah_lost(c, ah_io_error(c, false));
            return;
        }
        ah_parse_input(c);
    }
}

static void ah_run(ah_conn *c)
{
    if (c->in_run) {
        c->again = true;
        return;
    }
    c->in_run = true;
    do {
        c->again = false;
        ah_step(c);
    } while (c->again);
    c->in_run = false;
    if (!conn_is_open(&c->cn)) return;
    bool reading = !c->connecting && !c->handshaking;
    if (reading && conn_read_pending(&c->cn)) conn_feed(&c->cn, EV_READ);
    conn_update(&c->cn, reading);
}

static void ah_on_io(void *arg, int revents)
{
    ah_conn *c = arg;
    c->revents = revents;
    ah_run(c);
    c->revents = 0;
}

static void ah_on_timeout(void *arg)
{
    ah_conn *c = arg;
    ah_fail(c, c->connecting ? "connect: timeout" : "timeout");
}

static const conn_ops ah_conn_ops = {.on_io = ah_on_io, .on_timeout = ah_on_timeout};

ah_conn *ah_conn_new(const ah_target *t, ah_done_fn done, void *arg)
{
    ah_conn *c = util_calloc(1, sizeof *c);
    c->t = t;
    c->done = done;
    c->arg = arg;
    strbuf_init(&c->req);
    conn_init(&c->cn, t->loop, &ah_conn_ops, c);
    return c;
}

void ah_conn_send(ah_conn *c, strbuf *req)
{
    strbuf tmp = c->req;
    c->req = *req;
    *req = tmp;
    strbuf_reset(req);
    c->busy = true;
    c->resent = false;
    c->start = true;            /* in ah_run, so that a done() calling back never nests */
    ah_run(c);
}

uint64_t ah_conn_opened(const ah_conn *c)
{
    return c->opened;
}

void ah_conn_free(ah_conn *c)
{
    if (!c) return;
    conn_free(&c->cn);
    strbuf_free(&c->req);
    free(c);
}
