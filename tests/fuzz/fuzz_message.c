/* fuzz_message.c — fuzz target for RFC 5322 header parsing of received messages: header
 * section split, unfolding, address lists of every field, header removal (as done for
 * X-SES-CONFIGURATION-SET) and the X-SES-MESSAGE-TAGS tags. Checks that removal never grows
 * the message and leaves no field of that name behind, and that every tag read passes the
 * tag rules (at most MSGTAGS_MAX of them) while a refusal leaves none. Built for libFuzzer by `make fuzz`, replayed in `make check`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mta/message.h"
#include "mta/events.h"
#include "mta/msgtags.h"
#include "base/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    msg_headers hs;
    message_parse_headers(buf, size, &hs);
    if (hs.header_len > size) abort();
    for (size_t i = 0; i < hs.n; i++) {
        char **addrs = NULL;
        size_t n = message_parse_addresses(hs.h[i].value, &addrs);
        message_addresses_free(addrs, n);
    }
    msgtags t;
    char *err = NULL;
    if (msgtags_from_headers(&hs, &t, &err) == 0) {
        if (err || t.n > MSGTAGS_MAX) abort();
        for (size_t i = 0; i < t.n; i++)
            if (events_tag_check(t.names[i], true) || events_tag_check(t.values[i], false)) abort();
    } else if (!err || t.n) {
        abort();
    }
    free(err);
    msgtags_free(&t);
    message_headers_free(&hs);

    size_t out_len = 0;
    char *out = message_remove_header(buf, size, "X-SES-CONFIGURATION-SET", &out_len);
    if (out_len > size) abort();
    msg_headers hs2;
    message_parse_headers(out, out_len, &hs2);
    if (message_header_get(&hs2, "X-SES-CONFIGURATION-SET")) abort();
    message_headers_free(&hs2);
    free(out);
    return 0;
}
