/* test_unsub.c — the header fields of a marked configuration set (mta/unsub.c): the exact
 * List-Unsubscribe / List-Unsubscribe-Post / Feedback-ID text a receiver sees, variables
 * filled in and percent-encoded (plus signs, quotes, '%', UTF-8 of a recipient), folding at
 * 78 columns between the URLs (never inside one), the caps (a URL past UNSUB_URL_MAX is an
 * error, not a broken header), and the message as sent: kiln's fields on top, the
 * submitter's List-Unsubscribe, List-Unsubscribe-Post and Feedback-ID gone (only those the
 * set replaces), the body untouched, header-only and body-only messages, bare LF lines read
 * as mta/message.c reads them. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/config.h"
#include "base/util.h"
#include "mta/message.h"
#include "mta/unsub.h"
#include "tests/unit/testlib.h"

#define ONE_CLICK "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"

/* A set as config_load leaves it (strings on the heap; NULL = key absent). */
static config_set set_of(const char *name, const char *url, const char *mailto,
                         const char *feedback_id)
{
    config_set s;
    memset(&s, 0, sizeof s);
    s.name = util_strdup(name);
    s.unsub_url = url ? util_strdup(url) : NULL;
    s.unsub_mailto = mailto ? util_strdup(mailto) : NULL;
    s.feedback_id = feedback_id ? util_strdup(feedback_id) : NULL;
    return s;
}

static void set_free(config_set *s)
{
    free(s->name);
    free(s->unsub_url);
    free(s->unsub_mailto);
    free(s->feedback_id);
}

/* unsub_fields, which must succeed. */
static char *fields_ok(const config_set *s, const char *id, const char *rcpt)
{
    char *err = NULL;
    char *f = unsub_fields(s, id, rcpt, &err);
    ck_assert_msg(f != NULL, "unsub_fields: %s", err ? err : "?");
    return f;
}

/* Every line of text (CRLF-terminated) is at most max columns. */
static void assert_lines_within(const char *text, size_t max)
{
    for (const char *p = text; *p;) {
        const char *e = strstr(p, "\r\n");
        ck_assert_msg(e != NULL, "line without CRLF: %s", p);
        ck_assert_msg((size_t)(e - p) <= max, "line of %zu columns: %.*s", (size_t)(e - p),
                      (int)(e - p), p);
        p = e + 2;
    }
}

/* ------------------------------------------------------------------ the fields */

START_TEST(test_exact_fields)
{
    /* the example of the issue: URL and mailto do not fit one line, folded between them */
    config_set s = set_of("marketing", "https://example.com/unsub?id={message_id}&r={recipient}",
                          "unsubscribe@example.com", "campaign:marketing:kiln");
    char *f = fields_ok(&s, "m1", "bob@example.net");
    ck_assert_str_eq(f, "List-Unsubscribe: <https://example.com/unsub?id=m1&r=bob%40example.net>,\r\n"
                        " <mailto:unsubscribe@example.com?subject=unsubscribe>\r\n"
                        ONE_CLICK
                        "Feedback-ID: campaign:marketing:kiln\r\n");
    free(f);
    set_free(&s);

    /* short enough for one line; no feedback_id */
    s = set_of("news", "https://e.test/u", "u@e.test", NULL);
    f = fields_ok(&s, "m2", NULL);
    ck_assert_str_eq(f, "List-Unsubscribe: <https://e.test/u>, <mailto:u@e.test?subject=unsubscribe>\r\n"
                        ONE_CLICK);
    free(f);
    set_free(&s);

    /* no mailto: the https URL alone */
    s = set_of("news", "https://e.test/u/{configuration_set}?m={message_id}", NULL, NULL);
    f = fields_ok(&s, "0000018bcfe56800-1b2c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d-000000", "x@y.z");
    ck_assert_str_eq(f, "List-Unsubscribe: <https://e.test/u/news?m=0000018bcfe56800-1b2c3d4e-"
                        "5f60-4a1b-8c2d-3e4f5a6b7c8d-000000>\r\n" ONE_CLICK);
    free(f);
    set_free(&s);

    /* feedback_id alone: no List-Unsubscribe at all */
    s = set_of("txn", NULL, NULL, "a:b:c:kiln");
    ck_assert(unsub_marked(&s));
    f = fields_ok(&s, "m3", "x@y.z");
    ck_assert_str_eq(f, "Feedback-ID: a:b:c:kiln\r\n");
    free(f);
    set_free(&s);

    /* not marked: nothing */
    s = set_of("plain", NULL, NULL, NULL);
    ck_assert(!unsub_marked(&s));
    ck_assert(!unsub_marked(NULL));
    f = fields_ok(&s, "m4", "x@y.z");
    ck_assert_str_eq(f, "");
    free(f);
    set_free(&s);
}
END_TEST

/* Every byte of a value outside A-Z a-z 0-9 - . _ ~ is percent-encoded: nothing a recipient
 * address holds can end the URL, its angle brackets or the field. */
START_TEST(test_percent_encoding)
{
    static const struct {
        const char *rcpt, *want;
    } cases[] = {
        {"bob+news@example.net", "bob%2Bnews%40example.net"},
        {"\"odd person\"+tag%~x_y-z.@\xe4\xbe\x8b\xe3\x81\x88.jp",
         "%22odd%20person%22%2Btag%25~x_y-z.%40%E4%BE%8B%E3%81%88.jp"},
        {"<a>,b@c", "%3Ca%3E%2Cb%40c"},
        {"a\r\nBcc: x@evil.test", "a%0D%0ABcc%3A%20x%40evil.test"},
        {"O'Brien/Ops=1?#&@Example.COM", "O%27Brien%2FOps%3D1%3F%23%26%40Example.COM"},
    };
    config_set s = set_of("n", "https://e.test/u?r={recipient}", NULL, NULL);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *f = fields_ok(&s, "m", cases[i].rcpt);
        char want[300];
        snprintf(want, sizeof want, "List-Unsubscribe: <https://e.test/u?r=%s>\r\n" ONE_CLICK,
                 cases[i].want);
        ck_assert_str_eq(f, want);
        free(f);
    }
    set_free(&s);
}
END_TEST

/* Long values fold at blanks before column 78; unfolding gives the value back; a single
 * URL longer than a line is never broken. */
START_TEST(test_folding)
{
    char url[200];
    snprintf(url, sizeof url, "https://unsubscribe.example.com/%s?r={recipient}",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    config_set s = set_of("n", url, "unsubscribe@example.com",
                          "one two three four five six seven eight nine ten eleven twelve "
                          "thirteen fourteen fifteen sixteen");
    char *f = fields_ok(&s, "m", "r@e.test");
    ck_assert_str_eq(f,
                     "List-Unsubscribe: <https://unsubscribe.example.com/aaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa?r=r%40e.test>,\r\n"
                     " <mailto:unsubscribe@example.com?subject=unsubscribe>\r\n" ONE_CLICK
                     "Feedback-ID: one two three four five six seven eight nine ten eleven twelve\r\n"
                     " thirteen fourteen fifteen sixteen\r\n");
    /* what a reader of the message gets back: the values as configured */
    msg_headers hs;
    message_parse_headers(f, strlen(f), &hs);
    ck_assert_uint_eq(hs.n, 3);
    ck_assert_str_eq(message_header_get(&hs, "Feedback-ID"), s.feedback_id);
    ck_assert_str_eq(message_header_get(&hs, "List-Unsubscribe"),
                     "<https://unsubscribe.example.com/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa?r=r%40e.test>, "
                     "<mailto:unsubscribe@example.com?subject=unsubscribe>");
    message_headers_free(&hs);
    free(f);
    set_free(&s);

    /* every line within 78 columns when the parts fit */
    s = set_of("n", "https://e.test/unsubscribe/{message_id}", "unsubscribe-requests@example.com",
               "CampaignID:CustomerID:MailType:SenderId");
    f = fields_ok(&s, "m-42", NULL);
    assert_lines_within(f, 78);
    ck_assert_ptr_nonnull(strstr(f, ">,\r\n <mailto:"));
    free(f);
    set_free(&s);
}
END_TEST

/* Caps: a URL that would pass UNSUB_URL_MAX once filled in is an error naming the set and
 * the recipient; so is {recipient} without a recipient. */
START_TEST(test_caps_and_errors)
{
    char url[CONFIG_UNSUB_URL_MAX + 1];
    size_t n = (size_t)snprintf(url, sizeof url, "https://e.test/u?r={recipient}&t=");
    while (n < CONFIG_UNSUB_URL_MAX) url[n++] = 'a';
    url[n] = '\0';
    config_set s = set_of("big", url, NULL, NULL);
    char rcpt[255];
    memset(rcpt, '+', 200);
    snprintf(rcpt + 200, sizeof rcpt - 200, "@e.test");   /* 600 bytes encoded */
    char *err = NULL;
    ck_assert_ptr_null(unsub_fields(&s, "m", rcpt, &err));
    ck_assert_msg(err && strstr(err, "configuration set big: the List-Unsubscribe URL for +++") &&
                      strstr(err, "would be longer than 960 bytes"),
                  "%s", err ? err : "(no error)");
    free(err);
    char *out = (char *)"x";
    size_t out_len = 9;
    err = NULL;
    ck_assert_int_eq(unsub_apply(&s, "m", rcpt, "S: x\r\n", 6, &out, &out_len, &err), -1);
    ck_assert_ptr_null(out);
    ck_assert_ptr_nonnull(err);
    free(err);

    /* an ordinary recipient fits: the line stays under RFC 5322's 998 */
    char *f = fields_ok(&s, "m", "someone.with.a.long.name+tag@subdomain.example.com");
    const char *eol = strstr(f, "\r\n");
    ck_assert_uint_le((size_t)(eol - f), 998);
    free(f);

    err = NULL;
    ck_assert_ptr_null(unsub_fields(&s, "m", NULL, &err));
    ck_assert_msg(err && strstr(err, "names {recipient} and no recipient was given"), "%s",
                  err ? err : "(no error)");
    free(err);
    set_free(&s);
}
END_TEST

/* ------------------------------------------------------------------ the message */

static const char *const FIELDS =
    "List-Unsubscribe: <https://e.test/u>\r\n" ONE_CLICK "Feedback-ID: k:1\r\n";

static char *insert(const char *msg, const char *fields, size_t *n)
{
    char *out = unsub_insert(msg, strlen(msg), fields, n);
    ck_assert_uint_eq(strlen(out), *n);
    return out;
}

START_TEST(test_insert_replaces_submitter_fields)
{
    const char *msg = "Received: from app (app [192.0.2.1])\r\n\tby mta.example.test\r\n"
                      "List-Unsubscribe: <mailto:old@app.test>,\r\n <https://app.test/old>\r\n"
                      "Subject: hi\r\n"
                      "list-unsubscribe-post: List-Unsubscribe=One-Click\r\n"
                      "List-Subscribe: <mailto:sub@app.test>\r\n"
                      "List-Id: News <news.app.test>\r\n"
                      "FEEDBACK-ID: old:id\r\n"
                      "List-Unsubscribe : <https://app.test/obsolete-form>\r\n"
                      "\r\n"
                      "body\r\n"
                      "List-Unsubscribe: <in the body, stays>\r\n";
    size_t n;
    char *out = insert(msg, FIELDS, &n);
    ck_assert_str_eq(out, "List-Unsubscribe: <https://e.test/u>\r\n" ONE_CLICK
                          "Feedback-ID: k:1\r\n"
                          "Received: from app (app [192.0.2.1])\r\n\tby mta.example.test\r\n"
                          "Subject: hi\r\n"
                          "List-Subscribe: <mailto:sub@app.test>\r\n"
                          "List-Id: News <news.app.test>\r\n"
                          "\r\n"
                          "body\r\n"
                          "List-Unsubscribe: <in the body, stays>\r\n");
    /* as the next hop reads it: kiln's values, once each */
    msg_headers hs;
    message_parse_headers(out, n, &hs);
    size_t lu = 0;
    for (size_t i = 0; i < hs.n; i++) lu += strcasecmp(hs.h[i].name, "List-Unsubscribe") == 0;
    ck_assert_uint_eq(lu, 1);
    ck_assert_str_eq(message_header_get(&hs, "List-Unsubscribe"), "<https://e.test/u>");
    ck_assert_str_eq(message_header_get(&hs, "Feedback-ID"), "k:1");
    message_headers_free(&hs);
    free(out);

    /* a set with feedback_id only replaces Feedback-ID and leaves the submitter's
     * List-Unsubscribe alone */
    out = insert(msg, "Feedback-ID: k:1\r\n", &n);
    ck_assert_ptr_nonnull(strstr(out, "List-Unsubscribe: <mailto:old@app.test>,\r\n <https://"));
    ck_assert_ptr_nonnull(strstr(out, "list-unsubscribe-post: List-Unsubscribe=One-Click\r\n"));
    ck_assert_ptr_null(strstr(out, "old:id"));
    ck_assert(strncmp(out, "Feedback-ID: k:1\r\nReceived: ", 28) == 0);
    free(out);
}
END_TEST

START_TEST(test_insert_shapes)
{
    size_t n;
    char *out;
    /* header only, no empty line, no body */
    out = insert("Subject: x\r\n", FIELDS, &n);
    ck_assert_str_eq(out, "List-Unsubscribe: <https://e.test/u>\r\n" ONE_CLICK
                          "Feedback-ID: k:1\r\nSubject: x\r\n");
    free(out);
    /* header only, its last field (one to remove) without a line end */
    out = insert("Subject: x\r\nFeedback-ID: old", "Feedback-ID: k:1\r\n", &n);
    ck_assert_str_eq(out, "Feedback-ID: k:1\r\nSubject: x\r\n");
    free(out);
    /* empty header section, then the body */
    out = insert("\r\nbody\r\n", "Feedback-ID: k:1\r\n", &n);
    ck_assert_str_eq(out, "Feedback-ID: k:1\r\n\r\nbody\r\n");
    free(out);
    /* a field of any name is header */
    out = insert("hello: world\r\n", "Feedback-ID: k:1\r\n", &n);
    ck_assert_str_eq(out, "Feedback-ID: k:1\r\nhello: world\r\n");
    free(out);
    /* no header at all: an empty line keeps the body body */
    out = insert("just text\r\nList-Unsubscribe: <x>\r\n", "Feedback-ID: k:1\r\n", &n);
    ck_assert_str_eq(out, "Feedback-ID: k:1\r\n\r\njust text\r\nList-Unsubscribe: <x>\r\n");
    free(out);
    /* a stray continuation line first would otherwise join kiln's last field */
    out = insert(" folded\r\nSubject: x\r\n", "Feedback-ID: k:1\r\n", &n);
    ck_assert_str_eq(out, "Feedback-ID: k:1\r\n\r\n folded\r\nSubject: x\r\n");
    free(out);
    /* nothing at all */
    out = insert("", "Feedback-ID: k:1\r\n", &n);
    ck_assert_str_eq(out, "Feedback-ID: k:1\r\n");
    free(out);
    /* no fields: a copy */
    out = insert("Subject: x\r\nFeedback-ID: theirs\r\n\r\nb", "", &n);
    ck_assert_str_eq(out, "Subject: x\r\nFeedback-ID: theirs\r\n\r\nb");
    free(out);
    /* NUL bytes in the body travel as they are */
    static const char nul[] = "Subject: x\r\n\r\na\0b";
    out = unsub_insert(nul, sizeof nul - 1, "Feedback-ID: k:1\r\n", &n);
    ck_assert_uint_eq(n, 18 + sizeof nul - 1);
    ck_assert(memcmp(out + 18, nul, sizeof nul - 1) == 0);
    free(out);
}
END_TEST

/* kiln spools CRLF (bare LF is refused at submission); a bare LF is still read as a line
 * end, as mta/message.c reads it, and the submitter's lines keep their endings. */
START_TEST(test_insert_bare_lf)
{
    size_t n;
    char *out = insert("Subject: x\nList-Unsubscribe: <a>\n\tfolded\nTo: t@e.test\n\n"
                       "body\nFeedback-ID: body\n",
                       FIELDS, &n);
    ck_assert_str_eq(out, "List-Unsubscribe: <https://e.test/u>\r\n" ONE_CLICK
                          "Feedback-ID: k:1\r\n"
                          "Subject: x\nTo: t@e.test\n\nbody\nFeedback-ID: body\n");
    msg_headers hs;
    message_parse_headers(out, n, &hs);
    ck_assert_uint_eq(hs.n, 5);
    ck_assert_str_eq(message_header_get(&hs, "To"), "t@e.test");
    message_headers_free(&hs);
    free(out);
}
END_TEST

/* unsub_apply: the fields of the set for the recipient, in the message; an unmarked set
 * leaves the message alone (0, no copy). */
START_TEST(test_apply)
{
    config_set s = set_of("m", "https://e.test/u?r={recipient}", "u@e.test", "f:1");
    const char *msg = "Subject: x\r\nList-Unsubscribe: <https://theirs.test/>\r\n\r\nbody\r\n";
    char *out = NULL, *err = NULL;
    size_t n = 0;
    ck_assert_int_eq(unsub_apply(&s, "id1", "ann@e.test", msg, strlen(msg), &out, &n, &err), 1);
    ck_assert_str_eq(out, "List-Unsubscribe: <https://e.test/u?r=ann%40e.test>,\r\n"
                          " <mailto:u@e.test?subject=unsubscribe>\r\n" ONE_CLICK
                          "Feedback-ID: f:1\r\nSubject: x\r\n\r\nbody\r\n");
    ck_assert_uint_eq(n, strlen(out));
    free(out);
    set_free(&s);

    s = set_of("plain", NULL, NULL, NULL);
    out = (char *)"x";
    ck_assert_int_eq(unsub_apply(&s, "id1", "ann@e.test", msg, strlen(msg), &out, &n, &err), 0);
    ck_assert_ptr_null(out);
    ck_assert_ptr_null(err);
    set_free(&s);
}
END_TEST

static Suite *unsub_suite(void)
{
    Suite *s = suite_create("unsub");
    TCase *tc = tcase_create("fields");
    tcase_add_test(tc, test_exact_fields);
    tcase_add_test(tc, test_percent_encoding);
    tcase_add_test(tc, test_folding);
    tcase_add_test(tc, test_caps_and_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("message");
    tcase_add_test(tc, test_insert_replaces_submitter_fields);
    tcase_add_test(tc, test_insert_shapes);
    tcase_add_test(tc, test_insert_bare_lf);
    tcase_add_test(tc, test_apply);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(unsub_suite);
