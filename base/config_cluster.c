/* config_cluster.c — the `cluster` section (issue 17): several kilnd nodes sending as one
 * account through a shared Redis. This node's name (cluster.node, or kilnd --node through
 * config_cluster_select_node), the Redis server (cluster.redis: url, password_file,
 * key_prefix), each node's submission address (cluster.submission_peers), and the cross-check
 * with ips[].node (read by config_sending.c's ips reader), and the share of the account's
 * limits a node holds while Redis is away (cluster.local_share, default 1 / the number of
 * nodes).
 *
 * Promises: the section is optional and cluster_on says whether it is present; without it
 * nothing is set and an ips[].node is an error. With it, redis and redis.url are required
 * and every ips[] entry names its node. url is redis://HOST[:PORT][/DB] (HOST a name, an
 * IPv4 address or a bracketed IPv6 one; PORT 1..65535, default 6379; DB 0..15, default 0)
 * or unix:///ABSOLUTE/PATH[?db=DB]; user info in a URL is refused (the password belongs in
 * password_file), and no error echoes a URL that could hold one. password_file is read at
 * load like api access keys' secrets (config_api.c's config_read_secret_file: a regular
 * file, mode 0600/0400); its content, the trailing newline removed, is 1 to 512 printable
 * ASCII characters and never appears in an error. key_prefix is 1..64 of [A-Za-z0-9:_.-],
 * default "kiln:". Node names are [A-Za-z0-9_-]{1,64}. cluster_nodes is the sorted union,
 * each name once, of ips[].node and the submission_peers keys; cluster.node, when given, is
 * one of them. Every error reads "FILE:LINE: cluster.KEY: what is wrong" (or ips[N].node).
 * Read after ips. */
#include "base/config_internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#define CLUSTER_REDIS_PORT 6379
#define CLUSTER_REDIS_DB_MAX 15
#define CLUSTER_PREFIX_DEFAULT "kiln:"
#define CLUSTER_PREFIX_MAX 64
#define CLUSTER_PASSWORD_MAX 512
#define CLUSTER_PEER_PORT 2587
#define CLUSTER_WHAT_NODE "a valid node name (letters, digits, '-' and '_', at most 64)"
#define CLUSTER_URL_EXAMPLES "redis://127.0.0.1:6379/0 or unix:///run/redis/redis.sock"

void config_cluster_defaults(config *c)
{
    c->cluster_redis_port = CLUSTER_REDIS_PORT;
    c->cluster_redis_db = 0;
}

void config_cluster_free(config *c)
{
    free(c->cluster_node);
    free(c->cluster_redis_url);
    free(c->cluster_redis_host);
    free(c->cluster_redis_unix);
    if (c->cluster_redis_password)
        memset(c->cluster_redis_password, 0, strlen(c->cluster_redis_password));
    free(c->cluster_redis_password);
    free(c->cluster_redis_password_file);
    free(c->cluster_key_prefix);
    for (size_t i = 0; i < c->ncluster_peers; i++) {
        free(c->cluster_peers[i].node);
        free(c->cluster_peers[i].addr.host);
    }
    free(c->cluster_peers);
    for (size_t i = 0; i < c->ncluster_nodes; i++) free(c->cluster_nodes[i]);
    free(c->cluster_nodes);
}

int config_cluster_node_index(const config *c, const char *name)
{
    if (!name) return -1;
    for (size_t i = 0; i < c->ncluster_nodes; i++)
        if (strcmp(c->cluster_nodes[i], name) == 0) return (int)i;
    return -1;
}

int config_cluster_select_node(config *c, const char *node, char **err)
{
    *err = NULL;
    if (node && !c->cluster_on) {
        *err = util_strdup("kilnd --node needs a cluster: section in the config");
        return -1;
    }
    if (!c->cluster_on) return 0;
    if (node) {
        free(c->cluster_node);
        c->cluster_node = util_strdup(node);
    }
    if (!c->cluster_node) {
        *err = util_strdup("cluster.node is not set: name this node with cluster.node or "
                           "kilnd --node");
        return -1;
    }
    if (config_cluster_node_index(c, c->cluster_node) < 0) {
        strbuf sb;
        strbuf_init(&sb);
        config_names_text(&sb, c->cluster_nodes, c->ncluster_nodes, "none");
        *err = util_asprintf("node '%s' is not one of the cluster's nodes (%s: the names in "
                             "ips[].node and cluster.submission_peers)", c->cluster_node, sb.buf);
        strbuf_free(&sb);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * cluster.redis
 * ---------------------------------------------------------------------------------------- */

static bool config_cluster_valid_prefix(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CLUSTER_PREFIX_MAX) return false;
    for (; *s; s++) {
        char ch = *s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == ':' || ch == '_' || ch == '.' || ch == '-'))
            return false;
    }
    return true;
}

/* A database number: 1 or 2 decimal digits, 0..15. */
static int config_cluster_db(const char *s, int *db)
{
    size_t n = strlen(s);
    if (n == 0 || n > 2 || strspn(s, "0123456789") != n) return -1;
    int x = atoi(s);
    if (x > CLUSTER_REDIS_DB_MAX) return -1;
    *db = x;
    return 0;
}

/* redis://HOST[:PORT][/DB], REST being what follows "redis://". */
static int config_cluster_tcp_url(config_parser *p, yaml_node_t *v, const char *rest)
{
    config *c = p->cfg;
    size_t alen = strcspn(rest, "/");
    if (memchr(rest, '@', alen))
        return config_fail(p, v, "a user or password in the URL is refused: put the password in "
                                 "cluster.redis.password_file");
    if (strpbrk(rest, "?#"))
        return config_fail(p, v, "a query or fragment is not accepted (redis://HOST[:PORT][/DB])");
    if (alen == 0) return config_fail(p, v, "has no host (e.g. redis://127.0.0.1:6379/0)");
    char *auth = util_strndup(rest, alen);
    const char *c1 = strchr(auth, ':');
    if (auth[0] != '[' && c1 && strchr(c1 + 1, ':')) {
        config_fail(p, v, "an IPv6 address goes in brackets (e.g. redis://[::1]:6379/0)");
        free(auth);
        return -1;
    }
    config_hostport hp = {NULL, 0};
    if (config_parse_hostport(auth, CLUSTER_REDIS_PORT, &hp) < 0) {
        config_fail(p, v, "'%s' is not HOST[:PORT] (a name, an IPv4 address or [IPv6]; port 1 "
                          "to 65535, default 6379)", auth);
        free(auth);
        return -1;
    }
    free(auth);
    const char *path = rest + alen;
    int db = 0;
    if (*path == '/' && path[1] && config_cluster_db(path + 1, &db) < 0) {
        free(hp.host);
        return config_fail(p, v, "database '%s' must be a whole number from 0 to %d", path + 1,
                           CLUSTER_REDIS_DB_MAX);
    }
    c->cluster_redis_host = hp.host;
    c->cluster_redis_port = hp.port;
    c->cluster_redis_db = db;
    return 0;
}

/* unix:///PATH[?db=DB], REST being what follows "unix://". */
static int config_cluster_unix_url(config_parser *p, yaml_node_t *v, const char *rest)
{
    config *c = p->cfg;
    size_t plen = strcspn(rest, "?");
    if (memchr(rest, '@', strcspn(rest, "/")))
        return config_fail(p, v, "a user or password in the URL is refused: put the password in "
                                 "cluster.redis.password_file");
    if (rest[0] != '/')
        return config_fail(p, v, "the socket path must be absolute (e.g. "
                                 "unix:///run/redis/redis.sock)");
    size_t sun_max = sizeof(((struct sockaddr_un *)0)->sun_path);
    if (plen >= sun_max)
        return config_fail(p, v, "the socket path is %zu bytes; a unix socket path has at most "
                                 "%zu", plen, sun_max - 1);
    int db = 0;
    if (rest[plen] == '?') {
        const char *q = rest + plen + 1;
        if (strncmp(q, "db=", 3) != 0 || config_cluster_db(q + 3, &db) < 0)
            return config_fail(p, v, "the only query accepted is ?db=N with N from 0 to %d",
                               CLUSTER_REDIS_DB_MAX);
    }
    c->cluster_redis_unix = util_strndup(rest, plen);
    c->cluster_redis_db = db;
    return 0;
}

static int config_cluster_url(config_parser *p, yaml_node_t *v)
{
    config *c = p->cfg;
    const char *s = NULL;
    if (config_as_scalar(p, v, "a URL (" CLUSTER_URL_EXAMPLES ")", &s) < 0) return -1;
    if (!*s) return config_fail(p, v, "must not be empty (e.g. " CLUSTER_URL_EXAMPLES ")");
    for (const char *q = s; *q; q++)
        if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f)
            return config_fail(p, v, "must not contain blanks, control characters or non-ASCII "
                                     "bytes (byte %zu)", (size_t)(q - s) + 1);
    const char *sep = strstr(s, "://");
    size_t slen = sep ? (size_t)(sep - s) : 0;
    int rc;
    if (sep && slen == 5 && strncmp(s, "redis", 5) == 0)
        rc = config_cluster_tcp_url(p, v, sep + 3);
    else if (sep && slen == 4 && strncmp(s, "unix", 4) == 0)
        rc = config_cluster_unix_url(p, v, sep + 3);
    else if (sep && slen > 0 && slen <= 16 && strspn(s, "abcdefghijklmnopqrstuvwxyz+.-") >= slen)
        rc = config_fail(p, v, "%.*s:// is not accepted; only redis:// and unix:// URLs are (e.g. "
                               CLUSTER_URL_EXAMPLES ")", (int)slen, s);
    else
        rc = config_fail(p, v, "is not a URL; only redis:// and unix:// URLs are accepted (e.g. "
                               CLUSTER_URL_EXAMPLES ")");
    if (rc < 0) return -1;
    c->cluster_redis_url = util_strdup(s);
    return 0;
}

/* The password of password_file: 1 to 512 printable ASCII characters. */
static int config_cluster_password(config_parser *p, yaml_node_t *v)
{
    config *c = p->cfg;
    if (config_as_path(p, v, &c->cluster_redis_password_file) < 0) return -1;
    const char *path = c->cluster_redis_password_file;
    char *buf = NULL;
    size_t n = 0;
    if (config_read_secret_file(p, v, path, CLUSTER_PASSWORD_MAX, &buf, &n) < 0) return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        if ((unsigned char)buf[i] < 0x20 || (unsigned char)buf[i] >= 0x7f)
            rc = config_fail(p, v,
                             "%s must hold the Redis password alone on one line: byte %zu is a "
                             "line break, a control character or not ASCII", path, i + 1);
    if (rc == 0 && n > CLUSTER_PASSWORD_MAX)
        rc = config_fail(p, v, "%s holds more than %d characters; the Redis password has 1 to %d",
                         path, CLUSTER_PASSWORD_MAX, CLUSTER_PASSWORD_MAX);
    else if (rc == 0 && n == 0)
        rc = config_fail(p, v, "%s is empty; it must hold the Redis password (1 to %d printable "
                               "ASCII characters)", path, CLUSTER_PASSWORD_MAX);
    if (rc == 0) c->cluster_redis_password = util_strdup(buf);
    memset(buf, 0, n);
    free(buf);
    return rc;
}

static int config_cluster_redis(config_parser *p, yaml_node_t *v)
{
    static const char *const keys[] = {"url", "password_file", "key_prefix", NULL};
    config *c = p->cfg;
    if (config_as_map(p, v, keys) < 0) return -1;
    yaml_node_t *m = config_is_null(v) ? NULL : v;
    if (!config_lookup(p, m, "url", NULL))
        return config_missing(p, LINE(v), "url", "(e.g. " CLUSTER_URL_EXAMPLES ")");
    FIELD(m, "url", f, config_cluster_url(p, f));
    FIELD(m, "password_file", f, config_cluster_password(p, f));
    FIELD(m, "key_prefix", f,
          config_as_str(p, f, config_cluster_valid_prefix,
                        "a key prefix (1 to 64 of A-Z, a-z, 0-9, ':', '_', '.', '-')",
                        &c->cluster_key_prefix));
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * cluster.submission_peers and the nodes
 * ---------------------------------------------------------------------------------------- */

/* NODE: HOST[:PORT] pairs, in file order; names unique, addresses unique. */
static int config_cluster_peers(config_parser *p, yaml_node_t *v)
{
    config *c = p->cfg;
    if (config_as_map(p, v, NULL) <= 0) return p->err ? -1 : 0;
    size_t n = (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
    if (n == 0) return 0;
    c->cluster_peers = util_calloc(n, sizeof *c->cluster_peers);
    for (size_t i = 0; i < n; i++) {
        yaml_node_pair_t *pr = &v->data.mapping.pairs.start[i];
        yaml_node_t *k = yaml_document_get_node(p->doc, pr->key);
        yaml_node_t *val = yaml_document_get_node(p->doc, pr->value);
        if (k->type != YAML_SCALAR_NODE)
            return config_fail(p, k, "a key must be a node name, not %s", config_kind(k));
        const char *name = config_sval(k);
        size_t mark = config_push_key(p, name);
        if (!config_valid_name(name) || strlen(name) != k->data.scalar.length)
            return config_fail(p, k, "'%s' is not %s", name, CLUSTER_WHAT_NODE);
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->cluster_peers[j].node, name) == 0)
                return config_fail(p, k, "duplicate key (node '%s' is listed twice)", name);
        config_peer *peer = &c->cluster_peers[i];
        const char *s = NULL;
        if (config_as_scalar(p, val, "HOST:PORT (e.g. 10.0.0.2:2587)", &s) < 0) return -1;
        if (config_parse_hostport(s, CLUSTER_PEER_PORT, &peer->addr) < 0)
            return config_fail(p, val, "'%s' is not HOST:PORT (e.g. 10.0.0.2:2587, "
                                       "[2001:db8::2]:2587; port default 2587)", s);
        peer->node = util_strdup(name);
        c->ncluster_peers = i + 1;
        for (size_t j = 0; j < i; j++)
            if (c->cluster_peers[j].addr.port == peer->addr.port &&
                strcmp(c->cluster_peers[j].addr.host, peer->addr.host) == 0)
                return config_fail(p, val, "'%s' is also the address of node %s", s,
                                   c->cluster_peers[j].node);
        config_pop(p, mark);
    }
    return 0;
}

static int config_cluster_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* cluster_nodes: ips[].node and the submission_peers keys, sorted, each once. */
static void config_cluster_collect(config *c)
{
    size_t cap = c->nips + c->ncluster_peers, n = 0;
    if (cap == 0) return;
    char **v = util_calloc(cap, sizeof *v);
    for (size_t i = 0; i < c->nips; i++)
        if (c->ips[i].node) v[n++] = c->ips[i].node;
    for (size_t i = 0; i < c->ncluster_peers; i++) v[n++] = c->cluster_peers[i].node;
    qsort(v, n, sizeof *v, config_cluster_cmp);
    c->cluster_nodes = util_calloc(n ? n : 1, sizeof *c->cluster_nodes);
    for (size_t i = 0; i < n; i++)
        if (i == 0 || strcmp(v[i], v[i - 1]) != 0)
            c->cluster_nodes[c->ncluster_nodes++] = util_strdup(v[i]);
    free(v);
}

/* With a cluster section every ips[] entry names its node; without one none does. */
static int config_cluster_ip_nodes(config_parser *p, yaml_node_t *root)
{
    config *c = p->cfg;
    yaml_node_t *ips = config_lookup(p, root, "ips", NULL);
    for (size_t i = 0; i < c->nips; i++) {
        const config_ip *ip = &c->ips[i];
        if (!!ip->node == c->cluster_on) continue;
        config_push_key(p, "ips");
        config_push_index(p, i);
        if (c->cluster_on)
            return config_missing(p, ip->line, "node",
                                  "(with a cluster: section every IP names the node that binds "
                                  "it and sends from it)");
        yaml_node_t *f = config_lookup(p, config_item(p, ips, i), "node", NULL);
        config_push_key(p, "node");
        return config_fail_at(p, config_line_of(f, ip->line),
                              "needs a cluster: section (without one every IP is this host's; "
                              "remove node or add cluster:)");
    }
    return 0;
}

/* local_share: the fraction (0 < x <= 1) of the account's limits a node holds while Redis is
 * away; written as a decimal or a percentage ("25%"). */
static int config_cluster_share(config_parser *p, yaml_node_t *v, double *out)
{
    const char *s;
    if (config_as_scalar(p, v, "a fraction such as 0.25 or 25%", &s) < 0) return -1;
    char *end = NULL;
    double x = strtod(s, &end);
    bool pct = end && *end == '%' && end[1] == '\0';
    if (end == s || (!pct && end && *end) || x != x)
        return config_fail(p, v, "'%s' is not a fraction (write 0.25 or 25%%)", s);
    if (pct) x /= 100.0;
    if (!(x > 0) || x > 1)
        return config_fail(p, v, "%s is out of range: the share is above 0 and at most 1 "
                                 "(100%%)", s);
    *out = x;
    return 0;
}

static int config_cluster_section(config_parser *p, yaml_node_t *v)
{
    static const char *const keys[] = {"node", "redis", "submission_peers", "local_share",
                                       NULL};
    config *c = p->cfg;
    if (config_as_map(p, v, keys) < 0) return -1;
    c->cluster_on = true;
    yaml_node_t *m = config_is_null(v) ? NULL : v;
    FIELD(m, "node", f,
          config_as_str(p, f, config_valid_name, CLUSTER_WHAT_NODE, &c->cluster_node));
    if (!config_lookup(p, m, "redis", NULL))
        return config_missing(p, LINE(v), "redis",
                              "(the shared Redis: {url: " CLUSTER_URL_EXAMPLES "})");
    FIELD(m, "redis", f, config_cluster_redis(p, f));
    FIELD(m, "submission_peers", f, config_cluster_peers(p, f));
    FIELD(m, "local_share", f, config_cluster_share(p, f, &c->cluster_local_share));
    if (!c->cluster_key_prefix) c->cluster_key_prefix = util_strdup(CLUSTER_PREFIX_DEFAULT);
    return 0;
}

int config_read_cluster(config_parser *p, yaml_node_t *root)
{
    config *c = p->cfg;
    yaml_node_t *v = config_lookup(p, root, "cluster", NULL);
    if (v) {
        size_t mark = config_push_key(p, "cluster");
        if (config_cluster_section(p, v) < 0) return -1;
        config_pop(p, mark);
    }
    size_t mark = p->path.len;
    if (config_cluster_ip_nodes(p, root) < 0) return -1;
    config_pop(p, mark);
    if (!c->cluster_on) return 0;
    config_cluster_collect(c);
    if (c->cluster_local_share <= 0 && c->ncluster_nodes)
        c->cluster_local_share = 1.0 / (double)c->ncluster_nodes;
    if (c->cluster_node && config_cluster_node_index(c, c->cluster_node) < 0) {
        yaml_node_t *f = config_lookup(p, v, "node", NULL);
        strbuf sb;
        strbuf_init(&sb);
        config_names_text(&sb, c->cluster_nodes, c->ncluster_nodes,
                          "none: name them in ips[].node or cluster.submission_peers");
        config_push_key(p, "cluster");
        config_push_key(p, "node");
        config_fail(p, f, "'%s' is not one of the cluster's nodes (%s)", c->cluster_node, sb.buf);
        strbuf_free(&sb);
        return -1;
    }
    return 0;
}

/* "cluster: node n1 of n1, n2; redis URL (prefix kiln:, password_file F); submission peers
 * n1 HOST:PORT, ...". */
void config_cluster_summary(strbuf *sb, const config *c)
{
    if (!c->cluster_on) return;
    strbuf_printf(sb, "cluster: node %s of ", c->cluster_node ? c->cluster_node : "(not set: "
                  "kilnd --node NAME)");
    config_names_text(sb, c->cluster_nodes, c->ncluster_nodes, "(no nodes)");
    strbuf_printf(sb, "; redis %s (prefix %s", c->cluster_redis_url, c->cluster_key_prefix);
    if (c->cluster_redis_password_file)
        strbuf_printf(sb, ", password_file %s", c->cluster_redis_password_file);
    strbuf_puts(sb, ")");
    strbuf_printf(sb, "; while Redis is away this node holds %.4g%% of the account's limits",
                  c->cluster_local_share * 100);
    for (size_t i = 0; i < c->ncluster_peers; i++) {
        strbuf_printf(sb, "%s%s ", i ? ", " : "; submission peers ", c->cluster_peers[i].node);
        config_fmt_hostport(sb, c->cluster_peers[i].addr.host, c->cluster_peers[i].addr.port);
    }
    strbuf_puts(sb, "\n");
}
