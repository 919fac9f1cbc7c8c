"""test_cluster.py — three kilnd nodes as one account through a real redis-server on
loopback (issue 17: the parts built so far), each node owning its own 127.0.0.x IP in zones
az1/az2/az3, against an aiosmtpd sink that records every message's source address:

  (a) each node sends only from the IPs its config names as its own (ips[].node), one of
      them named by `kilnd --node` instead of cluster.node;
  (b) `kilnctl cluster status` and `kilnctl ips` on any node show every node, its IPs and
      that it is alive;
  (c) a suppression added through node 1 is on nodes 2 and 3 within 1 s, and a message to
      it through node 2 is not delivered (Bounce OnAccountSuppressionList); its removal
      follows;
  (d) node 3 SIGKILLed: the others report it not alive, go on delivering; restarted, it is
      alive again and delivers what its spool held;
  (e) redis-server stopped: every node goes on accepting and delivering, reports Redis down
      (status, kiln_cluster_redis_up 0 on /metrics); a suppression added meanwhile is kept;
      Redis back (empty, as after a restart without persistence): the nodes seed the list
      again and the write made while it was down reaches the other nodes, as does a zone
      marked down meanwhile;
  (c2) zone az1 marked down on node 2 is honoured by node 1 (its only IP is in az1: its
      mail is handed off to a node of another zone; once node 3 marks the zone up again,
      node 1 sends from its own IP);
  (c3) a warm-up percentage set on node 1 for node 2's IP is forwarded to node 2;
  (c4) an IP moved from node 3 to node 2 in kiln.yaml (reload) keeps its warm-up position;
  (c5) send statistics (kilnctl stats) and reputation are the sum over the nodes on any node;
  (f) bad cluster input: an unknown node for --node, --node without a cluster section.
Every process is ended by PID; every wait is bounded."""
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request

from kilntest import KILND, Kiln, Sink, base_config, free_port, main, reachable_tmp, send, wait_for

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
NODES = [("n1", "127.0.0.10", "az1"), ("n2", "127.0.0.11", "az2"), ("n3", "127.0.0.12", "az3")]


class Redis:
    """A private redis-server on a loopback port, no persistence, ended by PID."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="kiln-redis-")
        self.proc = None

    def start(self):
        self.log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no"],
            stdout=self.log, stderr=self.log)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited %s" % self.proc.returncode)
            try:
                return self.cmd("PING") == "PONG"
            except OSError:
                return False
        wait_for(up, 10, 0.05, "redis-server to answer")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if getattr(self, "log", None):
            self.log.close()

    def cmd(self, *args):
        """One command in RESP over a socket; returns a str, int, list or None."""
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(out)
            f = s.makefile("rb")
            return self._read(f)

    def _read(self, f):
        line = f.readline()
        if not line:
            raise OSError("redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise AssertionError("redis error: %s" % rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = f.read(n + 2)[:-2]
            return data.decode()
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read(f) for _ in range(n)]
        raise AssertionError("bad RESP: %r" % line)


def node_config(k, name, redis_port, sink, metrics_port, with_node=True):
    cfg = base_config(k.tmp, k.port)
    cfg["ips"] = [{"address": a, "zone": z, "pool": "transactional", "node": n,
                   "warmup": "done"} for n, a, z in NODES]
    cfg["cluster"] = {"redis": {"url": "redis://127.0.0.1:%d/0" % redis_port,
                                "key_prefix": "kt:"}}
    if with_node:
        cfg["cluster"]["node"] = name
    cfg["routes"] = [{"domain": "dest.test", "host": sink.host, "port": sink.port}]
    cfg["metrics"] = {"listen": ["127.0.0.1:%d" % metrics_port]}
    return cfg


def stop_nodes(nodes):
    """Stops every kilnd of nodes (name -> Kiln) and removes its directory; raises naming
    each one that did not exit 0 (a sanitizer report or an unclean stop)."""
    bad = []
    for name, k in nodes.items():
        try:
            rc = k.stop()
            if rc != 0:
                bad.append("%s exited %s: %s" % (name, rc, k.stderr_text()[-3000:]))
        finally:
            k.cleanup()
    return bad


def wait_all_alive(nodes, timeout=15):
    """Until every node's `kilnctl cluster status` shows all of them alive."""
    want = set(nodes)
    wait_for(lambda: all({n["Node"] for n in k.ctl("cluster", "status")["Nodes"]
                          if n["Alive"] == "yes"} == want for k in nodes.values()),
             timeout, 0.2, "every node to see the %d heartbeats" % len(want))


def suppressed(k):
    return {x["EmailAddress"] for x in
            k.ctl("suppression", "list")["SuppressedDestinationSummaries"]}


class ClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sink = None
        cls.redis = Redis().start()
        cls.sink = Sink("127.0.0.1").__enter__()
        cls.nodes = {}
        try:
            made = {name: Kiln() for name, _, _ in NODES}
            # every node's submission address: a node stays one of the cluster's nodes
            # when it binds no IP (test c4 moves n3's IP away)
            peers = {name: "127.0.0.1:%d" % k.port for name, k in made.items()}
            for name, _, _ in NODES:
                k = made[name]
                k.metrics_port = free_port()
                # n3 takes its name from the command line, the others from the file
                cfg = node_config(k, name, cls.redis.port, cls.sink, k.metrics_port,
                                  with_node=(name != "n3"))
                cfg["cluster"]["submission_peers"] = peers
                k.write_config(cfg)
                if name == "n3":
                    k.args = ["--node", "n3"]
                cls.nodes[name] = k.start()
            wait_all_alive(cls.nodes)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        bad = stop_nodes(getattr(cls, "nodes", {}))
        if getattr(cls, "sink", None):
            cls.sink.__exit__(None, None, None)
        cls.redis.stop()
        shutil.rmtree(cls.redis.dir, ignore_errors=True)
        if bad:
            raise AssertionError("\n".join(bad))

    @staticmethod
    def alive_seen(k):
        st = k.ctl("cluster", "status")
        return {n["Node"] for n in st["Nodes"] if n["Alive"] == "yes"}

    def delivered_from(self, token):
        return [m["peer"] for m in self.sink.messages if ("X-Token: %s" % token).encode() in m["data"]]

    def send_token(self, k, token, rcpt="user@dest.test"):
        send(k, "app@example.test", [rcpt], headers={"X-Token": token})

    # (a) + (b)
    def test_a_each_node_sends_from_its_own_ips(self):
        for name, addr, _ in NODES:
            k = self.nodes[name]
            for i in range(3):
                self.send_token(k, "own-%s-%d" % (name, i))
        for name, addr, _ in NODES:
            for i in range(3):
                tok = "own-%s-%d" % (name, i)
                wait_for(lambda: self.delivered_from(tok), 20, 0.1, "%s delivered" % tok)
                self.assertEqual(self.delivered_from(tok), [addr],
                                 "%s's mail left from another node's IP" % name)
            # a node's own view of pools holds only its IPs: the others are shown as remote
            ips = self.nodes[name].ctl("ips")["DedicatedIps"]
            by_ip = {x["Ip"]: x["kiln"].get("Node") for x in ips}
            self.assertEqual(by_ip, {a: n for n, a, _ in NODES})

    def test_b_cluster_status_on_any_node(self):
        for name, k in self.nodes.items():
            st = k.ctl("cluster", "status")
            self.assertEqual(st["Node"], name)
            self.assertEqual(st["Redis"]["State"], "up")
            rows = {n["Node"]: n for n in st["Nodes"]}
            self.assertEqual(set(rows), {"n1", "n2", "n3"})
            for n, addr, _ in NODES:
                self.assertEqual(rows[n]["Alive"], "yes")
                self.assertEqual(rows[n]["Ips"], [addr])
                self.assertEqual(rows[n]["Self"], n == name)
        text = self.nodes["n2"].ctl("cluster", "status", json_out=False).stdout
        self.assertIn("node n2; redis redis://127.0.0.1:%d/0 up" % self.redis.port, text)
        self.assertIn("n2 (this)", text)
        ips_text = self.nodes["n1"].ctl("ips", json_out=False).stdout
        self.assertIn("NODE", ips_text.splitlines()[0])
        self.assertRegex(ips_text, r"127\.0\.0\.12\s+n3\s")

    # (c)
    def test_c_suppression_shared_within_a_second(self):
        addr = "gone-%d@dest.test" % os.getpid()
        self.nodes["n1"].ctl("suppression", "add", addr, "--reason", "COMPLAINT")
        t0 = time.monotonic()
        wait_for(lambda: addr in suppressed(self.nodes["n2"]) and addr in suppressed(self.nodes["n3"]),
                 2.0, 0.02, "the suppression on n2 and n3 (1 s, plus kilnctl's own start-up under load)")
        took = time.monotonic() - t0
        print("suppression visible on n2 and n3 after %.0f ms" % (took * 1000))
        self.assertEqual(self.redis.cmd("HGET", "kt:suppression", addr).split()[0], "COMPLAINT")
        # a message to it through n2: not delivered, a suppression bounce
        self.send_token(self.nodes["n2"], "supp-1", rcpt=addr)
        self.nodes["n2"].wait_events(
            lambda evs: any(e.get("eventType") == "Bounce" and
                            e["bounce"]["bounceSubType"] == "OnAccountSuppressionList"
                            for e in evs), 15, what="the suppression bounce on n2")
        self.assertEqual(self.delivered_from("supp-1"), [])
        # removal on n3 reaches n1
        self.nodes["n3"].ctl("suppression", "remove", addr)
        wait_for(lambda: addr not in suppressed(self.nodes["n1"]), 2.0, 0.02,
                 "the removal on n1 within 1 s")
        self.assertIsNone(self.redis.cmd("HGET", "kt:suppression", addr))

    # (c2)
    def zones_down(self, name):
        st = self.nodes[name].ctl("cluster", "status")
        return [n for n in st["Nodes"] if n["Self"]][0]["ZonesDown"]

    def test_c2_zone_down_on_one_node_honoured_by_all(self):
        self.nodes["n2"].ctl("zone", "down", "az1")
        try:
            t0 = time.monotonic()
            wait_for(lambda: self.zones_down("n1") == ["az1"] and
                     self.zones_down("n3") == ["az1"], 2, 0.02, "az1 down on n1 and n3")
            print("zone down on n1 and n3 after %.0f ms" % ((time.monotonic() - t0) * 1000))
            self.assertEqual(self.redis.cmd("HGET", "kt:zones", "az1").split()[::2],
                             ["down", "n2"])
            self.assertIn('cluster.zone zone="az1" state=down by="n2"', self.nodes["n1"].log())
            # n1's only IP is in az1: its mail leaves through a node of another zone
            self.send_token(self.nodes["n1"], "zone-held")
            wait_for(lambda: self.delivered_from("zone-held"), 20, 0.1, "n1's mail handed off")
            self.assertIn(self.delivered_from("zone-held"), (["127.0.0.11"], ["127.0.0.12"]))
            self.assertIn("cluster.handoff ", self.nodes["n1"].log())
        finally:
            self.nodes["n3"].ctl("zone", "up", "az1")
        wait_for(lambda: self.zones_down("n1") == [] and self.zones_down("n2") == [], 2, 0.02,
                 "az1 up again everywhere")
        self.assertIsNone(self.redis.cmd("HGET", "kt:zones", "az1"))
        self.send_token(self.nodes["n1"], "zone-back")
        wait_for(lambda: self.delivered_from("zone-back"), 20, 0.1, "n1 delivering again")
        self.assertEqual(self.delivered_from("zone-back"), ["127.0.0.10"])

    # (c3)
    def ip_row(self, name, ip):
        return [x for x in self.nodes[name].ctl("ips")["DedicatedIps"] if x["Ip"] == ip][0]

    def test_c3_warmup_forwarded_to_the_ips_node(self):
        r = self.nodes["n1"].ctl("ip", "warmup", "127.0.0.11", "--percent", "40")
        self.assertEqual((r["Node"], r["Forwarded"], r["WarmupPercentage"]), ("n2", True, 40))
        wait_for(lambda: self.ip_row("n2", "127.0.0.11")["WarmupPercentage"] == 40, 2, 0.05,
                 "n2 applying the setting")
        self.assertIn('cluster.warmup ip=127.0.0.11 percent=40 by="n1"', self.nodes["n2"].log())
        wait_for(lambda: self.redis.cmd("HGET", "kt:warmup", "127.0.0.11") is None, 2, 0.05,
                 "the forwarded setting removed once applied")
        self.nodes["n2"].ctl("ip", "warmup", "127.0.0.11", "--percent", "100")

    # (c4)
    def move_ip(self, ip, to):
        for k in self.nodes.values():
            for e in k.cfg["ips"]:
                if e["address"] == ip:
                    e["node"] = to
            k.write_config()

    def test_c4_moved_ip_keeps_its_warmup_position(self):
        self.nodes["n3"].ctl("ip", "warmup", "127.0.0.12", "--percent", "37")
        wait_for(lambda: '"node":"n3"' in (self.redis.cmd("HGET", "kt:ipstate", "127.0.0.12")
                                            or "") and
                 self.ip_row("n1", "127.0.0.12")["WarmupPercentage"] == 37, 5, 0.1,
                 "n3's state for its IP in Redis")
        try:
            self.move_ip("127.0.0.12", "n2")
            for name in ("n3", "n1", "n2"):      # the old owner first
                self.nodes[name].ctl("reload")
            wait_for(lambda: self.ip_row("n2", "127.0.0.12")["kiln"].get("Node") == "n2" and
                     self.ip_row("n2", "127.0.0.12")["WarmupPercentage"] == 37, 5, 0.1,
                     "n2 owning 127.0.0.12 at 37 %")
            self.assertIn('cluster.ip_adopted ip=127.0.0.12 from="n3"', self.nodes["n2"].log())
            self.send_token(self.nodes["n2"], "moved", rcpt="moved@dest.test")
            wait_for(lambda: self.delivered_from("moved"), 20, 0.1, "n2 delivering")
            self.assertIn(self.delivered_from("moved")[0], ("127.0.0.11", "127.0.0.12"))
        finally:
            self.move_ip("127.0.0.12", "n3")
            for name in ("n2", "n1", "n3"):
                self.nodes[name].ctl("reload")
            moved_back = time.time()
        wait_for(lambda: self.ip_row("n3", "127.0.0.12")["kiln"].get("Node") == "n3" and
                 self.ip_row("n3", "127.0.0.12")["WarmupPercentage"] == 37, 5, 0.1,
                 "127.0.0.12 back on n3, still at 37 %")
        self.nodes["n3"].ctl("ip", "warmup", "127.0.0.12", "--percent", "100")
        # the others see it in a heartbeat n3 wrote after the reload (test d reads n3's last)

        def n3_beat():
            row = {n["Node"]: n for n in self.nodes["n1"].ctl("cluster", "status")["Nodes"]}["n3"]
            seen = datetime.datetime.fromisoformat(row["LastSeen"].replace("Z", "+00:00"))
            return seen.timestamp() > moved_back and row["Ips"] == ["127.0.0.12"]
        wait_for(n3_beat, 5, 0.1, "n3's heartbeat with its IP")

    # (c5)
    @staticmethod
    def attempts(k):
        return sum(p["DeliveryAttempts"] for p in k.ctl("stats")["SendDataPoints"])

    def test_c5_statistics_summed(self):
        # the others' snapshots are at most a few seconds old: wait until all agree
        def agreed():
            vals = [self.attempts(k) for k in self.nodes.values()]
            return vals[0] if len(set(vals)) == 1 else None
        before = wait_for(agreed, 10, 0.2, "the nodes to agree on the statistics")
        self.send_token(self.nodes["n1"], "stats-1")
        send(self.nodes["n2"], "app@example.test", ["s1@dest.test", "s2@dest.test"],
             headers={"X-Token": "stats-2"})
        wait_for(lambda: all(self.attempts(k) == before + 3 for k in self.nodes.values()), 10,
                 0.2, "stats on every node summing the 3 new recipients")
        for k in self.nodes.values():
            rep = k.ctl("reputation")
            self.assertEqual(rep["ReputationMetrics"]["DeliveryAttempts"], before + 3, rep)
        st = self.nodes["n3"].ctl("cluster", "status")["Statistics"]
        self.assertEqual(st["Nodes"], 3)
        self.assertIsNotNone(st["Updated"])

    # (d)
    def test_d_node_killed_and_restarted(self):
        k3 = self.nodes["n3"]
        k3.kill9()
        wait_for(lambda: "n3" not in self.alive_seen(self.nodes["n1"]), 10, 0.2,
                 "n1 to see n3 gone (5 s heartbeat expiry)")
        row = {n["Node"]: n for n in self.nodes["n1"].ctl("cluster", "status")["Nodes"]}["n3"]
        self.assertEqual(row["Alive"], "no")
        self.assertEqual(row["Ips"], ["127.0.0.12"])   # its last heartbeat is still shown
        self.send_token(self.nodes["n2"], "after-kill")
        wait_for(lambda: self.delivered_from("after-kill"), 20, 0.1, "n2 delivering")
        k3.start()
        wait_for(lambda: "n3" in self.alive_seen(self.nodes["n1"]), 10, 0.2, "n3 alive again")
        self.send_token(k3, "n3-back")
        wait_for(lambda: self.delivered_from("n3-back"), 20, 0.1, "n3 delivering again")
        self.assertEqual(self.delivered_from("n3-back"), ["127.0.0.12"])

    # (e)
    def test_e_redis_down_and_back(self):
        addr_before = "before-%d@dest.test" % os.getpid()
        self.nodes["n1"].ctl("suppression", "add", addr_before)
        wait_for(lambda: addr_before in suppressed(self.nodes["n2"]), 2, 0.05, "shared")
        port = self.redis.port
        self.redis.stop()
        for k in self.nodes.values():
            wait_for(lambda: k.ctl("cluster", "status")["Redis"]["State"] == "down", 10, 0.1,
                     "the node to notice Redis is down")
        m = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.nodes["n1"].metrics_port,
                                   timeout=5).read().decode()
        self.assertIn("kiln_cluster_redis_up 0", m)
        # still accepting and delivering from their own IPs
        for name, addr, _ in NODES:
            self.send_token(self.nodes[name], "down-%s" % name)
        for name, addr, _ in NODES:
            wait_for(lambda: self.delivered_from("down-%s" % name), 20, 0.1, "delivery without Redis")
            self.assertEqual(self.delivered_from("down-%s" % name), [addr])
        self.assertIn("cluster.degraded", self.nodes["n1"].log())
        # a suppression while Redis is away stays local for now
        addr_during = "during-%d@dest.test" % os.getpid()
        self.nodes["n2"].ctl("suppression", "add", addr_during)
        # and so does a zone marked down meanwhile
        self.nodes["n2"].ctl("zone", "down", "az2")
        time.sleep(0.5)
        self.assertNotIn(addr_during, suppressed(self.nodes["n1"]))
        self.assertEqual(self.zones_down("n1"), [])
        # Redis back, empty: seeded again by the nodes; the pending write reaches n1 and n3
        type(self).redis = Redis(port).start()
        for k in self.nodes.values():
            wait_for(lambda: k.ctl("cluster", "status")["Redis"]["State"] == "up", 15, 0.1,
                     "the node to reconnect")
        wait_for(lambda: addr_during in suppressed(self.nodes["n1"]) and
                 addr_during in suppressed(self.nodes["n3"]), 10, 0.1,
                 "the write made while Redis was down on the other nodes")
        wait_for(lambda: self.redis.cmd("HGET", "kt:suppression", addr_before) is not None, 10,
                 0.1, "the list seeded again into the empty Redis")
        wait_for(lambda: self.zones_down("n1") == ["az2"] and self.zones_down("n3") == ["az2"],
                 10, 0.1, "the zone marked down while Redis was away, on n1 and n3")
        self.nodes["n1"].ctl("zone", "up", "az2")
        wait_for(lambda: self.zones_down("n2") == [], 5, 0.05, "az2 up again on n2")
        self.assertIn("cluster.redis_back", self.nodes["n2"].log())


class ClusterConfigTest(unittest.TestCase):
    def run_kilnd(self, cfg, *args):
        tmp = reachable_tmp(tempfile.mkdtemp(prefix="kiln-it-"))
        try:
            path = os.path.join(tmp, "kiln.yaml")
            with open(path, "w") as f:
                json.dump(cfg, f)
            return subprocess.run([KILND, "-c", path, "--check-config"] + list(args),
                                  capture_output=True, text=True, timeout=30)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_f_node_errors(self):
        route_peer = type("RoutePeer", (), {"host": "127.0.0.1", "port": 2525})   # never contacted: --check-config only
        k = type("K", (), {"tmp": "/tmp", "port": free_port()})
        cfg = node_config(k, "n1", 6379, route_peer, free_port(), with_node=False)
        p = self.run_kilnd(cfg, "--node", "n9")
        self.assertEqual(p.returncode, 1)
        self.assertIn("n9", p.stderr)
        self.assertIn("n1", p.stderr)   # the known nodes are listed
        p = self.run_kilnd(cfg)
        self.assertEqual(p.returncode, 1)
        self.assertIn("cluster.node is not set", p.stderr)
        p = self.run_kilnd(cfg, "--node", "n2")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("cluster", p.stdout)
        plain = base_config("/tmp", free_port())
        p = self.run_kilnd(plain, "--node", "n1")
        self.assertEqual(p.returncode, 1)
        self.assertIn("--node needs a cluster: section", p.stderr)


if __name__ == "__main__":
    main()
