/* loadgen.h — kiln-loadgen's types, shared by its files: kiln-loadgen.c (connections,
 * SMTP transactions, message composition, rate limiting, main), loadgen_report.c (the
 * tallies and the report) and loadgen_args.c (the command line and address resolution).
 * Private to kiln-loadgen. */
#ifndef KILN_LOADGEN_H
#define KILN_LOADGEN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>

#include <ev.h>

#include "base/util.h"
#include "mta/conn.h"
#include "mta/tls.h"

typedef struct lg_count {
    char *key;
    uint64_t n;
} lg_count;

/* A small map from a text key ("rcpt 451", "connection closed") to a count. */
typedef struct lg_tally {
    lg_count *v;
    size_t n, cap;
} lg_tally;

typedef struct lg_opts {
    const char *server;
    long long n;
    int c;
    long long size;
    int rcpts;
    int domains;
    const char *domain_pattern;
    const char *local_part;
    const char *from;
    const char *set;
    double rate;                     /* 0: unlimited */
    bool tls;
    bool json;
    const char *token_prefix;
    double timeout;
    const char *bind;
    const char *helo;
    const char *record;              /* --record FILE */
} lg_opts;

typedef enum {
    CS_RETRY,            /* waiting for the retry timer to (re)connect */
    CS_CONNECTING,
    CS_GREETING,
    CS_EHLO,
    CS_HELO,
    CS_STARTTLS,
    CS_TLS_HANDSHAKE,
    CS_IDLE,             /* greeted, no message in progress */
    CS_WAIT_TOKEN,       /* idle, waiting for the rate limiter */
    CS_TXN,              /* MAIL/RCPT/DATA replies expected */
    CS_BODY,             /* message sent, the final reply expected */
    CS_QUIT,
    CS_DONE,
} conn_state;

typedef enum { STAGE_RSET, STAGE_MAIL, STAGE_RCPT, STAGE_DATA, STAGE_DOT } lg_stage;

/* Why a message was refused, when the reply names one of the account's rules (SES's reply
 * texts, as kilnd sends them): the report's last line says so (loadgen_report.c). */
typedef enum {
    LG_WHY_OTHER,        /* anything else */
    LG_WHY_SANDBOX,      /* RCPT 554 "Email address is not verified": sandbox recipient */
    LG_WHY_SENDER,       /* the same 554 to MAIL or at the end of DATA: the sender */
    LG_WHY_QUOTA,        /* 454 "Daily message quota exceeded" */
    LG_WHY_RATE,         /* 454 "Maximum sending rate exceeded" */
    LG_WHY_NO_SET,       /* 554 "Configuration set does not exist" (--set) */
    LG_WHY_COUNT
} lg_why;

typedef struct loadgen loadgen;

typedef struct lg_conn {
    loadgen *lg;
    int idx;
    conn conn;                       /* socket, TLS, buffers; its timer: reply / write /
                                        connect timeout */
    ev_timer retry;
    conn_state state;
    bool pipelining, starttls, size_ext;
    int fails;                       /* consecutive failures */
    bool hopeless;                   /* a failure that retrying cannot fix */
    bool has_token;
    /* the message in progress */
    bool msg_open;
    int64_t msg;
    bool need_rset;                  /* a transaction may be left open on the server */
    lg_stage *stages;                /* commands of this transaction, in order */
    size_t nstages, next_send, next_reply;
    bool mail_ok;
    unsigned rcpt_ok;
    char fail_key[64];               /* the first refusal of this message */
    lg_why fail_why;                 /* and what its reply text says */
    int64_t t_mail_us;
} lg_conn;

struct loadgen {
    struct ev_loop *loop;
    lg_opts o;
    tls_ctx *tls;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char host[256];
    struct sockaddr_storage bind_addr;
    socklen_t bind_len;
    lg_conn *conns;
    int live;                        /* connections not DONE */
    int64_t next_msg;                /* next message number to hand out */
    uint64_t accepted, rejected, errors, rcpts_ok, rcpts_rejected;
    int64_t *lat_us;
    size_t nlat;
    lg_tally rejected_by, errors_by, conn_errors;
    uint64_t rejected_why[LG_WHY_COUNT];   /* rejected messages by their first refusal */
    int64_t t_start_us, t_end_us;
    char run_id[17];
    char *pool;                      /* LG_POOL_LINES body lines of LG_LINE chars + CRLF */
    strbuf msgbuf;                   /* scratch: the message being composed */
    double tokens, burst;
    int64_t refill_us;
    ev_timer rate_timer;
    int rate_cursor;
    ev_signal sigint, sigterm;
    bool interrupted;
    bool ever_greeted;               /* some connection got a 220 greeting */
    FILE *record;                    /* --record, line-buffered; NULL without it */
};

static inline int64_t loadgen_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* loadgen_report.c */
/* Adds n to the count of key (a new key starts at 0). */
void loadgen_tally_add(lg_tally *t, const char *key, uint64_t n);
void loadgen_tally_free(lg_tally *t);
/* Prints the report (text or --json) on stdout. */
void loadgen_report(loadgen *lg);
/* What the refusal (code, reply text of len bytes) to a command of stage st says. */
lg_why loadgen_why_of(lg_stage st, int code, const char *reply, size_t len);
/* Opens --record (appending, line-buffered); -1 after printing why not. */
int loadgen_record_open(loadgen *lg);
/* Message msg was accepted with the final reply (reply, len): one --record line. */
void loadgen_record_accepted(loadgen *lg, int64_t msg, const char *reply, size_t len);
void loadgen_record_close(loadgen *lg);

/* loadgen_args.c */
void loadgen_usage(FILE *fp);
/* Returns 0, or 1 after printing why the command line is wrong. */
int loadgen_parse_args(int argc, char **argv, lg_opts *o, bool *help);
/* Resolves -s and --bind into socket addresses; -1 after printing why not. */
int loadgen_resolve(loadgen *lg);

#endif
