"""test_demo.py — the Quick start's demo (tools/demo.sh) as a newcomer runs it: it delivers
its batch (Delivery events from the dedicated IPs, the simulator's bounce and complaint) and
prints `kilnctl quota` and `kilnctl ips`, and it leaves the checkout exactly as it found it:
kilnd's spool, logs and events go to a fresh /tmp/kiln-demo-* directory (named in its
output), never to conf/spool. The checkout is compared with `git status --ignored` before
and after, so even an ignored file left behind fails the test.

The demo uses the shipped config unchanged, so it needs its fixed ports 2526 and 2587 free;
the test is skipped when something else holds them."""
import os
import re
import shutil
import socket
import subprocess
import unittest

from kilntest import BUILDDIR, SRCDIR, main


def port_busy(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def checkout_state():
    """Every path git sees as changed, untracked or ignored; None outside a git checkout."""
    p = subprocess.run(["git", "-C", SRCDIR, "status", "--porcelain", "--ignored",
                        "--untracked-files=all"], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        return None
    return sorted(p.stdout.splitlines())


class DemoTest(unittest.TestCase):
    def test_demo_runs_and_leaves_the_checkout_clean(self):
        for port in (2526, 2587):
            if port_busy(port):
                self.skipTest("port %d is in use; the demo needs it" % port)
        spool_before = os.path.exists(os.path.join(SRCDIR, "conf", "spool"))
        before = checkout_state()
        p = subprocess.run([os.path.join(SRCDIR, "tools", "demo.sh"), "--bindir", BUILDDIR],
                           capture_output=True, text=True, timeout=180)
        print(p.stdout[-4000:], p.stderr[-2000:])
        m = re.search(r"demo: kilnd ran on (/\S+) ", p.stdout)
        try:
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertTrue(m, p.stdout)
            rundir = m.group(1)
            self.assertTrue(os.path.basename(rundir).startswith("kiln-demo-"), rundir)
            self.assertFalse(rundir.startswith(os.path.realpath(SRCDIR) + os.sep), rundir)
            self.assertTrue(os.path.exists(os.path.join(rundir, "spool", "kiln.db")))
            self.assertIn("demo: events written to %s/spool/events-txn.jsonl" % rundir, p.stdout)
            self.assertRegex(p.stdout, r"Delivery\s+alice@demo\.test\s+127\.0\.0\.1[0-2]\s+250")
            self.assertRegex(p.stdout, r"Bounce\s+bounce@simulator\.amazonses\.com")
            self.assertRegex(p.stdout, r"Complaint\s+complaint@simulator\.amazonses\.com")
            self.assertIn("Max24HourSend", p.stdout)
            self.assertRegex(p.stdout, r"127\.0\.0\.12\s+transactional\s+az3\s+DONE")
            # nothing left in the checkout
            self.assertEqual(os.path.exists(os.path.join(SRCDIR, "conf", "spool")), spool_before)
            after = checkout_state()
            if before is not None:
                self.assertEqual(after, before, "the demo changed the checkout")
        finally:
            if m and os.path.basename(m.group(1)).startswith("kiln-demo-"):
                shutil.rmtree(m.group(1), ignore_errors=True)


if __name__ == "__main__":
    main()
