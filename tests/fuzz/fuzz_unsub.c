/* fuzz_unsub.c — fuzz target for the one-click unsubscribe fields of a marked set
 * (mta/unsub.c). Input: a message (whatever a submitter could make kiln spool, and worse),
 * optionally preceded by a recipient address and a NUL byte. The recipient fills the
 * {recipient} of a List-Unsubscribe URL; the fields go into the message in place of the
 * submitter's. Promises checked: the fields are CRLF lines of at most 998 bytes, folded
 * only with a leading blank, three fields, the URL of unreserved characters, '%' escapes and
 * the template's own characters (nothing of the recipient can close the angle brackets or
 * start a line), or an error when the filled-in URL would pass UNSUB_URL_MAX; the message
 * with them starts with them, grows by at most the fields and an empty line, keeps the
 * bytes after the header section as they were, and as mta/message.c reads it has exactly
 * one List-Unsubscribe, List-Unsubscribe-Post and Feedback-ID; a set with a feedback_id
 * only leaves the submitter's List-Unsubscribe fields as they were. Built for libFuzzer by
 * `make fuzz`, replayed over its corpus and mutations in `make check`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"
#include "mta/message.h"
#include "mta/unsub.h"

#define FUZZ_RCPT_MAX 300

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t fuzz_count(const msg_headers *hs, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < hs->n; i++) n += strcasecmp(hs->h[i].name, name) == 0;
    return n;
}

/* The fields text: CRLF lines, at most 998 bytes, continuations start with a blank, three
 * fields; the URL (between the first '<' and '>') of URL characters only. */
static void fuzz_check_fields(const char *f)
{
    size_t nfields = 0;
    for (const char *p = f; *p;) {
        const char *e = strstr(p, "\r\n");
        if (!e || e - p > 998) abort();
        for (const char *c = p; c < e; c++)
            if (*c == '\r' || *c == '\n') abort();
        if (*p == ' ') {
            if (p == f) abort();
        } else {
            nfields++;
        }
        p = e + 2;
    }
    if (nfields != 3) abort();
    const char *lt = strchr(f, '<'), *gt = lt ? strchr(lt, '>') : NULL;
    if (!lt || !gt) abort();
    for (const char *c = lt + 1; c < gt; c++) {
        unsigned char u = (unsigned char)*c;
        if (u <= ' ' || u >= 0x7f || strchr("<>\"{}|\\^`", u)) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char url[] = "https://unsub.example/u/{configuration_set}?m={message_id}&r={recipient}";
    char mailto[] = "unsubscribe@example.com";
    char fid[] = "campaign:marketing:kiln";
    char name[] = "marketing";
    config_set set;
    memset(&set, 0, sizeof set);
    set.name = name;
    set.unsub_url = url;
    set.unsub_mailto = mailto;
    set.feedback_id = fid;

    /* "recipient\0message", or the whole input as the message */
    char rcpt[FUZZ_RCPT_MAX + 1] = "r@e.test";
    const char *msg = (const char *)data;
    size_t len = size;
    const uint8_t *nul = memchr(data, 0, size < FUZZ_RCPT_MAX ? size : FUZZ_RCPT_MAX);
    if (nul) {
        memcpy(rcpt, data, (size_t)(nul - data));
        rcpt[nul - data] = '\0';
        msg = (const char *)nul + 1;
        len = size - (size_t)(nul - data) - 1;
    }

    char *err = NULL;
    char *fields = unsub_fields(&set, "0000018bcfe56800-1b2c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d-000000",
                                rcpt, &err);
    if (!fields) {
        /* only a URL too long for a header line may fail */
        if (!err || !strstr(err, "would be longer than")) abort();
        free(err);
        return 0;
    }
    fuzz_check_fields(fields);
    size_t flen = strlen(fields);

    msg_headers in;
    message_parse_headers(msg, len, &in);
    size_t out_len = 0;
    char *out = unsub_insert(msg, len, fields, &out_len);
    if (out_len > len + flen + 2 || out[out_len] != '\0') abort();
    if (memcmp(out, fields, flen) != 0) abort();
    if (!in.over_limit) {
        size_t body = len - in.header_len;
        if (body > out_len || memcmp(out + out_len - body, msg + in.header_len, body) != 0)
            abort();
    }
    msg_headers hs;
    message_parse_headers(out, out_len, &hs);
    if (fuzz_count(&hs, "List-Unsubscribe") != 1 || fuzz_count(&hs, "Feedback-ID") != 1 ||
        fuzz_count(&hs, "List-Unsubscribe-Post") != 1)
        abort();
    const char *post = message_header_get(&hs, "List-Unsubscribe-Post");
    if (!post || strcmp(post, "List-Unsubscribe=One-Click") != 0) abort();
    message_headers_free(&hs);
    free(out);

    /* feedback_id only: the submitter's List-Unsubscribe fields stay as they were */
    set.unsub_url = NULL;
    set.unsub_mailto = NULL;
    char *out2 = NULL;
    size_t out2_len = 0;
    if (unsub_apply(&set, "m", NULL, msg, len, &out2, &out2_len, &err) != 1) abort();
    message_parse_headers(out2, out2_len, &hs);
    if (fuzz_count(&hs, "Feedback-ID") != 1) abort();
    if (!hs.over_limit && !in.over_limit &&
        (fuzz_count(&hs, "List-Unsubscribe") != fuzz_count(&in, "List-Unsubscribe") ||
         fuzz_count(&hs, "List-Unsubscribe-Post") != fuzz_count(&in, "List-Unsubscribe-Post")))
        abort();
    message_headers_free(&hs);
    message_headers_free(&in);
    free(out2);
    free(fields);
    return 0;
}
