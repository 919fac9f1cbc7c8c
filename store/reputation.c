/* reputation.c — bounce and complaint rates with SES's thresholds over the send-statistics
 * buckets of the last 14 days (see reputation.h). Statuses compare count * 10000 against
 * attempts * threshold in integers, so 5 % exactly is 5 % (no floating-point rounding). */
#include "store/reputation.h"

#include <string.h>

reputation_status reputation_status_of(int64_t count, int64_t attempts, int warning_bp,
                                       int at_risk_bp)
{
    if (attempts <= 0 || count <= 0) return REPUTATION_HEALTHY;
    if (count * 10000 >= attempts * at_risk_bp) return REPUTATION_AT_RISK;
    if (count * 10000 >= attempts * warning_bp) return REPUTATION_WARNING;
    return REPUTATION_HEALTHY;
}

const char *reputation_status_name(reputation_status s)
{
    switch (s) {
    case REPUTATION_WARNING: return "WARNING";
    case REPUTATION_AT_RISK: return "AT_RISK";
    case REPUTATION_HEALTHY: break;
    }
    return "HEALTHY";
}

void reputation_compute(const stats_counts *buckets, size_t n, int64_t now_ms, reputation *out)
{
    memset(out, 0, sizeof *out);
    out->window_start_ms = stats_bucket_ms(now_ms - STATS_KEEP_MS);
    out->window_end_ms = now_ms;
    for (size_t i = 0; i < n; i++) {
        if (buckets[i].bucket_ms < out->window_start_ms) continue;
        out->attempts += buckets[i].attempts;
        out->bounces += buckets[i].bounces;
        out->complaints += buckets[i].complaints;
    }
    if (out->attempts > 0) {
        out->bounce_rate = (double)out->bounces / (double)out->attempts;
        out->complaint_rate = (double)out->complaints / (double)out->attempts;
    }
    out->bounce_status = reputation_status_of(out->bounces, out->attempts,
                                              REPUTATION_BOUNCE_WARNING_BP,
                                              REPUTATION_BOUNCE_AT_RISK_BP);
    out->complaint_status = reputation_status_of(out->complaints, out->attempts,
                                                 REPUTATION_COMPLAINT_WARNING_BP,
                                                 REPUTATION_COMPLAINT_AT_RISK_BP);
}
