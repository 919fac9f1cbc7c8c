/* outbound.c — the last step before a message leaves (see outbound.h): unsubscribe headers,
 * custom MAIL FROM (with the feedback section on: the VERP token of mta/fbtoken.c, also on
 * feedback.bounce_domain for identities without one), DKIM signatures. A message whose
 * identity requires a signature and that no key can sign now is never sent: it is deferred
 * or bounced as dkim.on_unsigned says. Without the feedback section the envelope sender is
 * what it always was: the submitted one, or bounce+<hex id>@<custom MAIL FROM domain>. */
#include "mta/outbound.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/fbtoken.h"
#include "mta/message.h"
#include "mta/unsub.h"

void outbound_token(const char *msg_id, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *c = msg_id; *c && n + 1 < cap && n < 48; c++)
        if (isxdigit((unsigned char)*c)) out[n++] = (char)tolower((unsigned char)*c);
    out[n] = '\0';
}

void outbound_out_free(outbound_out *o)
{
    free(o->data);
    free(o->mail_from);
    free(o->signed_by);
    free(o->why);
    memset(o, 0, sizeof *o);
}

/* data with every line end (CR, LF or CRLF) made CRLF and a final line end added: what
 * smtp_client_encode_data sends, before dot-stuffing. */
static char *outbound_crlf(const char *data, size_t len, size_t *out_len)
{
    strbuf sb;
    strbuf_init(&sb);
    strbuf_reserve(&sb, len + 2);
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && data[j] != '\r' && data[j] != '\n') j++;
        strbuf_append(&sb, data + i, j - i);
        if (j == len) {
            strbuf_append(&sb, "\r\n", 2);
            break;
        }
        strbuf_append(&sb, "\r\n", 2);
        if (data[j] == '\r' && j + 1 < len && data[j + 1] == '\n') j++;
        i = j + 1;
    }
    *out_len = sb.len;
    return strbuf_steal(&sb);
}

static int outbound_fail(outbound_out *out, retry_failure f, char *why)
{
    free(out->data);
    out->data = NULL;
    out->fail = f;
    out->why = why;
    return -1;
}

/* The first address of the From field, or NULL (the message was checked at submission: a
 * From naming no address cannot get here, but a missing one is handled). */
static char *outbound_from(const char *data, size_t len)
{
    msg_headers hs;
    message_parse_headers(data, len, &hs);
    const char *v = message_header_get(&hs, "From");
    char *addr = NULL;
    if (v) {
        char **a = NULL;
        size_t n = message_parse_addresses(v, &a);
        if (n) addr = util_strdup(a[0]);
        message_addresses_free(a, n);
    }
    message_headers_free(&hs);
    return addr;
}

/* The VERP sender bounce+TOKEN@DOMAIN (mta/fbtoken.h) when the feedback section is on, else
 * the plain one of the custom MAIL FROM (bounce+<hex id>@DOMAIN). The token binds the only
 * recipient of a one-recipient transaction (in->rcpt), else the message alone. */
static char *outbound_verp(const outbound_in *in, const char *domain)
{
    const config *cfg = in->cfg;
    if (cfg->feedback_on) {
        char *a = fbtoken_address(cfg->feedback_secret, cfg->feedback_secret_len, in->msg_id,
                                  in->rcpt, domain);
        if (a) return a;   /* NULL: msg_id is not a kiln id (never for spooled mail) */
    }
    char token[64];
    outbound_token(in->msg_id, token, sizeof token);
    return util_asprintf("bounce+%s@%s", token, domain);
}

/* feedback.bounce_domain's VERP sender for mail without a custom MAIL FROM, or the submitted
 * sender when there is none. */
static int outbound_default_from(const outbound_in *in, outbound_out *out)
{
    const config *cfg = in->cfg;
    if (!cfg->feedback_on || !cfg->feedback_bounce_domain) return 0;
    char *a = fbtoken_address(cfg->feedback_secret, cfg->feedback_secret_len, in->msg_id,
                              in->rcpt, cfg->feedback_bounce_domain);
    if (a) {
        free(out->mail_from);
        out->mail_from = a;
    }
    return 0;
}

/* The envelope sender: the custom MAIL FROM of identity idx if one applies, else the
 * feedback bounce domain's, else the submitted one. 0, or -1 with out failed. */
static int outbound_mail_from(const outbound_in *in, int idx, outbound_out *out)
{
    out->mail_from = util_strdup(in->mail_from);
    if (!in->mail_from[0]) return 0;   /* <> stays <> */
    const config_identity *id = idx >= 0 && in->cfg->identity_auth
                                    ? &in->cfg->identity_auth[idx] : NULL;
    if (!id || !id->mail_from_domain) return outbound_default_from(in, out);
    outbound_mx_state st = in->mx_state ? in->mx_state(in->mx_arg, id->mail_from_domain)
                                        : OUTBOUND_MX_UNKNOWN;
    if (st == OUTBOUND_MX_OK) {
        free(out->mail_from);
        out->mail_from = outbound_verp(in, id->mail_from_domain);
        return 0;
    }
    if (id->mx_failure == CONFIG_MXFAIL_USE_DEFAULT)   /* SES UseDefaultValue */
        return outbound_default_from(in, out);
    if (st == OUTBOUND_MX_MISSING)
        return outbound_fail(out, RETRY_FAIL_MAIL_FROM_MX,
                             util_asprintf("MAIL FROM domain %s has no MX record and its "
                                           "behavior_on_mx_failure is RejectMessage "
                                           "(MailFromDomainNotVerified)", id->mail_from_domain));
    return outbound_fail(out, RETRY_FAIL_MAIL_FROM_PENDING,
                         util_asprintf("MAIL FROM domain %s: its MX record was not checked yet "
                                       "(behavior_on_mx_failure RejectMessage)", id->mail_from_domain));
}

int outbound_prepare(const outbound_in *in, outbound_out *out)
{
    memset(out, 0, sizeof *out);
    /* 1. unsubscribe and Feedback-ID fields of a marked set */
    char *marked = NULL;
    size_t mlen = 0;
    char *err = NULL;
    int u = in->set ? unsub_apply(in->set, in->msg_id, in->rcpt, in->data, in->data_len, &marked,
                                  &mlen, &err)
                    : 0;
    if (u < 0) {
        char *why = util_asprintf("unsubscribe header fields: %s", err ? err : "failed");
        free(err);
        return outbound_fail(out, RETRY_FAIL_UNSENDABLE, why);
    }
    /* the bytes the wire will carry (smtp_client_encode_data's line ends), so that the
     * signature covers exactly them */
    size_t len;
    char *msg = outbound_crlf(u > 0 ? marked : in->data, u > 0 ? mlen : in->data_len, &len);
    free(marked);
    out->data = msg;
    out->data_len = len;

    /* 2. the identity: custom MAIL FROM */
    char *from = outbound_from(msg, len);
    int idx = -1;
    bool required = false;
    dkim_signer signers[2];
    size_t nsig = 0;
    if (from && in->keys) nsig = dkim_keys_signers(in->keys, in->cfg, from, signers, &idx, &required);
    else if (from) idx = config_identity_index(in->cfg, from);
    int rc = outbound_mail_from(in, idx, out);
    if (rc < 0) {
        free(from);
        return rc;
    }

    /* 3. DKIM over everything else */
    if (nsig == 0) {
        if (required) {
            const config_identity *id = &in->cfg->identity_auth[idx];
            char *why = util_asprintf("DKIM signing is required for %s and no key of %s can sign "
                                      "now (no key, or its DNS record not seen live yet: "
                                      "kilnctl identity status)", from, in->cfg->identities[idx]);
            free(from);
            return outbound_fail(out, id->on_unsigned == CONFIG_UNSIGNED_REJECT
                                          ? RETRY_FAIL_UNSIGNED_REJECT : RETRY_FAIL_UNSIGNED, why);
        }
        free(from);
        return 0;
    }
    char *sigs = dkim_sign(signers, nsig, msg, len, in->now_s, &err);
    if (!sigs) {
        char *why = util_asprintf("DKIM signing failed for %s: %s", from, err ? err : "?");
        free(err);
        free(from);
        return outbound_fail(out, required ? RETRY_FAIL_UNSIGNED : RETRY_FAIL_INTERNAL, why);
    }
    size_t slen = strlen(sigs);
    char *signed_msg = util_malloc(slen + len + 1);
    memcpy(signed_msg, sigs, slen);
    memcpy(signed_msg + slen, msg, len);
    signed_msg[slen + len] = '\0';
    free(sigs);
    free(out->data);
    out->data = signed_msg;
    out->data_len = slen + len;
    out->nsigs = nsig;
    strbuf sb;
    strbuf_init(&sb);
    for (size_t i = 0; i < nsig; i++)
        strbuf_printf(&sb, "%sd=%s s=%s a=%s", i ? ", " : "", signers[i].domain, signers[i].selector,
                      dkim_alg_name(dkim_key_alg(signers[i].key)));
    out->signed_by = strbuf_steal(&sb);
    free(from);
    return 0;
}
