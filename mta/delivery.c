/* delivery.c — the delivery executor's jobs (see delivery.h): the next hop of a job
 * (static route, or MX via mta/dns; hops refused by mta/hopcheck.c dropped), the choice of
 * a connection for it (delivery_pick.c: the source IP from pools_choose first, then an idle
 * session of that IP or a new one within warm-up headroom, shaping and the session limit;
 * the overflow pool when every IP is at its cap), its wait when none is free, and the
 * scheduler's executor ops.
 *
 * Promises: every job the scheduler starts ends its attempt through the scheduler's API
 * exactly once (scheduler/job.h), or waits for a connection (offered again at each pump
 * in serving order); nothing blocks; every decision is logged at debug level with its
 * reason (the same reasons kilnctl queue --explain shows). Route hosts that are not IP
 * literals are looked up like a domain (MX, then A/AAAA), as Postfix does for a transport
 * next hop without brackets; a failed lookup of a route host defers (a configuration
 * problem, not the recipient's). Sessions are delivery_session.c's.
 *
 * Shaping (scheduler/shaping.h): per (source IP, site) connection window with slow start,
 * messages per connection, message rate and throttling backoff. A site is the sorted set
 * of the domain's MX host names (the route host for routes). Before a new connection
 * shaping_may_connect, before each transaction shaping_take_message; an IP blocked by
 * shaping for a site makes the job try the pool's other IPs first, and a backoff on every
 * IP holds the job at its destination queue (the scheduler's) until it ends.
 *
 * Warm-up caps count recipients: a session is handed at most the chosen IP's headroom
 * minus the recipients already reserved on it (scheduler/ipstate.c); a job with more
 * recipients is split. When the pool has no usable IP (all down, zone down, none
 * configured) the recipients get a DeliveryDelay "IPFailure"; when every usable IP is at
 * its cap, the pool's overflow pool is tried (one hop), else a DeliveryDelay
 * "SendingDeferral". Both retry when the pools say a retry can succeed, at once when an
 * operator or a reload changes the pools, and never bounce before max_delivery_time. */
#include "mta/delivery.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "base/config.h"
#include "base/kiln.h"
#include "base/util.h"
#include "mta/delivery_int.h"
#include "mta/handoff.h"
#include "mta/idstate.h"
#include "mta/ipcheck.h"
#include "mta/outbound.h"
#include "mta/dns.h"
#include "mta/hopcheck.h"
#include "mta/smtp_client.h"
#include "mta/tls.h"
#include "pools/pools.h"
#include "scheduler/job.h"
#include "scheduler/retry.h"
#include "scheduler/shaping.h"
#include "store/spool.h"

int delivery_addr_family(const char *a)
{
    unsigned char buf[16];
    if (inet_pton(AF_INET, a, buf) == 1) return AF_INET;
    if (inet_pton(AF_INET6, a, buf) == 1) return AF_INET6;
    return 0;
}


/* A failure of this hop: remember it and try the next one. */
void delivery_next_hop(delivery *dl, sched_job *j, retry_failure f, const char *text)
{
    j->last_fail = f;
    sched_set_str(&j->last_error, text);
    j->hop_idx++;
    j->ip_tries = 0;
    j->no_tls = false;
    j->no_reuse = false;
    j->strict_avoid = false;
    free(j->avoid_ip);
    free(j->avoid_zone);
    j->avoid_ip = j->avoid_zone = NULL;
    delivery_job_connect(dl, j);
}

/* Reserves up to the IP's room for job j; a job with more recipients is split and the
 * rest goes back to the front of its set's ready queue (a job of its own). The job leaves
 * the waiting jobs: it has its connection. */
void delivery_job_take(delivery *dl, sched_job *j, pools_ip *ip, int64_t now)
{
    sched_job_unreserve(dl->s, j);
    sched_job_connected(dl->s, j);
    int64_t room = sched_ip_room(dl->s, ip, j->provider, now);
    if (room < 1) {
        char jt[SCHED_TEXT_LEN];
        util_fatal("delivery: job %s handed to %s without room",
                   sched_job_to_text(j, jt, sizeof jt), sched_ip_to_text(ip));
    }
    if ((int64_t)j->nrcpts > room) {
        sched_job *rest = sched_job_split(dl->s, j, (size_t)room);
        log_write(delivery_lg(dl), KLOG_DEBUG, "sched.pick",
                  "id=%s domain=%s ip=%s split=%zu+%zu reason=\"warm-up headroom of the IP\"",
                  log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain),
                  sched_ip_to_text(ip), j->nrcpts, rest->nrcpts);
        sched_job_why(rest, 0, "split from a job that took the warm-up headroom of %s",
                      sched_ip_to_text(ip));
    }
    j->res_ip = ip;
    j->res_n = (int64_t)j->nrcpts;
    sched_reserve(dl->s, ip, j->res_n);
}

/* Hands the job's message (its reserved recipients) to a ready session. */
void delivery_job_send(delivery *dl, sched_job *j, delivery_session *ss)
{
    ev_timer_stop(dl->ctx->loop, &ss->idle);
    sched_set_str(&j->last_src, ss->src);
    sched_set_str(&j->last_peer, ss->peer);
    free(j->addrs);
    j->addrs = util_calloc(j->nrcpts ? j->nrcpts : 1, sizeof *j->addrs);
    for (size_t i = 0; i < j->nrcpts; i++) j->addrs[i] = j->rcpts[i].address;
    smtp_client_msg m = {
        .id = j->msg_id,
        .mail_from = j->msg.mail_from,
        .rcpts = j->addrs,
        .nrcpts = j->nrcpts,
        .data = j->msg.data,
        .data_len = j->msg.data_len,
        .require_tls = delivery_hop_tls(j) >= DELIVERY_TLS_ENCRYPT,
    };
    smtp_client_status why = SMTP_CLIENT_OK;
    char *err = NULL;
    if (smtp_client_send(ss->c, &m, &why, &err) == 0) {
        ss->state = SESS_BUSY;
        ss->job = j;
        ss->nmsgs++;
        sched_job_why(j, 0, "in flight on session %s", delivery_session_to_text(ss));
        return;
    }
    /* refused before anything was sent: the session stays usable for others */
    sched_job_unreserve(dl->s, j);
    ss->job = NULL;
    ss->state = SESS_IDLE;
    log_write(delivery_lg(dl), KLOG_DEBUG, "sched.pick", "id=%s domain=%s session=%s result=refused reason=%s",
              log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain),
              log_q(delivery_lg(dl), delivery_session_to_text(ss)), log_q(delivery_lg(dl), err));
    if (why == SMTP_CLIENT_FAIL_TOO_BIG) {
        sched_job_fail_all(dl->s, j, RETRY_FAIL_TOO_BIG, err);
    } else {
        /* TLS required and this hop has none: maybe the next MX does */
        delivery_next_hop(dl, j, RETRY_FAIL_TLS_REQUIRED, err);
    }
    free(err);
    delivery_session_next(ss, false);
}

/* The job cannot get a connection now. A wait of DELIVERY_HOLD_MIN_MS or more on every IP
 * (throttling backoff) blocks the destination and holds the job there until it ends;
 * otherwise the job waits among the active jobs (for a slot, or a rate token: the wake
 * timer), unless SCHED_DEST_WAITING of its set already wait at the site: then it is held
 * and released when they get connections. Returns true if the job is still waiting. */
static bool delivery_job_wait(delivery *dl, sched_job *j, const sched_hop *h, const delivery_wait *w, int64_t now)
{
    sched_dest *d = sched_dest_get(dl->s, j->set, j->pool, j->site);
    if (!w->slot && w->until && w->until - now >= DELIVERY_HOLD_MIN_MS) {
        char *why = util_asprintf("shaping: site %s is backing off on every IP of pool %s (%s)",
                                  j->site, j->pool, w->time_why);
        sched_dest_block(dl->s, d, w->until, why, now);
        sched_job_why(j, w->until, "%s", why);
        log_write(delivery_lg(dl), KLOG_DEBUG, "sched.hold", "id=%s domain=%s set=%s site=%s until_ms=%lld reason=%s",
                  log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain), log_q(delivery_lg(dl), j->set->name),
                  log_q(delivery_lg(dl), sched_site_to_text(j->site)), (long long)(w->until - now), log_q(delivery_lg(dl), why));
        sched_job_hold(dl->s, j, d);
        free(why);
        return false;
    }
    char reason[SCHED_WHY_LEN + 16];
    if (w->slot) snprintf(reason, sizeof reason, "%s", w->slot_why);
    else snprintf(reason, sizeof reason, "shaping: %s", w->time_why);
    if (j->wdest != d && d->nwaiting >= SCHED_DEST_WAITING) {
        sched_job_why(j, 0, "queued behind %d jobs of set %s waiting for site %s (%s)", d->nwaiting,
                j->set->name, j->site, reason);
        if (delivery_debug(dl))
            log_write(delivery_lg(dl), KLOG_DEBUG, "sched.hold", "id=%s domain=%s set=%s site=%s reason=%s",
                      log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain), log_q(delivery_lg(dl), j->set->name),
                      log_q(delivery_lg(dl), sched_site_to_text(j->site)), log_q(delivery_lg(dl), sched_job_why_text(j)));
        sched_job_hold(dl->s, j, d);
        return false;
    }
    sched_job_unrelease(dl->s, j);
    sched_job_set_waiting(dl->s, j, d);
    j->wait_until_ms = !w->slot && w->until > now ? w->until : 0;
    if (w->until > now) sched_wake_at(dl->s, w->until);
    sched_job_why(j, w->slot ? 0 : w->until, "waiting: %s", reason);
    if (delivery_debug(dl))
        log_write(delivery_lg(dl), KLOG_DEBUG, "sched.pick", "id=%s domain=%s hop=%s:%d site=%s result=wait reason=%s",
                  log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain), h->addr, h->port,
                  log_q(delivery_lg(dl), sched_site_to_text(j->site)), log_q(delivery_lg(dl), reason));
    return true;
}

/* Finds or opens a connection for the job's current hop, parks it until one frees up, or
 * defers it when the pools have no IP for it. Returns true if the job is (still) waiting;
 * false when it went to a session, was held, settled or freed. */
bool delivery_job_connect(delivery *dl, sched_job *j)
{
    if (sched_stopping(dl->s)) {
        sched_job_release(dl->s, j);
        return false;
    }
    int64_t now = kiln_now_ms(dl->ctx);
    while (j->hop_idx < j->nhops) {
        const sched_hop *h = &j->hops[j->hop_idx];
        j->provider = pools_provider_of(h->name);
        pools_choice ch;
        memset(&ch, 0, sizeof ch);
        delivery_wait w;
        memset(&w, 0, sizeof w);
        delivery_pick r = delivery_connect_from(dl, j, j->pool, h, now, &ch, &w);
        if (r == PICK_POOLS && ch.verdict == POOLS_ALL_AT_CAP) {
            /* every usable IP at its cap: the overflow pool, one hop only */
            const config_pool *cp = config_find_pool(dl->ctx->cfg, j->pool);
            if (cp && cp->overflow && strcmp(cp->overflow, j->pool) != 0 &&
                config_find_pool(dl->ctx->cfg, cp->overflow)) {
                pools_choice och;
                memset(&och, 0, sizeof och);
                delivery_pick o = delivery_connect_from(dl, j, cp->overflow, h, now, &och, &w);
                if (o == PICK_CHOSEN) {
                    log_write(delivery_lg(dl), KLOG_DEBUG, "sched.pick",
                              "id=%s domain=%s pool=%s overflow=%s reason=%s",
                              log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain), j->pool,
                              cp->overflow, log_q(delivery_lg(dl), ch.reason));
                    return false;
                }
                if (o == PICK_WAIT) r = PICK_WAIT;
                else if (o == PICK_POOLS && och.retry_at_ms > 0 &&
                         (ch.retry_at_ms <= 0 || och.retry_at_ms < ch.retry_at_ms))
                    ch.retry_at_ms = och.retry_at_ms;
            }
        }
        switch (r) {
        case PICK_CHOSEN:
            return false;
        case PICK_WAIT:
            return delivery_job_wait(dl, j, h, &w, now);
        case PICK_FAMILY: {
            char *t = util_asprintf("no IP of pool %s can reach %s (address family)", j->pool,
                                    h->addr);
            j->hop_idx++;
            j->ip_tries = 0;
            j->strict_avoid = false;
            j->last_fail = RETRY_FAIL_CONNECT;
            sched_set_str(&j->last_error, t);
            free(t);
            continue;
        }
        case PICK_NO_OTHER:
            /* the IP that just failed is the only one: the next hop */
            j->hop_idx++;
            j->ip_tries = 0;
            j->strict_avoid = false;
            continue;
        case PICK_POOLS:
            break;
        }
        /* the pools have no IP for this job now: another node of the cluster may */
        if (handoff_take(dl->handoff, j, ch.reason[0] ? ch.reason : "no usable dedicated IP"))
            return false;
        const char *type = ch.verdict == POOLS_ALL_AT_CAP ? "SendingDeferral" : "IPFailure";
        int64_t at = ch.retry_at_ms;
        if (ch.verdict == POOLS_ALL_AT_CAP && at <= now) at = now + DELIVERY_CAP_RETRY_MS;
        if (ch.verdict != POOLS_ALL_AT_CAP && at <= now) at = 0;   /* the retry backoff */
        char *t = util_asprintf("%s", ch.reason[0] ? ch.reason : "no usable dedicated IP");
        log_write(delivery_lg(dl), KLOG_INFO, "sched.pick", "id=%s domain=%s pool=%s result=defer delay_type=%s reason=%s",
                  log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain), j->pool, type, log_q(delivery_lg(dl), t));
        sched_job_defer_pools(dl->s, j, type, t, at);
        free(t);
        return false;
    }
    /* every hop failed */
    sched_job_fail_all(dl->s, j, j->last_error ? j->last_fail : RETRY_FAIL_CONNECT,
                 j->last_error ? j->last_error : "no next hop");
    return false;
}

/* ------------------------------------------------------------------ starting a job */

void delivery_hops_add(sched_job *j, const char *name, const char *addr, int port, int tls,
                       const unsigned char *tlsa, size_t tlsa_len)
{
    if (j->nhops >= DELIVERY_MAX_HOPS) return;
    j->hops = util_realloc(j->hops, (j->nhops + 1) * sizeof *j->hops);
    sched_hop *h = &j->hops[j->nhops];
    memset(h, 0, sizeof *h);
    h->name = util_strdup(name);
    h->addr = util_strdup(addr);
    h->port = port;
    h->tls = tls;
    if (tlsa_len) {
        h->tlsa = util_malloc(tlsa_len);
        memcpy(h->tlsa, tlsa, tlsa_len);
        h->tlsa_len = tlsa_len;
    }
    j->nhops++;
}

/* The attempt's shaping site: the given host names (MX hosts, or the route host). */
void delivery_job_set_site(sched_job *j, char *const *hosts, size_t n)
{
    sched_free_strv(j->mx, j->nmx);
    j->mx = util_calloc(n ? n : 1, sizeof *j->mx);
    j->nmx = n;
    for (size_t i = 0; i < n; i++) j->mx[i] = util_strdup(hosts[i]);
    free(j->site);
    j->site = shaping_site_key(hosts, n);
}

static int delivery_job_port(const delivery *dl, const sched_job *j)
{
    const config_route *rt = config_find_route(dl->ctx->cfg, j->domain);
    return rt ? rt->port : dl->ctx->cfg->remote_port;
}

/* Next hops that mta/hopcheck.c refused for one attempt: kiln's own listener (a loop), or
 * DNS answers in private ranges or at kiln's own addresses. */
typedef struct delivery_refusals {
    char *loop;                 /* the first loop, as the diagnostic says it */
    strbuf priv;                /* "mx1.example.test 127.0.0.21 (loopback), ..." */
    size_t npriv;
} delivery_refusals;

#define DELIVERY_REFUSALS_NAMED 3   /* private hops named in the diagnostic */

static void delivery_refusals_free(delivery_refusals *rf)
{
    free(rf->loop);
    strbuf_free(&rf->priv);
}

/* True if the hop (name, addr, port) may be tried; else the refusal goes into rf. */
static bool delivery_hop_allowed(delivery *dl, const sched_job *j, const char *name,
                                 const char *addr, int port, bool from_dns, delivery_refusals *rf)
{
    char why[160];
    hopcheck_verdict v = hopcheck_next_hop(dl->ctx->cfg, addr, port, from_dns, why, sizeof why);
    if (v == HOPCHECK_OK) return true;
    log_write(delivery_lg(dl), KLOG_INFO, "delivery.hop_refused",
              "id=%s domain=%s host=%s addr=%s port=%d verdict=%s reason=%s%s",
              log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain),
              log_q(delivery_lg(dl), name), addr, port, v == HOPCHECK_LOOP ? "loop" : "private",
              log_q(delivery_lg(dl), why),
              v == HOPCHECK_PRIVATE ? " note=\"delivery.allow_private_mx: true allows it (labs, tests)\"" : "");
    if (v == HOPCHECK_LOOP) {
        if (!rf->loop)
            rf->loop = util_asprintf("554 5.4.6 mail loops back to myself: %s%s%s port %d is %s",
                                     strcmp(name, addr) != 0 ? name : "",
                                     strcmp(name, addr) != 0 ? " " : "", addr, port, why);
        return false;
    }
    if (rf->npriv < DELIVERY_REFUSALS_NAMED)
        strbuf_printf(&rf->priv, "%s%s %s (%s)", rf->npriv ? ", " : "", name, addr, why);
    else if (rf->npriv == DELIVERY_REFUSALS_NAMED)
        strbuf_puts(&rf->priv, ", ...");
    rf->npriv++;
    return false;
}

/* No hop of the attempt is left and hopcheck refused some: the job's recipients bounce
 * (a loop first: 5.4.6; else 5.4.4, "MX points to a private address"). True if it did. */
static bool delivery_refusals_bounce(delivery *dl, sched_job *j, const delivery_refusals *rf)
{
    if (rf->loop) {
        sched_job_fail_all(dl->s, j, RETRY_FAIL_LOOP, rf->loop);
        return true;
    }
    if (!rf->npriv) return false;
    char *t = util_asprintf("MX points to a private address: %s", rf->priv.buf);
    sched_job_fail_all(dl->s, j, RETRY_FAIL_PRIVATE_MX, t);
    free(t);
    return true;
}

void delivery_prep_free(delivery *dl, delivery_prep *p)
{
    if (p->prev) p->prev->next = p->next;
    else if (dl->preps == p) dl->preps = p->next;
    if (p->next) p->next->prev = p->prev;
    sts_policy_clear(&p->sts);
    delivery_tls_prep_clear(p);
    free(p);
}

static void delivery_on_resolved(void *arg, const dns_mx_result *res)
{
    delivery_prep *p = arg;
    delivery *dl = p->dl;
    sched_job *j = p->j;
    if (sched_stopping(dl->s)) {
        delivery_prep_free(dl, p);
        sched_job_release(dl->s, j);
        sched_check_stop(dl->s);
        return;
    }
    if (res->status == DNS_OK) {
        p->port = delivery_job_port(dl, j);
        /* the hops hopcheck allows, before TLS levels and TLSA lookups (delivery_tls.c) */
        delivery_refusals rf;
        memset(&rf, 0, sizeof rf);
        strbuf_init(&rf.priv);
        dns_mx_result ok = *res;
        ok.hosts = util_calloc(res->nhosts ? res->nhosts : 1, sizeof *ok.hosts);
        ok.nhosts = 0;
        char **addrs = NULL;
        size_t naddrs_all = 0;
        for (size_t h = 0; h < res->nhosts; h++) naddrs_all += res->hosts[h].naddrs;
        addrs = util_calloc(naddrs_all ? naddrs_all : 1, sizeof *addrs);
        size_t used = 0;
        for (size_t h = 0; h < res->nhosts; h++) {
            dns_mx_host mh = res->hosts[h];
            mh.addrs = addrs + used;
            mh.naddrs = 0;
            for (size_t a = 0; a < res->hosts[h].naddrs; a++)
                if (delivery_hop_allowed(dl, j, res->hosts[h].name, res->hosts[h].addrs[a], p->port,
                                         !j->via_route, &rf))
                    mh.addrs[mh.naddrs++] = res->hosts[h].addrs[a];
            used += mh.naddrs;
            if (mh.naddrs) ok.hosts[ok.nhosts++] = mh;
        }
        bool refused = ok.nhosts == 0 && delivery_refusals_bounce(dl, j, &rf);
        delivery_refusals_free(&rf);
        if (refused) {
            free(ok.hosts);
            free(addrs);
            delivery_prep_free(dl, p);
            return;
        }
        if (j->via_route) {
            const config_route *rt = config_find_route(dl->ctx->cfg, j->domain);
            char *host = rt ? rt->host : j->domain;
            delivery_job_set_site(j, &host, 1);
        } else {
            char **names = util_calloc(res->nhosts ? res->nhosts : 1, sizeof *names);
            for (size_t h = 0; h < res->nhosts; h++) names[h] = res->hosts[h].name;
            delivery_job_set_site(j, names, res->nhosts);
            free(names);
        }
        log_write(delivery_lg(dl), KLOG_DEBUG, "sched.pick", "id=%s domain=%s mx_hosts=%zu site=%s implicit=%d dnssec=%d",
                  log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain), res->nhosts,
                  log_q(delivery_lg(dl), sched_site_to_text(j->site)), res->implicit, res->secure);
        delivery_tls_hops(dl, p, &ok);   /* hops, then delivery_job_connect */
        free(ok.hosts);
        free(addrs);
        return;
    }
    delivery_prep_free(dl, p);
    const char *why = res->error ? res->error : "no usable answer";
    char *t = j->via_route
                  ? util_asprintf("DNS lookup of the route host for %s failed: %s", j->domain, why)
                  : util_asprintf("DNS lookup for %s failed: %s", j->domain, why);
    retry_failure f = RETRY_FAIL_DNS_TEMP;
    if (!j->via_route) {
        if (res->status == DNS_NXDOMAIN) f = RETRY_FAIL_DNS_NXDOMAIN;
        else if (res->status == DNS_NULLMX) f = RETRY_FAIL_DNS_NULLMX;
        else if (res->status == DNS_NOHOST) f = RETRY_FAIL_DNS_NOHOST;
    }
    sched_job_fail_all(dl->s, j, f, t);
    free(t);
}

static void delivery_on_sts(void *arg, const sts_policy *policy, const char *note)
{
    delivery_prep *p = arg;
    delivery *dl = p->dl;
    sched_job *j = p->j;
    if (sched_stopping(dl->s)) {
        delivery_prep_free(dl, p);
        sched_job_release(dl->s, j);
        sched_check_stop(dl->s);
        return;
    }
    if (policy) {
        sts_policy_copy(&p->sts, policy);
        p->have_sts = true;
    }
    log_write(delivery_lg(dl), KLOG_DEBUG, "sched.pick", "id=%s domain=%s mta_sts=%s note=%s",
              log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain),
              policy ? sts_mode_name(policy->mode) : "no-policy", log_q(delivery_lg(dl), note));
    dns_resolve_mx(dl->dns, j->domain, delivery_on_resolved, p);
}

/* The message as it leaves (mta/outbound.c): unsubscribe fields, custom MAIL FROM, DKIM
 * signatures, put in place of the spooled copy for this attempt. -1: the recipients got
 * their outcome (deferred or bounced) and the job is over. */
static int delivery_outbound(delivery *dl, sched_job *j, const config_set *set)
{
    kiln_ctx *ctx = dl->ctx;
    outbound_in in = {
        .cfg = ctx->cfg,
        .set = set,
        .msg_id = j->msg_id,
        .mail_from = j->msg.mail_from ? j->msg.mail_from : "",
        .rcpt = j->nrcpts == 1 ? j->rcpts[0].address : NULL,
        .data = j->msg.data,
        .data_len = j->msg.data_len,
        .keys = ctx->dkim,
        .mx_state = dl->identity ? idstate_mx_state_op : NULL,
        .mx_arg = dl->identity,
        .now_s = kiln_now_ms(ctx) / 1000,
    };
    outbound_out out;
    if (outbound_prepare(&in, &out) < 0) {
        retry_class rc;
        retry_classify_failure(out.fail, &rc);
        log_write(delivery_lg(dl), KLOG_INFO, "delivery.outbound", "id=%s domain=%s result=%s status=%s reason=%s",
                  log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain),
                  retry_verdict_name(rc.verdict), rc.status, log_q(delivery_lg(dl), out.why));
        sched_job_fail_all(dl->s, j, out.fail, out.why);
        outbound_out_free(&out);
        return -1;
    }
    if (out.signed_by || strcmp(out.mail_from, in.mail_from) != 0 || out.data_len != j->msg.data_len)
        log_write(delivery_lg(dl), KLOG_DEBUG, "delivery.outbound", "id=%s domain=%s mail_from=%s dkim=%s",
                  log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain),
                  log_q(delivery_lg(dl), out.mail_from), log_q(delivery_lg(dl), out.signed_by ? out.signed_by : "none"));
    free(j->msg.data);
    j->msg.data = out.data;
    j->msg.data_len = out.data_len;
    free(j->msg.mail_from);
    j->msg.mail_from = out.mail_from;
    out.data = NULL;
    out.mail_from = NULL;
    outbound_out_free(&out);
    return 0;
}

/* The scheduler's start op: the job is active with its message loaded. Its configuration
 * set decides the pool and TLS policy; the next hop is a route (an IP literal at once, a
 * host name looked up like a domain) or the domain's MX. */
static void delivery_job_start(delivery *dl, sched_job *j)
{
    kiln_ctx *ctx = dl->ctx;
    const config *cfg = ctx->cfg;
    const config_set *set = sched_set_config(cfg, j->msg.config_set);
    j->max_delivery_ms = set ? set->max_delivery_time_ms : 14LL * 3600 * 1000;
    if (!set) {
        char *t = util_asprintf("configuration set %s no longer exists and there is no default set",
                                j->msg.config_set);
        sched_job_fail_all(dl->s, j, RETRY_FAIL_INTERNAL, t);
        free(t);
        return;
    }
    sched_set_str(&j->pool, set->pool);
    if (delivery_outbound(dl, j, set) < 0) return;
    sched_job_why(j, 0, "resolving the next hop of %s", j->domain);

    const config_route *rt = config_find_route(cfg, j->domain);
    j->via_route = rt != NULL;
    const char *target = rt ? rt->host : j->domain;
    if (rt && delivery_addr_family(rt->host)) {
        delivery_refusals rf;
        memset(&rf, 0, sizeof rf);
        strbuf_init(&rf.priv);
        bool ok = delivery_hop_allowed(dl, j, rt->host, rt->host, rt->port, false, &rf);
        if (!ok) delivery_refusals_bounce(dl, j, &rf);
        delivery_refusals_free(&rf);
        if (!ok) return;
        delivery_hops_add(j, rt->host, rt->host, rt->port, delivery_tls_route_level(set), NULL, 0);
        char *host = rt->host;
        delivery_job_set_site(j, &host, 1);
        log_write(delivery_lg(dl), KLOG_DEBUG, "sched.pick", "id=%s domain=%s route=%s:%d site=%s",
                  log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain), rt->host, rt->port,
                  log_q(delivery_lg(dl), sched_site_to_text(j->site)));
        delivery_job_connect(dl, j);
        return;
    }
    if (!dl->dns) {
        char *t = util_asprintf("no DNS resolver: %s", dl->dns_error ? dl->dns_error : "not configured");
        sched_job_fail_all(dl->s, j, RETRY_FAIL_DNS_TEMP, t);
        free(t);
        return;
    }
    delivery_prep *p = util_calloc(1, sizeof *p);
    p->dl = dl;
    p->j = j;
    p->next = dl->preps;
    if (p->next) p->next->prev = p;
    dl->preps = p;
    if (set->tls_policy == CONFIG_TLS_MTA_STS && !rt && dl->sts) {
        /* the domain's MTA-STS policy first (RFC 8461 section 5), then its MX */
        mta_sts_get(dl->sts, ctx->cfg, j->domain, delivery_on_sts, p);
        return;
    }
    dns_resolve_mx(dl->dns, target, delivery_on_resolved, p);
}


static int delivery_cmp_waiting(const void *a, const void *b)
{
    const sched_job *x = *(sched_job *const *)a, *y = *(sched_job *const *)b;
    if (sched_job_before(x, y)) return -1;
    if (sched_job_before(y, x)) return 1;
    return 0;
}

/* What a waiting job needs, for skipping the others that need the same in one pump. */
typedef struct delivery_wait_key {
    const char *pool, *addr, *site;
    int port;
    int tls;
    bool no_reuse;
} delivery_wait_key;

static delivery_wait_key delivery_key_of(const sched_job *j)
{
    const sched_hop *h = &j->hops[j->hop_idx];
    return (delivery_wait_key){j->pool, h->addr, j->site, h->port, h->tls, j->no_reuse};
}

static bool delivery_key_eq(const delivery_wait_key *a, const delivery_wait_key *b)
{
    return a->port == b->port && a->tls == b->tls && a->no_reuse == b->no_reuse &&
           strcmp(a->pool, b->pool) == 0 && strcmp(a->addr, b->addr) == 0 &&
           strcmp(a->site, b->site) == 0;
}

/* The pump: waiting jobs first, in serving order: a slot or a token may have freed up.
 * One job that keeps waiting stands for the later ones that need the same pool, hop and
 * site. */
static void delivery_retry_waiting(void *arg)
{
    delivery *dl = arg;
    size_t nw = 0;
    sched_job **w = NULL;
    for (sched_job *j = sched_active_first(dl->s); j; j = j->anext)
        if (j->wdest && j->hop_idx < j->nhops) nw++;
    if (!nw) return;
    w = util_calloc(nw, sizeof *w);
    size_t k = 0;
    for (sched_job *j = sched_active_first(dl->s); j; j = j->anext)
        if (j->wdest && j->hop_idx < j->nhops) w[k++] = j;
    qsort(w, nw, sizeof *w, delivery_cmp_waiting);
    delivery_wait_key *still = util_calloc(nw, sizeof *still);
    size_t nstill = 0;
    for (size_t i = 0; i < nw; i++) {
        /* job_connect changes no job but w[i] (and may free it): the others stay valid */
        sched_job *j = w[i];
        delivery_wait_key key = delivery_key_of(j);
        bool same = false;
        for (size_t m = 0; m < nstill && !same; m++) same = delivery_key_eq(&still[m], &key);
        if (same) continue;
        if (delivery_job_connect(dl, j)) still[nstill++] = delivery_key_of(j);
    }
    free(still);
    free(w);
}

/* ------------------------------------------------------------------ executor ops */

static void delivery_start(void *arg, sched_job *j)
{
    delivery_job_start(arg, j);
}

/* dl->tls trusts delivery.tls_ca_file (or the system store): set at start, and again when a
 * reload names another file. A file that cannot be loaded keeps the previous trust. */
static void delivery_tls_trust(delivery *dl)
{
    const char *want = dl->ctx->cfg->tls_ca_file;
    if (!dl->tls) return;
    bool same = want ? dl->tls_ca_file && strcmp(want, dl->tls_ca_file) == 0 : !dl->tls_ca_file;
    if (same) return;
    char *err = NULL;
    if (tls_client_ctx_set_ca(dl->tls, want, &err) < 0) {
        log_write(delivery_lg(dl), KLOG_ERROR, "scheduler.tls", "error=%s note=\"previous CA certificates kept\"",
                  log_q(delivery_lg(dl), err));
        free(err);
        return;
    }
    free(dl->tls_ca_file);
    dl->tls_ca_file = want ? util_strdup(want) : NULL;
}

static void delivery_config_changed(void *arg)
{
    delivery *dl = arg;
    delivery_tls_trust(dl);
    if (!dl->dns) return;
    char *err = NULL;
    if (dns_reconfigure(dl->dns, dl->ctx->cfg, &err) != 0) {
        log_write(delivery_lg(dl), KLOG_ERROR, "scheduler.dns", "error=%s note=\"previous DNS settings kept\"",
                  log_q(delivery_lg(dl), err));
        free(err);
    }
}

static void delivery_pools_changed(void *arg)
{
    delivery_retire_unusable(arg);
}

static bool delivery_ip_in_use(void *arg, const char *addr)
{
    const delivery *dl = arg;
    for (const delivery_session *ss = dl->sessions; ss; ss = ss->next)
        if (strcmp(ss->src, addr) == 0) return true;
    return false;
}

static void delivery_stop(void *arg)
{
    delivery *dl = arg;
    for (delivery_session *ss = dl->sessions, *nx; ss; ss = nx) {
        nx = ss->next;
        if (ss->state == SESS_CONNECTING) {
            /* no transaction yet: drop the connection, the job stays queued */
            sched_job *j = ss->job;
            ss->job = NULL;
            delivery_session_unlink(dl, ss);
            delivery_session_free(ss);
            if (j) sched_job_release(dl->s, j);
        } else if (ss->state == SESS_IDLE) {
            delivery_session_quit(ss);
        }
        /* busy sessions QUIT after their transaction (delivery_session_next) */
    }
    handoff_stop(dl->handoff);
}

static int delivery_sessions(void *arg)
{
    const delivery *dl = arg;
    return dl->nsessions + handoff_open(dl->handoff);
}

static char *delivery_job_reason(void *arg, const sched_job *j)
{
    const delivery *dl = arg;
    for (const delivery_session *ss = dl->sessions; ss; ss = ss->next)
        if (ss->job == j)
            return util_asprintf("%s on session %s",
                                 ss->state == SESS_CONNECTING ? "connecting" : "in flight",
                                 delivery_session_to_text(ss));
    return NULL;
}

const scheduler_exec_ops delivery_exec_ops = {
    .start = delivery_start,
    .retry_waiting = delivery_retry_waiting,
    .config_changed = delivery_config_changed,
    .pools_changed = delivery_pools_changed,
    .ip_in_use = delivery_ip_in_use,
    .stop = delivery_stop,
    .sessions = delivery_sessions,
    .job_reason = delivery_job_reason,
};

delivery *delivery_new(kiln_ctx *ctx, scheduler *s)
{
    delivery *dl = util_calloc(1, sizeof *dl);
    dl->ctx = ctx;
    dl->s = s;
    dl->pools = scheduler_pools(s);
    dl->shaping = sched_shaping(s);
    dl->handoff = handoff_new(ctx, s);
    char *err = NULL;
    dl->dns = dns_new(ctx->loop, ctx->cfg, ctx->log, &err);
    if (!dl->dns) {
        log_write(ctx->log, KLOG_ERROR, "scheduler.dns",
                  "error=%s note=\"domains without a static route are deferred\"", log_q(ctx->log, err));
        dl->dns_error = err;
    }
    err = NULL;
    dl->tls = tls_client_ctx_new(false, &err);
    if (!dl->tls) {
        log_write(ctx->log, KLOG_WARNING, "scheduler.tls",
                  "error=%s note=\"outbound STARTTLS disabled\"", log_q(ctx->log, err));
        free(err);
    }
    delivery_tls_trust(dl);
    dl->http = ctx->curl;             /* kilnd's shared HTTP client (daemon.c) */
    if (dl->dns) dl->sts = mta_sts_new(ctx->loop, ctx->log, dl->dns, dl->http);
    if (dl->dns) dl->identity = idstate_new(ctx, dl->dns);
    if (dl->dns) dl->ipcheck = ipchecker_new(dl->dns);
    return dl;
}

struct idstate *delivery_identity(delivery *dl) { return dl->identity; }
struct ipchecker *delivery_ipcheck(delivery *dl) { return dl->ipcheck; }

void delivery_free(delivery *dl)
{
    if (!dl) return;
    handoff_free(dl->handoff);
    while (dl->sessions) {
        delivery_session *ss = dl->sessions;
        delivery_session_unlink(dl, ss);
        delivery_session_free(ss);
    }
    idstate_free(dl->identity);      /* answers its pending status requests, before dns_free */
    ipchecker_free(dl->ipcheck);     /* and so does kilnctl ip check */
    if (dl->dns) dns_free(dl->dns);   /* pending lookups are dropped without callbacks */
    mta_sts_free(dl->sts);            /* and so are pending policy fetches */
    while (dl->preps) delivery_prep_free(dl, dl->preps);   /* their waits go here */
    if (dl->tls) tls_ctx_free(dl->tls);
    free(dl->tls_ca_file);
    free(dl->dns_error);
    free(dl);
}
