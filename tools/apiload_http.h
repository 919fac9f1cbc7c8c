/* apiload_http.h — kiln-apiload's HTTP/1.1 client: one keep-alive connection carrying one
 * request at a time, on a libev loop, over mta/conn (sockets, TLS, buffers, timers), and the
 * pure parser of the answers it reads.
 *
 * Why by hand and not libcurl: a load tool must cost far less than the server it measures,
 * and on a machine where both share the cores every microsecond the client spends is taken
 * from kilnd. libcurl's multi interface cost kiln-apiload about 25 µs per request of its own
 * (poll sets, option and header bookkeeping, its connection cache), as much again as the
 * tool's other work together, and more than kiln-loadgen spends on a whole SMTP message.
 * What is needed here is narrow: write a request we built, read one answer framed by
 * Content-Length. Real HTTP clients (the aws CLI, boto3) are what the integration tests use.
 *
 * Promises:
 * - An answer is a status line "HTTP/1.x NNN ...", header lines and a body of exactly
 *   Content-Length bytes; interim 1xx answers are skipped. An answer without Content-Length,
 *   with Transfer-Encoding, with header lines over AH_MAX_HEADER bytes or a body over
 *   AH_MAX_BODY bytes is an error naming which (kilnd never sends one).
 * - "Connection: close" in an answer, or a malformed one, closes the connection after it;
 *   the next request opens a new one.
 * - A request written on a reused connection that the server closed before any byte of
 *   answer arrived is sent once more on a new connection (as libcurl and the SDKs do: the
 *   server may close an idle keep-alive connection just as a request goes out).
 * - timeout bounds each request from the moment it is handed over, connect included. */
#ifndef KILN_APILOAD_HTTP_H
#define KILN_APILOAD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/util.h"

#define AH_MAX_HEADER (64u << 10)
#define AH_MAX_BODY (1u << 20)

struct ev_loop;
struct tls_ctx;

/* ---- the answer parser (pure) ---- */
typedef struct ah_answer {
    int status;                /* 200..599 */
    char errtype[128];         /* x-amzn-ErrorType up to its first ':' ("" if none) */
    bool close;                /* Connection: close */
    size_t body_off, body_len; /* the body within the parsed bytes */
} ah_answer;

/* Parses the answer at the start of buf[0..len). Returns the bytes it spans (> 0) with *a
 * filled, 0 when more bytes are needed, or -1 with *why a static reason. 1xx answers before
 * it are part of the span. */
long ah_parse_answer(const char *buf, size_t len, ah_answer *a, const char **why);

/* ---- the connection ---- */
typedef struct ah_target {
    struct ev_loop *loop;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    struct tls_ctx *tls;       /* https: a client context (not verified); NULL for http */
    const char *server_name;   /* SNI */
    double timeout;            /* seconds per request */
} ah_target;

typedef struct ah_result {
    const char *error;         /* NULL: an answer came (a), else the kind of failure */
    const ah_answer *a;
    const char *body;          /* a's body */
    int64_t sent_us;           /* when the request was written (connection up) */
} ah_result;

typedef void (*ah_done_fn)(void *arg, const ah_result *r);

typedef struct ah_conn ah_conn;

ah_conn *ah_conn_new(const ah_target *t, ah_done_fn done, void *arg);
/* Sends req (a whole request, taken: *req is left empty) and calls done once with the
 * answer or the failure. One request at a time. */
void ah_conn_send(ah_conn *c, strbuf *req);
/* Connections this one opened so far (keep-alive at work: 1 when it lasted). */
uint64_t ah_conn_opened(const ah_conn *c);
void ah_conn_free(ah_conn *c);

int64_t ah_now_us(void);

#endif
