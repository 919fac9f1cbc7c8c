"""soak.py — kiln under faults for a long time (issue 11, item 3). It measures kiln's
capacity briefly (kiln-loadgen without a rate limit into a fault-free kiln-sink; capacity =
messages delivered / time from the first submission to the last delivery), then submits at
half of it for SECONDS with kiln-loadgen while:

- the sink (kiln-sink on 127.0.0.21-23) answers at random 451, 550, drops the connection or
  delays the RCPT reply up to 2 s;
- the MX answers change (a DNS server of its own, soakdns.py: the domains' MX hosts swap
  every --dns-every seconds and one MX host's A record moves between two addresses);
- one source IP of the pool flaps: its address is removed and restored (in a network
  namespace the run makes for itself with `unshare --net`, as root; without one the
  flap is `kilnctl zone down/up` of its zone), and kilnd must take it out of rotation
  and back;
- kilnd is reloaded with SIGHUP every --reload-every seconds (60 for runs of 10 minutes and
  more, else 20), each reload changing account.max_24h_send so that `kilnctl quota` shows it
  was applied;
- the events file is rotated (renamed away; kilnd reopens the path) every few minutes.

Then it stops the load, waits until every acknowledged message is delivered or bounced and
stops kilnd with SIGTERM. It reports acknowledged, delivered, bounced, lost (must be 0),
duplicated (must be 0, except copies whose first delivery came from the flapping IP while
its address was gone: the sink took the message and its 250 could not come back), kilnd's
RSS (VmRSS at the start of the soak, at its end, the highest sample every 5 s, and VmHWM),
p50/p99 from the client's 250 to the sink's acceptance, messages/s submitted and the
capacity they are half of.

    soak.py [--seconds S] [--rate R] [--max-rss-growth PCT] [--json FILE] [--keep]

Without arguments it runs the 2-minute version for `make check`; `make soak` runs
SOAK_S seconds (3600). RSS is asserted only with --max-rss-growth (the end VmRSS may exceed
the VmRSS at the first quarter of the soak by at most PCT percent): `make soak` passes it;
under ASan (make check) RSS is dominated by the sanitizer's quarantine and is only reported."""
import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soaklib  # noqa: E402
from soaklib import kilntest, say  # noqa: E402
from soakdns import ChangingDns  # noqa: E402

SINK_IPS = ["127.0.0.21", "127.0.0.22", "127.0.0.23"]
FLAP_IP_NETNS = "10.77.0.13"
FLAP_IP_PLAIN = "127.0.0.12"
DOMAINS = 8
SINK_FAULTS = ["--random-defer", "3", "--random-reject", "1", "--random-disconnect", "1",
               "--random-delay", "5", "--random-delay-ms", "2000"]
QUOTAS = [10_000_000, 20_000_000]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=120, help="soak length (120)")
    ap.add_argument("--rate", type=float, default=None,
                    help="messages/s to submit (default: half of the measured capacity)")
    ap.add_argument("--capacity-seconds", type=int, default=None,
                    help="length of the capacity measurement (10; 20 for long runs)")
    ap.add_argument("--reload-every", type=int, default=None)
    ap.add_argument("--dns-every", type=int, default=None)
    ap.add_argument("--max-rss-growth", type=float, default=None,
                    help="fail if the end VmRSS exceeds the first-quarter VmRSS by PCT %%")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", default="soak-summary.json", help="figures as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    ap.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-netns", action="store_true",
                    help="flap with kilnctl zone down/up instead of a network namespace")
    a = ap.parse_args()
    if a.seconds < 60:
        ap.error("--seconds must be at least 60")
    long_run = a.seconds >= 600
    a.reload_every = a.reload_every or (60 if long_run else 20)
    a.dns_every = a.dns_every or (60 if long_run else 15)
    a.capacity_seconds = a.capacity_seconds or (20 if long_run else 10)
    a.rotate_every = 300 if long_run else 50
    return a


def enter_netns(a):
    """Re-runs this script in a network namespace of its own (root only), where one source
    address can really disappear; returns False when that is not possible."""
    if a.in_netns or a.no_netns or os.geteuid() != 0:
        return False
    if subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode != 0:
        return False
    sys.stdout.flush()
    os.execvp("unshare", ["unshare", "--net", "--", sys.executable, os.path.abspath(__file__)]
              + sys.argv[1:] + ["--in-netns"])
    return True


def ip_cmd(*args):
    subprocess.run(["ip"] + list(args), check=True, capture_output=True, timeout=10)


class Flapper:
    """One source IP going bad and back on a schedule: `down_for` seconds out of `period`."""

    def __init__(self, k, netns, seconds):
        self.k, self.netns = k, netns
        self.ip = FLAP_IP_NETNS if netns else FLAP_IP_PLAIN
        self.zone = "az3"
        if seconds >= 600:
            self.period, self.down_for, self.first = 300, 60, 120
        else:     # one flap, early enough for the 60 s cool-down and a probe to bring it back;
            # long enough to be seen: with the address gone, the IP's open sessions hang
            # (replies to it are not delivered) until their reply timeout, about 30 s, and only
            # the new connections that follow fail to bind and take it down
            self.period, self.down_for, self.first = 10 ** 9, 60, 15
        self.is_down = False
        self.windows = []          # [wall ms down, wall ms up]
        self.states = []           # the IP's State from kilnctl ips, when it changed
        self.next_at = self.first

    def tick(self, t):
        if t < self.next_at:
            return
        if not self.is_down:
            if self.netns:
                ip_cmd("addr", "del", self.ip + "/32", "dev", "lo")
            else:
                self.k.ctl("zone", "down", self.zone)
            self.windows.append([int(time.time() * 1000), None])
            self.is_down = True
            self.next_at = t + self.down_for
            say("flap: %s down" % self.ip)
        else:
            self.restore()
            self.next_at = t - self.down_for + self.period

    def restore(self):
        if not self.is_down:
            return
        if self.netns:
            ip_cmd("addr", "add", self.ip + "/32", "dev", "lo")
        else:
            self.k.ctl("zone", "up", self.zone)
        self.windows[-1][1] = int(time.time() * 1000)
        self.is_down = False
        say("flap: %s restored" % self.ip)

    def observe(self):
        ips = self.k.ctl("ips")["DedicatedIps"]
        state = next((i["State"] for i in ips if i["Ip"] == self.ip), "absent")
        if not self.states or self.states[-1] != state:
            self.states.append(state)
            say("flap: kilnctl ips says %s is %s" % (self.ip, state))

    def explains(self, ms, ip):
        """A delivery from the flapping IP while its address was gone (or just after):
        its 250 could not come back, so kilnd tried again."""
        if ip != self.ip:
            return False
        return any(d - 1000 <= ms <= (u or ms) + 5000 for d, u in self.windows)


class DnsFlipper:
    """Every `every` seconds: the MX hosts of the domains swap, and every other time
    mx-b's A record moves between 127.0.0.22 and 127.0.0.23."""

    def __init__(self, dns, every):
        self.dns, self.every, self.phase, self.next_at = dns, every, 0, every
        self.apply()

    def apply(self):
        p = self.phase
        mx = {}
        for i in range(DOMAINS):
            first, second = ("mx-a", "mx-b") if (i + p) % 2 == 0 else ("mx-b", "mx-a")
            mx["d%d.soak.test" % i] = [(10, first + ".soak.test"), (20, second + ".soak.test")]
        b = SINK_IPS[1] if (p // 2) % 2 == 0 else SINK_IPS[2]
        self.dns.set_zone(mx, {"mx-a.soak.test": [SINK_IPS[0]], "mx-b.soak.test": [b]})

    def tick(self, t):
        if t >= self.next_at:
            self.phase += 1
            self.next_at += self.every
            self.apply()


def measure_capacity(a, tmp, k, ledger):
    """kiln-loadgen without a rate limit for capacity_seconds; capacity = messages delivered
    / (last delivery - start)."""
    record = os.path.join(tmp, "acks-cap.txt")
    ledger.add_ack_file(record)
    t0 = time.time()
    lg = soaklib.start_loadgen(tmp, "cap", k.port, record, 10_000_000, 20, None, timeout=30,
                               domains=DOMAINS, domain_pattern="d%d.soak.test")
    time.sleep(a.capacity_seconds)
    lg.stop(60)

    def done():
        ledger.poll()
        return not ledger.unsettled()
    kilntest.wait_for(done, 180, 0.5, "the capacity run to be delivered")
    with ledger.lock:
        caps = [t for t in ledger.acked if t.startswith("cap-")]
        last = max(ledger.delivered[t][0] for t in caps if t in ledger.delivered)
    capacity = len(caps) / max(0.001, last / 1000.0 - t0)
    say("capacity: %d messages in %.1f s end to end = %.0f msg/s"
        % (len(caps), last / 1000.0 - t0, capacity))
    return capacity, len(caps)


def main():
    a = parse_args()
    netns = enter_netns(a) or a.in_netns
    seed = a.seed if a.seed is not None else int(time.time())
    rng = random.Random(seed)
    soaklib.arm_deadline(a.seconds + a.capacity_seconds + 900)
    if netns:
        ip_cmd("link", "set", "lo", "up")
        ip_cmd("addr", "add", FLAP_IP_NETNS + "/32", "dev", "lo")
    say("soak: %d s, seed %d, reload every %d s, DNS change every %d s, %s"
        % (a.seconds, seed, a.reload_every, a.dns_every,
           "own network namespace" if netns else "no namespace (zone flap)"))
    tmp = kilntest.reachable_tmp(tempfile.mkdtemp(prefix="kiln-soak-"))
    sink = k = lg = dns = flap = None
    ok = False
    try:
        dns = ChangingDns("soak.test").start()
        flipper = DnsFlipper(dns, a.dns_every)
        sink_port = soaklib.tcp_port(SINK_IPS[0])
        listen = ["%s:%d" % (ip, sink_port) for ip in SINK_IPS]
        record = os.path.join(tmp, "sink-record.txt")
        sink = soaklib.start_sink(tmp, listen, record, [], seed)
        k = kilntest.Kiln(tmp=tmp, sink_port=sink_port)
        flap_ip = FLAP_IP_NETNS if netns else FLAP_IP_PLAIN
        ips = [{"address": "127.0.0.10", "zone": "az1", "pool": "transactional", "warmup": "done"},
               {"address": "127.0.0.11", "zone": "az2", "pool": "transactional", "warmup": "done"},
               {"address": flap_ip, "zone": "az3", "pool": "transactional", "warmup": "done"}]
        k.cfg["dns"] = {"servers": ["127.0.0.1:%d" % dns.port], "timeout": "1s"}
        k.cfg["account"]["max_24h_send"] = QUOTAS[0]
        events = soaklib.fast_config(k, ips)
        ledger = soaklib.Ledger(record, events)
        k.start(timeout=60)

        if a.rate:
            capacity, cap_msgs = None, 0
            rate = a.rate
        else:
            capacity, cap_msgs = measure_capacity(a, tmp, k, ledger)
            rate = capacity / 2
        sink.stop()
        sink = soaklib.start_sink(tmp, listen, record, SINK_FAULTS, seed)

        flap = Flapper(k, netns, a.seconds)
        flap.observe()
        soak_record = os.path.join(tmp, "acks-soak.txt")
        ledger.add_ack_file(soak_record)
        say("soak: submitting %.0f msg/s for %d s" % (rate, a.seconds))
        lg = soaklib.start_loadgen(tmp, "soak", k.port, soak_record, rate * a.seconds * 2 + 100,
                                   10, rate, timeout=30, domains=DOMAINS,
                                   domain_pattern="d%d.soak.test")
        t0 = time.monotonic()
        rss = []                     # (t, VmRSS kB)
        reloads = applied = rotations = 0
        next_rss = next_poll = 0.0
        next_reload = a.reload_every
        next_rotate = a.rotate_every
        next_report = 60.0
        while True:
            t = time.monotonic() - t0
            if t >= a.seconds:
                break
            if not lg.alive():
                raise AssertionError("kiln-loadgen ended early: %s" % lg.output()[-2000:])
            if k.proc.poll() is not None:
                raise AssertionError("kilnd exited %s during the soak" % k.proc.returncode)
            if t >= next_rss:
                r, _ = soaklib.rss_kb(k.proc.pid)
                rss.append((t, r))
                next_rss += 5
            if t >= next_poll:
                ledger.poll()
                flap.observe()
                next_poll += 2
            flipper.tick(t)
            flap.tick(t)
            if t >= next_reload:
                next_reload += a.reload_every
                reloads += 1
                quota = QUOTAS[reloads % 2]
                k.cfg["account"]["max_24h_send"] = quota
                k.write_config()
                k.proc.send_signal(signal.SIGHUP)
                try:
                    kilntest.wait_for(lambda: k.ctl("quota")["Max24HourSend"] == quota, 15, 0.2,
                                      "the reload to apply")
                    applied += 1
                except AssertionError as e:
                    say("reload %d not applied: %s" % (reloads, e))
            if t >= next_rotate:
                next_rotate += a.rotate_every
                rotations += ledger.rotate_events()
            if t >= next_report:
                next_report += 60
                c = ledger.counts()
                say("t=%.0fs acknowledged=%d delivered=%d bounced=%d VmRSS=%s kB"
                    % (t, c["acknowledged"], c["delivered"], c["bounced"], rss[-1][1]))
            time.sleep(0.2 + rng.random() * 0.1)
        soak_s = time.monotonic() - t0
        rss_end, _ = soaklib.rss_kb(k.proc.pid)
        lg.stop(60)
        flap.restore()
        say("load stopped; waiting for every acknowledged message to settle")

        def settled():
            ledger.poll()
            return not ledger.unsettled()
        try:
            kilntest.wait_for(settled, 300, 1.0, "every acknowledged message delivered or bounced")
        except AssertionError:
            pass                       # reported as lost below
        # the flapping IP back in rotation (a probe after its cool-down)
        try:
            kilntest.wait_for(lambda: (flap.observe(), flap.states[-1] == "active")[1], 240, 2,
                              "the flapping IP back in rotation")
        except AssertionError:
            pass                       # reported below
        time.sleep(2)
        ledger.poll()
        status = k.ctl("status")
        _, hwm = soaklib.rss_kb(k.proc.pid)
        stats = soaklib.sink_stats(sink, tmp)
        rc = k.stop(60)

        counts = ledger.counts()
        with ledger.lock:
            soak_acks = sum(1 for t in ledger.acked if t.startswith("soak-"))
            lat = sorted(ledger.delivered[t][0] - ms for t, (ms, _) in ledger.acked.items()
                         if t.startswith("soak-") and t in ledger.delivered)
            dup_from = {t: list(zip(ledger.delivered[t], ledger.delivered_from[t]))
                        for t in ledger.delivered if len(ledger.delivered[t]) > 1}
        explained = [t for t, v in dup_from.items() if all(flap.explains(ms, ip) for ms, ip in v[:-1])]
        unexplained = sorted(set(dup_from) - set(explained))
        quarter = [r for tt, r in rss if tt >= a.seconds / 4 and r]
        rss_warm = quarter[0] if quarter else None
        by_listener = {l: v["messages"] for l, v in stats.get("by_listener", {}).items()}
        fields = {
            "seconds": round(soak_s),
            "seed": seed,
            "capacity_msg_per_s": round(capacity, 1) if capacity else "not measured (--rate)",
            "capacity_messages": cap_msgs,
            "target_rate_msg_per_s": round(rate, 1),
            "submitted_msg_per_s": round(soak_acks / soak_s, 1),
            "acknowledged": counts["acknowledged"],
            "delivered": counts["delivered"],
            "bounced_5xx": counts["bounced"],
            "lost": counts["lost"],
            "duplicated": counts["duplicated"],
            "duplicated_flap_in_flight": len(explained),
            "latency_ms_p50": soaklib.percentile(lat, 50),
            "latency_ms_p99": soaklib.percentile(lat, 99),
            "latency_ms_max": lat[-1] if lat else None,
            "rss_kb_start": rss[0][1] if rss else None,
            "rss_kb_first_quarter": rss_warm,
            "rss_kb_end": rss_end,
            "rss_kb_max": max((r for _, r in rss if r), default=None),
            "vmhwm_kb": hwm,
            "reloads": reloads,
            "reloads_applied": applied,
            "dns_changes": flipper.phase,
            "dns_queries": dns.queries,
            "flap": "%s, %s" % (flap.ip, "address removed/restored in a netns" if netns
                                else "kilnctl zone down/up"),
            "flap_states_seen": flap.states,
            "events_rotations": rotations,
            "sink_messages_by_listener": by_listener,
            "sink_faults": {f: n for f, n in stats.get("faults", {}).items() if n},
            "events": dict(sorted(ledger.events.items())),
            "queue_after": {"Queued": status.get("Queued"), "Deferred": status.get("Deferred")},
            "kilnd_exit_after_sigterm": rc,
        }
        soaklib.summary("kiln soak", fields, a.json)
        problems = []
        if counts["lost"]:
            problems.append("%d acknowledged messages lost, e.g. %s"
                            % (counts["lost"], ledger.unsettled()[:5]))
        if unexplained:
            problems.append("%d duplicates not explained by the flap, e.g. %s"
                            % (len(unexplained), [(t, dup_from[t]) for t in unexplained[:3]]))
        if soak_acks == 0:
            problems.append("nothing was acknowledged during the soak")
        if applied != reloads or reloads == 0:
            problems.append("%d of %d reloads applied" % (applied, reloads))
        if "down" not in flap.states or flap.states[-1] != "active":
            problems.append("the flapping IP was not seen going down and back: %s" % flap.states)
        if sum(1 for v in by_listener.values() if v) < len(SINK_IPS):
            problems.append("not every MX address got mail (DNS changes not followed): %s"
                            % by_listener)
        if status.get("Queued") or status.get("Deferred"):
            problems.append("kilnd still holds recipients: %s" % status)
        if rc != 0:
            problems.append("kilnd exited %s after SIGTERM" % rc)
        if a.max_rss_growth is not None and rss_warm and rss_end and \
                rss_end > rss_warm * (1 + a.max_rss_growth / 100.0):
            problems.append("VmRSS grew from %d kB (first quarter) to %d kB (end): more than %g%%"
                            % (rss_warm, rss_end, a.max_rss_growth))
        for p in problems:
            print("FAIL: " + p, flush=True)
        ok = not problems
        return 0 if ok else 1
    finally:
        if lg:
            lg.stop()
        if flap:
            try:
                flap.restore()
            except Exception:
                pass
        if k:
            if not ok:
                print(k.log()[-3000:], flush=True)
            k.cleanup()
        if sink:
            sink.stop()
        if dns:
            dns.stop()
        soaklib.cleanup_dir(tmp, a.keep)


if __name__ == "__main__":
    sys.exit(main())
