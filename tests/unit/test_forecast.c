/* test_forecast.c — the capacity forecast (pools/forecast.c) over real pools state built from
 * config fixtures: SES's ramp for a new IP (first_day 50, target 50,000, 45 days: every
 * day's cap and the day it is warm), an IP moved to 50 %, a `warmup: done` IP, calendar
 * against volume advance (what must be sent to keep the ramp moving), a draining IP left out
 * of its set's capacity, a managed pool's slow-start doubling, and the bounds of N.
 * Clock injected. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "pools/complaints.h"
#include "pools/forecast.h"
#include "pools/pools.h"
#include "tests/unit/testlib.h"

#define T0 INT64_C(1700000000000)
#define DAY INT64_C(86400000)

static const config_warmup SES = {.days = 45, .first_day = 50, .target = 50000,
                                  .advance = CONFIG_ADVANCE_CALENDAR, .pacing = 4};

/* SES's ramp, day d of 45: floor(50 * 1000^(d/45)), checked with exact integers
 * (n^45 <= 50^45 * 1000^d < (n+1)^45; day 15 is exactly 500 and day 30 exactly 5000). */
static const int64_t ses_caps[46] = {
    50,    58,    67,    79,    92,    107,   125,   146,   170,   199,   232,   270,
    315,   367,   428,   500,   582,   679,   792,   923,   1077,  1255,  1464,  1707,
    1990,  2320,  2705,  3154,  3678,  4288,  5000,  5829,  6796,  7924,  9239,  10772,
    12559, 14643, 17072, 19905, 23207, 27058, 31547, 36782, 42884, 50000,
};

/* The formula, computed here as warmup_cap rounds it: floor(x + 1e-6). */
static int64_t formula_cap(double pct)
{
    if (pct >= 100) return SES.target;
    long double x = 50.0L * powl(1000.0L, (long double)pct / 100.0L) + 1e-6L;
    return (int64_t)floorl(x);
}

/* Pool "transactional" (standard) with the given IPs (NULL-terminated address, warmup pairs
 * in zones az1..az3), pool "marketing" (managed) with 127.0.0.20, sets txn and news on
 * transactional, promo on marketing. */
typedef struct ipdef {
    const char *addr;
    config_warmup_state warmup;
} ipdef;

static config *make_cfg(config_advance advance, const ipdef *ips, size_t n)
{
    static const char *const zones[] = {"az1", "az2", "az3"};
    config *c = testlib_config_new();
    for (size_t i = 0; i < 3; i++) testlib_config_add_zone(c, zones[i]);
    testlib_config_add_pool(c, "transactional", CONFIG_SCALING_STANDARD);
    testlib_config_add_pool(c, "marketing", CONFIG_SCALING_MANAGED);
    for (size_t i = 0; i < n; i++)
        testlib_config_add_ip(c, ips[i].addr, zones[i % 3], "transactional", ips[i].warmup);
    testlib_config_add_ip(c, "127.0.0.20", "az1", "marketing", CONFIG_WARMUP_NEW);
    testlib_config_add_set(c, "txn", "transactional");
    testlib_config_add_set(c, "news", "transactional");
    testlib_config_add_set(c, "promo", "marketing");
    testlib_config_set_default_set(c, "txn");
    c->warmup = SES;
    c->warmup.advance = advance;
    return c;
}

static const forecast_ip *ip_of(const forecast *f, const char *addr)
{
    for (size_t i = 0; i < f->nips; i++)
        if (strcmp(f->ips[i].address, addr) == 0) return &f->ips[i];
    ck_abort_msg("%s is not in the forecast", addr);
    return NULL;
}

static void build(forecast *f, pools *p, const config *c, const char *set, int days,
                  int64_t now)
{
    char *err = NULL;
    int rc = forecast_build(f, p, c, set, days, now, &err);
    ck_assert_msg(rc == 0, "forecast_build: %s", err ? err : "?");
}

/* A new IP on SES's ramp: the 45 caps, and the target on day 45, 45 days after its lease. */
START_TEST(test_ses_ramp_new_ip)
{
    ipdef ips[] = {{"127.0.0.10", CONFIG_WARMUP_NEW}};
    config *c = make_cfg(CONFIG_ADVANCE_CALENDAR, ips, 1);
    pools *p = pools_new(c, NULL, T0);
    forecast f;
    build(&f, p, c, "txn", 45, T0 + 5000);   /* a moment after the lease */
    ck_assert_int_eq(f.days, 45);
    ck_assert_uint_eq(f.nsets, 1);
    ck_assert_uint_eq(f.nips, 1);                    /* only txn's pool */
    const forecast_ip *ip = ip_of(&f, "127.0.0.10");
    ck_assert_str_eq(ip->warmup_status, "IN_PROGRESS");
    for (int d = 0; d < 45; d++) {
        ck_assert_msg(ip->cap[d] == ses_caps[d], "day %d: cap %lld, want %lld", d,
                      (long long)ip->cap[d], (long long)ses_caps[d]);
        ck_assert_int_eq(formula_cap(100.0 * d / 45), ses_caps[d]);
        ck_assert_int_eq(f.sets[0].capacity[d], ses_caps[d]);
        ck_assert_int_eq(ip->needed[d], 0);          /* calendar: nothing needed */
    }
    ck_assert_int_eq(ip->target, FORECAST_TARGET_REACHED);
    ck_assert_int_eq(ip->reach_day, 45);
    ck_assert_int_eq(ip->reach_ms, T0 + 45 * DAY);
    char buf[64];
    ck_assert_str_eq(forecast_target_text(&f, ip, buf, sizeof buf), "day 45");
    forecast_free(&f);

    /* 44 days: the target is one day beyond */
    build(&f, p, c, "txn", 44, T0 + 5000);
    ck_assert_int_eq(f.ips[0].target, FORECAST_TARGET_NOT_WITHIN);
    ck_assert_int_eq(f.ips[0].reach_day, -1);
    ck_assert_str_eq(forecast_target_text(&f, &f.ips[0], buf, sizeof buf), "not within 44 days");
    forecast_free(&f);

    /* asked 10 days into the ramp: day 0 is ramp day 10 */
    build(&f, p, c, NULL, 14, T0 + 10 * DAY + 3600000);
    ip = ip_of(&f, "127.0.0.10");
    for (int d = 0; d < 14; d++) ck_assert_int_eq(ip->cap[d], ses_caps[10 + d]);
    ck_assert_uint_eq(f.nsets, 3);
    forecast_free(&f);
    pools_free(p);
    config_unref(c);
}
END_TEST

/* An IP moved to 50 %: cap 1581 today, the rest of the ramp in 22.5 days (day 23). */
START_TEST(test_half_way)
{
    ipdef ips[] = {{"127.0.0.10", CONFIG_WARMUP_NEW}};
    config *c = make_cfg(CONFIG_ADVANCE_CALENDAR, ips, 1);
    pools *p = pools_new(c, NULL, T0);
    char *err = NULL;
    ck_assert_int_eq(pools_set_warmup(p, "127.0.0.10", 50, T0 + DAY, &err), 0);
    forecast f;
    build(&f, p, c, "txn", 30, T0 + DAY);
    const forecast_ip *ip = ip_of(&f, "127.0.0.10");
    ck_assert_int_eq(ip->cap[0], 1581);                 /* 50 * 1000^0.5 */
    for (int d = 0; d < 30; d++) {
        double pct = 50 + 100.0 * d / 45;
        ck_assert_msg(ip->cap[d] == formula_cap(pct), "day %d: %lld, want %lld", d,
                      (long long)ip->cap[d], (long long)formula_cap(pct));
    }
    ck_assert_int_eq(ip->cap[22], 46305);
    ck_assert_int_eq(ip->cap[23], 50000);
    ck_assert_int_eq(ip->reach_day, 23);
    ck_assert_int_eq(ip->reach_ms, T0 + DAY + 23 * DAY);
    forecast_free(&f);
    pools_free(p);
    config_unref(c);
}
END_TEST

/* `warmup: done`: at the target from today, done, adding 50,000 a day to its set. */
START_TEST(test_done_ip)
{
    ipdef ips[] = {{"127.0.0.10", CONFIG_WARMUP_NEW}, {"127.0.0.12", CONFIG_WARMUP_DONE}};
    config *c = make_cfg(CONFIG_ADVANCE_CALENDAR, ips, 2);
    pools *p = pools_new(c, NULL, T0);
    forecast f;
    build(&f, p, c, "txn", 45, T0);
    const forecast_ip *done = ip_of(&f, "127.0.0.12");
    ck_assert_str_eq(done->warmup_status, "DONE");
    ck_assert_int_eq(done->target, FORECAST_TARGET_DONE);
    ck_assert_int_eq(done->reach_day, 0);
    char buf[64];
    ck_assert_str_eq(forecast_target_text(&f, done, buf, sizeof buf), "done");
    for (int d = 0; d < 45; d++) {
        ck_assert_int_eq(done->cap[d], 50000);
        ck_assert_int_eq(f.sets[0].capacity[d], 50000 + ses_caps[d]);
    }
    ck_assert_int_eq(f.sets[0].capacity[0], 50050);
    ck_assert_uint_eq(f.sets[0].ncounted, 2);
    /* txn and news share the pool: each says so */
    ck_assert_uint_eq(f.sets[0].nshared, 1);
    ck_assert_str_eq(f.sets[0].shared_with[0], "news");
    forecast_free(&f);
    pools_free(p);
    config_unref(c);
}
END_TEST

/* Volume advance: the same caps when fed, and "needed" = ceil(cap/2) per IP, summed per set;
 * after 3 idle days the volume ramp has not moved while the calendar one has. */
START_TEST(test_calendar_vs_volume)
{
    ipdef ips[] = {{"127.0.0.10", CONFIG_WARMUP_NEW}, {"127.0.0.11", CONFIG_WARMUP_NEW},
                   {"127.0.0.12", CONFIG_WARMUP_DONE}};
    config *cal = make_cfg(CONFIG_ADVANCE_CALENDAR, ips, 3);
    config *vol = make_cfg(CONFIG_ADVANCE_VOLUME, ips, 3);
    pools *pc = pools_new(cal, NULL, T0), *pv = pools_new(vol, NULL, T0);
    forecast fc, fv;
    build(&fc, pc, cal, "txn", 46, T0);
    build(&fv, pv, vol, "txn", 46, T0);
    ck_assert(!fc.volume);
    ck_assert(fv.volume);
    const forecast_ip *a = ip_of(&fv, "127.0.0.10"), *b = ip_of(&fv, "127.0.0.11");
    for (int d = 0; d < 46; d++) {
        ck_assert_int_eq(a->cap[d], ses_caps[d]);
        ck_assert_int_eq(fc.sets[0].capacity[d], fv.sets[0].capacity[d]);
        int64_t half = d < 45 ? (ses_caps[d] + 1) / 2 : 0;   /* done on day 45: nothing */
        ck_assert_int_eq(a->needed[d], half);
        ck_assert_int_eq(b->needed[d], half);
        ck_assert_int_eq(fv.sets[0].needed[d], 2 * half);    /* the warm IP needs nothing */
        ck_assert_int_eq(fc.sets[0].needed[d], 0);
    }
    ck_assert_int_eq(fv.sets[0].needed[0], 50);              /* 25 + 25 */
    ck_assert_int_eq(fv.sets[0].needed[1], 58);              /* 29 + 29 */
    ck_assert_int_eq(a->reach_day, 45);
    forecast_free(&fc);
    forecast_free(&fv);

    /* nothing sent for 3 days: calendar is at day 3, volume still at day 0 */
    build(&fc, pc, cal, "txn", 14, T0 + 3 * DAY);
    build(&fv, pv, vol, "txn", 14, T0 + 3 * DAY);
    ck_assert_int_eq(ip_of(&fc, "127.0.0.10")->cap[0], 79);
    ck_assert_int_eq(ip_of(&fv, "127.0.0.10")->cap[0], 50);
    ck_assert_int_eq(ip_of(&fv, "127.0.0.10")->cap[1], 58);
    ck_assert_int_eq(ip_of(&fv, "127.0.0.10")->needed[0], 25);
    forecast_free(&fc);
    forecast_free(&fv);

    /* today already half used: tomorrow counts, whatever the forecast adds */
    pools_record_send(pv, pools_find(pv, "127.0.0.10"), NULL, 25, T0 + 3 * DAY + 1000);
    build(&fv, pv, vol, "txn", 3, T0 + 3 * DAY + 2000);
    ck_assert_int_eq(ip_of(&fv, "127.0.0.10")->cap[1], 58);
    forecast_free(&fv);
    pools_free(pc);
    pools_free(pv);
    config_unref(cal);
    config_unref(vol);
}
END_TEST

/* A released (draining) IP and an IP in a zone marked down are listed, not counted. */
START_TEST(test_draining_excluded)
{
    ipdef ips[] = {{"127.0.0.10", CONFIG_WARMUP_NEW}, {"127.0.0.11", CONFIG_WARMUP_DONE},
                   {"127.0.0.12", CONFIG_WARMUP_DONE}};
    config *c = make_cfg(CONFIG_ADVANCE_CALENDAR, ips, 3);
    pools *p = pools_new(c, NULL, T0);
    config *c2 = make_cfg(CONFIG_ADVANCE_CALENDAR, ips, 2);   /* 127.0.0.12 released */
    pools_diff diff;
    pools_apply_config(p, c2, T0, &diff);
    pools_diff_free(&diff);
    forecast f;
    build(&f, p, c2, "txn", 7, T0);
    const forecast_ip *gone = ip_of(&f, "127.0.0.12");
    ck_assert_int_eq(gone->state, POOLS_STATE_DRAINING);
    ck_assert(!gone->counted);
    ck_assert_uint_eq(f.sets[0].nips, 3);
    ck_assert_uint_eq(f.sets[0].ncounted, 2);
    for (int d = 0; d < 7; d++) ck_assert_int_eq(f.sets[0].capacity[d], 50000 + ses_caps[d]);
    forecast_free(&f);

    char *err = NULL;
    ck_assert_int_eq(pools_set_zone(p, "az2", false, &err), 0);   /* 127.0.0.11's zone */
    build(&f, p, c2, "txn", 7, T0);
    ck_assert_int_eq(ip_of(&f, "127.0.0.11")->state, POOLS_STATE_DOWN);
    ck_assert_uint_eq(f.sets[0].ncounted, 1);
    ck_assert_int_eq(f.sets[0].capacity[0], 50);
    forecast_free(&f);
    pools_free(p);
    config_unref(c);
    config_unref(c2);
}
END_TEST

/* Managed: every provider cap doubles a day up to the target; a new IP is first_day for each
 * of the four providers; a held provider stays flat. */
START_TEST(test_managed_growth)
{
    ipdef ips[] = {{"127.0.0.10", CONFIG_WARMUP_NEW}};
    config *c = make_cfg(CONFIG_ADVANCE_VOLUME, ips, 1);
    pools *p = pools_new(c, NULL, T0);
    forecast f;
    build(&f, p, c, "promo", 14, T0);
    ck_assert_uint_eq(f.nips, 1);
    const forecast_ip *m = ip_of(&f, "127.0.0.20");
    ck_assert(m->managed);
    ck_assert_str_eq(m->warmup_status, "NOT_APPLICABLE");
    ck_assert_uint_eq(m->nproviders, 4);
    ck_assert_int_eq(m->cap[0], 4 * 50);
    ck_assert_int_eq(m->cap[1], 4 * 100);
    ck_assert_int_eq(m->cap[2], 4 * 200);
    ck_assert_int_eq(m->cap[9], 4 * 25600);
    ck_assert_int_eq(m->cap[10], 4 * 50000);             /* 51200 capped */
    ck_assert_int_eq(m->reach_day, 10);
    ck_assert_int_eq(m->reach_ms, T0 + 10 * DAY);
    ck_assert_int_eq(m->needed[0], 0);                    /* volume is the standard ramp's */
    ck_assert(f.sets[0].managed);
    ck_assert_int_eq(f.sets[0].capacity[3], 4 * 400);
    forecast_free(&f);

    /* gmail accepted 30: its cap is 80 (pools.c: +accepted), the others 50 */
    pools_ip *ip = pools_find(p, "127.0.0.20");
    pools_record_result(p, ip, "gmail-smtp-in.l.google.com", "gmail", POOLS_RESULT_OK, 30, T0);
    build(&f, p, c, "promo", 14, T0 + 1000);
    m = ip_of(&f, "127.0.0.20");
    ck_assert_str_eq(m->providers[0].name, "gmail");
    ck_assert(m->providers[0].known);
    ck_assert_int_eq(m->providers[0].cap0, 80);
    ck_assert_int_eq(m->cap[0], 80 + 3 * 50);
    ck_assert_int_eq(m->cap[1], 160 + 3 * 100);
    ck_assert_int_eq(m->cap[2], 320 + 3 * 200);
    forecast_free(&f);

    /* complaints hold gmail's ramp: it stays at 80 */
    pools_set_complaint_hold_rate(p, 0.001);
    pools_record_complaint(p, "marketing", "gmail", 2, T0 + 2000);
    build(&f, p, c, "promo", 14, T0 + 3000);
    m = ip_of(&f, "127.0.0.20");
    ck_assert(m->providers[0].held);
    ck_assert_int_eq(m->cap[2], 80 + 3 * 200);
    ck_assert_int_eq(m->cap[13], 80 + 3 * 50000);
    ck_assert_int_eq(m->target, FORECAST_TARGET_NOT_WITHIN);
    forecast_free(&f);
    pools_free(p);
    config_unref(c);
}
END_TEST

/* N outside 1..90 and an unknown set are refused with the reason. */
START_TEST(test_bounds)
{
    ipdef ips[] = {{"127.0.0.10", CONFIG_WARMUP_NEW}};
    config *c = make_cfg(CONFIG_ADVANCE_CALENDAR, ips, 1);
    pools *p = pools_new(c, NULL, T0);
    forecast f;
    char *err = NULL;
    ck_assert_int_eq(forecast_build(&f, p, c, "txn", 0, T0, &err), -1);
    ck_assert_str_eq(err, "days must be from 1 to 90, not 0");
    free(err);
    forecast_free(&f);
    err = NULL;
    ck_assert_int_eq(forecast_build(&f, p, c, NULL, 91, T0, &err), -1);
    ck_assert_str_eq(err, "days must be from 1 to 90, not 91");
    free(err);
    forecast_free(&f);
    err = NULL;
    ck_assert_int_eq(forecast_build(&f, p, c, "bulk", 14, T0, &err), -1);
    ck_assert_str_eq(err, "unknown configuration set: bulk (known: txn, news, promo)");
    free(err);
    forecast_free(&f);
    ck_assert_ptr_null(forecast_days_problem(1));
    ck_assert_ptr_null(forecast_days_problem(FORECAST_MAX_DAYS));
    build(&f, p, c, "txn", 90, T0);
    ck_assert_int_eq(f.ips[0].cap[89], 50000);
    forecast_free(&f);
    pools_free(p);
    config_unref(c);
}
END_TEST

static Suite *forecast_suite(void)
{
    Suite *s = suite_create("forecast");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_ses_ramp_new_ip);
    tcase_add_test(tc, test_half_way);
    tcase_add_test(tc, test_done_ip);
    tcase_add_test(tc, test_calendar_vs_volume);
    tcase_add_test(tc, test_draining_excluded);
    tcase_add_test(tc, test_managed_growth);
    tcase_add_test(tc, test_bounds);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(forecast_suite);
