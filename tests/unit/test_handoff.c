/* test_handoff.c — the pure parts of the cluster handoff (mta/handoff.c): the credential a
 * node presents to a peer and its check, the X-Kiln-Handoff field (folded, parsed back
 * after unfolding) and its refusals, and the mail object tagged with kiln:handoff-from. */
#include <check.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/auth.h"
#include "mta/handoff.h"
#include "mta/message.h"
#include "tests/unit/testlib.h"

#define SECRET "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define ID "000001a24d16bf69-3afa83bb-6931-4be8-9d95-fd9e6a727177-000000"

/* The password inside an AUTH PLAIN response. */
static char *plain_password(const char *b64, char **user)
{
    char *pass = NULL;
    ck_assert_int_eq(auth_decode_plain(b64, user, &pass), 0);
    return pass;
}

START_TEST(test_credential_round_trip)
{
    char *user = NULL, *plain = NULL, *u2 = NULL, node[72];
    handoff_credential(SECRET, "n1", &user, &plain);
    ck_assert_str_eq(user, "kiln-cluster:n1");
    char *pass = plain_password(plain, &u2);
    ck_assert_str_eq(u2, user);
    ck_assert_uint_eq(strlen(pass), 64);
    ck_assert(handoff_check(SECRET, user, pass, node));
    ck_assert_str_eq(node, "n1");
    /* another node's name with n1's password, another secret, a changed digit: refused */
    ck_assert(!handoff_check(SECRET, "kiln-cluster:n2", pass, node));
    char other[] = SECRET;
    other[0] = '1';
    ck_assert(!handoff_check(other, user, pass, node));
    pass[10] = pass[10] == 'a' ? 'b' : 'a';
    ck_assert(!handoff_check(SECRET, user, pass, node));
    /* not a cluster user, a bad node name, no secret yet, a short password */
    ck_assert(!handoff_check(SECRET, "n1", pass, node));
    ck_assert(!handoff_check(SECRET, "kiln-cluster:n 1", pass, node));
    ck_assert(!handoff_check(SECRET, "kiln-cluster:", pass, node));
    ck_assert(!handoff_check(NULL, user, pass, node));
    ck_assert(!handoff_check(SECRET, user, "abc", node));
    free(user);
    free(plain);
    free(u2);
    free(pass);
}
END_TEST

START_TEST(test_header_round_trip)
{
    /* a mail object long enough to fold over many lines */
    json_t *o = json_pack("{s:s, s:{s:[s], s:[s]}}", "messageId", ID, "tags",
                          "ses:configuration-set", "txn", "team", "pay");
    char pad[3000];
    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    json_object_set_new(o, "pad", json_string(pad));
    char *mail = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    char *h = handoff_header("n1", ID, 1700000000123LL, "txn", mail);
    /* every line of the field stays short (SMTP's 1000 and then some) */
    for (char *line = h, *end; *line; line = end + 2) {
        end = strstr(line, "\r\n");
        ck_assert_ptr_nonnull(end);
        ck_assert_int_le(end - line, 100);
    }
    char *msg = util_asprintf("%sFrom: a@example.test\r\n\r\nbody\r\n", h);
    msg_headers hs;
    message_parse_headers(msg, strlen(msg), &hs);
    const char *v = message_header_get(&hs, HANDOFF_HEADER);
    ck_assert_ptr_nonnull(v);
    handoff_info hi;
    char *err = NULL;
    ck_assert_msg(handoff_parse(v, &hi, &err) == 0, "%s", err ? err : "");
    ck_assert_str_eq(hi.node, "n1");
    ck_assert_str_eq(hi.id, ID);
    ck_assert_int_eq(hi.created_ms, 1700000000123LL);
    ck_assert_str_eq(hi.set, "txn");
    ck_assert_str_eq(hi.mail_json, mail);
    handoff_info_free(&hi);
    /* stripping it leaves the message as the first node stored it */
    size_t n = message_strip_header(msg, strlen(msg), HANDOFF_HEADER);
    msg[n] = '\0';
    ck_assert_str_eq(msg, "From: a@example.test\r\n\r\nbody\r\n");
    message_headers_free(&hs);
    free(msg);
    free(h);
    free(mail);
}
END_TEST

static const struct {
    const char *value, *error;
} bad[] = {
    {"v=2; node=n1; id=" ID "; ms=1; set=txn; mail=e30=", "version is not 1"},
    {"node=n1; id=" ID "; ms=1; set=txn; mail=e30=", "version is not 1"},
    {"v=1; node=n 1; id=" ID "; ms=1; set=txn; mail=e30=", "no valid node"},
    {"v=1; node=n1; id=a/b; ms=1; set=txn; mail=e30=", "no valid id"},
    {"v=1; node=n1; id=" ID "; ms=-5; set=txn; mail=e30=", "no valid ms"},
    {"v=1; node=n1; id=" ID "; ms=12x; set=txn; mail=e30=", "no valid ms"},
    {"v=1; node=n1; id=" ID "; ms=1; mail=e30=", "no valid set"},
    {"v=1; node=n1; id=" ID "; ms=1; set=txn", "no mail object"},
    {"v=1; node=n1; id=" ID "; ms=1; set=txn; mail=!!!!", "not base64 JSON"},
    {"v=1; node=n1; id=" ID "; ms=1; set=txn; mail=WzFd", "not base64 JSON"},   /* [1] */
    {"", "version is not 1"},
};

START_TEST(test_header_refusals)
{
    handoff_info hi;
    char *err = NULL;
    ck_assert_int_eq(handoff_parse(bad[_i].value, &hi, &err), -1);
    ck_assert_ptr_nonnull(err);
    ck_assert_msg(strstr(err, bad[_i].error) != NULL, "%s: %s", bad[_i].value, err);
    ck_assert_msg(strncmp(err, "bad X-Kiln-Handoff: ", 20) == 0, "%s", err);
    free(err);
}
END_TEST

START_TEST(test_tag_mail)
{
    char *m = handoff_tag_mail("{\"messageId\":\"x\",\"tags\":{\"team\":[\"pay\"]}}", "n1");
    json_t *o = json_loads(m, 0, NULL);
    ck_assert_str_eq(json_string_value(json_array_get(
                         json_object_get(json_object_get(o, "tags"), "kiln:handoff-from"), 0)),
                     "n1");
    ck_assert_str_eq(json_string_value(json_array_get(
                         json_object_get(json_object_get(o, "tags"), "team"), 0)), "pay");
    json_decref(o);
    free(m);
    m = handoff_tag_mail("{}", "n2");
    ck_assert_str_eq(m, "{\"tags\":{\"kiln:handoff-from\":[\"n2\"]}}");
    free(m);
    ck_assert_ptr_null(handoff_tag_mail("[1]", "n1"));
    ck_assert_ptr_null(handoff_tag_mail("not json", "n1"));
}
END_TEST

static Suite *handoff_suite(void)
{
    Suite *s = suite_create("handoff");
    TCase *t = tcase_create("pure");
    tcase_add_test(t, test_credential_round_trip);
    tcase_add_test(t, test_header_round_trip);
    tcase_add_loop_test(t, test_header_refusals, 0, sizeof bad / sizeof bad[0]);
    tcase_add_test(t, test_tag_mail);
    suite_add_tcase(s, t);
    return s;
}

TESTLIB_SUITES(handoff_suite);
