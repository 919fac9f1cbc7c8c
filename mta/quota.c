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
 * (a wall clock stepped back) are counted as if sent now and stay until they expire.
 *
 * In a cluster (issue 17) the limits are the account's, held in Redis by mta/cluster_limits.c,
 * and the quota has two modes. QUOTA_LEASED (Redis up): a recipient may be accepted only
 * against tokens and 24 h slots this node has leased from the account; leased rate tokens
 * lapse QUOTA_LEASE_TTL_MS after their grant (an idle node cannot save up a burst), leased
 * slots are counted in the account's window when granted and stay this node's until used or
 * given back. QUOTA_LOCAL (alone, or Redis down): the bucket and window above, held to
 * `share` of the limits; recipients committed in that mode while part of a cluster are kept
 * by minute as unreported, for the account's window when Redis returns. */
#include "mta/quota.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

#define QUOTA_MINUTE_MS 60000
#define QUOTA_WINDOW_MINUTES 1440                 /* 24 h */
#define QUOTA_BUCKETS (QUOTA_WINDOW_MINUTES + 1)
#define QUOTA_EPSILON 1e-9                        /* float slack when comparing tokens to 1 */

typedef struct quota_ring {
    int64_t minute[QUOTA_BUCKETS];   /* minute index each bucket holds (meaningful if count > 0) */
    int64_t count[QUOTA_BUCKETS];
} quota_ring;

struct quota {
    double max_rate;                 /* < 0: unlimited */
    int64_t max_24h;                 /* < 0: unlimited */
    double tokens;
    int64_t refilled_ms;             /* clock of the last refill */
    quota_ring sent;                 /* committed recipients by minute */
    int64_t pending;                 /* reserved by open transactions, not yet committed */
    /* cluster */
    bool clustered;                  /* quota_set_mode was called: unreported is kept */
    quota_mode mode;
    double share;                    /* QUOTA_LOCAL: the fraction of the limits held here */
    double lease_tokens;             /* QUOTA_LEASED: rate tokens granted, until lease_until */
    int64_t lease_until_ms;
    int64_t daily_lease;             /* 24 h slots leased and not reserved */
    int64_t pending_leased;          /* of pending, the slots that came from a lease */
    quota_ring unreported;           /* committed in QUOTA_LOCAL while clustered */
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

/* The limits this node holds on its own: all of them alone, its share in a cluster. */
static double quota_local_rate(const quota *q)
{
    return q->max_rate < 0 ? -1 : q->max_rate * q->share;
}

static int64_t quota_local_24h(const quota *q)
{
    return q->max_24h < 0 ? -1 : (int64_t)((double)q->max_24h * q->share + QUOTA_EPSILON);
}

static double quota_capacity(const quota *q)
{
    double r = quota_local_rate(q);
    return r > 1.0 ? r : 1.0;
}

static void quota_refill(quota *q, int64_t now_ms)
{
    if (q->max_rate >= 0 && now_ms > q->refilled_ms) {
        q->tokens += (double)(now_ms - q->refilled_ms) * quota_local_rate(q) / 1000.0;
        if (q->tokens > quota_capacity(q)) q->tokens = quota_capacity(q);
    }
    /* A clock that went backwards refills nothing and continues from its new reading. */
    q->refilled_ms = now_ms;
}

/* Adds n recipients to the bucket of minute m (inside the window at now_min). Minutes of
 * the window map to distinct slots; only after the clock stepped back can a slot hold a
 * different live (future) minute, and then the two share it under the later minute, which
 * keeps them counted a little longer, never shorter. */
static void quota_window_add(quota_ring *r, int64_t m, int64_t n, int64_t now_min)
{
    if (m > now_min) m = now_min;
    size_t i = quota_bucket_of(m);
    if (r->count[i] == 0 || !quota_in_window(r->minute[i], now_min)) {
        r->minute[i] = m;
        r->count[i] = 0;
    } else if (r->minute[i] < m) {
        r->minute[i] = m;
    }
    r->count[i] += n;
}

static int64_t quota_window_sum(quota_ring *r, int64_t now_min)
{
    int64_t sum = 0;
    for (size_t i = 0; i < QUOTA_BUCKETS; i++) {
        if (r->count[i] == 0) continue;
        if (quota_in_window(r->minute[i], now_min)) sum += r->count[i];
        else r->count[i] = 0;               /* expired: free the slot */
    }
    return sum;
}

quota *quota_new(double max_rate, int64_t max_24h, int64_t now_ms)
{
    quota *q = util_calloc(1, sizeof *q);
    q->max_rate = max_rate < 0 ? -1 : max_rate;
    q->max_24h = max_24h < 0 ? -1 : max_24h;
    q->share = 1.0;
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

static double quota_leased_tokens(quota *q, int64_t now_ms)
{
    if (now_ms >= q->lease_until_ms) q->lease_tokens = 0;   /* lapsed */
    return q->lease_tokens;
}

bool quota_rate_available(quota *q, int64_t now_ms)
{
    if (q->max_rate < 0) return true;
    if (q->mode == QUOTA_LEASED) return quota_leased_tokens(q, now_ms) + QUOTA_EPSILON >= 1.0;
    quota_refill(q, now_ms);
    return q->tokens + QUOTA_EPSILON >= 1.0;
}

bool quota_rate_take(quota *q, int64_t now_ms)
{
    if (q->max_rate < 0) return true;
    if (!quota_rate_available(q, now_ms)) return false;
    double *t = q->mode == QUOTA_LEASED ? &q->lease_tokens : &q->tokens;
    *t -= 1.0;
    if (*t < 0) *t = 0;                     /* the epsilon above may leave a hair below 0 */
    return true;
}

bool quota_daily_reserve(quota *q, int64_t now_ms)
{
    if (q->mode == QUOTA_LEASED && q->max_24h >= 0) {
        if (q->daily_lease < 1) return false;
        q->daily_lease--;
        q->pending_leased++;
        q->pending++;
        return true;
    }
    int64_t max = quota_local_24h(q);
    if (max >= 0 && quota_sent_24h(q, now_ms) + q->pending + 1 > max) return false;
    q->pending++;
    return true;
}

void quota_daily_release(quota *q, unsigned n)
{
    if ((int64_t)n > q->pending)
        util_fatal("quota: releasing %u recipients but only %lld are reserved", n,
                   (long long)q->pending);
    q->pending -= n;
    /* slots that came from a lease stay leased: counted by the account already */
    int64_t back = (int64_t)n < q->pending_leased ? (int64_t)n : q->pending_leased;
    q->pending_leased -= back;
    q->daily_lease += back;
}

void quota_daily_commit(quota *q, unsigned n, int64_t now_ms)
{
    if ((int64_t)n > q->pending)
        util_fatal("quota: committing %u recipients but only %lld are reserved", n,
                   (long long)q->pending);
    q->pending -= n;
    int64_t leased = (int64_t)n < q->pending_leased ? (int64_t)n : q->pending_leased;
    q->pending_leased -= leased;
    int64_t now_min = quota_minute_of(now_ms);
    if (n > 0) quota_window_add(&q->sent, now_min, n, now_min);
    /* slots not from a lease are not in the account's window yet */
    if (q->clustered && (int64_t)n > leased)
        quota_window_add(&q->unreported, now_min, (int64_t)n - leased, now_min);
}

void quota_daily_load(quota *q, int64_t at_ms, unsigned n, int64_t now_ms)
{
    int64_t now_min = quota_minute_of(now_ms), m = quota_minute_of(at_ms);
    if (n == 0 || !quota_in_window(m, now_min)) return;
    quota_window_add(&q->sent, m, n, now_min);
}

int64_t quota_sent_24h(quota *q, int64_t now_ms)
{
    return quota_window_sum(&q->sent, quota_minute_of(now_ms));
}

/* ---- cluster ---- */

void quota_set_mode(quota *q, quota_mode mode, double share, int64_t now_ms)
{
    if (!(share > 0) || share > 1) share = 1;
    quota_refill(q, now_ms);
    q->clustered = true;
    if (mode == QUOTA_LOCAL && q->mode == QUOTA_LEASED) {
        /* the local bucket starts empty: the account's tokens were spent through leases */
        q->tokens = 0;
        q->lease_tokens = 0;
    }
    q->mode = mode;
    q->share = share;
    if (q->tokens > quota_capacity(q)) q->tokens = quota_capacity(q);
}

quota_mode quota_get_mode(const quota *q)
{
    return q->mode;
}

double quota_share(const quota *q)
{
    return q->share;
}

void quota_rate_grant(quota *q, int64_t n, int64_t now_ms)
{
    if (n <= 0) return;
    quota_leased_tokens(q, now_ms);
    q->lease_tokens += (double)n;
    q->lease_until_ms = now_ms + QUOTA_LEASE_TTL_MS;
}

double quota_rate_leased(quota *q, int64_t now_ms)
{
    return quota_leased_tokens(q, now_ms);
}

void quota_daily_grant(quota *q, int64_t n)
{
    if (n > 0) q->daily_lease += n;
}

int64_t quota_daily_leased(const quota *q)
{
    return q->daily_lease;
}

void quota_leases_void(quota *q)
{
    q->daily_lease = 0;
    q->pending_leased = 0;          /* their commits are reported as sent outside a lease */
    q->lease_tokens = 0;
}

int64_t quota_daily_unlease(quota *q)
{
    int64_t n = q->daily_lease;
    q->daily_lease = 0;
    return n;
}

static size_t quota_ring_list(quota_ring *r, int64_t now_ms, int64_t *minutes, int64_t *counts,
                              size_t max)
{
    int64_t now_min = quota_minute_of(now_ms);
    size_t n = 0;
    for (size_t i = 0; i < QUOTA_BUCKETS && n < max; i++) {
        if (r->count[i] == 0) continue;
        if (!quota_in_window(r->minute[i], now_min)) {
            r->count[i] = 0;
            continue;
        }
        minutes[n] = r->minute[i];
        counts[n++] = r->count[i];
    }
    return n;
}

size_t quota_unreported(quota *q, int64_t now_ms, int64_t *minutes, int64_t *counts, size_t max)
{
    return quota_ring_list(&q->unreported, now_ms, minutes, counts, max);
}

size_t quota_sent_minutes(quota *q, int64_t now_ms, int64_t *minutes, int64_t *counts,
                          size_t max)
{
    return quota_ring_list(&q->sent, now_ms, minutes, counts, max);
}

void quota_unreported_clear(quota *q)
{
    memset(&q->unreported, 0, sizeof q->unreported);
}

void quota_unreported_sub(quota *q, const int64_t *minutes, const int64_t *counts, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        size_t i = quota_bucket_of(minutes[k]);
        if (q->unreported.count[i] == 0 || q->unreported.minute[i] != minutes[k]) continue;
        q->unreported.count[i] -= counts[k] < q->unreported.count[i] ? counts[k]
                                                                     : q->unreported.count[i];
    }
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
