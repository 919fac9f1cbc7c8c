/* kilnd.c — the daemon's entry point: argument parsing, --check-config, then the
 * daemon life cycle of daemon.c in the foreground (as systemd expects). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "mta/auth.h"
#include "mta/daemon.h"

static void kilnd_usage(FILE *fp)
{
    fputs("usage: kilnd [-c FILE] [--check-config]\n"
          "  -c FILE          configuration file (default conf/kiln.yaml)\n"
          "  --check-config   validate FILE, print a summary, exit non-zero on error\n"
          "  --version        print the version\n",
          fp);
}

int main(int argc, char **argv)
{
    const char *path = "conf/kiln.yaml";
    int check_only = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "kilnd: %s needs a file name\n", argv[i]);
                return 2;
            }
            path = argv[++i];
        } else if (strcmp(argv[i], "--check-config") == 0) {
            check_only = 1;
        } else if (strcmp(argv[i], "--version") == 0) {
            puts("kilnd " PACKAGE_VERSION);
            return 0;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            kilnd_usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "kilnd: unknown argument '%s'\n", argv[i]);
            kilnd_usage(stderr);
            return 2;
        }
    }
    char *err = NULL;
    if (check_only) {
        config *cfg = config_load(path, auth_hash_usable, &err);
        if (!cfg) {
            fprintf(stderr, "kilnd: %s\n", err);
            free(err);
            return 1;
        }
        char *summary = config_summary(cfg);
        fputs(summary, stdout);
        free(summary);
        size_t nw = 0;
        char **w = config_file_warnings(cfg, &nw);
        for (size_t i = 0; i < nw; i++) printf("warning: %s\n", w[i]);
        config_file_warnings_free(w, nw);
        config_unref(cfg);
        return 0;
    }
    kiln_ctx *ctx = daemon_create(path, &err);
    if (!ctx) {
        fprintf(stderr, "kilnd: %s\n", err ? err : "start-up failed");
        free(err);
        return 1;
    }
    int status = daemon_run(ctx);
    daemon_destroy(ctx);
    return status;
}
