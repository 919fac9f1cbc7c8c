/* kilnctl_passwd.c — `kilnctl passwd`: reads a password and prints its crypt(3) hash in
 * yescrypt ("$y$", libcrypt's default cost) for submission.auth[].password_hash, so an
 * operator needs neither Python's deprecated crypt module nor mkpasswd (package whois).
 *
 * Promises: the hash printed is one kilnd accepts (auth_hash_usable checks it before it is
 * printed); the password is never echoed or printed and is wiped from memory once hashed;
 * an empty password is refused. On a terminal the prompt goes to stderr with echo off and
 * the password is asked twice (both must match); otherwise one line of stdin is the
 * password (its "\n", and a "\r" before it, removed).
 *
 * Why not getpass(3): it is obsolete and leaves the terminal without echo when ^C ends the
 * prompt. Here SIGINT, SIGTERM, SIGHUP and SIGQUIT are blocked while the prompt waits and
 * read from a signalfd; one of them restores the terminal first, then is unblocked to take
 * its default action. The salt comes from libcrypt (crypt_gensalt_rn with no random bytes
 * given: it reads the OS's random source itself). */
#include "mta/kilnctl_passwd.h"

#include <crypt.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include "base/util.h"
#include "mta/auth.h"

/* The longest password taken, in bytes (libcrypt's own limit is CRYPT_MAX_PASSPHRASE_SIZE). */
#define KILNCTL_PASSWD_MAX 512

enum { KILNCTL_PASSWD_OK = 0, KILNCTL_PASSWD_FAILED = 1, KILNCTL_PASSWD_BAD = 2 };

static int kilnctl_passwd_fail(int status, const char *msg)
{
    fprintf(stderr, "kilnctl passwd: %s\n", msg);
    return status;
}

/* Removes a trailing "\n" and a "\r" before it. */
static void kilnctl_passwd_chomp(char *s)
{
    size_t n = strlen(s);
    if (n > 0 && s[n - 1] == '\n') s[--n] = '\0';
    if (n > 0 && s[n - 1] == '\r') s[--n] = '\0';
}

/* One line of stdin (not a terminal) into buf: 0, or an exit status after the message. */
static int kilnctl_passwd_read_stdin(char *buf, size_t size)
{
    if (!fgets(buf, (int)size, stdin)) {
        if (ferror(stdin)) return kilnctl_passwd_fail(KILNCTL_PASSWD_BAD, "cannot read stdin");
        buf[0] = '\0';
        return 0;
    }
    size_t n = strlen(buf);
    if (n == size - 1 && buf[n - 1] != '\n' && !feof(stdin))
        return kilnctl_passwd_fail(KILNCTL_PASSWD_BAD, "password longer than 512 bytes");
    kilnctl_passwd_chomp(buf);
    return 0;
}

/* Reads one line from the terminal fd (canonical mode: poll says readable once a whole line
 * was entered) while watching sfd for a signal. 0 and the line in buf; 1 a signal came
 * (its number in *signo); -1 read error, end of input or a line too long (errno). */
static int kilnctl_passwd_tty_line(int fd, int sfd, char *buf, size_t size, int *signo)
{
    size_t n = 0;
    for (;;) {
        struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (p[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                *signo = (int)si.ssi_signo;
                return 1;
            }
        }
        if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            errno = r == 0 ? EPIPE : errno;
            return -1;
        }
        if (c == '\n') {
            buf[n] = '\0';
            kilnctl_passwd_chomp(buf);
            return 0;
        }
        if (n + 1 >= size) {
            errno = EMSGSIZE;
            return -1;
        }
        buf[n++] = c;
    }
}

/* Prompts on stderr with echo off, twice; 0 and the password in buf, or an exit status. */
static int kilnctl_passwd_read_tty(char *buf, size_t size)
{
    int fd = STDIN_FILENO;
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGQUIT);
    if (sigprocmask(SIG_BLOCK, &set, &old) != 0)
        return kilnctl_passwd_fail(KILNCTL_PASSWD_BAD, "cannot block signals");
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    struct termios saved, quiet;
    if (sfd < 0 || tcgetattr(fd, &saved) != 0) {
        if (sfd >= 0) close(sfd);
        sigprocmask(SIG_SETMASK, &old, NULL);
        return kilnctl_passwd_fail(KILNCTL_PASSWD_BAD, "cannot set up the terminal prompt");
    }
    quiet = saved;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    quiet.c_lflag |= ICANON;
    tcsetattr(fd, TCSAFLUSH, &quiet);

    char again[KILNCTL_PASSWD_MAX + 2];
    int signo = 0, rc = 0, status = KILNCTL_PASSWD_OK;
    fputs("Password: ", stderr);
    fflush(stderr);
    rc = kilnctl_passwd_tty_line(fd, sfd, buf, size, &signo);
    fputs("\n", stderr);
    if (rc == 0 && buf[0] != '\0') {
        fputs("Again: ", stderr);
        fflush(stderr);
        rc = kilnctl_passwd_tty_line(fd, sfd, again, sizeof again, &signo);
        fputs("\n", stderr);
        if (rc == 0 && strcmp(buf, again) != 0)
            status = kilnctl_passwd_fail(KILNCTL_PASSWD_BAD, "the two passwords differ");
    }
    OPENSSL_cleanse(again, sizeof again);
    tcsetattr(fd, TCSAFLUSH, &saved);
    close(sfd);
    if (rc == 1) {
        /* the terminal is back: let the signal take its default action now */
        OPENSSL_cleanse(buf, size);
        sigprocmask(SIG_SETMASK, &old, NULL);
        raise(signo);
        return kilnctl_passwd_fail(KILNCTL_PASSWD_BAD, "interrupted");
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (rc < 0)
        return kilnctl_passwd_fail(KILNCTL_PASSWD_BAD, errno == EMSGSIZE
                                                           ? "password longer than 512 bytes"
                                                           : "cannot read the password");
    return status;
}

int kilnctl_passwd_run(void)
{
    char pass[KILNCTL_PASSWD_MAX + 2];
    pass[0] = '\0';
    int status = isatty(STDIN_FILENO) ? kilnctl_passwd_read_tty(pass, sizeof pass)
                                      : kilnctl_passwd_read_stdin(pass, sizeof pass);
    if (status == 0 && pass[0] == '\0')
        status = kilnctl_passwd_fail(KILNCTL_PASSWD_BAD, "refusing an empty password");
    if (status != 0) {
        OPENSSL_cleanse(pass, sizeof pass);
        return status;
    }

    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data *data = util_calloc(1, sizeof *data);
    const char *hash = NULL;
    if (crypt_gensalt_rn("$y$", 0, NULL, 0, salt, (int)sizeof salt))
        hash = crypt_r(pass, salt, data);
    OPENSSL_cleanse(pass, sizeof pass);
    if (!hash || hash[0] != '$' || !auth_hash_usable(hash)) {
        OPENSSL_cleanse(data, sizeof *data);
        free(data);
        return kilnctl_passwd_fail(KILNCTL_PASSWD_FAILED, "libcrypt could not make a yescrypt hash");
    }
    printf("%s\n", hash);
    OPENSSL_cleanse(data, sizeof *data);
    free(data);
    if (fflush(stdout) != 0)
        return kilnctl_passwd_fail(KILNCTL_PASSWD_FAILED, "cannot write the hash");
    return KILNCTL_PASSWD_OK;
}
