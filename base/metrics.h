/* metrics.h — kilnd's metrics registry (issue 15): counters, gauges and histograms with
 * label sets, incremented from the loop thread, rendered in the Prometheus text exposition
 * format 0.0.4 for the `metrics` listener (api/metrics_http.c).
 *
 * Promises: one registry per daemon, hung on kiln_ctx (no globals); only the loop thread
 * touches it (no locks: the spool writer thread never does — its latencies are measured on
 * the loop side). Every function accepts a NULL registry or family and does nothing, so
 * modules built into unit tests without a registry need no checks. Series are found by
 * their label values in a hash table (one lookup per increment). Cardinality is bounded by
 * the caller's labels (config names and fixed enums) and, for a family marked top-N (sites),
 * by the registry: it tracks at most max_tracked label sets (a new one evicts the smallest)
 * and renders only the label sets whose first label value is among the N largest by volume.
 * The rendering follows the 0.0.4 text format: `# HELP` (backslash and newline escaped),
 * `# TYPE`, label values with backslash, double quote and newline escaped, histograms as
 * cumulative `_bucket{le="..."}` lines ending with `le="+Inf"`, then `_sum` and `_count`;
 * numbers in the shortest form that reads back exactly. */
#ifndef KILN_METRICS_H
#define KILN_METRICS_H

#include <stddef.h>

#include "base/util.h"

typedef enum metrics_type { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM } metrics_type;

typedef struct metrics metrics;
typedef struct metrics_family metrics_family;
typedef struct metrics_series metrics_series;

metrics *metrics_new(void);
/* A registry with every kiln_* family of README "Metrics" registered (metrics.c's catalogue). */
metrics *metrics_new_kiln(void);
void metrics_free(metrics *m);

/* Registers a family: NAME (a valid metric name), its TYPE and HELP text, LABELS (a
 * NULL-terminated list of label names; NULL: none) and, for a histogram, NBUCKETS ascending
 * upper bounds (+Inf is implicit). Registering a name twice is a programming error (fatal).
 * The family lives as long as the registry. */
metrics_family *metrics_register(metrics *m, const char *name, metrics_type type,
                                 const char *help, const char *const *labels,
                                 const double *buckets, size_t nbuckets);
/* Marks a family whose first label is unbounded (a site): it keeps at most MAX_TRACKED
 * label sets and renders only those of the TOP_N first-label values with the largest
 * volume (sum of values; a histogram's count). */
void metrics_top_n(metrics_family *f, size_t top_n, size_t max_tracked);
/* The family registered under NAME, or NULL. */
metrics_family *metrics_family_get(const metrics *m, const char *name);

/* The series of F with these label values (as many as F has labels; NULL when it has
 * none), created at 0 on first use. */
metrics_series *metrics_series_get(metrics_family *f, const char *const *values);
void metrics_series_add(metrics_series *s, double v);       /* counter or gauge */
void metrics_series_set(metrics_series *s, double v);       /* gauge */
void metrics_series_observe(metrics_series *s, double v);   /* histogram */
/* Drops every series of F (scrape-time gauges are refilled from the current state, so
 * IPs or pools that a reload removed disappear). */
void metrics_family_clear(metrics_family *f);

/* Shorthands by family name: add V (counter, gauge), set V (gauge), observe V (histogram). */
void metrics_add(metrics *m, const char *name, const char *const *values, double v);
void metrics_set(metrics *m, const char *name, const char *const *values, double v);
void metrics_observe(metrics *m, const char *name, const char *const *values, double v);

/* Appends the exposition of every family, in registration order. */
void metrics_render(const metrics *m, strbuf *out);
/* The value of one series as rendered (a histogram's count); 0 if absent. For tests. */
double metrics_value(const metrics *m, const char *name, const char *const *values);

#endif
