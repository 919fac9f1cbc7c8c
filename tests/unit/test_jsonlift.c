/* test_jsonlift.c — base/jsonlift.c gives what json_loadb gives: the same tree for documents
 * with long plain strings (values lifted, keys kept, in objects and arrays, at any depth),
 * the same result where nothing may be lifted (escapes, non-ASCII, "\u0000", short
 * strings, JSON_ALLOW_NUL), and jansson's own error text, line and column for bad input. */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/jsonlift.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

/* n bytes of base64-alphabet text */
static char *long_plain(size_t n, char seed)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *s = util_malloc(n + 1);
    for (size_t i = 0; i < n; i++) s[i] = b64[(i * 7 + (size_t)seed) % 64];
    s[n] = '\0';
    return s;
}

/* jsonlift_loadb and json_loadb agree on doc under flags: equal trees, or both refuse with
 * the same error. Returns the lifted tree (or NULL). */
static json_t *agree(const char *doc, size_t flags)
{
    json_error_t e1, e2;
    memset(&e1, 0, sizeof e1);
    memset(&e2, 0, sizeof e2);
    json_t *a = jsonlift_loadb(doc, strlen(doc), flags, &e1);
    json_t *b = json_loadb(doc, strlen(doc), flags, &e2);
    if (!b) {
        ck_assert_msg(!a, "lifted parse accepted what json_loadb refuses (%s): %.200s", e2.text, doc);
        ck_assert_str_eq(e1.text, e2.text);
        ck_assert_int_eq(e1.line, e2.line);
        ck_assert_int_eq(e1.column, e2.column);
        ck_assert_int_eq(e1.position, e2.position);
        return NULL;
    }
    ck_assert_msg(a, "lifted parse refused (%s) what json_loadb accepts: %.200s", e1.text, doc);
    ck_assert_msg(json_equal(a, b), "trees differ for %.200s", doc);
    json_decref(b);
    return a;
}

START_TEST(test_send_email_body)
{
    char *data = long_plain(1400, 3);
    char *doc = util_asprintf("{\"FromEmailAddress\": \"app@example.test\", \"Destination\": "
                              "{\"ToAddresses\": [\"a@d0.test\"]}, \"Content\": {\"Raw\": "
                              "{\"Data\": \"%s\"}}}", data);
    json_t *j = agree(doc, JSON_REJECT_DUPLICATES);
    json_t *d = json_object_get(json_object_get(json_object_get(j, "Content"), "Raw"), "Data");
    ck_assert_uint_eq(json_string_length(d), 1400);
    ck_assert_str_eq(json_string_value(d), data);
    json_decref(j);
    free(doc);
    free(data);
}
END_TEST

START_TEST(test_many_places)
{
    char *a = long_plain(JSONLIFT_MIN, 1), *b = long_plain(5000, 2), *c = long_plain(300, 5);
    /* arrays, nesting, several lifted values, a long key (kept), blanks before ':' and ',',
     * the same long text twice, one byte too short, and values next to lifted ones */
    char *doc = util_asprintf(
        "[\"%s\", {\"%s\" : \"%s\" , \"k\": [[\"%s\"], 1, null, \"%s\"]}, \"%.*s\", \"x\", "
        "{\"deep\": {\"deeper\": [\"%s\", true]}}, \"\\u00e9\"]",
        a, c, b, c, c, JSONLIFT_MIN - 1, a, b);
    json_t *j = agree(doc, 0);
    ck_assert_str_eq(json_string_value(json_array_get(j, 0)), a);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(j, 1), c)), b);
    json_decref(j);
    free(doc);
    free(a);
    free(b);
    free(c);
}
END_TEST

/* Strings that must not be lifted still come out right, and "\u0000" anywhere keeps its
 * meaning: refused without JSON_ALLOW_NUL, a NUL with it. */
START_TEST(test_not_plain)
{
    char *p = long_plain(600, 4);
    const char *forms[] = {
        "[\"%s\\n\"]",              /* an escape */
        "[\"%s\\\"\"]",             /* an escaped quote */
        "[\"%s\xc3\xa9\"]",         /* UTF-8 */
        "[\"%s\xff\"]",             /* not UTF-8: jansson's error */
        "[\"%s\", \"\\u0000\"]",    /* a NUL elsewhere */
        "[\"%s\", \"\\u00007\"]",   /* something shaped like a stand-in */
        "[\"%s\", \"\\u0041\"]",
        "[\"%s\t\"]",               /* a raw control character: refused */
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        char *doc = util_asprintf(forms[i], p);
        json_decref(agree(doc, 0));
        json_decref(agree(doc, JSON_ALLOW_NUL));
        json_decref(agree(doc, JSON_REJECT_DUPLICATES));
        free(doc);
    }
    free(p);
}
END_TEST

/* Bad documents: jansson's own error, wherever the lifted string sits. */
START_TEST(test_errors_are_jansson_s)
{
    char *p = long_plain(700, 6);
    const char *forms[] = {
        "{\"Data\": \"%s\"",                          /* no closing brace */
        "{\"Data\": \"%s",                            /* unterminated string */
        "{\"Data\": \"%s\" \"x\"}",                   /* a missing comma */
        "{\"Data\": \"%s\", \"Data\": \"%s\"}",       /* a duplicate key (with the flag) */
        "{\"Data\": \"%s\"} trailing",
        "{\"Data\": x\"%s\"}",
        "{\"Data\": [\"%s\",]}",
        "\"%s\"",                                     /* not a container: needs DECODE_ANY */
        "{\"a\":\n\n  \"%s\",\n \"b\": tru}",         /* error after it: line and column */
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        char *doc = util_asprintf(forms[i], p, p);
        ck_assert_ptr_null(agree(doc, JSON_REJECT_DUPLICATES));
        free(doc);
    }
    char *doc = util_asprintf("\"%s\"", p);
    json_t *j = agree(doc, JSON_DECODE_ANY);
    ck_assert_str_eq(json_string_value(j), p);
    json_decref(j);
    free(doc);
    free(p);
}
END_TEST

static Suite *jsonlift_suite(void)
{
    Suite *s = suite_create("jsonlift");
    TCase *tc = tcase_create("agrees with json_loadb");
    tcase_add_test(tc, test_send_email_body);
    tcase_add_test(tc, test_many_places);
    tcase_add_test(tc, test_not_plain);
    tcase_add_test(tc, test_errors_are_jansson_s);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(jsonlift_suite);
