/* cluster_ops.c — zone states, forwarded warm-up settings and the IPs' warm-up state across
 * the cluster (promises in cluster_ops.h).
 *
 * Redis keys (PREFIX is cluster.redis.key_prefix):
 *   PREFIX "zones"    hash ZONE -> "down MS NODE" for every zone marked down (up: no field);
 *   PREFIX "warmup"   hash IP -> "PERCENT MS NODE", a setting waiting for the IP's node,
 *                     deleted by that node once applied;
 *   PREFIX "ipstate"  hash IP -> {"node", "ms", "state"}: the IP's part of pools_state_json
 *                     as its node last wrote it;
 *   PREFIX "ops"      the channel: "zone\tNODE\tZONE\tup|down", "warmup\tNODE\tIP\tPERCENT".
 * A write and its publish go in one script. Changes made while Redis is away are kept in
 * memory (the zone state itself is in the node's spool through the pools state) and sent
 * first when it returns; then the stored zone states are applied (or, when Redis has none
 * and this node holds zones down, seeded). */
#include "mta/cluster_ops.h"

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/netaddr.h"
#include "base/timeline.h"
#include "base/util.h"
#include "mta/redis_link.h"
#include "pools/pools.h"
#include "scheduler/scheduler.h"

/* KEYS[1] the hash, KEYS[2] the channel; ARGV: field, value ("" deletes), message. */
static const char cops_lua_write[] =
    "if ARGV[2] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) "
    "else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end "
    "redis.call('PUBLISH', KEYS[2], ARGV[3]) return 1";

#define COPS_RESYNC_TICKS 3        /* seconds between reads of the stored zone states */

typedef struct cops_pending {
    char *zone;
    bool up;
    struct cops_pending *next;
} cops_pending;

typedef struct cops_pushed {
    char *ip;
    char *text;                   /* the state last written for it */
} cops_pushed;

struct cluster_ops {
    kiln_ctx *ctx;
    redis_link *cmd;
    char *k_zones, *k_warmup, *k_ipstate, *k_chan;
    cops_pending *pending;        /* zone changes made while Redis was away, oldest first */
    cops_pushed *pushed;
    size_t npushed;
    unsigned ticks;
    bool freeing;
};

static const char *cops_node(const cluster_ops *o) { return o->ctx->cfg->cluster_node; }

static pools *cops_pools(const cluster_ops *o)
{
    return o->ctx->sched ? scheduler_pools(o->ctx->sched) : NULL;
}

/* The node that binds address per the config, or NULL. */
static const char *cops_owner(const cluster_ops *o, const char *address)
{
    const config *cfg = o->ctx->cfg;
    for (size_t i = 0; i < cfg->nips; i++)
        if (netaddr_equal(cfg->ips[i].address, address) ||
            (cfg->ips[i].public_address && netaddr_equal(cfg->ips[i].public_address, address)))
            return cfg->ips[i].node;
    return NULL;
}

static bool cops_mine(const cluster_ops *o, const char *address)
{
    const char *n = cops_owner(o, address);
    return n && strcmp(n, cops_node(o)) == 0;
}

static int cops_write(cluster_ops *o, const char *hash, const char *field, const char *value,
                      const char *msg)
{
    const char *argv[] = {"EVAL", cops_lua_write, "2", hash, o->k_chan, field, value, msg};
    size_t lens[8];
    for (int i = 0; i < 8; i++) lens[i] = strlen(argv[i]);
    return redis_link_command(o->cmd, NULL, NULL, 8, argv, lens);
}

/* ---- zones ---- */

static void cops_apply_zone(cluster_ops *o, const char *zone, bool up, const char *by)
{
    pools *p = cops_pools(o);
    if (!p || pools_zone_is_up(p, zone) == up) return;
    char *err = NULL;
    if (pools_set_zone(p, zone, up, &err) != 0) {     /* a zone this config does not have */
        log_write(o->ctx->log, KLOG_WARNING, "cluster.zone_unknown", "zone=%s by=%s error=%s",
                  log_q(o->ctx->log, zone), log_q(o->ctx->log, by), log_q(o->ctx->log, err));
        free(err);
        return;
    }
    scheduler_pools_changed(o->ctx->sched);
    timeline_add(o->ctx->timeline, kiln_now_ms(o->ctx), up ? "zone_up" : "zone_down", zone,
                 up ? "zone %s up (node %s): its IPs back in rotation"
                    : "zone %s down (node %s): its IPs out of rotation", zone, by);
    log_write(o->ctx->log, KLOG_INFO, "cluster.zone", "zone=%s state=%s by=%s",
              log_q(o->ctx->log, zone), up ? "up" : "down", log_q(o->ctx->log, by));
}

static int cops_send_zone(cluster_ops *o, const char *zone, bool up)
{
    char value[128] = "", msg[256];
    if (!up)
        snprintf(value, sizeof value, "down %lld %s", (long long)kiln_now_ms(o->ctx),
                 cops_node(o));
    snprintf(msg, sizeof msg, "zone\t%s\t%s\t%s", cops_node(o), zone, up ? "up" : "down");
    return cops_write(o, o->k_zones, zone, value, msg);
}

void cluster_ops_zone_changed(cluster_ops *o, const char *zone, bool up)
{
    if (!o) return;
    if (cops_send_zone(o, zone, up) == 0) return;
    /* Redis away: the latest change per zone goes out when it returns */
    for (cops_pending *q = o->pending; q; q = q->next)
        if (strcmp(q->zone, zone) == 0) {
            q->up = up;
            return;
        }
    cops_pending *q = util_calloc(1, sizeof *q);
    q->zone = util_strdup(zone);
    q->up = up;
    cops_pending **tail = &o->pending;
    while (*tail) tail = &(*tail)->next;
    *tail = q;
}

static void cops_on_zones(void *arg, redisReply *r);
static void cops_fetch(cluster_ops *o, const char *hash, redis_link_reply_cb cb);

/* SADD PREFIX "zones:seeded" NODE answered. 1: this Redis never had this node's zone states
 * (new, or it lost its data), so the zones this node holds down are added where Redis has
 * nothing for them. Then the HGETALL, which sees them (one link answers in order). */
static void cops_on_zones_marked(void *arg, redisReply *r)
{
    cluster_ops *o = arg;
    pools *p = cops_pools(o);
    if (o->freeing || !p || !r || r->type != REDIS_REPLY_INTEGER) return;
    const config *cfg = o->ctx->cfg;
    for (size_t i = 0; r->integer == 1 && i < cfg->nzones; i++) {
        if (pools_zone_is_up(p, cfg->zones[i])) continue;
        char value[128];
        snprintf(value, sizeof value, "down %lld %s", (long long)kiln_now_ms(o->ctx),
                 cops_node(o));
        const char *argv[] = {"HSETNX", o->k_zones, cfg->zones[i], value};
        size_t lens[] = {6, strlen(o->k_zones), strlen(cfg->zones[i]), strlen(value)};
        redis_link_command(o->cmd, NULL, NULL, 4, argv, lens);
    }
    cops_fetch(o, o->k_zones, cops_on_zones);
}

/* HGETALL zones: every configured zone is down exactly when Redis holds it down. */
static void cops_on_zones(void *arg, redisReply *r)
{
    cluster_ops *o = arg;
    if (o->freeing || !r || r->type != REDIS_REPLY_ARRAY) return;
    const config *cfg = o->ctx->cfg;
    if (!cops_pools(o)) return;
    for (size_t i = 0; i < cfg->nzones; i++) {
        const char *by = NULL;
        for (size_t k = 0; k + 1 < r->elements; k += 2)
            if (r->element[k]->str && strcmp(r->element[k]->str, cfg->zones[i]) == 0) {
                const char *v = r->element[k + 1]->str ? r->element[k + 1]->str : "";
                const char *sp = strrchr(v, ' ');
                by = sp ? sp + 1 : "?";
            }
        cops_apply_zone(o, cfg->zones[i], by == NULL, by ? by : "redis");
    }
}

/* ---- warm-up settings for another node's IP ---- */

static void cops_apply_warmup(cluster_ops *o, const char *ip, int percent, const char *by)
{
    pools *p = cops_pools(o);
    if (!p) return;
    const pools_ip *found = pools_find_any(p, ip);
    if (!found) return;
    const char *addr = pools_ip_address(found);
    char *err = NULL;
    if (pools_set_warmup(p, addr, percent, kiln_now_ms(o->ctx), &err) != 0) {
        log_write(o->ctx->log, KLOG_WARNING, "cluster.warmup_refused",
                  "ip=%s percent=%d by=%s error=%s", addr, percent, log_q(o->ctx->log, by),
                  log_q(o->ctx->log, err));
        free(err);
    } else {
        scheduler_pools_changed(o->ctx->sched);
        log_write(o->ctx->log, KLOG_INFO, "cluster.warmup", "ip=%s percent=%d by=%s", addr,
                  percent, log_q(o->ctx->log, by));
    }
    const char *argv[] = {"HDEL", o->k_warmup, ip};
    size_t lens[] = {4, strlen(o->k_warmup), strlen(ip)};
    redis_link_command(o->cmd, NULL, NULL, 3, argv, lens);
}

static void cops_on_warmups(void *arg, redisReply *r)
{
    cluster_ops *o = arg;
    if (o->freeing || !r || r->type != REDIS_REPLY_ARRAY) return;
    for (size_t k = 0; k + 1 < r->elements; k += 2) {
        const char *ip = r->element[k]->str, *v = r->element[k + 1]->str;
        if (!ip || !v || !cops_mine(o, ip)) continue;
        int pct = -1;
        long long ms = 0;
        char by[80] = "?";
        if (sscanf(v, "%d %lld %79s", &pct, &ms, by) >= 1 && pct >= 0 && pct <= 100)
            cops_apply_warmup(o, ip, pct, by);
    }
}

int cluster_ops_forward_warmup(cluster_ops *o, const char *address, int percent, char **owner,
                               char **err)
{
    const char *node = o ? cops_owner(o, address) : NULL;
    if (!node || strcmp(node, cops_node(o)) == 0) return 0;
    char value[128], msg[256];
    snprintf(value, sizeof value, "%d %lld %s", percent, (long long)kiln_now_ms(o->ctx),
             cops_node(o));
    snprintf(msg, sizeof msg, "warmup\t%s\t%s\t%d", cops_node(o), address, percent);
    if (cops_write(o, o->k_warmup, address, value, msg) != 0) {
        *err = util_asprintf("%s is node %s's IP and Redis is not reachable to forward the "
                             "setting; run it on %s, or again when Redis is back",
                             address, node, node);
        return -1;
    }
    *owner = util_strdup(node);
    return 1;
}

/* ---- the IPs' warm-up state ---- */

static cops_pushed *cops_pushed_of(cluster_ops *o, const char *ip)
{
    for (size_t i = 0; i < o->npushed; i++)
        if (strcmp(o->pushed[i].ip, ip) == 0) return &o->pushed[i];
    o->pushed = util_realloc(o->pushed, (o->npushed + 1) * sizeof *o->pushed);
    cops_pushed *e = &o->pushed[o->npushed++];
    e->ip = util_strdup(ip);
    e->text = NULL;
    return e;
}

void cluster_ops_tick(cluster_ops *o)
{
    pools *p = cops_pools(o);
    if (!p || !redis_link_up(o->cmd)) return;
    /* a publish can pass a subscriber that is (re)connecting: the stored states are read
     * again every few seconds, so a missed change is applied all the same */
    if (++o->ticks % COPS_RESYNC_TICKS == 0 && !o->pending) {
        cops_fetch(o, o->k_zones, cops_on_zones);
        cops_fetch(o, o->k_warmup, cops_on_warmups);
    }
    char *text = pools_state_json(p);
    json_t *root = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    json_t *ips = json_object_get(root, "ips");
    const char *ip;
    json_t *st;
    json_object_foreach(ips, ip, st) {
        if (!cops_mine(o, ip)) continue;               /* drained or another node's */
        char *s = json_dumps(st, JSON_COMPACT | JSON_SORT_KEYS);
        cops_pushed *e = cops_pushed_of(o, ip);
        if (s && (!e->text || strcmp(e->text, s) != 0)) {
            json_t *doc = json_pack("{s:s, s:I, s:O}", "node", cops_node(o), "ms",
                                    (json_int_t)kiln_now_ms(o->ctx), "state", st);
            char *v = json_dumps(doc, JSON_COMPACT);
            json_decref(doc);
            const char *argv[] = {"HSET", o->k_ipstate, ip, v};
            size_t lens[] = {4, strlen(o->k_ipstate), strlen(ip), strlen(v)};
            if (redis_link_command(o->cmd, NULL, NULL, 4, argv, lens) == 0) {
                free(e->text);
                e->text = s;
                s = NULL;
            }
            free(v);
        }
        free(s);
    }
    json_decref(root);
}

/* HGETALL ipstate: every IP this node binds that another node wrote last moved here; its
 * state is taken over (with this node's zones as they are). */
static void cops_on_ipstates(void *arg, redisReply *r)
{
    cluster_ops *o = arg;
    pools *p = cops_pools(o);
    if (o->freeing || !p || !r || r->type != REDIS_REPLY_ARRAY) return;
    const config *cfg = o->ctx->cfg;
    for (size_t k = 0; k + 1 < r->elements; k += 2) {
        const char *ip = r->element[k]->str, *v = r->element[k + 1]->str;
        if (!ip || !v || !cops_mine(o, ip) || !pools_find(p, ip)) continue;
        json_t *doc = json_loads(v, 0, NULL);
        const char *from = json_string_value(json_object_get(doc, "node"));
        json_t *st = json_object_get(doc, "state");
        if (from && json_is_object(st) && strcmp(from, cops_node(o)) != 0) {
            json_t *zd = json_array();
            for (size_t i = 0; i < cfg->nzones; i++)
                if (!pools_zone_is_up(p, cfg->zones[i]))
                    json_array_append_new(zd, json_string(cfg->zones[i]));
            json_t *one = json_pack("{s:i, s:o, s:{s:O}}", "version", 1, "zones_down", zd,
                                    "ips", ip, st);
            char *text = json_dumps(one, JSON_COMPACT);
            char *err = NULL;
            if (pools_state_load(p, text, kiln_now_ms(o->ctx), &err) == 0) {
                scheduler_pools_changed(o->ctx->sched);
                log_write(o->ctx->log, KLOG_INFO, "cluster.ip_adopted",
                          "ip=%s from=%s note=\"warm-up position and usage taken over\"", ip,
                          log_q(o->ctx->log, from));
                cops_pushed *e = cops_pushed_of(o, ip);
                free(e->text);
                e->text = NULL;                       /* written again as this node's */
            } else {
                log_write(o->ctx->log, KLOG_WARNING, "cluster.ip_state_refused",
                          "ip=%s from=%s error=%s", ip, log_q(o->ctx->log, from),
                          log_q(o->ctx->log, err));
                free(err);
            }
            free(text);
            json_decref(one);
        }
        json_decref(doc);
    }
    cluster_ops_tick(o);
}

static void cops_fetch(cluster_ops *o, const char *hash, redis_link_reply_cb cb)
{
    const char *argv[] = {"HGETALL", hash};
    size_t lens[] = {7, strlen(hash)};
    redis_link_command(o->cmd, cb, o, 2, argv, lens);
}

/* ---- life ---- */

cluster_ops *cluster_ops_new(kiln_ctx *ctx, redis_link *cmd)
{
    cluster_ops *o = util_calloc(1, sizeof *o);
    const char *px = ctx->cfg->cluster_key_prefix;
    o->ctx = ctx;
    o->cmd = cmd;
    o->k_zones = util_asprintf("%szones", px);
    o->k_warmup = util_asprintf("%swarmup", px);
    o->k_ipstate = util_asprintf("%sipstate", px);
    o->k_chan = util_asprintf("%sops", px);
    return o;
}

const char *cluster_ops_channel(const cluster_ops *o) { return o->k_chan; }

void cluster_ops_up(cluster_ops *o)
{
    while (o->pending) {                          /* in order: the hash then holds the last */
        cops_pending *q = o->pending;
        if (cops_send_zone(o, q->zone, q->up) != 0) return;
        o->pending = q->next;
        free(q->zone);
        free(q);
    }
    char *mark = util_asprintf("%s:seeded", o->k_zones);
    const char *argv[] = {"SADD", mark, cops_node(o)};
    size_t lens[] = {4, strlen(mark), strlen(cops_node(o))};
    redis_link_command(o->cmd, cops_on_zones_marked, o, 3, argv, lens);
    free(mark);
    cops_fetch(o, o->k_warmup, cops_on_warmups);
    cops_fetch(o, o->k_ipstate, cops_on_ipstates);
}

void cluster_ops_reload(cluster_ops *o)
{
    if (redis_link_up(o->cmd)) cops_fetch(o, o->k_ipstate, cops_on_ipstates);
}

void cluster_ops_message(cluster_ops *o, const char *data, size_t len)
{
    char *copy = util_strndup(data, len);
    char *f[5] = {0};
    size_t nf = 0;
    char *save = NULL;
    for (char *t = strtok_r(copy, "\t", &save); t && nf < 5; t = strtok_r(NULL, "\t", &save))
        f[nf++] = t;
    if (nf == 4 && strcmp(f[1], cops_node(o)) != 0) {
        if (strcmp(f[0], "zone") == 0 && (strcmp(f[3], "up") == 0 || strcmp(f[3], "down") == 0))
            cops_apply_zone(o, f[2], strcmp(f[3], "up") == 0, f[1]);
        else if (strcmp(f[0], "warmup") == 0 && cops_mine(o, f[2])) {
            char *end = NULL;
            long pct = strtol(f[3], &end, 10);
            if (end && !*end && pct >= 0 && pct <= 100) cops_apply_warmup(o, f[2], (int)pct, f[1]);
        }
    }
    free(copy);
}

void cluster_ops_free(cluster_ops *o)
{
    if (!o) return;
    o->freeing = true;
    while (o->pending) {
        cops_pending *q = o->pending;
        o->pending = q->next;
        free(q->zone);
        free(q);
    }
    for (size_t i = 0; i < o->npushed; i++) {
        free(o->pushed[i].ip);
        free(o->pushed[i].text);
    }
    free(o->pushed);
    free(o->k_zones);
    free(o->k_warmup);
    free(o->k_ipstate);
    free(o->k_chan);
    free(o);
}
