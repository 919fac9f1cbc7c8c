/* cluster_stats.c — send statistics summed over the cluster's nodes (promises in
 * cluster_stats.h). A node's snapshot is JSON [[bucket_ms, attempts, bounces, complaints,
 * rejects], ...] of its non-empty buckets of the last 14 days; the sum is a merge of sorted
 * bucket lists. */
#include "mta/cluster_stats.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/cluster.h"
#include "mta/redis_link.h"
#include "store/stats.h"

#define CSTATS_TTL_MS (15LL * 24 * 3600 * 1000)

typedef struct cstats_list {
    stats_counts *v;
    size_t n, cap;
} cstats_list;

typedef struct cstats_peer {
    char *node;
    cstats_list b;
} cstats_peer;

struct cluster_stats {
    kiln_ctx *ctx;
    redis_link *cmd;
    char *prefix;                 /* PREFIX "stats:" */
    char *written;                /* the snapshot last written */
    cstats_peer *peers;           /* the other nodes' last snapshots */
    size_t npeers;
    int ticks;
    int64_t read_ms;              /* the last read answered */
    bool freeing;
};

static void cstats_add(void *arg, int64_t bucket_ms, int64_t attempts, int64_t bounces,
                       int64_t complaints, int64_t rejects)
{
    cstats_list *l = arg;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = util_realloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = (stats_counts){bucket_ms, attempts, bounces, complaints, rejects};
}

static char *cstats_snapshot(cluster_stats *cs)
{
    cstats_list l = {0};
    int64_t since = stats_bucket_ms(kiln_now_ms(cs->ctx) - STATS_KEEP_MS);
    if (spool_stats_each(cs->ctx->spool, since, cstats_add, &l) != 0) {
        free(l.v);
        return NULL;
    }
    json_t *a = json_array();
    for (size_t i = 0; i < l.n; i++)
        json_array_append_new(a, json_pack("[IIIII]", (json_int_t)l.v[i].bucket_ms,
                                           (json_int_t)l.v[i].attempts,
                                           (json_int_t)l.v[i].bounces,
                                           (json_int_t)l.v[i].complaints,
                                           (json_int_t)l.v[i].rejects));
    free(l.v);
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return s;
}

/* A snapshot read from Redis into l (anything malformed is skipped). */
static void cstats_parse(const char *text, size_t len, cstats_list *l)
{
    l->n = 0;
    json_t *a = json_loadb(text, len, 0, NULL);
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e) {
        if (!json_is_array(e) || json_array_size(e) != 5) continue;
        int64_t v[5];
        bool ok = true;
        for (size_t k = 0; k < 5; k++) {
            json_t *x = json_array_get(e, k);
            if (!json_is_integer(x) || (k && json_integer_value(x) < 0)) ok = false;
            else v[k] = json_integer_value(x);
        }
        if (ok) cstats_add(l, v[0], v[1], v[2], v[3], v[4]);
    }
    json_decref(a);
}

static void cstats_on_read(void *arg, redisReply *r)
{
    cluster_stats *cs = arg;
    if (cs->freeing || !r || r->type != REDIS_REPLY_ARRAY) return;
    for (size_t i = 0; i < cs->npeers && i < r->elements; i++) {
        redisReply *e = r->element[i];
        if (e->type == REDIS_REPLY_STRING) cstats_parse(e->str, e->len, &cs->peers[i].b);
        else cs->peers[i].b.n = 0;          /* gone: a node with no sends for 15 days */
    }
    cs->read_ms = kiln_now_ms(cs->ctx);
}

static void cstats_peers_build(cluster_stats *cs)
{
    const config *cfg = cs->ctx->cfg;
    for (size_t i = 0; i < cs->npeers; i++) {
        free(cs->peers[i].node);
        free(cs->peers[i].b.v);
    }
    free(cs->peers);
    cs->peers = util_calloc(cfg->ncluster_nodes ? cfg->ncluster_nodes : 1, sizeof *cs->peers);
    cs->npeers = 0;
    for (size_t i = 0; i < cfg->ncluster_nodes; i++)
        if (strcmp(cfg->cluster_nodes[i], cfg->cluster_node) != 0)
            cs->peers[cs->npeers++].node = util_strdup(cfg->cluster_nodes[i]);
}

cluster_stats *cluster_stats_new(kiln_ctx *ctx, redis_link *cmd)
{
    cluster_stats *cs = util_calloc(1, sizeof *cs);
    cs->ctx = ctx;
    cs->cmd = cmd;
    cs->prefix = util_asprintf("%sstats:", ctx->cfg->cluster_key_prefix);
    cstats_peers_build(cs);
    return cs;
}

void cluster_stats_tick(cluster_stats *cs)
{
    if (cs->ticks++ % CLUSTER_STATS_EVERY != 0 || !redis_link_up(cs->cmd)) return;
    if (cs->npeers != cs->ctx->cfg->ncluster_nodes - 1) cstats_peers_build(cs);   /* reload */
    char *snap = cstats_snapshot(cs);
    if (snap && (!cs->written || strcmp(snap, cs->written) != 0)) {
        char *key = util_asprintf("%s%s", cs->prefix, cs->ctx->cfg->cluster_node);
        char ttl[24];
        snprintf(ttl, sizeof ttl, "%lld", CSTATS_TTL_MS);
        const char *argv[] = {"SET", key, snap, "PX", ttl};
        size_t lens[5];
        for (int i = 0; i < 5; i++) lens[i] = strlen(argv[i]);
        if (redis_link_command(cs->cmd, NULL, NULL, 5, argv, lens) == 0) {
            free(cs->written);
            cs->written = snap;
            snap = NULL;
        }
        free(key);
    }
    free(snap);
    if (!cs->npeers) return;
    const char **argv = util_calloc(cs->npeers + 1, sizeof *argv);
    size_t *lens = util_calloc(cs->npeers + 1, sizeof *lens);
    char **keys = util_calloc(cs->npeers, sizeof *keys);
    argv[0] = "MGET";
    lens[0] = 4;
    for (size_t i = 0; i < cs->npeers; i++) {
        keys[i] = util_asprintf("%s%s", cs->prefix, cs->peers[i].node);
        argv[i + 1] = keys[i];
        lens[i + 1] = strlen(keys[i]);
    }
    redis_link_command(cs->cmd, cstats_on_read, cs, (int)cs->npeers + 1, argv, lens);
    for (size_t i = 0; i < cs->npeers; i++) free(keys[i]);
    free(keys);
    free(argv);
    free(lens);
}

json_t *cluster_stats_json(cluster_stats *cs)
{
    json_t *o = json_object();
    json_object_set_new(o, "Nodes", json_integer((json_int_t)cs->npeers + 1));
    if (cs->read_ms) {
        char ts[32];
        util_iso8601(cs->read_ms, ts);
        json_object_set_new(o, "Updated", json_string(ts));
    } else {
        json_object_set_new(o, "Updated", json_null());
    }
    return o;
}

void cluster_stats_free(cluster_stats *cs)
{
    if (!cs) return;
    cs->freeing = true;
    for (size_t i = 0; i < cs->npeers; i++) {
        free(cs->peers[i].node);
        free(cs->peers[i].b.v);
    }
    free(cs->peers);
    free(cs->written);
    free(cs->prefix);
    free(cs);
}

static int cstats_cmp(const void *a, const void *b)
{
    const stats_counts *x = a, *y = b;
    return x->bucket_ms < y->bucket_ms ? -1 : x->bucket_ms > y->bucket_ms;
}

int account_stats_each(kiln_ctx *ctx, int64_t since_ms, spool_stats_cb cb, void *arg)
{
    cluster_stats *cs = cluster_get_stats(ctx->cluster);
    if (!cs) return spool_stats_each(ctx->spool, since_ms, cb, arg);
    cstats_list all = {0};
    if (spool_stats_each(ctx->spool, since_ms, cstats_add, &all) != 0) {
        free(all.v);
        return -1;
    }
    for (size_t p = 0; p < cs->npeers; p++)
        for (size_t i = 0; i < cs->peers[p].b.n; i++) {
            const stats_counts *c = &cs->peers[p].b.v[i];
            if (c->bucket_ms >= since_ms)
                cstats_add(&all, c->bucket_ms, c->attempts, c->bounces, c->complaints,
                           c->rejects);
        }
    if (all.n) qsort(all.v, all.n, sizeof *all.v, cstats_cmp);
    for (size_t i = 0; i < all.n;) {
        stats_counts sum = all.v[i];
        size_t k = i + 1;
        for (; k < all.n && all.v[k].bucket_ms == sum.bucket_ms; k++) {
            sum.attempts += all.v[k].attempts;
            sum.bounces += all.v[k].bounces;
            sum.complaints += all.v[k].complaints;
            sum.rejects += all.v[k].rejects;
        }
        cb(arg, sum.bucket_ms, sum.attempts, sum.bounces, sum.complaints, sum.rejects);
        i = k;
    }
    free(all.v);
    return 0;
}
