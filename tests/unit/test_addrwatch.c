/* test_addrwatch.c — the rtnetlink address messages kilnd reacts to (mta/addrwatch.c):
 * RTM_DELADDR and RTM_NEWADDR give the address as text (IFA_LOCAL preferred over
 * IFA_ADDRESS, IPv4 and IPv6), several messages in one datagram all count, and other
 * message types, other families, attributes of the wrong size and truncated messages are
 * skipped rather than misread. Plus the real thing when the kernel lets us: a netlink
 * socket opens (the daemon logs and goes on without it otherwise). */
#include <arpa/inet.h>
#include <check.h>
#include <ev.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/addrwatch.h"
#include "tests/unit/testlib.h"

typedef struct seen {
    char addr[8][64];
    int removed[8];
    int n;
} seen;

static void note(void *arg, const char *addr, bool removed)
{
    seen *s = arg;
    if (s->n >= 8) return;
    snprintf(s->addr[s->n], sizeof s->addr[0], "%s", addr);
    s->removed[s->n++] = removed;
}

/* Appends one ifaddr message of TYPE to BUF at *OFF with up to two attributes. */
static void put_msg(char *buf, size_t *off, int type, int family, int a1_type, const char *a1,
                    int a2_type, const char *a2)
{
    struct nlmsghdr *nh = (struct nlmsghdr *)(buf + *off);
    memset(nh, 0, NLMSG_SPACE(sizeof(struct ifaddrmsg)) + 2 * RTA_SPACE(16));
    nh->nlmsg_type = (unsigned short)type;
    nh->nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
    struct ifaddrmsg *ifa = NLMSG_DATA(nh);
    ifa->ifa_family = (unsigned char)family;
    const char *vals[2] = {a1, a2};
    int types[2] = {a1_type, a2_type};
    for (int i = 0; i < 2; i++) {
        if (!vals[i]) continue;
        unsigned char bin[16];
        size_t blen = family == AF_INET6 ? 16 : 4;
        ck_assert_int_eq(inet_pton(family, vals[i], bin), 1);
        struct rtattr *rta = (struct rtattr *)((char *)nh + NLMSG_ALIGN(nh->nlmsg_len));
        rta->rta_type = (unsigned short)types[i];
        rta->rta_len = (unsigned short)RTA_LENGTH(blen);
        memcpy(RTA_DATA(rta), bin, blen);
        nh->nlmsg_len = NLMSG_ALIGN(nh->nlmsg_len) + RTA_ALIGN(rta->rta_len);
    }
    *off += NLMSG_ALIGN(nh->nlmsg_len);
}

START_TEST(test_removed_and_added)
{
    char buf[4096] __attribute__((aligned(8)));
    size_t off = 0;
    put_msg(buf, &off, RTM_DELADDR, AF_INET, IFA_ADDRESS, "10.77.0.13", IFA_LOCAL, "10.77.0.13");
    put_msg(buf, &off, RTM_NEWADDR, AF_INET6, IFA_ADDRESS, "2001:db8::25", 0, NULL);
    /* point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL the host's own */
    put_msg(buf, &off, RTM_DELADDR, AF_INET, IFA_ADDRESS, "192.0.2.1", IFA_LOCAL, "192.0.2.9");
    seen s = {0};
    ck_assert_int_eq(addrwatch_parse(buf, off, note, &s), 3);
    ck_assert_int_eq(s.n, 3);
    ck_assert_str_eq(s.addr[0], "10.77.0.13");
    ck_assert_int_eq(s.removed[0], 1);
    ck_assert_str_eq(s.addr[1], "2001:db8::25");
    ck_assert_int_eq(s.removed[1], 0);
    ck_assert_str_eq(s.addr[2], "192.0.2.9");
    ck_assert_int_eq(s.removed[2], 1);
}
END_TEST

START_TEST(test_skipped)
{
    char buf[4096] __attribute__((aligned(8)));
    size_t off = 0;
    put_msg(buf, &off, RTM_NEWLINK, AF_INET, IFA_ADDRESS, "10.0.0.1", 0, NULL);   /* not an address */
    put_msg(buf, &off, RTM_DELADDR, AF_PACKET, 0, NULL, 0, NULL);                   /* no family */
    put_msg(buf, &off, RTM_DELADDR, AF_INET, IFA_LABEL, "10.0.0.2", 0, NULL);       /* no address */
    /* an IPv6 message whose attribute holds 4 bytes: not misread */
    put_msg(buf, &off, RTM_DELADDR, AF_INET, IFA_ADDRESS, "10.0.0.3", 0, NULL);
    ((struct ifaddrmsg *)NLMSG_DATA((struct nlmsghdr *)(buf + off - NLMSG_SPACE(sizeof(struct ifaddrmsg)) - RTA_SPACE(4))))->ifa_family = AF_INET6;
    seen s = {0};
    ck_assert_int_eq(addrwatch_parse(buf, off, note, &s), 0);
    ck_assert_int_eq(s.n, 0);

    /* truncated: a header claiming more than the datagram holds */
    off = 0;
    put_msg(buf, &off, RTM_DELADDR, AF_INET, IFA_LOCAL, "10.0.0.4", 0, NULL);
    ck_assert_int_eq(addrwatch_parse(buf, off - 4, note, &s), 0);
    ck_assert_int_eq(addrwatch_parse(buf, 3, note, &s), 0);
    ck_assert_int_eq(addrwatch_parse(buf, off, note, &s), 1);
    ck_assert_str_eq(s.addr[0], "10.0.0.4");
}
END_TEST

START_TEST(test_socket_opens)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    char *err = NULL;
    addrwatch *w = addrwatch_new(loop, note, NULL, &err);
    if (!w) {      /* a sandbox without netlink: the error names the cause */
        ck_assert_ptr_nonnull(err);
        ck_assert(strstr(err, "netlink") != NULL);
        free(err);
    }
    addrwatch_free(w);
    ev_loop_destroy(loop);
}
END_TEST

static Suite *addrwatch_suite(void)
{
    Suite *s = suite_create("addrwatch");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, test_removed_and_added);
    tcase_add_test(tc, test_skipped);
    tcase_add_test(tc, test_socket_opens);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(addrwatch_suite);
