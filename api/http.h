/* http.h — kilnd's HTTP/1.1 listener (the SES v2 API's transport): libmicrohttpd in
 * external mode, its epoll fd and timeout driven by the libev loop (no thread of its own),
 * keep-alive, optional TLS (MHD's GnuTLS, cert and key PEM read once at start), request
 * bodies gathered in memory up to a cap, answers given at once or later (the connection is
 * suspended until http_reply), every limit a hostile client could press on bounded:
 * header bytes, body bytes, in-flight body bytes of all requests together, connections
 * per client IP and in total, idle and request timeouts. Never blocks the loop.
 *
 * Why libmicrohttpd: Debian's well-kept HTTP/1.1 server library that runs inside another
 * event loop (MHD_USE_EPOLL without an internal thread, MHD_run when its fd is readable),
 * with suspend/resume for answers that wait for the spool's commit. */
#ifndef KILN_HTTP_H
#define KILN_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ev_loop;
struct klog;

typedef struct http_server http_server;
typedef struct http_exchange http_exchange;   /* one request waiting for its answer */

typedef struct http_header {
    const char *name;            /* as received (any case) */
    const char *value;           /* as received, without leading/trailing blanks */
} http_header;

/* One complete request, valid until http_reply on its exchange. */
typedef struct http_request {
    const char *method;          /* "GET", "POST", "PUT", "DELETE", ... */
    const char *path;            /* raw request-target path, still percent-encoded ("/v2/email/x%40y") */
    const char *query;           /* raw query after '?', still encoded; "" if none */
    const http_header *headers;  /* in arrival order; repeated names appear repeatedly */
    size_t nheaders;
    const char *body;            /* NUL-terminated copy; body_len bytes (may hold NULs) */
    size_t body_len;
    const char *client_ip;       /* textual address of the peer */
    bool tls;
} http_request;

/* Case-insensitive lookup of the first header named name; NULL if absent. */
const char *http_request_header(const http_request *r, const char *name);

/* The handler owns the exchange until it calls http_reply (at once or later from the
 * loop, e.g. from a spool commit callback). The exchange and request stay valid until
 * then, even if the client went away (the reply is then dropped). */
typedef void (*http_handler)(void *arg, const http_request *req, http_exchange *x);

typedef struct http_limits {
    size_t max_body;             /* bytes of one request body; larger: 413 before reading it */
    size_t max_header;           /* bytes of the request line + headers (MHD memory limit) */
    int64_t max_inflight;        /* body bytes held by all open requests and unsent answers
                                    together; past it 503 */
    unsigned max_connections;    /* total */
    unsigned max_per_ip;         /* per client IP */
    unsigned timeout_s;          /* idle connection / slow request timeout */
} http_limits;

typedef struct http_listen {
    const char *host;            /* literal address or name */
    int port;                    /* 0: any free port (tests read it back with http_port) */
} http_listen;

typedef struct http_tls {
    const char *cert_file;       /* PEM; NULL: plain HTTP */
    const char *key_file;
} http_tls;

/* Binds every address (before privileges are dropped) and starts serving on loop.
 * NULL and *err ("api.listen 127.0.0.1:8080: Address already in use") on failure. */
http_server *http_start(struct ev_loop *loop, struct klog *log, const http_listen *listen,
                        size_t nlisten, const http_tls *tls, const http_limits *lim,
                        http_handler handler, void *arg, char **err);
/* The port the i-th listener is bound to. */
int http_port(const http_server *s, size_t i);
/* The graceful stop's first step: the listening sockets close (no new connections); open
 * connections go on (the handler decides what a new request on one gets). */
void http_quiesce(http_server *s);
/* Stops: answers already given are written out (a few non-blocking runs), open requests
 * are dropped unanswered; frees everything. */
void http_stop(http_server *s);

/* Answers the exchange: status, headers (NULL-terminated list of name, value pairs; may be
 * NULL), body (taken: malloc'd, freed by the server; may be NULL with len 0). Adds
 * Content-Length, Date and x-amzn-RequestId. Frees the exchange. */
void http_reply(http_exchange *x, int status, const char *const *headers, char *body, size_t len);
/* Whether an answer body of len bytes fits in max_inflight now, counting the bytes the
 * request's body gives back (http_reply counts an answer's body there until it is sent:
 * answers waiting for slow readers are bounded with the requests). */
bool http_reply_fits(const http_exchange *x, size_t len);

#endif
