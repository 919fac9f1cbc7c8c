/* test_warmup.c — standard warm-up of dedicated IPs (pools/warmup.c through pools.h): the
 * geometric cap of the SES ramp, pacing per rolling hour, the calendar and volume advance
 * over simulated days, `kilnctl ip warmup`, and the rolling 24 h window. Clock injected. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "pools/pools.h"
#include "pools/warmup.h"
#include "tests/unit/testlib.h"

#define T0 INT64_C(1700000000000)        /* 20 s into a minute */
#define SEC INT64_C(1000)
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)

static const config_warmup SES = {.days = 45, .first_day = 50, .target = 50000,
                                  .advance = CONFIG_ADVANCE_CALENDAR, .pacing = 4};

static char *zones[] = {"az1", "az2", "az3"};
static config_pool cfg_pools[] = {
    {.name = "transactional", .scaling = CONFIG_SCALING_STANDARD},
    {.name = "marketing", .scaling = CONFIG_SCALING_MANAGED},
};
static config_ip one_ip[] = {
    {.address = "127.0.0.10", .zone = "az1", .pool = "transactional"},
    {.address = "127.0.0.20", .zone = "az2", .pool = "marketing"},
};

static config *make_cfg_ips(config_advance advance, int pacing, const config_ip *ips,
                            size_t nips)
{
    config *c = testlib_config_new();
    for (size_t i = 0; i < 3; i++) testlib_config_add_zone(c, zones[i]);
    for (size_t i = 0; i < 2; i++)
        testlib_config_add_pool(c, cfg_pools[i].name, cfg_pools[i].scaling);
    for (size_t i = 0; i < nips; i++)
        testlib_config_add_ip(c, ips[i].address, ips[i].zone, ips[i].pool, ips[i].warmup);
    c->warmup = SES;
    c->warmup.advance = advance;
    c->warmup.pacing = pacing;
    return c;
}

static config *make_cfg(config_advance advance, int pacing)
{
    return make_cfg_ips(advance, pacing, one_ip, 2);
}

static pools_ip_info info_at(pools *p, int64_t now)
{
    pools_ip_info in;
    ck_assert_int_eq(pools_info_by_address(p, "127.0.0.10", now, &in), 0);
    return in;
}

/* ---- the cap formula on the SES ramp (45 days, 50 -> 50,000) ---- */

static const struct {
    int day;
    int64_t cap;
} ses_ramp[] = {
    {0, 50}, {1, 58}, {2, 67}, {22, 1464}, {23, 1707}, {44, 42884}, {45, 50000},
};

START_TEST(test_cap_formula)
{
    int day = ses_ramp[_i].day;
    int64_t got = pools_warmup_cap(&SES, 100.0 * day / 45);
    ck_assert_msg(got == ses_ramp[_i].cap, "day %d of 45: cap %lld, want %lld", day,
                  (long long)got, (long long)ses_ramp[_i].cap);
}
END_TEST

START_TEST(test_cap_edges)
{
    ck_assert_int_eq(pools_warmup_cap(&SES, 30), 397);        /* kilnctl ip warmup --percent 30 */
    ck_assert_int_eq(pools_warmup_cap(&SES, -5), 50);         /* clamped to the ramp */
    ck_assert_int_eq(pools_warmup_cap(&SES, 250), 50000);
    config_warmup flat = SES;
    flat.target = flat.first_day;                             /* no ramp at all */
    ck_assert_int_eq(pools_warmup_cap(&flat, 50), 50);
}
END_TEST

static const struct {
    int pacing;
    int64_t daily, hourly;
} pacing_table[] = {
    {4, 50, 9},          /* ceil(50*4/24) = ceil(8.33) */
    {4, 58, 10},         /* ceil(9.67) */
    {4, 48, 8},          /* exact: no rounding up */
    {4, 1, 1},           /* ceil(0.17): at least 1 */
    {1, 5, 1},           /* at least 1 */
    {1, 25, 2},
    {24, 50000, 50000},  /* pacing 24: the whole day in one hour */
    {0, 50, -1},         /* pacing off */
    {4, -1, -1},         /* no daily cap: no pacing cap */
};

START_TEST(test_pacing_cap)
{
    config_warmup w = SES;
    w.pacing = pacing_table[_i].pacing;
    int64_t got = pools_pacing_cap(&w, pacing_table[_i].daily);
    ck_assert_msg(got == pacing_table[_i].hourly, "pacing %d of %lld/day: %lld per hour, want %lld",
                  w.pacing, (long long)pacing_table[_i].daily, (long long)got,
                  (long long)pacing_table[_i].hourly);
}
END_TEST

/* ---- calendar advance over simulated days ---- */

START_TEST(test_calendar_days)
{
    config *c = make_cfg(CONFIG_ADVANCE_CALENDAR, 4);
    pools *p = pools_new(c, NULL, T0);
    pools_ip_info in = info_at(p, T0);
    ck_assert_str_eq(in.warmup_status, "IN_PROGRESS");
    ck_assert_int_eq(in.warmup_percentage, 0);
    ck_assert_int_eq(in.daily_cap, 50);
    ck_assert_int_eq(in.hourly_cap, 9);

    in = info_at(p, T0 + DAY - 1);               /* still day 0 */
    ck_assert_int_eq(in.daily_cap, 50);
    in = info_at(p, T0 + DAY);                   /* day 1: 2.2 % */
    ck_assert_int_eq(in.warmup_percentage, 2);
    ck_assert_int_eq(in.daily_cap, 58);
    ck_assert_int_eq(in.hourly_cap, 10);
    in = info_at(p, T0 + 22 * DAY);
    ck_assert_int_eq(in.warmup_percentage, 48);
    ck_assert_int_eq(in.daily_cap, 1464);
    in = info_at(p, T0 + 44 * DAY + 12 * HOUR);
    ck_assert_int_eq(in.warmup_percentage, 97);
    ck_assert_int_eq(in.daily_cap, 42884);
    ck_assert_str_eq(in.warmup_status, "IN_PROGRESS");

    in = info_at(p, T0 + 45 * DAY);              /* warm: no cap any more */
    ck_assert_str_eq(in.warmup_status, "DONE");
    ck_assert_int_eq(in.warmup_percentage, 100);
    ck_assert_int_eq(in.daily_cap, -1);
    ck_assert_int_eq(in.hourly_cap, -1);
    pools_ip *ip = pools_find(p, "127.0.0.10");
    ck_assert_int_eq(pools_headroom(p, ip, NULL, T0 + 45 * DAY), -1);
    pools_free(p);
    config_unref(c);
}
END_TEST

START_TEST(test_leased_warm)
{
    config_ip warm[] = {{.address = "127.0.0.10", .zone = "az1", .pool = "transactional",
                         .warmup = CONFIG_WARMUP_DONE}};
    config *c = make_cfg_ips(CONFIG_ADVANCE_CALENDAR, 4, warm, 1);
    pools *p = pools_new(c, NULL, T0);
    pools_ip_info in = info_at(p, T0);
    ck_assert_str_eq(in.warmup_status, "DONE");
    ck_assert_int_eq(in.warmup_percentage, 100);
    ck_assert_int_eq(in.daily_cap, -1);
    pools_free(p);
    config_unref(c);
}
END_TEST

/* ---- volume advance: only days with at least half the cap used count ---- */

START_TEST(test_volume_days)
{
    config *c = make_cfg(CONFIG_ADVANCE_VOLUME, 0);
    pools *p = pools_new(c, NULL, T0);
    pools_ip *ip = pools_find(p, "127.0.0.10");

    /* an idle IP does not advance */
    ck_assert_int_eq(info_at(p, T0 + 3 * DAY).warmup_percentage, 0);
    ck_assert_int_eq(info_at(p, T0 + 3 * DAY).daily_cap, 50);

    /* day 3: 24 of 50 (< half) -> does not count */
    pools_record_send(p, ip, NULL, 24, T0 + 3 * DAY + HOUR);
    pools_ip_info in = info_at(p, T0 + 4 * DAY + HOUR);
    ck_assert_int_eq(in.warmup_percentage, 0);
    ck_assert_int_eq(in.daily_cap, 50);

    /* day 4: 25 of 50 (exactly half) -> counts once day 4 is over */
    pools_record_send(p, ip, NULL, 20, T0 + 4 * DAY + 2 * HOUR);
    pools_record_send(p, ip, NULL, 5, T0 + 4 * DAY + 20 * HOUR);
    ck_assert_int_eq(info_at(p, T0 + 5 * DAY - 1).daily_cap, 50);
    in = info_at(p, T0 + 5 * DAY);
    ck_assert_int_eq(in.warmup_percentage, 2);
    ck_assert_int_eq(in.daily_cap, 58);

    /* day 5: half of 58 is 29; 28 is not enough, and the idle days after do not count */
    pools_record_send(p, ip, NULL, 28, T0 + 5 * DAY + HOUR);
    ck_assert_int_eq(info_at(p, T0 + 9 * DAY).daily_cap, 58);
    /* day 9: 29 of 58 counts -> 2 days counted: 4.4 % */
    pools_record_send(p, ip, NULL, 29, T0 + 9 * DAY + HOUR);
    in = info_at(p, T0 + 10 * DAY);
    ck_assert_int_eq(in.warmup_percentage, 4);
    ck_assert_int_eq(in.daily_cap, 67);

    /* the same sends with calendar advance would be at day 10 */
    config *cal = make_cfg(CONFIG_ADVANCE_CALENDAR, 0);
    pools *q = pools_new(cal, NULL, T0);
    ck_assert_int_eq(info_at(q, T0 + 10 * DAY).warmup_percentage, 22);
    pools_free(q);
    pools_free(p);
    config_unref(c);
    config_unref(cal);
}
END_TEST

START_TEST(test_volume_survives_save)
{
    /* the half-day counter is part of the saved state */
    config *c = make_cfg(CONFIG_ADVANCE_VOLUME, 0);
    pools *p = pools_new(c, NULL, T0);
    pools_record_send(p, pools_find(p, "127.0.0.10"), NULL, 30, T0 + HOUR);
    char *js = pools_state_json(p);
    pools_free(p);
    pools *q = pools_new(c, NULL, T0 + 2 * HOUR);
    char *err = NULL;
    ck_assert_int_eq(pools_state_load(q, js, T0 + 2 * HOUR, &err), 0);
    free(js);
    ck_assert_int_eq(info_at(q, T0 + DAY + HOUR).warmup_percentage, 2);
    pools_free(q);
    config_unref(c);
}
END_TEST

/* ---- kilnctl ip warmup ---- */

START_TEST(test_set_warmup)
{
    config *c = make_cfg(CONFIG_ADVANCE_CALENDAR, 4);
    pools *p = pools_new(c, NULL, T0);
    char *err = NULL;
    ck_assert_int_eq(pools_set_warmup(p, "127.0.0.10", 30, T0 + HOUR, &err), 0);
    pools_ip_info in = info_at(p, T0 + HOUR);
    ck_assert_str_eq(in.warmup_status, "IN_PROGRESS");
    ck_assert_int_eq(in.warmup_percentage, 30);
    ck_assert_int_eq(in.daily_cap, 397);
    ck_assert_int_eq(in.hourly_cap, 67);                   /* ceil(397*4/24) */
    /* it climbs from there, a day at a time from the moment it was set */
    ck_assert_int_eq(info_at(p, T0 + HOUR + DAY - 1).warmup_percentage, 30);
    ck_assert_int_eq(info_at(p, T0 + HOUR + DAY).warmup_percentage, 32);

    ck_assert_int_eq(pools_set_warmup(p, "127.0.0.10", 100, T0 + 2 * HOUR, &err), 0);
    ck_assert_str_eq(info_at(p, T0 + 2 * HOUR).warmup_status, "DONE");
    ck_assert_int_eq(pools_set_warmup(p, "127.0.0.10", 0, T0 + 3 * HOUR, &err), 0);
    ck_assert_int_eq(info_at(p, T0 + 3 * HOUR).daily_cap, 50);

    /* refusals name the reason */
    ck_assert_int_eq(pools_set_warmup(p, "192.0.2.1", 30, T0, &err), -1);
    ck_assert_ptr_nonnull(strstr(err, "192.0.2.1"));
    free(err);
    err = NULL;
    ck_assert_int_eq(pools_set_warmup(p, "127.0.0.20", 30, T0, &err), -1);
    ck_assert_ptr_nonnull(strstr(err, "managed"));
    free(err);
    err = NULL;
    ck_assert_int_eq(pools_set_warmup(p, "127.0.0.10", 101, T0, &err), -1);
    ck_assert_ptr_nonnull(strstr(err, "0 to 100"));
    free(err);
    ck_assert_int_eq(info_at(p, T0 + 3 * HOUR).daily_cap, 50);   /* unchanged */
    pools_free(p);
    config_unref(c);
}
END_TEST

/* ---- pacing: at most ceil(50*4/24) = 9 per rolling hour ---- */

START_TEST(test_pacing_hour)
{
    config *c = make_cfg(CONFIG_ADVANCE_CALENDAR, 4);
    pools *p = pools_new(c, NULL, T0);
    pools_choice ch;
    for (int i = 0; i < 9; i++) {
        pools_choose(p, "transactional", "mx.example.test", "other", NULL, NULL, T0 + i * SEC, &ch);
        ck_assert_int_eq(ch.verdict, POOLS_CHOSEN);
        ck_assert_int_eq(pools_headroom(p, ch.ip, NULL, T0 + i * SEC), 9 - i);
        pools_record_send(p, ch.ip, NULL, 1, T0 + i * SEC);
    }
    pools_choose(p, "transactional", "mx.example.test", "other", NULL, NULL, T0 + 10 * SEC, &ch);
    ck_assert_int_eq(ch.verdict, POOLS_ALL_AT_CAP);
    ck_assert_msg(strstr(ch.reason, "127.0.0.10 pacing 9/9 per hour"), "reason: %s", ch.reason);
    /* the sends of T0's minute leave the hour when minute+61 starts: an hour has passed */
    int64_t free_at = (T0 / MIN + 61) * MIN;
    ck_assert_int_eq(ch.retry_at_ms, free_at);
    pools_choose(p, "transactional", "mx.example.test", "other", NULL, NULL, T0 + HOUR, &ch);
    ck_assert_int_eq(ch.verdict, POOLS_ALL_AT_CAP);
    pools_choose(p, "transactional", "mx.example.test", "other", NULL, NULL, free_at, &ch);
    ck_assert_int_eq(ch.verdict, POOLS_CHOSEN);
    ck_assert_int_eq(pools_headroom(p, ch.ip, NULL, free_at), 9);
    /* the day still counts them */
    ck_assert_int_eq(info_at(p, free_at).sent_24h, 9);
    pools_free(p);
    config_unref(c);
}
END_TEST

/* ---- rolling 24 h window ---- */

START_TEST(test_day_window)
{
    config *c = make_cfg(CONFIG_ADVANCE_CALENDAR, 0);
    pools *p = pools_new(c, NULL, T0);
    pools_ip *ip = pools_find(p, "127.0.0.10");
    pools_record_send(p, ip, NULL, 50, T0);
    pools_choice ch;
    pools_choose(p, "transactional", "mx.example.test", NULL, NULL, NULL, T0 + HOUR, &ch);
    ck_assert_int_eq(ch.verdict, POOLS_ALL_AT_CAP);
    ck_assert_msg(strstr(ch.reason, "127.0.0.10 warm-up 50/50 per 24h"), "reason: %s", ch.reason);
    /* the ramp's next day (cap 58) comes before the 50 leave the window */
    ck_assert_int_eq(ch.retry_at_ms, T0 + DAY);
    ck_assert_int_eq(info_at(p, T0 + DAY - MIN).sent_24h, 50);
    ck_assert_int_eq(info_at(p, T0 + DAY).sent_24h, 50);        /* counted a whole day */
    ck_assert_int_eq(pools_headroom(p, ip, NULL, T0 + DAY), 8);   /* 58 - 50 */
    int64_t gone = (T0 / MIN + 1441) * MIN;
    ck_assert_int_eq(info_at(p, gone - 1).sent_24h, 50);
    ck_assert_int_eq(info_at(p, gone).sent_24h, 0);
    ck_assert_int_eq(pools_headroom(p, ip, NULL, gone), 58);

    /* at 30 % (cap 397) with 397 sent, only the window frees it: retry when they expire */
    ck_assert_int_eq(pools_set_warmup(p, "127.0.0.10", 30, gone, &(char *){NULL}), 0);
    pools_record_send(p, ip, NULL, 300, gone);
    pools_record_send(p, ip, NULL, 97, gone + 2 * HOUR);
    pools_choose(p, "transactional", "mx.example.test", NULL, NULL, NULL, gone + 3 * HOUR, &ch);
    ck_assert_int_eq(ch.verdict, POOLS_ALL_AT_CAP);
    ck_assert_int_eq(ch.retry_at_ms, gone + DAY);       /* next ramp day: 32 % gives 463 */
    pools_free(p);
    config_unref(c);
}
END_TEST

/* ---- the window itself: expiry, clock steps, save/restore ---- */

START_TEST(test_window_unit)
{
    warmup_window *w = malloc(sizeof *w);
    warmup_window_init(w, T0);
    warmup_window_add(w, 5, T0);
    warmup_window_add(w, 7, T0 + 30 * MIN);
    int64_t d, h;
    warmup_window_sums(w, T0 + 30 * MIN, &d, &h);
    ck_assert_int_eq(d, 12);
    ck_assert_int_eq(h, 12);
    warmup_window_sums(w, T0 + 75 * MIN, &d, &h);        /* the 5 left the hour */
    ck_assert_int_eq(d, 12);
    ck_assert_int_eq(h, 7);
    /* a clock stepped back counts at the latest minute seen */
    warmup_window_add(w, 1, T0 - HOUR);
    warmup_window_sums(w, T0 + 30 * MIN, &d, &h);
    ck_assert_int_eq(d, 13);
    /* free_at: day count <= 7 once T0's minute has left (the 5) */
    ck_assert_int_eq(warmup_window_free_at(w, T0 + HOUR * 2, false, 8), (T0 / MIN + 1441) * MIN);
    /* live buckets round-trip */
    int64_t mins[WARMUP_BUCKETS], counts[WARMUP_BUCKETS];
    size_t n = warmup_window_live(w, T0 + HOUR, mins, counts);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(counts[0], 5);
    ck_assert_int_eq(counts[1], 8);
    warmup_window *r = malloc(sizeof *r);
    warmup_window_init(r, T0 + 75 * MIN);
    for (size_t i = 0; i < n; i++) warmup_window_put(r, mins[i], counts[i], T0 + 75 * MIN);
    warmup_window_put(r, T0 / MIN - 2000, 99, T0 + 75 * MIN);     /* too old: ignored */
    warmup_window_recompute(r, T0 + 75 * MIN);
    warmup_window_sums(r, T0 + 75 * MIN, &d, &h);
    ck_assert_int_eq(d, 13);
    ck_assert_int_eq(h, 8);
    /* a jump of more than a day empties it */
    warmup_window_add(r, 2, T0 + 3 * DAY);
    warmup_window_sums(r, T0 + 3 * DAY, &d, &h);
    ck_assert_int_eq(d, 2);
    ck_assert_int_eq(h, 2);
    free(w);
    free(r);
}
END_TEST

static Suite *warmup_suite(void)
{
    Suite *s = suite_create("warmup");
    TCase *tc = tcase_create("core");
    tcase_add_loop_test(tc, test_cap_formula, 0, sizeof ses_ramp / sizeof ses_ramp[0]);
    tcase_add_test(tc, test_cap_edges);
    tcase_add_loop_test(tc, test_pacing_cap, 0, sizeof pacing_table / sizeof pacing_table[0]);
    tcase_add_test(tc, test_calendar_days);
    tcase_add_test(tc, test_leased_warm);
    tcase_add_test(tc, test_volume_days);
    tcase_add_test(tc, test_volume_survives_save);
    tcase_add_test(tc, test_set_warmup);
    tcase_add_test(tc, test_pacing_hour);
    tcase_add_test(tc, test_day_window);
    tcase_add_test(tc, test_window_unit);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(warmup_suite);
