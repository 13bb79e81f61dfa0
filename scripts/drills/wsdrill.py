"""Raw WebSocket and HTTP clients for scripts/drills.sh: each subcommand plays one attacker or bystander
against a server on loopback and prints its figures as `key=value` words on one line.

Owns the client side of the drills only: it starts no server and stops none (the one exception, `sigterm`,
sends SIGTERM to the PID it is given, the server the drill started). Every wait is bounded. Standard library
only. TLS clients (`--tls`, `tls_slowloris`, `tls_flood`) accept any certificate: the drills' servers use a
throwaway self-signed one.
"""

import argparse
import errno
import os
import selectors
import signal
import socket
import ssl
import struct
import sys
import time

REQUEST = (
    "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def addr(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


def frame(opcode, payload, fin=True, length=None):
    """A masked client frame (mask 0 keeps the payload as is); `length` overrides the header's length."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + b"\0\0\0\0" + payload


def parse_frames(buf):
    """(frames, rest): complete server frames [(opcode, payload)] at the start of buf."""
    out = []
    view = memoryview(buf)
    start = 0
    while len(buf) - start >= 2:
        n = buf[start + 1] & 0x7F
        pos = start + 2
        if n == 126:
            if len(buf) < pos + 2:
                break
            n = struct.unpack("!H", view[pos:pos + 2])[0]
            pos += 2
        elif n == 127:
            if len(buf) < pos + 8:
                break
            n = struct.unpack("!Q", view[pos:pos + 8])[0]
            pos += 8
        if len(buf) < pos + n:
            break
        out.append((buf[start] & 0x0F, bytes(view[pos:pos + n])))
        start = pos + n
    return out, bytes(view[start:])


def close_code(payload):
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005


# Linux's IP_BIND_ADDRESS_NO_PORT (the socket module names it from Python 3.12 on).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def tls_context():
    """A client context that accepts any certificate (the drills' servers use throwaway self-signed ones)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_hello(ctx):
    """The bytes of one fresh ClientHello (its own random and key share), as the first flight of a client."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def open_ws(host, port, path="/", timeout=5.0, rcvbuf=None, tls=False):
    """(socket, status, leftover bytes): a handshake (over TLS with `tls`); status 0 when the connection ended
    first."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect((host, port))
    if tls:
        try:
            s = tls_context().wrap_socket(s)
        except OSError:
            return s, 0, b""
    s.sendall(REQUEST.format(path=path, host=host, port=port).encode())
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                return s, 0, b""
            data += chunk
    except OSError:
        return s, 0, b""
    head, _, rest = data.partition(b"\r\n\r\n")
    return s, int(head.split()[1]), rest


def pct(values, p):
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p / 100))]


def cmd_rtt(a):
    """One bystander: sequential echo round trips for --seconds; p50/p99 in microseconds. Not getting its
    101 counts as a failure."""
    host, port = addr(a.addr)
    try:
        s, status, _ = open_ws(host, port, tls=a.tls)
    except OSError:
        s, status = None, 0
    rtts, fails, buf = [], 0 if status == 101 else 1, b""
    if s is not None:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = b"x" * a.size
    end = time.monotonic() + a.seconds
    while status == 101 and time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            s.sendall(frame(2, payload))
            got = None
            while got is None:
                frames, buf = parse_frames(buf)
                for op, p in frames:
                    if op == 2:
                        got = p
                if got is None:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise OSError("closed")
                    buf += chunk
        except OSError:
            fails += 1
            break
        rtts.append((time.perf_counter() - t0) * 1e6)
        time.sleep(a.gap)
    print(f"status={status} round_trips={len(rtts)} failures={fails} "
          f"p50_us={pct(rtts, 50):.0f} p99_us={pct(rtts, 99):.0f}", flush=True)


def cmd_connects(a):
    """New connections one after another for --seconds (--gap apart, over TLS with --tls), each through its
    (TLS and) WebSocket handshake to a 101, no step taking over --timeout seconds: how many, how many failed,
    and their connect times in milliseconds."""
    host, port = addr(a.addr)
    times, fails = [], 0
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        s = None
        try:
            s = socket.create_connection((host, port), timeout=a.timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if a.tls:
                s = tls_context().wrap_socket(s)
            s.sendall(REQUEST.format(path="/", host=host, port=port).encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            ok = data.startswith(b"HTTP/1.1 101 ")
        except OSError:
            ok = False
        if s is not None:
            s.close()
        if ok:
            times.append((time.perf_counter() - t0) * 1e3)
        else:
            fails += 1
        time.sleep(a.gap)
    print(f"connects={len(times) + fails} failures={fails} p50_ms={pct(times, 50):.1f} "
          f"max_ms={max(times, default=0.0):.1f}", flush=True)


def collect_closes(socks, seconds, reply=False):
    """Reads every socket for up to `seconds` (or until all ended): {index: (close code, when)}."""
    sel = selectors.DefaultSelector()
    bufs = {}
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        bufs[i] = b""
    got = {}
    start = time.monotonic()
    end = start + seconds
    while len(got) < len(socks) and time.monotonic() < end:
        for key, _ in sel.select(timeout=0.1):
            i = key.data
            try:
                chunk = key.fileobj.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                got.setdefault(i, (0, time.monotonic() - start))
                sel.unregister(key.fileobj)
                continue
            frames, bufs[i] = parse_frames(bufs[i] + chunk)
            for op, p in frames:
                if op == 8 and i not in got:
                    got[i] = (close_code(p), time.monotonic() - start)
                    if reply:
                        try:
                            key.fileobj.send(frame(8, p[:2]))
                        except OSError:
                            pass
    return got


def cmd_incomplete(a):
    """--conns connections each send a non-final binary fragment of --size bytes, then a ping; counts the
    close codes seen within --hold seconds (0 = ended without a close frame)."""
    host, port = addr(a.addr)
    socks, refused = [], 0
    chunk = b"\0" * (1 << 20)
    for _ in range(a.conns):
        s, status, _ = open_ws(host, port)
        if status != 101:
            refused += 1
            continue
        try:
            s.sendall(frame(2, b"", fin=False, length=a.size))
            left = a.size
            while left > 0:
                n = min(left, len(chunk))
                s.sendall(chunk[:n])
                left -= n
            s.sendall(frame(9, b"p"))
        except OSError:
            pass
        socks.append(s)
    print("ready", flush=True)
    got = collect_closes(socks, a.hold)
    codes = {}
    for code, _ in got.values():
        codes[code] = codes.get(code, 0) + 1
    words = " ".join(f"closed_{c}={n}" for c, n in sorted(codes.items()))
    print(f"sent={len(socks)} refused={refused} still_open={len(socks) - len(got)} {words}".strip(), flush=True)


def cmd_slowloris(a):
    """--conns connections send an upgrade request one byte each --interval seconds; reports how many the
    server ended and the latest end (seconds after the first byte)."""
    host, port = addr(a.addr)
    req = REQUEST.format(path="/", host=host, port=port).encode()
    socks = []
    for _ in range(a.conns):
        s = socket.create_connection((host, port), timeout=5)
        s.setblocking(False)
        socks.append(s)
    pos = [0] * len(socks)
    ended = {}
    start = time.monotonic()
    while len(ended) < len(socks) and time.monotonic() - start < a.max_wait:
        for i, s in enumerate(socks):
            if i in ended:
                continue
            try:
                data = s.recv(4096)
                if not data or b" 408 " in data[:20] or b"HTTP/1.1 4" in data[:12]:
                    ended[i] = time.monotonic() - start
                    continue
            except BlockingIOError:
                pass
            except OSError:
                ended[i] = time.monotonic() - start
                continue
            if pos[i] < len(req) - 1:
                try:
                    s.send(req[pos[i]:pos[i] + 1])
                    pos[i] += 1
                except OSError:
                    ended[i] = time.monotonic() - start
        time.sleep(a.interval)
    latest = max(ended.values()) if ended else 0.0
    earliest = min(ended.values()) if ended else 0.0
    print(f"conns={len(socks)} ended={len(ended)} earliest_s={earliest:.2f} latest_s={latest:.2f} "
          f"bytes_sent_max={max(pos)}", flush=True)


def cmd_tls_slowloris(a):
    """--conns TLS connections, two kinds alternating: `hello` ones send a ClientHello one byte each --interval
    seconds (the TLS handshake never finishes); `request` ones finish the TLS handshake, then send the upgrade
    request one byte (one TLS record) each --interval seconds. Reports per kind how many the server ended and,
    over both, the earliest and latest end, in seconds after each connection opened."""
    host, port = addr(a.addr)
    ctx = tls_context()
    req = REQUEST.format(path="/", host=host, port=port).encode()
    conns = []
    for i in range(a.conns):
        raw = socket.create_connection((host, port), timeout=5)
        raw.setblocking(False)
        c = {"kind": "hello" if i % 2 == 0 else "request", "start": time.monotonic(), "pos": 0, "tls": False}
        if c["kind"] == "hello":
            c["sock"], c["data"] = raw, client_hello(ctx)
        else:
            c["sock"], c["data"] = ctx.wrap_socket(raw, do_handshake_on_connect=False), req
        conns.append(c)
    ended, answered = {}, 0
    start = time.monotonic()
    while len(ended) < len(conns) and time.monotonic() - start < a.max_wait:
        for i, c in enumerate(conns):
            if i in ended:
                continue
            s = c["sock"]
            try:
                if c["kind"] == "request" and not c["tls"]:
                    s.do_handshake()
                    c["tls"] = True
                data = s.recv(4096)
                # the server answers nothing but its verdict (a 408, or for a ClientHello an alert) and EOF
                if data:
                    answered += 1
                ended[i] = time.monotonic() - c["start"]
                continue
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                pass
            except OSError:
                ended[i] = time.monotonic() - c["start"]
                continue
            if (c["kind"] == "hello" or c["tls"]) and c["pos"] < len(c["data"]) - 1:
                try:
                    s.send(c["data"][c["pos"]:c["pos"] + 1])
                    c["pos"] += 1
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    pass
                except OSError:
                    ended[i] = time.monotonic() - c["start"]
        time.sleep(a.interval)
    for c in conns:
        c["sock"].close()
    hello = [i for i, c in enumerate(conns) if c["kind"] == "hello"]
    request = [i for i, c in enumerate(conns) if c["kind"] == "request"]
    times = list(ended.values())
    print(f"conns={len(conns)} hello={len(hello)} hello_ended={sum(1 for i in hello if i in ended)} "
          f"request={len(request)} tls_done={sum(1 for i in request if conns[i]['tls'])} "
          f"request_ended={sum(1 for i in request if i in ended)} answered={answered} "
          f"earliest_s={min(times, default=0.0):.2f} latest_s={max(times, default=0.0):.2f} "
          f"hello_bytes_max={max((conns[i]['pos'] for i in hello), default=0)} "
          f"request_bytes_max={max((conns[i]['pos'] for i in request), default=0)}", flush=True)


def cmd_tls_flood(a):
    """For --seconds, --conns concurrent clients start TLS handshakes as fast as they can and abandon them:
    each connects (from 127.0.0.2..9, so that client ports last), sends a fresh ClientHello (from a pool), then
    alternately closes at once (`abandoned`: the server reads a ClientHello and EOF) or waits for the server's
    first flight and resets the connection (`reset`: the server did its key exchange and signature). A reset
    one that gets no reply within 2 s is closed and counted `stalled`. --kind abandon or reset: that kind
    only."""
    host, port = addr(a.addr)
    ctx = tls_context()
    hellos = [client_hello(ctx) for _ in range(64)]
    sel = selectors.DefaultSelector()
    counts = {"started": 0, "abandoned": 0, "reset": 0, "stalled": 0, "no_reply": 0, "connect_errors": 0, "errors": 0}
    seq = [0]

    def start_one():
        n = seq[0]
        seq[0] += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            # The port is chosen at connect, for the whole 4-tuple: a bind that chose it alone would search
            # the ports the previous runs' closed connections still hold in TIME_WAIT, at a cost of CPU
            # that slowed the flood to a few hundred handshakes a second on its own.
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((f"127.0.0.{2 + n % 8}", 0))
        except OSError:
            pass
        rc = s.connect_ex((host, port))
        if rc not in (0, errno.EINPROGRESS):
            counts["connect_errors"] += 1
            s.close()
            return
        counts["started"] += 1
        sel.register(s, selectors.EVENT_WRITE, {"n": n, "sent": False, "t": time.monotonic()})

    def finish(s, what):
        counts[what] += 1
        sel.unregister(s)
        s.close()

    end = time.monotonic() + a.seconds
    for _ in range(a.conns):
        start_one()
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=0.05):
            s, st = key.fileobj, key.data
            if not st["sent"]:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    finish(s, "connect_errors")
                    start_one()
                    continue
                try:
                    s.send(hellos[st["n"] % len(hellos)])
                except OSError:
                    finish(s, "errors")
                    start_one()
                    continue
                st["sent"] = True
                if a.kind == "abandon" or (a.kind == "both" and st["n"] % 2 == 0):
                    # a plain close (FIN after the ClientHello), not the reset SO_LINGER 0 would send
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 0, 0))
                    finish(s, "abandoned")
                    start_one()
                else:
                    sel.modify(s, selectors.EVENT_READ, st)
                continue
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            finish(s, "reset" if data else "no_reply")
            start_one()
        now = time.monotonic()
        for key in list(sel.get_map().values()):
            if now - key.data["t"] > 2.0:
                finish(key.fileobj, "stalled")
                start_one()
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    words = " ".join(f"{k}={v}" for k, v in counts.items())
    print(f"{words} per_s={(counts['abandoned'] + counts['reset']) / a.seconds:.0f}", flush=True)


def cmd_hold(a):
    """Opens --conns WebSocket connections (counts statuses), holds them --hold seconds, closes them."""
    host, port = addr(a.addr)
    statuses = {}
    socks = []
    for _ in range(a.conns):
        try:
            s, status, _ = open_ws(host, port)
        except OSError:
            status, s = -1, None
        statuses[status] = statuses.get(status, 0) + 1
        if status == 101:
            socks.append(s)
        elif s is not None:
            s.close()
    words = " ".join(f"status_{k}={v}" for k, v in sorted(statuses.items()))
    print(f"{words} ready", flush=True)
    time.sleep(a.hold)
    for s in socks:
        try:
            s.send(frame(8, struct.pack("!H", 1000)))
        except OSError:
            pass
        s.close()
    print("released", flush=True)


def cmd_sigterm(a):
    """--conns connections with echo traffic in flight; SIGTERM to --pid; every close code and when it came
    (seconds after the signal)."""
    host, port = addr(a.addr)
    socks = []
    for _ in range(a.conns):
        s, status, _ = open_ws(host, port)
        if status == 101:
            socks.append(s)
    for s in socks:
        s.sendall(frame(2, b"y" * 512) * 8)
    os.kill(a.pid, signal.SIGTERM)
    got = collect_closes(socks, a.max_wait, reply=True)
    n1001 = sum(1 for c, _ in got.values() if c == 1001)
    latest = max((t for _, t in got.values()), default=0.0)
    print(f"conns={len(socks)} got_1001={n1001} other_close={len(got) - n1001} "
          f"no_close={len(socks) - len(got)} latest_s={latest:.2f}", flush=True)


def http(host, port, method, path, body=b"", headers=None):
    s = socket.create_connection((host, port), timeout=5)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}",
             "Connection: close"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    return (int(head.split()[1]) if head else 0), rest


def cmd_publish(a):
    """--subs subscribers of --topic; --posts POST /publish (with --token if given); statuses and how many
    messages the subscribers received."""
    host, port = addr(a.addr)
    subs = []
    for _ in range(a.subs):
        s, status, _ = open_ws(host, port, path=f"/?topic={a.topic}")
        if status == 101:
            subs.append(s)
    time.sleep(0.3)
    headers = {"Authorization": f"Bearer {a.token}"} if a.token else {}
    statuses = {}
    t0 = time.monotonic()
    for i in range(a.posts):
        status, _ = http(host, port, "POST", f"/publish?topic={a.topic}", f"m{i}".encode(), headers)
        statuses[status] = statuses.get(status, 0) + 1
    post_s = time.monotonic() - t0
    delivered = 0
    sel = selectors.DefaultSelector()
    bufs = {}
    for i, s in enumerate(subs):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        bufs[i] = b""
    end = time.monotonic() + a.wait
    while time.monotonic() < end and delivered < a.subs * a.posts:
        for key, _ in sel.select(timeout=0.1):
            try:
                chunk = key.fileobj.recv(1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            frames, bufs[key.data] = parse_frames(bufs[key.data] + chunk)
            delivered += sum(1 for op, _ in frames if op in (1, 2))
    words = " ".join(f"status_{k}={v}" for k, v in sorted(statuses.items()))
    print(f"subs={len(subs)} posts={a.posts} {words} posts_per_s={a.posts / post_s:.0f} "
          f"delivered={delivered}", flush=True)


def cmd_bodies(a):
    """--conns connections each send `POST /publish` (with --token) announcing a body of --length bytes and
    then --send bytes of it, and never the rest; how each ended: its status (0: closed without one) and when,
    within --max-wait seconds."""
    host, port = addr(a.addr)
    head = (f"POST /publish?topic=drill HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {a.length}\r\n"
            f"Authorization: Bearer {a.token}\r\n\r\n").encode()
    body = b"x" * a.send
    socks = []
    t0 = time.monotonic()
    for _ in range(a.conns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect((host, port))
        except OSError:
            s.close()
            continue
        try:
            s.sendall(head + body)
        except OSError:
            pass  # answered and closed before the body was out: its answer is read below
        s.setblocking(False)
        socks.append(s)
    statuses = {}
    ended = []
    bufs = {s: b"" for s in socks}
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    print("ready", flush=True)
    end = t0 + a.max_wait
    open_ = len(socks)
    while open_ and time.monotonic() < end:
        for key, _ in sel.select(timeout=0.05):
            s = key.fileobj
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if chunk:
                bufs[s] += chunk
                continue
            sel.unregister(s)
            open_ -= 1
            data = bufs[s]
            status = int(data.split()[1]) if data.startswith(b"HTTP/1.1 ") else 0
            statuses[status] = statuses.get(status, 0) + 1
            ended.append(time.monotonic() - t0)
            s.close()
    for s in list(bufs):
        try:
            s.close()
        except OSError:
            pass
    words = " ".join(f"status_{k}={v}" for k, v in sorted(statuses.items()))
    print(f"conns={len(socks)} {words} still_open={open_} "
          f"first_end_s={min(ended, default=0):.2f} last_end_s={max(ended, default=0):.2f}", flush=True)


def cmd_noread(a):
    """--conns connections (small receive buffer) that never read after the handshake; after --hold
    seconds, how many the server ended."""
    host, port = addr(a.addr)
    socks = []
    for _ in range(a.conns):
        s, status, _ = open_ws(host, port, rcvbuf=4096)
        if status == 101:
            socks.append(s)
    print("ready", flush=True)
    time.sleep(a.hold)
    got = collect_closes(socks, 5.0)
    print(f"noread={len(socks)} ended={len(got)}", flush=True)


def cmd_metric(a):
    """The sum of every sample of metric --name on GET /metrics (only the samples whose labels hold --label,
    e.g. `reason="timeout"`, if given)."""
    host, port = addr(a.addr)
    _, body = http(host, port, "GET", "/metrics")
    total = 0.0
    for line in body.decode(errors="replace").splitlines():
        if line.startswith(a.name) and (line[len(a.name):len(a.name) + 1] in (" ", "{")) \
                and a.label in line.rpartition(" ")[0]:
            total += float(line.split()[-1])
    print(int(total))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rtt")
    r.add_argument("addr"); r.add_argument("--seconds", type=float, default=3)
    r.add_argument("--size", type=int, default=64); r.add_argument("--gap", type=float, default=0.001)
    r.add_argument("--tls", action="store_true")
    r = sub.add_parser("connects")
    r.add_argument("addr"); r.add_argument("--seconds", type=float, default=3)
    r.add_argument("--gap", type=float, default=0.1); r.add_argument("--timeout", type=float, default=5)
    r.add_argument("--tls", action="store_true")
    r = sub.add_parser("incomplete")
    r.add_argument("addr"); r.add_argument("--conns", type=int, default=16)
    r.add_argument("--size", type=int, default=15 << 20); r.add_argument("--hold", type=float, default=5)
    r = sub.add_parser("slowloris")
    r.add_argument("addr"); r.add_argument("--conns", type=int, default=200)
    r.add_argument("--interval", type=float, default=0.5); r.add_argument("--max-wait", type=float, default=20)
    r = sub.add_parser("tls_slowloris")
    r.add_argument("addr"); r.add_argument("--conns", type=int, default=200)
    r.add_argument("--interval", type=float, default=0.1); r.add_argument("--max-wait", type=float, default=20)
    r = sub.add_parser("tls_flood")
    r.add_argument("addr"); r.add_argument("--conns", type=int, default=64)
    r.add_argument("--seconds", type=float, default=5)
    r.add_argument("--kind", choices=["both", "abandon", "reset"], default="both")
    r = sub.add_parser("hold")
    r.add_argument("addr"); r.add_argument("--conns", type=int, default=10)
    r.add_argument("--hold", type=float, default=3)
    r = sub.add_parser("sigterm")
    r.add_argument("addr"); r.add_argument("--conns", type=int, default=100)
    r.add_argument("--pid", type=int, required=True); r.add_argument("--max-wait", type=float, default=10)
    r = sub.add_parser("publish")
    r.add_argument("addr"); r.add_argument("--subs", type=int, default=10)
    r.add_argument("--posts", type=int, default=200); r.add_argument("--token", default="")
    r.add_argument("--topic", default="drill"); r.add_argument("--wait", type=float, default=3)
    r = sub.add_parser("bodies")
    r.add_argument("addr"); r.add_argument("--conns", type=int, default=100)
    r.add_argument("--length", type=int, default=65536); r.add_argument("--send", type=int, default=65535)
    r.add_argument("--token", default=""); r.add_argument("--max-wait", type=float, default=10)
    r = sub.add_parser("noread")
    r.add_argument("addr"); r.add_argument("--conns", type=int, default=10)
    r.add_argument("--hold", type=float, default=5)
    r = sub.add_parser("metric")
    r.add_argument("addr"); r.add_argument("--name", required=True); r.add_argument("--label", default="")
    a = p.parse_args()
    globals()["cmd_" + a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
