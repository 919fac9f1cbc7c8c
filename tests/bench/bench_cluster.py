"""bench_cluster.py — what the cluster's shared limits cost in Redis (issue 17; the figures
of docs/CLUSTER.md). Three kilnd nodes on one private redis-server (test_cluster_limits.py's
LimitsCluster), each loaded at once by kiln-loadgen (C connections, N messages of one
recipient). Prints, per load: the recipients accepted and their rate, the lease round trips
and the Redis commands per accepted recipient, the idle heartbeat commands per second.
Two loads by default: below the limits (--rate 20000) and over them (--rate 600).
  python3 tests/bench/bench_cluster.py [--rates 20000,600] [--messages 3000]
      [--connections 4]"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from kilntest import BUILDDIR, Sink  # noqa: E402
from test_cluster import Redis  # noqa: E402
from test_cluster_limits import LimitsCluster  # noqa: E402

LOADGEN = os.path.join(BUILDDIR, "kiln-loadgen")


def totals(c):
    st = [k.ctl("cluster", "status") for k in c.nodes.values()]
    return (sum(s["Redis"]["Commands"] for s in st), sum(s["Limits"]["Leases"] for s in st))


def run(redis, sink, rate, n, conns, prefix):
    c = LimitsCluster(redis, sink, prefix, {"max_send_rate": rate, "max_24h_send": 10000000})
    try:
        idle0 = totals(c)
        time.sleep(3)
        idle1 = totals(c)
        per_s = (idle1[0] - idle0[0]) / 3.0
        c0, t0 = totals(c), time.monotonic()
        procs = [subprocess.Popen([LOADGEN, "-s", "127.0.0.1:%d" % k.port, "-n", str(n), "-c",
                                   str(conns), "--domains", "1", "--from", "app@example.test",
                                   "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for k in c.nodes.values()]
        outs = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
        took = time.monotonic() - t0
        c1 = totals(c)
        acc = sum(o.get("accepted", 0) for o in outs)
        leases = c1[1] - c0[1]
        cmds = (c1[0] - c0[0]) - per_s * took
        print("max_send_rate %6d: %6d of %6d accepted in %5.1f s (%6.0f/s); lease round trips "
              "%.4f and Redis commands %.4f per accepted recipient; idle heartbeats %.1f "
              "commands/s for 3 nodes" % (rate, acc, 3 * n, took, acc / took,
                                          leases / max(acc, 1), cmds / max(acc, 1), per_s))
    finally:
        c.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="20000,600")
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--connections", type=int, default=4)
    a = ap.parse_args()
    redis = Redis().start()
    sink = Sink("127.0.0.1").__enter__()
    try:
        for i, rate in enumerate(int(x) for x in a.rates.split(",")):
            run(redis, sink, rate, a.messages, a.connections, "kb%d:" % i)
    finally:
        sink.__exit__(None, None, None)
        redis.stop()


if __name__ == "__main__":
    main()
