/* control_parse.h — the control protocol's requests as data (protocol in control.h), apart
 * from the socket (control.c) and from what the commands do (control_cmd.c): the framing of
 * a client's bytes into request lines, and one line into a command with checked arguments.
 * Pure: no I/O, no kiln state; the control fuzz target drives it as the socket does. */
#ifndef KILN_CONTROL_PARSE_H
#define KILN_CONTROL_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#define CONTROL_MAX_LINE (64 * 1024)   /* bytes of one request line */
#define CONTROL_MAX_ADDRESS 254        /* RFC 5321 path limit without the angle brackets */

typedef enum {
    CONTROL_LINE_MORE = 0,   /* no complete line yet: read more */
    CONTROL_LINE_OK,         /* a line: *len bytes (trailing CR, spaces and tabs cut; 0 for a
                                blank line, which is skipped), *used bytes to consume */
    CONTROL_LINE_TOO_LONG,   /* longer than CONTROL_MAX_LINE: answer the error, then close */
} control_line_status;

/* The next request line at the start of buf. eof: the client closed its side, so bytes
 * without a final newline are the last line. */
control_line_status control_parse_line(const char *buf, size_t n, bool eof, size_t *len,
                                       size_t *used);

typedef enum {
    CONTROL_CMD_STATUS = 0,
    CONTROL_CMD_QUOTA,
    CONTROL_CMD_STATS,
    CONTROL_CMD_SUPPRESSION_LIST,
    CONTROL_CMD_SUPPRESSION_ADD,
    CONTROL_CMD_SUPPRESSION_REMOVE,
    CONTROL_CMD_RELOAD,
    CONTROL_CMD_IPS,
    CONTROL_CMD_IP_WARMUP,
    CONTROL_CMD_IP_CHECK,
    CONTROL_CMD_ZONE_DOWN,
    CONTROL_CMD_ZONE_UP,
    CONTROL_CMD_QUEUE,
    CONTROL_CMD_QUEUE_EXPLAIN,
    CONTROL_CMD_IDENTITY_STATUS,
    CONTROL_CMD_DKIM_GENERATE,
    CONTROL_CMD_DKIM_ROTATE,
    CONTROL_CMD_REPUTATION,
    CONTROL_CMD_FORECAST,
    CONTROL_CMD_CLUSTER_STATUS,
} control_cmd_kind;

/* One request. On success: kind, name and the command's arguments; on error: error, and
 * what the log line names (cmd as sent, or ""; subject: the address, zone or id it was
 * about, or NULL). Strings are malloc'd (control_request_free), name is static. */
typedef struct control_request {
    control_cmd_kind kind;
    const char *name;        /* "status", "suppression.add", ... */
    char *address;           /* suppression.add/.remove: checked, lower-cased;
                                ip.warmup, ip.check: as given, not empty */
    const char *reason;      /* suppression.add: "BOUNCE" (the default) or "COMPLAINT";
                                suppression.list: the filter, or NULL for all (static) */
    int percent;             /* ip.warmup: 0..100 */
    char *zone;              /* zone.down/.up: not empty */
    char *domain;            /* queue: the filter, or NULL for all; identity.status: the
                                identity, or NULL for all; identity.dkim.*: the domain
                                (checked: a DNS name, lower-cased) */
    char *selector;          /* identity.dkim.generate: the selector asked for, or NULL */
    bool ed25519;            /* identity.dkim.generate: an Ed25519 key too */
    char *id;                /* queue.explain: not empty */
    char *set;               /* forecast: the configuration set, or NULL for every set */
    int days;                /* forecast: 1..FORECAST_MAX_DAYS (default FORECAST_DEFAULT_DAYS) */

    char *error;             /* one line, for {"ok": false, "error": ...} */
    char *cmd;               /* for the log: the command as sent ("" if none) */
    char *subject;           /* for the log: what a failed request was about, or NULL */
} control_request;

/* Parses one request line (len bytes, not NUL-terminated): 0 and *req filled, or -1 and
 * req->error (a JSON error, a bad shape, an unknown command, a missing or bad argument).
 * Arguments a command does not take are ignored. */
int control_parse_request(const char *line, size_t len, control_request *req);
void control_request_free(control_request *req);

/* NULL if addr looks like an address (one '@', non-empty parts, no spaces, controls or angle
 * brackets, at most CONTROL_MAX_ADDRESS bytes), else the reason (static text). */
const char *control_address_problem(const char *addr);

#endif
