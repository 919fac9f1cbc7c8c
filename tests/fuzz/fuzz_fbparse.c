/* fuzz_fbparse.c — fuzz target for the feedback report parser (mta/fbparse.c): any bytes as
 * a message received at the bounce domain. Promises checked: fbparse_message returns the
 * kind it stores, always sets why, never crashes or leaks under the limits (the defaults,
 * and small ones so that every limit is reached on short inputs); a DSN has recipients,
 * each with an address and an action, and a bounce type exactly when the action is
 * "failed" (a subtype with it); an ARF report has a feedback type of the six SES knows; a
 * MALFORMED report carries nothing else. The input is split in two: its first byte picks
 * the envelope sender (null, unknown, ordinary) and the limits. Built for libFuzzer by
 * `make fuzz`, replayed over its corpus and mutations in `make check`. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mta/fbparse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check(const fbparse_report *r, fbparse_kind k)
{
    if (r->kind != k || !r->why) abort();
    if (k == FBPARSE_DSN) {
        if (r->nrcpts == 0 || !r->shape) abort();
        for (size_t i = 0; i < r->nrcpts; i++) {
            const fbparse_rcpt *c = &r->rcpts[i];
            if (!c->address || !c->action) abort();
            bool failed = strcmp(c->action, "failed") == 0;
            if (failed != (c->bounce_type != NULL)) abort();
            if ((c->bounce_type != NULL) != (c->bounce_subtype != NULL)) abort();
        }
    }
    if (k == FBPARSE_ARF) {
        static const char *const known[] = {"abuse", "auth-failure", "fraud", "not-spam",
                                            "other", "virus"};
        bool ok = false;
        for (size_t i = 0; i < 6; i++) ok |= r->feedback_type && !strcmp(r->feedback_type, known[i]);
        if (!ok) abort();
    }
    if (k == FBPARSE_MALFORMED && (r->nrcpts || r->shape || r->orig_message_id)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fbparse_init();
    unsigned sel = size ? data[0] : 0;
    fbparse_limits l;
    fbparse_default_limits(&l);
    if (sel & 4) {
        l.max_depth = 3;
        l.max_parts = 6;
        l.max_recipients = 2;
        l.max_field = 16;
        l.max_bytes = 4096;
    }
    static const char *const env[] = {"", NULL, "someone@example.org", "MAILER-DAEMON@x"};
    fbparse_report r;
    fbparse_kind k = fbparse_message((const char *)data, size, env[sel & 3],
                                     (sel & 8) ? NULL : &l, &r);
    fuzz_check(&r, k);
    fbparse_report_free(&r);
    return 0;
}
