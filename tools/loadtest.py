"""loadtest.py — the body of tools/loadtest.sh (see there and README "Load testing").

What it does, in order:
  1. reads the config (default conf/examples/loadtest.yaml; --config FILE) and writes a
     copy into the run directory (a fresh /tmp/kiln-loadtest-XXXX, or --keep-dir DIR) with
     the spool, log, control socket and every set's events (events-SET.jsonl) there,
     submission.listen on a free 127.0.0.1 port, no api section, and one route per
     generated domain d0.test .. dD-1.test spread over the hosts of the config's routes
     (loopback addresses: the sinks), all at one free port; started as root, server.user
     nobody (kilnd refuses root without it);
  2. starts one kiln-sink listening on each of those hosts (--stats-file sink-stats.json
     written every 0.5 s, --record sink-record.txt keyed by X-Loadgen-Token, the --faults
     as --random-defer/--random-reject/--random-throttle), then kilnd;
  3. runs one kiln-loadgen per set of --mix in parallel (X-SES-CONFIGURATION-SET: SET, its
     share of the messages and connections, tokens "lt.SET-<n>", recipients u<n>.SET@dK.test,
     --record loadgen-SET.rec), with a progress line on stderr about every second
     (accepted from the loadgen records, delivered from the sink's stats file);
  4. waits (at most --timeout s after the injection) until every accepted message is at
     the sink or bounced, then until kilnd's events account for all of them;
  5. reads kilnd's CPU time and peak RSS (/proc/PID/stat, VmHWM), stops kilnd and the sink
     (SIGTERM: the sink writes its final stats), and prints the summary.

Where each figure comes from: accepted/rejected from kiln-loadgen's reports; delivered and
per IP from the sink's stats file (by_client); per set and 250->delivery from joining the
loadgen records (token -> time of the 250) with the sink record (token -> time the sink
accepted it); per pool by mapping each IP to its pool in the config; bounces and deferrals
from kilnd's events files (Bounce and DeliveryDelay events: SES's own record of every
attempt, written from the spool's outbox after commit, so none is missing once the Delivery
and Bounce events account for every accepted message; the log could be turned down by a
user's log_level). Exit status 0 when every accepted message was delivered or bounced, 1
otherwise (with the reason), 2 on bad usage, 130 when interrupted.

One kiln-loadgen per set rather than a per-message set choice inside kiln-loadgen: each
set's acceptance figures stay separate, kiln-loadgen keeps one job, and the sets compete for
kilnd exactly as separate applications would. The price: each set gets at least one
connection of its own."""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(TOP, "conf", "examples", "loadtest.yaml")
FAULTS = {"defer": "--random-defer", "reject": "--random-reject", "throttle": "--random-throttle"}
CLK = os.sysconf("SC_CLK_TCK")


class Usage(Exception):
    """A bad option: printed with the usage hint, exit status 2."""


class Interrupted(Exception):
    pass


def lt_binary(name):
    """kilnd, kiln-sink, kiln-loadgen: in $KILN_BUILDDIR when set, else at the top of this
    checkout (an in-tree build, as tools/demo.py runs them), else on PATH."""
    bd = os.environ.get("KILN_BUILDDIR")
    if bd:
        path = os.path.join(bd, name)
        if not os.access(path, os.X_OK):
            raise SystemExit("loadtest: %s is not in KILN_BUILDDIR=%s: build it there (make %s)"
                             % (name, bd, name))
        return path
    path = os.path.join(TOP, name)
    if os.access(path, os.X_OK):
        return path
    found = shutil.which(name)
    if not found:
        raise SystemExit("loadtest: %s not found in %s or on PATH: build kiln (./configure && make), "
                         "or set KILN_BUILDDIR to your build directory" % (name, TOP))
    return found


# ---------------------------------------------------------------- options

def lt_parse_pairs(text, what, allowed=None):
    """"a=1,b=2.5" -> [("a", 1.0), ("b", 2.5)], each value 0..100."""
    out = []
    for part in text.split(","):
        name, eq, val = part.strip().partition("=")
        if not eq or not name:
            raise Usage("%s wants NAME=PERCENT[,NAME=PERCENT...] (got '%s')" % (what, text))
        if allowed is not None and name not in allowed:
            raise Usage("%s: unknown '%s' (one of %s)" % (what, name, ", ".join(allowed)))
        try:
            v = float(val)
        except ValueError:
            raise Usage("%s: '%s' is not a percentage" % (what, val))
        if not 0 <= v <= 100:
            raise Usage("%s: %s=%s is not within 0..100" % (what, name, val))
        if name in (n for n, _ in out):
            raise Usage("%s: %s given twice" % (what, name))
        out.append((name, v))
    return out


def lt_options(argv):
    ap = argparse.ArgumentParser(
        prog="tools/loadtest.sh", description="Load-tests kilnd against kiln-sink on loopback "
        "and prints a summary (README \"Load testing\").")
    ap.add_argument("--messages", type=int, default=2000, metavar="N", help="messages in all (2000)")
    ap.add_argument("--connections", type=int, default=20, metavar="C",
                    help="SMTP connections in all, shared by the sets of --mix (20)")
    ap.add_argument("--size", type=int, default=1024, metavar="BYTES", help="message size (1024)")
    ap.add_argument("--domains", type=int, default=3, metavar="D",
                    help="recipient domains d0.test .. dD-1.test, one route each (3)")
    ap.add_argument("--mix", metavar="SET=PCT,...",
                    help="share of the messages per configuration set, adding up to 100 "
                    "(default: every set of the config, equal shares)")
    ap.add_argument("--faults", default="", metavar="defer=P,reject=P,throttle=P",
                    help="percent of RCPTs the sink answers 451 (defer), 550 (reject) or 421 "
                    "and close (throttle)")
    ap.add_argument("--seed", type=int, metavar="N", help="seed of the sink's random faults")
    ap.add_argument("--config", default=DEFAULT_CONFIG, metavar="FILE",
                    help="kiln config to test (default conf/examples/loadtest.yaml)")
    ap.add_argument("--keep-dir", metavar="DIR",
                    help="run in DIR (new or empty) and keep it; default: a temporary "
                    "directory, removed after a successful run")
    ap.add_argument("--timeout", type=float, default=120, metavar="S",
                    help="seconds to wait for deliveries after the injection (120)")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    a = ap.parse_args(argv)
    for name, lo in (("messages", 1), ("connections", 1), ("size", 200), ("domains", 1)):
        if getattr(a, name) < lo:
            ap.error("--%s wants at least %d" % (name, lo))
    try:
        a.fault_list = lt_parse_pairs(a.faults, "--faults", list(FAULTS)) if a.faults else []
    except Usage as e:
        ap.error(str(e))
    return a, ap


# ---------------------------------------------------------------- the config copy

def lt_free_port(hosts):
    """A TCP port free on every host."""
    for _ in range(50):
        s = socket.socket()
        s.bind((hosts[0], 0))
        port = s.getsockname()[1]
        s.close()
        ok = True
        for h in hosts[1:]:
            t = socket.socket()
            try:
                t.bind((h, port))
            except OSError:
                ok = False
            finally:
                t.close()
        if ok:
            return port
    raise SystemExit("loadtest: no port free on all of %s" % ", ".join(hosts))


def lt_yaml_load(f):
    """PyYAML's safe loader (python3-yaml) or, without it, ruamel.yaml's pure-Python safe
    loader (python3-ruamel.yaml, which awscli pulls in; its C loader refuses the plain
    "127.0.0.1:2587" in a flow sequence that libyaml, kiln's parser, accepts)."""
    try:
        import yaml
        return yaml.safe_load(f)
    except ImportError:
        pass
    try:
        from ruamel.yaml import YAML
    except ImportError:
        raise SystemExit("loadtest: needs a YAML module for Python: python3-yaml or "
                         "python3-ruamel.yaml")
    return YAML(typ="safe", pure=True).load(f)


def lt_load_config(path):
    try:
        with open(path) as f:
            cfg = lt_yaml_load(f)
    except SystemExit:
        raise
    except Exception as e:        # OSError, or either module's parse error
        raise SystemExit("loadtest: cannot read %s: %s" % (path, e))
    if not isinstance(cfg, dict) or not cfg.get("configuration_sets") or not cfg.get("ips"):
        raise SystemExit("loadtest: %s has no configuration_sets or ips" % path)
    return cfg


def lt_prepare_config(cfg, a, rundir):
    """Rewrites cfg in place for this run (see the file comment); returns (sink hosts, sink
    port, submission port, {set: events file})."""
    hosts = []
    for r in cfg.get("routes") or []:
        h = str(r.get("host", ""))
        if h not in hosts:
            hosts.append(h)
    hosts = hosts or ["127.0.0.30"]
    bad = [h for h in hosts if not h.startswith("127.")]
    if bad:
        raise SystemExit("loadtest: the routes of %s name %s: the sinks listen there, so they "
                         "must be loopback addresses (127.x.y.z)" % (a.config, ", ".join(bad)))
    sink_port = lt_free_port(hosts)
    smtp_port = lt_free_port(["127.0.0.1"])
    server = cfg.setdefault("server", {})
    server["spool"] = os.path.join(rundir, "spool")
    server["log"] = os.path.join(rundir, "kilnd.log")
    server.pop("control_socket", None)
    if os.geteuid() == 0:
        server["user"] = "nobody"
        server.pop("group", None)
    sub = cfg.setdefault("submission", {})
    sub["listen"] = ["127.0.0.1:%d" % smtp_port]
    trusted = sub.setdefault("trusted_networks", [])
    if not any(str(t).startswith("127.") for t in trusted):
        trusted.append("127.0.0.1/32")
    cfg.pop("api", None)
    cfg.setdefault("delivery", {})["remote_port"] = sink_port
    cfg["routes"] = [{"domain": "d%d.test" % i, "host": hosts[i % len(hosts)], "port": sink_port}
                     for i in range(a.domains)]
    events = {}
    for s in cfg["configuration_sets"]:
        events[s["name"]] = os.path.join(rundir, "events-%s.jsonl" % s["name"])
        s["events"] = [{"type": "file", "path": events[s["name"]]}]
    return hosts, sink_port, smtp_port, events


def lt_shares(a, sets):
    """[(set, messages, connections, percent)] from --mix (default: equal shares of every set)."""
    if a.mix:
        mix = lt_parse_pairs(a.mix, "--mix")
        unknown = [n for n, _ in mix if n not in sets]
        if unknown:
            raise Usage("--mix: %s not a configuration set of %s (it has %s)"
                        % (", ".join(unknown), a.config, ", ".join(sets)))
        if abs(sum(p for _, p in mix) - 100) > 0.01:
            raise Usage("--mix: the percentages add up to %g, not 100" % sum(p for _, p in mix))
    else:
        mix = [(n, 100.0 / len(sets)) for n in sets]
    exact = [(n, a.messages * p / 100.0) for n, p in mix]
    counts = {n: int(x) for n, x in exact}
    rest = a.messages - sum(counts.values())
    for n, x in sorted(exact, key=lambda e: e[1] - int(e[1]), reverse=True)[:rest]:
        counts[n] += 1
    out = []
    for n, p in mix:
        if counts[n]:
            conns = min(counts[n], max(1, int(round(a.connections * p / 100.0))))
            out.append((n, counts[n], conns, p))
    return out


# ---------------------------------------------------------------- processes and files

class LtProcs:
    """Every child this run started, ended by PID (SIGTERM, then SIGKILL)."""

    def __init__(self):
        self.procs = []

    def start(self, args, log, **kw):
        with open(log, "ab") as f:
            p = subprocess.Popen(args, stdout=kw.pop("stdout", f), stderr=f,
                                 start_new_session=True, **kw)
        self.procs.append(p)
        return p

    @staticmethod
    def stop(p, timeout=20):
        if p is None or p.poll() is not None:
            return p.returncode if p else None
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
            return None

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)


class LtLines:
    """Reads the new complete lines of a growing file."""

    def __init__(self, path):
        self.path, self.pos, self.part = path, 0, b""

    def read(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return []
        self.pos += len(data)
        data = self.part + data
        lines = data.split(b"\n")
        self.part = lines.pop()
        return [l.decode("utf-8", "replace") for l in lines if l.strip()]


class LtEvents:
    """kilnd's events, all sets: delivered and bounced recipients, deferrals by reason."""

    def __init__(self, files):
        self.readers = {s: LtLines(p) for s, p in files.items()}
        self.delivered = self.bounced = 0
        self.bounced_by_set = {s: 0 for s in files}
        self.deferred_by_reason = {}

    def poll(self):
        for s, r in self.readers.items():
            for line in r.read():
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                t = e.get("eventType")
                if t == "Delivery":
                    self.delivered += len(e["delivery"].get("recipients", []))
                elif t == "Bounce":
                    n = len(e["bounce"].get("bouncedRecipients", []))
                    self.bounced += n
                    self.bounced_by_set[s] += n
                elif t == "DeliveryDelay":
                    d = e["deliveryDelay"]
                    for r2 in d.get("delayedRecipients", []):
                        diag = r2.get("diagnosticCode") or r2.get("status", "")
                        if diag.startswith("smtp;"):      # the remote reply, as it was
                            diag = re.sub(r"^smtp;\s*", "", diag)
                        else:    # kiln's own reason; its detail in (...) varies by the second
                            diag = re.sub(r"\s*\(.*\)$", "", diag)
                        key = "%s: %s" % (d.get("delayType", "?"), diag)
                        self.deferred_by_reason[key] = self.deferred_by_reason.get(key, 0) + 1
        return self


def lt_read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def lt_tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except FileNotFoundError:
        return ""


def lt_port_open(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.settimeout(1)
            return s.recv(3) == b"220"
    except OSError:
        return False


def lt_wait_up(proc, host, port, what, logs, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit("loadtest: %s exited with status %s at start:\n%s" % (
                what, proc.returncode, "".join(lt_tail(l) for l in logs)))
        if lt_port_open(host, port):
            return
        time.sleep(0.1)
    raise SystemExit("loadtest: %s did not answer on %s:%d within %ds" % (what, host, port, timeout))


def lt_proc_cpu_rss(pid):
    """(CPU seconds of all threads, peak RSS in kB) of a live process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK
        hwm = 0
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        return cpu, hwm
    except (OSError, IndexError, ValueError):
        return None, None


def lt_percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    rank = max(1, min(len(sorted_vals), -(-len(sorted_vals) * p // 100)))
    return sorted_vals[int(rank) - 1]


# ---------------------------------------------------------------- the run

class LtRun:
    def __init__(self, a):
        self.a = a
        self.cfg = lt_load_config(a.config)
        self.sets = [s["name"] for s in self.cfg["configuration_sets"]]
        self.shares = lt_shares(a, self.sets)
        self.pool_of_set = {s["name"]: s.get("pool") for s in self.cfg["configuration_sets"]}
        self.ip_info = {str(i["address"]): (i.get("pool"), i.get("zone")) for i in self.cfg["ips"]}
        self.bin = {n: lt_binary(n) for n in ("kilnd", "kiln-sink", "kiln-loadgen")}
        self.own_dir = not a.keep_dir
        if a.keep_dir:
            if os.path.isdir(a.keep_dir) and os.listdir(a.keep_dir):
                raise Usage("--keep-dir %s is not empty (its files would mix with this run's)"
                            % a.keep_dir)
            os.makedirs(a.keep_dir, exist_ok=True)
            self.dir = os.path.abspath(a.keep_dir)
        else:
            self.dir = tempfile.mkdtemp(prefix="kiln-loadtest-")
        if os.geteuid() == 0:
            os.chmod(self.dir, 0o755)        # kilnd runs as nobody and must reach it
        self.procs = LtProcs()
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()

    def path(self, name):
        return os.path.join(self.dir, name)

    def progress(self, phase, accepted, delivered, bounced, final=False):
        line = "loadtest: %5.1fs %-9s accepted %d/%d  delivered %d  bounced %d" % (
            time.monotonic() - self.t0, phase, accepted, self.a.messages, delivered, bounced)
        if self.tty:
            sys.stderr.write("\r" + line + "\033[K" + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def sink_messages(self):
        st = lt_read_json(self.path("sink-stats.json"))
        return st["messages"] if st else 0

    def run(self):
        a = self.a
        hosts, sink_port, smtp_port, event_files = lt_prepare_config(self.cfg, a, self.dir)
        conf = self.path("kiln.yaml")
        with open(conf, "w") as f:        # YAML is a superset of JSON
            json.dump(self.cfg, f, indent=2)
        sink_args = [self.bin["kiln-sink"], "--stats-file", self.path("sink-stats.json"),
                     "--stats-interval", "0.5", "--record", self.path("sink-record.txt"),
                     "--record-header", "X-Loadgen-Token"]
        for h in hosts:
            sink_args += ["-l", "%s:%d" % (h, sink_port)]
        for name, pct in a.fault_list:
            sink_args += [FAULTS[name], "%g" % pct]
        if a.seed is not None:
            sink_args += ["--seed", str(a.seed)]
        sink = self.procs.start(sink_args, self.path("sink.log"))
        lt_wait_up(sink, hosts[0], sink_port, "kiln-sink", [self.path("sink.log")])
        kilnd = self.procs.start([self.bin["kilnd"], "-c", conf], self.path("kilnd.stderr"),
                                 cwd=self.dir)
        lt_wait_up(kilnd, "127.0.0.1", smtp_port, "kilnd",
                   [self.path("kilnd.stderr"), self.path("kilnd.log")])

        loadgens = []
        t_start_ms = time.time() * 1000
        for name, n, c, _ in self.shares:
            safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)
            args = [self.bin["kiln-loadgen"], "-s", "127.0.0.1:%d" % smtp_port, "-n", str(n),
                    "-c", str(c), "--size", str(a.size), "--domains", str(a.domains),
                    "--set", name, "--token-prefix", "lt." + safe, "--local-part", "u%d." + safe,
                    "--record", self.path("loadgen-%s.rec" % safe), "--json"]
            out = open(self.path("loadgen-%s.json" % safe), "wb")
            loadgens.append((name, safe, self.procs.start(args, self.path("loadgen-%s.err" % safe),
                                                          stdout=out)))
            out.close()
        acks = {safe: LtLines(self.path("loadgen-%s.rec" % safe)) for _, safe, _ in loadgens}
        acked = {safe: 0 for safe in acks}
        events = LtEvents(event_files)
        while any(p.poll() is None for _, _, p in loadgens):
            tick = time.monotonic() + 1
            while time.monotonic() < tick and any(p.poll() is None for _, _, p in loadgens):
                time.sleep(0.05)
            for safe, r in acks.items():
                acked[safe] += len(r.read())
            self.progress("injecting", sum(acked.values()), self.sink_messages(),
                          events.poll().bounced)
        reports = {}
        for name, safe, p in loadgens:
            reports[name] = lt_read_json(self.path("loadgen-%s.json" % safe))
            if reports[name] is None:
                raise SystemExit("loadtest: kiln-loadgen for set %s exited %s without a report:\n%s"
                                 % (name, p.returncode, lt_tail(self.path("loadgen-%s.err" % safe))))
        accepted = sum(r["accepted"] for r in reports.values())
        # the loadgens ran side by side: the injection took as long as the longest of them
        inject_s = max(r["elapsed_s"] for r in reports.values())

        # deliveries: the sink's count plus kilnd's bounces reach the accepted count
        problem = None
        end = time.monotonic() + a.timeout
        next_line = 0
        while True:
            delivered, bounced = self.sink_messages(), events.poll().bounced
            if time.monotonic() >= next_line:
                self.progress("delivering", accepted, delivered, bounced)
                next_line = time.monotonic() + 1
            if delivered + bounced >= accepted or time.monotonic() > end:
                break
            if kilnd.poll() is not None:
                problem = "kilnd exited with status %s during the run (see %s)" % (
                    kilnd.returncode, self.path("kilnd.stderr"))
                break
            time.sleep(0.2)
        # kilnd's events for the same messages (deferrals are written before the delivery)
        ev_end = time.monotonic() + 10
        while events.poll().delivered + events.bounced < accepted and time.monotonic() < ev_end:
            time.sleep(0.2)
        self.progress("done", accepted, self.sink_messages(), events.bounced, final=True)
        cpu, hwm = lt_proc_cpu_rss(kilnd.pid)
        for what, p in (("kilnd", kilnd), ("kiln-sink", sink)):   # the sink writes its final stats
            rc = LtProcs.stop(p)
            if rc != 0 and problem is None:
                problem = "%s exited with status %s after SIGTERM (see %s)" % (
                    what, rc, self.path("kilnd.stderr" if p is kilnd else "sink.log"))
        return self.summarize(reports, events, cpu, hwm, t_start_ms, inject_s, problem)

    def summarize(self, reports, events, cpu, hwm, t_start_ms, inject_s, problem):
        a = self.a
        stats = lt_read_json(self.path("sink-stats.json")) or {}
        per_ip = {ip: c["messages"] for ip, c in sorted(stats.get("by_client", {}).items())
                  if c["messages"]}
        per_pool = {}
        for ip, n in per_ip.items():
            pool = (self.ip_info.get(ip) or ("(not in the config)",))[0]
            per_pool[pool] = per_pool.get(pool, 0) + n
        set_of = {"lt." + re.sub(r"[^A-Za-z0-9_-]", "_", n): n for n, _, _, _ in self.shares}
        ack_ms = {}
        for name, _, _, _ in self.shares:
            safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)
            for line in LtLines(self.path("loadgen-%s.rec" % safe)).read():
                f = line.split()
                ack_ms[f[1]] = int(f[0])
        seen, lat, last_ms = set(), [], t_start_ms
        per_set = {n: 0 for n, _, _, _ in self.shares}
        per_set_ip = {n: {} for n, _, _, _ in self.shares}
        unacked = duplicates = 0
        for line in LtLines(self.path("sink-record.txt")).read():
            f = line.split()
            ms, ip, token = int(f[0]), f[1], f[3]
            last_ms = max(last_ms, ms)
            if token in seen:
                duplicates += 1
                continue
            seen.add(token)
            name = set_of.get(token.rsplit("-", 1)[0])
            if name is not None:
                per_set[name] += 1
                per_set_ip[name][ip] = per_set_ip[name].get(ip, 0) + 1
            if token in ack_ms:
                lat.append(ms - ack_ms[token])
            else:
                unacked += 1
        lat.sort()
        accepted = sum(r["accepted"] for r in reports.values())
        delivered = stats.get("messages", 0)
        rejected_by = {}
        for r in reports.values():
            for k, v in r.get("rejected_by_code", {}).items():
                rejected_by[k] = rejected_by.get(k, 0) + v
        delivered_unique = len(seen) - unacked
        if problem is None and accepted == 0:
            problem = "no message was accepted"
        elif problem is None and delivered_unique + events.bounced < accepted:
            problem = ("%d of %d accepted messages were neither delivered nor bounced within "
                       "--timeout %gs" % (accepted - delivered_unique - events.bounced, accepted,
                                          a.timeout))
        elif problem is None and events.delivered + events.bounced < accepted:
            problem = "kilnd's events account for only %d of %d accepted messages" % (
                events.delivered + events.bounced, accepted)
        elapsed_deliv = (last_ms - t_start_ms) / 1000.0
        s = {
            "messages": a.messages, "connections": a.connections, "size": a.size,
            "domains": a.domains, "mix": {n: p for n, _, _, p in self.shares},
            "faults": dict(a.fault_list),
            "accepted": accepted,
            "rejected": sum(r["rejected"] for r in reports.values()),
            "errors": sum(r["errors"] for r in reports.values()),
            "not_sent": sum(r["not_sent"] for r in reports.values()),
            "rejected_by_code": rejected_by,
            "delivered": delivered, "bounced": events.bounced, "duplicates": duplicates,
            "delivered_not_acknowledged": unacked,
            "accepted_per_s": round(accepted / inject_s, 1) if inject_s > 0 else None,
            "delivered_per_s": round(delivered / elapsed_deliv, 1) if elapsed_deliv > 0 else None,
            "inject_s": round(inject_s, 3), "deliver_s": round(elapsed_deliv, 3),
            "p50_ms": lt_percentile(lat, 50), "p99_ms": lt_percentile(lat, 99),
            "max_ms": lat[-1] if lat else None,
            "per_ip": per_ip, "per_pool": per_pool, "per_set": per_set,
            "per_set_accepted": {n: reports[n]["accepted"] for n in reports},
            "per_set_bounced": {n: events.bounced_by_set.get(n, 0) for n in reports},
            "per_set_ip": per_set_ip,
            "pool_of_set": {n: self.pool_of_set.get(n) for n in reports},
            "pool_of_ip": {ip: (self.ip_info.get(ip) or (None,))[0] for ip in per_ip},
            "deferred": sum(events.deferred_by_reason.values()),
            "deferred_by_reason": dict(sorted(events.deferred_by_reason.items(),
                                              key=lambda kv: -kv[1])),
            "sink_faults": {k: v for k, v in stats.get("faults", {}).items() if v},
            "kilnd_cpu_s": cpu,
            "kilnd_cpu_ms_per_msg": round(cpu * 1000 / accepted, 3) if cpu is not None and accepted else None,
            "kilnd_peak_rss_kb": hwm,
            "why": {n: r["why"] for n, r in reports.items() if r.get("why")},
            "ok": problem is None, "problem": problem,
            "config": os.path.abspath(a.config), "dir": self.dir,
            "sink_stats_file": self.path("sink-stats.json"),
        }
        return s


# ---------------------------------------------------------------- the summary

def lt_fmt(v, unit=""):
    return "-" if v is None else ("%g%s" % (v, unit))


def lt_print_table(s, ip_info):
    out = []
    w = out.append
    w("kiln load test: %d messages of %d bytes over %d connections to %d domains; mix %s; faults %s"
      % (s["messages"], s["size"], s["connections"], s["domains"],
         ",".join("%s=%g" % kv for kv in s["mix"].items()),
         ",".join("%s=%g" % kv for kv in s["faults"].items()) or "none"))
    w("  config             %s (run copy in %s)" % (s["config"], s["dir"]))
    w("  accepted           %-8d %9s/s   rejected %d, errors %d, not sent %d" % (
        s["accepted"], lt_fmt(s["accepted_per_s"]), s["rejected"], s["errors"], s["not_sent"]))
    w("  delivered          %-8d %9s/s   bounced %d%s" % (
        s["delivered"], lt_fmt(s["delivered_per_s"]), s["bounced"],
        ", duplicates %d" % s["duplicates"] if s["duplicates"] else ""))
    w("  250 -> delivery    p50 %s   p99 %s   max %s" % (
        lt_fmt(s["p50_ms"], " ms"), lt_fmt(s["p99_ms"], " ms"), lt_fmt(s["max_ms"], " ms")))
    w("  kilnd              CPU %s (%s per message), peak RSS %s" % (
        lt_fmt(s["kilnd_cpu_s"], " s"), lt_fmt(s["kilnd_cpu_ms_per_msg"], " ms"),
        "-" if not s["kilnd_peak_rss_kb"] else "%.1f MB" % (s["kilnd_peak_rss_kb"] / 1024.0)))
    if s["rejected_by_code"]:
        w("  rejected by reply  " + ", ".join("%s: %d" % kv for kv in s["rejected_by_code"].items()))
    w("")
    w("  %-14s %-14s %9s %9s %9s" % ("set", "pool", "accepted", "delivered", "bounced"))
    for n in s["per_set"]:
        w("  %-14s %-14s %9d %9d %9d" % (n, s["pool_of_set"][n] or "-", s["per_set_accepted"][n],
                                          s["per_set"][n], s["per_set_bounced"][n]))
    w("")
    w("  %-14s %-14s %-6s %9s   (kiln-sink's count per client IP)" % ("source IP", "pool", "zone", "messages"))
    for ip, n in s["per_ip"].items():
        pool, zone = ip_info.get(ip, ("(not in the config)", "-"))
        w("  %-14s %-14s %-6s %9d" % (ip, pool, zone or "-", n))
    w("")
    w("  %-29s %9s" % ("pool", "messages"))
    for p, n in s["per_pool"].items():
        w("  %-29s %9d" % (p, n))
    w("")
    if s["deferred_by_reason"]:
        w("  deferrals by reason (kilnd's DeliveryDelay events), %d in all:" % s["deferred"])
        for k, n in s["deferred_by_reason"].items():
            w("  %9d  %s" % (n, k))
    else:
        w("  deferrals: none (kilnd's DeliveryDelay events)")
    if s["sink_faults"]:
        w("  sink faults injected: " + ", ".join("%s %d" % kv for kv in s["sink_faults"].items()))
    for n, why in s["why"].items():
        w("  kiln-loadgen (set %s): %s" % (n, why))
    print("\n".join(out))


def lt_on_signal(signum, frame):
    raise Interrupted()


def main(argv=None):
    a, ap = lt_options(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, lt_on_signal)
    signal.signal(signal.SIGHUP, lt_on_signal)
    signal.signal(signal.SIGINT, lt_on_signal)
    run = None
    status, keep = 1, True
    try:
        run = LtRun(a)
        s = run.run()
        if a.json:
            print(json.dumps(s, indent=2))
        else:
            lt_print_table(s, run.ip_info)
        sys.stdout.flush()
        status = 0 if s["ok"] else 1
        keep = not run.own_dir or not s["ok"]
        if not s["ok"]:
            sys.stderr.write("loadtest: FAILED: %s\n" % s["problem"])
    except Usage as e:
        ap.print_usage(sys.stderr)
        sys.stderr.write("loadtest: %s\n" % e)
        status = 2
    except Interrupted:
        sys.stderr.write("\nloadtest: interrupted; stopping what it started\n")
        status = 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):   # cleanup is not interrupted
            signal.signal(sig, signal.SIG_IGN)
        if run is not None:
            run.procs.stop_all()
            if keep:
                sys.stderr.write("loadtest: run directory kept: %s (kilnd.log, sink-stats.json, "
                                 "events-*.jsonl, *.rec)\n" % run.dir)
            else:
                shutil.rmtree(run.dir, ignore_errors=True)
                sys.stderr.write("loadtest: run directory removed (--keep-dir DIR keeps one)\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
