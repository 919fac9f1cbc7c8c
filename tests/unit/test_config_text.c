/* test_config_text.c — config_load_text(), the loader for YAML text held in memory (the
 * config fuzz target's entry point): the shipped configs give the same config as from their
 * files; relative paths resolve against the directory handed in; errors name the name given
 * for the text, the line and the key; a YAML syntax error and a second document are errors
 * as in a file; the directory must be absolute. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/util.h"
#include "mta/auth.h"
#include "tests/unit/testlib.h"

#define SMALL                                                                                 \
    "server: {hostname: mta.example.test, spool: ./q}\n"                                      \
    "zones: [az1]\n"                                                                          \
    "ips: [{address: 127.0.0.10, zone: az1, pool: p}]\n"                                      \
    "pools: [{name: p}]\n"                                                                    \
    "configuration_sets: [{name: s, pool: p, events: [{type: file, path: ev/s.jsonl}]}]\n"    \
    "default_configuration_set: s\n"

/* The whole of a file, malloc'd; *len its size. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    strbuf sb;
    strbuf_init(&sb);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) strbuf_append(&sb, buf, n);
    fclose(f);
    *len = sb.len;
    return strbuf_steal(&sb);
}

/* A shipped config loads from text as from its file: same summary, same paths. */
static void same_as_file(const char *rel)
{
    char *path = util_asprintf("%s/%s", KILN_SRCDIR, rel);
    char *dir = config_file_dir(path, NULL);
    ck_assert_ptr_nonnull(dir);
    size_t len;
    char *text = slurp(path, &len);
    char *err = NULL;
    config *a = config_load(path, auth_hash_usable, &err);
    ck_assert_msg(a != NULL, "%s: %s", rel, err);
    config *b = config_load_text(text, len, path, dir, auth_hash_usable, &err);
    ck_assert_msg(b != NULL, "%s as text: %s", rel, err);
    char *sa = config_summary(a), *sb = config_summary(b);
    ck_assert_str_eq(sa, sb);
    ck_assert_str_eq(a->spool, b->spool);
    ck_assert_str_eq(a->control_socket, b->control_socket);
    ck_assert_uint_eq(a->nsets, b->nsets);
    ck_assert_uint_eq(a->nips, b->nips);
    ck_assert_uint_eq(a->nwarnings, b->nwarnings);
    free(sa);
    free(sb);
    config_unref(a);
    config_unref(b);
    free(text);
    free(dir);
    free(path);
}

START_TEST(test_shipped_configs)
{
    same_as_file("conf/kiln.yaml");
    same_as_file("conf/examples/full.yaml");
}
END_TEST

START_TEST(test_relative_paths)
{
    char *err = NULL;
    config *c = config_load_text(SMALL, strlen(SMALL), "<text>", "/srv/kiln", NULL, &err);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_str_eq(c->path, "<text>");
    ck_assert_str_eq(c->spool, "/srv/kiln/q");
    ck_assert_str_eq(c->sets[0].events[0].path, "/srv/kiln/ev/s.jsonl");
    config_unref(c);
}
END_TEST

START_TEST(test_errors_name_the_text)
{
    char *err = NULL;
    const char *bad = SMALL "account: {mode: sometimes}\n";
    ck_assert_ptr_null(config_load_text(bad, strlen(bad), "inline.yaml", "/srv", NULL, &err));
    ck_assert_msg(strstr(err, "inline.yaml:7: account.mode: ") != NULL, "%s", err);
    free(err);

    const char *syntax = "server: {hostname: [unclosed\n";
    ck_assert_ptr_null(config_load_text(syntax, strlen(syntax), "inline.yaml", "/srv", NULL, &err));
    ck_assert_msg(strstr(err, "inline.yaml:") && strstr(err, "YAML syntax error"), "%s", err);
    free(err);

    const char *two = SMALL "---\nserver: {}\n";
    ck_assert_ptr_null(config_load_text(two, strlen(two), "inline.yaml", "/srv", NULL, &err));
    ck_assert_msg(strstr(err, "inline.yaml:7: a second YAML document") != NULL, "%s", err);
    free(err);

    /* the text ends where LEN says, not at a NUL: the unknown key past LEN is not read */
    const char *more = SMALL "bogus: 1\n";
    ck_assert_ptr_null(config_load_text(more, strlen(more), "inline.yaml", "/srv", NULL, &err));
    ck_assert_msg(strstr(err, "inline.yaml:7: bogus: ") != NULL, "%s", err);
    free(err);
    config *c = config_load_text(more, strlen(SMALL), "inline.yaml", "/srv", NULL, &err);
    ck_assert_msg(c != NULL, "%s", err);
    config_unref(c);

    ck_assert_ptr_null(config_load_text(SMALL, strlen(SMALL), "inline.yaml", "rel", NULL, &err));
    ck_assert_msg(strstr(err, "must be absolute") != NULL, "%s", err);
    free(err);
}
END_TEST

static Suite *config_text_suite(void)
{
    Suite *s = suite_create("config_text");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_shipped_configs);
    tcase_add_test(tc, test_relative_paths);
    tcase_add_test(tc, test_errors_name_the_text);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(config_text_suite);
