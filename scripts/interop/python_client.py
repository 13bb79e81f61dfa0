"""Interop checks with the Python `websockets` client (its sync API) against a running server.

    python python_client.py --echo ws://127.0.0.1:PORT/ [--broadcast ws://127.0.0.1:PORT2/]

Echo: text (ASCII and multi-byte), binary, empty, large (1 MiB and 8 MiB), fragmented messages (sent as
an iterable of fragments), ping, and the close handshake. Compression: the library's default offer
(permessage-deflate) is answered, and JSON text and binary of many sizes, whole and fragmented, are echoed
compressed both ways. Broadcast: three clients, each message
reaches every client (reported as skipped, never passed, with --skip-broadcast REASON). Prints one line per check and `N passed, N failed`; exits 1 on any failure.
"""

import argparse
import contextlib
import os
import sys
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

TIMEOUT = 10
results = []


def check(name, function):
    started = time.monotonic()
    try:
        function()
    except Exception as error:  # noqa: BLE001 - every failure is reported, none is fatal
        results.append(False)
        print(f"FAIL python {name}: {type(error).__name__}: {error}", flush=True)
        return
    results.append(True)
    print(f"ok   python {name} ({(time.monotonic() - started) * 1000:.0f} ms)", flush=True)


def expect_equal(got, wanted, what):
    if got != wanted:
        def show(value):
            return f"{type(value).__name__} of {len(value)}" if isinstance(value, (str, bytes)) else repr(value)
        raise AssertionError(f"{what}: got {show(got)}, wanted {show(wanted)}")


def echo_checks(url):
    def open_client():
        return connect(url, max_size=None, compression=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT)

    def round_trip(message):
        with open_client() as ws:
            ws.send(message)
            expect_equal(ws.recv(timeout=TIMEOUT), message, "echo")

    check("echo ASCII text", lambda: round_trip("Hello, ringws"))
    check("echo multi-byte text", lambda: round_trip("κόσμε € 😀 \U0010ffff" * 10))
    check("echo empty text", lambda: round_trip(""))
    check("echo binary", lambda: round_trip(bytes(range(256)) * 4))
    check("echo empty binary", lambda: round_trip(b""))
    check("echo 1 MiB binary", lambda: round_trip(os.urandom(1 << 20)))
    check("echo 8 MiB text", lambda: round_trip("ringws-€" * ((8 << 20) // 10)))

    def fragmented_text():
        with open_client() as ws:
            pieces = ["frag", "mented ", "tex", "t with € split", "", " over fragments"]
            ws.send(iter(pieces))
            expect_equal(ws.recv(timeout=TIMEOUT), "".join(pieces), "fragmented text echo")

    def fragmented_binary():
        with open_client() as ws:
            pieces = [os.urandom(n) for n in (1, 1000, 0, 70000, 5)]
            ws.send(iter(pieces))
            expect_equal(ws.recv(timeout=TIMEOUT), b"".join(pieces), "fragmented binary echo")

    def many_in_order():
        with open_client() as ws:
            sent = [f"message {i}" if i % 2 else f"message {i}".encode() for i in range(500)]
            for message in sent:
                ws.send(message)
            for index, message in enumerate(sent):
                expect_equal(ws.recv(timeout=TIMEOUT), message, f"message {index}")

    def ping():
        with open_client() as ws:
            pong = ws.ping(b"python-ping")
            if not pong.wait(TIMEOUT):
                raise AssertionError("no pong within the timeout")

    def close_handshake():
        with open_client() as ws:
            ws.send("before close")
            expect_equal(ws.recv(timeout=TIMEOUT), "before close", "echo")
            ws.close(code=4000, reason="done here")
            if ws.protocol.close_rcvd is None:
                raise AssertionError("no close frame received from the server")
            code = ws.protocol.close_rcvd.code
            if code not in (4000, 1000):
                raise AssertionError(f"server answered close code {code}, wanted 4000 or 1000")

    def protocol_error_close():
        with open_client() as ws:
            # An unmasked frame from a client must be refused with 1002; write it under the library.
            ws.socket.sendall(b"\x81\x05hello")
            try:
                ws.recv(timeout=TIMEOUT)
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                expect_equal(code, 1002, "close code for an unmasked client frame")
                return
            raise AssertionError("the server echoed an unmasked frame")

    check("echo fragmented text", fragmented_text)
    check("echo fragmented binary", fragmented_binary)
    check("500 mixed messages echoed in order", many_in_order)
    check("ping answered by a pong", ping)
    check("close handshake with code 4000", close_handshake)
    check("unmasked frame refused with 1002", protocol_error_close)


def compression_checks(url):
    """websockets compresses by default (`compression="deflate"`: permessage-deflate with
    client_max_window_bits); the server must agree and echo every size exactly."""

    def open_client():
        return connect(url, max_size=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT)

    def negotiated():
        with open_client() as ws:
            answer = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            if "permessage-deflate" not in answer:
                raise AssertionError(f"no permessage-deflate in the answer: {answer!r}")
            if "server_no_context_takeover" not in answer:
                raise AssertionError(f"the answer keeps the server's context: {answer!r}")

    def json_text(size):
        text = "".join(f'{{"id":{i},"user":"u{i % 7}","text":"hello κόσμε {i * 31 % 97}"}},' for i in range(size // 20 + 1))
        return text.encode()[:size].decode("utf-8", "ignore")

    def many_sizes():
        with open_client() as ws:
            for size in (0, 1, 16, 127, 128, 129, 1000, 4096, 16_384, 65_535, 65_536, 131_072, 1 << 20):
                for message in (json_text(size), (bytes(range(256)) * (size // 256 + 1))[:size], os.urandom(size)):
                    ws.send(message)
                    expect_equal(ws.recv(timeout=TIMEOUT), message, f"compressed echo of {size}")

    def fragmented():
        with open_client() as ws:
            parts = [json_text(5000), json_text(3), json_text(70_000)]
            ws.send(parts)
            expect_equal(ws.recv(timeout=TIMEOUT), "".join(parts), "fragmented compressed echo")

    check("permessage-deflate negotiated by default", negotiated)
    check("compressed echo of text and binary, 0 B to 1 MiB", many_sizes)
    check("compressed fragmented text", fragmented)


def broadcast_checks(url):
    # ringws's default (`broadcast_include_sender`) delivers a message to every client, its sender too.
    def fan_out():
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT))
                       for _ in range(3)]
            for sender_index, sender in enumerate(clients):
                message = f"broadcast from client {sender_index} 😀"
                sender.send(message)
                for receiver_index, receiver in enumerate(clients):
                    expect_equal(receiver.recv(timeout=TIMEOUT), message, f"client {receiver_index}")

    def binary_fan_out():
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(connect(url, max_size=None, open_timeout=TIMEOUT)) for _ in range(2)]
            payload = os.urandom(100_000)
            clients[0].send(payload)
            for index, client in enumerate(clients):
                expect_equal(client.recv(timeout=TIMEOUT), payload, f"binary broadcast to client {index}")

    check("broadcast text to 3 clients", fan_out)
    check("broadcast 100 KB binary", binary_fan_out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--echo", required=True)
    parser.add_argument("--broadcast")
    parser.add_argument("--skip-broadcast", metavar="REASON", help="report the broadcast checks as skipped")
    args = parser.parse_args()
    echo_checks(args.echo)
    compression_checks(args.echo)
    skipped = 0
    if args.broadcast:
        broadcast_checks(args.broadcast)
    elif args.skip_broadcast:
        for name in ("broadcast text to 3 clients", "broadcast 100 KB binary"):
            print(f"SKIP python {name}: {args.skip_broadcast}", flush=True)
            skipped += 1
    passed = sum(results)
    failed = len(results) - passed
    print(f"python: {passed} passed, {failed} failed, {skipped} skipped", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
