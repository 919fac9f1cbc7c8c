/* fuzz_session.c — fuzz target for the whole submission session as one stream: the input
 * is what a client sends, written into one end of a socketpair whose other end is served
 * by the real smtp_server (smtp_server_serve_fd: the same session, command parser, AUTH,
 * DATA reader, header checks, policy and acceptance into a real SQLite spool as kilnd
 * runs), on a private libev loop, with the spool flushed once per loop pass as the daemon
 * does. It checks what must hold whatever the bytes: no crash, leak or undefined
 * behaviour (ASan/UBSan), the session ends, and every byte of the in-flight budget comes
 * back when it has (smtp_server_inflight() == 0).
 * Built as a libFuzzer target by `make fuzz` (clang) and as a corpus + mutation replay in
 * `make check` (gcc). The config is small on purpose (64KB messages, a 1MB budget) so
 * that the limits are reachable from short inputs.
 *
 * Built with FUZZ_SESSION_FEEDBACK (tests/fuzz/fuzz_fbsession.c), the same harness drives
 * the feedback listener instead (smtp_server_start_feedback: RCPT only to kiln's bounce and
 * feedback addresses, reports committed to the feedback inbox and then parsed, matched and
 * applied by mta/feedback_apply.c), with a 64KB report cap. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "base/config.h"
#include "base/kiln.h"
#include "base/log.h"
#include "base/util.h"
#include "mta/feedback.h"
#include "mta/quota.h"
#include "mta/smtp_server.h"
#include "store/spool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_SESSION_PASSES 2000     /* loop passes per input before it counts as a hang */

static const char fuzz_session_yaml[] =
    "server: {hostname: mta.fuzz.test, spool: ./spool, log: /dev/null, log_level: error}\n"
    "submission:\n"
    "  trusted_networks: [127.0.0.0/8]\n"
    "  max_message_size: 64KB\n"
    "  max_inflight_bytes: 1MB\n"
    "  max_recipients: 5\n"
    "  auth:                 # password: secret\n"
    "    - {user: app, password_hash: \"$6$fuzzsalt$iDTMfLlIWXnU0u/ucN8Rvel1jyy/OslJpB.sv1b7aqQg/Na4Y9B47sFqgSiQ4wv/4SbFVVCnHAGIJVpklv8Rc.\"}\n"
    "account: {mode: sandbox, max_24h_send: -1, max_send_rate: -1,\n"
    "          identities: [example.test], verified_recipients: [demo.test]}\n"
    "zones: [az1]\n"
    "ips: [{address: 127.0.0.10, zone: az1, pool: p}]\n"
    "pools: [{name: p}]\n"
    "configuration_sets: [{name: txn, pool: p}, {name: other, pool: p}]\n"
    "default_configuration_set: txn\n"
#ifdef FUZZ_SESSION_FEEDBACK
    "feedback: {listen: [\"127.0.0.1:1\"], bounce_domain: bounce.fuzz.test,\n"
    "           addresses: [fbl@fuzz.test], secret_file: feedback.key, max_message_size: 64KB}\n"
#endif
    ;
typedef struct fuzz_session_env {
    kiln_ctx ctx;
    smtp_server *srv;
    feedback *fb;               /* FUZZ_SESSION_FEEDBACK only */
    char dir[64];
} fuzz_session_env;

/* The one environment of this process (a libFuzzer target keeps its state between inputs). */
static fuzz_session_env fuzz_session_the_env;

static int fuzz_session_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* At exit: the server, the spool and the scratch directory go. */
static void fuzz_session_cleanup(void)
{
    fuzz_session_env *env = &fuzz_session_the_env;
    smtp_server_free(env->srv);
    spool_flush(env->ctx.spool);
    feedback_free(env->fb);
    spool_close(env->ctx.spool);
    quota_free(env->ctx.quota);
    log_close(env->ctx.log);
    config_unref(env->ctx.cfg);
    ev_loop_destroy(env->ctx.loop);
    nftw(env->dir, fuzz_session_rm, 8, FTW_DEPTH | FTW_PHYS);
}

static int64_t fuzz_session_clock(void *arg);

static fuzz_session_env *fuzz_session_env_get(void)
{
    fuzz_session_env *envp = &fuzz_session_the_env;
    static int ready;
    if (ready) return envp;
    snprintf(envp->dir, sizeof envp->dir, "/tmp/kiln-fuzz-session-XXXXXX");
    if (!mkdtemp(envp->dir)) abort();
    char *path = util_asprintf("%s/kiln.yaml", envp->dir);
    FILE *f = fopen(path, "w");
    if (!f || fputs(fuzz_session_yaml, f) < 0 || fclose(f) != 0) abort();
#ifdef FUZZ_SESSION_FEEDBACK
    char *key = util_asprintf("%s/feedback.key", envp->dir);
    f = fopen(key, "w");
    if (!f || fputs("fuzz-feedback-secret-0123456789\n", f) < 0 || fclose(f) != 0 ||
        chmod(key, 0600) != 0)
        abort();
    free(key);
#endif
    char *err = NULL;
    kiln_ctx *ctx = &envp->ctx;
    ctx->clock = fuzz_session_clock;
    ctx->cfg = config_load(path, NULL, &err);
    if (!ctx->cfg) {
        fprintf(stderr, "fuzz_session: %s\n", err);
        abort();
    }
    free(path);
    char *spool_dir = util_asprintf("%s/spool", envp->dir);
    if (mkdir(spool_dir, 0700) != 0) abort();
    ctx->loop = ev_loop_new(EVFLAG_AUTO);
    ctx->log = log_open("/dev/null", KLOG_ERROR, &err);
    ctx->spool = spool_open(spool_dir, false, &err);
    if (!ctx->log || !ctx->spool) {
        fprintf(stderr, "fuzz_session: %s\n", err);
        abort();
    }
    free(spool_dir);
    ctx->quota = quota_new(-1, -1, util_wall_ms());
#ifdef FUZZ_SESSION_FEEDBACK
    envp->fb = feedback_new(ctx);
    envp->srv = envp->fb ? smtp_server_start_feedback(ctx, envp->fb, false, &err) : NULL;
#else
    envp->srv = smtp_server_start_detached(ctx, &err);
#endif
    if (!envp->srv) {
        fprintf(stderr, "fuzz_session: %s\n", err);
        abort();
    }
    ctx->server = envp->srv;
    /* A failed AUTH's 535 would wait a second per input; the delay is a timer, the paths
     * around it are the same with 0. The password check still runs on the worker pool. */
    smtp_server_set_auth_fail_delay(envp->srv, 0);
    atexit(fuzz_session_cleanup);
    ready = 1;
    return envp;
}

static int64_t fuzz_session_clock(void *arg)
{
    (void)arg;
    return util_wall_ms();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_session_env *env = fuzz_session_env_get();
    kiln_ctx *ctx = &env->ctx;
    ctx->clock = fuzz_session_clock;
    /* One input in four (by its length) runs with a 4KB budget, below what the config
     * allows, so that the over-budget paths (452 at DATA, 452 at the end of a message) are
     * reached by short inputs; the others with the configured 1MB. */
    ctx->cfg->max_inflight_bytes = size % 4 == 3 ? 4096 : 1024 * 1024;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) abort();
    int buf = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    smtp_server_serve_fd(env->srv, sv[0], "127.0.0.1", true);

    size_t off = 0;
    bool half_closed = false;
    char sink[65536];
    int pass = 0;
    for (; pass < FUZZ_SESSION_PASSES && smtp_server_sessions(env->srv) > 0; pass++) {
        if (off < size) {
            ssize_t w = send(sv[1], data + off, size - off, MSG_NOSIGNAL);
            if (w > 0) off += (size_t)w;
        }
        if (off == size && !half_closed) {
            shutdown(sv[1], SHUT_WR);       /* EOF after the input, as a client that leaves */
            half_closed = true;
        }
        ev_run(ctx->loop, EVRUN_NOWAIT);
        if (spool_has_pending(ctx->spool)) spool_flush(ctx->spool);
        while (recv(sv[1], sink, sizeof sink, 0) > 0) {
        }
    }
    close(sv[1]);
    /* A session still open here is waiting on something the input cannot provide (the
     * client side is closed) or on a password check on the AUTH worker pool: run until its
     * close is noticed, at most about 2 s (1 ms naps). */
    for (int k = 0; k < 2000 && smtp_server_sessions(env->srv) > 0; k++) {
        ev_run(ctx->loop, EVRUN_NOWAIT);
        if (spool_has_pending(ctx->spool)) spool_flush(ctx->spool);
        if (smtp_server_sessions(env->srv) > 0) {
            struct timespec nap = {0, 1000 * 1000};
            nanosleep(&nap, NULL);
        }
    }
    if (smtp_server_sessions(env->srv) != 0) {
        fprintf(stderr, "fuzz_session: the session did not end after %d passes\n", pass);
        abort();
    }
    if (smtp_server_inflight(env->srv) != 0) {
        fprintf(stderr, "fuzz_session: %lld in-flight bytes left after the session\n",
                (long long)smtp_server_inflight(env->srv));
        abort();
    }
    return 0;
}
