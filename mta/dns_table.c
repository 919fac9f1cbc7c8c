/* dns_table.c — see dns_table.h. Hand-written: thirty lines of chaining with FNV-1a are
 * simpler than a dependency for one table of domains. */
#include "mta/dns_table.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

static size_t dns_table_hash(const char *s)
{
    size_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

void dns_ht_init(dns_htable *t)
{
    t->nb = 64;
    t->b = util_calloc(t->nb, sizeof *t->b);
    t->n = 0;
}

dns_hnode *dns_ht_find(const dns_htable *t, const char *key)
{
    for (dns_hnode *n = t->b[dns_table_hash(key) & (t->nb - 1)]; n; n = n->hnext)
        if (strcmp(n->key, key) == 0) return n;
    return NULL;
}

void dns_ht_insert(dns_htable *t, dns_hnode *node)
{
    if (t->n >= t->nb) {
        size_t nb = t->nb * 2;
        dns_hnode **b = util_calloc(nb, sizeof *b);
        for (size_t i = 0; i < t->nb; i++) {
            for (dns_hnode *n = t->b[i], *next; n; n = next) {
                next = n->hnext;
                size_t j = dns_table_hash(n->key) & (nb - 1);
                n->hnext = b[j];
                b[j] = n;
            }
        }
        free(t->b);
        t->b = b;
        t->nb = nb;
    }
    size_t j = dns_table_hash(node->key) & (t->nb - 1);
    node->hnext = t->b[j];
    t->b[j] = node;
    t->n++;
}

void dns_ht_remove(dns_htable *t, dns_hnode *node)
{
    for (dns_hnode **p = &t->b[dns_table_hash(node->key) & (t->nb - 1)]; *p; p = &(*p)->hnext) {
        if (*p == node) {
            *p = node->hnext;
            t->n--;
            return;
        }
    }
    util_fatal("dns: hash node %s not in its table", node->key);
}

