"""test_cluster_handoff.py — cross-zone handoff between three kilnd nodes sharing a real
redis-server on loopback (issue 17). n1's only IP is 192.0.2.10, which no interface of this
machine has (bind fails: "all its IPs made unbindable"); n2 and n3 own 127.0.0.11 and
127.0.0.12. Every node lists the others' submission addresses (cluster.submission_peers).
dest.test's MX comes from a dnsmasq on loopback (no static route).

  (j) mail submitted to n1 leaves through n2 and n3: every recipient reaches the sink once,
      from 127.0.0.11 or 127.0.0.12; n1's queue empties; the 250 of n1 and the peers'
      Delivery events carry the same messageId, the peers' events the configuration set,
      the message's tags and kiln:handoff-from ["n1"]; n1 published the Send event and no
      peer did; the account's 24 h window and its statistics (summed over the nodes) count
      each recipient once;
  (k) a wrong handoff credential gets 535, and a client without one cannot use the
      handoff's header to skip anything (its message is refused as any other would be
      without a valid credential);
  (l) n1 drained: its IP removed from kiln.yaml (reload), it has none; what it accepts
      still leaves through the others.
Every process is ended by PID; every wait is bounded."""
import base64
import json
import os
import shutil
import smtplib
import unittest

from apitest import api_kiln, client, need_clients
from kilntest import Dnsmasq, Kiln, Sink, main, wait_for
from test_cluster import Redis, stop_nodes, wait_all_alive

NODES = [("n1", "192.0.2.10", "az1"), ("n2", "127.0.0.11", "az2"), ("n3", "127.0.0.12", "az3")]


class HandoffTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.redis = Redis().start()
        cls.sink = Sink("127.0.0.1").__enter__()
        cls.nodes = {}
        cls.dns = None
        try:
            cls.dns = Dnsmasq(["--mx-host=dest.test,mx.dest.test,10",
                               "--host-record=mx.dest.test,127.0.0.1"]).__enter__()
            # n1 also answers the SES API (a message with EmailTags)
            made = {name: api_kiln() if name == "n1" else Kiln() for name, _, _ in NODES}
            peers = {name: "127.0.0.1:%d" % k.port for name, k in made.items()}
            for name, _, _ in NODES:
                k = made[name]
                cfg = k.cfg
                cfg["ips"] = [{"address": a, "zone": z, "pool": "transactional", "node": n,
                               "warmup": "done"} for n, a, z in NODES]
                cfg["cluster"] = {"node": name, "submission_peers": peers,
                                  "redis": {"url": "redis://127.0.0.1:%d/0" % cls.redis.port,
                                            "key_prefix": "ho:"}}
                cfg["account"]["max_24h_send"] = 1000
                cfg["routes"] = []
                cfg["dns"]["servers"] = ["127.0.0.1:%d" % cls.dns.port]
                cfg["delivery"]["remote_port"] = cls.sink.port
                k.write_config()
                cls.nodes[name] = k.start()
            wait_all_alive(cls.nodes)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        bad = stop_nodes(getattr(cls, "nodes", {}))
        if cls.dns:
            cls.dns.__exit__(None, None, None)
        cls.sink.__exit__(None, None, None)
        cls.redis.stop()
        shutil.rmtree(cls.redis.dir, ignore_errors=True)
        if bad:
            raise AssertionError("\n".join(bad))

    def delivered(self, token):
        return [(m["peer"], r) for m in self.sink.messages
                if ("X-Token: %s" % token).encode() in m["data"] for r in m["rcpts"]]

    def submit(self, k, token, rcpts):
        """One message through node k; returns the message id of its 250."""
        msg = ("From: app@example.test\r\nTo: %s\r\nSubject: handoff\r\nX-Token: %s\r\n"
               "\r\nhanded over\r\n" % (", ".join(rcpts), token))
        with smtplib.SMTP("127.0.0.1", k.port, timeout=15) as s:
            s.ehlo("client.test")
            s.mail("app@example.test")
            for r in rcpts:
                self.assertEqual(s.rcpt(r)[0], 250)
            code, text = s.data(msg.encode())
            self.assertEqual(code, 250, text)
            return text.decode().split()[-1]

    def events_of(self, name, msg_id):
        return [e for e in self.nodes[name].events() if e["mail"]["messageId"] == msg_id]

    # (j)
    def test_j_handed_off_and_delivered_once(self):
        need_clients()
        n1 = self.nodes["n1"]
        tok = "ho-%d" % os.getpid()
        ids = []
        for i in range(9):
            ids.append(self.submit(n1, tok, ["u%d@dest.test" % i]))
        ids.append(self.submit(n1, tok, ["m1@dest.test", "m2@dest.test", "m3@dest.test"]))
        raw = ("From: app@example.test\r\nTo: api@dest.test\r\nSubject: handoff\r\n"
               "X-Token: %s\r\n\r\nthrough the API\r\n" % tok).encode()
        api_id = client(n1).send_email(
            FromEmailAddress="app@example.test", Destination={"ToAddresses": ["api@dest.test"]},
            Content={"Raw": {"Data": raw}}, ConfigurationSetName="txn",
            EmailTags=[{"Name": "team", "Value": "pay"}])["MessageId"]
        ids.append(api_id)
        wait_for(lambda: len(self.delivered(tok)) >= 13, 40, 0.2,
                 "13 recipients through n2 and n3")
        got = self.delivered(tok)
        self.assertEqual(len(got), 13, "each recipient once: %s" % got)
        self.assertEqual(len({r for _, r in got}), 13)
        # both other nodes take turns (their IPs alike: no cap)
        self.assertEqual({p for p, _ in got}, {"127.0.0.11", "127.0.0.12"}, got)
        wait_for(lambda: n1.ctl("status")["Queued"] == 0, 15, 0.2, "n1's queue empty")
        self.assertIn("cluster.handoff ", n1.log())
        # events: n1 the Send, a peer the Delivery, same id, tags kept and the handoff shown
        for msg_id in ids:
            wait_for(lambda: any(e["eventType"] == "Send" for e in self.events_of("n1", msg_id)),
                     15, 0.2, "n1's Send event of %s" % msg_id)
            sends = [e for e in self.events_of("n1", msg_id) if e["eventType"] == "Send"]
            self.assertEqual(len(sends), 1, msg_id)
            self.assertEqual([e for e in self.events_of("n1", msg_id)
                              if e["eventType"] == "Delivery"], [])
            wait_for(lambda: any(e["eventType"] == "Delivery" for name in ("n2", "n3")
                                 for e in self.events_of(name, msg_id)), 15, 0.2,
                     "the Delivery event of %s" % msg_id)
            evs = [e for name in ("n2", "n3") for e in self.events_of(name, msg_id)]
            self.assertEqual([e["eventType"] for e in evs if e["eventType"] == "Send"], [])
            d = [e for e in evs if e["eventType"] == "Delivery"][0]
            self.assertEqual(d["mail"]["tags"]["kiln:handoff-from"], ["n1"])
            self.assertEqual(d["mail"]["tags"]["ses:configuration-set"], ["txn"])
            self.assertEqual(d["mail"]["timestamp"], sends[0]["mail"]["timestamp"])
            if msg_id == api_id:
                self.assertEqual(d["mail"]["tags"]["team"], ["pay"])
        # the account counted each recipient once (at n1's acceptance), once n1 gave back
        # the slots it leased and did not use
        wait_for(lambda: self.redis.cmd("HGET", "ho:sent24h", "total") == "13", 6, 0.1,
                 "the account's window at 13")
        # and the statistics, summed over the nodes, once too
        for k in self.nodes.values():
            wait_for(lambda: sum(p["DeliveryAttempts"] for p in
                                 k.ctl("stats")["SendDataPoints"]) == 13, 10, 0.2,
                     "13 delivery attempts in the account's statistics")
        print("13 recipients handed off by n1: %s" % sorted({p for p, _ in got}))

    # (k)
    def test_k_wrong_credential(self):
        n2 = self.nodes["n2"]
        with smtplib.SMTP("127.0.0.1", n2.port, timeout=15) as s:
            s.ehlo("client.test")
            self.assertIn("auth", s.esmtp_features)
            plain = base64.b64encode(b"\0kiln-cluster:n1\0" + b"0" * 64).decode()
            code, _ = s.docmd("AUTH", "PLAIN " + plain)
            self.assertEqual(code, 535)
        self.assertIn('user="kiln-cluster:n1" result=failed', n2.log())
        # without the credential the field gives nothing: the message is an ordinary one
        # (trusted loopback here), counted and stored under a new id
        hdr = ("X-Kiln-Handoff: v=1; node=n1; id=00000000000000aa-forged-000000; ms=1; "
               "set=txn; mail=e30=\r\n")
        with smtplib.SMTP("127.0.0.1", n2.port, timeout=15) as s:
            s.ehlo("client.test")
            s.mail("app@example.test")
            s.rcpt("forged@dest.test")
            code, text = s.data((hdr + "From: app@example.test\r\nSubject: x\r\n\r\nx\r\n").encode())
        self.assertEqual(code, 250)
        self.assertNotIn(b"forged-000000", text)

    # (l)
    def test_l_drained_node_hands_off(self):
        n1 = self.nodes["n1"]
        n1.cfg["ips"] = [e for e in n1.cfg["ips"] if e["node"] != "n1"]
        n1.write_config()
        n1.ctl("reload")
        self.assertEqual([x for x in n1.ctl("ips")["DedicatedIps"]
                          if x["kiln"].get("Node") == "n1"], [])
        tok = "drain-%d" % os.getpid()
        self.submit(n1, tok, ["d1@dest.test", "d2@dest.test"])
        wait_for(lambda: len(self.delivered(tok)) >= 2, 30, 0.2, "the drained node's mail out")
        self.assertEqual(len(self.delivered(tok)), 2)
        wait_for(lambda: n1.ctl("status")["Queued"] == 0, 15, 0.2, "n1's queue empty")


if __name__ == "__main__":
    main()
