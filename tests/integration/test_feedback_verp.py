"""test_feedback_verp.py — the VERP envelope sender of outgoing mail with a `feedback:`
section (issue 14, mta/fbtoken.c): kilnd delivers to an SMTP sink we did not write
(aiosmtpd, kilntest.Sink) and the sink sees MAIL FROM bounce+TOKEN@<feedback.bounce_domain>
for an identity without a custom MAIL FROM; TOKEN, decoded here by Python's own base32 and
hmac (not kiln's code), names the message id kiln answered in its 250, has scope 1 and a MAC
over the recipient for a one-recipient transaction and scope 0 and a MAC over the message
alone for two recipients; without the section the MAIL FROM is the submitted sender.
(The feedback listener itself is not exercised here.)"""
import base64
import hashlib
import hmac
import os
import re
import unittest

from kilntest import RUN_AS, Kiln, Sink, free_port, main, send, wait_for

KEY = b"kiln feedback test key 0123456789"
BOUNCE_DOMAIN = "bounce.kiln.test"
TOKEN_RE = re.compile(r"^bounce\+([a-z2-7]{50})@(.+)$")


def mid_of(text):
    return re.match(r"^2\.0\.0 Ok (\S+)$", text).group(1)


def decode(token):
    """(message id hex digits, scope, mac) of a 50-character token."""
    raw = base64.b32decode(token.upper() + "======")
    assert len(raw) == 31, len(raw)
    return raw[:24].hex(), raw[24], raw[25:]


def mac(msg_id, rcpt):
    m = hmac.new(KEY, b"kiln-verp-1\0" + msg_id.encode() + b"\0" + rcpt.lower().encode(),
                 hashlib.sha256)
    return m.digest()[:6]


def write_key(tmp):
    path = os.path.join(tmp, "feedback.key")
    with open(path, "wb") as f:
        f.write(KEY + b"\n")
    os.chmod(path, 0o600)
    if RUN_AS and os.geteuid() == 0:   # kilnd reads it again on reload, after dropping root
        import pwd
        pw = pwd.getpwnam(RUN_AS)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def kiln_for(sink, feedback=True):
    k = Kiln(routes=[{"domain": "dest.test", "host": sink.host, "port": sink.port}])
    if feedback:
        k.cfg["feedback"] = {"listen": ["127.0.0.1:%d" % free_port()],
                             "bounce_domain": BOUNCE_DOMAIN.upper(),
                             "secret_file": write_key(k.tmp)}
        k.write_config()
    return k


class FeedbackVerp(unittest.TestCase):
    def deliver(self, sink, k, rcpts):
        before = len(sink.messages)
        code, text = send(k, "app@example.test", rcpts, subject="verp")
        self.assertEqual(code, 250, text)
        wait_for(lambda: len(sink.messages) > before, what="sink to receive the message")
        return mid_of(text), sink.messages[before]

    def test_token_names_message_and_recipient(self):
        with Sink("127.0.0.141") as sink, kiln_for(sink) as k:
            # one recipient: scope 1, the MAC binds that recipient
            mid, m = self.deliver(sink, k, ["Ann@dest.test"])
            got = TOKEN_RE.match(m["mail_from"])
            self.assertIsNotNone(got, m["mail_from"])
            self.assertEqual(got.group(2), BOUNCE_DOMAIN)           # lower-cased by config
            self.assertLessEqual(len(m["mail_from"].split("@")[0]), 64)
            hexid, scope, tag = decode(got.group(1))
            self.assertEqual(hexid, re.sub(r"[^0-9a-f]", "", mid.lower())[:48])
            self.assertEqual(scope, 1)
            self.assertEqual(tag, mac(mid, "ann@dest.test"))
            self.assertNotEqual(tag, mac(mid, "bob@dest.test"))
            self.assertEqual(m["rcpts"], ["Ann@dest.test"])

            # two recipients in one transaction: scope 0, the MAC binds the message alone
            mid2, m2 = self.deliver(sink, k, ["a@dest.test", "b@dest.test"])
            got = TOKEN_RE.match(m2["mail_from"])
            self.assertIsNotNone(got, m2["mail_from"])
            self.assertEqual(got.group(2), BOUNCE_DOMAIN)
            self.assertEqual(sorted(m2["rcpts"]), ["a@dest.test", "b@dest.test"])
            hexid, scope, tag = decode(got.group(1))
            self.assertEqual(hexid, re.sub(r"[^0-9a-f]", "", mid2.lower())[:48])
            self.assertEqual(scope, 0)
            self.assertEqual(tag, mac(mid2, ""))
            self.assertNotEqual(mid, mid2)

    def test_without_feedback_the_submitted_sender(self):
        with Sink("127.0.0.142") as sink, kiln_for(sink, feedback=False) as k:
            _, m = self.deliver(sink, k, ["a@dest.test"])
            self.assertEqual(m["mail_from"], "app@example.test")
            _, m = self.deliver(sink, k, ["a@dest.test", "b@dest.test"])
            self.assertEqual(m["mail_from"], "app@example.test")


if __name__ == "__main__":
    main()
