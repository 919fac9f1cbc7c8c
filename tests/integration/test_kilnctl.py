"""test_kilnctl.py — kilnctl against the running daemon (SPEC section 5): status, quota,
suppression list/add/remove, reload (good and bad config), --json before or after the
command, human tables, and clear failures."""
import json
import os
import stat
import subprocess
import unittest

from kilntest import KILNCTL, Kiln, main, send


class Kilnctl(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.k = Kiln(account={"max_24h_send": 100, "max_send_rate": 10})
        cls.k.start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.k.stop()
        cls.k.cleanup()
        assert rc == 0, rc

    def run_ctl(self, *args):
        return subprocess.run([KILNCTL, "-c", self.k.path] + list(args), capture_output=True,
                              text=True, timeout=30)

    def test_socket_mode_0600(self):
        mode = stat.S_IMODE(os.stat(self.k.socket_path).st_mode)
        self.assertEqual(mode, 0o600)

    def test_status_json_and_human(self):
        st = self.k.ctl("status")
        for key in ("Uptime", "Queued", "Deferred", "Sessions"):
            self.assertIsInstance(st[key], int, key)
        p = self.run_ctl("status", "--json")       # --json after the command
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(set(json.loads(p.stdout)) >= {"Uptime", "Queued"}, True)
        p = self.run_ctl("status")
        self.assertEqual(p.returncode, 0)
        self.assertIn("Queued", p.stdout)
        self.assertIn(self.k.path, p.stdout)

    def test_quota_counts_accepted_recipients(self):
        before = self.k.ctl("quota")
        self.assertEqual(before["Max24HourSend"], 100)
        self.assertEqual(before["MaxSendRate"], 10)
        self.assertIsInstance(before["SentLast24Hours"], int)
        code, _ = send(self.k, "a@example.test", ["x1@dest.test", "x2@dest.test"])
        self.assertEqual(code, 250)
        after = self.k.ctl("quota")
        self.assertEqual(after["SentLast24Hours"], before["SentLast24Hours"] + 2)
        p = self.run_ctl("quota")
        self.assertIn("100", p.stdout)

    def test_suppression_cycle(self):
        self.k.ctl("suppression", "add", "Someone@Dest.Test")
        lst = self.k.ctl("suppression", "list")["SuppressedDestinationSummaries"]
        ent = [e for e in lst if e["EmailAddress"] == "someone@dest.test"]
        self.assertEqual(len(ent), 1)
        self.assertEqual(ent[0]["Reason"], "BOUNCE")
        self.assertRegex(ent[0]["LastUpdateTime"], r"^\d{4}-\d\d-\d\dT")
        p = self.run_ctl("suppression", "list")
        self.assertIn("someone@dest.test", p.stdout)
        p = self.run_ctl("suppression", "add", "x@dest.test", "--reason", "SPAM")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("reason", p.stderr.lower())
        self.k.ctl("suppression", "remove", "someone@dest.test")
        p = self.run_ctl("suppression", "remove", "someone@dest.test")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("someone@dest.test", p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1)

    def test_reload_good_and_bad(self):
        original = open(self.k.path).read()
        try:
            cfg = json.loads(original)
            cfg["account"]["max_24h_send"] = 777
            self.k.write_config(cfg)
            self.k.ctl("reload")
            self.assertEqual(self.k.ctl("quota")["Max24HourSend"], 777)
            self.k.write_config(text=original.replace('"max_recipients"', '"max_recipientz"'))
            p = self.run_ctl("reload")
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("max_recipientz", p.stderr)
            self.assertEqual(self.k.ctl("quota")["Max24HourSend"], 777)   # unchanged
        finally:
            self.k.write_config(text=original)
            self.k.ctl("reload")
        self.assertEqual(self.k.ctl("quota")["Max24HourSend"], 100)

    def test_unknown_command_and_no_daemon(self):
        p = self.run_ctl("frobnicate")
        self.assertNotEqual(p.returncode, 0)
        p = subprocess.run([KILNCTL, "-s", "/nonexistent/kilnd.sock", "status"], capture_output=True,
                           text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("/nonexistent/kilnd.sock", p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1)


if __name__ == "__main__":
    main()
