/* timeline.c — the ring of timeline.h: TIMELINE_MAX fixed-size events, no allocation per
 * event, so a flapping IP cannot grow memory. */
#include "base/timeline.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

struct timeline {
    timeline_event ev[TIMELINE_MAX];
    uint64_t total;      /* events recorded; the newest is at (total - 1) % MAX */
    timeline_outcome out[TIMELINE_OUTCOMES];
    uint64_t nout;       /* outcomes recorded, the same way */
};

timeline *timeline_new(void)
{
    return util_calloc(1, sizeof(timeline));
}

void timeline_free(timeline *t)
{
    free(t);
}

void timeline_add(timeline *t, int64_t at_ms, const char *kind, const char *subject,
                  const char *fmt, ...)
{
    if (!t) return;
    timeline_event *e = &t->ev[t->total % TIMELINE_MAX];
    t->total++;
    e->at_ms = at_ms;
    snprintf(e->kind, sizeof e->kind, "%s", kind ? kind : "");
    snprintf(e->subject, sizeof e->subject, "%s", subject ? subject : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->text, sizeof e->text, fmt, ap);
    va_end(ap);
}

size_t timeline_count(const timeline *t)
{
    if (!t) return 0;
    return t->total < TIMELINE_MAX ? (size_t)t->total : TIMELINE_MAX;
}

const timeline_event *timeline_get(const timeline *t, size_t i)
{
    if (!t || i >= timeline_count(t)) return NULL;
    return &t->ev[(t->total - 1 - i) % TIMELINE_MAX];
}

uint64_t timeline_total(const timeline *t)
{
    return t ? t->total : 0;
}

void timeline_add_outcome(timeline *t, int64_t at_ms, const char *outcome, const char *reason,
                          const char *domain, const char *ip, const char *reply)
{
    if (!t) return;
    timeline_outcome *o = &t->out[t->nout % TIMELINE_OUTCOMES];
    t->nout++;
    o->at_ms = at_ms;
    snprintf(o->outcome, sizeof o->outcome, "%s", outcome ? outcome : "");
    snprintf(o->reason, sizeof o->reason, "%s", reason ? reason : "");
    snprintf(o->domain, sizeof o->domain, "%s", domain ? domain : "");
    snprintf(o->ip, sizeof o->ip, "%s", ip ? ip : "");
    snprintf(o->reply, sizeof o->reply, "%s", reply ? reply : "");
}

size_t timeline_outcome_count(const timeline *t)
{
    if (!t) return 0;
    return t->nout < TIMELINE_OUTCOMES ? (size_t)t->nout : TIMELINE_OUTCOMES;
}

const timeline_outcome *timeline_outcome_get(const timeline *t, size_t i)
{
    if (!t || i >= timeline_outcome_count(t)) return NULL;
    return &t->out[(t->nout - 1 - i) % TIMELINE_OUTCOMES];
}
