/* config_feedback.c — the `feedback` section (issue 14): the inbound listener for
 * asynchronous bounces (DSN) and complaints (ARF), its VERP bounce domain, the addresses that
 * take feedback-loop reports, the HMAC key of the VERP tokens, and the intake's limits.
 *
 * Promises: the section is optional and feedback_on says whether it is present; when it is,
 * listen (a non-empty HOST:PORT list, no address of submission.listen or api.listen) and
 * secret_file are required. Every value is checked with an error "FILE:LINE: feedback.KEY:
 * what is wrong". The secret file is read at load like api access keys' (config_api.c's
 * config_read_secret_file: a regular file, mode 0600/0400); its bytes, the trailing newline
 * removed, are the key (any bytes, 16 to 4096 of them); the secret never appears in an
 * error. bounce_domain and addresses are lower-cased; addresses are unique.
 * complaint_hold_rate reads "0.1%" or 0.001 and lies in [0, 1]. Read after submission and
 * api. */
#include "base/config_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define FEEDBACK_MAX_SIZE_DEFAULT (10 * KB * KB)
#define FEEDBACK_MAX_SIZE_MIN KB
#define FEEDBACK_RETENTION_DEFAULT (14 * MS_DAY)
#define FEEDBACK_HOLD_RATE_DEFAULT 0.001
#define FEEDBACK_SECRET_MIN 16
#define FEEDBACK_SECRET_MAX 4096
#define FEEDBACK_LOCAL_MAX 64            /* RFC 5321's local part */
#define FEEDBACK_EXAMPLE_PORT 25

void config_feedback_defaults(config *c)
{
    c->feedback_max_message_size = FEEDBACK_MAX_SIZE_DEFAULT;
    c->feedback_retention_ms = FEEDBACK_RETENTION_DEFAULT;
    c->feedback_complaint_hold_rate = FEEDBACK_HOLD_RATE_DEFAULT;
}

void config_feedback_free(config *c)
{
    for (size_t i = 0; i < c->nfeedback_listen; i++) free(c->feedback_listen[i].host);
    free(c->feedback_listen);
    free(c->feedback_bounce_domain);
    for (size_t i = 0; i < c->nfeedback_addresses; i++) free(c->feedback_addresses[i]);
    free(c->feedback_addresses);
    if (c->feedback_secret) memset(c->feedback_secret, 0, c->feedback_secret_len);
    free(c->feedback_secret);
    free(c->feedback_secret_file);
}

/* A plain address local@domain: a local part of 1 to 64 bytes without blanks, control
 * characters, '@' or angle brackets, and a DNS name after the '@'. */
static bool config_feedback_valid_address(const char *s)
{
    const char *at = strchr(s, '@');
    if (!at || at == s || (size_t)(at - s) > FEEDBACK_LOCAL_MAX) return false;
    for (const char *q = s; q < at; q++) {
        unsigned char ch = (unsigned char)*q;
        if (isspace(ch) || iscntrl(ch) || ch == '<' || ch == '>' || ch >= 0x7f) return false;
    }
    return config_valid_hostname(at + 1);
}

/* feedback.listen: like api.listen, but required, and no address of submission.listen or
 * api.listen (each has its own listener). */
static int config_feedback_listen(config_parser *p, yaml_node_t *v)
{
    config *c = p->cfg;
    if (config_read_hostports(p, v, true, FEEDBACK_EXAMPLE_PORT, &c->feedback_listen,
                              &c->nfeedback_listen) < 0)
        return -1;
    for (size_t i = 0; i < c->nfeedback_listen; i++) {
        const config_hostport *h = &c->feedback_listen[i];
        const char *other = NULL;
        for (size_t j = 0; !other && j < c->nlisten; j++)
            if (h->port == c->listen[j].port && strcmp(h->host, c->listen[j].host) == 0)
                other = "a submission.listen";
        for (size_t j = 0; !other && j < c->napi_listen; j++)
            if (h->port == c->api_listen[j].port && strcmp(h->host, c->api_listen[j].host) == 0)
                other = "an api.listen";
        if (other) {
            config_push_index(p, i);
            return config_fail(p, config_item(p, v, i), "'%s' port %d is also %s address",
                               h->host, h->port, other);
        }
    }
    return 0;
}

/* The key of secret_file: any bytes, 16 to 4096 once the trailing newline is removed. */
static int config_feedback_secret(config_parser *p, yaml_node_t *v)
{
    config *c = p->cfg;
    if (config_as_path(p, v, &c->feedback_secret_file) < 0) return -1;
    const char *path = c->feedback_secret_file;
    char *buf = NULL;
    size_t n = 0;
    if (config_read_secret_file(p, v, path, FEEDBACK_SECRET_MAX, &buf, &n) < 0) return -1;
    int rc = 0;
    if (n > FEEDBACK_SECRET_MAX)
        rc = config_fail(p, v, "%s holds more than %d bytes; the feedback secret has %d to %d",
                         path, FEEDBACK_SECRET_MAX, FEEDBACK_SECRET_MIN, FEEDBACK_SECRET_MAX);
    else if (n < FEEDBACK_SECRET_MIN)
        rc = config_fail(p, v,
                         "%s holds %zu bytes; the feedback secret needs at least %d (e.g. "
                         "head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE)",
                         path, n, FEEDBACK_SECRET_MIN);
    if (rc == 0) {
        c->feedback_secret = util_malloc(n);
        memcpy(c->feedback_secret, buf, n);
        c->feedback_secret_len = n;
    }
    memset(buf, 0, n);
    free(buf);
    return rc;
}

static int config_feedback_size(config_parser *p, yaml_node_t *v)
{
    int64_t x;
    if (config_as_size(p, v, &x) < 0) return -1;
    if (x < FEEDBACK_MAX_SIZE_MIN)
        return config_fail(p, v, "must be at least 1KB, not %s", config_sval(v));
    p->cfg->feedback_max_message_size = x;
    return 0;
}

/* complaint_hold_rate: a fraction (0.001) or a percentage (0.1%), within [0, 1]. */
static int config_feedback_hold_rate(config_parser *p, yaml_node_t *v)
{
    const char *s = NULL;
    if (config_as_scalar(p, v, "a rate (e.g. 0.1% or 0.001)", &s) < 0) return -1;
    size_t n = strlen(s);
    bool percent = n > 0 && s[n - 1] == '%';
    char *num = util_strdup(s);
    if (percent) num[n - 1] = '\0';
    double x;
    int rc = config_parse_decimal(num, &x);
    free(num);
    if (rc < 0)
        return config_fail(p, v, "'%s' is not a rate (e.g. 0.1%% or 0.001; 0 = never held)", s);
    if (percent) x /= 100;
    if (x < 0 || x > 1)
        return config_fail(p, v, "must be between 0 and 1 (0%% to 100%%), not %s", s);
    p->cfg->feedback_complaint_hold_rate = x;
    return 0;
}

static int config_feedback_section(config_parser *p, yaml_node_t *m)
{
    static const char *const keys[] = {"listen", "bounce_domain", "addresses", "secret_file",
                                       "max_message_size", "retention", "complaint_hold_rate",
                                       NULL};
    config *c = p->cfg;
    if (config_as_map(p, m, keys) < 0) return -1;
    c->feedback_on = true;
    yaml_node_t *map = config_is_null(m) ? NULL : m;
    if (!config_lookup(p, map, "listen", NULL))
        return config_missing(p, LINE(m), "listen",
                              "(the inbound SMTP addresses of bounces and complaints, e.g. "
                              "[0.0.0.0:25])");
    FIELD(map, "listen", v, config_feedback_listen(p, v));
    FIELD(map, "bounce_domain", v,
          config_as_str(p, v, config_valid_hostname, "a domain name (e.g. bounce.example.com)",
                        &c->feedback_bounce_domain));
    if (c->feedback_bounce_domain) util_lowercase(c->feedback_bounce_domain);
    FIELD(map, "addresses", v,
          config_as_strv(p, v, config_feedback_valid_address, "an address (e.g. fbl@example.com)",
                         true, true, &c->feedback_addresses, &c->nfeedback_addresses));
    if (!config_lookup(p, map, "secret_file", NULL))
        return config_missing(p, LINE(m), "secret_file",
                              "(a file holding the VERP tokens' HMAC key, at least 16 bytes, "
                              "mode 0600)");
    FIELD(map, "secret_file", v, config_feedback_secret(p, v));
    FIELD(map, "max_message_size", v, config_feedback_size(p, v));
    FIELD(map, "retention", v, config_as_duration(p, v, true, &c->feedback_retention_ms));
    FIELD(map, "complaint_hold_rate", v, config_feedback_hold_rate(p, v));
    return 0;
}

int config_read_feedback(config_parser *p, yaml_node_t *root)
{
    FIELD(root, "feedback", v, config_feedback_section(p, v));
    return 0;
}
