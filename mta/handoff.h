/* handoff.h — cross-zone handoff between the nodes of a cluster (issue 17): a node holding
 * mail for a pool that none of its own IPs can send (all down or unbindable, their zone
 * down, at their warm-up cap, or the node has no IP in the pool any more: it is being
 * drained) hands the message to a live node that can, over SMTP to that node's submission
 * address (cluster.submission_peers), authenticated with a cluster credential.
 *
 * It promises:
 * - the message keeps its id, configuration set, tags, its original acceptance time and
 *   SES mail object, and goes with the recipients still pending; the receiving node stores
 *   it under the same id without a second Send event, without counting it again against
 *   the quota or the statistics, and its events (Delivery, Bounce...) carry the tag
 *   kiln:handoff-from with the first node's name;
 * - durable: the first node settles its recipients (final, "handed off") only after the
 *   peer's 250, which the peer gives only after its own spool commit; a failure leaves them
 *   deferred on the first node, tried again (by another peer, or by its own IPs when they
 *   come back) a few seconds later; a peer that already holds the id answers 250 without
 *   storing it twice;
 * - the credential: user "kiln-cluster:NODE", password HMAC-SHA256(secret, "kiln handoff
 *   NODE") in hex, the secret shared by the nodes through Redis (cluster_secret); a node
 *   offers AUTH for it on its submission listener (TLS, or loopback without a certificate,
 *   as for every AUTH) and checks it in constant time.
 *
 * The pure parts (credential, the X-Kiln-Handoff header) are apart for the unit tests. */
#ifndef KILN_HANDOFF_H
#define KILN_HANDOFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/kiln.h"

#define HANDOFF_HEADER "X-Kiln-Handoff"
#define HANDOFF_USER_PREFIX "kiln-cluster:"
#define HANDOFF_TAG "kiln:handoff-from"

struct sched_job;
struct scheduler;

/* ---- pure ---- */
/* The credential of node under secret: *user and *auth_plain (AUTH PLAIN's base64
 * response) malloc'd. */
void handoff_credential(const char *secret, const char *node, char **user, char **auth_plain);
/* True if user/pass is a node's credential under secret; node (at most 64 characters)
 * is copied to node_out. Constant time in the password. */
bool handoff_check(const char *secret, const char *user, const char *pass, char node_out[72]);

typedef struct handoff_info {
    char node[72];               /* the node that handed it over */
    char id[80];                 /* the message id */
    int64_t created_ms;          /* its acceptance on the first node */
    char *set;                   /* configuration set */
    char *mail_json;             /* the SES mail object, as the first node stored it */
} handoff_info;
/* The header field (name, value folded at 76 columns, CRLF) for a message. malloc'd. */
char *handoff_header(const char *node, const char *id, int64_t created_ms, const char *set,
                     const char *mail_json);
/* Parses the field's value (unfolded): 0, or -1 with *err (malloc'd) naming what is wrong. */
int handoff_parse(const char *value, handoff_info *out, char **err);
void handoff_info_free(handoff_info *h);
/* The mail object with kiln:handoff-from [node] added to its tags (malloc'd), or NULL if
 * mail_json is not a JSON object. */
char *handoff_tag_mail(const char *mail_json, const char *node);

/* ---- the sender ---- */
typedef struct handoff handoff;
handoff *handoff_new(kiln_ctx *ctx, struct scheduler *s);
/* The job's pool has no IP here for it now: if a live peer can send it, the handoff takes
 * the active job (and ends its attempt itself); false: the caller goes on (defers it). */
bool handoff_take(handoff *h, struct sched_job *j, const char *why);
/* The graceful stop: transfers not finished give their jobs back to the queue. */
void handoff_stop(handoff *h);
/* Transfers under way (they count as sessions for the stop). */
int handoff_open(const handoff *h);
void handoff_free(handoff *h);

#endif
