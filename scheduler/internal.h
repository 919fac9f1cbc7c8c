/* internal.h — the scheduler's own state, shared by its files (scheduler.c: jobs, sets,
 * destination queues, pump, API; ipstate.c: the dedicated-IP state and reservations;
 * load.c: recover and paging; settle.c: outcomes into spool rows and events; explain.c and
 * queue_report.c: the kilnctl queue reports). Nothing outside scheduler/ includes it: the
 * executor sees scheduler/job.h only. */
#ifndef KILN_SCHEDULER_INTERNAL_H
#define KILN_SCHEDULER_INTERNAL_H

#include "base/kiln.h"
#include "scheduler/job.h"

#define SCHED_MAX_ACTIVE 200        /* jobs started and not finished (bodies in memory) */
#define SCHED_HORIZON_MS (10 * 60 * 1000)   /* deferred ones due later stay in the spool */

/* Recipients handed to sessions of one IP and not settled yet (IPs with none are not
 * listed, so a forgotten IP leaves no entry behind). */
typedef struct sched_reservation {
    pools_ip *ip;
    int64_t n;
} sched_reservation;

struct scheduler {
    kiln_ctx *ctx;
    const scheduler_exec_ops *exec;   /* the delivery executor */
    void *exec_arg;

    sched_set *sets;
    queue_fair ready;           /* the sets' ready jobs (sched_job.rlink) */
    queue_heap deferred;        /* deferred jobs by due_ms */
    queue_idset mem;            /* spool rowids of the recipients held in memory */
    queue_idset settling;       /* rowids that left memory (settled, or evicted deferred)
                                   whose spool update is not committed yet: the spool still
                                   shows them pending, so pages pass over them (settle.c) */
    struct sched_hold *holds;   /* the commit callbacks that release them */
    queue_pager pager;          /* which recipients are read from the spool, and when */
    ev_timer page_timer;        /* a sweep for deferred ones comes due, or a retry */
    int64_t page_at_ms;         /* when page_timer fires (0: not armed) */
    sched_job *active_head, *active_tail;
    int nactive;
    int64_t nqueued, ndeferred;   /* recipients */
    int64_t nmem_retry;         /* recipients in memory attempted before (DEFERRED rows) */
    uint64_t stamp;             /* round-robin and FIFO sequence */
    size_t npreload;            /* ready jobs holding their message (sched_job_preload) */
    size_t preload_bytes;

    sched_dest **dests;         /* hash table of destination queues */
    size_t ndest_buckets, ndests;
    sched_dest *refill;         /* destinations whose held jobs may be released */

    shaping *shaping;
    pools *pools;
    sched_reservation *res;
    size_t nres;

    ev_timer due_timer;
    ev_timer pump_timer;
    ev_timer save_timer;
    ev_timer wake_timer;        /* the earliest rate token a waiting job needs */
    int64_t wake_at_ms;
    unsigned ticks;
    bool stopping;
    void (*stop_done)(void *arg);
    void *stop_arg;
    bool stop_reported;
};

klog *sched_lg(const scheduler *s);
bool sched_debug(const scheduler *s);

/* scheduler.c, for load.c, settle.c and explain.c */
sched_set *sched_set_get(scheduler *s, const char *name);
void sched_job_free(sched_job *j);
void sched_job_forget(scheduler *s, sched_job *j);
int64_t sched_in_mem(const scheduler *s);
void sched_job_place(scheduler *s, sched_job *j);
void sched_job_preload(scheduler *s, sched_job *j, spool_loaded *m);
void sched_arm_due_timer(scheduler *s);
bool sched_dest_blocked(const sched_dest *d, int64_t now);

/* explain.c, for queue_report.c */
/* Calls fn for every job the scheduler holds, wherever it is (ready, deferred, active,
 * held). */
void sched_each_job(scheduler *s, void (*fn)(void *arg, scheduler *s, sched_job *j), void *arg);
/* "ready", "deferred", "waiting" or "active" (scheduler_queue_row.state). */
const char *sched_job_state_text(const sched_job *j);
/* The pool the job uses now: its attempt's, its destination's, or its set's. */
const char *sched_job_pool_text(const scheduler *s, const sched_job *j);

/* ipstate.c */
void sched_save_pools(scheduler *s);     /* in the spool batch, if it changed */
void sched_pools_load(scheduler *s);     /* makes s->pools: the config's IPs, then the spool's */
void sched_pools_reload(scheduler *s);   /* lease / release after a reload */

/* settle.c: rowids leaving memory are held in s->settling until the spool batch holding
 * their update is committed (or failed); scheduler_free detaches the pending callbacks. */
void sched_hold_rows(scheduler *s, const int64_t *rowids, size_t n);
void sched_holds_detach(scheduler *s);

/* load.c */
/* The set's messages differ per recipient (its list_unsubscribe.url names {recipient}, as
 * the config has it now: config_set_per_recipient): each of its jobs carries one recipient. */
bool sched_set_per_recipient(const scheduler *s, const sched_set *st);
int64_t sched_page_in(scheduler *s);
void sched_arm_page_timer(scheduler *s, int64_t now);
void sched_load_message(scheduler *s, const char *msg_id);
void sched_load_init(scheduler *s, int64_t budget);   /* the pager and its timer */

#endif
