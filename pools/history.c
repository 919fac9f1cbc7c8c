/* history.c — the per-day sent counters of history.h and the warm-up curve read from them
 * and from the IP's ramp (pools_internal.h). Pure: no I/O, the caller's clock. */
#include "pools/history.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "pools/pools_internal.h"
#include "pools/warmup.h"

static size_t pools_daily_slot(int64_t day)
{
    return (size_t)(((day % POOLS_HISTORY_DAYS) + POOLS_HISTORY_DAYS) % POOLS_HISTORY_DAYS);
}

static int64_t pools_day_of(int64_t ms)
{
    return ms >= 0 ? ms / POOLS_DAY_MS : -((-ms + POOLS_DAY_MS - 1) / POOLS_DAY_MS);
}

void pools_daily_put(pools_daily *d, int64_t day, int64_t sent, int64_t cap, int64_t now_ms)
{
    int64_t today = pools_day_of(now_ms);
    if (sent <= 0 || day > today || day <= today - POOLS_HISTORY_DAYS) return;
    size_t k = pools_daily_slot(day);
    if (d->sent[k] > 0 && d->day[k] == day) {
        d->sent[k] += sent;
    } else {
        d->day[k] = day;
        d->sent[k] = sent;
    }
    d->cap[k] = cap;
}

void pools_daily_add(pools_daily *d, int64_t n, int64_t cap, int64_t now_ms)
{
    pools_daily_put(d, pools_day_of(now_ms), n, cap, now_ms);
}

int64_t pools_daily_get(const pools_daily *d, int64_t day, int64_t *cap)
{
    size_t k = pools_daily_slot(day);
    bool here = d->sent[k] > 0 && d->day[k] == day;
    if (cap) *cap = here ? d->cap[k] : -1;
    return here ? d->sent[k] : 0;
}

size_t pools_history_curve(const pools *p, size_t i, const char *provider, int64_t now_ms,
                           pools_curve_day **out)
{
    *out = NULL;
    if (i >= p->nips) return 0;
    const pools_ip *ip = p->ips[i];
    const managed_cap *mc = NULL;
    if (provider) {
        for (size_t c = 0; c < ip->ncaps && !mc; c++)
            if (strcmp(ip->caps[c]->provider, provider) == 0) mc = ip->caps[c];
        if (!mc) return 0;
    }
    const pools_daily *d = mc ? &mc->hist : &ip->hist;
    int64_t today = pools_day_of(now_ms);
    int64_t first = pools_day_of(ip->lease_ms);
    if (first < today - (POOLS_HISTORY_DAYS - 1)) first = today - (POOLS_HISTORY_DAYS - 1);
    if (first > today) first = today;
    size_t n = (size_t)(today - first + 1);
    pools_curve_day *v = util_calloc(n, sizeof *v);
    for (size_t k = 0; k < n; k++) {
        int64_t day = first + (int64_t)k, cap = -1;
        v[k].day_ms = day * POOLS_DAY_MS;
        v[k].sent = pools_daily_get(d, day, &cap);
        if (day == today) {   /* today: the cap in force now */
            if (mc) cap = mc->cap;
            else if (!ip->managed) cap = warmup_ramp_daily_cap(&ip->ramp, &p->warmup, now_ms);
        } else if (cap < 0 && !mc && !ip->managed) {
            int64_t at = v[k].day_ms;
            if (at < ip->ramp.base_ms && ip->ramp.base_ms < at + POOLS_DAY_MS) at = ip->ramp.base_ms;
            if (at >= ip->ramp.base_ms) cap = warmup_ramp_daily_cap(&ip->ramp, &p->warmup, at);
        }
        v[k].cap = cap;
    }
    *out = v;
    return n;
}
