/* message.c — RFC 5322 header-section parsing of a received message, on buffers: unfolded
 * header fields, the addresses an address-list field names, and removal of fields.
 *
 * Hand-written: the only C libraries that parse RFC 5322 address lists (GMime, libetpan)
 * bring a whole MIME stack (and GLib) for what is a small tokenizer here, and kiln only
 * needs the addr-specs, not display names or MIME decoding.
 *
 * Lines end in CRLF; a bare LF is accepted as a line end too, since some submitters send it
 * and we would rather read their headers than treat them as body. A header section ends at
 * the first empty line, or at the first line that is neither a field ("name:" with a name of
 * printable non-space characters, optionally followed by blanks before the colon — the
 * obsolete form) nor a continuation line (starting with a space or tab) of a field. */
#include "mta/message.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"

/* ---- lines and field names ---- */

/* The line starting at pos: *content_end is where its text ends (before CRLF or LF),
 * the return value where the next line starts. */
static size_t message_line_next(const char *data, size_t len, size_t pos, size_t *content_end)
{
    const char *lf = memchr(data + pos, '\n', len - pos);
    if (!lf) {
        *content_end = len;
        return len;
    }
    size_t end = (size_t)(lf - data);
    *content_end = (end > pos && data[end - 1] == '\r') ? end - 1 : end;
    return end + 1;
}

/* If the line [p, p+n) starts a field, returns the length of its name and sets *colon to
 * the colon's offset; otherwise returns 0. */
static size_t message_field_name(const char *p, size_t n, size_t *colon)
{
    size_t i = 0;
    while (i < n && p[i] > ' ' && p[i] < 127 && p[i] != ':') i++;
    size_t name_len = i;
    if (name_len == 0) return 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t')) i++;
    if (i >= n || p[i] != ':') return 0;
    *colon = i;
    return name_len;
}

static bool message_is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

/* ---- header parsing ---- */

int message_parse_headers(const char *data, size_t len, msg_headers *out)
{
    out->h = NULL;
    out->n = 0;
    out->header_len = len;
    out->ended_by_body_line = false;
    out->over_limit = 0;
    out->nreceived = out->nfrom = 0;
    size_t cap = 0, pos = 0;
    strbuf value;
    strbuf_init(&value);
    bool open = false;                    /* a field is being collected in `value` */

    while (pos < len) {
        size_t end, next = message_line_next(data, len, pos, &end);
        const char *line = data + pos;
        size_t n = end - pos;
        if (next > MESSAGE_MAX_HEADER_BYTES) {
            /* This line would take the section over the limit (whatever it is: a section
             * that has not ended by now is too large). */
            if (open) {
                out->h[out->n - 1].value = strbuf_steal(&value);
                open = false;
            }
            out->over_limit |= MSG_HDR_TOO_LARGE;
            out->header_len = pos;
            break;
        }
        if (n > 0 && message_is_wsp(line[0]) && open) {
            /* Continuation: unfolding removes only the line break, keeping the blank. */
            strbuf_append(&value, line, n);
            pos = next;
            continue;
        }
        size_t colon = 0, name_len = message_field_name(line, n, &colon);
        if (open) {
            out->h[out->n - 1].value = strbuf_steal(&value);
            open = false;
        }
        if (name_len == 0) {
            /* The empty line belongs to the header section; any other line is body. */
            out->header_len = n == 0 ? next : pos;
            out->ended_by_body_line = n != 0;
            break;
        }
        if (out->n == MESSAGE_MAX_FIELDS) {
            out->over_limit |= MSG_HDR_TOO_MANY_FIELDS;
            out->header_len = pos;
            break;
        }
        if (out->n == cap) {
            cap = cap ? 2 * cap : 16;
            out->h = util_realloc(out->h, cap * sizeof *out->h);
        }
        out->h[out->n].name = util_strndup(line, name_len);
        out->h[out->n].value = NULL;
        if (strcasecmp(out->h[out->n].name, "Received") == 0) out->nreceived++;
        if (strcasecmp(out->h[out->n].name, "From") == 0) out->nfrom++;
        out->n++;
        size_t v = colon + 1;
        while (v < n && message_is_wsp(line[v])) v++;
        strbuf_append(&value, line + v, n - v);
        open = true;
        pos = next;
    }
    if (open) out->h[out->n - 1].value = strbuf_steal(&value);
    /* A continuation line right after the last field's value may have left leading blanks
     * in a value that was empty on its first line: trim them as promised. */
    for (size_t i = 0; i < out->n; i++) {
        char *v = out->h[i].value;
        size_t skip = 0;
        while (message_is_wsp(v[skip])) skip++;
        if (skip) memmove(v, v + skip, strlen(v + skip) + 1);
    }
    strbuf_free(&value);
    return 0;
}

void message_headers_free(msg_headers *hs)
{
    for (size_t i = 0; i < hs->n; i++) {
        free(hs->h[i].name);
        free(hs->h[i].value);
    }
    free(hs->h);
    hs->h = NULL;
    hs->n = 0;
    hs->header_len = 0;
}

const char *message_header_get(const msg_headers *hs, const char *name)
{
    for (size_t i = 0; i < hs->n; i++)
        if (strcasecmp(hs->h[i].name, name) == 0) return hs->h[i].value;
    return NULL;
}

/* ---- header removal ---- */

size_t message_strip_header(char *data, size_t len, const char *name)
{
    size_t pos = 0, w = 0, name_want = strlen(name);
    bool open = false, dropping = false;

    while (pos < len) {
        size_t end, next = message_line_next(data, len, pos, &end);
        const char *line = data + pos;
        size_t n = end - pos;
        if (n > 0 && message_is_wsp(line[0]) && open) {
            if (!dropping) {
                memmove(data + w, line, next - pos);
                w += next - pos;
            }
            pos = next;
            continue;
        }
        size_t colon = 0, name_len = message_field_name(line, n, &colon);
        if (name_len == 0) break;         /* end of the header section: the rest is kept */
        open = true;
        dropping = name_len == name_want && strncasecmp(line, name, name_len) == 0;
        if (!dropping) {
            memmove(data + w, line, next - pos);
            w += next - pos;
        }
        pos = next;
    }
    if (w != pos) memmove(data + w, data + pos, len - pos);
    return w + (len - pos);
}

char *message_remove_header(const char *data, size_t len, const char *name, size_t *out_len)
{
    char *out = util_malloc(len + 1);
    if (len) memcpy(out, data, len);
    *out_len = message_strip_header(out, len, name);
    out[*out_len] = '\0';
    return out;
}

/* ---- address lists ---- */

typedef enum {
    TOK_WORD,       /* atom (dots included), quoted-string or domain-literal, as written */
    TOK_SPECIAL,    /* one of < > , : ; @ */
    TOK_GAP,        /* white space or a comment between tokens */
} tok_kind;

typedef struct {
    tok_kind kind;
    const char *p;
    size_t n;
} token;

static bool message_is_special(char c)
{
    return c == '<' || c == '>' || c == ',' || c == ':' || c == ';' || c == '@';
}

static bool message_is_atom_char(char c)
{
    return !message_is_special(c) && c != '(' && c != ')' && c != '"' && c != '[' && c != ']' &&
           c != ' ' && c != '\t' && c != '\r' && c != '\n';
}

/* Next token of s from *pos; false at the end. A quoted string, comment or domain literal
 * that is never closed runs to the end of the value (one linear pass, whatever the input). */
static bool message_next_token(const char *s, size_t *pos, token *t)
{
    size_t i = *pos;
    if (!s[i]) return false;
    t->p = s + i;
    char c = s[i];
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '(') {
        t->kind = TOK_GAP;
        int depth = 0;
        while (s[i]) {
            if (depth == 0 && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')) {
                i++;
            } else if (s[i] == '(') {
                depth++;
                i++;
            } else if (depth == 0) {
                break;
            } else if (s[i] == '\\' && s[i + 1]) {
                i += 2;
            } else {
                if (s[i] == ')') depth--;
                i++;
            }
        }
    } else if (c == '"' || c == '[') {
        t->kind = TOK_WORD;
        char close = c == '"' ? '"' : ']';
        i++;
        while (s[i] && s[i] != close) i += (s[i] == '\\' && s[i + 1]) ? 2 : 1;
        if (s[i]) i++;
    } else if (message_is_special(c)) {
        t->kind = TOK_SPECIAL;
        i++;
    } else if (c == ')' || c == ']') {
        t->kind = TOK_GAP;                /* stray closer: ignored like white space */
        i++;
    } else {
        t->kind = TOK_WORD;
        while (s[i] && message_is_atom_char(s[i])) i++;
    }
    t->n = (size_t)(s + i - t->p);
    *pos = i;
    return true;
}

typedef struct {
    char **v;
    size_t n, cap;
} addr_vec;

static void message_addr_push(addr_vec *a, strbuf *sb)
{
    if (sb->len == 0) return;
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 4;
        a->v = util_realloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = strbuf_steal(sb);
}

/* State of the item (one mailbox) being read. */
typedef struct {
    strbuf bare;          /* its words and '@'s outside angle brackets, blanks dropped */
    bool bare_at;         /* bare contains an '@' */
    bool bare_gap;        /* blanks or comments separated two of its words */
    bool bare_pending_gap;
    bool had_angle;       /* an angle-addr was found: bare is a display name */
} item;

static void message_item_reset(item *it)
{
    strbuf_reset(&it->bare);
    it->bare_at = it->bare_gap = it->bare_pending_gap = it->had_angle = false;
}

/* Ends the item: without an angle-addr, its bare text is an address if it has an '@', or
 * if it is a single word (a local-part-only address); a phrase of several words is not. */
static void message_item_finish(item *it, addr_vec *out)
{
    if (!it->had_angle && it->bare.len > 0 && (it->bare_at || !it->bare_gap))
        message_addr_push(out, &it->bare);
    message_item_reset(it);
}

size_t message_parse_addresses(const char *value, char ***out)
{
    addr_vec addrs = {0};
    item it;
    strbuf_init(&it.bare);
    message_item_reset(&it);
    strbuf angle;
    strbuf_init(&angle);
    bool in_group = false;
    size_t pos = 0;
    token t;

    while (message_next_token(value, &pos, &t)) {
        if (t.kind == TOK_GAP) {
            if (it.bare.len > 0) it.bare_pending_gap = true;
            continue;
        }
        if (t.kind == TOK_SPECIAL && t.p[0] == '<') {
            /* angle-addr: everything up to '>', blanks and comments dropped; an obsolete
             * source route ("@a,@b:") before the addr-spec is skipped. */
            strbuf_reset(&angle);
            while (message_next_token(value, &pos, &t)) {
                if (t.kind == TOK_GAP) continue;
                if (t.kind == TOK_SPECIAL && t.p[0] == '>') break;
                if (t.kind == TOK_SPECIAL && t.p[0] == ':') {
                    strbuf_reset(&angle);
                    continue;
                }
                strbuf_append(&angle, t.p, t.n);
            }
            it.had_angle = true;
            message_addr_push(&addrs, &angle);
            continue;
        }
        if (t.kind == TOK_SPECIAL && t.p[0] == ',') {
            message_item_finish(&it, &addrs);
            continue;
        }
        if (t.kind == TOK_SPECIAL && t.p[0] == ':' && !in_group && !it.had_angle) {
            /* "display-name:" opens a group; the name is not an address. */
            message_item_reset(&it);
            in_group = true;
            continue;
        }
        if (t.kind == TOK_SPECIAL && t.p[0] == ';') {
            message_item_finish(&it, &addrs);
            in_group = false;
            continue;
        }
        if (t.kind == TOK_SPECIAL && t.p[0] == '>') continue;   /* stray closer */
        /* A word, '@' or a misplaced ':' inside a group: part of the bare text. */
        if (it.bare_pending_gap && t.p[0] != '@' && it.bare.buf[it.bare.len - 1] != '@')
            it.bare_gap = true;
        it.bare_pending_gap = false;
        if (t.kind == TOK_SPECIAL && t.p[0] == '@') it.bare_at = true;
        strbuf_append(&it.bare, t.p, t.n);
    }
    message_item_finish(&it, &addrs);
    strbuf_free(&it.bare);
    strbuf_free(&angle);
    *out = addrs.v;
    return addrs.n;
}

void message_addresses_free(char **addrs, size_t n)
{
    for (size_t i = 0; i < n; i++) free(addrs[i]);
    free(addrs);
}
