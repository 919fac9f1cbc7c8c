/* test_reputation.c — the account's reputation metrics (store/reputation.c) over injected
 * send-statistics buckets: the sums and rates an operator reads in `kilnctl reputation`, the
 * statuses at SES's exact thresholds (bounce 5 % / 10 %, complaint 0.1 % / 0.5 %: at the
 * threshold is already the higher status, one below is not), an empty window (rates 0,
 * HEALTHY), buckets older than the 14-day window ignored while the window's first bucket
 * counts, and the window's bounds. */
#include <check.h>
#include <stdint.h>

#include "store/reputation.h"
#include "store/stats.h"
#include "tests/unit/testlib.h"

/* 2026-12-06T04:20:00Z, not on a bucket boundary */
#define NOW_MS 1796530800000LL

static stats_counts bucket(int64_t ms, int64_t attempts, int64_t bounces, int64_t complaints)
{
    stats_counts c = {stats_bucket_ms(ms), attempts, bounces, complaints, 0};
    return c;
}

START_TEST(test_sums_and_rates)
{
    stats_counts b[] = {
        bucket(NOW_MS, 6, 1, 0),
        bucket(NOW_MS - 3600 * 1000LL, 4, 0, 1),
        bucket(NOW_MS - 10 * 24 * 3600 * 1000LL, 10, 1, 0),
    };
    reputation r;
    reputation_compute(b, 3, NOW_MS, &r);
    ck_assert_int_eq(r.attempts, 20);
    ck_assert_int_eq(r.bounces, 2);
    ck_assert_int_eq(r.complaints, 1);
    ck_assert_double_eq_tol(r.bounce_rate, 0.10, 1e-12);
    ck_assert_double_eq_tol(r.complaint_rate, 0.05, 1e-12);
    ck_assert_int_eq(r.bounce_status, REPUTATION_AT_RISK);
    ck_assert_int_eq(r.complaint_status, REPUTATION_AT_RISK);
    ck_assert_str_eq(reputation_status_name(r.bounce_status), "AT_RISK");
    ck_assert_int_eq(r.window_end_ms, NOW_MS);
    ck_assert_int_eq(r.window_start_ms, stats_bucket_ms(NOW_MS - STATS_KEEP_MS));
    ck_assert_int_eq(r.window_start_ms % STATS_BUCKET_MS, 0);
}
END_TEST

/* The status of count out of attempts for the bounce (or complaint) thresholds. */
static reputation_status bounce_of(int64_t count, int64_t attempts)
{
    stats_counts b = bucket(NOW_MS, attempts, count, 0);
    reputation r;
    reputation_compute(&b, 1, NOW_MS, &r);
    return r.bounce_status;
}

static reputation_status complaint_of(int64_t count, int64_t attempts)
{
    stats_counts b = bucket(NOW_MS, attempts, 0, count);
    reputation r;
    reputation_compute(&b, 1, NOW_MS, &r);
    ck_assert_int_eq(r.bounce_status, REPUTATION_HEALTHY);
    return r.complaint_status;
}

START_TEST(test_bounce_boundaries)
{
    ck_assert_int_eq(bounce_of(0, 100), REPUTATION_HEALTHY);
    ck_assert_int_eq(bounce_of(4, 100), REPUTATION_HEALTHY);
    ck_assert_int_eq(bounce_of(499, 10000), REPUTATION_HEALTHY);   /* 4.99 % */
    ck_assert_int_eq(bounce_of(5, 100), REPUTATION_WARNING);        /* exactly 5 % */
    ck_assert_int_eq(bounce_of(1, 20), REPUTATION_WARNING);
    ck_assert_int_eq(bounce_of(999, 10000), REPUTATION_WARNING);   /* 9.99 % */
    ck_assert_int_eq(bounce_of(10, 100), REPUTATION_AT_RISK);       /* exactly 10 % */
    ck_assert_int_eq(bounce_of(1, 10), REPUTATION_AT_RISK);
    ck_assert_int_eq(bounce_of(3, 2), REPUTATION_AT_RISK);          /* more bounces than sends */
    ck_assert_str_eq(reputation_status_name(REPUTATION_WARNING), "WARNING");
    ck_assert_str_eq(reputation_status_name(REPUTATION_HEALTHY), "HEALTHY");
}
END_TEST

START_TEST(test_complaint_boundaries)
{
    ck_assert_int_eq(complaint_of(0, 5), REPUTATION_HEALTHY);
    ck_assert_int_eq(complaint_of(9, 10000), REPUTATION_HEALTHY);    /* 0.09 % */
    ck_assert_int_eq(complaint_of(999, 1000000), REPUTATION_HEALTHY);
    ck_assert_int_eq(complaint_of(1, 1000), REPUTATION_WARNING);     /* exactly 0.1 % */
    ck_assert_int_eq(complaint_of(49, 10000), REPUTATION_WARNING);   /* 0.49 % */
    ck_assert_int_eq(complaint_of(5, 1000), REPUTATION_AT_RISK);     /* exactly 0.5 % */
    ck_assert_int_eq(complaint_of(1, 200), REPUTATION_AT_RISK);
    ck_assert_int_eq(complaint_of(1, 201), REPUTATION_WARNING);
}
END_TEST

START_TEST(test_empty_window)
{
    reputation r;
    reputation_compute(NULL, 0, NOW_MS, &r);
    ck_assert_int_eq(r.attempts, 0);
    ck_assert_double_eq(r.bounce_rate, 0.0);
    ck_assert_double_eq(r.complaint_rate, 0.0);
    ck_assert_int_eq(r.bounce_status, REPUTATION_HEALTHY);
    ck_assert_int_eq(r.complaint_status, REPUTATION_HEALTHY);

    /* Bounces whose sends fell out of the window: no attempts, so no rate, still HEALTHY. */
    stats_counts b = bucket(NOW_MS, 0, 2, 1);
    reputation_compute(&b, 1, NOW_MS, &r);
    ck_assert_int_eq(r.bounces, 2);
    ck_assert_double_eq(r.bounce_rate, 0.0);
    ck_assert_int_eq(r.bounce_status, REPUTATION_HEALTHY);
    ck_assert_int_eq(r.complaint_status, REPUTATION_HEALTHY);
}
END_TEST

START_TEST(test_old_buckets_ignored)
{
    int64_t start = stats_bucket_ms(NOW_MS - STATS_KEEP_MS);
    stats_counts b[] = {
        {start - STATS_BUCKET_MS, 10, 10, 10, 0},           /* just before the window */
        {start - 30 * 24 * 3600 * 1000LL, 50, 50, 50, 0},   /* a month ago */
        {start, 100, 5, 0, 0},                              /* the window's first bucket */
        bucket(NOW_MS, 100, 0, 0),
    };
    reputation r;
    reputation_compute(b, 4, NOW_MS, &r);
    ck_assert_int_eq(r.attempts, 200);
    ck_assert_int_eq(r.bounces, 5);
    ck_assert_int_eq(r.complaints, 0);
    ck_assert_double_eq_tol(r.bounce_rate, 0.025, 1e-12);
    ck_assert_int_eq(r.bounce_status, REPUTATION_HEALTHY);
    ck_assert_int_eq(r.complaint_status, REPUTATION_HEALTHY);

    /* Only old buckets: as if nothing was sent. */
    reputation_compute(b, 2, NOW_MS, &r);
    ck_assert_int_eq(r.attempts, 0);
    ck_assert_int_eq(r.bounces, 0);
    ck_assert_int_eq(r.bounce_status, REPUTATION_HEALTHY);
}
END_TEST

static Suite *reputation_suite(void)
{
    Suite *s = suite_create("reputation");
    TCase *tc = tcase_create("metrics");
    tcase_add_test(tc, test_sums_and_rates);
    tcase_add_test(tc, test_bounce_boundaries);
    tcase_add_test(tc, test_complaint_boundaries);
    tcase_add_test(tc, test_empty_window);
    tcase_add_test(tc, test_old_buckets_ignored);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(reputation_suite);
