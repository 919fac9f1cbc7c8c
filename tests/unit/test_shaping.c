/* test_shaping.c — traffic shaping per (source IP, destination site) (scheduler/shaping.c):
 * site keys, provider limits, the rate token bucket, the slow-start connection window, the
 * throttling backoff, reloads and garbage collection, driven by an injected clock and a
 * deterministic random source. */
#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/shaping.h"
#include "tests/unit/testlib.h"

#define T0 INT64_C(1700000000000)
#define SEC INT64_C(1000)
#define MIN (60 * SEC)
#define IP1 "127.0.0.10"
#define IP2 "127.0.0.11"

/* ---- fixtures: a config built in memory (shaping only reads shaping_default/providers) ---- */

static char *gmail_sfx[] = {"google.com", "googlemail.com", "gmail.test"};
static char *slow_sfx[] = {"slow.test"};
static char *mpc_sfx[] = {"few.test"};
static char *both_sfx[] = {"google.com"};        /* a later provider that never wins */

#define UNSET_RATE {-1, 0}

static config *make_config(config_provider *prov, size_t nprov)
{
    config *c = testlib_config_new();
    testlib_config_set_shaping_default(c, 10, 100, (config_rate){50, 1000});
    for (size_t i = 0; i < nprov; i++)
        testlib_config_add_provider(c, prov[i].name, prov[i].mx_suffix, prov[i].nmx_suffix,
                                    prov[i].limits);
    return c;
}

/* default 10/100/50 per s; gmail: connections 20; slow: rate 10/m; few: 5 messages per
 * connection; late: google.com again with connections 99 (must lose to gmail). */
static config_provider std_providers[] = {
    {"gmail", gmail_sfx, 3, {20, -1, UNSET_RATE}},
    {"slow", slow_sfx, 1, {-1, -1, {10, 60000}}},
    {"few", mpc_sfx, 1, {-1, 5, UNSET_RATE}},
    {"late", both_sfx, 1, {99, 1, {1, 3600000}}},
};

typedef struct {
    uint32_t value;          /* what rnd returns */
    int calls;
} fixed_rnd;

static uint32_t rnd_fixed(void *arg)
{
    fixed_rnd *r = arg;
    r->calls++;
    return r->value;
}

#define RND_LOW 0u                   /* jitter factor 0.8 */
#define RND_HIGH UINT32_MAX          /* jitter factor 1.2 */
#define RND_MID (UINT32_MAX / 2)     /* jitter factor 1.0 (rounded to the ms) */

static shaping *new_std(fixed_rnd *r)
{
    config *c = make_config(std_providers, sizeof std_providers / sizeof std_providers[0]);
    shaping *sh = shaping_new(c, r ? rnd_fixed : NULL, r);
    config_unref(c);                 /* shaping copies what it keeps */
    return sh;
}

/* Entry for one site given as a NULL-terminated host list. */
static shaping_dest *get_site(shaping *sh, const char *ip, char *const *hosts)
{
    size_t n = 0;
    while (hosts[n]) n++;
    char *key = shaping_site_key(hosts, n);
    shaping_dest *d = shaping_get(sh, ip, key, hosts, n);
    free(key);
    return d;
}

static shaping_info info_of(const shaping_dest *d, int64_t now)
{
    shaping_info i;
    shaping_get_info(d, now, &i);
    return i;
}

/* Opens as many connections as the window allows at now; returns how many. */
static int open_all(shaping_dest *d, int64_t now)
{
    int n = 0;
    int64_t at;
    while (shaping_may_connect(d, now, &at, NULL, 0) == SHAPING_OK) {
        shaping_connection_opened(d);
        n++;
        ck_assert_int_lt(n, 100000);
    }
    return n;
}

static void close_n(shaping_dest *d, int n)
{
    for (int i = 0; i < n; i++) shaping_connection_closed(d);
}

/* ---- site keys ---- */

typedef struct {
    const char *name;
    const char *hosts[5];
    const char *want;
} key_case;

static const key_case key_cases[] = {
    {"one host", {"mx.example.test"}, "mx.example.test"},
    {"sorted", {"mx2.a.test", "mx1.a.test"}, "mx1.a.test,mx2.a.test"},
    {"lower-cased", {"MX1.A.Test", "mx2.A.TEST"}, "mx1.a.test,mx2.a.test"},
    {"trailing dots removed", {"mx2.a.test.", "mx1.a.test.."}, "mx1.a.test,mx2.a.test"},
    {"deduplicated across case and dots", {"mx1.a.test", "MX1.A.TEST.", "mx1.a.test"},
     "mx1.a.test"},
    {"three hosts", {"c.test", "a.test", "b.test"}, "a.test,b.test,c.test"},
    {"no hosts", {NULL}, ""},
};

START_TEST(test_site_key_table)
{
    const key_case *c = &key_cases[_i];
    size_t n = 0;
    while (n < 5 && c->hosts[n]) n++;
    char *k = shaping_site_key((char *const *)c->hosts, n);
    ck_assert_msg(strcmp(k, c->want) == 0, "%s: got '%s', want '%s'", c->name, k, c->want);
    free(k);
}
END_TEST

START_TEST(test_site_shared_by_domains)
{
    shaping *sh = new_std(NULL);
    /* a.test and b.test both use the same two MX hosts, listed differently */
    char *a_mx[] = {"mx1.hoster.test", "mx2.hoster.test", NULL};
    char *b_mx[] = {"MX2.Hoster.Test.", "mx1.hoster.test", NULL};
    shaping_dest *a = get_site(sh, IP1, a_mx);
    shaping_dest *b = get_site(sh, IP1, b_mx);
    ck_assert_ptr_eq(a, b);
    ck_assert_str_eq(info_of(a, T0).site, "mx1.hoster.test,mx2.hoster.test");
    /* a connection to one domain's MX counts for the other */
    shaping_connection_opened(a);
    ck_assert_int_eq(info_of(b, T0).open, 1);
    /* another IP, or another MX set, is another entry */
    shaping_dest *other_ip = get_site(sh, IP2, a_mx);
    char *c_mx[] = {"mx1.hoster.test", NULL};
    shaping_dest *other_site = get_site(sh, IP1, c_mx);
    ck_assert_ptr_ne(other_ip, a);
    ck_assert_ptr_ne(other_site, a);
    ck_assert_int_eq(info_of(other_ip, T0).open, 0);
    ck_assert_int_eq(info_of(other_site, T0).open, 0);
    ck_assert_str_eq(info_of(other_ip, T0).ip, IP2);
    shaping_connection_closed(a);
    shaping_free(sh);
}
END_TEST

START_TEST(test_many_entries_stay_distinct)
{
    shaping *sh = new_std(NULL);
    enum { N = 500 };
    shaping_dest *d[N];
    char name[64];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "mx%d.test", i);
        char *hosts[] = {name, NULL};
        d[i] = get_site(sh, i % 2 ? IP1 : IP2, hosts);
        for (int k = 0; k < i % 7; k++) shaping_connection_opened(d[i]);
    }
    /* the table grew many times; every handle still finds its own entry */
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "mx%d.test", i);
        char *hosts[] = {name, NULL};
        ck_assert_ptr_eq(get_site(sh, i % 2 ? IP1 : IP2, hosts), d[i]);
        ck_assert_int_eq(info_of(d[i], T0).open, i % 7);
        ck_assert_str_eq(info_of(d[i], T0).site, name);
        close_n(d[i], i % 7);
    }
    shaping_free(sh);
}
END_TEST

/* ---- limits: default, provider overrides, suffix matching ---- */

typedef struct {
    const char *name;
    const char *hosts[4];
    const char *provider;
    int connections, mpc;
    int64_t rate_count, rate_per;
} limits_case;

static const limits_case limits_cases[] = {
    {"no provider: shaping.default", {"mx.example.test"}, "default", 10, 100, 50, 1000},
    {"gmail overrides connections only, inherits the rest",
     {"aspmx.l.google.com", "alt1.aspmx.l.google.com"}, "gmail", 20, 100, 50, 1000},
    {"second suffix of gmail", {"gmail-smtp-in.l.googlemail.com"}, "gmail", 20, 100, 50, 1000},
    {"exact suffix is a match", {"google.com"}, "gmail", 20, 100, 50, 1000},
    {"match is case-insensitive and ignores the trailing dot", {"ASPMX.L.Google.COM."}, "gmail",
     20, 100, 50, 1000},
    {"one matching MX host is enough", {"mx.other.test", "alt1.aspmx.l.google.com"}, "gmail",
     20, 100, 50, 1000},
    {"not on a label boundary", {"mx.evilgoogle.com"}, "default", 10, 100, 50, 1000},
    {"suffix inside the name is no match", {"google.com.evil.test"}, "default", 10, 100, 50,
     1000},
    {"provider with only a rate", {"mx.slow.test"}, "slow", 10, 100, 10, 60000},
    {"provider with only messages_per_connection", {"in.few.test"}, "few", 10, 5, 50, 1000},
};

START_TEST(test_limits_table)
{
    const limits_case *lc = &limits_cases[_i];
    shaping *sh = new_std(NULL);
    size_t n = 0;
    while (n < 4 && lc->hosts[n]) n++;
    char *key = shaping_site_key((char *const *)lc->hosts, n);
    shaping_dest *d = shaping_get(sh, IP1, key, (char *const *)lc->hosts, n);
    shaping_info i = info_of(d, T0);
    ck_assert_msg(strcmp(i.provider, lc->provider) == 0, "%s: provider %s, want %s", lc->name,
                  i.provider, lc->provider);
    ck_assert_msg(i.connections_limit == lc->connections, "%s: connections %d", lc->name,
                  i.connections_limit);
    ck_assert_msg(i.messages_per_connection == lc->mpc, "%s: mpc %d", lc->name,
                  i.messages_per_connection);
    ck_assert_int_eq(shaping_messages_per_connection(d), lc->mpc);
    ck_assert_msg(i.rate.count == lc->rate_count && i.rate.per_ms == lc->rate_per,
                  "%s: rate %lld/%lld ms", lc->name, (long long)i.rate.count,
                  (long long)i.rate.per_ms);
    free(key);
    shaping_free(sh);
}
END_TEST

START_TEST(test_site_key_without_hosts)
{
    /* a caller that passes only the key (e.g. after a restart) still gets the provider */
    shaping *sh = new_std(NULL);
    shaping_dest *d = shaping_get(sh, IP1, "alt1.aspmx.l.google.com,aspmx.l.google.com", NULL, 0);
    ck_assert_str_eq(info_of(d, T0).provider, "gmail");
    ck_assert_int_eq(info_of(d, T0).connections_limit, 20);
    shaping_free(sh);
}
END_TEST

START_TEST(test_unlimited_limits)
{
    config *c = make_config(NULL, 0);
    c->shaping_default.connections = -1;
    c->shaping_default.messages_per_connection = -1;
    c->shaping_default.rate = (config_rate){-1, 1000};
    shaping *sh = shaping_new(c, NULL, NULL);
    char *mx[] = {"mx.example.test", NULL};
    shaping_dest *d = get_site(sh, IP1, mx);
    shaping_info i = info_of(d, T0);
    ck_assert_int_eq(i.connections_limit, -1);
    ck_assert_int_eq(i.messages_per_connection, -1);
    ck_assert_int_eq(i.rate.count, -1);
    /* no per-connection message cap: the scheduler may keep the connection forever */
    ck_assert_int_eq(shaping_messages_per_connection(d), INT_MAX);
    /* no rate limit */
    for (int k = 0; k < 100000; k++)
        ck_assert_int_eq(shaping_take_message(d, T0, NULL, NULL, 0), SHAPING_OK);
    /* window still slow-starts at 2 and grows without bound */
    ck_assert_int_eq(open_all(d, T0), 2);
    for (int k = 0; k < 1000; k++) shaping_record(d, SHAPING_RESULT_OK, T0);
    ck_assert_int_eq(info_of(d, T0).window, 1002);
    ck_assert_int_eq(open_all(d, T0), 1000);
    close_n(d, 1002);
    shaping_free(sh);
    config_unref(c);
}
END_TEST

/* ---- rate token bucket ---- */

typedef struct {
    int64_t at_ms;           /* offset from T0 */
    shaping_verdict want;
    int64_t retry_at;        /* offset from T0, for WAIT_RATE */
} take_step;

typedef struct {
    const char *name;
    config_rate rate;
    take_step steps[12];
    size_t nsteps;
    int burst;               /* takes at T0 before the steps (all must be OK) */
} rate_case;

static const rate_case rate_cases[] = {
    {"50/s: 50 at once, the next token exactly 20 ms later", {50, 1000},
     {{0, SHAPING_WAIT_RATE, 20}, {19, SHAPING_WAIT_RATE, 20}, {20, SHAPING_OK, 0},
      {20, SHAPING_WAIT_RATE, 40}, {40, SHAPING_OK, 0}, {48, SHAPING_WAIT_RATE, 60}}, 6, 50},
    {"10/m: 10 at once, then one every 6 s", {10, 60000},
     {{0, SHAPING_WAIT_RATE, 6000}, {5999, SHAPING_WAIT_RATE, 6000}, {6000, SHAPING_OK, 0},
      {6000, SHAPING_WAIT_RATE, 12000}, {12000, SHAPING_OK, 0}}, 5, 10},
    {"3/s: thirds of a second add up exactly", {3, 1000},
     {{0, SHAPING_WAIT_RATE, 334}, {333, SHAPING_WAIT_RATE, 334}, {334, SHAPING_OK, 0},
      {334, SHAPING_WAIT_RATE, 667}, {667, SHAPING_OK, 0}, {1000, SHAPING_OK, 0},
      {1000, SHAPING_WAIT_RATE, 1334}}, 7, 3},
    {"1/h: one per hour", {1, 3600000},
     {{0, SHAPING_WAIT_RATE, 3600000}, {3599999, SHAPING_WAIT_RATE, 3600000},
      {3600000, SHAPING_OK, 0}}, 3, 1},
    {"2/s: an idle hour refills only to capacity", {2, 1000},
     {{3600000, SHAPING_OK, 0}, {3600000, SHAPING_OK, 0}, {3600000, SHAPING_WAIT_RATE, 3600500}},
     3, 2},
    {"huge rate: no overflow", {INT64_MAX, 1000},
     {{0, SHAPING_OK, 0}, {1, SHAPING_OK, 0}, {3600000, SHAPING_OK, 0}}, 3, 1000},
};

START_TEST(test_rate_table)
{
    const rate_case *rc = &rate_cases[_i];
    config *c = make_config(NULL, 0);
    c->shaping_default.rate = rc->rate;
    shaping *sh = shaping_new(c, NULL, NULL);
    char *mx[] = {"mx1.a.test", NULL};
    shaping_dest *d = get_site(sh, IP1, mx);
    int64_t at = -1;
    for (int k = 0; k < rc->burst; k++)
        ck_assert_msg(shaping_take_message(d, T0, &at, NULL, 0) == SHAPING_OK,
                      "%s: burst take %d refused", rc->name, k);
    for (size_t s = 0; s < rc->nsteps; s++) {
        const take_step *st = &rc->steps[s];
        at = -1;
        shaping_verdict v = shaping_take_message(d, T0 + st->at_ms, &at, NULL, 0);
        ck_assert_msg(v == st->want, "%s: step %zu at +%lld: verdict %d, want %d", rc->name, s,
                      (long long)st->at_ms, v, st->want);
        if (v == SHAPING_WAIT_RATE)
            ck_assert_msg(at == T0 + st->retry_at, "%s: step %zu: retry at +%lld, want +%lld",
                          rc->name, s, (long long)(at - T0), (long long)st->retry_at);
    }
    shaping_free(sh);
    config_unref(c);
}
END_TEST

START_TEST(test_rate_reason_and_retry_is_honest)
{
    config *c = make_config(NULL, 0);
    shaping *sh = shaping_new(c, NULL, NULL);
    char *mx[] = {"mx1.a.test", NULL};
    shaping_dest *d = get_site(sh, IP1, mx);
    char why[256];
    int64_t at;
    for (int k = 0; k < 50; k++)
        ck_assert_int_eq(shaping_take_message(d, T0, &at, why, sizeof why), SHAPING_OK);
    ck_assert_int_eq(shaping_take_message(d, T0 + 8, &at, why, sizeof why), SHAPING_WAIT_RATE);
    ck_assert_str_eq(why, "rate 50/s for 127.0.0.10 -> mx1.a.test: next token in 12 ms "
                          "(provider default)");
    ck_assert_int_eq(at, T0 + 20);
    /* a refused take took nothing: retrying exactly at retry_at succeeds */
    ck_assert_int_eq(shaping_take_message(d, at, &at, why, sizeof why), SHAPING_OK);
    /* a tiny reason buffer is truncated, not overrun */
    char tiny[8];
    ck_assert_int_eq(shaping_take_message(d, T0 + 20, &at, tiny, sizeof tiny), SHAPING_WAIT_RATE);
    ck_assert_str_eq(tiny, "rate 50");
    shaping_free(sh);
    config_unref(c);
}
END_TEST

START_TEST(test_rate_clock_backwards)
{
    config *c = make_config(NULL, 0);
    shaping *sh = shaping_new(c, NULL, NULL);
    char *mx[] = {"mx1.a.test", NULL};
    shaping_dest *d = get_site(sh, IP1, mx);
    int64_t at;
    for (int k = 0; k < 50; k++)
        ck_assert_int_eq(shaping_take_message(d, T0, &at, NULL, 0), SHAPING_OK);
    /* the clock steps back 1 s: no tokens appear, and the wait is still one token's worth */
    ck_assert_int_eq(shaping_take_message(d, T0 - SEC, &at, NULL, 0), SHAPING_WAIT_RATE);
    ck_assert_int_eq(at, T0 - SEC + 20);
    ck_assert_int_eq(shaping_take_message(d, T0 - SEC + 20, &at, NULL, 0), SHAPING_OK);
    shaping_free(sh);
    config_unref(c);
}
END_TEST

/* ---- concurrency window ---- */

START_TEST(test_window_slow_start)
{
    config *c = make_config(NULL, 0);
    c->shaping_default.connections = 5;
    shaping *sh = shaping_new(c, NULL, NULL);
    char *mx[] = {"mx.example.test", NULL};
    shaping_dest *d = get_site(sh, IP1, mx);
    ck_assert_int_eq(info_of(d, T0).window, 2);
    ck_assert_int_eq(open_all(d, T0), 2);
    int want[] = {3, 4, 5, 5, 5};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        shaping_record(d, SHAPING_RESULT_OK, T0);
        ck_assert_int_eq(info_of(d, T0).window, want[k]);
    }
    /* the grown window admits 3 more connections, then the limit holds */
    ck_assert_int_eq(open_all(d, T0), 3);
    ck_assert_int_eq(info_of(d, T0).open, 5);
    close_n(d, 5);
    shaping_free(sh);
    config_unref(c);
}
END_TEST

START_TEST(test_window_starts_at_limit_one)
{
    config *c = make_config(NULL, 0);
    c->shaping_default.connections = 1;
    shaping *sh = shaping_new(c, NULL, NULL);
    char *mx[] = {"mx.example.test", NULL};
    shaping_dest *d = get_site(sh, IP1, mx);
    ck_assert_int_eq(info_of(d, T0).window, 1);
    ck_assert_int_eq(open_all(d, T0), 1);
    shaping_record(d, SHAPING_RESULT_OK, T0);
    ck_assert_int_eq(info_of(d, T0).window, 1);
    ck_assert_int_eq(open_all(d, T0), 0);
    close_n(d, 1);
    shaping_free(sh);
    config_unref(c);
}
END_TEST

START_TEST(test_window_failed_halves)
{
    shaping *sh = new_std(NULL);
    char *mx[] = {"mx.example.test", NULL};
    shaping_dest *d = get_site(sh, IP1, mx);
    for (int k = 0; k < 8; k++) shaping_record(d, SHAPING_RESULT_OK, T0);
    ck_assert_int_eq(info_of(d, T0).window, 10);
    int want[] = {5, 2, 1, 1};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        shaping_record(d, SHAPING_RESULT_FAILED, T0);
        ck_assert_int_eq(info_of(d, T0).window, want[k]);
    }
    /* failures do not back off: one connection may still be opened at once */
    int64_t at;
    ck_assert_int_eq(shaping_may_connect(d, T0, &at, NULL, 0), SHAPING_OK);
    ck_assert_int_eq(info_of(d, T0).backoff_until_ms, 0);
    /* and it slow-starts again */
    shaping_record(d, SHAPING_RESULT_OK, T0);
    ck_assert_int_eq(info_of(d, T0).window, 2);
    shaping_free(sh);
}
END_TEST

START_TEST(test_connections_vs_window_and_reason)
{
    shaping *sh = new_std(NULL);
    char *mx[] = {"mx.gmail.test", NULL};
    shaping_dest *d = get_site(sh, IP1, mx);
    char why[256];
    int64_t at;
    /* slow start: 2 of 20 */
    ck_assert_int_eq(open_all(d, T0), 2);
    ck_assert_int_eq(shaping_may_connect(d, T0, &at, why, sizeof why), SHAPING_WAIT_CONNECTIONS);
    ck_assert_str_eq(why, "127.0.0.10 -> mx.gmail.test: 2/2 connections open "
                          "(slow-start window 2 of limit 20, provider gmail)");
    /* a closed connection frees a slot in the window */
    shaping_connection_closed(d);
    ck_assert_int_eq(shaping_may_connect(d, T0, &at, why, sizeof why), SHAPING_OK);
    ck_assert_str_eq(why, "");
    shaping_connection_opened(d);
    /* grow to the provider's limit */
    for (int k = 0; k < 30; k++) shaping_record(d, SHAPING_RESULT_OK, T0);
    ck_assert_int_eq(info_of(d, T0).window, 20);
    ck_assert_int_eq(open_all(d, T0), 18);
    ck_assert_int_eq(shaping_may_connect(d, T0, &at, why, sizeof why), SHAPING_WAIT_CONNECTIONS);
    ck_assert_str_eq(why, "127.0.0.10 -> mx.gmail.test: 20/20 connections open (provider gmail)");
    /* messages are not limited by the connection count */
    ck_assert_int_eq(shaping_take_message(d, T0, &at, why, sizeof why), SHAPING_OK);
    close_n(d, 20);
    ck_assert_int_eq(info_of(d, T0).open, 0);
    shaping_free(sh);
}
END_TEST

/* ---- throttling backoff ---- */

START_TEST(test_throttle_backoff_jitter_bounds)
{
    static const struct {
        uint32_t rnd;
        int64_t want_ms;
    } cases[] = {{RND_LOW, 4000}, {RND_MID, 5000}, {RND_HIGH, 6000}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        fixed_rnd r = {cases[k].rnd, 0};
        shaping *sh = new_std(&r);
        char *mx[] = {"mx.example.test", NULL};
        shaping_dest *d = get_site(sh, IP1, mx);
        for (int j = 0; j < 5; j++) shaping_record(d, SHAPING_RESULT_OK, T0);
        shaping_record(d, SHAPING_RESULT_THROTTLED, T0);
        shaping_info i = info_of(d, T0);
        ck_assert_int_eq(i.window, 1);
        ck_assert_int_eq(i.consecutive_throttles, 1);
        ck_assert_int_eq(i.backoff_until_ms, T0 + cases[k].want_ms);
        ck_assert_int_eq(r.calls, 1);
        shaping_free(sh);
    }
}
END_TEST

START_TEST(test_throttle_blocks_until_end)
{
    fixed_rnd r = {RND_MID, 0};
    shaping *sh = new_std(&r);
    char *mx[] = {"mx.gmail.test", NULL};
    shaping_dest *d = get_site(sh, IP1, mx);
    char why[256];
    int64_t at;
    shaping_record(d, SHAPING_RESULT_THROTTLED, T0);
    ck_assert_int_eq(shaping_may_connect(d, T0 + 1000, &at, why, sizeof why),
                     SHAPING_WAIT_BACKOFF);
    ck_assert_int_eq(at, T0 + 5000);
    ck_assert_str_eq(why, "127.0.0.10 -> mx.gmail.test: throttled by the site (1 time in a row), "
                          "backing off for 4.0 s more (provider gmail)");
    at = 0;
    ck_assert_int_eq(shaping_take_message(d, T0 + 4999, &at, why, sizeof why),
                     SHAPING_WAIT_BACKOFF);
    ck_assert_int_eq(at, T0 + 5000);
    ck_assert_ptr_nonnull(strstr(why, "backing off for 1 ms more"));
    /* a refused take during backoff used no rate token: still 50 available after it */
    ck_assert_int_eq(shaping_may_connect(d, T0 + 5000, &at, NULL, 0), SHAPING_OK);
    for (int k = 0; k < 50; k++)
        ck_assert_int_eq(shaping_take_message(d, T0 + 5000, &at, NULL, 0), SHAPING_OK);
    ck_assert_int_eq(info_of(d, T0 + 5000).backoff_until_ms, 0);
    /* the window dropped to 1: only one connection after the backoff */
    ck_assert_int_eq(open_all(d, T0 + 5000), 1);
    close_n(d, 1);
    shaping_free(sh);
}
END_TEST

START_TEST(test_throttle_doubles_caps_and_resets)
{
    fixed_rnd r = {RND_MID, 0};
    shaping *sh = new_std(&r);
    char *mx[] = {"mx.example.test", NULL};
    shaping_dest *d = get_site(sh, IP1, mx);
    static const int64_t want[] = {5000, 10000, 20000, 40000, 80000, 160000, 320000,
                                   600000, 600000, 600000};
    int64_t now = T0;
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        shaping_record(d, SHAPING_RESULT_THROTTLED, now);
        shaping_info i = info_of(d, now);
        ck_assert_int_eq(i.consecutive_throttles, (int)k + 1);
        ck_assert_msg(i.backoff_until_ms - now == want[k], "throttle %zu: backoff %lld, want %lld",
                      k + 1, (long long)(i.backoff_until_ms - now), (long long)want[k]);
        now = i.backoff_until_ms;
    }
    /* the cap with the largest jitter: 12 min */
    r.value = RND_HIGH;
    shaping_record(d, SHAPING_RESULT_THROTTLED, now);
    ck_assert_int_eq(info_of(d, now).backoff_until_ms - now, 720000);
    /* failures keep the count; a completed transaction resets it */
    shaping_record(d, SHAPING_RESULT_FAILED, now);
    ck_assert_int_eq(info_of(d, now).consecutive_throttles, 11);
    now += 720000;
    shaping_record(d, SHAPING_RESULT_OK, now);
    ck_assert_int_eq(info_of(d, now).consecutive_throttles, 0);
    r.value = RND_MID;
    shaping_record(d, SHAPING_RESULT_THROTTLED, now);
    ck_assert_int_eq(info_of(d, now).backoff_until_ms - now, 5000);
    shaping_free(sh);
}
END_TEST

START_TEST(test_throttle_default_prng_within_bounds)
{
    shaping *sh = new_std(NULL);
    char *mx[] = {"mx.example.test", NULL};
    shaping_dest *d = get_site(sh, IP1, mx);
    int64_t lo = INT64_MAX, hi = 0;
    for (int k = 0; k < 1000; k++) {
        int64_t now = T0 + k * 10 * MIN;
        shaping_record(d, SHAPING_RESULT_OK, now);
        shaping_record(d, SHAPING_RESULT_THROTTLED, now);
        int64_t b = info_of(d, now).backoff_until_ms - now;
        ck_assert_int_ge(b, 4000);
        ck_assert_int_le(b, 6000);
        if (b < lo) lo = b;
        if (b > hi) hi = b;
    }
    /* the jitter actually spreads the backoffs */
    ck_assert_int_lt(lo, 4400);
    ck_assert_int_gt(hi, 5600);
    shaping_free(sh);
}
END_TEST

START_TEST(test_throttle_isolated)
{
    fixed_rnd r = {RND_MID, 0};
    shaping *sh = new_std(&r);
    char *a_mx[] = {"mx.a.test", NULL};
    char *b_mx[] = {"mx.b.test", NULL};
    shaping_dest *ip1_a = get_site(sh, IP1, a_mx);
    shaping_dest *ip2_a = get_site(sh, IP2, a_mx);
    shaping_dest *ip1_b = get_site(sh, IP1, b_mx);
    for (int k = 0; k < 3; k++) shaping_record(ip2_a, SHAPING_RESULT_OK, T0);
    shaping_record(ip1_a, SHAPING_RESULT_THROTTLED, T0);
    int64_t at;
    ck_assert_int_eq(shaping_may_connect(ip1_a, T0 + 1, &at, NULL, 0), SHAPING_WAIT_BACKOFF);
    ck_assert_int_eq(shaping_may_connect(ip2_a, T0 + 1, &at, NULL, 0), SHAPING_OK);
    ck_assert_int_eq(shaping_take_message(ip2_a, T0 + 1, &at, NULL, 0), SHAPING_OK);
    ck_assert_int_eq(shaping_may_connect(ip1_b, T0 + 1, &at, NULL, 0), SHAPING_OK);
    ck_assert_int_eq(shaping_take_message(ip1_b, T0 + 1, &at, NULL, 0), SHAPING_OK);
    ck_assert_int_eq(info_of(ip2_a, T0).window, 5);
    ck_assert_int_eq(info_of(ip2_a, T0).backoff_until_ms, 0);
    ck_assert_int_eq(info_of(ip1_b, T0).consecutive_throttles, 0);
    shaping_free(sh);
}
END_TEST

/* ---- messages per connection ---- */

START_TEST(test_messages_per_connection)
{
    shaping *sh = new_std(NULL);
    char *def_mx[] = {"mx.example.test", NULL};
    char *few_mx[] = {"in.few.test", NULL};
    char *g_mx[] = {"aspmx.l.google.com", NULL};
    ck_assert_int_eq(shaping_messages_per_connection(get_site(sh, IP1, def_mx)), 100);
    ck_assert_int_eq(shaping_messages_per_connection(get_site(sh, IP1, few_mx)), 5);
    /* gmail sets only connections: messages_per_connection inherited, not "late"'s 1 */
    ck_assert_int_eq(shaping_messages_per_connection(get_site(sh, IP1, g_mx)), 100);
    shaping_free(sh);
}
END_TEST

/* ---- reload ---- */

START_TEST(test_config_changed_keeps_state)
{
    fixed_rnd r = {RND_MID, 0};
    shaping *sh = new_std(&r);
    char *mx[] = {"mx.gmail.test", NULL};
    char *other_mx[] = {"mx.example.test", NULL};
    shaping_dest *d = get_site(sh, IP1, mx);
    shaping_dest *o = get_site(sh, IP1, other_mx);
    for (int k = 0; k < 10; k++) shaping_record(d, SHAPING_RESULT_OK, T0);
    ck_assert_int_eq(info_of(d, T0).window, 12);
    ck_assert_int_eq(open_all(d, T0), 12);
    int64_t at;
    for (int k = 0; k < 50; k++)
        ck_assert_int_eq(shaping_take_message(d, T0, &at, NULL, 0), SHAPING_OK);
    shaping_record(o, SHAPING_RESULT_THROTTLED, T0);

    /* reload: gmail down to 4 connections and 100/s; default messages_per_connection 7 */
    static char *g2_sfx[] = {"gmail.test"};
    config_provider p2[] = {{"gmail2", g2_sfx, 1, {4, -1, {100, 1000}}}};
    config *c2 = make_config(p2, 1);
    c2->shaping_default.messages_per_connection = 7;
    shaping_config_changed(sh, c2);

    shaping_info i = info_of(d, T0);
    ck_assert_str_eq(i.provider, "gmail2");
    ck_assert_int_eq(i.connections_limit, 4);
    ck_assert_int_eq(i.window, 4);              /* clamped */
    ck_assert_int_eq(i.open, 12);               /* counted connections kept */
    ck_assert_int_eq(i.messages_per_connection, 7);
    ck_assert_int_eq(i.rate.count, 100);
    /* the empty bucket stays empty, refilled at the new rate: next token 10 ms later */
    ck_assert_int_eq(shaping_take_message(d, T0, &at, NULL, 0), SHAPING_WAIT_RATE);
    ck_assert_int_eq(at, T0 + 10);
    /* over the new limit: no new connection until enough closed */
    ck_assert_int_eq(shaping_may_connect(d, T0, &at, NULL, 0), SHAPING_WAIT_CONNECTIONS);
    close_n(d, 9);
    ck_assert_int_eq(shaping_may_connect(d, T0, &at, NULL, 0), SHAPING_OK);
    close_n(d, 3);
    /* backoff kept across the reload */
    ck_assert_int_eq(info_of(o, T0).backoff_until_ms, T0 + 5000);
    ck_assert_int_eq(shaping_may_connect(o, T0 + 1, &at, NULL, 0), SHAPING_WAIT_BACKOFF);

    /* a raised limit does not jump the window; it grows again by slow start */
    p2[0].limits.connections = 30;
    config *c3 = make_config(p2, 1);
    shaping_config_changed(sh, c3);
    ck_assert_int_eq(info_of(d, T0).window, 4);
    shaping_record(d, SHAPING_RESULT_OK, T0);
    ck_assert_int_eq(info_of(d, T0).window, 5);
    shaping_free(sh);
    config_unref(c2);
    config_unref(c3);
}
END_TEST

START_TEST(test_config_changed_rate_limit_added_and_removed)
{
    config *c = make_config(NULL, 0);
    c->shaping_default.rate = (config_rate){-1, 1000};
    shaping *sh = shaping_new(c, NULL, NULL);
    char *mx[] = {"mx.example.test", NULL};
    shaping_dest *d = get_site(sh, IP1, mx);
    int64_t at;
    for (int k = 0; k < 500; k++)
        ck_assert_int_eq(shaping_take_message(d, T0, &at, NULL, 0), SHAPING_OK);
    /* a new rate limit starts with a full bucket */
    config *c2 = make_config(NULL, 0);
    c2->shaping_default.rate = (config_rate){2, 1000};
    shaping_config_changed(sh, c2);
    ck_assert_int_eq(shaping_take_message(d, T0 + 1, &at, NULL, 0), SHAPING_OK);
    ck_assert_int_eq(shaping_take_message(d, T0 + 1, &at, NULL, 0), SHAPING_OK);
    ck_assert_int_eq(shaping_take_message(d, T0 + 1, &at, NULL, 0), SHAPING_WAIT_RATE);
    ck_assert_int_eq(at, T0 + 501);
    /* the same rate per minute: the half token already earned carries over */
    config *c3 = make_config(NULL, 0);
    c3->shaping_default.rate = (config_rate){2, 60000};
    ck_assert_int_eq(shaping_take_message(d, T0 + 251, &at, NULL, 0), SHAPING_WAIT_RATE);
    shaping_config_changed(sh, c3);
    ck_assert_int_eq(shaping_take_message(d, T0 + 251, &at, NULL, 0), SHAPING_WAIT_RATE);
    ck_assert_int_eq(at, T0 + 251 + 15000);
    /* removing the limit lets everything through */
    shaping_config_changed(sh, c);
    for (int k = 0; k < 500; k++)
        ck_assert_int_eq(shaping_take_message(d, T0 + 251, &at, NULL, 0), SHAPING_OK);
    shaping_free(sh);
    config_unref(c);
    config_unref(c2);
    config_unref(c3);
}
END_TEST

/* ---- garbage collection ---- */

START_TEST(test_gc_drops_only_idle)
{
    fixed_rnd r = {RND_MID, 0};
    shaping *sh = new_std(&r);
    const int64_t after = 10 * MIN;
    char *idle_mx[] = {"mx.idle.test", NULL};
    char *open_mx[] = {"mx.open.test", NULL};
    char *back_mx[] = {"mx.back.test", NULL};
    char *busy_mx[] = {"mx.busy.test", NULL};
    char *fresh_mx[] = {"mx.fresh.test", NULL};
    shaping_dest *idle = get_site(sh, IP1, idle_mx);
    shaping_dest *open = get_site(sh, IP1, open_mx);
    shaping_dest *back = get_site(sh, IP1, back_mx);
    shaping_dest *busy = get_site(sh, IP1, busy_mx);
    int64_t at;
    /* each grows its window to 3 so that a dropped entry is recognisable: a new one
     * starts at 2 */
    shaping_dest *all[] = {idle, open, back, busy};
    for (size_t k = 0; k < 4; k++) shaping_record(all[k], SHAPING_RESULT_OK, T0);
    shaping_gc(sh, T0, after);
    shaping_connection_opened(open);
    r.value = RND_HIGH;                         /* 15 throttles: capped, until T0 + 12 min */
    for (int k = 0; k < 15; k++) shaping_record(back, SHAPING_RESULT_THROTTLED, T0);
    ck_assert_int_eq(info_of(back, T0).backoff_until_ms, T0 + 12 * MIN);
    ck_assert_int_eq(shaping_take_message(busy, T0 + 9 * MIN, &at, NULL, 0), SHAPING_OK);

    /* 1 ms short of gc_after: nothing goes (a wrongly freed handle would trip ASan below) */
    shaping_gc(sh, T0 + after - 1, after);
    ck_assert_int_eq(info_of(idle, T0).window, 3);

    /* idle for gc_after: only the idle entry goes */
    shaping_gc(sh, T0 + after, after);
    ck_assert_int_eq(info_of(open, T0).open, 1);
    ck_assert_int_eq(info_of(back, T0).consecutive_throttles, 15);
    ck_assert_int_eq(info_of(busy, T0).window, 3);
    ck_assert_int_eq(info_of(get_site(sh, IP1, idle_mx), T0).window, 2);   /* recreated */

    /* a fresh entry whose only clock reading is stale survives the pass that first sees it;
     * the backoff has ended and busy has been idle long enough: both go */
    shaping_dest *fresh = get_site(sh, IP1, fresh_mx);
    shaping_record(fresh, SHAPING_RESULT_OK, T0);
    shaping_gc(sh, T0 + 20 * MIN, after);
    ck_assert_int_eq(info_of(fresh, T0).window, 3);
    ck_assert_int_eq(info_of(open, T0).open, 1);
    ck_assert_int_eq(info_of(get_site(sh, IP1, back_mx), T0).consecutive_throttles, 0);
    ck_assert_int_eq(info_of(get_site(sh, IP1, busy_mx), T0).window, 2);

    /* an open connection keeps its entry however long; once closed, it is idle from the
     * next pass on */
    shaping_gc(sh, T0 + 100 * MIN, after);
    ck_assert_int_eq(info_of(open, T0).window, 3);
    ck_assert_int_eq(info_of(get_site(sh, IP1, fresh_mx), T0).window, 2);
    shaping_connection_closed(open);
    shaping_gc(sh, T0 + 101 * MIN, after);
    ck_assert_int_eq(info_of(open, T0).window, 3);
    shaping_gc(sh, T0 + 111 * MIN, after);
    ck_assert_int_eq(info_of(get_site(sh, IP1, open_mx), T0).window, 2);
    shaping_free(sh);
}
END_TEST

START_TEST(test_gc_keeps_backoff_in_force)
{
    fixed_rnd r = {RND_HIGH, 0};
    shaping *sh = new_std(&r);
    char *mx[] = {"mx.example.test", NULL};
    shaping_dest *d = get_site(sh, IP1, mx);
    shaping_gc(sh, T0, SEC);
    shaping_record(d, SHAPING_RESULT_THROTTLED, T0);    /* until T0 + 6 s */
    shaping_gc(sh, T0 + 5 * SEC, SEC);
    int64_t at;
    ck_assert_int_eq(shaping_may_connect(d, T0 + 5 * SEC, &at, NULL, 0), SHAPING_WAIT_BACKOFF);
    ck_assert_int_eq(at, T0 + 6 * SEC);
    shaping_gc(sh, T0 + 7 * SEC, SEC);
    d = get_site(sh, IP1, mx);
    ck_assert_int_eq(info_of(d, T0 + 7 * SEC).consecutive_throttles, 0);
    ck_assert_int_eq(shaping_may_connect(d, T0 + 7 * SEC, &at, NULL, 0), SHAPING_OK);
    shaping_free(sh);
}
END_TEST

static Suite *shaping_suite(void)
{
    Suite *s = suite_create("shaping");
    TCase *site = tcase_create("site");
    tcase_add_loop_test(site, test_site_key_table, 0, sizeof key_cases / sizeof key_cases[0]);
    tcase_add_test(site, test_site_shared_by_domains);
    tcase_add_test(site, test_many_entries_stay_distinct);
    suite_add_tcase(s, site);
    TCase *limits = tcase_create("limits");
    tcase_add_loop_test(limits, test_limits_table, 0,
                        sizeof limits_cases / sizeof limits_cases[0]);
    tcase_add_test(limits, test_site_key_without_hosts);
    tcase_add_test(limits, test_unlimited_limits);
    tcase_add_test(limits, test_messages_per_connection);
    suite_add_tcase(s, limits);
    TCase *rate = tcase_create("rate");
    tcase_add_loop_test(rate, test_rate_table, 0, sizeof rate_cases / sizeof rate_cases[0]);
    tcase_add_test(rate, test_rate_reason_and_retry_is_honest);
    tcase_add_test(rate, test_rate_clock_backwards);
    suite_add_tcase(s, rate);
    TCase *window = tcase_create("window");
    tcase_add_test(window, test_window_slow_start);
    tcase_add_test(window, test_window_starts_at_limit_one);
    tcase_add_test(window, test_window_failed_halves);
    tcase_add_test(window, test_connections_vs_window_and_reason);
    suite_add_tcase(s, window);
    TCase *backoff = tcase_create("backoff");
    tcase_add_test(backoff, test_throttle_backoff_jitter_bounds);
    tcase_add_test(backoff, test_throttle_blocks_until_end);
    tcase_add_test(backoff, test_throttle_doubles_caps_and_resets);
    tcase_add_test(backoff, test_throttle_default_prng_within_bounds);
    tcase_add_test(backoff, test_throttle_isolated);
    suite_add_tcase(s, backoff);
    TCase *reload = tcase_create("reload");
    tcase_add_test(reload, test_config_changed_keeps_state);
    tcase_add_test(reload, test_config_changed_rate_limit_added_and_removed);
    suite_add_tcase(s, reload);
    TCase *gc = tcase_create("gc");
    tcase_add_test(gc, test_gc_drops_only_idle);
    tcase_add_test(gc, test_gc_keeps_backoff_in_force);
    suite_add_tcase(s, gc);
    return s;
}

TESTLIB_SUITES(shaping_suite);
