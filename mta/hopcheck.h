/* hopcheck.h — may delivery connect to this next hop? (issue 11 item 8; pure: config in,
 * verdict out, no I/O)
 *
 *  - A hop that is kiln itself — its address and port are one of submission.listen (a
 *    wildcard listener 0.0.0.0 / :: covers loopback addresses and kiln's own IPs) — is a
 *    mail loop: HOPCHECK_LOOP, for MX answers and static routes alike ("554 5.4.6 mail loops
 *    back to myself", as Postfix says).
 *  - An address that came from DNS (an MX host's, or the A/AAAA fallback) in a range no
 *    internet next hop has (netaddr.h: loopback, RFC 1918, link-local, unspecified, CGNAT,
 *    unique-local) or that is one of kiln's own (a dedicated IP of `ips:`, a listen address)
 *    is HOPCHECK_PRIVATE ("MX points to a private address", 5.4.4) unless
 *    delivery.allow_private_mx is true (labs and tests). Static routes are the operator's
 *    own choice and never PRIVATE.
 *  - hopcheck_announces: the name a server announces in its greeting or EHLO reply is kiln's
 *    server.hostname (the same loop seen from the other side). */
#ifndef KILN_HOPCHECK_H
#define KILN_HOPCHECK_H

#include <stdbool.h>
#include <stddef.h>

#include "base/config.h"

typedef enum {
    HOPCHECK_OK = 0,
    HOPCHECK_PRIVATE,     /* refused by default: loopback, private range or kiln's own address */
    HOPCHECK_LOOP,        /* kiln's own listener */
} hopcheck_verdict;

/* The verdict for connecting to addr (an IP literal) port `port`; from_dns: the address is
 * an MX or A/AAAA answer, not a static route. On a refusal *why (may be NULL) gets the
 * reason in a few words, e.g. "loopback", "kiln's own address (ips:)",
 * "kiln's own listener (submission.listen 127.0.0.1:2587)". */
hopcheck_verdict hopcheck_next_hop(const config *cfg, const char *addr, int port, bool from_dns,
                                   char *why, size_t why_len);
/* True if the first word of reply_text (a greeting's or EHLO reply's text, code removed)
 * is hostname, case-insensitively, a trailing dot ignored. NULL or empty: false. */
bool hopcheck_announces(const char *hostname, const char *reply_text);

#endif
