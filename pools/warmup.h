/* warmup.h — the arithmetic of a dedicated IP's standard warm-up (SPEC section 3) and the
 * rolling usage windows every cap is checked against. Pure state over an injected clock.
 *
 *  - warmup_cap / warmup_pacing_cap: the geometric daily cap first_day*(target/first_day)^(p/100)
 *    and the pacing cap ceil(cap*pacing/24) per rolling hour.
 *  - warmup_ramp: where an IP is on its ramp. The percentage is base_pct (set at lease time
 *    or by `kilnctl ip warmup`) plus 100/days per day since base_ms: every whole day with
 *    `advance: calendar`, only days on which the IP sent at least half of that day's cap
 *    with `advance: volume` (days are consecutive 24 h periods from base_ms, judged lazily
 *    when asked). At 100 % the IP is DONE and no warm-up cap applies.
 *  - warmup_window: recipients sent in the rolling 24 h and rolling hour, kept in one-minute
 *    buckets (a ring of 1441: the current minute and the 1440 before it). A recipient sent
 *    during minute m counts in the day until minute m+1441 starts and in the hour until
 *    minute m+61 starts: each entry counts for at least its whole window, never less, so no
 *    true 24 h (or 60 min) span carries more than the cap. A clock that steps back counts new
 *    entries at the latest minute seen. */
#ifndef KILN_WARMUP_H
#define KILN_WARMUP_H

#include <stdbool.h>
#include <stdint.h>

#include "base/config.h"

#define WARMUP_MINUTE_MS INT64_C(60000)
#define WARMUP_HOUR_MS INT64_C(3600000)
#define WARMUP_DAY_MS INT64_C(86400000)
#define WARMUP_DAY_MINUTES 1440
#define WARMUP_HOUR_MINUTES 60
#define WARMUP_BUCKETS (WARMUP_DAY_MINUTES + 1)

/* first_day * (target/first_day)^(pct/100), rounded down; pct clamped to [0,100]. */
int64_t warmup_cap(const config_warmup *w, double pct);
/* ceil(daily_cap * pacing / 24), at least 1; -1 when pacing is 0 or daily_cap is -1. */
int64_t warmup_pacing_cap(const config_warmup *w, int64_t daily_cap);

/* ---- ramp position of one IP ---- */
typedef struct warmup_ramp {
    bool done;           /* 100 % reached or set: no warm-up cap */
    double base_pct;     /* percentage at base_ms */
    int64_t base_ms;     /* start of day 0 of the ramp */
    int64_t qualified;   /* volume: completed days since base_ms that counted */
    int64_t eval_day;    /* volume: index (from base_ms) of the day day_sent belongs to */
    int64_t day_sent;    /* volume: recipients sent during day eval_day */
} warmup_ramp;

/* Starts the ramp at pct (>= 100: DONE) from now. */
void warmup_ramp_start(warmup_ramp *r, double pct, int64_t now_ms);
/* Percentage at now, in [0,100] (100 when DONE). */
double warmup_ramp_pct(const warmup_ramp *r, const config_warmup *w, int64_t now_ms);
bool warmup_ramp_is_done(const warmup_ramp *r, const config_warmup *w, int64_t now_ms);
/* Daily cap at now; -1 when DONE. */
int64_t warmup_ramp_daily_cap(const warmup_ramp *r, const config_warmup *w, int64_t now_ms);
/* Start of the next ramp day after now (when the cap may rise); 0 when DONE. */
int64_t warmup_ramp_next_day_ms(const warmup_ramp *r, const config_warmup *w, int64_t now_ms);
/* n recipients were sent at now: closes finished days (volume advance), counts n for today
 * and marks the ramp DONE once it reached 100 %. */
void warmup_ramp_record(warmup_ramp *r, const config_warmup *w, int64_t n, int64_t now_ms);

/* ---- rolling 24 h / 1 h usage ---- */
typedef struct warmup_window {
    int64_t minute[WARMUP_BUCKETS];  /* minute index (ms / 60000) each slot holds */
    int64_t count[WARMUP_BUCKETS];
    int64_t now_min;                 /* latest minute seen: the sums below are for it */
    int64_t day, hour;               /* counts inside the day / hour window at now_min */
} warmup_window;

void warmup_window_init(warmup_window *w, int64_t now_ms);
void warmup_window_add(warmup_window *w, int64_t n, int64_t now_ms);
/* Moves the window to now (dropping what left it), so later reads at now cost nothing. */
void warmup_window_advance(warmup_window *w, int64_t now_ms);
/* Counts in the rolling day and hour at now (either pointer may be NULL). */
void warmup_window_sums(const warmup_window *w, int64_t now_ms, int64_t *day, int64_t *hour);
/* Earliest time >= now_ms at which the day (hour_window false) or hour count is <= limit,
 * with no new entries. */
int64_t warmup_window_free_at(const warmup_window *w, int64_t now_ms, bool hour_window,
                              int64_t limit);
/* Live buckets at now in ascending minute order into minutes[]/counts[] (WARMUP_BUCKETS
 * each); returns how many. For persistence. */
size_t warmup_window_live(const warmup_window *w, int64_t now_ms, int64_t *minutes,
                          int64_t *counts);
/* Restoring: warmup_window_init, then put each saved bucket (ignored when older than the
 * day window at now; a future minute counts as now), then recompute. */
void warmup_window_put(warmup_window *w, int64_t minute, int64_t n, int64_t now_ms);
void warmup_window_recompute(warmup_window *w, int64_t now_ms);

#endif
