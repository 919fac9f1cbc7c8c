/* kilnctl_reputation.c — the human table of `kilnctl reputation` (see kilnctl_reputation.h):
 * the window it covers, one row per metric (bounce, complaint) with the rate as a percentage,
 * the count and attempts it comes from, its status and SES's warning and at-risk thresholds,
 * and the note kilnd adds when the window holds no sending yet. Kept apart from kilnctl.c,
 * which is near the size limit. */
#include "mta/kilnctl_reputation.h"

#include <stdio.h>

static const char *kilnctl_reputation_str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "?";
}

static void kilnctl_reputation_row(json_t *m, const char *name, const char *rate,
                                   const char *count, const char *status, const char *warn,
                                   const char *risk)
{
    json_t *th = json_object_get(m, "Thresholds");
    printf("%-10s %8.2f%% %8lld %9lld  %-8s %9g%% %9g%%\n", name,
           json_number_value(json_object_get(m, rate)) * 100.0,
           (long long)json_integer_value(json_object_get(m, count)),
           (long long)json_integer_value(json_object_get(m, "DeliveryAttempts")),
           kilnctl_reputation_str(m, status), json_number_value(json_object_get(th, warn)) * 100.0,
           json_number_value(json_object_get(th, risk)) * 100.0);
}

void kilnctl_reputation_print(json_t *data)
{
    json_t *m = json_object_get(data, "ReputationMetrics");
    printf("window %s to %s (14 days of 15-minute buckets)\n",
           kilnctl_reputation_str(m, "WindowStart"), kilnctl_reputation_str(m, "WindowEnd"));
    printf("%-10s %9s %8s %9s  %-8s %10s %10s\n", "METRIC", "RATE", "COUNT", "ATTEMPTS",
           "STATUS", "WARNING", "AT_RISK");
    kilnctl_reputation_row(m, "bounce", "BounceRate", "Bounces", "BounceStatus",
                           "BounceRateWarning", "BounceRateAtRisk");
    kilnctl_reputation_row(m, "complaint", "ComplaintRate", "Complaints", "ComplaintStatus",
                           "ComplaintRateWarning", "ComplaintRateAtRisk");
    const char *note = json_string_value(json_object_get(m, "Note"));
    if (note) printf("(%s: rates are 0)\n", note);
}
