/* retry.h — classification of delivery outcomes (pure): every SMTP reply or local failure
 * becomes delivered, deferred (with an SES delayType) or bounced (with an SES
 * bounceType/bounceSubType), plus the exponential backoff and the max_delivery_time
 * expiry rule of SPEC section 3. No I/O, no clock: callers pass times in. */
#ifndef KILN_RETRY_H
#define KILN_RETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "base/config.h"

/* RETRY_HANDOFF: another node of the cluster took the recipient (mta/handoff.h): final
 * here, no event or count here (the other node has them). Never a classification's. */
typedef enum {
    RETRY_DELIVERED = 0,
    RETRY_DEFER = 1,
    RETRY_BOUNCE = 2,
    RETRY_HANDOFF = 3
} retry_verdict;

typedef struct retry_class {
    retry_verdict verdict;
    const char *bounce_type;     /* RETRY_BOUNCE: "Permanent" or "Transient"; else NULL */
    const char *bounce_subtype;  /* RETRY_BOUNCE: "General", "NoEmail"; else NULL */
    const char *delay_type;      /* RETRY_DEFER: SES delayType; else NULL */
    char status[16];             /* enhanced status for the event ("5.1.1"): the reply's
                                    own when valid, else derived from the code or failure */
    bool suppress;               /* RETRY_BOUNCE: add the address to the suppression list
                                    (reason BOUNCE, if the account lists that reason) */
} retry_class;

/* An SMTP reply to RCPT, MAIL or the end of DATA. enhanced: "5.1.1" or NULL/"" (an
 * enhanced code whose class differs from the reply's is ignored); text: the reply text
 * (used for "mailbox full", "user unknown"... when no enhanced code says it).
 * 2xx delivered; 4xx deferred (x.2.2 or "mailbox full": MailboxFull; x.7.x or "spam":
 * SpamDetected; else RecipientServerError); 5xx bounced Permanent (x.1.1, x.1.10 or
 * "user unknown": NoEmail; else General) and suppressed; any other code deferred
 * (Undetermined). out may be NULL. */
retry_verdict retry_classify_reply(int code, const char *enhanced, const char *text,
                                   retry_class *out);

/* Failures that are not a reply from the recipient's server. */
typedef enum {
    RETRY_FAIL_CONNECT = 0,   /* refused, unreachable, connect/greeting timeout, lost or
                                 broken connection, reply timeout: defer, TransientCommunicationFailure */
    RETRY_FAIL_TLS,           /* STARTTLS handshake failed: defer, TransientCommunicationFailure */
    RETRY_FAIL_TLS_REQUIRED,  /* tls_policy require and no TLS: defer, TransientCommunicationFailure */
    RETRY_FAIL_DNS_TEMP,      /* SERVFAIL, timeout: defer, TransientCommunicationFailure */
    RETRY_FAIL_IP,            /* no usable source IP (empty pool, bind failed): defer, IPFailure */
    RETRY_FAIL_INTERNAL,      /* kiln's own trouble (spool read...): defer, InternalFailure */
    RETRY_FAIL_DNS_NXDOMAIN,  /* bounce Permanent/General 5.1.2, suppressed */
    RETRY_FAIL_DNS_NULLMX,    /* bounce Permanent/General 5.1.10, suppressed */
    RETRY_FAIL_DNS_NOHOST,    /* bounce Permanent/General 5.4.4, suppressed */
    RETRY_FAIL_TOO_BIG,       /* larger than the peer's SIZE: bounce Permanent/General 5.3.4,
                                 not suppressed (the message, not the address, is at fault) */
    RETRY_FAIL_PRIVATE_MX,    /* every MX (or A fallback) address is loopback, private or
                                 kiln's own: bounce Permanent/General 5.4.4, suppressed (the
                                 domain publishes no usable next hop, as RETRY_FAIL_DNS_NOHOST) */
    RETRY_FAIL_LOOP,          /* the next hop is kiln itself (its listener, or a greeting with
                                 server.hostname): bounce Permanent/General 5.4.6, not
                                 suppressed (routing, not the address, is at fault) */
    RETRY_FAIL_UNSIGNED,      /* DKIM required and no key can sign now (dkim.on_unsigned: defer):
                                 defer, InternalFailure 4.7.0 */
    RETRY_FAIL_UNSIGNED_REJECT,   /* the same with dkim.on_unsigned: reject: bounce
                                     Permanent/General 5.7.0, not suppressed */
    RETRY_FAIL_MAIL_FROM_MX,  /* custom MAIL FROM domain without MX and behavior_on_mx_failure
                                 RejectMessage: bounce Permanent/General 5.7.0, not suppressed */
    RETRY_FAIL_MAIL_FROM_PENDING, /* the same while its MX is not checked yet: defer 4.7.0 */
    RETRY_FAIL_UNSENDABLE,    /* the set's own fields cannot be made for this recipient (its
                                 List-Unsubscribe URL too long): bounce Permanent/General
                                 5.6.0, not suppressed */
} retry_failure;
retry_verdict retry_classify_failure(retry_failure f, retry_class *out);

/* The bounce for a recipient whose next attempt would come after its message's
 * max_delivery_time: Transient/General, status 4.4.7, not suppressed. */
void retry_classify_expired(retry_class *out);

/* Delay before the next attempt after `attempts` attempts (1 = the first one failed):
 * min(retry.first * retry.factor^(attempts-1), retry.max_interval). attempts < 1 counts as 1. */
int64_t retry_next_delay_ms(const config *cfg, int attempts);

/* True when an attempt at at_ms would come after created_ms + max_delivery_time_ms:
 * the recipient must bounce instead of being deferred to at_ms. */
bool retry_expired(int64_t created_ms, int64_t at_ms, int64_t max_delivery_time_ms);

/* "delivered" / "deferred" / "bounced", for logs. */
const char *retry_verdict_name(retry_verdict v);

#endif
