/* cluster_ops.h — operator and warm-up state shared by every node of the cluster through
 * Redis (issue 17). It promises:
 * - a zone marked down or up on any node (kilnctl zone down|up) is stored in Redis and
 *   published, and every other node takes that zone out of (or back into) rotation at
 *   once (and within 3 s if it missed the publish: the stored states are read again
 *   every 3 s); a node that was away from Redis takes the stored zone states when it
 *   returns, after sending the changes it made meanwhile; a Redis that lost them is
 *   seeded again;
 * - a warm-up percentage set for another node's IP (kilnctl ip warmup, the SES API's
 *   PutDedicatedIpWarmupAttributes) is forwarded to the IP's node through Redis (kept
 *   there until that node applies it, so a node that is down applies it when it returns);
 * - each node stores its IPs' warm-up state (ramp position, usage, history, managed caps)
 *   in Redis about once a second when it changed; when an IP a node now owns was last
 *   written by another node (the IP moved in kiln.yaml), the node takes that state over at
 *   start or reload, so the IP keeps its place on the ramp;
 * - Redis away never blocks an operator action: it applies on this node and is shared
 *   when Redis returns. */
#ifndef KILN_CLUSTER_OPS_H
#define KILN_CLUSTER_OPS_H

#include <stdbool.h>

#include "base/kiln.h"

struct redis_link;
typedef struct cluster_ops cluster_ops;

cluster_ops *cluster_ops_new(kiln_ctx *ctx, struct redis_link *cmd);
/* The channel the subscriber link must subscribe to (PREFIX "ops"). */
const char *cluster_ops_channel(const cluster_ops *o);
/* The command link is up: pending changes out, stored state in. */
void cluster_ops_up(cluster_ops *o);
/* A message on cluster_ops_channel. */
void cluster_ops_message(cluster_ops *o, const char *data, size_t len);
/* Every second with Redis up: IPs' warm-up state out when it changed. */
void cluster_ops_tick(cluster_ops *o);
/* A reload may have given this node IPs another node had. */
void cluster_ops_reload(cluster_ops *o);
/* This node's operator changed a zone (already applied locally). */
void cluster_ops_zone_changed(cluster_ops *o, const char *zone, bool up);
/* A warm-up percentage for an address this node does not bind: 1 and *owner (malloc'd)
 * when it is another node's IP and the setting is on its way; 0 when no node of the
 * cluster has it; -1 and *err when it is another node's but Redis is away. */
int cluster_ops_forward_warmup(cluster_ops *o, const char *address, int percent, char **owner,
                               char **err);
void cluster_ops_free(cluster_ops *o);

#endif
