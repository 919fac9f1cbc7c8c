/* metrics_http.h — the `metrics` listener (issue 15): GET /metrics answers the registry of
 * ctx->metrics in the Prometheus text format 0.0.4, its gauges refilled from the modules'
 * state at each scrape (queue, sessions, IPs and zones, webhook backlogs, reputation,
 * process). Its own HTTP listener (api/http.h) with small limits, so scraping never shares
 * limits with the SES API. Wired by daemon/daemon.c.
 *
 * Auth (README "Metrics"): without metrics.token_file, clients from a loopback address
 * (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104) are served and any other client gets 403; with
 * token_file, every client, loopback included, must send `Authorization: Bearer TOKEN`
 * (compared in constant time) or gets 401. The operator web page (api/web.h: the page,
 * its files and its JSON reads) is served here under the same rule. Other paths: 404;
 * other methods: 405. */
#ifndef KILN_METRICS_HTTP_H
#define KILN_METRICS_HTTP_H

#include <stdbool.h>
#include <stddef.h>

struct kiln_ctx;
typedef struct metrics_http metrics_http;

/* Starts the listeners of ctx->cfg's metrics section (NULL with *err NULL when it has none;
 * NULL with *err set on failure). Call before privileges are dropped. */
metrics_http *metrics_http_start(struct kiln_ctx *ctx, char **err);
int metrics_http_port(const metrics_http *mh, size_t i);
/* The graceful stop's first step: no new connections. */
void metrics_http_quiesce(metrics_http *mh);
void metrics_http_stop(metrics_http *mh);

/* Refills the scrape-time gauges of ctx->metrics from the current state (what a GET
 * /metrics does before rendering). */
void metrics_http_collect(metrics_http *mh);
/* The auth rule above: 200, 401 or 403. */
int metrics_http_authorize(const char *token, const char *client_ip, const char *authorization);

#endif
