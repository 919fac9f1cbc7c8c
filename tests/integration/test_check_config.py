"""test_check_config.py — `kilnd --check-config` on the shipped config and on broken files:
exit status, the summary, and errors that name the file, the line and the key."""
import os
import subprocess
import tempfile
import unittest

from kilntest import KILND, SRCDIR, main


def check(path):
    return subprocess.run([KILND, "--check-config", "-c", path], capture_output=True, text=True,
                          timeout=30)


class CheckConfig(unittest.TestCase):
    def test_shipped_config_is_valid(self):
        p = check(os.path.join(SRCDIR, "conf", "kiln.yaml"))
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout
        for word in ("transactional", "marketing", "az1", "az2", "az3", "txn", "127.0.0.10"):
            self.assertIn(word, out)

    def test_examples_are_valid(self):
        d = os.path.join(SRCDIR, "conf", "examples")
        files = [f for f in os.listdir(d) if f.endswith(".yaml")]
        self.assertTrue(files)
        for f in files:
            p = check(os.path.join(d, f))
            self.assertEqual(p.returncode, 0, f + ": " + p.stderr)

    def bad(self, text, *expect):
        with tempfile.TemporaryDirectory() as t:
            path = os.path.join(t, "bad.yaml")
            with open(path, "w") as f:
                f.write(text)
            p = check(path)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn(path, p.stderr)
            for e in expect:
                self.assertIn(e, p.stderr)
            return p.stderr

    BASE = """server:
  hostname: mta.example.test
zones: [az1]
ips:
  - {address: 127.0.0.10, zone: az1, pool: p}
pools:
  - {name: p}
configuration_sets:
  - {name: s, pool: p}
default_configuration_set: s
"""

    def test_base_is_valid(self):
        with tempfile.TemporaryDirectory() as t:
            path = os.path.join(t, "ok.yaml")
            with open(path, "w") as f:
                f.write(self.BASE)
            p = check(path)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("warning", p.stdout.lower())   # a pool with 1 IP gets a warning

    def test_unknown_key(self):
        self.bad(self.BASE.replace("  hostname:", "  hostnme: x\n  hostname:"), ":2:", "hostnme")

    def test_bad_size(self):
        self.bad(self.BASE + "submission:\n  max_message_size: 10XB\n", ":12:", "max_message_size")

    def test_unknown_zone(self):
        self.bad(self.BASE.replace("zone: az1, pool", "zone: az9, pool"), ":5:", "az9")

    def test_yaml_syntax_error(self):
        self.bad(self.BASE + "routes: [\n", "bad.yaml")

    def test_missing_file(self):
        p = check("/nonexistent/kiln.yaml")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("/nonexistent/kiln.yaml", p.stderr)


if __name__ == "__main__":
    main()
