/* message.h — RFC 5322 header-section parsing of a received message (pure, on buffers):
 * unfolded header fields, the addresses a field names, and header removal/insertion. */
#ifndef KILN_MESSAGE_H
#define KILN_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct msg_header {
    char *name;              /* as written */
    char *value;             /* unfolded (CRLF + WSP -> WSP), leading blanks trimmed, no CRLF */
} msg_header;

/* Limits on the header section a client may send (item 5 of the hardening issue; Postfix's
 * header_size_limit is 100KB per field, its hop limit 50 Received: fields). */
#define MESSAGE_MAX_FIELDS 1000               /* header fields */
#define MESSAGE_MAX_HEADER_BYTES (1024 * 1024) /* bytes of the header section */
#define MESSAGE_MAX_HOPS 50                   /* Received: fields; this many is a loop */

enum {
    MSG_HDR_TOO_MANY_FIELDS = 1,  /* more than MESSAGE_MAX_FIELDS: parsing stopped there */
    MSG_HDR_TOO_LARGE = 2,        /* header section over MESSAGE_MAX_HEADER_BYTES: stopped */
};

typedef struct msg_headers {
    msg_header *h;
    size_t n;
    size_t header_len;       /* bytes of the header section including the empty line (or all of data if none) */
    bool ended_by_body_line; /* the section ended at a line that is neither a field, a
                                continuation nor empty: data[header_len] starts that line and
                                no empty line separates it (a next hop may read it and the
                                lines after it as header fields) */
    unsigned over_limit;     /* MSG_HDR_* */
    size_t nreceived;        /* Received: fields */
    size_t nfrom;            /* From: fields */
} msg_headers;

/* Parses the header section of data (CRLF lines). Lines without a colon end the header
 * section as if it were body (ended_by_body_line is set). Parsing stops at the limits above
 * (over_limit says which), so the work and memory are bounded whatever data holds.
 * Always succeeds; returns 0. */
int message_parse_headers(const char *data, size_t len, msg_headers *out);
void message_headers_free(msg_headers *hs);
/* First field with this name (case-insensitive), or NULL. */
const char *message_header_get(const msg_headers *hs, const char *name);

/* Addresses (addr-spec, without brackets or display names) in an address-list field value
 * such as "\"Ann\" <ann@example.test>, bob@example.test". Returns the count; *out is a
 * malloc'd array of malloc'd strings (free with message_addresses_free). Groups and comments
 * are handled; a value with no address yields 0. */
size_t message_parse_addresses(const char *value, char ***out);
void message_addresses_free(char **addrs, size_t n);

/* Copy of data with every field named `name` removed (case-insensitive, with its folded
 * continuation lines). *out_len receives the new length. */
char *message_remove_header(const char *data, size_t len, const char *name, size_t *out_len);
/* The same in place: removes every field named `name` from the header section of
 * data[0..len) by moving bytes down (no allocation); returns the new length. */
size_t message_strip_header(char *data, size_t len, const char *name);

#endif
