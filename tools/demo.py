"""demo.py — the body of tools/demo.sh (see there). Runs kilnd on a copy of the shipped
conf/kiln.yaml in a fresh temporary directory (/tmp/kiln-demo-XXXX, printed at the end and
kept for a look at the spool, the logs and the events), so the checkout stays as it was:
the copy's relative paths (spool: ./spool, the event files) resolve there. Prints the
events of the batch, `kilnctl quota` and `kilnctl ips`.

Run as root (as CI does), kilnd needs server.user and drops to it after binding: the copy
then gets `user: nobody` and the directory mode 0755 (mkdtemp makes it 0700), so that user
can reach it.

`--bindir DIR` names where kilnd and kilnctl are (default: the top of the checkout, where
the Quick start's in-tree build puts them; the tests pass their build directory)."""
import argparse
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


def copy_config(rundir, conf):
    """The shipped config, copied to rundir (relative paths such as ./spool resolve there);
    as root with `user: nobody` added and rundir opened to that user."""
    with open(SHIPPED) as f:
        text = f.read()
    if os.geteuid() == 0:
        os.chmod(rundir, 0o755)
        marker = "server:                                # the daemon itself\n"
        if marker not in text:
            raise SystemExit("demo: conf/kiln.yaml has no server: section line to extend")
        text = text.replace(marker, marker + "  user: nobody                         "
                            "# added by tools/demo.py: kilnd drops root to this user\n", 1)
    with open(conf, "w") as f:
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
    ap = argparse.ArgumentParser(description="kiln's demo on a copy of conf/kiln.yaml")
    ap.add_argument("--bindir", default=TOP, help="where kilnd and kilnctl are (default: %(default)s)")
    args = ap.parse_args()
    kilnd_bin = os.path.join(args.bindir, "kilnd")
    kilnctl_bin = os.path.join(args.bindir, "kilnctl")
    rundir = tempfile.mkdtemp(prefix="kiln-demo-")
    conf = os.path.join(rundir, "kiln.yaml")
    spool = os.path.join(rundir, "spool")
    events = os.path.join(spool, "events-txn.jsonl")
    procs = []
    try:
        copy_config(rundir, conf)
        os.makedirs(spool, exist_ok=True)
        sink_log = open(os.path.join(rundir, "demo-sink.log"), "w")
        sink = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", "127.0.0.1:2526",
                                 "-c", "aiosmtpd.handlers.Sink"], stdout=sink_log, stderr=sink_log)
        procs.append(sink)
        kilnd_log = os.path.join(rundir, "demo-kilnd.log")
        kilnd = subprocess.Popen([kilnd_bin, "-c", conf], cwd=rundir, stderr=open(kilnd_log, "w"))
        procs.append(kilnd)
        wait(lambda: port_open(2526), 15, "the demo sink on 127.0.0.1:2526")
        wait(lambda: port_open(2587) or kilnd.poll() is not None, 15, "kilnd on 127.0.0.1:2587")
        if kilnd.poll() is not None:
            raise SystemExit("demo: kilnd exited; see %s" % kilnd_log)
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
            if not os.path.exists(events):
                return []
            with open(events) as f:
                return [json.loads(l) for l in f if l.strip()]
        wait(lambda: len([e for e in outcomes() if e["eventType"] != "Send"]) >= len(rcpts) + 1, 60,
             "delivery outcomes of the demo batch")
        print("demo: events written to %s:" % events)
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
        subprocess.run([kilnctl_bin, "-c", conf, "quota"], check=True)
        print("demo: kilnctl ips")
        sys.stdout.flush()
        subprocess.run([kilnctl_bin, "-c", conf, "ips"], check=True)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        print("demo: kilnd ran on %s (spool, logs and events are there; remove it when done)" % rundir)


if __name__ == "__main__":
    main()
