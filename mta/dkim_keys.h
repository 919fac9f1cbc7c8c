/* dkim_keys.h — the DKIM keys kilnd signs with, per identity domain: BYODKIM keys named by
 * the config (account.identities[].dkim, read at start and at each reload) and Easy DKIM keys
 * that kilnctl identity dkim generate creates in the spool (<spool>/dkim/<domain>/, mode
 * 0600), with the selector in use and whether each selector's DNS record was seen live.
 *
 * Promises:
 *   - A key file that does not parse, is RSA under 1024 bits or neither RSA nor Ed25519 is
 *     an error naming the identity and the file: kilnd does not start, a reload changes
 *     nothing (dkim_keys_load).
 *   - Easy DKIM keys sign only once their selector's record was seen live
 *     (dkim_keys_set_live, from mta/identity.c's DNS checks); BYODKIM keys sign at once.
 *   - Generated keys are written 0600 before anything else learns of them; the selector in
 *     use survives restarts (<domain>/active).
 *   - Everything runs on the loop thread; nothing here touches the network. */
#ifndef KILN_DKIM_KEYS_H
#define KILN_DKIM_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/config.h"
#include "base/log.h"
#include "mta/dkim.h"

typedef struct dkim_keys dkim_keys;

dkim_keys *dkim_keys_new(const char *spool_dir, klog *lg);
void dkim_keys_free(dkim_keys *k);

/* (Re)loads the BYODKIM keys of cfg and the Easy DKIM store. All or nothing: on error
 * *err names the identity and file and the previous keys stay. */
int dkim_keys_load(dkim_keys *k, const config *cfg, char **err);

/* One selector of a domain, as kilnctl identity status shows it. */
typedef struct dkim_keys_sel {
    char selector[64];
    dkim_alg alg;
    int bits;
    bool easy;               /* Easy DKIM (generated) rather than BYODKIM */
    bool active;             /* kiln signs with it (or will, once live) */
    bool live;               /* its DNS record was seen matching the key */
    int64_t created_ms;      /* Easy DKIM: when generated; 0: unknown */
    char *txt;               /* the record to publish: "v=DKIM1; k=...; p=..." */
    char *p;                 /* its p= value */
} dkim_keys_sel;

/* The selectors known for domain (lower-case), active ones first; *n of them (malloc'd,
 * free with dkim_keys_sels_free). */
dkim_keys_sel *dkim_keys_selectors(dkim_keys *k, const char *domain, size_t *n);
void dkim_keys_sels_free(dkim_keys_sel *v, size_t n);

/* What signs a message whose From is from_addr: up to two signers (RSA first) for the domain
 * of the identity that verifies it (config_identity_index; an address identity uses its
 * domain's keys). Returns how many (0: none usable now). *id_index gets the identity (-1:
 * none); *required says whether the identity requires signing. The signers point into k and
 * stay valid until the next dkim_keys_load, generate or rotate. */
size_t dkim_keys_signers(dkim_keys *k, const config *cfg, const char *from_addr,
                         dkim_signer out[2], int *id_index, bool *required);

/* Easy DKIM: makes an RSA 2048 key (and with ed25519 an Ed25519 key under selector + "e")
 * for domain under selector (NULL: kiln<YYYYMMDD>, or -2, -3... when taken). The first
 * selector of a domain becomes the active one; later ones wait for rotate. *sel_out gets
 * the selector (malloc'd). */
int dkim_keys_generate(dkim_keys *k, const config *cfg, const char *domain, const char *selector,
                       bool ed25519, char **sel_out, char **err);
/* Easy DKIM: signs with the newest selector that is not the active one, provided its record
 * was seen live; the old one stays (its record must stay published until mail signed with
 * it is delivered). *sel_out gets the new selector. */
int dkim_keys_rotate(dkim_keys *k, const char *domain, char **sel_out, char **err);
/* Records what DNS said of domain's selector (mta/identity.c). */
void dkim_keys_set_live(dkim_keys *k, const char *domain, const char *selector, bool live);
/* Domains with Easy DKIM keys (for the periodic DNS check); *n of them, malloc'd strings. */
char **dkim_keys_easy_domains(dkim_keys *k, size_t *n);

/* --check-config: one warning per identity that would send mail no DKIM key of its domain
 * signs (DMARC alignment then rests on SPF alone, or nothing). *n of them, malloc'd. */
char **dkim_keys_alignment_warnings(dkim_keys *k, const config *cfg, size_t *n);

#endif
