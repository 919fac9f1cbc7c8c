/* kilnctl.c — the admin CLI (SPEC section 5): sends one request over kilnd's control socket
 * (protocol in control.h) and prints the answer as a human table, or with --json as the
 * daemon's data object. Exit status: 0 done, 1 the daemon refused or did not answer,
 * 2 usage, configuration or connection problem. One command stays local: `passwd`
 * (kilnctl_passwd.c) hashes a password for submission.auth without a socket or a config.
 *
 * The socket comes from -s SOCKET, or from server.control_socket of the config file (-c FILE,
 * default conf/kiln.yaml), loaded with config_load. kilnctl must still reach the daemon while
 * that file is broken (someone is editing it; kilnd keeps running the config it loaded, and
 * `reload` is how the daemon reports what is wrong), so when config_load fails kilnctl reads
 * just server.control_socket and server.spool with libyaml (kilnctl_socket_from_yaml below) and
 * resolves them the way config.c does: relative to the file's directory, default
 * <spool>/kilnd.sock, spool default <dir>/spool. Other commands than reload then print
 * config_load's error as a warning. Only a file that is unreadable or not YAML at all
 * ends kilnctl with "cannot read FILE".
 * I/O here is blocking; the wait for the answer is bounded by poll(): 30 s, and 300 s for
 * `queue`, which kilnd counts on a worker thread over the whole spool (about 2 s per
 * million queued recipients, more while it delivers). */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <yaml.h>

#include "base/config.h"
#include "base/util.h"
#include "mta/auth.h"
#include "mta/kilnctl_passwd.h"
#include "mta/kilnctl_cluster.h"
#include "mta/kilnctl_forecast.h"
#include "mta/kilnctl_reputation.h"

#define KILNCTL_DEFAULT_CONFIG "conf/kiln.yaml"
#define KILNCTL_TIMEOUT_MS 30000
#define KILNCTL_QUEUE_TIMEOUT_MS 300000
#define KILNCTL_MAX_ANSWER (64 * 1024 * 1024)

enum { EXIT_REFUSED = 1, EXIT_USAGE = 2 };

static const char usage_text[] =
    "usage: kilnctl [-c FILE | -s SOCKET] [--json] COMMAND [ARGS]\n"
    "\n"
    "  -c FILE     config file naming server.control_socket (default conf/kiln.yaml)\n"
    "  -s SOCKET   talk to the control socket SOCKET directly\n"
    "  --json      print the answer as JSON (also accepted after the command)\n"
    "\n"
    "commands:\n"
    "  status                                 uptime, queue sizes, sessions, config file,\n"
    "                                         webhook backlogs, drops and last errors\n"
    "  quota                                  sending quota (SES GetSendQuota)\n"
    "  stats                                  sends, bounces, complaints, rejects per 15 minutes,\n"
    "                                         last 14 days (SES GetSendStatistics)\n"
    "  reputation                             bounce and complaint rates of the last 14 days\n"
    "                                         against SES's thresholds (reputation dashboard)\n"
    "  forecast [--set S] [--days N]          recipients per day each set's pool can send for\n"
    "                                         N days (1..90, default 14), what volume advance\n"
    "                                         needs sent, the day each IP reaches its target\n"
    "  cluster status                         cluster nodes: alive, last heartbeat, IPs, queue;\n"
    "                                         this node's link to Redis (or degraded since)\n"
    "  suppression list [--reason R]          account suppression list\n"
    "  suppression add ADDRESS [--reason R]   suppress ADDRESS (R: BOUNCE (default) or COMPLAINT)\n"
    "  suppression remove ADDRESS             take ADDRESS off the suppression list\n"
    "  reload                                 make kilnd apply its config file again\n"
    "  ips                                    dedicated IPs: pool, zone, warm-up, usage, state\n"
    "                                         (SES GetDedicatedIps; Ip is the public address,\n"
    "                                         BIND the one kiln binds when NAT maps them)\n"
    "  ip warmup ADDRESS --percent N          set the warm-up percentage of ADDRESS (0..100;\n"
    "                                         SES PutDedicatedIpWarmupAttributes); refused for\n"
    "                                         IPs of managed pools (their caps are automatic)\n"
    "  ip check ADDRESS                       reverse DNS as mailbox providers require: the PTR\n"
    "                                         of the public address names the EHLO name, whose\n"
    "                                         A/AAAA records include the address (FCrDNS)\n"
    "  zone down NAME                         take zone NAME out of rotation: no new sessions\n"
    "                                         from its IPs, open ones finish and QUIT\n"
    "  zone up NAME                           put zone NAME back into rotation\n"
    "  queue [--domain D]                     queued recipients by pool, configuration set,\n"
    "                                         domain and state (ready, active, waiting, deferred)\n"
    "  queue --explain MESSAGE-ID             what each pending recipient of the message waits\n"
    "                                         for: retry time, IP cap, site shaping, session;\n"
    "                                         MESSAGE-ID is kiln's id: the last word of the\n"
    "                                         250 reply, events' mail.messageId\n"
    "  identity status [IDENTITY]             DKIM, MAIL FROM and DMARC records of each identity\n"
    "                                         (or one): published, missing or wrong, and what to\n"
    "                                         publish (SES GetEmailIdentity with --json)\n"
    "  identity dkim generate DOMAIN [--selector S] [--ed25519]\n"
    "                                         Easy DKIM: a 2048-bit RSA key (and an Ed25519 key\n"
    "                                         under selector Se) in the spool; prints the TXT\n"
    "                                         records; signing starts once they are live\n"
    "  identity dkim rotate DOMAIN            sign with the newest other selector (its record\n"
    "                                         must be live; keep the old one published)\n"
    "  passwd                                 print a yescrypt hash for submission.auth's\n"
    "                                         password_hash: asked twice on a terminal (no\n"
    "                                         echo), else one line of stdin; no kilnd needed\n";

static _Noreturn void kilnctl_usage_fail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static _Noreturn void kilnctl_usage_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("kilnctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\n\n", stderr);
    va_end(ap);
    fputs(usage_text, stderr);
    exit(EXIT_USAGE);
}

/* Prints the one-line reason of a failure; returns status for the caller to pass on. */
static int kilnctl_fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int kilnctl_fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("kilnctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\n", stderr);
    va_end(ap);
    return status;
}

/* ---- command line ---- */

typedef struct options {
    const char *config_file;   /* -c */
    const char *socket_path;   /* -s */
    bool json;
    const char *reason;        /* --reason */
    const char *percent;       /* --percent */
    const char *domain;        /* --domain */
    const char *explain;       /* --explain */
    const char *set, *days;    /* --set, --days (forecast) */
    const char *selector;      /* --selector */
    bool ed25519;              /* --ed25519 */
    const char *words[4];      /* the command and its positional arguments */
    int nwords;
} options;

static void kilnctl_parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            o->json = true;
        } else if (strcmp(a, "--ed25519") == 0) {
            o->ed25519 = true;
        } else if (strcmp(a, "--selector") == 0 || strncmp(a, "--selector=", 11) == 0) {
            if (a[10] == '=') o->selector = a + 11;
            else if (i + 1 >= argc) kilnctl_usage_fail("%s needs a value", a);
            else o->selector = argv[++i];
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage_text, stdout);
            exit(0);
        } else if (strcmp(a, "-c") == 0 || strcmp(a, "-s") == 0 || strcmp(a, "--reason") == 0 ||
                   strcmp(a, "--percent") == 0 || strcmp(a, "--domain") == 0 ||
                   strcmp(a, "--explain") == 0 || strcmp(a, "--set") == 0 ||
                   strcmp(a, "--days") == 0) {
            if (i + 1 >= argc) kilnctl_usage_fail("%s needs a value", a);
            const char *v = argv[++i];
            if (a[1] == 'c') o->config_file = v;
            else if (a[1] == 's') o->socket_path = v;
            else if (a[2] == 'r') o->reason = v;
            else if (a[2] == 'p') o->percent = v;
            else if (a[2] == 'd' && a[3] == 'o') o->domain = v;
            else if (a[2] == 'd') o->days = v;
            else if (a[2] == 's') o->set = v;
            else o->explain = v;
        } else if (strncmp(a, "--reason=", 9) == 0) {
            o->reason = a + 9;
        } else if (strncmp(a, "--percent=", 10) == 0) {
            o->percent = a + 10;
        } else if (strncmp(a, "--domain=", 9) == 0) {
            o->domain = a + 9;
        } else if (strncmp(a, "--explain=", 10) == 0) {
            o->explain = a + 10;
        } else if (strncmp(a, "--set=", 6) == 0 || strncmp(a, "--days=", 7) == 0) {
            if (a[2] == 's') o->set = a + 6;
            else o->days = a + 7;
        } else if (a[0] == '-' && a[1] != '\0') {
            kilnctl_usage_fail("unknown option: %s", a);
        } else {
            if (o->nwords == (int)(sizeof o->words / sizeof o->words[0]))
                kilnctl_usage_fail("too many arguments");
            o->words[o->nwords++] = a;
        }
    }
    if (o->config_file && o->socket_path)
        kilnctl_usage_fail("give either -c FILE or -s SOCKET, not both");
    if (o->nwords == 0) kilnctl_usage_fail("no command given");
}

/* Checks the command words (exits with the usage text if they are wrong) and builds the
 * request {"cmd":…, "args":{…}}. */
static json_t *kilnctl_build_request(const options *o, const char **cmd_name)
{
    const char *w0 = o->words[0];
    const char *sub = o->nwords > 1 ? o->words[1] : NULL;
    const char *cmd = NULL;
    int want = 1;          /* number of words the command takes */
    bool reason_ok = false, percent_ok = false, queue_opts = false, gen_opts = false;
    if (strcmp(w0, "status") == 0 || strcmp(w0, "quota") == 0 || strcmp(w0, "reload") == 0 ||
        strcmp(w0, "ips") == 0 || strcmp(w0, "stats") == 0 ||
        strcmp(w0, "reputation") == 0) {
        cmd = w0;
    } else if (strcmp(w0, "forecast") == 0) {
        cmd = w0;
        if (o->set && !*o->set) kilnctl_usage_fail("--set needs a configuration set name");
    } else if (strcmp(w0, "cluster") == 0) {
        if (!sub || strcmp(sub, "status") != 0) kilnctl_usage_fail("cluster needs status");
        cmd = "cluster.status";
        want = 2;
    } else if (strcmp(w0, "queue") == 0) {
        queue_opts = true;
        if (o->explain && o->domain)
            kilnctl_usage_fail("queue takes --domain D or --explain MESSAGE-ID, not both");
        if (o->explain && !*o->explain) kilnctl_usage_fail("--explain needs a MESSAGE-ID");
        cmd = o->explain ? "queue.explain" : "queue";
    } else if (strcmp(w0, "ip") == 0) {
        if (sub && strcmp(sub, "check") == 0) {
            cmd = "ip.check";
            want = 3;
            if (o->nwords < 3) kilnctl_usage_fail("ip check needs an ADDRESS");
        } else if (sub && strcmp(sub, "warmup") == 0) {
            cmd = "ip.warmup";
            want = 3;
            percent_ok = true;
            if (o->nwords < 3) kilnctl_usage_fail("ip warmup needs an ADDRESS");
            if (!o->percent) kilnctl_usage_fail("ip warmup needs --percent N (0..100)");
        } else {
            kilnctl_usage_fail("ip needs warmup ADDRESS --percent N or check ADDRESS");
        }
    } else if (strcmp(w0, "zone") == 0) {
        if (!sub || (strcmp(sub, "down") != 0 && strcmp(sub, "up") != 0))
            kilnctl_usage_fail("zone needs down NAME or up NAME");
        cmd = sub[0] == 'd' ? "zone.down" : "zone.up";
        want = 3;
        if (o->nwords < 3) kilnctl_usage_fail("zone %s needs a zone NAME", sub);
    } else if (strcmp(w0, "identity") == 0) {
        if (sub && strcmp(sub, "status") == 0) {
            cmd = "identity.status";
            want = 3;
        } else if (sub && strcmp(sub, "dkim") == 0) {
            const char *act = o->nwords > 2 ? o->words[2] : "";
            if (strcmp(act, "generate") != 0 && strcmp(act, "rotate") != 0)
                kilnctl_usage_fail("identity dkim needs generate DOMAIN or rotate DOMAIN");
            cmd = act[0] == 'g' ? "identity.dkim.generate" : "identity.dkim.rotate";
            gen_opts = act[0] == 'g';
            want = 4;
            if (o->nwords < 4) kilnctl_usage_fail("identity dkim %s needs a DOMAIN", act);
        } else {
            kilnctl_usage_fail("identity needs status [IDENTITY], dkim generate DOMAIN or dkim "
                               "rotate DOMAIN");
        }
    } else if (strcmp(w0, "suppression") == 0) {
        if (!sub) kilnctl_usage_fail("suppression needs list, add or remove");
        if (strcmp(sub, "list") == 0) {
            cmd = "suppression.list";
            want = 2;
            reason_ok = true;
        } else if (strcmp(sub, "add") == 0 || strcmp(sub, "remove") == 0) {
            cmd = sub[0] == 'a' ? "suppression.add" : "suppression.remove";
            want = 3;
            reason_ok = sub[0] == 'a';
            if (o->nwords < 3) kilnctl_usage_fail("suppression %s needs an ADDRESS", sub);
        } else {
            kilnctl_usage_fail("unknown command: suppression %s", sub);
        }
    } else {
        kilnctl_usage_fail("unknown command: %s", w0);
    }
    if (o->nwords > want) kilnctl_usage_fail("unexpected argument: %s", o->words[want]);
    if (o->reason && !reason_ok) kilnctl_usage_fail("--reason does not apply to %s", o->words[0]);
    if (o->percent && !percent_ok)
        kilnctl_usage_fail("--percent does not apply to %s", o->words[0]);
    if ((o->selector || o->ed25519) && !gen_opts)
        kilnctl_usage_fail("%s applies to identity dkim generate only",
                           o->selector ? "--selector" : "--ed25519");
    if ((o->domain || o->explain) && !queue_opts)
        kilnctl_usage_fail("%s does not apply to %s", o->domain ? "--domain" : "--explain",
                           o->words[0]);
    if ((o->set || o->days) && strcmp(cmd, "forecast") != 0)
        kilnctl_usage_fail("%s applies to forecast only", o->set ? "--set" : "--days");
    long days = 0;
    if (o->days) {
        char *end = NULL;
        errno = 0;
        days = strtol(o->days, &end, 10);
        if (errno || end == o->days || *end || days < 1 || days > 90)
            kilnctl_usage_fail("--days must be an integer from 1 to 90, not %s", o->days);
    }
    long percent = -1;
    if (o->percent) {
        char *end = NULL;
        errno = 0;
        percent = strtol(o->percent, &end, 10);
        if (errno || end == o->percent || *end || percent < 0 || percent > 100)
            kilnctl_usage_fail("--percent must be an integer from 0 to 100, not %s", o->percent);
    }

    json_t *args = json_object();
    if (strncmp(cmd, "zone.", 5) == 0) json_object_set_new(args, "zone", json_string(o->words[2]));
    else if (strcmp(cmd, "identity.status") == 0) {
        if (o->nwords > 2) json_object_set_new(args, "domain", json_string(o->words[2]));
    } else if (strncmp(cmd, "identity.dkim.", 14) == 0) {
        json_object_set_new(args, "domain", json_string(o->words[3]));
        if (o->selector) json_object_set_new(args, "selector", json_string(o->selector));
        if (o->ed25519) json_object_set_new(args, "ed25519", json_true());
    } else if (want == 3) json_object_set_new(args, "address", json_string(o->words[2]));
    if (percent >= 0) json_object_set_new(args, "percent", json_integer(percent));
    if (o->reason) json_object_set_new(args, "reason", json_string(o->reason));
    if (queue_opts && o->domain) json_object_set_new(args, "domain", json_string(o->domain));
    if (queue_opts && o->explain) json_object_set_new(args, "id", json_string(o->explain));
    if (o->set) json_object_set_new(args, "set", json_string(o->set));
    if (days) json_object_set_new(args, "days", json_integer(days));
    json_t *req = json_object();
    json_object_set_new(req, "cmd", json_string(cmd));
    json_object_set_new(req, "args", args);
    *cmd_name = cmd;
    return req;
}

/* ---- finding the socket ---- */

/* Scalar value of key in mapping node, or NULL. */
static const char *kilnctl_yaml_map_scalar(yaml_document_t *doc, yaml_node_t *map, const char *key,
                                           yaml_node_t **value)
{
    if (!map || map->type != YAML_MAPPING_NODE) return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        yaml_node_t *v = yaml_document_get_node(doc, p->value);
        if (!k || k->type != YAML_SCALAR_NODE || strcmp((char *)k->data.scalar.value, key) != 0)
            continue;
        if (value) *value = v;
        return v && v->type == YAML_SCALAR_NODE ? (const char *)v->data.scalar.value : NULL;
    }
    return NULL;
}

/* The control socket named by a config file that config_load rejected: only
 * server.control_socket and server.spool are read. NULL if the file is not readable YAML. */
static char *kilnctl_socket_from_yaml(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    yaml_parser_t parser;
    yaml_document_t doc;
    char *result = NULL;
    if (!yaml_parser_initialize(&parser)) {
        fclose(fp);
        return NULL;
    }
    yaml_parser_set_input_file(&parser, fp);
    if (yaml_parser_load(&parser, &doc)) {
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (root && root->type == YAML_MAPPING_NODE) {
            yaml_node_t *server = NULL;
            kilnctl_yaml_map_scalar(&doc, root, "server", &server);
            const char *sock = kilnctl_yaml_map_scalar(&doc, server, "control_socket", NULL);
            const char *spool = kilnctl_yaml_map_scalar(&doc, server, "spool", NULL);
            char *dir = config_file_dir(path, NULL);
            if (!dir) {
                /* unreachable directory: result stays NULL */
            } else if (sock && *sock) {
                result = config_resolve_path(dir, sock);
            } else {
                char *sp = config_resolve_path(dir, spool && *spool ? spool : "spool");
                result = config_resolve_path(sp, "kilnd.sock");
                free(sp);
            }
            free(dir);
        }
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    fclose(fp);
    return result;
}

/* The socket path (malloc'd), or NULL after printing why not. A config file that
 * config_load rejects but that is still readable YAML gives its socket via
 * kilnctl_socket_from_yaml. */
static char *kilnctl_find_socket(const options *o, const char *cmd)
{
    if (o->socket_path) return util_strdup(o->socket_path);
    const char *file = o->config_file ? o->config_file : KILNCTL_DEFAULT_CONFIG;
    char *err = NULL;
    config *cfg = config_load(file, auth_hash_usable, &err);
    if (cfg) {
        char *s = util_strdup(cfg->control_socket);
        config_unref(cfg);
        return s;
    }
    /* The daemon runs the config it loaded before the file was broken: still reach it. */
    char *s = kilnctl_socket_from_yaml(file);
    if (s) {
        /* reload: kilnd itself answers with what is wrong; other commands: say it here. */
        if (strcmp(cmd, "reload") != 0)
            fprintf(stderr, "kilnctl: warning: %s (kilnd keeps running the config it loaded)\n",
                    err ? err : "invalid configuration");
        free(err);
        return s;
    }
    kilnctl_fail(EXIT_USAGE, "cannot read %s: %s", file, err ? err : "invalid configuration");
    free(err);
    return NULL;
}

/* ---- talking to kilnd ---- */

/* A connected socket, or -1 after printing why not. */
static int kilnctl_connect_socket(const char *path)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) {
        kilnctl_fail(EXIT_USAGE, "cannot connect to %s: %s (is kilnd running?)", path,
                     strerror(ENAMETOOLONG));
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        kilnctl_fail(EXIT_USAGE, "cannot create a socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        kilnctl_fail(EXIT_USAGE, "cannot connect to %s: %s (is kilnd running?)", path,
                     strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* 0, or -1 after printing why. */
static int kilnctl_send_all(int fd, const char *path, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            kilnctl_fail(EXIT_REFUSED, "cannot send the request to %s: %s", path, strerror(errno));
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads one line (the answer) within the deadline; returns it malloc'd without the newline,
 * or NULL after printing why not. */
static char *kilnctl_read_answer(int fd, const char *path, int timeout_ms)
{
    strbuf sb;
    strbuf_init(&sb);
    int64_t deadline = util_mono_ms() + timeout_ms;
    for (;;) {
        char *nl = sb.len ? memchr(sb.buf, '\n', sb.len) : NULL;
        if (nl) {
            char *line = util_strndup(sb.buf, (size_t)(nl - sb.buf));
            strbuf_free(&sb);
            return line;
        }
        int64_t left = deadline - util_mono_ms();
        if (left <= 0) {
            kilnctl_fail(EXIT_REFUSED, "kilnd did not answer on %s within %d s", path,
                         timeout_ms / 1000);
            break;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, (int)left);
        if (pr < 0 && errno == EINTR) continue;
        if (pr < 0) {
            kilnctl_fail(EXIT_REFUSED, "waiting for kilnd's answer on %s: %s", path,
                         strerror(errno));
            break;
        }
        if (pr == 0) continue;
        strbuf_reserve(&sb, 4096);
        ssize_t n = recv(fd, sb.buf + sb.len, 4096, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            kilnctl_fail(EXIT_REFUSED, "reading kilnd's answer on %s: %s", path, strerror(errno));
            break;
        }
        if (n == 0) {
            kilnctl_fail(EXIT_REFUSED, "kilnd closed the connection on %s without answering", path);
            break;
        }
        sb.len += (size_t)n;
        sb.buf[sb.len] = '\0';
        if (sb.len > KILNCTL_MAX_ANSWER) {
            kilnctl_fail(EXIT_REFUSED, "kilnd's answer on %s is too long", path);
            break;
        }
    }
    strbuf_free(&sb);
    return NULL;
}

/* How long to wait for the answer to req: a queue report ("queue"; --explain is
 * "queue.explain") may take minutes on a very long queue. */
static int kilnctl_timeout_ms(json_t *req)
{
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    return cmd && strcmp(cmd, "queue") == 0 ? KILNCTL_QUEUE_TIMEOUT_MS : KILNCTL_TIMEOUT_MS;
}

/* Sends the request and returns the answer object, or NULL after printing why (*status). */
static json_t *kilnctl_exchange(const char *path, json_t *req, int *status)
{
    *status = EXIT_REFUSED;
    char *text = json_dumps(req, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) util_fatal("kilnctl: cannot encode the request");
    int fd = kilnctl_connect_socket(path);
    if (fd < 0) {
        free(text);
        *status = EXIT_USAGE;
        return NULL;
    }
    char *line = NULL;
    if (kilnctl_send_all(fd, path, text, strlen(text)) == 0 &&
        kilnctl_send_all(fd, path, "\n", 1) == 0)
        line = kilnctl_read_answer(fd, path, kilnctl_timeout_ms(req));
    free(text);
    close(fd);
    if (!line) return NULL;
    json_error_t jerr;
    json_t *ans = json_loads(line, 0, &jerr);
    free(line);
    if (!json_is_object(ans)) {
        kilnctl_fail(EXIT_REFUSED, "malformed answer from kilnd on %s", path);
        json_decref(ans);
        return NULL;
    }
    return ans;
}

/* ---- printing ---- */

static void kilnctl_print_duration(long long s)
{
    long long d = s / 86400, h = s % 86400 / 3600, m = s % 3600 / 60, sec = s % 60;
    if (d) printf("%lldd%lldh%lldm%llds", d, h, m, sec);
    else if (h) printf("%lldh%lldm%llds", h, m, sec);
    else if (m) printf("%lldm%llds", m, sec);
    else printf("%llds", sec);
}

static void kilnctl_print_scalar(json_t *v)
{
    if (json_is_string(v)) fputs(json_string_value(v), stdout);
    else if (json_is_integer(v)) printf("%lld", (long long)json_integer_value(v));
    else if (json_is_real(v)) printf("%g", json_real_value(v));
    else if (json_is_true(v)) fputs("true", stdout);
    else if (json_is_false(v)) fputs("false", stdout);
    else if (json_is_null(v)) fputs("-", stdout);
    else {
        char *t = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
        fputs(t ? t : "", stdout);
        free(t);
    }
}

/* "Key: value" lines, values aligned, in the daemon's order (lists are tables of their
 * own, printed by the caller). */
static void kilnctl_print_fields(json_t *data)
{
    size_t width = 0;
    const char *key;
    json_t *v;
    json_object_foreach(data, key, v) if (!json_is_array(v) && strlen(key) > width) width = strlen(key);
    json_object_foreach(data, key, v)
    {
        if (json_is_array(v)) continue;
        printf("%s:%*s", key, (int)(width - strlen(key) + 1), "");
        if (strcmp(key, "Uptime") == 0 && json_is_integer(v))
            kilnctl_print_duration((long long)json_integer_value(v));
        else if ((strcmp(key, "Max24HourSend") == 0 || strcmp(key, "MaxSendRate") == 0) &&
                 json_is_number(v) && json_number_value(v) < 0)
            fputs("unlimited", stdout);
        else
            kilnctl_print_scalar(v);
        fputs("\n", stdout);
    }
}

/* The text of o[key] for a table cell: strings as they are, integers in decimal (negative
 * ones as "-" when dash_negative: "no cap" in the ips table), anything else "" or "-". */
static const char *kilnctl_table_cell(json_t *o, const char *key, bool dash_negative, char *buf,
                                      size_t n)
{
    json_t *v = json_object_get(o, key);
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_integer(v)) {
        long long x = (long long)json_integer_value(v);
        if (x < 0 && dash_negative) return "-";
        snprintf(buf, n, "%lld", x);
        return buf;
    }
    return dash_negative ? "-" : "";
}

/* An aligned table of the objects in list: one column per key, under its heading, two
 * spaces apart, the last column unpadded. The one printer of every kilnctl table. */
static void kilnctl_print_table(json_t *list, const char *const *head, const char *const *keys,
                                int ncol, bool dash_negative)
{
    int w[16];
    char buf[256];
    if (ncol > 16) util_fatal("kilnctl: table of %d columns", ncol);
    for (int c = 0; c < ncol; c++) w[c] = (int)strlen(head[c]);
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
        for (int c = 0; c < ncol; c++) {
            int l = (int)strlen(kilnctl_table_cell(e, keys[c], dash_negative, buf, sizeof buf));
            if (l > w[c]) w[c] = l;
        }
    for (int c = 0; c < ncol; c++)
        printf("%-*s%s", c + 1 < ncol ? w[c] : 0, head[c], c + 1 < ncol ? "  " : "\n");
    json_array_foreach(list, i, e)
        for (int c = 0; c < ncol; c++)
            printf("%-*s%s", c + 1 < ncol ? w[c] : 0,
                   kilnctl_table_cell(e, keys[c], dash_negative, buf, sizeof buf),
                   c + 1 < ncol ? "  " : "\n");
}

static void kilnctl_print_suppression(json_t *data)
{
    json_t *list = json_object_get(data, "SuppressedDestinationSummaries");
    size_t n = json_array_size(list);
    if (n == 0) {
        puts("(no suppressed addresses)");
        return;
    }
    static const char *const head[] = {"EMAIL", "REASON", "UPDATED"};
    static const char *const keys[] = {"EmailAddress", "Reason", "LastUpdateTime"};
    kilnctl_print_table(list, head, keys, 3, false);
}

static void kilnctl_print_ips(json_t *data)
{
    /* BIND (kiln.BindAddress, the address kiln binds) only when NAT maps one onto an Ip;
     * NODE (kiln.Node) only on cluster nodes, which list every node's IPs */
    static const char *const head[] = {"IP", "BIND", "NODE", "POOL", "ZONE", "WARMUP", "PCT",
                                       "SENT24H", "CAP", "STATE"};
    static const char *const keys[] = {"Ip", "BindAddress", "Node", "PoolName", "Zone",
                                       "WarmupStatus", "WarmupPercentage", "SentLast24Hours",
                                       "DailyCap", "State"};
    enum { NCOL = 10 };
    json_t *list = json_object_get(data, "DedicatedIps");
    size_t n = json_array_size(list);
    if (n == 0) {
        puts("(no dedicated IPs)");
        return;
    }
    size_t i;
    json_t *e;
    bool nat = false, nodes = false;
    json_array_foreach(list, i, e)
    {
        json_t *kn = json_object_get(e, "kiln");
        const char *bind = json_string_value(json_object_get(kn, "BindAddress"));
        const char *ip = json_string_value(json_object_get(e, "Ip"));
        const char *node = json_string_value(json_object_get(kn, "Node"));
        if (bind && ip && strcmp(bind, ip) != 0) nat = true;
        if (bind) json_object_set_new(e, "BindAddress", json_string(bind));   /* a cell */
        if (node) {
            nodes = true;
            const char *alive = json_string_value(json_object_get(kn, "NodeAlive"));
            json_object_set_new(e, "Node", json_string(node));
            if (alive && strcmp(alive, "yes") != 0) {   /* its heartbeat is old or unknown */
                char cell[96];
                snprintf(cell, sizeof cell, "%s (%s)", node,
                         strcmp(alive, "no") == 0 ? "not alive" : "unknown");
                json_object_set_new(e, "Node", json_string(cell));
            }
        }
    }
    const char *h[NCOL], *k[NCOL];
    int nc = 0;
    for (int c = 0; c < NCOL; c++) {
        if ((c == 1 && !nat) || (c == 2 && !nodes)) continue;
        h[nc] = head[c];
        k[nc++] = keys[c];
    }
    kilnctl_print_table(list, h, k, nc, true);
    /* why an IP is out of rotation, under the table */
    json_array_foreach(list, i, e)
    {
        json_t *k = json_object_get(e, "kiln");
        const char *why = json_string_value(json_object_get(k, "DownReason"));
        const char *deg = json_string_value(json_object_get(k, "DegradedReason"));
        const char *state = json_string_value(json_object_get(e, "State"));
        if (state && strcmp(state, "draining") == 0)
            printf("%s: draining (released): %lld open session(s) finish their transaction; the IP "
                   "leaves this list when they close\n", json_string_value(json_object_get(e, "Ip")),
                   (long long)json_integer_value(json_object_get(k, "Sessions")));
        if (json_is_true(json_object_get(k, "Degraded")) && deg && *deg)
            printf("%s: degraded%s: %s\n", json_string_value(json_object_get(e, "Ip")),
                   json_is_true(json_object_get(k, "Avoided")) ? " (other IPs preferred)" : "",
                   deg);
        if (!why || !*why) continue;
        const char *until = json_string_value(json_object_get(k, "DownUntil"));
        printf("%s: %s%s%s\n", json_string_value(json_object_get(e, "Ip")), why,
               until ? "; probed again after " : "", until ? until : "");
    }
}

static void kilnctl_print_queue(json_t *data)
{
    static const char *const head[] = {"POOL", "SET", "DOMAIN", "STATE", "RECIPIENTS"};
    static const char *const keys[] = {"Pool", "ConfigurationSet", "Domain", "State", "Recipients"};
    enum { NCOL = 5 };
    json_t *list = json_object_get(data, "Queue");
    const char *domain = json_string_value(json_object_get(data, "Domain"));
    if (json_array_size(list) == 0) {
        if (domain) printf("(nothing queued for %s)\n", domain);
        else puts("(the queue is empty)");
        return;
    }
    kilnctl_print_table(list, head, keys, NCOL, false);
    printf("queued %lld, deferred %lld recipients\n",
           (long long)json_integer_value(json_object_get(data, "Queued")),
           (long long)json_integer_value(json_object_get(data, "Deferred")));
}

static void kilnctl_print_stats(json_t *data)
{
    static const char *const head[] = {"TIMESTAMP", "ATTEMPTS", "BOUNCES", "COMPLAINTS", "REJECTS"};
    static const char *const keys[] = {"Timestamp", "DeliveryAttempts", "Bounces", "Complaints",
                                       "Rejects"};
    enum { NCOL = 5 };
    json_t *list = json_object_get(data, "SendDataPoints");
    if (json_array_size(list) == 0) {
        puts("(no sending in the last 14 days)");
        return;
    }
    kilnctl_print_table(list, head, keys, NCOL, false);
}

static void kilnctl_print_explain(json_t *data)
{
    json_t *list = json_object_get(data, "Recipients");
    size_t n = json_array_size(list);
    printf("message %s: %zu pending recipient%s\n",
           json_string_value(json_object_get(data, "MessageId")) ? json_string_value(json_object_get(data, "MessageId")) : "?",
           n, n == 1 ? "" : "s");
    size_t i;
    json_t *e;
    char buf[64];
    json_array_foreach(list, i, e)
    {
        long long attempts = (long long)json_integer_value(json_object_get(e, "Attempts"));
        const char *until = json_string_value(json_object_get(e, "Until"));
        const char *last = json_string_value(json_object_get(e, "LastReply"));
        printf("%s (set %s, pool %s)\n", kilnctl_table_cell(e, "Recipient", false, buf, sizeof buf),
               kilnctl_table_cell(e, "ConfigurationSet", false, buf, sizeof buf),
               kilnctl_table_cell(e, "Pool", false, buf, sizeof buf));
        printf("  state:      %s%s%s, %lld attempt%s\n",
               kilnctl_table_cell(e, "State", false, buf, sizeof buf), until ? " until " : "",
               until ? until : "", attempts, attempts == 1 ? "" : "s");
        const char *reason = kilnctl_table_cell(e, "Reason", false, buf, sizeof buf);
        printf("  waits for:  %s\n", reason);
        if (last && !strstr(reason, last)) printf("  last reply: %s\n", last);
    }
}

/* status: the webhook destinations' table after the fields (none: nothing). */
static void kilnctl_print_webhooks(json_t *data)
{
    json_t *list = json_object_get(data, "Webhooks");
    if (json_array_size(list) == 0) return;
    static const char *const head[] = {"WEBHOOK", "SET", "BACKLOG", "DROPPED", "FAILURES",
                                       "LAST ERROR"};
    static const char *const keys[] = {"Url", "ConfigurationSet", "Backlog", "Dropped",
                                       "Failures", "LastError"};
    fputs("\n", stdout);
    kilnctl_print_table(list, head, keys, 6, true);
}

static void kilnctl_print_human(const char *cmd, const options *o, json_t *data)
{
    if (strcmp(cmd, "status") == 0 || strcmp(cmd, "quota") == 0) {
        kilnctl_print_fields(data);
        if (strcmp(cmd, "status") == 0) kilnctl_print_webhooks(data);
    } else if (strcmp(cmd, "suppression.list") == 0) {
        kilnctl_print_suppression(data);
    } else if (strcmp(cmd, "suppression.add") == 0 || strcmp(cmd, "suppression.remove") == 0) {
        /* kilnd keeps addresses lower-case: show the entry as it is now stored. */
        char *addr = util_strdup(o->words[2]);
        util_lowercase(addr);
        if (strcmp(cmd, "suppression.add") == 0) {
            char reason[16];
            snprintf(reason, sizeof reason, "%s", o->reason ? o->reason : "BOUNCE");
            for (char *p = reason; *p; p++) *p = (char)toupper((unsigned char)*p);
            printf("added %s to the suppression list (%s)\n", addr, reason);
        } else {
            printf("removed %s from the suppression list\n", addr);
        }
        free(addr);
    } else if (strcmp(cmd, "ips") == 0) {
        kilnctl_print_ips(data);
    } else if (strcmp(cmd, "ip.warmup") == 0) {
        char cap[64];
        printf("%s: warm-up %lld%% (%s), daily cap %s\n", o->words[2],
               (long long)json_integer_value(json_object_get(data, "WarmupPercentage")),
               json_string_value(json_object_get(data, "WarmupStatus"))
                   ? json_string_value(json_object_get(data, "WarmupStatus"))
                   : "?",
               kilnctl_table_cell(data, "DailyCap", true, cap, sizeof cap));
    } else if (strcmp(cmd, "zone.down") == 0) {
        printf("zone %s is down: its IPs open no new session; open ones finish and QUIT\n",
               o->words[2]);
    } else if (strcmp(cmd, "zone.up") == 0) {
        printf("zone %s is up: its IPs are back in rotation\n", o->words[2]);
    } else if (strcmp(cmd, "queue") == 0) {
        kilnctl_print_queue(data);
    } else if (strcmp(cmd, "stats") == 0) {
        kilnctl_print_stats(data);
    } else if (strcmp(cmd, "reputation") == 0) {
        kilnctl_reputation_print(data);
    } else if (strcmp(cmd, "forecast") == 0) {
        kilnctl_forecast_print(data);
    } else if (strcmp(cmd, "cluster.status") == 0) {
        kilnctl_cluster_print(data);
    } else if (strcmp(cmd, "queue.explain") == 0) {
        kilnctl_print_explain(data);
    } else if (strncmp(cmd, "identity.", 9) == 0 || strcmp(cmd, "ip.check") == 0) {
        const char *text = json_string_value(json_object_get(data, "Text"));
        if (text) fputs(text, stdout);
    } else if (strcmp(cmd, "reload") == 0) {
        puts("reloaded");
        size_t i;
        json_t *w;
        json_t *warnings = json_object_get(data, "warnings");
        json_array_foreach(warnings, i, w)
            printf("warning: %s\n", json_string_value(w) ? json_string_value(w) : "");
    }
}

int main(int argc, char **argv)
{
    options o;
    kilnctl_parse_args(argc, argv, &o);
    if (strcmp(o.words[0], "passwd") == 0) {   /* local: no socket, no config */
        if (o.nwords > 1) kilnctl_usage_fail("unexpected argument: %s", o.words[1]);
        if (o.json || o.reason || o.percent || o.domain || o.explain || o.selector || o.ed25519 ||
            o.set || o.days)
            kilnctl_usage_fail("passwd takes no options");
        return kilnctl_passwd_run();
    }
    const char *cmd;
    json_t *req = kilnctl_build_request(&o, &cmd);
    char *path = kilnctl_find_socket(&o, cmd);
    if (!path) {
        json_decref(req);
        return EXIT_USAGE;
    }
    int status;
    json_t *ans = kilnctl_exchange(path, req, &status);
    json_decref(req);
    free(path);
    if (!ans) return status;

    if (!json_is_true(json_object_get(ans, "ok"))) {
        const char *e = json_string_value(json_object_get(ans, "error"));
        kilnctl_fail(EXIT_REFUSED, "%s", e ? e : "kilnd refused the request");
        json_decref(ans);
        return EXIT_REFUSED;
    }
    json_t *empty = json_object();
    json_t *data = json_object_get(ans, "data");
    if (!json_is_object(data)) data = empty;
    if (o.json) {
        if (strncmp(cmd, "identity.", 9) == 0 || strcmp(cmd, "ip.check") == 0)
            json_object_del(data, "Text");   /* the table's */
        size_t flags = JSON_INDENT(2) | JSON_PRESERVE_ORDER;
        if (strcmp(cmd, "reputation") == 0)   /* rates as 0.1, not 0.10000000000000001 */
            flags |= JSON_REAL_PRECISION(12);
        char *out = json_dumps(data, flags);
        if (!out) util_fatal("kilnctl: cannot encode the answer");
        puts(out);
        free(out);
    } else {
        kilnctl_print_human(cmd, &o, data);
    }
    json_decref(empty);
    json_decref(ans);
    if (fflush(stdout) != 0)
        return kilnctl_fail(EXIT_REFUSED, "cannot write the output: %s", strerror(errno));
    return 0;
}
