/* test_pools.c — the dedicated-IP state (pools/pools.c): choice of a source IP in proportion
 * to headroom, zone preferences after a failure, zones taken down by hand, the verdicts when
 * nothing can send (with the reason and retry time an operator sees), managed per-provider
 * caps, lease/release on reload, persistence, and the mailbox provider of an MX host.
 * Configs are built in memory with heap strings freed right after use. Clock injected. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "pools/pools.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

#define T0 INT64_C(1700000000000)
#define SEC INT64_C(1000)
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)

/* ---- in-memory configs ---- */

typedef struct {
    const char *addr, *zone, *pool;
    bool done;
} ipspec;

static const char *const ZONES3[] = {"az1", "az2", "az3", NULL};

static config *build(const ipspec *ips, const char *const *zones, int pacing)
{
    config *c = testlib_config_new();
    for (const char *const *z = zones; *z; z++) testlib_config_add_zone(c, *z);
    testlib_config_add_pool(c, "transactional", CONFIG_SCALING_STANDARD);
    testlib_config_add_pool(c, "marketing", CONFIG_SCALING_MANAGED);
    testlib_config_add_pool(c, "empty", CONFIG_SCALING_STANDARD);
    for (const ipspec *s = ips; s->addr; s++)
        testlib_config_add_ip(c, s->addr, s->zone, s->pool,
                              s->done ? CONFIG_WARMUP_DONE : CONFIG_WARMUP_NEW);
    c->warmup.pacing = pacing;       /* the rest of warmup: 45 days, 50 -> 50000, calendar */
    return c;
}

/* pools_new from a config that is freed at once: pools must have copied what it keeps */
static pools *make(const ipspec *ips, const char *const *zones, int pacing, int64_t now)
{
    config *c = build(ips, zones, pacing);
    pools *p = pools_new(c, NULL, now);
    config_unref(c);
    return p;
}

static void apply(pools *p, const ipspec *ips, const char *const *zones, int64_t now,
                  pools_diff *d)
{
    config *c = build(ips, zones, 0);
    pools_apply_config(p, c, now, d);
    config_unref(c);
}

static pools_ip_info info(pools *p, const char *addr, int64_t now)
{
    pools_ip_info in;
    ck_assert_msg(pools_info_by_address(p, addr, now, &in) == 0, "%s unknown", addr);
    return in;
}

static const char *pick(pools *p, const char *pool, const char *provider, const char *avoid_addr,
                        const char *avoid_zone, int64_t now, pools_choice *ch)
{
    pools_choose(p, pool, "mx1.example.test", provider, avoid_addr, avoid_zone, now, ch);
    return ch->verdict == POOLS_CHOSEN ? pools_ip_address(ch->ip) : NULL;
}

static void send(pools *p, const char *addr, const char *provider, unsigned n, int64_t now)
{
    pools_record_send(p, pools_find(p, addr), provider, n, now);
}

static void bind_fail(pools *p, const char *addr, int64_t now)
{
    pools_record_result(p, pools_find(p, addr), "mx1.example.test", "other",
                        POOLS_RESULT_BIND_FAILED, 0, now);
}

/* ---- choice ---- */

START_TEST(test_choice_proportional_to_headroom)
{
    static const ipspec ips[] = {{"127.0.0.10", "az1", "transactional", false},
                                 {"127.0.0.11", "az2", "transactional", false}, {0}};
    pools *p = make(ips, ZONES3, 0, T0);
    send(p, "127.0.0.10", NULL, 40, T0);         /* headroom 10 */
    send(p, "127.0.0.11", NULL, 20, T0);         /* headroom 30 */
    int n10 = 0, n11 = 0;
    bool prev10 = false;
    pools_choice ch;
    for (int i = 0; i < 40; i++) {
        const char *a = pick(p, "transactional", NULL, NULL, NULL, T0 + MIN, &ch);
        ck_assert_ptr_nonnull(a);
        bool is10 = strcmp(a, "127.0.0.10") == 0;
        ck_assert_msg(!(is10 && prev10), "pick %d: 127.0.0.10 twice in a row", i);
        prev10 = is10;
        if (is10) n10++;
        else n11++;
    }
    ck_assert_int_eq(n10, 10);
    ck_assert_int_eq(n11, 30);
    ck_assert_msg(strstr(ch.reason, "headroom"), "reason: %s", ch.reason);
    pools_free(p);
}
END_TEST

static void result(pools *p, const char *addr, const char *site, pools_result r, int64_t now)
{
    pools_record_result(p, pools_find(p, addr), site, "other", r, r == POOLS_RESULT_OK ? 1 : 0, now);
}

/* Issue 11 item 6: connect timeouts from one IP to a single site that the pool's other IPs
 * reach make it degraded (shown with the reason) and avoided by the choice for a cool-down;
 * a success clears it. A failure nobody else confirms changes nothing. */
START_TEST(test_degraded_by_connect_timeouts)
{
    static const ipspec ips[] = {{"127.0.0.10", "az1", "transactional", true},
                                 {"127.0.0.11", "az2", "transactional", true},
                                 {"127.0.0.12", "az3", "transactional", true}, {0}};
    pools *p = make(ips, ZONES3, 0, T0);
    result(p, "127.0.0.11", "mx.d0.test", POOLS_RESULT_CONNECT_TIMEOUT, T0);
    pools_ip_info in = info(p, "127.0.0.11", T0);
    ck_assert(!in.degraded);             /* nobody else reached mx.d0.test yet */
    ck_assert_str_eq(in.degraded_reason, "");
    result(p, "127.0.0.10", "mx.d0.test", POOLS_RESULT_OK, T0 + SEC);
    in = info(p, "127.0.0.11", T0 + SEC);
    ck_assert(in.degraded);
    ck_assert(in.avoided);
    ck_assert_int_eq(in.state, POOLS_STATE_ACTIVE);      /* one site: the circuit stays closed */
    ck_assert_int_eq(in.health, POOLS_HEALTH_CLOSED);
    ck_assert_msg(strstr(in.degraded_reason, "connect timeout to 1 site(s) from this IP while "
                                             "other IPs of the pool connected (mx.d0.test)"),
                  "reason: %s", in.degraded_reason);
    /* the others are preferred, whatever the rotation */
    pools_choice ch;
    for (int i = 0; i < 12; i++) {
        const char *a = pick(p, "transactional", NULL, NULL, NULL, T0 + 2 * SEC, &ch);
        ck_assert_msg(a && strcmp(a, "127.0.0.11") != 0, "pick %d: %s", i, a ? a : "-");
    }
    /* ... unless it is the only one left */
    char *err = NULL;
    ck_assert_int_eq(pools_set_zone(p, "az1", false, &err), 0);
    ck_assert_int_eq(pools_set_zone(p, "az3", false, &err), 0);
    ck_assert_str_eq(pick(p, "transactional", NULL, NULL, NULL, T0 + 2 * SEC, &ch), "127.0.0.11");
    ck_assert_msg(strstr(ch.reason, "degraded"), "reason: %s", ch.reason);
    ck_assert_int_eq(pools_set_zone(p, "az1", true, &err), 0);
    ck_assert_int_eq(pools_set_zone(p, "az3", true, &err), 0);
    /* after the cool-down it gets its turn again (a probe), still shown degraded */
    int64_t later = T0 + 2 * MIN;
    bool seen = false;
    for (int i = 0; i < 6; i++) {
        const char *a = pick(p, "transactional", NULL, NULL, NULL, later, &ch);
        if (a && strcmp(a, "127.0.0.11") == 0) seen = true;
    }
    ck_assert(seen);
    in = info(p, "127.0.0.11", later);
    ck_assert(in.degraded);
    ck_assert(!in.avoided);
    /* a success clears it */
    result(p, "127.0.0.11", "mx.d0.test", POOLS_RESULT_OK, later);
    in = info(p, "127.0.0.11", later);
    ck_assert(!in.degraded);
    ck_assert_str_eq(in.degraded_reason, "");
    pools_free(p);
}
END_TEST

/* Refusals (fast failures) show as degraded but do not make the pool avoid the IP: the SPEC's
 * circuit breaker (3 failures at 2 sites) still takes it out of rotation. */
START_TEST(test_degraded_by_refusals_is_shown_not_avoided)
{
    static const ipspec ips[] = {{"127.0.0.10", "az1", "transactional", true},
                                 {"127.0.0.11", "az2", "transactional", true}, {0}};
    pools *p = make(ips, ZONES3, 0, T0);
    result(p, "127.0.0.10", "mx.a.test", POOLS_RESULT_OK, T0);
    result(p, "127.0.0.10", "mx.b.test", POOLS_RESULT_OK, T0);
    result(p, "127.0.0.11", "mx.a.test", POOLS_RESULT_CONNECT_FAILED, T0 + SEC);
    pools_ip_info in = info(p, "127.0.0.11", T0 + SEC);
    ck_assert(in.degraded);
    ck_assert(!in.avoided);
    ck_assert_msg(strstr(in.degraded_reason, "connect failures to 1 site(s)"), "%s", in.degraded_reason);
    pools_choice ch;
    int n11 = 0;
    for (int i = 0; i < 4; i++) {
        const char *a = pick(p, "transactional", NULL, NULL, NULL, T0 + 2 * SEC, &ch);
        if (strcmp(a, "127.0.0.11") == 0) n11++;
    }
    ck_assert_int_eq(n11, 2);
    result(p, "127.0.0.11", "mx.b.test", POOLS_RESULT_CONNECT_FAILED, T0 + 3 * SEC);
    result(p, "127.0.0.11", "mx.a.test", POOLS_RESULT_CONNECT_FAILED, T0 + 4 * SEC);
    in = info(p, "127.0.0.11", T0 + 4 * SEC);
    ck_assert_int_eq(in.state, POOLS_STATE_DOWN);
    ck_assert(!in.degraded);               /* down says it now */
    ck_assert_str_eq(in.degraded_reason, "");
    pools_free(p);
}
END_TEST

static const ipspec four[] = {{"127.0.0.10", "az1", "transactional", true},
                              {"127.0.0.11", "az2", "transactional", true},
                              {"127.0.0.12", "az3", "transactional", true},
                              {"127.0.0.13", "az1", "transactional", true}, {0}};

START_TEST(test_avoid_zone_after_failure)
{
    pools *p = make(four, ZONES3, 4, T0);
    pools_choice ch;
    int n11 = 0, n12 = 0;
    for (int i = 0; i < 30; i++) {
        const char *a = pick(p, "transactional", NULL, "127.0.0.10", "az1", T0, &ch);
        ck_assert_msg(strcmp(a, "127.0.0.11") == 0 || strcmp(a, "127.0.0.12") == 0,
                      "after a failure in az1 got %s", a);
        if (strcmp(a, "127.0.0.11") == 0) n11++;
        else n12++;
    }
    ck_assert_int_eq(n11, 15);                  /* warm IPs share evenly */
    ck_assert_int_eq(n12, 15);
    ck_assert_msg(strstr(ch.reason, "outside zone az1"), "reason: %s", ch.reason);

    /* no other zone usable: another IP of the same zone before the failed one */
    char *err = NULL;
    ck_assert_int_eq(pools_set_zone(p, "az2", false, &err), 0);
    ck_assert_int_eq(pools_set_zone(p, "az3", false, &err), 0);
    ck_assert_str_eq(pick(p, "transactional", NULL, "127.0.0.10", "az1", T0, &ch), "127.0.0.13");
    ck_assert_msg(strstr(ch.reason, "no usable IP outside zone az1"), "reason: %s", ch.reason);
    /* and the failed IP itself when it is all that is left */
    bind_fail(p, "127.0.0.13", T0);
    ck_assert_str_eq(pick(p, "transactional", NULL, "127.0.0.10", "az1", T0, &ch), "127.0.0.10");
    ck_assert_msg(strstr(ch.reason, "only usable IP"), "reason: %s", ch.reason);
    /* without preferences everything usable shares */
    ck_assert_int_eq(pools_set_zone(p, "az2", true, &err), 0);
    int seen11 = 0;
    for (int i = 0; i < 4; i++)
        if (strcmp(pick(p, "transactional", NULL, NULL, NULL, T0, &ch), "127.0.0.11") == 0) seen11++;
    ck_assert_int_eq(seen11, 2);
    pools_free(p);
}
END_TEST

START_TEST(test_zone_down_excludes)
{
    pools *p = make(four, ZONES3, 4, T0);
    char *err = NULL;
    ck_assert(pools_zone_is_up(p, "az2"));
    ck_assert_int_eq(pools_set_zone(p, "az2", false, &err), 0);
    ck_assert(!pools_zone_is_up(p, "az2"));
    pools_ip_info in = info(p, "127.0.0.11", T0);
    ck_assert_int_eq(in.state, POOLS_STATE_DOWN);
    ck_assert_int_eq(in.health, POOLS_HEALTH_CLOSED);
    ck_assert_str_eq(in.down_reason, "zone az2 is down");
    pools_choice ch;
    for (int i = 0; i < 30; i++)
        ck_assert_str_ne(pick(p, "transactional", NULL, NULL, NULL, T0, &ch), "127.0.0.11");

    ck_assert_int_eq(pools_set_zone(p, "az9", false, &err), -1);
    ck_assert_str_eq(err, "unknown zone 'az9' (zones: az1, az2, az3)");
    free(err);
    ck_assert(!pools_zone_is_up(p, "az9"));

    ck_assert_int_eq(pools_set_zone(p, "az2", true, &err), 0);
    ck_assert_int_eq(info(p, "127.0.0.11", T0).state, POOLS_STATE_ACTIVE);
    ck_assert_str_eq(info(p, "127.0.0.11", T0).down_reason, "");
    int seen = 0;
    for (int i = 0; i < 8; i++)
        if (strcmp(pick(p, "transactional", NULL, NULL, NULL, T0, &ch), "127.0.0.11") == 0) seen++;
    ck_assert_int_eq(seen, 2);

    /* every zone down: nothing goes out */
    for (int i = 0; ZONES3[i]; i++) ck_assert_int_eq(pools_set_zone(p, ZONES3[i], false, &err), 0);
    ck_assert_ptr_null(pick(p, "transactional", NULL, NULL, NULL, T0, &ch));
    ck_assert_int_eq(ch.verdict, POOLS_ALL_DOWN);
    ck_assert_int_eq(ch.retry_at_ms, 0);           /* up to the operator */
    ck_assert_msg(strstr(ch.reason, "127.0.0.11 zone az2 is down"), "reason: %s", ch.reason);
    pools_free(p);
}
END_TEST

START_TEST(test_all_at_cap)
{
    static const ipspec ips[] = {{"127.0.0.10", "az1", "transactional", false},
                                 {"127.0.0.11", "az2", "transactional", false}, {0}};
    pools *p = make(ips, ZONES3, 0, T0);
    send(p, "127.0.0.10", NULL, 50, T0);
    send(p, "127.0.0.11", NULL, 50, T0 + MIN);
    pools_choice ch;
    ck_assert_ptr_null(pick(p, "transactional", NULL, NULL, NULL, T0 + HOUR, &ch));
    ck_assert_int_eq(ch.verdict, POOLS_ALL_AT_CAP);
    ck_assert_str_eq(ch.reason, "all IPs of pool transactional at cap (127.0.0.10 warm-up 50/50 "
                                "per 24h, 127.0.0.11 warm-up 50/50 per 24h)");
    ck_assert_int_eq(ch.retry_at_ms, T0 + DAY);    /* day 1 of the ramp: cap 58 */

    /* one of them down as well: the reason says so, and its cool-down is the earlier retry */
    bind_fail(p, "127.0.0.11", T0 + HOUR);
    pick(p, "transactional", NULL, NULL, NULL, T0 + HOUR, &ch);
    ck_assert_int_eq(ch.verdict, POOLS_ALL_AT_CAP);
    ck_assert_str_eq(ch.reason, "all usable IPs of pool transactional at cap (127.0.0.10 warm-up "
                                "50/50 per 24h); 1 down: 127.0.0.11 bind failed, back in 60s");
    ck_assert_int_eq(ch.retry_at_ms, T0 + HOUR + MIN);
    pools_free(p);
}
END_TEST

START_TEST(test_long_reason_is_cut)
{
    static const ipspec ips[] = {
        {"192.168.100.101", "az1", "transactional", false}, {"192.168.100.102", "az1", "transactional", false},
        {"192.168.100.103", "az1", "transactional", false}, {"192.168.100.104", "az1", "transactional", false},
        {"192.168.100.105", "az1", "transactional", false}, {"192.168.100.106", "az1", "transactional", false},
        {0}};
    pools *p = make(ips, ZONES3, 0, T0);
    for (int i = 0; ips[i].addr; i++) send(p, ips[i].addr, NULL, 50, T0);
    pools_choice ch;
    pick(p, "transactional", NULL, NULL, NULL, T0, &ch);
    ck_assert_int_eq(ch.verdict, POOLS_ALL_AT_CAP);
    ck_assert_uint_eq(strlen(ch.reason), sizeof ch.reason - 1);
    ck_assert_str_eq(ch.reason + strlen(ch.reason) - 3, "...");
    pools_free(p);
}
END_TEST

START_TEST(test_all_down_and_no_ip)
{
    pools *p = make(four, ZONES3, 4, T0);
    for (int i = 0; four[i].addr; i++) bind_fail(p, four[i].addr, T0 + i * SEC);
    pools_choice ch;
    ck_assert_ptr_null(pick(p, "transactional", NULL, NULL, NULL, T0 + 10 * SEC, &ch));
    ck_assert_int_eq(ch.verdict, POOLS_ALL_DOWN);
    ck_assert_int_eq(ch.retry_at_ms, T0 + 60 * SEC);     /* the first cool-down to end */
    ck_assert_msg(strncmp(ch.reason, "all IPs of pool transactional unavailable: 127.0.0.10 bind failed",
                          64) == 0, "reason: %s", ch.reason);

    /* a pool without IPs, and a pool the config does not know */
    pick(p, "empty", NULL, NULL, NULL, T0, &ch);
    ck_assert_int_eq(ch.verdict, POOLS_NO_IP);
    ck_assert_str_eq(ch.reason, "pool empty has no IP");
    ck_assert_ptr_null(ch.ip);
    pick(p, "nosuchpool", NULL, NULL, NULL, T0, &ch);
    ck_assert_int_eq(ch.verdict, POOLS_NO_IP);
    pools_free(p);
}
END_TEST

/* ---- managed pools: caps per (IP, provider) ---- */

static const ipspec managed[] = {{"127.0.0.20", "az1", "marketing", false},
                                 {"127.0.0.21", "az2", "marketing", false}, {0}};

START_TEST(test_managed_caps)
{
    pools *p = make(managed, ZONES3, 0, T0);
    pools_ip *a = pools_find(p, "127.0.0.20"), *b = pools_find(p, "127.0.0.21");
    pools_ip_info in = info(p, "127.0.0.20", T0);
    ck_assert(in.managed);
    ck_assert_str_eq(in.warmup_status, "NOT_APPLICABLE");
    ck_assert_int_eq(in.warmup_percentage, -1);
    ck_assert_int_eq(in.daily_cap, -1);
    ck_assert_int_eq(in.hourly_cap, -1);
    ck_assert_int_eq(pools_headroom(p, a, "gmail", T0), 50);   /* first_day per provider */

    /* acceptance raises it, one per recipient accepted */
    pools_record_result(p, a, "gmail-smtp-in.l.google.com", "gmail", POOLS_RESULT_OK, 30, T0);
    send(p, "127.0.0.20", "gmail", 10, T0);
    ck_assert_int_eq(pools_headroom(p, a, "gmail", T0), 70);   /* 80 - 10 */
    ck_assert_int_eq(pools_headroom(p, a, "yahoo", T0), 50);   /* other providers untouched */
    ck_assert_int_eq(info(p, "127.0.0.20", T0).sent_24h, 10);

    /* a throttle halves it (not below first_day) and blocks that provider only */
    pools_record_result(p, a, "gmail-smtp-in.l.google.com", "gmail", POOLS_RESULT_THROTTLED, 0,
                        T0 + MIN);
    ck_assert_int_eq(pools_headroom(p, a, "gmail", T0 + MIN), 0);
    pools_choice ch;
    for (int i = 0; i < 5; i++)
        ck_assert_str_eq(pick(p, "marketing", "gmail", NULL, NULL, T0 + MIN, &ch), "127.0.0.21");
    int seen20 = 0;
    for (int i = 0; i < 4; i++)
        if (strcmp(pick(p, "marketing", "yahoo", NULL, NULL, T0 + MIN, &ch), "127.0.0.20") == 0)
            seen20++;
    ck_assert_int_eq(seen20, 2);
    ck_assert_int_eq(info(p, "127.0.0.20", T0 + MIN).state, POOLS_STATE_ACTIVE);

    /* both throttled by gmail: wait for the first block to end */
    pools_record_result(p, b, "gmail-smtp-in.l.google.com", "gmail", POOLS_RESULT_THROTTLED, 0,
                        T0 + MIN + 10 * SEC);
    ck_assert_ptr_null(pick(p, "marketing", "gmail", NULL, NULL, T0 + MIN + 20 * SEC, &ch));
    ck_assert_int_eq(ch.verdict, POOLS_ALL_AT_CAP);
    ck_assert_str_eq(ch.reason, "all IPs of pool marketing at cap (127.0.0.20 gmail throttled, "
                                "blocked 40s, 127.0.0.21 gmail throttled, blocked 50s)");
    ck_assert_int_eq(ch.retry_at_ms, T0 + 2 * MIN);
    /* after the block: cap 50 (80 halved is 40, not below first_day), 10 used */
    ck_assert_int_eq(pools_headroom(p, a, "gmail", T0 + 2 * MIN), 40);
    ck_assert_str_eq(pick(p, "marketing", "gmail", NULL, NULL, T0 + 2 * MIN, &ch), "127.0.0.20");
    pools_free(p);
}
END_TEST

START_TEST(test_managed_growth_and_backoff)
{
    pools *p = make(managed, ZONES3, 0, T0);
    pools_ip *a = pools_find(p, "127.0.0.20");
    const char *mx = "mx.outlook.com";
    pools_record_result(p, a, mx, "microsoft", POOLS_RESULT_OK, 150, T0);
    ck_assert_int_eq(pools_headroom(p, a, "microsoft", T0), 200);
    pools_record_result(p, a, mx, "microsoft", POOLS_RESULT_OK, 1000000, T0);
    ck_assert_int_eq(pools_headroom(p, a, "microsoft", T0), 50000);   /* up to target */

    int64_t t = T0 + HOUR;
    pools_record_result(p, a, mx, "microsoft", POOLS_RESULT_THROTTLED, 0, t);
    ck_assert_int_eq(pools_headroom(p, a, "microsoft", t + 59 * SEC), 0);
    ck_assert_int_eq(pools_headroom(p, a, "microsoft", t + 60 * SEC), 25000);
    /* more throttles from sessions already open during the block: the same episode */
    pools_record_result(p, a, mx, "microsoft", POOLS_RESULT_THROTTLED, 0, t + 5 * SEC);
    ck_assert_int_eq(pools_headroom(p, a, "microsoft", t + 60 * SEC), 25000);
    /* throttled again soon after the block: halved again, blocked twice as long */
    pools_record_result(p, a, mx, "microsoft", POOLS_RESULT_THROTTLED, 0, t + 90 * SEC);
    ck_assert_int_eq(pools_headroom(p, a, "microsoft", t + 209 * SEC), 0);
    ck_assert_int_eq(pools_headroom(p, a, "microsoft", t + 210 * SEC), 12500);
    /* ... doubling up to 15 minutes */
    int64_t at = t + 210 * SEC, block = 120 * SEC;
    for (int i = 0; i < 5; i++) {
        pools_record_result(p, a, mx, "microsoft", POOLS_RESULT_THROTTLED, 0, at);
        block = block * 2 > 15 * MIN ? 15 * MIN : block * 2;
        ck_assert_int_eq(pools_headroom(p, a, "microsoft", at + block - 1), 0);
        ck_assert_int_ne(pools_headroom(p, a, "microsoft", at + block), 0);
        at += block;
    }
    ck_assert_int_eq(block, 15 * MIN);
    ck_assert_int_eq(pools_headroom(p, a, "microsoft", at), 390);   /* 12500 halved 5 times */
    /* a throttle long after: back to 60 s */
    pools_record_result(p, a, mx, "microsoft", POOLS_RESULT_THROTTLED, 0, at + HOUR);
    ck_assert_int_eq(pools_headroom(p, a, "microsoft", at + HOUR + 59 * SEC), 0);
    ck_assert_int_eq(pools_headroom(p, a, "microsoft", at + HOUR + 60 * SEC), 195);
    /* halving stops at first_day */
    for (int i = 0; i < 6; i++)
        pools_record_result(p, a, mx, "microsoft", POOLS_RESULT_THROTTLED, 0, at + (2 + i) * HOUR);
    ck_assert_int_eq(pools_headroom(p, a, "microsoft", at + 9 * HOUR), 50);
    pools_free(p);
}
END_TEST

START_TEST(test_managed_daily_and_pacing)
{
    pools *p = make(managed, ZONES3, 4, T0);
    pools_choice ch;
    for (int i = 0; i < 9; i++) {
        ck_assert_ptr_nonnull(pick(p, "marketing", "gmail", "127.0.0.21", "az2", T0, &ch));
        send(p, "127.0.0.20", "gmail", 1, T0);
    }
    ck_assert_str_eq(pick(p, "marketing", "gmail", "127.0.0.21", "az2", T0, &ch), "127.0.0.21");
    send(p, "127.0.0.21", "gmail", 9, T0);
    pick(p, "marketing", "gmail", NULL, NULL, T0, &ch);
    ck_assert_int_eq(ch.verdict, POOLS_ALL_AT_CAP);
    ck_assert_str_eq(ch.reason, "all IPs of pool marketing at cap (127.0.0.20 gmail pacing 9/9 "
                                "per hour, 127.0.0.21 gmail pacing 9/9 per hour)");
    /* daily cap per provider once the hours pass */
    for (int h = 1; h <= 5; h++) send(p, "127.0.0.20", "gmail", 9, T0 + h * 62 * MIN);
    ck_assert_int_eq(pools_headroom(p, pools_find(p, "127.0.0.20"), "gmail", T0 + 7 * HOUR), 0);
    pick(p, "marketing", "gmail", "127.0.0.21", NULL, T0 + 7 * HOUR, &ch);
    ck_assert_str_eq(pools_ip_address(ch.ip), "127.0.0.21");
    send(p, "127.0.0.21", "gmail", 41, T0 + 7 * HOUR);  /* pacing allows 9 per hour; counted anyway */
    pick(p, "marketing", "gmail", NULL, NULL, T0 + 7 * HOUR, &ch);
    ck_assert_msg(strstr(ch.reason, "127.0.0.20 gmail 54/50 per 24h"), "reason: %s", ch.reason);
    ck_assert_msg(strstr(ch.reason, "127.0.0.21 gmail 50/50 per 24h"), "reason: %s", ch.reason);
    ck_assert_ptr_nonnull(pick(p, "marketing", "yahoo", NULL, NULL, T0 + 7 * HOUR, &ch));
    pools_free(p);
}
END_TEST

/* ---- reload: lease / release ---- */

static bool has(char **v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0) return true;
    return false;
}

START_TEST(test_reload_diff)
{
    static const ipspec v1[] = {{"127.0.0.10", "az1", "transactional", false},
                                {"127.0.0.11", "az2", "transactional", false},
                                {"127.0.0.12", "az3", "transactional", false}, {0}};
    static const ipspec v2[] = {{"127.0.0.10", "az1", "transactional", false},
                                {"127.0.0.11", "az3", "transactional", false},   /* moved */
                                {"127.0.0.13", "az2", "transactional", false}, {0}};  /* new */
    pools *p = make(v1, ZONES3, 0, T0);
    int64_t t = T0 + 10 * DAY;
    pools_diff d;
    apply(p, v2, ZONES3, t, &d);
    ck_assert_uint_eq(d.nadded, 1);
    ck_assert_str_eq(d.added[0], "127.0.0.13");
    ck_assert_uint_eq(d.nremoved, 1);
    ck_assert_str_eq(d.removed[0], "127.0.0.12");
    ck_assert_uint_eq(d.nmoved, 1);
    ck_assert_str_eq(d.moved[0], "127.0.0.11");
    pools_diff_free(&d);

    /* config order, then the draining one */
    ck_assert_uint_eq(pools_count(p), 4);
    const char *order[] = {"127.0.0.10", "127.0.0.11", "127.0.0.13", "127.0.0.12"};
    for (size_t i = 0; i < 4; i++) {
        pools_ip_info in;
        pools_info(p, i, t, &in);
        ck_assert_str_eq(in.address, order[i]);
    }
    pools_ip_info in = info(p, "127.0.0.12", t);
    ck_assert_int_eq(in.state, POOLS_STATE_DRAINING);
    ck_assert_str_eq(pools_state_name(in.state), "draining");
    /* the release time stays put while it drains (the pools.drained log line's after_s) */
    ck_assert_int_eq(info(p, "127.0.0.12", t + 7 * MIN).draining_since_ms, t);
    ck_assert_int_eq(info(p, "127.0.0.10", t).draining_since_ms, 0);
    in = info(p, "127.0.0.11", t);
    ck_assert_str_eq(in.zone, "az3");
    ck_assert_str_eq(pools_ip_zone(pools_find(p, "127.0.0.11")), "az3");
    ck_assert_int_eq(in.warmup_percentage, 22);      /* moved: the ramp goes on */
    ck_assert_int_eq(info(p, "127.0.0.13", t).warmup_percentage, 0);   /* new: from 0 % */
    pools_choice ch;
    for (int i = 0; i < 40; i++)
        ck_assert_str_ne(pick(p, "transactional", NULL, NULL, NULL, t, &ch), "127.0.0.12");

    /* leased again while still draining: active with its old ramp */
    apply(p, v1, ZONES3, t + HOUR, &d);
    ck_assert(has(d.added, d.nadded, "127.0.0.12"));
    ck_assert(has(d.removed, d.nremoved, "127.0.0.13"));
    ck_assert(has(d.moved, d.nmoved, "127.0.0.11"));
    pools_diff_free(&d);
    in = info(p, "127.0.0.12", t + HOUR);
    ck_assert_int_eq(in.state, POOLS_STATE_ACTIVE);
    ck_assert_int_eq(in.draining_since_ms, 0);
    ck_assert_int_eq(in.warmup_percentage, 22);

    /* forget drops only draining IPs */
    pools_forget(p, "127.0.0.10");
    ck_assert_uint_eq(pools_count(p), 4);
    pools_forget(p, "127.0.0.13");
    ck_assert_uint_eq(pools_count(p), 3);
    ck_assert_int_eq(pools_info_by_address(p, "127.0.0.13", t, &in), -1);
    ck_assert_ptr_null(pools_find(p, "127.0.0.13"));
    pools_free(p);
}
END_TEST

START_TEST(test_reload_only_draining_left)
{
    static const ipspec v1[] = {{"127.0.0.10", "az1", "transactional", true},
                                {"127.0.0.20", "az2", "marketing", false}, {0}};
    static const ipspec v2[] = {{"127.0.0.20", "az2", "marketing", false}, {0}};
    pools *p = make(v1, ZONES3, 0, T0);
    pools_diff d;
    apply(p, v2, ZONES3, T0, &d);
    pools_diff_free(&d);
    pools_choice ch;
    pick(p, "transactional", NULL, NULL, NULL, T0, &ch);
    ck_assert_int_eq(ch.verdict, POOLS_ALL_DOWN);
    ck_assert_str_eq(ch.reason, "all IPs of pool transactional unavailable: 127.0.0.10 draining");
    /* its open sessions still finish and are counted */
    pools_ip *ip = pools_find(p, "127.0.0.10");
    pools_session_started(p, ip);
    ck_assert_int_eq(info(p, "127.0.0.10", T0).sessions, 1);
    pools_session_ended(p, ip);
    pools_forget(p, "127.0.0.10");
    pick(p, "transactional", NULL, NULL, NULL, T0, &ch);
    ck_assert_int_eq(ch.verdict, POOLS_NO_IP);
    pools_free(p);
}
END_TEST

START_TEST(test_reload_zones_and_warm_flag)
{
    static const ipspec v1[] = {{"127.0.0.10", "az1", "transactional", false},
                                {"127.0.0.11", "az2", "transactional", false}, {0}};
    static const ipspec v2[] = {{"127.0.0.10", "az1", "transactional", true},   /* now `warmup: done` */
                                {"127.0.0.11", "az2", "transactional", false}, {0}};
    static const char *const two[] = {"az1", "az2", NULL};
    static const char *const other[] = {"az1", "az3", NULL};
    pools *p = make(v1, ZONES3, 0, T0);
    char *err = NULL;
    ck_assert_int_eq(pools_set_zone(p, "az2", false, &err), 0);
    pools_diff d;
    apply(p, v2, two, T0 + HOUR, &d);
    ck_assert_uint_eq(d.nadded + d.nremoved + d.nmoved, 0);
    pools_diff_free(&d);
    ck_assert(!pools_zone_is_up(p, "az2"));                     /* still down */
    ck_assert_str_eq(info(p, "127.0.0.10", T0 + HOUR).warmup_status, "DONE");
    ck_assert_str_eq(info(p, "127.0.0.11", T0 + HOUR).warmup_status, "IN_PROGRESS");
    /* az2 leaves the config: its IP moves to az3, which is up */
    static const ipspec v3[] = {{"127.0.0.10", "az1", "transactional", true},
                                {"127.0.0.11", "az3", "transactional", false}, {0}};
    apply(p, v3, other, T0 + 2 * HOUR, &d);
    ck_assert(has(d.moved, d.nmoved, "127.0.0.11"));
    pools_diff_free(&d);
    ck_assert_int_eq(info(p, "127.0.0.11", T0 + 2 * HOUR).state, POOLS_STATE_ACTIVE);
    ck_assert_int_eq(pools_set_zone(p, "az2", true, &err), -1);
    free(err);
    pools_free(p);
}
END_TEST

/* ---- persistence ---- */

static const ipspec mixed[] = {{"127.0.0.10", "az1", "transactional", false},
                               {"127.0.0.11", "az2", "transactional", false},
                               {"127.0.0.20", "az3", "marketing", false}, {0}};

START_TEST(test_state_round_trip)
{
    pools *p = make(mixed, ZONES3, 0, T0 - 3 * DAY);
    ck_assert(pools_dirty(p));                          /* new leases need saving */
    char *js = pools_state_json(p);
    free(js);
    ck_assert(!pools_dirty(p));

    send(p, "127.0.0.10", NULL, 30, T0 - HOUR);
    ck_assert(pools_dirty(p));
    char *err = NULL;
    ck_assert_int_eq(pools_set_warmup(p, "127.0.0.11", 30, T0 - 2 * HOUR, &err), 0);
    ck_assert_int_eq(pools_set_zone(p, "az3", false, &err), 0);
    pools_ip *m = pools_find(p, "127.0.0.20");
    pools_record_result(p, m, "mx.google.com", "gmail", POOLS_RESULT_OK, 30, T0 - HOUR);
    send(p, "127.0.0.20", "gmail", 5, T0 - HOUR);
    js = pools_state_json(p);
    ck_assert(!pools_dirty(p));
    /* reading and choosing change nothing that is saved */
    pools_choice ch;
    pick(p, "transactional", NULL, NULL, NULL, T0, &ch);
    pools_ip_info in = info(p, "127.0.0.10", T0);
    ck_assert(!pools_dirty(p));
    pools_free(p);

    /* a restart: new state, then the saved one */
    pools *q = make(mixed, ZONES3, 0, T0);
    ck_assert_int_eq(info(q, "127.0.0.10", T0).warmup_percentage, 0);
    ck_assert_int_eq(pools_state_load(q, js, T0, &err), 0);
    in = info(q, "127.0.0.10", T0);
    ck_assert_int_eq(in.warmup_percentage, 6);        /* leased 3 days ago */
    ck_assert_int_eq(in.sent_24h, 30);
    ck_assert_int_eq(pools_headroom(q, pools_find(q, "127.0.0.10"), NULL, T0), 79 - 30);
    ck_assert_int_eq(info(q, "127.0.0.11", T0).warmup_percentage, 30);
    ck_assert(!pools_zone_is_up(q, "az3"));
    ck_assert(pools_zone_is_up(q, "az1"));
    ck_assert_int_eq(info(q, "127.0.0.20", T0).state, POOLS_STATE_DOWN);
    ck_assert_int_eq(pools_headroom(q, pools_find(q, "127.0.0.20"), "gmail", T0), 80 - 5);
    ck_assert_int_eq(info(q, "127.0.0.20", T0).sent_24h, 5);
    /* saving again gives the same text */
    char *js2 = pools_state_json(q);
    ck_assert_str_eq(js2, js);
    free(js2);
    pools_free(q);

    /* a day later the usage has left the window, the ramp has not; unknown IPs ignored */
    static const ipspec fewer[] = {{"127.0.0.10", "az1", "transactional", false}, {0}};
    pools *r = make(fewer, ZONES3, 0, T0 + DAY + HOUR);
    ck_assert_int_eq(pools_state_load(r, js, T0 + DAY + HOUR, &err), 0);
    in = info(r, "127.0.0.10", T0 + DAY + HOUR);
    ck_assert_int_eq(in.sent_24h, 0);
    ck_assert_int_eq(in.warmup_percentage, 8);
    ck_assert_uint_eq(pools_count(r), 1);
    pools_free(r);
    free(js);
}
END_TEST

static const char *const malformed[] = {
    "",
    "not json",
    "[]",
    "{}",
    "{\"version\": 2, \"zones_down\": [], \"ips\": {}}",
    "{\"version\": \"1\", \"zones_down\": [], \"ips\": {}}",
    "{\"version\": 1, \"zones_down\": [], \"ips\": []}",
    "{\"version\": 1, \"zones_down\": [3], \"ips\": {}}",
    "{\"version\": 1, \"ips\": {}}",
    "{\"version\": 1, \"zones_down\": [\"az1\"], \"ips\": {\"127.0.0.10\": {\"lease_ms\": 1}}}",
    "{\"version\": 1, \"zones_down\": [\"az1\"], \"ips\": {\"127.0.0.10\": {\"lease_ms\": 1, "
    "\"config_done\": false, \"warmup\": {\"done\": false, \"base_pct\": 150, \"base_ms\": 1, "
    "\"qualified\": 0, \"eval_day\": 0, \"day_sent\": 0}, \"usage\": [], \"providers\": {}}}}",
    "{\"version\": 1, \"zones_down\": [\"az1\"], \"ips\": {\"127.0.0.10\": {\"lease_ms\": 1, "
    "\"config_done\": false, \"warmup\": {\"done\": false, \"base_pct\": 10, \"base_ms\": 1, "
    "\"qualified\": 0, \"eval_day\": 0, \"day_sent\": 0}, \"usage\": [[1]], \"providers\": {}}}}",
    "{\"version\": 1, \"zones_down\": [\"az1\"], \"ips\": {\"127.0.0.10\": {\"lease_ms\": 1, "
    "\"config_done\": false, \"warmup\": {\"done\": false, \"base_pct\": 10, \"base_ms\": 1, "
    "\"qualified\": 0, \"eval_day\": 0, \"day_sent\": 0}, \"usage\": [], \"providers\": "
    "{\"gmail\": {\"cap\": \"many\", \"usage\": []}}}}}",
    /* valid first IP, broken second: nothing of the first may be applied either */
    "{\"version\": 1, \"zones_down\": [\"az1\"], \"ips\": {\"127.0.0.10\": {\"lease_ms\": 1, "
    "\"config_done\": false, \"warmup\": {\"done\": true, \"base_pct\": 100, \"base_ms\": 1, "
    "\"qualified\": 0, \"eval_day\": 0, \"day_sent\": 0}, \"usage\": [[28333333, 40]], "
    "\"providers\": {}}, \"127.0.0.11\": {}}}",
    "{\"version\": 1, \"version\": 1, \"zones_down\": [], \"ips\": {}}",
};

START_TEST(test_state_malformed_rejected)
{
    pools *p = make(mixed, ZONES3, 0, T0);
    send(p, "127.0.0.10", NULL, 7, T0);
    char *before = pools_state_json(p);
    char *err = NULL;
    ck_assert_int_eq(pools_state_load(p, malformed[_i], T0, &err), -1);
    ck_assert_msg(err && strncmp(err, "pools state: ", 13) == 0, "input %d: err %s", _i, err);
    free(err);
    char *after = pools_state_json(p);
    ck_assert_str_eq(after, before);
    ck_assert(pools_zone_is_up(p, "az1"));
    ck_assert_str_eq(info(p, "127.0.0.10", T0).warmup_status, "IN_PROGRESS");
    free(before);
    free(after);
    pools_free(p);
}
END_TEST

START_TEST(test_dirty_marks)
{
    pools *p = make(mixed, ZONES3, 0, T0);
    char *err = NULL;
    pools_diff d;
#define SAVED() free(pools_state_json(p))
    SAVED();
    pools_record_result(p, pools_find(p, "127.0.0.10"), "mx", "other", POOLS_RESULT_CONNECT_FAILED,
                        0, T0);
    ck_assert_msg(!pools_dirty(p), "health is not saved");
    ck_assert_int_eq(pools_set_zone(p, "az1", false, &err), 0);
    ck_assert(pools_dirty(p));
    SAVED();
    ck_assert_int_eq(pools_set_warmup(p, "127.0.0.10", 10, T0, &err), 0);
    ck_assert(pools_dirty(p));
    SAVED();
    apply(p, mixed, ZONES3, T0, &d);
    pools_diff_free(&d);
    ck_assert(pools_dirty(p));
    SAVED();
    pools_record_result(p, pools_find(p, "127.0.0.20"), "mx.yahoodns.net", "yahoo",
                        POOLS_RESULT_THROTTLED, 0, T0);
    ck_assert_msg(pools_dirty(p), "managed cap change");
    SAVED();
    send(p, "127.0.0.11", NULL, 1, T0);
    ck_assert(pools_dirty(p));
#undef SAVED
    pools_free(p);
}
END_TEST

/* ---- accessors ---- */

START_TEST(test_ip_accessors)
{
    config *c = build(mixed, ZONES3, 0);
    c->ips[0].ehlo = util_strdup("o10.example.test");
    pools *p = pools_new(c, NULL, T0);
    config_unref(c);
    pools_ip *ip = pools_find(p, "127.0.0.10");
    ck_assert_str_eq(pools_ip_address(ip), "127.0.0.10");
    ck_assert_str_eq(pools_ip_zone(ip), "az1");
    ck_assert_str_eq(pools_ip_ehlo(ip), "o10.example.test");
    ck_assert_ptr_null(pools_ip_ehlo(pools_find(p, "127.0.0.11")));
    pools_ip_info in;
    pools_ip_info_of(p, ip, T0, &in);
    ck_assert_str_eq(in.pool, "transactional");
    ck_assert_str_eq(in.ehlo, "o10.example.test");
    ck_assert_int_eq(in.sessions, 0);
    pools_free(p);
}
END_TEST

/* ---- mailbox provider of an MX host ---- */

static const struct {
    const char *mx, *provider;
} providers[] = {
    {"aspmx.l.google.com", "gmail"},
    {"ALT1.ASPMX.L.GOOGLE.COM.", "gmail"},
    {"google.com", "gmail"},
    {"gmail-smtp-in.l.google.com", "gmail"},
    {"mx1.googlemail.com", "gmail"},
    {"evilgoogle.com", "other"},
    {"google.com.evil.test", "other"},
    {"example-com.mail.protection.outlook.com", "microsoft"},
    {"mx4.hotmail.com", "microsoft"},
    {"nothotmail.com", "other"},
    {"mta5.am0.yahoodns.net", "yahoo"},
    {"mx-eu.mail.am0.yahoodns.net.", "yahoo"},
    {"mx.yahoo.com", "yahoo"},
    {"notyahoo.com", "other"},
    {"mx.example.test", "other"},
    {"", "other"},
    {".", "other"},
    {NULL, "other"},
};

START_TEST(test_provider_of)
{
    const char *got = pools_provider_of(providers[_i].mx);
    ck_assert_msg(strcmp(got, providers[_i].provider) == 0, "%s: %s, want %s",
                  providers[_i].mx ? providers[_i].mx : "(null)", got, providers[_i].provider);
}
END_TEST

static Suite *pools_suite(void)
{
    Suite *s = suite_create("pools");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_choice_proportional_to_headroom);
    tcase_add_test(tc, test_avoid_zone_after_failure);
    tcase_add_test(tc, test_degraded_by_connect_timeouts);
    tcase_add_test(tc, test_degraded_by_refusals_is_shown_not_avoided);
    tcase_add_test(tc, test_zone_down_excludes);
    tcase_add_test(tc, test_all_at_cap);
    tcase_add_test(tc, test_long_reason_is_cut);
    tcase_add_test(tc, test_all_down_and_no_ip);
    tcase_add_test(tc, test_managed_caps);
    tcase_add_test(tc, test_managed_growth_and_backoff);
    tcase_add_test(tc, test_managed_daily_and_pacing);
    tcase_add_test(tc, test_reload_diff);
    tcase_add_test(tc, test_reload_only_draining_left);
    tcase_add_test(tc, test_reload_zones_and_warm_flag);
    tcase_add_test(tc, test_state_round_trip);
    tcase_add_loop_test(tc, test_state_malformed_rejected, 0,
                        sizeof malformed / sizeof malformed[0]);
    tcase_add_test(tc, test_dirty_marks);
    tcase_add_test(tc, test_ip_accessors);
    tcase_add_loop_test(tc, test_provider_of, 0, sizeof providers / sizeof providers[0]);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(pools_suite);
