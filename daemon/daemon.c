/* daemon.c — kilnd's life cycle: builds the one kiln_ctx from a config file, starts the
 * modules in data-flow order (spool, quota, events, scheduler and its delivery executor,
 * submission, control), then drops to server.user (mta/privdrop.h), runs the libev loop,
 * applies reloads (SIGHUP, kilnctl reload) and stops gracefully on SIGTERM/SIGINT.
 *
 * The spool's commit pipeline (store/spool.h) is wired here: once per loop iteration (an
 * ev_prepare) the filling batch is handed to the spool's writer thread if it is free; the
 * writer's wake-up is an ev_async whose handler reaps the finished batch (its commit
 * callbacks: 250 replies, the scheduler told about new messages) on the loop thread. The
 * loop never waits for an fsync except at start-up and at the final flush of a stop. */
#include "daemon/daemon.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "mta/addrwatch.h"
#include "mta/auth.h"
#include "mta/control.h"
#include "mta/curl_ev.h"
#include "mta/dkim_keys.h"
#include "mta/delivery.h"
#include "mta/events.h"
#include "mta/fdlimit.h"
#include "mta/feedback.h"
#include "mta/privdrop.h"
#include "mta/quota.h"
#include "mta/tls.h"
#include "api/api.h"
#include "api/metrics_http.h"
#include "base/metrics.h"
#include "base/timeline.h"
#include "scheduler/scheduler.h"
#include "mta/smtp_server.h"
#include "store/spool.h"
#include "store/stats.h"
#include "base/util.h"
#include "mta/cluster.h"

/* How often event outbox rows are appended to their files (one fdatasync per file each time)
 * and webhook destinations look for new events. */
#define DAEMON_EVENTS_INTERVAL 0.1
/* A graceful stop that has not finished by then ends anyway: in-flight deliveries stay
 * queued in the spool and are retried at the next start. */
#define DAEMON_STOP_DEADLINE 10.0
typedef struct daemon_watchers {
    ev_prepare commit;
    ev_async committed;     /* the spool's writer finished a batch */
    ev_timer events_timer;
    ev_signal sighup, sigterm, sigint;
    ev_timer stop_deadline;
    int stop_pending;     /* modules still finishing their graceful stop */
    int exit_status;
    unsigned commit_failures; /* spool batches failed in a row, as last logged */
    bool drain_failing;   /* the last event drain failed (logged once) */
    api *api;             /* the SES v2 API's listeners (NULL: api.listen not set) */
    addrwatch *addrs;     /* the host's address changes (NULL: no netlink socket) */
    feedback *fb;         /* the feedback intake (NULL: no feedback section) */
    smtp_server *fbsrv;   /* its listener */
    metrics_http *metrics;  /* the metrics listener (NULL: metrics.listen not set) */
    char *node;           /* kilnd --node (NULL: cluster.node), applied to every load */
} daemon_watchers;

static int64_t daemon_wall_clock(void *arg)
{
    (void)arg;
    return util_wall_ms();
}

static daemon_watchers *daemon_w(kiln_ctx *ctx);

static void daemon_on_address(void *arg, const char *addr, bool removed)
{
    kiln_ctx *ctx = arg;
    delivery_address_changed(ctx->delivery, addr, removed);
}

/* A failed batch: its error, how many failed in a row, and how many kept writes (outcomes,
 * events, state) wait to be written again; submissions in it were answered 451. */
static void daemon_log_commit_error(kiln_ctx *ctx)
{
    daemon_w(ctx)->commit_failures = spool_failures(ctx->spool);
    log_write(ctx->log, KLOG_ERROR, "spool.commit",
              "error=%s failed_in_a_row=%u kept_writes=%zu note=\"kept writes are retried; "
              "submissions meanwhile get 451\"", log_q(ctx->log, spool_errmsg(ctx->spool)),
              spool_failures(ctx->spool), spool_kept_waiting(ctx->spool));
}

/* The first batch committed after failed ones. */
static void daemon_log_commit_recovery(kiln_ctx *ctx)
{
    daemon_watchers *dw = daemon_w(ctx);
    if (dw->commit_failures == 0 || spool_failures(ctx->spool) != 0) return;
    log_write(ctx->log, KLOG_INFO, "spool.commit", "result=recovered failed_batches=%u",
              dw->commit_failures);
    dw->commit_failures = 0;
}

/* Group commit: before the loop sleeps, the writes of this iteration (and of the ones
 * since the writer took its current batch) go to the writer if it is free; otherwise they
 * go with the next batch, handed over as soon as the current one is reaped. */
static void daemon_on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    kiln_ctx *ctx = w->data;
    spool_submit(ctx->spool);
}

/* The writer finished a batch: its callbacks run here, on the loop thread. */
static void daemon_on_committed(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    kiln_ctx *ctx = w->data;
    if (spool_reap(ctx->spool) != 0) daemon_log_commit_error(ctx);
    else daemon_log_commit_recovery(ctx);
}

/* On the spool's writer thread: only wakes the loop. */
static void daemon_spool_wake(void *arg)
{
    kiln_ctx *ctx = arg;
    ev_async_send(ctx->loop, &daemon_w(ctx)->committed);
}

/* Waits for every batch handed over or filling, running the callbacks (a stop, start-up). */
static void daemon_flush(kiln_ctx *ctx)
{
    if (spool_flush(ctx->spool) != 0) daemon_log_commit_error(ctx);
    else daemon_log_commit_recovery(ctx);
}

/* A failing drain is logged when it starts failing (events.c logs each failure's cause,
 * at debug level while it repeats); events.c logs the recovery. */
static void daemon_drain_events(kiln_ctx *ctx)
{
    daemon_watchers *dw = daemon_w(ctx);
    bool failed = events_drain(ctx->events, ctx->spool, ctx->cfg) < 0;
    if (failed && !dw->drain_failing)
        log_write(ctx->log, KLOG_ERROR, "events.drain", "error=\"events kept in the spool outbox; retrying\"");
    dw->drain_failing = failed;
}

static void daemon_on_events_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    daemon_drain_events(w->data);
}

static int daemon_reload(kiln_ctx *ctx, char **err);
static void daemon_stop(kiln_ctx *ctx);

static void daemon_on_sighup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    kiln_ctx *ctx = w->data;
    char *err = NULL;
    if (daemon_reload(ctx, &err) != 0) {
        log_write(ctx->log, KLOG_ERROR, "config.reload", "result=rejected error=%s",
                  log_q(ctx->log, err));
        timeline_add(ctx->timeline, kiln_now_ms(ctx), "config_rejected", ctx->config_path,
                     "reload (SIGHUP) rejected: %s", err ? err : "");
        free(err);
    }
}

static void daemon_on_sigterm(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    daemon_stop(w->data);
}

static void daemon_finish(kiln_ctx *ctx)
{
    daemon_watchers *dw = daemon_w(ctx);
    ev_timer_stop(ctx->loop, &dw->stop_deadline);
    /* Final commit and event drain, then leave the loop. */
    daemon_flush(ctx);
    daemon_drain_events(ctx);
    daemon_flush(ctx);
    if (spool_kept_waiting(ctx->spool))
        log_write(ctx->log, KLOG_ERROR, "spool.stop",
                  "kept_writes=%zu error=%s note=\"the spool still fails: a few more tries at "
                  "close; outcomes not recorded are attempted again at the next start\"",
                  spool_kept_waiting(ctx->spool), log_q(ctx->log, spool_errmsg(ctx->spool)));
    log_write(ctx->log, KLOG_INFO, "kilnd.stop", "result=done");
    ev_break(ctx->loop, EVBREAK_ALL);
}

static void daemon_module_stopped(void *arg)
{
    kiln_ctx *ctx = arg;
    daemon_watchers *dw = daemon_w(ctx);
    if (--dw->stop_pending == 0) daemon_finish(ctx);
}

static void daemon_on_stop_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    kiln_ctx *ctx = w->data;
    log_write(ctx->log, KLOG_WARNING, "kilnd.stop",
              "result=deadline note=\"open sessions cut; unfinished deliveries stay queued\"");
    daemon_finish(ctx);
}

static void daemon_stop(kiln_ctx *ctx)
{
    if (ctx->stopping) return;
    ctx->stopping = true;
    daemon_watchers *dw = daemon_w(ctx);
    log_write(ctx->log, KLOG_INFO, "kilnd.stop", "result=begin");
    ev_timer_init(&dw->stop_deadline, daemon_on_stop_deadline, DAEMON_STOP_DEADLINE, 0);
    dw->stop_deadline.data = ctx;
    ev_timer_start(ctx->loop, &dw->stop_deadline);
    dw->stop_pending = 2 + (dw->api ? 1 : 0) + (dw->fbsrv ? 1 : 0);
    smtp_server_shutdown(ctx->server, daemon_module_stopped, ctx);
    if (dw->fbsrv) smtp_server_shutdown(dw->fbsrv, daemon_module_stopped, ctx);
    scheduler_stop(ctx->sched, daemon_module_stopped, ctx);
    if (dw->api) api_shutdown(dw->api, daemon_module_stopped, ctx);
    metrics_http_quiesce(dw->metrics);   /* open scrapes are still answered */
}

/* Both NULL, or equal strings. */
static bool daemon_streq_null(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* Settings that a running daemon cannot change without a restart. */
static char *daemon_reload_blocker(const config *old, const config *neu)
{
    if (strcmp(old->spool, neu->spool) != 0)
        return util_asprintf("%s: server.spool cannot change on reload (was %s); restart kilnd",
                             neu->path, old->spool);
    if (strcmp(old->control_socket, neu->control_socket) != 0)
        return util_asprintf("%s: server.control_socket cannot change on reload (was %s); restart kilnd",
                             neu->path, old->control_socket);
    if (old->nlisten != neu->nlisten)
        return util_asprintf("%s: submission.listen cannot change on reload; restart kilnd", neu->path);
    for (size_t i = 0; i < old->nlisten; i++)
        if (strcmp(old->listen[i].host, neu->listen[i].host) != 0 ||
            old->listen[i].port != neu->listen[i].port)
            return util_asprintf("%s: submission.listen cannot change on reload; restart kilnd",
                                 neu->path);
    if (!daemon_streq_null(old->user, neu->user) || !daemon_streq_null(old->group, neu->group))
        return util_asprintf("%s: server.user and server.group cannot change on reload; "
                             "restart kilnd", neu->path);
    if ((old->tls_cert == NULL) != (neu->tls_cert == NULL))
        return util_asprintf("%s: submission.tls cannot be added or removed on reload; restart kilnd",
                             neu->path);
    bool api_same = old->napi_listen == neu->napi_listen &&
                    daemon_streq_null(old->api_tls_cert, neu->api_tls_cert) &&
                    daemon_streq_null(old->api_tls_key, neu->api_tls_key);
    for (size_t i = 0; api_same && i < old->napi_listen; i++)
        api_same = strcmp(old->api_listen[i].host, neu->api_listen[i].host) == 0 &&
                   old->api_listen[i].port == neu->api_listen[i].port;
    if (!api_same)
        return util_asprintf("%s: api.listen and api.tls cannot change on reload; restart kilnd",
                             neu->path);
    bool fb_same = old->feedback_on == neu->feedback_on &&
                   old->nfeedback_listen == neu->nfeedback_listen;
    for (size_t i = 0; fb_same && i < old->nfeedback_listen; i++)
        fb_same = strcmp(old->feedback_listen[i].host, neu->feedback_listen[i].host) == 0 &&
                  old->feedback_listen[i].port == neu->feedback_listen[i].port;
    if (!fb_same)
        return util_asprintf("%s: the feedback section and feedback.listen cannot be added, "
                             "removed or changed on reload; restart kilnd", neu->path);
    bool m_same = old->nmetrics_listen == neu->nmetrics_listen;
    for (size_t i = 0; m_same && i < old->nmetrics_listen; i++)
        m_same = strcmp(old->metrics_listen[i].host, neu->metrics_listen[i].host) == 0 &&
                 old->metrics_listen[i].port == neu->metrics_listen[i].port;
    if (!m_same)
        return util_asprintf("%s: metrics.listen cannot change on reload; restart kilnd "
                             "(metrics.token_file can)", neu->path);
    return NULL;
}

static int daemon_reload(kiln_ctx *ctx, char **err)
{
    char *e = NULL;
    config *neu = config_load(ctx->config_path, auth_hash_usable, &e);
    if (!neu) {
        *err = e;
        return -1;
    }
    if (config_cluster_select_node(neu, daemon_w(ctx)->node, &e) != 0) {
        config_unref(neu);
        *err = util_asprintf("%s: %s", ctx->config_path, e);
        free(e);
        return -1;
    }
    char *blocker = daemon_reload_blocker(ctx->cfg, neu);
    if (!blocker) {
        char *cb = cluster_reload_blocker(ctx->cfg, neu);
        if (cb) blocker = util_asprintf("%s: %s", neu->path, cb);
        free(cb);
    }
    if (blocker) {
        config_unref(neu);
        *err = blocker;
        return -1;
    }
    /* event files the reload adds must be writable by the user kilnd runs as now */
    if (privdrop_check_event_files(neu, err) != 0) {
        config_unref(neu);
        return -1;
    }
    /* the DKIM keys the new file names (all or nothing: a bad key keeps the running ones) */
    if (dkim_keys_load(ctx->dkim, neu, err) != 0) {
        config_unref(neu);
        return -1;
    }
    /* a renewed submission certificate: loaded before anything changes, so a bad pair
     * rejects the whole reload (the running config and pair stay) */
    struct tls_ctx *tls = NULL, *fbtls = NULL;
    daemon_watchers *dwr = daemon_w(ctx);
    if (smtp_server_tls_load(ctx->server, neu, &tls, err) != 0 ||
        (dwr->fbsrv && smtp_server_tls_load(dwr->fbsrv, neu, &fbtls, err) != 0)) {
        char *e2 = NULL;
        if (dkim_keys_load(ctx->dkim, ctx->cfg, &e2) != 0) free(e2);   /* the running keys */
        tls_ctx_free(tls);
        config_unref(neu);
        return -1;
    }
    if (fbtls) smtp_server_tls_swap(dwr->fbsrv, fbtls);
    if (tls) {
        smtp_server_tls_swap(ctx->server, tls);
        log_write(ctx->log, KLOG_INFO, "config.reload", "tls=renewed cert=%s key=%s",
                  log_q(ctx->log, neu->tls_cert), log_q(ctx->log, neu->tls_key));
    }
    config *old = ctx->cfg;
    ctx->cfg = neu;
    log_set_level(ctx->log, (klog_level)neu->log_level);
    quota_set_limits(ctx->quota, neu->max_send_rate, neu->max_24h_send, kiln_now_ms(ctx));
    scheduler_config_changed(ctx->sched);
    events_configure(ctx->events, ctx->spool, neu);
    if (daemon_w(ctx)->api) api_config_changed(daemon_w(ctx)->api);
    if (daemon_w(ctx)->fb) feedback_config_changed(daemon_w(ctx)->fb);
    if (ctx->cluster) cluster_reload(ctx->cluster);
    config_unref(old);
    for (size_t i = 0; i < neu->nwarnings; i++)
        log_write(ctx->log, KLOG_WARNING, "config.warning", "msg=%s", log_q(ctx->log, neu->warnings[i]));
    log_write(ctx->log, KLOG_INFO, "config.reload", "result=applied file=%s", log_q(ctx->log, neu->path));
    timeline_add(ctx->timeline, kiln_now_ms(ctx), "config_reload", neu->path,
                 "config reloaded from %s", neu->path ? neu->path : "");
    return 0;
}

static void daemon_load_quota(void *arg, int64_t created_ms, unsigned count)
{
    kiln_ctx *ctx = arg;
    quota_daily_load(ctx->quota, created_ms, count, kiln_now_ms(ctx));
}

kiln_ctx *daemon_create(const char *config_path, const char *node, char **err)
{
    config *cfg = config_load(config_path, auth_hash_usable, err);
    if (!cfg) return NULL;
    char *nerr = NULL;
    if (config_cluster_select_node(cfg, node, &nerr) != 0) {
        *err = util_asprintf("%s: %s", config_path, nerr);
        free(nerr);
        config_unref(cfg);
        return NULL;
    }
    /* least privilege: resolve server.user, create and hand over its files as root */
    privdrop pd;
    if (privdrop_resolve(cfg, &pd, err) != 0 || privdrop_prepare(cfg, &pd, err) != 0) {
        privdrop_clear(&pd);
        config_unref(cfg);
        return NULL;
    }
    kiln_ctx *ctx = util_calloc(1, sizeof *ctx);
    daemon_watchers *dw = util_calloc(1, sizeof *dw);
    static const kiln_ops daemon_ops = {daemon_reload, daemon_stop};
    ctx->ops = &daemon_ops;
    dw->node = util_strdup(node);
    ctx->config_path = util_strdup(config_path);
    ctx->cfg = cfg;
    ctx->clock = daemon_wall_clock;
    ctx->loop = ev_default_loop(EVFLAG_AUTO);
    ev_set_userdata(ctx->loop, dw);
    ctx->log = log_open(cfg->log, (klog_level)cfg->log_level, err);
    if (!ctx->log) goto fail;
    for (size_t i = 0; i < cfg->nwarnings; i++)
        log_write(ctx->log, KLOG_WARNING, "config.warning", "msg=%s", log_q(ctx->log, cfg->warnings[i]));
    size_t nfw = 0;
    char **fw = config_file_warnings(cfg, &nfw);
    for (size_t i = 0; i < nfw; i++)
        log_write(ctx->log, KLOG_WARNING, "config.warning", "msg=%s", log_q(ctx->log, fw[i]));
    config_file_warnings_free(fw, nfw);

    {   /* the session caps are derived from the descriptor limit (mta/smtp_limits.h) */
        int64_t before, after;
        char *why = NULL;
        if (fdlimit_raise(&before, &after, &why) != 0)
            log_write(ctx->log, KLOG_WARNING, "kilnd.fd_limit", "nofile=%lld error=%s",
                      (long long)before, log_q(ctx->log, why));
        else
            log_write(ctx->log, KLOG_INFO, "kilnd.fd_limit", "nofile=%lld raised_from=%lld",
                      (long long)after, (long long)before);
        free(why);
    }
    ctx->metrics = metrics_new_kiln();
    ctx->timeline = timeline_new();
    ctx->spool = spool_open(cfg->spool, true, err);
    if (!ctx->spool) goto fail;
    spool_set_metrics(ctx->spool, ctx->metrics);
    ev_async_init(&dw->committed, daemon_on_committed);
    dw->committed.data = ctx;
    ev_async_start(ctx->loop, &dw->committed);
    spool_set_wake(ctx->spool, daemon_spool_wake, ctx);
    int64_t now = kiln_now_ms(ctx);
    ctx->quota = quota_new(cfg->max_send_rate, cfg->max_24h_send, now);
    if (spool_each_sent_since(ctx->spool, now - 24 * 3600 * 1000LL, daemon_load_quota, ctx) != 0) {
        *err = util_asprintf("spool %s: cannot read the 24 h send history: %s", cfg->spool,
                             spool_errmsg(ctx->spool));
        goto fail;
    }
    int64_t legacy_events;
    if (stats_legacy_outbox(ctx->spool, &legacy_events) != 0) {
        *err = util_asprintf("spool %s: cannot set up the send statistics: %s", cfg->spool,
                             spool_errmsg(ctx->spool));
        goto fail;
    }
    ctx->dkim = dkim_keys_new(cfg->spool, ctx->log);
    if (dkim_keys_load(ctx->dkim, cfg, err) != 0) goto fail;
    ctx->curl = curl_ev_new(ctx->loop);
    ctx->events = events_new(ctx->log);
    events_stats_legacy(ctx->events, legacy_events);
    events_attach_loop(ctx->events, ctx->loop, ctx->curl);
    events_configure(ctx->events, ctx->spool, cfg);
    /* the scheduler (a data structure) and its executor (delivery sessions) */
    ctx->sched = scheduler_new(ctx, &(scheduler_options){.mem_rcpts = cfg->queue_memory_recipients});
    ctx->delivery = delivery_new(ctx, ctx->sched);
    scheduler_set_exec(ctx->sched, &delivery_exec_ops, ctx->delivery);
    {
        char *why = NULL;
        dw->addrs = addrwatch_new(ctx->loop, daemon_on_address, ctx, &why);
        if (!dw->addrs)
            log_write(ctx->log, KLOG_WARNING, "kilnd.addrwatch",
                      "error=%s msg=%s", log_q(ctx->log, why),
                      log_q(ctx->log, "a source address leaving the host is noticed only when "
                                      "binding to it fails"));
        free(why);
    }
    int64_t recovered = scheduler_recover(ctx->sched);
    if (recovered < 0) {
        *err = util_asprintf("spool %s: cannot recover the queue: %s", cfg->spool,
                             spool_errmsg(ctx->spool));
        goto fail;
    }
    ctx->server = smtp_server_start(ctx, err);
    if (!ctx->server) goto fail;
    dw->fb = feedback_new(ctx);
    if (dw->fb) {
        dw->fbsrv = smtp_server_start_feedback(ctx, dw->fb, true, err);
        if (!dw->fbsrv) goto fail;
    }
    ctx->control = control_start(ctx, err);
    if (!ctx->control) goto fail;
    dw->api = api_start(ctx, err);
    if (!dw->api && *err) goto fail;
    dw->metrics = metrics_http_start(ctx, err);
    if (!dw->metrics && *err) goto fail;
    /* everything that needs root is done: hand the spool over and drop for good */
    if (privdrop_handover(cfg, &pd, err) != 0 || privdrop_drop(&pd, err) != 0) goto fail;
    if (pd.drop)
        log_write(ctx->log, KLOG_INFO, "kilnd.privileges", "user=%s group=%s uid=%u gid=%u",
                  log_q(ctx->log, pd.user), log_q(ctx->log, pd.group), (unsigned)pd.uid,
                  (unsigned)pd.gid);
    privdrop_clear(&pd);
    ctx->started_ms = kiln_now_ms(ctx);
    if (cfg->cluster_on) {    /* Redis is reached after the drop, as the user kilnd runs as */
        ctx->cluster = cluster_new(ctx);
        cluster_start(ctx->cluster);
        log_write(ctx->log, KLOG_INFO, "cluster.start", "node=%s redis=%s nodes=%zu",
                  log_q(ctx->log, cfg->cluster_node), log_q(ctx->log, cfg->cluster_redis_url),
                  cfg->ncluster_nodes);
    }

    ev_prepare_init(&dw->commit, daemon_on_prepare);
    dw->commit.data = ctx;
    ev_prepare_start(ctx->loop, &dw->commit);
    ev_timer_init(&dw->events_timer, daemon_on_events_timer, DAEMON_EVENTS_INTERVAL,
                  DAEMON_EVENTS_INTERVAL);
    dw->events_timer.data = ctx;
    ev_timer_start(ctx->loop, &dw->events_timer);
    ev_signal_init(&dw->sighup, daemon_on_sighup, SIGHUP);
    ev_signal_init(&dw->sigterm, daemon_on_sigterm, SIGTERM);
    ev_signal_init(&dw->sigint, daemon_on_sigterm, SIGINT);
    dw->sighup.data = dw->sigterm.data = dw->sigint.data = ctx;
    ev_signal_start(ctx->loop, &dw->sighup);
    ev_signal_start(ctx->loop, &dw->sigterm);
    ev_signal_start(ctx->loop, &dw->sigint);
    signal(SIGPIPE, SIG_IGN);

    log_write(ctx->log, KLOG_INFO, "kilnd.start", "config=%s spool=%s recovered=%lld",
              log_q(ctx->log, cfg->path), log_q(ctx->log, cfg->spool), (long long)recovered);
    return ctx;
fail:
    privdrop_clear(&pd);
    daemon_destroy(ctx);
    return NULL;
}

static daemon_watchers *daemon_w(kiln_ctx *ctx)
{
    return ev_userdata(ctx->loop);
}

int daemon_run(kiln_ctx *ctx)
{
    ev_run(ctx->loop, 0);
    return daemon_w(ctx)->exit_status;
}

void daemon_destroy(kiln_ctx *ctx)
{
    if (!ctx) return;
    daemon_watchers *dw = ctx->loop ? daemon_w(ctx) : NULL;
    if (ctx->spool) spool_set_wake(ctx->spool, NULL, NULL);
    if (dw && ctx->loop) {
        ev_prepare_stop(ctx->loop, &dw->commit);
        ev_async_stop(ctx->loop, &dw->committed);
        ev_timer_stop(ctx->loop, &dw->events_timer);
        ev_timer_stop(ctx->loop, &dw->stop_deadline);
        ev_signal_stop(ctx->loop, &dw->sighup);
        ev_signal_stop(ctx->loop, &dw->sigterm);
        ev_signal_stop(ctx->loop, &dw->sigint);
    }
    if (ctx->control) control_free(ctx->control);
    if (ctx->server) smtp_server_free(ctx->server);
    if (dw && dw->fbsrv) smtp_server_free(dw->fbsrv);
    if (dw) addrwatch_free(dw->addrs);
    if (ctx->delivery) delivery_free(ctx->delivery);   /* its sessions end before the scheduler */
    if (ctx->sched) scheduler_free(ctx->sched);
    /* before the flush: suppression writes Redis did not take become pending rows */
    cluster_free(ctx->cluster);
    ctx->cluster = NULL;
    if (ctx->spool) spool_flush(ctx->spool);
    if (dw) feedback_free(dw->fb);      /* after the flush ran its commit callbacks */
    /* after everything that may still answer an API call (identity checks ended by
     * delivery_free, commit callbacks run by the flush) */
    if (dw && dw->api) api_stop(dw->api);
    if (dw) metrics_http_stop(dw->metrics);
    if (ctx->events) events_free(ctx->events);
    if (ctx->curl) curl_ev_free(ctx->curl);   /* after every easy handle is gone */
    dkim_keys_free(ctx->dkim);
    if (ctx->spool) spool_close(ctx->spool);
    if (ctx->quota) quota_free(ctx->quota);
    if (ctx->log) log_close(ctx->log);
    metrics_free(ctx->metrics);   /* after every module that counts */
    timeline_free(ctx->timeline);
    ctx->timeline = NULL;
    if (ctx->cfg) config_unref(ctx->cfg);
    free(ctx->config_path);
    if (dw) free(dw->node);
    free(dw);
    if (ctx->loop) ev_loop_destroy(ctx->loop);
    free(ctx);
}
