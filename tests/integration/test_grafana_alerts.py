"""test_grafana_alerts.py — conf/prometheus/kiln-alerts.yml and conf/grafana/kiln-dashboard.json
(issue 15, item 4) checked with Prometheus's own promtool (Debian's prometheus package):
`promtool check rules` accepts the rules; `promtool test rules` fires each alert on synthetic
series exactly where it should (an IP down for 5 minutes, a zone down, SES's bounce and
complaint levels: 6 % warns and 4 % does not, 11 % is at risk, ...); every dashboard
expression is valid PromQL (checked as recording rules); and every metric the rules and the
dashboard name exists in a real scrape of kilnd's /metrics after a delivery."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilntest import Kiln, Sink, free_port, send, wait_for  # noqa: E402

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
RULES = os.path.join(SRC, "conf", "prometheus", "kiln-alerts.yml")
DASHBOARD = os.path.join(SRC, "conf", "grafana", "kiln-dashboard.json")
PROMTOOL = shutil.which("promtool")

ALERT_TESTS = """
rule_files: [%s]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'kiln_ip_up{pool="transactional",ip="127.0.0.12",zone="az3"}'
        values: '1 0 0 0 0 0 0 0'
      - series: 'kiln_ip_up{pool="transactional",ip="127.0.0.10",zone="az1"}'
        values: '1 1 1 1 1 1 1 1'
      - series: 'kiln_zone_up{zone="az3"}'
        values: '1 0 0 0'
      - series: 'kiln_reputation_bounce_ratio{instance="a"}'
        values: '0.06x20'
      - series: 'kiln_reputation_bounce_ratio{instance="b"}'
        values: '0.04x20'
      - series: 'kiln_reputation_bounce_ratio{instance="c"}'
        values: '0.11x20'
      - series: 'kiln_reputation_complaint_ratio{instance="a"}'
        values: '0.002x20'
      - series: 'kiln_reputation_complaint_ratio{instance="b"}'
        values: '0.0009x20'
    alert_rule_test:
      - eval_time: 4m
        alertname: KilnIpDown
        exp_alerts: []
      - eval_time: 7m
        alertname: KilnIpDown
        exp_alerts:
          - exp_labels: {severity: warning, pool: transactional, ip: 127.0.0.12, zone: az3}
            exp_annotations:
              summary: "dedicated IP 127.0.0.12 (transactional, zone az3) is out of rotation"
              description: "Its circuit is open, it is draining, or its zone is down: kilnctl ips shows why."
      - eval_time: 3m
        alertname: KilnZoneDown
        exp_alerts:
          - exp_labels: {severity: critical, zone: az3}
            exp_annotations: {summary: "zone az3 is down: its IPs send nothing"}
      - eval_time: 16m
        alertname: KilnBounceRateWarning
        exp_alerts:
          - exp_labels: {severity: warning, instance: a}
            exp_annotations: {summary: "bounce rate 6%% is over SES's 5 %% warning level"}
          - exp_labels: {severity: warning, instance: c}
            exp_annotations: {summary: "bounce rate 11%% is over SES's 5 %% warning level"}
      - eval_time: 16m
        alertname: KilnBounceRateAtRisk
        exp_alerts:
          - exp_labels: {severity: critical, instance: c}
            exp_annotations: {summary: "bounce rate 11%% is over SES's 10 %% at-risk level"}
      - eval_time: 16m
        alertname: KilnComplaintRateWarning
        exp_alerts:
          - exp_labels: {severity: warning, instance: a}
            exp_annotations: {summary: "complaint rate 0.2%% is over SES's 0.1 %% warning level"}
      - eval_time: 16m
        alertname: KilnComplaintRateAtRisk
        exp_alerts: []
"""


def names_in(expr):
    """Metric names an expression reads (kiln_* and process_*), histogram suffixes removed."""
    out = set()
    for n in re.findall(r"\b((?:kiln|process)_[a-z0-9_]+)", expr):
        out.add(re.sub(r"_(bucket|sum|count)$", "", n))
    return out


def rule_exprs():
    import yaml
    with open(RULES) as f:
        doc = yaml.safe_load(f)
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


@unittest.skipUnless(PROMTOOL, "needs promtool (Debian's prometheus package)")
class AlertRulesTest(unittest.TestCase):
    def test_rules_check_and_fire_where_they_should(self):
        p = subprocess.run([PROMTOOL, "check", "rules", RULES], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("SUCCESS: 8 rules found", p.stdout)
        with tempfile.TemporaryDirectory() as d:
            t = os.path.join(d, "kiln-alerts-test.yml")
            with open(t, "w") as f:
                f.write(ALERT_TESTS % json.dumps(os.path.abspath(RULES)))
            p = subprocess.run([PROMTOOL, "test", "rules", t], capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertIn("SUCCESS", p.stdout)

    def test_dashboard_expressions_are_promql(self):
        exprs = dashboard_exprs()
        self.assertGreaterEqual(len(exprs), 15)
        with tempfile.TemporaryDirectory() as d:
            t = os.path.join(d, "dashboard-as-rules.yml")
            with open(t, "w") as f:
                f.write("groups:\n  - name: dashboard\n    rules:\n")
                for i, e in enumerate(exprs):
                    f.write("      - record: kiln:dashboard_%d\n        expr: %s\n" % (i, json.dumps(e)))
            p = subprocess.run([PROMTOOL, "check", "rules", t], capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)


class NamesExistTest(unittest.TestCase):
    def test_every_name_is_in_a_real_scrape(self):
        from prometheus_client.parser import text_string_to_metric_families
        wanted = set()
        for e in rule_exprs() + dashboard_exprs():
            wanted |= names_in(e)
        self.assertIn("kiln_ip_up", wanted)
        with Sink("127.0.0.23") as sink:
            mport = free_port()
            with Kiln(routes=[{"domain": "dest.test", "host": sink.host, "port": sink.port}],
                      metrics={"listen": ["127.0.0.1:%d" % mport]}) as k:
                code, text = send(k, "app@example.test", ["one@dest.test"])
                self.assertEqual(code, 250, text)
                wait_for(lambda: sink.messages, 20, 0.1, "the delivery")
                with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10) as r:
                    scraped = r.read().decode()
        have = {fam.name for fam in text_string_to_metric_families(scraped)}
        # the parser names a counter family without its _total suffix
        have |= {n + "_total" for n in have}
        self.assertEqual(sorted(wanted - have), [], "names the rules or dashboard use but kilnd does not export")


if __name__ == "__main__":
    unittest.main(verbosity=2)
