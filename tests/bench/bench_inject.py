"""bench_inject.py — injection throughput of kilnd with a durable spool: N messages of
1 KB over C parallel SMTP connections (separate client processes, so the client is not
the bottleneck), each message acknowledged only after its group commit. Prints
accepted messages/s and latency percentiles. Run: `make bench` or
  python3 tests/bench/bench_inject.py [--messages N] [--connections C] [--size BYTES]"""
import argparse
import multiprocessing
import os
import smtplib
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from kilntest import Kiln, Sink, wait_for  # noqa: E402


def worker(port, n, size, idx, out):
    lat = []
    errors = 0
    body = ("z" * 78 + "\r\n") * max(1, size // 80)
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.ehlo("bench.test")
        for i in range(n):
            msg = ("From: app@example.test\r\nTo: b@sink.test\r\nSubject: bench %d-%d\r\n\r\n" % (idx, i)) + body
            t0 = time.monotonic()
            try:
                s.mail("app@example.test")
                s.rcpt("b%d@sink.test" % idx)
                code, _ = s.data(msg.encode())
                if code != 250:
                    errors += 1
            except smtplib.SMTPException:
                errors += 1
            lat.append(time.monotonic() - t0)
    out.put((lat, errors))


def pct(vals, p):
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(len(vals) * p / 100))] * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--size", type=int, default=1024)
    a = ap.parse_args()
    per = a.messages // a.connections
    with Sink("127.0.0.41") as sink:
        k = Kiln(routes=[{"domain": "sink.test", "host": sink.host, "port": sink.port}])
        k.cfg["server"]["log_level"] = "warning"
        k.write_config()
        try:
            k.start()
            q = multiprocessing.Queue()
            procs = [multiprocessing.Process(target=worker, args=(k.port, per, a.size, i, q))
                     for i in range(a.connections)]
            t0 = time.monotonic()
            for p in procs:
                p.start()
            results = [q.get(timeout=600) for _ in procs]
            elapsed = time.monotonic() - t0
            for p in procs:
                p.join(30)
            lat = [x for r in results for x in r[0]]
            errors = sum(r[1] for r in results)
            total = per * a.connections
            print("kiln injection benchmark (durable spool, fsync on commit)")
            print("  messages:            %d x %d bytes over %d connections" % (total, a.size, a.connections))
            print("  accepted msgs/s:     %.0f" % ((total - errors) / elapsed))
            print("  errors:              %d" % errors)
            print("  latency p50/p99 ms:  %.1f / %.1f (MAIL..250 per message)" % (pct(lat, 50), pct(lat, 99)))
            k.stop()
        finally:
            k.cleanup()


if __name__ == "__main__":
    main()
