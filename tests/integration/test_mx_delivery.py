"""test_mx_delivery.py — delivery through MX resolution (SPEC section 3) against real
peers: dnsmasq serving MX/A records on a loopback port, aiosmtpd sinks on several 127.0.0.x
addresses sharing delivery.remote_port. Asserts what each sink saw (envelope, body, source
IP of the pool, STARTTLS) and the events: MX preference order, the next MX when the first
refuses connections, the A fallback for a domain without MX, null MX and NXDOMAIN bounces,
and tls_policy: require deferring instead of sending in clear."""
import re
import ssl
import unittest

from kilntest import Dnsmasq, Kiln, Sink, free_port, main, make_cert, send, wait_for

POOL = {"127.0.0.10", "127.0.0.11", "127.0.0.12"}


def mid_of(text):
    return re.match(r"^2\.0\.0 Ok (\S+)$", text).group(1)


def by_type(evs, mid, t):
    return [e for e in evs if e["mail"]["messageId"] == mid and e["eventType"] == t]


class MxDelivery(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.port = free_port("127.0.0.51")
        cls.dns = Dnsmasq([
            "--mx-host=pref.test,mx1.pref.test,10", "--mx-host=pref.test,mx2.pref.test,20",
            "--host-record=mx1.pref.test,127.0.0.51", "--host-record=mx2.pref.test,127.0.0.52",
            "--mx-host=down.test,mxdown.down.test,10", "--mx-host=down.test,mxup.down.test,20",
            "--host-record=mxdown.down.test,127.0.0.53", "--host-record=mxup.down.test,127.0.0.54",
            "--host-record=amx.test,127.0.0.55",
            "--mx-host=tls.test,mx.tls.test,10", "--host-record=mx.tls.test,127.0.0.56",
            "--mx-host=clear.test,mx.clear.test,10", "--host-record=mx.clear.test,127.0.0.57",
            "--mx-host=nullmx.test,.,0",
        ]).__enter__()
        cls.tmp_k = Kiln()
        cert, key = make_cert(cls.tmp_k.tmp, "mx.tls.test")
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
        cls.sinks = {ip: Sink(ip, cls.port, tls_context=tls if ip == "127.0.0.56" else None).__enter__()
                     for ip in ("127.0.0.51", "127.0.0.52", "127.0.0.54", "127.0.0.55",
                                "127.0.0.56", "127.0.0.57")}
        k = cls.tmp_k
        k.cfg["dns"] = {"servers": ["127.0.0.1:%d" % cls.dns.port], "timeout": "1s"}
        k.cfg["delivery"]["remote_port"] = cls.port
        k.cfg["configuration_sets"].append({"name": "secure", "pool": "transactional",
                                            "tls_policy": "require",
                                            "events": [{"type": "file", "path": "./events-secure.jsonl"}]})
        k.write_config()
        k.start()
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
            cls.dns.__exit__(None, None, None)

    def deliver(self, rcpt, body="mx body\r\n", set_name=None):
        hdrs = {"X-SES-CONFIGURATION-SET": set_name} if set_name else None
        code, text = send(self.k, "app@example.test", [rcpt], body=body, headers=hdrs)
        self.assertEqual(code, 250, text)
        return mid_of(text)

    def test_mx_preference_order(self):
        mid = self.deliver("a@pref.test", body="preferred mx\r\n")
        wait_for(lambda: self.sinks["127.0.0.51"].messages, what="delivery to the preferred MX")
        m = self.sinks["127.0.0.51"].messages[-1]
        self.assertEqual(m["rcpts"], ["a@pref.test"])
        self.assertEqual(m["mail_from"], "app@example.test")
        self.assertIn(m["peer"], POOL)
        self.assertIn(b"preferred mx", m["data"])
        self.assertFalse(m["tls"])     # this sink offers no STARTTLS
        self.assertEqual(self.sinks["127.0.0.52"].messages, [])
        evs = self.k.wait_events(lambda e: by_type(e, mid, "Delivery"), what="Delivery event")
        d = by_type(evs, mid, "Delivery")[0]
        self.assertEqual(d["delivery"]["remoteMtaIp"], "127.0.0.51")
        self.assertEqual(d["mail"]["tags"]["ses:outgoing-ip"], [m["peer"]])

    def test_next_mx_when_first_refuses(self):
        mid = self.deliver("b@down.test")
        wait_for(lambda: self.sinks["127.0.0.54"].messages, what="delivery to the second MX")
        self.assertEqual(self.sinks["127.0.0.54"].messages[-1]["rcpts"], ["b@down.test"])
        evs = self.k.wait_events(lambda e: by_type(e, mid, "Delivery"), what="Delivery event")
        self.assertEqual(by_type(evs, mid, "Delivery")[0]["delivery"]["remoteMtaIp"], "127.0.0.54")

    def test_a_fallback_without_mx(self):
        self.deliver("c@amx.test")
        wait_for(lambda: self.sinks["127.0.0.55"].messages, what="delivery to the A record")
        self.assertEqual(self.sinks["127.0.0.55"].messages[-1]["rcpts"], ["c@amx.test"])

    def test_starttls_used_when_offered(self):
        self.deliver("d@tls.test", body="secret body\r\n")
        wait_for(lambda: self.sinks["127.0.0.56"].messages, what="delivery over STARTTLS")
        m = self.sinks["127.0.0.56"].messages[-1]
        self.assertTrue(m["tls"], "the message was not sent over TLS")
        self.assertIn(b"secret body", m["data"])

    def test_null_mx_and_nxdomain_bounce(self):
        for rcpt in ("e@nullmx.test", "f@nothere.test"):
            mid = self.deliver(rcpt)
            evs = self.k.wait_events(lambda e: by_type(e, mid, "Bounce"), what="bounce for " + rcpt)
            b = by_type(evs, mid, "Bounce")[0]["bounce"]
            self.assertEqual(b["bounceType"], "Permanent")
            self.assertEqual(b["bouncedRecipients"][0]["emailAddress"], rcpt)
            self.assertTrue(b["bouncedRecipients"][0]["status"].startswith("5."))

    def test_tls_required_but_not_offered_defers(self):
        mid = self.deliver("g@clear.test", set_name="secure")
        evs = self.k.wait_events(lambda e: by_type(e, mid, "DeliveryDelay"), name="events-secure.jsonl",
                                 what="DeliveryDelay under tls_policy require")
        dd = by_type(evs, mid, "DeliveryDelay")[0]["deliveryDelay"]
        self.assertEqual(dd["delayedRecipients"][0]["emailAddress"], "g@clear.test")
        self.assertIn("TLS", dd["delayedRecipients"][0]["diagnosticCode"])
        self.assertEqual(self.sinks["127.0.0.57"].messages, [], "sent in clear despite tls_policy require")


if __name__ == "__main__":
    main()
