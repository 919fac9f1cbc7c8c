/* test_retry.c — scheduler/retry.c: what every SMTP reply and local failure means for a
 * recipient (delivered / deferred with its SES delayType / bounced with its SES
 * bounceType and subtype, suppression), the backoff sequence, and the max_delivery_time
 * boundary, and real replies from the wire (parsed by mta/smtp_client.c, whose own tests
 * are in test_smtp_client.c) through the classifier. Table-driven. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "scheduler/retry.h"
#include "mta/smtp_client.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

/* ------------------------------------------------------------------ replies */

static const struct {
    int code;
    const char *enhanced;
    const char *text;
    retry_verdict verdict;
    const char *type;      /* delay type (DEFER) or bounce type (BOUNCE) */
    const char *subtype;   /* bounce subtype */
    const char *status;
    bool suppress;
} reply_cases[] = {
    /* 2xx */
    {250, "2.0.0", "Ok queued as 1234", RETRY_DELIVERED, NULL, NULL, "2.0.0", false},
    {250, NULL, "Ok", RETRY_DELIVERED, NULL, NULL, "2.0.0", false},
    {251, "2.1.5", "User not local; will forward", RETRY_DELIVERED, NULL, NULL, "2.1.5", false},
    {250, "", "Ok", RETRY_DELIVERED, NULL, NULL, "2.0.0", false},
    /* 4xx */
    {421, NULL, "Service not available, closing channel", RETRY_DEFER, "RecipientServerError", NULL, "4.0.0", false},
    {451, "4.3.0", "Temporary local problem", RETRY_DEFER, "RecipientServerError", NULL, "4.3.0", false},
    {452, "4.5.3", "Too many recipients", RETRY_DEFER, "RecipientServerError", NULL, "4.5.3", false},
    {450, "4.2.2", "Mailbox full", RETRY_DEFER, "MailboxFull", NULL, "4.2.2", false},
    {452, "4.2.2", "over quota", RETRY_DEFER, "MailboxFull", NULL, "4.2.2", false},
    {452, NULL, "Mailbox is full", RETRY_DEFER, "MailboxFull", NULL, "4.0.0", false},
    {450, NULL, "user is over quota", RETRY_DEFER, "MailboxFull", NULL, "4.0.0", false},
    {451, "4.7.1", "Greylisted, try again later", RETRY_DEFER, "SpamDetected", NULL, "4.7.1", false},
    {421, "4.7.0", "IP not in whitelist, poor reputation", RETRY_DEFER, "SpamDetected", NULL, "4.7.0", false},
    {450, "4.7.26", "unauthenticated mail is rate limited", RETRY_DEFER, "SpamDetected", NULL, "4.7.26", false},
    {451, NULL, "Message looks like SPAM", RETRY_DEFER, "SpamDetected", NULL, "4.0.0", false},
    /* an enhanced code of another class than the reply is ignored: the text decides */
    {450, "5.2.2", "mailbox full", RETRY_DEFER, "MailboxFull", NULL, "4.0.0", false},
    {451, "4.4.1x", "garbled", RETRY_DEFER, "RecipientServerError", NULL, "4.0.0", false},
    /* 5xx: always a Permanent bounce, suppressed */
    {550, "5.1.1", "No such user here", RETRY_BOUNCE, "Permanent", "NoEmail", "5.1.1", true},
    {550, "5.1.10", "Recipient address rejected: null MX", RETRY_BOUNCE, "Permanent", "NoEmail", "5.1.10", true},
    {550, "5.1.0", "Address rejected", RETRY_BOUNCE, "Permanent", "General", "5.1.0", true},
    {550, NULL, "User unknown", RETRY_BOUNCE, "Permanent", "NoEmail", "5.0.0", true},
    {550, NULL, "mailbox does not exist", RETRY_BOUNCE, "Permanent", "NoEmail", "5.0.0", true},
    {550, NULL, "Requested action not taken: mailbox unavailable", RETRY_BOUNCE, "Permanent", "General", "5.0.0", true},
    {552, "5.2.2", "Mailbox full", RETRY_BOUNCE, "Permanent", "General", "5.2.2", true},
    {552, "5.3.4", "Message too big", RETRY_BOUNCE, "Permanent", "General", "5.3.4", true},
    {554, "5.7.1", "Message rejected as spam", RETRY_BOUNCE, "Permanent", "General", "5.7.1", true},
    {553, "5.1.3", "Bad destination mailbox address syntax", RETRY_BOUNCE, "Permanent", "General", "5.1.3", true},
    {554, "4.7.1", "class mismatch", RETRY_BOUNCE, "Permanent", "General", "5.0.0", true},
    {550, "5.1.1", "", RETRY_BOUNCE, "Permanent", "NoEmail", "5.1.1", true},
    /* not a final reply, or not SMTP: try again */
    {354, NULL, "Start mail input", RETRY_DEFER, "Undetermined", NULL, "4.0.0", false},
    {0, NULL, "garbage", RETRY_DEFER, "Undetermined", NULL, "4.0.0", false},
    {600, NULL, "out of range", RETRY_DEFER, "Undetermined", NULL, "4.0.0", false},
};

START_TEST(test_classify_reply)
{
    int i = _i;
    retry_class c;
    retry_verdict v = retry_classify_reply(reply_cases[i].code, reply_cases[i].enhanced,
                                           reply_cases[i].text, &c);
    ck_assert_msg(v == reply_cases[i].verdict, "case %d (%d %s): verdict %s", i,
                  reply_cases[i].code, reply_cases[i].text, retry_verdict_name(v));
    ck_assert_int_eq(c.verdict, v);
    ck_assert_str_eq(c.status, reply_cases[i].status);
    ck_assert_int_eq(c.suppress, reply_cases[i].suppress);
    if (v == RETRY_DEFER) {
        ck_assert_str_eq(c.delay_type, reply_cases[i].type);
        ck_assert_ptr_null(c.bounce_type);
    } else if (v == RETRY_BOUNCE) {
        ck_assert_str_eq(c.bounce_type, reply_cases[i].type);
        ck_assert_str_eq(c.bounce_subtype, reply_cases[i].subtype);
        ck_assert_ptr_null(c.delay_type);
    } else {
        ck_assert_ptr_null(c.delay_type);
        ck_assert_ptr_null(c.bounce_type);
    }
    /* out is optional */
    ck_assert_int_eq(retry_classify_reply(reply_cases[i].code, reply_cases[i].enhanced,
                                          reply_cases[i].text, NULL), v);
}
END_TEST

/* ------------------------------------------------------------------ failures */

static const struct {
    retry_failure f;
    retry_verdict verdict;
    const char *type;
    const char *subtype;
    const char *status;
    bool suppress;
} failure_cases[] = {
    {RETRY_FAIL_CONNECT, RETRY_DEFER, "TransientCommunicationFailure", NULL, "4.4.1", false},
    {RETRY_FAIL_TLS, RETRY_DEFER, "TransientCommunicationFailure", NULL, "4.7.5", false},
    {RETRY_FAIL_TLS_REQUIRED, RETRY_DEFER, "TransientCommunicationFailure", NULL, "4.7.10", false},
    {RETRY_FAIL_DNS_TEMP, RETRY_DEFER, "TransientCommunicationFailure", NULL, "4.4.3", false},
    {RETRY_FAIL_IP, RETRY_DEFER, "IPFailure", NULL, "4.4.0", false},
    {RETRY_FAIL_INTERNAL, RETRY_DEFER, "InternalFailure", NULL, "4.3.0", false},
    {RETRY_FAIL_DNS_NXDOMAIN, RETRY_BOUNCE, "Permanent", "General", "5.1.2", true},
    {RETRY_FAIL_DNS_NULLMX, RETRY_BOUNCE, "Permanent", "General", "5.1.10", true},
    {RETRY_FAIL_DNS_NOHOST, RETRY_BOUNCE, "Permanent", "General", "5.4.4", true},
    {RETRY_FAIL_TOO_BIG, RETRY_BOUNCE, "Permanent", "General", "5.3.4", false},
    {RETRY_FAIL_PRIVATE_MX, RETRY_BOUNCE, "Permanent", "General", "5.4.4", true},
    {RETRY_FAIL_LOOP, RETRY_BOUNCE, "Permanent", "General", "5.4.6", false},
    {RETRY_FAIL_UNSIGNED, RETRY_DEFER, "InternalFailure", NULL, "4.7.0", false},
    {RETRY_FAIL_UNSIGNED_REJECT, RETRY_BOUNCE, "Permanent", "General", "5.7.0", false},
    {RETRY_FAIL_MAIL_FROM_MX, RETRY_BOUNCE, "Permanent", "General", "5.7.0", false},
    {RETRY_FAIL_MAIL_FROM_PENDING, RETRY_DEFER, "InternalFailure", NULL, "4.7.0", false},
    {RETRY_FAIL_UNSENDABLE, RETRY_BOUNCE, "Permanent", "General", "5.6.0", false},
};

START_TEST(test_classify_failure)
{
    int i = _i;
    retry_class c;
    ck_assert_int_eq(retry_classify_failure(failure_cases[i].f, &c), failure_cases[i].verdict);
    ck_assert_str_eq(c.status, failure_cases[i].status);
    ck_assert_int_eq(c.suppress, failure_cases[i].suppress);
    if (c.verdict == RETRY_DEFER) {
        ck_assert_str_eq(c.delay_type, failure_cases[i].type);
    } else {
        ck_assert_str_eq(c.bounce_type, failure_cases[i].type);
        ck_assert_str_eq(c.bounce_subtype, failure_cases[i].subtype);
    }
}
END_TEST

START_TEST(test_classify_expired)
{
    retry_class c;
    retry_classify_expired(&c);
    ck_assert_int_eq(c.verdict, RETRY_BOUNCE);
    ck_assert_str_eq(c.bounce_type, "Transient");
    ck_assert_str_eq(c.bounce_subtype, "General");
    ck_assert_str_eq(c.status, "4.4.7");
    ck_assert(!c.suppress);
}
END_TEST

/* ------------------------------------------------------------------ backoff and expiry */

static config *backoff_cfg(int64_t first, int64_t max, double factor)
{
    config *c = testlib_config_new();
    testlib_config_set_retry(c, first, max, factor);
    return c;
}

START_TEST(test_backoff_sequence)
{
    config *c = backoff_cfg(60000, 3600000, 2);
    static const int64_t want_s[] = {60, 120, 240, 480, 960, 1920, 3600, 3600, 3600};
    for (int a = 1; a <= 9; a++)
        ck_assert_int_eq(retry_next_delay_ms(c, a), want_s[a - 1] * 1000);
    ck_assert_int_eq(retry_next_delay_ms(c, 0), 60000);
    ck_assert_int_eq(retry_next_delay_ms(c, -3), 60000);
    ck_assert_int_eq(retry_next_delay_ms(c, 100000), 3600000);

    config *f15 = backoff_cfg(1000, 10000, 1.5);
    static const int64_t want15[] = {1000, 1500, 2250, 3375, 5062, 7593, 10000, 10000};
    for (int a = 1; a <= 8; a++) ck_assert_int_eq(retry_next_delay_ms(f15, a), want15[a - 1]);

    config *flat = backoff_cfg(5000, 3600000, 1);
    ck_assert_int_eq(retry_next_delay_ms(flat, 50), 5000);
    config_unref(c);
    config_unref(f15);
    config_unref(flat);
}
END_TEST

START_TEST(test_retry_schedule_with_clock)
{
    /* a recipient that fails every time: attempts at 0, 60 s, 180 s, ..., then every hour,
     * until the next attempt would fall after created + 14 h: then it bounces */
    config *c = backoff_cfg(60000, 3600000, 2);
    const int64_t created = 1700000000000LL;
    const int64_t max_time = 14LL * 3600 * 1000;
    int64_t now = created;
    int attempts = 0;
    int64_t times[64];
    for (;;) {
        ck_assert_int_lt(attempts, 64);
        times[attempts++] = now - created;
        int64_t next = now + retry_next_delay_ms(c, attempts);
        if (retry_expired(created, next, max_time)) break;
        now = next;   /* the injected clock jumps to the retry */
    }
    ck_assert_int_eq(attempts, 19);
    ck_assert_int_eq(times[1], 60000);
    ck_assert_int_eq(times[2], 180000);
    ck_assert_int_eq(times[6], 3780000);
    ck_assert_int_eq(times[7], 7380000);
    ck_assert_int_eq(times[18], 46980000);
    ck_assert_int_le(times[18], max_time);
    config_unref(c);
}
END_TEST

START_TEST(test_expiry_boundary)
{
    const int64_t created = 1000;
    const int64_t max_time = 14LL * 3600 * 1000;
    ck_assert(!retry_expired(created, created, max_time));
    ck_assert(!retry_expired(created, created + max_time - 1, max_time));
    ck_assert(!retry_expired(created, created + max_time, max_time));
    ck_assert(retry_expired(created, created + max_time + 1, max_time));
    /* a short max_delivery_time (5 minutes) */
    ck_assert(!retry_expired(created, created + 300000, 300000));
    ck_assert(retry_expired(created, created + 300001, 300000));
}
END_TEST

/* ------------------------------------------------------------------ the wire */

START_TEST(test_wire_to_outcome)
{
    /* what the scheduler does with a reply: parse, then classify */
    static const struct {
        const char *wire;
        retry_verdict v;
        const char *kind;
    } cases[] = {
        {"250 2.0.0 Ok: queued\r\n", RETRY_DELIVERED, NULL},
        {"550-5.1.1 No such\r\n550 5.1.1 user\r\n", RETRY_BOUNCE, "NoEmail"},
        {"452-4.2.2 The recipient's inbox is out of storage space.\r\n452 4.2.2 Try again later\r\n", RETRY_DEFER, "MailboxFull"},
        {"421 4.7.0 Try again later, closing connection.\r\n", RETRY_DEFER, "SpamDetected"},
        {"451 Temporary failure\r\n", RETRY_DEFER, "RecipientServerError"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        smtp_client_reply r;
        size_t used;
        ck_assert_int_eq(smtp_client_parse_reply(cases[i].wire, strlen(cases[i].wire), &r, &used), 1);
        retry_class c;
        ck_assert_int_eq(retry_classify_reply(r.code, r.enhanced, r.text, &c), cases[i].v);
        if (cases[i].v == RETRY_BOUNCE) ck_assert_str_eq(c.bounce_subtype, cases[i].kind);
        if (cases[i].v == RETRY_DEFER) ck_assert_str_eq(c.delay_type, cases[i].kind);
        smtp_client_reply_free(&r);
    }
}
END_TEST

static Suite *retry_suite(void)
{
    Suite *s = suite_create("retry");
    TCase *tc = tcase_create("classify");
    tcase_add_loop_test(tc, test_classify_reply, 0, sizeof reply_cases / sizeof reply_cases[0]);
    tcase_add_loop_test(tc, test_classify_failure, 0,
                        sizeof failure_cases / sizeof failure_cases[0]);
    tcase_add_test(tc, test_classify_expired);
    suite_add_tcase(s, tc);

    tc = tcase_create("backoff");
    tcase_add_test(tc, test_backoff_sequence);
    tcase_add_test(tc, test_retry_schedule_with_clock);
    tcase_add_test(tc, test_expiry_boundary);
    suite_add_tcase(s, tc);

    tc = tcase_create("wire");
    tcase_add_test(tc, test_wire_to_outcome);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(retry_suite);
