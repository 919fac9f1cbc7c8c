/* quota.c — the account's sending limits (SPEC section 2) as pure state over an injected clock.
 *
 * max_send_rate is a token bucket: it holds at most max(1, rate) tokens, starts full and is
 * refilled continuously at `rate` tokens per second; each accepted recipient takes one.
 *
 * max_24h_send is a rolling 24-hour window kept in one-minute buckets (a ring keyed by the
 * minute index since the epoch) plus a count of recipients reserved by open transactions.
 * A recipient sent during minute m is counted until the whole of minute m lies more than
 * 24 h in the past, i.e. for at least 24 h and at most 24 h + 1 min: the window never
 * under-counts, so no true 24-hour span can carry more than max_24h_send recipients. That
 * needs 1441 buckets (the current minute plus the 1440 before it). Timestamps in the future
 * (a wall clock stepped back) are counted as if sent now and stay until they expire. */
#include "mta/quota.h"

#include <stdlib.h>

#include "base/util.h"

#define QUOTA_MINUTE_MS 60000
#define QUOTA_WINDOW_MINUTES 1440                 /* 24 h */
#define QUOTA_BUCKETS (QUOTA_WINDOW_MINUTES + 1)
#define QUOTA_EPSILON 1e-9                        /* float slack when comparing tokens to 1 */

struct quota {
    double max_rate;                 /* < 0: unlimited */
    int64_t max_24h;                 /* < 0: unlimited */
    double tokens;
    int64_t refilled_ms;             /* clock of the last refill */
    int64_t minute[QUOTA_BUCKETS];   /* minute index each bucket holds (meaningful if count > 0) */
    int64_t count[QUOTA_BUCKETS];
    int64_t pending;                 /* reserved by open transactions, not yet committed */
};

static int64_t quota_minute_of(int64_t ms)
{
    int64_t m = ms / QUOTA_MINUTE_MS;
    if (ms % QUOTA_MINUTE_MS != 0 && ms < 0) m--;   /* floor for clocks before the epoch */
    return m;
}

static size_t quota_bucket_of(int64_t minute)
{
    int64_t i = minute % QUOTA_BUCKETS;
    if (i < 0) i += QUOTA_BUCKETS;
    return (size_t)i;
}

/* True while a bucket for `minute` still counts at `now_min` (future minutes count too). */
static bool quota_in_window(int64_t minute, int64_t now_min)
{
    return minute >= now_min - QUOTA_WINDOW_MINUTES;
}

static double quota_capacity(const quota *q)
{
    return q->max_rate > 1.0 ? q->max_rate : 1.0;
}

static void quota_refill(quota *q, int64_t now_ms)
{
    if (q->max_rate >= 0 && now_ms > q->refilled_ms) {
        q->tokens += (double)(now_ms - q->refilled_ms) * q->max_rate / 1000.0;
        if (q->tokens > quota_capacity(q)) q->tokens = quota_capacity(q);
    }
    /* A clock that went backwards refills nothing and continues from its new reading. */
    q->refilled_ms = now_ms;
}

/* Adds n recipients to the bucket of minute m (inside the window at now_min). Minutes of
 * the window map to distinct slots; only after the clock stepped back can a slot hold a
 * different live (future) minute, and then the two share it under the later minute, which
 * keeps them counted a little longer, never shorter. */
static void quota_window_add(quota *q, int64_t m, int64_t n, int64_t now_min)
{
    if (m > now_min) m = now_min;
    size_t i = quota_bucket_of(m);
    if (q->count[i] == 0 || !quota_in_window(q->minute[i], now_min)) {
        q->minute[i] = m;
        q->count[i] = 0;
    } else if (q->minute[i] < m) {
        q->minute[i] = m;
    }
    q->count[i] += n;
}

quota *quota_new(double max_rate, int64_t max_24h, int64_t now_ms)
{
    quota *q = util_calloc(1, sizeof *q);
    q->max_rate = max_rate < 0 ? -1 : max_rate;
    q->max_24h = max_24h < 0 ? -1 : max_24h;
    q->tokens = quota_capacity(q);
    q->refilled_ms = now_ms;
    return q;
}

void quota_free(quota *q)
{
    free(q);
}

void quota_set_limits(quota *q, double max_rate, int64_t max_24h, int64_t now_ms)
{
    bool was_unlimited = q->max_rate < 0;
    quota_refill(q, now_ms);                      /* tokens earned under the old rate are kept */
    q->max_rate = max_rate < 0 ? -1 : max_rate;
    q->max_24h = max_24h < 0 ? -1 : max_24h;
    if (was_unlimited || q->tokens > quota_capacity(q)) q->tokens = quota_capacity(q);
}

bool quota_rate_available(quota *q, int64_t now_ms)
{
    if (q->max_rate < 0) return true;
    quota_refill(q, now_ms);
    return q->tokens + QUOTA_EPSILON >= 1.0;
}

bool quota_rate_take(quota *q, int64_t now_ms)
{
    if (q->max_rate < 0) return true;
    if (!quota_rate_available(q, now_ms)) return false;
    q->tokens -= 1.0;
    if (q->tokens < 0) q->tokens = 0;       /* the epsilon above may leave a hair below 0 */
    return true;
}

bool quota_daily_reserve(quota *q, int64_t now_ms)
{
    if (q->max_24h >= 0 && quota_sent_24h(q, now_ms) + q->pending + 1 > q->max_24h)
        return false;
    q->pending++;
    return true;
}

void quota_daily_release(quota *q, unsigned n)
{
    if ((int64_t)n > q->pending)
        util_fatal("quota: releasing %u recipients but only %lld are reserved", n,
                   (long long)q->pending);
    q->pending -= n;
}

void quota_daily_commit(quota *q, unsigned n, int64_t now_ms)
{
    if ((int64_t)n > q->pending)
        util_fatal("quota: committing %u recipients but only %lld are reserved", n,
                   (long long)q->pending);
    q->pending -= n;
    if (n > 0) quota_window_add(q, quota_minute_of(now_ms), n, quota_minute_of(now_ms));
}

void quota_daily_load(quota *q, int64_t at_ms, unsigned n, int64_t now_ms)
{
    int64_t now_min = quota_minute_of(now_ms), m = quota_minute_of(at_ms);
    if (n == 0 || !quota_in_window(m, now_min)) return;
    quota_window_add(q, m, n, now_min);
}

int64_t quota_sent_24h(quota *q, int64_t now_ms)
{
    int64_t now_min = quota_minute_of(now_ms), sum = 0;
    for (size_t i = 0; i < QUOTA_BUCKETS; i++) {
        if (q->count[i] == 0) continue;
        if (quota_in_window(q->minute[i], now_min)) sum += q->count[i];
        else q->count[i] = 0;               /* expired: free the slot */
    }
    return sum;
}

int64_t quota_pending(const quota *q)
{
    return q->pending;
}

double quota_max_rate(const quota *q)
{
    return q->max_rate;
}

int64_t quota_max_24h(const quota *q)
{
    return q->max_24h;
}
