/* netaddr.c — classes of IP literals and their equality (see netaddr.h). An IPv4-mapped
 * IPv6 address is reduced to its IPv4 bytes first, so every rule is written once per
 * family. */
#include "base/netaddr.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

/* The address as 4 (IPv4, or IPv4-mapped IPv6) or 16 bytes in buf; 0 if not a literal. */
static int netaddr_bytes(const char *ip, unsigned char buf[16])
{
    if (!ip) return 0;
    if (inet_pton(AF_INET, ip, buf) == 1) return 4;
    if (inet_pton(AF_INET6, ip, buf) != 1) return 0;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(buf, mapped, sizeof mapped) == 0) {
        memmove(buf, buf + 12, 4);
        return 4;
    }
    return 16;
}

static netaddr_class netaddr_classify4(const unsigned char *a)
{
    if (a[0] == 127) return NETADDR_LOOPBACK;
    if (a[0] == 10 || (a[0] == 172 && (a[1] & 0xf0) == 16) || (a[0] == 192 && a[1] == 168))
        return NETADDR_PRIVATE;
    if (a[0] == 169 && a[1] == 254) return NETADDR_LINK_LOCAL;
    if (a[0] == 0) return NETADDR_UNSPECIFIED;
    if (a[0] == 100 && (a[1] & 0xc0) == 64) return NETADDR_SHARED;
    return NETADDR_PUBLIC;
}

static netaddr_class netaddr_classify6(const unsigned char *a)
{
    static const unsigned char zero[15] = {0};
    if (memcmp(a, zero, 15) == 0) {
        if (a[15] == 1) return NETADDR_LOOPBACK;
        if (a[15] == 0) return NETADDR_UNSPECIFIED;
    }
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) return NETADDR_LINK_LOCAL;
    if ((a[0] & 0xfe) == 0xfc) return NETADDR_UNIQUE_LOCAL;
    return NETADDR_PUBLIC;
}

netaddr_class netaddr_classify(const char *ip)
{
    unsigned char b[16];
    int n = netaddr_bytes(ip, b);
    if (n == 4) return netaddr_classify4(b);
    if (n == 16) return netaddr_classify6(b);
    return NETADDR_INVALID;
}

bool netaddr_is_special(netaddr_class c)
{
    return c != NETADDR_PUBLIC;
}

const char *netaddr_class_name(netaddr_class c)
{
    switch (c) {
    case NETADDR_PUBLIC: return "public";
    case NETADDR_INVALID: return "not an IP address";
    case NETADDR_LOOPBACK: return "loopback";
    case NETADDR_PRIVATE: return "private (RFC 1918)";
    case NETADDR_LINK_LOCAL: return "link-local";
    case NETADDR_UNSPECIFIED: return "unspecified";
    case NETADDR_SHARED: return "shared (CGNAT)";
    case NETADDR_UNIQUE_LOCAL: return "unique-local";
    }
    return "unknown";
}

bool netaddr_equal(const char *a, const char *b)
{
    unsigned char x[16], y[16];
    int n = netaddr_bytes(a, x);
    return n && n == netaddr_bytes(b, y) && memcmp(x, y, (size_t)n) == 0;
}

bool netaddr_is_wildcard(const char *ip)
{
    unsigned char b[16];
    int n = netaddr_bytes(ip, b);
    static const unsigned char zero[16] = {0};
    return n && memcmp(b, zero, (size_t)n) == 0;
}
