/* dkim_key.c — DKIM private keys and key records (see dkim.h): loading PEM (PKCS#1 or
 * PKCS#8) with a clear reason for every key kiln will not sign with, generating RSA 2048 and
 * Ed25519 keys, writing them as PKCS#8 atomically with mode 0600, the public key in the form
 * DNS publishes it (p=), and parsing a published record to compare it with a key.
 * OpenSSL 3 EVP only (no deprecated RSA_* calls). The record parser is hand-written: the
 * tag list of RFC 6376 section 3.2 is a few lines of "tag=value;" splitting. */
#include "mta/dkim.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "base/util.h"

struct dkim_key {
    EVP_PKEY *pkey;
    dkim_alg alg;
    int bits;
};

#define DKIM_RECORD_MAX 8192
#define DKIM_ED25519_RAW 32

const char *dkim_alg_name(dkim_alg a)
{
    switch (a) {
    case DKIM_ALG_RSA_SHA256: return "rsa-sha256";
    case DKIM_ALG_ED25519_SHA256: return "ed25519-sha256";
    }
    return "?";
}

const char *dkim_alg_key_type(dkim_alg a)
{
    switch (a) {
    case DKIM_ALG_RSA_SHA256: return "rsa";
    case DKIM_ALG_ED25519_SHA256: return "ed25519";
    }
    return "?";
}

dkim_alg dkim_key_alg(const dkim_key *k) { return k->alg; }
int dkim_key_bits(const dkim_key *k) { return k->bits; }

void dkim_key_to_text(const dkim_key *k, char *out, size_t cap)
{
    if (k->alg == DKIM_ALG_RSA_SHA256)
        snprintf(out, cap, "%s %d bits", dkim_alg_name(k->alg), k->bits);
    else
        snprintf(out, cap, "%s", dkim_alg_name(k->alg));
}

void dkim_key_free(dkim_key *k)
{
    if (!k) return;
    EVP_PKEY_free(k->pkey);
    free(k);
}

/* Never prompt for a pass phrase (the default callback reads the terminal). */
static int dkim_key_no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

static bool dkim_key_text_has(const char *s, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    if (n > len) return false;
    for (size_t i = 0; i + n <= len; i++)
        if (s[i] == needle[0] && memcmp(s + i, needle, n) == 0) return true;
    return false;
}

/* Why PEM_read_bio_PrivateKey found nothing it could use, from the text itself. */
static const char *dkim_key_pem_problem(const char *pem, size_t len)
{
    if (dkim_key_text_has(pem, len, "-----BEGIN ENCRYPTED PRIVATE KEY-----") ||
        dkim_key_text_has(pem, len, "Proc-Type: 4,ENCRYPTED"))
        return "the key is encrypted (kiln needs an unencrypted PEM private key; "
               "decrypt it with `openssl pkey -in FILE -out NEWFILE`)";
    if (dkim_key_text_has(pem, len, "-----BEGIN OPENSSH PRIVATE KEY-----"))
        return "an OpenSSH private key, not a PEM one (convert it with "
               "`ssh-keygen -p -m PKCS8 -f FILE`)";
    if (dkim_key_text_has(pem, len, "PRIVATE KEY-----"))
        return "the PEM private key cannot be decoded (damaged or not a key)";
    if (dkim_key_text_has(pem, len, "-----BEGIN PUBLIC KEY-----") ||
        dkim_key_text_has(pem, len, "-----BEGIN RSA PUBLIC KEY-----"))
        return "a public key, not a private key (signing needs the private key)";
    if (dkim_key_text_has(pem, len, "-----BEGIN CERTIFICATE-----"))
        return "a certificate with no private key";
    return "no PEM private key in it (expected -----BEGIN PRIVATE KEY----- or "
           "-----BEGIN RSA PRIVATE KEY-----)";
}

static dkim_key *dkim_key_fail(char **err, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static dkim_key *dkim_key_fail(char **err, const char *what, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *reason = util_vasprintf(fmt, ap);
    va_end(ap);
    *err = util_asprintf("dkim key %s: %s", what, reason);
    free(reason);
    ERR_clear_error();
    return NULL;
}

/* Checks an EVP_PKEY kiln may sign with and wraps it (taking ownership) or frees it. */
static dkim_key *dkim_key_adopt(EVP_PKEY *pkey, const char *what, char **err)
{
    dkim_alg alg;
    int bits = EVP_PKEY_get_bits(pkey);
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        alg = DKIM_ALG_RSA_SHA256;
        if (bits < DKIM_RSA_MIN_BITS) {
            EVP_PKEY_free(pkey);
            return dkim_key_fail(err, what, "RSA key of %d bits is too short (at least %d)", bits,
                                 DKIM_RSA_MIN_BITS);
        }
        if (bits > DKIM_RSA_MAX_BITS) {
            EVP_PKEY_free(pkey);
            return dkim_key_fail(err, what,
                                 "RSA key of %d bits is too long (at most %d: verifiers need "
                                 "not handle longer keys, RFC 8301 section 3.2)",
                                 bits, DKIM_RSA_MAX_BITS);
        }
    } else if (EVP_PKEY_is_a(pkey, "ED25519")) {
        alg = DKIM_ALG_ED25519_SHA256;
    } else {
        const char *type = EVP_PKEY_get0_type_name(pkey);
        char name[32];
        snprintf(name, sizeof name, "%s", type ? type : "unknown");
        EVP_PKEY_free(pkey);
        return dkim_key_fail(err, what,
                             "an %s key; DKIM signs with RSA (rsa-sha256) or Ed25519 "
                             "(ed25519-sha256) keys only", name);
    }
    /* An inconsistent RSA key (altered p, q or d) would sign garbage every time. */
    EVP_PKEY_CTX *cctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (!cctx) util_fatal("dkim: EVP_PKEY_CTX_new_from_pkey failed");
    int ok = EVP_PKEY_pairwise_check(cctx);
    EVP_PKEY_CTX_free(cctx);
    if (ok == 0 || ok == -1) {
        EVP_PKEY_free(pkey);
        return dkim_key_fail(err, what, "the %s private key fails its consistency check "
                             "(its parts do not belong together)",
                             alg == DKIM_ALG_RSA_SHA256 ? "RSA" : "Ed25519");
    }
    ERR_clear_error();   /* -2: no such check for this type; nothing to report */
    dkim_key *k = util_calloc(1, sizeof *k);
    k->pkey = pkey;
    k->alg = alg;
    k->bits = bits;
    return k;
}

dkim_key *dkim_key_load_pem(const char *pem, size_t len, const char *what, char **err)
{
    if (len > DKIM_KEY_FILE_MAX)
        return dkim_key_fail(err, what, "%zu bytes is too large for a PEM key (at most %d)", len,
                             DKIM_KEY_FILE_MAX);
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio) util_fatal("dkim: BIO_new_mem_buf failed");
    EVP_PKEY *pkey = PEM_read_bio_PrivateKey(bio, NULL, dkim_key_no_password, NULL);
    BIO_free(bio);
    if (!pkey) return dkim_key_fail(err, what, "%s", dkim_key_pem_problem(pem, len));
    return dkim_key_adopt(pkey, what, err);
}

dkim_key *dkim_key_load_file(const char *path, char **err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return dkim_key_fail(err, path, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return dkim_key_fail(err, path, "cannot stat: %s", strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return dkim_key_fail(err, path, "not a regular file");
    }
    if (st.st_size > DKIM_KEY_FILE_MAX) {
        close(fd);
        return dkim_key_fail(err, path, "%lld bytes is too large for a PEM key (at most %d)",
                             (long long)st.st_size, DKIM_KEY_FILE_MAX);
    }
    char *buf = util_malloc(DKIM_KEY_FILE_MAX + 1);
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, buf + len, DKIM_KEY_FILE_MAX + 1 - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            free(buf);
            return dkim_key_fail(err, path, "cannot read: %s", strerror(e));
        }
        if (r == 0 || (len += (size_t)r) > DKIM_KEY_FILE_MAX) break;
    }
    close(fd);
    dkim_key *k = dkim_key_load_pem(buf, len, path, err);
    OPENSSL_cleanse(buf, len);
    free(buf);
    return k;
}

dkim_key *dkim_key_generate(dkim_alg alg, char **err)
{
    EVP_PKEY *pkey = NULL;
    const char *what = alg == DKIM_ALG_RSA_SHA256 ? "(new RSA)" : "(new Ed25519)";
    if (alg == DKIM_ALG_RSA_SHA256)
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)DKIM_RSA_GEN_BITS);
    else if (alg == DKIM_ALG_ED25519_SHA256)
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    else
        return dkim_key_fail(err, "(new)", "unknown algorithm %d", (int)alg);
    if (!pkey) {
        unsigned long e = ERR_peek_last_error();
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        return dkim_key_fail(err, what, "key generation failed: %s", buf);
    }
    return dkim_key_adopt(pkey, what, err);
}

static int dkim_key_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int dkim_key_write_fail(char **err, const char *path, const char *step, int e,
                               char *tmp, int fd)
{
    if (fd >= 0) close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    *err = util_asprintf("dkim key %s: cannot %s: %s", path, step, strerror(e));
    ERR_clear_error();
    return -1;
}

int dkim_key_write_pem(const dkim_key *k, const char *path, char **err)
{
    BIO *mem = BIO_new(BIO_s_mem());
    if (!mem) util_fatal("dkim: BIO_new failed");
    if (PEM_write_bio_PKCS8PrivateKey(mem, k->pkey, NULL, NULL, 0, NULL, NULL) != 1) {
        BIO_free(mem);
        *err = util_asprintf("dkim key %s: cannot encode the key as PKCS#8 PEM", path);
        ERR_clear_error();
        return -1;
    }
    char *pem = NULL;
    long pem_len = BIO_get_mem_data(mem, &pem);

    const char *slash = strrchr(path, '/');
    char *dir = slash ? util_strndup(path, slash == path ? 1 : (size_t)(slash - path))
                      : util_strdup(".");
    char *tmp = util_asprintf("%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);   /* mode 0600, in path's directory */
    int rc = -1;
    if (fd < 0) {
        int e = errno;
        free(tmp);
        rc = dkim_key_write_fail(err, path, "create a temporary file beside it", e, NULL, -1);
    } else if (fchmod(fd, 0600) != 0) {
        rc = dkim_key_write_fail(err, path, "set mode 0600", errno, tmp, fd);
    } else if (dkim_key_write_all(fd, pem, (size_t)pem_len) != 0) {
        rc = dkim_key_write_fail(err, path, "write", errno, tmp, fd);
    } else if (fsync(fd) != 0) {
        rc = dkim_key_write_fail(err, path, "fsync", errno, tmp, fd);
    } else if (close(fd) != 0) {
        rc = dkim_key_write_fail(err, path, "close", errno, tmp, -1);
    } else if (rename(tmp, path) != 0) {
        rc = dkim_key_write_fail(err, path, "rename the temporary file over it", errno, tmp, -1);
    } else {
        free(tmp);
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            if (fsync(dfd) != 0)
                rc = dkim_key_write_fail(err, path, "fsync its directory", errno, NULL, -1);
            else
                rc = 0;
            close(dfd);
        } else {
            rc = dkim_key_write_fail(err, path, "open its directory", errno, NULL, -1);
        }
    }
    OPENSSL_cleanse(pem, (size_t)pem_len);
    BIO_free(mem);
    free(dir);
    return rc;
}

static char *dkim_key_b64(const unsigned char *der, size_t n)
{
    char *out = util_malloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, der, (int)n);
    return out;
}

char *dkim_key_public_b64(const dkim_key *k)
{
    if (k->alg == DKIM_ALG_ED25519_SHA256) {
        unsigned char raw[DKIM_ED25519_RAW];
        size_t n = sizeof raw;
        if (EVP_PKEY_get_raw_public_key(k->pkey, raw, &n) != 1 || n != sizeof raw)
            util_fatal("dkim: cannot read the raw Ed25519 public key");
        return dkim_key_b64(raw, n);
    }
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(k->pkey, &der);
    if (n <= 0) util_fatal("dkim: cannot encode the RSA public key");
    char *out = dkim_key_b64(der, (size_t)n);
    OPENSSL_free(der);
    return out;
}

char *dkim_key_txt_record(const dkim_key *k)
{
    char *p = dkim_key_public_b64(k);
    char *txt = util_asprintf("v=DKIM1; k=%s; p=%s", dkim_alg_key_type(k->alg), p);
    free(p);
    return txt;
}

char *dkim_txt_quote(const char *txt)
{
    strbuf sb;
    strbuf_init(&sb);
    size_t n = strlen(txt), i = 0;
    do {
        size_t chunk = n - i > 255 ? 255 : n - i;
        if (i > 0) strbuf_append(&sb, " ", 1);
        strbuf_append(&sb, "\"", 1);
        for (size_t j = i; j < i + chunk; j++) {
            if (txt[j] == '"' || txt[j] == '\\') strbuf_append(&sb, "\\", 1);
            strbuf_append(&sb, txt + j, 1);
        }
        strbuf_append(&sb, "\"", 1);
        i += chunk;
    } while (i < n);
    return strbuf_steal(&sb);
}

char *dkim_key_sign_b64(const dkim_key *k, const char *data, size_t n)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) util_fatal("dkim: EVP_MD_CTX_new failed");
    unsigned char digest[32];
    const unsigned char *in = (const unsigned char *)data;
    size_t inlen = n;
    const char *md = "SHA256";
    if (k->alg == DKIM_ALG_ED25519_SHA256) {
        /* RFC 8463 section 3: PureEdDSA over the SHA-256 digest, not over the data. */
        unsigned dl = 0;
        if (EVP_Digest(data, n, digest, &dl, EVP_sha256(), NULL) != 1 || dl != sizeof digest)
            util_fatal("dkim: SHA-256 failed");
        in = digest;
        inlen = sizeof digest;
        md = NULL;
    }
    char *out = NULL;
    size_t siglen = 0;
    if (EVP_DigestSignInit_ex(ctx, NULL, md, NULL, NULL, k->pkey, NULL) == 1 &&
        EVP_DigestSign(ctx, NULL, &siglen, in, inlen) == 1) {
        unsigned char *sig = util_malloc(siglen);
        if (EVP_DigestSign(ctx, sig, &siglen, in, inlen) == 1) out = dkim_key_b64(sig, siglen);
        free(sig);
    }
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return out;
}

/* ---- key records ---- */

void dkim_record_clear(dkim_record *r)
{
    free(r->p);
    memset(r, 0, sizeof *r);
}

static bool dkim_record_wsp(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static int dkim_record_fail(dkim_record *out, char **err, char *msg)
{
    dkim_record_clear(out);
    *err = msg;
    return -1;
}

static bool dkim_record_b64char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/' || c == '=';
}

/* Does the colon-separated list v[0..n) (whitespace allowed around items) contain item? */
static bool dkim_record_list_has(const char *v, size_t n, const char *item)
{
    size_t il = strlen(item), i = 0;
    while (i <= n) {
        size_t j = i;
        while (j < n && v[j] != ':') j++;
        size_t a = i, b = j;
        while (a < b && dkim_record_wsp(v[a])) a++;
        while (b > a && dkim_record_wsp(v[b - 1])) b--;
        if (b - a == il && strncasecmp(v + a, item, il) == 0) return true;
        i = j + 1;
    }
    return false;
}

/* At most 40 bytes of s[0..n) for an error message. */
static int dkim_record_excerpt(size_t n) { return (int)(n > 40 ? 40 : n); }

/* One tag of the record: name[0..nlen) = val[0..vlen), both trimmed. */
static int dkim_record_tag(dkim_record *out, const char *name, size_t nlen, const char *val,
                           size_t vlen, size_t ntag, unsigned *seen, char **err)
{
    for (size_t j = 0; j < nlen; j++) {
        char c = name[j];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_')) {
            *err = util_asprintf("'%.*s' is not a tag name", dkim_record_excerpt(nlen), name);
            return -1;
        }
    }
    static const char known[] = "vkpht";
    const char *at = nlen == 1 ? strchr(known, name[0]) : NULL;
    if (!at) return 0;                   /* unknown tags are ignored (section 3.2) */
    unsigned bit = 1u << (at - known);
    if (*seen & bit) {
        *err = util_asprintf("tag %c= appears twice", name[0]);
        return -1;
    }
    *seen |= bit;
    switch (name[0]) {
    case 'v':
        if (ntag != 1) {
            *err = util_strdup("v= is not the first tag");
            return -1;
        }
        if (vlen != 5 || memcmp(val, "DKIM1", 5) != 0) {
            *err = util_asprintf("v=%.*s is not DKIM1", dkim_record_excerpt(vlen), val);
            return -1;
        }
        return 0;
    case 'k':
        if (vlen == 0 || vlen >= sizeof out->k) {
            *err = util_asprintf("k=%.*s is not a key type", dkim_record_excerpt(vlen), val);
            return -1;
        }
        memcpy(out->k, val, vlen);
        out->k[vlen] = '\0';
        return 0;
    case 'p': {
        strbuf sb;
        strbuf_init(&sb);
        for (size_t j = 0; j < vlen; j++) {
            if (dkim_record_wsp(val[j])) continue;
            if (!dkim_record_b64char(val[j])) {
                strbuf_free(&sb);
                *err = util_asprintf("p= holds '%c', which is not base64", val[j]);
                return -1;
            }
            strbuf_append(&sb, val + j, 1);
        }
        out->p = strbuf_steal(&sb);
        out->revoked = out->p[0] == '\0';
        return 0;
    }
    case 'h':
        out->sha256 = dkim_record_list_has(val, vlen, "sha256");
        return 0;
    default:   /* 't' */
        out->testing = dkim_record_list_has(val, vlen, "y");
        return 0;
    }
}

int dkim_record_parse(const char *txt, dkim_record *out, char **err)
{
    memset(out, 0, sizeof *out);
    size_t len = strlen(txt);
    if (len > DKIM_RECORD_MAX)
        return dkim_record_fail(out, err, util_asprintf("record of %zu bytes is too long "
                                                        "(at most %d)", len, DKIM_RECORD_MAX));
    snprintf(out->k, sizeof out->k, "rsa");
    out->sha256 = true;
    unsigned seen = 0;
    size_t i = 0, ntag = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && txt[end] != ';') end++;
        size_t a = i, b = end;
        i = end + 1;
        while (a < b && dkim_record_wsp(txt[a])) a++;
        while (b > a && dkim_record_wsp(txt[b - 1])) b--;
        if (a == b) continue;             /* a trailing ';' (or an empty record: no p=) */
        const char *eq = memchr(txt + a, '=', b - a);
        if (!eq)
            return dkim_record_fail(out, err, util_asprintf("'%.*s' is not tag=value",
                                                            dkim_record_excerpt(b - a), txt + a));
        size_t ne = (size_t)(eq - txt);
        while (ne > a && dkim_record_wsp(txt[ne - 1])) ne--;
        size_t va = (size_t)(eq - txt) + 1;
        while (va < b && dkim_record_wsp(txt[va])) va++;
        if (ne == a)
            return dkim_record_fail(out, err, util_strdup("a tag with no name before '='"));
        char *msg = NULL;
        if (dkim_record_tag(out, txt + a, ne - a, txt + va, b - va, ++ntag, &seen, &msg) != 0)
            return dkim_record_fail(out, err, msg);
    }
    if (!out->p) return dkim_record_fail(out, err, util_strdup("no p= tag (the public key)"));
    return 0;
}

/* base64 (no whitespace) to bytes; -1 if malformed. */
static int dkim_key_unb64(const char *s, unsigned char **out, size_t *outlen)
{
    size_t n = strlen(s);
    if (n == 0 || n % 4 != 0 || n > DKIM_RECORD_MAX) return -1;
    size_t pad = 0;
    if (s[n - 1] == '=') pad++;
    if (s[n - 2] == '=') pad++;
    for (size_t i = 0; i < n - pad; i++)
        if (s[i] == '=') return -1;
    unsigned char *buf = util_malloc(n / 4 * 3 + 1);
    int r = EVP_DecodeBlock(buf, (const unsigned char *)s, (int)n);
    if (r < 0 || (size_t)r < pad) {
        free(buf);
        return -1;
    }
    *out = buf;
    *outlen = (size_t)r - pad;
    return 0;
}

bool dkim_key_matches_record(const dkim_key *k, const dkim_record *r, const char **why)
{
    const char *reason = NULL;
    unsigned char *der = NULL;
    size_t n = 0;
    EVP_PKEY *pub = NULL;
    if (r->revoked) {
        reason = "the record is revoked (empty p=)";
    } else if (strcasecmp(r->k, dkim_alg_key_type(k->alg)) != 0) {
        reason = k->alg == DKIM_ALG_RSA_SHA256
                     ? "the record's k= is not rsa but the key is RSA"
                     : "the record's k= is not ed25519 but the key is Ed25519";
    } else if (dkim_key_unb64(r->p, &der, &n) != 0) {
        reason = "p= is not a valid public key";
    } else if (k->alg == DKIM_ALG_ED25519_SHA256) {
        if (n != DKIM_ED25519_RAW)
            reason = "p= is not a valid public key";
        else if (!(pub = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, der, n)))
            reason = "p= is not a valid public key";
    } else {
        const unsigned char *q = der;
        pub = d2i_PUBKEY(NULL, &q, (long)n);
        if (pub && q != der + n) {
            EVP_PKEY_free(pub);
            pub = NULL;
        }
        if (!pub) {
            q = der;
            pub = d2i_PublicKey(EVP_PKEY_RSA, NULL, &q, (long)n);
            if (pub && q != der + n) {
                EVP_PKEY_free(pub);
                pub = NULL;
            }
        }
        if (!pub) reason = "p= is not a valid public key";
    }
    if (!reason && EVP_PKEY_eq(k->pkey, pub) != 1) reason = "p= is a different public key";
    EVP_PKEY_free(pub);
    free(der);
    ERR_clear_error();
    if (reason && why) *why = reason;
    return reason == NULL;
}
