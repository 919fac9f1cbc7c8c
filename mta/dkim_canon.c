/* dkim_canon.c — DKIM relaxed canonicalization and header field selection (see
 * dkim_canon.h). Hand-written: libopendkim (libopendkim-dev) would do this, but its API
 * owns the message: it wants the header fields fed one by one (dkim_header), the body
 * streamed (dkim_body) and its own line-end handling, and it brings a signing handle,
 * library options and its DNS layer that kiln does not use; the canonicalization
 * itself is about 150 lines of RFC 6376 sections 3.4.2, 3.4.4 and 5.4.2. Writing it here
 * lets the signer canonicalize exactly the lines kiln's DATA encoder sends (lone CR and LF
 * included), and lets the unit tests and the fuzz target check it on buffers. */
#include "mta/dkim_canon.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool dkim_canon_wsp(char c) { return c == ' ' || c == '\t'; }

size_t dkim_canon_line_end(const char *s, size_t len, size_t i, size_t *next)
{
    size_t j = i;
    while (j < len && s[j] != '\r' && s[j] != '\n') j++;
    if (j == len) *next = len;
    else if (s[j] == '\r' && j + 1 < len && s[j + 1] == '\n') *next = j + 2;
    else *next = j + 1;
    return j;
}

void dkim_fields_parse(const char *msg, size_t len, dkim_fields *out)
{
    size_t cap = 16;
    out->f = util_calloc(cap, sizeof *out->f);
    out->n = 0;
    out->body_off = len;
    size_t i = 0;
    while (i < len) {
        size_t next, end = dkim_canon_line_end(msg, len, i, &next);
        if (end == i) {                 /* the empty line: the body follows */
            out->body_off = next;
            return;
        }
        if (dkim_canon_wsp(msg[i])) {   /* a continuation line */
            if (out->n > 0) {
                dkim_field *f = &out->f[out->n - 1];
                f->len = (size_t)(msg + end - f->raw);
            }
        } else {
            if (out->n == cap) {
                cap *= 2;
                out->f = util_realloc(out->f, cap * sizeof *out->f);
            }
            dkim_field *f = &out->f[out->n++];
            f->raw = msg + i;
            f->len = end - i;
            const char *colon = memchr(msg + i, ':', end - i);
            size_t nl = colon ? (size_t)(colon - (msg + i)) : 0;
            while (nl > 0 && dkim_canon_wsp(msg[i + nl - 1])) nl--;
            f->name_len = nl;
        }
        i = next;
    }
}

void dkim_fields_free(dkim_fields *fs)
{
    free(fs->f);
    memset(fs, 0, sizeof *fs);
}

bool dkim_field_is(const dkim_field *f, const char *name)
{
    size_t n = strlen(name);
    return f->name_len == n && n > 0 && strncasecmp(f->raw, name, n) == 0;
}

size_t dkim_fields_count(const dkim_fields *fs, const char *name)
{
    size_t c = 0;
    for (size_t i = 0; i < fs->n; i++)
        if (dkim_field_is(&fs->f[i], name)) c++;
    return c;
}

void dkim_fields_select(const dkim_fields *fs, const char *const *names, size_t n,
                        const dkim_field **out)
{
    bool *used = util_calloc(fs->n ? fs->n : 1, sizeof *used);
    for (size_t k = 0; k < n; k++) {
        out[k] = NULL;
        for (size_t i = fs->n; i-- > 0;) {
            if (!used[i] && dkim_field_is(&fs->f[i], names[k])) {
                used[i] = true;
                out[k] = &fs->f[i];
                break;
            }
        }
    }
    free(used);
}

/* s[0..n) with line ends dropped and blank runs made one space, leading and trailing
 * blanks removed, appended to out. */
static void dkim_canon_value(const char *s, size_t n, strbuf *out)
{
    bool space = false, any = false;
    size_t i = 0;
    while (i < n) {
        char c = s[i];
        if (c == '\r' || c == '\n') {
            i++;
            continue;
        }
        if (dkim_canon_wsp(c)) {
            space = true;
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && s[j] != '\r' && s[j] != '\n' && !dkim_canon_wsp(s[j])) j++;
        if (space && any) strbuf_append(out, " ", 1);
        strbuf_append(out, s + i, j - i);
        space = false;
        any = true;
        i = j;
    }
}

void dkim_canon_header(const char *raw, size_t len, bool crlf, strbuf *out)
{
    const char *colon = memchr(raw, ':', len);
    size_t name_end = colon ? (size_t)(colon - raw) : len;
    for (size_t i = 0; i < name_end; i++) {
        char c = raw[i];
        if (dkim_canon_wsp(c) || c == '\r' || c == '\n') continue;
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        strbuf_append(out, &c, 1);
    }
    if (colon) {
        strbuf_append(out, ":", 1);
        dkim_canon_value(colon + 1, len - name_end - 1, out);
    }
    if (crlf) strbuf_append(out, "\r\n", 2);
}

void dkim_canon_body(const char *body, size_t len, dkim_canon_sink sink, void *arg)
{
    size_t empty = 0;    /* empty lines seen and not written yet (dropped at the end) */
    size_t i = 0;
    while (i < len) {
        size_t next, end = dkim_canon_line_end(body, len, i, &next);
        size_t b = end;
        while (b > i && dkim_canon_wsp(body[b - 1])) b--;
        if (b == i) {
            empty++;
            i = next;
            continue;
        }
        for (; empty > 0; empty--) sink(arg, "\r\n", 2);
        size_t j = i;
        while (j < b) {
            if (dkim_canon_wsp(body[j])) {
                while (j < b && dkim_canon_wsp(body[j])) j++;
                sink(arg, " ", 1);
                continue;
            }
            size_t k = j;
            while (k < b && !dkim_canon_wsp(body[k])) k++;
            sink(arg, body + j, k - j);
            j = k;
        }
        sink(arg, "\r\n", 2);
        i = next;
    }
}

static void dkim_canon_buf_sink(void *arg, const char *data, size_t n)
{
    strbuf_append(arg, data, n);
}

void dkim_canon_body_buf(const char *body, size_t len, strbuf *out)
{
    dkim_canon_body(body, len, dkim_canon_buf_sink, out);
}
