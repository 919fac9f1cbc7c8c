"""kilntest.py — shared harness for kiln's integration tests: runs the real kilnd and
kilnctl from the build tree against real peers on loopback (aiosmtpd sinks on 127.0.0.x,
dnsmasq), with bounded waits, and ends every process it starts by PID."""
import asyncio
import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("KILN_SRCDIR") or os.path.dirname(os.path.dirname(HERE))
BUILDDIR = os.environ.get("KILN_BUILDDIR") or SRCDIR
KILND = os.path.join(BUILDDIR, "kilnd")
KILNCTL = os.path.join(BUILDDIR, "kilnctl")

# kilnd refuses to run as root without server.user: started as root (CI), every test daemon
# runs as nobody, on temp directories that user can reach (see reachable_tmp).
RUN_AS = "nobody" if os.geteuid() == 0 else None


def reachable_tmp(path):
    """Lets RUN_AS reach path (mkdtemp makes 0700 directories): mode 0755, owner unchanged;
    kilnd creates and hands over its own files in it before it drops root."""
    if RUN_AS and (os.stat(path).st_mode & 0o777) == 0o700:
        os.chmod(path, 0o755)
    return path


# A whole test file never runs longer than this (every test stops by itself).
FILE_DEADLINE_S = int(os.environ.get("KILN_TEST_DEADLINE", "420"))


def arm_deadline():
    """Abort the test process if it runs past FILE_DEADLINE_S."""
    def on_alarm(signum, frame):
        sys.stderr.write("test file exceeded %ds; aborting\n" % FILE_DEADLINE_S)
        os._exit(99)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(FILE_DEADLINE_S)


def free_port(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, timeout=15.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))


# ---------------------------------------------------------------- SMTP sink (aiosmtpd)

class SinkHandler:
    """Records every message with the client's address; `rule(rcpt, attempt)` may return
    an SMTP reply string to refuse a recipient (attempt counts RCPTs for that address)."""

    def __init__(self, rule=None, data_rule=None):
        self.rule = rule
        self.data_rule = data_rule
        self.messages = []
        self.attempts = {}
        self.connections = []
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        with self.lock:
            self.connections.append({"peer": session.peer[0], "ehlo": hostname})
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            n = self.attempts.get(address.lower(), 0) + 1
            self.attempts[address.lower()] = n
        if self.rule:
            reply = self.rule(address, n)
            if reply:
                return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_rule:
            reply = self.data_rule(envelope)
            if reply:
                return reply
        content = envelope.original_content if envelope.original_content is not None else envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        with self.lock:
            self.messages.append({
                "peer": session.peer[0],
                "mail_from": envelope.mail_from,
                "rcpts": list(envelope.rcpt_tos),
                "data": content,
                "tls": session.ssl is not None,
                "ehlo": getattr(session, "host_name", None),
            })
        return "250 2.0.0 queued as sink-%d" % len(self.messages)

    def snapshot(self):
        with self.lock:
            return list(self.messages)


class Sink:
    """An aiosmtpd server on host:port in a thread of this process."""

    def __init__(self, host="127.0.0.1", port=None, rule=None, data_rule=None, tls_context=None,
                 server_hostname=None):
        from aiosmtpd.controller import Controller
        self.host = host
        self.port = port or free_port(host)
        self.handler = SinkHandler(rule, data_rule)
        kwargs = {}
        if tls_context is not None:
            kwargs["tls_context"] = tls_context
        if server_hostname is not None:   # the name in its greeting and EHLO reply
            kwargs["server_hostname"] = server_hostname
        self.controller = Controller(self.handler, hostname=host, port=self.port,
                                     ready_timeout=10, decode_data=False, **kwargs)

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.controller.stop()

    @property
    def messages(self):
        return self.handler.snapshot()


# ---------------------------------------------------------------- kilnd

def base_config(tmp, port, sink_port=None, **over):
    """A config dict for a test daemon; YAML is a superset of JSON, so it is written as JSON."""
    cfg = {
        "server": {"hostname": "mta.kiln.test", "region": "local", "spool": "./spool",
                   "log": "./kilnd.log", "log_level": "debug"},
        "submission": {"listen": ["127.0.0.1:%d" % port], "trusted_networks": ["127.0.0.0/8"],
                       "max_message_size": "1MB", "max_recipients": 50},
        "account": {"mode": "production", "max_24h_send": -1, "max_send_rate": -1,
                    "identities": ["example.test", "ops@other.test"],
                    "verified_recipients": []},
        # DNS never leaves loopback in tests: a port where nothing answers unless a test
        # starts dnsmasq there.
        "dns": {"servers": ["127.0.0.1:%d" % free_port()], "timeout": "1s"},
        # every test peer listens on 127.0.0.x: MX answers there are refused by default
        "delivery": {"remote_port": sink_port or 25,
                     "retry": {"first": "1s", "max_interval": "4s", "factor": 2},
                     "connect_timeout": "3s", "allow_private_mx": True},
        "routes": [],
        "zones": ["az1", "az2", "az3"],
        "ips": [
            {"address": "127.0.0.10", "zone": "az1", "pool": "transactional"},
            {"address": "127.0.0.11", "zone": "az2", "pool": "transactional"},
            {"address": "127.0.0.12", "zone": "az3", "pool": "transactional", "warmup": "done"},
        ],
        "pools": [{"name": "transactional", "scaling": "standard"}],
        "configuration_sets": [
            {"name": "txn", "pool": "transactional",
             "events": [{"type": "file", "path": "./events-txn.jsonl"}]},
        ],
        "default_configuration_set": "txn",
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    return cfg


class Kiln:
    """A kilnd child process on its own temp directory and config."""

    def __init__(self, cfg=None, tmp=None, **over):
        self.tmp = reachable_tmp(tmp or tempfile.mkdtemp(prefix="kiln-it-"))
        self.own_tmp = tmp is None
        self.port = free_port()
        self.cfg = cfg or base_config(self.tmp, self.port, **over)
        self.port = int(self.cfg["submission"]["listen"][0].rsplit(":", 1)[1])
        self.path = os.path.join(self.tmp, "kiln.yaml")
        self.proc = None
        self.prefix = []    # a command kilnd runs under (e.g. nsenter into a namespace)
        self.args = []      # more kilnd arguments (e.g. --node NAME)
        self.write_config()

    def write_config(self, cfg=None, text=None):
        if cfg is not None:
            self.cfg = cfg
        if RUN_AS and text is None and isinstance(self.cfg.get("server"), dict):
            self.cfg["server"].setdefault("user", RUN_AS)
        with open(self.path, "w") as f:
            f.write(text if text is not None else json.dumps(self.cfg, indent=2))

    @property
    def spool(self):
        return os.path.join(self.tmp, "spool")

    @property
    def socket_path(self):
        return os.path.join(self.spool, "kilnd.sock")

    @property
    def log_path(self):
        return os.path.join(self.tmp, "kilnd.log")

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def start(self, timeout=20):
        if getattr(self, "stderr", None):   # started again (a restart test)
            self.stderr.close()
        self.stderr = open(os.path.join(self.tmp, "kilnd.stderr"), "ab")
        self.proc = subprocess.Popen(self.prefix + [KILND, "-c", self.path] + self.args,
                                     stdout=self.stderr,
                                     stderr=self.stderr, cwd=self.tmp)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("kilnd exited with %s at start:\n%s\n%s" % (
                    self.proc.returncode, self.stderr_text(), self.log()[-4000:]))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.recv(512)
                return os.path.exists(self.socket_path)
            except OSError:
                return False
        wait_for(ready, timeout, 0.05, "kilnd to listen on %d" % self.port)
        return self

    def stderr_text(self):
        try:
            with open(os.path.join(self.tmp, "kilnd.stderr"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self, timeout=20):
        """SIGTERM and wait; returns the exit status (kill -9 after timeout)."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("kilnd did not stop within %ds of SIGTERM" % timeout)

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def cleanup(self):
        self.kill9()
        if getattr(self, "stderr", None):
            self.stderr.close()
        if self.own_tmp and not os.environ.get("KILN_KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        try:
            if self.proc and self.proc.poll() is None:
                rc = self.stop()
                if exc[0] is None and rc != 0:
                    raise AssertionError("kilnd exited %s after SIGTERM:\n%s" % (rc, self.stderr_text()[-4000:]))
        finally:
            self.cleanup()

    # ---- clients
    def smtp(self, timeout=15):
        return smtplib.SMTP("127.0.0.1", self.port, timeout=timeout)

    def ctl(self, *args, expect_ok=True, json_out=True, timeout=30):
        cmd = [KILNCTL, "-c", self.path] + (["--json"] if json_out else []) + list(args)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if expect_ok and p.returncode != 0:
            raise AssertionError("kilnctl %s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr))
        if json_out and p.returncode == 0:
            return json.loads(p.stdout)
        return p

    def events(self, name="events-txn.jsonl"):
        path = os.path.join(self.tmp, name)
        out = []
        try:
            with open(path) as f:
                for line in f:
                    line = line.strip()
                    if line:
                        out.append(json.loads(line))
        except FileNotFoundError:
            pass
        return out

    def wait_events(self, pred, timeout=15, name="events-txn.jsonl", what="events"):
        return wait_for(lambda: (lambda evs: evs if pred(evs) else None)(self.events(name)),
                        timeout, 0.1, what)


def send(k, mail_from, rcpts, body=None, headers=None, subject="test"):
    """Submit one message; returns (code, text) of the final reply (the message ID on 250)."""
    hdrs = {"From": mail_from or "sender@example.test", "To": ", ".join(rcpts), "Subject": subject}
    if headers:
        hdrs.update(headers)
    msg = "".join("%s: %s\r\n" % (k2, v) for k2, v in hdrs.items() if v is not None)
    msg += "\r\n" + (body if body is not None else "hello from kiln tests\r\n")
    with k.smtp() as s:
        s.ehlo("client.test")
        code, resp = s.mail(mail_from)
        if code != 250:
            return code, resp.decode()
        ok = 0
        last = None
        for r in rcpts:
            code, resp = s.rcpt(r)
            last = (code, resp.decode())
            if code == 250:
                ok += 1
        if not ok:
            return last
        code, resp = s.data(msg.encode())
        return code, resp.decode()


def make_cert(tmp, cn="mta.kiln.test", san=None):
    """A self-signed pair in tmp: (test.crt, test.key); san (e.g. "IP:127.0.0.1") for
    clients that match only subjectAltName, as urllib3 does."""
    cert = os.path.join(tmp, "test.crt")
    key = os.path.join(tmp, "test.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=" + cn]
                   + (["-addext", "subjectAltName=" + san] if san else []),
                   check=True, capture_output=True, timeout=60)
    return cert, key


def main():
    arm_deadline()
    unittest.main(verbosity=2)


# ---------------------------------------------------------------- DNS (dnsmasq)

DNSMASQ = next((p for p in ("/usr/sbin/dnsmasq", "/sbin/dnsmasq") if os.path.exists(p)), None)


def free_udp_port(host="127.0.0.1"):
    """A port free on host for UDP and for TCP (dnsmasq binds both)."""
    for _ in range(50):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            u.bind((host, 0))
            port = u.getsockname()[1]
            t.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()
    raise AssertionError("no port on %s is free for both UDP and TCP" % host)


class Dnsmasq:
    """dnsmasq serving only what `args` says (MX, A, AAAA records) on 127.0.0.1:port, with
    everything else under .test answered NXDOMAIN; a child process ended by PID."""

    def __init__(self, records, port=None):
        if DNSMASQ is None:
            raise unittest.SkipTest("dnsmasq is not installed (Debian package dnsmasq-base)")
        self.chosen = port is None      # a port picked here may be taken again: retried
        self.port = port or free_udp_port()
        self.records = list(records)
        self.proc = None

    @property
    def args(self):
        return [DNSMASQ, "--no-daemon", "--no-resolv", "--no-hosts", "--port=%d" % self.port,
                "--listen-address=127.0.0.1", "--bind-interfaces", "--local=/test/",
                "--local-ttl=30", "--conf-file=/dev/null", "--pid-file="] + self.records

    def __enter__(self):
        # Another test running in parallel can bind the picked port between the check and
        # dnsmasq's bind ("Address already in use"): a port picked here is picked again.
        for attempt in range(5):
            self.log = tempfile.TemporaryFile()
            self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=self.log)

            def answering():
                if self.proc.poll() is not None:
                    self.log.seek(0)
                    raise AssertionError("dnsmasq exited: %s"
                                         % self.log.read().decode(errors="replace"))
                return self._probe()
            try:
                wait_for(answering, 10, 0.1, "dnsmasq to answer on port %d" % self.port)
                return self
            except AssertionError as e:
                if self.proc.poll() is None:
                    self.proc.kill()
                self.proc.wait(timeout=10)
                self.log.close()
                if not (self.chosen and "Address already in use" in str(e) and attempt < 4):
                    raise
                self.port = free_udp_port()

    def _probe(self):
        # a minimal DNS query for "probe.test" A; any answer means the server is up
        q = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x05probe\x04test\x00" + b"\x00\x01\x00\x01")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.3)
        try:
            s.sendto(q, ("127.0.0.1", self.port))
            s.recvfrom(512)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
