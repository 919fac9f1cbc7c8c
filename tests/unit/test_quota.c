/* test_quota.c — the account's max_send_rate token bucket and rolling 24 h max_24h_send
 * window (scheduler/quota.c), driven by an injected clock. */
#include <check.h>
#include <stdlib.h>

#include "mta/quota.h"
#include "tests/unit/testlib.h"

#define T0 INT64_C(1700000000000)        /* an arbitrary wall clock reading, 20 s into a minute */
#define SEC INT64_C(1000)
#define MIN (60 * SEC)
#define HOUR (60 * MIN)

/* ---- token bucket, table-driven: each step takes one token at T0 + at_ms ---- */

typedef struct {
    int64_t at_ms;
    bool ok;
} rate_step;

typedef struct {
    const char *name;
    double rate;
    rate_step steps[12];
    size_t nsteps;
} rate_case;

static const rate_case rate_cases[] = {
    {"rate 2/s: burst of 2, 3rd refused, one more after 500 ms", 2,
     {{0, true}, {0, true}, {0, false}, {499, false}, {500, true}, {500, false},
      {1500, true}, {1500, true}, {1500, false}}, 9},
    {"rate 5/s: burst of 5", 5,
     {{0, true}, {0, true}, {0, true}, {0, true}, {0, true}, {0, false}, {199, false},
      {200, true}}, 8},
    {"rate 0.5/s: capacity 1, one token every 2 s", 0.5,
     {{0, true}, {0, false}, {1000, false}, {1999, false}, {2000, true}, {2000, false},
      {4000, true}}, 7},
    {"rate 1/s: long idle refills only to capacity 1", 1,
     {{0, true}, {HOUR, true}, {HOUR, false}, {HOUR + 1000, true}}, 4},
    {"rate 3/s: idle hour refills to exactly 3", 3,
     {{0, true}, {0, true}, {0, true}, {HOUR, true}, {HOUR, true}, {HOUR, true},
      {HOUR, false}}, 7},
    {"rate 3/s: thirds of a second add up to whole tokens", 3,
     {{0, true}, {0, true}, {0, true}, {333, false}, {334, true}, {667, true}, {1000, true},
      {1000, false}}, 8},
    {"rate 0: one token, never refilled", 0,
     {{0, true}, {0, false}, {HOUR, false}}, 3},
};

START_TEST(test_rate_table)
{
    const rate_case *c = &rate_cases[_i];
    quota *q = quota_new(c->rate, -1, T0);
    for (size_t s = 0; s < c->nsteps; s++) {
        bool got = quota_rate_take(q, T0 + c->steps[s].at_ms);
        ck_assert_msg(got == c->steps[s].ok, "%s: step %zu at +%lld ms: got %d, want %d",
                      c->name, s, (long long)c->steps[s].at_ms, got, c->steps[s].ok);
    }
    quota_free(q);
}
END_TEST

START_TEST(test_rate_unlimited)
{
    quota *q = quota_new(-1, -1, T0);
    for (int i = 0; i < 100000; i++) ck_assert(quota_rate_take(q, T0));
    ck_assert(quota_max_rate(q) < 0);
    quota_free(q);
}
END_TEST

START_TEST(test_rate_available_takes_nothing)
{
    quota *q = quota_new(1, -1, T0);
    ck_assert(quota_rate_available(q, T0));
    ck_assert(quota_rate_available(q, T0));
    ck_assert(quota_rate_take(q, T0));
    ck_assert(!quota_rate_available(q, T0));
    ck_assert(!quota_rate_take(q, T0));
    ck_assert(quota_rate_available(q, T0 + SEC));
    quota_free(q);
}
END_TEST

START_TEST(test_rate_clock_backwards)
{
    quota *q = quota_new(1, -1, T0);
    ck_assert(quota_rate_take(q, T0));
    /* The clock steps back an hour: no tokens appear from the jump... */
    ck_assert(!quota_rate_take(q, T0 - HOUR));
    /* ...and refilling continues from the new reading. */
    ck_assert(!quota_rate_take(q, T0 - HOUR + 999));
    ck_assert(quota_rate_take(q, T0 - HOUR + 1000));
    quota_free(q);
}
END_TEST

START_TEST(test_rate_limit_change)
{
    quota *q = quota_new(10, -1, T0);
    /* Full bucket of 10; lowering the rate to 2 clamps it to the new capacity. */
    quota_set_limits(q, 2, -1, T0);
    ck_assert(quota_max_rate(q) == 2);
    ck_assert(quota_rate_take(q, T0));
    ck_assert(quota_rate_take(q, T0));
    ck_assert(!quota_rate_take(q, T0));
    /* Raising it keeps the (empty) level and refills at the new rate. */
    quota_set_limits(q, 20, -1, T0);
    ck_assert(!quota_rate_take(q, T0));
    for (int i = 0; i < 2; i++) ck_assert(quota_rate_take(q, T0 + 100));
    ck_assert(!quota_rate_take(q, T0 + 100));
    /* Unlimited, then limited again: starts with a full bucket. */
    quota_set_limits(q, -1, -1, T0 + 100);
    for (int i = 0; i < 1000; i++) ck_assert(quota_rate_take(q, T0 + 100));
    quota_set_limits(q, 3, -1, T0 + 100);
    for (int i = 0; i < 3; i++) ck_assert(quota_rate_take(q, T0 + 100));
    ck_assert(!quota_rate_take(q, T0 + 100));
    quota_free(q);
}
END_TEST

/* ---- rolling 24 h window ---- */

START_TEST(test_daily_exact_at_max)
{
    quota *q = quota_new(-1, 3, T0);
    ck_assert_int_eq(quota_max_24h(q), 3);
    for (int i = 0; i < 3; i++) ck_assert(quota_daily_reserve(q, T0));
    ck_assert(!quota_daily_reserve(q, T0));
    ck_assert_int_eq(quota_pending(q), 3);
    ck_assert_int_eq(quota_sent_24h(q, T0), 0);
    quota_free(q);
}
END_TEST

START_TEST(test_daily_release_frees)
{
    quota *q = quota_new(-1, 2, T0);
    ck_assert(quota_daily_reserve(q, T0));
    ck_assert(quota_daily_reserve(q, T0));
    ck_assert(!quota_daily_reserve(q, T0));
    quota_daily_release(q, 2);
    ck_assert_int_eq(quota_pending(q), 0);
    ck_assert(quota_daily_reserve(q, T0));
    ck_assert(quota_daily_reserve(q, T0));
    ck_assert(!quota_daily_reserve(q, T0));
    ck_assert_int_eq(quota_sent_24h(q, T0), 0);
    quota_free(q);
}
END_TEST

START_TEST(test_daily_commit_counts)
{
    quota *q = quota_new(-1, 3, T0);
    for (int i = 0; i < 3; i++) ck_assert(quota_daily_reserve(q, T0));
    quota_daily_commit(q, 2, T0 + SEC);
    quota_daily_release(q, 1);
    ck_assert_int_eq(quota_sent_24h(q, T0 + SEC), 2);
    ck_assert_int_eq(quota_pending(q), 0);
    ck_assert(quota_daily_reserve(q, T0 + 2 * SEC));
    ck_assert(!quota_daily_reserve(q, T0 + 2 * SEC));
    quota_daily_commit(q, 1, T0 + 2 * SEC);
    ck_assert_int_eq(quota_sent_24h(q, T0 + 3 * SEC), 3);
    ck_assert(!quota_daily_reserve(q, T0 + 3 * SEC));
    quota_free(q);
}
END_TEST

START_TEST(test_daily_expiry)
{
    quota *q = quota_new(-1, 5, T0);
    for (int i = 0; i < 5; i++) ck_assert(quota_daily_reserve(q, T0));
    quota_daily_commit(q, 5, T0);
    /* Two more sent 10 h later. */
    for (int i = 0; i < 2; i++) quota_daily_load(q, T0 + 10 * HOUR, 1, T0 + 10 * HOUR);
    ck_assert_int_eq(quota_sent_24h(q, T0 + 10 * HOUR), 7);
    /* Still counted for the whole 24 h... */
    ck_assert_int_eq(quota_sent_24h(q, T0 + 24 * HOUR - MIN), 7);
    ck_assert_int_eq(quota_sent_24h(q, T0 + 24 * HOUR - 1), 7);
    ck_assert(!quota_daily_reserve(q, T0 + 24 * HOUR - 1));
    /* ...and gone at 24 h + 1 min. */
    ck_assert_int_eq(quota_sent_24h(q, T0 + 24 * HOUR + MIN), 2);
    ck_assert(quota_daily_reserve(q, T0 + 24 * HOUR + MIN));
    quota_daily_commit(q, 1, T0 + 24 * HOUR + MIN);
    ck_assert_int_eq(quota_sent_24h(q, T0 + 34 * HOUR + MIN), 1);
    ck_assert_int_eq(quota_sent_24h(q, T0 + 49 * HOUR), 0);
    quota_free(q);
}
END_TEST

START_TEST(test_daily_every_minute_of_a_day)
{
    /* One recipient per minute for 3 days: the window always holds about one day's worth,
     * which exercises every slot of the ring being reused. */
    quota *q = quota_new(-1, -1, T0);
    for (int64_t m = 0; m < 3 * 1440; m++) {
        int64_t now = T0 + m * MIN;
        ck_assert(quota_daily_reserve(q, now));
        quota_daily_commit(q, 1, now);
        int64_t sent = quota_sent_24h(q, now);
        int64_t want = m + 1 < 1441 ? m + 1 : 1441;
        ck_assert_msg(sent == want, "minute %lld: sent %lld, want %lld", (long long)m,
                      (long long)sent, (long long)want);
    }
    quota_free(q);
}
END_TEST

START_TEST(test_daily_load_at_startup)
{
    int64_t now = T0 + 30 * 24 * HOUR;
    quota *q = quota_new(-1, 100, now);
    quota_daily_load(q, now - 25 * HOUR, 40, now);          /* too old: ignored */
    quota_daily_load(q, now - 24 * HOUR - 2 * MIN, 30, now); /* just too old */
    quota_daily_load(q, now - 23 * HOUR, 7, now);
    quota_daily_load(q, now - 1 * HOUR, 3, now);
    quota_daily_load(q, now, 0, now);
    ck_assert_int_eq(quota_sent_24h(q, now), 10);
    /* The 23 h old ones leave an hour later. */
    ck_assert_int_eq(quota_sent_24h(q, now + HOUR + MIN), 3);
    quota_free(q);
}
END_TEST

START_TEST(test_daily_load_in_future)
{
    /* A spool timestamp ahead of the clock counts as sent now, not ignored. */
    quota *q = quota_new(-1, 5, T0);
    quota_daily_load(q, T0 + 2 * HOUR, 5, T0);
    ck_assert_int_eq(quota_sent_24h(q, T0), 5);
    ck_assert(!quota_daily_reserve(q, T0));
    ck_assert_int_eq(quota_sent_24h(q, T0 + 24 * HOUR + MIN), 0);
    quota_free(q);
}
END_TEST

START_TEST(test_daily_clock_backwards)
{
    quota *q = quota_new(-1, 10, T0);
    quota_daily_load(q, T0, 4, T0);
    /* The clock steps back 3 h; sends then land in other slots; nothing is lost. */
    int64_t back = T0 - 3 * HOUR;
    for (int i = 0; i < 3; i++) ck_assert(quota_daily_reserve(q, back));
    quota_daily_commit(q, 3, back);
    ck_assert_int_eq(quota_sent_24h(q, back), 7);
    ck_assert_int_eq(quota_sent_24h(q, T0), 7);
    quota_free(q);
}
END_TEST

START_TEST(test_daily_limits_change)
{
    quota *q = quota_new(-1, 2, T0);
    ck_assert(quota_daily_reserve(q, T0));
    ck_assert(quota_daily_reserve(q, T0));
    quota_daily_commit(q, 2, T0);
    ck_assert(!quota_daily_reserve(q, T0));
    quota_set_limits(q, -1, 4, T0);
    ck_assert_int_eq(quota_max_24h(q), 4);
    ck_assert_int_eq(quota_sent_24h(q, T0), 2);             /* counts kept */
    ck_assert(quota_daily_reserve(q, T0));
    ck_assert(quota_daily_reserve(q, T0));
    ck_assert(!quota_daily_reserve(q, T0));
    /* Lowering below what was sent refuses everything, keeps reservations. */
    quota_set_limits(q, -1, 1, T0);
    ck_assert(!quota_daily_reserve(q, T0));
    ck_assert_int_eq(quota_pending(q), 2);
    quota_daily_release(q, 2);
    /* Unlimited: always room, and reservations still balance. */
    quota_set_limits(q, -1, -1, T0);
    for (int i = 0; i < 1000; i++) ck_assert(quota_daily_reserve(q, T0));
    quota_daily_commit(q, 1000, T0);
    ck_assert_int_eq(quota_sent_24h(q, T0), 1002);
    ck_assert_int_eq(quota_pending(q), 0);
    quota_free(q);
}
END_TEST

START_TEST(test_daily_zero_quota)
{
    quota *q = quota_new(1, 0, T0);
    ck_assert(!quota_daily_reserve(q, T0));
    ck_assert_int_eq(quota_pending(q), 0);
    quota_free(q);
}
END_TEST


/* ---- cluster: leased tokens and slots, the local share, unreported sends ---- */

START_TEST(test_lease_rate_only_granted_tokens)
{
    quota *q = quota_new(50, -1, T0);
    quota_set_mode(q, QUOTA_LEASED, 1.0 / 3, T0);
    /* leased mode: nothing without a grant, however long the node waits */
    ck_assert(!quota_rate_available(q, T0 + HOUR));
    quota_rate_grant(q, 2, T0 + HOUR);
    ck_assert(quota_rate_take(q, T0 + HOUR));
    ck_assert(quota_rate_take(q, T0 + HOUR + 10));
    ck_assert(!quota_rate_take(q, T0 + HOUR + 20));
    quota_free(q);
}
END_TEST

START_TEST(test_lease_rate_tokens_lapse)
{
    quota *q = quota_new(50, -1, T0);
    quota_set_mode(q, QUOTA_LEASED, 1, T0);
    quota_rate_grant(q, 5, T0);
    ck_assert(quota_rate_take(q, T0 + QUOTA_LEASE_TTL_MS - 1));
    /* an idle node cannot keep its lease to add a burst on top of the account's */
    ck_assert(!quota_rate_available(q, T0 + QUOTA_LEASE_TTL_MS));
    ck_assert(quota_rate_leased(q, T0 + QUOTA_LEASE_TTL_MS) == 0);
    /* a new grant renews the unlapsed ones */
    quota_rate_grant(q, 1, T0 + 2000);
    quota_rate_grant(q, 1, T0 + 2900);
    ck_assert(quota_rate_take(q, T0 + 3500));
    ck_assert(quota_rate_take(q, T0 + 3500));
    ck_assert(!quota_rate_take(q, T0 + 3500));
    quota_free(q);
}
END_TEST

START_TEST(test_lease_daily_slots)
{
    quota *q = quota_new(-1, 100, T0);
    quota_set_mode(q, QUOTA_LEASED, 1, T0);
    ck_assert(!quota_daily_reserve(q, T0));          /* no lease: no slot */
    quota_daily_grant(q, 3);
    ck_assert(quota_daily_reserve(q, T0));
    ck_assert(quota_daily_reserve(q, T0));
    ck_assert(quota_daily_reserve(q, T0));
    ck_assert(!quota_daily_reserve(q, T0));
    ck_assert_int_eq(quota_pending(q), 3);
    /* an abandoned transaction's slots go back to the lease, not to nowhere */
    quota_daily_release(q, 2);
    ck_assert_int_eq(quota_daily_leased(q), 2);
    quota_daily_commit(q, 1, T0);
    ck_assert_int_eq(quota_sent_24h(q, T0), 1);
    /* leased slots are the account's already: nothing unreported */
    int64_t m[4], c[4];
    ck_assert_uint_eq(quota_unreported(q, T0, m, c, 4), 0);
    ck_assert_int_eq(quota_daily_unlease(q), 2);
    ck_assert_int_eq(quota_daily_leased(q), 0);
    ck_assert(!quota_daily_reserve(q, T0));
    quota_free(q);
}
END_TEST

START_TEST(test_local_share)
{
    /* Redis down, one node of three: a third of the rate and of the 24 h quota */
    quota *q = quota_new(30, 90, T0);
    quota_set_mode(q, QUOTA_LOCAL, 1.0 / 3, T0);
    int taken = 0;
    for (int i = 0; i < 100; i++) taken += quota_rate_take(q, T0);
    ck_assert_int_eq(taken, 10);                     /* 10/s: the full bucket holds 10 */
    for (int i = 0; i < 100; i++) taken += quota_rate_take(q, T0 + 500);
    ck_assert_int_eq(taken, 15);
    /* after leasing, the local bucket starts empty: the account's tokens went by lease */
    quota_set_mode(q, QUOTA_LEASED, 1.0 / 3, T0 + 500);
    quota_set_mode(q, QUOTA_LOCAL, 1.0 / 3, T0 + 5000);
    ck_assert(!quota_rate_available(q, T0 + 5000));
    ck_assert(quota_rate_available(q, T0 + 5100));
    int reserved = 0;
    for (int i = 0; i < 100; i++) reserved += quota_daily_reserve(q, T0);
    ck_assert_int_eq(reserved, 30);
    quota_daily_commit(q, 30, T0);
    ck_assert(!quota_daily_reserve(q, T0 + HOUR));
    quota_free(q);
}
END_TEST

START_TEST(test_local_unreported_then_cleared)
{
    quota *q = quota_new(-1, 1000, T0);
    quota_set_mode(q, QUOTA_LEASED, 0.5, T0);
    quota_daily_grant(q, 1);
    ck_assert(quota_daily_reserve(q, T0));           /* one leased slot, open */
    quota_set_mode(q, QUOTA_LOCAL, 0.5, T0);         /* Redis goes away */
    ck_assert(quota_daily_reserve(q, T0));
    ck_assert(quota_daily_reserve(q, T0));
    quota_daily_commit(q, 3, T0 + 2 * MIN);          /* one leased, two local */
    ck_assert(quota_daily_reserve(q, T0 + 3 * MIN));
    quota_daily_commit(q, 1, T0 + 3 * MIN);
    int64_t m[4], c[4];
    size_t n = quota_unreported(q, T0 + 3 * MIN, m, c, 4);
    ck_assert_uint_eq(n, 2);
    int64_t total = 0;
    for (size_t i = 0; i < n; i++) total += c[i];
    ck_assert_int_eq(total, 3);                      /* the leased one is not reported again */
    ck_assert_int_eq(quota_sent_24h(q, T0 + 3 * MIN), 4);
    quota_unreported_clear(q);
    ck_assert_uint_eq(quota_unreported(q, T0 + 3 * MIN, m, c, 4), 0);
    /* a node never in a cluster keeps nothing unreported */
    quota *alone = quota_new(-1, 10, T0);
    ck_assert(quota_daily_reserve(alone, T0));
    quota_daily_commit(alone, 1, T0);
    ck_assert_uint_eq(quota_unreported(alone, T0, m, c, 4), 0);
    quota_free(alone);
    quota_free(q);
}
END_TEST

START_TEST(test_leases_void)
{
    /* Redis came back without this node's leases: unused ones are dropped, and a slot
     * reserved from a lease is reported when committed (the account never saw it) */
    quota *q = quota_new(10, 100, T0);
    quota_set_mode(q, QUOTA_LEASED, 0.5, T0);
    quota_daily_grant(q, 5);
    quota_rate_grant(q, 3, T0);
    ck_assert(quota_daily_reserve(q, T0));
    quota_leases_void(q);
    ck_assert_int_eq(quota_daily_leased(q), 0);
    ck_assert(!quota_rate_available(q, T0));
    ck_assert(!quota_daily_reserve(q, T0));
    quota_daily_commit(q, 1, T0);
    int64_t m[4], c[4];
    ck_assert_uint_eq(quota_unreported(q, T0, m, c, 4), 1);
    ck_assert_int_eq(c[0], 1);
    quota_free(q);
}
END_TEST

START_TEST(test_lease_unlimited)
{
    quota *q = quota_new(-1, -1, T0);
    quota_set_mode(q, QUOTA_LEASED, 1, T0);
    for (int i = 0; i < 1000; i++) {
        ck_assert(quota_rate_take(q, T0));
        ck_assert(quota_daily_reserve(q, T0));
    }
    quota_free(q);
}
END_TEST

static Suite *quota_suite(void)
{
    Suite *s = suite_create("quota");
    TCase *rate = tcase_create("rate");
    tcase_add_loop_test(rate, test_rate_table, 0, sizeof rate_cases / sizeof rate_cases[0]);
    tcase_add_test(rate, test_rate_unlimited);
    tcase_add_test(rate, test_rate_available_takes_nothing);
    tcase_add_test(rate, test_rate_clock_backwards);
    tcase_add_test(rate, test_rate_limit_change);
    suite_add_tcase(s, rate);
    TCase *daily = tcase_create("daily");
    tcase_add_test(daily, test_daily_exact_at_max);
    tcase_add_test(daily, test_daily_release_frees);
    tcase_add_test(daily, test_daily_commit_counts);
    tcase_add_test(daily, test_daily_expiry);
    tcase_add_test(daily, test_daily_every_minute_of_a_day);
    tcase_add_test(daily, test_daily_load_at_startup);
    tcase_add_test(daily, test_daily_load_in_future);
    tcase_add_test(daily, test_daily_clock_backwards);
    tcase_add_test(daily, test_daily_limits_change);
    tcase_add_test(daily, test_daily_zero_quota);
    suite_add_tcase(s, daily);
    TCase *lease = tcase_create("cluster");
    tcase_add_test(lease, test_lease_rate_only_granted_tokens);
    tcase_add_test(lease, test_lease_rate_tokens_lapse);
    tcase_add_test(lease, test_lease_daily_slots);
    tcase_add_test(lease, test_local_share);
    tcase_add_test(lease, test_local_unreported_then_cleared);
    tcase_add_test(lease, test_lease_unlimited);
    tcase_add_test(lease, test_leases_void);
    suite_add_tcase(s, lease);
    return s;
}

TESTLIB_SUITES(quota_suite);
