/* fuzz_fbtoken.c — fuzz target for the VERP token's decoder and checker (mta/fbtoken.c), the
 * part of kiln that reads what anyone on the internet can put in a bounce's recipient.
 * Input: an address, a local part or a token (anything; cut at the first NUL), optionally
 * followed by a NUL and a candidate recipient. Promises checked: fbtoken_decode either
 * fails with a reason or yields a kiln message id of the exact shape
 * "%016x-%8-%4-%4-%4-%12-000000" and a scope; fbtoken_verify never crashes and refuses a
 * scope-1 token without a recipient; and a decoded token made again from its id and scope with
 * the real key is the input's token exactly when the input's MAC verifies (so decoding is
 * canonical: one spelling per token, up to case). Built for libFuzzer by `make fuzz`,
 * replayed over its corpus and mutations in `make check`. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"
#include "mta/fbtoken.h"

#define FUZZ_KEY "fuzz key, 32 bytes long enough!!"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check_id(const char *id)
{
    static const size_t groups[] = {16, 8, 4, 4, 4, 12};
    const char *q = id;
    for (size_t g = 0; g < 6; g++) {
        if (g && *q++ != '-') abort();
        for (size_t i = 0; i < groups[g]; i++, q++)
            if (!isxdigit((unsigned char)*q) || isupper((unsigned char)*q)) abort();
    }
    if (strcmp(q, "-000000") != 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const unsigned char *key = (const unsigned char *)FUZZ_KEY;
    size_t keylen = sizeof FUZZ_KEY - 1;
    char *in = util_malloc(size + 1);
    memcpy(in, data, size);
    in[size] = '\0';
    size_t alen = strlen(in);
    const char *rcpt = alen < size ? in + alen + 1 : NULL;

    fbtoken_info info;
    const char *why = NULL;
    if (fbtoken_decode(in, &info, &why) < 0) {
        if (!why || !*why) abort();
        free(in);
        return 0;
    }
    fuzz_check_id(info.msg_id);
    bool ok = fbtoken_verify(key, keylen, &info, rcpt);
    if (info.one_rcpt && !rcpt && ok) abort();   /* scope 1 names a recipient */

    /* made again with the real key: equal to the input's token exactly when it verifies */
    char t[FBTOKEN_LEN + 1];
    const char *who = info.one_rcpt ? rcpt : NULL;
    if (info.one_rcpt && !rcpt) {
        free(in);
        return 0;
    }
    if (fbtoken_make(key, keylen, info.msg_id, who, t) < 0) abort();
    const char *at = strchr(in, '@');
    size_t end = at ? (size_t)(at - in) : alen;
    if (end < FBTOKEN_LEN) abort();
    bool same = strncasecmp(in + end - FBTOKEN_LEN, t, FBTOKEN_LEN) == 0;
    if (same != ok) abort();
    fbtoken_info again;
    if (fbtoken_decode(t, &again, &why) < 0) abort();
    if (strcmp(again.msg_id, info.msg_id) != 0 || again.one_rcpt != info.one_rcpt) abort();
    free(in);
    return 0;
}
