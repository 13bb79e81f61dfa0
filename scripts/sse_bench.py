#!/usr/bin/env python3
"""The cost of an event stream (`GET /sse`, Server-Sent Events) next to a WebSocket's, in `--mode pubsub`.

Two measurements, each on fresh `ringws serve --mode pubsub --workers 1` servers (release build), for each
kind of subscriber:
  ws     a raw WebSocket subscriber (`/?topic=T`): gets the message itself in a frame;
  v1     a `ringws.v1` WebSocket subscriber (`/?topic=T`, subprotocol ringws.v1): gets the envelope in a frame;
  sse    an event stream (`/sse?topic=T`): gets `data: <envelope>` (no history: no `id:` line).

idle N (default 10000): resident memory per idle subscriber, with scripts/idle_rss.py's method: cold (a
  fresh server: VmRSS before and after N connections, each subscribed to one topic) and warm (the server
  first takes 3 x 1000 connections of the same kind, one publication to them, closed; then N; then one
  publication read by all N and 2.5 s later VmRSS again: idle subscribers must own nothing after it).
  `--idle-timeout 0`, so no keep-alive or ping runs meanwhile.

cpu N M (defaults 1000 2000): server CPU per delivery: N subscribers of one topic read by one thread of
  this script (selectors), a WebSocket publisher sends M publications of 64 bytes as fast as it can, and the
  server's utime + stime (/proc/PID/stat) from the first publication until every subscriber has received
  all M is divided by N x M. One warm-up publication first (it also gives each kind's bytes per delivery).

Usage: python3 scripts/sse_bench.py idle [N] [--kinds ws,sse] | cpu [N] [M] [--kinds ws,v1,sse]
       (env RINGWS=path to another ringws binary; default target/release/ringws)
User-space memory only (the kernel's socket memory is not in the process's RSS); CPU in clock ticks of the
server process (1/100 s): M x N must be large enough that the total is hundreds of ticks.
"""
import os
import selectors
import socket
import sys
import time

import ringws_proc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("RINGWS", os.path.join(ROOT, "target", "release", "ringws"))
TOPIC = "bench"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def option(name, default):
    args = sys.argv[1:]
    if name in args:
        return args[args.index(name) + 1]
    return default


def positional():
    out = []
    skip = False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg.startswith("--"):
            skip = True
        else:
            out.append(arg)
    return out


def read_head(s):
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            raise RuntimeError("server closed during the request")
        head += chunk
    return head


def subscriber(port, kind):
    """A connected, subscribed subscriber of `kind`; everything after its answer's head is its to read."""
    s = socket.create_connection(("127.0.0.1", port))
    if kind == "sse":
        s.sendall(f"GET /sse?topic={TOPIC} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
        head = read_head(s)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace"))
    else:
        protocol = "Sec-WebSocket-Protocol: ringws.v1\r\n" if kind == "v1" else ""
        s.sendall(f"GET /?topic={TOPIC} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n".encode())
        head = read_head(s)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(head.decode(errors="replace"))
    return s


def publisher(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    read_head(s)
    return s


def pub_frame(data):
    """A masked (zero key) text frame with `{"op":"pub","topic":TOPIC,"data":data}`."""
    payload = ('{"op":"pub","topic":"%s","data":"%s"}' % (TOPIC, data)).encode()
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return bytes([0x81]) + length + bytes(4) + payload


class Readers:
    """Reads every subscriber's bytes in this thread, counting them."""

    def __init__(self, socks):
        self.sel = selectors.DefaultSelector()
        self.got = {}
        for s in socks:
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ)
            self.got[s] = 0

    def until(self, done, timeout):
        deadline = time.monotonic() + timeout
        while not done(self.got):
            if time.monotonic() > deadline:
                raise RuntimeError("subscribers did not receive everything in time")
            for key, _ in self.sel.select(0.5):
                try:
                    data = key.fileobj.recv(1 << 18)
                except BlockingIOError:
                    continue
                if not data:
                    raise RuntimeError("the server closed a subscriber")
                self.got[key.fileobj] += len(data)

    def drain(self, quiet=0.3):
        """Reads until nothing came for `quiet` seconds."""
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            for key, _ in self.sel.select(0.05):
                try:
                    data = key.fileobj.recv(1 << 18)
                except BlockingIOError:
                    continue
                if data:
                    self.got[key.fileobj] += len(data)
                    last = time.monotonic()

    def close(self):
        for s in self.got:
            self.sel.unregister(s)
            s.close()


def start_server():
    server = ringws_proc.start([BIN, "serve", "--bind", "127.0.0.1", "--port", "0", "--workers", "1",
                                "--idle-timeout", "0", "--mode", "pubsub"])
    try:
        _, port = ringws_proc.listening_addr(server)
    except BaseException:
        ringws_proc.stop(server)
        raise
    return server, port


def memory_kib(pid):
    fields = ringws_proc.status_fields(pid, ("VmRSS", "RssAnon", "RssFile"))
    return fields["VmRSS"], fields.get("RssAnon", 0), fields.get("RssFile", 0)


def report(label, n, before, after):
    rss, anon, file = ((a - b) * 1024 / n for a, b in zip(after, before))
    print(f"  {label}: VmRSS {before[0]} -> {after[0]} KiB; bytes per idle subscriber: {rss:.0f} "
          f"(anonymous {anon:.0f}, file-backed {file:.0f})", flush=True)


def publish_and_read(port, readers, data="x" * 64):
    """One publication, read by every subscriber."""
    pub = publisher(port)
    readers.drain(0.2)
    before = dict(readers.got)
    pub.sendall(pub_frame(data))
    readers.until(lambda got: all(got[s] > before[s] for s in got), 30)
    readers.drain(0.2)
    pub.close()


def idle(n, kinds):
    print(f"idle subscribers: {n} of one topic; server {BIN}", flush=True)
    for kind in kinds:
        print(f"{kind}:", flush=True)
        server, port = start_server()
        try:
            time.sleep(0.5)
            before = memory_kib(server.pid)
            conns = [subscriber(port, kind) for _ in range(n)]
            time.sleep(1.0)
            report("cold (first connections of a fresh server)", n, before, memory_kib(server.pid))
            for s in conns:
                s.close()
        finally:
            ringws_proc.stop(server)
        server, port = start_server()
        try:
            for _ in range(3):
                warm = Readers([subscriber(port, kind) for _ in range(1000)])
                publish_and_read(port, warm)
                warm.close()
                time.sleep(0.5)
            before = memory_kib(server.pid)
            conns = Readers([subscriber(port, kind) for _ in range(n)])
            time.sleep(1.0)
            report("warm (after 3 x 1000 connections)", n, before, memory_kib(server.pid))
            publish_and_read(port, conns)
            time.sleep(2.5)
            report(f"warm, after one publication to all {n}", n, before, memory_kib(server.pid))
            conns.close()
        finally:
            ringws_proc.stop(server)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu(n, m, kinds):
    hz = os.sysconf("SC_CLK_TCK")
    print(f"CPU per delivery: {n} subscribers of one topic, {m} publications of 64 bytes; server {BIN}",
          flush=True)
    for kind in kinds:
        server, port = start_server()
        try:
            readers = Readers([subscriber(port, kind) for _ in range(n)])
            readers.drain(0.3)
            start = dict(readers.got)
            publish_and_read(port, readers)
            per = {s: readers.got[s] - start[s] for s in readers.got}
            size = max(per.values())
            base = dict(readers.got)
            pub = publisher(port)
            frames = pub_frame("x" * 64) * m
            t0 = cpu_ticks(server.pid)
            wall = time.monotonic()
            pub.sendall(frames)
            readers.until(lambda got: all(got[s] - base[s] >= m * per[s] for s in got), 300)
            wall = time.monotonic() - wall
            ticks = cpu_ticks(server.pid) - t0
            deliveries = n * m
            print(f"{kind}: {size} bytes per delivery; server CPU {ticks / hz:.2f} s for {deliveries} "
                  f"deliveries = {ticks / hz / deliveries * 1e9:.0f} ns per delivery "
                  f"({deliveries / wall / 1e6:.2f} M deliveries/s wall, {wall:.2f} s)", flush=True)
            pub.close()
            readers.close()
        finally:
            ringws_proc.stop(server)


def main():
    args = positional()
    if not args or args[0] not in ("idle", "cpu"):
        sys.exit(__doc__)
    if not os.path.exists(BIN):
        sys.exit(f"sse_bench.py: no server binary at {BIN} (cargo build --release, or RINGWS=...)")
    if args[0] == "idle":
        n = int(args[1]) if len(args) > 1 else 10000
        if n < 1000:
            sys.exit("sse_bench.py: idle needs 1000 connections or more for a per-connection figure")
        idle(n, option("--kinds", "ws,sse").split(","))
    else:
        n = int(args[1]) if len(args) > 1 else 1000
        m = int(args[2]) if len(args) > 2 else 2000
        cpu(n, m, option("--kinds", "ws,v1,sse").split(","))


if __name__ == "__main__":
    main()
