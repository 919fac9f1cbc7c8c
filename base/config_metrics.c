/* config_metrics.c — the `metrics` section (issue 15): the Prometheus scrape listener's
 * addresses and the optional bearer token that non-loopback scrapers must present.
 *
 * Promises: the section is optional; without it (or with an empty listen list) there is no
 * metrics listener. listen is a HOST:PORT list sharing no address with submission.listen,
 * api.listen or feedback.listen (each listener has its own limits). token_file is optional;
 * when set it is read at load like api access keys' secrets (config_api.c's
 * config_read_secret_file: a regular file, mode 0600/0400); its content, the trailing
 * newline removed, is the token: 16 to 4096 printable ASCII characters without blanks (it
 * travels in an `Authorization: Bearer` header). The token never appears in an error. Every
 * error reads "FILE:LINE: metrics.KEY: what is wrong". Read after submission, api and
 * feedback. */
#include "base/config_internal.h"

#include <stdlib.h>
#include <string.h>

#define METRICS_TOKEN_MIN 16
#define METRICS_TOKEN_MAX 4096
#define METRICS_EXAMPLE_PORT 9125

void config_metrics_free(config *c)
{
    for (size_t i = 0; i < c->nmetrics_listen; i++) free(c->metrics_listen[i].host);
    free(c->metrics_listen);
    if (c->metrics_token) memset(c->metrics_token, 0, strlen(c->metrics_token));
    free(c->metrics_token);
    free(c->metrics_token_file);
}

/* The listener this address already belongs to, or NULL. */
static const char *config_metrics_clash(const config *c, const config_hostport *h)
{
    for (size_t j = 0; j < c->nlisten; j++)
        if (h->port == c->listen[j].port && strcmp(h->host, c->listen[j].host) == 0)
            return "a submission.listen";
    for (size_t j = 0; j < c->napi_listen; j++)
        if (h->port == c->api_listen[j].port && strcmp(h->host, c->api_listen[j].host) == 0)
            return "an api.listen";
    for (size_t j = 0; j < c->nfeedback_listen; j++)
        if (h->port == c->feedback_listen[j].port &&
            strcmp(h->host, c->feedback_listen[j].host) == 0)
            return "a feedback.listen";
    return NULL;
}

static int config_metrics_listen(config_parser *p, yaml_node_t *v)
{
    config *c = p->cfg;
    if (config_read_hostports(p, v, false, METRICS_EXAMPLE_PORT, &c->metrics_listen,
                              &c->nmetrics_listen) < 0)
        return -1;
    for (size_t i = 0; i < c->nmetrics_listen; i++) {
        const config_hostport *h = &c->metrics_listen[i];
        const char *other = config_metrics_clash(c, h);
        if (other) {
            config_push_index(p, i);
            return config_fail(p, config_item(p, v, i), "'%s' port %d is also %s address",
                               h->host, h->port, other);
        }
    }
    return 0;
}

static int config_metrics_token(config_parser *p, yaml_node_t *v)
{
    config *c = p->cfg;
    if (config_as_path(p, v, &c->metrics_token_file) < 0) return -1;
    const char *path = c->metrics_token_file;
    char *buf = NULL;
    size_t n = 0;
    if (config_read_secret_file(p, v, path, METRICS_TOKEN_MAX, &buf, &n) < 0) return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        if ((unsigned char)buf[i] <= 0x20 || (unsigned char)buf[i] >= 0x7f)
            rc = config_fail(p, v,
                             "%s must hold the token alone on one line: byte %zu is a blank, "
                             "a line break or not printable ASCII", path, i + 1);
    if (rc == 0 && n > METRICS_TOKEN_MAX)
        rc = config_fail(p, v, "%s holds more than %d characters; the metrics token has %d to %d",
                         path, METRICS_TOKEN_MAX, METRICS_TOKEN_MIN, METRICS_TOKEN_MAX);
    else if (rc == 0 && n < METRICS_TOKEN_MIN)
        rc = config_fail(p, v,
                         "%s holds %zu characters; the metrics token needs at least %d (e.g. "
                         "head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE)",
                         path, n, METRICS_TOKEN_MIN);
    if (rc == 0) c->metrics_token = util_strdup(buf);
    memset(buf, 0, n);
    free(buf);
    return rc;
}

static int config_metrics_section(config_parser *p, yaml_node_t *m)
{
    static const char *const keys[] = {"listen", "token_file", NULL};
    if (config_as_map(p, m, keys) < 0) return -1;
    yaml_node_t *map = config_is_null(m) ? NULL : m;
    FIELD(map, "listen", v, config_metrics_listen(p, v));
    FIELD(map, "token_file", v, config_metrics_token(p, v));
    return 0;
}

int config_read_metrics(config_parser *p, yaml_node_t *root)
{
    FIELD(root, "metrics", v, config_metrics_section(p, v));
    return 0;
}
