/* control_query.h — the control socket's reads that are too slow for the event loop,
 * answered from one worker thread (mta/control_query.c). Today: `kilnctl queue`, whose
 * in-memory part is copied on the loop (scheduler_queue_snapshot) and whose spool part,
 * merge, sort and JSON text are made on the worker with a read-only spool connection of its
 * own (store/spool.h: spool_reader). The client's later requests wait for the answer (as
 * they do for a commit); other clients, SMTP sessions and deliveries do not. */
#ifndef KILN_CONTROL_QUERY_H
#define KILN_CONTROL_QUERY_H

#include <stdbool.h>
#include <stddef.h>

#include "scheduler/scheduler.h"

struct ev_loop;
struct control_pending;
typedef struct control_query control_query;

/* At most this many queries wait or run at once; more are refused (answered with an
 * error), so that copies of the queue cannot pile up in memory. */
#define CONTROL_QUERY_MAX 4

/* The worker starts at the first query. spool_dir: server.spool. */
control_query *control_query_new(struct ev_loop *loop, const char *spool_dir);
/* Stops the worker (a read in progress is interrupted) and drops unanswered queries; their
 * clients must be closed already. */
void control_query_free(control_query *q);
/* Answers pending p (control_wait) with the queue report of snap (taken), filtered by
 * domain (NULL: all) as control_cmd's queue answer. False (nothing taken) when
 * CONTROL_QUERY_MAX queries are in progress. */
bool control_query_queue(control_query *q, struct control_pending *p, scheduler_queue_snap *snap,
                         const char *domain);

#endif
