/* jsonlift.c — json_loadb with long plain string values lifted out before jansson lexes
 * them and put back after (base/jsonlift.h says why and what it promises). */
#include "base/jsonlift.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

typedef struct jsonlift_span {
    size_t off, len;             /* the string's bytes between its quotes */
    bool used;
} jsonlift_span;

typedef struct jsonlift {
    const char *text;
    jsonlift_span *sp;
    size_t n, cap;
    size_t left;                 /* stand-ins not yet put back */
} jsonlift;

static bool jsonlift_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Finds the strings to lift. False when the document goes to json_loadb as it is: it spells
 * \u0000, a string has no end, or nothing is long and plain enough. */
static bool jsonlift_scan(jsonlift *jl, size_t len)
{
    const char *t = jl->text;
    size_t i = 0;
    while (i < len) {
        const char *q = memchr(t + i, '"', len - i);
        if (!q) break;
        size_t start = (size_t)(q - t) + 1, j = start;
        bool plain = true;
        for (;;) {
            if (j >= len) return false;
            unsigned char c = (unsigned char)t[j];
            if (c == '"') break;
            if (c == '\\') {
                plain = false;
                if (j + 5 < len && t[j + 1] == 'u' && memcmp(t + j + 2, "0000", 4) == 0)
                    return false;
                j += 2;
                continue;
            }
            if (c < 0x20 || c > 0x7e) plain = false;
            j++;
        }
        i = j + 1;
        if (!plain || j - start < JSONLIFT_MIN) continue;
        size_t k = i;
        while (k < len && jsonlift_ws(t[k])) k++;
        if (k < len && t[k] == ':') continue;          /* an object key: kept */
        if (jl->n == jl->cap) {
            jl->cap = jl->cap ? 2 * jl->cap : 4;
            jl->sp = util_realloc(jl->sp, jl->cap * sizeof *jl->sp);
        }
        jl->sp[jl->n++] = (jsonlift_span){start, j - start, false};
    }
    return jl->n > 0;
}

/* The original string for stand-in s ("\0" and a number), or NULL if s is not one. */
static json_t *jsonlift_original(jsonlift *jl, const json_t *s)
{
    size_t slen = json_string_length(s);
    const char *v = json_string_value(s);
    if (slen < 2 || v[0] != '\0') return NULL;
    size_t idx = 0;
    for (size_t i = 1; i < slen; i++) {
        if (v[i] < '0' || v[i] > '9' || idx > jl->n) return NULL;
        idx = idx * 10 + (size_t)(v[i] - '0');
    }
    if (idx >= jl->n || jl->sp[idx].used) return NULL;
    jl->sp[idx].used = true;
    jl->left--;
    return json_stringn_nocheck(jl->text + jl->sp[idx].off, jl->sp[idx].len);
}

static bool jsonlift_restore(jsonlift *jl, json_t *v);

/* Member m of a container: *o gets the original to put in its place (NULL: none, m's own
 * members restored instead); false on a stand-in that is not one of ours. */
static bool jsonlift_member(jsonlift *jl, json_t *m, json_t **o)
{
    *o = NULL;
    if (!json_is_string(m)) return jsonlift_restore(jl, m);
    *o = jsonlift_original(jl, m);
    return *o || json_string_length(m) == 0 || json_string_value(m)[0] != '\0';
}

/* Puts the originals back under v; false on a stand-in that is not one of ours. */
static bool jsonlift_restore(jsonlift *jl, json_t *v)
{
    json_t *o;
    if (json_is_object(v)) {
        for (void *it = json_object_iter(v); it && jl->left; it = json_object_iter_next(v, it)) {
            if (!jsonlift_member(jl, json_object_iter_value(it), &o)) return false;
            if (o) json_object_iter_set_new(v, it, o);
        }
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v) && jl->left; i++) {
            if (!jsonlift_member(jl, json_array_get(v, i), &o)) return false;
            if (o) json_array_set_new(v, i, o);
        }
    }
    return true;
}

json_t *jsonlift_loadb(const char *text, size_t len, size_t flags, json_error_t *error)
{
    jsonlift jl = {.text = text};
    json_t *doc = NULL;
    if (!(flags & JSON_ALLOW_NUL) && jsonlift_scan(&jl, len)) {
        char *copy = util_malloc(len + 24 * jl.n);
        size_t o = 0, from = 0;
        for (size_t i = 0; i < jl.n; i++) {
            memcpy(copy + o, text + from, jl.sp[i].off - from);
            o += jl.sp[i].off - from;
            o += (size_t)sprintf(copy + o, "\\u0000%zu", i);
            from = jl.sp[i].off + jl.sp[i].len;
        }
        memcpy(copy + o, text + from, len - from);
        o += len - from;
        doc = json_loadb(copy, o, flags | JSON_ALLOW_NUL, NULL);
        free(copy);
        jl.left = jl.n;
        if (json_is_string(doc)) {          /* the document itself (JSON_DECODE_ANY) */
            json_t *o = jsonlift_original(&jl, doc);
            if (o) {
                json_decref(doc);
                doc = o;
            }
        }
        if (doc && (!jsonlift_restore(&jl, doc) || jl.left != 0)) {
            json_decref(doc);    /* cannot happen (stand-ins are unique); stay exact */
            doc = NULL;
        }
    }
    free(jl.sp);
    return doc ? doc : json_loadb(text, len, flags, error);
}
