/* test_smtp_client.c — the pure parts of mta/smtp_client.c: the reply parser (single and
 * multi-line replies, enhanced status codes that must match the reply class, incomplete
 * input, input that is not SMTP, a reply too long to buffer) and the DATA encoder (dot
 * stuffing, line ends normalised to CRLF, the final dot), the 8BITMIME check;
 * smtp_client_parse_ehlo(), the EHLO extension reader that kilnd's delivery and
 * kiln-loadgen share (keywords case-insensitive, ending at a space or '=', the first line
 * never an extension, SIZE with and without a limit); and smtp_client_scan_reply(),
 * kiln-loadgen's allocation-free framing, against the full parser. Table-driven; no
 * sockets. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "mta/smtp_client.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

/* ------------------------------------------------------------------ replies */

static const struct {
    const char *wire;
    int rc;             /* parse result */
    size_t used;        /* bytes consumed when rc == 1 (0: the whole input) */
    int code;
    const char *enhanced;
    const char *text;
    const char *line;
} parse_cases[] = {
    {"250 2.0.0 Ok: queued as 42\r\n", 1, 0, 250, "2.0.0", "Ok: queued as 42", "250 2.0.0 Ok: queued as 42"},
    {"220 mx.example.test ESMTP\r\n", 1, 0, 220, "", "mx.example.test ESMTP", "220 mx.example.test ESMTP"},
    {"250\r\n", 1, 0, 250, "", "", "250"},
    {"354 End data with <CR><LF>.<CR><LF>\n", 1, 0, 354, "", "End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"},
    {"550-5.1.1 The email account that you tried to reach does not exist.\r\n"
     "550-5.1.1 Please try double-checking the recipient's email address.\r\n"
     "550 5.1.1 https://support.example.test/mail\r\n", 1, 0, 550, "5.1.1",
     "The email account that you tried to reach does not exist.\n"
     "Please try double-checking the recipient's email address.\n"
     "https://support.example.test/mail",
     "550 5.1.1 The email account that you tried to reach does not exist. "
     "Please try double-checking the recipient's email address. https://support.example.test/mail"},
    {"250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n", 1, 0, 250, "",
     "mx.example.test\nPIPELINING\nSIZE 1000\n8BITMIME", "250 mx.example.test PIPELINING SIZE 1000 8BITMIME"},
    /* the enhanced code must match the reply's class */
    {"451 5.1.1 odd\r\n", 1, 0, 451, "", "5.1.1 odd", "451 5.1.1 odd"},
    {"452 4.5.3 Too many recipients\r\n250 2.1.5 Ok\r\n", 1, 31, 452, "4.5.3", "Too many recipients", "452 4.5.3 Too many recipients"},
    /* incomplete */
    {"250 2.0.0 Ok", 0, 0, 0, NULL, NULL, NULL},
    {"250-first\r\n250-second\r\n", 0, 0, 0, NULL, NULL, NULL},
    {"", 0, 0, 0, NULL, NULL, NULL},
    /* not SMTP */
    {"HTTP/1.1 400 Bad Request\r\n", -1, 0, 0, NULL, NULL, NULL},
    {"25 short\r\n", -1, 0, 0, NULL, NULL, NULL},
    {"250x no separator\r\n", -1, 0, 0, NULL, NULL, NULL},
    {"650 bad class\r\n", -1, 0, 0, NULL, NULL, NULL},
};

START_TEST(test_parse_reply)
{
    int i = _i;
    const char *w = parse_cases[i].wire;
    smtp_client_reply r;
    size_t used = 0;
    int rc = smtp_client_parse_reply(w, strlen(w), &r, &used);
    ck_assert_msg(rc == parse_cases[i].rc, "case %d: rc %d", i, rc);
    if (rc != 1) return;
    ck_assert_uint_eq(used, parse_cases[i].used ? parse_cases[i].used : strlen(w));
    ck_assert_int_eq(r.code, parse_cases[i].code);
    ck_assert_str_eq(r.enhanced, parse_cases[i].enhanced);
    ck_assert_str_eq(r.text, parse_cases[i].text);
    ck_assert_str_eq(r.line, parse_cases[i].line);
    smtp_client_reply_free(&r);
}
END_TEST

START_TEST(test_parse_reply_too_long)
{
    /* a peer that never ends its reply cannot make kiln buffer without limit */
    size_t n = 70 * 1024;
    char *w = util_malloc(n + 1);
    memcpy(w, "250-", 4);
    memset(w + 4, 'x', n - 4);
    w[n] = '\0';
    smtp_client_reply r;
    size_t used;
    ck_assert_int_eq(smtp_client_parse_reply(w, n, &r, &used), -1);
    free(w);
}
END_TEST

/* ------------------------------------------------------------------ DATA */

static const struct {
    const char *in;
    const char *out;
} encode_cases[] = {
    {"Subject: x\r\n\r\nbody\r\n", "Subject: x\r\n\r\nbody\r\n.\r\n"},
    {"a\r\n.b\r\n", "a\r\n..b\r\n.\r\n"},
    {".\r\n", "..\r\n.\r\n"},
    {"a\r\n.\r\nb", "a\r\n..\r\nb\r\n.\r\n"},
    {"no final line end", "no final line end\r\n.\r\n"},
    {"bare\nlf\n.dot\n", "bare\r\nlf\r\n..dot\r\n.\r\n"},
    {"bare\rcr", "bare\r\ncr\r\n.\r\n"},
    {"", ".\r\n"},
    {"x.y\r\n..z\r\n", "x.y\r\n...z\r\n.\r\n"},
};

START_TEST(test_encode_data)
{
    int i = _i;
    strbuf sb;
    strbuf_init(&sb);
    smtp_client_encode_data(encode_cases[i].in, strlen(encode_cases[i].in), &sb);
    ck_assert_str_eq(sb.buf, encode_cases[i].out);
    strbuf_free(&sb);
}
END_TEST

START_TEST(test_has_8bit)
{
    ck_assert(!smtp_client_has_8bit("plain ascii\r\n", 13));
    ck_assert(smtp_client_has_8bit("caf\xc3\xa9\r\n", 7));
    ck_assert(!smtp_client_has_8bit("", 0));
}
END_TEST

/* ------------------------------------------------------------------ EHLO, scan */

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
    TCase *tc = tcase_create("reply");
    tcase_add_loop_test(tc, test_parse_reply, 0, sizeof parse_cases / sizeof parse_cases[0]);
    tcase_add_test(tc, test_parse_reply_too_long);
    suite_add_tcase(s, tc);

    tc = tcase_create("data");
    tcase_add_loop_test(tc, test_encode_data, 0, sizeof encode_cases / sizeof encode_cases[0]);
    tcase_add_test(tc, test_has_8bit);
    suite_add_tcase(s, tc);

    tc = tcase_create("ehlo");
    tcase_add_loop_test(tc, test_parse_ehlo, 0, (int)(sizeof ehlo_cases / sizeof ehlo_cases[0]));
    suite_add_tcase(s, tc);

    tc = tcase_create("scan");
    tcase_add_loop_test(tc, test_scan_matches_parse, 0,
                        (int)(sizeof scan_cases / sizeof scan_cases[0]));
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(smtp_client_suite);
