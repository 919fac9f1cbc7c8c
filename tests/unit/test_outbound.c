/* test_outbound.c — the last step before a message leaves (mta/outbound.c) with real keys
 * (mta/dkim_keys.c): BYODKIM signs at once, Easy DKIM only once its record is live; the
 * custom MAIL FROM with its MX found, missing (UseDefaultValue / RejectMessage) and not yet
 * checked; dkim: required deferring or bouncing what no key signs; line ends made what the
 * wire carries; <> stays <>; the envelope token; rotation refused until the record is live;
 * with a feedback section, the HMAC'd VERP token (golden values from Python) on the custom
 * MAIL FROM domain, else on feedback.bounce_domain, else the submitted sender, scope 1 for
 * one recipient and 0 for several; without it, the envelope exactly as before. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/config.h"
#include "base/util.h"
#include "mta/auth.h"
#include "mta/dkim.h"
#include "mta/dkim_keys.h"
#include "mta/outbound.h"
#include "tests/unit/testlib.h"

static const char *dir;
static config *cfg;
static dkim_keys *keys;
static outbound_mx_state mx = OUTBOUND_MX_UNKNOWN;

static outbound_mx_state mx_op(void *arg, const char *domain)
{
    (void)arg;
    (void)domain;
    return mx;
}

static void setup(void)
{
    dir = testlib_tmpdir("outbound");
    char *err = NULL;
    dkim_key *k = dkim_key_generate(DKIM_ALG_RSA_SHA256, &err);
    ck_assert_msg(k != NULL, "%s", err);
    char *path = util_asprintf("%s/byo.pem", dir);
    ck_assert_int_eq(dkim_key_write_pem(k, path, &err), 0);
    dkim_key_free(k);
    char *text = util_asprintf(
        "server: {hostname: mta.example.test, spool: %s/spool}\n"
        "zones: [az1]\n"
        "ips: [{address: 127.0.0.10, zone: az1, pool: p}]\n"
        "pools: [{name: p}]\n"
        "configuration_sets: [{name: s, pool: p}]\n"
        "default_configuration_set: s\n"
        "account:\n"
        "  identities:\n"
        "    - identity: byo.test\n"
        "      dkim: {selector: s1, private_key_file: %s}\n"
        "      mail_from: {domain: mail.byo.test}\n"
        "    - identity: strict.test\n"
        "      mail_from: {domain: mail.strict.test, behavior_on_mx_failure: RejectMessage}\n"
        "    - identity: must.test\n"
        "      dkim: required\n"
        "    - identity: mustnot.test\n"
        "      dkim: {required: true, on_unsigned: reject}\n"
        "    - easy.test\n",
        dir, path);
    cfg = config_load_text(text, strlen(text), "t.yaml", "/", auth_hash_usable, &err);
    ck_assert_msg(cfg != NULL, "%s", err);
    free(text);
    free(path);
    ck_assert_int_eq(mkdir(cfg->spool, 0700), 0);   /* kilnd's spool exists */
    keys = dkim_keys_new(cfg->spool, NULL);
    ck_assert_msg(dkim_keys_load(keys, cfg, &err) == 0, "%s", err);
    mx = OUTBOUND_MX_UNKNOWN;
}

static void teardown(void)
{
    dkim_keys_free(keys);
    config_unref(cfg);
    testlib_tmpdir_remove(dir);
}

static int prepare(const char *from_hdr, const char *mail_from, const char *body, outbound_out *o)
{
    char *msg = util_asprintf("From: %s\r\nTo: x@dest.test\r\nSubject: hi\r\n\r\n%s", from_hdr, body);
    outbound_in in = {.cfg = cfg, .set = &cfg->sets[0], .msg_id = "0000018c1d2e3f40-ab12cd34-ef56-4789-8abc-def012345678-000000",
                      .mail_from = mail_from, .data = msg, .data_len = strlen(msg), .keys = keys,
                      .mx_state = mx_op, .now_s = 1700000000};
    int rc = outbound_prepare(&in, o);
    free(msg);
    return rc;
}

START_TEST(test_byodkim_and_mail_from)
{
    outbound_out o;
    mx = OUTBOUND_MX_OK;
    ck_assert_int_eq(prepare("Ann <ann@byo.test>", "ann@byo.test", "hello\r\n", &o), 0);
    ck_assert_uint_eq(o.nsigs, 1);
    ck_assert_msg(strncmp(o.data, "DKIM-Signature: ", 16) == 0, "%.60s", o.data);
    ck_assert_ptr_nonnull(strstr(o.signed_by, "d=byo.test s=s1 a=rsa-sha256"));
    ck_assert_str_eq(o.mail_from,
                     "bounce+0000018c1d2e3f40ab12cd34ef5647898abcdef012345678@mail.byo.test");
    outbound_out_free(&o);
    /* a subdomain's address signs with the domain identity's key */
    ck_assert_int_eq(prepare("ops@eu.byo.test", "ops@eu.byo.test", "x\r\n", &o), 0);
    ck_assert_uint_eq(o.nsigs, 1);
    outbound_out_free(&o);
    /* MX missing, UseDefaultValue: the submitted sender */
    mx = OUTBOUND_MX_MISSING;
    ck_assert_int_eq(prepare("ann@byo.test", "ann@byo.test", "x\r\n", &o), 0);
    ck_assert_str_eq(o.mail_from, "ann@byo.test");
    outbound_out_free(&o);
    /* <> stays <> */
    mx = OUTBOUND_MX_OK;
    ck_assert_int_eq(prepare("ann@byo.test", "", "x\r\n", &o), 0);
    ck_assert_str_eq(o.mail_from, "");
    outbound_out_free(&o);
}
END_TEST

START_TEST(test_reject_message_mx)
{
    outbound_out o;
    mx = OUTBOUND_MX_MISSING;
    ck_assert_int_eq(prepare("a@strict.test", "a@strict.test", "x\r\n", &o), -1);
    ck_assert_int_eq(o.fail, RETRY_FAIL_MAIL_FROM_MX);
    ck_assert_ptr_nonnull(strstr(o.why, "MailFromDomainNotVerified"));
    outbound_out_free(&o);
    mx = OUTBOUND_MX_UNKNOWN;
    ck_assert_int_eq(prepare("a@strict.test", "a@strict.test", "x\r\n", &o), -1);
    ck_assert_int_eq(o.fail, RETRY_FAIL_MAIL_FROM_PENDING);
    outbound_out_free(&o);
    mx = OUTBOUND_MX_OK;
    ck_assert_int_eq(prepare("a@strict.test", "a@strict.test", "x\r\n", &o), 0);
    ck_assert_ptr_nonnull(strstr(o.mail_from, "@mail.strict.test"));
    ck_assert_uint_eq(o.nsigs, 0);   /* no key: unsigned, not required */
    outbound_out_free(&o);
}
END_TEST

START_TEST(test_required_unsigned)
{
    outbound_out o;
    ck_assert_int_eq(prepare("a@must.test", "a@must.test", "x\r\n", &o), -1);
    ck_assert_int_eq(o.fail, RETRY_FAIL_UNSIGNED);
    ck_assert_ptr_nonnull(strstr(o.why, "DKIM signing is required"));
    ck_assert_ptr_null(o.data);
    outbound_out_free(&o);
    ck_assert_int_eq(prepare("a@mustnot.test", "a@mustnot.test", "x\r\n", &o), -1);
    ck_assert_int_eq(o.fail, RETRY_FAIL_UNSIGNED_REJECT);
    outbound_out_free(&o);
}
END_TEST

START_TEST(test_line_ends_and_unrelated_from)
{
    outbound_out o;
    ck_assert_int_eq(prepare("x@unrelated.test", "x@unrelated.test", "a\nb\rc\r\nno end", &o), 0);
    ck_assert_uint_eq(o.nsigs, 0);
    ck_assert_ptr_nonnull(strstr(o.data, "\r\n\r\na\r\nb\r\nc\r\nno end\r\n"));
    ck_assert_uint_eq(o.data_len, strlen(o.data));
    outbound_out_free(&o);
}
END_TEST

START_TEST(test_easy_dkim_live_and_rotate)
{
    char *sel = NULL, *err = NULL;
    ck_assert_msg(dkim_keys_generate(keys, cfg, "easy.test", "e1", true, &sel, &err) == 0, "%s", err);
    ck_assert_str_eq(sel, "e1");
    free(sel);
    outbound_out o;
    ck_assert_int_eq(prepare("a@easy.test", "a@easy.test", "x\r\n", &o), 0);
    ck_assert_uint_eq(o.nsigs, 0);                   /* not live yet */
    outbound_out_free(&o);
    dkim_keys_set_live(keys, "easy.test", "e1", true);
    dkim_keys_set_live(keys, "easy.test", "e1e", true);
    ck_assert_int_eq(prepare("a@easy.test", "a@easy.test", "x\r\n", &o), 0);
    ck_assert_uint_eq(o.nsigs, 2);                   /* rsa and ed25519 */
    ck_assert_ptr_nonnull(strstr(o.signed_by, "s=e1 a=rsa-sha256"));
    ck_assert_ptr_nonnull(strstr(o.signed_by, "s=e1e a=ed25519-sha256"));
    outbound_out_free(&o);
    /* generate refuses a taken selector, an unknown domain, a BYODKIM one */
    ck_assert_int_eq(dkim_keys_generate(keys, cfg, "easy.test", "e1", false, &sel, &err), -1);
    free(err);
    ck_assert_int_eq(dkim_keys_generate(keys, cfg, "nope.test", NULL, false, &sel, &err), -1);
    ck_assert_ptr_nonnull(strstr(err, "not a verified identity"));
    free(err);
    ck_assert_int_eq(dkim_keys_generate(keys, cfg, "byo.test", NULL, false, &sel, &err), -1);
    ck_assert_ptr_nonnull(strstr(err, "BYODKIM"));
    free(err);
    /* rotation: nothing to rotate to, then a second selector not live, then live */
    ck_assert_int_eq(dkim_keys_rotate(keys, "easy.test", &sel, &err), -1);
    ck_assert_ptr_nonnull(strstr(err, "no other selector"));
    free(err);
    ck_assert_int_eq(dkim_keys_generate(keys, cfg, "easy.test", "e2", false, &sel, &err), 0);
    free(sel);
    ck_assert_int_eq(dkim_keys_rotate(keys, "easy.test", &sel, &err), -1);
    ck_assert_ptr_nonnull(strstr(err, "not seen live"));
    free(err);
    dkim_keys_set_live(keys, "easy.test", "e2", true);
    ck_assert_int_eq(dkim_keys_rotate(keys, "easy.test", &sel, &err), 0);
    ck_assert_str_eq(sel, "e2");
    free(sel);
    ck_assert_int_eq(prepare("a@easy.test", "a@easy.test", "x\r\n", &o), 0);
    ck_assert_uint_eq(o.nsigs, 1);
    ck_assert_ptr_nonnull(strstr(o.signed_by, "s=e2 "));
    outbound_out_free(&o);
    /* the store survives a reload: the active selector and the keys come back */
    dkim_keys *again = dkim_keys_new(cfg->spool, NULL);
    ck_assert_int_eq(dkim_keys_load(again, cfg, &err), 0);
    size_t n = 0;
    dkim_keys_sel *v = dkim_keys_selectors(again, "easy.test", &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(v[0].selector, "e2");
    ck_assert(v[0].active);
    ck_assert(!v[1].active);
    dkim_keys_sels_free(v, n);
    dkim_keys_free(again);
}
END_TEST

START_TEST(test_token)
{
    char t[64];
    outbound_token("0000018c1d2e3f40-AB12cd34-ef56-4789-8abc-def012345678-000000", t, sizeof t);
    ck_assert_str_eq(t, "0000018c1d2e3f40ab12cd34ef5647898abcdef012345678");
    ck_assert_uint_le(strlen("bounce+") + strlen(t), 64);   /* RFC 5321 local-part limit */
}
END_TEST

START_TEST(test_bad_byodkim_key)
{
    char *path = util_asprintf("%s/bad.pem", dir);
    FILE *f = fopen(path, "w");
    fputs("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n", f);
    fclose(f);
    char *text = util_asprintf(
        "server: {hostname: mta.example.test, spool: %s/spool2}\n"
        "zones: [az1]\nips: [{address: 127.0.0.10, zone: az1, pool: p}]\npools: [{name: p}]\n"
        "configuration_sets: [{name: s, pool: p}]\ndefault_configuration_set: s\n"
        "account:\n  identities:\n    - identity: bad.test\n"
        "      dkim: {selector: s1, private_key_file: %s}\n", dir, path);
    char *err = NULL;
    config *c = config_load_text(text, strlen(text), "t.yaml", "/", auth_hash_usable, &err);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(dkim_keys_load(keys, c, &err), -1);
    ck_assert_msg(strstr(err, "identity bad.test") && strstr(err, path), "%s", err);
    free(err);
    /* the running keys stay */
    outbound_out o;
    ck_assert_int_eq(prepare("ann@byo.test", "ann@byo.test", "x\r\n", &o), 0);
    ck_assert_uint_eq(o.nsigs, 1);
    outbound_out_free(&o);
    config_unref(c);
    free(text);
    free(path);
}
END_TEST

/* ---- the feedback section: the VERP token as MAIL FROM (mta/fbtoken.h) ---- */

#define FB_KEY "0123456789abcdef0123456789abcdef"
#define FB_ID "0000018c1d2e3f40-ab12cd34-ef56-4789-8abc-def012345678-000000"
/* python3: base32(bytes.fromhex(hex of FB_ID) + scope + hmac_sha256(FB_KEY, "kiln-verp-1\0"
 * FB_ID "\0" rcpt.lower())[:6]).lower() without '=' (test_fbtoken.c has the same) */
#define GOLDEN_ONE "aaaadda5fy7ubkyszu2o6vshrgflzxxqci2fm6ab6gezwdajhi"   /* ann@dest.test */
#define GOLDEN_ALL "aaaadda5fy7ubkyszu2o6vshrgflzxxqci2fm6aaffjlomzaqe"   /* scope 0 */

static config *fb_load(const char *feedback)
{
    char *err = NULL;
    char *text = util_asprintf(
        "server: {hostname: mta.example.test, spool: %s/spool}\n"
        "zones: [az1]\n"
        "ips: [{address: 127.0.0.10, zone: az1, pool: p}]\n"
        "pools: [{name: p}]\n"
        "configuration_sets: [{name: s, pool: p}]\n"
        "default_configuration_set: s\n"
        "account:\n"
        "  identities:\n"
        "    - identity: custom.test\n"
        "      mail_from: {domain: mail.custom.test}\n"
        "    - identity: strict.test\n"
        "      mail_from: {domain: mail.strict.test, behavior_on_mx_failure: RejectMessage}\n"
        "    - plain.test\n"
        "%s",
        dir, feedback);
    config *c = config_load_text(text, strlen(text), "t.yaml", dir, auth_hash_usable, &err);
    ck_assert_msg(c != NULL, "%s", err);
    free(text);
    return c;
}

static void fb_setup(void)
{
    dir = testlib_tmpdir("outbound-fb");
    testlib_write_private(dir, "fb.key", FB_KEY "\n");
    mx = OUTBOUND_MX_OK;
    cfg = NULL;
}

static void fb_teardown(void)
{
    if (cfg) config_unref(cfg);
    testlib_tmpdir_remove(dir);
}

/* The MAIL FROM of a message from FROM (header and envelope) to RCPT (NULL: several). */
static char *fb_mail_from(const char *from, const char *rcpt, int *rc)
{
    char *msg = util_asprintf("From: %s\r\nTo: x@dest.test\r\nSubject: hi\r\n\r\nhello\r\n", from);
    outbound_in in = {.cfg = cfg, .set = &cfg->sets[0], .msg_id = FB_ID, .mail_from = from,
                      .rcpt = rcpt, .data = msg, .data_len = strlen(msg), .mx_state = mx_op,
                      .now_s = 1700000000};
    outbound_out o;
    *rc = outbound_prepare(&in, &o);
    free(msg);
    char *r = o.mail_from ? util_strdup(o.mail_from) : NULL;
    outbound_out_free(&o);
    return r;
}

#define FB_SECTION "feedback: {listen: [127.0.0.1:2525], secret_file: fb.key%s}\n"

START_TEST(test_outbound_verp)
{
    char *sect = util_asprintf(FB_SECTION, ", bounce_domain: Bounce.Example.COM");
    cfg = fb_load(sect);
    free(sect);
    int rc;
    /* custom MAIL FROM with its MX: the token on that domain; scope 1 for one recipient */
    char *m = fb_mail_from("ann@custom.test", "Ann@Dest.TEST", &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_str_eq(m, "bounce+" GOLDEN_ONE "@mail.custom.test");
    free(m);
    m = fb_mail_from("ann@custom.test", NULL, &rc);
    ck_assert_str_eq(m, "bounce+" GOLDEN_ALL "@mail.custom.test");
    free(m);
    /* no custom MAIL FROM: the bounce domain (lower-cased by config) */
    m = fb_mail_from("bob@plain.test", NULL, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_str_eq(m, "bounce+" GOLDEN_ALL "@bounce.example.com");
    free(m);
    /* custom MAIL FROM whose MX is missing, UseDefaultValue: the bounce domain, as SES
     * falls back to its own MAIL FROM domain */
    mx = OUTBOUND_MX_MISSING;
    m = fb_mail_from("ann@custom.test", "ann@dest.test", &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_str_eq(m, "bounce+" GOLDEN_ONE "@bounce.example.com");
    free(m);
    /* RejectMessage still refuses */
    m = fb_mail_from("ops@strict.test", "ann@dest.test", &rc);
    ck_assert_int_eq(rc, -1);
    free(m);
    /* <> stays <> */
    mx = OUTBOUND_MX_OK;
    m = fb_mail_from("", "ann@dest.test", &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_str_eq(m, "");
    free(m);
}
END_TEST

/* A feedback section without bounce_domain: identities without a custom MAIL FROM keep
 * the submitted sender; the custom MAIL FROM gets the token. */
START_TEST(test_outbound_no_bounce_domain)
{
    char *sect = util_asprintf(FB_SECTION, "");
    cfg = fb_load(sect);
    free(sect);
    int rc;
    char *m = fb_mail_from("bob@plain.test", "ann@dest.test", &rc);
    ck_assert_str_eq(m, "bob@plain.test");
    free(m);
    m = fb_mail_from("ann@custom.test", "ann@dest.test", &rc);
    ck_assert_str_eq(m, "bounce+" GOLDEN_ONE "@mail.custom.test");
    free(m);
    mx = OUTBOUND_MX_MISSING;
    m = fb_mail_from("ann@custom.test", "ann@dest.test", &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_str_eq(m, "ann@custom.test");
    free(m);
}
END_TEST

/* Without a feedback section nothing changes: the plain hex token, the submitted sender. */
START_TEST(test_outbound_without_feedback)
{
    cfg = fb_load("");
    ck_assert(!cfg->feedback_on);
    int rc;
    char *m = fb_mail_from("ann@custom.test", "ann@dest.test", &rc);
    ck_assert_str_eq(m, "bounce+0000018c1d2e3f40ab12cd34ef5647898abcdef012345678@mail.custom.test");
    free(m);
    m = fb_mail_from("bob@plain.test", "ann@dest.test", &rc);
    ck_assert_str_eq(m, "bob@plain.test");
    free(m);
    mx = OUTBOUND_MX_MISSING;
    m = fb_mail_from("ann@custom.test", NULL, &rc);
    ck_assert_str_eq(m, "ann@custom.test");
    free(m);
}
END_TEST

static Suite *outbound_suite(void)
{
    Suite *s = suite_create("outbound");
    TCase *tc = tcase_create("outbound");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_byodkim_and_mail_from);
    tcase_add_test(tc, test_reject_message_mx);
    tcase_add_test(tc, test_required_unsigned);
    tcase_add_test(tc, test_line_ends_and_unrelated_from);
    tcase_add_test(tc, test_easy_dkim_live_and_rotate);
    tcase_add_test(tc, test_token);
    tcase_add_test(tc, test_bad_byodkim_key);
    suite_add_tcase(s, tc);
    tc = tcase_create("feedback");
    tcase_add_checked_fixture(tc, fb_setup, fb_teardown);
    tcase_add_test(tc, test_outbound_verp);
    tcase_add_test(tc, test_outbound_no_bounce_domain);
    tcase_add_test(tc, test_outbound_without_feedback);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(outbound_suite);
