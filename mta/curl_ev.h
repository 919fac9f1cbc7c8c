/* curl_ev.h — libcurl's multi interface driven by kiln's libev loop, for every HTTP client
 * in kilnd (webhook event destinations, mta/webhook.c; MTA-STS policy fetches may share it).
 * One curl_ev is one CURLM: its connection cache (keep-alive), DNS cache and TLS session
 * cache are shared by every easy handle added to it.
 *
 * How it is driven (libcurl's "multi_socket" API): CURLMOPT_SOCKETFUNCTION keeps one ev_io
 * per socket curl wants watched, CURLMOPT_TIMERFUNCTION one ev_timer; both call
 * curl_multi_socket_action, and finished transfers are collected with
 * curl_multi_info_read. Host names resolve in curl's own resolver (Debian's libcurl uses a
 * resolver thread: the loop never blocks on DNS).
 *
 * Promises:
 *   - Nothing blocks; every callback runs on the loop thread.
 *   - A transfer added with curl_ev_add is reported exactly once through its done callback
 *     (its easy handle already removed from the multi, so the callback may reuse it, add it
 *     again or free it), unless curl_ev_remove takes it back first (then never).
 *   - curl_ev_free removes nothing on its owners' behalf: every easy handle must be removed
 *     (or have completed) before it. Allocation failure is fatal (base/util.h).
 *   - curl_global_init must have run once before the first curl_ev_new (kilnd.c's main). */
#ifndef KILN_CURL_EV_H
#define KILN_CURL_EV_H

#include <curl/curl.h>

struct ev_loop;

typedef struct curl_ev curl_ev;

/* The completion of one transfer: result is curl's code (CURLE_OK when an answer came,
 * whatever its HTTP status). */
typedef void curl_ev_done_fn(void *arg, CURL *easy, CURLcode result);

/* One transfer's completion record, kept by the caller (usually embedded in its object)
 * for as long as the transfer runs; curl_ev_add fills it and points CURLOPT_PRIVATE at it. */
typedef struct curl_ev_xfer {
    curl_ev_done_fn *done;
    void *arg;
    CURL *easy;
    int running;        /* added and not yet done or removed */
} curl_ev_xfer;

curl_ev *curl_ev_new(struct ev_loop *loop);
void curl_ev_free(curl_ev *c);

/* Starts the transfer set up on easy (all options already set). 0, or -1 with *err
 * (malloc'd) if curl refuses it. */
int curl_ev_add(curl_ev *c, curl_ev_xfer *x, CURL *easy, curl_ev_done_fn *done, void *arg,
                char **err);
/* Abandons a running transfer (no done callback); nothing if it is not running. */
void curl_ev_remove(curl_ev *c, curl_ev_xfer *x);

#endif
