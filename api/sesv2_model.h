/* sesv2_model.h — the types of the SES v2 model tables that tools/gen_sesv2_model.py writes
 * into api/sesv2_model.c (generated, committed) and api/model.c reads. Private to those two
 * files: the rest of kiln sees the model only through api/model.h.
 *
 * The tables are plain constant data. Shapes refer to each other by index into one shape
 * array (a shape used by several members is there once; identical scalar shapes are merged),
 * structure members are one slice of the member array, string enums one slice of the enum
 * array. Only the input shapes of the operations kiln answers are carried; every other
 * operation has input MODEL_NONE and is known for routing (405 vs 404) only. */
#ifndef KILN_SESV2_MODEL_H
#define KILN_SESV2_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/model.h"

#define MODEL_NONE UINT16_MAX

typedef enum model_type {
    MODEL_STRUCTURE,
    MODEL_LIST,
    MODEL_MAP,
    MODEL_STRING,
    MODEL_INTEGER,   /* 32-bit, as AWS's "integer" */
    MODEL_LONG,      /* 64-bit */
    MODEL_BOOLEAN,
    MODEL_DOUBLE,    /* "double" and "float" */
    MODEL_TIMESTAMP,
    MODEL_BLOB,      /* a base64 string in JSON (the caller decodes it) */
} model_type;

typedef enum model_location {
    MODEL_LOC_BODY,
    MODEL_LOC_URI,
    MODEL_LOC_QUERY,
    MODEL_LOC_HEADER,
} model_location;

typedef struct model_member {
    const char *name;           /* the member name, the key of the validated input */
    const char *location_name;  /* URI label, query key or header name; NULL in the body */
    uint8_t location;           /* model_location */
    bool required;
    uint16_t shape;
} model_member;

typedef struct model_shape {
    uint8_t type;               /* model_type */
    bool has_min, has_max;
    int64_t min, max;           /* string: characters; list, map: entries; numbers: value */
    uint16_t first, count;      /* structure: members[first..]; string: enums[first..] */
    uint16_t member, value;     /* list: member shape; map: key (member) and value shapes */
} model_shape;

struct api_model_op {
    const char *name;           /* "SendEmail" */
    const char *method;         /* "POST" */
    const char *uri;            /* "/v2/email/templates/{TemplateName}" */
    int status;                 /* http.responseCode, or 200 */
    uint16_t input;             /* input shape, MODEL_NONE when kiln does not answer it */
};

typedef struct model_table {
    const struct api_model_op *ops;
    size_t nops;
    const model_shape *shapes;
    size_t nshapes;
    const model_member *members;
    size_t nmembers;
    const char *const *enums;
    size_t nenums;
} model_table;

/* api/sesv2_model.c (generated) */
extern const model_table api_sesv2_model;

#endif
