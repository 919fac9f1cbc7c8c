"""test_hop_guard.py — next hops kiln refuses (issue 11 item 8), with the real kilnd, dnsmasq
answering MX/A records and aiosmtpd sinks on 127.0.0.x:

  (a) with the default delivery.allow_private_mx (false), a domain whose MX (or, without MX,
      whose A record) points at a loopback address bounces at once: one Bounce event,
      Permanent/General, status 5.4.4, diagnostic "MX points to a private address" naming the
      host and the address; the sink there sees no connection; the address is suppressed;
  (b) a static route to a loopback sink still delivers (routes are the operator's);
  (c) a route pointing back at kilnd's own submission listener bounces with
      "554 5.4.6 mail loops back to myself" (status 5.4.6) without kilnd accepting the
      message from itself;
  (d) a server whose greeting announces kiln's own server.hostname is kiln itself: 5.4.6,
      nothing sent to it."""
import unittest

from kilntest import Dnsmasq, Kiln, Sink, free_port, main, send, wait_for

PRIV_MX_IP = "127.0.0.61"
ROUTED_IP = "127.0.0.62"
SELF_NAMED_IP = "127.0.0.63"


def bounces(k, mid):
    return [e for e in k.events() if e["eventType"] == "Bounce" and e["mail"]["messageId"] == mid]


class HopGuard(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.port = free_port(PRIV_MX_IP)
        cls.dns = Dnsmasq(["--mx-host=priv.test,mx.priv.test,10",
                           "--host-record=mx.priv.test,%s" % PRIV_MX_IP,
                           "--host-record=aonly.test,%s" % PRIV_MX_IP]).__enter__()
        cls.priv_sink = Sink(PRIV_MX_IP, cls.port).__enter__()
        cls.routed = Sink(ROUTED_IP).__enter__()
        cls.self_named = Sink(SELF_NAMED_IP, server_hostname="mta.kiln.test").__enter__()
        k = Kiln(delivery={"allow_private_mx": False, "remote_port": cls.port})
        k.cfg["dns"] = {"servers": ["127.0.0.1:%d" % cls.dns.port], "timeout": "1s"}
        k.cfg["routes"] = [
            {"domain": "routed.test", "host": ROUTED_IP, "port": cls.routed.port},
            {"domain": "loop.test", "host": "127.0.0.1", "port": k.port},
            {"domain": "selfnamed.test", "host": SELF_NAMED_IP, "port": cls.self_named.port},
        ]
        k.write_config()
        cls.k = k.start()

    @classmethod
    def tearDownClass(cls):
        try:
            rc = cls.k.stop()
            assert rc == 0, rc
        finally:
            cls.k.cleanup()
            for s in (cls.priv_sink, cls.routed, cls.self_named):
                s.__exit__(None, None, None)
            cls.dns.__exit__(None, None, None)

    def submit(self, rcpt):
        code, text = send(self.k, "app@example.test", [rcpt])
        self.assertEqual(code, 250, text)
        return text.split()[-1]

    def wait_bounce(self, mid, what):
        return wait_for(lambda: bounces(self.k, mid), 20, 0.1, what)

    def test_a_private_mx_bounces(self):
        for rcpt, host in (("x@priv.test", "mx.priv.test"), ("y@aonly.test", "aonly.test")):
            mid = self.submit(rcpt)
            b = self.wait_bounce(mid, "Bounce for %s" % rcpt)
            self.assertEqual(len(b), 1, b)
            bo = b[0]["bounce"]
            self.assertEqual((bo["bounceType"], bo["bounceSubType"]), ("Permanent", "General"))
            r = bo["bouncedRecipients"][0]
            self.assertEqual(r["emailAddress"], rcpt)
            self.assertEqual(r["status"], "5.4.4")
            self.assertIn("MX points to a private address", r["diagnosticCode"])
            self.assertIn(host, r["diagnosticCode"])
            self.assertIn(PRIV_MX_IP, r["diagnosticCode"])
            self.assertIn("loopback", r["diagnosticCode"])
            self.assertFalse([e for e in self.k.events() if e["mail"]["messageId"] == mid
                              and e["eventType"] in ("Delivery", "DeliveryDelay")])
        self.assertEqual(self.priv_sink.handler.connections, [])
        self.assertEqual(self.priv_sink.messages, [])
        sup = self.k.ctl("suppression", "list")["SuppressedDestinationSummaries"]
        self.assertIn("x@priv.test", [s["EmailAddress"] for s in sup])
        self.assertIn("verdict=private", self.k.log())

    def test_b_static_route_to_loopback_delivers(self):
        mid = self.submit("r@routed.test")
        wait_for(lambda: self.routed.messages, 20, 0.1, "delivery over the route")
        self.assertEqual(self.routed.messages[0]["rcpts"], ["r@routed.test"])
        self.k.wait_events(lambda evs: [e for e in evs if e["eventType"] == "Delivery"
                                        and e["mail"]["messageId"] == mid], what="Delivery event")
        self.assertEqual(bounces(self.k, mid), [])

    def test_c_route_to_own_listener_is_a_loop(self):
        mid = self.submit("l@loop.test")
        b = self.wait_bounce(mid, "loop bounce")
        self.assertEqual(len(b), 1, b)
        r = b[0]["bounce"]["bouncedRecipients"][0]
        self.assertEqual(r["status"], "5.4.6")
        self.assertTrue(r["diagnosticCode"].startswith("554 5.4.6 mail loops back to myself"), r)
        self.assertIn("127.0.0.1 port %d" % self.k.port, r["diagnosticCode"])
        # kilnd never handed the message to itself: one Send event only, for this submission
        sends = [e for e in self.k.events() if e["eventType"] == "Send"
                 and "l@loop.test" in e["mail"]["destination"]]
        self.assertEqual(len(sends), 1, sends)
        self.assertNotIn("l@loop.test", [s["EmailAddress"] for s in
                                         self.k.ctl("suppression", "list")["SuppressedDestinationSummaries"]])

    def test_d_greeting_with_own_hostname_is_a_loop(self):
        mid = self.submit("g@selfnamed.test")
        b = self.wait_bounce(mid, "loop bounce (greeting)")
        self.assertEqual(len(b), 1, b)
        r = b[0]["bounce"]["bouncedRecipients"][0]
        self.assertEqual(r["status"], "5.4.6")
        self.assertTrue(r["diagnosticCode"].startswith("554 5.4.6 mail loops back to myself"), r)
        self.assertIn("greeted me with my own hostname mta.kiln.test", r["diagnosticCode"])
        self.assertEqual(self.self_named.messages, [])


if __name__ == "__main__":
    main()
