#!/usr/bin/env python3
"""test_webui.py — the operator web page (issue 15 item 3) against a real kilnd that
delivered a few messages to a sink and holds one deferred message.

Without a browser: the page and its files carry Content-Security-Policy default-src 'self',
404 for unknown paths, 405 for POST, 403 for a non-loopback client without token_file;
/api/state.json's IPs equal `kilnctl --json ips`, /api/forecast.json equals `kilnctl --json
forecast`, /api/explain.json equals `kilnctl --json queue --explain`, /api/warmup.json's bars
add up to what the sink received.

In a real browser (Debian's chromium + chromium-driver, driven by python3-selenium,
headless): the IP table shows each IP's state and warm-up values as kilnctl says, each IP's
warm-up chart has one bar per day of its curve and one point per forecast day, the forecast
table's first row is kilnctl forecast's day 0, the explain box explains the deferred
message; then `kilnctl zone down az3` shows up within two refreshes without a page reload
(the refresh counter rose, a marker set in the page survived, the explain answer is still
there), with its IP down and a zone_down line in the timeline; screenshots are saved
($KILN_ARTIFACTS, else the test's temp dir) and the browser console has no SEVERE entry.
Skipped (that test only) when chromium, chromedriver or selenium is missing."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilntest import Kiln, Sink, free_port, main, send, wait_for  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.common.exceptions import StaleElementReferenceException
except ImportError:   # pragma: no cover
    webdriver = None

N = 4           # messages delivered
M = 2           # recipients of the deferred message
CSP = "default-src 'self'"


def get(url, method="GET", token=None):
    req = urllib.request.Request(url, method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def non_loopback_ipv4():
    p = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                       capture_output=True, text=True)
    for line in p.stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            return parts[parts.index("inet") + 1].split("/")[0]
    return None


class WebUiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rule = lambda rcpt, n: "451 4.7.1 try again later (greylisted)" if rcpt.startswith("later") else None
        cls.sink = Sink("127.0.0.23", rule=rule)
        cls.sink.__enter__()
        cls.mport = free_port()
        cls.k = Kiln(delivery={"retry": {"first": "60s", "max_interval": "60s", "factor": 2}},
                     routes=[{"domain": "dest.test", "host": cls.sink.host, "port": cls.sink.port}],
                     metrics={"listen": ["127.0.0.1:%d" % cls.mport]})
        cls.k.__enter__()
        cls.base = "http://127.0.0.1:%d" % cls.mport
        for i in range(N):
            code, text = send(cls.k, "app@example.test", ["ok%d@dest.test" % i])
            assert code == 250, text
        code, text = send(cls.k, "app@example.test", ["later%d@dest.test" % i for i in range(M)])
        assert code == 250, text
        cls.deferred_id = text.split()[-1]
        wait_for(lambda: sum(len(m["rcpts"]) for m in cls.sink.messages) == N
                 and len(cls.sink.handler.attempts) == N + M, 20, 0.1, "deliveries")
        wait_for(lambda: json.loads(get(cls.base + "/api/state.json")[2])["Queue"]["Deferred"] == M,
                 15, 0.1, "the deferred message in the queue")
        cls.artifacts = os.environ.get("KILN_ARTIFACTS") or tempfile.mkdtemp(prefix="kiln-webui-")
        os.makedirs(cls.artifacts, exist_ok=True)

    @classmethod
    def tearDownClass(cls):
        cls.k.__exit__(None, None, None)
        cls.sink.__exit__(None, None, None)

    def json(self, path):
        st, h, body = get(self.base + path)
        self.assertEqual(st, 200, body)
        self.assertEqual(h.get("Content-Type"), "application/json")
        self.assertIn(CSP, h.get("Content-Security-Policy"))
        return json.loads(body)

    # ---------------------------------------------------------------- without a browser

    def test_http_page_and_errors(self):
        for path, ctype in [("/", "text/html; charset=utf-8"),
                            ("/assets/app.js", "text/javascript; charset=utf-8"),
                            ("/assets/style.css", "text/css; charset=utf-8"),
                            ("/assets/favicon.svg", "image/svg+xml")]:
            st, h, body = get(self.base + path)
            self.assertEqual(st, 200, path)
            self.assertEqual(h.get("Content-Type"), ctype, path)
            self.assertTrue(h.get("Content-Security-Policy").startswith(CSP), path)
            self.assertEqual(h.get("X-Content-Type-Options"), "nosniff")
            self.assertNotIn("https://", body if path != "/assets/app.js" else "")
        self.assertIn('<script src="/assets/app.js"', get(self.base + "/")[2])
        self.assertEqual(get(self.base + "/", method="HEAD")[0], 200)
        for path in ("/nope", "/assets/nope.js", "/api/nope.json", "/index.html", "/assets/"):
            self.assertEqual(get(self.base + path)[0], 404, path)
        for path in ("/", "/api/state.json"):
            self.assertEqual(get(self.base + path, method="POST")[0], 405, path)
        # explain and forecast refuse what they cannot answer
        self.assertEqual(get(self.base + "/api/explain.json")[0], 400)
        st, _, body = get(self.base + "/api/explain.json?id=nosuchmessage")
        self.assertEqual(st, 404)
        self.assertIn("no recipient in the queue", json.loads(body)["message"])
        st, _, body = get(self.base + "/api/forecast.json?set=bulk")
        self.assertEqual(st, 400)
        self.assertIn("unknown configuration set: bulk", json.loads(body)["message"])
        self.assertEqual(get(self.base + "/api/forecast.json?days=0")[0], 400)
        self.assertEqual(get(self.base + "/api/forecast.json?days=x")[0], 400)
        # a reload is on the timeline
        self.k.ctl("reload")
        tl = json.loads(get(self.base + "/api/state.json")[2])["Timeline"]
        self.assertEqual(tl[0]["Kind"], "config_reload", tl)
        self.assertIn("kiln.yaml", tl[0]["Text"])

    def test_http_data_equals_kilnctl(self):
        s = self.json("/api/state.json")
        for key in ("Now", "Hostname", "DedicatedIps", "Pools", "Zones", "Queue", "Recent", "Timeline"):
            self.assertIn(key, s)
        ips = self.k.ctl("ips")["DedicatedIps"]
        strip = lambda l: sorted([{k: v for k, v in x.items() if k != "kiln"} for x in l], key=lambda x: x["Ip"])
        self.assertEqual(strip(s["DedicatedIps"]), strip(ips))
        self.assertEqual({z["Zone"] for z in s["Zones"]}, {"az1", "az2", "az3"})
        self.assertEqual(s["Queue"]["Deferred"], M)
        rows = [r for r in s["Queue"]["Queue"] if r["State"] == "deferred"]
        self.assertEqual([(r["ConfigurationSet"], r["Pool"], r["Domain"], r["Recipients"]) for r in rows],
                         [("txn", "transactional", "dest.test", M)])
        rec = {(g["Outcome"], g["Reason"]): g for g in s["Recent"]["ByReason"]}
        self.assertEqual(rec[("deferred", "SpamDetected")]["Count"], M)
        self.assertIn("greylisted", rec[("deferred", "SpamDetected")]["LastReply"])

        f = self.json("/api/forecast.json?set=txn&days=7")["Forecast"]
        want = self.k.ctl("forecast", "--set", "txn", "--days", "7")["Forecast"]
        for x in (f, want):   # made a few ms apart: the dates differ by that
            x.pop("Now")
            for st in x["ConfigurationSets"]:
                for d in st["Daily"]:
                    self.assertRegex(d.pop("Date"), r"^\d{4}-\d\d-\d\dT")
        self.assertEqual(f, want)

        e = self.json("/api/explain.json?id=" + self.deferred_id)
        self.assertEqual(e, self.k.ctl("queue", "--explain", self.deferred_id))

        w = self.json("/api/warmup.json")
        self.assertEqual(sorted(ip["Ip"] for ip in w["Ips"]), sorted(x["Ip"] for x in ips))
        sent = sum(d["Sent"] for ip in w["Ips"] for d in ip["Curve"])
        self.assertEqual(sent, N)   # every delivered recipient is a bar somewhere
        for ip in w["Ips"]:
            self.assertGreaterEqual(len(ip["Curve"]), 1)
            self.assertEqual(len(ip["Forecast"]), w["ForecastDays"] - 1)
            k = next(x for x in ips if x["Ip"] == ip["Ip"])
            today = ip["Curve"][-1]
            self.assertEqual(today["Cap"], k["DailyCap"] if k["DailyCap"] >= 0 else None)

    def test_http_auth_non_loopback(self):
        host_ip = non_loopback_ipv4()
        if not host_ip:
            self.skipTest("no non-loopback IPv4 address on this host")
        port = free_port()
        with Kiln(metrics={"listen": ["0.0.0.0:%d" % port]}):
            self.assertEqual(get("http://127.0.0.1:%d/" % port)[0], 200)
            for path in ("/", "/api/state.json", "/assets/app.js"):
                st, _, body = get("http://%s:%d%s" % (host_ip, port, path))
                self.assertEqual(st, 403, path + ": " + body)

    # ---------------------------------------------------------------- in a real browser

    def test_browser(self):
        if webdriver is None or not CHROMIUM or not CHROMEDRIVER:
            self.skipTest("chromium, chromedriver or python3-selenium is not installed")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,2400"):
            opts.add_argument(a)
        if os.geteuid() == 0:
            opts.add_argument("--no-sandbox")
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
        try:
            self.browse(drv)
        finally:
            drv.quit()

    def shot(self, drv, name):
        path = os.path.join(self.artifacts, "webui-%s.png" % name)
        drv.save_screenshot(path)
        print("screenshot: " + path, flush=True)

    def refreshes(self, drv):
        return drv.execute_script("return window.kiln.refreshes")

    def browse(self, drv):
        drv.set_page_load_timeout(20)
        drv.get(self.base + "/")
        wait_for(lambda: self.refreshes(drv) >= 1, 15, 0.1, "the first refresh")
        drv.execute_script("window.__notReloaded = 42")

        # the IP table: one row per IP with kilnctl's state and warm-up figures
        ips = self.k.ctl("ips")["DedicatedIps"]
        rows = drv.find_elements(By.CSS_SELECTOR, "#ips tbody tr")
        self.assertEqual(sorted(r.get_attribute("data-ip") for r in rows), sorted(x["Ip"] for x in ips))
        for x in ips:
            row = drv.find_element(By.CSS_SELECTOR, '#ips tr[data-ip="%s"]' % x["Ip"])
            cell = lambda cls: row.find_element(By.CSS_SELECTOR, "td." + cls).text
            self.assertEqual(cell("state"), x["State"])
            self.assertEqual(cell("warmup-status"), x["WarmupStatus"])
            self.assertEqual(cell("warmup-pct"), "%d %%" % x["WarmupPercentage"])
            self.assertEqual(cell("daily-cap"), "none" if x["DailyCap"] < 0 else "{:,}".format(x["DailyCap"]))
            self.assertEqual(cell("sent-24h"), "{:,}".format(x["SentLast24Hours"]))

        # the warm-up charts: a bar per day of the curve, a point per forecast day
        w = json.loads(get(self.base + "/api/warmup.json")[2])
        for ip in w["Ips"]:
            svg = drv.find_element(By.CSS_SELECTOR, 'svg[data-ip="%s"]' % ip["Ip"])
            self.assertEqual(len(svg.find_elements(By.CSS_SELECTOR, "rect.bar")), len(ip["Curve"]))
            self.assertEqual(len(svg.find_elements(By.CSS_SELECTOR, "circle.forecast-point")),
                             len(ip["Forecast"]))
            self.assertEqual(len(svg.find_elements(By.CSS_SELECTOR, "circle.cap-point")),
                             len([d for d in ip["Curve"] if d["Cap"] is not None]))

        # the forecast table's first row is kilnctl forecast's day 0
        f = self.k.ctl("forecast")["Forecast"]
        first = drv.find_element(By.CSS_SELECTOR, '#forecast tbody tr[data-day="0"]')
        for s in f["ConfigurationSets"]:
            td = first.find_element(By.CSS_SELECTOR, 'td[data-set="%s"]' % s["ConfigurationSet"])
            self.assertEqual(int(td.get_attribute("data-value")), s["Daily"][0]["RecipientsPerDay"])
        self.shot(drv, "1-loaded")

        # explain the deferred message
        drv.find_element(By.ID, "explain-id").send_keys(self.deferred_id)
        drv.find_element(By.CSS_SELECTOR, "#explain-form button").click()
        wait_for(lambda: drv.find_elements(By.CSS_SELECTOR, "#explain-table tbody tr"), 10, 0.1, "explain")
        ex = self.k.ctl("queue", "--explain", self.deferred_id)
        erows = drv.find_elements(By.CSS_SELECTOR, "#explain-table tbody tr")
        self.assertEqual(len(erows), len(ex["Recipients"]))
        for r, want in zip(erows, ex["Recipients"]):
            self.assertIn(want["Recipient"], r.text)
            self.assertIn(want["Reason"], r.text)

        # a zone goes down elsewhere: the page shows it within two refreshes, no reload
        r0 = self.refreshes(drv)
        t0 = time.monotonic()
        self.k.ctl("zone", "down", "az3")
        down_ip = next(x["Ip"] for x in ips if x["Zone"] == "az3")

        def shows_down():
            try:
                z = drv.find_element(By.CSS_SELECTOR, '#zones tr[data-zone="az3"] td.state').text
                st = drv.find_element(By.CSS_SELECTOR,
                                      '#ips tr[data-ip="%s"] td.state' % down_ip).text
            except StaleElementReferenceException:   # a refresh replaced the row meanwhile
                return False
            return z == "down" and st == "down"
        wait_for(shows_down, 12, 0.2, "az3 and its IP shown down")
        self.assertLessEqual(self.refreshes(drv) - r0, 2)
        self.assertGreater(self.refreshes(drv), r0)
        print("zone down shown after %.1f s, %d refresh(es)" % (time.monotonic() - t0, self.refreshes(drv) - r0),
              flush=True)
        self.assertEqual(drv.execute_script("return window.__notReloaded"), 42)
        self.assertEqual(len(drv.find_elements(By.CSS_SELECTOR, "#explain-table tbody tr")), len(ex["Recipients"]))
        self.assertEqual(drv.find_element(By.ID, "explain-id").get_attribute("value"), self.deferred_id)
        items = drv.find_elements(By.CSS_SELECTOR, '#timeline li[data-kind="zone_down"]')
        self.assertTrue(items and "az3" in items[0].text, [i.text for i in items])
        self.shot(drv, "2-zone-down")

        severe = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]
        self.assertEqual(severe, [])
        self.k.ctl("zone", "up", "az3")


if __name__ == "__main__":
    main()
