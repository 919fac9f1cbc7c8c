/* redis_link.h — one Redis connection on kilnd's libev loop (hiredis's async API and its
 * libev adapter), for the cluster (issue 17). It promises:
 * - it connects (TCP or a unix socket), sends AUTH when a password is set and SELECT when
 *   the db is not 0, and only then calls ops.up; commands issued while it is not up are
 *   refused at once (-1), so callers fall back to their local rule and never wait;
 * - a reply, an error reply or a failure reaches the command's callback exactly once
 *   (NULL: the connection failed or was closed before the reply);
 * - hiredis has no deadlines of its own: a connect, or a reply, that takes longer than
 *   timeout_ms (a stopped or partitioned server) closes the connection (ops.down with the
 *   reason) and every waiting callback gets NULL;
 * - after a failure it reconnects by itself, 250 ms after the first failure, doubling up
 *   to 5 s between attempts, and logs each change of state once (not every attempt);
 * - a subscribed link (redis_link_subscribe before the first connect) subscribes again on
 *   every connect and hands each published message to ops.message. */
#ifndef KILN_REDIS_LINK_H
#define KILN_REDIS_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/log.h"

struct ev_loop;
struct redisReply;

typedef struct redis_link redis_link;

typedef struct redis_link_conf {
    const char *name;        /* for logs: "redis", "redis-sub" */
    const char *host;        /* TCP host; NULL when unix_path is set */
    int port;
    const char *unix_path;   /* NULL: TCP */
    int db;
    const char *password;    /* NULL: no AUTH */
    int64_t timeout_ms;      /* connect and reply deadline */
} redis_link_conf;

typedef struct redis_link_ops {
    void (*up)(void *arg);                              /* connected and ready */
    void (*down)(void *arg, const char *why);           /* was up (or connecting), now not */
    /* a message on a subscribed channel (subscribed links only) */
    void (*message)(void *arg, const char *channel, const char *data, size_t len);
} redis_link_ops;

/* The reply (NULL on failure), owned by hiredis: valid during the call only. */
typedef void (*redis_link_reply_cb)(void *arg, struct redisReply *r);

redis_link *redis_link_new(struct ev_loop *loop, klog *log, const redis_link_conf *conf,
                           const redis_link_ops *ops, void *arg);
/* Starts connecting (and reconnecting after failures). */
void redis_link_start(redis_link *l);
/* Channels this link subscribes to on every connect (a subscribed link takes no other
 * commands). Call before redis_link_start. */
void redis_link_subscribe(redis_link *l, const char *channel);
/* Sends one command (argv with lengths). 0: cb will be called once; -1: the link is not up
 * (cb is not called). cb may be NULL (reply ignored). */
int redis_link_command(redis_link *l, redis_link_reply_cb cb, void *arg, int argc,
                       const char **argv, const size_t *argvlen);
bool redis_link_up(const redis_link *l);
/* Closes the connection now (every waiting callback gets NULL) and reconnects later, as
 * after a failure; why is logged. */
void redis_link_reset(redis_link *l, const char *why);
/* Commands sent since start (replies or not): the cluster's ops-per-message figure. */
uint64_t redis_link_commands(const redis_link *l);
/* Closes it; waiting callbacks get NULL before it returns. */
void redis_link_free(redis_link *l);

#endif
