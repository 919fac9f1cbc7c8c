"""test_api_smtp_password.py — an application's SES SMTP settings work against kiln: the user
name is an api.access_keys id, the password SES's derivation of the key's secret for the
server's region (AWS's documented algorithm, computed here as AWS's script does). With the
real kilnd and Python's smtplib:

* AUTH PLAIN and AUTH LOGIN with the key id and its SES SMTP password get 235, and a message
  sent in that session arrives at the sink;
* a wrong password for the key (the secret itself, the password derived for another region,
  one character changed) gets 535, as does the right password under another key id;
* a submission.auth user next to the keys still logs in with its own password, and not
  with a key's password;
* a key with a scope (identities) is held to it as a submission.auth user is: MAIL FROM
  outside it gets SES's 554 naming the key id;
* failures with a key id count toward submission.auth_failures like any other: after the
  limit even the right password gets 454 from that client;
* without AUTH nothing is relayed (trusted_networks empty).

Each test uses its own 127.0.0.x source address, so that their failures do not add up.
"""
import base64
import hashlib
import hmac
import smtplib
import unittest

from apitest import KEY2_ID, KEY2_SECRET, KEY_ID, SECRET, api_kiln
from kilntest import Sink, main, wait_for

import warnings
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

SCOPED_ID, SCOPED_SECRET = KEY2_ID, KEY2_SECRET
REGION = "local"
USER_PW = "s3cret-pw"
FAILURES_MAX = 8
BLOCKED = "Too many failed authentications"


# AWS's documented derivation (SES Developer Guide, "Obtaining Amazon SES SMTP credentials",
# the Python script), without the script's list of regions with an SES SMTP endpoint.
def sign(key, msg):
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def ses_smtp_password(secret_access_key, region):
    signature = sign(("AWS4" + secret_access_key).encode("utf-8"), "11111111")
    signature = sign(signature, region)
    signature = sign(signature, "ses")
    signature = sign(signature, "aws4_request")
    signature = sign(signature, "SendRawEmail")
    return base64.b64encode(bytes([0x04]) + signature).decode("utf-8")


class SesSmtpPassword(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sink = Sink(host="127.0.0.41").__enter__()
        # the keys alone, no API listener: their SES SMTP passwords are what is tested
        k = cls.k = api_kiln(
            keys=[(KEY_ID, SECRET), (SCOPED_ID, SCOPED_SECRET, {"identities": ["ops@other.test"]})],
            listen=False, routes=[{"domain": "dest.test", "host": cls.sink.host, "port": cls.sink.port}],
            server={"region": REGION},
            submission={"trusted_networks": [],
                        "auth_failures": {"max": FAILURES_MAX, "window": "5m"},
                        "auth": [{"user": "app", "password_hash": crypt.crypt(
                            USER_PW, crypt.mksalt(crypt.METHOD_SHA512))}]})
        k.start()
        cls.password = ses_smtp_password(SECRET, REGION)

    @classmethod
    def tearDownClass(cls):
        try:
            assert cls.k.stop() == 0
        finally:
            cls.k.cleanup()
            cls.sink.__exit__(None, None, None)

    def smtp(self, src):
        return smtplib.SMTP("127.0.0.1", self.k.port, timeout=15, source_address=(src, 0))

    def login_code(self, user, password, mech="PLAIN", src="127.0.0.42"):
        """One AUTH exchange (smtplib's login() would try LOGIN after a failed PLAIN, two
        failures for the limiter); its reply code."""
        with self.smtp(src) as s:
            s.ehlo("client.test")
            s.user, s.password = user, password
            auth = s.auth_plain if mech == "PLAIN" else s.auth_login
            try:
                code, _ = s.auth(mech, auth, initial_response_ok=mech == "PLAIN")
                return code
            except smtplib.SMTPAuthenticationError as e:
                return e.smtp_code

    def send_as(self, user, password, subject, mech=None, src="127.0.0.1"):
        with self.smtp(src) as s:
            s.ehlo("client.test")
            if mech == "LOGIN":
                s.user, s.password = user, password
                code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
                self.assertEqual(code, 235)
            else:
                s.login(user, password)
            msg = ("From: app@example.test\r\nTo: rcpt@dest.test\r\nSubject: %s\r\n\r\n"
                   "sent with an SES SMTP password\r\n" % subject)
            refused = s.sendmail("app@example.test", ["rcpt@dest.test"], msg.encode())
            self.assertEqual(refused, {})

    def arrived(self, subject):
        return wait_for(lambda: [m for m in self.sink.messages
                                 if ("Subject: %s" % subject).encode() in m["data"]],
                        30, 0.1, "message %r at the sink" % subject)

    def test_plain_login_and_send(self):
        self.send_as(KEY_ID, self.password, "ses-plain")
        self.arrived("ses-plain")
        self.assertIn("user=%s result=ok" % KEY_ID, self.k.log().replace('"', ""))

    def test_login_mechanism(self):
        self.send_as(KEY_ID, self.password, "ses-login", mech="LOGIN")
        self.arrived("ses-login")

    def test_wrong_passwords(self):
        wrong = [SECRET, ses_smtp_password(SECRET, "us-east-1"),
                 ("C" if self.password[0] != "C" else "D") + self.password[1:]]
        for pw in wrong:
            self.assertEqual(self.login_code(KEY_ID, pw), 535, pw)
        self.assertEqual(self.login_code(KEY_ID, SECRET, mech="LOGIN"), 535)
        self.assertEqual(self.login_code(SCOPED_ID, self.password), 535)
        # the key's password is not a submission.auth user's, nor the other way round
        self.assertEqual(self.login_code("app", self.password), 535)
        self.assertEqual(self.login_code(KEY_ID, USER_PW), 535)
        self.assertEqual(self.login_code("app", USER_PW), 235)

    def test_scope(self):
        with self.smtp("127.0.0.46") as s:
            s.ehlo("client.test")
            s.login(SCOPED_ID, ses_smtp_password(SCOPED_SECRET, REGION))
            code, resp = s.mail("app@example.test")
            self.assertEqual(code, 554)
            self.assertIn("User '%s' is not authorized to perform 'ses:SendRawEmail'" % SCOPED_ID,
                          resp.decode())
            self.assertIn("identity/app@example.test", resp.decode())
            code, _ = s.mail("ops@other.test")
            self.assertEqual(code, 250)

    def test_failures_counted(self):
        src = "127.0.0.43"
        for i in range(FAILURES_MAX):
            self.assertEqual(self.login_code(KEY_ID, "wrong-%d" % i, src=src), 535)
        with self.smtp(src) as s:
            s.ehlo("client.test")
            s.user, s.password = KEY_ID, self.password
            with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
                s.auth("PLAIN", s.auth_plain)
            self.assertEqual(cm.exception.smtp_code, 454)
            self.assertIn(BLOCKED, cm.exception.smtp_error.decode())
        # another client is not affected
        self.assertEqual(self.login_code(KEY_ID, self.password, src="127.0.0.44"), 235)

    def test_no_auth_no_relay(self):
        with self.smtp("127.0.0.45") as s:
            s.ehlo("client.test")
            self.assertIn("PLAIN", s.esmtp_features.get("auth", ""))
            code, _ = s.mail("app@example.test")
            self.assertEqual(code, 530)


if __name__ == "__main__":
    main()
