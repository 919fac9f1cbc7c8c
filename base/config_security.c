/* config_security.c — the config checks that concern privileges and exposure: the syntax of
 * server.user / server.group; the load warning when submission.trusted_networks trusts
 * every address (0.0.0.0/0 or ::/0); and the file warnings `kilnd --check-config` prints
 * (and kilnd logs at start) when the config file or the submission TLS key can be read by
 * other users (mode & 004), or when a secret file (api.access_keys[].secret_file,
 * feedback.secret_file, metrics.token_file, cluster.redis.password_file: mode 0600/0400,
 * so only its owner reads it) is not owned by server.user, which kilnd runs as when it
 * reads them again on reload.
 * Warnings never fail a load: the file stays usable as it is. */
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>

#include "base/config.h"
#include "base/config_internal.h"
#include "base/util.h"

__attribute__((format(printf, 2, 3)))
static void config_add_warning(config *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    c->warnings = util_realloc(c->warnings, (c->nwarnings + 1) * sizeof *c->warnings);
    c->warnings[c->nwarnings++] = util_vasprintf(fmt, ap);
    va_end(ap);
}

bool config_valid_account(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 32 || s[0] == '-') return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

void config_add_security_warnings(config *c)
{
    for (size_t i = 0; i < c->ntrusted; i++)
        if (c->trusted[i].prefix == 0)
            config_add_warning(c, "submission.trusted_networks contains %s: every client that "
                               "can reach the listeners may submit without AUTH",
                               c->trusted[i].family == AF_INET6 ? "::/0" : "0.0.0.0/0");
}

/* A warning (malloc'd) when secret file PATH (named by KEY) is not owned by UID. */
static char *config_secret_owner_warning(const char *key, const char *path, const char *user,
                                         uid_t uid)
{
    struct stat st;
    if (!path || stat(path, &st) != 0 || st.st_uid == uid) return NULL;
    return util_asprintf("%s %s is owned by uid %u, not by server.user %s: kilnd reads it again "
                         "on reload as %s, which will fail (Permission denied); chown %s %s",
                         key, path, (unsigned)st.st_uid, user, user, user, path);
}

char **config_file_warnings(const config *c, size_t *n)
{
    size_t cap = 3 + c->napi_keys + 2;
    char **w = util_calloc(cap, sizeof *w);
    *n = 0;
    struct stat st;
    struct passwd *pw = c->user ? getpwnam(c->user) : NULL;
    if (pw) {
        char *x;
        for (size_t i = 0; i < c->napi_keys; i++)
            if ((x = config_secret_owner_warning("api.access_keys secret_file",
                                                 c->api_keys[i].secret_file, c->user, pw->pw_uid)))
                w[(*n)++] = x;
        if ((x = config_secret_owner_warning("feedback.secret_file", c->feedback_secret_file,
                                             c->user, pw->pw_uid)))
            w[(*n)++] = x;
        if ((x = config_secret_owner_warning("metrics.token_file", c->metrics_token_file, c->user,
                                             pw->pw_uid)))
            w[(*n)++] = x;
        if ((x = config_secret_owner_warning("cluster.redis.password_file",
                                             c->cluster_redis_password_file, c->user,
                                             pw->pw_uid)))
            w[(*n)++] = x;
    }
    if (stat(c->path, &st) == 0 && (st.st_mode & S_IROTH))
        w[(*n)++] = util_asprintf("%s is readable by other users (mode %04o): it may hold "
                                  "password hashes and names the TLS key; chmod o-r %s",
                                  c->path, (unsigned)(st.st_mode & 07777), c->path);
    if (c->tls_key && stat(c->tls_key, &st) == 0 && (st.st_mode & S_IROTH))
        w[(*n)++] = util_asprintf("submission.tls key %s is readable by other users (mode "
                                  "%04o); chmod o-r %s (it must stay readable by server.user "
                                  "for reload)", c->tls_key, (unsigned)(st.st_mode & 07777),
                                  c->tls_key);
    return w;
}

void config_file_warnings_free(char **w, size_t n)
{
    for (size_t i = 0; i < n; i++) free(w[i]);
    free(w);
}
