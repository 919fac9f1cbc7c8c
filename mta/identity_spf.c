/* identity_spf.c — does the MAIL FROM domain's SPF record (RFC 7208) authorize every IP of
 * the sending pool? Pure: the TXT answer and the pool's addresses in, one record out. The
 * addresses are the ones receivers see (mta/idstate.c passes an IP's public_address when
 * NAT maps it onto the address kiln binds), so ip4:/ip6: terms must cover those.
 *
 * Written by hand rather than with libspf2: kiln needs only the record's syntax and the
 * ip4:/ip6: arithmetic, and libspf2 resolves through its own blocking resolver. What needs
 * more DNS (a, mx, ptr, include, exists, redirect=) is not followed: each IP is evaluated
 * as SPF would, in order, and where the outcome depends on such a term the verdict is
 * UNKNOWN and names the term. A "+" term of that kind can only make an IP pass, another
 * qualifier only fail it, so an explicit ip4:/ip6: match after it still decides when the
 * two agree. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"
#include "mta/identity_check.h"
#include "mta/identity_int.h"

typedef enum {
    IDENTITY_SPF_ALL,
    IDENTITY_SPF_IP4,
    IDENTITY_SPF_IP6,
    IDENTITY_SPF_DNS,            /* a, mx, ptr, include, exists: needs lookups kiln does not make */
    IDENTITY_SPF_REDIRECT,       /* redirect= */
    IDENTITY_SPF_MODIFIER,       /* exp= and unknown modifiers: no effect on the result */
} identity_spf_kind;

typedef struct identity_spf_term {
    identity_spf_kind kind;
    char qual;                   /* '+', '-', '~', '?' */
    unsigned char net[16];       /* ip4/ip6 */
    int prefix;
    char *text;                  /* as written */
} identity_spf_term;

typedef struct identity_spf_ip {
    int family;                  /* AF_INET, AF_INET6; 0: not an IP literal */
    unsigned char b[16];
    char text[INET6_ADDRSTRLEN];
} identity_spf_ip;

typedef enum { IDENTITY_SPF_PASS, IDENTITY_SPF_NOTPASS, IDENTITY_SPF_UNSURE } identity_spf_verdict;

/* An IPv4-mapped IPv6 address is its IPv4 address (RFC 7208 section 5). */
static void identity_spf_ip_parse(const char *s, identity_spf_ip *ip)
{
    memset(ip, 0, sizeof *ip);
    snprintf(ip->text, sizeof ip->text, "%s", s);
    if (inet_pton(AF_INET, s, ip->b) == 1) {
        ip->family = AF_INET;
    } else if (inet_pton(AF_INET6, s, ip->b) == 1) {
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        ip->family = AF_INET6;
        if (memcmp(ip->b, mapped, 12) == 0) {
            memmove(ip->b, ip->b + 12, 4);
            ip->family = AF_INET;
            inet_ntop(AF_INET, ip->b, ip->text, sizeof ip->text);
        }
    }
}

static bool identity_spf_prefix_eq(const unsigned char *a, const unsigned char *b, int bits)
{
    int whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)whole) != 0) return false;
    if (rest == 0) return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

/* "ip4:" / "ip6:" arguments: address and optional /prefix. 0, or -1. */
static int identity_spf_net(const char *arg, int family, identity_spf_term *t)
{
    int max = family == AF_INET ? 32 : 128;
    const char *slash = strchr(arg, '/');
    char *addr = slash ? util_strndup(arg, (size_t)(slash - arg)) : util_strdup(arg);
    int ok = inet_pton(family, addr, t->net) == 1;
    free(addr);
    if (!ok) return -1;
    t->prefix = max;
    if (slash) {
        long long n;
        if (!util_parse_ll(slash + 1, 0, max, &n)) return -1;
        t->prefix = (int)n;
    }
    return 0;
}

/* One term of the record; -1 with *err (malloc'd) when it is not valid SPF. */
static int identity_spf_term_parse(const char *s, identity_spf_term *t, char **err)
{
    memset(t, 0, sizeof *t);
    t->text = util_strdup(s);
    size_t sep = strcspn(s, ":/=");
    if (s[sep] == '=') {         /* modifier: name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) */
        bool ok = sep > 0 && ((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z'));
        for (size_t i = 1; ok && i < sep; i++)
            ok = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", s[i]) != NULL;
        if (!ok) {
            *err = util_asprintf("'%s' is not a valid modifier", s);
            return -1;
        }
        t->kind = sep == 8 && strncasecmp(s, "redirect", 8) == 0 ? IDENTITY_SPF_REDIRECT : IDENTITY_SPF_MODIFIER;
        return 0;
    }
    t->qual = '+';
    if (strchr("+-~?", s[0])) {
        t->qual = s[0];
        s++;
        sep--;
    }
    const char *arg = s + sep;   /* "", ":...", "/..." */
    if (sep == 3 && strncasecmp(s, "all", 3) == 0 && !*arg) {
        t->kind = IDENTITY_SPF_ALL;
    } else if (sep == 3 && strncasecmp(s, "ip4", 3) == 0 && *arg == ':' && identity_spf_net(arg + 1, AF_INET, t) == 0) {
        t->kind = IDENTITY_SPF_IP4;
    } else if (sep == 3 && strncasecmp(s, "ip6", 3) == 0 && *arg == ':' && identity_spf_net(arg + 1, AF_INET6, t) == 0) {
        t->kind = IDENTITY_SPF_IP6;
    } else if (((sep == 1 && strncasecmp(s, "a", 1) == 0) || (sep == 2 && strncasecmp(s, "mx", 2) == 0)) &&
               (!*arg || arg[1])) {
        t->kind = IDENTITY_SPF_DNS;
    } else if (sep == 3 && strncasecmp(s, "ptr", 3) == 0 && (!*arg || (*arg == ':' && arg[1]))) {
        t->kind = IDENTITY_SPF_DNS;
    } else if (((sep == 7 && strncasecmp(s, "include", 7) == 0) || (sep == 6 && strncasecmp(s, "exists", 6) == 0)) &&
               *arg == ':' && arg[1]) {
        t->kind = IDENTITY_SPF_DNS;
    } else {
        *err = util_asprintf("'%s' is not a valid mechanism", t->text);
        return -1;
    }
    return 0;
}

static void identity_spf_terms_free(identity_spf_term *t, size_t n)
{
    for (size_t i = 0; i < n; i++) free(t[i].text);
    free(t);
}

/* The record's terms after "v=spf1"; NULL with *err on a syntax error (RFC 7208 permerror). */
static identity_spf_term *identity_spf_parse(const char *rec, size_t *n, char **err)
{
    char *copy = util_strdup(rec + 6);           /* after "v=spf1" */
    size_t cap = 8;
    identity_spf_term *t = util_calloc(cap, sizeof *t);
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(copy, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
        if (*n == cap) {
            cap *= 2;
            t = util_realloc(t, cap * sizeof *t);
        }
        if (identity_spf_term_parse(tok, &t[*n], err) < 0) {
            identity_spf_terms_free(t, *n + 1);
            free(copy);
            return NULL;
        }
        (*n)++;
    }
    free(copy);
    return t;
}

/* SPF's check_host() for one IP as far as kiln can take it; *by: the deciding term, or
 * for UNSURE the term kiln did not follow (NULL: nothing matched). */
static identity_spf_verdict identity_spf_ip_verdict(const identity_spf_term *t, size_t n, const identity_spf_ip *ip,
                                                    const identity_spf_term **by)
{
    bool maybe_pass = false, maybe_not = false, has_all = false;
    const identity_spf_term *unfollowed = NULL, *redirect = NULL;
    *by = NULL;
    for (size_t i = 0; i < n; i++) has_all |= t[i].kind == IDENTITY_SPF_ALL;
    for (size_t i = 0; i < n; i++) {
        bool match = false;
        switch (t[i].kind) {
        case IDENTITY_SPF_DNS:
            if (!unfollowed) unfollowed = &t[i];
            if (t[i].qual == '+') maybe_pass = true;
            else maybe_not = true;
            continue;
        case IDENTITY_SPF_REDIRECT:
            redirect = &t[i];
            continue;
        case IDENTITY_SPF_MODIFIER: continue;
        case IDENTITY_SPF_ALL: match = true; break;
        case IDENTITY_SPF_IP4: match = ip->family == AF_INET && identity_spf_prefix_eq(ip->b, t[i].net, t[i].prefix); break;
        case IDENTITY_SPF_IP6: match = ip->family == AF_INET6 && identity_spf_prefix_eq(ip->b, t[i].net, t[i].prefix); break;
        }
        if (!match) continue;
        bool pass = t[i].qual == '+';
        if ((pass && maybe_not) || (!pass && maybe_pass)) {
            *by = unfollowed;
            return IDENTITY_SPF_UNSURE;
        }
        *by = &t[i];
        return pass ? IDENTITY_SPF_PASS : IDENTITY_SPF_NOTPASS;
    }
    if (redirect && !has_all) {  /* RFC 7208 section 6.1: redirect= applies when nothing matched */
        *by = unfollowed ? unfollowed : redirect;
        return IDENTITY_SPF_UNSURE;
    }
    if (maybe_pass) {
        *by = unfollowed;
        return IDENTITY_SPF_UNSURE;
    }
    return IDENTITY_SPF_NOTPASS;
}

/* "ip4:1.2.3.4" / "ip6:2001:db8::1" for one pool IP; "" when it is not an IP literal. */
static void identity_spf_mech(strbuf *sb, const identity_spf_ip *ip)
{
    if (ip->family) strbuf_printf(sb, " ip%c:%s", ip->family == AF_INET ? '4' : '6', ip->text);
}

/* kiln's own record: every pool IP, then -all. */
static char *identity_spf_built(const identity_spf_ip *ips, size_t n)
{
    strbuf sb;
    strbuf_init(&sb);
    strbuf_puts(&sb, "v=spf1");
    for (size_t i = 0; i < n; i++) identity_spf_mech(&sb, &ips[i]);
    strbuf_puts(&sb, " -all");
    return strbuf_steal(&sb);
}

/* The operator's record with the IPs that do not pass put in front and "+all" made "~all"
 * (softfail: the cautious repair, since kiln does not know the domain's other senders). */
static char *identity_spf_repaired(const identity_spf_term *t, size_t n, const identity_spf_ip *ips,
                                   const identity_spf_verdict *v, size_t nips)
{
    strbuf sb;
    strbuf_init(&sb);
    strbuf_puts(&sb, "v=spf1");
    for (size_t i = 0; i < nips; i++)
        if (v[i] != IDENTITY_SPF_PASS) identity_spf_mech(&sb, &ips[i]);
    for (size_t i = 0; i < n; i++) {
        if (t[i].kind == IDENTITY_SPF_ALL && t[i].qual == '+') strbuf_puts(&sb, " ~all");
        else if (t[i].qual == '+' && t[i].prefix == 0 && (t[i].kind == IDENTITY_SPF_IP4 || t[i].kind == IDENTITY_SPF_IP6))
            continue;            /* an open network goes: the pool's IPs are listed instead */
        else strbuf_printf(&sb, " %s", t[i].text);
    }
    return strbuf_steal(&sb);
}

/* The verdict on the one v=spf1 record spf. */
static void identity_spf_judge(identity_record *rec, const char *spf, const identity_spf_ip *ips, size_t nips)
{
    char *err = NULL;
    size_t n = 0;
    identity_spf_term *t = identity_spf_parse(spf, &n, &err);
    if (!t) {
        rec->status = IDENTITY_WRONG;
        rec->reason = util_asprintf("the SPF record is invalid (%s): receivers see a permanent error", err);
        rec->publish = identity_spf_built(ips, nips);
        free(err);
        return;
    }
    identity_spf_verdict *v = util_calloc(nips ? nips : 1, sizeof *v);
    strbuf pass, notpass, unsure;
    strbuf_init(&pass);
    strbuf_init(&notpass);
    strbuf_init(&unsure);
    for (size_t i = 0; i < nips; i++) {
        const identity_spf_term *by = NULL;
        if (!ips[i].family) {
            v[i] = IDENTITY_SPF_NOTPASS;
            strbuf_printf(&notpass, "%s%s (not an IP address)", notpass.len ? ", " : "", ips[i].text);
            continue;
        }
        v[i] = identity_spf_ip_verdict(t, n, &ips[i], &by);
        strbuf *sb = v[i] == IDENTITY_SPF_PASS ? &pass : v[i] == IDENTITY_SPF_NOTPASS ? &notpass : &unsure;
        if (v[i] == IDENTITY_SPF_UNSURE)
            strbuf_printf(sb, "%s%s depends on %s", sb->len ? ", " : "", ips[i].text, by->text);
        else if (by)
            strbuf_printf(sb, "%s%s (%s)", sb->len ? ", " : "", ips[i].text, by->text);
        else
            strbuf_printf(sb, "%s%s (no mechanism matches)", sb->len ? ", " : "", ips[i].text);
    }
    const identity_spf_term *plus_all = NULL;   /* "+all", or "+ip4:0.0.0.0/0" that is as open */
    for (size_t i = 0; i < n && !plus_all; i++)
        if (t[i].qual == '+' && (t[i].kind == IDENTITY_SPF_ALL ||
                                 ((t[i].kind == IDENTITY_SPF_IP4 || t[i].kind == IDENTITY_SPF_IP6) && t[i].prefix == 0)))
            plus_all = &t[i];
    if (plus_all) {
        rec->status = IDENTITY_WRONG;
        rec->reason = util_asprintf("'%s' authorizes every host on the internet to send as %s", plus_all->text,
                                    rec->name);
    } else if (nips == 0) {
        rec->status = IDENTITY_UNKNOWN;
        rec->reason = util_strdup("the sending pool has no IP addresses to check");
    } else if (notpass.len) {
        rec->status = IDENTITY_WRONG;
        rec->reason = util_asprintf("does not authorize pool IP %s", notpass.buf);
    } else if (unsure.len) {
        rec->status = IDENTITY_UNKNOWN;
        rec->reason = util_asprintf("not checked: %s (kiln does not follow a, mx, ptr, include, exists or "
                                    "redirect=)", unsure.buf);
    } else {
        rec->status = IDENTITY_PUBLISHED;
        rec->reason = util_asprintf("authorizes every pool IP: %s", pass.buf);
    }
    if (rec->status != IDENTITY_PUBLISHED && nips) rec->publish = identity_spf_repaired(t, n, ips, v, nips);
    strbuf_free(&pass);
    strbuf_free(&notpass);
    strbuf_free(&unsure);
    free(v);
    identity_spf_terms_free(t, n);
}

void identity_eval_spf(identity_record *rec, const char *mail_from_domain, const identity_answer *a,
                       const char *const *pool_ips, size_t npool_ips)
{
    identity_rec_start(rec, IDENTITY_REC_SPF, mail_from_domain, "TXT");
    identity_spf_ip *ips = util_calloc(npool_ips ? npool_ips : 1, sizeof *ips);
    for (size_t i = 0; i < npool_ips; i++) identity_spf_ip_parse(pool_ips[i], &ips[i]);
    if (identity_rec_no_records(rec, a, "SPF record")) {
        if (rec->status == IDENTITY_MISSING) rec->publish = identity_spf_built(ips, npool_ips);
        free(ips);
        return;
    }
    rec->found = identity_found_txt(a->txt, a->ntxt);
    size_t nspf = 0;
    const char *spf = NULL;
    for (size_t i = 0; i < a->ntxt; i++)
        if (identity_starts_word(a->txt[i], "v=spf1")) {
            nspf++;
            spf = a->txt[i];
        }
    if (nspf == 0) {
        rec->status = IDENTITY_MISSING;
        rec->reason = util_asprintf("no SPF record (v=spf1) among the TXT records of %s", rec->name);
        rec->publish = identity_spf_built(ips, npool_ips);
    } else if (nspf > 1) {
        rec->status = IDENTITY_WRONG;
        rec->reason = util_asprintf("%zu v=spf1 records: receivers see a permanent error (RFC 7208 section 4.5); "
                                    "merge them into one that lists the pool's IPs", nspf);
        rec->publish = identity_spf_built(ips, npool_ips);
    } else {
        identity_spf_judge(rec, spf, ips, npool_ips);
    }
    free(ips);
}
