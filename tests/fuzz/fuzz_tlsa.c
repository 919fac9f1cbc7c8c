/* fuzz_tlsa.c — fuzz target for the raw DNS answer walkers (mta/dns_wire.c) that see every
 * resolver answer kiln asks for DANE: the input is taken as a whole DNS response. Promises
 * checked: no read outside the buffer (the sanitizers), at most the requested number of
 * TLSA records, each with 1 to DNS_WIRE_TLSA_DATA_MAX bytes of data lying inside the input,
 * and the same records with a larger limit start the same. Built as a libFuzzer target by
 * `make fuzz` (clang) and as a corpus + mutation replay in `make check` (gcc). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mta/dns_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65535) return 0;
    int len = (int)size;
    (void)dns_wire_ad(data, len);
    (void)dns_wire_rcode(data, len);
    (void)dns_wire_ancount(data, len);
    (void)dns_wire_min_ttl(data, len, DNS_WIRE_TYPE_TLSA);
    dns_wire_tlsa few[2], all[DNS_WIRE_TLSA_MAX];
    int n2 = dns_wire_tlsa_records(data, len, few, 2);
    int n = dns_wire_tlsa_records(data, len, all, DNS_WIRE_TLSA_MAX);
    if (n2 > 2 || n > DNS_WIRE_TLSA_MAX) abort();
    if ((n < 0) != (n2 < 0)) abort();
    if (n >= 0 && n2 != (n < 2 ? n : 2)) abort();
    for (int i = 0; i < n; i++) {
        if (all[i].len < 1 || all[i].len > DNS_WIRE_TLSA_DATA_MAX) abort();
        if (all[i].data < data || all[i].data + all[i].len > data + size) abort();
        if (i < n2 && (few[i].data != all[i].data || few[i].len != all[i].len)) abort();
    }
    return 0;
}
