/* smtp_limits.c — admission of submission sessions (see smtp_limits.h): caps derived from
 * the descriptor limit and the config, the reserved share, per-client session counts and
 * connection rates in a bounded hash table keyed by the client's textual IP address.
 *
 * The rate is a fixed window per client (the first connection opens a window of rate.per_ms;
 * at most rate.count connections in it), as Postfix's anvil counts per time unit. Entries
 * with no session and an expired window are dropped when their bucket is walked, and all
 * of them when the table is full. Written by hand: a small chained table is all it takes. */
#include "mta/smtp_limits.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

#define SMTP_LIMITS_BUCKETS 4096
#define SMTP_LIMITS_IP_MAX 46

typedef struct smtp_limits_client {
    struct smtp_limits_client *next;
    char ip[SMTP_LIMITS_IP_MAX];
    int sessions;
    int64_t window_end_ms;       /* the rate window's end; 0: none */
    int64_t window_count;        /* connections in the window */
} smtp_limits_client;

struct smtp_limits {
    smtp_limits_client *buckets[SMTP_LIMITS_BUCKETS];
    int nclients;
    int nsessions;
    int nunprivileged;
};

const char *smtp_limits_verdict_name(smtp_limits_verdict v)
{
    switch (v) {
    case SMTP_LIMITS_OK: return "ok";
    case SMTP_LIMITS_FULL: return "max_sessions";
    case SMTP_LIMITS_RESERVED: return "reserved_sessions";
    case SMTP_LIMITS_PER_CLIENT: return "max_sessions_per_client";
    case SMTP_LIMITS_RATE: return "max_connection_rate_per_client";
    }
    return "unknown";
}

static void smtp_limits_note(strbuf *sb, const char *fmt, int a, int b)
{
    if (sb->len) strbuf_puts(sb, "; ");
    strbuf_printf(sb, fmt, a, b);
}

void smtp_limits_derive(const config *cfg, int64_t nofile, smtp_limits_caps *out, char **warnings)
{
    strbuf sb;
    strbuf_init(&sb);
    int64_t budget = nofile - SMTP_LIMITS_FD_RESERVE - SMTP_LIMITS_FD_DELIVERY;
    if (budget > 1000000) budget = 1000000;
    if (budget < SMTP_LIMITS_MIN_SESSIONS) {
        smtp_limits_note(&sb, "the descriptor limit RLIMIT_NOFILE=%d leaves room for no "
                              "submission session; allowing %d anyway (raise LimitNOFILE)",
                         (int)(nofile > 1000000000 ? 1000000000 : nofile), SMTP_LIMITS_MIN_SESSIONS);
        budget = SMTP_LIMITS_MIN_SESSIONS;
    }
    out->fd_budget = (int)budget;
    int max = cfg->max_sessions;
    if (max <= 0) {
        max = budget < SMTP_LIMITS_AUTO_MAX ? (int)budget : SMTP_LIMITS_AUTO_MAX;
    } else if (max > budget) {
        smtp_limits_note(&sb, "submission.max_sessions %d is above what the descriptor limit "
                              "allows; using %d", max, (int)budget);
        max = (int)budget;
    }
    out->max_sessions = max;
    int reserved = cfg->reserved_sessions;
    if (reserved < 0) {
        reserved = max / 5;
    } else if (reserved >= max) {
        smtp_limits_note(&sb, "submission.reserved_sessions %d leaves no session for other "
                              "clients; using %d", reserved, max / 5);
        reserved = max / 5;
    }
    out->reserved = reserved;
    int per = cfg->max_sessions_per_client;
    if (per > max) per = max;   /* not worth a warning: the cap of all sessions bites first */
    out->per_client = per;
    *warnings = sb.len ? util_strdup(sb.buf) : NULL;
    strbuf_free(&sb);
}

smtp_limits *smtp_limits_new(void)
{
    return util_calloc(1, sizeof(smtp_limits));
}

void smtp_limits_free(smtp_limits *t)
{
    if (!t) return;
    for (size_t i = 0; i < SMTP_LIMITS_BUCKETS; i++) {
        smtp_limits_client *c = t->buckets[i], *next;
        for (; c; c = next) {
            next = c->next;
            free(c);
        }
    }
    free(t);
}

static size_t smtp_limits_hash(const char *ip)
{
    uint32_t h = 2166136261u;               /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)ip; *p; p++) h = (h ^ *p) * 16777619u;
    return h % SMTP_LIMITS_BUCKETS;
}

static bool smtp_limits_stale(const smtp_limits_client *c, int64_t now_ms)
{
    return c->sessions == 0 && c->window_end_ms <= now_ms;
}

/* Drops the stale entries of one bucket. */
static void smtp_limits_sweep_bucket(smtp_limits *t, size_t b, int64_t now_ms)
{
    smtp_limits_client **pp = &t->buckets[b];
    while (*pp) {
        smtp_limits_client *c = *pp;
        if (smtp_limits_stale(c, now_ms)) {
            *pp = c->next;
            free(c);
            t->nclients--;
        } else {
            pp = &c->next;
        }
    }
}

static smtp_limits_client *smtp_limits_find(const smtp_limits *t, const char *ip)
{
    for (smtp_limits_client *c = t->buckets[smtp_limits_hash(ip)]; c; c = c->next)
        if (strcmp(c->ip, ip) == 0) return c;
    return NULL;
}

/* The entry of IP, made if needed; NULL when the table is full of live entries. */
static smtp_limits_client *smtp_limits_get(smtp_limits *t, const char *ip, int64_t now_ms)
{
    size_t b = smtp_limits_hash(ip);
    smtp_limits_sweep_bucket(t, b, now_ms);
    smtp_limits_client *c = smtp_limits_find(t, ip);
    if (c) return c;
    if (t->nclients >= SMTP_LIMITS_MAX_CLIENTS) {
        for (size_t i = 0; i < SMTP_LIMITS_BUCKETS; i++) smtp_limits_sweep_bucket(t, i, now_ms);
        if (t->nclients >= SMTP_LIMITS_MAX_CLIENTS) return NULL;
    }
    c = util_calloc(1, sizeof *c);
    snprintf(c->ip, sizeof c->ip, "%s", ip);
    c->next = t->buckets[b];
    t->buckets[b] = c;
    t->nclients++;
    return c;
}

smtp_limits_verdict smtp_limits_admit(smtp_limits *t, const char *ip, bool privileged, bool exempt,
                                      const smtp_limits_caps *caps, const config_rate *rate,
                                      int64_t now_ms, bool *tracked)
{
    *tracked = false;
    smtp_limits_client *c = NULL;
    if (!exempt) {
        c = smtp_limits_get(t, ip, now_ms);
        if (!c) return SMTP_LIMITS_RATE;
        /* every attempt counts against the rate, refused ones too */
        if (rate->count >= 0 && rate->per_ms > 0) {
            if (c->window_end_ms <= now_ms) {
                c->window_end_ms = now_ms + rate->per_ms;
                c->window_count = 0;
            }
            c->window_count++;
        }
    }
    if (t->nsessions >= caps->max_sessions) return SMTP_LIMITS_FULL;
    if (!privileged && t->nunprivileged >= caps->max_sessions - caps->reserved)
        return SMTP_LIMITS_RESERVED;
    if (c) {
        if (caps->per_client >= 0 && c->sessions >= caps->per_client) return SMTP_LIMITS_PER_CLIENT;
        if (rate->count >= 0 && rate->per_ms > 0 && c->window_count > rate->count)
            return SMTP_LIMITS_RATE;
        c->sessions++;
        *tracked = true;
    }
    t->nsessions++;
    if (!privileged) t->nunprivileged++;
    return SMTP_LIMITS_OK;
}

void smtp_limits_promote(smtp_limits *t)
{
    if (t->nunprivileged > 0) t->nunprivileged--;
}

void smtp_limits_release(smtp_limits *t, const char *ip, bool privileged, bool tracked)
{
    if (t->nsessions > 0) t->nsessions--;
    if (!privileged && t->nunprivileged > 0) t->nunprivileged--;
    if (tracked) {
        smtp_limits_client *c = smtp_limits_find(t, ip);
        if (c && c->sessions > 0) c->sessions--;
    }
}

int smtp_limits_sessions(const smtp_limits *t)
{
    return t->nsessions;
}

int smtp_limits_unprivileged(const smtp_limits *t)
{
    return t->nunprivileged;
}

int smtp_limits_client_sessions(const smtp_limits *t, const char *ip)
{
    const smtp_limits_client *c = smtp_limits_find(t, ip);
    return c ? c->sessions : 0;
}

int smtp_limits_clients(const smtp_limits *t)
{
    return t->nclients;
}
