/* control_json.h — the JSON objects of control's answers that another reader shows too:
 * `kilnctl ips`'s DedicatedIp, `kilnctl forecast`'s Forecast, `kilnctl queue --explain`'s
 * answer and one `kilnctl queue` row. The control commands (control_cmd.c,
 * control_forecast.c) and the web page's data (api/web.c) both build them here, so the page
 * shows exactly what kilnctl --json says. Loop thread (they read the scheduler and pools),
 * except control_json_queue_row, which is pure. */
#ifndef KILN_CONTROL_JSON_H
#define KILN_CONTROL_JSON_H

#include <jansson.h>
#include <stdint.h>

#include "pools/pools.h"
#include "scheduler/scheduler.h"

struct kiln_ctx;

/* One DedicatedIp object (SES GetDedicatedIps) plus kiln's own fields under "kiln". */
json_t *control_json_ip(const pools_ip_info *in, int64_t now);
/* {"Now", "Days", "Advance", ..., "ConfigurationSets", "Ips"}: the value of `forecast`'s
 * "Forecast" for set (NULL: every set) over days days; NULL and *err (malloc'd) when the
 * scheduler is not running, days is out of range or the set is unknown. */
json_t *control_json_forecast(struct kiln_ctx *ctx, const char *set, int days, char **err);
/* {"MessageId", "Recipients": [...]}: what each pending recipient of message id waits for;
 * NULL and *err (malloc'd) when it has none in the queue or the scheduler is not running. */
json_t *control_json_explain(struct kiln_ctx *ctx, const char *id, char **err);
/* {"Pool","ConfigurationSet","Domain","State","Recipients"}: one `queue` row. Pure. */
json_t *control_json_queue_row(const scheduler_queue_row *r);

#endif
