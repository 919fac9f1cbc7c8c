/* addrwatch.h — tells kilnd at once when an address is removed from or added to one of the
 * host's interfaces (Linux rtnetlink, RTMGRP_IPV4_IFADDR / RTMGRP_IPV6_IFADDR), so that a
 * dedicated IP whose address goes away (a cloud IP detached, an operator's `ip addr del`)
 * is taken out of rotation and its open sessions, which can no longer get a reply, are
 * ended now rather than after RFC 5321's reply timeouts (up to 10 minutes).
 *
 * Only messages from the kernel (sender port 0) are believed. The parser is pure and
 * exported for the unit test; the watcher is one non-blocking netlink socket on the loop.
 * The framing is read with the kernel's own NLMSG_* / IFA_* macros (linux/rtnetlink.h):
 * what is hand-written is only the choice of the two attributes kiln needs. */
#ifndef KILN_MTA_ADDRWATCH_H
#define KILN_MTA_ADDRWATCH_H

#include <stdbool.h>
#include <stddef.h>

struct ev_loop;
typedef struct addrwatch addrwatch;

/* Called for each address change: ADDR is the numeric text (inet_ntop) of the address,
 * REMOVED true for RTM_DELADDR, false for RTM_NEWADDR. */
typedef void (*addrwatch_cb)(void *arg, const char *addr, bool removed);

/* Calls CB for every RTM_NEWADDR / RTM_DELADDR message in the netlink datagram BUF (LEN
 * bytes); other messages and truncated ones are skipped. Returns the number of changes
 * reported. */
int addrwatch_parse(const void *buf, size_t len, addrwatch_cb cb, void *arg);

/* Opens the watcher on LOOP; NULL and *err (malloc'd) when the netlink socket cannot be
 * opened (kilnd then runs without it: bind failures still take an IP down). */
addrwatch *addrwatch_new(struct ev_loop *loop, addrwatch_cb cb, void *arg, char **err);
void addrwatch_free(addrwatch *w);

#endif
