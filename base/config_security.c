/* config_security.c — the config checks that concern privileges and exposure: the syntax of
 * server.user / server.group; the load warning when submission.trusted_networks trusts
 * every address (0.0.0.0/0 or ::/0); and the file warnings `kilnd --check-config` prints
 * (and kilnd logs at start) when the config file or the submission TLS key can be read by
 * other users (mode & 004). Warnings never fail a load: the file stays usable as it is. */
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

char **config_file_warnings(const config *c, size_t *n)
{
    char **w = util_calloc(2, sizeof *w);
    *n = 0;
    struct stat st;
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
