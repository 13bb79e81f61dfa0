"""Interop of `--compression context` with the Python `websockets` client (its default permessage-deflate:
`client_max_window_bits` offered, and an inflater that keeps its window when the server keeps its context).

    python python_context.py /path/to/ringws

Starts `ringws serve --mode echo --compression context` on an ephemeral port (stopped by PID at the end)
and checks that the answer keeps the server's context and tells the client not to keep its own, and that
text and binary of many sizes, repeated and interleaved with incompressible ones, are echoed exactly.
Prints one line per check and `N passed, N failed`; exits 1 on any failure.
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import python_client  # noqa: E402  (the shared checks)
import ringws_proc  # noqa: E402  (scripts/ringws_proc.py: start, listening line, stop by PID)
from websockets.sync.client import connect  # noqa: E402

TIMEOUT = python_client.TIMEOUT


def main():
    binary = sys.argv[1]
    logs = os.environ.get("RINGWS_INTEROP_LOGS", tempfile.mkdtemp(prefix="ringws-context-"))
    err = open(os.path.join(logs, "context-echo.err"), "w")
    server = ringws_proc.start(
        [binary, "serve", "--bind", "127.0.0.1", "--port", "0", "--mode", "echo",
         "--max-message-size", "16MiB", "--compression", "context"],
        stderr=err)
    try:
        try:
            host, port = ringws_proc.listening_addr(server)
        except ringws_proc.StartupError:
            raise SystemExit(f"the context-mode server did not start (see {err.name})") from None
        url = f"ws://{host}:{port}/"
        print(f"context server pid {server.pid} on {host}:{port}", flush=True)
        check, expect_equal = python_client.check, python_client.expect_equal

        def open_client():
            return connect(url, max_size=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT)

        def negotiated():
            with open_client() as ws:
                answer = ws.response.headers.get("Sec-WebSocket-Extensions", "")
                expect_equal(answer, "permessage-deflate; client_no_context_takeover", "the answer")

        def json_text(seed, size):
            text = "".join(f'{{"id":{i * seed},"user":"u{i % 7}","text":"hello κόσμε {i * 31 % 97}"}},'
                           for i in range(size // 20 + 1))
            return text.encode()[:size].decode("utf-8", "ignore")

        def repeated_and_mixed():
            with open_client() as ws:
                for size in (128, 1000, 2048, 4096, 16_384, 65_536, 1 << 20):
                    for message in (json_text(3, size), json_text(3, size), os.urandom(size),
                                    json_text(5, size), (bytes(range(256)) * (size // 256 + 1))[:size],
                                    json_text(3, size)):
                        ws.send(message)
                        expect_equal(ws.recv(timeout=TIMEOUT), message, f"context echo of {size}")

        def fragmented():
            with open_client() as ws:
                parts = [json_text(7, 5000), json_text(7, 3), json_text(7, 70_000)]
                for _ in range(3):
                    ws.send(parts)
                    expect_equal(ws.recv(timeout=TIMEOUT), "".join(parts), "fragmented context echo")

        check("context mode: server context kept, client_no_context_takeover answered", negotiated)
        check("context mode: repeated, incompressible and mixed messages, 128 B to 1 MiB", repeated_and_mixed)
        check("context mode: fragmented text echoed three times", fragmented)
    finally:
        ringws_proc.stop(server)
        err.close()
    passed = sum(python_client.results)
    failed = len(python_client.results) - passed
    print(f"python context: {passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
