/* identity_check.h — is one sending identity ready in DNS? (kilnctl identity status, kilnd)
 *
 * What is looked up, all through kiln's own resolver (mta/dns.h dns_query):
 *  - `<selector>._domainkey.<domain>` TXT for each DKIM key kiln signs (or will sign) with:
 *    the key record must carry the same p= and k= as kiln's key (RFC 6376 section 3.6.1);
 *  - the custom MAIL FROM domain's MX (present, at the expected host if one is given) and
 *    its SPF record (exactly one v=spf1 record, authorizing every IP of the sending pool
 *    through ip4:/ip6: mechanisms; RFC 7208);
 *  - `_dmarc.<domain>` TXT, else `_dmarc.<organizational domain>` (RFC 7489 section 6.6.3),
 *    and whether kiln's mail would be aligned with it (DKIM d= the identity's domain when
 *    signing; the MAIL FROM domain under aspf=).
 * Every record gets a status (PUBLISHED, MISSING, WRONG, TEMPFAIL, UNKNOWN), the name
 * queried, what was found, one human reason and, when the operator has something to do,
 * the value to publish; the whole maps onto SES v2's GetEmailIdentity (DkimAttributes,
 * MailFromAttributes) plus a `kiln` object with these details.
 *
 * Pure evaluators (answers as text in, records out: identity_eval.c, identity_spf.c; unit
 * tested without DNS and fuzzed), the runner (identity_check.c) that asks every question
 * at once on the loop and hands the assembled result to one callback, and the reports
 * (identity_report.c). Promises: a lookup that fails is TEMPFAIL ("not known yet"), never
 * WRONG; kiln never claims alignment or SPF authorization it did not establish (a, mx,
 * include, exists, ptr and redirect= are not followed: such an SPF verdict is UNKNOWN and
 * says so; relaxed SPF alignment is only "equal to or a subdomain of the identity's
 * domain", as there is no Public Suffix List). No DKIM crypto here: keys come in as their
 * p= text. */
#ifndef KILN_IDENTITY_CHECK_H
#define KILN_IDENTITY_CHECK_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mta/dns.h"

/* ---------- what kiln needs ---------- */

typedef struct identity_dkim_selector {
    const char *selector;        /* "s1": the record is s1._domainkey.<domain> */
    const char *k;               /* the k= kiln's key needs: "rsa" or "ed25519" */
    const char *p;               /* the public key, base64 (dkim_key_public_b64) */
} identity_dkim_selector;

typedef struct identity_check_req {
    const char *identity;        /* "example.com", or "user@example.com" (its domain is checked) */
    const identity_dkim_selector *selectors;   /* kiln's keys for this identity (may be 0) */
    size_t nselectors;
    bool signing_enabled;        /* kiln DKIM-signs this identity's mail (d= its domain) */
    const char *mail_from_domain;   /* custom MAIL FROM domain; NULL: none (MX/SPF not checked) */
    const char *mail_from_mx;    /* the host its MX must name; NULL: any MX will do */
    const char *server_hostname; /* named in the suggested MX when mail_from_mx is NULL */
    const char *const *pool_ips; /* the sending pool's IPv4/IPv6 literals SPF must authorize:
                                    the addresses receivers see (an IP's public_address
                                    behind NAT, never the private one kiln binds) */
    size_t npool_ips;
} identity_check_req;

/* ---------- what was found ---------- */

typedef enum {
    IDENTITY_PUBLISHED = 0,      /* in place as kiln needs it */
    IDENTITY_MISSING,            /* not in DNS: NXDOMAIN, no record of the type, none of the kind */
    IDENTITY_WRONG,              /* present, but not what kiln needs (the reason says what) */
    IDENTITY_TEMPFAIL,           /* the lookup failed: not known yet */
    IDENTITY_UNKNOWN,            /* present, but kiln cannot tell without resolving further */
} identity_status;
/* "PUBLISHED", "MISSING", "WRONG", "TEMPFAIL", "UNKNOWN" */
const char *identity_status_name(identity_status s);

/* SES's DkimStatus / MailFromDomainStatus values. */
typedef enum {
    IDENTITY_SES_PENDING = 0,
    IDENTITY_SES_SUCCESS,
    IDENTITY_SES_FAILED,
    IDENTITY_SES_TEMPORARY_FAILURE,
    IDENTITY_SES_NOT_STARTED,    /* DkimStatus only */
} identity_ses_status;
/* "PENDING", "SUCCESS", "FAILED", "TEMPORARY_FAILURE", "NOT_STARTED" */
const char *identity_ses_status_name(identity_ses_status s);

typedef enum { IDENTITY_REC_DKIM, IDENTITY_REC_MX, IDENTITY_REC_SPF, IDENTITY_REC_DMARC } identity_rec_kind;
/* "DKIM", "MX", "SPF", "DMARC" */
const char *identity_rec_kind_name(identity_rec_kind k);

#define IDENTITY_FOUND_MAX 200   /* longer records are shown as head "..." tail */

typedef struct identity_record {
    identity_rec_kind kind;
    char *selector;              /* DKIM: the selector; else NULL */
    char *name;                  /* the name looked at (DMARC: where the record was found) */
    const char *type;            /* "TXT" or "MX" (static) */
    char *found;                 /* what DNS holds there ("10 mx.example.com", TXT records
                                    joined by " | ", each cut to IDENTITY_FOUND_MAX); NULL: nothing */
    identity_status status;
    char *reason;                /* one sentence for a person; never NULL */
    char *publish;               /* the value to publish at name/type ("v=DKIM1; k=rsa; p=...",
                                    "10 mx.example.com"); NULL: nothing to publish */
} identity_record;

typedef struct identity_check_result {
    char *identity;              /* as asked */
    char *domain;                /* its domain, lower case, no final dot */
    bool is_address;             /* the identity is an email address (IdentityType EMAIL_ADDRESS) */
    bool signing_enabled;
    char **selectors;            /* the selectors asked about, in order (DkimAttributes.Tokens) */
    size_t nselectors;
    char *mail_from_domain;      /* NULL: none */
    /* DKIM (one per selector, in order), then MX and SPF of the MAIL FROM domain (when
     * there is one), then DMARC. */
    identity_record *records;
    size_t nrecords;
    identity_ses_status dkim_status;      /* NOT_STARTED without selectors; else FAILED if a
                                             record is WRONG, TEMPORARY_FAILURE if one failed,
                                             PENDING if one is missing, SUCCESS if all are in */
    identity_ses_status mail_from_status; /* from the MX alone (SES's rule): SUCCESS, PENDING
                                             (no MX yet), FAILED (null MX, other host),
                                             TEMPORARY_FAILURE; meaningless without a domain */
} identity_check_result;

void identity_check_result_free(identity_check_result *r);
/* The record of kind (and, for DKIM, selector); NULL if the result has none. */
const identity_record *identity_check_find(const identity_check_result *r, identity_rec_kind kind,
                                           const char *selector);

/* ---------- pure evaluators (identity_eval.c, identity_spf.c) ---------- */

typedef enum {
    IDENTITY_ANS_RECORDS = 0,    /* records of the type came back (txt/mx) */
    IDENTITY_ANS_NXDOMAIN,       /* the name does not exist */
    IDENTITY_ANS_NODATA,         /* the name exists without records of the type */
    IDENTITY_ANS_TEMPFAIL,       /* the lookup failed (error says why) */
} identity_ans_kind;

typedef struct identity_mx {
    const char *host;            /* "" or "." for a null MX */
    int preference;
} identity_mx;

/* One DNS answer as the evaluators read it: TXT records (each record's character-strings
 * concatenated, RFC 7208 section 3.3) or MX records. */
typedef struct identity_answer {
    identity_ans_kind kind;
    const char *const *txt;
    size_t ntxt;
    const identity_mx *mx;
    size_t nmx;
    const char *error;           /* TEMPFAIL: why */
} identity_answer;

/* Each evaluator fills *rec entirely (rec's previous content is not read or freed). */
void identity_eval_dkim(identity_record *rec, const char *domain, const identity_dkim_selector *sel,
                        const identity_answer *a);
/* Returns the MailFromDomainStatus. expect_host NULL: any MX will do (the suggested MX
 * then names fallback_host, or a placeholder when that is NULL too). */
identity_ses_status identity_eval_mx(identity_record *rec, const char *mail_from_domain,
                                     const identity_answer *a, const char *expect_host,
                                     const char *fallback_host);
void identity_eval_spf(identity_record *rec, const char *mail_from_domain, const identity_answer *a,
                       const char *const *pool_ips, size_t npool_ips);

/* What DMARC alignment rests on (RFC 7489 section 3.1). */
typedef struct identity_dmarc_ctx {
    const char *domain;          /* the identity's (From) domain */
    bool signing_enabled;        /* kiln signs with d=domain */
    identity_ses_status dkim;    /* the DKIM records' status */
    const char *mail_from_domain;   /* NULL: none configured */
    identity_status spf;         /* its SPF record's status */
} identity_dmarc_ctx;
/* at_domain: the _dmarc.<domain> answer; at_org: the _dmarc.<org> answer, read only when
 * at_domain holds no DMARC record and org differs from domain (NULL: not asked). */
void identity_eval_dmarc(identity_record *rec, const identity_dmarc_ctx *ctx,
                         const identity_answer *at_domain, const char *org,
                         const identity_answer *at_org);

/* The organizational domain, by a simple rule: the last two labels ("a.b.example.com" ->
 * "example.com"); no Public Suffix List, so "example.co.uk" gives "co.uk". malloc'd. */
char *identity_org_domain(const char *domain);
/* The domain of an identity: the part after the last '@' of an address, or the identity
 * itself; lower case, without a final dot. malloc'd. */
char *identity_domain_of(const char *identity);

/* Every answer the runner collects, in the order of identity_check_result's records. */
typedef struct identity_answers {
    const identity_answer *dkim; /* one per req->selectors */
    identity_answer mx, spf;     /* of req->mail_from_domain (when set) */
    identity_answer dmarc;       /* _dmarc.<domain> */
    identity_answer dmarc_org;   /* _dmarc.<organizational domain> (when it differs) */
} identity_answers;
/* The whole verdict from the answers (pure). Free with identity_check_result_free. */
identity_check_result *identity_check_assemble(const identity_check_req *req, const identity_answers *a);

/* ---------- the runner (identity_check.c) ---------- */

typedef struct identity_check identity_check;
/* r belongs to the callee: free it with identity_check_result_free. */
typedef void (*identity_check_cb)(void *arg, identity_check_result *r);

/* Asks every question at once (DKIM TXT per selector, MX and TXT of the MAIL FROM domain,
 * _dmarc TXT of the domain and of its organizational domain). req is copied. cb runs
 * exactly once, from the loop (never inside this call), when every answer is in (each
 * bounded by dns.timeout); the handle is gone when it runs. */
identity_check *identity_check_start(dns *d, const identity_check_req *req, identity_check_cb cb,
                                     void *arg);
/* Before cb has run: cb never runs, the pending queries are taken back, all is freed. */
void identity_check_cancel(identity_check *c);

/* ---------- reports ---------- */

/* What GetEmailIdentity says that DNS does not. */
typedef struct identity_json_opts {
    bool verified_for_sending;   /* VerifiedForSendingStatus (kiln's configured identities: true) */
    bool easy_dkim;              /* SigningAttributesOrigin AWS_SES (Easy DKIM); false: EXTERNAL */
    int current_key_bits;        /* RSA key bits: 1024/2048 give CurrentSigningKeyLength; any
                                    other value (0, Ed25519 only, 3072...) leaves it out: SES's
                                    enum has no other values */
    int next_key_bits;           /* Easy DKIM's next key: NextSigningKeyLength, same rule */
    int64_t last_key_generation_s;  /* LastKeyGenerationTimestamp (epoch seconds); 0: left out */
    bool reject_on_mx_failure;   /* BehaviorOnMxFailure REJECT_MESSAGE; false: USE_DEFAULT_VALUE */
} identity_json_opts;

/* The GetEmailIdentity response (botocore's sesv2 GetEmailIdentityResponse field names):
 * IdentityType, FeedbackForwardingStatus (true), VerifiedForSendingStatus,
 * VerificationStatus (SUCCESS when verified for sending, else PENDING), DkimAttributes
 * {SigningEnabled, Status, Tokens (the selectors), SigningAttributesOrigin,
 * CurrentSigningKeyLength, NextSigningKeyLength, LastKeyGenerationTimestamp},
 * MailFromAttributes {MailFromDomain, MailFromDomainStatus, BehaviorOnMxFailure} (left out
 * without a MAIL FROM domain: SES requires all three), and "kiln": {Identity, Domain,
 * Records: [{Kind, Name, Type, Selector?, Found?, Status, Reason, Publish?: {Name, Type,
 * Value}}]}. o NULL: every option false / 0. A new reference. */
json_t *identity_check_to_json(const identity_check_result *r, const identity_json_opts *o);
/* For kilnctl's table: a header line, one line per record ("STATUS  NAME  TYPE  reason"),
 * then one "publish: NAME TYPE VALUE" line per record to publish (TXT values quoted).
 * malloc'd, ends with a newline. */
char *identity_check_to_text(const identity_check_result *r);

#endif
