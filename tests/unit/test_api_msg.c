/* test_api_msg.c — api/api_msg.c, a SendEmail or SendBulkEmail message before kilnd's state:
 * Simple content becomes a MIME message with the request's addresses and the set named or
 * the default; Raw content takes its recipients and set from its fields, loses Bcc: and
 * X-SES-CONFIGURATION-SET, and takes a message decoded beforehand; a stored template is read
 * through the env and rendered; and each refusal is SES's error with a message naming what
 * is wrong, in SES's order (one kind of content first, the set before the sender). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_msg.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

#define MSG_KEY "AKIDMSGTEST00000001"
#define MSG_NOW INT64_C(1767225600000)       /* 2026-01-01T00:00:00Z */

static const char *msg_dir;

/* A config: example.com verified, sets txn (default) and bulk, and two keys, one of them
 * scoped to the set txn. */
static config *msg_config(void)
{
    msg_dir = testlib_tmpdir("apimsg");
    testlib_write_private(msg_dir, "k1", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\n");
    static const char yaml[] =
        "server: {hostname: mta.example.test}\n"
        "account: {identities: [example.com]}\n"
        "pools: [{name: p}]\n"
        "configuration_sets: [{name: txn, pool: p}, {name: bulk, pool: p}]\n"
        "default_configuration_set: txn\n"
        "api:\n"
        "  listen: [127.0.0.1:8080]\n"
        "  access_keys:\n"
        "    - {id: " MSG_KEY ", secret_file: k1}\n"
        "    - {id: AKIDSCOPED000000001, secret_file: k1, configuration_sets: [txn]}\n";
    char *err = NULL;
    config *cfg = config_load_text(yaml, strlen(yaml), "kiln.yaml", msg_dir, NULL, &err);
    ck_assert_msg(cfg != NULL, "%s", err ? err : "");
    return cfg;
}

/* The template store of the tests: "greet" only. */
static int msg_template_get(void *arg, const char *name, char **subject, char **text,
                            char **html, char **err)
{
    int *calls = arg;
    (*calls)++;
    (void)err;
    if (strcmp(name, "greet") != 0) return 1;
    *subject = util_strdup("Hello {{name}}");
    *text = util_strdup("Dear {{name}}, welcome.");
    *html = NULL;
    return 0;
}

typedef struct msg_case {
    config *cfg;
    json_t *in;
    api_msg_env env;
    api_msg m;
    api_msg_err e;
    int template_calls;
} msg_case;

static int msg_run(msg_case *t, const char *json, const char *key_id, api_msg_raw *raw)
{
    memset(t, 0, sizeof *t);
    t->cfg = msg_config();
    json_error_t je;
    t->in = json_loads(json, 0, &je);
    ck_assert_msg(t->in != NULL, "%s", je.text);
    t->env = (api_msg_env){
        .cfg = t->cfg, .key = config_find_access_key(t->cfg, key_id), .key_id = key_id,
        .in = t->in, .now_ms = MSG_NOW, .raw = raw,
        .template_get = msg_template_get, .template_arg = &t->template_calls,
    };
    ck_assert_ptr_nonnull(t->env.key);
    api_msg_init(&t->m);
    return api_msg_email(&t->env, &t->m, &t->e);
}

static void msg_done(msg_case *t)
{
    api_msg_free(&t->m);
    free(t->e.msg);
    json_decref(t->in);
    config_unref(t->cfg);
    testlib_tmpdir_remove(msg_dir);
}

START_TEST(test_simple_is_built_with_the_default_set)
{
    msg_case t;
    int rc = msg_run(&t,
                     "{\"FromEmailAddress\":\"App <app@example.com>\","
                     "\"Destination\":{\"ToAddresses\":[\"a@dest.test\",\"A@dest.test\"],"
                     "\"BccAddresses\":[\"b@dest.test\"]},"
                     "\"EmailTags\":[{\"Name\":\"campaign\",\"Value\":\"spring\"}],"
                     "\"Content\":{\"Simple\":{\"Subject\":{\"Data\":\"Hi\"},"
                     "\"Body\":{\"Text\":{\"Data\":\"plain\"}}}}}",
                     MSG_KEY, NULL);
    ck_assert_msg(rc == 0, "%s", t.e.msg);
    ck_assert_str_eq(t.m.mail_from, "app@example.com");
    ck_assert_str_eq(t.m.set, "txn");
    /* the same address once, whatever its case; Bcc in the envelope only */
    ck_assert_uint_eq(t.m.nrcpts, 2);
    ck_assert_str_eq(t.m.rcpts[0], "a@dest.test");
    ck_assert_str_eq(t.m.rcpts[1], "b@dest.test");
    ck_assert_ptr_nonnull(strstr(t.m.data.buf, "Subject: Hi\r\n"));
    ck_assert_ptr_nonnull(strstr(t.m.data.buf, "Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n"));
    ck_assert_ptr_null(strstr(t.m.data.buf, "b@dest.test"));
    ck_assert_uint_eq(t.m.tags.n, 1);
    ck_assert_str_eq(t.m.tags.names[0], "campaign");
    ck_assert_str_eq(t.m.tags.values[0], "spring");
    msg_done(&t);
}
END_TEST

START_TEST(test_raw_takes_fields_and_the_decoded_message)
{
    /* the decoded message is taken when it is that of this very Data string */
    static const char json[] = "{\"Content\":{\"Raw\":{\"Data\":\"bm90LWRlY29kZWQtaGVyZQ==\"}}}";
    const char *msg = "From: app@example.com\r\nTo: x@dest.test\r\nCc: Y <y@dest.test>\r\n"
                      "Bcc: z@dest.test\r\nX-SES-CONFIGURATION-SET: bulk \r\n"
                      "Subject: raw\r\n\r\nbody\r\n";
    msg_case t;
    memset(&t, 0, sizeof t);
    t.cfg = msg_config();
    t.in = json_loads(json, 0, NULL);
    api_msg_raw raw = {
        .b64 = json_string_value(json_object_get(json_object_get(json_object_get(t.in,
                                 "Content"), "Raw"), "Data")),
        .msg = util_strdup(msg), .len = strlen(msg),
    };
    t.env = (api_msg_env){.cfg = t.cfg, .key = config_find_access_key(t.cfg, MSG_KEY),
                          .key_id = MSG_KEY, .in = t.in, .now_ms = MSG_NOW, .raw = &raw,
                          .template_get = msg_template_get, .template_arg = &t.template_calls};
    api_msg_init(&t.m);
    int rc = api_msg_email(&t.env, &t.m, &t.e);
    ck_assert_msg(rc == 0, "%s", t.e.msg);
    ck_assert_ptr_null(raw.msg);                       /* taken */
    ck_assert_str_eq(t.m.mail_from, "app@example.com");
    ck_assert_str_eq(t.m.set, "bulk");
    ck_assert_uint_eq(t.m.nrcpts, 3);
    ck_assert_str_eq(t.m.rcpts[0], "x@dest.test");
    ck_assert_str_eq(t.m.rcpts[1], "y@dest.test");
    ck_assert_str_eq(t.m.rcpts[2], "z@dest.test");
    ck_assert_str_eq(t.m.data.buf, "From: app@example.com\r\nTo: x@dest.test\r\n"
                                   "Cc: Y <y@dest.test>\r\nSubject: raw\r\n\r\nbody\r\n");
    msg_done(&t);

    /* not decoded beforehand: decoded here ("From: app@example.com\n\nhi") */
    rc = msg_run(&t, "{\"Destination\":{\"ToAddresses\":[\"x@dest.test\"]},\"Content\":"
                     "{\"Raw\":{\"Data\":\"RnJvbTogYXBwQGV4YW1wbGUuY29tCgpoaQ==\"}}}",
                 MSG_KEY, NULL);
    ck_assert_msg(rc == 0, "%s", t.e.msg);
    ck_assert_str_eq(t.m.data.buf, "From: app@example.com\r\n\r\nhi\r\n");
    msg_done(&t);
}
END_TEST

START_TEST(test_template_is_read_and_rendered)
{
    msg_case t;
    int rc = msg_run(&t,
                     "{\"FromEmailAddress\":\"app@example.com\",\"Destination\":{\"ToAddresses\":"
                     "[\"a@dest.test\"]},\"Content\":{\"Template\":{\"TemplateName\":\"greet\","
                     "\"TemplateData\":\"{\\\"name\\\":\\\"Ann\\\"}\"}}}",
                     MSG_KEY, NULL);
    ck_assert_msg(rc == 0, "%s", t.e.msg);
    ck_assert_int_eq(t.template_calls, 1);
    ck_assert_ptr_nonnull(strstr(t.m.data.buf, "Subject: Hello Ann\r\n"));
    ck_assert_ptr_nonnull(strstr(t.m.data.buf, "Dear Ann, welcome."));
    msg_done(&t);
}
END_TEST

/* Each refusal: rc -1, SES's status and type, and a message naming what is wrong. */
static void msg_refused(const char *json, const char *key_id, int status, const char *type,
                        const char *bulk, const char *words)
{
    msg_case t;
    int rc = msg_run(&t, json, key_id, NULL);
    ck_assert_int_eq(rc, -1);
    ck_assert_int_eq(t.e.status, status);
    ck_assert_str_eq(t.e.type, type);
    ck_assert_str_eq(t.e.bulk, bulk);
    ck_assert_msg(t.e.msg && strstr(t.e.msg, words), "%s: got \"%s\", wanted \"%s\"", json,
                  t.e.msg ? t.e.msg : "(null)", words);
    msg_done(&t);
}

#define MSG_SIMPLE "\"Content\":{\"Simple\":{\"Subject\":{\"Data\":\"s\"},\"Body\":{\"Text\":{\"Data\":\"t\"}}}}"
#define MSG_TO "\"Destination\":{\"ToAddresses\":[\"a@dest.test\"]}"

START_TEST(test_refusals_name_what_is_wrong)
{
    msg_refused("{\"FromEmailAddress\":\"app@example.com\"," MSG_TO ",\"Content\":{}}", MSG_KEY,
                400, "BadRequestException", "INVALID_PARAMETER",
                "Content must hold exactly one of Simple, Raw and Template");
    msg_refused("{" MSG_TO "," MSG_SIMPLE "}", MSG_KEY, 400, "BadRequestException",
                "INVALID_PARAMETER", "FromEmailAddress is required unless Content.Raw");
    msg_refused("{\"FromEmailAddress\":\"app@example.com\"," MSG_SIMPLE "}", MSG_KEY, 400,
                "BadRequestException", "INVALID_PARAMETER",
                "Destination is required unless Content.Raw");
    /* the set is checked before the sender: an unknown set with an unverified sender */
    msg_refused("{\"FromEmailAddress\":\"app@elsewhere.test\",\"ConfigurationSetName\":\"nope\","
                MSG_TO "," MSG_SIMPLE "}",
                MSG_KEY, 404, "NotFoundException", "CONFIGURATION_SET_DOES_NOT_EXIST",
                "Configuration set nope does not exist.");
    msg_refused("{\"FromEmailAddress\":\"app@elsewhere.test\"," MSG_TO "," MSG_SIMPLE "}",
                MSG_KEY, 400, "MessageRejected", "MESSAGE_REJECTED", "app@elsewhere.test");
    msg_refused("{\"FromEmailAddress\":\"app@example.com\",\"ConfigurationSetName\":\"bulk\","
                MSG_TO "," MSG_SIMPLE "}",
                "AKIDSCOPED000000001", 403, "AccessDeniedException", "MESSAGE_REJECTED",
                "configuration-set/bulk");
    msg_refused("{\"FromEmailAddress\":\"app@example.com\",\"Destination\":{\"CcAddresses\":"
                "[\"ok@dest.test\",\"not an address\"]}," MSG_SIMPLE "}",
                MSG_KEY, 400, "BadRequestException", "INVALID_PARAMETER",
                "Destination.CcAddresses[1]: 'not an address' is not a valid email address");
    msg_refused("{\"FromEmailAddress\":\"app@example.com\"," MSG_TO ",\"EmailTags\":"
                "[{\"Name\":\"a b\",\"Value\":\"v\"}]," MSG_SIMPLE "}",
                MSG_KEY, 400, "BadRequestException", "INVALID_PARAMETER", "EmailTags[0] (a b=v)");
    msg_refused("{\"FromEmailAddress\":\"app@example.com\"," MSG_TO ",\"Content\":{\"Template\":"
                "{\"TemplateName\":\"gone\"}}}",
                MSG_KEY, 404, "NotFoundException", "TEMPLATE_DOES_NOT_EXIST",
                "Template gone does not exist.");
    msg_refused("{\"FromEmailAddress\":\"app@example.com\"," MSG_TO ",\"Content\":{\"Template\":"
                "{\"TemplateName\":\"greet\",\"TemplateData\":\"{}\"}}}",
                MSG_KEY, 400, "BadRequestException", "INVALID_PARAMETER", "Template greet");
    msg_refused("{\"Content\":{\"Raw\":{\"Data\":\"!!!!\"}}}", MSG_KEY, 400,
                "BadRequestException", "INVALID_PARAMETER",
                "Content.Raw.Data: invalid base64 at offset 0");
    /* "From: app@example.com\nTo: bob, a@dest.test\n\nhi": the envelope would get "bob" */
    msg_refused("{\"Content\":{\"Raw\":{\"Data\":"
                "\"RnJvbTogYXBwQGV4YW1wbGUuY29tClRvOiBib2IsIGFAZGVzdC50ZXN0CgpoaQ==\"}}}", MSG_KEY,
                400, "MessageRejected", "MESSAGE_REJECTED",
                "Illegal address: the message's To: field holds \"bob\"");
    /* "To: a@dest.test\n\nhi": a raw message without From: */
    msg_refused("{\"Content\":{\"Raw\":{\"Data\":\"VG86IGFAZGVzdC50ZXN0CgpoaQ==\"}}}", MSG_KEY,
                400, "MessageRejected", "MESSAGE_REJECTED", "the message has no From: header");
}
END_TEST

static Suite *api_msg_suite(void)
{
    Suite *s = suite_create("api_msg");
    TCase *tc = tcase_create("email");
    tcase_add_test(tc, test_simple_is_built_with_the_default_set);
    tcase_add_test(tc, test_raw_takes_fields_and_the_decoded_message);
    tcase_add_test(tc, test_template_is_read_and_rendered);
    tcase_add_test(tc, test_refusals_name_what_is_wrong);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(api_msg_suite);
