/* test_complaints.c — the managed pools' per-provider complaint hold (pools/complaints.c):
 * complaints above the hold rate stop successful sessions from raising that provider's cap
 * on every managed IP of the pool (other providers still rise, throttles still cut), the
 * hold lifts when complaints age out of the 24 h or more mail is sent, a single complaint or
 * rate 0 never holds, what `kilnctl ips` shows (pools_info's per-provider caps), the saved
 * state keeps the complaints across a restart, and the provider of a recipient's domain.
 * Configs are built in memory; clock injected. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/util.h"
#include "pools/complaints.h"
#include "pools/pools.h"
#include "tests/unit/testlib.h"

#define T0 INT64_C(1700000000000)
#define SEC INT64_C(1000)
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)

#define MX_GMAIL "gmail-smtp-in.l.google.com"
#define MX_YAHOO "mta5.am0.yahoodns.net"

/* marketing (managed): .20 and .21; transactional (standard): .10. Warm-up defaults:
 * first_day 50, target 50000. */
static pools *make(int64_t now)
{
    config *c = testlib_config_new();
    testlib_config_add_zone(c, "az1");
    testlib_config_add_zone(c, "az2");
    testlib_config_add_pool(c, "transactional", CONFIG_SCALING_STANDARD);
    testlib_config_add_pool(c, "marketing", CONFIG_SCALING_MANAGED);
    testlib_config_add_ip(c, "127.0.0.10", "az1", "transactional", CONFIG_WARMUP_NEW);
    testlib_config_add_ip(c, "127.0.0.20", "az1", "marketing", CONFIG_WARMUP_NEW);
    testlib_config_add_ip(c, "127.0.0.21", "az2", "marketing", CONFIG_WARMUP_NEW);
    pools *p = pools_new(c, NULL, now);
    config_unref(c);
    return p;
}

static void send(pools *p, const char *addr, const char *provider, unsigned n, int64_t now)
{
    pools_record_send(p, pools_find(p, addr), provider, n, now);
}

static void ok(pools *p, const char *addr, const char *provider, unsigned accepted, int64_t now)
{
    const char *mx = strcmp(provider, "gmail") == 0 ? MX_GMAIL : MX_YAHOO;
    pools_record_result(p, pools_find(p, addr), mx, provider, POOLS_RESULT_OK, accepted, now);
}

/* The provider cap of addr as `kilnctl ips` shows it (pools_info); fails if not listed. */
static pools_cap_info cap_of(pools *p, const char *addr, const char *provider, int64_t now)
{
    pools_ip_info in;
    ck_assert_int_eq(pools_info_by_address(p, addr, now, &in), 0);
    for (size_t i = 0; i < in.ncaps; i++)
        if (strcmp(in.caps[i].provider, provider) == 0) return in.caps[i];
    ck_abort_msg("%s has no %s cap", addr, provider);
    pools_cap_info none = {0};
    return none;
}

static int64_t cap(pools *p, const char *addr, const char *provider, int64_t now)
{
    return cap_of(p, addr, provider, now).daily_cap;
}

/* The pool sent 1000 recipients to gmail and to yahoo over its two IPs, at T0. */
static void sent_1000_each(pools *p)
{
    send(p, "127.0.0.20", "gmail", 600, T0);
    send(p, "127.0.0.21", "gmail", 400, T0);
    send(p, "127.0.0.20", "yahoo", 1000, T0);
}

START_TEST(test_hold_and_release)
{
    pools *p = make(T0);
    pools_set_complaint_hold_rate(p, 0.001);
    sent_1000_each(p);
    ok(p, "127.0.0.20", "gmail", 100, T0);                  /* rises: 50 + 100 */
    ck_assert_int_eq(cap(p, "127.0.0.20", "gmail", T0), 150);
    ck_assert(!cap_of(p, "127.0.0.20", "gmail", T0).held);

    /* 2 complaints against 1000 sent: 0.2 % > 0.1 % */
    pools_record_complaint(p, "marketing", "gmail", 2, T0 + MIN);
    ck_assert_int_eq(pools_complaints_24h(p, "marketing", "gmail", T0 + MIN), 2);
    ck_assert_int_eq(pools_complaints_24h(p, "marketing", "yahoo", T0 + MIN), 0);
    ck_assert(pools_provider_held(p, "marketing", "gmail", T0 + MIN));
    ck_assert(!pools_provider_held(p, "marketing", "yahoo", T0 + MIN));

    /* gmail's ramp stands still on every IP of the pool; yahoo's still rises */
    ok(p, "127.0.0.20", "gmail", 100, T0 + 2 * MIN);
    ok(p, "127.0.0.21", "gmail", 100, T0 + 2 * MIN);
    ok(p, "127.0.0.20", "yahoo", 100, T0 + 2 * MIN);
    ck_assert_int_eq(cap(p, "127.0.0.20", "gmail", T0 + 2 * MIN), 150);
    ck_assert_int_eq(cap(p, "127.0.0.21", "gmail", T0 + 2 * MIN), 50);
    ck_assert_int_eq(cap(p, "127.0.0.20", "yahoo", T0 + 2 * MIN), 150);
    /* the operator sees which caps are held */
    ck_assert(cap_of(p, "127.0.0.20", "gmail", T0 + 2 * MIN).held);
    ck_assert(cap_of(p, "127.0.0.21", "gmail", T0 + 2 * MIN).held);
    ck_assert(!cap_of(p, "127.0.0.20", "yahoo", T0 + 2 * MIN).held);
    ck_assert_int_eq(cap_of(p, "127.0.0.20", "gmail", T0 + 2 * MIN).sent_24h, 600);

    /* a throttle still cuts a held cap */
    pools_record_result(p, pools_find(p, "127.0.0.20"), MX_GMAIL, "gmail",
                        POOLS_RESULT_THROTTLED, 0, T0 + 3 * MIN);
    ck_assert_int_eq(cap(p, "127.0.0.20", "gmail", T0 + 3 * MIN), 75);

    /* still held just before a day has passed (sends and complaints both still count) */
    ok(p, "127.0.0.20", "gmail", 100, T0 + DAY - MIN);
    ck_assert_int_eq(cap(p, "127.0.0.20", "gmail", T0 + DAY - MIN), 75);

    /* the complaints aged out: the cap rises again */
    int64_t later = T0 + DAY + HOUR + MIN;
    ck_assert_int_eq(pools_complaints_24h(p, "marketing", "gmail", later), 0);
    ck_assert(!pools_provider_held(p, "marketing", "gmail", later));
    ck_assert(!cap_of(p, "127.0.0.20", "gmail", later).held);
    ok(p, "127.0.0.20", "gmail", 100, later);
    ck_assert_int_eq(cap(p, "127.0.0.20", "gmail", later), 175);
    pools_free(p);
}
END_TEST

START_TEST(test_more_mail_lifts_the_hold)
{
    pools *p = make(T0);
    pools_set_complaint_hold_rate(p, 0.001);
    sent_1000_each(p);
    pools_record_complaint(p, "marketing", "gmail", 2, T0);
    ck_assert(pools_provider_held(p, "marketing", "gmail", T0));
    send(p, "127.0.0.21", "gmail", 999, T0 + MIN);          /* 2 / 1999: above 0.1 % */
    ck_assert(pools_provider_held(p, "marketing", "gmail", T0 + MIN));
    send(p, "127.0.0.21", "gmail", 1, T0 + MIN);            /* 2 / 2000: not above */
    ck_assert(!pools_provider_held(p, "marketing", "gmail", T0 + MIN));
    ok(p, "127.0.0.21", "gmail", 10, T0 + MIN);
    ck_assert_int_eq(cap(p, "127.0.0.21", "gmail", T0 + MIN), 60);
    pools_free(p);
}
END_TEST

START_TEST(test_one_complaint_never_holds)
{
    pools *p = make(T0);
    pools_set_complaint_hold_rate(p, 0.001);
    send(p, "127.0.0.20", "gmail", 100, T0);
    pools_record_complaint(p, "marketing", "gmail", 1, T0);   /* 1 % but a single report */
    ck_assert_int_eq(pools_complaints_24h(p, "marketing", "gmail", T0), 1);
    ck_assert(!pools_provider_held(p, "marketing", "gmail", T0));
    ok(p, "127.0.0.20", "gmail", 10, T0);
    ck_assert_int_eq(cap(p, "127.0.0.20", "gmail", T0), 60);
    /* a second one within the 24 h does hold */
    pools_record_complaint(p, "marketing", "gmail", 1, T0 + 10 * HOUR);
    ck_assert(pools_provider_held(p, "marketing", "gmail", T0 + 10 * HOUR));
    pools_free(p);
}
END_TEST

START_TEST(test_rate_zero_never_holds)
{
    pools *p = make(T0);                                    /* the default: 0 */
    send(p, "127.0.0.20", "gmail", 10, T0);
    pools_record_complaint(p, "marketing", "gmail", 5, T0);
    ck_assert_int_eq(pools_complaints_24h(p, "marketing", "gmail", T0), 5);   /* still counted */
    ck_assert(!pools_provider_held(p, "marketing", "gmail", T0));
    ok(p, "127.0.0.20", "gmail", 10, T0);
    ck_assert_int_eq(cap(p, "127.0.0.20", "gmail", T0), 60);
    ck_assert(!cap_of(p, "127.0.0.20", "gmail", T0).held);
    /* set, then turned off again */
    pools_set_complaint_hold_rate(p, 0.001);
    ck_assert(pools_provider_held(p, "marketing", "gmail", T0));
    pools_set_complaint_hold_rate(p, 0);
    ck_assert(!pools_provider_held(p, "marketing", "gmail", T0));
    pools_free(p);
}
END_TEST

START_TEST(test_unknown_pool_ignored)
{
    pools *p = make(T0);
    pools_set_complaint_hold_rate(p, 0.001);
    char *before = pools_state_json(p);
    pools_record_complaint(p, "nosuch", "gmail", 5, T0);
    ck_assert_int_eq(pools_complaints_24h(p, "nosuch", "gmail", T0), 0);
    ck_assert(!pools_provider_held(p, "nosuch", "gmail", T0));
    ck_assert_msg(!pools_dirty(p), "an ignored complaint changes nothing to save");
    char *after = pools_state_json(p);
    ck_assert_str_eq(after, before);
    /* complaints about another pool do not hold this one */
    pools_record_complaint(p, "transactional", "gmail", 5, T0);
    ck_assert(pools_dirty(p));
    ck_assert(!pools_provider_held(p, "marketing", "gmail", T0));
    /* a standard IP lists no provider caps */
    pools_ip_info in;
    ck_assert_int_eq(pools_info_by_address(p, "127.0.0.10", T0, &in), 0);
    ck_assert_int_eq(in.ncaps, 0);
    free(before);
    free(after);
    pools_free(p);
}
END_TEST

START_TEST(test_state_round_trip)
{
    pools *p = make(T0);
    pools_set_complaint_hold_rate(p, 0.001);
    sent_1000_each(p);
    pools_record_complaint(p, "marketing", "gmail", 1, T0);
    pools_record_complaint(p, "marketing", "gmail", 1, T0 + 2 * HOUR);
    pools_record_complaint(p, "marketing", "yahoo", 1, T0 + 2 * HOUR);
    ck_assert(pools_dirty(p));
    char *saved = pools_state_json(p);
    pools_free(p);

    /* a restart an hour later: still held */
    int64_t t = T0 + 3 * HOUR;
    pools *q = make(t);
    pools_set_complaint_hold_rate(q, 0.001);
    char *err = NULL;
    ck_assert_msg(pools_state_load(q, saved, t, &err) == 0, "load: %s", err);
    ck_assert_int_eq(pools_complaints_24h(q, "marketing", "gmail", t), 2);
    ck_assert_int_eq(pools_complaints_24h(q, "marketing", "yahoo", t), 1);
    ck_assert(pools_provider_held(q, "marketing", "gmail", t));
    ck_assert(!pools_provider_held(q, "marketing", "yahoo", t));
    int64_t before = cap(q, "127.0.0.20", "gmail", t);
    ok(q, "127.0.0.20", "gmail", 100, t);
    ck_assert_int_eq(cap(q, "127.0.0.20", "gmail", t), before);
    /* saving again gives the same complaints */
    char *again = pools_state_json(q);
    ck_assert_msg(strstr(again, "\"complaints\":{\"marketing\":{\"gmail\":[["), "%s", again);
    free(again);
    pools_free(q);

    /* loaded after the 24 h: forgotten */
    q = make(T0 + 2 * DAY);
    pools_set_complaint_hold_rate(q, 0.001);
    ck_assert_msg(pools_state_load(q, saved, T0 + 2 * DAY, &err) == 0, "load: %s", err);
    ck_assert_int_eq(pools_complaints_24h(q, "marketing", "gmail", T0 + 2 * DAY), 0);
    pools_free(q);

    /* a state saved before complaints existed still loads */
    char *old = util_strdup(saved);
    char *cut = strstr(old, ",\"complaints\":");
    ck_assert_ptr_nonnull(cut);
    strcpy(cut, "}");
    q = make(t);
    ck_assert_msg(pools_state_load(q, old, t, &err) == 0, "load: %s", err);
    ck_assert_int_eq(pools_complaints_24h(q, "marketing", "gmail", t), 0);
    ck_assert_int_eq(cap_of(q, "127.0.0.20", "gmail", t).sent_24h, 600);   /* the rest loaded */
    pools_free(q);
    free(old);
    free(saved);
}
END_TEST

static const char *const bad_complaints[] = {
    "{\"version\": 1, \"zones_down\": [], \"ips\": {}, \"complaints\": []}",
    "{\"version\": 1, \"zones_down\": [], \"ips\": {}, \"complaints\": {\"marketing\": 3}}",
    "{\"version\": 1, \"zones_down\": [], \"ips\": {}, \"complaints\": {\"marketing\": "
    "{\"gmail\": {}}}}",
    "{\"version\": 1, \"zones_down\": [], \"ips\": {}, \"complaints\": {\"marketing\": "
    "{\"gmail\": [[1, -2]]}}}",
    "{\"version\": 1, \"zones_down\": [], \"ips\": {}, \"complaints\": {\"marketing\": "
    "{\"gmail\": [[\"x\", 2]]}}}",
};

START_TEST(test_state_bad_complaints_rejected)
{
    pools *p = make(T0);
    pools_set_complaint_hold_rate(p, 0.001);
    pools_record_complaint(p, "marketing", "gmail", 3, T0);
    char *err = NULL;
    ck_assert_int_eq(pools_state_load(p, bad_complaints[_i], T0, &err), -1);
    ck_assert_msg(err && strstr(err, "complaints"), "input %d: err %s", _i, err);
    free(err);
    ck_assert_int_eq(pools_complaints_24h(p, "marketing", "gmail", T0), 3);   /* unchanged */
    pools_free(p);
}
END_TEST

static const struct {
    const char *domain, *provider;
} domains[] = {
    {"gmail.com", "gmail"},         {"GMAIL.COM", "gmail"},
    {"googlemail.com", "gmail"},    {"gmail.com.", "gmail"},
    {"notgmail.com", "other"},      {"gmail.com.evil.test", "other"},
    {"mail.gmail.com", "other"},
    {"hotmail.co.uk", "microsoft"}, {"hotmail.com", "microsoft"},
    {"live.fr", "microsoft"},       {"Live.COM", "microsoft"},
    {"olive.fr", "other"},          {"outlook.com", "microsoft"},
    {"msn.com", "microsoft"},
    {"yahoo.co.jp", "yahoo"},       {"yahoo.com", "yahoo"},
    {"ymail.com", "yahoo"},         {"aol.com", "yahoo"},
    {"rocketmail.com", "yahoo"},    {"notyahoo.com", "other"},
    {"example.com", "other"},       {"", "other"},
    {NULL, "other"},
};

START_TEST(test_provider_of_domain)
{
    const char *got = pools_provider_of_domain(domains[_i].domain);
    ck_assert_msg(strcmp(got, domains[_i].provider) == 0, "%s: %s, want %s",
                  domains[_i].domain ? domains[_i].domain : "(null)", got, domains[_i].provider);
}
END_TEST

static Suite *complaints_suite(void)
{
    Suite *s = suite_create("complaints");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_hold_and_release);
    tcase_add_test(tc, test_more_mail_lifts_the_hold);
    tcase_add_test(tc, test_one_complaint_never_holds);
    tcase_add_test(tc, test_rate_zero_never_holds);
    tcase_add_test(tc, test_unknown_pool_ignored);
    tcase_add_test(tc, test_state_round_trip);
    tcase_add_loop_test(tc, test_state_bad_complaints_rejected, 0,
                        sizeof bad_complaints / sizeof bad_complaints[0]);
    tcase_add_loop_test(tc, test_provider_of_domain, 0, sizeof domains / sizeof domains[0]);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(complaints_suite);
