/* outbound.h — the last step before a message leaves: what kiln adds to it for its sender's
 * identity and configuration set, in this order: the one-click unsubscribe and Feedback-ID
 * header fields of a marked set (mta/unsub.c, with the recipient of a one-recipient job),
 * the custom MAIL FROM of the identity (envelope bounce+<token>@<mail_from domain>; with the
 * feedback section on, the HMAC'd VERP token of mta/fbtoken.h, on feedback.bounce_domain for
 * identities without a custom MAIL FROM), and the DKIM signatures of the identity's domain
 * (mta/dkim.c) over everything else, so that the added fields are signed too.
 *
 * Pure apart from the inputs it is handed: no loop, no DNS; the caller says what DNS showed
 * (the MAIL FROM domain's MX) and hands the keys (dkim_keys_signers). */
#ifndef KILN_OUTBOUND_H
#define KILN_OUTBOUND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/config.h"
#include "mta/dkim_keys.h"
#include "scheduler/retry.h"

/* What DNS last said of a MAIL FROM domain's MX. */
typedef enum {
    OUTBOUND_MX_UNKNOWN = 0,   /* not checked yet (or only temporary failures) */
    OUTBOUND_MX_OK,
    OUTBOUND_MX_MISSING,
} outbound_mx_state;

typedef struct outbound_in {
    const config *cfg;
    const config_set *set;       /* the message's configuration set */
    const char *msg_id;
    const char *mail_from;       /* the submitted envelope sender ("" for <>) */
    const char *rcpt;            /* the only recipient of a one-recipient job (transaction),
                                    else NULL: the unsubscribe URL's {recipient}, and the
                                    recipient the feedback VERP token binds (scope 1) */
    const char *data;            /* the spooled message: CRLF lines */
    size_t data_len;
    dkim_keys *keys;
    outbound_mx_state (*mx_state)(void *arg, const char *mail_from_domain);
    void *mx_arg;
    int64_t now_s;               /* DKIM t= */
} outbound_in;

typedef struct outbound_out {
    char *data;                  /* the message to send (malloc'd), or NULL on failure */
    size_t data_len;
    char *mail_from;             /* the envelope sender to use (malloc'd) */
    size_t nsigs;                /* DKIM signatures added */
    char *signed_by;             /* "d=example.com s=kiln1 a=rsa-sha256[, ...]" or NULL */
    retry_failure fail;          /* on failure: how the recipients end */
    char *why;                   /* on failure: the diagnostic (malloc'd) */
} outbound_out;

/* 0 with out filled, or -1 with out->fail and out->why (the message must not be sent). */
int outbound_prepare(const outbound_in *in, outbound_out *out);
void outbound_out_free(outbound_out *o);

/* The envelope token of a message id (its hex digits: at most 48), VERP-style:
 * bounce+<token>@domain. out holds at least 49 bytes. */
void outbound_token(const char *msg_id, char *out, size_t cap);

#endif
