/* api_send.c — SendEmail and SendBulkEmail: the SES API's way in to the same acceptance as
 * SMTP submission. A message is built (Content.Simple through api/mime.c, Content.Template
 * through the stored template and api/template.c, Content.Raw decoded), its header section
 * checked with SMTP's limits, then every rule of SMTP submission applies in the same terms
 * (mta/policy.h: verified sender and header identities, the key's scope, sandbox
 * recipients, max_recipients, send rate, 24 h quota, suppression) and the whole message
 * goes to mta/accept.c in one spool batch. Everything up to the recipients' checks is
 * api/api_msg.c's (it reads no daemon state, templates aside); what needs kilnd's state is
 * here. MessageId is answered only after the commit; a failed commit answers 500
 * InternalFailure (nothing kept: the SDK retries). A request is all or nothing: a recipient
 * refused refuses the message, and the quota reserved for the others is given back. SES's API errors: MessageRejected, TooManyRequestsException (send
 * rate), LimitExceededException (24 h quota), NotFoundException (set, template),
 * BadRequestException (malformed content). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "api/api_msg.h"
#include "api/api_prep.h"
#include "base/util.h"
#include "mta/accept.h"
#include "mta/cluster.h"
#include "mta/cluster_limits.h"
#include "mta/policy.h"
#include "mta/quota.h"
#include "store/event.h"
#include "store/spool.h"

#define API_SEND_LIMIT_ASKS 3      /* cluster leases one SendEmail may wait for */
#define API_BULK_MAX_ENTRIES 50          /* SES's BulkEmailEntries limit */
#define API_BULK_UNCOMMITTED_MAX (16 * 1024 * 1024)  /* a bulk call's bytes not committed */

/* What api/api_msg.c builds and checks the call's messages against. No template getter:
 * a template's message is built on a worker (api_send_job_new gives it one). */
static void api_send_env(api_call *c, api_msg_env *env)
{
    *env = (api_msg_env){
        .cfg = c->cfg, .key = c->key, .key_id = c->key_id, .in = c->in, .now_ms = c->now_ms,
        .raw = c->prep ? &c->prep->raw : NULL,
    };
}

/* Recipients through policy_check_rcpt, as RCPT TO is: all accepted, or none (the 24 h
 * slots already reserved are released). */
static int api_send_check_rcpts(api_call *c, api_msg *m, api_msg_err *e)
{
    kiln_ctx *ctx = c->ctx;
    if (m->nrcpts == 0) {
        api_msg_fail(e, 400, "BadRequestException", "INVALID_PARAMETER",
                     "The message has no recipients: Destination lists none");
        return -1;
    }
    if ((int64_t)m->nrcpts > c->cfg->max_recipients) {
        api_msg_fail(e, 400, "MessageRejected", "MESSAGE_REJECTED",
                     "Recipient count exceeds %d.", c->cfg->max_recipients);
        return -1;
    }
    m->verdicts = util_calloc(m->nrcpts, sizeof *m->verdicts);
    for (size_t i = 0; i < m->nrcpts; i++) {
        bool suppressed = false;
        if (spool_suppression_get(ctx->spool, m->rcpts[i], &suppressed, NULL, NULL) != 0) {
            api_msg_fail(e, 500, "InternalFailure", "TRANSIENT_FAILURE",
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
                api_msg_fail(e, 429, "TooManyRequestsException", "ACCOUNT_THROTTLED",
                             "Maximum sending rate exceeded.");
                e->rate = true;
            } else if (strcmp(r, POLICY_REPLY_QUOTA) == 0) {
                api_msg_fail(e, 400, "LimitExceededException", "ACCOUNT_DAILY_QUOTA_EXCEEDED",
                             "Daily message quota exceeded.");
                e->daily = true;
            }
            else
                api_msg_rejected(e, api_msg_reply_text(r));
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

typedef void (*api_send_done_fn)(void *arg, bool ok, const char *id, const char *err);

typedef struct api_send_accepting {
    kiln_ctx *ctx;
    unsigned reserved;
    api_send_done_fn done;
    void *arg;
} api_send_accepting;

static void api_send_accepted(void *arg, bool ok, const char *id, const char *err)
{
    api_send_accepting *a = arg;
    if (ok) quota_daily_commit(a->ctx->quota, a->reserved, kiln_now_ms(a->ctx));
    else quota_daily_release(a->ctx->quota, a->reserved);
    a->done(a->arg, ok, id, err);
    free(a);
}

/* Hands m (checked) to accept.c; done runs after the commit. m's data is taken. */
static int api_send_accept(api_call *c, api_msg *m, api_send_done_fn done, void *arg,
                           api_msg_err *e)
{
    api_send_accepting *a = util_calloc(1, sizeof *a);
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
        .tag_names = m->tags.names,
        .tag_values = m->tags.values,
        .ntags = m->tags.n,
    };
    m->reserved = 0;                    /* a owns the reservation now */
    if (accept_message(c->ctx, &in, api_send_accepted, a) != 0) {
        quota_daily_release(c->ctx->quota, a->reserved);
        free(a);
        api_msg_fail(e, 500, "InternalFailure", "TRANSIENT_FAILURE",
                     "Temporary failure: the message could not be queued");
        return -1;
    }
    return 0;
}

/* ---- SendEmail ---- */

static void api_send_reply(api_call *c, api_msg_err *e)
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
static bool api_send_limit_wait(api_call *c, const api_msg *m, const api_msg_err *e)
{
    if ((!e->rate && !e->daily) || c->limit_asks >= API_SEND_LIMIT_ASKS) return false;
    unsigned n = (unsigned)m->nrcpts;
    if (!cluster_limits_ask(cluster_get_limits(c->ctx->cluster), e->rate ? n : 0,
                            e->daily ? n : 0, api_send_limit_answered, c))
        return false;
    c->limit_asks++;
    return true;
}

/* ---- building on a worker ---- */

/* A message built by api/api_msg.c on a worker of the API's pool: a template's message
 * (SendEmail's Content.Template or one SendBulkEmail entry), as rendering a part may take
 * 10 MB, or a SendEmail whose request body is large (a Simple body's MIME encoding, a Raw
 * message's copy and header edits). The template is read on the loop first (the job's tpl, or the bulk call's), so
 * the worker reads only what the call holds and the loop leaves alone meanwhile. */
typedef struct api_send_job {
    api_call *c;
    api_msg_env env;
    api_msg_tpl tpl;              /* SendEmail's template (a bulk call holds its own) */
    json_t *entry;                /* SendBulkEmail: the entry; NULL: SendEmail */
    struct api_bulk *b;
    size_t i;                     /* the entry's index */
    api_msg m;
    api_msg_err e;
    int rc;
} api_send_job;

static void api_send_job_work(void *arg, void *ctx)
{
    (void)ctx;
    api_send_job *j = arg;
    j->rc = j->entry ? api_msg_bulk_entry(&j->env, j->entry, &j->m, &j->e)
                     : api_msg_email(&j->env, &j->m, &j->e);
}

static void api_send_job_free(api_send_job *j)
{
    api_msg_tpl_clear(&j->tpl);
    api_msg_free(&j->m);
    free(j->e.msg);
    free(j);
}

/* A job for call c whose worker reads the template tpl (which stays as it is while the
 * job is out). */
static api_send_job *api_send_job_new(api_call *c, api_msg_tpl *tpl)
{
    api_send_job *j = util_calloc(1, sizeof *j);
    j->c = c;
    api_send_env(c, &j->env);
    j->env.raw = NULL;
    j->env.template_get = api_msg_tpl_get;
    j->env.template_arg = tpl;
    api_msg_init(&j->m);
    return j;
}

/* The stored template `name`, read now into tpl (for api_msg_tpl_get). */
static void api_send_tpl_read(api_call *c, const char *name, api_msg_tpl *tpl)
{
    tpl->name = util_strdup(name);
    tpl->rc = api_template_get(c->ctx, name, &tpl->subject, &tpl->text, &tpl->html);
    if (tpl->rc < 0) tpl->err = util_strdup(spool_errmsg(c->ctx->spool));
}

/* ---- SendEmail ---- */

/* After the message is built (rc 0 with m, or -1 with e): the recipients, then the spool. */
static void api_send_email_finish(api_call *c, api_msg *m, api_msg_err *e, int rc)
{
    if (rc == 0) rc = api_send_check_rcpts(c, m, e);
    if (rc != 0 && api_send_limit_wait(c, m, e)) {
        free(e->msg);
        e->msg = NULL;
        return;
    }
    if (rc == 0) rc = api_send_accept(c, m, api_send_email_done, c, e);
    if (rc != 0) api_send_reply(c, e);
}

static void api_send_email_built(void *arg, bool dropped)
{
    api_send_job *j = arg;
    api_call *c = j->c;
    if (dropped)             /* nothing stored: the SDK retries */
        api_error(c, 503, "ServiceUnavailable", "kilnd is stopping; try again");
    else
        api_send_email_finish(c, &j->m, &j->e, j->rc);
    api_send_job_free(j);
}

void api_op_send_email(api_call *c)
{
    api_send_note_ignored(c, c->in, "ListManagementOptions",
                          "contact lists are not supported; List-Unsubscribe comes from the "
                          "set's list_unsubscribe");
    api_send_note_ignored(c, c->in, "FeedbackForwardingEmailAddress",
                          "bounces return to kiln's VERP address");
    api_send_note_ignored(c, c->in, "FromEmailAddressIdentityArn", "identities are kiln.yaml's");
    json_t *tmpl = json_object_get(api_in(c, "Content"), "Template");
    const char *tname = json_string_value(json_object_get(tmpl, "TemplateName"));
    if (tname || c->req->body_len > API_INLINE_BODY_MAX) {   /* built on a worker */
        api_send_job *j = api_send_job_new(c, NULL);
        if (tname) api_send_tpl_read(c, tname, &j->tpl);
        j->env.template_arg = &j->tpl;
        j->env.raw = c->prep ? &c->prep->raw : NULL;        /* the call's, left alone here */
        if (!api_offload(c, api_send_job_work, api_send_email_built, j)) {
            api_send_job_free(j);
            api_busy(c);
        }
        return;
    }
    api_msg_env env;
    api_send_env(c, &env);
    api_msg m;
    api_msg_init(&m);
    api_msg_err e = {0};
    int rc = api_msg_email(&env, &m, &e);
    api_send_email_finish(c, &m, &e, rc);
    api_msg_free(&m);
}

/* ---- SendBulkEmail ---- */

/* The entries are built one after another on a worker, each handed to the spool before the
 * next is built; the next one waits while the call's entries not yet committed hold
 * API_BULK_UNCOMMITTED_MAX bytes or more. So a call holds one rendered message and at most
 * about 16 MB more in the spool's batch (50 entries of 10 MB would otherwise pile up there
 * when rendering outpaces the writer). */
typedef struct api_bulk {
    api_call *c;
    json_t *entries;
    size_t n;
    size_t next;                  /* the entry to build next */
    api_msg_tpl tpl;              /* DefaultContent's template, read once for every entry */
    json_t *results;              /* BulkEmailEntryResults, in entry order */
    size_t pending;               /* entries waiting for their commit */
    size_t pending_bytes;         /* their messages' sizes */
    bool waiting;                 /* the next entry waits for commits (pending_bytes) */
    bool started;                 /* every entry has been tried */
} api_bulk;

typedef struct api_bulk_entry {
    api_bulk *b;
    size_t i;
    size_t bytes;
} api_bulk_entry;

static void api_bulk_next(api_bulk *b);

static void api_bulk_result(api_bulk *b, size_t i, const char *status, const char *error,
                            const char *id)
{
    json_t *r = json_array_get(b->results, i);
    json_object_set_new(r, "Status", json_string(status));
    if (error) json_object_set_new(r, "Error", event_jstr(error));
    if (id) json_object_set_new(r, "MessageId", json_string(id));
}

static void api_bulk_finish(api_bulk *b)
{
    if (!b->started || b->pending) return;
    json_t *o = json_object();
    json_object_set_new(o, "BulkEmailEntryResults", b->results);
    api_ok(b->c, o);
    api_msg_tpl_clear(&b->tpl);
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
    b->pending--;
    b->pending_bytes -= be->bytes;
    free(be);
    if (b->waiting && b->pending_bytes < API_BULK_UNCOMMITTED_MAX) {
        b->waiting = false;
        api_bulk_next(b);
        return;
    }
    api_bulk_finish(b);
}

/* Entry i built (rc 0 with m, or -1 with e): its recipients, then the spool. */
static void api_bulk_entry_send(api_bulk *b, size_t i, api_msg *m, api_msg_err *e, int rc)
{
    api_call *c = b->c;
    if (rc == 0) rc = api_send_check_rcpts(c, m, e);
    if (rc == 0) {
        api_bulk_entry *be = util_calloc(1, sizeof *be);
        be->b = b;
        be->i = i;
        be->bytes = m->data.len;
        b->pending++;
        b->pending_bytes += be->bytes;
        rc = api_send_accept(c, m, api_bulk_entry_done, be, e);
        if (rc != 0) {
            b->pending--;
            b->pending_bytes -= be->bytes;
            free(be);
        }
    }
    if (rc != 0) {
        api_bulk_result(b, i, e->bulk ? e->bulk : "FAILED", e->msg, NULL);
        log_write(c->ctx->log, KLOG_INFO, "api.bulk_entry", "key=%s entry=%zu status=%s error=%s",
                  c->key_id, i, e->bulk ? e->bulk : "FAILED", log_q(c->ctx->log, e->msg));
    }
}

/* Entries from `next` on that will not be built: each a TRANSIENT_FAILURE saying why. */
static void api_bulk_give_up(api_bulk *b, const char *why)
{
    for (; b->next < b->n; b->next++) api_bulk_result(b, b->next, "TRANSIENT_FAILURE", why, NULL);
    b->started = true;
    api_bulk_finish(b);
}

static void api_bulk_entry_built(void *arg, bool dropped);

/* Sends the next entry to a worker, or answers once every entry was tried. */
static void api_bulk_next(api_bulk *b)
{
    if (b->next == b->n) {
        b->started = true;
        api_bulk_finish(b);
        return;
    }
    api_send_job *j = api_send_job_new(b->c, &b->tpl);
    j->entry = json_array_get(b->entries, b->next);
    j->b = b;
    j->i = b->next;
    if (!api_offload(b->c, api_send_job_work, api_bulk_entry_built, j)) {
        api_send_job_free(j);
        api_bulk_give_up(b, "kilnd has too many requests waiting to be processed; try again");
    }
}

static void api_bulk_entry_built(void *arg, bool dropped)
{
    api_send_job *j = arg;
    api_bulk *b = j->b;
    if (dropped) {
        api_send_job_free(j);
        api_bulk_give_up(b, "kilnd is stopping; nothing was stored for this entry");
        return;
    }
    api_bulk_entry_send(b, j->i, &j->m, &j->e, j->rc);
    api_send_job_free(j);
    b->next++;
    if (b->pending_bytes >= API_BULK_UNCOMMITTED_MAX && b->next < b->n) {
        b->waiting = true;                   /* api_bulk_entry_done goes on */
        log_write(b->c->ctx->log, KLOG_DEBUG, "api.bulk_wait",
                  "key=%s next_entry=%zu uncommitted_bytes=%zu", b->c->key_id, b->next,
                  b->pending_bytes);
        return;
    }
    api_bulk_next(b);
}

void api_op_send_bulk_email(api_call *c)
{
    json_t *tmpl = json_object_get(api_in(c, "DefaultContent"), "Template");
    const char *tname = json_string_value(json_object_get(tmpl, "TemplateName"));
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
    api_msg_tpl tpl = {0};
    api_send_tpl_read(c, tname, &tpl);
    if (tpl.rc != 0) {
        if (tpl.rc > 0) API_NOT_FOUND(c, "Template %s does not exist.", tname);
        else api_error(c, 500, "InternalFailure", "The template could not be read");
        api_msg_tpl_clear(&tpl);
        return;
    }
    if (set && !config_find_set(c->cfg, set)) {
        API_NOT_FOUND(c, "Configuration set %s does not exist.", set);
        api_msg_tpl_clear(&tpl);
        return;
    }
    api_bulk *b = util_calloc(1, sizeof *b);
    b->c = c;
    b->tpl = tpl;
    b->entries = entries;
    b->n = n;
    b->results = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(b->results, json_object());
    api_bulk_next(b);
}
