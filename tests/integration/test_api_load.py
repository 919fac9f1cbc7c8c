"""test_api_load.py — kiln-apiload against kilnd's SES v2 API (issue 13), the smoke use of the
API benchmark's load tool: SendEmail requests over keep-alive connections (its own HTTP/1.1
client, tools/apiload_http.c; over HTTPS in test_api_tls), each
signed by mta/sigv4.c's signing side (which reproduces botocore's and awscrt's signatures
byte for byte, test_sigv4) and checked by kilnd's verifier.

  - 200 Content.Raw messages over 4 connections: all 200 answered 200 with a MessageId, at
    most 4 connections opened (keep-alive), every message delivered to an aiosmtpd sink
    exactly once, with its X-Loadgen-Token, envelope sender and recipient;
  - 50 Content.Simple messages: all accepted and delivered, the token in their Subject;
  - --rate 100: 60 requests take at least 0.58 s, all delivered; --rate 0 is refused;
  - a wrong secret: every request answered 403 SignatureDoesNotMatch, nothing delivered;
  - nothing listening: every request an error "connect: Connection refused", exit status 1.

The daemon comes from apitest.py, with no per-key request rate (UNTHROTTLED)."""
import email
import json
import os
import subprocess
import unittest

from apitest import KEY_ID, UNTHROTTLED, api_kiln, endpoint, wait_api, write_secret
from kilntest import BUILDDIR, Sink, free_port, main, wait_for

APILOAD = os.path.join(BUILDDIR, "kiln-apiload")
SAN_ERRORS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def run_apiload(k, secret_file, *args, timeout=120):
    """kiln-apiload --json against k's API with KEY_ID: (report dict, stderr text)."""
    cmd = [APILOAD, "--url", endpoint(k), "--region", k.cfg["server"]["region"],
           "--key-id", KEY_ID, "--secret-file", secret_file, "--json"] + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode not in (0, 1) or not p.stdout.strip():
        raise AssertionError("kiln-apiload exited %d: %s" % (p.returncode, p.stderr))
    return json.loads(p.stdout), p.stderr


class ApiLoadTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sink = Sink(host="127.0.0.1")
        cls.sink.__enter__()
        cls.k = api_kiln(api_over=UNTHROTTLED, server={"log_level": "info"},
                         routes=[{"domain": "d0.test", "host": cls.sink.host, "port": cls.sink.port}])
        cls.secret_file = cls.k.secret_files[KEY_ID]
        try:
            cls.k.start()
            wait_api(cls.k)
        except BaseException:
            cls.k.cleanup()
            cls.sink.__exit__(None, None, None)
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            rc = cls.k.stop()
            assert rc == 0, "kilnd exited %s after SIGTERM:\n%s" % (rc, cls.k.stderr_text()[-4000:])
            for marker in SAN_ERRORS:
                assert marker not in cls.k.stderr_text(), cls.k.stderr_text()[-4000:]
        finally:
            cls.k.cleanup()
            cls.sink.__exit__(None, None, None)

    def delivered(self, prefix, header):
        """Sink messages whose header (X-Loadgen-Token or Subject) carries prefix-<n>:
        {token: [messages]}."""
        out = {}
        for m in self.sink.messages:
            msg = email.message_from_bytes(m["data"])
            v = (msg.get(header) or "").strip()
            tok = v.split()[-1] if v else ""
            if tok.startswith(prefix + "-"):
                out.setdefault(tok, []).append((m, msg))
        return out

    def assert_clean(self, stderr):
        for marker in SAN_ERRORS:
            self.assertNotIn(marker, stderr)

    def test_raw_200_over_4_connections(self):
        r, err = run_apiload(self.k, self.secret_file, "-n", "200", "-c", "4",
                             "--size", "1024", "--token-prefix", "raw")
        self.assert_clean(err)
        self.assertEqual((r["accepted"], r["rejected"], r["errors"], r["not_sent"]), (200, 0, 0, 0),
                         "report: %s\nkilnd log: %s" % (json.dumps(r), self.k.log()[-3000:]))
        self.assertLessEqual(r["connections_opened"], 4, "keep-alive: %s" % json.dumps(r))
        self.assertGreater(r["latency_ms"]["p99"], 0)
        want = {"raw-%d" % i for i in range(200)}
        got = wait_for(lambda: (lambda d: d if set(d) >= want else None)(
            self.delivered("raw", "X-Loadgen-Token")), 90, 0.2, "200 raw messages at the sink")
        self.assertEqual(set(got), want)
        for tok, ms in got.items():
            self.assertEqual(len(ms), 1, "%s delivered %d times" % (tok, len(ms)))
            m, msg = ms[0]
            n = int(tok.split("-")[1])
            self.assertEqual(m["rcpts"], ["user%d@d0.test" % n])
            self.assertEqual(m["mail_from"], "loadgen@example.test")
            self.assertIn("kiln-apiload message %d" % n, msg["Subject"])

    def test_simple_50(self):
        r, err = run_apiload(self.k, self.secret_file, "-n", "50", "-c", "4",
                             "--content", "simple", "--token-prefix", "simple")
        self.assert_clean(err)
        self.assertEqual((r["accepted"], r["rejected"], r["errors"]), (50, 0, 0), json.dumps(r))
        want = {"simple-%d" % i for i in range(50)}
        got = wait_for(lambda: (lambda d: d if set(d) >= want else None)(
            self.delivered("simple", "Subject")), 60, 0.2, "50 simple messages at the sink")
        self.assertEqual(set(got), want)
        self.assertTrue(all(len(ms) == 1 for ms in got.values()))

    def test_rate_caps_requests_per_second(self):
        # 60 requests at --rate 100 (a burst of 2): at least 0.58 s from the first to the
        # last, whatever the machine (a slow one only takes longer), and all delivered
        r, err = run_apiload(self.k, self.secret_file, "-n", "60", "-c", "8", "--rate", "100",
                             "--token-prefix", "rated")
        self.assert_clean(err)
        self.assertEqual((r["accepted"], r["rejected"], r["errors"]), (60, 0, 0), json.dumps(r))
        self.assertGreaterEqual(r["elapsed_s"], 0.58, json.dumps(r))
        want = {"rated-%d" % i for i in range(60)}
        got = wait_for(lambda: (lambda d: d if set(d) >= want else None)(
            self.delivered("rated", "X-Loadgen-Token")), 60, 0.2, "60 rated messages at the sink")
        self.assertEqual(set(got), want)
        p = subprocess.run([APILOAD, "--url", endpoint(self.k), "--rate", "0"], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--rate wants requests per second > 0 (got '0')", p.stderr)

    def test_wrong_secret_is_403_signature_does_not_match(self):
        bad = write_secret(self.k.tmp, "wrong-secret", "kilnWrongSecretKey000000000000000000000001")
        r, err = run_apiload(self.k, bad, "-n", "20", "-c", "2", "--token-prefix", "wrong")
        self.assert_clean(err)
        self.assertEqual(r["accepted"], 0)
        self.assertEqual(r["rejected_by_code"], {"403 SignatureDoesNotMatch": 20}, json.dumps(r))
        self.assertEqual(self.delivered("wrong", "X-Loadgen-Token"), {})

    def test_nothing_listening_is_an_error_per_request(self):
        port = free_port()
        p = subprocess.run([APILOAD, "--url", "http://127.0.0.1:%d" % port, "-n", "7", "-c", "3",
                            "--json"], capture_output=True, text=True, timeout=60)
        self.assert_clean(p.stderr)
        self.assertEqual(p.returncode, 1, p.stderr)
        r = json.loads(p.stdout)
        self.assertEqual((r["accepted"], r["rejected"], r["errors"]), (0, 0, 7), p.stdout)
        self.assertEqual(r["errors_by_kind"], {"connect: Connection refused": 7}, p.stdout)


if __name__ == "__main__":
    main()
