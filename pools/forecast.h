/* forecast.h — the capacity forecast (issue 15, item 2; `kilnctl forecast`): from each IP's
 * warm-up position now, how many recipients each configuration set's pool can send per day
 * for the next N days (1..FORECAST_MAX_DAYS), when each IP reaches warmup.target, and, with
 * `advance: volume`, what must be sent each day to keep the ramps moving. Pure: it reads the
 * pools state (pools/pools.h) and the config at the caller's clock and changes nothing.
 *
 * Days. Day d (0 = the current day) is the 24 h starting at now + d * 24 h. An IP's cap for
 * day d is its cap at the start of that span, now + d * 24 h (a standard ramp rises once per
 * ramp day, counted from the IP's own lease or `ip warmup` time, so a span holds at most one
 * rise and the figure is the lower of the two). An IP reaches its target "within N days"
 * when it is there by day N, the end of the last day shown (now + N * 24 h).
 *
 * Standard pools. The ramp is the live one (pools/warmup.h) run forward on a copy:
 *  - `advance: calendar`: every day counts; the cap of day d is warmup_ramp_daily_cap at
 *    now + d * 24 h.
 *  - `advance: volume`: a ramp day counts only when the IP sent at least half that day's cap
 *    (2 * sent >= cap); the forecast assumes the IP sends exactly that, ceil(cap/2), on every
 *    day from today on (recorded into the copy with warmup_ramp_record, so the rule is the
 *    live code's, not a second version of it). That figure is the IP's "needed" for the day
 *    (day 0's is the whole day's, what the IP already sent in it included). An IP that sends less
 *    stays where it is, so the capacity shown is what the ramp gives when it is fed.
 *  - An IP at 100 % (or `warmup: done`) has no warm-up cap; it is forecast at warmup.target
 *    and needs nothing.
 *
 * Managed pools (`scaling: managed`, pools.c). Each (IP, provider) cap rises by the
 * recipients the provider accepts, up to warmup.target, and is halved by a throttle. The
 * forecast assumes each cap is fully used and accepted every day with no throttle, so
 *      cap[d+1] = min(target, 2 * cap[d])
 * (slow start). A provider whose ramp is held by complaints (complaints.h) stays flat for the
 * whole forecast. The providers are pools_provider_of's four names (gmail, microsoft, yahoo,
 * other) plus any other the IP has a cap for; a provider the IP has not sent to yet starts
 * at warmup.first_day, as pools.c would create it. The IP's figure for a day is the SUM of
 * its providers' caps (what it can send when its mail spreads over all of them), and it
 * reaches its target when every provider cap is at warmup.target. Managed IPs need nothing
 * (volume advance is the standard ramp's rule).
 *
 * Sets. A set's figure for a day is the sum over its pool's IPs that are active now
 * (draining and down IPs, circuit open or zone down, are listed but not counted). Several
 * sets may share a pool: each shows the pool's whole capacity (they compete for it), and
 * names the others in shared_with. An `overflow` pool is not added in. */
#ifndef KILN_FORECAST_H
#define KILN_FORECAST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/config.h"
#include "pools/pools.h"

#define FORECAST_MAX_DAYS 90
#define FORECAST_DEFAULT_DAYS 14
#define FORECAST_MAX_PROVIDERS 8

typedef enum {
    FORECAST_TARGET_DONE = 0,     /* at its target already (day 0) */
    FORECAST_TARGET_REACHED,      /* reaches it on day reach_day, at reach_ms */
    FORECAST_TARGET_NOT_WITHIN,   /* not within the forecast's days */
} forecast_target;

typedef struct forecast_provider {   /* managed IPs: one provider's cap */
    char name[32];
    int64_t cap0;                    /* its cap now (day 0) */
    bool known;                      /* the IP has a cap for it (else first_day) */
    bool held;                       /* complaints hold its ramp: flat */
} forecast_provider;

typedef struct forecast_ip {
    char *address;                   /* the one kiln binds */
    char *public_address;            /* what the world sees (NAT), else address */
    char *pool;
    bool managed;
    pools_ip_state state;
    bool counted;                    /* active now: counts in its sets' sums */
    const char *warmup_status;       /* "IN_PROGRESS" | "DONE" | "NOT_APPLICABLE" (static) */
    int64_t cap[FORECAST_MAX_DAYS];  /* recipients it may send on day d */
    int64_t needed[FORECAST_MAX_DAYS];   /* volume advance, standard ramp: ceil(cap/2) while
                                            ramping; else 0 */
    forecast_target target;
    int reach_day;                   /* REACHED: the first day at the target; else -1 */
    int64_t reach_ms;                /* REACHED: when (standard: the start of that ramp day;
                                        managed: now + reach_day * 24 h); else 0 */
    forecast_provider providers[FORECAST_MAX_PROVIDERS];   /* managed only */
    size_t nproviders;
} forecast_ip;

typedef struct forecast_set {
    char *name;
    char *pool;
    bool managed;                    /* its pool is `scaling: managed` */
    char **shared_with;              /* other sets on the same pool, config order */
    size_t nshared;
    size_t *ips;                     /* indexes into forecast.ips of its pool's IPs */
    size_t nips;
    size_t ncounted;                 /* how many of them count (active now) */
    int64_t capacity[FORECAST_MAX_DAYS];   /* recipients per day: sum of counted IPs' caps */
    int64_t needed[FORECAST_MAX_DAYS];     /* volume advance: sum of counted IPs' needed */
} forecast_set;

typedef struct forecast {
    int days;
    int64_t now_ms;
    config_warmup warmup;            /* the ramp the pools run */
    bool volume;                     /* advance: volume */
    forecast_ip *ips;                /* the IPs of the sets shown, pools order */
    size_t nips;
    forecast_set *sets;              /* config order; one when a set was named */
    size_t nsets;
} forecast;

/* NULL when days is a valid forecast length (1..FORECAST_MAX_DAYS), else the reason
 * (malloc'd), e.g. "days must be from 1 to 90, not 0". */
char *forecast_days_problem(long long days);

/* Fills f for the set named `set` (NULL: every set of cfg) over `days` days from now_ms,
 * reading p (the pools state cfg was applied to). 0, or -1 and *err (malloc'd): days out of
 * range, or "unknown configuration set: S (known: a, b)". forecast_free after either. */
int forecast_build(forecast *f, const pools *p, const config *cfg, const char *set, int days,
                   int64_t now_ms, char **err);
void forecast_free(forecast *f);

/* The day an IP reaches the target as text: "done", "day 45", "not within 14 days"
 * (into buf). */
const char *forecast_target_text(const forecast *f, const forecast_ip *ip, char *buf,
                                 size_t len);

#endif
