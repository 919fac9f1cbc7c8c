"""crashloop.py — kiln under a crash loop (issue 11, item 2): three clients (kiln-loadgen,
each from its own source address) submit without pause to a kiln-sink with random faults
(defer 451, reject 550, disconnect, delayed RCPT replies) while kilnd is killed with SIGKILL
at a random moment of every cycle and restarted on the same spool, CYCLES times. Then the
clients stop, kilnd runs until every acknowledged message is settled and stops with SIGTERM.

It reports acknowledged (the client read "250 2.0.0 Ok ID"), delivered, bounced (a 5xx from
the sink: a legitimate final bounce), lost (acknowledged and never settled: must be 0) and
duplicated (delivered twice: only in-flight duplicates are accepted — the sink took the
message and a kill came before kilnd committed the outcome, so a kill lies between the two
deliveries; any other duplicate fails the run), plus how many kills came while submissions
and while deliveries were in progress.

    crashloop.py [--cycles N] [--seed S] [--rate R] [--json FILE] [--keep]

Without arguments it runs the short version for `make check` (10 cycles); `make soak` runs
SOAK_CYCLES (100). A client whose connections all gave up while kilnd was down is started
again with a new token prefix, so clients keep going after every restart."""
import argparse
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soaklib  # noqa: E402
from soaklib import kilntest, say  # noqa: E402

CLIENT_IPS = ["127.0.0.50", "127.0.0.51", "127.0.0.52"]
SINK_IP = "127.0.0.31"
KILL_LAG_MS = 1000       # how long after a kill the sink may still read a copy kilnd sent
SINK_FAULTS = ["--random-defer", "5", "--random-reject", "2", "--random-disconnect", "2",
               "--random-delay", "5", "--random-delay-ms", "800"]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=10, help="SIGKILL/restart cycles (10)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: from time)")
    ap.add_argument("--rate", type=float, default=40.0,
                    help="messages/s per client, 3 clients (40)")
    ap.add_argument("--json", default="crashloop-summary.json", help="figures as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    a = ap.parse_args()
    if a.cycles < 1 or a.rate <= 0:
        ap.error("--cycles and --rate must be positive")
    return a


class Clients:
    """The three submitting clients; restarts one whose run ended (all its connections gave
    up while kilnd was down) under a new token prefix."""

    def __init__(self, tmp, port, rate, ledger):
        self.tmp, self.port, self.rate, self.ledger = tmp, port, rate, ledger
        self.procs = [None] * len(CLIENT_IPS)
        self.generation = [0] * len(CLIENT_IPS)
        self.restarts = 0

    def ensure_running(self):
        for i, ip in enumerate(CLIENT_IPS):
            p = self.procs[i]
            if p is not None and p.alive():
                continue
            if p is not None:
                p.stop()
                self.restarts += 1
                self.generation[i] += 1
            name = "c%dg%d" % (i, self.generation[i])
            record = os.path.join(self.tmp, "acks-%s.txt" % name)
            self.ledger.add_ack_file(record)
            self.procs[i] = soaklib.start_loadgen(self.tmp, name, self.port, record, 10_000_000,
                                                  4, self.rate, bind=ip, timeout=5)

    def stop(self):
        for p in self.procs:
            if p is not None:
                p.stop(60)


def main():
    a = parse_args()
    seed = a.seed if a.seed is not None else int(time.time())
    rng = random.Random(seed)
    soaklib.arm_deadline(300 + a.cycles * 30)
    say("crash loop: %d cycles, seed %d, %d clients at %.0f msg/s each"
        % (a.cycles, seed, len(CLIENT_IPS), a.rate))
    tmp = kilntest.reachable_tmp(tempfile.mkdtemp(prefix="kiln-crashloop-"))
    sink = k = clients = None
    ok = False
    try:
        sink_port = soaklib.tcp_port(SINK_IP)
        record = os.path.join(tmp, "sink-record.txt")
        sink = soaklib.start_sink(tmp, ["%s:%d" % (SINK_IP, sink_port)], record, SINK_FAULTS, seed)
        k = kilntest.Kiln(tmp=tmp, routes=[{"domain": "dest.test", "host": SINK_IP,
                                            "port": sink_port}])
        ips = [{"address": "127.0.0.%d" % (10 + i), "zone": "az%d" % (i + 1),
                "pool": "transactional", "warmup": "done"} for i in range(3)]
        events = soaklib.fast_config(k, ips)
        ledger = soaklib.Ledger(record, events)
        k.start(timeout=60)
        clients = Clients(tmp, k.port, a.rate, ledger)
        clients.ensure_running()
        kilntest.wait_for(lambda: (ledger.poll(), ledger.counts()["delivered"] > 20)[1], 60, 0.2,
                          "first deliveries")

        kills = []       # (wall ms, submitting, delivering)
        for cycle in range(1, a.cycles + 1):
            time.sleep(rng.uniform(0.3, 2.5))
            ledger.poll()
            acks0, dels0 = len(ledger.acked), ledger.total_deliveries()
            time.sleep(0.3)
            ledger.poll()
            k.kill9()
            now_ms = int(time.time() * 1000)
            # in progress: acknowledgements and deliveries went on in the last 0.3 s
            submitting = len(ledger.acked) > acks0
            delivering = ledger.total_deliveries() > dels0
            kills.append((now_ms, submitting, delivering))
            c = ledger.counts()
            time.sleep(rng.uniform(0.0, 0.5))     # clients fail and retry meanwhile
            k.start(timeout=60)
            clients.ensure_running()
            say("cycle %d/%d: killed (submitting=%s delivering=%s); acknowledged=%d delivered=%d"
                % (cycle, a.cycles, submitting, delivering, c["acknowledged"], c["delivered"]))

        clients.stop()
        say("clients stopped; waiting for every acknowledged message to settle")

        def settled():
            ledger.poll()
            return not ledger.unsettled()
        try:
            kilntest.wait_for(settled, 240, 0.5, "every acknowledged message delivered or bounced")
        except AssertionError:
            pass                   # reported as lost below
        time.sleep(2)              # late redeliveries would show as duplicates
        ledger.poll()
        status = k.ctl("status")
        rc = k.stop(60)

        counts = ledger.counts()
        kill_ms = [t for t, _, _ in kills]
        in_flight, unexplained = 0, []
        for tok, times in ledger.duplicates().items():
            # every later copy must follow a kill that came after the copy before it was
            # sent; the sink records a copy when it reads the final "." (it may read what a
            # killed kilnd wrote a little after the kill), hence KILL_LAG_MS
            if all(any(times[i - 1] - KILL_LAG_MS <= t <= times[i] for t in kill_ms)
                   for i in range(1, len(times))):
                in_flight += 1
            else:
                unexplained.append(tok)
                near = min(kill_ms, key=lambda t: abs(t - times[0]))
                print("unexplained duplicate %s: copies at %s ms from the nearest kill, from %s"
                      % (tok, [t - near for t in times], ledger.delivered_from.get(tok)),
                      flush=True)
        lost = ledger.unsettled()
        fields = {
            "cycles": a.cycles,
            "seed": seed,
            "kills_while_submitting": sum(1 for _, s, _ in kills if s),
            "kills_while_delivering": sum(1 for _, _, d in kills if d),
            "acknowledged": counts["acknowledged"],
            "delivered": counts["delivered"],
            "bounced_5xx": counts["bounced"],
            "lost": len(lost),
            "duplicated": counts["duplicated"],
            "duplicated_in_flight": in_flight,
            "duplicated_unexplained": len(unexplained),
            "delivered_and_bounced": counts["delivered_and_bounced"],
            "delivered_unacknowledged": counts["delivered_unacknowledged"],
            "client_restarts": clients.restarts,
            "events": dict(sorted(ledger.events.items())),
            "queue_after": {"Queued": status.get("Queued"), "Deferred": status.get("Deferred")},
            "kilnd_exit_after_sigterm": rc,
        }
        soaklib.summary("kiln crash loop", fields, a.json)
        problems = []
        if lost:
            problems.append("%d acknowledged messages lost, e.g. %s" % (len(lost), lost[:5]))
        if unexplained:
            problems.append("%d duplicates without a kill between the copies, e.g. %s"
                            % (len(unexplained), unexplained[:5]))
        if counts["acknowledged"] < a.cycles * 10:
            problems.append("only %d messages acknowledged: the clients did not keep going"
                            % counts["acknowledged"])
        if fields["kills_while_submitting"] == 0 or fields["kills_while_delivering"] == 0:
            problems.append("no kill came while submitting and while delivering")
        if status.get("Queued") or status.get("Deferred"):
            problems.append("kilnd still holds recipients: %s" % status)
        if rc != 0:
            problems.append("kilnd exited %s after SIGTERM" % rc)
        for p in problems:
            print("FAIL: " + p, flush=True)
        ok = not problems
        return 0 if ok else 1
    finally:
        if clients:
            clients.stop()
        if k:
            if not ok:
                print(k.log()[-3000:], flush=True)
            k.cleanup()
        if sink:
            sink.stop()
        soaklib.cleanup_dir(tmp, a.keep)


if __name__ == "__main__":
    sys.exit(main())
