"""bench_inject.py — injection throughput of kilnd with a durable spool (fsync on every
group commit, before any 250): kiln-loadgen sends N messages of SIZE bytes over C parallel
connections; kilnd delivers them to a kiln-sink at the same time (as in production).
Prints kiln-loadgen's report (accepted msgs/s, latency percentiles, errors) and kilnd's
CPU time. Run: `make bench`, or
  python3 tests/bench/bench_inject.py [--messages N] [--connections C] [--size BYTES]"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
from bench_peers import KilnSink, LOADGEN, proc_cpu, sink_addr  # noqa: E402
from kilntest import Kiln, free_port, wait_for  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--size", type=int, default=1024)
    a = ap.parse_args()
    k = Kiln()
    sink = KilnSink(k.tmp, 1, free_port())
    port = int(sink.proc.args[-1].rsplit(":", 1)[1])
    k.cfg["routes"] = [{"domain": "d0.test", "host": sink_addr(0), "port": port}]
    k.cfg["server"]["log_level"] = "warning"
    k.cfg["ips"] = [{"address": x, "zone": z, "pool": "transactional", "warmup": "done"}
                    for x, z in (("127.0.0.10", "az1"), ("127.0.0.11", "az2"), ("127.0.0.12", "az3"))]
    k.write_config()
    try:
        k.start()
        p = subprocess.run([LOADGEN, "-s", "127.0.0.1:%d" % k.port, "-n", str(a.messages), "-c",
                            str(a.connections), "--size", str(a.size), "--domains", "1",
                            "--from", "app@example.test", "--json"],
                           capture_output=True, text=True, timeout=900)
        r = json.loads(p.stdout)
        cpu = proc_cpu(k.proc.pid)
        wait_for(lambda: sink.messages() >= r["accepted"], 300, 0.5, "deliveries to finish")
        print("kiln injection benchmark (durable spool: fsync per group commit before 250)")
        print("  messages:           %d x %d bytes over %d connections" % (a.messages, a.size, a.connections))
        print("  accepted msgs/s:    %.0f" % r["accepted_per_s"])
        lat = r.get("latency_ms", {})
        print("  latency ms p50/p99: %s / %s (MAIL sent -> 250 after DATA)" % (lat.get("p50"), lat.get("p99")))
        print("  rejected/errors:    %s / %s" % (r.get("rejected"), r.get("errors")))
        print("  kilnd CPU s/1000 msgs during injection: %.3f" % (cpu / max(1, r["accepted"]) * 1000))
        k.stop()
    finally:
        sink.stop()
        k.cleanup()


if __name__ == "__main__":
    main()
