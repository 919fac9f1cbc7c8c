"""test_loadtest.py — tools/loadtest.sh (issue 16 item 1) run from the build directory as a
user would, its --json summary checked against kiln-sink's own counts (the stats file and
the record the test reads itself) and against the pools of conf/examples/loadtest.yaml; a
run with sink deferrals; Ctrl-C ending every process it started; and kiln-loadgen's last
line saying why everything was rejected by a sandbox account like the shipped conf/kiln.yaml."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from kilntest import BUILDDIR, SRCDIR, Kiln, main, reachable_tmp

SCRIPT = os.path.join(SRCDIR, "tools", "loadtest.sh")
LOADGEN = os.path.join(BUILDDIR, "kiln-loadgen")
# the pools of conf/examples/loadtest.yaml (those of conf/kiln.yaml)
POOL_IPS = {"transactional": {"127.0.0.10", "127.0.0.11", "127.0.0.12"},
            "marketing": {"127.0.0.13", "127.0.0.14", "127.0.0.15"}}
SET_POOL = {"txn": "transactional", "marketing": "marketing"}


class LoadTest(unittest.TestCase):
    def setUp(self):
        self.tmp = reachable_tmp(tempfile.mkdtemp(prefix="kiln-lt-test-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.run_dir = os.path.join(self.tmp, "run")

    def loadtest(self, *args, timeout=90):
        p = subprocess.run([SCRIPT] + list(args) + ["--json", "--keep-dir", self.run_dir],
                           capture_output=True, text=True, timeout=timeout, cwd=BUILDDIR,
                           env=dict(os.environ, KILN_BUILDDIR=BUILDDIR))
        self.assertEqual(p.returncode, 0, p.stderr[-3000:] + p.stdout[-3000:])
        self.assertIn("loadtest:", p.stderr)           # the progress lines
        self.assertIn("delivered", p.stderr)
        return json.loads(p.stdout)

    def sink_stats(self, s):
        self.assertEqual(os.path.dirname(s["sink_stats_file"]), self.run_dir)
        with open(s["sink_stats_file"]) as f:
            return json.load(f)

    def sink_tokens_by_set(self):
        """Messages per set in kiln-sink's --record (value: X-Loadgen-Token lt.SET-<n>)."""
        out = {}
        with open(os.path.join(self.run_dir, "sink-record.txt")) as f:
            for line in f:
                token = line.split()[3]
                name = token.rsplit("-", 1)[0][len("lt."):]
                out[name] = out.get(name, 0) + 1
        return out

    def test_mix_summary_matches_the_sink(self):
        s = self.loadtest("--messages", "300", "--connections", "6", "--domains", "3",
                          "--mix", "txn=30,marketing=70")
        self.assertTrue(s["ok"], s["problem"])
        self.assertEqual(s["accepted"], 300)
        self.assertEqual(s["delivered"], 300)
        self.assertEqual(s["bounced"], 0)
        # per IP is the sink's own count per client IP
        st = self.sink_stats(s)
        self.assertEqual(st["messages"], 300)
        sink_per_ip = {ip: c["messages"] for ip, c in st["by_client"].items() if c["messages"]}
        self.assertEqual(s["per_ip"], sink_per_ip)
        # every IP of both pools sent (each dedicated IP is a real source address), nothing else
        self.assertEqual(set(s["per_ip"]), POOL_IPS["transactional"] | POOL_IPS["marketing"])
        # per set: the mix, from the sink's record, adding up to what was delivered
        self.assertEqual(s["per_set"], {"txn": 90, "marketing": 210})
        self.assertEqual(sum(s["per_set"].values()), s["delivered"])
        self.assertEqual(self.sink_tokens_by_set(), s["per_set"])
        self.assertEqual(s["per_set_accepted"], {"txn": 90, "marketing": 210})
        # each set left only from its own pool's IPs
        for name, ips in s["per_set_ip"].items():
            self.assertTrue(set(ips) <= POOL_IPS[SET_POOL[name]], (name, ips))
            self.assertEqual(sum(ips.values()), s["per_set"][name])
        self.assertEqual(s["per_pool"], {"transactional": 90, "marketing": 210})
        # the latency and the daemon's figures are there
        self.assertGreaterEqual(s["p99_ms"], s["p50_ms"])
        self.assertGreater(s["accepted_per_s"], 0)
        self.assertGreater(s["delivered_per_s"], 0)
        self.assertGreater(s["kilnd_cpu_s"], 0)
        self.assertGreater(s["kilnd_peak_rss_kb"], 0)
        self.assertEqual(s["mix"], {"txn": 30, "marketing": 70})

    def test_deferrals_by_reason_and_all_delivered(self):
        s = self.loadtest("--messages", "300", "--connections", "6", "--domains", "3",
                          "--mix", "txn=30,marketing=70", "--faults", "defer=10", "--seed", "7")
        self.assertTrue(s["ok"], s["problem"])
        self.assertTrue(s["deferred_by_reason"], s)
        self.assertEqual(s["delivered"], s["accepted"])
        self.assertEqual(s["accepted"], 300)
        st = self.sink_stats(s)
        injected = st["faults"]["random_defer"]
        self.assertGreater(injected, 0)
        # every 451 the sink gave is one deferral in kilnd's DeliveryDelay events
        by451 = sum(n for k, n in s["deferred_by_reason"].items() if "451 4.3.0" in k)
        self.assertEqual(by451, injected, s["deferred_by_reason"])
        self.assertTrue(all(k.startswith("RecipientServerError") for k in s["deferred_by_reason"]
                            if "451 4.3.0" in k))
        self.assertEqual(s["per_ip"], {ip: c["messages"] for ip, c in st["by_client"].items()
                                       if c["messages"]})

    def test_ctrl_c_stops_everything_it_started(self):
        p = subprocess.Popen([SCRIPT, "--messages", "200000", "--connections", "4",
                              "--keep-dir", self.run_dir], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=BUILDDIR,
                             env=dict(os.environ, KILN_BUILDDIR=BUILDDIR))
        try:
            line = ""
            deadline = time.monotonic() + 30
            while "injecting" not in line and time.monotonic() < deadline:
                line = p.stderr.readline()
                if not line and p.poll() is not None:
                    break
            self.assertIn("injecting", line)
            children = self.processes_using(self.run_dir)
            self.assertGreaterEqual(len(children), 3, children)   # sink, kilnd, loadgen(s)
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 130, err)
        self.assertIn("interrupted", err)
        self.assertEqual(self.processes_using(self.run_dir), [])

    @staticmethod
    def processes_using(path):
        """PIDs whose command line names path (what loadtest started for this run)."""
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == os.getpid():
                continue
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    cmd = f.read().decode(errors="replace")
            except OSError:
                continue
            if path in cmd and "loadtest.py" not in cmd:
                out.append((int(d), cmd.replace("\0", " ")))
        return out


class LoadgenSaysWhy(unittest.TestCase):
    """kiln-loadgen against a sandbox account as shipped in conf/kiln.yaml (200 a day, only
    demo.test verified), unlimited rate so that only the sandbox and the quota refuse."""

    def loadgen(self, k, *args):
        p = subprocess.run([LOADGEN, "-s", "127.0.0.1:%d" % k.port] + list(args),
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout

    def test_defaults_against_a_sandbox_account(self):
        with Kiln(account={"mode": "sandbox", "max_24h_send": 200, "max_send_rate": -1,
                           "verified_recipients": ["demo.test"]}) as k:
            out = self.loadgen(k, "-n", "20", "-c", "2")
            last = out.strip().splitlines()[-1]
            self.assertTrue(last.startswith("all 20 rejected: the account is in sandbox mode"), out)
            self.assertIn("554 5.7.1 ... Email address is not verified", last)
            self.assertIn("use tools/loadtest.sh or conf/examples/loadtest.yaml", last)
            # to the verified domain: the first 200 go, the quota refuses the rest
            out = self.loadgen(k, "-n", "230", "-c", "2", "--domain-pattern", "demo.test", "--json")
            r = json.loads(out)
            self.assertEqual((r["accepted"], r["rejected"]), (200, 30))
            self.assertTrue(r["why"].startswith("30 of 230 rejected: the account's 24-hour sending "
                                                "quota is spent (30 x 454 4.7.0"), r["why"])
            # an unverified sender says so, without pointing at the load test
            last = self.loadgen(k, "-n", "3", "-c", "1", "--from", "x@nowhere.test").strip().splitlines()[-1]
            self.assertIn("all 3 rejected: the sender is not a verified identity", last)
            self.assertNotIn("loadtest", last)

    def test_no_line_without_refusals(self):
        with Kiln() as k:        # production: nothing refused, so no line
            r = json.loads(self.loadgen(k, "-n", "5", "-c", "1", "--json"))
            self.assertEqual(r["accepted"], 5)
            self.assertIsNone(r["why"])


if __name__ == "__main__":
    main()
