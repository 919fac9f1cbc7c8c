/* fbparse_classify.c — the SES bounce classification of one failed recipient (the mapping
 * in mta/fbparse.h): bounceType from the class of the enhanced status code (RFC 3463), or
 * when there is none from the first enhanced or basic reply code in the diagnostic text;
 * bounceSubType from the code's subject and detail and from the diagnostic's words. Pure,
 * static strings out. Written by hand: the table is SES's, no library has it. */
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/fbparse_int.h"

static bool fbparse_any_ci(const char *text, const char *const *words)
{
    for (size_t i = 0; words[i]; i++)
        if (fbparse_contains_ci(text, words[i])) return true;
    return false;
}

static const char *const fbparse_noemail_words[] = {
    "user unknown", "unknown user", "no such user", "does not exist", "doesn't exist",
    "mailbox unavailable", "no mailbox", "unknown recipient", "recipient not found",
    "recipientnotfound", "address rejected", "invalid recipient", "no such recipient",
    "user doesn't have", "doesn't have a", "not a valid mailbox", "account disabled",
    "mailbox not found", "no such mailbox", "unrouteable address", NULL};
static const char *const fbparse_full_words[] = {
    "mailbox full", "mailbox is full", "over quota", "quota exceeded", "exceeded storage",
    "insufficient storage", "out of storage", NULL};
static const char *const fbparse_large_words[] = {
    "too large", "too big", "size exceeds", "exceeds the maximum", "message size", NULL};
static const char *const fbparse_content_words[] = {
    "spam", "content", "policy", "virus", "blocked", "rejected for policy", NULL};

/* The class digit ('4' or '5', 0 when unknown) of a basic reply code in text: the first
 * three-digit number starting with 4 or 5 standing alone ("550 ", "554:", "smtp; 421-"). */
static char fbparse_basic_class(const char *text)
{
    if (!text) return 0;
    for (const char *p = text; *p; p++) {
        if ((*p != '4' && *p != '5') || (p > text && (p[-1] >= '0' && p[-1] <= '9')))
            continue;
        if (p > text && strchr(" ;:(", p[-1]) == NULL) continue;
        if (p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9') continue;
        if (p[3] && strchr(" -:", p[3]) == NULL) continue;
        return *p;
    }
    return 0;
}

void fbparse_classify(const char *status, const char *diagnostic, const char **type,
                      const char **subtype)
{
    char buf[16];
    const char *st = NULL;
    if (status && fbparse_find_status(status, buf) && strncmp(status, buf, strlen(buf)) == 0 &&
        buf[0] != '2')
        st = status;
    if (!st && fbparse_find_status(diagnostic, buf) && buf[0] != '2') st = buf;
    char cls = st ? st[0] : fbparse_basic_class(diagnostic);
    int subj = -1, detail = -1;
    if (st) {
        const char *d1 = strchr(st, '.');
        subj = atoi(d1 + 1);
        detail = atoi(strchr(d1 + 1, '.') + 1);
    }
    const char *d = diagnostic;
    bool full = (subj == 2 && detail == 2) || fbparse_any_ci(d, fbparse_full_words);
    bool attach = fbparse_contains_ci(d, "attachment");
    bool large = (subj == 3 && detail == 4) || (subj == 2 && detail == 3) ||
                 fbparse_any_ci(d, fbparse_large_words);
    /* the words count when the code does not say something else (mailbox, system,
     * content, security) */
    bool noemail = (subj == 1 && (detail <= 3 || detail == 6 || detail == 10)) ||
                   ((subj < 2 || subj == 4 || subj == 5) &&
                    fbparse_any_ci(d, fbparse_noemail_words));
    bool content = subj == 6 || (subj == 7 && fbparse_any_ci(d, fbparse_content_words));

    if (!cls) {                      /* no code at all: the words alone */
        if (noemail) {
            *type = "Permanent", *subtype = "NoEmail";
        } else if (full) {
            *type = "Transient", *subtype = "MailboxFull";
        } else {
            *type = "Undetermined", *subtype = "Undetermined";
        }
        return;
    }
    if (full) {                      /* 5.2.2 too: SES calls a full mailbox transient */
        *type = "Transient", *subtype = "MailboxFull";
        return;
    }
    if (cls == '5') {
        *type = "Permanent";
        if (noemail) *subtype = "NoEmail";
        else if (large) *subtype = "MessageTooLarge";
        else if (attach) *subtype = "AttachmentRejected";
        else if (content) *subtype = "ContentRejected";
        else *subtype = "General";
        return;
    }
    *type = "Transient";
    if (large) *subtype = "MessageTooLarge";
    else if (attach) *subtype = "AttachmentRejected";
    else if (content) *subtype = "ContentRejected";
    else *subtype = "General";
}
