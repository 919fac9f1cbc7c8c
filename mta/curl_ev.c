/* curl_ev.c — libcurl's multi_socket API on the libev loop (see curl_ev.h): one ev_io per
 * socket curl asks to watch (CURLMOPT_SOCKETFUNCTION), one ev_timer for curl's timeout
 * (CURLMOPT_TIMERFUNCTION), curl_multi_socket_action from both, and the finished transfers
 * collected from curl_multi_info_read after every action.
 *
 * Why this glue is hand-written: libcurl ships no libev adapter (its docs/examples have
 * evhiperfifo.c, which this follows); every socket watcher is tracked in a list so that
 * none outlives the multi handle. */
#include "mta/curl_ev.h"

#include <ev.h>
#include <stdlib.h>

#include "base/util.h"

typedef struct curl_ev_sock {
    ev_io io;
    struct curl_ev *owner;
    struct curl_ev_sock *prev, *next;
} curl_ev_sock;

struct curl_ev {
    struct ev_loop *loop;
    CURLM *multi;
    ev_timer timer;
    curl_ev_sock *socks;    /* every watcher curl asked for and has not removed */
};

/* Hands every finished transfer to its owner; the easy handle leaves the multi first. */
static void curl_ev_collect(curl_ev *c)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        curl_ev_xfer *x = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(c->multi, easy);
        if (!x || !x->running) continue;
        x->running = 0;
        x->done(x->arg, easy, result);
    }
}

static void curl_ev_action(curl_ev *c, curl_socket_t fd, int flags)
{
    int running = 0;
    curl_multi_socket_action(c->multi, fd, flags, &running);
    curl_ev_collect(c);
}

static void curl_ev_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    curl_ev_sock *s = (curl_ev_sock *)w;
    int flags = ((revents & EV_READ) ? CURL_CSELECT_IN : 0) |
                ((revents & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    curl_ev_action(s->owner, w->fd, flags);   /* may free s (CURL_POLL_REMOVE) */
}

static void curl_ev_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    curl_ev_action(w->data, CURL_SOCKET_TIMEOUT, 0);
}

static void curl_ev_sock_free(curl_ev *c, curl_ev_sock *s)
{
    ev_io_stop(c->loop, &s->io);
    if (s->prev) s->prev->next = s->next;
    else c->socks = s->next;
    if (s->next) s->next->prev = s->prev;
    free(s);
}

static int curl_ev_on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    curl_ev *c = userp;
    curl_ev_sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            curl_ev_sock_free(c, s);
            curl_multi_assign(c->multi, fd, NULL);
        }
        return 0;
    }
    int events = ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    if (!s) {
        s = util_calloc(1, sizeof *s);
        s->owner = c;
        s->next = c->socks;
        if (c->socks) c->socks->prev = s;
        c->socks = s;
        ev_io_init(&s->io, curl_ev_on_io, fd, events);
        curl_multi_assign(c->multi, fd, s);
    } else {
        ev_io_stop(c->loop, &s->io);
        ev_io_set(&s->io, fd, events);
    }
    if (events) ev_io_start(c->loop, &s->io);
    return 0;
}

/* curl's timeout: -1 stops the timer, 0 means "act at once" (from the loop, as curl may not
 * be called back into from here). */
static int curl_ev_on_timeout(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    curl_ev *c = userp;
    ev_timer_stop(c->loop, &c->timer);
    if (timeout_ms >= 0) {
        ev_timer_set(&c->timer, (double)timeout_ms / 1000.0, 0.0);
        ev_timer_start(c->loop, &c->timer);
    }
    return 0;
}

curl_ev *curl_ev_new(struct ev_loop *loop)
{
    curl_ev *c = util_calloc(1, sizeof *c);
    c->loop = loop;
    c->multi = curl_multi_init();
    if (!c->multi) util_fatal("curl_ev: curl_multi_init failed");
    ev_timer_init(&c->timer, curl_ev_on_timer, 0.0, 0.0);
    c->timer.data = c;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, curl_ev_on_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, curl_ev_on_timeout);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    return c;
}

void curl_ev_free(curl_ev *c)
{
    if (!c) return;
    curl_multi_cleanup(c->multi);   /* closes cached connections (their sockets may be
                                       reported removed meanwhile) */
    while (c->socks) curl_ev_sock_free(c, c->socks);
    ev_timer_stop(c->loop, &c->timer);
    free(c);
}

int curl_ev_add(curl_ev *c, curl_ev_xfer *x, CURL *easy, curl_ev_done_fn *done, void *arg,
                char **err)
{
    x->done = done;
    x->arg = arg;
    x->easy = easy;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
    CURLMcode rc = curl_multi_add_handle(c->multi, easy);
    if (rc != CURLM_OK) {
        *err = util_asprintf("cannot start the HTTP request: %s", curl_multi_strerror(rc));
        return -1;
    }
    x->running = 1;
    return 0;
}

void curl_ev_remove(curl_ev *c, curl_ev_xfer *x)
{
    if (!x->running) return;
    x->running = 0;
    curl_multi_remove_handle(c->multi, x->easy);
}
