/* history.h — per IP (and, in managed pools, per (IP, provider)) recipients sent per UTC
 * day over the last POOLS_HISTORY_DAYS days, with the daily cap that applied at the day's
 * last send: the "actual" bars of the web page's warm-up curves (issue 15 item 3).
 * pools_record_send counts into it; pools_state.c saves and restores it ("history", an
 * optional key: older states load with an empty history). Pure: no I/O, the caller's clock.
 *
 * Days are UTC calendar days (day index = ms since the epoch / 86,400,000), so every IP's
 * bars line up on the same dates; a ramp day (counted from the IP's lease) may straddle two
 * of them. The table is a ring of POOLS_HISTORY_DAYS slots: a day older than that is
 * overwritten by the newer day that shares its slot, so the memory per IP is fixed. */
#ifndef KILN_POOLS_HISTORY_H
#define KILN_POOLS_HISTORY_H

#include <stddef.h>
#include <stdint.h>

#include "pools/pools.h"

#define POOLS_HISTORY_DAYS 60
#define POOLS_DAY_MS 86400000LL

typedef struct pools_daily {
    int64_t day[POOLS_HISTORY_DAYS];    /* day index the slot holds (slot = day % DAYS) */
    int64_t sent[POOLS_HISTORY_DAYS];   /* recipients sent that day (0: slot unused) */
    int64_t cap[POOLS_HISTORY_DAYS];    /* the daily cap at the day's last send; -1: none */
} pools_daily;

/* n recipients sent at now_ms under `cap` (-1: no cap). */
void pools_daily_add(pools_daily *d, int64_t n, int64_t cap, int64_t now_ms);
/* Restores one saved day (pools_state.c); days outside the ring's reach from now are
 * dropped. */
void pools_daily_put(pools_daily *d, int64_t day, int64_t sent, int64_t cap, int64_t now_ms);
/* What was sent on day `day` and its cap (*cap -1 when unknown); 0 when nothing. */
int64_t pools_daily_get(const pools_daily *d, int64_t day, int64_t *cap);

/* One day of an IP's warm-up curve. */
typedef struct pools_curve_day {
    int64_t day_ms;      /* the UTC day's start */
    int64_t cap;         /* its daily cap that day; -1: none applied (warm, or unknown) */
    int64_t sent;        /* recipients sent that day */
} pools_curve_day;

/* The curve of the i-th IP (pools_info's order) from the day of its lease (at most
 * POOLS_HISTORY_DAYS - 1 days back) to today, oldest first, into *out (malloc'd; free it);
 * returns the number of days. provider NULL: the IP as a whole (standard pools: the cap is
 * the recorded one, else the ramp's cap at the day's start when the ramp had begun by
 * then); a provider name: that managed cap's days (recorded caps only; today's is the cap
 * now). 0 and *out NULL when i or the provider is unknown. */
size_t pools_history_curve(const pools *p, size_t i, const char *provider, int64_t now_ms,
                           pools_curve_day **out);

#endif
