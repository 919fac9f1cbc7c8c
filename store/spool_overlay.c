/* spool_overlay.c — values written to the spool but not committed yet, so that the loop's
 * reads see its own writes where it needs to (a kv value read back, a suppression entry
 * looked up at RCPT): one entry per key with the last uncommitted write and its batch; the
 * entry goes when that batch is reaped (committed or failed: either way the database has
 * the answer from then on).
 *
 * Written by hand: an open-addressing table of a few dozen lines; the Debian-packaged maps
 * (glib's GHashTable) would be a new dependency for this one use, and hsearch(3) keeps one
 * global table without deletion. Deletion shifts the following entries back (no tombstones),
 * so the table never fills with dead slots. */
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "store/spool_internal.h"

static size_t spool_ov_hash(const char *key)
{
    uint64_t h = UINT64_C(14695981039346656037);   /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= UINT64_C(1099511628211);
    }
    return (size_t)h;
}

/* The slot of key, or the empty slot where it would go (cap > n, a power of two). */
static size_t spool_ov_slot(const spool_overlay *o, const char *key)
{
    size_t mask = o->cap - 1, i = spool_ov_hash(key) & mask;
    while (o->v[i].key && strcmp(o->v[i].key, key) != 0) i = (i + 1) & mask;
    return i;
}

static void spool_ov_grow(spool_overlay *o)
{
    spool_ov_entry *old = o->v;
    size_t oldcap = o->cap;
    o->cap = o->cap ? o->cap * 2 : 16;
    o->v = util_calloc(o->cap, sizeof *o->v);
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].key) o->v[spool_ov_slot(o, old[i].key)] = old[i];
    free(old);
}

void spool_overlay_put(spool_overlay *o, const char *key, const char *value, int64_t at_ms,
                       uint64_t seq)
{
    if ((o->n + 1) * 2 > o->cap) spool_ov_grow(o);
    spool_ov_entry *e = &o->v[spool_ov_slot(o, key)];
    if (!e->key) {
        e->key = util_strdup(key);
        o->n++;
    }
    free(e->value);
    e->value = value ? util_strdup(value) : NULL;
    e->at_ms = at_ms;
    e->seq = seq;
}

const spool_ov_entry *spool_overlay_get(const spool_overlay *o, const char *key)
{
    if (o->n == 0) return NULL;
    const spool_ov_entry *e = &o->v[spool_ov_slot(o, key)];
    return e->key ? e : NULL;
}

void spool_overlay_settle(spool_overlay *o, const char *key, uint64_t seq)
{
    if (o->n == 0) return;
    size_t mask = o->cap - 1, i = spool_ov_slot(o, key);
    if (!o->v[i].key || o->v[i].seq > seq) return;   /* absent, or written again later */
    free(o->v[i].key);
    free(o->v[i].value);
    o->v[i] = (spool_ov_entry){0};
    o->n--;
    /* backward shift: move up every following entry that may no longer be found */
    for (size_t j = (i + 1) & mask; o->v[j].key; j = (j + 1) & mask) {
        size_t home = spool_ov_hash(o->v[j].key) & mask;
        /* j's entry stays unless the hole at i lies between its home and j (cyclically) */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (stays) continue;
        o->v[i] = o->v[j];
        o->v[j] = (spool_ov_entry){0};
        i = j;
    }
}

void spool_overlay_free(spool_overlay *o)
{
    for (size_t i = 0; i < o->cap; i++) {
        free(o->v[i].key);
        free(o->v[i].value);
    }
    free(o->v);
    memset(o, 0, sizeof *o);
}
