/* http.c — kilnd's HTTP/1.1 listener (api/http.h): one libmicrohttpd daemon per listen
 * address, run without a thread of its own inside the libev loop.
 *
 * How it runs: MHD_USE_EPOLL with MHD_ALLOW_SUSPEND_RESUME and no thread. The daemon's
 * epoll fd is watched by an ev_io; an ev_timer is set from MHD_get_timeout() after every
 * MHD_run(); either calls MHD_run(). MHD drops its inter-thread channel in this external
 * mode (0.9.75's MHD_start_daemon clears MHD_USE_ITC without an internal thread), so a
 * resume does not wake the epoll fd: http_reply starts an ev_prepare watcher instead, which
 * runs MHD_run once when the loop has finished the current round of callbacks, before it
 * polls again (test_http's async test hangs without it). So the answers of one spool commit
 * go out together, at once, and not behind the next round's work (a zero timer, used
 * before, ran after the next poll and the scheduler's pump: 0.1 ms and more per answer,
 * where an SMTP reply is written by its callback). The listen
 * socket is bound here (getaddrinfo, SO_REUSEADDR, IPV6_V6ONLY for IPv6) and handed over
 * with MHD_OPTION_LISTEN_SOCKET, so that port 0 works and http_port reads the bound port.
 *
 * One request is one http_exchange, made by MHD's URI log callback (which also keeps the
 * request-target as received: MHD unescapes its own copy) and passed to the other callbacks
 * as MHD's per-request pointer. Its life:
 *   reading   headers done (first access-handler call): Content-Length above max_body is
 *             answered 413 at once, before any body byte is read; body bytes are reserved
 *             against max_inflight (all requests together, and the answers not sent yet:
 *             http_reply counts an answer's body until MHD completes it), 503 when they
 *             would pass it.
 *             Chunked bodies are checked chunk by chunk; MHD only lets a response be queued
 *             before the body or after all of it, so an over-long chunked body is read and
 *             dropped (at most max_body more bytes, then the connection is closed) and
 *             answered 413/503 at its end.
 *   handed    the request is complete: the handler owns the exchange until http_reply. If
 *             it has not replied when it returns, the connection is suspended.
 *   replied   http_reply built the MHD response and freed the request's memory; the
 *             response is queued at once (reply inside the handler) or after resuming the
 *             connection (the kick watcher runs MHD_run, which queues and sends it).
 *   done      MHD's request-completed callback frees the exchange.
 * If MHD completes the request while the handler still owns it (the daemon is stopping,
 * or MHD gave up on the connection), the exchange is only marked gone: the handler's
 * later http_reply frees it and sends nothing. http_stop resumes every suspended
 * connection (MHD refuses to stop with suspended ones), stops the daemons (open requests
 * are dropped, not answered) and detaches the exchanges the handler still holds; their
 * http_reply then just frees them.
 *
 * Limits: max_header is MHD's per-connection memory (request line, headers and the
 * answer's header; MHD answers a request that does not fit 431 or 414 and closes),
 * max_connections and max_per_ip are MHD's connection limits (an extra connection is
 * closed at once), timeout_s is MHD's idle timeout. Rejections are logged as http.reject. */
#include "api/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"

typedef struct http_listener {
    http_server *srv;
    struct MHD_Daemon *d;
    int port;
    ev_io io;                    /* the daemon's epoll fd */
    ev_timer timer;              /* MHD_get_timeout */
    ev_prepare kick_w;           /* after a resume: MHD_run before the loop polls again */
    bool kick;                   /* a connection was resumed: run MHD again soon */
} http_listener;

struct http_server {
    struct ev_loop *loop;
    klog *log;
    http_handler handler;
    void *arg;
    http_limits lim;
    bool tls;
    http_listener *ls;
    size_t nls;
    int64_t inflight;            /* body bytes of open requests and of answers not sent */
    http_exchange *head;         /* every exchange still attached to this server */
};

typedef enum { HX_READING, HX_HANDED, HX_REPLIED } http_state;

struct http_exchange {
    http_server *srv;            /* NULL once detached by http_stop */
    http_listener *ln;
    struct MHD_Connection *conn; /* NULL once MHD is done with the request */
    http_exchange *prev, *next;
    http_state state;
    bool started;                /* the access handler has seen the headers */
    bool in_handler;             /* inside the handler call: reply is queued on return */
    bool suspended;
    bool gone;                   /* MHD completed the request while the handler held it */
    int reject;                  /* 413 or 503 to answer at the end of the body; 0: none */
    size_t dropped;              /* body bytes read and dropped after a reject */
    int64_t reserved;            /* request body bytes counted in srv->inflight */
    int64_t reply_reserved;      /* answer body bytes counted there until it is sent */
    char *target;                /* the raw request-target; path and query point into it */
    char *method;
    strbuf body;
    http_header *headers;
    size_t nheaders, cap_headers;
    char client_ip[INET6_ADDRSTRLEN];
    http_request req;
    struct MHD_Response *resp;   /* built by http_reply, not queued yet */
    unsigned status;
};

/* ------------------------------------------------------------------------------------------
 * Running MHD from the loop
 * ---------------------------------------------------------------------------------------- */

static void http_run(http_listener *ln)
{
    ln->kick = false;
    MHD_run(ln->d);
    struct ev_loop *loop = ln->srv->loop;
    ev_timer_stop(loop, &ln->timer);
    MHD_UNSIGNED_LONG_LONG ms = 0;
    if (ln->kick) ms = 0;
    else if (MHD_get_timeout(ln->d, &ms) != MHD_YES) return;
    ev_timer_set(&ln->timer, (double)ms / 1000.0, 0.);
    ev_timer_start(loop, &ln->timer);
}

static void http_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    http_run(w->data);
}

static void http_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    http_run(w->data);
}

static void http_kick_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    http_listener *ln = w->data;
    ev_prepare_stop(loop, w);
    if (ln->kick) http_run(ln);
}

/* Makes MHD_run happen once the loop has run the current round of callbacks, before it
 * polls again (after a resume; MHD has no ITC here): every answer given in this round goes
 * out in that one run. */
static void http_kick(http_listener *ln)
{
    ln->kick = true;
    if (!ev_is_active(&ln->kick_w)) ev_prepare_start(ln->srv->loop, &ln->kick_w);
}

static void http_mhd_log(void *cls, const char *fmt, va_list ap)
{
    http_server *srv = cls;
    if (!log_enabled(srv->log, KLOG_DEBUG)) return;
    char *msg = util_vasprintf(fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    log_write(srv->log, KLOG_DEBUG, "http.mhd", "msg=%s", log_q(srv->log, msg));
    free(msg);
}

/* ------------------------------------------------------------------------------------------
 * Exchanges
 * ---------------------------------------------------------------------------------------- */

static void http_unlink(http_exchange *x)
{
    if (!x->srv) return;
    if (x->prev) x->prev->next = x->next;
    else x->srv->head = x->next;
    if (x->next) x->next->prev = x->prev;
    x->prev = x->next = NULL;
}

/* Gives back the exchange's in-flight reservation. */
static void http_release(http_exchange *x)
{
    if (x->srv) x->srv->inflight -= x->reserved;
    x->reserved = 0;
}

/* Frees what the request holds (not the exchange). */
static void http_request_free(http_exchange *x)
{
    http_release(x);
    strbuf_free(&x->body);
    for (size_t i = 0; i < x->nheaders; i++) {
        free((char *)x->headers[i].name);
        free((char *)x->headers[i].value);
    }
    free(x->headers);
    x->headers = NULL;
    x->nheaders = x->cap_headers = 0;
    free(x->target);
    free(x->method);
    x->target = x->method = NULL;
}

static void http_exchange_free(http_exchange *x)
{
    http_request_free(x);
    if (x->srv) x->srv->inflight -= x->reply_reserved;
    x->reply_reserved = 0;
    http_unlink(x);
    if (x->resp) MHD_destroy_response(x->resp);
    free(x);
}

static void http_client_ip(struct MHD_Connection *c, char out[INET6_ADDRSTRLEN])
{
    snprintf(out, INET6_ADDRSTRLEN, "?");
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr) return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                  INET6_ADDRSTRLEN);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                  INET6_ADDRSTRLEN);
}

/* MHD_OPTION_URI_LOG_CALLBACK: a request line arrived; its target is still as sent. */
static void *http_uri_cb(void *cls, const char *uri, struct MHD_Connection *c)
{
    http_listener *ln = cls;
    http_exchange *x = util_calloc(1, sizeof *x);
    x->srv = ln->srv;
    x->ln = ln;
    x->conn = c;
    x->target = util_strdup(uri ? uri : "");
    strbuf_init(&x->body);
    http_client_ip(c, x->client_ip);
    x->next = ln->srv->head;
    if (x->next) x->next->prev = x;
    ln->srv->head = x;
    return x;
}

static enum MHD_Result http_add_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                       const char *value)
{
    (void)kind;
    http_exchange *x = cls;
    if (x->nheaders == x->cap_headers) {
        x->cap_headers = x->cap_headers ? 2 * x->cap_headers : 16;
        x->headers = util_realloc(x->headers, x->cap_headers * sizeof *x->headers);
    }
    x->headers[x->nheaders].name = util_strdup(key ? key : "");
    /* MHD drops the blanks before a value, not those after it (RFC 9110 5.5: not part of it) */
    if (!value) value = "";
    while (*value == ' ' || *value == '\t') value++;
    size_t n = strlen(value);
    while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t')) n--;
    x->headers[x->nheaders].value = util_strndup(value, n);
    x->nheaders++;
    return MHD_YES;
}

static void http_reject_log(http_exchange *x, int status, const char *reason)
{
    if (!x->srv) return;
    log_write(x->srv->log, KLOG_WARNING, "http.reject", "client=%s reason=%s status=%d",
              x->client_ip, reason, status);
}

/* Marks the request as rejected: its body (if any) is dropped from now on. */
static void http_reject(http_exchange *x, int status, const char *reason)
{
    x->reject = status;
    http_reject_log(x, status, reason);
    http_release(x);
    strbuf_free(&x->body);
}

static struct MHD_Response *http_error_response(int status, http_server *srv)
{
    char *body = status == 413
        ? util_asprintf("{\"message\":\"request body too large (at most %zu bytes)\"}",
                        srv->lim.max_body)
        : util_strdup("{\"message\":\"too many request bytes in flight, retry later\"}");
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "application/json");
    MHD_add_response_header(r, "x-amzn-ErrorType",
                            status == 413 ? "BadRequestException" : "ServiceUnavailable");
    MHD_add_response_header(r, "Connection", "close");
    return r;
}

static enum MHD_Result http_queue_error(struct MHD_Connection *c, http_exchange *x)
{
    struct MHD_Response *r = http_error_response(x->reject, x->srv);
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)x->reject, r);
    MHD_destroy_response(r);
    x->state = HX_REPLIED;
    return rc;
}

/* Reserves n more in-flight bytes; false when max_inflight would be passed. */
static bool http_reserve(http_exchange *x, int64_t n)
{
    http_server *s = x->srv;
    if (s->inflight + n > s->lim.max_inflight) return false;
    s->inflight += n;
    x->reserved += n;
    return true;
}

/* The first call: headers are in. A declared body too large, or one that does not fit in
 * what is left of max_inflight, is answered now, before it is read. */
static enum MHD_Result http_headers_in(http_exchange *x, struct MHD_Connection *c,
                                       const char *method)
{
    x->started = true;
    x->method = util_strdup(method);
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl) return MHD_YES;
    char *end = NULL;
    errno = 0;
    unsigned long long n = strtoull(cl, &end, 10);
    if (errno || end == cl) return MHD_YES;     /* MHD itself answers a broken length */
    if (n > x->srv->lim.max_body) {
        http_reject(x, 413, "body-too-large");
        return http_queue_error(c, x);
    }
    if (!http_reserve(x, (int64_t)n)) {
        http_reject(x, 503, "inflight-full");
        return http_queue_error(c, x);
    }
    return MHD_YES;
}

/* A chunk of the body. */
static enum MHD_Result http_body_in(http_exchange *x, const char *data, size_t n)
{
    if (x->reject) {
        x->dropped += n;
        return x->dropped > x->srv->lim.max_body ? MHD_NO : MHD_YES;
    }
    size_t len = x->body.len + n;
    if (len > x->srv->lim.max_body) {
        http_reject(x, 413, "body-too-large");
        x->dropped = n;
        return MHD_YES;
    }
    if ((int64_t)len > x->reserved && !http_reserve(x, (int64_t)len - x->reserved)) {
        http_reject(x, 503, "inflight-full");
        x->dropped = n;
        return MHD_YES;
    }
    strbuf_append(&x->body, data, n);
    return MHD_YES;
}

/* The request is complete: hand it to the handler. */
static enum MHD_Result http_complete(http_exchange *x, struct MHD_Connection *c)
{
    MHD_get_connection_values(c, MHD_HEADER_KIND, http_add_header, x);
    strbuf_append(&x->body, "", 0);             /* a NUL-terminated buffer even when empty */
    char *q = strchr(x->target, '?');
    if (q) *q++ = '\0';
    x->req = (http_request){
        .method = x->method,
        .path = x->target,
        .query = q ? q : "",
        .headers = x->headers,
        .nheaders = x->nheaders,
        .body = x->body.buf,
        .body_len = x->body.len,
        .client_ip = x->client_ip,
        .tls = x->srv->tls,
    };
    x->state = HX_HANDED;
    x->in_handler = true;
    x->srv->handler(x->srv->arg, &x->req, x);
    x->in_handler = false;
    if (x->state == HX_HANDED) {
        x->suspended = true;
        MHD_suspend_connection(c);
        return MHD_YES;
    }
    struct MHD_Response *r = x->resp;
    x->resp = NULL;
    enum MHD_Result rc = MHD_queue_response(c, x->status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result http_access_cb(void *cls, struct MHD_Connection *c, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **req_cls)
{
    (void)url;
    (void)version;
    http_exchange *x = *req_cls;
    if (!x) x = *req_cls = http_uri_cb(cls, NULL, c);   /* no target seen: should not happen */
    if (!x->started) return http_headers_in(x, c, method);
    if (*upload_data_size > 0) {
        enum MHD_Result rc = http_body_in(x, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return rc;
    }
    if (x->reject) return x->state == HX_REPLIED ? MHD_YES : http_queue_error(c, x);
    if (x->state == HX_READING) return http_complete(x, c);
    if (x->resp) {                                      /* resumed after a late reply */
        struct MHD_Response *r = x->resp;
        x->resp = NULL;
        enum MHD_Result rc = MHD_queue_response(c, x->status, r);
        MHD_destroy_response(r);
        return rc;
    }
    return MHD_YES;
}

static void http_completed_cb(void *cls, struct MHD_Connection *c, void **req_cls,
                              enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)toe;
    http_exchange *x = *req_cls;
    if (!x) return;
    *req_cls = NULL;
    if (!x->started) {
        /* MHD answered on its own: the request line or headers did not fit (431/414) or
         * were malformed (400). */
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_HTTP_STATUS);
        unsigned st = ci ? ci->http_status : 0;
        if (st == 431 || st == 414) http_reject_log(x, (int)st, "headers-too-large");
        else if (st >= 400) http_reject_log(x, (int)st, "malformed-request");
    }
    if (x->state == HX_HANDED) {                        /* the handler still holds it */
        x->conn = NULL;
        x->gone = true;
        x->suspended = false;
        return;
    }
    http_exchange_free(x);
}

/* ------------------------------------------------------------------------------------------
 * Public API
 * ---------------------------------------------------------------------------------------- */

const char *http_request_header(const http_request *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0) return r->headers[i].value;
    return NULL;
}

static void http_uuid(char out[37])
{
    char hex[33];
    util_random_hex(hex, 16);
    hex[12] = '4';                                      /* version 4 */
    hex[16] = "89ab"[(hex[16] <= '9' ? hex[16] - '0' : hex[16] - 'a' + 10) & 3];
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}

void http_reply(http_exchange *x, int status, const char *const *headers, char *body, size_t len)
{
    if (!x || x->state != HX_HANDED) util_fatal("http_reply on an exchange that is not waiting");
    http_request_free(x);
    if (x->gone || !x->srv) {                           /* nobody to answer */
        free(body);
        http_exchange_free(x);
        return;
    }
    x->reply_reserved = (int64_t)len;                   /* until MHD has sent it */
    x->srv->inflight += x->reply_reserved;
    struct MHD_Response *r = body ? MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE)
                                  : MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!r) util_fatal("http_reply: cannot make a response of %zu bytes", len);
    bool has_type = false, has_id = false;
    for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2) {
        if (strcasecmp(headers[i], "Content-Length") == 0) continue;   /* MHD's own */
        if (strcasecmp(headers[i], "Content-Type") == 0) has_type = true;
        if (strcasecmp(headers[i], "x-amzn-RequestId") == 0) has_id = true;
        MHD_add_response_header(r, headers[i], headers[i + 1]);
    }
    if (!has_type) MHD_add_response_header(r, "Content-Type", "application/json");
    if (!has_id) {
        char id[37];
        http_uuid(id);
        MHD_add_response_header(r, "x-amzn-RequestId", id);
    }
    x->resp = r;
    x->status = (unsigned)status;
    x->state = HX_REPLIED;
    if (x->in_handler) return;                          /* http_complete queues it */
    if (x->suspended) {
        x->suspended = false;
        MHD_resume_connection(x->conn);
        http_kick(x->ln);
    }
}

bool http_reply_fits(const http_exchange *x, size_t len)
{
    const http_server *s = x->srv;
    return !s || (int64_t)len <= s->lim.max_inflight - s->inflight + x->reserved;
}

static char *http_read_pem(const char *what, const char *path, char **err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *err = util_asprintf("api.tls.%s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    strbuf sb;
    strbuf_init(&sb);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) strbuf_append(&sb, buf, n);
    bool bad = ferror(f);
    fclose(f);
    if (bad || sb.len == 0) {
        *err = util_asprintf("api.tls.%s %s: %s", what, path, bad ? "read error" : "empty file");
        strbuf_free(&sb);
        return NULL;
    }
    return strbuf_steal(&sb);
}

/* A listening socket bound to host:port (non-blocking, close-on-exec), or -1 and *err. */
static int http_bind(const http_listen *l, char **err)
{
    char port[16];
    snprintf(port, sizeof port, "%d", l->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(l->host, port, &hints, &res);
    if (rc != 0) {
        *err = util_asprintf("api.listen %s:%d: %s", l->host, l->port, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) {
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (res->ai_family == AF_INET6)
            (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 128) < 0) {
        *err = util_asprintf("api.listen %s:%d: %s", l->host, l->port, strerror(errno));
        if (fd >= 0) close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static int http_bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) return -1;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

static int http_start_one(http_server *s, http_listener *ln, const http_listen *l,
                          const char *key, const char *cert, char **err)
{
    int fd = http_bind(l, err);
    if (fd < 0) return -1;
    ln->srv = s;
    ln->port = http_bound_port(fd);
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (s->tls) flags |= MHD_USE_TLS;
    size_t memory = s->lim.max_header;
    ln->d = MHD_start_daemon(
        flags, 0, NULL, NULL, http_access_cb, ln,
        MHD_OPTION_EXTERNAL_LOGGER, http_mhd_log, s,
        MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_URI_LOG_CALLBACK, http_uri_cb, ln,
        MHD_OPTION_NOTIFY_COMPLETED, http_completed_cb, ln,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, memory,
        MHD_OPTION_CONNECTION_LIMIT, s->lim.max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->lim.max_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, s->lim.timeout_s,
        s->tls ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, key,
        MHD_OPTION_HTTPS_MEM_CERT, cert,
        MHD_OPTION_END);
    if (!ln->d) {
        close(fd);
        *err = s->tls ? util_asprintf("api.listen %s:%d: cannot start HTTPS (is the key a PEM "
                                      "private key matching the certificate?)", l->host, ln->port)
                      : util_asprintf("api.listen %s:%d: cannot start the HTTP server", l->host,
                                      ln->port);
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(ln->d, MHD_DAEMON_INFO_EPOLL_FD);
    if (!di) {
        MHD_stop_daemon(ln->d);
        ln->d = NULL;
        *err = util_asprintf("api.listen %s:%d: no epoll fd from libmicrohttpd", l->host, ln->port);
        return -1;
    }
    ev_io_init(&ln->io, http_io_cb, di->epoll_fd, EV_READ);
    ln->io.data = ln;
    ev_io_start(s->loop, &ln->io);
    ev_timer_init(&ln->timer, http_timer_cb, 0., 0.);
    ln->timer.data = ln;
    ev_prepare_init(&ln->kick_w, http_kick_cb);
    ln->kick_w.data = ln;
    log_write(s->log, KLOG_INFO, "http.listen", "addr=%s port=%d tls=%s", l->host, ln->port,
              s->tls ? "yes" : "no");
    http_run(ln);
    return 0;
}

http_server *http_start(struct ev_loop *loop, struct klog *log, const http_listen *listen,
                        size_t nlisten, const http_tls *tls, const http_limits *lim,
                        http_handler handler, void *arg, char **err)
{
    *err = NULL;
    http_server *s = util_calloc(1, sizeof *s);
    s->loop = loop;
    s->log = log;
    s->handler = handler;
    s->arg = arg;
    s->lim = *lim;
    s->tls = tls && tls->cert_file && tls->key_file;
    char *cert = NULL, *key = NULL;
    if (s->tls) {
        if (!MHD_is_feature_supported(MHD_FEATURE_TLS)) {
            *err = util_strdup("api.tls: this libmicrohttpd has no TLS support");
            free(s);
            return NULL;
        }
        if (!(cert = http_read_pem("cert", tls->cert_file, err)) ||
            !(key = http_read_pem("key", tls->key_file, err))) {
            free(cert);
            free(s);
            return NULL;
        }
    }
    s->ls = util_calloc(nlisten ? nlisten : 1, sizeof *s->ls);
    for (size_t i = 0; i < nlisten; i++) {
        if (http_start_one(s, &s->ls[i], &listen[i], key, cert, err) < 0) {
            http_stop(s);
            s = NULL;
            break;
        }
        s->nls = i + 1;
    }
    if (key) memset(key, 0, strlen(key));
    free(key);
    free(cert);
    return s;
}

int http_port(const http_server *s, size_t i)
{
    return i < s->nls ? s->ls[i].port : -1;
}

void http_quiesce(http_server *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->nls; i++) {
        http_listener *ln = &s->ls[i];
        MHD_socket fd = MHD_quiesce_daemon(ln->d);
        if (fd != MHD_INVALID_SOCKET) close(fd);
        log_write(s->log, KLOG_INFO, "http.quiesce", "port=%d note=\"no new connections\"",
                  ln->port);
    }
}

void http_stop(http_server *s)
{
    if (!s) return;
    /* Answers given just before: let MHD write them out (a few non-blocking runs). */
    for (int round = 0; round < 3; round++)
        for (size_t i = 0; i < s->nls; i++) MHD_run(s->ls[i].d);
    /* MHD refuses to stop with suspended connections: resume them (nothing is queued on
     * them; MHD then closes them and reports them completed, and they become gone). */
    for (http_exchange *x = s->head; x; x = x->next)
        if (x->suspended && x->conn) {
            x->suspended = false;
            MHD_resume_connection(x->conn);
        }
    for (size_t i = 0; i < s->nls; i++) {
        http_listener *ln = &s->ls[i];
        ev_io_stop(s->loop, &ln->io);
        ev_timer_stop(s->loop, &ln->timer);
        ev_prepare_stop(s->loop, &ln->kick_w);
        MHD_stop_daemon(ln->d);
    }
    /* What is left is held by the handler: detach it; its http_reply frees it. */
    while (s->head) {
        http_exchange *x = s->head;
        http_release(x);
        http_unlink(x);
        x->srv = NULL;
        x->ln = NULL;
        x->gone = true;
    }
    free(s->ls);
    free(s);
}
