/* test_http.c — api/http.c on 127.0.0.1 (port 0) with a private libev loop, driven by
 * clients in a thread (plain blocking sockets; libcurl for TLS): the raw path and query as
 * sent, headers looked up in any case, the body; two requests on one connection; an answer
 * given later from a timer (the suspended connection resumes, and serves the next request);
 * a declared body over max_body answered 413 before it is sent, a chunked one at its end;
 * headers over max_header answered with an error (not a hang); the in-flight cap answering
 * 503; a client that disconnects while its answer is pending, answered late (nothing sent,
 * nothing leaked under ASan); an exchange held across http_stop; TLS with a certificate
 * made by the openssl CLI; the per-IP connection limit; the idle timeout; bind errors.
 * Every client call has a 5 s socket timeout and every loop run a 10 s guard timer. */
#include <arpa/inet.h>
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <ev.h>

#include "api/http.h"
#include "base/log.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

/* ------------------------------------------------------------------------------------------
 * The server side: a handler that echoes, answers later, or holds the exchange
 * ---------------------------------------------------------------------------------------- */

typedef struct srv {
    struct ev_loop *loop;
    klog *log;
    char logpath[400];
    http_server *s;
    int port;
    atomic_int handled;          /* requests the handler saw */
    http_exchange *later;        /* answered by the timer */
    ev_timer later_timer;
    http_exchange *held[4];      /* answered by the test itself */
    int nheld;
} srv;

#define HTTP_TEST_BIG_REPLY (16u * 1024 * 1024)   /* /bigreply: 16 MB of 'z' */

static void srv_later_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    srv *t = w->data;
    if (!t->later) return;
    const char *h[] = {"Content-Type", "text/plain", "X-Reply", "late", NULL};
    http_reply(t->later, 202, h, util_strdup("late"), 4);
    t->later = NULL;
}

static void srv_handler(void *arg, const http_request *r, http_exchange *x)
{
    srv *t = arg;
    atomic_fetch_add(&t->handled, 1);
    if (strcmp(r->path, "/later") == 0) {
        t->later = x;
        ev_timer_set(&t->later_timer, 0.15, 0.);
        ev_timer_start(t->loop, &t->later_timer);
        return;
    }
    if (strcmp(r->path, "/hold") == 0) {
        t->held[t->nheld++] = x;
        return;
    }
    if (strcmp(r->path, "/bigreply") == 0) {     /* more than the sockets can buffer */
        char *big = util_malloc(HTTP_TEST_BIG_REPLY);
        memset(big, 'z', HTTP_TEST_BIG_REPLY);
        http_reply(x, 200, NULL, big, HTTP_TEST_BIG_REPLY);
        return;
    }
    if (strcmp(r->path, "/fits") == 0) {         /* query: the answer size to ask about */
        char *body = util_asprintf("fits=%d", http_reply_fits(x, strtoul(r->query, NULL, 10)));
        http_reply(x, 200, NULL, body, strlen(body));
        return;
    }
    const char *xt = http_request_header(r, "x-TEST");
    char *body = util_asprintf("method=%s path=%s query=%s x-test=%s tls=%d len=%zu body=%s",
                               r->method, r->path, r->query, xt ? xt : "-", r->tls,
                               r->body_len, r->body);
    http_reply(x, 200, NULL, body, strlen(body));
}

static const http_limits LIMITS = {.max_body = 1000, .max_header = 4096, .max_inflight = 1500,
                                   .max_connections = 50, .max_per_ip = 20, .timeout_s = 30};

static void srv_start_tls(srv *t, const http_limits *lim, const http_tls *tls)
{
    memset(t, 0, sizeof *t);
    signal(SIGPIPE, SIG_IGN);
    t->loop = ev_loop_new(EVFLAG_AUTO);
    snprintf(t->logpath, sizeof t->logpath, "%s/log", testlib_tmpdir("http"));
    char *err = NULL;
    t->log = log_open(t->logpath, KLOG_DEBUG, &err);
    ck_assert_msg(t->log != NULL, "%s", err);
    ev_timer_init(&t->later_timer, srv_later_cb, 0., 0.);
    t->later_timer.data = t;
    http_listen l = {"127.0.0.1", 0};
    t->s = http_start(t->loop, t->log, &l, 1, tls, lim ? lim : &LIMITS, srv_handler, t, &err);
    ck_assert_msg(t->s != NULL, "%s", err);
    t->port = http_port(t->s, 0);
    ck_assert_int_gt(t->port, 0);
}

static void srv_start(srv *t, const http_limits *lim) { srv_start_tls(t, lim, NULL); }

static void srv_stop(srv *t)
{
    if (t->s) http_stop(t->s);
    t->s = NULL;
    ev_timer_stop(t->loop, &t->later_timer);
    ev_loop_destroy(t->loop);
    log_close(t->log);
}

static bool log_has(srv *t, const char *what)
{
    char *text = testlib_read_file(t->logpath, NULL);
    bool yes = text && strstr(text, what);
    free(text);
    return yes;
}

/* ------------------------------------------------------------------------------------------
 * Running a client thread against the loop
 * ---------------------------------------------------------------------------------------- */

typedef struct run {
    srv *t;
    void (*fn)(struct run *);
    ev_async done;
    pthread_t th;
    /* results, read by the main thread after the join */
    int status[8];
    char head[8][2048];
    char body[8][2048];
    double elapsed[8];
    int port;
} run;

static void run_done_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void run_guard_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    *(bool *)w->data = true;
    ev_break(loop, EVBREAK_ALL);
}

static void *run_thread(void *arg)
{
    run *r = arg;
    r->fn(r);
    ev_async_send(r->t->loop, &r->done);
    return NULL;
}

/* Runs fn in a thread while the loop serves; returns when it is done (or after 10 s). */
static void run_client(srv *t, run *r, void (*fn)(run *))
{
    memset(r, 0, sizeof *r);
    r->t = t;
    r->fn = fn;
    r->port = t->port;
    ev_async_init(&r->done, run_done_cb);
    ev_async_start(t->loop, &r->done);
    bool timed_out = false;
    ev_timer guard;
    ev_timer_init(&guard, run_guard_cb, 10., 0.);
    guard.data = &timed_out;
    ev_timer_start(t->loop, &guard);
    ck_assert_int_eq(pthread_create(&r->th, NULL, run_thread, r), 0);
    ev_run(t->loop, 0);
    pthread_join(r->th, NULL);
    ev_timer_stop(t->loop, &guard);
    ev_async_stop(t->loop, &r->done);
    ck_assert_msg(!timed_out, "the client did not finish within 10 s");
}

/* Runs the loop for about sec seconds. */
static void spin(srv *t, double sec)
{
    bool fired = false;
    ev_timer guard;
    ev_timer_init(&guard, run_guard_cb, sec, 0.);
    guard.data = &fired;
    ev_timer_start(t->loop, &guard);
    ev_run(t->loop, 0);
    ev_timer_stop(t->loop, &guard);
}

/* ---- client helpers (in the thread: no ck_assert here) ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cl_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void cl_send(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static void cl_puts(int fd, const char *s) { cl_send(fd, s, strlen(s)); }

/* Reads one response into r's slot i: its status, header block and body (Content-Length).
 * The status is 0 when the connection was closed (or timed out) before a full response.
 * Peeks first and then takes exactly one response, so that pipelined answers stay queued. */
static void cl_read(run *r, int fd, int i)
{
    double t0 = now_s();
    char buf[8192];
    r->status[i] = 0;
    for (;;) {
        ssize_t got = recv(fd, buf, sizeof buf - 1, MSG_PEEK);
        r->elapsed[i] = now_s() - t0;
        if (got <= 0 || r->elapsed[i] > 5) return;
        buf[got] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (!end) {
            usleep(1000);
            continue;
        }
        size_t hl = (size_t)(end - buf) + 4;
        snprintf(r->head[i], sizeof r->head[i], "%.*s", (int)hl, buf);
        size_t cl = 0;
        for (char *p = buf; p && p < end; p = strstr(p, "\r\n"), p = p ? p + 2 : NULL)
            if (strncasecmp(p, "Content-Length:", 15) == 0) cl = strtoul(p + 15, NULL, 10);
        if (hl + cl >= sizeof buf) return;
        got = recv(fd, buf, hl + cl, MSG_WAITALL);
        if (got != (ssize_t)(hl + cl)) return;
        snprintf(r->body[i], sizeof r->body[i], "%.*s", (int)cl, buf + hl);
        r->status[i] = atoi(buf + 9);
        r->elapsed[i] = now_s() - t0;
        return;
    }
}

/* ------------------------------------------------------------------------------------------
 * Tests
 * ---------------------------------------------------------------------------------------- */

static void cl_keepalive(run *r)
{
    int fd = cl_connect(r->port);
    cl_puts(fd, "POST /v2/email/x%40y?a=b%20c&d HTTP/1.1\r\nHost: kiln\r\nX-Test: one\r\n"
                "Content-Length: 5\r\n\r\nhello");
    cl_read(r, fd, 0);
    cl_puts(fd, "GET /second HTTP/1.1\r\nHost: kiln\r\nx-test:  two  \r\n\r\n");
    cl_read(r, fd, 1);
    close(fd);
}

START_TEST(test_keepalive_and_request)
{
    srv t;
    srv_start(&t, NULL);
    run r;
    run_client(&t, &r, cl_keepalive);
    ck_assert_int_eq(r.status[0], 200);
    ck_assert_str_eq(r.body[0], "method=POST path=/v2/email/x%40y query=a=b%20c&d x-test=one "
                                "tls=0 len=5 body=hello");
    ck_assert_msg(strstr(r.head[0], "Content-Type: application/json\r\n"), "%s", r.head[0]);
    ck_assert_msg(strstr(r.head[0], "Date: "), "%s", r.head[0]);
    ck_assert_msg(strstr(r.head[0], "Content-Length: "), "%s", r.head[0]);
    char *id = strstr(r.head[0], "x-amzn-RequestId: ");
    ck_assert_msg(id, "%s", r.head[0]);
    id += 18;
    ck_assert_msg(strspn(id, "0123456789abcdef-") == 36 && id[8] == '-' && id[14] == '4' &&
                      strchr("89ab", id[19]),
                  "not a random UUID: %.40s", id);
    /* the second request came on the same connection */
    ck_assert_int_eq(r.status[1], 200);
    ck_assert_str_eq(r.body[1], "method=GET path=/second query= x-test=two tls=0 len=0 body=");
    ck_assert_int_eq(atomic_load(&t.handled), 2);
    ck_assert(log_has(&t, "event=http.listen addr=127.0.0.1 port="));
    srv_stop(&t);
}
END_TEST

static void cl_later(run *r)
{
    int fd = cl_connect(r->port);
    cl_puts(fd, "GET /later HTTP/1.1\r\nHost: kiln\r\n\r\n");
    cl_read(r, fd, 0);
    cl_puts(fd, "GET /after HTTP/1.1\r\nHost: kiln\r\n\r\n");
    cl_read(r, fd, 1);
    /* pipelined: the second request waits in MHD's buffer while the first is suspended */
    cl_puts(fd, "GET /later HTTP/1.1\r\nHost: kiln\r\n\r\nGET /piped HTTP/1.1\r\nHost: kiln\r\n\r\n");
    cl_read(r, fd, 2);
    cl_read(r, fd, 3);
    close(fd);
}

START_TEST(test_async_reply)
{
    srv t;
    srv_start(&t, NULL);
    run r;
    run_client(&t, &r, cl_later);
    ck_assert_int_eq(r.status[0], 202);
    ck_assert_str_eq(r.body[0], "late");
    ck_assert_msg(r.elapsed[0] >= 0.12 && r.elapsed[0] < 2, "answered after %.3f s",
                  r.elapsed[0]);
    ck_assert_msg(strstr(r.head[0], "Content-Type: text/plain\r\n"), "%s", r.head[0]);
    ck_assert_msg(strstr(r.head[0], "X-Reply: late\r\n"), "%s", r.head[0]);
    ck_assert_msg(!strstr(r.head[0], "application/json"), "%s", r.head[0]);
    ck_assert_int_eq(r.status[1], 200);   /* the resumed connection serves the next request */
    ck_assert_str_eq(r.body[1], "method=GET path=/after query= x-test=- tls=0 len=0 body=");
    ck_assert_int_eq(r.status[2], 202);
    ck_assert_int_eq(r.status[3], 200);
    ck_assert_str_eq(r.body[3], "method=GET path=/piped query= x-test=- tls=0 len=0 body=");
    srv_stop(&t);
}
END_TEST

static void cl_too_big(run *r)
{
    /* declared: answered before any body byte is sent */
    int fd = cl_connect(r->port);
    cl_puts(fd, "POST /big HTTP/1.1\r\nHost: kiln\r\nContent-Length: 1001\r\n\r\n");
    cl_read(r, fd, 0);
    close(fd);
    /* chunked: 600 + 600 bytes, answered at its end */
    fd = cl_connect(r->port);
    char chunk[700];
    memset(chunk, 'a', 600);
    chunk[600] = '\0';
    cl_puts(fd, "POST /big HTTP/1.1\r\nHost: kiln\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 2; i++) {
        cl_puts(fd, "258\r\n");
        cl_puts(fd, chunk);
        cl_puts(fd, "\r\n");
    }
    cl_puts(fd, "0\r\n\r\n");
    cl_read(r, fd, 1);
    close(fd);
    /* exactly max_body passes, chunked too */
    fd = cl_connect(r->port);
    memset(chunk, 'b', 500);
    chunk[500] = '\0';
    cl_puts(fd, "POST /ok HTTP/1.1\r\nHost: kiln\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 2; i++) {
        cl_puts(fd, "1f4\r\n");
        cl_puts(fd, chunk);
        cl_puts(fd, "\r\n");
    }
    cl_puts(fd, "0\r\n\r\n");
    cl_read(r, fd, 2);
    close(fd);
}

START_TEST(test_body_too_large)
{
    srv t;
    srv_start(&t, NULL);
    run r;
    run_client(&t, &r, cl_too_big);
    ck_assert_int_eq(r.status[0], 413);
    ck_assert_msg(strstr(r.body[0], "request body too large (at most 1000 bytes)"), "%s",
                  r.body[0]);
    ck_assert_int_eq(r.status[1], 413);
    ck_assert_int_eq(r.status[2], 200);
    ck_assert_msg(strstr(r.body[2], "len=1000 body=bbbb"), "%.60s", r.body[2]);
    ck_assert_int_eq(atomic_load(&t.handled), 1);
    ck_assert(log_has(&t, "event=http.reject client=127.0.0.1 reason=body-too-large status=413"));
    srv_stop(&t);
}
END_TEST

static void cl_big_headers(run *r)
{
    int fd = cl_connect(r->port);
    char *req = util_malloc(9000);
    int n = snprintf(req, 9000, "GET /h HTTP/1.1\r\nHost: kiln\r\nX-Big: ");
    memset(req + n, 'h', 8000);
    memcpy(req + n + 8000, "\r\n\r\n", 5);
    cl_puts(fd, req);
    free(req);
    cl_read(r, fd, 0);
    close(fd);
}

START_TEST(test_headers_too_large)
{
    srv t;
    srv_start(&t, NULL);
    run r;
    run_client(&t, &r, cl_big_headers);
    ck_assert_msg(r.status[0] == 431 || r.status[0] == 414, "status %d after %.2f s",
                  r.status[0], r.elapsed[0]);
    ck_assert_int_eq(atomic_load(&t.handled), 0);
    spin(&t, 0.05);
    ck_assert(log_has(&t, "event=http.reject client=127.0.0.1 reason=headers-too-large"));
    srv_stop(&t);
}
END_TEST

static void cl_inflight(run *r)
{
    /* A declares 1000 bytes (reserved) and sends half of them */
    int a = cl_connect(r->port);
    char half[600];
    memset(half, 'x', 500);
    half[500] = '\0';
    cl_puts(a, "POST /a HTTP/1.1\r\nHost: kiln\r\nContent-Length: 1000\r\n\r\n");
    cl_puts(a, half);
    usleep(200000);
    /* B's 1000 bytes would pass max_inflight (1500): 503 */
    int b = cl_connect(r->port);
    cl_puts(b, "POST /b HTTP/1.1\r\nHost: kiln\r\nContent-Length: 1000\r\n\r\n");
    cl_read(r, b, 0);
    close(b);
    /* B's 400 bytes fit */
    b = cl_connect(r->port);
    cl_puts(b, "POST /b2 HTTP/1.1\r\nHost: kiln\r\nContent-Length: 4\r\n\r\nbody");
    cl_read(r, b, 1);
    close(b);
    cl_puts(a, half);
    cl_read(r, a, 2);
    close(a);
    /* everything given back: 1000 fits again */
    b = cl_connect(r->port);
    cl_puts(b, "POST /b3 HTTP/1.1\r\nHost: kiln\r\nContent-Length: 1000\r\n\r\n");
    cl_puts(b, half);
    cl_puts(b, half);
    cl_read(r, b, 3);
    close(b);
}

START_TEST(test_inflight_cap)
{
    srv t;
    srv_start(&t, NULL);
    run r;
    run_client(&t, &r, cl_inflight);
    ck_assert_int_eq(r.status[0], 503);
    ck_assert_msg(strstr(r.head[0], "x-amzn-ErrorType: ServiceUnavailable"), "%s", r.head[0]);
    ck_assert_int_eq(r.status[1], 200);
    ck_assert_int_eq(r.status[2], 200);
    ck_assert_msg(strstr(r.body[2], "path=/a ") && strstr(r.body[2], "len=1000"), "%s",
                  r.body[2]);
    ck_assert_int_eq(r.status[3], 200);
    ck_assert(log_has(&t, "reason=inflight-full status=503"));
    srv_stop(&t);
}
END_TEST

static void cl_reply_held(run *r)
{
    /* A asks for 16 MB and reads nothing: most of the answer stays with the server */
    int a = cl_connect(r->port);
    cl_puts(a, "GET /bigreply HTTP/1.1\r\nHost: kiln\r\n\r\n");
    usleep(300000);
    /* with 24 MB in all, 16 MB unsent: 9 MB more do not fit, 7 MB do */
    int b = cl_connect(r->port);
    cl_puts(b, "GET /fits?9000000 HTTP/1.1\r\nHost: kiln\r\n\r\n");
    cl_read(r, b, 0);
    cl_puts(b, "GET /fits?7000000 HTTP/1.1\r\nHost: kiln\r\n\r\n");
    cl_read(r, b, 1);
    /* a request body of 9 MB is refused as well */
    int c = cl_connect(r->port);
    cl_puts(c, "POST /c HTTP/1.1\r\nHost: kiln\r\nContent-Length: 9000000\r\n\r\n");
    cl_read(r, c, 2);
    close(c);
    /* A reads its answer: once it is sent, the bytes are given back */
    size_t want = HTTP_TEST_BIG_REPLY, got = 0;
    char buf[65536];
    bool in_body = false;
    char hdr[4096];
    size_t hl = 0;
    while (got < want) {
        ssize_t n = recv(a, buf, sizeof buf, 0);
        if (n <= 0) break;
        size_t off = 0;
        if (!in_body) {                  /* skip the header block */
            size_t take = (size_t)n < sizeof hdr - hl - 1 ? (size_t)n : sizeof hdr - hl - 1;
            memcpy(hdr + hl, buf, take);
            hl += take;
            hdr[hl] = '\0';
            char *end = strstr(hdr, "\r\n\r\n");
            if (!end) continue;
            size_t body_at = (size_t)(end - hdr) + 4;
            off = body_at - (hl - take);
            in_body = true;
        }
        got += (size_t)n - off;
    }
    r->status[3] = got == want ? 200 : 0;
    close(a);
    usleep(100000);
    cl_puts(b, "GET /fits?9000000 HTTP/1.1\r\nHost: kiln\r\n\r\n");
    cl_read(r, b, 4);
    close(b);
}

START_TEST(test_unsent_answers_count_in_inflight)
{
    srv t;
    http_limits lim = LIMITS;
    lim.max_body = 10 * 1024 * 1024;
    lim.max_inflight = 24 * 1024 * 1024;
    srv_start(&t, &lim);
    run r;
    run_client(&t, &r, cl_reply_held);
    ck_assert_int_eq(r.status[0], 200);
    ck_assert_str_eq(r.body[0], "fits=0");
    ck_assert_str_eq(r.body[1], "fits=1");
    ck_assert_int_eq(r.status[2], 503);
    ck_assert_int_eq(r.status[3], 200);               /* all 16 MB arrived */
    ck_assert_str_eq(r.body[4], "fits=1");
    srv_stop(&t);
}
END_TEST

static void cl_hold_and_leave(run *r)
{
    int fd = cl_connect(r->port);
    cl_puts(fd, "POST /hold HTTP/1.1\r\nHost: kiln\r\nContent-Length: 3\r\n\r\nabc");
    usleep(200000);
    close(fd);
    usleep(100000);
}

/* The client leaves while its answer is pending; the late answer goes nowhere and the
 * request stayed readable until then. */
START_TEST(test_disconnect_then_late_reply)
{
    srv t;
    srv_start(&t, NULL);
    run r;
    run_client(&t, &r, cl_hold_and_leave);
    spin(&t, 0.1);
    ck_assert_int_eq(t.nheld, 1);
    http_reply(t.held[0], 200, NULL, util_strdup("{}"), 2);
    spin(&t, 0.1);
    /* the server still serves */
    run_client(&t, &r, cl_keepalive);
    ck_assert_int_eq(r.status[0], 200);
    ck_assert_int_eq(r.status[1], 200);
    srv_stop(&t);
}
END_TEST

/* An exchange held across http_stop: stop drops it, a later http_reply only frees it. */
START_TEST(test_reply_after_stop)
{
    srv t;
    srv_start(&t, NULL);
    run r;
    run_client(&t, &r, cl_hold_and_leave);
    ck_assert_int_eq(t.nheld, 1);
    http_stop(t.s);
    t.s = NULL;
    http_reply(t.held[0], 200, NULL, util_strdup("{}"), 2);
    srv_stop(&t);
}
END_TEST

static void cl_hold_open(run *r)
{
    int fd = cl_connect(r->port);
    cl_puts(fd, "GET /hold HTTP/1.1\r\nHost: kiln\r\n\r\n");
    usleep(200000);
    r->status[7] = fd;       /* left open for the test */
}

/* Still connected and suspended at http_stop: MHD is stopped cleanly, the client sees the
 * connection closed, the late reply frees. */
START_TEST(test_stop_with_suspended)
{
    srv t;
    srv_start(&t, NULL);
    run r;
    run_client(&t, &r, cl_hold_open);
    ck_assert_int_eq(t.nheld, 1);
    http_stop(t.s);
    t.s = NULL;
    char c;
    ck_assert_int_eq(recv(r.status[7], &c, 1, 0), 0);
    close(r.status[7]);
    http_reply(t.held[0], 200, NULL, NULL, 0);
    srv_stop(&t);
}
END_TEST

static size_t curl_sink(char *p, size_t sz, size_t n, void *arg)
{
    strbuf_append(arg, p, sz * n);
    return sz * n;
}

static void cl_tls(run *r)
{
    CURL *c = curl_easy_init();
    char url[100];
    strbuf sb;
    strbuf_init(&sb);
    for (int i = 0; i < 2; i++) {
        snprintf(url, sizeof url, "https://127.0.0.1:%d/tls%d?q=1", r->port, i);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 5L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, curl_sink);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &sb);
        strbuf_reset(&sb);
        if (curl_easy_perform(c) != CURLE_OK) break;
        long code = 0, conns = -1;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &conns);
        r->status[i] = (int)code;
        r->elapsed[i] = (double)conns;
        snprintf(r->body[i], sizeof r->body[i], "%s", sb.buf ? sb.buf : "");
    }
    strbuf_free(&sb);
    curl_easy_cleanup(c);
}

START_TEST(test_tls)
{
    const char *d = testlib_tmpdir("tls");
    char *cmd = util_asprintf(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
        "-subj /CN=localhost -keyout %s/key.pem -out %s/cert.pem >/dev/null 2>&1", d, d);
    ck_assert_int_eq(system(cmd), 0);
    free(cmd);
    char cert[400], key[400];
    snprintf(cert, sizeof cert, "%s/cert.pem", d);
    snprintf(key, sizeof key, "%s/key.pem", d);
    http_tls tls = {cert, key};
    srv t;
    srv_start_tls(&t, NULL, &tls);
    ck_assert(log_has(&t, "tls=yes"));
    run r;
    run_client(&t, &r, cl_tls);
    ck_assert_int_eq(r.status[0], 200);
    ck_assert_str_eq(r.body[0], "method=GET path=/tls0 query=q=1 x-test=- tls=1 len=0 body=");
    ck_assert_int_eq(r.status[1], 200);
    ck_assert_str_eq(r.body[1], "method=GET path=/tls1 query=q=1 x-test=- tls=1 len=0 body=");
    ck_assert_msg(r.elapsed[1] == 0, "the second request opened %g connections", r.elapsed[1]);
    srv_stop(&t);

    /* errors name the file */
    char *err = NULL;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    http_listen l = {"127.0.0.1", 0};
    char missing[400];
    snprintf(missing, sizeof missing, "%s/nosuch.pem", d);
    http_tls bad = {missing, key};
    ck_assert_ptr_null(http_start(loop, NULL, &l, 1, &bad, &LIMITS, srv_handler, NULL, &err));
    ck_assert_msg(strstr(err, "api.tls.cert ") && strstr(err, "/nosuch.pem: No such file"),
                  "%s", err);
    free(err);
    http_tls swapped = {key, cert};   /* a key as the certificate: MHD refuses it */
    klog *lg = log_open("stderr", KLOG_ERROR, &err);
    ck_assert_ptr_null(http_start(loop, lg, &l, 1, &swapped, &LIMITS, srv_handler, NULL, &err));
    ck_assert_msg(strstr(err, "cannot start HTTPS"), "%s", err);
    free(err);
    log_close(lg);
    ev_loop_destroy(loop);
}
END_TEST

static void cl_per_ip(run *r)
{
    int a = cl_connect(r->port), b = cl_connect(r->port);
    usleep(100000);
    int c = cl_connect(r->port);
    cl_puts(c, "GET /third HTTP/1.1\r\nHost: kiln\r\n\r\n");
    cl_read(r, c, 0);               /* closed: status 0, quickly */
    close(c);
    cl_puts(a, "GET /a HTTP/1.1\r\nHost: kiln\r\n\r\n");
    cl_read(r, a, 1);
    cl_puts(b, "GET /b HTTP/1.1\r\nHost: kiln\r\n\r\n");
    cl_read(r, b, 2);
    close(a);
    close(b);
}

START_TEST(test_per_ip_limit)
{
    http_limits lim = LIMITS;
    lim.max_per_ip = 2;
    srv t;
    srv_start(&t, &lim);
    run r;
    run_client(&t, &r, cl_per_ip);
    ck_assert_int_eq(r.status[0], 0);
    ck_assert_msg(r.elapsed[0] < 2, "the third connection hung %.2f s", r.elapsed[0]);
    ck_assert_int_eq(r.status[1], 200);
    ck_assert_int_eq(r.status[2], 200);
    ck_assert_int_eq(atomic_load(&t.handled), 2);
    srv_stop(&t);
}
END_TEST

static void cl_idle(run *r)
{
    int fd = cl_connect(r->port);
    cl_read(r, fd, 0);              /* says nothing: closed by the server */
    close(fd);
}

START_TEST(test_idle_timeout)
{
    http_limits lim = LIMITS;
    lim.timeout_s = 1;
    srv t;
    srv_start(&t, &lim);
    run r;
    run_client(&t, &r, cl_idle);
    ck_assert_int_eq(r.status[0], 0);
    ck_assert_msg(r.elapsed[0] >= 0.8 && r.elapsed[0] < 3, "closed after %.2f s", r.elapsed[0]);
    srv_stop(&t);
}
END_TEST

START_TEST(test_bind_errors_and_ipv6)
{
    srv t;
    srv_start(&t, NULL);
    char *err = NULL;
    http_listen l[2] = {{"127.0.0.1", 0}, {"127.0.0.1", t.port}};
    ck_assert_ptr_null(http_start(t.loop, t.log, l, 2, NULL, &LIMITS, srv_handler, &t, &err));
    char want[100];
    snprintf(want, sizeof want, "api.listen 127.0.0.1:%d: Address already in use", t.port);
    ck_assert_str_eq(err, want);
    free(err);
    http_listen bad = {"no.such.host.invalid", 0};
    ck_assert_ptr_null(http_start(t.loop, t.log, &bad, 1, NULL, &LIMITS, srv_handler, &t, &err));
    ck_assert_msg(strncmp(err, "api.listen no.such.host.invalid:0: ", 35) == 0, "%s", err);
    free(err);
    srv_stop(&t);

    /* two listeners, one of them IPv6 (when this host has ::1) */
    int fd6 = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool have6 = fd6 >= 0 && bind(fd6, (struct sockaddr *)&a6, sizeof a6) == 0;
    if (fd6 >= 0) close(fd6);
    if (!have6) return;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    http_listen two[2] = {{"127.0.0.1", 0}, {"::1", 0}};
    http_server *s = http_start(loop, NULL, two, 2, NULL, &LIMITS, srv_handler, NULL, &err);
    ck_assert_msg(s != NULL, "%s", err);
    ck_assert_int_gt(http_port(s, 1), 0);
    ck_assert_int_ne(http_port(s, 0), http_port(s, 1));
    ck_assert_int_eq(http_port(s, 2), -1);
    http_stop(s);
    ev_loop_destroy(loop);
}
END_TEST

START_TEST(test_header_lookup)
{
    http_header h[] = {{"Content-Type", "text/plain"}, {"X-Amz-Date", "1"}, {"x-amz-date", "2"}};
    http_request r = {.headers = h, .nheaders = 3};
    ck_assert_str_eq(http_request_header(&r, "content-type"), "text/plain");
    ck_assert_str_eq(http_request_header(&r, "X-AMZ-DATE"), "1");
    ck_assert_ptr_null(http_request_header(&r, "Host"));
}
END_TEST

static Suite *http_suite(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("listener");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_header_lookup);
    tcase_add_test(tc, test_keepalive_and_request);
    tcase_add_test(tc, test_async_reply);
    tcase_add_test(tc, test_body_too_large);
    tcase_add_test(tc, test_headers_too_large);
    tcase_add_test(tc, test_inflight_cap);
    tcase_add_test(tc, test_unsent_answers_count_in_inflight);
    tcase_add_test(tc, test_disconnect_then_late_reply);
    tcase_add_test(tc, test_reply_after_stop);
    tcase_add_test(tc, test_stop_with_suspended);
    tcase_add_test(tc, test_tls);
    tcase_add_test(tc, test_per_ip_limit);
    tcase_add_test(tc, test_idle_timeout);
    tcase_add_test(tc, test_bind_errors_and_ipv6);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(http_suite);
