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
 * column), under the model's flags and with JSON_DECODE_ANY. Built for libFuzzer by
 * `make fuzz`, replayed over its corpus and mutations in `make check`. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
