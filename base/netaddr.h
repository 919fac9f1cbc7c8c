/* netaddr.h — what kind of address an IP literal is (pure, no I/O): the special-purpose
 * ranges that a next hop on the internet never is (loopback, RFC 1918 private, link-local,
 * unspecified, CGNAT shared space, IPv6 unique-local), so that delivery can refuse MX
 * answers pointing there (issue 11 item 8), and equality of two literals however they
 * are written ("::ffff:127.0.0.1" is 127.0.0.1, "::1" is "0::1").
 *
 * Written by hand on inet_pton: the ranges are a fixed table from the RFCs (IANA's
 * special-purpose registries), smaller than any library that would carry them. */
#ifndef KILN_NETADDR_H
#define KILN_NETADDR_H

#include <stdbool.h>

typedef enum {
    NETADDR_PUBLIC = 0,      /* none of the below: a routable address */
    NETADDR_INVALID,         /* not an IPv4 or IPv6 literal */
    NETADDR_LOOPBACK,        /* 127.0.0.0/8, ::1 */
    NETADDR_PRIVATE,         /* 10/8, 172.16/12, 192.168/16 (RFC 1918) */
    NETADDR_LINK_LOCAL,      /* 169.254/16, fe80::/10 */
    NETADDR_UNSPECIFIED,     /* 0.0.0.0/8 ("this network"), :: */
    NETADDR_SHARED,          /* 100.64/10, carrier-grade NAT (RFC 6598) */
    NETADDR_UNIQUE_LOCAL,    /* fc00::/7 (RFC 4193) */
} netaddr_class;

/* The class of an IPv4 or IPv6 literal; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is
 * classed as its IPv4 address. */
netaddr_class netaddr_classify(const char *ip);
/* True for every class but PUBLIC (INVALID included: nothing to connect to). */
bool netaddr_is_special(netaddr_class c);
/* "loopback", "private (RFC 1918)", "link-local", "unspecified", "shared (CGNAT)",
 * "unique-local", "public", "not an IP address": for diagnostics. */
const char *netaddr_class_name(netaddr_class c);
/* True if a and b are literals of the same address (an IPv4-mapped IPv6 address equals
 * its IPv4 form); false if either is not a literal. */
bool netaddr_equal(const char *a, const char *b);
/* True if ip is a wildcard literal (0.0.0.0 or ::), as a listen address that binds all. */
bool netaddr_is_wildcard(const char *ip);

#endif
