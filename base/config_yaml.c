/* config_yaml.c — the YAML walker under kiln's configuration: reads the one document of a
 * config file with libyaml's document API (yaml_parser_load), so every node keeps its line,
 * and gives the section readers of config.c typed access to its nodes.
 *
 * Promises: a key-path stack ("configuration_sets[1].events[0]") follows the walk, and the
 * first error wins and reads "FILE:LINE: KEY.PATH: what is wrong"; unknown keys (with the
 * allowed ones listed), duplicate keys and wrong node kinds (map / list / single value) are
 * errors; numbers must be unquoted; every reader returns 0 on success and -1 after
 * recording the error. Nothing here knows kiln's sections or their defaults. */
#include "base/config_internal.h"

#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------
 * Tree walking: the parse state, errors with key paths, typed node readers
 * ---------------------------------------------------------------------------------------- */

static int config_vfail_at(config_parser *p, int line, const char *fmt, va_list ap)
{
    if (p->err) return -1;
    char *msg = util_vasprintf(fmt, ap);
    if (p->path.len) p->err = util_asprintf("%s:%d: %s: %s", p->file, line, p->path.buf, msg);
    else p->err = util_asprintf("%s:%d: %s", p->file, line, msg);
    free(msg);
    return -1;
}

int config_fail_at(config_parser *p, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    config_vfail_at(p, line, fmt, ap);
    va_end(ap);
    return -1;
}

int config_fail(config_parser *p, const yaml_node_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    config_vfail_at(p, LINE(n), fmt, ap);
    va_end(ap);
    return -1;
}

size_t config_push_key(config_parser *p, const char *key)
{
    size_t mark = p->path.len;
    if (mark) strbuf_puts(&p->path, ".");
    strbuf_puts(&p->path, key);
    return mark;
}

size_t config_push_index(config_parser *p, size_t i)
{
    size_t mark = p->path.len;
    strbuf_printf(&p->path, "[%zu]", i);
    return mark;
}

void config_pop(config_parser *p, size_t mark)
{
    p->path.len = mark;
    p->path.buf[mark] = '\0';
}

static yaml_node_t *config_node(config_parser *p, int id)
{
    return yaml_document_get_node(p->doc, id);
}

const char *config_sval(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }

bool config_is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = config_sval(n);
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
           !strcmp(v, "NULL");
}

const char *config_kind(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_MAPPING_NODE: return "a map";
    case YAML_SEQUENCE_NODE: return "a list";
    default: return config_is_null(n) ? "nothing" : "a single value";
    }
}

/* The value of KEY in MAP (NULL map or key absent: NULL); *keyn gets the key node. */
yaml_node_t *config_lookup(config_parser *p, yaml_node_t *map, const char *key, yaml_node_t **keyn)
{
    if (!map || map->type != YAML_MAPPING_NODE) return NULL;
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *k = config_node(p, pr->key);
        if (k->type == YAML_SCALAR_NODE && strcmp(config_sval(k), key) == 0) {
            if (keyn) *keyn = k;
            return config_node(p, pr->value);
        }
    }
    return NULL;
}

/* Every key of MAP is a name listed in ALLOWED (NULL-terminated), and none repeats. */
int config_check_keys(config_parser *p, yaml_node_t *map, const char *const *allowed)
{
    yaml_node_pair_t *first = map->data.mapping.pairs.start;
    for (yaml_node_pair_t *pr = first; pr < map->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = config_node(p, pr->key);
        if (k->type != YAML_SCALAR_NODE)
            return config_fail(p, k, "a key must be a name, not %s", config_kind(k));
        const char *name = config_sval(k);
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++) ok = strcmp(*a, name) == 0;
        if (!ok) {
            strbuf list;
            strbuf_init(&list);
            for (const char *const *a = allowed; *a; a++)
                strbuf_printf(&list, "%s%s", a == allowed ? "" : ", ", *a);
            config_push_key(p, name);
            config_fail(p, k, "unknown key '%s'; allowed here: %s", name, list.buf);
            strbuf_free(&list);
            return -1;
        }
        for (yaml_node_pair_t *q = first; q < pr; q++) {
            yaml_node_t *qk = config_node(p, q->key);
            if (qk->type == YAML_SCALAR_NODE && strcmp(config_sval(qk), name) == 0) {
                config_push_key(p, name);
                return config_fail(p, k, "duplicate key (first given at line %d)", LINE(qk));
            }
        }
    }
    return 0;
}

/* 1: V is a map (with its keys checked when ALLOWED); 0: V is empty (treated as {}); -1. */
int config_as_map(config_parser *p, yaml_node_t *v, const char *const *allowed)
{
    if (config_is_null(v)) return 0;
    if (v->type != YAML_MAPPING_NODE)
        return config_fail(p, v, "expected a map, got %s", config_kind(v));
    if (allowed && config_check_keys(p, v, allowed) < 0) return -1;
    return 1;
}

/* Number of items of list V (empty value: 0 items), or -1. */
int config_as_list(config_parser *p, yaml_node_t *v, size_t *n)
{
    if (config_is_null(v)) {
        *n = 0;
        return 0;
    }
    if (v->type != YAML_SEQUENCE_NODE)
        return config_fail(p, v, "expected a list, got %s", config_kind(v));
    *n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    return 0;
}

yaml_node_t *config_item(config_parser *p, yaml_node_t *list, size_t i)
{
    return config_node(p, list->data.sequence.items.start[i]);
}

int config_as_scalar(config_parser *p, yaml_node_t *v, const char *what, const char **s)
{
    if (v->type != YAML_SCALAR_NODE)
        return config_fail(p, v, "expected %s, got %s", what, config_kind(v));
    if (config_is_null(v)) return config_fail(p, v, "has no value (expected %s)", what);
    if (strlen(config_sval(v)) != v->data.scalar.length)
        return config_fail(p, v, "contains a NUL byte");
    *s = config_sval(v);
    return 0;
}

/* Copy of a text value, checked by OK (NULL: any text). */
int config_as_str(config_parser *p, yaml_node_t *v, bool (*ok)(const char *), const char *what,
                  char **out)
{
    const char *s = NULL;
    if (config_as_scalar(p, v, "a text value", &s) < 0) return -1;
    if (!*s) return config_fail(p, v, "must not be empty");
    if (ok && !ok(s)) return config_fail(p, v, "'%s' is not %s", s, what);
    free(*out);
    *out = util_strdup(s);
    return 0;
}

int config_as_path(config_parser *p, yaml_node_t *v, char **out)
{
    const char *s = NULL;
    if (config_as_scalar(p, v, "a file path", &s) < 0) return -1;
    if (!*s) return config_fail(p, v, "must not be empty");
    free(*out);
    *out = config_resolve_path(p->cfg->dir, s);
    return 0;
}

/* Whole number in [min, max]; RANGE describes the range for the message (NULL: generated). */
int config_as_int(config_parser *p, yaml_node_t *v, int64_t min, int64_t max, const char *range,
                  int64_t *out)
{
    const char *s = NULL;
    if (config_as_scalar(p, v, "a whole number", &s) < 0) return -1;
    int64_t x;
    if (config_parse_int(s, &x) < 0) return config_fail(p, v, "'%s' is not a whole number", s);
    if (v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return config_fail(p, v, "'%s' is quoted text; write the number without quotes", s);
    if (x < min || x > max) {
        if (range) return config_fail(p, v, "must be %s, not %s", range, s);
        if (max == INT64_MAX || (max == INT_MAX && min > INT_MIN))
            return config_fail(p, v, "must be at least %lld, not %s", (long long)min, s);
        return config_fail(p, v, "must be between %lld and %lld, not %s", (long long)min,
                           (long long)max, s);
    }
    *out = x;
    return 0;
}

int config_as_int32(config_parser *p, yaml_node_t *v, int min, int max, const char *range, int *out)
{
    int64_t x;
    if (config_as_int(p, v, min, max, range, &x) < 0) return -1;
    *out = (int)x;
    return 0;
}

int config_as_decimal(config_parser *p, yaml_node_t *v, double *out)
{
    const char *s = NULL;
    if (config_as_scalar(p, v, "a number", &s) < 0) return -1;
    if (config_parse_decimal(s, out) < 0)
        return config_fail(p, v, "'%s' is not a number (e.g. 2 or 1.5)", s);
    if (v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return config_fail(p, v, "'%s' is quoted text; write the number without quotes", s);
    return 0;
}

int config_as_size(config_parser *p, yaml_node_t *v, int64_t *out)
{
    const char *s = NULL;
    if (config_as_scalar(p, v, "a size", &s) < 0) return -1;
    if (config_parse_size(s, out) < 0)
        return config_fail(p, v, "'%s' is not a size (use e.g. 512KB, 10MB)", s);
    if (*out <= 0) return config_fail(p, v, "must be more than 0");
    return 0;
}

/* Duration; POSITIVE: zero is rejected. */
int config_as_duration(config_parser *p, yaml_node_t *v, bool positive, int64_t *out)
{
    const char *s = NULL;
    if (config_as_scalar(p, v, "a duration", &s) < 0) return -1;
    if (config_parse_duration(s, out) < 0)
        return config_fail(p, v, "'%s' is not a duration (use e.g. 500ms, 30s, 5m, 14h, 2d)", s);
    if (positive && *out == 0) return config_fail(p, v, "must be longer than 0");
    return 0;
}

int config_as_rate(config_parser *p, yaml_node_t *v, config_rate *out)
{
    const char *s = NULL;
    if (config_as_scalar(p, v, "a rate", &s) < 0) return -1;
    if (config_parse_rate(s, out) < 0)
        return config_fail(
            p, v, "'%s' is not a rate (use e.g. 50/s, 10/m, 1000/h, or -1 for no limit)", s);
    return 0;
}

/* Index of V in NAMES (NULL-terminated). */
int config_as_enum(config_parser *p, yaml_node_t *v, const char *const *names, int *out)
{
    const char *s = NULL;
    if (config_as_scalar(p, v, "a text value", &s) < 0) return -1;
    size_t n = 0;
    for (; names[n]; n++)
        if (strcmp(names[n], s) == 0) {
            *out = (int)n;
            return 0;
        }
    strbuf sb;
    strbuf_init(&sb);
    if (n == 2) {
        strbuf_printf(&sb, "%s or %s", names[0], names[1]);
    } else {
        strbuf_puts(&sb, "one of ");
        for (size_t i = 0; i < n; i++) strbuf_printf(&sb, "%s%s", i ? ", " : "", names[i]);
    }
    config_fail(p, v, "must be %s, not '%s'", sb.buf, s);
    strbuf_free(&sb);
    return -1;
}

/* Error for a required KEY missing from the map reported at LINE. */
int config_missing(config_parser *p, int line, const char *key, const char *hint)
{
    config_push_key(p, key);
    return config_fail_at(p, line, "required key is missing%s%s", hint ? " " : "",
                          hint ? hint : "");
}

int config_line_of(yaml_node_t *n, int fallback) { return n ? LINE(n) : fallback; }

/* A list of names (zones, mx_suffix...) into a fresh char* array. CHECK validates each;
 * LOWER lower-cases; UNIQUE rejects repeats. */
int config_as_strv(config_parser *p, yaml_node_t *v, bool (*check)(const char *), const char *what,
                   bool lower, bool unique, char ***out, size_t *nout)
{
    size_t n;
    if (config_as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    *out = util_calloc(n, sizeof **out);
    *nout = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = config_item(p, v, i);
        size_t m = config_push_index(p, i);
        if (config_as_str(p, it, check, what, &(*out)[i]) < 0) return -1;
        if (lower) util_lowercase((*out)[i]);
        if (unique)
            for (size_t j = 0; j < i; j++)
                if (strcmp((*out)[j], (*out)[i]) == 0)
                    return config_fail(p, it, "'%s' is listed twice (also as %.*s[%zu])", (*out)[i],
                                       (int)m, p->path.buf, j);
        config_pop(p, m);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Reading the document
 * ---------------------------------------------------------------------------------------- */

static char *config_yaml_error(const char *file, const yaml_parser_t *ps)
{
    const char *problem = ps->problem ? ps->problem : "cannot be parsed";
    switch (ps->error) {
    case YAML_MEMORY_ERROR:
        util_fatal("out of memory parsing %s", file);
    case YAML_READER_ERROR:
        return util_asprintf("%s: YAML error at byte %zu: %s", file, ps->problem_offset,
                             problem);
    default:
        break;
    }
    if (ps->context)
        return util_asprintf("%s:%zu: YAML syntax error: %s (%s at line %zu)", file,
                             ps->problem_mark.line + 1, problem, ps->context,
                             ps->context_mark.line + 1);
    return util_asprintf("%s:%zu: YAML syntax error: %s", file, ps->problem_mark.line + 1,
                         problem);
}

/* Loads the one document of the parser's input (set by the caller) into doc. */
static int config_yaml_load(const char *path, yaml_parser_t *ps, yaml_document_t *doc,
                            char **err)
{
    if (!yaml_parser_load(ps, doc)) {
        *err = config_yaml_error(path, ps);
        yaml_parser_delete(ps);
        return -1;
    }
    /* One document per file: a second one is most likely a stray "---". */
    yaml_document_t extra;
    if (!yaml_parser_load(ps, &extra)) {
        *err = config_yaml_error(path, ps);
    } else {
        yaml_node_t *r = yaml_document_get_root_node(&extra);
        if (r)
            *err = util_asprintf("%s:%zu: a second YAML document starts here; the file must "
                                 "hold one", path, extra.start_mark.line + 1);
        yaml_document_delete(&extra);
    }
    yaml_parser_delete(ps);
    if (*err) {
        yaml_document_delete(doc);
        return -1;
    }
    return 0;
}

int config_yaml_read(const char *path, FILE *f, yaml_document_t *doc, char **err)
{
    yaml_parser_t ps;
    if (!yaml_parser_initialize(&ps)) util_fatal("out of memory initialising libyaml");
    yaml_parser_set_input_file(&ps, f);
    return config_yaml_load(path, &ps, doc, err);
}

int config_yaml_read_text(const char *name, const char *text, size_t len, yaml_document_t *doc,
                          char **err)
{
    yaml_parser_t ps;
    if (!yaml_parser_initialize(&ps)) util_fatal("out of memory initialising libyaml");
    yaml_parser_set_input_string(&ps, (const unsigned char *)text, len);
    return config_yaml_load(name, &ps, doc, err);
}
