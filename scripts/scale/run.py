#!/usr/bin/env python3
"""Connection scaling run: TARGET concurrent WebSocket connections to one ringws server on this machine.

Starts `ringws serve --mode broadcast` with enough worker rings for TARGET (each ring's fixed-file table
holds at most the open-file limit), then `ringws-loadgen connect` over several processes (each under the
open-file limit) and several source addresses (each good for about one ephemeral port range towards the
server's address). The connections are held with pings, then one connection broadcasts a message and every
connection must receive it.

Reports: connections reached, failures by reason, server RSS (VmRSS and RssAnon) at start / after the ramp /
idle / after the broadcast and user-space bytes per connection, load generator RSS, kernel socket memory
(/proc/net/sockstat, /proc/slabinfo, Slab in /proc/meminfo) before and at idle, connect rate, broadcast time:
as the load generator saw it (from the verify phase's command to its children until their counts came back)
and as the server saw it (its `timed fanout` lines at debug level: the first worker's start to the last send
completed, and the worker threads' CPU per delivery).

Bounded: a wall-clock limit computed from the plan, and a memory guard that stops the run (every process it
started, by PID or by the process group it created) when MemAvailable falls under the floor. Only reads
sysctls; it never changes them.

Usage: scripts/scale/run.py [TARGET] [--hold S] [--ping-interval S] [--json FILE] ...  (see --help)
"""
import argparse
import json
import math
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import ringws_proc  # noqa: E402  (scripts/ringws_proc.py: start, listening line, /proc/PID/status, stop)
import smaps  # noqa: E402  (scripts/scale/smaps.py: RSS growth by mapping)

# Other builds (an A/B of two commits): RINGWS=path, LOADGEN=path.
SERVER_BIN = os.environ.get("RINGWS", os.path.join(ROOT, "target", "release", "ringws"))
LOADGEN_BIN = os.environ.get("LOADGEN", os.path.join(ROOT, "target", "release", "ringws-loadgen"))
# The server logs one `timed fanout` line per worker for each delivery to 1,000 or more of its connections
# at this level (src/server/worker/fanout.rs); the run reads them to time the broadcast on the server.
SERVER_LOG_LEVEL = "info,ringws::server::worker::fanout=debug"
GIB = 1 << 30
# Slab caches that grow with TCP connections (both ends of a loopback connection are on this machine).
SLAB_CACHES = ["TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi", "eventpoll_pwq",
               "request_sock_TCP", "skbuff_head_cache", "skbuff_small_head", "kmalloc-64",
               "kmalloc-128", "kmalloc-192", "kmalloc-256", "kmalloc-512", "kmalloc-1k",
               "kmalloc-2k", "kmalloc-4k", "kmalloc-8k", "selinux_file_security", "lsm_file_cache",
               "tw_sock_TCP", "inet_peer"]
SYSCTLS = ["net/ipv4/ip_local_port_range", "net/core/somaxconn", "net/ipv4/tcp_max_syn_backlog",
           "net/ipv4/tcp_mem", "net/ipv4/tcp_rmem", "net/ipv4/tcp_wmem", "net/ipv4/tcp_max_orphans",
           "fs/file-max", "fs/nr_open", "fs/file-nr", "net/netfilter/nf_conntrack_max",
           "net/netfilter/nf_conntrack_count", "vm/max_map_count"]


def log(msg=""):
    print(msg, flush=True)


def read(path, default=None):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def meminfo():
    out = {}
    for line in (read("/proc/meminfo") or "").splitlines():
        name, rest = line.split(":", 1)
        out[name] = int(rest.split()[0]) * 1024
    return out


def proc_status(pid):
    """VmRSS, RssAnon, RssFile, VmHWM in bytes, and Threads (missing keys absent)."""
    fields = ringws_proc.status_fields(pid, ("VmRSS", "RssAnon", "RssFile", "VmHWM", "Threads"))
    return {name: value * (1024 if name != "Threads" else 1) for name, value in fields.items()}


def descendants(pid):
    """Every live descendant of pid (from /proc/*/stat parent links)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = read(f"/proc/{entry}/stat")
        if not stat:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def sockstat():
    out = {}
    for line in (read("/proc/net/sockstat") or "").splitlines():
        proto, _, rest = line.partition(":")
        fields = rest.split()
        out[proto] = {fields[i]: int(fields[i + 1]) for i in range(0, len(fields) - 1, 2)}
    return out


def slabinfo():
    """{cache: (active_objs, objsize)} or None when /proc/slabinfo is not readable."""
    text = read("/proc/slabinfo")
    if text is None:
        return None
    out = {}
    for line in text.splitlines()[2:]:
        f = line.split()
        if len(f) > 3:
            out[f[0]] = (int(f[1]), int(f[3]))
    return out


NETSTAT_COUNTERS = ["TCPMemoryPressures", "TCPAbortOnMemory", "TCPRcvQDrop", "PruneCalled",
                    "RcvPruned", "TCPBacklogDrop", "ListenOverflows", "ListenDrops", "TCPTimeouts",
                    "TCPRetransFail", "TCPAbortOnTimeout", "TCPSynRetrans"]


def netstat():
    """TcpExt counters of /proc/net/netstat (kernel TCP events: memory pressure, drops, timeouts)."""
    lines = (read("/proc/net/netstat") or "").splitlines()
    out = {}
    for head, values in zip(lines[0::2], lines[1::2]):
        if head.startswith("TcpExt:"):
            out.update(zip(head.split()[1:], (int(v) for v in values.split()[1:])))
    return out


def kernel_snapshot():
    mi = meminfo()
    return {"sockstat": sockstat(), "slab": slabinfo(), "Slab": mi.get("Slab", 0), "netstat": netstat(),
            "SUnreclaim": mi.get("SUnreclaim", 0), "MemAvailable": mi.get("MemAvailable", 0)}


def http_get(port, path, timeout=30.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace")


def metric_sums(text):
    """Sums each metric over its workers, keeping the other labels: {"name{reason=..}": value}."""
    sums = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^(\w+)(?:\{(.*)\})?\s+(\S+)$', line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        rest = ",".join(lbl for lbl in labels.split(",") if lbl and not lbl.startswith("worker="))
        key = f"{name}{{{rest}}}" if rest else name
        sums[key] = sums.get(key, 0) + value
    return sums


TIMED_FANOUT = re.compile(r"timed fanout")
FIELD = re.compile(r"\b(\w+)=(\d+)\b")


def timed_fanouts(path):
    """The server's `timed fanout` lines (one per worker and large delivery) as dicts of their fields."""
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if TIMED_FANOUT.search(line):
                    fields = {k: int(v) for k, v in FIELD.findall(line)}
                    if {"worker", "receivers", "arrived_us", "done_us"} <= fields.keys():
                        out.append(fields)
    except OSError:
        pass
    return out


def server_fanout(lines):
    """The broadcast as the server saw it, from the last `timed fanout` line of each worker: from the first
    worker's start (the worker that read the message) to the last send completed, and the worker threads'
    CPU time over their deliveries. None without lines."""
    last = {}
    for fields in lines:
        last[fields["worker"]] = fields
    if not last:
        return None
    rows = sorted(last.values(), key=lambda r: r["arrived_us"])
    t0 = rows[0]["arrived_us"]
    receivers = sum(r["receivers"] for r in rows)
    cpu_us = sum(r.get("cpu_us", 0) for r in rows)
    return {
        "workers": len(rows),
        "receivers": receivers,
        "drained": sum(r.get("drained", r["receivers"]) for r in rows),
        "ms": (max(r["done_us"] for r in rows) - t0) / 1000.0,
        "cpu_ms": cpu_us / 1000.0,
        "cpu_us_per_delivery": cpu_us / receivers if receivers else None,
        "per_worker": [{"worker": r["worker"], "receivers": r["receivers"],
                        "began_ms": (r["arrived_us"] - t0) / 1000.0,
                        "flushed_ms": (r["flushed_us"] - t0) / 1000.0 if r.get("flushed_us") else None,
                        "done_ms": (r["done_us"] - t0) / 1000.0, "cpu_ms": r.get("cpu_us", 0) / 1000.0}
                       for r in rows],
    }


def mib(n):
    return f"{n / (1 << 20):.1f} MiB"


class Stopper:
    """Processes this run started; stops them by PID (and the loadgen by the process group it leads)."""

    def __init__(self):
        self.server = None
        self.loadgen = None
        self.reason = None
        self.lock = threading.Lock()

    def abort(self, reason):
        with self.lock:
            if self.reason is None:
                self.reason = reason
                log(f"ABORT: {reason}")
        self.stop_loadgen(force=True)

    def stop_loadgen(self, force=False):
        p = self.loadgen
        if p is None or p.poll() is not None:
            return
        try:
            # The loadgen leader was started with setsid: its process group is it and its child processes.
            os.killpg(p.pid, signal.SIGKILL if force else signal.SIGTERM)
        except ProcessLookupError:
            pass

    def stop_server(self, timeout):
        """SIGTERM (graceful: close 1001 to everyone), then SIGKILL after timeout. Returns (rc, seconds)."""
        p = self.server
        if p is None or p.poll() is not None:
            return (p.returncode if p else None, 0.0)
        t0 = time.monotonic()
        returncode, killed = ringws_proc.stop(p, timeout)
        if killed:
            log(f"server did not exit {timeout:.0f}s after SIGTERM: SIGKILL (pid {p.pid})")
        return (returncode, time.monotonic() - t0)

    def stop_all(self):
        self.stop_loadgen(force=True)
        if self.loadgen is not None:
            try:
                self.loadgen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self.stop_server(timeout=30)


def environment(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    mi = meminfo()
    env = {"cpus": os.cpu_count(), "nofile_soft": soft, "nofile_hard": hard,
           "MemTotal": mi["MemTotal"], "MemAvailable": mi["MemAvailable"],
           "loadavg": read("/proc/loadavg"), "kernel": read("/proc/sys/kernel/osrelease"),
           "sysctl": {}, "sysctl_writable": {}}
    for name in SYSCTLS:
        path = f"/proc/sys/{name}"
        value = read(path)
        if value is not None:
            env["sysctl"][name.replace("/", ".")] = " ".join(value.split())
            env["sysctl_writable"][name.replace("/", ".")] = os.access(path, os.W_OK)
    return env


def plan(args, env):
    nofile = env["nofile_soft"]
    reserve = min(max(nofile // 64, 4), 256)
    per_ring = nofile - reserve  # the server's default --max-connections-per-worker
    # SO_REUSEPORT spreads by a hash of the 4-tuple: keep a margin so no ring fills up.
    workers = args.workers or max(1, math.ceil(args.target * (1 + args.ring_margin) / per_ring))
    per_proc = nofile - 1000  # stdio, epoll, pipes: stay well under the limit
    procs = args.procs or max(1, math.ceil(args.target / per_proc))
    lo, hi = (int(x) for x in env["sysctl"]["net.ipv4.ip_local_port_range"].split())
    ports = hi - lo + 1
    # One (source IP, server IP:port) pair gives at most `ports` connections, and connect() searches
    # the range for a free port, slower as it fills: use a quarter of it per source address.
    source_ips = args.source_ips or max(1, math.ceil(args.target / (ports * args.port_fill)))
    if source_ips > 250:
        raise SystemExit(f"{args.target} connections need {source_ips} source addresses (> 250)")
    ramp_timeout = args.ramp_timeout or max(60.0, args.target / 2000.0)
    # The loadgen waits drain_timeout + 3 s for the broadcast to reach everyone, then as long to close.
    # A broadcast to 1M connections took 72-101 s here (kernel TCP memory over tcp_mem, see SCALING.md).
    drain_timeout = args.drain_timeout or max(10.0, args.target / 8000.0)
    time_limit = args.time_limit or (ramp_timeout + args.hold + 2 * drain_timeout + 120.0)
    return {"per_ring": per_ring, "workers": workers, "procs": procs, "threads_per_proc": 1,
            "source_ips": source_ips, "ports_per_source": ports, "ramp_timeout": ramp_timeout,
            "drain_timeout": drain_timeout,
            "time_limit": time_limit}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", nargs="?", type=int, default=100_000, help="connections (default 100000)")
    ap.add_argument("--hold", type=float, default=60.0, help="seconds to hold the connections (60)")
    ap.add_argument("--ping-interval", type=float, default=20.0, help="client ping interval, s (20)")
    ap.add_argument("--server-idle-timeout", default="30s",
                    help="server --idle-timeout: it pings connections quiet for this long (30s)")
    ap.add_argument("--workers", type=int, default=0, help="server worker rings (default: from TARGET)")
    ap.add_argument("--procs", type=int, default=0, help="loadgen processes (default: from TARGET)")
    ap.add_argument("--source-ips", type=int, default=0, help="source addresses (default: from TARGET)")
    ap.add_argument("--ring-margin", type=float, default=0.15,
                    help="spare fraction of ring capacity for uneven SO_REUSEPORT spreading (0.15)")
    ap.add_argument("--port-fill", type=float, default=0.25,
                    help="fraction of the ephemeral port range used per source address (0.25)")
    ap.add_argument("--connect-rate", type=float, default=0.0, help="connects/s (0: as fast as possible)")
    ap.add_argument("--ramp-timeout", type=float, default=0.0, help="s (default max(60, TARGET/2000))")
    ap.add_argument("--drain-timeout", type=float, default=0.0,
                    help="loadgen --drain-timeout; the broadcast may take it + 3 s (default max(10, TARGET/8000))")
    ap.add_argument("--time-limit", type=float, default=0.0, help="wall-clock bound of the run, s")
    ap.add_argument("--max-use-gib", type=float, default=16.0,
                    help="abort when the machine's memory in use (MemTotal - MemAvailable) exceeds it (16)")
    ap.add_argument("--recv-buffers", type=int, default=64, help="server receive buffers per worker (64)")
    ap.add_argument("--recv-buffer-size", default="16KiB", help="server receive buffer size (16KiB)")
    ap.add_argument("--warmup", type=int, default=2000,
                    help="connections opened and closed before the warm baseline (2000; 0: none)")
    ap.add_argument("--json", help="write the summary as JSON to this file")
    ap.add_argument("--loadgen-log", default=None, help="file for the loadgen's live lines")
    args = ap.parse_args()

    env = environment(args)
    p = plan(args, env)
    mem_total = env["MemTotal"]
    floor = max(1 * GIB, mem_total - int(args.max_use_gib * GIB))
    log(f"== ringws scale run: {args.target} connections, started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    log(f"machine: {env['cpus']} CPUs, kernel {env['kernel']}, MemTotal {mem_total / GIB:.1f} GiB, "
        f"MemAvailable {env['MemAvailable'] / GIB:.1f} GiB, loadavg {env['loadavg']}")
    log(f"open-file limit: soft {env['nofile_soft']}, hard {env['nofile_hard']}")
    for name, value in env["sysctl"].items():
        w = "writable" if env["sysctl_writable"][name] else "read-only"
        log(f"  {name} = {value}  ({w}; not changed by this script)")
    log(f"plan: {p['workers']} server worker rings x {p['per_ring']} connections, {p['procs']} loadgen "
        f"processes x 1 thread, {p['source_ips']} source addresses (127.0.0.2..) x {p['ports_per_source']} "
        f"ephemeral ports, hold {args.hold:.0f}s with pings every {args.ping_interval:.0f}s, ramp timeout "
        f"{p['ramp_timeout']:.0f}s, time limit {p['time_limit']:.0f}s")
    # Rough need: ~4.6 KB of kernel memory per socket, two sockets per connection, plus user space.
    need = args.target * (2 * 4600 + 1500)
    log(f"memory guard: abort if available memory (MemAvailable minus the growth of reclaimable slab) < "
        f"{floor / GIB:.1f} GiB (use > {args.max_use_gib:.0f} GiB); "
        f"estimated need {need / GIB:.1f} GiB")
    if env["MemAvailable"] - need < floor:
        log("REFUSED: the estimated need does not fit above the memory floor")
        return 3
    for b in (SERVER_BIN, LOADGEN_BIN):
        if not os.path.exists(b):
            log(f"missing {b}: run `cargo build --release --workspace` first")
            return 2

    stopper = Stopper()
    summary = {"target": args.target, "env": env, "plan": p, "snapshots": {}}
    result = 1
    try:
        result = run(args, p, floor, stopper, summary)
    except KeyboardInterrupt:
        stopper.abort("interrupted")
    finally:
        stopper.stop_all()
        left = [pid for pid in ([stopper.server.pid] if stopper.server else [])
                + ([stopper.loadgen.pid] if stopper.loadgen else []) if os.path.exists(f"/proc/{pid}")
                and (read(f"/proc/{pid}/stat") or " Z").rsplit(")", 1)[1].split()[0] != "Z"]
        log(f"processes left running: {left if left else 'none'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1, default=str)
    return result


def run(args, p, floor, stopper, summary):
    snaps = summary["snapshots"]
    kernel_before = kernel_snapshot()
    server_cmd = [SERVER_BIN, "serve", "--mode", "broadcast", "--bind", "127.0.0.1", "--port", "0",
                  "--workers", str(p["workers"]), "--recv-buffers", str(args.recv_buffers),
                  "--recv-buffer-size", args.recv_buffer_size, "--handshake-timeout", "30s",
                  "--idle-timeout", args.server_idle_timeout, "--log-level", SERVER_LOG_LEVEL]
    log("server: " + " ".join(server_cmd))
    server_log_path = os.path.join(ROOT, "target", "scale-server.log")
    summary["server_log"] = server_log_path
    server_log = open(server_log_path, "w")
    stopper.server = ringws_proc.start(server_cmd, stderr=server_log)
    try:
        _, port = ringws_proc.listening_addr(stopper.server, timeout=120)
    except ringws_proc.StartupError as e:
        log(f"server did not start: {e} (see target/scale-server.log)")
        return 1
    time.sleep(0.5)
    spid = stopper.server.pid
    snaps["server_start"] = proc_status(spid)
    maps_start = smaps.read(spid)
    log(f"server pid {spid} on port {port}: VmRSS {mib(snaps['server_start']['VmRSS'])}, "
        f"RssAnon {mib(snaps['server_start']['RssAnon'])}")
    if args.warmup > 0:
        # Touch every worker's receive buffers and pools once (connections opened, one broadcast, closed)
        # so that a second baseline separates per-connection memory from one-time buffers.
        warm_cmd = [LOADGEN_BIN, "connect", "--url", f"ws://127.0.0.1:{port}/", "-c", str(args.warmup),
                    "--threads", "1", "--hold", "1", "--verify-broadcast", "--drain-timeout", "5", "-q"]
        stopper.loadgen = subprocess.Popen(warm_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                           start_new_session=True)
        try:
            stopper.loadgen.wait(timeout=120)
        except subprocess.TimeoutExpired:
            stopper.abort("warm-up did not finish in 120s")
            return 1
        time.sleep(2.0)
        snaps["server_warm"] = proc_status(spid)
        log(f"after a warm-up of {args.warmup} connections (closed again): VmRSS "
            f"{mib(snaps['server_warm']['VmRSS'])}, RssAnon {mib(snaps['server_warm']['RssAnon'])}")

    report_path = os.path.join(ROOT, "target", f"scale-{args.target}.json")
    loadgen_cmd = [LOADGEN_BIN, "connect", "--url", f"ws://127.0.0.1:{port}/", "-c", str(args.target),
                   "--procs", str(p["procs"]), "--threads", "1", "--source-ips", str(p["source_ips"]),
                   "--hold", str(args.hold), "--ping-interval", str(args.ping_interval),
                   "--verify-broadcast", "--ramp-timeout", str(p["ramp_timeout"]),
                   "--connect-timeout", "30", "--drain-timeout", str(p["drain_timeout"]), "--json", report_path]
    if args.connect_rate > 0:
        loadgen_cmd += ["--connect-rate", str(args.connect_rate)]
    log("loadgen: " + " ".join(loadgen_cmd))
    lg_log_path = args.loadgen_log or os.path.join(ROOT, "target", "scale-loadgen.log")
    lg_log = open(lg_log_path, "w")
    t_start = time.monotonic()
    stopper.loadgen = subprocess.Popen(loadgen_cmd, stdout=lg_log, stderr=subprocess.PIPE, text=True,
                                       start_new_session=True)
    state = {"phase": "ramp", "open": 0, "errors": 0, "phase_since": time.monotonic(), "t": 0.0}
    live = re.compile(r"\[\s*([\d.]+)s\]\s+(\w+)\s+open\s+(\d+)\s+\|\s+(\S+).*errors (\d+)")

    def follow():
        for text in stopper.loadgen.stderr:
            lg_log.write(text)
            lg_log.flush()
            mm = live.search(text)
            if mm:
                phase = mm.group(2)
                if phase != state["phase"]:
                    state["phase"], state["phase_since"] = phase, time.monotonic()
                state["open"], state["errors"], state["t"] = int(mm.group(3)), int(mm.group(5)), float(mm.group(1))
            elif text.strip():
                log(f"  loadgen: {text.rstrip()}")

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()

    reclaimable_at_start = meminfo()["SReclaimable"]

    def guarded_available():
        # MemAvailable counts reclaimable slab (dentries, socket inodes) as free, but the slab of open
        # sockets is pinned: count its growth since the start as used.
        mi = meminfo()
        return mi["MemAvailable"] - max(0, mi["SReclaimable"] - reclaimable_at_start)

    min_available = guarded_available()
    last_print = 0.0
    ramp_done_at = None
    while stopper.loadgen.poll() is None:
        time.sleep(0.5)
        now = time.monotonic()
        avail = guarded_available()
        min_available = min(min_available, avail)
        if avail < floor:
            stopper.abort(f"available memory {avail / GIB:.2f} GiB under the floor {floor / GIB:.2f} GiB "
                          f"at {state['open']} open connections")
            break
        if now - t_start > p["time_limit"]:
            stopper.abort(f"time limit {p['time_limit']:.0f}s reached at {state['open']} open connections")
            break
        if stopper.server.poll() is not None:
            stopper.abort(f"server exited with {stopper.server.returncode}")
            break
        phase = state["phase"]
        if phase == "run" and ramp_done_at is None:
            ramp_done_at = now
            snaps["server_after_ramp"] = proc_status(spid)
            snaps["open_after_ramp"] = state["open"]
        # Idle snapshot: half-way through the hold, every connection established and quiet.
        if phase == "run" and "server_idle" not in snaps and now - state["phase_since"] >= args.hold / 2:
            snaps["server_idle"] = proc_status(spid)
            snaps["open_idle"] = state["open"]
            if state["open"]:
                summary["idle_by_mapping"] = smaps.describe(maps_start, smaps.read(spid), state["open"])
            snaps["kernel_idle"] = kernel_snapshot()
            kids = descendants(stopper.loadgen.pid)
            rss = [proc_status(k) for k in [stopper.loadgen.pid] + kids]
            snaps["loadgen_idle"] = {"processes": len(rss),
                                     "VmRSS": sum(r.get("VmRSS", 0) for r in rss),
                                     "RssAnon": sum(r.get("RssAnon", 0) for r in rss)}
            try:
                snaps["metrics_idle"] = metric_sums(http_get(port, "/metrics"))
            except OSError as e:
                snaps["metrics_idle"] = {"error": str(e)}
                log(f"  /metrics at idle failed: {e}")
            log(f"  idle snapshot at {state['open']} open: server VmRSS {mib(snaps['server_idle']['VmRSS'])}, "
                f"MemAvailable {kernel_snapshot()['MemAvailable'] / GIB:.2f} GiB")
        # The loadgen leaves the verify phase when every connection got the broadcast (or it timed out).
        if phase == "drain" and "server_after_broadcast" not in snaps:
            snaps["server_after_broadcast"] = proc_status(spid)
            snaps["kernel_after_broadcast"] = kernel_snapshot()
        if now - last_print >= 10:
            last_print = now
            log(f"  [{now - t_start:5.0f}s] {phase:<6} open {state['open']:>8} errors {state['errors']:>6} "
                f"| available {avail / GIB:5.2f} GiB | server VmRSS {mib(proc_status(spid).get('VmRSS', 0))}")
    elapsed = time.monotonic() - t_start
    stopper.loadgen.wait()
    reader.join(timeout=5)
    summary["loadgen_exit"] = stopper.loadgen.returncode
    summary["min_mem_available"] = min_available
    summary["aborted"] = stopper.reason
    try:
        summary["metrics_end"] = metric_sums(http_get(port, "/metrics"))
    except OSError as e:
        summary["metrics_end"] = {"error": str(e)}
    rc, shutdown_s = stopper.stop_server(timeout=60)
    summary["server_exit"], summary["server_shutdown_s"] = rc, shutdown_s
    summary["server_fanout"] = server_fanout(timed_fanouts(server_log_path))
    report = None
    if os.path.exists(report_path) and stopper.reason is None:
        with open(report_path) as f:
            report = json.load(f)
    summary["loadgen_report"] = report
    return print_summary(args, summary, kernel_before, elapsed)


def slab_delta(before, after):
    if before is None or after is None:
        return None
    out = {}
    for name in SLAB_CACHES:
        if name in after:
            b = before.get(name, (0, after[name][1]))[0]
            a, size = after[name]
            out[name] = (a - b, (a - b) * size)
    return out


def print_summary(args, summary, kernel_before, elapsed):
    snaps = summary["snapshots"]
    report = summary["loadgen_report"]
    log("")
    log(f"== results ({elapsed:.0f}s of load generation; loadgen exit {summary['loadgen_exit']}, server exit "
        f"{summary['server_exit']} after {summary['server_shutdown_s']:.1f}s of graceful shutdown)")
    if summary["aborted"]:
        log(f"run ABORTED: {summary['aborted']}")
    ok = False
    if report:
        c = report["connect"]
        ramp = report["ramp"]
        log(f"connections: target {c['target']}, connected {ramp['connected']} in {ramp['seconds']:.1f}s "
            f"({ramp['connects_per_s']:.0f} connects/s, ramp {'complete' if ramp['complete'] else 'INCOMPLETE'}), "
            f"open after the {args.hold:.0f}s hold {c['open_after_hold']}")
        cnt = report["counters"]
        log(f"pings: sent {cnt.get('pings_sent', 0)}, pongs received {cnt.get('pongs_received', 0)}; "
            f"server pings answered {cnt.get('pings_answered', 0)}")
        log(f"broadcast: received by {c['verify_received']} of {c['open_after_hold']} in "
            f"{(c['verify_seconds'] or 0) * 1000:.0f} ms -> {'OK' if c['verify_ok'] else 'FAILED'}")
        sf = summary.get("server_fanout")
        if sf:
            log(f"broadcast on the server: {sf['drained']} of {sf['receivers']} queues drained in {sf['ms']:.0f} ms "
                f"(the first worker's start to the last send completed, {sf['workers']} workers); worker CPU "
                f"{sf['cpu_ms']:.0f} ms, {sf['cpu_us_per_delivery']:.2f} us per delivery (user + system, the "
                f"receivers' loopback TCP input included)")
            log("  per worker (ms from the first start: began / sends handed to the ring / last send completed, "
                "CPU): " + "; ".join(
                    f"w{w['worker']} {w['receivers']}: {w['began_ms']:.1f} / "
                    f"{w['flushed_ms'] if w['flushed_ms'] is None else round(w['flushed_ms'], 1)} / "
                    f"{w['done_ms']:.1f}, {w['cpu_ms']:.1f}" for w in sf["per_worker"]))
            log(f"  the loadgen's figure above also holds its own side: the verify phase reaching its child "
                f"processes (stdin, read every 50 ms), the clients' reading, and its counts coming back "
                f"(every 50 ms, read every 20 ms): {(c['verify_seconds'] or 0) * 1000 - sf['ms']:.0f} ms here")
        else:
            log("broadcast on the server: no `timed fanout` lines in the server's log")
        log(f"failures: {report['errors_total']}" + "".join(
            f"\n  {k}: {v}" for k, v in report["errors"].items() if v))
        log(f"loadgen CPU: user {report['cpu']['user_s']:.1f}s sys {report['cpu']['sys_s']:.1f}s")
        ok = (ramp["connected"] >= args.target and c["open_after_hold"] >= args.target
              and bool(c["verify_ok"]) and report["errors_total"] == 0)
    else:
        log("no loadgen report")
    start = snaps.get("server_start", {})
    idle = snaps.get("server_idle")
    n = snaps.get("open_idle") or 0
    warm = snaps.get("server_warm")
    if idle and n:
        for key in ("VmRSS", "RssAnon"):
            d = idle[key] - start[key]
            log(f"server {key}: start {mib(start[key])}, idle with {n} connections {mib(idle[key])} -> "
                f"{d / n:.0f} bytes per connection")
            if warm:
                d = idle[key] - warm[key]
                log(f"server {key}: after warm-up {mib(warm[key])}, idle with {n} connections "
                    f"{mib(idle[key])} -> {d / n:.0f} bytes per connection")
        if summary.get("idle_by_mapping"):
            log("server, from start to idle:\n" + summary["idle_by_mapping"])
        if "server_after_broadcast" in snaps:
            b = snaps["server_after_broadcast"]
            log(f"server after the broadcast: VmRSS {mib(b['VmRSS'])}, RssAnon {mib(b['RssAnon'])} "
                f"({(b['VmRSS'] - idle['VmRSS']) / n:.0f} bytes per connection more than idle: send queues, "
                f"pooled or freed and kept by the allocator); peak VmRSS (VmHWM) {mib(b['VmHWM'])}")
            kb = snaps.get("kernel_after_broadcast")
            if kb:
                log(f"kernel after the broadcast: sockstat TCP mem {kb['sockstat'].get('TCP', {}).get('mem')} "
                    f"pages, Slab {mib(kb['Slab'])}")
        lg = snaps.get("loadgen_idle")
        if lg:
            log(f"loadgen ({lg['processes']} processes) RSS at idle: {mib(lg['VmRSS'])} "
                f"({lg['VmRSS'] / n:.0f} bytes per connection)")
        k0, k1 = kernel_before, snaps["kernel_idle"]
        t0, t1 = k0["sockstat"].get("TCP", {}), k1["sockstat"].get("TCP", {})
        log(f"kernel /proc/net/sockstat TCP: inuse {t0.get('inuse')} -> {t1.get('inuse')}, "
            f"mem {t0.get('mem')} -> {t1.get('mem')} pages; sockets used "
            f"{k0['sockstat'].get('sockets', {}).get('used')} -> {k1['sockstat'].get('sockets', {}).get('used')}")
        ds = k1["Slab"] - k0["Slab"]
        log(f"kernel Slab (meminfo): {mib(k0['Slab'])} -> {mib(k1['Slab'])}: +{mib(ds)}, "
            f"{ds / n:.0f} bytes per connection (both ends), {ds / (2 * n):.0f} per socket")
        d = slab_delta(k0["slab"], k1["slab"])
        if d is None:
            log("kernel /proc/slabinfo: not readable")
        else:
            parts = [f"{name} +{objs} ({bytes_ / n:.0f} B/conn)" for name, (objs, bytes_) in d.items()
                     if bytes_ > 0 and bytes_ / n >= 8]
            log("kernel slab caches (delta objects, bytes per connection): " + ", ".join(parts))
        mi = snaps.get("metrics_idle", {})
        log(f"server metrics at idle: websockets open {mi.get('ringws_websockets_open')}, "
            f"connections open {mi.get('ringws_connections_open')}, rejected "
            f"{ {k: v for k, v in mi.items() if k.startswith('ringws_rejected_total') and v} or 0}, "
            f"handshake failures "
            f"{ {k: v for k, v in mi.items() if k.startswith('ringws_handshake_failures') and v} or 0}")
    n0 = kernel_before["netstat"]
    n1 = netstat()
    events = {k: n1.get(k, 0) - n0.get(k, 0) for k in NETSTAT_COUNTERS if n1.get(k, 0) - n0.get(k, 0)}
    log(f"kernel TCP events during the run (/proc/net/netstat TcpExt, whole machine): {events or 'none'}")
    summary["netstat_delta"] = events
    me = summary.get("metrics_end", {})
    closes = {k: v for k, v in me.items() if k.startswith("ringws_closes_total") and v}
    log(f"server metrics at end: accept errors {me.get('ringws_accept_errors_total')}, "
        f"slow-consumer closes {me.get('ringws_slow_consumer_closes_total')}, closes {closes or 0}")
    log(f"lowest available memory during the run (MemAvailable minus the growth of reclaimable slab): {summary['min_mem_available'] / GIB:.2f} GiB")
    log(f"RESULT: {'PASS' if ok else 'FAIL'} ({args.target} connections)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
