/* cluster.c — the node's life in the cluster: two Redis links (commands, and a subscriber
 * for the suppression channel), the heartbeat and the cluster view, the shared suppression
 * list with its pending writes kept in the spool while Redis is away. What it promises is
 * in cluster.h; the Redis keys are documented in docs/CLUSTER.md. */
#include "mta/cluster.h"

#include <ev.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "base/metrics.h"
#include "base/netaddr.h"
#include "base/util.h"
#include "mta/cluster_limits.h"
#include "mta/cluster_ops.h"
#include "mta/cluster_stats.h"
#include "mta/control_json.h"
#include "mta/redis_link.h"
#include "mta/smtp_server.h"
#include "pools/pools.h"
#include "scheduler/scheduler.h"
#include "store/spool.h"

#define CLUSTER_BEAT_S 1.0
#define CLUSTER_BEAT_TTL_MS 5000
#define CLUSTER_REDIS_TIMEOUT_MS 2000
#define CLUSTER_PENDING "cluster.pending:"
#define CLUSTER_PAGE 500
#define CLUSTER_SECRET_KV "cluster.secret"

/* HSET the entry and publish it in one round trip. KEYS[1] the hash (and the channel);
 * ARGV: address, stored value, message. */
static const char cluster_lua_put[] =
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) "
    "redis.call('PUBLISH', KEYS[1], ARGV[3]) return 1";
static const char cluster_lua_del[] =
    "redis.call('HDEL', KEYS[1], ARGV[1]) "
    "redis.call('PUBLISH', KEYS[1], ARGV[2]) return 1";
/* Seeds a hash Redis lost: HSETNX each (address, value) pair of ARGV. */
static const char cluster_lua_seed[] =
    "local n = 0 for i = 1, #ARGV, 2 do "
    "n = n + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end return n";

typedef struct cluster_view {
    char *name;
    json_t *beat;                 /* its last heartbeat document, or NULL */
    bool alive;                   /* its key was there at the last read */
} cluster_view;

struct cluster {
    kiln_ctx *ctx;
    redis_link *cmd, *sub;
    ev_timer beat;
    char *node;
    char *k_nodes;                /* PREFIX "node:" */
    char *k_supp;                 /* PREFIX "suppression": the hash and the channel */
    cluster_view *view;
    size_t nview;
    cluster_limits *limits;       /* the account's rate and 24 h quota (cluster_limits.h) */
    cluster_ops *ops;             /* zones, warm-up settings and state (cluster_ops.h) */
    cluster_stats *stats;         /* send statistics summed over the nodes (cluster_stats.h) */
    int64_t down_since_ms;        /* wall clock; 0 while Redis is up */
    bool ever_up;
    bool freeing;
    uint64_t supp_sent, supp_applied, supp_pending_sent;
    char *k_secret;               /* PREFIX "handoff:secret": the nodes' shared secret */
    uint64_t pick_seq;            /* handoff peers alike take turns */
    char secret[65];              /* its hex (kept in the spool, kv "cluster.secret"); "" unknown */
};

typedef struct cluster_supp_write {
    cluster *c;
    char *address;
    char *value;                  /* "REASON MS", or NULL: a delete */
    bool from_pending;            /* its pending kv row is deleted once Redis has it */
} cluster_supp_write;

static void cluster_metric_up(cluster *c, bool up)
{
    if (c->ctx->metrics) metrics_set(c->ctx->metrics, "kiln_cluster_redis_up", NULL, up ? 1 : 0);
}

/* ---- suppression ---- */

static char *cluster_pending_key(const char *address)
{
    return util_asprintf(CLUSTER_PENDING "%s", address);
}

static void cluster_keep_pending(cluster *c, const char *address, const char *value)
{
    char *key = cluster_pending_key(address);
    spool_kv_put(c->ctx->spool, key, value ? value : "del");
    free(key);
}

static void cluster_supp_done(void *arg, redisReply *r)
{
    cluster_supp_write *w = arg;
    cluster *c = w->c;
    bool ok = r && r->type != REDIS_REPLY_ERROR;
    if (!ok) {
        /* not stored in Redis: kept in the spool, sent again when Redis is back */
        if (!w->from_pending) cluster_keep_pending(c, w->address, w->value);
        if (r)
            log_write(c->ctx->log, KLOG_WARNING, "cluster.suppression_failed",
                      "address=%s error=%s", log_q(c->ctx->log, w->address),
                      log_q(c->ctx->log, r->str));
    } else if (w->from_pending) {
        /* delete the pending row only if no newer write replaced it meanwhile */
        char *key = cluster_pending_key(w->address), *cur = NULL;
        if (spool_kv_get(c->ctx->spool, key, &cur) == 0 && cur &&
            strcmp(cur, w->value ? w->value : "del") == 0)
            spool_kv_delete(c->ctx->spool, key, NULL);
        free(cur);
        free(key);
    }
    free(w->address);
    free(w->value);
    free(w);
}

/* Sends one write (value NULL: delete). false when the link is not up. */
static bool cluster_supp_send(cluster *c, const char *address, const char *value,
                              bool from_pending)
{
    char *msg = value ? util_asprintf("put\t%s\t%s\t%s", c->node, address, value)
                      : util_asprintf("del\t%s\t%s", c->node, address);
    cluster_supp_write *w = util_calloc(1, sizeof *w);
    w->c = c;
    w->address = util_strdup(address);
    w->value = util_strdup(value);
    w->from_pending = from_pending;
    int rc;
    if (value) {
        const char *argv[] = {"EVAL", cluster_lua_put, "1", c->k_supp, address, value, msg};
        size_t lens[7];
        for (int i = 0; i < 7; i++) lens[i] = strlen(argv[i]);
        rc = redis_link_command(c->cmd, cluster_supp_done, w, 7, argv, lens);
    } else {
        const char *argv[] = {"EVAL", cluster_lua_del, "1", c->k_supp, address, msg};
        size_t lens[6];
        for (int i = 0; i < 6; i++) lens[i] = strlen(argv[i]);
        rc = redis_link_command(c->cmd, cluster_supp_done, w, 6, argv, lens);
    }
    free(msg);
    if (rc != 0) {
        free(w->address);
        free(w->value);
        free(w);
        return false;
    }
    c->supp_sent++;
    return true;
}

/* The spool's hook: a suppression written on this node. */
static void cluster_on_local_supp(void *arg, const char *address, const char *reason,
                                  int64_t at_ms)
{
    cluster *c = arg;
    char *value = reason ? util_asprintf("%s %lld", reason, (long long)at_ms) : NULL;
    if (!cluster_supp_send(c, address, value, false)) cluster_keep_pending(c, address, value);
    free(value);
}

/* A write published by a node (ours are skipped). */
static void cluster_on_message(void *arg, const char *channel, const char *data, size_t len)
{
    cluster *c = arg;
    if (strcmp(channel, cluster_ops_channel(c->ops)) == 0) {
        cluster_ops_message(c->ops, data, len);
        return;
    }
    if (strcmp(channel, c->k_supp) != 0) return;
    char *copy = util_strndup(data, len);
    char *f[5] = {0};
    size_t nf = 0;
    char *save = NULL;
    for (char *t = strtok_r(copy, "\t", &save); t && nf < 5; t = strtok_r(NULL, "\t", &save))
        f[nf++] = t;
    if (nf >= 3 && strcmp(f[1], c->node) != 0) {
        if (strcmp(f[0], "del") == 0) {
            spool_suppression_apply(c->ctx->spool, f[2], NULL, 0);
            c->supp_applied++;
        } else if (strcmp(f[0], "put") == 0 && nf == 4) {
            char *sp = strchr(f[3], ' ');
            if (sp) {
                *sp = '\0';
                spool_suppression_apply(c->ctx->spool, f[2], f[3], strtoll(sp + 1, NULL, 10));
                c->supp_applied++;
            }
        }
    }
    free(copy);
}

typedef struct cluster_page {
    cluster *c;
    char *last;
    size_t n;
} cluster_page;

static void cluster_pending_row(void *arg, const char *key, const char *value)
{
    cluster_page *pg = arg;
    const char *address = key + strlen(CLUSTER_PENDING);
    cluster_supp_send(pg->c, address, strcmp(value, "del") == 0 ? NULL : value, true);
    pg->c->supp_pending_sent++;
    free(pg->last);
    pg->last = util_strdup(key);
    pg->n++;
}

/* Sends every write kept while Redis was away (committed rows, page by page). */
static void cluster_flush_pending(cluster *c)
{
    cluster_page pg = {.c = c};
    do {
        pg.n = 0;
        if (spool_kv_each_prefix(c->ctx->spool, CLUSTER_PENDING, pg.last, CLUSTER_PAGE,
                                 cluster_pending_row, &pg) != 0)
            break;
    } while (pg.n == CLUSTER_PAGE && redis_link_up(c->cmd));
    free(pg.last);
}

/* Pulling the hash: HSCAN pages; entries this node lacks are applied. */
static void cluster_pull_page(void *arg, redisReply *r);

static void cluster_pull(cluster *c, const char *cursor)
{
    const char *argv[] = {"HSCAN", c->k_supp, cursor, "COUNT", "1000"};
    size_t lens[5];
    for (int i = 0; i < 5; i++) lens[i] = strlen(argv[i]);
    redis_link_command(c->cmd, cluster_pull_page, c, 5, argv, lens);
}

static void cluster_pull_page(void *arg, redisReply *r)
{
    cluster *c = arg;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 || c->freeing) return;
    redisReply *items = r->element[1];
    for (size_t i = 0; i + 1 < items->elements; i += 2) {
        const char *address = items->element[i]->str, *value = items->element[i + 1]->str;
        bool found = false;
        if (!address || !value) continue;
        if (spool_suppression_get(c->ctx->spool, address, &found, NULL, NULL) != 0 || found)
            continue;
        char *pend = cluster_pending_key(address), *cur = NULL;
        spool_kv_get(c->ctx->spool, pend, &cur);   /* our own unsent delete wins */
        if (!cur) {
            const char *sp = strchr(value, ' ');
            char *reason = util_strndup(value, sp ? (size_t)(sp - value) : strlen(value));
            spool_suppression_apply(c->ctx->spool, address, reason,
                                    sp ? strtoll(sp + 1, NULL, 10) : kiln_now_ms(c->ctx));
            c->supp_applied++;
            free(reason);
        }
        free(cur);
        free(pend);
    }
    const char *next = r->element[0]->str;
    if (next && strcmp(next, "0") != 0) cluster_pull(c, next);
}

typedef struct cluster_seed {
    cluster *c;
    const char **argv;
    size_t *lens;
    char **owned;
    size_t n, cap;
} cluster_seed;

static void cluster_seed_send(cluster_seed *s)
{
    if (s->n <= 4) return;
    redis_link_command(s->c->cmd, NULL, NULL, (int)s->n, s->argv, s->lens);
    for (size_t i = 4; i < s->n; i++) free(s->owned[i]);
    s->n = 4;
}

static void cluster_seed_row(void *arg, const char *address, const char *reason,
                             int64_t updated_ms)
{
    cluster_seed *s = arg;
    if (s->n + 2 > s->cap) {
        s->cap = s->cap * 2 + 8;
        s->argv = util_realloc(s->argv, s->cap * sizeof *s->argv);
        s->lens = util_realloc(s->lens, s->cap * sizeof *s->lens);
        s->owned = util_realloc(s->owned, s->cap * sizeof *s->owned);
    }
    s->owned[s->n] = util_strdup(address);
    s->owned[s->n + 1] = util_asprintf("%s %lld", reason, (long long)updated_ms);
    for (int k = 0; k < 2; k++) {
        s->argv[s->n] = s->owned[s->n];
        s->lens[s->n] = strlen(s->owned[s->n]);
        s->n++;
    }
    if (s->n >= 4 + 2 * CLUSTER_PAGE) cluster_seed_send(s);
}

/* SADD PREFIX "suppression:seeded" NODE answered: 1 means this Redis never had this node's
 * list (new, or it lost its data in a restart without persistence), which is then seeded
 * from the node's own list (HSETNX: never over a newer write); then the pull. A marker per
 * node, not the hash's existence: another node's first write must not stop the seeding. */
static void cluster_on_seeded(void *arg, redisReply *r)
{
    cluster *c = arg;
    if (!r || r->type != REDIS_REPLY_INTEGER || c->freeing) return;
    if (r->integer == 1) {
        cluster_seed s = {.c = c, .cap = 4 + 2 * CLUSTER_PAGE + 2};
        s.argv = util_calloc(s.cap, sizeof *s.argv);
        s.lens = util_calloc(s.cap, sizeof *s.lens);
        s.owned = util_calloc(s.cap, sizeof *s.owned);
        s.argv[0] = "EVAL";
        s.argv[1] = cluster_lua_seed;
        s.argv[2] = "1";
        s.argv[3] = c->k_supp;
        for (int i = 0; i < 4; i++) s.lens[i] = strlen(s.argv[i]);
        s.n = 4;
        spool_suppression_each(c->ctx->spool, cluster_seed_row, &s);
        cluster_seed_send(&s);
        free(s.argv);
        free(s.lens);
        free(s.owned);
        log_write(c->ctx->log, KLOG_INFO, "cluster.suppression_seeded", "node=%s", c->node);
    }
    cluster_pull(c, "0");
}

/* ---- heartbeat and view ---- */

static json_t *cluster_beat_doc(cluster *c)
{
    kiln_ctx *ctx = c->ctx;
    int64_t now = kiln_now_ms(ctx), queued = 0, deferred = 0;
    int sessions = 0;
    json_t *d = json_object();
    json_t *ips = json_array(), *zones = json_array();
    pools *p = ctx->sched ? scheduler_pools(ctx->sched) : NULL;
    if (ctx->sched) scheduler_counts(ctx->sched, &queued, &deferred, &sessions);
    if (ctx->server) sessions += smtp_server_sessions(ctx->server);
    for (size_t i = 0; p && i < pools_count(p); i++) {
        pools_ip_info in;
        pools_info(p, i, now, &in);
        json_t *o = control_json_ip(&in, now);
        json_object_set_new(json_object_get(o, "kiln"), "Node", json_string(c->node));
        json_array_append_new(ips, o);
    }
    for (size_t i = 0; p && i < ctx->cfg->nzones; i++)
        if (!pools_zone_is_up(p, ctx->cfg->zones[i]))
            json_array_append_new(zones, json_string(ctx->cfg->zones[i]));
    json_object_set_new(d, "Node", json_string(c->node));
    json_object_set_new(d, "Beat", json_integer(now));
    json_object_set_new(d, "Started", json_integer(ctx->started_ms));
    json_object_set_new(d, "Queued", json_integer(queued));
    json_object_set_new(d, "Deferred", json_integer(deferred));
    json_object_set_new(d, "Sessions", json_integer(sessions));
    json_object_set_new(d, "ZonesDown", zones);
    json_object_set_new(d, "DedicatedIps", ips);
    return d;
}

static void cluster_on_mget(void *arg, redisReply *r)
{
    cluster *c = arg;
    if (!r || r->type != REDIS_REPLY_ARRAY || c->freeing) return;
    for (size_t i = 0; i < c->nview && i < r->elements; i++) {
        cluster_view *v = &c->view[i];
        redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_STRING) {
            v->alive = false;
            continue;
        }
        json_t *doc = json_loadb(e->str, e->len, 0, NULL);
        if (!json_is_object(doc)) {
            json_decref(doc);
            v->alive = false;
            continue;
        }
        json_decref(v->beat);
        v->beat = doc;
        v->alive = true;
    }
}

static void cluster_on_beat(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    cluster *c = w->data;
    if (!redis_link_up(c->cmd)) return;
    if (revents) {
        cluster_limits_tick(c->limits);
        cluster_ops_tick(c->ops);
        cluster_stats_tick(c->stats);
    }
    json_t *doc = cluster_beat_doc(c);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    char *key = util_asprintf("%s%s", c->k_nodes, c->node);
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%d", CLUSTER_BEAT_TTL_MS);
    const char *argv[] = {"SET", key, text, "PX", ttl};
    size_t lens[5];
    for (int i = 0; i < 5; i++) lens[i] = strlen(argv[i]);
    redis_link_command(c->cmd, NULL, NULL, 5, argv, lens);
    free(key);
    free(text);

    const char **margv = util_calloc(c->nview + 1, sizeof *margv);
    size_t *mlens = util_calloc(c->nview + 1, sizeof *mlens);
    char **keys = util_calloc(c->nview + 1, sizeof *keys);
    margv[0] = "MGET";
    mlens[0] = 4;
    for (size_t i = 0; i < c->nview; i++) {
        keys[i] = util_asprintf("%s%s", c->k_nodes, c->view[i].name);
        margv[i + 1] = keys[i];
        mlens[i + 1] = strlen(keys[i]);
    }
    redis_link_command(c->cmd, cluster_on_mget, c, (int)c->nview + 1, margv, mlens);
    for (size_t i = 0; i < c->nview; i++) free(keys[i]);
    free(keys);
    free(margv);
    free(mlens);
}

/* ---- the shared secret of handoff credentials ---- */

/* GET answered: the secret every node uses (SET NX before it put this node's, or a new
 * one, there if Redis had none: a Redis that lost it gets the nodes' own back). */
static void cluster_on_secret(void *arg, redisReply *r)
{
    cluster *c = arg;
    if (c->freeing || !r || r->type != REDIS_REPLY_STRING || r->len != 64) return;
    if (strcmp(c->secret, r->str) == 0) return;
    memcpy(c->secret, r->str, 64);
    c->secret[64] = '\0';
    spool_keep_begin(c->ctx->spool);
    spool_kv_put(c->ctx->spool, CLUSTER_SECRET_KV, c->secret);
    spool_keep_end(c->ctx->spool);
}

static void cluster_sync_secret(cluster *c)
{
    char mine[65];
    if (c->secret[0]) {
        memcpy(mine, c->secret, sizeof mine);
    } else {
        util_random_hex(mine, 32);
    }
    const char *set[] = {"SET", c->k_secret, mine, "NX"};
    size_t slens[] = {3, strlen(c->k_secret), 64, 2};
    redis_link_command(c->cmd, NULL, NULL, 4, set, slens);
    const char *get[] = {"GET", c->k_secret};
    size_t glens[] = {3, strlen(c->k_secret)};
    redis_link_command(c->cmd, cluster_on_secret, c, 2, get, glens);
    explicit_bzero(mine, sizeof mine);
}

const char *cluster_secret(const cluster *c)
{
    return c && c->secret[0] ? c->secret : NULL;
}

/* ---- link state ---- */

static void cluster_on_up(void *arg)
{
    cluster *c = arg;
    if (c->down_since_ms)
        log_write(c->ctx->log, KLOG_INFO, "cluster.redis_back",
                  "node=%s down_ms=%lld", c->node,
                  (long long)(kiln_now_ms(c->ctx) - c->down_since_ms));
    c->down_since_ms = 0;
    c->ever_up = true;
    cluster_metric_up(c, true);
    cluster_sync_secret(c);
    cluster_limits_up(c->limits);
    cluster_ops_up(c->ops);
    cluster_flush_pending(c);
    char *mark = util_asprintf("%s:seeded", c->k_supp);
    const char *argv[] = {"SADD", mark, c->node};
    size_t lens[] = {4, strlen(mark), strlen(c->node)};
    redis_link_command(c->cmd, cluster_on_seeded, c, 3, argv, lens);
    free(mark);
    cluster_on_beat(c->ctx->loop, &c->beat, 0);
}

static void cluster_on_down(void *arg, const char *why)
{
    cluster *c = arg;
    if (c->freeing) return;
    if (!c->down_since_ms) c->down_since_ms = kiln_now_ms(c->ctx);
    cluster_metric_up(c, false);
    cluster_limits_down(c->limits);
    log_write(c->ctx->log, KLOG_WARNING, "cluster.degraded",
              "node=%s why=%s effect=\"local spool only: %.4g%% of the account's rate and 24 h "
              "quota held here, suppression writes kept until Redis returns, peers' state not "
              "refreshed\"",
              c->node, log_q(c->ctx->log, why), c->ctx->cfg->cluster_local_share * 100);
    /* the subscriber may sit on a dead socket without knowing: start it afresh too */
    redis_link_reset(c->sub, "the command link went down");
}

static void cluster_on_sub_up(void *arg)
{
    cluster *c = arg;
    /* messages published while the subscriber was away: pull what was missed */
    if (redis_link_up(c->cmd) && c->ever_up) {
        cluster_pull(c, "0");
        cluster_ops_up(c->ops);
    }
}

static void cluster_view_build(cluster *c)
{
    const config *cfg = c->ctx->cfg;
    cluster_view *nv = util_calloc(cfg->ncluster_nodes ? cfg->ncluster_nodes : 1, sizeof *nv);
    for (size_t i = 0; i < cfg->ncluster_nodes; i++) {
        nv[i].name = util_strdup(cfg->cluster_nodes[i]);
        for (size_t j = 0; j < c->nview; j++)
            if (strcmp(c->view[j].name, nv[i].name) == 0) {
                nv[i].beat = json_incref(c->view[j].beat);
                nv[i].alive = c->view[j].alive;
            }
    }
    for (size_t j = 0; j < c->nview; j++) {
        free(c->view[j].name);
        json_decref(c->view[j].beat);
    }
    free(c->view);
    c->view = nv;
    c->nview = cfg->ncluster_nodes;
}

cluster *cluster_new(kiln_ctx *ctx)
{
    const config *cfg = ctx->cfg;
    cluster *c = util_calloc(1, sizeof *c);
    c->ctx = ctx;
    c->node = util_strdup(cfg->cluster_node);
    c->k_nodes = util_asprintf("%snode:", cfg->cluster_key_prefix);
    c->k_supp = util_asprintf("%ssuppression", cfg->cluster_key_prefix);
    c->k_secret = util_asprintf("%shandoff:secret", cfg->cluster_key_prefix);
    char *kept = NULL;
    if (spool_kv_get(ctx->spool, CLUSTER_SECRET_KV, &kept) == 0 && kept && strlen(kept) == 64)
        memcpy(c->secret, kept, 65);
    if (kept) explicit_bzero(kept, strlen(kept));
    free(kept);
    redis_link_conf lc = {
        .name = "redis",
        .host = cfg->cluster_redis_host,
        .port = cfg->cluster_redis_port,
        .unix_path = cfg->cluster_redis_unix,
        .db = cfg->cluster_redis_db,
        .password = cfg->cluster_redis_password,
        .timeout_ms = CLUSTER_REDIS_TIMEOUT_MS,
    };
    redis_link_ops ops = {.up = cluster_on_up, .down = cluster_on_down};
    c->cmd = redis_link_new(ctx->loop, ctx->log, &lc, &ops, c);
    lc.name = "redis-sub";
    redis_link_ops sops = {.up = cluster_on_sub_up, .message = cluster_on_message};
    c->sub = redis_link_new(ctx->loop, ctx->log, &lc, &sops, c);
    redis_link_subscribe(c->sub, c->k_supp);
    c->ops = cluster_ops_new(ctx, c->cmd);
    redis_link_subscribe(c->sub, cluster_ops_channel(c->ops));
    ev_timer_init(&c->beat, cluster_on_beat, CLUSTER_BEAT_S, CLUSTER_BEAT_S);
    c->beat.data = c;
    cluster_view_build(c);
    spool_set_suppression_hook(ctx->spool, cluster_on_local_supp, c);
    c->limits = cluster_limits_new(ctx, c->cmd);
    c->stats = cluster_stats_new(ctx, c->cmd);
    c->down_since_ms = kiln_now_ms(ctx);   /* until the first connect */
    cluster_metric_up(c, false);
    return c;
}

void cluster_start(cluster *c)
{
    redis_link_start(c->cmd);
    redis_link_start(c->sub);
    ev_timer_start(c->ctx->loop, &c->beat);
}

void cluster_reload(cluster *c)
{
    cluster_view_build(c);
    cluster_limits_reload(c->limits);
    cluster_ops_reload(c->ops);
}

void cluster_zone_changed(cluster *c, const char *zone, bool up)
{
    if (c) cluster_ops_zone_changed(c->ops, zone, up);
}

int cluster_forward_warmup(cluster *c, const char *address, int percent, char **owner,
                           char **err)
{
    return c ? cluster_ops_forward_warmup(c->ops, address, percent, owner, err) : 0;
}

cluster_limits *cluster_get_limits(cluster *c) { return c ? c->limits : NULL; }

cluster_stats *cluster_get_stats(cluster *c) { return c ? c->stats : NULL; }

static bool cluster_str_differs(const char *a, const char *b)
{
    if (!a || !b) return a != b;
    return strcmp(a, b) != 0;
}

char *cluster_reload_blocker(const config *old, const config *neu)
{
    if (old->cluster_on != neu->cluster_on)
        return util_strdup(neu->cluster_on ? "the cluster: section was added; restart kilnd "
                                             "to join the cluster"
                                           : "the cluster: section was removed; restart kilnd "
                                             "to leave the cluster");
    if (!old->cluster_on) return NULL;
    if (cluster_str_differs(old->cluster_node, neu->cluster_node))
        return util_asprintf("cluster.node changed from %s to %s; restart kilnd to take "
                             "another name",
                             old->cluster_node, neu->cluster_node);
    if (cluster_str_differs(old->cluster_redis_url, neu->cluster_redis_url) ||
        cluster_str_differs(old->cluster_redis_password, neu->cluster_redis_password) ||
        cluster_str_differs(old->cluster_key_prefix, neu->cluster_key_prefix))
        return util_strdup("cluster.redis changed (url, password_file's content or "
                           "key_prefix); restart kilnd to use the new Redis");
    return NULL;
}

bool cluster_redis_is_up(const cluster *c) { return redis_link_up(c->cmd); }

json_t *cluster_status_json(cluster *c)
{
    const config *cfg = c->ctx->cfg;
    int64_t now = kiln_now_ms(c->ctx);
    json_t *d = json_object();
    json_object_set_new(d, "Node", json_string(c->node));
    json_t *rd = json_object();
    bool up = redis_link_up(c->cmd);
    json_object_set_new(rd, "Url", json_string(cfg->cluster_redis_url));
    json_object_set_new(rd, "State", json_string(up ? "up" : "down"));
    if (!up && c->down_since_ms) {
        char ts[32];
        util_iso8601(c->down_since_ms, ts);
        json_object_set_new(rd, "DownSince", json_string(ts));
    }
    json_object_set_new(rd, "Subscriber", json_string(redis_link_up(c->sub) ? "up" : "down"));
    json_object_set_new(rd, "Commands", json_integer((json_int_t)redis_link_commands(c->cmd)));
    json_object_set_new(rd, "SuppressionWritesSent", json_integer((json_int_t)c->supp_sent));
    json_object_set_new(rd, "SuppressionWritesApplied",
                        json_integer((json_int_t)c->supp_applied));
    json_object_set_new(d, "Redis", rd);
    json_object_set_new(d, "Limits", cluster_limits_json(c->limits));
    json_object_set_new(d, "Statistics", cluster_stats_json(c->stats));
    json_t *nodes = json_array();
    for (size_t i = 0; i < c->nview; i++) {
        const cluster_view *v = &c->view[i];
        bool self = strcmp(v->name, c->node) == 0;
        json_t *o = json_object();
        json_t *beat = self ? cluster_beat_doc(c) : json_incref(v->beat);
        json_object_set_new(o, "Node", json_string(v->name));
        json_object_set_new(o, "Self", json_boolean(self));
        /* without Redis only this node's own state is known */
        const char *alive = self ? "yes" : !up ? "unknown" : v->alive ? "yes" : "no";
        json_object_set_new(o, "Alive", json_string(alive));
        json_int_t seen = beat ? json_integer_value(json_object_get(beat, "Beat")) : 0;
        if (seen > 0) {
            char ts[32];
            util_iso8601(seen, ts);
            json_object_set_new(o, "LastSeen", json_string(ts));
            json_object_set_new(o, "SecondsAgo", json_integer((now - seen) / 1000));
        } else {
            json_object_set_new(o, "LastSeen", json_null());
        }
        json_t *ips = json_array();
        json_t *dips = beat ? json_object_get(beat, "DedicatedIps") : NULL;
        size_t k;
        json_t *ip;
        json_array_foreach(dips, k, ip) json_array_append(ips, json_object_get(ip, "Ip"));
        json_object_set_new(o, "Ips", ips);
        json_object_set(o, "Queued", beat && json_object_get(beat, "Queued")
                                         ? json_object_get(beat, "Queued") : json_null());
        json_object_set(o, "Sessions", beat && json_object_get(beat, "Sessions")
                                           ? json_object_get(beat, "Sessions") : json_null());
        json_t *zd = beat ? json_object_get(beat, "ZonesDown") : NULL;
        json_object_set_new(o, "ZonesDown", zd ? json_incref(zd) : json_array());
        json_decref(beat);
        json_array_append_new(nodes, o);
    }
    json_object_set_new(d, "Nodes", nodes);
    return d;
}

int cluster_pick_peer(cluster *c, const char *pool, char **node, char **host, int *port)
{
    if (!c || !redis_link_up(c->cmd)) return -1;       /* liveness unknown without Redis */
    const config *cfg = c->ctx->cfg;
    pools *p = c->ctx->sched ? scheduler_pools(c->ctx->sched) : NULL;
    /* each peer's best headroom for the pool (0: none) */
    const config_peer **cand = util_calloc(c->nview ? c->nview : 1, sizeof *cand);
    int64_t *room = util_calloc(c->nview ? c->nview : 1, sizeof *room);
    size_t ncand = 0;
    int64_t best = 0;
    for (size_t i = 0; i < c->nview; i++) {
        const cluster_view *v = &c->view[i];
        if (!v->alive || !v->beat || strcmp(v->name, c->node) == 0) continue;
        const config_peer *peer = NULL;
        for (size_t k = 0; k < cfg->ncluster_peers; k++)
            if (strcmp(cfg->cluster_peers[k].node, v->name) == 0) peer = &cfg->cluster_peers[k];
        if (!peer || netaddr_classify(peer->addr.host) == NETADDR_INVALID) continue;
        int64_t r = 0;
        size_t k;
        json_t *ip;
        json_array_foreach(json_object_get(v->beat, "DedicatedIps"), k, ip) {
            const char *ipool = json_string_value(json_object_get(ip, "PoolName"));
            const char *state = json_string_value(json_object_get(ip, "State"));
            const char *zone = json_string_value(json_object_get(ip, "Zone"));
            json_int_t cap = json_integer_value(json_object_get(ip, "DailyCap"));
            json_int_t sent = json_integer_value(json_object_get(ip, "SentLast24Hours"));
            if (!ipool || strcmp(ipool, pool) != 0 || !state || strcmp(state, "active") != 0)
                continue;
            if (zone && p && !pools_zone_is_up(p, zone)) continue;
            int64_t ir = cap < 0 ? INT64_MAX : cap - sent;
            if (ir > r) r = ir;
        }
        if (r <= 0) continue;
        cand[ncand] = peer;
        room[ncand++] = r;
        if (r > best) best = r;
    }
    /* the most headroom; peers alike take turns */
    size_t nbest = 0;
    for (size_t i = 0; i < ncand; i++) nbest += room[i] == best;
    const config_peer *pick = NULL;
    if (nbest) {
        size_t want = (size_t)(c->pick_seq++ % nbest);
        for (size_t i = 0; i < ncand && !pick; i++)
            if (room[i] == best && want-- == 0) pick = cand[i];
    }
    free(cand);
    free(room);
    if (!pick) return -1;
    *node = util_strdup(pick->node);
    *host = util_strdup(pick->addr.host);
    *port = pick->addr.port;
    return 0;
}

void cluster_remote_ips(cluster *c, json_t *arr)
{
    bool up = redis_link_up(c->cmd);
    for (size_t i = 0; i < c->nview; i++) {
        const cluster_view *v = &c->view[i];
        if (strcmp(v->name, c->node) == 0 || !v->beat) continue;
        json_t *dips = json_object_get(v->beat, "DedicatedIps");
        size_t k;
        json_t *ip;
        json_array_foreach(dips, k, ip) {
            json_t *copy = json_deep_copy(ip);
            json_t *kn = json_object_get(copy, "kiln");
            if (kn) {
                json_object_set_new(kn, "NodeAlive",
                                    json_string(!up ? "unknown" : v->alive ? "yes" : "no"));
            }
            json_array_append_new(arr, copy);
        }
    }
}

void cluster_free(cluster *c)
{
    if (!c) return;
    c->freeing = true;
    ev_timer_stop(c->ctx->loop, &c->beat);
    if (c->ctx->spool) spool_set_suppression_hook(c->ctx->spool, NULL, NULL);
    redis_link_free(c->sub);
    cluster_limits_free(c->limits);   /* before the link: its reply callback is disarmed */
    redis_link_free(c->cmd);      /* unsent writes land in the spool's pending rows */
    cluster_ops_free(c->ops);     /* after the link: its fetches were answered NULL */
    cluster_stats_free(c->stats);
    for (size_t i = 0; i < c->nview; i++) {
        free(c->view[i].name);
        json_decref(c->view[i].beat);
    }
    free(c->view);
    free(c->node);
    free(c->k_nodes);
    free(c->k_supp);
    free(c->k_secret);
    explicit_bzero(c->secret, sizeof c->secret);
    free(c);
}
