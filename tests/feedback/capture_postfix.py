"""capture_postfix.py — regenerates postfix-real-unknown-user.eml: a private Postfix
(tests/bench/postfix_relay.py; root and Debian's postfix) takes a message for an unknown local
user from a VERP sender and bounces it to an aiosmtpd sink, whose copy of the DSN is written
to the file named on the command line. Not run by make check (test_feedback.py runs the
same loop live against kilnd).

    python3 tests/feedback/capture_postfix.py tests/feedback/postfix-real-unknown-user.eml"""
import base64
import os
import shutil
import smtplib
import sys
import tempfile
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
from kilntest import Sink, free_port, wait_for
from postfix_relay import PostfixRelay
raw = bytes.fromhex("0000018c1f2e3d4c" + "0123456789abcdef0123456789abcdef") + b"\x01" + b"\x01\x02\x03\x04\x05\x06"
tok = base64.b32encode(raw).decode().lower().rstrip("=")
sender = "bounce+%s@bounce.example.test" % tok
base = tempfile.mkdtemp(prefix="pfcap-"); os.chmod(base, 0o755)
with Sink(host="127.0.0.1") as sink:
    port = free_port()
    pf = PostfixRelay(os.path.join(base, "pf"), port, {"bounce.example.test": ("127.0.0.1", sink.port)},
                      main_extra={"mydestination": "pf.example.org", "myhostname": "mx.pf.example.org", "biff": "no"})
    pf.start()
    try:
        with smtplib.SMTP("127.0.0.1", port) as s:
            s.sendmail(sender, ["nosuchuser@pf.example.org"],
                       ("From: app@example.test\r\nTo: nosuchuser@pf.example.org\r\nSubject: hello\r\n"
                        "Message-ID: <0000018c1f2e3d4c-01234567-89ab-cdef-0123-456789abcdef-000000@kiln.example.test>\r\n\r\nhello\r\n"))
        m = wait_for(lambda: sink.messages, 60, 0.2, "the DSN")
        open(sys.argv[1], "wb").write(m[0]["data"])
        print("mail_from", repr(m[0]["mail_from"]), m[0]["rcpt_tos"] if "rcpt_tos" in m[0] else "")
    finally:
        pf.stop()
        shutil.rmtree(base, ignore_errors=True)
