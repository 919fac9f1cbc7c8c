"""postfix_relay.py — a private Postfix relay for benchmarks (never the system's): its own
config_directory and queue under a temp dir, smtpd on a loopback port, tuned for throughput
as ../shared/TESTING.md measured (in_flow_delay 0, concurrency 20, no chroot). Next hops:
either every test domain relayed by transport_maps to a loopback sink (no DNS), or, with
`dns=(resolver_ip, port)`, real MX lookups (smtp_dns_support_level = enabled, no
transport_maps, smtp_tcp_port = port): Postfix asks the system resolver, which reads
/etc/resolv.conf and speaks to port 53 only, so the relay is started in a private mount
namespace (`unshare --mount`) where a resolv.conf naming resolver_ip is bind-mounted over
/etc/resolv.conf; the system's file is never changed. Postfix fsyncs each queue file before
its 250, so it is compared with kiln's durable spool only. Installs Postfix from Debian's
archive if missing (without configuring or starting the system instance)."""
import os
import shutil
import subprocess
import time

POSTFIX = "/usr/sbin/postfix"


def ensure_installed():
    if os.path.exists(POSTFIX):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["debconf-set-selections"], input=b"postfix postfix/main_mailer_type select No configuration\n",
                   check=False)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run(sudo + ["apt-get", "install", "-y", "--no-install-recommends", "postfix"], env=env,
                   check=True, stdout=subprocess.DEVNULL)


class PostfixRelay:
    def __init__(self, base, listen_port, routes, source_ip=None, dns=None, main_extra=None):
        """routes: {domain: (host, port)}, used when dns is None; dns: (resolver IP, the
        port of every MX host); main_extra: main.cf settings over the defaults (e.g.
        mydestination for a relay that also delivers locally, as the feedback test's does)."""
        self.main_extra = main_extra or {}
        self.base = base
        self.etc = os.path.join(base, "etc")
        self.queue = os.path.join(base, "queue")
        self.data = os.path.join(base, "data")
        self.port = listen_port
        self.routes = routes
        self.source_ip = source_ip
        self.dns = dns

    def write_config(self):
        for d in (self.etc, self.queue, self.data):
            os.makedirs(d, exist_ok=True)
        shutil.chown(self.data, "postfix", "postfix")
        transport = os.path.join(self.etc, "transport")
        with open(transport, "w") as f:
            for dom, (host, port) in sorted(self.routes.items()):
                f.write("%s smtp:[%s]:%d\n" % (dom, host, port))
        main = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": self.data,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix.bench.test",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relay_domains": "",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "maillog_file": os.path.join(self.base, "maillog"),
            "maillog_file_prefixes": self.base,
            "in_flow_delay": "0",
            "max_use": "10000",
            "default_destination_concurrency_limit": "20",
            "initial_destination_concurrency": "20",
            "smtp_destination_concurrency_limit": "20",
            "default_process_limit": "200",
            "smtpd_peername_lookup": "no",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtp_connection_cache_on_demand": "yes",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "message_size_limit": "20971520",
            "shlib_directory": "/usr/lib/postfix",
            "daemon_directory": "/usr/lib/postfix/sbin",
            "meta_directory": "/etc/postfix",
            "command_directory": "/usr/sbin",
        }
        if self.dns:
            main["smtp_dns_support_level"] = "enabled"
            main["smtp_tcp_port"] = str(self.dns[1])
            with open(os.path.join(self.base, "resolv.conf"), "w") as f:
                f.write("nameserver %s\noptions timeout:1 attempts:2\n" % self.dns[0])
        else:
            main["transport_maps"] = "texthash:" + transport
            main["smtp_dns_support_level"] = "disabled"
            main["disable_dns_lookups"] = "yes"
        if self.source_ip:
            main["smtp_bind_address"] = self.source_ip
        main.update(self.main_extra)
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            for k, v in main.items():
                f.write("%s = %s\n" % (k, v))
        with open("/etc/postfix/master.cf") as f:
            master = f.read()
        lines = []
        for line in master.splitlines():
            if line.startswith("smtp ") and " inet " in line:
                line = "127.0.0.1:%d      inet  n       -       n       -       -       smtpd" % self.port
            elif line and not line[0].isspace() and not line.startswith("#"):
                parts = line.split()
                if len(parts) > 4 and parts[4] in ("y", "-"):
                    parts[4] = "n"          # chroot off
                    line = "  ".join(parts[:7]) + ("  " + " ".join(parts[7:]) if len(parts) > 7 else "")
            lines.append(line)
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write("\n".join(lines) + "\n")

    def postfix(self, *args, check=True):
        return subprocess.run([POSTFIX, "-c", self.etc] + list(args), check=check, capture_output=True,
                              text=True, timeout=120)

    def start(self):
        self.write_config()             # `postfix start` creates the queue's directories
        if self.dns:
            # The master and every process it forks keep this namespace and its resolv.conf.
            p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                'mount --bind "$1" /etc/resolv.conf && exec "$2" -c "$3" start',
                                "sh", os.path.join(self.base, "resolv.conf"), POSTFIX, self.etc],
                               capture_output=True, text=True, timeout=120)
        else:
            p = self.postfix("start", check=False)
        if p.returncode != 0:
            raise RuntimeError("postfix start failed: %s %s" % (p.stdout, p.stderr))
        import socket
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("postfix smtpd did not listen on %d" % self.port)

    def master_pid(self):
        try:
            with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self):
        self.postfix("stop", check=False)
        end = time.monotonic() + 20
        while time.monotonic() < end and self.master_pid() and os.path.exists("/proc/%d" % self.master_pid()):
            time.sleep(0.1)
