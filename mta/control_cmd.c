/* control_cmd.c — the control socket's commands (protocol in control.h; the socket is
 * control.c's): status, quota, stats, reputation, suppression.list/.add/.remove, reload, the
 * dedicated-IP commands ips, ip.warmup, ip.check, zone.down and zone.up, and queue /
 * queue.explain (forecast is control_forecast.c's, identity.* control_identity.c's). An IP is shown by the address the world sees (`Ip`: its public_address
 * behind NAT) with the one kiln binds beside it (`BindAddress`); ip.warmup and ip.check
 * take either. ip.check is answered when its DNS lookups are in (mta/ipcheck.h).
 *
 * Every command answers its request exactly once, through control_reply_ok or
 * control_reply_error (a suppression change after its spool commit, through
 * control_wait_for_commit; queue once the query thread made the answer, through
 * control_wait and control_pending_answer), and logs one control.cmd line. status adds, per
 * webhook event destination, its backlog, dropped events and last error (mta/webhook.h).
 * The answers' data objects follow
 * the SES response shapes (SPEC section 5). The dedicated-IP commands read and change the
 * scheduler's pools state (pools/pools.h); changes are persisted by the scheduler. queue
 * copies the scheduler's in-memory queue and is answered from the query thread
 * (control_query.c: the spool's counts of what is not in memory, the JSON); queue.explain
 * reads the scheduler's queue and one message's rows in the spool (scheduler_explain). stats
 * reads the spool's send-statistics buckets of the last 14 days (stats.h); reputation sums
 * the same buckets into SES's bounce and complaint rates and their statuses
 * (store/reputation.h). Requests arrive
 * parsed and checked (control_parse.c): a known command with arguments of the right type.
 * The JSON of ips, queue.explain and the queue rows is built by control_json.c, which the
 * web page (api/web.c) shares. */
#include "mta/control_internal.h"
#include "mta/control_query.h"
#include "mta/control_json.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/kiln.h"
#include "base/netaddr.h"
#include "base/timeline.h"
#include "mta/delivery.h"
#include "mta/events.h"
#include "mta/ipcheck.h"
#include "pools/pools.h"
#include "mta/quota.h"
#include "scheduler/scheduler.h"
#include "mta/smtp_server.h"
#include "store/spool.h"
#include "store/reputation.h"
#include "mta/cluster.h"
#include "mta/cluster_stats.h"
#include "store/stats.h"
#include "base/util.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0.1.0"
#endif

/* ---- commands ---- */

/* A number as a JSON integer when integral, else a real. */
static json_t *control_number_json(double v)
{
    if (isfinite(v) && v == floor(v) && fabs(v) < 9e15) return json_integer((json_int_t)v);
    return json_real(v);
}

/* The config file as an absolute path (its directory as config.c resolved it). */
static json_t *control_config_file_json(const kiln_ctx *ctx)
{
    const char *p = ctx->config_path ? ctx->config_path : ctx->cfg->path;
    if (!p) return json_string("");
    if (p[0] == '/' || !ctx->cfg->dir) return control_jstr(p);
    const char *base = strrchr(p, '/');
    base = base ? base + 1 : p;
    char *abs = util_asprintf("%s%s%s", ctx->cfg->dir,
                              strcmp(ctx->cfg->dir, "/") == 0 ? "" : "/", base);
    json_t *j = control_jstr(abs);
    free(abs);
    return j;
}

static void control_webhook_json(void *arg, const webhook_info *in)
{
    json_t *o = json_object();
    json_object_set_new(o, "ConfigurationSet", control_jstr(in->set));
    json_object_set_new(o, "Url", control_jstr(in->url));
    json_object_set_new(o, "Backlog", json_integer(in->backlog));
    json_object_set_new(o, "Dropped", json_integer(in->dropped));
    json_object_set_new(o, "MaxBacklog", json_integer(in->max_backlog));
    json_object_set_new(o, "Failures", json_integer(in->failures));
    json_object_set_new(o, "LastError", in->last_error ? control_jstr(in->last_error) : json_null());
    json_array_append_new(arg, o);
}

static void control_cmd_status(control_client *cl)
{
    kiln_ctx *ctx = cl->ctl->ctx;
    int64_t queued = 0, deferred = 0;
    int sessions = 0;
    if (ctx->sched) {
        int sched_sessions = 0;
        scheduler_counts(ctx->sched, &queued, &deferred, &sched_sessions);
        sessions += sched_sessions;
    } else if (ctx->spool) {
        if (spool_count_rcpts(ctx->spool, &queued, &deferred) != 0) {
            char *e = util_asprintf("cannot count queued recipients: %s",
                                    spool_errmsg(ctx->spool));
            control_reply_error(cl, e);
            control_log_cmd(cl->ctl, "status", NULL, e);
            free(e);
            return;
        }
    }
    if (ctx->server) sessions += smtp_server_sessions(ctx->server);
    int64_t uptime_ms = kiln_now_ms(ctx) - ctx->started_ms;
    if (uptime_ms < 0) uptime_ms = 0;

    const config *cfg = ctx->cfg;
    json_t *d = json_object();
    json_object_set_new(d, "Uptime", json_integer(uptime_ms / 1000));
    json_object_set_new(d, "Queued", json_integer(queued));
    json_object_set_new(d, "Deferred", json_integer(deferred));
    json_object_set_new(d, "Sessions", json_integer(sessions));
    json_object_set_new(d, "ConfigFile", control_config_file_json(ctx));
    json_object_set_new(d, "Version", json_string(PACKAGE_VERSION));
    json_object_set_new(d, "Mode",
                        json_string(cfg->mode == CONFIG_MODE_PRODUCTION ? "production"
                                                                         : "sandbox"));
    json_object_set_new(d, "Hostname", control_jstr(cfg->hostname));
    json_t *hooks = json_array();   /* per webhook destination: backlog, drops, last error */
    if (ctx->events) events_each_webhook(ctx->events, control_webhook_json, hooks);
    json_object_set_new(d, "Webhooks", hooks);
    control_reply_ok(cl, d);
    control_log_cmd(cl->ctl, "status", NULL, NULL);
}

static void control_cmd_quota(control_client *cl)
{
    kiln_ctx *ctx = cl->ctl->ctx;
    int64_t max24 = ctx->cfg->max_24h_send, sent = 0;
    double rate = ctx->cfg->max_send_rate;
    if (ctx->quota) {
        int64_t now = kiln_now_ms(ctx);
        max24 = quota_max_24h(ctx->quota);
        rate = quota_max_rate(ctx->quota);
        sent = quota_sent_24h(ctx->quota, now);
    }
    json_t *d = json_object();
    json_object_set_new(d, "Max24HourSend", json_integer(max24 < 0 ? -1 : max24));
    json_object_set_new(d, "MaxSendRate", control_number_json(rate < 0 ? -1 : rate));
    json_object_set_new(d, "SentLast24Hours", json_integer(sent));
    control_reply_ok(cl, d);
    control_log_cmd(cl->ctl, "quota", NULL, NULL);
}

typedef struct supp_entry {
    char *address;
    char *reason;
    int64_t updated_ms;
} supp_entry;

typedef struct supp_list {
    supp_entry *v;
    size_t n, cap;
    const char *filter;
} supp_list;

static void control_supp_collect(void *arg, const char *address, const char *reason,
                                 int64_t updated_ms)
{
    supp_list *l = arg;
    if (l->filter && strcmp(l->filter, reason) != 0) return;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = util_realloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = (supp_entry){util_strdup(address), util_strdup(reason), updated_ms};
}

static int control_supp_cmp(const void *a, const void *b)
{
    return strcmp(((const supp_entry *)a)->address, ((const supp_entry *)b)->address);
}

static void control_cmd_suppression_list(control_client *cl, const control_request *req)
{
    kiln_ctx *ctx = cl->ctl->ctx;
    supp_list l = {0};
    l.filter = req->reason;
    if (spool_suppression_each(ctx->spool, control_supp_collect, &l) != 0) {
        char *e = util_asprintf("cannot read the suppression list: %s", spool_errmsg(ctx->spool));
        control_reply_error(cl, e);
        control_log_cmd(cl->ctl, "suppression.list", NULL, e);
        free(e);
    } else {
        if (l.n > 1) qsort(l.v, l.n, sizeof *l.v, control_supp_cmp);
        json_t *arr = json_array();
        for (size_t i = 0; i < l.n; i++) {
            char ts[32];
            util_iso8601(l.v[i].updated_ms, ts);
            json_t *o = json_object();
            json_object_set_new(o, "EmailAddress", control_jstr(l.v[i].address));
            json_object_set_new(o, "Reason", control_jstr(l.v[i].reason));
            json_object_set_new(o, "LastUpdateTime", json_string(ts));
            json_array_append_new(arr, o);
        }
        json_t *d = json_object();
        json_object_set_new(d, "SuppressedDestinationSummaries", arr);
        control_reply_ok(cl, d);
        control_log_cmd(cl->ctl, "suppression.list", NULL, NULL);
    }
    for (size_t i = 0; i < l.n; i++) {
        free(l.v[i].address);
        free(l.v[i].reason);
    }
    free(l.v);
}

static void control_stats_point(void *arg, int64_t bucket_ms, int64_t attempts, int64_t bounces,
                                int64_t complaints, int64_t rejects)
{
    char ts[32];
    util_iso8601(bucket_ms, ts);
    json_t *o = json_object();
    json_object_set_new(o, "Timestamp", json_string(ts));
    json_object_set_new(o, "DeliveryAttempts", json_integer(attempts));
    json_object_set_new(o, "Bounces", json_integer(bounces));
    json_object_set_new(o, "Complaints", json_integer(complaints));
    json_object_set_new(o, "Rejects", json_integer(rejects));
    json_array_append_new(arg, o);
}

/* SES GetSendStatistics: the 15-minute buckets of the last 14 days, oldest first. */
static void control_cmd_stats(control_client *cl)
{
    kiln_ctx *ctx = cl->ctl->ctx;
    json_t *arr = json_array();
    int64_t since = stats_bucket_ms(kiln_now_ms(ctx) - STATS_KEEP_MS);
    if (account_stats_each(ctx, since, control_stats_point, arr) != 0) {
        char *e = util_asprintf("cannot read the send statistics: %s", spool_errmsg(ctx->spool));
        control_reply_error(cl, e);
        control_log_cmd(cl->ctl, "stats", NULL, e);
        free(e);
        json_decref(arr);
        return;
    }
    json_t *d = json_object();
    json_object_set_new(d, "SendDataPoints", arr);
    control_reply_ok(cl, d);
    control_log_cmd(cl->ctl, "stats", NULL, NULL);
}

typedef struct control_buckets {
    stats_counts *v;
    size_t n, cap;
} control_buckets;

static void control_reputation_point(void *arg, int64_t bucket_ms, int64_t attempts,
                                     int64_t bounces, int64_t complaints, int64_t rejects)
{
    control_buckets *b = arg;
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->v = util_realloc(b->v, b->cap * sizeof *b->v);
    }
    b->v[b->n++] = (stats_counts){bucket_ms, attempts, bounces, complaints, rejects};
}

/* The account's reputation metrics (SES's reputation dashboard): bounce and complaint rates
 * over the 14 days of send-statistics buckets, with statuses against SES's thresholds. */
static void control_cmd_reputation(control_client *cl)
{
    kiln_ctx *ctx = cl->ctl->ctx;
    int64_t now = kiln_now_ms(ctx);
    control_buckets b = {NULL, 0, 0};
    if (account_stats_each(ctx, stats_bucket_ms(now - STATS_KEEP_MS), control_reputation_point,
                           &b) != 0) {
        char *e = util_asprintf("cannot read the send statistics: %s", spool_errmsg(ctx->spool));
        control_reply_error(cl, e);
        control_log_cmd(cl->ctl, "reputation", NULL, e);
        free(e);
        free(b.v);
        return;
    }
    reputation r;
    reputation_compute(b.v, b.n, now, &r);
    free(b.v);
    char start[32], end[32];
    util_iso8601(r.window_start_ms, start);
    util_iso8601(r.window_end_ms, end);
    json_t *th = json_object();
    json_object_set_new(th, "BounceRateWarning", json_real(REPUTATION_BOUNCE_WARNING_BP / 1e4));
    json_object_set_new(th, "BounceRateAtRisk", json_real(REPUTATION_BOUNCE_AT_RISK_BP / 1e4));
    json_object_set_new(th, "ComplaintRateWarning",
                        json_real(REPUTATION_COMPLAINT_WARNING_BP / 1e4));
    json_object_set_new(th, "ComplaintRateAtRisk",
                        json_real(REPUTATION_COMPLAINT_AT_RISK_BP / 1e4));
    json_t *m = json_object();
    json_object_set_new(m, "WindowStart", json_string(start));
    json_object_set_new(m, "WindowEnd", json_string(end));
    json_object_set_new(m, "DeliveryAttempts", json_integer(r.attempts));
    json_object_set_new(m, "Bounces", json_integer(r.bounces));
    json_object_set_new(m, "Complaints", json_integer(r.complaints));
    json_object_set_new(m, "BounceRate", json_real(r.bounce_rate));
    json_object_set_new(m, "ComplaintRate", json_real(r.complaint_rate));
    json_object_set_new(m, "BounceStatus", json_string(reputation_status_name(r.bounce_status)));
    json_object_set_new(m, "ComplaintStatus",
                        json_string(reputation_status_name(r.complaint_status)));
    json_object_set_new(m, "Thresholds", th);
    json_object_set_new(m, "Note", r.attempts > 0 ? json_null()
                                   : json_string("no sending volume in the window yet"));
    json_t *d = json_object();
    json_object_set_new(d, "ReputationMetrics", m);
    control_reply_ok(cl, d);
    control_log_cmd(cl->ctl, "reputation", NULL, NULL);
}

static void control_cmd_suppression_add(control_client *cl, const control_request *req)
{
    kiln_ctx *ctx = cl->ctl->ctx;
    const char *cmd = "suppression.add";
    const char *addr = req->address;
    if (spool_suppression_put(ctx->spool, addr, req->reason, kiln_now_ms(ctx)) != 0) {
        char *e = util_asprintf("cannot update the suppression list: %s",
                                spool_errmsg(ctx->spool));
        control_reply_error(cl, e);
        control_log_cmd(cl->ctl, cmd, addr, e);
        free(e);
    } else {
        control_wait_for_commit(cl, cmd, addr);
    }
}

static void control_cmd_suppression_remove(control_client *cl, const control_request *req)
{
    kiln_ctx *ctx = cl->ctl->ctx;
    const char *cmd = "suppression.remove";
    const char *addr = req->address;
    bool existed = false;
    if (spool_suppression_delete(ctx->spool, addr, &existed) != 0) {
        char *e = util_asprintf("cannot update the suppression list: %s",
                                spool_errmsg(ctx->spool));
        control_reply_error(cl, e);
        control_log_cmd(cl->ctl, cmd, addr, e);
        free(e);
    } else if (!existed) {
        char *e = util_asprintf("%s is not on the suppression list", addr);
        control_reply_error(cl, e);
        control_log_cmd(cl->ctl, cmd, addr, e);
        free(e);
    } else {
        control_wait_for_commit(cl, cmd, addr);
    }
}

static void control_cmd_reload(control_client *cl)
{
    kiln_ctx *ctx = cl->ctl->ctx;
    char *err = NULL;
    if (ctx->ops->reload(ctx, &err) != 0) {
        if (!err) err = util_strdup("reload failed");
        control_reply_error(cl, err);
        control_log_cmd(cl->ctl, "reload", NULL, err);
        timeline_add(ctx->timeline, kiln_now_ms(ctx), "config_rejected", ctx->config_path,
                     "reload (kilnctl) rejected: %s", err);
        free(err);
        return;
    }
    json_t *warnings = json_array();
    for (size_t i = 0; i < ctx->cfg->nwarnings; i++)
        json_array_append_new(warnings, control_jstr(ctx->cfg->warnings[i]));
    json_t *d = json_object();
    json_object_set_new(d, "warnings", warnings);
    control_reply_ok(cl, d);
    control_log_cmd(cl->ctl, "reload", NULL, NULL);
}

/* ---- dedicated IPs ---- */

/* The scheduler's pools state, or NULL after replying (no scheduler: kilnd is starting). */
static pools *control_take_pools(control_client *cl, const char *cmd)
{
    kiln_ctx *ctx = cl->ctl->ctx;
    pools *p = ctx->sched ? scheduler_pools(ctx->sched) : NULL;
    if (!p) {
        const char *e = "the delivery scheduler is not running";
        control_reply_error(cl, e);
        control_log_cmd(cl->ctl, cmd, NULL, e);
    }
    return p;
}

static void control_cmd_ips(control_client *cl)
{
    kiln_ctx *ctx = cl->ctl->ctx;
    pools *p = control_take_pools(cl, "ips");
    if (!p) return;
    int64_t now = kiln_now_ms(ctx);
    json_t *arr = json_array();
    for (size_t i = 0; i < pools_count(p); i++) {
        pools_ip_info in;
        pools_info(p, i, now, &in);
        json_t *o = control_json_ip(&in, now);
        if (ctx->cluster)   /* every node's IPs, each with the node that binds it */
            json_object_set_new(json_object_get(o, "kiln"), "Node",
                                json_string(ctx->cfg->cluster_node));
        json_array_append_new(arr, o);
    }
    if (ctx->cluster) cluster_remote_ips(ctx->cluster, arr);
    json_t *d = json_object();
    json_object_set_new(d, "DedicatedIps", arr);
    control_reply_ok(cl, d);
    control_log_cmd(cl->ctl, "ips", NULL, NULL);
}

/* `kilnctl cluster status`: this node, Redis, every node's heartbeat (mta/cluster.h). */
static void control_cmd_cluster_status(control_client *cl)
{
    kiln_ctx *ctx = cl->ctl->ctx;
    if (!ctx->cluster) {
        const char *e = "this kilnd is not a cluster node: its config has no cluster: section";
        control_reply_error(cl, e);
        control_log_cmd(cl->ctl, "cluster.status", NULL, e);
        return;
    }
    control_reply_ok(cl, cluster_status_json(ctx->cluster));
    control_log_cmd(cl->ctl, "cluster.status", NULL, NULL);
}

static void control_cmd_ip_warmup(control_client *cl, const control_request *req)
{
    kiln_ctx *ctx = cl->ctl->ctx;
    const char *cmd = "ip.warmup";
    pools *p = control_take_pools(cl, cmd);
    if (!p) return;
    /* either address names the IP: the one kiln binds or its public_address */
    const pools_ip *found = pools_find_any(p, req->address);
    const char *addr = found ? pools_ip_address(found) : req->address;
    int64_t now = kiln_now_ms(ctx);
    char *err = NULL, *owner = NULL;
    int fw = found ? 0 : cluster_forward_warmup(ctx->cluster, req->address, req->percent,
                                                &owner, &err);
    if (fw != 0) {               /* another node's IP: its node applies the setting */
        if (fw < 0) {
            control_reply_error(cl, err);
            control_log_cmd(cl->ctl, cmd, req->address, err);
            free(err);
            return;
        }
        json_t *d = json_object();
        json_object_set_new(d, "Ip", control_jstr(req->address));
        json_object_set_new(d, "WarmupPercentage", json_integer(req->percent));
        json_object_set_new(d, "Node", control_jstr(owner));
        json_object_set_new(d, "Forwarded", json_true());
        control_reply_ok(cl, d);
        control_log_cmd(cl->ctl, cmd, req->address, NULL);
        free(owner);
        return;
    }
    if (pools_set_warmup(p, addr, req->percent, now, &err) != 0) {
        if (!err) err = util_asprintf("cannot set the warm-up of %s", addr);
        control_reply_error(cl, err);
        control_log_cmd(cl->ctl, cmd, addr, err);
        free(err);
        return;
    }
    scheduler_pools_changed(ctx->sched);
    pools_ip_info in;
    json_t *d = json_object();
    if (pools_info_by_address(p, addr, now, &in) == 0) {
        json_object_set_new(d, "Ip", control_jstr(in.public_address));
        json_object_set_new(d, "BindAddress", control_jstr(in.address));
        json_object_set_new(d, "WarmupStatus", control_jstr(in.warmup_status));
        json_object_set_new(d, "WarmupPercentage", json_integer(in.warmup_percentage));
        json_object_set_new(d, "DailyCap", json_integer(in.daily_cap));
    }
    control_reply_ok(cl, d);
    control_log_cmd(cl->ctl, cmd, addr, NULL);
}

/* ip.check's answer: {"ok":true,"data":{...ipcheck_to_json, "Text"}} or the error. */
static void control_ip_check_answer(void *arg, ipcheck_result *r, const char *error)
{
    control_pending *p = arg;
    if (!r) {
        control_pending_answer(p, NULL, NULL, error ? error : "the check failed");
        return;
    }
    json_t *d = ipcheck_to_json(r);
    char *text = ipcheck_to_text(r);
    json_object_set_new(d, "Text", control_jstr(text));
    free(text);
    ipcheck_result_free(r);
    json_t *msg = json_object();
    json_object_set_new(msg, "ok", json_true());
    json_object_set_new(msg, "data", d);
    char *line = json_dumps(msg, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(msg);
    if (!line) util_fatal("control: cannot encode the ip check");
    control_pending_answer(p, line, NULL, NULL);
    free(line);
}

/* The ips entry whose address or public_address is addr (any spelling), or -1 after
 * replying with the known ones. */
static int control_ip_entry(control_client *cl, const char *cmd, const char *addr)
{
    const config *cfg = cl->ctl->ctx->cfg;
    for (size_t i = 0; i < cfg->nips; i++)
        if (netaddr_equal(cfg->ips[i].address, addr) ||
            (cfg->ips[i].public_address && netaddr_equal(cfg->ips[i].public_address, addr)))
            return (int)i;
    strbuf sb;
    strbuf_init(&sb);
    for (size_t i = 0; i < cfg->nips; i++)
        strbuf_printf(&sb, "%s%s%s%s%s", i ? ", " : "", cfg->ips[i].address,
                      cfg->ips[i].public_address ? " (public " : "",
                      cfg->ips[i].public_address ? cfg->ips[i].public_address : "",
                      cfg->ips[i].public_address ? ")" : "");
    char *e = util_asprintf("unknown IP %s: no ips entry has it as address or public_address "
                            "(ips: %s)",
                            addr, sb.len ? sb.buf : "none");
    control_reply_error(cl, e);
    control_log_cmd(cl->ctl, cmd, addr, e);
    free(e);
    strbuf_free(&sb);
    return -1;
}

/* ip.check: the PTR of the IP's public address and the A/AAAA of its EHLO name, looked up
 * on kilnd's resolver; answered when they are in (mta/ipcheck.h). */
static void control_cmd_ip_check(control_client *cl, const control_request *req)
{
    kiln_ctx *ctx = cl->ctl->ctx;
    const config *cfg = ctx->cfg;
    int i = control_ip_entry(cl, req->name, req->address);
    if (i < 0) return;
    ipchecker *k = ctx->delivery ? delivery_ipcheck(ctx->delivery) : NULL;
    if (!k) {
        const char *e = "no DNS resolver: kilnd cannot look the records up (see the log's "
                        "scheduler.dns)";
        control_reply_error(cl, e);
        control_log_cmd(cl->ctl, req->name, req->address, e);
        return;
    }
    const config_ip *ip = &cfg->ips[i];
    char *from = ip->ehlo ? util_asprintf("ips[%d].ehlo", i) : util_strdup("server.hostname");
    ipcheck_req q = {
        .public_ip = ip->public_address ? ip->public_address : ip->address,
        .bind_ip = ip->address,
        .ehlo = ip->ehlo ? ip->ehlo : cfg->hostname,
        .ehlo_from = from,
    };
    control_pending *p = control_wait(cl, req->name, req->address);
    if (ipchecker_start(k, &q, control_ip_check_answer, p) < 0)
        control_pending_answer(p, NULL, NULL, "not an IP literal");
    free(from);
}

static void control_cmd_zone(control_client *cl, const control_request *req, bool up)
{
    kiln_ctx *ctx = cl->ctl->ctx;
    const char *cmd = up ? "zone.up" : "zone.down";
    const char *zone = req->zone;
    pools *p = control_take_pools(cl, cmd);
    if (!p) return;
    char *err = NULL;
    if (pools_set_zone(p, zone, up, &err) != 0) {
        if (!err) err = util_asprintf("cannot change zone %s", zone);
        control_reply_error(cl, err);
        control_log_cmd(cl->ctl, cmd, zone, err);
        free(err);
        return;
    }
    scheduler_pools_changed(ctx->sched);
    cluster_zone_changed(ctx->cluster, zone, up);      /* every node of a cluster follows */
    json_t *d = json_object();
    timeline_add(ctx->timeline, kiln_now_ms(ctx), up ? "zone_up" : "zone_down", zone,
                 up ? "zone %s up (kilnctl): its IPs back in rotation"
                    : "zone %s down (kilnctl): its IPs out of rotation", zone);
    json_object_set_new(d, "Zone", control_jstr(zone));
    json_object_set_new(d, "State", json_string(up ? "up" : "down"));
    control_reply_ok(cl, d);
    control_log_cmd(cl->ctl, cmd, zone, NULL);
}

/* ---- the queue ---- */

/* The scheduler, or NULL after replying (kilnd is starting). */
static scheduler *control_take_sched(control_client *cl, const char *cmd)
{
    scheduler *sc = cl->ctl->ctx->sched;
    if (!sc) {
        const char *e = "the delivery scheduler is not running";
        control_reply_error(cl, e);
        control_log_cmd(cl->ctl, cmd, NULL, e);
    }
    return sc;
}

/* Appends j as compact JSON and frees it. */
static void control_append_json(strbuf *sb, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    if (!text) util_fatal("control: cannot encode the queue as JSON");
    strbuf_puts(sb, text);
    free(text);
    json_decref(j);
}

/* {"ok":true,"data":{"Queue": [{"Pool","ConfigurationSet","Domain","State","Recipients"}],
 * "Queued", "Deferred", "Domain" (if filtered)}} as one line: recipients grouped by pool, set,
 * domain and state. Pure: the query thread calls it. Written row by row, so that a report
 * of 100,000 domains holds one row's JSON objects at a time besides its text. */
char *control_queue_answer(const scheduler_queue_row *rows, size_t n, const char *domain)
{
    strbuf sb;
    strbuf_init(&sb);
    strbuf_puts(&sb, "{\"ok\":true,\"data\":{\"Queue\":[");
    int64_t queued = 0, deferred = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *o = control_json_queue_row(&rows[i]);
        if (i) strbuf_puts(&sb, ",");
        control_append_json(&sb, o);
        if (strcmp(rows[i].state, "deferred") == 0) deferred += rows[i].recipients;
        else queued += rows[i].recipients;
    }
    strbuf_printf(&sb, "],\"Queued\":%lld,\"Deferred\":%lld", (long long)queued,
                  (long long)deferred);
    if (domain && *domain) {
        strbuf_puts(&sb, ",\"Domain\":");
        control_append_json(&sb, control_jstr(domain));
    }
    strbuf_puts(&sb, "}}");
    return strbuf_steal(&sb);
}

/* kilnctl queue [--domain D]: what is in memory is copied now; the spool's counts, the
 * merge and the answer are made on the query thread (control_query.c), so that a queue of
 * millions of recipients over many domains never holds up the loop. */
static void control_cmd_queue(control_client *cl, const control_request *req)
{
    const char *cmd = "queue";
    const char *domain = req->domain;
    scheduler *sc = control_take_sched(cl, cmd);
    if (!sc) return;
    control *ctl = cl->ctl;
    if (!ctl->query) ctl->query = control_query_new(ctl->ctx->loop, ctl->ctx->cfg->spool);
    scheduler_queue_snap *snap = scheduler_queue_snapshot(sc, domain);
    control_pending *p = control_wait(cl, cmd, domain);
    if (!control_query_queue(ctl->query, p, snap, domain)) {
        scheduler_queue_snap_free(snap);
        char *e = util_asprintf("busy: %d queue reports are being made; try again", CONTROL_QUERY_MAX);
        control_pending_answer(p, NULL, NULL, e);
        free(e);
    }
}

/* queue.explain: control_json_explain's answer (control_json.h). */
static void control_cmd_queue_explain(control_client *cl, const control_request *req)
{
    const char *cmd = "queue.explain";
    if (!control_take_sched(cl, cmd)) return;
    char *e = NULL;
    json_t *d = control_json_explain(cl->ctl->ctx, req->id, &e);
    if (!d) {
        control_reply_error(cl, e);
        control_log_cmd(cl->ctl, cmd, req->id, e);
        free(e);
        return;
    }
    control_reply_ok(cl, d);
    control_log_cmd(cl->ctl, cmd, req->id, NULL);
}

/* ---- dispatch ---- */

void control_cmd_run(control_client *cl, const control_request *req)
{
    switch (req->kind) {
    case CONTROL_CMD_STATUS: control_cmd_status(cl); break;
    case CONTROL_CMD_QUOTA: control_cmd_quota(cl); break;
    case CONTROL_CMD_STATS: control_cmd_stats(cl); break;
    case CONTROL_CMD_REPUTATION: control_cmd_reputation(cl); break;
    case CONTROL_CMD_SUPPRESSION_LIST: control_cmd_suppression_list(cl, req); break;
    case CONTROL_CMD_SUPPRESSION_ADD: control_cmd_suppression_add(cl, req); break;
    case CONTROL_CMD_CLUSTER_STATUS: control_cmd_cluster_status(cl); break;
    case CONTROL_CMD_SUPPRESSION_REMOVE: control_cmd_suppression_remove(cl, req); break;
    case CONTROL_CMD_RELOAD: control_cmd_reload(cl); break;
    case CONTROL_CMD_IPS: control_cmd_ips(cl); break;
    case CONTROL_CMD_IP_WARMUP: control_cmd_ip_warmup(cl, req); break;
    case CONTROL_CMD_IP_CHECK: control_cmd_ip_check(cl, req); break;
    case CONTROL_CMD_ZONE_DOWN: control_cmd_zone(cl, req, false); break;
    case CONTROL_CMD_ZONE_UP: control_cmd_zone(cl, req, true); break;
    case CONTROL_CMD_QUEUE: control_cmd_queue(cl, req); break;
    case CONTROL_CMD_QUEUE_EXPLAIN: control_cmd_queue_explain(cl, req); break;
    case CONTROL_CMD_IDENTITY_STATUS: control_identity_status(cl, req); break;
    case CONTROL_CMD_DKIM_GENERATE: control_identity_dkim(cl, req, false); break;
    case CONTROL_CMD_DKIM_ROTATE: control_identity_dkim(cl, req, true); break;
    case CONTROL_CMD_FORECAST: control_forecast_cmd(cl, req); break;
    }
}
