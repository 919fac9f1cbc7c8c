/* feedback_int.h — private to mta/feedback.c (intake: RCPT check, durable acceptance,
 * recovery, pruning) and mta/feedback_apply.c (what a committed report becomes: the match
 * to a sent message, SES events, suppression, statistics, the complaint signal). */
#ifndef KILN_MTA_FEEDBACK_INT_H
#define KILN_MTA_FEEDBACK_INT_H

#include <stddef.h>
#include <stdint.h>

#include "base/kiln.h"

/* What became of one report: the word logged as feedback.<outcome>. */
typedef enum {
    FEEDBACK_BOUNCE,     /* Bounce event(s) emitted */
    FEEDBACK_COMPLAINT,  /* Complaint event emitted */
    FEEDBACK_DELAYED,    /* a delayed/delivered DSN: logged only */
    FEEDBACK_IGNORED,    /* an automatic reply */
    FEEDBACK_DROPPED,    /* not a report, malformed, or not matched: nothing changed */
} feedback_outcome;

/* Processes the report stored as inbox row ID (already committed); its writes (events,
 * suppression, statistics) go to the spool's next batch. Returns the outcome; logs one
 * feedback.* line. */
feedback_outcome feedback_apply(kiln_ctx *ctx, int64_t id, const char *mail_from,
                                const char *rcpts, const char *data, size_t len);

#endif
