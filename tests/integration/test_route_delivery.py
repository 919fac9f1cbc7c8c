"""test_route_delivery.py — delivery over static routes to an SMTP sink we did not write
(aiosmtpd) on 127.0.0.x: what the sink saw (envelope, body, source IP from the pool), the
Delivery event, retries after 4xx with DeliveryDelay events, 5xx bounces that suppress
the address, and expiry of max_delivery_time; and the scheduler's memory budget
(delivery.queue_memory_recipients: 100 with 500 recipients: paged in from the spool, each delivered
exactly once, counted right by kilnctl while most are in the spool only)."""
import re
import socket
import unittest

from kilntest import Kiln, Sink, main, send, wait_for

POOL = {"127.0.0.10", "127.0.0.11", "127.0.0.12"}


def mid_of(text):
    return re.match(r"^2\.0\.0 Ok (\S+)$", text).group(1)


def kiln_for(sink, **over):
    return Kiln(routes=[{"domain": "dest.test", "host": sink.host, "port": sink.port},
                        {"domain": "other.test", "host": sink.host, "port": sink.port}], **over)


class RouteDelivery(unittest.TestCase):
    def test_delivery_envelope_body_source_ip_and_event(self):
        with Sink("127.0.0.21") as sink, kiln_for(sink) as k:
            body = "line one\r\n.starts with a dot\r\n" + "x" * 900 + "\r\nlast\r\n"
            code, text = send(k, "app@example.test", ["a@dest.test", "b@dest.test"], body=body,
                              headers={"X-SES-CONFIGURATION-SET": "txn"})
            self.assertEqual(code, 250, text)
            mid = mid_of(text)
            wait_for(lambda: sink.messages, what="sink to receive the message")
            m = sink.messages[0]
            self.assertEqual(m["mail_from"], "app@example.test")
            self.assertEqual(sorted(m["rcpts"]), ["a@dest.test", "b@dest.test"])
            self.assertIn(m["peer"], POOL)
            data = m["data"].replace(b"\r\n", b"\n")
            self.assertIn(body.replace("\r\n", "\n").encode(), data)
            self.assertTrue(data.startswith(b"Received: "), data[:200])
            self.assertNotIn(b"X-SES-CONFIGURATION-SET", data.upper())
            self.assertIn(mid.encode(), data)   # Message-ID added with the SES id
            evs = k.wait_events(lambda e: any(x["eventType"] == "Delivery" for x in e),
                                what="Delivery event")
            d = [x for x in evs if x["eventType"] == "Delivery"][0]
            self.assertEqual(d["mail"]["messageId"], mid)
            self.assertEqual(sorted(d["delivery"]["recipients"]), ["a@dest.test", "b@dest.test"])
            self.assertTrue(d["delivery"]["smtpResponse"].startswith("250"))
            self.assertEqual(d["delivery"]["remoteMtaIp"], "127.0.0.21")
            self.assertEqual(d["delivery"]["reportingMTA"], "dsn; mta.kiln.test")
            self.assertEqual(d["mail"]["tags"]["ses:outgoing-ip"], [m["peer"]])
            wait_for(lambda: k.ctl("status")["Queued"] == 0, what="queue to empty")

    def test_soft_bounce_twice_then_delivered(self):
        def rule(addr, n):
            return "451 4.3.0 try again later" if n <= 2 else None
        with Sink("127.0.0.22", rule=rule) as sink, kiln_for(sink) as k:
            code, text = send(k, "app@example.test", ["soft@dest.test"])
            self.assertEqual(code, 250)
            mid = mid_of(text)
            wait_for(lambda: sink.messages, timeout=30, what="delivery on the third try")
            evs = k.wait_events(lambda e: any(x["eventType"] == "Delivery" for x in e), what="Delivery")
            mine = [x for x in evs if x["mail"]["messageId"] == mid]
            delays = [x for x in mine if x["eventType"] == "DeliveryDelay"]
            self.assertEqual(len(delays), 2)
            dd = delays[0]["deliveryDelay"]
            self.assertEqual(dd["delayedRecipients"][0]["emailAddress"], "soft@dest.test")
            self.assertIn("451", dd["delayedRecipients"][0]["diagnosticCode"])
            self.assertIn(dd["delayType"], ("RecipientServerError", "TransientCommunicationFailure", "Undetermined"))
            self.assertRegex(dd["expirationTime"], r"Z$")
            self.assertEqual(len(sink.messages), 1)
            self.assertEqual(sink.handler.attempts["soft@dest.test"], 3)

    def test_hard_bounce_suppresses_address(self):
        def rule(addr, n):
            return "550 5.1.1 no such user" if addr.startswith("gone") else None
        with Sink("127.0.0.23", rule=rule) as sink, kiln_for(sink) as k:
            code, text = send(k, "app@example.test", ["gone@dest.test", "ok@dest.test"])
            self.assertEqual(code, 250)
            mid = mid_of(text)
            evs = k.wait_events(lambda e: any(x["eventType"] == "Bounce" for x in e), what="Bounce")
            b = [x for x in evs if x["eventType"] == "Bounce"][0]
            self.assertEqual(b["mail"]["messageId"], mid)
            self.assertEqual(b["bounce"]["bounceType"], "Permanent")
            br = b["bounce"]["bouncedRecipients"][0]
            self.assertEqual(br["emailAddress"], "gone@dest.test")
            self.assertIn("550", br["diagnosticCode"])
            wait_for(lambda: sink.messages, what="ok@dest.test delivered")
            self.assertEqual(sink.messages[0]["rcpts"], ["ok@dest.test"])
            lst = k.ctl("suppression", "list")["SuppressedDestinationSummaries"]
            self.assertIn("gone@dest.test", [x["EmailAddress"] for x in lst])
            # The next message to it bounces at once, without a connection to the sink.
            tries = sink.handler.attempts["gone@dest.test"]
            code, text = send(k, "app@example.test", ["gone@dest.test"])
            self.assertEqual(code, 250)
            mid2 = mid_of(text)
            evs = k.wait_events(lambda e: any(x["mail"]["messageId"] == mid2 and x["eventType"] == "Bounce" for x in e),
                                what="OnAccountSuppressionList bounce")
            b2 = [x for x in evs if x["mail"]["messageId"] == mid2 and x["eventType"] == "Bounce"][0]
            self.assertEqual(b2["bounce"]["bounceSubType"], "OnAccountSuppressionList")
            self.assertEqual(sink.handler.attempts["gone@dest.test"], tries)

    def test_max_delivery_time_expiry_bounces_transient(self):
        def rule(addr, n):
            return "451 4.4.1 still not ready"
        with Sink("127.0.0.24", rule=rule) as sink:
            k = kiln_for(sink)
            k.cfg["configuration_sets"][0]["max_delivery_time"] = "3s"
            k.write_config()
            with k:
                code, text = send(k, "app@example.test", ["late@dest.test"])
                self.assertEqual(code, 250)
                evs = k.wait_events(lambda e: any(x["eventType"] == "Bounce" for x in e), timeout=30,
                                    what="Transient bounce after max_delivery_time")
                b = [x for x in evs if x["eventType"] == "Bounce"][0]
                self.assertEqual((b["bounce"]["bounceType"], b["bounce"]["bounceSubType"]),
                                 ("Transient", "General"))
                self.assertTrue(any(x["eventType"] == "DeliveryDelay" for x in evs))
                lst = k.ctl("suppression", "list")["SuppressedDestinationSummaries"]
                self.assertNotIn("late@dest.test", [x["EmailAddress"] for x in lst])
                self.assertEqual(sink.messages, [])

    def test_memory_budget_pages_recipients_in_exactly_once(self):
        """500 recipients with room for 100 in memory. First kilnd's route leads to a
        listener that never greets, so nothing leaves; it is killed, and a second kilnd on
        the same spool pages them in and delivers each exactly once (some after a 4xx)."""
        def rule(addr, n):
            return "451 4.3.0 try again later" if addr.startswith("r1") and n == 1 else None
        hole = socket.socket()
        hole.bind(("127.0.0.25", 0))
        hole.listen(64)
        k = None
        try:
            with Sink("127.0.0.26", rule=rule) as sink:
                k = Kiln(routes=[{"domain": "dest.test", "host": "127.0.0.25", "port": hole.getsockname()[1]},
                                 {"domain": "other.test", "host": "127.0.0.25", "port": hole.getsockname()[1]}])
                k.cfg["delivery"]["queue_memory_recipients"] = 100
                k.write_config()
                k.start()
                addrs = []
                for m in range(20):
                    batch = ["r%d@%s" % (m * 25 + i, "dest.test" if i % 2 else "other.test")
                             for i in range(25)]
                    code, text = send(k, "app@example.test", batch)
                    self.assertEqual(code, 250, text)
                    addrs += batch
                st = k.ctl("status")
                self.assertEqual((st["Queued"], st["Deferred"]), (500, 0), st)
                q = k.ctl("queue")
                self.assertEqual(sum(r["Recipients"] for r in q["Queue"]), 500, q)
                k.kill9()
                self.assertEqual(sink.messages, [])
                for r in k.cfg["routes"]:
                    r["host"], r["port"] = sink.host, sink.port
                k.write_config()
                k.start()
                wait_for(lambda: sum(len(m["rcpts"]) for m in sink.messages) >= 500, timeout=60,
                         what="500 recipients delivered")
                wait_for(lambda: (lambda s: s["Queued"] + s["Deferred"] == 0)(k.ctl("status")),
                         what="queue to empty")
                delivered = [r for m in sink.messages for r in m["rcpts"]]
                self.assertEqual(sorted(delivered), sorted(addrs))   # each exactly once
                retried = [a for a in addrs if a.startswith("r1")]
                self.assertTrue(retried)
                for a in retried:
                    self.assertEqual(sink.handler.attempts[a], 2, a)
                self.assertEqual(k.stop(), 0, k.stderr_text()[-4000:])
        finally:
            if k:
                k.cleanup()
            hole.close()


if __name__ == "__main__":
    main()
