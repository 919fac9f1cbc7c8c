"""test_pools.py — dedicated-IP pools end to end (SPEC section 3: pools, warm-up, failover;
section 5: kilnctl ips / ip warmup / zone down|up), against aiosmtpd sinks on 127.0.0.x that
record the client's source IP of every message and connection:

  (a) two configuration sets bound to pools on disjoint IPs: each set's mail leaves only
      from its own pool's IPs;
  (b) warm-up caps count recipients: 3 new IPs at first_day 5 deliver exactly 5 each, the
      rest waits with DeliveryDelay SendingDeferral; `kilnctl ip warmup --percent 100`
      lets the rest out through that IP;
  (b2) a message with more recipients than an IP's headroom is split across sessions;
  (b3) beyond every cap, mail goes to the pool named by `overflow`;
  (c) failover: two addresses that are not local (TEST-NET: bind fails with EADDRNOTAVAIL;
      192.0.2.1 and 192.0.2.2 unless the host carries one) go down, every message leaves
      from the one that works;
  (c2) an IP whose sessions two sites refuse (greeting failures) while the pool's other IPs
      reach them goes down after 3 failures; every message is retried at once from
      another IP, none is deferred;
  (d) `kilnctl zone down az1` opens no new session from az1's IP, `zone up` restores it;
  (e) every IP down: DeliveryDelay IPFailure, nothing lost, delivered once an operator
      brings a zone back;
  (f) a managed pool shows NOT_APPLICABLE warm-up and refuses `kilnctl ip warmup`."""
import errno
import socket
import time
import unittest

from kilntest import Kiln, Sink, SinkHandler, main, send, wait_for

SINK_IPS = ["127.0.0.21", "127.0.0.22", "127.0.0.23"]


def unbindable(n):
    """n documentation addresses (TEST-NET-1/3) this machine cannot bind (EADDRNOTAVAIL before
    any packet leaves). Checked, because a host may carry one of them (some CI networks put
    192.0.2.2 on eth0)."""
    out = []
    for a in ("192.0.2.1", "192.0.2.2", "203.0.113.1", "203.0.113.2", "192.0.2.3"):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((a, 0))
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                out.append(a)
        finally:
            s.close()
        if len(out) == n:
            return out
    raise unittest.SkipTest("no %d unbindable TEST-NET addresses on this host" % n)


def token_of(m):
    for line in m["data"].split(b"\r\n"):
        if line.startswith(b"X-Token: "):
            return line[9:].decode()
        if not line:
            break
    return None


class RefusingHandler(SinkHandler):
    """Refuses EHLO and HELO from the source addresses in self.refuse: to the client, a
    greeting failure (its session never becomes ready)."""
    refuse = ()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self.lock:
            self.connections.append({"peer": session.peer[0], "ehlo": hostname})
        if session.peer[0] in self.refuse:
            return ["554 5.7.1 no service for %s" % session.peer[0]]
        session.host_name = hostname
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        if session.peer[0] in self.refuse:
            return "554 5.7.1 no service for %s" % session.peer[0]
        session.host_name = hostname
        return "250 %s" % server.hostname


def refusing_sink(host, refuse):
    s = Sink(host)
    s.handler.__class__ = RefusingHandler   # before start: aiosmtpd reads the hooks per session
    s.handler.refuse = set(refuse)
    return s


def routes_for(sinks):
    return [{"domain": "d%d.test" % i, "host": s.host, "port": s.port} for i, s in enumerate(sinks)]


def submit(k, token, domain, cfgset=None, rcpts=None):
    headers = {"X-Token": token}
    if cfgset:
        headers["X-SES-CONFIGURATION-SET"] = cfgset
    code, text = send(k, "app@example.test", rcpts or ["r-%s@%s" % (token, domain)],
                      headers=headers, subject=token)
    assert code == 250, (code, text)
    return text.split()[-1]


def all_messages(sinks):
    out = []
    for s in sinks:
        out.extend(s.messages)
    return out


def ips_by_addr(k):
    return {x["Ip"]: x for x in k.ctl("ips")["DedicatedIps"]}


def show_ips(k, title):
    p = k.ctl("ips", json_out=False)
    assert p.returncode == 0, p.stderr
    print("\n--- kilnctl ips (%s)\n%s" % (title, p.stdout.rstrip()), flush=True)
    return p.stdout


def ip(address, zone, pool, **kw):
    d = {"address": address, "zone": zone, "pool": pool}
    d.update(kw)
    return d


class Pools(unittest.TestCase):
    def test_a_sets_use_only_their_pool(self):
        txn_ips = {"127.0.0.10", "127.0.0.11", "127.0.0.12"}
        mkt_ips = {"127.0.0.13", "127.0.0.14", "127.0.0.15"}
        with Sink(SINK_IPS[0]) as s0, Sink(SINK_IPS[1]) as s1, Sink(SINK_IPS[2]) as s2:
            sinks = [s0, s1, s2]
            k = Kiln(routes=routes_for(sinks),
                     ips=[ip(a, "az%d" % (i % 3 + 1), "transactional", warmup="done")
                          for i, a in enumerate(sorted(txn_ips))] +
                         [ip(a, "az%d" % (i % 3 + 1), "marketing", warmup="done")
                          for i, a in enumerate(sorted(mkt_ips))],
                     pools=[{"name": "transactional", "scaling": "standard"},
                            {"name": "marketing", "scaling": "standard"}],
                     configuration_sets=[
                         {"name": "txn", "pool": "transactional",
                          "events": [{"type": "file", "path": "./events-txn.jsonl"}]},
                         {"name": "mkt", "pool": "marketing",
                          "events": [{"type": "file", "path": "./events-mkt.jsonl"}]}])
            with k:
                want = {}
                for i in range(24):
                    cfgset = "txn" if i % 2 == 0 else "mkt"
                    tok = "a%d" % i
                    submit(k, tok, "d%d.test" % (i % 3), cfgset)
                    want[tok] = cfgset
                wait_for(lambda: len(all_messages(sinks)) >= len(want), timeout=30,
                         what="all 24 messages at the sinks")
                seen = {}
                for m in all_messages(sinks):
                    tok = token_of(m)
                    self.assertIn(tok, want)
                    pool = txn_ips if want[tok] == "txn" else mkt_ips
                    self.assertIn(m["peer"], pool, "message %s of set %s left from %s"
                                  % (tok, want[tok], m["peer"]))
                    seen.setdefault(want[tok], set()).add(m["peer"])
                self.assertEqual(len(all_messages(sinks)), 24)
                # the ses:outgoing-ip tag names the pool's IP too
                evs = k.wait_events(lambda e: sum(x["eventType"] == "Delivery" for x in e) >= 12,
                                    name="events-mkt.jsonl", what="marketing Delivery events")
                for e in evs:
                    if e["eventType"] == "Delivery":
                        self.assertIn(e["mail"]["tags"]["ses:outgoing-ip"][0], mkt_ips)
                print("\npeers per set: %s" % {k2: sorted(v) for k2, v in seen.items()})

    def test_b_warmup_cap_counts_recipients(self):
        new_ips = ["127.0.0.10", "127.0.0.11", "127.0.0.12"]
        with Sink(SINK_IPS[0]) as sink:
            k = Kiln(routes=[{"domain": "d0.test", "host": sink.host, "port": sink.port}],
                     ips=[ip(a, "az%d" % (i + 1), "transactional") for i, a in enumerate(new_ips)],
                     warmup={"days": 45, "first_day": 5, "target": 50000, "pacing": 0})
            with k:
                mids = {}
                for i in range(30):
                    mids[submit(k, "b%d" % i, "d0.test")] = "b%d" % i
                wait_for(lambda: len(sink.messages) >= 15, timeout=30, what="15 deliveries")

                def deferred_ids(evs):
                    return {e["mail"]["messageId"] for e in evs if e["eventType"] == "DeliveryDelay"
                            and e["deliveryDelay"]["delayType"] == "SendingDeferral"}
                evs = k.wait_events(lambda e: len(deferred_ids(e)) >= 15, timeout=30,
                                    what="15 messages deferred with SendingDeferral")
                time.sleep(1.0)   # nothing more may go out
                msgs = sink.messages
                self.assertEqual(len(msgs), 15)
                per_ip = {}
                for m in msgs:
                    per_ip[m["peer"]] = per_ip.get(m["peer"], 0) + 1
                self.assertEqual(per_ip, {a: 5 for a in new_ips})
                delivered = {token_of(m) for m in msgs}
                deferred = deferred_ids(k.events())
                self.assertEqual(len(deferred), 15)
                self.assertEqual({mids[d] for d in deferred} & delivered, set())
                d = [e for e in evs if e["eventType"] == "DeliveryDelay"][0]["deliveryDelay"]
                self.assertIn("cap", d["delayedRecipients"][0]["diagnosticCode"])
                st = k.ctl("status")
                self.assertEqual(st["Deferred"], 15)

                ips = ips_by_addr(k)
                for a in new_ips:
                    self.assertEqual(ips[a]["SentLast24Hours"], 5, ips[a])
                    self.assertEqual(ips[a]["DailyCap"], 5, ips[a])
                    self.assertEqual(ips[a]["WarmupStatus"], "IN_PROGRESS")
                    self.assertEqual(ips[a]["WarmupPercentage"], 0)
                    self.assertEqual(ips[a]["State"], "active")
                    self.assertIsInstance(ips[a]["SentLast24Hours"], int)
                show_ips(k, "warm-up caps reached")

                # the operator declares one IP warm: the rest goes out through it at once
                p = k.ctl("ip", "warmup", "127.0.0.10", "--percent", "100", json_out=False)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertIn("DONE", p.stdout)
                wait_for(lambda: len(sink.messages) >= 30, timeout=30, what="the other 15 via 127.0.0.10")
                time.sleep(0.5)
                msgs = sink.messages
                self.assertEqual(len(msgs), 30)
                self.assertEqual(sorted(token_of(m) for m in msgs), sorted(mids.values()))
                self.assertTrue(all(m["peer"] == "127.0.0.10" for m in msgs[15:]))
                ips = ips_by_addr(k)
                self.assertEqual(ips["127.0.0.10"]["WarmupStatus"], "DONE")
                self.assertEqual(ips["127.0.0.10"]["WarmupPercentage"], 100)
                self.assertEqual(ips["127.0.0.10"]["DailyCap"], -1)
                self.assertEqual(ips["127.0.0.10"]["SentLast24Hours"], 20)
                self.assertEqual(ips["127.0.0.11"]["SentLast24Hours"], 5)
                show_ips(k, "after kilnctl ip warmup 127.0.0.10 --percent 100")

                # errors: unknown IP, out of range
                p = k.ctl("ip", "warmup", "127.0.0.99", "--percent", "10", expect_ok=False, json_out=False)
                self.assertNotEqual(p.returncode, 0)
                self.assertIn("127.0.0.99", p.stderr)
                p = k.ctl("ip", "warmup", "127.0.0.11", "--percent", "101", expect_ok=False, json_out=False)
                self.assertEqual(p.returncode, 2)

    def test_b2_recipients_split_by_headroom(self):
        new_ips = ["127.0.0.10", "127.0.0.11", "127.0.0.12"]
        with Sink(SINK_IPS[0]) as sink:
            k = Kiln(routes=[{"domain": "d0.test", "host": sink.host, "port": sink.port}],
                     ips=[ip(a, "az%d" % (i + 1), "transactional") for i, a in enumerate(new_ips)],
                     warmup={"days": 45, "first_day": 5, "target": 50000, "pacing": 0})
            with k:
                rcpts = ["s%d@d0.test" % i for i in range(17)]
                submit(k, "split", "d0.test", rcpts=rcpts)
                wait_for(lambda: sum(len(m["rcpts"]) for m in sink.messages) >= 15, timeout=30,
                         what="15 recipients delivered")
                k.wait_events(lambda e: any(x["eventType"] == "DeliveryDelay" for x in e),
                              what="the other 2 deferred")
                time.sleep(0.5)
                msgs = sink.messages
                # one transaction per IP, none with more recipients than its IP's cap
                self.assertEqual(sorted(len(m["rcpts"]) for m in msgs), [5, 5, 5])
                self.assertEqual(sorted(m["peer"] for m in msgs), new_ips)
                got = [r for m in msgs for r in m["rcpts"]]
                self.assertEqual(len(set(got)), 15)
                d = [e for e in k.events() if e["eventType"] == "DeliveryDelay"]
                delayed = {r["emailAddress"] for e in d for r in e["deliveryDelay"]["delayedRecipients"]}
                self.assertEqual(delayed, set(rcpts) - set(got))
                self.assertEqual({e["deliveryDelay"]["delayType"] for e in d}, {"SendingDeferral"})
                self.assertEqual([x["SentLast24Hours"] for x in k.ctl("ips")["DedicatedIps"]], [5, 5, 5])

    def test_b3_overflow_pool(self):
        with Sink(SINK_IPS[0]) as sink:
            k = Kiln(routes=[{"domain": "d0.test", "host": sink.host, "port": sink.port}],
                     ips=[ip("127.0.0.10", "az1", "transactional"),
                          ip("127.0.0.13", "az2", "spare", warmup="done")],
                     pools=[{"name": "transactional", "scaling": "standard", "overflow": "spare"},
                            {"name": "spare", "scaling": "standard"}],
                     warmup={"days": 45, "first_day": 5, "target": 50000, "pacing": 0})
            with k:
                for i in range(8):
                    submit(k, "o%d" % i, "d0.test")
                wait_for(lambda: len(sink.messages) >= 8, timeout=30, what="8 deliveries")
                peers = [m["peer"] for m in sink.messages]
                self.assertEqual(peers.count("127.0.0.10"), 5)
                self.assertEqual(peers.count("127.0.0.13"), 3)
                self.assertFalse([e for e in k.events() if e["eventType"] == "DeliveryDelay"])
                self.assertIn("overflow=spare", k.log())

    def test_c_failover_when_bind_fails(self):
        with Sink(SINK_IPS[0]) as s0, Sink(SINK_IPS[1]) as s1, Sink(SINK_IPS[2]) as s2:
            sinks = [s0, s1, s2]
            bad = unbindable(2)
            k = Kiln(routes=routes_for(sinks),
                     ips=[ip(bad[0], "az1", "transactional", warmup="done"),
                          ip(bad[1], "az2", "transactional", warmup="done"),
                          ip("127.0.0.10", "az3", "transactional", warmup="done")])
            with k:
                before = show_ips(k, "before failover")
                self.assertEqual(before.count("active"), 3, before)
                toks = []
                for i in range(12):
                    tok = "c%d" % i
                    submit(k, tok, "d%d.test" % (i % 3))
                    toks.append(tok)
                wait_for(lambda: len(all_messages(sinks)) >= 12, timeout=30, what="12 deliveries")
                time.sleep(0.5)
                msgs = all_messages(sinks)
                self.assertEqual(sorted(token_of(m) for m in msgs), sorted(toks))
                self.assertEqual({m["peer"] for m in msgs}, {"127.0.0.10"})
                ips = ips_by_addr(k)
                for a in bad:
                    self.assertEqual(ips[a]["State"], "down", ips[a])
                    self.assertIn("bind", ips[a]["kiln"]["DownReason"])
                self.assertEqual(ips["127.0.0.10"]["State"], "active")
                self.assertEqual(ips["127.0.0.10"]["SentLast24Hours"], 12)
                after = show_ips(k, "after failover")
                self.assertIn("%s: bind failed" % bad[0], after)
                # no message was deferred: the failover happened within the attempt
                self.assertFalse([e for e in k.events() if e["eventType"] == "DeliveryDelay"])
                self.assertIn("pools.ip_failed", k.log())

    def test_c2_connect_failures_take_an_ip_out(self):
        with refusing_sink(SINK_IPS[0], ["127.0.0.10"]) as s0, \
                refusing_sink(SINK_IPS[1], ["127.0.0.10"]) as s1:
            sinks = [s0, s1]
            # one message per connection: every message needs a new session, so the
            # choice of the source IP is made for each
            k = Kiln(routes=routes_for(sinks),
                     ips=[ip("127.0.0.10", "az1", "transactional", warmup="done"),
                          ip("127.0.0.11", "az2", "transactional", warmup="done"),
                          ip("127.0.0.12", "az3", "transactional", warmup="done")],
                     shaping={"default": {"connections": 10, "messages_per_connection": 1,
                                          "rate": "50/s"}})
            with k:
                toks = []
                for i in range(30):
                    tok = "f%d" % i
                    submit(k, tok, "d%d.test" % (i % 2))
                    toks.append(tok)
                    wait_for(lambda: len(all_messages(sinks)) >= len(toks), timeout=20,
                             what="message %s delivered" % tok)
                    if ips_by_addr(k)["127.0.0.10"]["State"] == "down":
                        break
                refused = [c for s in sinks for c in s.handler.connections if c["peer"] == "127.0.0.10"]
                ips = ips_by_addr(k)
                self.assertEqual(ips["127.0.0.10"]["State"], "down", "after %d refused sessions" % len(refused))
                self.assertIn("connect", ips["127.0.0.10"]["kiln"]["DownReason"])
                self.assertGreaterEqual(len(refused), 3)
                # every message went out at its first attempt from another IP
                msgs = all_messages(sinks)
                self.assertEqual(sorted(token_of(m) for m in msgs), sorted(toks))
                self.assertEqual({m["peer"] for m in msgs} - {"127.0.0.11", "127.0.0.12"}, set())
                self.assertFalse([e for e in k.events() if e["eventType"] == "DeliveryDelay"])
                show_ips(k, "127.0.0.10 refused by both sites")
                # while it is down no session starts from it
                n = len(refused)
                for i in range(6):
                    submit(k, "g%d" % i, "d%d.test" % (i % 2))
                wait_for(lambda: len(all_messages(sinks)) >= len(toks) + 6, timeout=20, what="6 more")
                self.assertEqual(sum(1 for s in sinks for c in s.handler.connections
                                     if c["peer"] == "127.0.0.10"), n)

    def test_d_zone_down_and_up(self):
        with Sink(SINK_IPS[0]) as s0, Sink(SINK_IPS[1]) as s1, Sink(SINK_IPS[2]) as s2, \
                Sink("127.0.0.24") as s3, Sink("127.0.0.25") as s4, Sink("127.0.0.26") as s5:
            first, later = [s0, s1, s2], [s3, s4, s5]
            k = Kiln(routes=routes_for(first + later),
                     ips=[ip("127.0.0.10", "az1", "transactional", warmup="done"),
                          ip("127.0.0.11", "az2", "transactional", warmup="done"),
                          ip("127.0.0.12", "az3", "transactional", warmup="done")])
            with k:
                p = k.ctl("zone", "down", "az1", json_out=False)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertIn("az1", p.stdout)
                ips = ips_by_addr(k)
                self.assertEqual(ips["127.0.0.10"]["State"], "down")
                self.assertIn("zone az1", ips["127.0.0.10"]["kiln"]["DownReason"])
                show_ips(k, "zone az1 down")
                for i in range(12):
                    submit(k, "z%d" % i, "d%d.test" % (i % 3))
                wait_for(lambda: len(all_messages(first)) >= 12, timeout=30, what="12 deliveries")
                conns = [c["peer"] for s in first for c in s.handler.connections]
                self.assertTrue(conns)
                self.assertNotIn("127.0.0.10", conns)
                self.assertEqual({m["peer"] for m in all_messages(first)} - {"127.0.0.11", "127.0.0.12"}, set())

                p = k.ctl("zone", "up", "az1", json_out=False)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual(ips_by_addr(k)["127.0.0.10"]["State"], "active")
                for i in range(12):
                    submit(k, "u%d" % i, "d%d.test" % (3 + i % 3))
                wait_for(lambda: len(all_messages(later)) >= 12, timeout=30, what="12 more deliveries")
                conns = [c["peer"] for s in later for c in s.handler.connections]
                self.assertIn("127.0.0.10", conns, "zone up did not bring 127.0.0.10 back")

                # an unknown zone is an error naming the zones there are
                p = k.ctl("zone", "down", "az9", expect_ok=False, json_out=False)
                self.assertEqual(p.returncode, 1)
                self.assertIn("az9", p.stderr)
                self.assertIn("az1", p.stderr)

    def test_e_all_ips_down_then_fixed(self):
        with Sink(SINK_IPS[0]) as sink:
            k = Kiln(routes=[{"domain": "d0.test", "host": sink.host, "port": sink.port}],
                     ips=[ip("127.0.0.10", "az1", "transactional", warmup="done"),
                          ip("127.0.0.11", "az2", "transactional", warmup="done"),
                          ip("127.0.0.12", "az3", "transactional", warmup="done")])
            with k:
                for z in ("az1", "az2", "az3"):
                    k.ctl("zone", "down", z)
                toks = ["e%d" % i for i in range(5)]
                for t in toks:
                    submit(k, t, "d0.test")
                evs = k.wait_events(
                    lambda e: len({x["mail"]["messageId"] for x in e if x["eventType"] == "DeliveryDelay"
                                   and x["deliveryDelay"]["delayType"] == "IPFailure"}) >= 5,
                    timeout=30, what="IPFailure DeliveryDelay for every message")
                d = [e for e in evs if e["eventType"] == "DeliveryDelay"][0]["deliveryDelay"]
                self.assertIn("unavailable", d["delayedRecipients"][0]["diagnosticCode"])
                self.assertEqual(sink.messages, [])
                self.assertFalse([e for e in k.events() if e["eventType"] == "Bounce"])
                st = k.ctl("status")
                self.assertEqual(st["Queued"] + st["Deferred"], 5)
                show_ips(k, "every zone down")

                k.ctl("zone", "up", "az2")
                wait_for(lambda: len(sink.messages) >= 5, timeout=30, what="delivery after zone up")
                time.sleep(0.5)
                msgs = sink.messages
                self.assertEqual(sorted(token_of(m) for m in msgs), sorted(toks))
                self.assertEqual({m["peer"] for m in msgs}, {"127.0.0.11"})
                wait_for(lambda: k.ctl("status")["Deferred"] == 0, what="queue to empty")

    def test_f_managed_pool_has_no_standard_warmup(self):
        with Sink(SINK_IPS[0]) as sink:
            k = Kiln(routes=[{"domain": "d0.test", "host": sink.host, "port": sink.port}],
                     ips=[ip("127.0.0.13", "az1", "marketing"), ip("127.0.0.14", "az2", "marketing"),
                          ip("127.0.0.15", "az3", "marketing")],
                     pools=[{"name": "marketing", "scaling": "managed"}],
                     configuration_sets=[{"name": "mkt", "pool": "marketing",
                                          "events": [{"type": "file", "path": "./events-mkt.jsonl"}]}],
                     default_configuration_set="mkt")
            with k:
                for x in k.ctl("ips")["DedicatedIps"]:
                    self.assertEqual((x["WarmupStatus"], x["WarmupPercentage"], x["DailyCap"]),
                                     ("NOT_APPLICABLE", -1, -1))
                    self.assertTrue(x["kiln"]["Managed"])
                p = k.ctl("ip", "warmup", "127.0.0.13", "--percent", "50", expect_ok=False, json_out=False)
                self.assertEqual(p.returncode, 1)
                self.assertIn("managed", p.stderr)
                submit(k, "f0", "d0.test")
                wait_for(lambda: sink.messages, what="delivery from the managed pool")
                self.assertIn(sink.messages[0]["peer"], {"127.0.0.13", "127.0.0.14", "127.0.0.15"})
                show_ips(k, "managed pool")


if __name__ == "__main__":
    main()
