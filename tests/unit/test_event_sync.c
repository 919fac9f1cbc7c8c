/* test_event_sync.c — the event drain's durability order (mta/events.c), seen through its
 * sync operations (events_set_sync_ops) swapped for recorders that call the real ones: an
 * event file is written, fdatasync'd, then, when the drain created or opened it again, its
 * directory (and the directories the drain created above it) is fsync'd, and only then is
 * the outbox progress recorded and are the rows released; a file already open costs no
 * directory sync; a failed directory or file sync releases nothing and cuts the files back,
 * so the next drain writes every row exactly once. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/config.h"
#include "base/log.h"
#include "base/util.h"
#include "mta/events.h"
#include "store/spool.h"
#include "tests/unit/testlib.h"

#define PROGRESS_KEY "events:files"   /* mta/events.c's kv key of the files' progress */
#define MAX_CALLS 64

static const char *rootdir;
static char *tmpdir;
static spool *sp;
static klog *lg;
static char logpath[160];
static config *cfg;
static char deep[200], deep_dir[200], ev_dir[200], flat[200];

/* The sync calls of a drain, in order; at each, the progress as the loop sees it then
 * (its own uncommitted writes included). */
typedef struct sync_rec {
    char call[MAX_CALLS][220];
    char progress[MAX_CALLS][32];   /* "-" when none */
    size_t n;
    bool fail_dir, fail_file;
} sync_rec;
static sync_rec rec;

static void rec_add(sync_rec *r, const char *what, const char *path)
{
    ck_assert_uint_lt(r->n, MAX_CALLS);
    snprintf(r->call[r->n], sizeof r->call[0], "%s %s", what, path);
    char *v = NULL;
    ck_assert_int_eq(spool_kv_get(sp, PROGRESS_KEY, &v), 0);
    snprintf(r->progress[r->n], sizeof r->progress[0], "%s", v ? v : "-");
    free(v);
    r->n++;
}

static int rec_file(void *arg, int fd, const char *path)
{
    sync_rec *r = arg;
    rec_add(r, "file", path);
    if (r->fail_file) {
        errno = EIO;
        return -1;
    }
    return fdatasync(fd);
}

static int rec_dir(void *arg, const char *dir)
{
    sync_rec *r = arg;
    rec_add(r, "dir", dir);
    if (r->fail_dir) {
        errno = EIO;
        return -1;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static const events_sync_ops rec_ops = {rec_file, rec_dir, &rec};

/* Index of the first call "what path" at or after from, or -1. */
static int call_from(const char *what, const char *path, int from)
{
    char want[220];
    snprintf(want, sizeof want, "%s %s", what, path);
    for (size_t i = from < 0 ? 0 : (size_t)from; i < rec.n; i++)
        if (strcmp(rec.call[i], want) == 0) return (int)i;
    return -1;
}

static int call_at(const char *what, const char *path)
{
    return call_from(what, path, 0);
}

static void root_setup(void)
{
    rootdir = testlib_tmpdir("evsync");
}

static void root_teardown(void)
{
    testlib_tmpdir_remove(rootdir);
}

static void fixture_setup(void)
{
    tmpdir = testlib_subdir(rootdir, "t-");
    char *err = NULL;
    sp = spool_open(tmpdir, false, &err);
    ck_assert_msg(sp != NULL, "spool_open: %s", err ? err : "?");
    snprintf(logpath, sizeof logpath, "%s/kiln.log", tmpdir);
    lg = log_open(logpath, KLOG_DEBUG, &err);
    ck_assert_msg(lg != NULL, "log_open: %s", err ? err : "?");
    snprintf(ev_dir, sizeof ev_dir, "%s/ev", tmpdir);
    snprintf(deep_dir, sizeof deep_dir, "%s/ev/deep", tmpdir);
    snprintf(deep, sizeof deep, "%s/ev/deep/txn.jsonl", tmpdir);   /* its directories too */
    snprintf(flat, sizeof flat, "%s/flat.jsonl", tmpdir);
    cfg = testlib_config_new();
    config_set *set = testlib_config_add_set(cfg, "txn", "transactional");
    testlib_config_add_event_file(set, deep);
    testlib_config_add_event_file(set, flat);
    testlib_config_set_default_set(cfg, "txn");
    memset(&rec, 0, sizeof rec);
}

static void fixture_teardown(void)
{
    spool_close(sp);
    log_close(lg);
    config_unref(cfg);
    testlib_rmtree(tmpdir);
    free(tmpdir);
}

static void add_events(int n, const char *tag)
{
    for (int i = 0; i < n; i++) {
        char *j = util_asprintf("{\"eventType\":\"Send\",\"n\":\"%s-%d\"}", tag, i);
        ck_assert_int_eq(spool_add_event(sp, "txn", j), 0);
        free(j);
    }
    ck_assert_int_eq(spool_flush(sp), 0);
}

static void count_row(void *arg, int64_t id, const char *set, const char *json)
{
    (void)id, (void)set, (void)json;
    (*(size_t *)arg)++;
}

static size_t outbox_rows(void)
{
    size_t n = 0;
    ck_assert_int_eq(spool_each_event(sp, 0, 1000, count_row, &n), 0);
    return n;
}

static size_t count_substr(const char *s, const char *sub)
{
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, sub)) != NULL; p += strlen(sub)) n++;
    return n;
}

/* The file's text ("" when absent). */
static char *file_text(const char *path)
{
    char *t = testlib_read_file(path, NULL);
    return t ? t : util_strdup("");
}

START_TEST(test_dir_synced_after_create_before_release)
{
    events *ev = events_new(lg);
    events_set_sync_ops(ev, &rec_ops);
    add_events(2, "a");
    ck_assert_int_eq(events_drain(ev, sp, cfg), 2);

    /* each new file: its data, then its directory, then the ones the drain made above it */
    int f_deep = call_at("file", deep), d_deep = call_at("dir", deep_dir);
    int d_ev = call_at("dir", ev_dir), f_flat = call_at("file", flat);
    int d_tmp = call_from("dir", tmpdir, f_flat);
    ck_assert_msg(f_deep >= 0 && d_deep > f_deep && d_ev > d_deep,
                  "deep: file %d, dir %d, parent %d", f_deep, d_deep, d_ev);
    ck_assert_msg(f_flat >= 0 && d_tmp > f_flat, "flat: file %d, dir %d", f_flat, d_tmp);
    /* and nothing was released before the last of them */
    for (size_t i = 0; i < rec.n; i++)
        ck_assert_msg(strcmp(rec.progress[i], "-") == 0, "progress %s already at \"%s\"",
                      rec.progress[i], rec.call[i]);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_uint_eq(outbox_rows(), 0);

    /* open files: data syncs only */
    memset(&rec, 0, sizeof rec);
    add_events(1, "b");
    ck_assert_int_eq(events_drain(ev, sp, cfg), 1);
    ck_assert_uint_eq(rec.n, 2);
    ck_assert_int_ge(call_at("file", deep), 0);
    ck_assert_int_ge(call_at("file", flat), 0);

    /* rotated away: opened again (created), so its directory is synced again */
    char moved[220];
    snprintf(moved, sizeof moved, "%s.1", flat);
    ck_assert_int_eq(rename(flat, moved), 0);
    memset(&rec, 0, sizeof rec);
    add_events(1, "c");
    ck_assert_int_eq(events_drain(ev, sp, cfg), 1);
    f_flat = call_at("file", flat);
    d_tmp = call_at("dir", tmpdir);
    ck_assert_msg(f_flat >= 0 && d_tmp > f_flat, "rotated flat: file %d, dir %d", f_flat, d_tmp);
    ck_assert_int_lt(call_at("dir", deep_dir), 0);
    ck_assert_str_eq(rec.progress[d_tmp], "3");   /* the previous drain's, not this one's */
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_uint_eq(outbox_rows(), 0);
    events_free(ev);
}
END_TEST

/* A failed sync (directory, then file) releases nothing, cuts the files back, and the
 * next drain writes each row once. */
static void failed_sync_then_once(bool dir)
{
    events *ev = events_new(lg);
    events_set_sync_ops(ev, &rec_ops);
    add_events(2, "a");
    rec.fail_dir = dir;
    rec.fail_file = !dir;
    ck_assert_int_eq(events_drain(ev, sp, cfg), -1);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_uint_eq(outbox_rows(), 2);
    char *v = NULL;
    ck_assert_int_eq(spool_kv_get(sp, PROGRESS_KEY, &v), 0);
    ck_assert_ptr_null(v);
    char *t = file_text(deep);
    ck_assert_str_eq(t, "");
    free(t);
    char *log = testlib_read_file(logpath, NULL);
    ck_assert_msg(log && strstr(log, dir ? "op=fsync-directory" : "op=fdatasync"),
                  "sync failure not logged: %s", log ? log : "");
    free(log);

    rec.fail_dir = rec.fail_file = false;
    ck_assert_int_eq(events_drain(ev, sp, cfg), 2);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_uint_eq(outbox_rows(), 0);
    const char *paths[] = {deep, flat};
    for (size_t i = 0; i < 2; i++) {
        t = file_text(paths[i]);
        ck_assert_msg(count_substr(t, "\"a-0\"") == 1 && count_substr(t, "\"a-1\"") == 1 &&
                      count_substr(t, "\n") == 2, "%s: %s", paths[i], t);
        free(t);
    }
    events_free(ev);
}

START_TEST(test_failed_dir_sync_releases_nothing)
{
    failed_sync_then_once(true);
}
END_TEST

START_TEST(test_failed_file_sync_releases_nothing)
{
    failed_sync_then_once(false);
}
END_TEST

static Suite *event_sync_suite(void)
{
    Suite *s = suite_create("event_sync");
    TCase *tc = tcase_create("drain");
    tcase_add_unchecked_fixture(tc, root_setup, root_teardown);
    tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
    tcase_add_test(tc, test_dir_synced_after_create_before_release);
    tcase_add_test(tc, test_failed_dir_sync_releases_nothing);
    tcase_add_test(tc, test_failed_file_sync_releases_nothing);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(event_sync_suite);
