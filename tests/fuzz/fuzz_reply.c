/* fuzz_reply.c — fuzz target for the delivery side's SMTP reply parser: the input is what a
 * remote server sends, read as mta/smtp_client.c's read loop does (smtp_client_parse_reply
 * on the buffered bytes, one complete reply at a time, stopping at "need more" or "not
 * SMTP"), and every reply then goes where kilnd sends it: the EHLO extension reader, the
 * retry classification of scheduler/retry.c and the JSON text of the events
 * (store/event.c's event_jstr, smtpResponse / diagnosticCode).
 * Checks, whatever the bytes: the allocation-free framing (smtp_client_scan_reply, which
 * kiln-loadgen uses) agrees with the parser; a reply's code is 100..599, its enhanced code
 * is empty or of the reply's class, its one-line form starts with the code; and the same
 * bytes arriving in small pieces (as from a socket) give the same replies as arriving at
 * once. Built as a libFuzzer target by `make fuzz` (clang) and as a corpus + mutation
 * replay in `make check` (gcc). */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/smtp_client.h"
#include "scheduler/retry.h"
#include "store/event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_REPLY_MAX 256   /* replies compared per input */

static void fuzz_reply_fail(const char *what, const smtp_client_reply *r)
{
    fprintf(stderr, "fuzz_reply: %s (code %d, line \"%s\")\n", what, r ? r->code : 0,
            r && r->line ? r->line : "");
    abort();
}

/* What kilnd does with one reply after parsing it; checks the parser's promises. */
static void fuzz_reply_use(const smtp_client_reply *r)
{
    if (r->code < 100 || r->code > 599) fuzz_reply_fail("code out of range", r);
    if (!r->text || !r->line) fuzz_reply_fail("reply without text or line", r);
    if (r->enhanced[0] && r->enhanced[0] - '0' != r->code / 100)
        fuzz_reply_fail("enhanced code of another class", r);
    char code[8];
    snprintf(code, sizeof code, "%d", r->code);
    if (strncmp(r->line, code, 3) != 0) fuzz_reply_fail("line does not start with the code", r);

    smtp_client_caps caps;
    smtp_client_parse_ehlo(r, &caps);
    if (caps.size_max < 0) fuzz_reply_fail("negative SIZE limit", r);

    retry_class cls;
    retry_verdict v = retry_classify_reply(r->code, r->enhanced, r->text, &cls);
    if (v != RETRY_DELIVERED && v != RETRY_DEFER && v != RETRY_BOUNCE)
        fuzz_reply_fail("unknown verdict", r);
    if ((v == RETRY_BOUNCE) != (cls.bounce_type != NULL)) fuzz_reply_fail("bounce type", r);
    if ((v == RETRY_DEFER) != (cls.delay_type != NULL)) fuzz_reply_fail("delay type", r);
    if (memchr(cls.status, '\0', sizeof cls.status) == NULL) fuzz_reply_fail("status", r);

    /* smtpResponse / diagnosticCode of the events */
    json_t *o = json_object();
    if (json_object_set_new(o, "smtpResponse", event_jstr(r->line)) != 0 ||
        json_object_set_new(o, "status", event_jstr(cls.status)) != 0)
        fuzz_reply_fail("reply not encodable as JSON", r);
    char *text = json_dumps(o, JSON_COMPACT);
    if (!text) fuzz_reply_fail("event JSON not encodable", r);
    free(text);
    json_decref(o);
}

typedef struct fuzz_reply_seen {
    int code;
    size_t used;
    char *line;
} fuzz_reply_seen;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    fuzz_reply_seen seen[FUZZ_REPLY_MAX];
    size_t nseen = 0;
    int last = 0;   /* the parser's last answer: 0 need more, -1 not SMTP */

    /* All bytes at once. */
    size_t off = 0;
    while (nseen < FUZZ_REPLY_MAX) {
        smtp_client_reply r;
        size_t used = 0, sused = 0;
        int code = 0;
        int rc = smtp_client_parse_reply(buf + off, size - off, &r, &used);
        int src = smtp_client_scan_reply(buf + off, size - off, &code, &sused);
        if (rc != src) fuzz_reply_fail("scan and parse disagree", NULL);
        if (rc <= 0) {
            last = rc;
            break;
        }
        if (code != r.code || sused != used) fuzz_reply_fail("scan and parse disagree", &r);
        if (used == 0 || used > size - off) fuzz_reply_fail("bad length consumed", &r);
        fuzz_reply_use(&r);
        seen[nseen].code = r.code;
        seen[nseen].used = used;
        seen[nseen].line = util_strdup(r.line);
        nseen++;
        off += used;
        smtp_client_reply_free(&r);
    }

    /* The same bytes in pieces of 1..13 bytes into a growing buffer, as reads deliver them. */
    size_t piece = size ? 1 + data[0] % 13 : 1;
    strbuf in;
    strbuf_init(&in);
    size_t fed = 0, got = 0;
    int final = 0;
    bool stopped = false;
    while (!stopped && got < nseen) {
        if (fed < size) {
            size_t n = size - fed < piece ? size - fed : piece;
            strbuf_append(&in, buf + fed, n);
            fed += n;
        }
        for (;;) {
            smtp_client_reply r;
            size_t used = 0;
            int rc = smtp_client_parse_reply(in.buf, in.len, &r, &used);
            if (rc == 0) {
                if (fed == size) {
                    final = 0;
                    stopped = true;
                }
                break;
            }
            if (rc < 0) {
                final = -1;
                stopped = true;
                break;
            }
            if (got >= nseen || r.code != seen[got].code || used != seen[got].used ||
                strcmp(r.line, seen[got].line) != 0)
                fuzz_reply_fail("a reply read in pieces differs from the same bytes at once", &r);
            got++;
            strbuf_consume(&in, used);
            smtp_client_reply_free(&r);
            if (got == nseen) break;
        }
    }
    if (got != nseen) fuzz_reply_fail("fewer replies read in pieces", NULL);
    if (got == nseen && nseen < FUZZ_REPLY_MAX && stopped && final != last)
        fuzz_reply_fail("pieces end differently (need more / not SMTP)", NULL);
    strbuf_free(&in);
    for (size_t i = 0; i < nseen; i++) free(seen[i].line);
    return 0;
}
