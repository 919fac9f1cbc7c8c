/* delivery.h — delivery sessions: the executor the scheduler hands its jobs to (see
 * scheduler/job.h for the contract). For each job it finds the next hop (static route,
 * or MX via mta/dns), reuses an idle connection or chooses a source IP of the
 * configuration set's pool (pools_choose, shaping, warm-up headroom) and opens an SMTP
 * client session (mta/smtp_client, STARTTLS with its own TLS client context), and reports
 * each outcome back to the scheduler. It owns dns, the TLS client context and the
 * sessions (the connection cache). */
#ifndef KILN_DELIVERY_H
#define KILN_DELIVERY_H

#include "scheduler/scheduler.h"

struct kiln_ctx;
typedef struct delivery delivery;

/* The executor of scheduler s (which must outlive it): the daemon wires it with
 * scheduler_set_exec(s, &delivery_exec_ops, d). DNS or TLS set-up failures are logged;
 * domains without a static route are then deferred, or STARTTLS is off. */
delivery *delivery_new(struct kiln_ctx *ctx, scheduler *s);
/* Before scheduler_free: open sessions end at once, pending lookups are dropped. */
void delivery_free(delivery *d);

extern const scheduler_exec_ops delivery_exec_ops;

/* ADDR (numeric text) was removed from (REMOVED) or added to the host's interfaces
 * (mta/addrwatch.h). A removed address that is one of the pools' source addresses takes
 * its IP down at once (health reason "address removed from the host"; it comes back by
 * the usual probe after its cool-down) and ends its open sessions: their transactions
 * fail as a lost connection and are retried from other IPs. Other addresses are ignored. */
void delivery_address_changed(delivery *dl, const char *addr, bool removed);

/* The identities' DNS view (mta/idstate.h), or NULL without a DNS resolver. */
struct idstate *delivery_identity(delivery *dl);
/* The reverse-DNS checks of kilnctl ip check (mta/ipcheck.h), or NULL without a resolver. */
struct ipchecker *delivery_ipcheck(delivery *dl);

#endif
