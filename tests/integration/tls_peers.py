"""tls_peers.py — peers for the outbound TLS tests (test_tls_policy.py): a test CA and
certificates made with the openssl CLI, a tiny authoritative DNS server (dnspython) that
answers from a fixed record table and sets the AD bit on the names it calls secure (dnsmasq
cannot set AD for its own records), and an HTTPS server for MTA-STS policies. Each runs in a
thread of the test process, on loopback only, and stops in bounded time."""
import http.server
import os
import socket
import ssl
import subprocess
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


def _openssl(*args, stdin=None):
    return subprocess.run(["openssl"] + list(args), input=stdin, check=True, capture_output=True,
                          timeout=60).stdout


class TestCA:
    """A CA certificate and key in directory d; issue() signs server certificates."""

    def __init__(self, d, name="kiln test CA"):
        self.d = d
        self.crt = os.path.join(d, "ca.crt")
        self.key = os.path.join(d, "ca.key")
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key, "-out",
                 self.crt, "-days", "2", "-subj", "/CN=" + name,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, label, names):
        """A certificate for the DNS names (SAN), signed by this CA: (crt, key)."""
        key = os.path.join(self.d, label + ".key")
        csr = os.path.join(self.d, label + ".csr")
        crt = os.path.join(self.d, label + ".crt")
        ext = os.path.join(self.d, label + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=" + ",".join("DNS:" + n for n in names) + "\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                 "-subj", "/CN=" + names[0])
        _openssl("x509", "-req", "-in", csr, "-CA", self.crt, "-CAkey", self.key,
                 "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext)
        return crt, key


def self_signed(d, label, name):
    crt = os.path.join(d, label + ".crt")
    key = os.path.join(d, label + ".key")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
             "-days", "2", "-subj", "/CN=" + name, "-addext", "subjectAltName=DNS:" + name)
    return crt, key


def spki_sha256(crt):
    """The TLSA 3 1 1 digest of a certificate: SHA-256 of its SubjectPublicKeyInfo."""
    pub = _openssl("x509", "-in", crt, "-pubkey", "-noout")
    der = _openssl("pkey", "-pubin", "-outform", "DER", stdin=pub)
    out = _openssl("dgst", "-sha256", "-hex", stdin=der).decode()
    return out.strip().split()[-1]


def server_context(crt, key, max_tls11=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if max_tls11:
        # a server that speaks TLS 1.0/1.1 only (OpenSSL 3 needs security level 0 for them)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.load_cert_chain(crt, key)
    return ctx


class AuthDns:
    """Answers UDP queries on 127.0.0.1:port from records [(name, type, text)]; names in
    `insecure` are answered without AD, every other answer (NXDOMAIN and NODATA included)
    with AD set, as a validating resolver does for a signed zone."""

    def __init__(self, records, insecure=()):
        self.table = {}
        for name, rtype, text in records:
            key = (name.lower().rstrip("."), rtype.upper())
            self.table.setdefault(key, []).append(text)
        self.names = {n for n, _ in self.table}
        self.insecure = {n.lower() for n in insecure}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries = []
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()

    def _answer(self, q):
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA
        question = q.question[0]
        name = question.name.to_text().lower().rstrip(".")
        rtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rtype, bool(q.flags & dns.flags.AD)))
        texts = self.table.get((name, rtype))
        if texts:
            r.answer.append(dns.rrset.from_text_list(question.name, 30, dns.rdataclass.IN,
                                                     question.rdtype, texts))
        elif name not in self.names:
            r.set_rcode(dns.rcode.NXDOMAIN)
        if name not in self.insecure:
            r.flags |= dns.flags.AD
        return r

    def _serve(self):
        while not self.stopping:
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                self.sock.sendto(self._answer(dns.message.from_wire(data)).to_wire(), peer)
            except Exception:   # a malformed query: no answer, as a real server may do
                continue


class PolicyServer:
    """HTTPS on 127.0.0.1: GET /.well-known/mta-sts.txt answers policies[Host] as text/plain
    (404 for other hosts); counts fetches per host."""

    def __init__(self, crt, key, policies):
        self.policies = policies
        self.fetches = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                host = (self.headers.get("Host") or "").split(":")[0]
                outer.fetches[host] = outer.fetches.get(host, 0) + 1
                body = outer.policies.get(host)
                if self.path != "/.well-known/mta-sts.txt" or body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = server_context(crt, key).wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
