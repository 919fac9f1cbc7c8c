/* pools.c — the dedicated-IP state of kiln (see pools.h): the set of leased IPs with their
 * lease/release diff on reload, zones up/down, managed per-provider caps, the choice of a
 * source IP. The persistent state as JSON is pools_state.c; warm-up arithmetic and usage
 * windows live in warmup.c, the circuit breaker in health.c. Pure: no I/O, no clock of its
 * own.
 *
 * Managed pools (`scaling: managed`): each (IP, mailbox provider) has a cap per rolling 24 h
 * that starts at warmup.first_day, grows by one per recipient the provider accepts (slow
 * start: a fully used day doubles it) up to warmup.target, and is halved (not below
 * first_day) when the provider throttles; the pair is then blocked for a backoff of 60 s.
 * Throttles that arrive while the pair is blocked belong to the same episode (sessions that
 * were already open) and change nothing; a throttle within one backoff period after the
 * block ended doubles the backoff (at most 15 min), a later one starts again at 60 s.
 * warmup.pacing applies to these caps as to the standard ones. While the pool's complaints
 * about a provider are above the hold rate (complaints.c), acceptance does not raise that
 * provider's caps; throttles still cut them.
 *
 * In a cluster (issue 17) the set holds only the IPs whose ips[].node is this node: the
 * others are bound by their own nodes, and this one never chooses them.
 *
 * The choice among usable IPs is smooth weighted round robin (nginx's algorithm) with the
 * IP's headroom as weight, so it is deterministic and proportional to what each IP may
 * still send. */
#include "pools/pools.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/netaddr.h"
#include "base/util.h"
#include "pools/complaints.h"
#include "pools/pools_internal.h"

#define MANAGED_BACKOFF_MS INT64_C(60000)
#define MANAGED_BACKOFF_MAX_MS INT64_C(900000)
#define UNLIMITED_WEIGHT INT64_C(1000000)   /* SWRR weight of an IP with no cap */

void pools_opts_default(pools_opts *o)
{
    o->cooldown_ms = 60000;
    o->cooldown_max_ms = 600000;
    o->failures_to_open = 3;
    o->sites_to_open = 2;
    o->peer_success_window_ms = 600000;
}

/* ------------------------------------------------------------------ IPs ---- */

static bool pools_pool_is_managed(const config *cfg, const char *pool)
{
    const config_pool *cp = config_find_pool(cfg, pool);
    return cp && cp->scaling == CONFIG_SCALING_MANAGED;
}

static void pools_ip_set_config(pools_ip *ip, const config *cfg, const config_ip *c)
{
    free(ip->pool);
    free(ip->zone);
    free(ip->ehlo);
    free(ip->public_address);
    ip->pool = util_strdup(c->pool);
    ip->zone = util_strdup(c->zone);
    ip->ehlo = util_strdup(c->ehlo);
    ip->public_address = util_strdup(c->public_address);
    ip->managed = pools_pool_is_managed(cfg, c->pool);
    snprintf(ip->zone_reason, sizeof ip->zone_reason, "zone %s is down", c->zone);
}

static pools_ip *pools_ip_new(const pools *p, const config *cfg, const config_ip *c, int64_t now_ms)
{
    pools_ip *ip = util_calloc(1, sizeof *ip);
    ip->address = util_strdup(c->address);
    pools_ip_set_config(ip, cfg, c);
    ip->cfg_done = c->warmup == CONFIG_WARMUP_DONE;
    ip->lease_ms = now_ms;
    warmup_ramp_start(&ip->ramp, ip->cfg_done ? 100 : 0, now_ms);
    warmup_window_init(&ip->usage, now_ms);
    health_init(&ip->h, &p->opts);
    return ip;
}

void pools_caps_free(pools_ip *ip)
{
    for (size_t i = 0; i < ip->ncaps; i++) {
        free(ip->caps[i]->provider);
        free(ip->caps[i]);
    }
    free(ip->caps);
    ip->caps = NULL;
    ip->ncaps = 0;
}

static void pools_ip_free(pools_ip *ip)
{
    free(ip->address);
    free(ip->pool);
    free(ip->zone);
    free(ip->ehlo);
    free(ip->public_address);
    health_free(&ip->h);
    pools_caps_free(ip);
    free(ip);
}

static pools_ip *pools_find_ip(const pools *p, const char *address)
{
    for (size_t i = 0; i < p->nips; i++)
        if (strcmp(p->ips[i]->address, address) == 0) return p->ips[i];
    return NULL;
}

static const char *pools_provider_name(const char *provider)
{
    return provider && *provider ? provider : "other";
}

static managed_cap *pools_find_cap(const pools_ip *ip, const char *provider)
{
    provider = pools_provider_name(provider);
    for (size_t i = 0; i < ip->ncaps; i++)
        if (strcmp(ip->caps[i]->provider, provider) == 0) return ip->caps[i];
    return NULL;
}

managed_cap *pools_cap_add(pools_ip *ip, const char *provider, int64_t cap, int64_t now_ms)
{
    managed_cap *c = util_calloc(1, sizeof *c);
    c->provider = util_strdup(pools_provider_name(provider));
    c->cap = cap;
    warmup_window_init(&c->usage, now_ms);
    ip->caps = util_realloc(ip->caps, (ip->ncaps + 1) * sizeof *ip->caps);
    ip->caps[ip->ncaps++] = c;
    return c;
}

static managed_cap *pools_get_cap(const pools *p, pools_ip *ip, const char *provider, int64_t now_ms)
{
    managed_cap *c = pools_find_cap(ip, provider);
    return c ? c : pools_cap_add(ip, provider, p->warmup.first_day, now_ms);
}

static pools_zone *pools_find_zone(const pools *p, const char *zone)
{
    for (size_t i = 0; i < p->nzones; i++)
        if (strcmp(p->zones[i].name, zone) == 0) return &p->zones[i];
    return NULL;
}

bool pools_zone_is_up(const pools *p, const char *zone)
{
    const pools_zone *z = zone ? pools_find_zone(p, zone) : NULL;
    return z && z->up;
}

/* --------------------------------------------------------- new / free ---- */

static void pools_zones_free(pools_zone *z, size_t n)
{
    for (size_t i = 0; i < n; i++) free(z[i].name);
    free(z);
}

pools *pools_new(const config *cfg, const pools_opts *opts, int64_t now_ms)
{
    pools *p = util_calloc(1, sizeof *p);
    if (opts) p->opts = *opts;
    else pools_opts_default(&p->opts);
    pools_diff d;
    pools_apply_config(p, cfg, now_ms, &d);
    pools_diff_free(&d);
    p->dirty = true;             /* the new leases are not saved yet */
    return p;
}

void pools_free(pools *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->nips; i++) pools_ip_free(p->ips[i]);
    free(p->ips);
    pools_zones_free(p->zones, p->nzones);
    pools_complaints_free(p);
    free(p);
}

/* ---------------------------------------------------- reload: lease/release ---- */

static void pools_diff_push(char ***list, size_t *n, const char *s)
{
    *list = util_realloc(*list, (*n + 1) * sizeof **list);
    (*list)[(*n)++] = util_strdup(s);
}

void pools_apply_config(pools *p, const config *cfg, int64_t now_ms, pools_diff *diff)
{
    memset(diff, 0, sizeof *diff);
    p->warmup = cfg->warmup;

    /* zones: a zone marked down stays down while it exists */
    pools_zone *zones = util_calloc(cfg->nzones, sizeof *zones);
    for (size_t i = 0; i < cfg->nzones; i++) {
        const pools_zone *old = pools_find_zone(p, cfg->zones[i]);
        zones[i].name = util_strdup(cfg->zones[i]);
        zones[i].up = old ? old->up : true;
    }
    pools_zones_free(p->zones, p->nzones);
    p->zones = zones;
    p->nzones = cfg->nzones;

    pools_ip **order = util_calloc(cfg->nips + p->nips, sizeof *order);
    bool *kept = util_calloc(p->nips, sizeof *kept);
    size_t n = 0;
    for (size_t i = 0; i < cfg->nips; i++) {
        const config_ip *c = &cfg->ips[i];
        /* cluster: another node binds it and sends from it; this node never does */
        if (cfg->cluster_on && c->node && cfg->cluster_node && strcmp(c->node, cfg->cluster_node) != 0)
            continue;
        bool dup = false;
        for (size_t j = 0; j < n && !dup; j++) dup = strcmp(order[j]->address, c->address) == 0;
        if (dup) continue;                      /* the config rejects these; be safe anyway */
        pools_ip *ip = NULL;
        for (size_t j = 0; j < p->nips && !ip; j++)
            if (strcmp(p->ips[j]->address, c->address) == 0) {
                ip = p->ips[j];
                kept[j] = true;
            }
        if (!ip) {
            ip = pools_ip_new(p, cfg, c, now_ms);
            pools_diff_push(&diff->added, &diff->nadded, ip->address);
        } else {
            if (ip->draining) {
                ip->draining = false;           /* leased again: back with its old state */
                ip->drain_since_ms = 0;
                pools_diff_push(&diff->added, &diff->nadded, ip->address);
            } else if (strcmp(ip->pool, c->pool) != 0 || strcmp(ip->zone, c->zone) != 0) {
                pools_diff_push(&diff->moved, &diff->nmoved, ip->address);
            }
            pools_ip_set_config(ip, cfg, c);
            /* `warmup: done` written on a known IP: the operator declares it warm */
            if (!ip->cfg_done && c->warmup == CONFIG_WARMUP_DONE)
                warmup_ramp_start(&ip->ramp, 100, now_ms);
            ip->cfg_done = c->warmup == CONFIG_WARMUP_DONE;
        }
        order[n++] = ip;
    }
    for (size_t j = 0; j < p->nips; j++) {
        if (kept[j]) continue;
        pools_ip *ip = p->ips[j];
        if (!ip->draining) {
            ip->draining = true;
            ip->drain_since_ms = now_ms;
            pools_diff_push(&diff->removed, &diff->nremoved, ip->address);
        }
        order[n++] = ip;
    }
    free(kept);
    free(p->ips);
    p->ips = order;
    p->nips = n;
    p->dirty = true;
}

static void pools_strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

void pools_diff_free(pools_diff *d)
{
    pools_strv_free(d->added, d->nadded);
    pools_strv_free(d->removed, d->nremoved);
    pools_strv_free(d->moved, d->nmoved);
    memset(d, 0, sizeof *d);
}

void pools_forget(pools *p, const char *address)
{
    for (size_t i = 0; i < p->nips; i++) {
        pools_ip *ip = p->ips[i];
        if (strcmp(ip->address, address) != 0) continue;
        if (!ip->draining) return;              /* leased again meanwhile: keep it */
        pools_ip_free(ip);
        memmove(&p->ips[i], &p->ips[i + 1], (p->nips - i - 1) * sizeof *p->ips);
        p->nips--;
        p->dirty = true;
        return;
    }
}

/* ------------------------------------------------------------ providers ---- */

static const struct {
    const char *suffix, *provider;
} builtin_providers[] = {
    {"google.com", "gmail"},     {"googlemail.com", "gmail"},
    {"outlook.com", "microsoft"}, {"hotmail.com", "microsoft"},
    {"yahoodns.net", "yahoo"},   {"yahoo.com", "yahoo"},
};

const char *pools_provider_of(const char *mx_host)
{
    if (!mx_host) return "other";
    size_t len = strlen(mx_host);
    if (len > 0 && mx_host[len - 1] == '.') len--;      /* absolute name */
    for (size_t i = 0; i < sizeof builtin_providers / sizeof builtin_providers[0]; i++) {
        const char *sfx = builtin_providers[i].suffix;
        size_t sl = strlen(sfx);
        if (len < sl || strncasecmp(mx_host + len - sl, sfx, sl) != 0) continue;
        if (len == sl || mx_host[len - sl - 1] == '.') return builtin_providers[i].provider;
    }
    return "other";
}

/* --------------------------------------------------------------- limits ---- */

/* Every cap that applies to a session from ip to provider at a time. */
typedef struct limit_view {
    const char *provider;        /* managed: the provider; NULL for standard pools */
    int64_t daily, hourly;       /* -1: none */
    int64_t sent_day, sent_hour;
    const warmup_window *win;    /* usage the caps are checked against (NULL: none yet) */
    int64_t blocked_until_ms;    /* managed: throttled until (0: not blocked) */
} limit_view;

static void pools_ip_limits(const pools *p, const pools_ip *ip, const char *provider, int64_t at_ms,
                      limit_view *v)
{
    memset(v, 0, sizeof *v);
    if (ip->managed) {
        const managed_cap *c = pools_find_cap(ip, provider);
        v->provider = pools_provider_name(provider);
        v->daily = c ? c->cap : p->warmup.first_day;
        v->win = c ? &c->usage : NULL;
        if (c && c->blocked_until_ms > at_ms) v->blocked_until_ms = c->blocked_until_ms;
    } else {
        v->daily = warmup_ramp_daily_cap(&ip->ramp, &p->warmup, at_ms);
        v->win = &ip->usage;
    }
    v->hourly = warmup_pacing_cap(&p->warmup, v->daily);
    if (v->win) warmup_window_sums(v->win, at_ms, &v->sent_day, &v->sent_hour);
}

/* Recipients that may still go; -1 = no cap. */
static int64_t pools_view_headroom(const limit_view *v)
{
    if (v->blocked_until_ms) return 0;
    int64_t h = -1;
    if (v->daily >= 0) h = v->daily > v->sent_day ? v->daily - v->sent_day : 0;
    if (v->hourly >= 0) {
        int64_t hh = v->hourly > v->sent_hour ? v->hourly - v->sent_hour : 0;
        if (h < 0 || hh < h) h = hh;
    }
    return h;
}

/* Earliest time an IP at cap has headroom again (nothing else sent meanwhile). */
static int64_t pools_view_free_at(const pools *p, const pools_ip *ip, const char *provider,
                            const limit_view *v, int64_t now_ms)
{
    int64_t t = now_ms;
    if (v->blocked_until_ms > t) t = v->blocked_until_ms;
    if (v->win && v->daily >= 0 && v->sent_day >= v->daily) {
        int64_t f = warmup_window_free_at(v->win, now_ms, false, v->daily - 1);
        if (f > t) t = f;
    }
    if (v->win && v->hourly >= 0 && v->sent_hour >= v->hourly) {
        int64_t f = warmup_window_free_at(v->win, now_ms, true, v->hourly - 1);
        if (f > t) t = f;
    }
    if (!ip->managed) {                         /* the next ramp day raises the caps */
        int64_t next = warmup_ramp_next_day_ms(&ip->ramp, &p->warmup, now_ms);
        if (next > now_ms && next < t) {
            limit_view later;
            pools_ip_limits(p, ip, provider, next, &later);
            if (pools_view_headroom(&later) != 0) t = next;
        }
    }
    return t;
}

int64_t pools_headroom(const pools *p, const pools_ip *ip, const char *provider, int64_t now_ms)
{
    limit_view v;
    pools_ip_limits(p, ip, provider, now_ms, &v);
    return pools_view_headroom(&v);
}

/* "127.0.0.13 warm-up 50/50 per 24h" for the cap that blocks. */
static void pools_describe_cap(const pools_ip *ip, const limit_view *v, int64_t now_ms, strbuf *sb)
{
    if (v->blocked_until_ms) {
        strbuf_printf(sb, "%s %s throttled, blocked %llds", ip->address, v->provider,
                      (long long)((v->blocked_until_ms - now_ms + 999) / 1000));
        return;
    }
    bool day = v->daily >= 0 && v->sent_day >= v->daily;
    const char *what = v->provider ? v->provider : "warm-up";
    if (day)
        strbuf_printf(sb, "%s %s %lld/%lld per 24h", ip->address, what,
                      (long long)v->sent_day, (long long)v->daily);
    else
        strbuf_printf(sb, "%s %s%spacing %lld/%lld per hour", ip->address,
                      v->provider ? v->provider : "", v->provider ? " " : "",
                      (long long)v->sent_hour, (long long)v->hourly);
}

/* --------------------------------------------------------------- choice ---- */

static void pools_set_reason(pools_choice *out, strbuf *sb)
{
    if (sb->len < sizeof out->reason) {
        memcpy(out->reason, sb->buf, sb->len + 1);
    } else {
        memcpy(out->reason, sb->buf, sizeof out->reason - 4);
        memcpy(out->reason + sizeof out->reason - 4, "...", 4);
    }
}

static int64_t pools_earliest(int64_t a, int64_t b)
{
    if (a <= 0) return b;
    if (b <= 0) return a;
    return a < b ? a : b;
}

void pools_choose(pools *p, const char *pool, const char *site, const char *provider,
                  const char *avoid_addr, const char *avoid_zone, int64_t now_ms,
                  pools_choice *out)
{
    (void)site;   /* the choice does not depend on the site (yet): health is per IP */
    memset(out, 0, sizeof *out);
    pools_ip **cand = util_calloc(p->nips, sizeof *cand);
    int64_t *weight = util_calloc(p->nips, sizeof *weight);
    int *tier = util_calloc(p->nips, sizeof *tier);
    size_t npool = 0, ncand = 0, ncap = 0, ndown = 0;
    int64_t retry_cap = 0, retry_down = 0;
    strbuf caps, downs;
    strbuf_init(&caps);
    strbuf_init(&downs);

    for (size_t i = 0; i < p->nips; i++) {
        pools_ip *ip = p->ips[i];
        if (strcmp(ip->pool, pool) != 0) continue;
        npool++;
        const char *down = NULL;
        pools_health hs = health_state(&ip->h, now_ms);
        if (ip->draining) {
            down = "draining";
        } else if (!pools_zone_is_up(p, ip->zone)) {
            down = ip->zone_reason;
        } else if (hs == POOLS_HEALTH_OPEN) {
            int64_t until = health_down_until(&ip->h);
            retry_down = pools_earliest(retry_down, until);
            ndown++;
            strbuf_printf(&downs, "%s%s %s, back in %llds", downs.len ? "; " : "", ip->address,
                          health_reason(&ip->h), (long long)((until - now_ms + 999) / 1000));
            continue;
        } else if (hs == POOLS_HEALTH_HALF_OPEN && ip->h.probing) {
            down = "probe session running after a failure";
        }
        if (down) {
            ndown++;
            strbuf_printf(&downs, "%s%s %s", downs.len ? "; " : "", ip->address, down);
            continue;
        }
        warmup_window_advance(&ip->usage, now_ms);      /* later reads at now are O(1) */
        managed_cap *mc = ip->managed ? pools_find_cap(ip, provider) : NULL;
        if (mc) warmup_window_advance(&mc->usage, now_ms);
        limit_view v;
        pools_ip_limits(p, ip, provider, now_ms, &v);
        int64_t h = pools_view_headroom(&v);
        if (h == 0) {
            ncap++;
            if (caps.len) strbuf_puts(&caps, ", ");
            pools_describe_cap(ip, &v, now_ms, &caps);
            retry_cap = pools_earliest(retry_cap, pools_view_free_at(p, ip, provider, &v, now_ms));
            continue;
        }
        bool other_addr = !avoid_addr || strcmp(ip->address, avoid_addr) != 0;
        bool other_zone = !avoid_zone || strcmp(ip->zone, avoid_zone) != 0;
        cand[ncand] = ip;
        weight[ncand] = h < 0 || h > UNLIMITED_WEIGHT ? UNLIMITED_WEIGHT : h;
        tier[ncand] = (other_addr && other_zone ? 0 : other_addr ? 1 : 2) +
                      (health_avoid(&ip->h, &p->opts, now_ms) ? 3 : 0);
        ncand++;
    }

    strbuf sb;
    strbuf_init(&sb);
    if (npool == 0) {
        out->verdict = POOLS_NO_IP;
        strbuf_printf(&sb, "pool %s has no IP", pool);
    } else if (ncand > 0) {
        int best_tier = 5;
        for (size_t i = 0; i < ncand; i++)
            if (tier[i] < best_tier) best_tier = tier[i];
        int64_t total = 0;
        pools_ip *best = NULL;
        int64_t best_w = 0;
        for (size_t i = 0; i < ncand; i++) {
            if (tier[i] != best_tier) continue;
            cand[i]->swrr += weight[i];
            total += weight[i];
            if (!best || cand[i]->swrr > best->swrr) {
                best = cand[i];
                best_w = weight[i];
            }
        }
        best->swrr -= total;
        out->verdict = POOLS_CHOSEN;
        out->ip = best;
        strbuf_printf(&sb, "%s in %s of pool %s", best->address, best->zone, pool);
        if (best_w >= UNLIMITED_WEIGHT) strbuf_puts(&sb, ", no cap");
        else strbuf_printf(&sb, ", headroom %lld", (long long)best_w);
        if (best->managed) strbuf_printf(&sb, " for %s", pools_provider_name(provider));
        if (health_state(&best->h, now_ms) == POOLS_HEALTH_HALF_OPEN)
            strbuf_puts(&sb, ", probe after cool-down");
        if (best_tier % 3 == 0 && avoid_zone) strbuf_printf(&sb, ", outside zone %s", avoid_zone);
        else if (best_tier % 3 == 1) strbuf_printf(&sb, ", no usable IP outside zone %s", avoid_zone);
        else if (best_tier % 3 == 2) strbuf_printf(&sb, ", the only usable IP");
        if (best_tier >= 3) strbuf_printf(&sb, ", degraded but no other IP usable");
    } else if (ncap > 0) {
        out->verdict = POOLS_ALL_AT_CAP;
        strbuf_printf(&sb, "all %sIPs of pool %s at cap (%s)", ndown ? "usable " : "", pool,
                      caps.buf);
        if (ndown) strbuf_printf(&sb, "; %zu down: %s", ndown, downs.buf);
        out->retry_at_ms = pools_earliest(retry_cap, retry_down);
    } else {
        out->verdict = POOLS_ALL_DOWN;
        strbuf_printf(&sb, "all IPs of pool %s unavailable: %s", pool, downs.buf);
        out->retry_at_ms = retry_down;
    }
    pools_set_reason(out, &sb);
    strbuf_free(&sb);
    strbuf_free(&caps);
    strbuf_free(&downs);
    free(cand);
    free(weight);
    free(tier);
}

/* ----------------------------------------------------------- accounting ---- */

void pools_record_send(pools *p, pools_ip *ip, const char *provider, unsigned n, int64_t now_ms)
{
    if (n == 0) return;
    warmup_window_add(&ip->usage, n, now_ms);
    if (ip->managed) {
        managed_cap *c = pools_get_cap(p, ip, provider, now_ms);
        warmup_window_add(&c->usage, n, now_ms);
        pools_daily_add(&c->hist, n, c->cap, now_ms);
        pools_daily_add(&ip->hist, n, -1, now_ms);
    } else {
        pools_daily_add(&ip->hist, n, warmup_ramp_daily_cap(&ip->ramp, &p->warmup, now_ms), now_ms);
        warmup_ramp_record(&ip->ramp, &p->warmup, n, now_ms);
    }
    p->dirty = true;
}

typedef struct peer_ctx {
    const pools *p;
    const pools_ip *self;
} peer_ctx;

static bool pools_peer_reached(void *ctx, const char *site, int64_t since_ms)
{
    const peer_ctx *c = ctx;
    for (size_t i = 0; i < c->p->nips; i++) {
        const pools_ip *o = c->p->ips[i];
        if (o == c->self || strcmp(o->pool, c->self->pool) != 0) continue;
        if (health_reached_since(&o->h, site, since_ms)) return true;
    }
    return false;
}

/* ip reached site: other IPs of its pool that failed there are degraded now. */
static void pools_peers_reached(pools *p, const pools_ip *ip, const char *site, int64_t now_ms)
{
    for (size_t i = 0; i < p->nips; i++) {
        pools_ip *o = p->ips[i];
        if (o == ip || o->h.nfailed == 0 || strcmp(o->pool, ip->pool) != 0) continue;
        if (!health_failed_at(&o->h, site)) continue;
        peer_ctx pc = {p, o};
        health_update_degraded(&o->h, &p->opts, now_ms, pools_peer_reached, &pc);
    }
}

static void pools_managed_throttled(pools *p, pools_ip *ip, const char *provider, int64_t now_ms)
{
    managed_cap *c = pools_get_cap(p, ip, provider, now_ms);
    if (now_ms < c->blocked_until_ms) return;   /* same episode: sessions already open */
    if (c->backoff_ms > 0 && now_ms < c->blocked_until_ms + c->backoff_ms) {
        c->backoff_ms *= 2;
        if (c->backoff_ms > MANAGED_BACKOFF_MAX_MS) c->backoff_ms = MANAGED_BACKOFF_MAX_MS;
    } else {
        c->backoff_ms = MANAGED_BACKOFF_MS;
    }
    c->blocked_until_ms = now_ms + c->backoff_ms;
    int64_t cap = c->cap / 2;
    if (cap < p->warmup.first_day) cap = p->warmup.first_day;
    c->cap = cap;
    p->dirty = true;
}

void pools_record_result(pools *p, pools_ip *ip, const char *site, const char *provider,
                         pools_result r, unsigned accepted, int64_t now_ms)
{
    switch (r) {
    case POOLS_RESULT_OK:
        health_ok(&ip->h, &p->opts, site, now_ms);
        pools_peers_reached(p, ip, site, now_ms);
        /* held by complaints (complaints.h): the ramp stays where it is */
        if (ip->managed && accepted > 0 && !pools_provider_held(p, ip->pool, provider, now_ms)) {
            managed_cap *c = pools_get_cap(p, ip, provider, now_ms);
            int64_t cap = c->cap + (int64_t)accepted;
            if (cap > p->warmup.target) cap = p->warmup.target;
            if (cap != c->cap) {
                c->cap = cap;
                p->dirty = true;
            }
        }
        break;
    case POOLS_RESULT_THROTTLED:
        health_ok(&ip->h, &p->opts, site, now_ms);   /* the IP reached the site */
        pools_peers_reached(p, ip, site, now_ms);
        if (ip->managed) pools_managed_throttled(p, ip, provider, now_ms);
        break;
    case POOLS_RESULT_BIND_FAILED:
        health_bind_failed(&ip->h, &p->opts, now_ms, "bind failed");
        break;
    case POOLS_RESULT_ADDRESS_REMOVED:
        health_bind_failed(&ip->h, &p->opts, now_ms, "address removed from the host");
        break;
    case POOLS_RESULT_CONNECT_FAILED:
    case POOLS_RESULT_CONNECT_TIMEOUT: {
        peer_ctx pc = {p, ip};
        health_connect_failed(&ip->h, &p->opts, site, now_ms, pools_peer_reached, &pc);
        if (r == POOLS_RESULT_CONNECT_TIMEOUT) health_note_timeout(&ip->h);
        health_update_degraded(&ip->h, &p->opts, now_ms, pools_peer_reached, &pc);
        break;
    }
    }
}

void pools_session_started(pools *p, pools_ip *ip)
{
    (void)p;
    ip->sessions++;
    health_session_started(&ip->h);      /* takes the probe slot of a half-open IP */
}

void pools_session_ended(pools *p, pools_ip *ip)
{
    (void)p;
    if (ip->sessions <= 0)
        util_fatal("pools: session ended on %s but none was open", ip->address);
    ip->sessions--;
    health_session_ended(&ip->h, ip->sessions);
}

/* ------------------------------------------------------- operator actions ---- */

int pools_set_warmup(pools *p, const char *address, int percent, int64_t now_ms, char **err)
{
    pools_ip *ip = pools_find_ip(p, address);
    if (!ip) {
        *err = util_asprintf("unknown dedicated IP %s (not in ips: of the config)", address);
        return -1;
    }
    if (ip->managed) {
        *err = util_asprintf("%s is in managed pool %s: its warm-up is automatic "
                             "(WarmupStatus NOT_APPLICABLE)", address, ip->pool);
        return -1;
    }
    if (percent < 0 || percent > 100) {
        *err = util_asprintf("warm-up percentage must be 0 to 100, not %d", percent);
        return -1;
    }
    warmup_ramp_start(&ip->ramp, percent, now_ms);
    p->dirty = true;
    return 0;
}

int pools_set_zone(pools *p, const char *zone, bool up, char **err)
{
    pools_zone *z = pools_find_zone(p, zone);
    if (!z) {
        strbuf sb;
        strbuf_init(&sb);
        strbuf_printf(&sb, "unknown zone '%s' (zones:", zone);
        for (size_t i = 0; i < p->nzones; i++)
            strbuf_printf(&sb, "%s %s", i ? "," : "", p->zones[i].name);
        strbuf_puts(&sb, p->nzones ? ")" : " none)");
        *err = strbuf_steal(&sb);
        return -1;
    }
    z->up = up;
    p->dirty = true;
    return 0;
}

/* ---------------------------------------------------------- reading state ---- */

size_t pools_count(const pools *p)
{
    return p->nips;
}

void pools_ip_info_of(const pools *p, const pools_ip *ip, int64_t now_ms, pools_ip_info *out)
{
    memset(out, 0, sizeof *out);
    out->address = ip->address;
    out->public_address = pools_ip_public(ip);
    out->pool = ip->pool;
    out->zone = ip->zone;
    out->ehlo = ip->ehlo;
    out->managed = ip->managed;
    if (ip->managed) {
        out->warmup_status = "NOT_APPLICABLE";
        out->warmup_percentage = -1;
        out->daily_cap = -1;
        out->hourly_cap = -1;
    } else {
        double pct = warmup_ramp_pct(&ip->ramp, &p->warmup, now_ms);
        bool done = pct >= 100;
        out->warmup_status = done ? "DONE" : "IN_PROGRESS";
        out->warmup_percentage = done ? 100 : (int)floor(pct);
        out->daily_cap = done ? -1 : warmup_cap(&p->warmup, pct);
        out->hourly_cap = warmup_pacing_cap(&p->warmup, out->daily_cap);
    }
    warmup_window_sums(&ip->usage, now_ms, &out->sent_24h, NULL);
    for (size_t i = 0; ip->managed && i < ip->ncaps && out->ncaps < POOLS_INFO_MAX_CAPS; i++) {
        const managed_cap *c = ip->caps[i];
        pools_cap_info *ci = &out->caps[out->ncaps++];
        ci->provider = c->provider;
        ci->daily_cap = c->cap;
        warmup_window_sums(&c->usage, now_ms, &ci->sent_24h, NULL);
        ci->blocked_until_ms = c->blocked_until_ms > now_ms ? c->blocked_until_ms : 0;
        ci->held = pools_provider_held(p, ip->pool, c->provider, now_ms);
    }
    out->health = health_state(&ip->h, now_ms);
    bool zone_up = pools_zone_is_up(p, ip->zone);
    if (ip->draining) out->state = POOLS_STATE_DRAINING;
    else if (out->health == POOLS_HEALTH_OPEN || !zone_up) out->state = POOLS_STATE_DOWN;
    else out->state = POOLS_STATE_ACTIVE;
    out->sessions = ip->sessions;
    out->draining_since_ms = ip->draining ? ip->drain_since_ms : 0;
    out->down_until_ms = out->health == POOLS_HEALTH_OPEN ? health_down_until(&ip->h) : 0;
    if (out->health == POOLS_HEALTH_OPEN) out->down_reason = health_reason(&ip->h);
    else if (!zone_up && !ip->draining) out->down_reason = ip->zone_reason;
    else out->down_reason = "";
    out->degraded = out->health == POOLS_HEALTH_CLOSED && ip->h.degraded;
    out->avoided = out->degraded && health_avoid(&ip->h, &p->opts, now_ms);
    out->degraded_reason = out->degraded ? ip->h.degraded_reason : "";
}

void pools_info(const pools *p, size_t i, int64_t now_ms, pools_ip_info *out)
{
    if (i >= p->nips) util_fatal("pools: info of IP #%zu but only %zu are known", i, p->nips);
    pools_ip_info_of(p, p->ips[i], now_ms, out);
}

int pools_info_by_address(const pools *p, const char *address, int64_t now_ms, pools_ip_info *out)
{
    const pools_ip *ip = pools_find_ip(p, address);
    if (!ip) return -1;
    pools_ip_info_of(p, ip, now_ms, out);
    return 0;
}

pools_ip *pools_find(const pools *p, const char *address)
{
    return pools_find_ip(p, address);
}

pools_ip *pools_find_any(const pools *p, const char *addr)
{
    if (!addr) return NULL;
    for (size_t i = 0; i < p->nips; i++)
        if (netaddr_equal(p->ips[i]->address, addr)) return p->ips[i];
    for (size_t i = 0; i < p->nips; i++)
        if (p->ips[i]->public_address && netaddr_equal(p->ips[i]->public_address, addr))
            return p->ips[i];
    return NULL;
}

const char *pools_ip_public(const pools_ip *ip)
{
    return ip->public_address ? ip->public_address : ip->address;
}

const char *pools_ip_address(const pools_ip *ip)
{
    return ip->address;
}

const char *pools_ip_zone(const pools_ip *ip)
{
    return ip->zone;
}

const char *pools_ip_ehlo(const pools_ip *ip)
{
    return ip->ehlo;
}

const char *pools_state_name(pools_ip_state s)
{
    switch (s) {
    case POOLS_STATE_ACTIVE: return "active";
    case POOLS_STATE_DRAINING: return "draining";
    case POOLS_STATE_DOWN: return "down";
    }
    return "unknown";
}

const char *pools_health_name(pools_health h)
{
    return health_name(h);
}

/* ------------------------------------------------------- warm-up arithmetic ---- */

int64_t pools_warmup_cap(const config_warmup *w, double pct)
{
    return warmup_cap(w, pct);
}

int64_t pools_pacing_cap(const config_warmup *w, int64_t daily_cap)
{
    return warmup_pacing_cap(w, daily_cap);
}

