/* sink_args.c — kiln-sink's command line: the usage text and strict option parsing into
 * sink_opts (every number must be the whole option text and within its range). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/sink.h"

enum {
    OPT_HOSTNAME = 256, OPT_STATS_FILE, OPT_STATS_INTERVAL, OPT_TLS_CERT, OPT_TLS_KEY,
    OPT_MAX_SIZE, OPT_TIMEOUT, OPT_RANDOM_DEFER, OPT_RANDOM_REJECT, OPT_RANDOM_DISCONNECT,
    OPT_SEED, OPT_DELAY_DATA, OPT_MAX_CONN, OPT_RANDOM_DELAY, OPT_RANDOM_DELAY_MS, OPT_RECORD,
    OPT_RECORD_HEADER, OPT_RANDOM_THROTTLE,
};

void sink_usage(FILE *fp)
{
    fputs(
        "usage: kiln-sink -l HOST:PORT [-l HOST:PORT ...] [options]\n"
        "A fast SMTP sink: accepts and discards mail, counts per client IP, injects faults.\n"
        "\n"
        "  -l, --listen HOST:PORT        listen here (IPv4 or [IPv6]:PORT); repeatable\n"
        "      --hostname NAME           name in the greeting and EHLO (sink.kiln.test)\n"
        "      --stats-file FILE         write the JSON stats here (temp file + rename);\n"
        "                                default: one JSON line on stdout\n"
        "      --stats-interval S        also write the stats every S seconds\n"
        "      --tls-cert FILE           PEM certificate chain: offer STARTTLS\n"
        "      --tls-key FILE            PEM private key for --tls-cert\n"
        "      --max-message-size N      SIZE advertised and enforced (bytes; 0 = no\n"
        "                                limit; default 52428800)\n"
        "      --timeout S               idle session timeout in seconds (300)\n"
        "      --record FILE             append one line per accepted message:\n"
        "                                \"<unix ms> <client ip> <recipients> <value>\"\n"
        "      --record-header NAME      the header --record writes (Message-ID)\n"
        "  -v, --verbose                 log every session on stderr\n"
        "  -h, --help                    this text\n"
        "\n"
        "Faults by recipient local part (case-insensitive prefix):\n"
        "  defer...      451 4.3.0 Temporary failure (kiln-sink)\n"
        "  reject...     550 5.1.1 Mailbox unknown (kiln-sink)\n"
        "  throttle...   421 4.7.0 Too many messages, slow down (kiln-sink), then close\n"
        "  disconnect... close the connection without a reply\n"
        "  delay<N>...   reply 250 to the RCPT after N milliseconds\n"
        "Faults by option:\n"
        "      --random-defer P          P percent of RCPTs get the defer reply\n"
        "      --random-reject P         P percent of RCPTs get the reject reply\n"
        "      --random-disconnect P     P percent of RCPTs drop the connection\n"
        "      --random-throttle P       P percent of RCPTs get the throttle reply (421),\n"
        "                                then the connection is closed\n"
        "      --random-delay P          P percent of RCPTs get their 250 after a random\n"
        "                                delay of 0..--random-delay-ms ms (1000)\n"
        "      --seed N                  seed of the random faults (repeatable runs)\n"
        "      --delay-data MS           delay the reply to the final \".\" by MS ms\n"
        "      --max-connections-per-client N\n"
        "                                more connections from one IP get\n"
        "                                421 4.7.0 Too many connections from your IP\n"
        "\n"
        "Signals: SIGUSR1 writes the stats; SIGTERM/SIGINT write them and exit 0.\n",
        fp);
}

/* Returns 0, or 2 after printing why the command line is wrong. */
int sink_parse_args(int argc, char **argv, sink_opts *o, bool *help)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"hostname", required_argument, NULL, OPT_HOSTNAME},
        {"stats-file", required_argument, NULL, OPT_STATS_FILE},
        {"stats-interval", required_argument, NULL, OPT_STATS_INTERVAL},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"max-message-size", required_argument, NULL, OPT_MAX_SIZE},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"random-defer", required_argument, NULL, OPT_RANDOM_DEFER},
        {"random-reject", required_argument, NULL, OPT_RANDOM_REJECT},
        {"random-disconnect", required_argument, NULL, OPT_RANDOM_DISCONNECT},
        {"random-throttle", required_argument, NULL, OPT_RANDOM_THROTTLE},
        {"seed", required_argument, NULL, OPT_SEED},
        {"delay-data", required_argument, NULL, OPT_DELAY_DATA},
        {"max-connections-per-client", required_argument, NULL, OPT_MAX_CONN},
        {"random-delay", required_argument, NULL, OPT_RANDOM_DELAY},
        {"random-delay-ms", required_argument, NULL, OPT_RANDOM_DELAY_MS},
        {"record", required_argument, NULL, OPT_RECORD},
        {"record-header", required_argument, NULL, OPT_RECORD_HEADER},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    o->hostname = "sink.kiln.test";
    o->max_size = SINK_DEFAULT_MAX_SIZE;
    o->timeout = 300;
    o->random_delay_ms = 1000;
    o->record_header = "Message-ID";
    int ch;
    long long ll;
    while ((ch = getopt_long(argc, argv, "l:vh", longopts, NULL)) != -1) {
        const char *bad = NULL;
        switch (ch) {
        case 'l':
            o->listen = util_realloc(o->listen, (o->nlisten + 1) * sizeof *o->listen);
            o->listen[o->nlisten++] = optarg;
            break;
        case OPT_HOSTNAME: o->hostname = optarg; break;
        case OPT_STATS_FILE: o->stats_file = optarg; break;
        case OPT_STATS_INTERVAL:
            if (!util_parse_double(optarg, 0.001, 86400, &o->stats_interval))
                bad = "--stats-interval wants seconds > 0";
            break;
        case OPT_TLS_CERT: o->tls_cert = optarg; break;
        case OPT_TLS_KEY: o->tls_key = optarg; break;
        case OPT_MAX_SIZE:
            if (!util_parse_ll(optarg, 0, (long long)1 << 40, &o->max_size))
                bad = "--max-message-size wants a byte count >= 0";
            break;
        case OPT_TIMEOUT:
            if (!util_parse_double(optarg, 0.01, 86400, &o->timeout))
                bad = "--timeout wants seconds > 0";
            break;
        case OPT_RANDOM_DEFER:
            if (!util_parse_double(optarg, 0, 100, &o->random_defer))
                bad = "--random-defer wants 0..100";
            break;
        case OPT_RANDOM_REJECT:
            if (!util_parse_double(optarg, 0, 100, &o->random_reject))
                bad = "--random-reject wants 0..100";
            break;
        case OPT_RANDOM_DISCONNECT:
            if (!util_parse_double(optarg, 0, 100, &o->random_disconnect))
                bad = "--random-disconnect wants 0..100";
            break;
        case OPT_RANDOM_THROTTLE:
            if (!util_parse_double(optarg, 0, 100, &o->random_throttle))
                bad = "--random-throttle wants 0..100";
            break;
        case OPT_SEED:
            if (!util_parse_ll(optarg, 0, INT64_MAX, &ll)) bad = "--seed wants an integer >= 0";
            o->seed = (unsigned long long)ll;
            o->seeded = true;
            break;
        case OPT_DELAY_DATA:
            if (!util_parse_ll(optarg, 0, 3600000, &ll)) bad = "--delay-data wants milliseconds";
            o->delay_data_ms = (long)ll;
            break;
        case OPT_MAX_CONN:
            if (!util_parse_ll(optarg, 1, 1000000, &ll))
                bad = "--max-connections-per-client wants a count >= 1";
            o->max_conn_per_client = (int)ll;
            break;
        case OPT_RANDOM_DELAY:
            if (!util_parse_double(optarg, 0, 100, &o->random_delay))
                bad = "--random-delay wants 0..100";
            break;
        case OPT_RANDOM_DELAY_MS:
            if (!util_parse_ll(optarg, 0, 3600000, &ll)) bad = "--random-delay-ms wants milliseconds";
            o->random_delay_ms = (long)ll;
            break;
        case OPT_RECORD: o->record_file = optarg; break;
        case OPT_RECORD_HEADER:
            o->record_header = optarg;
            if (!*optarg || strpbrk(optarg, ": \t\r\n"))
                bad = "--record-header wants a header field name";
            break;
        case 'v': o->verbose = true; break;
        case 'h': *help = true; return 0;
        default:
            sink_usage(stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "kiln-sink: %s (got '%s')\n", bad, optarg);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kiln-sink: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (o->nlisten == 0) {
        fprintf(stderr, "kiln-sink: give at least one -l HOST:PORT\n");
        sink_usage(stderr);
        return 2;
    }
    if (!o->tls_cert != !o->tls_key) {
        fprintf(stderr, "kiln-sink: --tls-cert and --tls-key go together\n");
        return 2;
    }
    return 0;
}
