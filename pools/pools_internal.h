/* pools_internal.h — the structs behind pools.h's opaque types, shared by pools.c (state,
 * choice, accounting) and pools_state.c (JSON persistence), and read by forecast.c (ramp
 * positions and managed caps, never written): nothing outside pools/ includes this file. */
#ifndef KILN_POOLS_INTERNAL_H
#define KILN_POOLS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "pools/health.h"
#include "pools/history.h"
#include "pools/pools.h"
#include "pools/warmup.h"

typedef struct managed_cap {
    char *provider;
    int64_t cap;                 /* recipients per rolling 24 h */
    int64_t blocked_until_ms;    /* throttled: no new session before */
    int64_t backoff_ms;          /* length of the last block */
    warmup_window usage;
    pools_daily hist;            /* sent per day to this provider (history.h) */
} managed_cap;

struct pools_ip {
    char *address, *pool, *zone, *ehlo;
    char *public_address;        /* the config's public_address (NAT), or NULL */
    char zone_reason[96];        /* "zone az2 is down" */
    bool managed;
    bool draining;
    int64_t drain_since_ms;      /* when draining: when the reload released it */
    bool cfg_done;               /* its config line says `warmup: done` */
    int64_t lease_ms;
    warmup_ramp ramp;
    warmup_window usage;
    pools_daily hist;            /* sent per day (history.h) */
    health h;
    int sessions;
    int64_t swrr;                /* smooth weighted round robin: current weight */
    managed_cap **caps;
    size_t ncaps;
};

/* Complaints about one (pool, mailbox provider) in hourly buckets (complaints.c): slot
 * h % COMPLAINTS_HOURS holds hour index h (ms / 3600000) and its count. */
#define COMPLAINTS_HOURS 25
typedef struct pools_complaints {
    char *pool, *provider;
    int64_t hour[COMPLAINTS_HOURS];
    int64_t count[COMPLAINTS_HOURS];
} pools_complaints;

typedef struct pools_zone {
    char *name;
    bool up;
} pools_zone;

struct pools {
    pools_opts opts;
    config_warmup warmup;
    pools_ip **ips;              /* config order, then draining ones */
    size_t nips;
    pools_zone *zones;
    size_t nzones;
    pools_complaints **complaints;   /* complaints.c: per (pool, provider) */
    size_t ncomplaints;
    double complaint_hold_rate;      /* 0: never hold */
    bool dirty;
};

/* Adds a managed cap for provider ("other" when NULL or empty) to ip and returns it. */
/* Frees every managed cap of ip. */
void pools_caps_free(pools_ip *ip);
managed_cap *pools_cap_add(pools_ip *ip, const char *provider, int64_t cap, int64_t now_ms);

/* complaints.c, for pools.c and pools_state.c: */
/* Frees every complaint counter of p. */
void pools_complaints_free(pools *p);
/* Adds n complaints at hour index `hour` to (pool, provider) without checking the pool
 * (restoring saved state); buckets older than the 24 h before now_ms are dropped. */
void pools_complaints_put(pools *p, const char *pool, const char *provider, int64_t hour,
                          int64_t n, int64_t now_ms);

#endif
