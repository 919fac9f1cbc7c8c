"""sesapi.py — what kiln's SES v2 API tests share: a test daemon with an `api` section (one
access key whose secret sits in a 0600 file), a boto3 sesv2 client and the aws CLI pointed at
it, both isolated from the machine's AWS configuration (no profile, config or credentials
file is read; no retries, so an error reaches the test as the server gave it)."""
import json
import os
import shutil
import socket
import subprocess

from kilntest import Kiln, free_port, wait_for

KEY_ID = "AKIAKILNTEST0000001"
SECRET = "kilnTestSecret/0000000000000000000000000"
AWS_CLI = "/usr/bin/aws" if os.path.exists("/usr/bin/aws") else shutil.which("aws")

# boto3 reads these before the arguments a client is given: none of the machine's applies.
for _name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
              "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_name, None)
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


def api_kiln(**over):
    """A Kiln (not started) whose config has an api section on a free loopback port;
    k.api_port and k.api_url say where."""
    k = Kiln(**over)
    secret_path = os.path.join(k.tmp, "api-key.secret")
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(SECRET + "\n")
    os.chmod(secret_path, 0o600)
    k.api_port = free_port()
    k.api_url = "http://127.0.0.1:%d" % k.api_port
    k.cfg["api"] = {"listen": ["127.0.0.1:%d" % k.api_port],
                    "access_keys": [{"id": KEY_ID, "secret_file": secret_path}]}
    k.write_config()
    return k


def wait_api(k, timeout=15):
    """Waits until the API port accepts connections."""
    def up():
        try:
            with socket.create_connection(("127.0.0.1", k.api_port), timeout=1):
                return True
        except OSError:
            return False
    wait_for(up, timeout, 0.05, "the API to listen on %d" % k.api_port)


def region(k):
    return k.cfg["server"].get("region", "local")


def client(k):
    """boto3's sesv2 client for k's API."""
    import boto3
    from botocore.config import Config
    session = boto3.session.Session()
    return session.client("sesv2", endpoint_url=k.api_url, region_name=region(k),
                          aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                          config=Config(retries={"max_attempts": 1, "mode": "standard"},
                                        connect_timeout=5, read_timeout=30))


def error_of(exc):
    """(Error.Code, HTTP status, Error.Message) of a botocore ClientError."""
    r = exc.response
    return (r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"],
            r["Error"].get("Message", ""))


def aws(k, *args, expect_ok=True, timeout=60):
    """Runs `aws sesv2 ARGS` against k's API: the parsed JSON output (None for an empty
    one) when expect_ok, else the CompletedProcess (for a failure's exit code and stderr)."""
    if AWS_CLI is None:
        raise AssertionError("the aws CLI is not installed (Debian package awscli)")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": k.tmp,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": region(k),
        "AWS_CONFIG_FILE": os.path.join(k.tmp, "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(k.tmp, "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PAGER": "",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_RETRY_MODE": "standard",
    }
    cmd = [AWS_CLI, "sesv2"] + list(args) + ["--endpoint-url", k.api_url, "--output", "json"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if not expect_ok:
        return p
    if p.returncode != 0:
        raise AssertionError("aws sesv2 %s failed (%d): %s" % (" ".join(args), p.returncode,
                                                               p.stderr))
    return json.loads(p.stdout) if p.stdout.strip() else None
