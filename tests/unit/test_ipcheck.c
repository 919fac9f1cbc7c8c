/* test_ipcheck.c — kilnctl ip check's pure half (mta/ipcheck.h) and the PTR query's name
 * (dns_reverse_name, mta/dns.h): the in-addr.arpa / ip6.arpa names; the verdicts on results
 * built as the lookups would fill them: ready; PTR missing; PTR naming another host; the EHLO
 * name's A record without the address; forward confirmation through another PTR name; a
 * temporary failure said as one, never as a missing record; AAAA for IPv6; DNS names shown
 * without control bytes; and the JSON fields and table kilnctl prints. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/dns.h"
#include "mta/ipcheck.h"
#include "tests/unit/testlib.h"

START_TEST(test_reverse_names)
{
    char *n = dns_reverse_name("192.0.2.10");
    ck_assert_str_eq(n, "10.2.0.192.in-addr.arpa");
    free(n);
    n = dns_reverse_name("2001:db8::567:89ab");
    ck_assert_str_eq(n, "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
    free(n);
    ck_assert_ptr_null(dns_reverse_name("mx.example.com"));
    ck_assert_ptr_null(dns_reverse_name("192.0.2.10/32"));
    ck_assert_ptr_null(dns_reverse_name(NULL));
}
END_TEST

static ipcheck_result *nat_result(void)
{
    ipcheck_req q = {"192.0.2.10", "10.0.0.5", "mx1.example.com", "ips[0].ehlo"};
    ipcheck_result *r = ipcheck_result_new(&q);
    ck_assert_ptr_nonnull(r);
    ck_assert_str_eq(r->reverse_name, "10.2.0.192.in-addr.arpa");
    ck_assert_uint_eq(r->nfwd, 1);
    ck_assert_str_eq(r->fwd[0].name, "mx1.example.com");
    return r;
}

static const char *problem_with(const ipcheck_result *r, const char *start)
{
    for (size_t i = 0; i < r->nproblems; i++)
        if (strncmp(r->problems[i], start, strlen(start)) == 0) return r->problems[i];
    return NULL;
}

START_TEST(test_ready)
{
    ipcheck_result *r = nat_result();
    r->ptr_ans = IPCHECK_ANS_OK;
    ipcheck_add_ptr(r, "MX1.example.com.");   /* case and the final dot do not matter */
    ipcheck_add_ptr(r, "mx1.example.com");    /* c-ares repeats h_name among the aliases */
    ipcheck_fwd_add_addr(&r->fwd[0], "198.51.100.1");
    ipcheck_fwd_add_addr(&r->fwd[0], "192.0.2.10");
    ipcheck_evaluate(r);
    ck_assert_uint_eq(r->nptr, 1);
    ck_assert(r->ptr_matches_ehlo && r->ehlo_has_ip && r->forward_confirmed && r->ready);
    ck_assert(!r->tempfail);
    ck_assert_uint_eq(r->nproblems, 0);
    json_t *j = ipcheck_to_json(r);
    ck_assert_str_eq(json_string_value(json_object_get(j, "Ip")), "192.0.2.10");
    ck_assert_str_eq(json_string_value(json_object_get(j, "BindAddress")), "10.0.0.5");
    ck_assert_str_eq(json_string_value(json_object_get(j, "EhloName")), "mx1.example.com");
    ck_assert_str_eq(json_string_value(json_object_get(j, "ForwardType")), "A");
    ck_assert_uint_eq(json_array_size(json_object_get(j, "ForwardAddresses")), 2);
    ck_assert(json_is_true(json_object_get(j, "Ready")));
    ck_assert_uint_eq(json_array_size(json_object_get(j, "Problems")), 0);
    json_decref(j);
    char *t = ipcheck_to_text(r);
    ck_assert_msg(strstr(t, "IP 192.0.2.10 (public; NAT maps it onto 10.0.0.5, which kiln binds)\n"
                            "EHLO name mx1.example.com (ips[0].ehlo)\n"),
                  "%s", t);
    ck_assert_msg(strstr(t, "\nready: the PTR of 192.0.2.10 is mx1.example.com and its A record "
                            "includes 192.0.2.10"),
                  "%s", t);
    free(t);
    ipcheck_result_free(r);
}
END_TEST

START_TEST(test_ptr_missing)
{
    ipcheck_result *r = nat_result();
    r->ptr_ans = IPCHECK_ANS_NONE;
    r->fwd[0].ans = IPCHECK_ANS_NONE;
    ipcheck_evaluate(r);
    ck_assert(!r->ready && !r->ptr_matches_ehlo && !r->forward_confirmed && !r->tempfail);
    ck_assert_uint_eq(r->nproblems, 2);
    ck_assert_str_eq(r->problems[0],
                     "PTR missing: 10.2.0.192.in-addr.arpa has no PTR record; have the owner of "
                     "192.0.2.10 (for a cloud IP, its provider's reverse DNS setting) point it at "
                     "mx1.example.com");
    ck_assert_str_eq(r->problems[1], "A of mx1.example.com does not include the address: "
                                     "mx1.example.com has no A record; publish mx1.example.com "
                                     "A 192.0.2.10");
    char *t = ipcheck_to_text(r);
    ck_assert_msg(strstr(t, "\nnot ready:\n  - PTR missing: "), "%s", t);
    free(t);
    ipcheck_result_free(r);
}
END_TEST

/* The PTR names another host that does resolve to the address (forward-confirmed, but not
 * the EHLO name), and the EHLO name points elsewhere: two problems, each its own. */
START_TEST(test_ptr_other_name_and_a_elsewhere)
{
    ipcheck_result *r = nat_result();
    r->ptr_ans = IPCHECK_ANS_OK;
    ipcheck_add_ptr(r, "ec2-192-0-2-10.compute.example.net");
    size_t k = ipcheck_fwd_of(r, "ec2-192-0-2-10.compute.example.net");
    ck_assert_uint_eq(k, 1);
    ck_assert_uint_eq(ipcheck_fwd_of(r, "EC2-192-0-2-10.compute.example.net."), 1);
    ipcheck_fwd_add_addr(&r->fwd[1], "192.0.2.10");
    ipcheck_fwd_add_addr(&r->fwd[0], "198.51.100.1");
    ipcheck_evaluate(r);
    ck_assert(!r->ptr_matches_ehlo && !r->ehlo_has_ip && r->forward_confirmed && !r->ready);
    ck_assert_uint_eq(r->nproblems, 2);
    ck_assert_ptr_nonnull(problem_with(r, "PTR names ec2-192-0-2-10.compute.example.net but EHLO "
                                          "is mx1.example.com (ips[0].ehlo): make the PTR of "
                                          "192.0.2.10 mx1.example.com"));
    ck_assert_ptr_nonnull(problem_with(r, "A of mx1.example.com does not include the address: it "
                                          "holds 198.51.100.1, not 192.0.2.10; add mx1.example.com "
                                          "A 192.0.2.10"));
    json_t *j = ipcheck_to_json(r);
    json_t *pf = json_array_get(json_object_get(j, "PtrForward"), 0);
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(pf, "Addresses"), 0)),
                     "192.0.2.10");
    json_decref(j);
    ipcheck_result_free(r);
}
END_TEST

/* A PTR name that resolves elsewhere: not forward-confirmed, said on its own. */
START_TEST(test_not_forward_confirmed)
{
    ipcheck_result *r = nat_result();
    r->ptr_ans = IPCHECK_ANS_OK;
    ipcheck_add_ptr(r, "old.example.com");
    size_t k = ipcheck_fwd_of(r, "old.example.com");
    r->fwd[k].ans = IPCHECK_ANS_NONE;
    ipcheck_fwd_add_addr(&r->fwd[0], "192.0.2.10");
    ipcheck_evaluate(r);
    ck_assert(r->ehlo_has_ip && !r->forward_confirmed && !r->ready);
    ck_assert_ptr_nonnull(problem_with(r, "not forward-confirmed: no PTR name has A 192.0.2.10 "
                                          "(old.example.com has no A record)"));
    ipcheck_result_free(r);
}
END_TEST

/* A lookup that failed for now is a temporary failure, not a missing record. */
START_TEST(test_tempfail)
{
    ipcheck_result *r = nat_result();
    r->ptr_ans = IPCHECK_ANS_TEMPFAIL;
    r->ptr_error = util_strdup("Timeout while contacting DNS servers");
    ipcheck_fwd_add_addr(&r->fwd[0], "192.0.2.10");
    ipcheck_evaluate(r);
    ck_assert(r->tempfail && !r->ready);
    ck_assert_uint_eq(r->nproblems, 1);
    ck_assert_str_eq(r->problems[0], "the PTR lookup of 10.2.0.192.in-addr.arpa failed for now: "
                                     "Timeout while contacting DNS servers (try again)");
    ck_assert_ptr_null(problem_with(r, "PTR missing"));
    char *t = ipcheck_to_text(r);
    ck_assert_msg(strstr(t, "not known yet (a lookup failed):\n"), "%s", t);
    free(t);
    json_t *j = ipcheck_to_json(r);
    ck_assert(json_is_true(json_object_get(j, "TemporaryFailure")));
    json_decref(j);
    ipcheck_result_free(r);
}
END_TEST

/* IPv6 asks AAAA; an IP without NAT says so; names from DNS carry no control bytes. */
START_TEST(test_ipv6_and_hostile_names)
{
    ipcheck_req q = {"2001:db8::10", "2001:db8::10", "mx6.example.com", "server.hostname"};
    ipcheck_result *r = ipcheck_result_new(&q);
    ck_assert_ptr_nonnull(r);
    r->ptr_ans = IPCHECK_ANS_OK;
    ipcheck_add_ptr(r, "evil\x1b[2J.example.com");
    ipcheck_fwd_add_addr(&r->fwd[0], "2001:db8:0::10");   /* any spelling of the address */
    ipcheck_evaluate(r);
    ck_assert_str_eq(r->ptr[0], "evil?[2J.example.com");
    ck_assert(r->ehlo_has_ip && !r->ptr_matches_ehlo);
    ck_assert_ptr_nonnull(problem_with(r, "PTR names evil?[2J.example.com but EHLO is "
                                          "mx6.example.com (server.hostname)"));
    ck_assert_ptr_nonnull(problem_with(r, "not forward-confirmed: no PTR name has AAAA "
                                          "2001:db8::10"));
    char *t = ipcheck_to_text(r);
    ck_assert_msg(strncmp(t, "IP 2001:db8::10\nEHLO name mx6.example.com (server.hostname)\n",
                          60) == 0,
                  "%s", t);
    ck_assert_msg(strstr(t, "AAAA of the EHLO name has the IP") != NULL, "%s", t);
    ck_assert_msg(strchr(t, '\x1b') == NULL, "%s", t);
    free(t);
    ipcheck_result_free(r);
    ipcheck_req bad = {"mx.example.com", NULL, "mx.example.com", NULL};
    ck_assert_ptr_null(ipcheck_result_new(&bad));
}
END_TEST

static Suite *ipcheck_suite(void)
{
    Suite *s = suite_create("ipcheck");
    TCase *tc = tcase_create("verdicts");
    tcase_add_test(tc, test_reverse_names);
    tcase_add_test(tc, test_ready);
    tcase_add_test(tc, test_ptr_missing);
    tcase_add_test(tc, test_ptr_other_name_and_a_elsewhere);
    tcase_add_test(tc, test_not_forward_confirmed);
    tcase_add_test(tc, test_tempfail);
    tcase_add_test(tc, test_ipv6_and_hostile_names);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(ipcheck_suite);
