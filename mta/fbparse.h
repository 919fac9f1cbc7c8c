/* fbparse.h — what a feedback message says (issue 14): a delivery status notification
 * (RFC 3464 multipart/report; report-type=delivery-status, and the common non-standard
 * bounces of large providers recognised by their shapes), an abuse feedback report (RFC
 * 5965 ARF, multipart/report; report-type=feedback-report), an automatic reply
 * (out-of-office, vacation, challenge-response: recognised so that it is NOT taken for a
 * bounce), or none of these. MIME is parsed with GMime 3 (Debian's libgmime-3.0-dev); only
 * the per-recipient fields of message/delivery-status and message/feedback-report bodies
 * (RFC 822-style header blocks, which GMime does not interpret) are read by hand.
 *
 * Pure: bytes in, a malloc'd struct out; no I/O, no clock, no global state other than
 * GMime's own one-time g_mime_init() (fbparse_init). Bounded: the limits in fbparse_limits
 * cap the work on hostile input (MIME bombs: deep nesting, many parts, many recipients,
 * long fields); input over a limit yields FBPARSE_MALFORMED with a reason, never a crash.
 *
 * SES mapping (docs "Amazon SES notification contents"):
 *   bounceType  Permanent (Action failed + 5.x.x), Transient (Action failed + 4.x.x, or a
 *               non-standard bounce saying temporary), Undetermined (failed, no status).
 *   bounceSubType (Permanent): NoEmail (5.1.0-5.1.3, 5.1.6, 5.1.10, or diagnostic text
 *               "user unknown", "no such user", "does not exist", "mailbox unavailable" ...),
 *               Suppressed (never produced here), MessageTooLarge (5.3.4, 5.2.3, "too large"),
 *               ContentRejected (5.7.1 with content/spam/policy text, 5.6.x),
 *               AttachmentRejected ("attachment" text), General (everything else).
 *   bounceSubType (Transient): MailboxFull (4.2.2, 5.2.2, "over quota", "mailbox full"),
 *               MessageTooLarge (4.3.4, 5.2.3 as transient), ContentRejected, AttachmentRejected,
 *               General.  Note 5.2.2 (mailbox full) is Transient/MailboxFull, as SES does.
 *   Action delayed / delivered / relayed / expanded: the recipient is listed with
 *   bounce_type NULL (nothing permanent may follow from it).
 *   complaintFeedbackType: Feedback-Type lower-cased when one of abuse, auth-failure,
 *               fraud, not-spam, other, virus; anything else -> "other".
 */
#ifndef KILN_MTA_FBPARSE_H
#define KILN_MTA_FBPARSE_H

#include <stddef.h>
#include <stdint.h>

typedef enum fbparse_kind {
    FBPARSE_NONE = 0,        /* not a report: why says what it looked like */
    FBPARSE_DSN,             /* a bounce or delay notification (standard or non-standard) */
    FBPARSE_ARF,             /* an abuse feedback report */
    FBPARSE_AUTOREPLY,       /* out-of-office / vacation / challenge-response: ignored */
    FBPARSE_MALFORMED,       /* claims to be a report (or is MIME) but breaks a rule or a
                                limit: why names the rule or limit */
} fbparse_kind;

typedef struct fbparse_limits {
    size_t max_bytes;        /* input larger than this: MALFORMED "report is N bytes, over
                                the limit of M" (default 10 MiB) */
    int max_depth;           /* MIME nesting depth (default 8) */
    int max_parts;           /* MIME parts in all (default 100) */
    int max_recipients;      /* per-recipient blocks in one DSN (default 100) */
    size_t max_field;        /* bytes of one report field value kept (default 998);
                                longer values are truncated, not refused */
} fbparse_limits;

/* The defaults above. */
void fbparse_default_limits(fbparse_limits *l);

typedef struct fbparse_rcpt {
    char *address;           /* the address part of Final-Recipient (or Original-Recipient
                                when Final-Recipient is missing), "rfc822;" stripped,
                                lower-cased domain; never NULL */
    char *action;            /* "failed", "delayed", "delivered", "relayed", "expanded"
                                (lower-cased; "failed" for non-standard bounces) */
    char *status;            /* "5.1.1" (the Status field's x.y.z), or NULL */
    char *diagnostic;        /* Diagnostic-Code as given (e.g. "smtp; 550 5.1.1 <a@b>: user
                                unknown"), or the non-standard bounce's error text, or NULL */
    char *remote_mta;        /* Remote-MTA as given (e.g. "dns; mx.example.com"), or NULL */
    const char *bounce_type;    /* "Permanent", "Transient", "Undetermined", or NULL when
                                   action is not "failed" (static strings) */
    const char *bounce_subtype; /* see the mapping above; NULL when bounce_type is NULL */
} fbparse_rcpt;

typedef struct fbparse_report {
    fbparse_kind kind;
    char *why;               /* always set: a one-line reason or description, e.g.
                                "RFC 3464 delivery-status report, 1 recipient",
                                "Exim bounce (X-Failed-Recipients)", "out-of-office reply
                                (Auto-Submitted: auto-replied)", "no report part" */
    char *shape;             /* DSN/ARF: which shape was recognised: "rfc3464", "exim",
                                "yahoo", "gmail", "exchange", "qmail", "arf"; else NULL */

    /* DSN */
    char *reporting_mta;     /* Reporting-MTA as given ("dns; mx.example.com"), or NULL */
    char *arrival_date;      /* Arrival-Date as given, or NULL */
    fbparse_rcpt *rcpts;     /* per-recipient blocks, in order */
    size_t nrcpts;

    /* ARF (RFC 5965) */
    char *feedback_type;     /* normalised as above ("abuse" ...) */
    char *user_agent;        /* User-Agent, or NULL */
    char *arf_arrival_date;  /* Arrival-Date / Received-Date as given, or NULL */
    char *original_mail_from;  /* Original-Mail-From, "<>" and brackets stripped, or NULL */
    char **original_rcpt_to;   /* Original-Rcpt-To values, brackets stripped */
    size_t noriginal_rcpt_to;
    char *source_ip;         /* Source-IP, or NULL */

    /* The quoted original message (DSN: the message/rfc822 or text/rfc822-headers part;
     * ARF: the third part; non-standard bounces: a quoted header block when one is found).
     * Header values as given, unfolded, without angle brackets for the ids. */
    char *orig_message_id;     /* Message-ID */
    char *orig_return_path;    /* Return-Path (may hold the VERP address), or NULL */
    char *orig_kiln_message_id;/* X-SES-Message-ID or X-Kiln-Message-ID, or NULL */
    char *orig_feedback_id;    /* Feedback-ID, or NULL */
    char *orig_from;           /* From, or NULL */
    char *orig_to;             /* To, or NULL */
} fbparse_report;

/* Once per process, before any fbparse_message (idempotent; calls g_mime_init). */
void fbparse_init(void);

/* Parses MSG (LEN bytes, a whole message as received: headers and body, CRLF or LF line
 * ends). ENVELOPE_FROM is the MAIL FROM of the delivery ("" for the null sender; may be
 * NULL when unknown): a DSN normally comes from "<>", an automatic reply seldom does.
 * Fills *OUT (always, even on MALFORMED/NONE: free it with fbparse_report_free). Returns
 * out->kind. LIMITS may be NULL for the defaults. */
fbparse_kind fbparse_message(const char *msg, size_t len, const char *envelope_from,
                             const fbparse_limits *limits, fbparse_report *out);

void fbparse_report_free(fbparse_report *r);

/* An RFC 5322 date-time (e.g. an ARF Arrival-Date, "Thu, 8 Mar 2005 17:00:00 -0500") as
 * milliseconds since the epoch, or -1 when it cannot be read. */
int64_t fbparse_date_ms(const char *date);

/* "DSN", "ARF", "autoreply", "none", "malformed". */
const char *fbparse_kind_name(fbparse_kind k);

/* The SES bounce classification of one failed recipient, from its Status (may be NULL)
 * and diagnostic text (may be NULL): *type and *subtype get static strings as mapped
 * above. Exposed for the unit tests and for kiln's own synchronous bounces. */
void fbparse_classify(const char *status, const char *diagnostic, const char **type,
                      const char **subtype);

#endif
