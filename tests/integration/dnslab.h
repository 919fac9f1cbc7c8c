/* dnslab.h — a dnsmasq child serving a test's zone on a free 127.0.0.1 UDP port, and a
 * silent UDP server (queries to it time out), for the C integration tests that run kiln's
 * resolver against real DNS (test_dns, test_identity_check). The child dies with the test
 * process (PR_SET_PDEATHSIG) and is ended by its PID. */
#ifndef KILN_TESTS_DNSLAB_H
#define KILN_TESTS_DNSLAB_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define DNSLAB_DNSMASQ "/usr/sbin/dnsmasq"

typedef struct dnslab {
    pid_t pid;
    int port;
} dnslab;

/* A free UDP port on 127.0.0.1 (bind to 0, read it back). */
int dnslab_free_udp_port(void);
/* A bound UDP socket that never answers; *port gets its port. */
int dnslab_silent_server(int *port);
/* True if something answers a DNS query on 127.0.0.1:port within wait_ms. */
bool dnslab_probe(int port, int wait_ms);
/* Starts dnsmasq with the zone arguments (--mx-host=..., up to 48) and waits (5 s at most,
 * 5 ports tried) until it answers. False if it never did. */
bool dnslab_start(dnslab *dm, const char *const *zone, size_t nzone);
void dnslab_stop(dnslab *dm);

#endif
