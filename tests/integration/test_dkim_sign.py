"""test_dkim_sign.py — kiln's DKIM signatures (mta/dkim.h) judged by verifiers we did not
write: dkimpy (python3-dkim, with python3-nacl for ed25519) and OpenDKIM's
opendkim-testmsg. tests/tools/dkim_sign_tool generates the keys (PKCS#8, mode 0600) and
prints their TXT records, then signs each message and prints it as the receiver gets it
(through kiln's DATA encoder). Each verifier finds the key through DNS: dkimpy through a
dnsfunc answering the TXT records, OpenDKIM through dnsmasq serving them on 127.0.0.1:53
in a private network and mount namespace whose /etc/resolv.conf names it (OpenDKIM asks
only the system resolver; this part needs root and is skipped without it). Every message
is checked with rsa-sha256 and ed25519-sha256, and tampered copies must fail."""
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest

from kilntest import BUILDDIR, Dnsmasq, main

TOOL = os.path.join(BUILDDIR, "tests", "tools", "dkim_sign_tool")
OPENDKIM_TESTMSG = shutil.which("opendkim-testmsg") or (
    "/usr/sbin/opendkim-testmsg" if os.path.exists("/usr/sbin/opendkim-testmsg") else None)
DOMAIN = "example.test"
SELECTORS = {"rsa": "k2024rsa", "ed25519": "k2024ed"}

try:
    import dkim  # python3-dkim
    import nacl  # noqa: F401  (dkimpy needs it for ed25519)
except ImportError:  # pragma: no cover - the Debian packages are a test dependency
    dkim = None

# The messages, as an application submits them (edge cases of RFC 6376 relaxed/relaxed).
# Each has a Date field: OpenDKIM refuses a message without one ("dkim_chunk(): Syntax
# error", RFC 5322 requires Date and From), before it looks at any signature.
DATE = b"Date: Mon, 1 Jan 2024 00:00:00 +0000"
MESSAGES = {
    "plain": b"From: Ann <ann@example.test>\r\nTo: bob@example.net\r\nSubject: Hello\r\n" + DATE +
             b"\r\nMessage-ID: <1@example.test>\r\n"
             b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
             b"X-Mailer: test\r\n\r\nHello Bob,\r\n  two  spaces\t\r\n\r\n\r\n",
    "dot_lines": b"From: a@example.test\r\n" + DATE + b"\r\nSubject: dots\r\n\r\n"
                 b".hidden\r\n..two\r\n.\r\nend\r\n",
    "8bit": b"From: a@example.test\r\n" + DATE + b"\r\nSubject: Gr\xc3\xbc\xc3\x9fe\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            b"Gr\xc3\xbc\xc3\x9fe \xe2\x82\xac\r\n",
    "long_folded": b"From: a@example.test\r\n" + DATE + b"\r\nSubject: " + b"a" * 70 + b"\r\n\t" +
                   b"b" * 70 + b"\r\n  " + b"c" * 70 + b" \r\n\t d\r\nTo: x@example.net,\r\n"
                   b" y@example.net\r\n\r\nbody\r\n",
    "empty_body": b"From: a@example.test\r\n" + DATE + b"\r\nSubject: empty\r\n\r\n",
    "no_final_crlf": b"From: a@example.test\r\n" + DATE + b"\r\nSubject: end\r\n\r\n"
                     b"last line without end",
    "no_space_after_colon": b"From:a@example.test\r\nTo:b@example.net\r\nSubject:x\r\n"
                            b"Date:Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nb\r\n",
    # RFC 5322 allows one To and one Cc; OpenDKIM refuses this one ("Syntax error"), dkimpy
    # checks kiln's bottom-up order on it
    "repeated_to_cc": b"To: one@example.net\r\nFrom: a@example.test\r\nTo: two@example.net\r\n"
                      b"Cc: c1@example.net\r\ncc: c2@example.net\r\n" + DATE +
                      b"\r\nReceived: x\r\nReceived: y\r\n\r\nb\r\n",
    "repeated": b"Feedback-ID: 1:a:kiln\r\nFrom: a@example.test\r\nFeedback-ID: 2:b:kiln\r\n" +
                DATE + b"\r\nReceived: x\r\nReceived: y\r\nFeedback-ID: 3:c:kiln\r\n\r\nb\r\n",
    "bare_lf": b"From: a@example.test\n" + DATE + b"\nSubject: lf\n folded\n\nline 1\nline 2\n",
    "list_unsubscribe": b"From: news@example.test\r\nTo: r@example.net\r\nSubject: News\r\n" +
                        DATE + b"\r\nList-Unsubscribe: <https://u.example.test/u/1>, "
                        b"<mailto:u@example.test>\r\n"
                        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
                        b"Feedback-ID: c1:set1:kiln\r\n\r\nNews.\r\n",
}


# h= kiln writes for each: every instance of the fields it signs, From and
# List-Unsubscribe(-Post) once more, never Received or X-*.
H_WANT = {
    "plain": b"from:from:to:subject:date:message-id:mime-version:content-type",
    "dot_lines": b"from:from:subject:date",
    "8bit": b"from:from:subject:date:content-type:content-transfer-encoding",
    "long_folded": b"from:from:to:subject:date",
    "empty_body": b"from:from:subject:date",
    "no_final_crlf": b"from:from:subject:date",
    "no_space_after_colon": b"from:from:to:subject:date",
    "repeated_to_cc": b"from:from:to:to:cc:cc:date",
    "repeated": b"from:from:date:feedback-id:feedback-id:feedback-id",
    "bare_lf": b"from:from:subject:date",
    "list_unsubscribe": b"from:from:to:subject:date:list-unsubscribe:list-unsubscribe:"
                        b"list-unsubscribe-post:list-unsubscribe-post:feedback-id",
}


def tamper_body(m):
    head, sep, body = m.partition(b"\r\n\r\n")
    return head + sep + body + b"tampered\r\n"


def tamper_subject(m):
    return m.replace(b"Subject:", b"Subject: re:", 1)


def tamper_from(m):
    # a second From above the signed one; over-signing makes this fail
    head, sep, body = m.partition(b"\r\n\r\n")
    return head + b"\r\nFrom: Mallory <m@evil.example>" + sep + body


TAMPERS = {"body": tamper_body, "subject": tamper_subject, "from": tamper_from}


def run_tool(*args, check=True):
    p = subprocess.run([TOOL] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60)
    if check and p.returncode != 0:
        raise AssertionError("dkim_sign_tool %s: exit %d: %s" % (args, p.returncode, p.stderr.decode()))
    return p


class Keys:
    """Both keys generated by kiln in a temporary directory, with their TXT records."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="kiln-dkim-")
        self.path, self.txt = {}, {}
        for kind in ("rsa", "ed25519"):
            self.path[kind] = os.path.join(self.dir, kind + ".pem")
            self.txt[kind] = run_tool("genkey", kind, self.path[kind]).stdout.decode().strip()

    def sign(self, name, msg, kinds):
        src = os.path.join(self.dir, name + ".eml")
        with open(src, "wb") as f:
            f.write(msg)
        args = ["sign", "-t", "1700000000"]
        for kind in kinds:
            args += ["-k", self.path[kind], "-d", DOMAIN, "-s", SELECTORS[kind]]
        return run_tool(*(args + [src])).stdout

    def records(self):
        """{dns name: TXT text} as the verifiers look them up."""
        return {"%s._domainkey.%s" % (SELECTORS[k], DOMAIN): self.txt[k] for k in SELECTORS}


def dkimpy_verify(signed, records, idx=0):
    """(True, "") when dkimpy verifies signature idx, else (False, why)."""
    def dnsfunc(name, timeout=5):
        txt = records.get(name.decode().rstrip("."))
        return txt.encode() if txt else None
    try:
        d = dkim.DKIM(signed)
        if d.verify(idx=idx, dnsfunc=dnsfunc):
            return True, ""
        return False, "signature did not verify"
    except dkim.DKIMException as e:
        return False, str(e)


@unittest.skipUnless(dkim is not None, "python3-dkim and python3-nacl are not installed")
class DkimpyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.keys = Keys()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.keys.dir, ignore_errors=True)

    def test_keys_written_0600_pkcs8_and_records(self):
        for kind, prefix in (("rsa", "v=DKIM1; k=rsa; p=MII"), ("ed25519", "v=DKIM1; k=ed25519; p=")):
            st = os.stat(self.keys.path[kind])
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o600, kind)
            with open(self.keys.path[kind], "rb") as f:
                self.assertTrue(f.read().startswith(b"-----BEGIN PRIVATE KEY-----\n"), kind)
            self.assertTrue(self.keys.txt[kind].startswith(prefix), self.keys.txt[kind])
            # the record kiln prints for the file it loads again is the one it generated
            self.assertEqual(run_tool("txt", self.keys.path[kind]).stdout.decode().strip(),
                             self.keys.txt[kind])
        self.assertEqual(len(self.keys.txt["ed25519"]), len("v=DKIM1; k=ed25519; p=") + 44)
        # written atomically: no temporary file left beside them
        self.assertEqual(sorted(f for f in os.listdir(self.keys.dir) if ".pem" in f),
                         ["ed25519.pem", "rsa.pem"])

    def test_every_message_verifies(self):
        for name, msg in MESSAGES.items():
            for kind in ("rsa", "ed25519"):
                with self.subTest(message=name, alg=kind):
                    signed = self.keys.sign(name, msg, [kind])
                    self.assertTrue(signed.startswith(b"DKIM-Signature: v=1; a=%s-sha256;" % kind.encode()))
                    h = signed.split(b"h=", 1)[1].split(b";", 1)[0].replace(b"\r\n ", b"")
                    self.assertEqual(h, H_WANT[name])
                    ok, why = dkimpy_verify(signed, self.keys.records())
                    self.assertTrue(ok, why)

    def test_tampered_messages_fail(self):
        for name in ("plain", "8bit", "list_unsubscribe", "no_final_crlf"):
            for kind in ("rsa", "ed25519"):
                signed = self.keys.sign(name, MESSAGES[name], [kind])
                for what, tamper in TAMPERS.items():
                    with self.subTest(message=name, alg=kind, tamper=what):
                        bad = tamper(signed)
                        self.assertNotEqual(bad, signed)
                        ok, why = dkimpy_verify(bad, self.keys.records())
                        self.assertFalse(ok, "tampered %s still verifies" % what)
                        if what == "body":
                            self.assertIn("body hash mismatch", why)

    def test_dual_signatures_each_verify(self):
        signed = self.keys.sign("dual", MESSAGES["list_unsubscribe"], ["rsa", "ed25519"])
        first, second = signed.split(b"DKIM-Signature:")[1:3]
        self.assertIn(b"a=rsa-sha256", first)
        self.assertIn(b"a=ed25519-sha256", second)
        for idx in (0, 1):
            ok, why = dkimpy_verify(signed, self.keys.records(), idx)
            self.assertTrue(ok, "signature %d: %s" % (idx, why))
        # with the RSA record gone, the ed25519 signature still verifies on its own
        only_ed = {k: v for k, v in self.keys.records().items() if "ed" in k}
        self.assertFalse(dkimpy_verify(signed, only_ed, 0)[0])
        self.assertTrue(dkimpy_verify(signed, only_ed, 1)[0])
        # List-Unsubscribe(-Post) are signed and over-signed (RFC 8058 section 4)
        flat = signed.replace(b"\r\n ", b" ")
        self.assertIn(b"list-unsubscribe:list-unsubscribe:list-unsubscribe-post:"
                      b"list-unsubscribe-post", flat.replace(b" :", b":"))
        bad = signed.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                             b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
                             b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", 1)
        self.assertFalse(dkimpy_verify(bad, self.keys.records(), 1)[0])

    def test_refused_key_is_a_clear_error(self):
        short = os.path.join(self.keys.dir, "short.pem")
        try:
            subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                            "rsa_keygen_bits:512", "-out", short], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
            p = run_tool("txt", short, check=False)
            self.assertEqual(p.returncode, 1)
            self.assertEqual(p.stderr.decode().strip(), "dkim key %s: RSA key of 512 bits is too "
                             "short (at least 1024)" % short)
        finally:
            if os.path.exists(short):
                os.unlink(short)


# ------------------------------------------------------------------ OpenDKIM

def can_unshare():
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    p = subprocess.run(["unshare", "-m", "-n", "true"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)
    return p.returncode == 0


def opendkim_inner(workdir):
    """Runs inside `unshare -m -n`: loopback up, /etc/resolv.conf replaced (in this mount
    namespace only) by one naming 127.0.0.1, dnsmasq answering the TXT records on port 53,
    then opendkim-testmsg on each case; the results go to workdir/results.json."""
    with open(os.path.join(workdir, "cases.json")) as f:
        spec = json.load(f)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)
    resolv = os.path.join(workdir, "resolv.conf")
    with open(resolv, "w") as f:
        f.write("nameserver 127.0.0.1\noptions attempts:2 timeout:2\n")
    subprocess.run(["mount", "--bind", resolv, "/etc/resolv.conf"], check=True, timeout=30)
    args = []
    for name, txt in spec["records"].items():
        chunks = [txt[i:i + 255] for i in range(0, len(txt), 255)]   # DNS strings of 255 bytes
        args.append("--txt-record=%s,%s" % (name, ",".join(chunks)))
    results = {}
    with Dnsmasq(args, port=53):
        for case in spec["cases"]:
            with open(os.path.join(workdir, case + ".signed"), "rb") as f:
                p = subprocess.run([OPENDKIM_TESTMSG], stdin=f, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, timeout=60)
            results[case] = [p.returncode, p.stderr.decode(errors="replace").strip()]
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f)


@unittest.skipUnless(OPENDKIM_TESTMSG, "opendkim-testmsg is not installed (opendkim-tools)")
class OpenDkimTest(unittest.TestCase):
    def test_opendkim_verifies_and_rejects_tampering(self):
        if not can_unshare():
            self.skipTest("needs root and unshare -m -n: opendkim-testmsg asks only the system "
                          "resolver, pointed here at dnsmasq in a private namespace")
        keys = Keys()
        try:
            cases, expect_ok = [], {}
            for name, msg in MESSAGES.items():
                if name == "repeated_to_cc":
                    continue
                for kind in ("rsa", "ed25519"):
                    # one signature per message: opendkim-testmsg passes if any one verifies
                    signed = keys.sign(name, msg, [kind])
                    case = "%s-%s" % (name, kind)
                    with open(os.path.join(keys.dir, case + ".signed"), "wb") as f:
                        f.write(signed)
                    cases.append(case)
                    expect_ok[case] = True
                    if name in ("plain", "list_unsubscribe"):
                        for what, tamper in TAMPERS.items():
                            bad = "%s-tampered-%s" % (case, what)
                            with open(os.path.join(keys.dir, bad + ".signed"), "wb") as f:
                                f.write(tamper(signed))
                            cases.append(bad)
                            expect_ok[bad] = False
            with open(os.path.join(keys.dir, "cases.json"), "w") as f:
                json.dump({"records": keys.records(), "cases": cases}, f)
            env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
            p = subprocess.run(["unshare", "-m", "-n", sys.executable, os.path.abspath(__file__),
                                "--opendkim-inner", keys.dir], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=300)
            self.assertEqual(p.returncode, 0, p.stderr.decode(errors="replace"))
            with open(os.path.join(keys.dir, "results.json")) as f:
                results = json.load(f)
            for case in cases:
                rc, err = results[case]
                with self.subTest(case=case):
                    if expect_ok[case]:
                        self.assertEqual(rc, 0, "opendkim-testmsg: %s" % err)
                    elif case.endswith("-from"):
                        # a second From: OpenDKIM refuses the message outright
                        self.assertNotEqual(rc, 0, "a message with an added From verified")
                        self.assertIn("Syntax error", err)
                    else:
                        self.assertNotEqual(rc, 0, "tampered message verified")
                        self.assertIn("dkim_eom(): Bad signature", err)
        finally:
            shutil.rmtree(keys.dir, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--opendkim-inner":
        opendkim_inner(sys.argv[2])
    else:
        main()
