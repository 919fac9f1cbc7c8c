/* config_api.c — the `api` section: the SES v2 HTTP API's listen addresses, optional TLS,
 * access keys (id, secret read from a file, optional scope as submission.auth's) and the
 * listener's limits (body size, bodies in flight, connections, timeout, request rate per key).
 *
 * Promises: every value is checked with an error "FILE:LINE: api.KEY: what is wrong"; a
 * secret file is read at load and must be a regular file that gives group and others no
 * access (0600/0400), holding the secret on one line (one trailing newline allowed) of 16
 * to 128 printable non-blank characters; the secret never appears in an error. Key ids are
 * unique and differ from every submission.auth user (both authenticate SMTP AUTH). A scope
 * is read and checked by config_auth.c's helpers, as submission.auth's. An absent or empty
 * api.listen leaves the API off (the keys then serve SMTP AUTH only); a listen without any
 * key is an error. Read after submission, account and configuration_sets. */
#include "base/config_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define API_MAX_BODY_DEFAULT (41943040 + KB * KB)   /* SES's 40 MB raw message + 1 MB of JSON */
#define API_INFLIGHT_DEFAULT (256 * KB * KB)
#define API_CONNECTIONS_DEFAULT 256
#define API_PER_CLIENT_DEFAULT 64
#define API_TIMEOUT_DEFAULT (60 * MS_SECOND)
#define API_RATE_DEFAULT 200                          /* requests per second per key */
#define API_ID_MIN 16
#define API_ID_MAX 128
#define API_SECRET_MIN 16
#define API_SECRET_MAX 128

void config_api_defaults(config *c)
{
    c->api_max_body_size = API_MAX_BODY_DEFAULT;
    c->api_max_inflight_bytes = API_INFLIGHT_DEFAULT;
    c->api_max_connections = API_CONNECTIONS_DEFAULT;
    c->api_max_connections_per_client = API_PER_CLIENT_DEFAULT;
    c->api_timeout_ms = API_TIMEOUT_DEFAULT;
    c->api_max_request_rate.count = API_RATE_DEFAULT;
    c->api_max_request_rate.per_ms = MS_SECOND;
}

void config_api_free(config *c)
{
    for (size_t i = 0; i < c->napi_listen; i++) free(c->api_listen[i].host);
    free(c->api_listen);
    free(c->api_tls_cert);
    free(c->api_tls_key);
    for (size_t i = 0; i < c->napi_keys; i++) {
        config_access_key *k = &c->api_keys[i];
        free(k->id);
        free(k->secret_file);
        if (k->secret) memset(k->secret, 0, strlen(k->secret));
        free(k->secret);
        config_scope_clear(&k->scope);
    }
    free(c->api_keys);
}

const config_access_key *config_find_access_key(const config *cfg, const char *id)
{
    for (size_t i = 0; cfg && id && i < cfg->napi_keys; i++)
        if (strcmp(cfg->api_keys[i].id, id) == 0) return &cfg->api_keys[i];
    return NULL;
}

static bool config_api_valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n < API_ID_MIN || n > API_ID_MAX) return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9'))) return false;
    return true;
}

static int config_api_tls(config_parser *p, yaml_node_t *v)
{
    static const char *const keys[] = {"cert", "key", NULL};
    config *c = p->cfg;
    if (config_as_map(p, v, keys) < 0) return -1;
    yaml_node_t *m = config_is_null(v) ? NULL : v;
    if (!config_lookup(p, m, "cert", NULL))
        return config_missing(p, LINE(v), "cert", "(HTTPS needs both cert and key)");
    if (!config_lookup(p, m, "key", NULL))
        return config_missing(p, LINE(v), "key", "(HTTPS needs both cert and key)");
    FIELD(m, "cert", f, config_read_readable_file(p, f, &c->api_tls_cert));
    FIELD(m, "key", f, config_read_readable_file(p, f, &c->api_tls_key));
    return 0;
}

int config_read_secret_file(config_parser *p, yaml_node_t *v, const char *path, size_t max,
                            char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) return config_fail(p, v, "cannot read %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return config_fail(p, v, "cannot read %s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return config_fail(p, v, "%s is not a regular file", path);
    }
    if (st.st_mode & 077) {
        close(fd);
        return config_fail(p, v,
                           "%s must not be readable by group or others (mode %04o); chmod 600 it",
                           path, (unsigned)(st.st_mode & 07777));
    }
    size_t cap = max + 2;   /* max bytes, a newline, and one more to see that it is too long */
    char *buf = util_malloc(cap + 1);
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            memset(buf, 0, cap + 1);
            free(buf);
            return config_fail(p, v, "cannot read %s: %s", path, strerror(e));
        }
        if (r == 0 || (n += (size_t)r) == cap) break;
    }
    close(fd);
    buf[n] = '\0';
    if (n > 0 && buf[n - 1] == '\n') buf[--n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

/* The secret of k->secret_file (already resolved): checks the file and reads its one line. */
static int config_api_secret(config_parser *p, yaml_node_t *v, config_access_key *k)
{
    const char *path = k->secret_file;
    char *buf = NULL;
    size_t n = 0;
    if (config_read_secret_file(p, v, path, API_SECRET_MAX, &buf, &n) < 0) return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        if ((unsigned char)buf[i] <= 0x20 || (unsigned char)buf[i] >= 0x7f)
            rc = config_fail(p, v,
                             "%s must hold the secret access key alone on one line: byte %zu "
                             "is a blank, a line break or not printable ASCII", path, i + 1);
    if (rc == 0 && n > API_SECRET_MAX)
        rc = config_fail(p, v, "%s holds more than %d characters; a secret access key has %d "
                         "to %d", path, API_SECRET_MAX, API_SECRET_MIN, API_SECRET_MAX);
    else if (rc == 0 && n < API_SECRET_MIN)
        rc = config_fail(p, v, "%s holds %zu characters; a secret access key has %d to %d",
                         path, n, API_SECRET_MIN, API_SECRET_MAX);
    if (rc == 0) k->secret = util_strdup(buf);
    memset(buf, 0, n);
    free(buf);
    return rc;
}

static int config_api_secret_file(config_parser *p, yaml_node_t *v, config_access_key *k)
{
    if (config_as_path(p, v, &k->secret_file) < 0) return -1;
    return config_api_secret(p, v, k);
}

static int config_api_key(config_parser *p, yaml_node_t *it, size_t i)
{
    static const char *const keys[] = {"id", "secret_file", "identities", "configuration_sets",
                                       NULL};
    config *c = p->cfg;
    if (config_as_map(p, it, keys) < 0) return -1;
    if (config_is_null(it)) return config_missing(p, LINE(it), "id", NULL);
    config_access_key *k = &c->api_keys[i];
    FIELD(it, "id", f,
          config_as_str(p, f, config_api_valid_id,
                        "an access key id (16 to 128 upper-case letters and digits, e.g. "
                        "AKIAKILNEXAMPLE0001)", &k->id));
    if (!k->id) return config_missing(p, LINE(it), "id", "(e.g. AKIAKILNEXAMPLE0001)");
    for (size_t j = 0; j < i; j++)
        if (strcmp(c->api_keys[j].id, k->id) == 0) {
            config_push_key(p, "id");
            return config_fail(p, config_lookup(p, it, "id", NULL),
                               "access key id '%s' is listed twice", k->id);
        }
    for (size_t j = 0; j < c->nauth; j++)
        if (strcmp(c->auth[j].user, k->id) == 0) {
            config_push_key(p, "id");
            return config_fail(p, config_lookup(p, it, "id", NULL),
                               "access key id '%s' is also a submission.auth user; SMTP AUTH "
                               "could not tell them apart", k->id);
        }
    FIELD(it, "secret_file", f, config_api_secret_file(p, f, k));
    if (!k->secret_file)
        return config_missing(p, LINE(it), "secret_file",
                              "(a file holding the secret access key, mode 0600)");
    k->scope.user = util_strdup(k->id);
    if (config_read_scope(p, it, &k->scope) < 0) return -1;
    return config_check_scope(p, it, &k->scope);
}

static int config_api_keys(config_parser *p, yaml_node_t *v)
{
    config *c = p->cfg;
    size_t n;
    if (config_as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    c->api_keys = util_calloc(n, sizeof *c->api_keys);
    c->napi_keys = n;
    for (size_t i = 0; i < n; i++) {
        size_t m = config_push_index(p, i);
        if (config_api_key(p, config_item(p, v, i), i) < 0) return -1;
        config_pop(p, m);
    }
    return 0;
}

/* api.listen: like submission.listen, but empty means no API, and no address may be one of
 * submission.listen's. */
static int config_api_listen(config_parser *p, yaml_node_t *v)
{
    config *c = p->cfg;
    if (config_read_hostports(p, v, false, 8080, &c->api_listen, &c->napi_listen) < 0) return -1;
    for (size_t i = 0; i < c->napi_listen; i++)
        for (size_t j = 0; j < c->nlisten; j++)
            if (c->api_listen[i].port == c->listen[j].port &&
                strcmp(c->api_listen[i].host, c->listen[j].host) == 0) {
                config_push_index(p, i);
                return config_fail(p, config_item(p, v, i),
                                   "'%s' port %d is also a submission.listen address",
                                   c->api_listen[i].host, c->api_listen[i].port);
            }
    return 0;
}

static int config_api_size(config_parser *p, yaml_node_t *v, int64_t min, const char *minwhat,
                           int64_t *out)
{
    int64_t x;
    if (config_as_size(p, v, &x) < 0) return -1;
    if (x < min) return config_fail(p, v, "must be at least %s, not %s", minwhat, config_sval(v));
    *out = x;
    return 0;
}

static int config_api_timeout(config_parser *p, yaml_node_t *v)
{
    if (config_as_duration(p, v, true, &p->cfg->api_timeout_ms) < 0) return -1;
    if (p->cfg->api_timeout_ms < MS_SECOND || p->cfg->api_timeout_ms % MS_SECOND != 0)
        return config_fail(p, v, "must be a whole number of seconds, at least 1s, not %s",
                           config_sval(v));
    return 0;
}

static int config_api_section(config_parser *p, yaml_node_t *m)
{
    static const char *const keys[] = {"listen", "tls", "access_keys", "max_body_size",
                                       "max_inflight_bytes", "max_connections",
                                       "max_connections_per_client", "timeout",
                                       "max_request_rate", NULL};
    config *c = p->cfg;
    if (config_as_map(p, m, keys) <= 0) return p->err ? -1 : 0;
    FIELD(m, "listen", v, config_api_listen(p, v));
    FIELD(m, "tls", v, config_api_tls(p, v));
    FIELD(m, "access_keys", v, config_api_keys(p, v));
    if (c->napi_listen > 0 && c->napi_keys == 0) {
        yaml_node_t *k = config_lookup(p, m, "access_keys", NULL);
        config_push_key(p, "access_keys");
        return config_fail_at(p, config_line_of(k, LINE(m)),
                              "at least one key is needed when api.listen is set");
    }
    FIELD(m, "max_body_size", v,
          config_api_size(p, v, 64 * KB, "64KB", &c->api_max_body_size));
    FIELD(m, "max_inflight_bytes", v,
          config_api_size(p, v, c->api_max_body_size, "api.max_body_size",
                          &c->api_max_inflight_bytes));
    if (c->api_max_inflight_bytes < c->api_max_body_size) {
        yaml_node_t *v = config_lookup(p, m, "max_body_size", NULL);
        config_push_key(p, "max_body_size");
        return config_fail(p, v,
                           "must not exceed api.max_inflight_bytes (%lld bytes), or no request "
                           "of the largest size could ever be read",
                           (long long)c->api_max_inflight_bytes);
    }
    FIELD(m, "max_connections", v,
          config_as_int32(p, v, 1, 1000000, NULL, &c->api_max_connections));
    FIELD(m, "max_connections_per_client", v,
          config_as_int32(p, v, 1, 1000000, NULL, &c->api_max_connections_per_client));
    if (c->api_max_connections_per_client > c->api_max_connections) {
        yaml_node_t *v = config_lookup(p, m, "max_connections_per_client", NULL);
        config_push_key(p, "max_connections_per_client");
        return config_fail_at(p, config_line_of(v, LINE(m)),
                              "%d is more than api.max_connections (%d)",
                              c->api_max_connections_per_client, c->api_max_connections);
    }
    FIELD(m, "timeout", v, config_api_timeout(p, v));
    FIELD(m, "max_request_rate", v, config_as_rate(p, v, &c->api_max_request_rate));
    return 0;
}

int config_read_api(config_parser *p, yaml_node_t *root)
{
    FIELD(root, "api", v, config_api_section(p, v));
    return 0;
}
