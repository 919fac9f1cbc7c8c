/* addrwatch.c — the host's address changes from rtnetlink, on the libev loop (see
 * addrwatch.h). Promises: only kernel messages are believed; a datagram is read whole or
 * skipped; an overrun of the socket buffer (ENOBUFS) is logged by the caller's next
 * bind failure at worst, never fatal. */
#include "mta/addrwatch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/util.h"

struct addrwatch {
    struct ev_loop *loop;
    ev_io io;
    int fd;
    addrwatch_cb cb;
    void *arg;
};

/* The address of one ifaddrmsg: IFA_LOCAL (the local address on point-to-point links)
 * when present, else IFA_ADDRESS. */
static bool addrwatch_addr_of(const struct nlmsghdr *nh, char *out, size_t outlen)
{
    const struct ifaddrmsg *ifa = NLMSG_DATA(nh);
    if (nh->nlmsg_len < NLMSG_LENGTH(sizeof *ifa)) return false;
    if (ifa->ifa_family != AF_INET && ifa->ifa_family != AF_INET6) return false;
    size_t want = ifa->ifa_family == AF_INET ? 4 : 16;
    const void *local = NULL, *address = NULL;
    int len = (int)IFA_PAYLOAD(nh);
    for (const struct rtattr *rta = IFA_RTA(ifa); RTA_OK(rta, len); rta = RTA_NEXT(rta, len)) {
        if (RTA_PAYLOAD(rta) != want) continue;
        if (rta->rta_type == IFA_LOCAL) local = RTA_DATA(rta);
        else if (rta->rta_type == IFA_ADDRESS) address = RTA_DATA(rta);
    }
    const void *a = local ? local : address;
    return a && inet_ntop(ifa->ifa_family, a, out, (socklen_t)outlen) != NULL;
}

int addrwatch_parse(const void *buf, size_t len, addrwatch_cb cb, void *arg)
{
    int n = 0;
    if (len > 0x7fffffff) return 0;
    int left = (int)len;
    for (const struct nlmsghdr *nh = buf; NLMSG_OK(nh, (unsigned)left); nh = NLMSG_NEXT(nh, left)) {
        if (nh->nlmsg_type == NLMSG_DONE) break;
        if (nh->nlmsg_type != RTM_NEWADDR && nh->nlmsg_type != RTM_DELADDR) continue;
        char text[INET6_ADDRSTRLEN];
        if (!addrwatch_addr_of(nh, text, sizeof text)) continue;
        cb(arg, text, nh->nlmsg_type == RTM_DELADDR);
        n++;
    }
    return n;
}

static void addrwatch_on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    addrwatch *w = io->data;
    for (int i = 0; i < 64; i++) {     /* bounded: the rest waits for the next loop pass */
        union {
            struct nlmsghdr h;
            char b[16384];
        } buf;
        struct sockaddr_nl from;
        socklen_t flen = sizeof from;
        ssize_t r = recvfrom(w->fd, buf.b, sizeof buf.b, MSG_DONTWAIT, (struct sockaddr *)&from, &flen);
        if (r < 0) {
            if (errno == EINTR || errno == ENOBUFS) continue;   /* ENOBUFS: some were lost */
            return;                                             /* EAGAIN: all read */
        }
        if (flen != sizeof from || from.nl_family != AF_NETLINK || from.nl_pid != 0) continue;
        addrwatch_parse(buf.b, (size_t)r, w->cb, w->arg);
    }
}

addrwatch *addrwatch_new(struct ev_loop *loop, addrwatch_cb cb, void *arg, char **err)
{
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) {
        *err = util_asprintf("netlink socket: %s", strerror(errno));
        return NULL;
    }
    struct sockaddr_nl sa;
    memset(&sa, 0, sizeof sa);
    sa.nl_family = AF_NETLINK;
    sa.nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        *err = util_asprintf("netlink bind to the address groups: %s", strerror(errno));
        close(fd);
        return NULL;
    }
    addrwatch *w = util_calloc(1, sizeof *w);
    w->loop = loop;
    w->fd = fd;
    w->cb = cb;
    w->arg = arg;
    ev_io_init(&w->io, addrwatch_on_io, fd, EV_READ);
    w->io.data = w;
    ev_io_start(loop, &w->io);
    return w;
}

void addrwatch_free(addrwatch *w)
{
    if (!w) return;
    ev_io_stop(w->loop, &w->io);
    close(w->fd);
    free(w);
}
