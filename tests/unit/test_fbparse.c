/* test_fbparse.c — the feedback parser (mta/fbparse.c) as the daemon will see it: every
 * sample of tests/feedback/ (Postfix, Exim, qmail, Yahoo, Gmail and Exchange bounces, a
 * delay, ARF abuse / auth-failure / not-spam reports, automatic replies, plain mail,
 * malformed reports and MIME bombs) gives exactly the kind, shape and fields its entry in
 * tests/feedback/expected.json lists (fields not listed must be NULL), with LF and CRLF line
 * ends alike; the SES classification table (status and diagnostic -> bounceType and
 * bounceSubType); each limit (bytes, depth, parts, recipients, field length) turning the
 * report MALFORMED with a reason naming it; a spoofed "bounce" from an ordinary sender not
 * taken for one. */
#include <check.h>
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/fbparse.h"
#include "tests/unit/testlib.h"

#define FEEDBACK_DIR KILN_SRCDIR "/tests/feedback"

static char *read_sample(const char *name, size_t *len)
{
    char *path = util_asprintf("%s/%s", FEEDBACK_DIR, name);
    char *s = testlib_read_file(path, len);
    ck_assert_msg(s != NULL, "cannot read %s", path);
    free(path);
    return s;
}

static fbparse_kind parse_sample(const char *name, const char *envelope_from,
                                 const fbparse_limits *l, fbparse_report *r)
{
    size_t len;
    char *msg = read_sample(name, &len);
    fbparse_init();
    fbparse_kind k = fbparse_message(msg, len, envelope_from, l, r);
    free(msg);
    return k;
}

/* got must be NULL when the expectation has no such key, else equal to it. */
static void check_str(const char *file, const char *field, json_t *exp, const char *got)
{
    json_t *v = json_object_get(exp, field);
    if (!v || json_is_null(v)) {
        ck_assert_msg(got == NULL, "%s: %s is \"%s\", expected none", file, field, got);
        return;
    }
    ck_assert_msg(got != NULL, "%s: %s is missing, expected \"%s\"", file, field,
                  json_string_value(v));
    ck_assert_msg(strcmp(got, json_string_value(v)) == 0, "%s: %s is \"%s\", expected \"%s\"",
                  file, field, got, json_string_value(v));
}

static void check_contains(const char *file, const char *field, json_t *exp, const char *key,
                           const char *got)
{
    json_t *v = json_object_get(exp, key);
    if (!v) return;
    ck_assert_msg(got && strstr(got, json_string_value(v)), "%s: %s \"%s\" lacks \"%s\"", file,
                  field, got ? got : "(null)", json_string_value(v));
}

static void check_sample(const char *file, json_t *exp)
{
    json_t *ef = json_object_get(exp, "envelope_from");
    const char *envelope = ef ? json_string_value(ef) : "";
    fbparse_report r;
    fbparse_kind k = parse_sample(file, envelope, NULL, &r);
    ck_assert_msg(r.why != NULL && *r.why, "%s: no why", file);
    ck_assert_msg(strcmp(fbparse_kind_name(k), json_string_value(json_object_get(exp, "kind"))) == 0,
                  "%s: kind %s (%s), expected %s", file, fbparse_kind_name(k), r.why,
                  json_string_value(json_object_get(exp, "kind")));
    ck_assert_int_eq(r.kind, k);
    check_contains(file, "why", exp, "why_contains", r.why);
    check_str(file, "shape", exp, r.shape);
    check_str(file, "reporting_mta", exp, r.reporting_mta);
    json_t *rcpts = json_object_get(exp, "rcpts");
    size_t n = rcpts ? json_array_size(rcpts) : 0;
    ck_assert_msg(r.nrcpts == n, "%s: %zu recipients, expected %zu", file, r.nrcpts, n);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(rcpts, i);
        char *what = util_asprintf("%s rcpt %zu", file, i);
        check_str(what, "address", e, r.rcpts[i].address);
        check_str(what, "action", e, r.rcpts[i].action);
        check_str(what, "status", e, r.rcpts[i].status);
        check_str(what, "bounce_type", e, r.rcpts[i].bounce_type);
        check_str(what, "bounce_subtype", e, r.rcpts[i].bounce_subtype);
        check_contains(what, "diagnostic", e, "diagnostic_contains", r.rcpts[i].diagnostic);
        free(what);
    }
    check_str(file, "feedback_type", exp, r.feedback_type);
    check_str(file, "user_agent", exp, r.user_agent);
    check_str(file, "arf_arrival_date", exp, r.arf_arrival_date);
    check_str(file, "original_mail_from", exp, r.original_mail_from);
    check_str(file, "source_ip", exp, r.source_ip);
    json_t *orcpt = json_object_get(exp, "original_rcpt_to");
    n = orcpt ? json_array_size(orcpt) : 0;
    ck_assert_msg(r.noriginal_rcpt_to == n, "%s: %zu Original-Rcpt-To, expected %zu", file,
                  r.noriginal_rcpt_to, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_str_eq(r.original_rcpt_to[i], json_string_value(json_array_get(orcpt, i)));
    check_str(file, "orig_message_id", exp, r.orig_message_id);
    check_str(file, "orig_return_path", exp, r.orig_return_path);
    check_str(file, "orig_kiln_message_id", exp, r.orig_kiln_message_id);
    check_str(file, "orig_feedback_id", exp, r.orig_feedback_id);
    check_str(file, "orig_from", exp, r.orig_from);
    check_str(file, "orig_to", exp, r.orig_to);
    fbparse_report_free(&r);
}

static json_t *load_expected(void)
{
    json_error_t err;
    json_t *doc = json_load_file(FEEDBACK_DIR "/expected.json", 0, &err);
    ck_assert_msg(doc != NULL, "expected.json:%d: %s", err.line, err.text);
    json_t *samples = json_object_get(doc, "samples");
    ck_assert(json_is_object(samples));
    json_incref(samples);
    json_decref(doc);
    return samples;
}

/* Every sample as expected.json says, and every *.eml listed there. */
START_TEST(test_corpus)
{
    json_t *samples = load_expected();
    DIR *d = opendir(FEEDBACK_DIR);
    ck_assert(d != NULL);
    struct dirent *e;
    size_t seen = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 4 || strcmp(e->d_name + l - 4, ".eml") != 0) continue;
        json_t *exp = json_object_get(samples, e->d_name);
        ck_assert_msg(exp != NULL, "%s has no entry in expected.json", e->d_name);
        check_sample(e->d_name, exp);
        seen++;
    }
    closedir(d);
    ck_assert_msg(seen == json_object_size(samples), "%zu samples, expected.json lists %zu", seen,
                  json_object_size(samples));
    ck_assert_uint_ge(seen, 21);
    json_decref(samples);
}
END_TEST

/* The same samples with their line ends swapped (LF <-> CRLF) parse to the same result. */
START_TEST(test_line_ends)
{
    static const char *const files[] = {"postfix-unknown-user.eml", "gmail-dsn.eml",
                                        "exim-x-failed.eml", "qmail.eml", "arf-abuse.eml"};
    fbparse_init();
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        size_t len;
        char *msg = read_sample(files[i], &len);
        strbuf sb;
        strbuf_init(&sb);
        bool crlf = strstr(msg, "\r\n") != NULL;
        for (size_t j = 0; j < len; j++) {
            if (crlf && msg[j] == '\r' && msg[j + 1] == '\n') continue;
            if (!crlf && msg[j] == '\n') strbuf_append(&sb, "\r", 1);
            strbuf_append(&sb, &msg[j], 1);
        }
        fbparse_report a, b;
        fbparse_message(msg, len, "", NULL, &a);
        fbparse_message(sb.buf, sb.len, "", NULL, &b);
        ck_assert_str_eq(fbparse_kind_name(a.kind), fbparse_kind_name(b.kind));
        ck_assert_str_eq(a.shape, b.shape);
        ck_assert_uint_eq(a.nrcpts, b.nrcpts);
        for (size_t j = 0; j < a.nrcpts; j++) {
            ck_assert_str_eq(a.rcpts[j].address, b.rcpts[j].address);
            ck_assert_str_eq(a.rcpts[j].diagnostic, b.rcpts[j].diagnostic);
        }
        ck_assert_str_eq(a.orig_message_id, b.orig_message_id);
        ck_assert_str_eq(a.orig_return_path, b.orig_return_path);
        fbparse_report_free(&a);
        fbparse_report_free(&b);
        strbuf_free(&sb);
        free(msg);
    }
}
END_TEST

START_TEST(test_classify_table)
{
    static const struct {
        const char *status, *diag, *type, *subtype;
    } t[] = {
        {"5.1.1", "smtp; 550 5.1.1 user unknown", "Permanent", "NoEmail"},
        {"5.1.10", "smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound", "Permanent", "NoEmail"},
        {"5.1.2", NULL, "Permanent", "NoEmail"},
        {"5.2.2", "smtp; 552 5.2.2 over quota", "Transient", "MailboxFull"},
        {"4.2.2", "smtp; 452 4.2.2 Mailbox full", "Transient", "MailboxFull"},
        {"5.3.4", "smtp; 552 5.3.4 Message size exceeds fixed limit", "Permanent",
         "MessageTooLarge"},
        {"5.2.3", NULL, "Permanent", "MessageTooLarge"},
        {"4.3.4", NULL, "Transient", "MessageTooLarge"},
        {"5.7.1", "smtp; 550 5.7.1 Message rejected as spam", "Permanent", "ContentRejected"},
        {"5.7.1", "smtp; 550 5.7.1 This attachment type is not allowed", "Permanent",
         "AttachmentRejected"},
        {"5.7.1", "smtp; 550 5.7.1 Relaying denied", "Permanent", "General"},
        {"5.6.0", NULL, "Permanent", "ContentRejected"},
        {"4.4.7", "X-Postfix; delivery time expired", "Transient", "General"},
        {"4.7.1", "smtp; 451 4.7.1 greylisted", "Transient", "General"},
        {"5.0.0", "smtp; 550 no such user here", "Permanent", "NoEmail"},
        {"5.4.4", "X-Postfix; Host or domain name not found", "Permanent", "General"},
        {NULL, "user unknown", "Permanent", "NoEmail"},
        {NULL, "550 5.1.1 <a@b>: Recipient address rejected", "Permanent", "NoEmail"},
        {NULL, "554: delivery error: dd This user doesn't have a yahoo.com account", "Permanent",
         "NoEmail"},
        {NULL, "421 try again later", "Transient", "General"},
        {NULL, "mailbox full", "Transient", "MailboxFull"},
        {NULL, "something went wrong", "Undetermined", "Undetermined"},
        {NULL, NULL, "Undetermined", "Undetermined"},
        {"bogus", NULL, "Undetermined", "Undetermined"},
        {"2.0.0", NULL, "Undetermined", "Undetermined"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        const char *type = NULL, *sub = NULL;
        fbparse_classify(t[i].status, t[i].diag, &type, &sub);
        ck_assert_msg(strcmp(type, t[i].type) == 0 && strcmp(sub, t[i].subtype) == 0,
                      "%s / %s: %s/%s, expected %s/%s", t[i].status ? t[i].status : "(null)",
                      t[i].diag ? t[i].diag : "(null)", type, sub, t[i].type, t[i].subtype);
    }
}
END_TEST

static void expect_malformed(const char *file, const fbparse_limits *l, const char *reason)
{
    fbparse_report r;
    fbparse_kind k = parse_sample(file, "", l, &r);
    ck_assert_msg(k == FBPARSE_MALFORMED && strstr(r.why, reason),
                  "%s: %s (%s), expected malformed with \"%s\"", file, fbparse_kind_name(k),
                  r.why, reason);
    ck_assert_uint_eq(r.nrcpts, 0);   /* nothing half-read to act on */
    ck_assert_ptr_null(r.shape);
    fbparse_report_free(&r);
}

START_TEST(test_limits)
{
    fbparse_limits d, l;
    fbparse_default_limits(&d);
    ck_assert_uint_eq(d.max_bytes, 10u * 1024 * 1024);
    ck_assert_int_eq(d.max_depth, 8);
    ck_assert_int_eq(d.max_parts, 100);
    ck_assert_int_eq(d.max_recipients, 100);
    ck_assert_uint_eq(d.max_field, 998);

    l = d;
    l.max_bytes = 1000;
    expect_malformed("postfix-unknown-user.eml", &l, "over the limit of 1000");
    l = d;
    l.max_depth = 2;   /* the quoted original's body sits at depth 3 */
    expect_malformed("postfix-unknown-user.eml", &l, "nesting deeper than 2");
    l = d;
    l.max_parts = 5;   /* Gmail's report has 9 parts */
    expect_malformed("gmail-dsn.eml", &l, "more than 5 MIME parts");
    l = d;
    l.max_recipients = 1;
    expect_malformed("mailbox-full.eml", &l, "more than 1 recipient");
    expect_malformed("qmail.eml", &l, "more than 1 recipient");
    l = d;
    l.max_field = 12;  /* cut, not refused */
    fbparse_report r;
    ck_assert_int_eq(parse_sample("postfix-remote-550.eml", "", &l, &r), FBPARSE_DSN);
    ck_assert_str_eq(r.rcpts[0].diagnostic, "smtp; 550 5.");
    fbparse_report_free(&r);
    /* a flat bomb: thousands of empty parts are refused before GMime builds them */
    strbuf sb;
    strbuf_init(&sb);
    strbuf_puts(&sb, "From: MAILER-DAEMON@x.example\nContent-Type: multipart/mixed; "
                     "boundary=b\n\n");
    for (int i = 0; i < 5000; i++) strbuf_puts(&sb, "--b\n\n");
    fbparse_init();
    ck_assert_int_eq(fbparse_message(sb.buf, sb.len, "", NULL, &r), FBPARSE_MALFORMED);
    ck_assert_ptr_nonnull(strstr(r.why, "boundary lines"));
    fbparse_report_free(&r);
    strbuf_free(&sb);
}
END_TEST

/* A qmail-shaped text from an ordinary sender is not a bounce (it could suppress anyone);
 * an empty or non-message input is NONE; a DSN stays a DSN whatever its envelope. */
START_TEST(test_envelope_and_junk)
{
    const char *spoof = "From: Mallory <m@evil.example>\nSubject: hi\n\n"
                        "Hi. This is the qmail-send program at x.\n\n<victim@example.org>:\n"
                        "Sorry, no mailbox here by that name. (#5.1.1)\n";
    fbparse_report r;
    fbparse_init();
    ck_assert_int_eq(fbparse_message(spoof, strlen(spoof), "m@evil.example", NULL, &r),
                     FBPARSE_NONE);
    ck_assert_uint_eq(r.nrcpts, 0);
    fbparse_report_free(&r);
    ck_assert_int_eq(fbparse_message(spoof, strlen(spoof), "", NULL, &r), FBPARSE_DSN);
    ck_assert_str_eq(r.rcpts[0].address, "victim@example.org");
    fbparse_report_free(&r);
    ck_assert_int_eq(fbparse_message("", 0, NULL, NULL, &r), FBPARSE_NONE);
    ck_assert_ptr_nonnull(r.why);
    fbparse_report_free(&r);
    ck_assert_int_eq(parse_sample("postfix-unknown-user.eml", "someone@example.org", NULL, &r),
                     FBPARSE_DSN);
    fbparse_report_free(&r);
    ck_assert_str_eq(fbparse_kind_name(FBPARSE_DSN), "DSN");
    ck_assert_str_eq(fbparse_kind_name(FBPARSE_ARF), "ARF");
    ck_assert_str_eq(fbparse_kind_name(FBPARSE_AUTOREPLY), "autoreply");
    ck_assert_str_eq(fbparse_kind_name(FBPARSE_NONE), "none");
    ck_assert_str_eq(fbparse_kind_name(FBPARSE_MALFORMED), "malformed");
}
END_TEST

/* ARF Arrival-Date values as reports write them become SES's arrivalDate instant. */
START_TEST(test_date)
{
    fbparse_init();
    ck_assert_int_eq(fbparse_date_ms("Thu, 03 Dec 2026 17:00:00 +0000"), 1796317200000LL);
    ck_assert_int_eq(fbparse_date_ms("Thu, 8 Mar 2005 17:00:00 -0500"), 1110319200000LL);
    ck_assert_int_eq(fbparse_date_ms("not a date"), -1);
    ck_assert_int_eq(fbparse_date_ms(""), -1);
    ck_assert_int_eq(fbparse_date_ms(NULL), -1);
}
END_TEST

static Suite *fbparse_suite(void)
{
    Suite *s = suite_create("fbparse");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_corpus);
    tcase_add_test(tc, test_line_ends);
    tcase_add_test(tc, test_classify_table);
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_envelope_and_junk);
    tcase_add_test(tc, test_date);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(fbparse_suite);
