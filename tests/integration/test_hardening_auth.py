"""test_hardening_auth.py — AUTH as an attacker sees it, against the real kilnd:

* flood: 200 sessions pipeline wrong passwords (real SHA-512 crypt work for every one)
  while a trusted client's NOOP/EHLO/MAIL round trips are timed: the loop must keep
  answering within the issue's 100 ms (p99 asserted at 100 ms; the max, reported, only
  has to stay under 500 ms so that one scheduler hiccup on a shared 2-core CI box does not
  fail the run — the old on-loop crypt stalled for seconds);
* per-client limit: after submission.auth_failures.max failures one 127.0.0.x gets
  "454 4.7.0 Too many failed authentications, try later" even with the right password,
  while another 127.0.0.y still authenticates;
* timing: a wrong password for a known user and any password for an unknown user are both
  answered 535 after the 1 s delay, with medians within 100 ms of each other;
* the right password after a failure still works, and a command pipelined behind a failed
  AUTH waits for its 535;
* sessions that vanish while their check is queued or running do no harm;
* scope: a user limited to identity A cannot send as B (554 naming B, at MAIL and in the
  header section, with a Reject event), a user limited to set X cannot use set Y (554
  naming Y), also shown with swaks, a client we did not write.
"""
import base64
import multiprocessing
import os
import selectors
import shutil
import socket
import statistics
import subprocess
import threading
import time
import unittest

from kilntest import Kiln, free_port, main, wait_for

import warnings
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

PW = "s3cret-pw"
BUSY = "454 4.7.0 Too many failed authentications, try later"
FAILED = "535 5.7.8 Authentication credentials invalid"


def sha512(pw, rounds=5000):
    return crypt.crypt(pw, crypt.mksalt(crypt.METHOD_SHA512, rounds=rounds))


def plain(user, pw):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()


def account_id(hostname):
    """kiln's sendingAccountId: FNV-1a of the lower-cased hostname, mod 10^12."""
    h = 14695981039346656037
    for c in hostname.lower().encode():
        h ^= c
        h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return "%012d" % (h % 10**12)


class Client:
    """A line-oriented SMTP client on a chosen 127.0.0.x source address."""

    def __init__(self, port, src="127.0.0.1", timeout=10):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.bind((src, 0))
        self.s.connect(("127.0.0.1", port))
        self.buf = b""
        self.reply()                         # greeting

    def send(self, data):
        self.s.sendall(data.encode() if isinstance(data, str) else data)

    def reply(self):
        """One whole reply (all its lines); returns its last line."""
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.s.recv(65536)
                if not chunk:
                    raise ConnectionError("closed; buffered %r" % self.buf)
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            line = line.decode()
            if len(line) < 4 or line[3] != "-":
                return line

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def close(self):
        self.s.close()


def auth_config(k, users, trusted, failures=None, tmp_region="us-east-1"):
    k.cfg["server"]["region"] = tmp_region
    k.cfg["submission"]["auth"] = users
    k.cfg["submission"]["trusted_networks"] = trusted
    if failures:
        k.cfg["submission"]["auth_failures"] = failures
    k.write_config()


def flood(port, q, nsess=200, per=10):
    """200 sessions from 127.0.0.2, each pipelining EHLO and 10 wrong AUTH PLAIN lines at
    once; counts the replies by kind and puts the counts on q."""
    counts = {"535": 0, "454 busy": 0, "454 blocked": 0, "421": 0, "closed": 0}
    kinds = (("535", b"535 "), ("454 busy", b"454 4.7.0 Temporary authentication failure"),
             ("454 blocked", BUSY.encode()), ("421", b"421 "))
    sel = selectors.DefaultSelector()
    socks = []
    payload = ("EHLO flood\r\n" + "".join(
        "AUTH PLAIN %s\r\n" % plain("app", "wrong%d" % i) for i in range(per))).encode()
    for _ in range(nsess):
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        s.send(payload)
        sel.register(s, selectors.EVENT_READ, [b""])
        socks.append(s)
    deadline = time.monotonic() + 40
    open_ = nsess
    while open_ and time.monotonic() < deadline:
        for key, _ in sel.select(0.2):
            try:
                data = key.fileobj.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(key.fileobj)
                key.fileobj.close()
                counts["closed"] += 1
                open_ -= 1
                continue
            key.data[0] += data
            *lines, key.data[0] = key.data[0].split(b"\r\n")
            for ln in lines:
                for name, prefix in kinds:
                    if ln.startswith(prefix):
                        counts[name] += 1
    for s in socks:
        if s.fileno() >= 0:
            s.close()
    q.put(counts)


class Flood(unittest.TestCase):
    def test_flood_does_not_stall_the_loop(self):
        k = Kiln()
        try:
            # Every wrong password costs real crypt work: no per-IP block in the way.
            auth_config(k, [{"user": "app", "password_hash": sha512(PW, 20000)}],
                        ["127.0.0.0/8"], {"max": 1000000, "window": "1m"})
            # The timed client sends thousands of NOOP/RSET round trips: no junk limit here.
            k.cfg["submission"]["max_junk_commands"] = -1
            k.write_config()
            k.start()
            # The flood runs in its own process, so that the timed client below does not
            # share the GIL (or its scheduling) with 200 attacking sockets.
            q = multiprocessing.Queue()
            t = multiprocessing.Process(target=flood, args=(k.port, q))
            t.start()
            lat = []
            try:
                time.sleep(0.5)                      # the flood is under way
                c = Client(k.port, "127.0.0.1")
                end = time.monotonic() + 8
                while time.monotonic() < end:
                    for line in ("NOOP", "EHLO trusted.test", "MAIL FROM:<a@example.test>", "RSET"):
                        t0 = time.monotonic()
                        r = c.cmd(line)
                        lat.append(time.monotonic() - t0)
                        self.assertEqual(r[:3], "250", (line, r))
                c.close()
            finally:
                try:
                    counts = q.get(timeout=60)
                finally:
                    t.join(10)
                    if t.is_alive():
                        t.terminate()          # by its PID
                        t.join(10)
            lat_ms = sorted(x * 1000 for x in lat)
            p99 = lat_ms[int(len(lat_ms) * 0.99) - 1]
            print("\nflood: %d trusted round trips; median %.2f ms, p99 %.2f ms, max %.2f ms; "
                  "flood got %r" % (len(lat_ms), statistics.median(lat_ms), p99, lat_ms[-1], counts))
            # The attack ran: crypt checks were done and answered 535 across the sessions.
            self.assertGreater(counts["535"], 500, counts)
            self.assertEqual(counts["454 blocked"], 0, counts)   # the limit was set out of reach
            self.assertGreater(len(lat_ms), 400)
            self.assertLess(p99, 100.0)
            self.assertLess(lat_ms[-1], 500.0)
            self.assertEqual(k.stop(), 0)
            self.assertNotIn("wrong1", k.log())
        finally:
            k.cleanup()


class Limits(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.k = Kiln()
        # Trusted only 127.0.0.1: the other 127.0.0.x clients need AUTH to send.
        auth_config(cls.k, [{"user": "app", "password_hash": sha512(PW)}], ["127.0.0.1/32"],
                    {"max": 5, "window": "1m"})
        cls.k.start()

    @classmethod
    def tearDownClass(cls):
        try:
            assert cls.k.stop() == 0
        finally:
            cls.k.cleanup()

    def timed_fail(self, src, user, pw, out, i):
        c = Client(self.k.port, src)
        c.cmd("EHLO t")
        t0 = time.monotonic()
        r = c.cmd("AUTH PLAIN " + plain(user, pw))
        out[i] = (time.monotonic() - t0, r)
        c.close()

    def test_per_client_limit(self):
        # Five failures from 127.0.0.3 (in parallel sessions, one each).
        out = [None] * 5
        ts = [threading.Thread(target=self.timed_fail, args=("127.0.0.3", "app", "bad", out, i))
              for i in range(5)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        self.assertEqual([r for _, r in out], [FAILED] * 5)
        # Now 127.0.0.3 is blocked, even with the right password, and at once (no crypt).
        c = Client(self.k.port, "127.0.0.3")
        c.cmd("EHLO t")
        t0 = time.monotonic()
        self.assertEqual(c.cmd("AUTH PLAIN " + plain("app", PW)), BUSY)
        self.assertLess(time.monotonic() - t0, 0.9)
        self.assertEqual(c.cmd("AUTH LOGIN"), BUSY)
        # Other commands are answered as usual: unauthenticated MAIL needs AUTH.
        self.assertEqual(c.cmd("NOOP"), "250 2.0.0 Ok")
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>"), "530 5.7.0 Authentication required")
        c.close()
        # Another client is not affected.
        c = Client(self.k.port, "127.0.0.4")
        c.cmd("EHLO t")
        self.assertEqual(c.cmd("AUTH PLAIN " + plain("app", PW)), "235 2.7.0 Authentication successful")
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>"), "250 2.1.0 Ok")
        c.close()
        self.assertIn("smtp.auth_blocked", self.k.log())

    def test_unknown_and_known_users_take_the_same_time(self):
        n = 6
        out = [None] * (2 * n)
        ts = []
        for i in range(n):        # one failure per source address: no limit reached
            ts.append(threading.Thread(target=self.timed_fail,
                                       args=("127.0.1.%d" % (i + 1), "app", "bad", out, 2 * i)))
            ts.append(threading.Thread(target=self.timed_fail,
                                       args=("127.0.2.%d" % (i + 1), "nobody", "bad", out, 2 * i + 1)))
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        known = [d for d, r in out[0::2]]
        unknown = [d for d, r in out[1::2]]
        self.assertEqual({r for _, r in out}, {FAILED})
        mk, mu = statistics.median(known), statistics.median(unknown)
        print("\ntiming: known-user median %.1f ms, unknown-user median %.1f ms"
              % (mk * 1000, mu * 1000))
        # Every failure waits out the 1 s delay (counted from the response's arrival, so the
        # crypt time is inside it): both medians are 1 s plus scheduling noise. 100 ms is
        # far above that noise and far below the 1 s delay itself.
        self.assertGreaterEqual(min(known + unknown), 0.95)
        self.assertLess(abs(mk - mu), 0.1)

    def test_right_password_after_failure_and_pipelining(self):
        c = Client(self.k.port, "127.0.0.6")
        c.cmd("EHLO t")
        t0 = time.monotonic()
        # Pipelined: the NOOP must wait behind the failed AUTH's delayed 535.
        c.send("AUTH PLAIN %s\r\nNOOP\r\n" % plain("app", "wrong"))
        self.assertEqual(c.reply(), FAILED)
        self.assertGreaterEqual(time.monotonic() - t0, 0.95)
        self.assertEqual(c.reply(), "250 2.0.0 Ok")
        # AUTH LOGIN with the right password now works.
        self.assertEqual(c.cmd("AUTH LOGIN"), "334 VXNlcm5hbWU6")
        self.assertEqual(c.cmd(base64.b64encode(b"app").decode()), "334 UGFzc3dvcmQ6")
        self.assertEqual(c.cmd(base64.b64encode(PW.encode()).decode()),
                         "235 2.7.0 Authentication successful")
        c.close()

    def test_sessions_vanishing_mid_check(self):
        # 60 sessions send a wrong password and hang up at once: their checks are queued,
        # running or in the delay when the session ends. kilnd stays up and answers.
        for i in range(60):
            s = socket.socket()
            s.bind(("127.0.3.%d" % (i % 50 + 1), 0))
            s.connect(("127.0.0.1", self.k.port))
            s.sendall(("EHLO x\r\nAUTH PLAIN %s\r\n" % plain("app", "w%d" % i)).encode())
            s.close()
        time.sleep(1.5)
        c = Client(self.k.port, "127.0.0.7")
        self.assertEqual(c.cmd("EHLO t")[:3], "250")
        self.assertEqual(c.cmd("AUTH PLAIN " + plain("app", PW)), "235 2.7.0 Authentication successful")
        c.close()
        self.assertIsNone(self.k.proc.poll())


class Scope(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        k = cls.k = Kiln()
        k.cfg["configuration_sets"] += [
            {"name": "x", "pool": "transactional", "events": [{"type": "file", "path": "./events-x.jsonl"}]},
            {"name": "y", "pool": "transactional", "events": [{"type": "file", "path": "./events-y.jsonl"}]},
        ]
        auth_config(k, [
            {"user": "alice", "password_hash": sha512(PW), "identities": ["a.example.test"]},
            {"user": "bob", "password_hash": sha512(PW), "configuration_sets": ["x"]},
        ], [])
        k.start()
        cls.acct = account_id("mta.kiln.test")

    @classmethod
    def tearDownClass(cls):
        try:
            assert cls.k.stop() == 0
        finally:
            cls.k.cleanup()

    def denied(self, user, kind, name):
        return ("554 5.7.1 Message rejected: User '%s' is not authorized to perform "
                "'ses:SendRawEmail' on resource 'arn:aws:ses:us-east-1:%s:%s/%s'"
                % (user, self.acct, kind, name))

    def login(self, user):
        c = Client(self.k.port, "127.0.0.1")
        c.cmd("EHLO t")
        self.assertEqual(c.cmd("AUTH PLAIN " + plain(user, PW)), "235 2.7.0 Authentication successful")
        return c

    def data(self, c, mail_from, headers):
        self.assertEqual(c.cmd("MAIL FROM:<%s>" % mail_from), "250 2.1.0 Ok")
        self.assertEqual(c.cmd("RCPT TO:<success@simulator.amazonses.com>"), "250 2.1.5 Ok")
        self.assertEqual(c.cmd("DATA")[:3], "354")
        return c.cmd(headers + "\r\nhi\r\n.")

    def test_identity_scope(self):
        c = self.login("alice")
        # MAIL FROM outside the scope (but verified for the account).
        self.assertEqual(c.cmd("MAIL FROM:<app@b.example.test>"),
                         self.denied("alice", "identity", "app@b.example.test"))
        # Header From: outside the scope, envelope inside: 554 at the end of DATA + Reject.
        r = self.data(c, "app@a.example.test",
                      "From: app@a.example.test\r\nSender: ceo@b.example.test\r\nSubject: s1\r\n")
        self.assertEqual(r, self.denied("alice", "identity", "ceo@b.example.test"))
        evs = self.k.wait_events(lambda e: any(x.get("eventType") == "Reject" and
                                               x["mail"]["commonHeaders"].get("subject") == "s1"
                                               for x in e), what="Reject event for s1")
        # Inside the scope (a subdomain of a.example.test too): accepted.
        r = self.data(c, "app@mail.a.example.test", "From: app@a.example.test\r\nSubject: ok\r\n")
        self.assertTrue(r.startswith("250 2.0.0 Ok "), r)
        c.close()

    def test_set_scope(self):
        c = self.login("bob")
        r = self.data(c, "app@example.test",
                      "From: app@example.test\r\nX-SES-CONFIGURATION-SET: y\r\nSubject: s2\r\n")
        self.assertEqual(r, self.denied("bob", "configuration-set", "y"))
        # No set named: the default (txn) is outside bob's scope too.
        r = self.data(c, "app@example.test", "From: app@example.test\r\nSubject: s3\r\n")
        self.assertEqual(r, self.denied("bob", "configuration-set", "txn"))
        r = self.data(c, "app@example.test",
                      "From: app@example.test\r\nX-SES-CONFIGURATION-SET: x\r\nSubject: s4\r\n")
        self.assertTrue(r.startswith("250 2.0.0 Ok "), r)
        c.close()
        # The Send for s4 lands in x; nothing of bob's lands in y's stream (not his tenant).
        self.k.wait_events(lambda e: any(x["mail"]["commonHeaders"].get("subject") == "s4"
                                         for x in e), name="events-x.jsonl", what="s4 in x")
        self.assertEqual([x for x in self.k.events("events-y.jsonl")
                          if x["mail"]["commonHeaders"].get("subject") in ("s2", "s3")], [])
        # alice has no set scope: y is fine for her.
        c = self.login("alice")
        r = self.data(c, "app@a.example.test",
                      "From: app@a.example.test\r\nX-SES-CONFIGURATION-SET: y\r\nSubject: s5\r\n")
        self.assertTrue(r.startswith("250 2.0.0 Ok "), r)
        c.close()

    @unittest.skipUnless(shutil.which("swaks"), "swaks not installed")
    def test_swaks(self):
        def swaks(user, frm, extra=()):
            p = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(self.k.port),
                                "--auth", "PLAIN", "--auth-user", user, "--auth-password", PW,
                                "--from", frm, "--to", "success@simulator.amazonses.com",
                                "--h-From", frm, "--timeout", "20"] + list(extra),
                               capture_output=True, text=True, timeout=60)
            return p.returncode, p.stdout + p.stderr
        rc, out = swaks("alice", "app@b.example.test")
        self.assertNotEqual(rc, 0)
        self.assertIn(self.denied("alice", "identity", "app@b.example.test"), out)
        rc, out = swaks("bob", "app@example.test", ["--add-header", "X-SES-CONFIGURATION-SET: y"])
        self.assertNotEqual(rc, 0)
        self.assertIn(self.denied("bob", "configuration-set", "y"), out)
        rc, out = swaks("alice", "app@a.example.test")
        self.assertEqual(rc, 0, out)
        self.assertIn("250 2.0.0 Ok ", out)


if __name__ == "__main__":
    main()
