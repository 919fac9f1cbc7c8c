/* mime_raw.c — Content.Raw.Data (api/mime.h mime_raw_decode): the base64 text of a whole
 * message decoded and its line ends normalized for the spool in one pass. Promises: the
 * base64 is strict (RFC 4648 alphabet; CR, LF, TAB and space anywhere are skipped; '='
 * only as the padding of the last group, nothing but blanks after it; unused bits of the
 * last group must be zero; missing padding is accepted, as Java's decoder accepts it) and
 * an error names the offset of the first character that breaks it (the end of the text
 * when it stops inside a group); LF and CRLF become CRLF, a final CRLF is added when the
 * message does not end with one; a bare CR, a NUL, a line over 998 octets, an empty
 * message or one over max octets (counted after normalization, checked as bytes come)
 * are refused. The buffer never grows past max + 1 octets.
 *
 * Speed: the buffer is sized from the base64 length up front; four alphabet characters that
 * make three octets above CR (no NUL, LF or CR) inside a line are decoded and stored in one
 * step, an ordinary octet otherwise in place (mime_raw_octet's fast path); every other case
 * goes through the full rules (mime_raw_octet_slow).
 *
 * Why by hand: OpenSSL's EVP_DecodeBlock neither skips whitespace nor says where the
 * text is broken, and streaming the normalization needs the bytes as they come. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "api/mime.h"
#include "base/util.h"

#define MIME_RAW_LINE_MAX 998

typedef struct mime_raw {
    char *buf;
    size_t len, cap, max;
    size_t line;          /* octets on the current line */
    size_t in;            /* decoded octets seen (for error messages) */
    bool cr;              /* the last decoded octet was a CR */
    char *err;
} mime_raw;

static int mime_raw_fail(mime_raw *r, const char *what, size_t at)
{
    r->err = util_asprintf("Content.Raw.Data: %s at decoded octet %zu", what, at);
    return -1;
}

static int mime_raw_put(mime_raw *r, const char *s, size_t n)
{
    if (n > r->max - r->len) {
        r->err = util_asprintf("Content.Raw.Data: larger than %zu bytes", r->max);
        return -1;
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n + 1) cap *= 2;
        if (cap > r->max + 1) cap = r->max + 1;
        r->buf = util_realloc(r->buf, cap);
        r->cap = cap;
    }
    memcpy(r->buf + r->len, s, n);
    r->len += n;
    return 0;
}

/* One decoded octet through the line-end normalization: the rules in full. */
static int mime_raw_octet_slow(mime_raw *r, unsigned char c)
{
    int rc = 0;
    if (c == '\n') {
        rc = mime_raw_put(r, "\r\n", 2);
        r->line = 0;
        r->cr = false;
    } else if (r->cr) {
        rc = mime_raw_fail(r, "bare CR", r->in - 1);
    } else if (c == '\r') {
        r->cr = true;
    } else if (c == '\0') {
        rc = mime_raw_fail(r, "NUL byte", r->in);
    } else if (++r->line > MIME_RAW_LINE_MAX) {
        rc = mime_raw_fail(r, "line longer than 998 octets", r->in);
    } else {
        rc = mime_raw_put(r, (const char *)&c, 1);
    }
    r->in++;
    return rc;
}

/* The same, with the common case (an ordinary octet inside a line, room in the buffer, under
 * max) done in place: what mime_raw_octet_slow would do for it, without the calls. */
static inline int mime_raw_octet(mime_raw *r, unsigned char c)
{
    if (c != '\n' && c != '\r' && c != '\0' && !r->cr && r->line < MIME_RAW_LINE_MAX &&
        r->len < r->max && r->len + 2 <= r->cap) {
        r->buf[r->len++] = (char)c;
        r->line++;
        r->in++;
        return 0;
    }
    return mime_raw_octet_slow(r, c);
}

static int mime_raw_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Base64 value + 1 of each byte (0: not in the alphabet), for the four-at-a-time path. */
static const unsigned char mime_raw_tab[256] = {
    ['A'] = 1, ['B'] = 2, ['C'] = 3, ['D'] = 4, ['E'] = 5, ['F'] = 6, ['G'] = 7, ['H'] = 8,
    ['I'] = 9, ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15,
    ['P'] = 16, ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22,
    ['W'] = 23, ['X'] = 24, ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29,
    ['d'] = 30, ['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36,
    ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42, ['q'] = 43,
    ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48, ['w'] = 49, ['x'] = 50,
    ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56, ['4'] = 57,
    ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64
};

static bool mime_raw_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

char *mime_raw_decode(const char *b64, size_t b64_len, size_t max, size_t *len, char **err)
{
    mime_raw r;
    memset(&r, 0, sizeof r);
    r.max = max;
    /* room for the decoded octets and a CR for every 32nd of them, so the usual message is
     * never copied again (the cap still holds) */
    size_t est = b64_len / 4 * 3 + 3;
    r.cap = est + est / 32 + 16;
    if (r.cap > max + 1) r.cap = max + 1;
    if (r.cap == 0) r.cap = 1;
    r.buf = util_malloc(r.cap);
    unsigned acc = 0;
    size_t ngroup = 0, last = 0, pad = 0;   /* characters in the group; offset of the last */
    size_t i = 0;
    for (; i < b64_len; i++) {
        /* Runs of four alphabet characters making three ordinary octets inside a line, with
         * room: decoded in a tight loop on locals (what the path below does for them,
         * without its per-octet steps); the first group that is not such falls through. */
        if (ngroup == 0 && pad == 0 && !r.cr) {
            const unsigned char *q = (const unsigned char *)b64;
            unsigned char *out = (unsigned char *)r.buf;
            size_t len = r.len, line = r.line, lim = r.max < r.cap - 1 ? r.max : r.cap - 1;
            size_t start = i;
            while (b64_len - i >= 4 && line + 3 <= MIME_RAW_LINE_MAX && len + 3 <= lim) {
                unsigned a = mime_raw_tab[q[i]], b = mime_raw_tab[q[i + 1]],
                         c3 = mime_raw_tab[q[i + 2]], d = mime_raw_tab[q[i + 3]];
                if (!a || !b || !c3 || !d) break;
                unsigned v = (a - 1) << 18 | (b - 1) << 12 | (c3 - 1) << 6 | (d - 1);
                unsigned char o0 = (unsigned char)(v >> 16), o1 = (unsigned char)(v >> 8),
                              o2 = (unsigned char)v;
                if (o0 <= '\r' || o1 <= '\r' || o2 <= '\r') break;   /* NUL, LF, CR: below */
                out[len] = o0;
                out[len + 1] = o1;
                out[len + 2] = o2;
                len += 3;
                line += 3;
                i += 4;
            }
            if (i > start) {
                r.in += len - r.len;
                r.len = len;
                r.line = line;
                last = i - 1;
                if (i == b64_len) break;
            }
        }
        char c = b64[i];
        if (mime_raw_blank(c)) continue;
        if (c == '=') {
            /* padding: "xx==" or "xxx=", then only blanks */
            if (ngroup < 2 || ngroup + pad + 1 > 4) break;
            pad++;
            continue;
        }
        if (pad > 0) break;
        int v = mime_raw_value((unsigned char)c);
        if (v < 0) break;
        acc = acc << 6 | (unsigned)v;
        last = i;
        if (++ngroup == 4) {
            if (mime_raw_octet(&r, (unsigned char)(acc >> 16)) != 0 ||
                mime_raw_octet(&r, (unsigned char)(acc >> 8)) != 0 ||
                mime_raw_octet(&r, (unsigned char)acc) != 0)
                goto fail;
            ngroup = 0;
            acc = 0;
        }
    }
    bool bad = i < b64_len;
    size_t at = i;
    if (!bad && ngroup == 1) {
        bad = true;                            /* one character carries no whole octet */
        at = b64_len;
    }
    if (!bad && pad > 0 && ngroup + pad != 4) {
        bad = true;                            /* "xx=" : half the padding */
        at = b64_len;
    }
    if (!bad && ngroup >= 2) {
        unsigned spare = ngroup == 2 ? 4 : 2;  /* bits of the last character left over */
        if (acc & ((1u << spare) - 1)) {
            bad = true;
            at = last;
        } else {
            acc >>= spare;
            if ((ngroup == 3 && mime_raw_octet(&r, (unsigned char)(acc >> 8)) != 0) ||
                mime_raw_octet(&r, (unsigned char)acc) != 0)
                goto fail;
        }
    }
    if (bad) {
        r.err = util_asprintf("Content.Raw.Data: invalid base64 at offset %zu", at);
        goto fail;
    }
    if (r.cr) {
        mime_raw_fail(&r, "bare CR", r.in - 1);
        goto fail;
    }
    if (r.len == 0) {
        r.err = util_strdup("Content.Raw.Data: the message is empty");
        goto fail;
    }
    if (r.line > 0 && mime_raw_put(&r, "\r\n", 2) != 0) goto fail;
    if (mime_raw_put(&r, "", 0) != 0) goto fail;
    r.buf[r.len] = '\0';
    *len = r.len;
    return r.buf;
fail:
    free(r.buf);
    if (err) *err = r.err;
    else free(r.err);
    return NULL;
}
