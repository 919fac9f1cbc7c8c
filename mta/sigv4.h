/* sigv4.h — AWS Signature Version 4 as a server checks it (pure, fuzzed): the
 * Authorization header's parts, the canonical request (URI normalized and encoded once
 * more, as for every service but S3; query pairs decoded, re-encoded and sorted; signed
 * headers lower-cased, trimmed, sequential blanks collapsed), the string to sign, the key
 * derivation HMAC chain, x-amz-date within 15 minutes of the clock, the payload hash
 * (x-amz-content-sha256 when sent, else SHA-256 of the body), and a constant-time
 * comparison. Also SES's SMTP password derivation from a secret access key (version 0x04),
 * and the signing side for kiln's own tools (sigv4_sign).
 *
 * Why by hand: no Debian library verifies SigV4 on the server side (libcurl only signs);
 * the primitives (SHA-256, HMAC, CRYPTO_memcmp) are OpenSSL's. */
#ifndef KILN_SIGV4_H
#define KILN_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sigv4_header {
    const char *name;            /* any case */
    const char *value;
} sigv4_header;

typedef struct sigv4_request {
    const char *method;
    const char *path;            /* raw, percent-encoded as received */
    const char *query;           /* raw, without '?'; "" if none */
    const sigv4_header *headers;
    size_t nheaders;
    const char *body;
    size_t body_len;
} sigv4_request;

typedef enum {
    SIGV4_OK = 0,
    SIGV4_MISSING,        /* no Authorization header: 403 MissingAuthenticationTokenException */
    SIGV4_MALFORMED,      /* unparsable header, missing X-Amz-Date, unsigned host/x-amz-date:
                             403 IncompleteSignatureException */
    SIGV4_UNKNOWN_KEY,    /* access key id not configured: 403 UnrecognizedClientException */
    SIGV4_BAD_SCOPE,      /* scope's date/region/service/terminator wrong: 403 SignatureDoesNotMatch */
    SIGV4_EXPIRED,        /* x-amz-date more than 15 minutes from now: 403 InvalidSignatureException */
    SIGV4_MISMATCH,       /* signature (or x-amz-content-sha256) differs: 403 SignatureDoesNotMatch */
} sigv4_result;

/* The error type SES answers for r (e.g. "SignatureDoesNotMatch"), and its HTTP status (403). */
const char *sigv4_error_type(sigv4_result r);

/* Looks up the secret of an access key id; NULL if unknown. */
typedef const char *(*sigv4_secret_fn)(void *arg, const char *access_key_id);

/* Verifies r against region/service ("ses") at now_ms (wall clock, ms). On SIGV4_OK,
 * *key_id (may be NULL) receives the malloc'd access key id. On failure *msg receives a
 * malloc'd message in AWS's words (e.g. "Signature expired: 20261206T010000Z is now earlier
 * than 20261206T024500Z (20261206T030000Z - 15 min.)", "The request signature we calculated
 * does not match the signature you provided. Check your AWS Secret Access Key and signing
 * method. Consult the service documentation for details.", "The security token included in
 * the request is invalid."). Presigned query authentication (X-Amz-Signature in the query)
 * is not accepted: SIGV4_MISSING. */
sigv4_result sigv4_verify(const sigv4_request *r, const char *region, const char *service,
                          sigv4_secret_fn secret, void *arg, int64_t now_ms,
                          char **key_id, char **msg);

/* A small cache of derived signing keys (the 4-HMAC chain of secret, date, region, service),
 * so that a client signing many requests on one day costs one HMAC per request, not five.
 * Keyed by all four inputs (the secret itself, compared in constant time): a new day, a
 * region or service, or a reloaded secret misses and derives afresh. At most `slots`
 * entries, the least recently used replaced; secrets and keys are wiped when replaced and
 * when the cache is freed. Not thread-safe: one cache per thread (the API's workers each
 * keep their own). */
typedef struct sigv4_keycache sigv4_keycache;
sigv4_keycache *sigv4_keycache_new(size_t slots);
void sigv4_keycache_free(sigv4_keycache *kc);
/* The signing key for (secret, date8 "YYYYMMDD", region, service) into key; true if it came
 * from the cache. kc NULL: always derived. */
bool sigv4_keycache_get(sigv4_keycache *kc, const char *secret, const char *date8,
                        const char *region, const char *service, unsigned char key[32]);
/* sigv4_verify with the signing key taken from kc (NULL: derived every time). */
sigv4_result sigv4_verify_cached(const sigv4_request *r, const char *region,
                                 const char *service, sigv4_secret_fn secret, void *arg,
                                 int64_t now_ms, sigv4_keycache *kc, char **key_id, char **msg);

/* The canonical request for r and the signed header list (";"-separated, lower-case), with
 * payload_hash the hex SHA-256 to put last. malloc'd; NULL if signed_headers names a header
 * r lacks. Exposed for tests and the fuzz target. */
char *sigv4_canonical_request(const sigv4_request *r, const char *signed_headers,
                              const char *payload_hash);

/* The signing side, for kiln's own load tool and tests (real clients' signatures are what
 * the integration tests check): the Authorization header value for r signed with key_id
 * and secret at amz_date ("YYYYMMDDTHHMMSSZ", which r must carry as x-amz-date when that
 * header is signed) for region and service, over signed_headers (";"-separated, lower-case,
 * sorted, each present in r) and the SHA-256 of r's body. The signing key comes from kc
 * (NULL: derived). malloc'd; NULL when a signed header is missing from r. */
char *sigv4_sign(const sigv4_request *r, const char *signed_headers, const char *key_id,
                 const char *secret, const char *amz_date, const char *region,
                 const char *service, sigv4_keycache *kc);

/* SES's SMTP password for a secret access key in region (AWS's documented algorithm:
 * HMAC-SHA256 chain "AWS4"+secret, "11111111", region, "ses", "aws4_request",
 * "SendRawEmail"; 0x04 prepended; base64). out gets a NUL-terminated string. */
void sigv4_ses_smtp_password(const char *secret, const char *region, char out[64]);

#endif
