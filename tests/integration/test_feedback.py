"""test_feedback.py — the feedback intake end to end (issue 14), against peers we did not
write: kiln sends a message to a private Postfix relay (its own config and queue under a
temp dir) that accepts it and then bounces it (unknown local user) with its own DSN to the
VERP envelope sender bounce+TOKEN@bounce.kiln.test, which Postfix routes to kiln's
feedback listener. kiln must emit one Bounce event with the DSN's fields, suppress the
address and count it in `kilnctl stats`. Then, straight to the listener with Python's
smtplib and email package: a forged DSN (the real token with its MAC changed) changes
nothing; an RFC 5965 ARF report about a message delivered to a sink becomes a Complaint
event, a COMPLAINT suppression and a complaint in the statistics; an out-of-office reply
is ignored; a recipient that is not kiln's gets 550 5.7.1; a report over
feedback.max_message_size gets 552; and a report accepted just before kilnd is killed is
processed after the restart.

Needs root (Postfix's private instance runs its daemons as the postfix user) and Debian's
postfix package; skipped otherwise."""
import base64
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import time
import unittest
from email import message_from_string
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.mime.message import MIMEMessage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from kilntest import KILND, RUN_AS, Kiln, Sink, free_port, send, wait_for  # noqa: E402

BOUNCE_DOMAIN = "bounce.kiln.test"
FBL = "fbl@kiln.test"
SECRET = b"feedback-test-secret-0123456789abcdef"


def postfix_usable():
    return os.geteuid() == 0 and os.path.exists("/usr/sbin/postfix") and shutil.which("postconf")


def token_of(addr):
    """(message id, scope byte) of a bounce+TOKEN@ address: base32 of 31 bytes."""
    local = addr.split("@")[0]
    assert local.startswith("bounce+"), addr
    t = local[len("bounce+"):].upper()
    raw = base64.b32decode(t + "=" * (-len(t) % 8))
    h = raw[:24].hex()
    return "%s-%s-%s-%s-%s-%s-000000" % (h[:16], h[16:24], h[24:28], h[28:32], h[32:36], h[36:48]), raw[24]


def feedback_kiln(tmp_routes, own_secret=True, **extra):
    """A kilnd with a feedback section; its secret file belongs to the user kilnd runs as
    (it reads it again on reload), unless own_secret is False."""
    k = Kiln(routes=tmp_routes)
    secret = os.path.join(k.tmp, "feedback.key")
    with open(secret, "wb") as f:
        f.write(SECRET + b"\n")
    os.chmod(secret, 0o600)
    if own_secret and RUN_AS:
        shutil.chown(secret, RUN_AS)
    k.secret_path = secret
    k.fb_port = free_port()
    k.cfg["feedback"] = dict({"listen": ["127.0.0.1:%d" % k.fb_port], "bounce_domain": BOUNCE_DOMAIN,
                              "addresses": [FBL], "secret_file": secret}, **extra)
    k.write_config()
    return k


def to_listener(k, mail_from, rcpts, msg_bytes):
    """One report to kiln's feedback listener; returns (code, text) of the DATA reply, or of
    the first refused RCPT."""
    with smtplib.SMTP("127.0.0.1", k.fb_port, timeout=15) as s:
        s.ehlo("reporter.test")
        s.mail(mail_from)
        for r in rcpts:
            code, text = s.rcpt(r)
            if code != 250:
                return code, text.decode()
        code, text = s.data(msg_bytes)
        return code, text.decode()


def kind_events(k, kind):
    return [e for e in k.events() if e.get("eventType") == kind]


def totals(k):
    pts = k.ctl("stats")["SendDataPoints"]
    return {f: sum(p[f] for p in pts) for f in ("DeliveryAttempts", "Bounces", "Complaints")}


def suppressed(k):
    return {e["EmailAddress"]: e["Reason"]
            for e in k.ctl("suppression", "list")["SuppressedDestinationSummaries"]}


class FeedbackPostfixTest(unittest.TestCase):
    """The whole loop with a real Postfix: send, accept, bounce later, Bounce event."""

    @unittest.skipUnless(postfix_usable(), "needs root and Debian's postfix")
    def test_postfix_bounce_becomes_bounce_event_and_suppression(self):
        from postfix_relay import PostfixRelay
        pf_port = free_port()
        k = feedback_kiln([{"domain": "pf.test", "host": "127.0.0.1", "port": pf_port}])
        pf = PostfixRelay(os.path.join(k.tmp, "postfix"), pf_port,
                          {BOUNCE_DOMAIN: ("127.0.0.1", k.fb_port)},
                          main_extra={"mydestination": "pf.test", "myhostname": "postfix.fb.test",
                                      "biff": "no", "delay_warning_time": "0"})
        try:
            pf.start()
            k.start()
            self.assertIn("event=feedback.listen", k.log())
            code, text = send(k, "app@example.test", ["nosuchuser@pf.test"], subject="will bounce")
            self.assertEqual(code, 250, text)
            msg_id = text.split()[-1]
            # Postfix takes it (kiln's Delivery event), then bounces it to kiln's listener
            wait_for(lambda: kind_events(k, "Delivery"), 30, 0.2, "Postfix to accept the message")
            ev = wait_for(lambda: kind_events(k, "Bounce"), 60, 0.3,
                          "Postfix's DSN to become a Bounce event")
            self.assertEqual(len(ev), 1, ev)
            b = ev[0]
            self.assertEqual(b["mail"]["messageId"], msg_id)
            self.assertEqual(b["bounce"]["bounceType"], "Permanent")
            self.assertEqual(b["bounce"]["bounceSubType"], "NoEmail")
            self.assertEqual(b["bounce"]["reportingMTA"], "dns; postfix.fb.test")
            self.assertTrue(b["bounce"]["feedbackId"])
            rc = b["bounce"]["bouncedRecipients"]
            self.assertEqual([r["emailAddress"] for r in rc], ["nosuchuser@pf.test"])
            self.assertEqual(rc[0]["status"], "5.1.1")
            self.assertEqual(rc[0]["action"], "failed")
            self.assertIn("unknown user", rc[0]["diagnosticCode"])
            self.assertEqual(suppressed(k).get("nosuchuser@pf.test"), "BOUNCE")
            wait_for(lambda: totals(k)["Bounces"] == 1, 10, 0.2, "stats to count the bounce")
            self.assertRegex(k.log(), r"event=feedback\.bounce .*id=%s match=token" % msg_id)
            # the Postfix log names kiln's listener as where the DSN went
            with open(os.path.join(pf.base, "maillog")) as f:
                self.assertRegex(f.read(), r"to=<bounce\+[a-z2-7]{50}@%s>.*status=sent"
                                 % BOUNCE_DOMAIN.replace(".", r"\."))
            # a new message to the suppressed address is not sent again
            code, text = send(k, "app@example.test", ["nosuchuser@pf.test"], subject="again")
            self.assertEqual(code, 250, text)
            wait_for(lambda: len(kind_events(k, "Bounce")) == 2, 15, 0.2, "the suppressed bounce")
            self.assertEqual(kind_events(k, "Bounce")[1]["bounce"]["bounceSubType"], "OnAccountSuppressionList")
        finally:
            k.stop()
            pf.stop()
            k.cleanup()


def dsn_for(token_addr, rcpt, msg_id_header="<whatever@example.test>"):
    """An RFC 3464 report as Python's email package builds it."""
    m = MIMEMultipart("report", report_type="delivery-status")
    m["From"] = "MAILER-DAEMON@mx.reporter.test"
    m["To"] = token_addr
    m["Subject"] = "Undelivered Mail Returned to Sender"
    m["Auto-Submitted"] = "auto-replied"
    m.attach(MIMEText("Your message could not be delivered.\n"))
    # message/delivery-status: the email package models it as a list of field blocks
    part = Message()
    part["Content-Type"] = "message/delivery-status"
    part.set_payload([message_from_string("Reporting-MTA: dns; mx.reporter.test\n"),
                      message_from_string("Final-Recipient: rfc822; %s\nAction: failed\n"
                                          "Status: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 user "
                                          "unknown\n" % rcpt)])
    m.attach(part)
    orig = EmailMessage()
    orig["Return-Path"] = "<%s>" % token_addr
    orig["Message-ID"] = msg_id_header
    orig["From"] = "app@example.test"
    orig["To"] = rcpt
    orig["Subject"] = "original"
    orig.set_content("hello\n")
    m.attach(MIMEMessage(orig))
    return m.as_bytes()


def arf_for(token_addr, rcpt, arrival="Thu, 03 Dec 2026 17:00:00 +0000"):
    """An RFC 5965 feedback report (appendix B's shape)."""
    m = MIMEMultipart("report", report_type="feedback-report")
    m["From"] = "feedback@provider.test"
    m["To"] = FBL
    m["Subject"] = "FW: original"
    m.attach(MIMEText("This is an email abuse report for an email message received.\n"))
    fr = MIMEText("Feedback-Type: abuse\nUser-Agent: SomeGenerator/1.0\nVersion: 1\n"
                  "Original-Mail-From: <%s>\nOriginal-Rcpt-To: <%s>\nArrival-Date: %s\n"
                  "Source-IP: 127.0.0.10\nReported-Domain: example.test\n" % (token_addr, rcpt, arrival))
    fr.replace_header("Content-Type", "message/feedback-report")
    m.attach(fr)
    orig = EmailMessage()
    orig["Return-Path"] = "<%s>" % token_addr
    orig["From"] = "app@example.test"
    orig["To"] = rcpt
    orig["Subject"] = "original"
    orig.set_content("buy now\n")
    m.attach(MIMEMessage(orig))
    return m.as_bytes()


class FeedbackListenerTest(unittest.TestCase):
    """Reports straight to the listener, about messages delivered to an aiosmtpd sink."""

    def setUp(self):
        self.sink = Sink(host="127.0.0.21")
        self.sink.__enter__()
        self.k = feedback_kiln([{"domain": "dest.test", "host": self.sink.host, "port": self.sink.port}],
                               max_message_size="64KB")
        self.k.start()

    def tearDown(self):
        self.k.stop()
        self.sink.__exit__(None, None, None)
        self.k.cleanup()

    def sent(self, rcpts, subject):
        code, text = send(self.k, "app@example.test", rcpts, subject=subject)
        self.assertEqual(code, 250, text)
        msg_id = text.split()[-1]
        env = wait_for(lambda: [m for m in self.sink.messages if b"Subject: " + subject.encode() in m["data"]],
                       20, 0.1, "the sink to get " + subject)
        return msg_id, env[0]["mail_from"]

    def test_verp_and_forged_token(self):
        msg_id, env_from = self.sent(["alice@dest.test"], "one recipient")
        self.assertRegex(env_from, r"^bounce\+[a-z2-7]{50}@%s$" % BOUNCE_DOMAIN.replace(".", r"\."))
        self.assertEqual(token_of(env_from), (msg_id, 1))
        # the real token with one MAC character changed: accepted (a forger learns nothing),
        # then dropped; nothing suppressed, no event, nothing counted
        local, dom = env_from.split("@")
        # (the third character from the end holds MAC bits only; the last one also holds
        # base32's two spare bits, which must stay zero for the token to decode)
        forged = local[:-3] + ("a" if local[-3] != "a" else "b") + local[-2:] + "@" + dom
        code, text = to_listener(self.k, "", [forged], dsn_for(forged, "alice@dest.test"))
        self.assertEqual(code, 250, text)
        wait_for(lambda: "event=feedback.dropped" in self.k.log(), 10, 0.1, "the forged DSN to be dropped")
        self.assertRegex(self.k.log(), r"event=feedback\.dropped .*forged bounce token")
        self.assertEqual(kind_events(self.k, "Bounce"), [])
        self.assertNotIn("alice@dest.test", suppressed(self.k))
        # a token that does not decode is refused at RCPT
        code, text = to_listener(self.k, "", ["bounce+notatoken@" + BOUNCE_DOMAIN], b"Subject: x\r\n\r\nx\r\n")
        self.assertEqual(code, 550, text)
        # the genuine token: one Bounce event, suppression
        code, text = to_listener(self.k, "", [env_from], dsn_for(env_from, "alice@dest.test"))
        self.assertEqual(code, 250, text)
        ev = wait_for(lambda: kind_events(self.k, "Bounce"), 10, 0.1, "the Bounce event")
        self.assertEqual(ev[0]["mail"]["messageId"], msg_id)
        self.assertEqual(ev[0]["bounce"]["bouncedRecipients"][0]["diagnosticCode"],
                         "smtp; 550 5.1.1 user unknown")
        self.assertEqual(ev[0]["bounce"]["reportingMTA"], "dns; mx.reporter.test")
        self.assertEqual(suppressed(self.k).get("alice@dest.test"), "BOUNCE")

    def test_token_names_its_recipient_only(self):
        """A one-recipient token concerns that recipient only: a DSN naming bob with
        alice's token (a forwarded address, or a forger who got alice's message) bounces
        alice, the address the MAC names, never bob. A several-recipient token concerns
        only the message's recipients."""
        _, env_from = self.sent(["alice@dest.test"], "alice only")
        code, _ = to_listener(self.k, "", [env_from], dsn_for(env_from, "bob@dest.test"))
        self.assertEqual(code, 250)
        ev = wait_for(lambda: kind_events(self.k, "Bounce"), 10, 0.1, "the Bounce event")
        self.assertEqual([r["emailAddress"] for r in ev[0]["bounce"]["bouncedRecipients"]],
                         ["alice@dest.test"])
        self.assertNotIn("bob@dest.test", suppressed(self.k))
        two_id, two_from = self.sent(["carol@dest.test", "dave@dest.test"], "two recipients")
        self.assertEqual(token_of(two_from), (two_id, 0))
        # scope 0: only recipients of the message count; a stranger is dropped
        code, _ = to_listener(self.k, "", [two_from], dsn_for(two_from, "mallory@dest.test"))
        self.assertEqual(code, 250)
        wait_for(lambda: "no failed recipient is a recipient" in self.k.log(), 10, 0.1, "the drop")
        self.assertNotIn("mallory@dest.test", suppressed(self.k))
        code, _ = to_listener(self.k, "", [two_from], dsn_for(two_from, "dave@dest.test"))
        self.assertEqual(code, 250)
        wait_for(lambda: len(kind_events(self.k, "Bounce")) == 2, 10, 0.1, "dave's Bounce event")
        self.assertEqual(suppressed(self.k).get("dave@dest.test"), "BOUNCE")
        self.assertNotIn("carol@dest.test", suppressed(self.k))

    def test_arf_complaint(self):
        msg_id, env_from = self.sent(["erin@dest.test"], "will be reported")
        code, text = to_listener(self.k, "feedback@provider.test", [FBL], arf_for(env_from, "erin@dest.test"))
        self.assertEqual(code, 250, text)
        ev = wait_for(lambda: kind_events(self.k, "Complaint"), 10, 0.1, "the Complaint event")
        c = ev[0]
        self.assertEqual(c["mail"]["messageId"], msg_id)
        self.assertEqual(c["complaint"]["complaintFeedbackType"], "abuse")
        self.assertEqual(c["complaint"]["userAgent"], "SomeGenerator/1.0")
        self.assertEqual(c["complaint"]["arrivalDate"], "2026-12-03T17:00:00.000Z")
        self.assertEqual([r["emailAddress"] for r in c["complaint"]["complainedRecipients"]],
                         ["erin@dest.test"])
        self.assertTrue(c["complaint"]["feedbackId"])
        self.assertEqual(suppressed(self.k).get("erin@dest.test"), "COMPLAINT")
        wait_for(lambda: totals(self.k)["Complaints"] == 1, 10, 0.2, "stats to count the complaint")

    def test_autoreply_refusals_and_size(self):
        _, env_from = self.sent(["frank@dest.test"], "gets an auto reply")
        ooo = EmailMessage()
        ooo["From"] = "frank@dest.test"
        ooo["To"] = env_from
        ooo["Subject"] = "Automatic reply: gets an auto reply"
        ooo["Auto-Submitted"] = "auto-replied"
        ooo.set_content("I am out of the office until Monday.\n")
        code, _ = to_listener(self.k, "frank@dest.test", [env_from], ooo.as_bytes())
        self.assertEqual(code, 250)
        wait_for(lambda: "event=feedback.ignored" in self.k.log(), 10, 0.1, "the reply to be ignored")
        self.assertEqual(kind_events(self.k, "Bounce"), [])
        self.assertNotIn("frank@dest.test", suppressed(self.k))
        # not kiln's address: no relay
        code, text = to_listener(self.k, "", ["someone@elsewhere.test"], b"Subject: x\r\n\r\nx\r\n")
        self.assertEqual((code, text[:5]), (550, "5.7.1"))
        # over feedback.max_message_size (64 KB): 552, nothing stored
        big = dsn_for(env_from, "frank@dest.test") + (b"x" * 98 + b"\r\n") * 700
        code, text = to_listener(self.k, "", [env_from], big)
        self.assertEqual(code, 552, text)
        # AUTH is not offered on the feedback listener
        with smtplib.SMTP("127.0.0.1", self.k.fb_port, timeout=10) as s:
            s.ehlo("x.test")
            self.assertFalse(s.has_extn("auth"))
            self.assertEqual(s.docmd("AUTH PLAIN AGFhAGI=")[0] // 100, 5)

    def test_reload_and_secret_owner(self):
        """A reload reads the secret again as server.user: it works when that user owns the
        file (the listener goes on answering), and --check-config warns when it does not."""
        self.k.cfg["feedback"]["complaint_hold_rate"] = "0.5%"
        self.k.write_config()
        p = self.k.ctl("reload", json_out=False, expect_ok=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        code, text = to_listener(self.k, "", ["someone@elsewhere.test"], b"Subject: x\r\n\r\nx\r\n")
        self.assertEqual(code, 550, text)
        if RUN_AS:
            other = feedback_kiln([], own_secret=False)
            try:
                p = subprocess.run([KILND, "--check-config", "-c", other.path], capture_output=True,
                                   text=True, timeout=30)
                self.assertIn("feedback.secret_file %s is owned by uid 0, not by server.user %s"
                              % (other.secret_path, RUN_AS), p.stdout + p.stderr)
            finally:
                other.cleanup()

    def test_report_survives_a_kill(self):
        """A report answered 250 and kilnd killed right after: once restarted, the report
        has been processed exactly once (before the kill, or from the inbox at start-up)."""
        _, env_from = self.sent(["grace@dest.test"], "crash")
        code, _ = to_listener(self.k, "", [env_from], dsn_for(env_from, "grace@dest.test"))
        self.assertEqual(code, 250)
        self.k.proc.send_signal(signal.SIGKILL)
        self.k.proc.wait(10)
        self.k.start()
        wait_for(lambda: suppressed(self.k).get("grace@dest.test") == "BOUNCE", 15, 0.2,
                 "the report to be processed")
        time.sleep(0.5)
        self.assertEqual(len(kind_events(self.k, "Bounce")), 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
