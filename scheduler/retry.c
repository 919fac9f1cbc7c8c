/* retry.c — maps SMTP replies and local failures to SES outcomes, and computes backoff and
 * expiry (see retry.h). Table-driven so that every mapping is visible in one place. */
#include "scheduler/retry.h"

#include "base/util.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

/* Phrases that say what an enhanced code would, for servers that send none. */
static const char *const mailbox_full_phrases[] = {
    "mailbox full", "mailbox is full", "over quota", "quota exceeded", "exceeded storage",
    NULL,
};
static const char *const spam_phrases[] = {"spam", "reputation", NULL};
static const char *const no_user_phrases[] = {
    "user unknown", "unknown user", "no such user", "no such mailbox", "does not exist",
    NULL,
};

static bool text_has(const char *text, const char *const *phrases)
{
    if (!text) return false;
    for (size_t i = 0; phrases[i]; i++)
        if (strcasestr(text, phrases[i])) return true;
    return false;
}

/* "c.sss.ddd" with c the reply's class (2, 4 or 5) and 1-3 digits per part. */
static bool enhanced_valid(const char *e, int code)
{
    if (!e || !e[0]) return false;
    if (e[0] - '0' != code / 100 || e[1] != '.') return false;
    const char *p = e + 2;
    for (int part = 0; part < 2; part++) {
        int digits = 0;
        while (isdigit((unsigned char)*p)) {
            p++;
            digits++;
        }
        if (digits < 1 || digits > 3) return false;
        if (part == 0 && *p++ != '.') return false;
    }
    return *p == '\0';
}

/* Subject and detail numbers of a valid enhanced code. */
static void enhanced_parts(const char *e, int *subject, int *detail)
{
    *subject = *detail = -1;
    sscanf(e + 2, "%d.%d", subject, detail);
}

static void set_status(retry_class *c, const char *enhanced, bool valid, const char *fallback)
{
    snprintf(c->status, sizeof c->status, "%s", valid ? enhanced : fallback);
}

retry_verdict retry_classify_reply(int code, const char *enhanced, const char *text,
                                   retry_class *out)
{
    retry_class c;
    memset(&c, 0, sizeof c);
    bool valid = enhanced_valid(enhanced, code);
    int subject = -1, detail = -1;
    if (valid) enhanced_parts(enhanced, &subject, &detail);

    if (code >= 200 && code < 300) {
        c.verdict = RETRY_DELIVERED;
        set_status(&c, enhanced, valid, "2.0.0");
    } else if (code >= 400 && code < 500) {
        c.verdict = RETRY_DEFER;
        set_status(&c, enhanced, valid, "4.0.0");
        if ((valid && subject == 2 && detail == 2) || (!valid && text_has(text, mailbox_full_phrases)))
            c.delay_type = "MailboxFull";
        else if ((valid && subject == 7) || (!valid && text_has(text, spam_phrases)))
            c.delay_type = "SpamDetected";
        else
            c.delay_type = "RecipientServerError";
    } else if (code >= 500 && code < 600) {
        c.verdict = RETRY_BOUNCE;
        set_status(&c, enhanced, valid, "5.0.0");
        c.bounce_type = "Permanent";
        bool no_email = valid ? (subject == 1 && (detail == 1 || detail == 10))
                              : text_has(text, no_user_phrases);
        c.bounce_subtype = no_email ? "NoEmail" : "General";
        c.suppress = true;
    } else {
        /* not a final reply (1xx, 3xx) or not SMTP at all: try again later */
        c.verdict = RETRY_DEFER;
        set_status(&c, NULL, false, "4.0.0");
        c.delay_type = "Undetermined";
    }
    if (out) *out = c;
    return c.verdict;
}

static const struct {
    retry_failure f;
    retry_verdict verdict;
    const char *type;       /* delayType, or bounceType */
    const char *subtype;    /* bounceSubType */
    const char *status;
    bool suppress;
} failure_table[] = {
    {RETRY_FAIL_CONNECT, RETRY_DEFER, "TransientCommunicationFailure", NULL, "4.4.1", false},
    {RETRY_FAIL_TLS, RETRY_DEFER, "TransientCommunicationFailure", NULL, "4.7.5", false},
    {RETRY_FAIL_TLS_REQUIRED, RETRY_DEFER, "TransientCommunicationFailure", NULL, "4.7.10", false},
    {RETRY_FAIL_DNS_TEMP, RETRY_DEFER, "TransientCommunicationFailure", NULL, "4.4.3", false},
    {RETRY_FAIL_IP, RETRY_DEFER, "IPFailure", NULL, "4.4.0", false},
    {RETRY_FAIL_INTERNAL, RETRY_DEFER, "InternalFailure", NULL, "4.3.0", false},
    {RETRY_FAIL_DNS_NXDOMAIN, RETRY_BOUNCE, "Permanent", "General", "5.1.2", true},
    {RETRY_FAIL_DNS_NULLMX, RETRY_BOUNCE, "Permanent", "General", "5.1.10", true},
    {RETRY_FAIL_DNS_NOHOST, RETRY_BOUNCE, "Permanent", "General", "5.4.4", true},
    {RETRY_FAIL_TOO_BIG, RETRY_BOUNCE, "Permanent", "General", "5.3.4", false},
    {RETRY_FAIL_PRIVATE_MX, RETRY_BOUNCE, "Permanent", "General", "5.4.4", true},
    {RETRY_FAIL_LOOP, RETRY_BOUNCE, "Permanent", "General", "5.4.6", false},
    {RETRY_FAIL_UNSIGNED, RETRY_DEFER, "InternalFailure", NULL, "4.7.0", false},
    {RETRY_FAIL_UNSIGNED_REJECT, RETRY_BOUNCE, "Permanent", "General", "5.7.0", false},
    {RETRY_FAIL_MAIL_FROM_MX, RETRY_BOUNCE, "Permanent", "General", "5.7.0", false},
    {RETRY_FAIL_MAIL_FROM_PENDING, RETRY_DEFER, "InternalFailure", NULL, "4.7.0", false},
    {RETRY_FAIL_UNSENDABLE, RETRY_BOUNCE, "Permanent", "General", "5.6.0", false},
};

retry_verdict retry_classify_failure(retry_failure f, retry_class *out)
{
    for (size_t i = 0; i < sizeof failure_table / sizeof failure_table[0]; i++) {
        if (failure_table[i].f != f) continue;
        retry_class c;
        memset(&c, 0, sizeof c);
        c.verdict = failure_table[i].verdict;
        if (c.verdict == RETRY_DEFER) {
            c.delay_type = failure_table[i].type;
        } else {
            c.bounce_type = failure_table[i].type;
            c.bounce_subtype = failure_table[i].subtype;
        }
        snprintf(c.status, sizeof c.status, "%s", failure_table[i].status);
        c.suppress = failure_table[i].suppress;
        if (out) *out = c;
        return c.verdict;
    }
    util_fatal("retry_classify_failure: no table row for failure %d", (int)f);
}

void retry_classify_expired(retry_class *out)
{
    memset(out, 0, sizeof *out);
    out->verdict = RETRY_BOUNCE;
    out->bounce_type = "Transient";
    out->bounce_subtype = "General";
    snprintf(out->status, sizeof out->status, "4.4.7");
    out->suppress = false;
}

int64_t retry_next_delay_ms(const config *cfg, int attempts)
{
    double max = (double)cfg->retry_max_interval_ms;
    double d = (double)cfg->retry_first_ms;
    for (int i = 1; i < attempts && d < max; i++) d *= cfg->retry_factor;
    if (d > max) d = max;
    return (int64_t)d;
}

bool retry_expired(int64_t created_ms, int64_t at_ms, int64_t max_delivery_time_ms)
{
    return at_ms > created_ms + max_delivery_time_ms;
}

const char *retry_verdict_name(retry_verdict v)
{
    switch (v) {
    case RETRY_DELIVERED: return "delivered";
    case RETRY_DEFER: return "deferred";
    case RETRY_BOUNCE: return "bounced";
    case RETRY_HANDOFF: return "handed off";
    }
    return "unknown";
}
