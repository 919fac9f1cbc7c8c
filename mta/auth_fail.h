/* auth_fail.h — failed AUTH attempts counted per client (submission.auth_failures): after
 * `max` failures inside `window` a client is blocked until that window (which opened at
 * its first counted failure) has passed. IPv4 clients are counted per address, IPv6 clients
 * per /64 (one host usually holds a whole /64).
 *
 * Promises: bounded memory — at most AUTH_FAIL_TABLE_MAX clients are tracked; expired
 * entries are dropped first, and when every entry is live the one whose window opened
 * earliest is evicted. Pure data structure: time is passed in. */
#ifndef KILN_AUTH_FAIL_H
#define KILN_AUTH_FAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_FAIL_TABLE_MAX 10000

typedef struct auth_fail auth_fail;

auth_fail *auth_fail_new(void);
void auth_fail_free(auth_fail *t);
/* True if ip has had max or more failures in its current window (max/window from the
 * caller's config, so a reload applies at once). */
bool auth_fail_blocked(auth_fail *t, const char *ip, int max, int64_t window_ms, int64_t now_ms);
/* Counts one failure for ip; returns its count in the current window. */
int auth_fail_record(auth_fail *t, const char *ip, int64_t window_ms, int64_t now_ms);
/* Clients tracked now. */
size_t auth_fail_size(const auth_fail *t);

#endif
