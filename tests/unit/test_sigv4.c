/* test_sigv4.c — AWS Signature Version 4 as kiln's SES API checks it (mta/sigv4.c), against
 * requests signed by the real clients (tests/unit/sigv4_vectors.h, made by
 * sigv4_vectors.py with Debian's boto3/awscrt and botocore's SigV4Auth): each verifies, and
 * the canonical request is byte for byte botocore's; AWS's published test-suite request
 * "get-vanilla"; the Authorization header's accepted spellings; and what a client sees
 * when something is wrong — a wrong secret, an unknown key, a tampered body, a stale or
 * early date (AWS's message), a wrong region, an unsigned host, no Authorization at all,
 * absurd headers — each the SES error type its SDK raises. Also SES SMTP passwords as
 * AWS's documented script derives them; the signing-key cache (hits, a miss for any other
 * secret, date, region or service, bounded with the least recently used replaced, and
 * verification through it answering as without it). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"
#include "mta/sigv4.h"
#include "tests/unit/sigv4_vectors.h"
#include "tests/unit/testlib.h"

#define SES "ses"
#define MIN_MS INT64_C(60000)

/* AWS's test suite (aws-sig-v4-test-suite, "get-vanilla"): scope 20150830/us-east-1/service */
#define VANILLA_KEY "AKIDEXAMPLE"
#define VANILLA_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define VANILLA_NOW_MS INT64_C(1440938160000)   /* 2015-08-30T12:36:00Z */

typedef struct test_keys {
    const char *id[2];
    const char *secret[2];
    int lookups;
} test_keys;

static const char *test_secret(void *arg, const char *id)
{
    test_keys *k = arg;
    k->lookups++;
    for (int i = 0; i < 2; i++)
        if (k->id[i] && strcmp(k->id[i], id) == 0) return k->secret[i];
    return NULL;
}

static test_keys keys_of(const char *id, const char *secret)
{
    test_keys k = {{id, NULL}, {secret, NULL}, 0};
    return k;
}

/* A request of a vector, with room to change its headers. */
typedef struct test_req {
    sigv4_request r;
    sigv4_header h[20];
} test_req;

static void req_of(test_req *t, const sigv4_vector *v)
{
    memset(t, 0, sizeof *t);
    for (size_t i = 0; i < v->nheaders; i++) {
        t->h[i].name = v->headers[i][0];
        t->h[i].value = v->headers[i][1];
    }
    t->r.method = v->method;
    t->r.path = v->path;
    t->r.query = v->query;
    t->r.headers = t->h;
    t->r.nheaders = v->nheaders;
    t->r.body = v->body;
    t->r.body_len = v->body_len;
}

/* The header named name (exact) in t, or a check failure. */
static sigv4_header *req_header(test_req *t, const char *name)
{
    for (size_t i = 0; i < t->r.nheaders; i++)
        if (strcmp(t->h[i].name, name) == 0) return &t->h[i];
    ck_abort_msg("no %s header", name);
    return NULL;
}

static void req_add(test_req *t, const char *name, const char *value)
{
    ck_assert_uint_lt(t->r.nheaders, 20);
    t->h[t->r.nheaders].name = name;
    t->h[t->r.nheaders].value = value;
    t->r.nheaders++;
}

static const sigv4_vector *vector_named(const char *prefix)
{
    for (size_t i = 0; i < sizeof sigv4_vectors / sizeof sigv4_vectors[0]; i++)
        if (strncmp(sigv4_vectors[i].name, prefix, strlen(prefix)) == 0) return &sigv4_vectors[i];
    ck_abort_msg("no vector %s", prefix);
    return NULL;
}

/* sigv4_verify with the vectors' key, region and clock (plus skew_ms); the message in *msg. */
static sigv4_result verify(const test_req *t, const char *region, int64_t skew_ms, char **msg)
{
    test_keys k = keys_of(SIGV4_VEC_KEY_ID, SIGV4_VEC_SECRET);
    char *id = NULL;
    sigv4_result r = sigv4_verify(&t->r, region, SES, test_secret, &k,
                                  SIGV4_VEC_NOW_MS + skew_ms, &id, msg);
    if (r == SIGV4_OK) {
        ck_assert_ptr_nonnull(id);
        ck_assert_str_eq(id, SIGV4_VEC_KEY_ID);
        ck_assert_ptr_null(*msg);
    } else {
        ck_assert_ptr_null(id);
        ck_assert_ptr_nonnull(*msg);
    }
    free(id);
    return r;
}

static void expect(const test_req *t, sigv4_result want, const char *type, const char *msg_part)
{
    char *msg = NULL;
    sigv4_result got = verify(t, SIGV4_VEC_REGION, 0, &msg);
    ck_assert_msg(got == want, "result %d, want %d (%s)", got, want, msg ? msg : "");
    ck_assert_str_eq(sigv4_error_type(got), type);
    if (msg_part) ck_assert_msg(strstr(msg, msg_part), "message \"%s\" lacks \"%s\"", msg, msg_part);
    free(msg);
}

/* ---- the clients' requests ---- */

START_TEST(test_vectors_verify)
{
    const sigv4_vector *v = &sigv4_vectors[_i];
    test_req t;
    req_of(&t, v);
    char *msg = NULL;
    sigv4_result r = verify(&t, SIGV4_VEC_REGION, 0, &msg);
    ck_assert_msg(r == SIGV4_OK, "%s [%s]: %d %s", v->name, v->signer, r, msg ? msg : "");
}
END_TEST

/* The SignedHeaders of an Authorization value (malloc'd). */
static char *signed_of(const char *authz)
{
    const char *p = strstr(authz, "SignedHeaders=");
    ck_assert_ptr_nonnull(p);
    p += strlen("SignedHeaders=");
    return util_strndup(p, strcspn(p, ", "));
}

START_TEST(test_vectors_canonical)
{
    size_t checked = 0;
    for (size_t i = 0; i < sizeof sigv4_vectors / sizeof sigv4_vectors[0]; i++) {
        const sigv4_vector *v = &sigv4_vectors[i];
        if (!v->canonical) continue;
        test_req t;
        req_of(&t, v);
        char *sh = signed_of(req_header(&t, "Authorization")->value);
        const char *payload = strrchr(v->canonical, '\n') + 1;
        char *cr = sigv4_canonical_request(&t.r, sh, payload);
        ck_assert_ptr_nonnull(cr);
        ck_assert_msg(strcmp(cr, v->canonical) == 0, "%s:\n%s\n--- botocore:\n%s", v->name, cr,
                      v->canonical);
        free(cr);
        free(sh);
        checked++;
    }
    ck_assert_uint_ge(checked, 6);
}
END_TEST

/* Both signers of Debian's clients sign the same sesv2 call alike (same signature). */
START_TEST(test_vectors_signers_agree)
{
    const sigv4_vector *crt = vector_named("GetSuppressedDestination");
    ck_assert_str_eq(crt->signer, "awscrt");
    const sigv4_vector *py = crt + 1;
    ck_assert_str_eq(py->signer, "SigV4Auth");
    test_req a, b;
    req_of(&a, crt);
    req_of(&b, py);
    ck_assert_str_eq(req_header(&a, "Authorization")->value,
                     req_header(&b, "Authorization")->value);
}
END_TEST

START_TEST(test_get_vanilla)
{
    sigv4_header h[] = {
        {"Host", "example.amazonaws.com"},
        {"X-Amz-Date", "20150830T123600Z"},
        {"Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
                          "aws4_request, SignedHeaders=host;x-amz-date, Signature="
                          "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
    };
    sigv4_request r = {"GET", "/", "", h, 3, "", 0};
    char *cr = sigv4_canonical_request(
        &r, "host;x-amz-date", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    ck_assert_str_eq(cr, "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
                         "host;x-amz-date\n"
                         "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    free(cr);
    test_keys k = keys_of(VANILLA_KEY, VANILLA_SECRET);
    char *id = NULL, *msg = NULL;
    ck_assert_int_eq(sigv4_verify(&r, "us-east-1", "service", test_secret, &k, VANILLA_NOW_MS,
                                  &id, &msg),
                     SIGV4_OK);
    ck_assert_str_eq(id, VANILLA_KEY);
    free(id);
    /* the same request for another service is a scope error, not a signature error */
    ck_assert_int_eq(sigv4_verify(&r, "us-east-1", SES, test_secret, &k, VANILLA_NOW_MS, NULL,
                                  &msg),
                     SIGV4_BAD_SCOPE);
    ck_assert_str_eq(msg, "Credential should be scoped to correct service: 'ses'.");
    free(msg);
}
END_TEST

/* ---- the Authorization header's spellings ---- */

START_TEST(test_authorization_spellings)
{
    const sigv4_vector *v = vector_named("PutDedicatedIpWarmupAttributes");
    test_req t;
    req_of(&t, v);
    sigv4_header *a = req_header(&t, "Authorization");
    const char *orig = a->value;
    const char *cred = strstr(orig, "Credential=");
    const char *sh = strstr(orig, "SignedHeaders=");
    const char *sig = strstr(orig, "Signature=");
    int cl = (int)strcspn(cred, ","), sl = (int)strcspn(sh, ",");
    char *forms[] = {
        util_asprintf("AWS4-HMAC-SHA256 %.*s,%.*s,%s", cl, cred, sl, sh, sig),
        util_asprintf("  AWS4-HMAC-SHA256   %.*s ,  %.*s ,\t%s  ", cl, cred, sl, sh, sig),
        util_asprintf("AWS4-HMAC-SHA256 %s, %.*s, %.*s", sig, sl, sh, cl, cred),
        util_asprintf("AWS4-HMAC-SHA256 %.*s %.*s %s", cl, cred, sl, sh, sig),
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        a->value = forms[i];
        expect(&t, SIGV4_OK, "", NULL);
        free(forms[i]);
    }
    /* any header-name case */
    a->name = "authorization";
    a->value = orig;
    req_header(&t, "X-Amz-Date")->name = "x-AMZ-date";
    req_header(&t, "Content-Type")->name = "CONTENT-TYPE";
    expect(&t, SIGV4_OK, "", NULL);
}
END_TEST

START_TEST(test_authorization_malformed)
{
    const sigv4_vector *v = vector_named("PutDedicatedIpWarmupAttributes");
    test_req t;
    req_of(&t, v);
    sigv4_header *a = req_header(&t, "Authorization");
    const char *orig = a->value;
    const char *sig = strstr(orig, "Signature=");
    char *sigless = util_strndup(orig, (size_t)(sig - orig));
    struct {
        const char *value;
        const char *msg;
    } cases[] = {
        {sigless, "Authorization header requires 'Signature' parameter."},
        {"AWS4-HMAC-SHA256", "requires 'Credential' parameter"},
        {"AWS4-HMAC-SHA512 Credential=a/b/c/d/e, SignedHeaders=host, Signature=00",
         "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512'"},
        {"Bearer abc", "Unsupported AWS 'algorithm'"},
        {"AWS4-HMAC-SHA256 Credential=AKIAKILNTEST0000001/20261206/us-east-1/ses, "
         "SignedHeaders=host;x-amz-date, Signature=00",
         "Credential must be ACCESS_KEY_ID/YYYYMMDD/region/service/aws4_request."},
        {"AWS4-HMAC-SHA256 Credential=AKIAKILNTEST0000001/20261206/us-east-1/ses/aws4_request/x, "
         "SignedHeaders=host;x-amz-date, Signature=00",
         "Credential must be"},
        {"AWS4-HMAC-SHA256 Credential=a/b/c/d/e, Credential=a/b/c/d/e, SignedHeaders=host, "
         "Signature=00",
         "more than one 'Credential'"},
        {"AWS4-HMAC-SHA256 Credential=a/b/c/d/e, Extra=1, SignedHeaders=host, Signature=00",
         "unknown parameter 'Extra'"},
        {"AWS4-HMAC-SHA256 Credential", "name=value"},
        {"AWS4-HMAC-SHA256 Credential=AKIAKILNTEST0000001/20261206/us-east-1/ses/aws4_request, "
         "SignedHeaders=host;;x-amz-date, Signature=00",
         "empty header name"},
        {"AWS4-HMAC-SHA256 Credential=AKIAKILNTEST0000001/20261206/us-east-1/ses/aws4_request, "
         "SignedHeaders=host;x-amz-date;host, Signature=00",
         "names a header twice"},
        {"AWS4-HMAC-SHA256 Credential=AKIAKILNTEST0000001/20261206/us-east-1/ses/aws4_request, "
         "SignedHeaders=host;x amz, Signature=00",
         "name=value"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        a->value = cases[i].value;
        expect(&t, SIGV4_MALFORMED, "IncompleteSignatureException", cases[i].msg);
    }
    free(sigless);

    /* more than 4 KB */
    char *big = util_malloc(5000);
    snprintf(big, 5000, "%s", orig);
    size_t n = strlen(big);
    memset(big + n, ' ', 4999 - n);
    big[4999] = '\0';
    a->value = big;
    expect(&t, SIGV4_MALFORMED, "IncompleteSignatureException", "longer than 4096 bytes");
    free(big);

    /* 65 signed headers */
    strbuf sb;
    strbuf_init(&sb);
    strbuf_puts(&sb, "AWS4-HMAC-SHA256 Credential=AKIAKILNTEST0000001/20261206/us-east-1/ses/"
                     "aws4_request, SignedHeaders=host;x-amz-date");
    for (int i = 0; i < 63; i++) strbuf_printf(&sb, ";x-h%d", i);
    strbuf_puts(&sb, ", Signature=00");
    a->value = sb.buf;
    expect(&t, SIGV4_MALFORMED, "IncompleteSignatureException", "more than 64 headers");
    strbuf_free(&sb);

    /* two Authorization headers */
    a->value = orig;
    req_add(&t, "Authorization", orig);
    expect(&t, SIGV4_MALFORMED, "IncompleteSignatureException", "more than one Authorization");
}
END_TEST

/* ---- what a client sees when something is wrong ---- */

START_TEST(test_wrong_secret)
{
    test_req t;
    req_of(&t, vector_named("SendEmail"));
    test_keys k = keys_of(SIGV4_VEC_KEY_ID, "kilnTestSecretKey/0123456789abcdefghijkl0");
    char *id = NULL, *msg = NULL;
    ck_assert_int_eq(sigv4_verify(&t.r, SIGV4_VEC_REGION, SES, test_secret, &k, SIGV4_VEC_NOW_MS,
                                  &id, &msg),
                     SIGV4_MISMATCH);
    ck_assert_ptr_null(id);
    ck_assert_str_eq(msg, "The request signature we calculated does not match the signature you "
                          "provided. Check your AWS Secret Access Key and signing method. Consult "
                          "the service documentation for details.");
    ck_assert_str_eq(sigv4_error_type(SIGV4_MISMATCH), "SignatureDoesNotMatch");
    free(msg);
}
END_TEST

START_TEST(test_unknown_key)
{
    test_req t;
    req_of(&t, vector_named("SendEmail"));
    test_keys k = keys_of("AKIAOTHERKEY0000001", SIGV4_VEC_SECRET);
    char *msg = NULL;
    ck_assert_int_eq(sigv4_verify(&t.r, SIGV4_VEC_REGION, SES, test_secret, &k, SIGV4_VEC_NOW_MS,
                                  NULL, &msg),
                     SIGV4_UNKNOWN_KEY);
    ck_assert_str_eq(msg, "The security token included in the request is invalid.");
    ck_assert_str_eq(sigv4_error_type(SIGV4_UNKNOWN_KEY), "UnrecognizedClientException");
    ck_assert_int_eq(k.lookups, 1);
    free(msg);
}
END_TEST

START_TEST(test_tampered_body)
{
    const sigv4_vector *v = vector_named("SendEmail");
    test_req t;
    req_of(&t, v);
    char *body = util_strndup(v->body, v->body_len);
    char *to = strstr(body, "to@example.net");
    to[0] = 'T';
    t.r.body = body;
    expect(&t, SIGV4_MISMATCH, "SignatureDoesNotMatch", "does not match the signature");
    /* one byte fewer */
    t.r.body = v->body;
    t.r.body_len = v->body_len - 1;
    expect(&t, SIGV4_MISMATCH, "SignatureDoesNotMatch", NULL);
    free(body);
}
END_TEST

START_TEST(test_content_sha256)
{
    const sigv4_vector *v = vector_named("POST with x-amz-content-sha256");
    test_req t;
    req_of(&t, v);
    expect(&t, SIGV4_OK, "", NULL);
    t.r.body = "{\"a\":2}";
    expect(&t, SIGV4_MISMATCH, "SignatureDoesNotMatch",
           "The provided 'x-amz-content-sha256' header does not match what was computed.");
    t.r.body = v->body;
    req_header(&t, "X-Amz-Content-SHA256")->value = "UNSIGNED-PAYLOAD";
    expect(&t, SIGV4_MISMATCH, "SignatureDoesNotMatch", "'x-amz-content-sha256'");
    /* unsigned, it is not read: the signature covers the body's own hash */
    test_req u;
    req_of(&u, vector_named("SendEmail: POST JSON, UTF-8 subject (botocore"));
    req_add(&u, "x-amz-content-sha256", "UNSIGNED-PAYLOAD");
    expect(&u, SIGV4_OK, "", NULL);
}
END_TEST

START_TEST(test_clock_skew)
{
    test_req t;
    req_of(&t, vector_named("ListSuppressedDestinations"));
    char *msg = NULL;
    /* date 16 minutes old */
    ck_assert_int_eq(verify(&t, SIGV4_VEC_REGION, 16 * MIN_MS, &msg), SIGV4_EXPIRED);
    ck_assert_str_eq(msg, "Signature expired: 20261206T010000Z is now earlier than "
                          "20261206T010100Z (20261206T011600Z - 15 min.)");
    ck_assert_str_eq(sigv4_error_type(SIGV4_EXPIRED), "InvalidSignatureException");
    free(msg);
    /* 16 minutes early */
    ck_assert_int_eq(verify(&t, SIGV4_VEC_REGION, -16 * MIN_MS, &msg), SIGV4_EXPIRED);
    ck_assert_str_eq(msg, "Signature not yet current: 20261206T010000Z is still later than "
                          "20261206T005900Z (20261206T004400Z + 15 min.)");
    free(msg);
    /* 15 minutes either way is still good */
    ck_assert_int_eq(verify(&t, SIGV4_VEC_REGION, 15 * MIN_MS, &msg), SIGV4_OK);
    ck_assert_int_eq(verify(&t, SIGV4_VEC_REGION, -15 * MIN_MS, &msg), SIGV4_OK);
    ck_assert_int_eq(verify(&t, SIGV4_VEC_REGION, 15 * MIN_MS + 999, &msg), SIGV4_OK);
    ck_assert_int_eq(verify(&t, SIGV4_VEC_REGION, 15 * MIN_MS + 1000, &msg), SIGV4_EXPIRED);
    free(msg);
}
END_TEST

START_TEST(test_bad_scope)
{
    test_req t;
    req_of(&t, vector_named("ListSuppressedDestinations"));
    char *msg = NULL;
    ck_assert_int_eq(verify(&t, "eu-west-1", 0, &msg), SIGV4_BAD_SCOPE);
    ck_assert_str_eq(msg, "Credential should be scoped to a valid region, not 'us-east-1'.");
    ck_assert_str_eq(sigv4_error_type(SIGV4_BAD_SCOPE), "SignatureDoesNotMatch");
    free(msg);

    sigv4_header *a = req_header(&t, "Authorization");
    const char *orig = a->value;
    char *other_day = util_strdup(orig);
    memcpy(strstr(other_day, "/20261206/"), "/20261205/", 10);
    a->value = other_day;
    expect(&t, SIGV4_BAD_SCOPE, "SignatureDoesNotMatch",
           "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
           "HTTP: '20261205' != '20261206', from '20261206T010000Z'.");
    free(other_day);
    char *term = util_strdup(orig);
    a->value = term;
    char *p = strstr(term, "/aws4_request");
    memcpy(p, "/aws4_reqeust", 13);
    expect(&t, SIGV4_BAD_SCOPE, "SignatureDoesNotMatch",
           "valid terminator: 'aws4_request', not 'aws4_reqeust'.");
    free(term);
}
END_TEST

START_TEST(test_unsigned_host_or_date)
{
    test_req t;
    req_of(&t, vector_named("ListSuppressedDestinations: GET, Reason twice, StartDate with ':' "
                            "(botocore"));
    sigv4_header *a = req_header(&t, "Authorization");
    const char *orig = a->value;
    char *no_host = util_strdup(orig);
    char *sh = strstr(no_host, "host;x-amz-date");
    memmove(sh, sh + 5, strlen(sh + 5) + 1);
    a->value = no_host;
    expect(&t, SIGV4_MALFORMED, "IncompleteSignatureException",
           "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.");
    free(no_host);
    char *no_date = util_strdup(orig);
    sh = strstr(no_date, "host;x-amz-date");
    memcpy(sh, "host, ", 6);
    memmove(sh + 6, sh + 17, strlen(sh + 17) + 1);
    a->value = no_date;
    expect(&t, SIGV4_MALFORMED, "IncompleteSignatureException",
           "'X-Amz-Date' must be a 'SignedHeader'");
    free(no_date);
    a->value = orig;

    /* no date at all, a bad one, two of them */
    sigv4_header *d = req_header(&t, "X-Amz-Date");
    d->name = "X-Not-Date";
    expect(&t, SIGV4_MALFORMED, "IncompleteSignatureException",
           "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.");
    req_add(&t, "Date", "Sun, 06 Dec 2026 01:00:00 GMT");   /* RFC 1123: not a signing date */
    expect(&t, SIGV4_MALFORMED, "IncompleteSignatureException", "'X-Amz-Date' or a 'Date'");
    d->name = "X-Amz-Date";
    d->value = "20261206T250000Z";
    expect(&t, SIGV4_MALFORMED, "IncompleteSignatureException",
           "Date must be in ISO-8601 'basic format'. Got '20261206T250000Z'.");
    d->value = "20261206T010000Z";
    req_add(&t, "x-amz-date", "20261206T010000Z");
    expect(&t, SIGV4_MALFORMED, "IncompleteSignatureException", "more than one x-amz-date");
}
END_TEST

START_TEST(test_missing_authorization)
{
    test_req t;
    req_of(&t, vector_named("ListSuppressedDestinations"));
    req_header(&t, "Authorization")->name = "X-Authorization";
    expect(&t, SIGV4_MISSING, "MissingAuthenticationTokenException", "Missing Authentication Token");
    /* presigned query parameters are not an alternative */
    t.r.query = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAKILNTEST0000001%2F20261206"
                "%2Fus-east-1%2Fses%2Faws4_request&X-Amz-Date=20261206T010000Z&X-Amz-Expires=60&"
                "X-Amz-SignedHeaders=host&X-Amz-Signature=00";
    expect(&t, SIGV4_MISSING, "MissingAuthenticationTokenException", NULL);
}
END_TEST

START_TEST(test_other_signature_changes)
{
    const sigv4_vector *v = vector_named("dot segments");
    test_req t;
    req_of(&t, v);
    expect(&t, SIGV4_OK, "", NULL);
    /* a query value, a path byte, the method, a signed header value, a signed header's
     * presence: each breaks the signature; an unsigned header does not */
    t.r.query = "b=2&a=3&a=1&c&Token=x%2By%3E";
    expect(&t, SIGV4_MISMATCH, "SignatureDoesNotMatch", NULL);
    t.r.query = v->query;
    t.r.path = "/v2/email/templates/caf%C3%A9%20menu/./a/../b//c";
    expect(&t, SIGV4_MISMATCH, "SignatureDoesNotMatch", NULL);
    t.r.path = "/v2/email/templates/caf%C3%A9%20menu/b/c/";   /* the same, normalized */
    expect(&t, SIGV4_OK, "", NULL);
    t.r.method = "PUT";
    expect(&t, SIGV4_MISMATCH, "SignatureDoesNotMatch", NULL);
    t.r.method = v->method;
    req_header(&t, "Content-Type")->value = "text/html";
    expect(&t, SIGV4_MISMATCH, "SignatureDoesNotMatch", NULL);
    req_header(&t, "Content-Type")->value = "  text/plain\t";   /* trimmed: the same */
    expect(&t, SIGV4_OK, "", NULL);
    req_header(&t, "Content-Type")->name = "X-Content-Type";
    expect(&t, SIGV4_MISMATCH, "SignatureDoesNotMatch", NULL);
    req_header(&t, "X-Content-Type")->name = "Content-Type";
    req_add(&t, "X-Unsigned", "anything");
    expect(&t, SIGV4_OK, "", NULL);
    /* a signature of the right length but other case */
    char *upper = util_strdup(req_header(&t, "Authorization")->value);
    for (char *p = strstr(upper, "Signature=") + 10; *p; p++)
        if (*p >= 'a' && *p <= 'f') *p = (char)(*p - 32);
    req_header(&t, "Authorization")->value = upper;
    expect(&t, SIGV4_MISMATCH, "SignatureDoesNotMatch", NULL);
    free(upper);
}
END_TEST

/* ---- the canonical request's pieces ---- */

START_TEST(test_canonical_pieces)
{
    sigv4_header h[] = {{"Host", "h"}, {"X-A", " a  b "}, {"x-a", "c"}};
    struct {
        const char *path, *query, *want_uri, *want_query;
    } cases[] = {
        {"", "", "/", ""},
        {"/", "", "/", ""},
        {"//", "", "/", ""},
        {"/a/..", "", "/", ""},
        {"/../../a", "", "/a", ""},
        {"/a/./b/../c/", "", "/a/c/", ""},
        {"/a%2Fb/~x/%7e", "", "/a%252Fb/~x/%257e", ""},
        {"/sp ace/é", "", "/sp%20ace/%C3%A9", ""},
        {"/", "a=%7e&b=x%20y&c=+&d", "/", "a=~&b=x%20y&c=%2B&d="},
        {"/", "b=1&a=2&a=10&A=3&a", "/", "A=3&a=&a=10&a=2&b=1"},
        {"/", "e=%zz&f=%4", "/", "e=%25zz&f=%254"},
        {"/", "k=%00", "/", "k=%00"},
        {"/", "&", "/", "=&="},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sigv4_request r = {"GET", cases[i].path, cases[i].query, h, 3, NULL, 0};
        char *cr = sigv4_canonical_request(&r, "host;x-a", "PH");
        char *want = util_asprintf("GET\n%s\n%s\nhost:h\nx-a:a b,c\n\nhost;x-a\nPH",
                                   cases[i].want_uri, cases[i].want_query);
        ck_assert_msg(cr && strcmp(cr, want) == 0, "%s ? %s:\n%s\nwant\n%s", cases[i].path,
                      cases[i].query, cr ? cr : "(null)", want);
        free(cr);
        free(want);
    }
    sigv4_request r = {"GET", "/", "", h, 3, NULL, 0};
    ck_assert_ptr_null(sigv4_canonical_request(&r, "host;x-b", "PH"));
    ck_assert_ptr_null(sigv4_canonical_request(&r, "host;", "PH"));
}
END_TEST

/* ---- SES SMTP passwords ---- */

START_TEST(test_smtp_password)
{
    for (size_t i = 0; i < sizeof sigv4_smtp_vectors / sizeof sigv4_smtp_vectors[0]; i++) {
        char out[64];
        memset(out, 'x', sizeof out);
        sigv4_ses_smtp_password(sigv4_smtp_vectors[i].secret, sigv4_smtp_vectors[i].region, out);
        ck_assert_str_eq(out, sigv4_smtp_vectors[i].password);
        ck_assert_uint_eq(strlen(out), 44);
    }
}
END_TEST

/* ---- the signing-key cache ---- */

START_TEST(test_keycache_hits_and_misses)
{
    sigv4_keycache *kc = sigv4_keycache_new(4);
    unsigned char want[32], got[32];
    /* the first use derives (a miss), the same inputs again hit, and the key is the chain's */
    sigv4_keycache_get(NULL, VANILLA_SECRET, "20150830", "us-east-1", "ses", want);
    ck_assert(!sigv4_keycache_get(kc, VANILLA_SECRET, "20150830", "us-east-1", "ses", got));
    ck_assert_mem_eq(got, want, 32);
    memset(got, 0, sizeof got);
    ck_assert(sigv4_keycache_get(kc, VANILLA_SECRET, "20150830", "us-east-1", "ses", got));
    ck_assert_mem_eq(got, want, 32);
    /* any input changed: a miss, and a key of its own */
    const char *secret2 = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEX";   /* one byte differs */
    struct { const char *secret, *date, *region, *service; } other[] = {
        {VANILLA_SECRET, "20150831", "us-east-1", "ses"},
        {VANILLA_SECRET, "20150830", "eu-west-1", "ses"},
        {VANILLA_SECRET, "20150830", "us-east-1", "service"},
        {secret2, "20150830", "us-east-1", "ses"},
        {"short", "20150830", "us-east-1", "ses"},
    };
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        unsigned char k[32], d[32];
        sigv4_keycache_get(NULL, other[i].secret, other[i].date, other[i].region,
                           other[i].service, d);
        ck_assert_msg(!sigv4_keycache_get(kc, other[i].secret, other[i].date, other[i].region,
                                          other[i].service, k), "case %zu hit", i);
        ck_assert_mem_eq(k, d, 32);
        ck_assert(memcmp(k, want, 32) != 0);
        ck_assert(sigv4_keycache_get(kc, other[i].secret, other[i].date, other[i].region,
                                     other[i].service, k));
        ck_assert_mem_eq(k, d, 32);
    }
    sigv4_keycache_free(kc);
    sigv4_keycache_free(NULL);
}
END_TEST

START_TEST(test_keycache_bounded_lru)
{
    sigv4_keycache *kc = sigv4_keycache_new(2);
    unsigned char k[32];
    ck_assert(!sigv4_keycache_get(kc, "s1", "20261206", "r", "ses", k));
    ck_assert(!sigv4_keycache_get(kc, "s2", "20261206", "r", "ses", k));
    ck_assert(sigv4_keycache_get(kc, "s1", "20261206", "r", "ses", k));   /* s1 most recent */
    ck_assert(!sigv4_keycache_get(kc, "s3", "20261206", "r", "ses", k));  /* evicts s2 */
    ck_assert(sigv4_keycache_get(kc, "s1", "20261206", "r", "ses", k));
    ck_assert(sigv4_keycache_get(kc, "s3", "20261206", "r", "ses", k));
    ck_assert(!sigv4_keycache_get(kc, "s2", "20261206", "r", "ses", k));
    sigv4_keycache_free(kc);
}
END_TEST

/* verify with a cache answers exactly as without, on the first request and on the next */
START_TEST(test_keycache_verify)
{
    sigv4_keycache *kc = sigv4_keycache_new(4);
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < sizeof sigv4_vectors / sizeof sigv4_vectors[0]; i++) {
            test_req t;
            req_of(&t, &sigv4_vectors[i]);
            test_keys k = keys_of(SIGV4_VEC_KEY_ID, SIGV4_VEC_SECRET);
            char *id = NULL, *msg = NULL;
            sigv4_result r = sigv4_verify_cached(&t.r, SIGV4_VEC_REGION, SES, test_secret, &k,
                                                 SIGV4_VEC_NOW_MS, kc, &id, &msg);
            ck_assert_msg(r == SIGV4_OK, "%s: %d %s", sigv4_vectors[i].name, r, msg ? msg : "");
            free(id);
            free(msg);
            /* a wrong secret under the same key id and day: still a mismatch */
            test_keys bad = keys_of(SIGV4_VEC_KEY_ID, "not-the-secret");
            r = sigv4_verify_cached(&t.r, SIGV4_VEC_REGION, SES, test_secret, &bad,
                                    SIGV4_VEC_NOW_MS, kc, &id, &msg);
            ck_assert_int_eq(r, SIGV4_MISMATCH);
            ck_assert_ptr_null(id);
            free(msg);
        }
    }
    sigv4_keycache_free(kc);
}
END_TEST

/* The signing side reproduces every client's Authorization header byte for byte (same
 * signed headers, date and body), with and without a key cache, and get-vanilla's. */
START_TEST(test_sign_reproduces_clients)
{
    sigv4_keycache *kc = sigv4_keycache_new(2);
    for (size_t i = 0; i < sizeof sigv4_vectors / sizeof sigv4_vectors[0]; i++) {
        test_req t;
        req_of(&t, &sigv4_vectors[i]);
        const char *authz = req_header(&t, "Authorization")->value;
        const char *sh = strstr(authz, "SignedHeaders=");
        ck_assert_ptr_nonnull(sh);
        sh += strlen("SignedHeaders=");
        char *signed_headers = strndup(sh, strcspn(sh, ", "));
        const char *date = NULL;    /* X-Amz-Date, or an ISO 8601 basic Date */
        for (size_t j = 0; j < t.r.nheaders; j++)
            if (strcasecmp(t.h[j].name, "x-amz-date") == 0 ||
                (!date && strcasecmp(t.h[j].name, "date") == 0))
                date = t.h[j].value;
        ck_assert_ptr_nonnull(date);
        for (int cached = 0; cached < 2; cached++) {
            char *got = sigv4_sign(&t.r, signed_headers, SIGV4_VEC_KEY_ID, SIGV4_VEC_SECRET, date,
                                   SIGV4_VEC_REGION, SES, cached ? kc : NULL);
            ck_assert_msg(got && strcmp(got, authz) == 0, "%s:\n%s\n--- the client:\n%s",
                          sigv4_vectors[i].name, got ? got : "(null)", authz);
            free(got);
        }
        /* a signed header the request lacks: nothing signed */
        char *more = util_asprintf("%s;x-kiln-absent", signed_headers);
        ck_assert_ptr_null(sigv4_sign(&t.r, more, SIGV4_VEC_KEY_ID, SIGV4_VEC_SECRET, date,
                                      SIGV4_VEC_REGION, SES, kc));
        free(more);
        free(signed_headers);
    }
    sigv4_keycache_free(kc);

    sigv4_header h[] = {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T123600Z"}};
    sigv4_request r = {"GET", "/", "", h, 2, "", 0};
    char *got = sigv4_sign(&r, "host;x-amz-date", VANILLA_KEY, VANILLA_SECRET, "20150830T123600Z",
                           "us-east-1", "service", NULL);
    ck_assert_str_eq(got, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
                          "aws4_request, SignedHeaders=host;x-amz-date, Signature="
                          "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    free(got);
}
END_TEST

static Suite *sigv4_suite(void)
{
    Suite *s = suite_create("sigv4");
    TCase *tc = tcase_create("clients");
    tcase_add_loop_test(tc, test_vectors_verify, 0,
                        (int)(sizeof sigv4_vectors / sizeof sigv4_vectors[0]));
    tcase_add_test(tc, test_vectors_canonical);
    tcase_add_test(tc, test_vectors_signers_agree);
    tcase_add_test(tc, test_get_vanilla);
    tcase_add_test(tc, test_authorization_spellings);
    suite_add_tcase(s, tc);
    tc = tcase_create("refusals");
    tcase_add_test(tc, test_authorization_malformed);
    tcase_add_test(tc, test_wrong_secret);
    tcase_add_test(tc, test_unknown_key);
    tcase_add_test(tc, test_tampered_body);
    tcase_add_test(tc, test_content_sha256);
    tcase_add_test(tc, test_clock_skew);
    tcase_add_test(tc, test_bad_scope);
    tcase_add_test(tc, test_unsigned_host_or_date);
    tcase_add_test(tc, test_missing_authorization);
    tcase_add_test(tc, test_other_signature_changes);
    suite_add_tcase(s, tc);
    tc = tcase_create("pieces");
    tcase_add_test(tc, test_canonical_pieces);
    tcase_add_test(tc, test_smtp_password);
    tcase_add_test(tc, test_sign_reproduces_clients);
    suite_add_tcase(s, tc);
    tc = tcase_create("keycache");
    tcase_add_test(tc, test_keycache_hits_and_misses);
    tcase_add_test(tc, test_keycache_bounded_lru);
    tcase_add_test(tc, test_keycache_verify);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(sigv4_suite);
