"""bench_scale.py — the scheduler at scale (issues 5 and 10): kilnd holding millions of
queued recipients over many destination domains (default 1,000,000 over 10,000; the issue 10
run is --recipients 10000000 --domains 100000).

Everything goes through the product: kiln-loadgen submits messages of 50 recipients each
(recipient i is user<i>@d<i mod DOMAINS>.test) to a kilnd with a durable spool. While it
fills, no recipient can leave: kilnd's DNS server is a UDP socket this script holds open and
never answers, so the first lookups hang (dns.timeout 10m, far longer than the fill) and
every other recipient stays QUEUED. No recipient is attempted, deferred or written twice;
the spool holds exactly what was accepted. (At 10,000,000 recipients the fill takes about
5 minutes, so no shortcut writes the spool directly.)

Figures, in this order:
  1. enqueue rate: recipients accepted per second (kiln-loadgen's wall time, 250 after DATA
     means committed to the spool), messages per second, and kilnd's CPU per recipient;
  2. kilnd memory with the full queue: VmRSS and VmHWM from /proc, and the spool's size;
  3. stop time (SIGTERM to exit) and restart time: a new kilnd on the same spool, from its
     start until it sends an SMTP banner, and until `kilnctl status` reports every
     recipient (both polled every 5 ms); VmRSS/VmHWM right then and 10 s later;
  4. kilnctl queue on the full queue: how long until it answers, its size, and the longest
     SMTP NOOP round trip on an open session meanwhile (NOOPs every 10 ms: the loop's
     longest stall while the report is made);
  5. scheduling throughput: the config is switched (kilnctl reload) to a dnsmasq that
     answers every *.test name with 127.0.0.21 (no MX: the A fallback), where kiln-sink
     listens; for the next 30 s, recipients and messages delivered per second (kiln-sink's
     counts, once a second) and recipients leaving the queue per second (kilnctl status).
     Each recipient here is its own delivery decision (50 recipients of a message go to
     50 different domains), so recipients delivered per second is the number of
     scheduling decisions per second that led to a delivery. Halfway, kilnctl queue runs
     again: its answer time, the longest NOOP round trip meanwhile, and the deliveries in
     the seconds it ran show whether it held up SMTP or delivery.

  python3 tests/bench/bench_scale.py [--recipients 1000000] [--domains 10000]
      [--rcpts-per-msg 50] [--connections 20] [--size 1024] [--measure 30] [--keep]
  (make bench runs it with the defaults; a smaller --recipients makes a quick run)

Every wait is bounded, every process this script starts is ended by its PID, and the
temporary directory is removed (unless --keep)."""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from kilntest import BUILDDIR, DNSMASQ, KILNCTL, KILND, Dnsmasq, Kiln, free_port, wait_for  # noqa: E402

LOADGEN = os.path.join(BUILDDIR, "kiln-loadgen")
SINK = os.path.join(BUILDDIR, "kiln-sink")
SINK_ADDR = "127.0.0.21"
DEADLINE_S = 3600          # the whole run; it aborts (and cleans up) past this


def status_kb(pid):
    """VmRSS and VmHWM of pid in KiB (0, 0 if it is gone)."""
    out = {"VmRSS": 0, "VmHWM": 0}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k = line.split(":", 1)[0]
                if k in out:
                    out[k] = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out["VmRSS"], out["VmHWM"]


def cpu_s(pid):
    """User + system CPU seconds of pid so far."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def mib(kb):
    return kb / 1024.0


def spool_bytes(spool):
    total = 0
    for name in os.listdir(spool):
        if name.startswith("kiln.db"):
            total += os.path.getsize(os.path.join(spool, name))
    return total


class Sink:
    """kiln-sink on SINK_ADDR:port, writing its counts to a file every second."""

    def __init__(self, tmp, port):
        self.stats = os.path.join(tmp, "sink-stats.json")
        self.port = port
        self.proc = subprocess.Popen([SINK, "-l", "%s:%d" % (SINK_ADDR, port), "--stats-file",
                                      self.stats, "--stats-interval", "1"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._up, 10, 0.1, "kiln-sink to listen on %s:%d" % (SINK_ADDR, port))

    def _up(self):
        if self.proc.poll() is not None:
            raise AssertionError("kiln-sink exited with %s" % self.proc.returncode)
        try:
            with socket.create_connection((SINK_ADDR, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def counts(self):
        """(recipients, messages) accepted so far, from the last stats file."""
        try:
            with open(self.stats) as f:
                d = json.load(f)
            return d.get("recipients", 0), d.get("messages", 0)
        except (FileNotFoundError, ValueError):
            return 0, 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def status(k):
    """kilnctl status as a dict, or None if it does not answer (in 60 s)."""
    try:
        p = k.ctl("status", expect_ok=False, timeout=60)
    except subprocess.TimeoutExpired:
        return None
    return p if isinstance(p, dict) else None


def queue_size(k):
    """Queued + Deferred from kilnctl status, or None if it does not answer."""
    st = status(k)
    return st["Queued"] + st["Deferred"] if st else None


def on_deadline(signum, frame):
    raise TimeoutError("bench_scale ran past %d s" % DEADLINE_S)


def fill(k, a):
    nmsg = a.recipients // a.rcpts_per_msg
    cmd = [LOADGEN, "-s", "127.0.0.1:%d" % k.port, "-n", str(nmsg), "-c", str(a.connections),
           "--size", str(a.size), "--rcpts-per-msg", str(a.rcpts_per_msg), "--domains",
           str(a.domains), "--from", "app@example.test", "--json", "--timeout", "120"]
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=DEADLINE_S)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError("kiln-loadgen failed (%d): %s" % (p.returncode, p.stderr[-2000:]))
    return json.loads(p.stdout), wall


def start_timed(k, want, timeout=900):
    """Starts kilnd on k's spool; seconds until its SMTP banner and until kilnctl status
    counts want recipients (each polled every 5 ms), and the count then."""
    k.stderr = open(os.path.join(k.tmp, "kilnd.stderr"), "ab")
    t0 = time.monotonic()
    k.proc = subprocess.Popen([KILND, "-c", k.path], stdout=k.stderr, stderr=k.stderr, cwd=k.tmp)
    deadline = t0 + timeout
    t_smtp = t_status = None
    n = None
    while time.monotonic() < deadline and (t_smtp is None or t_status is None):
        if k.proc.poll() is not None:
            raise RuntimeError("kilnd exited with %s at start" % k.proc.returncode)
        if t_smtp is None:
            try:
                with socket.create_connection(("127.0.0.1", k.port), timeout=5) as c:
                    if c.recv(512).startswith(b"220"):
                        t_smtp = time.monotonic() - t0
            except OSError:
                pass
        if t_status is None and os.path.exists(k.socket_path):
            p = subprocess.run([KILNCTL, "-s", k.socket_path, "--json", "status"],
                               capture_output=True, text=True, timeout=60)
            if p.returncode == 0:
                st = json.loads(p.stdout)
                if st["Queued"] + st["Deferred"] >= want:
                    n = st["Queued"] + st["Deferred"]
                    t_status = time.monotonic() - t0
        time.sleep(0.005)
    if t_smtp is None or t_status is None:
        raise RuntimeError("kilnd did not answer within %d s after a restart" % timeout)
    return t_smtp, t_status, n


class NoopProbe:
    """An SMTP session sending NOOP every 10 ms from a thread; the longest round trip
    between start() and stop() is the loop's longest stall in that time."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.f = self.s.makefile("rb")
        self.f.readline()
        self.s.sendall(b"EHLO probe.test\r\n")
        while self.f.readline()[3:4] != b" ":
            pass
        self.rtts = []
        self.stopping = threading.Event()
        self.t = threading.Thread(target=self._run)

    def _run(self):
        while not self.stopping.is_set():
            t = time.monotonic()
            self.s.sendall(b"NOOP\r\n")
            if not self.f.readline():
                break
            self.rtts.append(time.monotonic() - t)
            time.sleep(0.01)

    def start(self):
        self.t.start()
        return self

    def stop(self):
        self.stopping.set()
        self.t.join(130)
        self.s.close()
        return max(self.rtts) if self.rtts else float("nan"), len(self.rtts)


def timed_queue(k):
    """kilnctl queue --json: (seconds, answer bytes, rows, recipients listed, max NOOP rtt,
    NOOPs), with a NOOP probe running meanwhile."""
    probe = NoopProbe(k.port).start()
    time.sleep(0.2)
    t0 = time.monotonic()
    p = subprocess.run([KILNCTL, "-s", k.socket_path, "--json", "queue"], capture_output=True,
                       timeout=1800)
    el = time.monotonic() - t0
    rtt, n = probe.stop()
    if p.returncode != 0:
        raise RuntimeError("kilnctl queue failed: %s" % p.stderr[-500:])
    q = json.loads(p.stdout)
    return el, len(p.stdout), len(q["Queue"]), q["Queued"] + q["Deferred"], rtt, n


def stop_kilnd(k):
    """SIGTERM; seconds until it exited (kill -9 after 120 s)."""
    t0 = time.monotonic()
    k.proc.send_signal(signal.SIGTERM)
    try:
        rc = k.proc.wait(120)
    except subprocess.TimeoutExpired:
        k.proc.kill()
        k.proc.wait(10)
        rc = "killed after 120 s"
    return time.monotonic() - t0, rc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipients", type=int, default=1000000)
    ap.add_argument("--domains", type=int, default=10000)
    ap.add_argument("--rcpts-per-msg", type=int, default=50)
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--measure", type=int, default=30, help="seconds of delivery measured")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = ap.parse_args()
    if DNSMASQ is None:
        print("bench_scale: dnsmasq is not installed (Debian package dnsmasq-base); skipped")
        return 0
    signal.signal(signal.SIGALRM, on_deadline)
    signal.alarm(DEADLINE_S)
    want = a.recipients // a.rcpts_per_msg * a.rcpts_per_msg

    tmp = tempfile.mkdtemp(prefix="kiln-scale-")
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blackhole.bind(("127.0.0.1", 0))        # receives kilnd's queries and never answers
    sink = dns = k = None
    try:
        sink = Sink(tmp, free_port(SINK_ADDR))
        dns = Dnsmasq(["--address=/test/%s" % SINK_ADDR])
        dns.__enter__()
        k = Kiln(tmp=tmp)
        k.cfg["server"]["log_level"] = "warning"
        k.cfg["dns"] = {"servers": ["127.0.0.1:%d" % blackhole.getsockname()[1]], "timeout": "10m"}
        k.cfg["delivery"]["remote_port"] = sink.port
        k.cfg["delivery"]["retry"] = {"first": "1m", "max_interval": "1h", "factor": 2}
        k.cfg["submission"]["max_recipients"] = max(50, a.rcpts_per_msg)
        k.cfg["submission"]["max_junk_commands"] = 100000000   # the NOOP probes
        k.cfg["ips"] = [{"address": ip, "zone": z, "pool": "transactional", "warmup": "done"}
                        for ip, z in (("127.0.0.10", "az1"), ("127.0.0.11", "az2"),
                                      ("127.0.0.12", "az3"))]
        # warm IPs with no daily cap that matters here, and no hourly pacing
        k.cfg["warmup"] = {"target": 1000000000, "pacing": 0}
        k.write_config()

        print("scale benchmark: %d recipients (%d messages x %d) over %d domains, %d-byte "
              "messages, %d connections, durable spool, release build %s"
              % (want, want // a.rcpts_per_msg, a.rcpts_per_msg, a.domains, a.size,
                 a.connections, BUILDDIR))
        sys.stdout.flush()

        # 1. fill
        k.start(timeout=60)
        pid = k.proc.pid
        c0 = cpu_s(pid)
        lg, wall = fill(k, a)
        fill_cpu = cpu_s(pid) - c0
        accepted = lg["accepted"] * a.rcpts_per_msg
        q = wait_for(lambda: (lambda n: n if n is not None and n >= accepted else None)(
            queue_size(k)), 120, 0.5, "kilnctl status to count the accepted recipients")
        rss, hwm = status_kb(pid)
        st = status(k) or {}
        print("\n1. enqueue")
        print("  messages accepted         %d of %d (rejected %d, errors %d)"
              % (lg["accepted"], want // a.rcpts_per_msg, lg["rejected"], lg["errors"]))
        print("  recipients accepted/s     %.0f  (%d in %.1f s; %.0f messages/s; "
              "submission latency p50 %.1f ms, p99 %.1f ms)"
              % (accepted / wall, accepted, wall, lg["accepted"] / wall,
                 lg["latency_ms"]["p50"], lg["latency_ms"]["p99"]))
        print("  kilnd CPU                 %.1f us per recipient (%.1f s)"
              % (1e6 * fill_cpu / max(accepted, 1), fill_cpu))
        print("2. full queue: %d recipients (kilnctl status: Queued %s, Deferred %s)"
              % (q, st.get("Queued"), st.get("Deferred")))
        print("  kilnd VmRSS %.0f MiB, VmHWM %.0f MiB; spool %.0f MiB on disk"
              % (mib(rss), mib(hwm), spool_bytes(k.spool) / 1048576.0))
        sys.stdout.flush()

        # 3. stop and restart on the same spool
        stop_s, rc = stop_kilnd(k)
        k.stderr.close()
        t_listen, t_status, q2 = start_timed(k, q)
        pid = k.proc.pid
        rss0, hwm0 = status_kb(pid)
        time.sleep(10)
        rss1, hwm1 = status_kb(pid)
        print("3. restart with the full spool")
        print("  stop (SIGTERM to exit)    %.2f s, exit status %s" % (stop_s, rc))
        print("  restart: SMTP banner after %.2f s, kilnctl status after %.2f s (reports %d queued)"
              % (t_listen, t_status, q2))
        print("  kilnd VmRSS %.0f MiB (VmHWM %.0f MiB) then; 10 s later VmRSS %.0f MiB, VmHWM %.0f MiB"
              % (mib(rss0), mib(hwm0), mib(rss1), mib(hwm1)))
        sys.stdout.flush()

        # 4. kilnctl queue on the full queue
        el, nbytes, nrows, listed, rtt, nnoop = timed_queue(k)
        print("4. kilnctl queue on the full queue")
        print("  answered after %.2f s: %d rows, %.1f MB of JSON, %d recipients listed"
              % (el, nrows, nbytes / 1e6, listed))
        print("  longest SMTP NOOP round trip meanwhile %.1f ms (%d NOOPs)" % (1000 * rtt, nnoop))
        rss2, hwm2 = status_kb(pid)
        print("  kilnd VmRSS %.0f MiB, VmHWM %.0f MiB after it" % (mib(rss2), mib(hwm2)))
        sys.stdout.flush()

        # 5. open the way out and measure delivery
        k.cfg["dns"] = {"servers": ["127.0.0.1:%d" % dns.port], "timeout": "2s"}
        k.write_config()
        r0, m0 = sink.counts()
        q0 = queue_size(k)
        k.ctl("reload", timeout=60)
        t0 = time.monotonic()
        c0 = cpu_s(pid)
        samples = []
        peak_rss = 0
        qrun = {}

        def queue_midway():
            qrun["t0"] = time.monotonic() - t0
            qrun["res"] = timed_queue(k)
            qrun["t1"] = time.monotonic() - t0
        qthread = threading.Thread(target=queue_midway)
        while time.monotonic() - t0 < a.measure:
            time.sleep(1)
            r, m = sink.counts()
            qn = queue_size(k)
            peak_rss = max(peak_rss, status_kb(pid)[0])
            samples.append((time.monotonic() - t0, r - r0, m - m0, qn))
            if not qthread.is_alive() and "t0" not in qrun and time.monotonic() - t0 >= a.measure / 2:
                qthread.start()
        qthread.join(1800)
        el, rd, md, ql = samples[-1]
        cpu = cpu_s(pid) - c0
        per_s = [samples[0][1]] + [samples[i][1] - samples[i - 1][1] for i in range(1, len(samples))]
        print("5. delivery for %.0f s after the reload (to kiln-sink via dnsmasq, A fallback)" % el)
        print("  recipients delivered/s   %.0f  (%d recipients, %d messages; per second: min %d, "
              "max %d)" % (rd / el, rd, md, min(per_s), max(per_s)))
        print("  per second: %s" % " ".join(str(n) for n in per_s))
        if "res" in qrun:
            qel, _, qrows, _, qrtt, qn = qrun["res"]
            during = [per_s[i] for i in range(len(per_s))
                      if samples[i][0] >= qrun["t0"] and samples[i][0] - 1 <= qrun["t1"]]
            print("  kilnctl queue from %.0f s to %.0f s: answered after %.2f s (%d rows); longest NOOP "
                  "round trip %.1f ms; delivered per second meanwhile: %s"
                  % (qrun["t0"], qrun["t1"], qel, qrows, 1000 * qrtt,
                     " ".join(str(n) for n in during) or "-"))
        print("  kilnd CPU %.0f %% of one core" % (100 * cpu / el))
        if q0 is not None and ql is not None:
            print("  queue left/s             %.0f  (Queued+Deferred %d -> %d)"
                  % ((q0 - ql) / el, q0, ql))
        rss2, hwm2 = status_kb(pid)
        print("  kilnd VmRSS %.0f MiB at the end (peak sampled %.0f MiB), VmHWM %.0f MiB"
              % (mib(rss2), mib(peak_rss), mib(hwm2)))
        stop_s, rc = stop_kilnd(k)
        print("  stop (SIGTERM to exit)    %.2f s, exit status %s" % (stop_s, rc))
        return 0
    finally:
        signal.alarm(0)
        if k is not None:
            k.kill9()
            if getattr(k, "stderr", None):
                k.stderr.close()
        if dns is not None:
            dns.__exit__(None, None, None)
        if sink is not None:
            sink.stop()
        blackhole.close()
        if a.keep:
            print("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
