/* pool.h — dedicated-IP pools: which leased IPs belong to a pool, and which one the next
 * session of that pool goes out from. Pure functions over the (immutable) config plus a
 * caller-held round-robin cursor, so every decision is unit-testable without sockets.
 * This first version spreads sessions round-robin over the pool's IPs; warm-up caps,
 * health and zone spreading come later and keep this interface. */
#ifndef KILN_POOL_H
#define KILN_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Number of cfg->ips whose pool is `pool` (exact name). */
size_t pool_ip_count(const config *cfg, const char *pool);
/* The n-th IP (0-based, in config order) of `pool`, or NULL when n >= pool_ip_count. */
const config_ip *pool_ip_at(const config *cfg, const char *pool, size_t n);
/* True if `addr` is one of the IPs of `pool`. */
bool pool_has_ip(const config *cfg, const char *pool, const char *addr);

/* Next source IP of `pool`, round-robin: *rr_cursor (start at 0, keep it between calls)
 * says where to continue and is advanced past the IP returned. When avoid_addr names an
 * IP of the pool and the pool has another one, that other one is returned instead (used
 * after a bind or connect failure). Returns NULL when the pool has no IP: the mail waits
 * (DeliveryDelay, delayType IPFailure). */
const config_ip *pool_choose_ip(const config *cfg, const char *pool, uint64_t *rr_cursor,
                                const char *avoid_addr);

#endif
