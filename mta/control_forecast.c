/* control_forecast.c — the control command `forecast` (`kilnctl forecast [--set S] [--days
 * N]`, issue 15 item 2): the capacity forecast of pools/forecast.h over the scheduler's pools
 * state and the running config, as JSON. Arguments arrive checked by control_parse.c (days
 * in 1..FORECAST_MAX_DAYS); an unknown set is refused here with forecast_build's reason,
 * which names it and the known ones. Answers at once and logs one control.cmd line. Kept
 * apart from control_cmd.c, which is near the size limit.
 *
 * The answer: {"Forecast": {Now, Days, Advance, FirstDay, Target, RampDays,
 *   ConfigurationSets: [{ConfigurationSet, PoolName, Scaling, SharedWith: [set...],
 *     Ips: [counted IP...], Excluded: [{Ip, State}], Daily: [{Day, Date, RecipientsPerDay,
 *     NeededPerDay (advance volume only)}]}],
 *   Ips: [{Ip, BindAddress, PoolName, Managed, State, Counted, WarmupStatus, DailyCaps: [N],
 *     NeededPerDay: [N] (advance volume, standard pools only), ReachesTarget ("done",
 *     "day D", "not within N days"), ReachesTargetDay (or null), ReachesTargetAt (ISO 8601,
 *     or null), Providers: [{Provider, DailyCap, Known, Held}] (managed only)}]}}
 * Ip is the address the world sees (public_address behind NAT), as in `ips`. */
#include "mta/control_internal.h"

#include <jansson.h>
#include <stdlib.h>

#include "base/kiln.h"
#include "pools/forecast.h"
#include "pools/pools.h"
#include "scheduler/scheduler.h"

static json_t *control_forecast_iso(int64_t ms)
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
        json_object_set_new(row, "Date", control_forecast_iso(f->now_ms + (int64_t)d * 86400000));
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
                        reached ? control_forecast_iso(ip->reach_ms) : json_null());
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

void control_forecast_cmd(control_client *cl, const control_request *req)
{
    kiln_ctx *ctx = cl->ctl->ctx;
    const char *cmd = "forecast";
    pools *p = ctx->sched ? scheduler_pools(ctx->sched) : NULL;
    if (!p) {
        const char *e = "the delivery scheduler is not running";
        control_reply_error(cl, e);
        control_log_cmd(cl->ctl, cmd, req->set, e);
        return;
    }
    int64_t now = kiln_now_ms(ctx);
    forecast f;
    char *err = NULL;
    if (forecast_build(&f, p, ctx->cfg, req->set, req->days, now, &err) != 0) {
        control_reply_error(cl, err);
        control_log_cmd(cl->ctl, cmd, req->set, err);
        free(err);
        forecast_free(&f);
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "Now", control_forecast_iso(now));
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
    json_t *d = json_object();
    json_object_set_new(d, "Forecast", o);
    control_reply_ok(cl, d);
    control_log_cmd(cl->ctl, cmd, req->set, NULL);
}
