/* job.h — the scheduler's jobs, configuration sets and destination queues, and the narrow
 * API through which a delivery executor (mta/delivery.c; a fake one in the unit tests)
 * takes jobs and reports what became of them.
 *
 * The contract. The scheduler starts a job by calling its executor's start op
 * (scheduler.h: scheduler_exec_ops) with the job active and its message loaded (j->msg).
 * From then on the executor owns the attempt, and ends it exactly once by one of:
 *   sched_settle + sched_job_done     recipients got outcomes (sched_job_fail_all and
 *                                     sched_job_defer_pools do both);
 *   sched_job_release                 not attempted after all (graceful stop);
 *   sched_job_hold                    parked at a destination queue, nothing recorded;
 * or keeps it waiting for a connection slot or rate token (sched_job_set_waiting), to be
 * offered again by the retry_waiting op at the next pump. Everything here runs on the
 * loop, never blocks, and calls no executor op re-entrantly except through the pump (a
 * zero-delay timer). The fields marked "attempt" belong to the executor while the job is
 * active; the scheduler only frees them when the attempt ends. */
#ifndef KILN_SCHEDULER_JOB_H
#define KILN_SCHEDULER_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "base/config.h"
#include "pools/pools.h"
#include "scheduler/queue.h"
#include "scheduler/retry.h"
#include "scheduler/scheduler.h"
#include "scheduler/shaping.h"
#include "store/spool.h"

#define SCHED_DEST_WAITING 32       /* jobs of one set waiting at one site; more are held */
#define SCHED_WHY_LEN 320           /* a job's last reason, at most */
#define SCHED_TEXT_LEN 160          /* a *_to_text() buffer */

typedef struct sched_rcpt {
    int64_t rowid;
    char *address;
    int attempts;
    int64_t next_attempt_ms;
    char *last_reply;           /* the reply or failure of its last deferral, or NULL */
} sched_rcpt;

typedef struct sched_hop {
    char *name;                 /* MX host name, or the route host */
    char *addr;                 /* IP literal */
    int port;
    int tls;                    /* the TLS this hop needs, in the executor's terms (mta/delivery:
                                   0 opportunistic, more is stricter); the scheduler only copies */
    unsigned char *tlsa;        /* the executor's opaque bytes for it (DANE records), or NULL;
                                   freed with the hop */
    size_t tlsa_len;
} sched_hop;

typedef struct sched_set sched_set;
typedef struct sched_dest sched_dest;

typedef enum { JOB_READY, JOB_DEFERRED, JOB_HELD, JOB_ACTIVE } job_where;

typedef struct sched_job {
    char *msg_id;
    char *domain;               /* lower-case */
    sched_rcpt *rcpts;
    size_t nrcpts, cap;
    int64_t due_ms;
    job_where where;
    sched_set *set;             /* the message's configuration set (its ready queue) */
    char *site;                 /* shaping site of its last attempt (hint for holding) */
    queue_link rlink;           /* in the ready queue of its set */
    struct sched_job *next;     /* held FIFO of its destination */
    struct sched_job *aprev, *anext;   /* active list */
    sched_dest *wdest;          /* waiting at this destination (counted in nwaiting) */
    sched_dest *rdest;          /* released from this destination's held FIFO and not yet
                                   through a decision (counted in nreleased) */
    sched_dest *hdest;          /* held here */
    uint64_t wait_seq;          /* when it began waiting (FIFO among waiting jobs) */
    int64_t wait_until_ms;      /* waiting for a rate token until then; 0: for a slot */
    char *why;                  /* the last reason it could not proceed (malloc'd: most jobs
                                   never get one, and they are many), or NULL; read it with
                                   sched_job_why_text */
    int64_t why_until_ms;       /* and until when, if known */

    /* while active (and, for a few ready jobs, since enqueue: see sched_job_preload) */
    spool_loaded msg;
    bool loaded;
    /* attempt: filled by the executor, freed by the scheduler when the attempt ends */
    char *pool;
    int64_t max_delivery_ms;
    bool via_route;
    sched_hop *hops;
    size_t nhops, hop_idx;
    char **mx;                  /* the site's host names (shaping provider match) */
    size_t nmx;
    char *avoid_ip;             /* a source IP that failed (bind or connect) for this hop */
    char *avoid_zone;           /* its zone: another zone first */
    bool strict_avoid;          /* after a connect failure: never avoid_ip again on this hop */
    size_t ip_tries;            /* source IPs tried for the current hop */
    const char *provider;       /* pools_provider_of the current hop (static string) */
    pools_ip *res_ip;           /* recipients reserved on this IP (handed to a session) */
    int64_t res_n;
    int64_t defer_at_ms;        /* a pools deferral's retry time for this attempt; 0: backoff */
    bool pool_wait;             /* deferred by the pools (set before settling): retried at
                                   once when they change, never bounced before expiry */
    bool no_tls;                /* TLS failed with this hop: retry in clear (tls_policy optional) */
    bool no_reuse;              /* a reused connection turned out dead: open a fresh one */
    retry_failure last_fail;
    char *last_error;
    char *last_src;             /* for events of the final outcome */
    char *last_peer;
    char **addrs;               /* recipients as handed to the SMTP client */
} sched_job;

/* The ready work of one configuration set. Never freed while the scheduler lives (jobs
 * point here); a handful per config. */
struct sched_set {
    char *name;
    queue_set q;                /* its ready jobs (q.priority: configuration_sets[].priority) */
    uint64_t slot_stamp;        /* when a job of this set last got a connection */
    sched_set *next;
};

/* One configuration set's work for one site from one pool. */
struct sched_dest {
    struct scheduler *s;
    char *key;                  /* set '\n' pool '\n' site */
    uint64_t hash;
    sched_set *set;
    char *pool, *site;
    int nwaiting;               /* active jobs waiting for a connection slot or token here */
    int nreleased;              /* held jobs released to the ready queue, not yet decided */
    sched_job *held_head, *held_tail;
    size_t nheld;
    int64_t blocked_until_ms;   /* every IP blocked by shaping (backoff) until then */
    char why[SCHED_WHY_LEN];    /* why it is blocked */
    ev_timer timer;             /* fires at blocked_until_ms */
    bool in_refill;             /* on the scheduler's refill list */
    sched_dest *refill_next;
    sched_dest *hnext;          /* hash chain */
};

/* One outcome per recipient of an attempt. */
typedef struct sched_outcome {
    retry_class cls;
    const char *text;           /* reply line or failure description */
    bool remote;                /* text is the recipient server's reply */
} sched_outcome;

/* ---- texts for logs and explain ---- */
/* "<msg_id> <domain> (<n> recipients, set <set>)" into buf; returns buf. */
const char *sched_job_to_text(const sched_job *j, char *buf, size_t len);
/* The site's key (sorted MX host names, or the route host), "" if not known yet. */
const char *sched_site_to_text(const char *site);
/* The source IP's address (the pools' own text). */
const char *sched_ip_to_text(const pools_ip *ip);

/* ---- small helpers shared with the executor ---- */
void sched_set_str(char **dst, const char *src);    /* free *dst, *dst = strdup(src) */
void sched_free_strv(char **v, size_t n);
/* Records why job j could not proceed (and until when, 0 if unknown; at most
 * SCHED_WHY_LEN - 1 bytes): explain shows it. */
void sched_job_why(sched_job *j, int64_t until_ms, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* That reason, "" if there is none. */
const char *sched_job_why_text(const sched_job *j);
/* The configuration set as the config has it now (the default set when it is gone), or NULL. */
const config_set *sched_set_config(const config *cfg, const char *name);
bool sched_stopping(const scheduler *s);
shaping *sched_shaping(scheduler *s);
/* When a job is due: when its earliest recipient is. */
int64_t sched_job_due(const sched_job *j);

/* ---- the active jobs (those waiting for a connection are offered by retry_waiting) ---- */
sched_job *sched_active_first(const scheduler *s);   /* then j->anext */
/* Serving order of two waiting jobs: higher priority, then the set served least
 * recently, then the one waiting longest. */
bool sched_job_before(const sched_job *a, const sched_job *b);

/* ---- warm-up reservations: recipients handed to sessions of an IP, not settled yet ---- */
bool sched_ip_usable(const scheduler *s, const pools_ip *ip, int64_t now);
/* Recipients ip may still be handed now for provider: its headroom minus what is
 * reserved on it. INT64_MAX when no cap applies. */
int64_t sched_ip_room(const scheduler *s, const pools_ip *ip, const char *provider, int64_t now);
bool sched_ip_reserved(const scheduler *s, const pools_ip *ip);
/* Drops a released (DRAINING) IP from the pools once nothing uses it and logs
 * `pools.drained ip=ADDR pool=P after_s=N reason="why"` (N: seconds since the reload that
 * released it): the line an operator waits for. Does nothing for an IP not draining. */
void sched_ip_forget_drained(scheduler *s, const char *address, const char *why);
void sched_reserve(scheduler *s, pools_ip *ip, int64_t n);
void sched_job_unreserve(scheduler *s, sched_job *j);   /* gives back what j reserved */

/* ---- taking jobs ---- */
/* The job got its connection: it leaves the waiting (and released) jobs and its set is
 * stamped as served. */
void sched_job_connected(scheduler *s, sched_job *j);
/* Keeps the first keep recipients in j; the rest becomes a job of its own at the front of
 * its set's ready queue (still counted as queued), which is returned. */
sched_job *sched_job_split(scheduler *s, sched_job *j, size_t keep);
/* The job waits at d for a connection slot or a rate token (NULL: it no longer waits). */
void sched_job_set_waiting(scheduler *s, sched_job *j, sched_dest *d);
/* A job released from a destination's held FIFO reached a decision. */
void sched_job_unrelease(scheduler *s, sched_job *j);
/* The destination queue of (set, pool, site), made if needed. */
sched_dest *sched_dest_get(scheduler *s, sched_set *st, const char *pool, const char *site);
/* Every IP of the pool is blocked for the site until until_ms: its jobs are held until then. */
void sched_dest_block(scheduler *s, sched_dest *d, int64_t until_ms, const char *why, int64_t now);
/* Pumps again at at_ms (a rate token a waiting job needs), or soon. */
void sched_wake_at(scheduler *s, int64_t at_ms);
void sched_pump_soon(scheduler *s);

/* ---- ending an attempt ---- */
void sched_job_done(scheduler *s, sched_job *j);
void sched_job_release(scheduler *s, sched_job *j);
void sched_job_hold(scheduler *s, sched_job *j, sched_dest *d);
/* The executor saw its last session close: when stopping, the stop may be complete. */
void sched_check_stop(scheduler *s);

/* ---- settling (scheduler/settle.c) ---- */
/* Records one outcome per recipient (a deferral past max_delivery_time becomes a Transient
 * bounce): spool rows, suppression, events, logs. Final recipients leave the job. */
void sched_settle(scheduler *s, sched_job *j, sched_outcome *out, const char *src,
                  const char *peer);
/* Every recipient gets the same local failure; the attempt ends (sched_job_done). */
void sched_job_fail_all(scheduler *s, sched_job *j, retry_failure f, const char *text);
/* The pools have no IP for the job: every recipient is deferred with delay_type
 * ("IPFailure" or "SendingDeferral") until at_ms (0: the retry backoff); the job is tried
 * again at once when the pools change. The attempt ends. */
void sched_job_defer_pools(scheduler *s, sched_job *j, const char *delay_type,
                           const char *text, int64_t at_ms);

#endif
