/* testlib.c — the shared part of kiln's Check programs: one main() that runs the suites a
 * test file lists, in-memory config fixtures with config_load()'s defaults, and scratch
 * directories that do not outlive the process that made them. See testlib.h for the
 * promises. */
#include "tests/unit/testlib.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"

/* ---------------------------------------------------------------- the runner ---- */

static int run_argc;
static char **run_argv;
static char *run_root;           /* parent of every testlib_tmpdir of this run */
static pid_t run_root_owner;

static void run_root_make(const char *argv0);

bool testlib_flag(const char *name)
{
    for (int i = 1; i < run_argc; i++)
        if (strcmp(run_argv[i], name) == 0) return true;
    return false;
}

int main(int argc, char **argv)
{
    run_argc = argc;
    run_argv = argv;
    run_root_make(argv[0]);
    if (!testlib_suites[0]) {
        fprintf(stderr, "%s: no suites listed (TESTLIB_SUITES)\n", argv[0]);
        return EXIT_FAILURE;
    }
    SRunner *sr = srunner_create(testlib_suites[0]());
    for (size_t i = 1; testlib_suites[i]; i++) srunner_add_suite(sr, testlib_suites[i]());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ----------------------------------------------------------- config fixtures ---- */

/* Grows an array of n elements of size sz by one zeroed element; returns the new one. */
static void *grow(void *arrp, size_t *n, size_t sz)
{
    void **arr = arrp;
    *arr = util_realloc(*arr, (*n + 1) * sz);
    char *last = (char *)*arr + *n * sz;
    memset(last, 0, sz);
    (*n)++;
    return last;
}

config *testlib_config_new(void)
{
    config *c = util_calloc(1, sizeof *c);
    /* the values of set_defaults() and set_string_defaults() in base/config.c */
    c->refs = 1;
    c->hostname = util_strdup("mta.example.test");
    c->region = util_strdup("local");
    c->log = util_strdup("stderr");
    c->log_level = KLOG_INFO;
    c->dns_timeout_ms = 2000;
    c->listen = util_calloc(1, sizeof *c->listen);
    c->listen[0].host = util_strdup("127.0.0.1");
    c->listen[0].port = 2587;
    c->nlisten = 1;
    c->max_message_size = 10 * 1024 * 1024;
    c->max_recipients = 50;
    c->mode = CONFIG_MODE_SANDBOX;
    c->max_24h_send = 200;
    c->max_send_rate = 1;
    c->suppression_reasons = CONFIG_SUPPRESS_BOUNCE | CONFIG_SUPPRESS_COMPLAINT;
    c->remote_port = 25;
    c->retry_first_ms = 60 * 1000;
    c->retry_max_interval_ms = 3600 * 1000;
    c->retry_factor = 2;
    c->connect_timeout_ms = 10 * 1000;
    /* outbound TLS: config_tls_defaults() in base/config_tls.c */
    c->mta_sts_fetch_timeout_ms = 10 * 1000;
    c->mta_sts_cache_size = 10000;
    c->mta_sts_port = 443;
    c->warmup = (config_warmup){.days = 45, .first_day = 50, .target = 50000,
                                .advance = CONFIG_ADVANCE_CALENDAR, .pacing = 4};
    c->shaping_default = (config_shaping_limits){10, 100, {50, 1000}};
    /* submission limits: config_limits_defaults() in base/config_limits.c */
    c->max_sessions = 0;
    c->reserved_sessions = -1;
    c->max_sessions_per_client = 50;
    c->max_connection_rate_per_client = (config_rate){100, 60000};
    c->limit_trusted_clients = false;
    c->session_deadline_ms = 3600 * 1000;
    c->min_data_rate = 500;
    c->min_data_rate_window_ms = 30 * 1000;
    c->max_junk_commands = 100;
    return c;
}

void testlib_config_add_zone(config *c, const char *zone)
{
    char **z = grow(&c->zones, &c->nzones, sizeof *c->zones);
    *z = util_strdup(zone);
}

config_pool *testlib_config_add_pool(config *c, const char *name, config_scaling scaling)
{
    config_pool *p = grow(&c->pools, &c->npools, sizeof *c->pools);
    p->name = util_strdup(name);
    p->scaling = scaling;
    return p;
}

config_ip *testlib_config_add_ip(config *c, const char *address, const char *zone,
                                 const char *pool, config_warmup_state warmup)
{
    config_ip *ip = grow(&c->ips, &c->nips, sizeof *c->ips);
    ip->address = util_strdup(address);
    ip->zone = util_strdup(zone);
    ip->pool = util_strdup(pool);
    ip->warmup = warmup;
    return ip;
}

config_set *testlib_config_add_set(config *c, const char *name, const char *pool)
{
    config_set *s = grow(&c->sets, &c->nsets, sizeof *c->sets);
    s->name = util_strdup(name);
    s->pool = util_strdup(pool);
    s->tls_policy = CONFIG_TLS_OPTIONAL;
    s->max_delivery_time_ms = 14 * 3600 * 1000LL;
    return s;
}

void testlib_config_add_event_file(config_set *s, const char *path)
{
    config_event_dest *d = grow(&s->events, &s->nevents, sizeof *s->events);
    d->type = CONFIG_EVENT_FILE;
    d->path = util_strdup(path);
}

config_event_dest *testlib_config_add_event_webhook(config_set *s, const char *url)
{
    config_event_dest *d = grow(&s->events, &s->nevents, sizeof *s->events);
    d->type = CONFIG_EVENT_WEBHOOK;
    d->url = util_strdup(url);
    d->batch = 1;
    d->max_backlog = CONFIG_WEBHOOK_BACKLOG_DEFAULT;
    return d;
}

void testlib_config_set_default_set(config *c, const char *name)
{
    free(c->default_set);
    c->default_set = util_strdup(name);
}

void testlib_config_set_retry(config *c, int64_t first_ms, int64_t max_interval_ms,
                              double factor)
{
    c->retry_first_ms = first_ms;
    c->retry_max_interval_ms = max_interval_ms;
    c->retry_factor = factor;
}

void testlib_config_set_shaping_default(config *c, int connections,
                                        int messages_per_connection, config_rate rate)
{
    c->shaping_default.connections = connections;
    c->shaping_default.messages_per_connection = messages_per_connection;
    c->shaping_default.rate = rate;
}

config_provider *testlib_config_add_provider(config *c, const char *name,
                                             char *const *mx_suffix, size_t nmx_suffix,
                                             config_shaping_limits limits)
{
    config_provider *p = grow(&c->providers, &c->nproviders, sizeof *c->providers);
    p->name = util_strdup(name);
    p->mx_suffix = util_calloc(nmx_suffix ? nmx_suffix : 1, sizeof *p->mx_suffix);
    for (size_t i = 0; i < nmx_suffix; i++) p->mx_suffix[i] = util_strdup(mx_suffix[i]);
    p->nmx_suffix = nmx_suffix;
    p->limits = limits;
    return p;
}

void testlib_config_add_identity(config *c, const char *identity)
{
    char **v = grow(&c->identities, &c->nidentities, sizeof *c->identities);
    *v = util_strdup(identity);
}

void testlib_config_add_verified_recipient(config *c, const char *recipient)
{
    char **v = grow(&c->verified_recipients, &c->nverified_recipients,
                    sizeof *c->verified_recipients);
    *v = util_strdup(recipient);
}

void testlib_config_add_auth_user(config *c, const char *user, const char *password_hash)
{
    config_auth_user *u = grow(&c->auth, &c->nauth, sizeof *c->auth);
    u->user = util_strdup(user);
    u->password_hash = util_strdup(password_hash);
}

void testlib_config_add_dns_server(config *c, const char *host, int port)
{
    config_hostport *hp = grow(&c->dns_servers, &c->ndns_servers, sizeof *c->dns_servers);
    hp->host = util_strdup(host);
    hp->port = port;
}

/* ------------------------------------------------------- scratch directories ---- */

typedef struct tmpdir_entry {
    char *path;
    pid_t owner;             /* only the process that made a directory removes it at exit */
} tmpdir_entry;

static tmpdir_entry *tmpdirs;
static size_t ntmpdirs;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

int testlib_rmtree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -1;
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

static void tmpdirs_at_exit(void)
{
    pid_t self = getpid();
    for (size_t i = 0; i < ntmpdirs; i++)
        if (tmpdirs[i].owner == self) testlib_rmtree(tmpdirs[i].path);
    /* A failed check ends Check's child with _exit (no atexit): what it made is still under
     * the run's root, which the main process removes last. */
    if (run_root && run_root_owner == self) testlib_rmtree(run_root);
}

static void tmpdirs_register_exit(void)
{
    static bool registered;
    if (!registered) {
        atexit(tmpdirs_at_exit);
        registered = true;
    }
}

/* /tmp/kiln-test-<program>-XXXXXX, made by main() before any test runs. */
static void run_root_make(const char *argv0)
{
    const char *base = strrchr(argv0, '/');
    base = base ? base + 1 : argv0;
    run_root = util_asprintf("/tmp/kiln-test-%s-XXXXXX", *base ? base : "run");
    if (!mkdtemp(run_root)) {
        fprintf(stderr, "testlib: mkdtemp %s: %s\n", run_root, strerror(errno));
        exit(EXIT_FAILURE);
    }
    run_root_owner = getpid();
    tmpdirs_register_exit();
}

const char *testlib_tmpdir(const char *tag)
{
    tmpdirs_register_exit();
    char *path = run_root ? util_asprintf("%s/%s-XXXXXX", run_root, tag)
                          : util_asprintf("/tmp/kiln-test-%s-XXXXXX", tag);
    if (!mkdtemp(path)) {
        fprintf(stderr, "testlib: mkdtemp %s: %s\n", path, strerror(errno));
        exit(EXIT_FAILURE);
    }
    tmpdir_entry *e = grow(&tmpdirs, &ntmpdirs, sizeof *tmpdirs);
    e->path = path;
    e->owner = getpid();
    return path;
}

void testlib_tmpdir_remove(const char *dir)
{
    for (size_t i = 0; i < ntmpdirs; i++) {
        if (tmpdirs[i].path != dir && strcmp(tmpdirs[i].path, dir) != 0) continue;
        testlib_rmtree(tmpdirs[i].path);
        free(tmpdirs[i].path);
        tmpdirs[i] = tmpdirs[--ntmpdirs];
        return;
    }
    testlib_rmtree(dir);
}

char *testlib_subdir(const char *parent, const char *prefix)
{
    char *d = util_asprintf("%s/%sXXXXXX", parent, prefix);
    ck_assert_msg(mkdtemp(d) != NULL, "mkdtemp %s: %s", d, strerror(errno));
    return d;
}

void testlib_write_file(const char *dir, const char *name, const char *text, size_t len,
                        unsigned mode)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(text, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(chmod(path, (mode_t)mode), 0);
}

void testlib_write_private(const char *dir, const char *name, const char *text)
{
    char *path = util_asprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(chmod(path, 0600), 0);
    free(path);
}

char *testlib_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    strbuf sb;
    strbuf_init(&sb);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) strbuf_append(&sb, buf, n);
    fclose(f);
    if (len) *len = sb.len;
    return strbuf_steal(&sb);
}

void testlib_on_commit(void *arg, bool ok, const char *err)
{
    testlib_commit_slot *s = arg;
    testlib_commit_log *l = s->log;
    ck_assert_uint_lt(l->n, TESTLIB_COMMITS);
    l->order[l->n] = s->idx;
    l->ok[l->n] = ok;
    snprintf(l->err[l->n], sizeof l->err[0], "%s", err ? err : "");
    l->n++;
}

/* ---------------------------------------------------------------- spool fixtures ---- */

spool *testlib_spool_open(const char *dir, bool pipelined)
{
    char *err = NULL;
    spool *sp = spool_open(dir, pipelined, &err);
    ck_assert_msg(sp != NULL, "spool_open %s: %s", dir, err ? err : "?");
    return sp;
}

void testlib_spool_add(spool *sp, const char *id, const char *set, int64_t created_ms,
                       unsigned quota_count)
{
    static const char body[] = "Subject: hi\r\n\r\nhello\r\n";
    spool_message m = {.created_ms = created_ms ? created_ms : util_wall_ms(), .config_set = set,
                       .mail_from = "sender@example.test", .client_ip = "192.0.2.7",
                       .mail_json = "{}", .data = body, .data_len = sizeof body - 1,
                       .quota_count = quota_count};
    snprintf(m.id, sizeof m.id, "%s", id);
    ck_assert_int_eq(spool_add_message(sp, &m), 0);
}

bool testlib_spool_has(spool *sp, const char *id)
{
    spool_loaded l;
    if (spool_load_message(sp, id, &l) < 0) return false;
    spool_loaded_free(&l);
    return true;
}
