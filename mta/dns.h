/* dns.h — MX resolution (and single queries) with c-ares 1.18, driven by the libev loop (socket-state callback
 * + one ev_io per socket + one timer; no threads, no blocking calls). Answers are cached
 * by TTL (negative answers briefly). Results per SPEC section 3: MX hosts ordered by
 * preference (random among equal preferences), each with its A/AAAA addresses; a domain
 * without MX falls back to its own A/AAAA; RFC 7505 null MX and NXDOMAIN are permanent;
 * SERVFAIL, REFUSED and timeouts are temporary. */
#ifndef KILN_DNS_H
#define KILN_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/config.h"
#include "base/log.h"

struct ev_loop;

typedef enum {
    DNS_OK = 0,          /* hosts[] has at least one host with at least one address */
    DNS_TEMPFAIL,        /* SERVFAIL, REFUSED, timeout, no usable server: retry later */
    DNS_NXDOMAIN,        /* the domain does not exist: permanent */
    DNS_NULLMX,          /* RFC 7505 "MX 0 .": the domain accepts no mail: permanent */
    DNS_NOHOST,          /* domain exists but no MX and no A/AAAA, or no MX host resolves: permanent */
} dns_status;

typedef struct dns_mx_host {
    char *name;          /* exchanger name (the domain itself for the A/AAAA fallback) */
    int preference;
    char **addrs;        /* textual IPv4/IPv6 addresses */
    size_t naddrs;
    bool secure;         /* its A and AAAA answers were DNSSEC-validated (AD bit) */
} dns_mx_host;

typedef struct dns_mx_result {
    dns_status status;
    const char *error;   /* human text for diagnostics when status != DNS_OK */
    bool implicit;       /* true: no MX record, A/AAAA fallback used */
    bool secure;         /* the MX answer (implicit: the proof there is none) was
                            DNSSEC-validated: the resolver set the AD bit (RFC 4035) */
    dns_mx_host *hosts;  /* in delivery order */
    size_t nhosts;
} dns_mx_result;

typedef struct dns dns;

/* servers: cfg->dns_servers (host:port each) or /etc/resolv.conf when none;
 * timeout: cfg->dns_timeout_ms. NULL and *err on failure. */
dns *dns_new(struct ev_loop *loop, const config *cfg, klog *lg, char **err);
/* Cancels pending lookups WITHOUT calling their callbacks, frees everything. */
void dns_free(dns *d);
/* Applies changed dns.servers / dns.timeout after a reload (cache is dropped). */
int dns_reconfigure(dns *d, const config *cfg, char **err);

/* The result is valid only during the callback (copy what you keep).
 * The callback never runs before dns_resolve_mx returns (cache hits are delivered from
 * the loop too), so callers need no re-entrancy care. */
typedef void (*dns_mx_cb)(void *arg, const dns_mx_result *res);
void dns_resolve_mx(dns *d, const char *domain, dns_mx_cb cb, void *arg);

/* One query of any type, for what dns_resolve_mx does not cover (TLSA, TXT, the address
 * of an MTA-STS policy host). status: DNS_OK (answer records present; abuf/alen is the
 * whole response), DNS_NXDOMAIN, DNS_NOHOST (the name exists without records of the type),
 * DNS_TEMPFAIL (error says why). secure: the response had the AD bit. Every query asks
 * for it (AD set in the query, RFC 6840 section 5.7); only a validating resolver sets it.
 * Delivered like dns_resolve_mx (from the loop, never inside dns_query; dropped by
 * dns_free; restarted by dns_reconfigure; concurrent equal queries shared); not cached. */
typedef struct dns_answer {
    dns_status status;
    bool secure;
    const unsigned char *abuf;
    int alen;
    const char *error;
} dns_answer;
typedef void (*dns_answer_cb)(void *arg, const dns_answer *a);
void dns_query(dns *d, const char *name, int type, dns_answer_cb cb, void *arg);
/* Takes back a dns_query(d, name, type, cb, arg) whose callback has not run: it never
 * will (the query itself goes on for others who share it). Safe from inside any dns
 * callback, including one of the same dispatch; a no-op when nothing matches. */
void dns_query_cancel(dns *d, const char *name, int type, dns_answer_cb cb, void *arg);

/* The name a PTR query (ns_t_ptr through dns_query) asks for an IP literal:
 * "4.3.2.1.in-addr.arpa" for 1.2.3.4 (RFC 1035 section 3.5), the 32 nibbles of an IPv6
 * address, least significant first, under "ip6.arpa" (RFC 3596 section 2.5). malloc'd;
 * NULL if ip is not an IPv4 or IPv6 literal. Pure. */
char *dns_reverse_name(const char *ip);

/* Pure ordering used by dns_resolve_mx, exported for unit tests: sorts hosts by
 * preference ascending; hosts of equal preference are shuffled with rnd(arg) (returns a
 * uniformly random uint32). */
void dns_order_mx(dns_mx_host *hosts, size_t n, uint32_t (*rnd)(void *arg), void *arg);

#endif
