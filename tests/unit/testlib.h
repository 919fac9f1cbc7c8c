/* testlib.h — what every kiln Check program shares (tests/unit/libtestlib.a):
 *
 *  - the runner: a test file lists its suites with TESTLIB_SUITES(a_suite, b_suite) and
 *    testlib's main() runs them all in one SRunner with CK_NORMAL output, so Check's summary
 *    line ("100%: Checks: N, Failures: 0, Errors: 0") is printed once per program (the
 *    Makefile's check-local adds those up); the exit status is non-zero when any check
 *    failed. Command-line flags (e.g. --regen of the golden tests) are read with
 *    testlib_flag().
 *  - config fixtures: testlib_config_new() returns what config_load() gives for a minimal
 *    file (`server: {hostname: mta.example.test}`): every default of SPEC section 1, refs 1,
 *    every string and array on the heap, so that config_unref() releases it like a loaded
 *    one and a module that keeps a pointer into a freed config shows up under ASan. The
 *    file-derived paths (path, dir, spool, control_socket) stay NULL. Adders copy their
 *    arguments; fields without an adder are plain assignments on the returned struct.
 *  - scratch directories: testlib_tmpdir() makes a fresh <tag>-XXXXXX under this run's
 *    /tmp/kiln-test-<program>-XXXXXX and removes it, with everything in it, when asked or
 *    when the process that made it exits (a Check child never removes its parent's
 *    directories); the main process removes the run's directory last, so nothing is left
 *    even when a failed check ended a child with _exit.
 */
#ifndef KILN_TESTLIB_H
#define KILN_TESTLIB_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/config.h"
#include "store/spool.h"

/* ---- the runner ---- */

typedef Suite *(*testlib_suite_fn)(void);
/* NULL-terminated; defined by each test program through TESTLIB_SUITES. */
extern const testlib_suite_fn testlib_suites[];
#define TESTLIB_SUITES(...) const testlib_suite_fn testlib_suites[] = {__VA_ARGS__, NULL}

/* True if the program was started with this exact argument (e.g. "--regen"). */
bool testlib_flag(const char *name);

/* ---- config fixtures ---- */

config *testlib_config_new(void);
void testlib_config_add_zone(config *c, const char *zone);
config_pool *testlib_config_add_pool(config *c, const char *name, config_scaling scaling);
config_ip *testlib_config_add_ip(config *c, const char *address, const char *zone,
                                 const char *pool, config_warmup_state warmup);
/* The returned set stays valid until the next testlib_config_add_set on c. */
config_set *testlib_config_add_set(config *c, const char *name, const char *pool);
void testlib_config_add_event_file(config_set *s, const char *path);
/* A webhook with the config's defaults (batch 1, max_backlog 1,000,000); the returned
 * destination stays valid until the next adder on s. */
config_event_dest *testlib_config_add_event_webhook(config_set *s, const char *url);
void testlib_config_set_default_set(config *c, const char *name);
void testlib_config_set_retry(config *c, int64_t first_ms, int64_t max_interval_ms,
                              double factor);
void testlib_config_set_shaping_default(config *c, int connections,
                                        int messages_per_connection, config_rate rate);
config_provider *testlib_config_add_provider(config *c, const char *name,
                                             char *const *mx_suffix, size_t nmx_suffix,
                                             config_shaping_limits limits);
void testlib_config_add_identity(config *c, const char *identity);
void testlib_config_add_verified_recipient(config *c, const char *recipient);
void testlib_config_add_auth_user(config *c, const char *user, const char *password_hash);
void testlib_config_add_dns_server(config *c, const char *host, int port);

/* ---- scratch directories and files ---- */

/* A fresh directory <run root>/<tag>-XXXXXX (the process exits if it cannot be made). The
 * string belongs to testlib and stays valid until testlib_tmpdir_remove(). */
const char *testlib_tmpdir(const char *tag);
/* Removes dir (made by testlib_tmpdir) with its content and forgets it. */
void testlib_tmpdir_remove(const char *dir);
/* A fresh directory <parent>/<prefix>XXXXXX (malloc'd; a failed check if it cannot be made). */
char *testlib_subdir(const char *parent, const char *prefix);
/* rm -r: 0, or -1 if something could not be removed (a missing path is not an error). */
int testlib_rmtree(const char *path);
/* Writes text to <dir>/<name> with mode 0600, as kiln wants its secret files (a failed
 * check if it cannot). */
void testlib_write_private(const char *dir, const char *name, const char *text);
/* The whole file as a NUL-terminated string (malloc'd, *len set if len), or NULL. */
char *testlib_read_file(const char *path, size_t *len);
/* Writes len bytes of text to dir/name and gives it mode (failed checks if it cannot). */
void testlib_write_file(const char *dir, const char *name, const char *text, size_t len,
                        unsigned mode);

/* Records spool commit callbacks (spool_on_commit(sp, testlib_on_commit, &slot)): which ran,
 * in what order, with what outcome and error text. */
#define TESTLIB_COMMITS 256
typedef struct testlib_commit_log {
    size_t n;
    int order[TESTLIB_COMMITS];
    bool ok[TESTLIB_COMMITS];
    char err[TESTLIB_COMMITS][200];
} testlib_commit_log;
typedef struct testlib_commit_slot {
    testlib_commit_log *log;
    int idx;                    /* recorded in order[] */
} testlib_commit_slot;
void testlib_on_commit(void *arg, bool ok, const char *err);

/* Spool fixtures: opens dir (a failure fails the test); adds message id of set with a small
 * body, created at created_ms (0: now); whether message id is stored. */
spool *testlib_spool_open(const char *dir, bool pipelined);
void testlib_spool_add(spool *sp, const char *id, const char *set, int64_t created_ms,
                       unsigned quota_count);
bool testlib_spool_has(spool *sp, const char *id);

#endif
