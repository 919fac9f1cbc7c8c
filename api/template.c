/* template.c — SES email templates (api/template.h): the Handlebars subset SES documents,
 * parsed once into a flat list of nodes, then rendered over the TemplateData.
 *
 * The language: text; {{path}}, {{ path }}, {{{path}}} and {{&path}} (all the same: SES
 * never escapes HTML); paths of [A-Za-z0-9_-] segments joined by '.', "this" and
 * "this.a.b", a numeric segment indexing an array ("items.0"), and inside {{#each}} the
 * data variables @index, @key, @first, @last; blocks {{#if p}}, {{#unless p}} and
 * {{#each p}} (over an array's items or an object's values), each with an optional
 * {{else}} or a chained {{else if p}} / {{else unless p}} / {{else each p}} closed by the
 * first block's {{/name}}; comments {{! ... }} and {{!-- ... --}}; "\{{" writes "{{".
 * Anything else between braces (partials, helpers with arguments, "../") is a syntax
 * error that says so.
 *
 * Semantics, as Handlebars (and as SES through it): a name is looked up in the innermost
 * {{#each}} item first and then outward to the data's top (the Java implementation's
 * context stack); "this" is the innermost item only. Printed: strings verbatim, integers
 * and booleans as JSON writes them, reals in their shortest form that reads back the same
 * ("1.5", "0.1", "3.0"), null as nothing. A name not present anywhere is the error SES
 * reports ("Attribute 'name' is not present in the rendering data."); an object or array
 * printed is an error too (Handlebars.js would write "[object Object]", which no one wants
 * in a mail). {{#if}} is false for a missing name, null, false, "", 0 and an empty array.
 *
 * Bounded: blocks nest at most 16 deep (chained else-blocks count), the output is at most
 * max bytes, and rendering takes at most 1,000,000 + max steps (a node or an iteration
 * each), so nested {{#each}} over big arrays with little text cannot spin. */
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/template.h"
#include "base/util.h"

#define TEMPLATE_DEPTH_MAX 16
#define TEMPLATE_STEPS_BASE 1000000

typedef enum { TN_TEXT, TN_VAR, TN_IF, TN_UNLESS, TN_EACH } tn_kind;

typedef struct tn {
    tn_kind kind;
    size_t off;               /* where its tag starts in the template */
    const char *s;            /* TEXT: the text; VAR and blocks: the path */
    size_t n;
    size_t else_at;           /* blocks: first node of the else branch (== end: none) */
    size_t end;               /* blocks: first node after the block */
    bool chained;             /* opened by {{else KIND p}}: closed with its parent */
} tn;

typedef struct tparse {
    tn *nodes;
    size_t n, cap;
} tparse;

static const char *const template_kw[] = {"", "", "if", "unless", "each"};

static int template_syntax(char **err, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int template_syntax(char **err, size_t off, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *what = util_vasprintf(fmt, ap);
    va_end(ap);
    if (err) *err = util_asprintf("Template syntax error at offset %zu: %s", off, what);
    free(what);
    return -1;
}

static size_t template_add(tparse *p, tn_kind kind, size_t off, const char *s, size_t n)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 16;
        p->nodes = util_realloc(p->nodes, p->cap * sizeof *p->nodes);
    }
    tn *t = &p->nodes[p->n];
    memset(t, 0, sizeof *t);
    t->kind = kind;
    t->off = off;
    t->s = s;
    t->n = n;
    return p->n++;
}

static bool template_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool template_segchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

/* A path: "this", "this.a.b", "a.b.c", or a data variable; in_each: inside {{#each}}. */
static int template_path_ok(const char *s, size_t n, size_t off, bool in_each, char **err)
{
    if (n > 0 && s[0] == '@') {
        static const char *const vars[] = {"@index", "@key", "@first", "@last"};
        for (size_t i = 0; i < 4; i++) {
            if (strlen(vars[i]) == n && memcmp(vars[i], s, n) == 0) {
                if (in_each) return 0;
                return template_syntax(err, off, "%.*s outside {{#each}}", (int)n, s);
            }
        }
        return template_syntax(err, off, "unknown data variable '%.*s'", (int)n, s);
    }
    if (n >= 2 && s[0] == '.' && (s[1] == '.' || s[1] == '/'))
        return template_syntax(err, off, "parent paths ('%.*s') are not supported", (int)n, s);
    size_t seg = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            if (seg == 0) break;
            seg = 0;
            if (i == n) return 0;
            continue;
        }
        if (!template_segchar(s[i])) break;
        seg++;
    }
    return template_syntax(err, off, "'%.*s' is not an attribute name", (int)(n > 60 ? 60 : n), s);
}

/* The inner text of a tag [b, e) split into its first word and the rest (trimmed). */
static void template_words(const char *s, size_t b, size_t e, size_t *w1, size_t *w1e,
                           size_t *rest)
{
    while (b < e && template_blank(s[b])) b++;
    *w1 = b;
    while (b < e && !template_blank(s[b])) b++;
    *w1e = b;
    while (b < e && template_blank(s[b])) b++;
    *rest = b;
}

static bool template_is(const char *s, size_t b, size_t e, const char *word)
{
    return e - b == strlen(word) && memcmp(s + b, word, e - b) == 0;
}

/* "KIND path" of a block tag: the kind, and the path checked. -1 with *err otherwise. */
static int template_block_head(const char *t, size_t b, size_t e, size_t off, bool in_each,
                               tn_kind *kind, size_t *pb, size_t *pe, char **err)
{
    size_t w, we, r;
    template_words(t, b, e, &w, &we, &r);
    if (template_is(t, w, we, "if")) *kind = TN_IF;
    else if (template_is(t, w, we, "unless")) *kind = TN_UNLESS;
    else if (template_is(t, w, we, "each")) *kind = TN_EACH;
    else if (we > w && t[w] == '*')
        return template_syntax(err, off, "inline partials are not supported");
    else
        return template_syntax(err, off, "unknown block helper '%.*s'",
                               (int)(we - w > 40 ? 40 : we - w), t + w);
    size_t p, pend, r2;
    template_words(t, r, e, &p, &pend, &r2);
    if (pend == p)
        return template_syntax(err, off, "{{#%s}} needs an attribute", template_kw[*kind]);
    if (r2 < e)
        return template_syntax(err, off, "{{#%s}} takes one attribute", template_kw[*kind]);
    *pb = p;
    *pe = pend;
    /* the block's own path is looked up outside it, so @-variables need an outer each */
    return template_path_ok(t + p, pend - p, off, in_each, err);
}

typedef struct tstack {
    size_t idx[TEMPLATE_DEPTH_MAX];
    int n;
    int eaches;               /* how many of them are {{#each}} */
} tstack;

static int template_push(tparse *p, tstack *st, tn_kind kind, size_t off, const char *path,
                         size_t plen, bool chained, char **err)
{
    if (st->n == TEMPLATE_DEPTH_MAX)
        return template_syntax(err, off, "blocks nested more than %d deep", TEMPLATE_DEPTH_MAX);
    size_t i = template_add(p, kind, off, path, plen);
    p->nodes[i].chained = chained;
    st->idx[st->n++] = i;
    st->eaches += kind == TN_EACH;
    return 0;
}

/* One tag, inner text t[b, e) at off (the "{{"); triple: it was {{{ }}}. */
static int template_tag(tparse *p, tstack *st, const char *t, size_t b, size_t e, size_t off,
                        bool triple, char **err)
{
    while (b < e && template_blank(t[b])) b++;
    while (e > b && template_blank(t[e - 1])) e--;
    if (b == e) return template_syntax(err, off, "empty {{}}");
    char c = t[b];
    bool in_each = st->eaches > 0;
    if (!triple && (c == '#' || c == '/' || c == '>' || c == '^')) {
        if (c == '>') return template_syntax(err, off, "partials are not supported");
        if (c == '^') return template_syntax(err, off, "inverse sections are not supported");
        if (c == '#') {
            tn_kind kind;
            size_t pb, pe;
            if (template_block_head(t, b + 1, e, off, in_each, &kind, &pb, &pe, err) != 0)
                return -1;
            return template_push(p, st, kind, off, t + pb, pe - pb, false, err);
        }
        size_t w, we, r;
        template_words(t, b + 1, e, &w, &we, &r);
        if (st->n == 0)
            return template_syntax(err, off, "{{/%.*s}} closes no block",
                                   (int)(we - w > 40 ? 40 : we - w), t + w);
        /* the first of a chain names the block */
        int top = st->n - 1;
        while (top > 0 && p->nodes[st->idx[top]].chained) top--;
        tn *open = &p->nodes[st->idx[top]];
        if (!template_is(t, w, we, template_kw[open->kind]) || r < e)
            return template_syntax(err, off, "{{/%.*s}} does not close the {{#%s}} at offset %zu",
                                   (int)(we - w > 40 ? 40 : we - w), t + w,
                                   template_kw[open->kind], open->off);
        while (st->n > top) {
            tn *x = &p->nodes[st->idx[--st->n]];
            st->eaches -= x->kind == TN_EACH;
            x->end = p->n;
            if (x->else_at == 0) x->else_at = p->n;
        }
        return 0;
    }
    size_t w, we, r;
    template_words(t, b, e, &w, &we, &r);
    if (!triple && template_is(t, w, we, "else")) {
        if (st->n == 0) return template_syntax(err, off, "{{else}} outside a block");
        tn *open = &p->nodes[st->idx[st->n - 1]];
        if (open->else_at != 0)
            return template_syntax(err, off, "a second {{else}} in the {{#%s}} at offset %zu",
                                   template_kw[open->kind], open->off);
        open->else_at = p->n;
        if (r == e) return 0;
        /* {{else if x}}: a block of its own inside the else branch, closed with this one */
        tn_kind kind;
        size_t pb, pe;
        bool outer_each = st->eaches - (open->kind == TN_EACH) > 0;
        if (template_block_head(t, r, e, off, outer_each, &kind, &pb, &pe, err) != 0) return -1;
        return template_push(p, st, kind, off, t + pb, pe - pb, true, err);
    }
    if (!triple && c == '&') template_words(t, b + 1, e, &w, &we, &r);
    if (r < e)
        return template_syntax(err, off, "helpers are not supported ('%.*s')",
                               (int)(e - b > 40 ? 40 : e - b), t + b);
    if (template_path_ok(t + w, we - w, off, in_each, err) != 0) return -1;
    template_add(p, TN_VAR, off, t + w, we - w);
    return 0;
}

/* The first occurrence of marker a ("{{", "}}", "--}}") in t[from..n), or NULL. memchr-based: strstr would look at the whole rest of the template on each call
 * under ASan's interceptor, which made parsing a 500 KB template quadratic there. */
static const char *template_find(const char *t, size_t from, size_t n, const char *a)
{
    size_t la = strlen(a);
    while (from + la <= n) {
        const char *c = memchr(t + from, a[0], n - from - la + 1);
        if (!c) return NULL;
        if (memcmp(c, a, la) == 0) return c;
        from = (size_t)(c - t) + 1;
    }
    return NULL;
}

static int template_parse(const char *t, tparse *p, char **err)
{
    memset(p, 0, sizeof *p);
    tstack st;
    memset(&st, 0, sizeof st);
    size_t n = strlen(t), pos = 0, text = 0;   /* text: where the pending text starts */
    while (pos < n) {
        const char *o = template_find(t, pos, n, "{{");
        if (!o) break;
        size_t at = (size_t)(o - t);
        if (at > text && t[at - 1] == '\\') {
            /* "\{{": the text so far without the backslash; "{{" starts the next text */
            if (at - 1 > text) template_add(p, TN_TEXT, text, t + text, at - 1 - text);
            text = at;
            pos = at + 2;
            continue;
        }
        if (at > text) template_add(p, TN_TEXT, text, t + text, at - text);
        int rc;
        size_t next;
        if (strncmp(o, "{{!--", 5) == 0 || strncmp(o, "{{!", 3) == 0) {
            bool longc = strncmp(o, "{{!--", 5) == 0;
            const char *c = template_find(t, at + (longc ? 5 : 3), n, longc ? "--}}" : "}}");
            if (!c) {
                rc = template_syntax(err, at, "unclosed comment");
                goto fail;
            }
            next = (size_t)(c - t) + (longc ? 4 : 2);
        } else {
            bool triple = o[2] == '{';
            size_t b = at + (triple ? 3 : 2);
            const char *c = template_find(t, b, n, "}}");
            if (!c || (triple && c[2] != '}')) {
                rc = template_syntax(err, at, "unclosed %s", triple ? "{{{" : "{{");
                goto fail;
            }
            rc = template_tag(p, &st, t, b, (size_t)(c - t), at, triple, err);
            if (rc != 0) goto fail;
            next = (size_t)(c - t) + (triple ? 3 : 2);
        }
        pos = text = next;
    }
    if (n > text) template_add(p, TN_TEXT, text, t + text, n - text);
    if (st.n > 0) {
        int top = st.n - 1;
        while (top > 0 && p->nodes[st.idx[top]].chained) top--;
        tn *open = &p->nodes[st.idx[top]];
        template_syntax(err, open->off, "unclosed {{#%s}}", template_kw[open->kind]);
        goto fail;
    }
    return 0;
fail:
    free(p->nodes);
    p->nodes = NULL;
    return -1;
}

int template_check(const char *tmpl, char **err)
{
    tparse p;
    if (template_parse(tmpl, &p, err) != 0) return -1;
    free(p.nodes);
    return 0;
}

/* ------------------------------------------------------------------ rendering */

typedef struct tframe {
    const json_t *ctx;
    size_t index, count;
    const char *key;          /* the key of an object's value, else NULL */
} tframe;

typedef struct trender {
    const tparse *p;
    strbuf out;
    size_t max;
    size_t steps, steps_max;
    tframe frames[TEMPLATE_DEPTH_MAX + 1];
    int nframes;
    char *err;
} trender;

/* What a path names: a JSON value, or one of each's data variables. */
typedef struct tvalue {
    enum { TV_MISSING, TV_JSON, TV_INT, TV_BOOL, TV_STR } type;
    const json_t *j;
    long long i;
    const char *s;
} tvalue;

static tvalue template_lookup(const trender *r, const char *s, size_t n)
{
    tvalue v = {.type = TV_MISSING};
    if (s[0] == '@') {
        const tframe *f = &r->frames[r->nframes - 1];
        if (n == 6 && memcmp(s, "@index", 6) == 0) v.type = TV_INT, v.i = (long long)f->index;
        else if (n == 6) v.type = TV_BOOL, v.i = f->index == 0;                 /* @first */
        else if (n == 5) v.type = TV_BOOL, v.i = f->index + 1 == f->count;      /* @last */
        else if (f->key) v.type = TV_STR, v.s = f->key;                         /* @key */
        else v.type = TV_INT, v.i = (long long)f->index;
        return v;
    }
    const json_t *cur = NULL;
    size_t i = 0;
    size_t seg = 0;
    while (seg < n && s[seg] != '.') seg++;
    if (seg == 4 && memcmp(s, "this", 4) == 0) {
        cur = r->frames[r->nframes - 1].ctx;
        i = seg < n ? seg + 1 : n;
    } else {
        for (int f = r->nframes - 1; f >= 0 && !cur; f--)
            if (json_is_object(r->frames[f].ctx))
                cur = json_object_getn(r->frames[f].ctx, s, seg);
        if (!cur) return v;
        i = seg < n ? seg + 1 : n;
    }
    while (i < n && cur) {
        size_t e = i;
        while (e < n && s[e] != '.') e++;
        if (json_is_object(cur)) {
            cur = json_object_getn(cur, s + i, e - i);
        } else if (json_is_array(cur) && s[i] >= '0' && s[i] <= '9' && e - i < 10) {
            size_t k = 0;
            for (size_t c = i; c < e && cur; c++) {
                if (s[c] < '0' || s[c] > '9') cur = NULL;
                else k = k * 10 + (size_t)(s[c] - '0');
            }
            if (cur) cur = json_array_get(cur, k);
        } else {
            cur = NULL;
        }
        i = e + 1;
    }
    if (cur) v.type = TV_JSON, v.j = cur;
    return v;
}

static bool template_truthy(tvalue v)
{
    switch (v.type) {
    case TV_MISSING: return false;
    case TV_INT: case TV_BOOL: return v.i != 0;
    case TV_STR: return v.s[0] != '\0';
    case TV_JSON: break;
    }
    switch (json_typeof(v.j)) {
    case JSON_OBJECT: return true;
    case JSON_ARRAY: return json_array_size(v.j) > 0;
    case JSON_STRING: return json_string_length(v.j) > 0;
    case JSON_INTEGER: return json_integer_value(v.j) != 0;
    case JSON_REAL: return json_real_value(v.j) != 0.0;
    case JSON_TRUE: return true;
    default: return false;
    }
}

static int template_emit(trender *r, const char *s, size_t n)
{
    if (n > r->max - r->out.len) {
        r->err = util_asprintf("Rendered template is larger than %zu bytes", r->max);
        return -1;
    }
    strbuf_append(&r->out, s, n);
    return 0;
}

/* A real in its shortest form that reads back the same, with ".0" when it looks whole. */
static void template_real(double d, char out[40])
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, 40, "%.*g", prec, d);
        if (strtod(out, NULL) == d) break;
    }
    if (!strpbrk(out, ".eEn")) strcat(out, ".0");   /* 'n': inf and nan stay as they are */
}

static int template_print(trender *r, const tn *t)
{
    tvalue v = template_lookup(r, t->s, t->n);
    char buf[40];
    switch (v.type) {
    case TV_MISSING:
        r->err = util_asprintf("Attribute '%.*s' is not present in the rendering data.",
                               (int)t->n, t->s);
        return -1;
    case TV_INT:
        snprintf(buf, sizeof buf, "%lld", v.i);
        return template_emit(r, buf, strlen(buf));
    case TV_BOOL:
        return template_emit(r, v.i ? "true" : "false", v.i ? 4 : 5);
    case TV_STR:
        return template_emit(r, v.s, strlen(v.s));
    case TV_JSON:
        break;
    }
    switch (json_typeof(v.j)) {
    case JSON_STRING:
        return template_emit(r, json_string_value(v.j), json_string_length(v.j));
    case JSON_INTEGER:
        snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v.j));
        return template_emit(r, buf, strlen(buf));
    case JSON_REAL:
        template_real(json_real_value(v.j), buf);
        return template_emit(r, buf, strlen(buf));
    case JSON_TRUE: return template_emit(r, "true", 4);
    case JSON_FALSE: return template_emit(r, "false", 5);
    case JSON_NULL: return 0;
    default:
        r->err = util_asprintf("Attribute '%.*s' is %s, which cannot be printed.", (int)t->n,
                               t->s, json_is_object(v.j) ? "an object" : "an array");
        return -1;
    }
}

static int template_range(trender *r, size_t a, size_t b);

static int template_step(trender *r)
{
    if (++r->steps <= r->steps_max) return 0;
    r->err = util_asprintf("Rendering the template takes more than %zu steps", r->steps_max);
    return -1;
}

static int template_each(trender *r, const tn *t, size_t body, tvalue v)
{
    size_t count = 0;
    if (v.type == TV_JSON && json_is_array(v.j)) count = json_array_size(v.j);
    else if (v.type == TV_JSON && json_is_object(v.j)) count = json_object_size(v.j);
    if (count == 0) return template_range(r, t->else_at, t->end);
    tframe *f = &r->frames[r->nframes++];
    f->count = count;
    f->index = 0;
    int rc = 0;
    if (json_is_array(v.j)) {
        for (; f->index < count && rc == 0; f->index++) {
            f->ctx = json_array_get(v.j, f->index);
            f->key = NULL;
            rc = template_step(r);
            if (rc == 0) rc = template_range(r, body, t->else_at);
        }
    } else {
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)v.j, key, val) {
            f->ctx = val;
            f->key = key;
            rc = template_step(r);
            if (rc == 0) rc = template_range(r, body, t->else_at);
            if (rc != 0) break;
            f->index++;
        }
    }
    r->nframes--;
    return rc;
}

static int template_range(trender *r, size_t a, size_t b)
{
    for (size_t i = a; i < b;) {
        const tn *t = &r->p->nodes[i];
        if (template_step(r) != 0) return -1;
        int rc = 0;
        switch (t->kind) {
        case TN_TEXT:
            rc = template_emit(r, t->s, t->n);
            i++;
            break;
        case TN_VAR:
            rc = template_print(r, t);
            i++;
            break;
        case TN_IF:
        case TN_UNLESS: {
            bool yes = template_truthy(template_lookup(r, t->s, t->n)) == (t->kind == TN_IF);
            rc = yes ? template_range(r, i + 1, t->else_at) : template_range(r, t->else_at, t->end);
            i = t->end;
            break;
        }
        case TN_EACH:
            rc = template_each(r, t, i + 1, template_lookup(r, t->s, t->n));
            i = t->end;
            break;
        }
        if (rc != 0) return -1;
    }
    return 0;
}

char *template_render(const char *tmpl, const struct json_t *data, size_t max, char **err)
{
    trender r;
    memset(&r, 0, sizeof r);
    tparse p;
    if (template_parse(tmpl, &p, err) != 0) return NULL;
    r.p = &p;
    r.max = max;
    r.steps_max = max > (size_t)-1 - TEMPLATE_STEPS_BASE ? (size_t)-1 : TEMPLATE_STEPS_BASE + max;
    r.frames[0].ctx = data;
    r.nframes = 1;
    strbuf_init(&r.out);
    strbuf_append(&r.out, "", 0);
    int rc = template_range(&r, 0, p.n);
    free(p.nodes);
    if (rc != 0) {
        strbuf_free(&r.out);
        if (err) *err = r.err;
        else free(r.err);
        return NULL;
    }
    return strbuf_steal(&r.out);
}
