/* pools.h — the dedicated-IP state of kiln (SPEC section 3: warm-up, failover,
 * lease/release; section 5: kilnctl ips / ip warmup / zone down|up), as pure decisions
 * over state plus an injected clock (now_ms arguments; no I/O, no libev):
 *
 *  - per IP: lease time, standard warm-up (percentage, geometric daily cap, pacing),
 *    rolling 24 h and 1 h usage, health (circuit breaker), draining after release;
 *  - per (IP, mailbox provider) in `scaling: managed` pools: a cap that starts low, rises
 *    as the provider accepts and is cut when it throttles (AIMD slow start);
 *  - per zone: up or down (kilnctl zone down/up);
 *  - the choice of a source IP for the next session of a pool.
 *
 * The scheduler owns one `pools` (in its struct), tells it about every config (reload diff),
 * every recipient sent and every session outcome, and asks it for IPs. Persistent state
 * (lease time, warm-up position, usage, managed caps, zones down) round-trips through
 * pools_state_json()/pools_state_load() so the scheduler can keep it in the spool. */
#ifndef KILN_POOLS_H
#define KILN_POOLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/config.h"

typedef struct pools pools;
typedef struct pools_ip pools_ip;

typedef enum {
    POOLS_STATE_ACTIVE = 0,   /* in rotation (also half-open: probing) */
    POOLS_STATE_DRAINING,     /* released by a reload: no new session, open ones finish */
    POOLS_STATE_DOWN,         /* circuit open, or its zone is down */
} pools_ip_state;

typedef enum {
    POOLS_HEALTH_CLOSED = 0,  /* healthy */
    POOLS_HEALTH_OPEN,        /* taken out of rotation until cooldown ends */
    POOLS_HEALTH_HALF_OPEN,   /* cool-down over: one probe session allowed */
} pools_health;

typedef enum {
    POOLS_RESULT_OK = 0,          /* a session reached the site and got a 2xx/5xx transaction reply */
    POOLS_RESULT_BIND_FAILED,     /* bind() of the source address failed: down at once */
    POOLS_RESULT_CONNECT_FAILED,  /* connect refused / greeting failed / connection lost */
    POOLS_RESULT_CONNECT_TIMEOUT, /* connect timed out (SYN unanswered): CONNECT_FAILED that
                                     costs a connect timeout per try, so a degraded IP with
                                     these is avoided for a cool-down (health.h: DEGRADED) */
    POOLS_RESULT_THROTTLED,       /* 421 or a 4xx rate/reputation reply from the site */
    POOLS_RESULT_ADDRESS_REMOVED, /* the source address left the host's interfaces
                                     (mta/addrwatch.h): down at once, like a bind failure */
} pools_result;

/* Tunables with defaults used by pools_new; tests shorten them. */
typedef struct pools_opts {
    int64_t cooldown_ms;          /* first open period; doubles per failed probe, capped. Default 60 s */
    int64_t cooldown_max_ms;      /* default 10 min */
    int failures_to_open;         /* consecutive connect failures; default 3 */
    int sites_to_open;            /* ... spread over at least this many sites; default 2 */
    int64_t peer_success_window_ms; /* another IP of the pool reached those sites within; default 10 min */
} pools_opts;
void pools_opts_default(pools_opts *o);

/* Builds the state for cfg's ips (every IP new, leased at now_ms, warm if `warmup: done`). */
pools *pools_new(const config *cfg, const pools_opts *opts, int64_t now_ms);
void pools_free(pools *p);

/* ---- reload: lease / release ---- */
typedef struct pools_diff {
    char **added;   size_t nadded;     /* new addresses: start warming (or warm with warmup: done) */
    char **removed; size_t nremoved;   /* released: now draining */
    char **moved;   size_t nmoved;     /* changed pool or zone: warm-up state kept */
} pools_diff;
/* Applies a new config: adds new IPs, marks released ones DRAINING (they stay known while
 * sessions use them; pools_forget() drops those the caller says are idle), moves
 * changed ones keeping their warm-up position. An IP re-added while draining becomes
 * active again with its old state. */
void pools_apply_config(pools *p, const config *cfg, int64_t now_ms, pools_diff *diff);
void pools_diff_free(pools_diff *d);
/* Drops a DRAINING IP from the state (call when its last session closed). */
void pools_forget(pools *p, const char *address);

/* ---- choice ---- */
typedef enum {
    POOLS_CHOSEN = 0,
    POOLS_NO_IP,          /* the pool has no IP at all (config) -> DeliveryDelay IPFailure */
    POOLS_ALL_DOWN,       /* every IP down, draining or in a zone that is down -> IPFailure */
    POOLS_ALL_AT_CAP,     /* every usable IP is at its warm-up / pacing / provider cap
                             -> overflow pool, or DeliveryDelay SendingDeferral */
} pools_verdict;

typedef struct pools_choice {
    pools_verdict verdict;
    pools_ip *ip;         /* when CHOSEN */
    char reason[200];     /* human text for logs and explain, e.g.
                             "all IPs of pool marketing at warm-up cap (127.0.0.13 50/50, ...)" */
    int64_t retry_at_ms;  /* when ALL_AT_CAP / ALL_DOWN: earliest time a retry can succeed
                             (a usage window frees up, a cool-down ends); 0 if unknown */
} pools_choice;

/* Chooses an IP of `pool` for a session to a site (next-hop key, e.g. "mx1.example.com")
 * whose mailbox provider is `provider` (pools_provider_of(); NULL = "other"), for n
 * recipients. Candidates: ACTIVE, zone up, circuit closed (or half-open with no probe
 * running), headroom >= 1 under every cap. Among them the choice is proportional to
 * headroom (smooth weighted round robin: deterministic) with three preferences first: an IP
 * not degraded by connect timeouts (health.h: DEGRADED; within its cool-down), an IP whose
 * zone differs from avoid_zone (after a failure there; may be NULL), and not avoid_addr
 * (may be NULL). Nothing is counted: call pools_record_send when recipients
 * are actually handed to the session. */
void pools_choose(pools *p, const char *pool, const char *site, const char *provider,
                  const char *avoid_addr, const char *avoid_zone, int64_t now_ms,
                  pools_choice *out);

/* Mailbox provider of an MX host name by suffix: "gmail" (google.com, googlemail.com),
 * "microsoft" (outlook.com, hotmail.com), "yahoo" (yahoodns.net, yahoo.com), else "other".
 * Static string. */
const char *pools_provider_of(const char *mx_host);
/* Recipients ip may still send to provider at now under every cap that applies (warm-up
 * and pacing, or the managed provider cap; 0 while that provider is throttled); -1 when no
 * cap applies. The scheduler hands a session at most this many recipients. */
int64_t pools_headroom(const pools *p, const pools_ip *ip, const char *provider, int64_t now_ms);

/* ---- accounting ---- */
/* n recipients were sent (accepted by the remote) from ip to provider at now. Counts against
 * the rolling 24 h cap and pacing hour, and (volume advance) the day's usage. */
void pools_record_send(pools *p, pools_ip *ip, const char *provider, unsigned n, int64_t now_ms);
/* Outcome of a session or connection attempt from ip to site. Drives the circuit breaker
 * (BIND_FAILED opens at once; CONNECT_FAILED counts; OK closes and records the site as
 * reachable from this IP) and, in managed pools, the provider cap (THROTTLED cuts it;
 * OK with n accepted raises it). A half-open probe's outcome closes or re-opens. */
void pools_record_result(pools *p, pools_ip *ip, const char *site, const char *provider,
                         pools_result r, unsigned accepted, int64_t now_ms);
/* A session from ip started / ended (for the half-open probe slot and the open-session
 * count shown by kilnctl ips). */
void pools_session_started(pools *p, pools_ip *ip);
void pools_session_ended(pools *p, pools_ip *ip);

/* ---- operator actions ---- */
/* PutDedicatedIpWarmupAttributes: sets the warm-up percentage (0..100) from now on.
 * -1 and *err if the address is unknown or the pool is managed. */
int pools_set_warmup(pools *p, const char *address, int percent, int64_t now_ms, char **err);
/* kilnctl zone down|up. -1 and *err if the zone is not in the config. */
int pools_set_zone(pools *p, const char *zone, bool up, char **err);
bool pools_zone_is_up(const pools *p, const char *zone);

/* ---- reading state (kilnctl ips, explain, logs) ---- */
/* One (IP, provider) cap of a managed pool. */
typedef struct pools_cap_info {
    const char *provider;         /* "gmail", "microsoft", "yahoo", "other" */
    int64_t daily_cap;            /* recipients per rolling 24 h */
    int64_t sent_24h;             /* to that provider in the rolling 24 h */
    int64_t blocked_until_ms;     /* throttled until; 0 when not blocked */
    bool held;                    /* complaints hold its ramp (complaints.h) */
} pools_cap_info;
#define POOLS_INFO_MAX_CAPS 8     /* providers are the few pools_provider_of names */

typedef struct pools_ip_info {
    const char *address, *pool, *zone, *ehlo;   /* address: the one kiln binds */
    const char *public_address;   /* the address the world sees: the config's public_address
                                     (NAT), else address */
    bool managed;
    const char *warmup_status;    /* "IN_PROGRESS" | "DONE" | "NOT_APPLICABLE" */
    int warmup_percentage;        /* 0..100; -1 in managed pools */
    int64_t sent_24h;             /* rolling 24 h */
    int64_t daily_cap;            /* current cap per rolling 24 h; -1 when none applies */
    int64_t hourly_cap;           /* pacing cap per rolling hour; -1 when none */
    pools_ip_state state;
    pools_health health;
    int sessions;                 /* open sessions */
    int64_t draining_since_ms;    /* when DRAINING: when the reload released it; else 0 */
    int64_t down_until_ms;        /* when OPEN: end of cool-down */
    const char *down_reason;      /* "" or e.g. "bind failed: Cannot assign requested address" */
    bool degraded;                /* active, but connect failures from it at sites the pool's
                                     other IPs reach (health.h: DEGRADED) */
    bool avoided;                 /* degraded by timeouts: the pool prefers its other IPs now */
    const char *degraded_reason;  /* "" or e.g. "connect timeout to 1 site(s) from this IP
                                     while other IPs of the pool connected (mx.d0.test); ..." */
    pools_cap_info caps[POOLS_INFO_MAX_CAPS];   /* managed: per provider it sent to, in the
                                                   order first seen (at most the first 8) */
    size_t ncaps;
} pools_ip_info;
size_t pools_count(const pools *p);
/* i-th IP in config order (drained-but-still-known ones last). */
void pools_info(const pools *p, size_t i, int64_t now_ms, pools_ip_info *out);
/* Same for the IP handle / an address (0, or -1 if unknown). */
void pools_ip_info_of(const pools *p, const pools_ip *ip, int64_t now_ms, pools_ip_info *out);
int pools_info_by_address(const pools *p, const char *address, int64_t now_ms, pools_ip_info *out);
const char *pools_ip_address(const pools_ip *ip);
const char *pools_ip_zone(const pools_ip *ip);
const char *pools_ip_ehlo(const pools_ip *ip);   /* the IP's ehlo or NULL */
const char *pools_state_name(pools_ip_state s);  /* "active" | "draining" | "down" */
const char *pools_health_name(pools_health h);   /* "closed" | "open" | "half-open" */
/* The handle of a known address (draining ones included), or NULL. */
pools_ip *pools_find(const pools *p, const char *address);
/* The handle of the IP whose bound address or else public address is addr, however the
 * literal is spelled ("::1" is "0::1"; draining ones included), or NULL: what an operator
 * names (kilnctl ip warmup/check, the SES API) may be either. */
pools_ip *pools_find_any(const pools *p, const char *addr);
/* The address the world sees from ip: its public_address (NAT), else its address. */
const char *pools_ip_public(const pools_ip *ip);

/* ---- pure warm-up arithmetic (exported for tests) ---- */
/* first_day * (target/first_day)^(pct/100), rounded down; pct in [0,100]. */
int64_t pools_warmup_cap(const config_warmup *w, double pct);
/* ceil(cap * pacing / 24), at least 1; -1 when pacing is 0 or cap is -1. */
int64_t pools_pacing_cap(const config_warmup *w, int64_t daily_cap);

/* ---- persistence ---- */
/* The persistent part of the whole state as JSON text (malloc'd): per address lease_ms,
 * warm-up base (percent and time), volume-advance counters, usage buckets of the last
 * 24 h, managed provider caps; zones down; complaints per (pool, provider) in the last
 * 24 h (complaints.h). */
char *pools_state_json(const pools *p);
/* Restores what pools_state_json saved for addresses present now (others ignored);
 * call right after pools_new. -1 and *err on malformed input (state unchanged). */
int pools_state_load(pools *p, const char *json, int64_t now_ms, char **err);
/* True if state changed since the last pools_state_json (the caller saves it then). */
bool pools_dirty(const pools *p);

#endif
