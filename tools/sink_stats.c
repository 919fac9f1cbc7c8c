/* sink_stats.c — kiln-sink's statistics: counters per client IP (a hash table; with the
 * highest number of concurrent connections seen) and per listener, and the JSON object
 * (jansson) written on SIGUSR1, every --stats-interval and at exit — to --stats-file via a
 * temporary file and rename(2), so a reader never sees half of it, or as one line on
 * stdout. The format is described at the top of kiln-sink.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "tools/sink.h"

static const char *const fault_names[F_COUNT] = {
    "defer", "reject", "throttle", "disconnect", "delay", "random_defer", "random_reject",
    "random_disconnect", "delay_data", "too_many_connections", "random_delay", "random_throttle",
};

static unsigned sink_hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h % SINK_CLIENT_BUCKETS;
}

sink_client *sink_client_get(sink *sk, const char *ip)
{
    unsigned h = sink_hash(ip);
    for (sink_client *c = sk->clients[h]; c; c = c->next)
        if (strcmp(c->ip, ip) == 0) return c;
    sink_client *c = util_calloc(1, sizeof *c);
    snprintf(c->ip, sizeof c->ip, "%s", ip);
    c->next = sk->clients[h];
    sk->clients[h] = c;
    return c;
}

void sink_count_add(sink_counts *n, uint64_t msgs, uint64_t rcpts, uint64_t bytes)
{
    n->messages += msgs;
    n->recipients += rcpts;
    n->bytes += bytes;
}

static json_t *sink_counts_json(const sink_counts *n)
{
    return json_pack("{s:I, s:I, s:I, s:I}", "connections", (json_int_t)n->connections,
                     "messages", (json_int_t)n->messages, "recipients",
                     (json_int_t)n->recipients, "bytes", (json_int_t)n->bytes);
}

static json_t *sink_stats_json(sink *sk)
{
    json_t *root = json_object();
    json_object_set_new(root, "messages", json_integer((json_int_t)sk->total.messages));
    json_object_set_new(root, "recipients", json_integer((json_int_t)sk->total.recipients));
    json_object_set_new(root, "connections", json_integer((json_int_t)sk->total.connections));
    json_object_set_new(root, "bytes", json_integer((json_int_t)sk->total.bytes));
    json_object_set_new(root, "current_connections", json_integer(sk->nsessions));
    json_object_set_new(root, "uptime_s",
                        json_real((double)(util_mono_ms() - sk->started_ms) / 1000.0));
    json_t *by_client = json_object(), *maxc = json_object();
    for (size_t h = 0; h < SINK_CLIENT_BUCKETS; h++) {
        for (sink_client *c = sk->clients[h]; c; c = c->next) {
            json_t *o = sink_counts_json(&c->n);
            json_object_set_new(o, "rejected_connections",
                                json_integer((json_int_t)c->rejected_connections));
            json_object_set_new(by_client, c->ip, o);
            json_object_set_new(maxc, c->ip, json_integer(c->max_concurrent));
        }
    }
    json_object_set_new(root, "by_client", by_client);
    json_t *by_listener = json_object();
    for (size_t i = 0; i < sk->acceptor.n; i++)
        json_object_set_new(by_listener, sk->acceptor.v[i].name,
                            sink_counts_json(&sk->by_listener[i]));
    json_object_set_new(root, "by_listener", by_listener);
    json_t *faults = json_object();
    for (int f = 0; f < F_COUNT; f++)
        json_object_set_new(faults, fault_names[f], json_integer((json_int_t)sk->faults[f]));
    json_object_set_new(root, "faults", faults);
    json_object_set_new(root, "max_concurrent_by_client", maxc);
    return root;
}

/* Writes the stats: to --stats-file through a temporary file and rename(2), else to stdout. */
void sink_stats_write(sink *sk)
{
    json_t *root = sink_stats_json(sk);
    char *text = json_dumps(root, JSON_SORT_KEYS | JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(root);
    if (!text) util_fatal("kiln-sink: cannot encode the stats as JSON");
    if (!sk->o.stats_file) {
        fputs(text, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        free(text);
        return;
    }
    char *tmp = util_asprintf("%s.tmp.%ld", sk->o.stats_file, (long)getpid());
    FILE *fp = fopen(tmp, "w");
    bool ok = fp != NULL;
    if (ok) {
        ok = fputs(text, fp) >= 0 && fputc('\n', fp) != EOF;
        ok = (fclose(fp) == 0) && ok;
    }
    if (ok && rename(tmp, sk->o.stats_file) != 0) ok = false;
    if (!ok) {
        log_write(sk->log, KLOG_ERROR, "sink.stats", "file=%s error=%s",
                  log_q(sk->log, sk->o.stats_file), log_q(sk->log, strerror(errno)));
        unlink(tmp);
    }
    free(tmp);
    free(text);
}
