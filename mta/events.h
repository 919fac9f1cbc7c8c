/* events.h — the SES mail object (SPEC section 4) built with jansson at acceptance, and the
 * delivery of events to the configuration set's destinations. The event records built from
 * a stored mail object (send, reject, delivery, bounce, delay, complaint) are store/event.h's;
 * it is included here so that callers of either need one include.
 *
 * Events are never written straight to a destination: the code that changes a message's
 * state adds the event to the spool outbox in the same transaction (spool_add_event), and
 * events_drain() later appends outbox rows to each `file` destination of their set, fsyncs
 * each file once per drain, and hands them to each `webhook` destination (webhook.h); a row
 * is deleted only once every destination of its set has it (the files' progress is kept
 * under spool kv key "events:files", each webhook's under "webhook:<set>:<url>"). A crash
 * can repeat an event, never lose one. */
#ifndef KILN_EVENTS_H
#define KILN_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "base/config.h"
#include "mta/message.h"
#include "mta/webhook.h"
#include "store/event.h"

struct spool;
struct klog;
struct ev_loop;
struct curl_ev;

/* ---- the "mail" object, built once at acceptance and stored with the message ---- */
typedef struct events_mail_in {
    const char *message_id;
    int64_t timestamp_ms;           /* acceptance time */
    const char *source;             /* envelope sender */
    const char *sending_account_id; /* "000000000000" style; kiln uses the hostname-derived id */
    char *const *destination;       /* every accepted recipient */
    size_t ndestination;
    const msg_headers *headers;     /* headers of the stored message */
    const char *config_set;
    const char *source_ip;          /* submitting client */
    char *const *tag_names;         /* message tags (EmailTags, X-SES-MESSAGE-TAGS), checked */
    char *const *tag_values;
    size_t ntags;
} events_mail_in;
/* SES's rules for a message tag's name or value: 1..256 characters of ASCII letters,
 * digits, '_', '-', '.' and '@' (names may not start with "ses:"). NULL if ok, else a
 * static reason ("contains a character other than ..."). */
const char *events_tag_check(const char *s, bool is_name);
/* JSON text (malloc'd) of the SES mail object: timestamp, messageId, source,
 * sendingAccountId, destination, headersTruncated, headers[{name,value}],
 * commonHeaders{from,to,cc?,messageId,subject,date}, tags{the message tags, ses:configuration-set,
 * ses:source-ip, ses:from-domain, ses:caller-identity}.
 * Size caps (SES truncates too; headersTruncated is true when anything was cut): each header
 * value and each commonHeaders value or address entry at 2 KB (cut at a UTF-8 boundary),
 * the headers list at 10 KB, each commonHeaders address list at 8 KB, and the whole object
 * at 64 KB (over it, headers becomes [], then each address list keeps its first entry,
 * then each commonHeaders value is cut to 256 bytes: JSON escapes can make a 2 KB value
 * 12 KB); only destination (bounded by submission.max_recipients) can pass that cap. */
char *events_mail_json(const events_mail_in *in);

/* ---- destinations ---- */
typedef struct events events;
events *events_new(struct klog *lg);
void events_free(events *ev);
/* Outbox rows with id <= upto were written by a kiln that did not count them at insertion
 * (stats_legacy_outbox): the drain counts them when it deletes them. */
void events_stats_legacy(events *ev, int64_t upto);
/* Lets webhook destinations post on loop through curl (kilnd calls this once after
 * events_new). Without them, webhook destinations post nothing and their rows stay in the
 * outbox (up to each one's max_backlog). */
void events_attach_loop(events *ev, struct ev_loop *loop, struct curl_ev *curl);
/* Builds the destinations of cfg now (kilnd calls it at start and at each reload, so
 * kilnctl status and the metrics list the webhooks before the first drain); a drain under
 * another config does the same. */
void events_configure(events *ev, struct spool *sp, const config *cfg);
/* Calls fn for every webhook destination of the current config, in config order (none
 * before events_configure or the first drain). */
typedef void events_webhook_fn(void *arg, const webhook_info *info);
void events_each_webhook(const events *ev, events_webhook_fn *fn, void *arg);
/* Appends the outbox rows not yet written (at most 4 MB of event text per call, at least
 * one row; the rest on the next call) to the file destinations of its set under cfg
 * (sets not in cfg: the row is logged and dropped), fdatasyncs each touched file, lets each
 * webhook destination take its pending rows (webhook_poll), then deletes the rows every
 * destination has (a spool batch; the caller flushes). A file created or opened again has
 * its directory fsync'd too, before any row it holds is released. Returns the number of
 * events written to files, -1 on I/O error (rows kept for the next drain; what this drain
 * appended to the files is cut off again, so the next drain writes each row once). */
int events_drain(events *ev, struct spool *sp, const config *cfg);

/* How a drain makes its file writes durable. Each returns 0, or -1 with errno set.
 * file: fdatasync of an event file's descriptor; dir: fsync of the directory that holds an
 * event file (path of the directory), after the file was created or opened again.
 * The defaults are fdatasync(2) and open(O_DIRECTORY) + fsync(2); tests swap them to see
 * the order (write, file, directory, then the outbox rows are released) and to fail them. */
typedef struct events_sync_ops {
    int (*file)(void *arg, int fd, const char *path);
    int (*dir)(void *arg, const char *dir);
    void *arg;
} events_sync_ops;
/* ops == NULL: the defaults again. ops is copied. */
void events_set_sync_ops(events *ev, const events_sync_ops *ops);

#endif
