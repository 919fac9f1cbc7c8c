/* auth.c — SMTP AUTH building blocks: base64 through OpenSSL's EVP_EncodeBlock and
 * EVP_DecodeBlock (with the strict validation and padding arithmetic they leave to the
 * caller), SASL PLAIN and LOGIN response decoding, password checks with libcrypt's
 * crypt_rn against submission.auth's hashes, and SES SMTP passwords of api.access_keys
 * (mta/sigv4.c derives them), all compared with CRYPTO_memcmp. */
#include "mta/auth.h"

#include <crypt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "base/util.h"
#include "mta/sigv4.h"

char *auth_b64_encode(const void *p, size_t n)
{
    if (n > (size_t)INT_MAX / 4 * 3 - 3) util_fatal("auth: %zu bytes too many to base64-encode", n);
    size_t out_len = 4 * ((n + 2) / 3);
    char *out = util_malloc(out_len + 1);
    int got = EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    if (got < 0 || (size_t)got != out_len)
        util_fatal("auth: EVP_EncodeBlock returned %d for %zu bytes", got, n);
    out[out_len] = '\0';
    return out;
}

static bool auth_b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
}

char *auth_b64_decode(const char *b64, size_t *len)
{
    size_t n = strlen(b64);
    if (n % 4 != 0 || n > (size_t)INT_MAX) return NULL;
    size_t pad = 0;
    if (n > 0 && b64[n - 1] == '=') pad++;
    if (n > 1 && b64[n - 2] == '=') pad++;
    for (size_t i = 0; i < n - pad; i++)
        if (!auth_b64_char(b64[i])) return NULL;
    /* EVP_DecodeBlock decodes whole quads, padding included, as 3 bytes each. */
    size_t full = n / 4 * 3;
    char *out = util_malloc(full + 1);
    int got = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)b64, (int)n);
    if (got < 0 || (size_t)got != full) {
        free(out);
        return NULL;
    }
    *len = full - pad;
    out[*len] = '\0';
    return out;
}

int auth_decode_plain(const char *b64, char **user, char **pass)
{
    size_t n = 0;
    char *raw = auth_b64_decode(b64, &n);
    if (!raw) return -1;
    /* authzid NUL authcid NUL passwd: exactly two NULs. */
    char *nul1 = memchr(raw, '\0', n);
    char *nul2 = nul1 ? memchr(nul1 + 1, '\0', n - (size_t)(nul1 + 1 - raw)) : NULL;
    int rc = -1;
    if (nul2 && !memchr(nul2 + 1, '\0', n - (size_t)(nul2 + 1 - raw))) {
        const char *authzid = raw, *authcid = nul1 + 1, *passwd = nul2 + 1;
        if (*authcid && *passwd && (!*authzid || strcmp(authzid, authcid) == 0)) {
            *user = util_strdup(authcid);
            *pass = util_strdup(passwd);
            rc = 0;
        }
    }
    OPENSSL_cleanse(raw, n);
    free(raw);
    return rc;
}

char *auth_decode_login(const char *b64)
{
    size_t n = 0;
    char *raw = auth_b64_decode(b64, &n);
    if (!raw) return NULL;
    if (n == 0 || memchr(raw, '\0', n)) {
        OPENSSL_cleanse(raw, n);
        free(raw);
        return NULL;
    }
    return raw;
}

int auth_split_command(const char *arg, char **mech, char **initial)
{
    const char *sp = strchr(arg, ' ');
    if (!sp) {
        *mech = util_strdup(arg);
        *initial = NULL;
        return 0;
    }
    const char *ir = sp + 1;
    while (*ir == ' ') ir++;
    if (!*ir || strchr(ir, ' ')) return -1;
    *mech = util_strndup(arg, (size_t)(sp - arg));
    *initial = util_strdup(strcmp(ir, "=") == 0 ? "" : ir);
    return 0;
}

bool auth_crypt_check(const char *pass, const char *setting, const char *want)
{
    struct crypt_data *data = util_calloc(1, sizeof *data);
    const char *out = crypt_rn(pass, setting, data, (int)sizeof *data);
    bool ok = false;
    if (out && want && out[0] != '*') {
        size_t n = strlen(want);
        ok = strlen(out) == n && CRYPTO_memcmp(out, want, n) == 0;
    }
    OPENSSL_cleanse(data, sizeof *data);
    free(data);
    return ok;
}

const config_auth_user *auth_find_user(const config *cfg, const char *user)
{
    const config_auth_user *found = NULL;
    for (size_t i = 0; user && i < cfg->nauth; i++)
        if (!found && strcmp(cfg->auth[i].user, user) == 0) found = &cfg->auth[i];
    return found;
}

const char *auth_check_hash(const config *cfg, const char *user, bool *known)
{
    const config_auth_user *u = auth_find_user(cfg, user);
    *known = u != NULL;
    if (u) return u->password_hash;
    return cfg->nauth ? cfg->auth[0].password_hash : NULL;
}

bool auth_verify(const config *cfg, const char *user, const char *pass)
{
    if (!user || !pass || cfg->nauth == 0) return false;
    const config_auth_user *found = NULL;
    for (size_t i = 0; i < cfg->nauth; i++)
        if (!found && strcmp(cfg->auth[i].user, user) == 0) found = &cfg->auth[i];
    if (!found) {
        /* Same work as for a real user (same algorithm and cost as the first one), then no. */
        auth_crypt_check(pass, cfg->auth[0].password_hash, NULL);
        return false;
    }
    return auth_crypt_check(pass, found->password_hash, found->password_hash);
}

bool auth_enabled(const config *cfg)
{
    return cfg->nauth > 0 || cfg->napi_keys > 0;
}

bool auth_access_key_check(const config_access_key *key, const char *region, const char *pass)
{
    if (!key || !key->secret || !pass) return false;
    char want[64];
    sigv4_ses_smtp_password(key->secret, region ? region : "", want);
    size_t n = strlen(want);
    bool ok = strlen(pass) == n && CRYPTO_memcmp(pass, want, n) == 0;
    OPENSSL_cleanse(want, sizeof want);
    return ok;
}

const config_access_key *auth_access_key_match(const config *cfg, const char *user,
                                               const char *pass)
{
    const config_access_key *key = config_find_access_key(cfg, user);
    return key && auth_access_key_check(key, cfg->region, pass) ? key : NULL;
}

bool auth_hash_usable(const char *password_hash)
{
    /* Only "$id$..." methods: a bare string would be taken as a legacy DES salt. A hash of
     * any password with a complete hash as setting has that hash's length; a salt alone
     * ("$6$abc") is shorter than its hashes and would never match. */
    if (!password_hash || password_hash[0] != '$') return false;
    struct crypt_data *data = util_calloc(1, sizeof *data);
    const char *out = crypt_rn("", password_hash, data, (int)sizeof *data);
    bool ok = out && out[0] != '*' && strlen(out) == strlen(password_hash);
    free(data);
    return ok;
}
