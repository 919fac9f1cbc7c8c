"""apitest.py — what the SES API tests share: a kilnd with `api:` listening on loopback (over
HTTP, or HTTPS with a self-signed certificate) and access keys whose secret files it reads,
the two clients we did not write that talk to it unmodified: boto3's sesv2 client and
Debian's aws CLI (`aws sesv2 --endpoint-url ...`), isolated from any AWS config of the
machine, and a test class with one such daemon for all its tests."""
import importlib.util
import json
import os
import socket
import subprocess
import unittest

from kilntest import RUN_AS, Kiln, free_port, make_cert, wait_for

KEY_ID = "AKIAKILNTEST0000001"
SECRET = "kilnTestSecretKey/00000000000000000000000"
KEY2_ID = "AKIAKILNTEST0000002"          # a second key, for scopes and per-key limits
KEY2_SECRET = "kilnTestSecretKey/00000000000000000000002"
AWS = "/usr/bin/aws"
# api: fields for load runs: api.max_request_rate's default (200/s per key) would throttle them
UNTHROTTLED = {"max_request_rate": "-1"}

# boto3 reads these before the arguments a client is given: none of the machine's applies.
for _name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
              "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_name, None)
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


def need_clients():
    """Skips the calling test when boto3 or the aws CLI is not installed."""
    if importlib.util.find_spec("boto3") is None:
        raise unittest.SkipTest("boto3 is not installed (Debian package python3-boto3)")
    if not os.path.exists(AWS):
        raise unittest.SkipTest("the aws CLI is not installed (Debian package awscli)")


def give_to_kilnd(path):
    """path owned by the user kilnd runs as, when the tests run as root: kilnd reads its
    secrets and certificates again on reload, after dropping root."""
    if RUN_AS and os.geteuid() == 0:
        import pwd
        pw = pwd.getpwnam(RUN_AS)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def write_secret(tmp, name, secret):
    """The secret access key on one line, mode 0600, owned by the user kilnd runs as."""
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(secret + "\n")
    os.chmod(path, 0o600)
    return give_to_kilnd(path)


def api_kiln(keys=None, api_over=None, listen=True, tls=False, **over):
    """A Kiln whose config has api.listen on a free loopback port and access keys
    (default: KEY_ID/SECRET). keys: [(id, secret)] or [(id, secret, extra entry fields such
    as a scope)]; k.secret_files maps each id to its secret file. listen=False: the access
    keys alone (SES SMTP passwords), no API listener. tls=True: api.tls with a self-signed
    certificate for 127.0.0.1 (k.api_ca, which client() and aws() then trust)."""
    k = Kiln(**over)
    k.api_port = free_port()
    k.api_ca = None
    k.secret_files = {}
    entries = []
    for key in (keys or [(KEY_ID, SECRET)]):
        kid, secret = key[0], key[1]
        path = k.secret_files[kid] = write_secret(k.tmp, "secret-" + kid, secret)
        e = {"id": kid, "secret_file": path}
        e.update(key[2] if len(key) > 2 else {})
        entries.append(e)
    k.cfg["api"] = {"access_keys": entries}
    if listen:
        k.cfg["api"]["listen"] = ["127.0.0.1:%d" % k.api_port]
    if tls:
        cert, key = make_cert(k.tmp, "127.0.0.1", san="IP:127.0.0.1")
        k.cfg["api"]["tls"] = {"cert": give_to_kilnd(cert), "key": give_to_kilnd(key)}
        k.api_ca = cert
    k.api_url = endpoint(k)
    if api_over:
        k.cfg["api"].update(api_over)
    k.write_config()
    return k


def endpoint(k, scheme=None):
    """The API's URL: https:// when k has api.tls."""
    return "%s://127.0.0.1:%d" % (scheme or ("https" if k.api_ca else "http"), k.api_port)


def client(k, key_id=KEY_ID, secret=SECRET, region=None, retries=0):
    """boto3's sesv2 client against kilnd (no retries, so every error reaches the test),
    trusting k's certificate when it has one."""
    import boto3
    from botocore.config import Config
    return boto3.client(
        "sesv2", endpoint_url=endpoint(k), region_name=region or k.cfg["server"]["region"],
        aws_access_key_id=key_id, aws_secret_access_key=secret, verify=k.api_ca,
        config=Config(retries={"max_attempts": retries + 1, "mode": "standard"},
                      connect_timeout=5, read_timeout=30))


def aws_env(k, key_id=KEY_ID, secret=SECRET):
    env = {"PATH": "/usr/bin:/bin", "HOME": k.tmp,
           "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret,
           "AWS_DEFAULT_REGION": k.cfg["server"]["region"],
           "AWS_CONFIG_FILE": os.path.join(k.tmp, "no-aws-config"),
           "AWS_SHARED_CREDENTIALS_FILE": os.path.join(k.tmp, "no-aws-credentials"),
           "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_PAGER": "", "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard"}
    return env


def aws(k, *args, key_id=KEY_ID, secret=SECRET, expect_ok=True, timeout=60):
    """Runs `aws sesv2 --endpoint-url ... ARGS --output json` (with --ca-bundle k's
    certificate when it has one); returns the parsed JSON (or the CompletedProcess when
    expect_ok is False)."""
    cmd = [AWS, "sesv2", "--endpoint-url", endpoint(k), "--output", "json"]
    if k.api_ca:
        cmd += ["--ca-bundle", k.api_ca]
    p = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout,
                       env=aws_env(k, key_id, secret))
    if not expect_ok:
        return p
    if p.returncode != 0:
        raise AssertionError("aws %s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr))
    return json.loads(p.stdout) if p.stdout.strip() else None


def error_code(exc):
    """The Error.Code of a botocore ClientError."""
    return exc.response["Error"]["Code"]


def error_of(exc):
    """(Error.Code, HTTP status, Error.Message) of a botocore ClientError."""
    r = exc.response
    return (r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"],
            r["Error"].get("Message", ""))


def wait_api(k, timeout=15):
    """Waits until the API port accepts connections."""
    def up():
        try:
            with socket.create_connection(("127.0.0.1", k.api_port), timeout=1):
                return True
        except OSError:
            return False
    wait_for(up, timeout, 0.05, "the API to listen on %d" % k.api_port)


class ApiTestCase(unittest.TestCase):
    """One daemon, api_kiln(**daemon_args()), for all the tests of a class: cls.k, listening
    before the first test, and cls.ses, boto3's client for KEY_ID; after the last test it
    must stop with status 0. A class whose daemon needs peers (a Sink, a Dnsmasq) starts
    them in daemon_args with cls.peer; they stop after the daemon."""
    kiln_args = {}

    @classmethod
    def daemon_args(cls):
        """api_kiln's arguments for the class's daemon (default: cls.kiln_args)."""
        return cls.kiln_args

    @classmethod
    def peer(cls, cm):
        """Enters cm (a Sink, a Dnsmasq) for the class's daemon; exited after it stops."""
        entered = cm.__enter__()
        cls.peers.append(cm)
        return entered

    @classmethod
    def setUpClass(cls):
        cls.peers, cls.k = [], None
        try:
            cls.k = api_kiln(**cls.daemon_args())
            cls.k.start()
            wait_api(cls.k)
        except BaseException:
            cls.stop_all(check=False)
            raise
        cls.ses = client(cls.k)

    @classmethod
    def stop_all(cls, check=True):
        """kilnd (check: stopped by SIGTERM with status 0), then the peers."""
        try:
            if check:
                rc = cls.k.stop()
                assert rc == 0, "kilnd exited %s after SIGTERM:\n%s" % (rc, cls.k.stderr_text()[-4000:])
        finally:
            if cls.k:
                cls.k.cleanup()
            for p in reversed(cls.peers):
                p.__exit__(None, None, None)

    @classmethod
    def tearDownClass(cls):
        cls.stop_all()

    def assertClientError(self, code, status, fn, *args, message=None, **kwargs):
        """fn(*args, **kwargs) fails with SES error code and HTTP status (and message, when
        given); returns the error's message."""
        from botocore.exceptions import ClientError
        with self.assertRaises(ClientError) as cm:
            fn(*args, **kwargs)
        got = error_of(cm.exception)
        self.assertEqual(got[:2], (code, status), got)
        if message is not None:
            self.assertEqual(got[2], message)
        return got[2]
