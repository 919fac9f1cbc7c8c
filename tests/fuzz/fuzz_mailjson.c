/* fuzz_mailjson.c — fuzz target for the SES mail object built from a submitted message's
 * headers (mta/events.h events_mail_json: header list, commonHeaders address splitting,
 * the 2 KB value / 8 KB list / 64 KB object caps). Checks that the output is valid JSON,
 * at most 64 KB (one short destination), and that no header value passes 2 KB. Built for
 * libFuzzer by `make fuzz`, replayed in `make check`. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mta/events.h"
#include "mta/message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    msg_headers hs;
    message_parse_headers((const char *)data, size, &hs);
    char *dest[] = {"ann@dest.test"};
    events_mail_in in = {.message_id = "0000018bcfe5687b-11111111-2222-4333-8444-555555555555-000000",
                         .timestamp_ms = 1700000000123LL, .source = "app@example.test",
                         .sending_account_id = "123456789012", .destination = dest,
                         .ndestination = 1, .headers = &hs, .config_set = "txn",
                         .source_ip = "127.0.0.1"};
    char *s = events_mail_json(&in);
    message_headers_free(&hs);
    if (strlen(s) > 65536) abort();
    json_t *j = json_loads(s, 0, NULL);
    if (!j) abort();
    json_t *h = json_object_get(j, "headers");
    for (size_t i = 0; i < json_array_size(h); i++) {
        const char *v = json_string_value(json_object_get(json_array_get(h, i), "value"));
        if (!v || strlen(v) > 2048) abort();
    }
    json_decref(j);
    free(s);
    return 0;
}
