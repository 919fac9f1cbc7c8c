"""bench_metrics.py — does scraping /metrics slow delivery? (issue 15: "scraping /metrics
every second does not measurably slow delivery"). One kilnd with a durable spool and a
`metrics` listener, delivering to a kiln-sink as it accepts (as bench_api.py sets it up);
alternating runs of kiln-loadgen (N messages of SIZE bytes over C connections), each timed
from the first submission to the sink's last delivery: without a scraper, then with a
scraper thread fetching /metrics every INTERVAL seconds (default 1; --interval 0.1 makes
the cost ten times easier to see), ROUNDS times each so the machine's noise hits both.
Prints each run's delivered msgs/s, kilnd's CPU per 1000 messages and the scrapes made,
then the means and the scraped/unscraped ratios, and the CPU one scrape costs kilnd (200
back-to-back scrapes of the idle daemon), which does not drown in the runs' noise. Run: `make bench`, or
  python3 tests/bench/bench_metrics.py [--messages N] [--connections C] [--size BYTES]
      [--rounds R] [--interval S] [--json FILE]"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
from bench_peers import KilnSink, LOADGEN, proc_cpu, sink_addr  # noqa: E402
from kilntest import Kiln, free_port, wait_for  # noqa: E402


class Scraper(threading.Thread):
    """GET /metrics every interval seconds until stopped; counts scrapes and bytes."""

    def __init__(self, url, interval):
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.stop_ev = threading.Event()
        self.scrapes = self.bytes = self.errors = 0
        self.max_s = 0.0

    def run(self):
        while not self.stop_ev.is_set():
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as r:
                    self.bytes += len(r.read())
                self.scrapes += 1
            except OSError:
                self.errors += 1
            took = time.monotonic() - t0
            self.max_s = max(self.max_s, took)
            self.stop_ev.wait(max(0.0, self.interval - took))

    def stop(self):
        self.stop_ev.set()
        self.join(15)


def bench_run(k, sink, a, prefix, delivered_before, scrape_url):
    scraper = Scraper(scrape_url, a.interval) if scrape_url else None
    cmd = [LOADGEN, "-s", "127.0.0.1:%d" % k.port, "-n", str(a.messages), "-c", str(a.connections),
           "--size", str(a.size), "--domains", "1", "--from", "app@example.test",
           "--token-prefix", prefix, "--json"]
    cpu0, t0 = proc_cpu(k.proc.pid), time.monotonic()
    if scraper:
        scraper.start()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        r = json.loads(p.stdout)
        want = delivered_before + r["accepted"]
        wait_for(lambda: sink.messages() >= want, 600, 0.05, "the run's deliveries")
    finally:
        if scraper:
            scraper.stop()
    wall = time.monotonic() - t0
    return {"accepted": r["accepted"], "delivered_per_s": r["accepted"] / wall,
            "kilnd_cpu_s_per_1000": (proc_cpu(k.proc.pid) - cpu0) / max(1, r["accepted"]) * 1000,
            "scrapes": scraper.scrapes if scraper else 0,
            "scrape_errors": scraper.errors if scraper else 0,
            "scrape_bytes": scraper.bytes // max(1, scraper.scrapes) if scraper else 0,
            "scrape_max_s": scraper.max_s if scraper else 0.0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--json", help="write the figures to this file")
    a = ap.parse_args()
    mport = free_port()
    k = Kiln(server={"log_level": "warning"}, metrics={"listen": ["127.0.0.1:%d" % mport]},
             ips=[{"address": x, "zone": z, "pool": "transactional", "warmup": "done"}
                  for x, z in (("127.0.0.10", "az1"), ("127.0.0.11", "az2"), ("127.0.0.12", "az3"))])
    sink = KilnSink(k.tmp, 1, free_port())
    port = int(sink.proc.args[-1].rsplit(":", 1)[1])
    k.cfg["routes"] = [{"domain": "d0.test", "host": sink_addr(0), "port": port}]
    # as fast as kiln delivers: no shaping rate (soaklib.fast_config's settings)
    k.cfg["shaping"] = {"default": {"connections": 20, "messages_per_connection": 1000, "rate": "-1"}}
    k.write_config()
    url = "http://127.0.0.1:%d/metrics" % mport
    runs = {"plain": [], "scraped": []}
    delivered = 0
    scrape_cpu_ms = None
    try:
        k.start()
        print("kiln delivery with and without a /metrics scrape every %g s (durable spool)" % a.interval)
        print("  %d messages x %d bytes over %d connections per run, %d round(s)"
              % (a.messages, a.size, a.connections, a.rounds))
        for rnd in range(1, a.rounds + 1):
            for mode in ("plain", "scraped"):
                r = bench_run(k, sink, a, "%s-r%d-%d" % (mode, rnd, int(time.time())), delivered,
                              url if mode == "scraped" else None)
                delivered += r["accepted"]
                runs[mode].append(r)
                print("  round %d %-7s  %7.0f delivered msgs/s  kilnd CPU s/1000: %.3f  scrapes %d "
                      "(%d bytes each, slowest %.1f ms, errors %d)"
                      % (rnd, mode, r["delivered_per_s"], r["kilnd_cpu_s_per_1000"], r["scrapes"],
                         r["scrape_bytes"], r["scrape_max_s"] * 1000, r["scrape_errors"]))
        # the cost of one scrape itself: kilnd's CPU over 200 back-to-back scrapes, idle
        cpu0 = proc_cpu(k.proc.pid)
        for _ in range(200):
            with urllib.request.urlopen(url, timeout=10) as resp:
                resp.read()
        scrape_cpu_ms = (proc_cpu(k.proc.pid) - cpu0) / 200 * 1000
        print("  one scrape costs kilnd %.2f ms of CPU (idle, 200 scrapes): %.3f %% of a core "
              "at one scrape every %g s" % (scrape_cpu_ms, scrape_cpu_ms / 10 / a.interval, a.interval))
        rc = k.stop()
        if rc != 0:
            raise RuntimeError("kilnd exited %s after SIGTERM" % rc)
    finally:
        sink.stop()
        k.cleanup()

    def mean(mode, key):
        return sum(r[key] for r in runs[mode]) / len(runs[mode])
    summary = {m: {"delivered_per_s": mean(m, "delivered_per_s"),
                   "kilnd_cpu_s_per_1000": mean(m, "kilnd_cpu_s_per_1000")} for m in runs}
    summary["ratio_delivered_per_s"] = summary["scraped"]["delivered_per_s"] / summary["plain"]["delivered_per_s"]
    summary["ratio_kilnd_cpu"] = summary["scraped"]["kilnd_cpu_s_per_1000"] / summary["plain"]["kilnd_cpu_s_per_1000"]
    summary["interval_s"] = a.interval
    summary["scrape_cpu_ms"] = scrape_cpu_ms
    print("  mean: plain %.0f msgs/s, scraped %.0f msgs/s: ratio %.3f; kilnd CPU ratio %.3f"
          % (summary["plain"]["delivered_per_s"], summary["scraped"]["delivered_per_s"],
             summary["ratio_delivered_per_s"], summary["ratio_kilnd_cpu"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": runs, "summary": summary}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
