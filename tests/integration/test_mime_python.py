"""test_mime_python.py — the messages kiln builds for the SES API's Content.Simple
(api/mime.h) read back by a parser we did not write: Python's email package with
policy.default. tests/tools/mime_tool builds each message from a JSON description; every
subject, display name, address, text and html must come back exactly (a lone LF of the
JSON text comes back as the CRLF it is sent as), in the declared charset, with no defect, every line
CRLF-terminated and within the limits (76 octets for body lines and for header lines that
carry encoded-words, 998 for any line). Content.Raw's decoding (mime_tool raw) is read
back the same way."""
import base64
import email
import email.policy
import json
import os
import re
import subprocess
import unittest

from kilntest import BUILDDIR, main

TOOL = os.path.join(BUILDDIR, "tests", "tools", "mime_tool")
NOW_MS = 1700000000000


def build(**spec):
    spec.setdefault("from", "sender@example.com")
    spec.setdefault("to", ["rcpt@example.net"])
    spec.setdefault("now_ms", NOW_MS)
    p = subprocess.run([TOOL, "simple"], input=json.dumps(spec).encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    return p.returncode, p.stdout, p.stderr.decode()


def crlf(s):
    """The text as it is sent: a lone LF of the JSON is a line break, CRLF on the wire."""
    return s.replace("\r\n", "\n").replace("\n", "\r\n")


class MimeSimple(unittest.TestCase):
    def message(self, **spec):
        rc, out, err = build(**spec)
        self.assertEqual(rc, 0, err)
        self.check_lines(out)
        msg = email.message_from_bytes(out, policy=email.policy.default)
        self.assertEqual(msg.defects, [])
        for part in msg.walk():
            self.assertEqual(part.defects, [], part)
        return out, msg

    def check_lines(self, raw):
        self.assertTrue(raw.endswith(b"\r\n"))
        self.assertNotIn(b"\n", raw.replace(b"\r\n", b""), "bare LF or CR in the message")
        self.assertNotIn(b"\r", raw.replace(b"\r\n", b""), "bare CR in the message")
        head, _, body = raw.partition(b"\r\n\r\n")
        for line in raw.split(b"\r\n"):
            self.assertLessEqual(len(line), 998)
            self.assertTrue(all(b < 0x80 for b in line), line)
        for line in head.split(b"\r\n"):
            if b"=?" in line:
                self.assertLessEqual(len(line), 76, line)
        for word in re.findall(rb"=\?[^?]+\?B\?[A-Za-z0-9+/=]*\?=", head):
            self.assertLessEqual(len(word), 75, word)
        for line in body.split(b"\r\n"):
            self.assertLessEqual(len(line), 76, line)

    def test_emoji_subject_both_parts(self):
        subject = "Grüße aus Köln 🎉🎉 — " + "ein ziemlich langer Betreff " * 5 + "✓"
        text = "Hallo Zoë,\n\nline with trailing blanks  \t\nsum = 1+1\r\n" + "é" * 200 + "\nend"
        html = "<p>Grüße 🎉</p>\n<p>" + "x" * 300 + "=</p>"
        raw, msg = self.message(subject=subject, text=text, html=html, seed="0000018b-1",
                                **{"from": "Zoë Ünïcode <zoe@example.com>",
                                   "to": ["\"Doe, John\" <john@example.net>", "b@example.net",
                                          "Ann Müller <ann@example.org>"],
                                   "cc": ["cc@example.net"],
                                   "reply_to": ["Replies <r@example.com>"]})
        self.assertEqual(msg["Subject"], subject)
        self.assertEqual(msg["From"].addresses[0].display_name, "Zoë Ünïcode")
        self.assertEqual(msg["From"].addresses[0].addr_spec, "zoe@example.com")
        to = msg["To"].addresses
        self.assertEqual([a.display_name for a in to], ["Doe, John", "", "Ann Müller"])
        self.assertEqual([a.addr_spec for a in to],
                         ["john@example.net", "b@example.net", "ann@example.org"])
        self.assertEqual(msg["Cc"].addresses[0].addr_spec, "cc@example.net")
        self.assertEqual(msg["Reply-To"].addresses[0].display_name, "Replies")
        self.assertEqual(msg["Date"].datetime.timestamp(), NOW_MS // 1000)
        self.assertEqual(msg["MIME-Version"], "1.0")
        self.assertIsNone(msg["Message-ID"])
        self.assertIsNone(msg["Bcc"])
        self.assertEqual(msg.get_content_type(), "multipart/alternative")
        parts = list(msg.iter_parts())
        self.assertEqual([p.get_content_type() for p in parts], ["text/plain", "text/html"])
        for p in parts:
            self.assertEqual(p["Content-Transfer-Encoding"], "quoted-printable")
            self.assertEqual(p.get_content_charset(), "utf-8")
        self.assertEqual(parts[0].get_content(), crlf(text))
        self.assertEqual(parts[1].get_content(), crlf(html))

    def test_text_only_exact(self):
        for text in ["plain", "ends with a line break\n", "crlf\r\nkept\r\n", "", "a" * 77,
                     "a" * 75 + " ", " lead and trail \t", "=3D not an escape ==", "tab\there"]:
            with self.subTest(text=text):
                raw, msg = self.message(subject="s", text=text)
                self.assertEqual(msg.get_content_type(), "text/plain")
                self.assertEqual(msg.get_content(), crlf(text))

    def test_html_only(self):
        raw, msg = self.message(subject="Hi", html="<b>bold</b>")
        self.assertEqual(msg.get_content_type(), "text/html")
        self.assertEqual(msg.get_content(), "<b>bold</b>")
        self.assertIn(b"\r\nSubject: Hi\r\n", raw)

    def test_iso_8859_1(self):
        text = "Grüße, Ça va? £5 — no, that dash is not Latin-1"
        rc, out, err = build(subject="x", text=text, text_charset="ISO-8859-1")
        self.assertEqual(rc, 1)
        self.assertIn("Content.Simple.Body.Text.Data:", err)
        self.assertIn("'—'", err)
        text = "Grüße, Ça va? £5 ÿ"
        subject = "Größe ändern"
        raw, msg = self.message(subject=subject, subject_charset="ISO-8859-1", text=text,
                                text_charset="ISO-8859-1", html="<p>ü</p>")
        self.assertIn(b"=?ISO-8859-1?B?", raw)
        self.assertEqual(msg["Subject"], subject)
        plain, html = list(msg.iter_parts())
        self.assertEqual(plain.get_content_charset(), "iso-8859-1")
        self.assertEqual(plain.get_payload(decode=True), text.encode("latin-1"))
        self.assertEqual(plain.get_content(), text)
        self.assertEqual(html.get_content(), "<p>ü</p>")

    def test_stateful_and_multibyte_charsets(self):
        subject = "日本語の件名はとても長くなることがあります。" * 3
        for cs in ["ISO-2022-JP", "Shift_JIS", "EUC-JP", "UTF-8"]:
            with self.subTest(charset=cs):
                raw, msg = self.message(subject=subject, subject_charset=cs,
                                        text="本文です\n", text_charset=cs)
                self.assertEqual(msg["Subject"], subject)
                self.assertEqual(msg.get_content(), "本文です\r\n")

    def test_long_ascii_subject_and_marker(self):
        for subject in ["word " * 40, "x" * 200, "a =?UTF-8?B?w6k=?= b", "tab\tand\r\nnewline"]:
            with self.subTest(subject=subject):
                raw, msg = self.message(subject=subject, text="t")
                self.assertEqual(msg["Subject"], subject)

    def test_many_recipients_fold(self):
        to = ["user%03d@example.net" % i for i in range(40)]
        raw, msg = self.message(subject="s", text="t", to=to)
        self.assertEqual([a.addr_spec for a in msg["To"].addresses], to)
        head = raw.partition(b"\r\n\r\n")[0]
        for line in head.split(b"\r\n"):
            self.assertLessEqual(len(line), 78, line)

    def test_errors_name_the_field(self):
        cases = [
            ({"subject": "s", "text": "t", "text_charset": "no-such-charset"},
             "Content.Simple.Body.Text.Charset: unknown charset 'no-such-charset'"),
            ({"subject": "s", "html": "t", "html_charset": "UTF-16"},
             "Content.Simple.Body.Html.Charset: charset 'UTF-16' cannot carry mail text"),
            ({"subject": "s", "text": "t", "text_charset": "UTF-8//TRANSLIT"},
             "Content.Simple.Body.Text.Charset: unknown charset"),
            ({"subject": "€", "subject_charset": "US-ASCII", "text": "t"},
             "Content.Simple.Subject.Data: the character '€' at octet 0 has no form"),
            ({"subject": "s", "text": "t", "to": ["ok@example.net", "not an address"]},
             "Destination.ToAddresses[1]: 'not an address' is not a valid email address"),
            ({"subject": "s", "text": "t", "from": "a@b, c@d"},
             "FromEmailAddress: 'a@b, c@d' is not a valid email address"),
            ({"subject": "s"}, "Content.Simple.Body: Text or Html required"),
        ]
        for spec, want in cases:
            with self.subTest(want=want):
                rc, out, err = build(**spec)
                self.assertEqual(rc, 1)
                self.assertEqual(out, b"")
                self.assertIn(want, err)


class MimeRaw(unittest.TestCase):
    def raw(self, data, cap=1 << 20):
        p = subprocess.run([TOOL, "raw", str(cap)], input=data, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        return p.returncode, p.stdout, p.stderr.decode()

    def test_lf_message_normalized(self):
        src = ("From: a@example.com\nTo: b@example.net\nSubject: =?UTF-8?B?w6k=?=\n"
               "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
               "Content-Transfer-Encoding: 8bit\n\nBody é\r\nlast").encode()
        b64 = base64.encodebytes(src)  # 76-column lines with LF, as many tools write it
        rc, out, err = self.raw(b64)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, src.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n")
        msg = email.message_from_bytes(out, policy=email.policy.default)
        self.assertEqual(msg["Subject"], "é")
        self.assertEqual(msg.get_content(), "Body é\r\nlast\r\n")

    def test_refusals(self):
        cases = [
            (b"QUJD*", "invalid base64 at offset 4"),
            (base64.b64encode(b"a\rb\r\n"), "bare CR at decoded octet 1"),
            (base64.b64encode(b"a\0b\r\n"), "NUL byte at decoded octet 1"),
            (base64.b64encode(b"x" * 999 + b"\r\n"), "line longer than 998 octets"),
            (base64.b64encode(b"y" * 99 + b"\n") * 11, "invalid base64 at offset 136"),
            (base64.b64encode((b"y" * 98 + b"\n") * 11), "larger than 1000 bytes"),
        ]
        for data, want in cases:
            with self.subTest(want=want):
                rc, out, err = self.raw(data, 1000)
                self.assertEqual(rc, 1)
                self.assertIn("Content.Raw.Data: " + want, err)


if __name__ == "__main__":
    main()
