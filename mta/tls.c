/* tls.c — OpenSSL (3.0) wrapper for STARTTLS on non-blocking sockets, server and client
 * side. Maps SSL_get_error() onto WANT_READ / WANT_WRITE / EOF / ERROR and keeps a
 * readable error text per connection, so callers never see OpenSSL's error queue.
 * Outbound peer authentication (tls_conn_authenticate) uses OpenSSL's own chain and host
 * name checks and its built-in DANE support (SSL_dane_enable, SSL_dane_tlsa_add): the
 * handshake runs with SSL_VERIFY_NONE and the verification result is judged when it ends,
 * so the error names what failed instead of a bare handshake alert. */
#include "mta/tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "base/util.h"

struct tls_ctx {
    SSL_CTX *ssl;
    bool server;
    /* server side: what the pair was loaded from (see tls_server_ctx_unchanged) */
    char *cert_file, *key_file;
    struct stat cert_st, key_st;
};

struct tls_conn {
    SSL *ssl;
    bool failed;             /* a fatal error happened: no SSL_shutdown allowed */
    bool shut;
    tls_auth_mode auth;      /* what the peer must prove (client side) */
    char *auth_name;
    bool auth_unusable;      /* nothing to authenticate with: every handshake fails */
    char err[512];
};

static char *openssl_reason(void)
{
    unsigned long e = ERR_get_error();
    char buf[256];
    if (e == 0) return util_strdup("unknown OpenSSL error");
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return util_strdup(buf);
}

static SSL_CTX *base_ctx(const SSL_METHOD *method)
{
    SSL_CTX *s = SSL_CTX_new(method);
    if (!s) return NULL;
    SSL_CTX_set_mode(s, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
    /* SMTP frames its own data, so a TCP close without close_notify is an ordinary EOF. */
    SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                               SSL_OP_NO_COMPRESSION);
    return s;
}

tls_ctx *tls_server_ctx_new(const char *cert_file, const char *key_file, char **err)
{
    ERR_clear_error();
    SSL_CTX *s = base_ctx(TLS_server_method());
    if (!s) {
        char *r = openssl_reason();
        *err = util_asprintf("cannot create TLS context: %s", r);
        free(r);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION);
    SSL_CTX_set_options(s, SSL_OP_CIPHER_SERVER_PREFERENCE);
    struct stat cert_st, key_st;   /* taken before loading: a later change is seen */
    if (stat(cert_file, &cert_st) != 0) memset(&cert_st, 0, sizeof cert_st);
    if (stat(key_file, &key_st) != 0) memset(&key_st, 0, sizeof key_st);
    const char *what = NULL, *file = NULL;
    if (SSL_CTX_use_certificate_chain_file(s, cert_file) != 1) {
        what = "cannot load TLS certificate chain (PEM)";
        file = cert_file;
    } else if (SSL_CTX_use_PrivateKey_file(s, key_file, SSL_FILETYPE_PEM) != 1) {
        /* OpenSSL compares the pair here already: say so in kiln's words */
        what = ERR_GET_REASON(ERR_peek_error()) == X509_R_KEY_VALUES_MISMATCH
                   ? "TLS private key does not match the certificate"
                   : "cannot load TLS private key (PEM)";
        file = key_file;
    } else if (SSL_CTX_check_private_key(s) != 1) {
        what = "TLS private key does not match the certificate";
        file = key_file;
    }
    if (what) {
        char *r = openssl_reason();
        *err = util_asprintf("%s: %s: %s", file, what, r);
        free(r);
        SSL_CTX_free(s);
        return NULL;
    }
    tls_ctx *ctx = util_calloc(1, sizeof *ctx);
    ctx->ssl = s;
    ctx->server = true;
    ctx->cert_file = util_strdup(cert_file);
    ctx->key_file = util_strdup(key_file);
    ctx->cert_st = cert_st;
    ctx->key_st = key_st;
    return ctx;
}

/* Same path, device, inode, size and modification time (to the nanosecond). */
static bool tls_same_file(const char *loaded, const struct stat *st, const char *path)
{
    struct stat now;
    if (strcmp(loaded, path) != 0 || stat(path, &now) != 0) return false;
    return now.st_dev == st->st_dev && now.st_ino == st->st_ino && now.st_size == st->st_size &&
           now.st_mtim.tv_sec == st->st_mtim.tv_sec && now.st_mtim.tv_nsec == st->st_mtim.tv_nsec;
}

bool tls_server_ctx_unchanged(const tls_ctx *ctx, const char *cert_file, const char *key_file)
{
    return ctx && ctx->server && tls_same_file(ctx->cert_file, &ctx->cert_st, cert_file) &&
           tls_same_file(ctx->key_file, &ctx->key_st, key_file);
}

tls_ctx *tls_client_ctx_new(bool verify, char **err)
{
    ERR_clear_error();
    SSL_CTX *s = base_ctx(TLS_client_method());
    if (!s) {
        char *r = openssl_reason();
        *err = util_asprintf("cannot create TLS context: %s", r);
        free(r);
        return NULL;
    }
    if (SSL_CTX_set_default_verify_paths(s) != 1) {
        char *r = openssl_reason();
        *err = util_asprintf("cannot load the system CA certificates: %s", r);
        free(r);
        SSL_CTX_free(s);
        return NULL;
    }
    SSL_CTX_set_verify(s, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    /* outbound TLS 1.2 at least, even where the system configuration allows less */
    if (SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION) != 1 || SSL_CTX_dane_enable(s) <= 0) {
        char *r = openssl_reason();
        *err = util_asprintf("cannot set up the TLS client context: %s", r);
        free(r);
        SSL_CTX_free(s);
        return NULL;
    }
    /* RFC 7672 section 3.1.1: a DANE-EE(3) match authenticates whatever names the
     * certificate holds */
    SSL_CTX_dane_set_flags(s, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
    tls_ctx *ctx = util_calloc(1, sizeof *ctx);
    ctx->ssl = s;
    ctx->server = false;
    return ctx;
}

int tls_client_ctx_set_ca(tls_ctx *ctx, const char *ca_file, char **err)
{
    ERR_clear_error();
    X509_STORE *st = X509_STORE_new();
    if (!st) util_fatal("X509_STORE_new failed (out of memory)");
    int ok = ca_file ? X509_STORE_load_file(st, ca_file) : X509_STORE_set_default_paths(st);
    if (ok != 1) {
        char *r = openssl_reason();
        *err = ca_file ? util_asprintf("%s: cannot load CA certificates (PEM): %s", ca_file, r)
                       : util_asprintf("cannot load the system CA certificates: %s", r);
        free(r);
        X509_STORE_free(st);
        return -1;
    }
    SSL_CTX_set_cert_store(ctx->ssl, st);   /* frees the old store */
    return 0;
}

int tls_ctx_min_version(const tls_ctx *ctx)
{
    return (int)SSL_CTX_get_min_proto_version(ctx->ssl);
}

tls_auth *tls_auth_dup(const tls_auth *a)
{
    if (!a) return NULL;
    tls_auth *d = util_calloc(1, sizeof *d);
    d->mode = a->mode;
    d->name = a->name ? util_strdup(a->name) : NULL;
    d->ntlsa = a->ntlsa;
    d->tlsa = util_calloc(a->ntlsa ? a->ntlsa : 1, sizeof *d->tlsa);
    for (size_t i = 0; i < a->ntlsa; i++) {
        d->tlsa[i] = a->tlsa[i];
        d->tlsa[i].data = util_malloc(a->tlsa[i].len ? a->tlsa[i].len : 1);
        if (a->tlsa[i].len) memcpy(d->tlsa[i].data, a->tlsa[i].data, a->tlsa[i].len);
    }
    return d;
}

void tls_auth_free(tls_auth *a)
{
    if (!a) return;
    for (size_t i = 0; i < a->ntlsa; i++) free(a->tlsa[i].data);
    free(a->tlsa);
    free(a->name);
    free(a);
}

bool tls_tlsa_usable(const tls_tlsa *r)
{
    if (r->usage != 2 && r->usage != 3) return false;      /* PKIX-TA/EE: not for SMTP */
    if (r->selector > 1) return false;
    switch (r->mtype) {
    case 0: return r->len > 0;
    case 1: return r->len == 32;                           /* SHA2-256 */
    case 2: return r->len == 64;                           /* SHA2-512 */
    default: return false;
    }
}

void tls_conn_authenticate(tls_conn *c, const tls_auth *a)
{
    if (!a || a->mode == TLS_AUTH_NONE) return;
    c->auth = a->mode;
    free(c->auth_name);
    c->auth_name = util_strdup(a->name ? a->name : "");
    if (!a->name || !a->name[0]) {
        c->auth_unusable = true;
        return;
    }
    ERR_clear_error();
    if (a->mode == TLS_AUTH_VERIFY) {
        unsigned char tmp[16];
        bool ip = inet_pton(AF_INET, a->name, tmp) == 1 || inet_pton(AF_INET6, a->name, tmp) == 1;
        X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
        if (ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, a->name) != 1
               : (SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS),
                  SSL_set1_host(c->ssl, a->name) != 1))
            c->auth_unusable = true;
    } else {
        int usable = 0;
        if (SSL_dane_enable(c->ssl, a->name) > 0) {
            for (size_t i = 0; i < a->ntlsa; i++) {
                const tls_tlsa *r = &a->tlsa[i];
                if (!tls_tlsa_usable(r)) continue;
                if (SSL_dane_tlsa_add(c->ssl, r->usage, r->selector, r->mtype, r->data, r->len) > 0)
                    usable++;
            }
        }
        if (usable == 0) c->auth_unusable = true;
    }
    ERR_clear_error();
}

/* After a finished client handshake: did the peer prove what it had to? */
static tls_status tls_conn_check_auth(tls_conn *c)
{
    if (c->auth == TLS_AUTH_NONE) return TLS_OK;
    const char *what = c->auth == TLS_AUTH_DANE ? "DANE TLSA authentication failed"
                                                 : "certificate verify failed";
    const char *why = NULL;
    long r = SSL_get_verify_result(c->ssl);
    if (c->auth_unusable)
        why = c->auth == TLS_AUTH_DANE ? "no usable TLSA record" : "no name to verify";
    else if (!SSL_get0_peer_certificate(c->ssl))
        why = "no peer certificate";
    else if (r != X509_V_OK)
        why = X509_verify_cert_error_string(r);
    if (!why) return TLS_OK;
    snprintf(c->err, sizeof c->err, "%s: %s for %s", what, why, c->auth_name);
    c->failed = true;
    return TLS_ERROR;
}

void tls_ctx_free(tls_ctx *ctx)
{
    if (!ctx) return;
    SSL_CTX_free(ctx->ssl);      /* SSL objects hold their own reference */
    free(ctx->cert_file);
    free(ctx->key_file);
    free(ctx);
}

tls_conn *tls_conn_new(tls_ctx *ctx, int fd, const char *server_name)
{
    ERR_clear_error();
    SSL *ssl = SSL_new(ctx->ssl);
    if (!ssl) util_fatal("SSL_new failed (out of memory)");
    if (SSL_set_fd(ssl, fd) != 1) util_fatal("SSL_set_fd(%d) failed", fd);
    if (ctx->server) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
        if (server_name) {
            SSL_set_tlsext_host_name(ssl, server_name);
            SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            SSL_set1_host(ssl, server_name);
        }
    }
    tls_conn *c = util_calloc(1, sizeof *c);
    c->ssl = ssl;
    return c;
}

/* Maps the result of an SSL_* call. */
static tls_status map_result(tls_conn *c, int ret, const char *op)
{
    int e = SSL_get_error(c->ssl, ret);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        return TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return TLS_EOF;
    case SSL_ERROR_SYSCALL: {
        int saved = errno;
        unsigned long q = ERR_peek_error();
        c->failed = true;
        if (q == 0 && saved == 0) {
            snprintf(c->err, sizeof c->err, "%s: connection closed by peer", op);
            return TLS_EOF;
        }
        if (q == 0) {
            snprintf(c->err, sizeof c->err, "%s: %s", op, strerror(saved));
            return TLS_ERROR;
        }
        break;
    }
    default:
        c->failed = true;
        break;
    }
    char *r = openssl_reason();
    snprintf(c->err, sizeof c->err, "%s: %s", op, r);
    free(r);
    return TLS_ERROR;
}

tls_status tls_conn_handshake(tls_conn *c)
{
    ERR_clear_error();
    c->err[0] = '\0';
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) return tls_conn_check_auth(c);
    tls_status st = map_result(c, r, "TLS handshake");
    if (st == TLS_EOF) {
        /* EOF before the handshake completed is a failed handshake. */
        if (!c->err[0]) snprintf(c->err, sizeof c->err, "TLS handshake: connection closed by peer");
        c->failed = true;
        return TLS_ERROR;
    }
    return st;
}

tls_status tls_conn_read(tls_conn *c, void *buf, size_t cap, size_t *n)
{
    *n = 0;
    ERR_clear_error();
    c->err[0] = '\0';
    size_t got = 0;
    int r = SSL_read_ex(c->ssl, buf, cap, &got);
    if (r == 1) {
        *n = got;
        return TLS_OK;
    }
    return map_result(c, r, "TLS read");
}

tls_status tls_conn_write(tls_conn *c, const void *buf, size_t len, size_t *n)
{
    *n = 0;
    ERR_clear_error();
    c->err[0] = '\0';
    size_t put = 0;
    int r = SSL_write_ex(c->ssl, buf, len, &put);
    if (r == 1) {
        *n = put;
        return TLS_OK;
    }
    tls_status st = map_result(c, r, "TLS write");
    return st == TLS_EOF ? TLS_ERROR : st;
}

bool tls_conn_pending(const tls_conn *c)
{
    return SSL_pending(c->ssl) > 0;
}

void tls_conn_shutdown(tls_conn *c)
{
    if (c->failed || c->shut) return;
    c->shut = true;
    ERR_clear_error();
    SSL_shutdown(c->ssl);
    ERR_clear_error();
}

const char *tls_conn_error(const tls_conn *c)
{
    return c->err;
}

const char *tls_conn_version(const tls_conn *c)
{
    return SSL_get_version(c->ssl);
}

const char *tls_conn_cipher(const tls_conn *c)
{
    const char *name = SSL_get_cipher_name(c->ssl);
    return name ? name : "";
}

bool tls_conn_peer_verified(const tls_conn *c)
{
    X509 *peer = SSL_get0_peer_certificate(c->ssl);
    return peer && SSL_get_verify_result(c->ssl) == X509_V_OK;
}

const char *tls_conn_verify_error(const tls_conn *c)
{
    if (!SSL_get0_peer_certificate(c->ssl)) return "no peer certificate";
    long r = SSL_get_verify_result(c->ssl);
    return r == X509_V_OK ? "" : X509_verify_cert_error_string(r);
}

void tls_conn_free(tls_conn *c)
{
    if (!c) return;
    SSL_free(c->ssl);
    free(c->auth_name);
    free(c);
}
