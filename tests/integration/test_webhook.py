"""test_webhook.py — `webhook` event destinations (SPEC section 4): every event of the
configuration set is POSTed as JSON, in order, at least once, to an HTTP receiver we did
not write (Python's http.server in a thread, on 127.0.0.x); failures (HTTP 500, nothing
listening, kilnd restarted meanwhile) are retried with backoff without holding up the
file destination, and no event is lost."""
import http.server
import json
import os
import re
import threading
import time
import unittest

from kilntest import Kiln, Sink, free_port, main, send, wait_for

SIM_OK = "success@simulator.amazonses.com"


def mid_of(text):
    return re.match(r"^2\.0\.0 Ok (\S+)$", text).group(1)


class Receiver:
    """An HTTP server recording every POST; statuses[i] is the answer to POST number i
    (200 once the list is used up)."""

    def __init__(self, host, port=None, statuses=()):
        self.host = host
        self.port = port or free_port(host)
        self.statuses = list(statuses)
        self.posts = []          # (status, path, content_type, body dict)
        self.lock = threading.Lock()
        self.srv = None
        self.thread = None

    @property
    def url(self):
        return "http://%s:%d/kiln/events" % (self.host, self.port)

    def start(self):
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with rec.lock:
                    i = len(rec.posts)
                    status = rec.statuses[i] if i < len(rec.statuses) else 200
                    rec.posts.append((status, self.path, self.headers.get("Content-Type"),
                                      json.loads(body)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.srv = http.server.ThreadingHTTPServer((self.host, self.port), Handler)
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.srv:
            self.srv.shutdown()
            self.srv.server_close()
            self.thread.join(10)
            self.srv = None

    def accepted(self):
        """Events answered with 2xx, in arrival order."""
        with self.lock:
            return [p[3] for p in self.posts if 200 <= p[0] < 300]

    def all_posts(self):
        with self.lock:
            return list(self.posts)


def keys(evs):
    return [(e["eventType"], e["mail"]["messageId"]) for e in evs]


def dedup_in_order(evs):
    """At-least-once: a repeat of the previous event is allowed, nothing else."""
    out = []
    for k in keys(evs):
        if not out or out[-1] != k:
            out.append(k)
    return out


def kiln_with_hook(rec, sink=None):
    over = {}
    if sink:
        over["routes"] = [{"domain": "dest.test", "host": sink.host, "port": sink.port}]
    k = Kiln(**over)
    k.cfg["configuration_sets"][0]["events"] = [
        {"type": "file", "path": "./events-txn.jsonl"},
        {"type": "webhook", "url": rec.url},
    ]
    k.write_config()
    return k


def submit(k, rcpt):
    code, text = send(k, "app@example.test", [rcpt])
    assert code == 250, text
    return mid_of(text)


class Webhook(unittest.TestCase):
    def test_events_posted_in_order_and_written_to_file(self):
        rec = Receiver("127.0.0.31").start()
        try:
            with Sink("127.0.0.32") as sink, kiln_with_hook(rec, sink) as k:
                m1 = submit(k, SIM_OK)
                k.wait_events(lambda e: len(e) >= 2, what="simulator events in the file")
                m2 = submit(k, "a@dest.test")
                wait_for(lambda: len(rec.accepted()) >= 4, what="4 events at the receiver")
                got = rec.accepted()
                self.assertEqual(keys(got), [("Send", m1), ("Delivery", m1),
                                             ("Send", m2), ("Delivery", m2)])
                self.assertEqual(got[3]["delivery"]["recipients"], ["a@dest.test"])
                for status, path, ctype, _ in rec.all_posts():
                    self.assertEqual(path, "/kiln/events")
                    self.assertEqual(ctype, "application/json")
                self.assertEqual(keys(k.events()), keys(got))
                self.assertEqual(k.events(), got)
                self.assertNotIn("not supported yet", k.log())
        finally:
            rec.stop()

    def test_500_is_retried_and_file_not_held_up(self):
        rec = Receiver("127.0.0.33", statuses=[500, 500]).start()
        try:
            with kiln_with_hook(rec) as k:
                mid = submit(k, SIM_OK)
                evs = k.wait_events(lambda e: len(e) >= 2, timeout=5, what="file events")
                self.assertEqual(keys(evs), [("Send", mid), ("Delivery", mid)])
                # The file has both while the webhook is still backing off (1 s, then 2 s).
                self.assertEqual(rec.accepted(), [])
                wait_for(lambda: len(rec.accepted()) >= 2, timeout=20,
                         what="events after two 500 answers")
                posts = rec.all_posts()
                self.assertEqual([p[0] for p in posts[:2]], [500, 500])
                self.assertEqual(keys([posts[0][3]]), [("Send", mid)])
                self.assertEqual(keys(rec.accepted()), [("Send", mid), ("Delivery", mid)])
                self.assertIn("webhook_failed", k.log())
                self.assertIn("webhook_recovered", k.log())
        finally:
            rec.stop()

    def test_receiver_down_then_started(self):
        rec = Receiver("127.0.0.34")
        try:
            with kiln_with_hook(rec) as k:
                mid = submit(k, SIM_OK)
                k.wait_events(lambda e: len(e) >= 2, timeout=5, what="file events")
                wait_for(lambda: "webhook_failed" in k.log(), timeout=5,
                         what="the failed POST in the log")
                time.sleep(1.5)
                rec.start()
                wait_for(lambda: len(rec.accepted()) >= 2, timeout=20,
                         what="events after the receiver started")
                self.assertEqual(dedup_in_order(rec.accepted()), [("Send", mid), ("Delivery", mid)])
        finally:
            rec.stop()

    def test_events_survive_restart_while_receiver_down(self):
        rec = Receiver("127.0.0.35")
        k = kiln_with_hook(rec)
        try:
            k.start()
            mid = submit(k, SIM_OK)
            k.wait_events(lambda e: len(e) >= 2, timeout=5, what="file events")
            wait_for(lambda: "webhook_failed" in k.log(), timeout=5,
                     what="the failed POST in the log")
            self.assertEqual(k.stop(), 0)
            k.stderr.close()
            k.start()
            rec.start()
            wait_for(lambda: len(rec.accepted()) >= 2, timeout=20,
                     what="events after restart and receiver start")
            self.assertEqual(dedup_in_order(rec.accepted()), [("Send", mid), ("Delivery", mid)])
            # The file destination did not get the events twice after the restart.
            self.assertEqual(keys(k.events()), [("Send", mid), ("Delivery", mid)])
            self.assertEqual(k.stop(), 0)
        finally:
            rec.stop()
            k.cleanup()


if __name__ == "__main__":
    main()
