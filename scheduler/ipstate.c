/* ipstate.c — the dedicated-IP state (pools/pools.h) as the scheduler owns it: read from
 * the spool at start (key "pools"), saved there when it changed (at most once a second,
 * and at stop), the lease / release diff of a reload, and the warm-up reservations: the
 * recipients handed to sessions of each IP and not settled yet.
 *
 * Promises: a session is handed at most the chosen IP's headroom minus what is reserved
 * on it, which keeps concurrent sessions from overshooting a cap before their sends are
 * recorded; a reservation never goes below zero (fatal: a broken invariant); an IP with
 * nothing reserved has no entry, so a forgotten IP leaves nothing behind; a released IP
 * is forgotten at once when no session uses it (scheduler_exec_ops.ip_in_use), else when
 * its last session ends (the executor). A state that cannot be read or saved is logged
 * and kept in memory. */
#include <stdlib.h>
#include <string.h>

#include "base/timeline.h"
#include "base/util.h"
#include "scheduler/internal.h"
#include "store/spool.h"

#define SCHED_POOLS_KEY "pools"     /* spool kv key of the pools state */

/* Saves the pools state in the spool batch if it changed. */
void sched_save_pools(scheduler *s)
{
    if (!pools_dirty(s->pools)) return;
    char *json = pools_state_json(s->pools);
    /* kept: a batch that fails takes it along to the next one (store/spool.h) */
    spool_keep_begin(s->ctx->spool);
    int rc = spool_kv_put(s->ctx->spool, SCHED_POOLS_KEY, json);
    spool_keep_end(s->ctx->spool);
    if (rc != 0)
        log_write(sched_lg(s), KLOG_ERROR, "pools.save", "error=%s note=\"kept in memory; saved again at the next change\"",
                  log_q(sched_lg(s), spool_errmsg(s->ctx->spool)));
    free(json);
}

static sched_reservation *sched_reservation_of(const scheduler *s, const pools_ip *ip)
{
    for (size_t i = 0; i < s->nres; i++)
        if (s->res[i].ip == ip) return &s->res[i];
    return NULL;
}

bool sched_ip_reserved(const scheduler *s, const pools_ip *ip)
{
    return sched_reservation_of(s, ip) != NULL;
}

void sched_reserve(scheduler *s, pools_ip *ip, int64_t n)
{
    sched_reservation *r = sched_reservation_of(s, ip);
    if (!r) {
        s->res = util_realloc(s->res, (s->nres + 1) * sizeof *s->res);
        r = &s->res[s->nres++];
        r->ip = ip;
        r->n = 0;
    }
    r->n += n;
    if (r->n < 0) util_fatal("scheduler: reservation of %s below zero", sched_ip_to_text(ip));
    if (r->n == 0) *r = s->res[--s->nres];   /* only IPs with recipients in flight are listed */
}

/* Gives back what job j reserved (no-op if nothing). */
void sched_job_unreserve(scheduler *s, sched_job *j)
{
    if (!j->res_ip) return;
    sched_reserve(s, j->res_ip, -j->res_n);
    j->res_ip = NULL;
    j->res_n = 0;
}

bool sched_ip_usable(const scheduler *s, const pools_ip *ip, int64_t now)
{
    pools_ip_info in;
    pools_ip_info_of(s->pools, ip, now, &in);
    return in.state == POOLS_STATE_ACTIVE;
}

/* Recipients ip may still be handed now for provider: the smallest headroom under its
 * caps minus what sessions in flight hold. INT64_MAX when no cap applies. */
int64_t sched_ip_room(const scheduler *s, const pools_ip *ip, const char *provider, int64_t now)
{
    int64_t room = pools_headroom(s->pools, ip, provider, now);
    if (room < 0) room = INT64_MAX;
    const sched_reservation *r = sched_reservation_of(s, ip);
    if (r && room != INT64_MAX) room -= r->n;
    return room;
}

/* The config's IPs, then what the spool kept of them. */
void sched_pools_load(scheduler *s)
{
    kiln_ctx *ctx = s->ctx;
    int64_t now = kiln_now_ms(ctx);
    pools_opts po;
    pools_opts_default(&po);
    s->pools = pools_new(ctx->cfg, &po, now);
    char *saved = NULL;
    if (spool_kv_get(ctx->spool, SCHED_POOLS_KEY, &saved) != 0) {
        log_write(ctx->log, KLOG_ERROR, "pools.load",
                  "error=%s note=\"IPs start from the config: new ones at 0 %% warm-up, no usage\"",
                  log_q(ctx->log, spool_errmsg(ctx->spool)));
    } else if (saved) {
        char *err = NULL;
        if (pools_state_load(s->pools, saved, now, &err) != 0) {
            log_write(ctx->log, KLOG_ERROR, "pools.load",
                      "error=%s note=\"saved state ignored; IPs start from the config\"",
                      log_q(ctx->log, err ? err : "malformed"));
            free(err);
        }
    }
    free(saved);
    for (size_t i = 0; i < pools_count(s->pools); i++) {
        pools_ip_info in;
        pools_info(s->pools, i, now, &in);
        log_write(ctx->log, KLOG_INFO, "pools.ip",
                  "ip=%s%s%s pool=%s zone=%s warmup=%s pct=%d sent_24h=%lld daily_cap=%lld state=%s",
                  in.address, strcmp(in.public_address, in.address) ? " public=" : "",
                  strcmp(in.public_address, in.address) ? in.public_address : "", log_q(ctx->log, in.pool), log_q(ctx->log, in.zone), in.warmup_status,
                  in.warmup_percentage, (long long)in.sent_24h, (long long)in.daily_cap,
                  pools_state_name(in.state));
    }
}

/* "a,b,c" or "-" (malloc'd) for logs. */
static char *sched_join_addrs(char **v, size_t n)
{
    if (n == 0) return util_strdup("-");
    strbuf sb;
    strbuf_init(&sb);
    for (size_t i = 0; i < n; i++) {
        if (i) strbuf_puts(&sb, ",");
        strbuf_puts(&sb, v[i]);
    }
    return strbuf_steal(&sb);
}

void sched_ip_forget_drained(scheduler *s, const char *address, const char *why)
{
    int64_t now = kiln_now_ms(s->ctx);
    pools_ip_info in;
    if (pools_info_by_address(s->pools, address, now, &in) != 0 || in.state != POOLS_STATE_DRAINING)
        return;
    char *addr = util_strdup(address), *pool = util_strdup(in.pool);
    int64_t after = now > in.draining_since_ms ? (now - in.draining_since_ms) / 1000 : 0;
    pools_forget(s->pools, addr);
    log_write(sched_lg(s), KLOG_INFO, "pools.drained", "ip=%s pool=%s after_s=%lld reason=%s", addr,
              pool, (long long)after, log_q(sched_lg(s), why));
    timeline_add(s->ctx->timeline, now, "ip_drained", addr, "IP %s of pool %s drained after %lld s (%s)",
                 addr, pool, (long long)after, why ? why : "");
    free(addr);
    free(pool);
}

/* Lease / release after a reload: new IPs start warming up, removed ones drain, moved
 * ones keep their warm-up. */
void sched_pools_reload(scheduler *s)
{
    const config *cfg = s->ctx->cfg;
    int64_t now = kiln_now_ms(s->ctx);
    pools_diff d;
    memset(&d, 0, sizeof d);
    pools_apply_config(s->pools, cfg, now, &d);
    char *added = sched_join_addrs(d.added, d.nadded);
    char *removed = sched_join_addrs(d.removed, d.nremoved);
    char *moved = sched_join_addrs(d.moved, d.nmoved);
    log_write(sched_lg(s), KLOG_INFO, "pools.reload", "added=%s removed=%s moved=%s", added, removed, moved);
    if (d.nadded || d.nremoved || d.nmoved)
        timeline_add(s->ctx->timeline, now, "pools_reload", "", "IPs leased: %s; released (draining): %s; moved: %s",
                     added, removed, moved);
    free(added);
    free(removed);
    free(moved);
    /* connections from released IPs drain: no new transaction, QUIT when idle; a released
     * IP without a session is dropped at once */
    if (s->exec) s->exec->pools_changed(s->exec_arg);
    for (size_t i = 0; i < d.nremoved; i++) {
        pools_ip_info in;
        if (pools_info_by_address(s->pools, d.removed[i], now, &in) != 0) continue;
        bool used = s->exec && s->exec->ip_in_use(s->exec_arg, d.removed[i]);
        if (!used) sched_ip_forget_drained(s, d.removed[i], "released; no open session");
    }
    pools_diff_free(&d);
}
