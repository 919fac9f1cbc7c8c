/* mta_sts.h — MTA-STS (RFC 8461) policies of recipient domains for delivery: the
 * `_mta-sts.<domain>` TXT record through mta/dns, the policy fetched over HTTPS from
 * https://mta-sts.<domain>/.well-known/mta-sts.txt through libcurl on the loop
 * (mta/curl_ev), the certificate verified against delivery.tls_ca_file or the system
 * store, and a memory cache of policies until their max_age.
 *
 * Promises: never blocks the loop; the policy host's address comes from kiln's own
 * resolver (dns.servers), handed to libcurl with CURLOPT_RESOLVE; a cached policy is used
 * while its TXT id is unchanged, refetched when the id changes, and still used (until it
 * expires) when the TXT lookup or a refetch fails (RFC 8461 section 5.1); with no valid
 * policy the domain has none. Redirects are not followed; a body over 64KB, a status other
 * than 200 or a media type other than text/plain is a failed fetch. */
#ifndef KILN_MTA_STS_H
#define KILN_MTA_STS_H

#include "base/config.h"
#include "base/log.h"
#include "mta/curl_ev.h"
#include "mta/dns.h"
#include "mta/sts_policy.h"

struct ev_loop;
typedef struct mta_sts mta_sts;

/* policy: the domain's policy (valid only during the call: copy what you keep), or NULL
 * when it has none; note: what happened, for logs ("cached id 2024a", "fetched id 2024b",
 * "no _mta-sts TXT record", "fetch failed: ..."). Always called from the loop, never from
 * inside mta_sts_get. */
typedef void (*mta_sts_cb)(void *arg, const sts_policy *policy, const char *note);

mta_sts *mta_sts_new(struct ev_loop *loop, klog *lg, dns *d, curl_ev *http);
/* The policy of domain, under cfg's delivery.mta_sts and delivery.tls_ca_file (cfg must
 * live until the callback: kilnd passes its current config, referenced meanwhile). */
void mta_sts_get(mta_sts *s, config *cfg, const char *domain, mta_sts_cb cb, void *arg);
/* Pending callbacks are dropped. Call after dns_free of its dns. */
void mta_sts_free(mta_sts *s);

#endif
