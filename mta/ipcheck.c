/* ipcheck.c — kilnctl ip check (see ipcheck.h): the PTR of the address the world sees and
 * the A/AAAA records of the EHLO name (and of each PTR name) on kiln's resolver, read with
 * c-ares' ares_parse_ptr_reply / ares_parse_a_reply / ares_parse_aaaa_reply; the verdicts,
 * the problems in words, the JSON and the table.
 *
 * A check asks the PTR and the EHLO name's records at once; when the PTR answer names
 * other hosts, their records are asked next (at most IPCHECK_MAX_PTR_NAMES), so the check
 * ends after two round trips at most. */
#include "mta/ipcheck.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ares.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "base/netaddr.h"
#include "base/util.h"

/* ------------------------------------------------------------- results ---- */

/* s without a final dot, every byte outside printable ASCII as '?', malloc'd. */
static char *ipcheck_clean_name(const char *s)
{
    size_t n = strlen(s);
    if (n > 1 && s[n - 1] == '.') n--;
    char *o = util_strndup(s, n);
    for (char *c = o; *c; c++)
        if ((unsigned char)*c < 0x21 || (unsigned char)*c > 0x7e) *c = '?';
    return o;
}

static bool ipcheck_same_name(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na && a[na - 1] == '.') na--;
    if (nb && b[nb - 1] == '.') nb--;
    return na == nb && strncasecmp(a, b, na) == 0;
}

ipcheck_result *ipcheck_result_new(const ipcheck_req *req)
{
    unsigned char b[16];
    int family = 0;
    if (req->public_ip && inet_pton(AF_INET, req->public_ip, b) == 1) family = AF_INET;
    else if (req->public_ip && inet_pton(AF_INET6, req->public_ip, b) == 1) family = AF_INET6;
    if (!family) return NULL;
    ipcheck_result *r = util_calloc(1, sizeof *r);
    r->public_ip = util_strdup(req->public_ip);
    r->bind_ip = util_strdup(req->bind_ip ? req->bind_ip : req->public_ip);
    r->ehlo = ipcheck_clean_name(req->ehlo ? req->ehlo : "");
    r->ehlo_from = util_strdup(req->ehlo_from ? req->ehlo_from : "server.hostname");
    r->reverse_name = dns_reverse_name(req->public_ip);
    r->family = family;
    ipcheck_fwd_of(r, r->ehlo);
    return r;
}

static void ipcheck_strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

void ipcheck_result_free(ipcheck_result *r)
{
    if (!r) return;
    free(r->public_ip);
    free(r->bind_ip);
    free(r->ehlo);
    free(r->ehlo_from);
    free(r->reverse_name);
    free(r->ptr_error);
    ipcheck_strv_free(r->ptr, r->nptr);
    for (size_t i = 0; i < r->nfwd; i++) {
        free(r->fwd[i].name);
        free(r->fwd[i].error);
        ipcheck_strv_free(r->fwd[i].addrs, r->fwd[i].naddrs);
    }
    free(r->fwd);
    ipcheck_strv_free(r->problems, r->nproblems);
    free(r);
}

void ipcheck_add_ptr(ipcheck_result *r, const char *name)
{
    for (size_t i = 0; i < r->nptr; i++)
        if (ipcheck_same_name(r->ptr[i], name)) return;   /* c-ares lists h_name as an alias too */
    r->ptr = util_realloc(r->ptr, (r->nptr + 1) * sizeof *r->ptr);
    r->ptr[r->nptr++] = ipcheck_clean_name(name);
}

size_t ipcheck_fwd_of(ipcheck_result *r, const char *name)
{
    for (size_t i = 0; i < r->nfwd; i++)
        if (ipcheck_same_name(r->fwd[i].name, name)) return i;
    r->fwd = util_realloc(r->fwd, (r->nfwd + 1) * sizeof *r->fwd);
    memset(&r->fwd[r->nfwd], 0, sizeof *r->fwd);
    r->fwd[r->nfwd].name = ipcheck_clean_name(name);
    r->fwd[r->nfwd].ans = IPCHECK_ANS_NONE;
    return r->nfwd++;
}

void ipcheck_fwd_add_addr(ipcheck_fwd *f, const char *addr)
{
    f->addrs = util_realloc(f->addrs, (f->naddrs + 1) * sizeof *f->addrs);
    f->addrs[f->naddrs++] = util_strdup(addr);
    f->ans = IPCHECK_ANS_OK;
}

/* ------------------------------------------------------------ verdicts ---- */

static bool ipcheck_fwd_has(const ipcheck_fwd *f, const char *ip)
{
    if (f->ans != IPCHECK_ANS_OK) return false;
    for (size_t i = 0; i < f->naddrs; i++)
        if (netaddr_equal(f->addrs[i], ip)) return true;
    return false;
}

static const ipcheck_fwd *ipcheck_fwd_find(const ipcheck_result *r, const char *name)
{
    for (size_t i = 0; i < r->nfwd; i++)
        if (ipcheck_same_name(r->fwd[i].name, name)) return &r->fwd[i];
    return NULL;
}

static void ipcheck_problem(ipcheck_result *r, char *text)
{
    r->problems = util_realloc(r->problems, (r->nproblems + 1) * sizeof *r->problems);
    r->problems[r->nproblems++] = text;
}

static void ipcheck_join(strbuf *sb, char *const *v, size_t n)
{
    for (size_t i = 0; i < n; i++) strbuf_printf(sb, "%s%s", i ? ", " : "", v[i]);
}

static const char *ipcheck_rr(const ipcheck_result *r)
{
    return r->family == AF_INET6 ? "AAAA" : "A";
}

void ipcheck_evaluate(ipcheck_result *r)
{
    ipcheck_strv_free(r->problems, r->nproblems);
    r->problems = NULL;
    r->nproblems = 0;
    const char *rr = ipcheck_rr(r), *ip = r->public_ip, *ehlo = r->ehlo;
    const ipcheck_fwd *ef = &r->fwd[0];
    r->ptr_matches_ehlo = false;
    r->forward_confirmed = false;
    for (size_t i = 0; i < r->nptr; i++) {
        if (ipcheck_same_name(r->ptr[i], ehlo)) r->ptr_matches_ehlo = true;
        const ipcheck_fwd *f = ipcheck_fwd_find(r, r->ptr[i]);
        if (f && ipcheck_fwd_has(f, ip)) r->forward_confirmed = true;
    }
    r->ehlo_has_ip = ipcheck_fwd_has(ef, ip);
    r->tempfail = r->ptr_ans == IPCHECK_ANS_TEMPFAIL || ef->ans == IPCHECK_ANS_TEMPFAIL;

    /* the PTR */
    if (r->ptr_ans == IPCHECK_ANS_TEMPFAIL) {
        ipcheck_problem(r, util_asprintf("the PTR lookup of %s failed for now: %s (try again)",
                                         r->reverse_name, r->ptr_error ? r->ptr_error : "?"));
    } else if (r->nptr == 0) {
        ipcheck_problem(r, util_asprintf("PTR missing: %s has no PTR record; have the owner of %s "
                                         "(for a cloud IP, its provider's reverse DNS setting) "
                                         "point it at %s",
                                         r->reverse_name, ip, ehlo));
    } else if (!r->ptr_matches_ehlo) {
        strbuf sb;
        strbuf_init(&sb);
        ipcheck_join(&sb, r->ptr, r->nptr);
        ipcheck_problem(r, util_asprintf("PTR names %s but EHLO is %s (%s): make the PTR of %s %s, "
                                         "or set this IP's ehlo to its PTR name",
                                         sb.buf, ehlo, r->ehlo_from, ip, ehlo));
        strbuf_free(&sb);
    }

    /* the EHLO name's records */
    if (ef->ans == IPCHECK_ANS_TEMPFAIL) {
        ipcheck_problem(r, util_asprintf("the %s lookup of %s failed for now: %s (try again)", rr,
                                         ehlo, ef->error ? ef->error : "?"));
    } else if (ef->naddrs == 0) {
        ipcheck_problem(r, util_asprintf("%s of %s does not include the address: %s has no %s "
                                         "record; publish %s %s %s",
                                         rr, ehlo, ehlo, rr, ehlo, rr, ip));
    } else if (!r->ehlo_has_ip) {
        strbuf sb;
        strbuf_init(&sb);
        ipcheck_join(&sb, ef->addrs, ef->naddrs);
        ipcheck_problem(r, util_asprintf("%s of %s does not include the address: it holds %s, not "
                                         "%s; add %s %s %s",
                                         rr, ehlo, sb.buf, ip, ehlo, rr, ip));
        strbuf_free(&sb);
    }

    /* FCrDNS through PTR names other than the EHLO name (the EHLO name's own case is above) */
    if (r->nptr > 0 && !r->ptr_matches_ehlo && !r->forward_confirmed) {
        strbuf sb;
        strbuf_init(&sb);
        bool temp = false;
        for (size_t i = 0; i < r->nptr; i++) {
            const ipcheck_fwd *f = ipcheck_fwd_find(r, r->ptr[i]);
            strbuf_printf(&sb, "%s%s ", i ? "; " : "", r->ptr[i]);
            if (!f) strbuf_puts(&sb, "not looked up");
            else if (f->ans == IPCHECK_ANS_TEMPFAIL) {
                strbuf_printf(&sb, "lookup failed: %s", f->error ? f->error : "?");
                temp = true;
            } else if (f->naddrs == 0) strbuf_printf(&sb, "has no %s record", rr);
            else {
                strbuf_printf(&sb, "%s ", rr);
                ipcheck_join(&sb, f->addrs, f->naddrs);
            }
        }
        if (temp) r->tempfail = true;
        ipcheck_problem(r, util_asprintf("not forward-confirmed: no PTR name has %s %s (%s)", rr, ip,
                                         sb.buf));
        strbuf_free(&sb);
    }
    r->ready = r->ptr_matches_ehlo && r->ehlo_has_ip && r->forward_confirmed;
}

/* ---------------------------------------------------------- reporting ---- */

static json_t *ipcheck_strv_json(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_string(v[i]));
    return a;
}

json_t *ipcheck_to_json(const ipcheck_result *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "Ip", json_string(r->public_ip));
    json_object_set_new(o, "BindAddress", json_string(r->bind_ip));
    json_object_set_new(o, "EhloName", json_string(r->ehlo));
    json_object_set_new(o, "EhloFrom", json_string(r->ehlo_from));
    json_object_set_new(o, "ReverseName", json_string(r->reverse_name));
    json_object_set_new(o, "Ptr", ipcheck_strv_json(r->ptr, r->nptr));
    json_object_set_new(o, "PtrMatchesEhlo", json_boolean(r->ptr_matches_ehlo));
    json_object_set_new(o, "ForwardType", json_string(ipcheck_rr(r)));
    json_object_set_new(o, "ForwardAddresses", ipcheck_strv_json(r->fwd[0].addrs, r->fwd[0].naddrs));
    json_object_set_new(o, "EhloResolvesToIp", json_boolean(r->ehlo_has_ip));
    json_object_set_new(o, "ForwardConfirmed", json_boolean(r->forward_confirmed));
    json_t *pf = json_array();
    for (size_t i = 0; i < r->nptr; i++) {
        const ipcheck_fwd *f = ipcheck_fwd_find(r, r->ptr[i]);
        json_t *e = json_object();
        json_object_set_new(e, "Name", json_string(r->ptr[i]));
        json_object_set_new(e, "Addresses", f ? ipcheck_strv_json(f->addrs, f->naddrs) : json_array());
        json_array_append_new(pf, e);
    }
    json_object_set_new(o, "PtrForward", pf);
    json_object_set_new(o, "Ready", json_boolean(r->ready));
    json_object_set_new(o, "TemporaryFailure", json_boolean(r->tempfail));
    json_object_set_new(o, "Problems", ipcheck_strv_json(r->problems, r->nproblems));
    return o;
}

/* One row of the table: check, result, what DNS holds. */
static void ipcheck_row(strbuf *sb, const char *check, const char *result, const char *holds)
{
    strbuf_printf(sb, "  %-34s %-8s %s\n", check, result, holds);
}

char *ipcheck_to_text(const ipcheck_result *r)
{
    strbuf sb, cell, what;
    strbuf_init(&sb);
    strbuf_init(&cell);
    strbuf_init(&what);
    const char *rr = ipcheck_rr(r);
    const ipcheck_fwd *ef = &r->fwd[0];
    if (strcmp(r->public_ip, r->bind_ip) != 0)
        strbuf_printf(&sb, "IP %s (public; NAT maps it onto %s, which kiln binds)\n", r->public_ip,
                      r->bind_ip);
    else strbuf_printf(&sb, "IP %s\n", r->public_ip);
    strbuf_printf(&sb, "EHLO name %s (%s)\n\n", r->ehlo, r->ehlo_from);
    ipcheck_row(&sb, "CHECK", "RESULT", "DNS HOLDS");

    ipcheck_join(&cell, r->ptr, r->nptr);
    ipcheck_row(&sb, "PTR of the IP",
                r->ptr_ans == IPCHECK_ANS_TEMPFAIL ? "failed" : r->nptr ? "ok" : "missing",
                r->ptr_ans == IPCHECK_ANS_TEMPFAIL ? (r->ptr_error ? r->ptr_error : "?")
                : r->nptr                           ? cell.buf
                                                    : "-");
    ipcheck_row(&sb, "PTR name is the EHLO name",
                r->nptr == 0 ? "-" : r->ptr_matches_ehlo ? "ok" : "wrong", r->nptr ? cell.buf : "-");

    strbuf_printf(&what, "%s of the EHLO name has the IP", rr);
    strbuf_reset(&cell);
    ipcheck_join(&cell, ef->addrs, ef->naddrs);
    ipcheck_row(&sb, what.buf,
                ef->ans == IPCHECK_ANS_TEMPFAIL ? "failed"
                : r->ehlo_has_ip               ? "ok"
                : ef->naddrs                   ? "wrong"
                                               : "missing",
                ef->ans == IPCHECK_ANS_TEMPFAIL ? (ef->error ? ef->error : "?")
                : ef->naddrs                    ? cell.buf
                                                : "-");

    strbuf_reset(&cell);
    for (size_t i = 0; i < r->nptr; i++) {
        const ipcheck_fwd *f = ipcheck_fwd_find(r, r->ptr[i]);
        strbuf_printf(&cell, "%s%s -> ", i ? "; " : "", r->ptr[i]);
        if (f && f->naddrs) ipcheck_join(&cell, f->addrs, f->naddrs);
        else strbuf_puts(&cell, "-");
    }
    ipcheck_row(&sb, "forward-confirmed reverse DNS",
                r->nptr == 0 ? "-" : r->forward_confirmed ? "ok" : "wrong", r->nptr ? cell.buf : "-");

    if (r->ready)
        strbuf_printf(&sb, "\nready: the PTR of %s is %s and its %s record includes %s, as "
                           "mailbox providers require\n",
                      r->public_ip, r->ehlo, rr, r->public_ip);
    else {
        strbuf_printf(&sb, "\n%s:\n", r->tempfail ? "not known yet (a lookup failed)" : "not ready");
        for (size_t i = 0; i < r->nproblems; i++) strbuf_printf(&sb, "  - %s\n", r->problems[i]);
    }
    strbuf_free(&cell);
    strbuf_free(&what);
    return strbuf_steal(&sb);
}

/* ------------------------------------------------------------- lookups ---- */

typedef struct ipcheck_run ipcheck_run;

typedef struct ipcheck_q {
    ipcheck_run *run;
    char *name;
    int type;                /* ns_t_ptr, ns_t_a or ns_t_aaaa */
    size_t fwd;              /* A/AAAA: the index of its entry in run->r->fwd */
    bool used, done;
} ipcheck_q;

struct ipcheck_run {
    ipchecker *k;
    ipcheck_result *r;
    ipcheck_cb cb;
    void *arg;
    ipcheck_q q[2 + IPCHECK_MAX_PTR_NAMES];   /* PTR, the EHLO name, PTR names */
    size_t nq, pending;
    ipcheck_run *prev, *next;
};

struct ipchecker {
    dns *d;
    ipcheck_run *runs;
};

static void ipcheck_on_answer(void *arg, const dns_answer *a);

ipchecker *ipchecker_new(dns *d)
{
    ipchecker *k = util_calloc(1, sizeof *k);
    k->d = d;
    return k;
}

static void ipcheck_run_free(ipcheck_run *run)
{
    ipchecker *k = run->k;
    for (size_t i = 0; i < run->nq; i++) {
        ipcheck_q *q = &run->q[i];
        if (!q->done) dns_query_cancel(k->d, q->name, q->type, ipcheck_on_answer, q);
        free(q->name);
    }
    if (run->prev) run->prev->next = run->next;
    else k->runs = run->next;
    if (run->next) run->next->prev = run->prev;
    free(run);
}

void ipchecker_free(ipchecker *k)
{
    if (!k) return;
    while (k->runs) {
        ipcheck_run *run = k->runs;
        ipcheck_cb cb = run->cb;
        void *arg = run->arg;
        ipcheck_result_free(run->r);
        ipcheck_run_free(run);
        cb(arg, NULL, "kilnd is stopping: the check was not finished");
    }
    free(k);
}

static void ipcheck_ask(ipcheck_run *run, const char *name, int type, size_t fwd)
{
    ipcheck_q *q = &run->q[run->nq++];
    q->run = run;
    q->name = util_strdup(name);
    q->type = type;
    q->fwd = fwd;
    run->pending++;
    dns_query(run->k->d, q->name, type, ipcheck_on_answer, q);
}

static void ipcheck_read_ptr(ipcheck_run *run, const dns_answer *a)
{
    ipcheck_result *r = run->r;
    unsigned char bin[16];
    inet_pton(r->family, r->public_ip, bin);
    struct hostent *he = NULL;
    int rc = ares_parse_ptr_reply(a->abuf, a->alen, bin, r->family == AF_INET ? 4 : 16, r->family, &he);
    if (rc == ARES_ENODATA || rc == ARES_ENOTFOUND) {
        r->ptr_ans = IPCHECK_ANS_NONE;
        return;
    }
    if (rc != ARES_SUCCESS || !he) {
        r->ptr_ans = IPCHECK_ANS_TEMPFAIL;
        r->ptr_error = util_asprintf("the PTR answer could not be read: %s", ares_strerror(rc));
        if (he) ares_free_hostent(he);
        return;
    }
    if (he->h_name && *he->h_name) ipcheck_add_ptr(r, he->h_name);
    for (char **al = he->h_aliases; al && *al; al++)
        if (**al) ipcheck_add_ptr(r, *al);
    ares_free_hostent(he);
    r->ptr_ans = r->nptr ? IPCHECK_ANS_OK : IPCHECK_ANS_NONE;
    /* the records of every other PTR name, for FCrDNS */
    size_t asked = 0;
    for (size_t i = 0; i < r->nptr && asked < IPCHECK_MAX_PTR_NAMES; i++) {
        size_t before = r->nfwd;
        size_t idx = ipcheck_fwd_of(r, r->ptr[i]);
        if (r->nfwd == before) continue;   /* the EHLO name, or a name twice */
        ipcheck_ask(run, r->fwd[idx].name, r->family == AF_INET6 ? ns_t_aaaa : ns_t_a, idx);
        asked++;
    }
}

static void ipcheck_read_addrs(ipcheck_fwd *f, int type, const dns_answer *a)
{
    char text[INET6_ADDRSTRLEN];
    int rc, n;
    if (type == ns_t_a) {
        struct ares_addrttl at[32];
        n = 32;
        rc = ares_parse_a_reply(a->abuf, a->alen, NULL, at, &n);
        for (int i = 0; rc == ARES_SUCCESS && i < n; i++)
            if (inet_ntop(AF_INET, &at[i].ipaddr, text, sizeof text)) ipcheck_fwd_add_addr(f, text);
    } else {
        struct ares_addr6ttl at[32];
        n = 32;
        rc = ares_parse_aaaa_reply(a->abuf, a->alen, NULL, at, &n);
        for (int i = 0; rc == ARES_SUCCESS && i < n; i++)
            if (inet_ntop(AF_INET6, &at[i].ip6addr, text, sizeof text)) ipcheck_fwd_add_addr(f, text);
    }
    if (rc == ARES_SUCCESS) f->ans = f->naddrs ? IPCHECK_ANS_OK : IPCHECK_ANS_NONE;
    else if (rc == ARES_ENODATA || rc == ARES_ENOTFOUND) f->ans = IPCHECK_ANS_NONE;
    else {
        f->ans = IPCHECK_ANS_TEMPFAIL;
        f->error = util_asprintf("the %s answer could not be read: %s", type == ns_t_a ? "A" : "AAAA",
                                 ares_strerror(rc));
    }
}

static void ipcheck_on_answer(void *arg, const dns_answer *a)
{
    ipcheck_q *q = arg;
    ipcheck_run *run = q->run;
    ipcheck_result *r = run->r;
    q->done = true;
    bool ptr = q->type == ns_t_ptr;
    ipcheck_fwd *f = ptr ? NULL : &r->fwd[q->fwd];
    switch (a->status) {
    case DNS_OK:
        if (ptr) ipcheck_read_ptr(run, a);
        else ipcheck_read_addrs(f, q->type, a);
        break;
    case DNS_NXDOMAIN:
    case DNS_NOHOST:
        if (ptr) r->ptr_ans = IPCHECK_ANS_NONE;
        else f->ans = IPCHECK_ANS_NONE;
        break;
    default:
        if (ptr) {
            r->ptr_ans = IPCHECK_ANS_TEMPFAIL;
            r->ptr_error = util_strdup(a->error ? a->error : "lookup failed");
        } else {
            f->ans = IPCHECK_ANS_TEMPFAIL;
            f->error = util_strdup(a->error ? a->error : "lookup failed");
        }
        break;
    }
    if (--run->pending > 0) return;
    ipcheck_evaluate(r);
    ipcheck_cb cb = run->cb;
    void *cb_arg = run->arg;
    ipcheck_run_free(run);
    cb(cb_arg, r, NULL);
}

int ipchecker_start(ipchecker *k, const ipcheck_req *req, ipcheck_cb cb, void *arg)
{
    ipcheck_result *r = ipcheck_result_new(req);
    if (!r) return -1;
    ipcheck_run *run = util_calloc(1, sizeof *run);
    run->k = k;
    run->r = r;
    run->cb = cb;
    run->arg = arg;
    run->next = k->runs;
    if (k->runs) k->runs->prev = run;
    k->runs = run;
    /* dns_query never calls back from inside itself: the run cannot end during these */
    ipcheck_ask(run, r->reverse_name, ns_t_ptr, 0);
    ipcheck_ask(run, r->ehlo, r->family == AF_INET6 ? ns_t_aaaa : ns_t_a, 0);
    return 0;
}
