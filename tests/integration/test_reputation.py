"""test_reputation.py — `kilnctl reputation` (issue 14 item 7): the account's bounce and
complaint rates (SES's reputation dashboard) over the 14 days of send-statistics buckets,
with SES's thresholds (bounce 5 % WARNING / 10 % AT_RISK, complaint 0.1 % / 0.5 %), from
the mailbox simulator's bounces and complaints: --json's ReputationMetrics and the human
table with the thresholds; no sending yet: rates 0, HEALTHY and a note; only deliveries:
HEALTHY; exactly 5 % bounces: WARNING."""
import calendar
import time
import unittest

from kilntest import Kiln, main, send, wait_for

SIM = "simulator.amazonses.com"
FIELDS = ["BounceRate", "BounceStatus", "Bounces", "ComplaintRate", "ComplaintStatus",
          "Complaints", "DeliveryAttempts", "Note", "Thresholds", "WindowEnd", "WindowStart"]
THRESHOLDS = {"BounceRateWarning": 0.05, "BounceRateAtRisk": 0.10,
              "ComplaintRateWarning": 0.001, "ComplaintRateAtRisk": 0.005}


def epoch(iso):
    return calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))


class Reputation(unittest.TestCase):
    def setUp(self):
        self.k = Kiln()
        self.k.start()

    def tearDown(self):
        rc = self.k.stop()
        self.k.cleanup()
        self.assertEqual(rc, 0)

    def submit(self, who, n=1):
        for i in range(n):
            code, text = send(self.k, "app@example.test", [who + "@" + SIM],
                              subject="rep %s %d" % (who, i))
            self.assertEqual(code, 250, text)

    def metrics(self, attempts, bounces, complaints):
        """ReputationMetrics once kilnd counted what the test sent."""
        def ready():
            m = self.k.ctl("reputation")["ReputationMetrics"]
            got = (m["DeliveryAttempts"], m["Bounces"], m["Complaints"])
            return m if got == (attempts, bounces, complaints) else None
        return wait_for(ready, 15, 0.1, "reputation to count %d/%d/%d" %
                        (attempts, bounces, complaints))

    def test_empty(self):
        data = self.k.ctl("reputation")
        self.assertEqual(list(data), ["ReputationMetrics"])
        m = data["ReputationMetrics"]
        self.assertEqual(sorted(m), FIELDS)
        self.assertEqual((m["DeliveryAttempts"], m["Bounces"], m["Complaints"]), (0, 0, 0))
        self.assertEqual((m["BounceRate"], m["ComplaintRate"]), (0, 0))
        self.assertEqual((m["BounceStatus"], m["ComplaintStatus"]), ("HEALTHY", "HEALTHY"))
        self.assertIn("no sending volume", m["Note"])
        self.assertEqual(m["Thresholds"], THRESHOLDS)
        # The window: 14 days of 15-minute buckets ending now.
        start, end = epoch(m["WindowStart"]), epoch(m["WindowEnd"])
        self.assertEqual(start % 900, 0)
        self.assertLessEqual(abs(end - time.time()), 120)
        self.assertTrue(14 * 86400 <= end - start < 14 * 86400 + 900, (start, end))
        p = self.k.ctl("reputation", json_out=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("no sending volume", p.stdout)
        self.assertRegex(p.stdout, r"(?m)^bounce\s+0\.00%\s+0\s+0\s+HEALTHY\s+5%\s+10%$")

    def test_at_risk(self):
        self.submit("success", 8)
        self.submit("bounce")
        self.submit("complaint")
        m = self.metrics(10, 1, 1)
        self.assertAlmostEqual(m["BounceRate"], 0.10)
        self.assertAlmostEqual(m["ComplaintRate"], 0.10)
        self.assertEqual(m["BounceStatus"], "AT_RISK")
        self.assertEqual(m["ComplaintStatus"], "AT_RISK")
        self.assertIsNone(m["Note"])
        self.assertEqual(m["Thresholds"], THRESHOLDS)
        # Rates print as people write them (no 0.10000000000000001).
        raw = self.k.ctl("reputation", "--json", json_out=False).stdout
        self.assertIn('"BounceRate": 0.1,', raw)
        self.assertIn('"ComplaintRateWarning": 0.001,', raw)
        # The counts are the send statistics' (kilnctl stats) over the same buckets.
        pts = self.k.ctl("stats")["SendDataPoints"]
        self.assertEqual(sum(p["DeliveryAttempts"] for p in pts), 10)
        self.assertTrue(all(epoch(p["Timestamp"]) >= epoch(m["WindowStart"]) for p in pts))

        p = self.k.ctl("reputation", json_out=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertRegex(lines[0], r"^window \S+Z to \S+Z \(14 days of 15-minute buckets\)$")
        self.assertEqual(lines[1].split(), ["METRIC", "RATE", "COUNT", "ATTEMPTS", "STATUS",
                                            "WARNING", "AT_RISK"])
        self.assertEqual(lines[2].split(), ["bounce", "10.00%", "1", "10", "AT_RISK", "5%", "10%"])
        self.assertEqual(lines[3].split(),
                         ["complaint", "10.00%", "1", "10", "AT_RISK", "0.1%", "0.5%"])
        self.assertEqual(len(lines), 4, p.stdout)

    def test_healthy_then_warning(self):
        self.submit("success", 19)
        m = self.metrics(19, 0, 0)
        self.assertEqual((m["BounceRate"], m["ComplaintRate"]), (0, 0))
        self.assertEqual((m["BounceStatus"], m["ComplaintStatus"]), ("HEALTHY", "HEALTHY"))
        self.assertIsNone(m["Note"])
        p = self.k.ctl("reputation", json_out=False)
        self.assertRegex(p.stdout, r"(?m)^complaint\s+0\.00%\s+0\s+19\s+HEALTHY\s+0\.1%\s+0\.5%$")
        self.assertNotIn("no sending", p.stdout)
        # One bounce in 20 attempts: exactly 5 %, SES's review threshold.
        self.submit("bounce")
        m = self.metrics(20, 1, 0)
        self.assertAlmostEqual(m["BounceRate"], 0.05)
        self.assertEqual((m["BounceStatus"], m["ComplaintStatus"]), ("WARNING", "HEALTHY"))

    def test_usage(self):
        p = self.k.ctl("reputation", "extra", expect_ok=False, json_out=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("unexpected argument", p.stderr)


if __name__ == "__main__":
    main()
