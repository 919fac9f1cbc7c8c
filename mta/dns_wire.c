/* dns_wire.c — raw DNS answer walking (see dns_wire.h). Written by hand because c-ares 1.18
 * parses neither TLSA records nor TTLs of MX answers, and no Debian library that fits an
 * event loop adds more than these few bounded loops: names are skipped with c-ares'
 * ares_expand_name (compression pointers and all), the rest is fixed-size fields. */
#include "mta/dns_wire.h"

#include <ares.h>

static int dns_wire_skip_name(const unsigned char *p, const unsigned char *abuf, int alen,
                              long *len)
{
    char *name = NULL;
    if (ares_expand_name(p, abuf, alen, &name, len) != ARES_SUCCESS) return -1;
    ares_free_string(name);
    return 0;
}

bool dns_wire_ad(const unsigned char *abuf, int alen)
{
    return abuf && alen >= 12 && (abuf[3] & 0x20) != 0;
}

int dns_wire_rcode(const unsigned char *abuf, int alen)
{
    return abuf && alen >= 12 ? abuf[3] & 0x0f : -1;
}

int dns_wire_ancount(const unsigned char *abuf, int alen)
{
    return abuf && alen >= 12 ? abuf[6] << 8 | abuf[7] : -1;
}

/* Calls each(arg, rr header fields, rdata) for every answer record; -1 when malformed. */
typedef void dns_wire_rr_fn(void *arg, int type, int cls, int64_t ttl, const unsigned char *rd,
                            int rdlen);

static int dns_wire_walk(const unsigned char *abuf, int alen, dns_wire_rr_fn *each, void *arg)
{
    if (!abuf || alen < 12) return -1;
    int qd = abuf[4] << 8 | abuf[5], an = abuf[6] << 8 | abuf[7];
    const unsigned char *p = abuf + 12, *end = abuf + alen;
    long len;
    for (int i = 0; i < qd; i++) {
        if (dns_wire_skip_name(p, abuf, alen, &len) < 0 || end - p < len + 4) return -1;
        p += len + 4;
    }
    for (int i = 0; i < an; i++) {
        if (dns_wire_skip_name(p, abuf, alen, &len) < 0 || end - p < len + 10) return -1;
        p += len;
        int rtype = p[0] << 8 | p[1];
        int rclass = p[2] << 8 | p[3];
        int64_t ttl = (int64_t)((uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7]);
        int rdlen = p[8] << 8 | p[9];
        p += 10;
        if (end - p < rdlen) return -1;
        each(arg, rtype, rclass, ttl, p, rdlen);
        p += rdlen;
    }
    return 0;
}

typedef struct dns_wire_ttl_acc {
    int type;
    int64_t min;
} dns_wire_ttl_acc;

static void dns_wire_ttl_one(void *arg, int type, int cls, int64_t ttl, const unsigned char *rd,
                             int rdlen)
{
    (void)cls;
    (void)rd;
    (void)rdlen;
    dns_wire_ttl_acc *a = arg;
    if (type == a->type && (a->min < 0 || ttl < a->min)) a->min = ttl;
}

int64_t dns_wire_min_ttl(const unsigned char *abuf, int alen, int type)
{
    dns_wire_ttl_acc a = {type, -1};
    if (dns_wire_walk(abuf, alen, dns_wire_ttl_one, &a) < 0) return -1;
    return a.min;
}

typedef struct dns_wire_tlsa_acc {
    dns_wire_tlsa *out;
    size_t max, n;
} dns_wire_tlsa_acc;

static void dns_wire_tlsa_one(void *arg, int type, int cls, int64_t ttl, const unsigned char *rd,
                              int rdlen)
{
    (void)ttl;
    dns_wire_tlsa_acc *a = arg;
    if (type != DNS_WIRE_TYPE_TLSA || cls != 1 || a->n >= a->max) return;
    if (rdlen < 4 || rdlen - 3 > DNS_WIRE_TLSA_DATA_MAX) return;
    dns_wire_tlsa *r = &a->out[a->n++];
    r->usage = rd[0];
    r->selector = rd[1];
    r->mtype = rd[2];
    r->data = rd + 3;
    r->len = (size_t)rdlen - 3;
}

int dns_wire_tlsa_records(const unsigned char *abuf, int alen, dns_wire_tlsa *out, size_t max)
{
    dns_wire_tlsa_acc a = {out, max, 0};
    if (dns_wire_walk(abuf, alen, dns_wire_tlsa_one, &a) < 0) return -1;
    return (int)a.n;
}
