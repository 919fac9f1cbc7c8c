/* ipcheck.h — is a dedicated IP's reverse DNS what mailbox providers require (kilnctl ip
 * check)? The PTR of the address the world sees (an IP's public_address behind NAT, else
 * the address kiln binds), the A (IPv4) or AAAA (IPv6) records of the EHLO name the IP
 * uses, and of every other name the PTR gives, looked up at once on kiln's resolver
 * (mta/dns.h, the config's dns.servers); then three verdicts, each with its own problem
 * text: the PTR exists, the PTR name is the EHLO name, the EHLO name's A/AAAA records
 * include the address; and forward-confirmed reverse DNS (FCrDNS: a PTR name whose A/AAAA
 * records include the address).
 *
 * Promises: every started check calls back exactly once, from the loop (never inside
 * ipchecker_start), also when the checker is freed first (then with an error); a temporary
 * DNS failure is reported as one ("try again"), never as a missing record. DNS names from
 * answers are shown with every byte outside printable ASCII replaced by '?'. The verdict,
 * JSON and text halves are pure (unit-tested on results built by hand). */
#ifndef KILN_IPCHECK_H
#define KILN_IPCHECK_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "mta/dns.h"

#define IPCHECK_MAX_PTR_NAMES 4   /* PTR names whose A/AAAA records are looked up */

typedef struct ipcheck_req {
    const char *public_ip;   /* the address the world sees (public_address, else address) */
    const char *bind_ip;     /* the address kiln binds (equal to public_ip without NAT) */
    const char *ehlo;        /* the EHLO name the IP uses */
    const char *ehlo_from;   /* where that name is set: "ips[0].ehlo", "server.hostname" */
} ipcheck_req;

typedef enum {
    IPCHECK_ANS_OK = 0,      /* records of the type */
    IPCHECK_ANS_NONE,        /* NXDOMAIN, or the name has no records of the type */
    IPCHECK_ANS_TEMPFAIL,    /* SERVFAIL, timeout, unreadable answer: error says why */
} ipcheck_ans;

/* The A/AAAA records of one name. */
typedef struct ipcheck_fwd {
    char *name;
    ipcheck_ans ans;
    char *error;             /* when TEMPFAIL */
    char **addrs;
    size_t naddrs;
} ipcheck_fwd;

typedef struct ipcheck_result {
    char *public_ip, *bind_ip, *ehlo, *ehlo_from;
    char *reverse_name;      /* e.g. 10.2.0.192.in-addr.arpa */
    int family;              /* AF_INET or AF_INET6: A or AAAA records are asked */
    ipcheck_ans ptr_ans;
    char *ptr_error;
    char **ptr;              /* the PTR names, as published (no final dot) */
    size_t nptr;
    ipcheck_fwd *fwd;        /* [0]: the EHLO name; then PTR names that differ from it */
    size_t nfwd;
    /* ipcheck_evaluate */
    bool ptr_matches_ehlo;   /* a PTR name is the EHLO name (case-insensitive) */
    bool ehlo_has_ip;        /* the EHLO name's A/AAAA records include the address */
    bool forward_confirmed;  /* a PTR name's A/AAAA records include the address */
    bool ready;              /* all three */
    bool tempfail;           /* a lookup failed for now: the verdicts may change */
    char **problems;
    size_t nproblems;
} ipcheck_result;

/* ---- pure ---- */
/* A result for req with nothing looked up yet (fwd[0] is the EHLO name, not answered); NULL
 * if req->public_ip is not an IP literal. */
ipcheck_result *ipcheck_result_new(const ipcheck_req *req);
void ipcheck_result_free(ipcheck_result *r);
/* Adds a PTR name (a final dot dropped, unprintable bytes become '?'; one already there,
 * in any case, is not added again). */
void ipcheck_add_ptr(ipcheck_result *r, const char *name);
/* The forward entry of name (the EHLO name's is [0]), added if new; its index. */
size_t ipcheck_fwd_of(ipcheck_result *r, const char *name);
void ipcheck_fwd_add_addr(ipcheck_fwd *f, const char *addr);
/* Sets the verdicts and the problems from what the result holds. */
void ipcheck_evaluate(ipcheck_result *r);
/* {Ip, BindAddress, EhloName, EhloFrom, ReverseName, Ptr, PtrMatchesEhlo, ForwardType,
 * ForwardAddresses, EhloResolvesToIp, ForwardConfirmed, PtrForward: [{Name, Addresses}],
 * Ready, TemporaryFailure, Problems}: a new reference. */
json_t *ipcheck_to_json(const ipcheck_result *r);
/* kilnctl's table and verdict, malloc'd. */
char *ipcheck_to_text(const ipcheck_result *r);

/* ---- on the loop ---- */
/* The check's outcome: r (the callee frees it), or NULL and error. */
typedef void (*ipcheck_cb)(void *arg, ipcheck_result *r, const char *error);
typedef struct ipchecker ipchecker;
ipchecker *ipchecker_new(dns *d);
/* Calls every running check back with an error, cancels their lookups, frees. */
void ipchecker_free(ipchecker *k);
/* Starts the lookups of req. -1 (cb never runs) if req->public_ip is not an IP literal. */
int ipchecker_start(ipchecker *k, const ipcheck_req *req, ipcheck_cb cb, void *arg);

#endif
