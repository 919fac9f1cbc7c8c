/* test_health.c — failover of dedicated IPs (pools/health.c through pools.h): a bind failure
 * takes an IP down at once; connect failures do only when other IPs of the pool reach the
 * same sites; the cool-down, the single half-open probe, and the doubling cool-down when the
 * probe fails; the sites an IP reached, remembered for the window at any number of sites.
 * Clock injected. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "pools/health.h"
#include "pools/pools.h"
#include "tests/unit/testlib.h"

#define T0 INT64_C(1700000000000)
#define SEC INT64_C(1000)
#define MIN (60 * SEC)

static char *zones[] = {"az1", "az2", "az3"};
static config_pool cfg_pools[] = {
    {.name = "transactional", .scaling = CONFIG_SCALING_STANDARD},
    {.name = "solo", .scaling = CONFIG_SCALING_STANDARD},
};
static config_ip ips[] = {
    {.address = "127.0.0.10", .zone = "az1", .pool = "transactional", .warmup = CONFIG_WARMUP_DONE},
    {.address = "127.0.0.11", .zone = "az2", .pool = "transactional", .warmup = CONFIG_WARMUP_DONE},
    {.address = "127.0.0.12", .zone = "az3", .pool = "transactional", .warmup = CONFIG_WARMUP_DONE},
    {.address = "127.0.0.30", .zone = "az1", .pool = "solo", .warmup = CONFIG_WARMUP_DONE},
};

static pools *make(int64_t now)
{
    config *c = testlib_config_new();       /* warm-up: 45 days, 50 -> 50000, calendar, 4 */
    for (size_t i = 0; i < 3; i++) testlib_config_add_zone(c, zones[i]);
    for (size_t i = 0; i < 2; i++)
        testlib_config_add_pool(c, cfg_pools[i].name, cfg_pools[i].scaling);
    for (size_t i = 0; i < 4; i++)
        testlib_config_add_ip(c, ips[i].address, ips[i].zone, ips[i].pool, ips[i].warmup);
    pools *p = pools_new(c, NULL, now);     /* default opts: 60 s, 10 min, 3 failures, 2 sites */
    config_unref(c);                        /* pools copies what it keeps */
    return p;
}

static pools_ip_info info(pools *p, const char *addr, int64_t now)
{
    pools_ip_info in;
    ck_assert_int_eq(pools_info_by_address(p, addr, now, &in), 0);
    return in;
}

static void fail_connect(pools *p, const char *addr, const char *site, int64_t now)
{
    pools_record_result(p, pools_find(p, addr), site, "other", POOLS_RESULT_CONNECT_FAILED, 0, now);
}

static void ok(pools *p, const char *addr, const char *site, int64_t now)
{
    pools_record_result(p, pools_find(p, addr), site, "other", POOLS_RESULT_OK, 1, now);
}

START_TEST(test_defaults)
{
    pools_opts o;
    pools_opts_default(&o);
    ck_assert_int_eq(o.cooldown_ms, 60 * SEC);
    ck_assert_int_eq(o.cooldown_max_ms, 10 * MIN);
    ck_assert_int_eq(o.failures_to_open, 3);
    ck_assert_int_eq(o.sites_to_open, 2);
    ck_assert_int_eq(o.peer_success_window_ms, 10 * MIN);
}
END_TEST

START_TEST(test_bind_failure_opens_at_once)
{
    pools *p = make(T0);
    pools_record_result(p, pools_find(p, "127.0.0.10"), "mx1.a.test", "other",
                        POOLS_RESULT_BIND_FAILED, 0, T0);
    pools_ip_info in = info(p, "127.0.0.10", T0);
    ck_assert_int_eq(in.state, POOLS_STATE_DOWN);
    ck_assert_int_eq(in.health, POOLS_HEALTH_OPEN);
    ck_assert_str_eq(in.down_reason, "bind failed");
    ck_assert_int_eq(in.down_until_ms, T0 + 60 * SEC);
    /* the pool's other IPs carry on, in another zone first */
    pools_choice ch;
    for (int i = 0; i < 10; i++) {
        pools_choose(p, "transactional", "mx1.a.test", "other", "127.0.0.10", "az1", T0, &ch);
        ck_assert_int_eq(ch.verdict, POOLS_CHOSEN);
        ck_assert_str_ne(pools_ip_address(ch.ip), "127.0.0.10");
    }
    /* a one-IP pool waits, and knows until when */
    pools_record_result(p, pools_find(p, "127.0.0.30"), "mx1.a.test", "other",
                        POOLS_RESULT_BIND_FAILED, 0, T0 + SEC);
    pools_choose(p, "solo", "mx1.a.test", "other", NULL, NULL, T0 + 2 * SEC, &ch);
    ck_assert_int_eq(ch.verdict, POOLS_ALL_DOWN);
    ck_assert_int_eq(ch.retry_at_ms, T0 + 61 * SEC);
    ck_assert_msg(strstr(ch.reason, "127.0.0.30 bind failed, back in 59s"), "reason: %s", ch.reason);
    pools_free(p);
}
END_TEST

START_TEST(test_connect_failures_with_peer_success_open)
{
    pools *p = make(T0);
    ok(p, "127.0.0.11", "mx1.a.test", T0);
    ok(p, "127.0.0.12", "mx2.b.test", T0 + SEC);
    fail_connect(p, "127.0.0.10", "mx1.a.test", T0 + 2 * SEC);
    fail_connect(p, "127.0.0.10", "mx2.b.test", T0 + 3 * SEC);
    ck_assert_int_eq(info(p, "127.0.0.10", T0 + 3 * SEC).state, POOLS_STATE_ACTIVE);
    fail_connect(p, "127.0.0.10", "mx1.a.test", T0 + 4 * SEC);
    pools_ip_info in = info(p, "127.0.0.10", T0 + 4 * SEC);
    ck_assert_int_eq(in.state, POOLS_STATE_DOWN);
    ck_assert_int_eq(in.health, POOLS_HEALTH_OPEN);
    ck_assert_int_eq(in.down_until_ms, T0 + 64 * SEC);
    ck_assert_msg(strstr(in.down_reason, "3 consecutive connect failures"), "%s", in.down_reason);
    ck_assert_msg(strstr(in.down_reason, "mx1.a.test") && strstr(in.down_reason, "mx2.b.test"),
                  "%s", in.down_reason);
    /* the others stay in */
    ck_assert_int_eq(info(p, "127.0.0.11", T0 + 4 * SEC).state, POOLS_STATE_ACTIVE);
    pools_free(p);
}
END_TEST

/* The destinations' own outage: the same failures take no IP down. */
typedef struct {
    const char *name;
    int64_t peer_ok_at;          /* 0: no peer success at all */
    const char *sites[4];        /* the failing IP's three failures */
} closed_case;

static const closed_case closed_cases[] = {
    {"no other IP reached those sites", 0, {"mx1.a.test", "mx2.b.test", "mx1.a.test"}},
    {"the peer success is older than 10 minutes", -11 * MIN,
     {"mx1.a.test", "mx2.b.test", "mx1.a.test"}},
    {"all failures at one site", -SEC, {"mx1.a.test", "mx1.a.test", "mx1.a.test"}},
};

START_TEST(test_connect_failures_stay_closed)
{
    const closed_case *c = &closed_cases[_i];
    int64_t t = T0 + 20 * MIN;
    pools *p = make(T0);
    if (c->peer_ok_at) {
        ok(p, "127.0.0.11", "mx1.a.test", t + c->peer_ok_at);
        ok(p, "127.0.0.12", "mx2.b.test", t + c->peer_ok_at);
    }
    for (int i = 0; i < 3; i++) fail_connect(p, "127.0.0.10", c->sites[i], t + i * SEC);
    pools_ip_info in = info(p, "127.0.0.10", t + 3 * SEC);
    ck_assert_msg(in.state == POOLS_STATE_ACTIVE && in.health == POOLS_HEALTH_CLOSED,
                  "%s: went %s", c->name, pools_state_name(in.state));
    pools_choice ch;
    pools_choose(p, "solo", "x", "other", NULL, NULL, t, &ch);   /* unrelated pool untouched */
    ck_assert_int_eq(ch.verdict, POOLS_CHOSEN);
    pools_free(p);
}
END_TEST

START_TEST(test_success_resets_the_count)
{
    pools *p = make(T0);
    ok(p, "127.0.0.11", "mx1.a.test", T0);
    ok(p, "127.0.0.11", "mx2.b.test", T0);
    fail_connect(p, "127.0.0.10", "mx1.a.test", T0 + 1 * SEC);
    fail_connect(p, "127.0.0.10", "mx2.b.test", T0 + 2 * SEC);
    ok(p, "127.0.0.10", "mx3.c.test", T0 + 3 * SEC);
    fail_connect(p, "127.0.0.10", "mx1.a.test", T0 + 4 * SEC);
    fail_connect(p, "127.0.0.10", "mx2.b.test", T0 + 5 * SEC);
    ck_assert_int_eq(info(p, "127.0.0.10", T0 + 5 * SEC).state, POOLS_STATE_ACTIVE);
    /* a throttling reply also shows the IP reaches the site */
    pools_record_result(p, pools_find(p, "127.0.0.10"), "mx3.c.test", "other",
                        POOLS_RESULT_THROTTLED, 0, T0 + 6 * SEC);
    fail_connect(p, "127.0.0.10", "mx1.a.test", T0 + 7 * SEC);
    fail_connect(p, "127.0.0.10", "mx2.b.test", T0 + 8 * SEC);
    ck_assert_int_eq(info(p, "127.0.0.10", T0 + 8 * SEC).state, POOLS_STATE_ACTIVE);
    fail_connect(p, "127.0.0.10", "mx1.a.test", T0 + 9 * SEC);   /* now three in a row */
    ck_assert_int_eq(info(p, "127.0.0.10", T0 + 9 * SEC).state, POOLS_STATE_DOWN);
    pools_free(p);
}
END_TEST

START_TEST(test_half_open_single_probe)
{
    pools *p = make(T0);
    pools_ip *ip = pools_find(p, "127.0.0.30");
    pools_record_result(p, ip, "mx1.a.test", "other", POOLS_RESULT_BIND_FAILED, 0, T0);
    pools_choice ch;
    pools_choose(p, "solo", "mx1.a.test", "other", NULL, NULL, T0 + 59 * SEC, &ch);
    ck_assert_int_eq(ch.verdict, POOLS_ALL_DOWN);
    /* late results of sessions that were already open change nothing while open */
    pools_record_result(p, ip, "mx1.a.test", "other", POOLS_RESULT_OK, 1, T0 + 30 * SEC);
    ck_assert_int_eq(info(p, "127.0.0.30", T0 + 30 * SEC).health, POOLS_HEALTH_OPEN);

    /* cool-down over: half-open, shown as active, chosen for one probe */
    pools_ip_info in = info(p, "127.0.0.30", T0 + 60 * SEC);
    ck_assert_int_eq(in.health, POOLS_HEALTH_HALF_OPEN);
    ck_assert_int_eq(in.state, POOLS_STATE_ACTIVE);
    pools_choose(p, "solo", "mx1.a.test", "other", NULL, NULL, T0 + 60 * SEC, &ch);
    ck_assert_int_eq(ch.verdict, POOLS_CHOSEN);
    ck_assert_ptr_eq(ch.ip, ip);
    ck_assert_msg(strstr(ch.reason, "probe"), "reason: %s", ch.reason);
    pools_session_started(p, ip);
    pools_choose(p, "solo", "mx1.a.test", "other", NULL, NULL, T0 + 61 * SEC, &ch);
    ck_assert_int_eq(ch.verdict, POOLS_ALL_DOWN);            /* one probe only */
    ck_assert_msg(strstr(ch.reason, "probe"), "reason: %s", ch.reason);
    ck_assert_int_eq(ch.retry_at_ms, 0);

    /* the probe gets through: closed, back in full rotation */
    pools_record_result(p, ip, "mx1.a.test", "other", POOLS_RESULT_OK, 1, T0 + 62 * SEC);
    pools_session_ended(p, ip);
    in = info(p, "127.0.0.30", T0 + 62 * SEC);
    ck_assert_int_eq(in.health, POOLS_HEALTH_CLOSED);
    ck_assert_str_eq(in.down_reason, "");
    for (int i = 0; i < 3; i++) {
        pools_choose(p, "solo", "mx1.a.test", "other", NULL, NULL, T0 + 63 * SEC, &ch);
        ck_assert_int_eq(ch.verdict, POOLS_CHOSEN);
        pools_session_started(p, ip);
    }
    ck_assert_int_eq(info(p, "127.0.0.30", T0 + 63 * SEC).sessions, 3);
    for (int i = 0; i < 3; i++) pools_session_ended(p, ip);
    /* and a later failure starts again from the first cool-down */
    pools_record_result(p, ip, "mx1.a.test", "other", POOLS_RESULT_BIND_FAILED, 0, T0 + 100 * SEC);
    ck_assert_int_eq(info(p, "127.0.0.30", T0 + 100 * SEC).down_until_ms, T0 + 160 * SEC);
    pools_free(p);
}
END_TEST

START_TEST(test_failed_probe_doubles_cooldown)
{
    pools *p = make(T0);
    pools_ip *ip = pools_find(p, "127.0.0.30");
    pools_record_result(p, ip, "mx1.a.test", "other", POOLS_RESULT_BIND_FAILED, 0, T0);
    int64_t t = T0, cool = 60 * SEC;
    /* 60 s, then 120, 240, 480, capped at 600 */
    const int64_t expect[] = {120 * SEC, 240 * SEC, 480 * SEC, 600 * SEC, 600 * SEC};
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
        t += cool;
        pools_choice ch;
        pools_choose(p, "solo", "mx1.a.test", "other", NULL, NULL, t, &ch);
        ck_assert_int_eq(ch.verdict, POOLS_CHOSEN);
        pools_session_started(p, ip);
        if (i % 2 == 0) {
            fail_connect(p, "127.0.0.30", "mx1.a.test", t + SEC);
        } else {
            pools_record_result(p, ip, "mx1.a.test", "other", POOLS_RESULT_BIND_FAILED, 0, t + SEC);
        }
        pools_session_ended(p, ip);
        pools_ip_info in = info(p, "127.0.0.30", t + SEC);
        ck_assert_int_eq(in.health, POOLS_HEALTH_OPEN);
        ck_assert_msg(in.down_until_ms == t + SEC + expect[i], "probe %zu: down for %lld ms", i,
                      (long long)(in.down_until_ms - t - SEC));
        ck_assert_msg(strstr(in.down_reason, "probe failed"), "%s", in.down_reason);
        cool = expect[i] + SEC;
    }
    pools_free(p);
}
END_TEST

START_TEST(test_probe_slot_freed_by_session_end)
{
    pools *p = make(T0);
    pools_ip *ip = pools_find(p, "127.0.0.30");
    pools_record_result(p, ip, "mx1.a.test", "other", POOLS_RESULT_BIND_FAILED, 0, T0);
    pools_choice ch;
    pools_choose(p, "solo", "mx1.a.test", "other", NULL, NULL, T0 + 60 * SEC, &ch);
    ck_assert_int_eq(ch.verdict, POOLS_CHOSEN);
    pools_session_started(p, ip);
    pools_session_ended(p, ip);              /* the probe ended with nothing to say */
    pools_choose(p, "solo", "mx1.a.test", "other", NULL, NULL, T0 + 61 * SEC, &ch);
    ck_assert_int_eq(ch.verdict, POOLS_CHOSEN);
    ck_assert_int_eq(info(p, "127.0.0.30", T0 + 61 * SEC).health, POOLS_HEALTH_HALF_OPEN);
    pools_free(p);
}
END_TEST

START_TEST(test_state_names)
{
    ck_assert_str_eq(pools_state_name(POOLS_STATE_ACTIVE), "active");
    ck_assert_str_eq(pools_state_name(POOLS_STATE_DRAINING), "draining");
    ck_assert_str_eq(pools_state_name(POOLS_STATE_DOWN), "down");
    ck_assert_str_eq(pools_health_name(POOLS_HEALTH_CLOSED), "closed");
    ck_assert_str_eq(pools_health_name(POOLS_HEALTH_OPEN), "open");
    ck_assert_str_eq(pools_health_name(POOLS_HEALTH_HALF_OPEN), "half-open");
}
END_TEST

START_TEST(test_breaker_unit)
{
    /* the breaker alone, with shortened tunables as the scheduler's tests use them */
    pools_opts o = {.cooldown_ms = 100, .cooldown_max_ms = 250, .failures_to_open = 2,
                    .sites_to_open = 1, .peer_success_window_ms = 1000};
    health h;
    health_init(&h, &o);
    health_connect_failed(&h, &o, "s1", 0, NULL, NULL);
    health_connect_failed(&h, &o, "s1", 1, NULL, NULL);      /* no peer said yes */
    ck_assert_int_eq(health_state(&h, 2), POOLS_HEALTH_CLOSED);
    health_ok(&h, &o, "s1", 10);
    ck_assert(health_reached_since(&h, "s1", 10));
    ck_assert(!health_reached_since(&h, "s1", 11));
    ck_assert(!health_reached_since(&h, "s2", 0));
    /* many distinct sites: memory stays bounded, old reached sites are pruned */
    char name[32];
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "site%d", i);
        health_ok(&h, &o, name, 2000 + i);
    }
    ck_assert(!health_reached_since(&h, "s1", 0));
    ck_assert_uint_le(h.nreached, 100);
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof name, "down%d", i);
        health_connect_failed(&h, &o, name, 3000, NULL, NULL);
    }
    ck_assert_uint_eq(h.nfailed, HEALTH_MAX_FAILED_SITES);
    health_bind_failed(&h, &o, 3000, "bind failed");
    ck_assert_int_eq(health_state(&h, 3099), POOLS_HEALTH_OPEN);
    ck_assert(!health_usable(&h, 3099));
    ck_assert(health_usable(&h, 3100));
    health_bind_failed(&h, &o, 3100, "bind failed");                        /* probe failed: 200 */
    ck_assert_int_eq(health_down_until(&h), 3300);
    health_bind_failed(&h, &o, 3300, "bind failed");                        /* 400, capped at 250 */
    ck_assert_int_eq(health_down_until(&h), 3550);
    health_free(&h);
}
END_TEST

/* 100,000 sites reached within the window are all remembered (each answers for itself,
 * unreached ones do not), a site reached again is not added twice, and once the window has
 * passed them, new sites take their place: the table shrinks back to what the window holds. */
START_TEST(test_reached_many_sites)
{
    pools_opts o = {.cooldown_ms = 100, .cooldown_max_ms = 250, .failures_to_open = 2,
                    .sites_to_open = 1, .peer_success_window_ms = 600000};
    health h;
    health_init(&h, &o);
    char name[32];
    for (int i = 0; i < 100000; i++) {
        snprintf(name, sizeof name, "mx.d%d.test", i);
        health_ok(&h, &o, name, 1000 + i / 1000);
    }
    for (int i = 0; i < 100000; i += 7) {
        snprintf(name, sizeof name, "mx.d%d.test", i);
        health_ok(&h, &o, name, 2000);                       /* again, later */
    }
    ck_assert_uint_eq(h.nreached, 100000);
    for (int i = 0; i < 100000; i++) {
        snprintf(name, sizeof name, "mx.d%d.test", i);
        ck_assert_msg(health_reached_since(&h, name, 1000 + i / 1000), "%s", name);
        ck_assert(health_reached_since(&h, name, 1001 + i / 1000) == (i % 7 == 0));
    }
    ck_assert(!health_reached_since(&h, "mx.d100000.test", 0));
    ck_assert(!health_reached_since(&h, "", 0));
    size_t big = h.areached;
    /* the window passes: 1,000 new sites later, the old ones are gone */
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "later%d.test", i);
        health_ok(&h, &o, name, 2000 + 600001 + i);
    }
    ck_assert(!health_reached_since(&h, "mx.d5.test", 0));
    ck_assert_uint_le(h.nreached, 1000);
    ck_assert_uint_lt(h.areached, big / 16);
    snprintf(name, sizeof name, "later%d.test", 999);
    ck_assert(health_reached_since(&h, name, 0));
    health_free(&h);
}
END_TEST

static Suite *health_suite(void)
{
    Suite *s = suite_create("health");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_bind_failure_opens_at_once);
    tcase_add_test(tc, test_connect_failures_with_peer_success_open);
    tcase_add_loop_test(tc, test_connect_failures_stay_closed, 0,
                        sizeof closed_cases / sizeof closed_cases[0]);
    tcase_add_test(tc, test_success_resets_the_count);
    tcase_add_test(tc, test_half_open_single_probe);
    tcase_add_test(tc, test_failed_probe_doubles_cooldown);
    tcase_add_test(tc, test_probe_slot_freed_by_session_end);
    tcase_add_test(tc, test_state_names);
    tcase_add_test(tc, test_breaker_unit);
    tcase_add_test(tc, test_reached_many_sites);
    tcase_set_timeout(tc, 60);   /* 100,000 sites under ASan on a busy machine: not a speed test */
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(health_suite);
