/* test_config_identity.c — account.identities entries as maps (base/config_identity.c):
 * BYODKIM keys (selector + private_key_file, an optional ed25519 second key), `dkim:
 * required`, on_unsigned, the custom MAIL FROM domain and its behavior_on_mx_failure; the
 * string form keeps its defaults; every bad value is an error naming the key; and
 * config_identity_index finds the entry that verifies a sender. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/util.h"
#include "mta/auth.h"
#include "tests/unit/testlib.h"

#define HEAD                                                                                  \
    "server: {hostname: mta.example.test, spool: ./q}\n"                                      \
    "zones: [az1]\n"                                                                          \
    "ips: [{address: 127.0.0.10, zone: az1, pool: p}]\n"                                      \
    "pools: [{name: p}]\n"                                                                    \
    "configuration_sets: [{name: s, pool: p}]\n"                                              \
    "default_configuration_set: s\n"                                                          \
    "account:\n"                                                                              \
    "  identities:\n"

static config *load(const char *identities, char **err)
{
    char *text = util_asprintf(HEAD "%s", identities);
    *err = NULL;
    config *c = config_load_text(text, strlen(text), "t.yaml", "/etc/kiln", auth_hash_usable, err);
    free(text);
    return c;
}

static void load_fails(const char *identities, const char *expect)
{
    char *err = NULL;
    config *c = load(identities, &err);
    ck_assert_msg(c == NULL, "loaded: %s", identities);
    ck_assert_msg(err && strstr(err, expect), "error '%s' lacks '%s'", err ? err : "(none)", expect);
    free(err);
}

START_TEST(test_forms)
{
    char *err = NULL;
    config *c = load("    - ops@example.net\n"
                     "    - identity: Example.COM\n"
                     "      dkim:\n"
                     "        selector: S1\n"
                     "        private_key_file: dkim/example.pem\n"
                     "        ed25519: {selector: s1e, private_key_file: /k/ed.pem}\n"
                     "      mail_from: {domain: mail.example.com, behavior_on_mx_failure: RejectMessage}\n"
                     "    - identity: example.org\n"
                     "      dkim: required\n"
                     "    - identity: example.info\n"
                     "      dkim: {required: true, on_unsigned: reject}\n",
                     &err);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_uint_eq(c->nidentities, 4);
    ck_assert_str_eq(c->identities[0], "ops@example.net");
    ck_assert_ptr_null(c->identity_auth[0].dkim.selector);
    ck_assert(!c->identity_auth[0].dkim_required);
    ck_assert_str_eq(c->identities[1], "example.com");
    const config_identity *id = &c->identity_auth[1];
    ck_assert_str_eq(id->dkim.selector, "s1");
    ck_assert_str_eq(id->dkim.private_key_file, "/etc/kiln/dkim/example.pem");
    ck_assert_str_eq(id->dkim_ed25519.selector, "s1e");
    ck_assert(id->dkim_required);   /* a key file: required by default */
    ck_assert_int_eq(id->on_unsigned, CONFIG_UNSIGNED_DEFER);
    ck_assert_str_eq(id->mail_from_domain, "mail.example.com");
    ck_assert_int_eq(id->mx_failure, CONFIG_MXFAIL_REJECT);
    ck_assert(c->identity_auth[2].dkim_required);
    ck_assert_ptr_null(c->identity_auth[2].dkim.selector);
    ck_assert_int_eq(c->identity_auth[3].on_unsigned, CONFIG_UNSIGNED_REJECT);
    /* who verifies whom */
    ck_assert_int_eq(config_identity_index(c, "ops@example.net"), 0);
    ck_assert_int_eq(config_identity_index(c, "news@example.com"), 1);
    ck_assert_int_eq(config_identity_index(c, "a@eu.Example.com"), 1);
    ck_assert_int_eq(config_identity_index(c, "a@badexample.com"), -1);
    ck_assert_int_eq(config_identity_index(c, "other@example.net"), -1);
    config_unref(c);
}
END_TEST

START_TEST(test_errors)
{
    load_fails("    - identity: example.com\n      dkim: {selector: s1}\n",
               "needs both selector and private_key_file");
    load_fails("    - identity: example.com\n      dkim: optional\n", "is not 'required'");
    load_fails("    - identity: example.com\n      dkim: {selektor: s1}\n", "selektor");
    load_fails("    - identity: example.com\n      dkim: {selector: 'a b', private_key_file: /k}\n",
               "DKIM selector");
    load_fails("    - identity: example.com\n      dkim: {on_unsigned: drop}\n", "on_unsigned");
    load_fails("    - identity: example.com\n      mail_from: {domain: mail.example.org}\n",
               "not a subdomain of example.com");
    load_fails("    - identity: example.com\n      mail_from: {domain: example.com}\n",
               "not a subdomain");
    load_fails("    - identity: example.com\n      mail_from: {behavior_on_mx_failure: RejectMessage}\n",
               "needs domain");
    load_fails("    - identity: example.com\n      mail_from: {domain: m.example.com, "
               "behavior_on_mx_failure: Reject}\n",
               "behavior_on_mx_failure");
    load_fails("    - dkim: required\n", "needs identity");
    load_fails("    - identity: example.com\n      dkim: {selector: s1, private_key_file: /a, "
               "ed25519: {selector: s1, private_key_file: /b}}\n",
               "its own selector");
    load_fails("    - identity: example.com\n      dkim: {ed25519: {selector: e, private_key_file: /b}}\n",
               "needs the first key");
}
END_TEST

static Suite *config_identity_suite(void)
{
    Suite *s = suite_create("config_identity");
    TCase *tc = tcase_create("identities");
    tcase_add_test(tc, test_forms);
    tcase_add_test(tc, test_errors);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(config_identity_suite);
