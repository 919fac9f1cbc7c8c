/* smtp_server.c — the submission listener (SPEC section 2) on libev: the listening sockets
 * (a conn_acceptor) and, per client, a session that is an explicit state machine (see
 * smtp_session.h; its commands, AUTH and DATA reader are in smtp_commands.c). This file is
 * the session's I/O side and life cycle: socket and TLS through mta/conn, timeouts, STARTTLS,
 * the commit callback, close.
 *
 * Input is split into lines by smtp_parse; every complete line in the buffer is handled
 * in order (PIPELINING) and replies are collected in an output buffer that is written when
 * no complete line is left or a reply needs a round trip (354, the end of DATA). At the end
 * of DATA the session stops reading until the spool's group commit has run its callback:
 * nothing is acknowledged before the message is durable. Each session keeps a reference to
 * the config it started with, so a reload never changes the rules mid-session.
 *
 * Limits (issue items 4 and 8): every connection is admitted by mta/smtp_limits (session
 * caps derived from RLIMIT_NOFILE, the reserved share for trusted and authenticated
 * clients, per-client sessions and connection rate; trusted clients are exempt from the
 * per-client ones unless submission.limit_trusted_clients) or refused with a 421 and
 * closed; a session ends with a 421 at its deadline, when its DATA arrives slower than
 * submission.min_data_rate (judged after min_data_rate_window; nothing is stored) and after
 * too many junk commands. accept() failing for lack of descriptors is logged once per
 * episode (the acceptor backs off on its own). */
#include "mta/smtp_server.h"
#include "mta/smtp_session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "mta/quota.h"
#include "store/spool.h"
#include "mta/auth.h"
#include "mta/conn.h"
#include "base/kiln.h"
#include "mta/policy.h"
#include "mta/smtp_parse.h"
#include "mta/tls.h"
#include "base/util.h"

/* Limits (the linger time can be overridden with -D for tests; the session caps are
 * submission.max_sessions and friends, see smtp_limits.h). */
#ifndef SMTP_SERVER_LINGER
#define SMTP_SERVER_LINGER 10.0             /* s, to deliver the last reply before closing */
#endif
#define SMTP_SERVER_OUT_MAX (64 * 1024)     /* unread replies before the client is dropped */
#define SMTP_SERVER_OUT_PAUSE (16 * 1024)   /* unread replies that pause reading */
#define SMTP_SERVER_READS_PER_EVENT 16      /* fairness between sessions */
#define SMTP_SERVER_ACCEPTS_PER_EVENT 64
#define SMTP_SERVER_ACCEPT_BACKOFF 0.1      /* s, after EMFILE and the like */
#define SMTP_SERVER_ACCEPT_QUIET_MS 5000    /* without such failures: the episode is over */
#define SMTP_SERVER_BACKLOG 511

#define REPLY_TIMEOUT_FMT "421 4.4.2 %s Error: timeout exceeded"
#define REPLY_TOO_MANY_CONNECTIONS "421 4.7.0 Too many connections"
#define REPLY_TOO_MANY_FROM_HOST "421 4.7.0 Too many connections from your host, try later"
#define REPLY_RATE_EXCEEDED "421 4.7.0 Connection rate limit exceeded"
#define REPLY_DEADLINE "421 4.4.2 Session time limit exceeded"
#define REPLY_DATA_RATE "421 4.4.2 Transfer rate too low"
#define REPLY_JUNK "421 4.7.0 Too many junk commands"

static const char *const state_names[] = {
    "greet", "ready", "auth", "mail", "rcpt", "data", "commit", "tls_wait", "tls_handshake",
    "closing", "auth_wait",
};

static void smtp_server_session_close(smtp_session *s);
static void smtp_server_session_run(smtp_session *s);

/* ---- session helpers ---- */

void smtp_server_kill_session(smtp_session *s, const char *reason)
{
    if (!s->dead) s->close_reason = reason;
    s->dead = true;
}

void smtp_server_set_timer(smtp_session *s, double seconds)
{
    if (!s->srv) return;
    if (s->state != ST_CLOSING) {
        /* the session deadline, and in DATA the end of the rate window, come first */
        int64_t now = kiln_now_ms(s->ctx);
        int64_t until = s->deadline_ms;
        if (s->state == ST_DATA && s->cfg->min_data_rate > 0) {
            int64_t w = s->data_started_ms + s->cfg->min_data_rate_window_ms;
            if (w > now && (!until || w < until)) until = w;
        }
        if (until) {
            double left = (double)(until - now) / 1000.0;
            if (left < 0.001) left = 0.001;
            if (left < seconds) seconds = left;
        }
    }
    conn_timer_set(&s->conn, seconds);
}

/* ---- limits: deadline, DATA rate, junk commands, privilege ---- */

/* The session is past its deadline (closing sessions are not judged any more). */
static bool smtp_server_past_deadline(const smtp_session *s)
{
    return s->deadline_ms && kiln_now_ms(s->ctx) >= s->deadline_ms;
}

/* In DATA after the rate window: fewer than min_data_rate bytes per second so far. The
 * bytes counted are the message's plus whatever waits in the input buffer. */
static bool smtp_server_data_too_slow(const smtp_session *s)
{
    const config *cfg = s->cfg;
    if (s->state != ST_DATA || cfg->min_data_rate <= 0) return false;
    int64_t elapsed = kiln_now_ms(s->ctx) - s->data_started_ms;
    if (elapsed < cfg->min_data_rate_window_ms) return false;
    double got = (double)s->data_size + (double)s->conn.in.len;
    return got * 1000.0 < (double)cfg->min_data_rate * (double)elapsed;
}

/* Ends the session with a 421 for a limit: the transaction (an unfinished message too) is
 * dropped; nothing was acknowledged for it. */
static void smtp_server_limit_close(smtp_session *s, const char *reply, const char *why)
{
    log_write(s->ctx->log, KLOG_WARNING, "smtp.limit",
              "session=%llu client=%s limit=%s state=%s reply=%s", (unsigned long long)s->id,
              s->client_ip, why, state_names[s->state], log_q(s->ctx->log, reply));
    smtp_server_reset_transaction(s);
    s->discard_input = true;
    smtp_server_reply(s, reply);
    smtp_server_start_closing(s, why);
}

bool smtp_server_junk(smtp_session *s)
{
    int max = s->cfg->max_junk_commands;
    if (max < 0 || ++s->junk <= max) return false;
    smtp_server_limit_close(s, REPLY_JUNK, "max_junk_commands");
    return true;
}

void smtp_server_session_authenticated(smtp_session *s)
{
    if (s->privileged || !s->limits_counted || !s->srv) return;
    smtp_limits_promote(s->srv->limits);
    s->privileged = true;
}

/* Stop reading; write what is pending; close once written (or after the linger time). */
void smtp_server_start_closing(smtp_session *s, const char *reason)
{
    if (s->state == ST_CLOSING) return;
    s->state = ST_CLOSING;
    s->close_reason = reason;
    smtp_server_set_timer(s, SMTP_SERVER_LINGER);
}

/* ---- input and output (the socket and TLS mechanics are mta/conn.c's) ---- */

static bool smtp_server_processing_input(const smtp_session *s)
{
    return !s->dead && s->state != ST_COMMIT && s->state != ST_CLOSING &&
           s->state != ST_TLS_WAIT && s->state != ST_TLS_HANDSHAKE && s->state != ST_AUTH_WAIT &&
           s->state != ST_LIMIT_WAIT;
}

static void smtp_server_process_input(smtp_session *s)
{
    strbuf *in = &s->conn.in;
    size_t pos = 0;
    while (smtp_server_processing_input(s)) {
        size_t max = s->state == ST_DATA ? SMTP_TEXT_LINE_MAX : SMTP_AUTH_LINE_MAX;
        smtp_line line;
        size_t discard;
        /* An empty strbuf has no buffer: NULL + 0 is undefined, so pass NULL itself. */
        smtp_line_status st = smtp_line_next(&s->lr, in->buf ? in->buf + pos : NULL,
                                             in->len - pos, max, &line, &discard);
        if (st == SMTP_LINE_MORE) {
            pos += discard;
            if (discard) continue;
            break;
        }
        pos += line.consumed;
        if (s->state == ST_DATA) {
            smtp_server_data_line(s, &line);
        } else {
            smtp_server_command_line(s, &line);
            smtp_server_check_shutdown(s);
        }
        if (s->discard_input) {
            s->discard_input = false;
            pos = in->len;
            s->lr = (smtp_linereader){0};
        }
    }
    strbuf_consume(in, pos);
    if (conn_out_pending(&s->conn) > SMTP_SERVER_OUT_MAX)
        smtp_server_kill_session(s, "client not reading replies");
}

static bool smtp_server_reading_allowed(const smtp_session *s)
{
    return smtp_server_processing_input(s) && conn_out_pending(&s->conn) < SMTP_SERVER_OUT_PAUSE;
}

/* EOF from the client: an unfinished message is dropped; replies already due are still
 * written (a client may half-close after its last command) before the close. */
static void smtp_server_peer_closed(smtp_session *s)
{
    const char *why = "client closed the connection";
    if (s->state == ST_DATA) why = "client closed the connection in DATA";
    smtp_server_reset_transaction(s);
    smtp_server_start_closing(s, why);
}

static void smtp_server_log_tls_error(smtp_session *s)
{
    log_write(s->ctx->log, KLOG_INFO, "smtp.tls_error", "session=%llu client=%s error=%s",
              (unsigned long long)s->id, s->client_ip, log_q(s->ctx->log, conn_error(&s->conn)));
}

/* Reads what the socket has (bounded per event), handling lines as they come. */
static void smtp_server_read_input(smtp_session *s)
{
    for (int k = 0; k < SMTP_SERVER_READS_PER_EVENT && smtp_server_reading_allowed(s); k++) {
        switch (conn_read(&s->conn, NULL)) {
        case CONN_OK: break;
        case CONN_AGAIN: return;
        case CONN_EOF:
            smtp_server_peer_closed(s);
            return;
        case CONN_ERROR:
            if (conn_tls(&s->conn)) {
                smtp_server_log_tls_error(s);
                smtp_server_kill_session(s, "TLS error");
            } else {
                smtp_server_kill_session(s, "read error");
            }
            return;
        }
        if (smtp_server_data_too_slow(s)) {
            smtp_server_limit_close(s, REPLY_DATA_RATE, "min_data_rate");
            return;
        }
        smtp_server_set_timer(s, s->state == ST_DATA ? SMTP_SERVER_DATA_TIMEOUT : SMTP_SERVER_COMMAND_TIMEOUT);
        smtp_server_process_input(s);
    }
    /* Still readable (or plaintext buffered inside OpenSSL): come back in the next loop pass. */
    if (smtp_server_reading_allowed(s) && s->srv) conn_feed(&s->conn, EV_READ);
}

static void smtp_server_flush_output(smtp_session *s)
{
    if (!s->dead && conn_flush(&s->conn, NULL) == CONN_ERROR)
        smtp_server_kill_session(s, conn_tls(&s->conn) ? "TLS write error" : "write error");
}

static void smtp_server_update_io(smtp_session *s)
{
    if (!s->srv || s->closed) return;
    conn_update(&s->conn, smtp_server_reading_allowed(s));
}

static void smtp_server_tls_step(smtp_session *s)
{
    if (s->state == ST_TLS_WAIT) {
        if (conn_out_pending(&s->conn)) return;  /* the 220 must leave in plaintext first */
        conn_starttls(&s->conn, s->srv->tls, NULL);
        s->state = ST_TLS_HANDSHAKE;
    }
    switch (conn_handshake(&s->conn)) {
    case CONN_OK:
        s->state = ST_GREET;
        s->lr = (smtp_linereader){0};
        strbuf_reset(&s->conn.in);
        log_write(s->ctx->log, KLOG_INFO, "smtp.tls", "session=%llu client=%s version=%s cipher=%s",
                  (unsigned long long)s->id, s->client_ip, tls_conn_version(conn_tls(&s->conn)),
                  tls_conn_cipher(conn_tls(&s->conn)));
        smtp_server_set_timer(s, SMTP_SERVER_COMMAND_TIMEOUT);
        break;
    case CONN_AGAIN: break;
    default:
        smtp_server_log_tls_error(s);
        smtp_server_kill_session(s, "TLS handshake failed");
        break;
    }
}

/* One pass: write, TLS steps, buffered lines, new input, write again. */
static void smtp_server_session_run(smtp_session *s)
{
    smtp_server_flush_output(s);
    if (!s->dead && (s->state == ST_TLS_WAIT || s->state == ST_TLS_HANDSHAKE)) smtp_server_tls_step(s);
    if (!s->dead) smtp_server_process_input(s);
    if (!s->dead) smtp_server_read_input(s);
    if (!s->dead) smtp_server_flush_output(s);
    if (!s->dead && s->state == ST_TLS_WAIT && !conn_out_pending(&s->conn)) {
        smtp_server_tls_step(s);
        if (!s->dead && s->state == ST_GREET) smtp_server_read_input(s);
    }
    if (!s->dead && s->state == ST_CLOSING && !conn_out_pending(&s->conn)) s->dead = true;
    if (s->dead) {
        smtp_server_session_close(s);
        return;
    }
    smtp_server_update_io(s);
}

static void smtp_server_on_session_io(void *arg, int revents)
{
    (void)revents;
    smtp_server_session_run(arg);
}

static void smtp_server_on_session_timer(void *arg)
{
    smtp_session *s = arg;
    if (s->state != ST_CLOSING && s->state != ST_COMMIT && s->state != ST_TLS_WAIT &&
        s->state != ST_TLS_HANDSHAKE && smtp_server_past_deadline(s)) {
        smtp_server_limit_close(s, REPLY_DEADLINE, "session_deadline");
    } else if (smtp_server_data_too_slow(s)) {
        smtp_server_limit_close(s, REPLY_DATA_RATE, "min_data_rate");
    } else if (s->state == ST_DATA && s->cfg->min_data_rate > 0 &&
               kiln_now_ms(s->ctx) - s->data_started_ms <
                   s->cfg->min_data_rate_window_ms + (int64_t)(SMTP_SERVER_DATA_TIMEOUT * 1000)) {
        /* the rate window ended and the rate is fine: the DATA timeout runs on */
        smtp_server_set_timer(s, SMTP_SERVER_DATA_TIMEOUT);
        return;
    } else if ((s->state == ST_TLS_HANDSHAKE || s->state == ST_TLS_WAIT) &&
               smtp_server_past_deadline(s)) {
        smtp_server_kill_session(s, "session_deadline");
    } else if (s->state == ST_CLOSING) {
        smtp_server_kill_session(s, s->close_reason ? s->close_reason : "closing");
    } else if (s->state == ST_TLS_HANDSHAKE || s->state == ST_TLS_WAIT) {
        smtp_server_kill_session(s, "timeout in TLS handshake");
    } else if (s->state == ST_COMMIT || s->state == ST_AUTH_WAIT || s->state == ST_LIMIT_WAIT) {
        return;                   /* not the client's time: the commit/AUTH/lease will come */
    } else {
        const char *why = s->state == ST_DATA ? "timeout in DATA" : "timeout";
        smtp_server_reset_transaction(s);
        smtp_reply_printf(&s->conn.out, REPLY_TIMEOUT_FMT, s->cfg->hostname);
        smtp_server_start_closing(s, why);
    }
    smtp_server_session_run(s);
}

static const conn_ops smtp_server_session_conn_ops = {
    .on_io = smtp_server_on_session_io, .on_timeout = smtp_server_on_session_timer,
};

/* ---- commit callback ---- */

static void smtp_server_session_free(smtp_session *s);

void smtp_server_on_accepted(void *arg, bool ok, const char *id, const char *err)
{
    smtp_session *s = arg;
    kiln_ctx *ctx = s->ctx;
    klog *lg = ctx->log;
    s->commit_pending = false;
    if (ok) {
        quota_daily_commit(ctx->quota, s->reserved, kiln_now_ms(ctx));
        s->accepted++;
        s->junk = 0;              /* junk is counted between accepted messages */
        if (s->fb)
            log_write(lg, KLOG_INFO, "feedback.accept",
                      "session=%llu inbox_id=%s from=%s rcpt=%s rcpts=%zu client=%s tls=%s",
                      (unsigned long long)s->id, id, log_q(lg, s->mail_from),
                      log_q(lg, s->nrcpts ? s->rcpts[0] : ""), s->nrcpts, s->client_ip,
                      conn_tls(&s->conn) ? "yes" : "no");
        else
            log_write(lg, KLOG_INFO, "smtp.accept",
                      "session=%llu id=%s from=%s rcpts=%zu set=%s client=%s auth=%s tls=%s%s",
                      (unsigned long long)s->id, id, log_q(lg, s->mail_from), s->nrcpts,
                      log_q(lg, s->set_name), s->client_ip,
                      log_q(lg, s->auth_user ? s->auth_user : ""), conn_tls(&s->conn) ? "yes" : "no",
                      s->closed ? " note=\"client already gone\"" : "");
    } else {
        quota_daily_release(ctx->quota, s->reserved);
        log_write(lg, KLOG_ERROR, "smtp.reject",
                  "session=%llu client=%s stage=commit from=%s rcpts=%zu error=%s reply=%s",
                  (unsigned long long)s->id, s->client_ip, log_q(lg, s->mail_from), s->nrcpts,
                  log_q(lg, err ? err : "spool commit failed"), log_q(lg, REPLY_STORE_FAILED));
    }
    s->reserved = 0;
    smtp_server_free_transaction(s, false);
    if (s->closed || !s->srv) {
        smtp_server_session_free(s);
        return;
    }
    if (ok) smtp_reply_printf(&s->conn.out, "250 2.0.0 Ok %s", id);
    else smtp_server_reply(s, REPLY_STORE_FAILED);
    s->state = ST_READY;
    smtp_server_check_shutdown(s);
    if (s->state != ST_CLOSING) smtp_server_set_timer(s, SMTP_SERVER_COMMAND_TIMEOUT);
    /* Resume from the loop, not from inside the spool's flush. */
    conn_feed(&s->conn, EV_READ | EV_WRITE);
}

/* ---- session life cycle ---- */

static void smtp_server_check_done(smtp_server *srv)
{
    if (srv->shutting_down && srv->nsessions == 0 && !srv->done_called)
        ev_idle_start(srv->ctx->loop, &srv->done_idle);
}

static void smtp_server_session_free(smtp_session *s)
{
    smtp_server *srv = s->srv;
    if (srv) {
        if (s->prev) s->prev->next = s->next;
        else srv->sessions = s->next;
        if (s->next) s->next->prev = s->prev;
        srv->nsessions--;
    }
    smtp_server_free_transaction(s, true);
    smtp_server_auth_release(s);
    smtp_server_limit_release(s);
    free(s->cluster_peer);
    free(s->helo);
    free(s->auth_user);
    free(s->auth_login_user);
    conn_free(&s->conn);
    config_unref(s->cfg);
    free(s);
    if (srv) smtp_server_check_done(srv);
}

/* Closes the connection now; the session itself lives on while a commit is pending. */
static void smtp_server_session_close(smtp_session *s)
{
    if (s->closed) return;
    kiln_ctx *ctx = s->ctx;
    log_write(ctx->log, KLOG_INFO, "smtp.close",
              "session=%llu client=%s reason=%s messages=%u state=%s duration_ms=%lld",
              (unsigned long long)s->id, s->client_ip,
              log_q(ctx->log, s->close_reason ? s->close_reason : "closed"), s->accepted,
              state_names[s->state], (long long)(kiln_now_ms(ctx) - s->started_ms));
    conn_close(&s->conn, s->state == ST_CLOSING);
    s->closed = true;
    if (s->limits_counted && s->srv) {
        smtp_limits_release(s->srv->limits, s->client_ip, s->privileged, s->limits_tracked);
        s->limits_counted = false;
    }
    if (s->commit_pending) return;     /* smtp_server_on_accepted frees it */
    smtp_server_session_free(s);
}

/* The caps follow the current config (a reload may change them): derived again when it
 * changed, with a warning for every value lowered to fit the descriptor limit. */
static void smtp_server_refresh_caps(smtp_server *srv)
{
    kiln_ctx *ctx = srv->ctx;
    if (srv->caps_cfg == ctx->cfg) return;
    char *warn = NULL;
    smtp_limits_derive(ctx->cfg, srv->nofile, &srv->caps, &warn);
    if (warn) log_write(ctx->log, KLOG_WARNING, "smtp.limits", "warning=%s", log_q(ctx->log, warn));
    free(warn);
    log_write(ctx->log, KLOG_INFO, "smtp.limits",
              "nofile=%lld max_sessions=%d reserved_sessions=%d max_sessions_per_client=%d",
              (long long)srv->nofile, srv->caps.max_sessions, srv->caps.reserved, srv->caps.per_client);
    config_unref(srv->caps_cfg);
    srv->caps_cfg = config_ref(ctx->cfg);
}

/* Refuses a connection at the door: a 421 written straight to the new socket, then close. */
static void smtp_server_refuse(smtp_server *srv, int fd, uint64_t id, const char *ip,
                               smtp_limits_verdict v)
{
    const char *reply = v == SMTP_LIMITS_PER_CLIENT ? REPLY_TOO_MANY_FROM_HOST
                        : v == SMTP_LIMITS_RATE     ? REPLY_RATE_EXCEEDED
                                                    : REPLY_TOO_MANY_CONNECTIONS;
    char msg[128];
    int n = snprintf(msg, sizeof msg, "%s\r\n", reply);
    ssize_t r = send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)r;
    close(fd);
    klog *lg = srv->ctx->log;
    log_write(lg, KLOG_WARNING, "smtp.close",
              "session=%llu client=%s reason=\"refused at connect\" limit=%s sessions=%d "
              "unprivileged=%d max_sessions=%d reserved_sessions=%d reply=%s",
              (unsigned long long)id, ip, smtp_limits_verdict_name(v),
              smtp_limits_sessions(srv->limits), smtp_limits_unprivileged(srv->limits),
              srv->caps.max_sessions, srv->caps.reserved, log_q(lg, reply));
}

static void smtp_server_session_new(smtp_server *srv, int fd, const conn_peer *peer)
{
    kiln_ctx *ctx = srv->ctx;
    const char *ip = peer->ip;
    int port = peer->port;
    bool loopback = peer->loopback;
    uint64_t id = ++srv->next_id;
    smtp_server_refresh_caps(srv);
    const config *cur = ctx->cfg;
    bool trusted = config_is_trusted(cur, ip);
    bool tracked = false;
    smtp_limits_verdict v = smtp_limits_admit(srv->limits, ip, trusted,
                                              trusted && !cur->limit_trusted_clients, &srv->caps,
                                              &cur->max_connection_rate_per_client,
                                              kiln_now_ms(ctx), &tracked);
    if (v != SMTP_LIMITS_OK) {
        smtp_server_refuse(srv, fd, id, ip, v);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    smtp_session *s = util_calloc(1, sizeof *s);
    s->srv = srv;
    s->ctx = ctx;
    s->fb = srv->fb;
    s->cfg = config_ref(ctx->cfg);
    s->id = id;
    conn_init(&s->conn, ctx->loop, &smtp_server_session_conn_ops, s);
    conn_attach(&s->conn, fd);
    memcpy(s->client_ip, ip, sizeof s->client_ip);
    s->client_port = port;
    s->loopback = loopback;
    s->trusted = config_is_trusted(s->cfg, ip);
    s->started_ms = kiln_now_ms(ctx);
    s->limits_counted = true;
    s->limits_tracked = tracked;
    s->privileged = trusted;
    if (s->cfg->session_deadline_ms > 0) s->deadline_ms = s->started_ms + s->cfg->session_deadline_ms;
    s->state = ST_GREET;
    strbuf_init(&s->data);
    smtp_server_auth_init(s);
    s->next = srv->sessions;
    if (srv->sessions) srv->sessions->prev = s;
    srv->sessions = s;
    srv->nsessions++;

    log_write(ctx->log, KLOG_INFO, "smtp.connect", "session=%llu client=%s port=%d trusted=%s",
              (unsigned long long)id, ip, port, s->trusted ? "yes" : "no");
    smtp_reply_printf(&s->conn.out, "220 %s ESMTP kiln", s->cfg->hostname);
    smtp_server_set_timer(s, SMTP_SERVER_COMMAND_TIMEOUT);
    smtp_server_session_run(s);
}

/* ---- listeners ---- */

static void smtp_server_on_accept(void *arg, size_t index, int fd, const conn_peer *peer)
{
    (void)index;
    smtp_server *srv = arg;
    if (srv->accept_trouble && kiln_now_ms(srv->ctx) - srv->accept_trouble_ms >= SMTP_SERVER_ACCEPT_QUIET_MS) {
        srv->accept_trouble = false;
        log_write(srv->ctx->log, KLOG_WARNING, "smtp.accept_error", "result=end sessions=%d",
                  srv->nsessions);
    }
    smtp_server_session_new(srv, fd, peer);
}

/* accept() failed (the acceptor pauses and retries on its own): out of descriptors or
 * memory is a local condition that lasts, logged once when it begins and once when a
 * connection is accepted SMTP_SERVER_ACCEPT_QUIET_MS after the last failure; anything else
 * is logged each time. */
static void smtp_server_on_accept_error(void *arg, size_t index, int err)
{
    smtp_server *srv = arg;
    bool lasting = err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
    if (lasting) srv->accept_trouble_ms = kiln_now_ms(srv->ctx);
    if (lasting && srv->accept_trouble) return;
    if (lasting) srv->accept_trouble = true;
    log_write(srv->ctx->log, lasting ? KLOG_ERROR : KLOG_WARNING, "smtp.accept_error",
              "listen=%s error=%s%s sessions=%d", srv->acceptor.v[index].name,
              log_q(srv->ctx->log, strerror(err)), lasting ? " result=begin" : "", srv->nsessions);
}

static const conn_acceptor_ops smtp_server_acceptor_ops = {
    .on_accept = smtp_server_on_accept, .on_error = smtp_server_on_accept_error,
};

static int smtp_server_listen_on(smtp_server *srv, const config_hostport *hp, char **err)
{
    char port[16], *why = NULL;
    snprintf(port, sizeof port, "%d", hp->port);
    if (conn_acceptor_listen(&srv->acceptor, hp->host, port, SMTP_SERVER_BACKLOG, &why) == 0)
        return 0;
    *err = util_asprintf("%s.listen %s:%d: %s", srv->fb ? "feedback" : "submission", hp->host,
                         hp->port, why);
    free(why);
    return -1;
}

static void smtp_server_on_done_idle(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    smtp_server *srv = w->data;
    ev_idle_stop(loop, w);
    if (srv->done_called || srv->nsessions != 0) return;
    srv->done_called = true;
    log_write(srv->ctx->log, KLOG_INFO, "smtp.shutdown", "result=done");
    if (srv->done) srv->done(srv->done_arg);
}

static smtp_server *smtp_server_create(kiln_ctx *ctx, struct feedback *fb, bool bind, char **err);

smtp_server *smtp_server_start(kiln_ctx *ctx, char **err)
{
    return smtp_server_create(ctx, NULL, true, err);
}

smtp_server *smtp_server_start_detached(kiln_ctx *ctx, char **err)
{
    return smtp_server_create(ctx, NULL, false, err);
}

smtp_server *smtp_server_start_feedback(kiln_ctx *ctx, struct feedback *fb, bool bind, char **err)
{
    return smtp_server_create(ctx, fb, bind, err);
}

static smtp_server *smtp_server_create(kiln_ctx *ctx, struct feedback *fb, bool bind, char **err)
{
    const config *cfg = ctx->cfg;
    smtp_server *srv = util_calloc(1, sizeof *srv);
    srv->ctx = ctx;
    srv->fb = fb;
    srv->auth_fail_delay = SMTP_SERVER_AUTH_FAIL_DELAY;
    conn_acceptor_init(&srv->acceptor, ctx->loop, SMTP_SERVER_ACCEPTS_PER_EVENT,
                       SMTP_SERVER_ACCEPT_BACKOFF, &smtp_server_acceptor_ops, srv);
    ev_idle_init(&srv->done_idle, smtp_server_on_done_idle);
    srv->done_idle.data = srv;
    srv->limits = smtp_limits_new();
    struct rlimit rl;
    srv->nofile = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                      ? (int64_t)rl.rlim_cur : (int64_t)1 << 30;
    smtp_server_refresh_caps(srv);
    if (cfg->tls_cert) {
        srv->tls = tls_server_ctx_new(cfg->tls_cert, cfg->tls_key, err);
        if (!srv->tls) {
            char *e = *err;
            *err = util_asprintf("submission.tls: %s", e);
            free(e);
            smtp_limits_free(srv->limits);
            config_unref(srv->caps_cfg);
            free(srv);
            return NULL;
        }
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nthreads = ncpu < SMTP_SERVER_AUTH_THREADS_MIN   ? SMTP_SERVER_AUTH_THREADS_MIN
                   : ncpu > SMTP_SERVER_AUTH_THREADS_MAX ? SMTP_SERVER_AUTH_THREADS_MAX
                                                         : (int)ncpu;
    srv->auth_pool = auth_pool_new(ctx->loop, nthreads, SMTP_SERVER_AUTH_QUEUE_MAX);
    srv->auth_fail = auth_fail_new();
    const config_hostport *listen = fb ? cfg->feedback_listen : cfg->listen;
    size_t nlisten = fb ? cfg->nfeedback_listen : cfg->nlisten;
    for (size_t i = 0; bind && i < nlisten; i++) {
        if (smtp_server_listen_on(srv, &listen[i], err) != 0) {
            smtp_server_free(srv);
            return NULL;
        }
    }
    for (size_t i = 0; i < srv->acceptor.n; i++)
        log_write(ctx->log, KLOG_INFO, fb ? "feedback.listen" : "smtp.listen", "address=%s tls=%s auth=%s",
                  srv->acceptor.v[i].name, srv->tls ? "starttls" : "none",
                  !fb && auth_enabled(cfg) ? "yes" : "no");
    conn_acceptor_start(&srv->acceptor);
    return srv;
}

void smtp_server_stop_accepting(smtp_server *srv)
{
    if (!srv) return;
    conn_acceptor_close(&srv->acceptor);
}

void smtp_server_shutdown(smtp_server *srv, void (*done)(void *arg), void *arg)
{
    srv->done = done;
    srv->done_arg = arg;
    srv->shutting_down = true;
    smtp_server_stop_accepting(srv);
    log_write(srv->ctx->log, KLOG_INFO, "smtp.shutdown", "result=begin sessions=%d",
              srv->nsessions);
    smtp_session *next;
    for (smtp_session *s = srv->sessions; s; s = next) {
        next = s->next;
        if (s->closed) continue;
        if (s->state == ST_TLS_WAIT || s->state == ST_TLS_HANDSHAKE) {
            smtp_server_kill_session(s, "shutdown");
            smtp_server_session_close(s);
            continue;
        }
        smtp_server_check_shutdown(s);
        if (s->state == ST_CLOSING) smtp_server_session_run(s);
    }
    smtp_server_check_done(srv);
}

int smtp_server_sessions(const smtp_server *srv)
{
    return srv ? srv->nsessions : 0;
}

int smtp_server_tls_load(const smtp_server *srv, const config *cfg, tls_ctx **out, char **err)
{
    *out = NULL;
    if (!srv->tls || !cfg->tls_cert || tls_server_ctx_unchanged(srv->tls, cfg->tls_cert, cfg->tls_key))
        return 0;
    char *e = NULL;
    *out = tls_server_ctx_new(cfg->tls_cert, cfg->tls_key, &e);
    if (*out) return 0;
    *err = util_asprintf("submission.tls: %s (kilnd reads the pair as the user it runs as); "
                         "the running certificate stays in use and nothing was reloaded", e);
    free(e);
    return -1;
}

void smtp_server_tls_swap(smtp_server *srv, tls_ctx *tls)
{
    if (!tls) return;
    tls_ctx_free(srv->tls);     /* connections made from it keep their own reference */
    srv->tls = tls;
}

void smtp_server_free(smtp_server *srv)
{
    if (!srv) return;
    struct ev_loop *loop = srv->ctx->loop;
    srv->done_called = true;          /* no done() from a freed server */
    conn_acceptor_close(&srv->acceptor);
    smtp_session *next;
    for (smtp_session *s = srv->sessions; s; s = next) {
        next = s->next;
        if (!s->closed) {
            s->close_reason = "server stopped";
            smtp_server_session_close(s);        /* frees it unless a commit is pending */
        }
    }
    /* Sessions left wait for their commit callback: detach them; smtp_server_on_accepted frees them. */
    for (smtp_session *s = srv->sessions; s; s = next) {
        next = s->next;
        s->srv = NULL;
        s->prev = s->next = NULL;
    }
    ev_idle_stop(loop, &srv->done_idle);
    conn_acceptor_free(&srv->acceptor);
    tls_ctx_free(srv->tls);
    auth_pool_free(srv->auth_pool);      /* after the sessions: none is waiting any more */
    auth_fail_free(srv->auth_fail);
    smtp_limits_free(srv->limits);
    config_unref(srv->caps_cfg);
    free(srv);
}

void smtp_server_serve_fd(smtp_server *srv, int fd, const char *ip, bool loopback)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);     /* as accepted sockets are */
    conn_peer peer = {.port = 0, .loopback = loopback};
    snprintf(peer.ip, sizeof peer.ip, "%s", ip);
    smtp_server_session_new(srv, fd, &peer);
}

int64_t smtp_server_inflight(const smtp_server *srv)
{
    return srv ? srv->inflight : 0;
}

void smtp_server_set_auth_fail_delay(smtp_server *srv, double seconds)
{
    srv->auth_fail_delay = seconds < 0 ? 0 : seconds;
}
