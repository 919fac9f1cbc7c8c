"""test_cluster_limits.py — the account's max_send_rate and max_24h_send held across three
kilnd nodes through a real redis-server on loopback (issue 17), each node owning its own
127.0.0.x IP in az1/az2/az3, delivering to an aiosmtpd sink:

  (g) account rate 50/s under parallel load on all three nodes at once: the recipients
      accepted by the three together stay within 50/s (plus the one-second burst the
      single-node bucket also allows and one lease per node), and not far below it;
  (h) the 24 h quota shared: 120 recipients accepted spread over the nodes, then the
      121st is refused on whichever node gets it (SMTP 454 4.7.0 Daily message quota
      exceeded), the account's window in Redis holds exactly 120, and every accepted
      recipient is delivered once;
  (i) redis-server killed: each node holds its share (local_share, 1/3) of the quota on its
      own and goes on accepting up to it; Redis back empty: the nodes' sends are counted
      in the account's window again (exactly), and the account's remainder is what is left;
  (m) redis-server killed in the middle of a load on all three nodes (kiln-loadgen) and
      started again: every message acknowledged is delivered exactly once, and the
      account's window ends at the number of recipients accepted.
Every process is ended by PID; every wait is bounded."""
import json
import os
import shutil
import smtplib
import subprocess
import threading
import time
import unittest

from apitest import api_kiln, client, error_code, need_clients
from kilntest import BUILDDIR, Kiln, Sink, free_port, main, wait_for
from test_cluster import NODES, Redis, node_config, stop_nodes

QUOTA_REPLY = "4.7.0 Throttling failure: Daily message quota exceeded."
RATE_REPLY = "4.7.0 Throttling failure: Maximum sending rate exceeded."


class LimitsCluster:
    """Three nodes on one Redis with a key prefix of their own and the given account; n2 also
    answers the SES API (boto3 through apitest.client)."""

    def __init__(self, redis, sink, prefix, account):
        self.nodes = {}
        for name, _, _ in NODES:
            k = api_kiln() if name == "n2" else Kiln()
            cfg = node_config(k, name, redis.port, sink, free_port())
            cfg["cluster"]["redis"]["key_prefix"] = prefix
            cfg["account"].update(account)
            # kiln-loadgen's domain (--domains 1) goes to the sink too
            cfg["routes"].append({"domain": "d0.test", "host": sink.host, "port": sink.port})
            if name == "n2":
                cfg["api"] = k.cfg["api"]
            k.write_config(cfg)
            self.nodes[name] = k
        try:
            for k in self.nodes.values():
                k.start()
            wait_for(lambda: all(k.ctl("cluster", "status")["Limits"]["Mode"] == "leased"
                                 for k in self.nodes.values()),
                     15, 0.1, "every node leasing the account's limits")
        except BaseException:
            self.stop()
            raise

    def stop(self):
        bad = stop_nodes(self.nodes)
        if bad:
            raise AssertionError("\n".join(bad))


def rcpt_replies(k, rcpts, data_token=None):
    """One transaction on node k: each RCPT's (code, text); with data_token and at least one
    250, the message is sent (X-Token: data_token), else the transaction is reset."""
    out = []
    with smtplib.SMTP("127.0.0.1", k.port, timeout=15) as s:
        s.ehlo("client.test")
        s.mail("app@example.test")
        for r in rcpts:
            code, text = s.rcpt(r)
            out.append((code, text.decode()))
        if data_token and any(c == 250 for c, _ in out):
            code, text = s.data(("From: app@example.test\r\nTo: list@dest.test\r\n"
                                 "Subject: quota\r\nX-Token: %s\r\n\r\nhello\r\n"
                                 % data_token).encode())
            if code != 250:
                raise AssertionError("DATA answered %d %s" % (code, text))
        else:
            s.rset()
    return out


class ClusterLimitsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.redis = Redis().start()
        cls.sink = Sink("127.0.0.1").__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.sink.__exit__(None, None, None)
        cls.redis.stop()
        shutil.rmtree(cls.redis.dir, ignore_errors=True)

    def delivered(self, token):
        return sum(len(m["rcpts"]) for m in self.sink.messages
                   if ("X-Token: %s" % token).encode() in m["data"])

    # (g)
    def test_g_rate_held_across_nodes(self):
        c = LimitsCluster(self.redis, self.sink, "kg:", {"max_send_rate": 50})
        try:
            duration = 4.0
            counts = {name: [0, 0] for name in c.nodes}   # accepted, refused
            errors = []

            def load(name):
                # refused RCPTs count as junk commands: after the session's 421 the loader
                # connects again, as a real client would
                k = c.nodes[name]
                end = time.monotonic() + duration
                i = 0
                try:
                    while time.monotonic() < end and i < 100000:
                        s = smtplib.SMTP("127.0.0.1", k.port, timeout=15)
                        try:
                            s.ehlo("client.test")
                            while time.monotonic() < end and i < 100000:
                                i += 1
                                code, text = s.mail("app@example.test")
                                if code == 421:
                                    break
                                code, text = s.rcpt("r%d@dest.test" % i)
                                if code == 250:
                                    counts[name][0] += 1
                                elif code == 454 and text.decode() == RATE_REPLY:
                                    counts[name][1] += 1
                                elif code == 421:
                                    break
                                else:
                                    errors.append("%s: %d %s" % (name, code, text))
                                if s.rset()[0] == 421:
                                    break
                        except smtplib.SMTPServerDisconnected:
                            pass                  # closed after its 421: connect again
                        finally:
                            s.close()
                except Exception as e:    # reported below: the thread must not die silently
                    errors.append("%s: %r" % (name, e))

            threads = [threading.Thread(target=load, args=(n,)) for n in c.nodes]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join(duration + 30)
            took = time.monotonic() - t0
            self.assertEqual(errors, [])
            accepted = sum(a for a, _ in counts.values())
            refused = sum(r for _, r in counts.values())
            cmds = sum(k.ctl("cluster", "status")["Redis"]["Commands"] for k in c.nodes.values())
            print("rate 50/s over 3 nodes: %d accepted in %.2f s = %.1f/s (%s), %d refused; "
                  "%d Redis commands in all" % (accepted, took, accepted / took,
                                                 ", ".join("%s %d" % (n, a) for n, (a, _)
                                                           in sorted(counts.items())),
                                                 refused, cmds))
            # every node was loaded beyond the rate: refusals happened
            self.assertGreater(refused, 0)
            # at most the rate over the run, plus the bucket's 1 s burst (50) and one lease
            # per node (ceil(50 / 6) = 9 each), as the single-node bucket allows the burst
            self.assertLessEqual(accepted, 50 * took + 50 + 3 * 9)
            # and the account's rate is used, not a third of it
            self.assertGreaterEqual(accepted, 0.75 * 50 * duration)
            # each node got a part of it (no node starved)
            for name, (a, _) in counts.items():
                self.assertGreater(a, 0.1 * accepted / 3, "%s starved: %s" % (name, counts))
        finally:
            c.stop()

    # (h)
    def test_h_quota_shared(self):
        need_clients()
        c = LimitsCluster(self.redis, self.sink, "kh:", {"max_24h_send": 120})
        n1, n2, n3 = (c.nodes[n] for n in ("n1", "n2", "n3"))
        try:
            tok = "quota-%d" % os.getpid()
            ses = client(n2)
            # 100 on n1 in two messages, 14 on n2 and 1 through its SES API, 5 on n3: 120
            plan = [(n1, 50), (n1, 50), (n2, 14), (n3, 5)]
            for i, (k, n) in enumerate(plan):
                got = rcpt_replies(k, ["q%d-%d@dest.test" % (i, j) for j in range(n)],
                                   data_token=tok)
                self.assertEqual([code for code, _ in got], [250] * n,
                                 "message %d: %s" % (i, got))
            raw = ("From: app@example.test\r\nTo: api@dest.test\r\nSubject: quota\r\n"
                   "X-Token: %s\r\n\r\nhello\r\n" % tok).encode()
            ses.send_email(FromEmailAddress="app@example.test",
                           Destination={"ToAddresses": ["api@dest.test"]},
                           Content={"Raw": {"Data": raw}})
            # the 121st, on each node in turn: refused, over SMTP and over the API
            for name, k in c.nodes.items():
                got = rcpt_replies(k, ["over-%s@dest.test" % name])
                self.assertEqual(got, [(454, QUOTA_REPLY)], name)
            with self.assertRaises(Exception) as cm:
                ses.send_email(FromEmailAddress="app@example.test",
                               Destination={"ToAddresses": ["over-api@dest.test"]},
                               Content={"Raw": {"Data": raw}})
            self.assertEqual(error_code(cm.exception), "LimitExceededException")
            self.assertEqual(int(self.redis.cmd("HGET", "kh:sent24h", "total")), 120)
            text = n3.ctl("cluster", "status", json_out=False).stdout
            self.assertIn("limits: leased from the account", text)
            wait_for(lambda: self.delivered(tok) == 120, 30, 0.2, "120 recipients delivered")
            # a second later unused leases are given back; the account is still spent
            time.sleep(2.5)
            for k in c.nodes.values():
                self.assertEqual(k.ctl("cluster", "status")["Limits"]["DailySlots"], 0)
            self.assertEqual(rcpt_replies(n2, ["late@dest.test"]), [(454, QUOTA_REPLY)])
            self.assertEqual(int(self.redis.cmd("HGET", "kh:sent24h", "total")), 120)
            self.assertEqual(self.delivered(tok), 120)   # each once
        finally:
            c.stop()

    # (i)
    def test_i_redis_down_local_share_then_reconciled(self):
        c = LimitsCluster(self.redis, self.sink, "ki:", {"max_24h_send": 90})
        n1, n2, n3 = (c.nodes[n] for n in ("n1", "n2", "n3"))
        tok = "share-%d" % os.getpid()
        port = self.redis.port
        try:
            self.assertEqual([x for x, _ in rcpt_replies(n1, ["a%d@dest.test" % i
                                                              for i in range(10)], tok)],
                             [250] * 10)
            self.assertEqual(int(self.redis.cmd("HGET", "ki:sent24h", "total")), 10)
            self.redis.stop()
            for k in c.nodes.values():
                wait_for(lambda: k.ctl("cluster", "status")["Limits"]["Mode"] == "local", 10,
                         0.1, "the node on its local share")
            # each node holds a third of 90 over its own last 24 h: n1 (10 sent) 20 more,
            # n2 30; the next is refused, as a single node at its quota refuses it
            got = rcpt_replies(n1, ["b%d@dest.test" % i for i in range(21)], tok)
            self.assertEqual([x for x, _ in got], [250] * 20 + [454])
            self.assertEqual(got[-1][1], QUOTA_REPLY)
            got = rcpt_replies(n2, ["c%d@dest.test" % i for i in range(31)], tok)
            self.assertEqual([x for x, _ in got], [250] * 30 + [454])
            self.assertIn("cluster.degraded", n1.log())
            self.assertIn("limits: local, this node holds 33.33% of the account's rate and "
                          "24 h quota", n3.ctl("cluster", "status", json_out=False).stdout)
            # Redis back, empty: every node counts its own 24 h into the account's window
            type(self).redis = Redis(port).start()
            for k in c.nodes.values():
                wait_for(lambda: k.ctl("cluster", "status")["Limits"]["Mode"] == "leased", 15,
                         0.1, "the node leasing again")
            wait_for(lambda: self.redis.cmd("HGET", "ki:sent24h", "total") == "60", 10, 0.1,
                     "the account's window reconciled to the 60 sent")
            # 30 left for the account: n3 takes them, the 31st is refused, on any node
            got = rcpt_replies(n3, ["d%d@dest.test" % i for i in range(31)], tok)
            self.assertEqual([x for x, _ in got], [250] * 30 + [454])
            self.assertEqual(rcpt_replies(n1, ["e@dest.test"]), [(454, QUOTA_REPLY)])
            self.assertEqual(int(self.redis.cmd("HGET", "ki:sent24h", "total")), 90)
            wait_for(lambda: self.delivered(tok) == 90, 30, 0.2, "90 recipients delivered")
        finally:
            c.stop()

    # (m)
    def test_m_redis_killed_mid_load(self):
        c = LimitsCluster(self.redis, self.sink, "km:", {"max_24h_send": 100000})
        port = self.redis.port
        procs = []
        try:
            loadgen = os.path.join(BUILDDIR, "kiln-loadgen")
            for name, k in c.nodes.items():
                rec = os.path.join(k.tmp, "acked.txt")
                procs.append((rec, subprocess.Popen(
                    [loadgen, "-s", "127.0.0.1:%d" % k.port, "-n", "400", "-c", "2",
                     "--domains", "1", "--from", "app@example.test", "--rate", "200",
                     "--token-prefix", "mid-%s-" % name, "--record", rec, "--json"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
            # Redis goes away a moment into the load, and comes back empty
            wait_for(lambda: all(os.path.exists(r) and os.path.getsize(r) > 0
                                 for r, _ in procs), 20, 0.05, "the load under way")
            self.redis.stop()
            wait_for(lambda: all(k.ctl("cluster", "status")["Limits"]["Mode"] == "local"
                                 for k in c.nodes.values()), 10, 0.05, "every node local")
            type(self).redis = Redis(port).start()
            outs = [json.loads(p.communicate(timeout=120)[0]) for _, p in procs]
            acked = set()
            for rec, _ in procs:
                with open(rec) as f:
                    acked |= {line.split()[1] for line in f if line.strip()}
            accepted = sum(o["accepted"] for o in outs)
            self.assertEqual(len(acked), accepted)
            self.assertGreater(accepted, 0)

            def delivered():
                seen = {}
                for m in self.sink.messages:
                    for line in m["data"].split(b"\r\n"):
                        if line.startswith(b"X-Loadgen-Token: mid-"):
                            t = line.split(b": ", 1)[1].decode()
                            seen[t] = seen.get(t, 0) + 1
                return seen
            wait_for(lambda: acked <= set(delivered()), 60, 0.2,
                     "every acknowledged message delivered")
            seen = delivered()
            self.assertEqual({t for t in acked if seen.get(t) != 1}, set(),
                             "acknowledged messages not delivered exactly once")
            for k in c.nodes.values():
                wait_for(lambda: k.ctl("cluster", "status")["Limits"]["Mode"] == "leased", 15,
                         0.1, "the node leasing again")
            wait_for(lambda: self.redis.cmd("HGET", "km:sent24h", "total") == str(accepted),
                     10, 0.1, "the account's window at the %d accepted (%s; %s)" % (
                         accepted, self.redis.cmd("HGET", "km:sent24h", "total"),
                         [k.ctl("cluster", "status")["Limits"] for k in c.nodes.values()]))
            print("Redis killed mid-load: %d acknowledged, all delivered once, window %s"
                  % (accepted, self.redis.cmd("HGET", "km:sent24h", "total")))
        finally:
            for _, p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
            c.stop()


if __name__ == "__main__":
    main()
