/* fbparse_shapes.c — feedback that does not follow RFC 3464, recognised by its shape:
 *  - Exim's bounce: an X-Failed-Recipients header; per address, the indented lines under
 *    it in the body ("SMTP error from remote mail server after RCPT TO:<x>: 550 5.1.1 ...").
 *  - qmail-send's bounce ("Hi. This is the qmail-send program at ...") and Yahoo's, which
 *    has the same body ("Sorry, we were unable to deliver your message to the following
 *    address."): "<addr>:" lines, each followed by its error text up to a blank line.
 *  - automatic replies (out-of-office, vacation, challenge-response), by their headers
 *    (Auto-Submitted, X-Autoreply, X-Autorespond, Precedence: auto_reply, Microsoft's
 *    X-MS-Exchange-Inbox-Rules-Loop, challenge-response systems' own headers) and subjects,
 *    so that they are never taken for bounces.
 * Hand-written heuristics: these shapes have no grammar a library could parse. Promises:
 * bounded (at most max_recipients recipients, values cut at max_field), the body is read
 * only within len (the caller NUL-terminates it). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"
#include "mta/fbparse_int.h"

/* A line [s, e) trimmed of blanks and CR. */
static void fbparse_trim(const char **s, const char **e)
{
    while (*s < *e && (**s == ' ' || **s == '\t')) (*s)++;
    while (*e > *s && ((*e)[-1] == ' ' || (*e)[-1] == '\t' || (*e)[-1] == '\r')) (*e)--;
}

/* The classification of a non-standard recipient with no code: the body's own words. */
static void fbparse_fix_undetermined(fbparse_rcpt *r, const char *body)
{
    if (!r->bounce_type || strcmp(r->bounce_type, "Undetermined") != 0) return;
    if (fbparse_contains_ci(body, "permanent error") || fbparse_contains_ci(body, "given up")) {
        r->bounce_type = "Permanent";
        r->bounce_subtype = "General";
    } else if (fbparse_contains_ci(body, "temporary") ||
               fbparse_contains_ci(body, "will keep trying")) {
        r->bounce_type = "Transient";
        r->bounce_subtype = "General";
    }
}

static void fbparse_add_failed(fbparse_report *out, const char *addr, const char *diag,
                               const char *body)
{
    char st[16];
    char *a = fbparse_address(addr);
    fbparse_add_rcpt(out, a, "failed", fbparse_find_status(diag, st) ? st : NULL, diag, NULL);
    fbparse_fix_undetermined(&out->rcpts[out->nrcpts - 1], body);
    free(a);
}

/* Exim: the lines indented under the address, from "SMTP error" on when there is one. */
static char *fbparse_exim_diag(const char *body, size_t len, const char *addr, size_t max)
{
    const char *end = body + len;
    for (const char *p = body; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *next = nl ? nl + 1 : end, *s = p, *e = nl ? nl : end;
        fbparse_trim(&s, &e);
        p = next;
        if (!(s > body && (size_t)(e - s) == strlen(addr) && strncasecmp(s, addr, e - s) == 0 &&
              (s[-1] == ' ' || s[-1] == '\t')))
            continue;
        strbuf sb;
        strbuf_init(&sb);
        bool smtp_seen = false;
        while (p < end && (*p == ' ' || *p == '\t') && sb.len < max) {
            nl = memchr(p, '\n', (size_t)(end - p));
            next = nl ? nl + 1 : end;
            s = p, e = nl ? nl : end;
            fbparse_trim(&s, &e);
            p = next;
            if (s == e) break;
            if (!smtp_seen && strncasecmp(s, "SMTP error", 10) == 0) {
                strbuf_reset(&sb);
                smtp_seen = true;
            }
            if (sb.len) strbuf_append(&sb, " ", 1);
            strbuf_append(&sb, s, (size_t)(e - s));
        }
        if (sb.len > max) sb.buf[sb.len = max] = '\0';
        if (sb.len) return strbuf_steal(&sb);
        strbuf_free(&sb);
        return NULL;
    }
    return NULL;
}

static bool fbparse_exim(const fbparse_block *top, const char *body, size_t len,
                         const fbparse_limits *l, fbparse_report *out, char **malformed)
{
    const char *xf = fbparse_block_get(top, "X-Failed-Recipients");
    if (!xf || !*xf) return false;
    char *list = util_strdup(xf), *save = NULL;
    for (char *t = strtok_r(list, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        if ((int)out->nrcpts >= l->max_recipients) {
            *malformed = util_asprintf("Exim bounce lists more than %d recipients (the limit)",
                                       l->max_recipients);
            break;
        }
        char *diag = body ? fbparse_exim_diag(body, len, t, l->max_field) : NULL;
        fbparse_add_failed(out, t, diag, body);
        free(diag);
    }
    free(list);
    if (out->nrcpts == 0 && !*malformed) return false;
    out->shape = util_strdup("exim");
    out->why = util_strdup("Exim bounce (X-Failed-Recipients)");
    return true;
}

/* qmail and Yahoo: "<addr>:" on a line of its own, then the error text. */
static void fbparse_qmail_rcpts(const char *body, size_t len, const fbparse_limits *l,
                                fbparse_report *out, char **malformed)
{
    const char *end = body + len;
    const char *stop = strstr(body, "--- Below this line is a copy of the message");
    if (stop) end = stop;
    for (const char *p = body; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *next = nl ? nl + 1 : end, *s = p, *e = nl ? nl : end;
        fbparse_trim(&s, &e);
        p = next;
        if (e - s < 4 || s[0] != '<' || e[-1] != ':' || e[-2] != '>') continue;
        if ((int)out->nrcpts >= l->max_recipients) {
            *malformed = util_asprintf("bounce lists more than %d recipients (the limit)",
                                       l->max_recipients);
            return;
        }
        char *addr = util_strndup(s, (size_t)(e - s - 1));
        strbuf sb;
        strbuf_init(&sb);
        while (p < end && sb.len < l->max_field) {
            nl = memchr(p, '\n', (size_t)(end - p));
            next = nl ? nl + 1 : end;
            s = p, e = nl ? nl : end;
            fbparse_trim(&s, &e);
            if (s == e || (s[0] == '<' && e - s > 2 && e[-1] == ':')) break;
            p = next;
            if (sb.len) strbuf_append(&sb, " ", 1);
            strbuf_append(&sb, s, (size_t)(e - s));
        }
        if (sb.len > l->max_field) sb.buf[sb.len = l->max_field] = '\0';
        fbparse_add_failed(out, addr, sb.len ? sb.buf : NULL, body);
        strbuf_free(&sb);
        free(addr);
    }
}

static bool fbparse_from_daemon(const fbparse_block *top)
{
    const char *from = fbparse_block_get(top, "From");
    return fbparse_contains_ci(from, "mailer-daemon") || fbparse_contains_ci(from, "postmaster");
}

bool fbparse_nonstandard(const fbparse_block *top, const char *body, size_t len,
                         const fbparse_limits *l, fbparse_report *out, char **malformed)
{
    *malformed = NULL;
    if (fbparse_exim(top, body, len, l, out, malformed)) return true;
    if (!body) return false;
    const char *shape = NULL, *why = NULL;
    if (strstr(body, "This is the qmail-send program")) {
        shape = "qmail";
        why = "qmail bounce (qmail-send program)";
    } else if (strstr(body, "Sorry, we were unable to deliver your message to the following "
                            "address") && fbparse_from_daemon(top)) {
        shape = "yahoo";
        why = "Yahoo bounce (unable to deliver ... to the following address)";
    }
    if (!shape) return false;
    fbparse_qmail_rcpts(body, len, l, out, malformed);
    if (out->nrcpts == 0 && !*malformed) {
        *malformed = util_asprintf("%s bounce without a recipient", shape);
    }
    out->shape = util_strdup(shape);
    out->why = util_strdup(why);
    return true;
}

static char *fbparse_autoreply_kind(const char *what, const char *name, const char *value)
{
    return value ? util_asprintf("%s (%s: %s)", what, name, value)
                 : util_asprintf("%s (%s)", what, name);
}

char *fbparse_autoreply(const fbparse_block *top, const char *body, size_t len)
{
    (void)len;
    const char *subject = fbparse_block_get(top, "Subject");
    /* challenge-response systems first: they set Auto-Submitted too */
    static const char *const cr_headers[] = {"X-Boxtrapper", "X-Spamarrest-noauth",
                                             "X-Spamarrest-Challenge", "X-Challenge",
                                             "X-Bluebottle-Request", "X-ChoiceMail-Registration",
                                             NULL};
    for (size_t i = 0; cr_headers[i]; i++)
        if (fbparse_block_get(top, cr_headers[i]))
            return fbparse_autoreply_kind("challenge-response", cr_headers[i], NULL);
    for (size_t i = 0; i < top->n; i++)
        if (strncasecmp(top->f[i].name, "X-Spamarrest", 12) == 0)
            return fbparse_autoreply_kind("challenge-response", top->f[i].name, NULL);
    static const char *const cr_words[] = {"confirm you are human", "verify you are human",
                                           "confirm that you are a human",
                                           "verify that you are a human", "not a robot",
                                           "confirm that you are a real person",
                                           "verify your email before", NULL};
    for (size_t i = 0; cr_words[i]; i++)
        if (fbparse_contains_ci(subject, cr_words[i]) || fbparse_contains_ci(body, cr_words[i]))
            return util_asprintf("challenge-response (asks to %s)", cr_words[i]);

    const char *v = fbparse_block_get(top, "Auto-Submitted");
    if (v && *v && strncasecmp(v, "no", 2) != 0)
        return fbparse_autoreply_kind("automatic reply", "Auto-Submitted", v);
    static const char *const ar_headers[] = {"X-Autoreply", "X-Autorespond", "X-Autoresponse",
                                             "X-MS-Exchange-Inbox-Rules-Loop", NULL};
    for (size_t i = 0; ar_headers[i]; i++)
        if ((v = fbparse_block_get(top, ar_headers[i])))
            return fbparse_autoreply_kind("automatic reply", ar_headers[i], v);
    v = fbparse_block_get(top, "Precedence");
    if (v && strcasecmp(v, "auto_reply") == 0)
        return fbparse_autoreply_kind("automatic reply", "Precedence", v);
    static const char *const subjects[] = {"Automatic reply", "Auto reply", "Autoreply",
                                           "Auto-reply", "Out of Office", "Out-of-Office",
                                           "Vacation", "Abwesenheitsnotiz",
                                           "Réponse automatique", NULL};
    for (size_t i = 0; subjects[i]; i++)
        if (fbparse_contains_ci(subject, subjects[i]))
            return fbparse_autoreply_kind("automatic reply", "Subject", subject);
    return NULL;
}
