/* quota.h — the account's sending limits as pure state over an injected clock:
 * max_send_rate as a token bucket (capacity max(1, rate), refilled continuously) and
 * max_24h_send as a rolling 24-hour window of recipient counts in one-minute buckets.
 * Recipients are reserved at RCPT, committed when their message is in the spool, and
 * released when the transaction is abandoned.
 *
 * In a cluster the node either leases its tokens and slots from the account
 * (QUOTA_LEASED: mta/cluster_limits.c asks Redis and calls the grant functions) or holds
 * its share of the limits alone (QUOTA_LOCAL: Redis down); see quota.c. */
#ifndef KILN_QUOTA_H
#define KILN_QUOTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct quota quota;

/* A leased rate token lapses this long after its grant. */
#define QUOTA_LEASE_TTL_MS 1000

typedef enum { QUOTA_LOCAL = 0, QUOTA_LEASED } quota_mode;

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

/* ---- cluster ---- */
/* share (0 < share <= 1) is the fraction of the limits QUOTA_LOCAL holds; a node alone has 1.
 * Switching from QUOTA_LEASED to QUOTA_LOCAL starts the local bucket empty. Once called,
 * recipients committed in QUOTA_LOCAL are kept as unreported. */
void quota_set_mode(quota *q, quota_mode mode, double share, int64_t now_ms);
quota_mode quota_get_mode(const quota *q);
double quota_share(const quota *q);
/* n rate tokens leased from the account at now_ms (with those still unlapsed, they lapse
 * QUOTA_LEASE_TTL_MS later). */
void quota_rate_grant(quota *q, int64_t n, int64_t now_ms);
double quota_rate_leased(quota *q, int64_t now_ms);
/* n 24 h slots leased from the account (already counted in its window). */
void quota_daily_grant(quota *q, int64_t n);
int64_t quota_daily_leased(const quota *q);
/* The account lost what it had leased to this node (Redis lost its data): unused slots and
 * tokens are dropped, and reserved slots from leases count as not leased (their commit is
 * reported). */
void quota_leases_void(quota *q);
/* Takes every unused leased slot, to give back to the account; returns how many. */
int64_t quota_daily_unlease(quota *q);
/* Minutes (and counts) of recipients committed in QUOTA_LOCAL not yet reported to the
 * account, at most max of them; quota_unreported_clear once the account has them. */
size_t quota_unreported(quota *q, int64_t now_ms, int64_t *minutes, int64_t *counts,
                        size_t max);
void quota_unreported_clear(quota *q);
/* The account has these (as quota_unreported listed them); later ones stay unreported. */
void quota_unreported_sub(quota *q, const int64_t *minutes, const int64_t *counts, size_t n);
/* Every minute of the window with recipients committed on this node, as above. */
size_t quota_sent_minutes(quota *q, int64_t now_ms, int64_t *minutes, int64_t *counts,
                          size_t max);

#endif
