/* fbtoken.h — the VERP envelope sender of outgoing mail (issue 14, item 2):
 *
 *     bounce+TOKEN@DOMAIN
 *
 * DOMAIN is the identity's custom MAIL FROM domain, else feedback.bounce_domain. TOKEN
 * (lower-case RFC 4648 base32 without padding, 50 characters, so the local part is 57 of
 * RFC 5321's 64) encodes 31 bytes:
 *
 *     24 bytes  kiln's message id (its 48 hex digits: "%016x-%8-%4-%4-%4-%12-000000" with
 *               the dashes and the constant "-000000" tail removed)
 *      1 byte   scope: 1 = the transaction had one recipient, the MAC binds that address;
 *               0 = several recipients, the MAC binds the message only
 *      6 bytes  HMAC-SHA256(feedback secret, "kiln-verp-1" NUL msg_id NUL rcpt) truncated,
 *               where rcpt is the lower-cased recipient address (scope 1) or "" (scope 0)
 *
 * So a forged bounce cannot name a message it never saw (48-bit MAC), and a scope-1 token
 * names the one recipient it may concern: the checker tries each candidate address and
 * only a MAC match counts. Pure: no I/O, no clock; OpenSSL's HMAC. */
#ifndef KILN_MTA_FBTOKEN_H
#define KILN_MTA_FBTOKEN_H

#include <stdbool.h>
#include <stddef.h>

#define FBTOKEN_LEN 50                /* characters of TOKEN */
#define FBTOKEN_LOCAL_PREFIX "bounce+"

/* TOKEN for message MSG_ID (kiln's id) sent to RCPT (the only recipient of the
 * transaction) or, with RCPT NULL, to several recipients. Writes FBTOKEN_LEN characters
 * and a NUL to OUT (at least FBTOKEN_LEN + 1 bytes). -1 when MSG_ID is not a kiln id. */
int fbtoken_make(const unsigned char *key, size_t keylen, const char *msg_id, const char *rcpt,
                 char *out);

/* The envelope sender "bounce+TOKEN@DOMAIN" (malloc'd), or NULL as fbtoken_make fails. */
char *fbtoken_address(const unsigned char *key, size_t keylen, const char *msg_id,
                      const char *rcpt, const char *domain);

typedef struct fbtoken_info {
    char msg_id[80];         /* kiln's message id, rebuilt with its dashes and tail */
    bool one_rcpt;           /* scope 1: the MAC binds one recipient */
    unsigned char mac[6];
} fbtoken_info;

/* Decodes ADDR, a whole address "bounce+TOKEN@domain" (any case) or the local part alone
 * or TOKEN alone. 0 and *out, or -1 and *why (static text: "not a bounce+ address",
 * "token is not 50 base32 characters", ...). The MAC is not checked here. */
int fbtoken_decode(const char *addr, fbtoken_info *out, const char **why);

/* True when INFO's MAC is right for recipient RCPT (scope 1; compared lower-cased) or for
 * the message alone (scope 0: RCPT is ignored and may be NULL). Constant-time compare. */
bool fbtoken_verify(const unsigned char *key, size_t keylen, const fbtoken_info *info,
                    const char *rcpt);

#endif
