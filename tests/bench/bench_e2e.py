"""bench_e2e.py — end-to-end benchmark on loopback: kiln-loadgen -> MTA -> kiln-sink, for
kilnd (durable spool, 3 source IPs of one pool) and for a private Postfix relay tuned for
throughput (postfix_relay.py; Postfix fsyncs before its 250 too), alternating the two, 3
runs each, medians reported, and kiln/Postfix ratios. Also the raw ceiling (loadgen
straight into the sink). Figures: accepted msgs/s, delivered msgs/s end to end (loadgen
start to the last message at the sink), p50/p99 time from 250 to delivery, peak memory (kilnd:
VmHWM; Postfix: the sampled peak of the summed PSS of its processes) and CPU seconds per
1000 messages of the MTA. Machines are shared and noisy: quote ratios.

  python3 tests/bench/bench_e2e.py [--messages N] [--domains D] [--sizes 1024,20480] [--runs 3]
  (make bench runs the default table)"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
from kilntest import BUILDDIR, Kiln, free_port, wait_for  # noqa: E402
import postfix_relay  # noqa: E402

LOADGEN = os.path.join(BUILDDIR, "kiln-loadgen")
SINK = os.path.join(BUILDDIR, "kiln-sink")
CLK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def sink_addr(i):
    return "127.0.%d.%d" % (1 + i // 200, 1 + i % 200)


class KilnSink:
    def __init__(self, tmp, ndomains, port):
        self.stats = os.path.join(tmp, "sink-stats.json")
        args = [SINK, "--stats-file", self.stats]
        for i in range(ndomains):
            args += ["-l", "%s:%d" % (sink_addr(i), port)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self._up(port), 10, 0.1, "kiln-sink to listen")

    def _up(self, port):
        import socket
        try:
            with socket.create_connection((sink_addr(0), port), timeout=0.5):
                return True
        except OSError:
            return False

    def messages(self):
        try:
            os.unlink(self.stats)
        except FileNotFoundError:
            pass
        self.proc.send_signal(signal.SIGUSR1)
        try:
            return wait_for(lambda: self._read(), 5, 0.02, "sink stats")["messages"]
        except AssertionError:
            return 0

    def _read(self):
        try:
            with open(self.stats) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def proc_cpu(pid, children=False):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = int(fields[11]) + int(fields[12])
    if children:
        cpu += int(fields[13]) + int(fields[14])
    return cpu / CLK


def proc_rss_kb(pid):
    try:
        with open("/proc/%d/statm" % pid) as f:
            return int(f.read().split()[1]) * PAGE_KB
    except (FileNotFoundError, ProcessLookupError):
        return 0


def proc_pss_kb(pid):
    """Proportional set size: shared pages divided among the processes sharing them, so a
    multi-process MTA (Postfix) is not charged its shared libraries once per process."""
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def loadgen(port, n, size, ndomains, conns=20):
    p = subprocess.run([LOADGEN, "-s", "127.0.0.1:%d" % port, "-n", str(n), "-c", str(conns),
                        "--size", str(size), "--domains", str(ndomains), "--from", "app@example.test",
                        "--json"], capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError("kiln-loadgen failed: %s" % p.stderr)
    return json.loads(p.stdout)


def pct(vals, q):
    if not vals:
        return float("nan")
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(len(vals) * q / 100))]


def iso_ms(s):
    import datetime
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp() * 1000


def run_kiln(n, size, ndomains):
    tmp = tempfile.mkdtemp(prefix="kiln-bench-")
    sink_port = free_port()
    sink = KilnSink(tmp, ndomains, sink_port)
    routes = [{"domain": "d%d.test" % i, "host": sink_addr(i), "port": sink_port} for i in range(ndomains)]
    k = Kiln(tmp=tmp, routes=routes)
    k.cfg["server"]["log_level"] = "warning"
    k.cfg["submission"]["max_message_size"] = "30MB"
    k.cfg["account"]["identities"] = ["example.test"]
    k.cfg["ips"] = [{"address": a, "zone": z, "pool": "transactional", "warmup": "done"}
                    for a, z in (("127.0.0.10", "az1"), ("127.0.0.11", "az2"), ("127.0.0.12", "az3"))]
    k.write_config()
    try:
        k.start()
        pid = k.proc.pid
        peak = 0
        t0 = time.monotonic()
        lg = loadgen(k.port, n, size, ndomains)
        while True:
            peak = max(peak, proc_rss_kb(pid))
            got = sink.messages()
            if got >= lg["accepted"] or time.monotonic() - t0 > 900:
                break
            time.sleep(0.2)
        t_end = time.monotonic()
        cpu = proc_cpu(pid)
        lat = []
        for e in k.events():
            if e["eventType"] == "Delivery":
                lat.append(iso_ms(e["delivery"]["timestamp"]) - iso_ms(e["mail"]["timestamp"]))
        with open("/proc/%d/status" % pid) as f:
            hwm = [int(l.split()[1]) for l in f if l.startswith("VmHWM")][0]
        k.stop()
        return {"accepted_per_s": lg["accepted_per_s"], "delivered_per_s": got / (t_end - t0),
                "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "peak_rss_mb": max(hwm, peak) / 1024,
                "cpu_s_per_1000": cpu / max(1, got) * 1000, "delivered": got, "accepted": lg["accepted"]}
    finally:
        sink.stop()
        k.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def run_postfix(n, size, ndomains):
    tmp = tempfile.mkdtemp(prefix="pfx-bench-")
    os.chmod(tmp, 0o755)
    sink_port = free_port()
    sink = KilnSink(tmp, ndomains, sink_port)
    port = free_port()
    relay = postfix_relay.PostfixRelay(os.path.join(tmp, "pfx"), port,
                                       {"d%d.test" % i: (sink_addr(i), sink_port) for i in range(ndomains)})
    try:
        relay.start()
        master = relay.master_pid()
        cpu0 = proc_cpu(master, children=True) + sum(proc_cpu(c) for c in children_of(master))
        peak = 0
        t0 = time.monotonic()
        lg = loadgen(port, n, size, ndomains)
        while True:
            peak = max(peak, sum(proc_pss_kb(c) for c in children_of(master)) + proc_pss_kb(master))
            got = sink.messages()
            if got >= lg["accepted"] or time.monotonic() - t0 > 900:
                break
            time.sleep(0.2)
        t_end = time.monotonic()
        cpu = proc_cpu(master, children=True) + sum(proc_cpu(c) for c in children_of(master)) - cpu0
        lat = []
        try:
            with open(os.path.join(relay.base, "maillog")) as f:
                for line in f:
                    if "status=sent" in line and " delay=" in line:
                        lat.append(float(line.split(" delay=")[1].split(",")[0]) * 1000)
        except FileNotFoundError:
            pass
        return {"accepted_per_s": lg["accepted_per_s"], "delivered_per_s": got / (t_end - t0),
                "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "peak_rss_mb": peak / 1024,
                "cpu_s_per_1000": cpu / max(1, got) * 1000, "delivered": got, "accepted": lg["accepted"]}
    finally:
        relay.stop()
        sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run_ceiling(n, size, ndomains):
    tmp = tempfile.mkdtemp(prefix="ceil-bench-")
    port = free_port()
    sink = KilnSink(tmp, 1, port)
    try:
        lg = subprocess.run([LOADGEN, "-s", "%s:%d" % (sink_addr(0), port), "-n", str(n), "-c", "20",
                             "--size", str(size), "--domains", str(ndomains), "--json"],
                            capture_output=True, text=True, timeout=900)
        return json.loads(lg.stdout)["accepted_per_s"]
    finally:
        sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--domains", type=int, default=100)
    ap.add_argument("--sizes", default="1024,20480")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-postfix", action="store_true")
    a = ap.parse_args()
    if not a.no_postfix:
        postfix_relay.ensure_installed()
    keys = ["accepted_per_s", "delivered_per_s", "p50_ms", "p99_ms", "peak_rss_mb", "cpu_s_per_1000"]
    print("end-to-end benchmark: %d messages, %d destination domains, 20 connections, 3 source IPs, "
          "durable spools, medians of %d alternating runs" % (a.messages, a.domains, a.runs))
    for size in [int(s) for s in a.sizes.split(",")]:
        res = {"kiln": [], "postfix": []}
        for _ in range(a.runs):
            res["kiln"].append(run_kiln(a.messages, size, a.domains))
            if not a.no_postfix:
                res["postfix"].append(run_postfix(a.messages, size, a.domains))
        ceiling = run_ceiling(a.messages, size, a.domains)
        med = {who: {key: statistics.median(r[key] for r in runs) for key in keys}
               for who, runs in res.items() if runs}
        print("\n%d-byte messages (raw ceiling loadgen->sink: %.0f msgs/s)" % (size, ceiling))
        print("  %-22s %12s %12s %8s" % ("", "kiln", "postfix", "ratio"))
        for key in keys:
            kv = med["kiln"][key]
            pv = med.get("postfix", {}).get(key)
            ratio = "%.2f" % (kv / pv) if pv else "-"
            print("  %-22s %12.1f %12s %8s" % (key, kv, "%.1f" % pv if pv is not None else "-", ratio))
        for who, runs in res.items():
            for r in runs:
                if r["delivered"] < r["accepted"]:
                    print("  WARNING: %s delivered %d of %d accepted" % (who, r["delivered"], r["accepted"]))


if __name__ == "__main__":
    main()
