/* sink.h — kiln-sink's types, shared by its files: kiln-sink.c (sessions, SMTP, fault
 * injection, start and stop), sink_stats.c (per-client and per-listener counts and the JSON
 * stats file) and sink_args.c (the command line). Private to kiln-sink. */
#ifndef KILN_SINK_H
#define KILN_SINK_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <ev.h>

#include "base/log.h"
#include "base/util.h"
#include "mta/conn.h"
#include "mta/smtp_parse.h"
#include "mta/tls.h"

#define SINK_CLIENT_BUCKETS 4096
#define SINK_DEFAULT_MAX_SIZE (50LL * 1024 * 1024)

typedef enum {
    F_DEFER, F_REJECT, F_THROTTLE, F_DISCONNECT, F_DELAY, F_RANDOM_DEFER, F_RANDOM_REJECT,
    F_RANDOM_DISCONNECT, F_DELAY_DATA, F_TOO_MANY_CONNECTIONS, F_RANDOM_DELAY, F_RANDOM_THROTTLE,
    F_COUNT
} sink_fault;

typedef struct sink_counts {
    uint64_t connections, messages, recipients, bytes;
} sink_counts;

typedef struct sink_client {
    struct sink_client *next;            /* hash chain */
    char ip[INET6_ADDRSTRLEN];
    sink_counts n;
    uint64_t rejected_connections;
    int current, max_concurrent;
} sink_client;

typedef struct sink sink;

typedef struct sink_opts {
    char **listen;
    size_t nlisten;
    const char *hostname;
    const char *stats_file;
    double stats_interval;
    const char *tls_cert, *tls_key;
    long long max_size;                  /* 0: no limit */
    double random_defer, random_reject, random_disconnect, random_delay, random_throttle;
    long random_delay_ms;                /* the longest random delay (--random-delay-ms) */
    const char *record_file;             /* --record: one line per accepted message */
    const char *record_header;           /* --record-header (Message-ID) */
    unsigned long long seed;
    bool seeded;
    long delay_data_ms;
    int max_conn_per_client;             /* 0: no limit */
    double timeout;
    bool verbose;
} sink_opts;

typedef struct sink_session sink_session;

struct sink {
    struct ev_loop *loop;
    klog *log;
    sink_opts o;
    tls_ctx *tls;
    conn_acceptor acceptor;              /* the listeners (-l) */
    sink_counts *by_listener;            /* one per acceptor.v[i] */
    sink_client *clients[SINK_CLIENT_BUCKETS];
    sink_session *sessions;              /* doubly linked */
    int nsessions;
    uint64_t next_id;
    sink_counts total;
    uint64_t faults[F_COUNT];
    uint64_t rng;
    int64_t started_ms;
    ev_signal sigusr1, sigterm, sigint;
    ev_timer stats_timer;
    bool stopping;
    FILE *record;                        /* --record, line-buffered; NULL without it */
    size_t record_header_len;
};

typedef enum {
    SS_CMD,             /* reading commands (greeted or not; no transaction or MAIL/RCPT) */
    SS_DATA,            /* reading the message */
    SS_HOLD,            /* a delayed reply is pending: input waits */
    SS_TLS_WAIT,        /* "220 Ready to start TLS" being written */
    SS_TLS_HANDSHAKE,
    SS_CLOSING,         /* writing the last replies */
    SS_LINGER,          /* write side shut; reading until the client closes */
} sink_state;

typedef enum { HOLD_RCPT, HOLD_DATA } hold_kind;

struct sink_session {
    sink *sk;
    sink_session *prev, *next;
    size_t li;                           /* its listener: acceptor.v[li] */
    sink_client *c;
    uint64_t id;
    conn conn;                           /* socket, TLS, buffers; its timer: idle / linger /
                                            handshake timeout */
    ev_timer hold;                       /* delayed reply */
    sink_state state;
    hold_kind hold_kind;
    char *held_reply;
    bool in_mail;                        /* MAIL accepted */
    unsigned nrcpts;                     /* recipients accepted in this transaction */
    uint64_t data_bytes;
    uint64_t messages;                   /* messages accepted in this session */
    smtp_linereader lr;
    bool discard_input;
    bool dead;
    int errors;
    int64_t started_ms;
    const char *close_reason;
    bool in_headers;                     /* --record: still in the message's header section */
    char *record_value;                  /* --record: the --record-header value seen */
};

/* sink_stats.c */
/* The counters of client IP ip (created at first sight). */
sink_client *sink_client_get(sink *sk, const char *ip);
void sink_count_add(sink_counts *n, uint64_t msgs, uint64_t rcpts, uint64_t bytes);
/* Writes the stats: to --stats-file through a temporary file and rename(2), else to stdout. */
void sink_stats_write(sink *sk);

/* sink_record.c */
/* Opens --record (appending, line-buffered); false with *err set when it cannot. */
bool sink_record_open(sink *sk, char **err);
void sink_record_close(sink *sk);
/* A new message starts (DATA accepted): its header section is scanned. */
void sink_record_begin(sink_session *s);
/* One line of DATA (dot-unstuffed, without CRLF). */
void sink_record_line(sink_session *s, const char *text, size_t len);
/* The message was answered 250: one line goes to --record. */
void sink_record_accepted(sink_session *s);
/* The transaction ended (accepted or not): forget what was seen. */
void sink_record_reset(sink_session *s);

/* sink_args.c */
void sink_usage(FILE *fp);
/* Returns 0, or 2 after printing why the command line is wrong. */
int sink_parse_args(int argc, char **argv, sink_opts *o, bool *help);

#endif
