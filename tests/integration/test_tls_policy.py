"""test_tls_policy.py — outbound TLS levels per configuration set (README "Outbound TLS")
against real peers on loopback: aiosmtpd sinks with STARTTLS (certificates from a test CA,
self-signed ones, and one that speaks only TLS 1.1), a tiny authoritative DNS server that
sets the AD bit (MX, A, TLSA, TXT), and an HTTPS server for MTA-STS policies.

Asserts what a user sees: which sink got the message and over TLS, and for every refused
peer a DeliveryDelay naming what failed while the sink got nothing (never clear text):
  verify   chain to delivery.tls_ca_file and the MX host name; a certificate for another
           name defers
  dane     a matching TLSA 3 1 1 record delivers to a self-signed certificate; a
           mismatching one defers; the same mismatch without AD is opportunistic
  mta-sts  an enforce policy fetched over HTTPS delivers to a listed MX with a verified
           certificate, and defers when the MX is not listed
  require  a TLS 1.1-only server is never used, even when the system OpenSSL
           configuration would allow TLS 1.1."""
import os
import re
import ssl
import tempfile
import unittest

from kilntest import Kiln, Sink, free_port, main, send, wait_for
from tls_peers import AuthDns, PolicyServer, TestCA, self_signed, server_context, spki_sha256

SETS = ("verify", "dane", "sts", "secure")


def mid_of(text):
    return re.match(r"^2\.0\.0 Ok (\S+)$", text).group(1)


def by_type(evs, mid, t):
    return [e for e in evs if e["mail"]["messageId"] == mid and e["eventType"] == t]


class TlsPolicy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-tls-")
        os.chmod(cls.tmp, 0o755)
        d = cls.tmp
        cls.ca = TestCA(d)
        good = cls.ca.issue("verify", ["mx.verify.test"])
        wrong = cls.ca.issue("wrong", ["other.example.test"])
        dane_crt = self_signed(d, "dane", "mx.dane.test")
        other_crt = self_signed(d, "other", "mx.danebad.test")
        sts_mx = cls.ca.issue("stsmx", ["mx.sts.test", "mx.stsbad.test"])
        web = cls.ca.issue("web", ["mta-sts.sts.test", "mta-sts.stsbad.test"])
        digest = spki_sha256(dane_crt[0])

        cls.port = free_port("127.0.0.61")
        plan = {   # sink address: its STARTTLS context
            "127.0.0.61": server_context(*good),
            "127.0.0.62": server_context(*wrong),
            "127.0.0.63": server_context(*dane_crt),
            "127.0.0.64": server_context(*other_crt),
            "127.0.0.65": server_context(*other_crt),
            "127.0.0.66": server_context(*sts_mx),
            "127.0.0.67": server_context(*sts_mx),
            "127.0.0.68": server_context(*good, max_tls11=True),
            "127.0.0.69": server_context(*other_crt),
        }
        cls.sinks = {ip: Sink(ip, cls.port, tls_context=ctx).__enter__() for ip, ctx in plan.items()}
        records = []
        for i, dom in enumerate(["verify", "badname", "dane", "danebad", "daneinsecure", "sts",
                                 "stsbad", "tls11", "danetlsains"]):
            mx = "mx.%s.test" % dom
            records += [(dom + ".test", "MX", "10 %s." % mx), (mx, "A", "127.0.0.%d" % (61 + i))]
        records += [
            ("_%d._tcp.mx.dane.test" % cls.port, "TLSA", "3 1 1 " + digest),
            ("_%d._tcp.mx.danebad.test" % cls.port, "TLSA", "3 1 1 " + digest),
            ("_%d._tcp.mx.daneinsecure.test" % cls.port, "TLSA", "3 1 1 " + digest),
            ("_%d._tcp.mx.danetlsains.test" % cls.port, "TLSA", "3 1 1 " + digest),
            ("_mta-sts.sts.test", "TXT", '"v=STSv1; id=2024one;"'),
            ("_mta-sts.stsbad.test", "TXT", '"v=STSv1; id=2024two;"'),
            ("mta-sts.sts.test", "A", "127.0.0.1"),
            ("mta-sts.stsbad.test", "A", "127.0.0.1"),
        ]
        # daneinsecure: MX and address unsigned (its TLSA answer has AD: it must not matter);
        # danetlsains: MX and address signed, the TLSA answer without AD
        cls.dns = AuthDns(records, insecure=["daneinsecure.test", "mx.daneinsecure.test",
                                              "_%d._tcp.mx.danetlsains.test" % cls.port]).__enter__()
        cls.web = PolicyServer(*web, policies={
            "mta-sts.sts.test": "version: STSv1\r\nmode: enforce\r\nmx: mx.sts.test\r\nmax_age: 86400\r\n",
            "mta-sts.stsbad.test": "version: STSv1\nmode: enforce\nmx: *.elsewhere.test\nmax_age: 600\n",
        }).__enter__()

        # A system OpenSSL configuration that allows TLS 1.0 and 1.1 (security level 0), as
        # an old or careless one would: kilnd's own minimum must still hold.
        cls.lax_conf = os.path.join(d, "openssl-lax.cnf")
        with open(cls.lax_conf, "w") as f:
            f.write("openssl_conf = conf\n[conf]\nssl_conf = ssl\n[ssl]\nsystem_default = sys\n"
                    "[sys]\nMinProtocol = TLSv1\nCipherString = DEFAULT:@SECLEVEL=0\n")

        k = Kiln()
        k.cfg["dns"] = {"servers": ["127.0.0.1:%d" % cls.dns.port], "timeout": "1s"}
        k.cfg["delivery"].update({"remote_port": cls.port, "tls_ca_file": cls.ca.crt,
                                  "mta_sts": {"port": cls.web.port, "fetch_timeout": "5s"}})
        for name in SETS:
            k.cfg["configuration_sets"].append({
                "name": name, "pool": "transactional",
                "tls_policy": {"secure": "require", "sts": "mta-sts"}.get(name, name),
                "events": [{"type": "file", "path": "./events-%s.jsonl" % name}]})
        k.write_config()
        old = os.environ.get("OPENSSL_CONF")
        os.environ["OPENSSL_CONF"] = cls.lax_conf
        try:
            k.start()
        finally:
            if old is None:
                del os.environ["OPENSSL_CONF"]
            else:
                os.environ["OPENSSL_CONF"] = old
        cls.k = k

    @classmethod
    def tearDownClass(cls):
        try:
            rc = cls.k.stop()
            assert rc == 0, rc
        finally:
            cls.k.cleanup()
            for s in cls.sinks.values():
                s.__exit__(None, None, None)
            cls.web.__exit__(None, None, None)
            cls.dns.__exit__(None, None, None)

    def deliver(self, rcpt, set_name):
        code, text = send(self.k, "app@example.test", [rcpt], body="tls body %s\r\n" % rcpt,
                          headers={"X-SES-CONFIGURATION-SET": set_name})
        self.assertEqual(code, 250, text)
        return mid_of(text)

    def delivered_over_tls(self, ip, rcpt):
        def got():
            return [m for m in self.sinks[ip].messages if rcpt in m["rcpts"]]
        m = wait_for(got, 20, what="delivery of %s to %s" % (rcpt, ip))[-1]
        self.assertTrue(m["tls"], "%s was delivered in clear" % rcpt)
        self.assertIn(b"tls body", m["data"])

    def deferred(self, ip, rcpt, set_name, *words):
        mid = self.deliver(rcpt, set_name)
        evs = self.k.wait_events(lambda e: by_type(e, mid, "DeliveryDelay"), timeout=20,
                                 name="events-%s.jsonl" % set_name, what="DeliveryDelay for " + rcpt)
        dd = by_type(evs, mid, "DeliveryDelay")[0]["deliveryDelay"]
        self.assertEqual(dd["delayType"], "TransientCommunicationFailure")
        diag = dd["delayedRecipients"][0]["diagnosticCode"]
        for w in words:
            self.assertIn(w, diag)
        self.assertEqual([m for m in self.sinks[ip].messages if rcpt in m["rcpts"]], [],
                         "%s reached a peer that failed the %s policy" % (rcpt, set_name))
        self.assertFalse(by_type(self.k.events("events-%s.jsonl" % set_name), mid, "Delivery"))
        return diag

    # ---- verify
    def test_verify_delivers_to_a_certificate_for_the_mx(self):
        self.deliver("a@verify.test", "verify")
        self.delivered_over_tls("127.0.0.61", "a@verify.test")

    def test_verify_defers_on_a_certificate_for_another_name(self):
        self.deferred("127.0.0.62", "b@badname.test", "verify", "certificate verify failed",
                      "mx.badname.test")

    # ---- dane
    def test_dane_delivers_when_the_tlsa_record_matches(self):
        self.deliver("c@dane.test", "dane")
        self.delivered_over_tls("127.0.0.63", "c@dane.test")
        asked = [q for q in self.dns.queries if q[1] == "TLSA"]
        self.assertTrue(asked and all(ad for _, _, ad in asked), "TLSA queries without AD: %r" % asked)

    def test_dane_defers_when_the_tlsa_record_does_not_match(self):
        self.deferred("127.0.0.64", "d@danebad.test", "dane", "DANE TLSA authentication failed",
                      "mx.danebad.test")

    def test_dane_without_dnssec_is_opportunistic(self):
        # the same mismatching TLSA record, not usable without validated MX and address...
        self.deliver("e@daneinsecure.test", "dane")
        self.delivered_over_tls("127.0.0.65", "e@daneinsecure.test")
        # ...nor when the TLSA answer itself was not validated
        self.deliver("i@danetlsains.test", "dane")
        self.delivered_over_tls("127.0.0.69", "i@danetlsains.test")

    # ---- mta-sts
    def test_mta_sts_enforce_delivers_to_a_listed_verified_mx(self):
        self.deliver("f@sts.test", "sts")
        self.delivered_over_tls("127.0.0.66", "f@sts.test")
        self.assertGreaterEqual(self.web.fetches.get("mta-sts.sts.test", 0), 1)
        # cached: a second message does not fetch the policy again (the TXT id is the same)
        n = self.web.fetches["mta-sts.sts.test"]
        self.deliver("f2@sts.test", "sts")
        self.delivered_over_tls("127.0.0.66", "f2@sts.test")
        self.assertEqual(self.web.fetches["mta-sts.sts.test"], n)

    def test_mta_sts_enforce_defers_an_unlisted_mx(self):
        self.deferred("127.0.0.67", "g@stsbad.test", "sts", "MTA-STS", "does not list MX host mx.stsbad.test")

    # ---- minimum TLS 1.2
    def test_tls11_only_server_is_not_used(self):
        self.deferred("127.0.0.68", "h@tls11.test", "secure", "TLS")


if __name__ == "__main__":
    main()
