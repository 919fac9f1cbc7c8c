/* cluster_limits.h — the account's max_send_rate and max_24h_send held across every node of
 * the cluster through Redis (issue 17), with the exact semantics of the single-node rules
 * (mta/quota.h). It promises:
 * - while Redis is up the node accepts a recipient only against rate tokens and 24 h slots
 *   leased from the account (quota QUOTA_LEASED): one Lua script, one round trip, leases a
 *   batch of both, so a node asks Redis about once per batch of recipients, not per
 *   recipient; the rate is a GCRA over the account (capacity max(1, rate) as the local
 *   bucket), the 24 h quota a rolling window of one-minute buckets in one hash;
 * - near the end of the quota a lease is only what the waiting recipient needs, and slots a
 *   node leased but did not use are given back after a second without use, so the
 *   (max+1)th recipient is refused on whichever node gets it;
 * - a recipient the node's lease does not cover waits for one lease round trip (bounded by
 *   the Redis link's 2 s deadline) instead of being refused at once; several waiting
 *   recipients share one request;
 * - Redis down: the node holds `cluster.local_share` of both limits on its own (quota
 *   QUOTA_LOCAL) and never refuses mail because Redis is away; when Redis returns, the
 *   recipients it sent meanwhile are added to the account's window (by minute), and if
 *   Redis lost the window, every node adds its own last 24 h once. */
#ifndef KILN_CLUSTER_LIMITS_H
#define KILN_CLUSTER_LIMITS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/kiln.h"

struct redis_link;
typedef struct cluster_limits cluster_limits;
typedef struct cluster_limits_wait cluster_limits_wait;

/* Called on the loop once the lease request is answered (or failed): recheck the limits. */
typedef void cluster_limits_cb(void *arg);

cluster_limits *cluster_limits_new(kiln_ctx *ctx, struct redis_link *cmd);
/* The command link came up / went down. */
void cluster_limits_up(cluster_limits *l);
void cluster_limits_down(cluster_limits *l);
/* Every second: gives back 24 h slots leased and not used since the last tick. */
void cluster_limits_tick(cluster_limits *l);
/* The config was reloaded (limits, node count, local_share). */
void cluster_limits_reload(cluster_limits *l);
/* Asks the account for a lease covering `rate_n` tokens and `daily_n` slots beyond what
 * the node holds; cb runs once, later, on the loop. NULL (cb never runs): nothing to ask
 * (Redis down, or the node's quota is not leased), so the local answer stands. */
cluster_limits_wait *cluster_limits_ask(cluster_limits *l, unsigned rate_n, unsigned daily_n,
                                        cluster_limits_cb *cb, void *arg);
/* The waiter is gone (session closed): cb will not run. */
void cluster_limits_cancel(cluster_limits *l, cluster_limits_wait *w);
/* For `kilnctl cluster status`: {"Mode", "Share", "RateTokens", "DailySlots",
 * "AccountSent24h", "Leases", "Waits"} */
json_t *cluster_limits_json(cluster_limits *l);
/* Whoever still waits is answered first (under the local share). Slots leased and not used
 * stay counted in the account's window (at most a batch). */
void cluster_limits_free(cluster_limits *l);

#endif
