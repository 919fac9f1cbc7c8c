/* smtp_server.h — the submission listener (SPEC section 2): libev SMTP server with
 * ESMTP extensions, STARTTLS, AUTH, the SES policy and group-committed acceptance. */
#ifndef KILN_SMTP_SERVER_H
#define KILN_SMTP_SERVER_H

#include <stdbool.h>
#include <stdint.h>

struct kiln_ctx;
struct config;
struct tls_ctx;
typedef struct smtp_server smtp_server;

/* Binds every submission.listen address of ctx->cfg. NULL and *err on failure. */
smtp_server *smtp_server_start(struct kiln_ctx *ctx, char **err);
/* The feedback listener (issue 14): binds every feedback.listen address (bind false: none,
 * for tests over smtp_server_serve_fd). The same sessions, limits, timeouts and STARTTLS
 * (with submission.tls) as submission, but no AUTH and no submission policy: any MAIL FROM
 * (bounces come from <>), RCPT only to kiln's own bounce and feedback addresses
 * (feedback_rcpt_ok, else 550 5.7.1), at most SMTP_SERVER_FEEDBACK_MAX_RCPTS recipients,
 * messages up to feedback.max_message_size, each committed by feedback_accept before 250. */
struct feedback;
#define SMTP_SERVER_FEEDBACK_MAX_RCPTS 50
smtp_server *smtp_server_start_feedback(struct kiln_ctx *ctx, struct feedback *fb, bool bind,
                                        char **err);
/* Stop accepting connections; open sessions go on. */
void smtp_server_stop_accepting(smtp_server *srv);
/* Graceful end: stop accepting, sessions in a transaction finish it, idle ones get
 * "421 4.3.2 Service shutting down"; done(arg) when none is left. */
void smtp_server_shutdown(smtp_server *srv, void (*done)(void *arg), void *arg);
int smtp_server_sessions(const smtp_server *srv);
/* Reload, step 1: when cfg's submission.tls names other files than the running pair, or
 * the same files changed on disk (renewed), loads the new pair into *out (NULL: nothing to
 * change). -1 and *err when the new pair is unusable (unreadable by the user kilnd runs
 * as, not PEM, key not matching the certificate): the running pair stays. */
int smtp_server_tls_load(const smtp_server *srv, const struct config *cfg,
                         struct tls_ctx **out, char **err);
/* Reload, step 2: sessions that start TLS from now on use tls (taken over); sessions that
 * already did keep theirs. */
void smtp_server_tls_swap(smtp_server *srv, struct tls_ctx *tls);
void smtp_server_free(smtp_server *srv);

/* A server without listeners (nothing is bound): its sessions come from
 * smtp_server_serve_fd. For the session fuzz target and tests that drive the real session
 * over a socketpair. */
smtp_server *smtp_server_start_detached(struct kiln_ctx *ctx, char **err);
/* How long a failed AUTH waits for its 535 (default 1 s, what kilnd uses). The session
 * fuzz target sets 0: it cannot wait a second per input, and the delay is a timer that
 * changes no other path. */
void smtp_server_set_auth_fail_delay(smtp_server *srv, double seconds);
/* Serves an already-connected stream socket as a submission session from client ip (the
 * server owns fd from now on), exactly as if a listener had accepted it. */
void smtp_server_serve_fd(smtp_server *srv, int fd, const char *ip, bool loopback);
/* Bytes of message buffers the sessions hold, counted against
 * submission.max_inflight_bytes (0 when no message is in flight). */
int64_t smtp_server_inflight(const smtp_server *srv);

#endif
