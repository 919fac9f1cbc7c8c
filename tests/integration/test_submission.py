"""test_submission.py — SPEC section 2 against the real kilnd: ESMTP extensions, every
policy rule with its exact reply text, STARTTLS, AUTH, SMTP syntax errors and limits."""
import base64
import crypt
import os
import re
import socket
import ssl
import time
import unittest

from kilntest import Kiln, base_config, free_port, main, make_cert, send, wait_for

ID_RE = r"^2\.0\.0 Ok ([0-9a-f]{16}-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-000000)$"
UNVERIFIED = ("5.7.1 Message rejected: Email address is not verified. The following identities "
              "failed the check in region LOCAL: ")


def raw(k, lines, timeout=10):
    """Send raw bytes line by line; return every reply line received."""
    with socket.create_connection(("127.0.0.1", k.port), timeout=timeout) as s:
        f = s.makefile("rb")
        out = [f.readline().decode().rstrip("\r\n")]
        for line in lines:
            s.sendall(line)
            while True:
                r = f.readline().decode().rstrip("\r\n")
                out.append(r)
                if len(r) < 4 or r[3] != "-":
                    break
        return out


class Submission(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.k = Kiln(account={"max_24h_send": -1, "max_send_rate": -1})
        cls.k.cfg["configuration_sets"].append({"name": "marketing", "pool": "transactional",
                                                "events": [{"type": "file", "path": "./events-mkt.jsonl"}]})
        cls.k.write_config()
        cls.k.start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.k.stop()
        cls.k.cleanup()
        assert rc == 0, "kilnd exit status %s after SIGTERM" % rc

    def test_ehlo_extensions(self):
        with self.k.smtp() as s:
            code, resp = s.ehlo("client.test")
            self.assertEqual(code, 250)
            text = resp.decode().upper()
            for ext in ("PIPELINING", "SIZE 1048576", "8BITMIME", "ENHANCEDSTATUSCODES"):
                self.assertIn(ext, text)
            self.assertNotIn("STARTTLS", text)  # no submission.tls configured

    def test_accept_reply_carries_message_id(self):
        code, text = send(self.k, "a@example.test", ["someone@dest.test"])
        self.assertEqual(code, 250, text)
        self.assertRegex(text, ID_RE)

    def test_unverified_mail_from(self):
        with self.k.smtp() as s:
            s.ehlo("c")
            code, resp = s.mail("bad@unverified.test")
            self.assertEqual(code, 554)
            self.assertEqual(resp.decode(), UNVERIFIED + "bad@unverified.test")

    def test_parent_domain_and_address_identities(self):
        code, _ = send(self.k, "x@sub.example.test", ["r@dest.test"])
        self.assertEqual(code, 250)
        code, _ = send(self.k, "ops@other.test", ["r@dest.test"], headers={"From": "ops@other.test"})
        self.assertEqual(code, 250)
        with self.k.smtp() as s:
            s.ehlo("c")
            code, resp = s.mail("dev@other.test")
            self.assertEqual(code, 554)
            code, resp = s.mail("x@badexample.test")
            self.assertEqual(code, 554)

    def test_unverified_header_identities(self):
        code, text = send(self.k, "a@example.test", ["r@dest.test"],
                          headers={"From": "Eve <eve@evil.test>", "Sender": "s@example.test"})
        self.assertEqual(code, 554)
        self.assertEqual(text, UNVERIFIED + "eve@evil.test")
        self.k.wait_events(lambda e: any(x["eventType"] == "Reject" and "eve@evil.test" in x["reject"]["reason"]
                                         for x in e), what="Reject event for the unverified From:")
        code, text = send(self.k, "a@example.test", ["r@dest.test"],
                          headers={"From": "a@example.test", "Sender": "x@one.test",
                                   "Return-Path": "<y@two.test>"})
        self.assertEqual(code, 554)
        self.assertTrue(text.startswith(UNVERIFIED), text)
        self.assertIn("x@one.test", text)
        self.assertIn("y@two.test", text)

    def test_too_many_recipients(self):
        with self.k.smtp() as s:
            s.ehlo("c")
            s.mail("a@example.test")
            for i in range(50):
                self.assertEqual(s.rcpt("r%d@dest.test" % i)[0], 250)
            code, resp = s.rcpt("r50@dest.test")
            self.assertEqual((code, resp.decode()), (452, "4.5.3 Too many recipients"))
            code, resp = s.rcpt("r51@dest.test")
            self.assertEqual(code, 452)

    def test_size_at_mail_and_at_data(self):
        with self.k.smtp() as s:
            s.ehlo("c")
            code, resp = s.mail("a@example.test", ["SIZE=%d" % (2 * 1048576)])
            self.assertEqual((code, resp.decode()), (552, "5.3.4 Message is too long."))
        body = ("x" * 70 + "\r\n") * (1048576 // 72 + 10)
        code, text = send(self.k, "a@example.test", ["r@dest.test"], body=body)
        self.assertEqual((code, text), (552, "5.3.4 Message is too long."))
        # the session stays usable after the rejection
        code, text = send(self.k, "a@example.test", ["r@dest.test"])
        self.assertEqual(code, 250)

    def test_unknown_configuration_set(self):
        code, text = send(self.k, "a@example.test", ["r@dest.test"],
                          headers={"X-SES-CONFIGURATION-SET": "nope"})
        self.assertEqual(code, 554, text)
        self.assertIn("nope", text)

    def test_configuration_set_header_routes_events_and_is_stripped(self):
        code, text = send(self.k, "a@example.test", ["success@simulator.amazonses.com"],
                          headers={"X-SES-CONFIGURATION-SET": "marketing"})
        self.assertEqual(code, 250, text)
        mid = re.match(ID_RE, text).group(1)
        evs = self.k.wait_events(lambda e: any(x["mail"]["messageId"] == mid and x["eventType"] == "Delivery" for x in e),
                                 name="events-mkt.jsonl", what="Delivery in marketing set file")
        ev = [x for x in evs if x["mail"]["messageId"] == mid][0]
        self.assertEqual(ev["mail"]["tags"]["ses:configuration-set"], ["marketing"])
        names = [h["name"].lower() for h in ev["mail"]["headers"]]
        self.assertNotIn("x-ses-configuration-set", names)
        self.assertFalse(any(x["mail"]["messageId"] == mid for x in self.k.events()))

    def test_message_tags_header_becomes_event_tags_and_is_stripped(self):
        code, text = send(self.k, "a@example.test", ["success@simulator.amazonses.com"],
                          headers={"X-SES-CONFIGURATION-SET": "marketing",
                                   "X-SES-MESSAGE-TAGS": "campaign=spring-2026, kind = receipt"})
        self.assertEqual(code, 250, text)
        mid = re.match(ID_RE, text).group(1)
        evs = self.k.wait_events(lambda e: any(x["mail"]["messageId"] == mid and x["eventType"] == "Delivery" for x in e),
                                 name="events-mkt.jsonl", what="Delivery of the tagged message")
        ev = [x for x in evs if x["mail"]["messageId"] == mid and x["eventType"] == "Delivery"][0]
        self.assertEqual(ev["mail"]["tags"]["campaign"], ["spring-2026"])
        self.assertEqual(ev["mail"]["tags"]["kind"], ["receipt"])
        self.assertEqual(ev["mail"]["tags"]["ses:configuration-set"], ["marketing"])
        names = [h["name"].lower() for h in ev["mail"]["headers"]]
        self.assertNotIn("x-ses-message-tags", names)
        # a tag SES would refuse refuses the message, naming the tag and the rule
        code, text = send(self.k, "a@example.test", ["success@simulator.amazonses.com"],
                          headers={"X-SES-MESSAGE-TAGS": "campaign=spring sale"})
        self.assertEqual(code, 554, text)
        self.assertIn('5.6.0 Message rejected: X-SES-MESSAGE-TAGS: tag "campaign=spring sale": '
                      "the value may hold only", text)
        code, text = send(self.k, "a@example.test", ["success@simulator.amazonses.com"],
                          headers={"X-SES-MESSAGE-TAGS": "campaign"})
        self.assertEqual(code, 554, text)
        self.assertIn("has no '='", text)

    def test_bad_sequence_and_syntax(self):
        out = raw(self.k, [b"EHLO c\r\n", b"RCPT TO:<r@dest.test>\r\n", b"DATA\r\n",
                           b"MAIL FROM:a@example.test\r\n", b"FOO\r\n", b"QUIT\r\n"])
        codes = [l[:3] for l in out if len(l) >= 4 and l[3] == " "]
        self.assertEqual(codes[0], "220")
        self.assertEqual(codes[1], "250")
        self.assertEqual(codes[2], "503")   # RCPT before MAIL
        self.assertEqual(codes[3], "503")   # DATA before MAIL
        self.assertEqual(codes[4][0], "5")  # MAIL without brackets: syntax error
        self.assertEqual(codes[5], "500")   # unknown command
        self.assertEqual(codes[6], "221")

    def test_overlong_command_line(self):
        out = raw(self.k, [b"EHLO c\r\n", b"NOOP " + b"a" * 2000 + b"\r\n", b"QUIT\r\n"])
        self.assertTrue(any(l.startswith("500") for l in out), out)
        self.assertTrue(out[-1].startswith("221"), out)

    def test_bare_lf_and_nul_in_data_rejected(self):
        for bad in (b"Subject: x\r\n\r\nline one\nline two\r\n", b"Subject: x\r\n\r\nnul\x00byte\r\n"):
            out = raw(self.k, [b"EHLO c\r\n", b"MAIL FROM:<a@example.test>\r\n",
                               b"RCPT TO:<r@dest.test>\r\n", b"DATA\r\n",
                               b"From: a@example.test\r\n" + bad + b".\r\n", b"QUIT\r\n"])
            final = out[-2]
            self.assertTrue(final.startswith("554 5.6.0"), out)
        # each content rejection is published as an SES Reject event of the default set
        evs = self.k.wait_events(lambda e: len([x for x in e if x["eventType"] == "Reject"
                                                and "5.6.0" in x["reject"]["reason"]]) >= 2,
                                 what="Reject events for bare LF and NUL")
        rej = [x for x in evs if x["eventType"] == "Reject" and "5.6.0" in x["reject"]["reason"]]
        self.assertEqual(rej[0]["mail"]["tags"]["ses:configuration-set"], ["txn"])
        self.assertEqual(rej[0]["mail"]["destination"], ["r@dest.test"])
        self.assertRegex(rej[0]["mail"]["messageId"], r"-000000$")

    def test_smuggled_lf_dot_lf_is_not_end_of_data(self):
        # "\n.\n" must not end DATA: the text after it stays in the same (rejected) message.
        out = raw(self.k, [b"EHLO c\r\n", b"MAIL FROM:<a@example.test>\r\n",
                           b"RCPT TO:<r@dest.test>\r\n", b"DATA\r\n",
                           b"From: a@example.test\r\n\r\nhi\n.\nMAIL FROM:<x@evil.test>\r\n.\r\n",
                           b"QUIT\r\n"])
        # one MAIL reply only (the smuggled MAIL was data), then 554 for the message, then 221
        self.assertEqual(sum(1 for l in out if l.startswith("250 2.1.0")), 1, out)
        self.assertTrue(out[-2].startswith("554"), out)
        self.assertTrue(out[-1].startswith("221"), out)

    def test_pipelining(self):
        with socket.create_connection(("127.0.0.1", self.k.port), timeout=10) as s:
            f = s.makefile("rb")
            f.readline()
            s.sendall(b"EHLO c\r\n")
            while True:
                l = f.readline()
                if l[3:4] == b" ":
                    break
            s.sendall(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<p1@dest.test>\r\n"
                      b"RCPT TO:<p2@dest.test>\r\nDATA\r\n")
            replies = [f.readline()[:3] for _ in range(4)]
            self.assertEqual(replies, [b"250", b"250", b"250", b"354"])
            s.sendall(b"From: a@example.test\r\nSubject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n")
            self.assertTrue(f.readline().startswith(b"250 2.0.0 Ok "))
            self.assertTrue(f.readline().startswith(b"221"))

    def test_dot_stuffing_roundtrip_kept_in_send_event_size(self):
        code, text = send(self.k, "a@example.test", ["success@simulator.amazonses.com"],
                          body="..leading dot\r\n.\r\nnot the end\r\n")
        # smtplib dot-stuffs the body; the server must unstuff and accept the whole message
        self.assertEqual(code, 250, text)


class Sandbox(unittest.TestCase):
    def test_sandbox_recipients_rate_and_quota(self):
        with Kiln(account={"mode": "sandbox", "max_24h_send": 3, "max_send_rate": 100,
                           "verified_recipients": ["ok.test", "vip@corp.test"]}) as k:
            with k.smtp() as s:
                s.ehlo("c")
                s.mail("a@example.test")
                code, resp = s.rcpt("r@notverified.test")
                self.assertEqual((code, resp.decode()), (554, UNVERIFIED + "r@notverified.test"))
                self.assertEqual(s.rcpt("vip@corp.test")[0], 250)
                self.assertEqual(s.rcpt("other@corp.test")[0], 554)
                self.assertEqual(s.rcpt("a@ok.test")[0], 250)
                # simulator addresses work in the sandbox and do not count against the quota
                self.assertEqual(s.rcpt("success@simulator.amazonses.com")[0], 250)
                self.assertEqual(s.rcpt("b@ok.test")[0], 250)
                code, resp = s.rcpt("c@ok.test")
                self.assertEqual((code, resp.decode()),
                                 (454, "4.7.0 Throttling failure: Daily message quota exceeded."))
                self.assertEqual(s.rcpt("bounce@simulator.amazonses.com")[0], 250)
                code, _ = s.data(b"From: a@example.test\r\nSubject: q\r\n\r\nbody\r\n")
                self.assertEqual(code, 250)
            q = k.ctl("quota")
            self.assertEqual(q, {"Max24HourSend": 3, "MaxSendRate": 100, "SentLast24Hours": 3})
            # an abandoned transaction gives its reservations back
            with k.smtp() as s:
                s.ehlo("c")
                s.mail("a@example.test")
                self.assertEqual(s.rcpt("d@ok.test")[0], 454)
                s.rset()
            self.assertEqual(k.ctl("quota")["SentLast24Hours"], 3)

    def test_quota_survives_restart_and_release_on_rset(self):
        k = Kiln(account={"max_24h_send": 2, "max_send_rate": -1})
        try:
            k.start()
            with k.smtp() as s:
                s.ehlo("c")
                s.mail("a@example.test")
                self.assertEqual(s.rcpt("r1@dest.test")[0], 250)
                s.rset()          # reservation released
            self.assertEqual(send(k, "a@example.test", ["r1@dest.test"])[0], 250)
            self.assertEqual(k.ctl("quota")["SentLast24Hours"], 1)
            self.assertEqual(k.stop(), 0)
            k.start()
            self.assertEqual(k.ctl("quota")["SentLast24Hours"], 1)
            self.assertEqual(send(k, "a@example.test", ["r2@dest.test"])[0], 250)
            code, text = send(k, "a@example.test", ["r3@dest.test"])
            self.assertEqual((code, text), (454, "4.7.0 Throttling failure: Daily message quota exceeded."))
            self.assertEqual(k.stop(), 0)
        finally:
            k.cleanup()

    def test_send_rate(self):
        with Kiln(account={"max_send_rate": 1, "max_24h_send": -1}) as k:
            with k.smtp() as s:
                s.ehlo("c")
                s.mail("a@example.test")
                self.assertEqual(s.rcpt("r1@dest.test")[0], 250)
                code, resp = s.rcpt("r2@dest.test")
                self.assertEqual((code, resp.decode()),
                                 (454, "4.7.0 Throttling failure: Maximum sending rate exceeded."))
                # simulator recipients count against the rate too
                self.assertEqual(s.rcpt("success@simulator.amazonses.com")[0], 454)
                time.sleep(1.2)
                self.assertEqual(s.rcpt("r2@dest.test")[0], 250)


class TlsAndAuth(unittest.TestCase):
    def test_starttls_and_auth(self):
        port = free_port()
        k = Kiln()
        try:
            cert, key = make_cert(k.tmp)
            h = crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_SHA512))
            k.cfg["submission"].update({
                "tls": {"cert": cert, "key": key},
                "auth": [{"user": "app", "password_hash": h}],
                "trusted_networks": [],
            })
            k.write_config()
            k.start()
            with k.smtp() as s:
                code, resp = s.ehlo("c")
                self.assertIn("STARTTLS", resp.decode())
                self.assertNotIn("AUTH", resp.decode())       # AUTH only over TLS
                code, resp = s.mail("a@example.test")
                self.assertEqual((code, resp.decode()), (530, "5.7.0 Authentication required"))
                s.rset()
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                s.starttls(context=ctx)
                code, resp = s.ehlo("c")
                self.assertIn("AUTH", resp.decode())
                self.assertIn("PLAIN", resp.decode())
                self.assertNotIn("STARTTLS", resp.decode())
                with self.assertRaises(Exception):
                    s.login("app", "wrong")
                s.login("app", "s3cret")
                code, resp = s.mail("a@example.test")
                self.assertEqual(code, 250)
                self.assertEqual(s.rcpt("success@simulator.amazonses.com")[0], 250)
                code, resp = s.data(b"From: a@example.test\r\nSubject: tls\r\n\r\nhi\r\n")
                self.assertEqual(code, 250)
            # AUTH LOGIN, too
            with k.smtp() as s:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                s.starttls(context=ctx)
                s.ehlo("c")
                s.esmtp_features["auth"] = "LOGIN"
                s.login("app", "s3cret")
            self.assertEqual(k.stop(), 0)
            log = k.log()
            self.assertNotIn("s3cret", log)
        finally:
            k.cleanup()


if __name__ == "__main__":
    main()
