/* pool.c — pool membership and round-robin choice of a pool's source IP (see pool.h).
 * Pure: reads the config and the caller's cursor, nothing else. */
#include "pool.h"

#include <string.h>

size_t pool_ip_count(const config *cfg, const char *pool)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->nips; i++)
        if (strcmp(cfg->ips[i].pool, pool) == 0) n++;
    return n;
}

const config_ip *pool_ip_at(const config *cfg, const char *pool, size_t n)
{
    for (size_t i = 0; i < cfg->nips; i++) {
        if (strcmp(cfg->ips[i].pool, pool) != 0) continue;
        if (n == 0) return &cfg->ips[i];
        n--;
    }
    return NULL;
}

bool pool_has_ip(const config *cfg, const char *pool, const char *addr)
{
    for (size_t i = 0; i < cfg->nips; i++)
        if (strcmp(cfg->ips[i].pool, pool) == 0 && strcmp(cfg->ips[i].address, addr) == 0)
            return true;
    return false;
}

const config_ip *pool_choose_ip(const config *cfg, const char *pool, uint64_t *rr_cursor,
                                const char *avoid_addr)
{
    size_t n = pool_ip_count(cfg, pool);
    if (n == 0) return NULL;
    size_t idx = (size_t)(*rr_cursor % n);
    const config_ip *ip = pool_ip_at(cfg, pool, idx);
    if (avoid_addr && n > 1 && strcmp(ip->address, avoid_addr) == 0) {
        idx = (idx + 1) % n;
        ip = pool_ip_at(cfg, pool, idx);
    }
    *rr_cursor = (uint64_t)idx + 1;
    return ip;
}
