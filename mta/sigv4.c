/* sigv4.c — AWS Signature Version 4 as the SES v2 API checks it (mta/sigv4.h), and SES's
 * SMTP password derivation. Pure: no I/O, no clock of its own (the caller passes now).
 *
 * What it promises, checked against requests signed by Debian's boto3 (awscrt's signer)
 * and botocore's SigV4Auth (awscli's) in tests/unit/test_sigv4.c:
 *  - the canonical request is botocore's for every request those clients make: the path's
 *    dot segments and empty segments removed, then the (already encoded) path encoded once
 *    more with '/' and the unreserved characters kept ('%' becomes "%25"); query pairs
 *    split on '&' and the first '=', percent-decoded, encoded again (unreserved kept) and
 *    sorted by name then value, as awscrt does; the signed headers in the order listed,
 *    each "name:value" with repeated fields joined by ',', values trimmed and runs of white
 *    space collapsed to one blank (Python's str.split over ASCII white space);
 *  - the Authorization header is "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
 *    Signature=..." in any order, separated by commas and/or blanks; at most 4 KB and 64
 *    signed headers; host and the date header must be signed;
 *  - the date is X-Amz-Date, or a Date header in the same ISO 8601 basic form when there is
 *    no X-Amz-Date (AWS's rule; an RFC 1123 Date is not a signing date); the credential's
 *    date must be its day; more than 15 minutes away from now (either way) is EXPIRED;
 *  - the payload hash is x-amz-content-sha256 when sent and signed (it must then be the
 *    body's SHA-256, so "UNSIGNED-PAYLOAD" is refused), else the body's SHA-256;
 *  - the signatures are compared with CRYPTO_memcmp; every read stays within the lengths
 *    given; messages echo client text only as printable ASCII, at most 64 characters.
 *
 * The signing key (four HMACs) can come from a sigv4_keycache, keyed by everything it is
 * derived from (secret, date, region, service): a client's requests of one day then cost
 * one HMAC for the signature instead of five.
 *
 * Why by hand: no Debian library verifies SigV4 on the server side; SHA-256, HMAC and the
 * constant-time comparison are OpenSSL's. */
#include "mta/sigv4.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/util.h"

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SIGV4_TERMINATOR "aws4_request"
#define SIGV4_AUTH_MAX 4096          /* bytes of the Authorization header */
#define SIGV4_SIGNED_MAX 64          /* names in SignedHeaders */
#define SIGV4_SKEW_S (15 * 60)       /* the clock skew AWS allows, either way */
#define SIGV4_ECHO_MAX 64            /* client text quoted in a message */

#define SIGV4_MSG_MISSING "Missing Authentication Token"
#define SIGV4_MSG_UNKNOWN_KEY "The security token included in the request is invalid."
#define SIGV4_MSG_MISMATCH                                                                    \
    "The request signature we calculated does not match the signature you provided. Check " \
    "your AWS Secret Access Key and signing method. Consult the service documentation for "  \
    "details."

const char *sigv4_error_type(sigv4_result r)
{
    switch (r) {
    case SIGV4_OK: return "";
    case SIGV4_MISSING: return "MissingAuthenticationTokenException";
    case SIGV4_MALFORMED: return "IncompleteSignatureException";
    case SIGV4_UNKNOWN_KEY: return "UnrecognizedClientException";
    case SIGV4_BAD_SCOPE: return "SignatureDoesNotMatch";
    case SIGV4_EXPIRED: return "InvalidSignatureException";
    case SIGV4_MISMATCH: return "SignatureDoesNotMatch";
    }
    return "SignatureDoesNotMatch";
}

/* ---- primitives ---- */

static void sigv4_hex(const unsigned char *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static void sigv4_sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;
    if (EVP_Digest(p, n, md, &len, EVP_sha256(), NULL) != 1 || len != sizeof md)
        abort();   /* SHA-256 of a buffer cannot fail short of a broken library */
    sigv4_hex(md, sizeof md, out);
}

static void sigv4_hmac(const void *key, size_t klen, const char *msg, size_t mlen,
                       unsigned char out[32])
{
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, mlen, out, &len) ||
        len != 32)
        abort();
}

/* The signing key: HMAC chain "AWS4"+secret, date, region, service, "aws4_request". */
static void sigv4_signing_key(const char *secret, const char *date8, const char *region,
                              const char *service, unsigned char key[32])
{
    size_t slen = strlen(secret);
    char *k0 = util_malloc(slen + 5);
    memcpy(k0, "AWS4", 4);
    memcpy(k0 + 4, secret, slen + 1);
    sigv4_hmac(k0, slen + 4, date8, strlen(date8), key);
    OPENSSL_cleanse(k0, slen + 4);
    free(k0);
    sigv4_hmac(key, 32, region, strlen(region), key);
    sigv4_hmac(key, 32, service, strlen(service), key);
    sigv4_hmac(key, 32, SIGV4_TERMINATOR, strlen(SIGV4_TERMINATOR), key);
}

/* ---- the signing-key cache ---- */

typedef struct sigv4_keyslot {
    char *secret;                /* NULL: free slot */
    size_t secret_len;
    char date8[9];
    char *region, *service;
    unsigned char key[32];
    uint64_t used;               /* last use (kc->clock) */
} sigv4_keyslot;

struct sigv4_keycache {
    sigv4_keyslot *slots;
    size_t nslots;
    uint64_t clock;
    /* SHA-256 and HMAC fetched once and their contexts reused: OpenSSL 3's one-shot calls
     * look the algorithm up in the provider store on every call (about 1.7 µs of a
     * request's 12 in the signature check). NULL when the fetch failed: one-shots then. */
    EVP_MD *sha256;
    EVP_MD_CTX *md;
    EVP_MAC_CTX *hmac;
};

/* sigv4_sha256_hex through kc's fetched digest (kc NULL or without one: the one-shot). */
static void sigv4_kc_sha256_hex(sigv4_keycache *kc, const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;
    if (!kc || !kc->md) {
        sigv4_sha256_hex(p, n, out);
        return;
    }
    if (EVP_DigestInit_ex2(kc->md, kc->sha256, NULL) != 1 || EVP_DigestUpdate(kc->md, p, n) != 1 ||
        EVP_DigestFinal_ex(kc->md, md, &len) != 1 || len != sizeof md)
        abort();   /* as sigv4_sha256_hex */
    sigv4_hex(md, sizeof md, out);
}

/* sigv4_hmac through kc's HMAC context (kc NULL or without one: the one-shot). */
static void sigv4_kc_hmac(sigv4_keycache *kc, const unsigned char key[32], const char *msg,
                          size_t mlen, unsigned char out[32])
{
    size_t len = 0;
    if (!kc || !kc->hmac) {
        sigv4_hmac(key, 32, msg, mlen, out);
        return;
    }
    if (EVP_MAC_init(kc->hmac, key, 32, NULL) != 1 ||
        EVP_MAC_update(kc->hmac, (const unsigned char *)msg, mlen) != 1 ||
        EVP_MAC_final(kc->hmac, out, &len, 32) != 1 || len != 32)
        abort();
}

static void sigv4_keyslot_clear(sigv4_keyslot *s)
{
    if (s->secret) {
        OPENSSL_cleanse(s->secret, s->secret_len);
        free(s->secret);
    }
    free(s->region);
    free(s->service);
    OPENSSL_cleanse(s, sizeof *s);
}

sigv4_keycache *sigv4_keycache_new(size_t slots)
{
    sigv4_keycache *kc = util_calloc(1, sizeof *kc);
    kc->nslots = slots ? slots : 1;
    kc->slots = util_calloc(kc->nslots, sizeof *kc->slots);
    kc->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    kc->md = kc->sha256 ? EVP_MD_CTX_new() : NULL;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    kc->hmac = mac ? EVP_MAC_CTX_new(mac) : NULL;
    EVP_MAC_free(mac);                 /* the context holds its own reference */
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (kc->hmac && EVP_MAC_CTX_set_params(kc->hmac, params) != 1) {
        EVP_MAC_CTX_free(kc->hmac);
        kc->hmac = NULL;
    }
    return kc;
}

void sigv4_keycache_free(sigv4_keycache *kc)
{
    if (!kc) return;
    for (size_t i = 0; i < kc->nslots; i++) sigv4_keyslot_clear(&kc->slots[i]);
    free(kc->slots);
    EVP_MAC_CTX_free(kc->hmac);
    EVP_MD_CTX_free(kc->md);
    EVP_MD_free(kc->sha256);
    free(kc);
}

bool sigv4_keycache_get(sigv4_keycache *kc, const char *secret, const char *date8,
                        const char *region, const char *service, unsigned char key[32])
{
    if (!kc || strlen(date8) != 8) {
        sigv4_signing_key(secret, date8, region, service, key);
        return false;
    }
    size_t slen = strlen(secret);
    sigv4_keyslot *victim = &kc->slots[0];
    kc->clock++;
    for (size_t i = 0; i < kc->nslots; i++) {
        sigv4_keyslot *s = &kc->slots[i];
        if (!s->secret) {
            if (victim->secret) victim = s;
            continue;
        }
        if (s->secret_len == slen && memcmp(s->date8, date8, 8) == 0 &&
            strcmp(s->region, region) == 0 && strcmp(s->service, service) == 0 &&
            CRYPTO_memcmp(s->secret, secret, slen) == 0) {
            s->used = kc->clock;
            memcpy(key, s->key, 32);
            return true;
        }
        if (victim->secret && s->used < victim->used) victim = s;
    }
    sigv4_signing_key(secret, date8, region, service, key);
    sigv4_keyslot_clear(victim);
    victim->secret = util_strdup(secret);
    victim->secret_len = slen;
    memcpy(victim->date8, date8, 9);
    victim->region = util_strdup(region);
    victim->service = util_strdup(service);
    memcpy(victim->key, key, 32);
    victim->used = kc->clock;
    return false;
}

void sigv4_ses_smtp_password(const char *secret, const char *region, char out[64])
{
    unsigned char key[32], raw[33];
    sigv4_signing_key(secret, "11111111", region, "ses", key);
    raw[0] = 0x04;
    sigv4_hmac(key, sizeof key, "SendRawEmail", strlen("SendRawEmail"), raw + 1);
    EVP_EncodeBlock((unsigned char *)out, raw, (int)sizeof raw);   /* 44 characters + NUL */
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(raw, sizeof raw);
}

static bool sigv4_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.' || c == '~';
}

/* Python's str.split() white space, as far as ASCII goes (botocore's _header_value). */
static bool sigv4_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

static int sigv4_hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Appends n bytes percent-encoded: unreserved characters (and '/' if keep_slash) as they
 * are, every other byte as %XX (upper-case hex). */
static void sigv4_encode(strbuf *sb, const char *p, size_t n, bool keep_slash)
{
    static const char digits[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (sigv4_unreserved(c) || (keep_slash && c == '/')) {
            strbuf_append(sb, &p[i], 1);
        } else {
            char esc[3] = {'%', digits[c >> 4], digits[c & 15]};
            strbuf_append(sb, esc, 3);
        }
    }
}

/* Percent-decodes n bytes into out (room for n); a '%' not followed by two hex digits stays
 * a '%'. Returns the decoded length. */
static size_t sigv4_decode(const char *p, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (p[i] == '%' && i + 2 < n && (hi = sigv4_hexval((unsigned char)p[i + 1])) >= 0 &&
            (lo = sigv4_hexval((unsigned char)p[i + 2])) >= 0) {
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = p[i];
        }
    }
    return o;
}

/* Client text for a message: printable ASCII only (others as '?'), at most SIGV4_ECHO_MAX
 * characters, so that a message is always valid UTF-8 and short. */
static void sigv4_echo(strbuf *sb, const char *p, size_t n)
{
    for (size_t i = 0; i < n && i < SIGV4_ECHO_MAX; i++) {
        unsigned char c = (unsigned char)p[i];
        char o = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
        strbuf_append(sb, &o, 1);
    }
    if (n > SIGV4_ECHO_MAX) strbuf_puts(sb, "...");
}

/* ---- the canonical request ---- */

/* botocore's _normalize_url_path: remove_dot_segments (which also drops empty segments),
 * then quote(path, safe='/~'). */
static void sigv4_canonical_uri(strbuf *sb, const char *path)
{
    size_t len = strlen(path);
    if (len == 0) {
        strbuf_puts(sb, "/");
        return;
    }
    size_t nseg = 1;
    for (size_t i = 0; i < len; i++) nseg += path[i] == '/';
    size_t *start = util_malloc(nseg * sizeof *start), *slen = util_malloc(nseg * sizeof *slen);
    size_t n = 0;
    for (size_t i = 0; i <= len;) {
        size_t j = i;
        while (j < len && path[j] != '/') j++;
        size_t l = j - i;
        if (l == 0 || (l == 1 && path[i] == '.')) {
            /* empty or "." */
        } else if (l == 2 && path[i] == '.' && path[i + 1] == '.') {
            if (n > 0) n--;
        } else {
            start[n] = i;
            slen[n] = l;
            n++;
        }
        i = j + 1;
    }
    strbuf out;
    strbuf_init(&out);
    if (path[0] == '/') strbuf_puts(&out, "/");
    for (size_t k = 0; k < n; k++) {
        if (k) strbuf_puts(&out, "/");
        strbuf_append(&out, path + start[k], slen[k]);
    }
    if (path[len - 1] == '/' && n > 0) strbuf_puts(&out, "/");
    sigv4_encode(sb, out.buf ? out.buf : "", out.len, true);
    strbuf_free(&out);
    free(start);
    free(slen);
}

typedef struct sigv4_pair {
    char *key;                   /* encoded */
    char *value;
} sigv4_pair;

static int sigv4_pair_cmp(const void *a, const void *b)
{
    const sigv4_pair *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : strcmp(x->value, y->value);
}

static char *sigv4_reencode(const char *p, size_t n)
{
    char *raw = util_malloc(n + 1);
    size_t rn = sigv4_decode(p, n, raw);
    strbuf sb;
    strbuf_init(&sb);
    sigv4_encode(&sb, raw, rn, false);
    free(raw);
    return strbuf_steal(&sb);
}

/* Query pairs split on '&' and the first '=', decoded, encoded again, sorted. */
static void sigv4_canonical_query(strbuf *sb, const char *query)
{
    size_t len = strlen(query);
    if (len == 0) return;
    size_t cap = 1;
    for (size_t i = 0; i < len; i++) cap += query[i] == '&';
    sigv4_pair *pairs = util_malloc(cap * sizeof *pairs);
    size_t n = 0;
    for (size_t i = 0; i <= len;) {
        size_t j = i;
        while (j < len && query[j] != '&') j++;
        const char *eq = memchr(query + i, '=', j - i);
        size_t klen = eq ? (size_t)(eq - (query + i)) : j - i;
        pairs[n].key = sigv4_reencode(query + i, klen);
        pairs[n].value = eq ? sigv4_reencode(eq + 1, (size_t)(query + j - eq - 1))
                            : util_strdup("");
        n++;
        i = j + 1;
    }
    qsort(pairs, n, sizeof *pairs, sigv4_pair_cmp);
    for (size_t k = 0; k < n; k++) {
        if (k) strbuf_puts(sb, "&");
        strbuf_puts(sb, pairs[k].key);
        strbuf_puts(sb, "=");
        strbuf_puts(sb, pairs[k].value);
        free(pairs[k].key);
        free(pairs[k].value);
    }
    free(pairs);
}

static bool sigv4_name_eq(const char *a, size_t alen, const char *b)
{
    size_t i = 0;
    for (; i < alen && b[i]; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z') x = (unsigned char)(x + 32);
        if (y >= 'A' && y <= 'Z') y = (unsigned char)(y + 32);
        if (x != y) return false;
    }
    return i == alen && b[i] == '\0';
}

/* Appends value trimmed, runs of white space as one blank. */
static void sigv4_trimall(strbuf *sb, const char *v)
{
    bool pending = false, any = false;
    for (const char *p = v; *p; p++) {
        if (sigv4_space((unsigned char)*p)) {
            pending = any;
            continue;
        }
        if (pending) strbuf_append(sb, " ", 1);
        strbuf_append(sb, p, 1);
        pending = false;
        any = true;
    }
}

/* "name:v1,v2\n" for one signed header name (n bytes); false if r has no such header. */
static bool sigv4_canonical_header(strbuf *sb, const sigv4_request *r, const char *name,
                                   size_t n)
{
    bool found = false;
    strbuf_append(sb, name, n);
    strbuf_puts(sb, ":");
    for (size_t i = 0; i < r->nheaders; i++) {
        if (!r->headers[i].name || !sigv4_name_eq(name, n, r->headers[i].name)) continue;
        if (found) strbuf_puts(sb, ",");
        sigv4_trimall(sb, r->headers[i].value ? r->headers[i].value : "");
        found = true;
    }
    strbuf_puts(sb, "\n");
    return found;
}

char *sigv4_canonical_request(const sigv4_request *r, const char *signed_headers,
                              const char *payload_hash)
{
    strbuf sb;
    strbuf_init(&sb);
    strbuf_puts(&sb, r->method ? r->method : "");
    strbuf_puts(&sb, "\n");
    sigv4_canonical_uri(&sb, r->path ? r->path : "");
    strbuf_puts(&sb, "\n");
    sigv4_canonical_query(&sb, r->query ? r->query : "");
    strbuf_puts(&sb, "\n");
    for (const char *p = signed_headers;;) {
        const char *e = strchr(p, ';');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0 || !sigv4_canonical_header(&sb, r, p, n)) {
            strbuf_free(&sb);
            return NULL;
        }
        if (!e) break;
        p = e + 1;
    }
    strbuf_puts(&sb, "\n");
    strbuf_puts(&sb, signed_headers);
    strbuf_puts(&sb, "\n");
    strbuf_puts(&sb, payload_hash);
    return strbuf_steal(&sb);
}

/* ---- dates ---- */

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t sigv4_days(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* "YYYYMMDDTHHMMSSZ" (exactly) as seconds since the epoch. */
static bool sigv4_parse_date(const char *s, int64_t *out)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (strlen(s) != 16 || s[8] != 'T' || s[15] != 'Z') return false;
    int v[14], k = 0;
    for (int i = 0; i < 15; i++) {
        if (i == 8) continue;
        if (s[i] < '0' || s[i] > '9') return false;
        v[k++] = s[i] - '0';
    }
    int y = v[0] * 1000 + v[1] * 100 + v[2] * 10 + v[3];
    int mo = v[4] * 10 + v[5], d = v[6] * 10 + v[7];
    int h = v[8] * 10 + v[9], mi = v[10] * 10 + v[11], se = v[12] * 10 + v[13];
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap) ||
        h > 23 || mi > 59 || se > 59)
        return false;
    *out = sigv4_days(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
    return true;
}

static void sigv4_format_date(int64_t secs, char out[17])
{
    time_t t = (time_t)secs;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) != 16)
        memcpy(out, "00000000T000000Z", 17);
}

/* ---- the Authorization header ---- */

typedef struct sigv4_auth {
    char buf[SIGV4_AUTH_MAX + 1];
    const char *credential, *signed_headers, *signature;
    const char *parts[5];        /* the credential's key id, date, region, service, terminator */
} sigv4_auth;

/* The value of header name (any case) and how many fields carry it. */
static const char *sigv4_find_header(const sigv4_request *r, const char *name, size_t *count)
{
    const char *v = NULL;
    *count = 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        if (!r->headers[i].name || !util_streq_ci(r->headers[i].name, name)) continue;
        if (!v) v = r->headers[i].value ? r->headers[i].value : "";
        (*count)++;
    }
    return v;
}

/* Splits the header into its three parameters; false with *msg (malloc'd) if it is not
 * "AWS4-HMAC-SHA256 " followed by Credential, SignedHeaders and Signature, each once. */
static bool sigv4_parse_auth(const char *value, sigv4_auth *a, char **msg)
{
    size_t len = strlen(value);
    memcpy(a->buf, value, len + 1);
    char *p = a->buf;
    size_t alen = strlen(SIGV4_ALGORITHM);
    while (*p == ' ' || *p == '\t') p++;
    if (strncmp(p, SIGV4_ALGORITHM, alen) != 0 ||
        (p[alen] != ' ' && p[alen] != '\t' && p[alen] != '\0')) {
        strbuf sb;
        strbuf_init(&sb);
        strbuf_puts(&sb, "Unsupported AWS 'algorithm': '");
        size_t n = strcspn(p, " \t,");
        sigv4_echo(&sb, p, n);
        strbuf_puts(&sb, "' (kiln verifies AWS4-HMAC-SHA256 only).");
        *msg = strbuf_steal(&sb);
        return false;
    }
    p += alen;
    a->credential = a->signed_headers = a->signature = NULL;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        if (!*p) break;
        char *name = p;
        while (*p && *p != '=' && *p != ',' && *p != ' ' && *p != '\t') p++;
        if (*p != '=') {
            *msg = util_strdup("Authorization header's parameters must be name=value pairs.");
            return false;
        }
        *p++ = '\0';
        char *val = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t') p++;
        if (*p) *p++ = '\0';
        const char **slot = strcmp(name, "Credential") == 0      ? &a->credential
                            : strcmp(name, "SignedHeaders") == 0 ? &a->signed_headers
                            : strcmp(name, "Signature") == 0     ? &a->signature
                                                                 : NULL;
        if (!slot || *slot) {
            strbuf sb;
            strbuf_init(&sb);
            strbuf_puts(&sb, slot ? "Authorization header has more than one '"
                                  : "Authorization header has an unknown parameter '");
            sigv4_echo(&sb, name, strlen(name));
            strbuf_puts(&sb, "'.");
            *msg = strbuf_steal(&sb);
            return false;
        }
        *slot = val;
    }
    if (!a->credential || !a->signed_headers || !a->signature || !*a->credential ||
        !*a->signed_headers || !*a->signature) {
        strbuf sb;
        strbuf_init(&sb);
        if (!a->credential || !*a->credential)
            strbuf_puts(&sb, "Authorization header requires 'Credential' parameter. ");
        if (!a->signature || !*a->signature)
            strbuf_puts(&sb, "Authorization header requires 'Signature' parameter. ");
        if (!a->signed_headers || !*a->signed_headers)
            strbuf_puts(&sb, "Authorization header requires 'SignedHeaders' parameter. ");
        sb.buf[--sb.len] = '\0';   /* the last blank */
        *msg = strbuf_steal(&sb);
        return false;
    }
    /* KEYID/YYYYMMDD/region/service/aws4_request */
    char *c = (char *)a->credential;
    for (int i = 0; i < 5; i++) {
        a->parts[i] = c;
        char *slash = strchr(c, '/');
        if ((i < 4) != (slash != NULL) || slash == c || (i == 4 && !*c)) {
            *msg = util_strdup("Credential must be ACCESS_KEY_ID/YYYYMMDD/region/service/"
                               "aws4_request.");
            return false;
        }
        if (slash) {
            *slash = '\0';
            c = slash + 1;
        }
    }
    return true;
}

/* SignedHeaders: 1..64 names of token characters, none twice; host and date_name among
 * them. Returns NULL or a malloc'd message. */
static char *sigv4_check_signed(const char *list, const char *date_name)
{
    const char *names[SIGV4_SIGNED_MAX];
    size_t lens[SIGV4_SIGNED_MAX], n = 0;
    bool host = false, date = false;
    for (const char *p = list;;) {
        size_t l = strcspn(p, ";");
        if (l == 0 || n == SIGV4_SIGNED_MAX)
            return util_asprintf(l ? "SignedHeaders names more than %d headers."
                                   : "SignedHeaders has an empty header name.",
                                 SIGV4_SIGNED_MAX);
        for (size_t i = 0; i < l; i++)
            if (!sigv4_unreserved((unsigned char)p[i]) && !strchr("!#$%&'*+^`|", p[i]))
                return util_strdup("SignedHeaders has a character no header name has.");
        for (size_t k = 0; k < n; k++)
            if (lens[k] == l && memcmp(names[k], p, l) == 0)
                return util_strdup("SignedHeaders names a header twice.");
        names[n] = p;
        lens[n++] = l;
        host |= l == 4 && memcmp(p, "host", 4) == 0;
        date |= l == strlen(date_name) && memcmp(p, date_name, l) == 0;
        if (!p[l]) break;
        p += l + 1;
    }
    if (!host) return util_strdup("'Host' or ':authority' must be a 'SignedHeader' in the AWS "
                                  "Authorization.");
    if (!date)
        return util_asprintf("'%s' must be a 'SignedHeader' in the AWS Authorization.",
                             strcmp(date_name, "date") == 0 ? "Date" : "X-Amz-Date");
    return NULL;
}

/* True if the ';'-separated list has name. */
static bool sigv4_list_has(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list;;) {
        size_t l = strcspn(p, ";");
        if (l == n && memcmp(p, name, n) == 0) return true;
        if (!p[l]) return false;
        p += l + 1;
    }
}

static sigv4_result sigv4_fail(sigv4_result r, char **msg, char *text)
{
    if (msg) *msg = text;
    else free(text);
    return r;
}

/* The credential scope's date, region, service and terminator; BAD_SCOPE's message or NULL. */
static char *sigv4_check_scope(const sigv4_auth *a, const char *date, const char *region,
                               const char *service)
{
    strbuf sb;
    strbuf_init(&sb);
    if (strlen(a->parts[1]) != 8 || memcmp(a->parts[1], date, 8) != 0) {
        strbuf_puts(&sb, "Date in Credential scope does not match YYYYMMDD from ISO-8601 "
                         "version of date from HTTP: '");
        sigv4_echo(&sb, a->parts[1], strlen(a->parts[1]));
        strbuf_printf(&sb, "' != '%.8s', from '%s'.", date, date);
    } else if (strcmp(a->parts[2], region) != 0) {
        strbuf_puts(&sb, "Credential should be scoped to a valid region, not '");
        sigv4_echo(&sb, a->parts[2], strlen(a->parts[2]));
        strbuf_puts(&sb, "'.");
    } else if (strcmp(a->parts[3], service) != 0) {
        strbuf_printf(&sb, "Credential should be scoped to correct service: '%s'.", service);
    } else if (strcmp(a->parts[4], SIGV4_TERMINATOR) != 0) {
        strbuf_puts(&sb, "Credential should be scoped with a valid terminator: 'aws4_request', "
                         "not '");
        sigv4_echo(&sb, a->parts[4], strlen(a->parts[4]));
        strbuf_puts(&sb, "'.");
    } else {
        strbuf_free(&sb);
        return NULL;
    }
    return strbuf_steal(&sb);
}

/* More than 15 minutes from now: EXPIRED's message in AWS's words, or NULL. */
static char *sigv4_check_time(const char *date, int64_t date_s, int64_t now_ms)
{
    int64_t now_s = now_ms >= 0 ? now_ms / 1000 : -((-now_ms + 999) / 1000);
    char now_text[17], edge[17];
    sigv4_format_date(now_s, now_text);
    if (date_s < now_s - SIGV4_SKEW_S) {
        sigv4_format_date(now_s - SIGV4_SKEW_S, edge);
        return util_asprintf("Signature expired: %s is now earlier than %s (%s - 15 min.)", date,
                             edge, now_text);
    }
    if (date_s > now_s + SIGV4_SKEW_S) {
        sigv4_format_date(now_s + SIGV4_SKEW_S, edge);
        return util_asprintf("Signature not yet current: %s is still later than %s (%s + 15 "
                             "min.)",
                             date, edge, now_text);
    }
    return NULL;
}

sigv4_result sigv4_verify(const sigv4_request *r, const char *region, const char *service,
                          sigv4_secret_fn secret, void *arg, int64_t now_ms, char **key_id,
                          char **msg)
{
    return sigv4_verify_cached(r, region, service, secret, arg, now_ms, NULL, key_id, msg);
}

/* The hex signature of the canonical request creq, signed at amz_date for scope
 * ("date8/region/service/aws4_request") with the signing key. */
static void sigv4_signature_hex(sigv4_keycache *kc, const unsigned char key[32],
                                const char *amz_date, const char *scope, const char *creq,
                                char out[65])
{
    char creq_hash[65];
    sigv4_kc_sha256_hex(kc, creq, strlen(creq), creq_hash);
    char *sts = util_asprintf(SIGV4_ALGORITHM "\n%s\n%s\n%s", amz_date, scope, creq_hash);
    unsigned char sig[32];
    sigv4_kc_hmac(kc, key, sts, strlen(sts), sig);
    free(sts);
    sigv4_hex(sig, sizeof sig, out);
}

char *sigv4_sign(const sigv4_request *r, const char *signed_headers, const char *key_id,
                 const char *secret, const char *amz_date, const char *region,
                 const char *service, sigv4_keycache *kc)
{
    char body_hash[65];
    sigv4_kc_sha256_hex(kc, r->body ? r->body : "", r->body ? r->body_len : 0, body_hash);
    char *creq = sigv4_canonical_request(r, signed_headers, body_hash);
    if (!creq) return NULL;
    char date8[9];
    snprintf(date8, sizeof date8, "%.8s", amz_date);
    char *scope = util_asprintf("%s/%s/%s/" SIGV4_TERMINATOR, date8, region, service);
    unsigned char key[32];
    sigv4_keycache_get(kc, secret, date8, region, service, key);
    char sig[65];
    sigv4_signature_hex(kc, key, amz_date, scope, creq, sig);
    OPENSSL_cleanse(key, sizeof key);
    char *out = util_asprintf(SIGV4_ALGORITHM " Credential=%s/%s, SignedHeaders=%s, Signature=%s",
                              key_id, scope, signed_headers, sig);
    free(scope);
    free(creq);
    return out;
}

sigv4_result sigv4_verify_cached(const sigv4_request *r, const char *region,
                                 const char *service, sigv4_secret_fn secret, void *arg,
                                 int64_t now_ms, sigv4_keycache *kc, char **key_id, char **msg)
{
    if (key_id) *key_id = NULL;
    if (msg) *msg = NULL;
    size_t count;
    const char *authz = sigv4_find_header(r, "authorization", &count);
    if (!authz) return sigv4_fail(SIGV4_MISSING, msg, util_strdup(SIGV4_MSG_MISSING));
    if (count > 1)
        return sigv4_fail(SIGV4_MALFORMED, msg,
                          util_strdup("The request has more than one Authorization header."));
    if (strlen(authz) > SIGV4_AUTH_MAX)
        return sigv4_fail(SIGV4_MALFORMED, msg,
                          util_asprintf("The Authorization header is longer than %d bytes.",
                                        SIGV4_AUTH_MAX));
    sigv4_auth *a = util_malloc(sizeof *a);
    size_t used = strlen(authz) + 1;    /* of a->buf: what is wiped at the end */
    char *text = NULL;
    sigv4_result res = SIGV4_MALFORMED;
    if (!sigv4_parse_auth(authz, a, &text)) goto out;

    /* the signing date: X-Amz-Date, else an ISO 8601 basic Date */
    const char *date_name = "x-amz-date";
    const char *date = sigv4_find_header(r, "x-amz-date", &count);
    int64_t date_s = 0;
    if (!date) {
        const char *d = sigv4_find_header(r, "date", &count);
        if (d && sigv4_parse_date(d, &date_s)) {
            date = d;
            date_name = "date";
        }
    }
    if (!date) {
        text = util_strdup("Authorization header requires existence of either a 'X-Amz-Date' "
                           "or a 'Date' header.");
        goto out;
    }
    if (count > 1) {
        text = util_asprintf("The request has more than one %s header.", date_name);
        goto out;
    }
    if (!sigv4_parse_date(date, &date_s)) {
        strbuf sb;
        strbuf_init(&sb);
        strbuf_puts(&sb, "Date must be in ISO-8601 'basic format'. Got '");
        sigv4_echo(&sb, date, strlen(date));
        strbuf_puts(&sb, "'. See http://en.wikipedia.org/wiki/ISO_8601");
        text = strbuf_steal(&sb);
        goto out;
    }
    if ((text = sigv4_check_signed(a->signed_headers, date_name))) goto out;

    const char *sec = secret(arg, a->parts[0]);
    if (!sec) {
        res = SIGV4_UNKNOWN_KEY;
        text = util_strdup(SIGV4_MSG_UNKNOWN_KEY);
        goto out;
    }
    res = SIGV4_BAD_SCOPE;
    if ((text = sigv4_check_scope(a, date, region, service))) goto out;
    res = SIGV4_EXPIRED;
    if ((text = sigv4_check_time(date, date_s, now_ms))) goto out;

    /* the payload hash */
    res = SIGV4_MISMATCH;
    char body_hash[65];
    sigv4_kc_sha256_hex(kc, r->body ? r->body : "", r->body ? r->body_len : 0, body_hash);
    const char *sent = sigv4_find_header(r, "x-amz-content-sha256", &count);
    if (sent && sigv4_list_has(a->signed_headers, "x-amz-content-sha256") &&
        (count > 1 || strcmp(sent, body_hash) != 0)) {
        text = util_strdup("The provided 'x-amz-content-sha256' header does not match what was "
                           "computed.");
        goto out;
    }

    char *creq = sigv4_canonical_request(r, a->signed_headers, body_hash);
    if (!creq) {
        text = util_strdup(SIGV4_MSG_MISMATCH);
        goto out;
    }
    char *scope = util_asprintf("%s/%s/%s/%s", a->parts[1], a->parts[2], a->parts[3],
                                a->parts[4]);
    unsigned char key[32];
    sigv4_keycache_get(kc, sec, a->parts[1], region, service, key);
    char want[65];
    sigv4_signature_hex(kc, key, date, scope, creq, want);
    OPENSSL_cleanse(key, sizeof key);
    free(scope);
    free(creq);
    if (strlen(a->signature) != 64 || CRYPTO_memcmp(want, a->signature, 64) != 0) {
        text = util_strdup(SIGV4_MSG_MISMATCH);
        goto out;
    }
    res = SIGV4_OK;
    if (key_id) *key_id = util_strdup(a->parts[0]);
out:
    OPENSSL_cleanse(a->buf, used);
    free(a);
    if (res == SIGV4_OK) return res;
    return sigv4_fail(res, msg, text);
}
