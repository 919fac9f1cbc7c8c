/* warmup.c — standard warm-up arithmetic, ramp position and rolling usage windows of a
 * dedicated IP (see warmup.h). Pure: state plus the now_ms the caller passes. */
#include "pools/warmup.h"

#include <math.h>
#include <string.h>

/* ---- caps ---- */

int64_t warmup_cap(const config_warmup *w, double pct)
{
    if (!(pct > 0)) pct = 0;            /* also catches NaN */
    if (pct > 100) pct = 100;
    if (w->target <= w->first_day) return w->first_day;
    double ratio = (double)w->target / (double)w->first_day;
    /* The slack absorbs pow()'s last-bit error at exact integers (100 % gives target). */
    double x = (double)w->first_day * pow(ratio, pct / 100.0) + 1e-6;
    int64_t cap = (int64_t)floor(x);
    if (cap < w->first_day) cap = w->first_day;
    if (cap > w->target) cap = w->target;
    return cap;
}

int64_t warmup_pacing_cap(const config_warmup *w, int64_t daily_cap)
{
    if (w->pacing <= 0 || daily_cap < 0) return -1;
    /* ceil(daily_cap * pacing / 24) without overflowing for huge caps */
    int64_t q = daily_cap / 24, r = daily_cap % 24;
    int64_t cap = q * w->pacing + (r * w->pacing + 23) / 24;
    return cap < 1 ? 1 : cap;
}

/* ---- ramp ---- */

static int64_t day_index(const warmup_ramp *r, int64_t now_ms)
{
    return now_ms <= r->base_ms ? 0 : (now_ms - r->base_ms) / WARMUP_DAY_MS;
}

static double pct_after(const warmup_ramp *r, const config_warmup *w, int64_t days)
{
    double p = r->base_pct + 100.0 * (double)days / (double)(w->days > 0 ? w->days : 1);
    if (p > 100) p = 100;
    if (p < 0) p = 0;
    return p;
}

/* Volume advance: did day eval_day reach half of its cap? */
static bool day_qualifies(const warmup_ramp *r, const config_warmup *w)
{
    int64_t cap = warmup_cap(w, pct_after(r, w, r->qualified));
    return r->day_sent >= cap - r->day_sent;     /* 2 * sent >= cap without overflow */
}

void warmup_ramp_start(warmup_ramp *r, double pct, int64_t now_ms)
{
    memset(r, 0, sizeof *r);
    if (!(pct > 0)) pct = 0;
    r->done = pct >= 100;
    r->base_pct = pct > 100 ? 100 : pct;
    r->base_ms = now_ms;
}

double warmup_ramp_pct(const warmup_ramp *r, const config_warmup *w, int64_t now_ms)
{
    if (r->done) return 100;
    int64_t k = day_index(r, now_ms), days;
    if (w->advance == CONFIG_ADVANCE_CALENDAR) {
        days = k;
    } else {
        /* days after eval_day saw no sends (a send would have closed eval_day): they never count */
        days = r->qualified + (k > r->eval_day && day_qualifies(r, w) ? 1 : 0);
    }
    return pct_after(r, w, days);
}

bool warmup_ramp_is_done(const warmup_ramp *r, const config_warmup *w, int64_t now_ms)
{
    return warmup_ramp_pct(r, w, now_ms) >= 100;
}

int64_t warmup_ramp_daily_cap(const warmup_ramp *r, const config_warmup *w, int64_t now_ms)
{
    double p = warmup_ramp_pct(r, w, now_ms);
    return p >= 100 ? -1 : warmup_cap(w, p);
}

int64_t warmup_ramp_next_day_ms(const warmup_ramp *r, const config_warmup *w, int64_t now_ms)
{
    if (warmup_ramp_is_done(r, w, now_ms)) return 0;
    return r->base_ms + (day_index(r, now_ms) + 1) * WARMUP_DAY_MS;
}

void warmup_ramp_record(warmup_ramp *r, const config_warmup *w, int64_t n, int64_t now_ms)
{
    if (r->done) return;
    if (w->advance == CONFIG_ADVANCE_VOLUME) {
        int64_t k = day_index(r, now_ms);
        if (k > r->eval_day) {
            if (day_qualifies(r, w)) r->qualified++;
            r->eval_day = k;
            r->day_sent = 0;
        }
        if (n > 0) r->day_sent += n;
    }
    if (warmup_ramp_pct(r, w, now_ms) >= 100) r->done = true;
}

/* ---- rolling windows ---- */

static int64_t minute_of(int64_t ms)
{
    int64_t m = ms / WARMUP_MINUTE_MS;
    if (ms % WARMUP_MINUTE_MS != 0 && ms < 0) m--;   /* floor for clocks before the epoch */
    return m;
}

static size_t warmup_slot_of(int64_t minute)
{
    int64_t i = minute % WARMUP_BUCKETS;
    if (i < 0) i += WARMUP_BUCKETS;
    return (size_t)i;
}

static int64_t count_at(const warmup_window *w, int64_t minute)
{
    size_t s = warmup_slot_of(minute);
    return w->minute[s] == minute ? w->count[s] : 0;
}

/* Subtracts from *day / *hour what leaves those windows when the clock moves from minute
 * `from` to minute `to` (> from). */
static void expire(const warmup_window *w, int64_t from, int64_t to, int64_t *day, int64_t *hour)
{
    int64_t delta = to - from;
    if (delta > WARMUP_DAY_MINUTES) {
        *day = 0;
    } else {
        for (int64_t m = from - WARMUP_DAY_MINUTES; m < to - WARMUP_DAY_MINUTES; m++)
            *day -= count_at(w, m);
    }
    if (delta > WARMUP_HOUR_MINUTES) {
        *hour = 0;
    } else {
        for (int64_t m = from - WARMUP_HOUR_MINUTES; m < to - WARMUP_HOUR_MINUTES; m++)
            *hour -= count_at(w, m);
    }
}

static int64_t effective_minute(const warmup_window *w, int64_t now_ms)
{
    int64_t m = minute_of(now_ms);
    return m > w->now_min ? m : w->now_min;
}

void warmup_window_init(warmup_window *w, int64_t now_ms)
{
    memset(w, 0, sizeof *w);
    w->now_min = minute_of(now_ms);
}

void warmup_window_advance(warmup_window *w, int64_t now_ms)
{
    int64_t m = minute_of(now_ms);
    if (m > w->now_min) {
        expire(w, w->now_min, m, &w->day, &w->hour);
        w->now_min = m;
    }
}

void warmup_window_add(warmup_window *w, int64_t n, int64_t now_ms)
{
    if (n <= 0) return;
    warmup_window_advance(w, now_ms);
    int64_t m = w->now_min;                    /* a clock stepped back counts at the latest minute */
    size_t s = warmup_slot_of(m);
    if (w->minute[s] != m) {           /* the slot's old minute left the window already */
        w->minute[s] = m;
        w->count[s] = 0;
    }
    w->count[s] += n;
    w->day += n;
    w->hour += n;
}

void warmup_window_sums(const warmup_window *w, int64_t now_ms, int64_t *day, int64_t *hour)
{
    int64_t d = w->day, h = w->hour, m = minute_of(now_ms);
    if (m > w->now_min) expire(w, w->now_min, m, &d, &h);
    if (day) *day = d;
    if (hour) *hour = h;
}

int64_t warmup_window_free_at(const warmup_window *w, int64_t now_ms, bool hour_window,
                              int64_t limit)
{
    int64_t day, hour;
    warmup_window_sums(w, now_ms, &day, &hour);
    int64_t cur = hour_window ? hour : day;
    if (cur <= limit) return now_ms;
    int64_t nm = effective_minute(w, now_ms);
    int64_t span = hour_window ? WARMUP_HOUR_MINUTES : WARMUP_DAY_MINUTES;
    for (int64_t m = nm - span; m <= nm; m++) {
        cur -= count_at(w, m);
        if (cur <= limit) return (m + span + 1) * WARMUP_MINUTE_MS;   /* m has left */
    }
    return (nm + span + 1) * WARMUP_MINUTE_MS;
}

size_t warmup_window_live(const warmup_window *w, int64_t now_ms, int64_t *minutes,
                          int64_t *counts)
{
    int64_t nm = effective_minute(w, now_ms);
    size_t n = 0;
    for (int64_t m = nm - WARMUP_DAY_MINUTES; m <= nm; m++) {
        int64_t c = count_at(w, m);
        if (c <= 0) continue;
        minutes[n] = m;
        counts[n] = c;
        n++;
    }
    return n;
}

void warmup_window_put(warmup_window *w, int64_t minute, int64_t n, int64_t now_ms)
{
    int64_t nm = effective_minute(w, now_ms);
    if (n <= 0 || minute < nm - WARMUP_DAY_MINUTES) return;
    if (minute > nm) minute = nm;
    size_t s = warmup_slot_of(minute);
    if (w->minute[s] != minute) {
        w->minute[s] = minute;
        w->count[s] = 0;
    }
    w->count[s] += n;
}

void warmup_window_recompute(warmup_window *w, int64_t now_ms)
{
    int64_t nm = effective_minute(w, now_ms);
    w->now_min = nm;
    w->day = w->hour = 0;
    for (size_t s = 0; s < WARMUP_BUCKETS; s++) {
        if (w->count[s] <= 0) continue;
        int64_t m = w->minute[s];
        if (m < nm - WARMUP_DAY_MINUTES || m > nm) {
            w->count[s] = 0;
            continue;
        }
        w->day += w->count[s];
        if (m >= nm - WARMUP_HOUR_MINUTES) w->hour += w->count[s];
    }
}
