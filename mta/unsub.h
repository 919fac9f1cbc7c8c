/* unsub.h — the header fields a configuration set marked with `list_unsubscribe` and/or
 * `feedback_id` adds to every message it sends (README "One-click unsubscribe"):
 *
 *   List-Unsubscribe: <https://example.com/unsub?id=ID&r=a%40b.example>,
 *    <mailto:unsubscribe@example.com?subject=unsubscribe>
 *   List-Unsubscribe-Post: List-Unsubscribe=One-Click
 *   Feedback-ID: campaign:marketing:kiln
 *
 * (RFC 2369 List-Unsubscribe with the RFC 8058 one-click POST, and Gmail's Feedback-ID), and
 * their insertion into the message in place of any the submitter wrote. Pure: buffers in,
 * malloc'd buffers out; no I/O, no clock. Delivery applies it to the message as it will be
 * sent, right before DKIM signing, so that the signature covers these fields. */
#ifndef KILN_UNSUB_H
#define KILN_UNSUB_H

#include <stdbool.h>
#include <stddef.h>

#include "base/config.h"

/* Bytes of the List-Unsubscribe URL once its variables are filled in: its header line
 * ("List-Unsubscribe: <URL>,") stays within RFC 5322's 998. */
#define UNSUB_URL_MAX 960

/* True when SET adds header fields (it has list_unsubscribe or feedback_id). */
bool unsub_marked(const config_set *set);

/* The header fields SET adds to message MSG_ID (kiln's message ID) sent to RCPT, as text:
 * one field per line, each line ending in CRLF, in this order:
 *   List-Unsubscribe: <URL>[, <mailto:ADDRESS?subject=unsubscribe>]   (list_unsubscribe)
 *   List-Unsubscribe-Post: List-Unsubscribe=One-Click                 (list_unsubscribe)
 *   Feedback-ID: VALUE                                                 (feedback_id)
 * URL is set->unsub_url with {recipient} (RCPT), {message_id} (MSG_ID) and
 * {configuration_set} (set->name) filled in, every byte of each value outside RFC 3986's
 * unreserved characters (A-Z a-z 0-9 - . _ ~) percent-encoded (%40 for '@', %2B for '+').
 * A field longer than 78 columns is folded at its blanks (between the two URLs; never
 * inside one). RCPT may be NULL when the URL has no {recipient}
 * (config_set_per_recipient is false); it is then ignored.
 * Returns the text (malloc'd; "" when SET is not marked), or NULL and *err (malloc'd) when
 * the URL filled in would be longer than UNSUB_URL_MAX bytes or names {recipient} and RCPT
 * is NULL. */
char *unsub_fields(const config_set *set, const char *msg_id, const char *rcpt, char **err);

/* A new message (malloc'd, NUL-terminated, *out_len bytes): FIELDS (complete header fields,
 * each line ending in CRLF, as unsub_fields returns them) at the very top of MSG's header
 * section, and every field of MSG named like one of FIELDS removed with its continuation
 * lines (case-insensitive; kiln's own fields replace the submitter's). MSG is a message as
 * kiln spools it: lines ending in CRLF (a bare LF is read as a line end too, as
 * mta/message.c does, and kept as it is), the header section, an empty line, the body
 * (header only or body only are fine). The header section ends where message.c's does: at
 * the first line that is neither a field nor a continuation. When MSG opens with a line
 * that is not a field and not empty (a body without a header, or a stray continuation
 * line), an empty line follows FIELDS so that the line stays body. FIELDS "" returns a
 * copy of MSG. Removal never touches the body. FIELDS not ending in a line end is a broken
 * invariant (fatal). */
char *unsub_insert(const char *msg, size_t len, const char *fields, size_t *out_len);

/* Both at once: the message MSG_ID as SET sends it to RCPT. 1: *out (malloc'd, *out_len
 * bytes) is the message with SET's fields; 0: SET is not marked, the message goes as it is
 * (*out NULL); -1: unsub_fields failed, *err (malloc'd) says why. */
int unsub_apply(const config_set *set, const char *msg_id, const char *rcpt, const char *msg,
                size_t len, char **out, size_t *out_len, char **err);

#endif
