/* smtp_data.c — the DATA reader of a submission session and the end of a message: lines
 * unstuffed into the session's buffer within the in-flight budget (smtp_commands.c), then
 * the end-of-message checks (size, bare LF/CR, NUL, long lines, header limits, hops, one
 * From:, verified and in-scope identities, the configuration set) and the hand-over to
 * accept.c, which takes the buffer itself. A message refused for its content gets a Reject
 * event; one refused for want of memory gets a temporary 452 and none. Pure session logic,
 * as smtp_commands.c: it changes the session and queues replies, never the socket.
 * On the feedback listener the end of a message is smtp_server_feedback_end: only size,
 * budget, long lines and header limits are checked (a report quotes whatever it bounced),
 * and mta/feedback.c commits it. */
#include "mta/smtp_session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mta/accept.h"
#include "mta/handoff.h"
#include "store/spool.h"
#include "mta/feedback.h"
#include "mta/message.h"
#include "mta/policy.h"

#define REPLY_BARE_LF "554 5.6.0 Message rejected: bare LF in message"
#define REPLY_NUL "554 5.6.0 Message rejected: NUL byte in message"
#define REPLY_LONG_LINE "554 5.6.0 Message rejected: line longer than 998 characters"
#define REPLY_BARE_CR "554 5.6.0 Message rejected: bare CR in message"
#define REPLY_TWO_FROM "554 5.6.0 Message rejected: more than one From: header"
#define REPLY_TOO_MANY_FIELDS "554 5.6.0 Message rejected: more than 1000 header fields"
#define REPLY_HEADER_TOO_LARGE "554 5.6.0 Message rejected: header section larger than 1MB"
#define REPLY_TOO_MANY_HOPS "554 5.4.6 Too many hops"
#define REPLY_NO_SET \
    "554 5.3.5 Message rejected: no X-SES-CONFIGURATION-SET header and no default_configuration_set"

static void smtp_server_reject_message(smtp_session *s, const char *line)
{
    smtp_server_log_reject(s, "data", NULL, NULL, line);
    smtp_server_reply(s, line);
    smtp_server_reset_transaction(s);
}

/* The session's transaction as accept.c takes it, for data[0..len) and configuration set. */
static accept_in smtp_server_session_accept_in(const smtp_session *s, const char *set, const char *data,
                                   size_t len)
{
    accept_in in = {
        .mail_from = s->mail_from,
        .rcpts = s->rcpts,
        .verdicts = s->verdicts,
        .nrcpts = s->nrcpts,
        .config_set = set,
        .client_ip = s->client_ip,
        .helo = s->helo,
        .tls = conn_tls(&s->conn) != NULL,
        .auth_user = s->auth_user,
        .data = data,
        .data_len = len,
        .quota_count = s->reserved,
        .tag_names = s->tags.names,
        .tag_values = s->tags.values,
        .ntags = s->tags.n,
    };
    return in;
}

/* Hands the message (the session's buffer, taken) to accept.c; the 250 comes with the
 * commit (smtp_server_on_accepted). */
static void smtp_server_commit(smtp_session *s, accept_in *in)
{
    in->take = &s->data;
    s->state = ST_COMMIT;
    s->commit_pending = true;
    conn_timer_stop(&s->conn);
    int rc = accept_message(s->ctx, in, smtp_server_on_accepted, s);
    /* accept_message took the buffer (it is empty now) and handed it to the spool's batch,
     * which holds it until the writer thread wrote it: its bytes stay counted against the
     * budget until the commit callback (smtp_server_free_transaction gives them back). */
    if (rc != 0) {
        smtp_server_data_release(s);
        s->commit_pending = false;
        s->state = ST_READY;
        smtp_server_set_timer(s, SMTP_SERVER_COMMAND_TIMEOUT);
        log_write(s->ctx->log, KLOG_ERROR, "smtp.error",
                  "session=%llu client=%s stage=data error=\"message could not be queued\"",
                  (unsigned long long)s->id, s->client_ip);
        smtp_server_reject_message(s, REPLY_STORE_FAILED);
    }
}

/* The end of a handoff from another node (s->cluster_peer, mta/handoff.h): the message is
 * stored as that node sent it, under its id, set and mail object, with X-Kiln-Handoff
 * removed; an id this node holds already is answered 250 without storing it twice. */
static void smtp_server_handoff_end(smtp_session *s, msg_headers *hs)
{
    const char *v = message_header_get(hs, HANDOFF_HEADER);
    handoff_info hi;
    char *err = NULL;
    char *line = NULL;
    if (!v) {
        line = util_strdup("554 5.6.0 A handoff without " HANDOFF_HEADER);
    } else if (handoff_parse(v, &hi, &err) != 0) {
        line = util_asprintf("554 5.6.0 %s", err);
        free(err);
    } else if (strcmp(hi.node, s->cluster_peer) != 0) {
        line = util_asprintf("554 5.7.1 A handoff from node %s on node %s's credential", hi.node,
                             s->cluster_peer);
        handoff_info_free(&hi);
    } else if (!config_find_set(s->cfg, hi.set)) {
        line = util_asprintf("554 5.0.0 Configuration set does not exist: %s", hi.set);
        handoff_info_free(&hi);
    }
    message_headers_free(hs);
    if (line) {
        smtp_server_reject_message(s, line);
        free(line);
        return;
    }
    spool_loaded held;
    memset(&held, 0, sizeof held);
    if (spool_load_message(s->ctx->spool, hi.id, &held) == 0) {
        spool_loaded_free(&held);
        log_write(s->ctx->log, KLOG_INFO, "cluster.handoff_duplicate", "id=%s from=%s", hi.id,
                  log_q(s->ctx->log, hi.node));
        char *ok = util_asprintf("250 2.0.0 Ok %s (held already)", hi.id);
        smtp_server_reply(s, ok);
        free(ok);
        smtp_server_reset_transaction(s);
        handoff_info_free(&hi);
        return;
    }
    s->data.len = message_strip_header(s->data.buf, s->data.len, HANDOFF_HEADER);
    s->data.buf[s->data.len] = '\0';
    char *mail = handoff_tag_mail(hi.mail_json, hi.node);
    s->set_name = util_strdup(config_find_set(s->cfg, hi.set)->name);
    accept_in in = smtp_server_session_accept_in(s, s->set_name, s->data.buf, s->data.len);
    in.handoff_id = hi.id;
    in.handoff_created_ms = hi.created_ms;
    in.handoff_mail_json = mail;
    in.quota_count = 0;
    log_write(s->ctx->log, KLOG_INFO, "cluster.handoff_in", "id=%s from=%s rcpts=%zu set=%s",
              hi.id, log_q(s->ctx->log, hi.node), s->nrcpts, log_q(s->ctx->log, s->set_name));
    smtp_server_commit(s, &in);
    free(mail);
    handoff_info_free(&hi);
}

/* The X-SES-CONFIGURATION-SET value without trailing blanks (malloc'd), or NULL if absent. */
static char *smtp_server_header_set_name(const msg_headers *hs)
{
    const char *hdr = message_header_get(hs, "X-SES-CONFIGURATION-SET");
    if (!hdr) return NULL;
    size_t n = strlen(hdr);
    while (n && (hdr[n - 1] == ' ' || hdr[n - 1] == '\t')) n--;
    return util_strndup(hdr, n);
}

/* A message refused for its content after its data arrived: a Reject event for its
 * configuration set (the header's when it names a known set, else the default), then the
 * 5xx reply. */
static void smtp_server_reject_content(smtp_session *s, const char *line)
{
    const config *cfg = s->cfg;
    const char *data = s->data.buf ? s->data.buf : "";
    msg_headers hs;
    message_parse_headers(data, s->data.len, &hs);
    char *name = smtp_server_header_set_name(&hs);
    const char *set = !name ? cfg->default_set : config_find_set(cfg, name) ? name : NULL;
    /* An authenticated user's events only go to a set it may use. */
    if (!policy_user_may_use_set(s->auth_entry, set))
        set = policy_user_may_use_set(s->auth_entry, cfg->default_set) ? cfg->default_set : NULL;
    accept_in in = smtp_server_session_accept_in(s, set, data, s->data.len);
    accept_reject(s->ctx, &in, line);
    free(name);
    message_headers_free(&hs);
    smtp_server_reject_message(s, line);
}

/* A message that did not fit in the in-flight budget: its data was dropped while it
 * arrived; a temporary failure, no Reject event (the client may retry it later). */
static void smtp_server_reject_busy(smtp_session *s)
{
    log_write(s->ctx->log, KLOG_WARNING, "smtp.busy",
              "session=%llu client=%s stage=data size=%lld inflight=%lld budget=%lld",
              (unsigned long long)s->id, s->client_ip, (long long)s->data_size,
              (long long)(s->srv ? s->srv->inflight : 0), (long long)smtp_server_budget(s));
    smtp_server_reject_message(s, REPLY_NO_MEMORY);
}

/* The header-section checks of the end of DATA that need no policy: the limits, the hop
 * count and a single From:. NULL if none fails, else the (static) reply. */
static const char *smtp_server_header_limits(const msg_headers *hs)
{
    if (hs->over_limit & MSG_HDR_TOO_MANY_FIELDS) return REPLY_TOO_MANY_FIELDS;
    if (hs->over_limit & MSG_HDR_TOO_LARGE) return REPLY_HEADER_TOO_LARGE;
    if (hs->nreceived >= MESSAGE_MAX_HOPS) return REPLY_TOO_MANY_HOPS;
    if (hs->nfrom > 1) return REPLY_TWO_FROM;
    return NULL;
}

/* A header section that ends at a line that is no field (and no empty line): end it there
 * for the next hop too, as Postfix's cleanup does, by inserting the empty line before that
 * line. Everything kiln checks, adds or strips then applies to exactly the fields the next
 * hop sees. False if the two bytes do not fit in the budget (the buffer is then gone). */
static bool smtp_server_end_header_section(smtp_session *s, msg_headers *hs)
{
    if (!hs->ended_by_body_line) return true;
    if (!smtp_server_data_reserve(s, 2)) return false;
    strbuf *d = &s->data;
    size_t at = hs->header_len;
    memmove(d->buf + at + 2, d->buf + at, d->len - at + 1);    /* with the NUL */
    memcpy(d->buf + at, "\r\n", 2);
    d->len += 2;
    hs->header_len = at + 2;
    hs->ended_by_body_line = false;
    log_write(s->ctx->log, KLOG_INFO, "smtp.header_end",
              "session=%llu client=%s offset=%zu note=\"header section ended at a non-header "
              "line: empty line inserted\"", (unsigned long long)s->id, s->client_ip, at);
    return true;
}

static void smtp_server_on_feedback_committed(void *arg, bool ok, int64_t id, const char *err)
{
    char text[32];
    snprintf(text, sizeof text, "%lld", (long long)id);
    smtp_server_on_accepted(arg, ok, text, err);
}

/* The end of a report on the feedback listener: committed to the feedback inbox before
 * the 250 (smtp_server_on_accepted answers it). */
static void smtp_server_feedback_end(smtp_session *s)
{
    if (s->data_flags & SMTP_LINE_TOO_LONG) {
        smtp_server_reject_message(s, REPLY_LONG_LINE);
        return;
    }
    msg_headers hs;      /* the size limits of the header section; a report's own From:
                            and hop count are its author's business */
    message_parse_headers(s->data.buf ? s->data.buf : "", s->data.len, &hs);
    unsigned over = hs.over_limit;
    message_headers_free(&hs);
    if (over & MSG_HDR_TOO_MANY_FIELDS) {
        smtp_server_reject_message(s, REPLY_TOO_MANY_FIELDS);
        return;
    }
    if (over & MSG_HDR_TOO_LARGE) {
        smtp_server_reject_message(s, REPLY_HEADER_TOO_LARGE);
        return;
    }
    s->state = ST_COMMIT;
    s->commit_pending = true;
    conn_timer_stop(&s->conn);
    int rc = feedback_accept(s->fb, s->client_ip, s->mail_from ? s->mail_from : "", s->rcpts,
                             s->nrcpts, s->data.buf ? s->data.buf : "", s->data.len,
                             smtp_server_on_feedback_committed, s);
    smtp_server_data_release(s);      /* feedback_accept copied what it keeps */
    if (rc != 0) {
        s->commit_pending = false;
        s->state = ST_READY;
        smtp_server_set_timer(s, SMTP_SERVER_COMMAND_TIMEOUT);
        smtp_server_reject_message(s, REPLY_STORE_FAILED);
    }
}

/* The end of DATA: checks, configuration set, then the hand-over to accept.c, which takes
 * the message buffer itself (no copy). */
static void smtp_server_data_end(smtp_session *s)
{
    const config *cfg = s->cfg;
    s->state = ST_READY;          /* until the hand-over below */
    smtp_server_set_timer(s, SMTP_SERVER_COMMAND_TIMEOUT);
    if (s->data_size > smtp_server_max_size(s)) {
        smtp_server_reject_message(s, POLICY_REPLY_TOO_LONG);
        return;
    }
    if (s->data_over_budget) {
        smtp_server_reject_busy(s);
        return;
    }
    if (s->fb) {
        smtp_server_feedback_end(s);
        return;
    }
    if (s->data_flags & SMTP_LINE_BARE_LF) {
        smtp_server_reject_content(s, REPLY_BARE_LF);
        return;
    }
    if (s->data_flags & SMTP_LINE_BARE_CR) {
        smtp_server_reject_content(s, REPLY_BARE_CR);
        return;
    }
    if (s->data_flags & SMTP_LINE_NUL) {
        smtp_server_reject_content(s, REPLY_NUL);
        return;
    }
    if (s->data_flags & SMTP_LINE_TOO_LONG) {
        smtp_server_reject_content(s, REPLY_LONG_LINE);
        return;
    }
    msg_headers hs;
    message_parse_headers(s->data.buf ? s->data.buf : "", s->data.len, &hs);
    const char *limit = smtp_server_header_limits(&hs);
    if (limit) {
        message_headers_free(&hs);
        smtp_server_reject_content(s, limit);
        return;
    }
    if (!smtp_server_end_header_section(s, &hs)) {
        message_headers_free(&hs);
        smtp_server_reject_busy(s);
        return;
    }
    if (s->cluster_peer) {
        smtp_server_handoff_end(s, &hs);
        return;
    }
    char acct[16];
    accept_sending_account_id(cfg->hostname, acct);
    char *r = policy_check_headers(cfg, &hs);
    if (!r) r = policy_check_headers_scope(cfg, s->auth_entry, acct, &hs);
    if (r) {
        message_headers_free(&hs);
        smtp_server_reject_content(s, r);
        free(r);
        return;
    }
    char *name = smtp_server_header_set_name(&hs);
    const char *set = cfg->default_set;
    if (name) {
        const config_set *cs = config_find_set(cfg, name);
        if (!cs) {
            char *shown = smtp_sanitize(name, strlen(name), 200);
            char *line = util_asprintf("554 5.0.0 Configuration set does not exist: %s", shown);
            free(shown);
            free(name);
            message_headers_free(&hs);
            smtp_server_reject_message(s, line);
            free(line);
            return;
        }
        free(name);
        set = cs->name;
        s->data.len = message_strip_header(s->data.buf, s->data.len, "X-SES-CONFIGURATION-SET");
        s->data.buf[s->data.len] = '\0';
    }
    char *tag_err = NULL;
    msgtags_free(&s->tags);
    if (msgtags_from_headers(&hs, &s->tags, &tag_err) != 0) {
        message_headers_free(&hs);
        char *line = util_asprintf("554 5.6.0 Message rejected: %s", tag_err);
        free(tag_err);
        smtp_server_reject_content(s, line);
        free(line);
        return;
    }
    if (s->tags.n) {
        s->data.len = message_strip_header(s->data.buf, s->data.len, MSGTAGS_HEADER);
        s->data.buf[s->data.len] = '\0';
    }
    message_headers_free(&hs);
    if (!set) {
        smtp_server_reject_message(s, REPLY_NO_SET);
        return;
    }
    if (!policy_user_may_use_set(s->auth_entry, set)) {
        char *line = policy_scope_reply(cfg, s->auth_user, acct, "configuration-set", set);
        smtp_server_reject_content(s, line);
        free(line);
        return;
    }
    s->set_name = util_strdup(set);
    accept_in in = smtp_server_session_accept_in(s, set, s->data.buf ? s->data.buf : "",
                                                 s->data.len);
    smtp_server_commit(s, &in);
}

void smtp_server_data_line(smtp_session *s, const smtp_line *line)
{
    /* The end is "." + CRLF after a CRLF: never LF.LF, CRLF.LF or ".\r" + something
     * (SMTP smuggling); a line holding a bare CR is never the end. */
    if (line->len == 1 && line->text[0] == '.' && line->flags == 0 && s->data_prev_crlf) {
        smtp_server_data_end(s);
        return;
    }
    s->data_prev_crlf = !(line->flags & SMTP_LINE_BARE_LF);
    s->data_flags |= line->flags;
    const char *t = line->text;
    size_t n = line->len;
    if (n && t[0] == '.') {       /* dot-unstuffing (RFC 5321 4.5.2) */
        t++;
        n--;
    }
    s->data_size += (int64_t)n + 2;
    if (s->data_size > smtp_server_max_size(s)) {
        smtp_server_data_release(s);    /* 552 at the end: nothing of it is needed */
        return;
    }
    if ((line->flags & SMTP_LINE_TOO_LONG) || s->data_over_budget) return;
    if (!smtp_server_data_reserve(s, n + 2)) {
        /* Over the budget: drop what we have, read on to the end, answer 452 there. */
        s->data_over_budget = true;
        log_write(s->ctx->log, KLOG_WARNING, "smtp.busy",
                  "session=%llu client=%s stage=data note=\"in-flight budget exhausted: "
                  "message dropped, 452 at its end\" budget=%lld",
                  (unsigned long long)s->id, s->client_ip, (long long)smtp_server_budget(s));
        return;
    }
    strbuf_append(&s->data, t, n);
    strbuf_append(&s->data, "\r\n", 2);
}
