/* test_webhook.c — the pure parts of webhook destinations: what kiln keeps of an answer
 * (mta/webhook_resp.c: reason phrase, interim answers, the header limit, the body excerpt
 * and the error text), the backoff, and, over a real spool without a loop (nothing is
 * posted), the backlog count and the max_backlog drop of mta/webhook.c: the oldest events
 * of the destination's set are dropped (progress moves over them, other sets' rows do not
 * count), the count is logged and kept across a restart, and the rest stays in order. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "mta/webhook.h"
#include "mta/webhook_resp.h"
#include "store/spool.h"
#include "tests/unit/testlib.h"

/* ------------------------------------------------------------------ the answer ---- */

static void feed(webhook_resp *r, const char *const *lines)
{
    for (size_t i = 0; lines[i]; i++)
        ck_assert_int_eq(webhook_resp_header(r, lines[i], strlen(lines[i])), 0);
}

START_TEST(test_resp_status_and_reason)
{
    static const struct {
        const char *line;
        int status;
        const char *reason;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\n", 200, "OK"},
        {"HTTP/1.0 503 Service Unavailable  \r\n", 503, "Service Unavailable"},
        {"HTTP/2 429 \r\n", 429, ""},
        {"HTTP/2 204\r\n", 204, ""},
        {"HTTP/1.1 500 bad\x01\xffthing\r\n", 500, "bad ?thing"},
        {"HTTP/1.1 20x OK\r\n", 0, ""},             /* not a status line: ignored */
        {"HTTP/1.1 2000 OK\r\n", 0, ""},
        {"HTTP/1.1 700 Nope\r\n", 0, ""},
        {"SSH-2.0-OpenSSH\r\n", 0, ""},
        {"Content-Type: text/plain\r\n", 0, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        webhook_resp r;
        webhook_resp_reset(&r);
        ck_assert_int_eq(webhook_resp_header(&r, cases[i].line, strlen(cases[i].line)), 0);
        ck_assert_msg(r.status == cases[i].status, "%s: status %d", cases[i].line, r.status);
        ck_assert_str_eq(r.reason, cases[i].reason);
    }
}
END_TEST

START_TEST(test_resp_interim_answer_starts_afresh)
{
    webhook_resp r;
    webhook_resp_reset(&r);
    static const char *const lines[] = {"HTTP/1.1 100 Continue\r\n", "\r\n",
                                        "HTTP/1.1 503 Busy\r\n", "Retry-After: 3\r\n", "\r\n",
                                        NULL};
    feed(&r, lines);
    ck_assert_int_eq(r.status, 503);
    ck_assert_str_eq(r.reason, "Busy");
    webhook_resp_body(&r, "try\r\n\tlater\n", 13);
    char *e = webhook_resp_error(&r, 503);
    ck_assert_str_eq(e, "HTTP status 503 (Busy): try later");
    free(e);
    /* a status curl reports that differs from the last status line: no reason shown */
    e = webhook_resp_error(&r, 502);
    ck_assert_str_eq(e, "HTTP status 502: try later");
    free(e);
    webhook_resp_reset(&r);
    e = webhook_resp_error(&r, 404);
    ck_assert_str_eq(e, "HTTP status 404");
    free(e);
}
END_TEST

START_TEST(test_resp_header_limit)
{
    webhook_resp r;
    webhook_resp_reset(&r);
    static const char *const first[] = {"HTTP/1.1 200 OK\r\n", NULL};
    feed(&r, first);
    char line[1024];
    memset(line, 'a', sizeof line - 2);
    memcpy(line, "X-Pad: ", 7);
    line[sizeof line - 2] = '\r';
    line[sizeof line - 1] = '\n';
    int rc = 0;
    size_t n = 0;
    while (rc == 0 && n < 1000) {
        rc = webhook_resp_header(&r, line, sizeof line);
        n++;
    }
    ck_assert_int_eq(rc, -1);
    /* 17 bytes of status line, then lines of 1 KB: the 64th passes 64 KB */
    ck_assert_uint_eq(n, WEBHOOK_RESP_MAX_HEADER_BYTES / sizeof line);
    /* a new answer starts a new count */
    feed(&r, first);
    ck_assert_int_eq(webhook_resp_header(&r, line, sizeof line), 0);
}
END_TEST

START_TEST(test_resp_body_excerpt)
{
    webhook_resp r;
    webhook_resp_reset(&r);
    static const char *const lines[] = {"HTTP/1.1 500 Internal Server Error\r\n", NULL};
    feed(&r, lines);
    char big[1000];
    memset(big, 'x', sizeof big);
    memcpy(big, "{\"error\": \"\xc3\xa9\"}", 15);
    webhook_resp_body(&r, big, 300);
    webhook_resp_body(&r, big, sizeof big);
    ck_assert_uint_eq(r.body_len, WEBHOOK_RESP_BODY_KEEP);
    ck_assert_uint_eq(r.body_total, 1300);
    ck_assert_uint_eq(strlen(r.body), WEBHOOK_RESP_BODY_KEEP);
    ck_assert_msg(strncmp(r.body, "{\"error\": \"??\"}xxx", 18) == 0, "%s", r.body);
    char *e = webhook_resp_error(&r, 500);
    ck_assert_msg(strncmp(e, "HTTP status 500 (Internal Server Error): {\"error\"", 48) == 0, "%s", e);
    ck_assert_uint_le(strlen(e), 60 + WEBHOOK_RESP_BODY_KEEP);
    for (const char *p = e; *p; p++) ck_assert_msg(*p >= 0x20 && *p < 0x7f, "byte %d", *p);
    free(e);
}
END_TEST

START_TEST(test_backoff)
{
    ck_assert_int_eq(webhook_backoff_ms(1), 1000);
    ck_assert_int_eq(webhook_backoff_ms(2), 2000);
    ck_assert_int_eq(webhook_backoff_ms(9), 256000);
    ck_assert_int_eq(webhook_backoff_ms(10), 300000);
    ck_assert_int_eq(webhook_backoff_ms(1000), 300000);
}
END_TEST

/* ------------------------------------------------------------- backlog and drop ---- */

static const char *rootdir;
static char *tmpdir;
static spool *sp;
static klog *lg;
static char logpath[256];

static void root_setup(void) { rootdir = testlib_tmpdir("webhook"); }
static void root_teardown(void) { testlib_tmpdir_remove(rootdir); }

static void fixture_setup(void)
{
    tmpdir = testlib_subdir(rootdir, "t-");
    char *err = NULL;
    sp = spool_open(tmpdir, false, &err);
    ck_assert_msg(sp != NULL, "spool_open: %s", err ? err : "?");
    snprintf(logpath, sizeof logpath, "%s/kiln.log", tmpdir);
    lg = log_open(logpath, KLOG_DEBUG, &err);
    ck_assert_msg(lg != NULL, "log_open: %s", err ? err : "?");
}

static void fixture_teardown(void)
{
    spool_close(sp);
    log_close(lg);
    testlib_rmtree(tmpdir);
    free(tmpdir);
}

/* n events of set, named tag-0.. (outbox ids count from 1). */
static void add_events(const char *set, int n, const char *tag)
{
    for (int i = 0; i < n; i++) {
        char *j = util_asprintf("{\"n\":\"%s-%d\"}", tag, i);
        ck_assert_int_eq(spool_add_event(sp, set, j), 0);
        free(j);
    }
    ck_assert_int_eq(spool_flush(sp), 0);
}

static config_event_dest dest(int64_t max_backlog)
{
    config_event_dest d = {.type = CONFIG_EVENT_WEBHOOK, .url = "http://127.0.0.1:9/x",
                           .batch = 1, .max_backlog = max_backlog};
    return d;
}

typedef struct row_list {
    char json[64][40];
    int64_t id[64];
    size_t n;
} row_list;

static void collect(void *arg, int64_t id, const char *set, const char *json)
{
    row_list *l = arg;
    if (strcmp(set, "s") != 0 || l->n >= 64) return;
    l->id[l->n] = id;
    snprintf(l->json[l->n++], sizeof l->json[0], "%s", json);
}

START_TEST(test_drop_past_max_backlog)
{
    /* ids 1..4: s a-0..a-3; 5..6: other; 7..12: s b-0..b-5 */
    add_events("s", 4, "a");
    add_events("other", 2, "o");
    add_events("s", 6, "b");
    config_event_dest d = dest(3);
    webhook *w = webhook_new(NULL, NULL, lg, sp, "s", &d);
    webhook_info info;
    webhook_get_info(w, &info);
    ck_assert_int_eq(info.backlog, 0);          /* nothing counted before the first poll */
    webhook_poll(w);
    webhook_get_info(w, &info);
    ck_assert_int_eq(info.backlog, 3);
    ck_assert_int_eq(info.dropped, 7);
    ck_assert_int_eq(info.max_backlog, 3);
    /* the 7 oldest of the set (a-0..a-3, b-0..b-2: ids 1..4, 7..9) are behind the progress */
    ck_assert_int_eq(webhook_acked(w), 9);
    ck_assert_int_eq(spool_flush(sp), 0);
    char *log = testlib_read_file(logpath, NULL);
    ck_assert_msg(strstr(log, "event=webhook_dropped") && strstr(log, "dropped=7") &&
                  strstr(log, "upto_id=9") && strstr(log, "max_backlog=3"), "%s", log);
    free(log);

    /* Within the cap: nothing more dropped; two more: the two oldest go. */
    webhook_poll(w);
    webhook_get_info(w, &info);
    ck_assert_int_eq(info.dropped, 7);
    add_events("s", 2, "c");                    /* ids 13, 14 */
    webhook_poll(w);
    webhook_get_info(w, &info);
    ck_assert_int_eq(info.backlog, 3);
    ck_assert_int_eq(info.dropped, 9);
    ck_assert_int_eq(webhook_acked(w), 11);
    ck_assert_int_eq(spool_flush(sp), 0);
    webhook_free(w);

    /* A restart: the count of drops is kept, the backlog counted again from the progress,
     * and what is left after it is the newest three, in order. */
    w = webhook_new(NULL, NULL, lg, sp, "s", &d);
    webhook_poll(w);
    webhook_get_info(w, &info);
    ck_assert_int_eq(info.dropped, 9);
    ck_assert_int_eq(info.backlog, 3);
    row_list l = {.n = 0};
    ck_assert_int_eq(spool_each_event(sp, webhook_acked(w), 100, collect, &l), 0);
    ck_assert_uint_eq(l.n, 3);
    ck_assert_str_eq(l.json[0], "{\"n\":\"b-5\"}");
    ck_assert_str_eq(l.json[1], "{\"n\":\"c-0\"}");
    ck_assert_str_eq(l.json[2], "{\"n\":\"c-1\"}");
    webhook_free(w);
}
END_TEST

START_TEST(test_drop_beyond_the_window)
{
    /* More than a window (100 events) over the cap: the cut is found in the spool. */
    add_events("s", 150, "a");
    add_events("other", 10, "o");
    add_events("s", 50, "b");
    config_event_dest d = dest(20);
    webhook *w = webhook_new(NULL, NULL, lg, sp, "s", &d);
    webhook_poll(w);
    webhook_info info;
    webhook_get_info(w, &info);
    ck_assert_int_eq(info.dropped, 180);
    ck_assert_int_eq(info.backlog, 20);
    ck_assert_int_eq(spool_flush(sp), 0);
    row_list l = {.n = 0};
    ck_assert_int_eq(spool_each_event(sp, webhook_acked(w), 1000, collect, &l), 0);
    ck_assert_uint_eq(l.n, 20);
    ck_assert_str_eq(l.json[0], "{\"n\":\"b-30\"}");
    ck_assert_str_eq(l.json[19], "{\"n\":\"b-49\"}");
    webhook_free(w);

    /* The default cap drops nothing. */
    config_event_dest d2 = dest(CONFIG_WEBHOOK_BACKLOG_DEFAULT);
    d2.url = "http://127.0.0.1:9/other";
    w = webhook_new(NULL, NULL, lg, sp, "s", &d2);
    webhook_poll(w);
    webhook_get_info(w, &info);
    ck_assert_int_eq(info.dropped, 0);
    ck_assert_int_eq(info.backlog, 200);
    ck_assert_int_eq(webhook_acked(w), 0);
    webhook_free(w);
}
END_TEST

START_TEST(test_spool_set_event_reads)
{
    add_events("s", 3, "a");        /* 1..3 */
    add_events("other", 2, "o");    /* 4..5 */
    add_events("s", 1, "b");        /* 6 */
    int64_t last = -1, n = -1, id = -1;
    ck_assert_int_eq(spool_count_set_events(sp, "s", 0, 1000, &last, &n), 0);
    ck_assert_int_eq(last, 6);
    ck_assert_int_eq(n, 4);
    ck_assert_int_eq(spool_count_set_events(sp, "s", 2, 3, &last, &n), 0);   /* 3, 4, 5 */
    ck_assert_int_eq(last, 5);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(spool_count_set_events(sp, "s", 6, 1000, &last, &n), 0);
    ck_assert_int_eq(last, 0);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(spool_nth_set_event(sp, "s", 0, 4, &id), 1);
    ck_assert_int_eq(id, 6);
    ck_assert_int_eq(spool_nth_set_event(sp, "s", 1, 2, &id), 1);
    ck_assert_int_eq(id, 3);
    ck_assert_int_eq(spool_nth_set_event(sp, "s", 0, 5, &id), 0);
    ck_assert_int_eq(spool_nth_set_event(sp, "other", 3, 1, &id), 1);
    ck_assert_int_eq(id, 4);
}
END_TEST

static Suite *webhook_suite(void)
{
    Suite *s = suite_create("webhook");
    TCase *tc = tcase_create("answer");
    tcase_add_test(tc, test_resp_status_and_reason);
    tcase_add_test(tc, test_resp_interim_answer_starts_afresh);
    tcase_add_test(tc, test_resp_header_limit);
    tcase_add_test(tc, test_resp_body_excerpt);
    tcase_add_test(tc, test_backoff);
    suite_add_tcase(s, tc);
    tc = tcase_create("backlog");
    tcase_add_unchecked_fixture(tc, root_setup, root_teardown);
    tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
    tcase_add_test(tc, test_drop_past_max_backlog);
    tcase_add_test(tc, test_drop_beyond_the_window);
    tcase_add_test(tc, test_spool_set_event_reads);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(webhook_suite);
