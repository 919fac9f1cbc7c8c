"""test_api_account.py — the SES v2 API's account, identity, configuration-set and dedicated-IP
operations (issue 13) through the real, unmodified clients: Debian's aws CLI
(`aws sesv2 --endpoint-url http://127.0.0.1:PORT ...`) and boto3 (python3-boto3), signed with
SigV4 by access keys of `api.access_keys`:

  - get-account: SendQuota, ProductionAccessEnabled and the rest as the config says (a
    production daemon and a sandbox one);
  - get-dedicated-ips by pool, one IP per page (PageSize 1, NextToken), the managed pool's
    NOT_APPLICABLE warm-up; get-dedicated-ip of an unknown address is NotFoundException;
  - put-dedicated-ip-warmup-attributes: `kilnctl ips` and get-dedicated-ip show the new
    percentage; a managed pool's IP and a percentage over 100 are BadRequestException;
  - create-dedicated-ip-pool, delete-dedicated-ip-pool, put-dedicated-ip-in-pool: 400
    BadRequestException "dedicated IPs and pools are managed in kiln.yaml";
  - list/get dedicated IP pools, email identities (get-email-identity runs the DNS check
    against a dnsmasq that answers NXDOMAIN at once), configuration sets, and 404s;
  - a NextToken of another operation is InvalidNextTokenException;
  - scope: a second key scoped to one configuration set and one identity lists only those
    and gets NotFoundException for the others.

Every client runs isolated from the machine's AWS settings (AWS_CONFIG_FILE and
AWS_SHARED_CREDENTIALS_FILE point at paths that do not exist)."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from kilntest import Dnsmasq, Kiln, free_port, main

try:
    import boto3
    import botocore.config
    import botocore.exceptions
except ImportError:   # the tests skip (below) when the Debian package is missing
    boto3 = None

AWS = "/usr/bin/aws"
REGION = "local"
KEY1 = ("AKIAKILNTEST0000001", "kilnTestSecretKey0000000000000000000000001")
KEY2 = ("AKIAKILNTEST0000002", "kilnTestSecretKey0000000000000000000000002")
CONFIG_OWNED = "dedicated IPs and pools are managed in kiln.yaml"

# Kept away from the machine's ~/.aws: a directory of its own, with no files in it.
ISOLATED = tempfile.mkdtemp(prefix="kiln-aws-")
os.environ["AWS_CONFIG_FILE"] = os.path.join(ISOLATED, "config-absent")
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.path.join(ISOLATED, "credentials-absent")
for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(var, None)


def need_clients():
    if boto3 is None:
        raise unittest.SkipTest("boto3 is not installed (Debian package python3-boto3)")
    if not os.path.exists(AWS):
        raise unittest.SkipTest("the aws CLI is not installed (Debian package awscli)")


def add_api(k, port, keys):
    """k's config gains an api section on 127.0.0.1:port with keys [(id, secret, scope)]
    (secret files 0600 in k's directory)."""
    entries = []
    for key_id, secret, scope in keys:
        path = os.path.join(k.tmp, "secret-%s" % key_id)
        with open(path, "w") as f:
            f.write(secret + "\n")
        os.chmod(path, 0o600)
        e = {"id": key_id, "secret_file": path}
        e.update(scope)
        entries.append(e)
    k.cfg["api"] = {"listen": ["127.0.0.1:%d" % port], "access_keys": entries}
    k.write_config()


def client(port, key=KEY1):
    return boto3.client(
        "sesv2", endpoint_url="http://127.0.0.1:%d" % port, region_name=REGION,
        aws_access_key_id=key[0], aws_secret_access_key=key[1],
        config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=5,
                                      read_timeout=30))


def aws(port, *args, key=KEY1, expect_ok=True):
    """`aws sesv2 ARGS` against kilnd: the parsed JSON output (or {} when there is none), or
    the CompletedProcess when expect_ok is False."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": key[0], "AWS_SECRET_ACCESS_KEY": key[1],
                "AWS_DEFAULT_REGION": REGION, "AWS_PAGER": "",
                "AWS_CONFIG_FILE": os.environ["AWS_CONFIG_FILE"],
                "AWS_SHARED_CREDENTIALS_FILE": os.environ["AWS_SHARED_CREDENTIALS_FILE"],
                "HOME": ISOLATED})
    cmd = [AWS, "sesv2", "--endpoint-url", "http://127.0.0.1:%d" % port, "--output", "json"] + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    if not expect_ok:
        return p
    if p.returncode != 0:
        raise AssertionError("aws sesv2 %s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr))
    return json.loads(p.stdout) if p.stdout.strip() else {}


def ip(address, zone, pool, **kw):
    d = {"address": address, "zone": zone, "pool": pool}
    d.update(kw)
    return d


class ApiAccountTest(unittest.TestCase):
    """One production daemon (with a dnsmasq for the identity checks) for most of the tests."""

    @classmethod
    def setUpClass(cls):
        need_clients()
        cls.dns = Dnsmasq([]).__enter__()   # every name under .test: NXDOMAIN, at once
        k = None
        try:
            cls.api_port = free_port()
            k = Kiln(
                account={"mode": "production", "max_24h_send": 5000, "max_send_rate": 14,
                         "identities": ["example.test", "ops@other.test", "third.test"],
                         "suppression": {"reasons": ["BOUNCE"]}},
                dns={"servers": ["127.0.0.1:%d" % cls.dns.port], "timeout": "1s"},
                ips=[ip("127.0.0.10", "az1", "transactional"),
                     ip("127.0.0.11", "az2", "transactional"),
                     ip("127.0.0.12", "az3", "transactional", warmup="done"),
                     ip("127.0.0.13", "az1", "marketing")],
                pools=[{"name": "transactional", "scaling": "standard"},
                       {"name": "marketing", "scaling": "managed"}],
                configuration_sets=[
                    {"name": "txn", "pool": "transactional", "tls_policy": "require",
                     "max_delivery_time": "2h"},
                    {"name": "bulk", "pool": "marketing", "tls_policy": "optional"}],
                default_configuration_set="txn")
            add_api(k, cls.api_port, [
                (KEY1[0], KEY1[1], {}),
                (KEY2[0], KEY2[1], {"identities": ["ops@other.test"], "configuration_sets": ["bulk"]})])
            cls.k = k.start()
        except BaseException:
            if k is not None:
                k.cleanup()
            cls.dns.__exit__(None, None, None)
            raise
        cls.ses = client(cls.api_port)
        cls.ses2 = client(cls.api_port, KEY2)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.k.__exit__(None, None, None)
        finally:
            cls.dns.__exit__(None, None, None)

    def assertClientError(self, code, status, fn, *args, message=None, **kw):
        with self.assertRaises(botocore.exceptions.ClientError) as cm:
            fn(*args, **kw)
        err = cm.exception.response["Error"]
        self.assertEqual(err["Code"], code, cm.exception.response)
        self.assertEqual(cm.exception.response["ResponseMetadata"]["HTTPStatusCode"], status)
        if message is not None:
            self.assertEqual(err["Message"], message)
        return err

    # ---- account

    def test_get_account_production(self):
        a = aws(self.api_port, "get-account")
        self.assertEqual(a["SendQuota"], {"Max24HourSend": 5000, "MaxSendRate": 14, "SentLast24Hours": 0})
        self.assertIs(a["ProductionAccessEnabled"], True)
        self.assertIs(a["SendingEnabled"], True)
        self.assertEqual(a["EnforcementStatus"], "HEALTHY")
        self.assertEqual(a["SuppressionAttributes"], {"SuppressedReasons": ["BOUNCE"]})
        # boto3 reads the same answer
        b = self.ses.get_account()
        self.assertEqual(b["SendQuota"]["Max24HourSend"], 5000.0)
        self.assertIs(b["ProductionAccessEnabled"], True)

    # ---- dedicated IPs

    def test_get_dedicated_ips_by_pool_paged(self):
        seen, pages, token = [], 0, None
        while True:
            kw = {"PoolName": "transactional", "PageSize": 1}
            if token:
                kw["NextToken"] = token
            r = self.ses.get_dedicated_ips(**kw)
            pages += 1
            self.assertLessEqual(len(r["DedicatedIps"]), 1)
            seen += r["DedicatedIps"]
            token = r.get("NextToken")
            if not token:
                break
            self.assertLess(pages, 10, "paging does not end")
        self.assertEqual([x["Ip"] for x in seen], ["127.0.0.10", "127.0.0.11", "127.0.0.12"])
        self.assertEqual({x["PoolName"] for x in seen}, {"transactional"})
        self.assertEqual(seen[2]["WarmupStatus"], "DONE")
        self.assertEqual(seen[2]["WarmupPercentage"], 100)
        # the aws CLI, the managed pool: no standard warm-up
        m = aws(self.api_port, "get-dedicated-ips", "--pool-name", "marketing")["DedicatedIps"]
        self.assertEqual(m, [{"Ip": "127.0.0.13", "WarmupStatus": "NOT_APPLICABLE",
                              "WarmupPercentage": -1, "PoolName": "marketing"}])
        # every pool
        self.assertEqual(len(self.ses.get_dedicated_ips()["DedicatedIps"]), 4)
        self.assertClientError("NotFoundException", 404, self.ses.get_dedicated_ips, PoolName="nope")

    def test_get_dedicated_ip(self):
        r = self.ses.get_dedicated_ip(Ip="127.0.0.11")["DedicatedIp"]
        self.assertEqual((r["Ip"], r["PoolName"], r["WarmupStatus"]), ("127.0.0.11", "transactional", "IN_PROGRESS"))
        self.assertClientError("NotFoundException", 404, self.ses.get_dedicated_ip, Ip="127.0.0.99")
        p = aws(self.api_port, "get-dedicated-ip", "--ip", "127.0.0.99", expect_ok=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("NotFoundException", p.stderr)

    def test_put_dedicated_ip_warmup(self):
        aws(self.api_port, "put-dedicated-ip-warmup-attributes", "--ip", "127.0.0.10",
            "--warmup-percentage", "60")
        ips = {x["Ip"]: x for x in self.k.ctl("ips")["DedicatedIps"]}
        self.assertEqual(ips["127.0.0.10"]["WarmupPercentage"], 60)
        self.assertEqual(ips["127.0.0.10"]["WarmupStatus"], "IN_PROGRESS")
        self.assertEqual(self.ses.get_dedicated_ip(Ip="127.0.0.10")["DedicatedIp"]["WarmupPercentage"], 60)
        self.ses.put_dedicated_ip_warmup_attributes(Ip="127.0.0.10", WarmupPercentage=100)
        ips = {x["Ip"]: x for x in self.k.ctl("ips")["DedicatedIps"]}
        self.assertEqual((ips["127.0.0.10"]["WarmupPercentage"], ips["127.0.0.10"]["WarmupStatus"]), (100, "DONE"))
        self.assertIn("cmd=ip.warmup", self.k.log())
        # a managed pool's IP: pools' reason; out of range; unknown
        err = self.assertClientError("BadRequestException", 400, self.ses.put_dedicated_ip_warmup_attributes,
                                     Ip="127.0.0.13", WarmupPercentage=50)
        self.assertIn("managed", err["Message"])
        self.assertClientError("BadRequestException", 400, self.ses.put_dedicated_ip_warmup_attributes,
                               Ip="127.0.0.11", WarmupPercentage=101)
        self.assertClientError("NotFoundException", 404, self.ses.put_dedicated_ip_warmup_attributes,
                               Ip="127.0.0.99", WarmupPercentage=50)

    def test_config_owned_operations(self):
        self.assertClientError("BadRequestException", 400, self.ses.create_dedicated_ip_pool,
                               PoolName="new", message=CONFIG_OWNED)
        self.assertClientError("BadRequestException", 400, self.ses.delete_dedicated_ip_pool,
                               PoolName="marketing", message=CONFIG_OWNED)
        self.assertClientError("BadRequestException", 400, self.ses.put_dedicated_ip_in_pool,
                               Ip="127.0.0.10", DestinationPoolName="marketing", message=CONFIG_OWNED)
        p = aws(self.api_port, "create-dedicated-ip-pool", "--pool-name", "new", expect_ok=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("BadRequestException", p.stderr)
        self.assertIn(CONFIG_OWNED, p.stderr)
        # nothing changed
        self.assertEqual(self.ses.list_dedicated_ip_pools()["DedicatedIpPools"], ["marketing", "transactional"])

    def test_pools(self):
        self.assertEqual(aws(self.api_port, "list-dedicated-ip-pools")["DedicatedIpPools"],
                         ["marketing", "transactional"])
        r = self.ses.list_dedicated_ip_pools(PageSize=1)
        self.assertEqual(r["DedicatedIpPools"], ["marketing"])
        r = self.ses.list_dedicated_ip_pools(PageSize=1, NextToken=r["NextToken"])
        self.assertEqual(r["DedicatedIpPools"], ["transactional"])
        self.assertNotIn("NextToken", r)
        self.assertEqual(self.ses.get_dedicated_ip_pool(PoolName="marketing")["DedicatedIpPool"],
                         {"PoolName": "marketing", "ScalingMode": "MANAGED"})
        self.assertEqual(aws(self.api_port, "get-dedicated-ip-pool", "--pool-name", "transactional"),
                         {"DedicatedIpPool": {"PoolName": "transactional", "ScalingMode": "STANDARD"}})
        self.assertClientError("NotFoundException", 404, self.ses.get_dedicated_ip_pool, PoolName="nope")

    # ---- identities

    def test_list_email_identities(self):
        r = aws(self.api_port, "list-email-identities")
        self.assertEqual(r["EmailIdentities"], [
            {"IdentityType": "DOMAIN", "IdentityName": "example.test", "SendingEnabled": True,
             "VerificationStatus": "SUCCESS"},
            {"IdentityType": "EMAIL_ADDRESS", "IdentityName": "ops@other.test", "SendingEnabled": True,
             "VerificationStatus": "SUCCESS"},
            {"IdentityType": "DOMAIN", "IdentityName": "third.test", "SendingEnabled": True,
             "VerificationStatus": "SUCCESS"}])
        r = self.ses.list_email_identities(PageSize=2)
        self.assertEqual([x["IdentityName"] for x in r["EmailIdentities"]], ["example.test", "ops@other.test"])
        r = self.ses.list_email_identities(PageSize=2, NextToken=r["NextToken"])
        self.assertEqual([x["IdentityName"] for x in r["EmailIdentities"]], ["third.test"])
        self.assertNotIn("NextToken", r)

    def test_get_email_identity(self):
        r = self.ses.get_email_identity(EmailIdentity="example.test")
        self.assertEqual(r["IdentityType"], "DOMAIN")
        self.assertIs(r["VerifiedForSendingStatus"], True)
        self.assertEqual(r["VerificationStatus"], "SUCCESS")
        self.assertIn(r["DkimAttributes"]["Status"], ("NOT_STARTED", "PENDING", "FAILED", "TEMPORARY_FAILURE"))
        self.assertIs(r["DkimAttributes"]["SigningEnabled"], False)   # no key: unsigned
        self.assertEqual(r["Tags"], [])
        a = aws(self.api_port, "get-email-identity", "--email-identity", "ops@other.test")
        self.assertEqual(a["IdentityType"], "EMAIL_ADDRESS")
        self.assertNotIn("kiln", a)
        self.assertClientError("NotFoundException", 404, self.ses.get_email_identity,
                               EmailIdentity="unknown.test")
        # an address under a verified domain is not an identity of its own
        self.assertClientError("NotFoundException", 404, self.ses.get_email_identity,
                               EmailIdentity="someone@example.test")

    # ---- configuration sets

    def test_configuration_sets(self):
        self.assertEqual(aws(self.api_port, "list-configuration-sets")["ConfigurationSets"], ["bulk", "txn"])
        r = self.ses.list_configuration_sets(PageSize=1)
        self.assertEqual(r["ConfigurationSets"], ["bulk"])
        r = self.ses.list_configuration_sets(PageSize=1, NextToken=r["NextToken"])
        self.assertEqual(r["ConfigurationSets"], ["txn"])
        self.assertNotIn("NextToken", r)
        s = aws(self.api_port, "get-configuration-set", "--configuration-set-name", "txn")
        self.assertEqual(s["ConfigurationSetName"], "txn")
        self.assertEqual(s["DeliveryOptions"]["TlsPolicy"], "REQUIRE")
        self.assertEqual(s["DeliveryOptions"]["SendingPoolName"], "transactional")
        self.assertIs(s["SendingOptions"]["SendingEnabled"], True)
        self.assertEqual(s["SuppressionOptions"], {"SuppressedReasons": ["BOUNCE"]})
        self.assertEqual(s["Tags"], [])
        b = self.ses.get_configuration_set(ConfigurationSetName="bulk")
        self.assertEqual((b["DeliveryOptions"]["TlsPolicy"], b["DeliveryOptions"]["SendingPoolName"]),
                         ("OPTIONAL", "marketing"))
        self.assertClientError("NotFoundException", 404, self.ses.get_configuration_set,
                               ConfigurationSetName="nope")

    def test_next_token_of_another_operation(self):
        tok = self.ses.list_configuration_sets(PageSize=1)["NextToken"]
        self.assertClientError("InvalidNextTokenException", 400, self.ses.list_email_identities,
                               NextToken=tok)

    # ---- scope

    def test_scoped_key(self):
        self.assertEqual(self.ses2.list_configuration_sets()["ConfigurationSets"], ["bulk"])
        self.assertEqual(self.ses2.get_configuration_set(ConfigurationSetName="bulk")["ConfigurationSetName"], "bulk")
        self.assertClientError("NotFoundException", 404, self.ses2.get_configuration_set,
                               ConfigurationSetName="txn")
        self.assertEqual([x["IdentityName"] for x in self.ses2.list_email_identities()["EmailIdentities"]],
                         ["ops@other.test"])
        self.assertEqual(self.ses2.get_email_identity(EmailIdentity="ops@other.test")["IdentityType"],
                         "EMAIL_ADDRESS")
        self.assertClientError("NotFoundException", 404, self.ses2.get_email_identity,
                               EmailIdentity="example.test")
        r = aws(self.api_port, "list-configuration-sets", key=KEY2)
        self.assertEqual(r["ConfigurationSets"], ["bulk"])


class ApiAccountSandboxTest(unittest.TestCase):
    """get-account of a sandbox daemon: the sandbox's quota, no production access."""

    def test_get_account_sandbox(self):
        need_clients()
        port = free_port()
        k = Kiln(account={"mode": "sandbox", "max_24h_send": 200, "max_send_rate": 1,
                          "verified_recipients": ["someone@example.test"]})
        add_api(k, port, [(KEY1[0], KEY1[1], {})])
        with k:
            a = aws(port, "get-account")
            self.assertEqual(a["SendQuota"], {"Max24HourSend": 200, "MaxSendRate": 1, "SentLast24Hours": 0})
            self.assertIs(a["ProductionAccessEnabled"], False)
            self.assertIs(a["SendingEnabled"], True)
            self.assertEqual(a["SuppressionAttributes"]["SuppressedReasons"], ["BOUNCE", "COMPLAINT"])


def tearDownModule():
    shutil.rmtree(ISOLATED, ignore_errors=True)


if __name__ == "__main__":
    main()
