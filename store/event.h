/* event.h — the SES event records (SPEC section 4) the spool's outbox stores and stats
 * counts, built from the stored mail object of a message (mta/events.h builds that object
 * at acceptance). Pure: JSON in, JSON out; nothing here touches the spool or the loop.
 * Both the scheduler (settling outcomes) and mta/accept.c (simulator outcomes) use them. */
#ifndef KILN_STORE_EVENT_H
#define KILN_STORE_EVENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "base/config.h"

/* ---- one event (malloc'd JSON text, one line, no trailing newline) ----
 * mail_json is the stored mail object; outgoing_ip (may be NULL) is added as the
 * ses:outgoing-ip tag. Timestamps are ISO 8601 with milliseconds, UTC. */
/* mail_json: the text events_mail_json returned; it is put into the event as it is (text
 * that does not look like an object gets the damaged-object event instead). */
char *events_send(const char *mail_json);
char *events_reject(const char *mail_json, const char *reason);

char *events_delivery(const char *mail_json, const char *outgoing_ip, int64_t ts_ms,
                      int64_t processing_ms, char *const *rcpts, size_t nrcpts,
                      const char *smtp_response, const char *reporting_mta,
                      const char *remote_mta_ip);

typedef struct events_rcpt_status {
    const char *email;
    const char *action;             /* bounce only: "failed" */
    const char *status;             /* "5.1.1", "4.4.7" … */
    const char *diagnostic;         /* remote reply or kiln's text; may be NULL */
} events_rcpt_status;

char *events_bounce(const char *mail_json, const char *outgoing_ip, int64_t ts_ms,
                    const char *bounce_type, const char *bounce_subtype,
                    const events_rcpt_status *rcpts, size_t nrcpts,
                    const char *reporting_mta, const char *remote_mta_ip);
char *events_delay(const char *mail_json, const char *outgoing_ip, int64_t ts_ms,
                   const char *delay_type, int64_t expiration_ms,
                   const events_rcpt_status *rcpts, size_t nrcpts,
                   const char *reporting_mta, const char *remote_mta_ip);
/* arrival_ms: when the complained-about message arrived at the reporter (ARF Arrival-Date),
 * SES's complaint.arrivalDate; ts_ms when unknown. */
char *events_complaint(const char *mail_json, int64_t ts_ms, char *const *rcpts, size_t nrcpts,
                       const char *feedback_type, const char *user_agent, int64_t arrival_ms);

/* "dsn; <hostname>" (malloc'd). */
char *events_reporting_mta(const config *cfg);

/* ---- JSON helpers (fail fast on allocation failure), shared with mta/events.c ---- */
/* A JSON string for s (NULL: ""); bytes that are not valid UTF-8 become U+FFFD. */
json_t *event_jstr(const char *s);
void event_jset(json_t *obj, const char *key, json_t *val);
void event_jappend(json_t *arr, json_t *val);
json_t *event_jobj(void);
json_t *event_jarr(void);
json_t *event_jint(int64_t v);
json_t *event_jtime(int64_t ms);                    /* ISO 8601 with milliseconds, UTC */
json_t *event_jstr_array(char *const *v, size_t n);
json_t *event_tag(const char *value);               /* an SES tag value: ["value"] */

#endif
