/* metrics.c — the registry of base/metrics.h: families in registration order with a name
 * index, series in a chained hash table keyed by their joined label values, histograms with
 * per-bucket counts made cumulative at rendering, the top-N rule for site families, and the
 * Prometheus text format 0.0.4 renderer.
 *
 * Why by hand: Debian has no C Prometheus client library (prometheus-client-c is not
 * packaged) and the format is a few lines of text; the registry stays single-threaded on the
 * loop, which a general-purpose client's locking would only slow down. */
#include "base/metrics.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_SEP '\x1f'          /* joins label values in a series key */
#define METRICS_INITIAL_BUCKETS 16

struct metrics_series {
    metrics_series *next;            /* hash chain */
    const metrics_family *fam;       /* its bucket bounds */
    char *key;                       /* label values joined by METRICS_SEP */
    char **values;
    double value;                    /* counter/gauge; a histogram's sum */
    uint64_t count;                  /* histogram */
    uint64_t *bucket;                /* histogram: observations per bucket (not cumulative) */
};

struct metrics_family {
    char *name;
    char *help;
    metrics_type type;
    char **labels;
    size_t nlabels;
    double *bounds;
    size_t nbounds;
    size_t top_n, max_tracked;       /* 0: no top-N rule */
    metrics_series **table;          /* hash chains */
    size_t nslots;
    metrics_series **all;            /* every series, in creation order */
    size_t nall, capall;
};

struct metrics {
    metrics_family **fam;
    size_t nfam, capfam;
};

static uint64_t metrics_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;   /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

metrics *metrics_new(void)
{
    return util_calloc(1, sizeof(metrics));
}

static void metrics_series_free(metrics_series *s, size_t nlabels)
{
    for (size_t i = 0; i < nlabels; i++) free(s->values[i]);
    free(s->values);
    free(s->key);
    free(s->bucket);
    free(s);
}

void metrics_family_clear(metrics_family *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->nall; i++) metrics_series_free(f->all[i], f->nlabels);
    f->nall = 0;
    memset(f->table, 0, f->nslots * sizeof *f->table);
}

void metrics_free(metrics *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->nfam; i++) {
        metrics_family *f = m->fam[i];
        metrics_family_clear(f);
        for (size_t j = 0; j < f->nlabels; j++) free(f->labels[j]);
        free(f->labels);
        free(f->bounds);
        free(f->table);
        free(f->all);
        free(f->name);
        free(f->help);
        free(f);
    }
    free(m->fam);
    free(m);
}

metrics_family *metrics_family_get(const metrics *m, const char *name)
{
    if (!m || !name) return NULL;
    for (size_t i = 0; i < m->nfam; i++)
        if (strcmp(m->fam[i]->name, name) == 0) return m->fam[i];
    return NULL;
}

metrics_family *metrics_register(metrics *m, const char *name, metrics_type type,
                                 const char *help, const char *const *labels,
                                 const double *buckets, size_t nbuckets)
{
    if (!m) return NULL;
    if (metrics_family_get(m, name)) util_fatal("metrics: %s registered twice", name);
    metrics_family *f = util_calloc(1, sizeof *f);
    f->name = util_strdup(name);
    f->help = util_strdup(help);
    f->type = type;
    while (labels && labels[f->nlabels]) f->nlabels++;
    f->labels = util_calloc(f->nlabels + 1, sizeof *f->labels);
    for (size_t i = 0; i < f->nlabels; i++) f->labels[i] = util_strdup(labels[i]);
    if (type == METRICS_HISTOGRAM) {
        f->nbounds = nbuckets;
        f->bounds = util_calloc(nbuckets + 1, sizeof *f->bounds);
        for (size_t i = 0; i < nbuckets; i++) {
            if (i > 0 && !(buckets[i] > buckets[i - 1]))
                util_fatal("metrics: %s: buckets must ascend", name);
            f->bounds[i] = buckets[i];
        }
    }
    f->nslots = METRICS_INITIAL_BUCKETS;
    f->table = util_calloc(f->nslots, sizeof *f->table);
    if (m->nfam == m->capfam) {
        m->capfam = m->capfam ? 2 * m->capfam : 32;
        m->fam = util_realloc(m->fam, m->capfam * sizeof *m->fam);
    }
    m->fam[m->nfam++] = f;
    return f;
}

void metrics_top_n(metrics_family *f, size_t top_n, size_t max_tracked)
{
    if (!f) return;
    f->top_n = top_n;
    f->max_tracked = max_tracked < top_n ? top_n : max_tracked;
}

static char *metrics_key(const metrics_family *f, const char *const *values)
{
    strbuf sb;
    strbuf_init(&sb);
    for (size_t i = 0; i < f->nlabels; i++) {
        if (i) strbuf_append(&sb, &(char){METRICS_SEP}, 1);
        strbuf_puts(&sb, values[i] ? values[i] : "");
    }
    return strbuf_steal(&sb);
}

static void metrics_rehash(metrics_family *f)
{
    size_t n = f->nslots * 2;
    metrics_series **t = util_calloc(n, sizeof *t);
    for (size_t i = 0; i < f->nall; i++) {
        metrics_series *s = f->all[i];
        size_t h = metrics_hash(s->key) & (n - 1);
        s->next = t[h];
        t[h] = s;
    }
    free(f->table);
    f->table = t;
    f->nslots = n;
}

static double metrics_volume(const metrics_family *f, const metrics_series *s)
{
    return f->type == METRICS_HISTOGRAM ? (double)s->count : s->value;
}

/* Removes the tracked series with the smallest volume (a top-N family at its cap). */
static void metrics_evict_smallest(metrics_family *f)
{
    size_t victim = 0;
    for (size_t i = 1; i < f->nall; i++)
        if (metrics_volume(f, f->all[i]) < metrics_volume(f, f->all[victim])) victim = i;
    metrics_series *s = f->all[victim];
    metrics_series **pp = &f->table[metrics_hash(s->key) & (f->nslots - 1)];
    while (*pp != s) pp = &(*pp)->next;
    *pp = s->next;
    memmove(&f->all[victim], &f->all[victim + 1], (f->nall - victim - 1) * sizeof *f->all);
    f->nall--;
    metrics_series_free(s, f->nlabels);
}

metrics_series *metrics_series_get(metrics_family *f, const char *const *values)
{
    if (!f) return NULL;
    char *key = metrics_key(f, values);
    size_t h = metrics_hash(key) & (f->nslots - 1);
    for (metrics_series *s = f->table[h]; s; s = s->next)
        if (strcmp(s->key, key) == 0) {
            free(key);
            return s;
        }
    if (f->max_tracked && f->nall >= f->max_tracked) metrics_evict_smallest(f);
    if (f->nall * 2 >= f->nslots) metrics_rehash(f);
    metrics_series *s = util_calloc(1, sizeof *s);
    s->key = key;
    s->fam = f;
    s->values = util_calloc(f->nlabels + 1, sizeof *s->values);
    for (size_t i = 0; i < f->nlabels; i++) s->values[i] = util_strdup(values[i] ? values[i] : "");
    if (f->type == METRICS_HISTOGRAM) s->bucket = util_calloc(f->nbounds + 1, sizeof *s->bucket);
    h = metrics_hash(key) & (f->nslots - 1);
    s->next = f->table[h];
    f->table[h] = s;
    if (f->nall == f->capall) {
        f->capall = f->capall ? 2 * f->capall : 8;
        f->all = util_realloc(f->all, f->capall * sizeof *f->all);
    }
    f->all[f->nall++] = s;
    return s;
}

void metrics_series_add(metrics_series *s, double v)
{
    if (s) s->value += v;
}

void metrics_series_set(metrics_series *s, double v)
{
    if (s) s->value = v;
}

void metrics_series_observe(metrics_series *s, double v)
{
    if (!s || s->fam->type != METRICS_HISTOGRAM) return;
    const metrics_family *f = s->fam;
    size_t i = 0;
    while (i < f->nbounds && v > f->bounds[i]) i++;
    s->bucket[i]++;          /* i == nbounds: only +Inf */
    s->count++;
    s->value += v;
}

void metrics_add(metrics *m, const char *name, const char *const *values, double v)
{
    metrics_series_add(metrics_series_get(metrics_family_get(m, name), values), v);
}

void metrics_set(metrics *m, const char *name, const char *const *values, double v)
{
    metrics_series_set(metrics_series_get(metrics_family_get(m, name), values), v);
}

void metrics_observe(metrics *m, const char *name, const char *const *values, double v)
{
    metrics_series_observe(metrics_series_get(metrics_family_get(m, name), values), v);
}

double metrics_value(const metrics *m, const char *name, const char *const *values)
{
    metrics_family *f = metrics_family_get(m, name);
    if (!f) return 0;
    char *key = metrics_key(f, values);
    double v = 0;
    for (metrics_series *s = f->table[metrics_hash(key) & (f->nslots - 1)]; s; s = s->next)
        if (strcmp(s->key, key) == 0) v = metrics_volume(f, s);
    free(key);
    return v;
}

/* ---- rendering ---- */

/* The shortest decimal form that reads back as V; +Inf, -Inf, NaN as Prometheus spells
 * them. */
static void metrics_put_number(strbuf *out, double v)
{
    if (isnan(v)) {
        strbuf_puts(out, "NaN");
        return;
    }
    if (isinf(v)) {
        strbuf_puts(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    char buf[40];
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {   /* integers as integers */
        snprintf(buf, sizeof buf, "%.0f", v);
        strbuf_puts(out, buf);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    strbuf_puts(out, buf);
}

static void metrics_put_escaped(strbuf *out, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\') strbuf_puts(out, "\\\\");
        else if (*s == '\n') strbuf_puts(out, "\\n");
        else if (quote && *s == '"') strbuf_puts(out, "\\\"");
        else strbuf_append(out, s, 1);
    }
}

/* NAME{labels[,le="X"]} VALUE */
static void metrics_put_line(strbuf *out, const metrics_family *f, const char *suffix,
                             const metrics_series *s, const char *le, double v)
{
    strbuf_puts(out, f->name);
    strbuf_puts(out, suffix);
    if (f->nlabels || le) {
        strbuf_puts(out, "{");
        for (size_t i = 0; i < f->nlabels; i++) {
            if (i) strbuf_puts(out, ",");
            strbuf_printf(out, "%s=\"", f->labels[i]);
            metrics_put_escaped(out, s->values[i], true);
            strbuf_puts(out, "\"");
        }
        if (le) strbuf_printf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le);
        strbuf_puts(out, "}");
    }
    strbuf_puts(out, " ");
    metrics_put_number(out, v);
    strbuf_puts(out, "\n");
}

static void metrics_render_series(strbuf *out, const metrics_family *f, const metrics_series *s)
{
    if (f->type != METRICS_HISTOGRAM) {
        metrics_put_line(out, f, "", s, NULL, s->value);
        return;
    }
    uint64_t cum = 0;
    for (size_t i = 0; i <= f->nbounds; i++) {
        cum += s->bucket[i];
        strbuf le;
        strbuf_init(&le);
        if (i == f->nbounds) strbuf_puts(&le, "+Inf");
        else metrics_put_number(&le, f->bounds[i]);
        metrics_put_line(out, f, "_bucket", s, le.buf, (double)cum);
        strbuf_free(&le);
    }
    metrics_put_line(out, f, "_sum", s, NULL, s->value);
    metrics_put_line(out, f, "_count", s, NULL, (double)s->count);
}

typedef struct metrics_rank {
    const char *value;
    double volume;
} metrics_rank;

static int metrics_rank_cmp(const void *a, const void *b)
{
    const metrics_rank *x = a, *y = b;
    if (x->volume != y->volume) return x->volume > y->volume ? -1 : 1;
    return strcmp(x->value, y->value);
}

/* The first-label values of F's N largest volumes (a malloc'd array of *n borrowed
 * strings). */
static const char **metrics_top_values(const metrics_family *f, size_t *n)
{
    metrics_rank *r = util_calloc(f->nall + 1, sizeof *r);
    size_t nr = 0;
    for (size_t i = 0; i < f->nall; i++) {
        const char *v = f->all[i]->values[0];
        size_t j = 0;
        while (j < nr && strcmp(r[j].value, v) != 0) j++;
        if (j == nr) r[nr++] = (metrics_rank){v, 0};
        r[j].volume += metrics_volume(f, f->all[i]);
    }
    qsort(r, nr, sizeof *r, metrics_rank_cmp);
    if (nr > f->top_n) nr = f->top_n;
    const char **top = util_calloc(nr + 1, sizeof *top);
    for (size_t i = 0; i < nr; i++) top[i] = r[i].value;
    free(r);
    *n = nr;
    return top;
}

static void metrics_render_family(strbuf *out, const metrics_family *f)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    strbuf_printf(out, "# HELP %s ", f->name);
    metrics_put_escaped(out, f->help, false);
    strbuf_printf(out, "\n# TYPE %s %s\n", f->name, types[f->type]);
    size_t ntop = 0;
    const char **top = f->top_n && f->nlabels ? metrics_top_values(f, &ntop) : NULL;
    for (size_t i = 0; i < f->nall; i++) {
        const metrics_series *s = f->all[i];
        if (top) {
            bool in = false;
            for (size_t j = 0; !in && j < ntop; j++) in = strcmp(top[j], s->values[0]) == 0;
            if (!in) continue;
        }
        metrics_render_series(out, f, s);
    }
    free(top);
}

void metrics_render(const metrics *m, strbuf *out)
{
    if (!m) return;
    for (size_t i = 0; i < m->nfam; i++) metrics_render_family(out, m->fam[i]);
}
