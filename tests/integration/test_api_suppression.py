"""test_api_suppression.py — the account suppression list through kilnd's SES v2 API
(api/api_suppression.c), driven by boto3's sesv2 client and the aws CLI: Put (stored
lower-case; one addr-spec only), Get (404 when absent), List (the Reasons filter, the date
window, PageSize 1 paging with NextToken, a bad token's InvalidNextTokenException), Delete
(404 when absent); and that the API and the rest of kiln share one list: an address put
through the API shows in `kilnctl suppression list`, one added with kilnctl shows through
the API, and SMTP submission to an address put through the API is accepted and bounced
with Permanent/OnAccountSuppressionList, as for any suppressed address."""
import datetime
import re

from kilntest import main, send
from apitest import ApiTestCase, aws


def msgid(text):
    m = re.match(r"^2\.0\.0 Ok (\S+)$", text)
    assert m, text
    return m.group(1)


class ApiSuppression(ApiTestCase):
    def ctl_list(self):
        return {x["EmailAddress"]: x["Reason"]
                for x in self.k.ctl("suppression", "list")["SuppressedDestinationSummaries"]}

    def list_all(self, page_size, **filters):
        """Every listed address through pages of page_size, and the number of pages."""
        out, pages, token = [], 0, None
        while True:
            kw = dict(filters, PageSize=page_size)
            if token:
                kw["NextToken"] = token
            r = self.ses.list_suppressed_destinations(**kw)
            pages += 1
            self.assertLessEqual(len(r["SuppressedDestinationSummaries"]), page_size)
            for s in r["SuppressedDestinationSummaries"]:
                self.assertIsInstance(s["LastUpdateTime"], datetime.datetime)
                out.append((s["EmailAddress"], s["Reason"]))
            token = r.get("NextToken")
            if not token:
                return out, pages
            self.assertLess(pages, 1000, "paging does not end")

    def test_put_get_delete(self):
        before = datetime.datetime.now(datetime.timezone.utc)
        self.ses.put_suppressed_destination(EmailAddress="Mixed.Case@Dest.Test", Reason="BOUNCE")
        d = self.ses.get_suppressed_destination(
            EmailAddress="mixed.case@dest.test")["SuppressedDestination"]
        self.assertEqual(d["EmailAddress"], "mixed.case@dest.test")
        self.assertEqual(d["Reason"], "BOUNCE")
        self.assertLess(abs((d["LastUpdateTime"] - before).total_seconds()), 120)
        self.assertNotIn("Attributes", d)
        # looked up without regard to case; a second put changes the reason
        self.ses.put_suppressed_destination(EmailAddress="mixed.case@dest.test", Reason="COMPLAINT")
        d = self.ses.get_suppressed_destination(
            EmailAddress="MIXED.CASE@DEST.TEST")["SuppressedDestination"]
        self.assertEqual(d["Reason"], "COMPLAINT")

        self.ses.delete_suppressed_destination(EmailAddress="Mixed.Case@Dest.Test")
        self.assertClientError("NotFoundException", 404, self.ses.get_suppressed_destination,
                               EmailAddress="mixed.case@dest.test")
        self.assertClientError("NotFoundException", 404, self.ses.delete_suppressed_destination,
                               EmailAddress="mixed.case@dest.test")

    def test_put_refuses_what_is_not_one_address(self):
        for bad in ("no-at-sign", "two@at@dest.test", "Name <x@dest.test>", "a b@dest.test", ""):
            self.assertClientError("BadRequestException", 400,
                                   self.ses.put_suppressed_destination, EmailAddress=bad,
                                   Reason="BOUNCE")
        self.assertNotIn("x@dest.test", self.ctl_list())

    def test_get_unknown(self):
        self.assertClientError("NotFoundException", 404, self.ses.get_suppressed_destination,
                               EmailAddress="never@dest.test")

    def test_list_reasons_paging_dates(self):
        bounces = ["lb-1@dest.test", "lb-2@dest.test", "lb-3@dest.test"]
        complaints = ["lc-1@dest.test", "lc-2@dest.test"]
        for a in bounces:
            self.ses.put_suppressed_destination(EmailAddress=a, Reason="BOUNCE")
        for a in complaints:
            self.ses.put_suppressed_destination(EmailAddress=a, Reason="COMPLAINT")

        everything, pages = self.list_all(1)
        addrs = [a for a, _ in everything]
        self.assertEqual(addrs, sorted(addrs))
        self.assertEqual(len(addrs), len(set(addrs)))
        self.assertEqual(pages, len(addrs))
        self.assertEqual([a for a in addrs if a.startswith(("lb-", "lc-"))], bounces + complaints)

        only_c, _ = self.list_all(1, Reasons=["COMPLAINT"])
        self.assertTrue(all(r == "COMPLAINT" for _, r in only_c), only_c)
        self.assertEqual([a for a, _ in only_c if a.startswith(("lb-", "lc-"))], complaints)
        both, _ = self.list_all(2, Reasons=["BOUNCE", "COMPLAINT"])
        self.assertEqual([a for a, _ in both if a.startswith(("lb-", "lc-"))], bounces + complaints)

        future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
        r = self.ses.list_suppressed_destinations(StartDate=future)
        self.assertEqual(r["SuppressedDestinationSummaries"], [])
        r = self.ses.list_suppressed_destinations(EndDate=past)
        self.assertEqual(r["SuppressedDestinationSummaries"], [])
        r = self.ses.list_suppressed_destinations(StartDate=past, EndDate=future,
                                                  Reasons=["BOUNCE"])
        got = [s["EmailAddress"] for s in r["SuppressedDestinationSummaries"]]
        for a in bounces:
            self.assertIn(a, got)

    def test_list_bad_token(self):
        self.assertClientError("InvalidNextTokenException", 400,
                               self.ses.list_suppressed_destinations, NextToken="bm90IG91cnM=")
        self.assertClientError("BadRequestException", 400,
                               self.ses.list_suppressed_destinations, PageSize=0)

    def test_shared_with_kilnctl(self):
        self.ses.put_suppressed_destination(EmailAddress="via-api@dest.test", Reason="COMPLAINT")
        self.assertEqual(self.ctl_list().get("via-api@dest.test"), "COMPLAINT")
        self.k.ctl("suppression", "add", "Via-Ctl@Dest.Test", "--reason", "BOUNCE")
        d = self.ses.get_suppressed_destination(
            EmailAddress="via-ctl@dest.test")["SuppressedDestination"]
        self.assertEqual(d["Reason"], "BOUNCE")
        self.ses.delete_suppressed_destination(EmailAddress="via-ctl@dest.test")
        self.assertNotIn("via-ctl@dest.test", self.ctl_list())
        # both paths log the same command names
        log = self.k.log()
        self.assertRegex(log, r'event=api\.cmd cmd="?suppression\.add"?'
                              r' address="?via-api@dest\.test')
        self.assertRegex(log, r'event=api\.cmd cmd="?suppression\.remove"?'
                              r' address="?via-ctl@dest\.test')

    def test_submission_to_suppressed_address(self):
        self.ses.put_suppressed_destination(EmailAddress="Blocked@Dest.Test", Reason="BOUNCE")
        code, text = send(self.k, "app@example.test", ["blocked@dest.test"],
                          subject="to a suppressed address",
                          headers={"From": "App <app@example.test>"})
        self.assertEqual(code, 250, text)
        mid = msgid(text)
        evs = self.k.wait_events(
            lambda e: len([x for x in e if x["mail"]["messageId"] == mid]) >= 2,
            what="Send+Bounce OnAccountSuppressionList")
        evs = [x for x in evs if x["mail"]["messageId"] == mid]
        self.assertEqual([e["eventType"] for e in evs], ["Send", "Bounce"])
        b = evs[1]["bounce"]
        self.assertEqual((b["bounceType"], b["bounceSubType"]),
                         ("Permanent", "OnAccountSuppressionList"))
        self.assertEqual(b["bouncedRecipients"][0]["emailAddress"], "blocked@dest.test")

    def test_cli(self):
        k = self.k
        aws(k, "put-suppressed-destination", "--email-address", "cli@dest.test",
            "--reason", "COMPLAINT")
        r = aws(k, "get-suppressed-destination", "--email-address", "cli@dest.test")
        self.assertEqual(r["SuppressedDestination"]["EmailAddress"], "cli@dest.test")
        self.assertEqual(r["SuppressedDestination"]["Reason"], "COMPLAINT")
        r = aws(k, "list-suppressed-destinations", "--reasons", "COMPLAINT")
        self.assertIn("cli@dest.test",
                      [s["EmailAddress"] for s in r["SuppressedDestinationSummaries"]])
        aws(k, "delete-suppressed-destination", "--email-address", "cli@dest.test")
        p = aws(k, "get-suppressed-destination", "--email-address", "cli@dest.test",
                expect_ok=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("NotFoundException", p.stderr)


if __name__ == "__main__":
    main()
