/* conn.h — one non-blocking connection on a libev loop, shared by every SMTP speaker in
 * kiln: the submission server (smtp_server.c), the delivery client (smtp_client.c),
 * kiln-sink and kiln-loadgen; plus conn_acceptor, the listening side of the two servers.
 * A conn owns the socket, one ev_io whose interest it keeps in step with what is pending,
 * one ev_timer, an input buffer, an output buffer and, after conn_starttls(), a TLS layer
 * (mta/tls.h) on the same fd — server or client side, so a STARTTLS upgrade in the middle
 * of a session is one call plus conn_handshake() steps.
 *
 * The split of work: the conn does the I/O mechanics (recv/send or SSL_read/SSL_write,
 * EINTR, EAGAIN, TLS want-read/want-write crossing over, the handshake, the buffers and
 * their growth, arming the watcher, the timer, closing); its owner keeps the protocol state
 * machine and the policy (how many reads per event, when to stop reading for back-pressure,
 * what an error means). The owner's step function runs from the conn's ev_io callback and
 * calls conn_flush(), conn_read(), conn_handshake() in the order its protocol needs, then
 * conn_update() to say whether it wants input. "Flush, then act" (the 220 before a TLS
 * handshake, the last reply before a close) is conn_flush() == CONN_OK, or
 * conn_out_pending() == 0 on a later pass, checked by the owner in that same step.
 *
 * Promises:
 *   - Nothing blocks: every conn_* call returns at once; CONN_AGAIN means "wait for the loop".
 *   - Callbacks (conn_ops) run only from the loop — the ev_io or ev_timer of this conn, or
 *     an event fed with conn_feed() — never from inside a conn_* function, so they are never
 *     re-entered. After a callback returns the conn does not touch itself again: the owner
 *     may close or free the conn (and the struct it is embedded in) inside the callback.
 *   - The timer is stopped before on_timeout runs (one-shot; re-arm it to repeat).
 *   - EOF and errors are reported as a status, never acted on: the conn stays open until
 *     the owner calls conn_close(). conn_errno()/conn_error() say what failed.
 *   - No hidden batching: conn_read() is one recv()/SSL_read() (EINTR retried) of up to
 *     CONN_READ_CHUNK bytes, appended to `in` (kept NUL-terminated) without a copy;
 *     conn_flush() writes until `out` is empty or the socket is full. How many reads an
 *     event gets, and when reading pauses for back-pressure, is the owner's policy.
 *   - conn_close() stops the watcher and the timer, frees the TLS layer, closes the fd and
 *     empties the buffers (keeping their memory, so a conn can be reconnected); conn_free()
 *     releases the memory too. Both are idempotent.
 * Allocation failure is fatal (util.h); nothing here returns NULL. */
#ifndef KILN_CONN_H
#define KILN_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include <ev.h>

#include "base/util.h"
#include "mta/tls.h"

#define CONN_READ_CHUNK 16384        /* bytes asked of one recv / SSL_read */

typedef enum {
    CONN_OK = 0,     /* progress: bytes read, everything written, handshake finished */
    CONN_AGAIN,      /* nothing (more) possible now: conn_update() arms the right watcher */
    CONN_EOF,        /* read: the peer closed its side (TCP FIN or TLS close_notify) */
    CONN_ERROR,      /* the connection is broken: conn_error(); only conn_close() is left */
} conn_status;

typedef struct conn_ops {
    /* The fd is ready (revents has EV_READ and/or EV_WRITE) or an event was fed. */
    void (*on_io)(void *arg, int revents);
    /* The timer armed with conn_timer_set() expired. */
    void (*on_timeout)(void *arg);
} conn_ops;

typedef struct conn {
    strbuf in;               /* bytes read and not yet consumed by the owner */
    strbuf out;              /* bytes queued; out[out_off..len) not written yet */
    size_t out_off;
    /* the rest is the conn's own */
    struct ev_loop *loop;
    const conn_ops *ops;
    void *arg;
    int fd;
    ev_io io;
    int io_events;           /* what io is armed for (0: stopped) */
    ev_timer timer;
    tls_conn *tls;           /* from conn_starttls() on */
    bool tls_up;             /* handshake finished */
    bool connecting;         /* conn_connect() issued, not yet conn_connected() */
    bool read_wants_write;   /* TLS: the last read needs the fd writable */
    bool drained;            /* plaintext: the last recv emptied the socket (see conn_read) */
    bool write_wants_read;   /* TLS: the last write needs the fd readable */
    int hs_events;           /* TLS handshake: EV_READ or EV_WRITE */
    int err;                 /* errno of the last failed socket call (0: TLS or none) */
} conn;

/* Initialises c (no fd yet). ops and arg are kept; ops must outlive c. */
void conn_init(conn *c, struct ev_loop *loop, const conn_ops *ops, void *arg);
/* Takes a connected, non-blocking socket (an accepted one). Arms nothing. */
void conn_attach(conn *c, int fd);

/* ---- outbound ---- */
typedef enum { CONN_STEP_SOCKET, CONN_STEP_BIND, CONN_STEP_CONNECT } conn_step;
/* Creates a non-blocking socket of peer's family, optionally sets TCP_NODELAY, binds it to
 * src when src_len > 0, and starts connect(). Returns 0 (in progress: conn_update() waits
 * for writability, then call conn_connected()) or -1 with *step and conn_errno() saying
 * what failed; the socket is closed again then. */
int conn_connect(conn *c, const struct sockaddr *peer, socklen_t peer_len,
                 const struct sockaddr *src, socklen_t src_len, bool nodelay, conn_step *step);
/* After the first writability: 0 if the connection is up, else its errno. */
int conn_connected(conn *c);
bool conn_connecting(const conn *c);

/* ---- I/O ---- */
/* One read of up to CONN_READ_CHUNK bytes appended to c->in; *n (may be NULL) the count.
 * Right after a plaintext read that got less than it asked for, the next call answers
 * CONN_AGAIN without a system call (the socket was empty; the watcher reports new input). */
conn_status conn_read(conn *c, size_t *n);
/* Writes queued output until it is all gone (CONN_OK), the socket is full (CONN_AGAIN)
 * or the connection failed (CONN_ERROR). *written (may be NULL): bytes written. */
conn_status conn_flush(conn *c, size_t *written);
static inline size_t conn_out_pending(const conn *c) { return c->out.len - c->out_off; }
/* Plaintext decrypted and buffered inside OpenSSL: the fd will not signal it. */
bool conn_read_pending(const conn *c);
/* Lingering after conn_shutdown_write(): reads and drops what the peer still sends on the
 * raw socket (TLS records included). CONN_OK (dropped some), AGAIN, EOF or ERROR. */
conn_status conn_discard(conn *c);
/* Sends TLS close_notify (when TLS is up) and shuts the write side of the socket. */
void conn_shutdown_write(conn *c);

/* ---- TLS ---- */
/* Puts a TLS layer (server or client side, as ctx is) on the socket; server_name: the SNI
 * and verified name on the client side, else NULL. Call conn_handshake() next. Input still
 * buffered in c->in is the owner's to drop (RFC 3207: plaintext after STARTTLS is void). */
void conn_starttls(conn *c, tls_ctx *ctx, const char *server_name);
/* One handshake step: CONN_OK when finished, AGAIN (conn_update() waits for the direction
 * OpenSSL asked for), ERROR (conn_error() has OpenSSL's reason). */
conn_status conn_handshake(conn *c);
static inline tls_conn *conn_tls(const conn *c) { return c->tls; }
/* TLS: the last conn_read() could not go on before the fd is writable (conn_update() then
 * waits for writability on the read side: retry the read when it comes). */
static inline bool conn_read_wants_write(const conn *c) { return c->read_wants_write; }
static inline bool conn_handshaking(const conn *c) { return c->tls && !c->tls_up; }

/* ---- the watcher and the timer ---- */
/* Arms the ev_io for what is pending: writability while connecting, the handshake's wish
 * while handshaking, else output to write and — if want_read — input (each crossed over
 * when TLS asked for the other direction). Touches libev only when the set changes. */
void conn_update(conn *c, bool want_read);
/* Makes the loop call on_io with revents soon (fairness: more input may be waiting). */
void conn_feed(conn *c, int revents);
/* (Re)starts the one-shot timer: on_timeout after seconds. */
void conn_timer_set(conn *c, double seconds);
void conn_timer_stop(conn *c);

/* ---- errors and the end ---- */
int conn_errno(const conn *c);
/* The last failure as text: strerror, OpenSSL's reason, or "connection closed by peer". */
const char *conn_error(const conn *c);
/* Stops the watcher and the timer, sends close_notify first if tls_notify (and a TLS layer
 * exists), frees the TLS layer, closes the fd, empties the buffers. */
void conn_close(conn *c, bool tls_notify);
/* Closes c as an abandoned exchange: SO_LINGER 0, so the kernel drops whatever is still
 * queued to send and the peer gets a TCP reset instead of the rest of the bytes. After a
 * plain close the kernel keeps sending queued data on its own, even minutes later when a
 * removed source address comes back: a message whose transaction was given up (and will
 * be tried again elsewhere) must not reach the peer that way. No close_notify. */
void conn_reset(conn *c);
void conn_free(conn *c);
static inline bool conn_is_open(const conn *c) { return c->fd >= 0; }
static inline int conn_fd(const conn *c) { return c->fd; }

/* ---- listening sockets (server side) ---- */
typedef struct conn_peer {
    char ip[46];             /* INET6_ADDRSTRLEN; IPv4-mapped IPv6 shown as IPv4 */
    int port;
    bool loopback;
} conn_peer;

#define CONN_NAME_MAX 64

typedef struct conn_listener {
    ev_io io;                /* first: the watcher is the listener */
    int fd;                  /* -1 once closed */
    char name[CONN_NAME_MAX];   /* "1.2.3.4:25" or "[::1]:25" */
} conn_listener;

typedef struct conn_acceptor_ops {
    /* A new connection on listener v[index]: fd (non-blocking, close-on-exec) is the
     * callee's to keep or close. */
    void (*on_accept)(void *arg, size_t index, int fd, const conn_peer *peer);
    /* accept() failed for a reason that does not pass by itself (EMFILE, ENOMEM, ...):
     * err is its errno; every listener pauses for the back-off time after this call. */
    void (*on_error)(void *arg, size_t index, int err);
} conn_acceptor_ops;

/* The listening sockets of one server, accepting on the loop: at most per_event
 * connections per readiness event and listener (fairness), a pause of backoff_s seconds
 * after a lasting accept error instead of a busy loop. Callbacks run only from the loop. */
typedef struct conn_acceptor {
    conn_listener *v;        /* every address listened on, in order; names stay after close */
    size_t n;
    /* the rest is the acceptor's own */
    struct ev_loop *loop;
    const conn_acceptor_ops *ops;
    void *arg;
    int per_event;
    double backoff_s;
    ev_timer backoff;
    bool on;
} conn_acceptor;

void conn_acceptor_init(conn_acceptor *a, struct ev_loop *loop, int per_event, double backoff_s,
                        const conn_acceptor_ops *ops, void *arg);
/* Opens a non-blocking listening socket (SO_REUSEADDR, IPV6_V6ONLY) on every address
 * host:port resolves to (numeric port). Returns 0, or -1 with *err ("cannot resolve: ...",
 * "socket: ...", "cannot listen: ...", for the caller to prefix); sockets opened before the
 * failure stay in v. Call before conn_acceptor_start(). */
int conn_acceptor_listen(conn_acceptor *a, const char *host, const char *port, int backlog,
                         char **err);
/* Starts accepting on every open listener. */
void conn_acceptor_start(conn_acceptor *a);
/* Stops accepting for good: watchers and back-off stopped, sockets closed (v and the names
 * stay). */
void conn_acceptor_close(conn_acceptor *a);
void conn_acceptor_free(conn_acceptor *a);

#endif
