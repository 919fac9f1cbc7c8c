/* api_ips.c — the SES v2 API's dedicated-IP operations over the scheduler's pools state
 * (pools/pools.h), the same state `kilnctl ips` and `kilnctl ip warmup` read and change
 * (mta/control_cmd.c): GetDedicatedIps, GetDedicatedIp, PutDedicatedIpWarmupAttributes,
 * ListDedicatedIpPools, GetDedicatedIpPool; and the answer of the operations that would change
 * what kiln.yaml owns (CreateDedicatedIpPool, DeleteDedicatedIpPool, PutDedicatedIpInPool).
 *
 * Promises: an IP is the pools state's (WarmupStatus IN_PROGRESS / DONE, and NOT_APPLICABLE
 * with WarmupPercentage -1 in managed pools, as kilnctl ips shows them); IPs released by a
 * reload and still draining are not the account's any more and are not shown (404). An IP's
 * `Ip` is the address the world sees (its public_address behind NAT, else the address kiln
 * binds), as in `kilnctl ips`; lists are ordered and paged by it. An IP is found by either
 * address whatever its spelling ("::1" and "0::1" are one). A warm-up change is
 * applied, saved (scheduler_pools_changed) and logged as kilnctl's is (an `api.cmd` line with
 * cmd=ip.warmup, the fields of control.cmd). Lists are ordered (IPs by address, IPv4 first;
 * pools by name) and paged with NextToken (the last key shown, api_token.c): PageSize
 * 1..1000 (0 or absent: 100). Pools are config, so no scope applies (SES scopes by IAM). */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "api/api_int.h"
#include "base/log.h"
#include "base/util.h"
#include "mta/cluster.h"
#include "pools/pools.h"
#include "scheduler/scheduler.h"

#define API_IPS_PAGE_DEFAULT 100
#define API_IPS_PAGE_MAX 1000

static json_t *api_ips_jstr(const char *s)
{
    json_t *j = json_string(s ? s : "");
    return j ? j : json_string("");
}

/* An address as a sort key: IPv4 (rank 0), IPv6 (rank 1) in network byte order; anything
 * else (a hand-made token) ranks last, by its text. */
typedef struct api_ips_key {
    int rank;
    unsigned char b[16];
} api_ips_key;

static void api_ips_key_of(const char *s, api_ips_key *k)
{
    memset(k, 0, sizeof *k);
    if (inet_pton(AF_INET, s, k->b) == 1) k->rank = 0;
    else if (inet_pton(AF_INET6, s, k->b) == 1) k->rank = 1;
    else k->rank = 2;
}

static int api_ips_cmp_addr(const char *a, const char *b)
{
    api_ips_key ka, kb;
    api_ips_key_of(a, &ka);
    api_ips_key_of(b, &kb);
    if (ka.rank != kb.rank) return ka.rank < kb.rank ? -1 : 1;
    if (ka.rank == 2) return strcmp(a, b);
    return memcmp(ka.b, kb.b, sizeof ka.b);
}

static int api_ips_cmp_info(const void *a, const void *b)
{
    return api_ips_cmp_addr(((const pools_ip_info *)a)->public_address,
                            ((const pools_ip_info *)b)->public_address);
}

static int api_ips_cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The scheduler's pools state, or NULL after answering (kilnd is starting or stopping). */
static pools *api_ips_pools(api_call *c)
{
    pools *p = c->ctx->sched ? scheduler_pools(c->ctx->sched) : NULL;
    if (!p) api_error(c, 503, "ServiceUnavailable", "the delivery scheduler is not running");
    return p;
}

/* The account's IP whose bound or public address is addr (not a draining one): 0 and *out,
 * or -1. */
static int api_ips_find(const pools *p, const char *addr, int64_t now, pools_ip_info *out)
{
    if (!addr) return -1;
    for (size_t i = 0; i < pools_count(p); i++) {
        pools_info(p, i, now, out);
        if (out->state != POOLS_STATE_DRAINING &&
            (api_ips_cmp_addr(out->address, addr) == 0 ||
             api_ips_cmp_addr(out->public_address, addr) == 0))
            return 0;
    }
    return -1;
}

/* SES's DedicatedIp. */
static json_t *api_ips_json(const pools_ip_info *in)
{
    json_t *o = json_object();
    json_object_set_new(o, "Ip", api_ips_jstr(in->public_address));
    json_object_set_new(o, "WarmupStatus", json_string(in->warmup_status));
    json_object_set_new(o, "WarmupPercentage", json_integer(in->warmup_percentage));
    json_object_set_new(o, "PoolName", api_ips_jstr(in->pool));
    return o;
}

void api_op_get_dedicated_ips(api_call *c)
{
    const char *op = "GetDedicatedIps";
    const char *pool = api_in_str(c, "PoolName");
    if (pool && !config_find_pool(c->cfg, pool)) {
        API_NOT_FOUND(c, "Pool %s does not exist.", pool);
        return;
    }
    size_t page;
    char *after;
    if (api_page_args(c, API_IPS_PAGE_DEFAULT, API_IPS_PAGE_MAX, "InvalidNextTokenException",
                      &page, &after) < 0)
        return;
    pools *p = api_ips_pools(c);
    if (!p) {
        free(after);
        return;
    }
    size_t total = pools_count(p), n = 0;
    pools_ip_info *v = util_calloc(total ? total : 1, sizeof *v);
    for (size_t i = 0; i < total; i++) {
        pools_info(p, i, c->now_ms, &v[n]);
        if (v[n].state == POOLS_STATE_DRAINING) continue;
        if (pool && strcmp(v[n].pool, pool) != 0) continue;
        n++;
    }
    if (n) qsort(v, n, sizeof *v, api_ips_cmp_info);
    size_t i = 0;
    if (after)
        while (i < n && api_ips_cmp_addr(v[i].public_address, after) <= 0) i++;
    size_t to = n - i > page ? i + page : n;
    json_t *arr = json_array();
    for (size_t k = i; k < to; k++) json_array_append_new(arr, api_ips_json(&v[k]));
    json_t *o = json_object();
    json_object_set_new(o, "DedicatedIps", arr);
    if (to < n) {
        char *next = api_next_token(op, v[to - 1].public_address);
        json_object_set_new(o, "NextToken", json_string(next));
        free(next);
    }
    free(v);
    free(after);
    api_ok(c, o);
}

void api_op_get_dedicated_ip(api_call *c)
{
    const char *addr = api_in_str(c, "Ip");
    pools *p = api_ips_pools(c);
    if (!p) return;
    pools_ip_info in;
    if (api_ips_find(p, addr, c->now_ms, &in) < 0) {
        API_NOT_FOUND(c, "Dedicated IP %s does not exist.", addr ? addr : "");
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "DedicatedIp", api_ips_json(&in));
    api_ok(c, o);
}

/* The control.cmd line of kilnctl ip warmup, as the API's. */
static void api_ips_log_cmd(api_call *c, const char *address, int percent, const char *error)
{
    klog *lg = c->ctx->log;
    if (!log_enabled(lg, KLOG_INFO)) return;
    strbuf sb;
    strbuf_init(&sb);
    strbuf_printf(&sb, "cmd=ip.warmup address=%s", log_q(lg, address));
    strbuf_printf(&sb, " percent=%d", percent);
    strbuf_printf(&sb, " key=%s", log_q(lg, c->key && c->key->id ? c->key->id : ""));
    strbuf_printf(&sb, " ok=%s", error ? "false" : "true");
    if (error) strbuf_printf(&sb, " error=%s", log_q(lg, error));
    log_write(lg, KLOG_INFO, "api.cmd", "%s", sb.buf);
    strbuf_free(&sb);
}

void api_op_put_dedicated_ip_warmup_attributes(api_call *c)
{
    const char *addr = api_in_str(c, "Ip");
    json_t *pj = api_in(c, "WarmupPercentage");
    json_int_t pct = json_is_integer(pj) ? json_integer_value(pj) : -1;
    if (pct < 0 || pct > 100) {
        API_BAD_REQUEST(c, "WarmupPercentage must be between 0 and 100");
        return;
    }
    pools *p = api_ips_pools(c);
    if (!p) return;
    pools_ip_info in;
    char *owner = NULL, *ferr = NULL;
    int fw = addr && api_ips_find(p, addr, c->now_ms, &in) < 0
                 ? cluster_forward_warmup(c->ctx->cluster, addr, (int)pct, &owner, &ferr)
                 : 0;
    if (fw < 0) {                /* another node's IP, and Redis away */
        api_ips_log_cmd(c, addr, (int)pct, ferr);
        API_BAD_REQUEST(c, "%s", ferr);
        free(ferr);
        return;
    }
    if (fw > 0) {                /* another node's IP: its node applies it */
        api_ips_log_cmd(c, addr, (int)pct, NULL);
        free(owner);
        api_ok(c, NULL);
        return;
    }
    if (api_ips_find(p, addr, c->now_ms, &in) < 0) {
        api_ips_log_cmd(c, addr ? addr : "", (int)pct, "unknown address");
        API_NOT_FOUND(c, "Dedicated IP %s does not exist.", addr ? addr : "");
        return;
    }
    char *address = util_strdup(in.address);   /* in's strings are the state's */
    char *err = NULL;
    if (pools_set_warmup(p, address, (int)pct, c->now_ms, &err) != 0) {
        if (!err) err = util_asprintf("cannot set the warm-up of %s", address);
        api_ips_log_cmd(c, address, (int)pct, err);
        API_BAD_REQUEST(c, "%s", err);
        free(err);
        free(address);
        return;
    }
    scheduler_pools_changed(c->ctx->sched);
    api_ips_log_cmd(c, address, (int)pct, NULL);
    free(address);
    api_ok(c, NULL);
}

void api_op_list_dedicated_ip_pools(api_call *c)
{
    const char *op = "ListDedicatedIpPools";
    const config *cfg = c->cfg;
    size_t page;
    char *after;
    if (api_page_args(c, API_IPS_PAGE_DEFAULT, API_IPS_PAGE_MAX, "InvalidNextTokenException",
                      &page, &after) < 0)
        return;
    size_t n = cfg->npools;
    const char **names = util_calloc(n ? n : 1, sizeof *names);
    for (size_t i = 0; i < n; i++) names[i] = cfg->pools[i].name;
    if (n) qsort(names, n, sizeof *names, api_ips_cmp_name);
    size_t i = 0;
    if (after)
        while (i < n && strcmp(names[i], after) <= 0) i++;
    size_t to = n - i > page ? i + page : n;
    json_t *arr = json_array();
    for (size_t k = i; k < to; k++) json_array_append_new(arr, api_ips_jstr(names[k]));
    json_t *o = json_object();
    json_object_set_new(o, "DedicatedIpPools", arr);
    if (to < n) {
        char *next = api_next_token(op, names[to - 1]);
        json_object_set_new(o, "NextToken", json_string(next));
        free(next);
    }
    free(names);
    free(after);
    api_ok(c, o);
}

void api_op_get_dedicated_ip_pool(api_call *c)
{
    const char *name = api_in_str(c, "PoolName");
    const config_pool *pl = name ? config_find_pool(c->cfg, name) : NULL;
    if (!pl) {
        API_NOT_FOUND(c, "Pool %s does not exist.", name ? name : "");
        return;
    }
    json_t *d = json_object();
    json_object_set_new(d, "PoolName", api_ips_jstr(pl->name));
    json_object_set_new(d, "ScalingMode",
                        json_string(pl->scaling == CONFIG_SCALING_MANAGED ? "MANAGED" : "STANDARD"));
    json_t *o = json_object();
    json_object_set_new(o, "DedicatedIpPool", d);
    api_ok(c, o);
}

void api_op_config_owned(api_call *c)
{
    API_BAD_REQUEST(c, "dedicated IPs and pools are managed in kiln.yaml");
}
