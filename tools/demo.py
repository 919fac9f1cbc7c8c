"""demo.py — the body of tools/demo.sh (see there). Uses only the shipped conf/kiln.yaml;
prints the events of the batch, `kilnctl quota` and `kilnctl ips`.

Run as root (as CI does), kilnd needs server.user and drops to it after binding: the demo
then runs a copy of conf/kiln.yaml with `user: nobody` from a fresh /tmp/kiln-demo-XXXX
(mkdtemp, then mode 0755; printed at the end), because a checkout under /root (0700) is out of nobody's reach. Run as any other user, it
uses conf/kiln.yaml in place (spool in conf/spool)."""
import json
import os
import signal
import smtplib
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(TOP, "conf", "kiln.yaml")
RUNDIR = tempfile.mkdtemp(prefix="kiln-demo-") if os.geteuid() == 0 else os.path.join(TOP, "conf")
CONF = os.path.join(RUNDIR, "kiln.yaml") if os.geteuid() == 0 else SHIPPED
SPOOL = os.path.join(RUNDIR, "spool")
EVENTS = os.path.join(SPOOL, "events-txn.jsonl")


def root_config():
    """As root: the shipped config plus `user: nobody` in RUNDIR (relative paths such as
    ./spool resolve there)."""
    os.chmod(RUNDIR, 0o755)
    with open(SHIPPED) as f:
        text = f.read()
    marker = "server:                                # the daemon itself\n"
    if marker not in text:
        raise SystemExit("demo: conf/kiln.yaml has no server: section line to extend")
    text = text.replace(marker, marker + "  user: nobody                         "
                        "# added by tools/demo.py: kilnd drops root to this user\n", 1)
    with open(CONF, "w") as f:
        f.write(text)


def wait(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    raise SystemExit("demo: timed out waiting for " + what)


def port_open(port):
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def main():
    procs = []
    try:
        if os.geteuid() == 0:
            root_config()
        os.makedirs(SPOOL, exist_ok=True)
        sink_log = open(os.path.join(SPOOL, "demo-sink.log"), "w")
        sink = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", "127.0.0.1:2526",
                                 "-c", "aiosmtpd.handlers.Sink"], stdout=sink_log, stderr=sink_log)
        procs.append(sink)
        kilnd = subprocess.Popen([os.path.join(TOP, "kilnd"), "-c", CONF], cwd=TOP,
                                 stderr=open(os.path.join(SPOOL, "demo-kilnd.log"), "w"))
        procs.append(kilnd)
        wait(lambda: port_open(2526), 15, "the demo sink on 127.0.0.1:2526")
        wait(lambda: port_open(2587) or kilnd.poll() is not None, 15, "kilnd on 127.0.0.1:2587")
        if kilnd.poll() is not None:
            raise SystemExit("demo: kilnd exited; see %s" % os.path.join(SPOOL, "demo-kilnd.log"))
        start = sum(1 for _ in open(EVENTS)) if os.path.exists(EVENTS) else 0
        rcpts = ["success@simulator.amazonses.com", "bounce@simulator.amazonses.com",
                 "complaint@simulator.amazonses.com", "suppressionlist@simulator.amazonses.com",
                 "alice@demo.test", "bob@demo.test"]
        with smtplib.SMTP("127.0.0.1", 2587, timeout=30) as s:
            s.ehlo("demo.client")
            for i, r in enumerate(rcpts):
                msg = ("From: Demo <app@example.test>\r\nTo: %s\r\nSubject: kiln demo %d\r\n\r\n"
                       "Hello from kiln's demo.\r\n" % (r, i))
                s.sendmail("app@example.test", [r], msg.encode())
        print("demo: submitted %d messages through kilnd on 127.0.0.1:2587" % len(rcpts))

        def outcomes():
            if not os.path.exists(EVENTS):
                return []
            with open(EVENTS) as f:
                return [json.loads(l) for l in f.readlines()[start:] if l.strip()]
        wait(lambda: len([e for e in outcomes() if e["eventType"] != "Send"]) >= len(rcpts) + 1, 60,
             "delivery outcomes of the demo batch")
        print("demo: events written to %s:" % (EVENTS if os.geteuid() == 0 else os.path.relpath(EVENTS, TOP)))
        for e in outcomes():
            t = e["eventType"]
            detail = ""
            if t == "Delivery":
                detail = e["delivery"]["smtpResponse"]
            elif t == "Bounce":
                detail = "%s/%s" % (e["bounce"]["bounceType"], e["bounce"]["bounceSubType"])
            elif t == "Complaint":
                detail = e["complaint"]["complaintFeedbackType"]
            ip = e["mail"]["tags"].get("ses:outgoing-ip", ["-"])[0]
            print("  %-13s %-40s %-15s %s" % (t, ",".join(e["mail"]["destination"]), ip, detail))
        print("demo: kilnctl quota")
        sys.stdout.flush()
        subprocess.run([os.path.join(TOP, "kilnctl"), "-c", CONF, "quota"], check=True)
        print("demo: kilnctl ips")
        sys.stdout.flush()
        subprocess.run([os.path.join(TOP, "kilnctl"), "-c", CONF, "ips"], check=True)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)


if __name__ == "__main__":
    main()
