"""test_ip_health.py — an IP that cannot connect (issue 11 item 6), with the real kilnd and
an aiosmtpd sink, in a network namespace this test makes (`unshare -n`, as root) where an
nftables rule drops the SYNs sent from 127.0.0.11 only: its connects time out for real
while 127.0.0.10 and 127.0.0.12 reach the same site.

  (a) after one connect timeout from 127.0.0.11 to the only site tried, the message still
      goes out at its first attempt from another IP, and `kilnctl ips` shows 127.0.0.11 as
      degraded with the reason ("connect timeout to 1 site(s) from this IP while other IPs
      of the pool connected"), State still active (SPEC's fields unchanged);
  (b) meanwhile the pool prefers its other IPs: 12 more messages leave from 127.0.0.10 and
      127.0.0.12 and not one more SYN leaves 127.0.0.11 (the rule's packet counter).

Needs root, util-linux's unshare and nftables' nft (Debian package nftables); skipped with
that reason otherwise."""
import os
import re
import shutil
import subprocess
import sys
import unittest

from kilntest import Kiln, Sink, main, send, wait_for

BAD = "127.0.0.11"
IPS = ["127.0.0.10", BAD, "127.0.0.12"]
NETNS_ENV = "KILN_TEST_PRIVATE_NETNS"


def can_run():
    if os.geteuid() != 0:
        return "needs root (unshare -n and nft)"
    if not shutil.which("nft"):
        return "needs nft (Debian package nftables)"
    if os.environ.get(NETNS_ENV) != "1":
        return "not in the private network namespace (unshare -n failed?)"
    return None


def nft(*args):
    p = subprocess.run(["nft"] + list(args), capture_output=True, text=True, timeout=20)
    if p.returncode != 0:
        raise AssertionError("nft %s: %s" % (" ".join(args), p.stderr))
    return p.stdout


def dropped_syns():
    out = nft("list", "chain", "inet", "kilntest", "out")
    m = re.search(r"counter packets (\d+)", out)
    return int(m.group(1)) if m else -1


def token_of(m):
    for line in m["data"].split(b"\r\n"):
        if line.startswith(b"X-Token: "):
            return line[9:].decode()
        if not line:
            break
    return None


class IpHealth(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        why = can_run()
        if why:
            raise unittest.SkipTest(why)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=20)
        nft("add", "table", "inet", "kilntest")
        nft("add", "chain", "inet", "kilntest", "out",
            "{ type filter hook output priority 0; policy accept; }")
        nft("add", "rule", "inet", "kilntest", "out", "ip", "saddr", BAD, "tcp", "flags", "syn",
            "counter", "drop")

    def submit(self, k, tok):
        code, text = send(k, "app@example.test", ["r-%s@d0.test" % tok], headers={"X-Token": tok})
        self.assertEqual(code, 250, text)

    def test_a_connect_timeouts_show_and_steer(self):
        with Sink("127.0.0.21") as sink:
            k = Kiln(routes=[{"domain": "d0.test", "host": sink.host, "port": sink.port}],
                     ips=[{"address": ip, "zone": "az%d" % (i + 1), "pool": "transactional",
                           "warmup": "done"} for i, ip in enumerate(IPS)],
                     delivery={"connect_timeout": "1s"})
            with k:
                toks = []
                # one message at a time until the pool's rotation has tried 127.0.0.11
                for i in range(6):
                    tok = "a%d" % i
                    self.submit(k, tok)
                    toks.append(tok)
                    wait_for(lambda: len(sink.messages) >= len(toks), 20, 0.05, "delivery of " + tok)
                    if dropped_syns() > 0:
                        break
                self.assertGreater(dropped_syns(), 0, "127.0.0.11 was never tried")
                ips = {x["Ip"]: x for x in k.ctl("ips")["DedicatedIps"]}
                bad = ips[BAD]
                self.assertEqual(bad["State"], "active", bad)
                self.assertTrue(bad["kiln"]["Degraded"], bad)
                self.assertTrue(bad["kiln"]["Avoided"], bad)
                self.assertIn("connect timeout to 1 site(s) from this IP while other IPs of the "
                              "pool connected", bad["kiln"]["DegradedReason"])
                for ip in ("127.0.0.10", "127.0.0.12"):
                    self.assertFalse(ips[ip]["kiln"]["Degraded"], ips[ip])
                table = k.ctl("ips", json_out=False).stdout
                print("\n--- kilnctl ips\n" + table.rstrip(), flush=True)
                self.assertIn("%s: degraded (other IPs preferred): connect timeout" % BAD, table)
                # every message went out at its first attempt, none from 127.0.0.11
                self.assertFalse([e for e in k.events() if e["eventType"] == "DeliveryDelay"])
                self.assertNotIn(BAD, {m["peer"] for m in sink.messages})

                syns = dropped_syns()
                more = ["b%d" % i for i in range(12)]
                for tok in more:
                    self.submit(k, tok)
                wait_for(lambda: len(sink.messages) >= len(toks) + len(more), 30, 0.05,
                         "12 more deliveries")
                got = {token_of(m): m["peer"] for m in sink.messages}
                self.assertEqual(sorted(t for t in got if t.startswith("b")), sorted(more))
                self.assertEqual({got[t] for t in more}, {"127.0.0.10", "127.0.0.12"})
                self.assertEqual(dropped_syns(), syns, "127.0.0.11 tried again while degraded")
                self.assertIn("pools.ip_degraded", k.log())


if __name__ == "__main__":
    if os.environ.get(NETNS_ENV) != "1" and os.geteuid() == 0 and shutil.which("unshare") \
            and shutil.which("nft"):
        # the rest of this file runs in a network namespace of its own: the nftables rule
        # touches nothing outside it, and its processes end with it
        os.environ[NETNS_ENV] = "1"
        sys.stdout.flush()
        os.execvp("unshare", ["unshare", "-n", "--", sys.executable, os.path.abspath(__file__)]
                  + sys.argv[1:])
    main()
