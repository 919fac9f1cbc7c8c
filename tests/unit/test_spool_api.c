/* test_spool_api.c — the spool reads and writes the SES API stands on (store/spool.h):
 * spool_kv_delete (recorded in the filling batch; the key reads as absent at once, before the
 * commit; `existed` as the loop sees it; a failed batch gives the value back; a kept delete
 * survives a failed batch), spool_kv_each_prefix (committed keys of one prefix in key order,
 * paged with an exclusive `after` and a maximum; '%' and '_' in a prefix are literal; the key
 * just past the prefix's range stays out; 0xff bytes and the empty prefix) and
 * spool_suppression_page (address order, exclusive `after`, the [since, until) window, the
 * reason filter, committed entries only). */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "base/config.h"
#include "base/util.h"
#include "store/spool.h"
#include "tests/unit/testlib.h"

static const char *base_dir;

static void base_setup(void)
{
    base_dir = testlib_tmpdir("api");
}

static void base_teardown(void)
{
    testlib_tmpdir_remove(base_dir);
}

static spool *open_new(void)
{
    char *dir = testlib_subdir(base_dir, "sp-");
    spool *sp = testlib_spool_open(dir, true);
    free(dir);
    return sp;
}

/* The value of key (malloc'd) or NULL; a read error fails the test. */
static char *kv(spool *sp, const char *key)
{
    char *v = NULL;
    ck_assert_int_eq(spool_kv_get(sp, key, &v), 0);
    return v;
}

static void assert_kv(spool *sp, const char *key, const char *want)
{
    char *v = kv(sp, key);
    if (!want) {
        ck_assert_msg(v == NULL, "%s: expected no value, got \"%s\"", key, v);
    } else {
        ck_assert_msg(v != NULL, "%s: expected \"%s\", got no value", key, want);
        ck_assert_str_eq(v, want);
    }
    free(v);
}

/* ---- rows handed to the callbacks, joined as "key=value;..." ---- */

typedef struct rows {
    char buf[4096];
    size_t n;
    char last[256];
} rows;

static void rows_kv(void *arg, const char *key, const char *value)
{
    rows *r = arg;
    size_t used = strlen(r->buf);
    snprintf(r->buf + used, sizeof r->buf - used, "%s=%s;", key, value);
    snprintf(r->last, sizeof r->last, "%s", key);
    r->n++;
}

static void rows_supp(void *arg, const char *address, const char *reason, int64_t updated_ms)
{
    rows *r = arg;
    size_t used = strlen(r->buf);
    snprintf(r->buf + used, sizeof r->buf - used, "%s=%s@%lld;", address, reason,
             (long long)updated_ms);
    snprintf(r->last, sizeof r->last, "%s", address);
    r->n++;
}

static const char *prefix_page(spool *sp, rows *r, const char *prefix, const char *after,
                               size_t max)
{
    memset(r, 0, sizeof *r);
    ck_assert_int_eq(spool_kv_each_prefix(sp, prefix, after, max, rows_kv, r), 0);
    return r->buf;
}

/* after may be r->last (the previous page's last address). */
static const char *supp_page(spool *sp, rows *r, const char *after, int64_t since, int64_t until,
                             unsigned reasons, size_t max)
{
    char *a = after ? util_strdup(after) : NULL;
    memset(r, 0, sizeof *r);
    ck_assert_int_eq(spool_suppression_page(sp, a, since, until, reasons, max, rows_supp, r), 0);
    free(a);
    return r->buf;
}

/* ---- spool_kv_delete ---- */

START_TEST(test_kv_delete)
{
    spool *sp = open_new();
    ck_assert_int_eq(spool_kv_put(sp, "template:a", "A"), 0);
    ck_assert_int_eq(spool_kv_put(sp, "template:b", "B"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);

    /* Gone for the loop's reads at once, before the commit; `existed` says it was there. */
    bool existed = false;
    ck_assert_int_eq(spool_kv_delete(sp, "template:a", &existed), 0);
    ck_assert(existed);
    assert_kv(sp, "template:a", NULL);
    assert_kv(sp, "template:b", "B");
    /* A second delete in the same batch sees the first. */
    existed = true;
    ck_assert_int_eq(spool_kv_delete(sp, "template:a", &existed), 0);
    ck_assert(!existed);
    /* An absent key: nothing there, not an error; existed may be NULL. */
    ck_assert_int_eq(spool_kv_delete(sp, "template:none", &existed), 0);
    ck_assert(!existed);
    ck_assert_int_eq(spool_kv_delete(sp, "template:none", NULL), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    assert_kv(sp, "template:a", NULL);
    assert_kv(sp, "template:b", "B");

    /* Put then delete in one batch: absent; delete then put: present. */
    ck_assert_int_eq(spool_kv_put(sp, "template:c", "C"), 0);
    ck_assert_int_eq(spool_kv_delete(sp, "template:c", &existed), 0);
    ck_assert(existed);
    ck_assert_int_eq(spool_kv_delete(sp, "template:b", &existed), 0);
    ck_assert(existed);
    ck_assert_int_eq(spool_kv_put(sp, "template:b", "B2"), 0);
    assert_kv(sp, "template:c", NULL);
    assert_kv(sp, "template:b", "B2");
    ck_assert_int_eq(spool_flush(sp), 0);
    assert_kv(sp, "template:c", NULL);
    assert_kv(sp, "template:b", "B2");
    spool_close(sp);
}
END_TEST

START_TEST(test_kv_delete_durable)
{
    char *dir = testlib_subdir(base_dir, "dur-");
    spool *sp = testlib_spool_open(dir, true);
    ck_assert_int_eq(spool_kv_put(sp, "k1", "v1"), 0);
    ck_assert_int_eq(spool_kv_put(sp, "k2", "v2"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_int_eq(spool_kv_delete(sp, "k1", NULL), 0);
    /* the commit callback runs once the delete is committed */
    testlib_commit_log log = {0};
    testlib_commit_slot slot = {&log, 1};
    spool_on_commit(sp, testlib_on_commit, &slot);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_uint_eq(log.n, 1);
    ck_assert(log.ok[0]);
    spool_close(sp);

    sp = testlib_spool_open(dir, true);
    assert_kv(sp, "k1", NULL);
    assert_kv(sp, "k2", "v2");
    spool_close(sp);
    free(dir);
}
END_TEST

/* A failed batch: the delete did not happen, the value reads again, the callback says why. */
START_TEST(test_kv_delete_failed_batch)
{
    spool *sp = open_new();
    ck_assert_int_eq(spool_kv_put(sp, "template:x", "X"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);

    spool_test_fail_batches(sp, 1, SQLITE_FULL);
    bool existed = false;
    ck_assert_int_eq(spool_kv_delete(sp, "template:x", &existed), 0);
    ck_assert(existed);
    testlib_commit_log log = {0};
    testlib_commit_slot slot = {&log, 1};
    spool_on_commit(sp, testlib_on_commit, &slot);
    assert_kv(sp, "template:x", NULL);
    ck_assert_int_eq(spool_flush(sp), -1);
    ck_assert_uint_eq(log.n, 1);
    ck_assert(!log.ok[0]);
    ck_assert_msg(strstr(log.err[0], "database or disk is full") != NULL, "err: %s", log.err[0]);
    assert_kv(sp, "template:x", "X");

    /* Kept: carried over the failed batch, absent meanwhile, committed with the next. */
    spool_test_fail_batches(sp, 1, SQLITE_FULL);
    spool_keep_begin(sp);
    ck_assert_int_eq(spool_kv_delete(sp, "template:x", &existed), 0);
    spool_keep_end(sp);
    ck_assert(existed);
    spool_flush(sp);   /* the failed batch */
    assert_kv(sp, "template:x", NULL);
    ck_assert_uint_eq(spool_kept_waiting(sp), 1);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_uint_eq(spool_kept_waiting(sp), 0);
    assert_kv(sp, "template:x", NULL);
    rows r;
    ck_assert_str_eq(prefix_page(sp, &r, "template:", NULL, 10), "");
    spool_close(sp);
}
END_TEST

/* ---- spool_kv_each_prefix ---- */

START_TEST(test_kv_prefix)
{
    spool *sp = open_new();
    static const char *const keys[] = {
        "template:b", "template:a", "template:c", "template:%x", "template:_y", "templatez",
        "template;",  "template",   "other",      "template:",   "pools",
    };
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        ck_assert_int_eq(spool_kv_put(sp, keys[i], keys[i] + strlen(keys[i]) - 1), 0);
    /* Not committed yet: not listed. */
    rows r;
    ck_assert_str_eq(prefix_page(sp, &r, "template:", NULL, 100), "");
    ck_assert_int_eq(spool_flush(sp), 0);

    /* Key order (bytes), the prefix itself included, "template;" (just past ':') and
     * "templatez" out. */
    ck_assert_str_eq(prefix_page(sp, &r, "template:", NULL, 100),
                     "template:=:;template:%x=x;template:_y=y;template:a=a;template:b=b;"
                     "template:c=c;");
    /* '%' and '_' are literal, not LIKE patterns. */
    ck_assert_str_eq(prefix_page(sp, &r, "template:%", NULL, 100), "template:%x=x;");
    ck_assert_str_eq(prefix_page(sp, &r, "template:_", NULL, 100), "template:_y=y;");
    ck_assert_str_eq(prefix_page(sp, &r, "template:a", NULL, 100), "template:a=a;");
    ck_assert_str_eq(prefix_page(sp, &r, "nothing", NULL, 100), "");

    /* Pages: max, then `after` exclusive. */
    ck_assert_str_eq(prefix_page(sp, &r, "template:", NULL, 2), "template:=:;template:%x=x;");
    ck_assert_str_eq(prefix_page(sp, &r, "template:", "template:%x", 2),
                     "template:_y=y;template:a=a;");
    ck_assert_str_eq(prefix_page(sp, &r, "template:", "template:a", 2),
                     "template:b=b;template:c=c;");
    ck_assert_str_eq(prefix_page(sp, &r, "template:", "template:c", 2), "");
    /* An `after` that is no key still places the page. */
    ck_assert_str_eq(prefix_page(sp, &r, "template:", "template:aa", 5),
                     "template:b=b;template:c=c;");
    /* An `after` before the prefix starts at the prefix; one past its range gives nothing. */
    ck_assert_str_eq(prefix_page(sp, &r, "template:", "pools", 1), "template:=:;");
    ck_assert_str_eq(prefix_page(sp, &r, "template:", "template;", 5), "");
    ck_assert_str_eq(prefix_page(sp, &r, "template:", "zzz", 5), "");
    /* max 0: nothing, no error. */
    ck_assert_str_eq(prefix_page(sp, &r, "template:", NULL, 0), "");

    /* The empty prefix: every key. */
    prefix_page(sp, &r, "", NULL, 100);
    ck_assert_uint_eq(r.n, sizeof keys / sizeof *keys);
    ck_assert_str_eq(r.last, "templatez");
    ck_assert_str_eq(prefix_page(sp, &r, "", "template;", 100), "templatez=z;");

    /* A deleted key leaves the listing once committed. */
    ck_assert_int_eq(spool_kv_delete(sp, "template:b", NULL), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_str_eq(prefix_page(sp, &r, "template:", "template:a", 5), "template:c=c;");
    spool_close(sp);
}
END_TEST

/* Bytes 0xff at the end of a prefix have no successor of the same length. */
START_TEST(test_kv_prefix_ff)
{
    spool *sp = open_new();
    ck_assert_int_eq(spool_kv_put(sp, "a\xff", "1"), 0);
    ck_assert_int_eq(spool_kv_put(sp, "a\xff\xff", "2"), 0);
    ck_assert_int_eq(spool_kv_put(sp, "b", "3"), 0);
    ck_assert_int_eq(spool_kv_put(sp, "\xff", "4"), 0);
    ck_assert_int_eq(spool_kv_put(sp, "\xff\x01", "5"), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    rows r;
    prefix_page(sp, &r, "a\xff", NULL, 10);
    ck_assert_uint_eq(r.n, 2);
    ck_assert_str_eq(r.last, "a\xff\xff");
    prefix_page(sp, &r, "\xff", NULL, 10);
    ck_assert_uint_eq(r.n, 2);
    ck_assert_str_eq(r.last, "\xff\x01");
    prefix_page(sp, &r, "\xff", "\xff", 10);
    ck_assert_uint_eq(r.n, 1);
    spool_close(sp);
}
END_TEST

/* ---- spool_suppression_page ---- */

START_TEST(test_suppression_page)
{
    spool *sp = open_new();
    ck_assert_int_eq(spool_suppression_put(sp, "Dan@Example.TEST", "BOUNCE", 400), 0);
    ck_assert_int_eq(spool_suppression_put(sp, "amy@example.test", "COMPLAINT", 100), 0);
    ck_assert_int_eq(spool_suppression_put(sp, "bob@example.test", "BOUNCE", 200), 0);
    ck_assert_int_eq(spool_suppression_put(sp, "cat@example.test", "COMPLAINT", 300), 0);
    ck_assert_int_eq(spool_suppression_put(sp, "eve@example.test", "BOUNCE", 500), 0);
    rows r;
    /* Committed entries only. */
    ck_assert_str_eq(supp_page(sp, &r, NULL, INT64_MIN, INT64_MAX, 0, 100), "");
    ck_assert_int_eq(spool_flush(sp), 0);

    const char *all = "amy@example.test=COMPLAINT@100;bob@example.test=BOUNCE@200;"
                      "cat@example.test=COMPLAINT@300;dan@example.test=BOUNCE@400;"
                      "eve@example.test=BOUNCE@500;";
    ck_assert_str_eq(supp_page(sp, &r, NULL, INT64_MIN, INT64_MAX, 0, 100), all);
    ck_assert_str_eq(supp_page(sp, &r, NULL, INT64_MIN, INT64_MAX,
                               CONFIG_SUPPRESS_BOUNCE | CONFIG_SUPPRESS_COMPLAINT, 100),
                     all);

    /* Pages of two, `after` exclusive. */
    ck_assert_str_eq(supp_page(sp, &r, NULL, INT64_MIN, INT64_MAX, 0, 2),
                     "amy@example.test=COMPLAINT@100;bob@example.test=BOUNCE@200;");
    ck_assert_str_eq(supp_page(sp, &r, r.last, INT64_MIN, INT64_MAX, 0, 2),
                     "cat@example.test=COMPLAINT@300;dan@example.test=BOUNCE@400;");
    ck_assert_str_eq(supp_page(sp, &r, r.last, INT64_MIN, INT64_MAX, 0, 2),
                     "eve@example.test=BOUNCE@500;");
    ck_assert_str_eq(supp_page(sp, &r, r.last, INT64_MIN, INT64_MAX, 0, 2), "");

    /* Reasons. */
    ck_assert_str_eq(supp_page(sp, &r, NULL, INT64_MIN, INT64_MAX, CONFIG_SUPPRESS_BOUNCE, 100),
                     "bob@example.test=BOUNCE@200;dan@example.test=BOUNCE@400;"
                     "eve@example.test=BOUNCE@500;");
    ck_assert_str_eq(supp_page(sp, &r, "bob@example.test", INT64_MIN, INT64_MAX,
                               CONFIG_SUPPRESS_COMPLAINT, 100),
                     "cat@example.test=COMPLAINT@300;");

    /* The window [since, until). */
    ck_assert_str_eq(supp_page(sp, &r, NULL, 200, 400, 0, 100),
                     "bob@example.test=BOUNCE@200;cat@example.test=COMPLAINT@300;");
    ck_assert_str_eq(supp_page(sp, &r, NULL, 300, INT64_MAX, CONFIG_SUPPRESS_BOUNCE, 1),
                     "dan@example.test=BOUNCE@400;");
    ck_assert_str_eq(supp_page(sp, &r, NULL, 400, 400, 0, 100), "");
    ck_assert_str_eq(supp_page(sp, &r, NULL, INT64_MIN, 100, 0, 100), "");

    /* An update moves an entry in the window; a delete removes it once committed. */
    ck_assert_int_eq(spool_suppression_put(sp, "amy@example.test", "BOUNCE", 600), 0);
    bool existed = false;
    ck_assert_int_eq(spool_suppression_delete(sp, "eve@example.test", &existed), 0);
    ck_assert(existed);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_str_eq(supp_page(sp, &r, NULL, 450, INT64_MAX, 0, 100),
                     "amy@example.test=BOUNCE@600;");
    ck_assert_str_eq(supp_page(sp, &r, NULL, INT64_MIN, INT64_MAX, 0, 0), "");
    spool_close(sp);
}
END_TEST

static Suite *spool_api_suite(void)
{
    Suite *s = suite_create("spool_api");
    TCase *tc = tcase_create("kv");
    tcase_add_checked_fixture(tc, base_setup, base_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_kv_delete);
    tcase_add_test(tc, test_kv_delete_durable);
    tcase_add_test(tc, test_kv_delete_failed_batch);
    tcase_add_test(tc, test_kv_prefix);
    tcase_add_test(tc, test_kv_prefix_ff);
    suite_add_tcase(s, tc);
    tc = tcase_create("suppression");
    tcase_add_checked_fixture(tc, base_setup, base_teardown);
    tcase_add_test(tc, test_suppression_page);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(spool_api_suite);
