/* conn.c — the connection layer (see conn.h): socket and TLS I/O, watcher interest,
 * timer, close, plus the listening-socket helpers the two SMTP servers share.
 * Written by hand because the I/O edge of kiln is libev + OpenSSL on plain sockets; a
 * buffered-event library (libevent's bufferevent) would bring a second event loop. */
#include "mta/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Written output is dropped from the front of the buffer only past this much, so a slow
 * reader costs one memmove per 64 KiB, not one per write. */
#define CONN_OUT_COMPACT (64 * 1024)
#define CONN_DISCARD_CHUNK 4096

static void conn_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    conn *c = w->data;
    if (revents & EV_READ) c->drained = false;
    c->ops->on_io(c->arg, revents);
}

static void conn_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    conn *c = w->data;
    ev_timer_stop(loop, w);
    c->ops->on_timeout(c->arg);
}

void conn_init(conn *c, struct ev_loop *loop, const conn_ops *ops, void *arg)
{
    memset(c, 0, sizeof *c);
    strbuf_init(&c->in);
    strbuf_init(&c->out);
    c->loop = loop;
    c->ops = ops;
    c->arg = arg;
    c->fd = -1;
    ev_init(&c->io, conn_on_io);
    c->io.data = c;
    ev_init(&c->timer, conn_on_timer);
    c->timer.data = c;
}

void conn_attach(conn *c, int fd)
{
    c->fd = fd;
    c->err = 0;
    c->drained = false;
}

int conn_connect(conn *c, const struct sockaddr *peer, socklen_t peer_len,
                 const struct sockaddr *src, socklen_t src_len, bool nodelay, conn_step *step)
{
    c->err = 0;
    int fd = socket(peer->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        c->err = errno;
        *step = CONN_STEP_SOCKET;
        return -1;
    }
    if (nodelay) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (src_len > 0 && bind(fd, src, src_len) != 0) {
        c->err = errno;
        *step = CONN_STEP_BIND;
        close(fd);
        return -1;
    }
    if (connect(fd, peer, peer_len) != 0 && errno != EINPROGRESS) {
        c->err = errno;
        *step = CONN_STEP_CONNECT;
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->connecting = true;
    return 0;
}

int conn_connected(conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    c->err = err;
    if (!err) c->connecting = false;
    return err;
}

bool conn_connecting(const conn *c)
{
    return c->connecting;
}

conn_status conn_read(conn *c, size_t *n)
{
    if (n) *n = 0;
    strbuf_reserve(&c->in, CONN_READ_CHUNK);
    char *dst = c->in.buf + c->in.len;
    size_t got = 0;
    if (c->tls) {
        c->read_wants_write = false;
        c->err = 0;
        switch (tls_conn_read(c->tls, dst, CONN_READ_CHUNK, &got)) {
        case TLS_OK: break;
        case TLS_WANT_READ: return CONN_AGAIN;
        case TLS_WANT_WRITE:
            c->read_wants_write = true;
            return CONN_AGAIN;
        case TLS_EOF: return CONN_EOF;
        case TLS_ERROR: return CONN_ERROR;
        }
    } else {
        /* A recv that returned less than asked emptied the socket's queue: the next read
         * before the watcher reports input again would only return EAGAIN, so it is
         * answered without the system call (the watcher is level-triggered: data that
         * arrives later is reported). Saves one recv per command on a chatty session. The
         * flag answers one read only, so a caller that polls without the watcher reads on. */
        if (c->drained) {
            c->drained = false;
            c->err = EAGAIN;
            return CONN_AGAIN;
        }
        ssize_t r;
        do {
            r = recv(c->fd, dst, CONN_READ_CHUNK, 0);
        } while (r < 0 && errno == EINTR);
        if (r < 0) {
            c->err = errno;
            return errno == EAGAIN || errno == EWOULDBLOCK ? CONN_AGAIN : CONN_ERROR;
        }
        if (r == 0) {
            c->err = 0;
            return CONN_EOF;
        }
        got = (size_t)r;
        c->drained = got < CONN_READ_CHUNK;
    }
    c->in.len += got;
    c->in.buf[c->in.len] = '\0';
    if (n) *n = got;
    return CONN_OK;
}

conn_status conn_flush(conn *c, size_t *written)
{
    size_t total = 0;
    conn_status st = CONN_OK;
    c->write_wants_read = false;
    while (c->out_off < c->out.len) {
        const char *p = c->out.buf + c->out_off;
        size_t len = c->out.len - c->out_off, put = 0;
        if (c->tls) {
            c->err = 0;
            tls_status ts = tls_conn_write(c->tls, p, len, &put);
            if (ts == TLS_WANT_WRITE) {
                st = CONN_AGAIN;
                break;
            }
            if (ts == TLS_WANT_READ) {
                c->write_wants_read = true;
                st = CONN_AGAIN;
                break;
            }
            if (ts != TLS_OK) {
                st = CONN_ERROR;
                break;
            }
        } else {
            ssize_t r = send(c->fd, p, len, MSG_NOSIGNAL);
            if (r < 0) {
                if (errno == EINTR) continue;
                c->err = errno;
                st = errno == EAGAIN || errno == EWOULDBLOCK ? CONN_AGAIN : CONN_ERROR;
                break;
            }
            put = (size_t)r;
        }
        c->out_off += put;
        total += put;
    }
    if (c->out_off == c->out.len) {
        strbuf_reset(&c->out);
        c->out_off = 0;
    } else if (c->out_off > CONN_OUT_COMPACT) {
        strbuf_consume(&c->out, c->out_off);
        c->out_off = 0;
    }
    if (written) *written = total;
    return st;
}

bool conn_read_pending(const conn *c)
{
    return c->tls && tls_conn_pending(c->tls);
}

conn_status conn_discard(conn *c)
{
    char junk[CONN_DISCARD_CHUNK];
    ssize_t r;
    do {
        r = recv(c->fd, junk, sizeof junk, 0);
    } while (r < 0 && errno == EINTR);
    if (r > 0) return CONN_OK;
    c->err = r < 0 ? errno : 0;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return CONN_AGAIN;
    return r == 0 ? CONN_EOF : CONN_ERROR;
}

void conn_shutdown_write(conn *c)
{
    if (c->tls) tls_conn_shutdown(c->tls);
    shutdown(c->fd, SHUT_WR);
}

void conn_starttls(conn *c, tls_ctx *ctx, const char *server_name)
{
    c->tls = tls_conn_new(ctx, c->fd, server_name);
    c->tls_up = false;
    c->hs_events = EV_READ;
    c->read_wants_write = c->write_wants_read = false;
}

conn_status conn_handshake(conn *c)
{
    c->err = 0;
    switch (tls_conn_handshake(c->tls)) {
    case TLS_OK:
        c->tls_up = true;
        return CONN_OK;
    case TLS_WANT_READ:
        c->hs_events = EV_READ;
        return CONN_AGAIN;
    case TLS_WANT_WRITE:
        c->hs_events = EV_WRITE;
        return CONN_AGAIN;
    default:
        return CONN_ERROR;
    }
}

void conn_update(conn *c, bool want_read)
{
    int ev = 0;
    if (c->fd < 0) {
        ev = 0;
    } else if (c->connecting) {
        ev = EV_WRITE;
    } else if (conn_handshaking(c)) {
        ev = c->hs_events;
    } else {
        if (c->out_off < c->out.len) ev |= c->write_wants_read ? EV_READ : EV_WRITE;
        if (want_read) ev |= c->read_wants_write ? EV_WRITE : EV_READ;
    }
    if (ev == c->io_events) return;
    ev_io_stop(c->loop, &c->io);
    c->io_events = ev;
    if (ev) {
        ev_io_set(&c->io, c->fd, ev);
        ev_io_start(c->loop, &c->io);
    }
}

void conn_feed(conn *c, int revents)
{
    ev_feed_event(c->loop, &c->io, revents);
}

void conn_timer_set(conn *c, double seconds)
{
    if (seconds > 0) {
        c->timer.repeat = seconds;
        ev_timer_again(c->loop, &c->timer);   /* no heap delete + insert when re-armed */
        return;
    }
    ev_timer_stop(c->loop, &c->timer);
    ev_timer_set(&c->timer, 0.0, 0.0);
    ev_timer_start(c->loop, &c->timer);
}

void conn_timer_stop(conn *c)
{
    ev_timer_stop(c->loop, &c->timer);
}

int conn_errno(const conn *c)
{
    return c->err;
}

const char *conn_error(const conn *c)
{
    if (c->err) return strerror(c->err);
    if (c->tls && *tls_conn_error(c->tls)) return tls_conn_error(c->tls);
    return "connection closed by peer";
}

void conn_close(conn *c, bool tls_notify)
{
    ev_io_stop(c->loop, &c->io);
    c->io_events = 0;
    ev_timer_stop(c->loop, &c->timer);
    if (c->tls) {
        if (tls_notify) tls_conn_shutdown(c->tls);
        tls_conn_free(c->tls);
        c->tls = NULL;
    }
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->tls_up = c->connecting = false;
    c->read_wants_write = c->write_wants_read = false;
    strbuf_reset(&c->in);
    strbuf_reset(&c->out);
    c->out_off = 0;
}

void conn_reset(conn *c)
{
    if (c->fd >= 0) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);  /* a socketpair: no-op */
    }
    conn_close(c, false);
}

void conn_free(conn *c)
{
    conn_close(c, false);
    strbuf_free(&c->in);
    strbuf_free(&c->out);
}

/* ---- listening sockets ---- */

static void conn_peer_from(const struct sockaddr_storage *ss, conn_peer *p)
{
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)ss;
        p->port = ntohs(a6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {
            struct in_addr a4;
            memcpy(&a4, a6->sin6_addr.s6_addr + 12, 4);
            inet_ntop(AF_INET, &a4, p->ip, sizeof p->ip);
            p->loopback = a6->sin6_addr.s6_addr[12] == 127;
        } else {
            inet_ntop(AF_INET6, &a6->sin6_addr, p->ip, sizeof p->ip);
            p->loopback = IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr);
        }
    } else {
        const struct sockaddr_in *a4 = (const struct sockaddr_in *)ss;
        p->port = ntohs(a4->sin_port);
        inet_ntop(AF_INET, &a4->sin_addr, p->ip, sizeof p->ip);
        p->loopback = (ntohl(a4->sin_addr.s_addr) >> 24) == 127;
    }
}

static void conn_acceptor_pause(conn_acceptor *a)
{
    for (size_t i = 0; i < a->n; i++) ev_io_stop(a->loop, &a->v[i].io);
}

static void conn_acceptor_on_backoff(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_acceptor *a = w->data;
    if (a->on) conn_acceptor_start(a);
}

static void conn_acceptor_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_listener *l = (conn_listener *)w;
    conn_acceptor *a = w->data;
    size_t index = (size_t)(l - a->v);
    for (int k = 0; k < a->per_event && a->on; k++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            a->ops->on_error(a->arg, index, errno);
            /* Out of descriptors or memory: pause all listeners briefly instead of spinning. */
            conn_acceptor_pause(a);
            ev_timer_set(&a->backoff, a->backoff_s, 0);
            ev_timer_start(a->loop, &a->backoff);
            return;
        }
        conn_peer peer;
        conn_peer_from(&ss, &peer);
        a->ops->on_accept(a->arg, index, fd, &peer);
    }
}

void conn_acceptor_init(conn_acceptor *a, struct ev_loop *loop, int per_event, double backoff_s,
                        const conn_acceptor_ops *ops, void *arg)
{
    memset(a, 0, sizeof *a);
    a->loop = loop;
    a->ops = ops;
    a->arg = arg;
    a->per_event = per_event;
    a->backoff_s = backoff_s;
    ev_init(&a->backoff, conn_acceptor_on_backoff);
    a->backoff.data = a;
}

int conn_acceptor_listen(conn_acceptor *a, const char *host, const char *port, int backlog,
                         char **err)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        *err = util_asprintf("cannot resolve: %s", gai_strerror(gai));
        return -1;
    }
    int rc = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            *err = util_asprintf("socket: %s", strerror(errno));
            rc = -1;
            break;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ai->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, backlog) != 0) {
            *err = util_asprintf("cannot listen: %s", strerror(errno));
            close(fd);
            rc = -1;
            break;
        }
        a->v = util_realloc(a->v, (a->n + 1) * sizeof *a->v);
        conn_listener *l = &a->v[a->n++];
        memset(l, 0, sizeof *l);
        l->fd = fd;
        char ip[INET6_ADDRSTRLEN] = "?";
        if (ai->ai_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, ip, sizeof ip);
        else
            inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, ip, sizeof ip);
        snprintf(l->name, sizeof l->name, ai->ai_family == AF_INET6 ? "[%s]:%s" : "%s:%s", ip,
                 port);
    }
    freeaddrinfo(res);
    return rc;
}

void conn_acceptor_start(conn_acceptor *a)
{
    a->on = true;
    for (size_t i = 0; i < a->n; i++) {
        conn_listener *l = &a->v[i];
        if (l->fd < 0 || ev_is_active(&l->io)) continue;
        ev_io_init(&l->io, conn_acceptor_on_io, l->fd, EV_READ);
        l->io.data = a;
        ev_io_start(a->loop, &l->io);
    }
}

void conn_acceptor_close(conn_acceptor *a)
{
    a->on = false;
    ev_timer_stop(a->loop, &a->backoff);
    conn_acceptor_pause(a);
    for (size_t i = 0; i < a->n; i++) {
        if (a->v[i].fd >= 0) close(a->v[i].fd);
        a->v[i].fd = -1;
    }
}

void conn_acceptor_free(conn_acceptor *a)
{
    conn_acceptor_close(a);
    free(a->v);
    a->v = NULL;
    a->n = 0;
}
