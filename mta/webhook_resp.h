/* webhook_resp.h — what kiln reads from a webhook endpoint's answer itself. curl parses the
 * HTTP framing and gives the status code and Retry-After (CURLINFO_RESPONSE_CODE,
 * CURLINFO_RETRY_AFTER); this module keeps, for the error a person reads in the log and in
 * `kilnctl status`, the status line's reason phrase and the start of the body, and bounds
 * the header lines of an answer. Pure: it works on the header lines and body bytes curl
 * hands over (CURLOPT_HEADERFUNCTION, CURLOPT_WRITEFUNCTION); fuzzed by
 * tests/fuzz/fuzz_webhook.c.
 *
 * Limits: the header lines of one answer (interim 1xx answers each start afresh) may hold
 * at most WEBHOOK_RESP_MAX_HEADER_BYTES, beyond that webhook_resp_header refuses (the
 * transfer is aborted and counts as a failure); a reason phrase keeps at most 64 bytes and
 * the body at most WEBHOOK_RESP_BODY_KEEP bytes (the rest is read and thrown away). Of the
 * kept bytes, control
 * characters become ' ' and other bytes that are not printable ASCII '?', so the text is
 * safe in a log line and a terminal. */
#ifndef KILN_WEBHOOK_RESP_H
#define KILN_WEBHOOK_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WEBHOOK_RESP_MAX_HEADER_BYTES (64u << 10)
#define WEBHOOK_RESP_BODY_KEEP 200
#define WEBHOOK_RESP_REASON_KEEP 64

typedef struct webhook_resp {
    int status;                 /* from the last status line: 100..599, 0 = none yet */
    char reason[WEBHOOK_RESP_REASON_KEEP + 1];
    size_t header_bytes;        /* of the last answer */
    char body[WEBHOOK_RESP_BODY_KEEP + 1];
    size_t body_len;            /* bytes kept in body */
    uint64_t body_total;        /* bytes of body seen */
} webhook_resp;

void webhook_resp_reset(webhook_resp *r);
/* One header line as curl delivers it (CRLF included, not NUL-terminated): a status line
 * "HTTP/x[.y] NNN reason" starts a new answer (after an interim 1xx); any other line is
 * counted. 0, or -1 when the answer's header lines pass WEBHOOK_RESP_MAX_HEADER_BYTES. */
int webhook_resp_header(webhook_resp *r, const char *line, size_t len);
/* Body bytes: the first WEBHOOK_RESP_BODY_KEEP are kept (sanitized), the rest counted. */
void webhook_resp_body(webhook_resp *r, const char *data, size_t len);
/* "HTTP status 503 (Service Unavailable): <the kept body, blanks folded>" (malloc'd); the
 * reason only when the last status line had this status. */
char *webhook_resp_error(const webhook_resp *r, long status);

#endif
