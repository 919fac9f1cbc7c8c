/* delivery_session.c — the delivery executor's sessions (see delivery.h): open SMTP client
 * connections, each bound to a source IP of a pool and connected to one next hop
 * (address, port) of one site, and the smtp_client callbacks that turn their replies into
 * outcomes for the scheduler.
 *
 * Promises: an idle session is reused by the next job for the same hop and site whose
 * pool contains its IP, while that IP is active and has warm-up headroom, and only when the
 * pool's choice names its IP (delivery_pick.c; a session finishing a transaction hands a
 * waiting job to the IP the pool names when that IP can take it now); it QUITs after
 * DELIVERY_IDLE_MS, after the site's messages_per_connection, after its transaction when
 * its IP is draining or down, or to make room at the session limit (the idle one closest
 * to its timeout, as Postfix's connection cache does). Every session counts one
 * connection in shaping and in the pools while it lives, and records every result in
 * both. A connect failure, timeout or refused greeting tries one other IP (another zone
 * first) on the same hop, then the next MX address; a bind failure takes the IP down and
 * tries another IP of the pool (and so does a source address leaving the host, at once:
 * delivery_address_changed ends that IP's sessions); failed opportunistic TLS retries the hop in clear. kiln's
 * own lack of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM opening a connection) is no
 * result of anybody's: the job is deferred (InternalFailure), pools and shaping hear
 * nothing, and the episode is logged once when it begins and once when it ends. */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "base/config.h"
#include "base/kiln.h"
#include "base/metrics.h"
#include "base/timeline.h"
#include "base/util.h"
#include "mta/delivery_int.h"
#include "mta/dns_wire.h"
#include "mta/smtp_client.h"
#include "pools/pools.h"
#include "scheduler/job.h"
#include "scheduler/retry.h"
#include "scheduler/shaping.h"

/* A reply that says the site throttles this IP: 421, or a 4xx about rate, too many
 * connections or messages, throttling, slowing down, or reputation (SpamDetected). */
static bool delivery_reply_throttles(int code, const char *enhanced, const char *text)
{
    if (code == 421) return true;
    if (code < 400 || code >= 500) return false;
    retry_class c;
    retry_classify_reply(code, enhanced, text, &c);
    if (c.delay_type && strcmp(c.delay_type, "SpamDetected") == 0) return true;
    if (!text) return false;
    static const char *const phrases[] = {"too many connections", "too many messages",
                                          "too many concurrent", "too many sessions",
                                          "throttl", "slow down"};
    for (size_t i = 0; i < sizeof phrases / sizeof phrases[0]; i++)
        if (strcasestr(text, phrases[i])) return true;
    /* "rate" as a word ("rate limit", "sending rate exceeded"), not in "generate" */
    for (const char *p = text; (p = strcasestr(p, "rate")) != NULL; p += 4)
        if (p == text || !isalpha((unsigned char)p[-1])) return true;
    return false;
}


static void delivery_maybe_forget(delivery *dl, pools_ip *ip)
{
    pools_ip_info in;
    pools_ip_info_of(dl->pools, ip, kiln_now_ms(dl->ctx), &in);
    if (in.state != POOLS_STATE_DRAINING) return;
    for (const delivery_session *ss = dl->sessions; ss; ss = ss->next)
        if (ss->ip == ip) return;
    if (sched_ip_reserved(dl->s, ip)) return;   /* a job still holds recipients on it */
    char *addr = util_strdup(sched_ip_to_text(ip));
    sched_ip_forget_drained(dl->s, addr, "released; its last session closed");
    free(addr);
}


/* ------------------------------------------------------------------ sessions */

/* True when A and B are the same IP address however spelled. */
static bool delivery_same_address(const char *a, const char *b)
{
    unsigned char x[16], y[16];
    int fam = strchr(a, ':') ? AF_INET6 : AF_INET;
    if (fam != (strchr(b, ':') ? AF_INET6 : AF_INET)) return false;
    return inet_pton(fam, a, x) == 1 && inet_pton(fam, b, y) == 1 &&
           memcmp(x, y, fam == AF_INET ? 4 : 16) == 0;
}

void delivery_session_unlink(delivery *dl, delivery_session *ss)
{
    if (ss->evicted) dl->nevicting--;
    if (ss->prev) ss->prev->next = ss->next;
    else dl->sessions = ss->next;
    if (ss->next) ss->next->prev = ss->prev;
    ss->prev = ss->next = NULL;
    dl->nsessions--;
}

/* Frees an unlinked session; its IP and its shaping entry are told the connection ended,
 * and the IP is dropped from the pools if it was released and this was its last session. */
void delivery_session_free(delivery_session *ss)
{
    delivery *dl = ss->dl;
    ev_timer_stop(dl->ctx->loop, &ss->idle);
    if (ss->c) smtp_client_free(ss->c);
    if (ss->sd) shaping_connection_closed(ss->sd);
    pools_ip *ip = ss->ip;
    if (ss->started) pools_session_ended(dl->pools, ip);
    config_unref(ss->cfg);
    free(ss->src);
    free(ss->peer);
    free(ss->peer_name);
    free(ss->site);
    free(ss->tlsa);
    free(ss);
    if (ip) delivery_maybe_forget(dl, ip);
}

void delivery_session_quit(delivery_session *ss)
{
    ev_timer_stop(ss->dl->ctx->loop, &ss->idle);
    ss->state = SESS_QUITTING;
    smtp_client_quit(ss->c);
}

static void delivery_on_idle(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    delivery_session *ss = w->data;
    log_write(delivery_lg(ss->dl), KLOG_DEBUG, "sched.session", "session=%s action=quit reason=idle",
              log_q(delivery_lg(ss->dl), delivery_session_to_text(ss)));
    delivery_session_quit(ss);
}

/* At the session limit, connections kept idle for reuse give way to work that needs a new
 * connection (as Postfix's connection cache does): the idle session closest to its idle
 * timeout QUITs, and the waiting job is pumped when it has closed. At most
 * DELIVERY_EVICT_BATCH are QUITting for that at once, so one burst does not empty the cache. */
void delivery_evict_idle(delivery *dl)
{
    if (dl->nevicting >= DELIVERY_EVICT_BATCH) return;
    delivery_session *victim = NULL;
    double least = 0;
    for (delivery_session *ss = dl->sessions; ss; ss = ss->next) {
        if (ss->state != SESS_IDLE) continue;
        double left = ev_timer_remaining(dl->ctx->loop, &ss->idle);
        if (!victim || left < least) {
            victim = ss;
            least = left;
        }
    }
    if (!victim) return;
    victim->evicted = true;
    dl->nevicting++;
    log_write(delivery_lg(dl), KLOG_DEBUG, "sched.session", "session=%s action=quit reason=%s",
              log_q(delivery_lg(dl), delivery_session_to_text(victim)),
              log_q(delivery_lg(dl), "session limit reached: idle connection gives way to other work"));
    delivery_session_quit(victim);
}

/* Sessions whose IP is no longer active (released, circuit open, zone down) take no new
 * transaction: idle ones QUIT now, busy ones after their transaction. */
void delivery_retire_unusable(delivery *dl)
{
    int64_t now = kiln_now_ms(dl->ctx);
    for (delivery_session *ss = dl->sessions, *nx; ss; ss = nx) {
        nx = ss->next;
        if (ss->retire || ss->state == SESS_QUITTING || ss->state == SESS_DEAD) continue;
        if (sched_ip_usable(dl->s, ss->ip, now)) continue;
        ss->retire = true;
        log_write(delivery_lg(dl), KLOG_INFO, "sched.session", "session=%s action=retire state=%s reason=%s",
                  log_q(delivery_lg(dl), delivery_session_to_text(ss)),
                  ss->state == SESS_IDLE ? "idle" : ss->state == SESS_BUSY ? "busy" : "connecting",
                  log_q(delivery_lg(dl), "source IP draining or down: no new transaction"));
        if (ss->state == SESS_IDLE) delivery_session_quit(ss);
    }
}

/* pools_record_result, and the IP's passage into or out of rotation (its circuit opened,
 * or a probe closed it) on the timeline (base/timeline.h). */
static void delivery_record_result(delivery *dl, pools_ip *ip, const char *site,
                                   const char *provider, pools_result r, unsigned accepted,
                                   int64_t now)
{
    pools_ip_info before, after;
    pools_ip_info_of(dl->pools, ip, now, &before);
    pools_health was = before.health;
    pools_record_result(dl->pools, ip, site, provider, r, accepted, now);
    pools_ip_info_of(dl->pools, ip, now, &after);
    if (was != POOLS_HEALTH_OPEN && after.health == POOLS_HEALTH_OPEN)
        timeline_add(dl->ctx->timeline, now, "ip_failed", after.address, "IP %s (zone %s) out of rotation: %s",
                     after.address, after.zone, after.down_reason && *after.down_reason ? after.down_reason
                                                                                   : "circuit open");
    else if (was != POOLS_HEALTH_CLOSED && after.health == POOLS_HEALTH_CLOSED)
        timeline_add(dl->ctx->timeline, now, "ip_recovered", after.address, "IP %s (zone %s) recovered: back in rotation",
                     after.address, after.zone);
}

void delivery_address_changed(delivery *dl, const char *addr, bool removed)
{
    pools_ip *ip = pools_find_any(dl->pools, addr);
    if (!ip || !delivery_same_address(pools_ip_address(ip), addr)) return;  /* not bound here */
    if (!removed) {
        log_write(delivery_lg(dl), KLOG_INFO, "pools.ip_address_added", "ip=%s zone=%s",
                  pools_ip_address(ip), log_q(delivery_lg(dl), pools_ip_zone(ip)));
        return;     /* back in rotation by the probe after the cool-down */
    }
    int64_t now = kiln_now_ms(dl->ctx);
    delivery_record_result(dl, ip, NULL, NULL, POOLS_RESULT_ADDRESS_REMOVED, 0, now);
    int ended = 0;
    char *why = util_asprintf("source address %s was removed from the host", pools_ip_address(ip));
    for (delivery_session *ss = dl->sessions; ss; ss = ss->next) {
        if (ss->ip != ip || ss->state == SESS_DEAD) continue;
        ss->retire = true;
        smtp_client_abort(ss->c, why);      /* from the loop: the list is not changed here */
        ended++;
    }
    free(why);
    log_write(delivery_lg(dl), KLOG_WARNING, "pools.ip_failed", "ip=%s zone=%s result=address_removed sessions_ended=%d",
              pools_ip_address(ip), log_q(delivery_lg(dl), pools_ip_zone(ip)), ended);
    sched_pump_soon(dl->s);
}

/* True if the session's IP belongs to pool now. */
static bool delivery_session_in_pool(const delivery *dl, const delivery_session *ss, const char *pool,
                            int64_t now)
{
    pools_ip_info in;
    pools_ip_info_of(dl->pools, ss->ip, now, &in);
    return in.pool && strcmp(in.pool, pool) == 0;
}

/* The session can take job j (for hop h, from pool): same hop and site, messages left
 * under messages_per_connection, IP of the pool, active and with room for at least one
 * recipient, TLS when required. */
bool delivery_session_fits(const delivery *dl, const delivery_session *ss, const sched_job *j,
                         const char *pool, const sched_hop *h, int64_t now)
{
    return ss->port == h->port && strcmp(ss->peer, h->addr) == 0 && !ss->retire &&
           j->site && strcmp(ss->site, j->site) == 0 &&
           ss->nmsgs < shaping_messages_per_connection(ss->sd) &&
           j->hop_idx < j->nhops &&
           delivery_tls_session_fits(ss, smtp_client_tls_active(ss->c), &j->hops[j->hop_idx]) &&
           delivery_session_in_pool(dl, ss, pool, now) && sched_ip_usable(dl->s, ss->ip, now) &&
           sched_ip_room(dl->s, ss->ip, j->provider, now) >= 1;
}

static void delivery_on_client(void *arg, smtp_client *c, const smtp_client_event *ev);

delivery_session *delivery_session_open(delivery *dl, sched_job *j, pools_ip *ip, const sched_hop *h,
                                   shaping_dest *sd)
{
    const config *cfg = dl->ctx->cfg;
    delivery_session *ss = util_calloc(1, sizeof *ss);
    ss->dl = dl;
    ss->cfg = config_ref(dl->ctx->cfg);
    ss->ip = ip;
    ss->src = util_strdup(sched_ip_to_text(ip));
    ss->peer = util_strdup(h->addr);
    ss->port = h->port;
    ss->peer_name = util_strdup(h->name);
    ss->site = util_strdup(j->site);
    ss->tls_level = h->tls;
    if (h->tlsa_len) {
        ss->tlsa = util_malloc(h->tlsa_len);
        memcpy(ss->tlsa, h->tlsa, h->tlsa_len);
        ss->tlsa_len = h->tlsa_len;
    }
    ss->sd = sd;
    shaping_connection_opened(sd);
    ss->state = SESS_CONNECTING;
    ss->job = j;
    ev_timer_init(&ss->idle, delivery_on_idle, (double)DELIVERY_IDLE_MS / 1000.0, 0.0);
    ss->idle.data = ss;
    ss->next = dl->sessions;
    if (dl->sessions) dl->sessions->prev = ss;
    dl->sessions = ss;
    dl->nsessions++;
    pools_session_started(dl->pools, ip);
    ss->started = true;
    smtp_client_opts o;
    memset(&o, 0, sizeof o);
    o.source_ip = ss->src;
    o.peer_ip = h->addr;
    o.port = h->port;
    o.peer_name = h->name;
    o.ehlo_name = pools_ip_ehlo(ip) ? pools_ip_ehlo(ip) : cfg->hostname;
    o.self_name = cfg->hostname;
    o.tls = j->no_tls ? NULL : dl->tls;
    tls_auth auth;
    tls_tlsa tlsa[DNS_WIRE_TLSA_MAX];
    delivery_tls_auth_of(h, &auth, tlsa, DNS_WIRE_TLSA_MAX);
    o.auth = &auth;
    smtp_client_default_timeouts(&o.timeouts, cfg->connect_timeout_ms);
    ss->c = smtp_client_new(dl->ctx->loop, delivery_lg(dl), &o, delivery_on_client, ss);
    sched_job_why(j, 0, "connecting: %s", delivery_session_to_text(ss));
    return ss;
}

/* The session of ss->ip is free for waiting job j; the pool's choice comes first (issue 11
 * item 5: reuse must not skew it): when pools_choose names another IP and that IP can take
 * the job now (its own idle connection, or a new one), the job goes there and true is
 * returned. Else (this IP named, or the named one blocked) this session takes it. */
static bool delivery_session_defer_to_choice(delivery *dl, delivery_session *ss, sched_job *j,
                                             int64_t now)
{
    const sched_hop *h = &j->hops[j->hop_idx];
    pools_choice ch;
    pools_choose(dl->pools, j->pool, h->name, j->provider, j->avoid_ip, j->avoid_zone, now, &ch);
    if (ch.verdict != POOLS_CHOSEN || ch.ip == ss->ip) return false;
    const char *addr = sched_ip_to_text(ch.ip);
    if (delivery_addr_family(addr) != delivery_addr_family(h->addr)) return false;
    if (j->strict_avoid && j->avoid_ip && strcmp(addr, j->avoid_ip) == 0) return false;
    delivery_wait w;
    memset(&w, 0, sizeof w);
    return delivery_place(dl, j, j->pool, h, ch.ip, now, &w) == PLACE_DONE;
}

/* A session can take more work: the first waiting job for its hop and site (highest
 * priority, the set served least recently, the job waiting longest) when take_parked and
 * the (IP, site) has a rate token; else it idles (waiting jobs find it through the pump)
 * or QUITs (messages_per_connection reached, IP retired, site backing off). */
void delivery_session_next(delivery_session *ss, bool take_parked)
{
    delivery *dl = ss->dl;
    if (ss->state != SESS_IDLE || ss->job) return;
    int64_t now = kiln_now_ms(dl->ctx);
    if (!ss->retire && !sched_ip_usable(dl->s, ss->ip, now)) ss->retire = true;
    bool used_up = ss->nmsgs >= shaping_messages_per_connection(ss->sd);
    if (sched_stopping(dl->s) || ss->retire || used_up) {
        if (used_up && delivery_debug(dl))
            log_write(delivery_lg(dl), KLOG_DEBUG, "sched.session", "session=%s action=quit reason=%s",
                      log_q(delivery_lg(dl), delivery_session_to_text(ss)),
                      log_q(delivery_lg(dl), "messages_per_connection reached"));
        delivery_session_quit(ss);
        return;
    }
    sched_hop h = {.name = ss->peer_name, .addr = ss->peer, .port = ss->port};
    sched_job *best = NULL;
    for (sched_job *j = take_parked ? sched_active_first(dl->s) : NULL; j; j = j->anext) {
        if (!j->wdest || j->hop_idx >= j->nhops || j->no_reuse) continue;
        if (best && !sched_job_before(j, best)) continue;
        const sched_hop *jh = &j->hops[j->hop_idx];
        if (jh->port != h.port || strcmp(jh->addr, h.addr) != 0) continue;
        j->provider = pools_provider_of(jh->name);
        if (!delivery_session_fits(dl, ss, j, j->pool, &h, now)) continue;
        best = j;
    }
    if (best && delivery_session_defer_to_choice(dl, ss, best, now)) best = NULL;
    if (best) {
        char why[256];
        int64_t until = 0;
        shaping_verdict v = shaping_take_message(ss->sd, now, &until, why, sizeof why);
        if (v == SHAPING_OK) {
            log_write(delivery_lg(dl), KLOG_DEBUG, "sched.pick",
                      "id=%s domain=%s ip=%s hop=%s:%d set=%s priority=%d reason=\"reuse connection after its transaction\"",
                      log_q(delivery_lg(dl), best->msg_id), log_q(delivery_lg(dl), best->domain), ss->src, h.addr,
                      h.port, log_q(delivery_lg(dl), best->set->name), best->set->q.priority);
            delivery_job_take(dl, best, ss->ip, now);
            delivery_job_send(dl, best, ss);
            return;
        }
        if (v == SHAPING_WAIT_BACKOFF) {
            log_write(delivery_lg(dl), KLOG_DEBUG, "sched.session", "session=%s action=quit reason=%s",
                      log_q(delivery_lg(dl), delivery_session_to_text(ss)), log_q(delivery_lg(dl), why));
            delivery_session_quit(ss);
            sched_pump_soon(dl->s);
            return;
        }
        if (until > now) sched_wake_at(dl->s, until);
    }
    ev_timer_stop(dl->ctx->loop, &ss->idle);
    ev_timer_set(&ss->idle, (double)DELIVERY_IDLE_MS / 1000.0, 0.0);
    ev_timer_start(dl->ctx->loop, &ss->idle);
    sched_pump_soon(dl->s);
}

static retry_failure delivery_failure_of(smtp_client_status st)
{
    switch (st) {
    case SMTP_CLIENT_FAIL_BIND: return RETRY_FAIL_IP;
    case SMTP_CLIENT_FAIL_TLS: return RETRY_FAIL_TLS;
    case SMTP_CLIENT_FAIL_TLS_REQUIRED: return RETRY_FAIL_TLS_REQUIRED;
    case SMTP_CLIENT_FAIL_TOO_BIG: return RETRY_FAIL_TOO_BIG;
    case SMTP_CLIENT_FAIL_LOCAL: return RETRY_FAIL_INTERNAL;
    case SMTP_CLIENT_FAIL_LOOP: return RETRY_FAIL_LOOP;
    default: return RETRY_FAIL_CONNECT;
    }
}

/* A transaction ended with per-recipient results. */
static void delivery_on_done(delivery *dl, delivery_session *ss, sched_job *j, const smtp_client_event *ev)
{
    sched_job_unreserve(dl->s, j);
    int64_t now = kiln_now_ms(dl->ctx);
    if (ev->nothing_done) {
        const char *why = ev->nrcpts ? ev->rcpts[0].reply.line : "connection failed";
        if (ss->nmsgs > 1 && !j->no_reuse) {
            /* a reused connection died before the transaction began: once more, fresh
             * (servers close idle connections; not a failure of the site) */
            log_write(delivery_lg(dl), KLOG_DEBUG, "sched.pick",
                      "id=%s domain=%s result=retry reason=\"reused connection failed: %s\"",
                      log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain), why);
            j->no_reuse = true;
            delivery_job_connect(dl, j);
        } else {
            shaping_record(ss->sd, SHAPING_RESULT_FAILED, now);
            delivery_next_hop(dl, j, RETRY_FAIL_CONNECT, why);
        }
        return;
    }
    sched_outcome *out = util_calloc(j->nrcpts ? j->nrcpts : 1, sizeof *out);
    unsigned accepted = 0;
    bool throttled = false, lost = false;
    for (size_t i = 0; i < j->nrcpts && i < ev->nrcpts; i++) {
        const smtp_client_rcpt_result *r = &ev->rcpts[i];
        out[i].text = r->reply.line;
        if (r->status == SMTP_CLIENT_OK) {
            retry_classify_reply(r->reply.code, r->reply.enhanced, r->reply.text, &out[i].cls);
            out[i].remote = true;
            if (out[i].cls.verdict == RETRY_DELIVERED) accepted++;
            if (delivery_reply_throttles(r->reply.code, r->reply.enhanced, r->reply.text)) throttled = true;
        } else {
            retry_classify_failure(delivery_failure_of(r->status), &out[i].cls);
            lost = true;
        }
    }
    if (accepted) pools_record_send(dl->pools, ss->ip, j->provider, accepted, now);
    delivery_record_result(dl, ss->ip, ss->peer_name, j->provider,
                        throttled ? POOLS_RESULT_THROTTLED : POOLS_RESULT_OK, accepted, now);
    shaping_record(ss->sd, throttled ? SHAPING_RESULT_THROTTLED
                           : lost    ? SHAPING_RESULT_FAILED
                                     : SHAPING_RESULT_OK, now);
    if (throttled) metrics_add(dl->ctx->metrics, "kiln_shaping_backoffs_total", NULL, 1);
    if (throttled)
        log_write(delivery_lg(dl), KLOG_INFO, "shaping.throttled", "ip=%s site=%s provider=%s id=%s",
                  ss->src, log_q(delivery_lg(dl), sched_site_to_text(ss->site)), j->provider, log_q(delivery_lg(dl), j->msg_id));
    sched_settle(dl->s, j, out, ss->src, ss->peer);
    free(out);
    sched_job_done(dl->s, j);
}

/* After a connect failure: an IP the pools now call degraded is logged (once per run of
 * failures, when it becomes degraded). */
static void delivery_log_degraded(delivery *dl, pools_ip *ip, int64_t now)
{
    pools_ip_info in;
    pools_ip_info_of(dl->pools, ip, now, &in);
    if (!in.degraded) return;
    log_write(delivery_lg(dl), KLOG_WARNING, "pools.ip_degraded", "ip=%s zone=%s avoided=%d reason=%s",
              in.address, log_q(delivery_lg(dl), in.zone), in.avoided,
              log_q(delivery_lg(dl), in.degraded_reason));
}

/* After a failure from the session's IP: prefer another IP and another zone. */
static void delivery_job_avoid(sched_job *j, const delivery_session *ss)
{
    sched_set_str(&j->avoid_ip, ss->src);
    sched_set_str(&j->avoid_zone, pools_ip_zone(ss->ip));
}

/* kiln ran out of its own resources (file descriptors, socket buffers) opening a
 * connection: the job's recipients are deferred as InternalFailure; neither the source IP
 * (pools) nor the site (shaping) hears of it. Logged once per episode. */
static void delivery_local_failure(delivery *dl, sched_job *j, const char *err)
{
    if (!dl->local_failure) {
        dl->local_failure = true;
        dl->local_deferred = 0;
        log_write(delivery_lg(dl), KLOG_ERROR, "delivery.local_failure",
                  "result=begin error=%s note=%s", log_q(delivery_lg(dl), err),
                  log_q(delivery_lg(dl), "kiln is out of file descriptors or buffers: "
                                         "recipients are deferred (InternalFailure), no IP is blamed"));
    }
    dl->local_deferred++;
    dl->local_last_ms = kiln_now_ms(dl->ctx);
    sched_job_fail_all(dl->s, j, RETRY_FAIL_INTERNAL, err);
    delivery_evict_idle(dl);      /* an idle cached connection gives its descriptor back */
}

/* A connection opened: a local failure episode is over once failures have stopped for
 * DELIVERY_LOCAL_QUIET_MS (connections keep opening between failures under pressure). */
static void delivery_local_recovered(delivery *dl)
{
    if (!dl->local_failure) return;
    if (kiln_now_ms(dl->ctx) - dl->local_last_ms < DELIVERY_LOCAL_QUIET_MS) return;
    dl->local_failure = false;
    log_write(delivery_lg(dl), KLOG_WARNING, "delivery.local_failure", "result=end deferred_jobs=%u",
              dl->local_deferred);
}

/* The session ended; a job still attached never got its transaction started. */
static void delivery_on_closed(delivery *dl, delivery_session *ss, const smtp_client_event *ev)
{
    sched_job *j = ss->job;
    int64_t now = kiln_now_ms(dl->ctx);
    delivery_session_unlink(dl, ss);
    ss->job = NULL;
    if (j) {
        sched_job_unreserve(dl->s, j);
        const char *err = ev->error ? ev->error : "connection closed";
        sched_set_str(&j->last_src, ss->src);
        sched_set_str(&j->last_peer, ss->peer);
        log_write(delivery_lg(dl), KLOG_DEBUG, "sched.pick", "id=%s domain=%s session=%s failure=%s error=%s",
                  log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain),
                  log_q(delivery_lg(dl), delivery_session_to_text(ss)), smtp_client_status_name(ev->status),
                  log_q(delivery_lg(dl), err));
        bool throttled = ev->status == SMTP_CLIENT_FAIL_REJECTED && ev->reply &&
                         delivery_reply_throttles(ev->reply->code, ev->reply->enhanced, ev->reply->text);
        if (ev->status == SMTP_CLIENT_FAIL_BIND) {
            delivery_record_result(dl, ss->ip, ss->peer_name, j->provider,
                                POOLS_RESULT_BIND_FAILED, 0, now);
            log_write(delivery_lg(dl), KLOG_WARNING, "pools.ip_failed", "ip=%s zone=%s result=bind_failed error=%s",
                      ss->src, log_q(delivery_lg(dl), pools_ip_zone(ss->ip)), log_q(delivery_lg(dl), err));
        } else if (ev->status == SMTP_CLIENT_FAIL_CONNECT || ev->status == SMTP_CLIENT_FAIL_IO ||
                   (ev->status == SMTP_CLIENT_FAIL_REJECTED && !throttled)) {
            bool timeout = ev->status == SMTP_CLIENT_FAIL_CONNECT && ev->connect_timeout;
            delivery_record_result(dl, ss->ip, ss->peer_name, j->provider,
                                timeout ? POOLS_RESULT_CONNECT_TIMEOUT : POOLS_RESULT_CONNECT_FAILED,
                                0, now);
            shaping_record(ss->sd, SHAPING_RESULT_FAILED, now);
            delivery_log_degraded(dl, ss->ip, now);
        } else if (throttled) {
            delivery_record_result(dl, ss->ip, ss->peer_name, j->provider,
                                POOLS_RESULT_THROTTLED, 0, now);
            shaping_record(ss->sd, SHAPING_RESULT_THROTTLED, now);
            metrics_add(dl->ctx->metrics, "kiln_shaping_backoffs_total", NULL, 1);
            log_write(delivery_lg(dl), KLOG_INFO, "shaping.throttled", "ip=%s site=%s provider=%s id=%s reply=%s",
                      ss->src, log_q(delivery_lg(dl), sched_site_to_text(ss->site)), j->provider, log_q(delivery_lg(dl), j->msg_id),
                      log_q(delivery_lg(dl), err));
        }
        if (sched_stopping(dl->s)) {
            sched_job_release(dl->s, j);
        } else if (ev->status == SMTP_CLIENT_FAIL_LOCAL) {
            delivery_local_failure(dl, j, err);
        } else if (ev->status == SMTP_CLIENT_FAIL_LOOP) {
            /* the server is kiln itself: no other IP or MX changes that */
            log_write(delivery_lg(dl), KLOG_WARNING, "delivery.loop", "id=%s domain=%s session=%s error=%s",
                      log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain),
                      log_q(delivery_lg(dl), delivery_session_to_text(ss)), log_q(delivery_lg(dl), err));
            sched_job_fail_all(dl->s, j, RETRY_FAIL_LOOP, err);
        } else if (ev->status == SMTP_CLIENT_FAIL_BIND) {
            /* the source IP is unusable (now down): another IP of the pool, same hop */
            delivery_job_avoid(j, ss);
            j->last_fail = RETRY_FAIL_IP;
            sched_set_str(&j->last_error, err);
            if (++j->ip_tries <= pools_count(dl->pools)) delivery_job_connect(dl, j);
            else sched_job_fail_all(dl->s, j, RETRY_FAIL_IP, err);
        } else if (ev->status == SMTP_CLIENT_FAIL_TLS && delivery_hop_tls(j) == DELIVERY_TLS_MAY &&
                   !j->no_tls) {
            /* opportunistic TLS failed: the same hop once more, in clear */
            j->no_tls = true;
            j->no_reuse = true;
            j->last_fail = RETRY_FAIL_TLS;
            sched_set_str(&j->last_error, err);
            delivery_job_connect(dl, j);
        } else if (!throttled && ev->status != SMTP_CLIENT_FAIL_TLS &&
                   ++j->ip_tries < DELIVERY_CONNECT_IP_TRIES) {
            /* maybe this IP cannot reach the site: once more from another IP (another
             * zone first), then the next hop */
            delivery_job_avoid(j, ss);
            j->strict_avoid = true;
            j->last_fail = delivery_failure_of(ev->status);
            sched_set_str(&j->last_error, err);
            delivery_job_connect(dl, j);
        } else {
            delivery_next_hop(dl, j, delivery_failure_of(ev->status), err);
        }
    }
    delivery_session_free(ss);
    sched_pump_soon(dl->s);
    sched_check_stop(dl->s);
}

static void delivery_on_client(void *arg, smtp_client *c, const smtp_client_event *ev)
{
    (void)c;
    delivery_session *ss = arg;
    delivery *dl = ss->dl;
    switch (ev->type) {
    case SMTP_CLIENT_EV_READY:
        delivery_local_recovered(dl);
        ss->state = SESS_IDLE;
        if (ss->job) {
            sched_job *j = ss->job;
            ss->job = NULL;
            int64_t now = kiln_now_ms(dl->ctx);
            shaping_info si;
            shaping_get_info(ss->sd, now, &si);
            if (!sched_ip_usable(dl->s, ss->ip, now) || si.backoff_until_ms > now) {
                /* its IP went down or was released while connecting, or another session
                 * got the site's throttling reply meanwhile: no transaction here */
                if (!sched_ip_usable(dl->s, ss->ip, now)) ss->retire = true;
                log_write(delivery_lg(dl), KLOG_DEBUG, "sched.session", "session=%s action=quit id=%s reason=%s",
                          log_q(delivery_lg(dl), delivery_session_to_text(ss)), log_q(delivery_lg(dl), j->msg_id),
                          log_q(delivery_lg(dl), ss->retire ? "source IP draining or down"
                                                  : "the site is throttling this IP: backing off"));
                sched_job_unreserve(dl->s, j);
                delivery_session_quit(ss);
                delivery_job_connect(dl, j);
                break;
            }
            delivery_job_send(dl, j, ss);   /* its rate token was taken when the connection opened */
        } else {
            delivery_session_next(ss, true);
        }
        break;
    case SMTP_CLIENT_EV_DONE: {
        sched_job *j = ss->job;
        ss->job = NULL;
        ss->state = ev->usable ? SESS_IDLE : SESS_DEAD;
        if (j) delivery_on_done(dl, ss, j, ev);
        if (ss->state == SESS_IDLE) delivery_session_next(ss, true);
        break;
    }
    case SMTP_CLIENT_EV_CLOSED:
        delivery_on_closed(dl, ss, ev);
        break;
    }
}
