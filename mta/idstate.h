/* idstate.h — kilnd's view of its identities' DNS (mta/identity_check.c asks): whether each
 * DKIM selector's record is live (Easy DKIM keys sign only then: dkim_keys_set_live) and
 * whether each custom MAIL FROM domain has its MX (outbound.c uses it only then), checked
 * shortly after start, every IDSTATE_RECHECK_S and at each kilnctl identity status, whose
 * answer (SES GetEmailIdentity's shape, plus the text table) it builds.
 *
 * Promises: a temporary DNS failure changes nothing that was known; every status request
 * is answered exactly once, also when kilnd stops first (then with an error). */
#ifndef KILN_IDSTATE_H
#define KILN_IDSTATE_H

#include <jansson.h>

#include "base/kiln.h"
#include "mta/dns.h"
#include "mta/outbound.h"

#define IDSTATE_FIRST_CHECK_S 2     /* after start */
#define IDSTATE_RECHECK_S 600

typedef struct idstate idstate;

idstate *idstate_new(kiln_ctx *ctx, dns *d);
/* Answers pending status requests with an error, cancels the lookups, frees. */
void idstate_free(idstate *id);

/* outbound_in.mx_state: what the last check said of a MAIL FROM domain's MX. */
outbound_mx_state idstate_mx_state_op(void *arg, const char *mail_from_domain);

/* The answer to kilnctl identity status: data (a new reference: GetEmailIdentity's fields
 * for one identity, {"Identities": [...]} for all, and "Text" for the table), or NULL and
 * error. */
typedef void (*idstate_status_cb)(void *arg, json_t *data, const char *error);
/* Checks ident (an account.identities entry, or an address or subdomain under one; NULL:
 * every identity) now. -1 with *err (malloc'd) when ident is not verified: cb never runs. */
int idstate_status(idstate *id, const char *ident, idstate_status_cb cb, void *arg, char **err);

/* Checks one domain soon (after kilnctl identity dkim generate or rotate). */
void idstate_recheck(idstate *id);

#endif
