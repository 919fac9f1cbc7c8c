/* feedback.c — the feedback intake's front half (see feedback.h): which recipients the
 * feedback listener takes, the durable acceptance of a report (feedback inbox row committed
 * before the 250, then processed by feedback_apply.c and deleted in one later batch, so a
 * crash between the two processes it again at start-up), the start-up recovery, and the
 * hourly pruning of sent_mail past feedback.retention.
 *
 * Promises: a report is answered 250 only once its inbox row is committed; its processing
 * writes and the row's deletion are kept writes (spool.h), committed together; nothing
 * here trusts the report: feedback_apply.c decides what it may change. */
#include "mta/feedback.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ev.h>

#include "base/config.h"
#include "base/kiln.h"
#include "base/log.h"
#include "base/util.h"
#include "mta/fbparse.h"
#include "mta/fbtoken.h"
#include "mta/feedback_int.h"
#include "pools/complaints.h"
#include "scheduler/scheduler.h"
#include "store/spool.h"
#include "store/spool_feedback.h"

#define FEEDBACK_PRUNE_INTERVAL 3600.0     /* s between two sent_mail prunings */
#define REPLY_NOT_OURS "550 5.7.1 Relay access denied: this listener takes only kiln's bounce and feedback addresses"
#define REPLY_BAD_TOKEN "550 5.1.1 Unknown bounce address"

struct feedback {
    kiln_ctx *ctx;
    ev_timer recover;        /* once, right after start: the inbox left from before */
    ev_timer prune;
    int pending;             /* reports waiting for their commit */
};

typedef struct feedback_job {
    feedback *fb;
    int64_t id;
    char *mail_from;
    char *rcpts;
    char *data;
    size_t len;
    feedback_done_cb done;
    void *arg;
} feedback_job;

/* True when DOMAIN (lower-case) is one of kiln's bounce domains. */
static bool feedback_is_bounce_domain(const config *cfg, const char *domain)
{
    if (cfg->feedback_bounce_domain && strcmp(cfg->feedback_bounce_domain, domain) == 0)
        return true;
    for (size_t i = 0; i < cfg->nidentities; i++) {
        const char *d = cfg->identity_auth[i].mail_from_domain;
        if (d && strcasecmp(d, domain) == 0) return true;
    }
    return false;
}

int feedback_rcpt_ok(const config *cfg, const char *addr, const char **reply)
{
    char *low = util_strdup(addr);
    for (char *c = low; *c; c++) *c = (char)tolower((unsigned char)*c);
    int rc = -1;
    *reply = REPLY_NOT_OURS;
    for (size_t i = 0; i < cfg->nfeedback_addresses; i++)
        if (strcmp(cfg->feedback_addresses[i], low) == 0) rc = 0;
    const char *at = strrchr(low, '@');
    if (rc != 0 && at && strncmp(low, FBTOKEN_LOCAL_PREFIX, strlen(FBTOKEN_LOCAL_PREFIX)) == 0 &&
        feedback_is_bounce_domain(cfg, at + 1)) {
        fbtoken_info info;
        const char *why = NULL;
        if (fbtoken_decode(low, &info, &why) == 0) rc = 0;
        else *reply = REPLY_BAD_TOKEN;
    }
    free(low);
    if (rc == 0) *reply = NULL;
    return rc;
}

static void feedback_job_free(feedback_job *j)
{
    free(j->mail_from);
    free(j->rcpts);
    free(j->data);
    free(j);
}

/* Processing and the deletion of the inbox row: kept writes, committed together. */
static void feedback_process(kiln_ctx *ctx, int64_t id, const char *mail_from, const char *rcpts,
                             const char *data, size_t len)
{
    spool_keep_begin(ctx->spool);
    feedback_apply(ctx, id, mail_from, rcpts, data, len);
    spool_fbin_delete(ctx->spool, id);
    spool_keep_end(ctx->spool);
}

static void feedback_on_commit(void *arg, bool ok, const char *err)
{
    feedback_job *j = arg;
    feedback *fb = j->fb;
    fb->pending--;
    j->done(j->arg, ok, j->id, err);
    if (ok) feedback_process(fb->ctx, j->id, j->mail_from, j->rcpts, j->data, j->len);
    feedback_job_free(j);
}

int feedback_accept(feedback *fb, const char *client_ip, const char *mail_from,
                    char *const *rcpts, size_t nrcpts, const char *data, size_t len,
                    feedback_done_cb done, void *arg)
{
    kiln_ctx *ctx = fb->ctx;
    strbuf rb;
    strbuf_init(&rb);
    for (size_t i = 0; i < nrcpts; i++) {
        if (i) strbuf_puts(&rb, "\n");
        strbuf_puts(&rb, rcpts[i]);
    }
    feedback_job *j = util_calloc(1, sizeof *j);
    j->fb = fb;
    j->mail_from = util_strdup(mail_from);
    j->rcpts = util_strdup(rb.buf ? rb.buf : "");
    strbuf_free(&rb);
    j->data = util_malloc(len + 1);
    memcpy(j->data, data, len);
    j->data[len] = '\0';
    j->len = len;
    j->done = done;
    j->arg = arg;
    if (spool_fbin_add(ctx->spool, kiln_now_ms(ctx), client_ip, mail_from, j->rcpts, data, len,
                       &j->id) != 0) {
        feedback_job_free(j);
        return -1;
    }
    fb->pending++;
    spool_on_commit(ctx->spool, feedback_on_commit, j);
    return 0;
}

typedef struct feedback_left {
    int64_t id;
    char *mail_from, *rcpts, *data;
    size_t len;
} feedback_left;

typedef struct feedback_lefts {
    feedback_left *v;
    size_t n, cap;
} feedback_lefts;

static void feedback_on_left(void *arg, int64_t id, int64_t received_ms, const char *client_ip,
                             const char *mail_from, const char *rcpts, const char *data, size_t len)
{
    (void)received_ms;
    (void)client_ip;
    feedback_lefts *l = arg;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 8;
        l->v = util_realloc(l->v, l->cap * sizeof *l->v);
    }
    feedback_left *e = &l->v[l->n++];
    e->id = id;
    e->mail_from = util_strdup(mail_from ? mail_from : "");
    e->rcpts = util_strdup(rcpts ? rcpts : "");
    e->data = util_malloc(len + 1);
    memcpy(e->data, data, len);
    e->data[len] = '\0';
    e->len = len;
}

/* Reports committed before a restart and not processed then. */
static void feedback_on_recover(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    feedback *fb = w->data;
    kiln_ctx *ctx = fb->ctx;
    feedback_lefts l = {0};
    if (spool_fbin_each(ctx->spool, feedback_on_left, &l) != 0)
        log_write(ctx->log, KLOG_ERROR, "feedback.error", "stage=recover error=%s",
                  log_q(ctx->log, spool_errmsg(ctx->spool)));
    for (size_t i = 0; i < l.n; i++) {
        feedback_process(ctx, l.v[i].id, l.v[i].mail_from, l.v[i].rcpts, l.v[i].data, l.v[i].len);
        free(l.v[i].mail_from);
        free(l.v[i].rcpts);
        free(l.v[i].data);
    }
    if (l.n)
        log_write(ctx->log, KLOG_INFO, "feedback.recovered", "reports=%zu", l.n);
    free(l.v);
}

static void feedback_on_prune(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    feedback *fb = w->data;
    kiln_ctx *ctx = fb->ctx;
    spool_keep_begin(ctx->spool);
    spool_sent_prune(ctx->spool, kiln_now_ms(ctx) - ctx->cfg->feedback_retention_ms);
    spool_keep_end(ctx->spool);
}

feedback *feedback_new(kiln_ctx *ctx)
{
    if (!ctx->cfg->feedback_on) return NULL;
    fbparse_init();
    feedback *fb = util_calloc(1, sizeof *fb);
    fb->ctx = ctx;
    spool_keep_sent(ctx->spool, true);
    feedback_config_changed(fb);
    ev_timer_init(&fb->recover, feedback_on_recover, 0.0, 0.0);
    fb->recover.data = fb;
    ev_timer_start(ctx->loop, &fb->recover);
    ev_timer_init(&fb->prune, feedback_on_prune, 1.0, FEEDBACK_PRUNE_INTERVAL);
    fb->prune.data = fb;
    ev_timer_start(ctx->loop, &fb->prune);
    return fb;
}

void feedback_config_changed(feedback *fb)
{
    kiln_ctx *ctx = fb->ctx;
    if (ctx->sched)
        pools_set_complaint_hold_rate(scheduler_pools(ctx->sched), ctx->cfg->feedback_complaint_hold_rate);
}

void feedback_free(feedback *fb)
{
    if (!fb) return;
    ev_timer_stop(fb->ctx->loop, &fb->recover);
    ev_timer_stop(fb->ctx->loop, &fb->prune);
    if (fb->pending)       /* cannot happen after the daemon's flush; never free under a job */
        util_fatal("feedback: freed with %d reports waiting for their commit", fb->pending);
    free(fb);
}
