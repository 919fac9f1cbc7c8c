/* kilnctl_forecast.h — `kilnctl forecast`'s human output: the Forecast answer of the control
 * command (mta/control_forecast.c, pools/forecast.h) as one table per configuration set (a
 * row per day: date, recipients per day, and with volume advance what must be sent), then
 * one row per IP with its cap today and the day it reaches its target. */
#ifndef KILN_KILNCTL_FORECAST_H
#define KILN_KILNCTL_FORECAST_H

#include <jansson.h>

/* Prints data ({"Forecast": {...}}) on stdout; fields it lacks print as "?"/0. */
void kilnctl_forecast_print(json_t *data);

#endif
