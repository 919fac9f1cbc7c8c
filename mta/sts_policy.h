/* sts_policy.h — MTA-STS (RFC 8461) text formats, pure: the policy file served at
 * https://mta-sts.<domain>/.well-known/mta-sts.txt, the `_mta-sts` TXT record that names
 * the current policy id, and the MX host patterns ("mail.example.com", "*.example.net").
 * The inputs come from the network (anyone who runs a recipient domain): every parser
 * bounds its input (STS_POLICY_MAX_BYTES, STS_POLICY_MAX_MX, line length) and fails with a
 * reason instead of guessing. */
#ifndef KILN_STS_POLICY_H
#define KILN_STS_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STS_POLICY_MAX_BYTES 65536   /* larger bodies are refused (RFC 8461 section 3.3) */
#define STS_POLICY_MAX_MX 64         /* mx lines kept; more make the policy invalid */
#define STS_POLICY_MAX_LINE 1024
#define STS_MAX_AGE_MAX 31557600     /* RFC 8461 section 3.2: at most about a year */
#define STS_ID_MAX 32

typedef enum { STS_MODE_NONE = 0, STS_MODE_TESTING, STS_MODE_ENFORCE } sts_mode;

typedef struct sts_policy {
    sts_mode mode;
    char **mx;               /* lower-case patterns, without a trailing dot */
    size_t nmx;
    int64_t max_age_s;
} sts_policy;

/* Parses a policy body (lines "key: value" ending in CRLF or LF; unknown keys ignored,
 * the first of a repeated key counts, except mx which may repeat). It needs version
 * STSv1, a mode (enforce, testing, none), max_age (0..31557600) and, unless the mode is
 * none, at least one valid mx pattern. 0 and *out filled (free with sts_policy_clear), or
 * -1 and *err (malloc'd, e.g. "mode: 'strict' is not enforce, testing or none"). */
int sts_policy_parse(const char *buf, size_t len, sts_policy *out, char **err);
void sts_policy_clear(sts_policy *p);
/* A deep copy into dst (cleared with sts_policy_clear). */
void sts_policy_copy(sts_policy *dst, const sts_policy *src);

/* One TXT record's text: "v=STSv1; id=20160831085700Z;" (v first, fields separated by ';'
 * with optional spaces, unknown fields ignored, id 1-32 letters and digits). 0 and id
 * copied (NUL-terminated, cap >= STS_ID_MAX + 1), -1 when it is not a valid STSv1 record. */
int sts_txt_id(const char *txt, size_t len, char *id, size_t cap);
/* True if txt starts an STSv1 record ("v=STSv1" then ';', space or the end). */
bool sts_txt_is_sts(const char *txt, size_t len);

/* RFC 8461 section 4.1: host matches pattern case-insensitively, a trailing dot ignored on
 * both; "*.example.com" matches exactly one more label ("mx.example.com", never
 * "example.com" or "a.b.example.com"). */
bool sts_mx_match(const char *pattern, const char *host);
/* host matches one of the policy's mx patterns. */
bool sts_policy_mx_allowed(const sts_policy *p, const char *host);

const char *sts_mode_name(sts_mode m);

#endif
