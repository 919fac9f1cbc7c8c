/* stats.c — send statistics (see stats.h): counts events as they are written (stats_count),
 * floors their time to 15-minute buckets and adds the counts to the spool's stats table in
 * the current batch; outbox rows of an older kiln are parsed with jansson when drained. */
#include "store/stats.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/spool.h"
#include "base/util.h"

#define STATS_OUTBOX_PAGE 1000
#define STATS_LEGACY_KEY "stats:counted-at-insert-after"

int64_t stats_bucket_ms(int64_t ms)
{
    int64_t r = ms % STATS_BUCKET_MS;
    if (r < 0) r += STATS_BUCKET_MS;
    return ms - r;
}

/* "YYYY-MM-DDTHH:MM:SS[.fff]Z" (what util_iso8601 writes) -> ms; false if it is not that. */
static bool stats_parse_time(const char *s, int64_t *ms)
{
    if (!s) return false;
    int y, mo, d, h, mi, sec, n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19)
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return false;
    const char *p = s + n;
    int64_t frac = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3) frac = frac * 10 + (*p - '0');
        if (digits == 0) return false;
        for (; digits < 3; digits++) frac *= 10;
    }
    if (strcmp(p, "Z") != 0) return false;
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    *ms = (int64_t)t * 1000 + frac;
    return true;
}

static const char *stats_str_at(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

bool stats_parse_event(const char *json, stats_counts *out)
{
    memset(out, 0, sizeof *out);
    json_t *ev = json_loads(json ? json : "", 0, NULL);
    if (!json_is_object(ev)) {
        json_decref(ev);
        return false;
    }
    const char *type = stats_str_at(ev, "eventType");
    json_t *mail = json_object_get(ev, "mail");
    const char *when = stats_str_at(mail, "timestamp");
    bool counts = true;
    if (!type) {
        counts = false;
    } else if (strcmp(type, "Send") == 0) {
        out->attempts = (int64_t)json_array_size(json_object_get(mail, "destination"));
    } else if (strcmp(type, "Reject") == 0) {
        out->rejects = 1;
    } else if (strcmp(type, "Bounce") == 0) {
        json_t *b = json_object_get(ev, "bounce");
        out->bounces = (int64_t)json_array_size(json_object_get(b, "bouncedRecipients"));
        if (stats_str_at(b, "timestamp")) when = stats_str_at(b, "timestamp");
    } else if (strcmp(type, "Complaint") == 0) {
        json_t *c = json_object_get(ev, "complaint");
        out->complaints = (int64_t)json_array_size(json_object_get(c, "complainedRecipients"));
        if (stats_str_at(c, "timestamp")) when = stats_str_at(c, "timestamp");
    } else {
        counts = false;
    }
    int64_t ms = 0;
    if (counts && !stats_parse_time(when, &ms)) counts = false;
    if (counts && out->attempts + out->bounces + out->complaints + out->rejects == 0)
        counts = false;
    json_decref(ev);
    if (!counts) {
        memset(out, 0, sizeof *out);
        return false;
    }
    out->bucket_ms = stats_bucket_ms(ms);
    return true;
}

void stats_count_event(spool *sp, const char *json)
{
    stats_counts c;
    if (!stats_parse_event(json, &c)) return;
    /* A failed write fails the batch; the flush reports it (and the outbox rows stay). */
    (void)spool_stats_add(sp, c.bucket_ms, c.attempts, c.bounces, c.complaints, c.rejects);
}

typedef struct outbox_page {
    spool *sp;
    int64_t upto, last;
    size_t n;
} outbox_page;

static void stats_count_row(void *arg, int64_t id, const char *set, const char *json)
{
    (void)set;
    outbox_page *p = arg;
    p->n++;
    p->last = id;
    if (id <= p->upto) stats_count_event(p->sp, json);
}

int stats_count_outbox(spool *sp, int64_t after, int64_t upto)
{
    outbox_page p = {sp, upto, after, 0};
    for (;;) {
        p.n = 0;
        if (spool_each_event(sp, p.last, STATS_OUTBOX_PAGE, stats_count_row, &p) < 0) return -1;
        if (p.n < STATS_OUTBOX_PAGE || p.last >= upto) return 0;
    }
}

void stats_count(spool *sp, stats_kind kind, int64_t ts_ms, int64_t n)
{
    if (n <= 0) return;
    int64_t c[4] = {0, 0, 0, 0};
    c[kind] = n;
    (void)spool_stats_add(sp, stats_bucket_ms(ts_ms), c[STATS_ATTEMPTS], c[STATS_BOUNCES],
                          c[STATS_COMPLAINTS], c[STATS_REJECTS]);
}

int stats_legacy_outbox(spool *sp, int64_t *legacy_upto)
{
    *legacy_upto = 0;
    char *v = NULL;
    if (spool_kv_get(sp, STATS_LEGACY_KEY, &v) != 0) return -1;
    if (v) {
        *legacy_upto = strtoll(v, NULL, 10);
        free(v);
        return 0;
    }
    int64_t last = 0;
    if (spool_last_event_id(sp, &last) != 0) return -1;
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)last);
    if (spool_kv_put(sp, STATS_LEGACY_KEY, buf) != 0 || spool_flush(sp) != 0) return -1;
    *legacy_upto = last;
    return 0;
}
