"""test_api_tls.py — kilnd's SES v2 API over HTTPS (api.tls: {cert, key}, issue 13), with a
self-signed certificate for 127.0.0.1 owned by the user kilnd runs as (apitest.py):

  - boto3 (verify=the certificate) and the aws CLI (--ca-bundle the certificate, an https://
    endpoint) each send a message that arrives at a sink, received "with HTTPS";
  - kiln-apiload sends 30 messages over 3 HTTPS keep-alive connections, all accepted;
  - a client that does not trust the certificate fails the handshake: what answers is TLS;
  - a plain-HTTP request to the TLS port gets no HTTP answer and its connection is closed at
    once, and the listener goes on serving HTTPS."""
import email
import email.policy
import json
import os
import socket
import subprocess
import time

from apitest import AWS, KEY_ID, ApiTestCase, aws, aws_env, endpoint, need_clients
from kilntest import BUILDDIR, Sink, main, wait_for


def simple(subject):
    return {"Simple": {"Subject": {"Data": subject}, "Body": {"Text": {"Data": "over TLS"}}}}


class ApiTls(ApiTestCase):
    @classmethod
    def daemon_args(cls):
        need_clients()
        cls.sink = cls.peer(Sink())
        return {"tls": True, "routes": [{"domain": d, "host": cls.sink.host, "port": cls.sink.port}
                                        for d in ("dest.test", "d0.test")]}

    def arrived(self, rcpt):
        """The sink's message for rcpt, parsed."""
        m = wait_for(lambda: next((m for m in self.sink.messages if m["rcpts"] == [rcpt]), None),
                     20, 0.1, "the message to %s at the sink" % rcpt)
        return email.message_from_bytes(m["data"], policy=email.policy.default)

    def test_boto3_sends_over_https(self):
        self.assertTrue(endpoint(self.k).startswith("https://"))
        mid = self.ses.send_email(FromEmailAddress="sender@example.test",
                                  Destination={"ToAddresses": ["boto3@dest.test"]},
                                  Content=simple("boto3 over https"))["MessageId"]
        msg = self.arrived("boto3@dest.test")
        self.assertEqual(msg["Subject"], "boto3 over https")
        self.assertIn("with HTTPS id " + mid, " ".join(msg["Received"].split()))
        self.assertIn("op=SendEmail key=", self.k.log())

    def test_aws_cli_sends_over_https(self):
        out = aws(self.k, "send-email", "--from-email-address", "sender@example.test",
                  "--destination", "ToAddresses=cli@dest.test",
                  "--content", json.dumps(simple("aws cli over https")))
        msg = self.arrived("cli@dest.test")
        self.assertEqual(msg["Subject"], "aws cli over https")
        self.assertIn("with HTTPS id " + out["MessageId"], " ".join(msg["Received"].split()))

    def test_apiload_over_https_keeps_its_connections(self):
        p = subprocess.run([os.path.join(BUILDDIR, "kiln-apiload"), "--url", endpoint(self.k),
                            "--region", self.k.cfg["server"]["region"], "--key-id", KEY_ID,
                            "--secret-file", self.k.secret_files[KEY_ID], "--json", "-n", "30",
                            "-c", "3", "--token-prefix", "tls"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        r = json.loads(p.stdout)
        self.assertEqual((r["accepted"], r["rejected"], r["errors"]), (30, 0, 0), p.stdout)
        self.assertLessEqual(r["connections_opened"], 3, p.stdout)
        wait_for(lambda: sum(b"X-Loadgen-Token: tls-" in m["data"] for m in self.sink.messages) == 30,
                 60, 0.1, "the 30 messages at the sink")

    def test_untrusted_certificate_fails_the_handshake(self):
        # the aws CLI without --ca-bundle trusts the system's CAs only
        p = subprocess.run([AWS, "sesv2", "--endpoint-url", endpoint(self.k), "get-account"],
                           capture_output=True, text=True, timeout=60, env=aws_env(self.k))
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("SSL validation failed", p.stderr)
        self.assertIn("certificate verify failed", p.stderr)

    def test_plain_http_to_the_tls_port_fails_cleanly(self):
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", self.k.api_port), timeout=10) as s:
                s.sendall(b"GET /v2/email/account HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                t0, got = time.monotonic(), b""
                try:
                    while True:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        got += chunk
                except ConnectionResetError:
                    pass
                self.assertLess(time.monotonic() - t0, 5, "the plain connection was held open")
                self.assertFalse(got.startswith(b"HTTP/"), got[:200])
        # the listener still serves HTTPS, to both clients
        self.assertIn("SendQuota", self.ses.get_account())
        self.assertIn("SendQuota", aws(self.k, "get-account"))
        self.assertIsNone(self.k.proc.poll())


if __name__ == "__main__":
    main()
