/* fuzz_dns.c — fuzz target for the DNS answer walker of MX resolution: the input is the raw
 * answers a DNS server sends for one lookup, each as on DNS over TCP (a 2-byte big-endian
 * length, then the message): first the answer to the MX query, then the answers to the A
 * and AAAA queries of each exchanger the MX answer named, in the order mta/dns.c asks them.
 * Each answer reaches mta/dns_answer.c as c-ares 1.18 hands it to dns.c's query callback:
 * a message shorter than a DNS header is dropped by c-ares (the query times out), the rcode
 * and answer count become the callback's status as ares_query does (NOERROR with answers:
 * success; NOERROR without: NODATA; NXDOMAIN, SERVFAIL, REFUSED...), and the bytes are read
 * only on success, by c-ares' ares_parse_mx_reply / ares_parse_a_reply /
 * ares_parse_aaaa_reply and then by kiln's code after them (null MX, implicit MX,
 * duplicates, delivery order, TTL walk, the final result). Queries the input has no answer
 * for time out.
 * Checks, whatever the bytes: a result is DNS_OK with at least one exchanger, each with at
 * least one valid IPv4/IPv6 address, in order of preference, or a failure with a text that
 * names the domain and no exchangers; a TTL is -1 or a 32-bit value; nothing leaks.
 * Built as a libFuzzer target by `make fuzz` (clang) and as a corpus + mutation replay in
 * `make check` (gcc). */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ares.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/dns_answer.h"
#include "mta/dns_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_DNS_DOMAIN "example.test"

typedef struct fuzz_dns_input {
    const uint8_t *p;
    size_t left;
    unsigned char *cur;   /* the answer being read, in an exact-size copy (ASan sees overreads) */
} fuzz_dns_input;

static void fuzz_dns_fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_dns: %s: %s\n", what, detail ? detail : "");
    abort();
}

/* The next answer: the c-ares status of the query and *abuf, *alen (NULL and 0 when it timed out). */
static int fuzz_dns_next(fuzz_dns_input *in, unsigned char **abuf, int *alen)
{
    free(in->cur);
    in->cur = NULL;
    *abuf = NULL;
    *alen = 0;
    if (in->left < 2) return ARES_ETIMEOUT;
    size_t len = (size_t)in->p[0] << 8 | in->p[1];
    in->p += 2;
    in->left -= 2;
    if (len > in->left) len = in->left;
    in->cur = util_malloc(len);
    memcpy(in->cur, in->p, len);
    in->p += len;
    in->left -= len;
    if (len < HFIXEDSZ) return ARES_ETIMEOUT;   /* dropped by c-ares */
    *abuf = in->cur;
    *alen = (int)len;
    int rcode = in->cur[3] & 0x0f;
    int ancount = in->cur[6] << 8 | in->cur[7];
    switch (rcode) {   /* ares_query.c's qcallback */
    case ns_r_noerror: return ancount > 0 ? ARES_SUCCESS : ARES_ENODATA;
    case ns_r_formerr: return ARES_EFORMERR;
    case ns_r_servfail: return ARES_ESERVFAIL;
    case ns_r_nxdomain: return ARES_ENOTFOUND;
    case ns_r_notimpl: return ARES_ENOTIMP;
    case ns_r_refused: return ARES_EREFUSED;
    default: return ARES_SUCCESS;   /* other rcodes are passed on as they are */
    }
}

static uint32_t fuzz_dns_rnd(void *arg)
{
    uint64_t *s = arg;
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 32);
}

static void fuzz_dns_check(const dns_mx_result *r, int64_t ttl)
{
    if (ttl < -1 || ttl > (int64_t)UINT32_MAX) fuzz_dns_fail("TTL out of range", NULL);
    if (r->status != DNS_OK) {
        if (r->nhosts != 0) fuzz_dns_fail("a failure with exchangers", r->error);
        if (!r->error || strncmp(r->error, FUZZ_DNS_DOMAIN ":", strlen(FUZZ_DNS_DOMAIN) + 1) != 0)
            fuzz_dns_fail("a failure without a text naming the domain", r->error);
        if (strstr(r->error, "(null)")) fuzz_dns_fail("a NULL string in the failure's text", r->error);
        return;
    }
    if (r->error) fuzz_dns_fail("a result with an error", r->error);
    if (r->nhosts == 0) fuzz_dns_fail("DNS_OK without exchangers", NULL);
    if (r->implicit && (r->nhosts != 1 || strcmp(r->hosts[0].name, FUZZ_DNS_DOMAIN) != 0))
        fuzz_dns_fail("an implicit MX other than the domain", r->hosts[0].name);
    for (size_t i = 0; i < r->nhosts; i++) {
        const dns_mx_host *h = &r->hosts[i];
        if (i > 0 && h->preference < r->hosts[i - 1].preference)
            fuzz_dns_fail("exchangers out of order", h->name);
        for (const char *p = h->name; *p; p++)
            if (isupper((unsigned char)*p)) fuzz_dns_fail("an exchanger not lower-cased", h->name);
        if (h->naddrs == 0) fuzz_dns_fail("an exchanger without addresses", h->name);
        for (size_t j = 0; j < h->naddrs; j++) {
            unsigned char bin[16];
            if (inet_pton(AF_INET, h->addrs[j], bin) != 1 && inet_pton(AF_INET6, h->addrs[j], bin) != 1)
                fuzz_dns_fail("not an IP address", h->addrs[j]);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_dns_input in = {data, size, NULL};
    uint64_t seed = 0x6b696c6e2d646e73ULL;
    dns_mx_result r;
    memset(&r, 0, sizeof r);
    int64_t ttl = -1;
    unsigned char *abuf;
    int alen;

    int status = fuzz_dns_next(&in, &abuf, &alen);
    dns_answer_mx(FUZZ_DNS_DOMAIN, status, abuf, alen, fuzz_dns_rnd, &seed, &r, &ttl);
    /* The TTL walk on its own, over every answer type (kiln's hand-written part). */
    if (abuf) {
        dns_answer_note_ttl(&ttl, -1);
        (void)dns_wire_min_ttl(abuf, alen, ns_t_a);
        (void)dns_wire_min_ttl(abuf, alen, ns_t_aaaa);
    }
    /* RFC 5321 5.1: an empty list of MX (an answer of CNAMEs only, say) is an implicit MX */
    if (r.status == DNS_OK && r.nhosts == 0) fuzz_dns_fail("an MX answer without exchangers", NULL);
    dns_addr_acc *acc = NULL;
    char *tempfail = NULL;
    if (r.status == DNS_OK) {
        acc = util_calloc(r.nhosts, sizeof *acc);
        for (size_t i = 0; i < r.nhosts; i++) {
            if (!dns_answer_wants_addrs(r.hosts[i].name)) continue;
            status = fuzz_dns_next(&in, &abuf, &alen);
            dns_answer_addrs(FUZZ_DNS_DOMAIN, r.hosts[i].name, ns_t_a, status, abuf, alen, &acc[i],
                             &ttl, &tempfail);
            status = fuzz_dns_next(&in, &abuf, &alen);
            dns_answer_addrs(FUZZ_DNS_DOMAIN, r.hosts[i].name, ns_t_aaaa, status, abuf, alen,
                             &acc[i], &ttl, &tempfail);
            if (acc[i].n4 > DNS_MAX_ADDRS || acc[i].n6 > DNS_MAX_ADDRS)
                fuzz_dns_fail("more addresses than kept per family", r.hosts[i].name);
        }
    }
    free(in.cur);
    if (tempfail && strncmp(tempfail, FUZZ_DNS_DOMAIN ":", strlen(FUZZ_DNS_DOMAIN) + 1) != 0)
        fuzz_dns_fail("a temporary failure not naming the domain", tempfail);
    dns_answer_finish(FUZZ_DNS_DOMAIN, &r, acc, tempfail);
    fuzz_dns_check(&r, ttl);
    dns_result_clear(&r);
    free(tempfail);
    return 0;
}
