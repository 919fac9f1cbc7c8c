/* dns.c — MX resolution for delivery (SPEC section 3) with c-ares 1.18 on the libev loop.
 *
 * One c-ares channel per dns object. c-ares tells us through its socket-state callback
 * which sockets to watch; each gets one ev_io, and one ev_timer is re-armed from
 * ares_timeout() after every call into c-ares. No threads, no blocking calls.
 *
 * A lookup of a domain: MX query; RFC 7505 null MX ("MX 0 .") is permanent; otherwise
 * the exchangers are ordered (dns_order_mx) and their A and AAAA records queried in
 * parallel; exchangers without addresses are dropped. NODATA on MX falls back to the
 * domain's own A/AAAA (implicit MX). NXDOMAIN is permanent; SERVFAIL, REFUSED, timeouts
 * and unreachable servers are temporary. What c-ares 1.18 reports: NXDOMAIN is
 * ARES_ENOTFOUND, NOERROR without answers is ARES_ENODATA, and a REFUSED answer from
 * the only server ends as ARES_ECONNREFUSED ("Could not contact DNS servers").
 *
 * Results are cached by lower-cased domain until the smallest TTL of the records used
 * (at least 5 s, at most 1 h); permanent failures for 60 s; temporary failures not at
 * all. Concurrent lookups of one domain share the queries. Every result, cached or
 * not, is delivered from a zero-delay timer on the loop, never from inside
 * dns_resolve_mx or from inside c-ares, so callbacks may start lookups or free the dns.
 *
 * The answers themselves (MX, A, AAAA, TTLs, the final result) are read by dns_answer.c,
 * which is pure and fuzzed; this file asks the questions and keeps the cache. c-ares 1.18's
 * ares_parse_mx_reply does not return TTLs, so mta/dns_wire.c walks the answer section.
 *
 * DNSSEC: kiln does not validate; it asks its resolver to (the AD bit set in every query,
 * RFC 6840 section 5.7, built with ares_create_query and sent with ares_send) and reports
 * whether each answer came back with AD, for DANE (RFC 7672 section 2.2). ares_send hands
 * back any response, so dns_send_cb maps the RCODE as ares_query would.
 *
 * dns_query serves single queries of any type through the same lookups (a key of its own
 * per name and type, shared, restarted, delivered from the loop), without a cache;
 * dns_query_cancel marks one waiter as delivered to nobody and lets the lookup run on.
 * dns_reverse_name spells the name a PTR query asks (kilnctl ip check); the answer is read
 * with c-ares' ares_parse_ptr_reply by the caller. */
#include "mta/dns.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ares.h>
#include <ev.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/dns_answer.h"
#include "mta/dns_table.h"
#include "mta/dns_wire.h"

#define DNS_TTL_MIN_S 5
#define DNS_TTL_MAX_S 3600
#define DNS_NEGATIVE_TTL_S 60
#define DNS_TRIES 2              /* attempts per server, each of dns.timeout */

typedef struct waiter {
    struct waiter *next;
    dns_mx_cb cb;
    dns_answer_cb acb;           /* dns_query */
    void *arg;
    bool cancelled;              /* dns_query_cancel: delivered to nobody */
} waiter;

typedef struct lookup {
    dns_hnode h;                     /* key: lower-case domain; in d->inflight while running */
    struct lookup *next;         /* d->ready list */
    dns *d;
    waiter *waiters, **wtail;
    dns_mx_result res;
    dns_addr_acc *acc;           /* one per res.hosts[i] */
    size_t pending;              /* c-ares queries not answered yet */
    char *tempfail;              /* first temporary failure text, if any */
    int64_t ttl_s;               /* smallest TTL seen; -1: none */
    int qtype;                   /* dns_query: its type (and qname its name); 0: MX lookup */
    char *qname;
    dns_answer ans;              /* dns_query's result (abuf owned) */
} lookup;

typedef struct qctx {            /* the arg of one ares_query */
    lookup *l;
    size_t host;                 /* index into l->res.hosts (address queries) */
    int type;                    /* ns_t_mx, ns_t_a, ns_t_aaaa */
} qctx;

typedef struct centry {
    dns_hnode h;
    dns_mx_result res;
    int64_t expires_ms;          /* util_mono_ms() clock */
} centry;

typedef struct sockw {
    struct sockw *next;
    ev_io io;
    dns *d;
} sockw;

struct dns {
    struct ev_loop *loop;
    klog *lg;
    ares_channel ch;
    bool have_ch;
    sockw *socks;
    ev_timer timer;              /* c-ares timeouts */
    ev_timer kick;               /* zero delay: delivers d->ready */
    dns_htable inflight;             /* lookup by domain */
    dns_htable cache;                /* centry by domain */
    size_t cache_sweep_at;
    lookup *ready, **ready_tail;
    lookup *dispatch;            /* being delivered by dns_kick_cb (head: the current one) */
    bool dispatching;
    bool freed;                  /* dns_free was called during dispatch */
    uint64_t rng;
};

/* ---------- results ---------- */

static const char *dns_status_name(dns_status s)
{
    switch (s) {
    case DNS_OK: return "ok";
    case DNS_TEMPFAIL: return "tempfail";
    case DNS_NXDOMAIN: return "nxdomain";
    case DNS_NULLMX: return "nullmx";
    case DNS_NOHOST: return "nohost";
    }
    return "?";
}

static void dns_res_copy(dns_mx_result *dst, const dns_mx_result *src)
{
    *dst = *src;
    dst->error = util_strdup(src->error);
    dst->hosts = src->nhosts ? util_calloc(src->nhosts, sizeof *dst->hosts) : NULL;
    for (size_t i = 0; i < src->nhosts; i++) {
        const dns_mx_host *s = &src->hosts[i];
        dns_mx_host *h = &dst->hosts[i];
        h->name = util_strdup(s->name);
        h->preference = s->preference;
        h->secure = s->secure;
        h->naddrs = s->naddrs;
        h->addrs = util_calloc(s->naddrs ? s->naddrs : 1, sizeof *h->addrs);
        for (size_t j = 0; j < s->naddrs; j++) h->addrs[j] = util_strdup(s->addrs[j]);
    }
}

static void dns_res_fail(dns_mx_result *r, dns_status st, char *error)
{
    dns_result_clear(r);
    r->status = st;
    r->error = error;
}

static uint32_t dns_rnd(void *arg)
{
    dns *d = arg;                /* xorshift64*, seeded from OpenSSL in dns_new */
    d->rng ^= d->rng >> 12;
    d->rng ^= d->rng << 25;
    d->rng ^= d->rng >> 27;
    return (uint32_t)((d->rng * 2685821657736338717ull) >> 32);
}

/* ---------- libev glue ---------- */

static void dns_rearm_timer(dns *d)
{
    ev_timer_stop(d->loop, &d->timer);
    if (!d->have_ch) return;
    struct timeval tv;
    if (!ares_timeout(d->ch, NULL, &tv)) return;
    double after = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    if (after < 0.001) after = 0.001;
    ev_timer_set(&d->timer, after, 0.);
    ev_timer_start(d->loop, &d->timer);
}

static void dns_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    sockw *s = w->data;
    dns *d = s->d;
    int fd = w->fd;              /* s may be freed by ares_process_fd */
    ares_process_fd(d->ch, (revents & EV_READ) ? fd : ARES_SOCKET_BAD,
                    (revents & EV_WRITE) ? fd : ARES_SOCKET_BAD);
    dns_rearm_timer(d);
}

static void dns_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    dns *d = w->data;
    ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    dns_rearm_timer(d);
}

static void dns_sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    dns *d = data;
    sockw **pp = &d->socks;
    while (*pp && (*pp)->io.fd != fd) pp = &(*pp)->next;
    sockw *s = *pp;
    if (!readable && !writable) {
        if (s) {
            ev_io_stop(d->loop, &s->io);
            *pp = s->next;
            free(s);
        }
        return;
    }
    int events = (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);
    if (!s) {
        s = util_calloc(1, sizeof *s);
        s->d = d;
        ev_io_init(&s->io, dns_io_cb, fd, events);
        s->io.data = s;
        s->next = d->socks;
        d->socks = s;
    } else {
        ev_io_stop(d->loop, &s->io);
        ev_io_set(&s->io, fd, events);
    }
    ev_io_start(d->loop, &s->io);
}

/* ---------- channel ---------- */

static int dns_make_channel(dns *d, const config *cfg, ares_channel *out, char **err)
{
    struct ares_addr_port_node *nodes = NULL;
    if (cfg->ndns_servers) nodes = util_calloc(cfg->ndns_servers, sizeof *nodes);
    for (size_t i = 0; i < cfg->ndns_servers; i++) {
        const config_hostport *hp = &cfg->dns_servers[i];
        struct ares_addr_port_node *n = &nodes[i];
        if (inet_pton(AF_INET, hp->host, &n->addr.addr4) == 1) {
            n->family = AF_INET;
        } else if (inet_pton(AF_INET6, hp->host, &n->addr.addr6) == 1) {
            n->family = AF_INET6;
        } else {
            *err = util_asprintf("dns.servers: %s is not an IPv4 or IPv6 address", hp->host);
            free(nodes);
            return -1;
        }
        if (hp->port <= 0 || hp->port > 65535) {
            *err = util_asprintf("dns.servers: bad port %d for %s", hp->port, hp->host);
            free(nodes);
            return -1;
        }
        n->udp_port = n->tcp_port = hp->port;
        n->next = i + 1 < cfg->ndns_servers ? &nodes[i + 1] : NULL;
    }
    struct ares_options o;
    memset(&o, 0, sizeof o);
    o.sock_state_cb = dns_sock_state_cb;
    o.sock_state_cb_data = d;
    int64_t t = cfg->dns_timeout_ms > 0 ? cfg->dns_timeout_ms : 2000;
    o.timeout = t > 600000 ? 600000 : (int)t;
    o.tries = DNS_TRIES;
    o.flags = ARES_FLAG_NOSEARCH;
    ares_channel ch;
    int rc = ares_init_options(&ch, &o, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS |
                                            ARES_OPT_TRIES | ARES_OPT_FLAGS);
    if (rc != ARES_SUCCESS) {
        *err = util_asprintf("cannot initialise the DNS resolver (c-ares): %s", ares_strerror(rc));
        free(nodes);
        return -1;
    }
    if (nodes) {
        rc = ares_set_servers_ports(ch, nodes);
        free(nodes);
        if (rc != ARES_SUCCESS) {
            *err = util_asprintf("dns.servers: c-ares refused the server list: %s", ares_strerror(rc));
            ares_destroy(ch);
            return -1;
        }
    }
    *out = ch;
    return 0;
}

/* ---------- lookups ---------- */

static void dns_query_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen);

/* ares_send's callback: the RCODE mapped as ares_query maps it (NXDOMAIN: ENOTFOUND,
 * NOERROR without answers: ENODATA, SERVFAIL, REFUSED...). */
static void dns_send_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    if (status == ARES_SUCCESS) {
        switch (dns_wire_rcode(abuf, alen)) {
        case ns_r_noerror: status = dns_wire_ancount(abuf, alen) > 0 ? ARES_SUCCESS : ARES_ENODATA; break;
        case ns_r_formerr: status = ARES_EFORMERR; break;
        case ns_r_servfail: status = ARES_ESERVFAIL; break;
        case ns_r_nxdomain: status = ARES_ENOTFOUND; break;
        case ns_r_notimpl: status = ARES_ENOTIMP; break;
        case ns_r_refused: status = ARES_EREFUSED; break;
        default: status = ARES_EBADRESP; break;
        }
    }
    dns_query_cb(arg, status, timeouts, abuf, alen);
}

static void dns_issue(lookup *l, const char *name, int type, size_t host)
{
    qctx *q = util_calloc(1, sizeof *q);
    q->l = l;
    q->type = type;
    q->host = host;
    l->pending++;
    unsigned char *qbuf = NULL;
    int qlen = 0;
    /* ares_send keeps the query's ID: a random one, as ares_query would choose */
    unsigned short id = 0;
    if (RAND_bytes((unsigned char *)&id, sizeof id) != 1) util_fatal("dns: RAND_bytes failed");
    int rc = ares_create_query(name, ns_c_in, type, id, 1, &qbuf, &qlen, 0);
    if (rc != ARES_SUCCESS) {
        dns_query_cb(q, rc, 0, NULL, 0);
        return;
    }
    qbuf[3] |= 0x20;             /* AD: "tell me whether you validated it" (RFC 6840) */
    ares_send(l->d->ch, qbuf, qlen, dns_send_cb, q);   /* may call back at once */
    ares_free_string(qbuf);
}

static void dns_kick(dns *d)
{
    if (!ev_is_active(&d->kick)) {
        ev_timer_set(&d->kick, 0., 0.);
        ev_timer_start(d->loop, &d->kick);
    }
}

static void dns_make_ready(dns *d, lookup *l)
{
    l->next = NULL;
    *d->ready_tail = l;
    d->ready_tail = &l->next;
    dns_kick(d);
}

static void dns_lookup_free(lookup *l)
{
    for (waiter *w = l->waiters, *next; w; w = next) {
        next = w->next;
        free(w);
    }
    dns_addr_acc_free(l->acc, l->res.nhosts);
    dns_result_clear(&l->res);
    free(l->tempfail);
    free(l->h.key);
    free(l->qname);
    free((void *)l->ans.abuf);
    free((char *)l->ans.error);
    free(l);
}

static void dns_log_result(dns *d, const char *domain, const dns_mx_result *r, int64_t ttl_s,
                           bool cached)
{
    if (!log_enabled(d->lg, KLOG_DEBUG)) return;
    strbuf sb;
    strbuf_init(&sb);
    for (size_t i = 0; i < r->nhosts; i++) {
        strbuf_printf(&sb, "%s%s/%d", i ? " " : "", r->hosts[i].name, r->hosts[i].preference);
        for (size_t j = 0; j < r->hosts[i].naddrs; j++)
            strbuf_printf(&sb, "%c%s", j ? ',' : '=', r->hosts[i].addrs[j]);
    }
    log_write(d->lg, KLOG_DEBUG, "dns.mx", "domain=%s status=%s implicit=%s cached=%s ttl=%lld hosts=%s error=%s",
              log_q(d->lg, domain), dns_status_name(r->status), r->implicit ? "yes" : "no",
              cached ? "yes" : "no", (long long)ttl_s, log_q(d->lg, sb.buf),
              log_q(d->lg, r->error ? r->error : ""));
    strbuf_free(&sb);
}

static void dns_cache_sweep(dns *d, int64_t now)
{
    for (size_t i = 0; i < d->cache.nb; i++) {
        for (dns_hnode **p = &d->cache.b[i]; *p;) {
            centry *c = (centry *)*p;
            if (c->expires_ms <= now) {
                *p = c->h.hnext;
                d->cache.n--;
                dns_result_clear(&c->res);
                free(c->h.key);
                free(c);
            } else {
                p = &(*p)->hnext;
            }
        }
    }
    d->cache_sweep_at = d->cache.n * 2 > 1024 ? d->cache.n * 2 : 1024;
}

static void dns_cache_put(dns *d, const char *key, const dns_mx_result *r, int64_t ttl_s)
{
    int64_t now = util_mono_ms();
    if (d->cache.n >= d->cache_sweep_at) dns_cache_sweep(d, now);
    centry *c = (centry *)dns_ht_find(&d->cache, key);
    if (c) {
        dns_result_clear(&c->res);
    } else {
        c = util_calloc(1, sizeof *c);
        c->h.key = util_strdup(key);
        dns_ht_insert(&d->cache, &c->h);
    }
    dns_res_copy(&c->res, r);
    c->expires_ms = now + ttl_s * 1000;
}

static void dns_cache_drop(dns *d)
{
    d->cache_sweep_at = 0;
    dns_cache_sweep(d, INT64_MAX);
}

/* All queries of l answered: build the final result, cache it, queue it for delivery. */
static void dns_finish(lookup *l)
{
    dns *d = l->d;
    dns_mx_result *r = &l->res;
    if (l->qtype) {              /* dns_query: no cache */
        dns_ht_remove(&d->inflight, &l->h);
        dns_make_ready(d, l);
        return;
    }
    dns_answer_finish(l->h.key, r, l->acc, l->tempfail);
    l->acc = NULL;
    int64_t ttl;
    if (r->status == DNS_OK) {
        ttl = l->ttl_s < DNS_TTL_MIN_S ? DNS_TTL_MIN_S : l->ttl_s > DNS_TTL_MAX_S ? DNS_TTL_MAX_S : l->ttl_s;
        dns_cache_put(d, l->h.key, r, ttl);
    } else if (r->status != DNS_TEMPFAIL) {
        ttl = DNS_NEGATIVE_TTL_S;
        dns_cache_put(d, l->h.key, r, ttl);
    } else {
        ttl = 0;
    }
    dns_log_result(d, l->h.key, r, ttl, false);
    dns_ht_remove(&d->inflight, &l->h);
    dns_make_ready(d, l);
}

static void dns_on_mx(lookup *l, int status, unsigned char *abuf, int alen)
{
    dns_mx_result *r = &l->res;
    dns_answer_mx(l->h.key, status, abuf, alen, dns_rnd, l->d, r, &l->ttl_s);
    if (r->status != DNS_OK) return;
    l->acc = util_calloc(r->nhosts, sizeof *l->acc);
    for (size_t i = 0; i < r->nhosts; i++) {
        if (!dns_answer_wants_addrs(r->hosts[i].name)) continue;
        dns_issue(l, r->hosts[i].name, ns_t_a, i);
        dns_issue(l, r->hosts[i].name, ns_t_aaaa, i);
    }
}

static void dns_on_addr(lookup *l, size_t host, int type, int status, unsigned char *abuf, int alen)
{
    dns_answer_addrs(l->h.key, l->res.hosts[host].name, type, status, abuf, alen, &l->acc[host],
                     &l->ttl_s, &l->tempfail);
}

/* dns_query's answer, kept (with its buffer) until delivered. */
static void dns_on_raw(lookup *l, int status, unsigned char *abuf, int alen)
{
    dns_answer *a = &l->ans;
    a->secure = dns_wire_ad(abuf, alen);
    if (status == ARES_SUCCESS) {
        unsigned char *copy = util_malloc((size_t)alen);
        memcpy(copy, abuf, (size_t)alen);
        a->abuf = copy;
        a->alen = alen;
        a->status = DNS_OK;
    } else if (status == ARES_ENOTFOUND || status == ARES_EBADNAME) {
        a->status = DNS_NXDOMAIN;
        a->error = util_asprintf("%s: does not exist (NXDOMAIN)", l->qname);
    } else if (status == ARES_ENODATA) {
        a->status = DNS_NOHOST;
        a->error = util_asprintf("%s: no records of type %d", l->qname, l->qtype);
    } else {
        a->status = DNS_TEMPFAIL;
        a->error = util_asprintf("%s: lookup of type %d failed: %s", l->qname, l->qtype,
                                 ares_strerror(status));
    }
}

static void dns_query_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    qctx *q = arg;
    lookup *l = q->l;
    if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
        free(q);                 /* dns_free / dns_reconfigure: the lookup is handled there */
        return;
    }
    if (l->qtype)
        dns_on_raw(l, status, abuf, alen);
    else if (q->type == ns_t_mx)
        dns_on_mx(l, status, abuf, alen);
    else
        dns_on_addr(l, q->host, q->type, status, abuf, alen);
    free(q);
    if (--l->pending == 0) dns_finish(l);
}

static void dns_lookup_start(lookup *l)
{
    l->ttl_s = -1;
    if (l->qtype) dns_issue(l, l->qname, l->qtype, 0);
    else dns_issue(l, l->h.key, ns_t_mx, 0);
}

/* Back to the state before any query (for a restart on a new channel). */
static void dns_lookup_reset(lookup *l)
{
    dns_addr_acc_free(l->acc, l->res.nhosts);
    l->acc = NULL;
    dns_result_clear(&l->res);
    free(l->tempfail);
    l->tempfail = NULL;
    l->pending = 0;
    free((void *)l->ans.abuf);
    free((char *)l->ans.error);
    memset(&l->ans, 0, sizeof l->ans);
}

/* ---------- delivery ---------- */

static void dns_destroy(dns *d);

static void dns_kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    dns *d = w->data;
    d->dispatch = d->ready;      /* in d, so that dns_query_cancel reaches it */
    d->ready = NULL;
    d->ready_tail = &d->ready;
    d->dispatching = true;
    while (d->dispatch) {
        lookup *l = d->dispatch;
        while (l->waiters && !d->freed) {
            waiter *wt = l->waiters;
            l->waiters = wt->next;
            if (!wt->cancelled) {
                if (wt->acb) wt->acb(wt->arg, &l->ans);
                else wt->cb(wt->arg, &l->res);
            }
            free(wt);
        }
        d->dispatch = l->next;
        dns_lookup_free(l);
    }
    d->dispatching = false;
    if (d->freed) dns_destroy(d);
}

/* Waiter w joins the running lookup of key (key is freed; NULL returned), or a new lookup
 * that owns key is returned for the caller to start. */
static lookup *dns_lookup_join(dns *d, char *key, waiter *w)
{
    lookup *l = (lookup *)dns_ht_find(&d->inflight, key);
    if (l) {                     /* share the running lookup */
        free(key);
        *l->wtail = w;
        l->wtail = &w->next;
        return NULL;
    }
    l = util_calloc(1, sizeof *l);
    l->d = d;
    l->h.key = key;
    l->waiters = w;
    l->wtail = &w->next;
    l->ttl_s = -1;
    return l;
}

void dns_resolve_mx(dns *d, const char *domain, dns_mx_cb cb, void *arg)
{
    char *key = util_strdup(domain ? domain : "");
    util_lowercase(key);
    size_t len = strlen(key);
    if (len > 0 && key[len - 1] == '.') key[len - 1] = '\0';

    waiter *w = util_calloc(1, sizeof *w);
    w->cb = cb;
    w->arg = arg;

    lookup *l = dns_lookup_join(d, key, w);
    if (!l) return;

    if (key[0] == '\0') {
        dns_res_fail(&l->res, DNS_NXDOMAIN, util_strdup("empty domain name"));
        dns_make_ready(d, l);
        return;
    }
    centry *c = (centry *)dns_ht_find(&d->cache, key);
    if (c && c->expires_ms <= util_mono_ms()) {
        dns_ht_remove(&d->cache, &c->h);
        dns_result_clear(&c->res);
        free(c->h.key);
        free(c);
        c = NULL;
    }
    if (c) {
        dns_res_copy(&l->res, &c->res);
        dns_order_mx(l->res.hosts, l->res.nhosts, dns_rnd, d);   /* spread over equal MX */
        dns_log_result(d, key, &l->res, (c->expires_ms - util_mono_ms()) / 1000, true);
        dns_make_ready(d, l);
        return;
    }
    dns_ht_insert(&d->inflight, &l->h);
    dns_lookup_start(l);
    dns_rearm_timer(d);
}

void dns_query(dns *d, const char *name, int type, dns_answer_cb cb, void *arg)
{
    char *qname = util_strdup(name ? name : "");
    util_lowercase(qname);
    waiter *w = util_calloc(1, sizeof *w);
    w->acb = cb;
    w->arg = arg;
    /* a newline never occurs in a domain kiln looks up: no clash with MX lookup keys */
    char *key = util_asprintf("%s\n%d", qname, type);
    lookup *l = dns_lookup_join(d, key, w);
    if (!l) {
        free(qname);
        return;
    }
    l->qtype = type;
    l->qname = qname;
    if (!qname[0]) {
        l->ans.status = DNS_NXDOMAIN;
        l->ans.error = util_strdup("empty domain name");
        dns_make_ready(d, l);
        return;
    }
    dns_ht_insert(&d->inflight, &l->h);
    dns_lookup_start(l);
    dns_rearm_timer(d);
}

static void dns_waiters_cancel(lookup *l, dns_answer_cb cb, void *arg)
{
    for (waiter *w = l->waiters; w; w = w->next)
        if (w->acb == cb && w->arg == arg) w->cancelled = true;
}

void dns_query_cancel(dns *d, const char *name, int type, dns_answer_cb cb, void *arg)
{
    char *qname = util_strdup(name ? name : "");
    util_lowercase(qname);
    char *key = util_asprintf("%s\n%d", qname, type);
    free(qname);
    lookup *l = (lookup *)dns_ht_find(&d->inflight, key);
    if (l) dns_waiters_cancel(l, cb, arg);
    for (l = d->ready; l; l = l->next)          /* answered, not delivered yet */
        if (strcmp(l->h.key, key) == 0) dns_waiters_cancel(l, cb, arg);
    for (l = d->dispatch; l; l = l->next)       /* being delivered now */
        if (strcmp(l->h.key, key) == 0) dns_waiters_cancel(l, cb, arg);
    free(key);
}

/* ---------- life cycle ---------- */

char *dns_reverse_name(const char *ip)
{
    unsigned char b[16];
    if (ip && inet_pton(AF_INET, ip, b) == 1)
        return util_asprintf("%u.%u.%u.%u.in-addr.arpa", b[3], b[2], b[1], b[0]);
    if (!ip || inet_pton(AF_INET6, ip, b) != 1) return NULL;
    static const char hex[] = "0123456789abcdef";
    char out[16 * 4 + sizeof "ip6.arpa"];
    size_t n = 0;
    for (int i = 15; i >= 0; i--) {   /* nibbles, least significant first (RFC 3596 2.5) */
        out[n++] = hex[b[i] & 0xf];
        out[n++] = '.';
        out[n++] = hex[b[i] >> 4];
        out[n++] = '.';
    }
    memcpy(out + n, "ip6.arpa", sizeof "ip6.arpa");
    return util_strdup(out);
}

dns *dns_new(struct ev_loop *loop, const config *cfg, klog *lg, char **err)
{
    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS) {
        *err = util_asprintf("cannot initialise c-ares: %s", ares_strerror(rc));
        return NULL;
    }
    dns *d = util_calloc(1, sizeof *d);
    d->loop = loop;
    d->lg = lg;
    if (dns_make_channel(d, cfg, &d->ch, err) < 0) {
        free(d);
        ares_library_cleanup();
        return NULL;
    }
    d->have_ch = true;
    ev_timer_init(&d->timer, dns_timer_cb, 0., 0.);
    d->timer.data = d;
    ev_timer_init(&d->kick, dns_kick_cb, 0., 0.);
    d->kick.data = d;
    dns_ht_init(&d->inflight);
    dns_ht_init(&d->cache);
    d->cache_sweep_at = 1024;
    d->ready_tail = &d->ready;
    char hex[17];
    util_random_hex(hex, 8);
    d->rng = strtoull(hex, NULL, 16) | 1;
    return d;
}

/* Ends every running lookup silently: c-ares calls its callbacks with ARES_EDESTRUCTION. */
static void dns_drop_channel(dns *d)
{
    if (!d->have_ch) return;
    d->have_ch = false;
    ares_destroy(d->ch);         /* closes sockets: dns_sock_state_cb stops their watchers */
    ev_timer_stop(d->loop, &d->timer);
}

static void dns_destroy(dns *d)
{
    dns_drop_channel(d);
    while (d->socks) {           /* c-ares closed them all; defensive against leaks */
        sockw *s = d->socks;
        d->socks = s->next;
        ev_io_stop(d->loop, &s->io);
        free(s);
    }
    ev_timer_stop(d->loop, &d->kick);
    for (size_t i = 0; i < d->inflight.nb; i++) {
        for (dns_hnode *n = d->inflight.b[i], *next; n; n = next) {
            next = n->hnext;
            dns_lookup_free((lookup *)n);
        }
    }
    free(d->inflight.b);
    for (lookup *l = d->ready, *next; l; l = next) {
        next = l->next;
        dns_lookup_free(l);
    }
    dns_cache_drop(d);
    free(d->cache.b);
    free(d);
    ares_library_cleanup();
}

void dns_free(dns *d)
{
    if (!d) return;
    if (d->dispatching) {        /* called from one of our callbacks: finish in dns_kick_cb */
        d->freed = true;
        dns_drop_channel(d);
        return;
    }
    dns_destroy(d);
}

int dns_reconfigure(dns *d, const config *cfg, char **err)
{
    ares_channel ch;
    if (dns_make_channel(d, cfg, &ch, err) < 0) return -1;
    dns_drop_channel(d);
    d->ch = ch;
    d->have_ch = true;
    dns_cache_drop(d);
    /* Restart the running lookups on the new servers; their waiters stay. The
     * inflight table is copied first: a restart can finish a lookup at once. */
    size_t n = 0;
    lookup **all = util_calloc(d->inflight.n ? d->inflight.n : 1, sizeof *all);
    for (size_t i = 0; i < d->inflight.nb; i++)
        for (dns_hnode *h = d->inflight.b[i]; h; h = h->hnext) all[n++] = (lookup *)h;
    for (size_t i = 0; i < n; i++) {
        dns_lookup_reset(all[i]);
        dns_lookup_start(all[i]);
    }
    free(all);
    dns_rearm_timer(d);
    log_write(d->lg, KLOG_DEBUG, "dns.reconfigure", "servers=%zu timeout_ms=%lld restarted=%zu",
              cfg->ndns_servers, (long long)cfg->dns_timeout_ms, n);
    return 0;
}
