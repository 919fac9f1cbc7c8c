/* kilnctl_passwd.h — `kilnctl passwd`: prints a crypt(3) yescrypt hash for
 * submission.auth[].password_hash. Needs no running kilnd and no config file. */
#ifndef KILN_KILNCTL_PASSWD_H
#define KILN_KILNCTL_PASSWD_H

/* Reads the password (a prompt on the terminal without echo, asked twice; else one line of
 * stdin), refuses an empty one, prints its "$y$..." hash and a newline on stdout.
 * Returns the exit status: 0 done, 2 no usable password (empty, mismatch, too long, read
 * error; the reason is on stderr), 1 libcrypt could not make a hash. */
int kilnctl_passwd_run(void);

#endif
