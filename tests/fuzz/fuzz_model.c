/* fuzz_model.c — fuzz target for the SES v2 model's routing and input validation
 * (api/model.c). Input: "METHOD\nPATH\nQUERY\nBODY" (missing parts are empty; the body is
 * the rest, NULs included), as kiln's HTTP layer hands a request over. The request is routed
 * and, when it names an operation kiln answers, turned into its input; the query and body
 * are also validated as SendEmail's and ListSuppressedDestinations' input whatever the
 * path, so that every input reaches the validator. Promises checked: a match gives an
 * object of labels and marks the path known; no match leaves labels NULL; an input is a JSON
 * object that serializes (valid UTF-8), or else there is an error message that is non-empty
 * printable ASCII (it goes into a JSON answer and a log line). The body also goes through
 * base/jsonlift.c, which must give exactly json_loadb's tree, or its error (text, line,
 * column), under the model's flags and with JSON_DECODE_ANY. A valid SendEmail input then
 * goes through api/api_msg.c as SendEmail builds and checks its message (a fixed config; a
 * stored template "t"): either a message with a sender, a set of the config and data of
 * its stated length, or a refusal with an HTTP error status, an error type and a non-empty
 * message that is valid UTF-8 (it goes into the JSON answer). Built for libFuzzer by
 * `make fuzz`, replayed over its corpus and mutations in `make check`. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_msg.h"
#include "api/model.h"
#include "base/jsonlift.h"
#include "base/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The next '\n'-terminated part of the input as a NUL-terminated string (NULs inside cut
 * it short, as a C string would). */
static char *fuzz_part(const uint8_t **p, size_t *left)
{
    const uint8_t *nl = memchr(*p, '\n', *left);
    size_t n = nl ? (size_t)(nl - *p) : *left;
    char *s = util_strndup((const char *)*p, n);
    *p += n + (nl != NULL);
    *left -= n + (nl != NULL);
    return s;
}

/* The config SendEmail's messages are checked against: one verified domain, two sets. */
static const config *fuzz_config(void)
{
    static config *cfg;
    if (cfg) return cfg;
    static const char yaml[] = "server: {hostname: mta.example.test}\n"
                               "account: {identities: [example.com]}\n"
                               "pools: [{name: p}]\n"
                               "configuration_sets: [{name: txn, pool: p}, {name: b, pool: p}]\n"
                               "default_configuration_set: txn\n";
    char *err = NULL;
    cfg = config_load_text(yaml, strlen(yaml), "kiln.yaml", "/", NULL, &err);
    if (!cfg) abort();
    return cfg;
}

static int fuzz_template_get(void *arg, const char *name, char **subject, char **text,
                             char **html, char **err)
{
    (void)arg;
    (void)err;
    if (strcmp(name, "t") != 0) return 1;
    *subject = util_strdup("Hi {{name}}");
    *text = util_strdup("Dear {{name}} of {{city}}");
    *html = util_strdup("<p>{{name}}</p>");
    return 0;
}

static void fuzz_check_email(json_t *in)
{
    const config *cfg = fuzz_config();
    api_msg_env env = {
        .cfg = cfg, .key_id = "AKIDFUZZ", .in = in, .now_ms = INT64_C(1767225600000),
        .template_get = fuzz_template_get,
    };
    api_msg m;
    api_msg_init(&m);
    api_msg_err e = {0};
    if (api_msg_email(&env, &m, &e) == 0) {
        if (e.msg || !m.mail_from || !*m.mail_from || !m.set || !config_find_set(cfg, m.set))
            abort();
        if (!m.data.buf || m.data.buf[m.data.len] != '\0') abort();
        for (size_t i = 0; i < m.nrcpts; i++)
            if (!m.rcpts[i] || !strchr(m.rcpts[i], '@')) abort();
    } else {
        if (e.status < 400 || e.status > 599 || !e.type || !*e.type || !e.msg || !*e.msg)
            abort();
        json_t *j = json_string(e.msg);
        if (!j) abort();
        json_decref(j);
    }
    free(e.msg);
    api_msg_free(&m);
}

static void fuzz_check_input(const api_model_op *op, json_t *labels, const char *query,
                             const char *body, size_t body_len)
{
    char *err = (char *)"x";
    json_t *in = api_model_input(op, labels, query, body, body_len, &err);
    if (in) {
        if (err || !json_is_object(in)) abort();
        char *dump = json_dumps(in, JSON_COMPACT);
        if (!dump) abort();
        free(dump);
        if (strcmp(api_model_op_name(op), "SendEmail") == 0) fuzz_check_email(in);
        json_decref(in);
        return;
    }
    if (!err || !*err) abort();
    for (const char *c = err; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f) abort();
    free(err);
}

static void fuzz_check_lift(const char *body, size_t len, size_t flags)
{
    json_error_t e1, e2;
    memset(&e1, 0, sizeof e1);
    memset(&e2, 0, sizeof e2);
    json_t *a = jsonlift_loadb(body, len, flags, &e1);
    json_t *b = json_loadb(body, len, flags, &e2);
    if (!a != !b) abort();
    if (a && !json_equal(a, b)) abort();
    if (!a && (strcmp(e1.text, e2.text) != 0 || e1.line != e2.line || e1.column != e2.column ||
               e1.position != e2.position))
        abort();
    json_decref(a);
    json_decref(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data;
    size_t left = size;
    char *method = fuzz_part(&p, &left);
    char *path = fuzz_part(&p, &left);
    char *query = fuzz_part(&p, &left);
    const char *body = (const char *)p;
    size_t body_len = left;

    fuzz_check_lift(body, body_len, JSON_REJECT_DUPLICATES);
    fuzz_check_lift(body, body_len, JSON_DECODE_ANY);

    json_t *labels = (json_t *)1;
    bool known = false;
    const api_model_op *op = api_model_match(method, path, &labels, &known);
    if (op) {
        if (!json_is_object(labels) || !known || !*api_model_op_name(op) ||
            api_model_op_status(op) < 200 || api_model_op_status(op) > 299)
            abort();
        if (api_model_op_has_input(op)) fuzz_check_input(op, labels, query, body, body_len);
        json_decref(labels);
    } else if (labels) {
        abort();
    }

    json_t *l2;
    const api_model_op *send = api_model_match("POST", "/v2/email/outbound-emails", &l2, &known);
    if (!send) abort();
    fuzz_check_input(send, l2, query, body, body_len);
    json_decref(l2);
    const api_model_op *list =
        api_model_match("GET", "/v2/email/suppression/addresses", &l2, &known);
    if (!list) abort();
    fuzz_check_input(list, l2, query, NULL, 0);
    json_decref(l2);

    free(method);
    free(path);
    free(query);
    return 0;
}
