"""test_shaping.py — traffic shaping per (source IP, site) and fair scheduling end to end
(SPEC section 1 `shaping:`, section 3, section 5 `kilnctl queue`), against aiosmtpd sinks on
127.0.0.x (a sink we did not write) that record every message and connection:

  (a) shaping.default connections 3, messages_per_connection 5: 200 messages to one domain
      never have more than 3 connections open from one source IP at a time (counted by the
      sink as connections are made and lost), and no connection carries more than 5;
  (b) a 421 storm from one site slows only that site: the healthy site's messages are all
      delivered while the throttled one is backing off (DeliveryDelay events, few attempts,
      `kilnctl queue` shows it waiting), and the throttled site's mail goes out once the
      421s stop;
  (c) a transactional set (priority 10) is not starved by a marketing set (priority 0) with
      2,000 queued messages to the same slow sink on the same IPs: all 20 transactional
      messages, submitted after the backlog, arrive while most of it is still queued;
      (c2) two sets of equal priority take turns: 20 messages of one arrive interleaved
      with a 400-message backlog of the other, not after it;
  (d) `kilnctl queue --explain ID` names the IP and the cap for a message waiting on a
      warm-up cap, and the site for a message waiting on a shaping backoff."""
import os
import subprocess
import threading
import time
import unittest

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from kilntest import BUILDDIR, Kiln, SinkHandler, free_port, main, send, wait_for

LOADGEN = os.path.join(BUILDDIR, "kiln-loadgen")
WARM_IPS = ["127.0.0.10", "127.0.0.11", "127.0.0.12"]


class CountingSMTP(SMTP):
    """aiosmtpd's SMTP protocol, telling its handler when a connection starts and ends
    (aiosmtpd closes its side right after answering QUIT, so a connection is counted out
    before the client can open the next one)."""

    def connection_made(self, transport):
        self.event_handler.opened(transport.get_extra_info("peername")[0])
        super().connection_made(transport)

    def connection_lost(self, error):
        self.event_handler.closed(self.session.peer[0] if self.session and self.session.peer else None)
        super().connection_lost(error)


class CountingHandler(SinkHandler):
    """SinkHandler plus open connections per client IP (current and highest), messages per
    connection, and an optional delay before the reply to DATA."""

    def __init__(self, rule=None, data_delay=0.0):
        super().__init__(rule)
        self.data_delay = data_delay
        self.current = {}
        self.max_concurrent = {}
        self.opened_total = {}

    def opened(self, peer):
        with self.lock:
            self.current[peer] = self.current.get(peer, 0) + 1
            self.opened_total[peer] = self.opened_total.get(peer, 0) + 1
            self.max_concurrent[peer] = max(self.max_concurrent.get(peer, 0), self.current[peer])

    def closed(self, peer):
        if peer is None:
            return
        with self.lock:
            self.current[peer] = self.current.get(peer, 0) - 1

    async def handle_DATA(self, server, session, envelope):
        if self.data_delay:
            import asyncio
            await asyncio.sleep(self.data_delay)
        return await super().handle_DATA(server, session, envelope)


class CountingController(Controller):
    def factory(self):
        return CountingSMTP(self.handler, **self.SMTP_kwargs)


class CSink:
    """An aiosmtpd sink on host:port (thread of this process) with CountingHandler."""

    def __init__(self, host, rule=None, data_delay=0.0):
        self.host = host
        self.port = free_port(host)
        self.handler = CountingHandler(rule, data_delay)
        self.controller = CountingController(self.handler, hostname=host, port=self.port,
                                             ready_timeout=10, decode_data=False)

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.controller.stop()

    @property
    def messages(self):
        return self.handler.snapshot()


def header(m, name):
    prefix = name.encode() + b": "
    for line in m["data"].split(b"\r\n"):
        if line.startswith(prefix):
            return line[len(prefix):].decode()
        if not line:
            break
    return None


def warm(addresses, pool="transactional"):
    return [{"address": a, "zone": "az%d" % (i % 3 + 1), "pool": pool, "warmup": "done"}
            for i, a in enumerate(addresses)]


def loadgen(k, n, conns, domain_pattern="d%d.test", cfgset=None, prefix="loadgen"):
    cmd = [LOADGEN, "-s", "127.0.0.1:%d" % k.port, "-n", str(n), "-c", str(conns), "--domains", "1",
           "--domain-pattern", domain_pattern, "--from", "app@example.test", "--size", "600",
           "--token-prefix", prefix, "--timeout", "60"]
    if cfgset:
        cmd += ["--set", cfgset]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, "kiln-loadgen failed (%d): %s %s" % (p.returncode, p.stdout, p.stderr)
    return p.stdout


def submit(k, token, rcpt, cfgset=None):
    headers = {"X-Token": token}
    if cfgset:
        headers["X-SES-CONFIGURATION-SET"] = cfgset
    code, text = send(k, "app@example.test", [rcpt], headers=headers, subject=token)
    assert code == 250, (code, text)
    return text.split()[-1]


def show(k, *args):
    p = k.ctl(*args, json_out=False)
    assert p.returncode == 0, p.stderr
    print("\n--- kilnctl %s\n%s" % (" ".join(args), p.stdout.rstrip()), flush=True)
    return p.stdout


class Shaping(unittest.TestCase):
    def test_a_connections_per_ip_and_messages_per_connection(self):
        with CSink("127.0.0.21") as sink:
            k = Kiln(routes=[{"domain": "d0.test", "host": sink.host, "port": sink.port}],
                     ips=warm(WARM_IPS),
                     shaping={"default": {"connections": 3, "messages_per_connection": 5,
                                          "rate": "-1"}})
            with k:
                loadgen(k, 200, 10)
                wait_for(lambda: len(sink.messages) >= 200, timeout=90,
                         what="200 messages at the sink")
                time.sleep(0.5)
                self.assertEqual(len(sink.messages), 200)
                h = sink.handler
                # (aiosmtpd's controller connects once from 127.0.0.1 to see it is up)
                h.max_concurrent.pop("127.0.0.1", None)
                print("\nmax concurrent connections per source IP: %s; connections opened: %s"
                      % (h.max_concurrent, h.opened_total), flush=True)
                self.assertTrue(set(h.max_concurrent) <= set(WARM_IPS), h.max_concurrent)
                for ip, n in h.max_concurrent.items():
                    self.assertLessEqual(n, 3, "%s had %d connections open at once" % (ip, n))
                # concurrency was really used (slow start begins at 2)
                self.assertGreaterEqual(max(h.max_concurrent.values()), 2)
                # messages_per_connection: at most 5 messages per connection
                per_ip = {}
                for m in sink.messages:
                    per_ip[m["peer"]] = per_ip.get(m["peer"], 0) + 1
                for ip, n in per_ip.items():
                    self.assertGreaterEqual(h.opened_total[ip] * 5, n,
                                            "%s: %d messages over %d connections" % (ip, n, h.opened_total[ip]))
                self.assertIn("messages_per_connection reached", k.log())

    def test_b_throttled_site_backs_off_alone(self):
        storm_s = 8.0
        storm_end = [0.0]
        during_storm = []

        def throttle(rcpt, attempt):
            if time.monotonic() < storm_end[0]:
                during_storm.append(rcpt)
                return "421 4.7.0 Too many messages, slow down"
            return None

        with CSink("127.0.0.21") as good, CSink("127.0.0.22", rule=throttle) as bad:
            k = Kiln(routes=[{"domain": "healthy.test", "host": good.host, "port": good.port},
                             {"domain": "throttled.test", "host": bad.host, "port": bad.port}],
                     ips=warm(WARM_IPS))
            with k:
                storm_end[0] = time.monotonic() + storm_s
                bad_ids = []
                for i in range(20):
                    submit(k, "h%d" % i, "h%d@healthy.test" % i)
                    bad_ids.append(submit(k, "t%d" % i, "t%d@throttled.test" % i))
                wait_for(lambda: len(good.messages) >= 20, timeout=storm_s - 1,
                         what="the healthy site's 20 messages during the storm")
                evs = k.wait_events(lambda e: any(x["eventType"] == "DeliveryDelay" and
                                                  x["mail"]["destination"][0].endswith("@throttled.test")
                                                  for x in e),
                                    timeout=storm_s, what="a DeliveryDelay for the throttled site")
                q = k.ctl("queue", "--domain", "throttled.test")
                show(k, "queue")
                self.assertEqual(len(bad.messages), 0)
                self.assertEqual(q["Queued"] + q["Deferred"], 20, q)
                self.assertTrue(all(r["Domain"] == "throttled.test" for r in q["Queue"]), q)
                self.assertTrue({r["State"] for r in q["Queue"]} <= {"waiting", "deferred", "ready", "active"})
                delay = [e for e in evs if e["eventType"] == "DeliveryDelay"][0]["deliveryDelay"]
                self.assertIn("421", delay["delayedRecipients"][0]["diagnosticCode"])
                self.assertTrue(all(e["mail"]["destination"][0].endswith("@throttled.test")
                                    for e in evs if e["eventType"] == "DeliveryDelay"))
                # the site is backing off: kilnctl queue --explain names it
                ex = wait_for(lambda: (lambda r: r if "backing off" in r["Recipients"][0]["Reason"] else None)(
                    k.ctl("queue", "--explain", bad_ids[-1])), timeout=storm_s, what="explain: backing off")
                self.assertIn("127.0.0.22", ex["Recipients"][0]["Reason"])
                wait_for(lambda: time.monotonic() >= storm_end[0], timeout=storm_s + 1, what="the storm's end")
                # backoff, not hammering: far fewer attempts than messages x retries
                attempts = len(during_storm)
                print("\nRCPT attempts at the throttled site during the %.0f s storm: %d" % (storm_s, attempts),
                      flush=True)
                self.assertLessEqual(attempts, 20)
                wait_for(lambda: len(bad.messages) >= 20, timeout=90,
                         what="the throttled site's 20 messages after the storm")
                self.assertEqual(len(good.messages), 20)
                self.assertEqual(sorted(header(m, "X-Token") for m in bad.messages),
                                 sorted("t%d" % i for i in range(20)))
                log = k.log()
                self.assertIn("shaping.throttled", log)
                self.assertIn("sched.hold", log)

    def test_c_transactional_not_starved_by_marketing_backlog(self):
        with CSink("127.0.0.21", data_delay=0.1) as sink:
            k = Kiln(routes=[{"domain": "d0.test", "host": sink.host, "port": sink.port}],
                     ips=warm(WARM_IPS),
                     shaping={"default": {"connections": 2, "messages_per_connection": 1000,
                                          "rate": "-1"}},
                     configuration_sets=[
                         {"name": "transactional", "pool": "transactional", "priority": 10,
                          "events": [{"type": "file", "path": "./events-txn.jsonl"}]},
                         {"name": "marketing", "pool": "transactional",
                          "events": [{"type": "file", "path": "./events-mkt.jsonl"}]}],
                     default_configuration_set="transactional")
            with k:
                loadgen(k, 2000, 20, domain_pattern="d0.test", cfgset="marketing", prefix="mkt")
                st = k.ctl("status")
                print("\nafter the marketing backlog: %s queued, %d at the sink" % (st["Queued"], len(sink.messages)),
                      flush=True)
                self.assertGreaterEqual(st["Queued"], 1500, st)
                show(k, "queue")
                for i in range(20):
                    submit(k, "txn-%d" % i, "t%d@d0.test" % i, cfgset="transactional")
                wait_for(lambda: sum(1 for m in sink.messages if (header(m, "X-Token") or "").startswith("txn-")) >= 20,
                         timeout=60, what="the 20 transactional messages")
                msgs = sink.messages
                last_txn = max(i for i, m in enumerate(msgs) if (header(m, "X-Token") or "").startswith("txn-"))
                mkt_before = sum(1 for m in msgs[:last_txn] if (header(m, "X-Loadgen-Token") or "").startswith("mkt"))
                print("marketing messages delivered before the last transactional one: %d of 2000" % mkt_before,
                      flush=True)
                self.assertLess(mkt_before, 1000, "transactional mail waited behind most of the backlog")

    def test_c2_equal_priority_sets_take_turns(self):
        with CSink("127.0.0.21", data_delay=0.1) as sink:
            k = Kiln(routes=[{"domain": "d0.test", "host": sink.host, "port": sink.port}],
                     ips=warm(WARM_IPS),
                     shaping={"default": {"connections": 2, "messages_per_connection": 1000,
                                          "rate": "-1"}},
                     configuration_sets=[
                         {"name": "bulk", "pool": "transactional",
                          "events": [{"type": "file", "path": "./events-bulk.jsonl"}]},
                         {"name": "alerts", "pool": "transactional",
                          "events": [{"type": "file", "path": "./events-alerts.jsonl"}]}],
                     default_configuration_set="bulk")
            with k:
                loadgen(k, 400, 20, domain_pattern="d0.test", cfgset="bulk", prefix="bulk")
                for i in range(20):
                    submit(k, "alert-%d" % i, "a%d@d0.test" % i, cfgset="alerts")
                wait_for(lambda: sum(1 for m in sink.messages if (header(m, "X-Token") or "").startswith("alert-")) >= 20,
                         timeout=60, what="the 20 alerts")
                msgs = sink.messages
                first = min(i for i, m in enumerate(msgs) if (header(m, "X-Token") or "").startswith("alert-"))
                last = max(i for i, m in enumerate(msgs) if (header(m, "X-Token") or "").startswith("alert-"))
                bulk_between = sum(1 for m in msgs[first:last] if (header(m, "X-Loadgen-Token") or "").startswith("bulk"))
                print("\nbulk messages delivered between the first and the last alert: %d" % bulk_between,
                      flush=True)
                # round-robin: about one bulk message per alert while both sets have work
                self.assertLessEqual(bulk_between, 40)
                self.assertLess(last, 300, "the alerts waited behind the bulk backlog")

    def test_d_explain_warmup_cap(self):
        new_ips = ["127.0.0.10", "127.0.0.11", "127.0.0.12"]
        with CSink("127.0.0.21") as sink:
            k = Kiln(routes=[{"domain": "d0.test", "host": sink.host, "port": sink.port}],
                     ips=[{"address": a, "zone": "az%d" % (i + 1), "pool": "transactional"}
                          for i, a in enumerate(new_ips)],
                     warmup={"days": 45, "first_day": 5, "target": 50000, "pacing": 0})
            with k:
                ids = [submit(k, "w%d" % i, "w%d@d0.test" % i) for i in range(20)]
                wait_for(lambda: len(sink.messages) >= 15, timeout=30, what="15 deliveries")
                delivered = {header(m, "X-Token") for m in sink.messages}

                def explained():
                    for i, mid in enumerate(ids):
                        if "w%d" % i in delivered:
                            continue
                        r = k.ctl("queue", "--explain", mid)["Recipients"][0]
                        if r["State"] == "deferred" and "cap" in r["Reason"]:
                            return mid, r
                    return None
                mid, r = wait_for(explained, timeout=30, what="a message deferred by the warm-up cap")
                show(k, "queue")
                show(k, "queue", "--explain", mid)
                self.assertTrue(any(ip in r["Reason"] for ip in new_ips), r)
                self.assertIn("5/5", r["Reason"])
                self.assertIsNotNone(r["Until"])
                self.assertEqual(r["Pool"], "transactional")
                q = wait_for(lambda: (lambda q: q if q["Deferred"] == 5 else None)(k.ctl("queue")),
                             timeout=15, what="5 recipients deferred")
                self.assertEqual(q["Queue"], [{"Pool": "transactional", "ConfigurationSet": "txn",
                                               "Domain": "d0.test", "State": "deferred", "Recipients": 5}])
                # unknown and delivered messages are refused with a reason
                p = k.ctl("queue", "--explain", "no-such-id", expect_ok=False, json_out=False)
                self.assertEqual(p.returncode, 1)
                self.assertIn("no recipient in the queue", p.stderr)

    def test_d_explain_shaping_backoff(self):
        with CSink("127.0.0.22", rule=lambda rcpt, n: "421 4.7.0 Too many messages, slow down") as bad:
            k = Kiln(routes=[{"domain": "slow.test", "host": bad.host, "port": bad.port}],
                     ips=warm(["127.0.0.12"]))
            with k:
                mid = submit(k, "s0", "s0@slow.test")

                def backing_off():
                    r = k.ctl("queue", "--explain", mid)["Recipients"][0]
                    return r if "backing off" in r["Reason"] else None
                r = wait_for(backing_off, timeout=20, what="explain to report the backoff")
                show(k, "queue", "--explain", mid)
                self.assertIn("site 127.0.0.22", r["Reason"])
                self.assertIn("127.0.0.12", r["Reason"])
                self.assertEqual(r["State"], "waiting")
                self.assertIsNotNone(r["Until"])
                self.assertIn("421", r["LastReply"])
                self.assertGreaterEqual(r["Attempts"], 1)
                q = k.ctl("queue", "--domain", "SLOW.test")
                self.assertEqual(q["Queue"][0]["State"], "waiting")
                self.assertEqual(q["Queued"], 1)


if __name__ == "__main__":
    main()
