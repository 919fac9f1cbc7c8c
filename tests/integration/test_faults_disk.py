"""test_faults_disk.py — kiln under a full disk (issue 11, item 1): the spool and the event
file live on a small tmpfs mounted in a mount namespace this test made (a sleeping holder
process keeps it; kilnd runs in it through nsenter), and the test fills that tmpfs with a
ballast file written through /proc/HOLDER/root. While it is full: new submissions get
451 4.3.0 (never a crash, never a 250 that is then lost), kilnctl status/queue/ips answer,
mail already stored is delivered, 5xx bounces of that time end on the suppression list once
space returns, a `kilnctl suppression add` fails with the reason. When the ballast goes: submissions get 250 again, every message acknowledged
is delivered exactly once (counted per token at the sink), the event file has one Send per
acknowledged message and one Delivery or Bounce per recipient; a restart on the same spool
delivers nothing again. Every process is ended by PID; every wait is bounded."""
import errno
import json
import os
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
import unittest

from kilntest import Kiln, Sink, main, reachable_tmp, wait_for

TMPFS_SIZE = "6m"
BODY_LINE = "x" * 998 + "\r\n"


def token_of(content):
    for line in content.split(b"\r\n"):
        if line.startswith(b"X-Token: "):
            return line[9:].decode()
    return None


class Holder:
    """A mount namespace with a tmpfs on `path`, kept alive by a sleeping process."""

    def __init__(self, path, size):
        self.path = path
        self.size = size
        self.proc = None

    def __enter__(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root for a mount namespace with a tmpfs and "
                                    "kilnd's server.user")
        os.makedirs(self.path, exist_ok=True)
        script = ("mount -t tmpfs -o size=%s,mode=0755 kiln-faults %s && echo mounted && "
                  "exec sleep 600" % (self.size, self.path))
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                      "sh", "-c", script], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        line = self.proc.stdout.readline().decode().strip()
        if line != "mounted":
            self.__exit__()
            raise AssertionError("could not mount a tmpfs in a new mount namespace: %s" % line)
        return self

    def inside(self, path):
        """path as seen from inside the namespace (the tmpfs)."""
        return "/proc/%d/root%s" % (self.proc.pid, path)

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()


class NsKiln(Kiln):
    """kilnd run in the holder's mount namespace; its control socket outside the tmpfs."""

    def __init__(self, holder, **over):
        self.holder = holder
        super().__init__(**over)
        self.prefix = ["nsenter", "-t", str(holder.proc.pid), "-m", "--"]

    @property
    def socket_path(self):
        return os.path.join(self.tmp, "kilnd.sock")

    def events(self, name="events-txn.jsonl"):
        out = []
        try:
            with open(self.holder.inside(os.path.join(self.spool, name))) as f:
                for line in f:
                    if line.strip():
                        out.append(json.loads(line))
        except FileNotFoundError:
            pass
        return out


class Gate:
    """The sink's recipient rule: 451 for everyone while closed; then 550 for hard-*."""

    def __init__(self):
        self.open = False

    def rule(self, rcpt, attempt):
        if not self.open:
            return "451 4.3.2 gate closed"
        if rcpt.lower().startswith("hard-"):
            return "550 5.1.1 no such user"
        return None


class FullDisk(unittest.TestCase):
    def submit(self, k, tok, rcpt, lines):
        """One message with token tok to rcpt: (code, text)."""
        msg = ("From: app@example.test\r\nTo: %s\r\nSubject: %s\r\nX-Token: %s\r\n\r\n"
               % (rcpt, tok, tok)) + BODY_LINE * lines
        with smtplib.SMTP("127.0.0.1", k.port, timeout=15) as s:
            s.ehlo("faults.test")
            s.mail("app@example.test")
            code, resp = s.rcpt(rcpt)
            if code != 250:
                return code, resp.decode()
            code, resp = s.data(msg.encode())
            return code, resp.decode()

    def fill(self, path):
        """Writes the ballast until the tmpfs is full; returns its size."""
        total = 0
        chunk = b"\0" * 65536
        with open(path, "wb", buffering=0) as f:
            for _ in range(4096):   # bounded: far more than the tmpfs holds
                try:
                    total += f.write(chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    return total
        raise AssertionError("the tmpfs never filled up")

    def test_full_disk(self):
        gate = Gate()
        arrivals = {}

        def data_rule(envelope):
            tok = token_of(envelope.original_content or envelope.content)
            arrivals.setdefault(tok, []).append(list(envelope.rcpt_tos))
            return None

        tmp = reachable_tmp(tempfile.mkdtemp(prefix="kiln-faults-"))
        with Sink("127.0.0.31", rule=gate.rule, data_rule=data_rule) as sink:
            k = None
            try:
                with Holder(os.path.join(tmp, "spool"), TMPFS_SIZE) as holder:
                    k = NsKiln(holder, tmp=tmp,
                               routes=[{"domain": "dest.test", "host": sink.host, "port": sink.port}])
                    k.cfg["server"]["control_socket"] = "./kilnd.sock"
                    k.cfg["server"]["log_level"] = "info"
                    k.cfg["configuration_sets"][0]["events"] = [
                        {"type": "file", "path": "./spool/events-txn.jsonl"}]
                    k.cfg["delivery"]["retry"] = {"first": "1s", "max_interval": "1s", "factor": 2}
                    k.write_config()
                    k.start()
                    self.scenario(k, holder, gate, sink, arrivals)
            finally:
                if k:
                    k.cleanup()
                if not os.environ.get("KILN_KEEP_TMP"):
                    shutil.rmtree(tmp, ignore_errors=True)

    def scenario(self, k, holder, gate, sink, arrivals):
        acked = {}      # token -> (message id, recipient)
        replies = []    # (phase, code, text)
        n = [0]

        def send(rcpt, lines=2, phase="ok"):
            n[0] += 1
            tok = "t%d" % n[0]
            code, text = self.submit(k, tok, rcpt, lines)
            replies.append((phase, code, text))
            if code == 250:
                acked[tok] = (text.split()[-1], rcpt)
            return code, text

        # 1. stored while the sink answers 451: ok-* to be delivered, hard-* to bounce
        for i in range(6):
            code, text = send("%s-%d@dest.test" % ("hard" if i % 3 == 0 else "ok", i))
            self.assertEqual(code, 250, text)
        wait_for(lambda: k.ctl("status")["Deferred"] >= 6, 20, 0.2, "six deferred recipients")

        # 2. the disk fills: submissions get 451 4.3.0, never anything else
        ballast = holder.inside(os.path.join(k.spool, "ballast"))
        self.fill(ballast)
        first_451 = None
        for i in range(40):
            code, text = send("ok-full-%d@dest.test" % i, lines=150, phase="full")
            self.assertIn(code, (250, 451), text)
            if code == 451:
                self.assertIn("4.3.0", text)
                first_451 = i
                break
        self.assertIsNotNone(first_451, "no 451 with the disk full: %r" % replies[-3:])
        for i in range(3):
            code, text = send("ok-full-more-%d@dest.test" % i, lines=150, phase="full")
            self.assertEqual(code, 451, text)
            self.assertIn("4.3.0", text)
        # kilnctl answers
        st = k.ctl("status")
        self.assertGreaterEqual(st["Queued"] + st["Deferred"], 6)
        self.assertTrue(k.ctl("ips")["DedicatedIps"])
        q = k.ctl("queue", json_out=False)
        self.assertEqual(q.returncode, 0, q.stderr)
        # a control command that writes says it could not
        p = k.ctl("suppression", "add", "manual@dest.test", expect_ok=False, json_out=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("disk is full", p.stderr)

        # 3. still full: the stored mail is delivered (and the hard ones bounce)
        gate.open = True
        stored_ok = [t for t, (_, r) in acked.items() if r.startswith("ok-")]
        wait_for(lambda: all(t in arrivals for t in stored_ok), 30, 0.2,
                 "the stored mail delivered while the disk is full")
        time.sleep(3)   # outcomes still failing to commit: nothing may go out twice
        self.assertEqual([t for t, v in arrivals.items() if len(v) > 1], [])
        code, text = send("ok-still-full@dest.test", lines=150, phase="full")
        self.assertEqual(code, 451, text)
        self.assertTrue(k.proc.poll() is None, "kilnd died with the disk full")
        self.assertIn("spool.commit", k.log())

        # 4. space comes back: 250 again, everything lands once
        os.unlink(ballast)
        wait_for(lambda: send("ok-back@dest.test", phase="back")[0] == 250, 20, 0.3,
                 "a 250 once space is back")
        for i in range(3):
            code, text = send("ok-back-%d@dest.test" % i, phase="back")
            self.assertEqual(code, 250, text)
        ok_tokens = [t for t, (_, r) in acked.items() if r.startswith("ok-")]
        hard = sorted(r for _, r in acked.values() if r.startswith("hard-"))
        wait_for(lambda: all(t in arrivals for t in ok_tokens), 30, 0.2, "every 250 delivered")
        wait_for(lambda: (lambda s: s["Queued"] == 0 and s["Deferred"] == 0)(k.ctl("status")),
                 30, 0.2, "an empty queue")
        supp = {e["EmailAddress"] for e in
                k.ctl("suppression", "list")["SuppressedDestinationSummaries"]}
        self.assertEqual(sorted(supp), hard)

        def settled(evs):
            ids = {mid for mid, _ in acked.values()}
            done = {e["mail"]["messageId"] for e in evs if e["eventType"] in ("Delivery", "Bounce")}
            return ids <= done
        evs = k.wait_events(settled, 20, what="a Delivery or Bounce event per message")
        self.check_events(evs, acked)
        self.assertEqual(sorted(t for t in arrivals if t), sorted(ok_tokens))
        self.assertEqual([t for t, v in arrivals.items() if len(v) > 1], [])
        print("full disk: acknowledged=%d delivered=%d bounced=%d replies_451=%d"
              % (len(acked), len(ok_tokens), len(hard),
                 sum(1 for p, c, _ in replies if c == 451)))

        # 5. a restart on the same spool delivers nothing again
        before = {t: len(v) for t, v in arrivals.items()}
        self.assertEqual(k.stop(), 0)
        k.start()
        time.sleep(3)
        st = k.ctl("status")
        self.assertEqual((st["Queued"], st["Deferred"]), (0, 0))
        self.assertEqual({t: len(v) for t, v in arrivals.items()}, before)
        self.assertEqual(k.stop(), 0)
        self.check_events(k.events(), acked)

    def check_events(self, evs, acked):
        """One Send per acknowledged message and none for the others; one Delivery or
        Bounce per recipient."""
        ids = {mid: rcpt for mid, rcpt in acked.values()}
        sends = [e["mail"]["messageId"] for e in evs if e["eventType"] == "Send"]
        self.assertEqual(sorted(sends), sorted(ids))
        outcomes = {}
        for e in evs:
            if e["eventType"] == "Delivery":
                rcpts = e["delivery"]["recipients"]
            elif e["eventType"] == "Bounce":
                rcpts = [b["emailAddress"] for b in e["bounce"]["bouncedRecipients"]]
            else:
                continue
            for r in rcpts:
                key = (e["mail"]["messageId"], r)
                outcomes[key] = outcomes.get(key, 0) + 1
        want = {(mid, rcpt): 1 for mid, rcpt in ids.items()}
        self.assertEqual(outcomes, want)


if __name__ == "__main__":
    main()
