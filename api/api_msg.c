/* api_msg.c — a SendEmail or SendBulkEmail message before kilnd's state (api/api_msg.h):
 * built, given its set, recipients and tags, and checked as SMTP's end of DATA checks a
 * message. Only the env and the arguments are read. */
#include "api/api_msg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/mime.h"
#include "api/template.h"
#include "mta/accept.h"
#include "mta/events.h"
#include "mta/msgtags.h"
#include "mta/smtp_parse.h"
#include "store/event.h"

#define API_MSG_MAX_TAGS MSGTAGS_MAX
#define API_MSG_TEMPLATE_OUT_MAX (10u * 1024 * 1024)

void api_msg_init(api_msg *m)
{
    memset(m, 0, sizeof *m);
    strbuf_init(&m->data);
}

void api_msg_fail(api_msg_err *e, int status, const char *type, const char *bulk,
                  const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    free(e->msg);
    if (vasprintf(&e->msg, fmt, ap) < 0) e->msg = util_strdup(type);
    va_end(ap);
    /* the message quotes what the client sent (addresses, header fields), which need not
     * be UTF-8; the answer is JSON: bytes that are not UTF-8 become U+FFFD */
    json_t *j = event_jstr(e->msg);
    free(e->msg);
    e->msg = util_strdup(json_string_value(j));
    json_decref(j);
    e->status = status;
    e->type = type;
    e->bulk = bulk;
}

void api_msg_rejected(api_msg_err *e, const char *text)
{
    api_msg_fail(e, 400, "MessageRejected", "MESSAGE_REJECTED", "%s", text);
}

void api_msg_free(api_msg *m)
{
    free(m->mail_from);
    for (size_t i = 0; i < m->nrcpts; i++) free(m->rcpts[i]);
    free(m->rcpts);
    free(m->verdicts);
    strbuf_free(&m->data);
    msgtags_free(&m->tags);
    memset(m, 0, sizeof *m);
}

/* An SMTP reply of mta/policy.c without its codes and "Message rejected: ", as SES's API
 * words the same refusal ("Email address is not verified. The following identities ..."). */
const char *api_msg_reply_text(const char *reply)
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
int api_msg_add_list(api_msg *m, json_t *list, const char *what, api_msg_err *e)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        char *a = mime_addr_spec(json_string_value(v));
        if (!a) {
            api_msg_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
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
static int api_msg_rcpts_from_headers(api_msg *m, const msg_headers *hs, api_msg_err *e)
{
    static const char *const fields[] = {"To", "Cc", "Bcc"};
    for (size_t f = 0; f < 3; f++) {
        for (size_t i = 0; i < hs->n; i++) {
            if (strcasecmp(hs->h[i].name, fields[f]) != 0) continue;
            char **addrs = NULL;
            size_t n = message_parse_addresses(hs->h[i].value, &addrs);
            for (size_t k = 0; k < n; k++) {
                if (!smtp_addr_valid(addrs[k])) {     /* it would be an envelope recipient */
                    api_msg_fail(e, 400, "MessageRejected", "MESSAGE_REJECTED",
                                 "Illegal address: the message's %s: field holds \"%.200s\", "
                                 "which is not an email address", fields[f], addrs[k]);
                    message_addresses_free(addrs, n);
                    return -1;
                }
                if (api_msg_has_rcpt(m, addrs[k])) continue;
                m->rcpts = util_realloc(m->rcpts, (m->nrcpts + 1) * sizeof *m->rcpts);
                m->rcpts[m->nrcpts++] = util_strdup(addrs[k]);
            }
            message_addresses_free(addrs, n);
        }
    }
    return 0;
}

/* EmailTags (and SendBulkEmail's DefaultEmailTags / ReplacementTags): SES's character
 * rules, at most 50. */
int api_msg_add_tags(api_msg *m, json_t *tags, const char *what, api_msg_err *e)
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
            api_msg_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                         "%s[%zu] (%s=%s): the %s %s", what, i, name, value,
                         events_tag_check(name, true) ? "name" : "value", why);
            return -1;
        }
        msgtags *mt = &m->tags;
        if (mt->n == API_MSG_MAX_TAGS) {
            api_msg_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                         "%s: more than %d message tags", what, API_MSG_MAX_TAGS);
            return -1;
        }
        mt->names = util_realloc(mt->names, (mt->n + 1) * sizeof *mt->names);
        mt->values = util_realloc(mt->values, (mt->n + 1) * sizeof *mt->values);
        mt->names[mt->n] = util_strdup(name);
        mt->values[mt->n++] = util_strdup(value);
    }
    return 0;
}

/* A raw message's X-SES-MESSAGE-TAGS fields give its tags when EmailTags gives none (SES
 * uses only the API's tags when both are given, never a mix); the fields are removed either
 * way. A broken field is a BadRequestException naming the tag. */
static int api_msg_header_tags(api_msg *m, const msg_headers *hs, bool email_tags,
                               api_msg_err *e)
{
    if (!message_header_get(hs, MSGTAGS_HEADER)) return 0;
    m->data.len = message_strip_header(m->data.buf, m->data.len, MSGTAGS_HEADER);
    m->data.buf[m->data.len] = '\0';
    if (email_tags) return 0;
    msgtags t;
    char *err = NULL;
    if (msgtags_from_headers(hs, &t, &err) != 0) {
        api_msg_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                     "Content.Raw.Data: %s", err);
        free(err);
        return -1;
    }
    m->tags = t;                            /* m holds no tags yet: EmailTags come later */
    return 0;
}

/* ---- the configuration set ---- */

/* ConfigurationSetName, else (Raw) the message's X-SES-CONFIGURATION-SET field, else the
 * default set; the key's scope applies. The field is removed from the message. */
int api_msg_set(const api_msg_env *env, api_msg *m, const char *name, const msg_headers *hs,
                       api_msg_err *e)
{
    const config *cfg = env->cfg;
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
        api_msg_fail(e, 404, "NotFoundException", "CONFIGURATION_SET_DOES_NOT_EXIST",
                     "Configuration set %s does not exist.", name);
        free(from_header);
        return -1;
    }
    free(from_header);
    m->set = cs ? cs->name : cfg->default_set;
    if (!m->set) {
        api_msg_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                     "No configuration set: name one with ConfigurationSetName (the config "
                     "has no configuration_sets.default)");
        return -1;
    }
    if (!policy_user_may_use_set(env->key ? &env->key->scope : NULL, m->set)) {
        char acct[16];
        accept_sending_account_id(env->cfg->hostname, acct);
        api_msg_fail(e, 403, "AccessDeniedException", "MESSAGE_REJECTED",
                     "User '%s' is not authorized to perform 'ses:SendEmail' on resource "
                     "'arn:aws:ses:%s:%s:configuration-set/%s'", env->key_id, cfg->region,
                     acct, m->set);
        return -1;
    }
    return 0;
}

/* ---- building the message ---- */

static const char *api_msg_charset(json_t *content)
{
    return json_string_value(json_object_get(content, "Charset"));
}

static const char *api_msg_data(json_t *content)
{
    return json_string_value(json_object_get(content, "Data"));
}

/* Content.Simple, or a rendered template (subject/text/html given), into m->data. */
static int api_msg_build_simple(const api_msg_env *env, api_msg *m, const char *from, json_t *dest,
                                json_t *subject, json_t *text, json_t *html, const char *s_txt,
                                const char *t_txt, const char *h_txt, api_msg_err *e)
{
    json_t *to = json_object_get(dest, "ToAddresses");
    json_t *cc = json_object_get(dest, "CcAddresses");
    json_t *rt = json_object_get(env->in, "ReplyToAddresses");
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
        .subject = {s_txt ? s_txt : api_msg_data(subject), api_msg_charset(subject)},
        .text = {t_txt ? t_txt : api_msg_data(text), api_msg_charset(text)},
        .html = {h_txt ? h_txt : api_msg_data(html), api_msg_charset(html)},
        .now_ms = env->now_ms,
        .boundary_seed = seed,
    };
    size_t len = 0;
    char *err = NULL;
    char *msg = mime_build_simple(&ms, &len, &err);
    free(tov);
    free(ccv);
    free(rtv);
    if (!msg) {
        api_msg_fail(e, 400, "BadRequestException", "INVALID_PARAMETER", "%s",
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
json_t *api_msg_template_data(const char *text, const char *over, const char *what,
                                 api_msg_err *e)
{
    json_error_t je;
    json_t *d = json_loads(text ? text : "{}", JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(d)) {
        api_msg_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                     "%s is not a JSON object%s%s", what, d ? "" : ": ", d ? "" : je.text);
        json_decref(d);
        return NULL;
    }
    if (over) {
        json_t *o = json_loads(over, JSON_REJECT_DUPLICATES, &je);
        if (!json_is_object(o)) {
            api_msg_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
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
int api_msg_build_template(const api_msg_env *env, api_msg *m, const char *from, json_t *dest,
                                  const char *name, const json_t *data, api_msg_err *e)
{
    char *subject = NULL, *text = NULL, *html = NULL;
    char *terr = NULL;
    if (!env->template_get) util_fatal("api_msg: template %s without a template getter", name);
    int rc = env->template_get(env->template_arg, name, &subject, &text, &html, &terr);
    if (rc != 0) {
        if (rc > 0)
            api_msg_fail(e, 404, "NotFoundException", "TEMPLATE_DOES_NOT_EXIST",
                         "Template %s does not exist.", name);
        else
            api_msg_fail(e, 500, "InternalFailure", "TRANSIENT_FAILURE",
                         "The template %s could not be read: %s", name,
                         terr ? terr : "spool error");
        free(terr);
        return -1;
    }
    char *rs = NULL, *rt = NULL, *rh = NULL, *err = NULL;
    const char *part = "Subject";
    rs = template_render(subject ? subject : "", data, API_MSG_TEMPLATE_OUT_MAX, &err);
    if (rs && text) {
        part = "Text";
        rt = template_render(text, data, API_MSG_TEMPLATE_OUT_MAX, &err);
    }
    if (rs && (!text || rt) && html) {
        part = "Html";
        rh = template_render(html, data, API_MSG_TEMPLATE_OUT_MAX, &err);
    }
    rc = -1;
    if (err) {
        api_msg_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                     "Template %s (%s): %s", name, part, err);
    } else {
        rc = api_msg_build_simple(env, m, from, dest, NULL, NULL, NULL, rs, text ? rt : NULL,
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
static int api_msg_build_raw(const api_msg_env *env, api_msg *m, json_t *raw, api_msg_err *e)
{
    const char *b64 = api_msg_data(raw);
    size_t len = 0;
    char *err = NULL;
    char *msg = NULL;
    api_msg_raw *pre = env->raw;
    if (pre && b64 && pre->b64 == b64) {           /* decoded already: taken */
        msg = pre->msg;
        len = pre->len;
        err = pre->err;
        memset(pre, 0, sizeof *pre);
    } else {
        msg = mime_raw_decode(b64 ? b64 : "", b64 ? strlen(b64) : 0,
                              (size_t)env->cfg->max_message_size, &len, &err);
    }
    if (!msg) {
        bool big = err && strstr(err, "larger than");
        if (big)
            api_msg_rejected(e, err);
        else
            api_msg_fail(e, 400, "BadRequestException", "INVALID_PARAMETER", "%s",
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
int api_msg_check_content(const api_msg_env *env, api_msg *m, bool rcpts_from_headers,
                                 const char *from_param, api_msg_err *e)
{
    const config *cfg = env->cfg;
    const config_auth_user *scope = env->key ? &env->key->scope : NULL;
    if ((int64_t)m->data.len > cfg->max_message_size) {
        api_msg_rejected(e, "Message length is more than the account's maximum message size");
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
    accept_sending_account_id(env->cfg->hostname, acct);
    char *r = NULL;
    if (lim) {
        api_msg_rejected(e, lim);
        goto out;
    }
    if (rcpts_from_headers && api_msg_rcpts_from_headers(m, &hs, e) != 0) goto out;
    /* the envelope sender: FromEmailAddress, else the From: field */
    if (from_param) {
        m->mail_from = mime_addr_spec(from_param);
        if (!m->mail_from) {
            api_msg_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                         "FromEmailAddress is not a valid email address: %s", from_param);
            goto out;
        }
    } else {
        char **addrs = NULL;
        size_t n = message_parse_addresses(message_header_get(&hs, "From"), &addrs);
        if (n == 0) {
            message_addresses_free(addrs, n);
            api_msg_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
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
            api_msg_fail(e, 403, "AccessDeniedException", "MESSAGE_REJECTED", "%s",
                         api_msg_reply_text(r));
        else
            api_msg_rejected(e, api_msg_reply_text(r));
        free(r);
        goto out;
    }
    rc = 0;
out:
    message_headers_free(&hs);
    return rc;
}

int api_msg_email(const api_msg_env *env, api_msg *m, api_msg_err *e)
{
    json_t *in = env->in;
    json_t *content = json_object_get(in, "Content");
    json_t *simple = json_object_get(content, "Simple");
    json_t *raw = json_object_get(content, "Raw");
    json_t *tmpl = json_object_get(content, "Template");
    json_t *from_v = json_object_get(in, "FromEmailAddress");
    const char *from = json_is_string(from_v) ? json_string_value(from_v) : NULL;
    json_t *dest = json_object_get(in, "Destination");
    json_t *set_v = json_object_get(in, "ConfigurationSetName");
    const char *set = json_is_string(set_v) ? json_string_value(set_v) : NULL;
    if (!!simple + !!raw + !!tmpl != 1) {
        api_msg_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                     "Content must hold exactly one of Simple, Raw and Template");
        return -1;
    }
    if (!raw && !from) {
        api_msg_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                     "FromEmailAddress is required unless Content.Raw is used");
        return -1;
    }
    if (!raw && !dest) {
        api_msg_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                     "Destination is required unless Content.Raw is used");
        return -1;
    }
    int rc = 0;
    if (simple) {
        json_t *body = json_object_get(simple, "Body");
        rc = api_msg_build_simple(env, m, from, dest, json_object_get(simple, "Subject"),
                                  json_object_get(body, "Text"), json_object_get(body, "Html"),
                                  NULL, NULL, NULL, e);
    } else if (tmpl) {
        const char *name = json_string_value(json_object_get(tmpl, "TemplateName"));
        if (!name) {
            api_msg_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                         "Content.Template.TemplateName is required (TemplateArn is not "
                         "supported)");
            return -1;
        }
        json_t *data = api_msg_template_data(
            json_string_value(json_object_get(tmpl, "TemplateData")), NULL,
            "Content.Template.TemplateData", e);
        rc = data ? api_msg_build_template(env, m, from, dest, name, data, e) : -1;
        json_decref(data);
    } else {
        rc = api_msg_build_raw(env, m, raw, e);
    }
    if (rc == 0) {
        msg_headers hs;
        message_parse_headers(m->data.buf, m->data.len, &hs);
        rc = api_msg_set(env, m, set, raw ? &hs : NULL, e);
        if (rc == 0 && raw)
            rc = api_msg_header_tags(m, &hs,
                                     json_array_size(json_object_get(in, "EmailTags")) > 0, e);
        message_headers_free(&hs);
    }
    if (rc == 0 && dest) {
        rc = api_msg_add_list(m, json_object_get(dest, "ToAddresses"),
                              "Destination.ToAddresses", e);
        if (rc == 0)
            rc = api_msg_add_list(m, json_object_get(dest, "CcAddresses"),
                                  "Destination.CcAddresses", e);
        if (rc == 0)
            rc = api_msg_add_list(m, json_object_get(dest, "BccAddresses"),
                                  "Destination.BccAddresses", e);
    }
    if (rc == 0) rc = api_msg_check_content(env, m, raw && !dest, from, e);
    if (rc == 0 && raw) {                 /* Bcc: is for the envelope only */
        m->data.len = message_strip_header(m->data.buf, m->data.len, "Bcc");
        m->data.buf[m->data.len] = '\0';
    }
    if (rc == 0) rc = api_msg_add_tags(m, json_object_get(in, "EmailTags"), "EmailTags", e);
    return rc;
}

int api_msg_bulk_entry(const api_msg_env *env, json_t *entry, api_msg *m, api_msg_err *e)
{
    json_t *in = env->in;
    json_t *tmpl = json_object_get(json_object_get(in, "DefaultContent"), "Template");
    const char *tname = json_string_value(json_object_get(tmpl, "TemplateName"));
    const char *tdata = json_string_value(json_object_get(tmpl, "TemplateData"));
    const char *from = json_string_value(json_object_get(in, "FromEmailAddress"));
    const char *set = json_string_value(json_object_get(in, "ConfigurationSetName"));
    json_t *dest = json_object_get(entry, "Destination");
    json_t *repl = json_object_get(json_object_get(entry, "ReplacementEmailContent"),
                                   "ReplacementTemplate");
    const char *over = json_string_value(json_object_get(repl, "ReplacementTemplateData"));
    json_t *data = api_msg_template_data(tdata, over, "DefaultContent.Template.TemplateData", e);
    /* the message's To/Cc come from this entry's Destination */
    int rc = data ? api_msg_build_template(env, m, from, dest, tname ? tname : "", data, e) : -1;
    json_decref(data);
    if (rc == 0) rc = api_msg_set(env, m, set, NULL, e);
    if (rc == 0) rc = api_msg_add_list(m, json_object_get(dest, "ToAddresses"),
                                       "Destination.ToAddresses", e);
    if (rc == 0) rc = api_msg_add_list(m, json_object_get(dest, "CcAddresses"),
                                       "Destination.CcAddresses", e);
    if (rc == 0) rc = api_msg_add_list(m, json_object_get(dest, "BccAddresses"),
                                       "Destination.BccAddresses", e);
    if (rc == 0) rc = api_msg_check_content(env, m, false, from, e);
    if (rc == 0) rc = api_msg_add_tags(m, json_object_get(in, "DefaultEmailTags"),
                                       "DefaultEmailTags", e);
    if (rc == 0) rc = api_msg_add_tags(m, json_object_get(entry, "ReplacementTags"),
                                       "ReplacementTags", e);
    return rc;
}

int api_msg_tpl_get(void *arg, const char *name, char **subject, char **text, char **html,
                    char **err)
{
    const api_msg_tpl *t = arg;
    if (!t->name || strcmp(name, t->name) != 0 || t->rc > 0) return 1;
    if (t->rc < 0) {
        *err = util_strdup(t->err ? t->err : "spool error");
        return -1;
    }
    *subject = t->subject ? util_strdup(t->subject) : NULL;
    *text = t->text ? util_strdup(t->text) : NULL;
    *html = t->html ? util_strdup(t->html) : NULL;
    return 0;
}

void api_msg_tpl_clear(api_msg_tpl *t)
{
    free(t->name);
    free(t->subject);
    free(t->text);
    free(t->html);
    free(t->err);
    memset(t, 0, sizeof *t);
}
