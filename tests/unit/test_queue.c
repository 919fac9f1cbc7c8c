/* test_queue.c — the scheduler's queue structures (scheduler/queue.c): the due-time
 * min-heap (ordering over many random due times, FIFO among equal ones, peek, removal of
 * chosen items) and the fair ready queue across configuration sets (priority first,
 * round-robin among equal priorities, no starvation behind a large backlog, empty sets),
 * the rowid set and the pager, and kilnctl status's counts when some recipients are in the
 * spool only. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/queue.h"
#include "tests/unit/testlib.h"

/* deterministic pseudo-random numbers (xorshift64) */
static uint64_t rnd_next(uint64_t *st)
{
    uint64_t x = *st;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *st = x;
}

typedef struct hitem {
    int64_t due;
    int id;                     /* push order */
} hitem;

/* ------------------------------------------------------------------ heap */

START_TEST(heap_empty)
{
    queue_heap h;
    queue_heap_init(&h);
    int64_t key = 42;
    ck_assert_ptr_null(queue_heap_pop(&h));
    ck_assert_ptr_null(queue_heap_peek(&h, &key));
    ck_assert_int_eq(key, 0);
    ck_assert_uint_eq(queue_heap_size(&h), 0);
    queue_heap_clear(&h);
}
END_TEST

/* Many random due times (some equal) come out in order of due time, and equal due times
 * in the order they were pushed; peek always shows what pop returns next. */
START_TEST(heap_random_order)
{
    enum { N = 20000 };
    static const int64_t spans[] = {1000000, 50, 1};   /* few ties, many ties, all equal */
    for (size_t t = 0; t < sizeof spans / sizeof spans[0]; t++) {
        uint64_t seed = 0x9e3779b97f4a7c15u + t;
        hitem *items = calloc(N, sizeof *items);
        queue_heap h;
        queue_heap_init(&h);
        for (int i = 0; i < N; i++) {
            items[i].due = 1700000000000 + (int64_t)(rnd_next(&seed) % (uint64_t)spans[t]);
            items[i].id = i;
            queue_heap_push(&h, items[i].due, &items[i]);
        }
        ck_assert_uint_eq(queue_heap_size(&h), N);
        const hitem *prev = NULL;
        for (int i = 0; i < N; i++) {
            int64_t key;
            hitem *peek = queue_heap_peek(&h, &key);
            hitem *it = queue_heap_pop(&h);
            ck_assert_ptr_eq(peek, it);
            ck_assert_int_eq(key, it->due);
            if (prev) {
                ck_assert_int_le(prev->due, it->due);
                if (prev->due == it->due) ck_assert_int_lt(prev->id, it->id);
            }
            prev = it;
        }
        ck_assert_ptr_null(queue_heap_pop(&h));
        queue_heap_clear(&h);
        free(items);
    }
}
END_TEST

/* Pushes interleaved with pops (a timer firing while work is deferred) keep the order. */
START_TEST(heap_interleaved)
{
    enum { N = 5000 };
    uint64_t seed = 12345;
    hitem *items = calloc(N, sizeof *items);
    queue_heap h;
    queue_heap_init(&h);
    int pushed = 0, popped = 0;
    int64_t now = 0;
    while (popped < N) {
        if (pushed < N && (rnd_next(&seed) % 3 != 0 || queue_heap_size(&h) == 0)) {
            items[pushed].due = now + (int64_t)(rnd_next(&seed) % 10000);
            items[pushed].id = pushed;
            queue_heap_push(&h, items[pushed].due, &items[pushed]);
            pushed++;
        } else {
            hitem *it = queue_heap_pop(&h);
            ck_assert_int_ge(it->due, now);   /* never earlier than one already popped */
            now = it->due;
            popped++;
        }
    }
    ck_assert_uint_eq(queue_heap_size(&h), 0);
    queue_heap_clear(&h);
    free(items);
}
END_TEST

static bool take_odd(void *arg, void *item)
{
    int *taken = arg;
    hitem *it = item;
    if (it->id % 2 == 0) return false;
    (*taken)++;
    return true;
}

/* Removing chosen items (jobs waiting for an IP when the pools change) leaves the others
 * in order, ties still FIFO. */
START_TEST(heap_remove_if)
{
    enum { N = 3001 };
    uint64_t seed = 777;
    hitem *items = calloc(N, sizeof *items);
    queue_heap h;
    queue_heap_init(&h);
    for (int i = 0; i < N; i++) {
        items[i].due = (int64_t)(rnd_next(&seed) % 100);
        items[i].id = i;
        queue_heap_push(&h, items[i].due, &items[i]);
    }
    int taken = 0;
    ck_assert_uint_eq(queue_heap_remove_if(&h, take_odd, &taken), N / 2);
    ck_assert_int_eq(taken, N / 2);
    ck_assert_uint_eq(queue_heap_size(&h), N - N / 2);
    for (size_t i = 0; i < queue_heap_size(&h); i++)
        ck_assert_int_eq(((hitem *)queue_heap_at(&h, i))->id % 2, 0);
    const hitem *prev = NULL;
    for (hitem *it; (it = queue_heap_pop(&h)) != NULL; prev = it) {
        ck_assert_int_eq(it->id % 2, 0);
        if (prev) {
            ck_assert_int_le(prev->due, it->due);
            if (prev->due == it->due) ck_assert_int_lt(prev->id, it->id);
        }
    }
    /* removing nothing from an empty heap */
    ck_assert_uint_eq(queue_heap_remove_if(&h, take_odd, &taken), 0);
    queue_heap_clear(&h);
    free(items);
}
END_TEST

/* ------------------------------------------------------------------ fair queue */

typedef struct fitem {
    queue_link link;
    char set;                   /* 'a', 'b', ... */
    int n;                      /* order within its set */
} fitem;

#define MAXSETS 4
#define MAXITEMS 64

/* One scenario: set priorities (in the order they are added), the items pushed (one
 * letter per item, its set), and the sets the items must come out of. */
typedef struct fair_case {
    const char *name;
    int nsets;
    int prio[MAXSETS];
    const char *push;
    const char *expect;
} fair_case;

static const fair_case fair_cases[] = {
    {"higher priority first", 2, {0, 10}, "aaabbb", "bbbaaa"},
    {"higher priority first, pushed later", 2, {10, 0}, "bbbaaa", "aaabbb"},
    {"negative priority last", 2, {-5, 0}, "aabb", "bbaa"},
    {"equal priorities alternate", 2, {0, 0}, "aaabbb", "bababa"},
    {"three equal sets round-robin", 3, {0, 0, 0}, "aaabbbccc", "cbacbacba"},
    {"uneven backlogs alternate until one is empty", 2, {0, 0}, "aaaaab", "baaaaa"},
    {"equal among the highest, lower after", 3, {0, 5, 5}, "aabbcc", "cbcbaa"},
    {"empty sets are skipped", 4, {9, 0, 0, 9}, "bbcc", "cbcb"},
    {"nothing pushed", 3, {0, 1, 2}, "", ""},
};

START_TEST(fair_table)
{
    const fair_case *c = &fair_cases[_i];
    queue_fair q;
    queue_fair_init(&q);
    queue_set sets[MAXSETS];
    for (int i = 0; i < c->nsets; i++) queue_fair_add_set(&q, &sets[i], c->prio[i]);
    fitem items[MAXITEMS];
    int per_set[MAXSETS] = {0};
    size_t n = strlen(c->push);
    for (size_t i = 0; i < n; i++) {
        int si = c->push[i] - 'a';
        items[i].set = c->push[i];
        items[i].n = per_set[si]++;
        queue_fair_push(&q, &sets[si], &items[i].link);
    }
    ck_assert_uint_eq(queue_fair_size(&q), n);
    char got[MAXITEMS + 1];
    int next_n[MAXSETS] = {0};
    size_t k = 0;
    queue_set *from;
    for (queue_link *l; (l = queue_fair_pop(&q, &from)) != NULL;) {
        fitem *it = QUEUE_ITEM(l, fitem, link);
        ck_assert_ptr_eq(from, &sets[it->set - 'a']);
        ck_assert_msg(it->n == next_n[it->set - 'a']++, "%s: set %c not FIFO", c->name, it->set);
        got[k++] = it->set;
    }
    got[k] = '\0';
    ck_assert_msg(strcmp(got, c->expect) == 0, "%s: served %s, expected %s", c->name, got,
                  c->expect);
    ck_assert_uint_eq(queue_fair_size(&q), 0);
    ck_assert_ptr_null(queue_fair_pop(&q, &from));
    ck_assert_ptr_null(from);
}
END_TEST

/* A set with a 2,000-job backlog being served does not keep a small set of equal
 * priority that gets work later waiting more than one round: its jobs alternate with the
 * backlog's at once. The same when the small set was served long before. */
START_TEST(fair_backlog_no_starvation)
{
    enum { BIG = 2000, SMALL = 5 };
    for (int served_before = 0; served_before <= 1; served_before++) {
        queue_fair q;
        queue_fair_init(&q);
        queue_set big, small;
        queue_fair_add_set(&q, &small, 0);
        queue_fair_add_set(&q, &big, 0);
        fitem *items = calloc(BIG + SMALL + 1, sizeof *items);
        if (served_before) {
            items[BIG + SMALL].set = 's';
            queue_fair_push(&q, &small, &items[BIG + SMALL].link);
            ck_assert_ptr_eq(queue_fair_pop(&q, NULL), &items[BIG + SMALL].link);
        }
        for (int i = 0; i < BIG; i++) {
            items[i].set = 'b';
            items[i].n = i;
            queue_fair_push(&q, &big, &items[i].link);
        }
        for (int i = 0; i < 700; i++) ck_assert_ptr_eq(queue_fair_pop(&q, NULL), &items[i].link);
        for (int i = 0; i < SMALL; i++) {
            items[BIG + i].set = 's';
            items[BIG + i].n = i;
            queue_fair_push(&q, &small, &items[BIG + i].link);
        }
        /* next 2 * SMALL pops: small, big, small, big, ... */
        int big_next = 700;
        for (int i = 0; i < SMALL; i++) {
            fitem *s = QUEUE_ITEM(queue_fair_pop(&q, NULL), fitem, link);
            ck_assert_int_eq(s->set, 's');
            ck_assert_int_eq(s->n, i);
            fitem *b = QUEUE_ITEM(queue_fair_pop(&q, NULL), fitem, link);
            ck_assert_int_eq(b->set, 'b');
            ck_assert_int_eq(b->n, big_next++);
        }
        ck_assert_uint_eq(queue_fair_size(&q), BIG - big_next);
        ck_assert_uint_eq(small.n, 0);
        ck_assert_ptr_null(small.head);
        ck_assert_ptr_null(small.tail);
        while (queue_fair_pop(&q, NULL)) {}
        ck_assert_uint_eq(big.n, 0);
        free(items);
    }
}
END_TEST

/* A job pushed back to the front (not started after all, or released from a held FIFO)
 * is the next of its set; a set that empties and gets work again is served again; a
 * priority changed by a reload counts from the next pop. */
START_TEST(fair_front_refill_reprioritize)
{
    queue_fair q;
    queue_fair_init(&q);
    queue_set a, b;
    queue_fair_add_set(&q, &a, 0);
    queue_fair_add_set(&q, &b, 0);
    fitem it[6];
    memset(it, 0, sizeof it);
    queue_fair_push(&q, &a, &it[0].link);
    queue_fair_push(&q, &a, &it[1].link);
    queue_fair_push_front(&q, &a, &it[2].link);
    ck_assert_uint_eq(a.n, 3);
    ck_assert_ptr_eq(queue_fair_pop(&q, NULL), &it[2].link);
    ck_assert_ptr_eq(queue_fair_pop(&q, NULL), &it[0].link);
    ck_assert_ptr_eq(queue_fair_pop(&q, NULL), &it[1].link);
    ck_assert_ptr_null(queue_fair_pop(&q, NULL));
    /* push_front into an empty set */
    queue_fair_push_front(&q, &b, &it[3].link);
    ck_assert_ptr_eq(b.tail, &it[3].link);
    queue_fair_push(&q, &a, &it[4].link);
    /* b never served: it goes before a */
    ck_assert_ptr_eq(queue_fair_pop(&q, NULL), &it[3].link);
    ck_assert_ptr_eq(queue_fair_pop(&q, NULL), &it[4].link);
    /* a reload raises a's priority above b's */
    queue_fair_push(&q, &b, &it[5].link);
    queue_fair_push(&q, &a, &it[0].link);
    a.priority = 3;
    ck_assert_ptr_eq(queue_fair_pop(&q, NULL), &it[0].link);
    ck_assert_ptr_eq(queue_fair_pop(&q, NULL), &it[5].link);
    ck_assert_uint_eq(queue_fair_size(&q), 0);
}
END_TEST


/* ------------------------------------------------------------------ rowid set */

/* Random adds and removes agree with a plain array model, across growth and the
 * backward-shift deletion of colliding entries. */
START_TEST(idset_model)
{
    enum { RANGE = 6000, OPS = 60000 };
    unsigned char *in = calloc(RANGE + 1, 1);
    queue_idset set;
    queue_idset_init(&set);
    ck_assert(!queue_idset_has(&set, 5));
    ck_assert(!queue_idset_remove(&set, 5));
    uint64_t seed = 99;
    size_t n = 0;
    for (int i = 0; i < OPS; i++) {
        int64_t id = 1 + (int64_t)(rnd_next(&seed) % RANGE);
        if (rnd_next(&seed) % 3) {
            ck_assert(queue_idset_add(&set, id) == !in[id]);
            if (!in[id]) n++;
            in[id] = 1;
        } else {
            ck_assert(queue_idset_remove(&set, id) == !!in[id]);
            if (in[id]) n--;
            in[id] = 0;
        }
        ck_assert_uint_eq(queue_idset_size(&set), n);
    }
    for (int64_t id = 1; id <= RANGE; id++) ck_assert(queue_idset_has(&set, id) == !!in[id]);
    /* large rowids, beyond any small range */
    ck_assert(queue_idset_add(&set, INT64_C(1) << 40));
    ck_assert(queue_idset_has(&set, INT64_C(1) << 40));
    queue_idset_clear(&set);
    ck_assert_uint_eq(queue_idset_size(&set), 0);
    ck_assert(!queue_idset_has(&set, 1));
    free(in);
}
END_TEST

/* ------------------------------------------------------------------ paging decisions */

#define H INT64_C(600000)          /* horizon: 10 minutes */
#define T0 INT64_C(1700000000000)

/* Start-up, budget, low-water mark, and the cursor. */
START_TEST(pager_recovery_and_low_water)
{
    queue_pager p;
    queue_page pg;
    queue_pager_init(&p, 100, H);
    ck_assert(queue_pager_outside(&p));
    ck_assert(queue_pager_plan(&p, 0, T0, false, &pg));
    ck_assert(!pg.sweep);
    ck_assert_int_eq(pg.after_rowid, 0);
    ck_assert_int_eq(pg.max_rowid, INT64_MAX);
    ck_assert_int_eq(pg.due_before_ms, T0 + H);
    ck_assert_uint_eq(pg.limit, 100);
    /* the budget cut the page at rowid 150 */
    queue_pager_read(&p, &pg, 150, false, T0);
    ck_assert_int_eq(p.cursor, 150);
    ck_assert(p.behind);
    ck_assert(!queue_pager_plan(&p, 100, T0, false, &pg));   /* full */
    ck_assert(!queue_pager_plan(&p, 60, T0, false, &pg));    /* above the low-water mark */
    ck_assert(queue_pager_plan(&p, 40, T0 + 1000, false, &pg));
    ck_assert(!pg.sweep);
    ck_assert_int_eq(pg.after_rowid, 150);
    ck_assert_uint_eq(pg.limit, 60);
    /* the rest fits: caught up */
    queue_pager_read(&p, &pg, 180, true, T0 + 1000);
    ck_assert(!p.behind);
    ck_assert_int_eq(p.cursor, 180);
    ck_assert_int_eq(p.committed_hi, 180);
    ck_assert(!queue_pager_plan(&p, 0, T0 + 2000, false, &pg));
}
END_TEST

/* While a batch is uncommitted, only rows known to be committed are read; a page that
 * saw all of them moves the cursor to the cap, so it is not read again and again. */
START_TEST(pager_uncommitted_cap)
{
    queue_pager p;
    queue_page pg;
    queue_pager_init(&p, 10, H);
    ck_assert(queue_pager_plan(&p, 0, T0, false, &pg));
    queue_pager_read(&p, &pg, 40, false, T0);   /* budget full at 40 */
    /* message 41..45 committed while behind: not loaded directly, the pager reads it */
    ck_assert(!queue_pager_direct(&p, 10, 5, 41, 45));
    ck_assert_int_eq(p.cursor, 40);
    ck_assert_int_eq(p.committed_hi, 45);
    ck_assert(queue_pager_plan(&p, 0, T0, true, &pg));
    ck_assert_int_eq(pg.after_rowid, 40);
    ck_assert_int_eq(pg.max_rowid, 45);
    queue_pager_read(&p, &pg, 43, true, T0);    /* 44, 45 were settled */
    ck_assert_int_eq(p.cursor, 45);
    ck_assert(p.behind);                                  /* more may come past the cap */
    ck_assert(!queue_pager_plan(&p, 2, T0, true, &pg));   /* nothing committed to read */
    ck_assert(queue_pager_plan(&p, 2, T0, false, &pg));
    ck_assert_int_eq(pg.after_rowid, 45);
    ck_assert_int_eq(pg.max_rowid, INT64_MAX);
}
END_TEST

/* Messages committed while caught up and under budget are loaded directly; one that does
 * not fit is left to the pager, which goes back to it even when a later one was loaded. */
START_TEST(pager_direct_loads)
{
    queue_pager p;
    queue_page pg;
    queue_pager_init(&p, 10, H);
    ck_assert(queue_pager_plan(&p, 0, T0, false, &pg));
    queue_pager_read(&p, &pg, 0, true, T0);     /* empty spool */
    ck_assert(!p.behind);
    ck_assert(queue_pager_direct(&p, 0, 4, 1, 4));
    ck_assert_int_eq(p.cursor, 4);
    ck_assert(queue_pager_direct(&p, 4, 6, 5, 10));       /* exactly the budget */
    ck_assert_int_eq(p.cursor, 10);
    ck_assert(!queue_pager_direct(&p, 10, 1, 11, 11));
    ck_assert(p.behind);
    ck_assert_int_eq(p.cursor, 10);
    /* out of order: 12..13 is refused too while behind, 7..9 (say its commit callback ran
     * late) moves the cursor back so that a forward page reaches it */
    ck_assert(!queue_pager_direct(&p, 3, 2, 12, 13));
    ck_assert(!queue_pager_direct(&p, 3, 3, 7, 9));
    ck_assert_int_eq(p.cursor, 6);
    ck_assert(queue_pager_plan(&p, 3, T0, false, &pg));
    ck_assert_int_eq(pg.after_rowid, 6);
}
END_TEST

/* Deferred recipients not due within the horizon stay out; a sweep reads them before
 * they are due, and is skipped when the spool says nothing is due soon. */
START_TEST(pager_sweeps)
{
    queue_pager p;
    queue_page pg;
    queue_pager_init(&p, 100, H);
    ck_assert(queue_pager_plan(&p, 0, T0, false, &pg));
    queue_pager_read(&p, &pg, 500, true, T0);
    ck_assert(p.out_deferred);                            /* rows not due may have been passed */
    ck_assert_int_eq(queue_pager_wake_ms(&p), T0 + H / 2);
    ck_assert(!queue_pager_plan(&p, 20, T0 + H / 2 - 1, false, &pg));
    ck_assert(queue_pager_plan(&p, 20, T0 + H / 2, false, &pg));
    ck_assert(pg.sweep);
    ck_assert_int_eq(pg.after_rowid, 0);
    ck_assert_int_eq(pg.due_before_ms, T0 + H / 2 + H);
    /* the spool has nothing deferred: no sweep, nothing outside */
    ck_assert(!queue_pager_check(&p, 0, T0 + H / 2));
    ck_assert(!queue_pager_outside(&p));
    ck_assert_int_eq(queue_pager_wake_ms(&p), 0);
    /* a job deferred by 1 h leaves memory; the sweep comes half a horizon before */
    int64_t now = T0 + H;
    ck_assert(queue_pager_keep(&p, now + H - 1, now));
    ck_assert(!queue_pager_keep(&p, now + H, now));
    queue_pager_evicted(&p, now + 3600000);
    ck_assert_int_eq(queue_pager_wake_ms(&p), now + 3600000 - H / 2);
    queue_pager_evicted(&p, now + 2 * 3600000);           /* later: no change */
    ck_assert_int_eq(queue_pager_wake_ms(&p), now + 3600000 - H / 2);
    queue_pager_evicted(&p, now + H);                     /* earlier: sooner */
    ck_assert_int_eq(queue_pager_wake_ms(&p), now + H / 2);
    now += H / 2;
    /* the earliest deferred row is still far: the check moves on without a sweep */
    ck_assert(!queue_pager_check(&p, now + 2 * H, now));
    ck_assert_int_eq(queue_pager_wake_ms(&p), now + 2 * H - H / 2);
    now += 2 * H - H / 2;
    ck_assert(queue_pager_check(&p, now + H / 2, now));
    /* a sweep cut by the budget resumes where it stopped */
    ck_assert(queue_pager_plan(&p, 90, now, false, &pg));
    ck_assert(pg.sweep);
    ck_assert_uint_eq(pg.limit, 10);
    queue_pager_read(&p, &pg, 300, false, now);
    ck_assert(queue_pager_plan(&p, 80, now, false, &pg));
    ck_assert(pg.sweep);
    ck_assert_int_eq(pg.after_rowid, 300);
    queue_pager_read(&p, &pg, 500, true, now);
    ck_assert_int_eq(queue_pager_wake_ms(&p), now + H / 2);
    ck_assert(!queue_pager_plan(&p, 83, now, false, &pg));
}
END_TEST

/* A model spool driven through the pager with random commits (some uncommitted for a
 * while), deliveries and deferrals (some far off): no recipient is ever in memory twice
 * or read before it is committed, memory stays within the budget, and every recipient
 * is delivered in the end. */
enum { M_ROWS = 3000, M_BUDGET = 50 };
typedef struct mrow {
    int state;                  /* 0 queued, 1 deferred, 2 final */
    int64_t due;
    bool committed;
    bool exists;
} mrow;

typedef struct model {
    mrow rows[M_ROWS + 1];
    int64_t nrows;
    queue_idset mem;
    queue_pager p;
    int64_t now;
    int64_t loads;
} model;

static bool mrow_matches(const mrow *r, int64_t due_before)
{
    return r->exists && (r->state == 0 || (r->state == 1 && r->due < due_before));
}

static void model_load(model *m, int64_t id)
{
    ck_assert_msg(m->rows[id].committed, "row %lld read before its commit", (long long)id);
    ck_assert_msg(queue_idset_add(&m->mem, id), "row %lld loaded twice", (long long)id);
    ck_assert_int_le((int64_t)queue_idset_size(&m->mem), M_BUDGET);
    m->loads++;
}

/* What the scheduler does: a sweep check, then pages while the plan says so. */
static void model_page(model *m, bool uncommitted)
{
    if (m->p.out_deferred && m->now >= m->p.check_ms) {
        int64_t next = 0;
        for (int64_t i = 1; i <= m->nrows; i++)
            if (m->rows[i].exists && m->rows[i].committed && m->rows[i].state == 1 &&
                (!next || m->rows[i].due < next))
                next = m->rows[i].due;
        queue_pager_check(&m->p, next, m->now);
    }
    queue_page pg;
    for (int guard = 0; queue_pager_plan(&m->p, (int64_t)queue_idset_size(&m->mem), m->now,
                                         uncommitted, &pg); guard++) {
        ck_assert_int_lt(guard, 1000);
        int64_t last = pg.after_rowid;
        size_t loaded = 0;
        bool at_end = true;
        for (int64_t id = pg.after_rowid + 1; id <= m->nrows && id <= pg.max_rowid; id++) {
            /* a reader of the open batch sees uncommitted rows too */
            if (!mrow_matches(&m->rows[id], pg.due_before_ms)) continue;
            if (queue_idset_has(&m->mem, id)) {
                last = id;
                continue;
            }
            if (loaded == pg.limit) {
                at_end = false;
                break;
            }
            model_load(m, id);
            loaded++;
            last = id;
        }
        queue_pager_read(&m->p, &pg, last, at_end, m->now);
    }
}

START_TEST(pager_model)
{
    model *m = calloc(1, sizeof *m);
    queue_idset_init(&m->mem);
    queue_pager_init(&m->p, M_BUDGET, H);
    m->now = T0;
    uint64_t seed = 4242;
    int64_t pending_from = 0;   /* rows from here on are in the open batch */
    model_page(m, false);
    for (int step = 0; step < 200000; step++) {
        uint64_t r = rnd_next(&seed) % 100;
        if (r < 6 && m->nrows < M_ROWS) {
            /* a message of 1..8 recipients joins the open batch */
            if (!pending_from) pending_from = m->nrows + 1;
            int k = 1 + (int)(rnd_next(&seed) % 8);
            for (int i = 0; i < k && m->nrows < M_ROWS; i++) {
                mrow *row = &m->rows[++m->nrows];
                row->exists = true;
                row->state = 0;
            }
        } else if (r < 12 && pending_from) {
            /* the batch commits: each message's callback (one call for the batch here) */
            int64_t lo = pending_from, hi = m->nrows;
            for (int64_t id = lo; id <= hi; id++) m->rows[id].committed = true;
            pending_from = 0;
            if (queue_pager_direct(&m->p, (int64_t)queue_idset_size(&m->mem), (size_t)(hi - lo + 1),
                                   lo, hi))
                for (int64_t id = lo; id <= hi; id++)
                    if (!queue_idset_has(&m->mem, id)) model_load(m, id);
        } else if (r < 70) {
            /* an attempt on a recipient in memory that is due */
            for (int tries = 0; tries < 8; tries++) {
                int64_t id = 1 + (int64_t)(rnd_next(&seed) % (uint64_t)(m->nrows ? m->nrows : 1));
                if (!queue_idset_has(&m->mem, id)) continue;
                mrow *row = &m->rows[id];
                if (row->state == 1 && row->due > m->now) continue;
                uint64_t o = rnd_next(&seed) % 10;
                if (o < 6) {
                    row->state = 2;
                    queue_idset_remove(&m->mem, id);
                } else {
                    row->state = 1;
                    row->due = m->now + (o < 8 ? 60000 : 2 * H + (int64_t)(rnd_next(&seed) % (4 * H)));
                    if (!queue_pager_keep(&m->p, row->due, m->now)) {
                        queue_idset_remove(&m->mem, id);
                        queue_pager_evicted(&m->p, row->due);
                    }
                }
                break;
            }
        } else {
            m->now += 1000 + (int64_t)(rnd_next(&seed) % 30000);
        }
        model_page(m, pending_from != 0);
        if (m->nrows == M_ROWS && !pending_from) {
            bool all = true;
            for (int64_t id = 1; id <= m->nrows && all; id++) all = m->rows[id].state == 2;
            if (all) break;
        }
        /* no recipient due is left out of memory for long while there is room */
        if (queue_idset_size(&m->mem) == 0 && !pending_from) {
            for (int64_t id = 1; id <= m->nrows; id++) {
                const mrow *row = &m->rows[id];
                if (row->state == 0 || (row->state == 1 && row->due <= m->now - H))
                    ck_abort_msg("row %lld left out with nothing in memory", (long long)id);
            }
        }
    }
    for (int64_t id = 1; id <= M_ROWS; id++)
        ck_assert_msg(m->rows[id].state == 2, "row %lld never finished", (long long)id);
    ck_assert_int_ge(m->loads, M_ROWS);
    queue_idset_clear(&m->mem);
    free(m);
}
END_TEST

/* kilnctl status when some recipients are in the spool only: what memory holds is placed by
 * where it is, the rest of the spool's rows by their state, and nothing counts twice or
 * below zero (the spool may lag memory by a batch). */
START_TEST(status_counts_table)
{
    static const struct {
        queue_mem_counts mem;
        int64_t spool_q, spool_d, want_q, want_d;
    } t[] = {
        /* all in memory: memory's own figures */
        {{5, 2, 6, 1}, 6, 1, 5, 2},
        /* a retry due and in flight is queued, not deferred; 100 never attempted outside */
        {{3, 0, 2, 1}, 102, 1, 103, 0},
        /* 40 deferred rows outside (passed by a page, not due soon) */
        {{10, 4, 10, 4}, 10, 44, 10, 44},
        /* both outside */
        {{1, 1, 1, 1}, 11, 21, 11, 21},
        /* the spool lags memory (an update not seen yet): nothing negative */
        {{4, 3, 3, 4}, 2, 1, 4, 3},
        {{0, 0, 0, 0}, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        int64_t q = -1, d = -1;
        queue_status_counts(&t[i].mem, t[i].spool_q, t[i].spool_d, &q, &d);
        ck_assert_msg(q == t[i].want_q && d == t[i].want_d,
                      "case %zu: queued %lld deferred %lld, want %lld %lld", i, (long long)q,
                      (long long)d, (long long)t[i].want_q, (long long)t[i].want_d);
    }
}
END_TEST

static Suite *queue_suite(void)
{
    Suite *s = suite_create("queue");
    TCase *tc = tcase_create("heap");
    tcase_add_test(tc, heap_empty);
    tcase_add_test(tc, heap_random_order);
    tcase_add_test(tc, heap_interleaved);
    tcase_add_test(tc, heap_remove_if);
    suite_add_tcase(s, tc);
    tc = tcase_create("fair");
    tcase_add_loop_test(tc, fair_table, 0, (int)(sizeof fair_cases / sizeof fair_cases[0]));
    tcase_add_test(tc, fair_backlog_no_starvation);
    tcase_add_test(tc, fair_front_refill_reprioritize);
    suite_add_tcase(s, tc);
    tc = tcase_create("paging");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, idset_model);
    tcase_add_test(tc, pager_recovery_and_low_water);
    tcase_add_test(tc, pager_uncommitted_cap);
    tcase_add_test(tc, pager_direct_loads);
    tcase_add_test(tc, pager_sweeps);
    tcase_add_test(tc, pager_model);
    tcase_add_test(tc, status_counts_table);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(queue_suite);
