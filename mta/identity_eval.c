/* identity_eval.c — the pure half of identity_check.h: DKIM key records, the MAIL FROM
 * domain's MX, DMARC and its alignment, and the assembly of one identity's verdict from
 * the answers (SPF is identity_spf.c). Text in, records out: no sockets, no loop.
 *
 * The DKIM and DMARC tag-lists are read by identity_taglist_parse below, written by hand:
 * the grammar is a few lines of RFC 6376 section 3.2 (DMARC reuses it, RFC 7489 section
 * 6.4). mta/dkim_key.c may grow its own; this one is static and self-contained so that
 * the two can be merged into one later. */
#include "mta/identity_check.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"
#include "mta/identity_int.h"

/* ---------- names ---------- */

const char *identity_status_name(identity_status s)
{
    switch (s) {
    case IDENTITY_PUBLISHED: return "PUBLISHED";
    case IDENTITY_MISSING: return "MISSING";
    case IDENTITY_WRONG: return "WRONG";
    case IDENTITY_TEMPFAIL: return "TEMPFAIL";
    case IDENTITY_UNKNOWN: return "UNKNOWN";
    }
    return "?";
}

const char *identity_ses_status_name(identity_ses_status s)
{
    switch (s) {
    case IDENTITY_SES_PENDING: return "PENDING";
    case IDENTITY_SES_SUCCESS: return "SUCCESS";
    case IDENTITY_SES_FAILED: return "FAILED";
    case IDENTITY_SES_TEMPORARY_FAILURE: return "TEMPORARY_FAILURE";
    case IDENTITY_SES_NOT_STARTED: return "NOT_STARTED";
    }
    return "?";
}

const char *identity_rec_kind_name(identity_rec_kind k)
{
    switch (k) {
    case IDENTITY_REC_DKIM: return "DKIM";
    case IDENTITY_REC_MX: return "MX";
    case IDENTITY_REC_SPF: return "SPF";
    case IDENTITY_REC_DMARC: return "DMARC";
    }
    return "?";
}

/* ---------- shared helpers (identity_int.h) ---------- */

void identity_rec_start(identity_record *rec, identity_rec_kind kind, const char *name, const char *type)
{
    memset(rec, 0, sizeof *rec);
    rec->kind = kind;
    rec->name = util_strdup(name);
    rec->type = type;
}

bool identity_rec_no_records(identity_record *rec, const identity_answer *a, const char *what)
{
    switch (a->kind) {
    case IDENTITY_ANS_RECORDS: return false;
    case IDENTITY_ANS_NXDOMAIN:
        rec->status = IDENTITY_MISSING;
        rec->reason = util_asprintf("no %s: %s does not exist (NXDOMAIN)", what, rec->name);
        return true;
    case IDENTITY_ANS_NODATA:
        rec->status = IDENTITY_MISSING;
        rec->reason = util_asprintf("no %s: %s has no %s record", what, rec->name, rec->type);
        return true;
    case IDENTITY_ANS_TEMPFAIL:
        rec->status = IDENTITY_TEMPFAIL;
        rec->reason = util_asprintf("not known yet: the %s lookup of %s failed (%s)", rec->type, rec->name,
                                    a->error ? a->error : "no answer");
        return true;
    }
    return false;
}

void identity_found_append(strbuf *sb, const char *s)
{
    size_t len = strlen(s);
    if (len <= IDENTITY_FOUND_MAX) {
        strbuf_append(sb, s, len);
        return;
    }
    size_t tail = 40, head = IDENTITY_FOUND_MAX - tail - 3;   /* a key's head and tail tell keys apart */
    strbuf_append(sb, s, head);
    strbuf_puts(sb, "...");
    strbuf_append(sb, s + len - tail, tail);
}

char *identity_found_txt(const char *const *txt, size_t n)
{
    if (n == 0) return NULL;
    strbuf sb;
    strbuf_init(&sb);
    for (size_t i = 0; i < n; i++) {
        if (i) strbuf_puts(&sb, " | ");
        identity_found_append(&sb, txt[i]);
    }
    return strbuf_steal(&sb);
}

bool identity_starts_word(const char *s, const char *w)
{
    size_t n = strlen(w);
    return strncasecmp(s, w, n) == 0 && (s[n] == '\0' || s[n] == ' ' || s[n] == '\t');
}

/* ---------- domains ---------- */

char *identity_domain_of(const char *identity)
{
    const char *at = identity ? strrchr(identity, '@') : NULL;
    char *d = util_strdup(at ? at + 1 : identity ? identity : "");
    util_lowercase(d);
    size_t len = strlen(d);
    if (len && d[len - 1] == '.') d[len - 1] = '\0';
    return d;
}

char *identity_org_domain(const char *domain)
{
    const char *last = strrchr(domain, '.');
    if (!last) return util_strdup(domain);
    const char *p = last;
    while (p > domain && p[-1] != '.') p--;
    return util_strdup(p);
}

/* ---------- tag-lists (RFC 6376 section 3.2) ---------- */

#define IDENTITY_TAGS_MAX 32

typedef struct identity_tags {
    size_t n;
    char *name[IDENTITY_TAGS_MAX];
    char *value[IDENTITY_TAGS_MAX];      /* outer whitespace removed, inner kept */
} identity_tags;

static void identity_tags_clear(identity_tags *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->name[i]);
        free(t->value[i]);
    }
    t->n = 0;
}

static bool identity_is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* tag-list = tag-spec *( ";" tag-spec ) [ ";" ]; tag-spec = [FWS] tag-name [FWS] "=" [FWS]
 * tag-value [FWS]; tag-name = ALPHA *(ALPHA / DIGIT / "_"); tag-value characters are
 * %x21-3A / %x3C-7E with whitespace only between them. Duplicate names are an error
 * (section 3.2). 0, or -1 with *why (static text) and t cleared. */
static int identity_taglist_parse(const char *s, identity_tags *t, const char **why)
{
    t->n = 0;
    const char *p = s;
    for (;;) {
        while (identity_is_ws(*p)) p++;
        if (*p == '\0') {
            if (t->n == 0) {
                *why = "empty tag list";
                return -1;
            }
            return 0;
        }
        const char *n0 = p;
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))) {
            *why = "a tag name must start with a letter";
            goto bad;
        }
        while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_') p++;
        size_t nlen = (size_t)(p - n0);
        while (identity_is_ws(*p)) p++;
        if (*p != '=') {
            *why = "a tag without '='";
            goto bad;
        }
        p++;
        while (identity_is_ws(*p)) p++;
        const char *v0 = p, *vend = p;
        while (*p && *p != ';') {
            unsigned char c = (unsigned char)*p;
            if (!identity_is_ws(*p) && (c < 0x21 || c > 0x7e)) {
                *why = "a character not allowed in a tag value";
                goto bad;
            }
            if (!identity_is_ws(*p)) vend = p + 1;
            p++;
        }
        for (size_t i = 0; i < t->n; i++)
            if (strlen(t->name[i]) == nlen && strncmp(t->name[i], n0, nlen) == 0) {
                *why = "a tag appears twice";
                goto bad;
            }
        if (t->n == IDENTITY_TAGS_MAX) {
            *why = "too many tags";
            goto bad;
        }
        t->name[t->n] = util_strndup(n0, nlen);
        t->value[t->n] = util_strndup(v0, (size_t)(vend - v0));
        t->n++;
        if (*p == ';') p++;
    }
bad:
    identity_tags_clear(t);
    return -1;
}

static const char *identity_tag(const identity_tags *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->name[i], name) == 0) return t->value[i];
    return NULL;
}

/* s without any whitespace (p= values may be folded, RFC 6376 section 3.6.1). */
static char *identity_strip_ws(const char *s)
{
    char *o = util_strdup(s ? s : ""), *w = o;
    for (const char *r = o; *r; r++)
        if (!identity_is_ws(*r)) *w++ = *r;
    *w = '\0';
    return o;
}

/* True if the colon-separated list holds item (case-insensitive, whitespace ignored). */
static bool identity_list_has(const char *list, const char *item)
{
    char *l = identity_strip_ws(list);
    bool found = false;
    for (char *save = NULL, *tok = strtok_r(l, ":", &save); tok && !found; tok = strtok_r(NULL, ":", &save))
        found = strcasecmp(tok, item) == 0;
    free(l);
    return found;
}

/* ---------- DKIM ---------- */

/* The verdict on one DKIM TXT record against kiln's key: IDENTITY_PUBLISHED (with a note in
 * *note, may stay NULL), IDENTITY_MISSING (not a DKIM key record at all) or IDENTITY_WRONG
 * (why in *reason). */
static identity_status identity_dkim_one(const char *txt, const identity_dkim_selector *sel, char **reason,
                                         char **note)
{
    identity_tags t;
    const char *why = NULL;
    if (identity_taglist_parse(txt, &t, &why) < 0) {
        *reason = util_asprintf("the record is not a valid DKIM tag list (%s)", why);
        return IDENTITY_WRONG;
    }
    identity_status st = IDENTITY_WRONG;
    const char *v = identity_tag(&t, "v"), *p = identity_tag(&t, "p"), *k = identity_tag(&t, "k");
    const char *h = identity_tag(&t, "h"), *s = identity_tag(&t, "s"), *flags = identity_tag(&t, "t");
    char *pub = NULL, *want = NULL;
    const char *want_k = sel->k && sel->k[0] ? sel->k : "rsa";
    if (v && strcmp(v, "DKIM1") != 0) {
        *reason = util_asprintf("v=%s is not a DKIM key record (v=DKIM1)", v);
        st = IDENTITY_MISSING;
    } else if (!p) {
        *reason = util_strdup(v ? "the DKIM record has no p= tag" : "not a DKIM key record (no v=DKIM1, no p=)");
        st = v ? IDENTITY_WRONG : IDENTITY_MISSING;
    } else if (v && strcmp(t.name[0], "v") != 0) {
        *reason = util_strdup("malformed DKIM record: v= must be the first tag (RFC 6376 section 3.6.1)");
    } else if ((pub = identity_strip_ws(p))[0] == '\0') {
        *reason = util_strdup("the key is revoked (empty p=)");
    } else if (strcasecmp(k ? k : "rsa", want_k) != 0) {
        *reason = util_asprintf("the record says k=%s, kiln signs with a k=%s key", k ? k : "rsa (default)", want_k);
    } else if (h && !identity_list_has(h, "sha256")) {
        *reason = util_asprintf("h=%s does not allow sha256, which kiln signs with", h);
    } else if (s && !identity_list_has(s, "email") && !identity_list_has(s, "*")) {
        *reason = util_asprintf("s=%s does not allow email", s);
    } else if (strcmp(pub, (want = identity_strip_ws(sel->p))) != 0) {
        *reason = util_strdup("the published key does not match the key kiln signs with");
    } else {
        st = IDENTITY_PUBLISHED;
        if (flags && identity_list_has(flags, "y"))
            *note = util_strdup("t=y: testing mode, verifiers may treat failed signatures as unsigned");
    }
    free(pub);
    free(want);
    identity_tags_clear(&t);
    return st;
}

void identity_eval_dkim(identity_record *rec, const char *domain, const identity_dkim_selector *sel,
                        const identity_answer *a)
{
    char *name = util_asprintf("%s._domainkey.%s", sel->selector, domain);
    identity_rec_start(rec, IDENTITY_REC_DKIM, name, "TXT");
    free(name);
    rec->selector = util_strdup(sel->selector);
    const char *k = sel->k && sel->k[0] ? sel->k : "rsa";
    char *publish = util_asprintf("v=DKIM1; k=%s; p=%s", k, sel->p ? sel->p : "");
    if (identity_rec_no_records(rec, a, "DKIM key record")) {
        if (rec->status == IDENTITY_MISSING) rec->publish = publish;
        else free(publish);
        return;
    }
    rec->found = identity_found_txt(a->txt, a->ntxt);
    if (a->ntxt == 0) {
        rec->status = IDENTITY_MISSING;
        rec->reason = util_asprintf("no DKIM key record: %s has no TXT record", rec->name);
    } else if (a->ntxt > 1) {
        size_t match = 0;
        for (size_t i = 0; i < a->ntxt; i++) {
            char *r = NULL, *n = NULL;
            if (identity_dkim_one(a->txt[i], sel, &r, &n) == IDENTITY_PUBLISHED) match++;
            free(r);
            free(n);
        }
        rec->status = IDENTITY_WRONG;
        rec->reason = util_asprintf("%zu TXT records (%s kiln's key): verifiers may use any of them "
                                    "(RFC 6376 section 3.6.2.2); keep only kiln's",
                                    a->ntxt, match ? "one of them is" : "none is");
    } else {
        char *why = NULL, *note = NULL;
        rec->status = identity_dkim_one(a->txt[0], sel, &why, &note);
        if (rec->status == IDENTITY_PUBLISHED)
            rec->reason = note ? util_asprintf("the published key is kiln's (k=%s); %s", k, note)
                               : util_asprintf("the published key is kiln's (k=%s)", k);
        else
            rec->reason = util_strdup(why);
        free(why);
        free(note);
    }
    if (rec->status != IDENTITY_PUBLISHED) rec->publish = publish;
    else free(publish);
}

/* ---------- MAIL FROM MX ---------- */

static bool identity_host_eq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la && a[la - 1] == '.') la--;
    if (lb && b[lb - 1] == '.') lb--;
    return la == lb && strncasecmp(a, b, la) == 0;
}

identity_ses_status identity_eval_mx(identity_record *rec, const char *mail_from_domain,
                                     const identity_answer *a, const char *expect_host,
                                     const char *fallback_host)
{
    identity_rec_start(rec, IDENTITY_REC_MX, mail_from_domain, "MX");
    const char *host = expect_host ? expect_host : fallback_host ? fallback_host : "<your bounce-receiving host>";
    char *publish = util_asprintf("10 %s", host);
    if (identity_rec_no_records(rec, a, "MX record") || a->nmx == 0) {
        if (!rec->reason)        /* records came back, none of them an MX (a CNAME alone) */
            rec->reason = util_asprintf("no MX record: %s has no MX record", rec->name);
        if (rec->status == IDENTITY_TEMPFAIL) {
            free(publish);
            return IDENTITY_SES_TEMPORARY_FAILURE;
        }
        rec->status = IDENTITY_MISSING;
        rec->publish = publish;
        return IDENTITY_SES_PENDING;
    }
    strbuf sb;
    strbuf_init(&sb);
    bool null_mx = false, have_expect = false;
    for (size_t i = 0; i < a->nmx; i++) {
        const char *h = a->mx[i].host ? a->mx[i].host : "";
        strbuf_printf(&sb, "%s%d ", i ? ", " : "", a->mx[i].preference);
        identity_found_append(&sb, h[0] ? h : ".");
        if (h[0] == '\0' || strcmp(h, ".") == 0) null_mx = true;
        if (expect_host && identity_host_eq(h, expect_host)) have_expect = true;
    }
    rec->found = strbuf_steal(&sb);
    identity_ses_status st;
    if (null_mx) {
        rec->status = IDENTITY_WRONG;
        rec->reason = util_strdup("null MX (RFC 7505): the domain accepts no mail, so bounces to it are lost");
        st = IDENTITY_SES_FAILED;
    } else if (expect_host && !have_expect) {
        rec->status = IDENTITY_WRONG;
        rec->reason = util_asprintf("the MX does not name %s: bounces go elsewhere", expect_host);
        st = IDENTITY_SES_FAILED;
    } else {
        rec->status = IDENTITY_PUBLISHED;
        rec->reason = expect_host ? util_asprintf("the MX names %s", expect_host)
                                  : util_strdup("an MX record is in place");
        st = IDENTITY_SES_SUCCESS;
    }
    if (rec->status != IDENTITY_PUBLISHED) rec->publish = publish;
    else free(publish);
    return st;
}

/* ---------- DMARC ---------- */

/* The DMARC records (v=DMARC1 first) among a TXT answer; *first = the first one. */
static size_t identity_dmarc_records(const identity_answer *a, const char **first)
{
    size_t n = 0;
    *first = NULL;
    if (a->kind != IDENTITY_ANS_RECORDS) return 0;
    for (size_t i = 0; i < a->ntxt; i++) {
        const char *s = a->txt[i];
        while (identity_is_ws(*s)) s++;
        if (strncasecmp(s, "v", 1) != 0) continue;
        s++;
        while (identity_is_ws(*s)) s++;
        if (*s != '=') continue;
        s++;
        while (identity_is_ws(*s)) s++;
        if (strncasecmp(s, "DMARC1", 6) != 0 || (s[6] && s[6] != ';' && !identity_is_ws(s[6]))) continue;
        if (n++ == 0) *first = a->txt[i];
    }
    return n;
}

/* Why kiln's mail is or is not aligned; returns 1 aligned, 0 not, -1 not known. */
static int identity_dmarc_alignment(const identity_dmarc_ctx *c, bool strict_spf, strbuf *why)
{
    int dkim = 0, spf = 0;
    if (!c->signing_enabled) {
        strbuf_printf(why, "kiln does not DKIM-sign for %s", c->domain);
    } else if (c->dkim == IDENTITY_SES_SUCCESS) {
        dkim = 1;
        strbuf_printf(why, "DKIM-signed with d=%s", c->domain);
    } else if (c->dkim == IDENTITY_SES_TEMPORARY_FAILURE) {
        dkim = -1;
        strbuf_printf(why, "the DKIM key records could not be looked up");
    } else if (c->dkim == IDENTITY_SES_NOT_STARTED) {
        strbuf_printf(why, "kiln has no DKIM key for %s", c->domain);
    } else {
        strbuf_printf(why, "DKIM signatures will not verify (key records %s)", identity_ses_status_name(c->dkim));
    }
    strbuf_puts(why, "; ");
    const char *mf = c->mail_from_domain;
    bool same = mf && identity_host_eq(mf, c->domain);
    bool sub = mf && !same && util_has_suffix_ci(mf, c->domain) && strlen(mf) > strlen(c->domain) &&
               mf[strlen(mf) - strlen(c->domain) - 1] == '.';
    if (!mf) {
        strbuf_puts(why, "no custom MAIL FROM domain, so SPF alignment rests on each application's envelope sender");
    } else if (!same && !(sub && !strict_spf)) {
        /* relaxed: equal or a subdomain of the identity's domain. RFC 7489 allows any domain
         * of the same organizational domain; without a Public Suffix List kiln does not
         * claim that. */
        strbuf_printf(why, "MAIL FROM domain %s is not %s%s", mf, c->domain,
                      strict_spf ? " (aspf=s)" : " or a subdomain of it");
    } else if (c->spf == IDENTITY_PUBLISHED) {
        spf = 1;
        strbuf_printf(why, "SPF-aligned through MAIL FROM domain %s", mf);
    } else if (c->spf == IDENTITY_UNKNOWN || c->spf == IDENTITY_TEMPFAIL) {
        spf = -1;
        strbuf_printf(why, "SPF of MAIL FROM domain %s not confirmed (%s)", mf, identity_status_name(c->spf));
    } else {
        strbuf_printf(why, "SPF of MAIL FROM domain %s does not pass for the pool (%s)", mf,
                      identity_status_name(c->spf));
    }
    if (dkim == 1 || spf == 1) return 1;
    if (dkim == -1 || spf == -1) return -1;
    return 0;
}

void identity_eval_dmarc(identity_record *rec, const identity_dmarc_ctx *ctx,
                         const identity_answer *at_domain, const char *org,
                         const identity_answer *at_org)
{
    char *name = util_asprintf("_dmarc.%s", ctx->domain);
    identity_rec_start(rec, IDENTITY_REC_DMARC, name, "TXT");
    const char *first = NULL;
    size_t n = identity_dmarc_records(at_domain, &first);
    const identity_answer *used = at_domain;
    bool from_org = false;
    if (n == 0 && at_domain->kind != IDENTITY_ANS_TEMPFAIL && at_org && org && strcmp(org, ctx->domain) != 0) {
        /* RFC 7489 section 6.6.3: no record at the From domain, ask its organizational domain */
        n = identity_dmarc_records(at_org, &first);
        used = at_org;
        from_org = true;
        free(rec->name);
        rec->name = util_asprintf("_dmarc.%s", org);
    }
    if (n == 0) {
        if (used->kind == IDENTITY_ANS_TEMPFAIL) {
            identity_rec_no_records(rec, used, "DMARC record");
        } else {
            free(rec->name);
            rec->name = name;
            name = NULL;
            rec->status = IDENTITY_MISSING;
            rec->found = identity_found_txt(at_domain->txt, at_domain->kind == IDENTITY_ANS_RECORDS ? at_domain->ntxt : 0);
            rec->reason = from_org ? util_asprintf("no DMARC record at _dmarc.%s nor at _dmarc.%s", ctx->domain, org)
                                   : util_asprintf("no DMARC record at _dmarc.%s", ctx->domain);
            /* postmaster@ exists at every mail domain (RFC 5321 section 4.5.1) */
            rec->publish = util_asprintf("v=DMARC1; p=none; rua=mailto:postmaster@%s", ctx->domain);
        }
        free(name);
        return;
    }
    free(name);
    rec->found = identity_found_txt(used->txt, used->ntxt);
    if (n > 1) {
        rec->status = IDENTITY_WRONG;
        rec->reason = util_asprintf("%zu DMARC records at %s: receivers apply none of them (RFC 7489 section 6.6.3)",
                                    n, rec->name);
        return;
    }
    identity_tags t;
    const char *why = NULL;
    if (identity_taglist_parse(first, &t, &why) < 0) {
        rec->status = IDENTITY_WRONG;
        rec->reason = util_asprintf("the DMARC record is not a valid tag list (%s)", why);
        return;
    }
    const char *p = identity_tag(&t, "p"), *sp = identity_tag(&t, "sp");
    const char *aspf = identity_tag(&t, "aspf");
    const char *pol = from_org && sp ? sp : p;     /* sp= governs subdomains of the org */
    const char *polname = from_org && sp ? "sp" : "p";
    if (!pol || (strcasecmp(pol, "none") != 0 && strcasecmp(pol, "quarantine") != 0 &&
                 strcasecmp(pol, "reject") != 0)) {
        rec->status = IDENTITY_WRONG;
        rec->reason = util_asprintf("the DMARC record has no valid %s= (none, quarantine or reject)", polname);
        identity_tags_clear(&t);
        return;
    }
    bool strict_spf = aspf && strcasecmp(aspf, "s") == 0;
    strbuf why_al;
    strbuf_init(&why_al);
    int aligned = identity_dmarc_alignment(ctx, strict_spf, &why_al);
    char *where = from_org ? util_asprintf(" (from the organizational domain %s)", org) : util_strdup("");
    if (strcasecmp(pol, "none") == 0) {
        rec->status = IDENTITY_PUBLISHED;
        rec->reason = aligned == 1 ? util_asprintf("%s=none%s: monitoring only; kiln's mail is aligned (%s)", polname,
                                                   where, why_al.buf)
                                   : util_asprintf("%s=none%s: monitoring only; kiln's mail would %sbe aligned (%s)",
                                                   polname, where, aligned == 0 ? "not " : "perhaps not ", why_al.buf);
    } else if (aligned == 1) {
        rec->status = IDENTITY_PUBLISHED;
        rec->reason = util_asprintf("%s=%s%s; kiln's mail is aligned (%s)", polname, pol, where, why_al.buf);
    } else if (aligned == -1) {
        rec->status = IDENTITY_UNKNOWN;
        rec->reason = util_asprintf("DMARC %s=%s%s and kiln's alignment is not confirmed: %s", polname, pol, where,
                                    why_al.buf);
    } else {
        rec->status = IDENTITY_WRONG;
        rec->reason = util_asprintf("DMARC %s=%s%s but kiln would send unaligned mail: %s", polname, pol, where,
                                    why_al.buf);
    }
    free(where);
    strbuf_free(&why_al);
    identity_tags_clear(&t);
}

/* ---------- the whole verdict ---------- */

static identity_ses_status identity_dkim_overall(const identity_record *recs, size_t n)
{
    if (n == 0) return IDENTITY_SES_NOT_STARTED;
    bool wrong = false, temp = false, missing = false;
    for (size_t i = 0; i < n; i++) {
        wrong |= recs[i].status == IDENTITY_WRONG;
        temp |= recs[i].status == IDENTITY_TEMPFAIL || recs[i].status == IDENTITY_UNKNOWN;
        missing |= recs[i].status == IDENTITY_MISSING;
    }
    return wrong ? IDENTITY_SES_FAILED : temp ? IDENTITY_SES_TEMPORARY_FAILURE
         : missing ? IDENTITY_SES_PENDING : IDENTITY_SES_SUCCESS;
}

identity_check_result *identity_check_assemble(const identity_check_req *req, const identity_answers *a)
{
    identity_check_result *r = util_calloc(1, sizeof *r);
    r->identity = util_strdup(req->identity ? req->identity : "");
    r->domain = identity_domain_of(r->identity);
    r->is_address = strchr(r->identity, '@') != NULL;
    r->signing_enabled = req->signing_enabled;
    r->mail_from_domain = identity_domain_of(req->mail_from_domain);
    if (!req->mail_from_domain || !r->mail_from_domain[0]) {
        free(r->mail_from_domain);
        r->mail_from_domain = NULL;
    }
    r->nselectors = req->nselectors;
    r->selectors = util_calloc(req->nselectors ? req->nselectors : 1, sizeof *r->selectors);
    r->records = util_calloc(req->nselectors + 3, sizeof *r->records);
    for (size_t i = 0; i < req->nselectors; i++) {
        r->selectors[i] = util_strdup(req->selectors[i].selector);
        identity_eval_dkim(&r->records[r->nrecords++], r->domain, &req->selectors[i], &a->dkim[i]);
    }
    r->dkim_status = identity_dkim_overall(r->records, r->nrecords);
    identity_status spf = IDENTITY_MISSING;
    r->mail_from_status = IDENTITY_SES_PENDING;
    if (r->mail_from_domain) {
        r->mail_from_status = identity_eval_mx(&r->records[r->nrecords++], r->mail_from_domain, &a->mx,
                                               req->mail_from_mx, req->server_hostname);
        identity_record *s = &r->records[r->nrecords++];
        identity_eval_spf(s, r->mail_from_domain, &a->spf, req->pool_ips, req->npool_ips);
        spf = s->status;
    }
    identity_dmarc_ctx ctx = {r->domain, req->signing_enabled, r->dkim_status, r->mail_from_domain, spf};
    char *org = identity_org_domain(r->domain);
    identity_eval_dmarc(&r->records[r->nrecords++], &ctx, &a->dmarc, org, &a->dmarc_org);
    free(org);
    return r;
}

const identity_record *identity_check_find(const identity_check_result *r, identity_rec_kind kind,
                                           const char *selector)
{
    for (size_t i = 0; i < r->nrecords; i++) {
        const identity_record *rec = &r->records[i];
        if (rec->kind != kind) continue;
        if (kind == IDENTITY_REC_DKIM && selector && strcmp(rec->selector, selector) != 0) continue;
        return rec;
    }
    return NULL;
}

void identity_check_result_free(identity_check_result *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->nrecords; i++) {
        identity_record *rec = &r->records[i];
        free(rec->selector);
        free(rec->name);
        free(rec->found);
        free(rec->reason);
        free(rec->publish);
    }
    for (size_t i = 0; i < r->nselectors; i++) free(r->selectors[i]);
    free(r->selectors);
    free(r->records);
    free(r->identity);
    free(r->domain);
    free(r->mail_from_domain);
    free(r);
}
