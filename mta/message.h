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

typedef struct msg_headers {
    msg_header *h;
    size_t n;
    size_t header_len;       /* bytes of the header section including the empty line (or all of data if none) */
} msg_headers;

/* Parses the header section of data (CRLF lines). Lines without a colon end the header
 * section as if it were body. Always succeeds; returns 0. */
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

#endif
