/* complaints.h — the managed pools' per-provider complaint signal (issue 14, item 4):
 * complaints (ARF reports matched to a message) are counted per (pool, mailbox provider)
 * over a rolling 24 h, next to the recipients the pool's IPs sent to that provider in the
 * same 24 h; while complaints / sent is above the hold rate (feedback.complaint_hold_rate,
 * 0 = never) and at least POOLS_HOLD_MIN_COMPLAINTS complaints were counted, that provider's
 * warm-up ramp is held on every managed IP of the pool: successful sessions no longer raise
 * its cap (a throttle still cuts it). The hold lifts by itself when the rate falls back
 * (complaints age out of the 24 h, or more mail is sent). Pure logic on the pools' state
 * with the caller's clock; what `kilnctl ips` shows comes from pools_info. */
#ifndef KILN_POOLS_COMPLAINTS_H
#define KILN_POOLS_COMPLAINTS_H

#include <stdbool.h>
#include <stdint.h>

#include "pools/pools.h"

#define POOLS_HOLD_MIN_COMPLAINTS 2

/* The hold rate (a fraction: 0.001 = 0.1 %); 0 turns holding off. Default 0. */
void pools_set_complaint_hold_rate(pools *p, double rate);

/* N complaints about mail POOL sent to PROVIDER (pools_provider_of_domain of the complained
 * recipient's domain) at NOW. Unknown pools are ignored. */
void pools_record_complaint(pools *p, const char *pool, const char *provider, unsigned n,
                            int64_t now_ms);

/* True while PROVIDER's ramp is held in POOL (see above). */
bool pools_provider_held(const pools *p, const char *pool, const char *provider, int64_t now_ms);

/* The complaints counted for (POOL, PROVIDER) in the 24 h before NOW. */
int64_t pools_complaints_24h(const pools *p, const char *pool, const char *provider,
                             int64_t now_ms);

/* Mailbox provider of a recipient's domain by name, for reports that carry no MX host:
 * "gmail" (gmail.com, googlemail.com), "microsoft" (outlook.com, hotmail.*, live.*,
 * msn.com), "yahoo" (yahoo.*, ymail.com, aol.com, rocketmail.com), else "other". Static. */
const char *pools_provider_of_domain(const char *domain);

#endif
