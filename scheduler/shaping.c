/* shaping.c — traffic shaping per (source IP, destination site), see shaping.h. Pure state
 * over the now_ms the caller passes and an injected random source (jitter); no I/O.
 *
 * Entries live in a chained hash table keyed by "ip|site"; each entry is allocated on its
 * own so handles stay valid while the table grows. An entry holds:
 *  - its limits: shaping.default overridden field by field by the first provider one of
 *    whose mx_suffix matches one of the site's MX hosts on a label boundary (recomputed on
 *    reload from a private copy of the MX hosts and of the shaping config);
 *  - a token bucket for the rate, kept in exact integers: `tokens` whole tokens plus `frac`
 *    in units of 1/per_ms of a token, refilled at `count` units per millisecond, capacity
 *    max(1, count), starting full; so a refused take can name the exact millisecond the
 *    next token arrives (50/s: 20 ms after the bucket ran dry);
 *  - the concurrency window (slow start from min(2, limit), +1 per completed transaction,
 *    halved on failures, 1 on throttling) and the count of open connections;
 *  - the throttling backoff: 5 s * 2^(n-1) for the n-th consecutive throttle, capped at
 *    10 min, times a jitter factor in [0.8, 1.2].
 *
 * Entries idle for gc_after_ms with no open connection and no backoff in force are dropped
 * by shaping_gc. Calls that carry no clock (shaping_get, connection opened/closed) mark the
 * entry as used "now" for the next gc pass, so a fresh or just-closed entry is never
 * dropped before it has been idle for a whole gc_after_ms. */
#include "scheduler/shaping.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"

#define SHAPING_START_WINDOW 2
#define SHAPING_BACKOFF_FIRST_MS INT64_C(5000)
#define SHAPING_BACKOFF_MAX_MS INT64_C(600000)
#define SHAPING_JITTER_MIN 0.8
#define SHAPING_JITTER_SPAN 0.4                 /* factor in [0.8, 1.2] */
#define SHAPING_INITIAL_BUCKETS 64

/* The part of the configuration shaping needs, copied so that a config can be released
 * after a reload without leaving shaping pointing into it. */
typedef struct shaping_provider {
    char *name;
    char **suffix;
    size_t nsuffix;
    config_shaping_limits limits;
} shaping_provider;

struct shaping_dest {
    shaping *sh;
    shaping_dest *next;              /* hash chain */
    uint64_t hash;
    char *key;                       /* "ip|site" */
    char *ip, *site;
    char **mx;                       /* normalised MX hosts, for provider matching on reload */
    size_t nmx;

    char *provider;                  /* provider name or "default" */
    int connections;                 /* -1 = unlimited */
    int messages_per_connection;     /* -1 = unlimited */
    config_rate rate;                /* count -1 = no rate limit */

    int64_t tokens;                  /* whole tokens, <= max(1, rate.count) */
    int64_t frac;                    /* and frac/rate.per_ms of a token, < rate.per_ms */
    int64_t refilled_ms;             /* clock of the last refill */
    bool bucket_started;             /* refilled_ms is meaningful */

    int window;
    int open;
    int64_t backoff_until_ms;        /* 0: never backed off */
    int consecutive_throttles;

    int64_t last_used_ms;
    bool touched;                    /* used without a clock since the last gc pass */
};

struct shaping {
    config_shaping_limits def;
    shaping_provider *providers;
    size_t nproviders;

    shaping_dest **buckets;
    size_t nbuckets;                 /* power of two */
    size_t count;

    uint32_t (*rnd)(void *arg);
    void *rnd_arg;
    uint64_t prng;                   /* fixed-seed state when rnd is NULL */
};

/* ---- small helpers ---- */

static void set_reason(char *reason, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_reason(char *reason, size_t len, const char *fmt, ...)
{
    if (!reason || len == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, len, fmt, ap);
    va_end(ap);
}

static void clear_reason(char *reason, size_t len)
{
    if (reason && len > 0) reason[0] = '\0';
}

static void set_retry(int64_t *retry_at_ms, int64_t v)
{
    if (retry_at_ms) *retry_at_ms = v;
}

/* A duration for people: "850 ms", "12.5 s", "9 min 30 s". */
static void fmt_duration(char *out, size_t len, int64_t ms)
{
    if (ms < 1000)
        snprintf(out, len, "%lld ms", (long long)ms);
    else if (ms < 120000)
        snprintf(out, len, "%.1f s", (double)ms / 1000.0);
    else
        snprintf(out, len, "%lld min %lld s", (long long)(ms / 60000),
                 (long long)(ms % 60000 / 1000));
}

/* "50/s", "10/m", "1000/h" (or "N/Tms" for a period the config parser never produces). */
static void fmt_rate(char *out, size_t len, const config_rate *r)
{
    if (r->per_ms == 1000)
        snprintf(out, len, "%lld/s", (long long)r->count);
    else if (r->per_ms == 60000)
        snprintf(out, len, "%lld/m", (long long)r->count);
    else if (r->per_ms == 3600000)
        snprintf(out, len, "%lld/h", (long long)r->count);
    else
        snprintf(out, len, "%lld/%lldms", (long long)r->count, (long long)r->per_ms);
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= UINT64_C(1099511628211);
    }
    return h;
}

static uint32_t next_random(shaping *sh)
{
    if (sh->rnd) return sh->rnd(sh->rnd_arg);
    /* splitmix64: a fixed-seed PRNG, good enough to spread backoffs */
    uint64_t z = (sh->prng += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    z ^= z >> 31;
    return (uint32_t)(z >> 32);
}

/* A host name lower-cased without trailing dots (malloc'd). */
static char *normalise_host(const char *h)
{
    size_t n = strlen(h);
    while (n > 0 && h[n - 1] == '.') n--;
    char *s = util_strndup(h, n);
    util_lowercase(s);
    return s;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Normalised, sorted, deduplicated copy of HOSTS (empty names dropped); *out_n its size. */
static char **normalise_hosts(char *const *hosts, size_t n, size_t *out_n)
{
    char **v = util_calloc(n ? n : 1, sizeof *v);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (!hosts[i]) continue;
        char *h = normalise_host(hosts[i]);
        if (*h == '\0') {
            free(h);
            continue;
        }
        v[m++] = h;
    }
    qsort(v, m, sizeof *v, cmp_str);
    size_t k = 0;
    for (size_t i = 0; i < m; i++) {
        if (k > 0 && strcmp(v[k - 1], v[i]) == 0) {
            free(v[i]);
            continue;
        }
        v[k++] = v[i];
    }
    *out_n = k;
    return v;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* HOST equals SUFFIX or ends with "." SUFFIX (case-insensitive; a trailing dot on the
 * suffix is ignored). */
static bool label_suffix_match(const char *host, const char *suffix)
{
    size_t hn = strlen(host), sn = strlen(suffix);
    while (sn > 0 && suffix[sn - 1] == '.') sn--;
    while (sn > 0 && suffix[0] == '.') {        /* ".google.com" written for "google.com" */
        suffix++;
        sn--;
    }
    if (sn == 0 || sn > hn) return false;
    if (strncasecmp(host + hn - sn, suffix, sn) != 0) return false;
    return hn == sn || host[hn - sn - 1] == '.';
}

/* ---- configuration ---- */

static void free_providers(shaping *sh)
{
    for (size_t i = 0; i < sh->nproviders; i++) {
        free(sh->providers[i].name);
        free_strv(sh->providers[i].suffix, sh->providers[i].nsuffix);
    }
    free(sh->providers);
    sh->providers = NULL;
    sh->nproviders = 0;
}

static void copy_config(shaping *sh, const config *cfg)
{
    free_providers(sh);
    sh->def = cfg->shaping_default;
    if (cfg->nproviders == 0) return;
    sh->providers = util_calloc(cfg->nproviders, sizeof *sh->providers);
    sh->nproviders = cfg->nproviders;
    for (size_t i = 0; i < cfg->nproviders; i++) {
        const config_provider *cp = &cfg->providers[i];
        shaping_provider *p = &sh->providers[i];
        p->name = util_strdup(cp->name);
        p->nsuffix = cp->nmx_suffix;
        p->suffix = util_calloc(cp->nmx_suffix ? cp->nmx_suffix : 1, sizeof *p->suffix);
        for (size_t j = 0; j < cp->nmx_suffix; j++) p->suffix[j] = util_strdup(cp->mx_suffix[j]);
        p->limits = cp->limits;
    }
}

static const shaping_provider *match_provider(const shaping *sh, char *const *mx, size_t nmx)
{
    for (size_t i = 0; i < sh->nproviders; i++) {
        const shaping_provider *p = &sh->providers[i];
        for (size_t j = 0; j < p->nsuffix; j++)
            for (size_t k = 0; k < nmx; k++)
                if (label_suffix_match(mx[k], p->suffix[j])) return p;
    }
    return NULL;
}

static bool rate_is_set(const config_rate *r)
{
    return !(r->count == -1 && r->per_ms == 0);
}

static bool rate_is_limited(const config_rate *r)
{
    return r->count > 0 && r->per_ms > 0;
}

static int64_t bucket_capacity(const shaping_dest *d)
{
    return d->rate.count > 1 ? d->rate.count : 1;
}

/* Computes the entry's limits from the current configuration. Counters, the bucket's
 * tokens and the backoff are kept; the window is clamped to a lowered limit. */
static void apply_limits(shaping_dest *d)
{
    const shaping *sh = d->sh;
    const shaping_provider *p = match_provider(sh, d->mx, d->nmx);
    config_shaping_limits l = sh->def;
    if (p) {
        if (p->limits.connections != -1) l.connections = p->limits.connections;
        if (p->limits.messages_per_connection != -1)
            l.messages_per_connection = p->limits.messages_per_connection;
        if (rate_is_set(&p->limits.rate)) l.rate = p->limits.rate;
    }
    free(d->provider);
    d->provider = util_strdup(p ? p->name : "default");

    d->connections = l.connections > 0 ? l.connections : -1;
    d->messages_per_connection = l.messages_per_connection > 0 ? l.messages_per_connection : -1;

    config_rate old = d->rate;
    bool was_limited = rate_is_limited(&old);
    d->rate = l.rate;
    if (!rate_is_limited(&d->rate)) {
        d->rate.count = -1;
        if (d->rate.per_ms <= 0) d->rate.per_ms = 1000;
    }
    if (rate_is_limited(&d->rate)) {
        if (!was_limited) {
            /* from no limit (or a new entry) to a limit: the bucket starts full */
            d->tokens = bucket_capacity(d);
            d->frac = 0;
            d->bucket_started = false;
        } else {
            if (old.per_ms != d->rate.per_ms)   /* same fraction of a token in new units */
                d->frac = d->frac * d->rate.per_ms / old.per_ms;
            if (d->tokens >= bucket_capacity(d)) {
                d->tokens = bucket_capacity(d);
                d->frac = 0;
            }
        }
    }

    if (d->window < 1) d->window = SHAPING_START_WINDOW;   /* a new entry */
    if (d->connections > 0 && d->window > d->connections) d->window = d->connections;
}

/* ---- token bucket ---- */

static void refill(shaping_dest *d, int64_t now_ms)
{
    if (!d->bucket_started) {
        d->bucket_started = true;
        d->refilled_ms = now_ms;
        return;
    }
    int64_t elapsed = now_ms - d->refilled_ms;
    /* A clock that went backwards refills nothing and continues from its new reading. */
    d->refilled_ms = now_ms;
    if (elapsed <= 0) return;
    int64_t cap = bucket_capacity(d), count = d->rate.count, per = d->rate.per_ms;
    if (d->tokens >= cap) {
        d->frac = 0;
        return;
    }
    /* count >= 1 tokens arrive every per ms, and cap = max(1, count): full after per ms */
    if (elapsed >= per) goto full;
    /* elapsed * count / per tokens, split to stay inside int64 (elapsed < per <= 1 h) */
    int64_t q = count / per, r = count % per;
    if (q > 0 && elapsed > (cap - d->tokens) / q) goto full;
    d->tokens += elapsed * q;
    int64_t units = elapsed * r;                  /* < per * per */
    int64_t whole = units / per;
    if (whole > cap - d->tokens) goto full;
    d->tokens += whole;
    d->frac += units % per;
    if (d->frac >= per) {
        d->frac -= per;
        d->tokens++;
    }
    if (d->tokens >= cap) goto full;
    return;
full:
    d->tokens = cap;
    d->frac = 0;
}

/* Milliseconds until one whole token is in the bucket (tokens == 0). */
static int64_t ms_to_next_token(const shaping_dest *d)
{
    int64_t need = d->rate.per_ms - d->frac;      /* units of 1/per_ms token */
    return (need + d->rate.count - 1) / d->rate.count;
}

/* ---- table ---- */

static char *make_key(const char *ip, const char *site)
{
    return util_asprintf("%s|%s", ip, site);
}

static void table_grow(shaping *sh)
{
    size_t n = sh->nbuckets * 2;
    shaping_dest **b = util_calloc(n, sizeof *b);
    for (size_t i = 0; i < sh->nbuckets; i++) {
        shaping_dest *d = sh->buckets[i];
        while (d) {
            shaping_dest *next = d->next;
            size_t j = (size_t)(d->hash & (n - 1));
            d->next = b[j];
            b[j] = d;
            d = next;
        }
    }
    free(sh->buckets);
    sh->buckets = b;
    sh->nbuckets = n;
}

static void dest_free(shaping_dest *d)
{
    free(d->key);
    free(d->ip);
    free(d->site);
    free_strv(d->mx, d->nmx);
    free(d->provider);
    free(d);
}

/* ---- API ---- */

shaping *shaping_new(const config *cfg, uint32_t (*rnd)(void *arg), void *rnd_arg)
{
    shaping *sh = util_calloc(1, sizeof *sh);
    copy_config(sh, cfg);
    sh->nbuckets = SHAPING_INITIAL_BUCKETS;
    sh->buckets = util_calloc(sh->nbuckets, sizeof *sh->buckets);
    sh->rnd = rnd;
    sh->rnd_arg = rnd_arg;
    sh->prng = UINT64_C(0x6b696c6e73686170);     /* "kilnshap" */
    return sh;
}

void shaping_free(shaping *sh)
{
    if (!sh) return;
    for (size_t i = 0; i < sh->nbuckets; i++) {
        shaping_dest *d = sh->buckets[i];
        while (d) {
            shaping_dest *next = d->next;
            dest_free(d);
            d = next;
        }
    }
    free(sh->buckets);
    free_providers(sh);
    free(sh);
}

void shaping_config_changed(shaping *sh, const config *cfg)
{
    copy_config(sh, cfg);
    for (size_t i = 0; i < sh->nbuckets; i++)
        for (shaping_dest *d = sh->buckets[i]; d; d = d->next) apply_limits(d);
}

char *shaping_site_key(char *const *mx_hosts, size_t n)
{
    size_t m;
    char **v = normalise_hosts(mx_hosts, n, &m);
    strbuf sb;
    strbuf_init(&sb);
    for (size_t i = 0; i < m; i++) {
        if (i) strbuf_puts(&sb, ",");
        strbuf_puts(&sb, v[i]);
    }
    free_strv(v, m);
    return strbuf_steal(&sb);
}

shaping_dest *shaping_get(shaping *sh, const char *ip, const char *site_key,
                          char *const *mx_hosts, size_t n)
{
    char *key = make_key(ip, site_key);
    uint64_t h = fnv1a(key);
    for (shaping_dest *d = sh->buckets[h & (sh->nbuckets - 1)]; d; d = d->next)
        if (d->hash == h && strcmp(d->key, key) == 0) {
            free(key);
            d->touched = true;
            return d;
        }

    shaping_dest *d = util_calloc(1, sizeof *d);
    d->sh = sh;
    d->key = key;
    d->hash = h;
    d->ip = util_strdup(ip);
    d->site = util_strdup(site_key);
    if (n > 0 && mx_hosts) {
        d->mx = normalise_hosts(mx_hosts, n, &d->nmx);
    } else {
        /* no hosts given: the site key is itself the comma-separated host list */
        char *copy = util_strdup(site_key);
        size_t cap = 1;
        for (const char *c = copy; *c; c++) cap += *c == ',';
        char **parts = util_calloc(cap, sizeof *parts);
        size_t np = 0;
        for (char *save = NULL, *t = strtok_r(copy, ",", &save); t;
             t = strtok_r(NULL, ",", &save))
            parts[np++] = t;
        d->mx = normalise_hosts(parts, np, &d->nmx);
        free(parts);
        free(copy);
    }
    d->rate.count = -1;                          /* "no limit yet": apply_limits fills it */
    d->rate.per_ms = 1000;
    apply_limits(d);
    d->touched = true;

    size_t b = (size_t)(h & (sh->nbuckets - 1));
    d->next = sh->buckets[b];
    sh->buckets[b] = d;
    if (++sh->count > sh->nbuckets / 4 * 3) table_grow(sh);
    return d;
}

void shaping_gc(shaping *sh, int64_t now_ms, int64_t gc_after_ms)
{
    for (size_t i = 0; i < sh->nbuckets; i++) {
        shaping_dest **pp = &sh->buckets[i];
        while (*pp) {
            shaping_dest *d = *pp;
            if (d->touched) {
                d->touched = false;
                if (d->last_used_ms < now_ms) d->last_used_ms = now_ms;
            }
            bool idle = d->open == 0 && d->backoff_until_ms <= now_ms &&
                        now_ms - d->last_used_ms >= gc_after_ms;
            if (idle) {
                *pp = d->next;
                sh->count--;
                dest_free(d);
            } else {
                pp = &d->next;
            }
        }
    }
}

static void used(shaping_dest *d, int64_t now_ms)
{
    if (d->last_used_ms < now_ms) d->last_used_ms = now_ms;
}

/* During a backoff: WAIT_BACKOFF with its end and a reason; else false. */
static bool in_backoff(shaping_dest *d, int64_t now_ms, int64_t *retry_at_ms, char *reason,
                       size_t reason_len)
{
    if (d->backoff_until_ms <= now_ms) return false;
    char left[48];
    fmt_duration(left, sizeof left, d->backoff_until_ms - now_ms);
    set_retry(retry_at_ms, d->backoff_until_ms);
    set_reason(reason, reason_len,
               "%s -> %s: throttled by the site (%d time%s in a row), backing off for %s more "
               "(provider %s)",
               d->ip, d->site, d->consecutive_throttles, d->consecutive_throttles == 1 ? "" : "s",
               left, d->provider);
    return true;
}

shaping_verdict shaping_may_connect(shaping_dest *d, int64_t now_ms, int64_t *retry_at_ms,
                                    char *reason, size_t reason_len)
{
    used(d, now_ms);
    if (in_backoff(d, now_ms, retry_at_ms, reason, reason_len)) return SHAPING_WAIT_BACKOFF;
    if (d->open >= d->window) {
        set_retry(retry_at_ms, 0);               /* until a connection closes */
        if (d->connections > 0 && d->window >= d->connections)
            set_reason(reason, reason_len, "%s -> %s: %d/%d connections open (provider %s)",
                       d->ip, d->site, d->open, d->connections, d->provider);
        else if (d->connections > 0)
            set_reason(reason, reason_len,
                       "%s -> %s: %d/%d connections open (slow-start window %d of limit %d, "
                       "provider %s)",
                       d->ip, d->site, d->open, d->window, d->window, d->connections,
                       d->provider);
        else
            set_reason(reason, reason_len,
                       "%s -> %s: %d/%d connections open (slow-start window %d, no connection "
                       "limit, provider %s)",
                       d->ip, d->site, d->open, d->window, d->window, d->provider);
        return SHAPING_WAIT_CONNECTIONS;
    }
    set_retry(retry_at_ms, now_ms);
    clear_reason(reason, reason_len);
    return SHAPING_OK;
}

shaping_verdict shaping_take_message(shaping_dest *d, int64_t now_ms, int64_t *retry_at_ms,
                                     char *reason, size_t reason_len)
{
    used(d, now_ms);
    if (in_backoff(d, now_ms, retry_at_ms, reason, reason_len)) return SHAPING_WAIT_BACKOFF;
    if (rate_is_limited(&d->rate)) {
        refill(d, now_ms);
        if (d->tokens < 1) {
            int64_t wait = ms_to_next_token(d);
            char r[48];
            fmt_rate(r, sizeof r, &d->rate);
            set_retry(retry_at_ms, now_ms + wait);
            set_reason(reason, reason_len,
                       "rate %s for %s -> %s: next token in %lld ms (provider %s)", r, d->ip,
                       d->site, (long long)wait, d->provider);
            return SHAPING_WAIT_RATE;
        }
        d->tokens--;
    }
    set_retry(retry_at_ms, now_ms);
    clear_reason(reason, reason_len);
    return SHAPING_OK;
}

int shaping_messages_per_connection(const shaping_dest *d)
{
    return d->messages_per_connection > 0 ? d->messages_per_connection : INT_MAX;
}

void shaping_connection_opened(shaping_dest *d)
{
    if (d->open == INT_MAX)
        util_fatal("shaping: %s -> %s: connection count overflow", d->ip, d->site);
    d->open++;
    d->touched = true;
}

void shaping_connection_closed(shaping_dest *d)
{
    if (d->open <= 0)
        util_fatal("shaping: %s -> %s: connection closed but none is open", d->ip, d->site);
    d->open--;
    d->touched = true;
}

/* 5 s * 2^(n-1), capped at 10 min, times a factor in [0.8, 1.2]. */
static int64_t backoff_ms(shaping_dest *d)
{
    int64_t base = SHAPING_BACKOFF_FIRST_MS;
    for (int i = 1; i < d->consecutive_throttles && base < SHAPING_BACKOFF_MAX_MS; i++) base *= 2;
    if (base > SHAPING_BACKOFF_MAX_MS) base = SHAPING_BACKOFF_MAX_MS;
    double f = SHAPING_JITTER_MIN +
               SHAPING_JITTER_SPAN * ((double)next_random(d->sh) / (double)UINT32_MAX);
    return (int64_t)((double)base * f + 0.5);
}

void shaping_record(shaping_dest *d, shaping_result r, int64_t now_ms)
{
    used(d, now_ms);
    switch (r) {
    case SHAPING_RESULT_OK:
        d->consecutive_throttles = 0;
        if (d->window < INT_MAX && (d->connections < 0 || d->window < d->connections))
            d->window++;
        break;
    case SHAPING_RESULT_FAILED:
        d->window /= 2;
        if (d->window < 1) d->window = 1;
        break;
    case SHAPING_RESULT_THROTTLED:
        d->window = 1;
        if (d->consecutive_throttles < INT_MAX) d->consecutive_throttles++;
        d->backoff_until_ms = now_ms + backoff_ms(d);
        break;
    default:
        util_fatal("shaping: %s -> %s: unknown result %d", d->ip, d->site, (int)r);
    }
}

void shaping_get_info(const shaping_dest *d, int64_t now_ms, shaping_info *out)
{
    memset(out, 0, sizeof *out);
    out->ip = d->ip;
    out->site = d->site;
    out->provider = d->provider;
    out->connections_limit = d->connections;
    out->window = d->window;
    out->open = d->open;
    out->messages_per_connection = d->messages_per_connection;
    out->rate = d->rate;
    out->backoff_until_ms = d->backoff_until_ms > now_ms ? d->backoff_until_ms : 0;
    out->consecutive_throttles = d->consecutive_throttles;
}
