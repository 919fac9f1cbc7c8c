/* curl_ev.c — see curl_ev.h. The glue follows libcurl's documented multi-socket pattern
 * (curl_multi_socket_action on socket readiness and on the timer; finished transfers read
 * with curl_multi_info_read). Callbacks of finished transfers run from a zero-delay timer,
 * never from inside curl_ev_add or a libcurl callback, so they may add or remove others. */
#include "mta/curl_ev.h"

#include <ev.h>
#include <stdlib.h>

#include "base/util.h"

typedef struct curl_ev_sock {
    ev_io io;
    curl_ev *m;
    curl_socket_t fd;
} curl_ev_sock;

typedef struct curl_ev_xfer {
    curl_ev_done_cb cb;
    void *arg;
} curl_ev_xfer;

struct curl_ev {
    struct ev_loop *loop;
    CURLM *multi;
    ev_timer timer;           /* libcurl's timeout */
    ev_timer kick;            /* zero delay: reads finished transfers */
    int running;
};

static void curl_ev_check_done(curl_ev *m)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL *easy = msg->easy_handle;
        CURLcode res = msg->data.result;
        curl_ev_xfer *x = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(m->multi, easy);
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        if (x) {
            curl_ev_done_cb cb = x->cb;
            void *arg = x->arg;
            free(x);
            cb(arg, easy, res);   /* msg is invalid from here on: the loop reads the next */
        }
    }
}

static void curl_ev_kick_soon(curl_ev *m)
{
    if (!ev_is_active(&m->kick)) {
        ev_timer_set(&m->kick, 0., 0.);
        ev_timer_start(m->loop, &m->kick);
    }
}

static void curl_ev_on_kick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    curl_ev_check_done(w->data);
}

static void curl_ev_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    curl_ev_sock *s = w->data;
    curl_ev *m = s->m;
    int action = ((revents & EV_READ) ? CURL_CSELECT_IN : 0) | ((revents & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    curl_multi_socket_action(m->multi, s->fd, action, &m->running);   /* may free s */
    curl_ev_kick_soon(m);
}

static void curl_ev_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    curl_ev *m = w->data;
    curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &m->running);
    curl_ev_kick_soon(m);
}

static int curl_ev_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    curl_ev *m = userp;
    curl_ev_sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            ev_io_stop(m->loop, &s->io);
            curl_multi_assign(m->multi, fd, NULL);
            free(s);
        }
        return 0;
    }
    int ev = ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    if (!s) {
        s = util_calloc(1, sizeof *s);
        s->m = m;
        s->fd = fd;
        ev_io_init(&s->io, curl_ev_on_io, fd, ev);
        s->io.data = s;
        curl_multi_assign(m->multi, fd, s);
    } else {
        ev_io_stop(m->loop, &s->io);
        ev_io_set(&s->io, fd, ev);
    }
    ev_io_start(m->loop, &s->io);
    return 0;
}

static int curl_ev_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    curl_ev *m = userp;
    ev_timer_stop(m->loop, &m->timer);
    if (timeout_ms >= 0) {
        ev_timer_set(&m->timer, timeout_ms > 0 ? (double)timeout_ms / 1000.0 : 0.0, 0.);
        ev_timer_start(m->loop, &m->timer);
    }
    return 0;
}

curl_ev *curl_ev_new(struct ev_loop *loop)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) util_fatal("curl_global_init failed");
    curl_ev *m = util_calloc(1, sizeof *m);
    m->loop = loop;
    m->multi = curl_multi_init();
    if (!m->multi) util_fatal("curl_multi_init failed (out of memory)");
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, curl_ev_socket_cb);
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, curl_ev_timer_cb);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, m);
    ev_timer_init(&m->timer, curl_ev_on_timer, 0., 0.);
    m->timer.data = m;
    ev_timer_init(&m->kick, curl_ev_on_kick, 0., 0.);
    m->kick.data = m;
    return m;
}

void curl_ev_add(curl_ev *m, CURL *easy, curl_ev_done_cb cb, void *arg)
{
    curl_ev_xfer *x = util_calloc(1, sizeof *x);
    x->cb = cb;
    x->arg = arg;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
    CURLMcode rc = curl_multi_add_handle(m->multi, easy);   /* arms the timer */
    if (rc != CURLM_OK) util_fatal("curl_multi_add_handle: %s", curl_multi_strerror(rc));
}

void curl_ev_remove(curl_ev *m, CURL *easy)
{
    curl_ev_xfer *x = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
    curl_multi_remove_handle(m->multi, easy);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    free(x);
}

void curl_ev_free(curl_ev *m)
{
    if (!m) return;
    curl_multi_cleanup(m->multi);   /* sockets of removed transfers are gone already */
    ev_timer_stop(m->loop, &m->timer);
    ev_timer_stop(m->loop, &m->kick);
    free(m);
    curl_global_cleanup();
}
