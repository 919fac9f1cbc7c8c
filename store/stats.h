/* stats.h — send statistics as SES GetSendStatistics reports them (SPEC section 5):
 * 15-minute buckets (UTC) of DeliveryAttempts, Bounces, Complaints and Rejects, kept in the
 * spool's stats table. Each counting event is counted in the batch that writes it to the
 * outbox (stats_count, called next to spool_add_event by the code that builds the event), so
 * it counts exactly once, also across crashes, without reading the event back. Outbox rows
 * written by an older kiln, which counted when the drain deleted them, are still counted
 * that way (stats_legacy_outbox, stats_count_outbox).
 *
 * Counting rule (as SES counts): DeliveryAttempts = recipients in mail.destination of each
 * Send event; Bounces = bouncedRecipients of each Bounce event; Complaints =
 * complainedRecipients of each Complaint event; Rejects = 1 per Reject event. Other event
 * types are not counted. The bucket is the event's time (bounce.timestamp,
 * complaint.timestamp, else mail.timestamp) floored to 15 minutes. */
#ifndef KILN_STATS_H
#define KILN_STATS_H

#include <stdbool.h>
#include <stdint.h>

struct spool;

#define STATS_BUCKET_MS (15 * 60 * 1000LL)
#define STATS_KEEP_MS (14 * 24 * 3600 * 1000LL)   /* SES shows two weeks */

typedef struct stats_counts {
    int64_t bucket_ms;
    int64_t attempts, bounces, complaints, rejects;
} stats_counts;

/* ms floored to its 15-minute bucket (UTC; also right for times before 1970). */
int64_t stats_bucket_ms(int64_t ms);

typedef enum {
    STATS_ATTEMPTS,     /* a Send event: one per recipient in mail.destination */
    STATS_BOUNCES,      /* a Bounce event: one per bounced recipient */
    STATS_COMPLAINTS,   /* a Complaint event: one per complained recipient */
    STATS_REJECTS,      /* a Reject event: one */
} stats_kind;

/* Adds n of kind to the bucket of ts_ms (the event's time as the counting rule says) in the
 * open spool batch: call it in the batch that adds the event to the outbox. A failed write
 * fails the batch (reported at the commit). */
void stats_count(struct spool *sp, stats_kind kind, int64_t ts_ms, int64_t n);

/* At start-up, before any event is written: *legacy_upto receives the last outbox id that
 * was written before events were counted at insertion (0: none), and those rows are counted
 * by stats_count_outbox when the drain deletes them. The first open of a spool records its
 * outbox's last id under the kv key "stats:counted-at-insert-after" (committed before this
 * returns); later opens read it. 0, or -1 with spool_errmsg set. */
int stats_legacy_outbox(struct spool *sp, int64_t *legacy_upto);

/* Parses one event (JSON text). true with *out filled if it counts toward the statistics;
 * false for other event types and for text that is not an event with a readable time. */
bool stats_parse_event(const char *json, stats_counts *out);

/* Adds the event's counts to its bucket in the open spool batch (nothing for events that
 * do not count). Call it in the batch that deletes the event from the outbox, so that each
 * event is counted exactly once, also across crashes. */
void stats_count_event(struct spool *sp, const char *json);

/* Counts every outbox row with after < id <= upto (what spool_delete_events(sp, upto)
 * removes, after being the upto of the caller's previous delete: reads see committed rows
 * only, so rows whose delete is still in flight must not be counted again): call it just
 * before that delete, in the same batch. 0, or -1 on a read error (the caller must then not
 * delete the rows either). */
int stats_count_outbox(struct spool *sp, int64_t after, int64_t upto);

#endif
