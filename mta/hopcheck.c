/* hopcheck.c — the next-hop guard of delivery (see hopcheck.h): kiln's own listeners are a
 * loop, DNS answers in special-purpose ranges or at kiln's own addresses are refused
 * unless delivery.allow_private_mx. */
#include "mta/hopcheck.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "base/netaddr.h"

/* addr is one of kiln's dedicated IPs. */
static bool hopcheck_own_ip(const config *cfg, const char *addr)
{
    for (size_t i = 0; i < cfg->nips; i++)
        if (netaddr_equal(cfg->ips[i].address, addr)) return true;
    return false;
}

/* addr is covered by listener l: the same address, or l binds every address and addr is
 * one of this host's (loopback, or a dedicated IP kiln binds). */
static bool hopcheck_listener_covers(const config *cfg, const config_hostport *l, const char *addr)
{
    if (netaddr_equal(l->host, addr)) return true;
    if (!netaddr_is_wildcard(l->host)) return false;
    return netaddr_classify(addr) == NETADDR_LOOPBACK || hopcheck_own_ip(cfg, addr);
}

static void hopcheck_why(char *why, size_t len, const char *what)
{
    if (why && len) snprintf(why, len, "%s", what);
}

hopcheck_verdict hopcheck_next_hop(const config *cfg, const char *addr, int port, bool from_dns,
                                   char *why, size_t why_len)
{
    bool own_listen_addr = false;
    for (size_t i = 0; i < cfg->nlisten; i++) {
        const config_hostport *l = &cfg->listen[i];
        if (!hopcheck_listener_covers(cfg, l, addr)) continue;
        if (l->port == port) {
            if (why && why_len)
                snprintf(why, why_len, "kiln's own listener (submission.listen %s port %d)",
                         l->host, l->port);
            return HOPCHECK_LOOP;
        }
        own_listen_addr = own_listen_addr || !netaddr_is_wildcard(l->host);
    }
    if (!from_dns || cfg->allow_private_mx) return HOPCHECK_OK;
    netaddr_class c = netaddr_classify(addr);
    if (netaddr_is_special(c)) {
        hopcheck_why(why, why_len, netaddr_class_name(c));
        return HOPCHECK_PRIVATE;
    }
    if (hopcheck_own_ip(cfg, addr) || own_listen_addr) {
        hopcheck_why(why, why_len, "kiln's own address");
        return HOPCHECK_PRIVATE;
    }
    return HOPCHECK_OK;
}

bool hopcheck_announces(const char *hostname, const char *reply_text)
{
    if (!hostname || !reply_text) return false;
    const char *w = reply_text;
    while (*w == ' ' || *w == '\t') w++;
    size_t wl = strcspn(w, " \t\r\n");
    if (wl && w[wl - 1] == '.') wl--;
    size_t n = strlen(hostname);
    if (n && hostname[n - 1] == '.') n--;
    return n > 0 && n == wl && strncasecmp(hostname, w, n) == 0;
}
