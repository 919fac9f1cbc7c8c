/* control_identity.c — the control socket's identity commands: `identity.status` (the DNS
 * check runs on the loop; the answer comes when every lookup is in), `identity.dkim.generate`
 * (Easy DKIM keys into the spool, the TXT records to publish) and `identity.dkim.rotate`.
 * Each answers its request exactly once, with kiln's data and a "Text" for kilnctl's table. */
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/control_internal.h"
#include "mta/delivery.h"
#include "mta/dkim_keys.h"
#include "mta/idstate.h"

static void control_identity_answer(void *arg, json_t *data, const char *error)
{
    control_pending *p = arg;
    if (error) {
        control_pending_answer(p, NULL, NULL, error);
        return;
    }
    json_t *msg = json_object();
    json_object_set_new(msg, "ok", json_true());
    json_object_set(msg, "data", data);
    char *line = json_dumps(msg, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(msg);
    if (!line) util_fatal("control: cannot encode the identity status");
    control_pending_answer(p, line, NULL, NULL);
    free(line);
}

void control_identity_status(control_client *cl, const control_request *req)
{
    kiln_ctx *ctx = cl->ctl->ctx;
    idstate *id = ctx->delivery ? delivery_identity(ctx->delivery) : NULL;
    if (!id) {
        const char *e = "no DNS resolver: kilnd cannot look the records up (see the log's scheduler.dns)";
        control_reply_error(cl, e);
        control_log_cmd(cl->ctl, req->name, req->domain, e);
        return;
    }
    control_pending *p = control_wait(cl, req->name, req->domain);
    char *err = NULL;
    if (idstate_status(id, req->domain, control_identity_answer, p, &err) < 0) {
        control_pending_answer(p, NULL, NULL, err);
        free(err);
    }
}

/* {"Domain", "Selector", "Records": [{Name, Type, Value}], "Text"} for the selectors of
 * domain in the generation sel (sel and sel + "e"). */
static json_t *control_identity_records(kiln_ctx *ctx, const char *domain, const char *sel,
                                        const char *intro)
{
    size_t n = 0;
    dkim_keys_sel *v = dkim_keys_selectors(ctx->dkim, domain, &n);
    json_t *recs = json_array();
    strbuf text;
    strbuf_init(&text);
    strbuf_printf(&text, "%s\n", intro);
    size_t slen = strlen(sel);
    for (size_t i = 0; i < n; i++) {
        bool mine = strcmp(v[i].selector, sel) == 0 ||
                    (strncmp(v[i].selector, sel, slen) == 0 && strcmp(v[i].selector + slen, "e") == 0 &&
                     v[i].alg == DKIM_ALG_ED25519_SHA256);
        if (!mine) continue;
        char *name = util_asprintf("%s._domainkey.%s", v[i].selector, domain);
        json_t *r = json_object();
        json_object_set_new(r, "Name", json_string(name));
        json_object_set_new(r, "Type", json_string("TXT"));
        json_object_set_new(r, "Value", json_string(v[i].txt));
        json_object_set_new(r, "Algorithm", json_string(dkim_alg_name(v[i].alg)));
        json_array_append_new(recs, r);
        char *q = dkim_txt_quote(v[i].txt);
        strbuf_printf(&text, "  %s TXT %s\n", name, q);
        free(q);
        free(name);
    }
    dkim_keys_sels_free(v, n);
    json_t *d = json_object();
    json_object_set_new(d, "Domain", json_string(domain));
    json_object_set_new(d, "Selector", json_string(sel));
    json_object_set_new(d, "Records", recs);
    json_object_set_new(d, "Text", json_string(text.buf ? text.buf : ""));
    strbuf_free(&text);
    return d;
}

void control_identity_dkim(control_client *cl, const control_request *req, bool rotate)
{
    kiln_ctx *ctx = cl->ctl->ctx;
    char *sel = NULL, *err = NULL;
    int rc = rotate ? dkim_keys_rotate(ctx->dkim, req->domain, &sel, &err)
                    : dkim_keys_generate(ctx->dkim, ctx->cfg, req->domain, req->selector,
                                         req->ed25519, &sel, &err);
    if (rc < 0) {
        control_reply_error(cl, err);
        control_log_cmd(cl->ctl, req->name, req->domain, err);
        free(err);
        return;
    }
    char *intro = rotate
        ? util_asprintf("%s now signs with selector %s; keep the old selector's record published "
                        "until mail signed with it has been delivered", req->domain, sel)
        : util_asprintf("publish these TXT records; kiln signs with selector %s once they are live "
                        "(check: kilnctl identity status %s):", sel, req->domain);
    control_reply_ok(cl, control_identity_records(ctx, req->domain, sel, intro));
    control_log_cmd(cl->ctl, req->name, req->domain, NULL);
    free(intro);
    free(sel);
    idstate *id = ctx->delivery ? delivery_identity(ctx->delivery) : NULL;
    if (id) idstate_recheck(id);
}
