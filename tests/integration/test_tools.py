"""test_tools.py — the load tools of SPEC section 6 against peers we did not write:
kiln-sink driven by Python's smtplib and raw sockets (counts per client IP and listener,
every fault mode, STARTTLS, pipelining, stats on SIGUSR1/SIGTERM), kiln-loadgen against an
aiosmtpd sink (exact message count, recipients, size, set header, unique tokens, rejection
counts, rate, failures), and kiln-loadgen -> kiln-sink with both sides' counts agreeing.
Every child process is ended by its PID and every wait is bounded."""
import email
import email.policy
import json
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

from kilntest import BUILDDIR, Sink, free_port, main, make_cert, wait_for

SINK = os.path.join(BUILDDIR, "kiln-sink")
LOADGEN = os.path.join(BUILDDIR, "kiln-loadgen")
SAN_ERRORS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def message(frm="a@client.test", to="b@sink.test", body="hello\r\n"):
    return ("From: %s\r\nTo: %s\r\nSubject: t\r\n\r\n%s" % (frm, to, body)).encode()


class KilnSink:
    """kiln-sink as a child process listening on `listen` (default one 127.0.0.1 port)."""

    def __init__(self, *args, listen=None, stats_file=True):
        self.tmp = tempfile.mkdtemp(prefix="kiln-sink-")
        self.port = free_port()
        self.listen = listen or ["127.0.0.1:%d" % self.port]
        self.stats_path = os.path.join(self.tmp, "stats.json") if stats_file else None
        cmd = [SINK]
        for l in self.listen:
            cmd += ["-l", l]
        if self.stats_path:
            cmd += ["--stats-file", self.stats_path]
        self.cmd = cmd + list(args)
        self.proc = None

    def start(self):
        self.out = open(os.path.join(self.tmp, "stdout"), "wb")
        self.err = open(os.path.join(self.tmp, "stderr"), "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self.out, stderr=self.err)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("kiln-sink exited %s: %s" % (self.proc.returncode, self.stderr()))
            return "event=sink.ready" in self.stderr()
        wait_for(ready, 10, 0.02, "kiln-sink to listen")
        return self

    def stderr(self):
        with open(os.path.join(self.tmp, "stderr"), errors="replace") as f:
            return f.read()

    def stdout(self):
        with open(os.path.join(self.tmp, "stdout"), errors="replace") as f:
            return f.read()

    def stats(self):
        """Asks for the stats with SIGUSR1 and returns them."""
        if os.path.exists(self.stats_path):
            os.unlink(self.stats_path)
        self.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: os.path.exists(self.stats_path), 10, 0.02, "the stats file")
        with open(self.stats_path) as f:
            return json.load(f)

    def stop(self):
        """SIGTERM; returns (exit status, final stats)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("kiln-sink did not stop within 15 s of SIGTERM")
        stats = None
        if self.stats_path and os.path.exists(self.stats_path):
            with open(self.stats_path) as f:
                stats = json.load(f)
        return rc, stats

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        try:
            if self.proc and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        finally:
            self.out.close()
            self.err.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def smtp(self, source=None, host="127.0.0.1", timeout=10):
        return smtplib.SMTP(host, self.port, timeout=timeout,
                            source_address=(source, 0) if source else None)


def raw_session(port, chunks, nreplies, host="127.0.0.1", source=None, timeout=10, bytewise=False):
    """Sends chunks (bytes) over one connection and reads nreplies complete replies after the
    greeting; returns the list of replies, each a list of lines."""
    s = socket.create_connection((host, port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        f = s.makefile("rb")

        def reply():
            lines = []
            while True:
                line = f.readline().decode()
                if not line:
                    raise AssertionError("connection closed after %r" % lines)
                lines.append(line.rstrip("\r\n"))
                if len(line) < 4 or line[3] != "-":
                    return lines
        greeting = reply()
        assert greeting[0].startswith("220 "), greeting
        for c in chunks:
            if bytewise:
                for i in range(len(c)):
                    s.sendall(c[i:i + 1])
            else:
                s.sendall(c)
        return [reply() for _ in range(nreplies)]
    finally:
        s.close()


def loadgen(*args, timeout=120):
    """Runs kiln-loadgen --json; returns (exit status, report or None, stderr)."""
    p = subprocess.run([LOADGEN, "--json"] + [str(a) for a in args], capture_output=True,
                       text=True, timeout=timeout)
    for e in SAN_ERRORS:
        assert e not in p.stderr, p.stderr
    report = json.loads(p.stdout) if p.stdout.strip() else None
    return p.returncode, report, p.stderr


class SinkTests(unittest.TestCase):
    def check_clean_stop(self, sink):
        rc, stats = sink.stop()
        err = sink.stderr()
        self.assertEqual(rc, 0, err)
        for e in SAN_ERRORS:
            self.assertNotIn(e, err)
        return stats

    def test_counts_per_client_ip_and_listener(self):
        port = free_port("127.0.0.21")
        listen = ["127.0.0.21:%d" % port, "127.0.0.22:%d" % port]
        with KilnSink(listen=listen) as sink:
            sink.port = port
            msg = message(body="x" * 50 + "\r\n.dot line\r\n")
            with sink.smtp(source="127.0.0.10", host="127.0.0.21") as c:
                code, resp = c.ehlo("client.test")
                self.assertEqual(code, 250)
                text = resp.decode().upper()
                for ext in ("PIPELINING", "SIZE 52428800", "8BITMIME", "ENHANCEDSTATUSCODES"):
                    self.assertIn(ext, text)
                self.assertNotIn("STARTTLS", text)
                for _ in range(2):
                    self.assertEqual(c.sendmail("a@client.test", ["r1@x.test", "r2@y.test"], msg), {})
            # two connections from .11 open at the same time, one message each
            c1 = sink.smtp(source="127.0.0.11", host="127.0.0.22")
            c2 = sink.smtp(source="127.0.0.11", host="127.0.0.22")
            for c in (c1, c2):
                c.sendmail("a@client.test", ["r@x.test"], msg)
            c1.quit()
            c2.quit()
            wait_for(lambda: sink.stats()["current_connections"] == 0, 10, 0.05, "sessions to end")
            st = self.check_clean_stop(sink)
        self.assertEqual(st["by_client"]["127.0.0.10"],
                         {"connections": 1, "messages": 2, "recipients": 4, "bytes": 2 * len(msg),
                          "rejected_connections": 0})
        self.assertEqual(st["by_client"]["127.0.0.11"],
                         {"connections": 2, "messages": 2, "recipients": 2, "bytes": 2 * len(msg),
                          "rejected_connections": 0})
        self.assertEqual(st["by_listener"]["127.0.0.21:%d" % port],
                         {"connections": 1, "messages": 2, "recipients": 4, "bytes": 2 * len(msg)})
        self.assertEqual(st["by_listener"]["127.0.0.22:%d" % port],
                         {"connections": 2, "messages": 2, "recipients": 2, "bytes": 2 * len(msg)})
        self.assertEqual((st["messages"], st["recipients"], st["connections"]), (4, 6, 3))
        self.assertEqual(st["max_concurrent_by_client"], {"127.0.0.10": 1, "127.0.0.11": 2})
        self.assertEqual(sum(st["faults"].values()), 0)

    def test_faults_by_local_part(self):
        with KilnSink() as sink:
            with sink.smtp() as c:
                c.ehlo("client.test")
                self.assertEqual(c.mail("a@client.test")[0], 250)
                self.assertEqual(c.rcpt("defer-1@x.test"),
                                 (451, b"4.3.0 Temporary failure (kiln-sink)"))
                self.assertEqual(c.rcpt("Reject@x.test"), (550, b"5.1.1 Mailbox unknown (kiln-sink)"))
                self.assertEqual(c.rcpt("ok@x.test")[0], 250)
                t0 = time.monotonic()
                self.assertEqual(c.rcpt("delay700@x.test")[0], 250)
                self.assertGreaterEqual(time.monotonic() - t0, 0.69)
                self.assertEqual(c.data(message())[0], 250)
            with sink.smtp() as c:
                c.ehlo("client.test")
                c.mail("a@client.test")
                self.assertEqual(c.rcpt("throttle@x.test"),
                                 (421, b"4.7.0 Too many messages, slow down (kiln-sink)"))
                with self.assertRaises(smtplib.SMTPServerDisconnected):
                    c.noop()
            c = sink.smtp()
            c.ehlo("client.test")
            c.mail("a@client.test")
            with self.assertRaises(smtplib.SMTPServerDisconnected):
                c.rcpt("disconnect.now@x.test")
            c.close()
            st = self.check_clean_stop(sink)
        f = st["faults"]
        self.assertEqual((f["defer"], f["reject"], f["throttle"], f["disconnect"], f["delay"]),
                         (1, 1, 1, 1, 1))
        # only the message with ok@ and delay700@ was accepted
        self.assertEqual((st["messages"], st["recipients"]), (1, 2))

    def test_delay_does_not_block_other_sessions(self):
        with KilnSink() as sink:
            result = {}

            def slow():
                t0 = time.monotonic()
                result["replies"] = raw_session(sink.port, [
                    b"EHLO slow.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<delay1500@x.test>\r\n"
                    b"RCPT TO:<after@x.test>\r\nQUIT\r\n"], 5)
                result["elapsed"] = time.monotonic() - t0
            th = threading.Thread(target=slow)
            th.start()
            time.sleep(0.2)
            t0 = time.monotonic()
            with sink.smtp() as c:
                c.sendmail("a@client.test", ["fast@x.test"], message())
            fast = time.monotonic() - t0
            th.join(15)
            self.assertFalse(th.is_alive())
            self.check_clean_stop(sink)
        self.assertLess(fast, 1.0)
        self.assertGreaterEqual(result["elapsed"], 1.45)
        codes = [r[-1][:3] for r in result["replies"]]
        self.assertEqual(codes, ["250", "250", "250", "250", "221"])  # in order after the delay

    def test_pipelining_and_partial_writes(self):
        with KilnSink() as sink:
            chunks = [b"EHLO p.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<defer@x.test>\r\n"
                      b"RCPT TO:<delay200@x.test>\r\nRCPT TO:<ok@x.test>\r\nDATA\r\n",
                      b"Subject: p\r\n\r\n..stuffed\r\nline\r\n.\r\nRSET\r\nQUIT\r\n"]
            for bytewise in (False, True):
                replies = raw_session(sink.port, chunks, 8, bytewise=bytewise)
                self.assertIn("250-PIPELINING", replies[0])
                # MAIL, RCPT defer, RCPT delay200, RCPT ok, DATA, end of data, RSET
                self.assertEqual([r[-1][:3] for r in replies[1:]],
                                 ["250", "451", "250", "250", "354", "250", "250"])
            st = sink.stats()
            self.assertEqual((st["messages"], st["recipients"]), (2, 4))
            # "Subject: p" CRLF, CRLF, ".stuffed" CRLF, "line" CRLF after unstuffing
            self.assertEqual(st["bytes"], 2 * (12 + 2 + 10 + 6))
            self.check_clean_stop(sink)

    def test_random_reject_all_and_seeded_defer(self):
        with KilnSink("--random-reject", "100") as sink:
            with sink.smtp() as c:
                c.ehlo("c.test")
                c.mail("a@client.test")
                for i in range(5):
                    self.assertEqual(c.rcpt("user%d@x.test" % i),
                                     (550, b"5.1.1 Mailbox unknown (kiln-sink)"))
            st = self.check_clean_stop(sink)
        self.assertEqual(st["faults"]["random_reject"], 5)
        self.assertEqual(st["messages"], 0)

        def run(seed):
            with KilnSink("--random-defer", "50", "--seed", str(seed)) as sink:
                with sink.smtp() as c:
                    c.ehlo("c.test")
                    c.mail("a@client.test")
                    codes = [c.rcpt("u%d@x.test" % i)[0] for i in range(40)]
                st = self.check_clean_stop(sink)
                self.assertEqual(st["faults"]["random_defer"], codes.count(451))
                return codes
        a, b = run(42), run(42)
        self.assertEqual(a, b)                       # repeatable with the same seed
        self.assertTrue(set(a) == {250, 451}, a)     # and really random in between

    def test_max_connections_per_client(self):
        with KilnSink("--max-connections-per-client", "2") as sink:
            c1 = sink.smtp(source="127.0.0.10")
            c2 = sink.smtp(source="127.0.0.10")
            with self.assertRaises(smtplib.SMTPConnectError) as cm:
                sink.smtp(source="127.0.0.10")
            self.assertEqual(cm.exception.smtp_code, 421)
            self.assertEqual(cm.exception.smtp_error, b"4.7.0 Too many connections from your IP")
            other = sink.smtp(source="127.0.0.11")     # another IP is not affected
            self.assertEqual(other.noop()[0], 250)
            other.quit()
            c1.quit()
            wait_for(lambda: sink.stats()["by_client"]["127.0.0.10"]["connections"] == 2 and
                     sink.stats()["current_connections"] == 1, 10, 0.05, "c1 and other to end")
            c3 = sink.smtp(source="127.0.0.10")         # the slot c1 left is free again
            self.assertEqual(c3.noop()[0], 250)
            c3.quit()
            c2.quit()
            st = self.check_clean_stop(sink)
        self.assertEqual(st["by_client"]["127.0.0.10"]["rejected_connections"], 1)
        self.assertEqual(st["by_client"]["127.0.0.10"]["connections"], 3)
        self.assertEqual(st["faults"]["too_many_connections"], 1)
        self.assertEqual(st["max_concurrent_by_client"]["127.0.0.10"], 2)

    def test_delay_data_and_size_limit(self):
        with KilnSink("--delay-data", "800", "--max-message-size", "500") as sink:
            with sink.smtp() as c:
                code, resp = c.ehlo("c.test")
                self.assertIn("SIZE 500", resp.decode())
                t0 = time.monotonic()
                self.assertEqual(c.sendmail("a@client.test", ["r@x.test"], message()), {})
                self.assertGreaterEqual(time.monotonic() - t0, 0.79)
                self.assertEqual(c.mail("a@client.test", ["SIZE=1000"])[0], 552)
                c.rset()
                c.mail("a@client.test")
                c.rcpt("r@x.test")
                self.assertEqual(c.data(message(body="y" * 70 + "\r\n") * 10)[0], 552)
            st = self.check_clean_stop(sink)
        self.assertEqual(st["faults"]["delay_data"], 1)
        self.assertEqual(st["messages"], 1)

    def test_idle_timeout(self):
        with KilnSink("--timeout", "0.5") as sink:
            s = socket.create_connection(("127.0.0.1", sink.port), timeout=10)
            f = s.makefile("rb")
            self.assertTrue(f.readline().startswith(b"220 "))
            t0 = time.monotonic()
            self.assertEqual(f.readline(), b"421 4.4.2 sink.kiln.test Error: timeout exceeded\r\n")
            self.assertEqual(f.readline(), b"")       # closed
            self.assertLess(time.monotonic() - t0, 5)
            s.close()
            self.check_clean_stop(sink)

    def test_starttls(self):
        tmp = tempfile.mkdtemp(prefix="kiln-sink-cert-")
        try:
            cert, key = make_cert(tmp, "sink.kiln.test")
            with KilnSink("--tls-cert", cert, "--tls-key", key) as sink:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                with sink.smtp() as c:
                    code, resp = c.ehlo("c.test")
                    self.assertIn("STARTTLS", resp.decode())
                    self.assertEqual(c.starttls(context=ctx)[0], 220)
                    code, resp = c.ehlo("c.test")
                    self.assertNotIn("STARTTLS", resp.decode())
                    self.assertIsNotNone(c.sock.version())
                    self.assertEqual(c.sendmail("a@client.test", ["r@x.test"], message()), {})
                # kiln-loadgen over STARTTLS too
                rc, rep, err = loadgen("-s", "127.0.0.1:%d" % sink.port, "-n", 30, "-c", 3, "--tls")
                self.assertEqual(rc, 0, err)
                self.assertEqual(rep["accepted"], 30)
                st = self.check_clean_stop(sink)
            self.assertEqual(st["messages"], 31)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_stats_on_sigusr1_and_sigterm(self):
        with KilnSink() as sink:
            with sink.smtp() as c:
                c.sendmail("a@client.test", ["r@x.test"], message())
            st = sink.stats()
            self.assertEqual((st["messages"], st["recipients"], st["connections"]), (1, 1, 1))
            with sink.smtp() as c:
                c.sendmail("a@client.test", ["r@x.test", "s@x.test"], message())
            final = self.check_clean_stop(sink)
            self.assertEqual((final["messages"], final["recipients"]), (2, 3))
            self.assertEqual(os.listdir(sink.tmp).count("stats.json"), 1)
            self.assertFalse([n for n in os.listdir(sink.tmp) if ".tmp" in n])
        # without --stats-file: one JSON line on stdout per request
        with KilnSink(stats_file=False) as sink:
            with sink.smtp(source="127.0.0.12") as c:
                c.sendmail("a@client.test", ["r@x.test"], message())
            self.check_clean_stop(sink)
            lines = [l for l in sink.stdout().splitlines() if l.strip()]
            self.assertEqual(len(lines), 1)
            self.assertEqual(json.loads(lines[0])["by_client"]["127.0.0.12"]["messages"], 1)

    def test_stats_interval(self):
        with KilnSink("--stats-interval", "0.2") as sink:
            wait_for(lambda: os.path.exists(sink.stats_path), 10, 0.05, "periodic stats")
            self.check_clean_stop(sink)

    def test_bad_usage(self):
        for args in ([], ["-l", "nonsense"], ["-l", "127.0.0.1:1", "--random-reject", "101"],
                     ["-l", "127.0.0.1:1", "--tls-cert", "/nonexistent"]):
            p = subprocess.run([SINK] + args, capture_output=True, text=True, timeout=10)
            self.assertNotEqual(p.returncode, 0, args)
            self.assertIn("kiln-sink:", p.stderr)


class LoadgenTests(unittest.TestCase):
    def test_against_aiosmtpd(self):
        n, size = 60, 2000
        with Sink() as sink:
            rc, rep, err = loadgen("-s", "127.0.0.1:%d" % sink.port, "-n", n, "-c", 4,
                                   "--size", size, "--rcpts-per-msg", 3, "--domains", 5,
                                   "--set", "marketing", "--token-prefix", "T",
                                   "--from", "bulk@sender.test")
            self.assertEqual(rc, 0, err)
            msgs = sink.messages
        self.assertEqual(rep["accepted"], n)
        self.assertEqual((rep["rejected"], rep["errors"], rep["not_sent"]), (0, 0, 0))
        self.assertEqual(rep["recipients_accepted"], 3 * n)
        self.assertEqual(len(msgs), n)
        tokens = set()
        all_rcpts = set()
        for m in msgs:
            self.assertEqual(m["mail_from"], "bulk@sender.test")
            self.assertEqual(len(m["rcpts"]), 3)
            self.assertEqual(len(set(m["rcpts"])), 3)
            all_rcpts.update(m["rcpts"])
            self.assertEqual(len(m["data"]), size)
            self.assertNotIn(b"\n", m["data"].replace(b"\r\n", b""))   # CRLF only
            lines = m["data"].split(b"\r\n")
            self.assertLessEqual(max(len(l) for l in lines), 78)
            self.assertTrue(any(l.startswith(b".loadgen padding") for l in lines))  # unstuffed
            parsed = email.message_from_bytes(m["data"], policy=email.policy.default)
            for h in ("From", "To", "Subject", "Date", "Message-ID"):
                self.assertIsNotNone(parsed[h], h)
            self.assertEqual(parsed["X-SES-CONFIGURATION-SET"], "marketing")
            self.assertEqual(sorted(a.addr_spec for a in parsed["To"].addresses), sorted(m["rcpts"]))
            tokens.add(parsed["X-Loadgen-Token"])
        self.assertEqual(tokens, {"T-%d" % i for i in range(n)})
        self.assertEqual(len(all_rcpts), 3 * n)
        self.assertEqual({r.split("@")[1] for r in all_rcpts}, {"d%d.test" % i for i in range(5)})

    def test_rejections_counted_by_code(self):
        def rule(rcpt, attempt):
            num = int(rcpt.split("@")[0][4:])
            return "550 5.1.1 no such user" if num % 2 else None
        with Sink(rule=rule) as sink:
            rc, rep, err = loadgen("-s", "127.0.0.1:%d" % sink.port, "-n", 20, "-c", 2)
            self.assertEqual(rc, 0, err)
            self.assertEqual(len(sink.messages), 10)
        self.assertEqual((rep["accepted"], rep["rejected"], rep["errors"]), (10, 10, 0))
        self.assertEqual(rep["rejected_by_code"], {"rcpt 550": 10})
        # refused at the end of DATA (aiosmtpd offers no PIPELINING: one command at a time)
        def data_rule(envelope):
            return "451 4.3.0 try later" if envelope.rcpt_tos[0].startswith("user1") else None
        with Sink(data_rule=data_rule) as sink:
            rc, rep, err = loadgen("-s", "127.0.0.1:%d" % sink.port, "-n", 20, "-c", 3)
            self.assertEqual(rc, 0, err)
            self.assertEqual(len(sink.messages), 9)
        self.assertEqual((rep["accepted"], rep["rejected"]), (9, 11))   # user1, user10..user19
        self.assertEqual(rep["rejected_by_code"], {"dot 451": 11})

    def test_rate_limit(self):
        with Sink() as sink:
            t0 = time.monotonic()
            rc, rep, err = loadgen("-s", "127.0.0.1:%d" % sink.port, "-n", 25, "-c", 5,
                                   "--rate", 50)
            elapsed = time.monotonic() - t0
            self.assertEqual(rc, 0, err)
        self.assertEqual(rep["accepted"], 25)
        self.assertGreaterEqual(rep["elapsed_s"], 0.4)   # 25 messages at 50/s: >= 0.48 s
        self.assertLess(elapsed, 30)

    def test_no_server_and_bad_usage(self):
        port = free_port()
        t0 = time.monotonic()
        rc, rep, err = loadgen("-s", "127.0.0.1:%d" % port, "-n", 10, "-c", 2)
        self.assertEqual(rc, 1)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(rep["accepted"] + rep["rejected"], 0)
        self.assertEqual(rep["not_sent"], 10)
        self.assertIn("connect: Connection refused", rep["connection_errors"])
        with Sink() as sink:                              # --tls, but no STARTTLS offered
            t0 = time.monotonic()
            rc, rep, err = loadgen("-s", "127.0.0.1:%d" % sink.port, "-n", 5, "-c", 2, "--tls")
            self.assertEqual(rc, 1)
            self.assertLess(time.monotonic() - t0, 10)
            self.assertEqual(rep["connection_errors"], {"server does not offer STARTTLS": 2})
            self.assertEqual(sink.messages, [])
        for args in (["-n", "5"], ["-s", "127.0.0.1:25", "-n", "0"], ["-s", "nope"],
                     ["-s", "127.0.0.1:25", "--domain-pattern", "%s.test"]):
            p = subprocess.run([LOADGEN] + args, capture_output=True, text=True, timeout=10)
            self.assertEqual(p.returncode, 1, args)

    def test_silent_server_times_out(self):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        try:
            t0 = time.monotonic()
            rc, rep, err = loadgen("-s", "127.0.0.1:%d" % srv.getsockname()[1], "-n", 3, "-c", 1,
                                   "--timeout", "0.3")
            self.assertEqual(rc, 1)
            self.assertLess(time.monotonic() - t0, 15)
            self.assertEqual(rep["connection_errors"].get("timeout"), 3)
        finally:
            srv.close()


class LoadgenToSinkTests(unittest.TestCase):
    def run_pair(self, sink_args, lg_args):
        port = free_port("127.0.0.21")
        with KilnSink(*sink_args, listen=["127.0.0.21:%d" % port]) as sink:
            rc, rep, err = loadgen("-s", "127.0.0.21:%d" % port, "--bind", "127.0.0.10", *lg_args)
            self.assertEqual(rc, 0, err)
            rc2, st = sink.stop()
            self.assertEqual(rc2, 0, sink.stderr())
            for e in SAN_ERRORS:
                self.assertNotIn(e, sink.stderr())
        return rep, st

    def test_counts_agree(self):
        rep, st = self.run_pair([], ["-n", 500, "-c", 10, "--size", 1500, "--rcpts-per-msg", 2])
        self.assertEqual(rep["accepted"], 500)
        c = st["by_client"]["127.0.0.10"]
        self.assertEqual((c["messages"], c["recipients"], c["bytes"]), (500, 1000, 500 * 1500))
        self.assertEqual(c["connections"], 10)
        self.assertEqual(st["max_concurrent_by_client"]["127.0.0.10"], 10)

    def test_counts_agree_with_random_faults(self):
        rep, st = self.run_pair(["--random-reject", "20", "--random-defer", "10",
                                 "--random-disconnect", "5", "--seed", "7"],
                                ["-n", 400, "-c", 8])
        f = st["faults"]
        self.assertEqual(rep["accepted"], st["messages"])
        self.assertEqual(rep["accepted"] + rep["rejected"] + rep["errors"], 400)
        self.assertEqual(rep["rejected_by_code"].get("rcpt 550", 0), f["random_reject"])
        self.assertEqual(rep["rejected_by_code"].get("rcpt 451", 0), f["random_defer"])
        self.assertEqual(rep["errors"], f["random_disconnect"])
        self.assertGreater(f["random_disconnect"], 0)
        # broken connections were replaced while messages were left
        self.assertGreaterEqual(st["connections"], 8)
        self.assertLessEqual(st["connections"], 8 + f["random_disconnect"])

    def test_throttle_and_local_part_faults(self):
        rep, st = self.run_pair([], ["-n", 30, "-c", 3, "--local-part", "throttle%d"])
        self.assertEqual(rep["rejected_by_code"], {"rcpt 421": 30})
        self.assertEqual(st["faults"]["throttle"], 30)
        self.assertEqual(st["messages"], 0)
        rep, st = self.run_pair([], ["-n", 6, "-c", 3, "--local-part", "delay300"])
        self.assertEqual(rep["accepted"], 6)
        self.assertGreaterEqual(rep["latency_ms"]["p50"], 290)

    def test_mail_refused_while_pipelining(self):
        rep, st = self.run_pair(["--max-message-size", "500"], ["-n", 12, "-c", 2, "--size", 1000])
        self.assertEqual((rep["accepted"], rep["rejected"]), (0, 12))
        self.assertEqual(rep["rejected_by_code"], {"mail 552": 12})
        self.assertEqual(st["connections"], 2)          # the connections stayed usable

    def test_max_connections_per_client(self):
        rep, st = self.run_pair(["--max-connections-per-client", "3"], ["-n", 200, "-c", 6])
        self.assertEqual(rep["accepted"], 200)
        self.assertEqual(st["max_concurrent_by_client"]["127.0.0.10"], 3)
        self.assertGreater(st["faults"]["too_many_connections"], 0)
        self.assertEqual(rep["connection_errors"].get("greeting 421"),
                         st["faults"]["too_many_connections"])



class RecordTests(unittest.TestCase):
    """kiln-sink --record/--record-header/--random-delay and kiln-loadgen --record, which
    the crash and soak runs (tests/soak) use to match acknowledgements with deliveries."""

    def read(self, path):
        with open(path) as f:
            return [l.rstrip("\n").split(" ") for l in f]

    def test_loadgen_and_sink_records_agree(self):
        port = free_port("127.0.0.21")
        tmp = tempfile.mkdtemp(prefix="kiln-record-")
        try:
            acks, rec = os.path.join(tmp, "acks"), os.path.join(tmp, "rec")
            with KilnSink("--record", rec, "--record-header", "X-Loadgen-Token",
                          "--random-defer", "20", "--random-delay", "30",
                          "--random-delay-ms", "300", "--seed", "5",
                          listen=["127.0.0.21:%d" % port]) as sink:
                before = int(time.time() * 1000)
                rc, rep, err = loadgen("-s", "127.0.0.21:%d" % port, "--bind", "127.0.0.10",
                                       "-n", 200, "-c", 4, "--token-prefix", "rt",
                                       "--record", acks)
                self.assertEqual(rc, 0, err)
                rc2, st = sink.stop()
                self.assertEqual(rc2, 0, sink.stderr())
            a, r = self.read(acks), self.read(rec)
            self.assertEqual(len(a), rep["accepted"])
            self.assertEqual(len(r), st["messages"])
            self.assertEqual(rep["accepted"] + rep["rejected"], 200)
            self.assertEqual(rep["rejected"], st["faults"]["random_defer"])
            # acks: "<ms> <token> <queue id>", the id being the last word of the sink's 250
            for ms, tok, qid in a:
                self.assertGreaterEqual(int(ms), before)
                self.assertRegex(tok, r"^rt-\d+$")
                self.assertRegex(qid, r"^S[0-9a-f]+M\d+$")
            # sink: "<ms> <client ip> <recipients> <token>", one line per accepted message
            self.assertEqual({tuple(x[1:3]) for x in r}, {("127.0.0.10", "1")})
            self.assertEqual(sorted(x[3] for x in r), sorted(x[1] for x in a))
            self.assertEqual(len({x[3] for x in r}), len(r))
            # random delays: some RCPT replies held, up to 300 ms
            self.assertGreater(st["faults"]["random_delay"], 20)
            self.assertGreaterEqual(rep["latency_ms"]["max"], 100)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_record_default_header(self):
        tmp = tempfile.mkdtemp(prefix="kiln-record-")
        try:
            rec = os.path.join(tmp, "rec")
            with KilnSink("--record", rec) as sink:
                with sink.smtp(source="127.0.0.11") as c:
                    c.ehlo("t.test")
                    c.sendmail("a@x.test", ["b@y.test", "c@y.test"],
                               b"From: a@x.test\r\nmessage-id:  <one two@x.test> \r\n"
                               b"Subject: s\r\n\r\nbody\r\n")
                    c.sendmail("a@x.test", ["b@y.test"],
                               b"From: a@x.test\r\nSubject: s\r\n\r\n"
                               b"Message-ID: <in-the-body@x.test>\r\n")
                rc, _ = sink.stop()
                self.assertEqual(rc, 0, sink.stderr())
            r = self.read(rec)
            self.assertEqual([x[1:] for x in r], [["127.0.0.11", "2", "<one_two@x.test>"],
                                                  ["127.0.0.11", "1", "-"]])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_record_bad_usage(self):
        p = subprocess.run([SINK, "-l", "127.0.0.1:%d" % free_port(), "--record-header", "X-A:B"],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--record-header wants a header field name", p.stderr)
        p = subprocess.run([SINK, "-l", "127.0.0.1:%d" % free_port(), "--record",
                            "/nonexistent-dir/rec"], capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--record /nonexistent-dir/rec: No such file or directory", p.stderr)
        rc, rep, err = loadgen("-s", "127.0.0.1:%d" % free_port(), "--record", "/nonexistent-dir/a")
        self.assertEqual(rc, 1)
        self.assertIn("--record /nonexistent-dir/a: No such file or directory", err)


if __name__ == "__main__":
    main()
