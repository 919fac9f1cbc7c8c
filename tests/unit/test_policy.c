/* test_policy.c — the SES submission rules (mta/policy.c): identity and recipient lists,
 * the exact rejection texts, rule order at RCPT and what each verdict takes from the quota.
 * Configs are built by hand in memory; the mailbox simulator is the real mta/simulator.c. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/message.h"
#include "mta/policy.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

#define T0 INT64_C(1700000000000)
#define PREFIX "554 5.7.1 Message rejected: Email address is not verified. " \
               "The following identities failed the check in region "

static char *identities[] = {"example.test", "ops@other.test"};
static char *verified_rcpts[] = {"friends.test", "pal@elsewhere.test"};

static config *make_config(config_mode mode)
{
    config *c = testlib_config_new();       /* region "local", hostname mta.example.test, */
    c->mode = mode;                         /* max_recipients 50 */
    c->max_send_rate = -1;
    c->max_24h_send = -1;
    for (size_t i = 0; i < 2; i++) testlib_config_add_identity(c, identities[i]);
    for (size_t i = 0; i < 2; i++) testlib_config_add_verified_recipient(c, verified_rcpts[i]);
    return c;
}

/* ---- lists ---- */

typedef struct {
    const char *addr;
    bool in;
} list_case;

static const list_case list_cases[] = {
    {"u@example.test", true},
    {"U@EXAMPLE.TEST", true},
    {"u@sub.example.test", true},
    {"u@a.b.sub.example.test", true},
    {"u@badexample.test", false},
    {"u@example.test.evil", false},
    {"u@xample.test", false},
    {"ops@other.test", true},
    {"OPS@Other.Test", true},
    {"x@other.test", false},
    {"ops@sub.other.test", false},
    {"ops@other.test.evil", false},
    {"example.test", false},
    {"u@", false},
    {"", false},
    {"u@test", false},
};

START_TEST(test_addr_in_list)
{
    const list_case *c = &list_cases[_i];
    ck_assert_msg(policy_addr_in_list(identities, 2, c->addr) == c->in, "'%s': want %s",
                  c->addr, c->in ? "covered" : "not covered");
    config *cfg = make_config(CONFIG_MODE_PRODUCTION);
    ck_assert(policy_identity_verified(cfg, c->addr) == c->in);
    config_unref(cfg);
}
END_TEST

START_TEST(test_addr_in_empty_list)
{
    ck_assert(!policy_addr_in_list(NULL, 0, "u@example.test"));
}
END_TEST

/* ---- reply texts ---- */

START_TEST(test_unverified_reply_text)
{
    config *cfg = make_config(CONFIG_MODE_PRODUCTION);
    char *addrs[] = {"a@x.test", "b@y.test"};
    char *r = policy_unverified_reply(cfg, addrs, 2);
    ck_assert_str_eq(r, "554 5.7.1 Message rejected: Email address is not verified. The following "
                        "identities failed the check in region LOCAL: a@x.test, b@y.test");
    free(r);
    free(cfg->region);
    cfg->region = util_strdup("eu-west-1");
    r = policy_unverified_reply(cfg, addrs, 1);
    ck_assert_str_eq(r, PREFIX "EU-WEST-1: a@x.test");
    free(r);
    config_unref(cfg);
}
END_TEST

START_TEST(test_unverified_reply_sanitized_and_bounded)
{
    config *cfg = make_config(CONFIG_MODE_PRODUCTION);
    char *evil[] = {"a\r\n250 ok\tb@x.test"};
    char *r = policy_unverified_reply(cfg, evil, 1);
    ck_assert_str_eq(r, PREFIX "LOCAL: a??250 ok?b@x.test");
    free(r);

    /* 100 long addresses: the line stays within 512 octets with CRLF and says more exist. */
    char *many[100];
    for (int i = 0; i < 100; i++) {
        many[i] = malloc(64);
        snprintf(many[i], 64, "someone-with-a-long-name-%03d@unverified.example.invalid", i);
    }
    r = policy_unverified_reply(cfg, many, 100);
    ck_assert_uint_le(strlen(r), 510);
    const char *start = PREFIX "LOCAL: someone-with-a-long-name-000@unverified.example.invalid, ";
    ck_assert(strncmp(r, start, strlen(start)) == 0);
    ck_assert(strstr(r, "-001@unverified.example.invalid, ") != NULL);
    ck_assert_str_eq(r + strlen(r) - strlen(" and others"), " and others");
    free(r);

    /* A single address longer than the line is cut, not dropped. */
    char huge[2000];
    memset(huge, 'x', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    char *one[] = {huge};
    r = policy_unverified_reply(cfg, one, 1);
    ck_assert_uint_le(strlen(r), 510);
    ck_assert(strstr(r, "LOCAL: xxxx") != NULL);
    free(r);
    for (int i = 0; i < 100; i++) free(many[i]);
    config_unref(cfg);
}
END_TEST

/* ---- MAIL FROM ---- */

START_TEST(test_mail_from)
{
    config *cfg = make_config(CONFIG_MODE_PRODUCTION);
    ck_assert_ptr_null(policy_check_mail_from(cfg, ""));
    ck_assert_ptr_null(policy_check_mail_from(cfg, NULL));
    ck_assert_ptr_null(policy_check_mail_from(cfg, "app@example.test"));
    ck_assert_ptr_null(policy_check_mail_from(cfg, "bounces@mail.example.test"));
    ck_assert_ptr_null(policy_check_mail_from(cfg, "Ops@OTHER.test"));
    char *r = policy_check_mail_from(cfg, "spoof@bank.test");
    ck_assert_str_eq(r, PREFIX "LOCAL: spoof@bank.test");
    free(r);
    r = policy_check_mail_from(cfg, "dev@other.test");
    ck_assert_str_eq(r, PREFIX "LOCAL: dev@other.test");
    free(r);
    config_unref(cfg);
}
END_TEST

/* ---- headers ---- */

typedef struct {
    const char *label;
    const char *msg;
    const char *want;               /* NULL: accepted; else the text after "LOCAL: " */
} hdr_case;

static const hdr_case hdr_cases[] = {
    {"all verified", "From: \"App\" <app@example.test>\r\nSender: ops@other.test\r\n"
                     "Return-Path: <>\r\nTo: x@anywhere.test\r\n\r\nbody", NULL},
    {"subdomain From", "From: news@mail.example.test\r\n\r\n", NULL},
    {"no sender fields at all", "To: x@anywhere.test\r\nSubject: hi\r\n\r\n", NULL},
    {"unverified To is not checked", "From: a@example.test\r\nTo: x@y.test\r\nCc: z@w.test\r\n\r\n",
     NULL},
    {"unverified From", "From: Bank <ceo@bank.test>\r\n\r\n", "ceo@bank.test"},
    {"every failing one, deduplicated, in order",
     "From: a@x.test, \"Ok\" <ok@example.test>, b@y.test\r\nSender: A@X.TEST\r\n"
     "Return-Path: <c@z.test>\r\n\r\n", "a@x.test, b@y.test, c@z.test"},
    {"second From field checked too", "From: a@example.test\r\nFROM: evil@z.test\r\n\r\n",
     "evil@z.test"},
    {"folded From", "From: \"Long name\"\r\n <evil@z.test>\r\n\r\n", "evil@z.test"},
    {"display name looking like an identity", "From: \"app@example.test\" <evil@z.test>\r\n\r\n",
     "evil@z.test"},
    {"group in From", "From: Team: a@example.test, b@z.test;\r\n\r\n", "b@z.test"},
    {"From without an address", "From: Undisclosed sender\r\n\r\n", "Undisclosed sender"},
    {"From with an unclosed quote", "From: \"x <ceo@bank.test>\r\n\r\n", "\"x <ceo@bank.test>"},
    {"empty Return-Path is fine", "From: a@example.test\r\nReturn-Path: <>\r\n\r\n", NULL},
    {"body is not header", "From: a@example.test\r\n\r\nFrom: evil@z.test\r\n", NULL},
};

START_TEST(test_check_headers)
{
    const hdr_case *c = &hdr_cases[_i];
    config *cfg = make_config(CONFIG_MODE_PRODUCTION);
    msg_headers hs;
    message_parse_headers(c->msg, strlen(c->msg), &hs);
    char *r = policy_check_headers(cfg, &hs);
    if (!c->want) {
        ck_assert_msg(r == NULL, "%s: rejected with '%s'", c->label, r);
    } else {
        ck_assert_msg(r != NULL, "%s: accepted", c->label);
        char want[600];
        snprintf(want, sizeof want, PREFIX "LOCAL: %s", c->want);
        ck_assert_msg(strcmp(r, want) == 0, "%s: got '%s'", c->label, r);
    }
    free(r);
    message_headers_free(&hs);
    config_unref(cfg);
}
END_TEST

START_TEST(test_check_headers_many_addresses)
{
    /* 1000 From addresses, 200 distinct: one bounded line naming the first ones. */
    config *cfg = make_config(CONFIG_MODE_PRODUCTION);
    size_t cap = 64 * 1024, len = 0;
    char *msg = malloc(cap);
    len += (size_t)snprintf(msg + len, cap - len, "From: ");
    for (int i = 0; i < 1000; i++)
        len += (size_t)snprintf(msg + len, cap - len, "%su%d@z.test", i ? ", " : "", i % 200);
    len += (size_t)snprintf(msg + len, cap - len, "\r\n\r\n");
    msg_headers hs;
    message_parse_headers(msg, len, &hs);
    char *r = policy_check_headers(cfg, &hs);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_le(strlen(r), 510);
    const char *start = PREFIX "LOCAL: u0@z.test, u1@z.test, u2@z.test, ";
    ck_assert(strncmp(r, start, strlen(start)) == 0);
    ck_assert_str_eq(r + strlen(r) - strlen(" and others"), " and others");
    free(r);
    message_headers_free(&hs);
    free(msg);
    config_unref(cfg);
}
END_TEST

/* ---- RCPT ---- */

typedef struct {
    config *cfg;
    quota *q;
    int64_t now;
    size_t accepted;
} rcpt_fixture;

static rcpt_fixture fixture(config_mode mode, double rate, int64_t max24h)
{
    rcpt_fixture f;
    f.cfg = make_config(mode);
    f.cfg->max_send_rate = rate;
    f.cfg->max_24h_send = max24h;
    f.q = quota_new(rate, max24h, T0);
    f.now = T0;
    f.accepted = 0;
    return f;
}

/* Runs the RCPT check; on REJECT *reply_out receives a copy of the reply. */
static policy_rcpt_verdict rcpt(rcpt_fixture *f, const char *addr, bool suppressed,
                                char **reply_out)
{
    policy_rcpt_in in = {.cfg = f->cfg, .q = f->q, .now_ms = f->now,
                         .accepted_so_far = f->accepted, .rcpt = addr, .suppressed = suppressed};
    const char *reply = "unset";
    bool owned = true;
    policy_rcpt_verdict v = policy_check_rcpt(&in, &reply, &owned);
    if (v == POLICY_RCPT_REJECT) {
        ck_assert_ptr_nonnull(reply);
        if (reply_out) *reply_out = strdup(reply);
        if (owned) free((char *)reply);
    } else {
        ck_assert(!owned);
        f->accepted++;
        if (reply_out) *reply_out = NULL;
    }
    return v;
}

static void expect_reject(rcpt_fixture *f, const char *addr, bool suppressed, const char *want)
{
    char *reply = NULL;
    policy_rcpt_verdict v = rcpt(f, addr, suppressed, &reply);
    ck_assert_msg(v == POLICY_RCPT_REJECT, "%s: verdict %d, want REJECT", addr, v);
    ck_assert_str_eq(reply, want);
    free(reply);
}

START_TEST(test_rcpt_max_recipients)
{
    rcpt_fixture f = fixture(CONFIG_MODE_SANDBOX, 1, 10);
    f.cfg->max_recipients = 2;
    f.accepted = 2;
    /* Checked first: even an unverified sandbox recipient gets 452, and nothing is taken. */
    expect_reject(&f, "stranger@nowhere.test", false, POLICY_REPLY_TOO_MANY_RCPTS);
    expect_reject(&f, "a@example.test", false, POLICY_REPLY_TOO_MANY_RCPTS);
    ck_assert_int_eq(quota_pending(f.q), 0);
    ck_assert(quota_rate_available(f.q, f.now));
    f.accepted = 1;
    ck_assert_int_eq(rcpt(&f, "a@example.test", false, NULL), POLICY_RCPT_ACCEPT);
    quota_free(f.q);
    config_unref(f.cfg);
}
END_TEST

START_TEST(test_rcpt_sandbox)
{
    rcpt_fixture f = fixture(CONFIG_MODE_SANDBOX, -1, -1);
    expect_reject(&f, "stranger@nowhere.test", false, PREFIX "LOCAL: stranger@nowhere.test");
    expect_reject(&f, "stranger@nowhere.test", true, PREFIX "LOCAL: stranger@nowhere.test");
    ck_assert_int_eq(quota_pending(f.q), 0);
    /* verified_recipients (domain, subdomain, address) and identities are verified. */
    ck_assert_int_eq(rcpt(&f, "x@friends.test", false, NULL), POLICY_RCPT_ACCEPT);
    ck_assert_int_eq(rcpt(&f, "x@deep.friends.test", false, NULL), POLICY_RCPT_ACCEPT);
    ck_assert_int_eq(rcpt(&f, "PAL@elsewhere.test", false, NULL), POLICY_RCPT_ACCEPT);
    expect_reject(&f, "other@elsewhere.test", false, PREFIX "LOCAL: other@elsewhere.test");
    ck_assert_int_eq(rcpt(&f, "me@example.test", false, NULL), POLICY_RCPT_ACCEPT);
    ck_assert_int_eq(rcpt(&f, "ops@other.test", false, NULL), POLICY_RCPT_ACCEPT);
    /* Simulator addresses pass the sandbox. */
    ck_assert_int_eq(rcpt(&f, "success@simulator.amazonses.com", false, NULL),
                     POLICY_RCPT_SIMULATOR);
    ck_assert_int_eq(rcpt(&f, "Bounce+run7@Simulator.AmazonSES.com", false, NULL),
                     POLICY_RCPT_SIMULATOR);
    expect_reject(&f, "nobody@simulator.amazonses.com", false,
                  PREFIX "LOCAL: nobody@simulator.amazonses.com");
    ck_assert_int_eq(quota_pending(f.q), 5);
    quota_free(f.q);
    config_unref(f.cfg);
}
END_TEST

START_TEST(test_rcpt_production)
{
    rcpt_fixture f = fixture(CONFIG_MODE_PRODUCTION, -1, -1);
    ck_assert_int_eq(rcpt(&f, "stranger@nowhere.test", false, NULL), POLICY_RCPT_ACCEPT);
    ck_assert_int_eq(rcpt(&f, "gone@nowhere.test", true, NULL), POLICY_RCPT_SUPPRESSED);
    ck_assert_int_eq(rcpt(&f, "ooto@simulator.amazonses.com", false, NULL), POLICY_RCPT_SIMULATOR);
    ck_assert_int_eq(quota_pending(f.q), 2);
    quota_free(f.q);
    config_unref(f.cfg);
}
END_TEST

START_TEST(test_rcpt_rate)
{
    rcpt_fixture f = fixture(CONFIG_MODE_PRODUCTION, 1, 100);
    ck_assert_int_eq(rcpt(&f, "a@nowhere.test", false, NULL), POLICY_RCPT_ACCEPT);
    expect_reject(&f, "b@nowhere.test", false, POLICY_REPLY_RATE);
    /* The simulator also needs a token. */
    expect_reject(&f, "success@simulator.amazonses.com", false, POLICY_REPLY_RATE);
    expect_reject(&f, "c@nowhere.test", true, POLICY_REPLY_RATE);
    ck_assert_int_eq(quota_pending(f.q), 1);            /* rejections reserved nothing */
    f.now += 999;
    expect_reject(&f, "b@nowhere.test", false, POLICY_REPLY_RATE);
    f.now += 1;
    ck_assert_int_eq(rcpt(&f, "b@nowhere.test", false, NULL), POLICY_RCPT_ACCEPT);
    f.now += 1000;
    ck_assert_int_eq(rcpt(&f, "success@simulator.amazonses.com", false, NULL),
                     POLICY_RCPT_SIMULATOR);
    expect_reject(&f, "d@nowhere.test", false, POLICY_REPLY_RATE);
    ck_assert_int_eq(quota_pending(f.q), 2);
    quota_free(f.q);
    config_unref(f.cfg);
}
END_TEST

START_TEST(test_rcpt_daily_quota)
{
    rcpt_fixture f = fixture(CONFIG_MODE_PRODUCTION, 3, 1);
    ck_assert_int_eq(rcpt(&f, "a@nowhere.test", false, NULL), POLICY_RCPT_ACCEPT);
    expect_reject(&f, "b@nowhere.test", false, POLICY_REPLY_QUOTA);
    expect_reject(&f, "gone@nowhere.test", true, POLICY_REPLY_QUOTA);   /* before suppression */
    /* The quota rejections took no rate tokens: two are left, for simulator addresses,
     * which do not count against the 24 h quota. */
    ck_assert_int_eq(rcpt(&f, "complaint@simulator.amazonses.com", false, NULL),
                     POLICY_RCPT_SIMULATOR);
    ck_assert_int_eq(rcpt(&f, "suppressionlist@simulator.amazonses.com", false, NULL),
                     POLICY_RCPT_SIMULATOR);
    /* Rate is checked before quota. */
    expect_reject(&f, "b@nowhere.test", false, POLICY_REPLY_RATE);
    ck_assert_int_eq(quota_pending(f.q), 1);
    /* Releasing the open reservation (abandoned transaction) makes room again. */
    quota_daily_release(f.q, 1);
    f.now += 1000;
    ck_assert_int_eq(rcpt(&f, "b@nowhere.test", false, NULL), POLICY_RCPT_ACCEPT);
    quota_daily_commit(f.q, 1, f.now);
    f.now += 1000;
    expect_reject(&f, "c@nowhere.test", false, POLICY_REPLY_QUOTA);
    quota_free(f.q);
    config_unref(f.cfg);
}
END_TEST

START_TEST(test_rcpt_zero_quota_simulator_only)
{
    rcpt_fixture f = fixture(CONFIG_MODE_SANDBOX, -1, 0);
    expect_reject(&f, "me@example.test", false, POLICY_REPLY_QUOTA);
    ck_assert_int_eq(rcpt(&f, "success@simulator.amazonses.com", false, NULL),
                     POLICY_RCPT_SIMULATOR);
    quota_free(f.q);
    config_unref(f.cfg);
}
END_TEST

START_TEST(test_rcpt_suppressed)
{
    rcpt_fixture f = fixture(CONFIG_MODE_SANDBOX, 2, 10);
    ck_assert_int_eq(rcpt(&f, "old@friends.test", true, NULL), POLICY_RCPT_SUPPRESSED);
    ck_assert_int_eq(quota_pending(f.q), 1);            /* suppressed ones count, as in SES */
    /* A simulator address wins over a suppression entry; it reserves nothing. */
    ck_assert_int_eq(rcpt(&f, "success@simulator.amazonses.com", true, NULL),
                     POLICY_RCPT_SIMULATOR);
    ck_assert_int_eq(quota_pending(f.q), 1);
    expect_reject(&f, "old2@friends.test", true, POLICY_REPLY_RATE);
    quota_free(f.q);
    config_unref(f.cfg);
}
END_TEST

static Suite *policy_suite(void)
{
    Suite *s = suite_create("policy");
    TCase *l = tcase_create("lists");
    tcase_add_loop_test(l, test_addr_in_list, 0, sizeof list_cases / sizeof list_cases[0]);
    tcase_add_test(l, test_addr_in_empty_list);
    suite_add_tcase(s, l);
    TCase *r = tcase_create("replies");
    tcase_add_test(r, test_unverified_reply_text);
    tcase_add_test(r, test_unverified_reply_sanitized_and_bounded);
    suite_add_tcase(s, r);
    TCase *snd = tcase_create("sender");
    tcase_add_test(snd, test_mail_from);
    tcase_add_loop_test(snd, test_check_headers, 0, sizeof hdr_cases / sizeof hdr_cases[0]);
    tcase_add_test(snd, test_check_headers_many_addresses);
    suite_add_tcase(s, snd);
    TCase *rc = tcase_create("rcpt");
    tcase_add_test(rc, test_rcpt_max_recipients);
    tcase_add_test(rc, test_rcpt_sandbox);
    tcase_add_test(rc, test_rcpt_production);
    tcase_add_test(rc, test_rcpt_rate);
    tcase_add_test(rc, test_rcpt_daily_quota);
    tcase_add_test(rc, test_rcpt_zero_quota_simulator_only);
    tcase_add_test(rc, test_rcpt_suppressed);
    suite_add_tcase(s, rc);
    return s;
}

TESTLIB_SUITES(policy_suite);
