/* kilnctl_cluster.h — `kilnctl cluster status`'s human output: this node and its link to
 * Redis, then one row per node of the cluster (alive, last heartbeat, IPs, queue, zones it
 * holds down), from the control command's answer (mta/cluster.h). */
#ifndef KILN_KILNCTL_CLUSTER_H
#define KILN_KILNCTL_CLUSTER_H

#include <jansson.h>

/* Prints data ({"Node", "Redis", "Nodes"}) on stdout; missing fields print as "-". */
void kilnctl_cluster_print(json_t *data);

#endif
