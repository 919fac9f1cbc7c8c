"""soakdns.py — a tiny authoritative DNS server for the soak run (tests/soak/soak.py) whose
MX and A answers change while kilnd runs: dnsmasq re-reads hosts files on SIGHUP but not its
--mx-host records, hence this hand-written server on dnspython (Debian python3-dnspython).

It answers UDP queries on 127.0.0.1:port from a table it can swap at any time (set_zone):
MX, A and nothing else; names under the zone's suffix that it does not know get NXDOMAIN,
known names without the asked type an empty NOERROR. Answers carry a short TTL so kilnd's
cache follows the changes. One thread, ended by stop(); every receive has a timeout."""
import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class ChangingDns:
    def __init__(self, suffix, ttl=3):
        self.suffix = suffix.rstrip(".").lower() + "."
        self.ttl = ttl
        self.lock = threading.Lock()
        self.mx = {}      # "d0.soak.test." -> [(pref, "mx-a.soak.test."), ...]
        self.a = {}       # "mx-a.soak.test." -> ["127.0.0.21", ...]
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="soak-dns", daemon=True)

    def set_zone(self, mx, a):
        """Replaces every answer at once: mx {domain: [(pref, host)]}, a {host: [ip]}."""
        norm = lambda n: n.rstrip(".").lower() + "."
        with self.lock:
            self.mx = {norm(d): [(p, norm(h)) for p, h in v] for d, v in mx.items()}
            self.a = {norm(h): list(v) for h, v in a.items()}

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()

    def _answer(self, query):
        resp = dns.message.make_response(query)
        resp.flags |= dns.flags.AA
        if len(query.question) != 1:
            resp.set_rcode(dns.rcode.FORMERR)
            return resp
        q = query.question[0]
        name = q.name.to_text().lower()
        with self.lock:
            mx, a = self.mx.get(name), self.a.get(name)
        if mx is None and a is None:
            if name.endswith(self.suffix):
                resp.set_rcode(dns.rcode.NXDOMAIN)
            else:
                resp.set_rcode(dns.rcode.REFUSED)
            return resp
        if q.rdtype == dns.rdatatype.MX and mx:
            resp.answer.append(dns.rrset.from_text_list(
                q.name, self.ttl, dns.rdataclass.IN, dns.rdatatype.MX,
                ["%d %s" % (p, h) for p, h in mx]))
        elif q.rdtype == dns.rdatatype.A and a:
            resp.answer.append(dns.rrset.from_text_list(
                q.name, self.ttl, dns.rdataclass.IN, dns.rdatatype.A, a))
        return resp

    def _serve(self):
        while not self.stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:    # not DNS: nothing to answer
                continue
            self.queries += 1
            try:
                self.sock.sendto(self._answer(query).to_wire(), peer)
            except OSError:
                pass
