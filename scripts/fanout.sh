#!/usr/bin/env bash
# Broadcast fanout: delivered messages/s and server CPU per delivered message, for 1, 100, 1000 and 10000
# subscribers and two payload sizes. `ringws serve --mode broadcast --workers 1` pinned to CPU 0,
# `ringws-loadgen broadcast` (one publisher, one thread) pinned to CPU 1. The publisher does not get its
# own messages back (`--broadcast-include-sender false`, like uWebSockets' ws.publish), so deliveries =
# publishes x subscribers. Both servers allow 64 MiB of queued output per connection (ringws' default
# 1 MiB closes a subscriber that falls 10 ms behind a 100 MB/s stream, which a preempted load generator
# on a shared machine does).
#
# Server CPU is counted over the publish phase only: a sampler polls the server's `/metrics` every 50 ms
# and reads utime + stime from /proc/PID/stat at the same moment; the window starts at the first sample
# with every subscriber and the publisher open (handshakes excluded) and ends at the last sample in which
# `ringws_deliveries_total` grew (the loadgen's closes excluded). CPU per delivery = CPU in the window /
# deliveries in the window (the server's own counter). Correctness comes from the loadgen's report:
# expected = published x subscribers, delivered, missing, duplicates, out of order, errors.
# The sampler's own requests (20 HTTP requests/s) are included in the window's CPU.
#
# The publish rate asks for DELIVERIES/s in total (default 4,000,000), i.e. DELIVERIES / subscribers
# publishes per second, capped at MAX_RATE (default 100,000) publishes per second (open loop, --rate).
# With WINDOW=N every run is closed loop instead (`--window N`, DELIVERIES and MAX_RATE unused): the
# publisher publishes whenever fewer than N messages are in flight (sent and not yet received by every
# subscriber), so a server that cannot keep up slows the publisher down instead of falling behind; each
# line then also gives the loadgen's max_in_flight (at most N).
#
# Usage: scripts/fanout.sh   (env: SUBS="1 100 1000 10000" SIZES="16 1024" DUR=s DELIVERIES=n MAX_RATE=n
#                             WINDOW=n SERVER="ringws" ROUNDS=1)
# SERVER names one server or several, each of ringws, ringws-b (the binary RINGWS_B, for a before/after
# pair), uws and uwscpp; with several, every (size, subscribers) point runs each of them in turn, the order
# rotated each round, and after ROUNDS rounds the medians are printed per server with deliveries/s per
# server core (deliveries / server CPU seconds) and the ratios to the first server named.
# SERVER=uws runs the same load against benches/peers/uws/server.js (uWebSockets.js; `npm install` in that
# folder first), SERVER=uwscpp against the C++ uWebSockets (benches/peers/uws-cpp/broadcast.cpp through
# scripts/peers/uws_cpp.sh, built before the first run); both print the same samples themselves every
# 50 ms (their own /proc/self/stat, open connections, deliveries counted as publishes x other subscribers).
# Each line also gives the deliveries in flight by Little's law (delivered/s x the loadgen's mean
# publish-to-delivery latency).
# Needs: target/release/ringws and target/release/ringws-loadgen (RINGWS=path, LOADGEN=path to override).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
LOADGEN=${LOADGEN:-target/release/ringws-loadgen}; RINGWS=${RINGWS:-target/release/ringws}
RINGWS_B=${RINGWS_B:-$RINGWS}
SUBS=${SUBS:-"1 100 1000 10000"}; SIZES=${SIZES:-"16 1024"}; DUR=${DUR:-4}
DELIVERIES=${DELIVERIES:-4000000}; MAX_RATE=${MAX_RATE:-100000}; SERVER=${SERVER:-ringws}; ROUNDS=${ROUNDS:-1}
WINDOW=${WINDOW:-}
if [ -n "$WINDOW" ] && ! [[ $WINDOW =~ ^[1-9][0-9]*$ ]]; then
  echo "fanout.sh: WINDOW=$WINDOW: messages in flight, a positive integer" >&2; exit 2
fi
read -r -a servers <<<"$SERVER"
for server in "${servers[@]}"; do
  case $server in
    ringws | ringws-b | uws) ;;
    uwscpp) scripts/peers/uws_cpp.sh build >/dev/null ;;
    *) echo "fanout.sh: unknown server $server (ringws, ringws-b, uws, uwscpp)" >&2; exit 2 ;;
  esac
done
ROWS=$(mktemp)
trap 'rm -f "$ROWS"' EXIT

run_one() { # server subs size rate (WINDOW set: the rate is unused)
  local server=$1 subs=$2 size=$3 rate=$4 out json samples pid port lpid bin load
  local -a mode=(--rate "$rate")
  load="rate=$rate/s"
  if [ -n "$WINDOW" ]; then mode=(--window "$WINDOW"); load="window=$WINDOW"; fi
  out=$(mktemp); json=$(mktemp); samples=$(mktemp)
  case $server in
    uws) start_listening --cpu 0 "$out" node benches/peers/uws/server.js 0 samples ;;
    uwscpp) start_listening --cpu 0 "$out" scripts/peers/uws_cpp.sh broadcast 0 samples ;;
    *)
      bin=$RINGWS; [ "$server" = ringws-b ] && bin=$RINGWS_B
      start_listening --cpu 0 "$out" "$bin" serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin --mode broadcast \
        --broadcast-include-sender false --max-backpressure 64MiB --idle-timeout 0 ;;
  esac
  pid=$BG_PID; port=$LISTEN_PORT
  taskset -c 1 "$LOADGEN" broadcast --url "ws://127.0.0.1:$port/" -c "$subs" --publishers 1 -s "$size" \
    "${mode[@]}" -d "$DUR" -t 1 -q --json "$json" >/dev/null 2>&1 &
  lpid=$!
  # Sampler (ringws): lines "t cpu_ticks open deliveries" every 50 ms while the loadgen runs.
  python3 - "$pid" "$port" "$lpid" "$server" >"$samples" <<'EOF'
import os, socket, sys, time
pid, port, lpid, server = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])
def metrics():
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    vals = {}
    for line in data.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, v = line.rpartition(" ")
            name = name.split("{")[0]
            if name in ("ringws_websockets_open", "ringws_deliveries_total"):
                vals[name] = vals.get(name, 0) + float(v)
    return int(vals.get("ringws_websockets_open", 0)), int(vals.get("ringws_deliveries_total", 0))
ringws = server.startswith("ringws")
while ringws and os.path.exists(f"/proc/{lpid}") and open(f"/proc/{lpid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
    c0 = cpu(); o, d = metrics(); c1 = cpu()
    print(time.monotonic(), (c0 + c1) / 2, o, d, flush=True)
    time.sleep(0.05)
EOF
  wait "$lpid" || true
  stop_pid "$pid"
  case $server in uws | uwscpp) grep -v "listening on" "$out" >"$samples" ;; esac
  rm -f "$out"
  python3 - "$json" "$samples" "$subs" "$size" "$load" "$server" <<'EOF' | tee -a "$ROWS"
import json, sys
jpath, spath, subs, size, load, server = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
raw = open(jpath).read()
j = json.loads(raw[raw.index("{"):]) if "{" in raw else {}
b = j.get("broadcast", {})
rows = [tuple(map(float, l.split())) for l in open(spath) if l.strip()]
start = next((i for i, r in enumerate(rows) if r[2] >= subs + 1), None)
end = max((i for i in range(1, len(rows)) if rows[i][3] > rows[i - 1][3]), default=None)
if start is None or end is None or end <= start:
    print(f"server={server} subs={subs} size={size}: no publish window found ({len(rows)} samples)"); sys.exit()
secs = rows[end][0] - rows[start][0]
ticks = rows[end][1] - rows[start][1]
deliveries = rows[end][3] - rows[start][3]
cpu_s = ticks / 100
rate_d = deliveries / max(secs, 1e-9)
mean_us = j.get("latency", {}).get("mean_us")
in_flight = f"{rate_d * mean_us / 1e6:,.0f}" if mean_us else "?"
if "max_in_flight" in b:
    in_flight += f" max_in_flight={b['max_in_flight']}"
check = (f"expected={b.get('expected')} delivered={b.get('delivered')} missing={b.get('missing')} "
         f"duplicates={b.get('duplicates')} out_of_order={b.get('out_of_order')} errors={j.get('errors_total')}")
if j.get("errors_total"):
    check += f" {dict((k, v) for k, v in j.get('errors', {}).items() if v)}"
print(f"server={server} subs={subs:>6} size={size:>5} {load} window_s={secs:.2f} "
      f"delivered_per_s={rate_d:,.0f} server_cpu_s={cpu_s:.2f} "
      f"cpu_share={cpu_s / max(secs, 1e-9):.2f} server_ns_per_delivery={cpu_s * 1e9 / max(deliveries, 1):.0f} "
      f"per_core={deliveries / max(cpu_s, 1e-9):,.0f} in_flight={in_flight} | {check}")
EOF
  [ -n "${KEEP:-}" ] && cp "$samples" "/tmp/fanout-samples-$server-$subs-$size"
  rm -f "$json" "$samples"
}

for round in $(seq "$ROUNDS"); do
  # Rotate the servers' order each round, so that none always runs first.
  n=${#servers[@]}; shift_by=$(((round - 1) % n)); order=("${servers[@]:shift_by}" "${servers[@]:0:shift_by}")
  for size in $SIZES; do
    for subs in $SUBS; do
      rate=$((DELIVERIES / subs)); [ "$rate" -gt "$MAX_RATE" ] && rate=$MAX_RATE; [ "$rate" -lt 5 ] && rate=5
      for server in "${order[@]}"; do run_one "$server" "$subs" "$size" "$rate"; done
    done
  done
done
if [ "${#servers[@]}" -gt 1 ] || [ "$ROUNDS" -gt 1 ]; then
  python3 - "$ROWS" "$SERVER" "$WINDOW" <<'EOF'
import re, statistics, sys
servers = sys.argv[2].split()
load = f", --window {sys.argv[3]}" if sys.argv[3] else ""
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"server=(\S+)\s+subs=\s*(\d+)\s+size=\s*(\d+).*?delivered_per_s=([\d,]+).*?"
                 r"server_ns_per_delivery=(\d+) per_core=([\d,]+).*?\| (.*)", line)
    if m:
        clean = "missing=0 " in m[7] and "duplicates=0 " in m[7] and m[7].rstrip().endswith("errors=0")
        runs.setdefault((int(m[2]), int(m[3])), {}).setdefault(m[1], []).append(
            (float(m[4].replace(",", "")), float(m[6].replace(",", "")), clean))
print(f"\nmedians ({sys.argv[2]}{load}): deliveries/s, deliveries/s per server core, runs clean; (x): {servers[0]} per core / this one per core")
for (subs, size), by in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    base = statistics.median(pc for _, pc, _ in by.get(servers[0], [])) if by.get(servers[0]) else None
    cells = []
    for s in servers:
        r = by.get(s)
        if not r:
            continue
        d, pc = statistics.median(x for x, _, _ in r), statistics.median(x for _, x, _ in r)
        ratio = f" ({base / pc:.2f}x)" if base and s != servers[0] else ""
        cells.append(f"{s}: {d:,.0f}/s, {pc:,.0f}/core, {sum(c for *_, c in r)}/{len(r)} clean{ratio}")
    print(f"subs={subs:>6} size={size:>5}  " + "; ".join(cells))
EOF
fi
