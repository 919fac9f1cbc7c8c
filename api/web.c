/* web.c — the operator web page's routes (web.h): the embedded static files and four JSON
 * reads, on the metrics listener (api/metrics_http.c checks the auth rule and the method
 * first). Read-only: nothing here changes kilnd's state.
 *
 * Promises: every answer is made on the loop from memory, never from the spool, so loading
 * the page costs what a scrape does: the IPs and the forecast read the pools state through
 * mta/control_json.h (the same objects as kilnctl --json ips / forecast / queue --explain);
 * the queue is the scheduler's in-memory snapshot (the one /metrics uses), its rows capped
 * at WEB_QUEUE_ROWS by recipients, and recipients paged out to the spool are given as totals
 * only (the full report with the spool's counts is kilnctl queue's, made on a worker
 * thread); deferrals/bounces and events come from the bounded rings of base/timeline.h. */
#include "api/web.h"

#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "api/http.h"
#include "base/kiln.h"
#include "base/timeline.h"
#include "base/util.h"
#include "mta/control_json.h"
#include "pools/forecast.h"
#include "pools/history.h"
#include "pools/pools.h"
#include "scheduler/scheduler.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0.1.0"
#endif

#define WEB_QUEUE_ROWS 200
#define WEB_WARMUP_DAYS 14      /* forecast days ahead on the warm-up chart */
#define WEB_CSP "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

static void web_reply(http_exchange *x, int status, const char *type, char *body, size_t len)
{
    const char *const h[] = {"Content-Type", type,
                             "Content-Security-Policy", WEB_CSP,
                             "X-Content-Type-Options", "nosniff",
                             "Referrer-Policy", "no-referrer",
                             "Cache-Control", "no-store",
                             NULL};
    http_reply(x, status, h, body, len);
}

/* Answers j (stolen) as JSON. */
static void web_reply_json(http_exchange *x, int status, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!text) util_fatal("web: cannot encode an answer as JSON");
    web_reply(x, status, "application/json", text, strlen(text));
}

static void web_reply_error(http_exchange *x, int status, const char *message)
{
    json_t *j = json_object();
    json_object_set_new(j, "message", json_string(message));
    web_reply_json(x, status, j);
}

static json_t *web_iso(int64_t ms)
{
    char ts[32];
    util_iso8601(ms, ts);
    return json_string(ts);
}

static int web_hex(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

char *web_query_param(const char *query, const char *name)
{
    size_t nlen = strlen(name);
    for (const char *p = query ? query : ""; *p;) {
        const char *end = strchr(p, '&');
        if (!end) end = p + strlen(p);
        if ((size_t)(end - p) >= nlen && strncmp(p, name, nlen) == 0 &&
            (p[nlen] == '=' || p + nlen == end)) {
            const char *v = p + nlen + (p[nlen] == '=');
            char *out = util_malloc((size_t)(end - v) + 1), *o = out;
            for (; v < end; v++) {
                int hi, lo;
                if (*v == '+') *o++ = ' ';
                else if (*v == '%' && v + 2 < end && (hi = web_hex(v[1])) >= 0 &&
                         (lo = web_hex(v[2])) >= 0) {
                    *o++ = (char)(hi * 16 + lo);
                    v += 2;
                } else *o++ = *v;
            }
            *o = 0;
            if (memchr(out, 0, (size_t)(o - out))) {   /* %00: not a name kiln knows */
                free(out);
                return NULL;
            }
            return out;
        }
        p = *end ? end + 1 : end;
    }
    return NULL;
}

/* ---- /api/state.json ---- */

static json_t *web_zones_json(kiln_ctx *ctx, pools *p, int64_t now)
{
    json_t *zones = json_array();
    for (size_t z = 0; z < ctx->cfg->nzones; z++) {
        const char *name = ctx->cfg->zones[z];
        int total = 0, active = 0;
        for (size_t i = 0; p && i < pools_count(p); i++) {
            pools_ip_info in;
            pools_info(p, i, now, &in);
            if (!in.zone || strcmp(in.zone, name) != 0) continue;
            total++;
            active += in.state == POOLS_STATE_ACTIVE;
        }
        json_t *o = json_object();
        json_object_set_new(o, "Zone", json_string(name));
        json_object_set_new(o, "State", json_string(p && pools_zone_is_up(p, name) ? "up" : "down"));
        json_object_set_new(o, "Ips", json_integer(total));
        json_object_set_new(o, "ActiveIps", json_integer(active));
        json_array_append_new(zones, o);
    }
    return zones;
}

static json_t *web_pools_json(const config *cfg)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < cfg->npools; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "PoolName", json_string(cfg->pools[i].name));
        json_object_set_new(o, "Scaling", json_string(cfg->pools[i].scaling == CONFIG_SCALING_MANAGED
                                                          ? "managed" : "standard"));
        json_object_set_new(o, "Overflow", cfg->pools[i].overflow ? json_string(cfg->pools[i].overflow)
                                                                  : json_null());
        json_t *sets = json_array();
        for (size_t s = 0; s < cfg->nsets; s++)
            if (cfg->sets[s].pool && strcmp(cfg->sets[s].pool, cfg->pools[i].name) == 0)
                json_array_append_new(sets, json_string(cfg->sets[s].name));
        json_object_set_new(o, "ConfigurationSets", sets);
        json_array_append_new(arr, o);
    }
    return arr;
}

static int web_row_cmp(const void *a, const void *b)
{
    const scheduler_queue_row *x = a, *y = b;
    return x->recipients < y->recipients ? 1 : x->recipients > y->recipients ? -1 : 0;
}

/* The in-memory queue by set/pool/domain/state (the largest WEB_QUEUE_ROWS rows) and the
 * totals, with what only the spool holds. */
static json_t *web_queue_json(kiln_ctx *ctx)
{
    json_t *o = json_object();
    int64_t queued = 0, deferred = 0, mq = 0, md = 0;
    int out = 0;
    json_t *rows_json = json_array();
    size_t n = 0;
    if (ctx->sched) {
        scheduler_counts(ctx->sched, &queued, &deferred, &out);
        scheduler_queue_row *rows = NULL;
        n = scheduler_queue_finish(scheduler_queue_snapshot(ctx->sched, NULL), &rows);
        for (size_t i = 0; i < n; i++)
            *(strcmp(rows[i].state, "deferred") == 0 ? &md : &mq) += rows[i].recipients;
        if (n > 1) qsort(rows, n, sizeof *rows, web_row_cmp);
        for (size_t i = 0; i < n && i < WEB_QUEUE_ROWS; i++)
            json_array_append_new(rows_json, control_json_queue_row(&rows[i]));
        scheduler_queue_free(rows, n);
    }
    json_object_set_new(o, "Queue", rows_json);
    json_object_set_new(o, "Rows", json_integer((json_int_t)n));
    json_object_set_new(o, "Queued", json_integer(queued));
    json_object_set_new(o, "Deferred", json_integer(deferred));
    json_object_set_new(o, "QueuedInSpoolOnly", json_integer(queued > mq ? queued - mq : 0));
    json_object_set_new(o, "DeferredInSpoolOnly", json_integer(deferred > md ? deferred - md : 0));
    json_object_set_new(o, "SessionsOut", json_integer(out));
    return o;
}

/* The kept deferrals and bounces grouped by (outcome, reason), most frequent first. */
static json_t *web_recent_json(const timeline *t)
{
    size_t n = timeline_outcome_count(t);
    json_t *groups = json_array();
    json_t *index = json_object();   /* "outcome reason" -> its group */
    int64_t oldest = 0;
    for (size_t i = 0; i < n; i++) {   /* newest first: a group's first one is its latest */
        const timeline_outcome *o = timeline_outcome_get(t, i);
        oldest = o->at_ms;
        char *key = util_asprintf("%s %s", o->outcome, o->reason);
        json_t *g = json_object_get(index, key);
        if (!g) {
            g = json_object();
            json_object_set_new(g, "Outcome", json_string(o->outcome));
            json_object_set_new(g, "Reason", json_string(o->reason));
            json_object_set_new(g, "Count", json_integer(0));
            json_object_set_new(g, "LastAt", web_iso(o->at_ms));
            json_object_set_new(g, "LastDomain", json_string(o->domain));
            json_object_set_new(g, "LastIp", json_string(o->ip));
            json_t *r = json_string(o->reply);
            json_object_set_new(g, "LastReply", r ? r : json_string("?"));
            json_object_set(index, key, g);
            json_array_append_new(groups, g);
        }
        json_object_set_new(g, "Count", json_integer(json_integer_value(json_object_get(g, "Count")) + 1));
        free(key);
    }
    json_decref(index);
    size_t ng = json_array_size(groups);   /* most frequent first (insertion sort: few groups) */
    for (size_t i = 1; i < ng; i++)
        for (size_t k = i; k > 0; k--) {
            json_t *a = json_array_get(groups, k - 1), *b = json_array_get(groups, k);
            if (json_integer_value(json_object_get(a, "Count")) >=
                json_integer_value(json_object_get(b, "Count")))
                break;
            json_incref(a);
            json_array_set(groups, k - 1, b);
            json_array_set_new(groups, k, a);
        }
    json_t *o = json_object();
    json_object_set_new(o, "Kept", json_integer((json_int_t)n));
    json_object_set_new(o, "Since", n ? web_iso(oldest) : json_null());
    json_object_set_new(o, "ByReason", groups);
    return o;
}

static json_t *web_timeline_json(const timeline *t)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < timeline_count(t); i++) {
        const timeline_event *e = timeline_get(t, i);
        json_t *o = json_object();
        json_object_set_new(o, "At", web_iso(e->at_ms));
        json_object_set_new(o, "Kind", json_string(e->kind));
        json_t *s = json_string(e->subject), *tx = json_string(e->text);
        json_object_set_new(o, "Subject", s ? s : json_string("?"));
        json_object_set_new(o, "Text", tx ? tx : json_string("?"));
        json_array_append_new(arr, o);
    }
    return arr;
}

static void web_state(kiln_ctx *ctx, http_exchange *x)
{
    int64_t now = kiln_now_ms(ctx);
    pools *p = ctx->sched ? scheduler_pools(ctx->sched) : NULL;
    json_t *d = json_object();
    json_object_set_new(d, "Now", web_iso(now));
    json_object_set_new(d, "Hostname", json_string(ctx->cfg->hostname ? ctx->cfg->hostname : ""));
    json_object_set_new(d, "Version", json_string(PACKAGE_VERSION));
    json_object_set_new(d, "Uptime", json_integer((now - ctx->started_ms) / 1000));
    json_t *ips = json_array();
    for (size_t i = 0; p && i < pools_count(p); i++) {
        pools_ip_info in;
        pools_info(p, i, now, &in);
        json_array_append_new(ips, control_json_ip(&in, now));
    }
    json_object_set_new(d, "DedicatedIps", ips);
    json_object_set_new(d, "Pools", web_pools_json(ctx->cfg));
    json_object_set_new(d, "Zones", web_zones_json(ctx, p, now));
    json_object_set_new(d, "Queue", web_queue_json(ctx));
    json_object_set_new(d, "Recent", web_recent_json(ctx->timeline));
    json_object_set_new(d, "Timeline", web_timeline_json(ctx->timeline));
    json_object_set_new(d, "TimelineTotal", json_integer((json_int_t)timeline_total(ctx->timeline)));
    web_reply_json(x, 200, d);
}

/* ---- /api/warmup.json ---- */

static json_t *web_curve_json(const pools *p, size_t i, const char *provider, int64_t now)
{
    pools_curve_day *v = NULL;
    size_t n = pools_history_curve(p, i, provider, now, &v);
    json_t *arr = json_array();
    for (size_t k = 0; k < n; k++) {
        char ts[32];
        util_iso8601(v[k].day_ms, ts);
        ts[10] = 0;   /* the date */
        json_t *o = json_object();
        json_object_set_new(o, "Date", json_string(ts));
        json_object_set_new(o, "Cap", v[k].cap >= 0 ? json_integer(v[k].cap) : json_null());
        json_object_set_new(o, "Sent", json_integer(v[k].sent));
        json_array_append_new(arr, o);
    }
    free(v);
    return arr;
}

static const forecast_ip *web_forecast_ip(const forecast *f, const char *address)
{
    for (size_t i = 0; i < f->nips; i++)
        if (strcmp(f->ips[i].address, address) == 0) return &f->ips[i];
    return NULL;
}

static void web_warmup(kiln_ctx *ctx, http_exchange *x)
{
    int64_t now = kiln_now_ms(ctx);
    pools *p = ctx->sched ? scheduler_pools(ctx->sched) : NULL;
    if (!p) {
        web_reply_error(x, 503, "the delivery scheduler is not running");
        return;
    }
    forecast f;
    char *err = NULL;
    bool have_f = forecast_build(&f, p, ctx->cfg, NULL, WEB_WARMUP_DAYS, now, &err) == 0;
    free(err);
    json_t *ips = json_array();
    for (size_t i = 0; i < pools_count(p); i++) {
        pools_ip_info in;
        pools_info(p, i, now, &in);
        json_t *o = json_object();
        json_object_set_new(o, "Ip", json_string(in.public_address));
        json_object_set_new(o, "BindAddress", json_string(in.address));
        json_object_set_new(o, "PoolName", json_string(in.pool));
        json_object_set_new(o, "Managed", json_boolean(in.managed));
        json_object_set_new(o, "WarmupPercentage", json_integer(in.warmup_percentage));
        json_object_set_new(o, "DailyCap", json_integer(in.daily_cap));
        json_object_set_new(o, "Curve", web_curve_json(p, i, NULL, now));
        json_t *ahead = json_array();   /* forecast days 1..N-1 (day 0 is today's curve point) */
        const forecast_ip *fi = have_f ? web_forecast_ip(&f, in.address) : NULL;
        for (int d = 1; fi && d < f.days; d++) {
            char ts[32];
            util_iso8601(now + (int64_t)d * POOLS_DAY_MS, ts);
            ts[10] = 0;
            json_t *row = json_object();
            json_object_set_new(row, "Date", json_string(ts));
            json_object_set_new(row, "Cap", json_integer(fi->cap[d]));
            json_array_append_new(ahead, row);
        }
        json_object_set_new(o, "Forecast", ahead);
        if (in.managed) {
            json_t *prov = json_array();
            for (size_t c = 0; c < in.ncaps; c++) {
                json_t *po = json_object();
                json_object_set_new(po, "Provider", json_string(in.caps[c].provider));
                json_object_set_new(po, "DailyCap", json_integer(in.caps[c].daily_cap));
                json_object_set_new(po, "Held", json_boolean(in.caps[c].held));
                json_object_set_new(po, "Curve", web_curve_json(p, i, in.caps[c].provider, now));
                json_array_append_new(prov, po);
            }
            json_object_set_new(o, "Providers", prov);
        }
        json_array_append_new(ips, o);
    }
    if (have_f) forecast_free(&f);
    json_t *d = json_object();
    json_object_set_new(d, "Now", web_iso(now));
    json_object_set_new(d, "HistoryDays", json_integer(POOLS_HISTORY_DAYS));
    json_object_set_new(d, "ForecastDays", json_integer(WEB_WARMUP_DAYS));
    json_object_set_new(d, "Target", json_integer(ctx->cfg->warmup.target));
    json_object_set_new(d, "Ips", ips);
    web_reply_json(x, 200, d);
}

/* ---- /api/forecast.json, /api/explain.json ---- */

static void web_forecast(kiln_ctx *ctx, const http_request *req, http_exchange *x)
{
    char *set = web_query_param(req->query, "set");
    char *days_s = web_query_param(req->query, "days");
    long long days = FORECAST_DEFAULT_DAYS;
    char *err = NULL;
    if (days_s && *days_s) {
        char *end;
        days = strtoll(days_s, &end, 10);
        if (*end) err = util_asprintf("days must be a number from 1 to %d", FORECAST_MAX_DAYS);
    }
    if (!err) err = forecast_days_problem(days);
    json_t *o = err ? NULL : control_json_forecast(ctx, set && *set ? set : NULL, (int)days, &err);
    if (o) {
        json_t *d = json_object();
        json_object_set_new(d, "Forecast", o);
        web_reply_json(x, 200, d);
    } else {
        web_reply_error(x, ctx->sched ? 400 : 503, err ? err : "no forecast");
    }
    free(err);
    free(set);
    free(days_s);
}

static void web_explain(kiln_ctx *ctx, const http_request *req, http_exchange *x)
{
    char *id = web_query_param(req->query, "id");
    if (!id || !*id) {
        web_reply_error(x, 400, "explain needs ?id=MESSAGE-ID (kiln's message id: the last "
                                "word of the 250 reply, the API's MessageId)");
        free(id);
        return;
    }
    char *err = NULL;
    json_t *d = control_json_explain(ctx, id, &err);
    if (d) web_reply_json(x, 200, d);
    else web_reply_error(x, ctx->sched ? 404 : 503, err);
    free(err);
    free(id);
}

bool web_handle(kiln_ctx *ctx, const http_request *req, http_exchange *x)
{
    const char *path = req->path;
    for (size_t i = 0; i < web_nassets; i++) {
        if (strcmp(path, web_assets[i].path) != 0) continue;
        char *body = util_malloc(web_assets[i].len + 1);
        memcpy(body, web_assets[i].data, web_assets[i].len);
        web_reply(x, 200, web_assets[i].type, body, web_assets[i].len);
        return true;
    }
    if (strcmp(path, "/api/state.json") == 0) web_state(ctx, x);
    else if (strcmp(path, "/api/warmup.json") == 0) web_warmup(ctx, x);
    else if (strcmp(path, "/api/forecast.json") == 0) web_forecast(ctx, req, x);
    else if (strcmp(path, "/api/explain.json") == 0) web_explain(ctx, req, x);
    else return false;
    return true;
}
