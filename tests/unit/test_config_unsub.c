/* test_config_unsub.c — a configuration set's list_unsubscribe and feedback_id keys
 * (base/config_unsub.c): what --check-config refuses, each error naming the file, the line,
 * the key path (configuration_sets[0].list_unsubscribe.url) and what is wrong (not https,
 * not absolute, unknown or unclosed variables, a variable in the host, characters a URL
 * cannot hold, a fragment, user info, a missing url, a mailto that is not a plain address,
 * a feedback_id that is not printable ASCII or too long); what it accepts, as the set then
 * holds it; which sets need one recipient per delivery; the --check-config summary; and
 * conf/examples/full.yaml's marked set. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

static const char *dir;

static void setup(void) { dir = testlib_tmpdir("cfgunsub"); }
static void teardown(void) { testlib_tmpdir_remove(dir); }

/* Loads a config whose one set (at line 4) has the extra keys `keys` (YAML flow map
 * entries, e.g. "list_unsubscribe: {url: ...}"). */
static config *load_set(const char *keys, char **err, char *file, size_t n)
{
    snprintf(file, n, "%s/kiln.yaml", dir);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "server: {hostname: mta.example.test}\npools: [{name: p}]\n"
               "configuration_sets:\n  - {name: s, pool: p, %s}\n"
               "default_configuration_set: s\n", keys);
    fclose(f);
    return config_load(file, NULL, err);
}

#define LU(url) "list_unsubscribe: {url: '" url "'}"
#define KNOWN "(known: {recipient}, {message_id}, {configuration_set})"

static const struct {
    const char *keys;
    const char *path;       /* key path in the error, after configuration_sets[0]. */
    const char *fragment;   /* in the error */
} bad[] = {
    {LU("http://e.test/u"), "list_unsubscribe.url",
     "'http://e.test/u' is not an absolute https:// URL (RFC 8058"},
    {LU("/unsub?r={recipient}"), "list_unsubscribe.url", "is not an absolute https:// URL"},
    {LU("example.com/unsub"), "list_unsubscribe.url", "is not an absolute https:// URL"},
    {LU("mailto:u@e.test"), "list_unsubscribe.url", "is not an absolute https:// URL"},
    {LU("https://e.test/u?r={email}"), "list_unsubscribe.url",
     "names an unknown variable {email} " KNOWN},
    {LU("https://e.test/u?r={Recipient}"), "list_unsubscribe.url",
     "names an unknown variable {Recipient}"},
    {LU("https://e.test/u?r={recipient"), "list_unsubscribe.url",
     "has a '{' without a closing '}'"},
    {LU("https://e.test/u?r=}"), "list_unsubscribe.url", "has a '}' without a '{' before it"},
    {LU("https://e.test/a b"), "list_unsubscribe.url", "contains a blank or control character"},
    {LU("https://e.test/u?x=\"y\""), "list_unsubscribe.url",
     "contains '\"', which is not allowed in a URL (percent-encode it as %22)"},
    {LU("https://e.test/u?x=<y>"), "list_unsubscribe.url", "contains '<', which is not allowed"},
    {LU("https://e.test/u?x=a|b"), "list_unsubscribe.url", "contains '|'"},
    {LU("https://e.test/\xc3\xbc"), "list_unsubscribe.url",
     "contains byte 0xC3, which is not allowed in a URL (percent-encode it as %C3)"},
    {LU("https://e.test/u%zz"), "list_unsubscribe.url",
     "has a '%' that is not followed by two hex digits"},
    {LU("https://e.test/u#top"), "list_unsubscribe.url", "has a fragment (#...)"},
    {LU("https://{recipient}.e.test/u"), "list_unsubscribe.url",
     "uses a variable in the host; variables belong in the path or query"},
    {LU("https://u.e.test{message_id}/"), "list_unsubscribe.url", "uses a variable in the host"},
    {LU("https://user@e.test/u"), "list_unsubscribe.url", "has user info"},
    {LU("https://e.test:0/u"), "list_unsubscribe.url", "has port 0"},
    {LU("https:///u"), "list_unsubscribe.url", "has no host"},
    {LU("https://a..b/u"), "list_unsubscribe.url", "not a valid host name: a..b"},
    {"list_unsubscribe: {url: [x]}", "list_unsubscribe.url",
     "expected an https:// URL, got a list"},
    {"list_unsubscribe: {mailto: u@e.test}", "list_unsubscribe.url",
     "required key is missing (an https:// URL: RFC 8058 one-click unsubscribe needs one; a "
     "mailto alone is not one-click)"},
    {"list_unsubscribe: {}", "list_unsubscribe.url", "required key is missing"},
    {"list_unsubscribe: [x]", "list_unsubscribe", "expected a map, got a list"},
    {"list_unsubscribe: {url: 'https://e.test/u', post: yes}", "list_unsubscribe.post",
     "unknown key 'post'; allowed here: url, mailto"},
    {"list_unsubscribe: {url: 'https://e.test/u', mailto: 'mailto:u@e.test'}",
     "list_unsubscribe.mailto",
     "'mailto:u@e.test': write the address alone (kiln writes "
     "mailto:ADDRESS?subject=unsubscribe)"},
    {"list_unsubscribe: {url: 'https://e.test/u', mailto: unsubscribe}",
     "list_unsubscribe.mailto", "'unsubscribe' is not an address a mailto: URL can carry"},
    {"list_unsubscribe: {url: 'https://e.test/u', mailto: 'a b@e.test'}",
     "list_unsubscribe.mailto", "is not an address a mailto: URL can carry"},
    {"list_unsubscribe: {url: 'https://e.test/u', mailto: 'u..v@e.test'}",
     "list_unsubscribe.mailto", "is not an address"},
    {"list_unsubscribe: {url: 'https://e.test/u', mailto: 'u?x@e.test'}",
     "list_unsubscribe.mailto", "is not an address"},
    {"list_unsubscribe: {url: 'https://e.test/u', mailto: 'u@-e.test'}",
     "list_unsubscribe.mailto", "is not an address"},
    {"list_unsubscribe: {url: 'https://e.test/u', mailto: '{recipient}@e.test'}",
     "list_unsubscribe.mailto", "is not an address"},
    {"feedback_id: 'c\xc3\xa4mp:1:kiln'", "feedback_id",
     "contains byte 0xC3 at offset 1; a Feedback-ID is printable ASCII"},
    {"feedback_id: \"a\\tb\"", "feedback_id", "contains byte 0x09 at offset 1"},
    {"feedback_id: \"a\\nb\"", "feedback_id", "contains byte 0x0A at offset 1"},
    {"feedback_id: ''", "feedback_id", "must not be empty"},
    {"feedback_id: ' a:b'", "feedback_id", "' a:b' starts or ends with a blank"},
    {"feedback_id: [a]", "feedback_id", "expected a text value, got a list"},
};

START_TEST(test_bad_keys)
{
    char file[300], prefix[400];
    char *err = NULL;
    config *c = load_set(bad[_i].keys, &err, file, sizeof file);
    ck_assert_msg(c == NULL, "%s: loaded but should fail", bad[_i].keys);
    snprintf(prefix, sizeof prefix, "%s:4: configuration_sets[0].%s: ", file, bad[_i].path);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "%s:\n  error:    %s\n  expected: %s",
                  bad[_i].keys, err, prefix);
    ck_assert_msg(strstr(err, bad[_i].fragment) != NULL, "%s:\n  error: %s\n  expected: %s",
                  bad[_i].keys, err, bad[_i].fragment);
    free(err);
}
END_TEST

/* The limits: a url template of 500 bytes and a feedback_id of 200 pass, one more fails. */
START_TEST(test_length_limits)
{
    char file[300], keys[1200], url[600];
    char *err = NULL;
    size_t n = (size_t)snprintf(url, sizeof url, "https://e.test/u?r={recipient}&t=");
    while (n < CONFIG_UNSUB_URL_MAX) url[n++] = 'a';
    url[n] = '\0';
    snprintf(keys, sizeof keys, "list_unsubscribe: {url: '%s'}", url);
    config *c = load_set(keys, &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_uint_eq(strlen(c->sets[0].unsub_url), CONFIG_UNSUB_URL_MAX);
    config_unref(c);
    snprintf(keys, sizeof keys, "list_unsubscribe: {url: '%sa'}", url);
    c = load_set(keys, &err, file, sizeof file);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(err, "list_unsubscribe.url: ") &&
                      strstr(err, "is 501 bytes long; at most 500 are allowed"),
                  "%s", err);
    free(err);

    char fid[300];
    memset(fid, 'f', CONFIG_FEEDBACK_ID_MAX);
    fid[CONFIG_FEEDBACK_ID_MAX] = '\0';
    snprintf(keys, sizeof keys, "feedback_id: %s", fid);
    c = load_set(keys, &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_str_eq(c->sets[0].feedback_id, fid);
    config_unref(c);
    snprintf(keys, sizeof keys, "feedback_id: %sf", fid);
    c = load_set(keys, &err, file, sizeof file);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(err, "configuration_sets[0].feedback_id: is 201 bytes long; at most "
                              "200 are allowed"),
                  "%s", err);
    free(err);
}
END_TEST

/* Accepted values are kept as written; {recipient} makes the set per-recipient; the summary
 * of --check-config shows both keys. */
START_TEST(test_good_keys)
{
    char file[300];
    char *err = NULL;
    config *c = load_set(
        "list_unsubscribe: {url: 'HTTPS://unsub.example.com:8443/u/{configuration_set}"
        "?id={message_id}&r={recipient}&x=%2C,;(ok)', mailto: \"list+unsub.1@example.com\"}, "
        "feedback_id: 'campaign:marketing:kiln'",
        &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    const config_set *s = &c->sets[0];
    ck_assert_str_eq(s->unsub_url, "HTTPS://unsub.example.com:8443/u/{configuration_set}"
                                   "?id={message_id}&r={recipient}&x=%2C,;(ok)");
    ck_assert_str_eq(s->unsub_mailto, "list+unsub.1@example.com");
    ck_assert_str_eq(s->feedback_id, "campaign:marketing:kiln");
    ck_assert(config_set_per_recipient(s));
    char *sum = config_summary(c);
    ck_assert_msg(strstr(sum, ", list_unsubscribe <HTTPS://unsub.example.com:8443/u/"
                              "{configuration_set}?id={message_id}&r={recipient}&x=%2C,;(ok)> "
                              "<mailto:list+unsub.1@example.com?subject=unsubscribe> (one "
                              "recipient per delivery), feedback_id campaign:marketing:kiln\n"),
                  "%s", sum);
    free(sum);
    config_unref(c);

    /* no {recipient}: one delivery for all the recipients of a domain; IPv6 literal host */
    c = load_set("list_unsubscribe: {url: 'https://[2001:db8::1]/u?id={message_id}'}", &err,
                 file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert(!config_set_per_recipient(&c->sets[0]));
    ck_assert_ptr_null(c->sets[0].unsub_mailto);
    ck_assert_ptr_null(c->sets[0].feedback_id);
    sum = config_summary(c);
    ck_assert_msg(strstr(sum, ", list_unsubscribe <https://[2001:db8::1]/u?id={message_id}>\n"),
                  "%s", sum);
    free(sum);
    config_unref(c);

    /* feedback_id alone; blanks inside are printable ASCII */
    c = load_set("feedback_id: 'a b:c'", &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_ptr_null(c->sets[0].unsub_url);
    ck_assert_str_eq(c->sets[0].feedback_id, "a b:c");
    ck_assert(!config_set_per_recipient(&c->sets[0]));
    config_unref(c);

    /* neither: the set is not marked */
    c = load_set("priority: 1", &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_ptr_null(c->sets[0].unsub_url);
    ck_assert_ptr_null(c->sets[0].feedback_id);
    ck_assert(!config_set_per_recipient(&c->sets[0]));
    sum = config_summary(c);
    ck_assert_msg(!strstr(sum, "list_unsubscribe") && !strstr(sum, "feedback_id"), "%s", sum);
    free(sum);
    config_unref(c);
}
END_TEST

/* The variables a template may name, and only at their exact spelling. */
START_TEST(test_template_variables)
{
    size_t n = 0;
    ck_assert_int_eq(config_unsub_var_at("{recipient}&x", &n), CONFIG_UNSUB_RECIPIENT);
    ck_assert_uint_eq(n, 11);
    ck_assert_int_eq(config_unsub_var_at("{message_id}", &n), CONFIG_UNSUB_MESSAGE_ID);
    ck_assert_uint_eq(n, 12);
    ck_assert_int_eq(config_unsub_var_at("{configuration_set}/", &n), CONFIG_UNSUB_SET);
    ck_assert_uint_eq(n, 19);
    ck_assert_int_eq(config_unsub_var_at("{recipient", &n), -1);
    ck_assert_int_eq(config_unsub_var_at("recipient}", &n), -1);
    ck_assert_int_eq(config_unsub_var_at("{to}", &n), -1);
    ck_assert(!config_set_per_recipient(NULL));
}
END_TEST

/* The documented example marks its marketing set. */
START_TEST(test_full_example_marks_marketing)
{
    char *err = NULL;
    config *c = config_load(KILN_SRCDIR "/conf/examples/full.yaml", NULL, &err);
    ck_assert_msg(c != NULL, "conf/examples/full.yaml: %s", err);
    const config_set *m = config_find_set(c, "marketing");
    ck_assert_ptr_nonnull(m);
    ck_assert_str_eq(m->unsub_url,
                     "https://example.test/unsubscribe?id={message_id}&r={recipient}");
    ck_assert_str_eq(m->unsub_mailto, "unsubscribe@example.test");
    ck_assert_str_eq(m->feedback_id, "marketing:example.test:kiln");
    ck_assert(config_set_per_recipient(m));
    const config_set *t = config_find_set(c, "txn");
    ck_assert_ptr_null(t->unsub_url);
    ck_assert_ptr_null(t->feedback_id);
    config_unref(c);
}
END_TEST

static Suite *config_unsub_suite(void)
{
    Suite *s = suite_create("config_unsub");
    TCase *tc = tcase_create("list_unsubscribe");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_bad_keys, 0, (int)(sizeof bad / sizeof bad[0]));
    tcase_add_test(tc, test_length_limits);
    tcase_add_test(tc, test_good_keys);
    tcase_add_test(tc, test_template_variables);
    tcase_add_test(tc, test_full_example_marks_marketing);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(config_unsub_suite);
