"""test_ip_check.py — cloud IPs behind NAT (issue 16 item 3) with the real kilnd, dnsmasq and an
aiosmtpd sink on 127.0.0.x:

  (a) `kilnctl ip check ADDR` against dnsmasq, by either address of an IP: a public address
      whose PTR names its EHLO name and whose EHLO name's A record is that address is ready;
      one whose PTR names another host (which does resolve to it) while its EHLO name's A
      record holds another address gets both problems, each in its own words; one without a
      PTR (EHLO from server.hostname, which has no A record) gets "PTR missing"; an IP without
      public_address is checked on its own address; --json carries the fields and the human
      table the verdicts; an unknown address is refused, naming it;
  (b) NAT: with `address: 127.0.0.10` and `public_address: 192.0.2.10`, a delivery reaches
      the sink from 127.0.0.10 (the bound address) while `kilnctl ips` (and its table's BIND
      column), the Delivery event's ses:outgoing-ip tag and the delivery.ok log line show
      192.0.2.10; `kilnctl ip warmup` accepts either address, and so do the SES API's
      GetDedicatedIp and PutDedicatedIpWarmupAttributes, whose `Ip` is the public address;
  (c) SPF: `kilnctl identity status` wants the MAIL FROM domain's SPF record to authorize the
      public address, not the bound one."""
import re
import unittest

from kilntest import Dnsmasq, Kiln, Sink, main, send, wait_for

RECORDS = [
    "--local=/2.0.192.in-addr.arpa/",
    # 192.0.2.10: PTR good.kiln.test, good.kiln.test A 192.0.2.10 (its EHLO name): ready
    "--ptr-record=10.2.0.192.in-addr.arpa,good.kiln.test",
    "--address=/good.kiln.test/192.0.2.10",
    # 192.0.2.11: PTR other.kiln.test (A 192.0.2.11: forward-confirmed), but its EHLO name
    # eleven.kiln.test has A 192.0.2.99 only
    "--host-record=other.kiln.test,192.0.2.11",
    "--address=/eleven.kiln.test/192.0.2.99",
    # 192.0.2.12: no PTR; its EHLO name is server.hostname (mta.kiln.test): no A record
    # 127.0.0.13 (no NAT): PTR thirteen.kiln.test, A 127.0.0.13
    "--ptr-record=13.0.0.127.in-addr.arpa,thirteen.kiln.test",
    "--address=/thirteen.kiln.test/127.0.0.13",
]

IPS = [
    {"address": "127.0.0.10", "public_address": "192.0.2.10", "ehlo": "good.kiln.test",
     "zone": "az1", "pool": "transactional", "warmup": "done"},
    {"address": "127.0.0.11", "public_address": "192.0.2.11", "ehlo": "eleven.kiln.test",
     "zone": "az2", "pool": "transactional"},
    {"address": "127.0.0.12", "public_address": "192.0.2.12", "zone": "az3",
     "pool": "transactional"},
    {"address": "127.0.0.13", "ehlo": "thirteen.kiln.test", "zone": "az3",
     "pool": "transactional"},
]


class IpCheck(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = Dnsmasq(RECORDS).__enter__()
        k = Kiln(ips=IPS)
        k.cfg["dns"] = {"servers": ["127.0.0.1:%d" % cls.dns.port], "timeout": "1s"}
        k.write_config()
        cls.k = k.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.k.__exit__(None, None, None)
        cls.dns.__exit__(None, None, None)

    def check(self, addr):
        return self.k.ctl("ip", "check", addr)

    def human(self, addr):
        p = self.k.ctl("ip", "check", addr, json_out=False)
        return p.stdout

    def test_ready_by_either_address(self):
        for addr in ("192.0.2.10", "127.0.0.10"):
            d = self.check(addr)
            self.assertEqual(d["Ip"], "192.0.2.10")
            self.assertEqual(d["BindAddress"], "127.0.0.10")
            self.assertEqual(d["EhloName"], "good.kiln.test")
            self.assertEqual(d["EhloFrom"], "ips[0].ehlo")
            self.assertEqual(d["ReverseName"], "10.2.0.192.in-addr.arpa")
            self.assertEqual(d["Ptr"], ["good.kiln.test"])
            self.assertTrue(d["PtrMatchesEhlo"])
            self.assertEqual(d["ForwardType"], "A")
            self.assertEqual(d["ForwardAddresses"], ["192.0.2.10"])
            self.assertTrue(d["EhloResolvesToIp"])
            self.assertTrue(d["ForwardConfirmed"])
            self.assertTrue(d["Ready"])
            self.assertFalse(d["TemporaryFailure"])
            self.assertEqual(d["Problems"], [])
            self.assertNotIn("Text", d)
        out = self.human("192.0.2.10")
        self.assertIn("IP 192.0.2.10 (public; NAT maps it onto 127.0.0.10, which kiln binds)", out)
        self.assertIn("EHLO name good.kiln.test (ips[0].ehlo)", out)
        self.assertRegex(out, r"PTR of the IP\s+ok\s+good\.kiln\.test")
        self.assertRegex(out, r"PTR name is the EHLO name\s+ok")
        self.assertRegex(out, r"A of the EHLO name has the IP\s+ok\s+192\.0\.2\.10")
        self.assertRegex(out, r"forward-confirmed reverse DNS\s+ok\s+good\.kiln\.test -> 192\.0\.2\.10")
        self.assertIn("ready: the PTR of 192.0.2.10 is good.kiln.test and its A record includes "
                      "192.0.2.10", out)

    def test_ptr_names_another_host_and_a_lacks_the_address(self):
        d = self.check("192.0.2.11")
        self.assertEqual(d["Ptr"], ["other.kiln.test"])
        self.assertFalse(d["PtrMatchesEhlo"])
        self.assertEqual(d["ForwardAddresses"], ["192.0.2.99"])
        self.assertFalse(d["EhloResolvesToIp"])
        # other.kiln.test does resolve to 192.0.2.11: reverse DNS is forward-confirmed, just
        # not for the EHLO name
        self.assertTrue(d["ForwardConfirmed"])
        self.assertEqual(d["PtrForward"], [{"Name": "other.kiln.test", "Addresses": ["192.0.2.11"]}])
        self.assertFalse(d["Ready"])
        self.assertEqual(len(d["Problems"]), 2, d["Problems"])
        self.assertTrue(d["Problems"][0].startswith(
            "PTR names other.kiln.test but EHLO is eleven.kiln.test (ips[1].ehlo)"), d["Problems"])
        self.assertTrue(d["Problems"][1].startswith(
            "A of eleven.kiln.test does not include the address: it holds 192.0.2.99, not "
            "192.0.2.11"), d["Problems"])
        out = self.human("127.0.0.11")
        self.assertRegex(out, r"PTR name is the EHLO name\s+wrong\s+other\.kiln\.test")
        self.assertRegex(out, r"A of the EHLO name has the IP\s+wrong\s+192\.0\.2\.99")
        self.assertIn("not ready:\n  - PTR names other.kiln.test but EHLO is eleven.kiln.test", out)

    def test_ptr_missing_and_hostname_without_a(self):
        d = self.check("192.0.2.12")
        self.assertEqual(d["EhloName"], "mta.kiln.test")
        self.assertEqual(d["EhloFrom"], "server.hostname")
        self.assertEqual(d["Ptr"], [])
        self.assertFalse(d["PtrMatchesEhlo"])
        self.assertFalse(d["ForwardConfirmed"])
        self.assertEqual(d["ForwardAddresses"], [])
        self.assertFalse(d["TemporaryFailure"])
        self.assertFalse(d["Ready"])
        self.assertTrue(d["Problems"][0].startswith(
            "PTR missing: 12.2.0.192.in-addr.arpa has no PTR record"), d["Problems"])
        self.assertIn("point it at mta.kiln.test", d["Problems"][0])
        self.assertTrue(d["Problems"][1].startswith(
            "A of mta.kiln.test does not include the address: mta.kiln.test has no A record; "
            "publish mta.kiln.test A 192.0.2.12"), d["Problems"])
        out = self.human("192.0.2.12")
        self.assertRegex(out, r"PTR of the IP\s+missing\s+-")
        self.assertRegex(out, r"A of the EHLO name has the IP\s+missing\s+-")

    def test_ip_without_nat(self):
        d = self.check("127.0.0.13")
        self.assertEqual(d["Ip"], "127.0.0.13")
        self.assertEqual(d["BindAddress"], "127.0.0.13")
        self.assertEqual(d["ReverseName"], "13.0.0.127.in-addr.arpa")
        self.assertTrue(d["Ready"], d["Problems"])
        self.assertIn("IP 127.0.0.13\n", self.human("127.0.0.13"))

    def test_unknown_address(self):
        p = self.k.ctl("ip", "check", "198.51.100.7", expect_ok=False, json_out=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("unknown IP 198.51.100.7: no ips entry has it as address or public_address "
                      "(ips: 127.0.0.10 (public 192.0.2.10), 127.0.0.11 (public 192.0.2.11)", p.stderr)
        p = self.k.ctl("ip", "check", expect_ok=False, json_out=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("ip check needs an ADDRESS", p.stderr)


class NatDelivery(unittest.TestCase):
    def test_bound_address_on_the_wire_public_address_everywhere_else(self):
        with Sink("127.0.0.21") as sink, Kiln(
                ips=[{"address": "127.0.0.10", "public_address": "192.0.2.10", "zone": "az1",
                      "pool": "transactional", "warmup": "done"}],
                routes=[{"domain": "dest.test", "host": sink.host, "port": sink.port}]) as k:
            code, text = send(k, "app@example.test", ["a@dest.test"])
            self.assertEqual(code, 250, text)
            mid = re.match(r"^2\.0\.0 Ok (\S+)$", text).group(1)
            wait_for(lambda: sink.messages, what="sink to receive the message")
            self.assertEqual(sink.messages[0]["peer"], "127.0.0.10")   # the socket is bound there
            evs = k.wait_events(lambda e: any(x["eventType"] == "Delivery" for x in e),
                                what="Delivery event")
            d = [x for x in evs if x["eventType"] == "Delivery"][0]
            self.assertEqual(d["mail"]["messageId"], mid)
            self.assertEqual(d["mail"]["tags"]["ses:outgoing-ip"], ["192.0.2.10"])
            self.assertIn("ip=127.0.0.10 public=192.0.2.10 hop=", k.log())

            ips = k.ctl("ips")["DedicatedIps"]
            self.assertEqual(len(ips), 1)
            self.assertEqual(ips[0]["Ip"], "192.0.2.10")
            self.assertEqual(ips[0]["kiln"]["BindAddress"], "127.0.0.10")
            self.assertEqual(ips[0]["SentLast24Hours"], 1)
            table = k.ctl("ips", json_out=False).stdout.splitlines()
            self.assertEqual(table[0].split()[:3], ["IP", "BIND", "POOL"])
            self.assertEqual(table[1].split()[:3], ["192.0.2.10", "127.0.0.10", "transactional"])

            # either address names the IP
            w = k.ctl("ip", "warmup", "192.0.2.10", "--percent", "40")
            self.assertEqual((w["Ip"], w["BindAddress"], w["WarmupPercentage"]),
                             ("192.0.2.10", "127.0.0.10", 40))
            w = k.ctl("ip", "warmup", "127.0.0.10", "--percent", "60")
            self.assertEqual((w["Ip"], w["WarmupPercentage"]), ("192.0.2.10", 60))
            self.assertEqual(k.ctl("ips")["DedicatedIps"][0]["WarmupPercentage"], 60)

    def test_ses_api_shows_the_public_address_and_takes_either(self):
        import apitest
        k = apitest.api_kiln(ips=[
            {"address": "127.0.0.10", "public_address": "192.0.2.10", "zone": "az1",
             "pool": "transactional"},
            {"address": "127.0.0.11", "zone": "az2", "pool": "transactional"}])
        with k:
            apitest.wait_api(k)
            ses = apitest.client(k)
            self.assertEqual([i["Ip"] for i in ses.get_dedicated_ips()["DedicatedIps"]],
                             ["127.0.0.11", "192.0.2.10"])   # ordered by the address shown
            for addr in ("127.0.0.10", "192.0.2.10"):
                self.assertEqual(ses.get_dedicated_ip(Ip=addr)["DedicatedIp"]["Ip"], "192.0.2.10")
            ses.put_dedicated_ip_warmup_attributes(Ip="192.0.2.10", WarmupPercentage=30)
            self.assertEqual(ses.get_dedicated_ip(Ip="127.0.0.10")["DedicatedIp"]["WarmupPercentage"], 30)
            ses.close()

    def test_spf_check_wants_the_public_addresses(self):
        """The MAIL FROM domain's SPF record must authorize what receivers see (192.0.2.10),
        not the private address kiln binds; `identity status` says so and what to publish."""
        def spf_of(spf_value):
            with Dnsmasq(["--mx-host=mail.example.test,fb.example.test,10",
                          "--host-record=fb.example.test,127.0.0.99",
                          "--txt-record=mail.example.test,%s" % spf_value]) as dns:
                k = Kiln(ips=[{"address": "127.0.0.10", "public_address": "192.0.2.10",
                               "zone": "az1", "pool": "transactional"}])
                k.cfg["dns"] = {"servers": ["127.0.0.1:%d" % dns.port], "timeout": "1s"}
                k.cfg["account"]["identities"] = [
                    {"identity": "example.test", "mail_from": {"domain": "mail.example.test"}}]
                k.write_config()
                with k:
                    recs = k.ctl("identity", "status", "example.test")["kiln"]["Records"]
                    return [r for r in recs if r["Kind"] == "SPF"][0]
        ok = spf_of("v=spf1 ip4:192.0.2.10 -all")
        self.assertEqual(ok["Status"], "PUBLISHED", ok)
        private = spf_of("v=spf1 ip4:127.0.0.10 -all")
        self.assertEqual(private["Status"], "WRONG", private)
        self.assertEqual(private["Reason"], "does not authorize pool IP 192.0.2.10 (-all)")
        self.assertTrue(private["Publish"]["Value"].startswith("v=spf1 ip4:192.0.2.10 "), private)

    def test_table_without_nat_has_no_bind_column(self):
        with Kiln() as k:
            table = k.ctl("ips", json_out=False).stdout.splitlines()
            self.assertEqual(table[0].split()[:2], ["IP", "POOL"])
            ips = k.ctl("ips")["DedicatedIps"]
            self.assertEqual([(i["Ip"], i["kiln"]["BindAddress"]) for i in ips],
                             [("127.0.0.10", "127.0.0.10"), ("127.0.0.11", "127.0.0.11"),
                              ("127.0.0.12", "127.0.0.12")])


if __name__ == "__main__":
    main()
