/* dkim_canon.h — what a DKIM signature covers, as bytes (RFC 6376 sections 3.4 and 5.4):
 * the message's lines and header fields as the wire will carry them, the "relaxed"
 * canonical forms of a header field and of the body, and the bottom-up choice of field
 * instances that h= names. Pure, on buffers; used by mta/dkim_sign.c and its tests.
 *
 * Line ends: a line ends at CRLF, at a lone CR or at a lone LF, and a last line without an
 * end is still a line: exactly the lines smtp_client_encode_data (mta/smtp_reply.c) turns
 * into CRLF lines on the wire, so what is canonicalized here is what the receiver
 * canonicalizes. Nothing here reads past len, whatever the bytes (NUL, 8-bit, bare CR). */
#ifndef KILN_DKIM_CANON_H
#define KILN_DKIM_CANON_H

#include <stdbool.h>
#include <stddef.h>

#include "base/util.h"

/* The end of the line starting at i (< len): the index of its line end (or len), and in
 * *next the index after that line end (CRLF counts as one). */
size_t dkim_canon_line_end(const char *s, size_t len, size_t i, size_t *next);

/* One header field of the message: its first line and continuation lines (lines starting
 * with a space or tab), line ends inside included, the last line's end excluded. */
typedef struct dkim_field {
    const char *raw;
    size_t len;
    size_t name_len;     /* the name before ':', blanks before ':' excluded; 0 when the line
                            has no ':' (such a line is never signed) */
} dkim_field;

typedef struct dkim_fields {
    dkim_field *f;       /* in message order */
    size_t n;
    size_t body_off;     /* where the body starts: after the first empty line, or len when
                            the message has none (then the body is empty) */
} dkim_fields;

/* Splits the header section of msg into fields. Continuation lines before the first field
 * are dropped (no field to belong to). Always succeeds; free with dkim_fields_free. */
void dkim_fields_parse(const char *msg, size_t len, dkim_fields *out);
void dkim_fields_free(dkim_fields *fs);
/* The field's name is `name` (case-insensitive). */
bool dkim_field_is(const dkim_field *f, const char *name);
/* How many fields are named `name`. */
size_t dkim_fields_count(const dkim_fields *fs, const char *name);
/* RFC 6376 section 5.4.2: for each of names[0..n) in order, the last instance of that name
 * not picked yet, bottom-up (out[i] NULL when none is left: an over-signed name). */
void dkim_fields_select(const dkim_fields *fs, const char *const *names, size_t n,
                        const dkim_field **out);

/* Relaxed header canonicalization (section 3.4.2) of one field (raw bytes as in
 * dkim_field): the name lower-cased, line ends removed (unfolding), each run of spaces and
 * tabs made one space, blanks at the end of the value and around the colon removed; then
 * "\r\n" if crlf. Appended to out. A field with no ':' gives its name part alone. */
void dkim_canon_header(const char *raw, size_t len, bool crlf, strbuf *out);

/* Relaxed body canonicalization (section 3.4.4) of body[0..len): on each line, runs of
 * spaces and tabs made one space and the ones at the end removed; empty lines at the end
 * removed; every line ends in CRLF (a last line without an end too). An empty body, or one
 * of empty lines only, gives nothing at all. The output goes to sink in pieces. */
typedef void (*dkim_canon_sink)(void *arg, const char *data, size_t n);
void dkim_canon_body(const char *body, size_t len, dkim_canon_sink sink, void *arg);
/* The same, appended to out. */
void dkim_canon_body_buf(const char *body, size_t len, strbuf *out);

#endif
