/* fdlimit.c — raising the soft descriptor limit to the hard one at start (see fdlimit.h).
 * Promise: never lowers a limit; failure leaves the limit as it was and says why. */
#include "mta/fdlimit.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "base/util.h"

/* The kernel's ceiling for RLIMIT_NOFILE (fs.nr_open), or 0 if unknown. */
static rlim_t fdlimit_nr_open(void)
{
    FILE *f = fopen("/proc/sys/fs/nr_open", "re");
    if (!f) return 0;
    unsigned long long v = 0;
    if (fscanf(f, "%llu", &v) != 1) v = 0;
    fclose(f);
    return (rlim_t)v;
}

int fdlimit_raise(int64_t *before, int64_t *after, char **err)
{
    struct rlimit rl;
    *err = NULL;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        *before = *after = -1;
        *err = util_asprintf("getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return -1;
    }
    *before = *after = rl.rlim_cur == RLIM_INFINITY ? INT64_MAX : (int64_t)rl.rlim_cur;
    rlim_t want = rl.rlim_max;
    if (want == RLIM_INFINITY) {
        rlim_t cap = fdlimit_nr_open();
        if (cap) want = cap;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= want) return 0;
    struct rlimit nl = {.rlim_cur = want, .rlim_max = rl.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &nl) != 0) {
        *err = util_asprintf("setrlimit(RLIMIT_NOFILE, %llu): %s", (unsigned long long)want,
                             strerror(errno));
        return -1;
    }
    *after = want == RLIM_INFINITY ? INT64_MAX : (int64_t)want;
    return 0;
}
