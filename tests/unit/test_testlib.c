/* test_testlib.c — the promises of the shared test library (testlib.h) that other tests lean
 * on: testlib_config_new() and its adders give the values config_load() gives for the same
 * small file (so a fixture does not drift from what kilnd runs with when base/config.c
 * changes a default), adders copy their arguments, and scratch directories go away with
 * their content — at testlib_tmpdir_remove() or at the exit of the process that made them,
 * never at the exit of a forked child (Check runs each test in one). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/config.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

START_TEST(test_config_defaults_match_config_load)
{
    const char *dir = testlib_tmpdir("testlib");
    char *path = util_asprintf("%s/kiln.yaml", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("server: {hostname: mta.example.test}\n"    /* the smallest file config_load takes */
          "zones: [az1, az2, az3]\n"
          "ips: [{address: 127.0.0.10, zone: az1, pool: p}]\n"
          "pools: [{name: p}]\n"
          "configuration_sets: [{name: s, pool: p}]\n"
          "default_configuration_set: s\n", f);
    ck_assert_int_eq(fclose(f), 0);
    char *err = NULL;
    config *want = config_load(path, NULL, &err);
    ck_assert_msg(want != NULL, "config_load: %s", err ? err : "?");
    config *got = testlib_config_new();
    for (int i = 1; i <= 3; i++) {
        char z[8];
        snprintf(z, sizeof z, "az%d", i);
        testlib_config_add_zone(got, z);
    }
    testlib_config_add_ip(got, "127.0.0.10", "az1", "p", CONFIG_WARMUP_NEW);
    testlib_config_add_pool(got, "p", CONFIG_SCALING_STANDARD);
    config_set *s = testlib_config_add_set(got, "s", "p");
    testlib_config_set_default_set(got, "s");

    ck_assert_int_eq(got->refs, want->refs);
    ck_assert_str_eq(got->hostname, want->hostname);
    ck_assert_str_eq(got->region, want->region);
    ck_assert_str_eq(got->log, want->log);
    ck_assert_int_eq(got->log_level, want->log_level);
    ck_assert_uint_eq(got->ndns_servers, want->ndns_servers);
    ck_assert_int_eq(got->dns_timeout_ms, want->dns_timeout_ms);
    ck_assert_uint_eq(got->nlisten, want->nlisten);
    ck_assert_str_eq(got->listen[0].host, want->listen[0].host);
    ck_assert_int_eq(got->listen[0].port, want->listen[0].port);
    ck_assert_ptr_null(want->tls_cert);
    ck_assert_ptr_null(got->tls_cert);
    ck_assert_uint_eq(got->nauth, want->nauth);
    ck_assert_uint_eq(got->ntrusted, want->ntrusted);
    ck_assert_int_eq(got->max_message_size, want->max_message_size);
    ck_assert_int_eq(got->max_recipients, want->max_recipients);
    ck_assert_int_eq(got->mode, want->mode);
    ck_assert_int_eq(got->max_24h_send, want->max_24h_send);
    ck_assert(got->max_send_rate == want->max_send_rate);
    ck_assert_uint_eq(got->nidentities, want->nidentities);
    ck_assert_uint_eq(got->nverified_recipients, want->nverified_recipients);
    ck_assert_uint_eq(got->suppression_reasons, want->suppression_reasons);
    ck_assert_int_eq(got->remote_port, want->remote_port);
    ck_assert_int_eq(got->retry_first_ms, want->retry_first_ms);
    ck_assert_int_eq(got->retry_max_interval_ms, want->retry_max_interval_ms);
    ck_assert(got->retry_factor == want->retry_factor);
    ck_assert_int_eq(got->connect_timeout_ms, want->connect_timeout_ms);
    ck_assert_uint_eq(got->nroutes, want->nroutes);
    ck_assert_uint_eq(got->nzones, want->nzones);
    for (size_t i = 0; i < want->nzones; i++) ck_assert_str_eq(got->zones[i], want->zones[i]);
    ck_assert_uint_eq(got->nips, want->nips);
    ck_assert_str_eq(got->ips[0].address, want->ips[0].address);
    ck_assert_str_eq(got->ips[0].zone, want->ips[0].zone);
    ck_assert_str_eq(got->ips[0].pool, want->ips[0].pool);
    ck_assert_ptr_null(want->ips[0].ehlo);
    ck_assert_ptr_null(got->ips[0].ehlo);
    ck_assert_int_eq(got->ips[0].warmup, want->ips[0].warmup);
    ck_assert_uint_eq(got->npools, want->npools);
    ck_assert_str_eq(got->pools[0].name, want->pools[0].name);
    ck_assert_int_eq(got->pools[0].scaling, want->pools[0].scaling);
    ck_assert_ptr_null(want->pools[0].overflow);
    ck_assert_ptr_null(got->pools[0].overflow);
    ck_assert_uint_eq(got->nsets, want->nsets);
    ck_assert_str_eq(s->name, want->sets[0].name);
    ck_assert_str_eq(s->pool, want->sets[0].pool);
    ck_assert_int_eq(s->tls_policy, want->sets[0].tls_policy);
    ck_assert_int_eq(s->max_delivery_time_ms, want->sets[0].max_delivery_time_ms);
    ck_assert_int_eq(s->priority, want->sets[0].priority);
    ck_assert_uint_eq(s->nevents, want->sets[0].nevents);
    ck_assert_str_eq(got->default_set, want->default_set);
    ck_assert_int_eq(got->warmup.days, want->warmup.days);
    ck_assert_int_eq(got->warmup.first_day, want->warmup.first_day);
    ck_assert_int_eq(got->warmup.target, want->warmup.target);
    ck_assert_int_eq(got->warmup.advance, want->warmup.advance);
    ck_assert_int_eq(got->warmup.pacing, want->warmup.pacing);
    ck_assert_int_eq(got->shaping_default.connections, want->shaping_default.connections);
    ck_assert_int_eq(got->shaping_default.messages_per_connection,
                     want->shaping_default.messages_per_connection);
    ck_assert_int_eq(got->shaping_default.rate.count, want->shaping_default.rate.count);
    ck_assert_int_eq(got->shaping_default.rate.per_ms, want->shaping_default.rate.per_ms);
    ck_assert_uint_eq(got->nproviders, want->nproviders);

    config_unref(got);
    config_unref(want);
    free(path);
    testlib_tmpdir_remove(dir);
}
END_TEST

START_TEST(test_config_adders_copy)
{
    char zone[] = "az1", addr[] = "127.0.0.10", sfx[] = "gmail.test";
    char *sfxv[] = {sfx};
    config *c = testlib_config_new();
    testlib_config_add_zone(c, zone);
    testlib_config_add_pool(c, "transactional", CONFIG_SCALING_MANAGED);
    testlib_config_add_ip(c, addr, zone, "transactional", CONFIG_WARMUP_DONE);
    testlib_config_add_provider(c, "gmail", sfxv, 1, (config_shaping_limits){4, -1, {-1, 0}});
    config_set *s = testlib_config_add_set(c, "txn", "transactional");
    testlib_config_add_event_file(s, "/var/log/kiln/txn.jsonl");
    testlib_config_add_event_webhook(s, "http://127.0.0.1:9000/kiln");
    testlib_config_set_default_set(c, "txn");
    zone[0] = addr[0] = sfx[0] = 'X';

    ck_assert_str_eq(c->zones[0], "az1");
    ck_assert_str_eq(c->ips[0].address, "127.0.0.10");
    ck_assert_str_eq(c->ips[0].zone, "az1");
    ck_assert_int_eq(c->ips[0].warmup, CONFIG_WARMUP_DONE);
    ck_assert_str_eq(c->providers[0].mx_suffix[0], "gmail.test");
    ck_assert_int_eq(c->providers[0].limits.connections, 4);
    ck_assert_ptr_eq(config_find_pool(c, "transactional"), &c->pools[0]);
    ck_assert_int_eq(c->pools[0].scaling, CONFIG_SCALING_MANAGED);
    const config_set *found = config_find_set(c, c->default_set);
    ck_assert_ptr_nonnull(found);
    ck_assert_uint_eq(found->nevents, 2);
    ck_assert_int_eq(found->events[0].type, CONFIG_EVENT_FILE);
    ck_assert_str_eq(found->events[0].path, "/var/log/kiln/txn.jsonl");
    ck_assert_int_eq(found->events[1].type, CONFIG_EVENT_WEBHOOK);
    ck_assert_str_eq(found->events[1].url, "http://127.0.0.1:9000/kiln");
    config_unref(c);
}
END_TEST

START_TEST(test_tmpdir_removed_with_content)
{
    const char *dir = testlib_tmpdir("testlib");
    ck_assert_msg(strncmp(dir, "/tmp/kiln-test-test_testlib-", 28) == 0 &&
                      strstr(dir, "/testlib-") != NULL, "dir %s", dir);
    char *keep = util_strdup(dir);
    char *sub = testlib_subdir(dir, "s-");
    char *file = util_asprintf("%s/f", sub);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    ck_assert(exists(file));
    testlib_tmpdir_remove(dir);
    ck_assert(!exists(keep));
    free(file);
    free(sub);
    free(keep);
}
END_TEST

START_TEST(test_tmpdir_owner_only)
{
    /* made here (in Check's child): a grandchild that exits must not remove it; a
     * grandchild's own directory is gone once the grandchild exits */
    char *mine = util_strdup(testlib_tmpdir("testlib"));
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        const char *theirs = testlib_tmpdir("testlib");
        ssize_t n = write(fds[1], theirs, strlen(theirs));
        exit(n > 0 ? EXIT_SUCCESS : EXIT_FAILURE);
    }
    close(fds[1]);
    char theirs[128] = "";
    ssize_t n = read(fds[0], theirs, sizeof theirs - 1);
    close(fds[0]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ck_assert_int_gt(n, 0);
    theirs[n] = '\0';
    ck_assert_msg(!exists(theirs), "%s outlived the process that made it", theirs);
    ck_assert_msg(exists(mine), "%s was removed by a child", mine);

    /* a child ended by _exit (as Check ends a test whose check failed) leaves its directory
     * in the run's root, which the main process removes at its exit */
    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        const char *left = testlib_tmpdir("testlib");
        ssize_t w = write(fds[1], left, strlen(left));
        _exit(w > 0 ? EXIT_SUCCESS : EXIT_FAILURE);
    }
    close(fds[1]);
    char left[128] = "";
    n = read(fds[0], left, sizeof left - 1);
    close(fds[0]);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_int_gt(n, 0);
    left[n] = '\0';
    ck_assert(exists(left));
    size_t root_len = (size_t)(strrchr(mine, '/') - mine);
    ck_assert_msg(strncmp(left, mine, root_len + 1) == 0, "%s is not beside %s", left, mine);
    testlib_tmpdir_remove(mine);
    ck_assert(!exists(mine));
    free(mine);
}
END_TEST

static Suite *testlib_suite(void)
{
    Suite *s = suite_create("testlib");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, test_config_defaults_match_config_load);
    tcase_add_test(tc, test_config_adders_copy);
    suite_add_tcase(s, tc);
    tc = tcase_create("tmpdir");
    tcase_add_test(tc, test_tmpdir_removed_with_content);
    tcase_add_test(tc, test_tmpdir_owner_only);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(testlib_suite);
