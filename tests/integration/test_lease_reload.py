"""test_lease_reload.py — leasing and releasing dedicated IPs with `kilnctl reload` (SPEC
section 3, Lease / release) while kilnd runs, against aiosmtpd sinks that record the source
IP of every message and connection:

  (a) a reload that removes an IP while a client submits continuously: nothing lost,
      nothing duplicated, and no new session from the removed IP once the reload applied;
      it drains and is dropped from `kilnctl ips`;
  (b) a reload that adds a new IP starts it at day-1 volume (first_day recipients per
      rolling 24 h): IN_PROGRESS 0 %, at most first_day sent;
  (c) an IP moved to another pool keeps its warm-up percentage (also across a restart);
  (d) an invalid config on reload changes nothing: kilnctl reload exits non-zero naming
      the error, `kilnctl ips` is unchanged."""
import copy
import smtplib
import threading
import time
import unittest

from kilntest import Kiln, Sink, main, send, wait_for

SINK_IPS = ["127.0.0.21", "127.0.0.22", "127.0.0.23"]
CLIENTS = 3   # submitting in parallel, so that sessions are busy when the reload comes


def token_of(m):
    for line in m["data"].split(b"\r\n"):
        if line.startswith(b"X-Token: "):
            return line[9:].decode()
        if not line:
            break
    return None


def routes_for(sinks):
    return [{"domain": "d%d.test" % i, "host": s.host, "port": s.port} for i, s in enumerate(sinks)]


def all_messages(sinks):
    out = []
    for s in sinks:
        out.extend(s.messages)
    return out


def connections_from(sinks, peer):
    return sum(1 for s in sinks for c in s.handler.connections if c["peer"] == peer)


def ip(address, zone, pool, **kw):
    d = {"address": address, "zone": zone, "pool": pool}
    d.update(kw)
    return d


def ips_by_addr(k):
    return {x["Ip"]: x for x in k.ctl("ips")["DedicatedIps"]}


def show_ips(k, title):
    p = k.ctl("ips", json_out=False)
    assert p.returncode == 0, p.stderr
    print("\n--- kilnctl ips (%s)\n%s" % (title, p.stdout.rstrip()), flush=True)
    return p.stdout


def reload(k, cfg=None, text=None):
    k.write_config(cfg, text)
    return k.ctl("reload", expect_ok=False, json_out=False)


def submit(k, token, domain):
    code, text = send(k, "app@example.test", ["r-%s@%s" % (token, domain)],
                      headers={"X-Token": token}, subject=token)
    assert code == 250, (code, text)


class LeaseReload(unittest.TestCase):
    def test_a_release_under_load(self):
        total = 300
        with Sink(SINK_IPS[0]) as s0, Sink(SINK_IPS[1]) as s1, Sink(SINK_IPS[2]) as s2:
            sinks = [s0, s1, s2]
            k = Kiln(routes=routes_for(sinks),
                     ips=[ip("127.0.0.10", "az1", "transactional", warmup="done"),
                          ip("127.0.0.11", "az2", "transactional", warmup="done"),
                          ip("127.0.0.12", "az3", "transactional", warmup="done")])
            k.cfg["server"]["log_level"] = "info"
            k.write_config()
            acked = []
            errors = []
            stop = threading.Event()

            def client(n, count):
                try:
                    with smtplib.SMTP("127.0.0.1", k.port, timeout=15) as s:
                        s.ehlo("load.test")
                        for i in range(count):
                            if stop.is_set():
                                return
                            tok = "L%d-%d" % (n, i)
                            rcpt = "r%d@d%d.test" % (i, i % 3)
                            msg = ("From: app@example.test\r\nTo: %s\r\nSubject: %s\r\nX-Token: %s\r\n\r\n"
                                   "load\r\n" % (rcpt, tok, tok))
                            s.mail("app@example.test")
                            s.rcpt(rcpt)
                            code, _ = s.data(msg.encode())
                            if code == 250:
                                acked.append(tok)
                            else:
                                errors.append((tok, code))
                            time.sleep(0.005)
                except Exception as e:   # reported by the main thread
                    errors.append(("client", repr(e)))

            with k:
                show_ips(k, "before the reload")
                clients = [threading.Thread(target=client, args=(n, total // CLIENTS))
                           for n in range(CLIENTS)]
                for t in clients:
                    t.start()
                try:
                    wait_for(lambda: len(acked) >= total // 2 and connections_from(sinks, "127.0.0.12") > 0,
                             timeout=60, what="half of the load, with sessions from 127.0.0.12")
                    cfg = copy.deepcopy(k.cfg)
                    cfg["ips"] = [x for x in cfg["ips"] if x["address"] != "127.0.0.12"]
                    p = reload(k, cfg)
                    applied = time.monotonic()
                    self.assertEqual(p.returncode, 0, p.stderr)
                    print("\nkilnctl reload: %s" % p.stdout.strip())
                    acked_at_reload = len(acked)
                    # transactions already open on 127.0.0.12 may still finish (and a
                    # connection half-way through its EHLO may still greet): a short grace
                    time.sleep(0.5)
                    conns_after_grace = connections_from(sinks, "127.0.0.12")
                    msgs_after_grace = sum(1 for m in all_messages(sinks) if m["peer"] == "127.0.0.12")
                    ips = ips_by_addr(k)
                    if "127.0.0.12" in ips:
                        self.assertEqual(ips["127.0.0.12"]["State"], "draining")
                    show_ips(k, "just after the reload that removed 127.0.0.12")
                    for t in clients:
                        t.join(120)
                    self.assertFalse(any(t.is_alive() for t in clients), "clients did not finish")
                finally:
                    stop.set()
                    for t in clients:
                        t.join(30)
                self.assertEqual(errors, [])
                self.assertEqual(len(acked), total)

                def all_there():
                    got = {token_of(m) for m in all_messages(sinks)}
                    return all(tok in got for tok in acked)
                wait_for(all_there, timeout=60, interval=0.2, what="every acknowledged message delivered")
                time.sleep(1.0)
                msgs = all_messages(sinks)
                toks = [token_of(m) for m in msgs]
                dups = {x for x in toks if toks.count(x) > 1}
                self.assertEqual(dups, set(), "duplicated deliveries")
                self.assertEqual(sorted(toks), sorted(acked), "lost or unexpected deliveries")
                # no new session from the removed IP after the reload applied
                self.assertEqual(connections_from(sinks, "127.0.0.12"), conns_after_grace)
                late = [m for m in msgs if m["peer"] == "127.0.0.12"]
                self.assertEqual(len(late), msgs_after_grace,
                                 "messages went out from the released IP after the reload")
                after_reload = acked_at_reload
                self.assertGreater(total - after_reload, 50, "the reload came too late in the load")
                # once its sessions closed, the released IP is gone from the state
                wait_for(lambda: "127.0.0.12" not in ips_by_addr(k), timeout=20,
                         what="127.0.0.12 dropped after draining")
                self.assertIn("event=pools.reload", k.log())
                self.assertIn("removed=127.0.0.12", k.log())
                # the line an operator waits for (README "Walkthroughs", step 4)
                self.assertRegex(k.log(), r"event=pools\.drained ip=127\.0\.0\.12 pool=transactional "
                                 r"after_s=\d+ reason=\"released; (its last session closed|no open session)\"")
                show_ips(k, "after 127.0.0.12 drained")
                print("load: acknowledged=%d (at reload %d) delivered=%d from 127.0.0.12 after grace=%d "
                      "connections from 127.0.0.12=%d (%.1fs after the reload)"
                      % (len(acked), acked_at_reload, len(set(toks)), len(late) - msgs_after_grace,
                         connections_from(sinks, "127.0.0.12"), time.monotonic() - applied))

    def test_b_added_ip_starts_at_day_one(self):
        with Sink(SINK_IPS[0]) as sink:
            k = Kiln(routes=[{"domain": "d0.test", "host": sink.host, "port": sink.port}],
                     ips=[ip("127.0.0.10", "az1", "transactional", warmup="done"),
                          ip("127.0.0.11", "az2", "transactional", warmup="done")],
                     warmup={"first_day": 5, "pacing": 0})
            with k:
                cfg = copy.deepcopy(k.cfg)
                cfg["ips"].append(ip("127.0.0.14", "az3", "transactional"))
                p = reload(k, cfg)
                self.assertEqual(p.returncode, 0, p.stderr)
                new = ips_by_addr(k)["127.0.0.14"]
                self.assertEqual((new["WarmupStatus"], new["WarmupPercentage"], new["DailyCap"],
                                  new["SentLast24Hours"], new["State"]),
                                 ("IN_PROGRESS", 0, 5, 0, "active"))
                self.assertIn("added=127.0.0.14", k.log())
                show_ips(k, "after the reload that added 127.0.0.14")
                # only the new IP in rotation: it sends its day-1 volume, the rest waits
                k.ctl("zone", "down", "az1")
                k.ctl("zone", "down", "az2")
                for i in range(10):
                    submit(k, "n%d" % i, "d0.test")
                wait_for(lambda: len(sink.messages) >= 5, timeout=30, what="5 deliveries from 127.0.0.14")
                k.wait_events(lambda e: len({x["mail"]["messageId"] for x in e if x["eventType"] == "DeliveryDelay"
                                             and x["deliveryDelay"]["delayType"] == "SendingDeferral"}) >= 5,
                              timeout=30, what="5 SendingDeferral")
                time.sleep(0.5)
                self.assertEqual([m["peer"] for m in sink.messages], ["127.0.0.14"] * 5)
                new = ips_by_addr(k)["127.0.0.14"]
                self.assertEqual((new["SentLast24Hours"], new["DailyCap"], new["WarmupPercentage"]), (5, 5, 0))
                show_ips(k, "127.0.0.14 at its day-1 cap")
                # back to the warm IPs: everything leaves, 127.0.0.14 stays at 5
                k.ctl("zone", "up", "az1")
                wait_for(lambda: len(sink.messages) >= 10, timeout=30, what="the rest via 127.0.0.10")
                self.assertEqual(sum(m["peer"] == "127.0.0.14" for m in sink.messages), 5)
                self.assertEqual(ips_by_addr(k)["127.0.0.14"]["SentLast24Hours"], 5)

    def test_c_moved_ip_keeps_warmup(self):
        with Sink(SINK_IPS[0]) as sink:
            k = Kiln(routes=[{"domain": "d0.test", "host": sink.host, "port": sink.port}],
                     ips=[ip("127.0.0.10", "az1", "transactional"),
                          ip("127.0.0.11", "az2", "transactional"),
                          ip("127.0.0.12", "az3", "transactional"),
                          ip("127.0.0.13", "az1", "marketing", warmup="done"),
                          ip("127.0.0.15", "az3", "marketing", warmup="done")],
                     pools=[{"name": "transactional", "scaling": "standard"},
                            {"name": "marketing", "scaling": "standard"}],
                     warmup={"days": 45, "first_day": 50, "target": 50000, "pacing": 0})
            with k:
                k.ctl("ip", "warmup", "127.0.0.11", "--percent", "40")
                submit(k, "m0", "d0.test")
                wait_for(lambda: sink.messages, what="one delivery")
                before = ips_by_addr(k)["127.0.0.11"]
                self.assertEqual(before["WarmupPercentage"], 40)
                self.assertEqual(before["DailyCap"], int(50 * (50000 / 50) ** 0.4))
                cfg = copy.deepcopy(k.cfg)
                for x in cfg["ips"]:
                    if x["address"] == "127.0.0.11":
                        x["pool"] = "marketing"
                p = reload(k, cfg)
                self.assertEqual(p.returncode, 0, p.stderr)
                after = ips_by_addr(k)["127.0.0.11"]
                self.assertEqual(after["PoolName"], "marketing")
                self.assertEqual((after["WarmupStatus"], after["WarmupPercentage"], after["DailyCap"],
                                  after["SentLast24Hours"]),
                                 (before["WarmupStatus"], 40, before["DailyCap"], before["SentLast24Hours"]))
                self.assertIn("moved=127.0.0.11", k.log())
                show_ips(k, "after moving 127.0.0.11 to marketing")
                # the state is in the spool: a restart keeps the percentage and the usage
                self.assertEqual(k.stop(), 0)
                k.start()
                again = ips_by_addr(k)["127.0.0.11"]
                self.assertEqual((again["PoolName"], again["WarmupPercentage"], again["SentLast24Hours"]),
                                 ("marketing", 40, before["SentLast24Hours"]))
                sent = {a: x["SentLast24Hours"] for a, x in ips_by_addr(k).items()}
                self.assertEqual(sum(sent.values()), 1)

    def test_d_invalid_config_changes_nothing(self):
        with Sink(SINK_IPS[0]) as sink:
            k = Kiln(routes=[{"domain": "d0.test", "host": sink.host, "port": sink.port}])
            with k:
                k.ctl("zone", "down", "az3")
                before = k.ctl("ips")
                good = copy.deepcopy(k.cfg)
                bad = copy.deepcopy(k.cfg)
                bad["ips"] = [x for x in bad["ips"] if x["address"] != "127.0.0.12"]
                bad["ips"].append(ip("127.0.0.14", "az9", "transactional"))
                p = reload(k, bad)
                self.assertNotEqual(p.returncode, 0)
                self.assertIn("az9", p.stderr)
                self.assertIn("kiln.yaml", p.stderr)
                self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
                self.assertEqual(k.ctl("ips"), before)
                # and the running daemon still delivers from its old IPs
                submit(k, "ok1", "d0.test")
                wait_for(lambda: sink.messages, what="delivery after the rejected reload")
                self.assertIn(sink.messages[0]["peer"], {"127.0.0.10", "127.0.0.11"})
                p = reload(k, good)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual([x["Ip"] for x in k.ctl("ips")["DedicatedIps"]],
                                 ["127.0.0.10", "127.0.0.11", "127.0.0.12"])
                self.assertEqual(ips_by_addr(k)["127.0.0.12"]["State"], "down")   # zone az3 still down


if __name__ == "__main__":
    main()
