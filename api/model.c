/* model.c — routing and input validation of the SES v2 REST surface over the tables that
 * tools/gen_sesv2_model.py generates from botocore's sesv2 model (api/sesv2_model.c).
 *
 * What it promises (api/model.h): a method and raw path match an operation's URI template
 * exactly (no trailing-slash tolerance, as AWS); `{Label}` is one non-empty segment and
 * `{Label+}` the non-empty rest, both percent-decoded (an invalid %-escape, a NUL or
 * invalid UTF-8 in a label: no match); a literal segment wins over a label when two
 * templates match. The input of an operation is one JSON object keyed by the model's member
 * names, assembled from the labels, the query string and the JSON body, and checked against
 * the input shape: unknown members, missing required members (whatever their location),
 * JSON types, enums, string lengths (characters), integer ranges (and 32-bit integers),
 * list and map sizes. Errors name the member by its path ("Content.Simple.Subject.Data",
 * "Reasons[1]", "Tags['k']"), with any bytes of the request shown escaped so an error
 * message is always printable ASCII. Bounds: JSON nesting of at most MODEL_MAX_DEPTH levels
 * (checked on the raw bytes before jansson parses them), the body only as the caller gives
 * it (the HTTP layer caps its size), list and string lengths as the model says.
 *
 * The query string: pieces separated by '&', key and value percent-decoded, '+' a literal
 * plus (SigV4 clients encode a space as %20), repeated keys make a list member's items, a
 * key that names no querystring member is an error, except SigV4's own query parameters
 * (X-Amz-*), which belong to the authentication layer. Integers, booleans and timestamps
 * are converted from text; timestamps (ISO 8601 as botocore sends them, e.g.
 * 2026-12-06T02:45:11Z, with fractional seconds or a ±hh:mm offset, or epoch seconds)
 * become epoch seconds as a JSON real, in the query and in the body alike. No operation
 * kiln answers has header-located members; such members are left to their handlers.
 *
 * Hand-written rather than taken from a library: percent-decoding and the ISO 8601 subset
 * are a few lines each, and the library versions are looser than the rules above (libcurl's
 * unescape passes invalid escapes through; strptime/timegm depend on locale and TZ). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/model.h"
#include "api/sesv2_model.h"
#include "base/jsonlift.h"
#include "base/util.h"

#define MODEL_MAX_DEPTH 32
#define MODEL_QUOTE_MAX 64    /* bytes of a request's name shown in an error */

static const model_table *const model_t = &api_sesv2_model;

/* ---- small helpers ---- */

static int model_hex(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into a new NUL-terminated string (*out_len bytes), or NULL when
 * an escape is invalid. '+' stays '+'. */
static char *model_pct_decode(const char *s, size_t n, size_t *out_len)
{
    char *out = util_malloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        int hi = i + 1 < n ? model_hex((unsigned char)s[i + 1]) : -1;
        int lo = i + 2 < n ? model_hex((unsigned char)s[i + 2]) : -1;
        if (hi < 0 || lo < 0) {
            free(out);
            return NULL;
        }
        out[o++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

/* A JSON string of s[0..n), or NULL when it holds a NUL or is not valid UTF-8. */
static json_t *model_text_json(const char *s, size_t n)
{
    if (memchr(s, '\0', n)) return NULL;
    return json_stringn(s, n);
}

/* Appends s[0..n) shown safely: printable ASCII as is, other bytes as \xHH, at most
 * MODEL_QUOTE_MAX bytes then "...". */
static void model_quote(strbuf *sb, const char *s, size_t n, size_t max)
{
    for (size_t i = 0; i < n; i++) {
        if (i == max) {
            strbuf_puts(sb, "...");
            return;
        }
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            strbuf_append(sb, &s[i], 1);
        else
            strbuf_printf(sb, "\\x%02X", c);
    }
}

static char *model_errf(const char *path, const char *fmt, const char *arg)
{
    strbuf sb;
    strbuf_init(&sb);
    strbuf_puts(&sb, path);
    strbuf_printf(&sb, fmt, arg);
    return strbuf_steal(&sb);
}

static const char *model_type_text(uint8_t type)
{
    switch (type) {
    case MODEL_STRUCTURE:
    case MODEL_MAP: return "an object";
    case MODEL_LIST: return "a list";
    case MODEL_INTEGER:
    case MODEL_LONG: return "an integer";
    case MODEL_BOOLEAN: return "a boolean";
    case MODEL_DOUBLE: return "a number";
    case MODEL_TIMESTAMP: return "a timestamp (epoch seconds or ISO 8601)";
    default: return "a string";
    }
}

static const model_member *model_members(const model_shape *s)
{
    return &model_t->members[s->first];
}

/* ---- timestamps ---- */

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; Howard Hinnant's days_from_civil). */
static int64_t model_days(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool model_digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* s (NUL-terminated, n bytes) as epoch seconds: "1765000000", "1765000000.25",
 * "2026-12-06T02:45:11Z", "2026-12-06T02:45:11.500000Z", "2026-12-06T02:45:11+01:00". */
static bool model_timestamp(const char *s, size_t n, double *out)
{
    if (strlen(s) != n || n == 0) return false;
    /* epoch seconds */
    size_t i = s[0] == '-', intd = 0, fracd = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++, intd++;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++, fracd++;
        if (fracd == 0) return false;
    }
    if (i == n && intd > 0) {
        if (intd > 12 || fracd > 9) return false;
        *out = strtod(s, NULL);
        return true;
    }
    /* ISO 8601: YYYY-MM-DDTHH:MM:SS[.f](Z|±hh:mm|±hhmm) */
    int y, mo, d, h, mi, se;
    if (n < 20 || !model_digits(s, 4, &y) || s[4] != '-' || !model_digits(s + 5, 2, &mo) ||
        s[7] != '-' || !model_digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
        !model_digits(s + 11, 2, &h) || s[13] != ':' || !model_digits(s + 14, 2, &mi) ||
        s[16] != ':' || !model_digits(s + 17, 2, &se))
        return false;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap) ||
        h > 23 || mi > 59 || se > 59)
        return false;
    double frac = 0, scale = 0.1;
    i = 19;
    if (s[i] == '.') {
        size_t f0 = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            frac += (s[i] - '0') * scale;
            scale /= 10;
            i++;
        }
        if (i == f0 || i - f0 > 9) return false;
    }
    int64_t off = 0;
    if ((s[i] == 'Z' || s[i] == 'z') && i + 1 == n) {
        off = 0;
    } else if (s[i] == '+' || s[i] == '-') {
        int oh, om;
        const char *p = s + i + 1;
        size_t rest = n - i - 1;
        if (rest == 5 && p[2] == ':' && model_digits(p, 2, &oh) && model_digits(p + 3, 2, &om)) {
        } else if (rest == 4 && model_digits(p, 2, &oh) && model_digits(p + 2, 2, &om)) {
        } else {
            return false;
        }
        if (oh > 23 || om > 59) return false;
        off = (s[i] == '-' ? -1 : 1) * (oh * 3600 + om * 60);
    } else {
        return false;
    }
    int64_t secs = model_days(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - off;
    *out = (double)secs + frac;
    return true;
}

/* ---- routing ---- */

/* Whether raw path[0..plen) matches template t; labels decoded into `labels` when given.
 * *nlabels counts the labels (fewer: more specific). */
static bool model_match_uri(const char *t, const char *path, size_t plen, json_t *labels,
                            int *nlabels)
{
    size_t p = 0;
    *nlabels = 0;
    while (*t) {
        if (*t != '{') {
            if (p >= plen || path[p] != *t) return false;
            t++, p++;
            continue;
        }
        const char *close = strchr(t, '}');
        if (!close) return false;
        size_t nlen = (size_t)(close - t - 1);
        bool greedy = nlen > 0 && t[nlen] == '+';
        const char *name = t + 1;
        if (greedy) nlen--;
        size_t end;
        if (greedy) {
            /* the rest of the path, less what the template still needs literally */
            const char *tail = close + 1;
            size_t tlen = strlen(tail);
            if (strchr(tail, '{') || plen < p + tlen || memcmp(path + plen - tlen, tail, tlen))
                return false;
            end = plen - tlen;
        } else {
            end = p;
            while (end < plen && path[end] != '/') end++;
        }
        if (end == p) return false;
        size_t dlen;
        char *v = model_pct_decode(path + p, end - p, &dlen);
        if (!v) return false;
        json_t *js = model_text_json(v, dlen);
        free(v);
        if (!js) return false;
        if (labels) {
            char *key = util_strndup(name, nlen);
            json_object_set_new(labels, key, js);
            free(key);
        } else {
            json_decref(js);
        }
        (*nlabels)++;
        p = end;
        t = close + 1;
        if (greedy) return true;   /* the tail was matched above */
    }
    return p == plen;
}

const api_model_op *api_model_match(const char *method, const char *raw_path, json_t **labels,
                                    bool *path_known)
{
    if (labels) *labels = NULL;
    if (path_known) *path_known = false;
    if (!method || !raw_path || raw_path[0] != '/') return NULL;
    size_t plen = strcspn(raw_path, "?#");
    const api_model_op *best = NULL;
    int best_labels = 0;
    bool known = false;
    for (size_t i = 0; i < model_t->nops; i++) {
        const api_model_op *op = &model_t->ops[i];
        int n;
        if (!model_match_uri(op->uri, raw_path, plen, NULL, &n)) continue;
        known = true;
        if (strcmp(op->method, method) != 0) continue;
        if (!best || n < best_labels) {
            best = op;
            best_labels = n;
        }
    }
    if (path_known) *path_known = known;
    if (best && labels) {
        int n;
        *labels = json_object();
        model_match_uri(best->uri, raw_path, plen, *labels, &n);
    }
    return best;
}

const char *api_model_op_name(const api_model_op *op)
{
    return op->name;
}

int api_model_op_status(const api_model_op *op)
{
    return op->status;
}

bool api_model_op_has_input(const api_model_op *op)
{
    return op->input != MODEL_NONE;
}

/* ---- validation ---- */

/* Appends ".name" (or "name" at the top) to path; returns the old length to restore. */
static size_t model_path_push(strbuf *path, const char *name)
{
    size_t old = path->len;
    if (old) strbuf_puts(path, ".");
    model_quote(path, name, strlen(name), MODEL_QUOTE_MAX);
    return old;
}

static void model_path_pop(strbuf *path, size_t old)
{
    path->len = old;
    path->buf[old] = '\0';
}

/* Characters of a UTF-8 string (jansson's strings are valid UTF-8). */
static size_t model_chars(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

static char *model_range_err(const char *path, const char *what, long long bound,
                             const char *unit)
{
    return util_asprintf("%s must be %s %lld%s", path, what, bound, unit);
}

static json_t *model_value(const model_shape *s, json_t *v, strbuf *path, int depth,
                           char **err);

static json_t *model_structure(const model_shape *s, json_t *v, strbuf *path, int depth,
                               char **err)
{
    const model_member *ms = model_members(s);
    json_t *out = json_object();
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val) {
        const model_member *m = NULL;
        for (uint16_t i = 0; i < s->count && !m; i++)
            if (ms[i].location == MODEL_LOC_BODY && strcmp(ms[i].name, key) == 0) m = &ms[i];
        if (!m) {
            strbuf sb;
            strbuf_init(&sb);
            strbuf_puts(&sb, "Unknown field '");
            model_quote(&sb, key, strlen(key), MODEL_QUOTE_MAX);
            strbuf_puts(&sb, "'");
            if (path->len) strbuf_printf(&sb, " in %s", path->buf);
            *err = strbuf_steal(&sb);
            json_decref(out);
            return NULL;
        }
        if (json_is_null(val)) continue;   /* rest-json: null is "not set" */
        size_t old = model_path_push(path, key);
        json_t *cv = model_value(&model_t->shapes[m->shape], val, path, depth + 1, err);
        model_path_pop(path, old);
        if (!cv) {
            json_decref(out);
            return NULL;
        }
        json_object_set_new(out, m->name, cv);
    }
    for (uint16_t i = 0; i < s->count; i++) {
        if (!ms[i].required || ms[i].location != MODEL_LOC_BODY) continue;
        if (json_object_get(out, ms[i].name)) continue;
        size_t old = model_path_push(path, ms[i].name);
        *err = util_asprintf("Missing required field %s", path->buf);
        model_path_pop(path, old);
        json_decref(out);
        return NULL;
    }
    return out;
}

static bool model_count_ok(const model_shape *s, size_t n, const char *path, char **err)
{
    if (s->has_max && (long long)n > s->max) {
        *err = model_range_err(path, "at most", s->max, " items long");
        return false;
    }
    if (s->has_min && (long long)n < s->min) {
        *err = model_range_err(path, "at least", s->min, " items long");
        return false;
    }
    return true;
}

static json_t *model_list(const model_shape *s, json_t *v, strbuf *path, int depth, char **err)
{
    if (!model_count_ok(s, json_array_size(v), path->buf, err)) return NULL;
    json_t *out = json_array();
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item) {
        size_t old = path->len;
        strbuf_printf(path, "[%zu]", i);
        json_t *cv = model_value(&model_t->shapes[s->member], item, path, depth + 1, err);
        model_path_pop(path, old);
        if (!cv) {
            json_decref(out);
            return NULL;
        }
        json_array_append_new(out, cv);
    }
    return out;
}

static json_t *model_map(const model_shape *s, json_t *v, strbuf *path, int depth, char **err)
{
    if (!model_count_ok(s, json_object_size(v), path->buf, err)) return NULL;
    json_t *out = json_object();
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val) {
        size_t old = path->len;
        strbuf_puts(path, "['");
        model_quote(path, key, strlen(key), MODEL_QUOTE_MAX);
        strbuf_puts(path, "']");
        json_t *k = json_string(key);
        size_t kold = path->len;
        strbuf_puts(path, " key");
        json_t *ck = model_value(&model_t->shapes[s->member], k, path, depth + 1, err);
        model_path_pop(path, kold);
        json_decref(k);
        json_t *cv = ck ? model_value(&model_t->shapes[s->value], val, path, depth + 1, err)
                        : NULL;
        model_path_pop(path, old);
        json_decref(ck);
        if (!cv) {
            json_decref(out);
            return NULL;
        }
        json_object_set_new(out, key, cv);
    }
    return out;
}

static json_t *model_string(const model_shape *s, json_t *v, const char *path, char **err)
{
    const char *str = json_string_value(v);
    size_t n = json_string_length(v);
    if (s->count) {
        for (uint16_t i = 0; i < s->count; i++)
            if (strlen(model_t->enums[s->first + i]) == n &&
                memcmp(model_t->enums[s->first + i], str, n) == 0)
                return json_incref(v);
        strbuf sb;
        strbuf_init(&sb);
        strbuf_printf(&sb, "%s must be one of ", path);
        for (uint16_t i = 0; i < s->count; i++)
            strbuf_printf(&sb, "%s%s", i ? ", " : "", model_t->enums[s->first + i]);
        *err = strbuf_steal(&sb);
        return NULL;
    }
    size_t chars = model_chars(str, n);
    if (s->has_min && (long long)chars < s->min) {
        *err = model_range_err(path, "at least", s->min, " characters long");
        return NULL;
    }
    if (s->has_max && (long long)chars > s->max) {
        *err = model_range_err(path, "at most", s->max, " characters long");
        return NULL;
    }
    return json_incref(v);
}

static json_t *model_integer(const model_shape *s, json_t *v, const char *path, char **err)
{
    long long x = json_integer_value(v);
    long long lo = s->type == MODEL_INTEGER ? INT32_MIN : INT64_MIN;
    long long hi = s->type == MODEL_INTEGER ? INT32_MAX : INT64_MAX;
    if (s->has_min && s->min > lo) lo = s->min;
    if (s->has_max && s->max < hi) hi = s->max;
    if (x < lo) {
        *err = model_range_err(path, "at least", lo, "");
        return NULL;
    }
    if (x > hi) {
        *err = model_range_err(path, "at most", hi, "");
        return NULL;
    }
    return json_incref(v);
}

/* v checked against shape s: a new value (structures, lists and maps rebuilt with only
 * their known members; timestamps as epoch seconds), or NULL with *err. */
static json_t *model_value(const model_shape *s, json_t *v, strbuf *path, int depth,
                           char **err)
{
    if (depth > MODEL_MAX_DEPTH) {
        *err = util_asprintf("%s nests deeper than %d levels", path->buf, MODEL_MAX_DEPTH);
        return NULL;
    }
    bool ok;
    switch (s->type) {
    case MODEL_STRUCTURE:
    case MODEL_MAP: ok = json_is_object(v); break;
    case MODEL_LIST: ok = json_is_array(v); break;
    case MODEL_INTEGER:
    case MODEL_LONG: ok = json_is_integer(v); break;
    case MODEL_BOOLEAN: ok = json_is_boolean(v); break;
    case MODEL_DOUBLE: ok = json_is_number(v); break;
    case MODEL_TIMESTAMP: ok = json_is_number(v) || json_is_string(v); break;
    default: ok = json_is_string(v); break;
    }
    if (!ok) {
        *err = model_errf(path->buf, " must be %s", model_type_text(s->type));
        return NULL;
    }
    switch (s->type) {
    case MODEL_STRUCTURE: return model_structure(s, v, path, depth, err);
    case MODEL_LIST: return model_list(s, v, path, depth, err);
    case MODEL_MAP: return model_map(s, v, path, depth, err);
    case MODEL_STRING: return model_string(s, v, path->buf, err);
    case MODEL_INTEGER:
    case MODEL_LONG: return model_integer(s, v, path->buf, err);
    case MODEL_DOUBLE: return json_real(json_number_value(v));
    case MODEL_TIMESTAMP: {
        double t;
        if (json_is_number(v)) return json_real(json_number_value(v));
        if (model_timestamp(json_string_value(v), json_string_length(v), &t)) return json_real(t);
        *err = model_errf(path->buf, " must be %s", model_type_text(s->type));
        return NULL;
    }
    default: return json_incref(v);   /* boolean; blob (base64, decoded by the caller) */
    }
}

/* A label or query value (decoded text) as shape s wants it, checked: a new value, or NULL
 * with *err. */
static json_t *model_from_text(const model_shape *s, const char *text, size_t n, strbuf *path,
                               char **err)
{
    json_t *v = NULL;
    switch (s->type) {
    case MODEL_STRING:
    case MODEL_BLOB:
    case MODEL_TIMESTAMP:
        v = model_text_json(text, n);
        if (!v) {
            *err = model_errf(path->buf, " must be %s", "valid UTF-8 without NUL");
            return NULL;
        }
        break;
    case MODEL_INTEGER:
    case MODEL_LONG: {
        long long x;
        if (strspn(text + (text[0] == '-'), "0123456789") != n - (text[0] == '-') ||
            n == (size_t)(text[0] == '-') || !util_parse_ll(text, INT64_MIN, INT64_MAX, &x)) {
            *err = model_errf(path->buf, " must be %s", "an integer");
            return NULL;
        }
        v = json_integer(x);
        break;
    }
    case MODEL_BOOLEAN:
        if (strcmp(text, "true") != 0 && strcmp(text, "false") != 0) {
            *err = model_errf(path->buf, " must be %s", "a boolean (true or false)");
            return NULL;
        }
        v = json_boolean(text[0] == 't');
        break;
    case MODEL_DOUBLE: {
        double x;
        if (n == 0 || strspn(text, "0123456789.eE+-") != n || !(text[0] == '-' ||
            text[0] == '.' || (text[0] >= '0' && text[0] <= '9')) ||
            !util_parse_double(text, -1e308, 1e308, &x)) {
            *err = model_errf(path->buf, " must be %s", "a number");
            return NULL;
        }
        v = json_real(x);
        break;
    }
    default:
        *err = model_errf(path->buf, " cannot be given in the %s", "URI or query string");
        return NULL;
    }
    json_t *cv = model_value(s, v, path, 0, err);
    json_decref(v);
    return cv;
}

/* The query string's members into out. */
static bool model_query(const model_shape *in, const char *q, json_t *out, char **err)
{
    const model_member *ms = model_members(in);
    while (q && *q) {
        size_t plen = strcspn(q, "&");
        const char *piece = q;
        q += plen + (q[plen] == '&');
        if (plen == 0) continue;
        const char *eq = memchr(piece, '=', plen);
        size_t klen = eq ? (size_t)(eq - piece) : plen;
        size_t dk, dv;
        char *key = model_pct_decode(piece, klen, &dk);
        char *val = key ? model_pct_decode(eq ? eq + 1 : "", eq ? plen - klen - 1 : 0, &dv)
                        : NULL;
        if (!val) {
            strbuf sb;
            strbuf_init(&sb);
            strbuf_puts(&sb, "Invalid percent-encoding in query parameter '");
            model_quote(&sb, piece, plen, MODEL_QUOTE_MAX);
            strbuf_puts(&sb, "'");
            *err = strbuf_steal(&sb);
            free(key);
            return false;
        }
        if (strncasecmp(key, "X-Amz-", 6) == 0) {   /* SigV4 query authentication's */
            free(key);
            free(val);
            continue;
        }
        const model_member *m = NULL;
        for (uint16_t i = 0; i < in->count && !m; i++)
            if (ms[i].location == MODEL_LOC_QUERY && strlen(ms[i].location_name) == dk &&
                memcmp(ms[i].location_name, key, dk) == 0)
                m = &ms[i];
        if (!m) {
            strbuf sb;
            strbuf_init(&sb);
            strbuf_puts(&sb, "Unknown query parameter '");
            model_quote(&sb, key, dk, MODEL_QUOTE_MAX);
            strbuf_puts(&sb, "'");
            *err = strbuf_steal(&sb);
            free(key);
            free(val);
            return false;
        }
        free(key);
        const model_shape *s = &model_t->shapes[m->shape];
        strbuf path;
        strbuf_init(&path);
        strbuf_puts(&path, m->name);
        json_t *cur = json_object_get(out, m->name);
        json_t *cv = NULL;
        if (s->type == MODEL_LIST) {
            size_t n = cur ? json_array_size(cur) : 0;
            if (model_count_ok(s, n + 1, path.buf, err)) {
                strbuf_printf(&path, "[%zu]", n);
                cv = model_from_text(&model_t->shapes[s->member], val, dv, &path, err);
            }
            if (cv && !cur) json_object_set_new(out, m->name, cur = json_array());
            if (cv) json_array_append_new(cur, cv);
        } else if (cur) {
            *err = util_asprintf("Query parameter '%s' is given more than once",
                                 m->location_name);
        } else {
            cv = model_from_text(s, val, dv, &path, err);
            if (cv) json_object_set_new(out, m->name, cv);
        }
        strbuf_free(&path);
        free(val);
        if (!cv) return false;
    }
    return true;
}

/* Whether the JSON text nests deeper than MODEL_MAX_DEPTH (counted outside strings), so that
 * the parser never recurses further than that. */
static bool model_too_deep(const char *b, size_t n)
{
    int depth = 0;
    for (size_t i = 0; i < n; i++) {
        char c = b[i];
        if (c == '"') {
            /* a string: to its closing quote, escapes skipped (memchr: a 1 KB base64 value
             * is passed over in a few steps, not character by character) */
            for (i++; i < n; i++) {
                const char *q = memchr(b + i, '"', n - i);
                size_t end = q ? (size_t)(q - b) : n;
                const char *bs = memchr(b + i, '\\', end - i);
                if (!bs) {
                    i = end;
                    break;
                }
                i = (size_t)(bs - b) + 1;           /* the escaped character */
            }
        } else if (c == '{' || c == '[') {
            if (++depth > MODEL_MAX_DEPTH) return true;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return false;
}

static json_t *model_body(const model_shape *in, const char *body, size_t len, char **err)
{
    json_t *doc;
    if (len == 0) {
        doc = json_object();
    } else {
        if (model_too_deep(body, len)) {
            *err = util_asprintf("Request body nests deeper than %d levels", MODEL_MAX_DEPTH);
            return NULL;
        }
        json_error_t je;
        doc = jsonlift_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
        if (!doc) {
            strbuf sb;
            strbuf_init(&sb);
            strbuf_puts(&sb, "Request body is not valid JSON: ");
            model_quote(&sb, je.text, strlen(je.text), sizeof je.text);
            strbuf_printf(&sb, " at line %d column %d", je.line, je.column);
            *err = strbuf_steal(&sb);
            return NULL;
        }
    }
    if (!json_is_object(doc)) {
        *err = util_strdup("Request body must be a JSON object");
        json_decref(doc);
        return NULL;
    }
    strbuf path;
    strbuf_init(&path);
    json_t *out = model_structure(in, doc, &path, 1, err);
    strbuf_free(&path);
    json_decref(doc);
    return out;
}

json_t *api_model_input(const api_model_op *op, json_t *labels, const char *raw_query,
                        const char *body, size_t body_len, char **err)
{
    *err = NULL;
    if (!op || op->input == MODEL_NONE) {
        *err = util_asprintf("%s has no input shape in kiln's model", op ? op->name : "?");
        return NULL;
    }
    const model_shape *in = &model_t->shapes[op->input];
    const model_member *ms = model_members(in);
    json_t *out = json_object();
    bool has_body = false;

    for (uint16_t i = 0; i < in->count; i++) {
        has_body |= ms[i].location == MODEL_LOC_BODY;
        if (ms[i].location != MODEL_LOC_URI) continue;
        json_t *lv = labels ? json_object_get(labels, ms[i].location_name) : NULL;
        if (!lv) continue;
        strbuf path;
        strbuf_init(&path);
        strbuf_puts(&path, ms[i].name);
        json_t *cv = json_is_string(lv)
                         ? model_from_text(&model_t->shapes[ms[i].shape], json_string_value(lv),
                                           json_string_length(lv), &path, err)
                         : NULL;
        if (!cv && !*err) *err = util_asprintf("%s must be a string", ms[i].name);
        strbuf_free(&path);
        if (!cv) goto fail;
        json_object_set_new(out, ms[i].name, cv);
    }
    if (!model_query(in, raw_query, out, err)) goto fail;
    if (has_body) {
        json_t *b = model_body(in, body, body ? body_len : 0, err);
        if (!b) goto fail;
        json_object_update(out, b);   /* body members' names never collide with the rest */
        json_decref(b);
    }
    for (uint16_t i = 0; i < in->count; i++) {
        if (ms[i].required && !json_object_get(out, ms[i].name)) {
            *err = util_asprintf("Missing required field %s", ms[i].name);
            goto fail;
        }
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}
