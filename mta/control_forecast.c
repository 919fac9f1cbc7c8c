/* control_forecast.c — the control command `forecast` (`kilnctl forecast [--set S] [--days
 * N]`, issue 15 item 2): the capacity forecast of pools/forecast.h over the scheduler's pools
 * state and the running config, as JSON. Arguments arrive checked by control_parse.c (days
 * in 1..FORECAST_MAX_DAYS); an unknown set is refused here with forecast_build's reason,
 * which names it and the known ones. Answers at once and logs one control.cmd line. Kept
 * apart from control_cmd.c, which is near the size limit; the JSON is built by
 * control_json.c (shared with the web page).
 *
 * The answer: {"Forecast": {Now, Days, Advance, FirstDay, Target, RampDays,
 *   ConfigurationSets: [{ConfigurationSet, PoolName, Scaling, SharedWith: [set...],
 *     Ips: [counted IP...], Excluded: [{Ip, State}], Daily: [{Day, Date, RecipientsPerDay,
 *     NeededPerDay (advance volume only)}]}],
 *   Ips: [{Ip, BindAddress, PoolName, Managed, State, Counted, WarmupStatus, DailyCaps: [N],
 *     NeededPerDay: [N] (advance volume, standard pools only), ReachesTarget ("done",
 *     "day D", "not within N days"), ReachesTargetDay (or null), ReachesTargetAt (ISO 8601,
 *     or null), Providers: [{Provider, DailyCap, Known, Held}] (managed only)}]}}
 * Ip is the address the world sees (public_address behind NAT), as in `ips`. */
#include "mta/control_internal.h"

#include <jansson.h>
#include <stdlib.h>

#include "mta/control_json.h"

void control_forecast_cmd(control_client *cl, const control_request *req)
{
    const char *cmd = "forecast";
    char *err = NULL;
    json_t *o = control_json_forecast(cl->ctl->ctx, req->set, req->days, &err);
    if (!o) {
        control_reply_error(cl, err);
        control_log_cmd(cl->ctl, cmd, req->set, err);
        free(err);
        return;
    }
    json_t *d = json_object();
    json_object_set_new(d, "Forecast", o);
    control_reply_ok(cl, d);
    control_log_cmd(cl->ctl, cmd, req->set, NULL);
}
