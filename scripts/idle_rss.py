#!/usr/bin/env python3
"""Measures the server's resident memory per idle WebSocket connection, from a cold start and warm.

Two servers in turn, each `ringws serve --mode broadcast --workers 1` (release build):

- cold: a fresh server; VmRSS is read once it listens, then N idle WebSocket connections are opened (full
  handshake each) and it is read again. Everything the first N connections make the server touch counts:
  the connection table and timer wheel, the receive buffers the handshakes land in, the allocator's
  arena, code run for the first time. This is what a server that has just started pays.
- warm: a second fresh server is warmed up first (1000 connections opened, one broadcast to them,
  closed; three times, so the receive buffers and pools are touched once), then VmRSS is read, N idle
  connections are opened and it is read again. Then one connection sends a 100-byte message, every other
  connection reads the broadcast, and 2.5 s later VmRSS is read a third time: idle connections must own no
  buffers after activity either, so the figure after the broadcast should stay close to the idle one.

Each figure is the VmRSS difference divided by N, with the same difference split into anonymous memory
(RssAnon: heap and mappings) and file-backed pages (RssFile: the binary's code and data paged in), and
below it by mapping (scripts/scale/smaps.py): the allocator's arenas (`heap`), mappings of their own
(`large`: the connection table, the timer wheel, the receive buffers; each listed with its size), code.
User-space memory only: the kernel's socket memory is not in the process's RSS.

Usage: python3 scripts/idle_rss.py [N=10000] [--tls] [--deflate | --context] [--cold-only | --warm-only]
       (env RINGWS=path to another ringws binary)
N below 1000 is refused: the figure would be noise (see MIN_N).

With --tls the server runs with a self-signed test certificate (scripts/interop/test_cert.py) and every
connection is a wss:// one (TLS handshake, then the upgrade), so the figures include the TLS state.

With --deflate every connection offers permessage-deflate as Chrome does (`permessage-deflate;
client_max_window_bits`) and must get it agreed (the 101 answer is checked); the broadcast is then 1000
bytes, above the compression threshold, so that it goes out compressed (RSV1) and the figure after it
includes whatever compressing for the idle connections left behind.

With --context (implies --deflate) the server runs `--compression context --mode echo`: in place of the
broadcast (which such connections get plain), every connection sends one 1000-byte message and reads its
compressed echo, so each then owns its compressor, and the last figure is the cost of an idle connection
that has one.
"""
import os
import socket
import subprocess
import ssl
import sys
import tempfile
import time

import ringws_proc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "scale"))
import smaps  # noqa: E402  (scripts/scale/smaps.py: RSS growth by mapping)

FLAGS = ("--tls", "--deflate", "--context", "--cold-only", "--warm-only")
ARGS = [a for a in sys.argv[1:] if a not in FLAGS]
COLD = "--warm-only" not in sys.argv[1:]
WARM = "--cold-only" not in sys.argv[1:]
TLS = "--tls" in sys.argv[1:]
CONTEXT_MODE = "--context" in sys.argv[1:]
DEFLATE = "--deflate" in sys.argv[1:] or CONTEXT_MODE
N = int(ARGS[0]) if ARGS else 10000
# Below this the figure means nothing: VmRSS moves in whole pages, the warm-up's 1000 connections leave the
# slab, the wheel and the allocator holding room for more than N, and a few KiB of noise divided by a few
# hundred connections can even come out negative.
MIN_N = 1000
CONTEXT = None
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("RINGWS", os.path.join(ROOT, "target", "release", "ringws"))
REQUEST = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
           + (b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if DEFLATE else b"")
           + b"\r\n")
# The broadcast of the check: below the compression threshold (128 B) without --deflate, above it with.
BROADCAST_SIZE = 1000 if DEFLATE else 100


def open_ws(port):
    s = socket.create_connection(("127.0.0.1", port))
    if CONTEXT is not None:
        s = CONTEXT.wrap_socket(s, server_hostname="localhost")
    s.sendall(REQUEST)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("server closed during handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.decode(errors="replace"))
    if DEFLATE and b"permessage-deflate" not in head.lower():
        raise RuntimeError("permessage-deflate was not agreed: " + head.decode(errors="replace"))
    return s


def recv_exactly(s, n):
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            raise RuntimeError("server closed a subscriber")
        got += chunk
    return got


def broadcast_once(conns):
    """The first connection sends BROADCAST_SIZE zero bytes; every other one must receive them in one
    binary frame (compressed, RSV1 set, with --deflate; the bytes are masked with a zero key)."""
    n = BROADCAST_SIZE
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    conns[0].sendall(bytes([0x82]) + length + bytes(4) + bytes(n))
    expected = 0xC2 if DEFLATE else 0x82
    for s in conns[1:]:
        first, second = recv_exactly(s, 2)
        size = second & 0x7F
        if size == 126:
            size = int.from_bytes(recv_exactly(s, 2), "big")
        payload = recv_exactly(s, size)
        if first != expected or (not DEFLATE and payload != bytes(n)) or (DEFLATE and size >= n):
            raise RuntimeError(f"unexpected frame {first:#x} of {size} bytes")


def echo_each(conns, n):
    """--context: every connection sends n zero bytes and must read them back in one binary frame,
    compressed (its compressor is made then) when n is at or above the threshold, plain below it."""
    compressed = n >= 128
    for s in conns:
        length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
        s.sendall(bytes([0x82]) + length + bytes(4) + bytes(n))
        first, second = recv_exactly(s, 2)
        size = second & 0x7F
        if size == 126:
            size = int.from_bytes(recv_exactly(s, 2), "big")
        recv_exactly(s, size)
        if first != (0xC2 if compressed else 0x82) or (compressed and size >= n):
            raise RuntimeError(f"unexpected echo {first:#x} of {size} bytes")


def exercise(conns, warm_up=False):
    """The activity after which idle connections are measured again. With --context the warm-up echoes
    100 bytes (plain), so that no freed compressor leaves heap for the measured connections to reuse."""
    if CONTEXT_MODE:
        echo_each(conns, 100 if warm_up else BROADCAST_SIZE)
    else:
        broadcast_once(conns)


def memory_kib(pid):
    """(VmRSS, RssAnon, RssFile) of `pid`, in KiB."""
    fields = ringws_proc.status_fields(pid, ("VmRSS", "RssAnon", "RssFile"))
    return fields["VmRSS"], fields.get("RssAnon", 0), fields.get("RssFile", 0)


def reading(pid):
    """`memory_kib` and the mappings' resident bytes (`smaps.read`) of `pid`."""
    return memory_kib(pid), smaps.read(pid)


def report(label, before, after):
    """Prints the per-connection figure of `label` from two `reading`s and returns it."""
    (before, maps_before), (after, maps_after) = before, after
    rss, anon, file = ((a - b) * 1024 / N for a, b in zip(after, before))
    print(f"{label}: VmRSS {before[0]} -> {after[0]} KiB; "
          f"user-space bytes per idle connection: {rss:.0f} (anonymous {anon:.0f}, file-backed {file:.0f})")
    print(smaps.describe(maps_before, maps_after, N))
    return rss


def start_server(tls_args):
    server = ringws_proc.start(
        [BIN, "serve", "--bind", "127.0.0.1", "--port", "0", "--workers", "1", "--idle-timeout", "0",
         "--mode", "echo" if CONTEXT_MODE else "broadcast"]
        + (["--compression", "context"] if CONTEXT_MODE else []) + tls_args)
    try:
        _, port = ringws_proc.listening_addr(server)
    except BaseException:
        ringws_proc.stop(server)
        raise
    return server, port


def measure_cold(tls_args):
    """N connections to a fresh server: what a server that has just started pays for them."""
    server, port = start_server(tls_args)
    try:
        time.sleep(0.5)
        before = reading(server.pid)
        conns = [open_ws(port) for _ in range(N)]
        time.sleep(1.0)
        after = reading(server.pid)
        report("cold (first connections of a fresh server)", before, after)
        for s in conns:
            s.close()
    finally:
        ringws_proc.stop(server)


def measure_warm(tls_args):
    """N connections to a server warmed up first, then again after activity on them."""
    server, port = start_server(tls_args)
    try:
        # Warm-up: touch every receive buffer and fill the pools once.
        for _ in range(3):
            warm = [open_ws(port) for _ in range(1000)]
            exercise(warm, warm_up=True)
            for s in warm:
                s.close()
            time.sleep(0.5)
        before = reading(server.pid)
        conns = [open_ws(port) for _ in range(N)]
        time.sleep(1.0)
        after = reading(server.pid)
        report("warm (after a warm-up of 3 x 1000 connections)", before, after)
        exercise(conns)
        # The worker cuts its pools back after about a second without output.
        time.sleep(2.5)
        after_activity = reading(server.pid)
        what = ("one compressed echo to each of them" if CONTEXT_MODE
                else f"one broadcast to {N - 1} of them")
        report(f"warm, after {what}", before, after_activity)
        for s in conns:
            s.close()
    finally:
        ringws_proc.stop(server)


def main():
    global CONTEXT
    if N < MIN_N:
        sys.exit(f"idle_rss.py: {N} connections are too few for a per-connection figure (page-sized and "
                 f"allocator noise dominates, it can even come out negative): use {MIN_N} or more, "
                 f"10000 for the documented figure")
    if not (COLD or WARM):
        sys.exit("idle_rss.py: --cold-only and --warm-only exclude each other")
    if not os.path.exists(BIN):
        subprocess.run(["cargo", "build", "--release", "--bin", "ringws"], cwd=ROOT, check=True)
    tls_args = []
    if TLS:
        sys.path.insert(0, os.path.join(ROOT, "scripts", "interop"))
        from test_cert import make_cert
        cert_path, key_path = make_cert(tempfile.mkdtemp(prefix="ringws-idle-tls-"))
        CONTEXT = ssl.create_default_context(cafile=cert_path)
        tls_args = ["--tls-cert", cert_path, "--tls-key", key_path]
    print(f"idle {'wss://' if TLS else 'ws://'} connections: {N}"
          f"{', permessage-deflate agreed' if DEFLATE else ''}"
          f"{' (--compression context)' if CONTEXT_MODE else ''}; server {BIN}")
    if COLD:
        measure_cold(tls_args)
    if WARM:
        measure_warm(tls_args)


if __name__ == "__main__":
    main()
