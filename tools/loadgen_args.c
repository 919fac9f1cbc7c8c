/* loadgen_args.c — kiln-loadgen's command line: the usage text, strict option parsing into
 * lg_opts (whole-text numbers within their ranges, address and pattern syntax), and the
 * resolution of -s HOST:PORT and --bind into socket addresses. */
#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/smtp_parse.h"
#include "tools/loadgen.h"

void loadgen_usage(FILE *fp)
{
    fputs(
        "usage: kiln-loadgen -s HOST:PORT -n N -c M [options]\n"
        "Injects N messages over M parallel SMTP connections and reports the results.\n"
        "\n"
        "  -s, --server HOST:PORT     SMTP server ([IPv6]:PORT for IPv6)\n"
        "  -n, --messages N           messages to send (default 1000)\n"
        "  -c, --connections M        parallel connections (default 10)\n"
        "      --size BYTES           message size, headers included (default 1024)\n"
        "      --rcpts-per-msg R      recipients per message (default 1)\n"
        "      --domains D            spread recipients over D domains (default 1)\n"
        "      --domain-pattern P     recipient domain; %d becomes 0..D-1 (default d%d.test)\n"
        "      --local-part L         recipient local part; %d becomes the recipient\n"
        "                             number (default user%d)\n"
        "      --from ADDR            envelope and From: sender (loadgen@example.test)\n"
        "      --set NAME             add X-SES-CONFIGURATION-SET: NAME\n"
        "      --rate R               at most R messages per second in total\n"
        "      --tls                  STARTTLS on every connection (no verification)\n"
        "      --json                 print the report as JSON\n"
        "      --token-prefix P       X-Loadgen-Token: P-<n> (default loadgen)\n"
        "      --timeout S            seconds to wait for a reply, write or connect (30)\n"
        "      --bind IP              source address of the connections\n"
        "      --helo NAME            EHLO name (default loadgen.kiln.test)\n"
        "      --record FILE          append \"<unix ms> <token> <queue id>\" per accepted\n"
        "                             message (the id: last word of the final 250)\n"
        "  -h, --help                 this text\n"
        "When every rejection is an account rule (sandbox, 24-hour quota, sending rate,\n"
        "unverified sender, unknown set), the report's last line says which and what to do.\n"
        "Exit status 0 when the run finished (rejections included), 1 on bad usage or\n"
        "when no message got an answer from the server.\n",
        fp);
}

/* At most one "%d" and no other '%' (the patterns are substituted by hand, not printf). */
static bool loadgen_pattern_ok(const char *p)
{
    const char *d = strstr(p, "%d");
    for (const char *q = p; *q; q++)
        if (*q == '%' && q != d) return false;
    return *p != '\0';
}

enum {
    OPT_SIZE = 256, OPT_RCPTS, OPT_DOMAINS, OPT_DOMAIN_PATTERN, OPT_LOCAL_PART, OPT_FROM,
    OPT_SET, OPT_RATE, OPT_TLS, OPT_JSON, OPT_TOKEN, OPT_TIMEOUT, OPT_BIND, OPT_HELO,
    OPT_RECORD,
};

int loadgen_parse_args(int argc, char **argv, lg_opts *o, bool *help)
{
    static const struct option longopts[] = {
        {"server", required_argument, NULL, 's'},
        {"messages", required_argument, NULL, 'n'},
        {"connections", required_argument, NULL, 'c'},
        {"size", required_argument, NULL, OPT_SIZE},
        {"rcpts-per-msg", required_argument, NULL, OPT_RCPTS},
        {"domains", required_argument, NULL, OPT_DOMAINS},
        {"domain-pattern", required_argument, NULL, OPT_DOMAIN_PATTERN},
        {"local-part", required_argument, NULL, OPT_LOCAL_PART},
        {"from", required_argument, NULL, OPT_FROM},
        {"set", required_argument, NULL, OPT_SET},
        {"rate", required_argument, NULL, OPT_RATE},
        {"tls", no_argument, NULL, OPT_TLS},
        {"json", no_argument, NULL, OPT_JSON},
        {"token-prefix", required_argument, NULL, OPT_TOKEN},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"bind", required_argument, NULL, OPT_BIND},
        {"helo", required_argument, NULL, OPT_HELO},
        {"record", required_argument, NULL, OPT_RECORD},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    o->n = 1000;
    o->c = 10;
    o->size = 1024;
    o->rcpts = 1;
    o->domains = 1;
    o->domain_pattern = "d%d.test";
    o->local_part = "user%d";
    o->from = "loadgen@example.test";
    o->token_prefix = "loadgen";
    o->timeout = 30;
    o->helo = "loadgen.kiln.test";
    int ch;
    long long ll;
    while ((ch = getopt_long(argc, argv, "s:n:c:h", longopts, NULL)) != -1) {
        const char *bad = NULL;
        switch (ch) {
        case 's': o->server = optarg; break;
        case 'n':
            if (!util_parse_ll(optarg, 1, 100000000, &o->n)) bad = "-n wants 1..100000000";
            break;
        case 'c':
            if (!util_parse_ll(optarg, 1, 10000, &ll)) bad = "-c wants 1..10000";
            o->c = (int)ll;
            break;
        case OPT_SIZE:
            if (!util_parse_ll(optarg, 1, 1LL << 30, &o->size)) bad = "--size wants bytes >= 1";
            break;
        case OPT_RCPTS:
            if (!util_parse_ll(optarg, 1, 1000, &ll)) bad = "--rcpts-per-msg wants 1..1000";
            o->rcpts = (int)ll;
            break;
        case OPT_DOMAINS:
            if (!util_parse_ll(optarg, 1, 1000000, &ll)) bad = "--domains wants 1..1000000";
            o->domains = (int)ll;
            break;
        case OPT_DOMAIN_PATTERN:
            o->domain_pattern = optarg;
            if (!loadgen_pattern_ok(optarg)) bad = "--domain-pattern takes at most one %d and no other %";
            break;
        case OPT_LOCAL_PART:
            o->local_part = optarg;
            if (!loadgen_pattern_ok(optarg)) bad = "--local-part takes at most one %d and no other %";
            break;
        case OPT_FROM:
            o->from = optarg;
            if (!smtp_addr_valid(optarg)) bad = "--from wants an address local@domain";
            break;
        case OPT_SET:
            o->set = optarg;
            if (!*optarg || strpbrk(optarg, "\r\n")) bad = "--set wants a configuration set name";
            break;
        case OPT_RATE:
            if (!util_parse_double(optarg, 0.001, 1e7, &o->rate)) bad = "--rate wants messages/s > 0";
            break;
        case OPT_TLS: o->tls = true; break;
        case OPT_JSON: o->json = true; break;
        case OPT_TOKEN:
            o->token_prefix = optarg;
            if (!*optarg || strpbrk(optarg, "\r\n <>@")) bad = "--token-prefix wants a word";
            break;
        case OPT_TIMEOUT:
            if (!util_parse_double(optarg, 0.01, 86400, &o->timeout))
                bad = "--timeout wants seconds > 0";
            break;
        case OPT_BIND: o->bind = optarg; break;
        case OPT_HELO:
            o->helo = optarg;
            if (!smtp_helo_valid(optarg)) bad = "--helo wants a host name";
            break;
        case OPT_RECORD: o->record = optarg; break;
        case 'h': *help = true; return 0;
        default:
            loadgen_usage(stderr);
            return 1;
        }
        if (bad) {
            fprintf(stderr, "kiln-loadgen: %s (got '%s')\n", bad, optarg);
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kiln-loadgen: unexpected argument '%s'\n", argv[optind]);
        return 1;
    }
    if (!o->server) {
        fprintf(stderr, "kiln-loadgen: -s HOST:PORT is required\n");
        loadgen_usage(stderr);
        return 1;
    }
    return 0;
}

/* Resolves -s and --bind into socket addresses. */
int loadgen_resolve(loadgen *lg)
{
    const char *spec = lg->o.server;
    const char *h = spec, *colon;
    size_t hl;
    if (spec[0] == '[') {
        const char *rb = strchr(spec, ']');
        if (!rb || rb[1] != ':') goto bad;
        h = spec + 1;
        hl = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(spec, ':');
        if (!colon) goto bad;
        hl = (size_t)(colon - spec);
    }
    if (hl == 0 || hl >= sizeof lg->host || !colon[1]) goto bad;
    memcpy(lg->host, h, hl);
    lg->host[hl] = '\0';
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int gai = getaddrinfo(lg->host, colon + 1, &hints, &res);
    if (gai != 0) {
        fprintf(stderr, "kiln-loadgen: -s %s: %s\n", spec, gai_strerror(gai));
        return -1;
    }
    memcpy(&lg->addr, res->ai_addr, res->ai_addrlen);
    lg->addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    if (lg->o.bind) {
        hints.ai_family = lg->addr.ss_family;
        hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE | AI_NUMERICSERV;
        gai = getaddrinfo(lg->o.bind, "0", &hints, &res);
        if (gai != 0) {
            fprintf(stderr, "kiln-loadgen: --bind %s: %s\n", lg->o.bind, gai_strerror(gai));
            return -1;
        }
        memcpy(&lg->bind_addr, res->ai_addr, res->ai_addrlen);
        lg->bind_len = res->ai_addrlen;
        freeaddrinfo(res);
    }
    return 0;
bad:
    fprintf(stderr, "kiln-loadgen: -s wants HOST:PORT or [IPV6]:PORT (got '%s')\n", spec);
    return -1;
}
