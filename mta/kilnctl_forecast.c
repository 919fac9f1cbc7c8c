/* kilnctl_forecast.c — the human tables of `kilnctl forecast` (see kilnctl_forecast.h): a
 * heading with the ramp, per set its pool (and the sets sharing it), the IPs counted and
 * those left out with their state, a row per day; then the IPs. Dates are the UTC day of
 * each day's start (the answer's ISO 8601 times cut to YYYY-MM-DD). Kept apart from
 * kilnctl.c, which is near the size limit. */
#include "mta/kilnctl_forecast.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static const char *kilnctl_forecast_str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "?";
}

static long long kilnctl_forecast_int(json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

/* "2026-12-06T03:31:15.201Z" -> "2026-12-06" */
static const char *kilnctl_forecast_date(json_t *o, const char *key, char out[16])
{
    snprintf(out, 16, "%.10s", kilnctl_forecast_str(o, key));
    return out;
}

static void kilnctl_forecast_set(json_t *set, bool volume)
{
    size_t i;
    json_t *v;
    printf("\nset %s (pool %s, %s", kilnctl_forecast_str(set, "ConfigurationSet"),
           kilnctl_forecast_str(set, "PoolName"), kilnctl_forecast_str(set, "Scaling"));
    json_t *shared = json_object_get(set, "SharedWith");
    json_array_foreach(shared, i, v)
        printf("%s%s", i == 0 ? "; pool shared with " : ", ", json_string_value(v));
    printf(")\nIPs counted:");
    json_t *ips = json_object_get(set, "Ips");
    json_array_foreach(ips, i, v) printf(" %s", json_string_value(v));
    if (json_array_size(ips) == 0) printf(" none");
    json_array_foreach(json_object_get(set, "Excluded"), i, v)
        printf("%s%s (%s)", i == 0 ? "; left out: " : ", ", kilnctl_forecast_str(v, "Ip"),
               kilnctl_forecast_str(v, "State"));
    printf("\n%-4s %-10s  %14s%s\n", "DAY", "DATE", "RECIPIENTS/DAY", volume ? "  NEEDED/DAY" : "");
    json_array_foreach(json_object_get(set, "Daily"), i, v) {
        char date[16];
        printf("%-4lld %-10s  %14lld", kilnctl_forecast_int(v, "Day"),
               kilnctl_forecast_date(v, "Date", date), kilnctl_forecast_int(v, "RecipientsPerDay"));
        if (volume) printf("  %10lld", kilnctl_forecast_int(v, "NeededPerDay"));
        printf("\n");
    }
}

void kilnctl_forecast_print(json_t *data)
{
    json_t *f = json_object_get(data, "Forecast");
    char now[16];
    bool volume = strcmp(kilnctl_forecast_str(f, "Advance"), "volume") == 0;
    printf("forecast for %lld days from %s; warm-up %lld -> %lld recipients/day over %lld days "
           "(advance %s)\n", kilnctl_forecast_int(f, "Days"), kilnctl_forecast_date(f, "Now", now),
           kilnctl_forecast_int(f, "FirstDay"), kilnctl_forecast_int(f, "Target"),
           kilnctl_forecast_int(f, "RampDays"), kilnctl_forecast_str(f, "Advance"));
    if (volume)
        printf("NEEDED/DAY: what the set must send for every warming IP's day to count "
               "(half of each cap)\n");
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(f, "ConfigurationSets"), i, v) kilnctl_forecast_set(v, volume);
    printf("\n%-15s %-15s %-8s %-9s %12s  %s\n", "IP", "POOL", "STATE", "SCALING", "CAP TODAY",
           "REACHES TARGET");
    json_array_foreach(json_object_get(f, "Ips"), i, v) {
        char when[40] = "";
        if (json_is_string(json_object_get(v, "ReachesTargetAt")))
            snprintf(when, sizeof when, "%.10s (", kilnctl_forecast_str(v, "ReachesTargetAt"));
        printf("%-15s %-15s %-8s %-9s %12lld  %s%s%s\n", kilnctl_forecast_str(v, "Ip"),
               kilnctl_forecast_str(v, "PoolName"), kilnctl_forecast_str(v, "State"),
               json_is_true(json_object_get(v, "Managed")) ? "managed" : "standard",
               (long long)json_integer_value(json_array_get(json_object_get(v, "DailyCaps"), 0)),
               when, kilnctl_forecast_str(v, "ReachesTarget"), *when ? ")" : "");
    }
}
