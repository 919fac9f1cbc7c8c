/* fuzz_handoff.c — fuzz target for the X-Kiln-Handoff field's parser and the mail object's
 * tagging (mta/handoff.c), what a peer node (or whoever holds a node's credential) puts in
 * front of a handed-off message. Input: the field's value (cut at the first NUL). Promises
 * checked: handoff_parse either fails with a "bad X-Kiln-Handoff: " reason or yields a node
 * name of [A-Za-z0-9_-]{1,64}, an id of [A-Za-z0-9-] shorter than 80, a positive time, a set
 * name like a node's and a mail object that is a JSON object, which handoff_tag_mail tags; and a field made
 * again from what was parsed parses to the same values. Built for libFuzzer by `make fuzz`,
 * replayed over its corpus and mutations in `make check`. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/handoff.h"
#include "mta/message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = util_malloc(size + 1);
    memcpy(in, data, size);
    in[size] = '\0';
    handoff_info hi;
    char *err = NULL;
    if (handoff_parse(in, &hi, &err) != 0) {
        if (!err || strncmp(err, "bad X-Kiln-Handoff: ", 20) != 0) abort();
        free(err);
        free(in);
        return 0;
    }
    size_t nl = strlen(hi.node);
    if (nl == 0 || nl > 64 || !hi.id[0] || hi.created_ms <= 0 || !hi.set || !hi.mail_json)
        abort();
    for (size_t i = 0; i < nl; i++)
        if (!isalnum((unsigned char)hi.node[i]) && hi.node[i] != '-' && hi.node[i] != '_')
            abort();
    char *tagged = handoff_tag_mail(hi.mail_json, hi.node);
    if (!tagged) abort();
    free(tagged);
    /* made again and unfolded as a message parser does, it reads back the same */
    char *h = handoff_header(hi.node, hi.id, hi.created_ms, hi.set, hi.mail_json);
    msg_headers hs;
    message_parse_headers(h, strlen(h), &hs);
    const char *v = message_header_get(&hs, HANDOFF_HEADER);
    handoff_info again;
    char *err2 = NULL;
    if (!v || handoff_parse(v, &again, &err2) != 0) abort();
    if (strcmp(again.node, hi.node) != 0 || strcmp(again.id, hi.id) != 0 ||
        again.created_ms != hi.created_ms || strcmp(again.set, hi.set) != 0 ||
        strcmp(again.mail_json, hi.mail_json) != 0)
        abort();
    handoff_info_free(&again);
    message_headers_free(&hs);
    free(h);
    handoff_info_free(&hi);
    free(in);
    return 0;
}
