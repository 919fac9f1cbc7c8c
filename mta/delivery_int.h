/* delivery_int.h — what mta/delivery.c (jobs: hops, IP choice, waiting) and
 * mta/delivery_session.c (sessions: the connection cache, smtp_client callbacks) share.
 * Nothing else includes it. */
#ifndef KILN_DELIVERY_INT_H
#define KILN_DELIVERY_INT_H

#include <ev.h>

#include "base/kiln.h"
#include "mta/delivery.h"
#include "mta/curl_ev.h"
#include "mta/dns.h"
#include "mta/mta_sts.h"
#include "mta/smtp_client.h"
#include "mta/sts_policy.h"
#include "mta/tls.h"
#include "pools/pools.h"
#include "scheduler/job.h"

#define DELIVERY_MAX_SESSIONS 100   /* open client connections, all destinations */
#define DELIVERY_HOLD_MIN_MS 1000   /* a wait at least this long (backoff) holds the job */
#define DELIVERY_IDLE_MS 5000       /* an unused connection QUITs after this */
#define DELIVERY_EVICT_BATCH 16     /* idle connections QUITting at once to make room */
#define DELIVERY_MAX_HOPS 10        /* MX addresses tried per attempt */
#define DELIVERY_CAP_RETRY_MS 60000 /* SendingDeferral retry when the pools name no time */
#define DELIVERY_CONNECT_IP_TRIES 2 /* source IPs tried per hop after connect failures */

typedef struct delivery_session delivery_session;

/* What a hop needs from TLS (sched_hop.tls), from the set's tls_policy and what DNS and
 * MTA-STS say about the host (mta/delivery_tls.c). Higher is stricter. */
enum {
    DELIVERY_TLS_MAY = 0,       /* STARTTLS when offered, unverified; clear when it fails */
    DELIVERY_TLS_ENCRYPT = 1,   /* encrypted, unverified; never clear */
    DELIVERY_TLS_VERIFY = 2,    /* encrypted, chain and the hop's name verified */
    DELIVERY_TLS_DANE = 3,      /* encrypted, matching the host's TLSA records (sched_hop.tlsa) */
};

/* A job between its start and its hops: the MTA-STS policy of its domain (tls_policy
 * mta-sts), the MX lookup, the TLSA lookups of its MX hosts (tls_policy dane). */
typedef struct delivery_tls_host delivery_tls_host;
typedef struct delivery_prep {
    struct delivery *dl;
    sched_job *j;
    struct delivery_prep *prev, *next;   /* dl->preps (freed with delivery_free if DNS or
                                            MTA-STS never answers) */
    bool have_sts;              /* sts holds the domain's MTA-STS policy */
    sts_policy sts;
    delivery_tls_host *hosts;   /* the MX answer, while TLSA lookups run */
    size_t nhosts, pending;
    int port;
} delivery_prep;

struct delivery {
    kiln_ctx *ctx;
    scheduler *s;
    pools *pools;               /* the scheduler's (scheduler_pools) */
    shaping *shaping;           /* the scheduler's (sched_shaping) */
    dns *dns;
    char *dns_error;            /* why dns is NULL */
    tls_ctx *tls;
    char *tls_ca_file;          /* the delivery.tls_ca_file dl->tls trusts (NULL: system) */
    curl_ev *http;              /* HTTPS on the loop (MTA-STS policies) */
    mta_sts *sts;               /* MTA-STS policies and their cache; NULL without DNS */
    struct idstate *identity;  /* DNS readiness of the identities (mta/idstate.c); NULL
                                   without DNS */
    struct ipchecker *ipcheck;  /* kilnctl ip check's lookups (mta/ipcheck.h); NULL without DNS */
    delivery_session *sessions;
    int nsessions;
    struct handoff *handoff;    /* jobs the pools cannot place here go to a peer node */
    delivery_prep *preps;       /* jobs whose policy, MX or TLSA lookups are under way */
    int nevicting;              /* idle sessions QUITting to make room (delivery_evict_idle) */
    /* out of local resources (EMFILE/ENFILE...): one episode is logged once, at its start,
     * and once more when a connection opens DELIVERY_LOCAL_QUIET_MS after its last failure */
    bool local_failure;         /* an episode is under way */
    unsigned local_deferred;    /* jobs deferred in this episode */
    int64_t local_last_ms;      /* its last failure */
};
#define DELIVERY_LOCAL_QUIET_MS 5000

typedef enum { SESS_CONNECTING, SESS_BUSY, SESS_IDLE, SESS_QUITTING, SESS_DEAD } sess_state;

struct delivery_session {
    delivery *dl;
    smtp_client *c;
    config *cfg;                /* the config it started under */
    char *src;
    char *peer;
    int port;
    char *peer_name;
    char *site;                 /* shaping site */
    int tls_level;              /* the hop's sched_hop.tls it was opened for */
    unsigned char *tlsa;        /* and its TLSA records (DANE) */
    size_t tlsa_len;
    shaping_dest *sd;           /* shaping state of (src, site); one connection counted */
    pools_ip *ip;               /* its source IP in the pools state */
    bool started;               /* pools_session_started was called */
    sess_state state;
    sched_job *job;
    int nmsgs;
    bool retire;                /* its IP is draining or down: QUIT after the transaction */
    bool evicted;               /* QUIT to free a connection slot for other work */
    ev_timer idle;
    delivery_session *prev, *next;
};

static inline klog *delivery_lg(const delivery *dl) { return dl->ctx->log; }
static inline bool delivery_debug(const delivery *dl)
{
    return log_enabled(dl->ctx->log, KLOG_DEBUG);
}
/* "<src> -> <peer>:<port> …" as the SMTP client describes itself. */
static inline const char *delivery_session_to_text(const delivery_session *ss)
{
    return smtp_client_to_text(ss->c);
}

/* What choosing an IP for a hop came to. */
typedef enum {
    PICK_CHOSEN,      /* the job went to a session (new or reused) */
    PICK_WAIT,        /* usable IPs exist but their connections, headroom, rate or the site's
                         backoff hold the job: see delivery_wait */
    PICK_FAMILY,      /* no IP of the pool has the hop's address family */
    PICK_NO_OTHER,    /* after a connect failure: no other IP than the one that failed */
    PICK_POOLS,       /* the pools' verdict (choice): no IP, all down, all at cap */
} delivery_pick;

/* Why a job has to wait, gathered over the IPs tried. */
typedef struct delivery_wait {
    bool slot;                  /* some IP waits for a connection slot, headroom reserved by
                                   sessions in flight, or the session limit: retried when
                                   sessions change */
    int64_t until;              /* earliest rate token or end of backoff among IPs blocked
                                   by time; 0: none */
    char slot_why[SCHED_WHY_LEN];
    char time_why[SCHED_WHY_LEN];   /* shaping's own words for the earliest timed wait */
} delivery_wait;

/* What placing a job on one chosen IP came to (delivery_place). */
typedef enum {
    PLACE_DONE,       /* the job went to an idle session of the IP or a new connection */
    PLACE_BLOCKED,    /* headroom in flight, shaping (window, rate, backoff): see the wait */
    PLACE_LIMIT,      /* only the overall session limit (DELIVERY_MAX_SESSIONS) stands in the way */
} delivery_place_result;

/* The TLS level of the job's current hop. */
static inline int delivery_hop_tls(const sched_job *j)
{
    return j->hop_idx < j->nhops ? j->hops[j->hop_idx].tls : DELIVERY_TLS_MAY;
}

/* delivery.c */
int delivery_addr_family(const char *a);
void delivery_hops_add(sched_job *j, const char *name, const char *addr, int port, int tls,
                       const unsigned char *tlsa, size_t tlsa_len);
void delivery_job_set_site(sched_job *j, char *const *hosts, size_t n);
void delivery_prep_free(delivery *dl, delivery_prep *p);   /* unlinks it too */
void delivery_next_hop(delivery *dl, sched_job *j, retry_failure f, const char *text);
void delivery_job_take(delivery *dl, sched_job *j, pools_ip *ip, int64_t now);
void delivery_job_send(delivery *dl, sched_job *j, delivery_session *ss);
bool delivery_job_connect(delivery *dl, sched_job *j);

/* delivery_pick.c */
delivery_pick delivery_connect_from(delivery *dl, sched_job *j, const char *pool, const sched_hop *h,
                                    int64_t now, pools_choice *ch, delivery_wait *w);
delivery_place_result delivery_place(delivery *dl, sched_job *j, const char *pool,
                                     const sched_hop *h, pools_ip *ip, int64_t now,
                                     delivery_wait *w);
/* delivery_tls.c */
/* The level of a hop reached by static route (no MX lookup) under the set's policy. */
int delivery_tls_route_level(const config_set *set);
/* After the MX lookup (res DNS_OK) of the prep's job: its hops, each with its level, then
 * delivery_job_connect; for dane, after the TLSA lookups. The prep is freed. */
void delivery_tls_hops(delivery *dl, delivery_prep *p, const dns_mx_result *res);
/* Frees what delivery_tls_hops keeps in a prep (its hosts). */
void delivery_tls_prep_clear(delivery_prep *p);
/* What the server of hop h must prove (out->name and out->tlsa point into h). */
void delivery_tls_auth_of(const sched_hop *h, tls_auth *out, tls_tlsa *buf, size_t cap);
/* A session opened for (level, tlsa) with TLS active or not serves a hop needing h. */
bool delivery_tls_session_fits(const delivery_session *ss, bool tls_active, const sched_hop *h);

/* delivery_session.c */
void delivery_session_unlink(delivery *dl, delivery_session *ss);
void delivery_session_free(delivery_session *ss);
void delivery_session_quit(delivery_session *ss);
void delivery_evict_idle(delivery *dl);
void delivery_retire_unusable(delivery *dl);
bool delivery_session_fits(const delivery *dl, const delivery_session *ss, const sched_job *j,
                           const char *pool, const sched_hop *h, int64_t now);
delivery_session *delivery_session_open(delivery *dl, sched_job *j, pools_ip *ip,
                                        const sched_hop *h, shaping_dest *sd);
void delivery_session_next(delivery_session *ss, bool take_parked);

#endif
