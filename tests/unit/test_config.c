/* test_config.c — unit tests for base/config*.c: the good fixture and the shipped configs load
 * with the exact values; every kind of mistake is reported with the right line and key path;
 * warnings; the value parsers (table-driven, with rejects); trusted networks; the summary. */
#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/config.h"
#include "base/log.h"
#include "base/util.h"
#include "mta/auth.h"
#include "tests/unit/testlib.h"

#define FIXTURES KILN_SRCDIR "/tests/unit/config"

/* ---- helpers ---- */

/* A scratch directory (testlib_tmpdir) holding kiln.yaml with TEXT. */
typedef struct scratch {
    char dir[64];
    char file[96];
    char real[PATH_MAX];   /* realpath of dir */
} scratch;

static void scratch_write(scratch *s, const char *name, const char *text)
{
    char path[192];
    snprintf(path, sizeof path, "%s/%s", s->dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static void scratch_open(scratch *s, const char *yaml)
{
    const char *dir = testlib_tmpdir("config");
    ck_assert_msg(strlen(dir) < sizeof s->dir, "scratch path too long: %s", dir);
    memcpy(s->dir, dir, strlen(dir) + 1);
    ck_assert(realpath(s->dir, s->real) != NULL);
    snprintf(s->file, sizeof s->file, "%s/kiln.yaml", s->dir);
    scratch_write(s, "kiln.yaml", yaml);
}

static void scratch_close(scratch *s)
{
    testlib_tmpdir_remove(s->dir);
}

/* Loads YAML from a scratch file (removed again before returning); FILE gets its path. */
static config *load_text(const char *yaml, char **err, char file[96])
{
    scratch s;
    scratch_open(&s, yaml);
    config *c = config_load(s.file, auth_hash_usable, err);
    if (file) memcpy(file, s.file, sizeof s.file);
    scratch_close(&s);
    return c;
}

static bool has_warning(const config *c, const char *fragment)
{
    for (size_t i = 0; i < c->nwarnings; i++)
        if (strstr(c->warnings[i], fragment)) return true;
    return false;
}

/* A minimal valid config; cases append one line (line 7) or replace it. */
#define BASE                                                                                  \
    "server: {hostname: mta.example.test}\n"                                                  \
    "zones: [az1, az2, az3]\n"                                                                \
    "ips: [{address: 127.0.0.10, zone: az1, pool: p}]\n"                                      \
    "pools: [{name: p}]\n"                                                                    \
    "configuration_sets: [{name: s, pool: p}]\n"                                              \
    "default_configuration_set: s\n"

/* ---- whole files ---- */

START_TEST(test_good_file)
{
    char *err = NULL;
    config *c = config_load(FIXTURES "/good.yaml", auth_hash_usable, &err);
    ck_assert_msg(c != NULL, "good.yaml: %s", err);
    ck_assert_ptr_null(err);
    char dir[PATH_MAX], parent[PATH_MAX];
    ck_assert(realpath(FIXTURES, dir) != NULL);
    ck_assert(realpath(FIXTURES "/..", parent) != NULL);
    char want[PATH_MAX + 64];

    ck_assert_int_eq(c->refs, 1);
    ck_assert_str_eq(c->path, FIXTURES "/good.yaml");
    ck_assert_str_eq(c->dir, dir);
    /* server */
    ck_assert_str_eq(c->hostname, "mta.good.test");
    ck_assert_str_eq(c->region, "eu-west-1");
    snprintf(want, sizeof want, "%s/spool-good", parent);
    ck_assert_str_eq(c->spool, want);
    snprintf(want, sizeof want, "%s/spool-good/kilnd.sock", parent);
    ck_assert_str_eq(c->control_socket, want);
    snprintf(want, sizeof want, "%s/logs/kiln.log", dir);
    ck_assert_str_eq(c->log, want);
    ck_assert_int_eq(c->log_level, KLOG_DEBUG);
    /* dns */
    ck_assert_uint_eq(c->ndns_servers, 3);
    ck_assert_str_eq(c->dns_servers[0].host, "127.0.0.1");
    ck_assert_int_eq(c->dns_servers[0].port, 5353);
    ck_assert_str_eq(c->dns_servers[1].host, "::1");
    ck_assert_int_eq(c->dns_servers[1].port, 53);
    ck_assert_str_eq(c->dns_servers[2].host, "10.0.0.53");
    ck_assert_int_eq(c->dns_servers[2].port, 53);
    ck_assert_int_eq(c->dns_timeout_ms, 1500);
    /* submission */
    ck_assert_uint_eq(c->nlisten, 2);
    ck_assert_str_eq(c->listen[0].host, "127.0.0.1");
    ck_assert_int_eq(c->listen[0].port, 2525);
    ck_assert_str_eq(c->listen[1].host, "::1");
    ck_assert_int_eq(c->listen[1].port, 2526);
    ck_assert_ptr_null(c->tls_cert);
    ck_assert_ptr_null(c->tls_key);
    ck_assert_uint_eq(c->nauth, 1);
    ck_assert_str_eq(c->auth[0].user, "app");
    ck_assert(strncmp(c->auth[0].password_hash, "$6$saltsalt$", 12) == 0);
    ck_assert_uint_eq(c->ntrusted, 3);
    ck_assert_int_eq(c->trusted[0].family, AF_INET);
    ck_assert_int_eq(c->trusted[0].prefix, 8);
    ck_assert_int_eq(c->trusted[1].family, AF_INET6);
    ck_assert_int_eq(c->trusted[1].prefix, 8);
    ck_assert_int_eq(c->trusted[2].prefix, 32);
    ck_assert_int_eq(c->max_message_size, 512 * 1024);
    ck_assert_int_eq(c->max_recipients, 7);
    /* account */
    ck_assert_int_eq(c->mode, CONFIG_MODE_PRODUCTION);
    ck_assert_int_eq(c->max_24h_send, -1);
    ck_assert_double_eq(c->max_send_rate, 2.5);
    ck_assert_uint_eq(c->nidentities, 2);
    ck_assert_str_eq(c->identities[0], "example.test");
    ck_assert_str_eq(c->identities[1], "ops@other.test");
    ck_assert_uint_eq(c->nverified_recipients, 0);
    ck_assert_uint_eq(c->suppression_reasons, CONFIG_SUPPRESS_COMPLAINT);
    /* delivery */
    ck_assert_int_eq(c->remote_port, 2500);
    ck_assert_int_eq(c->retry_first_ms, 30000);
    ck_assert_int_eq(c->retry_max_interval_ms, 2 * 3600000);
    ck_assert_double_eq(c->retry_factor, 1.5);
    ck_assert_int_eq(c->connect_timeout_ms, 5000);
    /* routes: lower-cased, port defaults to delivery.remote_port */
    ck_assert_uint_eq(c->nroutes, 2);
    ck_assert_str_eq(c->routes[0].domain, "demo.test");
    ck_assert_str_eq(c->routes[0].host, "127.0.0.1");
    ck_assert_int_eq(c->routes[0].port, 2526);
    ck_assert_str_eq(c->routes[1].host, "mx.other.test");
    ck_assert_int_eq(c->routes[1].port, 2500);
    ck_assert_ptr_eq(config_find_route(c, "DEMO.test"), &c->routes[0]);
    ck_assert_ptr_eq(config_find_route(c, "demo.test."), &c->routes[0]);
    ck_assert_ptr_null(config_find_route(c, "sub.demo.test"));
    /* zones, ips, pools */
    ck_assert_uint_eq(c->nzones, 3);
    ck_assert_str_eq(c->zones[2], "z3");
    ck_assert_uint_eq(c->nips, 6);
    ck_assert_str_eq(c->ips[0].address, "192.0.2.1");
    ck_assert_str_eq(c->ips[0].zone, "z1");
    ck_assert_str_eq(c->ips[0].pool, "main");
    ck_assert_str_eq(c->ips[0].ehlo, "o1.good.test");
    ck_assert_int_eq(c->ips[0].warmup, CONFIG_WARMUP_NEW);
    ck_assert_int_eq(c->ips[0].line, 35);
    ck_assert_int_eq(c->ips[1].warmup, CONFIG_WARMUP_DONE);
    ck_assert_ptr_null(c->ips[1].ehlo);
    ck_assert_str_eq(c->ips[2].address, "2001:db8::3");
    ck_assert_str_eq(c->ips[5].pool, "bulk");
    ck_assert_uint_eq(c->npools, 2);
    const config_pool *main_pool = config_find_pool(c, "main");
    const config_pool *bulk = config_find_pool(c, "bulk");
    ck_assert_ptr_nonnull(main_pool);
    ck_assert_ptr_nonnull(bulk);
    ck_assert_int_eq(main_pool->scaling, CONFIG_SCALING_STANDARD);
    ck_assert_ptr_null(main_pool->overflow);
    ck_assert_int_eq(bulk->scaling, CONFIG_SCALING_MANAGED);
    ck_assert_str_eq(bulk->overflow, "main");
    ck_assert_ptr_null(config_find_pool(c, "nope"));
    /* configuration sets */
    ck_assert_uint_eq(c->nsets, 2);
    const config_set *txn = config_find_set(c, "txn");
    ck_assert_ptr_nonnull(txn);
    ck_assert_str_eq(txn->pool, "main");
    ck_assert_int_eq(txn->tls_policy, CONFIG_TLS_OPTIONAL);
    ck_assert_int_eq(txn->max_delivery_time_ms, 14 * 3600000LL);
    ck_assert_int_eq(txn->priority, 0);
    ck_assert_uint_eq(txn->nevents, 2);
    ck_assert_int_eq(txn->events[0].type, CONFIG_EVENT_FILE);
    snprintf(want, sizeof want, "%s/events/txn.jsonl", dir);
    ck_assert_str_eq(txn->events[0].path, want);
    ck_assert_int_eq(txn->events[1].type, CONFIG_EVENT_WEBHOOK);
    ck_assert_str_eq(txn->events[1].url, "https://hooks.good.test/kiln");
    const config_set *news = config_find_set(c, "news");
    ck_assert_ptr_nonnull(news);
    ck_assert_int_eq(news->tls_policy, CONFIG_TLS_REQUIRE);
    ck_assert_int_eq(news->max_delivery_time_ms, 2 * 3600000LL);
    ck_assert_int_eq(news->priority, -5);
    ck_assert_uint_eq(news->nevents, 0);
    ck_assert_str_eq(c->default_set, "news");
    ck_assert_ptr_null(config_find_set(c, "TXN"));
    /* warmup */
    ck_assert_int_eq(c->warmup.days, 30);
    ck_assert_int_eq(c->warmup.first_day, 100);
    ck_assert_int_eq(c->warmup.target, 20000);
    ck_assert_int_eq(c->warmup.advance, CONFIG_ADVANCE_VOLUME);
    ck_assert_int_eq(c->warmup.pacing, 0);
    /* shaping: a partial default keeps the other defaults; providers leave unset fields */
    ck_assert_int_eq(c->shaping_default.connections, 4);
    ck_assert_int_eq(c->shaping_default.messages_per_connection, 100);
    ck_assert_int_eq(c->shaping_default.rate.count, 10);
    ck_assert_int_eq(c->shaping_default.rate.per_ms, 60000);
    ck_assert_uint_eq(c->nproviders, 2);
    ck_assert_str_eq(c->providers[0].name, "gmail");
    ck_assert_uint_eq(c->providers[0].nmx_suffix, 2);
    ck_assert_str_eq(c->providers[0].mx_suffix[0], "google.com");
    ck_assert_int_eq(c->providers[0].limits.connections, 20);
    ck_assert_int_eq(c->providers[0].limits.messages_per_connection, -1);
    ck_assert_int_eq(c->providers[0].limits.rate.count, -1);
    ck_assert_int_eq(c->providers[0].limits.rate.per_ms, 0);
    ck_assert_int_eq(c->providers[1].limits.connections, -1);
    ck_assert_int_eq(c->providers[1].limits.messages_per_connection, 5);
    ck_assert_int_eq(c->providers[1].limits.rate.count, -1);      /* explicit "no limit" */
    ck_assert_int_eq(c->providers[1].limits.rate.per_ms, 1000);
    ck_assert_uint_eq(c->nwarnings, 0);
    config_unref(c);
}
END_TEST

START_TEST(test_shipped_default)
{
    char *err = NULL;
    config *c = config_load(KILN_SRCDIR "/conf/kiln.yaml", auth_hash_usable, &err);
    ck_assert_msg(c != NULL, "conf/kiln.yaml: %s", err);
    char dir[PATH_MAX], want[PATH_MAX + 64];
    ck_assert(realpath(KILN_SRCDIR "/conf", dir) != NULL);
    ck_assert_str_eq(c->hostname, "mta.example.test");
    ck_assert_str_eq(c->region, "local");
    snprintf(want, sizeof want, "%s/spool", dir);
    ck_assert_str_eq(c->spool, want);
    snprintf(want, sizeof want, "%s/spool/kilnd.sock", dir);
    ck_assert_str_eq(c->control_socket, want);
    ck_assert_str_eq(c->log, "stderr");
    ck_assert_int_eq(c->log_level, KLOG_INFO);
    ck_assert_uint_eq(c->ndns_servers, 0);
    ck_assert_uint_eq(c->nlisten, 1);
    ck_assert_int_eq(c->listen[0].port, 2587);
    ck_assert(config_is_trusted(c, "127.0.0.1"));
    ck_assert_int_eq(c->max_message_size, 10485760);
    ck_assert_int_eq(c->max_recipients, 50);
    ck_assert_int_eq(c->mode, CONFIG_MODE_SANDBOX);
    ck_assert_int_eq(c->max_24h_send, 200);
    ck_assert_double_eq(c->max_send_rate, 50);
    ck_assert_str_eq(c->identities[0], "example.test");
    ck_assert_str_eq(c->verified_recipients[0], "demo.test");
    const config_route *r = config_find_route(c, "demo.test");
    ck_assert_ptr_nonnull(r);
    ck_assert_str_eq(r->host, "127.0.0.1");
    ck_assert_int_eq(r->port, 2526);
    ck_assert_uint_eq(c->nzones, 3);
    ck_assert_uint_eq(c->nips, 6);
    ck_assert_uint_eq(c->npools, 2);
    ck_assert_int_eq(config_find_pool(c, "marketing")->scaling, CONFIG_SCALING_MANAGED);
    ck_assert_uint_eq(c->nsets, 2);
    ck_assert_str_eq(c->default_set, "txn");
    ck_assert_int_eq(config_find_set(c, "txn")->priority, 10);
    ck_assert_int_eq(config_find_set(c, "marketing")->priority, 0);
    ck_assert_int_eq(c->queue_memory_recipients, 200000);
    snprintf(want, sizeof want, "%s/spool/events-txn.jsonl", dir);
    ck_assert_str_eq(config_find_set(c, "txn")->events[0].path, want);
    snprintf(want, sizeof want, "%s/spool/events-marketing.jsonl", dir);
    ck_assert_str_eq(config_find_set(c, "marketing")->events[0].path, want);
    ck_assert_msg(c->nwarnings == 0, "unexpected warning: %s", c->warnings[0]);
    config_unref(c);
}
END_TEST

START_TEST(test_full_example)
{
    char *err = NULL;
    config *c = config_load(KILN_SRCDIR "/conf/examples/full.yaml", auth_hash_usable, &err);
    ck_assert_msg(c != NULL, "conf/examples/full.yaml: %s", err);
    ck_assert_uint_eq(c->nauth, 1);
    ck_assert_uint_eq(c->nproviders, 2);
    ck_assert_str_eq(config_find_pool(c, "marketing")->overflow, "transactional");
    ck_assert_int_eq(config_find_set(c, "txn")->priority, 10);
    ck_assert_int_eq(config_find_set(c, "marketing")->priority, 0);
    ck_assert_msg(c->nwarnings == 0, "unexpected warning: %s", c->warnings[0]);
    config_unref(c);
}
END_TEST

/* Defaults as config.h documents them, and paths relative to the file's directory. */
START_TEST(test_defaults_and_paths)
{
    scratch s;
    scratch_open(&s, BASE);
    char *err = NULL;
    config *c = config_load(s.file, auth_hash_usable, &err);
    ck_assert_msg(c != NULL, "%s", err);
    char want[PATH_MAX + 64];
    ck_assert_str_eq(c->dir, s.real);
    snprintf(want, sizeof want, "%s/spool", s.real);
    ck_assert_str_eq(c->spool, want);
    snprintf(want, sizeof want, "%s/spool/kilnd.sock", s.real);
    ck_assert_str_eq(c->control_socket, want);
    ck_assert_str_eq(c->region, "local");
    ck_assert_str_eq(c->log, "stderr");
    ck_assert_int_eq(c->log_level, KLOG_INFO);
    ck_assert_uint_eq(c->ndns_servers, 0);
    ck_assert_int_eq(c->dns_timeout_ms, 2000);
    ck_assert_uint_eq(c->nlisten, 1);
    ck_assert_str_eq(c->listen[0].host, "127.0.0.1");
    ck_assert_int_eq(c->listen[0].port, 2587);
    ck_assert_uint_eq(c->ntrusted, 0);
    ck_assert_uint_eq(c->nauth, 0);
    ck_assert_int_eq(c->max_message_size, 10 * 1024 * 1024);
    ck_assert_int_eq(c->max_recipients, 50);
    ck_assert_int_eq(c->mode, CONFIG_MODE_SANDBOX);
    ck_assert_int_eq(c->max_24h_send, 200);
    ck_assert_double_eq(c->max_send_rate, 1);
    ck_assert_uint_eq(c->suppression_reasons, CONFIG_SUPPRESS_BOUNCE | CONFIG_SUPPRESS_COMPLAINT);
    ck_assert_int_eq(c->remote_port, 25);
    ck_assert_int_eq(c->retry_first_ms, 60000);
    ck_assert_int_eq(c->retry_max_interval_ms, 3600000);
    ck_assert_double_eq(c->retry_factor, 2);
    ck_assert_int_eq(c->connect_timeout_ms, 10000);
    ck_assert_int_eq(c->queue_memory_recipients, 200000);
    ck_assert_int_eq(c->sets[0].max_delivery_time_ms, 14 * 3600000LL);
    ck_assert_int_eq(c->sets[0].tls_policy, CONFIG_TLS_OPTIONAL);
    ck_assert_int_eq(c->sets[0].priority, 0);
    ck_assert_int_eq(c->pools[0].scaling, CONFIG_SCALING_STANDARD);
    ck_assert_ptr_null(c->pools[0].overflow);
    ck_assert_int_eq(c->ips[0].warmup, CONFIG_WARMUP_NEW);
    ck_assert_int_eq(c->warmup.days, 45);
    ck_assert_int_eq(c->warmup.first_day, 50);
    ck_assert_int_eq(c->warmup.target, 50000);
    ck_assert_int_eq(c->warmup.advance, CONFIG_ADVANCE_CALENDAR);
    ck_assert_int_eq(c->warmup.pacing, 4);
    ck_assert_int_eq(c->shaping_default.connections, 10);
    ck_assert_int_eq(c->shaping_default.messages_per_connection, 100);
    ck_assert_int_eq(c->shaping_default.rate.count, 50);
    ck_assert_int_eq(c->shaping_default.rate.per_ms, 1000);
    config_unref(c);

    /* "." components and trailing slashes go away, leading ".." climbs, absolute stays. */
    scratch_write(&s, "kiln.yaml",
                  "server: {hostname: h.test, spool: ./a/./b/, log: /var/log/kiln.log, "
                  "control_socket: ../ctl.sock}\n"
                  "zones: [az1]\n"
                  "ips: [{address: 127.0.0.10, zone: az1, pool: p}]\n"
                  "pools: [{name: p}]\n"
                  "configuration_sets: [{name: s, pool: p}]\n"
                  "default_configuration_set: s\n");
    c = config_load(s.file, auth_hash_usable, &err);
    ck_assert_msg(c != NULL, "%s", err);
    snprintf(want, sizeof want, "%s/a/b", s.real);
    ck_assert_str_eq(c->spool, want);
    ck_assert_str_eq(c->log, "/var/log/kiln.log");
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", s.real);
    *strrchr(parent, '/') = '\0';
    snprintf(want, sizeof want, "%s/ctl.sock", parent[0] ? parent : "");
    ck_assert_str_eq(c->control_socket, want);
    config_unref(c);
    scratch_close(&s);
}
END_TEST

START_TEST(test_refcount)
{
    char *err = NULL;
    config *c = config_load(FIXTURES "/good.yaml", auth_hash_usable, &err);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_eq(config_ref(c), c);
    ck_assert_int_eq(c->refs, 2);
    config_unref(c);
    ck_assert_int_eq(c->refs, 1);
    ck_assert_str_eq(c->hostname, "mta.good.test");   /* still alive */
    config_unref(c);                                  /* freed: ASan reports a leak otherwise */
    config_unref(NULL);
    ck_assert_ptr_null(config_ref(NULL));
}
END_TEST

START_TEST(test_missing_file)
{
    char *err = NULL;
    config *c = config_load("/nonexistent/kiln.yaml", auth_hash_usable, &err);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(err, "/nonexistent/kiln.yaml: cannot open: No such file") == err,
                  "%s", err);
    free(err);

    c = config_load(FIXTURES, auth_hash_usable, &err);
    ck_assert_ptr_null(c);
    ck_assert_str_eq(err, FIXTURES ": is a directory, not a config file");
    free(err);
}
END_TEST

/* ---- mistakes: line and key path ---- */

typedef struct bad_case {
    const char *name;
    const char *yaml;        /* inline text, or NULL with file */
    const char *file;        /* fixture under tests/unit/config */
    int line;
    const char *path;        /* key path; NULL for errors without one */
    const char *fragment;    /* must appear after the path */
} bad_case;

static const bad_case bad_cases[] = {
    {"unknown top-level key", NULL, "bad-unknown-key.yaml", 8, "serverr",
     "unknown key 'serverr'; allowed here: server, dns, submission, account, delivery, routes, "
     "zones, ips, pools, configuration_sets, default_configuration_set, warmup, shaping"},
    {"unknown nested key", NULL, "bad-nested-key.yaml", 5, "server.hostnme",
     "unknown key 'hostnme'; allowed here: hostname, region, spool, control_socket, log, "
     "log_level"},
    {"unknown key in a list item", BASE "routes: [{domain: a.test, host: h.test, prot: 25}]\n",
     NULL, 7, "routes[0].prot", "unknown key 'prot'; allowed here: domain, host, port"},
    {"bad size", BASE "submission: {max_message_size: 10XB}\n", NULL, 7,
     "submission.max_message_size", "'10XB' is not a size (use e.g. 512KB, 10MB)"},
    {"zero size", BASE "submission: {max_message_size: 0}\n", NULL, 7,
     "submission.max_message_size", "must be more than 0"},
    {"bad duration", BASE "delivery: {connect_timeout: 10x}\n", NULL, 7,
     "delivery.connect_timeout", "'10x' is not a duration (use e.g. 500ms, 30s, 5m, 14h, 2d)"},
    {"negative duration", BASE "delivery:\n  retry: {first: -5s}\n", NULL, 8,
     "delivery.retry.first", "'-5s' is not a duration"},
    {"duration without unit", BASE "dns: {timeout: 30}\n", NULL, 7, "dns.timeout",
     "'30' is not a duration"},
    {"max_interval below first", BASE "delivery: {retry: {first: 2h, max_interval: 1h}}\n", NULL,
     7, "delivery.retry.max_interval", "max_interval (1h) must not be shorter than first (2h)"},
    {"retry factor below 1", BASE "delivery: {retry: {factor: 0.5}}\n", NULL, 7,
     "delivery.retry.factor", "must be at least 1, not 0.5"},
    {"bad rate", BASE "shaping:\n  default: {rate: 50/d}\n", NULL, 8, "shaping.default.rate",
     "'50/d' is not a rate (use e.g. 50/s, 10/m, 1000/h, or -1 for no limit)"},
    {"bad enum", BASE "account: {mode: sandboxed}\n", NULL, 7, "account.mode",
     "must be sandbox or production, not 'sandboxed'"},
    {"bad log level value",
     "server: {hostname: h.test, log_level: verbose}\n" "zones: [az1]\n", NULL, 1,
     "server.log_level", "must be one of debug, info, warning, error, not 'verbose'"},
    {"bad scaling",
     "server: {hostname: h.test}\npools: [{name: p, scaling: auto}]\n", NULL, 2,
     "pools[0].scaling", "must be standard or managed, not 'auto'"},
    {"duplicate section", BASE "configuration_sets: x\n", NULL, 7, "configuration_sets",
     "duplicate key (first given at line 5)"},
    {"bad tls_policy",
     "server: {hostname: h.test}\npools: [{name: p}]\n"
     "configuration_sets: [{name: s, pool: p, tls_policy: always}]\n",
     NULL, 3, "configuration_sets[0].tls_policy", "must be one of optional, require, verify, dane, mta-sts, not 'always'"},
    {"tls_ca_file missing", BASE "delivery: {tls_ca_file: /nonexistent/ca.pem}\n", NULL, 7,
     "delivery.tls_ca_file", "cannot read /nonexistent/ca.pem: No such file or directory"},
    {"mta_sts fetch_timeout too long", BASE "delivery:\n  mta_sts: {fetch_timeout: 10m}\n", NULL, 8,
     "delivery.mta_sts.fetch_timeout", "must be at most 5m, not 10m"},
    {"mta_sts unknown key", BASE "delivery:\n  mta_sts: {max_age: 1d}\n", NULL, 8,
     "delivery.mta_sts.max_age", "unknown key 'max_age'"},
    {"mta_sts bad port", BASE "delivery:\n  mta_sts: {port: 0}\n", NULL, 8,
     "delivery.mta_sts.port", "0"},
    {"bad warmup advance", BASE "warmup: {advance: weekly}\n", NULL, 7, "warmup.advance",
     "must be calendar or volume, not 'weekly'"},
    {"ip warmup not done",
     "server: {hostname: h.test}\nzones: [az1]\npools: [{name: p}]\n"
     "ips: [{address: 127.0.0.10, zone: az1, pool: p, warmup: started}]\n",
     NULL, 4, "ips[0].warmup", "only 'done' is allowed, not 'started'"},
    {"unknown zone", NULL, "bad-zone.yaml", 9, "ips[2].zone",
     "unknown zone 'az9' (zones: az1, az2, az3)"},
    {"unknown pool for an IP",
     "server: {hostname: h.test}\nzones: [az1]\npools: [{name: p}]\n"
     "ips:\n  - {address: 127.0.0.10, zone: az1, pool: q}\n",
     NULL, 5, "ips[0].pool", "unknown pool 'q' (pools: p)"},
    {"IP missing its zone",
     "server: {hostname: h.test}\nzones: [az1]\npools: [{name: p}]\n"
     "ips:\n  - {address: 127.0.0.10, pool: p}\n",
     NULL, 5, "ips[0].zone", "required key is missing"},
    {"duplicate IP",
     "server: {hostname: h.test}\nzones: [az1]\npools: [{name: p}]\nips:\n"
     "  - {address: 127.0.0.10, zone: az1, pool: p}\n"
     "  - {address: 127.0.0.10, zone: az1, pool: p}\n",
     NULL, 6, "ips[1].address", "127.0.0.10 is listed twice (also ips[0] at line 5)"},
    {"duplicate IPv6 written differently",
     "server: {hostname: h.test}\nzones: [az1]\npools: [{name: p}]\nips:\n"
     "  - {address: '2001:db8::1', zone: az1, pool: p}\n"
     "  - {address: '2001:0db8:0::1', zone: az1, pool: p}\n",
     NULL, 6, "ips[1].address", "is listed twice"},
    {"bad IP literal",
     "server: {hostname: h.test}\nzones: [az1]\npools: [{name: p}]\nips:\n"
     "  - {address: 127.0.0.300, zone: az1, pool: p}\n",
     NULL, 5, "ips[0].address", "'127.0.0.300' is not an IPv4 or IPv6 address"},
    {"overflow to itself",
     "server: {hostname: h.test}\npools:\n  - {name: p}\n  - {name: q, overflow: q}\n", NULL, 4,
     "pools[1].overflow", "a pool cannot overflow to itself"},
    {"overflow to an unknown pool",
     "server: {hostname: h.test}\npools:\n  - {name: p, overflow: nope}\n  - {name: q}\n", NULL,
     3, "pools[0].overflow", "unknown pool 'nope' (pools: p, q)"},
    {"duplicate pool",
     "server: {hostname: h.test}\npools:\n  - {name: p}\n  - {name: p}\n", NULL, 4,
     "pools[1].name", "pool 'p' is already defined (pools[0])"},
    {"missing hostname", "server:\n  region: local\n" "zones: [az1]\n", NULL, 1,
     "server.hostname", "required key is missing"},
    {"empty file", "", NULL, 1, "server.hostname", "required key is missing"},
    {"comment-only file", "# nothing here\n", NULL, 1, "server.hostname",
     "required key is missing"},
    {"no configuration sets",
     "server: {hostname: h.test}\nzones: [az1]\npools: [{name: p}]\n", NULL, 1,
     "configuration_sets", "at least one configuration set is needed"},
    {"empty configuration sets",
     "server: {hostname: h.test}\npools: [{name: p}]\nconfiguration_sets: []\n", NULL, 3,
     "configuration_sets", "at least one configuration set is needed"},
    {"default set missing",
     "server: {hostname: h.test}\npools: [{name: p}]\nconfiguration_sets: [{name: s, pool: p}]\n",
     NULL, 3, "default_configuration_set", "required key is missing"},
    {"default set unknown",
     "server: {hostname: h.test}\npools: [{name: p}]\n"
     "configuration_sets: [{name: s, pool: p}, {name: t, pool: p}]\n"
     "default_configuration_set: x\n",
     NULL, 4, "default_configuration_set", "unknown configuration set 'x' (sets: s, t)"},
    {"set with unknown pool",
     "server: {hostname: h.test}\npools: [{name: p}]\nconfiguration_sets:\n"
     "  - name: s\n    pool: nope\n",
     NULL, 5, "configuration_sets[0].pool", "unknown pool 'nope' (pools: p)"},
    {"duplicate set",
     "server: {hostname: h.test}\npools: [{name: p}]\nconfiguration_sets:\n"
     "  - {name: s, pool: p}\n  - {name: s, pool: p}\n",
     NULL, 5, "configuration_sets[1].name", "configuration set 's' is already defined"},
    {"max_delivery_time 15h",
     "server: {hostname: h.test}\npools: [{name: p}]\nconfiguration_sets:\n"
     "  - name: s\n    pool: p\n    max_delivery_time: 15h\n",
     NULL, 6, "configuration_sets[0].max_delivery_time", "15h is more than 14h"},
    {"file event without path",
     "server: {hostname: h.test}\npools: [{name: p}]\nconfiguration_sets:\n"
     "  - name: s\n    pool: p\n    events:\n      - {type: file}\n",
     NULL, 7, "configuration_sets[0].events[0].path", "required key is missing"},
    {"file event with url",
     "server: {hostname: h.test}\npools: [{name: p}]\nconfiguration_sets:\n"
     "  - name: s\n    pool: p\n    events:\n      - {type: file, path: e.jsonl, url: x}\n",
     NULL, 7, "configuration_sets[0].events[0].url",
     "unknown key 'url'; allowed here: type, path"},
    {"webhook with a bad url",
     "server: {hostname: h.test}\npools: [{name: p}]\nconfiguration_sets:\n"
     "  - name: s\n    pool: p\n    events:\n      - type: webhook\n        url: ftp://x\n",
     NULL, 8, "configuration_sets[0].events[0].url",
     "'ftp://x' is not an http:// or https:// URL"},
    {"priority above 1000",
     "server: {hostname: h.test}\npools: [{name: p}]\nconfiguration_sets:\n"
     "  - name: s\n    pool: p\n    priority: 1001\n",
     NULL, 6, "configuration_sets[0].priority",
     "must be a whole number from -1000 to 1000 (higher is served first), not 1001"},
    {"priority below -1000",
     "server: {hostname: h.test}\npools: [{name: p}]\nconfiguration_sets:\n"
     "  - {name: s, pool: p}\n  - {name: t, pool: p, priority: -1001}\n",
     NULL, 5, "configuration_sets[1].priority",
     "must be a whole number from -1000 to 1000 (higher is served first), not -1001"},
    {"priority not a number",
     "server: {hostname: h.test}\npools: [{name: p}]\nconfiguration_sets:\n"
     "  - name: s\n    pool: p\n    priority: high\n",
     NULL, 6, "configuration_sets[0].priority", "'high' is not a whole number"},
    {"priority as quoted text",
     "server: {hostname: h.test}\npools: [{name: p}]\nconfiguration_sets:\n"
     "  - name: s\n    pool: p\n    priority: \"5\"\n",
     NULL, 6, "configuration_sets[0].priority",
     "'5' is quoted text; write the number without quotes"},
    {"priority as a list",
     "server: {hostname: h.test}\npools: [{name: p}]\nconfiguration_sets:\n"
     "  - name: s\n    pool: p\n    priority: [1]\n",
     NULL, 6, "configuration_sets[0].priority", "expected a whole number, got a list"},
    {"priority fractional",
     "server: {hostname: h.test}\npools: [{name: p}]\nconfiguration_sets:\n"
     "  - name: s\n    pool: p\n    priority: 1.5\n",
     NULL, 6, "configuration_sets[0].priority", "'1.5' is not a whole number"},
    {"unknown key in a configuration set",
     "server: {hostname: h.test}\npools: [{name: p}]\nconfiguration_sets:\n"
     "  - name: s\n    pool: p\n    prio: 1\n",
     NULL, 6, "configuration_sets[0].prio",
     "unknown key 'prio'; allowed here: name, pool, tls_policy, max_delivery_time, events, "
     "priority"},
    {"unknown event type",
     "server: {hostname: h.test}\npools: [{name: p}]\nconfiguration_sets:\n"
     "  - name: s\n    pool: p\n    events: [{type: sns}]\n",
     NULL, 6, "configuration_sets[0].events[0].type", "must be file or webhook, not 'sns'"},
    {"YAML syntax error", NULL, "bad-syntax.yaml", 4, NULL, "YAML syntax error: "},
    {"unclosed flow list", "server: {hostname: h.test}\nzones: [az1, az2\n", NULL, 3, NULL,
     "YAML syntax error: did not find expected ',' or ']'"},
    {"list where a map belongs", NULL, "bad-type.yaml", 4, "submission",
     "expected a map, got a list"},
    {"map where a list belongs", BASE "routes: {domain: a.test}\n", NULL, 7, "routes",
     "expected a list, got a map"},
    {"list where a value belongs", "server:\n  hostname: [a, b]\n", NULL, 2, "server.hostname",
     "expected a text value, got a list"},
    {"top level not a map", "- server\n", NULL, 1, NULL, "the file must be a map of sections"},
    {"duplicate key", NULL, "bad-duplicate-key.yaml", 5, "server.hostname",
     "duplicate key (first given at line 4)"},
    {"second document", BASE "---\nserver: {hostname: x.test}\n", NULL, 7, NULL,
     "a second YAML document starts here"},
    {"port out of range", BASE "delivery: {remote_port: 70000}\n", NULL, 7,
     "delivery.remote_port", "must be between 1 and 65535, not 70000"},
    {"queue_memory_recipients too small", BASE "delivery: {queue_memory_recipients: 99}\n", NULL,
     7, "delivery.queue_memory_recipients", "must be at least 100, not 99"},
    {"queue_memory_recipients not a number",
     BASE "delivery:\n  queue_memory_recipients: lots\n", NULL, 8,
     "delivery.queue_memory_recipients", "'lots' is not a whole number"},
    {"queue_memory_recipients fractional", BASE "delivery: {queue_memory_recipients: 1e6}\n",
     NULL, 7, "delivery.queue_memory_recipients", "'1e6' is not a whole number"},
    {"queue_memory_recipients quoted", BASE "delivery: {queue_memory_recipients: \"5000\"}\n",
     NULL, 7, "delivery.queue_memory_recipients", "write the number without quotes"},
    {"allow_private_mx not a boolean", BASE "delivery: {allow_private_mx: yes}\n", NULL, 7,
     "delivery.allow_private_mx", "must be false or true, not 'yes'"},
    {"quoted number", BASE "submission: {max_recipients: \"50\"}\n", NULL, 7,
     "submission.max_recipients", "write the number without quotes"},
    {"max_recipients 0", BASE "submission: {max_recipients: 0}\n", NULL, 7,
     "submission.max_recipients", "must be at least 1, not 0"},
    {"fractional recipients", BASE "submission: {max_recipients: 1.5}\n", NULL, 7,
     "submission.max_recipients", "'1.5' is not a whole number"},
    {"max_24h_send -2", BASE "account: {max_24h_send: -2}\n", NULL, 7, "account.max_24h_send",
     "must be -1 (unlimited) or at least 0, not -2"},
    {"max_send_rate 0", BASE "account: {max_send_rate: 0}\n", NULL, 7, "account.max_send_rate",
     "must be -1 (unlimited) or more than 0, not 0"},
    {"max_send_rate text", BASE "account: {max_send_rate: fast}\n", NULL, 7,
     "account.max_send_rate", "'fast' is not a number"},
    {"bad suppression reason", BASE "account: {suppression: {reasons: [BOUNCE, SPAM]}}\n", NULL,
     7, "account.suppression.reasons[1]", "must be BOUNCE or COMPLAINT, not 'SPAM'"},
    {"identity with a space", BASE "account:\n  identities: [example.test, 'a b@x.test']\n",
     NULL, 8, "account.identities[1]", "'a b@x.test' is not a domain or an address"},
    {"empty identity", BASE "account:\n  verified_recipients: ['']\n", NULL, 8,
     "account.verified_recipients[0]", "must not be empty"},
    {"bad trusted network", BASE "submission: {trusted_networks: [10.0.0.0/33]}\n", NULL, 7,
     "submission.trusted_networks[0]", "'10.0.0.0/33' is not a network"},
    {"trusted network with host bits", BASE "submission: {trusted_networks: [10.1.2.3/8]}\n",
     NULL, 7, "submission.trusted_networks[0]", "(did you mean 10.0.0.0/8?)"},
    {"listen without port", BASE "submission: {listen: [127.0.0.1]}\n", NULL, 7,
     "submission.listen[0]", "'127.0.0.1' is not host:port"},
    {"empty listen", BASE "submission: {listen: []}\n", NULL, 7, "submission.listen",
     "at least one listen address is needed"},
    {"auth without password_hash", BASE "submission:\n  auth:\n    - {user: app}\n", NULL, 9,
     "submission.auth[0].password_hash", "required key is missing"},
    {"auth with a plain password", BASE "submission:\n  auth:\n    - {user: app, password_hash: secret}\n",
     NULL, 9, "submission.auth[0].password_hash", "'secret' is not a crypt(3) hash"},
    {"auth with an argon2 hash (not in libcrypt)",
     BASE "submission:\n  auth:\n    - {user: app, password_hash: \"$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo\"}\n",
     NULL, 9, "submission.auth[0].password_hash", "argon2 is not in libcrypt"},
    {"auth with a bare salt", BASE "submission:\n  auth:\n    - {user: app, password_hash: \"$6$saltsalt$\"}\n",
     NULL, 9, "submission.auth[0].password_hash", "is not a crypt(3) hash"},
    {"tls without key", BASE "submission:\n  tls: {cert: c.pem}\n", NULL, 8,
     "submission.tls.key", "required key is missing"},
    {"dns server by name", BASE "dns: {servers: [ns.example.test]}\n", NULL, 7,
     "dns.servers[0]", "'ns.example.test' is not an IP address"},
    {"duplicate route", BASE "routes:\n  - {domain: a.test, host: h}\n  - {domain: A.TEST, host: h}\n",
     NULL, 9, "routes[1].domain", "domain 'a.test' already has a route (routes[0])"},
    {"duplicate zone", "server: {hostname: h.test}\nzones: [az1, az2, az1]\n", NULL, 2,
     "zones[2]", "'az1' is listed twice (also as zones[0])"},
    {"bad zone name", "server: {hostname: h.test}\nzones: [az1, 'a z']\n", NULL, 2, "zones[1]",
     "'a z' is not a valid name"},
    {"warmup target below first_day", BASE "warmup: {first_day: 100, target: 99}\n", NULL, 7,
     "warmup.target", "target (99) must not be below first_day (100)"},
    {"warmup days 0", BASE "warmup: {days: 0}\n", NULL, 7, "warmup.days",
     "must be at least 1, not 0"},
    {"warmup pacing 25", BASE "warmup: {pacing: 25}\n", NULL, 7, "warmup.pacing",
     "must be 0 (off) to 24, not 25"},
    {"provider without mx_suffix", BASE "shaping:\n  providers:\n    - {name: gmail}\n", NULL, 9,
     "shaping.providers[0].mx_suffix", "required key is missing"},
    {"provider connections 0",
     BASE "shaping:\n  providers:\n    - {name: g, mx_suffix: [g.com], connections: 0}\n", NULL,
     9, "shaping.providers[0].connections", "must be at least 1, not 0"},
    {"bad hostname", "server: {hostname: 'mta example'}\n", NULL, 1, "server.hostname",
     "'mta example' is not a valid host name"},
};

START_TEST(test_bad)
{
    const bad_case *bc = &bad_cases[_i];
    char *err = NULL;
    char file[200];
    config *c;
    if (bc->yaml) {
        c = load_text(bc->yaml, &err, file);
    } else {
        snprintf(file, sizeof file, "%s/%s", FIXTURES, bc->file);
        c = config_load(file, auth_hash_usable, &err);
    }
    ck_assert_msg(c == NULL, "%s: loaded but should fail", bc->name);
    ck_assert_ptr_nonnull(err);
    char prefix[400];
    if (bc->path) snprintf(prefix, sizeof prefix, "%s:%d: %s: ", file, bc->line, bc->path);
    else snprintf(prefix, sizeof prefix, "%s:%d: ", file, bc->line);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0,
                  "%s:\n  error:    %s\n  expected: %s...", bc->name, err, prefix);
    ck_assert_msg(strstr(err + strlen(prefix), bc->fragment) != NULL,
                  "%s:\n  error:    %s\n  expected to contain: %s", bc->name, err, bc->fragment);
    free(err);
}
END_TEST

/* The password hash check is the caller's: config_load asks it for every hash of the right
 * shape, and with none (NULL) checks the shape only. */
static int hash_calls;
static bool hash_refuse_all(const char *hash)
{
    (void)hash;
    hash_calls++;
    return false;
}

START_TEST(test_hash_check_handed_in)
{
#define HASH "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1"
    static const char yaml[] = BASE "submission:\n  auth:\n"
                                    "    - {user: app, password_hash: \"" HASH "\"}\n";
    char *err = NULL;
    char file[96];
    hash_calls = 0;
    config *c = load_text(yaml, &err, file);
    ck_assert_ptr_nonnull(c);   /* load_text hands in auth_hash_usable: a SHA-512 hash is fine */
    config_unref(c);

    scratch s;
    scratch_open(&s, yaml);
    c = config_load(s.file, hash_refuse_all, &err);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(hash_calls, 1);
    char want[300];
    snprintf(want, sizeof want, "%s:9: submission.auth[0].password_hash: '" HASH "' is not a "
             "crypt(3) hash", s.file);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);
    free(err);
    err = NULL;
    c = config_load(s.file, NULL, &err);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_str_eq(c->auth[0].password_hash, HASH);
    config_unref(c);
    scratch_close(&s);
    /* Without a check an argon2 hash of the right shape loads; auth_hash_usable refuses it. */
    static const char argon[] = BASE "submission:\n  auth:\n    - {user: app, password_hash: "
                                     "\"$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA\"}\n";
    scratch_open(&s, argon);
    c = config_load(s.file, NULL, &err);
    ck_assert_msg(c != NULL, "%s", err);
    config_unref(c);
    c = config_load(s.file, auth_hash_usable, &err);
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(err, "argon2 is not in libcrypt"));
    free(err);
    scratch_close(&s);
#undef HASH
}
END_TEST

/* delivery.queue_memory_recipients: the scheduler's in-memory budget, a kiln extension. */
START_TEST(test_queue_memory_recipients)
{
    char *err = NULL;
    config *c = load_text(BASE "delivery: {queue_memory_recipients: 5000}\n", &err, NULL);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(c->queue_memory_recipients, 5000);
    config_unref(c);
    c = load_text(BASE "delivery: {queue_memory_recipients: 100}\n", &err, NULL);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(c->queue_memory_recipients, 100);
    config_unref(c);
    c = load_text(BASE "delivery: {queue_memory_recipients: 10000000000}\n", &err, NULL);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(c->queue_memory_recipients, 10000000000LL);
    config_unref(c);
}
END_TEST

/* delivery.allow_private_mx: a lab/test key, false unless set. */
START_TEST(test_allow_private_mx)
{
    char *err = NULL;
    config *c = load_text(BASE "delivery: {remote_port: 2525}\n", &err, NULL);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert(!c->allow_private_mx);
    config_unref(c);
    c = load_text(BASE "delivery: {allow_private_mx: true}\n", &err, NULL);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert(c->allow_private_mx);
    config_unref(c);
}
END_TEST

/* TLS files must exist and are stored as absolute paths. */
START_TEST(test_tls_files)
{
    scratch s;
    scratch_open(&s, "server: {hostname: h.test}\n"
                     "submission:\n"
                     "  tls: {cert: cert.pem, key: key.pem}\n"
                     "pools: [{name: p}]\n"
                     "configuration_sets: [{name: s, pool: p}]\n"
                     "default_configuration_set: s\n");
    char *err = NULL;
    config *c = config_load(s.file, auth_hash_usable, &err);
    ck_assert_ptr_null(c);
    char want[PATH_MAX + 200];
    snprintf(want, sizeof want, "%s:3: submission.tls.cert: cannot read %s/cert.pem: ", s.file,
             s.real);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);
    free(err);

    scratch_write(&s, "cert.pem", "test certificate placeholder\n");
    c = config_load(s.file, auth_hash_usable, &err);
    ck_assert_ptr_null(c);
    snprintf(want, sizeof want, "%s:3: submission.tls.key: cannot read %s/key.pem: ", s.file,
             s.real);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);
    free(err);

    scratch_write(&s, "key.pem", "test key placeholder\n");
    c = config_load(s.file, auth_hash_usable, &err);
    ck_assert_msg(c != NULL, "%s", err);
    snprintf(want, sizeof want, "%s/cert.pem", s.real);
    ck_assert_str_eq(c->tls_cert, want);
    snprintf(want, sizeof want, "%s/key.pem", s.real);
    ck_assert_str_eq(c->tls_key, want);
    config_unref(c);
    scratch_close(&s);
}
END_TEST

START_TEST(test_control_socket_too_long)
{
    char yaml[600];
    char longdir[200];
    memset(longdir, 'd', 120);
    longdir[120] = '\0';
    snprintf(yaml, sizeof yaml, "server: {hostname: h.test, spool: %s}\n", longdir);
    char *err = NULL, file[96];
    config *c = load_text(yaml, &err, file);
    ck_assert_ptr_null(c);
    char prefix[200];
    snprintf(prefix, sizeof prefix, "%s:1: server.control_socket: ", file);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "%s", err);
    ck_assert_msg(strstr(err, "a Unix socket path must be shorter than 108"), "%s", err);
    free(err);
}
END_TEST

/* ---- warnings ---- */

START_TEST(test_warning_small_pool)
{
    char *err = NULL;
    config *c = load_text(BASE, &err, NULL);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_uint_eq(c->nwarnings, 1);
    ck_assert_str_eq(c->warnings[0], "pool p has 1 IP; at least 3 are recommended");
    char *sum = config_summary(c);
    ck_assert_msg(strstr(sum, "\nwarning: pool p has 1 IP; at least 3 are recommended\n"), "%s",
                  sum);
    free(sum);
    config_unref(c);
}
END_TEST

START_TEST(test_warning_one_zone)
{
    char *err = NULL;
    config *c = load_text("server: {hostname: h.test}\n"
                          "zones: [az1, az2, az3]\n"
                          "ips:\n"
                          "  - {address: 127.0.0.10, zone: az1, pool: p}\n"
                          "  - {address: 127.0.0.11, zone: az1, pool: p}\n"
                          "  - {address: 127.0.0.12, zone: az1, pool: p}\n"
                          "  - {address: 127.0.0.13, zone: az1, pool: two}\n"
                          "  - {address: 127.0.0.14, zone: az2, pool: two}\n"
                          "pools: [{name: p}, {name: two}, {name: empty}]\n"
                          "configuration_sets: [{name: s, pool: p}]\n"
                          "default_configuration_set: s\n",
                          &err, NULL);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert(has_warning(c, "pool p has its 3 IPs in 1 zone (az1); spread them over at least 3 "
                             "zones"));
    ck_assert(!has_warning(c, "pool p has 3 IP"));
    ck_assert(has_warning(c, "pool two has 2 IPs; at least 3 are recommended"));
    ck_assert(!has_warning(c, "pool two has its"));   /* 2 IPs in 2 zones is spread enough */
    ck_assert(has_warning(c, "pool empty has no IPs"));
    ck_assert_uint_eq(c->nwarnings, 3);
    config_unref(c);
}
END_TEST

START_TEST(test_warning_short_delivery_time)
{
    char *err = NULL;
    config *c = load_text("server: {hostname: h.test}\n"
                          "pools: [{name: p}]\n"
                          "configuration_sets: [{name: s, pool: p, max_delivery_time: 1m}]\n"
                          "default_configuration_set: s\n",
                          &err, NULL);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(c->sets[0].max_delivery_time_ms, 60000);
    ck_assert(has_warning(c, "configuration set s: max_delivery_time 1m is below 5m"));
    config_unref(c);
}
END_TEST

/* The ends of the priority range are accepted as written; the summary shows each set's. */
START_TEST(test_priority_bounds)
{
    char *err = NULL;
    config *c = load_text("server: {hostname: h.test}\n"
                          "zones: [az1, az2, az3]\n"
                          "ips: [{address: 127.0.0.10, zone: az1, pool: p},\n"
                          "      {address: 127.0.0.11, zone: az2, pool: p},\n"
                          "      {address: 127.0.0.12, zone: az3, pool: p}]\n"
                          "pools: [{name: p}]\n"
                          "configuration_sets:\n"
                          "  - {name: hi, pool: p, priority: 1000}\n"
                          "  - {name: lo, pool: p, priority: -1000}\n"
                          "  - {name: mid, pool: p}\n"
                          "default_configuration_set: mid\n",
                          &err, NULL);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(config_find_set(c, "hi")->priority, 1000);
    ck_assert_int_eq(config_find_set(c, "lo")->priority, -1000);
    ck_assert_int_eq(config_find_set(c, "mid")->priority, 0);
    char *sum = config_summary(c);
    ck_assert_msg(strstr(sum, "  hi -> pool p, tls optional, max_delivery_time 14h, priority 1000,"),
                  "%s", sum);
    ck_assert_msg(strstr(sum, "  lo -> pool p, tls optional, max_delivery_time 14h, priority -1000,"),
                  "%s", sum);
    ck_assert_msg(strstr(sum, "  mid (default) -> pool p, tls optional, max_delivery_time 14h, "
                              "priority 0,"), "%s", sum);
    free(sum);
    config_unref(c);
}
END_TEST

/* ---- the summary ---- */

START_TEST(test_summary)
{
    char *err = NULL;
    config *c = config_load(FIXTURES "/good.yaml", auth_hash_usable, &err);
    ck_assert_ptr_nonnull(c);
    char *s = config_summary(c);
    static const char *const parts[] = {
        "config OK: " FIXTURES "/good.yaml\n",
        "server: mta.good.test, region eu-west-1, account mode production",
        "dns: 127.0.0.1:5353, [::1]:53, 10.0.0.53:53, timeout 1500ms\n",
        "submission: listen 127.0.0.1:2525, [::1]:2526; STARTTLS off; AUTH required; trusted "
        "networks 10.0.0.0/8, fd00::/8, 192.168.1.7/32; max size 512KB, 7 recipients\n",
        "pools:\n  main: standard, overflow defer, 3 IPs (1 warm)\n"
        "  bulk: managed, overflow main, 3 IPs (0 warm)\n",
        "IPs per zone:\n  z1: 192.0.2.1 (main, warming up), 192.0.2.4 (bulk, warming up)\n",
        "  z2: 192.0.2.2 (main, warm), 192.0.2.5 (bulk, warming up)\n",
        "configuration sets:\n  txn -> pool main, tls optional, max_delivery_time 14h, "
        "priority 0, events: file ",
        "webhook https://hooks.good.test/kiln\n",
        "  news (default) -> pool bulk, tls require, max_delivery_time 2h, priority -5, no event "
        "destinations\n",
        "routes:\n  demo.test -> 127.0.0.1:2526\n  other.test -> mx.other.test:2500\n",
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        ck_assert_msg(strstr(s, parts[i]) != NULL, "summary lacks [%s]:\n%s", parts[i], s);
    ck_assert_msg(strstr(s, "warning:") == NULL, "%s", s);
    free(s);
    config_unref(c);
}
END_TEST

/* ---- value parsers ---- */

static const struct { const char *in; int64_t want; } size_ok[] = {
    {"10MB", 10485760}, {"512KB", 524288}, {"1GB", 1073741824}, {"123", 123}, {"7B", 7},
    {"10mb", 10485760}, {"2Kb", 2048}, {"10 MB", 10485760}, {"0", 0},
    {"8589934591GB", 8589934591LL * 1073741824LL},
};
static const char *const size_bad[] = {
    "", "10XB", "-1MB", "1.5MB", "MB", "10M", "10K", " 10MB", "10MB ", "10 ", "+10",
    "8589934592GB", "9223372036854775808", "99999999999999999999999",
};

START_TEST(test_parse_size)
{
    for (size_t i = 0; i < sizeof size_ok / sizeof size_ok[0]; i++) {
        int64_t v = -7;
        ck_assert_msg(config_parse_size(size_ok[i].in, &v) == 0, "rejected '%s'", size_ok[i].in);
        ck_assert_msg(v == size_ok[i].want, "'%s' -> %lld", size_ok[i].in, (long long)v);
    }
    for (size_t i = 0; i < sizeof size_bad / sizeof size_bad[0]; i++) {
        int64_t v = -7;
        ck_assert_msg(config_parse_size(size_bad[i], &v) == -1, "accepted '%s'", size_bad[i]);
        ck_assert_int_eq(v, -7);
    }
    int64_t v;
    ck_assert_int_eq(config_parse_size(NULL, &v), -1);
}
END_TEST

static const struct { const char *in; int64_t want; } dur_ok[] = {
    {"500ms", 500}, {"30s", 30000}, {"5m", 300000}, {"14h", 50400000}, {"2d", 172800000},
    {"0s", 0}, {"106751991167d", 106751991167LL * 86400000LL},
};
static const char *const dur_bad[] = {
    "", "30", "-5s", "1.5h", "5 m", "5M", "5H", "30sec", "s", "ms", "+5s", "5s ",
    "106751991168d", "99999999999999999999s",
};

START_TEST(test_parse_duration)
{
    for (size_t i = 0; i < sizeof dur_ok / sizeof dur_ok[0]; i++) {
        int64_t v = -7;
        ck_assert_msg(config_parse_duration(dur_ok[i].in, &v) == 0, "rejected '%s'", dur_ok[i].in);
        ck_assert_msg(v == dur_ok[i].want, "'%s' -> %lld", dur_ok[i].in, (long long)v);
    }
    for (size_t i = 0; i < sizeof dur_bad / sizeof dur_bad[0]; i++) {
        int64_t v = -7;
        ck_assert_msg(config_parse_duration(dur_bad[i], &v) == -1, "accepted '%s'", dur_bad[i]);
        ck_assert_int_eq(v, -7);
    }
}
END_TEST

static const struct { const char *in; int64_t count, per_ms; } rate_ok[] = {
    {"50/s", 50, 1000}, {"10/m", 10, 60000}, {"1000/h", 1000, 3600000}, {"-1", -1, 1000},
    {"1/s", 1, 1000},
};
static const char *const rate_bad[] = {
    "", "0/s", "50/d", "50", "-2", "5.5/s", "/s", "50/S", "50 /s", "50/s ", "-1/s", "50/",
    "99999999999999999999/s",
};

START_TEST(test_parse_rate)
{
    for (size_t i = 0; i < sizeof rate_ok / sizeof rate_ok[0]; i++) {
        config_rate r = {0, 0};
        ck_assert_msg(config_parse_rate(rate_ok[i].in, &r) == 0, "rejected '%s'", rate_ok[i].in);
        ck_assert_int_eq(r.count, rate_ok[i].count);
        ck_assert_int_eq(r.per_ms, rate_ok[i].per_ms);
    }
    for (size_t i = 0; i < sizeof rate_bad / sizeof rate_bad[0]; i++) {
        config_rate r = {7, 7};
        ck_assert_msg(config_parse_rate(rate_bad[i], &r) == -1, "accepted '%s'", rate_bad[i]);
        ck_assert_int_eq(r.count, 7);
    }
}
END_TEST

static const struct { const char *in; int dflt; const char *host; int port; } hp_ok[] = {
    {"127.0.0.1:5353", 53, "127.0.0.1", 5353},
    {"[::1]:25", 53, "::1", 25},
    {"[2001:db8::1]:2525", 0, "2001:db8::1", 2525},
    {"host", 53, "host", 53},
    {"mx.example.test:2525", 25, "mx.example.test", 2525},
    {"[::1]", 53, "::1", 53},
    {"::1", 53, "::1", 53},
    {"10.0.0.1", 53, "10.0.0.1", 53},
    {"localhost:65535", 0, "localhost", 65535},
};
static const struct { const char *in; int dflt; } hp_bad[] = {
    {"", 53}, {":25", 53}, {"127.0.0.1:", 53}, {"127.0.0.1:0", 53}, {"127.0.0.1:65536", 53},
    {"127.0.0.1:-1", 53}, {"127.0.0.1:2x", 53}, {"[::1", 53}, {"[::1]x", 53}, {"[::1]:", 53},
    {"[127.0.0.1]:25", 53}, {"[]:25", 53}, {"host:port", 53}, {"a b:25", 53},
    {"127.0.0.256:25", 53}, {"bad_-.host", 53}, {"127.0.0.1", 0}, {"[::1]", 0},
    {"::zz", 53},
};

START_TEST(test_parse_hostport)
{
    for (size_t i = 0; i < sizeof hp_ok / sizeof hp_ok[0]; i++) {
        config_hostport hp = {NULL, 0};
        ck_assert_msg(config_parse_hostport(hp_ok[i].in, hp_ok[i].dflt, &hp) == 0,
                      "rejected '%s'", hp_ok[i].in);
        ck_assert_str_eq(hp.host, hp_ok[i].host);
        ck_assert_int_eq(hp.port, hp_ok[i].port);
        free(hp.host);
    }
    for (size_t i = 0; i < sizeof hp_bad / sizeof hp_bad[0]; i++) {
        config_hostport hp = {NULL, 0};
        ck_assert_msg(config_parse_hostport(hp_bad[i].in, hp_bad[i].dflt, &hp) == -1,
                      "accepted '%s'", hp_bad[i].in);
        ck_assert_ptr_null(hp.host);
    }
}
END_TEST

static const struct { const char *in; int family; int prefix; unsigned char b0, blast; } cidr_ok[] = {
    {"127.0.0.0/8", AF_INET, 8, 127, 0},
    {"10.0.0.1", AF_INET, 32, 10, 1},
    {"0.0.0.0/0", AF_INET, 0, 0, 0},
    {"192.168.1.128/25", AF_INET, 25, 192, 128},
    {"::1/128", AF_INET6, 128, 0, 1},
    {"::1", AF_INET6, 128, 0, 1},
    {"fd00::/8", AF_INET6, 8, 0xfd, 0},
    {"::/0", AF_INET6, 0, 0, 0},
};
static const char *const cidr_bad[] = {
    "", "127.0.0.1/8", "10.0.0.0/33", "::1/129", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8x",
    "foo/8", "/8", "10.0.0.0/+8", "10.0.0/8", "::1/64", "10.0.0.0/8/8",
};

START_TEST(test_parse_cidr)
{
    for (size_t i = 0; i < sizeof cidr_ok / sizeof cidr_ok[0]; i++) {
        config_cidr c;
        ck_assert_msg(config_parse_cidr(cidr_ok[i].in, &c) == 0, "rejected '%s'", cidr_ok[i].in);
        ck_assert_int_eq(c.family, cidr_ok[i].family);
        ck_assert_int_eq(c.prefix, cidr_ok[i].prefix);
        ck_assert_int_eq(c.addr[0], cidr_ok[i].b0);
        ck_assert_int_eq(c.addr[c.family == AF_INET ? 3 : 15], cidr_ok[i].blast);
    }
    for (size_t i = 0; i < sizeof cidr_bad / sizeof cidr_bad[0]; i++) {
        config_cidr c;
        ck_assert_msg(config_parse_cidr(cidr_bad[i], &c) == -1, "accepted '%s'", cidr_bad[i]);
    }
}
END_TEST

/* ---- trusted networks ---- */

START_TEST(test_trusted)
{
    char *err = NULL;
    config *c = load_text(BASE "submission:\n  trusted_networks: [127.0.0.0/8, 10.1.0.0/16, "
                               "'2001:db8::/32', '::ffff:192.0.2.0/120', 198.51.100.7]\n",
                          &err, NULL);
    ck_assert_msg(c != NULL, "%s", err);
    static const struct { const char *addr; bool trusted; } cases[] = {
        {"127.0.0.1", true},        {"127.255.255.254", true}, {"10.1.200.3", true},
        {"10.2.0.1", false},        {"11.1.0.1", false},       {"198.51.100.7", true},
        {"198.51.100.8", false},    {"::ffff:127.0.0.5", true}, {"::FFFF:10.1.0.9", true},
        {"::ffff:10.2.0.9", false}, {"2001:db8::1", true},     {"2001:db8:ffff::1", true},
        {"2001:db9::1", false},     {"::1", false},            {"192.0.2.77", true},
        {"192.0.3.1", false},       {"garbage", false},        {"", false},
        {"2001:db8::1%eth0", true}, {"127.0.0.1:25", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ck_assert_msg(config_is_trusted(c, cases[i].addr) == cases[i].trusted, "%s: want %s",
                      cases[i].addr, cases[i].trusted ? "trusted" : "not trusted");
    ck_assert(!config_is_trusted(c, NULL));
    config_unref(c);

    c = load_text(BASE, &err, NULL);   /* no trusted_networks: nobody is trusted */
    ck_assert_ptr_nonnull(c);
    ck_assert(!config_is_trusted(c, "127.0.0.1"));
    config_unref(c);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("load");
    tcase_add_test(tc, test_good_file);
    tcase_add_test(tc, test_shipped_default);
    tcase_add_test(tc, test_full_example);
    tcase_add_test(tc, test_defaults_and_paths);
    tcase_add_test(tc, test_refcount);
    tcase_add_test(tc, test_missing_file);
    tcase_add_test(tc, test_tls_files);
    tcase_add_test(tc, test_hash_check_handed_in);
    tcase_add_test(tc, test_queue_memory_recipients);
    tcase_add_test(tc, test_allow_private_mx);
    tcase_add_test(tc, test_control_socket_too_long);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_loop_test(tc, test_bad, 0, (int)(sizeof bad_cases / sizeof bad_cases[0]));
    suite_add_tcase(s, tc);

    tc = tcase_create("warnings");
    tcase_add_test(tc, test_warning_small_pool);
    tcase_add_test(tc, test_warning_one_zone);
    tcase_add_test(tc, test_warning_short_delivery_time);
    tcase_add_test(tc, test_priority_bounds);
    tcase_add_test(tc, test_summary);
    suite_add_tcase(s, tc);

    tc = tcase_create("values");
    tcase_add_test(tc, test_parse_size);
    tcase_add_test(tc, test_parse_duration);
    tcase_add_test(tc, test_parse_rate);
    tcase_add_test(tc, test_parse_hostport);
    tcase_add_test(tc, test_parse_cidr);
    tcase_add_test(tc, test_trusted);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(config_suite);
