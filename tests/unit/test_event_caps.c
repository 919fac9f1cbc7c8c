/* test_event_caps.c — the size caps of the SES mail object (mta/events.h) on hostile
 * messages, and the byte bounds of outbox reads and drains (store/spool.h
 * spool_each_event_bytes, events_drain): a 9 MB folded Subject and a 20,000-address To:
 * give a mail object under 64 KB with headersTruncated, and a drain over rows of 1 MB
 * reads about 4 MB per call, at least one row, and loses none. */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/log.h"
#include "base/util.h"
#include "mta/events.h"
#include "mta/message.h"
#include "store/spool.h"
#include "testlib.h"

#define CAPS_MAIL_CAP 65536

/* A header section: From, a To: of naddr addresses, a Subject of subject_len bytes folded
 * every 70 bytes, an X-Long of 5000 bytes, then the body. */
static char *caps_message(size_t naddr, size_t subject_len)
{
    strbuf sb;
    strbuf_init(&sb);
    strbuf_puts(&sb, "From: App <app@example.test>\r\nTo: ");
    for (size_t i = 0; i < naddr; i++)
        strbuf_printf(&sb, "%sPerson %zu <p%zu@dest.test>", i ? ",\r\n " : "", i, i);
    strbuf_puts(&sb, "\r\nSubject: ");
    for (size_t i = 0; i < subject_len; i++) {
        if (i && i % 70 == 0) strbuf_puts(&sb, "\r\n ");
        strbuf_append(&sb, "s", 1);
    }
    strbuf_puts(&sb, "\r\nX-Long: ");
    for (size_t i = 0; i < 5000; i++) strbuf_append(&sb, "x", 1);
    strbuf_puts(&sb, "\r\n\r\nbody\r\n");
    return sb.buf;
}

static json_t *caps_mail(const char *data, size_t *len)
{
    msg_headers hs;
    message_parse_headers(data, strlen(data), &hs);
    char *dest[] = {"ann@dest.test"};
    events_mail_in in = {.message_id = "0000018bcfe5687b-11111111-2222-4333-8444-555555555555-000000",
                         .timestamp_ms = 1700000000123LL, .source = "app@example.test",
                         .sending_account_id = "123456789012", .destination = dest,
                         .ndestination = 1, .headers = &hs, .config_set = "txn",
                         .source_ip = "127.0.0.1"};
    char *s = events_mail_json(&in);
    message_headers_free(&hs);
    *len = strlen(s);
    json_t *j = json_loads(s, 0, NULL);
    ck_assert_msg(j != NULL, "the capped mail object is not JSON");
    free(s);
    return j;
}

START_TEST(test_nine_megabyte_subject)
{
    char *data = caps_message(3, 9u << 20);
    size_t len = 0;
    json_t *m = caps_mail(data, &len);
    free(data);
    ck_assert_uint_le(len, CAPS_MAIL_CAP);
    ck_assert(json_is_true(json_object_get(m, "headersTruncated")));
    const char *subject = json_string_value(json_object_get(json_object_get(m, "commonHeaders"), "subject"));
    ck_assert_uint_eq(strlen(subject), 2048);
    json_t *h = json_object_get(m, "headers");
    ck_assert_uint_ge(json_array_size(h), 2);    /* From and To (capped) are kept */
    for (size_t i = 0; i < json_array_size(h); i++)
        ck_assert_uint_le(strlen(json_string_value(json_object_get(json_array_get(h, i), "value"))), 2048);
    /* the To: entries are complete addresses, as written */
    json_t *to = json_object_get(json_object_get(m, "commonHeaders"), "to");
    ck_assert_str_eq(json_string_value(json_array_get(to, 2)), "Person 2 <p2@dest.test>");
    json_decref(m);
}
END_TEST

START_TEST(test_twenty_thousand_recipients_in_to)
{
    char *data = caps_message(20000, 100);
    size_t len = 0;
    json_t *m = caps_mail(data, &len);
    free(data);
    ck_assert_uint_le(len, CAPS_MAIL_CAP);
    ck_assert(json_is_true(json_object_get(m, "headersTruncated")));
    json_t *to = json_object_get(json_object_get(m, "commonHeaders"), "to");
    size_t bytes = 0;
    for (size_t i = 0; i < json_array_size(to); i++) bytes += strlen(json_string_value(json_array_get(to, i)));
    ck_assert_uint_gt(json_array_size(to), 100);
    ck_assert_uint_lt(json_array_size(to), 20000);
    ck_assert_uint_le(bytes, 8192);
    json_decref(m);
}
END_TEST

START_TEST(test_small_message_not_truncated)
{
    char *data = caps_message(2, 30);
    size_t len = 0;
    json_t *m = caps_mail(data, &len);
    free(data);
    /* X-Long (5000 bytes) is the one value cut */
    ck_assert(json_is_true(json_object_get(m, "headersTruncated")));
    json_decref(m);
    const char *plain = "From: app@example.test\r\nTo: ann@dest.test\r\nSubject: hi\r\n\r\nbody\r\n";
    m = caps_mail(plain, &len);
    ck_assert(json_is_false(json_object_get(m, "headersTruncated")));
    json_decref(m);
}
END_TEST

/* ------------------------------------------------------------- byte-bounded reads ---- */

typedef struct caps_rows {
    size_t n, bytes;
    int64_t last;
} caps_rows;

static void caps_row(void *arg, int64_t id, const char *set, const char *json)
{
    (void)set;
    caps_rows *r = arg;
    r->n++;
    r->bytes += strlen(json);
    r->last = id;
}

static spool *caps_spool_with_big_rows(const char *dir, int rows, size_t size)
{
    char *err = NULL;
    spool *sp = spool_open(dir, false, &err);
    ck_assert_msg(sp != NULL, "spool_open: %s", err ? err : "?");
    char *json = util_calloc(1, size + 1);
    memset(json, 'e', size);
    json[0] = '"';
    json[size - 1] = '"';
    for (int i = 0; i < rows; i++) ck_assert_int_eq(spool_add_event(sp, "txn", json), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    free(json);
    return sp;
}

START_TEST(test_each_event_bytes)
{
    const char *root = testlib_tmpdir("caps");
    spool *sp = caps_spool_with_big_rows(root, 10, 1u << 20);
    caps_rows r = {0};
    ck_assert_int_eq(spool_each_event_bytes(sp, 0, 1000, (5u << 19), caps_row, &r), 0);
    ck_assert_uint_eq(r.n, 3);             /* 2.5 MB: the third row passes the bound */
    caps_rows one = {0};
    ck_assert_int_eq(spool_each_event_bytes(sp, 0, 1000, 1, caps_row, &one), 0);
    ck_assert_uint_eq(one.n, 1);           /* at least one row */
    caps_rows rest = {0};
    ck_assert_int_eq(spool_each_event_bytes(sp, r.last, 1000, SIZE_MAX, caps_row, &rest), 0);
    ck_assert_uint_eq(rest.n, 7);
    spool_close(sp);
    testlib_tmpdir_remove(root);
}
END_TEST

START_TEST(test_drain_is_bounded_by_bytes_and_loses_nothing)
{
    const char *root = testlib_tmpdir("caps");
    spool *sp = caps_spool_with_big_rows(root, 10, 1u << 20);
    char *err = NULL;
    char *logpath = util_asprintf("%s/kiln.log", root);
    klog *lg = log_open(logpath, KLOG_DEBUG, &err);
    ck_assert_ptr_nonnull(lg);
    char *events_path = util_asprintf("%s/txn.jsonl", root);
    config *cfg = testlib_config_new();
    config_set *set = testlib_config_add_set(cfg, "txn", "transactional");
    testlib_config_add_event_file(set, events_path);
    testlib_config_set_default_set(cfg, "txn");
    events *ev = events_new(lg);
    /* 4 MB per drain: rows of exactly 1 MB go 4 at a time */
    ck_assert_int_eq(events_drain(ev, sp, cfg), 4);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_int_eq(events_drain(ev, sp, cfg), 4);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_int_eq(events_drain(ev, sp, cfg), 2);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_int_eq(events_drain(ev, sp, cfg), 0);
    struct stat st;
    ck_assert_int_eq(stat(events_path, &st), 0);
    ck_assert_int_eq(st.st_size, 10 * ((1 << 20) + 1));   /* every row once, plus "\n" */
    caps_rows left = {0};
    ck_assert_int_eq(spool_each_event(sp, 0, 1000, caps_row, &left), 0);
    ck_assert_uint_eq(left.n, 0);                          /* all written: all deleted */
    events_free(ev);
    config_unref(cfg);
    log_close(lg);
    spool_close(sp);
    free(logpath);
    free(events_path);
    testlib_tmpdir_remove(root);
}
END_TEST

static Suite *caps_suite(void)
{
    Suite *s = suite_create("event_caps");
    TCase *tc = tcase_create("mail");
    tcase_add_test(tc, test_nine_megabyte_subject);
    tcase_add_test(tc, test_twenty_thousand_recipients_in_to);
    tcase_add_test(tc, test_small_message_not_truncated);
    suite_add_tcase(s, tc);
    tc = tcase_create("drain");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_each_event_bytes);
    tcase_add_test(tc, test_drain_is_bounded_by_bytes_and_loses_nothing);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(caps_suite);
