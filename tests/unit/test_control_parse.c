/* test_control_parse.c — mta/control_parse.c, the control protocol's requests as data:
 * request lines framed out of a client's bytes (newline, last line at EOF, trailing CR and
 * blanks, the 64 KB limit) and each line decoded into a command with checked arguments, or
 * the one-line error kilnctl prints and what the control.cmd log line names. Table-driven. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/control_parse.h"
#include "tests/unit/testlib.h"

/* ---- framing ---- */

START_TEST(test_lines)
{
    size_t len, used;
    ck_assert_int_eq(control_parse_line("", 0, false, &len, &used), CONTROL_LINE_MORE);
    ck_assert_int_eq(control_parse_line("", 0, true, &len, &used), CONTROL_LINE_MORE);
    ck_assert_int_eq(control_parse_line("{\"cmd\"", 6, false, &len, &used), CONTROL_LINE_MORE);
    ck_assert_int_eq(control_parse_line("{\"cmd\"", 6, true, &len, &used), CONTROL_LINE_OK);
    ck_assert_uint_eq(len, 6);
    ck_assert_uint_eq(used, 6);
    const char *two = "{\"cmd\":\"ips\"} \t\r\n{\"cmd\":\"status\"}\n";
    ck_assert_int_eq(control_parse_line(two, strlen(two), false, &len, &used), CONTROL_LINE_OK);
    ck_assert_uint_eq(len, 13);
    ck_assert_uint_eq(used, 17);
    ck_assert_int_eq(control_parse_line("\r\n", 2, false, &len, &used), CONTROL_LINE_OK);
    ck_assert_uint_eq(len, 0);
    ck_assert_uint_eq(used, 2);

    size_t big = CONTROL_MAX_LINE + 2;
    char *buf = util_malloc(big);
    memset(buf, 'x', big);
    /* exactly the limit is a line; one byte more is too long, with or without its newline */
    buf[CONTROL_MAX_LINE] = '\n';
    ck_assert_int_eq(control_parse_line(buf, CONTROL_MAX_LINE + 1, false, &len, &used),
                     CONTROL_LINE_OK);
    ck_assert_uint_eq(len, CONTROL_MAX_LINE);
    buf[CONTROL_MAX_LINE] = 'x';
    buf[CONTROL_MAX_LINE + 1] = '\n';
    ck_assert_int_eq(control_parse_line(buf, big, false, &len, &used), CONTROL_LINE_TOO_LONG);
    ck_assert_int_eq(control_parse_line(buf, CONTROL_MAX_LINE, false, &len, &used),
                     CONTROL_LINE_MORE);
    ck_assert_int_eq(control_parse_line(buf, CONTROL_MAX_LINE + 1, false, &len, &used),
                     CONTROL_LINE_TOO_LONG);
    ck_assert_int_eq(control_parse_line(buf, CONTROL_MAX_LINE + 1, true, &len, &used),
                     CONTROL_LINE_TOO_LONG);
    free(buf);
}
END_TEST

/* ---- requests ---- */

static const struct {
    const char *line;
    int rc;
    control_cmd_kind kind;   /* rc 0 */
    const char *arg;         /* rc 0: address, zone, domain or id (NULL: none); rc -1: error */
    const char *reason;      /* rc 0: the reason; rc -1: the log's command */
    const char *subject;     /* rc -1: the log's subject (NULL: none) */
} request_cases[] = {
    {"{\"cmd\": \"status\"}", 0, CONTROL_CMD_STATUS, NULL, NULL, NULL},
    {"{\"cmd\": \"quota\", \"args\": null}", 0, CONTROL_CMD_QUOTA, NULL, NULL, NULL},
    {"{\"cmd\": \"stats\", \"args\": {\"ignored\": 1}}", 0, CONTROL_CMD_STATS, NULL, NULL, NULL},
    {"{\"cmd\": \"reputation\"}", 0, CONTROL_CMD_REPUTATION, NULL, NULL, NULL},
    {"{\"cmd\": \"reputation\", \"args\": {\"window\": 7}}", 0, CONTROL_CMD_REPUTATION, NULL, NULL,
     NULL},
    {"{\"cmd\": \"suppression.list\"}", 0, CONTROL_CMD_SUPPRESSION_LIST, NULL, NULL, NULL},
    {"{\"cmd\": \"suppression.list\", \"args\": {\"reason\": \"complaint\"}}", 0,
     CONTROL_CMD_SUPPRESSION_LIST, NULL, "COMPLAINT", NULL},
    {"{\"cmd\": \"suppression.add\", \"args\": {\"address\": \"Bob@Example.TEST\"}}", 0,
     CONTROL_CMD_SUPPRESSION_ADD, "bob@example.test", "BOUNCE", NULL},
    {"{\"cmd\": \"suppression.add\", \"args\": {\"address\": \"b@x.test\", \"reason\": \"Complaint\"}}",
     0, CONTROL_CMD_SUPPRESSION_ADD, "b@x.test", "COMPLAINT", NULL},
    {"{\"cmd\": \"suppression.remove\", \"args\": {\"address\": \"b@x.test\"}}", 0,
     CONTROL_CMD_SUPPRESSION_REMOVE, "b@x.test", NULL, NULL},
    {"{\"cmd\": \"reload\"}", 0, CONTROL_CMD_RELOAD, NULL, NULL, NULL},
    {"{\"cmd\": \"ips\"}", 0, CONTROL_CMD_IPS, NULL, NULL, NULL},
    {"{\"cmd\": \"ip.warmup\", \"args\": {\"address\": \"127.0.0.10\", \"percent\": 100}}", 0,
     CONTROL_CMD_IP_WARMUP, "127.0.0.10", NULL, NULL},
    {"{\"cmd\": \"ip.check\", \"args\": {\"address\": \"192.0.2.10\"}}", 0, CONTROL_CMD_IP_CHECK,
     "192.0.2.10", NULL, NULL},
    {"{\"cmd\": \"zone.down\", \"args\": {\"zone\": \"az2\"}}", 0, CONTROL_CMD_ZONE_DOWN, "az2", NULL, NULL},
    {"{\"cmd\": \"zone.up\", \"args\": {\"zone\": \"az2\"}}", 0, CONTROL_CMD_ZONE_UP, "az2", NULL, NULL},
    {"{\"cmd\": \"queue\"}", 0, CONTROL_CMD_QUEUE, NULL, NULL, NULL},
    {"{\"cmd\": \"queue\", \"args\": {\"domain\": \"demo.test\"}}", 0, CONTROL_CMD_QUEUE, "demo.test", NULL, NULL},
    {"{\"cmd\": \"queue.explain\", \"args\": {\"id\": \"0123abcd\"}}", 0, CONTROL_CMD_QUEUE_EXPLAIN,
     "0123abcd", NULL, NULL},

    {"not json", -1, 0, "malformed request: ", "", NULL},
    {"[1, 2]", -1, 0, "malformed request: expected a JSON object", "", NULL},
    {"{\"cmd\": 7}", -1, 0, "malformed request: \"cmd\" must be a string", "", NULL},
    {"{\"cmd\": \"ips\", \"args\": [1]}", -1, 0, "malformed request: \"args\" must be an object", "ips", NULL},
    {"{\"cmd\": \"shutdown\"}", -1, 0, "unknown command: shutdown", "shutdown", NULL},
    {"{\"cmd\": \"suppression.list\", \"args\": {\"reason\": \"SPAM\"}}", -1, 0,
     "reason must be BOUNCE or COMPLAINT", "suppression.list", NULL},
    {"{\"cmd\": \"suppression.add\"}", -1, 0, "an address is required", "suppression.add", NULL},
    {"{\"cmd\": \"suppression.add\", \"args\": {\"address\": \"a b@x.test\"}}", -1, 0,
     "invalid address a b@x.test: it must not contain spaces, control characters or angle brackets",
     "suppression.add", "a b@x.test"},
    {"{\"cmd\": \"suppression.add\", \"args\": {\"address\": \"B@X.TEST\", \"reason\": 1}}", -1, 0,
     "reason must be BOUNCE or COMPLAINT", "suppression.add", "b@x.test"},
    {"{\"cmd\": \"suppression.remove\", \"args\": {\"address\": \"a@b@c\"}}", -1, 0,
     "invalid address a@b@c: it must contain exactly one @", "suppression.remove", "a@b@c"},
    {"{\"cmd\": \"ip.warmup\", \"args\": {\"percent\": 5}}", -1, 0, "an IP address is required", "ip.warmup", NULL},
    {"{\"cmd\": \"ip.warmup\", \"args\": {\"address\": \"127.0.0.10\", \"percent\": 101}}", -1, 0,
     "percent must be an integer from 0 to 100", "ip.warmup", "127.0.0.10"},
    {"{\"cmd\": \"ip.warmup\", \"args\": {\"address\": \"127.0.0.10\", \"percent\": 5.5}}", -1, 0,
     "percent must be an integer from 0 to 100", "ip.warmup", "127.0.0.10"},
    {"{\"cmd\": \"ip.check\"}", -1, 0, "an IP address is required", "ip.check", NULL},
    {"{\"cmd\": \"zone.down\", \"args\": {\"zone\": \"\"}}", -1, 0, "a zone name is required", "zone.down", NULL},
    {"{\"cmd\": \"queue\", \"args\": {\"domain\": 3}}", -1, 0, "domain must be a string", "queue", NULL},
    {"{\"cmd\": \"queue.explain\", \"args\": {}}", -1, 0, "a message ID is required", "queue.explain", NULL},
    {"{\"cmd\": \"forecast\", \"args\": {\"days\": 0}}", -1, 0, "days must be from 1 to 90, not 0",
     "forecast", NULL},
    {"{\"cmd\": \"forecast\", \"args\": {\"set\": \"txn\", \"days\": 91}}", -1, 0,
     "days must be from 1 to 90, not 91", "forecast", "txn"},
    {"{\"cmd\": \"forecast\", \"args\": {\"days\": \"7\"}}", -1, 0,
     "days must be an integer from 1 to 90", "forecast", NULL},
    {"{\"cmd\": \"forecast\", \"args\": {\"set\": \"\"}}", -1, 0, "set must be a non-empty string",
     "forecast", NULL},
};

START_TEST(test_request)
{
    int i = _i;
    const char *line = request_cases[i].line;
    control_request req;
    int rc = control_parse_request(line, strlen(line), &req);
    ck_assert_msg(rc == request_cases[i].rc, "%s: rc %d (%s)", line, rc, req.error ? req.error : "");
    if (rc == 0) {
        ck_assert_int_eq(req.kind, request_cases[i].kind);
        ck_assert_ptr_null(req.error);
        const char *arg = req.address ? req.address : req.zone ? req.zone : req.domain ? req.domain : req.id;
        if (request_cases[i].arg) ck_assert_str_eq(arg, request_cases[i].arg);
        else ck_assert_ptr_null(arg);
        if (request_cases[i].reason) ck_assert_str_eq(req.reason, request_cases[i].reason);
        else if (req.kind != CONTROL_CMD_SUPPRESSION_ADD) ck_assert_ptr_null(req.reason);
        if (req.kind == CONTROL_CMD_IP_WARMUP) ck_assert_int_eq(req.percent, 100);
    } else {
        ck_assert_msg(strncmp(req.error, request_cases[i].arg, strlen(request_cases[i].arg)) == 0,
                      "%s: error %s", line, req.error);
        ck_assert_str_eq(req.cmd, request_cases[i].reason);
        if (request_cases[i].subject) ck_assert_str_eq(req.subject, request_cases[i].subject);
        else ck_assert_ptr_null(req.subject);
    }
    control_request_free(&req);
}
END_TEST

/* forecast: the set (optional) and the days (default 14, 1..90) */
START_TEST(test_forecast_args)
{
    static const struct {
        const char *line;
        const char *set;
        int days;
    } ok[] = {
        {"{\"cmd\": \"forecast\"}", NULL, 14},
        {"{\"cmd\": \"forecast\", \"args\": {\"set\": \"txn\"}}", "txn", 14},
        {"{\"cmd\": \"forecast\", \"args\": {\"set\": null, \"days\": 90}}", NULL, 90},
        {"{\"cmd\": \"forecast\", \"args\": {\"set\": \"a b\", \"days\": 1}}", "a b", 1},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        control_request req;
        ck_assert_int_eq(control_parse_request(ok[i].line, strlen(ok[i].line), &req), 0);
        ck_assert_int_eq(req.kind, CONTROL_CMD_FORECAST);
        ck_assert_str_eq(req.name, "forecast");
        if (ok[i].set) ck_assert_str_eq(req.set, ok[i].set);
        else ck_assert_ptr_null(req.set);
        ck_assert_int_eq(req.days, ok[i].days);
        control_request_free(&req);
    }
}
END_TEST

/* The line is len bytes, not up to a NUL. */
START_TEST(test_request_length)
{
    const char *line = "{\"cmd\": \"ips\"}garbage";
    control_request req;
    ck_assert_int_eq(control_parse_request(line, 14, &req), 0);
    ck_assert_int_eq(req.kind, CONTROL_CMD_IPS);
    control_request_free(&req);
    ck_assert_int_eq(control_parse_request(line, strlen(line), &req), -1);
    control_request_free(&req);
}
END_TEST

START_TEST(test_address_problem)
{
    ck_assert_ptr_null(control_address_problem("a@b.test"));
    ck_assert_str_eq(control_address_problem(""), "is empty");
    ck_assert_str_eq(control_address_problem("@b"), "needs a local part and a domain around the @");
    ck_assert_str_eq(control_address_problem("a@"), "needs a local part and a domain around the @");
    ck_assert_str_eq(control_address_problem("<a@b>"),
                     "must not contain spaces, control characters or angle brackets");
    char longer[300];
    memset(longer, 'a', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    longer[5] = '@';
    ck_assert_str_eq(control_address_problem(longer), "is longer than 254 characters");
}
END_TEST

static Suite *control_parse_suite(void)
{
    Suite *s = suite_create("control_parse");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_lines);
    tcase_add_loop_test(tc, test_request, 0, (int)(sizeof request_cases / sizeof request_cases[0]));
    tcase_add_test(tc, test_request_length);
    tcase_add_test(tc, test_forecast_args);
    tcase_add_test(tc, test_address_problem);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(control_parse_suite);
