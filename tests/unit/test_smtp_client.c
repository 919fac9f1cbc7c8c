/* test_smtp_client.c — smtp_client_parse_ehlo(), the EHLO extension reader that kilnd's
 * delivery and kiln-loadgen share, table by table on replies parsed by
 * smtp_client_parse_reply(): keywords are case-insensitive and end at a space or '=', the
 * first line (the server's name) is never an extension, SIZE with and without a limit; and
 * smtp_client_scan_reply(), kiln-loadgen's allocation-free framing, against the full parser. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "mta/smtp_client.h"

typedef struct {
    const char *reply;
    bool pipelining, starttls, eightbitmime, size;
    long long size_max;
} ehlo_case;

static const ehlo_case ehlo_cases[] = {
    {"250 mx.test\r\n", false, false, false, false, 0},
    {"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250 STARTTLS\r\n",
     true, true, true, true, 10240000},
    {"250-mx.test\r\n250-pipelining\r\n250 starttls\r\n", true, true, false, false, 0},
    {"250-mx.test\r\n250-SIZE\r\n250 ENHANCEDSTATUSCODES\r\n", false, false, false, true, 0},
    {"250-mx.test\r\n250 SIZE 0\r\n", false, false, false, true, 0},
    {"250-mx.test\r\n250 SIZE=5000\r\n", false, false, false, true, 5000},
    {"250-PIPELINING\r\n250 mx.test\r\n", false, false, false, false, 0},   /* first line */
    {"250-mx.test\n250-PIPELININGX\n250 XSTARTTLS\n", false, false, false, false, 0},
    {"250-mx.test\r\n250-AUTH PLAIN LOGIN\r\n250 DSN\r\n", false, false, false, false, 0},
};

START_TEST(test_parse_ehlo)
{
    const ehlo_case *tc = &ehlo_cases[_i];
    smtp_client_reply r;
    size_t used;
    ck_assert_int_eq(smtp_client_parse_reply(tc->reply, strlen(tc->reply), &r, &used), 1);
    smtp_client_caps caps;
    memset(&caps, 0xff, sizeof caps);                 /* every field is set */
    smtp_client_parse_ehlo(&r, &caps);
    ck_assert_msg(caps.pipelining == tc->pipelining, "pipelining: %s", tc->reply);
    ck_assert_msg(caps.starttls == tc->starttls, "starttls: %s", tc->reply);
    ck_assert_msg(caps.eightbitmime == tc->eightbitmime, "8bitmime: %s", tc->reply);
    ck_assert_msg(caps.size == tc->size, "size: %s", tc->reply);
    ck_assert_int_eq(caps.size_max, tc->size_max);
    smtp_client_reply_free(&r);
}
END_TEST

/* scan_reply frames exactly as parse_reply does, without building the texts. */
static const char *const scan_cases[] = {
    "250 ok\r\n", "250-a\r\n250 b\r\nNEXT", "354 go\n", "221\r\n", "250-a\r\n",
    "250-a\r\n25", "", "25", "abc\r\n", "250-a\r\n250x\r\n", "2500 x\r\n",
};

START_TEST(test_scan_matches_parse)
{
    const char *buf = scan_cases[_i];
    size_t len = strlen(buf), pused = 0, sused = 0;
    smtp_client_reply r;
    int code = -1;
    int prc = smtp_client_parse_reply(buf, len, &r, &pused);
    int src = smtp_client_scan_reply(buf, len, &code, &sused);
    ck_assert_int_eq(src, prc);
    if (prc == 1) {
        ck_assert_int_eq(code, r.code);
        ck_assert_uint_eq(sused, pused);
        smtp_client_reply_free(&r);
    }
}
END_TEST

static Suite *smtp_client_suite(void)
{
    Suite *s = suite_create("smtp_client");
    TCase *tc = tcase_create("ehlo");
    tcase_add_loop_test(tc, test_parse_ehlo, 0, (int)(sizeof ehlo_cases / sizeof ehlo_cases[0]));
    suite_add_tcase(s, tc);
    TCase *scan = tcase_create("scan");
    tcase_add_loop_test(scan, test_scan_matches_parse, 0,
                        (int)(sizeof scan_cases / sizeof scan_cases[0]));
    suite_add_tcase(s, scan);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(smtp_client_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
