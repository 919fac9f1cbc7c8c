/* test_config_inflight.c — submission.max_inflight_bytes (hardening item 5): its default
 * follows the machine (a quarter of physical memory within [256MB, 4GB], never below
 * 4 x max_message_size), an explicit size is kept, and a budget too small to hold one
 * message of the largest size is an error naming the file, line and key. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/config.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

#define MB ((int64_t)1024 * 1024)
#define BASE                                                                                  \
    "server: {hostname: mta.example.test}\n"                                                  \
    "zones: [az1, az2, az3]\n"                                                                \
    "ips: [{address: 127.0.0.10, zone: az1, pool: p}]\n"                                      \
    "pools: [{name: p}]\n"                                                                    \
    "configuration_sets: [{name: s, pool: p}]\n"                                              \
    "default_configuration_set: s\n"

/* Loads BASE + extra from a scratch file; *err set on failure. */
static config *load(const char *extra, char **err)
{
    const char *dir = testlib_tmpdir("inflight");
    char *path = util_asprintf("%s/kiln.yaml", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(BASE, f);
    fputs(extra, f);
    fclose(f);
    config *c = config_load(path, NULL, err);
    free(path);
    testlib_tmpdir_remove(dir);
    return c;
}

START_TEST(test_default_follows_the_machine)
{
    char *err = NULL;
    config *c = load("", &err);
    ck_assert_msg(c != NULL, "%s", err);
    int64_t phys = (int64_t)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGE_SIZE);
    int64_t want = phys / 4;
    if (want < 256 * MB) want = 256 * MB;
    if (want > 4096 * MB) want = 4096 * MB;
    ck_assert_int_eq(c->max_inflight_bytes, want);
    config_unref(c);
    /* A large max_message_size raises the default to 4 messages. */
    c = load("submission: {max_message_size: 2GB}\n", &err);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(c->max_inflight_bytes, 8192 * MB);
    config_unref(c);
}
END_TEST

START_TEST(test_explicit_value)
{
    char *err = NULL;
    config *c = load("submission: {max_message_size: 10MB, max_inflight_bytes: 48MB}\n", &err);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(c->max_inflight_bytes, 48 * MB);
    config_unref(c);
}
END_TEST

START_TEST(test_too_small)
{
    char *err = NULL;
    config *c = load("submission: {max_message_size: 10MB, max_inflight_bytes: 5MB}\n", &err);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(err, ":7: submission.max_inflight_bytes: must be at least "
                              "submission.max_message_size (10485760 bytes)") != NULL, "%s", err);
    free(err);
    c = load("submission: {max_message_size: 512KB, max_inflight_bytes: 900KB}\n", &err);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(err, "submission.max_inflight_bytes: must be at least 1MB, not 900KB"),
                  "%s", err);
    free(err);
    c = load("submission: {max_inflight_bytes: lots}\n", &err);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(err, "submission.max_inflight_bytes: 'lots' is not a size"), "%s", err);
    free(err);
}
END_TEST

static Suite *config_inflight_suite(void)
{
    Suite *s = suite_create("config_inflight");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_default_follows_the_machine);
    tcase_add_test(tc, test_explicit_value);
    tcase_add_test(tc, test_too_small);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(config_inflight_suite);
