/* smtp_server.h — the submission listener (SPEC section 2): libev SMTP server with
 * ESMTP extensions, STARTTLS, AUTH, the SES policy and group-committed acceptance. */
#ifndef KILN_SMTP_SERVER_H
#define KILN_SMTP_SERVER_H

struct kiln_ctx;
typedef struct smtp_server smtp_server;

/* Binds every submission.listen address of ctx->cfg. NULL and *err on failure. */
smtp_server *smtp_server_start(struct kiln_ctx *ctx, char **err);
/* Stop accepting connections; open sessions go on. */
void smtp_server_stop_accepting(smtp_server *srv);
/* Graceful end: stop accepting, sessions in a transaction finish it, idle ones get
 * "421 4.3.2 Service shutting down"; done(arg) when none is left. */
void smtp_server_shutdown(smtp_server *srv, void (*done)(void *arg), void *arg);
int smtp_server_sessions(const smtp_server *srv);
void smtp_server_free(smtp_server *srv);

#endif
