/* fbtoken.c — the VERP envelope sender bounce+TOKEN@DOMAIN of outgoing mail (see fbtoken.h
 * for the exact encoding): 24 bytes of message id, a scope byte and a 6-byte truncated
 * HMAC-SHA256, in lower-case RFC 4648 base32 without padding.
 *
 * Promises: pure (no I/O, no clock); fbtoken_make writes exactly FBTOKEN_LEN characters;
 * fbtoken_decode accepts upper case, and only the one canonical spelling of each 31 bytes
 * (the 2 spare bits of the last character are zero), so no two tokens name the same thing;
 * fbtoken_verify compares MACs in constant time (CRYPTO_memcmp). The base32 is by hand
 * because OpenSSL has only base64 and a 31-byte codec is smaller than a dependency; the
 * HMAC is OpenSSL's. */
#include "mta/fbtoken.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "base/util.h"

#define FBTOKEN_ID_BYTES 24
#define FBTOKEN_RAW (FBTOKEN_ID_BYTES + 1 + 6)     /* 31 bytes, 248 bits, 50 characters */
#define FBTOKEN_DOMAIN_TAG "kiln-verp-1"

static const char fbtoken_alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";

static int fbtoken_hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The 24 bytes of a kiln id "%016x-%8-%4-%4-%4-%12-000000" (hex of either case). 0, or -1
 * when ID has another shape. */
static int fbtoken_id_bytes(const char *id, unsigned char out[FBTOKEN_ID_BYTES])
{
    static const size_t groups[] = {16, 8, 4, 4, 4, 12};
    const char *q = id;
    size_t nib = 0;
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        if (g > 0 && *q++ != '-') return -1;
        for (size_t i = 0; i < groups[g]; i++, q++) {
            int v = fbtoken_hexval(*q);
            if (v < 0) return -1;
            if (nib % 2 == 0) out[nib / 2] = (unsigned char)(v << 4);
            else out[nib / 2] |= (unsigned char)v;
            nib++;
        }
    }
    return strcmp(q, "-000000") == 0 ? 0 : -1;
}

/* The id text of 24 bytes, lower-case, with its dashes and tail. */
static void fbtoken_id_text(const unsigned char b[FBTOKEN_ID_BYTES], char out[80])
{
    char hex[2 * FBTOKEN_ID_BYTES + 1];
    for (size_t i = 0; i < FBTOKEN_ID_BYTES; i++) snprintf(hex + 2 * i, 3, "%02x", b[i]);
    snprintf(out, 80, "%.16s-%.8s-%.4s-%.4s-%.4s-%.12s-000000", hex, hex + 16, hex + 24,
             hex + 28, hex + 32, hex + 36);
}

/* HMAC-SHA256(key, "kiln-verp-1" NUL id NUL lower(rcpt)) truncated to 6 bytes. */
static void fbtoken_mac(const unsigned char *key, size_t keylen, const char *id,
                        const char *rcpt, unsigned char mac[6])
{
    static const unsigned char nokey[1] = {0};
    size_t tlen = sizeof FBTOKEN_DOMAIN_TAG, ilen = strlen(id) + 1, rlen = strlen(rcpt);
    size_t n = tlen + ilen + rlen;
    unsigned char *msg = util_malloc(n);
    memcpy(msg, FBTOKEN_DOMAIN_TAG, tlen);     /* with its NUL */
    memcpy(msg + tlen, id, ilen);              /* with its NUL */
    for (size_t i = 0; i < rlen; i++) {
        unsigned char c = (unsigned char)rcpt[i];
        msg[tlen + ilen + i] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!HMAC(EVP_sha256(), keylen ? key : nokey, (int)keylen, msg, n, md, &mdlen) ||
        mdlen != 32)
        util_fatal("fbtoken: HMAC-SHA256 failed");
    memcpy(mac, md, 6);
    OPENSSL_cleanse(md, sizeof md);
    free(msg);
}

int fbtoken_make(const unsigned char *key, size_t keylen, const char *msg_id, const char *rcpt,
                 char *out)
{
    unsigned char raw[FBTOKEN_RAW];
    if (!msg_id || fbtoken_id_bytes(msg_id, raw) < 0) return -1;
    char id[80];
    fbtoken_id_text(raw, id);                  /* the MAC binds the canonical spelling */
    raw[FBTOKEN_ID_BYTES] = rcpt ? 1 : 0;
    fbtoken_mac(key, keylen, id, rcpt ? rcpt : "", raw + FBTOKEN_ID_BYTES + 1);
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < FBTOKEN_RAW; i++) {
        acc = (acc << 8) | raw[i];
        bits += 8;
        while (bits >= 5) {
            out[n++] = fbtoken_alphabet[(acc >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits > 0) out[n++] = fbtoken_alphabet[(acc << (5 - bits)) & 31];
    out[n] = '\0';
    return n == FBTOKEN_LEN ? 0 : -1;
}

char *fbtoken_address(const unsigned char *key, size_t keylen, const char *msg_id,
                      const char *rcpt, const char *domain)
{
    char token[FBTOKEN_LEN + 1];
    if (!domain || fbtoken_make(key, keylen, msg_id, rcpt, token) < 0) return NULL;
    return util_asprintf(FBTOKEN_LOCAL_PREFIX "%s@%s", token, domain);
}

static int fbtoken_b32val(char c)
{
    if (c >= 'a' && c <= 'z') return c - 'a';
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= '2' && c <= '7') return c - '2' + 26;
    return -1;
}

static bool fbtoken_prefix_ci(const char *s, size_t n)
{
    size_t plen = sizeof FBTOKEN_LOCAL_PREFIX - 1;
    if (n < plen) return false;
    for (size_t i = 0; i < plen; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
        if (c != FBTOKEN_LOCAL_PREFIX[i]) return false;
    }
    return true;
}

static int fbtoken_fail(const char **why, const char *text)
{
    if (why) *why = text;
    return -1;
}

int fbtoken_decode(const char *addr, fbtoken_info *out, const char **why)
{
    if (!addr) return fbtoken_fail(why, "no address");
    const char *tok = addr;
    size_t n = strlen(addr);
    const char *at = strchr(addr, '@');
    size_t plen = sizeof FBTOKEN_LOCAL_PREFIX - 1;
    if (at) {                                  /* bounce+TOKEN@domain */
        if (at[1] == '\0') return fbtoken_fail(why, "address has no domain");
        if (strchr(at + 1, '@')) return fbtoken_fail(why, "address has more than one '@'");
        if (!fbtoken_prefix_ci(addr, (size_t)(at - addr)))
            return fbtoken_fail(why, "not a bounce+ address");
        tok = addr + plen;
        n = (size_t)(at - tok);
    } else if (fbtoken_prefix_ci(addr, n)) {   /* bounce+TOKEN */
        tok = addr + plen;
        n -= plen;
    }                                          /* else TOKEN alone */
    if (n != FBTOKEN_LEN) return fbtoken_fail(why, "token is not 50 base32 characters");
    unsigned char raw[FBTOKEN_RAW + 1];
    uint32_t acc = 0;
    int bits = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int v = fbtoken_b32val(tok[i]);
        if (v < 0) return fbtoken_fail(why, "token is not 50 base32 characters");
        acc = (acc << 5) | (uint32_t)v;
        bits += 5;
        if (bits >= 8) {
            raw[k++] = (unsigned char)(acc >> (bits - 8));
            bits -= 8;
        }
    }
    /* 250 bits for 248: the 2 left over must be zero, or two spellings would name one token */
    if (k != FBTOKEN_RAW || bits != 2 || (acc & 3) != 0)
        return fbtoken_fail(why, "token's last character is not canonical base32");
    unsigned char scope = raw[FBTOKEN_ID_BYTES];
    if (scope > 1) return fbtoken_fail(why, "token's scope is neither 0 nor 1");
    memset(out, 0, sizeof *out);
    fbtoken_id_text(raw, out->msg_id);
    out->one_rcpt = scope == 1;
    memcpy(out->mac, raw + FBTOKEN_ID_BYTES + 1, sizeof out->mac);
    if (why) *why = NULL;
    return 0;
}

bool fbtoken_verify(const unsigned char *key, size_t keylen, const fbtoken_info *info,
                    const char *rcpt)
{
    if (!info) return false;
    if (info->one_rcpt && !rcpt) return false;
    unsigned char mac[6];
    fbtoken_mac(key, keylen, info->msg_id, info->one_rcpt ? rcpt : "", mac);
    return CRYPTO_memcmp(mac, info->mac, sizeof mac) == 0;
}
