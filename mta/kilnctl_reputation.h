/* kilnctl_reputation.h — `kilnctl reputation`'s human output: the ReputationMetrics answer
 * of the control command (mta/control_cmd.c, store/reputation.h) as a two-row table, bounce
 * and complaint, with rate, count, attempts, status and SES's thresholds. */
#ifndef KILN_KILNCTL_REPUTATION_H
#define KILN_KILNCTL_REPUTATION_H

#include <jansson.h>

/* Prints data ({"ReputationMetrics": {...}}) on stdout; fields it lacks print as "?"/0. */
void kilnctl_reputation_print(json_t *data);

#endif
