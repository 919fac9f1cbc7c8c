/* replay.c — runs a fuzz target without libFuzzer (gcc, under ASan/UBSan in `make check`):
 * every file of the target's seed corpus, then a bounded number of deterministic
 * mutations of them (byte flips, inserts, deletes, splices, CRLF/NUL/dot injections).
 * Coverage-guided fuzzing proper is `make fuzz` (clang's libFuzzer); this keeps every
 * target and its corpus exercised on every CI run. Hand-written: a few lines of mutation
 * are simpler than a dependency, and gcc has no libFuzzer. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifndef FUZZ_CORPUS_DIR
#error FUZZ_CORPUS_DIR must name the seed corpus directory
#endif
#define REPLAY_MUTATIONS 20000
#ifndef REPLAY_MAX_INPUT
#define REPLAY_MAX_INPUT 8192   /* a target may raise it (the config target: whole config files) */
#endif

typedef struct replay_input {
    uint8_t *data;
    size_t size;
} replay_input;

static uint64_t replay_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static int replay_load(const char *dir, replay_input **out, size_t *n)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "replay: cannot open corpus %s\n", dir);
        return -1;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        uint8_t *buf = malloc(REPLAY_MAX_INPUT);
        if (!buf) abort();
        size_t len = fread(buf, 1, REPLAY_MAX_INPUT, f);
        fclose(f);
        *out = realloc(*out, (*n + 1) * sizeof **out);
        if (!*out) abort();
        (*out)[*n].data = buf;
        (*out)[*n].size = len;
        (*n)++;
    }
    closedir(d);
    return 0;
}

int main(void)
{
    replay_input *in = NULL;
    size_t n = 0;
    if (replay_load(FUZZ_CORPUS_DIR, &in, &n) != 0 || n == 0) {
        fprintf(stderr, "replay: empty corpus %s\n", FUZZ_CORPUS_DIR);
        return 1;
    }
    for (size_t i = 0; i < n; i++) LLVMFuzzerTestOneInput(in[i].data, in[i].size);
    static const char *const tokens[] = {"\r\n", "\n", "\r", ".", "\r\n.\r\n", "\n.\n", "\0",
                                         "<", ">", ":", "@", "\"", "(", ")", ",", ";", " ",
                                         "\t", "=", "\\", "MAIL FROM:<", "RCPT TO:<", "SIZE=",
                                         "From: ", "\r\n ", "\xff", "[", "]", "{", "}",
                                         "- ", "&a ", "*a", "#"};
    uint64_t seed = 0x6b696c6e2d66757aULL;
    uint8_t *buf = malloc(REPLAY_MAX_INPUT * 2 + 64);
    if (!buf) abort();
    for (int r = 0; r < REPLAY_MUTATIONS; r++) {
        const replay_input *base = &in[replay_next(&seed) % n];
        size_t len = base->size;
        memcpy(buf, base->data, len);
        int edits = 1 + (int)(replay_next(&seed) % 8);
        for (int k = 0; k < edits; k++) {
            uint64_t x = replay_next(&seed);
            size_t pos = len ? (size_t)(x >> 8) % (len + 1) : 0;
            switch (x % 5) {
            case 0: /* flip a byte */
                if (len) buf[pos % len] ^= (uint8_t)(1u << ((x >> 4) % 8));
                break;
            case 1: { /* insert a token */
                const char *t = tokens[(x >> 16) % (sizeof tokens / sizeof *tokens)];
                size_t tl = *t ? strlen(t) : 1;
                if (len + tl > REPLAY_MAX_INPUT * 2) break;
                memmove(buf + pos + tl, buf + pos, len - pos);
                memcpy(buf + pos, t, tl);
                len += tl;
                break;
            }
            case 2: { /* delete a run */
                size_t del = (size_t)((x >> 20) % 16);
                if (pos + del > len) del = len - pos;
                memmove(buf + pos, buf + pos + del, len - pos - del);
                len -= del;
                break;
            }
            case 3: { /* splice from another input */
                const replay_input *o = &in[(x >> 24) % n];
                size_t take = o->size ? (size_t)((x >> 32) % (o->size + 1)) : 0;
                if (pos + take > REPLAY_MAX_INPUT * 2) break;
                memcpy(buf + pos, o->data, take);
                if (pos + take > len) len = pos + take;
                break;
            }
            default: /* repeat a byte many times (long lines) */
                if (len && len + 600 <= REPLAY_MAX_INPUT * 2) {
                    memmove(buf + pos + 600, buf + pos, len - pos);
                    memset(buf + pos, len ? buf[pos % len] : 'a', 600);
                    len += 600;
                }
                break;
            }
        }
        uint8_t *copy = malloc(len ? len : 1);   /* exact size, so ASan sees overreads */
        if (!copy) abort();
        memcpy(copy, buf, len);
        LLVMFuzzerTestOneInput(copy, len);
        free(copy);
    }
    printf("replay: %zu corpus inputs and %d mutations of %s: no crash\n", n, REPLAY_MUTATIONS,
           FUZZ_CORPUS_DIR);
    free(buf);
    for (size_t i = 0; i < n; i++) free(in[i].data);
    free(in);
    return 0;
}
