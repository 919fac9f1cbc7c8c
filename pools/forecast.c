/* forecast.c — the capacity forecast (see forecast.h for the model it promises): each IP's
 * ramp run forward on a copy (standard: pools/warmup.c's own functions; managed: the
 * slow-start doubling of pools.c's growth rule), summed per configuration set over the
 * pool's active IPs. Reads the pools state through pools_internal.h (the ramp position and
 * the managed caps are not in pools_ip_info); writes nothing back. */
#include "pools/forecast.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "pools/complaints.h"
#include "pools/pools_internal.h"
#include "pools/warmup.h"

/* pools_provider_of's names: what a managed IP's mail can be split into. */
static const char *const forecast_builtin_providers[] = {"gmail", "microsoft", "yahoo", "other"};

char *forecast_days_problem(long long days)
{
    if (days >= 1 && days <= FORECAST_MAX_DAYS) return NULL;
    return util_asprintf("days must be from 1 to %d, not %lld", FORECAST_MAX_DAYS, days);
}

/* ---- one standard IP: the live ramp on a copy ---- */

static void forecast_standard(forecast *f, const pools_ip *ip, forecast_ip *out)
{
    const config_warmup *w = &f->warmup;
    warmup_ramp r = ip->ramp;
    int64_t now = f->now_ms;
    int64_t k0 = now <= r.base_ms ? 0 : (now - r.base_ms) / WARMUP_DAY_MS;
    out->target = FORECAST_TARGET_NOT_WITHIN;
    out->reach_day = -1;
    for (int d = 0; d <= f->days; d++) {            /* day `days` only for the reach */
        int64_t t = now + (int64_t)d * WARMUP_DAY_MS;
        int64_t cap = warmup_ramp_daily_cap(&r, w, t);
        if (cap < 0) {                              /* 100 %: no warm-up cap any more */
            if (d < f->days) out->cap[d] = w->target;
            if (out->reach_day < 0) {
                out->reach_day = d;
                out->target = d == 0 ? FORECAST_TARGET_DONE : FORECAST_TARGET_REACHED;
                out->reach_ms = d == 0 ? 0 : r.base_ms + (k0 + d) * WARMUP_DAY_MS;
            }
            continue;
        }
        if (d == f->days) break;
        out->cap[d] = cap;
        if (f->volume) {
            out->needed[d] = cap - cap / 2;         /* ceil(cap/2): 2 * sent >= cap */
            warmup_ramp_record(&r, w, out->needed[d], t);
        }
    }
    if (out->target == FORECAST_TARGET_DONE) out->reach_day = 0;
    out->warmup_status = out->target == FORECAST_TARGET_DONE ? "DONE" : "IN_PROGRESS";
}

/* ---- one managed IP: cap[d+1] = min(target, 2 * cap[d]) per provider ---- */

static void forecast_add_provider(forecast_ip *out, const char *name, int64_t cap, bool known,
                                  bool held)
{
    for (size_t i = 0; i < out->nproviders; i++)
        if (strcmp(out->providers[i].name, name) == 0) return;
    if (out->nproviders >= FORECAST_MAX_PROVIDERS) return;
    forecast_provider *pr = &out->providers[out->nproviders++];
    snprintf(pr->name, sizeof pr->name, "%s", name);
    pr->cap0 = cap;
    pr->known = known;
    pr->held = held;
}

static void forecast_managed(forecast *f, const pools *p, const pools_ip *ip, forecast_ip *out)
{
    const config_warmup *w = &f->warmup;
    out->warmup_status = "NOT_APPLICABLE";
    for (size_t i = 0; i < ip->ncaps; i++)
        forecast_add_provider(out, ip->caps[i]->provider, ip->caps[i]->cap, true,
                              pools_provider_held(p, ip->pool, ip->caps[i]->provider, f->now_ms));
    for (size_t i = 0; i < sizeof forecast_builtin_providers / sizeof forecast_builtin_providers[0];
         i++)
        forecast_add_provider(out, forecast_builtin_providers[i], w->first_day, false,
                              pools_provider_held(p, ip->pool, forecast_builtin_providers[i],
                                                  f->now_ms));
    int64_t caps[FORECAST_MAX_PROVIDERS];
    for (size_t i = 0; i < out->nproviders; i++) caps[i] = out->providers[i].cap0;
    out->target = FORECAST_TARGET_NOT_WITHIN;
    out->reach_day = -1;
    for (int d = 0; d <= f->days; d++) {            /* day `days` only for the reach */
        int64_t sum = 0;
        bool all = true;
        for (size_t i = 0; i < out->nproviders; i++) {
            sum += caps[i];
            if (caps[i] < w->target) all = false;
            if (!out->providers[i].held && caps[i] < w->target)
                caps[i] = caps[i] > w->target - caps[i] ? w->target : 2 * caps[i];
        }
        if (d < f->days) out->cap[d] = sum;
        if (all && out->reach_day < 0) {
            out->reach_day = d;
            out->target = d == 0 ? FORECAST_TARGET_DONE : FORECAST_TARGET_REACHED;
            out->reach_ms = d == 0 ? 0 : f->now_ms + (int64_t)d * WARMUP_DAY_MS;
        }
    }
}

/* ---- the whole forecast ---- */

static bool forecast_pool_wanted(const config *cfg, const char *set, const char *pool)
{
    for (size_t i = 0; i < cfg->nsets; i++)
        if ((!set || strcmp(cfg->sets[i].name, set) == 0) && strcmp(cfg->sets[i].pool, pool) == 0)
            return true;
    return false;
}

static char *forecast_unknown_set(const config *cfg, const char *set)
{
    strbuf sb;
    strbuf_init(&sb);
    strbuf_printf(&sb, "unknown configuration set: %s", set);
    for (size_t i = 0; i < cfg->nsets; i++)
        strbuf_printf(&sb, "%s%s", i == 0 ? " (known: " : ", ", cfg->sets[i].name);
    strbuf_printf(&sb, "%s", cfg->nsets ? ")" : " (no configuration sets are configured)");
    return strbuf_steal(&sb);
}

static void forecast_fill_set(forecast *f, const config *cfg, const config_set *cs,
                              forecast_set *s)
{
    s->name = util_strdup(cs->name);
    s->pool = util_strdup(cs->pool);
    const config_pool *cp = config_find_pool(cfg, cs->pool);
    s->managed = cp && cp->scaling == CONFIG_SCALING_MANAGED;
    s->shared_with = util_calloc(cfg->nsets ? cfg->nsets : 1, sizeof *s->shared_with);
    for (size_t i = 0; i < cfg->nsets; i++)
        if (&cfg->sets[i] != cs && strcmp(cfg->sets[i].pool, cs->pool) == 0)
            s->shared_with[s->nshared++] = util_strdup(cfg->sets[i].name);
    s->ips = util_calloc(f->nips ? f->nips : 1, sizeof *s->ips);
    for (size_t i = 0; i < f->nips; i++) {
        const forecast_ip *ip = &f->ips[i];
        if (strcmp(ip->pool, cs->pool) != 0) continue;
        s->ips[s->nips++] = i;
        if (!ip->counted) continue;
        s->ncounted++;
        for (int d = 0; d < f->days; d++) {
            s->capacity[d] += ip->cap[d];
            s->needed[d] += ip->needed[d];
        }
    }
}

int forecast_build(forecast *f, const pools *p, const config *cfg, const char *set, int days,
                   int64_t now_ms, char **err)
{
    memset(f, 0, sizeof *f);
    char *why = forecast_days_problem(days);
    if (why) {
        *err = why;
        return -1;
    }
    if (set && !config_find_set(cfg, set)) {
        *err = forecast_unknown_set(cfg, set);
        return -1;
    }
    f->days = days;
    f->now_ms = now_ms;
    f->warmup = p->warmup;
    f->volume = p->warmup.advance == CONFIG_ADVANCE_VOLUME;
    f->ips = util_calloc(p->nips ? p->nips : 1, sizeof *f->ips);
    for (size_t i = 0; i < p->nips; i++) {
        const pools_ip *ip = p->ips[i];
        if (!forecast_pool_wanted(cfg, set, ip->pool)) continue;
        forecast_ip *out = &f->ips[f->nips++];
        pools_ip_info in;
        pools_ip_info_of(p, ip, now_ms, &in);
        out->address = util_strdup(ip->address);
        out->public_address = util_strdup(in.public_address);
        out->pool = util_strdup(ip->pool);
        out->managed = ip->managed;
        out->state = in.state;
        out->counted = in.state == POOLS_STATE_ACTIVE;
        if (ip->managed) forecast_managed(f, p, ip, out);
        else forecast_standard(f, ip, out);
    }
    f->sets = util_calloc(cfg->nsets ? cfg->nsets : 1, sizeof *f->sets);
    for (size_t i = 0; i < cfg->nsets; i++)
        if (!set || strcmp(cfg->sets[i].name, set) == 0)
            forecast_fill_set(f, cfg, &cfg->sets[i], &f->sets[f->nsets++]);
    return 0;
}

void forecast_free(forecast *f)
{
    for (size_t i = 0; i < f->nips; i++) {
        free(f->ips[i].address);
        free(f->ips[i].public_address);
        free(f->ips[i].pool);
    }
    free(f->ips);
    for (size_t i = 0; i < f->nsets; i++) {
        forecast_set *s = &f->sets[i];
        free(s->name);
        free(s->pool);
        for (size_t j = 0; j < s->nshared; j++) free(s->shared_with[j]);
        free(s->shared_with);
        free(s->ips);
    }
    free(f->sets);
    memset(f, 0, sizeof *f);
}

const char *forecast_target_text(const forecast *f, const forecast_ip *ip, char *buf, size_t len)
{
    if (ip->target == FORECAST_TARGET_DONE) snprintf(buf, len, "done");
    else if (ip->target == FORECAST_TARGET_REACHED) snprintf(buf, len, "day %d", ip->reach_day);
    else snprintf(buf, len, "not within %d days", f->days);
    return buf;
}
