/* test_conn.c — mta/conn.c on real sockets (socketpairs and loopback TCP) and a real libev
 * loop: reads append to `in` and report EOF, flush keeps order under back-pressure and
 * reports AGAIN, the watcher follows what is pending, the timer fires once and is stopped
 * first, fed events reach on_io, outbound connect (refused, unbindable source, accepted by
 * a conn_acceptor), the lingering close (shutdown_write + discard), and the reset that drops
 * what the kernel still holds to send (a plain close lets the kernel deliver it later). TLS is covered by the
 * integration tests (test_submission.py, test_route_delivery.py, test_tools.py). */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "mta/conn.h"
#include "tests/unit/testlib.h"

typedef struct probe {
    int ios, timeouts, last_revents;
} probe;

static void probe_on_io(void *arg, int revents)
{
    probe *p = arg;
    p->ios++;
    p->last_revents = revents;
}

static void probe_on_timeout(void *arg)
{
    ((probe *)arg)->timeouts++;
}

static const conn_ops probe_ops = {.on_io = probe_on_io, .on_timeout = probe_on_timeout};

/* c wraps sv[0] (non-blocking); sv[1] is the peer, blocking. */
static void pair(struct ev_loop *loop, conn *c, probe *p, int *peer)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    conn_init(c, loop, &probe_ops, p);
    conn_attach(c, sv[0]);
    *peer = sv[1];
}

START_TEST(test_read_then_again_then_eof)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    conn c;
    probe p = {0};
    int peer;
    pair(loop, &c, &p, &peer);
    size_t n = 99;
    ck_assert_int_eq(conn_read(&c, &n), CONN_AGAIN);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(write(peer, "EHLO x\r\n", 8), 8);
    ck_assert_int_eq(conn_read(&c, &n), CONN_OK);
    ck_assert_uint_eq(n, 8);
    ck_assert_str_eq(c.in.buf, "EHLO x\r\n");       /* NUL-terminated */
    ck_assert_int_eq(write(peer, "QUIT\r\n", 6), 6);
    /* the 8-byte read emptied the socket: the next read answers AGAIN without asking the
     * kernel (once; a watcher event would clear it too), then reads again */
    ck_assert_int_eq(conn_read(&c, &n), CONN_AGAIN);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(conn_read(&c, NULL), CONN_OK);  /* appended */
    ck_assert_str_eq(c.in.buf, "EHLO x\r\nQUIT\r\n");
    close(peer);
    ck_assert_int_eq(conn_read(&c, NULL), CONN_AGAIN); /* the short read's one AGAIN */
    ck_assert_int_eq(conn_read(&c, NULL), CONN_EOF);
    ck_assert(conn_is_open(&c));                      /* EOF is reported, not acted on */
    conn_free(&c);
    ck_assert(!conn_is_open(&c));
    conn_free(&c);                                    /* idempotent */
    ev_loop_destroy(loop);
}
END_TEST

START_TEST(test_flush_backpressure_keeps_order)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    conn c;
    probe p = {0};
    int peer;
    pair(loop, &c, &p, &peer);
    const size_t total = 4 * 1024 * 1024;
    char *want = malloc(total);
    for (size_t i = 0; i < total; i++) want[i] = (char)('a' + i % 26);
    strbuf_append(&c.out, want, total);
    size_t put = 0;
    ck_assert_int_eq(conn_flush(&c, &put), CONN_AGAIN);
    ck_assert_uint_gt(put, 0);
    ck_assert_uint_eq(conn_out_pending(&c), total - put);
    conn_update(&c, false);
    ck_assert_int_eq(c.io_events, EV_WRITE);
    conn_update(&c, true);
    ck_assert_int_eq(c.io_events, EV_READ | EV_WRITE);
    char *got = malloc(total);
    size_t have = 0;
    while (have < total) {
        ssize_t r = read(peer, got + have, total - have);
        if (r <= 0) ck_abort_msg("read failed");
        have += (size_t)r;
        conn_status st = conn_flush(&c, NULL);
        if (st != CONN_OK && st != CONN_AGAIN) ck_abort_msg("flush failed");
    }
    ck_assert_uint_eq(conn_out_pending(&c), 0);
    ck_assert_uint_eq(c.out.len, 0);                  /* written output is dropped */
    ck_assert(memcmp(got, want, total) == 0);
    conn_update(&c, false);
    ck_assert_int_eq(c.io_events, 0);
    free(got);
    free(want);
    close(peer);
    strbuf_puts(&c.out, "late\r\n");
    ck_assert_int_eq(conn_flush(&c, NULL), CONN_ERROR);   /* EPIPE, no SIGPIPE */
    ck_assert_int_eq(conn_errno(&c), EPIPE);
    ck_assert_str_eq(conn_error(&c), strerror(EPIPE));
    conn_free(&c);
    ev_loop_destroy(loop);
}
END_TEST

START_TEST(test_timer_fires_once_and_feed_reaches_on_io)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    conn c;
    probe p = {0};
    int peer;
    pair(loop, &c, &p, &peer);
    conn_timer_set(&c, 0.01);
    conn_timer_set(&c, 0.02);                         /* re-arming replaces */
    ev_run(loop, 0);                                  /* returns when nothing is active */
    ck_assert_int_eq(p.timeouts, 1);
    ck_assert(!ev_is_active(&c.timer));
    conn_feed(&c, EV_READ);
    ev_run(loop, EVRUN_NOWAIT);
    ck_assert_int_eq(p.ios, 1);
    ck_assert_int_eq(p.last_revents, EV_READ);
    /* readiness from the fd once armed */
    conn_update(&c, true);
    ck_assert_int_eq(write(peer, "x", 1), 1);
    ev_run(loop, EVRUN_ONCE);
    ck_assert_int_eq(p.ios, 2);
    ck_assert(p.last_revents & EV_READ);
    conn_close(&c, false);
    ck_assert_int_eq(c.io_events, 0);
    ck_assert(!ev_is_active(&c.io));
    conn_free(&c);
    close(peer);
    ev_loop_destroy(loop);
}
END_TEST

START_TEST(test_linger_discard)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    conn c;
    probe p = {0};
    int peer;
    pair(loop, &c, &p, &peer);
    conn_shutdown_write(&c);
    char b[8];
    ck_assert_int_eq(read(peer, b, sizeof b), 0);     /* the peer sees our EOF */
    ck_assert_int_eq(conn_discard(&c), CONN_AGAIN);
    ck_assert_int_eq(write(peer, "RSET\r\n", 6), 6);
    ck_assert_int_eq(conn_discard(&c), CONN_OK);
    ck_assert_uint_eq(c.in.len, 0);                   /* dropped, not buffered */
    close(peer);
    ck_assert_int_eq(conn_discard(&c), CONN_EOF);
    conn_free(&c);
    ev_loop_destroy(loop);
}
END_TEST

/* ---- outbound connections and the acceptor ---- */

typedef struct accepted {
    int fd, n, errors;
    conn_peer peer;
    size_t index;
} accepted;

static void acc_on_accept(void *arg, size_t index, int fd, const conn_peer *peer)
{
    accepted *a = arg;
    a->fd = fd;
    a->n++;
    a->peer = *peer;
    a->index = index;
}

static void acc_on_error(void *arg, size_t index, int err)
{
    (void)index;
    (void)err;
    ((accepted *)arg)->errors++;
}

static const conn_acceptor_ops acc_ops = {.on_accept = acc_on_accept, .on_error = acc_on_error};

static socklen_t loopback(struct sockaddr_in *sa, int port)
{
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sizeof *sa;
}

START_TEST(test_connect_to_acceptor)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    conn_acceptor a;
    accepted got = {.fd = -1};
    conn_acceptor_init(&a, loop, 64, 0.1, &acc_ops, &got);
    char *err = NULL;
    ck_assert_int_eq(conn_acceptor_listen(&a, "127.0.0.1", "0", 16, &err), 0);
    ck_assert_uint_eq(a.n, 1);
    ck_assert_str_eq(a.v[0].name, "127.0.0.1:0");
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    ck_assert_int_eq(getsockname(a.v[0].fd, (struct sockaddr *)&sa, &sl), 0);
    conn_acceptor_start(&a);

    conn c;
    probe p = {0};
    conn_init(&c, loop, &probe_ops, &p);
    struct sockaddr_in src;
    socklen_t srclen = loopback(&src, 0);
    conn_step step;
    ck_assert_int_eq(conn_connect(&c, (struct sockaddr *)&sa, sl, (struct sockaddr *)&src,
                                  srclen, true, &step), 0);
    ck_assert(conn_connecting(&c));
    conn_update(&c, true);
    ck_assert_int_eq(c.io_events, EV_WRITE);          /* connecting: writability only */
    for (int i = 0; i < 100 && (got.n == 0 || p.ios == 0); i++) ev_run(loop, EVRUN_ONCE);
    ck_assert_int_eq(got.n, 1);
    ck_assert_uint_eq(got.index, 0);
    ck_assert_str_eq(got.peer.ip, "127.0.0.1");
    ck_assert(got.peer.loopback);
    ck_assert_int_eq(p.ios, 1);
    ck_assert_int_eq(conn_connected(&c), 0);
    ck_assert(!conn_connecting(&c));
    conn_update(&c, true);
    ck_assert_int_eq(c.io_events, EV_READ);
    ck_assert_int_eq(write(got.fd, "220 hi\r\n", 8), 8);
    ck_assert_int_eq(conn_read(&c, NULL), CONN_OK);
    ck_assert_str_eq(c.in.buf, "220 hi\r\n");
    close(got.fd);
    conn_free(&c);

    conn_acceptor_close(&a);
    ck_assert_int_eq(a.v[0].fd, -1);
    ck_assert_str_eq(a.v[0].name, "127.0.0.1:0");    /* names stay for the stats */
    conn_acceptor_free(&a);
    ck_assert_int_eq(got.errors, 0);
    ev_loop_destroy(loop);
}
END_TEST

/* A loopback TCP connection whose peer (*peer, blocking, 5 s read timeout) has a small
 * receive buffer and reads nothing yet; c wraps the other end. Then c's output is filled
 * until the kernel takes no more: *queued gets the bytes the kernel accepted. */
static void stuffed(struct ev_loop *loop, conn *c, probe *p, int *peer, size_t *queued)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    ck_assert_int_eq(setsockopt(l, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    struct sockaddr_in sa;
    socklen_t sl = loopback(&sa, 0);
    ck_assert_int_eq(bind(l, (struct sockaddr *)&sa, sl), 0);
    ck_assert_int_eq(listen(l, 1), 0);
    ck_assert_int_eq(getsockname(l, (struct sockaddr *)&sa, &sl), 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sl), 0);
    *peer = accept(l, NULL, NULL);
    ck_assert_int_ge(*peer, 0);
    close(l);
    struct timeval tv = {.tv_sec = 5};
    ck_assert_int_eq(setsockopt(*peer, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    ck_assert_int_eq(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
    conn_init(c, loop, &probe_ops, p);
    conn_attach(c, fd);
    char chunk[65536];
    memset(chunk, 'm', sizeof chunk);
    *queued = 0;
    for (int i = 0; i < 1000; i++) {          /* bounded: the buffers hold a few MB at most */
        strbuf_append(&c->out, chunk, sizeof chunk);
        size_t w = 0;
        conn_status st = conn_flush(c, &w);
        *queued += w;
        if (st == CONN_AGAIN) break;
        ck_assert_int_eq(st, CONN_OK);
    }
    ck_assert_uint_gt(conn_out_pending(c), 0);   /* the kernel's send queue is full */
}

/* Reads the peer to its end: the bytes, and the errno of the end (0: EOF). */
static size_t drain(int peer, int *end_errno)
{
    char b[65536];
    size_t total = 0;
    for (int i = 0; i < 100000; i++) {
        ssize_t r = read(peer, b, sizeof b);
        if (r > 0) {
            total += (size_t)r;
            continue;
        }
        *end_errno = r == 0 ? 0 : errno;
        return total;
    }
    *end_errno = -1;
    return total;
}

START_TEST(test_reset_drops_what_the_kernel_still_holds)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    conn c;
    probe p = {0};
    int peer, end;
    size_t queued;
    /* a plain close: the kernel goes on sending; the peer gets every byte, then EOF */
    stuffed(loop, &c, &p, &peer, &queued);
    conn_close(&c, false);
    ck_assert_uint_eq(drain(peer, &end), queued);
    ck_assert_int_eq(end, 0);
    close(peer);
    conn_free(&c);
    /* a reset: what was still queued never arrives; the peer reads a reset */
    stuffed(loop, &c, &p, &peer, &queued);
    conn_reset(&c);
    ck_assert_int_eq(conn_fd(&c), -1);
    ck_assert_uint_lt(drain(peer, &end), queued);
    ck_assert_int_eq(end, ECONNRESET);
    close(peer);
    conn_free(&c);
    ev_loop_destroy(loop);
}
END_TEST

START_TEST(test_connect_failures)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    conn c;
    probe p = {0};
    conn_init(&c, loop, &probe_ops, &p);
    /* a port nobody listens on: refused now or once the connect completes */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    socklen_t sl = loopback(&sa, 0);
    ck_assert_int_eq(bind(s, (struct sockaddr *)&sa, sl), 0);
    ck_assert_int_eq(getsockname(s, (struct sockaddr *)&sa, &sl), 0);
    close(s);
    conn_step step = CONN_STEP_SOCKET;
    if (conn_connect(&c, (struct sockaddr *)&sa, sl, NULL, 0, false, &step) == 0) {
        conn_update(&c, true);
        for (int i = 0; i < 100 && p.ios == 0; i++) ev_run(loop, EVRUN_ONCE);
        ck_assert_int_eq(conn_connected(&c), ECONNREFUSED);
        conn_close(&c, false);
    } else {
        ck_assert_int_eq(step, CONN_STEP_CONNECT);
        ck_assert_int_eq(conn_errno(&c), ECONNREFUSED);
        ck_assert(!conn_is_open(&c));
    }
    /* a source address this host does not have (TEST-NET-1) */
    struct sockaddr_in src;
    socklen_t srclen = loopback(&src, 0);
    src.sin_addr.s_addr = htonl(0xC0000201);
    ck_assert_int_eq(conn_connect(&c, (struct sockaddr *)&sa, sl, (struct sockaddr *)&src,
                                  srclen, false, &step), -1);
    ck_assert_int_eq(step, CONN_STEP_BIND);
    ck_assert_int_eq(conn_errno(&c), EADDRNOTAVAIL);
    ck_assert(!conn_is_open(&c));
    conn_free(&c);
    ev_loop_destroy(loop);
}
END_TEST

static Suite *conn_suite(void)
{
    Suite *s = suite_create("conn");
    TCase *io = tcase_create("io");
    tcase_add_test(io, test_read_then_again_then_eof);
    tcase_add_test(io, test_flush_backpressure_keeps_order);
    tcase_add_test(io, test_timer_fires_once_and_feed_reaches_on_io);
    tcase_add_test(io, test_linger_discard);
    suite_add_tcase(s, io);
    TCase *net = tcase_create("net");
    tcase_add_test(net, test_connect_to_acceptor);
    tcase_add_test(net, test_connect_failures);
    tcase_add_test(net, test_reset_drops_what_the_kernel_still_holds);
    suite_add_tcase(s, net);
    return s;
}

TESTLIB_SUITES(conn_suite);
