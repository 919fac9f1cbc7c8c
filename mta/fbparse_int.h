/* fbparse_int.h — what the files of the feedback parser share (mta/fbparse.c: the GMime
 * walk and the decision; mta/fbparse_fields.c: RFC 822-style field blocks, the report
 * fields, the quoted original; mta/fbparse_shapes.c: non-standard bounces and automatic
 * replies; mta/fbparse_classify.c: the SES bounce classification). Not a public API: only
 * those files include it. Nothing here knows GMime: the GMime side converts what it reads
 * into blocks of (name, value) fields. */
#ifndef KILN_MTA_FBPARSE_INT_H
#define KILN_MTA_FBPARSE_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "mta/fbparse.h"

/* One header-style field: name as given, value unfolded and trimmed (at most max_field
 * bytes). */
typedef struct fbparse_field {
    char *name;
    char *value;
} fbparse_field;

/* A block of fields (a header section, or one block of a delivery-status body). */
typedef struct fbparse_block {
    fbparse_field *f;
    size_t n, cap;
} fbparse_block;

void fbparse_block_add(fbparse_block *b, const char *name, const char *value, size_t vlen,
                       size_t max_field);
void fbparse_block_free(fbparse_block *b);
/* The first field called name (case-insensitive), or NULL. */
const char *fbparse_block_get(const fbparse_block *b, const char *name);

/* Splits text (len bytes, CRLF or LF) into blocks of fields separated by blank lines,
 * unfolding continuation lines; lines without a colon are skipped. Stops after max_blocks
 * blocks: *over is set when more followed. Returns the number of blocks in *out (malloc'd
 * array; free each with fbparse_block_free, then the array). */
size_t fbparse_blocks(const char *text, size_t len, size_t max_field, size_t max_blocks,
                      fbparse_block **out, bool *over);

/* A message/delivery-status body into out (reporting_mta, arrival_date, rcpts): NULL, or
 * the MALFORMED reason (malloc'd). */
char *fbparse_dsn_fields(const char *text, size_t len, const fbparse_limits *l,
                         fbparse_report *out);
/* A message/feedback-report body into out (feedback_type ... source_ip): NULL, or the
 * MALFORMED reason (malloc'd). */
char *fbparse_arf_fields(const char *text, size_t len, const fbparse_limits *l,
                         fbparse_report *out);
/* The quoted original's header fields into out->orig_* (fields already set are kept). */
void fbparse_orig_headers(const fbparse_block *h, fbparse_report *out);
/* The header block that follows a marker such as "------ This is a copy of the message"
 * in a non-standard bounce's text, into out->orig_*; true when one was found. */
bool fbparse_orig_from_text(const char *text, size_t len, size_t max_field,
                            fbparse_report *out);

/* "rfc822; U@Example.TEST" -> "U@example.test" (type stripped, brackets stripped, domain
 * lower-cased); malloc'd. */
char *fbparse_address(const char *v);
/* Appends a recipient to out->rcpts (strings copied; diag may be NULL); classified when
 * action is "failed". */
void fbparse_add_rcpt(fbparse_report *out, const char *address, const char *action,
                      const char *status, const char *diag, const char *remote_mta);
/* The first enhanced status code (2/4/5.x.y) in text, into buf (at least 16 bytes); false
 * if none. */
bool fbparse_find_status(const char *text, char buf[16]);
/* Case-insensitive substring search (NULL-safe). */
bool fbparse_contains_ci(const char *hay, const char *needle);

/* Non-standard bounces (Exim, qmail, Yahoo): top is the message's header, body its first
 * text part (decoded; may be NULL). True and out filled (kind DSN, shape, why, rcpts) when
 * the shape is recognised; *malformed set (a reason, malloc'd) when it is recognised but
 * breaks a limit. */
bool fbparse_nonstandard(const fbparse_block *top, const char *body, size_t len,
                         const fbparse_limits *l, fbparse_report *out, char **malformed);
/* An automatic reply: the reason (malloc'd, e.g. "out-of-office reply (Auto-Submitted:
 * auto-replied)"), or NULL. */
char *fbparse_autoreply(const fbparse_block *top, const char *body, size_t len);

#endif
