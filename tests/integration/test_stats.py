"""test_stats.py — `kilnctl stats` (SPEC section 5, SES GetSendStatistics): 15-minute buckets
counted from the events kilnd writes — DeliveryAttempts = recipients of Send events, Bounces
and Complaints = recipients of Bounce and Complaint events, Rejects = Reject events — in the
human table and --json, kept across a kilnd restart, counted once; bounces from a real
delivery attempt count; outbox rows left by an older kiln (which counted events when they
left the outbox) are counted when they leave it."""
import calendar
import json
import sqlite3
import re
import socket
import time
import unittest

from kilntest import Kiln, Sink, main, send, wait_for

SIM = "simulator.amazonses.com"
BUCKET_S = 15 * 60
TS_RE = r"^\d{4}-\d\d-\d\dT\d\d:(00|15|30|45):00\.000Z$"


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


def bucket_of(iso):
    """The 15-minute bucket (ISO 8601, as kilnd prints it) of an event time."""
    t = calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t - t % BUCKET_S))


def expected_points(events):
    """Per-bucket counts by the SES rule, from the events kilnd wrote to the file."""
    pts = {}
    for e in events:
        typ = e["eventType"]
        when, key, n = e["mail"]["timestamp"], None, 0
        if typ == "Send":
            key, n = "DeliveryAttempts", len(e["mail"]["destination"])
        elif typ == "Reject":
            key, n = "Rejects", 1
        elif typ == "Bounce":
            key, n, when = ("Bounces", len(e["bounce"]["bouncedRecipients"]),
                            e["bounce"]["timestamp"])
        elif typ == "Complaint":
            key, n, when = ("Complaints", len(e["complaint"]["complainedRecipients"]),
                            e["complaint"]["timestamp"])
        if key:
            b = bucket_of(when)
            p = pts.setdefault(b, {"Timestamp": b, "DeliveryAttempts": 0, "Bounces": 0,
                                   "Complaints": 0, "Rejects": 0})
            p[key] += n
    return [pts[k] for k in sorted(pts)]


def totals(points):
    return {k: sum(p[k] for p in points)
            for k in ("DeliveryAttempts", "Bounces", "Complaints", "Rejects")}



def drained_points(k, want):
    """expected_points of the event file once it holds what the statistics counted (they
    are counted at the commit; the file follows at the next drain of the outbox)."""
    return wait_for(lambda: (lambda p: p if totals(p) == want else None)(
        expected_points(k.events())), 20, 0.1, "the event file to hold the counted events")

class Stats(unittest.TestCase):
    def setUp(self):
        self.k = Kiln()
        self.k.start()

    def tearDown(self):
        rc = self.k.stop()
        self.k.cleanup()
        self.assertEqual(rc, 0)

    def submit(self, rcpt):
        code, text = send(self.k, "app@example.test", [rcpt], subject="stats " + rcpt)
        self.assertEqual(code, 250, text)

    def test_empty(self):
        self.assertEqual(self.k.ctl("stats"), {"SendDataPoints": []})
        p = self.k.ctl("stats", json_out=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("no sending", p.stdout)

    def test_counts_table_and_restart(self):
        for who in ("success", "bounce", "complaint"):
            self.submit(who + "@" + SIM)
        out = raw(self.k, [b"EHLO c\r\n", b"MAIL FROM:<app@example.test>\r\n",
                           b"RCPT TO:<r@dest.test>\r\n", b"DATA\r\n",
                           b"From: app@example.test\r\nSubject: x\r\n\r\nbare\nLF\r\n.\r\n",
                           b"QUIT\r\n"])
        self.assertTrue(out[-2].startswith("554 5.6.0"), out)

        want = {"DeliveryAttempts": 3, "Bounces": 1, "Complaints": 1, "Rejects": 1}
        data = wait_for(lambda: (lambda d: d if totals(d["SendDataPoints"]) == want else None)(
            self.k.ctl("stats")), 15, 0.1,
            "stats to count 3 sends, 1 bounce, 1 complaint, 1 reject")
        pts = data["SendDataPoints"]
        for p in pts:
            self.assertEqual(sorted(p), ["Bounces", "Complaints", "DeliveryAttempts", "Rejects",
                                         "Timestamp"])
            self.assertRegex(p["Timestamp"], TS_RE)
            for k in want:
                self.assertIsInstance(p[k], int)
        self.assertEqual([p["Timestamp"] for p in pts], sorted(p["Timestamp"] for p in pts))
        # Each count sits in the bucket of its event's time.
        self.assertEqual(pts, drained_points(self.k, want))
        now_bucket = bucket_of(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()))
        self.assertLessEqual(pts[-1]["Timestamp"], now_bucket)

        p = self.k.ctl("stats", json_out=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertEqual(lines[0].split(), ["TIMESTAMP", "ATTEMPTS", "BOUNCES", "COMPLAINTS",
                                            "REJECTS"])
        self.assertEqual(len(lines), 1 + len(pts))
        for line, pt in zip(lines[1:], pts):
            self.assertEqual(line.split(), [pt["Timestamp"], str(pt["DeliveryAttempts"]),
                                            str(pt["Bounces"]), str(pt["Complaints"]),
                                            str(pt["Rejects"])])
        # --json after the command works too
        p = self.k.ctl("stats", "--json", json_out=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn('"SendDataPoints"', p.stdout)

        # Counted once: the same numbers after a restart (the outbox rows are gone).
        self.assertEqual(self.k.stop(), 0)
        self.k.stderr.close()
        self.k.start()
        self.assertEqual(self.k.ctl("stats")["SendDataPoints"], pts)

    def test_delivery_bounce_and_several_recipients(self):
        with Sink("127.0.0.23", rule=lambda rcpt, n: "550 5.1.1 no such user"
                  if rcpt.startswith("gone@") else None) as sink:
            self.k.stop()
            self.k.stderr.close()
            self.k.cfg["routes"] = [{"domain": "dest.test", "host": sink.host, "port": sink.port}]
            self.k.write_config()
            self.k.start()
            code, text = send(self.k, "app@example.test", ["a@dest.test", "b@dest.test", "gone@dest.test"])
            self.assertEqual(code, 250, text)
            want = {"DeliveryAttempts": 3, "Bounces": 1, "Complaints": 0, "Rejects": 0}
            data = wait_for(lambda: (lambda d: d if totals(d["SendDataPoints"]) == want else None)(
                self.k.ctl("stats")), 20, 0.1, "stats to count 3 attempts and the 550 bounce")
            self.assertEqual(data["SendDataPoints"], drained_points(self.k, want))
            self.assertEqual(sorted(r for m in sink.messages for r in m["rcpts"]),
                             ["a@dest.test", "b@dest.test"])

    def test_outbox_rows_of_an_older_kiln(self):
        # A spool as an older kiln left it: two events in the outbox, not yet counted (it
        # counted when the drain deleted them), and no statistics yet.
        self.assertEqual(self.k.stop(), 0)
        self.k.stderr.close()
        db = sqlite3.connect(f"{self.k.spool}/kiln.db")
        db.execute("DELETE FROM stats")
        db.execute("DELETE FROM kv WHERE key = 'stats:counted-at-insert-after'")
        old = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 3600))
        for dest in (["x@old.test", "y@old.test"], ["z@old.test"]):
            ev = {"eventType": "Send", "mail": {"timestamp": old, "messageId": "old",
                                                "destination": dest}, "send": {}}
            db.execute("INSERT INTO events (config_set, json) VALUES ('txn', ?)", (json.dumps(ev),))
        db.commit()
        db.close()
        self.k.start()
        self.submit("success@" + SIM)
        want = {"DeliveryAttempts": 4, "Bounces": 0, "Complaints": 0, "Rejects": 0}
        data = wait_for(lambda: (lambda d: d if totals(d["SendDataPoints"]) == want else None)(
            self.k.ctl("stats")), 15, 0.1, "stats to count the 3 old and the 1 new recipient")
        self.assertIn(bucket_of(old), [p["Timestamp"] for p in data["SendDataPoints"]])
        # once: a restart neither counts the old rows again nor the new one
        self.assertEqual(self.k.stop(), 0)
        self.k.stderr.close()
        self.k.start()
        self.assertEqual(self.k.ctl("stats")["SendDataPoints"], data["SendDataPoints"])

    def test_stats_takes_no_arguments(self):
        p = self.k.ctl("stats", "extra", expect_ok=False, json_out=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("unexpected argument", p.stderr)


if __name__ == "__main__":
    main()
