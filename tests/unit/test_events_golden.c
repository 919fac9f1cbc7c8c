/* test_events_golden.c — golden-file tests of the SES event JSON (SPEC section 4): every
 * tests/unit/golden/events/NAME.in describes one event's inputs (the mail object's fields and
 * raw header lines, the event type and its fields, all timestamps fixed), the real builders
 * of mta/events.h (events_mail_json over message_parse_headers, then events_send / _reject /
 * _delivery / _bounce / _delay / _complaint, reportingMTA from events_reporting_mta) make
 * the event, and the result must equal NAME.ref byte for byte (the JSON line plus "\n").
 *
 * One thing is not kiln's to fix in a file: feedbackId carries a random UUID. The test
 * checks its shape (16 hex digits of the event time, a version-4 UUID, "-000000") and writes
 * it as "<time>-xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx-000000" before comparing.
 *
 * A mismatch names the file and shows where the bytes part. `test_events_golden --regen`
 * (developers only, then review the diff by eye against SPEC section 4) rewrites every .ref
 * from the current output. The .in syntax is described in golden/events/README. */
#include <check.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mta/events.h"
#include "mta/message.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

#define GOLDEN_DIR KILN_SRCDIR "/tests/unit/golden/events"
#define MAX_CASES 128
#define MAX_LIST 16
#define MAX_DEST 1024     /* mail.destination lines (a case passes the 64 KB object cap) */

/* ---------------------------------------------------------------- the .in file ---- */

typedef struct golden_in {
    char *event;                      /* mail, send, reject, delivery, bounce, delay, complaint */
    /* the mail object */
    char *message_id, *source, *account, *config_set, *source_ip;
    int64_t mail_ts;
    char *destination[MAX_DEST];
    size_t ndestination;
    strbuf headers;                   /* raw header section, CRLF lines */
    char *stored_mail;                /* instead of the built mail object (a damaged row) */
    /* the event */
    char *hostname;                   /* reportingMTA via events_reporting_mta */
    char *outgoing_ip, *remote_mta_ip, *smtp_response, *reason, *type, *subtype;
    char *feedback_type, *user_agent;
    int64_t ts, processing_ms, expiration;
    char *rcpt[MAX_LIST][4];          /* email | action | status | diagnostic ("" = none) */
    size_t nrcpt;
} golden_in;

static char *golden_names[MAX_CASES];     /* NAME of each NAME.in, sorted */
static size_t ngolden;

/* Value with escapes \\ \r \n \t \xNN undone (malloc'd). */
static char *unescape(const char *s)
{
    strbuf sb;
    strbuf_init(&sb);
    for (const char *p = s; *p; p++) {
        if (*p != '\\' || !p[1]) {
            strbuf_append(&sb, p, 1);
            continue;
        }
        char c = *++p;
        if (c == 'r') strbuf_puts(&sb, "\r");
        else if (c == 'n') strbuf_puts(&sb, "\n");
        else if (c == 't') strbuf_puts(&sb, "\t");
        else if (c == 'x' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
            char hex[3] = {p[1], p[2], 0};
            char b = (char)strtol(hex, NULL, 16);
            strbuf_append(&sb, &b, 1);
            p += 2;
        } else {
            strbuf_append(&sb, &c, 1);
        }
    }
    return strbuf_steal(&sb);
}

static int64_t num(const char *file, int line, const char *v)
{
    long long n;
    ck_assert_msg(util_parse_ll(v, 0, INT64_MAX, &n), "%s:%d: not a number: '%s'", file, line, v);
    return n;
}

/* Splits "a | b | c | d" into up to 4 trimmed, unescaped fields (missing ones are ""). */
static void split_rcpt(const char *v, char *out[4])
{
    char *copy = util_strdup(v);
    char *p = copy;
    for (int i = 0; i < 4; i++) {
        char *bar = p ? strchr(p, '|') : NULL;
        if (bar) *bar = '\0';
        char *f = p ? p : "";
        while (*f == ' ') f++;
        size_t n = strlen(f);
        while (n && f[n - 1] == ' ') f[--n] = '\0';
        out[i] = unescape(f);
        p = bar ? bar + 1 : NULL;
    }
    free(copy);
}

static void golden_read(const char *file, const char *text, golden_in *in)
{
    memset(in, 0, sizeof *in);
    strbuf_init(&in->headers);
    int lineno = 0;
    const char *p = text;
    while (*p) {
        const char *eol = strchr(p, '\n');
        size_t n = eol ? (size_t)(eol - p) : strlen(p);
        char *line = util_strndup(p, n);
        p += n + (eol ? 1 : 0);
        lineno++;
        char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (*s == '#' || *s == '\0') {
            free(line);
            continue;
        }
        char *eq = strchr(s, '=');
        ck_assert_msg(eq != NULL, "%s:%d: want KEY = VALUE: '%s'", file, lineno, s);
        char *k = s, *ke = eq;
        while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t')) ke--;
        *ke = '\0';
        char *v = eq + 1;
        while (*v == ' ' || *v == '\t') v++;
        size_t vn = strlen(v);
        while (vn && (v[vn - 1] == ' ' || v[vn - 1] == '\t' || v[vn - 1] == '\r')) v[--vn] = '\0';

        char **str = NULL;
        int64_t *i64 = NULL;
        if (strcmp(k, "event") == 0) str = &in->event;
        else if (strcmp(k, "mail.message_id") == 0) str = &in->message_id;
        else if (strcmp(k, "mail.source") == 0) str = &in->source;
        else if (strcmp(k, "mail.sending_account_id") == 0) str = &in->account;
        else if (strcmp(k, "mail.config_set") == 0) str = &in->config_set;
        else if (strcmp(k, "mail.source_ip") == 0) str = &in->source_ip;
        else if (strcmp(k, "mail.timestamp") == 0) i64 = &in->mail_ts;
        else if (strcmp(k, "mail.stored") == 0) str = &in->stored_mail;
        else if (strcmp(k, "hostname") == 0) str = &in->hostname;
        else if (strcmp(k, "outgoing_ip") == 0) str = &in->outgoing_ip;
        else if (strcmp(k, "remote_mta_ip") == 0) str = &in->remote_mta_ip;
        else if (strcmp(k, "smtp_response") == 0) str = &in->smtp_response;
        else if (strcmp(k, "reason") == 0) str = &in->reason;
        else if (strcmp(k, "type") == 0) str = &in->type;
        else if (strcmp(k, "subtype") == 0) str = &in->subtype;
        else if (strcmp(k, "feedback_type") == 0) str = &in->feedback_type;
        else if (strcmp(k, "user_agent") == 0) str = &in->user_agent;
        else if (strcmp(k, "timestamp") == 0) i64 = &in->ts;
        else if (strcmp(k, "processing_ms") == 0) i64 = &in->processing_ms;
        else if (strcmp(k, "expiration") == 0) i64 = &in->expiration;

        if (str) {
            ck_assert_msg(*str == NULL, "%s:%d: %s given twice", file, lineno, k);
            *str = unescape(v);
        } else if (i64) {
            *i64 = num(file, lineno, v);
        } else if (strcmp(k, "mail.destination") == 0) {
            ck_assert_uint_lt(in->ndestination, MAX_DEST);
            in->destination[in->ndestination++] = unescape(v);
        } else if (strcmp(k, "header") == 0) {
            char *h = unescape(v);
            strbuf_printf(&in->headers, "%s\r\n", h);
            free(h);
        } else if (strcmp(k, "header.long") == 0) {
            /* "NAME COUNT SIZE": COUNT fields NAME-1.. whose values are SIZE letters */
            char name[64];
            int count, size;
            ck_assert_msg(sscanf(v, "%63s %d %d", name, &count, &size) == 3 && count > 0 &&
                              size > 0, "%s:%d: header.long wants NAME COUNT SIZE", file, lineno);
            for (int i = 1; i <= count; i++) {
                strbuf_printf(&in->headers, "%s-%d: ", name, i);
                for (int j = 0; j < size; j++) strbuf_printf(&in->headers, "%c", 'a' + j % 26);
                strbuf_puts(&in->headers, "\r\n");
            }
        } else if (strcmp(k, "rcpt") == 0) {
            ck_assert_uint_lt(in->nrcpt, MAX_LIST);
            split_rcpt(v, in->rcpt[in->nrcpt++]);
        } else {
            ck_abort_msg("%s:%d: unknown key '%s'", file, lineno, k);
        }
        free(line);
    }
    ck_assert_msg(in->event != NULL, "%s: no 'event ='", file);
    strbuf_puts(&in->headers, "\r\nbody\r\n");
}

static void golden_free(golden_in *in)
{
    char **strs[] = {&in->event, &in->message_id, &in->source, &in->account, &in->config_set,
                     &in->source_ip, &in->stored_mail, &in->hostname, &in->outgoing_ip,
                     &in->remote_mta_ip, &in->smtp_response, &in->reason, &in->type,
                     &in->subtype, &in->feedback_type, &in->user_agent};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) free(*strs[i]);
    for (size_t i = 0; i < in->ndestination; i++) free(in->destination[i]);
    for (size_t i = 0; i < in->nrcpt; i++)
        for (int j = 0; j < 4; j++) free(in->rcpt[i][j]);
    strbuf_free(&in->headers);
}

/* ------------------------------------------------------------------ the event ---- */

static const char *opt(const char *s)
{
    return s && *s ? s : NULL;
}

/* The event the builders make from in (malloc'd, no trailing newline). */
static char *golden_build(const char *file, const golden_in *in)
{
    msg_headers hs;
    message_parse_headers(in->headers.buf, in->headers.len, &hs);
    events_mail_in mi = {
        .message_id = in->message_id,
        .timestamp_ms = in->mail_ts,
        .source = in->source,
        .sending_account_id = in->account,
        .destination = (char *const *)in->destination,
        .ndestination = in->ndestination,
        .headers = &hs,
        .config_set = in->config_set,
        .source_ip = in->source_ip,
    };
    char *mail = in->stored_mail ? util_strdup(in->stored_mail) : events_mail_json(&mi);
    message_headers_free(&hs);

    char *rmta = NULL;
    if (in->hostname) {
        config *c = testlib_config_new();
        free(c->hostname);
        c->hostname = util_strdup(in->hostname);
        rmta = events_reporting_mta(c);
        config_unref(c);
    }
    char *emails[MAX_LIST];
    events_rcpt_status st[MAX_LIST];
    for (size_t i = 0; i < in->nrcpt; i++) {
        emails[i] = in->rcpt[i][0];
        st[i] = (events_rcpt_status){in->rcpt[i][0], opt(in->rcpt[i][1]), opt(in->rcpt[i][2]),
                                     opt(in->rcpt[i][3])};
    }

    char *ev = NULL;
    const char *e = in->event;
    if (strcmp(e, "mail") == 0) {
        ev = util_strdup(mail);
    } else if (strcmp(e, "send") == 0) {
        ev = events_send(mail);
    } else if (strcmp(e, "reject") == 0) {
        ev = events_reject(mail, in->reason);
    } else if (strcmp(e, "delivery") == 0) {
        ev = events_delivery(mail, in->outgoing_ip, in->ts, in->processing_ms, emails,
                             in->nrcpt, in->smtp_response, rmta, in->remote_mta_ip);
    } else if (strcmp(e, "bounce") == 0) {
        ev = events_bounce(mail, in->outgoing_ip, in->ts, in->type, in->subtype, st, in->nrcpt,
                           rmta, in->remote_mta_ip);
    } else if (strcmp(e, "delay") == 0) {
        ev = events_delay(mail, in->outgoing_ip, in->ts, in->type, in->expiration, st,
                          in->nrcpt, rmta, in->remote_mta_ip);
    } else if (strcmp(e, "complaint") == 0) {
        ev = events_complaint(mail, in->ts, emails, in->nrcpt, in->feedback_type,
                              in->user_agent, in->ts);
    } else {
        ck_abort_msg("%s: unknown event '%s'", file, e);
    }
    free(rmta);
    free(mail);
    return ev;
}

/* Checks every "feedbackId":"…" in s (the event time ts_ms, a version-4 UUID, "-000000")
 * and replaces its random part with the template x/y letters, in place. */
static void golden_mask_feedback_id(const char *file, char *s, int64_t ts_ms)
{
    static const char key[] = "\"feedbackId\":\"";
    for (char *p = strstr(s, key); p; p = strstr(p, key)) {
        p += sizeof key - 1;
        static const char tmpl[] = "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx";
        char want[17];
        snprintf(want, sizeof want, "%016llx", (unsigned long long)ts_ms);
        ck_assert_msg(strncmp(p, want, 16) == 0 && p[16] == '-',
                      "%s: feedbackId %.60s does not start with the event time %s-", file, p,
                      want);
        char *u = p + 17;
        for (size_t i = 0; i < sizeof tmpl - 1; i++) {
            char c = u[i], t = tmpl[i];
            bool ok = t == '-' ? c == '-'
                      : t == '4' ? c == '4'
                      : t == 'y' ? (c == '8' || c == '9' || c == 'a' || c == 'b')
                                 : (isxdigit((unsigned char)c) && !isupper((unsigned char)c));
            ck_assert_msg(ok, "%s: feedbackId %.60s is not <time>-<uuid v4>-000000", file, p);
        }
        ck_assert_msg(strncmp(u + sizeof tmpl - 1, "-000000\"", 8) == 0,
                      "%s: feedbackId %.60s does not end in -000000", file, p);
        memcpy(u, tmpl, sizeof tmpl - 1);
    }
}

/* "file: bytes differ at offset N (line L, column C)\n  want: …\n  got:  …" (malloc'd). */
static char *golden_diff(const char *file, const char *want, const char *got)
{
    size_t i = 0, line = 1, col = 1;
    while (want[i] && want[i] == got[i]) {
        if (want[i] == '\n') line++, col = 0;
        col++, i++;
    }
    size_t from = i > 50 ? i - 50 : 0;
    return util_asprintf("%s: output differs from the .ref at byte %zu (line %zu, column %zu)\n"
                         "  want: ...%.100s\n  got:  ...%.100s\n"
                         "(run tests/unit/test_events_golden --regen to accept the new output)",
                         file, i, line, col, want + from, got + from);
}

START_TEST(test_golden_event)
{
    const char *name = golden_names[_i];
    char *inpath = util_asprintf("%s/%s.in", GOLDEN_DIR, name);
    char *refpath = util_asprintf("%s/%s.ref", GOLDEN_DIR, name);
    char *text = testlib_read_file(inpath, NULL);
    ck_assert_msg(text != NULL, "%s: %s", inpath, strerror(errno));
    golden_in in;
    golden_read(inpath, text, &in);
    char *ev = golden_build(inpath, &in);
    golden_mask_feedback_id(inpath, ev, in.ts);
    char *got = util_asprintf("%s\n", ev);

    if (testlib_flag("--regen")) {
        FILE *f = fopen(refpath, "wb");
        ck_assert_msg(f != NULL, "%s: %s", refpath, strerror(errno));
        ck_assert_int_eq(fputs(got, f) >= 0, 1);
        ck_assert_int_eq(fclose(f), 0);
        fprintf(stderr, "regenerated %s\n", refpath);
    } else {
        char *want = testlib_read_file(refpath, NULL);
        ck_assert_msg(want != NULL, "%s: missing (%s); make it with --regen and check it by eye",
                      refpath, strerror(errno));
        if (strcmp(want, got) != 0) {
            char *msg = golden_diff(refpath, want, got);
            fprintf(stderr, "%s\n  full output: %s", msg, got);
            ck_abort_msg("%s", msg);
        }
        free(want);
    }
    free(got);
    free(ev);
    golden_free(&in);
    free(text);
    free(inpath);
    free(refpath);
}
END_TEST

/* The directory itself: cases exist, every event type is covered, no .ref without its .in
 * (a renamed case would otherwise leave a stale reference that nothing checks). */
START_TEST(test_golden_directory)
{
    ck_assert_msg(ngolden >= 7, "%s: %zu cases, want at least one per event type", GOLDEN_DIR,
                  ngolden);
    static const char *const types[] = {"mail", "send", "reject", "delivery",
                                        "bounce", "delay", "complaint"};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        bool seen = false;
        for (size_t i = 0; i < ngolden && !seen; i++) {
            char *inpath = util_asprintf("%s/%s.in", GOLDEN_DIR, golden_names[i]);
            char *text = testlib_read_file(inpath, NULL);
            ck_assert_ptr_nonnull(text);
            golden_in in;
            golden_read(inpath, text, &in);
            seen = strcmp(in.event, types[t]) == 0;
            golden_free(&in);
            free(text);
            free(inpath);
        }
        ck_assert_msg(seen, "%s: no case with event = %s", GOLDEN_DIR, types[t]);
    }
    DIR *d = opendir(GOLDEN_DIR);
    ck_assert_ptr_nonnull(d);
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        size_t n = strlen(de->d_name);
        if (n < 5 || strcmp(de->d_name + n - 4, ".ref") != 0) continue;
        char *inpath = util_asprintf("%s/%.*s.in", GOLDEN_DIR, (int)(n - 4), de->d_name);
        ck_assert_msg(access(inpath, R_OK) == 0, "%s/%s has no .in", GOLDEN_DIR, de->d_name);
        free(inpath);
    }
    closedir(d);
}
END_TEST

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static Suite *golden_suite(void)
{
    DIR *d = opendir(GOLDEN_DIR);
    if (d) {
        for (struct dirent *de; (de = readdir(d)) != NULL && ngolden < MAX_CASES;) {
            size_t n = strlen(de->d_name);
            if (n > 3 && strcmp(de->d_name + n - 3, ".in") == 0)
                golden_names[ngolden++] = util_strndup(de->d_name, n - 3);
        }
        closedir(d);
        qsort(golden_names, ngolden, sizeof golden_names[0], cmp_names);
    }
    Suite *s = suite_create("events_golden");
    TCase *tc = tcase_create("golden");
    tcase_add_test(tc, test_golden_directory);
    tcase_add_loop_test(tc, test_golden_event, 0, (int)ngolden);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(golden_suite);
