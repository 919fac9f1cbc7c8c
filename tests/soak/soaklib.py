"""soaklib.py — shared pieces of kiln's fault runs (tests/soak: crashloop.py, soak.py).

It promises: every process it starts is a child ended by its PID (Child), every wait is
bounded, and the bookkeeping that decides "lost" and "duplicated" is the same for both runs:

- acknowledged: a line in a kiln-loadgen --record file (the client read "250 2.0.0 Ok ID");
  a message whose 250 never arrived (the connection dropped) is not acknowledged;
- delivered: a line in kiln-sink's --record file carrying the message's X-Loadgen-Token;
- bounced: a Bounce event (SES format) whose mail.messageId is the ID of the 250; a 5xx
  from a faulty sink is a legitimate final bounce, not a loss;
- lost: acknowledged, never delivered and never bounced (must be 0);
- duplicated: delivered more than once (counted, with the reason judged by the caller).

kiln-loadgen and kiln-sink are the project's own load tools (SPEC section 6); their
--record options exist for these runs. The DNS server here is hand-written on dnspython
(Debian python3-dnspython) because dnsmasq cannot change MX answers while it runs
(it re-reads hosts files on SIGHUP, not --mx-host)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import kilntest  # noqa: E402  (the integration tests' harness: Kiln, base_config, ...)

SINK = os.path.join(kilntest.BUILDDIR, "kiln-sink")
LOADGEN = os.path.join(kilntest.BUILDDIR, "kiln-loadgen")
TOKEN_HEADER = "X-Loadgen-Token"


def say(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def arm_deadline(seconds):
    """Ends this process (exit 99) if the run lasts past `seconds` (every loop is bounded
    anyway; this is the backstop). Children are ended by the caller's finally blocks only
    when Python gets to run them, so the deadline raises in the main thread first."""
    def on_alarm(signum, frame):
        raise TimeoutError("run exceeded its deadline of %ds" % seconds)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(seconds))


class Child:
    """A child process with its output in a file; ended by PID (SIGTERM, then SIGKILL)."""

    def __init__(self, name, argv, outdir, cwd=None):
        self.name = name
        self.argv = argv
        self.outpath = os.path.join(outdir, name + ".out")
        self.out = open(self.outpath, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=subprocess.STDOUT, cwd=cwd)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def output(self):
        self.out.flush()
        with open(self.outpath, errors="replace") as f:
            return f.read()

    def stop(self, timeout=30):
        """SIGTERM and wait; SIGKILL after timeout. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.out.close()
        return self.proc.returncode


def start_sink(outdir, listen, record, faults, seed):
    """kiln-sink on every HOST:PORT of `listen`, recording each accepted message's token."""
    argv = [SINK, "--record", record, "--record-header", TOKEN_HEADER, "--seed", str(seed),
            "--stats-file", os.path.join(outdir, "sink-stats.json")]
    for l in listen:
        argv += ["-l", l]
    sink = Child("kiln-sink", argv + list(faults), outdir)

    def ready():
        if not sink.alive():
            raise AssertionError("kiln-sink exited: %s" % sink.output())
        return "event=sink.ready" in sink.output()
    kilntest.wait_for(ready, 10, 0.05, "kiln-sink to listen")
    return sink


def sink_stats(sink, outdir):
    """Asks the running sink for its stats (SIGUSR1) and returns them."""
    path = os.path.join(outdir, "sink-stats.json")
    if os.path.exists(path):
        os.unlink(path)
    sink.proc.send_signal(signal.SIGUSR1)
    kilntest.wait_for(lambda: os.path.exists(path), 10, 0.05, "the sink's stats file")
    with open(path) as f:
        return json.load(f)


def start_loadgen(outdir, name, port, record, n, conns, rate, bind=None, prefix=None,
                  domains=1, domain_pattern="dest.test", timeout=10):
    argv = [LOADGEN, "-s", "127.0.0.1:%d" % port, "-n", str(int(n)), "-c", str(conns),
            "--record", record, "--token-prefix", prefix or name, "--timeout", str(timeout),
            "--size", "1500", "--domains", str(domains), "--domain-pattern", domain_pattern,
            "--local-part", (prefix or name) + "-u%d", "--json"]
    if rate:
        argv += ["--rate", "%.3f" % rate]
    if bind:
        argv += ["--bind", bind]
    return Child(name, argv, outdir)


class LineTail:
    """Reads the complete lines appended to a file since the last call (a partial last line
    waits for the next call)."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.partial = b""

    def new_lines(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        return [l.decode("utf-8", "replace") for l in lines if l]


class Ledger:
    """Acknowledgements, deliveries and bounces, read incrementally from the record files
    and the events file; answers lost / duplicated at any moment."""

    def __init__(self, sink_record, events_path):
        self.lock = threading.Lock()
        self.ack_tails = {}
        self.sink_tail = LineTail(sink_record)
        self.events_path = events_path
        self.event_tail = LineTail(events_path)
        self.acked = {}           # token -> (ack wall ms, queue id)
        self.delivered = {}       # token -> [sink accept wall ms, ...]
        self.delivered_from = {}  # token -> [source IP of each of those deliveries]
        self.bounced_ids = set()  # queue ids with a Bounce event
        self.events = {}          # eventType -> count
        self.rotated = 0

    def add_ack_file(self, path):
        self.ack_tails.setdefault(path, LineTail(path))

    def poll(self):
        with self.lock:
            for tail in self.ack_tails.values():
                for line in tail.new_lines():
                    ms, tok, qid = line.split(" ", 2)
                    self.acked[tok] = (int(ms), qid)
            for line in self.sink_tail.new_lines():
                ms, ip, _nrcpts, tok = line.split(" ", 3)
                self.delivered.setdefault(tok, []).append(int(ms))
                self.delivered_from.setdefault(tok, []).append(ip)
            self._read_events(self.event_tail)

    def _read_events(self, tail):
        for line in tail.new_lines():
            i = line.find('"eventType"')
            et = line[i + 11:].split('"')[1] if i >= 0 else "?"
            self.events[et] = self.events.get(et, 0) + 1
            if et == "Bounce":
                self.bounced_ids.add(json.loads(line)["mail"]["messageId"])

    def rotate_events(self, timeout=30):
        """Renames the events file away (kilnd reopens the path at its next drain, as after
        logrotate), reads the rest of the old file once kilnd writes to the new one, and
        deletes it: the events of a long run never fill the disk."""
        old = self.events_path + ".rotated"
        with self.lock:
            if not os.path.exists(self.events_path):
                return False
            os.rename(self.events_path, old)
            tail = self.event_tail
            self.event_tail = LineTail(self.events_path)
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.events_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)       # a drain that started before the rename finishes writing
        with self.lock:
            tail.path = old
            self._read_events(tail)
            if tail.partial:
                raise AssertionError("rotated events file ends in a partial line")
            os.unlink(old)
            self.rotated += 1
        return True

    def unsettled(self):
        """Acknowledged tokens neither delivered nor bounced (yet)."""
        with self.lock:
            return [t for t, (_, qid) in self.acked.items()
                    if t not in self.delivered and qid not in self.bounced_ids]

    def counts(self):
        with self.lock:
            acked = set(self.acked)
            delivered = acked & set(self.delivered)
            bounced = {t for t, (_, qid) in self.acked.items() if qid in self.bounced_ids}
            dups = {t: v for t, v in self.delivered.items() if len(v) > 1}
            return {
                "acknowledged": len(acked),
                "delivered": len(delivered),
                "bounced": len(bounced - delivered),
                "delivered_and_bounced": len(bounced & delivered),
                "lost": len(acked - delivered - bounced),
                "duplicated": len(dups),
                "delivered_unacknowledged": len(set(self.delivered) - acked),
            }

    def total_deliveries(self):
        """Every acceptance at the sink, copies included."""
        with self.lock:
            return sum(len(v) for v in self.delivered.values())

    def duplicates(self):
        with self.lock:
            return {t: sorted(v) for t, v in self.delivered.items() if len(v) > 1}

    def latencies_ms(self):
        """Acknowledgement (250 read by the client) to first acceptance at the sink."""
        with self.lock:
            return sorted(self.delivered[t][0] - ms for t, (ms, _) in self.acked.items()
                          if t in self.delivered)


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(-(-p * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


def rss_kb(pid):
    """(VmRSS, VmHWM) of pid in kB from /proc, or (None, None) once it is gone."""
    vals = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    vals[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return vals.get("VmRSS"), vals.get("VmHWM")


def fast_config(k, ips, **delivery):
    """Turns a base_config() into one that delivers as fast as kiln can: warm IPs, no
    shaping rate, no quota, a quiet log."""
    cfg = k.cfg
    cfg["ips"] = ips
    cfg["server"]["log_level"] = "warning"
    cfg["shaping"] = {"default": {"connections": 20, "messages_per_connection": 1000,
                                  "rate": "-1"}}
    cfg["delivery"].update(delivery)
    cfg["configuration_sets"][0]["events"] = [{"type": "file", "path": "./ev/events-txn.jsonl"}]
    evdir = os.path.join(k.tmp, "ev")
    os.makedirs(evdir, exist_ok=True)
    if kilntest.RUN_AS:   # kilnd re-creates the events file after a rotation as that user
        import pwd
        pw = pwd.getpwnam(kilntest.RUN_AS)
        os.chown(evdir, pw.pw_uid, pw.pw_gid)
    k.write_config()
    return os.path.join(evdir, "events-txn.jsonl")


def summary(title, fields, json_path):
    """Prints the figures as one block to paste into a note and writes them as JSON."""
    width = max(len(k) for k in fields)
    lines = ["", "==== %s ====" % title]
    for key, val in fields.items():
        lines.append("  %-*s  %s" % (width, key, json.dumps(val) if isinstance(val, (dict, list)) else val))
    lines.append("=" * (len(title) + 10))
    print("\n".join(lines), flush=True)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(fields, f, indent=2, sort_keys=False)
            f.write("\n")
        print("figures written to %s" % os.path.abspath(json_path), flush=True)


def cleanup_dir(path, keep=False):
    if path and not keep:
        shutil.rmtree(path, ignore_errors=True)
    elif path:
        say("kept %s" % path)


def udp_port():
    return kilntest.free_udp_port()


def tcp_port(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port
