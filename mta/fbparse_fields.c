/* fbparse_fields.c — the RFC 822-style field blocks of feedback reports: the per-message
 * and per-recipient blocks of a message/delivery-status body (RFC 3464 section 2), the
 * fields of a message/feedback-report body (RFC 5965 section 3.1, RFC 6591), and the header
 * fields of a quoted original (a message/rfc822 or text/rfc822-headers part, or the header
 * block after a non-standard bounce's "copy of the message" marker).
 *
 * Written by hand: GMime parses MIME structure but leaves these bodies as opaque text, and
 * the grammar is a header section repeated with blank lines between (unfold, split at the
 * first colon). Promises: bounded by the limits (at most max_recipients + 1 blocks are
 * read; each value is cut at max_field bytes), never reads past len, works on CRLF or LF. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"
#include "mta/fbparse_int.h"

void fbparse_block_add(fbparse_block *b, const char *name, const char *value, size_t vlen,
                       size_t max_field)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 16;
        b->f = util_realloc(b->f, b->cap * sizeof *b->f);
    }
    /* unfold: CR and LF go, each run of blanks becomes one space; trim both ends */
    strbuf sb;
    strbuf_init(&sb);
    bool blank = false;
    for (size_t i = 0; i < vlen && sb.len < max_field; i++) {
        char c = value[i];
        if (c == '\r' || c == '\n' || c == ' ' || c == '\t') {
            blank = true;
            continue;
        }
        if (blank && sb.len > 0) strbuf_append(&sb, " ", 1);
        blank = false;
        if (sb.len < max_field) strbuf_append(&sb, &c, 1);
    }
    b->f[b->n].name = util_strdup(name);
    b->f[b->n].value = strbuf_steal(&sb);
    b->n++;
}

void fbparse_block_free(fbparse_block *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->f[i].name);
        free(b->f[i].value);
    }
    free(b->f);
    memset(b, 0, sizeof *b);
}

const char *fbparse_block_get(const fbparse_block *b, const char *name)
{
    for (size_t i = 0; i < b->n; i++)
        if (strcasecmp(b->f[i].name, name) == 0) return b->f[i].value;
    return NULL;
}

bool fbparse_contains_ci(const char *hay, const char *needle)
{
    return hay && needle && strcasestr(hay, needle) != NULL;
}

/* The end of the line starting at p (the '\n' or end), and the start of the next. */
static const char *fbparse_eol(const char *p, const char *end, const char **next)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *e = nl ? nl : end;
    *next = nl ? nl + 1 : end;
    if (e > p && e[-1] == '\r') e--;
    return e;
}

size_t fbparse_blocks(const char *text, size_t len, size_t max_field, size_t max_blocks,
                      fbparse_block **out, bool *over)
{
    *out = NULL;
    *over = false;
    size_t n = 0, cap = 0;
    const char *p = text, *end = text + len;
    fbparse_block *cur = NULL;
    while (p < end) {
        const char *next;
        const char *e = fbparse_eol(p, end, &next);
        if (e == p) {                      /* blank line: the current block ends */
            cur = NULL;
            p = next;
            continue;
        }
        if (*p == ' ' || *p == '\t') {    /* stray continuation (handled below) or blanks */
            bool all_blank = true;
            for (const char *c = p; c < e; c++) all_blank &= (*c == ' ' || *c == '\t');
            if (all_blank) cur = NULL;    /* a line of blanks separates blocks too */
            p = next;
            continue;
        }
        const char *colon = memchr(p, ':', (size_t)(e - p));
        if (!colon) {
            p = next;
            continue;
        }
        if (!cur) {
            if (n == max_blocks) {
                *over = true;
                break;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 8;
                *out = util_realloc(*out, cap * sizeof **out);
            }
            cur = &(*out)[n++];
            memset(cur, 0, sizeof *cur);
        }
        const char *ne = colon;
        while (ne > p && (ne[-1] == ' ' || ne[-1] == '\t')) ne--;
        char *name = util_strndup(p, (size_t)(ne - p));
        /* the value runs over the continuation lines (those starting with a blank) */
        const char *vs = colon + 1, *ve = e;
        p = next;
        while (p < end && (*p == ' ' || *p == '\t')) {
            const char *e2 = fbparse_eol(p, end, &next);
            bool all_blank = true;
            for (const char *c = p; c < e2; c++) all_blank &= (*c == ' ' || *c == '\t');
            if (all_blank) break;
            ve = e2;
            p = next;
        }
        fbparse_block_add(cur, name, vs, (size_t)(ve - vs), max_field);
        free(name);
    }
    return n;
}

char *fbparse_address(const char *v)
{
    const char *semi = strchr(v, ';');
    const char *s = semi ? semi + 1 : v;
    while (*s == ' ' || *s == '\t') s++;
    if (*s == '<') s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '>')) n--;
    char *a = util_strndup(s, n);
    char *at = strrchr(a, '@');
    if (at) util_lowercase(at + 1);
    return a;
}

bool fbparse_find_status(const char *text, char buf[16])
{
    if (!text) return false;
    for (const char *p = text; *p; p++) {
        if (*p != '2' && *p != '4' && *p != '5') continue;
        if (p > text && (isdigit((unsigned char)p[-1]) || p[-1] == '.')) continue;
        if (p[1] != '.') continue;
        const char *q = p + 2;
        size_t d1 = 0, d2 = 0;
        while (isdigit((unsigned char)*q) && d1 < 4) q++, d1++;
        if (d1 == 0 || d1 > 3 || *q != '.') continue;
        q++;
        while (isdigit((unsigned char)*q) && d2 < 4) q++, d2++;
        if (d2 == 0 || d2 > 3 || *q == '.' || isdigit((unsigned char)*q)) continue;
        size_t n = (size_t)(q - p);
        memcpy(buf, p, n);
        buf[n] = '\0';
        return true;
    }
    return false;
}

void fbparse_add_rcpt(fbparse_report *out, const char *address, const char *action,
                      const char *status, const char *diag, const char *remote_mta)
{
    out->rcpts = util_realloc(out->rcpts, (out->nrcpts + 1) * sizeof *out->rcpts);
    fbparse_rcpt *r = &out->rcpts[out->nrcpts++];
    memset(r, 0, sizeof *r);
    r->address = util_strdup(address);
    r->action = util_strdup(action);
    util_lowercase(r->action);
    r->status = util_strdup(status);
    r->diagnostic = util_strdup(diag);
    r->remote_mta = util_strdup(remote_mta);
    if (strcmp(r->action, "failed") == 0)
        fbparse_classify(r->status, r->diagnostic, &r->bounce_type, &r->bounce_subtype);
}

/* "5.1.1 (user unknown)" -> "5.1.1" when the value starts with a status code. */
static bool fbparse_status_field(const char *v, char buf[16])
{
    if (!v) return false;
    while (*v == ' ') v++;
    return fbparse_find_status(v, buf) && strncmp(v, buf, strlen(buf)) == 0;
}

static void fbparse_blocks_free(fbparse_block *b, size_t n)
{
    for (size_t i = 0; i < n; i++) fbparse_block_free(&b[i]);
    free(b);
}

char *fbparse_dsn_fields(const char *text, size_t len, const fbparse_limits *l,
                         fbparse_report *out)
{
    fbparse_block *b;
    bool over;
    size_t n = fbparse_blocks(text, len, l->max_field, (size_t)l->max_recipients + 1, &b, &over);
    if (over) {
        fbparse_blocks_free(b, n);
        return util_asprintf("delivery-status report has more than %d recipient blocks "
                             "(the limit)", l->max_recipients);
    }
    if (n == 0) {
        fbparse_blocks_free(b, n);
        return util_strdup("delivery-status report is empty");
    }
    /* the per-message block; a report whose first block is already a recipient's (no
     * Reporting-MTA, a Final-Recipient) is read leniently as recipients only */
    size_t first = 1;
    if (!fbparse_block_get(&b[0], "Reporting-MTA") &&
        (fbparse_block_get(&b[0], "Final-Recipient") || fbparse_block_get(&b[0], "Action")))
        first = 0;
    else {
        out->reporting_mta = util_strdup(fbparse_block_get(&b[0], "Reporting-MTA"));
        out->arrival_date = util_strdup(fbparse_block_get(&b[0], "Arrival-Date"));
    }
    for (size_t i = first; i < n; i++) {
        const char *fr = fbparse_block_get(&b[i], "Final-Recipient");
        if (!fr || !*fr) fr = fbparse_block_get(&b[i], "Original-Recipient");
        if (!fr || !*fr) continue;
        char *addr = fbparse_address(fr);
        if (!*addr) {
            free(addr);
            continue;
        }
        const char *action = fbparse_block_get(&b[i], "Action");
        char abuf[16] = "failed";
        if (action && *action) {
            size_t k = 0;     /* the action's first word ("failed (bad)" -> "failed") */
            while (action[k] && action[k] != ' ' && action[k] != '(' && k < sizeof abuf - 1) {
                abuf[k] = action[k];
                k++;
            }
            abuf[k] = '\0';
        }
        char st[16];
        bool has_st = fbparse_status_field(fbparse_block_get(&b[i], "Status"), st);
        fbparse_add_rcpt(out, addr, abuf, has_st ? st : NULL,
                         fbparse_block_get(&b[i], "Diagnostic-Code"),
                         fbparse_block_get(&b[i], "Remote-MTA"));
        free(addr);
    }
    fbparse_blocks_free(b, n);
    if (out->nrcpts == 0) return util_strdup("delivery-status report has no recipient block");
    return NULL;
}

/* "<a@b>" -> "a@b"; "<>" -> "". */
static char *fbparse_unbracket(const char *v)
{
    while (*v == ' ') v++;
    size_t n = strlen(v);
    if (n >= 2 && v[0] == '<' && v[n - 1] == '>') return util_strndup(v + 1, n - 2);
    return util_strdup(v);
}

char *fbparse_arf_fields(const char *text, size_t len, const fbparse_limits *l,
                         fbparse_report *out)
{
    fbparse_block *b;
    bool over;
    /* RFC 5965 has one block; RFC 6591 reports too. Later blocks are ignored. */
    size_t n = fbparse_blocks(text, len, l->max_field, 1, &b, &over);
    if (n == 0) {
        fbparse_blocks_free(b, n);
        return util_strdup("feedback report is empty");
    }
    const fbparse_block *f = &b[0];
    const char *ft = fbparse_block_get(f, "Feedback-Type");
    if (!ft || !*ft) {
        fbparse_blocks_free(b, n);
        return util_strdup("feedback report without Feedback-Type");
    }
    static const char *const known[] = {"abuse", "auth-failure", "fraud", "not-spam", "other",
                                        "virus"};
    out->feedback_type = util_strdup("other");
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (strcasecmp(ft, known[i]) == 0) {
            free(out->feedback_type);
            out->feedback_type = util_strdup(known[i]);
        }
    }
    out->user_agent = util_strdup(fbparse_block_get(f, "User-Agent"));
    const char *ad = fbparse_block_get(f, "Arrival-Date");
    if (!ad) ad = fbparse_block_get(f, "Received-Date");
    out->arf_arrival_date = util_strdup(ad);
    const char *mf = fbparse_block_get(f, "Original-Mail-From");
    if (mf) out->original_mail_from = fbparse_unbracket(mf);
    out->source_ip = util_strdup(fbparse_block_get(f, "Source-IP"));
    for (size_t i = 0; i < f->n; i++) {
        if (strcasecmp(f->f[i].name, "Original-Rcpt-To") != 0) continue;
        if ((int)out->noriginal_rcpt_to >= l->max_recipients) break;
        out->original_rcpt_to = util_realloc(
            out->original_rcpt_to, (out->noriginal_rcpt_to + 1) * sizeof *out->original_rcpt_to);
        out->original_rcpt_to[out->noriginal_rcpt_to++] = fbparse_unbracket(f->f[i].value);
    }
    fbparse_blocks_free(b, n);
    return NULL;
}

void fbparse_orig_headers(const fbparse_block *h, fbparse_report *out)
{
    const char *v;
    if (!out->orig_message_id && (v = fbparse_block_get(h, "Message-ID")))
        out->orig_message_id = fbparse_unbracket(v);
    if (!out->orig_return_path && (v = fbparse_block_get(h, "Return-Path")))
        out->orig_return_path = fbparse_unbracket(v);
    if (!out->orig_kiln_message_id) {
        if (!(v = fbparse_block_get(h, "X-SES-Message-ID")))
            v = fbparse_block_get(h, "X-Kiln-Message-ID");
        if (v) out->orig_kiln_message_id = fbparse_unbracket(v);
    }
    if (!out->orig_feedback_id && (v = fbparse_block_get(h, "Feedback-ID")))
        out->orig_feedback_id = util_strdup(v);
    if (!out->orig_from && (v = fbparse_block_get(h, "From"))) out->orig_from = util_strdup(v);
    if (!out->orig_to && (v = fbparse_block_get(h, "To"))) out->orig_to = util_strdup(v);
}

bool fbparse_orig_from_text(const char *text, size_t len, size_t max_field,
                            fbparse_report *out)
{
    static const char *const markers[] = {
        "------ This is a copy of the message",     /* Exim */
        "--- Below this line is a copy of the message", /* qmail, Yahoo */
        "----- Original message -----",
        "------ Original message ------",
    };
    const char *at = NULL;
    /* the text is NUL-terminated by the caller; markers are searched in the whole body */
    for (size_t i = 0; i < sizeof markers / sizeof markers[0] && !at; i++)
        at = strcasestr(text, markers[i]);
    if (!at) return false;
    const char *nl = memchr(at, '\n', len - (size_t)(at - text));
    if (!nl) return false;
    const char *rest = nl + 1;
    fbparse_block *b;
    bool over;
    size_t n = fbparse_blocks(rest, len - (size_t)(rest - text), max_field, 1, &b, &over);
    bool found = n > 0;
    if (found) fbparse_orig_headers(&b[0], out);
    fbparse_blocks_free(b, n);
    return found;
}
