/* model.h — the SES v2 REST surface as botocore's sesv2 service model defines it, read at
 * build time (tools/gen_sesv2_model.py writes api/sesv2_model.c from Debian's
 * python3-botocore; the generated file is committed, `make sesv2-model` regenerates it):
 * every operation's method and URI template, and for the operations kiln answers, their
 * input shapes (members, location uri/querystring/header/body, types, required, enums,
 * min/max). Routing a request and turning it into one validated JSON input object keyed by
 * the model's member names is pure and fuzzed. */
#ifndef KILN_MODEL_H
#define KILN_MODEL_H

#include <stdbool.h>
#include <stddef.h>

struct json_t;

typedef struct api_model_op api_model_op;

/* The operation whose method and URI template match (labels percent-decoded into *labels, a
 * new JSON object {"TemplateName": "x"}), or NULL: *path_known says whether some operation
 * has that path with another method (405 vs 404). raw_path is still percent-encoded. */
const api_model_op *api_model_match(const char *method, const char *raw_path,
                                    struct json_t **labels, bool *path_known);
const char *api_model_op_name(const api_model_op *op);    /* "SendEmail" */
int api_model_op_status(const api_model_op *op);          /* success status: 200 */
/* True when the generated table carries this operation's input shape (kiln answers it). */
bool api_model_op_has_input(const api_model_op *op);

/* The validated input: labels, then querystring members (raw query decoded; lists from
 * repeated keys; integers and booleans converted; timestamps, ISO 8601 or epoch seconds,
 * become epoch seconds as a JSON real), then the JSON body's members (for operations whose
 * input has body members; an empty body is {}), checked against the input shape
 * recursively: unknown members, missing required members, wrong JSON types, enum values,
 * string min/max lengths, integer ranges, list max lengths. On failure NULL and *err
 * (malloc'd) naming the member by its path: "Unknown field 'Foo' in Content.Simple",
 * "Missing required field Content.Simple.Subject", "Content.Simple.Subject.Data must be a string",
 * "PageSize must be an integer", "Reasons[1] must be one of BOUNCE, COMPLAINT",
 * "Request body is not valid JSON: <jansson's text> at line 1 column 5". */
struct json_t *api_model_input(const api_model_op *op, struct json_t *labels,
                               const char *raw_query, const char *body, size_t body_len,
                               char **err);

#endif
