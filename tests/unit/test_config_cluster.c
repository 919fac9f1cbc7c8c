/* test_config_cluster.c — the cluster section (base/config_cluster.c, issue 17) and ips[].node:
 * what --check-config refuses, each error naming the file, the line, the key path
 * (cluster.redis.url, cluster.submission_peers.n1, ips[1].node) and what is wrong (the
 * section's shape and unknown keys, the Redis URL's scheme, user info, host, port and
 * database, the password file's mode and content, the key prefix, node names, peers,
 * ips[].node required with the section and refused without it, cluster.node not a node);
 * that no error shows a password; what it accepts as the config then holds it (no section:
 * off; defaults; every key; tcp URLs with a name, an IPv4 or a bracketed IPv6 host; unix
 * URLs; cluster_nodes sorted, each once); config_cluster_select_node and
 * config_cluster_node_index; the --check-config summary lines; the secret-file owner
 * warning; and the documented example still loading. */
#include <check.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/config.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

static const char *dir;

static void put(const char *name, const char *text, size_t len, unsigned mode)
{
    testlib_write_file(dir, name, text, len, mode);
}

static void setup(void)
{
    dir = testlib_tmpdir("cfgcl");
    put("pw", "s3cret pass\n", 12, 0600);
    put("pw400", "secretpw", 8, 0400);
    put("pw644", "secretpw\n", 9, 0644);
    put("pwempty", "", 0, 0600);
    put("pwnl", "\n", 1, 0600);
    put("pwtab", "secret\tpw\n", 10, 0600);
    put("pw2lines", "secretpw\nmore\n", 14, 0600);
    char big[600];
    memset(big, 'p', sizeof big);
    put("pwbig", big, 513, 0600);
    put("pwmax", big, 512, 0600);
}

static void teardown(void) { testlib_tmpdir_remove(dir); }

/* The config around the ips and cluster sections, which start at line 6. */
#define HEAD                                                                                  \
    "server: {hostname: mta.example.test}\n"                                                  \
    "zones: [az1, az2]\n"                                                                     \
    "pools: [{name: p}]\n"                                                                    \
    "configuration_sets: [{name: txn, pool: p}]\n"                                            \
    "default_configuration_set: txn\n"

static config *load(const char *text, char **err, char *file, size_t n)
{
    snprintf(file, n, "%s/kiln.yaml", dir);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, HEAD "%s", text);
    fclose(f);
    *err = NULL;
    return config_load(file, NULL, err);
}

/* Lines 6 to 9; the cluster section starts at line 10. */
#define IPS                                                                                   \
    "ips:\n"                                                                                  \
    "  - {address: 127.0.0.11, zone: az1, pool: p, node: n2}\n"                               \
    "  - {address: 127.0.0.12, zone: az2, pool: p, node: n1}\n"                               \
    "  - {address: 127.0.0.13, zone: az1, pool: p, node: n2}\n"
#define CL IPS "cluster:\n"
#define RURL "  redis: {url: \"redis://127.0.0.1:6379/0\"}\n"       /* line 11 */
#define URL(u) CL "  redis:\n    url: \"" u "\"\n"                   /* url at line 12 */
#define PWFILE(f) CL "  redis:\n    url: redis://r.test\n    password_file: " f "\n"  /* 13 */
#define PREFIX(x) CL "  redis:\n    url: redis://r.test\n    key_prefix: " x "\n"     /* 13 */
#define PEERS(x) CL RURL "  submission_peers:\n" x                  /* first peer at 13 */
#define LONG_PATH "/run/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" \
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock"
#define NAME65 "n1234567890123456789012345678901234567890123456789012345678901234"

static const struct {
    const char *text;       /* from line 6 on */
    int line;               /* of the error */
    const char *path;       /* key path in the error */
    const char *fragment;   /* in the error */
} bad[] = {
    /* the section's shape */
    {CL, 10, "cluster.redis", "required key is missing (the shared Redis: {url: "
                              "redis://127.0.0.1:6379/0 or unix:///run/redis/redis.sock})"},
    {IPS "cluster: [x]\n", 10, "cluster", "expected a map, got a list"},
    {IPS "cluster: redis\n", 10, "cluster", "expected a map, got a single value"},
    {IPS "cluster: {node: n1}\n", 10, "cluster.redis", "required key is missing"},
    {CL "  redis:\n", 11, "cluster.redis.url", "required key is missing (e.g. redis://"},
    {CL RURL "  local_share: 0\n", 12, "cluster.local_share", "0 is out of range: the share "
                                                              "is above 0 and at most 1"},
    {CL RURL "  local_share: 150%\n", 12, "cluster.local_share", "150% is out of range"},
    {CL RURL "  local_share: 1.5\n", 12, "cluster.local_share", "1.5 is out of range"},
    {CL RURL "  local_share: half\n", 12, "cluster.local_share",
     "'half' is not a fraction (write 0.25 or 25%)"},
    {CL RURL "  local_share: [1]\n", 12, "cluster.local_share", "expected a fraction"},
    {CL "  redis: {}\n", 11, "cluster.redis.url", "required key is missing"},
    {CL "  redis: {password_file: pw}\n", 11, "cluster.redis.url", "required key is missing"},
    {CL "  redis: [redis://r.test]\n", 11, "cluster.redis", "expected a map, got a list"},
    {CL RURL "  nodes: [n1]\n", 12, "cluster.nodes",
     "unknown key 'nodes'; allowed here: node, redis, submission_peers"},
    {CL "  redis: {url: redis://r.test, db: 1}\n", 11, "cluster.redis.db",
     "unknown key 'db'; allowed here: url, password_file, key_prefix"},
    {CL RURL "  node: n1\n  node: n2\n", 13, "cluster.node", "duplicate key"},
    /* the URL */
    {URL("rediss://r.test:6379"), 12, "cluster.redis.url",
     "rediss:// is not accepted; only redis:// and unix:// URLs are (e.g. "
     "redis://127.0.0.1:6379/0 or unix:///run/redis/redis.sock)"},
    {URL("http://r.test/"), 12, "cluster.redis.url", "http:// is not accepted"},
    {URL("127.0.0.1:6379"), 12, "cluster.redis.url",
     "is not a URL; only redis:// and unix:// URLs are accepted"},
    {URL("redis:/r.test"), 12, "cluster.redis.url", "is not a URL"},
    {URL("redis://user:secretpw@r.test:6379/0"), 12, "cluster.redis.url",
     "a user or password in the URL is refused: put the password in "
     "cluster.redis.password_file"},
    {URL("redis://:secretpw@r.test"), 12, "cluster.redis.url",
     "put the password in cluster.redis.password_file"},
    {URL("unix://:secretpw@/run/redis.sock"), 12, "cluster.redis.url",
     "put the password in cluster.redis.password_file"},
    {URL("redis://r.test/0?password=secretpw"), 12, "cluster.redis.url",
     "a query or fragment is not accepted"},
    {URL("redis://r.test:6379/16"), 12, "cluster.redis.url",
     "database '16' must be a whole number from 0 to 15"},
    {URL("redis://r.test/-1"), 12, "cluster.redis.url", "database '-1' must be a whole number"},
    {URL("redis://r.test/x"), 12, "cluster.redis.url", "database 'x' must be a whole number"},
    {URL("redis://r.test/001"), 12, "cluster.redis.url", "database '001'"},
    {URL("redis://r.test/0/1"), 12, "cluster.redis.url", "database '0/1'"},
    {URL("redis://r.test:0/0"), 12, "cluster.redis.url",
     "'r.test:0' is not HOST[:PORT] (a name, an IPv4 address or [IPv6]; port 1 to 65535, "
     "default 6379)"},
    {URL("redis://r.test:65536"), 12, "cluster.redis.url", "'r.test:65536' is not HOST[:PORT]"},
    {URL("redis://r.test:"), 12, "cluster.redis.url", "'r.test:' is not HOST[:PORT]"},
    {URL("redis://r_x..test"), 12, "cluster.redis.url", "is not HOST[:PORT]"},
    {URL("redis://[::1"), 12, "cluster.redis.url", "'[::1' is not HOST[:PORT]"},
    {URL("redis://[r.test]:6379"), 12, "cluster.redis.url", "is not HOST[:PORT]"},
    {URL("redis://::1/0"), 12, "cluster.redis.url",
     "an IPv6 address goes in brackets (e.g. redis://[::1]:6379/0)"},
    {URL("redis://"), 12, "cluster.redis.url", "has no host (e.g. redis://127.0.0.1:6379/0)"},
    {URL("redis:///0"), 12, "cluster.redis.url", "has no host"},
    {URL("redis://r.test /0"), 12, "cluster.redis.url",
     "must not contain blanks, control characters or non-ASCII bytes (byte 15)"},
    {URL("unix://run/redis/redis.sock"), 12, "cluster.redis.url",
     "the socket path must be absolute (e.g. unix:///run/redis/redis.sock)"},
    {URL("unix://"), 12, "cluster.redis.url", "the socket path must be absolute"},
    {URL("unix:///run/r.sock?db=16"), 12, "cluster.redis.url",
     "the only query accepted is ?db=N with N from 0 to 15"},
    {URL("unix:///run/r.sock?password=secretpw"), 12, "cluster.redis.url",
     "the only query accepted is ?db=N"},
    {URL("unix://" LONG_PATH), 12, "cluster.redis.url",
     "the socket path is 125 bytes; a unix socket path has at most 107"},
    {URL(""), 12, "cluster.redis.url", "must not be empty (e.g. redis://"},
    {CL "  redis:\n    url:\n", 12, "cluster.redis.url", "has no value (expected a URL"},
    {CL "  redis:\n    url: [redis://r.test]\n", 12, "cluster.redis.url",
     "expected a URL (redis://127.0.0.1:6379/0 or unix:///run/redis/redis.sock), got a list"},
    /* the password file */
    {PWFILE("nosuch"), 13, "cluster.redis.password_file", "/nosuch: No such file or directory"},
    {PWFILE("pw644"), 13, "cluster.redis.password_file",
     "/pw644 must not be readable by group or others (mode 0644); chmod 600 it"},
    {PWFILE("."), 13, "cluster.redis.password_file", "is not a regular file"},
    {PWFILE("pwempty"), 13, "cluster.redis.password_file",
     "/pwempty is empty; it must hold the Redis password (1 to 512 printable ASCII characters)"},
    {PWFILE("pwnl"), 13, "cluster.redis.password_file", "/pwnl is empty"},
    {PWFILE("pwtab"), 13, "cluster.redis.password_file",
     "/pwtab must hold the Redis password alone on one line: byte 7 is a line break, a "
     "control character or not ASCII"},
    {PWFILE("pw2lines"), 13, "cluster.redis.password_file", "byte 9 is a line break"},
    {PWFILE("pwbig"), 13, "cluster.redis.password_file",
     "/pwbig holds more than 512 characters; the Redis password has 1 to 512"},
    {PWFILE("''"), 13, "cluster.redis.password_file", "must not be empty"},
    /* the key prefix */
    {PREFIX("'kiln prefix'"), 13, "cluster.redis.key_prefix",
     "'kiln prefix' is not a key prefix (1 to 64 of A-Z, a-z, 0-9, ':', '_', '.', '-')"},
    {PREFIX("kiln/"), 13, "cluster.redis.key_prefix", "'kiln/' is not a key prefix"},
    {PREFIX("'{kiln}:'"), 13, "cluster.redis.key_prefix", "is not a key prefix"},
    {PREFIX(NAME65), 13, "cluster.redis.key_prefix", "is not a key prefix"},
    {PREFIX("''"), 13, "cluster.redis.key_prefix", "must not be empty"},
    /* node names */
    {CL "  node: n9\n" RURL, 11, "cluster.node",
     "'n9' is not one of the cluster's nodes (n1, n2)"},
    {CL "  node: 'n 1'\n" RURL, 11, "cluster.node",
     "'n 1' is not a valid node name (letters, digits, '-' and '_', at most 64)"},
    {CL "  node: " NAME65 "\n" RURL, 11, "cluster.node", "is not a valid node name"},
    {CL "  node: n.1\n" RURL, 11, "cluster.node", "is not a valid node name"},
    {CL "  node: [n1]\n" RURL, 11, "cluster.node", "expected a text value"},
    {"ips: []\ncluster:\n  node: n1\n" RURL, 8, "cluster.node",
     "'n1' is not one of the cluster's nodes (none: name them in ips[].node or "
     "cluster.submission_peers)"},
    /* submission_peers */
    {PEERS("    - n1\n"), 13, "cluster.submission_peers", "expected a map, got a list"},
    {PEERS("    n1: nope:port\n"), 13, "cluster.submission_peers.n1",
     "'nope:port' is not HOST:PORT (e.g. 10.0.0.2:2587, [2001:db8::2]:2587; port default 2587)"},
    {PEERS("    n1: 10.0.0.1:70000\n"), 13, "cluster.submission_peers.n1", "is not HOST:PORT"},
    {PEERS("    n1: [10.0.0.1]\n"), 13, "cluster.submission_peers.n1",
     "expected HOST:PORT (e.g. 10.0.0.2:2587), got a list"},
    {PEERS("    n1:\n"), 13, "cluster.submission_peers.n1", "has no value (expected HOST:PORT"},
    {PEERS("    'n 1': 10.0.0.1:2587\n"), 13, "cluster.submission_peers.n 1",
     "'n 1' is not a valid node name"},
    {PEERS("    " NAME65 ": 10.0.0.1:2587\n"), 13, "cluster.submission_peers." NAME65,
     "is not a valid node name"},
    {PEERS("    [n1]: 10.0.0.1:2587\n"), 13, "cluster.submission_peers",
     "a key must be a node name, not a list"},
    {PEERS("    n1: 10.0.0.1:2587\n    n1: 10.0.0.2:2587\n"), 14, "cluster.submission_peers.n1",
     "duplicate key (node 'n1' is listed twice)"},
    {PEERS("    n1: 10.0.0.1:2587\n    n2: 10.0.0.1\n"), 14, "cluster.submission_peers.n2",
     "'10.0.0.1' is also the address of node n1"},
    /* ips[].node */
    {"ips:\n"
     "  - {address: 127.0.0.11, zone: az1, pool: p, node: n1}\n"
     "  - {address: 127.0.0.12, zone: az2, pool: p}\n"
     "cluster:\n" RURL,
     8, "ips[1].node",
     "required key is missing (with a cluster: section every IP names the node that binds it "
     "and sends from it)"},
    {"ips:\n"
     "  - address: 127.0.0.11\n"
     "    zone: az1\n"
     "    pool: p\n"
     "    node: n1\n",
     10, "ips[0].node",
     "needs a cluster: section (without one every IP is this host's; remove node or add "
     "cluster:)"},
    {"ips:\n  - {address: 127.0.0.11, zone: az1, pool: p, node: 'n 1'}\ncluster:\n" RURL, 7,
     "ips[0].node", "'n 1' is not a valid name"},
    {"ips:\n  - {address: 127.0.0.11, zone: az1, pool: p, node: ''}\n", 7, "ips[0].node",
     "must not be empty"},
};

START_TEST(test_bad)
{
    char file[300], prefix[500];
    char *err = NULL;
    config *c = load(bad[_i].text, &err, file, sizeof file);
    ck_assert_msg(c == NULL, "%s: loaded but should fail", bad[_i].text);
    snprintf(prefix, sizeof prefix, "%s:%d: %s: ", file, bad[_i].line, bad[_i].path);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "%s:\n  error:    %s\n  expected: %s",
                  bad[_i].text, err, prefix);
    ck_assert_msg(strstr(err, bad[_i].fragment) != NULL, "%s:\n  error: %s\n  expected: %s",
                  bad[_i].text, err, bad[_i].fragment);
    ck_assert_msg(strstr(err, "secretpw") == NULL && strstr(err, "s3cret") == NULL,
                  "a password leaked: %s", err);
    free(err);
}
END_TEST

/* No section: off, no node on any IP, nothing allocated; --node refused, no node fine. */
START_TEST(test_off)
{
    char file[300];
    char *err = NULL;
    config *c = load("ips:\n  - {address: 127.0.0.11, zone: az1, pool: p}\n", &err, file,
                     sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert(!c->cluster_on);
    ck_assert_ptr_null(c->ips[0].node);
    ck_assert_ptr_null(c->cluster_node);
    ck_assert_ptr_null(c->cluster_redis_url);
    ck_assert_ptr_null(c->cluster_key_prefix);
    ck_assert_uint_eq(c->ncluster_nodes, 0);
    ck_assert_uint_eq(c->ncluster_peers, 0);
    ck_assert_int_eq(config_cluster_node_index(c, "n1"), -1);
    ck_assert_int_eq(config_cluster_select_node(c, NULL, &err), 0);
    ck_assert_ptr_null(err);
    ck_assert_int_eq(config_cluster_select_node(c, "n1", &err), -1);
    ck_assert_str_eq(err, "kilnd --node needs a cluster: section in the config");
    free(err);
    char *sum = config_summary(c);
    ck_assert_ptr_null(strstr(sum, "cluster:"));
    ck_assert_ptr_null(strstr(sum, "node"));
    free(sum);
    config_unref(c);
}
END_TEST

/* redis.url alone: the defaults (no node yet, prefix kiln:, no password, no peers), the
 * nodes from ips[].node sorted, each once. */
START_TEST(test_defaults)
{
    char file[300];
    char *err = NULL;
    config *c = load(CL RURL, &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert(c->cluster_on);
    ck_assert_ptr_null(c->cluster_node);
    ck_assert_str_eq(c->cluster_redis_url, "redis://127.0.0.1:6379/0");
    ck_assert_str_eq(c->cluster_redis_host, "127.0.0.1");
    ck_assert_int_eq(c->cluster_redis_port, 6379);
    ck_assert_ptr_null(c->cluster_redis_unix);
    ck_assert_int_eq(c->cluster_redis_db, 0);
    ck_assert_ptr_null(c->cluster_redis_password);
    ck_assert_ptr_null(c->cluster_redis_password_file);
    ck_assert_str_eq(c->cluster_key_prefix, "kiln:");
    ck_assert_uint_eq(c->ncluster_peers, 0);
    ck_assert_uint_eq(c->ncluster_nodes, 2);
    ck_assert_str_eq(c->cluster_nodes[0], "n1");
    ck_assert_str_eq(c->cluster_nodes[1], "n2");
    ck_assert_str_eq(c->ips[0].node, "n2");
    ck_assert_str_eq(c->ips[1].node, "n1");
    ck_assert_int_eq(config_cluster_node_index(c, "n1"), 0);
    ck_assert_int_eq(config_cluster_node_index(c, "n2"), 1);
    ck_assert_int_eq(config_cluster_node_index(c, "n3"), -1);
    ck_assert_int_eq(config_cluster_node_index(c, NULL), -1);
    char *sum = config_summary(c);
    ck_assert_msg(strstr(sum, "cluster: node (not set: kilnd --node NAME) of n1, n2; redis "
                              "redis://127.0.0.1:6379/0 (prefix kiln:); while Redis is away this node "
                              "holds 50% of the account's limits\n") != NULL, "%s", sum);
    ck_assert(c->cluster_local_share == 0.5);
    ck_assert_msg(strstr(sum, "  az1: 127.0.0.11 (p, warming up, node n2), 127.0.0.13 (p, "
                              "warming up, node n2)\n") != NULL, "%s", sum);
    ck_assert_msg(strstr(sum, "  az2: 127.0.0.12 (p, warming up, node n1)\n") != NULL, "%s",
                  sum);
    free(sum);

    /* select_node: no name anywhere; then --node picks one */
    ck_assert_int_eq(config_cluster_select_node(c, NULL, &err), -1);
    ck_assert_str_eq(err, "cluster.node is not set: name this node with cluster.node or "
                          "kilnd --node");
    free(err);
    ck_assert_int_eq(config_cluster_select_node(c, "n3", &err), -1);
    ck_assert_str_eq(err, "node 'n3' is not one of the cluster's nodes (n1, n2: the names in "
                          "ips[].node and cluster.submission_peers)");
    free(err);
    ck_assert_int_eq(config_cluster_select_node(c, "n2", &err), 0);
    ck_assert_ptr_null(err);
    ck_assert_str_eq(c->cluster_node, "n2");
    config_unref(c);
}
END_TEST

/* Every key: a bracketed IPv6 host with port and database, the password without its
 * trailing newline (a blank inside kept), peers in file order with the default port, the
 * nodes the sorted union of ips and peers; the summary line. */
START_TEST(test_full)
{
    char file[300];
    char *err = NULL;
    config *c = load(CL "  node: n1\n"
                        "  redis:\n"
                        "    url: \"redis://[::1]:6380/3\"\n"
                        "    password_file: ./pw\n"
                        "    key_prefix: \"k1.prod:x_y-\"\n"
                        "  local_share: 40%\n"
                        "  submission_peers:\n"
                        "    n3: 10.0.0.3\n"
                        "    n1: 127.0.0.1:2587\n"
                        "    n2: \"[::1]:2588\"\n"
                        "    relay-9: relay.example.test:587\n",
                     &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert(c->cluster_on);
    ck_assert_str_eq(c->cluster_node, "n1");
    ck_assert_str_eq(c->cluster_redis_url, "redis://[::1]:6380/3");
    ck_assert_str_eq(c->cluster_redis_host, "::1");
    ck_assert_int_eq(c->cluster_redis_port, 6380);
    ck_assert_int_eq(c->cluster_redis_db, 3);
    ck_assert_ptr_null(c->cluster_redis_unix);
    ck_assert_str_eq(c->cluster_redis_password, "s3cret pass");
    char want[400];
    snprintf(want, sizeof want, "%s/pw", c->dir);
    ck_assert_str_eq(c->cluster_redis_password_file, want);
    ck_assert_str_eq(c->cluster_key_prefix, "k1.prod:x_y-");
    ck_assert(c->cluster_local_share > 0.3999 && c->cluster_local_share < 0.4001);
    ck_assert_uint_eq(c->ncluster_peers, 4);
    ck_assert_str_eq(c->cluster_peers[0].node, "n3");
    ck_assert_str_eq(c->cluster_peers[0].addr.host, "10.0.0.3");
    ck_assert_int_eq(c->cluster_peers[0].addr.port, 2587);
    ck_assert_str_eq(c->cluster_peers[1].node, "n1");
    ck_assert_str_eq(c->cluster_peers[1].addr.host, "127.0.0.1");
    ck_assert_int_eq(c->cluster_peers[1].addr.port, 2587);
    ck_assert_str_eq(c->cluster_peers[2].node, "n2");
    ck_assert_str_eq(c->cluster_peers[2].addr.host, "::1");
    ck_assert_int_eq(c->cluster_peers[2].addr.port, 2588);
    ck_assert_str_eq(c->cluster_peers[3].node, "relay-9");
    ck_assert_str_eq(c->cluster_peers[3].addr.host, "relay.example.test");
    ck_assert_int_eq(c->cluster_peers[3].addr.port, 587);
    ck_assert_uint_eq(c->ncluster_nodes, 4);
    ck_assert_str_eq(c->cluster_nodes[0], "n1");
    ck_assert_str_eq(c->cluster_nodes[1], "n2");
    ck_assert_str_eq(c->cluster_nodes[2], "n3");
    ck_assert_str_eq(c->cluster_nodes[3], "relay-9");
    char *sum = config_summary(c);
    char line[1000];
    snprintf(line, sizeof line,
             "cluster: node n1 of n1, n2, n3, relay-9; redis redis://[::1]:6380/3 (prefix "
             "k1.prod:x_y-, password_file %s); while Redis is away this node holds 40%% of "
             "the account's limits; submission peers n3 10.0.0.3:2587, n1 "
             "127.0.0.1:2587, n2 [::1]:2588, relay-9 relay.example.test:587\n", want);
    ck_assert_msg(strstr(sum, line) != NULL, "%s\nwanted: %s", sum, line);
    ck_assert_ptr_null(strstr(sum, "s3cret"));
    free(sum);

    /* select_node: NULL keeps cluster.node; --node wins, a relay node (no IP) too */
    ck_assert_int_eq(config_cluster_select_node(c, NULL, &err), 0);
    ck_assert_str_eq(c->cluster_node, "n1");
    ck_assert_int_eq(config_cluster_select_node(c, "relay-9", &err), 0);
    ck_assert_str_eq(c->cluster_node, "relay-9");
    ck_assert_int_eq(config_cluster_select_node(c, "n4", &err), -1);
    ck_assert_str_eq(err, "node 'n4' is not one of the cluster's nodes (n1, n2, n3, relay-9: "
                          "the names in ips[].node and cluster.submission_peers)");
    free(err);
    config_unref(c);
}
END_TEST

/* The URL forms: a name, an IPv4 address, with and without port and database; unix sockets
 * with and without ?db=; the password file's limits (a 0400 file, 512 characters). */
START_TEST(test_urls)
{
    static const struct {
        const char *url;
        const char *host;     /* NULL: unix */
        int port;
        const char *unix_path;
        int db;
    } good[] = {
        {"redis://redis.internal", "redis.internal", 6379, NULL, 0},
        {"redis://redis.internal/", "redis.internal", 6379, NULL, 0},
        {"redis://10.1.2.3:7000", "10.1.2.3", 7000, NULL, 0},
        {"redis://10.1.2.3:7000/15", "10.1.2.3", 7000, NULL, 15},
        {"redis://localhost/7", "localhost", 6379, NULL, 7},
        {"redis://[2001:db8::5]/2", "2001:db8::5", 6379, NULL, 2},
        {"redis://r.test:65535/0", "r.test", 65535, NULL, 0},
        {"unix:///run/redis/redis.sock", NULL, 6379, "/run/redis/redis.sock", 0},
        {"unix:///tmp/r.sock?db=5", NULL, 6379, "/tmp/r.sock", 5},
    };
    char file[300], text[600];
    char *err = NULL;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(text, sizeof text, CL "  redis: {url: \"%s\"}\n", good[i].url);
        config *c = load(text, &err, file, sizeof file);
        ck_assert_msg(c != NULL, "%s: %s", good[i].url, err);
        ck_assert_str_eq(c->cluster_redis_url, good[i].url);
        if (good[i].host) {
            ck_assert_str_eq(c->cluster_redis_host, good[i].host);
            ck_assert_ptr_null(c->cluster_redis_unix);
        } else {
            ck_assert_ptr_null(c->cluster_redis_host);
            ck_assert_str_eq(c->cluster_redis_unix, good[i].unix_path);
        }
        ck_assert_int_eq(c->cluster_redis_port, good[i].port);
        ck_assert_int_eq(c->cluster_redis_db, good[i].db);
        config_unref(c);
    }
    config *c = load(PWFILE("pw400"), &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_str_eq(c->cluster_redis_password, "secretpw");
    config_unref(c);
    c = load(PWFILE("pwmax"), &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_uint_eq(strlen(c->cluster_redis_password), 512);
    config_unref(c);
    c = load(PREFIX("'a'"), &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_str_eq(c->cluster_key_prefix, "a");
    config_unref(c);
}
END_TEST

/* A node may be a pure relay (a peer owning no IP); a cluster without IPs or peers loads,
 * but no node can be selected; an empty peers map is no peers. */
START_TEST(test_nodes)
{
    char file[300];
    char *err = NULL;
    config *c = load(CL "  node: gw\n" RURL "  submission_peers: {gw: 10.0.0.9:2587}\n", &err,
                     file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_uint_eq(c->ncluster_nodes, 3);
    ck_assert_str_eq(c->cluster_nodes[0], "gw");
    ck_assert_str_eq(c->cluster_nodes[1], "n1");
    ck_assert_str_eq(c->cluster_nodes[2], "n2");
    ck_assert_int_eq(config_cluster_select_node(c, NULL, &err), 0);
    ck_assert_str_eq(c->cluster_node, "gw");
    config_unref(c);

    c = load("cluster:\n" RURL "  submission_peers: {}\n", &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert(c->cluster_on);
    ck_assert_uint_eq(c->ncluster_nodes, 0);
    ck_assert_uint_eq(c->ncluster_peers, 0);
    ck_assert_int_eq(config_cluster_select_node(c, "n1", &err), -1);
    ck_assert_str_eq(err, "node 'n1' is not one of the cluster's nodes (none: the names in "
                          "ips[].node and cluster.submission_peers)");
    free(err);
    char *sum = config_summary(c);
    ck_assert_msg(strstr(sum, "cluster: node n1 of (no nodes); redis") != NULL, "%s", sum);
    free(sum);
    config_unref(c);

    c = load(CL RURL "  submission_peers:\n", &err, file, sizeof file);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_uint_eq(c->ncluster_peers, 0);
    config_unref(c);
}
END_TEST

/* The same text held in memory reads the password file the same way. */
START_TEST(test_text_load)
{
    const char *text = HEAD CL "  node: n2\n  redis: {url: 'unix:///run/r.sock', "
                               "password_file: pw}\n";
    char *err = NULL;
    config *c = config_load_text(text, strlen(text), "<text>", dir, NULL, &err);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_str_eq(c->cluster_node, "n2");
    ck_assert_str_eq(c->cluster_redis_unix, "/run/r.sock");
    ck_assert_str_eq(c->cluster_redis_password, "s3cret pass");
    config_unref(c);
}
END_TEST

/* The password file joins the secret files whose owner must be server.user. */
START_TEST(test_owner_warning)
{
    struct passwd *pw = getpwnam("nobody");
    if (!pw || pw->pw_uid == geteuid()) return;   /* nothing to compare against */
    char file[300], text[600];
    char *err = NULL;
    snprintf(text, sizeof text, "%s", CL "  redis: {url: redis://r.test, password_file: pw}\n");
    /* server.user nobody: HEAD's server line is replaced by one that names the user */
    char full[1200];
    snprintf(full, sizeof full, "server: {hostname: mta.example.test, user: nobody}\n"
                                "zones: [az1, az2]\npools: [{name: p}]\n"
                                "configuration_sets: [{name: txn, pool: p}]\n"
                                "default_configuration_set: txn\n%s", text);
    snprintf(file, sizeof file, "%s/owner.yaml", dir);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fputs(full, f);
    fclose(f);
    ck_assert_int_eq(chmod(file, 0600), 0);
    config *c = config_load(file, NULL, &err);
    ck_assert_msg(c != NULL, "%s", err);
    size_t n = 0;
    char **w = config_file_warnings(c, &n);
    bool found = false;
    for (size_t i = 0; i < n; i++)
        if (strstr(w[i], "cluster.redis.password_file ") && strstr(w[i], "/pw is owned by uid") &&
            strstr(w[i], "not by server.user nobody"))
            found = true;
    ck_assert_msg(found, "no password_file owner warning among %zu", n);
    config_file_warnings_free(w, n);
    config_unref(c);
}
END_TEST

/* The documented example still loads (its cluster section is commented out: it needs a
 * Redis and a node on every IP). */
START_TEST(test_full_example)
{
    char *err = NULL;
    config *c = config_load(KILN_SRCDIR "/conf/examples/full.yaml", NULL, &err);
    ck_assert_msg(c != NULL, "conf/examples/full.yaml: %s", err);
    ck_assert(!c->cluster_on);
    for (size_t i = 0; i < c->nips; i++) ck_assert_ptr_null(c->ips[i].node);
    config_unref(c);
}
END_TEST

static Suite *config_cluster_suite(void)
{
    Suite *s = suite_create("config_cluster");
    TCase *tc = tcase_create("cluster");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_bad, 0, (int)(sizeof bad / sizeof bad[0]));
    tcase_add_test(tc, test_off);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_full);
    tcase_add_test(tc, test_urls);
    tcase_add_test(tc, test_nodes);
    tcase_add_test(tc, test_text_load);
    tcase_add_test(tc, test_owner_warning);
    tcase_add_test(tc, test_full_example);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(config_cluster_suite);
