/* webhook.h — one `webhook` event destination (SPEC section 4): posts the events of its
 * configuration set, in outbox order, over HTTP or HTTPS with libcurl's multi interface on
 * the libev loop (mta/curl_ev.h). Each POST carries Content-Type: application/json and,
 * with `batch: 1` (the default), one event object as its body; with `batch: N` a JSON
 * array of up to N events. A 2xx answer acknowledges what the POST carried; any other
 * answer, a connection or TLS failure or no answer within 10 s is retried with exponential
 * backoff (1 s doubling to 5 min; a longer Retry-After is honoured up to 5 min). One POST
 * is in flight per destination; its connection is kept alive and reused (one easy handle
 * per destination, in the shared connection cache of the curl_ev).
 *
 * TLS: https URLs verify the peer's certificate chain and host name, against the system
 * CA store or, with `ca_file`, against only the CAs in that file. Host names resolve through
 * curl's resolver (the system's: /etc/hosts, resolv.conf), not through dns.servers.
 *
 * Durability: the destination's progress (every outbox row of its set with id <= acked has
 * been acknowledged or dropped) is kept in the spool under kv key "webhook:<set>:<url>",
 * written in the spool batch after each acknowledgement. events_drain deletes outbox rows
 * only up to the lowest progress of all destinations, so a crash repeats an event, never
 * loses one. At most WEBHOOK_WINDOW events, and at most 4 MB of event text (but always at
 * least one event), are held in memory per destination; one outbox read walks over at most
 * 4 MB.
 *
 * The backlog (outbox rows of the set not yet acknowledged) is counted as rows arrive (at
 * most WEBHOOK_COUNT_STEP rows read per poll, so after a start a large outbox is counted
 * over a few polls). Past `max_backlog`, the oldest events are dropped: the progress moves
 * over them (their rows are then deleted once the set's other destinations have them),
 * a `webhook_dropped` warning is logged and the count is kept (kv "webhook_dropped:<set>:
 * <url>", so it survives restarts) for kilnctl status. A POST in flight whose events are
 * dropped is abandoned. While a destination is failing, a warning with its backlog is
 * logged every minute. */
#ifndef KILN_WEBHOOK_H
#define KILN_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/config.h"

struct ev_loop;
struct spool;
struct klog;
struct curl_ev;

#define WEBHOOK_WINDOW CONFIG_WEBHOOK_BATCH_MAX
#define WEBHOOK_COUNT_STEP 100000

typedef struct webhook webhook;

/* A destination for the events of set `set` configured by d (url, ca_file, batch,
 * max_backlog; copied). cev may be NULL: the destination then counts its backlog, drops past
 * max_backlog and keeps its progress (so its rows are kept) but posts nothing. */
webhook *webhook_new(struct ev_loop *loop, struct curl_ev *cev, struct klog *lg,
                     struct spool *sp, const char *set, const config_event_dest *d);
/* Abandons an in-flight POST (its events are posted again by the next destination object
 * or at the next start) and frees everything. */
void webhook_free(webhook *w);

/* Called on every events drain: counts new outbox rows of its set, drops the oldest past
 * max_backlog, reads pending events into its window, starts the next POST when idle and
 * its backoff is over, and logs the periodic backlog warning while failing. */
void webhook_poll(webhook *w);

/* Every outbox row of its set with id <= this value has been acknowledged or dropped. */
int64_t webhook_acked(const webhook *w);

/* What kilnctl status shows of a destination (strings owned by the webhook). */
typedef struct webhook_info {
    const char *set, *url;
    int64_t backlog;            /* undelivered events of its set counted so far */
    int64_t dropped;            /* events dropped past max_backlog (kept across restarts) */
    int64_t max_backlog;
    int failures;               /* consecutive failed attempts; 0 = healthy */
    const char *last_error;     /* the last failure's reason, NULL if none since start */
} webhook_info;
void webhook_get_info(const webhook *w, webhook_info *out);

/* Backoff before retry number `failures` (1 = after the first failure): 1 s doubling, at
 * most 5 min. */
int64_t webhook_backoff_ms(int failures);

#endif
