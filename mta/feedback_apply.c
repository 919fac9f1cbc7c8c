/* feedback_apply.c — what a committed feedback report becomes (see feedback.h): parsed by
 * mta/fbparse.c, matched to the message kiln sent, then SES events, suppression entries,
 * send statistics and the managed pools' complaint signal.
 *
 * Matching, in order: the VERP token of an envelope recipient of the report, else of the
 * quoted original's Return-Path (mta/fbtoken.h: the MAC must verify: for a one-recipient
 * token it also names the recipient); else the quoted original's X-SES-Message-ID, the
 * local part of its Message-ID (kiln's own <ID@host>), or its Message-ID as the submitter
 * wrote it. A token-less match only ever concerns addresses among the message's
 * destinations. Every report ends in exactly one feedback.* log line saying what it was,
 * what it matched and what changed, or why nothing did. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/config.h"
#include "base/log.h"
#include "base/util.h"
#include "mta/fbparse.h"
#include "mta/fbtoken.h"
#include "mta/feedback_int.h"
#include "pools/complaints.h"
#include "scheduler/scheduler.h"
#include "store/event.h"
#include "store/spool.h"
#include "store/spool_feedback.h"
#include "store/stats.h"

typedef struct feedback_msg {
    spool_sent sent;
    char **dests;            /* the mail object's destination, as written */
    size_t ndests;
    bool have_token;
    fbtoken_info tok;
    const char *token_rcpt;  /* one-recipient token: the destination its MAC names */
    const char *how;         /* "token" | "message-id" */
} feedback_msg;

static void feedback_msg_free(feedback_msg *m)
{
    spool_sent_free(&m->sent);
    for (size_t i = 0; i < m->ndests; i++) free(m->dests[i]);
    free(m->dests);
}

static void feedback_load_dests(feedback_msg *m)
{
    json_t *mail = json_loads(m->sent.mail_json ? m->sent.mail_json : "", 0, NULL);
    json_t *d = mail ? json_object_get(mail, "destination") : NULL;
    size_t n = json_is_array(d) ? json_array_size(d) : 0;
    m->dests = util_calloc(n ? n : 1, sizeof *m->dests);
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(d, i));
        if (s) m->dests[m->ndests++] = util_strdup(s);
    }
    json_decref(mail);
}

/* The destination equal to ADDR (case-insensitive), or NULL. */
static const char *feedback_dest(const feedback_msg *m, const char *addr)
{
    for (size_t i = 0; addr && i < m->ndests; i++)
        if (strcasecmp(m->dests[i], addr) == 0) return m->dests[i];
    return NULL;
}

/* Looks up kiln message ID; true when found (m->sent filled). */
static bool feedback_find_id(kiln_ctx *ctx, const char *id, feedback_msg *m)
{
    bool found = false;
    if (!id || !*id) return false;
    if (spool_sent_find(ctx->spool, id, &found, &m->sent) != 0) {
        log_write(ctx->log, KLOG_ERROR, "feedback.error", "stage=match error=%s",
                  log_q(ctx->log, spool_errmsg(ctx->spool)));
        return false;
    }
    return found;
}

/* Finds and authenticates the message the report is about. 0, or -1 and *why (malloc'd). */
static int feedback_match(kiln_ctx *ctx, const char *rcpts, const fbparse_report *r,
                          feedback_msg *m, char **why)
{
    const config *cfg = ctx->cfg;
    /* 1. a token: the envelope recipients first, then the quoted Return-Path */
    char *list = util_strdup(rcpts ? rcpts : "");
    for (char *save = NULL, *a = strtok_r(list, "\n", &save); a && !m->have_token;
         a = strtok_r(NULL, "\n", &save)) {
        const char *w = NULL;
        if (fbtoken_decode(a, &m->tok, &w) == 0) m->have_token = true;
    }
    free(list);
    if (!m->have_token && r->orig_return_path) {
        const char *w = NULL;
        if (fbtoken_decode(r->orig_return_path, &m->tok, &w) == 0) m->have_token = true;
    }
    if (m->have_token) {
        m->how = "token";
        if (!feedback_find_id(ctx, m->tok.msg_id, m)) {
            *why = util_asprintf("the bounce token names message %s, which kiln does not know "
                                 "(never sent, or older than feedback.retention)", m->tok.msg_id);
            return -1;
        }
        feedback_load_dests(m);
        if (!m->tok.one_rcpt) {
            if (!fbtoken_verify(cfg->feedback_secret, cfg->feedback_secret_len, &m->tok, NULL)) {
                *why = util_asprintf("forged bounce token for message %s: its MAC does not verify",
                                     m->tok.msg_id);
                return -1;
            }
            return 0;
        }
        for (size_t i = 0; i < m->ndests && !m->token_rcpt; i++)
            if (fbtoken_verify(cfg->feedback_secret, cfg->feedback_secret_len, &m->tok, m->dests[i]))
                m->token_rcpt = m->dests[i];
        if (!m->token_rcpt) {
            *why = util_asprintf("forged bounce token for message %s: its MAC verifies for none "
                                 "of the message's recipients", m->tok.msg_id);
            return -1;
        }
        return 0;
    }
    /* 2. the quoted original's ids */
    m->how = "message-id";
    bool found = feedback_find_id(ctx, r->orig_kiln_message_id, m);
    if (!found && r->orig_message_id) {
        char *local = util_strdup(r->orig_message_id);
        char *at = strchr(local, '@');
        if (at) *at = '\0';
        found = feedback_find_id(ctx, local, m);
        free(local);
        if (!found &&
            spool_sent_find_message_id(ctx->spool, r->orig_message_id, &found, &m->sent) != 0)
            found = false;
    }
    if (!found) {
        *why = util_asprintf("no bounce token, and no Message-ID of a message kiln sent (%s)",
                             r->orig_message_id ? r->orig_message_id : "none quoted");
        return -1;
    }
    feedback_load_dests(m);
    return 0;
}

static void feedback_log(kiln_ctx *ctx, const char *what, int64_t id, const fbparse_report *r,
                         const feedback_msg *m, const char *detail)
{
    log_write(ctx->log, strcmp(what, "dropped") == 0 ? KLOG_WARNING : KLOG_INFO,
              strcmp(what, "bounce") == 0      ? "feedback.bounce"
              : strcmp(what, "complaint") == 0 ? "feedback.complaint"
              : strcmp(what, "delayed") == 0   ? "feedback.delayed"
              : strcmp(what, "ignored") == 0   ? "feedback.ignored"
                                               : "feedback.dropped",
              "inbox_id=%lld kind=%s shape=%s id=%s match=%s %s",
              (long long)id, fbparse_kind_name(r->kind), r->shape ? r->shape : "-",
              m && m->sent.msg_id ? m->sent.msg_id : "-", m && m->how ? m->how : "-", detail);
}

/* A DSN's failed recipients that concern the message, as events_rcpt_status. */
static size_t feedback_bounced(const fbparse_report *r, const feedback_msg *m,
                               events_rcpt_status *st, const fbparse_rcpt **blk, size_t *nfailed)
{
    size_t n = 0;
    *nfailed = 0;
    for (size_t i = 0; i < r->nrcpts; i++)
        if (r->rcpts[i].bounce_type) (*nfailed)++;
    for (size_t i = 0; i < r->nrcpts; i++) {
        const fbparse_rcpt *b = &r->rcpts[i];
        if (!b->bounce_type) continue;
        const char *addr = NULL;
        if (m->token_rcpt)      /* the token names the recipient; a forwarded one keeps it */
            addr = strcasecmp(b->address, m->token_rcpt) == 0 || *nfailed == 1 ? m->token_rcpt : NULL;
        else
            addr = feedback_dest(m, b->address);
        if (!addr) continue;
        bool dup = false;
        for (size_t k = 0; k < n; k++) dup |= strcasecmp(st[k].email, addr) == 0;
        if (dup) continue;
        st[n].email = addr;
        st[n].action = "failed";
        st[n].status = b->status;
        st[n].diagnostic = b->diagnostic;
        blk[n] = b;
        n++;
    }
    return n;
}

static feedback_outcome feedback_dsn(kiln_ctx *ctx, int64_t id, const fbparse_report *r,
                                     const feedback_msg *m)
{
    const config *cfg = ctx->cfg;
    int64_t now = kiln_now_ms(ctx);
    events_rcpt_status *st = util_calloc(r->nrcpts + 1, sizeof *st);
    const fbparse_rcpt **blk = util_calloc(r->nrcpts + 1, sizeof *blk);
    size_t nfailed = 0;
    size_t n = feedback_bounced(r, m, st, blk, &nfailed);
    strbuf detail;
    strbuf_init(&detail);
    feedback_outcome out;
    if (nfailed == 0) {
        strbuf_printf(&detail, "recipients=%zu note=%s", r->nrcpts,
                      log_q(ctx->log, "no failed recipient (delayed or delivered): nothing recorded"));
        feedback_log(ctx, "delayed", id, r, m, detail.buf);
        out = FEEDBACK_DELAYED;
    } else if (n == 0) {
        strbuf_printf(&detail, "reason=%s",
                      log_q(ctx->log, "no failed recipient is a recipient of the message"));
        feedback_log(ctx, "dropped", id, r, m, detail.buf);
        out = FEEDBACK_DROPPED;
    } else {
        bool *done = util_calloc(n, sizeof *done);
        events_rcpt_status *grp = util_calloc(n, sizeof *grp);
        for (size_t i = 0; i < n; i++) {
            if (done[i]) continue;
            size_t g = 0;
            for (size_t k = i; k < n; k++) {
                if (done[k] || strcmp(blk[k]->bounce_type, blk[i]->bounce_type) != 0 ||
                    strcmp(blk[k]->bounce_subtype, blk[i]->bounce_subtype) != 0)
                    continue;
                done[k] = true;
                grp[g++] = st[k];
            }
            char *ev = events_bounce(m->sent.mail_json, NULL, now, blk[i]->bounce_type,
                                     blk[i]->bounce_subtype, grp, g, r->reporting_mta,
                                     NULL);
            spool_add_event_take(ctx->spool, m->sent.config_set, ev);
            bool permanent = strcmp(blk[i]->bounce_type, "Permanent") == 0;
            if (permanent) stats_count(ctx->spool, STATS_BOUNCES, now, (int64_t)g);
            for (size_t k = 0; k < g; k++) {
                bool suppress = permanent && (cfg->suppression_reasons & CONFIG_SUPPRESS_BOUNCE);
                if (suppress) spool_suppression_put(ctx->spool, grp[k].email, "BOUNCE", now);
                strbuf_reset(&detail);
                strbuf_printf(&detail, "rcpt=%s type=%s subtype=%s status=%s suppressed=%s diagnostic=%s",
                              log_q(ctx->log, grp[k].email), blk[i]->bounce_type,
                              blk[i]->bounce_subtype, grp[k].status ? grp[k].status : "-",
                              suppress ? "yes" : "no", log_q(ctx->log, grp[k].diagnostic));
                feedback_log(ctx, "bounce", id, r, m, detail.buf);
            }
        }
        free(done);
        free(grp);
        out = FEEDBACK_BOUNCE;
    }
    strbuf_free(&detail);
    free(st);
    free(blk);
    return out;
}

static feedback_outcome feedback_arf(kiln_ctx *ctx, int64_t id, const fbparse_report *r,
                                     const feedback_msg *m)
{
    const config *cfg = ctx->cfg;
    int64_t now = kiln_now_ms(ctx);
    char **who = util_calloc(m->ndests + 1, sizeof *who);
    size_t n = 0;
    if (m->token_rcpt) {
        who[n++] = (char *)m->token_rcpt;
    } else {
        for (size_t i = 0; i < r->noriginal_rcpt_to; i++) {
            const char *d = feedback_dest(m, r->original_rcpt_to[i]);
            bool dup = false;
            for (size_t k = 0; d && k < n; k++) dup |= who[k] == d;
            if (d && !dup) who[n++] = (char *)d;
        }
        if (n == 0 && m->ndests == 1) who[n++] = m->dests[0];
    }
    strbuf detail;
    strbuf_init(&detail);
    if (n == 0) {
        strbuf_printf(&detail, "reason=%s",
                      log_q(ctx->log, "the report names no recipient of the message"));
        feedback_log(ctx, "dropped", id, r, m, detail.buf);
        strbuf_free(&detail);
        free(who);
        return FEEDBACK_DROPPED;
    }
    int64_t arrival = r->arf_arrival_date ? fbparse_date_ms(r->arf_arrival_date) : -1;
    char *ev = events_complaint(m->sent.mail_json, now, who, n, r->feedback_type, r->user_agent,
                                arrival > 0 ? arrival : now);
    spool_add_event_take(ctx->spool, m->sent.config_set, ev);
    stats_count(ctx->spool, STATS_COMPLAINTS, now, (int64_t)n);
    const config_set *set = config_find_set(cfg, m->sent.config_set ? m->sent.config_set : "");
    struct pools *p = ctx->sched ? scheduler_pools(ctx->sched) : NULL;
    for (size_t k = 0; k < n; k++) {
        bool suppress = cfg->suppression_reasons & CONFIG_SUPPRESS_COMPLAINT;
        if (suppress) spool_suppression_put(ctx->spool, who[k], "COMPLAINT", now);
        const char *at = strrchr(who[k], '@');
        const char *provider = pools_provider_of_domain(at ? at + 1 : "");
        if (p && set) {
            pools_set_complaint_hold_rate(p, cfg->feedback_complaint_hold_rate);
            pools_record_complaint(p, set->pool, provider, 1, now);
        }
        strbuf_reset(&detail);
        strbuf_printf(&detail, "rcpt=%s feedback_type=%s user_agent=%s provider=%s suppressed=%s",
                      log_q(ctx->log, who[k]), r->feedback_type ? r->feedback_type : "-",
                      log_q(ctx->log, r->user_agent), provider, suppress ? "yes" : "no");
        feedback_log(ctx, "complaint", id, r, m, detail.buf);
    }
    if (p && set) scheduler_pools_changed(ctx->sched);
    strbuf_free(&detail);
    free(who);
    return FEEDBACK_COMPLAINT;
}

feedback_outcome feedback_apply(kiln_ctx *ctx, int64_t id, const char *mail_from,
                                const char *rcpts, const char *data, size_t len)
{
    const config *cfg = ctx->cfg;
    fbparse_limits lim;
    fbparse_default_limits(&lim);
    lim.max_bytes = (size_t)cfg->feedback_max_message_size + 65536;   /* what the listener took */
    fbparse_report r;
    fbparse_kind kind = fbparse_message(data, len, mail_from, &lim, &r);
    feedback_msg m;
    memset(&m, 0, sizeof m);
    feedback_outcome out = FEEDBACK_DROPPED;
    char *why = NULL;
    char *detail = NULL;
    switch (kind) {
    case FBPARSE_AUTOREPLY:
        detail = util_asprintf("reason=%s", log_q(ctx->log, r.why));
        feedback_log(ctx, "ignored", id, &r, NULL, detail);
        out = FEEDBACK_IGNORED;
        break;
    case FBPARSE_NONE:
    case FBPARSE_MALFORMED:
        detail = util_asprintf("reason=%s", log_q(ctx->log, r.why));
        feedback_log(ctx, "dropped", id, &r, NULL, detail);
        break;
    case FBPARSE_DSN:
    case FBPARSE_ARF:
        if (feedback_match(ctx, rcpts, &r, &m, &why) != 0) {
            detail = util_asprintf("reason=%s", log_q(ctx->log, why));
            feedback_log(ctx, "dropped", id, &r, &m, detail);
            break;
        }
        out = kind == FBPARSE_DSN ? feedback_dsn(ctx, id, &r, &m) : feedback_arf(ctx, id, &r, &m);
        break;
    }
    free(detail);
    free(why);
    feedback_msg_free(&m);
    fbparse_report_free(&r);
    return out;
}
