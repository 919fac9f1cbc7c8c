/* fuzz_config.c — fuzz target for the config loader: the input is the YAML text of a config
 * file, loaded with config_load_text() (the same YAML walker, sections, cross-checks, defaults
 * and warnings as config_load() on a file; nothing is written, so no temporary file can be
 * left behind), relative paths resolving against a fixed absolute directory. A config that
 * loads then goes through what kilnd and kilnctl do with one: the --check-config summary, the
 * file warnings, the lookups by set, pool and route, the trusted-network check, and a
 * reference taken and dropped.
 * Checks, whatever the bytes: a load either gives a config or an error that names the file,
 * never both or neither; everything is freed (ASan's leak check at exit).
 * Password hashes are checked for shape only (hash_usable NULL): kilnd hands in libcrypt's
 * check, whose cost is the hash's own (a "$6$rounds=999999999$" hash is meant to be slow),
 * not something the loader decides.
 * Built as a libFuzzer target by `make fuzz` (clang) and as a corpus + mutation replay in
 * `make check` (gcc). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CONFIG_NAME "fuzz.yaml"
#define FUZZ_CONFIG_DIR "/var/lib/kiln-fuzz-config"   /* only resolved against, never read */

static void fuzz_config_fail(const char *what, const char *err)
{
    fprintf(stderr, "fuzz_config: %s%s%s\n", what, err ? ": " : "", err ? err : "");
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *err = NULL;
    config *c = config_load_text((const char *)data, size, FUZZ_CONFIG_NAME, FUZZ_CONFIG_DIR,
                                 NULL, &err);
    if (!c) {
        if (!err) fuzz_config_fail("a failed load without an error", NULL);
        if (strncmp(err, FUZZ_CONFIG_NAME ":", strlen(FUZZ_CONFIG_NAME) + 1) != 0)
            fuzz_config_fail("an error that does not start with the file name", err);
        free(err);
        return 0;
    }
    if (err) fuzz_config_fail("a loaded config with an error", err);

    char *summary = config_summary(c);
    if (!summary) fuzz_config_fail("no summary", NULL);
    free(summary);
    size_t nw = 0;
    char **w = config_file_warnings(c, &nw);
    config_file_warnings_free(w, nw);

    if (!c->spool || c->spool[0] != '/') fuzz_config_fail("spool not absolute", c->spool);
    if (!c->control_socket || c->control_socket[0] != '/')
        fuzz_config_fail("control socket not absolute", c->control_socket);
    if (c->nlisten == 0) fuzz_config_fail("no listener", NULL);
    for (size_t i = 0; i < c->nsets; i++) {
        if (config_find_set(c, c->sets[i].name) == NULL)
            fuzz_config_fail("a set not found by its name", c->sets[i].name);
        if (config_find_pool(c, c->sets[i].pool) == NULL)
            fuzz_config_fail("a set's pool does not exist", c->sets[i].pool);
    }
    if (c->nsets && (!c->default_set || !config_find_set(c, c->default_set)))
        fuzz_config_fail("default configuration set missing", c->default_set);
    for (size_t i = 0; i < c->nips; i++)
        if (config_find_pool(c, c->ips[i].pool) == NULL)
            fuzz_config_fail("an IP's pool does not exist", c->ips[i].pool);
    for (size_t i = 0; i < c->nroutes; i++)
        if (config_find_route(c, c->routes[i].domain) == NULL)
            fuzz_config_fail("a route not found by its domain", c->routes[i].domain);
    (void)config_is_trusted(c, "127.0.0.1");
    (void)config_is_trusted(c, "::1");
    (void)config_is_trusted(c, "192.0.2.1");

    config *ref = config_ref(c);
    config_unref(ref);
    config_unref(c);
    return 0;
}
