"""test_webhook_https.py — webhook destinations on libcurl (SPEC section 4, issue 11 item 9),
against receivers we did not write (Python's http.server and ssl, webhook_peer.py) on
loopback, reached by the name `localhost` (the system resolver, through curl) or by IP:
  - https: a certificate from a CA kiln does not know is refused (nothing delivered, the
    error logged and shown by kilnctl status); with `ca_file` naming that CA the events
    arrive; the certificate must also match the host of the URL;
  - keep-alive: several POSTs travel on one connection;
  - `batch: N`: JSON arrays of at most N events, in order, none lost or repeated across
    failed answers and a receiver that went away and came back; a Retry-After longer than
    the backoff is waited for;
  - `max_backlog`: a dead endpoint keeps only the newest events; the oldest are dropped,
    logged and counted in kilnctl status, submission goes on and the outbox stops growing;
  - --check-config refuses URLs kiln cannot use and unreadable CA files, naming the key."""
import os
import re
import sqlite3
import subprocess
import unittest

from kilntest import KILND, Kiln, main, send, wait_for
from webhook_peer import Receiver, make_ca, nothing_listening

SIM_OK = "success@simulator.amazonses.com"


def keys(evs):
    return [(e["eventType"], e["mail"]["messageId"]) for e in evs]


def kiln_with_hooks(*hooks):
    k = Kiln()
    k.cfg["configuration_sets"][0]["events"] = [{"type": "file", "path": "./events-txn.jsonl"}] + list(hooks)
    k.write_config()
    return k


def submit(k, n=1):
    for _ in range(n):
        code, text = send(k, "app@example.test", [SIM_OK])
        assert code == 250, text


def hooks_status(k):
    return {h["Url"]: h for h in k.ctl("status")["Webhooks"]}


def outbox_rows(k):
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(k.spool, "kiln.db"), uri=True, timeout=10)
    try:
        return db.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        db.close()


class Https(unittest.TestCase):
    def test_unknown_ca_refused_then_ca_file_delivers(self):
        k = Kiln()
        ca, crt, key = make_ca(k.tmp, names=("localhost",), ips=())
        with Receiver("127.0.0.1", cert=crt, key=key) as rec:
            url = rec.url("localhost")
            k.cfg["configuration_sets"][0]["events"].append({"type": "webhook", "url": url})
            k.write_config()
            with k:
                # listed from the start, before any event was drained
                self.assertEqual(hooks_status(k)[url]["Backlog"], 0)
                submit(k)
                wait_for(lambda: "certificate" in (hooks_status(k)[url]["LastError"] or ""),
                         what="the certificate error in kilnctl status")
                st = hooks_status(k)[url]
                self.assertGreaterEqual(st["Failures"], 1)
                self.assertEqual(st["Backlog"], 2)           # Send and Delivery, undelivered
                self.assertEqual(st["Dropped"], 0)
                self.assertEqual(rec.all_posts(), [])
                self.assertGreaterEqual(rec.tls_failures, 1)
                self.assertRegex(k.log(), r"event=webhook_failed .*url=\"?%s.*certificate" % re.escape(url))
                human = k.ctl("status", json_out=False).stdout
                self.assertIn(url, human)
                self.assertIn("LAST ERROR", human)

                # The CA in ca_file: both events arrive. The same certificate reached by IP
                # (it names only localhost) is refused: the host is verified too.
                by_ip = rec.url("127.0.0.1")
                k.cfg["configuration_sets"][0]["events"][1]["ca_file"] = ca
                k.cfg["configuration_sets"][0]["events"].append(
                    {"type": "webhook", "url": by_ip, "ca_file": ca})
                k.write_config()
                k.ctl("reload")
                got = wait_for(lambda: (lambda a: a if len(a) >= 2 else None)(rec.accepted()),
                               what="the events over https")
                self.assertEqual(keys(got), keys(k.events()))
                # The receiver records a POST before it answers: wait for kilnd to have
                # read the 200s (backlog 0) as well as for the failure by IP.
                st = wait_for(lambda: (lambda s: s if s[by_ip]["LastError"] and s[url]["Backlog"] == 0
                                       else None)(hooks_status(k)),
                              what="the backlog by name sent and the host name mismatch in kilnctl status")
                self.assertEqual(st[url]["Failures"], 0)
                self.assertEqual(st[url]["Backlog"], 0)
                self.assertRegex(st[by_ip]["LastError"], r"(?i)name|match|subject")
                self.assertEqual(st[by_ip]["Backlog"], 2)
                self.assertEqual(len(rec.accepted()), 2)      # nothing reached it by IP


class KeepAliveAndBatches(unittest.TestCase):
    def test_batches_in_order_over_failures_on_one_connection(self):
        busy = (503, {"Retry-After": "3"}, b"busy, come back later\n")
        rec = Receiver("127.0.0.51", answers=[200, 500, busy]).start()
        k = kiln_with_hooks({"type": "webhook", "url": rec.url(), "batch": 3})
        try:
            with k:
                submit(k, 4)
                k.wait_events(lambda e: len(e) >= 8, what="8 events in the file")
                wait_for(lambda: len(rec.accepted()) >= 8, timeout=30,
                         what="8 events at the receiver")
                posts = rec.all_posts()
                for p in posts:
                    self.assertIsInstance(p["body"], list)
                    self.assertTrue(1 <= len(p["body"]) <= 3, len(p["body"]))
                self.assertEqual([p["status"] for p in posts[:3]], [200, 500, 503])
                # the failed batches were posted again, from the same first event
                self.assertEqual(posts[1]["body"][0], posts[2]["body"][0])
                self.assertEqual(posts[2]["body"][0], posts[3]["body"][0])
                # Retry-After: 3 (longer than the 2 s backoff) was waited for
                self.assertGreaterEqual(posts[3]["t"] - posts[2]["t"], 2.5)
                self.assertIn("HTTP status 503 (Service Unavailable): busy, come back later",
                              k.log())
                self.assertEqual(keys(rec.accepted()), keys(k.events()))
                # keep-alive: every POST on the first connection
                self.assertEqual({p["conn"] for p in posts}, {1}, posts)

                # The receiver goes away (its connection cut) and comes back: nothing lost,
                # nothing repeated. It records a POST before answering it, so first wait for
                # kilnd to have read every answer (a POST cut before its 200 is sent again).
                wait_for(lambda: hooks_status(k)[rec.url()]["Backlog"] == 0,
                         what="kilnd to read the receiver's answers")
                rec.stop()
                submit(k, 3)
                k.wait_events(lambda e: len(e) >= 14, what="14 events in the file")
                wait_for(lambda: hooks_status(k)[rec.url()]["Failures"] >= 1,
                         what="a failed POST while the receiver is away")
                rec.start()
                wait_for(lambda: len(rec.accepted()) >= 14, timeout=30,
                         what="14 events at the receiver")
                self.assertEqual(keys(rec.accepted()), keys(k.events()))
                self.assertEqual(len(set(keys(rec.accepted()))), 14)
                # the receiver records a POST before it answers: wait for kilnd to read the 200
                st = wait_for(lambda: (lambda s: s if s["Backlog"] == 0 else None)(hooks_status(k)[rec.url()]),
                              what="the backlog empty after the receiver came back")
                self.assertEqual((st["Backlog"], st["Failures"], st["Dropped"]), (0, 0, 0))
        finally:
            rec.stop()

    def test_one_event_per_post_by_default_kept_alive(self):
        with Receiver("127.0.0.52") as rec, \
                kiln_with_hooks({"type": "webhook", "url": rec.url()}) as k:
            submit(k, 3)
            wait_for(lambda: len(rec.accepted()) >= 6, what="6 events at the receiver")
            posts = rec.all_posts()
            self.assertEqual(len(posts), 6)
            for p in posts:
                self.assertIsInstance(p["body"], dict)
            self.assertEqual(keys(rec.accepted()), keys(k.events()))
            self.assertEqual(rec.conns, 1)


class MaxBacklog(unittest.TestCase):
    def test_dead_endpoint_keeps_the_newest(self):
        port = nothing_listening("127.0.0.53")
        url = "http://127.0.0.53:%d/kiln" % port
        k = kiln_with_hooks({"type": "webhook", "url": url, "max_backlog": 4})
        try:
            k.start()
            submit(k, 6)
            k.wait_events(lambda e: len(e) >= 12, what="12 events in the file")
            st = wait_for(lambda: (lambda s: s if s["Dropped"] >= 8 else None)(hooks_status(k)[url]),
                          what="8 dropped events in kilnctl status")
            self.assertEqual((st["Dropped"], st["Backlog"], st["MaxBacklog"]), (8, 4, 4))
            self.assertIn("Connection refused", st["LastError"] or "")
            self.assertIn("event=webhook_dropped", k.log())
            wait_for(lambda: outbox_rows(k) == 4, what="the outbox down to the 4 kept events")

            # Submission goes on; the outbox does not grow for the dead endpoint.
            submit(k, 6)
            k.wait_events(lambda e: len(e) >= 24, what="24 events in the file")
            wait_for(lambda: hooks_status(k)[url]["Dropped"] == 20, what="20 dropped")
            wait_for(lambda: outbox_rows(k) == 4, what="the outbox still at 4 rows")
            human = k.ctl("status", json_out=False).stdout
            self.assertRegex(human, r"%s\s+txn\s+4\s+20\s" % re.escape(url))
            self.assertEqual(k.stop(), 0)

            # The endpoint comes back (and kilnd restarts): it gets the newest 4, in order.
            with Receiver("127.0.0.53", port) as rec:
                k.start()
                wait_for(lambda: len(rec.accepted()) >= 4, what="the kept events")
                self.assertEqual(keys(rec.accepted()), keys(k.events()[-4:]))
                st = wait_for(lambda: (lambda s: s if s["Backlog"] == 0 else None)(hooks_status(k)[url]),
                              what="the backlog empty")
                self.assertEqual(st["Dropped"], 20)   # kept across the restart
                self.assertEqual(k.stop(), 0)
        finally:
            k.cleanup()


class CheckConfig(unittest.TestCase):
    def check(self, hook):
        k = kiln_with_hooks(hook)
        try:
            return subprocess.run([KILND, "--check-config", "-c", k.path], capture_output=True,
                                  text=True, timeout=30)
        finally:
            k.cleanup()

    def test_unusable_urls_refused(self):
        cases = [
            ("ftp://127.0.0.1/x", "is not an http:// or https:// URL"),
            ("http:///kiln", "has no host"),
            ("garbage", "is not an http:// or https:// URL"),
            ("https://user:secret@hooks.example.test/", "has user info"),
            ("http://hooks.example.test/a b", "blank or control character"),
            ("http://hooks.example.test:99999/", "is not a usable URL"),
        ]
        for url, why in cases:
            p = self.check({"type": "webhook", "url": url})
            self.assertNotEqual(p.returncode, 0, url)
            self.assertIn("configuration_sets[0].events[1].url", p.stderr)
            self.assertIn(why, p.stderr)
            self.assertIn(url, p.stderr)

    def test_ca_file_checked(self):
        p = self.check({"type": "webhook", "url": "https://localhost/x", "ca_file": "/nonexistent.pem"})
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("configuration_sets[0].events[1].ca_file: cannot read /nonexistent.pem", p.stderr)
        p = self.check({"type": "webhook", "url": "https://localhost/x", "ca_file": "/etc/hostname"})
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("holds no PEM CA certificate", p.stderr)

    def test_good_destination_in_summary(self):
        k = Kiln()
        try:
            ca, _, _ = make_ca(k.tmp)
            k.cfg["configuration_sets"][0]["events"].append(
                {"type": "webhook", "url": "https://localhost:8443/kiln", "ca_file": ca,
                 "batch": 50, "max_backlog": 10000})
            k.write_config()
            p = subprocess.run([KILND, "--check-config", "-c", k.path], capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("webhook https://localhost:8443/kiln (batch 50) (max_backlog 10000) "
                          "(ca_file %s)" % ca, p.stdout)
        finally:
            k.cleanup()


if __name__ == "__main__":
    main()
