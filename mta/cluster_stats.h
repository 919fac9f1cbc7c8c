/* cluster_stats.h — the account's send statistics (SES GetSendStatistics buckets) and the
 * reputation computed from them, summed over every node of the cluster (issue 17). It
 * promises:
 * - each node writes its own 14 days of 15-minute buckets to Redis (PREFIX "stats:" NODE,
 *   expiring after 15 days) every CLUSTER_STATS_EVERY seconds when they changed, and reads
 *   the other nodes' at the same pace; a node's snapshot replaces its last one, so nothing
 *   is counted twice and a node back from a Redis outage is summed right again at once;
 * - account_stats_each gives the sum: this node's spool, exactly, plus the other nodes'
 *   last snapshots (at most a few seconds old; while Redis is away, the last ones read).
 *   Without a cluster it is the spool's alone. */
#ifndef KILN_CLUSTER_STATS_H
#define KILN_CLUSTER_STATS_H

#include <jansson.h>
#include <stdint.h>

#include "base/kiln.h"
#include "store/spool.h"

#define CLUSTER_STATS_EVERY 2      /* seconds between writes (if changed) and reads */

struct redis_link;
typedef struct cluster_stats cluster_stats;

cluster_stats *cluster_stats_new(kiln_ctx *ctx, struct redis_link *cmd);
/* Every second with Redis up. */
void cluster_stats_tick(cluster_stats *cs);
/* For kilnctl cluster status: {"Nodes": N summed, "Updated": ISO time of the last read}. */
json_t *cluster_stats_json(cluster_stats *cs);
void cluster_stats_free(cluster_stats *cs);

/* The account's buckets since since_ms, oldest first, summed over the nodes (ctx->cluster
 * NULL: this node's alone). 0, or -1 when the spool cannot be read (spool_errmsg). */
int account_stats_each(kiln_ctx *ctx, int64_t since_ms, spool_stats_cb cb, void *arg);

#endif
