/* mta_sts.c — MTA-STS policy discovery, fetch and cache (see mta_sts.h).
 *
 * One fetch object per domain being looked up; concurrent requests for the same domain
 * wait on it. Steps: TXT _mta-sts.<domain> -> (cached policy with that id: done) -> A and
 * AAAA of mta-sts.<domain> -> HTTPS GET -> parse (mta/sts_policy.c) -> cache -> answer.
 * The cache is a table by domain holding at most delivery.mta_sts.cache_size entries: when
 * it is full, expired entries go first, else the one closest to expiry. */
#include "mta/mta_sts.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ares.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"
#include "mta/dns_table.h"

typedef struct sts_waiter {
    struct sts_waiter *next;
    mta_sts_cb cb;
    void *arg;
} sts_waiter;

typedef struct sts_entry {          /* a cached policy */
    dns_hnode h;                    /* key: the domain */
    char id[STS_ID_MAX + 1];
    sts_policy policy;
    int64_t expires_ms;
} sts_entry;

typedef struct sts_fetch {
    dns_hnode h;                    /* key: the domain; in s->fetches while running */
    mta_sts *s;
    config *cfg;                    /* referenced while the fetch runs */
    sts_waiter *waiters;
    char id[STS_ID_MAX + 1];        /* from the TXT record */
    char *host;                     /* mta-sts.<domain> */
    char *addrs;                    /* "a,b" for CURLOPT_RESOLVE */
    int addr_pending;
    CURL *easy;
    curl_ev_xfer xfer;              /* the running fetch in the shared curl_ev */
    struct curl_slist *resolve;
    strbuf body;
    bool too_big;
} sts_fetch;

struct mta_sts {
    struct ev_loop *loop;
    klog *lg;
    dns *d;
    curl_ev *http;
    dns_htable cache;
    dns_htable fetches;
};

mta_sts *mta_sts_new(struct ev_loop *loop, klog *lg, dns *d, curl_ev *http)
{
    mta_sts *s = util_calloc(1, sizeof *s);
    s->loop = loop;
    s->lg = lg;
    s->d = d;
    s->http = http;
    dns_ht_init(&s->cache);
    dns_ht_init(&s->fetches);
    return s;
}

static void mta_sts_entry_free(sts_entry *e)
{
    sts_policy_clear(&e->policy);
    free(e->h.key);
    free(e);
}

static sts_entry *mta_sts_cached(mta_sts *s, const char *domain)
{
    sts_entry *e = (sts_entry *)dns_ht_find(&s->cache, domain);
    if (e && e->expires_ms <= util_mono_ms()) {
        dns_ht_remove(&s->cache, &e->h);
        mta_sts_entry_free(e);
        e = NULL;
    }
    return e;
}

/* Room for one more entry: expired ones first, else the one closest to expiry. */
static void mta_sts_make_room(mta_sts *s, int64_t cap)
{
    if ((int64_t)s->cache.n < cap) return;
    int64_t now = util_mono_ms();
    sts_entry *soonest = NULL;
    for (size_t i = 0; i < s->cache.nb; i++) {
        for (dns_hnode *n = s->cache.b[i], *next; n; n = next) {
            next = n->hnext;
            sts_entry *e = (sts_entry *)n;
            if (e->expires_ms <= now) {
                dns_ht_remove(&s->cache, &e->h);
                mta_sts_entry_free(e);
            } else if (!soonest || e->expires_ms < soonest->expires_ms) {
                soonest = e;
            }
        }
    }
    if ((int64_t)s->cache.n >= cap && soonest) {
        dns_ht_remove(&s->cache, &soonest->h);
        mta_sts_entry_free(soonest);
    }
}

static void mta_sts_fetch_free(sts_fetch *f)
{
    for (sts_waiter *w = f->waiters, *next; w; w = next) {
        next = w->next;
        free(w);
    }
    if (f->easy) curl_easy_cleanup(f->easy);
    curl_slist_free_all(f->resolve);
    strbuf_free(&f->body);
    config_unref(f->cfg);
    free(f->host);
    free(f->addrs);
    free(f->h.key);
    free(f);
}

/* Answers every waiter and ends the fetch. */
static void mta_sts_finish(sts_fetch *f, const sts_policy *p, const char *note)
{
    mta_sts *s = f->s;
    dns_ht_remove(&s->fetches, &f->h);
    log_write(s->lg, KLOG_DEBUG, "mta_sts.policy", "domain=%s mode=%s note=%s",
              log_q(s->lg, f->h.key), p ? sts_mode_name(p->mode) : "-", log_q(s->lg, note));
    for (sts_waiter *w = f->waiters; w; w = w->next) w->cb(w->arg, p, note);
    mta_sts_fetch_free(f);
}

/* A failure: the cached policy (any id) while it lasts, else none. */
static void mta_sts_fail(sts_fetch *f, const char *why)
{
    sts_entry *e = mta_sts_cached(f->s, f->h.key);
    char *note = e ? util_asprintf("%s; cached policy id %s used", why, e->id) : util_strdup(why);
    if (strcmp(why, "no _mta-sts TXT record") != 0)   /* most domains have none: no news */
        log_write(f->s->lg, KLOG_INFO, "mta_sts.fetch", "domain=%s result=failed note=%s",
                  log_q(f->s->lg, f->h.key), log_q(f->s->lg, note));
    mta_sts_finish(f, e ? &e->policy : NULL, note);
    free(note);
}

static size_t mta_sts_on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
    sts_fetch *f = arg;
    size_t n = size * nmemb;
    if (f->body.len + n > STS_POLICY_MAX_BYTES) {
        f->too_big = true;
        return 0;                   /* aborts the transfer */
    }
    strbuf_append(&f->body, ptr, n);
    return n;
}

static void mta_sts_on_http(void *arg, CURL *easy, CURLcode res)
{
    sts_fetch *f = arg;
    long code = 0;
    char *ctype = NULL;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo(easy, CURLINFO_CONTENT_TYPE, &ctype);
    char *why = NULL;
    if (f->too_big)
        why = util_asprintf("policy fetch from %s: body larger than %d bytes", f->host, STS_POLICY_MAX_BYTES);
    else if (res != CURLE_OK)
        why = util_asprintf("policy fetch from %s failed: %s", f->host, curl_easy_strerror(res));
    else if (code != 200)
        why = util_asprintf("policy fetch from %s: HTTP status %ld", f->host, code);
    else if (!ctype || strncasecmp(ctype, "text/plain", 10) != 0 ||
             (ctype[10] && ctype[10] != ';' && ctype[10] != ' '))
        why = util_asprintf("policy fetch from %s: media type %s is not text/plain", f->host,
                            ctype ? ctype : "(none)");
    sts_policy p;
    char *perr = NULL;
    if (!why && sts_policy_parse(f->body.buf ? f->body.buf : "", f->body.len, &p, &perr) < 0) {
        why = util_asprintf("policy from %s is invalid: %s", f->host, perr);
        free(perr);
    }
    if (why) {
        mta_sts_fail(f, why);
        free(why);
        return;
    }
    mta_sts *s = f->s;
    sts_entry *e = (sts_entry *)dns_ht_find(&s->cache, f->h.key);
    if (e) {
        dns_ht_remove(&s->cache, &e->h);
        mta_sts_entry_free(e);
    }
    mta_sts_make_room(s, f->cfg->mta_sts_cache_size);
    e = util_calloc(1, sizeof *e);
    e->h.key = util_strdup(f->h.key);
    memcpy(e->id, f->id, sizeof e->id);
    e->policy = p;
    e->expires_ms = util_mono_ms() + p.max_age_s * 1000;
    dns_ht_insert(&s->cache, &e->h);
    log_write(s->lg, KLOG_INFO, "mta_sts.fetch", "domain=%s result=fetched id=%s mode=%s max_age=%lld mx=%zu",
              log_q(s->lg, f->h.key), f->id, sts_mode_name(p.mode), (long long)p.max_age_s, p.nmx);
    char *note = util_asprintf("fetched policy id %s", f->id);
    mta_sts_finish(f, &e->policy, note);
    free(note);
}

static void mta_sts_start_http(sts_fetch *f)
{
    const config *cfg = f->cfg;
    char *url = cfg->mta_sts_port == 443
                    ? util_asprintf("https://%s/.well-known/mta-sts.txt", f->host)
                    : util_asprintf("https://%s:%d/.well-known/mta-sts.txt", f->host, cfg->mta_sts_port);
    char *res = util_asprintf("%s:%d:%s", f->host, cfg->mta_sts_port, f->addrs);
    f->resolve = curl_slist_append(NULL, res);
    free(res);
    CURL *e = curl_easy_init();
    if (!e || !f->resolve) util_fatal("curl_easy_init failed (out of memory)");
    f->easy = e;
    strbuf_init(&f->body);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_RESOLVE, f->resolve);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);        /* RFC 8461 section 3.3 */
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (cfg->tls_ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, cfg->tls_ca_file);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)cfg->mta_sts_fetch_timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "kiln");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, mta_sts_on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
    free(url);
    char *err = NULL;
    if (curl_ev_add(f->s->http, &f->xfer, e, mta_sts_on_http, f, &err) != 0) {
        char *why = util_asprintf("policy fetch from %s not started: %s", f->host, err);
        free(err);
        mta_sts_fail(f, why);
        free(why);
    }
}

static void mta_sts_on_addr(void *arg, const dns_answer *a)
{
    sts_fetch *f = arg;
    if (a->status == DNS_OK) {
        char text[INET6_ADDRSTRLEN];
        struct ares_addrttl v4[8];
        struct ares_addr6ttl v6[8];
        int n = 8;
        strbuf sb;
        strbuf_init(&sb);
        if (f->addrs) strbuf_puts(&sb, f->addrs);
        if (ares_parse_a_reply(a->abuf, a->alen, NULL, v4, &n) == ARES_SUCCESS) {
            for (int i = 0; i < n; i++)
                strbuf_printf(&sb, "%s%s", sb.len ? "," : "", inet_ntop(AF_INET, &v4[i].ipaddr, text, sizeof text));
        } else {
            n = 8;
            if (ares_parse_aaaa_reply(a->abuf, a->alen, NULL, v6, &n) == ARES_SUCCESS)
                for (int i = 0; i < n; i++)
                    strbuf_printf(&sb, "%s[%s]", sb.len ? "," : "",
                                  inet_ntop(AF_INET6, &v6[i].ip6addr, text, sizeof text));
        }
        free(f->addrs);
        f->addrs = sb.len ? util_strdup(sb.buf) : NULL;
        strbuf_free(&sb);
    }
    if (--f->addr_pending > 0) return;
    if (!f->addrs) {
        char *why = util_asprintf("policy host %s has no address", f->host);
        mta_sts_fail(f, why);
        free(why);
        return;
    }
    mta_sts_start_http(f);
}

/* The one STSv1 TXT record's id, or a reason why there is none. */
static char *mta_sts_txt_id(const dns_answer *a, char *id)
{
    if (a->status == DNS_NXDOMAIN || a->status == DNS_NOHOST) return util_strdup("no _mta-sts TXT record");
    if (a->status != DNS_OK) return util_asprintf("TXT lookup failed: %s", a->error);
    struct ares_txt_ext *txt = NULL;
    if (ares_parse_txt_reply_ext(a->abuf, a->alen, &txt) != ARES_SUCCESS)
        return util_strdup("TXT answer not parsable");
    strbuf rec;
    strbuf_init(&rec);
    int nsts = 0, valid = 0;
    for (struct ares_txt_ext *t = txt;; t = t->next) {
        if (!t || t->record_start) {      /* the record gathered so far is complete */
            if (rec.len && sts_txt_is_sts(rec.buf, rec.len)) {
                nsts++;
                if (sts_txt_id(rec.buf, rec.len, id, STS_ID_MAX + 1) == 0) valid++;
            }
            strbuf_reset(&rec);
        }
        if (!t) break;
        strbuf_append(&rec, (const char *)t->txt, t->length);
    }
    strbuf_free(&rec);
    ares_free_data(txt);
    if (nsts == 0) return util_strdup("no _mta-sts TXT record");
    if (nsts > 1) return util_strdup("more than one v=STSv1 TXT record");
    if (!valid) return util_strdup("the v=STSv1 TXT record is invalid");
    return NULL;
}

static void mta_sts_on_txt(void *arg, const dns_answer *a)
{
    sts_fetch *f = arg;
    char *why = mta_sts_txt_id(a, f->id);
    if (why) {
        mta_sts_fail(f, why);
        free(why);
        return;
    }
    sts_entry *e = mta_sts_cached(f->s, f->h.key);
    if (e && strcmp(e->id, f->id) == 0) {
        char *note = util_asprintf("cached policy id %s", e->id);
        mta_sts_finish(f, &e->policy, note);
        free(note);
        return;
    }
    f->host = util_asprintf("mta-sts.%s", f->h.key);
    f->addr_pending = 2;
    dns_query(f->s->d, f->host, ns_t_a, mta_sts_on_addr, f);
    dns_query(f->s->d, f->host, ns_t_aaaa, mta_sts_on_addr, f);
}

void mta_sts_get(mta_sts *s, config *cfg, const char *domain, mta_sts_cb cb, void *arg)
{
    char *key = util_strdup(domain);
    util_lowercase(key);
    size_t len = strlen(key);
    if (len && key[len - 1] == '.') key[len - 1] = '\0';
    sts_waiter *w = util_calloc(1, sizeof *w);
    w->cb = cb;
    w->arg = arg;
    sts_fetch *f = (sts_fetch *)dns_ht_find(&s->fetches, key);
    if (f) {
        free(key);
        w->next = f->waiters;
        f->waiters = w;
        return;
    }
    f = util_calloc(1, sizeof *f);
    f->h.key = key;
    f->s = s;
    f->cfg = config_ref(cfg);
    f->waiters = w;
    dns_ht_insert(&s->fetches, &f->h);
    char *name = util_asprintf("_mta-sts.%s", key);
    dns_query(s->d, name, ns_t_txt, mta_sts_on_txt, f);
    free(name);
}

void mta_sts_free(mta_sts *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->fetches.nb; i++)
        for (dns_hnode *n = s->fetches.b[i], *next; n; n = next) {
            next = n->hnext;
            sts_fetch *f = (sts_fetch *)n;
            curl_ev_remove(s->http, &f->xfer);
            mta_sts_fetch_free(f);
        }
    for (size_t i = 0; i < s->cache.nb; i++)
        for (dns_hnode *n = s->cache.b[i], *next; n; n = next) {
            next = n->hnext;
            mta_sts_entry_free((sts_entry *)n);
        }
    free(s->fetches.b);
    free(s->cache.b);
    free(s);
}
