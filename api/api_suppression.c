/* api_suppression.c — the SES v2 API's account suppression list: PutSuppressedDestination,
 * GetSuppressedDestination, DeleteSuppressedDestination, ListSuppressedDestinations, over
 * the same spool table as `kilnctl suppression` and the suppression kiln adds after bounces
 * and complaints (addresses lower-case), so an address put here is refused at RCPT like any
 * other. Shapes as botocore's sesv2 2019-09-27 model; timestamps epoch seconds.
 *
 * Promises: a put or a delete is answered only once its spool batch is committed (200), or
 * 500 InternalFailure with the spool's error when the batch failed; each logs one api.cmd
 * line with the fields of the control socket's (cmd=suppression.add|suppression.remove
 * address= ok= error=), so both paths read the same in the logs. Put takes one addr-spec
 * (mta/smtp_parse.h's syntax, as RCPT TO checks it: no display name, no angle brackets);
 * Get and Delete look the address up as given (lower-cased), 404 NotFoundException when it
 * is not listed. Get sees the loop's writes not committed yet; List shows committed entries
 * in address order, filtered by Reasons and by [StartDate, EndDate) on the last update
 * time, PageSize 1..1000 (default 1000), NextToken the last address shown (the filters
 * are not in it: the client sends them again, as SES's CLI paginator does). Attributes
 * (MessageId, FeedbackId) are left out: kiln does not keep which message caused an
 * entry. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "base/util.h"
#include "mta/smtp_parse.h"
#include "store/spool.h"

#define API_SUPP_PAGE_DEFAULT 1000
#define API_SUPP_PAGE_MAX 1000

static json_t *api_supp_str(const char *s)
{
    json_t *j = json_string(s ? s : "");
    return j ? j : json_string("");
}

static json_t *api_supp_time(int64_t ms)
{
    return json_real((double)ms / 1000.0);
}

/* The address as the spool keeps it (malloc'd, lower-case). */
static char *api_supp_lower(const char *address)
{
    char *lc = util_strdup(address ? address : "");
    util_lowercase(lc);
    return lc;
}

/* One line as control.c's control_log_cmd writes, under api.cmd, with the operation and
 * the access key. */
static void api_supp_log(api_call *c, const char *cmd, const char *address, const char *error)
{
    klog *lg = c->ctx->log;
    if (!log_enabled(lg, KLOG_INFO)) return;
    strbuf sb;
    strbuf_init(&sb);
    strbuf_printf(&sb, "cmd=%s", log_q(lg, cmd));
    if (address) strbuf_printf(&sb, " address=%s", log_q(lg, address));
    strbuf_printf(&sb, " ok=%s", error ? "false" : "true");
    if (error) strbuf_printf(&sb, " error=%s", log_q(lg, error));
    strbuf_printf(&sb, " op=%s key=%s", log_q(lg, c->op), log_q(lg, c->key ? c->key->id : ""));
    log_write(lg, KLOG_INFO, "api.cmd", "%s", sb.buf);
    strbuf_free(&sb);
}

static const char *api_supp_cmd(const api_call *c)
{
    return strcmp(c->op, "DeleteSuppressedDestination") == 0 ? "suppression.remove"
                                                              : "suppression.add";
}

static void api_supp_committed(void *arg, bool ok, const char *err)
{
    api_call *c = arg;
    char *addr = api_supp_lower(api_in_str(c, "EmailAddress"));
    const char *cmd = api_supp_cmd(c);
    if (ok) {
        api_supp_log(c, cmd, addr, NULL);
        free(addr);
        api_ok(c, NULL);
        return;
    }
    char *e = util_asprintf("cannot update the suppression list: %s",
                            err ? err : "the spool commit failed");
    api_supp_log(c, cmd, addr, e);
    api_error(c, 500, "InternalFailure", "%s", e);
    free(e);
    free(addr);
}

void api_op_put_suppressed_destination(api_call *c)
{
    const char *address = api_in_str(c, "EmailAddress");
    const char *reason = api_in_str(c, "Reason");
    if (!address || !smtp_addr_valid(address)) {
        API_BAD_REQUEST(c, "EmailAddress %s is not a valid email address: one local@domain "
                        "address is needed", address ? address : "");
        return;
    }
    if (!reason || (strcmp(reason, "BOUNCE") != 0 && strcmp(reason, "COMPLAINT") != 0)) {
        API_BAD_REQUEST(c, "Reason must be one of BOUNCE, COMPLAINT");
        return;
    }
    kiln_ctx *ctx = c->ctx;
    if (spool_suppression_put(ctx->spool, address, reason, c->now_ms) != 0) {
        char *addr = api_supp_lower(address);
        char *e = util_asprintf("cannot update the suppression list: %s", spool_errmsg(ctx->spool));
        api_supp_log(c, "suppression.add", addr, e);
        api_error(c, 500, "InternalFailure", "%s", e);
        free(e);
        free(addr);
        return;
    }
    spool_on_commit(ctx->spool, api_supp_committed, c);
}

void api_op_delete_suppressed_destination(api_call *c)
{
    kiln_ctx *ctx = c->ctx;
    char *addr = api_supp_lower(api_in_str(c, "EmailAddress"));
    bool existed = false;
    if (spool_suppression_delete(ctx->spool, addr, &existed) != 0) {
        char *e = util_asprintf("cannot update the suppression list: %s", spool_errmsg(ctx->spool));
        api_supp_log(c, "suppression.remove", addr, e);
        api_error(c, 500, "InternalFailure", "%s", e);
        free(e);
    } else if (!existed) {
        /* the recorded delete changes nothing */
        char *e = util_asprintf("%s is not on the suppression list", addr);
        api_supp_log(c, "suppression.remove", addr, e);
        API_NOT_FOUND(c, "Email address %s does not exist on your suppression list.", addr);
        free(e);
    } else {
        spool_on_commit(ctx->spool, api_supp_committed, c);
    }
    free(addr);
}

void api_op_get_suppressed_destination(api_call *c)
{
    kiln_ctx *ctx = c->ctx;
    char *addr = api_supp_lower(api_in_str(c, "EmailAddress"));
    bool found = false;
    char *reason = NULL;
    int64_t at = 0;
    if (spool_suppression_get(ctx->spool, addr, &found, &reason, &at) != 0) {
        api_error(c, 500, "InternalFailure", "cannot read the suppression list: %s",
                  spool_errmsg(ctx->spool));
    } else if (!found) {
        API_NOT_FOUND(c, "Email address %s does not exist on your suppression list.", addr);
    } else {
        json_t *d = json_object();
        json_object_set_new(d, "EmailAddress", api_supp_str(addr));
        json_object_set_new(d, "Reason", api_supp_str(reason));
        json_object_set_new(d, "LastUpdateTime", api_supp_time(at));
        json_t *out = json_object();
        json_object_set_new(out, "SuppressedDestination", d);
        api_ok(c, out);
    }
    free(reason);
    free(addr);
}

/* ---- ListSuppressedDestinations ---- */

typedef struct api_supp_page {
    json_t *list;
    size_t n, max;
    char *last;            /* the last address shown */
    bool more;             /* a row past the page exists */
} api_supp_page;

static void api_supp_row(void *arg, const char *address, const char *reason, int64_t updated_ms)
{
    api_supp_page *p = arg;
    if (p->n == p->max) {
        p->more = true;
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "EmailAddress", api_supp_str(address));
    json_object_set_new(o, "Reason", api_supp_str(reason));
    json_object_set_new(o, "LastUpdateTime", api_supp_time(updated_ms));
    json_array_append_new(p->list, o);
    free(p->last);
    p->last = util_strdup(address);
    p->n++;
}

/* A timestamp member (epoch seconds, a JSON number) as milliseconds, clamped to int64;
 * `absent` when the request has none. */
static int64_t api_supp_ms(const api_call *c, const char *name, int64_t absent)
{
    json_t *v = api_in(c, name);
    if (!json_is_number(v)) return absent;
    double ms = json_number_value(v) * 1000.0;
    if (isnan(ms)) return absent;
    if (ms <= -9.2e18) return INT64_MIN;
    if (ms >= 9.2e18) return INT64_MAX;
    return (int64_t)llround(ms);
}

void api_op_list_suppressed_destinations(api_call *c)
{
    unsigned reasons = 0;   /* none given: any */
    json_t *rs = api_in(c, "Reasons");
    size_t i;
    json_t *r;
    json_array_foreach(rs, i, r) {
        const char *s = json_string_value(r);
        if (s && strcmp(s, "BOUNCE") == 0) reasons |= CONFIG_SUPPRESS_BOUNCE;
        else if (s && strcmp(s, "COMPLAINT") == 0) reasons |= CONFIG_SUPPRESS_COMPLAINT;
        else {
            API_BAD_REQUEST(c, "Reasons[%zu] must be one of BOUNCE, COMPLAINT", i);
            return;
        }
    }
    int64_t since = api_supp_ms(c, "StartDate", INT64_MIN);
    int64_t until = api_supp_ms(c, "EndDate", INT64_MAX);
    size_t max;
    char *after;
    if (api_page_args(c, API_SUPP_PAGE_DEFAULT, API_SUPP_PAGE_MAX, "InvalidNextTokenException",
                      &max, &after) < 0)
        return;
    api_supp_page p = {.list = json_array(), .max = max};
    /* one row more than the page: whether a NextToken is due */
    int rc = spool_suppression_page(c->ctx->spool, after, since, until, reasons, max + 1,
                                    api_supp_row, &p);
    free(after);
    if (rc != 0) {
        json_decref(p.list);
        free(p.last);
        api_error(c, 500, "InternalFailure", "cannot read the suppression list: %s",
                  spool_errmsg(c->ctx->spool));
        return;
    }
    json_t *out = json_object();
    json_object_set_new(out, "SuppressedDestinationSummaries", p.list);
    if (p.more && p.last) {
        char *next = api_next_token(c->op, p.last);
        json_object_set_new(out, "NextToken", api_supp_str(next));
        free(next);
    }
    free(p.last);
    api_ok(c, out);
}
