/* smtp_client.c — one outbound SMTP session on libev (see smtp_client.h).
 *
 * The session is an explicit state machine. Output is queued in one buffer and written when
 * the socket (or the TLS layer) can take it; input is parsed into replies as they complete,
 * and each reply advances the state. Commands awaiting replies are kept in order, so the
 * same code serves pipelined (all of MAIL and RCPT in one write) and lock-step servers.
 * The reply parser and the DATA encoder (mta/smtp_reply.c) are written by hand: they are a
 * few dozen lines of RFC 5321 framing, and no library offers a client-side SMTP engine that
 * fits an external event loop; the reply and EHLO parsers are exported and kiln-loadgen
 * uses them too. The
 * socket, the buffers, STARTTLS (mta/tls.c) and the step timer are one mta/conn: this file
 * is only the protocol.
 *
 * Re-entrancy rule: callbacks are invoked only from watcher callbacks, never from a public
 * function; after emitting CLOSED nothing touches the session again (the callback may
 * free it). Internal functions return -1 once CLOSED has been emitted. */
#include "mta/smtp_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "mta/conn.h"
#include "mta/hopcheck.h"

typedef enum {
    ST_CONNECT,
    ST_GREETING,
    ST_EHLO,
    ST_HELO,
    ST_STARTTLS,
    ST_HANDSHAKE,
    ST_AUTH,         /* AUTH PLAIN sent (opts.auth_plain), waiting for 235 */
    ST_IDLE,
    ST_TXN,          /* RSET / MAIL / RCPT replies outstanding */
    ST_DATA,         /* DATA sent, waiting for 354 */
    ST_BODY,         /* message being written, then waiting for the final reply */
    ST_QUIT,
    ST_CLOSED,
} client_state;

static const char *const state_names[] = {
    "connect", "greeting", "EHLO", "HELO", "STARTTLS", "TLS handshake", "AUTH", "idle",
    "MAIL/RCPT", "DATA", "end of data", "QUIT", "closed",
};

typedef enum { CMD_RSET, CMD_MAIL, CMD_RCPT } cmd_kind;

struct smtp_client {
    struct ev_loop *loop;
    klog *log;
    smtp_client_cb cb;
    void *arg;

    char *src;
    char *peer;
    char *peer_name;
    char *ehlo;
    char *self_name;             /* opts.self_name or NULL */
    int port;
    char *desc;
    smtp_client_timeouts to;
    tls_ctx *tls_ctx;
    tls_auth *auth;              /* what the peer must prove (a copy), or NULL */
    char *auth_plain;            /* opts.auth_plain (a copy, wiped when freed), or NULL */
    bool authed;                 /* the server answered AUTH with 235 */

    conn conn;                   /* socket, TLS layer, buffers, the reply/step timer */
    ev_timer later;              /* reports a failure found inside smtp_client_new */
    smtp_client_status later_status;
    char *later_error;
    bool aborting;               /* smtp_client_abort: `later` fails the session */

    bool tls;                    /* the TLS handshake finished */
    bool connect_timed_out;      /* reported with the CLOSED event */
    client_state state;
    bool quit_wanted;

    /* EHLO capabilities */
    bool esmtp, cap_pipelining, cap_starttls, cap_8bitmime;
    int64_t cap_size;            /* 0: not announced or no limit */

    /* current transaction */
    smtp_client_msg msg;
    smtp_client_rcpt_result *res;
    cmd_kind *cmds;
    size_t ncmds, nsent, nreplied;
    size_t naccepted;
    bool mail_replied;
    bool mail_ok;
    int ntxn;                    /* transactions started on this connection */
};

/* ------------------------------------------------------------------ reply copies */

static void smtp_client_reply_local(smtp_client_reply *r, const char *text)
{
    memset(r, 0, sizeof *r);
    r->text = util_strdup(text);
    r->line = util_strdup(text);
}

static void smtp_client_reply_copy(smtp_client_reply *dst, const smtp_client_reply *src)
{
    *dst = *src;
    dst->text = util_strdup(src->text);
    dst->line = util_strdup(src->line);
}

/* ------------------------------------------------------------------ session plumbing */

static void smtp_client_timer_set(smtp_client *c, int64_t ms)
{
    conn_timer_set(&c->conn, (double)ms / 1000.0);
}

/* After QUIT or between transactions a clean close; otherwise the session failed or was
 * given up (abort, timeout, protocol error) in the middle of the dialogue: a reset, so that
 * nothing still queued in the kernel (the rest of a message, its final ".") reaches the
 * server later and completes a transaction kiln has already counted as failed and will try
 * again elsewhere (seen in the soak test: a message sent again from another IP, then
 * completed by the kernel on the first connection when its removed address came back). */
static void smtp_client_close_socket(smtp_client *c)
{
    ev_timer_stop(c->loop, &c->later);
    if (c->state == ST_QUIT || c->state == ST_IDLE) conn_close(&c->conn, c->state == ST_QUIT);
    else conn_reset(&c->conn);
}

static void smtp_client_free_txn(smtp_client *c)
{
    for (size_t i = 0; i < c->msg.nrcpts && c->res; i++) smtp_client_reply_free(&c->res[i].reply);
    free(c->res);
    free(c->cmds);
    c->res = NULL;
    c->cmds = NULL;
    c->ncmds = c->nsent = c->nreplied = c->naccepted = 0;
    memset(&c->msg, 0, sizeof c->msg);
}

static int smtp_client_emit_closed(smtp_client *c, smtp_client_status st, const char *error,
                       const smtp_client_reply *reply)
{
    smtp_client_close_socket(c);
    c->state = ST_CLOSED;
    smtp_client_event ev = {.type = SMTP_CLIENT_EV_CLOSED, .status = st, .error = error,
                            .reply = reply, .connect_timeout = c->connect_timed_out};
    log_write(c->log, KLOG_DEBUG, "smtp_client.closed", "session=%s status=%s error=%s",
              log_q(c->log, c->desc), smtp_client_status_name(st), log_q(c->log, error));
    c->cb(c->arg, c, &ev);
    return -1;
}

static int smtp_client_go_quit(smtp_client *c);
static int smtp_client_write_out(smtp_client *c);

/* Ends the transaction: DONE to the caller; then CLOSED if the session died, QUIT if asked. */
static int smtp_client_finish_txn(smtp_client *c, bool usable, bool nothing_done)
{
    smtp_client_event ev = {.type = SMTP_CLIENT_EV_DONE, .rcpts = c->res,
                            .nrcpts = c->msg.nrcpts, .usable = usable,
                            .nothing_done = nothing_done};
    smtp_client_rcpt_result *res = c->res;
    size_t n = c->msg.nrcpts;
    cmd_kind *cmds = c->cmds;
    c->res = NULL;
    c->cmds = NULL;
    c->ncmds = c->nsent = c->nreplied = c->naccepted = 0;
    memset(&c->msg, 0, sizeof c->msg);
    if (usable) {
        c->state = ST_IDLE;
        conn_timer_stop(&c->conn);
    }
    c->cb(c->arg, c, &ev);
    for (size_t i = 0; i < n; i++) smtp_client_reply_free(&res[i].reply);
    free(res);
    free(cmds);
    if (c->state == ST_IDLE && c->quit_wanted) return smtp_client_go_quit(c);
    return 0;
}

/* The connection is unusable: report what that means for the current phase. */
static int smtp_client_fail(smtp_client *c, smtp_client_status st, const char *error)
{
    switch (c->state) {
    case ST_TXN:
    case ST_DATA:
    case ST_BODY: {
        /* every recipient without a final answer yet gets the failure */
        bool nothing_done = !c->mail_replied;
        for (size_t i = 0; i < c->msg.nrcpts; i++) {
            smtp_client_rcpt_result *r = &c->res[i];
            /* refused at MAIL or RCPT: that reply is final */
            if (r->status == SMTP_CLIENT_OK && r->reply.code / 100 != 2) continue;
            smtp_client_reply_free(&r->reply);
            r->status = SMTP_CLIENT_FAIL_IO;
            smtp_client_reply_local(&r->reply, error);
        }
        smtp_client_close_socket(c);
        c->state = ST_CLOSED;
        smtp_client_finish_txn(c, false, nothing_done);
        return smtp_client_emit_closed(c, st, error, NULL);
    }
    case ST_IDLE:
    case ST_QUIT:
        return smtp_client_emit_closed(c, st == SMTP_CLIENT_FAIL_IO && c->state == ST_QUIT ? SMTP_CLIENT_OK : st,
                           error, NULL);
    default:
        return smtp_client_emit_closed(c, st, error, NULL);
    }
}

static int smtp_client_failf(smtp_client *c, smtp_client_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int smtp_client_failf(smtp_client *c, smtp_client_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = util_vasprintf(fmt, ap);
    va_end(ap);
    int rc = smtp_client_fail(c, st, msg);
    free(msg);
    return rc;
}

static void smtp_client_out_printf(smtp_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void smtp_client_out_printf(smtp_client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = util_vasprintf(fmt, ap);
    va_end(ap);
    strbuf_puts(&c->conn.out, s);
    free(s);
}

/* Writes are always started from the loop, never synchronously: an EV_WRITE event is fed to
 * the watcher, so the output goes out later in this loop pass; the watcher asks the kernel
 * for writability only when the socket does not take it all (arming it first would cost two
 * epoll_ctl calls and a loop pass per command). Input is always wanted once connected. */
static void smtp_client_want_write(smtp_client *c)
{
    if (c->state == ST_CONNECT || c->state == ST_HANDSHAKE)
        conn_update(&c->conn, true);
    else
        conn_feed(&c->conn, EV_WRITE);
}

static int smtp_client_write_out(smtp_client *c)
{
    size_t put = 0;
    if (conn_flush(&c->conn, &put) == CONN_ERROR)
        return smtp_client_failf(c, SMTP_CLIENT_FAIL_IO, "write to %s failed in %s: %s", c->peer,
                     state_names[c->state], conn_error(&c->conn));
    conn_update(&c->conn, true);
    if (put && c->state == ST_BODY)
        smtp_client_timer_set(c, conn_out_pending(&c->conn) ? c->to.data_block_ms : c->to.data_term_ms);
    return 0;
}

/* ------------------------------------------------------------------ protocol steps */

static int smtp_client_send_ehlo(smtp_client *c)
{
    c->esmtp = c->cap_pipelining = c->cap_starttls = c->cap_8bitmime = false;
    c->cap_size = 0;
    smtp_client_out_printf(c, "EHLO %s\r\n", c->ehlo);
    c->state = ST_EHLO;
    smtp_client_timer_set(c, c->to.mail_ms);
    smtp_client_want_write(c);
    return 0;
}

static void smtp_client_caps_from_ehlo(smtp_client *c, const smtp_client_reply *r)
{
    smtp_client_caps caps;
    smtp_client_parse_ehlo(r, &caps);
    c->esmtp = true;
    c->cap_pipelining = caps.pipelining;
    c->cap_starttls = caps.starttls;
    c->cap_8bitmime = caps.eightbitmime;
    c->cap_size = caps.size_max;
}

static int smtp_client_become_ready(smtp_client *c)
{
    if (c->auth_plain && !c->authed) {
        smtp_client_out_printf(c, "AUTH PLAIN %s\r\n", c->auth_plain);
        c->state = ST_AUTH;
        smtp_client_timer_set(c, c->to.mail_ms);
        smtp_client_want_write(c);
        return 0;
    }
    c->state = ST_IDLE;
    conn_timer_stop(&c->conn);
    log_write(c->log, KLOG_DEBUG, "smtp_client.ready",
              "session=%s esmtp=%d tls=%d pipelining=%d size=%lld 8bitmime=%d",
              log_q(c->log, c->desc), c->esmtp, c->tls, c->cap_pipelining,
              (long long)c->cap_size, c->cap_8bitmime);
    if (c->quit_wanted) return smtp_client_go_quit(c);
    smtp_client_event ev = {.type = SMTP_CLIENT_EV_READY};
    c->cb(c->arg, c, &ev);
    if (c->state == ST_IDLE && c->quit_wanted) return smtp_client_go_quit(c);
    return 0;
}

static int smtp_client_start_handshake(smtp_client *c)
{
    /* SNI with the MX name; an IP literal (static route) is no server name */
    unsigned char tmp[16];
    bool named = c->peer_name && inet_pton(AF_INET, c->peer_name, tmp) != 1 &&
                 inet_pton(AF_INET6, c->peer_name, tmp) != 1;
    conn_starttls(&c->conn, c->tls_ctx, named ? c->peer_name : NULL);
    tls_conn_authenticate(conn_tls(&c->conn), c->auth);
    /* nothing the server sent in clear after its 220 may count once TLS is up */
    strbuf_reset(&c->conn.in);
    c->state = ST_HANDSHAKE;
    smtp_client_timer_set(c, c->to.mail_ms);
    return 0;
}

static int smtp_client_do_handshake(smtp_client *c)
{
    conn_status st = conn_handshake(&c->conn);
    if (st == CONN_OK) {
        const tls_conn *t = conn_tls(&c->conn);
        c->tls = true;
        log_write(c->log, KLOG_DEBUG, "smtp_client.tls",
                  "session=%s version=%s cipher=%s verified=%d verify_error=%s",
                  log_q(c->log, c->desc), tls_conn_version(t), tls_conn_cipher(t),
                  tls_conn_peer_verified(t), log_q(c->log, tls_conn_verify_error(t)));
        return smtp_client_send_ehlo(c);
    }
    if (st == CONN_AGAIN) {
        conn_update(&c->conn, true);
        return 0;
    }
    return smtp_client_failf(c, SMTP_CLIENT_FAIL_TLS, "TLS handshake with %s failed: %s", c->peer,
                 conn_error(&c->conn));
}

static int smtp_client_go_quit(smtp_client *c)
{
    c->quit_wanted = false;
    smtp_client_out_printf(c, "QUIT\r\n");
    c->state = ST_QUIT;
    smtp_client_timer_set(c, c->to.quit_ms);
    smtp_client_want_write(c);
    return 0;
}

/* Queues the next commands of the transaction: all of them when pipelining, else one. */
static void smtp_client_txn_send_more(smtp_client *c)
{
    size_t limit = c->cap_pipelining ? c->ncmds : c->nreplied + 1;
    for (; c->nsent < c->ncmds && c->nsent < limit; c->nsent++) {
        size_t k = c->nsent;
        switch (c->cmds[k]) {
        case CMD_RSET:
            smtp_client_out_printf(c, "RSET\r\n");
            break;
        case CMD_MAIL: {
            smtp_client_out_printf(c, "MAIL FROM:<%s>", c->msg.mail_from);
            if (c->cap_size) smtp_client_out_printf(c, " SIZE=%zu", c->msg.data_len);
            if (c->cap_8bitmime && smtp_client_has_8bit(c->msg.data, c->msg.data_len))
                smtp_client_out_printf(c, " BODY=8BITMIME");
            smtp_client_out_printf(c, "\r\n");
            break;
        }
        case CMD_RCPT: {
            size_t i = k - (c->ncmds - c->msg.nrcpts);
            smtp_client_out_printf(c, "RCPT TO:<%s>\r\n", c->msg.rcpts[i]);
            break;
        }
        }
    }
    smtp_client_want_write(c);
}

static int smtp_client_on_txn_reply(smtp_client *c, const smtp_client_reply *r)
{
    size_t k = c->nreplied++;
    size_t first_rcpt = c->ncmds - c->msg.nrcpts;
    switch (c->cmds[k]) {
    case CMD_RSET:
        if (r->code / 100 != 2) {
            c->nreplied--;
            return smtp_client_failf(c, SMTP_CLIENT_FAIL_IO, "%s answered RSET with: %s", c->peer, r->line);
        }
        break;
    case CMD_MAIL:
        c->mail_replied = true;
        c->mail_ok = r->code / 100 == 2;
        if (!c->mail_ok) {
            /* the refusal of MAIL is every recipient's answer */
            for (size_t i = 0; i < c->msg.nrcpts; i++) {
                smtp_client_reply_free(&c->res[i].reply);
                smtp_client_reply_copy(&c->res[i].reply, r);
                c->res[i].status = SMTP_CLIENT_OK;
            }
            if (!c->cap_pipelining) return smtp_client_finish_txn(c, true, false);
        }
        break;
    case CMD_RCPT:
        if (c->mail_ok) {
            smtp_client_rcpt_result *res = &c->res[k - first_rcpt];
            smtp_client_reply_free(&res->reply);
            smtp_client_reply_copy(&res->reply, r);
            res->status = SMTP_CLIENT_OK;
            if (r->code / 100 == 2) c->naccepted++;
        }
        break;
    }
    if (c->nreplied < c->ncmds) {
        smtp_client_txn_send_more(c);
        smtp_client_timer_set(c, c->cmds[c->nreplied] == CMD_RCPT ? c->to.rcpt_ms : c->to.mail_ms);
        return 0;
    }
    if (!c->mail_ok || c->naccepted == 0) return smtp_client_finish_txn(c, true, false);
    smtp_client_out_printf(c, "DATA\r\n");
    c->state = ST_DATA;
    smtp_client_timer_set(c, c->to.data_init_ms);
    smtp_client_want_write(c);
    return 0;
}

/* A reply ends DATA (not 354) or the message: it is every accepted recipient's answer. */
static int smtp_client_answer_accepted(smtp_client *c, const smtp_client_reply *r)
{
    for (size_t i = 0; i < c->msg.nrcpts; i++) {
        smtp_client_rcpt_result *res = &c->res[i];
        if (res->status != SMTP_CLIENT_OK || res->reply.code / 100 != 2) continue;
        smtp_client_reply_free(&res->reply);
        smtp_client_reply_copy(&res->reply, r);
    }
    return smtp_client_finish_txn(c, true, false);
}

/* The server announced kiln's own hostname: it is kiln itself. As Postfix: "mail loops back
 * to myself"; the connection is closed at once. */
static int smtp_client_loop(smtp_client *c, const char *how, const smtp_client_reply *r)
{
    bool named = c->peer_name && strcmp(c->peer_name, c->peer) != 0;
    return smtp_client_failf(c, SMTP_CLIENT_FAIL_LOOP,
                             "554 5.4.6 mail loops back to myself: %s%s%s %s with my own "
                             "hostname %s (%s)", named ? c->peer_name : "", named ? " " : "",
                             c->peer, how, c->self_name, r->line);
}

static int smtp_client_on_reply(smtp_client *c, const smtp_client_reply *r)
{
    log_write(c->log, KLOG_DEBUG, "smtp_client.reply", "session=%s state=%s reply=%s",
              log_q(c->log, c->desc), log_q(c->log, state_names[c->state]),
              log_q(c->log, r->line));
    switch (c->state) {
    case ST_GREETING:
        if (r->code / 100 != 2) return smtp_client_emit_closed(c, SMTP_CLIENT_FAIL_REJECTED, r->line, r);
        if (hopcheck_announces(c->self_name, r->text))
            return smtp_client_loop(c, "greeted me", r);
        return smtp_client_send_ehlo(c);
    case ST_EHLO:
        if (r->code / 100 == 2) {
            if (hopcheck_announces(c->self_name, r->text))
                return smtp_client_loop(c, "replied to EHLO", r);
            smtp_client_caps_from_ehlo(c, r);
            if (c->cap_starttls && c->tls_ctx && !c->tls) {
                smtp_client_out_printf(c, "STARTTLS\r\n");
                c->state = ST_STARTTLS;
                smtp_client_timer_set(c, c->to.mail_ms);
                smtp_client_want_write(c);
                return 0;
            }
            return smtp_client_become_ready(c);
        }
        if (r->code / 100 == 5 && !c->tls) {
            smtp_client_out_printf(c, "HELO %s\r\n", c->ehlo);
            c->state = ST_HELO;
            smtp_client_timer_set(c, c->to.mail_ms);
            smtp_client_want_write(c);
            return 0;
        }
        return smtp_client_emit_closed(c, SMTP_CLIENT_FAIL_REJECTED, r->line, r);
    case ST_HELO:
        if (r->code / 100 != 2) return smtp_client_emit_closed(c, SMTP_CLIENT_FAIL_REJECTED, r->line, r);
        c->esmtp = false;
        return smtp_client_become_ready(c);
    case ST_STARTTLS:
        if (r->code / 100 == 2) return smtp_client_start_handshake(c);
        /* STARTTLS refused: go on in clear (a message requiring TLS is refused at send) */
        c->cap_starttls = false;
        return smtp_client_become_ready(c);
    case ST_AUTH:
        if (r->code != 235) return smtp_client_emit_closed(c, SMTP_CLIENT_FAIL_REJECTED, r->line, r);
        c->authed = true;
        return smtp_client_become_ready(c);
    case ST_TXN:
        return smtp_client_on_txn_reply(c, r);
    case ST_DATA:
        if (r->code / 100 == 3) {
            smtp_client_encode_data(c->msg.data, c->msg.data_len, &c->conn.out);
            c->state = ST_BODY;
            smtp_client_timer_set(c, c->to.data_block_ms);
            smtp_client_want_write(c);
            return 0;
        }
        return smtp_client_answer_accepted(c, r);
    case ST_BODY:
        if (conn_out_pending(&c->conn))
            return smtp_client_failf(c, SMTP_CLIENT_FAIL_IO, "%s answered before the end of data: %s",
                                     c->peer, r->line);
        return smtp_client_answer_accepted(c, r);
    case ST_IDLE:
        return smtp_client_failf(c, SMTP_CLIENT_FAIL_IO, "%s ended the idle session: %s", c->peer, r->line);
    case ST_QUIT:
        return smtp_client_emit_closed(c, SMTP_CLIENT_OK, NULL, NULL);
    default:
        return smtp_client_failf(c, SMTP_CLIENT_FAIL_IO, "unexpected reply from %s in %s: %s", c->peer,
                     state_names[c->state], r->line);
    }
}

static int smtp_client_read_in(smtp_client *c)
{
    strbuf *in = &c->conn.in;
    for (;;) {
        size_t n = 0;
        conn_status st = conn_read(&c->conn, &n);
        if (st == CONN_AGAIN) break;
        if (st == CONN_EOF)
            return smtp_client_failf(c, SMTP_CLIENT_FAIL_IO, "lost connection with %s in %s", c->peer,
                         state_names[c->state]);
        if (st == CONN_ERROR)
            return smtp_client_failf(c, SMTP_CLIENT_FAIL_IO, "read from %s failed in %s: %s", c->peer,
                         state_names[c->state], conn_error(&c->conn));
        /* replies */
        for (;;) {
            smtp_client_reply r;
            size_t used;
            int pr = smtp_client_parse_reply(in->buf, in->len, &r, &used);
            if (pr == 0) break;
            if (pr < 0)
                return smtp_client_failf(c, SMTP_CLIENT_FAIL_IO, "%s sent something that is not an SMTP reply in %s",
                             c->peer, state_names[c->state]);
            strbuf_consume(in, used);
            client_state before = c->state;
            int rc = smtp_client_on_reply(c, &r);
            smtp_client_reply_free(&r);
            if (rc < 0) return -1;
            /* the TLS handshake starts on raw bytes: stop reading through the old layer */
            if (c->state == ST_HANDSHAKE && before == ST_STARTTLS) return smtp_client_do_handshake(c);
        }
        if (conn_tls(&c->conn) && !conn_read_pending(&c->conn) && n < CONN_READ_CHUNK) break;
    }
    return 0;
}

static int smtp_client_connect_done(smtp_client *c)
{
    int err = conn_connected(&c->conn);
    if (err)
        return smtp_client_failf(c, SMTP_CLIENT_FAIL_CONNECT, "connect to %s port %d%s%s failed: %s",
                     c->peer, c->port, c->src ? " from " : "", c->src ? c->src : "",
                     strerror(err));
    conn_update(&c->conn, true);
    c->state = ST_GREETING;
    smtp_client_timer_set(c, c->to.greeting_ms);
    log_write(c->log, KLOG_DEBUG, "smtp_client.connected", "session=%s", log_q(c->log, c->desc));
    return 0;
}

/* Readable: replies; then what they queued is written. Writable: queued output; then a TLS
 * read that had to wait for writability goes on. */
static void smtp_client_on_io(void *arg, int revents)
{
    smtp_client *c = arg;
    if (c->state == ST_CONNECT) {
        smtp_client_connect_done(c);
        return;
    }
    if (c->state == ST_HANDSHAKE) {
        smtp_client_do_handshake(c);
        return;
    }
    if (revents & EV_READ) {
        if (smtp_client_read_in(c) < 0) return;
        if (conn_out_pending(&c->conn) && c->state != ST_HANDSHAKE && smtp_client_write_out(c) < 0) return;
    }
    if ((revents & EV_WRITE) && c->state != ST_HANDSHAKE) {
        bool read_waits = conn_read_wants_write(&c->conn);
        if (smtp_client_write_out(c) < 0) return;
        if (conn_tls(&c->conn) && (read_waits || conn_read_pending(&c->conn)) && smtp_client_read_in(c) < 0)
            return;
    }
    conn_update(&c->conn, true);
}

static void smtp_client_on_timeout(void *arg)
{
    smtp_client *c = arg;
    if (c->state == ST_CONNECT) {
        c->connect_timed_out = true;
        smtp_client_failf(c, SMTP_CLIENT_FAIL_CONNECT, "connect to %s port %d%s%s timed out", c->peer, c->port,
              c->src ? " from " : "", c->src ? c->src : "");
        return;
    }
    if (c->state == ST_QUIT) {
        smtp_client_emit_closed(c, SMTP_CLIENT_OK, NULL, NULL);
        return;
    }
    if (c->state == ST_HANDSHAKE) {
        smtp_client_failf(c, SMTP_CLIENT_FAIL_TLS, "timeout in TLS handshake with %s", c->peer);
        return;
    }
    if (c->state == ST_BODY && conn_out_pending(&c->conn)) {
        smtp_client_failf(c, SMTP_CLIENT_FAIL_IO, "timeout sending message data to %s", c->peer);
        return;
    }
    static const char *const waiting_for[] = {
        [ST_GREETING] = "greeting", [ST_EHLO] = "EHLO", [ST_HELO] = "HELO",
        [ST_STARTTLS] = "STARTTLS", [ST_HANDSHAKE] = "TLS handshake", [ST_AUTH] = "AUTH",
        [ST_TXN] = "MAIL/RCPT",
        [ST_DATA] = "DATA", [ST_BODY] = "end of data",
    };
    const char *what = c->state < sizeof waiting_for / sizeof waiting_for[0] && waiting_for[c->state]
                           ? waiting_for[c->state] : state_names[c->state];
    smtp_client_failf(c, SMTP_CLIENT_FAIL_IO, "timeout waiting for %s from %s", what, c->peer);
}

static void smtp_client_on_later(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    smtp_client *c = w->data;
    char *e = c->later_error;
    c->later_error = NULL;
    if (c->aborting) {
        c->aborting = false;
        if (c->state != ST_CLOSED) smtp_client_fail(c, c->later_status, e);
    } else {
        smtp_client_emit_closed(c, c->later_status, e, NULL);
    }
    free(e);
}

static const conn_ops smtp_client_conn_ops = {
    .on_io = smtp_client_on_io, .on_timeout = smtp_client_on_timeout,
};

/* ------------------------------------------------------------------ public API */

static int smtp_client_start_connect(smtp_client *c, char **err, smtp_client_status *st)
{
    struct sockaddr_storage peer, src;
    socklen_t plen, slen = 0;
    memset(&peer, 0, sizeof peer);
    memset(&src, 0, sizeof src);
    struct sockaddr_in *p4 = (struct sockaddr_in *)&peer;
    struct sockaddr_in6 *p6 = (struct sockaddr_in6 *)&peer;
    if (inet_pton(AF_INET, c->peer, &p4->sin_addr) == 1) {
        p4->sin_family = AF_INET;
        p4->sin_port = htons((uint16_t)c->port);
        plen = sizeof *p4;
    } else if (inet_pton(AF_INET6, c->peer, &p6->sin6_addr) == 1) {
        p6->sin6_family = AF_INET6;
        p6->sin6_port = htons((uint16_t)c->port);
        plen = sizeof *p6;
    } else {
        *st = SMTP_CLIENT_FAIL_CONNECT;
        *err = util_asprintf("%s is not an IP address", c->peer);
        return -1;
    }
    if (c->src) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&src;
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&src;
        if (inet_pton(AF_INET, c->src, &s4->sin_addr) == 1) {
            s4->sin_family = AF_INET;
            slen = sizeof *s4;
        } else if (inet_pton(AF_INET6, c->src, &s6->sin6_addr) == 1) {
            s6->sin6_family = AF_INET6;
            slen = sizeof *s6;
        } else {
            *st = SMTP_CLIENT_FAIL_BIND;
            *err = util_asprintf("source %s is not an IP address", c->src);
            return -1;
        }
        if (src.ss_family != peer.ss_family) {
            *st = SMTP_CLIENT_FAIL_CONNECT;
            *err = util_asprintf("cannot reach %s from %s: different address families", c->peer,
                                 c->src);
            return -1;
        }
    }
    conn_step step;
    if (conn_connect(&c->conn, (struct sockaddr *)&peer, plen, (struct sockaddr *)&src, slen,
                     false, &step) != 0) {
        int e = conn_errno(&c->conn);
        const char *why = strerror(e);
        if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
            /* out of descriptors or buffers here: a local failure, whatever the step */
            *st = SMTP_CLIENT_FAIL_LOCAL;
            *err = util_asprintf("%s for %s%s%s: %s", step == CONN_STEP_SOCKET ? "socket"
                                 : step == CONN_STEP_BIND ? "bind" : "connect",
                                 c->peer, c->src ? " from " : "", c->src ? c->src : "", why);
        } else if (step == CONN_STEP_SOCKET) {
            *st = SMTP_CLIENT_FAIL_CONNECT;
            *err = util_asprintf("socket for %s: %s", c->peer, why);
        } else if (step == CONN_STEP_BIND) {
            *st = SMTP_CLIENT_FAIL_BIND;
            *err = util_asprintf("bind to source address %s failed: %s", c->src, why);
        } else {
            *st = SMTP_CLIENT_FAIL_CONNECT;
            *err = util_asprintf("connect to %s port %d%s%s failed: %s", c->peer, c->port,
                                 c->src ? " from " : "", c->src ? c->src : "", why);
        }
        return -1;
    }
    conn_update(&c->conn, true);
    smtp_client_timer_set(c, c->to.connect_ms);
    return 0;
}

smtp_client *smtp_client_new(struct ev_loop *loop, klog *lg, const smtp_client_opts *opts,
                             smtp_client_cb cb, void *arg)
{
    smtp_client *c = util_calloc(1, sizeof *c);
    c->loop = loop;
    c->log = lg;
    c->cb = cb;
    c->arg = arg;
    c->src = util_strdup(opts->source_ip);
    c->peer = util_strdup(opts->peer_ip);
    c->peer_name = util_strdup(opts->peer_name);
    c->ehlo = util_strdup(opts->ehlo_name);
    c->self_name = opts->self_name ? util_strdup(opts->self_name) : NULL;
    c->port = opts->port;
    c->to = opts->timeouts;
    c->tls_ctx = opts->tls;
    c->auth = tls_auth_dup(opts->auth);
    c->auth_plain = opts->auth_plain ? util_strdup(opts->auth_plain) : NULL;
    c->desc = util_asprintf("%s->%s:%d%s%s%s", c->src ? c->src : "*", c->peer, c->port,
                            c->peer_name ? " (" : "", c->peer_name ? c->peer_name : "",
                            c->peer_name ? ")" : "");
    conn_init(&c->conn, loop, &smtp_client_conn_ops, c);
    ev_timer_init(&c->later, smtp_client_on_later, 0.0, 0.0);
    c->later.data = c;
    c->state = ST_CONNECT;
    char *err = NULL;
    smtp_client_status st = SMTP_CLIENT_OK;
    if (smtp_client_start_connect(c, &err, &st) < 0) {
        /* reported from the loop, like every other outcome */
        conn_timer_stop(&c->conn);
        c->later_status = st;
        c->later_error = err;
        ev_timer_start(c->loop, &c->later);
    }
    return c;
}

void smtp_client_abort(smtp_client *c, const char *error)
{
    if (c->state == ST_CLOSED || ev_is_active(&c->later)) return;
    free(c->later_error);
    c->later_error = util_strdup(error);
    c->later_status = SMTP_CLIENT_FAIL_IO;
    c->aborting = true;
    ev_timer_start(c->loop, &c->later);
}

int smtp_client_send(smtp_client *c, const smtp_client_msg *m, smtp_client_status *why,
                     char **err)
{
    if (c->state != ST_IDLE)
        util_fatal("smtp_client_send on session %s in state %s", c->desc, state_names[c->state]);
    if (m->require_tls && !c->tls) {
        *why = SMTP_CLIENT_FAIL_TLS_REQUIRED;
        if (!c->tls_ctx)
            *err = util_asprintf("TLS required but not available: kiln has no client TLS context");
        else
            *err = util_asprintf("TLS required but not offered by %s",
                                 c->peer_name ? c->peer_name : c->peer);
        return -1;
    }
    if (c->cap_size && (int64_t)m->data_len > c->cap_size) {
        *why = SMTP_CLIENT_FAIL_TOO_BIG;
        *err = util_asprintf("552 5.3.4 message size %zu exceeds the limit of %lld bytes of %s",
                             m->data_len, (long long)c->cap_size,
                             c->peer_name ? c->peer_name : c->peer);
        return -1;
    }
    c->msg = *m;
    c->res = util_calloc(m->nrcpts ? m->nrcpts : 1, sizeof *c->res);
    for (size_t i = 0; i < m->nrcpts; i++) {
        c->res[i].status = SMTP_CLIENT_FAIL_IO;
        smtp_client_reply_local(&c->res[i].reply, "no reply");
    }
    c->ncmds = m->nrcpts + 1 + (c->ntxn > 0 ? 1 : 0);
    c->cmds = util_calloc(c->ncmds, sizeof *c->cmds);
    size_t k = 0;
    if (c->ntxn > 0) c->cmds[k++] = CMD_RSET;
    c->cmds[k++] = CMD_MAIL;
    while (k < c->ncmds) c->cmds[k++] = CMD_RCPT;
    c->nsent = c->nreplied = c->naccepted = 0;
    c->mail_replied = c->mail_ok = false;
    c->ntxn++;
    c->state = ST_TXN;
    smtp_client_txn_send_more(c);
    smtp_client_timer_set(c, c->cmds[0] == CMD_RCPT ? c->to.rcpt_ms : c->to.mail_ms);
    log_write(c->log, KLOG_DEBUG, "smtp_client.send", "session=%s id=%s rcpts=%zu size=%zu",
              log_q(c->log, c->desc), log_q(c->log, m->id), m->nrcpts, m->data_len);
    return 0;
}

void smtp_client_quit(smtp_client *c)
{
    if (c->state == ST_CLOSED || c->state == ST_QUIT) return;
    if (c->state == ST_IDLE) {
        smtp_client_go_quit(c);
        return;
    }
    c->quit_wanted = true;
}

void smtp_client_free(smtp_client *c)
{
    if (!c) return;
    smtp_client_close_socket(c);
    smtp_client_free_txn(c);
    conn_free(&c->conn);
    free(c->later_error);
    free(c->src);
    free(c->peer);
    free(c->peer_name);
    free(c->ehlo);
    free(c->self_name);
    free(c->desc);
    tls_auth_free(c->auth);
    if (c->auth_plain) explicit_bzero(c->auth_plain, strlen(c->auth_plain));
    free(c->auth_plain);
    free(c);
}

bool smtp_client_tls_active(const smtp_client *c) { return c->tls; }
const char *smtp_client_to_text(const smtp_client *c) { return c->desc; }
