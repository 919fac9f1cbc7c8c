/* complaints.c — the managed pools' per-provider complaint hold (see complaints.h).
 *
 * Complaints are counted per (pool, mailbox provider) in hourly buckets (a ring of
 * COMPLAINTS_HOURS = 25: the current hour and the 24 before it), so memory stays bounded
 * whatever the volume: a complaint counted during hour h counts until hour h+25 starts, i.e.
 * for at least 24 h and less than 25 h (like warmup.h's windows, never less than the window).
 * The recipients sent are not counted again here: they are the rolling 24 h usage that
 * pools_record_send already keeps per (IP, provider) for the managed caps, summed over the
 * pool's IPs. Holding is a read (pools_provider_held), so the hold lifts by itself once
 * complaints age out or more mail is sent; pools.c asks it before raising a managed cap.
 * Counters whose buckets all aged out are dropped when a new complaint is recorded.
 * Pure: no I/O, the caller's clock. */
#include "pools/complaints.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"
#include "pools/pools_internal.h"
#include "pools/warmup.h"

static const char *complaints_provider_name(const char *provider)
{
    return provider && *provider ? provider : "other";
}

static int64_t complaints_hour_of(int64_t ms)
{
    int64_t h = ms / WARMUP_HOUR_MS;
    return ms < 0 && ms % WARMUP_HOUR_MS != 0 ? h - 1 : h;   /* floor */
}

static size_t complaints_slot(int64_t hour)
{
    int64_t s = hour % COMPLAINTS_HOURS;
    return (size_t)(s < 0 ? s + COMPLAINTS_HOURS : s);
}

/* hour is inside the window that ends with now_hour */
static bool complaints_live(int64_t hour, int64_t now_hour)
{
    return hour <= now_hour && now_hour - hour < COMPLAINTS_HOURS;
}

static int64_t complaints_sum(const pools_complaints *c, int64_t now_ms)
{
    int64_t now_h = complaints_hour_of(now_ms), n = 0;
    for (size_t i = 0; i < COMPLAINTS_HOURS; i++)
        if (c->count[i] > 0 && complaints_live(c->hour[i], now_h)) n += c->count[i];
    return n;
}

static pools_complaints *complaints_find(const pools *p, const char *pool, const char *provider)
{
    provider = complaints_provider_name(provider);
    for (size_t i = 0; i < p->ncomplaints; i++)
        if (strcmp(p->complaints[i]->pool, pool) == 0 &&
            strcmp(p->complaints[i]->provider, provider) == 0)
            return p->complaints[i];
    return NULL;
}

static void complaints_entry_free(pools_complaints *c)
{
    free(c->pool);
    free(c->provider);
    free(c);
}

void pools_complaints_free(pools *p)
{
    for (size_t i = 0; i < p->ncomplaints; i++) complaints_entry_free(p->complaints[i]);
    free(p->complaints);
    p->complaints = NULL;
    p->ncomplaints = 0;
}

/* Drops counters with nothing left in the window at now. */
static void complaints_prune(pools *p, int64_t now_ms)
{
    size_t n = 0;
    for (size_t i = 0; i < p->ncomplaints; i++) {
        if (complaints_sum(p->complaints[i], now_ms) > 0) p->complaints[n++] = p->complaints[i];
        else complaints_entry_free(p->complaints[i]);
    }
    p->ncomplaints = n;
}

void pools_complaints_put(pools *p, const char *pool, const char *provider, int64_t hour,
                          int64_t n, int64_t now_ms)
{
    int64_t now_h = complaints_hour_of(now_ms);
    if (n <= 0 || hour < now_h - (COMPLAINTS_HOURS - 1)) return;   /* aged out */
    if (hour > now_h) hour = now_h;          /* a clock that stepped back: count it now */
    pools_complaints *c = complaints_find(p, pool, provider);
    if (!c) {
        c = util_calloc(1, sizeof *c);
        c->pool = util_strdup(pool);
        c->provider = util_strdup(complaints_provider_name(provider));
        p->complaints = util_realloc(p->complaints, (p->ncomplaints + 1) * sizeof *p->complaints);
        p->complaints[p->ncomplaints++] = c;
    }
    size_t s = complaints_slot(hour);
    if (c->hour[s] != hour || c->count[s] <= 0) {      /* the slot held an older hour */
        c->hour[s] = hour;
        c->count[s] = 0;
    }
    c->count[s] = n > INT64_MAX - c->count[s] ? INT64_MAX : c->count[s] + n;
}

static bool complaints_pool_known(const pools *p, const char *pool)
{
    for (size_t i = 0; i < p->nips; i++)
        if (strcmp(p->ips[i]->pool, pool) == 0) return true;
    return false;
}

void pools_set_complaint_hold_rate(pools *p, double rate)
{
    p->complaint_hold_rate = rate > 0 ? rate : 0;   /* also NaN: never hold */
}

void pools_record_complaint(pools *p, const char *pool, const char *provider, unsigned n,
                            int64_t now_ms)
{
    if (!pool || n == 0 || !complaints_pool_known(p, pool)) return;
    complaints_prune(p, now_ms);
    pools_complaints_put(p, pool, provider, complaints_hour_of(now_ms), n, now_ms);
    p->dirty = true;
}

int64_t pools_complaints_24h(const pools *p, const char *pool, const char *provider,
                             int64_t now_ms)
{
    const pools_complaints *c = pool ? complaints_find(p, pool, provider) : NULL;
    return c ? complaints_sum(c, now_ms) : 0;
}

/* Recipients the pool's IPs sent to provider in the rolling 24 h (managed caps' usage). */
static int64_t complaints_sent_24h(const pools *p, const char *pool, const char *provider,
                                   int64_t now_ms)
{
    provider = complaints_provider_name(provider);
    int64_t sent = 0;
    for (size_t i = 0; i < p->nips; i++) {
        const pools_ip *ip = p->ips[i];
        if (strcmp(ip->pool, pool) != 0) continue;
        for (size_t j = 0; j < ip->ncaps; j++) {
            if (strcmp(ip->caps[j]->provider, provider) != 0) continue;
            int64_t day = 0;
            warmup_window_sums(&ip->caps[j]->usage, now_ms, &day, NULL);
            sent += day;
        }
    }
    return sent;
}

bool pools_provider_held(const pools *p, const char *pool, const char *provider, int64_t now_ms)
{
    if (!(p->complaint_hold_rate > 0) || !pool) return false;
    int64_t complaints = pools_complaints_24h(p, pool, provider, now_ms);
    if (complaints < POOLS_HOLD_MIN_COMPLAINTS) return false;
    /* complaints / sent > rate; nothing sent (complaints about older mail): held */
    int64_t sent = complaints_sent_24h(p, pool, provider, now_ms);
    return (double)complaints > p->complaint_hold_rate * (double)sent;
}

/* ------------------------------------------------------------ providers ---- */

/* Whole names, and names whose first label is this followed by a public suffix. */
static const struct {
    const char *name, *provider;
    bool any_tld;        /* "hotmail" matches hotmail.com, hotmail.co.uk, hotmail.fr, ... */
} complaints_domains[] = {
    {"gmail.com", "gmail", false},       {"googlemail.com", "gmail", false},
    {"outlook.com", "microsoft", false}, {"msn.com", "microsoft", false},
    {"hotmail", "microsoft", true},      {"live", "microsoft", true},
    {"ymail.com", "yahoo", false},       {"aol.com", "yahoo", false},
    {"rocketmail.com", "yahoo", false},  {"yahoo", "yahoo", true},
};

/* rest (after "label.") is a public suffix as mail providers use them: one label
 * ("fr", "com") or a two-letter-ish second level under a country code ("co.uk", "com.br",
 * "co.jp"): at most two labels, each non-empty letters only. */
static bool complaints_is_tld(const char *rest, size_t len)
{
    size_t labels = 1, cur = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = rest[i];
        if (ch == '.') {
            if (cur == 0) return false;
            labels++;
            cur = 0;
        } else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')) {
            cur++;
        } else {
            return false;
        }
    }
    return cur > 0 && labels <= 2;
}

const char *pools_provider_of_domain(const char *domain)
{
    if (!domain) return "other";
    size_t len = strlen(domain);
    if (len > 0 && domain[len - 1] == '.') len--;           /* absolute name */
    for (size_t i = 0; i < sizeof complaints_domains / sizeof complaints_domains[0]; i++) {
        const char *name = complaints_domains[i].name;
        size_t nl = strlen(name);
        if (!complaints_domains[i].any_tld) {
            if (len == nl && strncasecmp(domain, name, nl) == 0)
                return complaints_domains[i].provider;
        } else if (len > nl + 1 && strncasecmp(domain, name, nl) == 0 && domain[nl] == '.' &&
                   complaints_is_tld(domain + nl + 1, len - nl - 1)) {
            return complaints_domains[i].provider;
        }
    }
    return "other";
}
