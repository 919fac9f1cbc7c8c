/* test_model.c — the SES v2 REST surface as botocore's sesv2 model defines it (api/model.c
 * over the generated api/sesv2_model.c): every operation kiln answers routed from the
 * method and path botocore sends (labels percent-decoded: %40, %2B, %20), 404 vs 405,
 * exact paths (no trailing-slash tolerance, invalid escapes no match), and the input object
 * a handler gets: labels, query members and body members keyed by the model's member names,
 * with the errors a client sees for unknown fields, missing required fields, wrong types,
 * enums, integers and timestamps in the query, invalid JSON, duplicate keys, nesting, string
 * lengths. The request bodies and URLs are those botocore 1.29 builds for these calls. */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/model.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

/* The operation method + path route to, which must be `name`; labels returned. */
static json_t *route(const char *method, const char *path, const char *name)
{
    json_t *labels = (json_t *)1;
    bool known = false;
    const api_model_op *op = api_model_match(method, path, &labels, &known);
    ck_assert_msg(op != NULL, "%s %s: no operation", method, path);
    ck_assert_str_eq(api_model_op_name(op), name);
    ck_assert(api_model_op_has_input(op));
    ck_assert_int_eq(api_model_op_status(op), 200);
    ck_assert(json_is_object(labels));
    return labels;
}

static void no_route(const char *method, const char *path, bool want_known)
{
    json_t *labels = (json_t *)1;
    bool known = !want_known;
    ck_assert_msg(api_model_match(method, path, &labels, &known) == NULL, "%s %s matched",
                  method, path);
    ck_assert_ptr_null(labels);
    ck_assert_msg(known == want_known, "%s %s: path_known %d", method, path, known);
}

/* The validated input of method + path?query with body, which must succeed. */
static json_t *input_ok(const char *method, const char *path, const char *query,
                        const char *body)
{
    json_t *labels;
    bool known;
    const api_model_op *op = api_model_match(method, path, &labels, &known);
    ck_assert_msg(op != NULL, "%s %s: no operation", method, path);
    char *err = NULL;
    json_t *in = api_model_input(op, labels, query, body, body ? strlen(body) : 0, &err);
    ck_assert_msg(in != NULL, "%s %s?%s: %s", method, path, query, err ? err : "?");
    ck_assert_ptr_null(err);
    json_decref(labels);
    return in;
}

/* The error of method + path?query with body, which must be exactly want. */
static void input_err(const char *method, const char *path, const char *query,
                      const char *body, const char *want)
{
    json_t *labels;
    bool known;
    const api_model_op *op = api_model_match(method, path, &labels, &known);
    ck_assert_msg(op != NULL, "%s %s: no operation", method, path);
    char *err = NULL;
    json_t *in = api_model_input(op, labels, query, body, body ? strlen(body) : 0, &err);
    ck_assert_msg(in == NULL, "%s %s?%s accepted", method, path, query);
    ck_assert_ptr_nonnull(err);
    ck_assert_str_eq(err, want);
    free(err);
    json_decref(labels);
}

static const char *str_of(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_string(v), "%s is not a string", key);
    return json_string_value(v);
}

#define SIMPLE_BODY                                                                          \
    "{\"FromEmailAddress\": \"a@example.com\", \"Destination\": {\"ToAddresses\": "           \
    "[\"b@example.com\"], \"CcAddresses\": [\"c@example.com\"]}, \"Content\": {\"Simple\": " \
    "{\"Subject\": {\"Data\": \"H\\u00e9llo\", \"Charset\": \"UTF-8\"}, \"Body\": "          \
    "{\"Text\": {\"Data\": \"hi\"}, \"Html\": {\"Data\": \"<p>hi</p>\"}}}}, \"EmailTags\": "  \
    "[{\"Name\": \"campaign\", \"Value\": \"x\"}], \"ConfigurationSetName\": \"marketing\"}"
#define OUT "/v2/email/outbound-emails"
#define SUPP "/v2/email/suppression/addresses"

/* ---- routing ---- */

START_TEST(test_route_every_operation)
{
    static const struct {
        const char *method, *path, *name, *label, *value;
    } cases[] = {
        {"POST", OUT, "SendEmail", NULL, NULL},
        {"POST", "/v2/email/outbound-bulk-emails", "SendBulkEmail", NULL, NULL},
        {"POST", "/v2/email/templates", "CreateEmailTemplate", NULL, NULL},
        {"GET", "/v2/email/templates/welcome", "GetEmailTemplate", "TemplateName", "welcome"},
        {"GET", "/v2/email/templates", "ListEmailTemplates", NULL, NULL},
        {"PUT", "/v2/email/templates/wel%20come", "UpdateEmailTemplate", "TemplateName",
         "wel come"},
        {"DELETE", "/v2/email/templates/welcome", "DeleteEmailTemplate", "TemplateName",
         "welcome"},
        {"POST", "/v2/email/templates/welcome/render", "TestRenderEmailTemplate",
         "TemplateName", "welcome"},
        {"GET", "/v2/email/account", "GetAccount", NULL, NULL},
        {"GET", "/v2/email/dedicated-ips", "GetDedicatedIps", NULL, NULL},
        {"GET", "/v2/email/dedicated-ips/192.0.2.10", "GetDedicatedIp", "IP", "192.0.2.10"},
        {"PUT", "/v2/email/dedicated-ips/192.0.2.10/warmup", "PutDedicatedIpWarmupAttributes",
         "IP", "192.0.2.10"},
        {"GET", "/v2/email/dedicated-ip-pools", "ListDedicatedIpPools", NULL, NULL},
        {"GET", "/v2/email/dedicated-ip-pools/default", "GetDedicatedIpPool", "PoolName",
         "default"},
        {"POST", "/v2/email/dedicated-ip-pools", "CreateDedicatedIpPool", NULL, NULL},
        {"DELETE", "/v2/email/dedicated-ip-pools/p", "DeleteDedicatedIpPool", "PoolName", "p"},
        {"PUT", "/v2/email/dedicated-ips/192.0.2.10/pool", "PutDedicatedIpInPool", "IP",
         "192.0.2.10"},
        {"PUT", SUPP, "PutSuppressedDestination", NULL, NULL},
        {"GET", SUPP "/bounce%2Btag%40example.com", "GetSuppressedDestination", "EmailAddress",
         "bounce+tag@example.com"},
        {"DELETE", SUPP "/bounce%40example.com", "DeleteSuppressedDestination", "EmailAddress",
         "bounce@example.com"},
        {"GET", SUPP, "ListSuppressedDestinations", NULL, NULL},
        {"GET", "/v2/email/identities", "ListEmailIdentities", NULL, NULL},
        {"GET", "/v2/email/identities/user%40example.com", "GetEmailIdentity", "EmailIdentity",
         "user@example.com"},
        {"GET", "/v2/email/configuration-sets", "ListConfigurationSets", NULL, NULL},
        {"GET", "/v2/email/configuration-sets/marketing", "GetConfigurationSet",
         "ConfigurationSetName", "marketing"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *labels = route(cases[i].method, cases[i].path, cases[i].name);
        if (cases[i].label) {
            ck_assert_uint_eq(json_object_size(labels), 1);
            ck_assert_str_eq(str_of(labels, cases[i].label), cases[i].value);
        } else {
            ck_assert_uint_eq(json_object_size(labels), 0);
        }
        json_decref(labels);
    }
}
END_TEST

START_TEST(test_route_404_405)
{
    /* a path no operation has: 404 */
    no_route("GET", "/v2/email/nothing", false);
    no_route("GET", "/", false);
    no_route("GET", "", false);
    /* exact paths: no trailing slash, no empty label, no double slash */
    no_route("GET", "/v2/email/account/", false);
    no_route("GET", "/v2/email/templates/", false);
    no_route("GET", "//v2/email/account", false);
    no_route("GET", "/v2/email/templates/a/b", false);
    /* an invalid percent-escape, an encoded NUL, invalid UTF-8 in a label: no match */
    no_route("GET", "/v2/email/templates/a%zz", false);
    no_route("GET", "/v2/email/templates/a%4", false);
    no_route("GET", "/v2/email/templates/a%00b", false);
    no_route("GET", "/v2/email/templates/%FF", false);
    /* a known path with another method: 405 */
    no_route("PATCH", OUT, true);
    no_route("GET", OUT, true);
    no_route("get", "/v2/email/account", true);
    no_route("POST", "/v2/email/templates/welcome", true);
    /* the query is not part of the path */
    json_t *l = route("GET", "/v2/email/account?x=1", "GetAccount");
    json_decref(l);
    /* an operation of the model kiln does not answer: routed, without an input shape */
    json_t *labels;
    bool known;
    const api_model_op *op = api_model_match("GET", "/v2/email/contact-lists/news", &labels,
                                             &known);
    ck_assert_ptr_nonnull(op);
    ck_assert_str_eq(api_model_op_name(op), "GetContactList");
    ck_assert(!api_model_op_has_input(op));
    ck_assert_str_eq(str_of(labels, "ContactListName"), "news");
    char *err = NULL;
    ck_assert_ptr_null(api_model_input(op, labels, "", NULL, 0, &err));
    ck_assert_ptr_nonnull(err);
    free(err);
    json_decref(labels);
    /* a literal segment wins over a label (policies vs policies/{PolicyName}) */
    op = api_model_match("GET", "/v2/email/identities/x.test/policies", &labels, &known);
    ck_assert_str_eq(api_model_op_name(op), "GetEmailIdentityPolicies");
    json_decref(labels);
}
END_TEST

/* ---- input ---- */

START_TEST(test_send_email_simple_and_raw)
{
    json_t *in = input_ok("POST", OUT, "", SIMPLE_BODY);
    ck_assert_str_eq(str_of(in, "FromEmailAddress"), "a@example.com");
    ck_assert_str_eq(str_of(in, "ConfigurationSetName"), "marketing");
    json_t *subj = json_object_get(json_object_get(json_object_get(in, "Content"), "Simple"),
                                   "Subject");
    ck_assert_str_eq(str_of(subj, "Data"), "H\xc3\xa9llo");
    ck_assert_str_eq(str_of(subj, "Charset"), "UTF-8");
    json_t *cc = json_object_get(json_object_get(in, "Destination"), "CcAddresses");
    ck_assert_uint_eq(json_array_size(cc), 1);
    ck_assert_str_eq(json_string_value(json_array_get(cc, 0)), "c@example.com");
    json_t *tag = json_array_get(json_object_get(in, "EmailTags"), 0);
    ck_assert_str_eq(str_of(tag, "Name"), "campaign");
    json_decref(in);

    /* Raw: the blob stays the base64 text botocore sent (the caller decodes it) */
    in = input_ok("POST", OUT, "",
                  "{\"FromEmailAddress\": \"a@example.com\", \"Destination\": {\"ToAddresses\": "
                  "[\"b@example.com\"]}, \"Content\": {\"Raw\": {\"Data\": "
                  "\"RnJvbTogYUBleGFtcGxlLmNvbQ0KVG86IGJAZXhhbXBsZS5jb20NClN1YmplY3Q6IHJhdw0KDQp"
                  "ib2R5DQo=\"}}}");
    ck_assert_str_eq(str_of(json_object_get(json_object_get(in, "Content"), "Raw"), "Data"),
                     "RnJvbTogYUBleGFtcGxlLmNvbQ0KVG86IGJAZXhhbXBsZS5jb20NClN1YmplY3Q6IHJhdw0KD"
                     "Qpib2R5DQo=");
    json_decref(in);

    /* null is "not set": dropped */
    in = input_ok("POST", OUT, "",
                  "{\"FromEmailAddress\": null, \"Content\": {\"Template\": {\"TemplateName\": "
                  "\"welcome\", \"TemplateData\": \"{}\"}}}");
    ck_assert_ptr_null(json_object_get(in, "FromEmailAddress"));
    json_decref(in);
}
END_TEST

START_TEST(test_labels_query_body_together)
{
    json_t *in = input_ok("POST", "/v2/email/templates/wel%20come/render", "",
                          "{\"TemplateData\": \"{\\\"name\\\":\\\"x\\\"}\"}");
    ck_assert_str_eq(str_of(in, "TemplateName"), "wel come");
    ck_assert_str_eq(str_of(in, "TemplateData"), "{\"name\":\"x\"}");
    json_decref(in);

    /* the {IP} label is the member Ip */
    in = input_ok("PUT", "/v2/email/dedicated-ips/192.0.2.10/warmup", "",
                  "{\"WarmupPercentage\": 50}");
    ck_assert_str_eq(str_of(in, "Ip"), "192.0.2.10");
    ck_assert_int_eq(json_integer_value(json_object_get(in, "WarmupPercentage")), 50);
    ck_assert_uint_eq(json_object_size(in), 2);
    json_decref(in);

    in = input_ok("GET", "/v2/email/dedicated-ips", "PoolName=default&PageSize=5", NULL);
    ck_assert_str_eq(str_of(in, "PoolName"), "default");
    ck_assert(json_is_integer(json_object_get(in, "PageSize")));
    ck_assert_int_eq(json_integer_value(json_object_get(in, "PageSize")), 5);
    json_decref(in);

    /* query values percent-decoded, '+' literal, empty pieces skipped, X-Amz-* left to SigV4 */
    in = input_ok("GET", "/v2/email/templates",
                  "PageSize=10&&NextToken=abc%2B%2F%3D+x&X-Amz-Signature=00", NULL);
    ck_assert_str_eq(str_of(in, "NextToken"), "abc+/=+x");
    json_decref(in);

    /* GetAccount: no members; a GET body is not read */
    in = input_ok("GET", "/v2/email/account", "", "not json");
    ck_assert_uint_eq(json_object_size(in), 0);
    json_decref(in);
}
END_TEST

START_TEST(test_unknown_and_missing)
{
    input_err("POST", OUT, "",
              "{\"Content\": {\"Simple\": {\"Foo\": 1, \"Subject\": {\"Data\": \"s\"}}}}",
              "Unknown field 'Foo' in Content.Simple");
    input_err("POST", OUT, "", "{\"Bogus\": 1, \"Content\": {}}", "Unknown field 'Bogus'");
    /* a label member is not a body member */
    input_err("POST", "/v2/email/templates/welcome/render", "",
              "{\"TemplateName\": \"x\", \"TemplateData\": \"{}\"}",
              "Unknown field 'TemplateName'");
    input_err("POST", OUT, "", "{\"FromEmailAddress\": \"a@example.com\"}",
              "Missing required field Content");
    input_err("POST", OUT, "", "", "Missing required field Content");
    input_err("POST", OUT, "", "{\"Content\": null}", "Missing required field Content");
    input_err("POST", OUT, "",
              "{\"Content\": {\"Simple\": {\"Body\": {\"Text\": {\"Data\": \"t\"}}}}}",
              "Missing required field Content.Simple.Subject");
    input_err("POST", OUT, "",
              "{\"Content\": {\"Simple\": {\"Subject\": {\"Data\": \"s\"}, \"Body\": "
              "{\"Text\": {\"Charset\": \"UTF-8\"}}}}}",
              "Missing required field Content.Simple.Body.Text.Data");
    input_err("POST", "/v2/email/outbound-bulk-emails", "",
              "{\"DefaultContent\": {}, \"BulkEmailEntries\": [{\"Destination\": {}}, {}]}",
              "Missing required field BulkEmailEntries[1].Destination");
    input_err("PUT", SUPP, "", "{\"EmailAddress\": \"x@example.com\"}",
              "Missing required field Reason");
    /* an unknown field's name is shown escaped */
    input_err("POST", OUT, "", "{\"F\\u00e9\\n\": 1}", "Unknown field 'F\\xC3\\xA9\\x0A'");
}
END_TEST

START_TEST(test_wrong_types_and_bounds)
{
    input_err("POST", OUT, "", "{\"Content\": {\"Simple\": {\"Subject\": {\"Data\": 5}}}}",
              "Content.Simple.Subject.Data must be a string");
    input_err("POST", OUT, "", "{\"Content\": [], \"X\": 1}", "Content must be an object");
    input_err("POST", OUT, "", "{\"Content\": {}, \"Destination\": {\"ToAddresses\": \"b\"}}",
              "Destination.ToAddresses must be a list");
    input_err("POST", OUT, "",
              "{\"Content\": {}, \"Destination\": {\"ToAddresses\": [\"b@x\", 3]}}",
              "Destination.ToAddresses[1] must be a string");
    input_err("PUT", "/v2/email/dedicated-ips/192.0.2.1/warmup", "",
              "{\"WarmupPercentage\": \"50\"}", "WarmupPercentage must be an integer");
    input_err("PUT", "/v2/email/dedicated-ips/192.0.2.1/warmup", "",
              "{\"WarmupPercentage\": 50.5}", "WarmupPercentage must be an integer");
    input_err("PUT", "/v2/email/dedicated-ips/192.0.2.1/warmup", "",
              "{\"WarmupPercentage\": 4294967296}", "WarmupPercentage must be at most 2147483647");
    input_err("PUT", SUPP, "", "{\"EmailAddress\": \"x@example.com\", \"Reason\": \"SPAM\"}",
              "Reason must be one of BOUNCE, COMPLAINT");
    input_err("POST", "/v2/email/dedicated-ip-pools", "",
              "{\"PoolName\": \"p\", \"ScalingMode\": \"standard\"}",
              "ScalingMode must be one of STANDARD, MANAGED");
    input_err("POST", "/v2/email/templates", "",
              "{\"TemplateName\": \"\", \"TemplateContent\": {}}",
              "TemplateName must be at least 1 characters long");
    input_err("POST", "/v2/email/outbound-bulk-emails", "", "[]",
              "Request body must be a JSON object");
    /* TemplateData: at most 262144 characters (characters, not bytes) */
    size_t n = 262144;
    char *big = util_malloc(n * 2 + 64);
    strcpy(big, "{\"TemplateData\": \"");
    char *p = big + strlen(big);
    for (size_t i = 0; i < n; i++) *p++ = (char)0xc3, *p++ = (char)0xa9;
    strcpy(p, "\"}");
    json_t *in = input_ok("POST", "/v2/email/templates/t/render", "", big);
    json_decref(in);
    strcpy(p, "x\"}");
    input_err("POST", "/v2/email/templates/t/render", "", big,
              "TemplateData must be at most 262144 characters long");
    free(big);
}
END_TEST

START_TEST(test_query_conversions)
{
    const char *sd = "/v2/email/suppression/addresses";
    json_t *in = input_ok("GET", sd,
                          "Reason=BOUNCE&Reason=COMPLAINT&StartDate=2026-12-06T02%3A45%3A11Z&"
                          "EndDate=2026-12-07T00%3A00%3A00.500000Z&PageSize=20",
                          NULL);
    json_t *r = json_object_get(in, "Reasons");
    ck_assert_uint_eq(json_array_size(r), 2);
    ck_assert_str_eq(json_string_value(json_array_get(r, 1)), "COMPLAINT");
    ck_assert(json_is_real(json_object_get(in, "StartDate")));
    ck_assert(json_real_value(json_object_get(in, "StartDate")) == 1796525111.0);
    ck_assert(json_real_value(json_object_get(in, "EndDate")) == 1796601600.5);
    ck_assert_int_eq(json_integer_value(json_object_get(in, "PageSize")), 20);
    json_decref(in);

    /* offsets and epoch seconds */
    in = input_ok("GET", sd, "StartDate=2000-02-29T01:00:00%2B01:00&EndDate=1765000000", NULL);
    ck_assert(json_real_value(json_object_get(in, "StartDate")) == 951782400.0);
    ck_assert(json_real_value(json_object_get(in, "EndDate")) == 1765000000.0);
    json_decref(in);
    in = input_ok("GET", sd, "StartDate=1765000000.25&EndDate=2026-12-06T02:45:11-0130", NULL);
    ck_assert(json_real_value(json_object_get(in, "StartDate")) == 1765000000.25);
    ck_assert(json_real_value(json_object_get(in, "EndDate")) == 1796525111.0 + 5400);
    json_decref(in);

    input_err("GET", sd, "Reason=BOUNCE&Reason=FOO", NULL,
              "Reasons[1] must be one of BOUNCE, COMPLAINT");
    input_err("GET", sd, "PageSize=abc", NULL, "PageSize must be an integer");
    input_err("GET", sd, "PageSize=%2010", NULL, "PageSize must be an integer");
    input_err("GET", sd, "PageSize=1.0", NULL, "PageSize must be an integer");
    input_err("GET", sd, "PageSize=", NULL, "PageSize must be an integer");
    input_err("GET", sd, "PageSize=99999999999", NULL, "PageSize must be at most 2147483647");
    input_err("GET", sd, "PageSize=1&PageSize=2", NULL,
              "Query parameter 'PageSize' is given more than once");
    const char *bad_dates[] = {"2026-13-01T00:00:00Z", "2026-02-29T00:00:00Z",
                               "2026-12-06T24:00:00Z", "2026-12-06T02:45:11",
                               "2026-12-06 02:45:11Z", "yesterday", "1e9", ""};
    for (size_t i = 0; i < sizeof bad_dates / sizeof bad_dates[0]; i++) {
        char *q = util_asprintf("StartDate=%s", bad_dates[i]);
        input_err("GET", sd, q, NULL,
                  "StartDate must be a timestamp (epoch seconds or ISO 8601)");
        free(q);
    }
    input_err("GET", sd, "Foo=1", NULL, "Unknown query parameter 'Foo'");
    input_err("GET", sd, "reason=BOUNCE", NULL, "Unknown query parameter 'reason'");
    input_err("GET", sd, "%FF%0A=1", NULL, "Unknown query parameter '\\xFF\\x0A'");
    input_err("GET", sd, "PageSize=%G1", NULL,
              "Invalid percent-encoding in query parameter 'PageSize=%G1'");
    /* the query of an operation without querystring members */
    input_err("GET", "/v2/email/account", "PageSize=1", NULL,
              "Unknown query parameter 'PageSize'");
}
END_TEST

START_TEST(test_json_errors)
{
    input_err("POST", OUT, "", "{\"Content\": ",
              "Request body is not valid JSON: unexpected token near end of file at line 1 "
              "column 12");
    input_err("POST", OUT, "", "{\"Content\": {}, \"Content\": {}}",
              "Request body is not valid JSON: duplicate object key near '\"Content\"' at line 1 "
              "column 25");
    input_err("POST", OUT, "", "{\"a\":\xff}",
              "Request body is not valid JSON: unable to decode byte 0xff at line 1 column 5");
    input_err("POST", OUT, "", "{\"Content\": {}} x",
              "Request body is not valid JSON: end of file expected near 'x' at line 1 "
              "column 17");
    /* nesting past 32 levels is refused before parsing; 32 is parsed (and then judged) */
    char deep[128] = "{\"Content\":";
    for (int i = 0; i < 40; i++) strcat(deep, "[");
    input_err("POST", OUT, "", deep, "Request body nests deeper than 32 levels");
    strcpy(deep, "{\"Content\":");
    for (int i = 0; i < 31; i++) strcat(deep, "[");
    for (int i = 0; i < 31; i++) strcat(deep, "]");
    strcat(deep, "}");
    input_err("POST", OUT, "", deep, "Content must be an object");
    /* brackets inside strings do not count */
    char *s = util_asprintf("{\"Content\": {\"Raw\": {\"Data\": \"%s\"}}}",
                            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[");
    json_t *in = input_ok("POST", OUT, "", s);
    json_decref(in);
    free(s);
}
END_TEST

static Suite *model_suite(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("routing");
    tcase_add_test(tc, test_route_every_operation);
    tcase_add_test(tc, test_route_404_405);
    suite_add_tcase(s, tc);
    tc = tcase_create("input");
    tcase_add_test(tc, test_send_email_simple_and_raw);
    tcase_add_test(tc, test_labels_query_body_together);
    tcase_add_test(tc, test_unknown_and_missing);
    tcase_add_test(tc, test_wrong_types_and_bounds);
    tcase_add_test(tc, test_query_conversions);
    tcase_add_test(tc, test_json_errors);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(model_suite);
