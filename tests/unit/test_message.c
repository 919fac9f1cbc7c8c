/* test_message.c — header-section parsing, unfolding, address lists and header removal
 * (mta/message.c), table-driven with the awkward inputs real submitters send. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/message.h"
#include "tests/unit/testlib.h"

#define NO_HEADERS ((size_t)-1)     /* marker: expected header_len is the whole input */

/* ---- message_parse_headers ---- */

typedef struct {
    const char *name;
    const char *data;
    size_t header_len;              /* NO_HEADERS: strlen(data) */
    const char *fields[8][2];       /* expected name/value pairs, NULL-terminated */
} hdr_case;

static const hdr_case hdr_cases[] = {
    {"plain CRLF", "From: a@x.test\r\nTo: b@y.test\r\n\r\nbody\r\n", 32,
     {{"From", "a@x.test"}, {"To", "b@y.test"}}},
    {"folded with space and tab", "Subject: hello\r\n world\r\n\tagain\r\n\r\nbody", 34,
     {{"Subject", "hello world\tagain"}}},
    {"bare LF line ends", "From: a@x.test\nSubject: one\n two\n\nbody\n", 34,
     {{"From", "a@x.test"}, {"Subject", "one two"}}},
    {"mixed CRLF and LF", "A: 1\r\nB: 2\n\r\nbody", 13, {{"A", "1"}, {"B", "2"}}},
    {"no empty line: all header", "A: 1\r\nB: 2\r\n", NO_HEADERS, {{"A", "1"}, {"B", "2"}}},
    {"last line without line end", "A: 1\r\nB: 2", NO_HEADERS, {{"A", "1"}, {"B", "2"}}},
    {"line without colon ends the header section", "A: 1\r\nnot a header\r\nB: 2\r\n\r\n", 6,
     {{"A", "1"}}},
    {"name with a space is no field", "A: 1\r\nBad Name: 2\r\n\r\n", 6, {{"A", "1"}}},
    {"empty value", "X-Empty:\r\nB: 2\r\n\r\n", 18, {{"X-Empty", ""}, {"B", "2"}}},
    {"value only on continuation line", "X-Fold:\r\n   folded\r\n\r\n", 22,
     {{"X-Fold", "folded"}}},
    {"leading blanks trimmed, inner kept", "A: \t  x  y\r\n\r\n", 14, {{"A", "x  y"}}},
    {"obsolete blank before colon", "Subject : hi\r\n\r\n", 16, {{"Subject", "hi"}}},
    {"colons in value", "Date: Sun, 22 Nov 2026 08:28:19 +0000\r\n\r\n", 41,
     {{"Date", "Sun, 22 Nov 2026 08:28:19 +0000"}}},
    {"starts with empty line", "\r\nFrom: a@x.test\r\n", 2, {{NULL, NULL}}},
    {"starts with continuation line", " From: a@x.test\r\n\r\n", 0, {{NULL, NULL}}},
    {"empty input", "", NO_HEADERS, {{NULL, NULL}}},
    {"body lines look like headers", "A: 1\r\n\r\nB: 2\r\n C\r\n", 8, {{"A", "1"}}},
    {"repeated fields kept in order", "Received: one\r\nReceived: two\r\n\r\n", 32,
     {{"Received", "one"}, {"Received", "two"}}},
    {"bare CR inside value is kept", "A: x\ry\r\n\r\n", 10, {{"A", "x\ry"}}},
};

START_TEST(test_parse_headers_table)
{
    const hdr_case *c = &hdr_cases[_i];
    size_t len = strlen(c->data);
    msg_headers hs;
    ck_assert_int_eq(message_parse_headers(c->data, len, &hs), 0);
    size_t want_len = c->header_len == NO_HEADERS ? len : c->header_len;
    ck_assert_msg(hs.header_len == want_len, "%s: header_len %zu, want %zu", c->name,
                  hs.header_len, want_len);
    size_t nwant = 0;
    while (nwant < 8 && c->fields[nwant][0]) nwant++;
    ck_assert_msg(hs.n == nwant, "%s: %zu fields, want %zu", c->name, hs.n, nwant);
    for (size_t i = 0; i < nwant; i++) {
        ck_assert_msg(strcmp(hs.h[i].name, c->fields[i][0]) == 0, "%s: field %zu name '%s'",
                      c->name, i, hs.h[i].name);
        ck_assert_msg(strcmp(hs.h[i].value, c->fields[i][1]) == 0,
                      "%s: field %zu value '%s', want '%s'", c->name, i, hs.h[i].value,
                      c->fields[i][1]);
    }
    message_headers_free(&hs);
}
END_TEST

START_TEST(test_header_get)
{
    const char *data = "From: first@x.test\r\nfrom: second@x.test\r\nX-SES-CONFIGURATION-SET: txn\r\n"
                       "\r\nSubject: in body\r\n";
    msg_headers hs;
    message_parse_headers(data, strlen(data), &hs);
    ck_assert_str_eq(message_header_get(&hs, "FROM"), "first@x.test");
    ck_assert_str_eq(message_header_get(&hs, "x-ses-configuration-set"), "txn");
    ck_assert_ptr_null(message_header_get(&hs, "Subject"));
    ck_assert_ptr_null(message_header_get(&hs, "Fro"));
    message_headers_free(&hs);
}
END_TEST

START_TEST(test_parse_headers_not_nul_terminated)
{
    /* The buffer is used by length only: bytes after len are not read as header. */
    const char data[] = "A: 1\r\nB: 2\r\n\r\nbodyXYZ: 9";
    msg_headers hs;
    message_parse_headers(data, 8, &hs);    /* "A: 1\r\nB:" */
    ck_assert_uint_eq(hs.n, 2);
    ck_assert_str_eq(hs.h[1].value, "");
    ck_assert_uint_eq(hs.header_len, 8);
    message_headers_free(&hs);
}
END_TEST

/* ---- message_parse_addresses ---- */

typedef struct {
    const char *value;
    const char *want[5];            /* NULL-terminated */
} addr_case;

static const addr_case addr_cases[] = {
    {"a@x.test", {"a@x.test"}},
    {"\"Ann\" <ann@example.test>, bob@example.test", {"ann@example.test", "bob@example.test"}},
    {"\"Doe, John\" <john@x.test>", {"john@x.test"}},
    {"\"quoted \\\" quote, comma\" <q@x.test>, r@x.test", {"q@x.test", "r@x.test"}},
    {"Ann Smith <ann@x.test>", {"ann@x.test"}},
    {"=?UTF-8?Q?J=C3=B6rg?= <j@x.test>", {"j@x.test"}},
    {"J. R. Doe <jr@x.test>", {"jr@x.test"}},
    {"undisclosed-recipients:;", {NULL}},
    {"undisclosed-recipients: ;", {NULL}},
    {"Friends: a@x.test, \"B\" <b@y.test>; c@z.test", {"a@x.test", "b@y.test", "c@z.test"}},
    {"Group: ; b@y.test", {"b@y.test"}},
    {"bob@example.test (Bob Smith)", {"bob@example.test"}},
    {"(comment, with comma) bob@example.test", {"bob@example.test"}},
    {"(see <x@evil.test>) a@x.test", {"a@x.test"}},
    {"(nested (comment) here) <a@x.test> (trailing)", {"a@x.test"}},
    {"bob(inner)@example.test", {"bob@example.test"}},
    {"a @ x.test", {"a@x.test"}},
    {"<a@x.test>", {"a@x.test"}},
    {"< a@x.test >", {"a@x.test"}},
    {"<>", {NULL}},
    {"", {NULL}},
    {"   \t ", {NULL}},
    {"(only a comment)", {NULL}},
    {"Undisclosed recipients", {NULL}},
    {"postmaster", {"postmaster"}},
    {"\"john doe\"@example.test", {"\"john doe\"@example.test"}},
    {"a@x.test, , b@y.test,", {"a@x.test", "b@y.test"}},
    {"a@x.test,b@y.test", {"a@x.test", "b@y.test"}},
    {"A <a@x.test>, B <b@y.test>", {"a@x.test", "b@y.test"}},
    {"<@route.test,@r2.test:u@x.test>", {"u@x.test"}},
    {"a@[192.0.2.1]", {"a@[192.0.2.1]"}},
    {"\"x@evil.test\" <a@good.test>", {"a@good.test"}},
    {"x@evil.test <a@good.test>", {"a@good.test"}},
    {"<a@x.test> <b@y.test>", {"a@x.test", "b@y.test"}},
    {"<a@x.test", {"a@x.test"}},
    {"Ann <ann@x.test", {"ann@x.test"}},
    {"MiXeD@Case.TEST", {"MiXeD@Case.TEST"}},
};

START_TEST(test_parse_addresses_table)
{
    const addr_case *c = &addr_cases[_i];
    char **got = NULL;
    size_t n = message_parse_addresses(c->value, &got);
    size_t nwant = 0;
    while (nwant < 5 && c->want[nwant]) nwant++;
    ck_assert_msg(n == nwant, "'%s': %zu addresses (first '%s'), want %zu", c->value, n,
                  n ? got[0] : "", nwant);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(strcmp(got[i], c->want[i]) == 0, "'%s': address %zu is '%s', want '%s'",
                      c->value, i, got[i], c->want[i]);
    message_addresses_free(got, n);
}
END_TEST

START_TEST(test_parse_addresses_unclosed)
{
    /* Unclosed quotes and comments swallow the rest of the value; the parser must stay
     * inside the string and linear. */
    static const char *values[] = {"\"unterminated <a@x.test>", "(unterminated a@x.test",
                                   "a@[unterminated", "\"\\", "(\\", "<", "<<<>>>", ":;:;",
                                   "@", "@@@", ",,,"};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char **got = NULL;
        size_t n = message_parse_addresses(values[i], &got);
        for (size_t j = 0; j < n; j++) ck_assert_ptr_nonnull(got[j]);
        message_addresses_free(got, n);
    }
    char **got = NULL;
    size_t n = message_parse_addresses("(unterminated a@x.test", &got);
    ck_assert_uint_eq(n, 0);
    message_addresses_free(got, n);

    /* A megabyte of openers is read in one pass. */
    size_t big = 1 << 20;
    char *s = malloc(big + 1);
    memset(s, '(', big);
    s[big] = '\0';
    n = message_parse_addresses(s, &got);
    ck_assert_uint_eq(n, 0);
    message_addresses_free(got, n);
    memset(s, '"', big);
    n = message_parse_addresses(s, &got);
    message_addresses_free(got, n);
    free(s);
}
END_TEST

START_TEST(test_parse_addresses_many)
{
    char value[64 * 20] = "";
    for (int i = 0; i < 50; i++) {
        char one[24];
        snprintf(one, sizeof one, "%su%d@x.test", i ? ", " : "", i);
        strcat(value, one);
    }
    char **got = NULL;
    size_t n = message_parse_addresses(value, &got);
    ck_assert_uint_eq(n, 50);
    ck_assert_str_eq(got[0], "u0@x.test");
    ck_assert_str_eq(got[49], "u49@x.test");
    message_addresses_free(got, n);
}
END_TEST

/* ---- message_remove_header ---- */

typedef struct {
    const char *label;
    const char *name;
    const char *in;
    const char *out;
} rm_case;

static const rm_case rm_cases[] = {
    {"one field, case-insensitive", "X-SES-CONFIGURATION-SET",
     "From: a@x.test\r\nX-SES-Configuration-Set: txn\r\nTo: b@y.test\r\n\r\nbody\r\n",
     "From: a@x.test\r\nTo: b@y.test\r\n\r\nbody\r\n"},
    {"every occurrence with continuation lines", "X-A",
     "X-A: 1\r\n 2\r\nB: x\r\nx-a: 3\r\n\t4\r\n\r\nX-A: body\r\n",
     "B: x\r\n\r\nX-A: body\r\n"},
    {"continuations of other fields kept", "X-A",
     "B: 1\r\n b\r\nX-A: 2\r\nC: 3\r\n c\r\n\r\n", "B: 1\r\n b\r\nC: 3\r\n c\r\n\r\n"},
    {"absent: unchanged copy", "X-A", "B: 1\r\n\r\nbody", "B: 1\r\n\r\nbody"},
    {"prefix of a name is not the name", "X-A", "X-AB: 1\r\nX-: 2\r\n\r\n",
     "X-AB: 1\r\nX-: 2\r\n\r\n"},
    {"bare LF", "X-A", "X-A: 1\n more\nB: 2\n\nbody", "B: 2\n\nbody"},
    {"only within the header section", "X-A", "\r\nX-A: 1\r\n", "\r\nX-A: 1\r\n"},
    {"header ended by a non-header line", "X-A", "B: 1\r\nnot header\r\nX-A: 2\r\n",
     "B: 1\r\nnot header\r\nX-A: 2\r\n"},
    {"last field without line end", "X-A", "B: 1\r\nX-A: 2", "B: 1\r\n"},
    {"obsolete blank before colon", "X-A", "X-A : 1\r\nB: 2\r\n\r\n", "B: 2\r\n\r\n"},
    {"all fields removed", "X-A", "X-A: 1\r\n\r\nbody", "\r\nbody"},
    {"empty input", "X-A", "", ""},
};

START_TEST(test_remove_header_table)
{
    const rm_case *c = &rm_cases[_i];
    size_t out_len = 0;
    char *out = message_remove_header(c->in, strlen(c->in), c->name, &out_len);
    ck_assert_msg(out_len == strlen(c->out) && memcmp(out, c->out, out_len) == 0,
                  "%s: got '%.*s'", c->label, (int)out_len, out);
    /* The remaining header still parses to the same fields minus the removed ones. */
    msg_headers before, after;
    message_parse_headers(c->in, strlen(c->in), &before);
    message_parse_headers(out, out_len, &after);
    size_t kept = 0;
    for (size_t i = 0; i < before.n; i++)
        if (strcasecmp(before.h[i].name, c->name) != 0) kept++;
    ck_assert_msg(after.n == kept, "%s: %zu fields after, want %zu", c->label, after.n, kept);
    ck_assert_ptr_null(message_header_get(&after, c->name));
    message_headers_free(&before);
    message_headers_free(&after);
    free(out);
}
END_TEST

START_TEST(test_remove_header_binary_body)
{
    /* The body is copied byte for byte, NULs included. */
    const char in[] = "X-A: 1\r\nB: 2\r\n\r\nbo\0dy";
    size_t in_len = sizeof in - 1, out_len = 0;
    char *out = message_remove_header(in, in_len, "x-a", &out_len);
    const char want[] = "B: 2\r\n\r\nbo\0dy";
    ck_assert_uint_eq(out_len, sizeof want - 1);
    ck_assert(memcmp(out, want, out_len) == 0);
    free(out);
}
END_TEST

static Suite *message_suite(void)
{
    Suite *s = suite_create("message");
    TCase *h = tcase_create("headers");
    tcase_add_loop_test(h, test_parse_headers_table, 0, sizeof hdr_cases / sizeof hdr_cases[0]);
    tcase_add_test(h, test_header_get);
    tcase_add_test(h, test_parse_headers_not_nul_terminated);
    suite_add_tcase(s, h);
    TCase *a = tcase_create("addresses");
    tcase_add_loop_test(a, test_parse_addresses_table, 0,
                        sizeof addr_cases / sizeof addr_cases[0]);
    tcase_add_test(a, test_parse_addresses_unclosed);
    tcase_add_test(a, test_parse_addresses_many);
    suite_add_tcase(s, a);
    TCase *r = tcase_create("remove");
    tcase_add_loop_test(r, test_remove_header_table, 0, sizeof rm_cases / sizeof rm_cases[0]);
    tcase_add_test(r, test_remove_header_binary_body);
    suite_add_tcase(s, r);
    return s;
}

TESTLIB_SUITES(message_suite);
