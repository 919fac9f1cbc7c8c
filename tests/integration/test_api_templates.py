"""test_api_templates.py — SES v2 email templates through kilnd's API (api/api_templates.c),
driven by clients we did not write: boto3's sesv2 client and the aws CLI. Covers
CreateEmailTemplate / GetEmailTemplate / UpdateEmailTemplate / DeleteEmailTemplate and the
error codes a client sees (AlreadyExistsException, NotFoundException, BadRequestException),
ListEmailTemplates paged one template at a time with NextToken, TestRenderEmailTemplate (the
MIME message, a missing variable, TemplateData that is not a JSON object), and templates
surviving a restart (a write is answered only after its spool commit)."""
import datetime
import email
import email.policy
import json
import unittest

from botocore.exceptions import ClientError

from kilntest import main
from apitest import ApiTestCase, aws, api_kiln, client, error_of, wait_api

CONTENT = {"Subject": "Hello {{name}}",
           "Text": "Dear {{name}},\nyour order {{order.id}} has shipped.\n",
           "Html": "<p>Dear {{name}},</p><p>order <b>{{order.id}}</b> has shipped.</p>"}


class ApiTemplates(ApiTestCase):
    def list_all(self, page_size):
        """Every template name through pages of page_size; also the number of pages."""
        names, pages, token = [], 0, None
        while True:
            kw = {"PageSize": page_size}
            if token:
                kw["NextToken"] = token
            r = self.ses.list_email_templates(**kw)
            pages += 1
            self.assertLessEqual(len(r["TemplatesMetadata"]), page_size)
            for m in r["TemplatesMetadata"]:
                names.append(m["TemplateName"])
                self.assertIsInstance(m["CreatedTimestamp"], datetime.datetime)
            token = r.get("NextToken")
            if not token:
                return names, pages
            self.assertLess(pages, 100, "paging does not end")

    def test_create_get_update_delete(self):
        self.ses.create_email_template(TemplateName="crud-1", TemplateContent=CONTENT)
        r = self.ses.get_email_template(TemplateName="crud-1")
        self.assertEqual(r["TemplateName"], "crud-1")
        self.assertEqual(r["TemplateContent"], CONTENT)

        new = {"Subject": "Changed {{name}}", "Text": "only text now {{name}}"}
        self.ses.update_email_template(TemplateName="crud-1", TemplateContent=new)
        r = self.ses.get_email_template(TemplateName="crud-1")
        self.assertEqual(r["TemplateContent"], new)   # Html gone: the content is replaced

        self.ses.delete_email_template(TemplateName="crud-1")
        msg = self.assertClientError("NotFoundException", 404, self.ses.get_email_template,
                                     TemplateName="crud-1")
        self.assertIn("crud-1", msg)
        self.assertClientError("NotFoundException", 404, self.ses.delete_email_template,
                               TemplateName="crud-1")
        self.assertClientError("NotFoundException", 404, self.ses.update_email_template,
                               TemplateName="crud-1", TemplateContent=new)

    def test_duplicate_create(self):
        self.ses.create_email_template(TemplateName="dup-1", TemplateContent=CONTENT)
        msg = self.assertClientError("AlreadyExistsException", 400,
                                     self.ses.create_email_template, TemplateName="dup-1",
                                     TemplateContent={"Text": "other"})
        self.assertIn("dup-1", msg)
        # the first one is untouched
        self.assertEqual(self.ses.get_email_template(TemplateName="dup-1")["TemplateContent"],
                         CONTENT)

    def test_get_unknown(self):
        self.assertClientError("NotFoundException", 404, self.ses.get_email_template,
                               TemplateName="no-such-template")

    def test_bad_templates(self):
        # a name SES would not take, a template without a body, one that does not parse
        self.assertClientError("BadRequestException", 400, self.ses.create_email_template,
                               TemplateName="has space", TemplateContent={"Text": "x"})
        self.assertClientError("BadRequestException", 400, self.ses.create_email_template,
                               TemplateName="x" * 65, TemplateContent={"Text": "x"})
        self.assertClientError("BadRequestException", 400, self.ses.create_email_template,
                               TemplateName="bodiless", TemplateContent={"Subject": "x"})
        self.assertClientError("BadRequestException", 400, self.ses.create_email_template,
                               TemplateName="unclosed", TemplateContent={"Text": "{{#if a}}x"})
        self.assertClientError("BadRequestException", 400, self.ses.create_email_template,
                               TemplateName="too-big",
                               TemplateContent={"Text": "x" * (500 * 1024 + 1)})
        for name in ("has space", "bodiless", "unclosed", "too-big"):
            self.assertClientError("NotFoundException", 404, self.ses.get_email_template,
                                   TemplateName=name)

    def test_list_paging(self):
        mine = ["page-a", "page-b", "page-c"]
        for n in reversed(mine):
            self.ses.create_email_template(TemplateName=n, TemplateContent={"Text": n})
        names, pages = self.list_all(1)
        self.assertEqual(names, sorted(names))          # byte order, each once
        self.assertEqual(len(names), len(set(names)))
        self.assertEqual([n for n in names if n.startswith("page-")], mine)
        self.assertEqual(pages, len(names))
        # one page holds them all when it may
        r = self.ses.list_email_templates(PageSize=100)
        self.assertEqual([m["TemplateName"] for m in r["TemplatesMetadata"]], names)
        self.assertNotIn("NextToken", r)
        # a deleted template leaves the listing
        self.ses.delete_email_template(TemplateName="page-b")
        names2, _ = self.list_all(1)
        self.assertEqual([n for n in names2 if n.startswith("page-")], ["page-a", "page-c"])
        # CreatedTimestamp is the creation time
        r = self.ses.list_email_templates(PageSize=100)
        created = {m["TemplateName"]: m["CreatedTimestamp"] for m in r["TemplatesMetadata"]}
        now = datetime.datetime.now(datetime.timezone.utc)
        self.assertLess(abs((now - created["page-a"]).total_seconds()), 120)

    def test_list_bad_token_and_size(self):
        self.assertClientError("BadRequestException", 400, self.ses.list_email_templates,
                               NextToken="bm90IGEgdG9rZW4=")
        self.assertClientError("BadRequestException", 400, self.ses.list_email_templates,
                               PageSize=0)
        self.assertClientError("BadRequestException", 400, self.ses.list_email_templates,
                               PageSize=101)

    def test_render(self):
        self.ses.create_email_template(TemplateName="render-1", TemplateContent=CONTENT)
        data = {"name": "Ann", "order": {"id": "A-17"}}
        r = self.ses.test_render_email_template(TemplateName="render-1",
                                                TemplateData=json.dumps(data))
        text = r["RenderedTemplate"]
        msg = email.message_from_string(text, policy=email.policy.default)
        self.assertEqual(msg["Subject"], "Hello Ann")
        self.assertIsNone(msg["From"])
        self.assertEqual(msg.get_content_type(), "multipart/alternative")
        plain = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        self.assertIn("Dear Ann,", plain)
        self.assertIn("your order A-17 has shipped.", plain)
        self.assertIn("<b>A-17</b>", html)
        self.assertNotIn("{{", text)

        # non-ASCII data: an encoded Subject that decodes back, the body in UTF-8
        r = self.ses.test_render_email_template(
            TemplateName="render-1", TemplateData=json.dumps({"name": "Zoë", "order": {"id": 3}}))
        msg = email.message_from_string(r["RenderedTemplate"], policy=email.policy.default)
        self.assertEqual(msg["Subject"], "Hello Zoë")
        self.assertIn("Dear Zoë,", msg.get_body(("plain",)).get_content())

    def test_render_errors(self):
        self.ses.create_email_template(TemplateName="render-2", TemplateContent=CONTENT)
        msg = self.assertClientError("BadRequestException", 400,
                                     self.ses.test_render_email_template,
                                     TemplateName="render-2",
                                     TemplateData=json.dumps({"order": {"id": 1}}))
        self.assertIn("name", msg)
        self.assertClientError("BadRequestException", 400, self.ses.test_render_email_template,
                               TemplateName="render-2", TemplateData="{not json")
        self.assertClientError("BadRequestException", 400, self.ses.test_render_email_template,
                               TemplateName="render-2", TemplateData="[1, 2]")
        self.assertClientError("NotFoundException", 404, self.ses.test_render_email_template,
                               TemplateName="render-none", TemplateData="{}")

    def test_cli(self):
        k = self.k
        aws(k, "create-email-template", "--template-name", "cli-1", "--template-content",
            json.dumps({"Subject": "S {{v}}", "Text": "T {{v}}"}))
        r = aws(k, "get-email-template", "--template-name", "cli-1")
        self.assertEqual(r["TemplateContent"], {"Subject": "S {{v}}", "Text": "T {{v}}"})
        r = aws(k, "list-email-templates", "--page-size", "1")
        self.assertEqual(len(r["TemplatesMetadata"]), 1)
        r = aws(k, "test-render-email-template", "--template-name", "cli-1", "--template-data",
                json.dumps({"v": "x1"}))
        self.assertIn("Subject: S x1", r["RenderedTemplate"])
        self.assertIn("T x1", r["RenderedTemplate"])
        p = aws(k, "create-email-template", "--template-name", "cli-1", "--template-content",
                json.dumps({"Text": "again"}), expect_ok=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("AlreadyExistsException", p.stderr)
        aws(k, "delete-email-template", "--template-name", "cli-1")
        p = aws(k, "get-email-template", "--template-name", "cli-1", expect_ok=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("NotFoundException", p.stderr)


class ApiTemplatesRestart(unittest.TestCase):
    """A template the API confirmed is in the spool: it outlives the daemon."""

    def test_survives_restart(self):
        k = api_kiln()
        try:
            k.start()
            wait_api(k)
            ses = client(k)
            ses.create_email_template(TemplateName="durable", TemplateContent=CONTENT)
            ses.create_email_template(TemplateName="gone", TemplateContent={"Text": "x"})
            ses.delete_email_template(TemplateName="gone")
            self.assertEqual(k.stop(), 0)
            k.start()
            wait_api(k)
            ses = client(k)
            self.assertEqual(ses.get_email_template(TemplateName="durable")["TemplateContent"],
                             CONTENT)
            with self.assertRaises(ClientError) as cm:
                ses.get_email_template(TemplateName="gone")
            self.assertEqual(error_of(cm.exception)[0], "NotFoundException")
            self.assertEqual(k.stop(), 0)
        finally:
            k.cleanup()


if __name__ == "__main__":
    main()
