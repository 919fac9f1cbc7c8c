/* smtp_commands.c — the commands of a submission session (EHLO/HELO, MAIL, RCPT, DATA,
 * RSET, NOOP, QUIT, VRFY, EXPN, HELP, STARTTLS), AUTH PLAIN/LOGIN (RFC 4954) and the
 * in-flight budget of message data (the DATA reader itself is smtp_data.c). Pure session logic:
 * each function changes the session (smtp_session.h) and queues replies; it never touches
 * the socket, so pipelined commands are answered in order by whatever the I/O side writes
 * next. Policy (identity, sandbox, quotas, suppression) is mta/policy.c's; persistence is
 * accept.c's, whose commit callback is smtp_server_on_accepted in smtp_server.c. NOOP, RSET,
 * VRFY, unknown commands and rejected RCPTs are junk (smtp_server_junk: too many end the
 * session with a 421). */
#include "mta/smtp_session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mta/accept.h"
#include "mta/auth.h"
#include "mta/cluster.h"
#include "mta/cluster_limits.h"
#include "mta/handoff.h"
#include "base/metrics.h"
#include "mta/feedback.h"
#include "mta/message.h"
#include "mta/quota.h"
#include "store/spool.h"

#define REPLY_TOO_MANY_ERRORS "421 4.7.0 Too many errors"
#define REPLY_SHUTDOWN "421 4.3.2 Service shutting down"
#define REPLY_UNRECOGNIZED "500 5.5.2 Command unrecognized"
#define REPLY_LINE_TOO_LONG "500 5.5.2 Line too long"
#define REPLY_NUL_IN_COMMAND "500 5.5.2 Syntax error: NUL byte in command"
#define REPLY_NEED_HELO "503 5.5.1 Bad sequence of commands: send EHLO or HELO first"
#define REPLY_NEED_EHLO "503 5.5.1 Bad sequence of commands: send EHLO first"
#define REPLY_NEED_MAIL "503 5.5.1 Bad sequence of commands: send MAIL first"
#define REPLY_NESTED_MAIL "503 5.5.1 Bad sequence of commands: nested MAIL command"
#define REPLY_NO_VALID_RCPTS "554 5.5.1 No valid recipients"
#define REPLY_RELAY_DENIED \
    "554 5.7.1 Relay access denied: client is not in submission.trusted_networks"
#define REPLY_SUPPRESSION_ERROR "451 4.3.0 Temporary failure: could not read the suppression list"
#define REPLY_DATA_GO "354 End data with <CR><LF>.<CR><LF>"
#define REPLY_STARTTLS_GO "220 2.0.0 Ready to start TLS"
#define REPLY_NO_STARTTLS "502 5.5.1 STARTTLS not available"
#define REPLY_TLS_ACTIVE "503 5.5.1 Bad sequence of commands: TLS already active"
#define REPLY_AUTH_OK "235 2.7.0 Authentication successful"
#define REPLY_AUTH_FAILED "535 5.7.8 Authentication credentials invalid"
#define REPLY_AUTH_CANCELLED "501 5.7.0 Authentication cancelled"
#define REPLY_AUTH_DECODE "501 5.5.2 Cannot decode response"
#define REPLY_AUTH_MECH "504 5.5.4 Unrecognized authentication type"
#define REPLY_AUTH_NEEDS_TLS "538 5.7.11 Encryption required for requested authentication mechanism"
#define REPLY_AUTH_UNAVAILABLE "502 5.5.1 AUTH not available"
#define REPLY_AUTH_TWICE "503 5.5.1 Bad sequence of commands: already authenticated"
#define REPLY_AUTH_BUSY "454 4.7.0 Temporary authentication failure"
#define REPLY_AUTH_BLOCKED "454 4.7.0 Too many failed authentications, try later"
#define REPLY_AUTH_IN_TXN \
    "503 5.5.1 Bad sequence of commands: AUTH not allowed during a mail transaction"
#define REPLY_OK "250 2.0.0 Ok"
#define REPLY_MAIL_OK "250 2.1.0 Ok"
#define REPLY_RCPT_OK "250 2.1.5 Ok"
#define REPLY_BYE "221 2.0.0 Bye"
#define REPLY_VRFY "252 2.1.5 Cannot VRFY user"
#define REPLY_EXPN "502 5.5.1 EXPN not available"
#define REPLY_HELP \
    "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS AUTH"

/* ---- helpers ---- */

/* ---- the message buffer and the in-flight budget ---- */

/* Growth of a message buffer: doubling up to this step, then this step at a time, so a
 * buffer is never more than one step larger than its message. */
#define SMTP_DATA_FIRST (16 * 1024)
#define SMTP_DATA_STEP (1024 * 1024)
/* DATA is refused (452) when less than this is left of the budget (a sixteenth of the
 * budget if that is less: only below the 1MB the config allows, as the fuzz target sets). */
#define SMTP_DATA_MIN_FREE (64 * 1024)

int64_t smtp_server_budget(const smtp_session *s)
{
    return s->cfg->max_inflight_bytes > 0 ? s->cfg->max_inflight_bytes
                                          : config_default_inflight_bytes(s->cfg->max_message_size);
}

/* Brings the session's share of srv->inflight to the buffer's capacity. */
static void smtp_server_data_account(smtp_session *s)
{
    if (s->srv) s->srv->inflight += (int64_t)s->data.cap - (int64_t)s->data_counted;
    s->data_counted = s->data.cap;
}

/* Frees the message buffer and gives its bytes back to the budget. */
void smtp_server_data_release(smtp_session *s)
{
    strbuf_free(&s->data);
    smtp_server_data_account(s);
}

/* Makes room for n more bytes in the message buffer within the budget; false (and the
 * buffer released) when the budget cannot hold it. */
bool smtp_server_data_reserve(smtp_session *s, size_t n)
{
    strbuf *d = &s->data;
    size_t need = d->len + n + 1;
    if (need <= d->cap) return true;
    size_t cap = d->cap ? d->cap : SMTP_DATA_FIRST;
    while (cap < need) cap += cap < SMTP_DATA_STEP ? cap : SMTP_DATA_STEP;
    int64_t after = (s->srv ? s->srv->inflight : 0) + (int64_t)(cap - s->data_counted);
    if (after > smtp_server_budget(s)) {
        smtp_server_data_release(s);
        return false;
    }
    d->buf = util_realloc(d->buf, cap);     /* exactly cap (strbuf_reserve would double) */
    if (d->cap == 0) d->buf[0] = '\0';
    d->cap = cap;
    smtp_server_data_account(s);
    return true;
}

static bool smtp_server_in_transaction(const smtp_session *s)
{
    return s->state == ST_MAIL || s->state == ST_RCPT || s->state == ST_DATA ||
           s->state == ST_COMMIT;
}

static bool smtp_server_auth_offered(const smtp_session *s)
{
    /* a cluster node takes its peers' handoffs with their credential */
    if (s->fb || !(auth_enabled(s->cfg) || s->cfg->cluster_on)) return false;
    if (conn_tls(&s->conn)) return true;
    return !s->cfg->tls_cert && s->loopback;
}

void smtp_server_reply(smtp_session *s, const char *line)
{
    smtp_reply_line(&s->conn.out, line);
}

static void smtp_server_error_reply(smtp_session *s, const char *line)
{
    smtp_server_reply(s, line);
    if (++s->errors >= SMTP_SERVER_MAX_ERRORS) {
        smtp_server_reply(s, REPLY_TOO_MANY_ERRORS);
        smtp_server_start_closing(s, "too many errors");
    }
}

void smtp_server_free_transaction(smtp_session *s, bool release)
{
    if (release && s->reserved) quota_daily_release(s->ctx->quota, s->reserved);
    s->reserved = 0;
    free(s->mail_from);
    s->mail_from = NULL;
    for (size_t i = 0; i < s->nrcpts; i++) free(s->rcpts[i]);
    free(s->rcpts);
    free(s->verdicts);
    s->rcpts = NULL;
    s->verdicts = NULL;
    s->nrcpts = s->rcpts_cap = 0;
    smtp_server_data_release(s);
    s->data_size = 0;
    s->data_flags = 0;
    s->data_over_budget = false;
    free(s->set_name);
    s->set_name = NULL;
    msgtags_free(&s->tags);
}

/* Ends the transaction (RSET, EHLO, rejection, abort): reservations go back to the quota. */
void smtp_server_reset_transaction(smtp_session *s)
{
    smtp_server_free_transaction(s, true);
    if (smtp_server_in_transaction(s) || s->state == ST_AUTH) s->state = ST_READY;
}

void smtp_server_log_reject(smtp_session *s, const char *stage, const char *from, const char *rcpt,
                            const char *line)
{
    klog *lg = s->ctx->log;
    if (!from) from = s->mail_from ? s->mail_from : "";
    if (!s->fb) {   /* by stage and reply code, e.g. rcpt_554: a bounded set kiln answers */
        char reason[16];
        snprintf(reason, sizeof reason, "%s_%.3s", stage, line ? line : "");
        metrics_add(s->ctx->metrics, "kiln_submissions_total",
                    (const char *const[]){"rejected", reason}, 1);
    }
    log_write(lg, KLOG_INFO, "smtp.reject",
              "session=%llu client=%s stage=%s from=%s%s%s reply=%s", (unsigned long long)s->id,
              s->client_ip, stage, log_q(lg, from),
              rcpt ? " rcpt=" : "", rcpt ? log_q(lg, rcpt) : "", log_q(lg, line));
}

/* After each command and each transaction end: during a graceful stop a session that is
 * not inside a transaction gets 421 and is closed. */
void smtp_server_check_shutdown(smtp_session *s)
{
    if (!s->srv || !s->srv->shutting_down) return;
    if (s->state == ST_GREET || s->state == ST_READY || s->state == ST_AUTH) {
        smtp_server_reply(s, REPLY_SHUTDOWN);
        smtp_server_start_closing(s, "shutdown");
    }
}

/* ---- commands ---- */

static void smtp_server_cmd_helo(smtp_session *s, const smtp_cmd *c, bool ehlo)
{
    char *arg = util_strndup(c->arg, c->arg_len);
    if (!smtp_helo_valid(arg)) {
        free(arg);
        smtp_server_error_reply(s, ehlo ? "501 5.5.4 Syntax: EHLO hostname"
                            : "501 5.5.4 Syntax: HELO hostname");
        return;
    }
    smtp_server_reset_transaction(s);
    free(s->helo);
    s->helo = arg;
    s->esmtp = ehlo;
    s->state = ST_READY;
    const config *cfg = s->cfg;
    if (!ehlo) {
        smtp_reply_printf(&s->conn.out, "250 %s", cfg->hostname);
        return;
    }
    char size[40];
    snprintf(size, sizeof size, "SIZE %lld", (long long)smtp_server_max_size(s));
    const char *lines[8];
    size_t n = 0;
    lines[n++] = cfg->hostname;
    lines[n++] = "PIPELINING";
    lines[n++] = size;
    lines[n++] = "8BITMIME";
    lines[n++] = "ENHANCEDSTATUSCODES";
    if (s->srv->tls && !conn_tls(&s->conn)) lines[n++] = "STARTTLS";
    if (smtp_server_auth_offered(s)) lines[n++] = "AUTH PLAIN LOGIN";
    smtp_reply_multi(&s->conn.out, 250, lines, n);
}

static void smtp_server_cmd_mail(smtp_session *s, const smtp_cmd *c)
{
    if (s->state == ST_GREET) {
        smtp_server_error_reply(s, REPLY_NEED_HELO);
        return;
    }
    if (smtp_server_in_transaction(s)) {
        smtp_server_error_reply(s, REPLY_NESTED_MAIL);
        return;
    }
    const config *cfg = s->cfg;
    char *arg = util_strndup(c->arg, c->arg_len);
    smtp_path p;
    char bad[SMTP_REPLY_MAX];
    int rc = smtp_parse_mail(arg, &p, bad);
    free(arg);
    if (rc != 0) {
        smtp_server_error_reply(s, bad);
        return;
    }
    if (s->fb) {              /* feedback: any sender (bounces come from <>); RCPT decides */
        if (p.has_size && p.size > smtp_server_max_size(s)) {
            smtp_server_log_reject(s, "mail", p.addr, NULL, POLICY_REPLY_TOO_LONG);
            smtp_server_reply(s, POLICY_REPLY_TOO_LONG);
            return;
        }
        s->mail_from = util_strdup(p.addr);
        s->state = ST_MAIL;
        smtp_server_reply(s, REPLY_MAIL_OK);
        return;
    }
    if (!s->trusted && auth_enabled(cfg) && !s->auth_user) {
        smtp_server_log_reject(s, "mail", p.addr, NULL, POLICY_REPLY_AUTH_REQUIRED);
        smtp_server_error_reply(s, POLICY_REPLY_AUTH_REQUIRED);
        return;
    }
    if (!s->trusted && !auth_enabled(cfg) && !s->cluster_peer) {
        smtp_server_log_reject(s, "mail", p.addr, NULL, REPLY_RELAY_DENIED);
        smtp_server_error_reply(s, REPLY_RELAY_DENIED);
        return;
    }
    if (p.has_size && p.size > cfg->max_message_size) {
        smtp_server_log_reject(s, "mail", p.addr, NULL, POLICY_REPLY_TOO_LONG);
        smtp_server_reply(s, POLICY_REPLY_TOO_LONG);
        return;
    }
    char *r = policy_check_mail_from(cfg, p.addr);
    if (r) {
        s->mail_from = util_strdup(p.addr);     /* for the log line only */
        smtp_server_log_reject(s, "mail", p.addr, NULL, r);
        free(s->mail_from);
        s->mail_from = NULL;
        smtp_server_reply(s, r);
        free(r);
        return;
    }
    char acct[16];
    accept_sending_account_id(cfg->hostname, acct);
    r = policy_check_mail_from_scope(cfg, s->auth_entry, acct, p.addr);
    if (r) {
        smtp_server_log_reject(s, "mail", p.addr, NULL, r);
        smtp_server_reply(s, r);
        free(r);
        return;
    }
    s->mail_from = util_strdup(p.addr);
    s->state = ST_MAIL;
    smtp_server_reply(s, REPLY_MAIL_OK);
}

/* An accepted recipient joins the transaction: 250. */
static void smtp_server_add_rcpt(smtp_session *s, const char *addr, policy_rcpt_verdict v)
{
    if (s->nrcpts == s->rcpts_cap) {
        s->rcpts_cap = s->rcpts_cap ? 2 * s->rcpts_cap : 8;
        s->rcpts = util_realloc(s->rcpts, s->rcpts_cap * sizeof *s->rcpts);
        s->verdicts = util_realloc(s->verdicts, s->rcpts_cap * sizeof *s->verdicts);
    }
    s->rcpts[s->nrcpts] = util_strdup(addr);
    s->verdicts[s->nrcpts] = v;
    s->nrcpts++;
    s->state = ST_RCPT;
    smtp_server_reply(s, REPLY_RCPT_OK);
}

/* The feedback listener's RCPT: only kiln's own addresses, no quota, no policy. */
static void smtp_server_feedback_rcpt(smtp_session *s, const char *addr)
{
    const char *r = NULL;
    if (s->nrcpts >= SMTP_SERVER_FEEDBACK_MAX_RCPTS) {
        r = "452 4.5.3 Too many recipients";
    } else if (feedback_rcpt_ok(s->cfg, addr, &r) != 0) {
        smtp_server_log_reject(s, "rcpt", NULL, addr, r);
        if (!smtp_server_junk(s)) smtp_server_reply(s, r);
        return;
    }
    if (r) {
        smtp_server_log_reject(s, "rcpt", NULL, addr, r);
        smtp_server_reply(s, r);
        return;
    }
    smtp_server_add_rcpt(s, addr, POLICY_RCPT_ACCEPT);
}

/* ---- RCPT against the cluster's shared limits (mta/cluster_limits.h) ---- */

#define SMTP_LIMIT_ASKS 3          /* lease requests one RCPT may wait for */

static void smtp_server_cmd_rcpt(smtp_session *s, const smtp_cmd *c);
static void smtp_server_resume_input(smtp_session *s);

/* The lease was answered (or failed): the RCPT runs again, now against what the node
 * holds, and input resumes unless it waits once more. */
static void smtp_server_limit_answered(void *arg)
{
    smtp_session *s = arg;
    s->limit_wait = NULL;
    s->state = s->limit_prev;
    char *a = s->limit_arg;
    s->limit_arg = NULL;
    smtp_cmd c = {.verb = SMTP_CMD_RCPT, .arg = a, .arg_len = strlen(a)};
    smtp_server_cmd_rcpt(s, &c);
    free(a);
    if (s->state == ST_LIMIT_WAIT) return;
    s->limit_asks = 0;
    smtp_server_resume_input(s);
}

/* A recipient refused by the send rate or the 24 h quota on a cluster node whose quota is
 * leased: instead of the refusal, ask the account for a lease and hold the session (no
 * reading) until it is answered. false: answer the refusal now (alone, Redis down, or
 * asked often enough for this RCPT). */
static bool smtp_server_limit_wait(smtp_session *s, const smtp_cmd *c, const char *reply)
{
    bool rate = reply && strcmp(reply, POLICY_REPLY_RATE) == 0;
    bool daily = reply && strcmp(reply, POLICY_REPLY_QUOTA) == 0;
    if ((!rate && !daily) || s->limit_asks >= SMTP_LIMIT_ASKS) return false;
    cluster_limits_wait *w = cluster_limits_ask(cluster_get_limits(s->ctx->cluster), rate,
                                                daily, smtp_server_limit_answered, s);
    if (!w) return false;
    s->limit_asks++;
    s->limit_wait = w;
    s->limit_arg = util_strndup(c->arg, c->arg_len);
    s->limit_prev = s->state;
    s->state = ST_LIMIT_WAIT;
    return true;
}

void smtp_server_limit_release(smtp_session *s)
{
    if (s->limit_wait) cluster_limits_cancel(cluster_get_limits(s->ctx->cluster), s->limit_wait);
    s->limit_wait = NULL;
    free(s->limit_arg);
    s->limit_arg = NULL;
}

static void smtp_server_cmd_rcpt(smtp_session *s, const smtp_cmd *c)
{
    if (s->state != ST_MAIL && s->state != ST_RCPT) {
        smtp_server_error_reply(s, REPLY_NEED_MAIL);
        return;
    }
    char *arg = util_strndup(c->arg, c->arg_len);
    smtp_path p;
    char bad[SMTP_REPLY_MAX];
    int rc = smtp_parse_rcpt(arg, &p, bad);
    free(arg);
    if (rc != 0) {
        smtp_server_error_reply(s, bad);
        return;
    }
    for (size_t i = 0; i < s->nrcpts; i++) {
        if (strcasecmp(s->rcpts[i], p.addr) == 0) {    /* the same recipient once */
            smtp_server_reply(s, REPLY_RCPT_OK);
            return;
        }
    }
    if (s->fb) {
        smtp_server_feedback_rcpt(s, p.addr);
        return;
    }
    if (s->cluster_peer) {        /* a handoff: the first node applied every rule already */
        smtp_server_add_rcpt(s, p.addr, POLICY_RCPT_ACCEPT);
        return;
    }
    kiln_ctx *ctx = s->ctx;
    bool suppressed = false;
    if (spool_suppression_get(ctx->spool, p.addr, &suppressed, NULL, NULL) != 0) {
        log_write(ctx->log, KLOG_ERROR, "smtp.error", "session=%llu stage=rcpt error=%s",
                  (unsigned long long)s->id, log_q(ctx->log, spool_errmsg(ctx->spool)));
        smtp_server_reply(s, REPLY_SUPPRESSION_ERROR);
        return;
    }
    policy_rcpt_in in = {
        .cfg = s->cfg,
        .q = ctx->quota,
        .now_ms = kiln_now_ms(ctx),
        .accepted_so_far = s->nrcpts,
        .rcpt = p.addr,
        .suppressed = suppressed,
    };
    const char *r = NULL;
    bool owned = false;
    policy_rcpt_verdict v = policy_check_rcpt(&in, &r, &owned);
    if (v == POLICY_RCPT_REJECT && smtp_server_limit_wait(s, c, r)) {
        if (owned) free((char *)r);
        return;
    }
    if (v == POLICY_RCPT_REJECT) {
        smtp_server_log_reject(s, "rcpt", NULL, p.addr, r);
        if (smtp_server_junk(s)) {
            if (owned) free((char *)r);
            return;
        }
        smtp_server_reply(s, r);
        if (owned) free((char *)r);
        return;
    }
    if (v == POLICY_RCPT_ACCEPT || v == POLICY_RCPT_SUPPRESSED) s->reserved++;
    smtp_server_add_rcpt(s, p.addr, v);
}

static void smtp_server_cmd_data(smtp_session *s, const smtp_cmd *c)
{
    if (s->state != ST_MAIL && s->state != ST_RCPT) {
        smtp_server_error_reply(s, REPLY_NEED_MAIL);
        return;
    }
    if (c->arg_len) {
        smtp_server_error_reply(s, "501 5.5.4 Syntax: DATA");
        return;
    }
    if (s->nrcpts == 0) {
        smtp_server_log_reject(s, "data", NULL, NULL, REPLY_NO_VALID_RCPTS);
        smtp_server_reply(s, REPLY_NO_VALID_RCPTS);
        return;
    }
    int64_t budget = smtp_server_budget(s);
    int64_t min_free = budget / 16 < SMTP_DATA_MIN_FREE ? budget / 16 : SMTP_DATA_MIN_FREE;
    if (s->srv && s->srv->inflight + min_free > budget) {
        log_write(s->ctx->log, KLOG_WARNING, "smtp.busy",
                  "session=%llu client=%s inflight=%lld budget=%lld",
                  (unsigned long long)s->id, s->client_ip, (long long)s->srv->inflight,
                  (long long)smtp_server_budget(s));
        smtp_server_log_reject(s, "data", NULL, NULL, REPLY_NO_MEMORY);
        smtp_server_reply(s, REPLY_NO_MEMORY);
        return;
    }
    smtp_server_data_release(s);
    s->data_size = 0;
    s->data_flags = 0;
    s->data_over_budget = false;
    s->data_prev_crlf = true;
    s->data_started_ms = kiln_now_ms(s->ctx);
    s->state = ST_DATA;
    smtp_server_reply(s, REPLY_DATA_GO);
    smtp_server_set_timer(s, SMTP_SERVER_DATA_TIMEOUT);
}

static void smtp_server_cmd_starttls(smtp_session *s, const smtp_cmd *c)
{
    if (!s->srv->tls) {
        smtp_server_error_reply(s, REPLY_NO_STARTTLS);
        return;
    }
    if (conn_tls(&s->conn)) {
        smtp_server_error_reply(s, REPLY_TLS_ACTIVE);
        return;
    }
    if (c->arg_len) {
        smtp_server_error_reply(s, "501 5.5.4 Syntax: STARTTLS");
        return;
    }
    /* RFC 3207 4.2: forget everything learnt before TLS. */
    smtp_server_reset_transaction(s);
    free(s->helo);
    s->helo = NULL;
    s->esmtp = false;
    smtp_server_reply(s, REPLY_STARTTLS_GO);
    s->state = ST_TLS_WAIT;
    s->discard_input = true;       /* pipelined plaintext after STARTTLS is an injection */
    smtp_server_set_timer(s, SMTP_SERVER_TLS_TIMEOUT);
}

/* ---- AUTH (RFC 4954; PLAIN RFC 4616, LOGIN) ---- */

static const char *smtp_server_auth_mech_name(const smtp_session *s)
{
    return s->auth_mech == AUTH_MECH_PLAIN ? "PLAIN" : "LOGIN";
}

/* Input resumes after ST_AUTH_WAIT or ST_LIMIT_WAIT: from the loop, with the command
 * timeout armed again. */
static void smtp_server_resume_input(smtp_session *s)
{
    smtp_server_check_shutdown(s);
    if (s->state != ST_CLOSING) smtp_server_set_timer(s, SMTP_SERVER_COMMAND_TIMEOUT);
    conn_feed(&s->conn, EV_READ | EV_WRITE);
}

static void smtp_server_auth_on_delay(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    smtp_session *s = w->data;
    s->state = ST_READY;
    smtp_server_error_reply(s, REPLY_AUTH_FAILED);
    smtp_server_resume_input(s);
}

/* A failed authentication: counted for the client, answered 535 once SMTP_SERVER_AUTH_FAIL_DELAY
 * has passed since the response arrived (so the crypt time does not show either). */
static void smtp_server_auth_fail_later(smtp_session *s)
{
    const config *cfg = s->cfg;
    int n = 0;
    if (s->srv)
        n = auth_fail_record(s->srv->auth_fail, s->client_ip, cfg->auth_failures_window_ms,
                             kiln_now_ms(s->ctx));
    if (n == cfg->auth_failures_max)
        log_write(s->ctx->log, KLOG_WARNING, "smtp.auth_blocked",
                  "session=%llu client=%s failures=%d window_ms=%lld",
                  (unsigned long long)s->id, s->client_ip, n,
                  (long long)cfg->auth_failures_window_ms);
    double wait = s->srv ? s->srv->auth_fail_delay : SMTP_SERVER_AUTH_FAIL_DELAY;
    double delay = s->auth_started + wait - ev_now(s->ctx->loop);
    if (delay < 0) delay = 0;
    s->state = ST_AUTH_WAIT;
    ev_timer_set(&s->auth_delay, delay, 0.);
    ev_timer_start(s->ctx->loop, &s->auth_delay);
}

/* A good password: the session is user's (malloc'd, taken) with entry's scope. */
static void smtp_server_auth_ok(smtp_session *s, char *user, const config_auth_user *entry)
{
    klog *lg = s->ctx->log;
    s->auth_user = user;
    s->auth_entry = entry;
    smtp_server_session_authenticated(s);   /* leaves the untrusted share */
    log_write(lg, KLOG_INFO, "smtp.auth", "session=%llu client=%s mech=%s user=%s result=ok",
              (unsigned long long)s->id, s->client_ip, smtp_server_auth_mech_name(s),
              log_q(lg, user));
    s->state = ST_READY;
    smtp_server_reply(s, REPLY_AUTH_OK);
}

/* A wrong password (or unknown user): logged, counted, answered 535 later. */
static void smtp_server_auth_failed(smtp_session *s, const char *user)
{
    klog *lg = s->ctx->log;
    log_write(lg, KLOG_WARNING, "smtp.auth", "session=%llu client=%s mech=%s user=%s result=failed",
              (unsigned long long)s->id, s->client_ip, smtp_server_auth_mech_name(s),
              log_q(lg, user));
    smtp_server_auth_fail_later(s);
}

/* The pool's answer, on the loop thread (never after the session ended: release cancels). */
static void smtp_server_auth_checked(void *arg, bool ok)
{
    smtp_session *s = arg;
    char *user = s->auth_pending_user;
    s->auth_pending_user = NULL;
    s->auth_job = NULL;
    if (ok) {
        smtp_server_auth_ok(s, user, auth_find_user(s->cfg, user));
        smtp_server_resume_input(s);
        return;
    }
    smtp_server_auth_failed(s, user);
    free(user);
}

/* A complete response. An api.access_keys id with its SES SMTP password (six HMACs) is
 * checked here, on the loop, and the session is the key's, with its scope; any other user's
 * password check goes to the pool and the session waits. */
static void smtp_server_auth_finish(smtp_session *s, const char *user, const char *pass)
{
    s->auth_started = ev_now(s->ctx->loop);
    if (s->cfg->cluster_on &&
        strncmp(user, HANDOFF_USER_PREFIX, strlen(HANDOFF_USER_PREFIX)) == 0) {
        char node[72];
        if (handoff_check(cluster_secret(s->ctx->cluster), user, pass, node)) {
            free(s->cluster_peer);
            s->cluster_peer = util_strdup(node);
            smtp_server_auth_ok(s, util_strdup(user), NULL);
        } else {
            smtp_server_auth_failed(s, user);
        }
        return;
    }
    const config_access_key *key = config_find_access_key(s->cfg, user);
    if (key) {
        if (auth_access_key_check(key, s->cfg->region, pass))
            smtp_server_auth_ok(s, util_strdup(key->id), &key->scope);
        else
            smtp_server_auth_failed(s, user);
        return;
    }
    bool known = false;
    const char *hash = auth_check_hash(s->cfg, user, &known);
    if (!hash) {            /* access keys only, and user is none of them */
        smtp_server_auth_failed(s, user);
        return;
    }
    auth_job *j = s->srv ? auth_pool_submit(s->srv->auth_pool, pass, hash, known,
                                            smtp_server_auth_checked, s)
                         : NULL;
    if (!j) {
        log_write(s->ctx->log, KLOG_WARNING, "smtp.auth",
                  "session=%llu client=%s mech=%s result=busy reason=\"check queue full\"",
                  (unsigned long long)s->id, s->client_ip, smtp_server_auth_mech_name(s));
        s->state = ST_READY;
        smtp_server_error_reply(s, REPLY_AUTH_BUSY);
        return;
    }
    s->auth_job = j;
    s->auth_pending_user = util_strdup(user);
    s->state = ST_AUTH_WAIT;
}

void smtp_server_auth_init(smtp_session *s)
{
    ev_timer_init(&s->auth_delay, smtp_server_auth_on_delay, 0., 0.);
    s->auth_delay.data = s;
}

void smtp_server_auth_release(smtp_session *s)
{
    if (s->auth_job && s->srv) auth_pool_cancel(s->srv->auth_pool, s->auth_job);
    s->auth_job = NULL;
    ev_timer_stop(s->ctx->loop, &s->auth_delay);
    free(s->auth_pending_user);
    s->auth_pending_user = NULL;
}

/* Leaves an unfinished AUTH exchange. */
static void smtp_server_auth_abort(smtp_session *s)
{
    if (s->auth_login_user) explicit_bzero(s->auth_login_user, strlen(s->auth_login_user));
    free(s->auth_login_user);
    s->auth_login_user = NULL;
    s->state = ST_READY;
}

/* Bad base64 is a 501 (RFC 4954 4); well-formed base64 that is no usable answer (empty
 * name, NUL bytes, authzid of another user) is a failed authentication. */
static void smtp_server_auth_bad_response(smtp_session *s, const char *b64)
{
    size_t n;
    char *raw = auth_b64_decode(b64, &n);
    s->state = ST_READY;
    if (!raw) {
        smtp_server_error_reply(s, REPLY_AUTH_DECODE);
        return;
    }
    explicit_bzero(raw, n);
    free(raw);
    log_write(s->ctx->log, KLOG_WARNING, "smtp.auth",
              "session=%llu client=%s mech=%s result=failed reason=\"malformed response\"",
              (unsigned long long)s->id, s->client_ip, smtp_server_auth_mech_name(s));
    s->auth_started = ev_now(s->ctx->loop);
    smtp_server_auth_fail_later(s);
}

/* A PLAIN response (base64 "authzid NUL authcid NUL passwd"). */
static void smtp_server_auth_plain_response(smtp_session *s, const char *b64)
{
    char *user = NULL, *pass = NULL;
    if (auth_decode_plain(b64, &user, &pass) != 0) {
        smtp_server_auth_bad_response(s, b64);
        return;
    }
    smtp_server_auth_finish(s, user, pass);
    free(user);
    explicit_bzero(pass, strlen(pass));
    free(pass);
}

/* A LOGIN response: the username, then the password. */
static void smtp_server_auth_login_response(smtp_session *s, const char *b64)
{
    char *text = auth_decode_login(b64);
    if (!text) {
        smtp_server_auth_abort(s);
        smtp_server_auth_bad_response(s, b64);
        return;
    }
    if (!s->auth_login_user) {
        s->auth_login_user = text;
        s->state = ST_AUTH;
        smtp_server_reply(s, AUTH_LOGIN_PROMPT_PASS);
        return;
    }
    char *user = s->auth_login_user;
    s->auth_login_user = NULL;
    smtp_server_auth_finish(s, user, text);
    free(user);
    explicit_bzero(text, strlen(text));
    free(text);
}

static void smtp_server_auth_continue(smtp_session *s, const char *line)
{
    if (strcmp(line, "*") == 0) {
        smtp_server_auth_abort(s);
        smtp_server_error_reply(s, REPLY_AUTH_CANCELLED);
        return;
    }
    if (s->auth_mech == AUTH_MECH_PLAIN) smtp_server_auth_plain_response(s, line);
    else smtp_server_auth_login_response(s, line);
}

static void smtp_server_cmd_auth(smtp_session *s, const smtp_cmd *c)
{
    if (s->fb || !(auth_enabled(s->cfg) || s->cfg->cluster_on)) {
        smtp_server_error_reply(s, REPLY_AUTH_UNAVAILABLE);
        return;
    }
    if (s->state == ST_GREET || !s->esmtp) {
        smtp_server_error_reply(s, REPLY_NEED_EHLO);
        return;
    }
    if (s->auth_user) {
        smtp_server_error_reply(s, REPLY_AUTH_TWICE);
        return;
    }
    if (smtp_server_in_transaction(s)) {
        smtp_server_error_reply(s, REPLY_AUTH_IN_TXN);
        return;
    }
    if (!smtp_server_auth_offered(s)) {
        smtp_server_error_reply(s, REPLY_AUTH_NEEDS_TLS);
        return;
    }
    if (s->srv && auth_fail_blocked(s->srv->auth_fail, s->client_ip, s->cfg->auth_failures_max,
                                    s->cfg->auth_failures_window_ms, kiln_now_ms(s->ctx))) {
        log_write(s->ctx->log, KLOG_WARNING, "smtp.auth",
                  "session=%llu client=%s result=blocked reason=\"too many failures\"",
                  (unsigned long long)s->id, s->client_ip);
        smtp_server_error_reply(s, REPLY_AUTH_BLOCKED);
        return;
    }
    char *raw = util_strndup(c->arg, c->arg_len);
    char *arg = NULL, *initial = NULL;
    int split = auth_split_command(raw, &arg, &initial);
    explicit_bzero(raw, c->arg_len);
    free(raw);
    if (split != 0) {
        smtp_server_error_reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
        return;
    }
    smtp_server_auth_abort(s);                     /* no half-finished LOGIN is carried over */
    if (strcasecmp(arg, "PLAIN") == 0) {
        s->auth_mech = AUTH_MECH_PLAIN;
        if (!initial) {
            s->state = ST_AUTH;
            smtp_server_reply(s, "334 ");
        } else {
            /* "=" is an empty initial response (RFC 4954 4). */
            smtp_server_auth_plain_response(s, initial);
        }
    } else if (strcasecmp(arg, "LOGIN") == 0) {
        s->auth_mech = AUTH_MECH_LOGIN;
        if (!initial) {
            s->state = ST_AUTH;
            smtp_server_reply(s, AUTH_LOGIN_PROMPT_USER);
        } else {
            smtp_server_auth_login_response(s, initial);
        }
    } else {
        smtp_server_error_reply(s, REPLY_AUTH_MECH);
    }
    free(arg);
    if (initial) {
        explicit_bzero(initial, strlen(initial));
        free(initial);
    }
}

void smtp_server_command_line(smtp_session *s, const smtp_line *line)
{
    if (line->flags & (SMTP_LINE_TOO_LONG | SMTP_LINE_NUL)) {
        if (s->state == ST_AUTH) smtp_server_auth_abort(s);
        smtp_server_error_reply(s, line->flags & SMTP_LINE_TOO_LONG ? REPLY_LINE_TOO_LONG
                                                        : REPLY_NUL_IN_COMMAND);
        return;
    }
    /* Bare LF ends a command line too (as Postfix's default "normalize"); only DATA is strict. */
    char *text = util_strndup(line->text, line->len);
    if (s->state == ST_AUTH) {
        smtp_server_auth_continue(s, text);
        explicit_bzero(text, line->len);
        free(text);
        return;
    }
    smtp_cmd c;
    smtp_parse_command(text, line->len, &c);
    if (line->len + 2 > SMTP_COMMAND_LINE_MAX && c.verb != SMTP_CMD_AUTH) {
        smtp_server_error_reply(s, REPLY_LINE_TOO_LONG);
        free(text);
        return;
    }
    if ((c.verb == SMTP_CMD_NOOP || c.verb == SMTP_CMD_RSET || c.verb == SMTP_CMD_VRFY ||
         c.verb == SMTP_CMD_UNKNOWN) && smtp_server_junk(s)) {
        free(text);
        return;
    }
    switch (c.verb) {
    case SMTP_CMD_HELO: smtp_server_cmd_helo(s, &c, false); break;
    case SMTP_CMD_EHLO: smtp_server_cmd_helo(s, &c, true); break;
    case SMTP_CMD_MAIL: smtp_server_cmd_mail(s, &c); break;
    case SMTP_CMD_RCPT: smtp_server_cmd_rcpt(s, &c); break;
    case SMTP_CMD_DATA: smtp_server_cmd_data(s, &c); break;
    case SMTP_CMD_STARTTLS: smtp_server_cmd_starttls(s, &c); break;
    case SMTP_CMD_AUTH: smtp_server_cmd_auth(s, &c); break;
    case SMTP_CMD_RSET:
        if (c.arg_len) {
            smtp_server_error_reply(s, "501 5.5.4 Syntax: RSET");
            break;
        }
        smtp_server_reset_transaction(s);
        smtp_server_reply(s, REPLY_OK);
        break;
    case SMTP_CMD_NOOP: smtp_server_reply(s, REPLY_OK); break;
    case SMTP_CMD_QUIT:
        smtp_server_reset_transaction(s);
        smtp_server_reply(s, REPLY_BYE);
        smtp_server_start_closing(s, "quit");
        break;
    case SMTP_CMD_VRFY: smtp_server_reply(s, REPLY_VRFY); break;
    case SMTP_CMD_EXPN: smtp_server_error_reply(s, REPLY_EXPN); break;
    case SMTP_CMD_HELP: smtp_server_reply(s, REPLY_HELP); break;
    case SMTP_CMD_UNKNOWN: smtp_server_error_reply(s, REPLY_UNRECOGNIZED); break;
    }
    if (c.verb == SMTP_CMD_AUTH) explicit_bzero(text, line->len);
    free(text);
}

/* ---- DATA ---- */

