/* spool_feedback.h — what the feedback intake (issue 14) keeps in the spool:
 *
 * - sent_mail: a message whose last recipient became final is, when spool_keep_sent is on,
 *   copied into sent_mail (msg_id, created_ms, config_set, mail_json, message_id) in the same
 *   batch that deletes it, so a bounce or complaint arriving days later still finds its SES
 *   mail object. message_id is the mail object's commonHeaders.messageId without angle
 *   brackets or blanks (for reports that quote only the Message-ID). Rows older than the
 *   retention are removed by spool_sent_prune.
 * - feedback_inbox: the reports the feedback listener accepted, written (and committed)
 *   before its 250, deleted once processed; whatever is left at start-up is processed then.
 *
 * Same rules as spool.h: writes are recorded in the filling batch (loop thread) and
 * committed by the writer; reads see what is committed. */
#ifndef KILN_STORE_SPOOL_FEEDBACK_H
#define KILN_STORE_SPOOL_FEEDBACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/spool.h"

/* On: every message deleted from now on because its recipients are all final is copied to
 * sent_mail first (off by default: nothing is kept, nothing costs). */
void spool_keep_sent(spool *sp, bool on);

/* Batch write: deletes sent_mail rows created before BEFORE_MS. */
int spool_sent_prune(spool *sp, int64_t before_ms);

typedef struct spool_sent {
    char *msg_id;
    int64_t created_ms;
    char *config_set;
    char *mail_json;
    bool in_queue;           /* found among the queued messages (some recipient not final) */
} spool_sent;

/* The message MSG_ID: from the queue (messages table) when it is still there, else from
 * sent_mail. 0 and *found; -1 on a read error (spool_errmsg). */
int spool_sent_find(spool *sp, const char *msg_id, bool *found, spool_sent *out);
/* A finished message (sent_mail only) by its Message-ID header value (angle brackets and
 * blanks ignored): the newest match. Queued messages are not searched: they have no
 * Message-ID column, and a scan of the queue for every token-less report would let anyone
 * who can reach the feedback listener stall the loop. */
int spool_sent_find_message_id(spool *sp, const char *message_id, bool *found, spool_sent *out);
void spool_sent_free(spool_sent *s);

/* Batch write: one accepted report. *ID is given at once (increasing, never reused). RCPTS
 * are the envelope recipients joined with '\n'. DATA is copied. */
int spool_fbin_add(spool *sp, int64_t received_ms, const char *client_ip, const char *mail_from,
                   const char *rcpts, const char *data, size_t len, int64_t *id);
/* Batch write: the report is processed. */
int spool_fbin_delete(spool *sp, int64_t id);

typedef void (*spool_fbin_cb)(void *arg, int64_t id, int64_t received_ms, const char *client_ip,
                              const char *mail_from, const char *rcpts, const char *data,
                              size_t len);
/* Every committed report, oldest first (start-up recovery). */
int spool_fbin_each(spool *sp, spool_fbin_cb cb, void *arg);

#endif
