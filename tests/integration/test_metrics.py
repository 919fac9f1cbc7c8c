"""test_metrics.py — the Prometheus `metrics` listener (issue 15) against a real kilnd
delivering to an aiosmtpd sink: after `kilnctl zone down az3`, N messages delivered and M
recipients answered 451, GET /metrics is parsed with python3-prometheus-client's text parser
and its values equal what happened (N delivered, M deferred with their delay type, IP
127.0.0.12 and zone az3 down, the others up, submissions accepted, latency and commit
histograms filled); `promtool check metrics` accepts the text; 404 and 405 for other paths
and methods; the auth rule: loopback without token_file is served, a non-loopback client
without token_file gets 403, with token_file every client needs the bearer token (401
without or with a wrong one)."""
import os
import shutil
import socket
import subprocess
import sys
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilntest import Kiln, Sink, base_config, free_port, main, send, wait_for  # noqa: E402

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

N, M = 5, 3


def scrape(url, token=None, method="GET"):
    req = urllib.request.Request(url, method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def samples(text):
    """{(name, frozenset(labels.items())): value} of every sample."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(smp, name, **want):
    return sum(v for (n, labels), v in smp.items()
               if n == name and all(dict(labels).get(k) == w for k, w in want.items()))


def non_loopback_ipv4():
    p = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                       capture_output=True, text=True)
    for line in p.stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            return parts[parts.index("inet") + 1].split("/")[0]
    return None


class MetricsTest(unittest.TestCase):
    def test_values_match_what_happened(self):
        rule = lambda rcpt, n: "451 4.7.1 try again later (greylisted)" if rcpt.startswith("later") else None
        with Sink("127.0.0.23", rule=rule) as sink:
            mport = free_port()
            with Kiln(delivery={"retry": {"first": "60s", "max_interval": "60s", "factor": 2}},
                      routes=[{"domain": "dest.test", "host": sink.host, "port": sink.port}],
                      metrics={"listen": ["127.0.0.1:%d" % mport]}) as k:
                url = "http://127.0.0.1:%d/metrics" % mport
                k.ctl("zone", "down", "az3")
                for i in range(N):
                    code, text = send(k, "app@example.test", ["ok%d@dest.test" % i])
                    self.assertEqual(code, 250, text)
                code, text = send(k, "app@example.test", ["later%d@dest.test" % i for i in range(M)])
                self.assertEqual(code, 250, text)
                # refused: an unverified sender at MAIL (SMTP), counted by stage and code
                code, text = send(k, "someone@unverified.test", ["x@dest.test"])
                self.assertEqual(code, 554, text)
                wait_for(lambda: sum(len(m["rcpts"]) for m in sink.messages) == N
                         and len(sink.handler.attempts) == N + M, 20, 0.1, "deliveries")

                def settled():
                    # the queue gauge drops when the outcomes' rows are committed, a moment
                    # after the outcome counters: wait for both
                    st, _, body = scrape(url)
                    smp = samples(body)
                    return smp if total(smp, "kiln_recipients_total", outcome="deferred") == M \
                        and total(smp, "kiln_recipients_total", outcome="delivered") == N \
                        and total(smp, "kiln_queue_recipients", state="queued") == 0 else None
                smp = wait_for(settled, 15, 0.2, "the metrics to count N delivered, M deferred")
                st, ctype, body = scrape(url)
                self.assertEqual(st, 200)
                self.assertEqual(ctype, "text/plain; version=0.0.4; charset=utf-8")
                print("\n--- /metrics (excerpt)\n" + "\n".join(
                    l for l in body.splitlines() if l.startswith(("kiln_recipients", "kiln_ip_up",
                                                                  "kiln_zone", "kiln_queue",
                                                                  "kiln_submissions"))), flush=True)
                # what the sink saw, by the IP that sent it
                self.assertEqual(total(smp, "kiln_recipients_total", outcome="delivered"),
                                 sum(len(m["rcpts"]) for m in sink.messages))
                self.assertEqual(total(smp, "kiln_recipients_total", outcome="deferred",
                                       delay_type="SpamDetected"), M)   # 4.7.1: SES calls it that
                for peer in {m["peer"] for m in sink.messages}:
                    self.assertEqual(total(smp, "kiln_recipients_total", outcome="delivered", ip=peer),
                                     sum(len(m["rcpts"]) for m in sink.messages if m["peer"] == peer))
                self.assertEqual(total(smp, "kiln_recipients_total", ip="127.0.0.12"), 0)
                self.assertEqual(total(smp, "kiln_submissions_total", result="accepted"), N + 1)
                self.assertEqual(total(smp, "kiln_submissions_total", result="rejected",
                                       reason="mail_554"), 1)
                self.assertEqual(total(smp, "kiln_queue_recipients", state="deferred",
                                       pool="transactional"), M)
                self.assertEqual(total(smp, "kiln_queue_recipients", state="queued"), 0)
                self.assertEqual(total(smp, "kiln_ip_up", ip="127.0.0.12", zone="az3"), 0)
                self.assertEqual(total(smp, "kiln_ip_up", ip="127.0.0.10"), 1)
                self.assertEqual(total(smp, "kiln_ip_state", ip="127.0.0.12", state="down"), 1)
                self.assertEqual(total(smp, "kiln_zone_up", zone="az3"), 0)
                self.assertEqual(total(smp, "kiln_zone_up", zone="az1"), 1)
                self.assertEqual(total(smp, "kiln_ip_warmup_ratio", ip="127.0.0.12"), 1)
                self.assertEqual(total(smp, "kiln_ip_sent_24h"), N)
                self.assertEqual(total(smp, "kiln_delivery_latency_seconds_count"), N)
                self.assertGreaterEqual(total(smp, "kiln_spool_commit_seconds_count"), 1)
                self.assertGreater(total(smp, "process_resident_memory_bytes"), 1e6)
                self.assertGreater(total(smp, "process_open_fds"), 5)
                if shutil.which("promtool"):
                    p = subprocess.run(["promtool", "check", "metrics"], input=body,
                                       capture_output=True, text=True)
                    self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
                else:
                    self.fail("promtool (Debian's prometheus package) is not installed")
                self.assertEqual(scrape("http://127.0.0.1:%d/nope" % mport)[0], 404)   # / is the web page
                self.assertEqual(scrape(url, method="POST")[0], 405)

    def test_auth(self):
        mport = free_port()
        host_ip = non_loopback_ipv4()
        with Kiln(metrics={"listen": ["0.0.0.0:%d" % mport]}) as k:
            self.assertEqual(scrape("http://127.0.0.1:%d/metrics" % mport)[0], 200)
            if host_ip:
                st, _, body = scrape("http://%s:%d/metrics" % (host_ip, mport))
                self.assertEqual(st, 403, body)
            tok = os.path.join(k.tmp, "metrics.token")
            with open(tok, "w") as f:
                f.write("s3cret-token-of-metrics-0123\n")
            os.chmod(tok, 0o600)
            self.assertEqual(k.stop(), 0)
            k.stderr.close()
            k.cfg["metrics"]["token_file"] = tok
            k.write_config()
            k.start()
            url = "http://127.0.0.1:%d/metrics" % mport
            st, _, body = scrape(url)
            self.assertEqual(st, 401, body)
            self.assertEqual(scrape(url, token="s3cret-token-of-metrics-0124")[0], 401)
            self.assertEqual(scrape(url, token="s3cret-token-of-metrics-0123")[0], 200)
            if host_ip:
                self.assertEqual(scrape("http://%s:%d/metrics" % (host_ip, mport),
                                        token="s3cret-token-of-metrics-0123")[0], 200)


if __name__ == "__main__":
    main()
