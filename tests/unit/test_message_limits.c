/* test_message_limits.c — the limits and the header-section facts mta/message.c reports
 * for the DATA checks of the submission hardening (items 2 and 5): at most 1000 fields and
 * 1MB of header section (parsing stops there and says so), the Received:/From: counts,
 * a section ended by a non-header line (the smuggling case), and the in-place removal of a
 * field that leaves the body untouched. Each case is an input an attacker controls. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/message.h"
#include "tests/unit/testlib.h"

/* n fields "X-N: v" then an empty line and a body. */
static char *fields(size_t n, const char *name, size_t *len)
{
    strbuf sb;
    strbuf_init(&sb);
    for (size_t i = 0; i < n; i++) strbuf_printf(&sb, "%s: %zu\r\n", name, i);
    strbuf_puts(&sb, "\r\nbody\r\n");
    *len = sb.len;
    return strbuf_steal(&sb);
}

START_TEST(test_thousand_fields_pass)
{
    size_t len;
    char *d = fields(MESSAGE_MAX_FIELDS, "X-A", &len);
    msg_headers hs;
    message_parse_headers(d, len, &hs);
    ck_assert_uint_eq(hs.n, 1000);
    ck_assert_uint_eq(hs.over_limit, 0);
    ck_assert_uint_eq(hs.header_len, len - strlen("body\r\n"));
    message_headers_free(&hs);
    free(d);
}
END_TEST

START_TEST(test_field_1001_is_over)
{
    size_t len;
    char *d = fields(MESSAGE_MAX_FIELDS + 1, "X-A", &len);
    msg_headers hs;
    message_parse_headers(d, len, &hs);
    ck_assert_uint_eq(hs.n, 1000);             /* stopped: no 1001st allocation */
    ck_assert(hs.over_limit & MSG_HDR_TOO_MANY_FIELDS);
    message_headers_free(&hs);
    free(d);
}
END_TEST

START_TEST(test_header_over_1mb)
{
    /* 600 fields of ~1900 bytes each (folded) = over 1MB, under 1000 fields. */
    strbuf sb;
    strbuf_init(&sb);
    char chunk[901];
    memset(chunk, 'a', 900);
    chunk[900] = '\0';
    for (int i = 0; i < 600; i++) strbuf_printf(&sb, "X-Big: %s\r\n %s\r\n", chunk, chunk);
    strbuf_puts(&sb, "\r\nbody\r\n");
    msg_headers hs;
    message_parse_headers(sb.buf, sb.len, &hs);
    ck_assert(hs.over_limit & MSG_HDR_TOO_LARGE);
    ck_assert_uint_le(hs.header_len, MESSAGE_MAX_HEADER_BYTES);
    ck_assert_uint_lt(hs.n, 600);
    message_headers_free(&hs);
    /* Just under the limit: accepted whole. */
    strbuf_reset(&sb);
    while (sb.len + 1900 < MESSAGE_MAX_HEADER_BYTES - 8) strbuf_printf(&sb, "X-Big: %s\r\n %s\r\n", chunk, chunk);
    strbuf_puts(&sb, "\r\nbody");
    message_parse_headers(sb.buf, sb.len, &hs);
    ck_assert_uint_eq(hs.over_limit, 0);
    ck_assert_uint_eq(hs.header_len, sb.len - 4);
    message_headers_free(&hs);
    strbuf_free(&sb);
}
END_TEST

START_TEST(test_counts_received_and_from)
{
    const char *d = "Received: a\r\nreceived: b\r\nFrom: x@a.test\r\nFROM : y@b.test\r\n"
                    "Subject: s\r\n\r\nFrom: not-a-header@c.test\r\n";
    msg_headers hs;
    message_parse_headers(d, strlen(d), &hs);
    ck_assert_uint_eq(hs.nreceived, 2);
    ck_assert_uint_eq(hs.nfrom, 2);          /* the obsolete "FROM :" form counts; the body's not */
    ck_assert(!hs.ended_by_body_line);
    message_headers_free(&hs);
}
END_TEST

typedef struct {
    const char *name;
    const char *data;
    bool ended_by_body_line;
    size_t header_len;
    size_t nfields;
} end_case;

static const end_case end_cases[] = {
    {"junk line ends the section", "From: a@x.test\r\nSubject: y\r\nJUNK LINE\r\nFrom: c@b.test\r\n\r\nhi",
     true, 28, 2},
    {"empty line ends it", "From: a@x.test\r\n\r\nJUNK LINE\r\n", false, 18, 1},
    {"no empty line, no body", "From: a@x.test\r\nTo: b@y.test\r\n", false, 30, 2},
    {"leading blank line: no headers", " From: a@x.test\r\n\r\n", true, 0, 0},
    {"8-bit field name is not a field", "From: a@x.test\r\nX-\xc3\xa9: v\r\n", true, 16, 1},
    {"space before colon is the obsolete form", "From : a@x.test\r\n\r\n", false, 19, 1},
};

START_TEST(test_section_end)
{
    const end_case *c = &end_cases[_i];
    msg_headers hs;
    message_parse_headers(c->data, strlen(c->data), &hs);
    ck_assert_msg(hs.ended_by_body_line == c->ended_by_body_line, "%s: ended_by_body_line", c->name);
    ck_assert_msg(hs.header_len == c->header_len, "%s: header_len %zu, want %zu", c->name,
                  hs.header_len, c->header_len);
    ck_assert_msg(hs.n == c->nfields, "%s: %zu fields, want %zu", c->name, hs.n, c->nfields);
    message_headers_free(&hs);
}
END_TEST

START_TEST(test_strip_in_place)
{
    char d[] = "X-SES-CONFIGURATION-SET: a\r\n b\r\nFrom: x@a.test\r\nx-ses-configuration-set: c\r\n"
               "\r\nX-SES-CONFIGURATION-SET: body stays\r\n";
    size_t n = message_strip_header(d, strlen(d), "X-SES-CONFIGURATION-SET");
    d[n] = '\0';
    ck_assert_str_eq(d, "From: x@a.test\r\n\r\nX-SES-CONFIGURATION-SET: body stays\r\n");
    char none[] = "From: x@a.test\r\n\r\nbody";
    ck_assert_uint_eq(message_strip_header(none, strlen(none), "X-SES-CONFIGURATION-SET"),
                      strlen(none));
}
END_TEST

static Suite *message_limits_suite(void)
{
    Suite *s = suite_create("message_limits");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_thousand_fields_pass);
    tcase_add_test(tc, test_field_1001_is_over);
    tcase_add_test(tc, test_header_over_1mb);
    tcase_add_test(tc, test_counts_received_and_from);
    tcase_add_loop_test(tc, test_section_end, 0, sizeof end_cases / sizeof end_cases[0]);
    tcase_add_test(tc, test_strip_in_place);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(message_limits_suite);
