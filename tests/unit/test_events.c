/* test_events.c — SES event JSON (mta/events.c), the drain of the spool outbox to file
 * destinations, and message acceptance (mta/accept.c): Received:/Message-ID: handling,
 * suppression and mailbox-simulator outcomes, the ooto auto-reply, all against a real
 * spool in a temporary directory with a fixed clock. Every JSON check parses the output. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mta/accept.h"
#include "mta/events.h"
#include "base/kiln.h"
#include "base/log.h"
#include "mta/message.h"
#include "scheduler/scheduler.h"
#include "store/spool.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

#define T0 INT64_C(1700000000123)          /* 2023-11-14T22:13:20.123Z */
#define T0_ISO "2023-11-14T22:13:20.123Z"
#define SIM "@simulator.amazonses.com"

/* accept.c tells the scheduler about committed messages; this double records the calls
 * (scheduler/scheduler.c is not linked into this test). */
static char sched_calls[8][80];
static int nsched_calls;
void scheduler_message_committed(scheduler *s, const char *id)
{
    (void)s;
    if (nsched_calls < 8) snprintf(sched_calls[nsched_calls], 80, "%s", id);
    nsched_calls++;
}

/* ------------------------------------------------------------------ JSON helpers ---- */

static json_t *parse(const char *s)
{
    json_error_t e;
    ck_assert_msg(s != NULL, "no JSON text");
    ck_assert_msg(strchr(s, '\n') == NULL, "event is not one line: %s", s);
    json_t *j = json_loads(s, 0, &e);
    ck_assert_msg(j != NULL, "not JSON (%s): %s", e.text, s);
    return j;
}

/* Value at a dotted path ("mail.tags.ses:source-ip"), or NULL. */
static json_t *at(json_t *j, const char *path)
{
    char *p = util_strdup(path), *save = NULL;
    for (char *k = strtok_r(p, ".", &save); k && j; k = strtok_r(NULL, ".", &save))
        j = json_object_get(j, k);
    free(p);
    return j;
}

static const char *str_at(json_t *j, const char *path)
{
    json_t *v = at(j, path);
    ck_assert_msg(json_is_string(v), "%s is not a string", path);
    return json_string_value(v);
}

static json_int_t int_at(json_t *j, const char *path)
{
    json_t *v = at(j, path);
    ck_assert_msg(json_is_integer(v), "%s is not a JSON integer", path);
    return json_integer_value(v);
}

/* The object's keys are exactly keys (NULL-terminated), in this order. */
static void assert_keys(json_t *obj, const char *const *keys, const char *what)
{
    ck_assert_msg(json_is_object(obj), "%s is not an object", what);
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        ck_assert_msg(keys[i] != NULL, "%s: unexpected key %s", what, k);
        ck_assert_msg(strcmp(k, keys[i]) == 0, "%s: key %zu is %s, want %s", what, i, k,
                      keys[i]);
        i++;
    }
    ck_assert_msg(keys[i] == NULL, "%s: missing key %s", what, keys[i]);
}

/* The array is exactly these strings. */
static void assert_strs(json_t *arr, const char *const *want, size_t n, const char *what)
{
    ck_assert_msg(json_is_array(arr), "%s is not an array", what);
    ck_assert_msg(json_array_size(arr) == n, "%s has %zu entries, want %zu", what,
                  json_array_size(arr), n);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        ck_assert_msg(json_is_string(v), "%s[%zu] is not a string", what, i);
        ck_assert_msg(strcmp(json_string_value(v), want[i]) == 0, "%s[%zu] is \"%s\", want \"%s\"",
                      what, i, json_string_value(v), want[i]);
    }
}

static void assert_one(json_t *arr, const char *want, const char *what)
{
    assert_strs(arr, &want, 1, what);
}

/* SES-style ID: 16 hex digits, a UUID v4, "-000000". */
static void assert_ses_id(const char *id, const char *what)
{
    ck_assert_msg(strlen(id) == 60, "%s %s is not 60 characters", what, id);
    for (size_t i = 0; i < 53; i++) {
        bool dash = i == 16 || i == 25 || i == 30 || i == 35 || i == 40;
        ck_assert_msg(dash ? id[i] == '-' : strchr("0123456789abcdef", id[i]) != NULL,
                      "%s %s: bad character at %zu", what, id, i);
    }
    ck_assert_msg(id[31] == '4', "%s %s is not a version 4 UUID", what, id);
    ck_assert_msg(strchr("89ab", id[36]) != NULL, "%s %s: bad UUID variant", what, id);
    ck_assert_str_eq(id + 53, "-000000");
}

/* ---------------------------------------------------------------- mail objects ---- */

static const char sample_msg[] =
    "From: \"Ann Sender\" <ann@Example.TEST>\r\n"
    "To: bob@dest.test, \"Carol, C.\" <carol@dest.test>\r\n"
    "Cc: dave@dest.test\r\n"
    "Bcc: hidden@dest.test\r\n"
    "Subject: Hello\r\n"
    " world\r\n"
    "Date: Sun, 22 Nov 2026 08:28:19 +0000\r\n"
    "Message-ID: <abc@example.test>\r\n"
    "X-Raw: caf\xe9\r\n"
    "\r\n"
    "Body\r\n";

static char *const sample_dest[] = {"bob@dest.test", "carol@dest.test"};

static char *sample_mail_json(const char *data)
{
    msg_headers hs;
    message_parse_headers(data, strlen(data), &hs);
    events_mail_in in = {
        .message_id = "msg-1",
        .timestamp_ms = T0,
        .source = "bounces@example.test",
        .sending_account_id = "123456789012",
        .destination = sample_dest,
        .ndestination = 2,
        .headers = &hs,
        .config_set = "txn",
        .source_ip = "192.0.2.7",
    };
    char *s = events_mail_json(&in);
    message_headers_free(&hs);
    return s;
}

START_TEST(test_mail_object_fields)
{
    char *s = sample_mail_json(sample_msg);
    json_t *m = parse(s);
    static const char *const keys[] = {"timestamp", "messageId", "source", "sendingAccountId",
                                       "destination", "headersTruncated", "headers",
                                       "commonHeaders", "tags", NULL};
    assert_keys(m, keys, "mail");
    ck_assert_str_eq(str_at(m, "timestamp"), T0_ISO);
    ck_assert_str_eq(str_at(m, "messageId"), "msg-1");
    ck_assert_str_eq(str_at(m, "source"), "bounces@example.test");
    ck_assert_str_eq(str_at(m, "sendingAccountId"), "123456789012");
    assert_strs(at(m, "destination"), (const char *const *)sample_dest, 2, "destination");
    ck_assert_msg(json_is_false(at(m, "headersTruncated")), "headersTruncated is not false");

    static const char *const names[] = {"From", "To", "Cc", "Bcc", "Subject", "Date",
                                        "Message-ID", "X-Raw"};
    static const char *const values[] = {
        "\"Ann Sender\" <ann@Example.TEST>", "bob@dest.test, \"Carol, C.\" <carol@dest.test>",
        "dave@dest.test", "hidden@dest.test", "Hello world", "Sun, 22 Nov 2026 08:28:19 +0000",
        "<abc@example.test>", "caf\xef\xbf\xbd"};
    json_t *hs = at(m, "headers");
    ck_assert_uint_eq(json_array_size(hs), 8);
    for (size_t i = 0; i < 8; i++) {
        static const char *const hkeys[] = {"name", "value", NULL};
        assert_keys(json_array_get(hs, i), hkeys, "header");
        ck_assert_str_eq(str_at(json_array_get(hs, i), "name"), names[i]);
        ck_assert_str_eq(str_at(json_array_get(hs, i), "value"), values[i]);
    }

    json_t *ch = at(m, "commonHeaders");
    static const char *const ckeys[] = {"from", "to", "cc", "messageId", "subject", "date",
                                        NULL};
    assert_keys(ch, ckeys, "commonHeaders");
    assert_one(at(ch, "from"), "\"Ann Sender\" <ann@Example.TEST>", "from");
    static const char *const to[] = {"bob@dest.test", "\"Carol, C.\" <carol@dest.test>"};
    assert_strs(at(ch, "to"), to, 2, "to");
    assert_one(at(ch, "cc"), "dave@dest.test", "cc");
    ck_assert_str_eq(str_at(ch, "messageId"), "<abc@example.test>");
    ck_assert_str_eq(str_at(ch, "subject"), "Hello world");
    ck_assert_str_eq(str_at(ch, "date"), "Sun, 22 Nov 2026 08:28:19 +0000");

    json_t *tags = at(m, "tags");
    static const char *const tkeys[] = {"ses:configuration-set", "ses:source-ip",
                                        "ses:from-domain", "ses:caller-identity", NULL};
    assert_keys(tags, tkeys, "tags");
    assert_one(at(tags, "ses:configuration-set"), "txn", "configuration-set tag");
    assert_one(at(tags, "ses:source-ip"), "192.0.2.7", "source-ip tag");
    assert_one(at(tags, "ses:from-domain"), "example.test", "from-domain tag");
    assert_one(at(tags, "ses:caller-identity"), "kiln", "caller-identity tag");
    json_decref(m);
    free(s);
}
END_TEST

START_TEST(test_mail_object_minimal)
{
    /* Only the fields present appear in commonHeaders; the From domain falls back to the
     * envelope sender's. */
    char *s = sample_mail_json("Subject: only this\r\n\r\nx\r\n");
    json_t *m = parse(s);
    static const char *const ckeys[] = {"subject", NULL};
    assert_keys(at(m, "commonHeaders"), ckeys, "commonHeaders");
    assert_one(at(m, "tags.ses:from-domain"), "example.test", "from-domain tag");
    json_decref(m);
    free(s);

    s = sample_mail_json("To: undisclosed-recipients:;\r\n\r\n");
    m = parse(s);
    assert_one(at(m, "commonHeaders.to"), "undisclosed-recipients:;", "group");
    json_decref(m);
    free(s);
}
END_TEST

START_TEST(test_mail_object_truncated)
{
    strbuf sb;
    strbuf_init(&sb);
    for (int i = 0; i < 200; i++) {
        strbuf_printf(&sb, "X-Filler-%03d: ", i);
        for (int k = 0; k < 90; k++) strbuf_puts(&sb, "a");
        strbuf_puts(&sb, "\r\n");
    }
    strbuf_puts(&sb, "Subject: after the cap\r\n\r\nbody\r\n");
    char *s = sample_mail_json(sb.buf);
    json_t *m = parse(s);
    ck_assert_msg(json_is_true(at(m, "headersTruncated")), "headersTruncated is not true");
    json_t *hs = at(m, "headers");
    size_t total = 0, n = json_array_size(hs);
    ck_assert_msg(n > 50 && n < 200, "kept %zu of 201 headers", n);
    for (size_t i = 0; i < n; i++)
        total += strlen(str_at(json_array_get(hs, i), "name")) +
                 strlen(str_at(json_array_get(hs, i), "value"));
    ck_assert_msg(total <= 10240, "kept %zu bytes of headers, cap is 10240", total);
    ck_assert_str_eq(str_at(json_array_get(hs, 0), "name"), "X-Filler-000");
    /* commonHeaders still come from the whole header section. */
    ck_assert_str_eq(str_at(m, "commonHeaders.subject"), "after the cap");
    json_decref(m);
    free(s);
    strbuf_free(&sb);

    s = sample_mail_json(sample_msg);
    m = parse(s);
    ck_assert_msg(json_is_false(at(m, "headersTruncated")), "a small message is truncated");
    json_decref(m);
    free(s);
}
END_TEST

/* ---------------------------------------------------------------------- events ---- */

/* Checks eventType, the top-level keys and the mail object; returns the per-type body. */
static json_t *check_event(json_t *ev, const char *type, const char *key,
                           const char *outgoing_ip)
{
    const char *const keys[] = {"eventType", "mail", key, NULL};
    assert_keys(ev, keys, "event");
    ck_assert_str_eq(str_at(ev, "eventType"), type);
    ck_assert_str_eq(str_at(ev, "mail.messageId"), "msg-1");
    ck_assert_str_eq(str_at(ev, "mail.commonHeaders.subject"), "Hello world");
    assert_one(at(ev, "mail.tags.ses:configuration-set"), "txn", "configuration-set tag");
    if (outgoing_ip)
        assert_one(at(ev, "mail.tags.ses:outgoing-ip"), outgoing_ip, "outgoing-ip tag");
    else
        ck_assert_msg(at(ev, "mail.tags.ses:outgoing-ip") == NULL, "unexpected outgoing-ip");
    return at(ev, key);
}

START_TEST(test_event_send_reject)
{
    char *mail = sample_mail_json(sample_msg);
    char *s = events_send(mail);
    json_t *ev = parse(s);
    static const char *const none[] = {NULL};
    assert_keys(check_event(ev, "Send", "send", NULL), none, "send");
    json_decref(ev);
    free(s);

    s = events_reject(mail, "Bad content");
    ev = parse(s);
    static const char *const rkeys[] = {"reason", NULL};
    json_t *r = check_event(ev, "Reject", "reject", NULL);
    assert_keys(r, rkeys, "reject");
    ck_assert_str_eq(str_at(r, "reason"), "Bad content");
    json_decref(ev);
    free(s);
    free(mail);
}
END_TEST

START_TEST(test_event_delivery)
{
    char *mail = sample_mail_json(sample_msg);
    char *s = events_delivery(mail, "127.0.0.10", T0 + 1500, 1500, sample_dest, 2,
                              "250 2.0.0 Ok: queued as 4Xyz", "dsn; mta.example.test",
                              "127.0.0.1");
    json_t *ev = parse(s);
    json_t *d = check_event(ev, "Delivery", "delivery", "127.0.0.10");
    static const char *const keys[] = {"timestamp", "processingTimeMillis", "recipients",
                                       "smtpResponse", "reportingMTA", "remoteMtaIp", NULL};
    assert_keys(d, keys, "delivery");
    ck_assert_str_eq(str_at(d, "timestamp"), "2023-11-14T22:13:21.623Z");
    ck_assert_int_eq(int_at(d, "processingTimeMillis"), 1500);
    assert_strs(at(d, "recipients"), (const char *const *)sample_dest, 2, "recipients");
    ck_assert_str_eq(str_at(d, "smtpResponse"), "250 2.0.0 Ok: queued as 4Xyz");
    ck_assert_str_eq(str_at(d, "reportingMTA"), "dsn; mta.example.test");
    ck_assert_str_eq(str_at(d, "remoteMtaIp"), "127.0.0.1");
    /* The stored tags come first; ses:outgoing-ip is added after them. */
    static const char *const tkeys[] = {"ses:configuration-set", "ses:source-ip",
                                        "ses:from-domain", "ses:caller-identity",
                                        "ses:outgoing-ip", NULL};
    assert_keys(at(ev, "mail.tags"), tkeys, "tags");
    json_decref(ev);
    free(s);
    free(mail);
}
END_TEST

START_TEST(test_event_bounce)
{
    char *mail = sample_mail_json(sample_msg);
    events_rcpt_status rs[] = {
        {"bob@dest.test", "failed", "5.1.1", "smtp; 550 5.1.1 no such user"},
        {"carol@dest.test", NULL, NULL, NULL},
    };
    char *s = events_bounce(mail, "127.0.0.11", T0, "Permanent", "General", rs, 2,
                            "dsn; mta.example.test", "192.0.2.25");
    json_t *ev = parse(s);
    json_t *b = check_event(ev, "Bounce", "bounce", "127.0.0.11");
    static const char *const keys[] = {"bounceType", "bounceSubType", "bouncedRecipients",
                                       "timestamp", "feedbackId", "reportingMTA",
                                       "remoteMtaIp", NULL};
    assert_keys(b, keys, "bounce");
    ck_assert_str_eq(str_at(b, "bounceType"), "Permanent");
    ck_assert_str_eq(str_at(b, "bounceSubType"), "General");
    ck_assert_str_eq(str_at(b, "timestamp"), T0_ISO);
    assert_ses_id(str_at(b, "feedbackId"), "feedbackId");
    ck_assert_str_eq(str_at(b, "reportingMTA"), "dsn; mta.example.test");
    ck_assert_str_eq(str_at(b, "remoteMtaIp"), "192.0.2.25");
    json_t *list = at(b, "bouncedRecipients");
    ck_assert_uint_eq(json_array_size(list), 2);
    static const char *const rkeys[] = {"emailAddress", "action", "status", "diagnosticCode",
                                        NULL};
    json_t *r0 = json_array_get(list, 0);
    assert_keys(r0, rkeys, "bouncedRecipients[0]");
    ck_assert_str_eq(str_at(r0, "emailAddress"), "bob@dest.test");
    ck_assert_str_eq(str_at(r0, "action"), "failed");
    ck_assert_str_eq(str_at(r0, "status"), "5.1.1");
    ck_assert_str_eq(str_at(r0, "diagnosticCode"), "smtp; 550 5.1.1 no such user");
    static const char *const r1keys[] = {"emailAddress", "action", NULL};
    assert_keys(json_array_get(list, 1), r1keys, "bouncedRecipients[1]");
    ck_assert_str_eq(str_at(json_array_get(list, 1), "action"), "failed");
    json_decref(ev);
    free(s);

    /* Without a remote MTA (a bounce decided by kiln), remoteMtaIp is left out. */
    s = events_bounce(mail, NULL, T0, "Transient", "General", rs, 1, "dsn; mta.example.test",
                      NULL);
    ev = parse(s);
    b = check_event(ev, "Bounce", "bounce", NULL);
    ck_assert_msg(at(b, "remoteMtaIp") == NULL, "remoteMtaIp without a remote MTA");
    ck_assert_str_eq(str_at(b, "bounceType"), "Transient");
    json_decref(ev);
    free(s);
    free(mail);
}
END_TEST

START_TEST(test_event_delay)
{
    char *mail = sample_mail_json(sample_msg);
    events_rcpt_status rs[] = {{"bob@dest.test", NULL, "4.4.7", "smtp; 421 4.4.7 try later"}};
    int64_t exp = T0 + INT64_C(14) * 3600 * 1000;
    char *s = events_delay(mail, "127.0.0.12", T0, "TransientCommunicationFailure", exp, rs, 1,
                           "dsn; mta.example.test", "192.0.2.25");
    json_t *ev = parse(s);
    json_t *d = check_event(ev, "DeliveryDelay", "deliveryDelay", "127.0.0.12");
    static const char *const keys[] = {"timestamp", "delayType", "expirationTime",
                                       "delayedRecipients", "reportingMTA", "remoteMtaIp",
                                       NULL};
    assert_keys(d, keys, "deliveryDelay");
    ck_assert_str_eq(str_at(d, "timestamp"), T0_ISO);
    ck_assert_str_eq(str_at(d, "delayType"), "TransientCommunicationFailure");
    ck_assert_str_eq(str_at(d, "expirationTime"), "2023-11-15T12:13:20.123Z");
    json_t *r = json_array_get(at(d, "delayedRecipients"), 0);
    static const char *const rkeys[] = {"emailAddress", "status", "diagnosticCode", NULL};
    assert_keys(r, rkeys, "delayedRecipients[0]");
    ck_assert_str_eq(str_at(r, "emailAddress"), "bob@dest.test");
    ck_assert_str_eq(str_at(r, "status"), "4.4.7");
    ck_assert_str_eq(str_at(r, "diagnosticCode"), "smtp; 421 4.4.7 try later");
    json_decref(ev);
    free(s);
    free(mail);
}
END_TEST

START_TEST(test_event_complaint)
{
    char *mail = sample_mail_json(sample_msg);
    char *s = events_complaint(mail, T0, sample_dest, 1, "abuse", "kiln mailbox simulator", T0);
    json_t *ev = parse(s);
    json_t *c = check_event(ev, "Complaint", "complaint", NULL);
    static const char *const keys[] = {"complainedRecipients", "timestamp", "feedbackId",
                                       "complaintSubType", "complaintFeedbackType", "userAgent",
                                       "arrivalDate", NULL};
    assert_keys(c, keys, "complaint");
    json_t *r = json_array_get(at(c, "complainedRecipients"), 0);
    static const char *const rkeys[] = {"emailAddress", NULL};
    assert_keys(r, rkeys, "complainedRecipients[0]");
    ck_assert_str_eq(str_at(r, "emailAddress"), "bob@dest.test");
    ck_assert_str_eq(str_at(c, "timestamp"), T0_ISO);
    assert_ses_id(str_at(c, "feedbackId"), "feedbackId");
    ck_assert_msg(json_is_null(at(c, "complaintSubType")), "complaintSubType is not null");
    ck_assert_str_eq(str_at(c, "complaintFeedbackType"), "abuse");
    ck_assert_str_eq(str_at(c, "userAgent"), "kiln mailbox simulator");
    ck_assert_str_eq(str_at(c, "arrivalDate"), T0_ISO);
    json_decref(ev);
    free(s);
    free(mail);
}
END_TEST

/* Blanks the value of every "feedbackId" (random) so two events can be compared. */
static void blank_feedback_ids(char *s)
{
    for (char *p = s; (p = strstr(p, "\"feedbackId\":\"")) != NULL;) {
        p += strlen("\"feedbackId\":\"");
        for (; *p && *p != '"'; p++) *p = 'x';
    }
}

/* Events are built around the mail object's text when kiln wrote it; any other text is
 * parsed and written again. Both paths give the same bytes, with ses:outgoing-ip last in
 * the tags: the sample object, and the same object with a space added (parsed), through
 * every builder. An outgoing IP that would need escaping takes the parsing path. */
START_TEST(test_event_splice_equals_parse)
{
    char *mail = sample_mail_json(sample_msg);
    ck_assert_ptr_nonnull(strstr(mail, "\"ses:caller-identity\":[\"kiln\"]}}"));
    char *spaced = util_asprintf("%s ", mail);
    events_rcpt_status rs[] = {{"bob@dest.test", "failed", "5.1.1", "smtp; 550 5.1.1 no"}};
    for (int k = 0; k < 2; k++) {
        const char *ip = k == 0 ? "127.0.0.10" : "2001:db8::a";
        char *a[5], *b[5];
        const char *m[2] = {mail, spaced};
        char **out[2] = {a, b};
        for (int w = 0; w < 2; w++) {
            out[w][0] = events_reject(m[w], "Bad content");
            out[w][1] = events_delivery(m[w], ip, T0 + 1500, 1500, sample_dest, 2, "250 ok",
                                        "dsn; mta.example.test", "127.0.0.1");
            out[w][2] = events_bounce(m[w], ip, T0, "Permanent", "General", rs, 1,
                                      "dsn; mta.example.test", NULL);
            out[w][3] = events_delay(m[w], ip, T0, "TransientCommunicationFailure", T0 + 1000,
                                     rs, 1, NULL, "127.0.0.1");
            out[w][4] = events_complaint(m[w], T0, sample_dest, 1, "abuse", "ua", T0);
        }
        for (int i = 0; i < 5; i++) {
            blank_feedback_ids(a[i]);
            blank_feedback_ids(b[i]);
            ck_assert_str_eq(a[i], b[i]);
            free(a[i]);
            free(b[i]);
        }
    }
    /* an IP that needs escaping: parsed, and still valid JSON with the tag */
    char *s = events_delivery(mail, "a\"b", T0, 0, sample_dest, 1, NULL, NULL, NULL);
    json_t *ev = parse(s);
    json_t *tag = json_array_get(at(ev, "mail.tags.ses:outgoing-ip"), 0);
    ck_assert_str_eq(json_string_value(tag), "a\"b");
    json_decref(ev);
    free(s);
    free(spaced);
    free(mail);
}
END_TEST

START_TEST(test_event_damaged_mail)
{
    /* A damaged stored mail object still yields a parseable event that says why. */
    char *s = events_send("{not json");
    json_t *ev = parse(s);
    static const char *const keys[] = {"eventType", "mail", "send", "kiln", NULL};
    assert_keys(ev, keys, "event");
    ck_assert_uint_eq(json_object_size(at(ev, "mail")), 0);
    ck_assert_msg(strstr(str_at(ev, "kiln.error"), "not a JSON object") != NULL,
                  "kiln.error: %s", str_at(ev, "kiln.error"));
    json_decref(ev);
    free(s);
}
END_TEST

START_TEST(test_reporting_mta)
{
    config *c = testlib_config_new();       /* hostname mta.example.test */
    char *s = events_reporting_mta(c);
    ck_assert_str_eq(s, "dsn; mta.example.test");
    free(s);
    config_unref(c);
}
END_TEST

START_TEST(test_new_id)
{
    char a[80], b[80];
    accept_new_id(a, T0);
    accept_new_id(b, T0);
    assert_ses_id(a, "message id");
    char want[17];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)T0);
    ck_assert_msg(strncmp(a, want, 16) == 0, "id %s does not start with %s", a, want);
    ck_assert_msg(strcmp(a, b) != 0, "two ids are equal: %s", a);
}
END_TEST

/* ------------------------------------------------------------- spool fixtures ---- */

static const char *rootdir;     /* per test case, made and removed by the parent process */
static char *tmpdir;            /* per test, inside rootdir */
static spool *sp;
static klog *lg;
static char logpath[128];
static config *cfg;
static char pathbuf[3][160];

/* The parent makes and removes the root, so a test that fails mid-way leaves nothing. */
static void root_setup(void)
{
    rootdir = testlib_tmpdir("events");
}

static void root_teardown(void)
{
    testlib_tmpdir_remove(rootdir);
}

static void fixture_setup(void)
{
    umask(022);
    tmpdir = testlib_subdir(rootdir, "t-");
    char *err = NULL;
    sp = spool_open(tmpdir, false, &err);
    ck_assert_msg(sp != NULL, "spool_open: %s", err ? err : "?");
    snprintf(logpath, sizeof logpath, "%s/kiln.log", tmpdir);
    lg = log_open(logpath, KLOG_DEBUG, &err);
    ck_assert_msg(lg != NULL, "log_open: %s", err ? err : "?");

    snprintf(pathbuf[0], sizeof pathbuf[0], "%s/events/deep/txn.jsonl", tmpdir);
    snprintf(pathbuf[1], sizeof pathbuf[1], "%s/all.jsonl", tmpdir);
    snprintf(pathbuf[2], sizeof pathbuf[2], "%s/a-directory", tmpdir);
    ck_assert_int_eq(mkdir(pathbuf[2], 0755), 0);
    /* hostname mta.example.test, region local, both suppression reasons */
    cfg = testlib_config_new();
    config_set *set = testlib_config_add_set(cfg, "txn", "transactional");
    testlib_config_add_event_file(set, pathbuf[0]);
    testlib_config_add_event_file(set, pathbuf[1]);
    set = testlib_config_add_set(cfg, "other", "transactional");
    testlib_config_add_event_webhook(set, "http://127.0.0.1:9000/kiln");
    set = testlib_config_add_set(cfg, "broken", "transactional");
    testlib_config_add_event_file(set, pathbuf[2]);
    testlib_config_set_default_set(cfg, "txn");
    nsched_calls = 0;
}

static void fixture_teardown(void)
{
    spool_close(sp);
    log_close(lg);
    config_unref(cfg);
    testlib_rmtree(tmpdir);
    free(tmpdir);
}

static size_t count_substr(const char *s, const char *sub)
{
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, sub)) != NULL; p += strlen(sub)) n++;
    return n;
}

typedef struct outbox {
    char *json[64];
    char *set[64];
    size_t n;
} outbox;

static void outbox_cb(void *arg, int64_t id, const char *set, const char *json)
{
    (void)id;
    outbox *o = arg;
    ck_assert_uint_lt(o->n, 64);
    o->set[o->n] = util_strdup(set);
    o->json[o->n++] = util_strdup(json);
}

static void outbox_read(outbox *o)
{
    o->n = 0;
    ck_assert_int_eq(spool_each_event(sp, 0, 1000, outbox_cb, o), 0);
}

static void outbox_free(outbox *o)
{
    for (size_t i = 0; i < o->n; i++) {
        free(o->json[i]);
        free(o->set[i]);
    }
    o->n = 0;
}

static void add_events(const char *set, int n, const char *tag)
{
    for (int i = 0; i < n; i++) {
        char *j = util_asprintf("{\"eventType\":\"Send\",\"n\":\"%s-%d\"}", tag, i);
        ck_assert_int_eq(spool_add_event(sp, set, j), 0);
        free(j);
    }
    ck_assert_int_eq(spool_flush(sp), 0);
}

/* ----------------------------------------------------------------------- drain ---- */

START_TEST(test_drain_files)
{
    events *ev = events_new(lg);
    add_events("txn", 3, "a");
    add_events("gone", 1, "b");     /* set no longer configured: dropped */
    add_events("other", 1, "c");    /* webhook only: nothing to write */
    ck_assert_int_eq(events_drain(ev, sp, cfg), 3);
    ck_assert_int_eq(spool_flush(sp), 0);

    const char *want = "{\"eventType\":\"Send\",\"n\":\"a-0\"}\n"
                       "{\"eventType\":\"Send\",\"n\":\"a-1\"}\n"
                       "{\"eventType\":\"Send\",\"n\":\"a-2\"}\n";
    for (int i = 0; i < 2; i++) {
        char *got = testlib_read_file(pathbuf[i], NULL);
        ck_assert_msg(got != NULL, "%s was not created", pathbuf[i]);
        ck_assert_str_eq(got, want);
        free(got);
        struct stat st;
        ck_assert_int_eq(stat(pathbuf[i], &st), 0);
        ck_assert_msg((st.st_mode & 0777) == 0640, "%s has mode %o, want 640", pathbuf[i],
                      (unsigned)(st.st_mode & 0777));
    }
    /* Written and dropped rows are deleted; the row of the webhook-only set stays in the
     * outbox until its webhook has it (no loop attached here: nothing is posted). */
    outbox o;
    outbox_read(&o);
    ck_assert_uint_eq(o.n, 1);
    ck_assert_str_eq(o.set[0], "other");
    outbox_free(&o);

    /* Nothing new: nothing written. More rows: appended. */
    ck_assert_int_eq(events_drain(ev, sp, cfg), 0);
    add_events("txn", 1, "d");
    ck_assert_int_eq(events_drain(ev, sp, cfg), 1);
    ck_assert_int_eq(spool_flush(sp), 0);
    char *got = testlib_read_file(pathbuf[0], NULL);
    ck_assert_uint_eq(count_substr(got, "\n"), 4);
    ck_assert_msg(strstr(got, "\"d-0\"}\n") != NULL, "appended line missing: %s", got);
    free(got);

    /* The file was moved away (log rotation): the next drain writes a new one. */
    char moved[200];
    snprintf(moved, sizeof moved, "%s.1", pathbuf[0]);
    ck_assert_int_eq(rename(pathbuf[0], moved), 0);
    add_events("txn", 1, "e");
    ck_assert_int_eq(events_drain(ev, sp, cfg), 1);
    ck_assert_int_eq(spool_flush(sp), 0);
    got = testlib_read_file(pathbuf[0], NULL);
    ck_assert_str_eq(got, "{\"eventType\":\"Send\",\"n\":\"e-0\"}\n");
    free(got);
    got = testlib_read_file(moved, NULL);
    ck_assert_uint_eq(count_substr(got, "\n"), 4);
    free(got);
    events_free(ev);

    char *log = testlib_read_file(logpath, NULL);
    ck_assert_uint_eq(count_substr(log, "not supported yet"), 0);
    ck_assert_msg(strstr(log, "event_dropped") && strstr(log, "set=\"gone\""),
                  "dropped row not logged: %s", log);
    free(log);
}
END_TEST

START_TEST(test_drain_config_change)
{
    /* A new config (reload) moves the set's events to its new file; the old file gets
     * nothing more. */
    events *ev = events_new(lg);
    add_events("txn", 1, "a");
    ck_assert_int_eq(events_drain(ev, sp, cfg), 1);
    ck_assert_int_eq(spool_flush(sp), 0);

    char newpath[200];
    snprintf(newpath, sizeof newpath, "%s/reloaded.jsonl", tmpdir);
    config *cfg2 = testlib_config_new();
    testlib_config_add_event_file(testlib_config_add_set(cfg2, "txn", "transactional"), newpath);
    testlib_config_add_event_webhook(testlib_config_add_set(cfg2, "other", "transactional"),
                                     "http://127.0.0.1:9000/kiln");
    testlib_config_set_default_set(cfg2, "txn");
    add_events("txn", 1, "b");
    ck_assert_int_eq(events_drain(ev, sp, cfg2), 1);
    ck_assert_int_eq(spool_flush(sp), 0);
    events_free(ev);
    config_unref(cfg2);

    char *got = testlib_read_file(newpath, NULL);
    ck_assert_str_eq(got, "{\"eventType\":\"Send\",\"n\":\"b-0\"}\n");
    free(got);
    got = testlib_read_file(pathbuf[0], NULL);
    ck_assert_str_eq(got, "{\"eventType\":\"Send\",\"n\":\"a-0\"}\n");
    free(got);
    char *log = testlib_read_file(logpath, NULL);
    ck_assert_uint_eq(count_substr(log, "not supported yet"), 0);
    free(log);
}
END_TEST

START_TEST(test_drain_many)
{
    /* More rows than one read batch: all written, in order. */
    events *ev = events_new(lg);
    for (int i = 0; i < 2500; i++) {
        char *j = util_asprintf("{\"i\":%d}", i);
        ck_assert_int_eq(spool_add_event(sp, "txn", j), 0);
        free(j);
    }
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_int_eq(events_drain(ev, sp, cfg), 2500);
    ck_assert_int_eq(spool_flush(sp), 0);
    char *got = testlib_read_file(pathbuf[1], NULL);
    ck_assert_uint_eq(count_substr(got, "\n"), 2500);
    ck_assert_msg(strncmp(got, "{\"i\":0}\n{\"i\":1}\n", 16) == 0, "order: %.40s", got);
    ck_assert_msg(strstr(got, "{\"i\":2499}\n") != NULL, "last row missing");
    free(got);
    events_free(ev);
}
END_TEST

static void stats_sum(void *arg, int64_t bucket_ms, int64_t attempts, int64_t bounces,
                      int64_t complaints, int64_t rejects)
{
    (void)bucket_ms, (void)bounces, (void)complaints, (void)rejects;
    *(int64_t *)arg += attempts;
}

START_TEST(test_drain_counts_each_event_once)
{
    /* Six Send events of 1 MB that an older kiln wrote (it counted events as they left the
     * outbox): one drain reads 4 MB of them, the next drain the rest while the first
     * drain's delete is not committed yet (the spool's reads still show those rows). Each
     * event is counted in the send statistics exactly once. */
    events *ev = events_new(lg);
    events_stats_legacy(ev, INT64_MAX);
    char *pad = util_malloc(1024 * 1024 + 1);
    memset(pad, 'x', 1024 * 1024);
    pad[1024 * 1024] = '\0';
    for (int i = 0; i < 6; i++) {
        char *j = util_asprintf("{\"eventType\":\"Send\",\"mail\":{\"timestamp\":"
                                "\"2023-11-14T22:13:20.000Z\",\"destination\":[\"r%d@x.test\"],"
                                "\"pad\":\"%s\"}}", i, pad);
        ck_assert_int_eq(spool_add_event(sp, "txn", j), 0);
        free(j);
    }
    free(pad);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_int_eq(events_drain(ev, sp, cfg), 4);
    ck_assert_int_eq(events_drain(ev, sp, cfg), 2);   /* the first delete still pending */
    ck_assert_int_eq(spool_flush(sp), 0);
    int64_t attempts = 0;
    ck_assert_int_eq(spool_stats_each(sp, 0, stats_sum, &attempts), 0);
    ck_assert_int_eq(attempts, 6);
    outbox o;
    outbox_read(&o);
    ck_assert_uint_eq(o.n, 0);
    outbox_free(&o);
    events_free(ev);
}
END_TEST

START_TEST(test_drain_write_error_keeps_rows)
{
    events *ev = events_new(lg);
    add_events("broken", 2, "x");
    ck_assert_int_eq(events_drain(ev, sp, cfg), -1);
    ck_assert_int_eq(spool_flush(sp), 0);
    outbox o;
    outbox_read(&o);
    ck_assert_uint_eq(o.n, 2);
    outbox_free(&o);
    char *log = testlib_read_file(logpath, NULL);
    ck_assert_msg(strstr(log, "event_file_error") && strstr(log, "a-directory"),
                  "write error not logged: %s", log);
    free(log);
    events_free(ev);
}
END_TEST

/* ---------------------------------------------------------------------- accept ---- */

typedef struct done_rec {
    int calls;
    bool ok;
    char id[80];
} done_rec;

static void on_done(void *arg, bool ok, const char *id, const char *err)
{
    (void)err;
    done_rec *d = arg;
    d->calls++;
    d->ok = ok;
    snprintf(d->id, sizeof d->id, "%s", id ? id : "");
}

static int64_t fixed_clock(void *arg)
{
    (void)arg;
    return T0;
}

static kiln_ctx make_ctx(void)
{
    kiln_ctx ctx = {0};
    ctx.cfg = cfg;
    ctx.log = lg;
    ctx.spool = sp;
    static int sched_handle;
    ctx.sched = (scheduler *)&sched_handle;   /* any non-NULL handle: the double records calls */
    ctx.clock = fixed_clock;
    return ctx;
}

typedef struct pending {
    char msg[8][80];
    char addr[8][128];
    size_t n;
} pending;

static void pending_cb(void *arg, const spool_rcpt *r)
{
    pending *p = arg;
    ck_assert_uint_lt(p->n, 8);
    snprintf(p->msg[p->n], 80, "%s", r->msg_id);
    snprintf(p->addr[p->n], 128, "%s", r->address);
    p->n++;
}

static void sent_cb(void *arg, int64_t created_ms, unsigned count)
{
    (void)created_ms;
    *(unsigned *)arg += count;
}

/* Accepts data for rcpts (verdicts), flushes, returns the id via *d. */
static void do_accept(const char *from, char *const *rcpts, const policy_rcpt_verdict *v,
                      size_t n, const char *data, unsigned quota, done_rec *d)
{
    kiln_ctx ctx = make_ctx();
    accept_in in = {
        .mail_from = from,
        .rcpts = rcpts,
        .verdicts = v,
        .nrcpts = n,
        .config_set = "txn",
        .client_ip = "192.0.2.7",
        .helo = "client.example.test",
        .tls = true,
        .auth_user = "app",
        .data = data,
        .data_len = strlen(data),
        .quota_count = quota,
    };
    memset(d, 0, sizeof *d);
    ck_assert_int_eq(accept_message(&ctx, &in, on_done, d), 0);
    ck_assert_int_eq(d->calls, 0);      /* nothing is acknowledged before the commit */
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_int_eq(d->calls, 1);
    ck_assert_msg(d->ok, "commit failed");
    assert_ses_id(d->id, "message id");
}

static const char plain_msg[] = "From: Sender <sender@example.test>\r\n"
                                "To: real@dest.test\r\n"
                                "Subject: Test 1\r\n"
                                "\r\n"
                                "Hello\r\n";

START_TEST(test_accept_outcomes)
{
    char *const rcpts[] = {"success" SIM,    "bounce+x" SIM,         "ooto" SIM,
                           "complaint" SIM,  "suppressionlist" SIM, "gone@dest.test",
                           "real@dest.test"};
    const policy_rcpt_verdict v[] = {POLICY_RCPT_SIMULATOR, POLICY_RCPT_SIMULATOR,
                                     POLICY_RCPT_SIMULATOR, POLICY_RCPT_SIMULATOR,
                                     POLICY_RCPT_SIMULATOR, POLICY_RCPT_SUPPRESSED,
                                     POLICY_RCPT_ACCEPT};
    done_rec d;
    do_accept("bounces@example.test", rcpts, v, 7, plain_msg, 2, &d);

    /* Stored data: Received: first, Message-ID: added at the end of the header section. */
    spool_loaded m;
    ck_assert_int_eq(spool_load_message(sp, d.id, &m), 0);
    char *recv = util_asprintf("Received: from client.example.test (unknown [192.0.2.7])\r\n"
                               "\tby mta.example.test (kiln) with ESMTPSA id %s;\r\n"
                               "\tTue, 14 Nov 2023 22:13:20 +0000\r\n"
                               "From: Sender <sender@example.test>\r\n", d.id);
    ck_assert_msg(m.data_len > strlen(recv) && strncmp(m.data, recv, strlen(recv)) == 0,
                  "stored data starts: %.200s", m.data);
    char *mid = util_asprintf("Subject: Test 1\r\nMessage-ID: <%s@mta.example.test>\r\n\r\n"
                              "Hello\r\n", d.id);
    ck_assert_msg(m.data_len >= strlen(mid) &&
                  strcmp(m.data + m.data_len - strlen(mid), mid) == 0,
                  "stored data ends: %s", m.data);
    ck_assert_str_eq(m.mail_from, "bounces@example.test");
    ck_assert_str_eq(m.config_set, "txn");
    json_t *mail = parse(m.mail_json);
    ck_assert_str_eq(str_at(mail, "messageId"), d.id);
    ck_assert_str_eq(str_at(mail, "timestamp"), T0_ISO);
    const char *acct = str_at(mail, "sendingAccountId");
    ck_assert_uint_eq(strlen(acct), 12);
    ck_assert_uint_eq(strspn(acct, "0123456789"), 12);
    ck_assert_uint_eq(json_array_size(at(mail, "destination")), 7);
    char *cmid = util_asprintf("<%s@mta.example.test>", d.id);
    ck_assert_str_eq(str_at(mail, "commonHeaders.messageId"), cmid);
    assert_one(at(mail, "tags.ses:source-ip"), "192.0.2.7", "source-ip");
    json_decref(mail);
    spool_loaded_free(&m);

    /* Queued: the normal recipient, and the ooto auto-reply to the envelope sender. */
    pending p = {0};
    ck_assert_int_eq(spool_each_pending_rcpt(sp, NULL, pending_cb, &p), 0);
    ck_assert_uint_eq(p.n, 2);
    ck_assert_str_eq(p.msg[0], d.id);
    ck_assert_str_eq(p.addr[0], "real@dest.test");
    ck_assert_str_eq(p.addr[1], "bounces@example.test");
    char reply_id[80];
    snprintf(reply_id, sizeof reply_id, "%s", p.msg[1]);
    assert_ses_id(reply_id, "reply id");
    ck_assert_str_ne(reply_id, d.id);
    ck_assert_int_eq(nsched_calls, 2);
    ck_assert_str_eq(sched_calls[0], d.id);
    ck_assert_str_eq(sched_calls[1], reply_id);

    ck_assert_int_eq(spool_load_message(sp, reply_id, &m), 0);
    ck_assert_str_eq(m.mail_from, "");
    ck_assert_str_eq(m.config_set, "txn");
    static const char *const reply_lines[] = {
        "\r\nFrom: ooto@simulator.amazonses.com\r\n", "\r\nTo: <bounces@example.test>\r\n",
        "\r\nSubject: Automatic reply: Test 1\r\n", "\r\nAuto-Submitted: auto-replied\r\n",
        "\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n"};
    for (size_t i = 0; i < sizeof reply_lines / sizeof reply_lines[0]; i++)
        ck_assert_msg(strstr(m.data, reply_lines[i]) != NULL, "reply lacks %s: %s",
                      reply_lines[i], m.data);
    char *irt = util_asprintf("\r\nIn-Reply-To: %s\r\nReferences: %s\r\n", cmid, cmid);
    ck_assert_msg(strstr(m.data, irt) != NULL, "reply not threaded: %s", m.data);
    ck_assert_msg(strncmp(m.data, "Received: by mta.example.test (kiln)\r\n\tid ", 42) == 0,
                  "reply data starts: %.80s", m.data);
    msg_headers rh;
    message_parse_headers(m.data, m.data_len, &rh);
    char *rmid = util_asprintf("<%s@mta.example.test>", reply_id);
    ck_assert_str_eq(message_header_get(&rh, "Message-ID"), rmid);
    ck_assert_msg(rh.header_len < m.data_len, "reply has no body");
    message_headers_free(&rh);
    spool_loaded_free(&m);

    /* Only recipients that count against the 24 h quota were recorded (not the reply). */
    unsigned sent = 0;
    ck_assert_int_eq(spool_each_sent_since(sp, 0, sent_cb, &sent), 0);
    ck_assert_uint_eq(sent, 2);

    /* Outbox: Send first, then one event per settled recipient, then the reply's Send. */
    outbox o;
    outbox_read(&o);
    static const struct {
        const char *type, *rcpt, *subtype;
    } want[] = {
        {"Send", NULL, NULL},
        {"Delivery", "success" SIM, NULL},
        {"Bounce", "bounce+x" SIM, "General"},
        {"Delivery", "ooto" SIM, NULL},
        {"Delivery", "complaint" SIM, NULL},
        {"Complaint", "complaint" SIM, NULL},
        {"Bounce", "suppressionlist" SIM, "Suppressed"},
        {"Bounce", "gone@dest.test", "OnAccountSuppressionList"},
        {"Send", NULL, NULL},
    };
    ck_assert_uint_eq(o.n, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < o.n; i++) {
        json_t *ev = parse(o.json[i]);
        ck_assert_str_eq(o.set[i], "txn");
        ck_assert_msg(strcmp(str_at(ev, "eventType"), want[i].type) == 0,
                      "event %zu is %s, want %s", i, str_at(ev, "eventType"), want[i].type);
        ck_assert_str_eq(str_at(ev, "mail.messageId"), i + 1 == o.n ? reply_id : d.id);
        const char *type = want[i].type;
        if (strcmp(type, "Delivery") == 0) {
            assert_one(at(ev, "delivery.recipients"), want[i].rcpt, "recipients");
            ck_assert_str_eq(str_at(ev, "delivery.smtpResponse"), "250 2.6.0 Message received");
            ck_assert_str_eq(str_at(ev, "delivery.reportingMTA"), "dsn; mta.example.test");
            ck_assert_int_eq(int_at(ev, "delivery.processingTimeMillis"), 0);
        } else if (strcmp(type, "Bounce") == 0) {
            ck_assert_str_eq(str_at(ev, "bounce.bounceType"), "Permanent");
            ck_assert_str_eq(str_at(ev, "bounce.bounceSubType"), want[i].subtype);
            json_t *r = json_array_get(at(ev, "bounce.bouncedRecipients"), 0);
            ck_assert_str_eq(str_at(r, "emailAddress"), want[i].rcpt);
            ck_assert_str_eq(str_at(r, "action"), "failed");
            ck_assert_str_eq(str_at(r, "status"), "5.1.1");
            const char *diag = str_at(r, "diagnosticCode");
            if (strcmp(want[i].subtype, "General") == 0)
                ck_assert_str_eq(diag, "smtp; 550 5.1.1 user unknown");
            else if (strcmp(want[i].subtype, "Suppressed") == 0)
                ck_assert_msg(strstr(diag, "recent history of bouncing") != NULL, "%s", diag);
            else
                ck_assert_msg(strstr(diag, "on the suppression list for your account") != NULL,
                              "%s", diag);
        } else if (strcmp(type, "Complaint") == 0) {
            ck_assert_str_eq(str_at(ev, "complaint.complaintFeedbackType"), "abuse");
            json_t *r = json_array_get(at(ev, "complaint.complainedRecipients"), 0);
            ck_assert_str_eq(str_at(r, "emailAddress"), want[i].rcpt);
        }
        json_decref(ev);
    }
    outbox_free(&o);

    /* Simulator addresses are never put on the suppression list. */
    static const char *const never[] = {"bounce+x" SIM, "complaint" SIM, "suppressionlist" SIM};
    for (size_t i = 0; i < 3; i++) {
        bool found = true;
        ck_assert_int_eq(spool_suppression_get(sp, never[i], &found, NULL, NULL), 0);
        ck_assert_msg(!found, "%s was suppressed", never[i]);
    }
    free(irt);
    free(rmid);
    free(cmid);
    free(mid);
    free(recv);
}
END_TEST

START_TEST(test_accept_all_settled_is_removed)
{
    char *const rcpts[] = {"success" SIM};
    const policy_rcpt_verdict v[] = {POLICY_RCPT_SIMULATOR};
    done_rec d;
    do_accept("bounces@example.test", rcpts, v, 1, plain_msg, 0, &d);
    spool_loaded m;
    ck_assert_int_eq(spool_load_message(sp, d.id, &m), -1);
    ck_assert_int_eq(nsched_calls, 0);
    outbox o;
    outbox_read(&o);
    ck_assert_uint_eq(o.n, 2);            /* Send, Delivery */
    outbox_free(&o);
}
END_TEST

/* Where Message-ID: goes, and that an existing one is kept. */
typedef struct mid_case {
    const char *name;
    const char *data;
    const char *want_after_received;   /* %1$s = the added Message-ID value */
} mid_case;

static const mid_case mid_cases[] = {
    {"has Message-ID", "Message-ID: <own@example.test>\r\nSubject: a\r\n\r\nb\r\n",
     "Message-ID: <own@example.test>\r\nSubject: a\r\n\r\nb\r\n"},
    {"lower-case message-id", "message-id: <own@example.test>\r\n\r\nb\r\n",
     "message-id: <own@example.test>\r\n\r\nb\r\n"},
    {"body only", "Hello there\r\n", "Message-ID: %1$s\r\n\r\nHello there\r\n"},
    {"empty header section", "\r\nHello\r\n", "Message-ID: %1$s\r\n\r\nHello\r\n"},
    {"empty message", "", "Message-ID: %1$s\r\n\r\n"},
    {"headers only", "Subject: a\r\n", "Subject: a\r\nMessage-ID: %1$s\r\n\r\n"},
    {"unterminated header", "Subject: a", "Subject: a\r\nMessage-ID: %1$s\r\n\r\n"},
    {"folded last header", "Subject: a\r\n b\r\n\r\nx\r\n",
     "Subject: a\r\n b\r\nMessage-ID: %1$s\r\n\r\nx\r\n"},
    {"bare LF", "Subject: a\n\nx\n", "Subject: a\nMessage-ID: %1$s\r\n\nx\n"},
    {"body line without blank line", "Subject: a\r\nhello\r\n",
     "Subject: a\r\nMessage-ID: %1$s\r\nhello\r\n"},
};

START_TEST(test_accept_message_id_table)
{
    const mid_case *c = &mid_cases[_i];
    char *const rcpts[] = {"real@dest.test"};
    const policy_rcpt_verdict v[] = {POLICY_RCPT_ACCEPT};
    done_rec d;
    do_accept("bounces@example.test", rcpts, v, 1, c->data, 1, &d);
    spool_loaded m;
    ck_assert_int_eq(spool_load_message(sp, d.id, &m), 0);
    const char *body = strstr(m.data, " +0000\r\n");
    ck_assert_msg(body != NULL, "%s: no Received: date: %s", c->name, m.data);
    body += strlen(" +0000\r\n");
    char *mid = util_asprintf("<%s@mta.example.test>", d.id);
    char *want = util_asprintf(c->want_after_received, mid);
    ck_assert_msg(strcmp(body, want) == 0, "%s: stored\n%s\nwant\n%s", c->name, body, want);
    ck_assert_uint_eq(m.data_len, (size_t)(body - m.data) + strlen(want));
    free(want);
    free(mid);
    spool_loaded_free(&m);
}
END_TEST

/* The ooto auto-reply obeys RFC 3834. */
typedef struct ooto_case {
    const char *name;
    const char *from;
    const char *extra_headers;
    bool want_reply;
} ooto_case;

static const ooto_case ooto_cases[] = {
    {"plain", "bounces@example.test", "", true},
    {"Auto-Submitted: no", "bounces@example.test", "Auto-Submitted: no\r\n", true},
    {"null sender", "", "", false},
    {"auto-generated", "bounces@example.test", "Auto-Submitted: auto-generated\r\n", false},
    {"auto-replied", "bounces@example.test", "Auto-Submitted: Auto-Replied (x)\r\n", false},
    {"Precedence bulk", "bounces@example.test", "Precedence: bulk\r\n", false},
    {"Precedence list", "bounces@example.test", "Precedence: LIST\r\n", false},
    {"Precedence junk", "bounces@example.test", "Precedence: junk\r\n", false},
    {"Precedence first-class", "bounces@example.test", "Precedence: first-class\r\n", true},
    {"mailing list", "bounces@example.test", "List-Id: <l.example.test>\r\n", false},
    {"sender is the simulator", "ooto" SIM, "", false},
};

START_TEST(test_accept_ooto_table)
{
    const ooto_case *c = &ooto_cases[_i];
    char *data = util_asprintf("From: a@example.test\r\n%sSubject: s\r\n\r\nb\r\n",
                               c->extra_headers);
    char *const rcpts[] = {"ooto+lbl" SIM};
    const policy_rcpt_verdict v[] = {POLICY_RCPT_SIMULATOR};
    done_rec d;
    do_accept(c->from, rcpts, v, 1, data, 0, &d);
    pending p = {0};
    ck_assert_int_eq(spool_each_pending_rcpt(sp, NULL, pending_cb, &p), 0);
    ck_assert_msg(p.n == (c->want_reply ? 1u : 0u), "%s: %zu replies queued", c->name, p.n);
    ck_assert_int_eq(nsched_calls, c->want_reply ? 1 : 0);
    if (c->want_reply) ck_assert_str_eq(p.addr[0], c->from);
    outbox o;
    outbox_read(&o);
    ck_assert_uint_eq(o.n, c->want_reply ? 3u : 2u);   /* Send, Delivery (+ reply's Send) */
    outbox_free(&o);
    free(data);
}
END_TEST

START_TEST(test_accept_ooto_long_subject)
{
    /* The reply's Subject: is folded into lines of at most 78 characters, unfolds back
     * to "Automatic reply: " + the original; References: carries the original thread. */
    const char *subject = "A rather long subject line that keeps going well past the usual "
                          "width of a header line so that it has to be folded twice over";
    char *data = util_asprintf("Subject: %s\r\nMessage-ID: <orig@example.test>\r\n"
                               "References: <first@example.test>\r\n\r\nb\r\n", subject);
    char *const rcpts[] = {"ooto" SIM};
    const policy_rcpt_verdict v[] = {POLICY_RCPT_SIMULATOR};
    done_rec d;
    do_accept("bounces@example.test", rcpts, v, 1, data, 0, &d);
    pending p = {0};
    ck_assert_int_eq(spool_each_pending_rcpt(sp, NULL, pending_cb, &p), 0);
    ck_assert_uint_eq(p.n, 1);
    spool_loaded m;
    ck_assert_int_eq(spool_load_message(sp, p.msg[0], &m), 0);
    bool in_subject = false;
    int subject_lines = 0;
    for (const char *line = m.data; line < m.data + m.data_len;) {
        const char *eol = strstr(line, "\r\n");
        ck_assert_msg(eol != NULL, "reply line without CRLF");
        if (strncmp(line, "Subject:", 8) == 0) in_subject = true;
        else if (*line != ' ' && *line != '\t') in_subject = false;
        if (in_subject) {
            subject_lines++;
            ck_assert_msg(eol - line <= 78, "Subject line of %td characters: %.*s",
                          eol - line, (int)(eol - line), line);
        }
        line = eol + 2;
    }
    ck_assert_int_ge(subject_lines, 2);
    msg_headers hs;
    message_parse_headers(m.data, m.data_len, &hs);
    char *want = util_asprintf("Automatic reply: %s", subject);
    ck_assert_str_eq(message_header_get(&hs, "Subject"), want);
    ck_assert_str_eq(message_header_get(&hs, "In-Reply-To"), "<orig@example.test>");
    ck_assert_str_eq(message_header_get(&hs, "References"),
                     "<first@example.test> <orig@example.test>");
    message_headers_free(&hs);
    spool_loaded_free(&m);
    free(want);
    free(data);
}
END_TEST

START_TEST(test_accept_protocols)
{
    static const struct {
        bool tls;
        const char *auth;
        const char *want;
    } cases[] = {
        {false, NULL, " with ESMTP id "},
        {true, NULL, " with ESMTPS id "},
        {false, "app", " with ESMTPA id "},
        {true, "app", " with ESMTPSA id "},
    };
    for (size_t i = 0; i < 4; i++) {
        kiln_ctx ctx = make_ctx();
        char *const rcpts[] = {"real@dest.test"};
        const policy_rcpt_verdict v[] = {POLICY_RCPT_ACCEPT};
        accept_in in = {.mail_from = "a@example.test", .rcpts = rcpts, .verdicts = v,
                        .nrcpts = 1, .config_set = "txn", .client_ip = "2001:db8::7",
                        .helo = "bad\r\nX-Injected: yes", .tls = cases[i].tls,
                        .auth_user = cases[i].auth, .data = "Subject: a\r\n\r\nb\r\n",
                        .data_len = 17};
        done_rec d = {0};
        ck_assert_int_eq(accept_message(&ctx, &in, on_done, &d), 0);
        ck_assert_int_eq(spool_flush(sp), 0);
        ck_assert(d.ok);
        spool_loaded m;
        ck_assert_int_eq(spool_load_message(sp, d.id, &m), 0);
        ck_assert_msg(strstr(m.data, cases[i].want) != NULL, "case %zu: %.200s", i, m.data);
        const char *recv = "Received: from bad??X-Injected:?yes (unknown [2001:db8::7])\r\n";
        ck_assert_msg(strncmp(m.data, recv, strlen(recv)) == 0, "HELO not cleaned: %.100s",
                      m.data);
        spool_loaded_free(&m);
    }
}
END_TEST

START_TEST(test_accept_unknown_set)
{
    kiln_ctx ctx = make_ctx();
    char *const rcpts[] = {"real@dest.test"};
    const policy_rcpt_verdict v[] = {POLICY_RCPT_ACCEPT};
    accept_in in = {.mail_from = "a@example.test", .rcpts = rcpts, .verdicts = v, .nrcpts = 1,
                    .config_set = "nosuch", .client_ip = "192.0.2.7", .helo = "h",
                    .data = "x", .data_len = 1};
    done_rec d = {0};
    ck_assert_int_eq(accept_message(&ctx, &in, on_done, &d), -1);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_int_eq(d.calls, 0);
    outbox o;
    outbox_read(&o);
    ck_assert_uint_eq(o.n, 0);
}
END_TEST

START_TEST(test_accept_then_drain)
{
    /* End to end: the events of an accepted message reach the set's file. */
    char *const rcpts[] = {"bounce" SIM};
    const policy_rcpt_verdict v[] = {POLICY_RCPT_SIMULATOR};
    done_rec d;
    do_accept("bounces@example.test", rcpts, v, 1, plain_msg, 0, &d);
    events *ev = events_new(lg);
    ck_assert_int_eq(events_drain(ev, sp, cfg), 2);
    ck_assert_int_eq(spool_flush(sp), 0);
    events_free(ev);
    char *got = testlib_read_file(pathbuf[0], NULL);
    char *line2 = strchr(got, '\n') + 1;
    char *line1 = util_strndup(got, (size_t)(line2 - got - 1));
    json_t *send = parse(line1);
    free(line1);
    ck_assert_str_eq(str_at(send, "eventType"), "Send");
    ck_assert_str_eq(str_at(send, "mail.messageId"), d.id);
    json_decref(send);
    line2[strlen(line2) - 1] = '\0';
    json_t *b = parse(line2);
    ck_assert_str_eq(str_at(b, "eventType"), "Bounce");
    ck_assert_str_eq(str_at(b, "bounce.bounceSubType"), "General");
    json_decref(b);
    free(got);
}
END_TEST

static Suite *events_suite(void)
{
    Suite *s = suite_create("events");
    TCase *tc = tcase_create("json");
    tcase_add_test(tc, test_mail_object_fields);
    tcase_add_test(tc, test_mail_object_minimal);
    tcase_add_test(tc, test_mail_object_truncated);
    tcase_add_test(tc, test_event_send_reject);
    tcase_add_test(tc, test_event_delivery);
    tcase_add_test(tc, test_event_bounce);
    tcase_add_test(tc, test_event_delay);
    tcase_add_test(tc, test_event_complaint);
    tcase_add_test(tc, test_event_splice_equals_parse);
    tcase_add_test(tc, test_event_damaged_mail);
    tcase_add_test(tc, test_reporting_mta);
    tcase_add_test(tc, test_new_id);
    suite_add_tcase(s, tc);

    tc = tcase_create("drain");
    tcase_add_unchecked_fixture(tc, root_setup, root_teardown);
    tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
    tcase_add_test(tc, test_drain_files);
    tcase_add_test(tc, test_drain_config_change);
    tcase_add_test(tc, test_drain_many);
    tcase_add_test(tc, test_drain_counts_each_event_once);
    tcase_add_test(tc, test_drain_write_error_keeps_rows);
    suite_add_tcase(s, tc);

    tc = tcase_create("accept");
    tcase_add_unchecked_fixture(tc, root_setup, root_teardown);
    tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
    tcase_add_test(tc, test_accept_outcomes);
    tcase_add_test(tc, test_accept_all_settled_is_removed);
    tcase_add_loop_test(tc, test_accept_message_id_table, 0,
                        (int)(sizeof mid_cases / sizeof mid_cases[0]));
    tcase_add_loop_test(tc, test_accept_ooto_table, 0,
                        (int)(sizeof ooto_cases / sizeof ooto_cases[0]));
    tcase_add_test(tc, test_accept_ooto_long_subject);
    tcase_add_test(tc, test_accept_protocols);
    tcase_add_test(tc, test_accept_unknown_set);
    tcase_add_test(tc, test_accept_then_drain);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(events_suite);
