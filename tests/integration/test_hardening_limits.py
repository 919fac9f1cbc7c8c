"""test_hardening_limits.py — issue items 4 and 8 attacked against the real kilnd: a slowloris
from a non-trusted 127.0.0.x address holding max_sessions_per_client connections, the
per-client connection rate, the session deadline, the minimum DATA rate, the junk-command
limit and the reserved share for trusted clients; and (item 8) a kilnd started with a low
RLIMIT_NOFILE whose deliveries run out of descriptors: mail deferred (InternalFailure),
never bounced, no IP marked down, the episode logged once, everything delivered after.

The application is 127.0.0.1 (the only address in trusted_networks); attackers bind their
sockets to other 127.0.0.x addresses, which are local on Linux but not trusted."""
import json
import os
import resource
import socket
import subprocess
import threading
import time
import unittest

from kilntest import (KILND, Kiln, Sink, base_config, free_port, main, send, wait_for)

APP = "127.0.0.1"


def limits_kiln(**sub):
    """A kilnd whose trusted_networks hold only the application's address."""
    k = Kiln()
    k.cfg["submission"]["trusted_networks"] = [APP + "/32"]
    k.cfg["submission"].update(sub)
    k.write_config()
    return k


def read_reply(sock):
    """One whole SMTP reply (all its lines) as text; '' if the peer closed first."""
    buf = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return buf.decode(errors="replace")
        buf += chunk
        lines = buf.split(b"\r\n")
        if len(lines) > 1:
            done = [l for l in lines[:-1] if len(l) >= 4 and l[3:4] == b" "]
            if done:
                return buf.decode(errors="replace")


def connect(k, src, timeout=5):
    """A TCP connection from src to kilnd and its greeting (or its refusal)."""
    s = socket.create_connection(("127.0.0.1", k.port), timeout=timeout, source_address=(src, 0))
    return s, read_reply(s)


def command(sock, line):
    sock.sendall(line.encode() + b"\r\n")
    return read_reply(sock)


def closed_by_peer(sock, timeout=5):
    """True if the peer closes the connection within timeout (bytes before EOF are read)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except (socket.timeout, ConnectionResetError):
        return False


class Trickler:
    """Holds connections open by sending one byte of an endless EHLO line every interval."""

    def __init__(self, socks, interval=1.0):
        self.socks = socks
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        for _ in range(600):           # bounded: 600 intervals at most
            if self.stop.wait(self.interval):
                return
            for s in self.socks:
                try:
                    s.send(b"X")
                except OSError:
                    pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        for s in self.socks:
            s.close()


class SessionLimits(unittest.TestCase):
    def test_slowloris_from_one_host_does_not_stop_the_application(self):
        """An attacker holds max_sessions_per_client connections trickling a byte a second;
        its extra connections get the per-host 421, while the trusted application (and
        another host) still get 220, 250 and a message through."""
        with limits_kiln(max_sessions_per_client=5, max_connection_rate_per_client=-1) as k:
            held = []
            for _ in range(5):
                s, greet = connect(k, "127.0.0.66")
                self.assertTrue(greet.startswith("220 "), greet)
                held.append(s)
            with Trickler(held):
                for _ in range(3):
                    s, greet = connect(k, "127.0.0.66")
                    self.assertEqual(greet, "421 4.7.0 Too many connections from your host, try later\r\n")
                    self.assertTrue(closed_by_peer(s))
                    s.close()
                # the application: greeting, EHLO and a whole message, every time
                for _ in range(3):
                    s, greet = connect(k, APP)
                    self.assertTrue(greet.startswith("220 "), greet)
                    self.assertTrue(command(s, "EHLO app.test").startswith("250-"))
                    s.close()
                code, text = send(k, "app@example.test", ["rcpt@dest.test"])
                self.assertEqual(code, 250, text)
                # another (untrusted) host is not blocked by the first one's sessions
                s, greet = connect(k, "127.0.0.67")
                self.assertTrue(greet.startswith("220 "), greet)
                s.close()
                # trusted clients are exempt from the per-client cap by default
                app = [connect(k, APP) for _ in range(7)]
                self.assertTrue(all(g.startswith("220 ") for _, g in app), [g for _, g in app])
                for s, _ in app:
                    s.close()
            self.assertIn("limit=max_sessions_per_client", k.log())

    def test_trusted_clients_limited_when_configured(self):
        with limits_kiln(max_sessions_per_client=2, max_connection_rate_per_client=-1,
                         limit_trusted_clients=True) as k:
            # the start-up probe's session (from APP too) may still be counted under load
            wait_for(lambda: k.ctl("status")["Sessions"] == 0, 10, 0.05, "no session open")
            a = [connect(k, APP) for _ in range(2)]
            self.assertTrue(all(g.startswith("220 ") for _, g in a))
            s, greet = connect(k, APP)
            self.assertEqual(greet, "421 4.7.0 Too many connections from your host, try later\r\n")
            for x, _ in a + [(s, None)]:
                x.close()

    def test_connection_rate_per_client(self):
        """The 4th connection within a minute from one host gets the rate 421, even after
        the first three closed; the trusted application is exempt."""
        with limits_kiln(max_connection_rate_per_client="3/m") as k:
            for _ in range(3):
                s, greet = connect(k, "127.0.0.68")
                self.assertTrue(greet.startswith("220 "), greet)
                command(s, "QUIT")
                s.close()
            for _ in range(2):
                s, greet = connect(k, "127.0.0.68")
                self.assertEqual(greet, "421 4.7.0 Connection rate limit exceeded\r\n")
                s.close()
            s, greet = connect(k, "127.0.0.69")
            self.assertTrue(greet.startswith("220 "), greet)
            s.close()
            for _ in range(6):
                s, greet = connect(k, APP)
                self.assertTrue(greet.startswith("220 "), greet)
                s.close()

    def test_reserved_share_keeps_room_for_the_application(self):
        """Untrusted hosts fill max_sessions - reserved_sessions; the next untrusted one is
        refused, the trusted application still gets in and sends mail."""
        with limits_kiln(max_sessions=10, reserved_sessions=4, max_sessions_per_client=-1,
                         max_connection_rate_per_client=-1) as k:
            held = []
            for i in range(6):
                s, greet = connect(k, "127.0.0.%d" % (70 + i % 3))
                self.assertTrue(greet.startswith("220 "), greet)
                held.append(s)
            s, greet = connect(k, "127.0.0.80")
            self.assertEqual(greet, "421 4.7.0 Too many connections\r\n")
            s.close()
            with Trickler(held):
                code, text = send(k, "app@example.test", ["rcpt@dest.test"])
                self.assertEqual(code, 250, text)
                app = [connect(k, APP) for _ in range(4)]
                self.assertTrue(all(g.startswith("220 ") for _, g in app), [g for _, g in app])
                # all 10 taken: even the application waits now
                s, greet = connect(k, APP)
                self.assertEqual(greet, "421 4.7.0 Too many connections\r\n")
                s.close()
                for x, _ in app:
                    x.close()
            self.assertIn("limit=reserved_sessions", k.log())

    def test_authenticated_session_leaves_the_untrusted_share(self):
        """A remote application that authenticates no longer holds an untrusted slot: with
        4 untrusted slots, after its AUTH an attacker still gets exactly 4 sessions (3 if
        the authenticated one still counted), and the 5th is refused."""
        import base64
        import crypt
        h = crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_SHA512))
        with limits_kiln(max_sessions=6, reserved_sessions=2, max_sessions_per_client=-1,
                         max_connection_rate_per_client=-1,
                         auth=[{"user": "app", "password_hash": h}]) as k:
            app, greet = connect(k, "127.0.0.90")      # untrusted address, authenticates
            self.assertTrue(greet.startswith("220 "), greet)
            self.assertIn("AUTH PLAIN", command(app, "EHLO app.test"))
            token = base64.b64encode(b"\0app\0s3cret").decode()
            self.assertTrue(command(app, "AUTH PLAIN " + token).startswith("235 "))
            held = []
            for _ in range(4):
                s, greet = connect(k, "127.0.0.66")
                self.assertTrue(greet.startswith("220 "), greet)
                held.append(s)
            s, greet = connect(k, "127.0.0.66")
            self.assertEqual(greet, "421 4.7.0 Too many connections\r\n")
            s.close()
            # the authenticated application still works in its session
            self.assertTrue(command(app, "MAIL FROM:<app@example.test>").startswith("250"))
            for x in held + [app]:
                x.close()


class SessionBehaviour(unittest.TestCase):
    def test_session_deadline(self):
        """A client that keeps the session alive with NOOPs gets the deadline 421."""
        with limits_kiln(session_deadline="2s", max_junk_commands=-1) as k:
            s, greet = connect(k, APP)
            command(s, "EHLO app.test")
            start = time.monotonic()
            last = ""
            for _ in range(40):                       # at most 40 x 0.25 s
                last = command(s, "NOOP")
                if not last.startswith("250"):
                    break
                time.sleep(0.25)
            self.assertIn("421 4.4.2 Session time limit exceeded", last)
            self.assertGreaterEqual(time.monotonic() - start, 1.0)
            self.assertTrue(closed_by_peer(s))
            s.close()
            # a fresh session works
            code, text = send(k, "app@example.test", ["rcpt@dest.test"])
            self.assertEqual(code, 250, text)

    def test_min_data_rate(self):
        """DATA trickled below min_data_rate gets 421 4.4.2 after the window; the message is
        not stored (no Send event, nothing delivered); a normal sender is unaffected."""
        with Sink() as sink:
            k = limits_kiln(min_data_rate=1000, min_data_rate_window="2s")
            k.cfg["routes"] = [{"domain": "dest.test", "host": sink.host, "port": sink.port}]
            k.write_config()
            with k:
                s, greet = connect(k, APP)
                command(s, "EHLO app.test")
                self.assertTrue(command(s, "MAIL FROM:<app@example.test>").startswith("250"))
                self.assertTrue(command(s, "RCPT TO:<slow@dest.test>").startswith("250"))
                self.assertTrue(command(s, "DATA").startswith("354"))
                s.sendall(b"From: app@example.test\r\nTo: slow@dest.test\r\nSubject: slow\r\n\r\n")
                got = ""
                s.settimeout(0.3)
                for _ in range(40):                   # at most ~40 x 0.3 s
                    try:
                        s.send(b"aaaaaaaaaaaaaaaaaaa\r\n")
                        got += s.recv(4096).decode()
                    except socket.timeout:
                        continue
                    except OSError:
                        break
                    if got:
                        break
                self.assertEqual(got.split("\r\n")[0], "421 4.4.2 Transfer rate too low")
                s.close()
                code, text = send(k, "app@example.test", ["fast@dest.test"])
                self.assertEqual(code, 250, text)
                wait_for(lambda: len(sink.messages) >= 1, 15, what="the fast message delivered")
                time.sleep(0.5)
                rcpts = [r for m in sink.messages for r in m["rcpts"]]
                self.assertEqual(rcpts, ["fast@dest.test"])
                sends = [e for e in k.events() if e.get("eventType") == "Send"]
                self.assertEqual(len(sends), 1, sends)
                self.assertIn("limit=min_data_rate", k.log())

    def test_junk_commands(self):
        """max_junk_commands NOOP/RSET/VRFY/unknown/rejected RCPT are answered; the next one
        gets 421 and the connection closes; an accepted message starts the count again."""
        with limits_kiln(max_junk_commands=5) as k:
            s, greet = connect(k, APP)
            command(s, "EHLO app.test")
            for line in ("NOOP", "RSET", "VRFY postmaster", "NOOP", "RSET"):
                self.assertTrue(command(s, line)[:1] == "2", line)
            self.assertEqual(command(s, "NOOP"), "421 4.7.0 Too many junk commands\r\n")
            self.assertTrue(closed_by_peer(s))
            s.close()
            # an accepted message resets the count
            s, greet = connect(k, APP)
            command(s, "EHLO app.test")
            for _ in range(2):
                for _ in range(4):
                    self.assertTrue(command(s, "NOOP").startswith("250"))
                self.assertTrue(command(s, "MAIL FROM:<app@example.test>").startswith("250"))
                self.assertTrue(command(s, "RCPT TO:<a@dest.test>").startswith("250"))
                self.assertTrue(command(s, "DATA").startswith("354"))
                r = command(s, "From: app@example.test\r\nSubject: j\r\n\r\nhi\r\n.")
                self.assertTrue(r.startswith("250 2.0.0 Ok "), r)
            s.close()

    def test_rejected_rcpts_are_junk(self):
        """In the sandbox, RCPTs to unverified recipients are refused (554) and count as
        junk: a recipient harvester is cut off."""
        k = limits_kiln(max_junk_commands=3)
        k.cfg["account"]["mode"] = "sandbox"
        k.cfg["account"]["verified_recipients"] = ["ok@dest.test"]
        k.write_config()
        with k:
            s, greet = connect(k, APP)
            command(s, "EHLO app.test")
            self.assertTrue(command(s, "MAIL FROM:<app@example.test>").startswith("250"))
            self.assertTrue(command(s, "RCPT TO:<ok@dest.test>").startswith("250"))
            for i in range(3):
                self.assertTrue(command(s, "RCPT TO:<guess%d@dest.test>" % i).startswith("554 5.7.1"))
            self.assertEqual(command(s, "RCPT TO:<guess9@dest.test>"),
                             "421 4.7.0 Too many junk commands\r\n")
            self.assertTrue(closed_by_peer(s))
            s.close()


SINK = os.path.join(os.path.dirname(KILND), "kiln-sink")
NDOMAINS = 40


class SlowSink:
    """kiln-sink (a child, ended by its PID) on NDOMAINS addresses 127.0.0.101..., one port,
    answering each message's final dot after delay_ms: every delivery holds its connection."""

    def __init__(self, delay_ms=1500):
        self.port = free_port("127.0.0.101")
        self.addrs = ["127.0.0.%d" % (101 + i) for i in range(NDOMAINS)]
        args = [SINK, "--delay-data", str(delay_ms), "--timeout", "30"]
        for a in self.addrs:
            args += ["-l", "%s:%d" % (a, self.port)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("kiln-sink exited %s" % self.proc.returncode)
            try:
                socket.create_connection((self.addrs[-1], self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(ready, 10, 0.05, "kiln-sink to listen")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class LowNofileKiln(Kiln):
    """kilnd started with soft and hard RLIMIT_NOFILE = nofile (it cannot raise it)."""

    def __init__(self, nofile, **over):
        super().__init__(**over)
        self.nofile = nofile

    def start(self, timeout=20):
        real = subprocess.Popen
        nofile = self.nofile

        def popen(*a, **kw):
            kw["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
            return real(*a, **kw)
        subprocess.Popen = popen
        try:
            return super().start(timeout)
        finally:
            subprocess.Popen = real


class DescriptorExhaustion(unittest.TestCase):
    def test_emfile_on_delivery_defers_and_blames_no_ip(self):
        """kilnd with RLIMIT_NOFILE 28 (it uses about 13 idle) delivers 40 messages to 40
        slow destinations: connections beyond the descriptors fail with EMFILE. The mail
        is deferred (DeliveryDelay InternalFailure), never bounced; no IP goes down; the
        log reports the episode once; every message is delivered in the end."""
        sink = SlowSink()
        try:
            routes = [{"domain": "d%d.test" % i, "host": sink.addrs[i], "port": sink.port}
                      for i in range(NDOMAINS)]
            k = LowNofileKiln(28, routes=routes)
            k.cfg["delivery"]["retry"] = {"first": "1s", "max_interval": "2s", "factor": 2}
            k.write_config()
            with k:
                self.assertIn("event=smtp.limits warning=", k.log())   # caps lowered, said so
                s = k.smtp()
                s.ehlo("app.test")
                for i in range(NDOMAINS):
                    rc = "r%d@d%d.test" % (i, i)
                    code, resp = s.sendmail("app@example.test", [rc],
                                            "From: app@example.test\r\nTo: %s\r\nSubject: fd %d\r\n\r\nhi\r\n" % (rc, i)) or (250, b"")
                s.quit()
                # the control socket while descriptors run out: kilnctl is answered (maybe
                # after a pause), and a failing accept() is logged once, not once per loop
                for _ in range(5):
                    self.assertIn("Queued", k.ctl("status", timeout=30))

                def delivered():
                    evs = k.events()
                    return evs if len({e["mail"]["destination"][0] for e in evs
                                       if e.get("eventType") == "Delivery"}) == NDOMAINS else None
                evs = wait_for(delivered, 40, 0.2, "all %d messages delivered" % NDOMAINS)
                delays = [e for e in evs if e.get("eventType") == "DeliveryDelay"]
                self.assertTrue(delays, "no message was deferred: the descriptors never ran out")
                self.assertEqual({e["deliveryDelay"]["delayType"] for e in delays}, {"InternalFailure"})
                self.assertEqual([e for e in evs if e.get("eventType") == "Bounce"], [])
                ips = k.ctl("ips")["DedicatedIps"]
                self.assertEqual({x["State"] for x in ips}, {"active"}, ips)
                log = k.log()
                self.assertEqual(log.count("event=delivery.local_failure result=begin"), 1,
                                 [l for l in log.splitlines() if "local_failure" in l])
                self.assertNotIn("pools.ip_failed", log)
                self.assertLessEqual(log.count("event=control.accept_failed error="), 2,
                                     [l for l in log.splitlines() if "control.accept" in l][:5])
                self.assertLessEqual(log.count("event=smtp.accept_error listen="), 2)
        finally:
            sink.stop()


if __name__ == "__main__":
    main()
