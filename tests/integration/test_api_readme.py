"""test_api_readme.py — the README's "Sending through the SES API" examples, run word for
word: its `sh` block (the aws CLI) with bash and its `python` block (boto3) with Debian's
python3, against a kilnd whose config matches the README's (api.listen, the access key in
secrets/app1, identity example.com); only the listener's port is replaced by a free one.
Every message they send must arrive at a sink, and what they change must show."""
import os
import re
import subprocess
import unittest

from apitest import write_secret
from kilntest import SRCDIR, Kiln, Sink, free_port, main, wait_for

KEY = "AKIAKILNEXAMPLE0001"
SECRET = "kilnReadmeExampleSecret/000000000000000000"


def readme_blocks():
    with open(os.path.join(SRCDIR, "README.md")) as f:
        text = f.read()
    start = text.index("## Sending through the SES API")
    end = text.index("\n## ", start + 10)
    section = text[start:end]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    return {lang: body for lang, body in blocks if lang in ("sh", "python")}


class ReadmeApiExamplesTest(unittest.TestCase):
    def test_readme_examples_run_as_written(self):
        blocks = readme_blocks()
        self.assertIn("sh", blocks)
        self.assertIn("python", blocks)
        with Sink() as sink:
            k = Kiln(routes=[{"domain": "example.net", "host": sink.host, "port": sink.port}])
            port = free_port()
            os.makedirs(os.path.join(k.tmp, "secrets"))
            secret = write_secret(os.path.join(k.tmp, "secrets"), "app1", SECRET)
            k.cfg["account"]["identities"] = ["example.com"]
            k.cfg["ips"].append({"address": "192.0.2.10", "zone": "az1", "pool": "marketing"})
            k.cfg["pools"].append({"name": "marketing", "scaling": "standard"})
            k.cfg["configuration_sets"].append({"name": "transactional", "pool": "transactional",
                                                "events": [{"type": "file",
                                                            "path": "./events-transactional.jsonl"}]})
            k.cfg["api"] = {"listen": ["127.0.0.1:%d" % port],
                            "access_keys": [{"id": KEY, "secret_file": secret}]}
            k.write_config()
            try:
                k.start()
                env = {"PATH": "/usr/bin:/bin", "HOME": k.tmp,
                       "AWS_CONFIG_FILE": os.path.join(k.tmp, "none"),
                       "AWS_SHARED_CREDENTIALS_FILE": os.path.join(k.tmp, "none"),
                       "AWS_PAGER": ""}
                sh = blocks["sh"].replace("127.0.0.1:8080", "127.0.0.1:%d" % port)
                p = subprocess.run(["bash", "-e", "-c", sh], cwd=k.tmp, env=env,
                                   capture_output=True, text=True, timeout=180)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertRegex(p.stdout, r'"MessageId": "[0-9a-f]{16}-')
                self.assertIn('"Max24HourSend"', p.stdout)
                self.assertIn("gone@example.net", p.stdout)
                py = blocks["python"].replace("127.0.0.1:8080", "127.0.0.1:%d" % port)
                p = subprocess.run(["/usr/bin/python3", "-c", py], cwd=k.tmp, env=env,
                                   capture_output=True, text=True, timeout=120)
                self.assertEqual(p.returncode, 0, p.stderr)
                lines = p.stdout.strip().splitlines()
                self.assertEqual(lines[1], "['SUCCESS', 'SUCCESS']")
                wait_for(lambda: len(sink.messages) >= 5, 30, what="the 5 example messages")
                rcpts = sorted(r for m in sink.messages for r in m["rcpts"])
                self.assertEqual(rcpts, ["a@example.net", "b@example.net", "someone@example.net",
                                         "someone@example.net", "someone@example.net"])
                ips = k.ctl("ips")["DedicatedIps"]
                self.assertEqual([i["WarmupPercentage"] for i in ips if i["Ip"] == "192.0.2.10"], [40])
                k.stop()
            finally:
                k.cleanup()


if __name__ == "__main__":
    main()
