/* smtp_session.h — one submission session, private to the submission server: the session
 * state machine's states and data, shared by mta/smtp_server.c (listeners, socket and TLS
 * I/O through mta/conn, life cycle, the commit callback) and mta/smtp_commands.c (the SMTP
 * commands, AUTH and the DATA reader). Nothing outside those two files includes it.
 *
 *   GREET --EHLO/HELO--> READY --MAIL--> MAIL --RCPT--> RCPT --DATA--> DATA --"."--> COMMIT
 *     ^                    ^  \--AUTH--> AUTH (334 exchange) --/                      |
 *     |                    +------------- 250 Ok ID / 4xx / 5xx ----------------------+
 *     +-- TLS_HANDSHAKE <-- TLS_WAIT <-- STARTTLS           QUIT / 421 --> CLOSING
 *
 *   AUTH's last response --> AUTH_WAIT (password checked by the auth pool; a failure then
 *   waits out its delay) --> READY with 235, 535 or 454; nothing is read meanwhile.
 *
 * Commands only change the session and queue replies in its conn's output buffer; the
 * I/O side decides when they are written. */
#ifndef KILN_SMTP_SESSION_H
#define KILN_SMTP_SESSION_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include <ev.h>

#include "base/config.h"
#include "base/kiln.h"
#include "base/util.h"
#include "mta/auth_fail.h"
#include "mta/auth_pool.h"
#include "mta/conn.h"
#include "mta/msgtags.h"
#include "mta/policy.h"
#include "mta/smtp_limits.h"
#include "mta/smtp_parse.h"
#include "mta/smtp_server.h"
#include "mta/tls.h"

/* Session timeouts (RFC 5321 4.5.3.2 suggests 5 min for commands, 3 min per DATA block);
 * they can be overridden with -D for tests. */
#ifndef SMTP_SERVER_COMMAND_TIMEOUT
#define SMTP_SERVER_COMMAND_TIMEOUT 300.0   /* s, waiting for a command */
#endif
#ifndef SMTP_SERVER_DATA_TIMEOUT
#define SMTP_SERVER_DATA_TIMEOUT 180.0      /* s, between two reads of message data */
#endif
#ifndef SMTP_SERVER_TLS_TIMEOUT
#define SMTP_SERVER_TLS_TIMEOUT 10.0        /* s, to finish the TLS handshake */
#endif
#define SMTP_SERVER_MAX_ERRORS 10           /* protocol errors before 421 */
/* AUTH off the loop: worker threads and waiting checks (a session has at most one). */
#define SMTP_SERVER_AUTH_THREADS_MIN 2
#define SMTP_SERVER_AUTH_THREADS_MAX 4
#define SMTP_SERVER_AUTH_QUEUE_MAX 128
#define SMTP_SERVER_AUTH_FAIL_DELAY 1.0     /* s from the response to the 535 */

#define REPLY_STORE_FAILED "451 4.3.0 Temporary failure: could not store message"
#define REPLY_NO_MEMORY "452 4.3.1 Insufficient system resources"

typedef enum {
    ST_GREET,           /* connected (or TLS just started): EHLO/HELO expected */
    ST_READY,           /* greeted, no transaction */
    ST_AUTH,            /* inside an AUTH exchange: the next line is a SASL response */
    ST_MAIL,            /* MAIL accepted, no recipient yet */
    ST_RCPT,            /* at least one recipient accepted */
    ST_DATA,            /* reading the message */
    ST_COMMIT,          /* message handed to accept.c; waiting for the commit callback */
    ST_TLS_WAIT,        /* "220 Ready to start TLS" still being written */
    ST_TLS_HANDSHAKE,
    ST_CLOSING,         /* last replies being written; then the connection is closed */
    ST_AUTH_WAIT,       /* password check queued/running, or a failure's delay: no reading */
    ST_LIMIT_WAIT,      /* RCPT waits for a lease of the cluster's shared limits: no reading */
} session_state;

typedef enum { AUTH_MECH_PLAIN, AUTH_MECH_LOGIN } auth_mech;

typedef struct smtp_session smtp_session;

struct smtp_server {
    kiln_ctx *ctx;
    struct feedback *fb;      /* the feedback listener's (mta/feedback.h); NULL: submission */
    double auth_fail_delay;   /* s from an AUTH response to its 535 (SMTP_SERVER_AUTH_FAIL_DELAY) */
    conn_acceptor acceptor;   /* the listening sockets */
    tls_ctx *tls;
    smtp_session *sessions;   /* doubly linked */
    int nsessions;
    uint64_t next_id;
    bool shutting_down;
    bool done_called;
    void (*done)(void *arg);
    void *done_arg;
    ev_idle done_idle;        /* calls done() from the loop, never re-entrantly */
    auth_pool *auth_pool;     /* password checks off the loop */
    auth_fail *auth_fail;     /* failed AUTHs per client (submission.auth_failures) */
    /* admission (mta/smtp_limits.h): caps derived from the descriptor limit and caps_cfg */
    smtp_limits *limits;
    smtp_limits_caps caps;
    config *caps_cfg;         /* the config the caps were derived from (a reference) */
    int64_t nofile;           /* RLIMIT_NOFILE (soft) at start */
    bool accept_trouble;      /* accept() is failing (EMFILE...): logged once an episode */
    int64_t accept_trouble_ms;   /* its last failure; it ends 5 s after, at an accept */
    int64_t inflight;         /* bytes of message buffers held by all sessions (their
                                 capacity), against submission.max_inflight_bytes */
};

struct smtp_session {
    smtp_server *srv;         /* NULL once orphaned by smtp_server_free */
    kiln_ctx *ctx;
    struct feedback *fb;      /* srv->fb: a feedback listener's session (no AUTH, no
                                 submission policy; RCPT only to kiln's own addresses) */
    config *cfg;              /* the config this session started with (a reference) */
    smtp_session *prev, *next;
    uint64_t id;
    conn conn;                /* socket, TLS, buffers and the session timer */
    session_state state;
    int64_t started_ms;
    char client_ip[INET6_ADDRSTRLEN];
    int client_port;
    bool loopback;
    bool trusted;

    char *helo;               /* EHLO/HELO argument; NULL before */
    bool esmtp;
    char *auth_user;          /* after a successful AUTH */
    auth_mech auth_mech;
    char *auth_login_user;    /* AUTH LOGIN: username received, password expected */
    const config_auth_user *auth_entry;  /* auth_user's entry in cfg (its scope) */
    auth_job *auth_job;       /* the password check in the pool (ST_AUTH_WAIT), or NULL */
    char *auth_pending_user;  /* the user name being checked */
    ev_tstamp auth_started;   /* when the last response arrived (loop time) */
    ev_timer auth_delay;      /* a failure's 535 is held until auth_started + 1 s */

    /* the mail transaction */
    char *mail_from;
    char **rcpts;
    policy_rcpt_verdict *verdicts;
    size_t nrcpts, rcpts_cap;
    unsigned reserved;        /* 24 h quota reservations held (ACCEPT and SUPPRESSED) */
    struct cluster_limits_wait *limit_wait;  /* ST_LIMIT_WAIT: the lease asked for, or NULL */
    char *limit_arg;          /* ST_LIMIT_WAIT: the RCPT argument, run again on the answer */
    session_state limit_prev; /* ST_LIMIT_WAIT: the state to go back to (ST_MAIL or ST_RCPT) */
    int limit_asks;           /* leases asked for this RCPT (bounded) */
    strbuf data;              /* the one copy of the message; its capacity is counted in
                                 srv->inflight (data_counted) */
    size_t data_counted;      /* bytes of srv->inflight this session holds */
    bool data_over_budget;    /* the budget ran out during DATA: data dropped, 452 at the end */
    int64_t data_size;        /* octets received (unstuffed, CRLF lines), stored or not */
    unsigned data_flags;      /* SMTP_LINE_* seen in the message */
    bool data_prev_crlf;      /* the previous data line ended with CRLF */
    char *set_name;           /* configuration set of the message being committed */
    msgtags tags;             /* its X-SES-MESSAGE-TAGS (removed from the message) */
    char *cluster_peer;       /* authenticated with a node's handoff credential (mta/handoff.h):
                                 that node's name; its recipients skip the account's limits */
    bool commit_pending;

    smtp_linereader lr;
    bool discard_input;       /* STARTTLS: drop pipelined plaintext */
    int errors;
    unsigned accepted;        /* messages accepted in this session */
    bool dead;                /* close at the end of the current callback */
    bool closed;              /* fd closed; only waiting for the commit callback */
    const char *close_reason;
    /* limits (issue item 4): admission counts, deadline, DATA rate, junk commands */
    bool limits_counted;      /* counted in srv->limits until the connection closes */
    bool limits_tracked;      /* has a per-client entry there */
    bool privileged;          /* trusted or authenticated: may use the reserved share */
    int64_t deadline_ms;      /* the session ends with 421 at this time; 0: never */
    int64_t data_started_ms;  /* when the 354 was given */
    int junk;                 /* junk commands since the last accepted message */
};

/* smtp_server.c: the session's life cycle */
/* Closes the session at the end of the current callback. */
void smtp_server_kill_session(smtp_session *s, const char *reason);
/* (Re)arms the session's timeout. */
void smtp_server_set_timer(smtp_session *s, double seconds);
/* Stop reading; write what is pending; close once written (or after the linger time). */
void smtp_server_start_closing(smtp_session *s, const char *reason);
/* The spool's commit callback of accept_message(). */
void smtp_server_on_accepted(void *arg, bool ok, const char *id, const char *err);
/* A junk command (NOOP, RSET, VRFY, unknown, rejected RCPT): true if it was one too many,
 * in which case "421 4.7.0 Too many junk commands" is queued and the session closes. */
bool smtp_server_junk(smtp_session *s);
/* AUTH succeeded: the session leaves the unprivileged share of the sessions. */
void smtp_server_session_authenticated(smtp_session *s);

/* The size cap of a message in this session: submission.max_message_size, or
 * feedback.max_message_size on the feedback listener. */
static inline int64_t smtp_server_max_size(const smtp_session *s)
{
    return s->fb ? s->cfg->feedback_max_message_size : s->cfg->max_message_size;
}

/* smtp_commands.c: commands, AUTH and DATA */
void smtp_server_reply(smtp_session *s, const char *line);
/* Drops the transaction; release: its quota reservations go back. */
void smtp_server_free_transaction(smtp_session *s, bool release);
/* Ends the transaction (RSET, EHLO, rejection, abort): reservations go back to the quota. */
void smtp_server_reset_transaction(smtp_session *s);
/* Frees the message buffer and gives its bytes back to the in-flight budget. */
void smtp_server_data_release(smtp_session *s);
/* The in-flight budget of message bytes for s, and a reservation of n more bytes in its
 * DATA buffer within it (false: over the budget; nothing reserved). smtp_commands.c. */
int64_t smtp_server_budget(const smtp_session *s);
bool smtp_server_data_reserve(smtp_session *s, size_t n);
/* One smtp.reject log line: stage (mail, rcpt, data...), sender, recipient, the reply. */
void smtp_server_log_reject(smtp_session *s, const char *stage, const char *from, const char *rcpt,
                            const char *line);
/* During a graceful stop a session outside a transaction gets 421 and is closed. */
void smtp_server_check_shutdown(smtp_session *s);
/* One line of input: a command (or SASL response), or a line of the message in DATA. */
void smtp_server_command_line(smtp_session *s, const smtp_line *line);
void smtp_server_data_line(smtp_session *s, const smtp_line *line);
/* Session start and end: the AUTH delay timer; a pending password check is cancelled. */
void smtp_server_auth_init(smtp_session *s);
void smtp_server_auth_release(smtp_session *s);
/* Session end: a lease the RCPT waits for is not waited for any more. */
void smtp_server_limit_release(smtp_session *s);

#endif
