/* idstate.c — kilnd's view of its identities' DNS (see idstate.h): rounds of
 * identity_check lookups, one per identity, whose results set the DKIM keys' live flags and
 * the MAIL FROM domains' MX state, and, for kilnctl identity status, make its answer. */
#include "mta/idstate.h"

#include <ev.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "mta/dkim_keys.h"
#include "mta/identity_check.h"

typedef struct idstate_round idstate_round;

typedef struct idstate_slot {
    idstate_round *round;
    size_t idx;
    identity_check *check;       /* running, or NULL */
    identity_check_result *res;  /* its result, or NULL */
    char *ident;                 /* the account.identities entry checked */
} idstate_slot;

struct idstate_round {
    idstate *id;
    idstate_slot *slots;
    size_t n, pending;
    bool single;                 /* answer one identity's fields, not a list */
    idstate_status_cb cb;       /* NULL: a periodic round */
    void *arg;
    idstate_round *next;
};

typedef struct idstate_mx {
    char *domain;
    outbound_mx_state state;
} idstate_mx;

struct idstate {
    kiln_ctx *ctx;
    dns *d;
    ev_timer timer;
    idstate_round *rounds;
    bool periodic_running;
    idstate_mx *mx;
    size_t nmx;
};

static const char *idstate_domain(const char *ident)
{
    const char *at = strrchr(ident, '@');
    return at ? at + 1 : ident;
}

outbound_mx_state idstate_mx_state_op(void *arg, const char *mail_from_domain)
{
    const idstate *id = arg;
    for (size_t i = 0; i < id->nmx; i++)
        if (strcmp(id->mx[i].domain, mail_from_domain) == 0) return id->mx[i].state;
    return OUTBOUND_MX_UNKNOWN;
}

static void idstate_set_mx(idstate *id, const char *domain, outbound_mx_state st)
{
    for (size_t i = 0; i < id->nmx; i++)
        if (strcmp(id->mx[i].domain, domain) == 0) {
            if (id->mx[i].state != st)
                log_write(id->ctx->log, KLOG_INFO, "identity.mail_from", "domain=%s mx=%s", domain,
                          st == OUTBOUND_MX_OK ? "found" : "missing");
            id->mx[i].state = st;
            return;
        }
    id->mx = util_realloc(id->mx, (id->nmx + 1) * sizeof *id->mx);
    id->mx[id->nmx++] = (idstate_mx){util_strdup(domain), st};
    log_write(id->ctx->log, KLOG_INFO, "identity.mail_from", "domain=%s mx=%s", domain,
              st == OUTBOUND_MX_OK ? "found" : "missing");
}

/* What a result teaches kilnd: live DKIM records, MAIL FROM MX. */
static void idstate_apply(idstate *id, const identity_check_result *r)
{
    for (size_t i = 0; i < r->nrecords; i++) {
        const identity_record *rec = &r->records[i];
        if (rec->kind != IDENTITY_REC_DKIM || !rec->selector) continue;
        if (rec->status == IDENTITY_PUBLISHED)
            dkim_keys_set_live(id->ctx->dkim, r->domain, rec->selector, true);
        else if (rec->status == IDENTITY_MISSING || rec->status == IDENTITY_WRONG)
            dkim_keys_set_live(id->ctx->dkim, r->domain, rec->selector, false);
    }
    if (r->mail_from_domain) {
        if (r->mail_from_status == IDENTITY_SES_SUCCESS)
            idstate_set_mx(id, r->mail_from_domain, OUTBOUND_MX_OK);
        else if (r->mail_from_status != IDENTITY_SES_TEMPORARY_FAILURE)
            idstate_set_mx(id, r->mail_from_domain, OUTBOUND_MX_MISSING);
    }
}

/* GetEmailIdentity's fields for one result, under the current config and keys. */
static json_t *idstate_json(idstate *id, const identity_check_result *r, strbuf *text)
{
    const config *cfg = id->ctx->cfg;
    size_t n = 0;
    dkim_keys_sel *sels = dkim_keys_selectors(id->ctx->dkim, r->domain, &n);
    identity_json_opts o = {.verified_for_sending = true};
    for (size_t i = 0; i < n; i++) {
        if (sels[i].easy) o.easy_dkim = true;
        if (sels[i].active && sels[i].alg == DKIM_ALG_RSA_SHA256) o.current_key_bits = sels[i].bits;
        if (sels[i].easy && sels[i].created_ms / 1000 > o.last_key_generation_s)
            o.last_key_generation_s = sels[i].created_ms / 1000;
    }
    int idx = config_identity_index(cfg, r->identity);
    if (idx >= 0 && cfg->identity_auth)
        o.reject_on_mx_failure = cfg->identity_auth[idx].mx_failure == CONFIG_MXFAIL_REJECT;
    json_t *j = identity_check_to_json(r, &o);
    char *t = identity_check_to_text(r);
    strbuf_puts(text, t);
    for (size_t i = 0; i < n; i++)
        strbuf_printf(text, "  key %s (%s, %d bits, %s): %s%s\n", sels[i].selector,
                      dkim_alg_name(sels[i].alg), sels[i].bits, sels[i].easy ? "Easy DKIM" : "BYODKIM",
                      sels[i].active ? "signing" : "not signing (kilnctl identity dkim rotate)",
                      sels[i].active && sels[i].easy && !sels[i].live ? ", once its record is live" : "");
    if (n == 0) strbuf_puts(text, "  no DKIM key: mail leaves unsigned\n");
    strbuf_puts(text, "\n");
    free(t);
    dkim_keys_sels_free(sels, n);
    return j;
}

static void idstate_round_free(idstate_round *rd)
{
    for (size_t i = 0; i < rd->n; i++) {
        if (rd->slots[i].check) identity_check_cancel(rd->slots[i].check);
        if (rd->slots[i].res) identity_check_result_free(rd->slots[i].res);
        free(rd->slots[i].ident);
    }
    free(rd->slots);
    free(rd);
}

static void idstate_round_unlink(idstate *id, idstate_round *rd)
{
    for (idstate_round **pp = &id->rounds; *pp; pp = &(*pp)->next)
        if (*pp == rd) {
            *pp = rd->next;
            return;
        }
}

static void idstate_round_done(idstate_round *rd)
{
    idstate *id = rd->id;
    idstate_round_unlink(id, rd);
    if (!rd->cb) id->periodic_running = false;
    if (rd->cb) {
        strbuf text;
        strbuf_init(&text);
        json_t *data;
        if (rd->single) {
            data = idstate_json(id, rd->slots[0].res, &text);
        } else {
            data = json_object();
            json_t *arr = json_array();
            for (size_t i = 0; i < rd->n; i++) json_array_append_new(arr, idstate_json(id, rd->slots[i].res, &text));
            json_object_set_new(data, "Identities", arr);
        }
        json_object_set_new(data, "Text", json_string(text.buf ? text.buf : ""));
        strbuf_free(&text);
        rd->cb(rd->arg, data, NULL);
        json_decref(data);
    }
    idstate_round_free(rd);
}

static void idstate_on_result(void *arg, identity_check_result *r)
{
    idstate_slot *s = arg;
    idstate_round *rd = s->round;
    s->check = NULL;
    s->res = r;
    idstate_apply(rd->id, r);
    if (--rd->pending == 0) idstate_round_done(rd);
}

/* Starts the check of account.identities entry i of the current config into slot s. */
static void idstate_start_check(idstate *id, size_t i, idstate_slot *s)
{
    const config *cfg = id->ctx->cfg;
    const char *ident = cfg->identities[i];
    const char *domain = idstate_domain(ident);
    const config_identity *ia = cfg->identity_auth ? &cfg->identity_auth[i] : NULL;
    size_t n = 0;
    dkim_keys_sel *sels = dkim_keys_selectors(id->ctx->dkim, domain, &n);
    identity_dkim_selector *ds = util_calloc(n ? n : 1, sizeof *ds);
    bool signing = false;
    for (size_t k = 0; k < n; k++) {
        ds[k] = (identity_dkim_selector){sels[k].selector, dkim_alg_key_type(sels[k].alg), sels[k].p};
        if (sels[k].active) signing = true;
    }
    const char **ips = util_calloc(cfg->nips ? cfg->nips : 1, sizeof *ips);
    /* SPF authorizes what receivers see: the public_address of an IP behind NAT */
    for (size_t k = 0; k < cfg->nips; k++)
        ips[k] = cfg->ips[k].public_address ? cfg->ips[k].public_address : cfg->ips[k].address;
    identity_check_req req = {
        .identity = ident,
        .selectors = ds,
        .nselectors = n,
        .signing_enabled = signing,
        .mail_from_domain = ia ? ia->mail_from_domain : NULL,
        .server_hostname = cfg->hostname,
        .pool_ips = ips,
        .npool_ips = cfg->nips,
    };
    s->ident = util_strdup(ident);
    s->check = identity_check_start(id->d, &req, idstate_on_result, s);
    free(ips);
    free(ds);
    dkim_keys_sels_free(sels, n);
}

/* A round over the identities in idx (n of them). */
static void idstate_round_start(idstate *id, const size_t *idx, size_t n, bool single,
                                 idstate_status_cb cb, void *arg)
{
    idstate_round *rd = util_calloc(1, sizeof *rd);
    rd->id = id;
    rd->n = rd->pending = n;
    rd->single = single;
    rd->cb = cb;
    rd->arg = arg;
    rd->slots = util_calloc(n ? n : 1, sizeof *rd->slots);
    rd->next = id->rounds;
    id->rounds = rd;
    if (!cb) id->periodic_running = true;
    for (size_t i = 0; i < n; i++) {
        rd->slots[i].round = rd;
        rd->slots[i].idx = i;
    }
    for (size_t i = 0; i < n; i++) idstate_start_check(id, idx[i], &rd->slots[i]);
}

static void idstate_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    idstate *id = w->data;
    const config *cfg = id->ctx->cfg;
    if (id->periodic_running || cfg->nidentities == 0) return;
    size_t *idx = util_calloc(cfg->nidentities, sizeof *idx);
    for (size_t i = 0; i < cfg->nidentities; i++) idx[i] = i;
    idstate_round_start(id, idx, cfg->nidentities, false, NULL, NULL);
    free(idx);
}

idstate *idstate_new(kiln_ctx *ctx, dns *d)
{
    idstate *id = util_calloc(1, sizeof *id);
    id->ctx = ctx;
    id->d = d;
    ev_timer_init(&id->timer, idstate_timer_cb, IDSTATE_FIRST_CHECK_S, IDSTATE_RECHECK_S);
    id->timer.data = id;
    ev_timer_start(ctx->loop, &id->timer);
    return id;
}

void idstate_recheck(idstate *id)
{
    ev_timer_stop(id->ctx->loop, &id->timer);
    ev_timer_set(&id->timer, 0.1, IDSTATE_RECHECK_S);
    ev_timer_start(id->ctx->loop, &id->timer);
}

void idstate_free(idstate *id)
{
    if (!id) return;
    ev_timer_stop(id->ctx->loop, &id->timer);
    while (id->rounds) {
        idstate_round *rd = id->rounds;
        id->rounds = rd->next;
        if (rd->cb) rd->cb(rd->arg, NULL, "kilnd is stopping: the identity check was not finished");
        idstate_round_free(rd);
    }
    for (size_t i = 0; i < id->nmx; i++) free(id->mx[i].domain);
    free(id->mx);
    free(id);
}

int idstate_status(idstate *id, const char *ident, idstate_status_cb cb, void *arg, char **err)
{
    const config *cfg = id->ctx->cfg;
    if (!ident) {
        if (cfg->nidentities == 0) {
            *err = util_strdup("no identities are configured (account.identities)");
            return -1;
        }
        size_t *idx = util_calloc(cfg->nidentities, sizeof *idx);
        for (size_t i = 0; i < cfg->nidentities; i++) idx[i] = i;
        idstate_round_start(id, idx, cfg->nidentities, false, cb, arg);
        free(idx);
        return 0;
    }
    int i = -1;
    for (size_t k = 0; k < cfg->nidentities && i < 0; k++)
        if (strcmp(cfg->identities[k], ident) == 0) i = (int)k;
    if (i < 0) i = config_identity_index(cfg, ident);
    if (i < 0) {
        *err = util_asprintf("%s is not a verified identity (account.identities) nor under one", ident);
        return -1;
    }
    size_t one = (size_t)i;
    idstate_round_start(id, &one, 1, true, cb, arg);
    return 0;
}
