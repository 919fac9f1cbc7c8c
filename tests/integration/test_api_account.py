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
    and gets NotFoundException for the others;
  - api.max_request_rate "2/s": a burst of GetAccount from one key gets 429
    TooManyRequestsException (logged as api.error) while a second key is still answered.

Daemons and clients come from apitest.py: every client runs isolated from the machine's AWS
settings."""
import time
import unittest

from apitest import (KEY2_ID, KEY2_SECRET, KEY_ID, SECRET, ApiTestCase, api_kiln, aws, client,
                     error_of, need_clients, wait_api)
from kilntest import Dnsmasq, main

CONFIG_OWNED = "dedicated IPs and pools are managed in kiln.yaml"


def ip(address, zone, pool, **kw):
    d = {"address": address, "zone": zone, "pool": pool}
    d.update(kw)
    return d


class ApiAccountTest(ApiTestCase):
    """One production daemon (with a dnsmasq for the identity checks) for most of the tests;
    KEY2 is scoped to one configuration set and one identity."""

    @classmethod
    def daemon_args(cls):
        need_clients()
        dns = cls.peer(Dnsmasq([]))   # every name under .test: NXDOMAIN, at once
        return dict(
            keys=[(KEY_ID, SECRET),
                  (KEY2_ID, KEY2_SECRET, {"identities": ["ops@other.test"],
                                          "configuration_sets": ["bulk"]})],
            account={"mode": "production", "max_24h_send": 5000, "max_send_rate": 14,
                     "identities": ["example.test", "ops@other.test", "third.test"],
                     "suppression": {"reasons": ["BOUNCE"]}},
            dns={"servers": ["127.0.0.1:%d" % dns.port], "timeout": "1s"},
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

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ses2 = client(cls.k, KEY2_ID, KEY2_SECRET)

    # ---- account

    def test_get_account_production(self):
        a = aws(self.k, "get-account")
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
        m = aws(self.k, "get-dedicated-ips", "--pool-name", "marketing")["DedicatedIps"]
        self.assertEqual(m, [{"Ip": "127.0.0.13", "WarmupStatus": "NOT_APPLICABLE",
                              "WarmupPercentage": -1, "PoolName": "marketing"}])
        # every pool
        self.assertEqual(len(self.ses.get_dedicated_ips()["DedicatedIps"]), 4)
        self.assertClientError("NotFoundException", 404, self.ses.get_dedicated_ips, PoolName="nope")

    def test_get_dedicated_ip(self):
        r = self.ses.get_dedicated_ip(Ip="127.0.0.11")["DedicatedIp"]
        self.assertEqual((r["Ip"], r["PoolName"], r["WarmupStatus"]), ("127.0.0.11", "transactional", "IN_PROGRESS"))
        self.assertClientError("NotFoundException", 404, self.ses.get_dedicated_ip, Ip="127.0.0.99")
        p = aws(self.k, "get-dedicated-ip", "--ip", "127.0.0.99", expect_ok=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("NotFoundException", p.stderr)

    def test_put_dedicated_ip_warmup(self):
        aws(self.k, "put-dedicated-ip-warmup-attributes", "--ip", "127.0.0.10",
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
        msg = self.assertClientError("BadRequestException", 400, self.ses.put_dedicated_ip_warmup_attributes,
                                     Ip="127.0.0.13", WarmupPercentage=50)
        self.assertIn("managed", msg)
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
        p = aws(self.k, "create-dedicated-ip-pool", "--pool-name", "new", expect_ok=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("BadRequestException", p.stderr)
        self.assertIn(CONFIG_OWNED, p.stderr)
        # nothing changed
        self.assertEqual(self.ses.list_dedicated_ip_pools()["DedicatedIpPools"], ["marketing", "transactional"])

    def test_pools(self):
        self.assertEqual(aws(self.k, "list-dedicated-ip-pools")["DedicatedIpPools"],
                         ["marketing", "transactional"])
        r = self.ses.list_dedicated_ip_pools(PageSize=1)
        self.assertEqual(r["DedicatedIpPools"], ["marketing"])
        r = self.ses.list_dedicated_ip_pools(PageSize=1, NextToken=r["NextToken"])
        self.assertEqual(r["DedicatedIpPools"], ["transactional"])
        self.assertNotIn("NextToken", r)
        self.assertEqual(self.ses.get_dedicated_ip_pool(PoolName="marketing")["DedicatedIpPool"],
                         {"PoolName": "marketing", "ScalingMode": "MANAGED"})
        self.assertEqual(aws(self.k, "get-dedicated-ip-pool", "--pool-name", "transactional"),
                         {"DedicatedIpPool": {"PoolName": "transactional", "ScalingMode": "STANDARD"}})
        self.assertClientError("NotFoundException", 404, self.ses.get_dedicated_ip_pool, PoolName="nope")

    # ---- identities

    def test_list_email_identities(self):
        r = aws(self.k, "list-email-identities")
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
        a = aws(self.k, "get-email-identity", "--email-identity", "ops@other.test")
        self.assertEqual(a["IdentityType"], "EMAIL_ADDRESS")
        self.assertNotIn("kiln", a)
        self.assertClientError("NotFoundException", 404, self.ses.get_email_identity,
                               EmailIdentity="unknown.test")
        # an address under a verified domain is not an identity of its own
        self.assertClientError("NotFoundException", 404, self.ses.get_email_identity,
                               EmailIdentity="someone@example.test")

    # ---- configuration sets

    def test_configuration_sets(self):
        self.assertEqual(aws(self.k, "list-configuration-sets")["ConfigurationSets"], ["bulk", "txn"])
        r = self.ses.list_configuration_sets(PageSize=1)
        self.assertEqual(r["ConfigurationSets"], ["bulk"])
        r = self.ses.list_configuration_sets(PageSize=1, NextToken=r["NextToken"])
        self.assertEqual(r["ConfigurationSets"], ["txn"])
        self.assertNotIn("NextToken", r)
        s = aws(self.k, "get-configuration-set", "--configuration-set-name", "txn")
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
        r = aws(self.k, "list-configuration-sets", key_id=KEY2_ID, secret=KEY2_SECRET)
        self.assertEqual(r["ConfigurationSets"], ["bulk"])


class ApiAccountSandboxTest(unittest.TestCase):
    """get-account of a sandbox daemon: the sandbox's quota, no production access."""

    def test_get_account_sandbox(self):
        need_clients()
        with api_kiln(account={"mode": "sandbox", "max_24h_send": 200, "max_send_rate": 1,
                               "verified_recipients": ["someone@example.test"]}) as k:
            a = aws(k, "get-account")
            self.assertEqual(a["SendQuota"], {"Max24HourSend": 200, "MaxSendRate": 1, "SentLast24Hours": 0})
            self.assertIs(a["ProductionAccessEnabled"], False)
            self.assertIs(a["SendingEnabled"], True)
            self.assertEqual(a["SuppressionAttributes"]["SuppressedReasons"], ["BOUNCE", "COMPLAINT"])


class ApiRequestRateTest(unittest.TestCase):
    """api.max_request_rate "2/m": every access key has a bucket of its own, 2 requests
    deep and refilled at 2 a minute (slow enough that a loaded machine cannot refill it
    during the burst); a request with the bucket empty is 429 TooManyRequestsException,
    and logged as such."""

    def test_burst_of_one_key_is_throttled_the_other_key_answered(self):
        need_clients()
        import botocore.exceptions
        with api_kiln(keys=[(KEY_ID, SECRET), (KEY2_ID, KEY2_SECRET)],
                      api_over={"max_request_rate": "2/m"}) as k:
            wait_api(k)
            ses, ses2 = client(k), client(k, KEY2_ID, KEY2_SECRET)
            answered, throttled = 0, []
            t0 = time.monotonic()
            for _ in range(6):
                try:
                    ses.get_account()
                    answered += 1
                except botocore.exceptions.ClientError as e:
                    throttled.append(error_of(e))
            elapsed = time.monotonic() - t0
            # the bucket starts full (2); one more may have refilled if the burst took 30 s
            self.assertGreaterEqual(answered, 2)
            self.assertLessEqual(answered, 2 + int(elapsed / 30), (answered, elapsed))
            self.assertEqual(len(throttled), 6 - answered)
            for code, status, message in throttled:
                self.assertEqual((code, status), ("TooManyRequestsException", 429))
                self.assertIn("api.max_request_rate", message)
            # the other key draws on a bucket of its own: answered at once, by both clients
            self.assertIn("SendQuota", ses2.get_account())
            self.assertIn("SendQuota", aws(k, "get-account", key_id=KEY2_ID, secret=KEY2_SECRET))
            self.assertRegex(k.log(), r"event=api\.error op=GetAccount key=%s .*status=429 "
                                      r"type=TooManyRequestsException" % KEY_ID)
            self.assertNotRegex(k.log(), r"event=api\.error .*key=%s .*type=TooManyRequests" % KEY2_ID)


if __name__ == "__main__":
    main()
