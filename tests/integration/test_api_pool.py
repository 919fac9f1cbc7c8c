"""test_api_pool.py — the SES API's worker pool (api/api_pool.c) under the conditions that could
lose or double-free a request while a worker holds it. kilnd prepares bodies over 16 KB on
the pool (smaller ones on its loop), so every request here carries a message of about 20 KB:

  - clients that send a complete signed SendEmail and close the connection at once, many at
    a time, mixed with well-behaved kiln-apiload traffic: kilnd stays up and clean under
    ASan, answers the next client, and every message it acknowledged (200 with a MessageId)
    is delivered;
  - SIGTERM while kiln-apiload keeps 20 connections busy: kilnd exits 0 (clean under ASan),
    and after a restart on the same spool the sink holds at least as many distinct messages
    as kiln-apiload saw acknowledged: nothing acknowledged is lost.

The daemon comes from apitest.py, with no per-key request rate (UNTHROTTLED)."""
import base64
import json
import os
import signal
import socket
import subprocess
import threading
import time
import unittest

from apitest import KEY_ID, SECRET, UNTHROTTLED, api_kiln, endpoint, wait_api
from kilntest import BUILDDIR, Sink, main, wait_for

APILOAD = os.path.join(BUILDDIR, "kiln-apiload")
SAN_ERRORS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
PATH = "/v2/email/outbound-emails"


def raw_send_body(token):
    msg = ("From: app@example.test\r\nTo: user@d0.test\r\nSubject: pool %s\r\n"
           "X-Loadgen-Token: %s\r\n\r\n" % (token, token)) + "pool padding line\r\n" * 1000
    return json.dumps({"Content": {"Raw": {"Data": base64.b64encode(msg.encode()).decode()}}})


def signed_bytes(k, body):
    """A SendEmail request signed by botocore's SigV4Auth, as bytes for a raw socket."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    req = AWSRequest(method="POST", url=endpoint(k) + PATH, data=body.encode(),
                     headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(KEY_ID, SECRET), "ses", k.cfg["server"]["region"]).add_auth(req)
    p = req.prepare()
    head = "POST %s HTTP/1.1\r\n" % PATH
    for name, value in p.headers.items():
        head += "%s: %s\r\n" % (name, value)
    head += "Content-Length: %d\r\n\r\n" % len(body.encode())
    return head.encode() + body.encode()


def run_apiload(k, prefix, n, c=20, timeout=300):
    cmd = [APILOAD, "--url", endpoint(k), "--region", k.cfg["server"]["region"],
           "--key-id", KEY_ID, "--secret-file", k.secret_files[KEY_ID], "--json",
           "-n", str(n), "-c", str(c), "--size", "20000", "--domains", "1",
           "--from", "app@example.test", "--token-prefix", prefix, "--timeout", "30"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def report(p, timeout=300):
    out, err = p.communicate(timeout=timeout)
    if not out.strip():
        raise AssertionError("kiln-apiload exited %d: %s" % (p.returncode, err))
    return json.loads(out)


def tokens(sink, prefix):
    out = set()
    for m in sink.messages:
        for line in m["data"].split(b"\r\n"):
            if line.lower().startswith(b"x-loadgen-token:"):
                t = line.split(b":", 1)[1].strip().decode()
                if t.startswith(prefix + "-"):
                    out.add(t)
    return out


class ApiPoolTest(unittest.TestCase):
    def assert_clean(self, k):
        for marker in SAN_ERRORS:
            self.assertNotIn(marker, k.stderr_text())

    def kiln(self, sink):
        return api_kiln(api_over=dict(UNTHROTTLED, max_connections_per_client=256,
                                      max_connections=512),
                        server={"log_level": "info"},
                        routes=[{"domain": "d0.test", "host": sink.host, "port": sink.port}])

    def test_clients_leaving_while_in_the_pool(self):
        with Sink(host="127.0.0.1") as sink:
            k = self.kiln(sink)
            try:
                k.start()
                wait_api(k)
                load = run_apiload(k, "steady", 600)
                reqs = [signed_bytes(k, raw_send_body("gone-%d" % i)) for i in range(200)]

                def hit_and_run(chunk):
                    for r in chunk:
                        s = socket.create_connection(("127.0.0.1", k.api_port), timeout=10)
                        s.sendall(r)
                        s.close()                # before any answer: it is in the pool

                threads = [threading.Thread(target=hit_and_run, args=(reqs[i::4],))
                           for i in range(4)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(60)
                r = report(load)
                self.assertEqual(r["errors"], 0, r)
                self.assertEqual(r["accepted"], 600, r)
                # kilnd still answers, and every acknowledged message arrives
                again = report(run_apiload(k, "after", 20, c=2))
                self.assertEqual(again["accepted"], 20, again)
                wait_for(lambda: len(tokens(sink, "steady")) == 600
                         and len(tokens(sink, "after")) == 20, 120, 0.2,
                         "the acknowledged messages to arrive")
                self.assertEqual(k.stop(), 0, k.stderr_text()[-4000:])
                self.assert_clean(k)
            finally:
                k.cleanup()

    def test_sigterm_under_load_loses_nothing_acknowledged(self):
        with Sink(host="127.0.0.1") as sink:
            k = self.kiln(sink)
            try:
                k.start()
                wait_api(k)
                load = run_apiload(k, "term", 100000)
                wait_for(lambda: len(tokens(sink, "term")) >= 50, 60, 0.05,
                         "the load to be under way")
                k.proc.send_signal(signal.SIGTERM)
                rc = k.proc.wait(60)
                load.send_signal(signal.SIGTERM)    # no more messages; its report follows
                r = report(load)
                self.assertEqual(rc, 0, k.stderr_text()[-4000:])
                self.assert_clean(k)
                self.assertGreater(r["accepted"], 0, r)
                self.assertLess(r["accepted"], 100000, r)
                # what was acknowledged is in the spool: after a restart it all arrives
                k.start()
                wait_for(lambda: len(tokens(sink, "term")) >= r["accepted"], 120, 0.2,
                         "the %d acknowledged messages to arrive" % r["accepted"])
                self.assertEqual(k.stop(), 0, k.stderr_text()[-4000:])
                self.assert_clean(k)
            finally:
                k.cleanup()


if __name__ == "__main__":
    main()
