/* smtp_limits.h — admission of submission sessions (issue items 4 and 8): the session caps
 * derived from RLIMIT_NOFILE and the config, the reserved share for trusted and
 * authenticated clients, and per-client-IP session counts and connection rates.
 *
 * Pure logic over a table and an injected clock (no sockets): mta/smtp_server.c asks
 * smtp_limits_admit() for every accepted connection and tells the table when a session
 * authenticates or closes; tests/unit/test_smtp_limits.c drives it directly.
 *
 * Promises: at most caps.max_sessions sessions hold a connection; sessions that are neither
 * trusted nor authenticated hold at most max_sessions - reserved of them; a client that is
 * not exempt holds at most caps.per_client sessions and opens at most rate.count
 * connections per rate.per_ms window (every attempt counts, refused ones too, as Postfix's
 * anvil counts them). The table is bounded (SMTP_LIMITS_MAX_CLIENTS entries). */
#ifndef KILN_SMTP_LIMITS_H
#define KILN_SMTP_LIMITS_H

#include <stdbool.h>
#include <stdint.h>

#include "base/config.h"

/* Descriptors kept out of the session budget: stdio, the log, the spool (database, WAL,
 * shared memory, journal), the control socket and its clients, event files, webhook
 * connections, DNS sockets, listeners, the loop's own (epoll, signals, async). */
#define SMTP_LIMITS_FD_RESERVE 64
/* Outbound delivery sessions (mta/delivery_int.h's DELIVERY_MAX_SESSIONS). */
#define SMTP_LIMITS_FD_DELIVERY 100
/* The cap when the descriptors allow more (the compile-time cap kiln had before). */
#define SMTP_LIMITS_AUTO_MAX 1000
/* Whatever the descriptors say, this many sessions are allowed. */
#define SMTP_LIMITS_MIN_SESSIONS 4
/* Client entries remembered for rates (about 100 bytes each). */
#define SMTP_LIMITS_MAX_CLIENTS 65536

typedef struct smtp_limits_caps {
    int max_sessions;        /* every session */
    int reserved;            /* kept for trusted and authenticated sessions */
    int per_client;          /* sessions per client IP; -1 = unlimited */
    int fd_budget;           /* sessions the descriptor limit allows */
} smtp_limits_caps;

/* The effective caps for CFG under a descriptor limit of NOFILE: auto max_sessions is
 * min(SMTP_LIMITS_AUTO_MAX, NOFILE - SMTP_LIMITS_FD_RESERVE - SMTP_LIMITS_FD_DELIVERY), at
 * least SMTP_LIMITS_MIN_SESSIONS; an explicit one above that budget is lowered to it; auto
 * reserved is max_sessions / 5; reserved and per_client are lowered below max_sessions.
 * Each lowering is described in *warnings (malloc'd, "; "-separated), else *warnings = NULL. */
void smtp_limits_derive(const config *cfg, int64_t nofile, smtp_limits_caps *out, char **warnings);

typedef enum {
    SMTP_LIMITS_OK = 0,
    SMTP_LIMITS_FULL,            /* max_sessions reached */
    SMTP_LIMITS_RESERVED,        /* only the reserved share is left: not for this client */
    SMTP_LIMITS_PER_CLIENT,      /* the client holds max_sessions_per_client */
    SMTP_LIMITS_RATE,            /* the client's connection rate is exceeded */
} smtp_limits_verdict;

const char *smtp_limits_verdict_name(smtp_limits_verdict v);

typedef struct smtp_limits smtp_limits;

smtp_limits *smtp_limits_new(void);
void smtp_limits_free(smtp_limits *t);

/* A connection from IP at NOW_MS. PRIVILEGED: a trusted client (may use the reserved
 * share); EXEMPT: no per-client session or rate limit (and no table entry). RATE: the
 * per-client rate (count -1: none). On SMTP_LIMITS_OK the session is counted until
 * smtp_limits_release, and *tracked says whether it has a per-client entry (pass it back).
 * A full table (SMTP_LIMITS_MAX_CLIENTS clients with sessions or fresh rate windows)
 * refuses clients it does not know yet with SMTP_LIMITS_RATE. */
smtp_limits_verdict smtp_limits_admit(smtp_limits *t, const char *ip, bool privileged, bool exempt,
                                      const smtp_limits_caps *caps, const config_rate *rate,
                                      int64_t now_ms, bool *tracked);
/* An unprivileged session authenticated: it leaves the unprivileged share. */
void smtp_limits_promote(smtp_limits *t);
/* A session admitted for IP ended; PRIVILEGED as it is now (promoted or trusted), TRACKED
 * as smtp_limits_admit said. */
void smtp_limits_release(smtp_limits *t, const char *ip, bool privileged, bool tracked);

/* Counters, for logs and tests. */
int smtp_limits_sessions(const smtp_limits *t);
int smtp_limits_unprivileged(const smtp_limits *t);
int smtp_limits_client_sessions(const smtp_limits *t, const char *ip);
int smtp_limits_clients(const smtp_limits *t);

#endif
