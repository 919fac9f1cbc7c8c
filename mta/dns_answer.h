/* dns_answer.h — kiln's reading of raw DNS answers for MX resolution (mta/dns.c asks the
 * questions on the loop; this reads what comes back): the MX answer through c-ares'
 * ares_parse_mx_reply (null MX, NODATA fallback, duplicates, ordering), the A and AAAA
 * answers through ares_parse_a_reply / ares_parse_aaaa_reply (textual addresses), the
 * smallest TTL of the records used, and the final result of a lookup once every answer is
 * in. Pure: no sockets, no loop, no clock; the DNS fuzz target drives it with raw bytes as
 * c-ares hands them to dns.c. r->secure and each host's secure say whether the answers they
 * rest on carried the AD bit (RFC 4035; mta/dns_wire.c reads it). */
#ifndef KILN_DNS_ANSWER_H
#define KILN_DNS_ANSWER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mta/dns.h"

#define DNS_MAX_ADDRS 32         /* addresses kept per exchanger and family */

/* The addresses of one exchanger while its A and AAAA queries run. */
typedef struct dns_addr_acc {
    char **v4, **v6;
    size_t n4, n6;
    bool insecure;               /* an answer without the AD bit (or none at all) */
} dns_addr_acc;

/* Frees r's hosts, addresses and error and zeroes it. */
void dns_result_clear(dns_mx_result *r);

/* *ttl_s = the smaller of *ttl_s and ttl (a -1 on either side means none). */
void dns_answer_note_ttl(int64_t *ttl_s, int64_t ttl);

/* Reads the answer to the MX query of DOMAIN (lower-case, no final dot). status is what
 * c-ares reported for the query; abuf/alen are read only when it is ARES_SUCCESS. r (zeroed
 * by the caller) becomes either final (DNS_NXDOMAIN, DNS_NULLMX, DNS_TEMPFAIL, with error)
 * or DNS_OK with the exchangers to resolve, in delivery order (rnd shuffles equal
 * preferences), without addresses yet: the domain itself when it has no MX (implicit), else
 * each distinct MX host lower-cased (a host named "" or "." is kept but has nothing to
 * resolve: dns_answer_wants_addrs). *ttl_s takes the MX records' smallest TTL. */
void dns_answer_mx(const char *domain, int status, const unsigned char *abuf, int alen,
                   uint32_t (*rnd)(void *arg), void *rnd_arg, dns_mx_result *r, int64_t *ttl_s);
/* Whether exchanger NAME gets A and AAAA queries. */
int dns_answer_wants_addrs(const char *name);

/* Reads the answer to the A (type ns_t_a) or AAAA (ns_t_aaaa) query of exchanger HOST of
 * DOMAIN into a (at most DNS_MAX_ADDRS per family), noting TTLs in *ttl_s. A temporary
 * failure (anything but an answer, NODATA, NXDOMAIN or a bad name) sets *tempfail (a
 * malloc'd text) unless one is set already. */
void dns_answer_addrs(const char *domain, const char *host, int type, int status,
                      const unsigned char *abuf, int alen, dns_addr_acc *a, int64_t *ttl_s,
                      char **tempfail);

/* Every answer is in: r (DNS_OK from dns_answer_mx) keeps the exchangers that got addresses
 * (IPv4 first), moved out of acc (one per host of r); with none left it becomes DNS_TEMPFAIL
 * (tempfail, if any answer failed so) or DNS_NOHOST. Frees acc. A final r is left as it is
 * (acc, if any, is still freed). */
void dns_answer_finish(const char *domain, dns_mx_result *r, dns_addr_acc *acc,
                       const char *tempfail);
/* Frees acc (n of them) with the addresses still in it. */
void dns_addr_acc_free(dns_addr_acc *acc, size_t n);

#endif
