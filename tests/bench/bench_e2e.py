"""bench_e2e.py — kiln against a tuned Postfix 3.7 relay end to end on loopback, as issue 10
measures it, in one run: for each load (1 KB one domain, 20 KB one domain, 1 KB over 100
domains with real MX lookups) and each load tool (Postfix's smtp-source, kiln-loadgen;
bench_load.py says how each drives 20 sessions), `--runs` rounds of kiln, Postfix and the
raw ceiling (the same tool straight into the sink), medians reported.

Setup (bench_peers.py): both spools (kiln's server.spool, Postfix's queue_directory) on one
journaled ext4 image on a loop device (the plain filesystem, said so, when that is not
possible); both fsync before their 250 (kiln's spool is always durable; Postfix by default);
one kiln-sink per run listening on 127.0.x.y per domain. kiln: 3 source IPs of one pool,
default shaping without its rate limit (E2E_KILN_SHAPING); Postfix: postfix_relay.py's
tuning (20 per destination). One-domain loads: kiln has a static route, Postfix a transport
map. 100 domains: a dnsmasq child answers MX d<i>.test -> mx.d<i>.test -> 127.0.x.y; kiln
has no routes and dns.servers at it; Postfix does MX lookups through the same dnsmasq
(postfix_relay.py: a private resolv.conf in a mount namespace), or, when dnsmasq cannot
have port 53, keeps transport maps and the output says so.

Figures per run: msg/s end to end (load start to the last message counted at the sink,
interpolated between two 50 ms polls of its counter), p50/p99 from the 250 to delivery
(kiln: each Delivery event's delivery.timestamp - mail.timestamp; Postfix: maillog delay=),
CPU ms per message (kilnd: utime+stime of all its threads over the run; Postfix: master,
its live and reaped children), peak memory (kilnd VmHWM; Postfix: the sampled peak of the
summed PSS of its processes), and the machine's busy and iowait shares (/proc/stat deltas
over the run; busy = not idle and not iowait). Medians of the runs; kiln/Postfix and kiln
share (kiln msg/s / ceiling msg/s) are ratios of medians. A machine shared with other work
makes the absolute figures noisy; quote ratios from one run.

Promises: every process is ended by its PID, every wait is bounded (a run gives up after
max(120 s, N/20 s), or 30 s without progress at the sink once the tool has ended), every
temp directory is removed, and the ext4 image is unmounted and deleted at the end, on an
error and on SIGINT/SIGTERM/SIGHUP. The default command takes about 26 minutes on a quiet
2-core machine (Postfix at ~350 msg/s is most of it).

  python3 tests/bench/bench_e2e.py [--messages 20000] [--runs 3] [--loads 1k,20k,1k100]
      [--tools smtp-source,loadgen] [--no-postfix] [--json FILE]
      [--dkim none|rsa|ed25519|dual]   (kiln signs each message; Postfix does not sign)
  (make bench runs the defaults: the issue's full table)"""
import argparse
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
from kilntest import Kiln, free_port  # noqa: E402
import postfix_relay  # noqa: E402
from bench_peers import (LOADGEN, SINK, BenchDns, KilnSink, SpoolFs, machine_share,  # noqa: E402
                         machine_ticks, peers_sink_addr, proc_cpu, proc_hwm_kb, proc_rss_kb,
                         proc_tree_cpu, proc_tree_pss_kb)
from bench_load import LOAD_TOOLS, SMTP_SOURCE, LoadRun  # noqa: E402

# name -> (message bytes, domains, real MX lookups)
E2E_LOADS = {"1k": (1024, 1, False), "20k": (20480, 1, False), "1k100": (1024, 100, True)}
E2E_LOAD_TITLES = {"1k": "1 KB, one domain", "20k": "20 KB, one domain",
                   "1k100": "1 KB, 100 domains (MX)"}
# kiln's default shaping but no rate limit: the default 50/s per (IP, site) would cap one
# domain at 150 msg/s over the 3 IPs, and the Postfix relay has no rate limit either.
E2E_KILN_SHAPING = {"connections": 10, "messages_per_connection": 100, "rate": "-1"}
E2E_POLL_S = 0.05
E2E_STALL_S = 30             # no progress at the sink this long after the tool ended: give up


class E2eInterrupted(Exception):
    pass


def e2e_on_signal(signum, frame):
    """The first SIGINT/SIGTERM/SIGHUP unwinds through every clean-up (finally blocks);
    later ones are ignored so that the clean-up (unmounting the image) runs to its end."""
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    raise E2eInterrupted("signal %d" % signum)


def e2e_pct(vals, q):
    if not vals:
        return math.nan
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(len(vals) * q / 100))]


def e2e_iso_ms(s):
    import datetime
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp() * 1000


def e2e_drive(tool, host, port, sink, n, size, ndomains, sample=None):
    """Runs one load against host:port and waits (bounded) until the sink has counted every
    accepted message. Returns the timing: msg_s, elapsed_s, delivered, accepted, failures."""
    limit = max(120.0, n / 20.0)
    run = LoadRun(tool, host, port, n, size, ndomains, limit)
    m0 = machine_ticks()
    t0 = time.monotonic()
    run.start()
    prev_t, prev_c = t0, 0
    last_progress = t0
    t_end = None
    try:
        while True:
            if sample:
                sample()
            t = time.monotonic()
            c = sink.messages()
            running = run.running()
            want = n if running else (run.accepted if run.accepted is not None else n)
            if c >= want and want > 0:
                frac = (want - prev_c) / (c - prev_c) if c > prev_c else 1.0
                t_end = prev_t + frac * (t - prev_t)
                break
            if c > prev_c:
                last_progress = t
            prev_t, prev_c = t, c
            if not running and t - max(last_progress, run.t_end) > E2E_STALL_S:
                break
            if t - t0 > limit:
                break
            time.sleep(E2E_POLL_S)
        m1 = machine_ticks()
        if t_end is None:
            t_end = time.monotonic()
        run.wait(30)
    finally:
        run.stop()
    res = run.result()
    delivered = min(c, want)
    return {"msg_s": delivered / (t_end - t0), "elapsed_s": t_end - t0, "delivered": delivered,
            "accepted": res["accepted"], "tool_s": res["tool_s"], "failures": res["failures"],
            "machine": machine_share(m0, m1), "t0": t0, "t_end": t_end}


def e2e_dkim_identity(tmp, dkim):
    """account.identities for --dkim: example.test signing with an RSA 2048 key (rsa), an
    Ed25519 key (ed25519) or both (dual), keys made with the openssl command."""
    if dkim == "none":
        return ["example.test"]
    import subprocess
    rsa, ed = os.path.join(tmp, "dkim-rsa.pem"), os.path.join(tmp, "dkim-ed.pem")
    if dkim in ("rsa", "dual"):
        subprocess.run(["openssl", "genrsa", "-out", rsa, "2048"], check=True, capture_output=True)
    if dkim in ("ed25519", "dual"):
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", ed], check=True,
                       capture_output=True)
    if dkim == "ed25519":
        key = {"selector": "b1", "private_key_file": ed}
    else:
        key = {"selector": "b1", "private_key_file": rsa}
        if dkim == "dual":
            key["ed25519"] = {"selector": "b1e", "private_key_file": ed}
    return [{"identity": "example.test", "dkim": key}]


def e2e_run_kiln(fs, dns, tool, n, size, ndomains, mx, dkim="none"):
    tmp = fs.tempdir("kiln-")
    scratch = tempfile.mkdtemp(prefix="kiln-bench-sink-")
    sink_port = free_port()
    sink = KilnSink(scratch, ndomains, sink_port)
    k = None
    try:
        over = {"sink_port": sink_port}
        if mx:
            over["routes"] = []
            over["dns"] = {"servers": [dns.server], "timeout": "2s"}
        else:
            over["routes"] = [{"domain": "d0.test", "host": peers_sink_addr(0), "port": sink_port}]
        k = Kiln(tmp=tmp, **over)
        k.cfg["server"]["log_level"] = "warning"
        k.cfg["submission"]["max_message_size"] = "30MB"
        k.cfg["account"]["identities"] = e2e_dkim_identity(tmp, dkim)
        k.cfg["ips"] = [{"address": a, "zone": z, "pool": "transactional", "warmup": "done"}
                        for a, z in (("127.0.0.10", "az1"), ("127.0.0.11", "az2"), ("127.0.0.12", "az3"))]
        k.cfg["shaping"] = {"default": E2E_KILN_SHAPING}
        k.write_config()
        k.start()
        pid = k.proc.pid
        peak = [0]

        def sample():
            peak[0] = max(peak[0], proc_rss_kb(pid))
        cpu0 = proc_cpu(pid)
        r = e2e_drive(tool, "127.0.0.1", k.port, sink, n, size, ndomains, sample)
        cpu = proc_cpu(pid) - cpu0
        hwm = max(proc_hwm_kb(pid), peak[0])
        lat = []
        deadline = time.monotonic() + 15          # events drain every 100 ms
        while time.monotonic() < deadline:
            evs = [e for e in k.events() if e.get("eventType") == "Delivery"]
            if len(evs) >= r["delivered"]:
                break
            time.sleep(0.2)
        for e in evs:
            lat.append(e2e_iso_ms(e["delivery"]["timestamp"]) - e2e_iso_ms(e["mail"]["timestamp"]))
        k.stop()
        r.update({"p50_ms": e2e_pct(lat, 50), "p99_ms": e2e_pct(lat, 99), "peak_rss_mb": hwm / 1024,
                  "cpu_ms_per_msg": cpu * 1000 / max(1, r["delivered"])})
        return r
    finally:
        sink.stop()
        if k:
            k.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def e2e_postfix_delays(maillog, want, timeout=15):
    """delay= of every status=sent line in ms, once want of them are logged (bounded)."""
    deadline = time.monotonic() + timeout
    lat = []
    while time.monotonic() < deadline:
        lat = []
        try:
            with open(maillog) as f:
                for line in f:
                    if "status=sent" in line and " delay=" in line:
                        lat.append(float(line.split(" delay=")[1].split(",")[0]) * 1000)
        except FileNotFoundError:
            pass
        if len(lat) >= want:
            break
        time.sleep(0.2)
    return lat


def e2e_run_postfix(fs, dns, tool, n, size, ndomains, mx):
    tmp = fs.tempdir("pfx-")
    scratch = tempfile.mkdtemp(prefix="kiln-bench-sink-")
    sink_port = free_port()
    sink = KilnSink(scratch, ndomains, sink_port)
    port = free_port()
    use_dns = (dns.addr, sink_port) if mx and dns.port53 else None
    routes = {} if use_dns else {"d%d.test" % i: (peers_sink_addr(i), sink_port) for i in range(ndomains)}
    relay = postfix_relay.PostfixRelay(os.path.join(tmp, "pfx"), port, routes, dns=use_dns)
    try:
        relay.start()
        master = relay.master_pid()
        peak = [0]

        def sample():
            peak[0] = max(peak[0], proc_tree_pss_kb(master))
        cpu0 = proc_tree_cpu(master)
        r = e2e_drive(tool, "127.0.0.1", port, sink, n, size, ndomains, sample)
        cpu = proc_tree_cpu(master) - cpu0
        lat = e2e_postfix_delays(os.path.join(relay.base, "maillog"), r["delivered"])
        r.update({"p50_ms": e2e_pct(lat, 50), "p99_ms": e2e_pct(lat, 99), "peak_rss_mb": peak[0] / 1024,
                  "cpu_ms_per_msg": cpu * 1000 / max(1, r["delivered"])})
        return r
    finally:
        relay.stop()
        sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def e2e_run_ceiling(tool, n, size, ndomains):
    tmp = tempfile.mkdtemp(prefix="kiln-bench-ceil-")
    sink = KilnSink(tmp, ndomains, free_port())
    try:
        return e2e_drive(tool, peers_sink_addr(0), sink.port, sink, n, size, ndomains)
    finally:
        sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def e2e_timed(fn, *args):
    """fn(*args) with wall_s: its whole time, set-up and tear-down included."""
    t = time.monotonic()
    r = fn(*args)
    r["wall_s"] = time.monotonic() - t
    return r


E2E_KEYS = ("msg_s", "p50_ms", "p99_ms", "peak_rss_mb", "cpu_ms_per_msg", "busy", "iowait")


def e2e_median(runs):
    if not runs:
        return None
    flat = [dict(r, busy=r["machine"]["busy"], iowait=r["machine"]["iowait"]) for r in runs]
    return {k: statistics.median(r[k] for r in flat if k in r) for k in E2E_KEYS if k in flat[0]}


def e2e_row(load, tool, res):
    k, p, c = (e2e_median(res[w]) for w in ("kiln", "postfix", "ceiling"))
    row = {"load": load, "tool": tool, "kiln": k, "postfix": p, "ceiling": c,
           "kiln_postfix": k["msg_s"] / p["msg_s"] if p and p["msg_s"] else None,
           "kiln_share": k["msg_s"] / c["msg_s"] if c and c["msg_s"] else None}
    return row


def e2e_fmt(v, f="%.0f"):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f % v


def e2e_print_table(rows):
    print("\n| load | tool | Postfix msg/s | kiln msg/s | kiln/Postfix | ceiling | kiln share "
          "| kiln CPU ms/msg | p50/p99 ms | peak RSS | machine busy (iowait) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        k, p, c = r["kiln"], r["postfix"] or {}, r["ceiling"] or {}
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s/%s | %s MiB | %s %% (%s %%) |" % (
            E2E_LOAD_TITLES[r["load"]], r["tool"], e2e_fmt(p.get("msg_s")), e2e_fmt(k["msg_s"]),
            e2e_fmt(r["kiln_postfix"], "%.2f"), e2e_fmt(c.get("msg_s")),
            e2e_fmt(r["kiln_share"] and r["kiln_share"] * 100, "%.0f %%"),
            e2e_fmt(k["cpu_ms_per_msg"], "%.2f"), e2e_fmt(k["p50_ms"]), e2e_fmt(k["p99_ms"]),
            e2e_fmt(k["peak_rss_mb"], "%.1f"), e2e_fmt(k["busy"] * 100), e2e_fmt(k["iowait"] * 100)))
    if any(r["postfix"] for r in rows):
        print("\nPostfix in the same runs:\n")
        print("| load | tool | Postfix CPU ms/msg | p50/p99 ms | peak PSS (summed) | machine busy (iowait) |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            p = r["postfix"]
            if p:
                print("| %s | %s | %s | %s/%s | %s MiB | %s %% (%s %%) |" % (
                    E2E_LOAD_TITLES[r["load"]], r["tool"], e2e_fmt(p["cpu_ms_per_msg"], "%.2f"),
                    e2e_fmt(p["p50_ms"]), e2e_fmt(p["p99_ms"]), e2e_fmt(p["peak_rss_mb"], "%.1f"),
                    e2e_fmt(p["busy"] * 100), e2e_fmt(p["iowait"] * 100)))


def e2e_check(who, load, tool, r):
    if r["failures"] or r["accepted"] is None or r["delivered"] < r["accepted"]:
        print("  WARNING: %s %s/%s: delivered %d of %s accepted%s" % (
            who, load, tool, r["delivered"], r["accepted"],
            ("; " + "; ".join(r["failures"][:3])) if r["failures"] else ""), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--loads", default=",".join(E2E_LOADS))
    ap.add_argument("--tools", default=",".join(LOAD_TOOLS))
    ap.add_argument("--no-postfix", action="store_true")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--dkim", choices=("none", "rsa", "ed25519", "dual"), default="none",
                    help="kiln signs every message (Postfix does not sign)")
    a = ap.parse_args()
    loads = [x for x in a.loads.split(",") if x]
    tools = [x for x in a.tools.split(",") if x]
    bad = [x for x in loads if x not in E2E_LOADS] + [x for x in tools if x not in LOAD_TOOLS]
    if bad or a.messages < 1 or a.runs < 1:
        ap.error("unknown load/tool %s (loads: %s; tools: %s)" % (
            ",".join(bad), ",".join(E2E_LOADS), ",".join(LOAD_TOOLS)))
    if not a.no_postfix or "smtp-source" in tools:
        postfix_relay.ensure_installed()
    for path in (LOADGEN, SINK, SMTP_SOURCE):
        if not os.access(path, os.X_OK):
            sys.exit("bench_e2e: %s is missing (build kiln / install postfix)" % path)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):    # SIGINT too: a background
        signal.signal(s, e2e_on_signal)                          # job starts with it ignored

    t_start = time.monotonic()
    fs = dns = None
    rows, raw, notes = [], [], []
    try:
        fs = SpoolFs()
        notes.append(fs.note)
        if any(E2E_LOADS[x][2] for x in loads):
            dns = BenchDns(100)
            if dns.port53 or a.no_postfix:
                notes.append("100 domains: MX lookups through dnsmasq at %s for kiln%s" % (
                    dns.server, "" if a.no_postfix else " and Postfix (private resolv.conf)"))
            else:
                notes.append("100 domains: kiln does MX lookups through dnsmasq at %s; POSTFIX "
                             "USES TRANSPORT MAPS (dnsmasq could not listen on port 53)" % dns.server)
        print("kiln vs Postfix end to end: %d messages per run, 20 sessions, medians of %d "
              "alternating runs, durable spools (fsync before 250)" % (a.messages, a.runs))
        if a.dkim != "none":
            notes.append("kiln DKIM-signs every message (%s); Postfix does not sign" % a.dkim)
        for note in notes:
            print("  " + note)
        print("  kiln-loadgen: 20 persistent connections, pipelined; smtp-source: one message "
              "per connection", flush=True)
        for load in loads:
            size, ndomains, mx = E2E_LOADS[load]
            for tool in tools:
                res = {"kiln": [], "postfix": [], "ceiling": []}
                for i in range(a.runs):
                    res["kiln"].append(e2e_timed(e2e_run_kiln, fs, dns, tool, a.messages, size,
                                                 ndomains, mx, a.dkim))
                    if not a.no_postfix:
                        res["postfix"].append(e2e_timed(e2e_run_postfix, fs, dns, tool, a.messages,
                                                        size, ndomains, mx))
                    res["ceiling"].append(e2e_timed(e2e_run_ceiling, tool, a.messages, size, ndomains))
                    print("  %s/%s run %d: kiln %.0f, Postfix %s, ceiling %.0f msg/s (%.0f s so far)" % (
                        load, tool, i + 1, res["kiln"][-1]["msg_s"],
                        e2e_fmt(res["postfix"][-1]["msg_s"] if res["postfix"] else None),
                        res["ceiling"][-1]["msg_s"], time.monotonic() - t_start), flush=True)
                    for who in res:
                        if res[who]:
                            e2e_check(who, load, tool, res[who][-1])
                rows.append(e2e_row(load, tool, res))
                raw.append({"load": load, "tool": tool, "runs": res})
    except (KeyboardInterrupt, E2eInterrupted) as e:
        print("bench_e2e: interrupted (%s); cleaned up" % (e or "Ctrl-C"), file=sys.stderr)
        rc = 130
    else:
        rc = 0
    finally:
        if dns:
            dns.stop()
        if fs:
            fs.close()
    if rows:
        e2e_print_table(rows)
        print()
        for note in notes:
            print(note)
        print("total time %.0f s" % (time.monotonic() - t_start))
    if a.json and rows:
        with open(a.json, "w") as f:
            json.dump({"messages": a.messages, "runs": a.runs, "notes": notes, "table": rows,
                       "raw": raw, "total_s": time.monotonic() - t_start}, f, indent=1, default=str)
    return rc


if __name__ == "__main__":
    sys.exit(main())
