/* kiln-loadgen.c — injects N messages over M parallel SMTP connections into an SMTP server
 * and reports what happened (SPEC section 6): messages accepted, accepted messages per
 * second, latency percentiles from MAIL sent to the final 250, and the failures by reply
 * code and by kind of connection error — ending with a line that says why when every refusal
 * was an account rule such as the sandbox or the quota (loadgen_report.c).
 *
 *   kiln-loadgen -s HOST:PORT -n N -c M [--size BYTES] [--rcpts-per-msg R] [--domains D]
 *       [--domain-pattern P] [--local-part L] [--from ADDR] [--set NAME] [--rate MSGS_PER_S]
 *       [--tls] [--json] [--token-prefix P] [--timeout S] [--bind IP] [--helo NAME]
 *       [--record FILE]
 *
 * One libev loop drives M connections. Each connection greets once (EHLO, then STARTTLS and
 * EHLO again with --tls) and then sends messages one after another: MAIL, RCPT per
 * recipient and DATA in one write when the server offers PIPELINING (one at a time when it
 * does not), the message after 354, and "." — reconnecting when the server closes. Every
 * one of the N messages is attempted exactly once and ends as accepted (250 after the
 * final "."), rejected (a 4xx/5xx reply: MAIL refused, every RCPT refused, DATA refused or
 * the final reply refused; counted by "<stage> <code>") or an error (the connection broke or
 * timed out before the final reply). A connection that keeps failing (connect errors, a
 * refused greeting) retries with backoff and gives up after 10 failures in a row (3 while
 * the server has not greeted any connection yet); when every connection gave up, the
 * messages never tried are reported as not sent.
 *
 * Messages: valid RFC 5322 headers (From, To, Subject, Date, Message-ID, a unique
 * "X-Loadgen-Token: P-<n>" with n = 0..N-1, X-SES-CONFIGURATION-SET with --set, MIME-Version,
 * Content-Type), then a body of 76-character lines (CRLF) padding the whole message
 * (headers + body, before dot-stuffing) to exactly --size bytes when the headers leave room.
 * Some body lines start with "." so that dot-stuffing is exercised. Recipient k of message
 * n is L@P with "%d" in L replaced by n*R+k and "%d" in P by (n*R+k) mod D (defaults
 * "user%d" and "d%d.test", i.e. d0.test .. dD-1.test).
 *
 * Options: -s HOST:PORT the server ([IPv6]:PORT), -n N messages (1000), -c M connections
 * (10), --size BYTES (1024), --rcpts-per-msg R (1), --domains D (1), --domain-pattern P and
 * --local-part L (above), --from ADDR (envelope and From:, loadgen@example.test), --set NAME
 * (X-SES-CONFIGURATION-SET), --rate MSGS_PER_S (total, a token bucket with a burst of 20 ms
 * of messages), --tls (STARTTLS, certificate not verified), --json (the report as JSON),
 * --token-prefix P ("loadgen"), --timeout S (30: bounds every wait for a reply, a write or a
 * connect), --bind IP (source address), --helo NAME (loadgen.kiln.test), --record FILE
 * (one line per accepted message: time, token, queue id; see loadgen_report.c), -h (usage).
 * SIGINT/SIGTERM stop handing out messages; those in flight finish and the report follows.
 * Exit status: 0 when the run finished (rejections and errors included), 1 on bad usage
 * or when no message got any answer from the server (nothing could be sent).
 *
 * Files: this one (connections, transactions, message composition, rate, main),
 * loadgen_report.c (tallies and the report), loadgen_args.c (command line, -s/--bind
 * resolution), loadgen.h (the shared types). Sockets, TLS, buffers and timers are mta/conn;
 * replies and EHLO extensions are parsed by smtp_client's parsers, as kilnd's delivery
 * does. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "base/util.h"
#include "mta/conn.h"
#include "mta/smtp_client.h"
#include "mta/smtp_parse.h"
#include "mta/tls.h"
#include "tools/loadgen.h"

#define LG_MAX_FAILS 10              /* consecutive failures before a connection gives up */
#define LG_MAX_FAILS_UNGREETED 3     /* the same while no connection was ever greeted */
#define LG_BACKOFF_MAX 2.0           /* s */
#define LG_QUIT_TIMEOUT 5.0          /* s, for the 221 at the end */
#define LG_LINE 76                   /* body line length without CRLF */
#define LG_POOL_LINES 64             /* distinct body lines, cycled */

static const char *const stage_names[] = {"rset", "mail", "rcpt", "data", "dot"};

static void loadgen_conn_run(lg_conn *c);
static void loadgen_conn_fail(lg_conn *c, const char *key, bool count_failure);
static void loadgen_conn_idle(lg_conn *c);
static void loadgen_start_connect(lg_conn *c);

/* ---- small helpers ---- */

/* pattern with its first "%d" replaced by n (the rest is literal). */
static void loadgen_append_pattern(strbuf *sb, const char *pattern, long long n)
{
    const char *p = strstr(pattern, "%d");
    if (!p) {
        strbuf_puts(sb, pattern);
        return;
    }
    strbuf_append(sb, pattern, (size_t)(p - pattern));
    strbuf_printf(sb, "%lld", n);
    strbuf_puts(sb, p + 2);
}

/* Recipient k (0-based) of message msg. */
static void loadgen_append_rcpt(loadgen *lg, strbuf *sb, int64_t msg, int k)
{
    long long idx = (long long)msg * lg->o.rcpts + k;
    loadgen_append_pattern(sb, lg->o.local_part, idx);
    strbuf_puts(sb, "@");
    loadgen_append_pattern(sb, lg->o.domain_pattern, idx % lg->o.domains);
}

static void loadgen_set_timer(lg_conn *c, double s)
{
    conn_timer_set(&c->conn, s);
}

static void loadgen_stop_timer(lg_conn *c)
{
    conn_timer_stop(&c->conn);
}

static bool loadgen_messages_left(const loadgen *lg)
{
    return lg->next_msg < lg->o.n && !lg->interrupted;
}

/* ---- message composition ---- */

/* Builds the distinct body lines once: readable text, and every 8th line starting with
 * a dot so that the receiver's unstuffing is exercised. */
static void loadgen_pool_init(loadgen *lg)
{
    lg->pool = util_malloc((size_t)LG_POOL_LINES * (LG_LINE + 2));
    for (int i = 0; i < LG_POOL_LINES; i++) {
        char *l = lg->pool + (size_t)i * (LG_LINE + 2);
        char head[48];
        int hn = snprintf(head, sizeof head, "%sloadgen padding line %02d ",
                          i % 8 == 3 ? "." : "", i);
        for (int k = 0; k < LG_LINE; k++)
            l[k] = k < hn ? head[k] : (char)('a' + (i + k) % 26);
        l[LG_LINE] = '\r';
        l[LG_LINE + 1] = '\n';
    }
}

/* Appends `len` bytes of body made of lines of at most 998 characters, each with CRLF. */
static void loadgen_append_body(loadgen *lg, strbuf *sb, long long len)
{
    const long long full = LG_LINE + 2;
    if (len <= 0) return;
    if (len < 2) len = 2;                       /* one empty line is the least there is */
    long long k = len / full, r = len % full;
    long long line = 0;
    if (r == 1) {                               /* one full line becomes two shorter ones */
        k--;
        r = full + 1;
    }
    for (long long i = 0; i < k; i++, line++)
        strbuf_append(sb, lg->pool + (line % LG_POOL_LINES) * full, (size_t)full);
    while (r > 0) {
        long long part = r > full ? r / 2 : r;  /* r == full + 1: 39 + 40 */
        const char *src = lg->pool + (line % LG_POOL_LINES) * full;
        strbuf_append(sb, src, (size_t)(part - 2));
        strbuf_append(sb, "\r\n", 2);
        r -= part;
        line++;
    }
}

/* The whole message for number msg into lg->msgbuf (unstuffed, CRLF lines). */
static void loadgen_compose(loadgen *lg, int64_t msg)
{
    strbuf *sb = &lg->msgbuf;
    strbuf_reset(sb);
    char date[40];
    util_rfc5322_date(util_wall_ms(), date);
    strbuf_printf(sb, "From: <%s>\r\nTo: ", lg->o.from);
    for (int k = 0; k < lg->o.rcpts; k++) {
        strbuf_puts(sb, k ? ",\r\n <" : "<");
        loadgen_append_rcpt(lg, sb, msg, k);
        strbuf_puts(sb, ">");
    }
    const char *dom = util_addr_domain(lg->o.from);
    strbuf_printf(sb,
                  "\r\nSubject: kiln-loadgen message %lld\r\n"
                  "Date: %s\r\n"
                  "Message-ID: <%s-%lld.%s@%s>\r\n"
                  "X-Loadgen-Token: %s-%lld\r\n",
                  (long long)msg, date, lg->o.token_prefix, (long long)msg, lg->run_id,
                  *dom ? dom : "loadgen.kiln.test", lg->o.token_prefix, (long long)msg);
    if (lg->o.set) strbuf_printf(sb, "X-SES-CONFIGURATION-SET: %s\r\n", lg->o.set);
    strbuf_puts(sb, "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n");
    loadgen_append_body(lg, sb, lg->o.size - (long long)sb->len);
}

/* Appends msgbuf to out with dot-stuffing (RFC 5321 4.5.2) and the final ".". */
static void loadgen_append_stuffed(strbuf *out, const strbuf *msg)
{
    const char *p = msg->buf, *end = msg->buf + msg->len;
    strbuf_reserve(out, msg->len + msg->len / 40 + 8);
    while (p < end) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        const char *next = lf ? lf + 1 : end;
        if (*p == '.') strbuf_append(out, ".", 1);
        strbuf_append(out, p, (size_t)(next - p));
        p = next;
    }
    if (msg->len && msg->buf[msg->len - 1] != '\n') strbuf_append(out, "\r\n", 2);
    strbuf_append(out, ".\r\n", 3);
}

/* ---- outcomes ---- */

static void loadgen_msg_finish(lg_conn *c, int outcome, const char *key)
{
    loadgen *lg = c->lg;
    if (!c->msg_open) return;
    c->msg_open = false;
    if (outcome == 0) {
        lg->accepted++;
        lg->lat_us[lg->nlat++] = loadgen_now_us() - c->t_mail_us;
    } else if (outcome == 1) {
        lg->rejected++;
        loadgen_tally_add(&lg->rejected_by, key, 1);
        lg->rejected_why[c->fail_key[0] ? c->fail_why : LG_WHY_OTHER]++;
    } else {
        lg->errors++;
        loadgen_tally_add(&lg->errors_by, key, 1);
    }
    if (outcome != 2) c->fails = 0;    /* the server answered: this connection works */
    lg->t_end_us = loadgen_now_us();
}

/* ---- the run: scheduling connections and messages ---- */

static void loadgen_check_end(loadgen *lg)
{
    if (lg->live == 0) ev_break(lg->loop, EVBREAK_ALL);
}

static void loadgen_conn_close(lg_conn *c);

static void loadgen_conn_done(lg_conn *c)
{
    if (c->state == CS_DONE) return;
    ev_timer_stop(c->lg->loop, &c->retry);
    loadgen_conn_close(c);
    c->state = CS_DONE;
    c->lg->live--;
    loadgen_check_end(c->lg);
}

/* Lets a connection changed from outside its own I/O callback write and re-arm. */
static void loadgen_conn_kick(lg_conn *c)
{
    if (conn_is_open(&c->conn)) conn_feed(&c->conn, EV_WRITE);
}

/* No messages left to hand out: idle connections say QUIT, waiting ones stop. */
static void loadgen_wind_down(loadgen *lg)
{
    for (int i = 0; i < lg->o.c; i++) {
        lg_conn *c = &lg->conns[i];
        if (c->state == CS_RETRY) {
            loadgen_conn_done(c);
        } else if (c->state == CS_IDLE || c->state == CS_WAIT_TOKEN) {
            loadgen_conn_idle(c);
            loadgen_conn_kick(c);
        }
    }
}

static void loadgen_refill(loadgen *lg)
{
    int64_t t = loadgen_now_us();
    lg->tokens += (double)(t - lg->refill_us) / 1e6 * lg->o.rate;
    if (lg->tokens > lg->burst) lg->tokens = lg->burst;
    lg->refill_us = t;
}

static void loadgen_arm_rate_timer(loadgen *lg)
{
    if (ev_is_active(&lg->rate_timer)) return;
    double wait = (1.0 - lg->tokens) / lg->o.rate;
    ev_timer_set(&lg->rate_timer, wait > 0.0005 ? wait : 0.0005, 0);
    ev_timer_start(lg->loop, &lg->rate_timer);
}

/* Hands the waiting connections their tokens, in turn. */
static void loadgen_on_rate_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    loadgen *lg = w->data;
    loadgen_refill(lg);
    bool waiting = false;
    int start = lg->rate_cursor;
    for (int k = 0; k < lg->o.c; k++) {
        int i = (start + k) % lg->o.c;
        lg_conn *c = &lg->conns[i];
        if (c->state != CS_WAIT_TOKEN) continue;
        if (loadgen_messages_left(lg)) {
            if (lg->tokens < 1.0) {
                waiting = true;
                continue;
            }
            lg->tokens -= 1.0;
            c->has_token = true;
            lg->rate_cursor = (i + 1) % lg->o.c;
        }
        loadgen_conn_idle(c);            /* starts the message, or says QUIT when none is left */
        loadgen_conn_kick(c);
    }
    if (waiting) loadgen_arm_rate_timer(lg);
}

/* Appends command i of the transaction to the output. */
static void loadgen_send_command(lg_conn *c, size_t i)
{
    loadgen *lg = c->lg;
    strbuf *out = &c->conn.out;
    switch (c->stages[i]) {
    case STAGE_RSET: strbuf_puts(out, "RSET\r\n"); break;
    case STAGE_MAIL:
        strbuf_printf(out, "MAIL FROM:<%s>", lg->o.from);
        if (c->size_ext) strbuf_printf(out, " SIZE=%lld", lg->o.size);
        strbuf_puts(out, "\r\n");
        break;
    case STAGE_RCPT: {
        size_t k = i - (c->stages[0] == STAGE_RSET ? 2 : 1);
        strbuf_puts(out, "RCPT TO:<");
        loadgen_append_rcpt(lg, out, c->msg, (int)k);
        strbuf_puts(out, ">\r\n");
        break;
    }
    case STAGE_DATA: strbuf_puts(out, "DATA\r\n"); break;
    case STAGE_DOT: break;
    }
    c->next_send = i + 1;
}

static void loadgen_start_message(lg_conn *c, int64_t msg)
{
    loadgen *lg = c->lg;
    c->msg = msg;
    c->msg_open = true;
    c->mail_ok = false;
    c->rcpt_ok = 0;
    c->fail_key[0] = '\0';
    c->nstages = c->next_send = c->next_reply = 0;
    if (c->need_rset) c->stages[c->nstages++] = STAGE_RSET;
    c->need_rset = false;
    c->stages[c->nstages++] = STAGE_MAIL;
    for (int k = 0; k < lg->o.rcpts; k++) c->stages[c->nstages++] = STAGE_RCPT;
    c->stages[c->nstages++] = STAGE_DATA;
    c->state = CS_TXN;
    c->t_mail_us = loadgen_now_us();
    if (c->pipelining) {
        while (c->next_send < c->nstages) loadgen_send_command(c, c->next_send);
    } else {
        loadgen_send_command(c, 0);
    }
    loadgen_set_timer(c, lg->o.timeout);
}

/* A greeted connection without a message: start the next one, wait for a token, or QUIT. */
static void loadgen_conn_idle(lg_conn *c)
{
    loadgen *lg = c->lg;
    c->state = CS_IDLE;
    loadgen_stop_timer(c);
    if (!loadgen_messages_left(lg)) {
        c->has_token = false;
        strbuf_puts(&c->conn.out, "QUIT\r\n");
        c->state = CS_QUIT;
        loadgen_set_timer(c, lg->o.timeout < LG_QUIT_TIMEOUT ? lg->o.timeout : LG_QUIT_TIMEOUT);
        return;
    }
    if (lg->o.rate > 0 && !c->has_token) {
        loadgen_refill(lg);
        if (lg->tokens >= 1.0) {
            lg->tokens -= 1.0;
        } else {
            c->state = CS_WAIT_TOKEN;
            loadgen_arm_rate_timer(lg);
            return;
        }
    }
    c->has_token = false;
    loadgen_start_message(c, lg->next_msg++);
    if (!loadgen_messages_left(lg)) loadgen_wind_down(lg);
}

/* ---- replies ---- */

static void loadgen_fail_once(lg_conn *c, lg_stage st, int code, const char *reply, size_t len)
{
    if (c->fail_key[0]) return;
    snprintf(c->fail_key, sizeof c->fail_key, "%s %d", stage_names[st], code);
    c->fail_why = loadgen_why_of(st, code, reply, len);
}

/* The transaction is over (all expected replies read, or nothing more will be sent). */
static void loadgen_txn_over(lg_conn *c)
{
    if (c->msg_open) loadgen_msg_finish(c, 1, c->fail_key[0] ? c->fail_key : "rejected");
    loadgen_conn_idle(c);
}

static void loadgen_txn_reply(lg_conn *c, int code, const char *reply, size_t len)
{
    loadgen *lg = c->lg;
    if (c->next_reply >= c->next_send) {
        loadgen_conn_fail(c, "protocol error: unexpected reply", true);
        return;
    }
    lg_stage st = c->stages[c->next_reply++];
    bool ok = code >= 200 && code < 300;
    if (code == 421) {
        /* The server is closing the connection: this message ends here. */
        loadgen_fail_once(c, st, code, reply, len);
        loadgen_msg_finish(c, 1, c->fail_key);
        loadgen_conn_fail(c, "closed after 421", false);
        return;
    }
    switch (st) {
    case STAGE_RSET: break;
    case STAGE_MAIL:
        c->mail_ok = ok;
        if (!ok) {
            loadgen_fail_once(c, st, code, reply, len);
            if (!c->pipelining) {
                loadgen_txn_over(c);
                return;
            }
        }
        break;
    case STAGE_RCPT:
        if (!c->mail_ok) break;      /* 503s after a refused MAIL say nothing new */
        if (ok) {
            c->rcpt_ok++;
            lg->rcpts_ok++;
        } else {
            lg->rcpts_rejected++;
            if (c->rcpt_ok == 0) loadgen_fail_once(c, st, code, reply, len);
        }
        if (!c->pipelining && c->next_send == c->next_reply && c->next_send < c->nstages &&
            c->stages[c->next_send] == STAGE_DATA && c->rcpt_ok == 0) {
            c->need_rset = true;     /* MAIL accepted, no recipient: the transaction is open */
            loadgen_txn_over(c);
            return;
        }
        break;
    case STAGE_DATA:
        if (code == 354) {
            if (c->rcpt_ok > 0 && c->mail_ok) {
                c->fail_key[0] = '\0';
                loadgen_compose(lg, c->msg);
                loadgen_append_stuffed(&c->conn.out, &lg->msgbuf);
            } else {
                strbuf_puts(&c->conn.out, ".\r\n");   /* nothing to say: end the data at once */
            }
            c->stages[c->nstages++] = STAGE_DOT;
            c->next_send = c->nstages;
            c->state = CS_BODY;
            loadgen_set_timer(c, lg->o.timeout);
            return;
        }
        if (c->mail_ok) {
            c->need_rset = true;
            if (c->rcpt_ok > 0) loadgen_fail_once(c, st, code, reply, len);
        }
        loadgen_txn_over(c);
        return;
    case STAGE_DOT:
        if (ok && c->rcpt_ok > 0 && c->mail_ok) {
            loadgen_record_accepted(lg, c->msg, reply, len);
            loadgen_msg_finish(c, 0, NULL);
        } else {
            if (c->rcpt_ok > 0 && c->mail_ok) loadgen_fail_once(c, st, code, reply, len);
        }
        loadgen_txn_over(c);
        return;
    }
    /* Without pipelining the next command goes out once the previous one is answered. */
    if (c->next_send == c->next_reply && c->next_send < c->nstages) loadgen_send_command(c, c->next_send);
    loadgen_set_timer(c, lg->o.timeout);
}

/* One complete reply: its code, and its text (the reply at the front of the input, `len`
 * bytes) for the EHLO extensions. */
static void loadgen_handle_reply(lg_conn *c, int code, const char *reply, size_t len)
{
    loadgen *lg = c->lg;
    char key[64];
    switch (c->state) {
    case CS_GREETING:
        if (code != 220) {
            snprintf(key, sizeof key, "greeting %d", code);
            loadgen_conn_fail(c, key, true);
            return;
        }
        lg->ever_greeted = true;
        strbuf_printf(&c->conn.out, "EHLO %s\r\n", lg->o.helo);
        c->pipelining = c->starttls = c->size_ext = false;
        c->state = CS_EHLO;
        loadgen_set_timer(c, lg->o.timeout);
        return;
    case CS_EHLO:
        if (code != 250) {
            strbuf_printf(&c->conn.out, "HELO %s\r\n", lg->o.helo);
            c->state = CS_HELO;
            loadgen_set_timer(c, lg->o.timeout);
            return;
        }
        smtp_client_reply r;
        size_t used;
        smtp_client_caps caps;
        if (smtp_client_parse_reply(reply, len, &r, &used) != 1)
            util_fatal("kiln-loadgen: a scanned reply does not parse");
        smtp_client_parse_ehlo(&r, &caps);
        smtp_client_reply_free(&r);
        c->pipelining = caps.pipelining;
        c->starttls = caps.starttls;
        c->size_ext = caps.size;
        if (lg->o.tls && !conn_tls(&c->conn)) {
            if (!c->starttls) {
                c->hopeless = true;          /* it will not change: give up at once */
                loadgen_conn_fail(c, "server does not offer STARTTLS", true);
                return;
            }
            strbuf_puts(&c->conn.out, "STARTTLS\r\n");
            c->state = CS_STARTTLS;
            loadgen_set_timer(c, lg->o.timeout);
            return;
        }
        loadgen_conn_idle(c);
        return;
    case CS_HELO:
        if (code != 250) {
            snprintf(key, sizeof key, "helo %d", code);
            loadgen_conn_fail(c, key, true);
            return;
        }
        if (lg->o.tls) {
            c->hopeless = true;
            loadgen_conn_fail(c, "server does not offer STARTTLS", true);
            return;
        }
        loadgen_conn_idle(c);
        return;
    case CS_STARTTLS:
        if (code != 220) {
            snprintf(key, sizeof key, "starttls %d", code);
            loadgen_conn_fail(c, key, true);
            return;
        }
        strbuf_reset(&c->conn.in);
        conn_starttls(&c->conn, lg->tls, lg->host);
        c->state = CS_TLS_HANDSHAKE;
        loadgen_set_timer(c, lg->o.timeout);
        return;
    case CS_TXN:
    case CS_BODY:
        loadgen_txn_reply(c, code, reply, len);
        return;
    case CS_QUIT:
        loadgen_conn_done(c);
        return;
    default:
        /* Unsolicited (a 421 on an idle connection): the server is closing it. */
        snprintf(key, sizeof key, "unsolicited %d", code);
        loadgen_conn_fail(c, key, code != 421);
        return;
    }
}

/* Handles the complete replies in the input (smtp_client's parser: multi-line replies,
 * CRLF or bare LF, at most 64 KiB each; only the EHLO reply is copied out of the buffer).
 * Stops when a reply closed the connection or started the TLS handshake (whose bytes are
 * not SMTP replies). */
static void loadgen_process_input(lg_conn *c)
{
    strbuf *in = &c->conn.in;
    size_t pos = 0;
    while (conn_is_open(&c->conn)) {
        int code;
        size_t used;
        int pr = smtp_client_scan_reply(in->buf + pos, in->len - pos, &code, &used);
        if (pr == 0) break;
        if (pr < 0 || code < 200) {
            loadgen_conn_fail(c, "protocol error: malformed reply", true);
            return;
        }
        const char *reply = in->buf + pos;
        pos += used;
        conn_state before = c->state;
        loadgen_handle_reply(c, code, reply, used);
        if (!conn_is_open(&c->conn)) return;
        if (before != CS_TLS_HANDSHAKE && c->state == CS_TLS_HANDSHAKE) {
            strbuf_reset(in);
            return;
        }
    }
    if (conn_is_open(&c->conn)) strbuf_consume(in, pos);
}

/* ---- socket I/O (the mechanics are mta/conn.c's) ---- */

static bool loadgen_conn_reading(const lg_conn *c)
{
    return conn_is_open(&c->conn) && c->state != CS_CONNECTING &&
           c->state != CS_TLS_HANDSHAKE && c->state != CS_RETRY && c->state != CS_DONE;
}

static void loadgen_eof_or_error(lg_conn *c, const char *what)
{
    if (c->state == CS_QUIT) {
        loadgen_conn_done(c);
        return;
    }
    loadgen_conn_fail(c, what, true);
}

/* The failure kind of a read or write error, for the report. */
static const char *loadgen_io_error_kind(const lg_conn *c, bool writing)
{
    int e = conn_errno(&c->conn);
    if (conn_tls(&c->conn)) return "tls error";
    if (e == ECONNRESET || (writing && e == EPIPE)) return "connection reset";
    return writing ? "write error" : "read error";
}

static void loadgen_read_input(lg_conn *c)
{
    for (int k = 0; k < 16 && loadgen_conn_reading(c); k++) {
        switch (conn_read(&c->conn, NULL)) {
        case CONN_OK: break;
        case CONN_AGAIN: return;
        case CONN_EOF:
            loadgen_eof_or_error(c, "connection closed");
            return;
        case CONN_ERROR:
            loadgen_eof_or_error(c, loadgen_io_error_kind(c, false));
            return;
        }
        loadgen_process_input(c);
    }
}

static void loadgen_flush_output(lg_conn *c)
{
    if (conn_is_open(&c->conn) && conn_flush(&c->conn, NULL) == CONN_ERROR)
        loadgen_eof_or_error(c, loadgen_io_error_kind(c, true));
}

static void loadgen_tls_step(lg_conn *c)
{
    switch (conn_handshake(&c->conn)) {
    case CONN_OK:
        strbuf_printf(&c->conn.out, "EHLO %s\r\n", c->lg->o.helo);
        c->pipelining = c->starttls = c->size_ext = false;
        c->state = CS_EHLO;
        loadgen_set_timer(c, c->lg->o.timeout);
        break;
    case CONN_AGAIN: break;
    default: {
        char key[200];
        snprintf(key, sizeof key, "tls handshake: %s", conn_error(&c->conn));
        loadgen_conn_fail(c, key, true);
        break;
    }
    }
}

static void loadgen_connect_done(lg_conn *c)
{
    int err = conn_connected(&c->conn);
    if (err) {
        char key[128];
        snprintf(key, sizeof key, "connect: %s", strerror(err));
        loadgen_conn_fail(c, key, true);
        return;
    }
    c->state = CS_GREETING;
    loadgen_set_timer(c, c->lg->o.timeout);
}

static void loadgen_conn_run(lg_conn *c)
{
    if (!conn_is_open(&c->conn)) return;
    if (c->state == CS_CONNECTING) {
        loadgen_connect_done(c);
        if (!conn_is_open(&c->conn)) return;
    }
    loadgen_flush_output(c);
    if (conn_is_open(&c->conn) && c->state == CS_TLS_HANDSHAKE) loadgen_tls_step(c);
    if (conn_is_open(&c->conn) && c->state != CS_TLS_HANDSHAKE) loadgen_read_input(c);
    if (conn_is_open(&c->conn) && c->state == CS_TLS_HANDSHAKE) loadgen_tls_step(c);
    if (conn_is_open(&c->conn)) loadgen_flush_output(c);
    /* plaintext already decrypted inside OpenSSL will not wake the fd */
    if (loadgen_conn_reading(c) && conn_read_pending(&c->conn)) conn_feed(&c->conn, EV_READ);
    conn_update(&c->conn, loadgen_conn_reading(c));
}

static void loadgen_on_io(void *arg, int revents)
{
    (void)revents;
    loadgen_conn_run(arg);
}

static void loadgen_on_timeout(void *arg)
{
    lg_conn *c = arg;
    if (c->state == CS_QUIT) {
        loadgen_conn_done(c);
        return;
    }
    loadgen_conn_fail(c, c->state == CS_CONNECTING ? "connect: timeout" : "timeout", true);
}

static const conn_ops loadgen_conn_ops = {
    .on_io = loadgen_on_io, .on_timeout = loadgen_on_timeout,
};

/* ---- connect, fail, retry ---- */

static void loadgen_conn_close(lg_conn *c)
{
    conn_close(&c->conn, false);
    c->need_rset = false;
}

/* The connection broke (or the server ended it): the message in progress ends as an error
 * (or was already counted), then reconnect, with backoff after repeated failures. */
static void loadgen_conn_fail(lg_conn *c, const char *key, bool count_failure)
{
    loadgen *lg = c->lg;
    if (c->msg_open) loadgen_msg_finish(c, 2, key);
    else if (count_failure) loadgen_tally_add(&lg->conn_errors, key, 1);
    if (c->has_token) {                  /* unused: give it back */
        lg->tokens += 1.0;
        c->has_token = false;
    }
    loadgen_conn_close(c);
    if (count_failure) c->fails++;
    /* A server that never greeted anyone is not worth ten tries per connection. */
    int max_fails = lg->ever_greeted ? LG_MAX_FAILS : LG_MAX_FAILS_UNGREETED;
    if (!loadgen_messages_left(lg) || c->fails >= max_fails || c->hopeless) {
        if (loadgen_messages_left(lg))
            fprintf(stderr, "kiln-loadgen: connection %d gives up after %d failure(s) "
                    "(last: %s)\n", c->idx, c->fails, key);
        loadgen_conn_done(c);
        return;
    }
    double delay = 0;
    if (c->fails >= 2) {
        delay = 0.05 * pow(2, c->fails - 2);
        if (delay > LG_BACKOFF_MAX) delay = LG_BACKOFF_MAX;
    }
    c->state = CS_RETRY;
    ev_timer_set(&c->retry, delay, 0);
    ev_timer_start(lg->loop, &c->retry);
}

static void loadgen_on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    lg_conn *c = w->data;
    if (!loadgen_messages_left(c->lg)) {
        loadgen_conn_done(c);
        return;
    }
    loadgen_start_connect(c);
}

static void loadgen_start_connect(lg_conn *c)
{
    loadgen *lg = c->lg;
    char key[128];
    conn_step step;
    c->state = CS_CONNECTING;
    if (conn_connect(&c->conn, (struct sockaddr *)&lg->addr, lg->addr_len,
                     (struct sockaddr *)&lg->bind_addr, lg->bind_len, true, &step) != 0) {
        const char *why = strerror(conn_errno(&c->conn));
        if (step == CONN_STEP_SOCKET) snprintf(key, sizeof key, "socket: %s", why);
        else if (step == CONN_STEP_BIND) snprintf(key, sizeof key, "bind %s: %s", lg->o.bind, why);
        else snprintf(key, sizeof key, "connect: %s", why);
        loadgen_conn_fail(c, key, true);
        return;
    }
    loadgen_set_timer(c, lg->o.timeout);
    conn_update(&c->conn, false);
}


static void loadgen_on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    loadgen *lg = w->data;
    if (lg->interrupted) return;
    lg->interrupted = true;              /* no new messages; those in flight finish */
    loadgen_wind_down(lg);
}

int main(int argc, char **argv)
{
    loadgen *lg = util_calloc(1, sizeof *lg);
    bool help = false;
    int rc = loadgen_parse_args(argc, argv, &lg->o, &help);
    if (rc != 0 || help) {
        if (help) loadgen_usage(stdout);
        free(lg);
        return rc;
    }
    if (loadgen_resolve(lg) != 0) {
        free(lg);
        return 1;
    }
    if (loadgen_record_open(lg) != 0) {
        free(lg);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    if (lg->o.tls) {
        char *err = NULL;
        lg->tls = tls_client_ctx_new(false, &err);
        if (!lg->tls) {
            fprintf(stderr, "kiln-loadgen: %s\n", err);
            free(err);
            free(lg);
            return 1;
        }
    }
    lg->loop = ev_default_loop(EVFLAG_AUTO);
    util_random_hex(lg->run_id, 8);
    loadgen_pool_init(lg);
    strbuf_init(&lg->msgbuf);
    lg->lat_us = util_calloc((size_t)lg->o.n, sizeof *lg->lat_us);
    if (lg->o.rate > 0) {
        lg->burst = lg->o.rate / 50.0 > 1.0 ? lg->o.rate / 50.0 : 1.0;
        lg->tokens = 1.0;
        lg->refill_us = loadgen_now_us();
    }
    ev_init(&lg->rate_timer, loadgen_on_rate_timer);
    lg->rate_timer.data = lg;
    ev_signal_init(&lg->sigint, loadgen_on_signal, SIGINT);
    ev_signal_init(&lg->sigterm, loadgen_on_signal, SIGTERM);
    lg->sigint.data = lg->sigterm.data = lg;
    ev_signal_start(lg->loop, &lg->sigint);
    ev_signal_start(lg->loop, &lg->sigterm);
    lg->conns = util_calloc((size_t)lg->o.c, sizeof *lg->conns);
    lg->live = lg->o.c;
    lg->t_start_us = loadgen_now_us();
    for (int i = 0; i < lg->o.c; i++) {
        lg_conn *c = &lg->conns[i];
        c->lg = lg;
        c->idx = i;
        c->stages = util_calloc((size_t)lg->o.rcpts + 4, sizeof *c->stages);
        conn_init(&c->conn, lg->loop, &loadgen_conn_ops, c);
        ev_init(&c->retry, loadgen_on_retry);
        c->retry.data = c;
        c->state = CS_RETRY;
        ev_timer_set(&c->retry, 0, 0);
        ev_timer_start(lg->loop, &c->retry);
    }
    ev_run(lg->loop, 0);
    loadgen_report(lg);
    int status = lg->accepted + lg->rejected > 0 ? 0 : 1;
    for (int i = 0; i < lg->o.c; i++) {
        lg_conn *c = &lg->conns[i];
        loadgen_conn_close(c);
        ev_timer_stop(lg->loop, &c->retry);
        conn_free(&c->conn);
        free(c->stages);
    }
    ev_timer_stop(lg->loop, &lg->rate_timer);
    ev_signal_stop(lg->loop, &lg->sigint);
    ev_signal_stop(lg->loop, &lg->sigterm);
    ev_loop_destroy(lg->loop);
    free(lg->conns);
    free(lg->lat_us);
    free(lg->pool);
    strbuf_free(&lg->msgbuf);
    loadgen_tally_free(&lg->rejected_by);
    loadgen_tally_free(&lg->errors_by);
    loadgen_tally_free(&lg->conn_errors);
    tls_ctx_free(lg->tls);
    loadgen_record_close(lg);
    free(lg);
    return status;
}
