/* queue.c — the scheduler's pure queue structures: the due-time min-heap, the fair ready queue
 * across configuration sets, the rowid set, the pager's decisions and the status counts
 * (see queue.h). */
#include "scheduler/queue.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

/* ------------------------------------------------------------------ heap */

void queue_heap_init(queue_heap *h)
{
    memset(h, 0, sizeof *h);
}

void queue_heap_clear(queue_heap *h)
{
    free(h->v);
    queue_heap_init(h);
}

static bool entry_before(const queue_heap_entry *a, const queue_heap_entry *b)
{
    if (a->key != b->key) return a->key < b->key;
    return a->seq < b->seq;
}

static void sift_up(queue_heap *h, size_t i)
{
    queue_heap_entry e = h->v[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!entry_before(&e, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = e;
}

static void sift_down(queue_heap *h, size_t i)
{
    queue_heap_entry e = h->v[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = l;
        if (l >= h->n) break;
        if (r < h->n && entry_before(&h->v[r], &h->v[l])) m = r;
        if (!entry_before(&h->v[m], &e)) break;
        h->v[i] = h->v[m];
        i = m;
    }
    h->v[i] = e;
}

void queue_heap_push(queue_heap *h, int64_t key, void *item)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        h->v = util_realloc(h->v, h->cap * sizeof *h->v);
    }
    h->v[h->n] = (queue_heap_entry){key, ++h->seq, item};
    sift_up(h, h->n++);
}

void *queue_heap_pop(queue_heap *h)
{
    if (!h->n) return NULL;
    void *top = h->v[0].item;
    h->v[0] = h->v[--h->n];
    if (h->n) sift_down(h, 0);
    return top;
}

void *queue_heap_peek(const queue_heap *h, int64_t *key)
{
    if (!h->n) {
        if (key) *key = 0;
        return NULL;
    }
    if (key) *key = h->v[0].key;
    return h->v[0].item;
}

size_t queue_heap_size(const queue_heap *h)
{
    return h->n;
}

void *queue_heap_at(const queue_heap *h, size_t i)
{
    if (i >= h->n) util_fatal("queue: heap index %zu out of %zu items", i, h->n);
    return h->v[i].item;
}

size_t queue_heap_remove_if(queue_heap *h, bool (*take)(void *arg, void *item), void *arg)
{
    size_t keep = 0;
    for (size_t i = 0; i < h->n; i++)
        if (!take(arg, h->v[i].item)) h->v[keep++] = h->v[i];
    size_t removed = h->n - keep;
    h->n = keep;
    if (removed)
        for (size_t i = h->n / 2; i-- > 0;) sift_down(h, i);
    return removed;
}

/* ------------------------------------------------------------------ fair ready queue */

void queue_fair_init(queue_fair *q)
{
    memset(q, 0, sizeof *q);
}

void queue_fair_add_set(queue_fair *q, queue_set *st, int priority)
{
    memset(st, 0, sizeof *st);
    st->priority = priority;
    st->next = q->sets;
    q->sets = st;
}

void queue_fair_push(queue_fair *q, queue_set *st, queue_link *l)
{
    l->next = NULL;
    if (st->tail) st->tail->next = l;
    else st->head = l;
    st->tail = l;
    st->n++;
    q->n++;
}

void queue_fair_push_front(queue_fair *q, queue_set *st, queue_link *l)
{
    l->next = st->head;
    st->head = l;
    if (!st->tail) st->tail = l;
    st->n++;
    q->n++;
}

queue_link *queue_fair_pop(queue_fair *q, queue_set **from)
{
    queue_set *best = NULL;
    for (queue_set *st = q->sets; st; st = st->next) {
        if (!st->head) continue;
        if (!best || st->priority > best->priority ||
            (st->priority == best->priority && st->served < best->served))
            best = st;
    }
    if (from) *from = best;
    if (!best) return NULL;
    queue_link *l = best->head;
    best->head = l->next;
    if (!best->head) best->tail = NULL;
    best->n--;
    q->n--;
    best->served = ++q->stamp;
    l->next = NULL;
    return l;
}

size_t queue_fair_size(const queue_fair *q)
{
    return q->n;
}

/* ------------------------------------------------------------------ rowid set */

void queue_idset_init(queue_idset *set)
{
    memset(set, 0, sizeof *set);
}

void queue_idset_clear(queue_idset *set)
{
    free(set->v);
    queue_idset_init(set);
}

static size_t id_slot(int64_t id, size_t cap)
{
    uint64_t h = (uint64_t)id * UINT64_C(0x9e3779b97f4a7c15);
    return (size_t)(h >> 17) & (cap - 1);
}

static void idset_grow(queue_idset *set)
{
    size_t ncap = set->cap ? set->cap * 2 : 1024;
    int64_t *nv = util_calloc(ncap, sizeof *nv);
    for (size_t i = 0; i < set->cap; i++) {
        if (!set->v[i]) continue;
        size_t k = id_slot(set->v[i], ncap);
        while (nv[k]) k = (k + 1) & (ncap - 1);
        nv[k] = set->v[i];
    }
    free(set->v);
    set->v = nv;
    set->cap = ncap;
}

bool queue_idset_add(queue_idset *set, int64_t id)
{
    if (id <= 0) util_fatal("queue: rowid %lld is not positive", (long long)id);
    if ((set->n + 1) * 2 > set->cap) idset_grow(set);
    size_t k = id_slot(id, set->cap);
    for (; set->v[k]; k = (k + 1) & (set->cap - 1))
        if (set->v[k] == id) return false;
    set->v[k] = id;
    set->n++;
    return true;
}

bool queue_idset_has(const queue_idset *set, int64_t id)
{
    if (!set->cap || id <= 0) return false;
    for (size_t k = id_slot(id, set->cap); set->v[k]; k = (k + 1) & (set->cap - 1))
        if (set->v[k] == id) return true;
    return false;
}

bool queue_idset_remove(queue_idset *set, int64_t id)
{
    if (!set->cap || id <= 0) return false;
    size_t mask = set->cap - 1, k = id_slot(id, set->cap);
    while (set->v[k] != id) {
        if (!set->v[k]) return false;
        k = (k + 1) & mask;
    }
    /* backward-shift deletion: no tombstones */
    size_t hole = k;
    for (size_t j = (k + 1) & mask; set->v[j]; j = (j + 1) & mask) {
        size_t home = id_slot(set->v[j], set->cap);
        /* move v[j] into the hole unless its home lies cyclically in (hole, j] */
        bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (stays) continue;
        set->v[hole] = set->v[j];
        hole = j;
    }
    set->v[hole] = 0;
    set->n--;
    return true;
}

size_t queue_idset_size(const queue_idset *set)
{
    return set->n;
}

/* ------------------------------------------------------------------ paging decisions */

void queue_pager_init(queue_pager *p, int64_t budget, int64_t horizon_ms)
{
    memset(p, 0, sizeof *p);
    p->budget = budget > 0 ? budget : 1;
    p->low_water = (p->budget + 1) / 2;
    p->horizon_ms = horizon_ms > 1 ? horizon_ms : 2;
    p->behind = true;
}

bool queue_pager_hungry(const queue_pager *p, int64_t in_mem)
{
    return p->behind && in_mem < p->low_water;
}

bool queue_pager_plan(const queue_pager *p, int64_t in_mem, int64_t now, bool uncommitted,
                      queue_page *pg)
{
    int64_t room = p->budget - in_mem;
    if (room <= 0) return false;
    int64_t cap = uncommitted ? p->committed_hi : INT64_MAX;
    memset(pg, 0, sizeof *pg);
    pg->due_before_ms = now + p->horizon_ms;
    pg->limit = (size_t)room;
    pg->max_rowid = cap;
    if (p->out_deferred && now >= p->check_ms && p->sweep_pos < cap) {
        pg->sweep = true;
        pg->after_rowid = p->sweep_pos;
        return true;
    }
    if (queue_pager_hungry(p, in_mem) && p->cursor < cap) {
        pg->after_rowid = p->cursor;
        return true;
    }
    return false;
}

void queue_pager_read(queue_pager *p, const queue_page *pg, int64_t last_rowid, bool at_end,
                      int64_t now)
{
    if (pg->max_rowid == INT64_MAX && last_rowid > p->committed_hi) p->committed_hi = last_rowid;
    if (pg->sweep) {
        if (at_end) {
            /* every deferred row not loaded is due at or after due_before_ms */
            p->sweep_pos = 0;
            p->check_ms = now + p->horizon_ms / 2;
        } else {
            p->sweep_pos = last_rowid;
        }
        return;
    }
    /* a forward page may pass deferred rows not due within the horizon: a sweep reads
     * them before they are due */
    if (!p->out_deferred || p->check_ms > now + p->horizon_ms / 2)
        p->check_ms = now + p->horizon_ms / 2;
    p->out_deferred = true;
    if (at_end) {
        if (pg->max_rowid == INT64_MAX) p->behind = false;
        else if (pg->max_rowid > last_rowid) last_rowid = pg->max_rowid;
    }
    if (last_rowid > p->cursor) p->cursor = last_rowid;
}

bool queue_pager_check(queue_pager *p, int64_t next_due_ms, int64_t now)
{
    if (next_due_ms == 0) {
        p->out_deferred = false;
        p->sweep_pos = 0;
        return false;
    }
    if (next_due_ms >= now + p->horizon_ms) {
        p->check_ms = next_due_ms - p->horizon_ms / 2;
        return false;
    }
    return true;
}

bool queue_pager_direct(queue_pager *p, int64_t in_mem, size_t n, int64_t min_rowid,
                        int64_t max_rowid)
{
    if (max_rowid > p->committed_hi) p->committed_hi = max_rowid;
    if (!p->behind && in_mem + (int64_t)n <= p->budget) {
        if (max_rowid > p->cursor) p->cursor = max_rowid;
        return true;
    }
    p->behind = true;
    if (min_rowid - 1 < p->cursor) p->cursor = min_rowid - 1;
    return false;
}

bool queue_pager_keep(const queue_pager *p, int64_t due_ms, int64_t now)
{
    return due_ms < now + p->horizon_ms;
}

void queue_pager_evicted(queue_pager *p, int64_t due_ms)
{
    int64_t at = due_ms - p->horizon_ms / 2;
    if (!p->out_deferred || at < p->check_ms) p->check_ms = at;
    p->out_deferred = true;
}

bool queue_pager_outside(const queue_pager *p)
{
    return p->behind || p->out_deferred;
}

int64_t queue_pager_wake_ms(const queue_pager *p)
{
    return p->out_deferred ? p->check_ms : 0;
}

/* ------------------------------------------------------------------ status counts */

void queue_status_counts(const queue_mem_counts *mem, int64_t spool_queued,
                         int64_t spool_deferred, int64_t *queued, int64_t *deferred)
{
    int64_t out_fresh = spool_queued - mem->fresh, out_retry = spool_deferred - mem->retry;
    *queued = mem->queued + (out_fresh > 0 ? out_fresh : 0);
    *deferred = mem->deferred + (out_retry > 0 ? out_retry : 0);
}
