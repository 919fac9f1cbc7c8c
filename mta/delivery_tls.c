/* delivery_tls.c — the delivery executor's outbound TLS levels (README "Outbound TLS"):
 * from a configuration set's tls_policy and what DNS and MTA-STS say, the level each hop
 * needs (sched_hop.tls: may, encrypt, verify, dane), the proof a session asks of the
 * server (tls_auth for mta/tls.c), and which open session may serve which hop.
 *
 *   optional  may on every hop (STARTTLS when offered; clear when the handshake fails)
 *   require   encrypt on every hop (as SES's TlsPolicy Require)
 *   verify    verify on every hop: chain to delivery.tls_ca_file (or the system store),
 *             certificate for the MX host name (a static route: its host, or its address)
 *   dane      RFC 7672: when the MX answer and the host's address answers were
 *             DNSSEC-validated (AD), the TLSA records of _<port>._tcp.<host> are looked up;
 *             validated usable records: dane; validated records none of which is usable:
 *             encrypt (section 2.2); a failed TLSA lookup: the host is not used (its TLSA
 *             records may exist); anything else: may
 *   mta-sts   RFC 8461: a policy in enforce mode allows only the MX hosts it lists, each
 *             at verify; testing and none, or no policy: may (testing logs the MX hosts
 *             it would refuse)
 *
 * Promises: a hop at encrypt or above never carries a message in clear (smtp_client
 * refuses to send without TLS, and a failed handshake is not retried in clear); a job
 * whose every MX host is refused by the policy is deferred with the reason; a session
 * serves a hop only at the level it was opened for (a verified session is never the
 * unverified one of an optional set, and the reverse). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/util.h"
#include "mta/delivery_int.h"
#include "mta/dns_wire.h"
#include "scheduler/retry.h"

struct delivery_tls_host {
    delivery_prep *p;
    char *name;
    char **addrs;
    size_t naddrs;
    int tls;
    unsigned char *tlsa;        /* packed (delivery_tls_pack) */
    size_t tlsa_len;
    bool want_tlsa;             /* dane: its TLSA records are looked up */
    char *refused;              /* why this host is not used, or NULL */
    retry_failure refused_as;
};

int delivery_tls_route_level(const config_set *set)
{
    switch (set->tls_policy) {
    case CONFIG_TLS_REQUIRE: return DELIVERY_TLS_ENCRYPT;
    case CONFIG_TLS_VERIFY: return DELIVERY_TLS_VERIFY;   /* the certificate names the address */
    default: return DELIVERY_TLS_MAY;   /* dane: an address has no TLSA records; mta-sts:
                                           a route is not the domain's MX */
    }
}

/* ------------------------------------------------------------------ TLSA records */

/* Records as bytes for sched_hop.tlsa: per record usage, selector, mtype, length (2 bytes,
 * big-endian), data. */
static void delivery_tls_pack(strbuf *sb, const dns_wire_tlsa *r)
{
    unsigned char h[5] = {r->usage, r->selector, r->mtype, (unsigned char)(r->len >> 8),
                          (unsigned char)(r->len & 0xff)};
    strbuf_append(sb, h, sizeof h);
    strbuf_append(sb, r->data, r->len);
}

void delivery_tls_auth_of(const sched_hop *h, tls_auth *out, tls_tlsa *buf, size_t cap)
{
    memset(out, 0, sizeof *out);
    out->name = h->name;
    if (h->tls == DELIVERY_TLS_VERIFY) {
        out->mode = TLS_AUTH_VERIFY;
    } else if (h->tls == DELIVERY_TLS_DANE) {
        out->mode = TLS_AUTH_DANE;
        out->tlsa = buf;
        const unsigned char *p = h->tlsa, *end = h->tlsa + h->tlsa_len;
        while (p && end - p >= 5 && out->ntlsa < cap) {
            size_t len = (size_t)p[3] << 8 | p[4];
            if ((size_t)(end - p - 5) < len) break;
            buf[out->ntlsa++] = (tls_tlsa){p[0], p[1], p[2], (unsigned char *)p + 5, len};
            p += 5 + len;
        }
    }
}

bool delivery_tls_session_fits(const delivery_session *ss, bool tls_active, const sched_hop *h)
{
    if (h->tls == DELIVERY_TLS_MAY) return ss->tls_level == DELIVERY_TLS_MAY || tls_active;
    if (!tls_active) return false;
    if (h->tls == DELIVERY_TLS_ENCRYPT) return true;
    return ss->tls_level == h->tls && ss->tlsa_len == h->tlsa_len &&
           (h->tlsa_len == 0 || memcmp(ss->tlsa, h->tlsa, h->tlsa_len) == 0);
}

/* ------------------------------------------------------------------ hops */

void delivery_tls_prep_clear(delivery_prep *p)
{
    for (size_t i = 0; i < p->nhosts; i++) {
        delivery_tls_host *h = &p->hosts[i];
        free(h->name);
        for (size_t a = 0; a < h->naddrs; a++) free(h->addrs[a]);
        free(h->addrs);
        free(h->tlsa);
        free(h->refused);
    }
    free(p->hosts);
    p->hosts = NULL;
    p->nhosts = 0;
}

static void delivery_tls_refuse(delivery_tls_host *h, retry_failure as, char *why)
{
    free(h->refused);
    h->refused = why;
    h->refused_as = as;
}

/* Every host's level is known: the hops, in MX order, then the connection. */
static void delivery_tls_finish(delivery *dl, delivery_prep *p)
{
    sched_job *j = p->j;
    const char *refused = NULL;
    retry_failure refused_as = RETRY_FAIL_TLS;
    for (size_t i = 0; i < p->nhosts; i++) {
        delivery_tls_host *h = &p->hosts[i];
        if (h->refused) {
            log_write(delivery_lg(dl), KLOG_INFO, "delivery.tls", "id=%s domain=%s mx=%s result=skip reason=%s",
                      log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain),
                      log_q(delivery_lg(dl), h->name), log_q(delivery_lg(dl), h->refused));
            if (!refused) {
                refused = h->refused;
                refused_as = h->refused_as;
            }
            continue;
        }
        for (size_t a = 0; a < h->naddrs; a++)
            delivery_hops_add(j, h->name, h->addrs[a], p->port, h->tls, h->tlsa, h->tlsa_len);
        if (delivery_debug(dl))
            log_write(delivery_lg(dl), KLOG_DEBUG, "delivery.tls", "id=%s domain=%s mx=%s level=%d tlsa_bytes=%zu",
                      log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain),
                      log_q(delivery_lg(dl), h->name), h->tls, h->tlsa_len);
    }
    if (j->nhops == 0 && refused) {
        char *why = util_strdup(refused);
        delivery_prep_free(dl, p);
        sched_job_fail_all(dl->s, j, refused_as, why);
        free(why);
        return;
    }
    delivery_prep_free(dl, p);
    delivery_job_connect(dl, j);
}

static void delivery_tls_on_tlsa(void *arg, const dns_answer *a)
{
    delivery_tls_host *h = arg;
    delivery_prep *p = h->p;
    delivery *dl = p->dl;
    char qname[300];
    snprintf(qname, sizeof qname, "_%d._tcp.%s", p->port, h->name);
    if (a->status == DNS_OK && a->secure) {
        dns_wire_tlsa recs[DNS_WIRE_TLSA_MAX];
        int n = dns_wire_tlsa_records(a->abuf, a->alen, recs, DNS_WIRE_TLSA_MAX);
        strbuf sb;
        strbuf_init(&sb);
        for (int i = 0; i < n; i++) {
            tls_tlsa t = {recs[i].usage, recs[i].selector, recs[i].mtype, NULL, recs[i].len};
            if (tls_tlsa_usable(&t)) delivery_tls_pack(&sb, &recs[i]);
        }
        if (n < 0) {
            delivery_tls_refuse(h, RETRY_FAIL_DNS_TEMP,
                                util_asprintf("DANE: malformed TLSA answer for %s", qname));
        } else if (sb.len) {
            h->tls = DELIVERY_TLS_DANE;
            h->tlsa_len = sb.len;
            h->tlsa = (unsigned char *)strbuf_steal(&sb);
        } else {
            h->tls = DELIVERY_TLS_ENCRYPT;   /* RFC 7672 section 2.2: none usable */
        }
        strbuf_free(&sb);
    } else if (a->status == DNS_TEMPFAIL) {
        delivery_tls_refuse(h, RETRY_FAIL_DNS_TEMP,
                            util_asprintf("DANE: TLSA lookup failed: %s", a->error ? a->error : qname));
    }
    /* no records, or an answer without AD: opportunistic (may) */
    if (--p->pending == 0) delivery_tls_finish(dl, p);
}

void delivery_tls_hops(delivery *dl, delivery_prep *p, const dns_mx_result *res)
{
    sched_job *j = p->j;
    const config_set *set = sched_set_config(dl->ctx->cfg, j->msg.config_set);
    config_tls_policy pol = set ? set->tls_policy : CONFIG_TLS_OPTIONAL;
    p->hosts = util_calloc(res->nhosts ? res->nhosts : 1, sizeof *p->hosts);
    p->nhosts = res->nhosts;
    bool enforce = pol == CONFIG_TLS_MTA_STS && p->have_sts && p->sts.mode == STS_MODE_ENFORCE;
    bool testing = pol == CONFIG_TLS_MTA_STS && p->have_sts && p->sts.mode == STS_MODE_TESTING;
    size_t want_tlsa = 0;
    for (size_t i = 0; i < res->nhosts; i++) {
        const dns_mx_host *m = &res->hosts[i];
        delivery_tls_host *h = &p->hosts[i];
        h->p = p;
        h->name = util_strdup(m->name);
        h->naddrs = m->naddrs;
        h->addrs = util_calloc(m->naddrs ? m->naddrs : 1, sizeof *h->addrs);
        for (size_t a = 0; a < m->naddrs; a++) h->addrs[a] = util_strdup(m->addrs[a]);
        switch (pol) {
        case CONFIG_TLS_REQUIRE: h->tls = DELIVERY_TLS_ENCRYPT; break;
        case CONFIG_TLS_VERIFY: h->tls = DELIVERY_TLS_VERIFY; break;
        case CONFIG_TLS_DANE:
            h->tls = DELIVERY_TLS_MAY;
            h->want_tlsa = res->secure && m->secure && !j->via_route;
            if (h->want_tlsa) want_tlsa++;
            break;
        case CONFIG_TLS_MTA_STS:
            h->tls = enforce ? DELIVERY_TLS_VERIFY : DELIVERY_TLS_MAY;
            if ((enforce || testing) && !sts_policy_mx_allowed(&p->sts, m->name)) {
                char *why = util_asprintf("MTA-STS: the policy of %s (mode %s) does not list MX host %s",
                                          j->domain, sts_mode_name(p->sts.mode), m->name);
                if (enforce) {
                    delivery_tls_refuse(h, RETRY_FAIL_TLS, why);
                } else {
                    log_write(delivery_lg(dl), KLOG_INFO, "delivery.tls", "id=%s domain=%s mx=%s result=not-enforced reason=%s",
                              log_q(delivery_lg(dl), j->msg_id), log_q(delivery_lg(dl), j->domain),
                              log_q(delivery_lg(dl), m->name), log_q(delivery_lg(dl), why));
                    free(why);
                }
            }
            break;
        default: h->tls = DELIVERY_TLS_MAY; break;
        }
    }
    if (want_tlsa == 0) {
        delivery_tls_finish(dl, p);
        return;
    }
    p->pending = want_tlsa;
    for (size_t i = 0; i < res->nhosts; i++) {
        if (!p->hosts[i].want_tlsa) continue;
        char *q = util_asprintf("_%d._tcp.%s", p->port, p->hosts[i].name);
        dns_query(dl->dns, q, DNS_WIRE_TYPE_TLSA, delivery_tls_on_tlsa, &p->hosts[i]);
        free(q);
    }
}
