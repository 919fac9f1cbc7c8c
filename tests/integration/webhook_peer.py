"""webhook_peer.py — the HTTP(S) receiver the webhook tests post to, written on a server we
did not write (Python's http.server, HTTP/1.1 with keep-alive, in threads of the test
process, on loopback), and a throwaway CA made with the `openssl` command line for its
TLS certificates."""
import http.server
import json
import os
import socket
import ssl
import subprocess
import threading
import time

from kilntest import free_port


def make_ca(tmp, names=("localhost",), ips=("127.0.0.1",)):
    """A test CA and a server certificate it signed for names/ips (subjectAltName).
    Returns (ca_crt, server_crt, server_key) paths under tmp."""
    ca_key, ca_crt = os.path.join(tmp, "ca.key"), os.path.join(tmp, "ca.crt")
    key, csr, crt = (os.path.join(tmp, "srv" + s) for s in (".key", ".csr", ".crt"))
    ext = os.path.join(tmp, "srv.ext")
    san = ",".join(["DNS:" + n for n in names] + ["IP:" + i for i in ips])
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n" % san)

    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-days", "2",
        "-subj", "/CN=kiln webhook test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=%s" % names[0])
    run("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
        "-out", crt, "-days", "2", "-extfile", ext)
    return ca_crt, crt, key


class Receiver:
    """An HTTP/1.1 server recording every POST. answers[i] is the answer to POST number i:
    a status, or (status, headers dict, body bytes); 200 once the list is used up. With
    cert/key it speaks HTTPS (the handshake runs in the connection's thread; failed
    handshakes are counted in tls_failures)."""

    def __init__(self, host="127.0.0.1", port=None, answers=(), cert=None, key=None):
        self.host = host
        self.port = port or free_port(host)
        self.answers = list(answers)
        self.posts = []          # dicts: status, path, ctype, body (parsed JSON), conn, t
        self.tls_failures = 0
        self.lock = threading.Lock()
        self.ctx = None
        if cert:
            self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ctx.load_cert_chain(cert, key)
        self.srv = None
        self.thread = None
        self.conns = 0
        self.socks = []          # open connections, cut by stop()

    def url(self, host=None, path="/kiln/events"):
        scheme = "https" if self.ctx else "http"
        return "%s://%s:%d%s" % (scheme, host or self.host, self.port, path)

    def start(self):
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"      # keep-alive

            def setup(self):
                super().setup()
                with rec.lock:
                    rec.conns += 1
                    self.conn_no = rec.conns
                    rec.socks.append(self.connection)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with rec.lock:
                    i = len(rec.posts)
                    ans = rec.answers[i] if i < len(rec.answers) else 200
                    status, hdrs, text = ans if isinstance(ans, tuple) else (ans, {}, b"")
                    rec.posts.append({"status": status, "path": self.path,
                                      "ctype": self.headers.get("Content-Type"),
                                      "body": json.loads(body), "conn": self.conn_no,
                                      "t": time.monotonic()})
                self.send_response(status)
                for k, v in hdrs.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request, client_address):
                if rec.ctx:
                    try:
                        request.settimeout(10)
                        request = rec.ctx.wrap_socket(request, server_side=True)
                        request.settimeout(None)
                    except (ssl.SSLError, OSError):
                        with rec.lock:
                            rec.tls_failures += 1
                        return
                super().finish_request(request, client_address)

        self.srv = Server((self.host, self.port), Handler)
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        """Stops listening and cuts every open (kept-alive) connection."""
        if self.srv:
            self.srv.shutdown()
            self.srv.server_close()
            self.thread.join(10)
            self.srv = None
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def all_posts(self):
        with self.lock:
            return list(self.posts)

    def accepted(self):
        """Events of the POSTs answered 2xx, in arrival order (arrays flattened)."""
        out = []
        for p in self.all_posts():
            if 200 <= p["status"] < 300:
                out.extend(p["body"] if isinstance(p["body"], list) else [p["body"]])
        return out


def nothing_listening(host="127.0.0.1"):
    """A port on host where nothing listens (connection refused at once)."""
    port = free_port(host)
    s = socket.socket()
    try:
        s.settimeout(0.5)
        if s.connect_ex((host, port)) == 0:
            raise AssertionError("port %d is in use" % port)
    finally:
        s.close()
    return port
