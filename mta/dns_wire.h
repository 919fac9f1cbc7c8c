/* dns_wire.h — pure walkers over raw DNS answers (RFC 1035 wire format) for what c-ares 1.18
 * does not parse: the smallest TTL of an answer, the header's AD bit and RCODE, and TLSA
 * records (RFC 6698). Nothing here allocates or touches the network; every function bounds
 * each read by the buffer's length and reports a malformed answer instead of reading past
 * it (they see resolver answers, which an attacker may shape). */
#ifndef KILN_DNS_WIRE_H
#define KILN_DNS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNS_WIRE_TYPE_TLSA 52
#define DNS_WIRE_TLSA_MAX 32          /* records kept per answer; more are ignored */
#define DNS_WIRE_TLSA_DATA_MAX 2048   /* a record with more certificate data is ignored */

/* Smallest TTL of the answer records of TYPE, or -1 if none / malformed. */
int64_t dns_wire_min_ttl(const unsigned char *abuf, int alen, int type);
/* The header's AD (authentic data, RFC 4035 section 3.2.3) bit; false when too short. */
bool dns_wire_ad(const unsigned char *abuf, int alen);
/* The header's RCODE, or -1 when too short. */
int dns_wire_rcode(const unsigned char *abuf, int alen);
/* The header's answer count, or -1 when too short. */
int dns_wire_ancount(const unsigned char *abuf, int alen);

typedef struct dns_wire_tlsa {
    uint8_t usage, selector, mtype;
    const unsigned char *data;        /* inside abuf */
    size_t len;
} dns_wire_tlsa;

/* The TLSA records (class IN) of the answer section, at most max of them, in order; records
 * with less than 4 bytes of data (no certificate data) or more than DNS_WIRE_TLSA_DATA_MAX
 * are skipped. Returns how many were stored, or -1 when the answer is malformed (then
 * none may be used). */
int dns_wire_tlsa_records(const unsigned char *abuf, int alen, dns_wire_tlsa *out, size_t max);

#endif
