/* fuzz_webhook.c — fuzz target for what kiln reads of a webhook endpoint's answer
 * (mta/webhook_resp.h; curl parses the HTTP framing, status code and Retry-After, this is
 * the rest). The input's first byte is a repeat count; the rest is an answer as it comes
 * off the wire: its lines up to the empty line that ends the header section go through
 * webhook_resp_header as curl hands them over (each one `repeat` times, so the 64 KB header
 * limit is reached within libFuzzer's input sizes; interim 1xx answers and their empty
 * line are followed by the next answer's lines), the rest through webhook_resp_body in
 * chunks whose size the repeat count also sets.
 * Promises checked: a refusal comes only past the header limit and nothing is fed after
 * it (curl aborts); the status is 0 or 100..599; reason, body excerpt and error text hold
 * only printable ASCII within their limits, the body excerpt is a prefix (sanitized) of
 * the body and counts every byte; the error text names the status. Built as a libFuzzer
 * target by `make fuzz` (clang) and as a corpus + mutation replay in `make check` (gcc). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/webhook_resp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_webhook_printable(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max) abort();
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e) abort();
}

static void fuzz_webhook_check(const webhook_resp *r, const char *body, size_t body_fed)
{
    if (r->status != 0 && (r->status < 100 || r->status > 599)) abort();
    fuzz_webhook_printable(r->reason, WEBHOOK_RESP_REASON_KEEP);
    fuzz_webhook_printable(r->body, WEBHOOK_RESP_BODY_KEEP);
    if (r->body_total != body_fed || strlen(r->body) != r->body_len) abort();
    size_t want = body_fed < WEBHOOK_RESP_BODY_KEEP ? body_fed : WEBHOOK_RESP_BODY_KEEP;
    if (r->body_len != want) abort();
    for (size_t i = 0; i < r->body_len; i++) {     /* a sanitized prefix of the body */
        unsigned char b = (unsigned char)body[i];
        char c = r->body[i];
        if (b >= 0x20 && b < 0x7f ? c != (char)b : (b < 0x20 || b == 0x7f) ? c != ' ' : c != '?')
            abort();
    }
    long statuses[] = {r->status ? r->status : 500, 503};
    for (size_t i = 0; i < 2; i++) {
        char *e = webhook_resp_error(r, statuses[i]);
        char head[32];
        snprintf(head, sizeof head, "HTTP status %ld", statuses[i]);
        if (strncmp(e, head, strlen(head)) != 0) abort();
        fuzz_webhook_printable(e, 32 + WEBHOOK_RESP_REASON_KEEP + WEBHOOK_RESP_BODY_KEEP);
        free(e);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    size_t repeat = data[0] ? data[0] : 1;
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    webhook_resp r;
    webhook_resp_reset(&r);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        bool blank = len <= 2 && (p[0] == '\n' || (len == 2 && p[0] == '\r'));
        for (size_t i = 0; i < (blank ? 1 : repeat); i++) {
            if (webhook_resp_header(&r, p, len) < 0) {
                if (r.header_bytes <= WEBHOOK_RESP_MAX_HEADER_BYTES) abort();
                fuzz_webhook_check(&r, "", 0);
                return 0;       /* curl aborts the transfer: nothing more is fed */
            }
            if (r.header_bytes > WEBHOOK_RESP_MAX_HEADER_BYTES) abort();
        }
        p += len;
        if (blank && (r.status < 100 || r.status > 199)) break;   /* the final answer's body */
    }
    const char *body = p;
    size_t body_len = (size_t)(end - p), off = 0, chunk = repeat % 13 + 1;
    while (off < body_len) {
        size_t n = body_len - off < chunk ? body_len - off : chunk;
        webhook_resp_body(&r, body + off, n);
        off += n;
    }
    fuzz_webhook_check(&r, body, body_len);
    return 0;
}
