/* webhook.h — one `webhook` event destination (SPEC section 4): posts the events of its
 * configuration set, in outbox order, one HTTP/1.1 POST per event (Content-Type:
 * application/json, the event JSON as the body), with a non-blocking client on the libev
 * loop. A 2xx answer acknowledges the event; any other answer, a connection failure or
 * no answer within 10 s is retried with exponential backoff (1 s doubling to 5 min).
 *
 * Durability: the destination's progress (every outbox row of its set with id <= acked has
 * been acknowledged) is kept in the spool under kv key "webhook:<set>:<url>", written in
 * the spool batch after each acknowledgement. events_drain deletes outbox rows only up to
 * the lowest progress of all destinations, so a crash repeats an event, never loses one.
 * At most WEBHOOK_WINDOW events, and at most 4 MB of event text (but always at least one
 * event), are held in memory per destination; one outbox read walks over at most 4 MB.
 *
 * Limits: http:// only. https:// URLs (accepted by the config) and hosts given by name
 * rather than by IP address are reported once as an error and their events stay queued
 * in the outbox. While a destination is failing, a warning with its backlog is logged
 * every minute; the outbox itself is not bounded. */
#ifndef KILN_WEBHOOK_H
#define KILN_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ev_loop;
struct spool;
struct klog;

#define WEBHOOK_WINDOW 100

typedef struct webhook webhook;

/* A destination for the events of set `set` posted to url. loop may be NULL: the
 * destination then tracks its progress (so its rows are kept) but posts nothing. */
webhook *webhook_new(struct ev_loop *loop, struct klog *lg, struct spool *sp, const char *set,
                     const char *url);
/* Abandons an in-flight POST (its event is posted again by the next destination object
 * or at the next start) and frees everything. */
void webhook_free(webhook *w);

/* Called on every events drain: reads pending events of its set from the outbox when its
 * window is empty (rows of other sets before them count as acknowledged), starts the next
 * POST when idle and its backoff is over, and logs the periodic backlog warning while
 * failing. */
void webhook_poll(webhook *w);

/* Every outbox row of its set with id <= this value has been acknowledged. */
int64_t webhook_acked(const webhook *w);

/* ---- pure helpers (exported for tests) ---- */
/* Splits an http:// or https:// URL. host is an IPv4/IPv6 literal or a name (brackets
 * removed), port defaults to 80/443, path to "/". 0, or -1 with *err (malloc'd). */
int webhook_parse_url(const char *url, bool *https, char **host, int *port, char **path,
                      char **err);
/* The status code of an HTTP response starting at buf (len bytes): 100..599, 0 if the
 * status line is not complete yet, -1 if it is not an HTTP/1.x status line. */
int webhook_response_status(const char *buf, size_t len);
/* Backoff before retry number `failures` (1 = after the first failure): 1 s doubling, at
 * most 5 min. */
int64_t webhook_backoff_ms(int failures);

#endif
