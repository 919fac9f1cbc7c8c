"""test_forecast.py — `kilnctl forecast` (issue 15 item 2) against a running kilnd: set txn on
a pool of one new IP (SES's ramp: first_day 50, target 50,000, 45 days) and one `warmup:
done` IP. --json over 45 days gives day 0 = 50 + 50,000, every later day the ramp's exact cap
(computed here with exact integers) plus 50,000, and the new IP reaching its target 45 days
after its lease; the text output has the per-day table and the IP rows; an unknown set and
--days 0 fail with their messages (kilnd's refusal: exit 1; kilnctl's usage check: exit 2);
with `advance: volume` each day also says what must be sent (half of each warming cap)."""
import calendar
import time
import unittest

from kilntest import Kiln, main

DAY = 86400


def ramp_cap(d, first=50, target=50000, days=45):
    """floor(first * (target/first)^(d/days)) by exact integers: the n with
    n^days <= first^days * (target/first)^d < (n+1)^days."""
    if d >= days:
        return target
    ratio = target // first
    rhs = first ** days * ratio ** d
    lo, hi = first, target
    while lo < hi:                    # largest n with n^days <= rhs
        mid = (lo + hi + 1) // 2
        if mid ** days <= rhs:
            lo = mid
        else:
            hi = mid - 1
    return lo


def epoch(iso):
    return calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S")) + int(iso[20:23]) / 1000


def config_over(advance="calendar"):
    return dict(
        ips=[{"address": "127.0.0.10", "zone": "az1", "pool": "transactional"},
             {"address": "127.0.0.12", "zone": "az3", "pool": "transactional", "warmup": "done"},
             {"address": "127.0.0.13", "zone": "az2", "pool": "marketing"}],
        pools=[{"name": "transactional", "scaling": "standard"},
               {"name": "marketing", "scaling": "managed"}],
        configuration_sets=[{"name": "txn", "pool": "transactional"},
                            {"name": "promo", "pool": "marketing"}],
        warmup={"days": 45, "first_day": 50, "target": 50000, "advance": advance})


class Forecast(unittest.TestCase):
    def start(self, advance="calendar"):
        self.before = time.time()
        self.k = Kiln(**config_over(advance))
        self.k.start()
        self.after = time.time()

    def tearDown(self):
        rc = self.k.stop()
        self.k.cleanup()
        self.assertEqual(rc, 0)

    def test_ses_ramp(self):
        self.start()
        f = self.k.ctl("forecast", "--set", "txn", "--days", "45")["Forecast"]
        self.assertEqual((f["Days"], f["Advance"], f["FirstDay"], f["Target"], f["RampDays"]),
                         (45, "calendar", 50, 50000, 45))
        [s] = f["ConfigurationSets"]
        self.assertEqual((s["ConfigurationSet"], s["PoolName"], s["Scaling"]),
                         ("txn", "transactional", "standard"))
        self.assertEqual(s["Ips"], ["127.0.0.10", "127.0.0.12"])
        self.assertEqual(s["Excluded"], [])
        self.assertEqual(s["SharedWith"], [])
        per_day = [row["RecipientsPerDay"] for row in s["Daily"]]
        self.assertEqual(per_day[0], 50 + 50000)
        self.assertEqual(per_day, [ramp_cap(d) + 50000 for d in range(45)])
        self.assertEqual(per_day[15], 500 + 50000)       # exactly 50 * 1000^(1/3)
        self.assertEqual(per_day[44], 42884 + 50000)
        self.assertNotIn("NeededPerDay", s["Daily"][0])  # calendar advance
        now = epoch(f["Now"])
        for row in s["Daily"]:
            self.assertAlmostEqual(epoch(row["Date"]), now + row["Day"] * DAY, delta=0.002)
        ips = {ip["Ip"]: ip for ip in f["Ips"]}
        self.assertEqual(sorted(ips), ["127.0.0.10", "127.0.0.12"])   # only txn's pool
        new, warm = ips["127.0.0.10"], ips["127.0.0.12"]
        self.assertEqual(new["DailyCaps"], [ramp_cap(d) for d in range(45)])
        self.assertEqual((new["WarmupStatus"], new["ReachesTarget"], new["ReachesTargetDay"]),
                         ("IN_PROGRESS", "day 45", 45))
        # the target on the 45th day after the lease (kilnd's start)
        reach = epoch(new["ReachesTargetAt"])
        self.assertGreaterEqual(reach, self.before - 1 + 45 * DAY)
        self.assertLessEqual(reach, self.after + 1 + 45 * DAY)
        self.assertEqual((warm["WarmupStatus"], warm["ReachesTarget"], warm["ReachesTargetDay"],
                          warm["ReachesTargetAt"]), ("DONE", "done", 0, None))
        self.assertEqual(warm["DailyCaps"], [50000] * 45)

        # 14 days by default, every set; the managed IP's four providers double a day
        f = self.k.ctl("forecast")["Forecast"]
        self.assertEqual(f["Days"], 14)
        self.assertEqual([s["ConfigurationSet"] for s in f["ConfigurationSets"]], ["txn", "promo"])
        promo = f["ConfigurationSets"][1]
        self.assertEqual(promo["Scaling"], "managed")
        self.assertEqual([r["RecipientsPerDay"] for r in promo["Daily"]][:4],
                         [200, 400, 800, 1600])
        m = {ip["Ip"]: ip for ip in f["Ips"]}["127.0.0.13"]
        self.assertEqual([p["Provider"] for p in m["Providers"]],
                         ["gmail", "microsoft", "yahoo", "other"])
        self.assertEqual(m["ReachesTarget"], "day 10")

        # the table
        p = self.k.ctl("forecast", "--set", "txn", "--days", "45", json_out=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout
        self.assertIn("forecast for 45 days from ", out)
        self.assertIn("set txn (pool transactional, standard)", out)
        self.assertIn("IPs counted: 127.0.0.10 127.0.0.12", out)
        self.assertRegex(out, r"(?m)^DAY\s+DATE\s+RECIPIENTS/DAY$")
        day0 = time.strftime("%Y-%m-%d", time.gmtime(now))
        self.assertRegex(out, r"(?m)^0\s+%s\s+50050$" % day0)
        self.assertRegex(out, r"(?m)^44\s+\S+\s+92884$")
        self.assertNotRegex(out, r"(?m)^45\s")
        reach_day = time.strftime("%Y-%m-%d", time.gmtime(reach))
        self.assertRegex(out, r"(?m)^127\.0\.0\.10\s+transactional\s+active\s+standard\s+50\s+"
                              r"%s \(day 45\)$" % reach_day)
        self.assertRegex(out, r"(?m)^127\.0\.0\.12\s+transactional\s+active\s+standard\s+50000\s+done$")

        # refusals
        p = self.k.ctl("forecast", "--set", "bulk", expect_ok=False, json_out=False)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stderr.strip(),
                         "kilnctl: unknown configuration set: bulk (known: txn, promo)")
        for bad in ("0", "91", "x"):
            p = self.k.ctl("forecast", "--days", bad, expect_ok=False, json_out=False)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("kilnctl: --days must be an integer from 1 to 90, not %s" % bad, p.stderr)
            self.assertIn("forecast [--set S] [--days N]", p.stderr)     # the usage
        p = self.k.ctl("ips", "--days", "3", expect_ok=False, json_out=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--days applies to forecast only", p.stderr)

    def test_volume_needed(self):
        self.start("volume")
        f = self.k.ctl("forecast", "--set", "txn", "--days", "46")["Forecast"]
        self.assertEqual(f["Advance"], "volume")
        daily = f["ConfigurationSets"][0]["Daily"]
        # fed half of each cap every day, the ramp moves as on the calendar ...
        self.assertEqual([r["RecipientsPerDay"] for r in daily],
                         [ramp_cap(d) + 50000 for d in range(46)])
        # ... and what must be sent is ceil(cap/2) of the warming IP (the warm one needs none)
        self.assertEqual([r["NeededPerDay"] for r in daily],
                         [(ramp_cap(d) + 1) // 2 if d < 45 else 0 for d in range(46)])
        new = {ip["Ip"]: ip for ip in f["Ips"]}["127.0.0.10"]
        self.assertEqual(new["NeededPerDay"][:3], [25, 29, 34])
        p = self.k.ctl("forecast", "--set", "txn", "--days", "3", json_out=False)
        self.assertRegex(p.stdout, r"(?m)^DAY\s+DATE\s+RECIPIENTS/DAY\s+NEEDED/DAY$")
        self.assertRegex(p.stdout, r"(?m)^1\s+\S+\s+50058\s+29$")


if __name__ == "__main__":
    main()
