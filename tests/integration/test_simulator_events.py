"""test_simulator_events.py — the mailbox simulator (SPEC section 2) and the SES event
JSON it produces (SPEC section 4), written to the configuration set's file destination."""
import re
import unittest

from kilntest import Kiln, main, send

SIM = "simulator.amazonses.com"


def msgid(text):
    m = re.match(r"^2\.0\.0 Ok (\S+)$", text)
    assert m, text
    return m.group(1)


class Simulator(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.k = Kiln(account={"mode": "sandbox", "max_24h_send": 5, "max_send_rate": 100,
                              "identities": ["example.test"], "verified_recipients": []},
                     routes=[])
        cls.k.start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.k.stop()
        cls.k.cleanup()
        assert rc == 0, rc

    def events_for(self, mid, n, what):
        evs = self.k.wait_events(lambda e: len([x for x in e if x["mail"]["messageId"] == mid]) >= n,
                                 what=what)
        return [x for x in evs if x["mail"]["messageId"] == mid]

    def check_mail(self, ev, mid, rcpt):
        m = ev["mail"]
        self.assertEqual(m["messageId"], mid)
        self.assertEqual(m["source"], "app@example.test")
        self.assertEqual(m["destination"], [rcpt])
        self.assertRegex(m["timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertRegex(m["sendingAccountId"], r"^\d{12}$")
        self.assertIs(m["headersTruncated"], False)
        self.assertEqual(m["commonHeaders"]["subject"], "sim " + rcpt)
        self.assertEqual(m["commonHeaders"]["from"], ["App <app@example.test>"])
        self.assertEqual(m["tags"]["ses:configuration-set"], ["txn"])
        self.assertEqual(m["tags"]["ses:source-ip"], ["127.0.0.1"])
        names = [h["name"] for h in m["headers"]]
        self.assertIn("Subject", names)
        self.assertIn("Message-ID", [n for n in names if n.lower() == "message-id"] or names)

    def submit(self, rcpt):
        code, text = send(self.k, "app@example.test", [rcpt], subject="sim " + rcpt,
                          headers={"From": "App <app@example.test>"})
        self.assertEqual(code, 250, text)
        return msgid(text)

    def test_success(self):
        rcpt = "success@" + SIM
        mid = self.submit(rcpt)
        evs = self.events_for(mid, 2, "Send+Delivery")
        self.assertEqual([e["eventType"] for e in evs], ["Send", "Delivery"])
        self.assertEqual(evs[0]["send"], {})
        d = evs[1]["delivery"]
        self.assertEqual(d["recipients"], [rcpt])
        self.assertEqual(d["reportingMTA"], "dsn; mta.kiln.test")
        self.assertTrue(d["smtpResponse"].startswith("250"))
        self.assertIsInstance(d["processingTimeMillis"], int)
        for e in evs:
            self.check_mail(e, mid, rcpt)

    def test_bounce_with_label_not_suppressed(self):
        rcpt = "bounce+label1@" + SIM
        mid = self.submit(rcpt)
        evs = self.events_for(mid, 2, "Send+Bounce")
        b = evs[1]
        self.assertEqual(b["eventType"], "Bounce")
        self.assertEqual(b["bounce"]["bounceType"], "Permanent")
        self.assertEqual(b["bounce"]["bounceSubType"], "General")
        br = b["bounce"]["bouncedRecipients"][0]
        self.assertEqual(br["emailAddress"], rcpt)
        self.assertEqual(br["status"], "5.1.1")
        self.assertEqual(br["action"], "failed")
        self.assertEqual(b["bounce"]["reportingMTA"], "dsn; mta.kiln.test")
        self.assertTrue(b["bounce"]["feedbackId"])
        lst = self.k.ctl("suppression", "list")["SuppressedDestinationSummaries"]
        self.assertNotIn(rcpt, [x["EmailAddress"] for x in lst])

    def test_complaint(self):
        rcpt = "complaint@" + SIM
        mid = self.submit(rcpt)
        evs = self.events_for(mid, 3, "Send+Delivery+Complaint")
        self.assertEqual([e["eventType"] for e in evs], ["Send", "Delivery", "Complaint"])
        c = evs[2]["complaint"]
        self.assertEqual(c["complaintFeedbackType"], "abuse")
        self.assertEqual(c["complainedRecipients"], [{"emailAddress": rcpt}])
        self.assertTrue(c["feedbackId"])
        self.assertRegex(c["timestamp"], r"Z$")

    def test_suppressionlist(self):
        rcpt = "suppressionlist@" + SIM
        mid = self.submit(rcpt)
        evs = self.events_for(mid, 2, "Send+Bounce")
        b = evs[1]["bounce"]
        self.assertEqual((b["bounceType"], b["bounceSubType"]), ("Permanent", "Suppressed"))

    def test_ooto_queues_auto_reply_to_sender(self):
        rcpt = "ooto@" + SIM
        mid = self.submit(rcpt)
        evs = self.events_for(mid, 2, "Send+Delivery")
        self.assertEqual([e["eventType"] for e in evs], ["Send", "Delivery"])
        # The auto-reply is a new message to the envelope sender: its own Send event.
        def reply(e):
            return [x for x in e if x["eventType"] == "Send" and x["mail"]["destination"] == ["app@example.test"]
                    and x["mail"]["commonHeaders"].get("subject", "").startswith("Automatic reply")]
        evs = self.k.wait_events(lambda e: reply(e), what="auto-reply Send event")
        r = reply(evs)[0]
        hdrs = {h["name"].lower(): h["value"] for h in r["mail"]["headers"]}
        self.assertEqual(hdrs.get("auto-submitted"), "auto-replied")
        self.assertEqual(r["mail"]["source"], "")

    def test_account_suppression_list(self):
        self.k.ctl("suppression", "add", "gone@dest.test", "--reason", "BOUNCE")
        lst = self.k.ctl("suppression", "list")["SuppressedDestinationSummaries"]
        ent = [x for x in lst if x["EmailAddress"] == "gone@dest.test"]
        self.assertEqual(len(ent), 1)
        self.assertEqual(ent[0]["Reason"], "BOUNCE")
        # In the sandbox only verified recipients pass, so the suppressed one is verified
        # (identities count as verified recipients); stored lower-case, matched without case.
        self.k.ctl("suppression", "add", "Boss@Example.Test", "--reason", "COMPLAINT")
        code, text = send(self.k, "app@example.test", ["boss@example.test"], subject="sim boss@example.test",
                          headers={"From": "App <app@example.test>"})
        self.assertEqual(code, 250, text)
        mid = msgid(text)
        evs = self.events_for(mid, 2, "Send+Bounce OnAccountSuppressionList")
        b = evs[1]
        self.assertEqual(b["eventType"], "Bounce")
        self.assertEqual((b["bounce"]["bounceType"], b["bounce"]["bounceSubType"]),
                         ("Permanent", "OnAccountSuppressionList"))
        self.assertEqual(b["bounce"]["bouncedRecipients"][0]["emailAddress"], "boss@example.test")
        st = self.k.ctl("status")
        for key in ("Uptime", "Queued", "Deferred", "Sessions"):
            self.assertIsInstance(st[key], int)
        self.k.ctl("suppression", "remove", "boss@example.test")
        lst = self.k.ctl("suppression", "list")["SuppressedDestinationSummaries"]
        self.assertNotIn("boss@example.test", [x["EmailAddress"] for x in lst])


if __name__ == "__main__":
    main()
