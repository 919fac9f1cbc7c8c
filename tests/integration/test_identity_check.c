/* test_identity_check.c — mta/identity_check.c's runner against real DNS: a dnsmasq child
 * on a loopback port serves three identities — one with every record right (a DKIM key
 * split over two character-strings, the MAIL FROM domain's MX and SPF, DMARC p=reject),
 * one with nothing published (DMARC asked at the organizational domain too), one with
 * every record wrong (another key, two records at a selector, an MX elsewhere, SPF without
 * the pool's IP, DMARC p=reject with kiln unaligned) — and each is reported as such, in
 * the result, the JSON and the table. Then a resolver that never answers: every record is
 * TEMPFAIL and the SES statuses TEMPORARY_FAILURE; a check cancelled before its answers
 * never calls back and leaves nothing behind (ASan), also when dns_free follows at once.
 * Every loop run is bounded by a guard timer; the child is ended by its PID. */
#include <arpa/inet.h>
#include <ares.h>
#include <check.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/util.h"
#include "mta/dns.h"
#include "mta/identity_check.h"
#include "tests/integration/dnslab.h"
#include "tests/unit/testlib.h"

#define DNSMASQ DNSLAB_DNSMASQ
#define GUARD_S 10.0

#define KEY_GOOD "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAgoodkey0123456789"
#define KEY_ED "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="

/* ---------- dnsmasq (as tests/integration/test_dns.c starts it) ---------- */

static const char *const zone_args[] = {
    "--local=/test/",
    "--local-ttl=60",
    /* dnsmasq splits a --txt-record's text at commas into character-strings and keeps quotes
     * as text: none of these records has a comma, so none is quoted */
    /* good.test: everything as kiln needs it; the RSA record in two character-strings */
    "--txt-record=s1._domainkey.good.test,v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIB,"
    "CgKCAQEAgoodkey0123456789",
    "--txt-record=e1._domainkey.good.test,v=DKIM1; k=ed25519; p=" KEY_ED,
    "--mx-host=mail.good.test,mx.kiln.test,10",
    "--txt-record=mail.good.test,v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all",
    "--txt-record=_dmarc.good.test,v=DMARC1; p=reject; rua=mailto:postmaster@good.test",
    /* missing.test: a TXT record that is not DMARC, nothing else */
    "--txt-record=missing.test,site-verification=abc",
    /* wrong.test */
    "--txt-record=s1._domainkey.wrong.test,v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBoldkey",
    "--txt-record=e1._domainkey.wrong.test,v=DKIM1; k=ed25519; p=" KEY_ED,
    "--txt-record=e1._domainkey.wrong.test,v=DKIM1; k=ed25519; p=AAAAother",
    "--mx-host=mail.wrong.test,mx.elsewhere.test,10",
    "--txt-record=mail.wrong.test,v=spf1 ip4:198.51.100.0/24 -all",
    "--txt-record=_dmarc.wrong.test,v=DMARC1; p=reject",
};

static dnslab dm;
static bool have_dnsmasq;

static void dm_setup(void)
{
    have_dnsmasq = access(DNSMASQ, X_OK) == 0;
    if (!have_dnsmasq) return;
    ck_assert_msg(dnslab_start(&dm, zone_args, sizeof zone_args / sizeof zone_args[0]),
                  "dnsmasq did not answer within 5 s");
}

static void dm_teardown(void)
{
    dnslab_stop(&dm);
}

#define NEED_DNSMASQ()                                                                                \
    do {                                                                                              \
        if (!have_dnsmasq) {                                                                          \
            fprintf(stderr, "test_identity_check: SKIP %s: %s is not installed\n", __func__, DNSMASQ); \
            return;                                                                                   \
        }                                                                                             \
    } while (0)

/* ---------- the loop ---------- */

typedef struct test_env {
    struct ev_loop *loop;
    ev_timer guard;
    bool timed_out;
    config *cfg;
    dns *d;
    identity_check_result *res;
    int calls;
    bool returned;               /* identity_check_start had returned when cb ran */
} test_env;

static void guard_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    ((test_env *)w->data)->timed_out = true;
    ev_break(loop, EVBREAK_ALL);
}

static void env_init(test_env *e, int port, int64_t timeout_ms)
{
    memset(e, 0, sizeof *e);
    e->loop = ev_loop_new(EVFLAG_AUTO);
    ev_timer_init(&e->guard, guard_cb, GUARD_S, 0.);
    e->guard.data = e;
    e->cfg = testlib_config_new();
    testlib_config_add_dns_server(e->cfg, "127.0.0.1", port);
    e->cfg->dns_timeout_ms = timeout_ms;
    char *err = NULL;
    e->d = dns_new(e->loop, e->cfg, NULL, &err);
    ck_assert_msg(e->d != NULL, "dns_new: %s", err ? err : "?");
}

static void env_free(test_env *e)
{
    identity_check_result_free(e->res);
    dns_free(e->d);
    ev_timer_stop(e->loop, &e->guard);
    ev_loop_destroy(e->loop);
    config_unref(e->cfg);
}

static void on_result(void *arg, identity_check_result *r)
{
    test_env *e = arg;
    ck_assert_msg(e->returned, "the callback ran inside identity_check_start");
    e->calls++;
    identity_check_result_free(e->res);
    e->res = r;
    ev_break(e->loop, EVBREAK_ALL);
}

/* Runs the loop until the check's callback, or for at most `for_s` seconds. */
static void run(test_env *e, double for_s)
{
    e->timed_out = false;
    ev_timer_set(&e->guard, for_s, 0.);
    ev_timer_start(e->loop, &e->guard);
    ev_run(e->loop, 0);
    ev_timer_stop(e->loop, &e->guard);
}

static void check(test_env *e, const identity_check_req *q)
{
    e->returned = false;
    e->calls = 0;
    identity_check_start(e->d, q, on_result, e);
    e->returned = true;
    run(e, GUARD_S);
    ck_assert_msg(!e->timed_out, "no verdict within %.0f s", GUARD_S);
    ck_assert_int_eq(e->calls, 1);
}

static const identity_dkim_selector sels[] = {{"s1", "rsa", KEY_GOOD}, {"e1", "ed25519", KEY_ED}};
static const char *const pool[] = {"192.0.2.10", "2001:db8::25"};

static identity_check_req req_for(const char *identity, const char *mail_from, bool signing)
{
    identity_check_req q = {
        .identity = identity,
        .selectors = sels,
        .nselectors = 2,
        .signing_enabled = signing,
        .mail_from_domain = mail_from,
        .mail_from_mx = "mx.kiln.test",
        .server_hostname = "mta.kiln.test",
        .pool_ips = pool,
        .npool_ips = 2,
    };
    return q;
}

static const identity_record *rec(const identity_check_result *r, identity_rec_kind k, const char *sel)
{
    const identity_record *x = identity_check_find(r, k, sel);
    ck_assert_ptr_nonnull(x);
    return x;
}

#define ASSERT_REC(r, kind, sel, st, part)                                                              \
    do {                                                                                             \
        const identity_record *x_ = rec((r), (kind), (sel));                                        \
        ck_assert_msg(x_->status == (st), "%s %s: %s (%s)", identity_rec_kind_name(kind), x_->name,  \
                      identity_status_name(x_->status), x_->reason);                                 \
        ck_assert_msg(strstr(x_->reason, (part)), "%s: reason \"%s\" lacks \"%s\"", x_->name, x_->reason, (part)); \
    } while (0)

#define ASSERT_HAS(s, part) ck_assert_msg(strstr((s), (part)), "\"%s\" lacks \"%s\"", (s), (part))

/* ---------- against dnsmasq ---------- */

START_TEST(test_correct_records)
{
    NEED_DNSMASQ();
    test_env e;
    env_init(&e, dm.port, 2000);
    identity_check_req q = req_for("good.test", "mail.good.test", true);
    check(&e, &q);
    identity_check_result *r = e.res;
    ck_assert_int_eq(r->nrecords, 5);
    ASSERT_REC(r, IDENTITY_REC_DKIM, "s1", IDENTITY_PUBLISHED, "the published key is kiln's (k=rsa)");
    ASSERT_REC(r, IDENTITY_REC_DKIM, "e1", IDENTITY_PUBLISHED, "k=ed25519");
    ASSERT_REC(r, IDENTITY_REC_MX, NULL, IDENTITY_PUBLISHED, "the MX names mx.kiln.test");
    ASSERT_REC(r, IDENTITY_REC_SPF, NULL, IDENTITY_PUBLISHED,
               "authorizes every pool IP: 192.0.2.10 (ip4:192.0.2.0/24), 2001:db8::25 (ip6:2001:db8::/32)");
    ASSERT_REC(r, IDENTITY_REC_DMARC, NULL, IDENTITY_PUBLISHED, "p=reject; kiln's mail is aligned");
    /* the two character-strings were read as one record */
    ck_assert_str_eq(rec(r, IDENTITY_REC_DKIM, "s1")->found, "v=DKIM1; k=rsa; p=" KEY_GOOD);
    ck_assert_str_eq(rec(r, IDENTITY_REC_MX, NULL)->found, "10 mx.kiln.test");
    ck_assert_int_eq(r->dkim_status, IDENTITY_SES_SUCCESS);
    ck_assert_int_eq(r->mail_from_status, IDENTITY_SES_SUCCESS);
    for (size_t i = 0; i < r->nrecords; i++) ck_assert_ptr_null(r->records[i].publish);

    json_t *j = identity_check_to_json(r, &(identity_json_opts){.verified_for_sending = true, .current_key_bits = 2048});
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "DkimAttributes"), "Status")), "SUCCESS");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "MailFromAttributes"), "MailFromDomainStatus")),
                     "SUCCESS");
    json_decref(j);
    char *text = identity_check_to_text(r);
    ASSERT_HAS(text, "identity good.test (domain): DKIM SUCCESS, signing enabled; MAIL FROM mail.good.test SUCCESS\n");
    ck_assert_ptr_null(strstr(text, "publish:"));
    free(text);
    env_free(&e);
}
END_TEST

START_TEST(test_missing_records)
{
    NEED_DNSMASQ();
    test_env e;
    env_init(&e, dm.port, 2000);
    identity_check_req q = req_for("someone@news.missing.test", "mail.news.missing.test", true);
    check(&e, &q);
    identity_check_result *r = e.res;
    ck_assert(r->is_address);
    ASSERT_REC(r, IDENTITY_REC_DKIM, "s1", IDENTITY_MISSING, "s1._domainkey.news.missing.test does not exist (NXDOMAIN)");
    ASSERT_REC(r, IDENTITY_REC_DKIM, "e1", IDENTITY_MISSING, "does not exist");
    ASSERT_REC(r, IDENTITY_REC_MX, NULL, IDENTITY_MISSING, "mail.news.missing.test does not exist");
    ASSERT_REC(r, IDENTITY_REC_SPF, NULL, IDENTITY_MISSING, "no SPF record");
    ASSERT_REC(r, IDENTITY_REC_DMARC, NULL, IDENTITY_MISSING,
               "no DMARC record at _dmarc.news.missing.test nor at _dmarc.missing.test");
    ck_assert_int_eq(r->dkim_status, IDENTITY_SES_PENDING);
    ck_assert_int_eq(r->mail_from_status, IDENTITY_SES_PENDING);
    char *text = identity_check_to_text(r);
    ASSERT_HAS(text, "publish: s1._domainkey.news.missing.test TXT \"v=DKIM1; k=rsa; p=" KEY_GOOD "\"\n");
    ASSERT_HAS(text, "publish: e1._domainkey.news.missing.test TXT \"v=DKIM1; k=ed25519; p=" KEY_ED "\"\n");
    ASSERT_HAS(text, "publish: mail.news.missing.test MX 10 mx.kiln.test\n");
    ASSERT_HAS(text, "publish: mail.news.missing.test TXT \"v=spf1 ip4:192.0.2.10 ip6:2001:db8::25 -all\"\n");
    ASSERT_HAS(text, "publish: _dmarc.news.missing.test TXT \"v=DMARC1; p=none; rua=mailto:postmaster@news.missing.test\"\n");
    free(text);
    json_t *j = identity_check_to_json(r, NULL);
    ck_assert_str_eq(json_string_value(json_object_get(j, "IdentityType")), "EMAIL_ADDRESS");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "DkimAttributes"), "Status")), "PENDING");
    json_decref(j);
    env_free(&e);
}
END_TEST

START_TEST(test_wrong_records)
{
    NEED_DNSMASQ();
    test_env e;
    env_init(&e, dm.port, 2000);
    identity_check_req q = req_for("wrong.test", "mail.wrong.test", false);
    check(&e, &q);
    identity_check_result *r = e.res;
    ASSERT_REC(r, IDENTITY_REC_DKIM, "s1", IDENTITY_WRONG, "the published key does not match the key kiln signs with");
    ASSERT_REC(r, IDENTITY_REC_DKIM, "e1", IDENTITY_WRONG, "2 TXT records (one of them is kiln's key)");
    ASSERT_REC(r, IDENTITY_REC_MX, NULL, IDENTITY_WRONG, "the MX does not name mx.kiln.test");
    ASSERT_REC(r, IDENTITY_REC_SPF, NULL, IDENTITY_WRONG,
               "does not authorize pool IP 192.0.2.10 (-all), 2001:db8::25 (-all)");
    ASSERT_REC(r, IDENTITY_REC_DMARC, NULL, IDENTITY_WRONG,
               "DMARC p=reject but kiln would send unaligned mail: kiln does not DKIM-sign for wrong.test; SPF of "
               "MAIL FROM domain mail.wrong.test does not pass for the pool");
    ck_assert_int_eq(r->dkim_status, IDENTITY_SES_FAILED);
    ck_assert_int_eq(r->mail_from_status, IDENTITY_SES_FAILED);
    ck_assert_str_eq(rec(r, IDENTITY_REC_MX, NULL)->found, "10 mx.elsewhere.test");
    char *text = identity_check_to_text(r);
    ASSERT_HAS(text, "identity wrong.test (domain): DKIM FAILED, signing disabled; MAIL FROM mail.wrong.test FAILED\n");
    ASSERT_HAS(text, "found: v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBoldkey\n");
    ASSERT_HAS(text, "publish: mail.wrong.test MX 10 mx.kiln.test\n");
    ASSERT_HAS(text, "publish: mail.wrong.test TXT \"v=spf1 ip4:192.0.2.10 ip6:2001:db8::25 ip4:198.51.100.0/24 -all\"\n");
    free(text);
    json_t *j = identity_check_to_json(r, NULL);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "MailFromAttributes"), "MailFromDomainStatus")),
                     "FAILED");
    json_t *recs = json_object_get(json_object_get(j, "kiln"), "Records");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(recs, 0), "Status")), "WRONG");
    json_decref(j);
    env_free(&e);
}
END_TEST

/* ---------- a resolver that never answers ---------- */

START_TEST(test_tempfail_everywhere)
{
    int port;
    int sfd = dnslab_silent_server(&port);
    test_env e;
    env_init(&e, port, 300);
    identity_check_req q = req_for("good.test", "mail.good.test", true);
    check(&e, &q);
    identity_check_result *r = e.res;
    for (size_t i = 0; i < r->nrecords; i++) {
        ck_assert_msg(r->records[i].status == IDENTITY_TEMPFAIL, "%s: %s", r->records[i].name,
                      identity_status_name(r->records[i].status));
        ASSERT_HAS(r->records[i].reason, "not known yet");
        ck_assert_ptr_null(r->records[i].publish);
    }
    ck_assert_int_eq(r->dkim_status, IDENTITY_SES_TEMPORARY_FAILURE);
    ck_assert_int_eq(r->mail_from_status, IDENTITY_SES_TEMPORARY_FAILURE);
    env_free(&e);
    close(sfd);
}
END_TEST

START_TEST(test_cancel)
{
    int port;
    int sfd = dnslab_silent_server(&port);
    test_env e;
    env_init(&e, port, 300);
    identity_check_req q = req_for("good.test", "mail.good.test", true);
    e.returned = true;
    identity_check *c = identity_check_start(e.d, &q, on_result, &e);
    ev_run(e.loop, EVRUN_NOWAIT);                /* the queries go out */
    identity_check_cancel(c);
    run(&e, 1.5);                                /* past every timeout: nothing may come */
    ck_assert_int_eq(e.calls, 0);
    /* a second one, cancelled with its queries in flight and the resolver freed at once */
    c = identity_check_start(e.d, &q, on_result, &e);
    identity_check_cancel(c);
    env_free(&e);
    ck_assert_int_eq(e.calls, 0);
    close(sfd);
}
END_TEST

static Suite *identity_suite(void)
{
    if (access(DNSMASQ, X_OK) != 0)
        fprintf(stderr, "test_identity_check: %s not installed: the dnsmasq cases are skipped\n", DNSMASQ);
    Suite *s = suite_create("identity_check");
    TCase *dm = tcase_create("dnsmasq");
    tcase_set_timeout(dm, 60);
    tcase_add_unchecked_fixture(dm, dm_setup, dm_teardown);
    tcase_add_test(dm, test_correct_records);
    tcase_add_test(dm, test_missing_records);
    tcase_add_test(dm, test_wrong_records);
    suite_add_tcase(s, dm);
    TCase *local = tcase_create("local");
    tcase_set_timeout(local, 30);
    tcase_add_test(local, test_tempfail_everywhere);
    tcase_add_test(local, test_cancel);
    suite_add_tcase(s, local);
    return s;
}

TESTLIB_SUITES(identity_suite);
