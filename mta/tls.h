/* tls.h — TLS over a non-blocking socket with OpenSSL, for both sides of STARTTLS: the
 * submission server (smtp_server.c) and the outbound SMTP client. A tls_ctx holds the
 * settings (certificate, verification); a tls_conn wraps one SSL on an already connected,
 * non-blocking fd. Every operation returns at once: TLS_WANT_READ / TLS_WANT_WRITE say which
 * readiness of the fd to wait for before calling the same operation again (with the same
 * arguments for writes). Nothing here touches the event loop. */
#ifndef KILN_TLS_H
#define KILN_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tls_ctx tls_ctx;
typedef struct tls_conn tls_conn;

typedef enum {
    TLS_OK = 0,
    TLS_WANT_READ,           /* call again when the fd is readable */
    TLS_WANT_WRITE,          /* call again when the fd is writable */
    TLS_EOF,                 /* the peer closed the connection (close_notify or TCP EOF) */
    TLS_ERROR,               /* fatal; tls_conn_error() says why; only free the conn */
} tls_status;

/* Server side: PEM certificate chain and private key files. NULL and *err (malloc'd,
 * naming the file and OpenSSL's reason) on failure. TLS 1.2 and newer; no renegotiation. */
tls_ctx *tls_server_ctx_new(const char *cert_file, const char *key_file, char **err);
/* True when ctx (server side) was loaded from these paths and neither file changed since
 * (device, inode, size, mtime): a reload keeps ctx and reads nothing. */
bool tls_server_ctx_unchanged(const tls_ctx *ctx, const char *cert_file, const char *key_file);
/* Client side, trusting the system CA store. verify=true makes the handshake fail unless
 * the peer's chain and name (tls_conn_new's server_name) verify; with verify=false the
 * handshake always proceeds and tls_conn_peer_verified() tells the outcome (unless the
 * connection asks for more with tls_conn_authenticate). TLS 1.2 and newer only, whatever
 * the system's OpenSSL configuration allows; DANE (RFC 7672) enabled on the context. */
tls_ctx *tls_client_ctx_new(bool verify, char **err);
/* Client side: trust the PEM bundle ca_file instead (NULL: the system store again). The
 * store is swapped in place: connections made from ctx use the new one from their next
 * verification on. 0, or -1 and *err (naming the file and OpenSSL's reason). */
int tls_client_ctx_set_ca(tls_ctx *ctx, const char *ca_file, char **err);
/* The lowest protocol version ctx negotiates (TLS1_2_VERSION for clients: 0x0303). */
int tls_ctx_min_version(const tls_ctx *ctx);

/* What a client connection must prove before anything is sent over it. */
typedef enum {
    TLS_AUTH_NONE = 0,       /* encryption only: the certificate is not a reason to fail */
    TLS_AUTH_VERIFY,         /* chain to the context's CAs, certificate for `name` (a DNS
                                name, or an IP literal for a static route to an address) */
    TLS_AUTH_DANE,           /* RFC 7672: the chain matches a TLSA record (DANE-TA(2) with
                                the name `name`, the TLSA base domain; DANE-EE(3) any name) */
} tls_auth_mode;

typedef struct tls_tlsa {    /* one TLSA record (RFC 6698) */
    uint8_t usage, selector, mtype;
    unsigned char *data;
    size_t len;
} tls_tlsa;

typedef struct tls_auth {
    tls_auth_mode mode;
    char *name;
    tls_tlsa *tlsa;          /* DANE: the usable records (tls_tlsa_usable) */
    size_t ntlsa;
} tls_auth;

/* A deep copy (NULL for NULL), and its release. */
tls_auth *tls_auth_dup(const tls_auth *a);
void tls_auth_free(tls_auth *a);
/* RFC 7672 section 3.1: only DANE-TA(2) and DANE-EE(3), selector 0/1, matching 0/1/2, with
 * the digest length its matching type implies, authenticate an SMTP server. */
bool tls_tlsa_usable(const tls_tlsa *r);
void tls_ctx_free(tls_ctx *ctx);   /* connections made from it stay valid */

/* Wraps fd (connected, non-blocking; not closed by tls_conn_free). server_name: client
 * side SNI and the name verified; NULL on the server side. Never fails for lack of memory. */
tls_conn *tls_conn_new(tls_ctx *ctx, int fd, const char *server_name);
/* Client side, before the handshake: the peer must prove what a says, else the handshake
 * ends in TLS_ERROR with tls_conn_error() "certificate verify failed: <reason> for <name>"
 * (VERIFY) or "DANE TLSA authentication failed: <reason> for <name>" (DANE). A mode other
 * than NONE with nothing usable (no name; no TLSA record OpenSSL accepts) fails every
 * handshake the same way, never passes one. */
void tls_conn_authenticate(tls_conn *c, const tls_auth *a);
tls_status tls_conn_handshake(tls_conn *c);
/* Reads up to cap bytes of plaintext: TLS_OK with *n > 0, or another status and *n = 0. */
tls_status tls_conn_read(tls_conn *c, void *buf, size_t cap, size_t *n);
/* Writes up to len bytes (partial writes allowed): TLS_OK with *n > 0 written, or another
 * status and *n = 0. After WANT_*, call again with the same bytes (the buffer may move). */
tls_status tls_conn_write(tls_conn *c, const void *buf, size_t len, size_t *n);
/* Plaintext already decrypted and buffered inside OpenSSL (the fd will not signal it). */
bool tls_conn_pending(const tls_conn *c);
/* Sends close_notify once (best effort; does not wait for the peer's). */
void tls_conn_shutdown(tls_conn *c);
/* Why the last operation failed ("" if it did not). */
const char *tls_conn_error(const tls_conn *c);
/* After the handshake: "TLSv1.3", the cipher name, and (client side) whether the peer's
 * certificate chain and name verified, with OpenSSL's reason if not. */
const char *tls_conn_version(const tls_conn *c);
const char *tls_conn_cipher(const tls_conn *c);
bool tls_conn_peer_verified(const tls_conn *c);
const char *tls_conn_verify_error(const tls_conn *c);
void tls_conn_free(tls_conn *c);

#endif
