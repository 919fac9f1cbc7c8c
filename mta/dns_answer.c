/* dns_answer.c — kiln's reading of raw DNS answers for MX resolution (see dns_answer.h):
 * the MX, A and AAAA answers through c-ares' own parsers, RFC 7505 null MX, the implicit MX
 * of a domain without one, duplicate exchangers, the order of delivery (dns_order_mx), the
 * TTLs, whether each answer carried the AD bit (DANE), and the final result of a lookup.
 * Pure: no sockets, no loop, no clock. c-ares 1.18's ares_parse_mx_reply does not return
 * TTLs, so the MX records' TTL comes from mta/dns_wire.c's walker. */
#include "mta/dns_answer.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ares.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/dns_wire.h"

void dns_result_clear(dns_mx_result *r)
{
    for (size_t i = 0; i < r->nhosts; i++) {
        free(r->hosts[i].name);
        for (size_t j = 0; j < r->hosts[i].naddrs; j++) free(r->hosts[i].addrs[j]);
        free(r->hosts[i].addrs);
    }
    free(r->hosts);
    free((char *)r->error);
    memset(r, 0, sizeof *r);
}

static void dns_answer_fail(dns_mx_result *r, dns_status st, char *error)
{
    dns_result_clear(r);
    r->status = st;
    r->error = error;
}

/* ---------- ordering ---------- */

static int dns_answer_cmp_pref(const void *a, const void *b)
{
    const dns_mx_host *x = a, *y = b;
    return (x->preference > y->preference) - (x->preference < y->preference);
}

void dns_order_mx(dns_mx_host *hosts, size_t n, uint32_t (*rnd)(void *arg), void *arg)
{
    if (n < 2) return;
    qsort(hosts, n, sizeof *hosts, dns_answer_cmp_pref);
    for (size_t start = 0; start < n;) {
        size_t end = start + 1;
        while (end < n && hosts[end].preference == hosts[start].preference) end++;
        for (size_t i = end - start - 1; i > 0; i--) {   /* Fisher-Yates within the run */
            size_t j = rnd(arg) % (i + 1);
            dns_mx_host t = hosts[start + i];
            hosts[start + i] = hosts[start + j];
            hosts[start + j] = t;
        }
        start = end;
    }
}

/* ---------- TTLs ---------- */

void dns_answer_note_ttl(int64_t *ttl_s, int64_t ttl)
{
    if (ttl >= 0 && (*ttl_s < 0 || ttl < *ttl_s)) *ttl_s = ttl;
}

/* ---------- MX ---------- */

int dns_answer_wants_addrs(const char *name)
{
    return name[0] != '\0' && strcmp(name, ".") != 0;   /* "." among real MX: nothing to ask */
}

void dns_answer_mx(const char *domain, int status, const unsigned char *abuf, int alen,
                   uint32_t (*rnd)(void *arg), void *rnd_arg, dns_mx_result *r, int64_t *ttl_s)
{
    struct ares_mx_reply *mx = NULL;
    bool secure = dns_wire_ad(abuf, alen);   /* NODATA with AD: proven without MX */
    if (status == ARES_SUCCESS) {
        status = ares_parse_mx_reply(abuf, alen, &mx);
        if (status != ARES_SUCCESS && status != ARES_ENODATA) status = ARES_EBADRESP;
        /* An answer without MX records (only the CNAME of a domain whose target has no MX):
         * c-ares 1.18 reports success with an empty list, which RFC 5321 section 5.1 treats
         * as no MX at all: the implicit MX below. */
        if (status == ARES_SUCCESS && !mx) status = ARES_ENODATA;
    }
    if (status == ARES_ENOTFOUND) {
        dns_answer_fail(r, DNS_NXDOMAIN,
                        util_asprintf("%s: domain does not exist (NXDOMAIN)", domain));
        return;
    }
    if (status == ARES_EBADNAME) {
        dns_answer_fail(r, DNS_NXDOMAIN, util_asprintf("%s: not a valid domain name", domain));
        return;
    }
    if (status == ARES_ENODATA) {          /* no MX: the domain itself is the exchanger */
        r->status = DNS_OK;
        r->implicit = true;
        r->secure = secure;
        r->nhosts = 1;
        r->hosts = util_calloc(1, sizeof *r->hosts);
        r->hosts[0].name = util_strdup(domain);
        return;
    }
    if (status != ARES_SUCCESS) {
        dns_answer_fail(r, DNS_TEMPFAIL,
                        util_asprintf("%s: MX lookup failed: %s", domain, ares_strerror(status)));
        return;
    }
    size_t n = 0;
    for (struct ares_mx_reply *m = mx; m; m = m->next) n++;
    if (n == 1 && mx->priority == 0 && (mx->host[0] == '\0' || strcmp(mx->host, ".") == 0)) {
        ares_free_data(mx);
        dns_answer_fail(r, DNS_NULLMX,
                        util_asprintf("%s: domain accepts no mail (null MX, RFC 7505)", domain));
        return;
    }
    dns_answer_note_ttl(ttl_s, dns_wire_min_ttl(abuf, alen, ns_t_mx));
    r->status = DNS_OK;
    r->secure = secure;
    r->hosts = util_calloc(n, sizeof *r->hosts);
    for (struct ares_mx_reply *m = mx; m; m = m->next) {
        size_t i;
        for (i = 0; i < r->nhosts; i++)            /* the same exchanger twice: keep the best */
            if (util_streq_ci(r->hosts[i].name, m->host)) break;
        if (i < r->nhosts) {
            if (m->priority < r->hosts[i].preference) r->hosts[i].preference = m->priority;
            continue;
        }
        r->hosts[r->nhosts].name = util_strdup(m->host);
        util_lowercase(r->hosts[r->nhosts].name);
        r->hosts[r->nhosts].preference = m->priority;
        r->nhosts++;
    }
    ares_free_data(mx);
    dns_order_mx(r->hosts, r->nhosts, rnd, rnd_arg);
}

/* ---------- A / AAAA ---------- */

static int dns_answer_permanent_miss(int status)
{
    return status == ARES_ENODATA || status == ARES_ENOTFOUND;
}

void dns_answer_addrs(const char *domain, const char *host, int type, int status,
                      const unsigned char *abuf, int alen, dns_addr_acc *a, int64_t *ttl_s,
                      char **tempfail)
{
    if (!dns_wire_ad(abuf, alen)) a->insecure = true;   /* NODATA with AD stays secure */
    if (status == ARES_SUCCESS) {
        char text[INET6_ADDRSTRLEN];
        int n = DNS_MAX_ADDRS;
        if (type == ns_t_a) {
            struct ares_addrttl at[DNS_MAX_ADDRS];
            status = ares_parse_a_reply(abuf, alen, NULL, at, &n);
            if (status == ARES_SUCCESS) {
                a->v4 = util_realloc(a->v4, (a->n4 + (size_t)n) * sizeof *a->v4);
                for (int i = 0; i < n; i++) {
                    inet_ntop(AF_INET, &at[i].ipaddr, text, sizeof text);
                    a->v4[a->n4++] = util_strdup(text);
                    dns_answer_note_ttl(ttl_s, at[i].ttl);
                }
            }
        } else {
            struct ares_addr6ttl at[DNS_MAX_ADDRS];
            status = ares_parse_aaaa_reply(abuf, alen, NULL, at, &n);
            if (status == ARES_SUCCESS) {
                a->v6 = util_realloc(a->v6, (a->n6 + (size_t)n) * sizeof *a->v6);
                for (int i = 0; i < n; i++) {
                    inet_ntop(AF_INET6, &at[i].ip6addr, text, sizeof text);
                    a->v6[a->n6++] = util_strdup(text);
                    dns_answer_note_ttl(ttl_s, at[i].ttl);
                }
            }
        }
    }
    if (status != ARES_SUCCESS && !dns_answer_permanent_miss(status) && status != ARES_EBADNAME &&
        !*tempfail)
        *tempfail = util_asprintf("%s: %s lookup of %s failed: %s", domain,
                                  type == ns_t_a ? "A" : "AAAA", host, ares_strerror(status));
}

/* ---------- the result ---------- */

void dns_addr_acc_free(dns_addr_acc *acc, size_t n)
{
    if (!acc) return;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < acc[i].n4; j++) free(acc[i].v4[j]);
        for (size_t j = 0; j < acc[i].n6; j++) free(acc[i].v6[j]);
        free(acc[i].v4);
        free(acc[i].v6);
    }
    free(acc);
}

void dns_answer_finish(const char *domain, dns_mx_result *r, dns_addr_acc *acc,
                       const char *tempfail)
{
    if (r->status != DNS_OK) {
        dns_addr_acc_free(acc, r->nhosts);
        return;
    }
    size_t kept = 0;
    strbuf missing;
    strbuf_init(&missing);
    for (size_t i = 0; i < r->nhosts; i++) {
        dns_mx_host *h = &r->hosts[i];
        dns_addr_acc *a = &acc[i];
        if (a->n4 + a->n6 == 0) {
            strbuf_printf(&missing, "%s%s", missing.len ? ", " : "", h->name[0] ? h->name : ".");
            free(h->name);
            continue;
        }
        h->secure = !a->insecure;
        h->naddrs = a->n4 + a->n6;
        h->addrs = util_calloc(h->naddrs, sizeof *h->addrs);
        if (a->n4) memcpy(h->addrs, a->v4, a->n4 * sizeof *h->addrs);
        if (a->n6) memcpy(h->addrs + a->n4, a->v6, a->n6 * sizeof *h->addrs);
        a->n4 = a->n6 = 0;   /* moved */
        r->hosts[kept++] = *h;
    }
    dns_addr_acc_free(acc, r->nhosts);
    r->nhosts = kept;
    if (kept == 0) {
        if (tempfail)
            dns_answer_fail(r, DNS_TEMPFAIL, util_strdup(tempfail));
        else if (r->implicit)
            dns_answer_fail(r, DNS_NOHOST,
                            util_asprintf("%s: no MX and no A/AAAA records", domain));
        else
            dns_answer_fail(r, DNS_NOHOST,
                            util_asprintf("%s: no address for its MX hosts %s", domain,
                                          missing.buf));
    }
    strbuf_free(&missing);
}
