"""test_readme_walkthrough.py — the README's "Walkthroughs" section run as printed: every
```sh block marked `<!-- walkthrough: NAME -->` goes to bash word for word, in order, with
only what the section names as placeholders changed: the scratch directory /tmp/kiln-lab
and the ports 2587 (submission) and 2526 (the sink), in the blocks and in the copied
conf/kiln.yaml. The blocks start kiln-sink and kilnd themselves (in a process group of
their own, ended by its id at the end); the test checks what each step shows:

  routing        the txn message left from a transactional IP, the marketing one from a
                 marketing IP (the sink's record of the client address), and `kilnctl ips`
                 counts each under its IP;
  lease          the added IP is listed warming (IN_PROGRESS, 0 %, cap 50), as the README's
                 sample row says;
  release        with a slow delivery in flight on it, the removed IP is `draining` with
                 its open session;
  drained        once that delivery ended it is gone, the message was delivered from it,
                 and the log has `pools.drained ip=... pool=... after_s=N`."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from kilntest import BUILDDIR, KILNCTL, SRCDIR, free_port, main, reachable_tmp, wait_for

ORDER = ["setup", "start", "routing", "routing-check", "lease", "release-send", "release", "drained"]
TXN_IPS = {"127.0.0.10", "127.0.0.11", "127.0.0.12"}
MARKETING_IPS = {"127.0.0.13", "127.0.0.14", "127.0.0.15"}


def readme_section():
    with open(os.path.join(SRCDIR, "README.md")) as f:
        text = f.read()
    start = text.index("## Walkthroughs")
    end = text.index("\n## ", start + 10)
    return text[start:end]


def walkthrough_blocks(section):
    found = re.findall(r"<!-- walkthrough: (\S+) -->\n```sh\n(.*?)```", section, re.S)
    return found


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def table_rows(output):
    """IP -> the columns of its `kilnctl ips` row."""
    rows = {}
    for line in output.splitlines():
        cols = line.split()
        if len(cols) == 8 and re.match(r"^\d+\.\d+\.\d+\.\d+$", cols[0]):
            rows[cols[0]] = cols
    return rows


class ReadmeWalkthroughTest(unittest.TestCase):
    def setUp(self):
        self.lab = reachable_tmp(tempfile.mkdtemp(prefix="kiln-lab-"))
        self.sub_port = free_port()
        self.sink_port = free_port()
        self.env = {"PATH": "%s:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" % BUILDDIR,
                    "HOME": self.lab, "LANG": "C.UTF-8"}
        self.pgid = None

    def tearDown(self):
        if self.pgid and group_alive(self.pgid):
            os.killpg(self.pgid, signal.SIGTERM)
            end = time.monotonic() + 20
            while group_alive(self.pgid) and time.monotonic() < end:
                time.sleep(0.1)
            if group_alive(self.pgid):
                os.killpg(self.pgid, signal.SIGKILL)
        if os.environ.get("KILN_KEEP_TMP"):
            print("lab kept in", self.lab)
        else:
            shutil.rmtree(self.lab, ignore_errors=True)

    def subst(self, block):
        return (block.replace("/tmp/kiln-lab", self.lab)
                .replace("127.0.0.1:2587", "127.0.0.1:%d" % self.sub_port)
                .replace("127.0.0.1:2526", "127.0.0.1:%d" % self.sink_port))

    def run_block(self, name, cwd=None, timeout=60):
        p = subprocess.run(["bash", "-e", "-c", self.subst(self.blocks[name])], cwd=cwd or self.lab,
                           env=self.env, capture_output=True, text=True, timeout=timeout)
        print("\n--- walkthrough: %s (exit %d)\n%s" % (name, p.returncode, p.stdout[-3000:]), flush=True)
        self.assertEqual(p.returncode, 0, "block %s failed:\n%s\n%s" % (name, p.stdout[-2000:], p.stderr))
        return p.stdout

    def ctl_json(self, *args):
        p = subprocess.run([KILNCTL, "-c", os.path.join(self.lab, "kiln.yaml"), "--json"] + list(args),
                           capture_output=True, text=True, timeout=30)
        return json.loads(p.stdout) if p.returncode == 0 else None

    def sink_records(self):
        try:
            with open(os.path.join(self.lab, "sink.log")) as f:
                return [line.split() for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def log(self):
        with open(os.path.join(self.lab, "kilnd.log"), errors="replace") as f:
            return f.read()

    def test_walkthroughs_run_as_printed(self):
        section = readme_section()
        found = walkthrough_blocks(section)
        self.assertEqual([n for n, _ in found], ORDER)
        self.blocks = dict(found)

        # set up: the copy of conf/kiln.yaml, with the section's ports replaced
        self.run_block("setup", cwd=SRCDIR)
        conf = os.path.join(self.lab, "kiln.yaml")
        with open(conf) as f:
            text = f.read()
        for needle in ("listen: [127.0.0.1:2587]", "{domain: demo.test, host: 127.0.0.1, port: 2526}",
                       "127.0.0.12, zone: az3, pool: transactional, warmup: done", "\nips:"):
            self.assertIn(needle, text, "conf/kiln.yaml no longer matches the walkthrough")
        text = text.replace("127.0.0.1:2587", "127.0.0.1:%d" % self.sub_port)
        text = text.replace("host: 127.0.0.1, port: 2526", "host: 127.0.0.1, port: %d" % self.sink_port)
        with open(conf, "w") as f:
            f.write(text)
        if os.geteuid() == 0:
            self.assertIn("  user: nobody", text)

        # start: kiln-sink and kilnd in the background of a shell in its own process group
        out = open(os.path.join(self.lab, "start.out"), "w")
        sh = subprocess.Popen(["bash", "-e", "-c", self.subst(self.blocks["start"])], cwd=self.lab,
                              env=self.env, stdout=out, stderr=out, start_new_session=True)
        self.pgid = sh.pid
        self.assertEqual(sh.wait(30), 0)
        out.close()
        wait_for(lambda: port_open(self.sink_port), 15, what="kiln-sink")
        wait_for(lambda: port_open(self.sub_port) and
                 os.path.exists(os.path.join(self.lab, "spool", "kilnd.sock")), 30,
                 what="kilnd (log: %s)" % os.path.join(self.lab, "kilnd.log"))

        # 1. routing by configuration set
        self.run_block("routing")
        wait_for(lambda: len(self.sink_records()) >= 2, 30, what="both messages at the sink")
        out = self.run_block("routing-check")
        by_subject = {r[3]: r[1] for r in self.sink_records()}
        self.assertIn(by_subject["receipt"], TXN_IPS)
        self.assertIn(by_subject["newsletter"], MARKETING_IPS)
        self.assertIn("%s 1 receipt" % by_subject["receipt"], out)
        rows = table_rows(out)
        self.assertEqual(set(rows), TXN_IPS | MARKETING_IPS)
        sent = {ip: cols[5] for ip, cols in rows.items()}
        for ip in rows:
            want = "1" if ip in (by_subject["receipt"], by_subject["newsletter"]) else "0"
            self.assertEqual(sent[ip], want, "SENT24H of %s:\n%s" % (ip, out))

        # 2. leasing 127.0.0.16: warming at day one, as the README's sample row says
        out = self.run_block("lease")
        self.assertIn("reloaded", out)
        self.assertEqual(table_rows(out)["127.0.0.16"],
                         ["127.0.0.16", "transactional", "az3", "IN_PROGRESS", "0", "0", "50", "active"])
        sample = [l for l in section.splitlines() if l.startswith("127.0.0.16  ")]
        self.assertEqual(len(sample), 1)
        self.assertIn(sample[0], out.splitlines())
        self.assertIn("event=pools.reload added=127.0.0.16 removed=- moved=-", self.log())

        # 3. releasing 127.0.0.12 while a slow delivery is in flight on it
        out = self.run_block("release-send")
        m = re.search(r"250 2\.0\.0 Ok (\S+)", out)
        self.assertTrue(m, out)
        msg_id = m.group(1)

        def in_flight():
            ex = self.ctl_json("queue", "--explain", msg_id)
            ips = self.ctl_json("ips")
            if not ex or not ips:
                return False
            sessions = {x["Ip"]: x["kiln"]["Sessions"] for x in ips["DedicatedIps"]}
            return (all(r["State"] == "active" for r in ex["Recipients"]) and
                    sessions.get("127.0.0.12", 0) >= 1)
        wait_for(in_flight, 10, 0.1, what="the slow message on a session of 127.0.0.12")
        released = time.monotonic()
        out = self.run_block("release")
        self.assertEqual(out.splitlines()[0], "reloaded")
        self.assertNotIn("warning", out)
        self.assertEqual(table_rows(out)["127.0.0.12"][7], "draining")
        self.assertIn("127.0.0.12: draining (released): 1 open session(s) finish their transaction; "
                      "the IP leaves this list when they close", out.splitlines())
        self.assertNotIn("slow", [r[3] for r in self.sink_records()], "the slow message was not in flight")

        # 4. draining ends when the sink answers
        wait_for(lambda: "slow" in [r[3] for r in self.sink_records()], 40, 0.2,
                 what="the slow message at the sink")
        wait_for(lambda: "127.0.0.12" not in {x["Ip"] for x in self.ctl_json("ips")["DedicatedIps"]},
                 20, 0.1, what="127.0.0.12 gone after draining")
        drained_after = time.monotonic() - released
        out = self.run_block("drained")
        self.assertNotIn("127.0.0.12", table_rows(out))
        self.assertIn("127.0.0.16", table_rows(out))
        m = re.search(r"event=pools\.drained ip=127\.0\.0\.12 pool=transactional after_s=(\d+) "
                      r"reason=\"released; its last session closed\"", out)
        self.assertTrue(m, out)
        self.assertLessEqual(int(m.group(1)), drained_after + 1)
        self.assertGreaterEqual(int(m.group(1)), 5)    # the sink held it 15 s from its start
        slow = [r for r in self.sink_records() if r[3] == "slow"]
        self.assertEqual([r[1] for r in slow], ["127.0.0.12"])
        self.assertIn("removed=127.0.0.12", self.log())


if __name__ == "__main__":
    main()
