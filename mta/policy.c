/* policy.c — the SES sending rules of SPEC section 2 as pure decisions: verified sender
 * identities (MAIL FROM and the From:/Sender:/Return-Path: headers), sandbox recipients,
 * max_recipients, max_send_rate, max_24h_send and the suppression list, answered with the
 * SPEC's reply lines verbatim.
 *
 * Identities and verified recipients are domains or addresses; a domain also covers its
 * subdomains, as a verified SES domain does. In the sandbox a recipient is verified when
 * verified_recipients or identities cover it (SES counts verified identities as verified
 * recipients). Mailbox simulator addresses pass the sandbox and use a rate token but no 24 h
 * quota; the simulator takes precedence over the suppression list for them.
 *
 * Rejection texts name the failing addresses; control characters in them become '?' and
 * the line is kept within RFC 5321's 512 octets (addresses that do not fit are summarised
 * as "and others"), so a hostile header cannot break the SMTP reply. */
#include "mta/policy.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mta/message.h"
#include "mta/simulator.h"
#include "base/util.h"

#define POLICY_REPLY_MAX 510                 /* 512 octets minus CRLF */
#define POLICY_HEADER_ADDRS_MAX 64           /* distinct failing addresses collected */

bool policy_addr_in_list(char *const *list, size_t n, const char *addr)
{
    if (!addr) return false;
    const char *domain = strrchr(addr, '@');
    domain = domain ? domain + 1 : NULL;
    size_t dlen = domain ? strlen(domain) : 0;
    for (size_t i = 0; i < n; i++) {
        const char *e = list[i];
        if (strchr(e, '@')) {
            if (strcasecmp(e, addr) == 0) return true;
            continue;
        }
        if (!domain || !*e) continue;
        size_t elen = strlen(e);
        if (dlen == elen && strcasecmp(domain, e) == 0) return true;
        /* Parent domain: "example.test" covers "sub.example.test", not "badexample.test". */
        if (dlen > elen && domain[dlen - elen - 1] == '.' &&
            strcasecmp(domain + dlen - elen, e) == 0)
            return true;
    }
    return false;
}

bool policy_identity_verified(const config *cfg, const char *addr)
{
    return policy_addr_in_list(cfg->identities, cfg->nidentities, addr);
}

static void policy_append_sanitized(strbuf *sb, const char *s, size_t max)
{
    size_t n = strlen(s);
    bool cut = n > max;
    if (cut) n = max > 3 ? max - 3 : 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char o = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
        strbuf_append(sb, &o, 1);
    }
    if (cut) strbuf_puts(sb, "...");
}

/* The 554 line naming addrs; `others` says more failing addresses exist beyond them. */
static char *policy_build_unverified_reply(const config *cfg, char *const *addrs, size_t n,
                                           bool others)
{
    static const char tail[] = " and others";
    strbuf sb;
    strbuf_init(&sb);
    strbuf_puts(&sb, "554 5.7.1 Message rejected: Email address is not verified. "
                     "The following identities failed the check in region ");
    char *region = util_strdup(cfg->region && *cfg->region ? cfg->region : "local");
    for (char *p = region; *p; p++) *p = (char)toupper((unsigned char)*p);
    policy_append_sanitized(&sb, region, 64);
    free(region);
    strbuf_puts(&sb, ": ");
    size_t limit = POLICY_REPLY_MAX - (sizeof tail - 1);   /* room kept for the tail */
    size_t i = 0;
    if (n > 0) policy_append_sanitized(&sb, addrs[i++], limit - sb.len);   /* always named */
    for (; i < n && sb.len + 2 + strlen(addrs[i]) <= limit; i++) {
        strbuf_puts(&sb, ", ");
        policy_append_sanitized(&sb, addrs[i], limit - sb.len);
    }
    if (i < n || others) strbuf_puts(&sb, tail);
    return strbuf_steal(&sb);
}

char *policy_unverified_reply(const config *cfg, char *const *addrs, size_t n)
{
    return policy_build_unverified_reply(cfg, addrs, n, false);
}

static bool policy_recipient_verified(const config *cfg, const char *rcpt)
{
    return policy_addr_in_list(cfg->verified_recipients, cfg->nverified_recipients, rcpt) ||
           policy_addr_in_list(cfg->identities, cfg->nidentities, rcpt);
}

policy_rcpt_verdict policy_check_rcpt(const policy_rcpt_in *in, const char **reply,
                                      bool *reply_owned)
{
    const config *cfg = in->cfg;
    *reply = NULL;
    *reply_owned = false;

    if (cfg->max_recipients >= 0 && in->accepted_so_far >= (size_t)cfg->max_recipients) {
        *reply = POLICY_REPLY_TOO_MANY_RCPTS;
        return POLICY_RCPT_REJECT;
    }
    bool simulator = simulator_classify(in->rcpt) != SIMULATOR_NONE;
    if (cfg->mode == CONFIG_MODE_SANDBOX && !simulator &&
        !policy_recipient_verified(cfg, in->rcpt)) {
        char *const one[] = {(char *)in->rcpt};
        *reply = policy_unverified_reply(cfg, one, 1);
        *reply_owned = true;
        return POLICY_RCPT_REJECT;
    }
    /* Check both limits before taking anything, so that a rejection takes nothing. */
    if (!quota_rate_available(in->q, in->now_ms)) {
        *reply = POLICY_REPLY_RATE;
        return POLICY_RCPT_REJECT;
    }
    if (!simulator && !quota_daily_reserve(in->q, in->now_ms)) {
        *reply = POLICY_REPLY_QUOTA;
        return POLICY_RCPT_REJECT;
    }
    if (!quota_rate_take(in->q, in->now_ms))
        util_fatal("policy: rate token vanished between check and take at %lld ms (rate %g)",
                   (long long)in->now_ms, quota_max_rate(in->q));
    if (simulator) return POLICY_RCPT_SIMULATOR;
    return in->suppressed ? POLICY_RCPT_SUPPRESSED : POLICY_RCPT_ACCEPT;
}

char *policy_check_mail_from(const config *cfg, const char *mail_from)
{
    if (!mail_from || !*mail_from) return NULL;
    if (policy_identity_verified(cfg, mail_from)) return NULL;
    char *const one[] = {(char *)mail_from};
    return policy_unverified_reply(cfg, one, 1);
}

/* Adds addr to the distinct failing addresses (case-insensitive); *others is set when the
 * list is full and a new one turns up. */
static void policy_add_failing(char **failing, size_t *n, bool *others, const char *addr)
{
    for (size_t i = 0; i < *n; i++)
        if (strcasecmp(failing[i], addr) == 0) return;
    if (*n == POLICY_HEADER_ADDRS_MAX) {
        *others = true;
        return;
    }
    failing[(*n)++] = util_strdup(addr);
}

static bool policy_is_blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n') return false;
    return true;
}

char *policy_check_headers(const config *cfg, const struct msg_headers *hs)
{
    char *failing[POLICY_HEADER_ADDRS_MAX];
    size_t nfailing = 0;
    bool others = false;
    for (size_t i = 0; i < hs->n; i++) {
        const char *name = hs->h[i].name;
        bool sender_field = strcasecmp(name, "From") == 0 || strcasecmp(name, "Sender") == 0;
        if (!sender_field && strcasecmp(name, "Return-Path") != 0) continue;
        char **addrs = NULL;
        size_t n = message_parse_addresses(hs->h[i].value, &addrs);
        for (size_t j = 0; j < n; j++)
            if (!policy_identity_verified(cfg, addrs[j]))
                policy_add_failing(failing, &nfailing, &others, addrs[j]);
        /* A From: or Sender: that names no address (a bare phrase, an unclosed quote) is
         * not a verified identity either; it is named as written. Return-Path: <> is fine. */
        if (n == 0 && sender_field && !policy_is_blank(hs->h[i].value))
            policy_add_failing(failing, &nfailing, &others, hs->h[i].value);
        message_addresses_free(addrs, n);
    }
    if (nfailing == 0) return NULL;
    char *reply = policy_build_unverified_reply(cfg, failing, nfailing, others);
    for (size_t i = 0; i < nfailing; i++) free(failing[i]);
    return reply;
}

/* ---- per-user authorization scope ---- */

char *policy_scope_reply(const config *cfg, const char *user, const char *account_id,
                         const char *kind, const char *name)
{
    strbuf sb;
    strbuf_init(&sb);
    strbuf_puts(&sb, "554 5.7.1 Message rejected: User '");
    policy_append_sanitized(&sb, user, 64);
    strbuf_puts(&sb, "' is not authorized to perform 'ses:SendRawEmail' on resource 'arn:aws:ses:");
    policy_append_sanitized(&sb, cfg->region && *cfg->region ? cfg->region : "local", 64);
    strbuf_puts(&sb, ":");
    policy_append_sanitized(&sb, account_id, 16);
    strbuf_puts(&sb, ":");
    strbuf_puts(&sb, kind);
    strbuf_puts(&sb, "/");
    size_t room = POLICY_REPLY_MAX - 1 > sb.len ? POLICY_REPLY_MAX - 1 - sb.len : 4;
    policy_append_sanitized(&sb, name, room);
    strbuf_puts(&sb, "'");
    return strbuf_steal(&sb);
}

bool policy_user_may_send_as(const config_auth_user *u, const char *addr)
{
    if (!u || !u->scoped_identities) return true;
    return policy_addr_in_list(u->identities, u->nidentities, addr);
}

bool policy_user_may_use_set(const config_auth_user *u, const char *set)
{
    if (!u || !u->scoped_sets) return true;
    for (size_t i = 0; i < u->nconfiguration_sets; i++)
        if (set && strcmp(u->configuration_sets[i], set) == 0) return true;
    return false;
}

char *policy_check_mail_from_scope(const config *cfg, const config_auth_user *u,
                                   const char *account_id, const char *mail_from)
{
    if (!mail_from || !*mail_from || policy_user_may_send_as(u, mail_from)) return NULL;
    return policy_scope_reply(cfg, u->user, account_id, "identity", mail_from);
}

char *policy_check_headers_scope(const config *cfg, const config_auth_user *u,
                                 const char *account_id, const struct msg_headers *hs)
{
    if (!u || !u->scoped_identities) return NULL;
    char *reply = NULL;
    for (size_t i = 0; i < hs->n && !reply; i++) {
        const char *name = hs->h[i].name;
        if (strcasecmp(name, "From") != 0 && strcasecmp(name, "Sender") != 0 &&
            strcasecmp(name, "Return-Path") != 0)
            continue;
        char **addrs = NULL;
        size_t n = message_parse_addresses(hs->h[i].value, &addrs);
        for (size_t j = 0; j < n && !reply; j++)
            if (!policy_user_may_send_as(u, addrs[j]))
                reply = policy_scope_reply(cfg, u->user, account_id, "identity", addrs[j]);
        message_addresses_free(addrs, n);
    }
    return reply;
}
