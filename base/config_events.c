/* config_events.c — a configuration set's `events` list (SPEC section 4): `file`
 * destinations ({type: file, path}) and `webhook` destinations ({type: webhook, url,
 * ca_file, batch, max_backlog}).
 *
 * Promises: a webhook URL is accepted only if kilnd can post to it — http:// or https://
 * (any case), a host (a valid DNS name or an IP literal), an optional port 1..65535, path
 * and query; it is split by libcurl's own URL parser (curl_url), the one that will use it,
 * so what passes here is what curl connects to (config_url_problem; config_unsub.c uses it
 * for https:// only). Refused, each with its own reason: other
 * schemes or no scheme, no host (curl alone would take "http:///x" as host "x"), a host
 * that is no DNS name, user info (kiln sends no credentials from a URL: they would be
 * logged and shown by kilnctl), a fragment, blanks or control characters, port 0 or past
 * 65535. A `ca_file` must
 * be a readable regular file holding at least one PEM certificate (read with OpenSSL, as
 * curl will). Errors name the key path (configuration_sets[i].events[j].url) and the
 * value; `batch` is 1..100, `max_backlog` 1..1,000,000,000. */
#include "base/config_internal.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const config_event_names[] = {"file", "webhook", NULL};

/* The part of u (malloc'd by curl, free with curl_free), or NULL when u has none. */
static char *config_url_part(CURLU *u, CURLUPart what)
{
    char *part = NULL;
    if (curl_url_get(u, what, &part, 0) != CURLUE_OK) return NULL;
    return part;
}

char *config_url_problem(const char *url, bool https_only)
{
    for (const char *q = url; *q; q++)
        if ((unsigned char)*q <= 0x20 || *q == 0x7f)
            return util_strdup("contains a blank or control character (percent-encode it)");
    const char *sep = strstr(url, "://");
    size_t slen = sep ? (size_t)(sep - url) : 0;
    bool https = slen == 5 && strncasecmp(url, "https", 5) == 0;
    if (https_only && !https) return util_strdup("is not an https:// URL");
    if (!sep || !(https || (slen == 4 && strncasecmp(url, "http", 4) == 0)))
        return util_strdup("is not an http:// or https:// URL");
    if (strchr("/?#", sep[3]))   /* curl would take "http:///x" as host "x" */
        return util_strdup("has no host");
    CURLU *u = curl_url();
    if (!u) util_fatal("config: curl_url failed");
    CURLUcode rc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (rc != CURLUE_OK) {
        curl_url_cleanup(u);
        return util_asprintf("is not a usable URL: %s", curl_url_strerror(rc));
    }
    char *host = config_url_part(u, CURLUPART_HOST);
    char *user = config_url_part(u, CURLUPART_USER);
    char *password = config_url_part(u, CURLUPART_PASSWORD);
    char *fragment = config_url_part(u, CURLUPART_FRAGMENT);
    char *port = config_url_part(u, CURLUPART_PORT);
    char *why = NULL;
    if (!host || !*host)
        why = util_strdup("has no host");
    else if (host[0] != '[' && !config_is_ip(host) && !config_valid_hostname(host))
        why = util_asprintf("has a host that is not a valid host name: %s", host);
    else if (user || password)
        why = util_strdup("has user info (user:password@): kiln sends no credentials from a "
                          "URL (they would be logged)");
    else if (fragment)
        why = util_strdup("has a fragment (#...), which is never sent");
    else if (port && strtol(port, NULL, 10) == 0)
        why = util_strdup("has port 0; the port must be 1..65535");
    curl_free(host);
    curl_free(user);
    curl_free(password);
    curl_free(fragment);
    curl_free(port);
    curl_url_cleanup(u);
    return why;
}

static int config_read_webhook_url(config_parser *p, yaml_node_t *v, char **out)
{
    const char *s = NULL;
    if (config_as_scalar(p, v, "a URL", &s) < 0) return -1;
    char *why = config_url_problem(s, false);
    if (why) {
        config_fail(p, v, "'%s' %s", s, why);
        free(why);
        return -1;
    }
    free(*out);
    *out = util_strdup(s);
    return 0;
}

/* A readable regular file with at least one PEM certificate (or CRL), as curl loads it. */
static int config_read_ca_file(config_parser *p, yaml_node_t *v, char **out)
{
    if (config_as_path(p, v, out) < 0) return -1;
    struct stat st;
    if (access(*out, R_OK) < 0 || stat(*out, &st) < 0)
        return config_fail(p, v, "cannot read %s: %s", *out, strerror(errno));
    if (!S_ISREG(st.st_mode)) return config_fail(p, v, "%s is not a regular file", *out);
    X509_STORE *store = X509_STORE_new();
    X509_LOOKUP *lk = store ? X509_STORE_add_lookup(store, X509_LOOKUP_file()) : NULL;
    if (!lk) util_fatal("config: cannot set up an OpenSSL certificate store");
    ERR_clear_error();
    int n = X509_load_cert_crl_file(lk, *out, X509_FILETYPE_PEM);
    unsigned long e = ERR_peek_last_error();
    X509_STORE_free(store);
    ERR_clear_error();
    if (n <= 0) {
        const char *r = e ? ERR_reason_error_string(e) : NULL;
        return config_fail(p, v, "%s holds no PEM CA certificate (%s)", *out,
                           r ? r : "nothing found");
    }
    return 0;
}

static int config_read_event(config_parser *p, yaml_node_t *it, config_event_dest *e)
{
    static const char *const file_keys[] = {"type", "path", NULL};
    static const char *const hook_keys[] = {"type", "url", "ca_file", "batch", "max_backlog",
                                            NULL};
    if (config_as_map(p, it, NULL) < 0) return -1;
    if (config_is_null(it))
        return config_fail(p, it, "expected a map like {type: file, path: ...}, got nothing");
    yaml_node_t *t = config_lookup(p, it, "type", NULL);
    if (!t) return config_missing(p, LINE(it), "type", "(file or webhook)");
    int type = CONFIG_EVENT_FILE;
    FIELD(it, "type", f, config_as_enum(p, f, config_event_names, &type));
    e->type = (config_event_type)type;
    if (config_check_keys(p, it, type == CONFIG_EVENT_FILE ? file_keys : hook_keys) < 0) return -1;
    if (e->type == CONFIG_EVENT_FILE) {
        if (!config_lookup(p, it, "path", NULL))
            return config_missing(p, LINE(it), "path", "(type file writes events to this file)");
        FIELD(it, "path", f, config_as_path(p, f, &e->path));
        return 0;
    }
    e->batch = 1;
    e->max_backlog = CONFIG_WEBHOOK_BACKLOG_DEFAULT;
    if (!config_lookup(p, it, "url", NULL))
        return config_missing(p, LINE(it), "url", "(type webhook posts events to this URL)");
    FIELD(it, "url", f, config_read_webhook_url(p, f, &e->url));
    FIELD(it, "ca_file", f, config_read_ca_file(p, f, &e->ca_file));
    FIELD(it, "batch", f,
          config_as_int32(p, f, 1, CONFIG_WEBHOOK_BATCH_MAX,
                          "a whole number from 1 to 100 (events per POST)", &e->batch));
    FIELD(it, "max_backlog", f,
          config_as_int(p, f, 1, CONFIG_WEBHOOK_BACKLOG_MAX,
                        "a whole number from 1 to 1000000000 (undelivered events kept)",
                        &e->max_backlog));
    return 0;
}

int config_read_events(config_parser *p, yaml_node_t *v, config_set *s)
{
    size_t n;
    if (config_as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    s->events = util_calloc(n, sizeof *s->events);
    s->nevents = n;
    for (size_t i = 0; i < n; i++) {
        size_t m = config_push_index(p, i);
        if (config_read_event(p, config_item(p, v, i), &s->events[i]) < 0) return -1;
        config_pop(p, m);
    }
    return 0;
}

void config_summary_webhook(strbuf *sb, const config_event_dest *e)
{
    if (e->batch > 1) strbuf_printf(sb, " (batch %d)", e->batch);
    if (e->max_backlog != CONFIG_WEBHOOK_BACKLOG_DEFAULT)
        strbuf_printf(sb, " (max_backlog %lld)", (long long)e->max_backlog);
    if (e->ca_file) strbuf_printf(sb, " (ca_file %s)", e->ca_file);
}
