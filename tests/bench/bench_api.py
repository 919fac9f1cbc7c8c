"""bench_api.py — the SES v2 API's injection against SMTP injection, in the same run on the
same kilnd (issue 13: "the API must not be slower than SMTP per message"). One kilnd with a
durable spool (fsync on every group commit, before any 250 or 200), as bench_inject.py sets
it up, delivering to a kiln-sink as it accepts, with `api:` on a loopback port and one access
key (no per-key request rate) as apitest.py makes them. Then, alternating so that the
machine's noise hits both: SMTP, API, SMTP, API (--rounds 2 of each), each run N messages of
SIZE bytes over C connections with fresh token prefixes:
  - SMTP: kiln-loadgen (C persistent connections, pipelined);
  - API:  kiln-apiload (C keep-alive HTTP connections, SendEmail with Content.Raw, signed by
          kiln's SigV4 signer).
Then the same at a fixed offered load (--fixed-rate R msgs/s for both, --fixed-messages
each; 0 skips it): below both protocols' maximum, so that the latency per message and the
CPU per message compare at equal work rather than at each one's saturation.
Each run is followed by a wait until the sink has every accepted message, so no run pays for
the previous one's deliveries. Prints each run's accepted msgs/s, latency p50/p99 and kilnd's
CPU per 1000 messages (bench_peers.proc_cpu: during the injection, and through the last
delivery), then the means per protocol and the API/SMTP ratios. Each run also shows the
spool's group commits during the injection, from kilnd's /metrics (kiln_spool_commit_seconds,
kiln_spool_batch_writes): commits per 100 messages, writes per batch, the mean commit time
and how much of the run the writer spent committing. With every client waiting for its
commit, the rate follows from them: a batch's fsync is shared by the messages that reached
the spool while the previous batch committed. Run: `make bench`, or
  python3 tests/bench/bench_api.py [--messages N] [--connections C] [--size BYTES]
      [--rounds R] [--fixed-rate R] [--fixed-messages N] [--json FILE]"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
from bench_peers import KilnSink, LOADGEN, proc_cpu, sink_addr  # noqa: E402
from apitest import KEY_ID, UNTHROTTLED, api_kiln, endpoint, wait_api  # noqa: E402
from kilntest import BUILDDIR, free_port, wait_for  # noqa: E402

APILOAD = os.path.join(BUILDDIR, "kiln-apiload")


def bench_commits(mport):
    """kilnd's group-commit counters from /metrics: {name: value} for the commit time's and
    the batch size's sum and count."""
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10).read().decode()
    out = {}
    for name in ("kiln_spool_commit_seconds_sum", "kiln_spool_commit_seconds_count",
                 "kiln_spool_batch_writes_sum", "kiln_spool_batch_writes_count"):
        m = re.search(r"^%s(?:\{[^}]*\})? (\S+)$" % name, text, re.M)
        out[name] = float(m.group(1)) if m else 0.0
    return out


def bench_commit_stats(before, after, accepted, seconds):
    """The group commits between two bench_commits readings, for a run of accepted messages
    over seconds."""
    d = {k: after[k] - before[k] for k in before}
    n = d["kiln_spool_commit_seconds_count"]
    return {
        "commits": int(n),
        "commits_per_100_messages": 100.0 * n / max(1, accepted),
        "writes_per_batch": d["kiln_spool_batch_writes_sum"] / max(1, d["kiln_spool_batch_writes_count"]),
        "commit_ms": 1000.0 * d["kiln_spool_commit_seconds_sum"] / max(1, n),
        "writer_busy": d["kiln_spool_commit_seconds_sum"] / max(1e-9, seconds),
    }


def bench_children_cpu():
    """CPU seconds of this process's reaped children (the load tools)."""
    t = os.times()
    return t.children_user + t.children_system


def bench_run(proto, k, a, prefix, rate=0, messages=None, mport=None):
    """One load run (rate: msgs/s offered, 0 for as fast as it goes); returns kiln-loadgen's
    or kiln-apiload's JSON report plus the CPU readings of the injection window (and its
    group commits when mport, kilnd's metrics port, is given)."""
    common = ["-n", str(messages or a.messages), "-c", str(a.connections), "--size", str(a.size),
              "--domains", "1", "--from", "app@example.test", "--token-prefix", prefix, "--json"]
    if rate:
        common += ["--rate", str(rate)]
    if proto == "smtp":
        cmd = [LOADGEN, "-s", "127.0.0.1:%d" % k.port] + common
    else:
        cmd = [APILOAD, "--url", endpoint(k), "--region", k.cfg["server"]["region"],
               "--key-id", KEY_ID, "--secret-file", k.secret_files[KEY_ID]] + common
    commits0 = bench_commits(mport) if mport else None
    cpu0, client0, t0 = proc_cpu(k.proc.pid), bench_children_cpu(), time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if not p.stdout.strip():
        raise RuntimeError("%s exited %d: %s" % (os.path.basename(cmd[0]), p.returncode, p.stderr))
    r = json.loads(p.stdout)
    if mport:
        r["commits"] = bench_commit_stats(commits0, bench_commits(mport), r["accepted"],
                                          time.monotonic() - t0)
    r["kilnd_cpu_inject_s"] = proc_cpu(k.proc.pid) - cpu0
    r["client_cpu_s"] = bench_children_cpu() - client0
    r["wall_s"] = time.monotonic() - t0
    r["kilnd_cpu_start"] = cpu0
    return r


def bench_per_1000(cpu, accepted):
    return cpu / max(1, accepted) * 1000


def bench_mean(runs, key):
    vals = [key(r) for r in runs]
    return sum(vals) / len(vals) if vals else 0.0


def bench_ratio(x, y):
    return x / y if y else float("nan")


def bench_summary(runs, title):
    """Means per protocol over runs {"smtp": [...], "api": [...]}, printed under title, and
    the API/SMTP ratios."""
    summary = {}
    for proto in ("smtp", "api"):
        rs = runs[proto]
        summary[proto] = {
            "accepted_per_s": bench_mean(rs, lambda r: r["accepted_per_s"]),
            "p50_ms": bench_mean(rs, lambda r: r["latency_ms"]["p50"]),
            "p99_ms": bench_mean(rs, lambda r: r["latency_ms"]["p99"]),
            "kilnd_cpu_s_per_1000_inject": bench_mean(
                rs, lambda r: bench_per_1000(r["kilnd_cpu_inject_s"], r["accepted"])),
            "kilnd_cpu_s_per_1000_total": bench_mean(
                rs, lambda r: bench_per_1000(r["kilnd_cpu_total_s"], r["accepted"])),
            "client_cpu_s_per_1000": bench_mean(
                rs, lambda r: bench_per_1000(r["client_cpu_s"], r["accepted"])),
            "commits_per_100_messages": bench_mean(
                rs, lambda r: r["commits"]["commits_per_100_messages"]),
            "writes_per_batch": bench_mean(rs, lambda r: r["commits"]["writes_per_batch"]),
            "writer_busy": bench_mean(rs, lambda r: r["commits"]["writer_busy"]),
            "accepted": sum(r["accepted"] for r in rs),
            "rejected": sum(r["rejected"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
        }
    s, p = summary["smtp"], summary["api"]
    ratios = {
        "accepted_per_s": bench_ratio(p["accepted_per_s"], s["accepted_per_s"]),
        "p50_ms": bench_ratio(p["p50_ms"], s["p50_ms"]),
        "p99_ms": bench_ratio(p["p99_ms"], s["p99_ms"]),
        "kilnd_cpu_per_1000_inject": bench_ratio(p["kilnd_cpu_s_per_1000_inject"],
                                                 s["kilnd_cpu_s_per_1000_inject"]),
        "kilnd_cpu_per_1000_total": bench_ratio(p["kilnd_cpu_s_per_1000_total"],
                                                s["kilnd_cpu_s_per_1000_total"]),
    }
    print("  " + title)
    for proto, m in (("SMTP", s), ("API", p)):
        print("    %-4s  %7.0f msgs/s  p50 %6.2f ms  p99 %6.2f ms  kilnd CPU s/1000: %.3f "
              "injecting, %.3f to delivered  (accepted %d, rejected %d, errors %d)"
              % (proto, m["accepted_per_s"], m["p50_ms"], m["p99_ms"],
                 m["kilnd_cpu_s_per_1000_inject"], m["kilnd_cpu_s_per_1000_total"],
                 m["accepted"], m["rejected"], m["errors"]))
    for proto, m in (("SMTP", s), ("API", p)):
        print("    %-4s  group commits: %.1f per 100 messages, %.1f writes per batch, writer "
              "committing %.0f%% of the time"
              % (proto, m["commits_per_100_messages"], m["writes_per_batch"], 100 * m["writer_busy"]))
    print("  API/SMTP: msgs/s %.2f, p50 %.2f, p99 %.2f, kilnd CPU per 1000 messages %.2f "
          "injecting, %.2f to delivered"
          % (ratios["accepted_per_s"], ratios["p50_ms"], ratios["p99_ms"],
             ratios["kilnd_cpu_per_1000_inject"], ratios["kilnd_cpu_per_1000_total"]))
    return summary, ratios


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--fixed-rate", type=int, default=2000,
                    help="offered msgs/s of the equal-load runs (0: none)")
    ap.add_argument("--fixed-messages", type=int, default=10000)
    ap.add_argument("--json", help="write the figures to this file")
    a = ap.parse_args()
    k = api_kiln(api_over=dict(UNTHROTTLED, max_connections_per_client=max(64, a.connections),
                               max_connections=max(256, a.connections)),
                 server={"log_level": "warning"},
                 ips=[{"address": x, "zone": z, "pool": "transactional", "warmup": "done"}
                      for x, z in (("127.0.0.10", "az1"), ("127.0.0.11", "az2"), ("127.0.0.12", "az3"))])
    sink = KilnSink(k.tmp, 1, free_port())
    port = int(sink.proc.args[-1].rsplit(":", 1)[1])
    k.cfg["routes"] = [{"domain": "d0.test", "host": sink_addr(0), "port": port}]
    mport = free_port()
    k.cfg["metrics"] = {"listen": ["127.0.0.1:%d" % mport]}
    k.write_config()
    runs = {"smtp": [], "api": []}
    fixed = {"smtp": [], "api": []}
    delivered = 0
    try:
        k.start()
        wait_api(k)
        print("kiln API vs SMTP injection (durable spool: fsync per group commit before 250/200)")
        print("  %d messages x %d bytes over %d connections per run, %d round(s) of SMTP then API"
              % (a.messages, a.size, a.connections, a.rounds))
        def one(proto, label, rate=0, messages=None):
            nonlocal delivered
            prefix = "%s-%s-%d" % (proto, label.replace(" ", ""), int(time.time()))
            r = bench_run(proto, k, a, prefix, rate, messages, mport)
            delivered += r["accepted"]
            wait_for(lambda: sink.messages() >= delivered, 600, 0.5,
                     "%s %s's deliveries" % (proto, label))
            r["kilnd_cpu_total_s"] = proc_cpu(k.proc.pid) - r.pop("kilnd_cpu_start")
            lat = r.get("latency_ms", {})
            bad = ""
            if r["rejected"] or r["errors"]:
                bad = "  rejected %s %s, errors %s %s" % (
                    r["rejected"], json.dumps(r.get("rejected_by_code", {})), r["errors"],
                    json.dumps(r.get("errors_by_kind", {})))
            print("  %-8s %-4s  %7.0f msgs/s  p50 %6.2f ms  p99 %6.2f ms  kilnd CPU s/1000: "
                  "%.3f injecting, %.3f to delivered  client CPU s/1000: %.3f%s"
                  % (label, proto.upper(), r["accepted_per_s"], lat.get("p50", 0), lat.get("p99", 0),
                     bench_per_1000(r["kilnd_cpu_inject_s"], r["accepted"]),
                     bench_per_1000(r["kilnd_cpu_total_s"], r["accepted"]),
                     bench_per_1000(r["client_cpu_s"], r["accepted"]), bad))
            c = r["commits"]
            print("  %-8s %-4s  group commits: %.1f per 100 messages, %.1f writes per batch, "
                  "%.2f ms each, writer committing %.0f%% of the run"
                  % ("", "", c["commits_per_100_messages"], c["writes_per_batch"], c["commit_ms"],
                     100 * c["writer_busy"]))
            return r

        for rnd in range(1, a.rounds + 1):
            for proto in ("smtp", "api"):
                runs[proto].append(one(proto, "round %d" % rnd))
        if a.fixed_rate:
            print("  at %d msgs/s offered to both, %d messages per run:" % (a.fixed_rate,
                                                                           a.fixed_messages))
            for rnd in range(1, a.rounds + 1):
                for proto in ("smtp", "api"):
                    fixed[proto].append(one(proto, "fixed %d" % rnd, a.fixed_rate,
                                            a.fixed_messages))
        rc = k.stop()
        if rc != 0:
            raise RuntimeError("kilnd exited %s after SIGTERM: %s" % (rc, k.stderr_text()[-2000:]))
    finally:
        sink.stop()
        k.cleanup()

    summary, ratios = bench_summary(runs, "means of the %d full-speed round(s):" % a.rounds)
    print("  API not slower than SMTP per message (msgs/s ratio >= 1): %s"
          % ("yes" if ratios["accepted_per_s"] >= 1.0 else "NO"))
    out = {"messages": a.messages, "connections": a.connections, "size": a.size,
           "rounds": a.rounds, "runs": runs, "means": summary, "api_over_smtp": ratios}
    if a.fixed_rate:
        fsum, fratios = bench_summary(fixed, "means at %d msgs/s offered:" % a.fixed_rate)
        print("  at equal load, API/SMTP latency per message: p50 %.2f, p99 %.2f"
              % (fratios["p50_ms"], fratios["p99_ms"]))
        out.update({"fixed_rate": a.fixed_rate, "fixed_messages": a.fixed_messages,
                    "fixed_runs": fixed, "fixed_means": fsum, "fixed_api_over_smtp": fratios})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)

if __name__ == "__main__":
    main()
