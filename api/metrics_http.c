/* metrics_http.c — the metrics listener of metrics_http.h: one http_server (api/http.h) on
 * the loop, the auth rule, and the scrape-time collection of gauges from the scheduler,
 * pools, the submission server, events, the spool's send statistics and /proc/self.
 *
 * Promises: a scrape never blocks on the spool beyond what kilnctl status does (the
 * scheduler's maintained counts) plus, at most once per METRICS_REPUTATION_EVERY_MS, the
 * reputation window's statistics buckets (about 1,300 small rows); the queue by pool comes
 * from the in-memory queue (recipients paged out to the spool are shown with pool "").
 * Other GET paths go to the operator web page (api/web.c) under the same auth rule. */
#include "api/metrics_http.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "api/http.h"
#include "api/web.h"
#include "base/kiln.h"
#include "base/metrics.h"
#include "base/util.h"
#include "mta/cluster_stats.h"
#include "mta/events.h"
#include "mta/smtp_server.h"
#include "mta/webhook.h"
#include "pools/pools.h"
#include "scheduler/scheduler.h"
#include "store/reputation.h"
#include "store/spool.h"
#include "store/stats.h"

#define METRICS_MAX_CONNECTIONS 64
#define METRICS_MAX_PER_IP 16
#define METRICS_TIMEOUT_S 30
#define METRICS_REPUTATION_EVERY_MS (30 * 1000)
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct metrics_http {
    kiln_ctx *ctx;
    http_server *http;
    int64_t reputation_at_ms;        /* last reputation computation (0: never) */
};

#define L(...) ((const char *const[]){__VA_ARGS__})

static bool metrics_http_loopback(const char *ip)
{
    if (!ip) return false;
    if (strncmp(ip, "::ffff:", 7) == 0) ip += 7;
    return strncmp(ip, "127.", 4) == 0 || strcmp(ip, "::1") == 0;
}

/* Constant time in the token's content: both sides are hashed, the digests compared with
 * CRYPTO_memcmp (a length difference shows only in the hash's input length). */
static bool metrics_http_token_ok(const char *token, const char *given)
{
    unsigned char a[EVP_MAX_MD_SIZE], b[EVP_MAX_MD_SIZE];
    unsigned la = 0, lb = 0;
    if (!EVP_Digest(token, strlen(token), a, &la, EVP_sha256(), NULL) ||
        !EVP_Digest(given, strlen(given), b, &lb, EVP_sha256(), NULL) || la != lb)
        return false;
    return CRYPTO_memcmp(a, b, la) == 0;
}

int metrics_http_authorize(const char *token, const char *client_ip, const char *authorization)
{
    if (!token) return metrics_http_loopback(client_ip) ? 200 : 403;
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0) return 401;
    const char *given = authorization + 7;
    while (*given == ' ') given++;
    return metrics_http_token_ok(token, given) ? 200 : 401;
}

/* ---- scrape-time gauges ---- */

static metrics_family *metrics_http_fresh(metrics *m, const char *name)
{
    metrics_family *f = metrics_family_get(m, name);
    metrics_family_clear(f);
    return f;
}

static void metrics_http_set(metrics_family *f, const char *const *values, double v)
{
    metrics_series_set(metrics_series_get(f, values), v);
}

static void metrics_http_queue(kiln_ctx *ctx, metrics *m)
{
    metrics_family *f = metrics_http_fresh(m, "kiln_queue_recipients");
    int64_t queued = 0, deferred = 0;
    int out = 0;
    scheduler_counts(ctx->sched, &queued, &deferred, &out);
    scheduler_queue_snap *q = scheduler_queue_snapshot(ctx->sched, NULL);
    scheduler_queue_row *rows = NULL;
    size_t n = scheduler_queue_finish(q, &rows);   /* the in-memory part only */
    int64_t mq = 0, md = 0;
    for (size_t i = 0; i < ctx->cfg->npools; i++) {   /* every pool shows, 0 included */
        metrics_http_set(f, L("queued", ctx->cfg->pools[i].name), 0);
        metrics_http_set(f, L("deferred", ctx->cfg->pools[i].name), 0);
    }
    for (size_t i = 0; i < n; i++) {
        bool d = strcmp(rows[i].state, "deferred") == 0;
        metrics_series_add(metrics_series_get(f, L(d ? "deferred" : "queued",
                                                   rows[i].pool ? rows[i].pool : "")),
                           (double)rows[i].recipients);
        *(d ? &md : &mq) += rows[i].recipients;
    }
    scheduler_queue_free(rows, n);
    if (queued > mq) metrics_http_set(f, L("queued", ""), (double)(queued - mq));
    if (deferred > md) metrics_http_set(f, L("deferred", ""), (double)(deferred - md));

    metrics_family *s = metrics_http_fresh(m, "kiln_sessions");
    metrics_http_set(s, L("in"), ctx->server ? smtp_server_sessions(ctx->server) : 0);
    metrics_http_set(s, L("out"), out);
}

static void metrics_http_ips(kiln_ctx *ctx, metrics *m)
{
    metrics_family *up = metrics_http_fresh(m, "kiln_ip_up");
    metrics_family *st = metrics_http_fresh(m, "kiln_ip_state");
    metrics_family *wr = metrics_http_fresh(m, "kiln_ip_warmup_ratio");
    metrics_family *cap = metrics_http_fresh(m, "kiln_ip_daily_cap");
    metrics_family *sent = metrics_http_fresh(m, "kiln_ip_sent_24h");
    metrics_family *pcap = metrics_http_fresh(m, "kiln_ip_provider_cap");
    metrics_family *psent = metrics_http_fresh(m, "kiln_ip_provider_sent_24h");
    metrics_family *pheld = metrics_http_fresh(m, "kiln_ip_provider_held");
    metrics_family *zone = metrics_http_fresh(m, "kiln_zone_up");
    pools *p = scheduler_pools(ctx->sched);
    int64_t now = kiln_now_ms(ctx);
    for (size_t i = 0; p && i < pools_count(p); i++) {
        pools_ip_info in;
        pools_info(p, i, now, &in);
        metrics_http_set(up, L(in.pool, in.address, in.zone), in.state == POOLS_STATE_ACTIVE);
        metrics_http_set(st, L(in.pool, in.address, pools_state_name(in.state),
                               pools_health_name(in.health)), 1);
        if (!in.managed) metrics_http_set(wr, L(in.pool, in.address), in.warmup_percentage / 100.0);
        if (in.daily_cap >= 0) metrics_http_set(cap, L(in.pool, in.address), (double)in.daily_cap);
        metrics_http_set(sent, L(in.pool, in.address), (double)in.sent_24h);
        for (size_t c = 0; c < in.ncaps; c++) {
            const pools_cap_info *ci = &in.caps[c];
            metrics_http_set(pcap, L(in.pool, in.address, ci->provider), (double)ci->daily_cap);
            metrics_http_set(psent, L(in.pool, in.address, ci->provider), (double)ci->sent_24h);
            metrics_http_set(pheld, L(in.pool, in.address, ci->provider), ci->held);
        }
    }
    for (size_t i = 0; p && i < ctx->cfg->nzones; i++)
        metrics_http_set(zone, L(ctx->cfg->zones[i]), pools_zone_is_up(p, ctx->cfg->zones[i]));
}

typedef struct metrics_http_hooks {
    metrics_family *backlog, *dropped;
} metrics_http_hooks;

static void metrics_http_hook(void *arg, const webhook_info *in)
{
    metrics_http_hooks *h = arg;
    metrics_http_set(h->backlog, L(in->set, in->url), (double)in->backlog);
    metrics_http_set(h->dropped, L(in->set, in->url), (double)in->dropped);
}

typedef struct metrics_http_buckets {
    stats_counts *v;
    size_t n, cap;
} metrics_http_buckets;

static void metrics_http_bucket(void *arg, int64_t bucket_ms, int64_t attempts, int64_t bounces,
                                int64_t complaints, int64_t rejects)
{
    metrics_http_buckets *b = arg;
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->v = util_realloc(b->v, b->cap * sizeof *b->v);
    }
    b->v[b->n++] = (stats_counts){bucket_ms, attempts, bounces, complaints, rejects};
}

/* The account's bounce and complaint rates as kilnctl reputation computes them. */
static void metrics_http_reputation(kiln_ctx *ctx, metrics *m, int64_t *at_ms)
{
    int64_t now = kiln_now_ms(ctx);
    if (*at_ms && now - *at_ms < METRICS_REPUTATION_EVERY_MS && now >= *at_ms) return;
    metrics_http_buckets b = {NULL, 0, 0};
    if (ctx->spool && account_stats_each(ctx, stats_bucket_ms(now - STATS_KEEP_MS),
                                         metrics_http_bucket, &b) == 0) {
        reputation r;
        reputation_compute(b.v, b.n, now, &r);
        metrics_set(m, "kiln_reputation_bounce_ratio", NULL, r.bounce_rate);
        metrics_set(m, "kiln_reputation_complaint_ratio", NULL, r.complaint_rate);
        *at_ms = now;
    }
    free(b.v);
}

/* RSS, CPU time and start time from /proc/self/stat, descriptors from /proc/self/fd. */
static void metrics_http_process(metrics *m)
{
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    FILE *fp = fopen("/proc/self/stat", "re");
    if (fp) {
        char line[1024];
        if (fgets(line, sizeof line, fp)) {
            const char *p = strrchr(line, ')');   /* the command may hold blanks */
            unsigned long ut = 0, stime = 0;
            unsigned long long start = 0;
            long rss = 0;
            /* fields 3.. after ") ": state ... utime(14) stime(15) ... starttime(22) rss(24) */
            if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d "
                                   "%*d %*d %*d %*d %llu %*u %ld", &ut, &stime, &start, &rss) == 4) {
                metrics_set(m, "process_cpu_seconds_total", NULL, (double)(ut + stime) / tick);
                metrics_set(m, "process_resident_memory_bytes", NULL, (double)rss * page);
                FILE *sf = fopen("/proc/stat", "re");
                char l2[256];
                while (sf && fgets(l2, sizeof l2, sf)) {
                    unsigned long long btime;
                    if (sscanf(l2, "btime %llu", &btime) == 1)
                        metrics_set(m, "process_start_time_seconds", NULL,
                                    (double)btime + (double)start / tick);
                }
                if (sf) fclose(sf);
            }
        }
        fclose(fp);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        int n = 0;
        for (struct dirent *e; (e = readdir(d));)
            if (e->d_name[0] != '.') n++;
        closedir(d);
        metrics_set(m, "process_open_fds", NULL, n - 1);   /* minus the directory's own */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        metrics_set(m, "process_max_fds", NULL, (double)rl.rlim_cur);
}

void metrics_http_collect(metrics_http *mh)
{
    kiln_ctx *ctx = mh->ctx;
    metrics *m = ctx->metrics;
    if (ctx->sched) {
        metrics_http_queue(ctx, m);
        metrics_http_ips(ctx, m);
    }
    metrics_http_hooks h = {metrics_http_fresh(m, "kiln_event_backlog"),
                            metrics_http_fresh(m, "kiln_event_dropped")};
    if (ctx->events) events_each_webhook(ctx->events, metrics_http_hook, &h);
    metrics_http_reputation(ctx, m, &mh->reputation_at_ms);
    metrics_set(m, "kiln_start_time_seconds", NULL, (double)ctx->started_ms / 1000);
    metrics_http_process(m);
}

static void metrics_http_answer(http_exchange *x, int status, const char *text)
{
    static const char *const plain[] = {"Content-Type", "text/plain; charset=utf-8", NULL};
    static const char *const bearer[] = {"Content-Type", "text/plain; charset=utf-8",
                                         "WWW-Authenticate", "Bearer realm=\"kiln metrics\"",
                                         NULL};
    static const char *const allow[] = {"Content-Type", "text/plain; charset=utf-8", "Allow",
                                        "GET, HEAD", NULL};
    const char *const *h = status == 401 ? bearer : status == 405 ? allow : plain;
    char *body = util_strdup(text);
    http_reply(x, status, h, body, strlen(body));
}

static void metrics_http_on_request(void *arg, const http_request *req, http_exchange *x)
{
    metrics_http *mh = arg;
    kiln_ctx *ctx = mh->ctx;
    int auth = metrics_http_authorize(ctx->cfg->metrics_token, req->client_ip,
                                      http_request_header(req, "Authorization"));
    if (auth == 401) {
        metrics_http_answer(x, 401, "401 Unauthorized: send Authorization: Bearer <the token "
                                    "of metrics.token_file>\n");
        return;
    }
    if (auth == 403) {
        metrics_http_answer(x, 403, "403 Forbidden: without metrics.token_file only loopback "
                                    "clients may scrape\n");
        return;
    }
    bool head = strcmp(req->method, "HEAD") == 0;
    if (!head && strcmp(req->method, "GET") != 0) {
        metrics_http_answer(x, 405, "405 Method Not Allowed\n");
        return;
    }
    if (strcmp(req->path, "/metrics") != 0) {
        if (web_handle(ctx, req, x)) return;   /* the operator web page (api/web.h) */
        metrics_http_answer(x, 404, "404 Not Found: the metrics are at /metrics, the web page "
                                    "at /\n");
        return;
    }
    metrics_http_collect(mh);
    strbuf sb;
    strbuf_init(&sb);
    metrics_render(ctx->metrics, &sb);
    size_t len = sb.len;
    static const char *const h[] = {"Content-Type", METRICS_CONTENT_TYPE, NULL};
    http_reply(x, 200, h, strbuf_steal(&sb), len);
}

metrics_http *metrics_http_start(kiln_ctx *ctx, char **err)
{
    *err = NULL;
    const config *cfg = ctx->cfg;
    if (cfg->nmetrics_listen == 0) return NULL;
    metrics_http *mh = util_calloc(1, sizeof *mh);
    mh->ctx = ctx;
    http_listen *ls = util_calloc(cfg->nmetrics_listen, sizeof *ls);
    for (size_t i = 0; i < cfg->nmetrics_listen; i++) {
        ls[i].host = cfg->metrics_listen[i].host;
        ls[i].port = cfg->metrics_listen[i].port;
    }
    http_tls tls = {NULL, NULL};
    http_limits lim = {
        .max_body = 4096,
        .max_header = 16 * 1024,
        .max_inflight = 64 * 1024,
        .max_connections = METRICS_MAX_CONNECTIONS,
        .max_per_ip = METRICS_MAX_PER_IP,
        .timeout_s = METRICS_TIMEOUT_S,
    };
    mh->http = http_start(ctx->loop, ctx->log, ls, cfg->nmetrics_listen, &tls, &lim,
                          metrics_http_on_request, mh, err);
    free(ls);
    if (!mh->http) {
        free(mh);
        return NULL;
    }
    return mh;
}

int metrics_http_port(const metrics_http *mh, size_t i)
{
    return http_port(mh->http, i);
}

void metrics_http_quiesce(metrics_http *mh)
{
    if (mh) http_quiesce(mh->http);
}

void metrics_http_stop(metrics_http *mh)
{
    if (!mh) return;
    http_stop(mh->http);
    free(mh);
}
