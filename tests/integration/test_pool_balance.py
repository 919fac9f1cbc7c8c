"""test_pool_balance.py — connection reuse keeps the pool's headroom-weighted IP choice
(issue 11 item 5), with the real kilnd and aiosmtpd sinks on 127.0.0.x:

  (a) three warm IPs in three zones; `kilnctl zone down az1`, 30 messages (they leave from
      az2 and az3, whose connections stay cached and idle), `kilnctl zone up az1`, then 60
      more messages: each IP sends 20 of them, give or take one session's worth (here 2
      messages: a burst may find one IP's only session busy), and az1's IP among them;
  (b) the normal case keeps its reuse: 60 messages from 3 IPs to one site go 20 per IP
      over at most 30 connections (one per IP when the machine is quiet), not one per
      message."""
import time
import unittest

from kilntest import Kiln, Sink, main, send, wait_for

IPS = ["127.0.0.10", "127.0.0.11", "127.0.0.12"]


def token_of(m):
    for line in m["data"].split(b"\r\n"):
        if line.startswith(b"X-Token: "):
            return line[9:].decode()
        if not line:
            break
    return None


def submit_many(k, prefix, n, domain="d0.test"):
    toks = []
    with k.smtp() as s:
        s.ehlo("client.test")
        for i in range(n):
            tok = "%s%d" % (prefix, i)
            msg = ("From: app@example.test\r\nTo: r@%s\r\nSubject: %s\r\nX-Token: %s\r\n\r\nhi\r\n"
                   % (domain, tok, tok))
            s.sendmail("app@example.test", ["r-%s@%s" % (tok, domain)], msg.encode())
            toks.append(tok)
    return toks


def per_ip(msgs, toks):
    want = set(toks)
    out = {ip: 0 for ip in IPS}
    for m in msgs:
        if token_of(m) in want:
            out[m["peer"]] = out.get(m["peer"], 0) + 1
    return out


class PoolBalance(unittest.TestCase):
    def kiln(self, sink):
        return Kiln(routes=[{"domain": "d0.test", "host": sink.host, "port": sink.port}],
                    ips=[{"address": ip, "zone": "az%d" % (i + 1), "pool": "transactional",
                          "warmup": "done"} for i, ip in enumerate(IPS)])

    def test_a_zone_up_gets_its_share_despite_idle_cached_connections(self):
        with Sink("127.0.0.21") as sink:
            k = self.kiln(sink)
            with k:
                k.ctl("zone", "down", "az1")
                first = submit_many(k, "down", 30)
                wait_for(lambda: len(sink.messages) >= 30, 30, 0.1, "30 deliveries while az1 is down")
                self.assertEqual(per_ip(sink.messages, first)["127.0.0.10"], 0)
                # the sessions of az2 and az3 are idle and reusable now
                self.assertTrue(k.ctl("status")["Sessions"] >= 1)
                k.ctl("zone", "up", "az1")
                later = submit_many(k, "up", 60)
                wait_for(lambda: len(sink.messages) >= 90, 30, 0.1, "60 deliveries after zone up")
                counts = per_ip(sink.messages, later)
                print("\nmessages per source IP after zone up: %s" % counts, flush=True)
                for ip in IPS:
                    self.assertLessEqual(abs(counts[ip] - 20), 2,
                                         "%s sent %d of 60 after zone up: %s" % (ip, counts[ip], counts))

    def test_b_reuse_still_saves_connections(self):
        with Sink("127.0.0.22") as sink:
            k = self.kiln(sink)
            with k:
                toks = submit_many(k, "n", 60)
                wait_for(lambda: len(sink.messages) >= 60, 30, 0.1, "60 deliveries")
                time.sleep(0.3)
                counts = per_ip(sink.messages, toks)
                conns = {ip: sum(1 for c in sink.handler.connections if c["peer"] == ip) for ip in IPS}
                print("\nmessages per IP %s over connections per IP %s" % (counts, conns), flush=True)
                for ip in IPS:
                    self.assertLessEqual(abs(counts[ip] - 20), 2, counts)
                # each IP carries its share over cached connections: on a quiet machine one
                # each; a burst on a busy one opens more while sessions are busy, never one
                # per message
                self.assertLessEqual(sum(conns.values()), 30, conns)


if __name__ == "__main__":
    main()
