/* identity_check.c — the asynchronous half of identity_check.h: every question at once on
 * kiln's resolver, the answers read with c-ares' TXT and MX parsers, one callback with the
 * verdict assembled by identity_eval.c (the reports are identity_report.c).
 *
 * DNS text is shown to people (a terminal, JSON): every byte outside printable ASCII in a
 * TXT record or an MX host is replaced by '?' as the answer is read, so nothing later can
 * carry control characters or invalid UTF-8. DKIM, SPF and DMARC records are ASCII by
 * their grammars; a record that was not stays invalid after the replacement. */
#include "mta/identity_check.h"

#include <arpa/nameser.h>
#include <ares.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

typedef struct identity_q {
    identity_check *c;
    char *name;
    int type;                    /* ns_t_txt or ns_t_mx */
    bool done;
    identity_answer ans;         /* views into the fields below */
    char **txt;
    identity_mx *mx;
    char *error;
} identity_q;

struct identity_check {
    dns *d;
    identity_check_cb cb;
    void *arg;
    identity_check_req req;      /* a deep copy: every string below is owned */
    identity_dkim_selector *sels;
    char **ips;
    char *domain, *org;
    identity_q *q;               /* DKIM per selector, [MX, SPF], DMARC, [DMARC of org] */
    size_t nq, pending;
};

/* ---------- reading answers ---------- */

static void identity_append_printable(strbuf *sb, const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = (s[i] >= 0x20 && s[i] <= 0x7e) || s[i] == '\t' ? (char)s[i] : '?';
        strbuf_append(sb, &c, 1);
    }
}

static void identity_q_txt(identity_q *q, const dns_answer *a)
{
    struct ares_txt_ext *txt = NULL;
    int rc = ares_parse_txt_reply_ext(a->abuf, a->alen, &txt);
    if (rc == ARES_ENODATA) {
        q->ans.kind = IDENTITY_ANS_NODATA;
        return;
    }
    if (rc != ARES_SUCCESS) {
        q->ans.kind = IDENTITY_ANS_TEMPFAIL;
        q->error = util_asprintf("the TXT answer could not be read: %s", ares_strerror(rc));
        return;
    }
    size_t cap = 4;
    q->txt = util_calloc(cap, sizeof *q->txt);
    strbuf rec;
    strbuf_init(&rec);
    bool open = false;
    /* one record is the concatenation of its character-strings (RFC 7208 section 3.3,
     * RFC 6376 section 3.6.2.2); record_start marks the first string of each */
    for (struct ares_txt_ext *t = txt;; t = t->next) {
        if ((!t || t->record_start) && open) {
            if (q->ans.ntxt == cap) {
                cap *= 2;
                q->txt = util_realloc(q->txt, cap * sizeof *q->txt);
            }
            q->txt[q->ans.ntxt++] = strbuf_steal(&rec);
        }
        if (!t) break;
        identity_append_printable(&rec, t->txt, t->length);
        open = true;
    }
    strbuf_free(&rec);
    ares_free_data(txt);
    q->ans.txt = (const char *const *)q->txt;
}

static void identity_q_mx(identity_q *q, const dns_answer *a)
{
    struct ares_mx_reply *mx = NULL;
    int rc = ares_parse_mx_reply(a->abuf, a->alen, &mx);
    if (rc == ARES_ENODATA) {
        q->ans.kind = IDENTITY_ANS_NODATA;
        return;
    }
    if (rc != ARES_SUCCESS) {
        q->ans.kind = IDENTITY_ANS_TEMPFAIL;
        q->error = util_asprintf("the MX answer could not be read: %s", ares_strerror(rc));
        return;
    }
    size_t n = 0;
    for (struct ares_mx_reply *m = mx; m; m = m->next) n++;
    q->mx = util_calloc(n ? n : 1, sizeof *q->mx);
    for (struct ares_mx_reply *m = mx; m; m = m->next) {
        strbuf sb;
        strbuf_init(&sb);
        identity_append_printable(&sb, (const unsigned char *)m->host, strlen(m->host));
        q->mx[q->ans.nmx].host = strbuf_steal(&sb);
        q->mx[q->ans.nmx].preference = m->priority;
        q->ans.nmx++;
    }
    ares_free_data(mx);
    q->ans.mx = q->mx;
}

static void identity_check_on_answer(void *arg, const dns_answer *a);

static void identity_check_free(identity_check *c)
{
    for (size_t i = 0; i < c->nq; i++) {
        identity_q *q = &c->q[i];
        if (!q->done) dns_query_cancel(c->d, q->name, q->type, identity_check_on_answer, q);
        for (size_t j = 0; j < q->ans.ntxt; j++) free(q->txt[j]);
        free(q->txt);
        for (size_t j = 0; j < q->ans.nmx; j++) free((char *)q->mx[j].host);
        free(q->mx);
        free(q->error);
        free(q->name);
    }
    free(c->q);
    for (size_t i = 0; i < c->req.nselectors; i++) {
        free((char *)c->sels[i].selector);
        free((char *)c->sels[i].k);
        free((char *)c->sels[i].p);
    }
    free(c->sels);
    for (size_t i = 0; i < c->req.npool_ips; i++) free(c->ips[i]);
    free(c->ips);
    free((char *)c->req.identity);
    free((char *)c->req.mail_from_domain);
    free((char *)c->req.mail_from_mx);
    free((char *)c->req.server_hostname);
    free(c->domain);
    free(c->org);
    free(c);
}

static void identity_check_finish(identity_check *c)
{
    identity_answers all;
    memset(&all, 0, sizeof all);
    size_t n = c->req.nselectors;
    identity_answer *dkim = util_calloc(n ? n : 1, sizeof *dkim);
    for (size_t i = 0; i < n; i++) dkim[i] = c->q[i].ans;
    all.dkim = dkim;
    size_t next = n;
    if (c->req.mail_from_domain) {
        all.mx = c->q[next++].ans;
        all.spf = c->q[next++].ans;
    }
    all.dmarc = c->q[next++].ans;
    if (next < c->nq) all.dmarc_org = c->q[next].ans;
    identity_check_result *r = identity_check_assemble(&c->req, &all);
    free(dkim);
    identity_check_cb cb = c->cb;
    void *arg = c->arg;
    identity_check_free(c);
    cb(arg, r);
}

static void identity_check_on_answer(void *arg, const dns_answer *a)
{
    identity_q *q = arg;
    identity_check *c = q->c;
    q->done = true;
    switch (a->status) {
    case DNS_OK:
        if (q->type == ns_t_mx) identity_q_mx(q, a);
        else identity_q_txt(q, a);
        break;
    case DNS_NXDOMAIN: q->ans.kind = IDENTITY_ANS_NXDOMAIN; break;
    case DNS_NOHOST: q->ans.kind = IDENTITY_ANS_NODATA; break;
    default:
        q->ans.kind = IDENTITY_ANS_TEMPFAIL;
        q->error = util_strdup(a->error ? a->error : "lookup failed");
        break;
    }
    q->ans.error = q->error;
    if (--c->pending == 0) identity_check_finish(c);
}

/* ---------- starting and cancelling ---------- */

static void identity_q_add(identity_check *c, char *name, int type)
{
    identity_q *q = &c->q[c->nq++];
    q->c = c;
    q->name = name;
    q->type = type;
}

identity_check *identity_check_start(dns *d, const identity_check_req *req, identity_check_cb cb, void *arg)
{
    identity_check *c = util_calloc(1, sizeof *c);
    c->d = d;
    c->cb = cb;
    c->arg = arg;
    c->req = *req;
    c->req.identity = util_strdup(req->identity ? req->identity : "");
    c->req.mail_from_domain = req->mail_from_domain && req->mail_from_domain[0] ? util_strdup(req->mail_from_domain)
                                                                                : NULL;
    c->req.mail_from_mx = util_strdup(req->mail_from_mx);
    c->req.server_hostname = util_strdup(req->server_hostname);
    c->sels = util_calloc(req->nselectors ? req->nselectors : 1, sizeof *c->sels);
    for (size_t i = 0; i < req->nselectors; i++) {
        c->sels[i].selector = util_strdup(req->selectors[i].selector ? req->selectors[i].selector : "");
        c->sels[i].k = util_strdup(req->selectors[i].k);
        c->sels[i].p = util_strdup(req->selectors[i].p ? req->selectors[i].p : "");
    }
    c->req.selectors = c->sels;
    c->ips = util_calloc(req->npool_ips ? req->npool_ips : 1, sizeof *c->ips);
    for (size_t i = 0; i < req->npool_ips; i++) c->ips[i] = util_strdup(req->pool_ips[i]);
    c->req.pool_ips = (const char *const *)c->ips;
    c->domain = identity_domain_of(c->req.identity);
    c->org = identity_org_domain(c->domain);

    c->q = util_calloc(req->nselectors + 4, sizeof *c->q);
    for (size_t i = 0; i < req->nselectors; i++)
        identity_q_add(c, util_asprintf("%s._domainkey.%s", c->sels[i].selector, c->domain), ns_t_txt);
    if (c->req.mail_from_domain) {
        char *mf = identity_domain_of(c->req.mail_from_domain);
        identity_q_add(c, util_strdup(mf), ns_t_mx);
        identity_q_add(c, mf, ns_t_txt);
    }
    identity_q_add(c, util_asprintf("_dmarc.%s", c->domain), ns_t_txt);
    if (strcmp(c->org, c->domain) != 0) identity_q_add(c, util_asprintf("_dmarc.%s", c->org), ns_t_txt);
    c->pending = c->nq;
    /* dns_query never calls back from inside itself: c cannot finish during this loop */
    for (size_t i = 0; i < c->nq; i++) dns_query(d, c->q[i].name, c->q[i].type, identity_check_on_answer, &c->q[i]);
    return c;
}

void identity_check_cancel(identity_check *c)
{
    if (!c) return;
    identity_check_free(c);
}
