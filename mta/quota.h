/* quota.h — the account's sending limits as pure state over an injected clock:
 * max_send_rate as a token bucket (capacity max(1, rate), refilled continuously) and
 * max_24h_send as a rolling 24-hour window of recipient counts in one-minute buckets.
 * Recipients are reserved at RCPT, committed when their message is in the spool, and
 * released when the transaction is abandoned. */
#ifndef KILN_QUOTA_H
#define KILN_QUOTA_H

#include <stdbool.h>
#include <stdint.h>

typedef struct quota quota;

/* max_rate: recipients per second, -1 = unlimited; max_24h: recipients per 24 h, -1 = unlimited. */
quota *quota_new(double max_rate, int64_t max_24h, int64_t now_ms);
void quota_free(quota *q);
void quota_set_limits(quota *q, double max_rate, int64_t max_24h, int64_t now_ms);

/* Takes one token; false (nothing taken) if the bucket is empty. */
bool quota_rate_take(quota *q, int64_t now_ms);
/* True if quota_rate_take at the same now_ms would succeed; takes nothing. */
bool quota_rate_available(quota *q, int64_t now_ms);
/* Reserves one recipient against the 24 h quota; false if sent + reserved would exceed it. */
bool quota_daily_reserve(quota *q, int64_t now_ms);
void quota_daily_release(quota *q, unsigned n);
/* Moves n reserved recipients into the window at now_ms. */
void quota_daily_commit(quota *q, unsigned n, int64_t now_ms);
/* Start-up: counts n recipients sent at at_ms (ignored if older than 24 h). */
void quota_daily_load(quota *q, int64_t at_ms, unsigned n, int64_t now_ms);

int64_t quota_sent_24h(quota *q, int64_t now_ms);
/* Recipients reserved and neither committed nor released yet. */
int64_t quota_pending(const quota *q);
double quota_max_rate(const quota *q);
int64_t quota_max_24h(const quota *q);

#endif
