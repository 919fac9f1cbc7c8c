/* feedback.h — the feedback intake (issue 14): what the feedback listener accepts (only
 * kiln's own bounce addresses and the feedback-loop addresses), its durable acceptance
 * (the report is committed to the spool's feedback inbox before the listener's 250), and
 * what a report becomes once committed:
 *
 *   DSN, failed + Permanent  -> SES Bounce event (the original message's configuration set),
 *                               the address on the suppression list (reason BOUNCE, when the
 *                               account suppresses bounces), counted in the send statistics
 *   DSN, failed + Transient  -> SES Bounce event (Transient), counted; nothing suppressed
 *   DSN, delayed/delivered   -> logged only
 *   ARF                      -> SES Complaint event, suppression (COMPLAINT), counted, and the
 *                               managed pools' per-provider complaint signal
 *   automatic reply          -> logged (feedback.ignored), nothing else
 *   anything else            -> logged (feedback.dropped) with the reason
 *
 * A report is matched to the message it concerns by the VERP token of the address it was
 * sent to (mta/fbtoken.h; for ARF, of the quoted original's Return-Path), else by the quoted
 * original's X-SES-Message-ID / Message-ID. Nothing is suppressed or counted without a
 * match: an unknown or forged token, an unknown Message-ID, a recipient that the token
 * (or the message) does not name, are logged with the reason and dropped. */
#ifndef KILN_MTA_FEEDBACK_H
#define KILN_MTA_FEEDBACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kiln_ctx;
struct config;
typedef struct feedback feedback;

/* NULL when cfg has no feedback section. Processes what the inbox holds from before a
 * restart (soon, from the loop). */
feedback *feedback_new(struct kiln_ctx *ctx);
void feedback_free(feedback *fb);
/* After a reload: the new feedback.complaint_hold_rate applies to the managed pools. */
void feedback_config_changed(feedback *fb);

/* Whether the listener takes RCPT ADDR (the address without angle brackets): one of
 * feedback.addresses, or bounce+TOKEN@ a bounce domain (feedback.bounce_domain or an
 * identity's custom MAIL FROM domain) whose token decodes (the MAC is checked later, when
 * the report is processed, so a forger learns nothing from the reply). 0, or -1 and *reply
 * (static text: the whole reply line without CRLF, "550 5.7.1 ..."). */
int feedback_rcpt_ok(const struct config *cfg, const char *addr, const char **reply);

/* done(arg, ok, err): ok once the report is committed (answer "250 2.0.0 Ok: queued as
 * <id>" with id = the inbox id in decimal); ok=false when the spool failed (451 4.3.0). */
typedef void (*feedback_done_cb)(void *arg, bool ok, int64_t id, const char *err);

/* One accepted report: MAIL_FROM ("" for <>), the accepted RCPTS, the message as received
 * (CRLF lines, not dot-stuffed). Copies what it needs. 0 once queued for the commit. */
int feedback_accept(feedback *fb, const char *client_ip, const char *mail_from,
                    char *const *rcpts, size_t nrcpts, const char *data, size_t len,
                    feedback_done_cb done, void *arg);

#endif
