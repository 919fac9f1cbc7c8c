"""test_api_send.py — SendEmail through kiln's SES v2 API with clients we did not write:
Debian's aws CLI and boto3, changed only by their endpoint URL. Simple (UTF-8 subject as
encoded-words, multipart/alternative), Raw (base64, Bcc from the fields, the set from
X-SES-CONFIGURATION-SET) and Template content arrive at a sink from a pool IP; the events
carry the API's MessageId and its EmailTags; SigV4 failures (wrong secret, unknown key, stale
date, tampered body) and bad input (malformed JSON, unknown and missing fields, oversized
bodies, bad base64, a template variable missing) get SES's errors by name; the SES rules of
SMTP submission (unverified sender, sandbox recipient, send rate, unknown set) hold; and a
MessageId answered survives kill -9."""
import base64
import email
import email.policy
import http.client
import json
import socket
import threading
import time
import unittest
from unittest import mock

from botocore.exceptions import ClientError

from apitest import KEY_ID, SECRET, api_kiln, aws, client, endpoint, error_code
from kilntest import Sink, main, wait_for

POOL_IPS = {"127.0.0.10", "127.0.0.11", "127.0.0.12"}


def routed(sink):
    return [{"domain": "dest.test", "host": sink.host, "port": sink.port}]


def signed_request(k, method, path, body=b"", headers=None, key_id=KEY_ID, secret=SECRET,
                   tamper=None, region=None):
    """A request signed by botocore's own SigV4Auth, sent with http.client (so a test can
    send what botocore's serializer would refuse). Returns (status, headers, json body)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    req = AWSRequest(method=method, url=endpoint(k) + path, data=body, headers=hdrs)
    SigV4Auth(Credentials(key_id, secret), "ses", region or k.cfg["server"]["region"]).add_auth(req)
    p = req.prepare()
    data = p.body if p.body is not None else b""
    if isinstance(data, str):
        data = data.encode()
    if tamper:
        data = tamper(data)
    conn = http.client.HTTPConnection("127.0.0.1", k.api_port, timeout=30)
    try:
        out = dict(p.headers)
        out["Content-Length"] = str(len(data))
        conn.request(method, path, body=data, headers=out)
        r = conn.getresponse()
        raw = r.read()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"raw": raw.decode("latin-1")}
        return r.status, {h.lower(): v for h, v in r.getheaders()}, parsed
    finally:
        conn.close()


def simple_content(subject="hello", text="plain body", html=None):
    body = {"Text": {"Data": text, "Charset": "UTF-8"}}
    if html is not None:
        body["Html"] = {"Data": html, "Charset": "UTF-8"}
    return {"Simple": {"Subject": {"Data": subject, "Charset": "UTF-8"}, "Body": body}}


class SendEmailTest(unittest.TestCase):
    def test_simple_with_aws_cli_arrives_with_tags_in_events(self):
        with Sink() as sink, api_kiln(routes=routed(sink)) as k:
            content = simple_content("Grüße aus dem Ofen 🔥", "Hallo Welt\nzweite Zeile",
                                     "<p>Hallo <b>Welt</b></p>")
            out = aws(k, "send-email", "--from-email-address", "Sender <sender@example.test>",
                      "--destination", "ToAddresses=rcpt@dest.test,CcAddresses=cc@dest.test",
                      "--content", json.dumps(content), "--configuration-set-name", "txn",
                      "--email-tags", "Name=campaign,Value=spring", "Name=team,Value=ops")
            mid = out["MessageId"]
            self.assertRegex(mid, r"^[0-9a-f]{16}-[0-9a-f-]{36}-000000$")
            wait_for(lambda: len(sink.messages) >= 1, 20, what="the message at the sink")
            m = sink.messages[0]
            self.assertIn(m["peer"], POOL_IPS)
            self.assertEqual(sorted(m["rcpts"]), ["cc@dest.test", "rcpt@dest.test"])
            msg = email.message_from_bytes(m["data"], policy=email.policy.default)
            self.assertEqual(msg["Subject"], "Grüße aus dem Ofen 🔥")
            self.assertTrue(m["data"].split(b"\r\n\r\n")[0].find(b"=?") > 0,
                            "the subject travels as RFC 2047 encoded-words")
            self.assertEqual(msg.get_content_type(), "multipart/alternative")
            plain = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
            self.assertEqual(plain.rstrip("\n"), "Hallo Welt\nzweite Zeile")
            self.assertIn("<b>Welt</b>", msg.get_body(("html",)).get_content())
            self.assertEqual(msg["To"], "rcpt@dest.test")
            self.assertIsNotNone(msg["Date"])
            evs = k.wait_events(lambda e: any(x["eventType"] == "Delivery" for x in e), 20,
                                what="Send and Delivery events")
            send = [e for e in evs if e["eventType"] == "Send"][0]
            self.assertEqual(send["mail"]["messageId"], mid)
            self.assertEqual(send["mail"]["tags"]["campaign"], ["spring"])
            self.assertEqual(send["mail"]["tags"]["team"], ["ops"])
            self.assertEqual(send["mail"]["tags"]["ses:configuration-set"], ["txn"])
            deliv = [e for e in evs if e["eventType"] == "Delivery"]
            self.assertTrue(all(e["mail"]["messageId"] == mid for e in deliv))
            self.assertEqual(deliv[0]["mail"]["tags"]["campaign"], ["spring"])
            self.assertIn('op=SendEmail key=%s' % KEY_ID, k.log())

    def test_raw_with_boto3_takes_bcc_and_set_from_the_fields(self):
        with Sink() as sink, api_kiln(routes=routed(sink)) as k:
            raw = ("From: sender@example.test\r\nTo: a@dest.test\r\nBcc: hidden@dest.test\r\n"
                   "X-SES-CONFIGURATION-SET: txn\r\nSubject: raw one\r\n\r\nraw body\r\n")
            c = client(k)
            r = c.send_email(Content={"Raw": {"Data": raw.encode()}})
            mid = r["MessageId"]
            wait_for(lambda: sink.messages, 20, what="the raw message")
            m = sink.messages[0]
            self.assertEqual(sorted(m["rcpts"]), ["a@dest.test", "hidden@dest.test"])
            self.assertNotIn(b"Bcc:", m["data"])
            self.assertNotIn(b"X-SES-CONFIGURATION-SET", m["data"])
            self.assertIn(b"raw body", m["data"])
            self.assertIn(b"with HTTP id " + mid.encode(), m["data"].replace(b"\r\n\t", b" "))
            # the aws CLI sends Content.Raw.Data as base64 text, as SES takes it
            cli_raw = (b"From: sender@example.test\r\nTo: cli@dest.test\r\nSubject: cli raw\r\n"
                       b"\r\nraw through the aws CLI\r\n")
            out = aws(k, "send-email", "--content",
                      json.dumps({"Raw": {"Data": base64.b64encode(cli_raw).decode()}}))
            wait_for(lambda: any(mm["rcpts"] == ["cli@dest.test"] for mm in sink.messages), 20,
                     what="the CLI's raw message")
            got = [mm for mm in sink.messages if mm["rcpts"] == ["cli@dest.test"]][0]
            self.assertIn(b"raw through the aws CLI", got["data"])
            self.assertIn(out["MessageId"].encode(), got["data"].replace(b"\r\n\t", b" "))
            # a Raw message with LF line ends is stored with CRLF
            r2 = c.send_email(FromEmailAddress="sender@example.test",
                              Destination={"ToAddresses": ["lf@dest.test"]},
                              Content={"Raw": {"Data": b"From: sender@example.test\nTo: lf@dest.test\n"
                                                       b"Subject: lf\n\nline one\nline two\n"}})
            self.assertTrue(r2["MessageId"])
            wait_for(lambda: any(mm["rcpts"] == ["lf@dest.test"] for mm in sink.messages), 20,
                     what="the LF message")
            lf = [mm for mm in sink.messages if mm["rcpts"] == ["lf@dest.test"]][0]
            self.assertIn(b"line one\r\nline two\r\n", lf["data"])

    def test_raw_message_tags_header_unless_email_tags(self):
        with Sink() as sink, api_kiln(routes=routed(sink)) as k:
            c = client(k)
            raw = ("From: sender@example.test\r\nTo: t1@dest.test\r\n"
                   "X-SES-MESSAGE-TAGS: campaign=raw-one, tier=gold\r\nSubject: tagged\r\n"
                   "\r\nbody\r\n")
            mid1 = c.send_email(Content={"Raw": {"Data": raw.encode()}})["MessageId"]
            # EmailTags given: SES uses only those, never a mix; the field goes either way
            raw2 = raw.replace("t1@", "t2@")
            mid2 = c.send_email(Content={"Raw": {"Data": raw2.encode()}},
                                EmailTags=[{"Name": "campaign", "Value": "api"}])["MessageId"]
            wait_for(lambda: len(sink.messages) >= 2, 20, what="two tagged raw messages")
            self.assertFalse(any(b"X-SES-MESSAGE-TAGS" in m["data"] for m in sink.messages))
            evs = k.wait_events(lambda e: len([x for x in e if x["eventType"] == "Send"]) >= 2, 20)
            tags = {e["mail"]["messageId"]: e["mail"]["tags"] for e in evs if e["eventType"] == "Send"}
            self.assertEqual(tags[mid1]["campaign"], ["raw-one"])
            self.assertEqual(tags[mid1]["tier"], ["gold"])
            self.assertEqual(tags[mid2]["campaign"], ["api"])
            self.assertNotIn("tier", tags[mid2])
            with self.assertRaises(c.exceptions.BadRequestException) as cm:
                c.send_email(Content={"Raw": {"Data": raw.replace("tier=gold", "tier").encode()}})
            self.assertIn('X-SES-MESSAGE-TAGS: tag "tier" has no', str(cm.exception))

    def test_simulator_ooto_threads_its_auto_reply_to_the_api_message(self):
        # the message is made ready for the spool off the loop; the simulator's auto-reply
        # still reads the original's fields (Subject, Message-ID) to thread to it
        with Sink() as sink, api_kiln(routes=routed(sink)) as k:
            raw = ("From: sender@example.test\r\nTo: ooto@simulator.amazonses.com\r\n"
                   "Message-ID: <orig-1@example.test>\r\nSubject: away test\r\n\r\nbody\r\n")
            mid = client(k).send_email(Content={"Raw": {"Data": raw.encode()}})["MessageId"]

            def reply(evs):
                return [e for e in evs if e["eventType"] == "Send"
                        and e["mail"]["destination"] == ["sender@example.test"]]
            evs = k.wait_events(lambda e: reply(e) and len([x for x in e if x["mail"]["messageId"] == mid]) >= 2, 20,
                                what="the Delivery of the API message and the auto-reply's Send")
            self.assertEqual([e["eventType"] for e in evs if e["mail"]["messageId"] == mid],
                             ["Send", "Delivery"])
            hdrs = {h["name"].lower(): h["value"] for h in reply(evs)[0]["mail"]["headers"]}
            self.assertEqual(hdrs.get("subject"), "Automatic reply: away test")
            self.assertEqual(hdrs.get("in-reply-to"), "<orig-1@example.test>")
            self.assertEqual(sink.messages, [])

    def test_template_content_and_missing_variable(self):
        with Sink() as sink, api_kiln(routes=routed(sink)) as k:
            c = client(k)
            c.create_email_template(TemplateName="welcome", TemplateContent={
                "Subject": "Welcome {{name}}", "Text": "Hi {{name}}, your plan is {{plan.kind}}.",
                "Html": "<p>Hi {{name}}</p>"})
            out = aws(k, "send-email", "--from-email-address", "sender@example.test",
                      "--destination", "ToAddresses=t@dest.test", "--content", json.dumps(
                          {"Template": {"TemplateName": "welcome",
                                        "TemplateData": json.dumps({"name": "Ada",
                                                                    "plan": {"kind": "pro"}})}}))
            self.assertTrue(out["MessageId"])
            wait_for(lambda: sink.messages, 20, what="the templated message")
            msg = email.message_from_bytes(sink.messages[0]["data"], policy=email.policy.default)
            self.assertEqual(msg["Subject"], "Welcome Ada")
            self.assertIn("your plan is pro.", msg.get_body(("plain",)).get_content())
            with self.assertRaises(c.exceptions.ClientError) as cm:
                c.send_email(FromEmailAddress="sender@example.test",
                             Destination={"ToAddresses": ["t@dest.test"]},
                             Content={"Template": {"TemplateName": "welcome",
                                                   "TemplateData": json.dumps({"plan": {"kind": "x"}})}})
            self.assertEqual(error_code(cm.exception), "BadRequestException")
            self.assertIn("Attribute 'name' is not present in the rendering data.",
                          str(cm.exception))
            with self.assertRaises(c.exceptions.NotFoundException):
                c.send_email(FromEmailAddress="sender@example.test",
                             Destination={"ToAddresses": ["t@dest.test"]},
                             Content={"Template": {"TemplateName": "nope", "TemplateData": "{}"}})

    def test_send_bulk_email_per_entry_results(self):
        with Sink() as sink, api_kiln(routes=routed(sink)) as k:
            c = client(k)
            c.create_email_template(TemplateName="bulk", TemplateContent={
                "Subject": "Hi {{name}}", "Text": "Dear {{name}} of {{org}}"})
            r = c.send_bulk_email(
                FromEmailAddress="sender@example.test",
                DefaultContent={"Template": {"TemplateName": "bulk",
                                             "TemplateData": json.dumps({"name": "friend", "org": "kiln"})}},
                DefaultEmailTags=[{"Name": "wave", "Value": "w1"}],
                BulkEmailEntries=[
                    {"Destination": {"ToAddresses": ["b1@dest.test"]},
                     "ReplacementEmailContent": {"ReplacementTemplate": {
                         "ReplacementTemplateData": json.dumps({"name": "Bea"})}}},
                    {"Destination": {"ToAddresses": ["b2@unverified-in-sandbox.test"]},
                     "ReplacementTags": [{"Name": "bad tag", "Value": "x"}]},
                    {"Destination": {"ToAddresses": ["b3@dest.test"]}},
                ])
            res = r["BulkEmailEntryResults"]
            self.assertEqual([x["Status"] for x in res], ["SUCCESS", "INVALID_PARAMETER", "SUCCESS"])
            self.assertTrue(res[0]["MessageId"] and res[2]["MessageId"])
            self.assertIn("bad tag", res[1]["Error"])
            wait_for(lambda: len(sink.messages) >= 2, 20, what="two bulk messages")
            subjects = sorted(email.message_from_bytes(m["data"], policy=email.policy.default)["Subject"]
                              for m in sink.messages)
            self.assertEqual(subjects, ["Hi Bea", "Hi friend"])
            evs = k.wait_events(lambda e: len([x for x in e if x["eventType"] == "Send"]) >= 2, 20)
            self.assertTrue(all(e["mail"]["tags"]["wave"] == ["w1"] for e in evs
                                if e["eventType"] == "Send"))


class ApiTemplateRenderTest(unittest.TestCase):
    def test_template_renders_leave_the_loop_free(self):
        # a template is rendered on a worker, one SendBulkEmail entry after another: while a
        # call renders 50 entries of 4 MB each (each then refused for a variable missing at
        # the end of the template, so nothing is stored), other requests are answered; when
        # the loop rendered them itself, it answered nothing else until all 50 were done
        with api_kiln() as k:
            c = client(k)
            c.create_email_template(TemplateName="big", TemplateContent={
                "Subject": "s", "Text": "{{a}}" * 40000 + "{{missing}}"})
            answered, done = [], threading.Event()

            def pinger():             # unsigned requests: 403 from the loop, no worker
                conn = http.client.HTTPConnection("127.0.0.1", int(endpoint(k).rsplit(":", 1)[1]),
                                                  timeout=30)
                while not done.is_set():
                    conn.request("GET", "/v2/email/account")
                    r = conn.getresponse()
                    r.read()
                    answered.append(r.status)
                conn.close()
            t = threading.Thread(target=pinger)
            t.start()
            wait_for(lambda: answered, 10, what="the first unsigned request's answer")
            before = len(answered)
            r = c.send_bulk_email(FromEmailAddress="sender@example.test",
                                  DefaultContent={"Template": {"TemplateName": "big",
                                                               "TemplateData": json.dumps({"a": "x" * 100})}},
                                  BulkEmailEntries=[{"Destination": {"ToAddresses": ["a@dest.test"]}}] * 50)
            during = len(answered) - before
            done.set()
            t.join(30)
            results = r["BulkEmailEntryResults"]
            self.assertEqual({x["Status"] for x in results}, {"INVALID_PARAMETER"})
            self.assertIn("missing", results[49]["Error"])
            self.assertEqual(set(answered), {403})
            self.assertGreater(during, 50, "requests answered while 50 templates rendered")


    def test_bulk_of_large_messages_waits_for_commits_and_stores_all(self):
        # entries of about 18 MB (a Text and an Html part of 9 MB): each one is more than a
        # bulk call may hold uncommitted (16 MB), so the next is rendered only after its commit
        with Sink() as sink, api_kiln(routes=routed(sink), submission={"max_message_size": "24MB"}) as k:
            c = client(k)
            c.create_email_template(TemplateName="large", TemplateContent={
                "Subject": "large {{n}}", "Text": "{{a}}" * 45000, "Html": "{{a}}" * 45000})
            r = c.send_bulk_email(FromEmailAddress="sender@example.test",
                                  DefaultContent={"Template": {"TemplateName": "large",
                                                               "TemplateData": json.dumps({"a": "y" * 200, "n": 0})}},
                                  BulkEmailEntries=[{"Destination": {"ToAddresses": ["l%d@dest.test" % i]},
                                                     "ReplacementEmailContent": {"ReplacementTemplate": {
                                                         "ReplacementTemplateData": json.dumps({"n": i})}}}
                                                    for i in range(3)])
            results = r["BulkEmailEntryResults"]
            self.assertEqual([x["Status"] for x in results], ["SUCCESS"] * 3)
            wait_for(lambda: len(sink.messages) >= 3, 120, what="the three large messages")
            self.assertEqual(sorted(m["rcpts"][0] for m in sink.messages),
                             ["l%d@dest.test" % i for i in range(3)])
            for m in sink.messages:
                self.assertGreater(len(m["data"]), 18000000)
                self.assertIn(b"Subject: large %s" % m["rcpts"][0][1:2].encode(), m["data"])
            self.assertIn("api.bulk_wait", k.log())


    def test_an_answer_larger_than_what_is_left_of_max_inflight_is_503(self):
        # TestRenderEmailTemplate's answer is the rendered message (3 MB here): with
        # api.max_inflight_bytes at 2 MB it cannot be held, so the answer is a 503 that says so
        with api_kiln(api_over={"max_body_size": "1MB", "max_inflight_bytes": "2MB"}) as k:
            c = client(k)
            c.create_email_template(TemplateName="wide", TemplateContent={"Text": "{{a}}" * 30000})
            small = c.test_render_email_template(TemplateName="wide",
                                                 TemplateData=json.dumps({"a": "s"}))
            self.assertIn("sssss", small["RenderedTemplate"])
            with self.assertRaises(ClientError) as cm:
                c.test_render_email_template(TemplateName="wide",
                                             TemplateData=json.dumps({"a": "w" * 100}))
            self.assertEqual(error_code(cm.exception), "ServiceUnavailable")
            self.assertIn("does not fit in api.max_inflight_bytes",
                          cm.exception.response["Error"]["Message"])


    def test_large_simple_and_raw_bodies_arrive_whole(self):
        # bodies over 16 KB are built on a worker (the MIME encoding of a large Simple body,
        # the copy and header edits of a large Raw one): what arrives is what was sent
        with Sink() as sink, api_kiln(routes=routed(sink)) as k:
            c = client(k)
            text = "".join("line %d: ünïcode and a long line %s\n" % (i, "=" * (i % 120))
                           for i in range(3000))
            self.assertGreater(len(text.encode()), 200000)
            c.send_email(FromEmailAddress="sender@example.test",
                         Destination={"ToAddresses": ["big-simple@dest.test"]},
                         Content={"Simple": {"Subject": {"Data": "big"},
                                             "Body": {"Text": {"Data": text, "Charset": "UTF-8"}}}})
            raw = ("From: sender@example.test\r\nTo: big-raw@dest.test\r\nBcc: big-bcc@dest.test\r\n"
                   "Subject: big raw\r\n\r\n" + ("r" * 70 + "\r\n") * 4000)
            c.send_email(Content={"Raw": {"Data": raw.encode()}})
            wait_for(lambda: len(sink.messages) >= 2, 30, what="the two large messages")
            by = {m["rcpts"][0]: m for m in sink.messages}
            msg = email.message_from_bytes(by["big-simple@dest.test"]["data"], policy=email.policy.default)
            # lines end with CRLF on the wire; the text is the same
            self.assertEqual(msg.get_body(("plain",)).get_content().replace("\r\n", "\n"), text)
            rawmsg = by["big-raw@dest.test"]
            self.assertEqual(sorted(rawmsg["rcpts"]), ["big-bcc@dest.test", "big-raw@dest.test"])
            self.assertNotIn(b"Bcc:", rawmsg["data"])
            self.assertTrue(rawmsg["data"].endswith(("r" * 70 + "\r\n").encode() * 4000))


class ApiRulesTest(unittest.TestCase):
    def test_ses_rules_of_submission_apply(self):
        with api_kiln(account={"mode": "sandbox", "max_24h_send": 200, "max_send_rate": 1,
                               "verified_recipients": ["ok@dest.test"]}) as k:
            c = client(k)
            dest = {"ToAddresses": ["ok@dest.test"]}
            with self.assertRaises(c.exceptions.MessageRejected) as cm:
                c.send_email(FromEmailAddress="nobody@unverified.test", Destination=dest,
                             Content=simple_content())
            self.assertIn("Email address is not verified", str(cm.exception))
            self.assertIn("nobody@unverified.test", str(cm.exception))
            # a raw From: that is not UTF-8 is quoted in the message with U+FFFD (the answer
            # is JSON; before, jansson refused the text and the answer had no message)
            with self.assertRaises(c.exceptions.MessageRejected) as cm:
                c.send_email(Destination=dest, Content={"Raw": {"Data": b"From: app@exc\x9dple.test\r\n"
                                                                   b"Subject: x\r\n\r\nbody\r\n"}})
            self.assertIn("app@exc\ufffdple.test", cm.exception.response["Error"]["Message"])
            with self.assertRaises(c.exceptions.MessageRejected) as cm:
                c.send_email(FromEmailAddress="sender@example.test",
                             Destination={"ToAddresses": ["stranger@elsewhere.test"]},
                             Content=simple_content())
            self.assertIn("stranger@elsewhere.test", str(cm.exception))
            with self.assertRaises(c.exceptions.NotFoundException) as cm:
                c.send_email(FromEmailAddress="sender@example.test", Destination=dest,
                             Content=simple_content(), ConfigurationSetName="nope")
            self.assertIn("Configuration set nope does not exist", str(cm.exception))
            c.send_email(FromEmailAddress="sender@example.test", Destination=dest,
                         Content=simple_content())
            with self.assertRaises(c.exceptions.TooManyRequestsException) as cm:
                for _ in range(5):        # max_send_rate 1: the bucket holds one token
                    c.send_email(FromEmailAddress="sender@example.test", Destination=dest,
                                 Content=simple_content())
            self.assertIn("Maximum sending rate exceeded", str(cm.exception))

    def test_daily_quota_is_limit_exceeded(self):
        with api_kiln(account={"max_24h_send": 2}) as k:
            c = client(k)
            for i in range(2):
                c.send_email(FromEmailAddress="sender@example.test",
                             Destination={"ToAddresses": ["q%d@dest.test" % i]},
                             Content=simple_content())
            with self.assertRaises(c.exceptions.LimitExceededException) as cm:
                c.send_email(FromEmailAddress="sender@example.test",
                             Destination={"ToAddresses": ["q9@dest.test"]}, Content=simple_content())
            self.assertIn("Daily message quota exceeded", str(cm.exception))
            self.assertEqual(c.get_account()["SendQuota"]["SentLast24Hours"], 2)


class ApiAuthTest(unittest.TestCase):
    def test_signature_failures_have_ses_error_codes(self):
        with api_kiln() as k:
            args = dict(FromEmailAddress="sender@example.test",
                        Destination={"ToAddresses": ["a@dest.test"]}, Content=simple_content())
            c = client(k, secret="wrong-secret-wrong-secret-wrong")
            with self.assertRaises(c.exceptions.ClientError) as cm:
                c.send_email(**args)
            self.assertEqual(error_code(cm.exception), "SignatureDoesNotMatch")
            self.assertEqual(cm.exception.response["ResponseMetadata"]["HTTPStatusCode"], 403)
            c = client(k, key_id="AKIAUNKNOWNKEY000001")
            with self.assertRaises(c.exceptions.ClientError) as cm:
                c.send_email(**args)
            self.assertEqual(error_code(cm.exception), "UnrecognizedClientException")
            # a date 20 minutes old, correctly signed
            import datetime as real_dt
            stale = real_dt.datetime.utcnow() - real_dt.timedelta(minutes=20)
            fake = mock.MagicMock(wraps=real_dt)
            fake.datetime.utcnow.return_value = stale
            fake.datetime.strptime = real_dt.datetime.strptime
            body = json.dumps(args["Content"] and {"FromEmailAddress": "sender@example.test",
                                                   "Destination": args["Destination"],
                                                   "Content": args["Content"]}).encode()
            with mock.patch("botocore.auth.datetime", fake):
                st, hd, js = signed_request(k, "POST", "/v2/email/outbound-emails", body)
            self.assertEqual((st, hd.get("x-amzn-errortype")), (403, "InvalidSignatureException"))
            self.assertIn("Signature expired", js["message"])
            # the body changed after signing
            body = json.dumps({"FromEmailAddress": "sender@example.test",
                               "Destination": {"ToAddresses": ["a@dest.test"]},
                               "Content": simple_content()}).encode()
            st, hd, js = signed_request(k, "POST", "/v2/email/outbound-emails", body,
                                        tamper=lambda b: b.replace(b"a@dest.test", b"b@dest.test"))
            self.assertEqual((st, hd.get("x-amzn-errortype")), (403, "SignatureDoesNotMatch"))
            # unsigned
            conn = http.client.HTTPConnection("127.0.0.1", k.api_port, timeout=10)
            conn.request("GET", "/v2/email/account")
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 403)
            self.assertEqual(r.getheader("x-amzn-ErrorType"), "MissingAuthenticationTokenException")
            conn.close()
            # and the right key still works on the same listener
            self.assertTrue(client(k).send_email(**args)["MessageId"])


class ApiBadInputTest(unittest.TestCase):
    def test_bad_input_gets_named_errors(self):
        with api_kiln(api_over={"max_body_size": "64KB"}) as k:
            path = "/v2/email/outbound-emails"
            ok = {"FromEmailAddress": "sender@example.test",
                  "Destination": {"ToAddresses": ["a@dest.test"]}, "Content": simple_content()}

            def post(obj_or_bytes):
                b = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
                return signed_request(k, "POST", path, b)

            st, hd, js = post(b'{"FromEmailAddress": "sender@example.test", ')
            self.assertEqual((st, hd.get("x-amzn-errortype")), (400, "BadRequestException"))
            self.assertIn("not valid JSON", js["message"])
            bad = dict(ok, Frobnicate=1)
            st, hd, js = post(bad)
            self.assertEqual(st, 400)
            self.assertIn("Frobnicate", js["message"])
            st, hd, js = post({"FromEmailAddress": "sender@example.test",
                               "Destination": {"ToAddresses": ["a@dest.test"]}})
            self.assertEqual(st, 400)
            self.assertIn("Content", js["message"])
            st, hd, js = post({"Content": {"Simple": {"Body": {"Text": {"Data": "x"}}}},
                               "FromEmailAddress": "sender@example.test",
                               "Destination": {"ToAddresses": ["a@dest.test"]}})
            self.assertEqual(st, 400)
            self.assertIn("Subject", js["message"])
            st, hd, js = post({"Content": {"Raw": {"Data": "!!!not base64!!!"}}})
            self.assertEqual((st, hd.get("x-amzn-errortype")), (400, "BadRequestException"))
            self.assertIn("base64", js["message"])
            big = dict(ok, Content=simple_content(text="x" * (100 * 1024)))
            st, hd, js = post(big)
            self.assertEqual(st, 413)
            # header fields past about 16 KB: 431, before any signature check
            s = socket.create_connection(("127.0.0.1", k.api_port), timeout=10)
            s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: kiln\r\nX-Big: " +
                      b"h" * 20000 + b"\r\nContent-Length: 2\r\n\r\n{}")
            self.assertTrue(s.recv(200).startswith(b"HTTP/1.1 431 "))
            s.close()
            # the listener still serves after all of that
            self.assertTrue(client(k).send_email(**ok)["MessageId"])
            self.assertIn("api.error", k.log())


class ApiDurabilityTest(unittest.TestCase):
    def test_a_message_id_answered_survives_kill9(self):
        with Sink() as sink:
            k = api_kiln(routes=[{"domain": "dest.test", "host": "127.0.0.1", "port": 1}])
            try:
                k.start()
                c = client(k)
                ids = [c.send_email(FromEmailAddress="sender@example.test",
                                    Destination={"ToAddresses": ["d%d@dest.test" % i]},
                                    Content=simple_content("durable %d" % i))["MessageId"]
                       for i in range(5)]
                k.kill9()
                k.cfg["routes"] = routed(sink)
                k.write_config()
                k.start()
                wait_for(lambda: len(sink.messages) >= 5, 30, what="all 5 after the restart")
                got = sorted(r for m in sink.messages for r in m["rcpts"])
                self.assertEqual(got, ["d%d@dest.test" % i for i in range(5)])
                evs = k.wait_events(lambda e: len([x for x in e if x["eventType"] == "Delivery"]) >= 5,
                                    20, what="5 Delivery events")
                self.assertEqual(sorted({e["mail"]["messageId"] for e in evs
                                         if e["eventType"] == "Delivery"}), sorted(ids))
                k.stop()
            finally:
                k.cleanup()

    def test_sigterm_answers_every_message_it_stores(self):
        """SIGTERM while four clients send: every MessageId answered is delivered after the
        restart, and nothing is stored that was not answered (503 or a refused connection
        instead)."""
        import threading
        with Sink() as sink:
            k = api_kiln(routes=[{"domain": "dest.test", "host": "127.0.0.1", "port": 1}])
            try:
                k.start()
                acked, refused, lock = [], [], threading.Lock()
                stop = threading.Event()

                def sender(n):
                    c = client(k)
                    for i in range(400):
                        if stop.is_set():
                            return
                        try:
                            r = c.send_email(FromEmailAddress="sender@example.test",
                                             Destination={"ToAddresses": ["t%d-%d@dest.test" % (n, i)]},
                                             Content=simple_content("term %d %d" % (n, i)))
                            with lock:
                                acked.append(r["MessageId"])
                        except Exception as e:      # 503 while stopping, or refused after
                            with lock:
                                refused.append(type(e).__name__)
                            if "ServiceUnavailable" not in str(e):
                                return
                ts = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
                for t in ts:
                    t.start()
                wait_for(lambda: len(acked) >= 20, 30, what="20 answered sends")
                self.assertEqual(k.stop(), 0)
                stop.set()
                for t in ts:
                    t.join(60)
                self.assertIn("api.stop", k.log())
                k.cfg["routes"] = routed(sink)
                k.write_config()
                k.start()
                evs = k.wait_events(lambda e: len({x["mail"]["messageId"] for x in e
                                                   if x["eventType"] == "Delivery"}) >= len(acked),
                                    60, what="a Delivery for every answered send")
                delivered = {e["mail"]["messageId"] for e in evs if e["eventType"] == "Delivery"}
                self.assertEqual(delivered, set(acked))
                wait_for(lambda: len(sink.messages) >= len(acked), 30, what="the sink")
                time.sleep(1)
                self.assertEqual(len(sink.messages), len(acked))
                k.stop()
            finally:
                k.cleanup()


if __name__ == "__main__":
    main()
