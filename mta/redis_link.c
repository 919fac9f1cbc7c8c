/* redis_link.c — one Redis connection on the loop: connect, AUTH/SELECT, deadlines hiredis
 * lacks, reconnect with backoff, subscriptions. What it promises is in redis_link.h.
 * hiredis does the protocol and the non-blocking socket; this file only adds the life
 * cycle. A TCP host given by name is resolved by hiredis's connect (getaddrinfo, blocking
 * the loop for that call): cluster configs should name Redis by address or unix socket. */
#include "mta/redis_link.h"

#include <ev.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libev.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

enum { REDIS_LINK_IDLE = 0, REDIS_LINK_CONNECTING, REDIS_LINK_SETUP, REDIS_LINK_UP };

#define REDIS_LINK_BACKOFF_MIN_MS 250
#define REDIS_LINK_BACKOFF_MAX_MS 5000

typedef struct redis_link_cmd {
    redis_link *l;
    redis_link_reply_cb cb;
    void *arg;
    int64_t sent_ms;
    struct redis_link_cmd *prev, *next;
} redis_link_cmd;

struct redis_link {
    struct ev_loop *loop;
    klog *log;
    redis_link_conf conf;        /* strings owned */
    redis_link_ops ops;
    void *arg;
    redisAsyncContext *ac;       /* NULL: not connected */
    int state;
    int64_t since_ms;            /* monotonic: when the current state began */
    int64_t backoff_ms;
    bool was_up;                 /* down was reported since the last up (log once) */
    bool down_logged;
    bool started;
    ev_timer retry, watchdog;
    redis_link_cmd *head, *tail; /* commands waiting for replies, oldest first */
    char **channels;
    size_t nchannels;
    uint64_t ncommands;
};

static void redis_link_connect(redis_link *l);

static const char *redis_link_addr(const redis_link *l, char *buf, size_t n)
{
    if (l->conf.unix_path) snprintf(buf, n, "unix:%s", l->conf.unix_path);
    else snprintf(buf, n, "%s:%d", l->conf.host, l->conf.port);
    return buf;
}

static void redis_link_schedule(redis_link *l)
{
    ev_timer_stop(l->loop, &l->retry);
    ev_timer_set(&l->retry, (double)l->backoff_ms / 1000.0, 0.0);
    ev_timer_start(l->loop, &l->retry);
    l->backoff_ms *= 2;
    if (l->backoff_ms > REDIS_LINK_BACKOFF_MAX_MS) l->backoff_ms = REDIS_LINK_BACKOFF_MAX_MS;
}

/* The connection is gone (ac already NULL): report once, reconnect later. */
static void redis_link_lost(redis_link *l, const char *why)
{
    char addr[300];
    int was = l->state;
    l->state = REDIS_LINK_IDLE;
    ev_timer_stop(l->loop, &l->watchdog);
    if (was == REDIS_LINK_UP || !l->down_logged) {
        log_write(l->log, KLOG_WARNING, "redis.down", "link=%s redis=%s why=%s retry_ms=%lld",
                  l->conf.name, redis_link_addr(l, addr, sizeof addr), log_q(l->log, why),
                  (long long)l->backoff_ms);
        l->down_logged = true;
    } else {
        log_write(l->log, KLOG_DEBUG, "redis.retry_failed", "link=%s why=%s", l->conf.name,
                  log_q(l->log, why));
    }
    if (was == REDIS_LINK_UP && l->ops.down) l->ops.down(l->arg, why);
    if (l->started) redis_link_schedule(l);
}

/* Drops the connection ourselves (deadline, refused AUTH, reset). */
static void redis_link_drop(redis_link *l, const char *why)
{
    redisAsyncContext *ac = l->ac;
    if (!ac) return;
    l->ac = NULL;                 /* redis_link_on_disconnect ignores it from now on */
    char *w = util_strdup(why);   /* why may point into ac's error text */
    redisAsyncFree(ac);           /* waiting callbacks get NULL */
    redis_link_lost(l, w);
    free(w);
}

static void redis_link_on_reply(redisAsyncContext *c, void *r, void *priv)
{
    (void)c;
    redis_link_cmd *cmd = priv;
    redis_link *l = cmd->l;
    if (cmd->prev) cmd->prev->next = cmd->next;
    else l->head = cmd->next;
    if (cmd->next) cmd->next->prev = cmd->prev;
    else l->tail = cmd->prev;
    if (cmd->cb) cmd->cb(cmd->arg, r);
    free(cmd);
}

static int redis_link_send(redis_link *l, redis_link_reply_cb cb, void *arg, int argc,
                           const char **argv, const size_t *argvlen)
{
    redis_link_cmd *cmd = util_calloc(1, sizeof *cmd);
    cmd->l = l;
    cmd->cb = cb;
    cmd->arg = arg;
    cmd->sent_ms = util_mono_ms();
    if (redisAsyncCommandArgv(l->ac, redis_link_on_reply, cmd, argc, argv, argvlen) != REDIS_OK) {
        free(cmd);
        return -1;
    }
    cmd->prev = l->tail;
    if (l->tail) l->tail->next = cmd;
    else l->head = cmd;
    l->tail = cmd;
    l->ncommands++;
    return 0;
}

static void redis_link_on_message(redisAsyncContext *c, void *r, void *priv)
{
    (void)c;
    redis_link *l = priv;
    redisReply *rep = r;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 3) return;
    if (rep->element[0]->type != REDIS_REPLY_STRING
        || strcmp(rep->element[0]->str, "message") != 0)
        return;                   /* the subscribe confirmations */
    if (rep->element[1]->type != REDIS_REPLY_STRING || rep->element[2]->type != REDIS_REPLY_STRING)
        return;
    if (l->ops.message)
        l->ops.message(l->arg, rep->element[1]->str, rep->element[2]->str,
                       rep->element[2]->len);
}

static void redis_link_ready(redis_link *l)
{
    char addr[300];
    for (size_t i = 0; i < l->nchannels; i++)
        redisAsyncCommand(l->ac, redis_link_on_message, l, "SUBSCRIBE %s", l->channels[i]);
    l->state = REDIS_LINK_UP;
    l->since_ms = util_mono_ms();
    l->backoff_ms = REDIS_LINK_BACKOFF_MIN_MS;
    l->down_logged = false;
    log_write(l->log, KLOG_INFO, "redis.up", "link=%s redis=%s db=%d", l->conf.name,
              redis_link_addr(l, addr, sizeof addr), l->conf.db);
    if (l->ops.up) l->ops.up(l->arg);
}

static void redis_link_on_select(void *arg, redisReply *r)
{
    redis_link *l = arg;
    if (!r) return;               /* the connection failed: already handled */
    if (r->type == REDIS_REPLY_ERROR) {
        char *why = util_asprintf("SELECT %d refused: %s", l->conf.db, r->str);
        redis_link_drop(l, why);
        free(why);
        return;
    }
    redis_link_ready(l);
}

static void redis_link_after_auth(redis_link *l)
{
    if (l->conf.db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", l->conf.db);
        const char *argv[] = {"SELECT", db};
        size_t lens[] = {6, strlen(db)};
        if (redis_link_send(l, redis_link_on_select, l, 2, argv, lens) != 0)
            redis_link_drop(l, "could not send SELECT");
        return;
    }
    redis_link_ready(l);
}

static void redis_link_on_auth(void *arg, redisReply *r)
{
    redis_link *l = arg;
    if (!r) return;
    if (r->type == REDIS_REPLY_ERROR) {
        /* the password itself never goes to the log */
        char *why = util_asprintf("AUTH refused: %s", r->str);
        redis_link_drop(l, why);
        free(why);
        return;
    }
    redis_link_after_auth(l);
}

static void redis_link_on_connect(const redisAsyncContext *c, int status)
{
    redis_link *l = c->data;
    if (!l || l->ac != c) return;
    if (status != REDIS_OK) {
        l->ac = NULL;             /* hiredis frees it after this callback */
        redis_link_lost(l, c->errstr[0] ? c->errstr : "connect failed");
        return;
    }
    l->state = REDIS_LINK_SETUP;
    if (l->conf.password) {
        const char *argv[] = {"AUTH", l->conf.password};
        size_t lens[] = {4, strlen(l->conf.password)};
        if (redis_link_send(l, redis_link_on_auth, l, 2, argv, lens) != 0)
            redis_link_drop(l, "could not send AUTH");
        return;
    }
    redis_link_after_auth(l);
}

static void redis_link_on_disconnect(const redisAsyncContext *c, int status)
{
    redis_link *l = c->data;
    if (!l || l->ac != c) return;  /* we dropped it ourselves */
    l->ac = NULL;                  /* hiredis frees it after this callback */
    redis_link_lost(l, status == REDIS_OK ? "connection closed"
                       : (c->errstr[0] ? c->errstr : "connection lost"));
}

static void redis_link_on_watchdog(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    redis_link *l = w->data;
    if (!l->ac) return;
    int64_t now = util_mono_ms();
    if (l->state != REDIS_LINK_UP && now - l->since_ms > l->conf.timeout_ms) {
        char why[96];
        snprintf(why, sizeof why, "no connection within %lld ms", (long long)l->conf.timeout_ms);
        redis_link_drop(l, why);
        return;
    }
    if (l->head && now - l->head->sent_ms > l->conf.timeout_ms) {
        char why[96];
        snprintf(why, sizeof why, "no reply within %lld ms", (long long)l->conf.timeout_ms);
        redis_link_drop(l, why);
    }
}

static void redis_link_on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    redis_link_connect(w->data);
}

static void redis_link_connect(redis_link *l)
{
    if (l->ac) return;
    redisAsyncContext *ac = l->conf.unix_path ? redisAsyncConnectUnix(l->conf.unix_path)
                                              : redisAsyncConnect(l->conf.host, l->conf.port);
    if (!ac) util_fatal("redis: out of memory");
    l->state = REDIS_LINK_CONNECTING;
    l->since_ms = util_mono_ms();
    if (ac->err) {
        char *why = util_strdup(ac->errstr);
        redisAsyncFree(ac);
        redis_link_lost(l, why);
        free(why);
        return;
    }
    ac->data = l;
    if (redisLibevAttach(l->loop, ac) != REDIS_OK) util_fatal("redis: libev attach failed");
    redisAsyncSetConnectCallback(ac, redis_link_on_connect);
    redisAsyncSetDisconnectCallback(ac, redis_link_on_disconnect);
    l->ac = ac;
    ev_timer_again(l->loop, &l->watchdog);
}

redis_link *redis_link_new(struct ev_loop *loop, klog *log, const redis_link_conf *conf,
                           const redis_link_ops *ops, void *arg)
{
    redis_link *l = util_calloc(1, sizeof *l);
    l->loop = loop;
    l->log = log;
    l->conf = *conf;
    l->conf.name = util_strdup(conf->name ? conf->name : "redis");
    l->conf.host = util_strdup(conf->host);
    l->conf.unix_path = util_strdup(conf->unix_path);
    l->conf.password = util_strdup(conf->password);
    if (l->conf.timeout_ms <= 0) l->conf.timeout_ms = 2000;
    if (ops) l->ops = *ops;
    l->arg = arg;
    l->backoff_ms = REDIS_LINK_BACKOFF_MIN_MS;
    ev_timer_init(&l->retry, redis_link_on_retry, 0.0, 0.0);
    l->retry.data = l;
    ev_init(&l->watchdog, redis_link_on_watchdog);
    l->watchdog.repeat = 0.1;
    l->watchdog.data = l;
    return l;
}

void redis_link_subscribe(redis_link *l, const char *channel)
{
    l->channels = util_realloc(l->channels, (l->nchannels + 1) * sizeof *l->channels);
    l->channels[l->nchannels++] = util_strdup(channel);
}

void redis_link_start(redis_link *l)
{
    l->started = true;
    redis_link_connect(l);
}

int redis_link_command(redis_link *l, redis_link_reply_cb cb, void *arg, int argc,
                       const char **argv, const size_t *argvlen)
{
    if (l->state != REDIS_LINK_UP || !l->ac) return -1;
    return redis_link_send(l, cb, arg, argc, argv, argvlen);
}

bool redis_link_up(const redis_link *l) { return l->state == REDIS_LINK_UP && l->ac; }

void redis_link_reset(redis_link *l, const char *why)
{
    if (l->ac) redis_link_drop(l, why);
}

uint64_t redis_link_commands(const redis_link *l) { return l->ncommands; }

void redis_link_free(redis_link *l)
{
    if (!l) return;
    l->started = false;
    ev_timer_stop(l->loop, &l->retry);
    ev_timer_stop(l->loop, &l->watchdog);
    if (l->ac) {
        redisAsyncContext *ac = l->ac;
        l->ac = NULL;
        l->ops.down = NULL;
        l->ops.message = NULL;
        redisAsyncFree(ac);
    }
    for (size_t i = 0; i < l->nchannels; i++) free(l->channels[i]);
    free(l->channels);
    free((char *)l->conf.name);
    free((char *)l->conf.host);
    free((char *)l->conf.unix_path);
    if (l->conf.password) {
        memset((char *)l->conf.password, 0, strlen(l->conf.password));
        free((char *)l->conf.password);
    }
    free(l);
}
