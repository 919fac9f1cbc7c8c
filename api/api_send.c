/* api_send.c — SendEmail and SendBulkEmail: the SES API's way in to the same acceptance as
 * SMTP submission. A message is built (Content.Simple through api/mime.c, Content.Template
 * through the stored template and api/template.c, Content.Raw decoded), its header section
 * checked with SMTP's limits, then every rule of SMTP submission applies in the same terms
 * (mta/policy.h: verified sender and header identities, the key's scope, sandbox
 * recipients, max_recipients, send rate, 24 h quota, suppression) and the whole message
 * goes to mta/accept.c in one spool batch. MessageId is answered only after the commit; a
 * failed commit answers 500 InternalFailure (nothing kept: the SDK retries). A request is
 * all or nothing: a recipient refused refuses the message, and the quota reserved for the
 * others is given back. SES's API errors: MessageRejected, TooManyRequestsException (send
 * rate), LimitExceededException (24 h quota), NotFoundException (set, template),
 * BadRequestException (malformed content). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api_int.h"
#include "api/mime.h"
#include "api/template.h"
#include "base/util.h"
#include "mta/accept.h"
#include "mta/cluster.h"
#include "mta/cluster_limits.h"
#include "mta/events.h"
#include "mta/message.h"
#include "mta/msgtags.h"
#include "mta/policy.h"
#include "mta/quota.h"
#include "store/spool.h"

#define API_SEND_MAX_TAGS MSGTAGS_MAX
#define API_SEND_LIMIT_ASKS 3      /* cluster leases one SendEmail may wait for */
#define API_BULK_MAX_ENTRIES 50          /* SES's BulkEmailEntries limit */
#define API_TEMPLATE_OUT_MAX (10u * 1024 * 1024)

/* Why a message was refused: SES's error (status, type) and the BulkEmailEntryResult
 * Status the same refusal has in SendBulkEmail. */
typedef struct api_send_err {
    int status;
    const char *type;
    const char *bulk;
    char *msg;
    bool rate, daily;             /* refused by the send rate / the 24 h quota */
} api_send_err;

/* One message on its way to accept.c. */
typedef struct api_msg {
    char *mail_from;              /* addr-spec */
    char **rcpts;
    size_t nrcpts;
    policy_rcpt_verdict *verdicts;
    unsigned reserved;            /* 24 h slots reserved */
    const char *set;              /* a name of c->cfg's sets */
    strbuf data;
    char **tag_names, **tag_values;
    size_t ntags;
} api_msg;

static void api_send_fail(api_send_err *e, int status, const char *type, const char *bulk,
                          const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void api_send_fail(api_send_err *e, int status, const char *type, const char *bulk,
                          const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    free(e->msg);
    if (vasprintf(&e->msg, fmt, ap) < 0) e->msg = util_strdup(type);
    va_end(ap);
    e->status = status;
    e->type = type;
    e->bulk = bulk;
}

static void api_send_rejected(api_send_err *e, const char *text)
{
    api_send_fail(e, 400, "MessageRejected", "MESSAGE_REJECTED", "%s", text);
}

static void api_msg_free(api_msg *m)
{
    free(m->mail_from);
    for (size_t i = 0; i < m->nrcpts; i++) free(m->rcpts[i]);
    free(m->rcpts);
    free(m->verdicts);
    strbuf_free(&m->data);
    for (size_t i = 0; i < m->ntags; i++) {
        free(m->tag_names[i]);
        free(m->tag_values[i]);
    }
    free(m->tag_names);
    free(m->tag_values);
    memset(m, 0, sizeof *m);
}

/* An SMTP reply of mta/policy.c without its codes and "Message rejected: ", as SES's API
 * words the same refusal ("Email address is not verified. The following identities ..."). */
static const char *api_send_reply_text(const char *reply)
{
    const char *p = reply;
    if (strlen(p) > 4 && p[3] == ' ') p += 4;
    if (p[0] >= '2' && p[0] <= '5' && p[1] == '.') {
        const char *sp = strchr(p, ' ');
        if (sp) p = sp + 1;
    }
    if (strncmp(p, "Message rejected: ", 18) == 0) p += 18;
    return p;
}

/* ---- recipients and envelope ---- */

static bool api_msg_has_rcpt(const api_msg *m, const char *addr)
{
    for (size_t i = 0; i < m->nrcpts; i++)
        if (strcasecmp(m->rcpts[i], addr) == 0) return true;
    return false;
}

/* Adds the addresses of a Destination list (each "a@b" or "Name <a@b>"); the same address
 * once. -1 with e set when one is no address. */
static int api_msg_add_list(api_msg *m, json_t *list, const char *what, api_send_err *e)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        char *a = mime_addr_spec(json_string_value(v));
        if (!a) {
            api_send_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                          "%s[%zu] is not a valid email address: %s", what, i,
                          json_string_value(v));
            return -1;
        }
        if (api_msg_has_rcpt(m, a)) {
            free(a);
            continue;
        }
        m->rcpts = util_realloc(m->rcpts, (m->nrcpts + 1) * sizeof *m->rcpts);
        m->rcpts[m->nrcpts++] = a;
    }
    return 0;
}

/* Raw messages without a Destination: the recipients of their To, Cc and Bcc fields. */
static void api_msg_rcpts_from_headers(api_msg *m, const msg_headers *hs)
{
    static const char *const fields[] = {"To", "Cc", "Bcc"};
    for (size_t f = 0; f < 3; f++) {
        for (size_t i = 0; i < hs->n; i++) {
            if (strcasecmp(hs->h[i].name, fields[f]) != 0) continue;
            char **addrs = NULL;
            size_t n = message_parse_addresses(hs->h[i].value, &addrs);
            for (size_t k = 0; k < n; k++) {
                if (api_msg_has_rcpt(m, addrs[k])) continue;
                m->rcpts = util_realloc(m->rcpts, (m->nrcpts + 1) * sizeof *m->rcpts);
                m->rcpts[m->nrcpts++] = util_strdup(addrs[k]);
            }
            message_addresses_free(addrs, n);
        }
    }
}

/* EmailTags (and SendBulkEmail's DefaultEmailTags / ReplacementTags): SES's character
 * rules, at most 50. */
static int api_msg_add_tags(api_msg *m, json_t *tags, const char *what, api_send_err *e)
{
    size_t i;
    json_t *t;
    json_array_foreach(tags, i, t) {
        const char *name = json_string_value(json_object_get(t, "Name"));
        const char *value = json_string_value(json_object_get(t, "Value"));
        if (!name || !value) continue;          /* the model requires both */
        const char *why = events_tag_check(name, true);
        if (!why) why = events_tag_check(value, false);
        if (why) {
            api_send_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                          "%s[%zu] (%s=%s): the %s %s", what, i, name, value,
                          events_tag_check(name, true) ? "name" : "value", why);
            return -1;
        }
        if (m->ntags == API_SEND_MAX_TAGS) {
            api_send_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                          "%s: more than %d message tags", what, API_SEND_MAX_TAGS);
            return -1;
        }
        m->tag_names = util_realloc(m->tag_names, (m->ntags + 1) * sizeof *m->tag_names);
        m->tag_values = util_realloc(m->tag_values, (m->ntags + 1) * sizeof *m->tag_values);
        m->tag_names[m->ntags] = util_strdup(name);
        m->tag_values[m->ntags++] = util_strdup(value);
    }
    return 0;
}

/* A raw message's X-SES-MESSAGE-TAGS fields give its tags when EmailTags gives none (SES
 * uses only the API's tags when both are given, never a mix); the fields are removed either
 * way. A broken field is a BadRequestException naming the tag. */
static int api_msg_header_tags(api_msg *m, const msg_headers *hs, bool email_tags,
                               api_send_err *e)
{
    if (!message_header_get(hs, MSGTAGS_HEADER)) return 0;
    m->data.len = message_strip_header(m->data.buf, m->data.len, MSGTAGS_HEADER);
    m->data.buf[m->data.len] = '\0';
    if (email_tags) return 0;
    msgtags t;
    char *err = NULL;
    if (msgtags_from_headers(hs, &t, &err) != 0) {
        api_send_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                      "Content.Raw.Data: %s", err);
        free(err);
        return -1;
    }
    m->tag_names = t.names;                 /* m holds no tags yet: EmailTags come later */
    m->tag_values = t.values;
    m->ntags = t.n;
    return 0;
}

/* ---- the configuration set ---- */

/* ConfigurationSetName, else (Raw) the message's X-SES-CONFIGURATION-SET field, else the
 * default set; the key's scope applies. The field is removed from the message. */
static int api_msg_set(api_call *c, api_msg *m, const char *name, const msg_headers *hs,
                       api_send_err *e)
{
    const config *cfg = c->cfg;
    char *from_header = NULL;
    const char *hv = hs ? message_header_get(hs, "X-SES-CONFIGURATION-SET") : NULL;
    if (hv) {
        size_t n = strlen(hv);
        while (n && (hv[n - 1] == ' ' || hv[n - 1] == '\t')) n--;
        from_header = util_strndup(hv, n);
        m->data.len = message_strip_header(m->data.buf, m->data.len, "X-SES-CONFIGURATION-SET");
        m->data.buf[m->data.len] = '\0';
    }
    if (!name) name = from_header;
    const config_set *cs = name ? config_find_set(cfg, name) : NULL;
    if (name && !cs) {
        api_send_fail(e, 404, "NotFoundException", "CONFIGURATION_SET_DOES_NOT_EXIST",
                      "Configuration set %s does not exist.", name);
        free(from_header);
        return -1;
    }
    free(from_header);
    m->set = cs ? cs->name : cfg->default_set;
    if (!m->set) {
        api_send_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                      "No configuration set: name one with ConfigurationSetName (the config "
                      "has no configuration_sets.default)");
        return -1;
    }
    if (!policy_user_may_use_set(c->key ? &c->key->scope : NULL, m->set)) {
        char acct[16];
        api_account_id(c, acct);
        api_send_fail(e, 403, "AccessDeniedException", "MESSAGE_REJECTED",
                      "User '%s' is not authorized to perform 'ses:SendEmail' on resource "
                      "'arn:aws:ses:%s:%s:configuration-set/%s'", c->key_id, cfg->region,
                      acct, m->set);
        return -1;
    }
    return 0;
}

/* ---- building the message ---- */

static const char *api_charset(json_t *content)
{
    return json_string_value(json_object_get(content, "Charset"));
}

static const char *api_data(json_t *content)
{
    return json_string_value(json_object_get(content, "Data"));
}

/* Content.Simple, or a rendered template (subject/text/html given), into m->data. */
static int api_msg_build_simple(api_call *c, api_msg *m, const char *from, json_t *dest,
                                json_t *subject, json_t *text, json_t *html, const char *s_txt,
                                const char *t_txt, const char *h_txt, api_send_err *e)
{
    json_t *to = json_object_get(dest, "ToAddresses");
    json_t *cc = json_object_get(dest, "CcAddresses");
    json_t *rt = api_in(c, "ReplyToAddresses");
    size_t nto = json_array_size(to), ncc = json_array_size(cc), nrt = json_array_size(rt);
    const char **tov = util_calloc(nto + 1, sizeof *tov);
    const char **ccv = util_calloc(ncc + 1, sizeof *ccv);
    const char **rtv = util_calloc(nrt + 1, sizeof *rtv);
    for (size_t i = 0; i < nto; i++) tov[i] = json_string_value(json_array_get(to, i));
    for (size_t i = 0; i < ncc; i++) ccv[i] = json_string_value(json_array_get(cc, i));
    for (size_t i = 0; i < nrt; i++) rtv[i] = json_string_value(json_array_get(rt, i));
    char seed[40];
    util_random_hex(seed, 12);
    mime_simple ms = {
        .from = from,
        .to = tov, .nto = nto, .cc = ccv, .ncc = ncc, .reply_to = rtv, .nreply_to = nrt,
        .subject = {s_txt ? s_txt : api_data(subject), api_charset(subject)},
        .text = {t_txt ? t_txt : api_data(text), api_charset(text)},
        .html = {h_txt ? h_txt : api_data(html), api_charset(html)},
        .now_ms = c->now_ms,
        .boundary_seed = seed,
    };
    size_t len = 0;
    char *err = NULL;
    char *msg = mime_build_simple(&ms, &len, &err);
    free(tov);
    free(ccv);
    free(rtv);
    if (!msg) {
        api_send_fail(e, 400, "BadRequestException", "INVALID_PARAMETER", "%s",
                      err ? err : "the message could not be built");
        free(err);
        return -1;
    }
    strbuf_free(&m->data);
    m->data.buf = msg;
    m->data.len = len;
    m->data.cap = len + 1;
    return 0;
}

/* TemplateData (a JSON object in a string) merged over by replacement data (bulk). */
static json_t *api_template_data(const char *text, const char *over, const char *what,
                                 api_send_err *e)
{
    json_error_t je;
    json_t *d = json_loads(text ? text : "{}", JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(d)) {
        api_send_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                      "%s is not a JSON object%s%s", what, d ? "" : ": ", d ? "" : je.text);
        json_decref(d);
        return NULL;
    }
    if (over) {
        json_t *o = json_loads(over, JSON_REJECT_DUPLICATES, &je);
        if (!json_is_object(o)) {
            api_send_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                          "ReplacementTemplateData is not a JSON object%s%s", o ? "" : ": ",
                          o ? "" : je.text);
            json_decref(o);
            json_decref(d);
            return NULL;
        }
        json_object_update(d, o);
        json_decref(o);
    }
    return d;
}

/* A stored template rendered with data into m->data. */
static int api_msg_build_template(api_call *c, api_msg *m, const char *from, json_t *dest,
                                  const char *name, const json_t *data, api_send_err *e)
{
    char *subject = NULL, *text = NULL, *html = NULL;
    int rc = api_template_get(c->ctx, name, &subject, &text, &html);
    if (rc != 0) {
        if (rc > 0)
            api_send_fail(e, 404, "NotFoundException", "TEMPLATE_DOES_NOT_EXIST",
                          "Template %s does not exist.", name);
        else
            api_send_fail(e, 500, "InternalFailure", "TRANSIENT_FAILURE",
                          "The template %s could not be read: %s", name,
                          spool_errmsg(c->ctx->spool));
        return -1;
    }
    char *rs = NULL, *rt = NULL, *rh = NULL, *err = NULL;
    const char *part = "Subject";
    rs = template_render(subject ? subject : "", data, API_TEMPLATE_OUT_MAX, &err);
    if (rs && text) {
        part = "Text";
        rt = template_render(text, data, API_TEMPLATE_OUT_MAX, &err);
    }
    if (rs && (!text || rt) && html) {
        part = "Html";
        rh = template_render(html, data, API_TEMPLATE_OUT_MAX, &err);
    }
    rc = -1;
    if (err) {
        api_send_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                      "Template %s (%s): %s", name, part, err);
    } else {
        rc = api_msg_build_simple(c, m, from, dest, NULL, NULL, NULL, rs, text ? rt : NULL,
                                  html ? rh : NULL, e);
    }
    free(err);
    free(rs);
    free(rt);
    free(rh);
    free(subject);
    free(text);
    free(html);
    return rc;
}

/* Content.Raw.Data into m->data. */
static int api_msg_build_raw(api_call *c, api_msg *m, json_t *raw, api_send_err *e)
{
    const char *b64 = api_data(raw);
    size_t len = 0;
    char *err = NULL;
    char *msg = NULL;
    if (!api_raw_take(c, b64, &msg, &len, &err))
        msg = mime_raw_decode(b64 ? b64 : "", b64 ? strlen(b64) : 0,
                              (size_t)c->cfg->max_message_size, &len, &err);
    if (!msg) {
        bool big = err && strstr(err, "larger than");
        if (big)
            api_send_rejected(e, err);
        else
            api_send_fail(e, 400, "BadRequestException", "INVALID_PARAMETER", "%s",
                          err ? err : "Content.Raw.Data could not be decoded");
        free(err);
        return -1;
    }
    m->data.buf = msg;
    m->data.len = len;
    m->data.cap = len + 1;
    return 0;
}

/* ---- the checks of SMTP submission ---- */

/* The header section as SMTP's end of DATA checks it (limits, hops, one From:), the sender
 * and header identities (verified, in the key's scope). Raw without Destination takes its
 * recipients from the fields; Bcc: never leaves. */
static int api_msg_check_content(api_call *c, api_msg *m, bool rcpts_from_headers,
                                 const char *from_param, api_send_err *e)
{
    const config *cfg = c->cfg;
    const config_auth_user *scope = c->key ? &c->key->scope : NULL;
    if ((int64_t)m->data.len > cfg->max_message_size) {
        api_send_rejected(e, "Message length is more than the account's maximum message size");
        free(e->msg);
        e->msg = util_asprintf("Message length is more than %lld bytes long: %zu.",
                               (long long)cfg->max_message_size, m->data.len);
        return -1;
    }
    msg_headers hs;
    message_parse_headers(m->data.buf, m->data.len, &hs);
    const char *lim = NULL;
    if (hs.over_limit & MSG_HDR_TOO_MANY_FIELDS) lim = "more than 1000 header fields";
    else if (hs.over_limit & MSG_HDR_TOO_LARGE) lim = "header section larger than 1MB";
    else if (hs.nreceived >= MESSAGE_MAX_HOPS) lim = "Too many hops";
    else if (hs.nfrom > 1) lim = "more than one From: header";
    else if (hs.nfrom == 0) lim = "the message has no From: header";
    else if (hs.ended_by_body_line) lim = "the header section ends at a line that is no header field and no empty line";
    int rc = -1;
    char acct[16];
    api_account_id(c, acct);
    char *r = NULL;
    if (lim) {
        api_send_rejected(e, lim);
        goto out;
    }
    if (rcpts_from_headers) api_msg_rcpts_from_headers(m, &hs);
    /* the envelope sender: FromEmailAddress, else the From: field */
    if (from_param) {
        m->mail_from = mime_addr_spec(from_param);
        if (!m->mail_from) {
            api_send_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                          "FromEmailAddress is not a valid email address: %s", from_param);
            goto out;
        }
    } else {
        char **addrs = NULL;
        size_t n = message_parse_addresses(message_header_get(&hs, "From"), &addrs);
        if (n == 0) {
            message_addresses_free(addrs, n);
            api_send_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                          "Missing FromEmailAddress, and the message's From: holds no address");
            goto out;
        }
        m->mail_from = util_strdup(addrs[0]);
        message_addresses_free(addrs, n);
    }
    r = policy_check_mail_from(cfg, m->mail_from);
    if (!r) r = policy_check_mail_from_scope(cfg, scope, acct, m->mail_from);
    if (!r) r = policy_check_headers(cfg, &hs);
    if (!r) r = policy_check_headers_scope(cfg, scope, acct, &hs);
    if (r) {
        if (strstr(r, "is not authorized"))
            api_send_fail(e, 403, "AccessDeniedException", "MESSAGE_REJECTED", "%s",
                          api_send_reply_text(r));
        else
            api_send_rejected(e, api_send_reply_text(r));
        free(r);
        goto out;
    }
    rc = 0;
out:
    message_headers_free(&hs);
    return rc;
}

/* Recipients through policy_check_rcpt, as RCPT TO is: all accepted, or none (the 24 h
 * slots already reserved are released). */
static int api_msg_check_rcpts(api_call *c, api_msg *m, api_send_err *e)
{
    kiln_ctx *ctx = c->ctx;
    if (m->nrcpts == 0) {
        api_send_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                      "The message has no recipients: Destination lists none");
        return -1;
    }
    if ((int64_t)m->nrcpts > c->cfg->max_recipients) {
        api_send_fail(e, 400, "MessageRejected", "MESSAGE_REJECTED",
                      "Recipient count exceeds %d.", c->cfg->max_recipients);
        return -1;
    }
    m->verdicts = util_calloc(m->nrcpts, sizeof *m->verdicts);
    for (size_t i = 0; i < m->nrcpts; i++) {
        bool suppressed = false;
        if (spool_suppression_get(ctx->spool, m->rcpts[i], &suppressed, NULL, NULL) != 0) {
            api_send_fail(e, 500, "InternalFailure", "TRANSIENT_FAILURE",
                          "The suppression list could not be read: %s",
                          spool_errmsg(ctx->spool));
            goto refuse;
        }
        policy_rcpt_in in = {
            .cfg = c->cfg, .q = ctx->quota, .now_ms = c->now_ms, .accepted_so_far = i,
            .rcpt = m->rcpts[i], .suppressed = suppressed,
        };
        const char *r = NULL;
        bool owned = false;
        policy_rcpt_verdict v = policy_check_rcpt(&in, &r, &owned);
        if (v == POLICY_RCPT_REJECT) {
            if (strcmp(r, POLICY_REPLY_RATE) == 0) {
                api_send_fail(e, 429, "TooManyRequestsException", "ACCOUNT_THROTTLED",
                              "Maximum sending rate exceeded.");
                e->rate = true;
            } else if (strcmp(r, POLICY_REPLY_QUOTA) == 0) {
                api_send_fail(e, 400, "LimitExceededException", "ACCOUNT_DAILY_QUOTA_EXCEEDED",
                              "Daily message quota exceeded.");
                e->daily = true;
            }
            else
                api_send_rejected(e, api_send_reply_text(r));
            if (owned) free((char *)r);
            goto refuse;
        }
        m->verdicts[i] = v;
        if (v == POLICY_RCPT_ACCEPT || v == POLICY_RCPT_SUPPRESSED) m->reserved++;
    }
    return 0;
refuse:
    quota_daily_release(ctx->quota, m->reserved);
    m->reserved = 0;
    return -1;
}

/* ---- acceptance ---- */

typedef void (*api_msg_done_fn)(void *arg, bool ok, const char *id, const char *err);

typedef struct api_accepting {
    kiln_ctx *ctx;
    unsigned reserved;
    api_msg_done_fn done;
    void *arg;
} api_accepting;

static void api_msg_accepted(void *arg, bool ok, const char *id, const char *err)
{
    api_accepting *a = arg;
    if (ok) quota_daily_commit(a->ctx->quota, a->reserved, kiln_now_ms(a->ctx));
    else quota_daily_release(a->ctx->quota, a->reserved);
    a->done(a->arg, ok, id, err);
    free(a);
}

/* Hands m (checked) to accept.c; done runs after the commit. m's data is taken. */
static int api_msg_accept(api_call *c, api_msg *m, api_msg_done_fn done, void *arg,
                          api_send_err *e)
{
    api_accepting *a = util_calloc(1, sizeof *a);
    a->ctx = c->ctx;
    a->reserved = m->reserved;
    a->done = done;
    a->arg = arg;
    accept_in in = {
        .mail_from = m->mail_from,
        .rcpts = m->rcpts,
        .verdicts = m->verdicts,
        .nrcpts = m->nrcpts,
        .config_set = m->set,
        .client_ip = c->req->client_ip,
        .helo = "ses-api",
        .tls = c->req->tls,
        .auth_user = c->key_id,
        .data = m->data.buf,
        .data_len = m->data.len,
        .take = &m->data,
        .quota_count = m->reserved,
        .protocol = c->req->tls ? "HTTPS" : "HTTP",
        .tag_names = m->tag_names,
        .tag_values = m->tag_values,
        .ntags = m->ntags,
    };
    m->reserved = 0;                    /* a owns the reservation now */
    if (accept_message(c->ctx, &in, api_msg_accepted, a) != 0) {
        quota_daily_release(c->ctx->quota, a->reserved);
        free(a);
        api_send_fail(e, 500, "InternalFailure", "TRANSIENT_FAILURE",
                      "Temporary failure: the message could not be queued");
        return -1;
    }
    return 0;
}

/* ---- SendEmail ---- */

static void api_send_reply(api_call *c, api_send_err *e)
{
    api_error(c, e->status, e->type, "%s", e->msg ? e->msg : e->type);
    free(e->msg);
    e->msg = NULL;
}

static void api_send_email_done(void *arg, bool ok, const char *id, const char *err)
{
    api_call *c = arg;
    if (!ok) {
        api_error(c, 500, "InternalFailure",
                  "Temporary failure: could not store message (%s); nothing was sent",
                  err ? err : "spool commit failed");
        return;
    }
    log_write(c->ctx->log, KLOG_INFO, "api.accept", "id=%s key=%s client=%s", id, c->key_id,
              c->req->client_ip);
    json_t *o = json_object();
    json_object_set_new(o, "MessageId", json_string(id));
    api_ok(c, o);
}

/* The fields kiln takes and ignores, said once per request in the log. */
static void api_send_note_ignored(api_call *c, json_t *obj, const char *field, const char *why)
{
    if (!json_object_get(obj, field)) return;
    log_write(c->ctx->log, KLOG_INFO, "api.ignored", "op=%s key=%s field=%s note=%s", c->op,
              c->key_id, field, log_q(c->ctx->log, why));
}

/* The lease asked for by api_send_limit_wait was answered: the request runs again from its
 * validated input, now against what the node holds. */
static void api_send_limit_answered(void *arg)
{
    api_call *c = arg;
    c->now_ms = kiln_now_ms(c->ctx);
    api_op_send_email(c);
}

/* SendEmail refused by the send rate or the 24 h quota on a cluster node whose quota is
 * leased (mta/cluster_limits.h): ask the account for a lease covering the message's
 * recipients and answer later. false: answer the refusal now. */
static bool api_send_limit_wait(api_call *c, const api_msg *m, const api_send_err *e)
{
    if ((!e->rate && !e->daily) || c->limit_asks >= API_SEND_LIMIT_ASKS) return false;
    unsigned n = (unsigned)m->nrcpts;
    if (!cluster_limits_ask(cluster_get_limits(c->ctx->cluster), e->rate ? n : 0,
                            e->daily ? n : 0, api_send_limit_answered, c))
        return false;
    c->limit_asks++;
    return true;
}

void api_op_send_email(api_call *c)
{
    api_msg m;
    memset(&m, 0, sizeof m);
    strbuf_init(&m.data);
    api_send_err e = {0};
    json_t *content = api_in(c, "Content");
    json_t *simple = json_object_get(content, "Simple");
    json_t *raw = json_object_get(content, "Raw");
    json_t *tmpl = json_object_get(content, "Template");
    const char *from = api_in_str(c, "FromEmailAddress");
    json_t *dest = api_in(c, "Destination");
    api_send_note_ignored(c, c->in, "ListManagementOptions",
                          "contact lists are not supported; List-Unsubscribe comes from the "
                          "set's list_unsubscribe");
    api_send_note_ignored(c, c->in, "FeedbackForwardingEmailAddress",
                          "bounces return to kiln's VERP address");
    api_send_note_ignored(c, c->in, "FromEmailAddressIdentityArn", "identities are kiln.yaml's");
    if (!!simple + !!raw + !!tmpl != 1) {
        API_BAD_REQUEST(c, "Content must hold exactly one of Simple, Raw and Template");
        return;
    }
    if (!raw && !from) {
        API_BAD_REQUEST(c, "FromEmailAddress is required unless Content.Raw is used");
        return;
    }
    if (!raw && !dest) {
        API_BAD_REQUEST(c, "Destination is required unless Content.Raw is used");
        return;
    }
    int rc = 0;
    if (simple) {
        json_t *body = json_object_get(simple, "Body");
        rc = api_msg_build_simple(c, &m, from, dest, json_object_get(simple, "Subject"),
                                  json_object_get(body, "Text"), json_object_get(body, "Html"),
                                  NULL, NULL, NULL, &e);
    } else if (tmpl) {
        const char *name = json_string_value(json_object_get(tmpl, "TemplateName"));
        if (!name) {
            API_BAD_REQUEST(c, "Content.Template.TemplateName is required (TemplateArn is not "
                               "supported)");
            strbuf_free(&m.data);
            return;
        }
        json_t *data = api_template_data(
            json_string_value(json_object_get(tmpl, "TemplateData")), NULL,
            "Content.Template.TemplateData", &e);
        rc = data ? api_msg_build_template(c, &m, from, dest, name, data, &e) : -1;
        json_decref(data);
    } else {
        rc = api_msg_build_raw(c, &m, raw, &e);
    }
    msg_headers hs;
    if (rc == 0) {
        message_parse_headers(m.data.buf, m.data.len, &hs);
        rc = api_msg_set(c, &m, api_in_str(c, "ConfigurationSetName"), raw ? &hs : NULL, &e);
        if (rc == 0 && raw)
            rc = api_msg_header_tags(&m, &hs, json_array_size(api_in(c, "EmailTags")) > 0, &e);
        message_headers_free(&hs);
    }
    if (rc == 0 && dest) {
        rc = api_msg_add_list(&m, json_object_get(dest, "ToAddresses"),
                              "Destination.ToAddresses", &e);
        if (rc == 0)
            rc = api_msg_add_list(&m, json_object_get(dest, "CcAddresses"),
                                  "Destination.CcAddresses", &e);
        if (rc == 0)
            rc = api_msg_add_list(&m, json_object_get(dest, "BccAddresses"),
                                  "Destination.BccAddresses", &e);
    }
    if (rc == 0) rc = api_msg_check_content(c, &m, raw && !dest, from, &e);
    if (rc == 0 && raw) {                 /* Bcc: is for the envelope only */
        m.data.len = message_strip_header(m.data.buf, m.data.len, "Bcc");
        m.data.buf[m.data.len] = '\0';
    }
    if (rc == 0) rc = api_msg_add_tags(&m, api_in(c, "EmailTags"), "EmailTags", &e);
    if (rc == 0) rc = api_msg_check_rcpts(c, &m, &e);
    if (rc != 0 && api_send_limit_wait(c, &m, &e)) {
        free(e.msg);
        api_msg_free(&m);
        return;
    }
    if (rc == 0) rc = api_msg_accept(c, &m, api_send_email_done, c, &e);
    api_msg_free(&m);
    if (rc != 0) api_send_reply(c, &e);
}

/* ---- SendBulkEmail ---- */

typedef struct api_bulk {
    api_call *c;
    json_t *results;              /* BulkEmailEntryResults, in entry order */
    size_t pending;               /* entries waiting for their commit */
    bool started;                 /* every entry has been tried */
} api_bulk;

typedef struct api_bulk_entry {
    api_bulk *b;
    size_t i;
} api_bulk_entry;

static void api_bulk_result(api_bulk *b, size_t i, const char *status, const char *error,
                            const char *id)
{
    json_t *r = json_array_get(b->results, i);
    json_object_set_new(r, "Status", json_string(status));
    if (error) json_object_set_new(r, "Error", json_string(error));
    if (id) json_object_set_new(r, "MessageId", json_string(id));
}

static void api_bulk_finish(api_bulk *b)
{
    if (!b->started || b->pending) return;
    json_t *o = json_object();
    json_object_set_new(o, "BulkEmailEntryResults", b->results);
    api_ok(b->c, o);
    free(b);
}

static void api_bulk_entry_done(void *arg, bool ok, const char *id, const char *err)
{
    api_bulk_entry *be = arg;
    api_bulk *b = be->b;
    if (ok)
        api_bulk_result(b, be->i, "SUCCESS", NULL, id);
    else
        api_bulk_result(b, be->i, "TRANSIENT_FAILURE",
                        err ? err : "Temporary failure: could not store message", NULL);
    free(be);
    b->pending--;
    api_bulk_finish(b);
}

/* One BulkEmailEntries item: a template message to its Destination, with the default
 * data merged over by its ReplacementTemplateData and the default tags plus its own. */
static void api_bulk_entry_send(api_bulk *b, size_t i, json_t *entry, const char *from,
                                const char *tname, const char *tdata, const char *set)
{
    api_call *c = b->c;
    api_msg m;
    memset(&m, 0, sizeof m);
    strbuf_init(&m.data);
    api_send_err e = {0};
    json_t *dest = json_object_get(entry, "Destination");
    json_t *repl = json_object_get(json_object_get(entry, "ReplacementEmailContent"),
                                   "ReplacementTemplate");
    const char *over = json_string_value(json_object_get(repl, "ReplacementTemplateData"));
    json_t *data = api_template_data(tdata, over, "DefaultContent.Template.TemplateData", &e);
    /* the message's To/Cc come from this entry's Destination */
    int rc = data ? api_msg_build_template(c, &m, from, dest, tname, data, &e) : -1;
    json_decref(data);
    if (rc == 0) rc = api_msg_set(c, &m, set, NULL, &e);
    if (rc == 0) rc = api_msg_add_list(&m, json_object_get(dest, "ToAddresses"),
                                       "Destination.ToAddresses", &e);
    if (rc == 0) rc = api_msg_add_list(&m, json_object_get(dest, "CcAddresses"),
                                       "Destination.CcAddresses", &e);
    if (rc == 0) rc = api_msg_add_list(&m, json_object_get(dest, "BccAddresses"),
                                       "Destination.BccAddresses", &e);
    if (rc == 0) rc = api_msg_check_content(c, &m, false, from, &e);
    if (rc == 0) rc = api_msg_add_tags(&m, api_in(c, "DefaultEmailTags"), "DefaultEmailTags", &e);
    if (rc == 0) rc = api_msg_add_tags(&m, json_object_get(entry, "ReplacementTags"),
                                       "ReplacementTags", &e);
    if (rc == 0) rc = api_msg_check_rcpts(c, &m, &e);
    if (rc == 0) {
        api_bulk_entry *be = util_calloc(1, sizeof *be);
        be->b = b;
        be->i = i;
        b->pending++;
        rc = api_msg_accept(c, &m, api_bulk_entry_done, be, &e);
        if (rc != 0) {
            b->pending--;
            free(be);
        }
    }
    if (rc != 0) {
        api_bulk_result(b, i, e.bulk ? e.bulk : "FAILED", e.msg, NULL);
        log_write(c->ctx->log, KLOG_INFO, "api.bulk_entry", "key=%s entry=%zu status=%s error=%s",
                  c->key_id, i, e.bulk ? e.bulk : "FAILED", log_q(c->ctx->log, e.msg));
    }
    free(e.msg);
    api_msg_free(&m);
}

void api_op_send_bulk_email(api_call *c)
{
    json_t *tmpl = json_object_get(api_in(c, "DefaultContent"), "Template");
    const char *tname = json_string_value(json_object_get(tmpl, "TemplateName"));
    const char *tdata = json_string_value(json_object_get(tmpl, "TemplateData"));
    const char *from = api_in_str(c, "FromEmailAddress");
    const char *set = api_in_str(c, "ConfigurationSetName");
    json_t *entries = api_in(c, "BulkEmailEntries");
    api_send_note_ignored(c, c->in, "FeedbackForwardingEmailAddress",
                          "bounces return to kiln's VERP address");
    if (!tname) {
        API_BAD_REQUEST(c, "DefaultContent.Template.TemplateName is required (TemplateArn is "
                           "not supported)");
        return;
    }
    if (!from) {
        API_BAD_REQUEST(c, "FromEmailAddress is required");
        return;
    }
    size_t n = json_array_size(entries);
    if (n == 0 || n > API_BULK_MAX_ENTRIES) {
        API_BAD_REQUEST(c, "BulkEmailEntries must hold 1 to %d entries (it holds %zu)",
                        API_BULK_MAX_ENTRIES, n);
        return;
    }
    /* request-wide refusals first, as SES answers them for the whole call */
    api_send_err e = {0};
    char *s = NULL, *t = NULL, *h = NULL;
    int rc = api_template_get(c->ctx, tname, &s, &t, &h);
    free(s);
    free(t);
    free(h);
    if (rc != 0) {
        if (rc > 0) API_NOT_FOUND(c, "Template %s does not exist.", tname);
        else api_error(c, 500, "InternalFailure", "The template could not be read");
        return;
    }
    if (set && !config_find_set(c->cfg, set)) {
        API_NOT_FOUND(c, "Configuration set %s does not exist.", set);
        return;
    }
    api_bulk *b = util_calloc(1, sizeof *b);
    b->c = c;
    b->results = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(b->results, json_object());
    for (size_t i = 0; i < n; i++)
        api_bulk_entry_send(b, i, json_array_get(entries, i), from, tname, tdata, set);
    free(e.msg);
    b->started = true;
    api_bulk_finish(b);
}
