"""bench_peers.py — what the benchmarks run around the MTAs under test, and how they measure
them: kiln-sink on 127.0.x.y addresses (one per destination domain) with its message counter,
a dnsmasq child serving one MX per domain, a journaled ext4 image on a loop device for both
spools, and the /proc readings (process CPU, RSS, PSS, the machine's busy and iowait share).

Promises: every process started here is ended by its PID (SIGTERM, then SIGKILL after a
bounded wait); every wait is bounded; the ext4 image is unmounted and removed by close()
(callers put it in a finally), and when it cannot be made (not root, no loop device, no
mkfs.ext4) the spools go on the plain filesystem and `note` says so.

Written here rather than taken from a library: the readings are a few lines of /proc parsing
each (psutil would add a dependency for less control over which fields are summed)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from kilntest import BUILDDIR, DNSMASQ, wait_for  # noqa: E402

LOADGEN = os.path.join(BUILDDIR, "kiln-loadgen")
SINK = os.path.join(BUILDDIR, "kiln-sink")
CLK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def peers_sink_addr(i):
    """The loopback address of destination domain d<i>.test's sink (and MX host)."""
    return "127.0.%d.%d" % (1 + i // 200, 1 + i % 200)


sink_addr = peers_sink_addr          # the name bench_inject.py and older scripts import


def peers_stop_proc(proc, timeout=10):
    """Ends one child by its PID: SIGTERM, then SIGKILL after timeout seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# ---------------------------------------------------------------- kiln-sink

class KilnSink:
    """kiln-sink listening on the sinks of domains 0..ndomains-1 at one port; messages()
    reads its counter (SIGUSR1 makes it write the stats file)."""

    def __init__(self, tmp, ndomains, port):
        self.stats = os.path.join(tmp, "sink-stats.json")
        self.port = port
        args = [SINK, "--stats-file", self.stats]
        for i in range(ndomains):
            args += ["-l", "%s:%d" % (peers_sink_addr(i), port)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._up, 10, 0.1, "kiln-sink to listen")

    def _up(self):
        if self.proc.poll() is not None:
            raise RuntimeError("kiln-sink exited with %s at start" % self.proc.returncode)
        try:
            with socket.create_connection((peers_sink_addr(0), self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def messages(self):
        """Messages the sink has accepted so far (0 when it does not answer within 5 s)."""
        try:
            os.unlink(self.stats)
        except FileNotFoundError:
            pass
        self.proc.send_signal(signal.SIGUSR1)
        try:
            return wait_for(self._read, 5, 0.005, "sink stats")["messages"]
        except AssertionError:
            return 0

    def _read(self):
        try:
            with open(self.stats) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return None

    def stop(self):
        peers_stop_proc(self.proc)


# ---------------------------------------------------------------- /proc readings

def proc_cpu(pid, children=False):
    """CPU seconds (utime + stime) of a process, all its threads; with children, plus the
    CPU of its children it has reaped."""
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


def proc_hwm_kb(pid):
    """Peak resident set (VmHWM) of a live process, 0 when it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
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


def proc_tree_cpu(pid):
    """CPU seconds of a master process, its reaped children and its live children."""
    return proc_cpu(pid, children=True) + sum(proc_cpu(c) for c in children_of(pid))


def proc_tree_pss_kb(pid):
    return proc_pss_kb(pid) + sum(proc_pss_kb(c) for c in children_of(pid))


def machine_ticks():
    """(busy, iowait, total) jiffies of the whole machine from /proc/stat's cpu line; busy
    is everything but idle and iowait."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    total = sum(vals[:8])                    # guest time is already inside user and nice
    idle, iowait = vals[3], vals[4]
    return total - idle - iowait, iowait, total


def machine_share(t0, t1):
    """{busy, iowait} as fractions of the machine's time between two machine_ticks()."""
    span = max(1, t1[2] - t0[2])
    return {"busy": (t1[0] - t0[0]) / span, "iowait": (t1[1] - t0[1]) / span}


# ---------------------------------------------------------------- DNS

class BenchDns:
    """dnsmasq answering MX d<i>.test -> mx.d<i>.test (preference 10) -> A peers_sink_addr(i)
    for i < ndomains, NXDOMAIN for the rest of .test. It listens on ADDR:53 when it can (as
    root, nothing else there) so that a resolver limited to port 53 (glibc's, Postfix's) can
    use it too; otherwise on 127.0.0.1 at a free port, and `port53` is False."""

    ADDR = "127.0.0.153"

    def __init__(self, ndomains):
        if DNSMASQ is None:
            raise RuntimeError("dnsmasq is not installed (Debian package dnsmasq-base)")
        self.records = []
        for i in range(ndomains):
            self.records += ["--mx-host=d%d.test,mx.d%d.test,10" % (i, i),
                             "--host-record=mx.d%d.test,%s" % (i, peers_sink_addr(i))]
        self.proc = None
        self.log = None
        self.port53 = False
        if os.geteuid() == 0 and self._start(self.ADDR, 53):
            self.addr, self.port, self.port53 = self.ADDR, 53, True
            return
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if not self._start("127.0.0.1", port):
            raise RuntimeError("dnsmasq did not start: %s" % self._log_text())
        self.addr, self.port = "127.0.0.1", port

    @property
    def server(self):
        """The dns.servers entry for kiln."""
        return "%s:%d" % (self.addr, self.port)

    def _start(self, addr, port):
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [DNSMASQ, "--no-daemon", "--no-resolv", "--no-hosts", "--port=%d" % port,
             "--listen-address=%s" % addr, "--bind-interfaces", "--local=/test/", "--local-ttl=300",
             "--conf-file=/dev/null", "--pid-file=", "--cache-size=1000"] + self.records,
            stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self._probe(addr, port):
                return True
            time.sleep(0.1)
        peers_stop_proc(self.proc)
        return False

    @staticmethod
    def _probe(addr, port):
        """One MX query for d0.test; True when an answer comes back."""
        q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x02d0\x04test\x00\x00\x0f\x00\x01"
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.3)
        try:
            s.sendto(q, (addr, port))
            return s.recvfrom(512)[0][:2] == b"\x12\x34"
        except OSError:
            return False
        finally:
            s.close()

    def _log_text(self):
        if not self.log:
            return ""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def stop(self):
        peers_stop_proc(self.proc)
        if self.log:
            self.log.close()
            self.log = None


# ---------------------------------------------------------------- the spool filesystem

class SpoolFs:
    """A journaled ext4 image (sparse file under /tmp, `size_mb`) on a loop device, mounted
    for the spools of both MTAs (kiln's server.spool, Postfix's queue_directory). Without
    root or a loop device, `path` is a temp directory on the plain filesystem and
    `journaled` is False; `note` describes what was used. close() unmounts and removes."""

    def __init__(self, size_mb=4096):
        self.dir = tempfile.mkdtemp(prefix="kiln-bench-fs-")
        os.chmod(self.dir, 0o755)              # kilnd (nobody) and Postfix reach through it
        self.mnt = None
        self.journaled = False
        self.path = self.dir
        why = self._mount(size_mb)
        if self.journaled:
            self.note = "spools on a journaled ext4 image (%d MB, loop device, data=ordered)" % size_mb
        else:
            self.note = ("spools on the plain filesystem at %s (no journaled ext4 image: %s)"
                         % (self.dir, why))

    def _mount(self, size_mb):
        if os.geteuid() != 0:
            return "not root"
        mkfs = shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4"
        if not os.path.exists(mkfs):
            return "mkfs.ext4 not found"
        img = os.path.join(self.dir, "spool.ext4")
        mnt = os.path.join(self.dir, "mnt")
        os.mkdir(mnt)
        with open(img, "wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        # Eager inode-table and journal init: no ext4lazyinit writes during the runs.
        p = subprocess.run([mkfs, "-q", "-F", "-j", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                            img], capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            os.unlink(img)
            return "mkfs.ext4 failed: %s" % p.stderr.strip()
        p = subprocess.run(["mount", "-o", "loop", img, mnt], capture_output=True, text=True,
                           timeout=60)
        if p.returncode != 0:
            os.unlink(img)
            return "mount -o loop failed: %s" % p.stderr.strip()
        self.mnt = mnt
        os.chmod(mnt, 0o755)
        self.path = mnt
        self.journaled = True
        return None

    def tempdir(self, prefix):
        """A fresh directory on the spool filesystem, reachable by kilnd's and Postfix's users."""
        d = tempfile.mkdtemp(prefix=prefix, dir=self.path)
        os.chmod(d, 0o755)
        return d

    def close(self):
        if self.mnt:
            for _ in range(20):                 # a process that just ended may still hold it
                if subprocess.run(["umount", self.mnt], capture_output=True, timeout=60).returncode == 0:
                    self.mnt = None
                    break
                time.sleep(0.5)
            if self.mnt:
                subprocess.run(["umount", "-l", self.mnt], capture_output=True, timeout=60)
                sys.stderr.write("bench: %s was busy; detached it lazily\n" % self.mnt)
                self.mnt = None
        shutil.rmtree(self.dir, ignore_errors=True)
