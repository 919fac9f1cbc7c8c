/* settle.c — what an attempt came to, recorded: one outcome per recipient becomes its
 * spool row (delivered, bounced, or deferred with its next attempt by the backoff of
 * scheduler/retry), a suppression entry when a bounce says so, one log line, and the SES
 * events (store/event.h) in the spool outbox — all in the current spool batch, which the
 * spool's writer commits later (store/spool.h).
 *
 * Until that commit the spool's reads still show a settled recipient as it was (QUEUED, or
 * DEFERRED with its old time): a page read in that window must not load it again (that
 * would deliver it twice). So every rowid leaving memory (final here, or an evicted
 * deferral in sched_job_forget) is held in s->settling, which the pages pass over, until
 * the commit callback of the batch holding its update. These writes (rows, suppression
 * entries, events, statistics) and that callback are kept writes (store/spool.h): when a
 * batch fails (disk full, I/O error) the spool records them again in the next batch, after
 * a wait, until they are committed, and only then does the callback release the rows; so a
 * failed write neither loses an outcome nor lets the pager deliver a recipient twice. The
 * spool logs nothing; the daemon logs each failed batch and the recovery.
 *
 * Promises: a deferral past max_delivery_time becomes a Transient bounce, except that a
 * pools deferral (no IP, all at cap) is never bounced before the expiry itself; recipients
 * with a final outcome leave the job and memory; events are grouped as SES does (one
 * Delivery for the delivered, one Bounce per type/subtype, one DeliveryDelay per delay
 * type); their ses:outgoing-ip tag is the address the world saw (the source IP's
 * public_address behind NAT, else the bound address), and the log lines name the bound
 * address as ip= with public= beside it when the two differ.
 *
 * mta/accept.c settles simulator and suppression outcomes itself, at acceptance: those
 * recipients are inserted already final (no spool row to update, no attempt, no backoff,
 * no job), with one event per recipient carrying the simulator's own response, complaint
 * and auto-reply; what the two share is the event builders of store/event.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/timeline.h"
#include "base/metrics.h"
#include "base/util.h"
#include "scheduler/internal.h"
#include "store/event.h"
#include "store/spool.h"
#include "store/stats.h"

/* One group of rowids held until a commit (see the file comment). */
typedef struct sched_hold {
    scheduler *s;               /* NULL once the scheduler is gone */
    struct sched_hold *prev, *next;
    size_t n;
    int64_t ids[];
} sched_hold;

static void settle_hold_committed(void *arg, bool ok, const char *err)
{
    sched_hold *h = arg;
    scheduler *s = h->s;
    if (s && !ok)   /* only when the spool gives up its kept writes (closing) */
        log_write(sched_lg(s), KLOG_ERROR, "delivery.settle_lost",
                  "rows=%zu error=%s note=\"their outcomes are not recorded: they are attempted "
                  "again at the next start\"", h->n, log_q(sched_lg(s), err ? err : "?"));
    if (s) {
        for (size_t i = 0; i < h->n; i++) queue_idset_remove(&s->settling, h->ids[i]);
        if (h->prev) h->prev->next = h->next;
        else s->holds = h->next;
        if (h->next) h->next->prev = h->prev;
    }
    free(h);
}

void sched_hold_rows(scheduler *s, const int64_t *rowids, size_t n)
{
    if (n == 0) return;
    sched_hold *h = util_calloc(1, sizeof *h + n * sizeof h->ids[0]);
    h->s = s;
    for (size_t i = 0; i < n; i++) {
        if (!queue_idset_add(&s->settling, rowids[i])) continue;   /* held already */
        h->ids[h->n++] = rowids[i];
    }
    h->next = s->holds;
    if (s->holds) s->holds->prev = h;
    s->holds = h;
    /* kept: a failed batch does not release the rows, the commit of their write does */
    spool_keep_begin(s->ctx->spool);
    spool_on_commit(s->ctx->spool, settle_hold_committed, h);
    spool_keep_end(s->ctx->spool);
}

void sched_holds_detach(scheduler *s)
{
    for (sched_hold *h = s->holds; h; h = h->next) h->s = NULL;
    s->holds = NULL;
}

/* A job leaves memory while its recipients stay pending in the spool (the pager reads
 * them again later). */
void sched_job_forget(scheduler *s, sched_job *j)
{
    int64_t *ids = util_calloc(j->nrcpts ? j->nrcpts : 1, sizeof *ids);
    for (size_t i = 0; i < j->nrcpts; i++) {
        queue_idset_remove(&s->mem, j->rcpts[i].rowid);
        ids[i] = j->rcpts[i].rowid;
        if (j->rcpts[i].attempts > 0) s->nmem_retry--;
    }
    /* an evicted deferral's DEFERRED row may not be committed yet */
    sched_hold_rows(s, ids, j->nrcpts);
    free(ids);
    sched_job_free(j);
}

static char *settle_diagnostic(const sched_outcome *o)
{
    return o->remote ? util_asprintf("smtp; %s", o->text) : util_strdup(o->text);
}

/* The address the world saw for source address src (bound): its public_address behind NAT,
 * else src itself (also for an IP a reload released and forgot meanwhile). */
static const char *settle_public(const scheduler *s, const char *src)
{
    const pools_ip *ip = src && s->pools ? pools_find(s->pools, src) : NULL;
    return ip ? pools_ip_public(ip) : src;
}

/* " public=ADDR" for the log lines of src when it differs from src (NAT), else "". */
static void settle_public_field(const scheduler *s, const char *src, char *buf, size_t n)
{
    const char *pub = settle_public(s, src);
    if (pub && src && strcmp(pub, src) != 0) snprintf(buf, n, " public=%s", pub);
    else buf[0] = '\0';
}

/* The SES events of one attempt, in the spool batch: one Delivery event for the recipients
 * delivered, one Bounce event per bounce type/subtype, one DeliveryDelay per delay type. */
static void settle_events(scheduler *s, const sched_job *j, const sched_outcome *out, const char *src,
                       const char *peer, int64_t now)
{
    kiln_ctx *ctx = s->ctx;
    size_t n = j->nrcpts;
    int64_t expiry = j->msg.created_ms + j->max_delivery_ms;
    char *reporting = events_reporting_mta(ctx->cfg);
    const char *set = j->set->name;
    const char *pub = settle_public(s, src);   /* ses:outgoing-ip: what the world saw */
    char **list = util_calloc(n ? n : 1, sizeof *list);
    events_rcpt_status *st = util_calloc(n ? n : 1, sizeof *st);
    char **diags = util_calloc(n ? n : 1, sizeof *diags);
    bool *done = util_calloc(n ? n : 1, sizeof *done);
    size_t nl = 0;
    const char *smtp_response = NULL;
    for (size_t i = 0; i < n; i++) {
        if (out[i].cls.verdict != RETRY_DELIVERED) continue;
        list[nl++] = j->rcpts[i].address;
        if (!smtp_response) smtp_response = out[i].text;
    }
    if (nl) {
        char *ev = events_delivery(j->msg.mail_json, pub, now, now - j->msg.created_ms, list, nl,
                                   smtp_response, reporting, peer);
        spool_add_event_take(ctx->spool, set, ev);
    }
    for (size_t i = 0; i < n; i++) {
        if (done[i] || out[i].cls.verdict == RETRY_DELIVERED ||
            out[i].cls.verdict == RETRY_HANDOFF)
            continue;
        const retry_class *c = &out[i].cls;
        size_t ns = 0;
        for (size_t k = i; k < n; k++) {
            const retry_class *d = &out[k].cls;
            if (done[k] || d->verdict != c->verdict) continue;
            if (c->verdict == RETRY_BOUNCE && (strcmp(d->bounce_type, c->bounce_type) != 0 ||
                                               strcmp(d->bounce_subtype, c->bounce_subtype) != 0))
                continue;
            if (c->verdict == RETRY_DEFER && strcmp(d->delay_type, c->delay_type) != 0) continue;
            done[k] = true;
            diags[ns] = settle_diagnostic(&out[k]);
            st[ns].email = j->rcpts[k].address;
            st[ns].action = c->verdict == RETRY_BOUNCE ? "failed" : NULL;
            st[ns].status = d->status;
            st[ns].diagnostic = diags[ns];
            ns++;
        }
        char *ev = c->verdict == RETRY_BOUNCE
                       ? events_bounce(j->msg.mail_json, pub, now, c->bounce_type,
                                       c->bounce_subtype, st, ns, reporting, peer)
                       : events_delay(j->msg.mail_json, pub, now, c->delay_type, expiry, st, ns,
                                      reporting, peer);
        spool_add_event_take(ctx->spool, set, ev);
        if (c->verdict == RETRY_BOUNCE) stats_count(ctx->spool, STATS_BOUNCES, now, (int64_t)ns);
        for (size_t k = 0; k < ns; k++) free(diags[k]);
    }
    free(list);
    free(st);
    free(diags);
    free(done);
    free(reporting);
}

/* Records one outcome per recipient (a deferral past max_delivery_time becomes a Transient
 * bounce): spool rows, suppression, events, logs. Final recipients leave the job. */
/* Counts the outcomes (base/metrics.h): kiln_recipients_total by pool, source IP, zone and
 * delay type, the destination site's (top-N) counter, and the injection-to-delivery latency
 * of delivered recipients. Labels come from the config (pool, IP, zone) or fixed names. */
static void settle_metrics(scheduler *s, const sched_job *j, const sched_outcome *out,
                           const char *src, int64_t now)
{
    for (size_t i = 0; i < j->nrcpts; i++) {   /* the web page's recent deferrals/bounces */
        const retry_class *c = &out[i].cls;
        if (c->verdict == RETRY_DELIVERED || c->verdict == RETRY_HANDOFF) continue;
        char reason[48];
        if (c->verdict == RETRY_BOUNCE)
            snprintf(reason, sizeof reason, "%s/%s", c->bounce_type ? c->bounce_type : "",
                     c->bounce_subtype ? c->bounce_subtype : "");
        else
            snprintf(reason, sizeof reason, "%s", c->delay_type ? c->delay_type : "");
        timeline_add_outcome(s->ctx->timeline, now, c->verdict == RETRY_BOUNCE ? "bounced" : "deferred",
                             reason, j->domain, src, out[i].text);
    }
    metrics *m = s->ctx->metrics;
    if (!m) return;
    const pools_ip *ip = src ? pools_find(s->pools, src) : NULL;
    const char *zone = ip ? pools_ip_zone(ip) : "";
    const char *site = j->site ? j->site : j->domain ? j->domain : "";
    for (size_t i = 0; i < j->nrcpts; i++) {
        const retry_class *c = &out[i].cls;
        const char *outcome = c->verdict == RETRY_DELIVERED ? "delivered"
                              : c->verdict == RETRY_BOUNCE  ? "bounced"
                              : c->verdict == RETRY_HANDOFF ? "handed_off"
                                                            : "deferred";
        const char *dt = c->verdict == RETRY_DEFER && c->delay_type ? c->delay_type : "";
        metrics_add(m, "kiln_recipients_total",
                    (const char *const[]){outcome, j->pool ? j->pool : "", src ? src : "", zone,
                                          dt},
                    1);
        metrics_add(m, "kiln_site_recipients_total", (const char *const[]){site, outcome}, 1);
        if (c->verdict == RETRY_DELIVERED && j->msg.created_ms > 0 && now >= j->msg.created_ms)
            metrics_observe(m, "kiln_delivery_latency_seconds", NULL,
                            (double)(now - j->msg.created_ms) / 1000);
    }
}

void sched_settle(scheduler *s, sched_job *j, sched_outcome *out, const char *src, const char *peer)
{
    kiln_ctx *ctx = s->ctx;
    const config *cfg = ctx->cfg;
    int64_t now = kiln_now_ms(ctx);
    size_t n = j->nrcpts;

    /* decide */
    int64_t *next = util_calloc(n ? n : 1, sizeof *next);
    for (size_t i = 0; i < n; i++) {
        sched_rcpt *r = &j->rcpts[i];
        r->attempts++;
        if (out[i].cls.verdict != RETRY_DEFER) continue;
        if (j->pool_wait) {
            /* a pools deferral: at the time the pools name (else the backoff), but never
             * past the expiry, so the recipient is not bounced before max_delivery_time */
            int64_t expiry = j->msg.created_ms + j->max_delivery_ms;
            if (j->defer_at_ms > 0) next[i] = j->defer_at_ms > now ? j->defer_at_ms : now + 1;
            else next[i] = now + retry_next_delay_ms(cfg, r->attempts);
            if (next[i] > expiry) next[i] = expiry;
            if (next[i] <= now) retry_classify_expired(&out[i].cls);
        } else {
            next[i] = now + retry_next_delay_ms(cfg, r->attempts);
            if (retry_expired(j->msg.created_ms, next[i], j->max_delivery_ms))
                retry_classify_expired(&out[i].cls);
        }
    }

    /* spool rows and logs: kept writes, retried until committed (store/spool.h) */
    char pubf[80];
    settle_public_field(s, src, pubf, sizeof pubf);
    spool_keep_begin(ctx->spool);
    for (size_t i = 0; i < n; i++) {
        sched_rcpt *r = &j->rcpts[i];
        const retry_class *c = &out[i].cls;
        switch (c->verdict) {
        case RETRY_DELIVERED:
            spool_update_rcpt(ctx->spool, r->rowid, SPOOL_RCPT_DELIVERED, r->attempts, 0, out[i].text);
            log_write(sched_lg(s), KLOG_INFO, "delivery.ok", "id=%s rcpt=%s ip=%s%s hop=%s reply=%s",
                      log_q(sched_lg(s), j->msg_id), log_q(sched_lg(s), r->address), src ? src : "-", pubf,
                      peer ? peer : "-", log_q(sched_lg(s), out[i].text));
            break;
        case RETRY_HANDOFF:      /* final here: the other node delivers it and says so */
            spool_update_rcpt(ctx->spool, r->rowid, SPOOL_RCPT_DELIVERED, r->attempts, 0, out[i].text);
            log_write(sched_lg(s), KLOG_INFO, "delivery.handoff", "id=%s rcpt=%s peer=%s reply=%s",
                      log_q(sched_lg(s), j->msg_id), log_q(sched_lg(s), r->address),
                      peer ? peer : "-", log_q(sched_lg(s), out[i].text));
            break;
        case RETRY_BOUNCE:
            spool_update_rcpt(ctx->spool, r->rowid, SPOOL_RCPT_BOUNCED, r->attempts, 0, out[i].text);
            if (c->suppress && (cfg->suppression_reasons & CONFIG_SUPPRESS_BOUNCE))
                spool_suppression_put(ctx->spool, r->address, "BOUNCE", now);
            log_write(sched_lg(s), KLOG_INFO, "delivery.bounce",
                      "id=%s rcpt=%s ip=%s%s hop=%s type=%s subtype=%s status=%s attempts=%d reply=%s",
                      log_q(sched_lg(s), j->msg_id), log_q(sched_lg(s), r->address), src ? src : "-", pubf,
                      peer ? peer : "-", c->bounce_type, c->bounce_subtype, c->status, r->attempts,
                      log_q(sched_lg(s), out[i].text));
            break;
        case RETRY_DEFER: {
            r->next_attempt_ms = next[i];
            spool_update_rcpt(ctx->spool, r->rowid, SPOOL_RCPT_DEFERRED, r->attempts, next[i],
                              out[i].text);
            sched_set_str(&r->last_reply, out[i].text);
            char at[32];
            util_iso8601(next[i], at);
            log_write(sched_lg(s), KLOG_INFO, "delivery.defer",
                      "id=%s rcpt=%s ip=%s%s hop=%s delay_type=%s status=%s attempts=%d next=%s reply=%s",
                      log_q(sched_lg(s), j->msg_id), log_q(sched_lg(s), r->address), src ? src : "-", pubf,
                      peer ? peer : "-", c->delay_type, c->status, r->attempts, at,
                      log_q(sched_lg(s), out[i].text));
            break;
        }
        }
    }

    settle_events(s, j, out, src, peer, now);
    settle_metrics(s, j, out, src, now);

    /* final recipients leave the job (held until their rows are committed) */
    int64_t *gone = util_calloc(n ? n : 1, sizeof *gone);
    size_t keep = 0, ngone = 0;
    for (size_t i = 0; i < n; i++) {
        /* attempts counts this attempt already: 1 means it was QUEUED until now */
        if (out[i].cls.verdict == RETRY_DEFER) {
            if (j->rcpts[i].attempts == 1) s->nmem_retry++;
            j->rcpts[keep++] = j->rcpts[i];
        } else {
            if (j->rcpts[i].attempts > 1) s->nmem_retry--;
            queue_idset_remove(&s->mem, j->rcpts[i].rowid);
            gone[ngone++] = j->rcpts[i].rowid;
            free(j->rcpts[i].address);
            free(j->rcpts[i].last_reply);
            s->nqueued--;
        }
    }
    j->nrcpts = keep;
    sched_hold_rows(s, gone, ngone);
    spool_keep_end(ctx->spool);
    free(gone);
    free(next);
}

/* Every recipient of the job gets the same local outcome; the attempt ends. */
void sched_job_fail_all(scheduler *s, sched_job *j, retry_failure f, const char *text)
{
    sched_outcome *out = util_calloc(j->nrcpts ? j->nrcpts : 1, sizeof *out);
    for (size_t i = 0; i < j->nrcpts; i++) {
        retry_classify_failure(f, &out[i].cls);
        out[i].text = text;
    }
    sched_settle(s, j, out, j->last_src, j->last_peer);
    free(out);
    sched_job_done(s, j);
}


/* The pools cannot give the job an IP now: every recipient is deferred with delay_type
 * ("IPFailure" or "SendingDeferral") until at_ms (0: the retry backoff), and the job is
 * tried again at once if an operator or a reload changes the pools. */
void sched_job_defer_pools(scheduler *s, sched_job *j, const char *delay_type, const char *text,
                            int64_t at_ms)
{
    sched_outcome *out = util_calloc(j->nrcpts ? j->nrcpts : 1, sizeof *out);
    for (size_t i = 0; i < j->nrcpts; i++) {
        if (strcmp(delay_type, "IPFailure") == 0) {
            retry_classify_failure(RETRY_FAIL_IP, &out[i].cls);
        } else {
            out[i].cls.verdict = RETRY_DEFER;
            out[i].cls.delay_type = delay_type;
            snprintf(out[i].cls.status, sizeof out[i].cls.status, "4.4.5");
        }
        out[i].text = text;
    }
    j->defer_at_ms = at_ms;
    j->pool_wait = true;
    sched_settle(s, j, out, j->last_src, j->last_peer);
    sched_job_why(j, j->nrcpts ? sched_job_due(j) : 0, "%s: %s",
            strcmp(delay_type, "IPFailure") == 0 ? "no usable IP" : "every IP at its cap", text);
    free(out);
    sched_job_done(s, j);
}
