/* auth_fail.c — the per-client failed-AUTH counter of auth_fail.h: a flat array of at most
 * AUTH_FAIL_TABLE_MAX entries keyed by the client's address bytes (IPv6 cut to its /64),
 * scanned linearly (10,000 16-byte compares are a few microseconds, far below one crypt). */
#include "mta/auth_fail.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

typedef struct auth_fail_entry {
    unsigned char key[17];    /* family byte + address (IPv6: first 8 bytes, rest 0) */
    int count;
    int64_t since_ms;         /* the window opened at the first counted failure */
} auth_fail_entry;

struct auth_fail {
    auth_fail_entry *v;
    size_t n;
};

auth_fail *auth_fail_new(void)
{
    auth_fail *t = util_calloc(1, sizeof *t);
    t->v = util_calloc(AUTH_FAIL_TABLE_MAX, sizeof *t->v);
    return t;
}

void auth_fail_free(auth_fail *t)
{
    if (!t) return;
    free(t->v);
    free(t);
}

size_t auth_fail_size(const auth_fail *t)
{
    return t->n;
}

static void auth_fail_key(const char *ip, unsigned char key[17])
{
    memset(key, 0, 17);
    if (inet_pton(AF_INET, ip, key + 1) == 1) {
        key[0] = 4;
    } else if (inet_pton(AF_INET6, ip, key + 1) == 1) {
        key[0] = 6;
        memset(key + 1 + 8, 0, 8);            /* count the /64 */
    } else {
        key[0] = 0;                           /* not an address: the text itself, cut */
        size_t n = strlen(ip);
        memcpy(key + 1, ip, n > 16 ? 16 : n);
    }
}

static auth_fail_entry *auth_fail_find(auth_fail *t, const unsigned char key[17])
{
    for (size_t i = 0; i < t->n; i++)
        if (memcmp(t->v[i].key, key, 17) == 0) return &t->v[i];
    return NULL;
}

static void auth_fail_expire(auth_fail *t, int64_t window_ms, int64_t now_ms)
{
    size_t j = 0;
    for (size_t i = 0; i < t->n; i++)
        if (now_ms - t->v[i].since_ms < window_ms) t->v[j++] = t->v[i];
    t->n = j;
}

bool auth_fail_blocked(auth_fail *t, const char *ip, int max, int64_t window_ms, int64_t now_ms)
{
    unsigned char key[17];
    auth_fail_key(ip, key);
    auth_fail_entry *e = auth_fail_find(t, key);
    if (!e || now_ms - e->since_ms >= window_ms) return false;
    return e->count >= max;
}

int auth_fail_record(auth_fail *t, const char *ip, int64_t window_ms, int64_t now_ms)
{
    unsigned char key[17];
    auth_fail_key(ip, key);
    auth_fail_entry *e = auth_fail_find(t, key);
    if (e && now_ms - e->since_ms >= window_ms) {
        e->count = 0;                         /* the old window is over: a new one opens */
        e->since_ms = now_ms;
    }
    if (!e) {
        if (t->n == AUTH_FAIL_TABLE_MAX) auth_fail_expire(t, window_ms, now_ms);
        if (t->n == AUTH_FAIL_TABLE_MAX) {    /* all live: evict the oldest window */
            size_t old = 0;
            for (size_t i = 1; i < t->n; i++)
                if (t->v[i].since_ms < t->v[old].since_ms) old = i;
            t->v[old] = t->v[--t->n];
        }
        e = &t->v[t->n++];
        memcpy(e->key, key, 17);
        e->count = 0;
        e->since_ms = now_ms;
    }
    return ++e->count;
}
