/* test_apiload_http.c — the answer parser of kiln-apiload's HTTP/1.1 client
 * (tools/apiload_http.c): an answer is complete only with its whole Content-Length body,
 * interim 1xx answers are skipped, x-amzn-ErrorType is kept up to its ':', Connection: close
 * is seen, and answers the client cannot frame are errors that say why. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/testlib.h"
#include "tools/apiload_http.h"

static long parse(const char *s, ah_answer *a, const char **why)
{
    *why = NULL;
    return ah_parse_answer(s, strlen(s), a, why);
}

START_TEST(test_complete_answer_and_body)
{
    const char *s = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    "Content-Length: 18\r\n\r\n{\"MessageId\":\"x\"}\nNEXT";
    ah_answer a;
    const char *why;
    long n = parse(s, &a, &why);
    ck_assert_int_eq(n, (long)(strlen(s) - 4));     /* the next answer's bytes are not its */
    ck_assert_int_eq(a.status, 200);
    ck_assert_uint_eq(a.body_len, 18);
    ck_assert(strncmp(s + a.body_off, "{\"MessageId\":\"x\"}\n", 18) == 0);
    ck_assert(!a.close);
    ck_assert_str_eq(a.errtype, "");
    /* every shorter prefix is "more bytes needed" */
    for (size_t k = 0; k < strlen(s) - 4; k++)
        ck_assert_int_eq(ah_parse_answer(s, k, &a, &why), 0);
}
END_TEST

START_TEST(test_error_type_close_and_interim)
{
    const char *s = "HTTP/1.1 100 Continue\r\n\r\n"
                    "HTTP/1.1 400 Bad Request\r\nx-amzn-ErrorType: BadRequestException:http://x/\r\n"
                    "connection:  Close \r\ncontent-length: 2\r\n\r\n{}";
    ah_answer a;
    const char *why;
    ck_assert_int_eq(parse(s, &a, &why), (long)strlen(s));
    ck_assert_int_eq(a.status, 400);
    ck_assert_str_eq(a.errtype, "BadRequestException");
    ck_assert(a.close);
    ck_assert_uint_eq(a.body_len, 2);
    ck_assert(memcmp(s + a.body_off, "{}", 2) == 0);
}
END_TEST

static const struct {
    const char *answer;
    const char *why;
} bad[] = {
    {"HTTP/1.1 200 OK\r\n\r\n", "answer without Content-Length"},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding"},
    {"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", "bad Content-Length"},
    {"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", "bad Content-Length"},
    {"HTTP/1.1 200 OK\r\nContent-Length: 1048577\r\n\r\n", "answer body over 1 MB"},
    {"HTTP/2 200\r\n\r\n", "malformed status line"},
    {"SMTP/1.1 200 OK\r\n\r\n", "malformed status line"},
    {"HTTP/1.1 2000 OK\r\n\r\n", "malformed status line"},
    {"HTTP/1.1 600 Nope\r\n\r\n", "malformed status line"},
};

START_TEST(test_unframed_answers_say_why)
{
    ah_answer a;
    const char *why;
    ck_assert_int_eq(parse(bad[_i].answer, &a, &why), -1);
    ck_assert_ptr_nonnull(why);
    if (!strstr(why, bad[_i].why)) ck_abort_msg("%s: got \"%s\"", bad[_i].answer, why);
}
END_TEST

START_TEST(test_header_over_64kb)
{
    size_t n = AH_MAX_HEADER + 10;
    char *s = malloc(n + 1);
    memcpy(s, "HTTP/1.1 200 OK\r\nX-Big: ", 24);
    memset(s + 24, 'x', n - 24);
    s[n] = '\0';
    ah_answer a;
    const char *why;
    ck_assert_int_eq(ah_parse_answer(s, AH_MAX_HEADER - 1, &a, &why), 0);
    ck_assert_int_eq(ah_parse_answer(s, n, &a, &why), -1);
    ck_assert_str_eq(why, "answer header over 64 KB");
    free(s);
}
END_TEST

static Suite *apiload_http_suite(void)
{
    Suite *s = suite_create("apiload_http");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_complete_answer_and_body);
    tcase_add_test(tc, test_error_type_close_and_interim);
    tcase_add_loop_test(tc, test_unframed_answers_say_why, 0, sizeof bad / sizeof bad[0]);
    tcase_add_test(tc, test_header_over_64kb);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(apiload_http_suite);
