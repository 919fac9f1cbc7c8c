/* shaping.h — traffic shaping per (source IP, destination site), SPEC section 1 `shaping:`
 * and issue 5, as pure state over an injected clock and random source (no I/O):
 *
 *  - a site is the set of MX hosts of a domain (sorted, lower-cased), so domains that share
 *    MX hosts share limits (as KumoMTA's site names); shaping_site_key() builds it;
 *  - limits: connections, messages_per_connection, rate (messages per s/m/h) from
 *    shaping.default, overridden field by field by the first shaping.providers entry one of
 *    whose mx_suffix matches an MX host of the site (label boundary: "aspmx.l.google.com"
 *    matches "google.com", "evilgoogle.com" does not);
 *  - per-destination concurrency grows by slow start and shrinks on failures (as Postfix's
 *    qmgr): the connection window starts at min(2, limit), +1 after each successful
 *    transaction up to the limit; a connect failure or timeout halves it (at least 1);
 *  - a 421 or a connection-rate/throttling reply backs that (IP, site) off — exponential
 *    from 5 s, doubling per consecutive throttle, capped at 10 min, with +-20 % jitter —
 *    without touching other IPs or sites; the window also drops to 1 and slow-starts again.
 *
 * The scheduler asks before opening a connection and before each transaction, and tells
 * about connections opened/closed, messages sent and outcomes. */
#ifndef KILN_SHAPING_H
#define KILN_SHAPING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/config.h"

typedef struct shaping shaping;
typedef struct shaping_dest shaping_dest;   /* one (source IP, site) */

/* rnd(arg) returns a uniformly random uint32 (for jitter); NULL uses a fixed-seed PRNG. */
shaping *shaping_new(const config *cfg, uint32_t (*rnd)(void *arg), void *rnd_arg);
void shaping_free(shaping *sh);
/* New limits after a reload; existing entries keep counters and backoff. */
void shaping_config_changed(shaping *sh, const config *cfg);

/* "mx1.example.test,mx2.example.test": MX host names lower-cased, sorted, deduplicated,
 * trailing dots removed; for a route or an implicit (A-record) next hop, the host itself.
 * Malloc'd. */
char *shaping_site_key(char *const *mx_hosts, size_t n);

/* The entry for (ip, site), created on first use with the limits of the site (provider
 * match on mx_hosts). The handle stays valid until shaping_free (entries are never freed
 * while referenced: shaping_gc drops only entries idle for gc_after_ms with no connection). */
shaping_dest *shaping_get(shaping *sh, const char *ip, const char *site_key,
                          char *const *mx_hosts, size_t n);
void shaping_gc(shaping *sh, int64_t now_ms, int64_t gc_after_ms);

typedef enum {
    SHAPING_OK = 0,
    SHAPING_WAIT_CONNECTIONS,   /* the (IP, site) concurrency window is full */
    SHAPING_WAIT_RATE,          /* no rate token: *retry_at_ms says when */
    SHAPING_WAIT_BACKOFF,       /* backing off after throttling: *retry_at_ms says until when */
} shaping_verdict;

/* May a NEW connection be opened from ip to site now? (backoff, then window vs open).
 * On SHAPING_WAIT_CONNECTIONS *retry_at_ms is 0: retry when a connection closes.
 * retry_at_ms and reason may be NULL; on SHAPING_OK the reason is "". */
shaping_verdict shaping_may_connect(shaping_dest *d, int64_t now_ms, int64_t *retry_at_ms,
                                    char *reason, size_t reason_len);
/* May a transaction of one message start now (backoff, then rate)? On OK one rate token is
 * taken. */
shaping_verdict shaping_take_message(shaping_dest *d, int64_t now_ms, int64_t *retry_at_ms,
                                     char *reason, size_t reason_len);
/* Messages a connection may carry before it QUITs (messages_per_connection; INT_MAX when
 * unlimited). */
int shaping_messages_per_connection(const shaping_dest *d);

void shaping_connection_opened(shaping_dest *d);
void shaping_connection_closed(shaping_dest *d);

typedef enum {
    SHAPING_RESULT_OK = 0,      /* a transaction completed (any 2xx/5xx final reply) */
    SHAPING_RESULT_FAILED,      /* connect failure, timeout, dropped connection */
    SHAPING_RESULT_THROTTLED,   /* 421, or a 4xx naming rate / too many connections / throttling */
} shaping_result;
void shaping_record(shaping_dest *d, shaping_result r, int64_t now_ms);

/* For logs, kilnctl queue --explain and tests. */
typedef struct shaping_info {
    const char *ip, *site, *provider;   /* provider: the matching shaping.providers name or "default" */
    int connections_limit, window, open;
    int messages_per_connection;
    config_rate rate;
    int64_t backoff_until_ms;           /* 0 when not backing off */
    int consecutive_throttles;
} shaping_info;
void shaping_get_info(const shaping_dest *d, int64_t now_ms, shaping_info *out);

#endif
