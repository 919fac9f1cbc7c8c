/* bench_dkim.c — what DKIM signing costs per message (mta/dkim.h): dkim_sign with an RSA 2048
 * key (rsa-sha256), an Ed25519 key (ed25519-sha256) and both (dual-signing), on a 4 KB and
 * a 64 KB message (text lines with blanks to compress, so the relaxed canonicalization does
 * its usual work). Each case runs for --seconds (default 2) after a short warm-up, on one
 * thread, and prints messages/s (wall clock) and microseconds of CPU per message (the
 * thread's CPU clock: steadier than the wall clock on a busy machine); --json prints the
 * same as a JSON array. Run on a build without sanitizers: `make bench`, or
 *   tests/bench/bench_dkim [--seconds S] [--json] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/util.h"
#include "mta/dkim.h"

static double bench_dkim_clock(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A message of about size bytes: the usual header fields, then 76-column text lines. */
static char *bench_dkim_message(size_t size, size_t *len)
{
    strbuf sb;
    strbuf_init(&sb);
    strbuf_puts(&sb, "From: News <news@example.com>\r\nTo: reader@example.net\r\n"
                     "Subject: The weekly letter, with a subject of a usual length\r\n"
                     "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                     "Message-ID: <20240101000000.abcdef@example.com>\r\n"
                     "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Transfer-Encoding: 8bit\r\n"
                     "List-Unsubscribe: <https://example.com/u/0123456789abcdef>\r\n"
                     "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n");
    const char *line = "Lorem ipsum dolor sit amet,  consectetur adipiscing elit, sed do  eiusmod \r\n";
    while (sb.len + strlen(line) <= size) strbuf_puts(&sb, line);
    *len = sb.len;
    return strbuf_steal(&sb);
}

typedef struct bench_dkim_result {
    const char *alg;
    size_t size;
    long n;
    double seconds;      /* wall clock */
    double cpu;          /* this thread's CPU time */
} bench_dkim_result;

static bench_dkim_result bench_dkim_run(const char *name, const dkim_signer *sg, size_t nsg,
                                        const char *msg, size_t len, double seconds)
{
    char *err = NULL;
    for (int i = 0; i < 20; i++) {   /* warm-up */
        char *s = dkim_sign(sg, nsg, msg, len, 1700000000, &err);
        if (!s) util_fatal("bench_dkim: %s", err);
        free(s);
    }
    long n = 0;
    double t0 = bench_dkim_clock(CLOCK_MONOTONIC), t = t0;
    double c0 = bench_dkim_clock(CLOCK_THREAD_CPUTIME_ID);
    while (t - t0 < seconds) {
        for (int i = 0; i < 10; i++) {
            char *s = dkim_sign(sg, nsg, msg, len, 1700000000, &err);
            if (!s) util_fatal("bench_dkim: %s", err);
            free(s);
        }
        n += 10;
        t = bench_dkim_clock(CLOCK_MONOTONIC);
    }
    double cpu = bench_dkim_clock(CLOCK_THREAD_CPUTIME_ID) - c0;
    return (bench_dkim_result){name, len, n, t - t0, cpu};
}

int main(int argc, char **argv)
{
    double seconds = 2;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) json = true;
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc &&
                 util_parse_double(argv[i + 1], 0.01, 3600, &seconds)) i++;
        else {
            fprintf(stderr, "usage: bench_dkim [--seconds S] [--json]\n");
            return 2;
        }
    }
    char *err = NULL;
    dkim_key *rsa = dkim_key_generate(DKIM_ALG_RSA_SHA256, &err);
    dkim_key *ed = dkim_key_generate(DKIM_ALG_ED25519_SHA256, &err);
    if (!rsa || !ed) util_fatal("bench_dkim: %s", err);
    dkim_signer both[2] = {{"example.com", "rsa1", rsa}, {"example.com", "ed1", ed}};

    bench_dkim_result r[6];
    size_t nr = 0;
    const size_t sizes[2] = {4096, 65536};
    for (size_t s = 0; s < 2; s++) {
        size_t len = 0;
        char *msg = bench_dkim_message(sizes[s], &len);
        r[nr++] = bench_dkim_run("rsa-sha256 (2048)", &both[0], 1, msg, len, seconds);
        r[nr++] = bench_dkim_run("ed25519-sha256", &both[1], 1, msg, len, seconds);
        r[nr++] = bench_dkim_run("rsa + ed25519", both, 2, msg, len, seconds);
        free(msg);
    }
    if (json) printf("[");
    else printf("%-20s %8s %12s %16s\n", "signers", "bytes", "messages/s", "CPU us/message");
    for (size_t i = 0; i < nr; i++) {
        double per_s = (double)r[i].n / r[i].seconds, us = 1e6 * r[i].cpu / (double)r[i].n;
        if (json)
            printf("%s{\"signers\": \"%s\", \"bytes\": %zu, \"messages_per_s\": %.0f, "
                   "\"cpu_us_per_message\": %.1f}", i ? ", " : "", r[i].alg, r[i].size, per_s, us);
        else
            printf("%-20s %8zu %12.0f %16.1f\n", r[i].alg, r[i].size, per_s, us);
    }
    if (json) printf("]\n");
    dkim_key_free(rsa);
    dkim_key_free(ed);
    return 0;
}
