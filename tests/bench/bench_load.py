"""bench_load.py — the two load tools of the end-to-end benchmark, run in the background
against one HOST:PORT (an MTA under test, or the sink itself for the raw ceiling), always
20 sessions:

- kiln-loadgen: `kiln-loadgen -c 20 -n N --size SIZE --domains D`, 20 persistent connections,
  messages back to back with PIPELINING, recipients round-robin over d0..d<D-1>.test;
- Postfix's smtp-source: one message per connection (its default, no -d), the payload
  `-l SIZE-128` so that the message with smtp-source's own headers (From, To, Date,
  Message-Id: about 128 bytes) is about SIZE bytes like kiln-loadgen's. One domain:
  one `smtp-source -s 20 -m N` process. D domains: smtp-source has a single -t recipient per
  process, so 20 workers each run `smtp-source -s 1 -m C` (one session) one after another,
  worker w cycling over the domains w, w+20, w+40, ... (5 each for 100 domains), until the
  worker's share of N is sent; C = 50, or less when the share is too small for 50 per
  domain (N = 20,000: each worker sends 20 chunks of 50, 4 rounds over its 5 domains). So
  20 sessions stay open (less one exec per chunk), one message per connection, and every
  domain gets mail throughout the run.

Promises: every child is ended by its PID by stop(); wait() is bounded; result() says
whether the tool reported success and, when it knows, how many messages were accepted."""
import json
import math
import subprocess
import tempfile
import threading
import time

from bench_peers import LOADGEN, peers_stop_proc

SMTP_SOURCE = "/usr/sbin/smtp-source"
LOAD_SESSIONS = 20
LOAD_FROM = "app@example.test"
LOAD_SMTP_SOURCE_HEADER_BYTES = 128
LOAD_CHUNK = 50                  # at most this many messages per smtp-source -s 1 process
LOAD_TOOLS = ("smtp-source", "loadgen")


class LoadRun:
    """One run of `tool` sending n messages of about `size` bytes to ndomains domains."""

    def __init__(self, tool, host, port, n, size, ndomains, timeout_s):
        if tool not in LOAD_TOOLS:
            raise ValueError("unknown load tool %r" % tool)
        self.tool, self.host, self.port = tool, host, port
        self.n, self.size, self.ndomains = n, size, ndomains
        self.deadline = None
        self.timeout_s = timeout_s
        self.out = tempfile.TemporaryFile()
        self.procs = []              # live children, ended by PID in stop()
        self.lock = threading.Lock()
        self.threads = []
        self.failures = []
        self.stopping = False
        self.t_start = self.t_end = None
        self.accepted = None

    # ---- start
    def start(self):
        self.t_start = time.monotonic()
        self.deadline = self.t_start + self.timeout_s
        if self.tool == "loadgen":
            self._spawn([LOADGEN, "-s", "%s:%d" % (self.host, self.port), "-n", str(self.n),
                         "-c", str(LOAD_SESSIONS), "--size", str(self.size), "--domains",
                         str(self.ndomains), "--from", LOAD_FROM, "--json"], self.out)
        elif self.ndomains == 1:
            self._spawn(self._source_args(LOAD_SESSIONS, self.n, 0), self.out)
        else:
            per = [self.n // LOAD_SESSIONS + (1 if w < self.n % LOAD_SESSIONS else 0)
                   for w in range(LOAD_SESSIONS)]
            for w in range(LOAD_SESSIONS):
                t = threading.Thread(target=self._source_worker, args=(w, per[w]), daemon=True)
                self.threads.append(t)
                t.start()
        return self

    def _source_args(self, sessions, m, domain):
        return [SMTP_SOURCE, "-s", str(sessions), "-m", str(m),
                "-l", str(max(1, self.size - LOAD_SMTP_SOURCE_HEADER_BYTES)),
                "-f", LOAD_FROM, "-t", "user@d%d.test" % domain, "%s:%d" % (self.host, self.port)]

    def _spawn(self, args, out):
        with self.lock:
            if self.stopping:
                return None
            p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
            self.procs.append(p)
            return p

    def _source_worker(self, w, count):
        """Worker w: chunks of LOAD_CHUNK messages, one smtp-source -s 1 each, cycling over
        domains w, w+20, ... below ndomains."""
        domains = list(range(w, self.ndomains, LOAD_SESSIONS)) or [w % self.ndomains]
        chunk = max(1, min(LOAD_CHUNK, -(-count // len(domains))))   # every domain gets mail
        k = 0
        while count > 0 and not self.stopping:
            m = min(chunk, count)
            p = self._spawn(self._source_args(1, m, domains[k % len(domains)]), subprocess.DEVNULL)
            if p is None:
                return
            try:
                rc = p.wait(max(0.1, self.deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                peers_stop_proc(p)
                rc = "timeout"
            with self.lock:
                self.procs.remove(p)
            if rc != 0:
                with self.lock:
                    self.failures.append("worker %d: smtp-source exited %s" % (w, rc))
                return
            count -= m
            k += 1

    # ---- progress
    def running(self):
        if self.threads:
            alive = any(t.is_alive() for t in self.threads)
        else:
            alive = any(p.poll() is None for p in self.procs)
        if not alive and self.t_end is None:
            self.t_end = time.monotonic()
            self._collect()
        return alive

    def _collect(self):
        if self.tool == "loadgen":
            p = self.procs[0]
            self.out.seek(0)
            text = self.out.read().decode(errors="replace")
            try:
                self.accepted = int(json.loads(text)["accepted"])
            except (ValueError, KeyError):
                self.failures.append("kiln-loadgen exited %s: %s" % (p.returncode, text[-500:]))
        elif not self.threads:
            p = self.procs[0]
            if p.returncode == 0:
                self.accepted = self.n
            else:
                self.out.seek(0)
                self.failures.append("smtp-source exited %s: %s" % (
                    p.returncode, self.out.read().decode(errors="replace")[-500:]))
        elif not self.failures:
            self.accepted = self.n

    def wait(self, timeout):
        end = time.monotonic() + timeout
        while self.running() and time.monotonic() < end:
            time.sleep(0.05)
        return not self.running()

    def result(self):
        """{ok, accepted (None when unknown), tool_s (start to exit), failures}"""
        return {"ok": not self.failures and self.accepted is not None, "accepted": self.accepted,
                "tool_s": (self.t_end - self.t_start) if self.t_end else math.nan,
                "failures": list(self.failures)}

    def stop(self):
        with self.lock:
            self.stopping = True
            procs = list(self.procs)
        for p in procs:
            peers_stop_proc(p, 5)
        for t in self.threads:
            t.join(10)
        self.out.close()
