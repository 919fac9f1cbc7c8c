/* queue.h — the scheduler's pure queue structures, with no I/O and no event loop:
 *
 *   queue_heap  a min-heap of opaque items keyed by a due time (int64_t ms): push, pop and
 *               peek in O(log n) / O(1); items with equal keys come out in the order they
 *               were pushed (FIFO). The deferred jobs wait here for their next attempt.
 *   queue_fair  the ready work across configuration sets: one FIFO per set (intrusive
 *               links, no allocation per item), served from the set of the highest
 *               priority that has work, round-robin among sets of equal priority (the set
 *               served least recently first; among sets never served, the one added last).
 *
 * Both are generic: the heap stores void pointers, the fair queue links a queue_link
 * embedded in the caller's item (QUEUE_ITEM gets the item back) into a queue_set embedded
 * in the caller's set. Neither frees items. */
#ifndef KILN_QUEUE_H
#define KILN_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- min-heap by due time ---- */

typedef struct queue_heap_entry {
    int64_t key;                /* due time */
    uint64_t seq;               /* push order (FIFO among equal keys) */
    void *item;
} queue_heap_entry;

typedef struct queue_heap {
    queue_heap_entry *v;
    size_t n, cap;
    uint64_t seq;
} queue_heap;

void queue_heap_init(queue_heap *h);
/* Frees the heap's array (not the items); the heap is empty and usable again. */
void queue_heap_clear(queue_heap *h);
void queue_heap_push(queue_heap *h, int64_t key, void *item);
/* The item with the smallest key (earliest pushed among equal keys), removed; NULL if
 * the heap is empty. */
void *queue_heap_pop(queue_heap *h);
/* That item without removing it (its key in *key if key is not NULL); NULL if empty. */
void *queue_heap_peek(const queue_heap *h, int64_t *key);
size_t queue_heap_size(const queue_heap *h);
/* The i-th item in storage order (for walking all items; i < size). */
void *queue_heap_at(const queue_heap *h, size_t i);
/* Removes every item for which take(arg, item) returns true (take may keep it elsewhere);
 * take is called once per item in storage order and must not touch the heap. O(n).
 * Returns how many were removed. */
size_t queue_heap_remove_if(queue_heap *h, bool (*take)(void *arg, void *item), void *arg);

/* ---- fair ready queue across configuration sets ---- */

typedef struct queue_link {
    struct queue_link *next;
} queue_link;

/* The item that embeds link l as its member `member`. */
#define QUEUE_ITEM(l, type, member) ((type *)(void *)((char *)(l) - offsetof(type, member)))

typedef struct queue_set {
    int priority;               /* higher is served first */
    queue_link *head, *tail;    /* FIFO of ready items */
    size_t n;
    uint64_t served;            /* when an item of this set was last popped (0: never) */
    struct queue_set *next;     /* all sets of the queue */
} queue_set;

typedef struct queue_fair {
    queue_set *sets;
    size_t n;                   /* items in all sets */
    uint64_t stamp;
} queue_fair;

void queue_fair_init(queue_fair *q);
/* Adds an empty set (the caller owns its memory; it stays until the queue is dropped). */
void queue_fair_add_set(queue_fair *q, queue_set *st, int priority);
/* Appends l to the end of st's FIFO, or puts it at the front. */
void queue_fair_push(queue_fair *q, queue_set *st, queue_link *l);
void queue_fair_push_front(queue_fair *q, queue_set *st, queue_link *l);
/* The next item to serve: the head of the highest-priority set with items, among those
 * the set popped least recently. Removed; its set in *from if from is not NULL. NULL
 * when every set is empty. */
queue_link *queue_fair_pop(queue_fair *q, queue_set **from);
size_t queue_fair_size(const queue_fair *q);

/* ---- a set of spool rowids (the recipients held in memory) ---- */

typedef struct queue_idset {
    int64_t *v;                 /* open addressing, linear probing; 0: empty slot */
    size_t n, cap;
} queue_idset;

void queue_idset_init(queue_idset *set);
void queue_idset_clear(queue_idset *set);
/* Adds id (> 0); false if it was there already. */
bool queue_idset_add(queue_idset *set, int64_t id);
/* Removes id; false if it was not there. */
bool queue_idset_remove(queue_idset *set, int64_t id);
bool queue_idset_has(const queue_idset *set, int64_t id);
size_t queue_idset_size(const queue_idset *set);

/* ---- paging: which recipients are read from the spool, and when ----
 *
 * At most `budget` recipients are held in memory; the rest, and deferred ones not due
 * within `horizon_ms`, stay only in the spool and are paged in by rowid:
 *   - forward pages read the recipients after `cursor` (queued, or deferred and due
 *     within the horizon) when fewer than `low_water` are in memory and some may be
 *     left (`behind`): those past the budget, and messages committed while behind or
 *     while the budget was full (they are not loaded directly then);
 *   - sweeps read every row from the start (skipping those in memory) for deferred
 *     recipients that are out of memory (passed by a forward page as not due soon, or
 *     evicted when deferred far): from `check_ms` on, which is set so that a recipient
 *     due at t is read before t (a sweep reads those due within the horizon).
 * A page only reads rows known to be committed (rowid <= committed_hi) while the spool
 * has an uncommitted batch. Rows already in memory are skipped by the caller (idset), so
 * moving the cursor back is always safe, and no recipient is loaded twice. */
typedef struct queue_pager {
    int64_t budget, low_water, horizon_ms;
    int64_t cursor;             /* queued rows <= cursor were loaded (or are a message
                                   committed out of order, see queue_pager_direct) */
    int64_t committed_hi;       /* rows <= this are committed */
    bool behind;                /* rows > cursor may be only in the spool */
    bool out_deferred;          /* deferred rows may be only in the spool */
    int64_t check_ms;           /* sweep for them from then */
    int64_t sweep_pos;          /* a sweep cut by the budget resumes after this rowid */
} queue_pager;

typedef struct queue_page {
    bool sweep;                 /* a sweep (else a forward page) */
    int64_t after_rowid;        /* read rows with rowid > after_rowid */
    int64_t max_rowid;          /* and rowid <= max_rowid */
    int64_t due_before_ms;      /* deferred ones due before this */
    size_t limit;               /* recipients to load at most */
} queue_page;

/* A pager with nothing loaded yet: behind (recovery starts with a forward page). */
void queue_pager_init(queue_pager *p, int64_t budget, int64_t horizon_ms);
/* Whether to read a page now, and which (*pg). in_mem: recipients in memory;
 * uncommitted: the spool has a batch not committed yet. */
bool queue_pager_plan(const queue_pager *p, int64_t in_mem, int64_t now, bool uncommitted,
                      queue_page *pg);
/* After reading page pg: last_rowid is the last row it went through (loaded or skipped,
 * after_rowid if none), at_end whether it saw every row up to pg->max_rowid (else the
 * limit cut it). */
void queue_pager_read(queue_pager *p, const queue_page *pg, int64_t last_rowid, bool at_end,
                      int64_t now);
/* The spool's earliest deferred due time (0: nothing is deferred) at a sweep check: no
 * sweep is needed before it nears. Returns whether a sweep is still due now. */
bool queue_pager_check(queue_pager *p, int64_t next_due_ms, int64_t now);
/* A message was committed with n pending rows from min_rowid to max_rowid: true if it
 * is to be loaded at once (under budget and not behind); else the pager reads it later. */
bool queue_pager_direct(queue_pager *p, int64_t in_mem, size_t n, int64_t min_rowid,
                        int64_t max_rowid);
/* Whether a job deferred until due_ms stays in memory (due within the horizon). */
bool queue_pager_keep(const queue_pager *p, int64_t due_ms, int64_t now);
/* A deferred job due at due_ms left memory (see queue_pager_keep). */
void queue_pager_evicted(queue_pager *p, int64_t due_ms);
/* Whether some pending recipients may be in the spool only. */
bool queue_pager_outside(const queue_pager *p);
/* When a sweep is due (0: none is). */
int64_t queue_pager_wake_ms(const queue_pager *p);
/* Whether a forward page is wanted (behind, under the low-water mark). */
bool queue_pager_hungry(const queue_pager *p, int64_t in_mem);

/* ---- kilnctl status: Queued and Deferred when some recipients are in the spool only ----
 *
 * In memory the scheduler knows where each recipient is: `queued` (ready, waiting or in
 * flight, a retry included) or `deferred` (waiting for its retry time). For the spool it
 * knows how many of those in memory were never attempted (`fresh`: QUEUED rows) and how
 * many were (`retry`: DEFERRED rows). The spool's counts of QUEUED and DEFERRED rows,
 * minus those in memory, are the ones in the spool only: never attempted ones are queued,
 * attempted ones wait for their retry time. A spool count below what memory holds (the
 * spool lags memory by a batch) adds nothing: nothing is ever counted negative or twice. */
typedef struct queue_mem_counts {
    int64_t queued, deferred;   /* by place in memory */
    int64_t fresh, retry;       /* by spool state: queued + deferred == fresh + retry */
} queue_mem_counts;
void queue_status_counts(const queue_mem_counts *mem, int64_t spool_queued,
                         int64_t spool_deferred, int64_t *queued, int64_t *deferred);

#endif
