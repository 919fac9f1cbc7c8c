/* accept.c — turns a received, policy-checked message into one spool batch: the stored
 * message (Received: prepended, Message-ID: added when absent) with its SES mail object,
 * its recipients, the Send event, and the outcome of every recipient settled at once:
 * suppression-list bounces and the SES mailbox simulator (Delivery, Bounce, Complaint, and
 * the RFC 3834 auto-reply of ooto@, queued as a new message through normal delivery).
 * After the commit the scheduler is told about queued recipients and the caller's callback
 * gets the message ID; nothing is acknowledged before that.
 *
 * The stored message is built in the session's DATA buffer (Received: and Message-ID:
 * inserted in place) and handed to the spool batch as it is (spool_add_message_take): the
 * body is never copied between DATA and the spool; the batch frees it once it is written.
 * The events are handed over the same way.
 *
 * When the batch fails (disk full, I/O error), nothing of the message is kept and the
 * callback says so: the session answers 451 4.3.0. A Reject event (accept_reject) has no
 * client waiting: it is a kept write, retried by the spool until it is committed. */
#include "mta/accept.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "scheduler/scheduler.h"
#include "store/spool.h"
#include "store/stats.h"
#include "mta/events.h"
#include "base/kiln.h"
#include "base/metrics.h"
#include "mta/message.h"
#include "mta/simulator.h"
#include "base/util.h"

#define DIAG_ON_ACCOUNT_LIST                                                              \
    "Amazon SES did not send the message to this address because it is on the suppression " \
    "list for your account."
#define DIAG_SUPPRESSED                                                                    \
    "Amazon SES has suppressed sending to this address because it has a recent history of " \
    "bouncing as an invalid address."
#define DIAG_SIM_BOUNCE "smtp; 550 5.1.1 user unknown"
#define SIM_SMTP_RESPONSE "250 2.6.0 Message received"
#define SIM_USER_AGENT "kiln mailbox simulator"
#define OOTO_FROM "ooto@simulator.amazonses.com"
#define OOTO_SOURCE_IP "127.0.0.1"       /* generated inside kiln */

/* Text of a UUID v4 from 16 random bytes, framed SES-style around a hex timestamp. */
void accept_new_id(char out[80], int64_t now_ms)
{
    char r[33];
    util_random_hex(r, 16);
    r[12] = '4';                                  /* version 4 */
    r[16] = "89ab"[(unsigned char)r[16] & 3];     /* RFC 4122 variant */
    snprintf(out, 80, "%016llx-%.8s-%.4s-%.4s-%.4s-%.12s-000000",
             (unsigned long long)now_ms, r, r + 8, r + 12, r + 16, r + 20);
}

/* sendingAccountId: 12 decimal digits, stable for a hostname (FNV-1a, mod 10^12). */
void accept_sending_account_id(const char *hostname, char out[16])
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (const unsigned char *p = (const unsigned char *)hostname; *p; p++) {
        unsigned c = *p >= 'A' && *p <= 'Z' ? *p + 32u : *p;
        h ^= c;
        h *= UINT64_C(1099511628211);
    }
    snprintf(out, 16, "%012llu", (unsigned long long)(h % UINT64_C(1000000000000)));
}

/* Client-supplied text going into a header: printable ASCII only (no line breaks). */
static void put_clean(strbuf *sb, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        strbuf_append(sb, c > ' ' && c < 127 && c != '(' && c != ')' ? s : "?", 1);
    }
}

/* "Name: value" + CRLF, folded at blanks so that lines stay near 78 characters. Line breaks
 * inside value (there should be none in an unfolded value) become spaces. */
static void put_field(strbuf *sb, const char *name, const char *value)
{
    strbuf_printf(sb, "%s: ", name);
    size_t col = strlen(name) + 2;
    const char *p = value;
    while (*p) {
        const char *w = p;
        while (*w == ' ' || *w == '\t') w++;
        const char *e = w;
        while (*e && *e != ' ' && *e != '\t') e++;
        size_t n = (size_t)(e - p);
        if (col + n > 78 && w > p && col > strlen(name) + 2) {
            strbuf_puts(sb, "\r\n");
            col = 0;
        }
        for (const char *c = p; c < e; c++)
            strbuf_append(sb, *c == '\r' || *c == '\n' ? " " : c, 1);
        col += n;
        p = e;
    }
    strbuf_puts(sb, "\r\n");
}

/* Where a new header field goes in data: before the empty line that ends the header
 * section; after the last field if there is none; at the top if there is no field.
 * *sep_before: data does not end its last field line; *sep_after: no empty line follows. */
static size_t header_insert_pos(const char *data, size_t len, const msg_headers *hs,
                                bool *sep_before, bool *sep_after)
{
    size_t hl = hs->header_len;
    *sep_before = *sep_after = false;
    if (hs->n == 0) {
        /* No field: data opens with the empty line (hl > 0) or directly with the body. */
        *sep_after = hl == 0;
        return 0;
    }
    if (hl >= 2 && data[hl - 1] == '\n') {
        if (data[hl - 2] == '\n') return hl - 1;
        if (hl >= 3 && data[hl - 2] == '\r' && data[hl - 3] == '\n') return hl - 2;
    }
    /* The section ends at a body line without an empty line, or at the end of data. */
    *sep_before = hl > 0 && data[hl - 1] != '\n';
    *sep_after = hl == len;
    return hl;
}

/* Turns msg (the message as received) into the message as stored, in place: Received:
 * first, then the message, with Message-ID: <id@host> added to the header section when it
 * has none. The buffer grows by exactly the bytes added (one realloc, no second copy). */
static void build_stored_in(const config *cfg, const accept_in *in, const char *id,
                            int64_t now, strbuf *msg)
{
    msg_headers hs;
    message_parse_headers(msg->buf ? msg->buf : "", msg->len, &hs);
    strbuf pre, mid;
    strbuf_init(&pre);
    strbuf_init(&mid);

    char date[40];
    util_rfc5322_date(now, date);
    const char *proto = in->protocol ? in->protocol
                      : in->tls ? (in->auth_user ? "ESMTPSA" : "ESMTPS")
                                : (in->auth_user ? "ESMTPA" : "ESMTP");
    strbuf_puts(&pre, "Received: from ");
    put_clean(&pre, in->helo && *in->helo ? in->helo : "unknown");
    strbuf_puts(&pre, " (unknown [");
    put_clean(&pre, in->client_ip ? in->client_ip : "");
    strbuf_printf(&pre, "])\r\n\tby %s (kiln) with %s id %s;\r\n\t%s\r\n", cfg->hostname, proto,
                  id, date);

    size_t pos = 0;
    if (!message_header_get(&hs, "Message-ID")) {
        bool before, after;
        pos = header_insert_pos(msg->buf ? msg->buf : "", msg->len, &hs, &before, &after);
        if (before) strbuf_puts(&mid, "\r\n");
        strbuf_printf(&mid, "Message-ID: <%s@%s>\r\n", id, cfg->hostname);
        if (after) strbuf_puts(&mid, "\r\n");
    }
    message_headers_free(&hs);

    size_t len = msg->len, add = pre.len + mid.len;
    if (len + add + 1 > msg->cap) {
        msg->buf = util_realloc(msg->buf, len + add + 1);
        msg->cap = len + add + 1;
    }
    char *b = msg->buf;
    memmove(b + add + pos, b + pos, len - pos);          /* after the insertion point */
    memmove(b + pre.len, b, pos);                         /* before it */
    memcpy(b, pre.buf, pre.len);
    if (mid.len) memcpy(b + pre.len + pos, mid.buf, mid.len);
    msg->len = len + add;
    b[msg->len] = '\0';
    strbuf_free(&pre);
    strbuf_free(&mid);
}

/* The same for a message the caller keeps: a copy is built. */
static char *build_stored(const config *cfg, const accept_in *in, const char *id, int64_t now,
                          size_t *out_len)
{
    strbuf sb;
    strbuf_init(&sb);
    strbuf_append(&sb, in->data, in->data_len);
    build_stored_in(cfg, in, id, now, &sb);
    *out_len = sb.len;
    return strbuf_steal(&sb);
}

static char *mail_object(const config *cfg, const char *id, int64_t now, const char *source,
                         char *const *rcpts, size_t nrcpts, const msg_headers *hs,
                         const char *set, const char *client_ip,
                         const accept_in *in /* its tags; NULL: none */)
{
    char acct[16];
    accept_sending_account_id(cfg->hostname, acct);
    events_mail_in mi = {
        .message_id = id,
        .timestamp_ms = now,
        .source = source,
        .sending_account_id = acct,
        .destination = rcpts,
        .ndestination = nrcpts,
        .headers = hs,
        .config_set = set,
        .source_ip = client_ip,
        .tag_names = in ? in->tag_names : NULL,
        .tag_values = in ? in->tag_values : NULL,
        .ntags = in ? in->ntags : 0,
    };
    return events_mail_json(&mi);
}

/* ---- one accepted message, as written to the batch ---- */

typedef struct accept_job {
    kiln_ctx *ctx;
    const char *set;          /* from the config the batch was written under */
    char id[80];
    char reply_id[80];        /* ooto auto-reply queued with it, or "" */
    bool queued;              /* the message has recipients left for delivery */
    size_t nrcpts;
    size_t size;
    accept_done_cb done;
    void *arg;
} accept_job;

/* A failed spool write marks the whole batch failed and the flush reports it through the
 * commit callback (ok=false), so the writes below do not look at their results. */

static void add_event(accept_job *j, char *json)
{
    (void)spool_add_event_take(j->ctx->spool, j->set, json);
}

static void add_rcpt(accept_job *j, const char *msg_id, const char *addr, spool_rcpt_state st)
{
    (void)spool_add_rcpt(j->ctx->spool, msg_id, addr, st, NULL);
}

static void bounce(accept_job *j, const char *mail, int64_t now, const char *rmta,
                   const char *rcpt, const char *subtype, const char *diag)
{
    events_rcpt_status st = {rcpt, "failed", "5.1.1", diag};
    add_event(j, events_bounce(mail, NULL, now, "Permanent", subtype, &st, 1, rmta, NULL));
    stats_count(j->ctx->spool, STATS_BOUNCES, now, 1);
}

/* First token of a field value ("auto-replied; x=y (comment)" -> "auto-replied") equals want. */
static bool first_token_is(const char *value, const char *want)
{
    while (*value == ' ' || *value == '\t') value++;
    size_t n = strcspn(value, " \t;(");
    return n == strlen(want) && strncasecmp(value, want, n) == 0;
}

/* RFC 3834 section 2: no automatic reply to null senders, to automatically submitted
 * messages, or to list and bulk mail; and none to the simulator itself (no loops). */
static bool ooto_reply_allowed(const accept_in *in, const msg_headers *hs)
{
    if (!in->mail_from || !*in->mail_from) return false;
    if (simulator_classify(in->mail_from) != SIMULATOR_NONE) return false;
    const char *as = message_header_get(hs, "Auto-Submitted");
    if (as && !first_token_is(as, "no")) return false;
    const char *prec = message_header_get(hs, "Precedence");
    if (prec && (first_token_is(prec, "bulk") || first_token_is(prec, "list") ||
                 first_token_is(prec, "junk")))
        return false;
    if (message_header_get(hs, "List-Id")) return false;
    return true;
}

/* Queues the ooto@ auto-reply to the envelope sender as a message of its own: null
 * envelope sender, Auto-Submitted: auto-replied, threaded to the original. */
static void queue_ooto_reply(accept_job *j, const accept_in *in, const msg_headers *orig,
                             int64_t now)
{
    kiln_ctx *ctx = j->ctx;
    const config *cfg = ctx->cfg;
    accept_new_id(j->reply_id, now);
    char date[40];
    util_rfc5322_date(now, date);

    strbuf sb;
    strbuf_init(&sb);
    strbuf_printf(&sb, "Received: by %s (kiln)\r\n\tid %s;\r\n\t%s\r\n", cfg->hostname,
                  j->reply_id, date);
    put_field(&sb, "From", OOTO_FROM);
    char *to = util_asprintf("<%s>", in->mail_from);
    put_field(&sb, "To", to);
    free(to);
    const char *subject = message_header_get(orig, "Subject");
    char *subj = subject && *subject ? util_asprintf("Automatic reply: %s", subject)
                                     : util_strdup("Automatic reply");
    put_field(&sb, "Subject", subj);
    free(subj);
    put_field(&sb, "Date", date);
    char *mid = util_asprintf("<%s@%s>", j->reply_id, cfg->hostname);
    put_field(&sb, "Message-ID", mid);
    free(mid);
    const char *orig_mid = message_header_get(orig, "Message-ID");
    if (orig_mid && *orig_mid) {
        put_field(&sb, "In-Reply-To", orig_mid);
        const char *refs = message_header_get(orig, "References");
        char *r = refs && *refs ? util_asprintf("%s %s", refs, orig_mid) : util_strdup(orig_mid);
        put_field(&sb, "References", r);
        free(r);
    }
    put_field(&sb, "Auto-Submitted", "auto-replied");
    put_field(&sb, "MIME-Version", "1.0");
    put_field(&sb, "Content-Type", "text/plain; charset=us-ascii");
    put_field(&sb, "Content-Transfer-Encoding", "7bit");
    strbuf_puts(&sb, "\r\n");
    strbuf_puts(&sb, "This is an automatic reply from the mailbox simulator: the recipient\r\n"
                     "is out of the office. Your message was delivered.\r\n");

    msg_headers hs;
    message_parse_headers(sb.buf, sb.len, &hs);
    char *const dest[] = {(char *)in->mail_from};
    char *mail = mail_object(cfg, j->reply_id, now, "", dest, 1, &hs, j->set,
                             OOTO_SOURCE_IP, NULL);
    spool_message m = {
        .created_ms = now,
        .config_set = j->set,
        .mail_from = "",
        .client_ip = OOTO_SOURCE_IP,
        .mail_json = mail,
        .data = sb.buf,
        .data_len = sb.len,
        .quota_count = 0,
    };
    memcpy(m.id, j->reply_id, sizeof m.id);
    message_headers_free(&hs);
    m.data = strbuf_steal(&sb);
    (void)spool_add_message_take(ctx->spool, &m);
    add_event(j, events_send(mail));
    stats_count(ctx->spool, STATS_ATTEMPTS, now, 1);
    add_rcpt(j, j->reply_id, in->mail_from, SPOOL_RCPT_QUEUED);
    free(mail);
}

/* Writes one recipient and the events of its outcome; true if it stays queued. An ooto
 * recipient sets *want_reply. */
static bool settle_rcpt(accept_job *j, const accept_in *in, size_t i, const char *mail,
                        int64_t now, const char *rmta, bool *want_reply)
{
    const char *rcpt = in->rcpts[i];
    char *const one[] = {in->rcpts[i]};
    simulator_kind kind = SIMULATOR_NONE;
    switch (in->verdicts[i]) {
    case POLICY_RCPT_ACCEPT:
        break;
    case POLICY_RCPT_SUPPRESSED:
        add_rcpt(j, j->id, rcpt, SPOOL_RCPT_BOUNCED);
        bounce(j, mail, now, rmta, rcpt, "OnAccountSuppressionList", DIAG_ON_ACCOUNT_LIST);
        return false;
    case POLICY_RCPT_SIMULATOR:
        kind = simulator_classify(rcpt);
        if (kind == SIMULATOR_NONE)
            log_write(j->ctx->log, KLOG_WARNING, "accept_not_simulator",
                      "id=%s rcpt=%s reason=%s", j->id, log_q(j->ctx->log, rcpt),
                      log_q(j->ctx->log, "not a simulator address; queued for delivery"));
        break;
    case POLICY_RCPT_REJECT:
    default:
        util_fatal("accept_message: recipient %s of %s has verdict %d (rejected recipients "
                   "are never accepted)", rcpt, j->id, (int)in->verdicts[i]);
    }
    switch (kind) {
    case SIMULATOR_NONE:
        add_rcpt(j, j->id, rcpt, SPOOL_RCPT_QUEUED);
        return true;
    case SIMULATOR_SUCCESS:
    case SIMULATOR_OOTO:
    case SIMULATOR_COMPLAINT:
        add_rcpt(j, j->id, rcpt, SPOOL_RCPT_DELIVERED);
        add_event(j, events_delivery(mail, NULL, now, 0, one, 1, SIM_SMTP_RESPONSE, rmta, NULL));
        if (kind == SIMULATOR_COMPLAINT) {
            add_event(j, events_complaint(mail, now, one, 1, "abuse", SIM_USER_AGENT, now));
            stats_count(j->ctx->spool, STATS_COMPLAINTS, now, 1);
        }
        if (kind == SIMULATOR_OOTO) *want_reply = true;
        return false;
    case SIMULATOR_BOUNCE:
        add_rcpt(j, j->id, rcpt, SPOOL_RCPT_BOUNCED);
        bounce(j, mail, now, rmta, rcpt, "General", DIAG_SIM_BOUNCE);
        return false;
    case SIMULATOR_SUPPRESSIONLIST:
        add_rcpt(j, j->id, rcpt, SPOOL_RCPT_BOUNCED);
        bounce(j, mail, now, rmta, rcpt, "Suppressed", DIAG_SUPPRESSED);
        return false;
    }
    return false;
}

static void on_commit(void *arg, bool ok, const char *err)
{
    accept_job *j = arg;
    kiln_ctx *ctx = j->ctx;
    metrics_add(ctx->metrics, "kiln_submissions_total",
                (const char *const[]){ok ? "accepted" : "rejected", ok ? "none" : "spool_error"}, 1);
    if (ok) {
        log_write(ctx->log, KLOG_INFO, "message_accepted", "id=%s rcpts=%zu size=%zu%s%s", j->id,
                  j->nrcpts, j->size, j->reply_id[0] ? " ooto_reply=" : "", j->reply_id);
        if (ctx->sched) {
            if (j->queued) scheduler_message_committed(ctx->sched, j->id);
            if (j->reply_id[0]) scheduler_message_committed(ctx->sched, j->reply_id);
        }
    }
    if (j->done) j->done(j->arg, ok, j->id, err);
    free(j);
}

/* A message handed over by another node: stored as sent, its own id and mail object, every
 * recipient queued; nothing counted or published (the first node did). */
static int accept_handed_over(accept_job *j, const accept_in *in)
{
    kiln_ctx *ctx = j->ctx;
    snprintf(j->id, sizeof j->id, "%s", in->handoff_id);
    size_t len = in->data_len;
    char *data;
    if (in->take) {
        len = in->take->len;
        data = strbuf_steal(in->take);
    } else {
        data = util_malloc(len + 1);
        memcpy(data, in->data, len);
        data[len] = '\0';
    }
    j->size = len;
    spool_message m = {
        .created_ms = in->handoff_created_ms,
        .config_set = j->set,
        .mail_from = in->mail_from,
        .client_ip = in->client_ip,
        .mail_json = in->handoff_mail_json,
        .data = data,
        .data_len = len,
        .quota_count = 0,
    };
    memcpy(m.id, j->id, sizeof m.id);
    (void)spool_add_message_take(ctx->spool, &m);
    for (size_t i = 0; i < in->nrcpts; i++)
        (void)spool_add_rcpt(ctx->spool, j->id, in->rcpts[i], SPOOL_RCPT_QUEUED, NULL);
    j->queued = in->nrcpts > 0;
    spool_on_commit(ctx->spool, on_commit, j);
    return 0;
}

int accept_message(kiln_ctx *ctx, const accept_in *in, accept_done_cb done, void *arg)
{
    const config *cfg = ctx->cfg;
    const config_set *set = config_find_set(cfg, in->config_set);
    if (!set || in->nrcpts == 0) {
        log_write(ctx->log, KLOG_ERROR, "accept_error", "set=%s rcpts=%zu reason=%s",
                  log_q(ctx->log, in->config_set), in->nrcpts,
                  log_q(ctx->log, !set ? "configuration set not in the config"
                                       : "message without recipients"));
        return -1;
    }
    int64_t now = kiln_now_ms(ctx);
    accept_job *j = util_calloc(1, sizeof *j);
    j->ctx = ctx;
    j->set = set->name;
    j->nrcpts = in->nrcpts;
    j->done = done;
    j->arg = arg;
    if (in->handoff_id) return accept_handed_over(j, in);
    accept_new_id(j->id, now);

    size_t len;
    char *data;
    if (in->take) {
        build_stored_in(cfg, in, j->id, now, in->take);
        len = in->take->len;
        data = strbuf_steal(in->take);
    } else {
        data = build_stored(cfg, in, j->id, now, &len);
    }
    j->size = len;
    msg_headers hs;
    message_parse_headers(data, len, &hs);
    char *mail = mail_object(cfg, j->id, now, in->mail_from, in->rcpts, in->nrcpts, &hs,
                             set->name, in->client_ip, in);
    spool_message m = {
        .created_ms = now,
        .config_set = set->name,
        .mail_from = in->mail_from,
        .client_ip = in->client_ip,
        .mail_json = mail,
        .data = data,
        .data_len = len,
        .quota_count = in->quota_count,
    };
    memcpy(m.id, j->id, sizeof m.id);
    (void)spool_add_message_take(ctx->spool, &m);   /* data is the batch's from here on */
    add_event(j, events_send(mail));
    stats_count(ctx->spool, STATS_ATTEMPTS, now, (int64_t)in->nrcpts);

    char *rmta = events_reporting_mta(cfg);
    bool want_reply = false;
    for (size_t i = 0; i < in->nrcpts; i++)
        if (settle_rcpt(j, in, i, mail, now, rmta, &want_reply)) j->queued = true;
    if (!j->queued) (void)spool_message_gc(ctx->spool, j->id);
    if (want_reply && ooto_reply_allowed(in, &hs)) queue_ooto_reply(j, in, &hs, now);

    free(rmta);
    free(mail);
    message_headers_free(&hs);
    spool_on_commit(ctx->spool, on_commit, j);
    return 0;
}

void accept_reject(kiln_ctx *ctx, const accept_in *in, const char *reason)
{
    const config *cfg = ctx->cfg;
    const config_set *set = in->config_set ? config_find_set(cfg, in->config_set) : NULL;
    if (!set) return;   /* no configuration set, no destination for the event */
    int64_t now = kiln_now_ms(ctx);
    char id[80];
    accept_new_id(id, now);
    msg_headers hs;
    message_parse_headers(in->data, in->data_len, &hs);
    char *mail = mail_object(cfg, id, now, in->mail_from, in->rcpts, in->nrcpts, &hs, set->name,
                             in->client_ip, in);
    /* no client waits for this commit: the event is a kept write, retried until it lands */
    spool_keep_begin(ctx->spool);
    (void)spool_add_event_take(ctx->spool, set->name, events_reject(mail, reason));
    stats_count(ctx->spool, STATS_REJECTS, now, 1);
    spool_keep_end(ctx->spool);
    log_write(ctx->log, KLOG_INFO, "message_rejected", "id=%s set=%s reason=%s", id,
              log_q(ctx->log, set->name), log_q(ctx->log, reason));
    free(mail);
    message_headers_free(&hs);
}
