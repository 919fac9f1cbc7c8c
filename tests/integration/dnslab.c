/* dnslab.c — dnsmasq and a silent server for the C DNS integration tests (see dnslab.h). */
#include "tests/integration/dnslab.h"

#include <arpa/inet.h>
#include <ares.h>
#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int dnslab_bound_udp(int flags, int *port)
{
    int fd = socket(AF_INET, SOCK_DGRAM | flags, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

int dnslab_free_udp_port(void)
{
    int port;
    close(dnslab_bound_udp(0, &port));
    return port;
}

int dnslab_silent_server(int *port)
{
    return dnslab_bound_udp(SOCK_NONBLOCK, port);
}

bool dnslab_probe(int port, int wait_ms)
{
    unsigned char *q = NULL;
    int qlen = 0;
    if (ares_create_query("probe.test", 1, 1, 0x4242, 1, &q, &qlen, 0) != ARES_SUCCESS) return false;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = false;
    if (fd >= 0 && sendto(fd, q, (size_t)qlen, 0, (struct sockaddr *)&sa, sizeof sa) == qlen) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        unsigned char buf[512];
        if (poll(&p, 1, wait_ms) == 1 && recv(fd, buf, sizeof buf, 0) >= 12) ok = true;
    }
    if (fd >= 0) close(fd);
    ares_free_string(q);
    return ok;
}

bool dnslab_start(dnslab *dm, const char *const *zone, size_t nzone)
{
    ck_assert_uint_le(nzone, 48);
    for (int attempt = 0; attempt < 5; attempt++) {
        int port = dnslab_free_udp_port();
        char portarg[32];
        snprintf(portarg, sizeof portarg, "--port=%d", port);
        const char *argv[64];
        int argc = 0;
        argv[argc++] = DNSLAB_DNSMASQ;
        argv[argc++] = "--no-daemon";
        argv[argc++] = "--no-resolv";
        argv[argc++] = "--no-hosts";
        argv[argc++] = "--conf-file=/dev/null";
        argv[argc++] = "--pid-file";
        argv[argc++] = portarg;
        argv[argc++] = "--listen-address=127.0.0.1";
        argv[argc++] = "--bind-interfaces";
        for (size_t i = 0; i < nzone; i++) argv[argc++] = zone[i];
        argv[argc] = NULL;
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGTERM);   /* never outlive the test process */
            int null = open("/dev/null", O_RDWR);
            dup2(null, 1);
            dup2(null, 2);
            execv(DNSLAB_DNSMASQ, (char *const *)argv);
            _exit(127);
        }
        for (int i = 0; i < 50; i++) {          /* up to 5 s */
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) break;   /* died: port taken? try another */
            if (dnslab_probe(port, 100)) {
                dm->pid = pid;
                dm->port = port;
                return true;
            }
        }
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
    return false;
}

void dnslab_stop(dnslab *dm)
{
    if (dm->pid <= 0) return;
    kill(dm->pid, SIGTERM);
    int st;
    ck_assert_int_eq(waitpid(dm->pid, &st, 0), dm->pid);
    dm->pid = 0;
}
