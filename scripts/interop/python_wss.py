"""Interop over TLS: the Python `websockets` client checks of python_client.py against `ringws serve
--tls-cert --tls-key` (wss://), plus https:// routes and a plain ws:// client refused on the TLS port.

    python python_wss.py /path/to/ringws

Makes a self-signed certificate for localhost and 127.0.0.1 in a temporary directory (with the
`cryptography` package if it is importable, else the `openssl` command), starts an echo and a broadcast
server with it on ephemeral ports (stopped by PID at the end), and trusts only that certificate.
Prints one line per check and `N passed, N failed`; exits 1 on any failure.
"""

import functools
import os
import shutil
import socket
import ssl
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import python_client  # noqa: E402  (the shared checks)
import ringws_proc  # noqa: E402  (scripts/ringws_proc.py: start, listening line, stop by PID)
from test_cert import make_cert  # noqa: E402
from websockets.sync.client import connect  # noqa: E402


def start(binary, mode, cert_path, key_path, logs):
    err = open(os.path.join(logs, f"wss-{mode}.err"), "w")
    server = ringws_proc.start(
        [binary, "serve", "--bind", "127.0.0.1", "--port", "0", "--mode", mode,
         "--max-message-size", "16MiB",
         "--tls-cert", cert_path, "--tls-key", key_path],
        stderr=err)
    try:
        host, port = ringws_proc.listening_addr(server)
    except ringws_proc.StartupError:
        raise SystemExit(f"the {mode} server did not start over TLS (see {err.name})") from None
    return server, f"{host}:{port}"


def main():
    binary = sys.argv[1]
    directory = tempfile.mkdtemp(prefix="ringws-wss-")
    logs = os.environ.get("RINGWS_INTEROP_LOGS", directory)
    servers = []
    try:
        cert_path, key_path = make_cert(directory)
        context = ssl.create_default_context(cafile=cert_path)
        echo, echo_addr = start(binary, "echo", cert_path, key_path, logs)
        servers.append(echo)
        broadcast, broadcast_addr = start(binary, "broadcast", cert_path, key_path, logs)
        servers.append(broadcast)
        print(f"wss servers: echo pid {echo.pid} on {echo_addr}, broadcast pid {broadcast.pid} on {broadcast_addr}",
              flush=True)

        # Every check of python_client.py, through an ssl context trusting the test certificate.
        python_client.connect = functools.partial(connect, ssl=context)
        python_client.echo_checks(f"wss://{echo_addr}/")
        python_client.broadcast_checks(f"wss://{broadcast_addr}/")

        check = python_client.check

        def healthz():
            with urllib.request.urlopen(f"https://{echo_addr}/healthz", context=context, timeout=10) as r:
                python_client.expect_equal(r.status, 200, "status")
                python_client.expect_equal(r.read(), b"ok\n", "body")

        def metrics():
            with urllib.request.urlopen(f"https://{echo_addr}/metrics", context=context, timeout=10) as r:
                body = r.read().decode()
            if "ringws_tls_handshakes_total" not in body:
                raise AssertionError("no TLS handshake counter in /metrics")

        def plain_refused():
            host, port = echo_addr.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
                answer = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
            if answer.startswith(b"HTTP/"):
                raise AssertionError(f"a plain client got an HTTP answer on the TLS port: {answer[:40]!r}")
            with connect(f"wss://{echo_addr}/", ssl=context, open_timeout=10) as ws:
                ws.send("after a plain client")
                python_client.expect_equal(ws.recv(timeout=10), "after a plain client", "echo")

        def untrusted_refused():
            try:
                with connect(f"wss://{echo_addr}/", ssl=ssl.create_default_context(), open_timeout=10):
                    pass
            except ssl.SSLCertVerificationError:
                return
            raise AssertionError("a client not trusting the test certificate connected")

        check("https /healthz", healthz)
        check("https /metrics", metrics)
        check("plain ws:// client refused on the TLS port, TLS clients still served", plain_refused)
        check("client without the certificate refused by its own verification", untrusted_refused)

        for server in servers:
            if server.poll() is not None:
                python_client.results.append(False)
                print(f"FAIL python-wss server pid {server.pid} exited during the run", flush=True)
    finally:
        for server in servers:
            ringws_proc.stop(server)
        shutil.rmtree(directory, ignore_errors=True)
    passed = sum(python_client.results)
    failed = len(python_client.results) - passed
    print(f"python-wss: {passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
