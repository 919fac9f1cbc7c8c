/* fuzz_control.c — fuzz target for the control protocol's requests: the input is what a
 * client writes to the control socket, read as mta/control.c does (bytes arrive in pieces;
 * after each, every complete line is framed with control_parse_line and decoded with
 * control_parse_request; at the end the client's EOF makes the rest a last line; a line over
 * 64 KB ends the connection), and each answer is built as control.c builds it
 * ({"ok": false, "error": ...} through control_jstr) and encoded as one JSON line.
 * Checks, whatever the bytes: a request parses into a known command whose arguments keep
 * control_parse.h's promises (a checked, lower-case address; a percent in 0..100; non-empty
 * zone and id) or into an error of one or more characters; the answer line encodes and holds
 * no raw newline; the framing consumes at least one byte per line and never more than it has.
 * Built as a libFuzzer target by `make fuzz` (clang) and as a corpus + mutation replay in
 * `make check` (gcc). */
#include <ctype.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/control_internal.h"
#include "mta/control_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_control_fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_control: %s: %s\n", what, detail ? detail : "");
    abort();
}

/* The answer line control.c would send for an error. */
static void fuzz_control_answer_error(const char *error)
{
    json_t *msg = json_object();
    json_object_set_new(msg, "ok", json_false());
    json_object_set_new(msg, "error", control_jstr(error));
    char *text = json_dumps(msg, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) fuzz_control_fail("an error answer does not encode", error);
    if (strchr(text, '\n')) fuzz_control_fail("an answer line holds a newline", text);
    if (!json_is_string(json_object_get(msg, "error")))
        fuzz_control_fail("the error is not a JSON string", error);
    free(text);
    json_decref(msg);
}

static void fuzz_control_check(const control_request *req)
{
    const char *name = req->name ? req->name : "";
    if (req->error) fuzz_control_fail("a parsed request with an error", req->error);
    switch (req->kind) {
    case CONTROL_CMD_SUPPRESSION_ADD:
    case CONTROL_CMD_SUPPRESSION_REMOVE:
        if (!req->address || control_address_problem(req->address))
            fuzz_control_fail("an unchecked address", req->address);
        for (const char *p = req->address; *p; p++)
            if (isupper((unsigned char)*p)) fuzz_control_fail("an address not lower-cased", req->address);
        if (req->kind == CONTROL_CMD_SUPPRESSION_ADD && !req->reason)
            fuzz_control_fail("suppression.add without a reason", name);
        break;
    case CONTROL_CMD_IP_WARMUP:
        if (!req->address || !*req->address) fuzz_control_fail("ip.warmup without an address", name);
        if (req->percent < 0 || req->percent > 100) fuzz_control_fail("percent out of range", name);
        break;
    case CONTROL_CMD_ZONE_DOWN:
    case CONTROL_CMD_ZONE_UP:
        if (!req->zone || !*req->zone) fuzz_control_fail("a zone command without a zone", name);
        break;
    case CONTROL_CMD_QUEUE_EXPLAIN:
        if (!req->id || !*req->id) fuzz_control_fail("queue.explain without an id", name);
        break;
    default:
        break;
    }
    if (req->reason && strcmp(req->reason, "BOUNCE") != 0 && strcmp(req->reason, "COMPLAINT") != 0)
        fuzz_control_fail("a reason other than BOUNCE or COMPLAINT", req->reason);
    if (!req->name || strcmp(req->cmd, req->name) != 0)
        fuzz_control_fail("the command's name differs from what was sent", req->cmd);
}

/* Answers every complete line of in (control_client_process); false once the client is
 * to be closed (a line too long). */
static bool fuzz_control_process(strbuf *in, bool eof)
{
    for (;;) {
        size_t len = 0, used = 0;
        control_line_status st = control_parse_line(in->buf, in->len, eof, &len, &used);
        if (st == CONTROL_LINE_MORE) return true;
        if (st == CONTROL_LINE_TOO_LONG) {
            fuzz_control_answer_error("request too long (the limit is 64 KB per line)");
            return false;
        }
        if (used == 0 || used > in->len || len > used) fuzz_control_fail("bad framing", NULL);
        if (len > 0) {
            char *line = util_strndup(in->buf, len);   /* exact size: ASan sees overreads */
            control_request req;
            if (control_parse_request(line, len, &req) == 0) {
                fuzz_control_check(&req);
            } else {
                if (!req.error || !req.error[0]) fuzz_control_fail("an error without text", line);
                if (!req.cmd) fuzz_control_fail("an error without the command for the log", line);
                fuzz_control_answer_error(req.error);
            }
            control_request_free(&req);
            free(line);
        }
        strbuf_consume(in, used);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Pieces of 1..4096 bytes, as recv() may deliver them (the size from the first byte). */
    size_t piece = size ? 1 + (size_t)data[0] * 16 : 1;
    strbuf in;
    strbuf_init(&in);
    bool open = true;
    for (size_t off = 0; open && off < size;) {
        size_t n = size - off < piece ? size - off : piece;
        strbuf_append(&in, data + off, n);
        off += n;
        open = fuzz_control_process(&in, false);
    }
    if (open) fuzz_control_process(&in, true);
    strbuf_free(&in);
    return 0;
}
