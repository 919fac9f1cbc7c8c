/* mime.c — Content.Simple as a complete message (api/mime.h): header fields as SES writes
 * them (addresses validated, display names and subjects as RFC 2047 B encoded-words when
 * they are not plain ASCII), the bodies converted from the JSON's UTF-8 to their declared
 * charsets and quoted-printable encoded (RFC 2045 section 6.7), alone or as
 * multipart/alternative (text first, then html). Promises: every line ends with CRLF;
 * every line of a header field that holds encoded-words is at most 76 octets, every body
 * line at most 76, no line over 998 (addresses are capped so that even the longest fits);
 * no encoded-word passes 75 octets or splits a character (a word holds whole characters,
 * converted and flushed on their own, so stateful charsets such as ISO-2022-JP stay
 * decodable word by word); the multipart boundary holds "=_", which quoted-printable
 * output can never contain. Errors name the SES request field they come from.
 *
 * Why by hand: a library (GMime) would be a dependency for a few hundred lines of output
 * formatting; charset conversion is glibc's iconv, base64 is OpenSSL's EVP_EncodeBlock. */
#include <errno.h>
#include <iconv.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "api/mime.h"
#include "base/util.h"

#define MIME_ADDR_MAX 900        /* a whole "Name <a@b>"; keeps every header line < 998 */
#define MIME_SPEC_MAX 320        /* local@domain */
#define MIME_CHARSET_MAX 40      /* longest charset name (an encoded-word must fit 75) */
#define MIME_NAME_COLUMN 12      /* where a display name or value is assumed to start */
#define MIME_WORD_MAX 75         /* RFC 2047 section 2: an encoded-word */
#define MIME_LINE_MAX 76         /* RFC 2047 and RFC 2045: a line with words / of QP */
#define MIME_FOLD_AT 78          /* RFC 5322 section 2.1.1: SHOULD */
#define MIME_DATE_MAX_MS 253402300799999LL   /* 9999-12-31T23:59:59.999Z */

/* What an internal error is about: the charset itself or the text to convert. */
typedef enum { MIME_E_CHARSET, MIME_E_DATA } mime_ekind;

/* Flags of mime_words: when plain ASCII is encoded all the same. */
#define MIME_W_LONG 1            /* the value would pass MIME_FOLD_AT columns */
#define MIME_W_MARKER 2          /* it holds "=?", which a reader would try to decode */

static void mime_fail(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mime_fail(char **err, const char *fmt, ...)
{
    if (!err) return;
    va_list ap;
    va_start(ap, fmt);
    *err = util_vasprintf(fmt, ap);
    va_end(ap);
}

/* s as an error message may show it: control characters as '?', at most 80 octets (cut
 * on a character boundary, "..." added). */
static char *mime_shown(const char *s)
{
    size_t n = strlen(s), keep = n > 80 ? 80 : n;
    while (keep < n && keep > 0 && ((unsigned char)s[keep] & 0xc0) == 0x80) keep--;
    char *out = util_malloc(keep + 4);
    for (size_t i = 0; i < keep; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    strcpy(out + keep, keep < n ? "..." : "");
    return out;
}

/* ------------------------------------------------------------------ UTF-8 and charsets */

/* Length of the well-formed UTF-8 character at s (n bytes left), 0 if there is none
 * (overlong forms, surrogates and code points past U+10FFFF refused). */
static size_t mime_utf8_len(const unsigned char *s, size_t n)
{
    if (n == 0) return 0;
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else return 0;
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    return len;
}

/* Offset of the first byte of s[0..n) that starts no UTF-8 character, or n. */
static size_t mime_utf8_bad(const char *s, size_t n)
{
    size_t i = 0, l;
    while (i < n && (l = mime_utf8_len((const unsigned char *)s + i, n - i)) > 0) i += l;
    return i;
}

/* Appends in[0..n) converted by cd, from the initial state to the initial state again (a
 * stateful charset's shifts closed). 0, or -1 if iconv refused or counted an
 * irreversible conversion. */
static int mime_iconv(iconv_t cd, const char *in, size_t n, strbuf *out)
{
    iconv(cd, NULL, NULL, NULL, NULL);
    char *ip = (char *)in;
    size_t il = n;
    for (int flush = 0; flush < 2;) {
        size_t room = il * 4 + 32;
        strbuf_reserve(out, room);
        char *op = out->buf + out->len;
        size_t ol = room;
        size_t r = flush ? iconv(cd, NULL, NULL, &op, &ol) : iconv(cd, &ip, &il, &op, &ol);
        out->len += room - ol;
        out->buf[out->len] = '\0';
        if (r == (size_t)-1 && errno == E2BIG) continue;
        if (r != 0) return -1;
        if (flush || il == 0) flush++;
    }
    return 0;
}

/* A charset kiln can write text in: a plain name iconv knows, whose output keeps every
 * printable ASCII character, TAB, CR and LF as they are (so that header syntax, line
 * ends and quoted-printable mean what they say); the UTF-16s, UTF-7 and EBCDIC fail. */
static iconv_t mime_charset_open(const char *charset, char **err)
{
    size_t n = strlen(charset);
    bool plain = n > 0 && n <= MIME_CHARSET_MAX;
    for (size_t i = 0; plain && i < n; i++) {
        unsigned char c = (unsigned char)charset[i];
        plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '-' || c == '_' || c == '.' || c == '+';
    }
    char *shown = mime_shown(charset);
    iconv_t cd = plain ? iconv_open(charset, "UTF-8") : (iconv_t)-1;
    if (cd == (iconv_t)-1) {
        mime_fail(err, "unknown charset '%s'", shown);
        free(shown);
        return cd;
    }
    char ascii[98];
    size_t k = 0;
    for (int c = ' '; c < 0x7f; c++) ascii[k++] = (char)c;
    ascii[k++] = '\t';
    ascii[k++] = '\r';
    ascii[k++] = '\n';
    strbuf sb;
    strbuf_init(&sb);
    if (mime_iconv(cd, ascii, k, &sb) != 0 || sb.len != k || memcmp(sb.buf, ascii, k) != 0) {
        mime_fail(err, "charset '%s' cannot carry mail text (it does not keep ASCII as ASCII)",
                  shown);
        iconv_close(cd);
        cd = (iconv_t)-1;
    }
    strbuf_free(&sb);
    free(shown);
    return cd;
}

/* Appends utf8[0..n) in cd's charset; -1 with *err naming the first character that is
 * not UTF-8 or has no form there. */
static int mime_convert(iconv_t cd, const char *charset, const char *utf8, size_t n, strbuf *out,
                        char **err)
{
    size_t bad = mime_utf8_bad(utf8, n);
    if (bad < n) {
        mime_fail(err, "not valid UTF-8 at octet %zu", bad);
        return -1;
    }
    size_t start = out->len;
    if (mime_iconv(cd, utf8, n, out) == 0) return 0;
    /* find the character: convert one at a time */
    size_t i = 0, l = 0;
    for (; i < n; i += l) {
        l = mime_utf8_len((const unsigned char *)utf8 + i, n - i);
        out->len = start;
        if (mime_iconv(cd, utf8 + i, l, out) != 0) break;
    }
    out->len = start;
    out->buf[start] = '\0';
    char *shown = mime_shown(charset);
    if (i < n)
        mime_fail(err, "the character '%.*s' at octet %zu has no form in charset '%s'", (int)l,
                  utf8 + i, i, shown);
    else
        mime_fail(err, "the text has no exact form in charset '%s'", shown);
    free(shown);
    return -1;
}

/* ------------------------------------------------------------------ encoded-words */

/* utf8 as a header value starting at column: a copy when it needs no encoding (see the
 * flags), else B encoded-words in charset, folded with CRLF SP, each of whole characters,
 * at most 75 octets, each line at most 76 (the first one counted from column). */
static char *mime_words(const char *utf8, const char *charset, size_t column, int flags,
                        mime_ekind *kind, char **err)
{
    size_t n = strlen(utf8);
    bool need = (flags & MIME_W_LONG) && column + n > MIME_FOLD_AT;
    if (flags & MIME_W_MARKER) need = need || strstr(utf8, "=?") != NULL;
    for (size_t i = 0; i < n && !need; i++) {
        unsigned char c = (unsigned char)utf8[i];
        need = c < 0x20 || c >= 0x7f;
    }
    if (!need) return util_strdup(utf8);

    if (!charset) charset = "UTF-8";
    *kind = MIME_E_CHARSET;
    iconv_t cd = mime_charset_open(charset, err);
    if (cd == (iconv_t)-1) return NULL;
    *kind = MIME_E_DATA;
    strbuf out, run, more;
    strbuf_init(&out);
    strbuf_init(&run);
    strbuf_init(&more);
    if (mime_convert(cd, charset, utf8, n, &run, err) != 0) goto fail;

    /* each character's own length in the charset */
    size_t ncp = 0, *off = util_malloc((n + 1) * sizeof *off), *clen = util_malloc((n + 1) * sizeof *clen);
    for (size_t i = 0; i < n; ncp++) {
        size_t l = mime_utf8_len((const unsigned char *)utf8 + i, n - i);
        off[ncp] = i;
        run.len = 0;
        mime_iconv(cd, utf8 + i, l, &run);
        clen[ncp] = run.len;
        i += l;
    }
    off[ncp] = n;

    size_t overhead = strlen(charset) + 7;            /* =? cs ?B? ... ?= */
    size_t first = MIME_LINE_MAX > column ? MIME_LINE_MAX - column : 0;
    if (first > MIME_WORD_MAX) first = MIME_WORD_MAX;
    if (first < overhead + 8) first = MIME_WORD_MAX;  /* no room: a longer first line */
    char b64[MIME_WORD_MAX + 4];
    for (size_t i = 0; i < ncp;) {
        size_t limit = out.len == 0 ? first : MIME_WORD_MAX;
        size_t maxbytes = (limit - overhead) / 4 * 3;
        size_t j = i, sum = 0;
        while (j < ncp && sum + clen[j] <= maxbytes) sum += clen[j++];
        for (;;) {
            run.len = 0;
            if (j > i) mime_iconv(cd, utf8 + off[i], off[j] - off[i], &run);
            if (j <= i + 1 || run.len <= maxbytes) break;
            j--;
        }
        /* a stateful charset shares its shifts: grow while the whole run still fits */
        bool shared = run.len < sum;
        while (shared && j > i && j < ncp) {
            strbuf_reset(&more);
            mime_iconv(cd, utf8 + off[i], off[j + 1] - off[i], &more);
            if (more.len > maxbytes) break;
            strbuf swap = run;
            run = more;
            more = swap;
            j++;
        }
        if (j == i || run.len > maxbytes) {
            char *shown = mime_shown(charset);
            mime_fail(err, "a character at octet %zu is too long for an encoded-word in '%s'",
                      off[i], shown);
            free(shown);
            free(off);
            free(clen);
            goto fail;
        }
        EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)run.buf, (int)run.len);
        strbuf_printf(&out, "%s=?%s?B?%s?=", out.len ? "\r\n " : "", charset, b64);
        i = j;
    }
    free(off);
    free(clen);
    strbuf_free(&run);
    strbuf_free(&more);
    iconv_close(cd);
    return strbuf_steal(&out);
fail:
    strbuf_free(&run);
    strbuf_free(&more);
    strbuf_free(&out);
    iconv_close(cd);
    return NULL;
}

/* As mime.h says, plus: a value holding "=?" is encoded too (a reader would decode it); the
 * first line leaves room for a field name of up to 10 columns ("Reply-To: "). */
char *mime_encode_words(const char *utf8, const char *charset, char **err)
{
    mime_ekind kind;
    return mime_words(utf8, charset, MIME_NAME_COLUMN, MIME_W_LONG | MIME_W_MARKER, &kind, err);
}

/* ------------------------------------------------------------------ addresses */

static bool mime_atext(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/* One addr-spec: a dot-atom or quoted local part of at most 64 octets, '@', a domain of
 * LDH labels (1..63 octets, no hyphen at either end) or a [literal]; ASCII only (SES wants
 * Punycode domains), at most 320 octets. */
static bool mime_spec_ok(const char *s, size_t n)
{
    if (n == 0 || n > MIME_SPEC_MAX) return false;
    size_t i = 0;
    if (s[0] == '"') {
        for (i = 1; i < n && s[i] != '"'; i++) {
            if (s[i] == '\\' && ++i >= n) return false;
            if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f) return false;
        }
        if (i++ >= n) return false;
    } else {
        for (; i < n && s[i] != '@'; i++) {
            if (s[i] == '.' ? i == 0 || s[i - 1] == '.' : !mime_atext((unsigned char)s[i]))
                return false;
        }
        if (i == 0 || s[i - 1] == '.') return false;
    }
    if (i > 64 || i >= n || s[i] != '@') return false;
    const char *d = s + i + 1;
    size_t dn = n - i - 1;
    if (dn == 0 || dn > 255) return false;
    if (d[0] == '[') {
        if (dn < 3 || d[dn - 1] != ']') return false;
        for (size_t k = 1; k + 1 < dn; k++) {
            unsigned char c = (unsigned char)d[k];
            if (c <= ' ' || c >= 0x7f || c == '[' || c == ']' || c == '\\') return false;
        }
        return true;
    }
    size_t label = 0;
    for (size_t k = 0; k <= dn; k++) {
        if (k == dn || d[k] == '.') {
            if (label == 0 || label > 63 || d[k - 1] == '-') return false;
            label = 0;
            continue;
        }
        unsigned char c = (unsigned char)d[k];
        bool ldh = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '-';
        if (!ldh || (label == 0 && c == '-')) return false;
        label++;
    }
    return true;
}

/* "a@b", "<a@b>", "Name <a@b>", "\"Doe, John\" <a@b>" (blanks around allowed): the bare
 * addr-spec (malloc'd) and the display name as text (quotes and escapes undone, runs of
 * blanks between words one blank; empty when there is none). false if addr is not one
 * such address or holds a control character. */
static bool mime_addr_parse(const char *addr, strbuf *name, char **spec)
{
    size_t n = strlen(addr);
    if (n > MIME_ADDR_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)addr[i] < 0x20 || addr[i] == 0x7f) return false;
    size_t b = 0, e = n;
    while (b < e && addr[b] == ' ') b++;
    while (e > b && addr[e - 1] == ' ') e--;
    if (e > b && addr[e - 1] == '>') {
        size_t i = b;
        bool blank = false;
        while (i < e && addr[i] != '<') {
            unsigned char c = (unsigned char)addr[i];
            if (c == ' ') {
                blank = name->len > 0;
                i++;
                continue;
            }
            if (blank) strbuf_append(name, " ", 1);
            blank = false;
            if (c == '"') {
                for (i++; i < e && addr[i] != '"'; i++) {
                    if (addr[i] == '\\' && ++i >= e) return false;
                    strbuf_append(name, addr + i, 1);
                }
                if (i >= e) return false;
                i++;
            } else if (c >= 0x80 || c == '.' || mime_atext(c)) {
                strbuf_append(name, addr + i++, 1);
            } else {
                return false;
            }
        }
        if (i >= e) return false;
        size_t sb = i + 1, se = e - 1;
        while (sb < se && addr[sb] == ' ') sb++;
        while (se > sb && addr[se - 1] == ' ') se--;
        if (!mime_spec_ok(addr + sb, se - sb)) return false;
        *spec = util_strndup(addr + sb, se - sb);
        return true;
    }
    if (!mime_spec_ok(addr + b, e - b)) return false;
    *spec = util_strndup(addr + b, e - b);
    return true;
}

char *mime_addr_spec(const char *addr)
{
    strbuf name;
    strbuf_init(&name);
    char *spec = NULL;
    if (!addr || !mime_addr_parse(addr, &name, &spec)) spec = NULL;
    strbuf_free(&name);
    return spec;
}

/* A display name as a phrase: atoms as they are, other ASCII as a quoted-string,
 * anything else as UTF-8 encoded-words. */
static char *mime_name_phrase(const char *name, char **err)
{
    bool ascii = true, atoms = true;
    size_t n = strlen(name);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c >= 0x80) ascii = false;
        else if (!mime_atext(c) && !(c == ' ' && i > 0 && i + 1 < n && name[i - 1] != ' '))
            atoms = false;
    }
    if (!ascii) {
        mime_ekind kind;
        return mime_words(name, "UTF-8", MIME_NAME_COLUMN, 0, &kind, err);
    }
    if (atoms) return util_strdup(name);
    strbuf q;
    strbuf_init(&q);
    strbuf_append(&q, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        if (name[i] == '"' || name[i] == '\\') strbuf_append(&q, "\\", 1);
        strbuf_append(&q, name + i, 1);
    }
    strbuf_append(&q, "\"", 1);
    return strbuf_steal(&q);
}

/* Length of the last line of s (after its last CRLF), or of s. */
static size_t mime_last_line(const char *s)
{
    const char *nl = strrchr(s, '\n');
    return strlen(nl ? nl + 1 : s);
}

char *mime_header_address(const char *addr, char **err)
{
    strbuf name;
    strbuf_init(&name);
    char *spec = NULL;
    if (!addr || !mime_addr_parse(addr, &name, &spec)) {
        char *shown = mime_shown(addr ? addr : "");
        mime_fail(err, "'%s' is not a valid email address", shown);
        free(shown);
        strbuf_free(&name);
        return NULL;
    }
    if (name.len == 0) {
        strbuf_free(&name);
        return spec;
    }
    char *phrase = mime_name_phrase(name.buf, err);
    strbuf_free(&name);
    if (!phrase) {
        free(spec);
        return NULL;
    }
    size_t last = mime_last_line(phrase) + (strchr(phrase, '\n') ? 0 : MIME_NAME_COLUMN);
    bool fold = last + 3 + strlen(spec) > MIME_LINE_MAX;
    char *out = util_asprintf("%s%s<%s>", phrase, fold ? "\r\n " : " ", spec);
    free(phrase);
    free(spec);
    return out;
}

/* "Field: a, b,\r\n c\r\n": each address on the line while it fits 76 columns. */
static int mime_addr_field(strbuf *out, const char *field, const char *path,
                           const char *const *list, size_t n, char **err)
{
    if (n == 0) return 0;
    size_t col = strlen(field) + 2;
    strbuf_printf(out, "%s: ", field);
    for (size_t i = 0; i < n; i++) {
        char *e = NULL;
        char *a = list[i] ? mime_header_address(list[i], &e) : NULL;
        if (!a) {
            mime_fail(err, "%s[%zu]: %s", path, i, e ? e : "missing address");
            free(e);
            return -1;
        }
        const char *nl = strstr(a, "\r\n");
        size_t firstlen = nl ? (size_t)(nl - a) : strlen(a);
        if (i > 0) {
            strbuf_append(out, ",", 1);
            col++;
            bool fold = col + 1 + firstlen > MIME_LINE_MAX;
            strbuf_puts(out, fold ? "\r\n " : " ");
            col = fold ? 1 : col + 1;
        }
        strbuf_puts(out, a);
        col = nl ? mime_last_line(a) : col + firstlen;
        free(a);
    }
    strbuf_append(out, "\r\n", 2);
    return 0;
}

/* ------------------------------------------------------------------ bodies */

/* Appends s[0..n) quoted-printable (RFC 2045 section 6.7): CRLF and a lone LF become hard
 * line breaks (CRLF), a lone CR =0D; '=', controls and octets past 0x7e as =XX; a blank
 * before a line end as =20/=09; soft breaks keep lines within 76 octets. Text that does
 * not end with a line break ends with a soft one, so the output always ends with CRLF
 * (or is empty) and decodes to exactly s. */
static void mime_qp(strbuf *out, const unsigned char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t col = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] == '\n' || (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n')) {
            i += s[i] == '\r' ? 2 : 1;
            strbuf_append(out, "\r\n", 2);
            col = 0;
            continue;
        }
        unsigned char c = s[i++];
        bool eol = i < n && (s[i] == '\n' || (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n'));
        char tok[3];
        size_t t = 1;
        tok[0] = (char)c;
        if ((c == ' ' || c == '\t') ? (eol || i == n) : (c < 33 || c > 126 || c == '=')) {
            tok[0] = '=';
            tok[1] = hex[c >> 4];
            tok[2] = hex[c & 15];
            t = 3;
        }
        /* the last token of a hard line may use column 76; others leave room for '=' */
        if (col + t > (eol ? MIME_LINE_MAX : MIME_LINE_MAX - 1)) {
            strbuf_append(out, "=\r\n", 3);
            col = 0;
        }
        strbuf_append(out, tok, t);
        col += t;
    }
    if (col > 0) strbuf_append(out, "=\r\n", 3);
}

/* One part's header fields and body: the text converted to its charset and QP-encoded. */
static int mime_part_write(strbuf *out, const char *path, const char *subtype,
                           const mime_part *p, char **err)
{
    const char *charset = p->charset ? p->charset : "UTF-8";
    char *e = NULL;
    iconv_t cd = mime_charset_open(charset, &e);
    if (cd == (iconv_t)-1) {
        mime_fail(err, "%s.Charset: %s", path, e);
        free(e);
        return -1;
    }
    strbuf conv;
    strbuf_init(&conv);
    int rc = mime_convert(cd, charset, p->data, strlen(p->data), &conv, &e);
    iconv_close(cd);
    if (rc != 0) {
        mime_fail(err, "%s.Data: %s", path, e);
        free(e);
        strbuf_free(&conv);
        return -1;
    }
    strbuf_printf(out, "Content-Type: text/%s; charset=%s\r\n"
                       "Content-Transfer-Encoding: quoted-printable\r\n\r\n", subtype, charset);
    mime_qp(out, (const unsigned char *)conv.buf, conv.len);
    strbuf_free(&conv);
    return 0;
}

/* "----=_Part_" and the seed's boundary characters (at most 48 of them). */
static void mime_boundary(const char *seed, char out[64])
{
    size_t k = (size_t)snprintf(out, 64, "----=_Part_");
    for (const char *p = seed ? seed : ""; *p && k < 11 + 48; p++) {
        char c = *p;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '.' || c == '_' || c == '-')
            out[k++] = c;
    }
    if (k == 11) out[k++] = '0';
    out[k] = '\0';
}

char *mime_build_simple(const mime_simple *in, size_t *len, char **err)
{
    if (!in->from) {
        mime_fail(err, "FromEmailAddress: required");
        return NULL;
    }
    if (!in->subject.data) {
        mime_fail(err, "Content.Simple.Subject: required");
        return NULL;
    }
    if (!in->text.data && !in->html.data) {
        mime_fail(err, "Content.Simple.Body: Text or Html required");
        return NULL;
    }
    strbuf out;
    strbuf_init(&out);
    char *e = NULL;
    char *from = mime_header_address(in->from, &e);
    if (!from) {
        mime_fail(err, "FromEmailAddress: %s", e);
        goto fail;
    }
    strbuf_printf(&out, "From: %s\r\n", from);
    free(from);
    if (mime_addr_field(&out, "To", "Destination.ToAddresses", in->to, in->nto, err) != 0 ||
        mime_addr_field(&out, "Cc", "Destination.CcAddresses", in->cc, in->ncc, err) != 0 ||
        mime_addr_field(&out, "Reply-To", "ReplyToAddresses", in->reply_to, in->nreply_to,
                        err) != 0)
        goto fail_quiet;

    mime_ekind kind = MIME_E_DATA;
    char *subject = mime_words(in->subject.data, in->subject.charset, strlen("Subject: "),
                               MIME_W_LONG | MIME_W_MARKER, &kind, &e);
    if (!subject) {
        mime_fail(err, "Content.Simple.Subject.%s: %s",
                  kind == MIME_E_CHARSET ? "Charset" : "Data", e);
        goto fail;
    }
    strbuf_printf(&out, "Subject: %s\r\n", subject);
    free(subject);

    int64_t ms = in->now_ms < 0 ? 0 : in->now_ms > MIME_DATE_MAX_MS ? MIME_DATE_MAX_MS : in->now_ms;
    char date[40];
    util_rfc5322_date(ms, date);
    strbuf_printf(&out, "Date: %s\r\nMIME-Version: 1.0\r\n", date);

    if (!in->text.data || !in->html.data) {
        bool text = in->text.data != NULL;
        if (mime_part_write(&out, text ? "Content.Simple.Body.Text" : "Content.Simple.Body.Html",
                            text ? "plain" : "html", text ? &in->text : &in->html, err) != 0)
            goto fail_quiet;
    } else {
        char b[64];
        mime_boundary(in->boundary_seed, b);
        strbuf_printf(&out, "Content-Type: multipart/alternative;\r\n boundary=\"%s\"\r\n\r\n"
                            "--%s\r\n", b, b);
        if (mime_part_write(&out, "Content.Simple.Body.Text", "plain", &in->text, err) != 0)
            goto fail_quiet;
        strbuf_printf(&out, "\r\n--%s\r\n", b);
        if (mime_part_write(&out, "Content.Simple.Body.Html", "html", &in->html, err) != 0)
            goto fail_quiet;
        strbuf_printf(&out, "\r\n--%s--\r\n", b);
    }
    *len = out.len;
    return strbuf_steal(&out);
fail:
    free(e);
fail_quiet:
    strbuf_free(&out);
    return NULL;
}
