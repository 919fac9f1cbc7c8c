/* api_account.c — the SES v2 API's read-only account operations: GetAccount, ListEmailIdentities,
 * GetEmailIdentity, ListConfigurationSets, GetConfigurationSet. Shapes as botocore's sesv2
 * 2019-09-27 model (timestamps none here). What kiln answers where SES has a notion kiln
 * lacks, and why:
 *
 *  - GetAccount: SendQuota is the quota state kilnctl quota shows (mta/quota.h): -1 for an
 *    unlimited Max24HourSend (as SES documents) and, by the same convention, for an unlimited
 *    MaxSendRate. SendingEnabled is always true (kiln has no paused state), EnforcementStatus
 *    "HEALTHY", DedicatedIpAutoWarmupEnabled true (new IPs of standard pools warm up on
 *    their own, pools/warmup.c), ProductionAccessEnabled is account.mode == production,
 *    SuppressionAttributes the account.suppression.reasons. Details and VdmAttributes are
 *    left out (no review process, no VDM).
 *  - Identities: account.identities, all verified (VerificationStatus SUCCESS, SendingEnabled
 *    true). GetEmailIdentity runs the same DNS check round as `kilnctl identity status`
 *    (mta/idstate.h) and answers once every lookup is in, with SES's members only (kiln's
 *    per-record details and the text table are kilnctl's). An identity is found by exact
 *    (case-insensitive) name: an address under a verified domain is not an identity.
 *  - Configuration sets: DeliveryOptions.TlsPolicy is REQUIRE for tls_policy require and
 *    verify (never in clear text), OPTIONAL for optional, dane and mta-sts (both fall back to
 *    optional where the domain publishes no TLSA records or no enforce policy, so SES's
 *    "REQUIRE: only delivered if a TLS connection can be established" would be untrue).
 *    MaxDeliverySeconds is SES's current member (newer than Debian's botocore model, whose
 *    parser skips it). ReputationMetricsEnabled false (no per-set reputation metrics),
 *    SuppressionOptions the account's reasons (kiln has no per-set override), Tags [].
 *  - Scope: an access key scoped to identities or configuration sets (api.access_keys[].scope,
 *    as submission.auth's) lists only those, and gets NotFoundException for the others, as if
 *    they did not exist (SES would answer AccessDenied through IAM; kiln does not reveal names
 *    outside the scope). An identity is within the scope when the key may send as it or as
 *    something under it.
 *  - Paging: lists are sorted by name; NextToken carries the last name shown (api_token.c), so
 *    a page after a reload continues after that name. PageSize 1..1000 (0 or absent: 100).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api_int.h"
#include "base/util.h"
#include "mta/delivery.h"
#include "mta/idstate.h"
#include "mta/policy.h"
#include "mta/quota.h"

#define API_ACCOUNT_PAGE_DEFAULT 100
#define API_ACCOUNT_PAGE_MAX 1000

/* Config names are checked UTF-8/ASCII; this never hands jansson's NULL to a setter. */
static json_t *api_account_jstr(const char *s)
{
    json_t *j = json_string(s ? s : "");
    return j ? j : json_string("");
}

/* A number as a JSON integer when integral (SES's doubles print as 200, not 200.0). */
static json_t *api_account_number(double v)
{
    if (v > -9e15 && v < 9e15 && v == (double)(json_int_t)v) return json_integer((json_int_t)v);
    return json_real(v);
}

static json_t *api_account_reasons(const config *cfg)
{
    json_t *a = json_array();
    if (cfg->suppression_reasons & CONFIG_SUPPRESS_BOUNCE) json_array_append_new(a, json_string("BOUNCE"));
    if (cfg->suppression_reasons & CONFIG_SUPPRESS_COMPLAINT)
        json_array_append_new(a, json_string("COMPLAINT"));
    return a;
}

/* ---- paging ---- */

static int api_account_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorts names and picks the page after `after`: [*from, *to); the NextToken (malloc'd) when
 * names remain, else NULL. */
static char *api_account_page(const char *op, const char **names, size_t n, size_t page,
                              const char *after, size_t *from, size_t *to)
{
    if (n) qsort(names, n, sizeof *names, api_account_cmp);
    size_t i = 0;
    if (after)
        while (i < n && strcmp(names[i], after) <= 0) i++;
    *from = i;
    *to = n - i > page ? i + page : n;
    return *to < n ? api_next_token(op, names[*to - 1]) : NULL;
}

/* ---- scope ---- */

/* True when scope entry e (a domain or an address) is identity ident or lies under it. */
static bool api_account_entry_under(const char *e, const char *ident)
{
    if (strcasecmp(e, ident) == 0) return true;
    if (strchr(ident, '@')) return false;
    const char *d = strchr(e, '@') ? util_addr_domain(e) : e;
    size_t dl = strlen(d), il = strlen(ident);
    if (dl == il) return strcasecmp(d, ident) == 0;
    return dl > il && d[dl - il - 1] == '.' && strcasecmp(d + dl - il, ident) == 0;
}

/* May the key see identity ident (an account.identities entry)? */
static bool api_account_may_see_identity(const config_access_key *key, const char *ident)
{
    if (!key || !key->scope.scoped_identities) return true;
    const config_auth_user *u = &key->scope;
    /* the identity lies within the scope: the key may send as it (a domain: as any of its addresses) */
    char *probe = strchr(ident, '@') ? util_strdup(ident) : util_asprintf("postmaster@%s", ident);
    bool ok = policy_user_may_send_as(u, probe);
    free(probe);
    /* or part of the scope lies within the identity */
    for (size_t i = 0; !ok && i < u->nidentities; i++) ok = api_account_entry_under(u->identities[i], ident);
    return ok;
}

static bool api_account_may_see_set(const config_access_key *key, const char *set)
{
    return !key || policy_user_may_use_set(&key->scope, set);
}

/* ---- GetAccount ---- */

void api_op_get_account(api_call *c)
{
    const config *cfg = c->cfg;
    double max24 = (double)cfg->max_24h_send, rate = cfg->max_send_rate, sent = 0;
    if (c->ctx->quota) {
        max24 = (double)quota_max_24h(c->ctx->quota);
        rate = quota_max_rate(c->ctx->quota);
        sent = (double)quota_sent_24h(c->ctx->quota, c->now_ms);
    }
    json_t *q = json_object();
    json_object_set_new(q, "Max24HourSend", api_account_number(max24 < 0 ? -1 : max24));
    json_object_set_new(q, "MaxSendRate", api_account_number(rate < 0 ? -1 : rate));
    json_object_set_new(q, "SentLast24Hours", api_account_number(sent));
    json_t *sup = json_object();
    json_object_set_new(sup, "SuppressedReasons", api_account_reasons(cfg));
    json_t *o = json_object();
    json_object_set_new(o, "DedicatedIpAutoWarmupEnabled", json_true());
    json_object_set_new(o, "EnforcementStatus", json_string("HEALTHY"));
    json_object_set_new(o, "ProductionAccessEnabled", json_boolean(cfg->mode == CONFIG_MODE_PRODUCTION));
    json_object_set_new(o, "SendQuota", q);
    json_object_set_new(o, "SendingEnabled", json_true());
    json_object_set_new(o, "SuppressionAttributes", sup);
    api_ok(c, o);
}

/* ---- identities ---- */

void api_op_list_email_identities(api_call *c)
{
    const char *op = "ListEmailIdentities";
    const config *cfg = c->cfg;
    size_t page;
    char *after;
    if (api_page_args(c, API_ACCOUNT_PAGE_DEFAULT, API_ACCOUNT_PAGE_MAX,
                      "InvalidNextTokenException", &page, &after) < 0)
        return;
    const char **names = util_calloc(cfg->nidentities ? cfg->nidentities : 1, sizeof *names);
    size_t n = 0;
    for (size_t i = 0; i < cfg->nidentities; i++)
        if (api_account_may_see_identity(c->key, cfg->identities[i])) names[n++] = cfg->identities[i];
    size_t from, to;
    char *next = api_account_page(op, names, n, page, after, &from, &to);
    json_t *arr = json_array();
    for (size_t i = from; i < to; i++) {
        json_t *e = json_object();
        json_object_set_new(e, "IdentityType", json_string(strchr(names[i], '@') ? "EMAIL_ADDRESS" : "DOMAIN"));
        json_object_set_new(e, "IdentityName", api_account_jstr(names[i]));
        json_object_set_new(e, "SendingEnabled", json_true());
        json_object_set_new(e, "VerificationStatus", json_string("SUCCESS"));
        json_array_append_new(arr, e);
    }
    json_t *o = json_object();
    json_object_set_new(o, "EmailIdentities", arr);
    if (next) json_object_set_new(o, "NextToken", json_string(next));
    free(next);
    free(names);
    free(after);
    api_ok(c, o);
}

/* The DNS round is over (idstate's callback; data borrowed): SES's members of it. */
static void api_account_identity_answer(void *arg, json_t *data, const char *error)
{
    api_call *c = arg;
    if (error || !json_is_object(data)) {
        api_error(c, 503, "ServiceUnavailable", "%s", error ? error : "the identity check gave no answer");
        return;
    }
    json_t *o = json_copy(data);
    json_object_del(o, "kiln");
    json_object_del(o, "Text");
    json_object_set_new(o, "Policies", json_object());
    json_object_set_new(o, "Tags", json_array());
    api_ok(c, o);
}

void api_op_get_email_identity(api_call *c)
{
    const config *cfg = c->cfg;
    const char *want = api_in_str(c, "EmailIdentity");
    const char *ident = NULL;
    for (size_t i = 0; want && i < cfg->nidentities && !ident; i++)
        if (strcasecmp(cfg->identities[i], want) == 0) ident = cfg->identities[i];
    if (!ident || !api_account_may_see_identity(c->key, ident)) {
        API_NOT_FOUND(c, "Email identity %s does not exist.", want ? want : "");
        return;
    }
    struct idstate *id = c->ctx->delivery ? delivery_identity(c->ctx->delivery) : NULL;
    if (!id) {
        api_error(c, 503, "ServiceUnavailable",
                  "no DNS resolver: kilnd cannot look the records up (see the log's scheduler.dns)");
        return;
    }
    char *err = NULL;
    /* idstate_status answers through the callback, later, from the loop: c stays ours until then */
    if (idstate_status(id, ident, api_account_identity_answer, c, &err) < 0) {
        API_NOT_FOUND(c, "Email identity %s does not exist.", ident);
        free(err);
    }
}

/* ---- configuration sets ---- */

void api_op_list_configuration_sets(api_call *c)
{
    const char *op = "ListConfigurationSets";
    const config *cfg = c->cfg;
    size_t page;
    char *after;
    if (api_page_args(c, API_ACCOUNT_PAGE_DEFAULT, API_ACCOUNT_PAGE_MAX,
                      "InvalidNextTokenException", &page, &after) < 0)
        return;
    const char **names = util_calloc(cfg->nsets ? cfg->nsets : 1, sizeof *names);
    size_t n = 0;
    for (size_t i = 0; i < cfg->nsets; i++)
        if (api_account_may_see_set(c->key, cfg->sets[i].name)) names[n++] = cfg->sets[i].name;
    size_t from, to;
    char *next = api_account_page(op, names, n, page, after, &from, &to);
    json_t *arr = json_array();
    for (size_t i = from; i < to; i++) json_array_append_new(arr, api_account_jstr(names[i]));
    json_t *o = json_object();
    json_object_set_new(o, "ConfigurationSets", arr);
    if (next) json_object_set_new(o, "NextToken", json_string(next));
    free(next);
    free(names);
    free(after);
    api_ok(c, o);
}

/* SES's TlsPolicy for kiln's: REQUIRE only where kiln never sends in clear text. */
static const char *api_account_tls_policy(config_tls_policy p)
{
    return p == CONFIG_TLS_REQUIRE || p == CONFIG_TLS_VERIFY ? "REQUIRE" : "OPTIONAL";
}

void api_op_get_configuration_set(api_call *c)
{
    const char *name = api_in_str(c, "ConfigurationSetName");
    const config_set *s = name ? config_find_set(c->cfg, name) : NULL;
    if (!s || !api_account_may_see_set(c->key, s->name)) {
        API_NOT_FOUND(c, "Configuration set %s does not exist.", name ? name : "");
        return;
    }
    json_t *del = json_object();
    json_object_set_new(del, "TlsPolicy", json_string(api_account_tls_policy(s->tls_policy)));
    if (s->pool) json_object_set_new(del, "SendingPoolName", api_account_jstr(s->pool));
    json_object_set_new(del, "MaxDeliverySeconds", json_integer(s->max_delivery_time_ms / 1000));
    json_t *rep = json_object();
    json_object_set_new(rep, "ReputationMetricsEnabled", json_false());
    json_t *snd = json_object();
    json_object_set_new(snd, "SendingEnabled", json_true());
    json_t *sup = json_object();
    json_object_set_new(sup, "SuppressedReasons", api_account_reasons(c->cfg));
    json_t *o = json_object();
    json_object_set_new(o, "ConfigurationSetName", api_account_jstr(s->name));
    json_object_set_new(o, "DeliveryOptions", del);
    json_object_set_new(o, "ReputationOptions", rep);
    json_object_set_new(o, "SendingOptions", snd);
    json_object_set_new(o, "Tags", json_array());
    json_object_set_new(o, "SuppressionOptions", sup);
    api_ok(c, o);
}
