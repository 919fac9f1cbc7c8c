/* control_internal.h — what mta/control.c (the socket and its line protocol) and
 * mta/control_cmd.c (the commands, with control_identity.c and control_forecast.c) share;
 * nothing else includes it. */
#ifndef KILN_CONTROL_INTERNAL_H
#define KILN_CONTROL_INTERNAL_H

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>

#include "base/kiln.h"
#include "base/util.h"
#include "mta/control.h"
#include "mta/control_parse.h"

typedef struct control_client control_client;

/* A reply that comes later: after a spool commit, or from the query thread. Owned by
 * whoever answers it (control_pending_answer frees it); the client may be gone by then
 * (client == NULL). */
typedef struct control_pending {
    control *ctl;
    control_client *client;
    char *cmd;
    char *address;
} control_pending;

struct control_client {
    control *ctl;
    int fd;
    ev_io rio;
    ev_io wio;
    ev_idle resume;            /* goes on with queued lines after a commit answered */
    strbuf in;
    strbuf out;
    control_pending *pending;  /* a request waiting for its commit or query, or NULL */
    bool eof;                  /* the peer closed its side: answer what is left, then close */
    bool closing;              /* close once out is written (protocol error) */
    bool in_process;           /* control_client_process is on the stack (commit callbacks may
                                  run inside spool_on_commit) */
    control_client *prev, *next;
};

struct control {
    kiln_ctx *ctx;
    int fd;
    char *path;
    ev_io aio;
    control_client *clients;
    /* accept() out of descriptors (EMFILE...): the listener pauses, logged once an episode */
    ev_timer accept_backoff;
    bool accept_trouble;
    ev_tstamp accept_trouble_last;   /* its last failure; it ends after 5 s without one */
    struct control_query *query;     /* the worker for slow reads (made at the first one) */
};

/* ---- control.c: answering, for the commands ---- */

/* One control.cmd log line (at info): the command, the address or name it was about, and
 * the error, if any. */
void control_log_cmd(control *ctl, const char *cmd, const char *address, const char *error);
/* A JSON string for text that should be UTF-8 but may not be (paths, config contents):
 * bytes that do not form UTF-8 become '?'. */
json_t *control_jstr(const char *s);
/* Queues {"ok":true,"data":data} (steals data; NULL: {}). */
void control_reply_ok(control_client *cl, json_t *data);
/* Queues {"ok":false,"error":error}. */
void control_reply_error(control_client *cl, const char *error);
/* Registers the reply to come after the current spool batch commits: {"ok":true} then, or
 * the commit's error; the client's later lines wait until then. */
void control_wait_for_commit(control_client *cl, const char *cmd, const char *address);
/* Registers a reply that comes later (the client's later lines wait until then). */
control_pending *control_wait(control_client *cl, const char *cmd, const char *address);
/* Gives p's reply and frees p: error (an error answer), else line (a whole answer line
 * without its newline), else {"ok":true}. note (may be NULL) is logged as an error
 * (something the answer had to leave out) through p->ctl, so only while the control socket
 * lives (a commit's answer, which has no note, may come after control_free). Logs the
 * command; a gone client gets nothing. */
void control_pending_answer(control_pending *p, const char *line, const char *note,
                            const char *error);

/* ---- control_cmd.c ---- */

/* Runs the request (parsed and checked by control_parse.c) for the client: answers it (now,
 * or after a spool commit) and logs it. */
void control_cmd_run(control_client *cl, const control_request *req);
/* The whole answer line of `queue` for rows (scheduler_queue), malloc'd; any thread. */
struct scheduler_queue_row;
char *control_queue_answer(const struct scheduler_queue_row *rows, size_t n, const char *domain);

/* ---- control_identity.c ---- */

void control_identity_status(control_client *cl, const control_request *req);
/* identity.dkim.generate (rotate false) or identity.dkim.rotate. */
void control_identity_dkim(control_client *cl, const control_request *req, bool rotate);

/* ---- control_forecast.c ---- */

/* forecast: the capacity forecast of a set (or every set) over req->days days. */
void control_forecast_cmd(control_client *cl, const control_request *req);

#endif
