/* test_hopcheck.c — base/netaddr.c (classes of IP literals: loopback, RFC 1918, link-local,
 * unspecified, CGNAT, unique-local, IPv4-mapped IPv6; equality however written) and
 * mta/hopcheck.c (kiln's own listener is a loop for MX answers and routes alike; DNS answers
 * in special ranges or at kiln's own addresses are refused unless allow_private_mx; routes
 * are the operator's; a greeting naming server.hostname is kiln itself). Table-driven. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/netaddr.h"
#include "base/util.h"
#include "mta/hopcheck.h"
#include "tests/unit/testlib.h"

static const struct {
    const char *ip;
    netaddr_class cls;
} class_cases[] = {
    {"127.0.0.1", NETADDR_LOOPBACK},      {"127.255.255.254", NETADDR_LOOPBACK},
    {"::1", NETADDR_LOOPBACK},            {"0:0:0:0:0:0:0:1", NETADDR_LOOPBACK},
    {"::ffff:127.0.0.21", NETADDR_LOOPBACK},
    {"10.0.0.1", NETADDR_PRIVATE},        {"10.255.255.255", NETADDR_PRIVATE},
    {"172.16.0.1", NETADDR_PRIVATE},      {"172.31.255.255", NETADDR_PRIVATE},
    {"172.15.255.255", NETADDR_PUBLIC},   {"172.32.0.1", NETADDR_PUBLIC},
    {"192.168.1.1", NETADDR_PRIVATE},     {"192.169.0.1", NETADDR_PUBLIC},
    {"::ffff:10.1.2.3", NETADDR_PRIVATE},
    {"169.254.1.1", NETADDR_LINK_LOCAL},  {"fe80::1", NETADDR_LINK_LOCAL},
    {"febf::1", NETADDR_LINK_LOCAL},      {"fec0::1", NETADDR_PUBLIC},
    {"0.0.0.0", NETADDR_UNSPECIFIED},     {"0.1.2.3", NETADDR_UNSPECIFIED},
    {"::", NETADDR_UNSPECIFIED},
    {"100.64.0.1", NETADDR_SHARED},       {"100.127.255.255", NETADDR_SHARED},
    {"100.63.255.255", NETADDR_PUBLIC},   {"100.128.0.0", NETADDR_PUBLIC},
    {"fc00::1", NETADDR_UNIQUE_LOCAL},    {"fd12:3456::1", NETADDR_UNIQUE_LOCAL},
    {"fe00::1", NETADDR_PUBLIC},
    {"8.8.8.8", NETADDR_PUBLIC},          {"192.0.2.1", NETADDR_PUBLIC},
    {"2001:db8::1", NETADDR_PUBLIC},      {"11.0.0.1", NETADDR_PUBLIC},
    {"mx.example.test", NETADDR_INVALID}, {"", NETADDR_INVALID},
    {"127.0.0.1.5", NETADDR_INVALID},
};

START_TEST(test_classify)
{
    ck_assert_msg(netaddr_classify(class_cases[_i].ip) == class_cases[_i].cls,
                  "%s: class %s, expected %s", class_cases[_i].ip,
                  netaddr_class_name(netaddr_classify(class_cases[_i].ip)),
                  netaddr_class_name(class_cases[_i].cls));
    ck_assert_int_eq(netaddr_is_special(class_cases[_i].cls), class_cases[_i].cls != NETADDR_PUBLIC);
}
END_TEST

START_TEST(test_equal_and_wildcard)
{
    ck_assert(netaddr_equal("127.0.0.1", "::ffff:127.0.0.1"));
    ck_assert(netaddr_equal("::1", "0:0::1"));
    ck_assert(netaddr_equal("2001:DB8::1", "2001:db8:0::1"));
    ck_assert(!netaddr_equal("127.0.0.1", "127.0.0.2"));
    ck_assert(!netaddr_equal("::1", "127.0.0.1"));
    ck_assert(!netaddr_equal("localhost", "localhost"));
    ck_assert(!netaddr_equal(NULL, "127.0.0.1"));
    ck_assert(netaddr_is_wildcard("0.0.0.0"));
    ck_assert(netaddr_is_wildcard("::"));
    ck_assert(!netaddr_is_wildcard("127.0.0.1"));
    ck_assert(!netaddr_is_wildcard("0.0.0.1"));
}
END_TEST

/* testlib's config listens on 127.0.0.1:2587; plus dedicated IPs 203.0.113.10 and
 * 127.0.0.10. */
static config *hopcheck_config(bool allow)
{
    config *c = testlib_config_new();
    testlib_config_add_zone(c, "az1");
    testlib_config_add_pool(c, "p", CONFIG_SCALING_STANDARD);
    testlib_config_add_ip(c, "203.0.113.10", "az1", "p", CONFIG_WARMUP_DONE);
    testlib_config_add_ip(c, "127.0.0.10", "az1", "p", CONFIG_WARMUP_DONE);
    c->allow_private_mx = allow;
    return c;
}

static const struct {
    bool allow;
    const char *addr;
    int port;
    bool from_dns;
    hopcheck_verdict v;
    const char *why;      /* substring of the reason; NULL when OK */
} hop_cases[] = {
    /* default: DNS answers in special ranges or at kiln's own addresses are refused */
    {false, "127.0.0.21", 25, true, HOPCHECK_PRIVATE, "loopback"},
    {false, "10.1.2.3", 25, true, HOPCHECK_PRIVATE, "RFC 1918"},
    {false, "192.168.0.5", 25, true, HOPCHECK_PRIVATE, "RFC 1918"},
    {false, "169.254.0.5", 25, true, HOPCHECK_PRIVATE, "link-local"},
    {false, "100.100.0.1", 25, true, HOPCHECK_PRIVATE, "CGNAT"},
    {false, "fd00::25", 25, true, HOPCHECK_PRIVATE, "unique-local"},
    {false, "::1", 25, true, HOPCHECK_PRIVATE, "loopback"},
    {false, "0.0.0.0", 25, true, HOPCHECK_PRIVATE, "unspecified"},
    {false, "203.0.113.10", 25, true, HOPCHECK_PRIVATE, "kiln's own address"},
    {false, "203.0.113.11", 25, true, HOPCHECK_OK, NULL},
    {false, "2001:db8::25", 25, true, HOPCHECK_OK, NULL},
    /* static routes are the operator's: allowed, but kiln's own listener is a loop */
    {false, "127.0.0.21", 25, false, HOPCHECK_OK, NULL},
    {false, "127.0.0.1", 2526, false, HOPCHECK_OK, NULL},
    {false, "127.0.0.1", 2587, false, HOPCHECK_LOOP, "submission.listen 127.0.0.1 port 2587"},
    {false, "::ffff:127.0.0.1", 2587, false, HOPCHECK_LOOP, "kiln's own listener"},
    {false, "127.0.0.1", 2587, true, HOPCHECK_LOOP, "kiln's own listener"},
    /* allow_private_mx: everything but the loop */
    {true, "127.0.0.21", 25, true, HOPCHECK_OK, NULL},
    {true, "10.1.2.3", 25, true, HOPCHECK_OK, NULL},
    {true, "203.0.113.10", 25, true, HOPCHECK_OK, NULL},
    {true, "127.0.0.1", 2587, true, HOPCHECK_LOOP, "kiln's own listener"},
};

START_TEST(test_next_hop)
{
    config *c = hopcheck_config(hop_cases[_i].allow);
    char why[160] = "";
    hopcheck_verdict v = hopcheck_next_hop(c, hop_cases[_i].addr, hop_cases[_i].port,
                                           hop_cases[_i].from_dns, why, sizeof why);
    ck_assert_msg(v == hop_cases[_i].v, "case %d %s:%d: verdict %d, expected %d (%s)", _i,
                  hop_cases[_i].addr, hop_cases[_i].port, v, hop_cases[_i].v, why);
    if (hop_cases[_i].why)
        ck_assert_msg(strstr(why, hop_cases[_i].why), "case %d: reason '%s' lacks '%s'", _i, why,
                      hop_cases[_i].why);
    config_unref(c);
}
END_TEST

/* A wildcard listener covers loopback and kiln's own IPs on its port, nothing else. */
START_TEST(test_wildcard_listener)
{
    config *c = hopcheck_config(true);
    free(c->listen[0].host);
    c->listen[0].host = util_strdup("0.0.0.0");
    c->listen[0].port = 25;
    ck_assert_int_eq(hopcheck_next_hop(c, "127.0.0.5", 25, true, NULL, 0), HOPCHECK_LOOP);
    ck_assert_int_eq(hopcheck_next_hop(c, "203.0.113.10", 25, true, NULL, 0), HOPCHECK_LOOP);
    ck_assert_int_eq(hopcheck_next_hop(c, "203.0.113.99", 25, true, NULL, 0), HOPCHECK_OK);
    ck_assert_int_eq(hopcheck_next_hop(c, "127.0.0.5", 2525, true, NULL, 0), HOPCHECK_OK);
    c->allow_private_mx = false;
    /* a wildcard listener alone does not make every address kiln's own */
    ck_assert_int_eq(hopcheck_next_hop(c, "203.0.113.99", 2525, true, NULL, 0), HOPCHECK_OK);
    config_unref(c);
}
END_TEST

START_TEST(test_announces)
{
    ck_assert(hopcheck_announces("mta.kiln.test", "mta.kiln.test ESMTP kiln"));
    ck_assert(hopcheck_announces("mta.kiln.test", "MTA.Kiln.Test"));
    ck_assert(hopcheck_announces("mta.kiln.test", "mta.kiln.test. ready"));
    ck_assert(hopcheck_announces("mta.kiln.test.", "mta.kiln.test\nPIPELINING"));
    ck_assert(!hopcheck_announces("mta.kiln.test", "mta.kiln.test2 ESMTP"));
    ck_assert(!hopcheck_announces("mta.kiln.test", "sink.kiln.test ESMTP mta.kiln.test"));
    ck_assert(!hopcheck_announces("mta.kiln.test", ""));
    ck_assert(!hopcheck_announces("mta.kiln.test", NULL));
    ck_assert(!hopcheck_announces(NULL, "mta.kiln.test"));
}
END_TEST

static Suite *hopcheck_suite(void)
{
    Suite *s = suite_create("hopcheck");
    TCase *tc = tcase_create("netaddr");
    tcase_add_loop_test(tc, test_classify, 0, (int)(sizeof class_cases / sizeof class_cases[0]));
    tcase_add_test(tc, test_equal_and_wildcard);
    suite_add_tcase(s, tc);
    tc = tcase_create("hops");
    tcase_add_loop_test(tc, test_next_hop, 0, (int)(sizeof hop_cases / sizeof hop_cases[0]));
    tcase_add_test(tc, test_wildcard_listener);
    tcase_add_test(tc, test_announces);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(hopcheck_suite);
