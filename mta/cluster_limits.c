/* cluster_limits.c — the account's rate and 24 h quota across the cluster (promises in
 * cluster_limits.h). The node's quota (mta/quota.c) stays the one place every acceptance
 * asks; this file only feeds it: leases from Redis while the link is up, the local share
 * while it is down, and the reconciliation in between.
 *
 * Redis keys (PREFIX is cluster.redis.key_prefix):
 *   PREFIX "rate"     the account's GCRA theoretical arrival time, ms (string, expiring);
 *   PREFIX "sent24h"  hash: one field per minute index (recipients counted in that minute),
 *                     "total" (their sum), "oldest" (the oldest minute that may hold a
 *                     count) and "seeded:NODE" (that node's own 24 h were added after the
 *                     hash was created), expiring 25 h after the last write.
 * One script does everything in one round trip: prune the window, give back unused slots,
 * add the minutes sent while Redis was away (or, the first time a node meets this hash, its
 * whole window), then lease rate tokens and 24 h slots. Redis's own TIME is the clock, so
 * nodes' clocks need not agree. */
#include "mta/cluster_limits.h"

#include <hiredis/hiredis.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/quota.h"
#include "mta/redis_link.h"

#define CLIMITS_BATCH_MAX 200      /* tokens or slots in one lease */
#define CLIMITS_DAILY_BATCH 20     /* slots in one lease when the rate is unlimited */
#define CLIMITS_REPORT_MAX 1441    /* minutes of a 24 h window */
#define CLIMITS_SPENT_MS 1000      /* no new 24 h lease asked this long after Redis had none */

/* KEYS: rate, sent24h. ARGV: want_rate need_rate want_daily need_daily rate capacity max24
 * nodes give_back node S, then S minute,count pairs of the node's whole window (applied
 * only if "seeded:NODE" is absent: Redis never had this node's sends), then minute,count
 * pairs of the unreported minutes (applied only if the seed was not: it holds them).
 * Returns {rate tokens, daily slots, account total, seeded now (1/0), ms until the account
 * has a rate token again (0 unless none was granted)}. */
static const char climits_lua[] =
    "local t = redis.call('TIME') "
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
    "local want_r, need_r = tonumber(ARGV[1]), tonumber(ARGV[2]) "
    "local want_d, need_d = tonumber(ARGV[3]), tonumber(ARGV[4]) "
    "local rate, cap = tonumber(ARGV[5]), tonumber(ARGV[6]) "
    "local max24, nodes = tonumber(ARGV[7]), tonumber(ARGV[8]) "
    "local back, node, nseed = tonumber(ARGV[9]), ARGV[10], tonumber(ARGV[11]) "
    "local gr, rwait = 0, 0 "
    "if want_r > 0 and rate > 0 then "
    "  local T = 1000 / rate "
    "  local tat = tonumber(redis.call('GET', KEYS[1]) or '0') "
    "  if tat < now then tat = now end "
    "  local k = math.floor((now + cap * T - tat) / T + 1e-9) "
    "  if k > want_r then k = want_r end "
    "  if k > 0 then "
    "    tat = tat + k * T "
    "    redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000) "
    "    gr = k "
    "  else "
    "    rwait = math.ceil(tat + T - now - cap * T) "
    "    if rwait < 1 then rwait = 1 end "
    "  end "
    "elseif want_r > 0 then "
    "  rwait = 1000 "
    "end "
    "local m = math.floor(now / 60000) "
    "local low = m - 1440 "
    "local total = tonumber(redis.call('HGET', KEYS[2], 'total') or '0') "
    "local oldest = tonumber(redis.call('HGET', KEYS[2], 'oldest') or tostring(m)) "
    "if oldest < low then "
    "  if low - oldest > 1441 then "
    "    local all = redis.call('HGETALL', KEYS[2]) "
    "    total = 0 "
    "    for i = 1, #all, 2 do "
    "      local mm = tonumber(all[i]) "
    "      if mm then "
    "        if mm < low then redis.call('HDEL', KEYS[2], all[i]) "
    "        else total = total + tonumber(all[i + 1]) end "
    "      end "
    "    end "
    "  else "
    "    for mm = oldest, low - 1 do "
    "      local c = redis.call('HGET', KEYS[2], tostring(mm)) "
    "      if c then total = total - tonumber(c) redis.call('HDEL', KEYS[2], tostring(mm)) end "
    "    end "
    "  end "
    "  oldest = low "
    "end "
    "local mm = m "
    "while back > 0 and mm >= low do "
    "  local c = tonumber(redis.call('HGET', KEYS[2], tostring(mm)) or '0') "
    "  if c > 0 then "
    "    local d = math.min(c, back) "
    "    redis.call('HINCRBY', KEYS[2], tostring(mm), -d) "
    "    total = total - d back = back - d "
    "  end "
    "  mm = mm - 1 "
    "end "
    "local seeded = 0 "
    "local mark = 'seeded:' .. node "
    "local first, last = 12 + 2 * nseed, #ARGV - 1 "
    "if redis.call('HEXISTS', KEYS[2], mark) == 0 then "
    "  seeded = 1 first, last = 12, 11 + 2 * nseed "
    "end "
    "for i = first, last, 2 do "
    "  local rm, rc = tonumber(ARGV[i]), tonumber(ARGV[i + 1]) "
    "  if rm > m then rm = m end "
    "  if rm >= low and rc > 0 then "
    "    redis.call('HINCRBY', KEYS[2], tostring(rm), rc) "
    "    total = total + rc "
    "    if rm < oldest then oldest = rm end "
    "  end "
    "end "
    "redis.call('HSET', KEYS[2], mark, '1') "
    "local gd = 0 "
    "if want_d > 0 and max24 >= 0 then "
    "  local avail = max24 - total "
    "  local k = want_d "
    "  if avail < want_d * nodes * 2 then k = need_d end "
    "  if k > avail then k = avail end "
    "  if k > 0 then "
    "    redis.call('HINCRBY', KEYS[2], tostring(m), k) "
    "    total = total + k gd = k "
    "  end "
    "end "
    "redis.call('HSET', KEYS[2], 'total', total, 'oldest', oldest) "
    "redis.call('PEXPIRE', KEYS[2], 90000000) "
    "return {gr, gd, total, seeded, rwait}";

struct cluster_limits_wait {
    cluster_limits_cb *cb;
    void *arg;
    cluster_limits_wait *next;
};

typedef struct climits_call {
    cluster_limits *l;
    bool hello;                    /* the first call after the link came up */
    unsigned want_r, want_d;       /* what it asked to lease */
    int64_t *rep_min, *rep_cnt;    /* the unreported minutes it carried */
    size_t nrep;
    bool gone;                     /* l was freed before the reply */
} climits_call;

struct cluster_limits {
    kiln_ctx *ctx;
    redis_link *cmd;
    char *k_rate, *k_sent;
    bool leased;                   /* the hello was answered: the quota is QUOTA_LEASED */
    climits_call *inflight;        /* the one lease request on the way, or NULL */
    unsigned next_rate, next_daily;/* needs of waiters that came while one was on the way */
    cluster_limits_wait *waiters;  /* answered by the next reply */
    int64_t idle_lease;            /* daily lease seen unchanged at the last tick */
    int64_t account_sent;          /* the account's window at the last reply; -1 unknown */
    /* Redis had none to lease: until then a recipient short of them is refused at once,
     * without a round trip (an overloaded node does not ask per refused recipient) */
    int64_t rate_spent_until, daily_spent_until;
    uint64_t leases, waits, rate_granted, daily_granted, given_back, reported;
};

static double climits_share(const cluster_limits *l)
{
    double s = l->ctx->cfg->cluster_local_share;
    return s > 0 && s <= 1 ? s : 1;
}

static unsigned climits_nodes(const cluster_limits *l)
{
    return l->ctx->cfg->ncluster_nodes ? (unsigned)l->ctx->cfg->ncluster_nodes : 1;
}

/* A lease's size: enough for a node to take its part of the account's burst in a few
 * round trips, small enough that nodes share the bucket. */
static unsigned climits_batch(const cluster_limits *l)
{
    double rate = quota_max_rate(l->ctx->quota);
    if (rate < 0) return CLIMITS_DAILY_BATCH;
    double cap = rate > 1 ? rate : 1;
    double b = ceil(cap / (2.0 * climits_nodes(l)));
    if (b < 1) b = 1;
    return b > CLIMITS_BATCH_MAX ? CLIMITS_BATCH_MAX : (unsigned)b;
}

static void climits_fmt(char *buf, size_t n, int64_t v)
{
    snprintf(buf, n, "%lld", (long long)v);
}

static void climits_on_reply(void *arg, redisReply *r);

static void climits_call_free(climits_call *call)
{
    free(call->rep_min);
    free(call->rep_cnt);
    free(call);
}

/* Sends the script: need_r/need_d beyond what the node holds (0: none; a lease is at
 * least a batch), back unused slots given back; hello (the first call on a new link) adds
 * the node's whole window in case Redis lacks it. Every call carries the unreported
 * minutes. false: the link is not up. */
static bool climits_send(cluster_limits *l, unsigned need_r, unsigned need_d, int64_t back,
                         bool hello)
{
    quota *q = l->ctx->quota;
    int64_t now = kiln_now_ms(l->ctx);
    unsigned batch = climits_batch(l);
    double rate = quota_max_rate(q);
    int64_t max24 = quota_max_24h(q);
    if (rate < 0) need_r = 0;
    if (max24 < 0) need_d = 0;
    unsigned want_r = need_r ? (need_r > batch ? need_r : batch) : 0;
    unsigned want_d = need_d ? (need_d > batch ? need_d : batch) : 0;

    size_t cap = 2 * CLIMITS_REPORT_MAX;
    int64_t *mins = util_calloc(cap, sizeof *mins);
    int64_t *cnts = util_calloc(cap, sizeof *cnts);
    size_t nseed = hello ? quota_sent_minutes(q, now, mins, cnts, CLIMITS_REPORT_MAX) : 0;
    size_t nrep = quota_unreported(q, now, mins + nseed, cnts + nseed, CLIMITS_REPORT_MAX);
    size_t npairs = nseed + nrep;
    enum { FIXED = 3 + 2 + 11, NUMS = 10 };
    size_t argc = FIXED + 2 * npairs;
    const char **argv = util_calloc(argc, sizeof *argv);
    size_t *lens = util_calloc(argc, sizeof *lens);
    char (*num)[32] = util_calloc(NUMS + 2 * npairs, sizeof *num);
    argv[0] = "EVAL";
    argv[1] = climits_lua;
    argv[2] = "2";
    argv[3] = l->k_rate;
    argv[4] = l->k_sent;
    int64_t vals[NUMS] = {want_r, need_r, want_d, need_d, 0, 0, max24, climits_nodes(l), back,
                          (int64_t)nseed};
    for (int i = 0; i < NUMS; i++) climits_fmt(num[i], sizeof num[i], vals[i]);
    snprintf(num[4], sizeof num[4], "%.6f", rate < 0 ? -1.0 : rate);
    snprintf(num[5], sizeof num[5], "%.6f", rate > 1 ? rate : 1.0);
    for (int i = 0; i < 9; i++) argv[5 + i] = num[i];      /* ARGV[1..9] */
    argv[14] = l->ctx->cfg->cluster_node;                  /* ARGV[10] */
    argv[15] = num[9];                                     /* ARGV[11] */
    for (size_t i = 0; i < npairs; i++) {
        climits_fmt(num[NUMS + 2 * i], sizeof num[0], mins[i]);
        climits_fmt(num[NUMS + 2 * i + 1], sizeof num[0], cnts[i]);
        argv[FIXED + 2 * i] = num[NUMS + 2 * i];
        argv[FIXED + 2 * i + 1] = num[NUMS + 2 * i + 1];
    }
    for (size_t i = 0; i < argc; i++) lens[i] = strlen(argv[i]);
    climits_call *call = util_calloc(1, sizeof *call);
    call->l = l;
    call->hello = hello;
    call->want_r = want_r;
    call->want_d = want_d;
    if (nrep) {
        call->nrep = nrep;
        call->rep_min = util_calloc(nrep, sizeof *call->rep_min);
        call->rep_cnt = util_calloc(nrep, sizeof *call->rep_cnt);
        memcpy(call->rep_min, mins + nseed, nrep * sizeof *mins);
        memcpy(call->rep_cnt, cnts + nseed, nrep * sizeof *cnts);
    }
    int rc = redis_link_command(l->cmd, climits_on_reply, call, (int)argc, argv, lens);
    free(argv);
    free(lens);
    free(num);
    free(mins);
    free(cnts);
    if (rc != 0) {
        climits_call_free(call);
        return false;
    }
    l->inflight = call;
    l->leases++;
    if (nrep) l->reported++;
    return true;
}

static void climits_wake(cluster_limits *l)
{
    cluster_limits_wait *w = l->waiters;
    l->waiters = NULL;
    while (w) {
        cluster_limits_wait *next = w->next;
        cluster_limits_cb *cb = w->cb;
        void *arg = w->arg;
        free(w);
        cb(arg);                    /* may ask again: a new list */
        w = next;
    }
}

static void climits_on_reply(void *arg, redisReply *r)
{
    climits_call *call = arg;
    cluster_limits *l = call->l;
    if (call->gone) {
        climits_call_free(call);
        return;
    }
    l->inflight = NULL;
    int64_t back = 0;
    bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 5;
    if (ok) {
        quota *q = l->ctx->quota;
        int64_t now = kiln_now_ms(l->ctx);
        long long gr = r->element[0]->integer, gd = r->element[1]->integer;
        /* reported, or held by the seed: either way the account has them now */
        quota_unreported_sub(q, call->rep_min, call->rep_cnt, call->nrep);
        if (call->hello) {
            l->leased = true;
            quota_set_mode(q, QUOTA_LEASED, climits_share(l), now);
            if (r->element[3]->integer == 1) {
                /* a Redis without this node's marker never saw its earlier leases */
                quota_leases_void(q);
                log_write(l->ctx->log, KLOG_INFO, "cluster.limits_seeded",
                          "node=%s account_sent_24h=%lld", l->ctx->cfg->cluster_node,
                          (long long)r->element[2]->integer);
            } else {
                back = quota_daily_unlease(q);   /* leased before the outage, not used */
            }
        }
        quota_rate_grant(q, gr, now);
        quota_daily_grant(q, gd);
        if (gr == 0 && call->want_r) l->rate_spent_until = now + r->element[4]->integer;
        if (gd == 0 && call->want_d) l->daily_spent_until = now + CLIMITS_SPENT_MS;
        l->rate_granted += (uint64_t)(gr > 0 ? gr : 0);
        l->daily_granted += (uint64_t)(gd > 0 ? gd : 0);
        l->account_sent = r->element[2]->integer;
    } else if (r && r->type == REDIS_REPLY_ERROR) {
        log_write(l->ctx->log, KLOG_WARNING, "cluster.limits_error", "error=%s",
                  log_q(l->ctx->log, r->str));
    }
    climits_call_free(call);
    unsigned nr = l->next_rate, nd = l->next_daily;
    l->next_rate = l->next_daily = 0;
    climits_wake(l);
    /* needs that came while this one was on the way and were not asked again, and slots
     * to give back */
    if (!l->inflight && (nr || nd || back > 0) && l->leased && redis_link_up(l->cmd)) {
        if (climits_send(l, nr, nd, back, false)) l->given_back += (uint64_t)back;
    }
}

cluster_limits *cluster_limits_new(kiln_ctx *ctx, redis_link *cmd)
{
    cluster_limits *l = util_calloc(1, sizeof *l);
    l->ctx = ctx;
    l->cmd = cmd;
    l->k_rate = util_asprintf("%srate", ctx->cfg->cluster_key_prefix);
    l->k_sent = util_asprintf("%ssent24h", ctx->cfg->cluster_key_prefix);
    l->account_sent = -1;
    /* until Redis answers: the local share */
    quota_set_mode(ctx->quota, QUOTA_LOCAL, climits_share(l), kiln_now_ms(ctx));
    return l;
}

void cluster_limits_up(cluster_limits *l)
{
    if (l->inflight) return;
    /* hello: seed or report; what an earlier link left leased is given back or dropped
     * by its reply, once it says whether Redis kept this node's part */
    climits_send(l, 0, 0, 0, true);
}

void cluster_limits_down(cluster_limits *l)
{
    /* a request on the way gets its NULL reply from the link, which wakes its waiters */
    if (!l->leased) return;
    l->leased = false;
    quota_set_mode(l->ctx->quota, QUOTA_LOCAL, climits_share(l), kiln_now_ms(l->ctx));
}

void cluster_limits_tick(cluster_limits *l)
{
    quota *q = l->ctx->quota;
    int64_t held = quota_daily_leased(q);
    if (!l->leased || l->inflight || !redis_link_up(l->cmd) || held == 0) {
        l->idle_lease = held;
        return;
    }
    if (held == l->idle_lease && !l->waiters) {
        /* not drawn on for a whole tick: give it back for the other nodes */
        int64_t back = quota_daily_unlease(q);
        if (climits_send(l, 0, 0, back, false)) {
            l->given_back += (uint64_t)back;
        } else {
            quota_daily_grant(q, back);
        }
        l->idle_lease = 0;
        return;
    }
    l->idle_lease = held;
}

void cluster_limits_reload(cluster_limits *l)
{
    quota *q = l->ctx->quota;
    quota_set_mode(q, quota_get_mode(q), climits_share(l), kiln_now_ms(l->ctx));
}

cluster_limits_wait *cluster_limits_ask(cluster_limits *l, unsigned rate_n, unsigned daily_n,
                                        cluster_limits_cb *cb, void *arg)
{
    if (!l || !l->leased || !redis_link_up(l->cmd)) return NULL;
    quota *q = l->ctx->quota;
    if (quota_max_rate(q) < 0) rate_n = 0;
    if (quota_max_24h(q) < 0) daily_n = 0;
    if (!rate_n && !daily_n) return NULL;
    int64_t now = kiln_now_ms(l->ctx);
    if ((rate_n && now < l->rate_spent_until) || (daily_n && now < l->daily_spent_until))
        return NULL;                /* the account had none a moment ago: refuse now */
    if (!l->inflight) {
        if (!climits_send(l, rate_n, daily_n, 0, false)) return NULL;
    } else {
        /* one request at a time: this need goes with the next one */
        if (rate_n > l->next_rate) l->next_rate += rate_n;
        if (daily_n > l->next_daily) l->next_daily += daily_n;
    }
    cluster_limits_wait *w = util_calloc(1, sizeof *w);
    w->cb = cb;
    w->arg = arg;
    cluster_limits_wait **tail = &l->waiters;
    while (*tail) tail = &(*tail)->next;
    *tail = w;
    l->waits++;
    return w;
}

void cluster_limits_cancel(cluster_limits *l, cluster_limits_wait *w)
{
    if (!l || !w) return;
    for (cluster_limits_wait **p = &l->waiters; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            free(w);
            return;
        }
}

json_t *cluster_limits_json(cluster_limits *l)
{
    quota *q = l->ctx->quota;
    int64_t now = kiln_now_ms(l->ctx);
    json_t *o = json_object();
    bool leased = quota_get_mode(q) == QUOTA_LEASED;
    json_object_set_new(o, "Mode", json_string(leased ? "leased" : "local"));
    json_object_set_new(o, "Share", json_real(climits_share(l)));
    json_object_set_new(o, "RateTokens", json_integer((json_int_t)quota_rate_leased(q, now)));
    json_object_set_new(o, "DailySlots", json_integer(quota_daily_leased(q)));
    json_object_set_new(o, "AccountSent24h",
                        l->account_sent >= 0 ? json_integer(l->account_sent) : json_null());
    json_object_set_new(o, "Leases", json_integer((json_int_t)l->leases));
    json_object_set_new(o, "Waits", json_integer((json_int_t)l->waits));
    json_object_set_new(o, "RateGranted", json_integer((json_int_t)l->rate_granted));
    json_object_set_new(o, "DailyGranted", json_integer((json_int_t)l->daily_granted));
    json_object_set_new(o, "GivenBack", json_integer((json_int_t)l->given_back));
    return o;
}

void cluster_limits_free(cluster_limits *l)
{
    if (!l) return;
    if (l->inflight) l->inflight->gone = true;
    l->inflight = NULL;
    /* no one is left waiting: they decide under the local share (and cannot ask again) */
    l->leased = false;
    quota_set_mode(l->ctx->quota, QUOTA_LOCAL, climits_share(l), kiln_now_ms(l->ctx));
    climits_wake(l);
    free(l->k_rate);
    free(l->k_sent);
    free(l);
}
