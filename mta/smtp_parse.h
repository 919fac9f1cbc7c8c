/* smtp_parse.h — the pure, buffer-level parts of the SMTP submission protocol (RFC 5321,
 * 1869, 6152, 4954): splitting the input stream into lines (with the checks that defend
 * against SMTP smuggling and oversized input), command verbs and arguments, the MAIL FROM /
 * RCPT TO paths and their parameters, address syntax, and reply-line construction.
 * No sockets, no state beyond what the caller passes in: smtp_server.c drives it and
 * tests/unit/test_smtp_parse.c checks it table by table. */
#ifndef KILN_SMTP_PARSE_H
#define KILN_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/util.h"

/* RFC 5321 4.5.3.1: command lines up to 512 octets including CRLF, text lines up to 1000
 * (998 + CRLF); RFC 4954 4: AUTH command and response lines up to 12288 octets. */
#define SMTP_COMMAND_LINE_MAX 512
#define SMTP_TEXT_LINE_MAX 1000
#define SMTP_AUTH_LINE_MAX 12288
/* RFC 5321 4.5.3.1.3: a path is at most 256 octets including the angle brackets. */
#define SMTP_ADDR_MAX 254
#define SMTP_LOCAL_MAX 64
#define SMTP_DOMAIN_MAX 255

/* ---- line reader ---- */

enum {
    SMTP_LINE_BARE_LF = 1,   /* ended by LF without the CR before it */
    SMTP_LINE_NUL = 2,       /* contains a NUL byte */
    SMTP_LINE_TOO_LONG = 4,  /* longer than the limit: its text was discarded */
    SMTP_LINE_BARE_CR = 8,   /* contains a CR that is not the one before its LF (a CR
                                split from its LF across reads is still a CRLF: lines are
                                only reported once their LF has arrived) */
};

typedef struct smtp_line {
    const char *text;        /* the line without its CRLF/LF (points into the buffer; not
                                NUL-terminated; may contain NUL); empty when TOO_LONG */
    size_t len;
    size_t consumed;         /* bytes of the buffer this line (and its terminator) used */
    unsigned flags;          /* SMTP_LINE_* */
} smtp_line;

/* State kept between calls: only used while an over-long line is being skipped.
 * Zero-initialise it. */
typedef struct smtp_linereader {
    bool skipping;           /* inside an over-long line: discarding up to its LF */
    bool last_cr;            /* the last discarded byte was CR */
} smtp_linereader;

typedef enum {
    SMTP_LINE_MORE = 0,      /* no complete line; *discard bytes at the front may be dropped */
    SMTP_LINE_READY = 1,     /* *out holds the next line */
} smtp_line_status;

/* Looks for the next line at the front of buf[0..len). max is the longest line accepted,
 * counted with its CRLF (SMTP_COMMAND_LINE_MAX, SMTP_TEXT_LINE_MAX, ...). A line is ended by
 * LF; the CR before it is part of the terminator (a missing one sets SMTP_LINE_BARE_LF).
 * A line longer than max is reported once, when its LF arrives, with SMTP_LINE_TOO_LONG;
 * while it is still arriving, MORE is returned with *discard set to the bytes that can be
 * dropped, so a client cannot make the caller buffer more than max bytes per line.
 * Callers process lines at increasing offsets and drop what they used at the end. */
smtp_line_status smtp_line_next(smtp_linereader *lr, const char *buf, size_t len, size_t max,
                                smtp_line *out, size_t *discard);

/* ---- commands ---- */

typedef enum {
    SMTP_CMD_UNKNOWN = 0,
    SMTP_CMD_HELO,
    SMTP_CMD_EHLO,
    SMTP_CMD_MAIL,
    SMTP_CMD_RCPT,
    SMTP_CMD_DATA,
    SMTP_CMD_RSET,
    SMTP_CMD_NOOP,
    SMTP_CMD_QUIT,
    SMTP_CMD_VRFY,
    SMTP_CMD_EXPN,
    SMTP_CMD_HELP,
    SMTP_CMD_STARTTLS,
    SMTP_CMD_AUTH,
} smtp_verb;

typedef struct smtp_cmd {
    smtp_verb verb;
    const char *arg;         /* text after the verb and its spaces, trailing blanks removed
                                (points into the line; "" if none) */
    size_t arg_len;
} smtp_cmd;

/* Splits a command line (without CRLF) into verb (case-insensitive; it must be followed by
 * a space or the end of the line) and argument. Unknown verbs give SMTP_CMD_UNKNOWN. */
void smtp_parse_command(const char *line, size_t len, smtp_cmd *out);
const char *smtp_verb_name(smtp_verb v);

/* ---- MAIL FROM / RCPT TO ---- */

typedef enum { SMTP_BODY_NONE = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME } smtp_body;

typedef struct smtp_path {
    char addr[SMTP_ADDR_MAX + 1];   /* without brackets and source route; "" for <> */
    bool has_size;
    int64_t size;                   /* SIZE=n (RFC 1869) */
    smtp_body body;                 /* BODY= (RFC 6152) */
} smtp_path;

#define SMTP_REPLY_MAX 160

/* Parse the argument of MAIL ("FROM:<addr> [SP params]") or RCPT ("TO:<addr>").
 * Returns 0, or -1 with the reply line (no CRLF) in reply[SMTP_REPLY_MAX]:
 *   "501 5.5.4 Syntax: MAIL FROM:<address>"   (missing FROM:, brackets, junk)
 *   "501 5.5.4 Syntax: RCPT TO:<address>"
 *   "553 5.1.7 Bad sender address syntax"     (address fails smtp_addr_valid)
 *   "553 5.1.3 Bad recipient address syntax"  (also <> as a recipient)
 *   "501 5.5.4 Bad SIZE parameter" / "501 5.5.4 Bad BODY parameter (7BIT or 8BITMIME)"
 *   "501 5.5.4 Duplicate parameter: NAME"
 *   "555 5.5.4 Unsupported parameter: NAME"   (any other ESMTP parameter)
 * MAIL accepts SIZE=, BODY= and AUTH= (RFC 4954 5; its value is checked as xtext and
 * ignored); RCPT accepts no parameter. "FROM: <a>" with spaces after the colon is
 * tolerated, as most servers do. */
int smtp_parse_mail(const char *arg, smtp_path *out, char reply[SMTP_REPLY_MAX]);
int smtp_parse_rcpt(const char *arg, smtp_path *out, char reply[SMTP_REPLY_MAX]);

/* local@domain: local is a dot-atom or a quoted string (printable ASCII, quoted pairs),
 * at most 64 octets; domain is dot-separated LDH labels (1..63 octets, no leading or
 * trailing hyphen, at most 255 octets) or an address literal [1.2.3.4] / [IPv6:...].
 * No spaces, controls or 8-bit bytes (SMTPUTF8 is not offered). */
bool smtp_addr_valid(const char *addr);

/* EHLO/HELO argument: 1..255 printable ASCII bytes without spaces. Deliberately lenient
 * (like Postfix's default): clients send bare host names, NetBIOS names, underscores. */
bool smtp_helo_valid(const char *arg);

/* ---- replies ---- */

/* Appends "line\r\n". */
void smtp_reply_line(strbuf *out, const char *line);
/* Appends a printf-formatted reply line and its CRLF. */
void smtp_reply_printf(strbuf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends a multi-line reply: "CODE-l0\r\n", ..., "CODE lN\r\n". n >= 1. */
void smtp_reply_multi(strbuf *out, int code, const char *const *lines, size_t n);
/* Copy of s with controls and non-ASCII bytes replaced by '?', at most max bytes (for
 * echoing client-supplied text in a reply or a log). Malloc'd. */
char *smtp_sanitize(const char *s, size_t len, size_t max);

#endif
