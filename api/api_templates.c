/* api_templates.c — the SES v2 API's email templates: CreateEmailTemplate, GetEmailTemplate,
 * ListEmailTemplates, UpdateEmailTemplate, DeleteEmailTemplate, TestRenderEmailTemplate, and
 * api_template_get for SendEmail's Content.Template. Shapes as botocore's sesv2 2019-09-27
 * model.
 *
 * Storage: one row of the spool's kv table per template, key "template:" + TemplateName,
 * value a compact JSON object {"Subject":..,"Text":..,"Html":..,"Created": epoch ms} (absent
 * parts left out; Created kept across updates). A write (create, update, delete) is answered
 * only once its spool batch is committed: 200 then, 500 InternalFailure with the spool's
 * error if the batch failed (nothing of it was kept). Reads see the committed state and the
 * loop's own writes not committed yet (spool_kv_get); a listing sees committed rows only.
 *
 * SES's rules kept here: TemplateName 1..64 of letters, digits, '-' and '_' (checked at
 * create; any other name simply does not exist); a template holds at most 500 KB (512,000
 * bytes) of Subject, Text and Html together; it needs a Text or an Html part (a message
 * needs a body); its syntax is checked at create and update (template_check), so a broken
 * template is refused then rather than at every send. ListEmailTemplates: PageSize 1..100,
 * default 10, names in byte order, NextToken the last name shown (api_token.c), a bad
 * token BadRequestException (the operation's model has no InvalidNextTokenException).
 * TestRenderEmailTemplate answers the complete MIME message, as SES does: the parts rendered
 * with TemplateData (a JSON object in a string) by api/template.h, assembled by
 * api/mime.h's builder (a multipart/alternative when both parts exist), without a From
 * field (SES's preview has no sender: the builder's stand-in sender is removed); the template
 * is read on the loop, rendered and assembled on a worker (api_offload: a part may render
 * to 10 MB). What kiln lacks: the 20,000-template account limit (LimitExceededException) is not counted. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api_int.h"
#include "api/mime.h"
#include "api/template.h"
#include "base/util.h"
#include "store/spool.h"

#define API_TPL_PREFIX "template:"
#define API_TPL_NAME_MAX 64
#define API_TPL_MAX_BYTES (500 * 1024)           /* Subject + Text + Html */
#define API_TPL_RENDER_MAX (10 * 1024 * 1024)    /* one rendered part */
#define API_TPL_PAGE_DEFAULT 10
#define API_TPL_PAGE_MAX 100
#define API_TPL_PREVIEW_FROM "template-preview@kiln.invalid"

/* ---- the stored form ---- */

typedef struct api_tpl {
    char *subject, *text, *html;   /* NULL: no such part */
    int64_t created_ms;
} api_tpl;

static void api_tpl_free(api_tpl *t)
{
    free(t->subject);
    free(t->text);
    free(t->html);
    memset(t, 0, sizeof *t);
}

static char *api_tpl_key(const char *name)
{
    return util_asprintf(API_TPL_PREFIX "%s", name ? name : "");
}

static char *api_tpl_member(json_t *o, const char *name)
{
    const char *s = json_string_value(json_object_get(o, name));
    return s ? util_strdup(s) : NULL;
}

/* Parses a stored value: 0, or -1 when it is not one of ours. */
static int api_tpl_parse(const char *value, api_tpl *t)
{
    memset(t, 0, sizeof *t);
    json_t *o = json_loads(value, 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return -1;
    }
    t->subject = api_tpl_member(o, "Subject");
    t->text = api_tpl_member(o, "Text");
    t->html = api_tpl_member(o, "Html");
    json_t *cr = json_object_get(o, "Created");
    t->created_ms = json_is_integer(cr) ? (int64_t)json_integer_value(cr) : 0;
    json_decref(o);
    return 0;
}

static char *api_tpl_dump(const api_tpl *t)
{
    json_t *o = json_object();
    if (t->subject) json_object_set_new(o, "Subject", json_string(t->subject));
    if (t->text) json_object_set_new(o, "Text", json_string(t->text));
    if (t->html) json_object_set_new(o, "Html", json_string(t->html));
    json_object_set_new(o, "Created", json_integer((json_int_t)t->created_ms));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s) util_fatal("api_templates: cannot encode a template");
    return s;
}

/* Reads template name: 0 with *t, 1 if there is none, -1 on a spool error or a value that
 * is not a template (*err malloc'd). */
static int api_tpl_load(kiln_ctx *ctx, const char *name, api_tpl *t, char **err)
{
    memset(t, 0, sizeof *t);
    *err = NULL;
    char *key = api_tpl_key(name), *value = NULL;
    int rc = spool_kv_get(ctx->spool, key, &value);
    if (rc != 0) {
        *err = util_asprintf("cannot read template %s: %s", name, spool_errmsg(ctx->spool));
        rc = -1;
    } else if (!value) {
        rc = 1;
    } else if (api_tpl_parse(value, t) != 0) {
        *err = util_asprintf("the stored template %s is not valid JSON", name);
        rc = -1;
    }
    free(value);
    free(key);
    return rc;
}

int api_template_get(kiln_ctx *ctx, const char *name, char **subject, char **text, char **html)
{
    *subject = *text = *html = NULL;
    api_tpl t;
    char *err = NULL;
    int rc = api_tpl_load(ctx, name, &t, &err);
    if (rc < 0) log_write(ctx->log, KLOG_ERROR, "api.template", "name=%s error=%s",
                          log_q(ctx->log, name), log_q(ctx->log, err));
    free(err);
    if (rc != 0) return rc;
    *subject = t.subject;
    *text = t.text;
    *html = t.html;
    return 0;
}

/* ---- checks ---- */

static bool api_tpl_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > API_TPL_NAME_MAX) return false;
    for (const char *p = name; *p; p++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return false;
    }
    return true;
}

/* TemplateContent of the request as *t (created_ms 0): 0, or -1 after answering the error. */
static int api_tpl_content(api_call *c, const char *name, api_tpl *t)
{
    memset(t, 0, sizeof *t);
    json_t *tc = api_in(c, "TemplateContent");
    if (json_is_object(tc)) {
        t->subject = api_tpl_member(tc, "Subject");
        t->text = api_tpl_member(tc, "Text");
        t->html = api_tpl_member(tc, "Html");
    }
    if (!t->text && !t->html) {
        API_BAD_REQUEST(c, "Template %s needs a Text or an Html part", name);
        goto fail;
    }
    size_t bytes = (t->subject ? strlen(t->subject) : 0) + (t->text ? strlen(t->text) : 0) +
                   (t->html ? strlen(t->html) : 0);
    if (bytes > API_TPL_MAX_BYTES) {
        API_BAD_REQUEST(c, "Template %s is too large: %zu bytes of Subject, Text and Html; a "
                        "template holds at most 500 KB (%d bytes)", name, bytes,
                        API_TPL_MAX_BYTES);
        goto fail;
    }
    const char *parts[3] = {t->subject, t->text, t->html};
    static const char *const part_names[3] = {"Subject", "Text", "Html"};
    for (int i = 0; i < 3; i++) {
        char *err = NULL;
        if (parts[i] && template_check(parts[i], &err) != 0) {
            API_BAD_REQUEST(c, "Template %s: TemplateContent.%s: %s", name, part_names[i],
                            err ? err : "invalid template");
            free(err);
            goto fail;
        }
    }
    return 0;
fail:
    api_tpl_free(t);
    return -1;
}

/* ---- answers after the commit ---- */

static void api_tpl_log(api_call *c, const char *name, const char *error)
{
    klog *lg = c->ctx->log;
    if (!log_enabled(lg, KLOG_INFO)) return;
    log_write(lg, KLOG_INFO, "api.cmd", "op=%s template=%s ok=%s%s%s key=%s", c->op,
              log_q(lg, name ? name : ""), error ? "false" : "true", error ? " error=" : "",
              error ? log_q(lg, error) : "", log_q(lg, c->key ? c->key->id : ""));
}

static void api_tpl_committed(void *arg, bool ok, const char *err)
{
    api_call *c = arg;
    const char *name = api_in_str(c, "TemplateName");
    if (ok) {
        api_tpl_log(c, name, NULL);
        api_ok(c, NULL);
        return;
    }
    char *e = util_asprintf("template %s was not saved: %s", name ? name : "",
                            err ? err : "the spool commit failed");
    api_tpl_log(c, name, e);
    api_error(c, 500, "InternalFailure", "%s", e);
    free(e);
}

/* Records the template and answers once it is committed. */
static void api_tpl_store(api_call *c, const char *name, const api_tpl *t)
{
    char *key = api_tpl_key(name), *value = api_tpl_dump(t);
    spool_kv_put(c->ctx->spool, key, value);   /* only records: never fails */
    free(value);
    free(key);
    spool_on_commit(c->ctx->spool, api_tpl_committed, c);
}

static void api_tpl_internal(api_call *c, char *err)
{
    api_error(c, 500, "InternalFailure", "%s", err ? err : "cannot read the template");
    free(err);
}

/* ---- the operations ---- */

void api_op_create_email_template(api_call *c)
{
    const char *name = api_in_str(c, "TemplateName");
    if (!name || !api_tpl_name_ok(name)) {
        API_BAD_REQUEST(c, "TemplateName must be 1 to %d characters: letters, digits, '-' and "
                        "'_'", API_TPL_NAME_MAX);
        return;
    }
    api_tpl t, old;
    if (api_tpl_content(c, name, &t) != 0) return;
    char *err = NULL;
    int rc = api_tpl_load(c->ctx, name, &old, &err);
    api_tpl_free(&old);
    if (rc < 0) {
        api_tpl_free(&t);
        api_tpl_internal(c, err);
        return;
    }
    if (rc == 0) {
        api_tpl_free(&t);
        api_error(c, 400, "AlreadyExistsException", "Template %s already exists.", name);
        return;
    }
    t.created_ms = c->now_ms;
    api_tpl_store(c, name, &t);
    api_tpl_free(&t);
}

void api_op_update_email_template(api_call *c)
{
    const char *name = api_in_str(c, "TemplateName");
    if (!name) name = "";
    api_tpl t, old;
    char *err = NULL;
    int rc = api_tpl_load(c->ctx, name, &old, &err);
    if (rc < 0) {
        api_tpl_internal(c, err);
        return;
    }
    if (rc == 1) {
        API_NOT_FOUND(c, "Template %s does not exist.", name);
        return;
    }
    if (api_tpl_content(c, name, &t) != 0) {
        api_tpl_free(&old);
        return;
    }
    t.created_ms = old.created_ms;
    api_tpl_free(&old);
    api_tpl_store(c, name, &t);
    api_tpl_free(&t);
}

void api_op_delete_email_template(api_call *c)
{
    const char *name = api_in_str(c, "TemplateName");
    if (!name) name = "";
    char *key = api_tpl_key(name);
    bool existed = false;
    int rc = spool_kv_delete(c->ctx->spool, key, &existed);
    free(key);
    if (rc != 0) {
        api_tpl_internal(c, util_asprintf("cannot delete template %s: %s", name,
                                          spool_errmsg(c->ctx->spool)));
        return;
    }
    if (!existed) {
        /* nothing was there: the recorded delete changes nothing */
        API_NOT_FOUND(c, "Template %s does not exist.", name);
        return;
    }
    spool_on_commit(c->ctx->spool, api_tpl_committed, c);
}

static json_t *api_tpl_str(const char *s)
{
    json_t *j = json_string(s);
    return j ? j : json_string("");
}

void api_op_get_email_template(api_call *c)
{
    const char *name = api_in_str(c, "TemplateName");
    if (!name) name = "";
    api_tpl t;
    char *err = NULL;
    int rc = api_tpl_load(c->ctx, name, &t, &err);
    if (rc < 0) {
        api_tpl_internal(c, err);
        return;
    }
    if (rc == 1) {
        API_NOT_FOUND(c, "Template %s does not exist.", name);
        return;
    }
    json_t *content = json_object();
    if (t.subject) json_object_set_new(content, "Subject", api_tpl_str(t.subject));
    if (t.text) json_object_set_new(content, "Text", api_tpl_str(t.text));
    if (t.html) json_object_set_new(content, "Html", api_tpl_str(t.html));
    json_t *out = json_object();
    json_object_set_new(out, "TemplateName", api_tpl_str(name));
    json_object_set_new(out, "TemplateContent", content);
    api_tpl_free(&t);
    api_ok(c, out);
}

/* ---- ListEmailTemplates ---- */

typedef struct api_tpl_page {
    json_t *list;
    size_t n, max;
    char *last;            /* the last name shown */
    bool more;             /* a row past the page exists */
} api_tpl_page;

static void api_tpl_row(void *arg, const char *key, const char *value)
{
    api_tpl_page *p = arg;
    if (p->n == p->max) {
        p->more = true;
        return;
    }
    const char *name = key + strlen(API_TPL_PREFIX);
    api_tpl t;
    int64_t created = api_tpl_parse(value, &t) == 0 ? t.created_ms : 0;
    api_tpl_free(&t);
    json_t *o = json_object();
    json_object_set_new(o, "TemplateName", api_tpl_str(name));
    json_object_set_new(o, "CreatedTimestamp", json_real((double)created / 1000.0));
    json_array_append_new(p->list, o);
    free(p->last);
    p->last = util_strdup(name);
    p->n++;
}

void api_op_list_email_templates(api_call *c)
{
    size_t max;
    char *name;
    if (api_page_args(c, API_TPL_PAGE_DEFAULT, API_TPL_PAGE_MAX, "BadRequestException", &max,
                      &name) < 0)
        return;
    char *after = name ? api_tpl_key(name) : NULL;
    free(name);
    api_tpl_page p = {.list = json_array(), .max = max};
    /* one row more than the page: whether a NextToken is due */
    int rc = spool_kv_each_prefix(c->ctx->spool, API_TPL_PREFIX, after, max + 1, api_tpl_row, &p);
    free(after);
    if (rc != 0) {
        json_decref(p.list);
        free(p.last);
        api_tpl_internal(c, util_asprintf("cannot list the templates: %s",
                                          spool_errmsg(c->ctx->spool)));
        return;
    }
    json_t *out = json_object();
    json_object_set_new(out, "TemplatesMetadata", p.list);
    if (p.more && p.last) {
        char *next = api_next_token(c->op, p.last);
        json_object_set_new(out, "NextToken", api_tpl_str(next));
        free(next);
    }
    free(p.last);
    api_ok(c, out);
}

/* ---- TestRenderEmailTemplate ---- */

/* Removes the header field `name` (with its continuation lines) from the header section of
 * the CRLF message msg (*len bytes), in place. */
static void api_tpl_drop_field(char *msg, size_t *len, const char *name)
{
    size_t nl = strlen(name);
    char *p = msg, *end = msg + *len;
    while (p < end && !(p[0] == '\r' && p + 1 < end && p[1] == '\n')) {   /* header lines */
        char *eol = memchr(p, '\n', (size_t)(end - p));
        char *next = eol ? eol + 1 : end;
        while (next < end && (*next == ' ' || *next == '\t')) {            /* continuations */
            eol = memchr(next, '\n', (size_t)(end - next));
            next = eol ? eol + 1 : end;
        }
        if ((size_t)(end - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            memmove(p, next, (size_t)(end - next));
            end -= next - p;
            *end = '\0';
            continue;
        }
        p = next;
    }
    *len = (size_t)(end - msg);
}

/* TestRenderEmailTemplate's work, done on a worker (a part may render to 10 MB): the data
 * parsed, the template (read on the loop) rendered and built as SES shows it, and the
 * answer's JSON text; or the error, in the order the checks are made. */
typedef struct api_tpl_render {
    api_call *c;
    const char *name;             /* strings of c->in */
    const char *data_text;
    api_tpl t;                    /* read on the loop: trc 0, else 1 (none) or -1 (terr) */
    int trc;
    char *terr;
    /* out: body (the answer's JSON text), or status, type and msg */
    char *body;
    int status;
    const char *type;
    char *msg;
} api_tpl_render;

static void api_tpl_render_fail(api_tpl_render *r, int status, const char *type, char *msg)
{
    r->status = status;
    r->type = type;
    r->msg = msg;
}

/* Renders part src (NULL stays NULL): 0, or -1 with the error set. */
static int api_tpl_render_part(api_tpl_render *r, const char *src, const json_t *data,
                               char **out)
{
    *out = NULL;
    if (!src) return 0;
    char *err = NULL;
    *out = template_render(src, data, API_TPL_RENDER_MAX, &err);
    if (*out) return 0;
    api_tpl_render_fail(r, 400, "BadRequestException",
                        err ? err : util_strdup("the template cannot be rendered"));
    return -1;
}

static void api_tpl_render_work(void *arg, void *ctx)
{
    (void)ctx;
    api_tpl_render *r = arg;
    json_error_t jerr;
    json_t *data = json_loads(r->data_text ? r->data_text : "", JSON_DECODE_ANY, &jerr);
    if (!data) {
        api_tpl_render_fail(r, 400, "BadRequestException",
                            util_asprintf("TemplateData is not valid JSON: %s at line %d column %d",
                                          jerr.text, jerr.line, jerr.column));
        return;
    }
    if (!json_is_object(data)) {
        json_decref(data);
        api_tpl_render_fail(r, 400, "BadRequestException",
                            util_strdup("TemplateData is not valid JSON: it must be a JSON object"));
        return;
    }
    if (r->trc != 0) {
        json_decref(data);
        if (r->trc < 0)
            api_tpl_render_fail(r, 500, "InternalFailure",
                                util_strdup(r->terr ? r->terr : "cannot read the template"));
        else
            api_tpl_render_fail(r, 404, "NotFoundException",
                                util_asprintf("Template %s does not exist.", r->name));
        return;
    }
    char *subject = NULL, *text = NULL, *html = NULL, *msg = NULL, *err = NULL;
    if (api_tpl_render_part(r, r->t.subject, data, &subject) != 0 ||
        api_tpl_render_part(r, r->t.text, data, &text) != 0 ||
        api_tpl_render_part(r, r->t.html, data, &html) != 0)
        goto done;
    mime_simple m = {
        .from = API_TPL_PREVIEW_FROM,
        .subject = {.data = subject ? subject : ""},
        .text = {.data = text},
        .html = {.data = html},
        .now_ms = r->c->now_ms,
        .boundary_seed = r->c->request_id,
    };
    size_t len = 0;
    msg = mime_build_simple(&m, &len, &err);
    if (!msg) {
        api_tpl_render_fail(r, 400, "BadRequestException",
                            util_asprintf("Template %s: %s", r->name,
                                          err ? err : "cannot build the message"));
        free(err);
        goto done;
    }
    api_tpl_drop_field(msg, &len, "From");
    json_t *rendered = json_stringn(msg, len);
    if (!rendered) {
        api_tpl_render_fail(r, 500, "InternalFailure",
                            util_asprintf("the rendered message of template %s is not UTF-8",
                                          r->name));
        goto done;
    }
    json_t *out = json_object();
    json_object_set_new(out, "RenderedTemplate", rendered);
    r->body = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    if (!r->body) util_fatal("api: cannot encode the rendered template %s", r->name);
done:
    free(msg);
    free(subject);
    free(text);
    free(html);
    json_decref(data);
}

static void api_tpl_rendered(void *arg, bool dropped)
{
    api_tpl_render *r = arg;
    if (dropped)
        api_error(r->c, 503, "ServiceUnavailable", "kilnd is stopping; try again");
    else if (r->body)
        api_ok_text(r->c, r->body);
    else
        api_error(r->c, r->status, r->type, "%s", r->msg);
    api_tpl_free(&r->t);
    free(r->terr);
    free(r->msg);
    free(r);
}

void api_op_test_render_email_template(api_call *c)
{
    api_tpl_render *r = util_calloc(1, sizeof *r);
    r->c = c;
    r->name = api_in_str(c, "TemplateName");
    if (!r->name) r->name = "";
    r->data_text = api_in_str(c, "TemplateData");
    r->trc = api_tpl_load(c->ctx, r->name, &r->t, &r->terr);
    if (!api_offload(c, api_tpl_render_work, api_tpl_rendered, r)) {
        api_tpl_free(&r->t);
        free(r->terr);
        free(r);
        api_busy(c);
    }
}
