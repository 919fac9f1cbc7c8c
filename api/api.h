/* api.h — the SES v2 API in kilnd: the HTTP listener of `api.listen` (api/http.h), each
 * request authenticated (SigV4 against api.access_keys), routed and validated by the
 * model (api/model.h), rate-limited per access key, and answered by one operation handler
 * (api/api_*.c) with SES's shapes and errors. Wired by daemon/daemon.c. */
#ifndef KILN_API_H
#define KILN_API_H

#include <stddef.h>

struct kiln_ctx;
typedef struct api api;

/* Starts the listeners of ctx->cfg's api section (NULL with *err NULL when the config
 * has none; NULL with *err set on failure). Call before privileges are dropped. */
api *api_start(struct kiln_ctx *ctx, char **err);
/* The port of the i-th api.listen entry (tests with port 0). */
int api_port(const api *a, size_t i);
/* A reload swapped ctx->cfg: keys, scopes, limits come from it from now on (listen and tls
 * cannot change on reload; daemon.c refuses such a reload). */
void api_config_changed(api *a);
/* The graceful stop (SIGTERM): no new connections, new requests on open ones get 503
 * ServiceUnavailable (nothing stored, SDKs retry), calls in progress (a send waiting for its
 * commit) are answered; done(arg) runs once none is left (at once if none). */
void api_shutdown(api *a, void (*done)(void *arg), void *arg);
void api_stop(api *a);

#endif
