/* mime.h — the messages the SES API builds and takes (pure, fuzzed): Content.Simple as a
 * complete RFC 5322 / MIME message (From, To, Cc, Reply-To, Subject as RFC 2047
 * encoded-words when it is not plain ASCII, Date, MIME-Version; text/plain or text/html
 * alone, or both as multipart/alternative; bodies quoted-printable so no line passes 76
 * octets, in the declared charset), and Content.Raw's decoded bytes normalized for the
 * spool (CRLF line ends; bare CR, NUL and lines over 998 octets refused). Every output is
 * CRLF text ready for mta/accept.c.
 *
 * Why by hand: building (not parsing) a two-part MIME message is a few header lines and
 * OpenSSL's base64; GMime would be a dependency for ~200 lines of output formatting. */
#ifndef KILN_MIME_H
#define KILN_MIME_H

#include <stddef.h>
#include <stdint.h>

typedef struct mime_part {
    const char *data;            /* UTF-8 text as the JSON held it; NULL: no such part */
    const char *charset;         /* Charset, NULL: "UTF-8". Accepted: UTF-8, US-ASCII,
                                    ISO-8859-1..15, windows-1252 and what glibc iconv knows;
                                    the data is converted to it (unconvertible: error) */
} mime_part;

typedef struct mime_simple {
    const char *from;            /* FromEmailAddress as given ("Name <a@b>" or "a@b") */
    const char *const *to; size_t nto;
    const char *const *cc; size_t ncc;            /* Bcc never appears in the message */
    const char *const *reply_to; size_t nreply_to;
    mime_part subject;           /* required */
    mime_part text, html;        /* at least one */
    int64_t now_ms;              /* Date: (UTC, RFC 5322 format) */
    const char *boundary_seed;   /* makes the multipart boundary unique (e.g. a fresh id) */
} mime_simple;

/* The message as CRLF text (malloc'd, *len bytes, NUL-terminated), or NULL with *err
 * (malloc'd, names the field: "Content.Simple.Subject.Charset: unknown charset 'x'"). */
char *mime_build_simple(const mime_simple *in, size_t *len, char **err);

/* A header value as RFC 2047 encoded-words (B encoding, words of at most 75 octets,
 * folded) when it holds non-ASCII or control characters or would exceed 78 columns, else
 * a copy. charset as in mime_part. NULL with *err if unconvertible. */
char *mime_encode_words(const char *utf8, const char *charset, char **err);

/* A display address for a header: "a@b" stays, "Name <a@b>" gets its name encoded with
 * mime_encode_words when needed. NULL with *err when addr is no single address. */
char *mime_header_address(const char *addr, char **err);
/* The bare address of "a@b" or "Name <a@b>" (malloc'd), NULL if it is not one address. */
char *mime_addr_spec(const char *addr);

/* Content.Raw: base64 text (b64_len bytes, whitespace allowed) decoded; LF and CRLF line
 * ends become CRLF; a final line end is added if missing. NULL with *err ("Content.Raw.Data:
 * invalid base64 at offset 12", "... bare CR", "... NUL byte", "... line longer than 998
 * octets", "... larger than N bytes") — max is the cap of the decoded message. */
char *mime_raw_decode(const char *b64, size_t b64_len, size_t max, size_t *len, char **err);

#endif
