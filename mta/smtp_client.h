/* smtp_client.h — one outbound SMTP connection as a non-blocking state machine on libev:
 * bind to the chosen source IP, connect, greeting, EHLO (HELO fallback), STARTTLS when
 * offered, AUTH PLAIN when asked (a cluster handoff), then any number of transactions (RSET between them), each MAIL, RCPT per
 * recipient (pipelined when offered), DATA with dot-stuffing, and finally QUIT.
 * Replies are reported per recipient; the caller (the scheduler) decides what they mean.
 *
 * Callbacks never run from inside a public function of this module: smtp_client_new,
 * smtp_client_send and smtp_client_quit only queue work; all outcomes arrive from the loop.
 * The reply parser and the DATA encoder are pure and exported for unit tests. */
#ifndef KILN_SMTP_CLIENT_H
#define KILN_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/log.h"
#include "mta/tls.h"
#include "base/util.h"

struct ev_loop;

/* RFC 5321 section 4.5.3.2 timeouts. */
#define SMTP_CLIENT_GREETING_TIMEOUT_MS   (5 * 60 * 1000)
#define SMTP_CLIENT_MAIL_TIMEOUT_MS       (5 * 60 * 1000)   /* also EHLO, STARTTLS, RSET */
#define SMTP_CLIENT_RCPT_TIMEOUT_MS       (5 * 60 * 1000)
#define SMTP_CLIENT_DATA_INIT_TIMEOUT_MS  (2 * 60 * 1000)
#define SMTP_CLIENT_DATA_BLOCK_TIMEOUT_MS (3 * 60 * 1000)
#define SMTP_CLIENT_DATA_TERM_TIMEOUT_MS  (10 * 60 * 1000)
#define SMTP_CLIENT_QUIT_TIMEOUT_MS       (30 * 1000)       /* kiln's own: nothing depends on it */

typedef struct smtp_client_timeouts {
    int64_t connect_ms;      /* delivery.connect_timeout */
    int64_t greeting_ms;
    int64_t mail_ms;
    int64_t rcpt_ms;
    int64_t data_init_ms;
    int64_t data_block_ms;   /* no write progress while sending the message */
    int64_t data_term_ms;    /* reply to the final "." */
    int64_t quit_ms;
} smtp_client_timeouts;
/* The RFC 5321 values above, with the given connect timeout. */
void smtp_client_default_timeouts(smtp_client_timeouts *t, int64_t connect_ms);

/* ---- replies ---- */
typedef struct smtp_client_reply {
    int code;                /* 0 when there was no reply (a local failure) */
    char enhanced[16];       /* "5.1.1" when the reply starts with one, else "" */
    char *text;              /* each line's text (code and enhanced code removed), '\n'-joined */
    char *line;              /* one line for logs, events and the spool: "550 5.1.1 No such user";
                                for a local failure, its description */
} smtp_client_reply;

/* Parses one complete (possibly multi-line) reply at the start of buf. Returns 1 and fills
 * *out (free with smtp_client_reply_free) and *used; 0 if more bytes are needed; -1 if the
 * bytes are not an SMTP reply (or one longer than 64 KiB). Accepts CRLF or bare LF. */
int smtp_client_parse_reply(const char *buf, size_t len, smtp_client_reply *out, size_t *used);
/* The framing half of smtp_client_parse_reply, without copying anything: the same 1 / 0 / -1
 * with the reply's *code (its first line's) and *used. For callers that need only codes. */
int smtp_client_scan_reply(const char *buf, size_t len, int *code, size_t *used);
void smtp_client_reply_free(smtp_client_reply *r);

/* The extensions a 2xx EHLO reply announces (every line after the first; keywords are
 * case-insensitive and end at a space or '='). */
typedef struct smtp_client_caps {
    bool pipelining;
    bool starttls;
    bool eightbitmime;
    bool size;               /* SIZE announced */
    int64_t size_max;        /* its limit; 0 when none was given (or 0) */
} smtp_client_caps;
void smtp_client_parse_ehlo(const smtp_client_reply *r, smtp_client_caps *out);

/* ---- DATA encoding ---- */
/* Appends data as sent after "354": every line end made CRLF, lines starting with "."
 * doubled, a final CRLF added if missing, then ".\r\n". */
void smtp_client_encode_data(const char *data, size_t len, strbuf *out);
/* True if data has a byte >= 0x80 (then BODY=8BITMIME is declared when offered). */
bool smtp_client_has_8bit(const char *data, size_t len);

/* ---- sessions ---- */
typedef struct smtp_client smtp_client;

typedef enum {
    SMTP_CLIENT_OK = 0,          /* a reply from the server */
    SMTP_CLIENT_FAIL_BIND,       /* bind() to the source IP failed (e.g. EADDRNOTAVAIL): an IP failure */
    SMTP_CLIENT_FAIL_CONNECT,    /* connect() refused, unreachable or timed out */
    SMTP_CLIENT_FAIL_REJECTED,   /* the server refused the session: greeting or EHLO/HELO not 2xx */
    SMTP_CLIENT_FAIL_TLS,        /* STARTTLS accepted but the TLS handshake failed */
    SMTP_CLIENT_FAIL_IO,         /* lost connection, reply timeout, not an SMTP reply */
    SMTP_CLIENT_FAIL_TLS_REQUIRED, /* smtp_client_send: message requires TLS, session has none */
    SMTP_CLIENT_FAIL_TOO_BIG,    /* smtp_client_send: message larger than the server's SIZE */
    SMTP_CLIENT_FAIL_LOCAL,      /* kiln's own resources ran out (EMFILE, ENFILE, ENOBUFS, ENOMEM
                                    from socket/bind/connect): neither the IP's nor the peer's fault */
    SMTP_CLIENT_FAIL_LOOP,       /* the greeting or EHLO reply announced opts.self_name: the
                                    server is kiln itself (mail loop); the connection closes */
} smtp_client_status;

const char *smtp_client_status_name(smtp_client_status st);

typedef struct smtp_client_opts {
    const char *source_ip;   /* bound before connect(); NULL: the system chooses */
    const char *peer_ip;     /* IPv4 or IPv6 literal */
    int port;
    const char *peer_name;   /* MX host name (SNI, logs); may be NULL */
    const char *ehlo_name;
    const char *self_name;   /* kiln's server.hostname: a server announcing it in its greeting
                                or EHLO reply is kiln itself (FAIL_LOOP); NULL: no check */
    tls_ctx *tls;            /* client context (tls_client_ctx_new) for STARTTLS;
                                NULL: never start TLS */
    const tls_auth *auth;    /* what the server's certificate must prove (copied); NULL or
                                TLS_AUTH_NONE: nothing. A failure is FAIL_TLS, with
                                tls_conn_authenticate's reason, before anything is sent */
    const char *auth_plain;  /* AUTH PLAIN's initial response (base64 of "\0user\0password"),
                                sent after EHLO (and TLS) before the session is ready; a reply
                                other than 235 is FAIL_REJECTED. NULL: no AUTH (MX delivery) */
    smtp_client_timeouts timeouts;
} smtp_client_opts;

typedef struct smtp_client_msg {
    const char *id;          /* for logs */
    const char *mail_from;   /* "" for <> */
    char *const *rcpts;
    size_t nrcpts;
    const char *data;        /* CRLF lines, not dot-stuffed */
    size_t data_len;
    bool require_tls;        /* never send in clear */
} smtp_client_msg;

typedef struct smtp_client_rcpt_result {
    smtp_client_status status;   /* OK: reply is the server's; else FAIL_IO (connection lost
                                    or timed out before this recipient's final reply) */
    smtp_client_reply reply;
} smtp_client_rcpt_result;

typedef enum {
    SMTP_CLIENT_EV_READY,    /* greeting, EHLO and TLS done: give it a message (or QUIT) */
    SMTP_CLIENT_EV_DONE,     /* a transaction ended: per-recipient results */
    SMTP_CLIENT_EV_CLOSED,   /* the session is over; the callback may free it now */
} smtp_client_ev_type;

typedef struct smtp_client_event {
    smtp_client_ev_type type;
    /* DONE: one result per recipient of the message, in its order. A recipient refused at
     * RCPT keeps that reply; one accepted gets the reply to the final "." (or to DATA). */
    const smtp_client_rcpt_result *rcpts;
    size_t nrcpts;
    bool usable;             /* DONE: the session can take another message */
    bool nothing_done;       /* DONE: the connection failed before the server answered MAIL:
                                the transaction never happened and may go elsewhere at once */
    /* CLOSED: OK after QUIT or when an idle connection ends; else why the session failed
     * before it became ready (reply set for FAIL_REJECTED). */
    smtp_client_status status;
    const char *error;
    const smtp_client_reply *reply;
    bool connect_timeout;    /* CLOSED, FAIL_CONNECT: connect() got no answer within
                                timeouts.connect_ms (SYN unanswered), not a refusal */
} smtp_client_event;

typedef void (*smtp_client_cb)(void *arg, smtp_client *c, const smtp_client_event *ev);

/* Starts connecting; everything, a bind failure included, is reported through cb. The
 * strings in opts are copied. */
smtp_client *smtp_client_new(struct ev_loop *loop, klog *lg, const smtp_client_opts *opts,
                             smtp_client_cb cb, void *arg);
/* Starts a transaction on a ready, idle session. m and everything it points to must stay
 * valid until the DONE event. Returns 0, or -1 with *why (FAIL_TLS_REQUIRED, FAIL_TOO_BIG)
 * and *err (malloc'd) when the message must not be sent on this session; nothing was sent
 * then and the session stays idle. */
int smtp_client_send(smtp_client *c, const smtp_client_msg *m, smtp_client_status *why,
                     char **err);
/* Ends the session politely: at once when idle, else after the current step or transaction. */
void smtp_client_quit(smtp_client *c);
/* Ends the session from the loop, soon (not inside this call): as a lost connection
 * (FAIL_IO with ERROR), every recipient of a transaction in progress without a final reply
 * failing with it. For a session that can no longer get a reply (its source address is
 * gone). Nothing happens if the session is already closed or closing. */
void smtp_client_abort(smtp_client *c, const char *error);
/* Closes the socket at once, without callbacks. */
void smtp_client_free(smtp_client *c);

bool smtp_client_tls_active(const smtp_client *c);
/* "127.0.0.10->127.0.0.1:2526 (mx.example.test)" for logs. */
const char *smtp_client_to_text(const smtp_client *c);

#endif
