/* unsub.c — List-Unsubscribe, List-Unsubscribe-Post and Feedback-ID for a marked
 * configuration set (see unsub.h for the fields and the promises).
 *
 * The URL template was checked by base/config_unsub.c (https://, RFC 3986 characters, known
 * variables in the path or query only): here the variables are filled in, each value
 * percent-encoded byte by byte outside the unreserved set, so that nothing a recipient
 * address holds (quotes, '+', '%', '>', UTF-8) can leave the URL or the angle brackets.
 * Written by hand: a template of three variables and a fold at blanks are a few lines, and
 * no Debian library fills URL templates with per-variable encoding.
 *
 * Insertion reuses mta/message.c's header removal (message_strip_header), so the header
 * section and its fields are found by the same rules as everywhere else in kiln. */
#include "mta/unsub.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/message.h"

#define UNSUB_FOLD_COLUMNS 78
#define UNSUB_ONE_CLICK "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"

bool unsub_marked(const config_set *set)
{
    return set && (set->unsub_url || set->feedback_id);
}

static bool unsub_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

/* S percent-encoded (RFC 3986 2.1: upper-case hex) onto sb. */
static void unsub_encode(strbuf *sb, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *q = (const unsigned char *)s; *q; q++) {
        if (unsub_unreserved(*q)) {
            strbuf_append(sb, q, 1);
        } else {
            char e[3] = {'%', hex[*q >> 4], hex[*q & 15]};
            strbuf_append(sb, e, 3);
        }
    }
}

/* The set's URL with its variables filled in onto sb: 0, or -1 and *err. */
static int unsub_fill_url(strbuf *sb, const config_set *set, const char *msg_id,
                          const char *rcpt, char **err)
{
    size_t start = sb->len;
    for (const char *q = set->unsub_url; *q; q++) {
        size_t n = 0;
        switch (config_unsub_var_at(q, &n)) {
        case CONFIG_UNSUB_RECIPIENT:
            if (!rcpt) {
                *err = util_asprintf("configuration set %s: the List-Unsubscribe URL names "
                                     "{recipient} and no recipient was given",
                                     set->name);
                return -1;
            }
            unsub_encode(sb, rcpt);
            break;
        case CONFIG_UNSUB_MESSAGE_ID:
            unsub_encode(sb, msg_id);
            break;
        case CONFIG_UNSUB_SET:
            unsub_encode(sb, set->name);
            break;
        default:
            strbuf_append(sb, q, 1);
            continue;
        }
        q += n - 1;
        if (sb->len - start > UNSUB_URL_MAX) break;
    }
    if (sb->len - start > UNSUB_URL_MAX) {
        *err = util_asprintf("configuration set %s: the List-Unsubscribe URL for %s would be "
                             "longer than %d bytes",
                             set->name, rcpt ? rcpt : "this message", UNSUB_URL_MAX);
        return -1;
    }
    return 0;
}

/* "NAME: VALUE" + CRLF onto sb, folded before a word that would pass column 78 (never
 * before the first word, nor before an empty one: no line of blanks only). VALUE holds no
 * line breaks. */
static void unsub_put_field(strbuf *sb, const char *name, const char *value)
{
    strbuf_puts(sb, name);
    strbuf_puts(sb, ":");
    size_t col = strlen(name) + 1;
    bool first = true;
    const char *w = value;
    for (;;) {
        size_t n = strcspn(w, " ");
        if (!first && n > 0 && col + 1 + n > UNSUB_FOLD_COLUMNS) {
            strbuf_puts(sb, "\r\n");
            col = 0;
        }
        strbuf_puts(sb, " ");
        strbuf_append(sb, w, n);
        col += 1 + n;
        first = false;
        if (!w[n]) break;
        w += n + 1;
    }
    strbuf_puts(sb, "\r\n");
}

char *unsub_fields(const config_set *set, const char *msg_id, const char *rcpt, char **err)
{
    if (!msg_id) util_fatal("unsub_fields: no message ID (set %s)", set ? set->name : "-");
    strbuf sb;
    strbuf_init(&sb);
    if (set && set->unsub_url) {
        strbuf v;
        strbuf_init(&v);
        strbuf_puts(&v, "<");
        if (unsub_fill_url(&v, set, msg_id, rcpt, err) < 0) {
            strbuf_free(&v);
            strbuf_free(&sb);
            return NULL;
        }
        strbuf_puts(&v, ">");
        if (set->unsub_mailto)
            strbuf_printf(&v, ", <mailto:%s?subject=unsubscribe>", set->unsub_mailto);
        unsub_put_field(&sb, "List-Unsubscribe", v.buf);
        strbuf_puts(&sb, UNSUB_ONE_CLICK);
        strbuf_free(&v);
    }
    if (set && set->feedback_id) unsub_put_field(&sb, "Feedback-ID", set->feedback_id);
    return strbuf_steal(&sb);
}

/* The length of the field name starting line [p, p + n) ("Name:" or the obsolete
 * "Name :"), or 0 when the line starts no field: the rule of mta/message.c. */
static size_t unsub_field_name(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && p[i] > ' ' && p[i] < 127 && p[i] != ':') i++;
    size_t name_len = i;
    while (i < n && (p[i] == ' ' || p[i] == '\t')) i++;
    return name_len && i < n && p[i] == ':' ? name_len : 0;
}

/* Length of the first line of [p, p + n) without its CRLF or LF. */
static size_t unsub_line_len(const char *p, size_t n)
{
    const char *lf = memchr(p, '\n', n);
    size_t l = lf ? (size_t)(lf - p) : n;
    return l && p[l - 1] == '\r' ? l - 1 : l;
}

char *unsub_insert(const char *msg, size_t len, const char *fields, size_t *out_len)
{
    size_t flen = strlen(fields);
    if (flen && fields[flen - 1] != '\n')
        util_fatal("unsub_insert: header fields without a line end: %.60s", fields);
    /* The message without the fields about to be inserted. */
    char *rest = util_malloc(len + 1);
    if (len) memcpy(rest, msg, len);
    size_t rlen = len;
    for (size_t pos = 0; pos < flen;) {
        size_t l = unsub_line_len(fields + pos, flen - pos);
        size_t name = unsub_field_name(fields + pos, l);
        if (name) {
            char *nm = util_strndup(fields + pos, name);
            rlen = message_strip_header(rest, rlen, nm);
            free(nm);
        }
        const char *lf = memchr(fields + pos, '\n', flen - pos);
        pos = lf ? (size_t)(lf - fields) + 1 : flen;
    }
    /* A first line that is neither a field nor empty is body: keep it body. */
    size_t first = unsub_line_len(rest, rlen);
    bool sep = flen && rlen && first > 0 && !unsub_field_name(rest, first);
    size_t n = flen + (sep ? 2 : 0) + rlen;
    char *out = util_malloc(n + 1);
    memcpy(out, fields, flen);
    if (sep) memcpy(out + flen, "\r\n", 2);
    if (rlen) memcpy(out + flen + (sep ? 2 : 0), rest, rlen);
    out[n] = '\0';
    free(rest);
    *out_len = n;
    return out;
}

int unsub_apply(const config_set *set, const char *msg_id, const char *rcpt, const char *msg,
                size_t len, char **out, size_t *out_len, char **err)
{
    *out = NULL;
    *out_len = 0;
    if (!unsub_marked(set)) return 0;
    char *fields = unsub_fields(set, msg_id, rcpt, err);
    if (!fields) return -1;
    *out = unsub_insert(msg, len, fields, out_len);
    free(fields);
    return 1;
}
