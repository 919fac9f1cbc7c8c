/* curl_ev.h — libcurl's multi interface driven by the libev loop: one CURLM whose sockets
 * are ev_io watchers (CURLMOPT_SOCKETFUNCTION) and whose timeout is one ev_timer
 * (CURLMOPT_TIMERFUNCTION). Transfers run without blocking the loop and without threads.
 * Meant to be shared by every HTTP client of kilnd (MTA-STS policy fetches; webhooks). */
#ifndef KILN_CURL_EV_H
#define KILN_CURL_EV_H

#include <curl/curl.h>

struct ev_loop;
typedef struct curl_ev curl_ev;

/* Called from the loop when a transfer has ended (result: CURLE_OK or why not). The easy
 * handle is already out of the multi: the callee owns it again (inspect, clean up). */
typedef void (*curl_ev_done_cb)(void *arg, CURL *easy, CURLcode result);

curl_ev *curl_ev_new(struct ev_loop *loop);
/* Starts easy (fully set up; CURLOPT_PRIVATE is curl_ev's). Never calls cb from inside. */
void curl_ev_add(curl_ev *m, CURL *easy, curl_ev_done_cb cb, void *arg);
/* Stops a running transfer without its callback; the caller owns easy again. */
void curl_ev_remove(curl_ev *m, CURL *easy);
/* Transfers still running must have been removed; stops every watcher. */
void curl_ev_free(curl_ev *m);

#endif
