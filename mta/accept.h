/* accept.h — turns a received, policy-checked message into one spool transaction: the
 * message (with Received: and, if absent, Message-ID: added), its recipients, the Send
 * event, and the outcome of recipients settled at once (mailbox simulator, suppression
 * list; an ooto auto-reply is queued as a new message in the same batch). After the
 * commit, the scheduler is told and the caller's callback runs with the message ID. */
#ifndef KILN_ACCEPT_H
#define KILN_ACCEPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mta/policy.h"

struct kiln_ctx;

typedef struct accept_in {
    const char *mail_from;          /* envelope sender, "" for <> */
    char *const *rcpts;             /* accepted recipients */
    const policy_rcpt_verdict *verdicts; /* per recipient: ACCEPT, SUPPRESSED or SIMULATOR */
    size_t nrcpts;
    const char *config_set;         /* resolved (header or default); must exist */
    const char *client_ip;
    const char *helo;
    bool tls;
    const char *auth_user;          /* NULL if not authenticated */
    const char *data;               /* the message, CRLF lines, not dot-stuffed, without
                                       X-SES-CONFIGURATION-SET */
    size_t data_len;
    struct strbuf *take;            /* if set, the buffer holding data: accept_message builds
                                       the stored message in it (no copy) and frees it; it is
                                       empty on return */
    unsigned quota_count;           /* recipients reserved against max_24h_send */
    const char *protocol;           /* the Received: field's "with" (e.g. "HTTPS" for the SES
                                       API); NULL: ESMTP/ESMTPS/ESMTPA/ESMTPSA from tls, auth */
    /* Message tags (SES EmailTags / X-SES-MESSAGE-TAGS): names and values already checked
       (events_tag_check), shown in the mail object's tags next to the ses: ones. */
    char *const *tag_names;
    char *const *tag_values;
    size_t ntags;
    /* A message another node of the cluster handed over (mta/handoff.h): stored as it is
       (no Received: or Message-ID: added) under this id, acceptance time and SES mail
       object; no Send event and no count (the first node made both). NULL: a new message. */
    const char *handoff_id;
    int64_t handoff_created_ms;
    const char *handoff_mail_json;
} accept_in;

/* done(arg, ok, id, err): ok=true once durably committed (answer "250 2.0.0 Ok <id>");
 * ok=false if the spool failed (answer 451 4.3.0). Returns 0 if the writes were queued. */
typedef void (*accept_done_cb)(void *arg, bool ok, const char *id, const char *err);
int accept_message(struct kiln_ctx *ctx, const accept_in *in, accept_done_cb done, void *arg);

/* SES publishes a Reject event when it took a message's data but refused to send it.
 * kiln does the same for a message refused at the end of DATA for its content (bare LF,
 * NUL byte, over-long line, unverified header identity): a new ID, nothing stored, and a
 * Reject event (reason = the reply text) in the configuration set's outbox, written with
 * the next group commit. in->config_set NULL or unknown: no event (no destination). */
void accept_reject(struct kiln_ctx *ctx, const accept_in *in, const char *reason);
/* The event's sendingAccountId for hostname: 12 decimal digits (also the account in the
 * ARNs of the per-user authorization replies). */
void accept_sending_account_id(const char *hostname, char out[16]);

/* New SES-style message ID into out: 16 hex ms timestamp, a random UUID, "-000000". */
void accept_new_id(char out[80], int64_t now_ms);

#endif
