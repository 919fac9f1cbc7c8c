/* fuzz_auth.c — fuzz target for everything AUTH decodes from a client: the input is a byte
 * stream split into lines as smtp_server does for commands and SASL responses (the AUTH
 * line limit); an "AUTH ..." line goes through auth_split_command (mechanism and initial
 * response, "=" for empty), every other line is taken as a SASL response and decoded as
 * PLAIN (authzid NUL authcid NUL passwd), as one AUTH LOGIN answer and as raw base64.
 * Promises checked: a decoded PLAIN user and password are non-empty, a LOGIN answer is
 * non-empty, base64 decoding round-trips (re-encoding has the input's length and decodes
 * to the same bytes). Built as a libFuzzer target by `make fuzz` (clang) and as a corpus +
 * mutation replay in `make check` (gcc). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mta/auth.h"
#include "mta/smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_auth_response(const char *text)
{
    char *user = NULL, *pass = NULL;
    if (auth_decode_plain(text, &user, &pass) == 0) {
        if (!*user || !*pass) abort();
        free(user);
        free(pass);
    }
    char *login = auth_decode_login(text);
    if (login) {
        if (!*login) abort();
        free(login);
    }
    size_t n = 0;
    char *raw = auth_b64_decode(text, &n);
    if (raw) {
        /* Round trip: the canonical encoding decodes to the same bytes and has the input's
         * length (unused low bits of the last quad are not checked, as in most decoders). */
        char *again = auth_b64_encode(raw, n);
        size_t m = 0;
        char *back = auth_b64_decode(again, &m);
        if (!back || m != n || memcmp(back, raw, n) != 0 || strlen(again) != strlen(text)) abort();
        free(back);
        free(again);
        free(raw);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    smtp_linereader lr;
    memset(&lr, 0, sizeof lr);
    size_t off = 0;
    for (int guard = 0; off < size && guard < 100000; guard++) {
        smtp_line line;
        size_t discard = 0;
        smtp_line_status st = smtp_line_next(&lr, buf + off, size - off, SMTP_AUTH_LINE_MAX,
                                             &line, &discard);
        if (st == SMTP_LINE_MORE) {
            if (discard == 0) break;
            off += discard;
            continue;
        }
        off += line.consumed;
        if (line.flags & (SMTP_LINE_TOO_LONG | SMTP_LINE_NUL)) continue;
        char *text = strndup(line.text, line.len);
        if (!text) abort();
        smtp_cmd cmd;
        smtp_parse_command(text, line.len, &cmd);
        if (cmd.verb == SMTP_CMD_AUTH) {
            char *arg = strndup(cmd.arg, cmd.arg_len);
            if (!arg) abort();
            char *mech = NULL, *initial = NULL;
            if (auth_split_command(arg, &mech, &initial) == 0) {
                if (strchr(mech, ' ')) abort();
                if (initial) {
                    if (strchr(initial, ' ')) abort();
                    fuzz_auth_response(initial);
                }
                free(mech);
                free(initial);
            }
            free(arg);
        } else {
            fuzz_auth_response(text);
        }
        free(text);
    }
    return 0;
}
