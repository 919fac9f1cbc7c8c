/* test_metrics.c — the metrics registry and its Prometheus text (base/metrics.c): the exact
 * exposition a scraper reads (HELP/TYPE lines, label order, escaped label values and help
 * text, numbers in their shortest exact form), histograms (cumulative buckets, +Inf, _sum,
 * _count, an observation on a bound counted in that bucket), gauges set and cleared at
 * scrape, the top-N rule that keeps site series bounded (only the 20 busiest sites shown,
 * at most max_tracked remembered), NULL registries doing nothing, and the kiln catalogue
 * rendering every family. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/metrics.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

#define L(...) ((const char *const[]){__VA_ARGS__})

static char *render(const metrics *m)
{
    strbuf sb;
    strbuf_init(&sb);
    metrics_render(m, &sb);
    return strbuf_steal(&sb);
}

static size_t count_lines_with(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

START_TEST(test_counter_and_gauge_text)
{
    metrics *m = metrics_new();
    metrics_register(m, "kiln_things_total", METRICS_COUNTER, "Things done.",
                     (const char *const[]){"result", "reason", NULL}, NULL, 0);
    metrics_register(m, "kiln_level", METRICS_GAUGE, "A level.", NULL, NULL, 0);
    metrics_add(m, "kiln_things_total", L("accepted", "none"), 1);
    metrics_add(m, "kiln_things_total", L("rejected", "size"), 2);
    metrics_add(m, "kiln_things_total", L("accepted", "none"), 1);
    metrics_set(m, "kiln_level", NULL, 0.25);
    char *t = render(m);
    ck_assert_str_eq(t, "# HELP kiln_things_total Things done.\n"
                        "# TYPE kiln_things_total counter\n"
                        "kiln_things_total{result=\"accepted\",reason=\"none\"} 2\n"
                        "kiln_things_total{result=\"rejected\",reason=\"size\"} 2\n"
                        "# HELP kiln_level A level.\n"
                        "# TYPE kiln_level gauge\n"
                        "kiln_level 0.25\n");
    free(t);
    ck_assert(metrics_value(m, "kiln_things_total", L("accepted", "none")) == 2);
    ck_assert(metrics_value(m, "kiln_things_total", L("accepted", "size")) == 0);
    metrics_set(m, "kiln_level", NULL, 3);
    ck_assert(metrics_value(m, "kiln_level", NULL) == 3);
    metrics_free(m);
}
END_TEST

START_TEST(test_escaping_and_numbers)
{
    metrics *m = metrics_new();
    metrics_register(m, "kiln_x", METRICS_GAUGE, "Help with \\ and\nnewline \"kept\".",
                     (const char *const[]){"v", NULL}, NULL, 0);
    metrics_set(m, "kiln_x", L("a\"b\\c\nd"), 1e-3);
    metrics_set(m, "kiln_x", L("big"), 123456789012.0);
    metrics_set(m, "kiln_x", L("inf"), INFINITY);
    metrics_set(m, "kiln_x", L("third"), 1.0 / 3);
    char *t = render(m);
    ck_assert_str_eq(t, "# HELP kiln_x Help with \\\\ and\\nnewline \"kept\".\n"
                        "# TYPE kiln_x gauge\n"
                        "kiln_x{v=\"a\\\"b\\\\c\\nd\"} 0.001\n"
                        "kiln_x{v=\"big\"} 123456789012\n"
                        "kiln_x{v=\"inf\"} +Inf\n"
                        "kiln_x{v=\"third\"} 0.3333333333333333\n");
    free(t);
    metrics_free(m);
}
END_TEST

START_TEST(test_histogram)
{
    metrics *m = metrics_new();
    static const double b[] = {0.005, 0.1, 1};
    metrics_register(m, "kiln_lat_seconds", METRICS_HISTOGRAM, "Latency.",
                     (const char *const[]){"pool", NULL}, b, 3);
    metrics_observe(m, "kiln_lat_seconds", L("p"), 0.005);   /* on a bound: in it */
    metrics_observe(m, "kiln_lat_seconds", L("p"), 0.05);
    metrics_observe(m, "kiln_lat_seconds", L("p"), 0.5);
    metrics_observe(m, "kiln_lat_seconds", L("p"), 7);       /* only +Inf */
    char *t = render(m);
    ck_assert_str_eq(t, "# HELP kiln_lat_seconds Latency.\n"
                        "# TYPE kiln_lat_seconds histogram\n"
                        "kiln_lat_seconds_bucket{pool=\"p\",le=\"0.005\"} 1\n"
                        "kiln_lat_seconds_bucket{pool=\"p\",le=\"0.1\"} 2\n"
                        "kiln_lat_seconds_bucket{pool=\"p\",le=\"1\"} 3\n"
                        "kiln_lat_seconds_bucket{pool=\"p\",le=\"+Inf\"} 4\n"
                        "kiln_lat_seconds_sum{pool=\"p\"} 7.555\n"
                        "kiln_lat_seconds_count{pool=\"p\"} 4\n");
    free(t);
    ck_assert(metrics_value(m, "kiln_lat_seconds", L("p")) == 4);
    metrics_free(m);

    m = metrics_new();   /* no labels: le alone */
    metrics_register(m, "kiln_n", METRICS_HISTOGRAM, "N.", NULL, (const double[]){10}, 1);
    metrics_observe(m, "kiln_n", NULL, 3);
    t = render(m);
    ck_assert_str_eq(t, "# HELP kiln_n N.\n# TYPE kiln_n histogram\n"
                        "kiln_n_bucket{le=\"10\"} 1\nkiln_n_bucket{le=\"+Inf\"} 1\n"
                        "kiln_n_sum 3\nkiln_n_count 1\n");
    free(t);
    metrics_free(m);
}
END_TEST

START_TEST(test_clear_drops_series)
{
    metrics *m = metrics_new();
    metrics_family *f = metrics_register(m, "kiln_ip_up", METRICS_GAUGE, "Up.",
                                         (const char *const[]){"ip", NULL}, NULL, 0);
    metrics_series_set(metrics_series_get(f, L("127.0.0.11")), 1);
    metrics_series_set(metrics_series_get(f, L("127.0.0.12")), 0);
    metrics_family_clear(f);   /* a reload removed .11: the scrape refills only .12 */
    metrics_series_set(metrics_series_get(f, L("127.0.0.12")), 1);
    char *t = render(m);
    ck_assert_str_eq(t, "# HELP kiln_ip_up Up.\n# TYPE kiln_ip_up gauge\n"
                        "kiln_ip_up{ip=\"127.0.0.12\"} 1\n");
    free(t);
    metrics_free(m);
}
END_TEST

/* 100 sites with site i sending i recipients: only the 20 busiest appear, each with both of
 * its outcome series; with max_tracked 50 at most 50 label sets are ever kept. */
START_TEST(test_top_n_sites)
{
    metrics *m = metrics_new();
    metrics_family *f = metrics_register(m, "kiln_site_total", METRICS_COUNTER, "Sites.",
                                         (const char *const[]){"site", "outcome", NULL}, NULL,
                                         0);
    metrics_top_n(f, 20, 1000);
    char site[32];
    for (int i = 1; i <= 100; i++) {
        snprintf(site, sizeof site, "s%03d.test", i);
        metrics_add(m, "kiln_site_total", L(site, "delivered"), i);
        metrics_add(m, "kiln_site_total", L(site, "deferred"), 0.5);
    }
    char *t = render(m);
    ck_assert_uint_eq(count_lines_with(t, "kiln_site_total{"), 40);
    ck_assert_ptr_nonnull(strstr(t, "kiln_site_total{site=\"s100.test\",outcome=\"delivered\"} 100\n"));
    ck_assert_ptr_nonnull(strstr(t, "kiln_site_total{site=\"s081.test\",outcome=\"deferred\"} 0.5\n"));
    ck_assert_ptr_null(strstr(t, "s080.test"));
    free(t);
    metrics_free(m);

    m = metrics_new();
    f = metrics_register(m, "kiln_site_total", METRICS_COUNTER, "Sites.",
                         (const char *const[]){"site", NULL}, NULL, 0);
    metrics_top_n(f, 20, 50);
    for (int i = 1; i <= 10000; i++) {
        snprintf(site, sizeof site, "s%05d.test", i);
        metrics_add(m, "kiln_site_total", L(site), i % 7 == 0 ? 1000 : 1);
    }
    t = render(m);
    ck_assert_uint_eq(count_lines_with(t, "kiln_site_total{"), 20);
    ck_assert_uint_eq(count_lines_with(t, "} 1000\n"), 20);   /* the busy ones survive */
    free(t);
    metrics_free(m);
}
END_TEST

START_TEST(test_null_and_unknown)
{
    metrics_add(NULL, "kiln_x", NULL, 1);
    metrics_observe(NULL, "kiln_x", NULL, 1);
    metrics_series_add(NULL, 1);
    metrics_family_clear(NULL);
    metrics *m = metrics_new();
    metrics_add(m, "kiln_not_registered", NULL, 1);   /* no family: nothing */
    char *t = render(m);
    ck_assert_str_eq(t, "");
    free(t);
    metrics_free(m);
    metrics_free(NULL);
}
END_TEST

START_TEST(test_catalogue)
{
    metrics *m = metrics_new_kiln();
    metrics_add(m, "kiln_submissions_total", L("accepted", "none"), 1);
    metrics_observe(m, "kiln_spool_commit_seconds", NULL, 0.002);
    char *t = render(m);
    ck_assert_ptr_nonnull(strstr(t, "# TYPE kiln_recipients_total counter\n"));
    ck_assert_ptr_nonnull(strstr(t, "# TYPE kiln_delivery_latency_seconds histogram\n"));
    ck_assert_ptr_nonnull(strstr(t, "# TYPE process_resident_memory_bytes gauge\n"));
    ck_assert_ptr_nonnull(strstr(t, "kiln_submissions_total{result=\"accepted\",reason=\"none\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(t, "kiln_spool_commit_seconds_bucket{le=\"0.0025\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(t, "kiln_spool_commit_seconds_bucket{le=\"0.001\"} 0\n"));
    free(t);
    metrics_free(m);
}
END_TEST

static Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("registry");
    tcase_add_test(tc, test_counter_and_gauge_text);
    tcase_add_test(tc, test_escaping_and_numbers);
    tcase_add_test(tc, test_histogram);
    tcase_add_test(tc, test_clear_drops_series);
    tcase_add_test(tc, test_top_n_sites);
    tcase_add_test(tc, test_null_and_unknown);
    tcase_add_test(tc, test_catalogue);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(metrics_suite);
