/* fuzz_sigv4.c — fuzz target for SigV4 verification and canonicalization (mta/sigv4.c).
 * Input: an HTTP request as text — "METHOD\n", "PATH[?QUERY]\n", header lines "Name: value"
 * up to an empty line (a CR before LF is dropped), then the body. The request, with
 * whatever Authorization it carries, is verified (keys AKIDEXAMPLE and the seeds' one);
 * then its canonical request is made for the Authorization's SignedHeaders; then it is
 * signed properly here (host and x-amz-date set, every other header signed) and verified
 * again. Promises checked: every answer has its SES error type and, when not OK, a message
 * of printable ASCII (it goes into a JSON body) and no key id; a canonical URI is "/" and
 * encoded segments only (unreserved characters and %XX, no empty, "." or ".." segment), a
 * canonical query only encoded pairs joined by '&', the last line the payload hash; a
 * request signed with the canonical request sigv4 describes verifies, and the same request
 * with one body byte changed does not. Built for libFuzzer by `make fuzz`, replayed over its
 * corpus and mutations in `make check`. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/sigv4.h"

#define FUZZ_HEADERS_MAX 32
#define FUZZ_KEY "AKIDEXAMPLE"
#define FUZZ_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define FUZZ_DATE "20261206T010000Z"
#define FUZZ_NOW_MS INT64_C(1796518800000)   /* FUZZ_DATE */
#define FUZZ_REGION "us-east-1"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* AWS's example key, and the key of the seeds made by tests/unit/sigv4_vectors.py (so that
 * their requests verify and mutations of them reach every check). */
static const char *fuzz_secret(void *arg, const char *id)
{
    (void)arg;
    if (strcmp(id, FUZZ_KEY) == 0) return FUZZ_SECRET;
    if (strcmp(id, "AKIAKILNTEST0000001") == 0) return "kilnTestSecretKey/0123456789abcdefghijklm";
    return NULL;
}

static bool fuzz_unreserved(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.' || c == '~';
}

static bool fuzz_hex_upper(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

/* An encoded string of n bytes: unreserved characters, extra, and %XX only. */
static void fuzz_check_encoded(const char *p, size_t n, const char *extra)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%') {
            if (i + 2 >= n || !fuzz_hex_upper(p[i + 1]) || !fuzz_hex_upper(p[i + 2])) abort();
            i += 2;
        } else if (!fuzz_unreserved(p[i]) && !strchr(extra, p[i])) {
            abort();
        }
    }
}

static void fuzz_check_result(sigv4_result r, const char *msg, const char *id)
{
    if (!sigv4_error_type(r)) abort();
    if (r == SIGV4_OK) {
        if (msg || !id || (strcmp(id, FUZZ_KEY) != 0 && strcmp(id, "AKIAKILNTEST0000001") != 0))
            abort();
        return;
    }
    if (!msg || id || !*msg) abort();
    for (const char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f) abort();
}

static void fuzz_check_canonical(const char *cr, const char *method, const char *path,
                                 const char *payload)
{
    size_t ml = strlen(method);
    if (strncmp(cr, method, ml) != 0 || cr[ml] != '\n') abort();
    const char *uri = cr + ml + 1, *uri_end = strchr(uri, '\n');
    if (!uri_end || ((path[0] == '/' || !path[0]) && *uri != '/')) abort();
    fuzz_check_encoded(uri, (size_t)(uri_end - uri), "/");
    for (const char *s = uri; s < uri_end; s++) {
        if (*s != '/' || s + 1 == uri_end) continue;
        size_t l = strcspn(s + 1, "/\n");
        if (l == 0 || (l == 1 && s[1] == '.') || (l == 2 && s[1] == '.' && s[2] == '.')) abort();
    }
    const char *q = uri_end + 1, *q_end = strchr(q, '\n');
    if (!q_end) abort();
    fuzz_check_encoded(q, (size_t)(q_end - q), "=&");
    size_t pl = strlen(payload), cl = strlen(cr);
    if (cl < pl + 1 || strcmp(cr + cl - pl, payload) != 0 || cr[cl - pl - 1] != '\n') abort();
}

static void fuzz_hmac(const void *key, size_t klen, const char *msg, unsigned char out[32])
{
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out, &len))
        abort();
}

static void fuzz_sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;
    if (EVP_Digest(p, n, md, &len, EVP_sha256(), NULL) != 1) abort();
    for (int i = 0; i < 32; i++) {
        out[2 * i] = "0123456789abcdef"[md[i] >> 4];
        out[2 * i + 1] = "0123456789abcdef"[md[i] & 15];
    }
    out[64] = '\0';
}

static int fuzz_strcmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A header name the HTTP layer would pass on (RFC 9110 token). */
static bool fuzz_token(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!fuzz_unreserved(*s) && !strchr("!#$%&'*+^`|", *s)) return false;
    return true;
}

/* Signs r (host and x-amz-date among its headers) over every header, as a client would,
 * and checks that sigv4_verify accepts it and refuses it with a body byte changed. */
static void fuzz_round_trip(sigv4_request *r)
{
    char *names[FUZZ_HEADERS_MAX];
    size_t n = 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        char *l = util_strdup(r->headers[i].name);
        util_lowercase(l);
        bool dup = false;
        for (size_t k = 0; k < n; k++) dup |= strcmp(names[k], l) == 0;
        if (dup) free(l);
        else names[n++] = l;
    }
    qsort(names, n, sizeof *names, fuzz_strcmp);
    strbuf sh;
    strbuf_init(&sh);
    for (size_t k = 0; k < n; k++) {
        if (k) strbuf_puts(&sh, ";");
        strbuf_puts(&sh, names[k]);
        free(names[k]);
    }
    char payload[65], crh[65];
    fuzz_sha256_hex(r->body, r->body_len, payload);
    char *cr = sigv4_canonical_request(r, sh.buf, payload);
    if (!cr) abort();
    fuzz_check_canonical(cr, r->method, r->path, payload);
    fuzz_sha256_hex(cr, strlen(cr), crh);
    free(cr);
    char *sts = util_asprintf("AWS4-HMAC-SHA256\n" FUZZ_DATE "\n20261206/" FUZZ_REGION
                              "/ses/aws4_request\n%s", crh);
    unsigned char k[32];
    fuzz_hmac("AWS4" FUZZ_SECRET, strlen("AWS4" FUZZ_SECRET), "20261206", k);
    fuzz_hmac(k, 32, FUZZ_REGION, k);
    fuzz_hmac(k, 32, "ses", k);
    fuzz_hmac(k, 32, "aws4_request", k);
    fuzz_hmac(k, 32, sts, k);
    free(sts);
    char sig[65];
    for (int i = 0; i < 32; i++) {
        sig[2 * i] = "0123456789abcdef"[k[i] >> 4];
        sig[2 * i + 1] = "0123456789abcdef"[k[i] & 15];
    }
    sig[64] = '\0';
    char *authz = util_asprintf("AWS4-HMAC-SHA256 Credential=" FUZZ_KEY "/20261206/" FUZZ_REGION
                                "/ses/aws4_request, SignedHeaders=%s, Signature=%s",
                                sh.buf, sig);
    strbuf_free(&sh);
    sigv4_header *h = (sigv4_header *)r->headers;
    h[r->nheaders].name = "Authorization";
    h[r->nheaders].value = authz;
    r->nheaders++;
    char *id = NULL, *msg = NULL;
    sigv4_result res = sigv4_verify(r, FUZZ_REGION, "ses", fuzz_secret, NULL, FUZZ_NOW_MS, &id,
                                    &msg);
    fuzz_check_result(res, msg, id);
    if (res != SIGV4_OK) abort();
    free(id);
    if (r->body_len > 0) {
        char *body = util_malloc(r->body_len);
        memcpy(body, r->body, r->body_len);
        body[r->body_len / 2] ^= 1;
        const char *orig = r->body;
        r->body = body;
        res = sigv4_verify(r, FUZZ_REGION, "ses", fuzz_secret, NULL, FUZZ_NOW_MS, &id, &msg);
        fuzz_check_result(res, msg, id);
        if (res != SIGV4_MISMATCH) abort();
        free(msg);
        r->body = orig;
        free(body);
    }
    r->nheaders--;
    free(authz);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = util_malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    size_t tlen = strlen(text);   /* the body is what follows the empty line, up to a NUL */

    /* request line parts and headers */
    char *lines[2 + FUZZ_HEADERS_MAX];
    size_t nlines = 0;
    char *p = text, *body = text + tlen;
    while (p < text + tlen && nlines < 2 + FUZZ_HEADERS_MAX) {
        char *nl = strchr(p, '\n');
        if (!nl) {
            lines[nlines++] = p;
            p = text + tlen;
            break;
        }
        *nl = '\0';
        if (nl > p && nl[-1] == '\r') nl[-1] = '\0';
        if (nlines >= 2 && !*p) {
            p = nl + 1;
            break;
        }
        lines[nlines++] = p;
        p = nl + 1;
    }
    body = p;
    const char *method = nlines > 0 ? lines[0] : "GET";
    char *path = nlines > 1 ? lines[1] : (char *)"/";
    const char *query = "";
    char *qm = strchr(path, '?');
    if (qm) {
        *qm = '\0';
        query = qm + 1;
    }
    sigv4_header hs[FUZZ_HEADERS_MAX + 3];
    size_t nh = 0;
    for (size_t i = 2; i < nlines; i++) {
        char *colon = strchr(lines[i], ':');
        if (!colon) continue;
        *colon = '\0';
        hs[nh].name = lines[i];
        hs[nh].value = colon + 1;
        nh++;
    }
    sigv4_request r = {method, path, query, hs, nh, body, (size_t)(text + tlen - body)};

    /* 1. as sent */
    char *id = NULL, *msg = NULL;
    sigv4_result res = sigv4_verify(&r, FUZZ_REGION, "ses", fuzz_secret, NULL, FUZZ_NOW_MS, &id,
                                    &msg);
    fuzz_check_result(res, msg, id);
    free(id);
    free(msg);

    /* 2. the canonical request for the SignedHeaders it names */
    char *sh = NULL;
    for (size_t i = 0; i < nh && !sh; i++) {
        const char *s = util_streq_ci(hs[i].name, "authorization")
                            ? strstr(hs[i].value, "SignedHeaders=") : NULL;
        if (s) sh = util_strndup(s + 14, strcspn(s + 14, ", \t"));
    }
    char *cr = sigv4_canonical_request(&r, sh && *sh ? sh : "host", "UNSIGNED");
    if (cr) fuzz_check_canonical(cr, method, path, "UNSIGNED");
    free(cr);
    free(sh);

    /* 3. signed properly: verifies; a changed body byte does not */
    size_t keep = 0;
    for (size_t i = 0; i < nh; i++) {
        const char *n = hs[i].name;
        if (!fuzz_token(n) || util_streq_ci(n, "authorization") || util_streq_ci(n, "host") ||
            util_streq_ci(n, "x-amz-date") || util_streq_ci(n, "date") ||
            util_streq_ci(n, "x-amz-content-sha256"))
            continue;
        hs[keep++] = hs[i];
    }
    hs[keep].name = "Host";
    hs[keep++].value = "kiln.test:8587";
    hs[keep].name = "X-Amz-Date";
    hs[keep++].value = FUZZ_DATE;
    r.nheaders = keep;
    fuzz_round_trip(&r);

    free(text);
    return 0;
}
