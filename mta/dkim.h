/* dkim.h — DKIM signing keys and the signer (RFC 6376 relaxed/relaxed; rsa-sha256 and, for
 * dual-signing, ed25519-sha256 of RFC 8463). Pure: no event loop, no DNS; keys are
 * OpenSSL 3 EVP_PKEYs behind an opaque type.
 *
 * Promises:
 *  - a dkim_key is always usable for signing: RSA of 1024..4096 bits (RFC 8301: signers
 *    use at least 1024, verifiers need not handle more than 4096) or Ed25519; loading
 *    anything else fails with an error naming the file and the reason;
 *  - every error string is malloc'd, names what it is about ("dkim key /etc/k.pem: ...")
 *    and is meant to be shown to a person as it is;
 *  - OpenSSL's error queue is left empty by every function here, so that a later TLS call
 *    does not report a stale DKIM error.
 * The key half is mta/dkim_key.c, the canonicalization mta/dkim_canon.c (dkim_canon.h),
 * the signer mta/dkim_sign.c. */
#ifndef KILN_DKIM_H
#define KILN_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { DKIM_ALG_RSA_SHA256 = 0, DKIM_ALG_ED25519_SHA256 = 1 } dkim_alg;
typedef struct dkim_key dkim_key;      /* an OpenSSL EVP_PKEY private key */

#define DKIM_RSA_MIN_BITS 1024
#define DKIM_RSA_MAX_BITS 4096
#define DKIM_RSA_GEN_BITS 2048
#define DKIM_KEY_FILE_MAX (64 * 1024)  /* larger files are not a PEM key */

/* PEM (PKCS#1 "RSA PRIVATE KEY" or PKCS#8 "PRIVATE KEY"), RSA of at least 1024 bits (and at
 * most 4096) or Ed25519. NULL and *err (malloc'd, names the file and what is wrong) on
 * failure: missing or unreadable file, no PEM private key in it (garbage, a public key, a
 * certificate alone, an OpenSSH key), an encrypted key, a key of another type (EC, DSA...),
 * an RSA key too short or too long, a key that fails OpenSSL's consistency check.
 * e.g. "dkim key /etc/k.pem: RSA key of 512 bits is too short (at least 1024)". */
dkim_key *dkim_key_load_file(const char *path, char **err);
/* The same on PEM text in memory; `what` names it in errors ("dkim key <what>: ..."). */
dkim_key *dkim_key_load_pem(const char *pem, size_t len, const char *what, char **err);
/* A new key: RSA 2048 (DKIM_ALG_RSA_SHA256) or Ed25519. */
dkim_key *dkim_key_generate(dkim_alg alg, char **err);
/* Writes k as unencrypted PKCS#8 PEM ("BEGIN PRIVATE KEY") to path, mode 0600, atomically:
 * a temporary file in the same directory, fsync'd, renamed over path, then the directory
 * fsync'd. Readers see the old file or the new one, never a part. 0, or -1 and *err. */
int dkim_key_write_pem(const dkim_key *k, const char *path, char **err);
dkim_alg dkim_key_alg(const dkim_key *k);
/* RSA: the modulus size; Ed25519: OpenSSL's EVP_PKEY_get_bits figure (253). */
int dkim_key_bits(const dkim_key *k);
const char *dkim_alg_name(dkim_alg a);                           /* "rsa-sha256"... */
/* The k= value of the key's DNS record: "rsa" or "ed25519". */
const char *dkim_alg_key_type(dkim_alg a);
/* "rsa-sha256 2048 bits" / "ed25519-sha256" into out (always NUL-terminated). */
void dkim_key_to_text(const dkim_key *k, char *out, size_t cap);
/* The p= value: RSA: base64 of the SubjectPublicKeyInfo DER; Ed25519: base64 of the raw
 * 32-byte public key (RFC 8463). malloc'd. */
char *dkim_key_public_b64(const dkim_key *k);
/* "v=DKIM1; k=rsa; p=..." / "v=DKIM1; k=ed25519; p=..." malloc'd. */
char *dkim_key_txt_record(const dkim_key *k);
/* txt cut into DNS character-strings of at most 255 bytes, each in double quotes, separated
 * by one space, as a zone file or a DNS console takes a TXT value longer than 255 bytes
 * (an RSA 2048 record is about 410): "\"v=DKIM1; k=rsa; p=MIIB...\" \"...\"". malloc'd. */
char *dkim_txt_quote(const char *txt);
void dkim_key_free(dkim_key *k);
/* The b= value for canonical header data data[0..n): base64 of the RSASSA-PKCS1-v1_5
 * SHA-256 signature (rsa-sha256), or of the Ed25519 signature of the data's SHA-256 digest
 * (ed25519-sha256, RFC 8463 section 3). malloc'd, or NULL if OpenSSL fails. */
char *dkim_key_sign_b64(const dkim_key *k, const char *data, size_t n);

/* ---- a published key record (the TXT at <selector>._domainkey.<domain>) ---- */

typedef struct dkim_record {
    char k[16];          /* the k= value as written ("rsa" when absent) */
    char *p;             /* the p= value with every space, tab and line end removed
                            (malloc'd; "" when revoked) */
    bool revoked;        /* p= is empty: the key was withdrawn (RFC 6376 section 3.6.1) */
    bool testing;        /* t= lists y: verifiers treat failures as if unsigned */
    bool sha256;         /* h= is absent or lists sha256 (our signatures use it) */
} dkim_record;

/* Parses the text of a DKIM key record (the TXT character-strings joined, RFC 6376
 * section 3.6.1): a tag list "tag=value; tag=value", whitespace around tags and values
 * ignored, unknown tags ignored. v=, when present, must be first and be DKIM1; p= must be
 * present and be base64 (whitespace inside removed); a tag may not repeat. 0 and *out
 * filled (free with dkim_record_clear), or -1 and *err (malloc'd, e.g. "no p= tag (the
 * public key)"). Bounded: input longer than 8 KB is refused. */
int dkim_record_parse(const char *txt, dkim_record *out, char **err);
void dkim_record_clear(dkim_record *r);
/* True if the record publishes k's public key: not revoked, k= names k's type, and p=
 * decodes to the same public key (RSA p= as SubjectPublicKeyInfo, or as the bare PKCS#1
 * RSAPublicKey some publishers use; Ed25519 p= as the raw 32 bytes). When false and why is
 * not NULL, *why is set to a static reason: "the record is revoked (empty p=)", "the
 * record's k= is not ed25519 but the key is Ed25519" (or rsa/RSA), "p= is not a valid public
 * key", "p= is a different public key". */
bool dkim_key_matches_record(const dkim_key *k, const dkim_record *r, const char **why);

/* ---- signing ---- */

typedef struct dkim_signer {
    const char *domain;      /* d= */
    const char *selector;    /* s= */
    const dkim_key *key;     /* its algorithm gives a= */
} dkim_signer;

/* Signs msg (the message as it will be sent: CRLF lines, header, empty line, body; not
 * dot-stuffed) with each signer and returns the DKIM-Signature header fields to put in front
 * of it (malloc'd, each folded at 78 columns, ending in CRLF; order: signers[0]'s field
 * first). t= is now_s. NULL and *err when the message has no From header field or a signer
 * fails.
 *
 * Line ends: msg is canonicalized exactly as smtp_client_encode_data puts it on the wire:
 * CRLF, a lone CR and a lone LF each end one line, and a last line without an end gets
 * CRLF. A caller may pass a message with bare LFs; the signature covers the bytes the
 * receiver gets. The header section ends at the first empty line (or at the end).
 *
 * Signed header fields, each instance present, bottom-up (RFC 6376 section 5.4.2): from,
 * to, cc, subject, date, message-id, reply-to, in-reply-to, references, mime-version,
 * content-type, content-transfer-encoding, content-disposition, list-unsubscribe,
 * list-unsubscribe-post, list-id, feedback-id, sender. From is over-signed (named once more
 * in h= than present, so that a From added later breaks the signature), and so are
 * List-Unsubscribe and List-Unsubscribe-Post when present (RFC 8058 section 4). Received,
 * Return-Path, existing DKIM-Signature and X-* fields are never signed; each signer's
 * signature is independent of the others'.
 *
 * Errors: no From field, more than one From field (RFC 5322 allows one, and receivers
 * reject such mail), a domain or selector that is not a DNS name (ASCII letters, digits,
 * '-', '_', dots between labels of 1..63, at most 253 bytes), a key that fails to sign. */
char *dkim_sign(const dkim_signer *signers, size_t n, const char *msg, size_t len,
                int64_t now_s, char **err);

#endif
