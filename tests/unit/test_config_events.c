/* test_config_events.c — a configuration set's event destinations in the config
 * (base/config_events.c): webhook URLs kiln cannot use are refused with the key path and
 * the reason (other schemes, no host, user info, fragments, blanks, port 0 or out of
 * range, garbage), ca_file must hold a PEM certificate, batch and max_backlog are range
 * checked and default to 1 and 1,000,000, and the summary of --check-config shows what
 * differs from the defaults. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

#define FIXTURES KILN_SRCDIR "/tests/unit/config"

static const char *dir;

static void setup(void) { dir = testlib_tmpdir("cfgev"); }
static void teardown(void) { testlib_tmpdir_remove(dir); }

/* Loads a config whose one set has the destination `dest` (a YAML flow map) at line 4. */
static config *load_dest(const char *dest, char **err, char *file, size_t n)
{
    snprintf(file, n, "%s/kiln.yaml", dir);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "server: {hostname: mta.example.test}\npools: [{name: p}]\n"
               "configuration_sets:\n  - {name: s, pool: p, events: [%s]}\n"
               "default_configuration_set: s\n", dest);
    fclose(f);
    return config_load(file, NULL, err);
}

static const struct {
    const char *dest;
    const char *path;       /* key path in the error */
    const char *fragment;   /* in the error */
} bad[] = {
    {"{type: webhook, url: 'ftp://h.test/x'}", "events[0].url",
     "'ftp://h.test/x' is not an http:// or https:// URL"},
    {"{type: webhook, url: garbage}", "events[0].url", "'garbage' is not an http:// or https://"},
    {"{type: webhook, url: 'http://'}", "events[0].url", "'http://' has no host"},
    {"{type: webhook, url: 'http:///path'}", "events[0].url", "'http:///path' has no host"},
    {"{type: webhook, url: 'https://?x'}", "events[0].url", "has no host"},
    {"{type: webhook, url: 'http://a..b/'}", "events[0].url", "not a valid host name: a..b"},
    {"{type: webhook, url: 'http://-x:80/'}", "events[0].url", "not a valid host name: -x"},
    {"{type: webhook, url: 'https://user:pw@h.test/x'}", "events[0].url", "has user info"},
    {"{type: webhook, url: 'http://user@h.test/x'}", "events[0].url", "has user info"},
    {"{type: webhook, url: 'http://h.test/x#frag'}", "events[0].url", "has a fragment"},
    {"{type: webhook, url: 'http://h.test/a b'}", "events[0].url",
     "contains a blank or control character"},
    {"{type: webhook, url: 'http://h.test:0/'}", "events[0].url", "has port 0"},
    {"{type: webhook, url: 'http://h.test:70000/'}", "events[0].url", "is not a usable URL"},
    {"{type: webhook, url: 'http://[::1/'}", "events[0].url", "is not a usable URL"},
    {"{type: webhook}", "events[0].url", "required key is missing"},
    {"{type: webhook, url: 'http://h.test/', batch: 0}", "events[0].batch",
     "must be a whole number from 1 to 100 (events per POST), not 0"},
    {"{type: webhook, url: 'http://h.test/', batch: 101}", "events[0].batch", "not 101"},
    {"{type: webhook, url: 'http://h.test/', max_backlog: 0}", "events[0].max_backlog",
     "must be a whole number from 1 to 1000000000 (undelivered events kept), not 0"},
    {"{type: webhook, url: 'https://h.test/', ca_file: /nonexistent/ca.pem}",
     "events[0].ca_file", "cannot read /nonexistent/ca.pem"},
    {"{type: webhook, url: 'https://h.test/', ca_file: " FIXTURES "/good.yaml}",
     "events[0].ca_file", "holds no PEM CA certificate"},
    {"{type: webhook, url: 'https://h.test/', ca_file: " FIXTURES "}", "events[0].ca_file",
     "is not a regular file"},
    {"{type: file, path: e.jsonl, batch: 2}", "events[0].batch",
     "unknown key 'batch'; allowed here: type, path"},
    {"{type: webhook, url: 'http://h.test/', path: x}", "events[0].path",
     "allowed here: type, url, ca_file, batch, max_backlog"},
};

START_TEST(test_bad_destination)
{
    char file[300], prefix[400];
    char *err = NULL;
    config *c = load_dest(bad[_i].dest, &err, file, sizeof file);
    ck_assert_msg(c == NULL, "%s: loaded but should fail", bad[_i].dest);
    snprintf(prefix, sizeof prefix, "%s:4: configuration_sets[0].%s: ", file, bad[_i].path);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "%s:\n  error:    %s\n  expected: %s",
                  bad[_i].dest, err, prefix);
    ck_assert_msg(strstr(err, bad[_i].fragment) != NULL, "%s:\n  error: %s\n  expected: %s",
                  bad[_i].dest, err, bad[_i].fragment);
    free(err);
}
END_TEST

START_TEST(test_good_destinations)
{
    char file[300];
    char *err = NULL;
    config *c = load_dest("{type: webhook, url: 'HTTP://hooks.example.test:8080/a/b?c=d'}, "
                          "{type: webhook, url: 'https://[::1]/x', batch: 25, max_backlog: 500, "
                          "ca_file: " FIXTURES "/webhook-ca.pem}, "
                          "{type: webhook, url: 'http://127.0.0.1'}",
                          &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_uint_eq(c->sets[0].nevents, 3);
    const config_event_dest *d = &c->sets[0].events[0];
    ck_assert_str_eq(d->url, "HTTP://hooks.example.test:8080/a/b?c=d");
    ck_assert_int_eq(d->batch, 1);
    ck_assert_int_eq(d->max_backlog, 1000000);
    ck_assert_ptr_null(d->ca_file);
    d = &c->sets[0].events[1];
    ck_assert_int_eq(d->batch, 25);
    ck_assert_int_eq(d->max_backlog, 500);
    ck_assert_msg(d->ca_file && d->ca_file[0] == '/' && strstr(d->ca_file, "webhook-ca.pem"),
                  "ca_file %s", d->ca_file ? d->ca_file : "(null)");
    char *s = config_summary(c);
    ck_assert_msg(strstr(s, "webhook HTTP://hooks.example.test:8080/a/b?c=d, webhook "
                            "https://[::1]/x (batch 25) (max_backlog 500) (ca_file /"),
                  "%s", s);
    ck_assert_msg(strstr(s, "webhook http://127.0.0.1\n"), "%s", s);
    free(s);
    config_unref(c);
}
END_TEST

static Suite *config_events_suite(void)
{
    Suite *s = suite_create("config_events");
    TCase *tc = tcase_create("webhook");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_bad_destination, 0, (int)(sizeof bad / sizeof bad[0]));
    tcase_add_test(tc, test_good_destinations);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(config_events_suite);
