#!/usr/bin/python3
"""make_dns_corpus.py — writes the seed corpus of fuzz_dns (tests/fuzz/corpus/dns/): real DNS
answers built with dnspython (Debian python3-dnspython), each file one lookup as fuzz_dns.c
reads it: the answer to the MX query, then the A and AAAA answers of each exchanger in
delivery order, each with a 2-byte big-endian length as on DNS over TCP.
Run: /usr/bin/python3 tests/fuzz/make_dns_corpus.py tests/fuzz/corpus/dns"""
import os
import struct
import sys

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

D = "example.test."


def resp(name, t, answers=(), rcode=dns.rcode.NOERROR, authority=(), additional=()):
    m = dns.message.make_response(dns.message.make_query(name, t, use_edns=False))
    m.flags |= dns.flags.RA
    m.set_rcode(rcode)
    for r in answers:
        m.answer.append(r)
    for r in authority:
        m.authority.append(r)
    for r in additional:
        m.additional.append(r)
    return m.to_wire()


def rr(name, ttl, t, *data):
    return dns.rrset.from_text(name, ttl, "IN", t, *data)


def pack(*msgs):
    return b"".join(struct.pack(">H", len(m)) + m for m in msgs)


SOA = rr(D, 300, "SOA", "ns1.example.test. hostmaster.example.test. 2023120401 3600 600 86400 300")
GSOA = rr("google.com.", 60, "SOA", "ns1.google.com. dns-admin.google.com. 1 900 900 1800 60")
G = "gmail-smtp-in.l.google.com."

SEEDS = {
    "gmail_like": pack(
        resp(D, "MX", [rr(D, 3600, "MX", "5 " + G, "10 alt1." + G, "20 alt2." + G, "30 alt3." + G,
                          "40 alt4." + G)]),
        resp(G, "A", [rr(G, 293, "A", "142.250.102.27")]),
        resp(G, "AAAA", [rr(G, 293, "AAAA", "2a00:1450:4013:c00::1b")]),
        resp("alt1." + G, "A", [rr("alt1." + G, 120, "A", "142.250.153.26")]),
        resp("alt1." + G, "AAAA", [], authority=[GSOA])),
    "one_mx": pack(
        resp(D, "MX", [rr(D, 300, "MX", "10 mx1.example.test.")]),
        resp("mx1.example.test.", "A", [rr("mx1.example.test.", 300, "A", "127.0.0.21")]),
        resp("mx1.example.test.", "AAAA", [], authority=[SOA])),
    "null_mx": pack(resp(D, "MX", [rr(D, 300, "MX", "0 .")])),
    "nxdomain": pack(resp(D, "MX", [], rcode=dns.rcode.NXDOMAIN, authority=[SOA])),
    "servfail": pack(resp(D, "MX", [], rcode=dns.rcode.SERVFAIL)),
    "implicit_mx": pack(
        resp(D, "MX", [], authority=[SOA]),
        resp(D, "A", [rr(D, 60, "A", "127.0.0.21", "127.0.0.22")]),
        resp(D, "AAAA", [rr(D, 90, "AAAA", "::1")])),
    "dup_and_dot": pack(
        resp(D, "MX", [rr(D, 600, "MX", "20 MX1.Example.Test.", "10 mx1.example.test.", "30 .",
                          "40 mx2.example.test.")]),
        resp("mx1.example.test.", "A", [rr("mx1.example.test.", 30, "A", "127.0.0.21")]),
        resp("mx1.example.test.", "AAAA", [], rcode=dns.rcode.SERVFAIL),
        resp("mx2.example.test.", "A", [], rcode=dns.rcode.NXDOMAIN, authority=[SOA]),
        resp("mx2.example.test.", "AAAA", [], authority=[SOA])),
    "cname_mx": pack(
        resp(D, "MX", [rr(D, 300, "CNAME", "mail.other.test."),
                       rr("mail.other.test.", 200, "MX", "10 mx.other.test.")],
             additional=[rr("mx.other.test.", 100, "A", "127.0.0.30")]),
        resp("mx.other.test.", "A", [rr("mx.other.test.", 100, "CNAME", "real.other.test."),
                                     rr("real.other.test.", 50, "A", "127.0.0.31")]),
        resp("mx.other.test.", "AAAA", [rr("mx.other.test.", 100, "AAAA", "2001:db8::25")])),
    "many_addrs": pack(
        resp(D, "MX", [rr(D, 300, "MX", "10 big.example.test.")]),
        resp("big.example.test.", "A",
             [rr("big.example.test.", 300, "A", *["127.0.1.%d" % i for i in range(1, 41)])]),
        resp("big.example.test.", "AAAA",
             [rr("big.example.test.", 300, "AAAA", *["2001:db8::%x" % i for i in range(1, 6)])])),
    "cname_only": pack(
        resp(D, "MX", [rr(D, 300, "CNAME", "elsewhere.test.")]),
        resp(D, "A", [rr(D, 300, "CNAME", "elsewhere.test."), rr("elsewhere.test.", 300, "A", "127.0.0.40")])),
    "short_and_timeout": pack(b"\x12\x34\x81\x80\x00\x01",
                              resp(D, "MX", [rr(D, 300, "MX", "10 mx1.example.test.")])),
}

if __name__ == "__main__":
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
