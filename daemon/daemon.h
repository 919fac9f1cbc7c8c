/* daemon.h — kilnd's life cycle, apart from main() so tests can drive it: build the
 * context from a config file, start every module, run the loop, stop gracefully. */
#ifndef KILN_DAEMON_H
#define KILN_DAEMON_H

#include "base/kiln.h"

/* Loads the config, opens log and spool, recovers the queue, binds listeners and the
 * control socket; node (kilnd --node; NULL: cluster.node) names this cluster node. Returns
 * NULL and *err on failure. */
kiln_ctx *daemon_create(const char *config_path, const char *node, char **err);
/* Runs the loop until the graceful stop completes; returns the exit status. */
int daemon_run(kiln_ctx *ctx);
void daemon_destroy(kiln_ctx *ctx);

#endif
