/* test_mime.c — the messages the SES API builds (api/mime.h): the exact text of a one-part
 * and a two-part Content.Simple message; quoted-printable as a receiver decodes it (soft
 * breaks at 76 columns never inside an =XX, '=' and trailing blanks encoded, CRLF and
 * lone LF as line breaks, a lone CR kept); subjects and display names as RFC 2047
 * encoded-words (at most 75 octets, lines within 76, whole characters per word, the
 * declared charset) and plain ASCII left alone; which addresses are one address; errors
 * that name the request field; Content.Raw's strict base64 (offsets of the first bad
 * character, padding rules), line-end normalization and refusals (bare CR, NUL, long
 * lines, the size cap, empty). Python's email package reads the same messages back in
 * tests/integration/test_mime_python.py. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "api/mime.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

#define NOW_MS 1700000000000LL   /* Tue, 14 Nov 2023 22:13:20 +0000 */

static mime_simple simple_of(const char *subject, const char *text, const char *html)
{
    static const char *to[] = {"rcpt@example.net"};
    mime_simple in;
    memset(&in, 0, sizeof in);
    in.from = "sender@example.com";
    in.to = to;
    in.nto = 1;
    in.subject.data = subject;
    in.text.data = text;
    in.html.data = html;
    in.now_ms = NOW_MS;
    in.boundary_seed = "0000018b-abc";
    return in;
}

static char *build_ok(const mime_simple *in)
{
    char *err = NULL;
    size_t len = 0;
    char *m = mime_build_simple(in, &len, &err);
    ck_assert_msg(m != NULL, "mime_build_simple: %s", err ? err : "?");
    ck_assert_uint_eq(len, strlen(m));
    return m;
}

static char *build_err(const mime_simple *in)
{
    char *err = NULL;
    size_t len = 0;
    char *m = mime_build_simple(in, &len, &err);
    ck_assert_msg(m == NULL, "built: %s", m);
    ck_assert_ptr_nonnull(err);
    return err;
}

/* The body of a one-part message (after the blank line). */
static const char *body_of(const char *m)
{
    const char *b = strstr(m, "\r\n\r\n");
    ck_assert_ptr_nonnull(b);
    return b + 4;
}

/* Quoted-printable decoded as RFC 2045 readers do (soft breaks dropped). */
static char *qp_decode(const char *s)
{
    strbuf sb;
    strbuf_init(&sb);
    for (; *s; s++) {
        if (s[0] == '=' && s[1] == '\r' && s[2] == '\n') {
            s += 2;
        } else if (s[0] == '=') {
            unsigned v;
            ck_assert_msg(sscanf(s + 1, "%2X", &v) == 1 && s[1] && s[2], "bad escape: %.8s", s);
            char c = (char)v;
            strbuf_append(&sb, &c, 1);
            s += 2;
        } else {
            strbuf_append(&sb, s, 1);
        }
    }
    return strbuf_steal(&sb);
}

/* Every line ends with CRLF and is at most max octets. */
static void assert_lines(const char *s, size_t max)
{
    for (const char *p = s; *p;) {
        const char *e = strstr(p, "\r\n");
        ck_assert_msg(e != NULL, "unterminated line: %s", p);
        ck_assert_msg((size_t)(e - p) <= max, "line of %zu: %.*s", (size_t)(e - p), (int)(e - p), p);
        for (const char *c = p; c < e; c++) ck_assert_msg(*c != '\r' && *c != '\n', "bare CR/LF");
        p = e + 2;
    }
}

/* ------------------------------------------------------------------ whole messages */

START_TEST(test_text_only_exact)
{
    mime_simple in = simple_of("Hello", "Hi Bob,\nsee you.\n", NULL);
    char *m = build_ok(&in);
    ck_assert_str_eq(m, "From: sender@example.com\r\n"
                        "To: rcpt@example.net\r\n"
                        "Subject: Hello\r\n"
                        "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
                        "MIME-Version: 1.0\r\n"
                        "Content-Type: text/plain; charset=UTF-8\r\n"
                        "Content-Transfer-Encoding: quoted-printable\r\n"
                        "\r\n"
                        "Hi Bob,\r\n"
                        "see you.\r\n");
    free(m);
}
END_TEST

START_TEST(test_both_parts_exact)
{
    static const char *cc[] = {"Carol <carol@example.org>"};
    static const char *rt[] = {"replies@example.com"};
    mime_simple in = simple_of("Hi", "t\u00e9xt", "<p>h</p>\n");
    in.from = "Ann <ann@example.com>";
    in.cc = cc;
    in.ncc = 1;
    in.reply_to = rt;
    in.nreply_to = 1;
    char *m = build_ok(&in);
    ck_assert_str_eq(m, "From: Ann <ann@example.com>\r\n"
                        "To: rcpt@example.net\r\n"
                        "Cc: Carol <carol@example.org>\r\n"
                        "Reply-To: replies@example.com\r\n"
                        "Subject: Hi\r\n"
                        "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
                        "MIME-Version: 1.0\r\n"
                        "Content-Type: multipart/alternative;\r\n"
                        " boundary=\"----=_Part_0000018b-abc\"\r\n"
                        "\r\n"
                        "------=_Part_0000018b-abc\r\n"
                        "Content-Type: text/plain; charset=UTF-8\r\n"
                        "Content-Transfer-Encoding: quoted-printable\r\n"
                        "\r\n"
                        "t=C3=A9xt=\r\n"
                        "\r\n"
                        "------=_Part_0000018b-abc\r\n"
                        "Content-Type: text/html; charset=UTF-8\r\n"
                        "Content-Transfer-Encoding: quoted-printable\r\n"
                        "\r\n"
                        "<p>h</p>\r\n"
                        "\r\n"
                        "------=_Part_0000018b-abc--\r\n");
    ck_assert_ptr_null(strstr(m, "Message-ID"));
    free(m);

    /* the seed's odd characters do not reach the boundary; an empty seed still gives one */
    in.boundary_seed = "a b\"c;\r\n";
    m = build_ok(&in);
    ck_assert_ptr_nonnull(strstr(m, "boundary=\"----=_Part_abc\"\r\n"));
    free(m);
    in.boundary_seed = NULL;
    m = build_ok(&in);
    ck_assert_ptr_nonnull(strstr(m, "boundary=\"----=_Part_0\"\r\n"));
    free(m);
}
END_TEST

START_TEST(test_body_charset)
{
    mime_simple in = simple_of("s", "Gr\u00fc\u00dfe \u00ff", NULL);
    in.text.charset = "ISO-8859-1";
    char *m = build_ok(&in);
    ck_assert_ptr_nonnull(strstr(m, "Content-Type: text/plain; charset=ISO-8859-1\r\n"));
    ck_assert_str_eq(body_of(m), "Gr=FC=DFe =FF=\r\n");
    free(m);

    in.text.charset = "windows-1252";
    in.text.data = "\u20ac 5";
    m = build_ok(&in);
    ck_assert_str_eq(body_of(m), "=80 5=\r\n");
    free(m);

    /* the errors name the field, the charset and the character */
    in.text.charset = "ISO-8859-1";
    char *err = build_err(&in);
    ck_assert_str_eq(err, "Content.Simple.Body.Text.Data: the character '\u20ac' at octet 0 has "
                          "no form in charset 'ISO-8859-1'");
    free(err);
    in.text.charset = "klingon";
    err = build_err(&in);
    ck_assert_str_eq(err, "Content.Simple.Body.Text.Charset: unknown charset 'klingon'");
    free(err);
    in.text.charset = NULL;
    in.html.data = "x";
    in.html.charset = "UTF-16";
    err = build_err(&in);
    ck_assert_str_eq(err, "Content.Simple.Body.Html.Charset: charset 'UTF-16' cannot carry mail "
                          "text (it does not keep ASCII as ASCII)");
    free(err);
    /* iconv's suffixes would silently change the text: not a charset name */
    in.html.charset = "ISO-8859-1//TRANSLIT";
    err = build_err(&in);
    ck_assert_str_eq(err, "Content.Simple.Body.Html.Charset: unknown charset 'ISO-8859-1//TRANSLIT'");
    free(err);
    in.html.charset = NULL;
    in.html.data = "bad \xff utf-8";
    err = build_err(&in);
    ck_assert_str_eq(err, "Content.Simple.Body.Html.Data: not valid UTF-8 at octet 4");
    free(err);
}
END_TEST

START_TEST(test_required_fields)
{
    mime_simple in = simple_of("s", NULL, NULL);
    char *err = build_err(&in);
    ck_assert_str_eq(err, "Content.Simple.Body: Text or Html required");
    free(err);
    in = simple_of(NULL, "t", NULL);
    err = build_err(&in);
    ck_assert_str_eq(err, "Content.Simple.Subject: required");
    free(err);
    in = simple_of("s", "t", NULL);
    in.from = NULL;
    err = build_err(&in);
    ck_assert_str_eq(err, "FromEmailAddress: required");
    free(err);
    in.from = "nobody";
    err = build_err(&in);
    ck_assert_str_eq(err, "FromEmailAddress: 'nobody' is not a valid email address");
    free(err);
    static const char *cc[] = {"ok@example.net", "x@y@z"};
    in = simple_of("s", "t", NULL);
    in.cc = cc;
    in.ncc = 2;
    err = build_err(&in);
    ck_assert_str_eq(err, "Destination.CcAddresses[1]: 'x@y@z' is not a valid email address");
    free(err);
    in = simple_of("\u20ac", "t", NULL);
    in.subject.charset = "US-ASCII";
    err = build_err(&in);
    ck_assert_str_eq(err, "Content.Simple.Subject.Data: the character '\u20ac' at octet 0 has no "
                          "form in charset 'US-ASCII'");
    free(err);
    in.subject.charset = "nope";
    err = build_err(&in);
    ck_assert_str_eq(err, "Content.Simple.Subject.Charset: unknown charset 'nope'");
    free(err);
    /* no To (Bcc only): no To field; a date out of range is clamped, not undefined */
    in = simple_of("s", "t", NULL);
    in.nto = 0;
    in.now_ms = INT64_MAX;
    char *m = build_ok(&in);
    ck_assert_ptr_null(strstr(m, "\r\nTo:"));
    ck_assert_ptr_nonnull(strstr(m, "Date: Fri, 31 Dec 9999 23:59:59 +0000\r\n"));
    free(m);
}
END_TEST

START_TEST(test_address_folding)
{
    const char *to[30];
    char bufs[30][32];
    for (int i = 0; i < 30; i++) {
        snprintf(bufs[i], sizeof bufs[i], "user%02d@example.net", i);
        to[i] = bufs[i];
    }
    mime_simple in = simple_of("s", "t", NULL);
    in.to = to;
    in.nto = 30;
    char *m = build_ok(&in);
    const char *h = strstr(m, "To: user00@example.net, user01@example.net, user02@example.net,\r\n"
                              " user03@example.net,");
    ck_assert_ptr_nonnull(h);
    char *head = util_strndup(m, (size_t)(strstr(m, "\r\n\r\n") - m) + 2);
    assert_lines(head, 76);
    free(head);
    free(m);
}
END_TEST

/* ------------------------------------------------------------------ quoted-printable */

static char *qp_body(const char *text)
{
    mime_simple in = simple_of("s", text, NULL);
    char *m = build_ok(&in);
    char *b = util_strdup(body_of(m));
    free(m);
    return b;
}

START_TEST(test_qp_rules)
{
    struct { const char *in, *out; } t[] = {
        {"a=b", "a=3Db=\r\n"},
        {"trailing  \nx", "trailing =20\r\nx=\r\n"},
        {"tab\t\r\n", "tab=09\r\n"},
        {"end \t", "end =09=\r\n"},
        {"cr\ronly", "cr=0Donly=\r\n"},
        {"a\r\n\r\nb\n\nc", "a\r\n\r\nb\r\n\r\nc=\r\n"},
        {"\x7f~!", "=7F~!=\r\n"},
        {"", ""},
        {"\n", "\r\n"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char *b = qp_body(t[i].in);
        ck_assert_msg(strcmp(b, t[i].out) == 0, "%zu: got [%s]", i, b);
        free(b);
    }
}
END_TEST

START_TEST(test_qp_line_lengths)
{
    /* 76 octets on a hard line stay one line; 77 get a soft break */
    char line[200];
    memset(line, 'a', 76);
    strcpy(line + 76, "\n");
    char *b = qp_body(line);
    ck_assert_uint_eq(strlen(b), 78);
    free(b);
    memset(line, 'a', 77);
    strcpy(line + 77, "\n");
    b = qp_body(line);
    ck_assert_uint_eq(strstr(b, "=\r\n") - b, 75);
    free(b);

    /* an escape is never cut by a soft break, and everything decodes back */
    strbuf text;
    strbuf_init(&text);
    for (int i = 0; i < 40; i++) strbuf_puts(&text, "\u00e9=x ");
    strbuf_puts(&text, "\n");
    for (int i = 0; i < 300; i++) strbuf_puts(&text, i % 7 ? "z" : " ");
    b = qp_body(text.buf);
    assert_lines(b, 76);
    char *back = qp_decode(b);
    /* lone LF becomes CRLF on the wire */
    char *want = util_strdup(text.buf);
    char *nl = strchr(want, '\n');
    *nl = '\0';
    char *want2 = util_asprintf("%s\r\n%s", want, nl + 1);
    ck_assert_str_eq(back, want2);
    free(want);
    free(want2);
    free(back);
    free(b);
    strbuf_free(&text);
}
END_TEST

/* ------------------------------------------------------------------ encoded-words */

/* The words of v (folded with CRLF SP) decoded from base64 and concatenated; each word is
 * checked to hold whole UTF-8 characters (when the charset is UTF-8) and fit 75 octets. */
static char *words_decode(const char *v, const char *charset)
{
    strbuf sb;
    strbuf_init(&sb);
    char *prefix = util_asprintf("=?%s?B?", charset);
    const char *p = v;
    while (*p) {
        ck_assert_msg(strncmp(p, prefix, strlen(prefix)) == 0, "not a word: %s", p);
        const char *e = strstr(p, "?=");
        ck_assert_ptr_nonnull(e);
        ck_assert_msg(e + 2 - p <= 75, "word of %d octets", (int)(e + 2 - p));
        const char *b = p + strlen(prefix);
        unsigned char out[64];
        int n = EVP_DecodeBlock(out, (const unsigned char *)b, (int)(e - b));
        ck_assert_int_ge(n, 0);
        int pad = (e - b >= 1 && e[-1] == '=') + (e - b >= 2 && e[-2] == '=');
        n -= pad;
        if (strcmp(charset, "UTF-8") == 0) {
            ck_assert_msg((out[0] & 0xc0) != 0x80, "word starts inside a character");
            int last = n - 1;
            while (last > 0 && (out[last] & 0xc0) == 0x80) last--;
            int need = out[last] < 0x80 ? 1 : out[last] >= 0xf0 ? 4 : out[last] >= 0xe0 ? 3 : 2;
            ck_assert_msg(n - last == need, "word ends inside a character");
        }
        strbuf_append(&sb, out, (size_t)n);
        p = e + 2;
        if (*p) {
            ck_assert_msg(strncmp(p, "\r\n ", 3) == 0, "words not folded: %s", p);
            p += 3;
        }
    }
    free(prefix);
    return strbuf_steal(&sb);
}

START_TEST(test_words_plain_ascii_stays)
{
    char *err = NULL;
    char *w = mime_encode_words("Your order #1234 has shipped", NULL, &err);
    ck_assert_str_eq(w, "Your order #1234 has shipped");
    free(w);
    w = mime_encode_words("", NULL, &err);
    ck_assert_str_eq(w, "");
    free(w);
}
END_TEST

START_TEST(test_words_encoded)
{
    char *err = NULL;
    char *w = mime_encode_words("caf\u00e9", NULL, &err);
    ck_assert_str_eq(w, "=?UTF-8?B?Y2Fmw6k=?=");
    free(w);
    w = mime_encode_words("caf\u00e9", "ISO-8859-1", &err);
    ck_assert_str_eq(w, "=?ISO-8859-1?B?Y2Fm6Q==?=");
    free(w);

    /* long text of 1- to 4-octet characters: words of whole characters, lines within 76
     * (the first counted after a "Reply-To: "-sized field name) */
    strbuf s;
    strbuf_init(&s);
    for (int i = 0; i < 30; i++) strbuf_puts(&s, "a\u00e9\u20ac\U0001F389 ");
    w = mime_encode_words(s.buf, NULL, &err);
    ck_assert_ptr_nonnull(w);
    char *back = words_decode(w, "UTF-8");
    ck_assert_str_eq(back, s.buf);
    const char *nl = strstr(w, "\r\n");
    ck_assert_uint_le((size_t)(nl - w), 76 - 12);
    char *lines = util_asprintf("%s\r\n", w);
    assert_lines(lines, 76);
    free(lines);
    free(back);
    free(w);
    strbuf_free(&s);

    /* control characters, a literal "=?" and a long ASCII value are encoded too */
    w = mime_encode_words("a\r\nBcc: x@y", NULL, &err);
    back = words_decode(w, "UTF-8");
    ck_assert_str_eq(back, "a\r\nBcc: x@y");
    ck_assert_ptr_null(strstr(w, "Bcc"));
    free(back);
    free(w);
    w = mime_encode_words("=?UTF-8?B?w6k=?=", NULL, &err);
    ck_assert_str_eq(w, "=?UTF-8?B?PT9VVEYtOD9CP3c2az0/PQ==?=");
    free(w);
    char longv[100];
    memset(longv, 'x', 70);
    longv[70] = '\0';
    w = mime_encode_words(longv, NULL, &err);
    back = words_decode(w, "UTF-8");
    ck_assert_str_eq(back, longv);
    free(back);
    free(w);
}
END_TEST

START_TEST(test_words_stateful_charset)
{
    /* ISO-2022-JP: each word shifts in and back out on its own */
    strbuf s;
    strbuf_init(&s);
    for (int i = 0; i < 12; i++) strbuf_puts(&s, "\u65e5\u672c\u8a9e");
    char *err = NULL;
    char *w = mime_encode_words(s.buf, "ISO-2022-JP", &err);
    ck_assert_msg(w != NULL, "%s", err);
    ck_assert_ptr_nonnull(strstr(w, "\r\n "));
    for (const char *p = w; (p = strstr(p, "?B?")); p += 3) {
        const char *e = strstr(p, "?=");
        unsigned char out[64];
        int n = EVP_DecodeBlock(out, (const unsigned char *)p + 3, (int)(e - p - 3));
        while (n > 0 && out[n - 1] == 0) n--;
        ck_assert_msg(n >= 6 && memcmp(out, "\x1b$B", 3) == 0 && memcmp(out + n - 3, "\x1b(B", 3) == 0,
                      "word not shifted in and out");
    }
    free(w);
    strbuf_free(&s);
}
END_TEST

START_TEST(test_words_errors)
{
    char *err = NULL;
    ck_assert_ptr_null(mime_encode_words("\u00e9", "no-such", &err));
    ck_assert_str_eq(err, "unknown charset 'no-such'");
    free(err);
    ck_assert_ptr_null(mime_encode_words("\u00e9", "US-ASCII", &err));
    ck_assert_str_eq(err, "the character '\u00e9' at octet 0 has no form in charset 'US-ASCII'");
    free(err);
    ck_assert_ptr_null(mime_encode_words("a\xc3", NULL, &err));
    ck_assert_str_eq(err, "not valid UTF-8 at octet 1");
    free(err);
    /* an overlong form and a surrogate are not UTF-8 */
    ck_assert_ptr_null(mime_encode_words("\xc0\xaf", NULL, &err));
    free(err);
    ck_assert_ptr_null(mime_encode_words("\xed\xa0\x80", NULL, &err));
    free(err);
}
END_TEST

/* ------------------------------------------------------------------ addresses */

START_TEST(test_addr_spec)
{
    struct { const char *in, *spec; } ok[] = {
        {"a@b", "a@b"},
        {"  bob@example.com ", "bob@example.com"},
        {"<bob@example.com>", "bob@example.com"},
        {"Bob Smith <bob@example.com>", "bob@example.com"},
        {"Bob<bob@example.com>", "bob@example.com"},
        {"\"Smith, Bob\" <bob@example.com>", "bob@example.com"},
        {"\"a \\\"q\\\" b\" < x.y+tag@sub.example.com >", "x.y+tag@sub.example.com"},
        {"J. Q. Public <jqp@example.com>", "jqp@example.com"},
        {"Zo\u00eb <z@example.com>", "z@example.com"},
        {"\"quoted local\"@example.com", "\"quoted local\"@example.com"},
        {"u@[192.0.2.1]", "u@[192.0.2.1]"},
        {"o'brien@example.ie", "o'brien@example.ie"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char *s = mime_addr_spec(ok[i].in);
        ck_assert_msg(s && strcmp(s, ok[i].spec) == 0, "%s -> %s", ok[i].in, s ? s : "NULL");
        free(s);
    }
    char local65[80], long_domain[400];
    memset(local65, 'l', 65);
    strcpy(local65 + 65, "@example.com");
    strcpy(long_domain, "a@");
    for (int i = 0; i < 6; i++) strcat(long_domain, "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghij.");
    strcat(long_domain, "com");
    const char *bad[] = {
        "", "plain", "@example.com", "a@", "a@b@c", "a b@example.com", "a@b, c@d",
        "a@b c@d", "Doe, John <j@example.com>", "<a@b", "a@b>", "Name <a@b> trailing",
        "\"unclosed <a@b>", "a..b@example.com", ".a@example.com", "a.@example.com",
        "a@-example.com", "a@example-.com", "a@exa_mple.com", "a@example..com",
        "a@example.com.", "(comment) a@b", "a\r\n@b", "Bob\n <a@b>", "a@b\tc",
        "j\u00f6rg@example.com", "a@b\u00fccher.de", "Name <>", "<a@b> <c@d>",
        local65, long_domain, "a@[1.2.3.4", "a@[]", "\"a\"b@example.com",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *s = mime_addr_spec(bad[i]);
        ck_assert_msg(s == NULL, "accepted [%s] as %s", bad[i], s);
    }
    ck_assert_ptr_null(mime_addr_spec(NULL));
}
END_TEST

START_TEST(test_header_address)
{
    struct { const char *in, *out; } t[] = {
        {"a@example.com", "a@example.com"},
        {"<a@example.com>", "a@example.com"},
        {"  Bob   Smith  <b@example.com>", "Bob Smith <b@example.com>"},
        {"\"Smith, Bob\" <b@example.com>", "\"Smith, Bob\" <b@example.com>"},
        {"\"Bob\" <b@example.com>", "Bob <b@example.com>"},
        {"J. Q. Public <j@example.com>", "\"J. Q. Public\" <j@example.com>"},
        {"\"say \\\"hi\\\"\" <h@example.com>", "\"say \\\"hi\\\"\" <h@example.com>"},
        {"\"\" <e@example.com>", "e@example.com"},
        {"Zo\u00eb <z@example.com>", "=?UTF-8?B?Wm/Dqw==?= <z@example.com>"},
        /* already encoded (as SES asks for sender names): left as it is */
        {"=?UTF-8?B?Wm/Dqw==?= <z@example.com>", "=?UTF-8?B?Wm/Dqw==?= <z@example.com>"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char *err = NULL;
        char *a = mime_header_address(t[i].in, &err);
        ck_assert_msg(a && strcmp(a, t[i].out) == 0, "%s -> %s", t[i].in, a ? a : err);
        free(a);
    }
    char *err = NULL;
    ck_assert_ptr_null(mime_header_address("a@b\r\nBcc: x@y", &err));
    ck_assert_str_eq(err, "'a@b??Bcc: x@y' is not a valid email address");
    free(err);

    /* a long non-ASCII name: folded words, then the address on a line of its own if need be */
    char *a = mime_header_address("\u00c9milie-Ang\u00e9lique de la Fontaine-Beaumarchais "
                                  "Dupont-Aignan <emilie.angelique.delafontaine@example.com>", &err);
    ck_assert_ptr_nonnull(a);
    char *lines = util_asprintf("%s\r\n", a);
    assert_lines(lines, 76);
    ck_assert_ptr_nonnull(strstr(a, "\r\n <emilie.angelique.delafontaine@example.com>"));
    free(lines);
    free(a);
}
END_TEST

/* ------------------------------------------------------------------ Content.Raw */

static char *raw_ok(const char *b64, size_t max, size_t *len)
{
    char *err = NULL;
    char *m = mime_raw_decode(b64, strlen(b64), max, len, &err);
    ck_assert_msg(m != NULL, "%s: %s", b64, err ? err : "?");
    ck_assert_uint_eq(*len, strlen(m));
    return m;
}

static void raw_err(const char *b64, size_t max, const char *want)
{
    char *err = NULL;
    size_t len = 0;
    char *m = mime_raw_decode(b64, strlen(b64), max, &len, &err);
    ck_assert_msg(m == NULL, "%s decoded to %s", b64, m);
    ck_assert_msg(strcmp(err, want) == 0, "%s: [%s], want [%s]", b64, err, want);
    free(err);
}

START_TEST(test_raw_decode)
{
    size_t len;
    /* "Subject: x\n\nbody" with line breaks and blanks in the base64 */
    char *m = raw_ok("U3ViamVj\r\ndDogeAoK\n Ym9k eQ==\r\n", 1000, &len);
    ck_assert_str_eq(m, "Subject: x\r\n\r\nbody\r\n");
    free(m);
    /* CRLF kept, final CRLF not doubled; padding optional; "xx=" refused */
    m = raw_ok("YQ0KYg0K", 1000, &len);      /* "a\r\nb\r\n" */
    ck_assert_str_eq(m, "a\r\nb\r\n");
    free(m);
    m = raw_ok("YWI", 1000, &len);           /* "ab" */
    ck_assert_str_eq(m, "ab\r\n");
    free(m);
    m = raw_ok("YQ", 1000, &len);            /* "a" */
    ck_assert_str_eq(m, "a\r\n");
    free(m);
    /* exactly at the cap (after normalization) */
    m = raw_ok("YQpi", 6, &len);             /* "a\nb" -> "a\r\nb\r\n" = 6 */
    ck_assert_str_eq(m, "a\r\nb\r\n");
    free(m);
    raw_err("YQpi", 5, "Content.Raw.Data: larger than 5 bytes");
}
END_TEST

START_TEST(test_raw_refusals)
{
    raw_err("YWJj*GVm", 100, "Content.Raw.Data: invalid base64 at offset 4");
    raw_err("YWJj ZGVm-", 100, "Content.Raw.Data: invalid base64 at offset 9");
    raw_err("YQ=", 100, "Content.Raw.Data: invalid base64 at offset 3");
    raw_err("Y===", 100, "Content.Raw.Data: invalid base64 at offset 1");
    raw_err("YWI==", 100, "Content.Raw.Data: invalid base64 at offset 4");
    raw_err("YQ==YQ==", 100, "Content.Raw.Data: invalid base64 at offset 4");
    raw_err("YWJjZ", 100, "Content.Raw.Data: invalid base64 at offset 5");
    raw_err("YR==", 100, "Content.Raw.Data: invalid base64 at offset 1");   /* spare bits */
    raw_err("YWJ=", 100, "Content.Raw.Data: invalid base64 at offset 2");
    raw_err("", 100, "Content.Raw.Data: the message is empty");
    raw_err(" \r\n", 100, "Content.Raw.Data: the message is empty");
    raw_err("YQ1i", 100, "Content.Raw.Data: bare CR at decoded octet 1");   /* "a\rb" */
    raw_err("YQ0=", 100, "Content.Raw.Data: bare CR at decoded octet 1");   /* "a\r" */
    raw_err("YQBi", 100, "Content.Raw.Data: NUL byte at decoded octet 1");  /* "a\0b" */
    /* a line of 998 octets passes, 999 do not */
    unsigned char line[1001];
    memset(line, 'x', sizeof line);
    char b64[1400];
    EVP_EncodeBlock((unsigned char *)b64, line, 998);
    size_t len;
    char *m = raw_ok(b64, 2000, &len);
    ck_assert_uint_eq(len, 1000);
    free(m);
    EVP_EncodeBlock((unsigned char *)b64, line, 999);
    raw_err(b64, 2000, "Content.Raw.Data: line longer than 998 octets at decoded octet 998");
    /* a 1 MB message against a 1 KB cap: refused while decoding */
    size_t big = 1 << 20;
    char *huge = util_malloc(big + 1);
    for (size_t i = 0; i < big; i++) huge[i] = "QUIK"[i % 4];   /* "AB\n" each */
    huge[big] = '\0';
    raw_err(huge, 1024, "Content.Raw.Data: larger than 1024 bytes");
    free(huge);
}
END_TEST

static Suite *mime_suite(void)
{
    Suite *s = suite_create("mime");
    TCase *tc = tcase_create("simple");
    tcase_add_test(tc, test_text_only_exact);
    tcase_add_test(tc, test_both_parts_exact);
    tcase_add_test(tc, test_body_charset);
    tcase_add_test(tc, test_required_fields);
    tcase_add_test(tc, test_address_folding);
    tcase_add_test(tc, test_qp_rules);
    tcase_add_test(tc, test_qp_line_lengths);
    suite_add_tcase(s, tc);
    tc = tcase_create("words");
    tcase_add_test(tc, test_words_plain_ascii_stays);
    tcase_add_test(tc, test_words_encoded);
    tcase_add_test(tc, test_words_stateful_charset);
    tcase_add_test(tc, test_words_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("addresses");
    tcase_add_test(tc, test_addr_spec);
    tcase_add_test(tc, test_header_address);
    suite_add_tcase(s, tc);
    tc = tcase_create("raw");
    tcase_add_test(tc, test_raw_decode);
    tcase_add_test(tc, test_raw_refusals);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(mime_suite);
