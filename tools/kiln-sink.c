/* kiln-sink.c — a fast SMTP sink for load tests and fault rehearsal (SPEC section 6).
 *
 * It listens on every address given with -l (IPv4 "1.2.3.4:25", IPv6 "[::1]:25"), speaks
 * ESMTP (PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, STARTTLS with --tls-cert), accepts
 * every message and throws it away, counting connections, messages, recipients and message
 * bytes per client IP (the peer address: the sender's source IP) and per listening address,
 * plus the highest number of concurrent connections seen per client IP. It replies fast and
 * handles pipelined commands; one libev loop serves every session. It is lenient where a
 * sink should be (MAIL without EHLO, bare LF line ends, long data lines are all accepted)
 * and strict where the counts depend on it (the message ends with a line holding "." only;
 * a leading dot is unstuffed).
 *
 * Faults, as a platform team rehearses bad days — by the local part of a recipient
 * (case-insensitive prefix):
 *   defer...       RCPT gets "451 4.3.0 Temporary failure (kiln-sink)"
 *   reject...      RCPT gets "550 5.1.1 Mailbox unknown (kiln-sink)"
 *   throttle...    RCPT gets "421 4.7.0 Too many messages, slow down (kiln-sink)", then the
 *                  connection is closed
 *   disconnect...  the connection is dropped without a reply
 *   delay<N>...    the RCPT reply (250) is delayed N ms (a timer: other sessions go on)
 * and by option:
 *   --random-defer P, --random-reject P, --random-disconnect P, --random-throttle P,
 *   --random-delay P
 *                  percent (0..100, fractions allowed) of the RCPTs without a local-part
 *                  fault that get the fault above (independent draws in the order
 *                  disconnect, defer, reject, throttle, delay; a random delay holds the
 *                  250 to the RCPT 0..--random-delay-ms milliseconds, default 1000;
 *                  --seed N makes the sequence repeatable)
 *   --delay-data MS
 *                  the reply to the final "." is delayed MS milliseconds
 *   --max-connections-per-client N
 *                  a client IP with N connections open gets
 *                  "421 4.7.0 Too many connections from your IP" instead of the greeting
 *
 * Statistics: on SIGUSR1, every --stats-interval seconds and at exit (SIGTERM/SIGINT: the
 * listeners close, open sessions get 421, the stats are written, exit status 0) one JSON
 * object (jansson) goes to --stats-file (written to a temporary file and renamed over it,
 * so a reader never sees half of it) or, without --stats-file, to stdout as one line:
 *   {"messages": N, "recipients": N, "connections": N, "bytes": N,
 *    "current_connections": N, "uptime_s": S,
 *    "by_client": {"127.0.0.10": {"connections", "messages", "recipients", "bytes",
 *                                 "rejected_connections"}},
 *    "by_listener": {"127.0.0.21:2525": {"connections", "messages", "recipients", "bytes"}},
 *    "faults": {"defer", "reject", "throttle", "disconnect", "delay", "random_defer",
 *               "random_reject", "random_disconnect", "delay_data", "too_many_connections",
 *               "random_delay", "random_throttle"},
 *    "max_concurrent_by_client": {"127.0.0.10": N}}
 * "messages" are messages answered 250 at the end of DATA; "recipients" the recipients
 * accepted in those messages; "bytes" their size as received (after dot-unstuffing, lines
 * ending in CRLF); "connections" the sessions served (connections refused by
 * --max-connections-per-client count as rejected_connections instead).
 *
 * Other options: --tls-cert FILE and --tls-key FILE (PEM; together they turn STARTTLS on),
 * --hostname NAME (greeting and EHLO name), --max-message-size N (the SIZE advertised and
 * enforced, 0 = no limit; default 50 MB), --timeout S (idle session timeout, default 300),
 * -v (a log line per session on stderr), -h (usage), --record FILE and --record-header NAME
 * (one line per accepted message with that header's value: see sink_record.c). Start-up logs "event=sink.ready" on
 * stderr once every listener is open. Everything lives in one `sink` context struct; no
 * globals.
 *
 * Files: this one (sessions, SMTP commands, faults, start and stop), sink_stats.c (the
 * counters and the stats file), sink_record.c (--record), sink_args.c (the command line), sink.h (the shared types).
 * Sockets, TLS, buffers and timers are mta/conn (the same layer as kilnd's submission
 * server); lines and commands are parsed by mta/smtp_parse. */
#include <errno.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "base/log.h"
#include "base/util.h"
#include "mta/conn.h"
#include "mta/smtp_parse.h"
#include "mta/tls.h"
#include "tools/sink.h"

#define SINK_BACKLOG 1024
#define SINK_READ_CHUNK 16384
#define SINK_READS_PER_EVENT 16
#define SINK_ACCEPTS_PER_EVENT 64
#define SINK_ACCEPT_BACKOFF 0.1          /* s, after EMFILE & co */
#define SINK_OUT_PAUSE (64 * 1024)       /* unread replies that pause reading */
#define SINK_DATA_LINE_MAX (64 * 1024)   /* longer data lines are counted, not buffered */
#define SINK_MAX_ERRORS 20
#define SINK_LINGER 2.0                  /* s, to let the client read the last reply */
#define SINK_TLS_TIMEOUT 10.0

#define REPLY_DEFER "451 4.3.0 Temporary failure (kiln-sink)"
#define REPLY_REJECT "550 5.1.1 Mailbox unknown (kiln-sink)"
#define REPLY_THROTTLE "421 4.7.0 Too many messages, slow down (kiln-sink)"
#define REPLY_TOO_MANY_CONN "421 4.7.0 Too many connections from your IP"
#define REPLY_SHUTDOWN "421 4.3.2 Service shutting down"
#define REPLY_TOO_MANY_ERRORS "421 4.7.0 Too many errors"
#define REPLY_OK "250 2.0.0 Ok"
#define REPLY_MAIL_OK "250 2.1.0 Ok"
#define REPLY_RCPT_OK "250 2.1.5 Ok"
#define REPLY_DATA_GO "354 End data with <CR><LF>.<CR><LF>"
#define REPLY_BYE "221 2.0.0 Bye"
#define REPLY_TOO_BIG "552 5.3.4 Message size exceeds fixed limit"
#define REPLY_NO_RCPTS "554 5.5.1 No valid recipients"
#define REPLY_NEED_MAIL "503 5.5.1 Bad sequence of commands: send MAIL first"
#define REPLY_NESTED_MAIL "503 5.5.1 Bad sequence of commands: nested MAIL command"
#define REPLY_UNKNOWN "500 5.5.2 Command unrecognized"
#define REPLY_LINE_TOO_LONG "500 5.5.2 Line too long"
#define REPLY_NO_STARTTLS "502 5.5.1 STARTTLS not available"
#define REPLY_TLS_GO "220 2.0.0 Ready to start TLS"
#define REPLY_NOT_IMPL "502 5.5.1 Command not implemented"

static void sink_session_run(sink_session *s);
static void sink_session_close(sink_session *s);

/* ---- small helpers ---- */

/* splitmix64: a tiny, seedable generator for repeatable fault sequences. */
static uint64_t sink_rand(sink *sk)
{
    uint64_t z = (sk->rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* True with probability pct/100. No draw at all when pct is 0, so adding one random fault
 * does not change another's sequence for a given seed unless both are on. */
static bool sink_chance(sink *sk, double pct)
{
    if (pct <= 0) return false;
    if (pct >= 100) return true;
    double u = (double)(sink_rand(sk) >> 11) * (1.0 / 9007199254740992.0);
    return u * 100.0 < pct;
}

static void sink_reply(sink_session *s, const char *line)
{
    smtp_reply_line(&s->conn.out, line);
}

static void sink_set_timer(sink_session *s, double seconds)
{
    conn_timer_set(&s->conn, seconds);
}

static void sink_kill_session(sink_session *s, const char *reason)
{
    if (!s->dead) s->close_reason = reason;
    s->dead = true;
}

static void sink_start_closing(sink_session *s, const char *reason)
{
    if (s->state == SS_CLOSING || s->state == SS_LINGER) return;
    s->state = SS_CLOSING;
    s->close_reason = reason;
    sink_set_timer(s, SINK_LINGER);
}

static void sink_error_reply(sink_session *s, const char *line)
{
    sink_reply(s, line);
    if (++s->errors >= SINK_MAX_ERRORS) {
        sink_reply(s, REPLY_TOO_MANY_ERRORS);
        sink_start_closing(s, "too many errors");
    }
}

static void sink_reset_transaction(sink_session *s)
{
    sink_record_reset(s);
    s->in_mail = false;
    s->nrcpts = 0;
    s->data_bytes = 0;
}

/* ---- faults ---- */

/* The fault named by the local part of rcpt, if any; *delay_ms for "delay<N>". */
static int sink_local_part_fault(const char *rcpt, long *delay_ms)
{
    static const struct {
        const char *prefix;
        sink_fault f;
    } table[] = {
        {"defer", F_DEFER}, {"reject", F_REJECT}, {"throttle", F_THROTTLE},
        {"disconnect", F_DISCONNECT},
    };
    const char *at = strrchr(rcpt, '@');
    size_t local_len = at ? (size_t)(at - rcpt) : strlen(rcpt);
    const char *lp = rcpt;
    if (local_len && lp[0] == '"') {     /* "defer x"@d: look inside the quotes */
        lp++;
        local_len--;
    }
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        size_t n = strlen(table[i].prefix);
        if (local_len >= n && strncasecmp(lp, table[i].prefix, n) == 0) return (int)table[i].f;
    }
    if (local_len > 5 && strncasecmp(lp, "delay", 5) == 0 && lp[5] >= '0' && lp[5] <= '9') {
        long ms = 0;
        for (size_t i = 5; i < local_len && lp[i] >= '0' && lp[i] <= '9'; i++) {
            ms = ms * 10 + (lp[i] - '0');
            if (ms > 3600L * 1000) ms = 3600L * 1000;
        }
        *delay_ms = ms;
        return F_DELAY;
    }
    return -1;
}

/* Puts the session on hold: its reply `line` goes out after ms milliseconds. */
static void sink_hold_reply(sink_session *s, hold_kind kind, const char *line, long ms)
{
    s->state = SS_HOLD;
    s->hold_kind = kind;
    s->held_reply = util_strdup(line);
    ev_timer_set(&s->hold, (double)ms / 1000.0, 0);
    ev_timer_start(s->sk->loop, &s->hold);
}

/* ---- commands ---- */

static void sink_cmd_ehlo(sink_session *s, const smtp_cmd *c, bool ehlo)
{
    if (c->arg_len == 0) {
        sink_error_reply(s, ehlo ? "501 5.5.4 Syntax: EHLO hostname"
                            : "501 5.5.4 Syntax: HELO hostname");
        return;
    }
    sink_reset_transaction(s);
    if (!ehlo) {
        smtp_reply_printf(&s->conn.out, "250 %s", s->sk->o.hostname);
        return;
    }
    char size[48];
    snprintf(size, sizeof size, "SIZE %lld", s->sk->o.max_size);
    const char *lines[7];
    size_t n = 0;
    lines[n++] = s->sk->o.hostname;
    lines[n++] = "PIPELINING";
    lines[n++] = size;
    lines[n++] = "8BITMIME";
    lines[n++] = "ENHANCEDSTATUSCODES";
    if (s->sk->tls && !conn_tls(&s->conn)) lines[n++] = "STARTTLS";
    smtp_reply_multi(&s->conn.out, 250, lines, n);
}

static void sink_cmd_mail(sink_session *s, const smtp_cmd *c)
{
    if (s->in_mail) {
        sink_error_reply(s, REPLY_NESTED_MAIL);
        return;
    }
    char *arg = util_strndup(c->arg, c->arg_len);
    smtp_path p;
    char bad[SMTP_REPLY_MAX];
    int rc = smtp_parse_mail(arg, &p, bad);
    free(arg);
    if (rc != 0) {
        sink_error_reply(s, bad);
        return;
    }
    if (p.has_size && s->sk->o.max_size > 0 && p.size > s->sk->o.max_size) {
        sink_reply(s, REPLY_TOO_BIG);
        return;
    }
    s->in_mail = true;
    s->nrcpts = 0;
    sink_reply(s, REPLY_MAIL_OK);
}

static void sink_cmd_rcpt(sink_session *s, const smtp_cmd *c)
{
    sink *sk = s->sk;
    if (!s->in_mail) {
        sink_error_reply(s, REPLY_NEED_MAIL);
        return;
    }
    char *arg = util_strndup(c->arg, c->arg_len);
    smtp_path p;
    char bad[SMTP_REPLY_MAX];
    int rc = smtp_parse_rcpt(arg, &p, bad);
    free(arg);
    if (rc != 0) {
        sink_error_reply(s, bad);
        return;
    }
    long delay_ms = 0;
    int f = sink_local_part_fault(p.addr, &delay_ms);
    if (f < 0) {
        if (sink_chance(sk, sk->o.random_disconnect)) f = F_RANDOM_DISCONNECT;
        else if (sink_chance(sk, sk->o.random_defer)) f = F_RANDOM_DEFER;
        else if (sink_chance(sk, sk->o.random_reject)) f = F_RANDOM_REJECT;
        else if (sink_chance(sk, sk->o.random_throttle)) f = F_RANDOM_THROTTLE;
        else if (sink_chance(sk, sk->o.random_delay)) {
            f = F_RANDOM_DELAY;
            delay_ms = (long)(sink_rand(sk) % (uint64_t)(sk->o.random_delay_ms + 1));
        }
    }
    if (f >= 0) sk->faults[f]++;
    switch (f) {
    case F_DEFER:
    case F_RANDOM_DEFER:
        sink_reply(s, REPLY_DEFER);
        return;
    case F_REJECT:
    case F_RANDOM_REJECT:
        sink_reply(s, REPLY_REJECT);
        return;
    case F_THROTTLE:
    case F_RANDOM_THROTTLE:
        sink_reset_transaction(s);
        sink_reply(s, REPLY_THROTTLE);
        sink_start_closing(s, "fault throttle");
        return;
    case F_DISCONNECT:
    case F_RANDOM_DISCONNECT:
        sink_reset_transaction(s);
        sink_kill_session(s, "fault disconnect");
        return;
    case F_DELAY:
    case F_RANDOM_DELAY:
        s->nrcpts++;
        sink_hold_reply(s, HOLD_RCPT, REPLY_RCPT_OK, delay_ms);
        return;
    default:
        s->nrcpts++;
        sink_reply(s, REPLY_RCPT_OK);
        return;
    }
}

static void sink_cmd_data(sink_session *s, const smtp_cmd *c)
{
    if (!s->in_mail) {
        sink_error_reply(s, REPLY_NEED_MAIL);
        return;
    }
    if (c->arg_len) {
        sink_error_reply(s, "501 5.5.4 Syntax: DATA");
        return;
    }
    if (s->nrcpts == 0) {
        sink_reply(s, REPLY_NO_RCPTS);
        return;
    }
    s->data_bytes = 0;
    s->state = SS_DATA;
    sink_record_begin(s);
    sink_reply(s, REPLY_DATA_GO);
}

static void sink_cmd_starttls(sink_session *s, const smtp_cmd *c)
{
    if (!s->sk->tls || conn_tls(&s->conn)) {
        sink_error_reply(s, REPLY_NO_STARTTLS);
        return;
    }
    if (c->arg_len) {
        sink_error_reply(s, "501 5.5.4 Syntax: STARTTLS");
        return;
    }
    sink_reset_transaction(s);
    sink_reply(s, REPLY_TLS_GO);
    s->state = SS_TLS_WAIT;
    s->discard_input = true;             /* pipelined plaintext after STARTTLS is dropped */
    sink_set_timer(s, SINK_TLS_TIMEOUT);
}

static void sink_command_line(sink_session *s, const smtp_line *line)
{
    if (line->flags & SMTP_LINE_TOO_LONG) {
        sink_error_reply(s, REPLY_LINE_TOO_LONG);
        return;
    }
    smtp_cmd c;
    smtp_parse_command(line->text, line->len, &c);
    switch (c.verb) {
    case SMTP_CMD_HELO: sink_cmd_ehlo(s, &c, false); break;
    case SMTP_CMD_EHLO: sink_cmd_ehlo(s, &c, true); break;
    case SMTP_CMD_MAIL: sink_cmd_mail(s, &c); break;
    case SMTP_CMD_RCPT: sink_cmd_rcpt(s, &c); break;
    case SMTP_CMD_DATA: sink_cmd_data(s, &c); break;
    case SMTP_CMD_STARTTLS: sink_cmd_starttls(s, &c); break;
    case SMTP_CMD_RSET:
        sink_reset_transaction(s);
        sink_reply(s, REPLY_OK);
        break;
    case SMTP_CMD_NOOP: sink_reply(s, REPLY_OK); break;
    case SMTP_CMD_QUIT:
        sink_reset_transaction(s);
        sink_reply(s, REPLY_BYE);
        sink_start_closing(s, "quit");
        break;
    case SMTP_CMD_VRFY: sink_reply(s, "252 2.1.5 Cannot VRFY user"); break;
    case SMTP_CMD_HELP:
        sink_reply(s, "214 2.0.0 kiln-sink: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT STARTTLS");
        break;
    case SMTP_CMD_EXPN:
    case SMTP_CMD_AUTH: sink_error_reply(s, REPLY_NOT_IMPL); break;
    case SMTP_CMD_UNKNOWN: sink_error_reply(s, REPLY_UNKNOWN); break;
    }
}

/* ---- DATA ---- */

/* The 250 at the end of DATA: only now does the message count. */
static void sink_message_accepted(sink_session *s)
{
    sink *sk = s->sk;
    uint64_t r = s->nrcpts, b = s->data_bytes;
    sink_count_add(&sk->total, 1, r, b);
    sink_count_add(&s->c->n, 1, r, b);
    sink_count_add(&sk->by_listener[s->li], 1, r, b);
    s->messages++;
    sink_record_accepted(s);             /* before the 250 leaves */
    smtp_reply_printf(&s->conn.out, "250 2.0.0 Ok: queued as S%llxM%llu", (unsigned long long)s->id,
                      (unsigned long long)s->messages);
    sink_reset_transaction(s);
}

static void sink_data_end(sink_session *s)
{
    sink *sk = s->sk;
    s->state = SS_CMD;
    if (sk->o.max_size > 0 && s->data_bytes > (uint64_t)sk->o.max_size) {
        sink_reply(s, REPLY_TOO_BIG);
        sink_reset_transaction(s);
        return;
    }
    if (sk->o.delay_data_ms > 0) {
        sk->faults[F_DELAY_DATA]++;
        sink_hold_reply(s, HOLD_DATA, "", sk->o.delay_data_ms);
        return;
    }
    sink_message_accepted(s);
}

static void sink_on_hold(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sink_session *s = w->data;
    s->state = SS_CMD;
    if (s->hold_kind == HOLD_DATA) sink_message_accepted(s);
    else sink_reply(s, s->held_reply);
    free(s->held_reply);
    s->held_reply = NULL;
    sink_session_run(s);
}

/* ---- input and output (the socket and TLS mechanics are mta/conn.c's) ---- */

static bool sink_processing_input(const sink_session *s)
{
    return !s->dead && (s->state == SS_CMD || s->state == SS_DATA);
}

static void sink_process_input(sink_session *s)
{
    strbuf *in = &s->conn.in;
    size_t pos = 0;
    while (sink_processing_input(s)) {
        bool data = s->state == SS_DATA;
        smtp_line line;
        size_t discard;
        smtp_line_status st = smtp_line_next(&s->lr, in->buf + pos, in->len - pos,
                                             data ? SINK_DATA_LINE_MAX : SMTP_AUTH_LINE_MAX,
                                             &line, &discard);
        if (st == SMTP_LINE_MORE) {
            if (!discard) break;
            pos += discard;
            if (data) s->data_bytes += discard;
            continue;
        }
        pos += line.consumed;
        if (!data) {
            sink_command_line(s, &line);
        } else if (line.len == 1 && line.text[0] == '.' && !(line.flags & SMTP_LINE_TOO_LONG)) {
            sink_data_end(s);
        } else if (line.flags & SMTP_LINE_TOO_LONG) {
            s->data_bytes += line.consumed;
        } else {
            /* dot-unstuffing: a leading dot was added by the client */
            size_t dot = line.len && line.text[0] == '.';
            s->data_bytes += line.len + 2 - dot;
            sink_record_line(s, line.text + dot, line.len - dot);
        }
        if (s->discard_input) {
            s->discard_input = false;
            pos = in->len;
            s->lr = (smtp_linereader){0};
        }
    }
    strbuf_consume(in, pos);
}

static bool sink_reading_allowed(const sink_session *s)
{
    return (sink_processing_input(s) && conn_out_pending(&s->conn) < SINK_OUT_PAUSE) ||
           (!s->dead && s->state == SS_LINGER);
}

static void sink_peer_closed(sink_session *s)
{
    sink_reset_transaction(s);
    if (s->state == SS_LINGER) sink_kill_session(s, s->close_reason);
    else sink_start_closing(s, "client closed the connection");
}

static void sink_read_input(sink_session *s)
{
    for (int k = 0; k < SINK_READS_PER_EVENT && sink_reading_allowed(s); k++) {
        if (s->state == SS_LINGER) {     /* discard what the client still sends */
            conn_status st = conn_discard(&s->conn);
            if (st == CONN_AGAIN) return;
            if (st != CONN_OK) {
                sink_kill_session(s, s->close_reason);
                return;
            }
            continue;
        }
        switch (conn_read(&s->conn, NULL)) {
        case CONN_OK: break;
        case CONN_AGAIN: return;
        case CONN_EOF:
            sink_peer_closed(s);
            return;
        case CONN_ERROR:
            sink_kill_session(s, conn_tls(&s->conn) ? "TLS error" : "read error");
            return;
        }
        sink_set_timer(s, s->sk->o.timeout);
        sink_process_input(s);
    }
    if (sink_reading_allowed(s)) conn_feed(&s->conn, EV_READ);
}

static void sink_flush_output(sink_session *s)
{
    if (!s->dead && conn_flush(&s->conn, NULL) == CONN_ERROR)
        sink_kill_session(s, conn_tls(&s->conn) ? "TLS write error" : "write error");
}

static void sink_tls_step(sink_session *s)
{
    if (s->state == SS_TLS_WAIT) {
        if (conn_out_pending(&s->conn)) return;     /* the 220 leaves in plaintext first */
        conn_starttls(&s->conn, s->sk->tls, NULL);
        s->state = SS_TLS_HANDSHAKE;
    }
    switch (conn_handshake(&s->conn)) {
    case CONN_OK:
        s->state = SS_CMD;
        s->lr = (smtp_linereader){0};
        strbuf_reset(&s->conn.in);
        sink_set_timer(s, s->sk->o.timeout);
        break;
    case CONN_AGAIN: break;
    default:
        log_write(s->sk->log, KLOG_DEBUG, "sink.tls_error", "session=%llu client=%s error=%s",
                  (unsigned long long)s->id, s->c->ip, log_q(s->sk->log, conn_error(&s->conn)));
        sink_kill_session(s, "TLS handshake failed");
        break;
    }
}

/* After the last reply is written: shut the write side and read until the client closes,
 * so that unread pipelined commands do not turn our close into a reset that destroys the
 * reply the client has not read yet. */
static void sink_start_linger(sink_session *s)
{
    conn_shutdown_write(&s->conn);
    s->state = SS_LINGER;
    sink_set_timer(s, SINK_LINGER);
}

static void sink_session_run(sink_session *s)
{
    sink_flush_output(s);
    if (!s->dead && (s->state == SS_TLS_WAIT || s->state == SS_TLS_HANDSHAKE)) sink_tls_step(s);
    if (!s->dead) sink_process_input(s);
    if (!s->dead) sink_read_input(s);
    if (!s->dead) sink_flush_output(s);
    if (!s->dead && s->state == SS_TLS_WAIT && !conn_out_pending(&s->conn)) {
        sink_tls_step(s);
        if (!s->dead && s->state == SS_CMD) sink_read_input(s);
    }
    if (!s->dead && s->state == SS_CLOSING && !conn_out_pending(&s->conn)) {
        sink_start_linger(s);
        sink_read_input(s);
    }
    if (s->dead) {
        sink_session_close(s);
        return;
    }
    conn_update(&s->conn, sink_reading_allowed(s));
}

static void sink_on_session_io(void *arg, int revents)
{
    (void)revents;
    sink_session_run(arg);
}

static void sink_on_session_timer(void *arg)
{
    sink_session *s = arg;
    if (s->state == SS_CLOSING || s->state == SS_LINGER) {
        sink_kill_session(s, s->close_reason ? s->close_reason : "closing");
    } else if (s->state == SS_TLS_WAIT || s->state == SS_TLS_HANDSHAKE) {
        sink_kill_session(s, "timeout in TLS handshake");
    } else if (s->state == SS_HOLD) {
        sink_set_timer(s, s->sk->o.timeout);  /* our own delay, not the client's */
        return;
    } else {
        sink_reset_transaction(s);
        smtp_reply_printf(&s->conn.out, "421 4.4.2 %s Error: timeout exceeded", s->sk->o.hostname);
        sink_start_closing(s, "timeout");
    }
    sink_session_run(s);
}

static const conn_ops sink_session_conn_ops = {
    .on_io = sink_on_session_io, .on_timeout = sink_on_session_timer,
};

/* ---- session life cycle ---- */

static void sink_session_close(sink_session *s)
{
    sink *sk = s->sk;
    log_write(sk->log, KLOG_DEBUG, "sink.close",
              "session=%llu client=%s listener=%s reason=%s messages=%llu duration_ms=%lld",
              (unsigned long long)s->id, s->c->ip, sk->acceptor.v[s->li].name,
              log_q(sk->log, s->close_reason ? s->close_reason : "closed"),
              (unsigned long long)s->messages, (long long)(util_mono_ms() - s->started_ms));
    ev_timer_stop(sk->loop, &s->hold);
    conn_free(&s->conn);
    if (s->prev) s->prev->next = s->next;
    else sk->sessions = s->next;
    if (s->next) s->next->prev = s->prev;
    sk->nsessions--;
    s->c->current--;
    free(s->held_reply);
    sink_record_reset(s);
    free(s);
}

static void sink_session_new(sink *sk, size_t li, int fd, const conn_peer *peer)
{
    const char *lname = sk->acceptor.v[li].name;
    const char *ip = peer->ip;
    sink_client *c = sink_client_get(sk, ip);
    if (sk->o.max_conn_per_client > 0 && c->current >= sk->o.max_conn_per_client) {
        static const char msg[] = REPLY_TOO_MANY_CONN "\r\n";
        ssize_t r = send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL);
        (void)r;
        shutdown(fd, SHUT_WR);
        close(fd);
        c->rejected_connections++;
        sk->faults[F_TOO_MANY_CONNECTIONS]++;
        log_write(sk->log, KLOG_DEBUG, "sink.refuse", "client=%s listener=%s open=%d", ip,
                  lname, c->current);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sink_session *s = util_calloc(1, sizeof *s);
    s->sk = sk;
    s->li = li;
    s->c = c;
    s->id = ++sk->next_id;
    s->state = SS_CMD;
    s->started_ms = util_mono_ms();
    conn_init(&s->conn, sk->loop, &sink_session_conn_ops, s);
    conn_attach(&s->conn, fd);
    s->next = sk->sessions;
    if (sk->sessions) sk->sessions->prev = s;
    sk->sessions = s;
    sk->nsessions++;
    c->current++;
    if (c->current > c->max_concurrent) c->max_concurrent = c->current;
    c->n.connections++;
    sk->by_listener[li].connections++;
    sk->total.connections++;
    ev_init(&s->hold, sink_on_hold);
    s->hold.data = s;
    log_write(sk->log, KLOG_DEBUG, "sink.connect", "session=%llu client=%s listener=%s",
              (unsigned long long)s->id, ip, lname);
    smtp_reply_printf(&s->conn.out, "220 %s ESMTP kiln-sink", sk->o.hostname);
    sink_set_timer(s, sk->o.timeout);
    sink_session_run(s);
}

/* ---- listeners ---- */

static void sink_on_accept(void *arg, size_t index, int fd, const conn_peer *peer)
{
    sink_session_new(arg, index, fd, peer);
}

static void sink_on_accept_error(void *arg, size_t index, int err)
{
    sink *sk = arg;
    log_write(sk->log, KLOG_WARNING, "sink.accept_error", "listener=%s error=%s",
              sk->acceptor.v[index].name, log_q(sk->log, strerror(err)));
}

static const conn_acceptor_ops sink_acceptor_ops = {
    .on_accept = sink_on_accept, .on_error = sink_on_accept_error,
};

/* "host:port" or "[v6]:port" into host and port; false if malformed. */
static bool sink_split_hostport(const char *spec, char *host, size_t hostcap, char *port,
                           size_t portcap)
{
    const char *colon;
    const char *h = spec;
    size_t hl;
    if (spec[0] == '[') {
        const char *rb = strchr(spec, ']');
        if (!rb || rb[1] != ':') return false;
        h = spec + 1;
        hl = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(spec, ':');
        if (!colon) return false;
        hl = (size_t)(colon - spec);
        if (memchr(spec, ':', hl)) return false;    /* bare IPv6 needs brackets */
    }
    const char *p = colon + 1;
    if (hl == 0 || hl >= hostcap || !*p || strlen(p) >= portcap) return false;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9') return false;
    memcpy(host, h, hl);
    host[hl] = '\0';
    snprintf(port, portcap, "%s", p);
    return true;
}

static int sink_listen_on(sink *sk, const char *spec, char **err)
{
    char host[256], port[16];
    if (!sink_split_hostport(spec, host, sizeof host, port, sizeof port)) {
        *err = util_asprintf("-l %s: expected HOST:PORT or [IPV6]:PORT", spec);
        return -1;
    }
    char *why = NULL;
    if (conn_acceptor_listen(&sk->acceptor, host, port, SINK_BACKLOG, &why) == 0) return 0;
    *err = util_asprintf("-l %s: %s", spec, why);
    free(why);
    return -1;
}

/* ---- signals, start and stop ---- */

static void sink_stop(sink *sk)
{
    if (sk->stopping) return;
    sk->stopping = true;
    conn_acceptor_close(&sk->acceptor);
    /* Sessions end now: a best-effort 421 (a sink holds nothing worth waiting for). */
    while (sk->sessions) {
        sink_session *s = sk->sessions;
        if (s->state == SS_CMD || s->state == SS_DATA || s->state == SS_HOLD) {
            sink_reply(s, REPLY_SHUTDOWN);
            sink_flush_output(s);
        }
        sink_kill_session(s, "shutdown");
        sink_session_close(s);
    }
    sink_stats_write(sk);
    log_write(sk->log, KLOG_INFO, "sink.stop", "messages=%llu recipients=%llu connections=%llu",
              (unsigned long long)sk->total.messages, (unsigned long long)sk->total.recipients,
              (unsigned long long)sk->total.connections);
    ev_timer_stop(sk->loop, &sk->stats_timer);
    ev_signal_stop(sk->loop, &sk->sigusr1);
    ev_signal_stop(sk->loop, &sk->sigterm);
    ev_signal_stop(sk->loop, &sk->sigint);
    ev_break(sk->loop, EVBREAK_ALL);
}

static void sink_on_sigusr1(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    sink_stats_write(w->data);
}

static void sink_on_sigterm(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    sink_stop(w->data);
}

static void sink_on_stats_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sink_stats_write(w->data);
}

static void sink_free(sink *sk)
{
    conn_acceptor_free(&sk->acceptor);
    free(sk->by_listener);
    for (size_t h = 0; h < SINK_CLIENT_BUCKETS; h++) {
        sink_client *next;
        for (sink_client *c = sk->clients[h]; c; c = next) {
            next = c->next;
            free(c);
        }
    }
    tls_ctx_free(sk->tls);
    sink_record_close(sk);
    free(sk->o.listen);
    log_close(sk->log);
}


int main(int argc, char **argv)
{
    sink *sk = util_calloc(1, sizeof *sk);
    bool help = false;
    int rc = sink_parse_args(argc, argv, &sk->o, &help);
    if (rc != 0 || help) {
        if (help) sink_usage(stdout);
        free(sk->o.listen);
        free(sk);
        return rc;
    }
    signal(SIGPIPE, SIG_IGN);
    char *err = NULL;
    sk->log = log_open("stderr", sk->o.verbose ? KLOG_DEBUG : KLOG_INFO, &err);
    if (!sk->log) {
        fprintf(stderr, "kiln-sink: %s\n", err);
        free(err);
        free(sk->o.listen);
        free(sk);
        return 1;
    }
    sk->loop = ev_default_loop(EVFLAG_AUTO);
    conn_acceptor_init(&sk->acceptor, sk->loop, SINK_ACCEPTS_PER_EVENT, SINK_ACCEPT_BACKOFF,
                       &sink_acceptor_ops, sk);
    sk->started_ms = util_mono_ms();
    sk->rng = sk->o.seeded ? sk->o.seed
                           : ((uint64_t)util_wall_ms() << 20) ^ (uint64_t)getpid();
    if (sk->o.tls_cert) {
        sk->tls = tls_server_ctx_new(sk->o.tls_cert, sk->o.tls_key, &err);
        if (!sk->tls) rc = 1;
    }
    if (rc == 0 && !sink_record_open(sk, &err)) rc = 1;
    for (size_t i = 0; rc == 0 && i < sk->o.nlisten; i++)
        if (sink_listen_on(sk, sk->o.listen[i], &err) != 0) rc = 1;
    if (rc != 0) {
        fprintf(stderr, "kiln-sink: %s\n", err);
        free(err);
        sink_free(sk);
        free(sk);
        return 1;
    }
    sk->by_listener = util_calloc(sk->acceptor.n, sizeof *sk->by_listener);
    conn_acceptor_start(&sk->acceptor);
    ev_signal_init(&sk->sigusr1, sink_on_sigusr1, SIGUSR1);
    ev_signal_init(&sk->sigterm, sink_on_sigterm, SIGTERM);
    ev_signal_init(&sk->sigint, sink_on_sigterm, SIGINT);
    sk->sigusr1.data = sk->sigterm.data = sk->sigint.data = sk;
    ev_signal_start(sk->loop, &sk->sigusr1);
    ev_signal_start(sk->loop, &sk->sigterm);
    ev_signal_start(sk->loop, &sk->sigint);
    ev_timer_init(&sk->stats_timer, sink_on_stats_timer, sk->o.stats_interval, sk->o.stats_interval);
    sk->stats_timer.data = sk;
    if (sk->o.stats_interval > 0) ev_timer_start(sk->loop, &sk->stats_timer);
    for (size_t i = 0; i < sk->acceptor.n; i++)
        log_write(sk->log, KLOG_INFO, "sink.listen", "address=%s tls=%s", sk->acceptor.v[i].name,
                  sk->tls ? "starttls" : "none");
    log_write(sk->log, KLOG_INFO, "sink.ready", "listeners=%zu pid=%ld", sk->acceptor.n,
              (long)getpid());
    ev_run(sk->loop, 0);
    sink_free(sk);
    ev_loop_destroy(sk->loop);
    free(sk);
    return 0;
}
