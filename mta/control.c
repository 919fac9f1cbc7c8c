/* control.c — kilnd's side of the control socket (see control.h for the protocol): the
 * socket and its line protocol; the commands are control_cmd.c's.
 *
 * A Unix stream socket (mode 0600) at server.control_socket, served on the daemon's libev
 * loop with non-blocking reads and writes: a client sends one JSON object per line (at most
 * 64 KB), gets one JSON line back per request, and may send more lines until it closes.
 * Framing and request decoding are control_parse.c's (pure, fuzzed).
 * Requests are answered in order; a suppression change is answered only after its spool
 * batch committed, and `queue` once the query thread made its answer (control_query.c);
 * the client's later lines wait until then. JSON is parsed and built
 * with jansson. Once 1 MB of answers waits unsent, a client is not read from until it has
 * read them. When accept() runs out of descriptors (EMFILE, ENFILE...) the listener pauses
 * for 0.1 s instead of spinning, and the episode is logged once. */
#include "mta/control.h"

#include <errno.h>
#include <ev.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/kiln.h"
#include "mta/control_internal.h"
#include "mta/control_parse.h"
#include "mta/control_query.h"
#include "store/spool.h"
#include "base/util.h"

#define CONTROL_READ_CHUNK 4096
#define CONTROL_MAX_UNSENT (1024 * 1024)   /* answers a client has not read yet: stop reading */
#define CONTROL_ACCEPT_BACKOFF 0.1           /* s, pause after accept() ran out of descriptors */
#define CONTROL_ACCEPT_QUIET 5.0             /* s without such failures that end the episode */

static void control_client_process(control_client *cl);

/* ---- logging ---- */

void control_log_cmd(control *ctl, const char *cmd, const char *address, const char *error)
{
    klog *lg = ctl->ctx->log;
    if (!log_enabled(lg, KLOG_INFO)) return;
    strbuf sb;
    strbuf_init(&sb);
    strbuf_printf(&sb, "cmd=%s", log_q(lg, cmd ? cmd : ""));
    if (address) strbuf_printf(&sb, " address=%s", log_q(lg, address));
    strbuf_printf(&sb, " ok=%s", error ? "false" : "true");
    if (error) strbuf_printf(&sb, " error=%s", log_q(lg, error));
    log_write(lg, KLOG_INFO, "control.cmd", "%s", sb.buf);
    strbuf_free(&sb);
}

/* ---- client connections ---- */

static void control_client_close(control_client *cl)
{
    control *ctl = cl->ctl;
    ev_io_stop(ctl->ctx->loop, &cl->rio);
    ev_io_stop(ctl->ctx->loop, &cl->wio);
    ev_idle_stop(ctl->ctx->loop, &cl->resume);
    close(cl->fd);
    if (cl->pending) cl->pending->client = NULL;
    if (cl->prev) cl->prev->next = cl->next;
    else ctl->clients = cl->next;
    if (cl->next) cl->next->prev = cl->prev;
    strbuf_free(&cl->in);
    strbuf_free(&cl->out);
    free(cl);
}

/* Closes the client if nothing is left to do. Returns true if it was closed. */
static bool control_client_maybe_close(control_client *cl)
{
    if (cl->out.len > 0 || cl->pending) return false;
    if (cl->in.len > 0 && !cl->closing) return false;   /* lines still to answer */
    if (cl->closing || cl->eof) {
        control_client_close(cl);
        return true;
    }
    return false;
}

/* Writes as much of out as the socket takes; arms the write watcher for the rest.
 * Returns false if the client was closed. */
static bool control_client_flush(control_client *cl)
{
    struct ev_loop *loop = cl->ctl->ctx->loop;
    while (cl->out.len > 0) {
        ssize_t n = send(cl->fd, cl->out.buf, cl->out.len, MSG_NOSIGNAL);
        if (n > 0) {
            strbuf_consume(&cl->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(loop, &cl->wio);
            return true;
        }
        /* The peer went away: nobody is left to read the answers. */
        control_client_close(cl);
        return false;
    }
    ev_io_stop(loop, &cl->wio);
    return !control_client_maybe_close(cl);
}

/* A JSON string for text that should be UTF-8 but may not be (paths, config contents):
 * bytes that do not form UTF-8 become '?'. */
json_t *control_jstr(const char *s)
{
    json_t *j = json_string(s ? s : "");
    if (j) return j;
    char *copy = util_strdup(s);
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80) *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

static void control_client_send_json(control_client *cl, json_t *msg)
{
    char *text = json_dumps(msg, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) util_fatal("control: cannot encode an answer as JSON");
    strbuf_puts(&cl->out, text);
    strbuf_puts(&cl->out, "\n");
    free(text);
    json_decref(msg);
}

/* Queues {"ok":true,"data":data} (steals data). */
void control_reply_ok(control_client *cl, json_t *data)
{
    json_t *msg = json_object();
    json_object_set_new(msg, "ok", json_true());
    json_object_set_new(msg, "data", data ? data : json_object());
    control_client_send_json(cl, msg);
}

void control_reply_error(control_client *cl, const char *error)
{
    json_t *msg = json_object();
    json_object_set_new(msg, "ok", json_false());
    json_object_set_new(msg, "error", control_jstr(error));
    control_client_send_json(cl, msg);
}

void control_pending_answer(control_pending *p, const char *line, const char *note,
                            const char *error)
{
    control_client *cl = p->client;
    if (note && p->ctl->ctx->log)
        log_write(p->ctl->ctx->log, KLOG_ERROR, "control.query", "cmd=%s error=%s",
                  log_q(p->ctl->ctx->log, p->cmd), log_q(p->ctl->ctx->log, note));
    if (cl) {
        cl->pending = NULL;
        if (error) {
            control_reply_error(cl, error);
        } else if (line) {
            strbuf_puts(&cl->out, line);
            strbuf_puts(&cl->out, "\n");
        } else {
            control_reply_ok(cl, NULL);
        }
        control_log_cmd(cl->ctl, p->cmd, p->address, error);
        /* Answer now; go on with lines that arrived meanwhile in a later loop iteration
         * (unless this runs inside control_client_process, whose loop goes on by itself). This
         * runs inside spool_reap: writes made here go to the next batch. */
        if (!cl->in_process && control_client_flush(cl))
            ev_idle_start(cl->ctl->ctx->loop, &cl->resume);
    }
    free(p->cmd);
    free(p->address);
    free(p);
}

static void control_pending_committed(void *arg, bool ok, const char *err)
{
    char *e = ok ? NULL
                 : util_asprintf("cannot update the suppression list: %s",
                                 err ? err : "the spool commit failed");
    control_pending_answer(arg, NULL, NULL, e);
    free(e);
}

control_pending *control_wait(control_client *cl, const char *cmd, const char *address)
{
    control_pending *p = util_calloc(1, sizeof *p);
    p->ctl = cl->ctl;
    p->client = cl;
    p->cmd = util_strdup(cmd);
    p->address = util_strdup(address);
    cl->pending = p;
    return p;
}

/* Registers the reply to come after the current spool batch commits. */
void control_wait_for_commit(control_client *cl, const char *cmd, const char *address)
{
    spool_on_commit(cl->ctl->ctx->spool, control_pending_committed, control_wait(cl, cmd, address));
}

/* Answers one request line (without its newline). */
static void control_client_request(control_client *cl, const char *line, size_t len)
{
    control_request req;
    if (control_parse_request(line, len, &req) != 0) {
        control_reply_error(cl, req.error);
        control_log_cmd(cl->ctl, req.cmd, req.subject, req.error);
    } else {
        control_cmd_run(cl, &req);
    }
    control_request_free(&req);
}

/* Answers every complete line in `in` until one must wait for a commit, then writes.
 * May close the client. */
static void control_client_process(control_client *cl)
{
    cl->in_process = true;
    while (!cl->pending && !cl->closing && cl->out.len < CONTROL_MAX_UNSENT) {
        size_t len, used;
        control_line_status st = control_parse_line(cl->in.buf, cl->in.len, cl->eof, &len, &used);
        if (st == CONTROL_LINE_MORE) break;
        if (st == CONTROL_LINE_TOO_LONG) {
            control_reply_error(cl, "request too long (the limit is 64 KB per line)");
            control_log_cmd(cl->ctl, "", NULL, "request too long");
            cl->closing = true;
            break;
        }
        char *line = util_strndup(cl->in.buf, len);
        strbuf_consume(&cl->in, used);
        if (len > 0) control_client_request(cl, line, len);
        free(line);
    }
    /* Read on only when the next line can be answered. */
    if (cl->closing || cl->eof || cl->pending || cl->out.len >= CONTROL_MAX_UNSENT)
        ev_io_stop(cl->ctl->ctx->loop, &cl->rio);
    else
        ev_io_start(cl->ctl->ctx->loop, &cl->rio);
    cl->in_process = false;
    control_client_flush(cl);
}

static void control_client_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    control_client *cl = w->data;
    for (;;) {
        strbuf_reserve(&cl->in, CONTROL_READ_CHUNK);
        ssize_t n = recv(cl->fd, cl->in.buf + cl->in.len, CONTROL_READ_CHUNK, 0);
        if (n > 0) {
            cl->in.len += (size_t)n;
            cl->in.buf[cl->in.len] = '\0';
            if (cl->in.len > CONTROL_MAX_LINE + 1) break;   /* let process judge it */
            continue;
        }
        if (n == 0) {
            cl->eof = true;
            break;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        control_client_close(cl);   /* reset by the peer */
        return;
    }
    control_client_process(cl);
}

static void control_client_resume_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    ev_idle_stop(loop, w);
    control_client_process(w->data);
}

static void control_client_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    control_client *cl = w->data;
    /* Once the client has read its answers, go on with lines held back meanwhile. */
    if (control_client_flush(cl) && cl->out.len == 0 && !cl->pending) control_client_process(cl);
}

/* The pause after accept() ran out of descriptors is over: listen again. */
static void control_accept_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    control *ctl = w->data;
    ev_io_start(loop, &ctl->aio);
}

static void control_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    control *ctl = w->data;
    for (;;) {
        int fd = accept4(ctl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EINTR || e == ECONNABORTED) continue;
            if (e == EAGAIN || e == EWOULDBLOCK) return;
            bool lasting = e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
            if (ctl->ctx->log && !(lasting && ctl->accept_trouble))
                log_write(ctl->ctx->log, KLOG_WARNING, "control.accept_failed", "error=%s%s",
                          log_q(ctl->ctx->log, strerror(e)), lasting ? " result=begin" : "");
            if (lasting) {
                /* the pending connection stays ready: without a pause the loop would spin */
                ctl->accept_trouble = true;
                ctl->accept_trouble_last = ev_now(loop);
                ev_io_stop(loop, &ctl->aio);
                ev_timer_set(&ctl->accept_backoff, CONTROL_ACCEPT_BACKOFF, 0);
                ev_timer_start(loop, &ctl->accept_backoff);
            }
            return;
        }
        if (ctl->accept_trouble && ev_now(loop) - ctl->accept_trouble_last >= CONTROL_ACCEPT_QUIET) {
            if (ctl->ctx->log) log_write(ctl->ctx->log, KLOG_INFO, "control.accept_failed", "result=end");
            ctl->accept_trouble = false;
        }
        control_client *cl = util_calloc(1, sizeof *cl);
        cl->ctl = ctl;
        cl->fd = fd;
        strbuf_init(&cl->in);
        strbuf_init(&cl->out);
        ev_io_init(&cl->rio, control_client_read_cb, fd, EV_READ);
        ev_io_init(&cl->wio, control_client_write_cb, fd, EV_WRITE);
        ev_idle_init(&cl->resume, control_client_resume_cb);
        cl->rio.data = cl;
        cl->wio.data = cl;
        cl->resume.data = cl;
        cl->next = ctl->clients;
        if (ctl->clients) ctl->clients->prev = cl;
        ctl->clients = cl;
        ev_io_start(loop, &cl->rio);
    }
}

/* ---- listening socket ---- */

/* Removes a socket file left by a kilnd that is gone; fails if one still answers on it or
 * if the path is something other than a socket. Returns 0 or -1 with *err. */
static int control_clear_stale_socket(const char *path, const struct sockaddr_un *sa, char **err)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) return 0;
        *err = util_asprintf("cannot use control socket %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISSOCK(st.st_mode)) {
        *err = util_asprintf("control socket %s: the path exists and is not a socket", path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = util_asprintf("cannot create control socket: %s", strerror(errno));
        return -1;
    }
    int rc = connect(fd, (const struct sockaddr *)sa, sizeof *sa);
    int cerr = errno;
    close(fd);
    if (rc == 0 || cerr == EAGAIN || cerr == EINPROGRESS) {
        *err = util_asprintf("control socket %s is in use by another kilnd", path);
        return -1;
    }
    if (unlink(path) != 0 && errno != ENOENT) {
        *err = util_asprintf("cannot remove stale control socket %s: %s", path,
                             strerror(errno));
        return -1;
    }
    return 0;
}

control *control_start(kiln_ctx *ctx, char **err)
{
    const char *path = ctx->cfg->control_socket;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (!path || !*path) {
        *err = util_strdup("no control socket path configured (server.control_socket)");
        return NULL;
    }
    if (strlen(path) >= sizeof sa.sun_path) {
        *err = util_asprintf("control socket path %s is too long (at most %zu bytes); "
                             "choose a shorter server.control_socket",
                             path, sizeof sa.sun_path - 1);
        return NULL;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (control_clear_stale_socket(path, &sa, err) != 0) return NULL;

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = util_asprintf("cannot create control socket: %s", strerror(errno));
        return NULL;
    }
    mode_t old = umask(0177);
    int rc = bind(fd, (const struct sockaddr *)&sa, sizeof sa);
    int berr = errno;
    umask(old);
    if (rc != 0) {
        *err = util_asprintf("cannot bind control socket %s: %s", path, strerror(berr));
        close(fd);
        return NULL;
    }
    if (chmod(path, 0600) != 0 || listen(fd, 16) != 0) {
        *err = util_asprintf("cannot listen on control socket %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return NULL;
    }
    control *ctl = util_calloc(1, sizeof *ctl);
    ctl->ctx = ctx;
    ctl->fd = fd;
    ctl->path = util_strdup(path);
    ev_io_init(&ctl->aio, control_accept_cb, fd, EV_READ);
    ev_init(&ctl->accept_backoff, control_accept_resume_cb);
    ctl->accept_backoff.data = ctl;
    ctl->aio.data = ctl;
    ev_io_start(ctx->loop, &ctl->aio);
    if (ctx->log)
        log_write(ctx->log, KLOG_INFO, "control.listening", "path=%s", log_q(ctx->log, path));
    return ctl;
}

void control_free(control *ctl)
{
    if (!ctl) return;
    while (ctl->clients) control_client_close(ctl->clients);
    control_query_free(ctl->query);
    ev_io_stop(ctl->ctx->loop, &ctl->aio);
    ev_timer_stop(ctl->ctx->loop, &ctl->accept_backoff);
    close(ctl->fd);
    unlink(ctl->path);
    free(ctl->path);
    free(ctl);
}

