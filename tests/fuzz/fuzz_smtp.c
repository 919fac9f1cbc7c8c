/* fuzz_smtp.c — fuzz target for the submission protocol's pure parsers: the input is a
 * client byte stream, split into lines by smtp_line_next exactly as smtp_server does
 * (command-line limit, over-long lines skipped), each line parsed as a command, MAIL/RCPT
 * arguments parsed as paths, AUTH arguments decoded as SASL PLAIN. Built as a libFuzzer
 * target by `make fuzz` (clang) and as a corpus + mutation replay in `make check` (gcc). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mta/auth.h"
#include "mta/smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    smtp_linereader lr;
    memset(&lr, 0, sizeof lr);
    size_t off = 0;
    for (int guard = 0; off < size && guard < 100000; guard++) {
        smtp_line line;
        size_t discard = 0;
        smtp_line_status st = smtp_line_next(&lr, buf + off, size - off, SMTP_COMMAND_LINE_MAX,
                                             &line, &discard);
        if (st == SMTP_LINE_MORE) {
            if (discard == 0) break;
            off += discard;
            continue;
        }
        off += line.consumed;
        if (line.flags & (SMTP_LINE_TOO_LONG | SMTP_LINE_NUL)) continue;
        smtp_cmd cmd;
        smtp_parse_command(line.text, line.len, &cmd);
        char *arg = strndup(cmd.arg, cmd.arg_len);
        if (!arg) abort();
        smtp_path path;
        char reply[SMTP_REPLY_MAX];
        if (cmd.verb == SMTP_CMD_MAIL) {
            if (smtp_parse_mail(arg, &path, reply) == 0 && path.addr[0] && !smtp_addr_valid(path.addr))
                abort();   /* a parsed sender must be a valid address */
        } else if (cmd.verb == SMTP_CMD_RCPT) {
            if (smtp_parse_rcpt(arg, &path, reply) == 0 && !smtp_addr_valid(path.addr))
                abort();
        } else if (cmd.verb == SMTP_CMD_AUTH || cmd.verb == SMTP_CMD_UNKNOWN) {
            char *user = NULL, *pass = NULL;
            if (auth_decode_plain(arg, &user, &pass) == 0) {
                free(user);
                free(pass);
            }
        } else if (cmd.verb == SMTP_CMD_EHLO || cmd.verb == SMTP_CMD_HELO) {
            (void)smtp_helo_valid(arg);
        }
        char *clean = smtp_sanitize(line.text, line.len, 200);
        free(clean);
        free(arg);
    }
    return 0;
}
