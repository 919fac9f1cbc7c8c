/* identity_report.c — an identity check's result for people and programs: the SES v2
 * GetEmailIdentity response (field names and enum spellings as in botocore's sesv2
 * 2019-09-27 model) with kiln's per-record details, and kilnctl identity status's table
 * with the records to publish in zone-file form. Pure. */
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/identity_check.h"

/* ---------- JSON ---------- */

/* json_string refuses invalid UTF-8: such bytes become '?' (the runner already keeps DNS
 * text to printable ASCII; this covers results built by other callers). */
static json_t *identity_jstr(const char *s)
{
    json_t *j = json_string(s ? s : "");
    if (j) return j;
    char *copy = util_strdup(s);
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80) *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

static const char *identity_key_length(int bits)
{
    return bits == 1024 ? "RSA_1024_BIT" : bits == 2048 ? "RSA_2048_BIT" : NULL;
}

static json_t *identity_record_json(const identity_record *rec)
{
    json_t *o = json_object();
    json_object_set_new(o, "Kind", json_string(identity_rec_kind_name(rec->kind)));
    json_object_set_new(o, "Name", identity_jstr(rec->name));
    json_object_set_new(o, "Type", json_string(rec->type));
    if (rec->selector) json_object_set_new(o, "Selector", identity_jstr(rec->selector));
    if (rec->found) json_object_set_new(o, "Found", identity_jstr(rec->found));
    json_object_set_new(o, "Status", json_string(identity_status_name(rec->status)));
    json_object_set_new(o, "Reason", identity_jstr(rec->reason));
    if (rec->publish) {
        json_t *p = json_object();
        json_object_set_new(p, "Name", identity_jstr(rec->name));
        json_object_set_new(p, "Type", json_string(rec->type));
        json_object_set_new(p, "Value", identity_jstr(rec->publish));
        json_object_set_new(o, "Publish", p);
    }
    return o;
}

json_t *identity_check_to_json(const identity_check_result *r, const identity_json_opts *o)
{
    identity_json_opts none;
    if (!o) {
        memset(&none, 0, sizeof none);
        o = &none;
    }
    json_t *j = json_object();
    json_object_set_new(j, "IdentityType", json_string(r->is_address ? "EMAIL_ADDRESS" : "DOMAIN"));
    json_object_set_new(j, "FeedbackForwardingStatus", json_true());
    json_object_set_new(j, "VerifiedForSendingStatus", json_boolean(o->verified_for_sending));
    json_object_set_new(j, "VerificationStatus", json_string(o->verified_for_sending ? "SUCCESS" : "PENDING"));

    json_t *dk = json_object();
    json_object_set_new(dk, "SigningEnabled", json_boolean(r->signing_enabled));
    json_object_set_new(dk, "Status", json_string(identity_ses_status_name(r->dkim_status)));
    if (r->nselectors) {
        json_t *tok = json_array();
        for (size_t i = 0; i < r->nselectors; i++) json_array_append_new(tok, identity_jstr(r->selectors[i]));
        json_object_set_new(dk, "Tokens", tok);
    }
    json_object_set_new(dk, "SigningAttributesOrigin", json_string(o->easy_dkim ? "AWS_SES" : "EXTERNAL"));
    const char *cur = identity_key_length(o->current_key_bits);
    if (cur) json_object_set_new(dk, "CurrentSigningKeyLength", json_string(cur));
    const char *next = o->easy_dkim ? identity_key_length(o->next_key_bits) : NULL;
    if (next) json_object_set_new(dk, "NextSigningKeyLength", json_string(next));
    /* rest-json timestamps are epoch seconds */
    if (o->last_key_generation_s > 0)
        json_object_set_new(dk, "LastKeyGenerationTimestamp", json_integer(o->last_key_generation_s));
    json_object_set_new(j, "DkimAttributes", dk);

    if (r->mail_from_domain) {
        json_t *mf = json_object();
        json_object_set_new(mf, "MailFromDomain", identity_jstr(r->mail_from_domain));
        json_object_set_new(mf, "MailFromDomainStatus", json_string(identity_ses_status_name(r->mail_from_status)));
        json_object_set_new(mf, "BehaviorOnMxFailure",
                            json_string(o->reject_on_mx_failure ? "REJECT_MESSAGE" : "USE_DEFAULT_VALUE"));
        json_object_set_new(j, "MailFromAttributes", mf);
    }

    json_t *k = json_object();
    json_object_set_new(k, "Identity", identity_jstr(r->identity));
    json_object_set_new(k, "Domain", identity_jstr(r->domain));
    json_t *recs = json_array();
    for (size_t i = 0; i < r->nrecords; i++) json_array_append_new(recs, identity_record_json(&r->records[i]));
    json_object_set_new(k, "Records", recs);
    json_object_set_new(j, "kiln", k);
    return j;
}

/* ---------- text ---------- */

/* A TXT value as zone-file character-strings: quoted, '"' and '\' escaped, split every 255
 * bytes (a DNS character-string's limit; a 2048-bit key's record needs two). */
static void identity_txt_quoted(strbuf *sb, const char *v)
{
    size_t len = strlen(v);
    for (size_t off = 0; off < len || off == 0; off += 255) {
        strbuf_puts(sb, off ? " \"" : "\"");
        for (size_t i = off; i < len && i < off + 255; i++) {
            if (v[i] == '"' || v[i] == '\\') strbuf_puts(sb, "\\");
            strbuf_append(sb, &v[i], 1);
        }
        strbuf_puts(sb, "\"");
        if (len == 0) break;
    }
}

char *identity_check_to_text(const identity_check_result *r)
{
    strbuf sb;
    strbuf_init(&sb);
    strbuf_printf(&sb, "identity %s (%s): DKIM %s, signing %s", r->identity, r->is_address ? "address" : "domain",
                  identity_ses_status_name(r->dkim_status), r->signing_enabled ? "enabled" : "disabled");
    if (r->mail_from_domain)
        strbuf_printf(&sb, "; MAIL FROM %s %s", r->mail_from_domain, identity_ses_status_name(r->mail_from_status));
    strbuf_puts(&sb, "\n");
    int w = 4;
    for (size_t i = 0; i < r->nrecords; i++) {
        int n = (int)strlen(r->records[i].name);
        if (n > w) w = n;
    }
    strbuf_printf(&sb, "%-9s  %-*s  %-4s  %s\n", "STATUS", w, "NAME", "TYPE", "REASON");
    for (size_t i = 0; i < r->nrecords; i++) {
        const identity_record *rec = &r->records[i];
        strbuf_printf(&sb, "%-9s  %-*s  %-4s  %s\n", identity_status_name(rec->status), w, rec->name, rec->type,
                      rec->reason);
        if (rec->found && (rec->status == IDENTITY_WRONG || rec->status == IDENTITY_UNKNOWN))
            strbuf_printf(&sb, "%-9s  %-*s  found: %s\n", "", w, "", rec->found);
    }
    for (size_t i = 0; i < r->nrecords; i++) {
        const identity_record *rec = &r->records[i];
        if (!rec->publish) continue;
        strbuf_printf(&sb, "publish: %s %s ", rec->name, rec->type);
        if (strcmp(rec->type, "TXT") == 0) identity_txt_quoted(&sb, rec->publish);
        else strbuf_puts(&sb, rec->publish);
        strbuf_puts(&sb, "\n");
    }
    return strbuf_steal(&sb);
}
