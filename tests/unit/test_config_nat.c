/* test_config_nat.c — cloud IPs behind NAT (issue 16 item 3): an ips entry's public_address
 * (base/config_sending.c) is an IP literal of the address's family, never the address itself
 * nor another entry's address or public_address, each refusal naming file:line:key and the
 * entry it collides with; an entry without it has none; --check-config's summary shows it;
 * and the pools (pools/pools.h) show it as the IP's public address, find the IP by either
 * address in any spelling, and follow a reload that changes it. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/util.h"
#include "pools/pools.h"
#include "tests/unit/testlib.h"

#define HEAD                                                                                  \
    "server: {hostname: mta.example.test, spool: ./q}\n"                                      \
    "zones: [az1]\n"                                                                          \
    "pools: [{name: p}]\n"                                                                    \
    "configuration_sets: [{name: s, pool: p}]\n"                                              \
    "default_configuration_set: s\n"                                                          \
    "ips:\n"

/* HEAD ends at line 6: the first ips entry is on line 7, the second on line 8. */
static config *load(const char *ips, char **err)
{
    char *text = util_asprintf(HEAD "%s", ips);
    *err = NULL;
    config *c = config_load_text(text, strlen(text), "t.yaml", "/etc/kiln", NULL, err);
    free(text);
    return c;
}

#define E(addr, extra) "  - {address: " addr ", zone: az1, pool: p" extra "}\n"

static const struct {
    const char *ips;
    const char *error;   /* the whole error */
} bad[] = {
    {E("10.0.0.5", ", public_address: elastic"),
     "t.yaml:7: ips[0].public_address: 'elastic' is not an IPv4 or IPv6 address (the address "
     "the world sees, mapped by NAT onto address)"},
    {E("10.0.0.5", ", public_address: 203.0.113.5/32"),
     "t.yaml:7: ips[0].public_address: '203.0.113.5/32' is not an IPv4 or IPv6 address"},
    {E("10.0.0.5", ", public_address: '2001:db8::5'"),
     "t.yaml:7: ips[0].public_address: 2001:db8::5 is IPv6 but address 10.0.0.5 is IPv4; NAT "
     "maps an address onto one of the same family"},
    {E("'fd00::5'", ", public_address: 203.0.113.5"),
     "t.yaml:7: ips[0].public_address: 203.0.113.5 is IPv4 but address fd00::5 is IPv6"},
    {E("10.0.0.5", ", public_address: 10.0.0.5"),
     "t.yaml:7: ips[0].public_address: 10.0.0.5 is address itself; leave public_address out "
     "when the address kiln binds is the one the world sees"},
    {E("'fd00::5'", ", public_address: 'fd00:0::5'"),
     "t.yaml:7: ips[0].public_address: fd00:0::5 is address itself"},
    /* another entry's public_address, written before or after */
    {E("10.0.0.5", ", public_address: 203.0.113.5") E("10.0.0.6", ", public_address: 203.0.113.5"),
     "t.yaml:8: ips[1].public_address: 203.0.113.5 is also the public_address of ips[0] (line 7)"},
    /* another entry's address */
    {E("203.0.113.5", "") E("10.0.0.6", ", public_address: 203.0.113.5"),
     "t.yaml:8: ips[1].public_address: 203.0.113.5 is also the address of ips[0] (line 7)"},
    {E("10.0.0.5", ", public_address: 203.0.113.5") E("203.0.113.5", ""),
     "t.yaml:8: ips[1].address: 203.0.113.5 is also the public_address of ips[0] (line 7)"},
    /* the address rule itself is unchanged */
    {E("10.0.0.5", ", public_address: 203.0.113.5") E("10.0.0.5", ", public_address: 203.0.113.6"),
     "t.yaml:8: ips[1].address: 10.0.0.5 is listed twice (also ips[0] at line 7)"},
    {E("10.0.0.5", ", public_address: [203.0.113.5]"),
     "t.yaml:7: ips[0].public_address: expected"},
    {E("10.0.0.5", ", public: 203.0.113.5"),
     "t.yaml:7: ips[0].public: unknown key 'public'; allowed here: address, public_address, "
     "zone, pool, ehlo, warmup"},
};

START_TEST(test_bad_public_address)
{
    char *err = NULL;
    config *c = load(bad[_i].ips, &err);
    ck_assert_msg(c == NULL, "loaded: %s", bad[_i].ips);
    ck_assert_msg(err && strncmp(err, bad[_i].error, strlen(bad[_i].error)) == 0,
                  "%s\n  error:    %s\n  expected: %s", bad[_i].ips, err ? err : "(none)",
                  bad[_i].error);
    free(err);
}
END_TEST

START_TEST(test_good_public_address)
{
    char *err = NULL;
    config *c = load(E("10.0.0.5", ", public_address: 203.0.113.5, warmup: done")
                         E("'fd00::6'", ", public_address: '2001:db8::6'")
                             E("198.51.100.7", ""),
                     &err);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_uint_eq(c->nips, 3);
    ck_assert_str_eq(c->ips[0].address, "10.0.0.5");
    ck_assert_str_eq(c->ips[0].public_address, "203.0.113.5");
    ck_assert_str_eq(c->ips[1].public_address, "2001:db8::6");
    ck_assert_ptr_null(c->ips[2].public_address);   /* default: the address is public itself */
    char *sum = config_summary(c);
    ck_assert_msg(strstr(sum, "  az1: 10.0.0.5 (public 203.0.113.5, p, warm), fd00::6 (public "
                              "2001:db8::6, p, warming up), 198.51.100.7 (p, warming up)\n"),
                  "%s", sum);
    free(sum);
    config_unref(c);
}
END_TEST

/* The documented example shows the key on one of its IPs and loads. */
START_TEST(test_full_example)
{
    char *err = NULL;
    config *c = config_load(KILN_SRCDIR "/conf/examples/full.yaml", NULL, &err);
    ck_assert_msg(c != NULL, "conf/examples/full.yaml: %s", err);
    size_t nat = 0;
    for (size_t i = 0; i < c->nips; i++)
        if (c->ips[i].public_address) nat++;
    ck_assert_uint_eq(nat, 1);
    config_unref(c);
}
END_TEST

START_TEST(test_pools_public_address)
{
    char *err = NULL;
    config *c = load(E("10.0.0.5", ", public_address: 203.0.113.5")
                         E("'fd00::6'", ", public_address: '2001:db8::6'") E("198.51.100.7", ""),
                     &err);
    ck_assert_msg(c != NULL, "%s", err);
    pools_opts o;
    pools_opts_default(&o);
    pools *p = pools_new(c, &o, 1000);
    pools_ip_info in;
    pools_info(p, 0, 1000, &in);
    ck_assert_str_eq(in.address, "10.0.0.5");            /* bound: the socket's source */
    ck_assert_str_eq(in.public_address, "203.0.113.5");  /* what the world sees */
    pools_info(p, 2, 1000, &in);
    ck_assert_str_eq(in.public_address, "198.51.100.7");

    /* an operator may name an IP by either address, in any spelling */
    pools_ip *ip = pools_find_any(p, "203.0.113.5");
    ck_assert_ptr_nonnull(ip);
    ck_assert_str_eq(pools_ip_address(ip), "10.0.0.5");
    ck_assert_ptr_eq(pools_find_any(p, "10.0.0.5"), ip);
    ck_assert_ptr_eq(pools_find_any(p, "::ffff:203.0.113.5"), ip);
    ip = pools_find_any(p, "2001:db8:0::6");
    ck_assert_ptr_nonnull(ip);
    ck_assert_str_eq(pools_ip_address(ip), "fd00::6");
    ck_assert_str_eq(pools_ip_public(ip), "2001:db8::6");
    ck_assert_ptr_null(pools_find_any(p, "203.0.113.6"));
    ck_assert_ptr_null(pools_find_any(p, NULL));
    ck_assert_ptr_null(pools_find(p, "203.0.113.5"));   /* the state is keyed by the bound one */
    /* warm-up set through the public address lands on the bound IP */
    ip = pools_find_any(p, "203.0.113.5");
    ck_assert_int_eq(pools_set_warmup(p, pools_ip_address(ip), 40, 2000, &err), 0);
    ck_assert_int_eq(pools_info_by_address(p, "10.0.0.5", 2000, &in), 0);
    ck_assert_int_eq(in.warmup_percentage, 40);

    /* a reload that changes the public address keeps the IP and its warm-up */
    config *c2 = load(E("10.0.0.5", ", public_address: 203.0.113.9")
                          E("'fd00::6'", "") E("198.51.100.7", ""),
                      &err);
    ck_assert_msg(c2 != NULL, "%s", err);
    pools_diff d;
    memset(&d, 0, sizeof d);
    pools_apply_config(p, c2, 3000, &d);
    ck_assert_uint_eq(d.nadded + d.nremoved + d.nmoved, 0);
    pools_diff_free(&d);
    ck_assert_int_eq(pools_info_by_address(p, "10.0.0.5", 3000, &in), 0);
    ck_assert_str_eq(in.public_address, "203.0.113.9");
    ck_assert_int_eq(in.warmup_percentage, 40);
    ck_assert_ptr_null(pools_find_any(p, "203.0.113.5"));
    ck_assert_ptr_nonnull(pools_find_any(p, "203.0.113.9"));
    ck_assert_int_eq(pools_info_by_address(p, "fd00::6", 3000, &in), 0);
    ck_assert_str_eq(in.public_address, "fd00::6");      /* NAT dropped: its own address */
    pools_free(p);
    config_unref(c2);
    config_unref(c);
}
END_TEST

static Suite *config_nat_suite(void)
{
    Suite *s = suite_create("config_nat");
    TCase *tc = tcase_create("public_address");
    tcase_add_loop_test(tc, test_bad_public_address, 0, (int)(sizeof bad / sizeof bad[0]));
    tcase_add_test(tc, test_good_public_address);
    tcase_add_test(tc, test_full_example);
    tcase_add_test(tc, test_pools_public_address);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(config_nat_suite);
