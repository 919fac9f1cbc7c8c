"""apitest.py — what the SES API tests share: a kilnd with `api:` listening on loopback and
an access key whose secret file it reads, and the two clients we did not write that talk to
it unmodified: boto3's sesv2 client and Debian's aws CLI (`aws sesv2 --endpoint-url ...`),
isolated from any AWS config of the machine."""
import json
import os
import socket
import subprocess

from kilntest import RUN_AS, Kiln, free_port, wait_for

KEY_ID = "AKIAKILNTEST0000001"
SECRET = "kilnTestSecretKey/00000000000000000000000"
AWS = "/usr/bin/aws"

# boto3 reads these before the arguments a client is given: none of the machine's applies.
for _name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
              "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_name, None)
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


def write_secret(tmp, name, secret):
    """The secret access key on one line, mode 0600, owned by the user kilnd runs as (it
    reads the file again on reload, after dropping root)."""
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(secret + "\n")
    os.chmod(path, 0o600)
    if RUN_AS and os.geteuid() == 0:
        import pwd
        pw = pwd.getpwnam(RUN_AS)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def api_kiln(keys=None, api_over=None, **over):
    """A Kiln whose config has api.listen on a free loopback port and access keys
    (default: KEY_ID/SECRET). keys: [(id, secret, extra entry fields)]."""
    k = Kiln(**over)
    k.api_port = free_port()
    entries = []
    for kid, secret, extra in (keys or [(KEY_ID, SECRET, {})]):
        e = {"id": kid, "secret_file": write_secret(k.tmp, "secret-" + kid, secret)}
        e.update(extra)
        entries.append(e)
    k.api_url = "http://127.0.0.1:%d" % k.api_port
    k.cfg["api"] = {"listen": ["127.0.0.1:%d" % k.api_port], "access_keys": entries}
    if api_over:
        k.cfg["api"].update(api_over)
    k.write_config()
    return k


def endpoint(k, scheme="http"):
    return "%s://127.0.0.1:%d" % (scheme, k.api_port)


def client(k, key_id=KEY_ID, secret=SECRET, region=None, retries=0):
    """boto3's sesv2 client against kilnd (no retries, so every error reaches the test)."""
    import boto3
    from botocore.config import Config
    return boto3.client(
        "sesv2", endpoint_url=endpoint(k), region_name=region or k.cfg["server"]["region"],
        aws_access_key_id=key_id, aws_secret_access_key=secret,
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
    """Runs `aws sesv2 --endpoint-url ... ARGS --output json`; returns the parsed JSON
    (or the CompletedProcess when expect_ok is False)."""
    cmd = [AWS, "sesv2", "--endpoint-url", endpoint(k), "--output", "json"] + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
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
