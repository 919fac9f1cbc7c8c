/* kiln.h — the one context struct kilnd's modules receive (no hidden globals), and the
 * daemon-level operations that several modules trigger (reload, stop): those are an ops
 * struct the daemon wires, so a module below or beside the daemon (control) never calls
 * up into it. */
#ifndef KILN_KILN_H
#define KILN_KILN_H

#include <stdbool.h>
#include <stdint.h>

#include "base/config.h"
#include "base/log.h"

struct ev_loop;
struct spool;
struct quota;
struct smtp_server;
struct control;
struct scheduler;
struct delivery;
struct events;
struct curl_ev;
struct dkim_keys;
struct metrics;
struct timeline;
struct cluster;

typedef struct kiln_ctx {
    struct ev_loop *loop;
    char *config_path;
    config *cfg;                 /* current config; replaced (not changed) on reload */
    klog *log;
    struct spool *spool;
    struct quota *quota;
    struct events *events;
    const struct kiln_ops *ops;  /* daemon-level operations, wired by the daemon */
    struct smtp_server *server;
    struct control *control;
    struct scheduler *sched;
    struct delivery *delivery;   /* the scheduler's executor: delivery sessions */
    struct curl_ev *curl;        /* libcurl multi on the loop (mta/curl_ev.h): HTTP clients */
    struct dkim_keys *dkim;      /* the DKIM keys it signs with (mta/dkim_keys.h) */
    struct metrics *metrics;     /* the Prometheus registry (base/metrics.h); NULL in tests
                                    that do not count */
    struct timeline *timeline;   /* the last notable events (base/timeline.h); NULL: none
                                    recorded */
    struct cluster *cluster;     /* the cluster link (mta/cluster.h); NULL without cluster: */
    int64_t started_ms;          /* wall clock at start */
    bool stopping;
    /* Clock: wall milliseconds. Defaults to util_wall_ms; tests inject their own. */
    int64_t (*clock)(void *arg);
    void *clock_arg;
} kiln_ctx;

static inline int64_t kiln_now_ms(const kiln_ctx *ctx) { return ctx->clock(ctx->clock_arg); }

typedef struct kiln_ops {
    /* Loads ctx->config_path again; on success swaps it in and tells every module, on
     * failure changes nothing. Returns 0, or -1 with *err (malloc'd) naming the problem. */
    int (*reload)(kiln_ctx *ctx, char **err);
    /* Begins the graceful stop (SIGTERM): stop accepting, finish open transactions, exit 0. */
    void (*stop)(kiln_ctx *ctx);
} kiln_ops;

#endif
