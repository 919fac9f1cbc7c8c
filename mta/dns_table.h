/* dns_table.h — the string-keyed chained hash table mta/dns.c keeps its running lookups
 * and its cache in: nodes embed an dns_hnode as their first member and own their key; the
 * table only links them (power-of-two buckets, doubled when it holds as many nodes). */
#ifndef KILN_DNS_TABLE_H
#define KILN_DNS_TABLE_H

#include <stddef.h>

typedef struct dns_hnode {
    struct dns_hnode *hnext;
    char *key;
} dns_hnode;

typedef struct dns_htable {
    dns_hnode **b;
    size_t nb;                   /* power of two */
    size_t n;
} dns_htable;

void dns_ht_init(dns_htable *t);
dns_hnode *dns_ht_find(const dns_htable *t, const char *key);
void dns_ht_insert(dns_htable *t, dns_hnode *node);
/* node must be in t (a fatal error otherwise). */
void dns_ht_remove(dns_htable *t, dns_hnode *node);

#endif
