/* identity_int.h — what identity_eval.c, identity_spf.c and identity_check.c share and
 * nobody else needs: starting a record, what a failed or empty lookup says, the "found"
 * text of TXT records. */
#ifndef KILN_IDENTITY_INT_H
#define KILN_IDENTITY_INT_H

#include "base/util.h"
#include "mta/identity_check.h"

/* Zeroes rec and sets its kind, name (copied) and type. */
void identity_rec_start(identity_record *rec, identity_rec_kind kind, const char *name, const char *type);
/* rec's status and reason for an answer without records of the type (NXDOMAIN, NODATA,
 * TEMPFAIL): true if it was one (rec is then MISSING or TEMPFAIL, reason set). what: the
 * record kind in words ("DKIM key record"). */
bool identity_rec_no_records(identity_record *rec, const identity_answer *a, const char *what);
/* s as shown in "found": at most IDENTITY_FOUND_MAX bytes (head "..." tail). */
void identity_found_append(strbuf *sb, const char *s);
/* The TXT records as "found" text: each cut to IDENTITY_FOUND_MAX (head "..." tail),
 * joined by " | "; NULL when n is 0. */
char *identity_found_txt(const char *const *txt, size_t n);
/* Case-insensitive: s starts with the word w (followed by end, space or tab). */
bool identity_starts_word(const char *s, const char *w);

#endif
