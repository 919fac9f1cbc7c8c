/* reputation.h — the account's reputation metrics as SES's reputation dashboard shows them
 * (bounce rate and complaint rate, each with a status against SES's thresholds), computed
 * from the send-statistics buckets (stats.h). Pure: the caller reads the buckets
 * (spool_stats_each) and passes them in with the time; nothing here reads the spool or the
 * clock.
 *
 * SES computes its rates over a "representative volume" of recent mail, not a fixed period.
 * kiln keeps 14 days of 15-minute buckets, so its closest honest equivalent is a fixed
 * window: every bucket from stats_bucket_ms(now - STATS_KEEP_MS) on (the same buckets
 * `kilnctl stats` lists), with
 *   BounceRate    = sum(Bounces)    / sum(DeliveryAttempts)
 *   ComplaintRate = sum(Complaints) / sum(DeliveryAttempts)
 * (0 when there are no attempts in the window). Statuses compare exactly (integer
 * arithmetic, no rounding): a rate at or above the warning threshold is WARNING, at or above
 * the at-risk threshold AT_RISK. */
#ifndef KILN_REPUTATION_H
#define KILN_REPUTATION_H

#include <stddef.h>
#include <stdint.h>

#include "store/stats.h"

/* SES's thresholds in basis points (1/100 of a percent): bounce rate 5 % (account under
 * review) and 10 % (sending may be paused); complaint rate 0.1 % and 0.5 %. */
#define REPUTATION_BOUNCE_WARNING_BP 500
#define REPUTATION_BOUNCE_AT_RISK_BP 1000
#define REPUTATION_COMPLAINT_WARNING_BP 10
#define REPUTATION_COMPLAINT_AT_RISK_BP 50

typedef enum {
    REPUTATION_HEALTHY = 0,   /* below the warning threshold (or no volume yet) */
    REPUTATION_WARNING,       /* at or above the warning threshold: SES reviews the account */
    REPUTATION_AT_RISK,       /* at or above the at-risk threshold: SES may pause sending */
} reputation_status;

typedef struct reputation {
    int64_t window_start_ms;   /* first bucket counted (a 15-minute boundary) */
    int64_t window_end_ms;     /* now */
    int64_t attempts, bounces, complaints;   /* sums over the window */
    double bounce_rate, complaint_rate;      /* fractions (0.05 = 5 %); 0 without attempts */
    reputation_status bounce_status, complaint_status;
} reputation;

/* The metrics over buckets[0..n) (any order) at time now_ms: buckets before the window's
 * start are ignored. */
void reputation_compute(const stats_counts *buckets, size_t n, int64_t now_ms, reputation *out);

/* The status of count out of attempts against the thresholds (basis points). */
reputation_status reputation_status_of(int64_t count, int64_t attempts, int warning_bp,
                                       int at_risk_bp);

/* "HEALTHY", "WARNING", "AT_RISK". */
const char *reputation_status_name(reputation_status s);

#endif
