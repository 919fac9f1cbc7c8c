"""test_kilnctl_passwd.py — `kilnctl passwd`, the README's way to make a
submission.auth[].password_hash: it needs no running kilnd and no config; it reads one line
of stdin (or prompts twice on a terminal, without echo) and prints a yescrypt hash that
kilnd accepts — proved by starting kilnd with that hash and logging in with smtplib (the
right password gets 235 and may send, a wrong one 535); an empty password and two
different terminal answers are refused with nothing printed on stdout."""
import fcntl
import os
import pty
import re
import select
import signal
import smtplib
import subprocess
import termios
import time
import unittest

from kilntest import KILNCTL, Kiln, main, send

HASH_RE = re.compile(r"^\$y\$[./0-9A-Za-z]+\$[./0-9A-Za-z]+\$[./0-9A-Za-z]{43}$")
PASSWORD = "correct horse battery staple"


def passwd(stdin_text, *extra):
    """kilnctl passwd with stdin a pipe; run from / with no config file around."""
    return subprocess.run([KILNCTL] + list(extra) + ["passwd"], input=stdin_text,
                          capture_output=True, text=True, timeout=60, cwd="/")


class PtySession:
    """kilnctl passwd with stdin and stderr on a pseudo-terminal, stdout a pipe."""

    def __init__(self):
        self.master, self.slave = pty.openpty()

        def controlling_terminal():   # as a login shell's child: ^C sends SIGINT
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        self.proc = subprocess.Popen([KILNCTL, "passwd"], stdin=self.slave, stderr=self.slave,
                                     stdout=subprocess.PIPE, cwd="/",
                                     preexec_fn=controlling_terminal)
        self.seen = b""

    def echo(self):
        return bool(termios.tcgetattr(self.slave)[3] & termios.ECHO)

    def expect(self, text, timeout=20):
        end = time.monotonic() + timeout
        while text.encode() not in self.seen:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError("no %r on the terminal; saw %r" % (text, self.seen))
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:   # the child closed the terminal
                    raise AssertionError("terminal closed before %r; saw %r" % (text, self.seen))

    def type(self, line):
        os.write(self.master, line.encode() + b"\n")

    def finish(self):
        out, _ = self.proc.communicate(timeout=60)
        try:
            while select.select([self.master], [], [], 0.2)[0]:
                chunk = os.read(self.master, 4096)
                if not chunk:
                    break
                self.seen += chunk
        except OSError:
            pass
        self.echo_at_end = self.echo()
        os.close(self.master)
        os.close(self.slave)
        return self.proc.returncode, out.decode()


class KilnctlPasswdTest(unittest.TestCase):
    def test_stdin_hash_logs_in_to_kilnd(self):
        p = passwd(PASSWORD + "\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertEqual(len(lines), 1, p.stdout)
        h = lines[0]
        self.assertRegex(h, HASH_RE)
        self.assertNotIn(PASSWORD, p.stdout + p.stderr)
        # a fresh random salt each time
        again = passwd(PASSWORD + "\n")
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertNotEqual(again.stdout.strip(), h)
        # a line without its newline is the same password
        bare = passwd(PASSWORD)
        self.assertEqual(bare.returncode, 0, bare.stderr)

        k = Kiln()
        k.cfg["submission"]["auth"] = [{"user": "app", "password_hash": h},
                                       {"user": "other", "password_hash": bare.stdout.strip()}]
        k.cfg["submission"]["trusted_networks"] = []     # loopback must log in too
        k.write_config()
        with k:
            with k.smtp() as s:
                s.ehlo("client.test")
                with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
                    s.login("app", PASSWORD + "x")
                self.assertEqual(cm.exception.smtp_code, 535)
            with k.smtp() as s:
                s.ehlo("client.test")
                code, _ = s.login("app", PASSWORD)
                self.assertEqual(code, 235)
                s.sendmail("app@example.test", ["success@simulator.amazonses.com"],
                           b"From: app@example.test\r\nTo: success@simulator.amazonses.com\r\n"
                           b"Subject: passwd\r\n\r\nhi\r\n")
            with k.smtp() as s:
                s.ehlo("client.test")
                self.assertEqual(s.login("other", PASSWORD)[0], 235)
            # without AUTH the same client is refused: the hash is what let it in
            code, text = send(k, "app@example.test", ["success@simulator.amazonses.com"])
            self.assertEqual(code, 530, text)

    def test_empty_password_refused(self):
        for stdin_text in ("\n", "", "\r\n"):
            p = passwd(stdin_text)
            self.assertEqual(p.returncode, 2, (stdin_text, p.stdout, p.stderr))
            self.assertEqual(p.stdout, "")
            self.assertIn("refusing an empty password", p.stderr)

    def test_needs_no_config_or_daemon_and_takes_no_arguments(self):
        # a -c naming a file that does not exist changes nothing: no config is read
        p = passwd("pw\n", "-c", "/nonexistent/kiln.yaml")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout.strip(), HASH_RE)
        p = subprocess.run([KILNCTL, "passwd", "extra"], input="pw\n", capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn("unexpected argument: extra", p.stderr)
        p = subprocess.run([KILNCTL, "--help"], capture_output=True, text=True, timeout=30)
        self.assertIn("passwd", p.stdout)

    def test_terminal_prompt_twice_without_echo(self):
        t = PtySession()
        t.expect("Password: ")
        t.type("s3cret-on-a-tty")
        t.expect("Again: ")
        t.type("s3cret-on-a-tty")
        rc, out = t.finish()
        self.assertEqual(rc, 0, t.seen)
        self.assertRegex(out.strip(), HASH_RE)
        self.assertNotIn(b"s3cret", t.seen, "the password was echoed")
        self.assertTrue(t.echo_at_end, "the terminal was left without echo")

    def test_interrupted_prompt_restores_echo(self):
        t = PtySession()
        t.expect("Password: ")
        self.assertFalse(t.echo())
        os.write(t.master, b"half-typed\x03")      # ^C
        rc, out = t.finish()
        self.assertEqual(rc, -signal.SIGINT)
        self.assertEqual(out, "")
        self.assertTrue(t.echo_at_end, "^C left the terminal without echo")

    def test_terminal_answers_must_match(self):
        t = PtySession()
        t.expect("Password: ")
        t.type("first-answer")
        t.expect("Again: ")
        t.type("second-answer")
        rc, out = t.finish()
        self.assertEqual(rc, 2)
        self.assertEqual(out, "")
        self.assertIn(b"the two passwords differ", t.seen)
        self.assertNotIn(b"first-answer", t.seen, "a password was echoed")
        self.assertNotIn(b"second-answer", t.seen, "a password was echoed")


if __name__ == "__main__":
    main()
