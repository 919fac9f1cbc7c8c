/* cluster.h — several kilnd nodes as one account through Redis (issue 17), the parts that
 * run today: each node's heartbeat and the cluster view built from everyone's, and the
 * account suppression list shared by every node. It promises:
 * - every second this node writes its heartbeat (its IPs as `kilnctl ips` shows them, queue,
 *   sessions, zones it holds down) under PREFIX "node:" NAME with a 5 s expiry, and reads
 *   every configured node's; a node whose key is gone is reported not alive;
 * - a suppression written on this node (API, kilnctl, bounce, complaint) is stored in the
 *   hash PREFIX "suppression" and published on the channel of the same name, and a write
 *   published by another node is applied to this node's spool at once, so a suppression
 *   added on one node is honoured by all within a second;
 * - Redis down or unreachable never refuses or loses mail and never blocks the loop: the
 *   node goes on under its own spool; suppression writes made meanwhile are kept in the
 *   spool (kv "cluster.pending:ADDRESS") and sent when Redis is back, then the node pulls
 *   the writes it missed (added entries; a hash Redis lost is seeded again from the node's
 *   own list);
 * - the account's max_send_rate and max_24h_send hold across all nodes (cluster_limits.h);
 * - zone states, warm-up settings and the IPs' warm-up state are shared (cluster_ops.h);
 * - send statistics and reputation are summed over the nodes (cluster_stats.h);
 * - the degraded state is logged once per change and shown by `kilnctl cluster status`
 *   and the kiln_cluster_redis_up gauge. */
#ifndef KILN_CLUSTER_H
#define KILN_CLUSTER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/kiln.h"

typedef struct cluster cluster;

/* From ctx->cfg (which must have cluster_on and a selected node); installs the spool's
 * suppression hook. Nothing is sent until cluster_start. */
cluster *cluster_new(kiln_ctx *ctx);
void cluster_start(cluster *c);
/* A reload swapped ctx->cfg: the node list may have changed (Redis and the prefix may not:
 * cluster_reload_blocker says so before). */
void cluster_reload(cluster *c);
/* Why the new config cannot be applied by a reload (the section added or removed, another
 * node name, Redis URL, password or key prefix changed), malloc'd; NULL: it can. */
char *cluster_reload_blocker(const config *old, const config *neu);
/* `kilnctl cluster status`: {"Node", "Redis": {...}, "Nodes": [...]} */
json_t *cluster_status_json(cluster *c);
/* The other nodes' IPs as their last heartbeats showed them (DedicatedIp objects with
 * kiln.Node), appended to arr; for `kilnctl ips` on any node. */
void cluster_remote_ips(cluster *c, json_t *arr);
bool cluster_redis_is_up(const cluster *c);
/* For a handoff (mta/handoff.h): a live other node whose last heartbeat shows an IP of pool
 * that can send (state active, its zone up, under its daily cap) and whose submission
 * address (submission_peers) is an IP literal; the one with the most headroom (peers alike
 * take turns). 0 with
 * *node and *host malloc'd; -1 none (or Redis down: liveness unknown). */
int cluster_pick_peer(cluster *c, const char *pool, char **node, char **host, int *port);
/* This node's operator marked a zone down or up: shared with every node (cluster_ops.h).
 * NULL c: nothing to do. */
void cluster_zone_changed(cluster *c, const char *zone, bool up);
/* A warm-up percentage for an address this node does not bind (cluster_ops.h): 1 forwarded
 * to *owner's node, 0 no node has it (or c is NULL), -1 and *err Redis away. */
int cluster_forward_warmup(cluster *c, const char *address, int percent, char **owner,
                           char **err);
/* The secret the nodes' handoff credentials derive from (mta/handoff.h): 64 hex digits,
 * shared through Redis (kept in the spool too); NULL until this node has it. */
const char *cluster_secret(const cluster *c);
/* Send statistics summed over the nodes (mta/cluster_stats.h); NULL when c is NULL. */
struct cluster_stats *cluster_get_stats(cluster *c);
/* The account's shared rate and 24 h quota (mta/cluster_limits.h); NULL when c is NULL. */
struct cluster_limits *cluster_get_limits(cluster *c);
void cluster_free(cluster *c);

#endif
