/* test_msgtags.c — X-SES-MESSAGE-TAGS as SES reads it from SMTP and raw mail (mta/msgtags.c):
 * "name=value, name=value", several fields adding up, blanks around names and values, folded
 * fields; and each broken rule refused with a message naming the tag and the rule. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/msgtags.h"
#include "tests/unit/testlib.h"

/* Parses data's header section; returns msgtags_from_headers's result. */
static int parse(const char *data, msgtags *t, char **err)
{
    msg_headers hs;
    message_parse_headers(data, strlen(data), &hs);
    int rc = msgtags_from_headers(&hs, t, err);
    message_headers_free(&hs);
    return rc;
}

START_TEST(test_pairs_and_fields_add_up)
{
    msgtags t;
    char *err = NULL;
    ck_assert_int_eq(parse("From: a@x.test\r\n"
                           "X-SES-MESSAGE-TAGS: campaign=spring-2026,  kind = receipt\r\n"
                           "Subject: s\r\n"
                           "x-ses-message-tags: user.id=u_1@x.test,\r\n"
                           "\tlevel=2\r\n"
                           "\r\nX-SES-MESSAGE-TAGS: body=ignored\r\n",
                           &t, &err),
                     0);
    ck_assert_ptr_null(err);
    ck_assert_uint_eq(t.n, 4);
    ck_assert_str_eq(t.names[0], "campaign");
    ck_assert_str_eq(t.values[0], "spring-2026");
    ck_assert_str_eq(t.names[1], "kind");
    ck_assert_str_eq(t.values[1], "receipt");
    ck_assert_str_eq(t.names[2], "user.id");
    ck_assert_str_eq(t.values[2], "u_1@x.test");
    ck_assert_str_eq(t.names[3], "level");
    ck_assert_str_eq(t.values[3], "2");
    msgtags_free(&t);
    ck_assert_uint_eq(t.n, 0);
}
END_TEST

START_TEST(test_no_field_no_tags)
{
    msgtags t;
    char *err = NULL;
    ck_assert_int_eq(parse("From: a@x.test\r\n\r\nbody\r\n", &t, &err), 0);
    ck_assert_uint_eq(t.n, 0);
    ck_assert_ptr_null(err);
    msgtags_free(&t);
}
END_TEST

static const struct {
    const char *field;
    const char *msg;
} bad[] = {
    {"X-SES-MESSAGE-TAGS: campaign", "X-SES-MESSAGE-TAGS: tag \"campaign\" has no '='"},
    {"X-SES-MESSAGE-TAGS: a=1,,b=2", "X-SES-MESSAGE-TAGS: tag \"\" has no '='"},
    {"X-SES-MESSAGE-TAGS: a=1, b c=2", "tag \"b c=2\": the name may hold only ASCII letters"},
    {"X-SES-MESSAGE-TAGS: a=hello world", "tag \"a=hello world\": the value may hold only"},
    {"X-SES-MESSAGE-TAGS: =v", "tag \"=v\": the name is empty"},
    {"X-SES-MESSAGE-TAGS: n=", "tag \"n=\": the value is empty"},
    {"X-SES-MESSAGE-TAGS: ses:configuration-set=x", "the name starts with \"ses:\" (reserved)"},
    {"X-SES-MESSAGE-TAGS: a=\x01\x7f", "tag \"a=??\": the value may hold only"},
};

START_TEST(test_broken_rules_named)
{
    char *data = util_asprintf("From: a@x.test\r\n%s\r\n\r\nbody\r\n", bad[_i].field);
    msgtags t;
    char *err = NULL;
    ck_assert_int_eq(parse(data, &t, &err), -1);
    ck_assert_ptr_nonnull(err);
    if (!strstr(err, bad[_i].msg)) ck_abort_msg("%s: got \"%s\"", bad[_i].field, err);
    ck_assert_uint_eq(t.n, 0);
    free(err);
    free(data);
}
END_TEST

START_TEST(test_long_tag_and_count_limits)
{
    strbuf sb;
    strbuf_init(&sb);
    strbuf_puts(&sb, "X-SES-MESSAGE-TAGS: n=");
    for (int i = 0; i < 257; i++) strbuf_append(&sb, "v", 1);
    strbuf_puts(&sb, "\r\n\r\n");
    msgtags t;
    char *err = NULL;
    ck_assert_int_eq(parse(sb.buf, &t, &err), -1);
    ck_assert_ptr_nonnull(strstr(err, "the value is longer than 256 characters"));
    ck_assert_ptr_nonnull(strstr(err, "vvv...\""));  /* shown cut at 64 characters */
    ck_assert_uint_lt(strlen(err), 200);
    free(err);
    strbuf_reset(&sb);

    strbuf_puts(&sb, "X-SES-MESSAGE-TAGS: t0=0");
    for (int i = 1; i < MSGTAGS_MAX; i++) strbuf_printf(&sb, ", t%d=%d", i, i);
    strbuf_puts(&sb, "\r\n\r\n");
    ck_assert_int_eq(parse(sb.buf, &t, &err), 0);
    ck_assert_uint_eq(t.n, MSGTAGS_MAX);
    msgtags_free(&t);
    sb.len -= 4;                        /* one more, in a second field */
    strbuf_puts(&sb, "\r\nX-SES-MESSAGE-TAGS: one=more\r\n\r\n");
    ck_assert_int_eq(parse(sb.buf, &t, &err), -1);
    ck_assert_str_eq(err, "X-SES-MESSAGE-TAGS: more than 50 message tags");
    free(err);
    strbuf_free(&sb);
}
END_TEST

static Suite *msgtags_suite(void)
{
    Suite *s = suite_create("msgtags");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_pairs_and_fields_add_up);
    tcase_add_test(tc, test_no_field_no_tags);
    tcase_add_loop_test(tc, test_broken_rules_named, 0, sizeof bad / sizeof bad[0]);
    tcase_add_test(tc, test_long_tag_and_count_limits);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(msgtags_suite);
