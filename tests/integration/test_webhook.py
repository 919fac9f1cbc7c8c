"""test_webhook.py — `webhook` event destinations (SPEC section 4): every event of the
configuration set is POSTed as JSON, in order, at least once, to an HTTP receiver we did
not write (Python's http.server in a thread, on 127.0.0.x; webhook_peer.py); failures
(HTTP 500, nothing listening, kilnd restarted meanwhile) are retried with backoff without
holding up the file destination, and no event is lost. HTTPS, keep-alive, batches,
max_backlog and URL checks: test_webhook_https.py."""
import re
import time
import unittest

from kilntest import Kiln, Sink, main, send, wait_for
from webhook_peer import Receiver

SIM_OK = "success@simulator.amazonses.com"


def mid_of(text):
    return re.match(r"^2\.0\.0 Ok (\S+)$", text).group(1)


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
        {"type": "webhook", "url": rec.url()},
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
                for p in rec.all_posts():
                    self.assertEqual(p["path"], "/kiln/events")
                    self.assertEqual(p["ctype"], "application/json")
                self.assertEqual(keys(k.events()), keys(got))
                self.assertEqual(k.events(), got)
                self.assertNotIn("not supported yet", k.log())
        finally:
            rec.stop()

    def test_500_is_retried_and_file_not_held_up(self):
        rec = Receiver("127.0.0.33", answers=[500, 500]).start()
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
                self.assertEqual([p["status"] for p in posts[:2]], [500, 500])
                self.assertEqual(keys([posts[0]["body"]]), [("Send", mid)])
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
