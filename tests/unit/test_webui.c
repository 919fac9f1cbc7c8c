/* test_webui.c — the data behind the operator web page that is pure enough to test without
 * a browser: the per-IP per-day sent history (pools/history.c: exact caps and counts per
 * UTC day on the SES ramp, managed providers, the 60-day ring, the pools state round trip
 * and an older state without "history" still loading), the timeline rings (base/timeline.c:
 * bounded, newest first), the query decoding of the JSON reads (api/web.c) and the embedded
 * files (the page refers only to itself). The browser test is
 * tests/integration/test_webui.py. */
#include <check.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "api/web.h"
#include "base/config.h"
#include "base/timeline.h"
#include "base/util.h"
#include "pools/history.h"
#include "pools/pools.h"
#include "tests/unit/testlib.h"

#define T0 INT64_C(1700000000000)   /* 2023-11-14 22:13:20 UTC: UTC day 19675 */
#define HOUR INT64_C(3600000)
#define DAY0 INT64_C(19675)

static const config_warmup SES = {.days = 45, .first_day = 50, .target = 50000,
                                  .advance = CONFIG_ADVANCE_CALENDAR, .pacing = 0};

static config *make_cfg(void)
{
    config *c = testlib_config_new();
    testlib_config_add_zone(c, "az1");
    testlib_config_add_pool(c, "transactional", CONFIG_SCALING_STANDARD);
    testlib_config_add_pool(c, "marketing", CONFIG_SCALING_MANAGED);
    testlib_config_add_ip(c, "127.0.0.10", "az1", "transactional", CONFIG_WARMUP_NEW);
    testlib_config_add_ip(c, "127.0.0.20", "az1", "marketing", CONFIG_WARMUP_NEW);
    testlib_config_add_set(c, "txn", "transactional");
    testlib_config_add_set(c, "promo", "marketing");
    testlib_config_set_default_set(c, "txn");
    c->warmup = SES;
    return c;
}

static void check_day(const pools_curve_day *d, int64_t day, int64_t cap, int64_t sent)
{
    ck_assert_int_eq(d->day_ms, day * POOLS_DAY_MS);
    ck_assert_int_eq(d->cap, cap);
    ck_assert_int_eq(d->sent, sent);
}

/* Three UTC days of a new IP on the SES ramp: what it sent each day under which cap. */
static void check_standard_curve(const pools *p, int64_t now)
{
    pools_curve_day *v = NULL;
    size_t n = pools_history_curve(p, 0, NULL, now, &v);
    ck_assert_uint_eq(n, 3);
    check_day(&v[0], DAY0, 50, 30);       /* the lease day: ramp day 0 */
    check_day(&v[1], DAY0 + 1, 50, 20);   /* still ramp day 0 (it began at 22:13) */
    check_day(&v[2], DAY0 + 2, 58, 5);    /* today: ramp day 1's cap, as kilnctl ips says */
    free(v);
}

static void send_standard(pools *p)
{
    pools_ip *ip = pools_find(p, "127.0.0.10");
    pools_record_send(p, ip, "gmail", 30, T0 + HOUR);
    pools_record_send(p, ip, "gmail", 20, T0 + 2 * HOUR);    /* 00:13 the next UTC day */
    pools_record_send(p, ip, "gmail", 5, T0 + 26 * HOUR);
}

START_TEST(test_history_standard)
{
    config *c = make_cfg();
    pools *p = pools_new(c, NULL, T0);
    send_standard(p);
    check_standard_curve(p, T0 + 26 * HOUR);
    pools_curve_day *v = NULL;
    ck_assert_uint_eq(pools_history_curve(p, 7, NULL, T0, &v), 0);   /* no such IP */
    ck_assert_ptr_null(v);
    ck_assert_uint_eq(pools_history_curve(p, 0, "gmail", T0, &v), 0);   /* standard: no provider */
    pools_free(p);
    config_unref(c);
}
END_TEST

START_TEST(test_history_survives_restart)
{
    config *c = make_cfg();
    pools *p = pools_new(c, NULL, T0);
    send_standard(p);
    char *saved = pools_state_json(p);
    pools_free(p);
    pools *q = pools_new(c, NULL, T0 + 26 * HOUR);
    char *err = NULL;
    ck_assert_int_eq(pools_state_load(q, saved, T0 + 26 * HOUR, &err), 0);
    check_standard_curve(q, T0 + 26 * HOUR);
    pools_free(q);

    /* a state an older kilnd wrote (no "history") still loads: the caps stay, no bars */
    json_t *root = json_loads(saved, 0, NULL);
    json_t *ips = json_object_get(root, "ips");
    const char *addr;
    json_t *o;
    json_object_foreach(ips, addr, o) {
        json_object_del(o, "history");
        json_t *prov = json_object_get(o, "providers");
        const char *name;
        json_t *po;
        json_object_foreach(prov, name, po) json_object_del(po, "history");
    }
    char *old = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    ck_assert_ptr_null(strstr(old, "history"));
    q = pools_new(c, NULL, T0 + 26 * HOUR);
    ck_assert_int_eq(pools_state_load(q, old, T0 + 26 * HOUR, &err), 0);
    pools_curve_day *v = NULL;
    ck_assert_uint_eq(pools_history_curve(q, 0, NULL, T0 + 26 * HOUR, &v), 3);
    check_day(&v[0], DAY0, 50, 0);
    check_day(&v[2], DAY0 + 2, 58, 0);
    free(v);
    pools_free(q);

    /* a malformed history is refused with its path, the pools unchanged */
    q = pools_new(c, NULL, T0);
    char *bad = util_strdup(saved);
    char *h = strstr(bad, "\"history\":[[");
    ck_assert_ptr_nonnull(h);
    h[strlen("\"history\":[[")] = '"';
    ck_assert_int_eq(pools_state_load(q, bad, T0, &err), -1);
    ck_assert_ptr_nonnull(err);
    free(err);
    free(bad);
    pools_free(q);
    free(old);
    free(saved);
    config_unref(c);
}
END_TEST

START_TEST(test_history_managed_providers)
{
    config *c = make_cfg();
    pools *p = pools_new(c, NULL, T0);
    pools_ip *ip = pools_find(p, "127.0.0.20");
    pools_record_send(p, ip, "gmail", 40, T0 + HOUR);
    pools_record_send(p, ip, "yahoo", 7, T0 + HOUR);
    pools_curve_day *v = NULL;
    ck_assert_uint_eq(pools_history_curve(p, 1, "gmail", T0 + HOUR, &v), 1);
    ck_assert_int_eq(v[0].sent, 40);
    ck_assert_int_eq(v[0].cap, 50);        /* the provider's cap now (first_day) */
    free(v);
    ck_assert_uint_eq(pools_history_curve(p, 1, "yahoo", T0 + HOUR, &v), 1);
    ck_assert_int_eq(v[0].sent, 7);
    free(v);
    ck_assert_uint_eq(pools_history_curve(p, 1, NULL, T0 + HOUR, &v), 1);
    ck_assert_int_eq(v[0].sent, 47);       /* the IP as a whole */
    ck_assert_int_eq(v[0].cap, -1);        /* managed: no cap of the IP itself */
    free(v);
    ck_assert_uint_eq(pools_history_curve(p, 1, "microsoft", T0 + HOUR, &v), 0);
    pools_free(p);
    config_unref(c);
}
END_TEST

/* 70 days of sending: the curve keeps the last 60, each day's own count. */
START_TEST(test_history_ring)
{
    config *c = make_cfg();
    pools *p = pools_new(c, NULL, T0);
    pools_ip *ip = pools_find(p, "127.0.0.10");
    for (int d = 0; d < 70; d++) pools_record_send(p, ip, "other", (unsigned)(d + 1), T0 + HOUR + d * POOLS_DAY_MS);
    int64_t now = T0 + HOUR + 69 * POOLS_DAY_MS;
    pools_curve_day *v = NULL;
    size_t n = pools_history_curve(p, 0, NULL, now, &v);
    ck_assert_uint_eq(n, POOLS_HISTORY_DAYS);
    ck_assert_int_eq(v[0].day_ms, (DAY0 + 10) * POOLS_DAY_MS);
    ck_assert_int_eq(v[0].sent, 11);
    ck_assert_int_eq(v[59].sent, 70);
    free(v);
    pools_daily d;
    memset(&d, 0, sizeof d);
    pools_daily_add(&d, 3, 50, T0);
    ck_assert_int_eq(pools_daily_get(&d, DAY0, NULL), 3);
    ck_assert_int_eq(pools_daily_get(&d, DAY0 + POOLS_HISTORY_DAYS, NULL), 0);   /* same slot */
    pools_free(p);
    config_unref(c);
}
END_TEST

START_TEST(test_timeline_ring)
{
    timeline *t = timeline_new();
    ck_assert_uint_eq(timeline_count(t), 0);
    ck_assert_ptr_null(timeline_get(t, 0));
    for (int i = 0; i < 150; i++) timeline_add(t, T0 + i, "zone_down", "az3", "event %d", i);
    ck_assert_uint_eq(timeline_count(t), TIMELINE_MAX);
    ck_assert_uint_eq(timeline_total(t), 150);
    ck_assert_str_eq(timeline_get(t, 0)->text, "event 149");
    ck_assert_str_eq(timeline_get(t, TIMELINE_MAX - 1)->text, "event 50");
    ck_assert_int_eq(timeline_get(t, 0)->at_ms, T0 + 149);
    ck_assert_ptr_null(timeline_get(t, TIMELINE_MAX));
    char longtext[400];
    memset(longtext, 'x', sizeof longtext - 1);
    longtext[sizeof longtext - 1] = 0;
    timeline_add(t, T0, "ip_failed", longtext, "%s", longtext);   /* truncated, not overflowed */
    ck_assert_uint_eq(strlen(timeline_get(t, 0)->text), sizeof(((timeline_event *)0)->text) - 1);
    for (int i = 0; i < TIMELINE_OUTCOMES + 3; i++)
        timeline_add_outcome(t, T0 + i, "deferred", "MailboxFull", "example.com", "127.0.0.10",
                             "452 4.2.2 full");
    ck_assert_uint_eq(timeline_outcome_count(t), TIMELINE_OUTCOMES);
    ck_assert_int_eq(timeline_outcome_get(t, 0)->at_ms, T0 + TIMELINE_OUTCOMES + 2);
    ck_assert_str_eq(timeline_outcome_get(t, 0)->reason, "MailboxFull");
    timeline_free(t);
    timeline_add(NULL, T0, "x", "y", "nothing");   /* no timeline: nothing recorded */
    ck_assert_uint_eq(timeline_count(NULL), 0);
}
END_TEST

START_TEST(test_query_param)
{
    char *v = web_query_param("set=a%20b+c&days=7&flag", "set");
    ck_assert_str_eq(v, "a b c");
    free(v);
    v = web_query_param("set=a&days=7", "days");
    ck_assert_str_eq(v, "7");
    free(v);
    v = web_query_param("set=a&flag", "flag");
    ck_assert_str_eq(v, "");
    free(v);
    v = web_query_param("id=%3Cx%3E%zz", "id");
    ck_assert_str_eq(v, "<x>%zz");
    free(v);
    ck_assert_ptr_null(web_query_param("sets=a", "set"));
    ck_assert_ptr_null(web_query_param("", "set"));
    ck_assert_ptr_null(web_query_param(NULL, "set"));
    ck_assert_ptr_null(web_query_param("id=a%00b", "id"));
}
END_TEST

static const web_asset *asset(const char *path)
{
    for (size_t i = 0; i < web_nassets; i++)
        if (strcmp(web_assets[i].path, path) == 0) return &web_assets[i];
    return NULL;
}

/* The page and its files are compiled in and refer to nothing outside kilnd. */
START_TEST(test_assets)
{
    const web_asset *page = asset("/"), *js = asset("/assets/app.js"), *css = asset("/assets/style.css");
    ck_assert_ptr_nonnull(page);
    ck_assert_ptr_nonnull(js);
    ck_assert_ptr_nonnull(css);
    ck_assert_ptr_nonnull(asset("/assets/favicon.svg"));
    ck_assert_str_eq(page->type, "text/html; charset=utf-8");
    ck_assert_str_eq(js->type, "text/javascript; charset=utf-8");
    ck_assert_uint_eq(strlen((const char *)page->data), page->len);
    ck_assert_ptr_nonnull(strstr((const char *)page->data, "src=\"/assets/app.js\""));
    ck_assert_ptr_nonnull(strstr((const char *)page->data, "href=\"/assets/style.css\""));
    ck_assert_ptr_null(strstr((const char *)page->data, "://"));
    ck_assert_ptr_null(strstr((const char *)css->data, "://"));
    ck_assert_ptr_null(strstr((const char *)page->data, "<script>"));   /* no inline script */
}
END_TEST

static Suite *webui_suite(void)
{
    Suite *s = suite_create("webui");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_history_standard);
    tcase_add_test(tc, test_history_survives_restart);
    tcase_add_test(tc, test_history_managed_providers);
    tcase_add_test(tc, test_history_ring);
    tcase_add_test(tc, test_timeline_ring);
    tcase_add_test(tc, test_query_param);
    tcase_add_test(tc, test_assets);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(webui_suite);
