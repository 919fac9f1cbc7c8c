/* control_json.c — the JSON builders of control_json.h, moved here from control_cmd.c and
 * control_forecast.c so that the control socket and the web page (api/web.c) share them:
 * DedicatedIp objects, the capacity forecast, a message's explanation, a queue row. The
 * shapes are documented where the commands are (control_cmd.c, control_forecast.c, README's
 * kilnctl table). */
#include "mta/control_json.h"

#include <jansson.h>
#include <stdlib.h>

#include "base/kiln.h"
#include "base/util.h"
#include "mta/control_internal.h"
#include "pools/forecast.h"
#include "pools/pools.h"
#include "scheduler/scheduler.h"

/* One DedicatedIp object (SES GetDedicatedIps) plus kiln's own fields under "kiln". */
json_t *control_json_ip(const pools_ip_info *in, int64_t now)
{
    json_t *o = json_object();
    json_object_set_new(o, "Ip", control_jstr(in->public_address));   /* what the world sees */
    json_object_set_new(o, "PoolName", control_jstr(in->pool));
    json_object_set_new(o, "Zone", control_jstr(in->zone));
    json_object_set_new(o, "WarmupStatus", control_jstr(in->warmup_status));
    json_object_set_new(o, "WarmupPercentage", json_integer(in->warmup_percentage));
    json_object_set_new(o, "SentLast24Hours", json_integer(in->sent_24h));
    json_object_set_new(o, "DailyCap", json_integer(in->daily_cap));
    json_object_set_new(o, "State", control_jstr(pools_state_name(in->state)));
    json_t *k = json_object();
    json_object_set_new(k, "BindAddress", control_jstr(in->address));   /* the socket's source */
    json_object_set_new(k, "Sessions", json_integer(in->sessions));
    json_object_set_new(k, "HourlyCap", json_integer(in->hourly_cap));
    json_object_set_new(k, "Health", json_string(pools_health_name(in->health)));
    json_object_set_new(k, "DownReason", control_jstr(in->down_reason ? in->down_reason : ""));
    json_object_set_new(k, "Degraded", json_boolean(in->degraded));
    json_object_set_new(k, "Avoided", json_boolean(in->avoided));
    json_object_set_new(k, "DegradedReason",
                        control_jstr(in->degraded_reason ? in->degraded_reason : ""));
    if (in->health == POOLS_HEALTH_OPEN && in->down_until_ms > now) {
        char ts[32];
        util_iso8601(in->down_until_ms, ts);
        json_object_set_new(k, "DownUntil", json_string(ts));
    }
    json_object_set_new(k, "Ehlo", in->ehlo ? control_jstr(in->ehlo) : json_null());
    json_object_set_new(k, "Managed", json_boolean(in->managed));
    if (in->managed) {   /* per mailbox provider: its cap, and whether complaints hold it */
        json_t *caps = json_array();
        for (size_t i = 0; i < in->ncaps; i++) {
            const pools_cap_info *c = &in->caps[i];
            json_t *co = json_object();
            json_object_set_new(co, "Provider", control_jstr(c->provider));
            json_object_set_new(co, "DailyCap", json_integer(c->daily_cap));
            json_object_set_new(co, "SentLast24Hours", json_integer(c->sent_24h));
            json_object_set_new(co, "Held", json_boolean(c->held));
            json_array_append_new(caps, co);
        }
        json_object_set_new(k, "ManagedCaps", caps);
    }
    json_object_set_new(o, "kiln", k);
    return o;
}

static json_t *control_json_iso(int64_t ms)
{
    char ts[32];
    util_iso8601(ms, ts);
    return json_string(ts);
}

static json_t *control_forecast_series(const int64_t *v, int days)
{
    json_t *a = json_array();
    for (int d = 0; d < days; d++) json_array_append_new(a, json_integer(v[d]));
    return a;
}

static json_t *control_forecast_set_json(const forecast *f, const forecast_set *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "ConfigurationSet", control_jstr(s->name));
    json_object_set_new(o, "PoolName", control_jstr(s->pool));
    json_object_set_new(o, "Scaling", json_string(s->managed ? "managed" : "standard"));
    json_t *shared = json_array();
    for (size_t i = 0; i < s->nshared; i++) json_array_append_new(shared, control_jstr(s->shared_with[i]));
    json_object_set_new(o, "SharedWith", shared);
    json_t *ips = json_array(), *excluded = json_array();
    for (size_t i = 0; i < s->nips; i++) {
        const forecast_ip *ip = &f->ips[s->ips[i]];
        if (ip->counted) {
            json_array_append_new(ips, control_jstr(ip->public_address));
        } else {
            json_t *e = json_object();
            json_object_set_new(e, "Ip", control_jstr(ip->public_address));
            json_object_set_new(e, "State", json_string(pools_state_name(ip->state)));
            json_array_append_new(excluded, e);
        }
    }
    json_object_set_new(o, "Ips", ips);
    json_object_set_new(o, "Excluded", excluded);
    json_t *daily = json_array();
    for (int d = 0; d < f->days; d++) {
        json_t *row = json_object();
        json_object_set_new(row, "Day", json_integer(d));
        json_object_set_new(row, "Date", control_json_iso(f->now_ms + (int64_t)d * 86400000));
        json_object_set_new(row, "RecipientsPerDay", json_integer(s->capacity[d]));
        if (f->volume) json_object_set_new(row, "NeededPerDay", json_integer(s->needed[d]));
        json_array_append_new(daily, row);
    }
    json_object_set_new(o, "Daily", daily);
    return o;
}

static json_t *control_forecast_ip_json(const forecast *f, const forecast_ip *ip)
{
    json_t *o = json_object();
    json_object_set_new(o, "Ip", control_jstr(ip->public_address));
    json_object_set_new(o, "BindAddress", control_jstr(ip->address));
    json_object_set_new(o, "PoolName", control_jstr(ip->pool));
    json_object_set_new(o, "Managed", json_boolean(ip->managed));
    json_object_set_new(o, "State", json_string(pools_state_name(ip->state)));
    json_object_set_new(o, "Counted", json_boolean(ip->counted));
    json_object_set_new(o, "WarmupStatus", json_string(ip->warmup_status));
    json_object_set_new(o, "DailyCaps", control_forecast_series(ip->cap, f->days));
    if (f->volume && !ip->managed)
        json_object_set_new(o, "NeededPerDay", control_forecast_series(ip->needed, f->days));
    char buf[64];
    json_object_set_new(o, "ReachesTarget", json_string(forecast_target_text(f, ip, buf, sizeof buf)));
    bool reached = ip->target == FORECAST_TARGET_REACHED;
    json_object_set_new(o, "ReachesTargetDay",
                        ip->target == FORECAST_TARGET_NOT_WITHIN ? json_null()
                                                                 : json_integer(ip->reach_day));
    json_object_set_new(o, "ReachesTargetAt",
                        reached ? control_json_iso(ip->reach_ms) : json_null());
    if (ip->managed) {
        json_t *prov = json_array();
        for (size_t i = 0; i < ip->nproviders; i++) {
            const forecast_provider *pr = &ip->providers[i];
            json_t *po = json_object();
            json_object_set_new(po, "Provider", control_jstr(pr->name));
            json_object_set_new(po, "DailyCap", json_integer(pr->cap0));
            json_object_set_new(po, "Known", json_boolean(pr->known));
            json_object_set_new(po, "Held", json_boolean(pr->held));
            json_array_append_new(prov, po);
        }
        json_object_set_new(o, "Providers", prov);
    }
    return o;
}

json_t *control_json_forecast(kiln_ctx *ctx, const char *set, int days, char **err)
{
    *err = NULL;
    pools *p = ctx->sched ? scheduler_pools(ctx->sched) : NULL;
    if (!p) {
        *err = util_strdup("the delivery scheduler is not running");
        return NULL;
    }
    int64_t now = kiln_now_ms(ctx);
    forecast f;
    if (forecast_build(&f, p, ctx->cfg, set, days, now, err) != 0) {
        forecast_free(&f);
        return NULL;
    }
    json_t *o = json_object();
    json_object_set_new(o, "Now", control_json_iso(now));
    json_object_set_new(o, "Days", json_integer(f.days));
    json_object_set_new(o, "Advance", json_string(f.volume ? "volume" : "calendar"));
    json_object_set_new(o, "FirstDay", json_integer(f.warmup.first_day));
    json_object_set_new(o, "Target", json_integer(f.warmup.target));
    json_object_set_new(o, "RampDays", json_integer(f.warmup.days));
    json_t *sets = json_array(), *ips = json_array();
    for (size_t i = 0; i < f.nsets; i++) json_array_append_new(sets, control_forecast_set_json(&f, &f.sets[i]));
    for (size_t i = 0; i < f.nips; i++) json_array_append_new(ips, control_forecast_ip_json(&f, &f.ips[i]));
    json_object_set_new(o, "ConfigurationSets", sets);
    json_object_set_new(o, "Ips", ips);
    forecast_free(&f);
    return o;
}

json_t *control_json_explain(kiln_ctx *ctx, const char *id, char **err)
{
    *err = NULL;
    if (!ctx->sched) {
        *err = util_strdup("the delivery scheduler is not running");
        return NULL;
    }
    scheduler_explain_row *rows = NULL;
    size_t n = scheduler_explain(ctx->sched, id, &rows);
    if (n == 0) {
        scheduler_explain_free(rows, n);
        *err = util_asprintf("message %s has no recipient in the queue (unknown, or every "
                             "recipient delivered or bounced)", id);
        return NULL;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        const scheduler_explain_row *r = &rows[i];
        json_t *o = json_object();
        json_object_set_new(o, "Recipient", control_jstr(r->recipient));
        json_object_set_new(o, "Domain", control_jstr(r->domain));
        json_object_set_new(o, "ConfigurationSet", control_jstr(r->set));
        json_object_set_new(o, "Pool", control_jstr(r->pool));
        json_object_set_new(o, "State", json_string(r->state));
        json_object_set_new(o, "Reason", control_jstr(r->reason));
        json_object_set_new(o, "Until", r->until_ms > 0 ? control_json_iso(r->until_ms) : json_null());
        json_object_set_new(o, "Attempts", json_integer(r->attempts));
        json_object_set_new(o, "LastReply",
                            r->last_reply ? control_jstr(r->last_reply) : json_null());
        json_array_append_new(arr, o);
    }
    scheduler_explain_free(rows, n);
    json_t *d = json_object();
    json_object_set_new(d, "MessageId", control_jstr(id));
    json_object_set_new(d, "Recipients", arr);
    return d;
}

json_t *control_json_queue_row(const scheduler_queue_row *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "Pool", control_jstr(r->pool));
    json_object_set_new(o, "ConfigurationSet", control_jstr(r->set));
    json_object_set_new(o, "Domain", control_jstr(r->domain));
    json_object_set_new(o, "State", json_string(r->state));
    json_object_set_new(o, "Recipients", json_integer(r->recipients));
    return o;
}
