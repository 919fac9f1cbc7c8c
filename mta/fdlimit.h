/* fdlimit.h — the daemon's descriptor limit (issue item 8): at start kilnd raises its soft
 * RLIMIT_NOFILE to the hard limit, as Postfix's master and OpenSMTPD's smtpd do, so that
 * the session caps derived from it (mta/smtp_limits.h) are as large as the system allows. */
#ifndef KILN_FDLIMIT_H
#define KILN_FDLIMIT_H

#include <stdint.h>

/* Raises the soft RLIMIT_NOFILE to the hard one (an unlimited hard limit: to the kernel's
 * fs.nr_open). *before and *after get the soft limit before and after. 0, or -1 with *err
 * (malloc'd) saying why it could not be raised; the limit is then left as it was. */
int fdlimit_raise(int64_t *before, int64_t *after, char **err);

#endif
