/* policy.h — the SES sending rules of SPEC section 2 as pure decisions over the config,
 * the quota state and a clock. smtp_server asks; policy answers with the exact reply line.
 * Reply texts are the SPEC's, verbatim. */
#ifndef KILN_POLICY_H
#define KILN_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/config.h"
#include "mta/quota.h"

#define POLICY_REPLY_TOO_MANY_RCPTS "452 4.5.3 Too many recipients"
#define POLICY_REPLY_TOO_LONG       "552 5.3.4 Message is too long."
#define POLICY_REPLY_RATE           "454 4.7.0 Throttling failure: Maximum sending rate exceeded."
#define POLICY_REPLY_QUOTA          "454 4.7.0 Throttling failure: Daily message quota exceeded."
#define POLICY_REPLY_AUTH_REQUIRED  "530 5.7.0 Authentication required"

/* True if addr is covered by one of `list` (lower-case domains or addresses): an exact
 * address match, its domain, or a parent domain of its domain. Case-insensitive. */
bool policy_addr_in_list(char *const *list, size_t n, const char *addr);
bool policy_identity_verified(const config *cfg, const char *addr);

/* "554 5.7.1 Message rejected: Email address is not verified. The following identities
 * failed the check in region LOCAL: a, b" (malloc'd). */
char *policy_unverified_reply(const config *cfg, char *const *addrs, size_t n);

typedef enum {
    POLICY_RCPT_ACCEPT = 0,        /* normal recipient: queue it */
    POLICY_RCPT_SUPPRESSED,        /* accept; it gets a Bounce OnAccountSuppressionList, never sent */
    POLICY_RCPT_SIMULATOR,         /* accept; handled by the mailbox simulator */
    POLICY_RCPT_REJECT,            /* *reply says why */
} policy_rcpt_verdict;

typedef struct policy_rcpt_in {
    const config *cfg;
    quota *q;
    int64_t now_ms;
    size_t accepted_so_far;        /* recipients already accepted in this transaction */
    const char *rcpt;              /* address without <> */
    bool suppressed;               /* the caller looked it up in the suppression list */
} policy_rcpt_in;

/* Order: max_recipients, sandbox verification (not for simulator addresses), send rate,
 * 24 h quota (not for simulator addresses), then suppression. On ACCEPT, SUPPRESSED and
 * normal ones, a rate token is taken and (non-simulator) one 24 h slot reserved; the caller
 * commits or releases the reservation. On REJECT nothing is taken and *reply is set to a
 * static or malloc'd string; *reply_owned says whether to free it. */
policy_rcpt_verdict policy_check_rcpt(const policy_rcpt_in *in, const char **reply,
                                      bool *reply_owned);

/* Sender check at MAIL: NULL if ok, else the malloc'd 554 reply. A null sender (<>) is ok. */
char *policy_check_mail_from(const config *cfg, const char *mail_from);
/* Header check at end of DATA: identities in From:, Sender: and Return-Path: must be
 * verified. NULL if ok, else the malloc'd 554 reply naming every failing address. */
struct msg_headers;
char *policy_check_headers(const config *cfg, const struct msg_headers *hs);

/* ---- per-user authorization scope (submission.auth identities / configuration_sets) ----
 * u is the authenticated user's entry (NULL: not authenticated, no scope). */

/* "554 5.7.1 Message rejected: User 'USER' is not authorized to perform 'ses:SendRawEmail'
 * on resource 'arn:aws:ses:REGION:ACCOUNT:KIND/NAME'" (malloc'd; KIND is "identity" or
 * "configuration-set"; control characters become '?', the line stays within 512 octets). */
char *policy_scope_reply(const config *cfg, const char *user, const char *account_id,
                         const char *kind, const char *name);
bool policy_user_may_send_as(const config_auth_user *u, const char *addr);
bool policy_user_may_use_set(const config_auth_user *u, const char *set);
/* MAIL FROM outside u's identities: the malloc'd 554 naming it, else NULL (<> is fine). */
char *policy_check_mail_from_scope(const config *cfg, const config_auth_user *u,
                                   const char *account_id, const char *mail_from);
/* The first From:/Sender:/Return-Path: address outside u's identities: the malloc'd 554
 * naming it, else NULL. */
char *policy_check_headers_scope(const config *cfg, const config_auth_user *u,
                                 const char *account_id, const struct msg_headers *hs);

#endif
