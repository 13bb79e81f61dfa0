#!/usr/bin/env bash
# permessage-deflate benchmarks, every server in the same run (docs/BENCHMARKS.md "permessage-deflate").
# Server pinned to CPU 0, `ringws-loadgen --deflate --payload json --kind text` (1 KiB JSON-like records,
# permessage-deflate offered without context takeover either way; to the servers that keep a compressor per
# connection, `--deflate-server-context`, which lets them keep it) pinned to CPU 1, one thread. Rounds are
# interleaved (every server once per round) and the medians are printed.
#
# 1. echo: server CPU per echoed message (closed loop, C connections x DEPTH in flight, DUR s), from the
#    server's utime + stime in /proc over the whole loadgen run (1 handshake per connection included).
# 2. broadcast: 1 publisher, SUBS compressing subscribers, asked DELIVERIES deliveries/s in total; the
#    measured phase's deliveries/s (the loadgen's validated count) and server CPU per delivery (over the
#    whole loadgen run, drain included, against every delivery counted).
#
# A figure is printed only when permessage-deflate was agreed on every connection and the loadgen counted
# no error (broadcast: deliveries still missing after the drain are the server's capacity, printed apart);
# otherwise the line says what went wrong (the loadgen's error counters).
#
# Servers: ringws (`serve --workers 1`, default compression: no context takeover, level 6, threshold
# 128 B, compress-once broadcast); ringws-context (the same with `--compression context`: a compressor per
# connection keeping its context, window 11 bits, memLevel 1; ringws-context9, echo only: window 9 bits, the
# parameters of uWebSockets' DEDICATED_COMPRESSOR_3KB); uws-shared and uws-dedicated3kb (uWebSockets.js from npm,
# @trufflesuite/uws-js-unofficial, scripts/deflate/uws_server.js: SHARED_COMPRESSOR or
# DEDICATED_COMPRESSOR_3KB, each with SHARED_DECOMPRESSOR); nodews (echo only: Node `ws` with
# perMessageDeflate, threshold 128 B, scripts/deflate/ws_echo.js).
#
# Usage: scripts/deflate_bench.sh [echo] [broadcast]   (default both; env: SERVERS, ROUNDS=3, C=50,
#        DEPTH=4, DUR=5, SUBS=1000, DELIVERIES=2000000, SIZE=1024)
# Needs: target/release/ringws and target/release/ringws-loadgen (RINGWS, LOADGEN to override), Node, and
# `npm ci` in benches/peers/node (done here when node_modules is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
LOADGEN=${LOADGEN:-target/release/ringws-loadgen}; RINGWS=${RINGWS:-target/release/ringws}
SERVERS=${SERVERS:-"ringws ringws-context ringws-context9 uws-shared uws-dedicated3kb nodews"}
ROUNDS=${ROUNDS:-3}; C=${C:-50}; DEPTH=${DEPTH:-4}; DUR=${DUR:-5}; SIZE=${SIZE:-1024}
SUBS=${SUBS:-1000}; DELIVERIES=${DELIVERIES:-2000000}
PARTS=("$@"); [ ${#PARTS[@]} -eq 0 ] && PARTS=(echo broadcast)
NODE_PEERS=benches/peers/node
export NODE_PATH=$NODE_PEERS/node_modules
require_executable "cargo build --release -p ringws -p ringws-loadgen" "$RINGWS" "$LOADGEN"
if [[ "$SERVERS" == *uws* || "$SERVERS" == *nodews* ]] && [[ ! -d "$NODE_PEERS/node_modules" ]]; then
  (cd "$NODE_PEERS" && npm ci --no-audit --no-fund)
fi
RESULTS=$(mktemp)
echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD) load $(cut -d' ' -f1-3 /proc/loadavg)"

server_cmd() { # part server -> the command, or nothing if that server has no such part
  case "$1:$2" in
    echo:ringws) echo "$RINGWS serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin" ;;
    broadcast:ringws) echo "$RINGWS serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin --mode broadcast \
--broadcast-include-sender false --max-backpressure 64MiB --idle-timeout 0" ;;
    echo:ringws-context) echo "$RINGWS serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin --compression context" ;;
    broadcast:ringws-context) echo "$RINGWS serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin --mode broadcast \
--broadcast-include-sender false --max-backpressure 64MiB --idle-timeout 0 --compression context" ;;
    echo:ringws-context9) echo "$RINGWS serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin --compression context \
--compression-window-bits 9" ;;
    *:uws-shared) echo "node scripts/deflate/uws_server.js $1 shared 0" ;;
    *:uws-dedicated3kb) echo "node scripts/deflate/uws_server.js $1 dedicated3kb 0" ;;
    echo:nodews) echo "node scripts/deflate/ws_echo.js 0" ;;
  esac
}

run() { # part server round
  local part=$1 server=$2 round=$3 cmd
  cmd=$(server_cmd "$part" "$server"); [ -n "$cmd" ] || return 0
  local out json; out=$(mktemp); json=$(mktemp)
  # shellcheck disable=SC2086
  start_listening --cpu 0 "$out" $cmd
  local pid=$BG_PID port=$LISTEN_PORT t0 t1
  t0=$(cpu_ticks "$pid")
  local common=(--url "ws://127.0.0.1:$port/" -t 1 -s "$SIZE" --kind text --payload json --deflate -q
    --json "$json")
  # Servers that keep a context per connection get the offer that lets them (the loadgen then keeps an
  # inflater per connection); the others the offer without context takeover either way.
  case "$server" in ringws-context | ringws-context9 | uws-dedicated3kb) common+=(--deflate-server-context) ;; esac
  if [ "$part" = echo ]; then
    taskset -c 1 "$LOADGEN" echo "${common[@]}" -c "$C" --depth "$DEPTH" -d "$DUR" >/dev/null 2>&1 || true
  else
    taskset -c 1 "$LOADGEN" broadcast "${common[@]}" -c "$SUBS" --publishers 1 -d "$DUR" \
      --rate "$((DELIVERIES / SUBS))" >/dev/null 2>&1 || true
  fi
  t1=$(cpu_ticks "$pid")
  stop_pid "$pid"
  python3 - "$json" "$part" "$server" "$round" $((t1 - t0)) "$(getconf CLK_TCK)" >>"$RESULTS" <<'PY'
import json, sys
path, part, server, rnd, ticks, hz = sys.argv[1:]
try:
    j = json.load(open(path))
except Exception as e:
    j = {"errors": {"no report": 1}, "compression": {"agreed": 0}, "connections": 0}
main = j.get("received", 0) if part == "echo" else j.get("broadcast", {}).get("delivered", 0)
cpu_s = int(ticks) / int(hz)
row = {"part": part, "server": server, "round": int(rnd), "errors": j.get("errors", {}),
       "agreed": j["compression"]["agreed"], "units": main, "server_cpu_s": cpu_s,
       "server_us_per_unit": cpu_s * 1e6 / max(main, 1), "per_s": j.get("throughput_per_s", 0),
       "wire_per_payload_received": j["compression"].get("received", {}).get("wire_per_payload"),
       "total_connections": j.get("connections", 0) + (1 if part == "broadcast" else 0)}
print(json.dumps(row))
PY
  rm -f "$out" "$json"
}

for round in $(seq "$ROUNDS"); do
  for part in "${PARTS[@]}"; do
    for server in $SERVERS; do
      run "$part" "$server" "$round"
    done
  done
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def ok(r):
    # Broadcast past a server's capacity leaves deliveries missing at the end of the drain: that is the
    # capacity being measured, not a failure (printed apart). Any other error is.
    errors = {k: v for k, v in r["errors"].items() if not (r["part"] == "broadcast" and k == "broadcast_missing")}
    return not errors and r["agreed"] == r["total_connections"]
print(f'{"part":<10} {"server":<17} {"rounds ok":>9} {"units/s":>11} {"srv us/unit":>11} {"vs ringws":>9} '
      f'{"wire/payload in":>15}')
for part in ("echo", "broadcast"):
    base = None
    for server in dict.fromkeys(r["server"] for r in rows if r["part"] == part):
        mine = [r for r in rows if r["part"] == part and r["server"] == server]
        good = [r for r in mine if ok(r)]
        if not good:
            why = mine[-1]["errors"] or {"agreed": f'{mine[-1]["agreed"]} of {mine[-1]["total_connections"]}'}
            print(f'{part:<10} {server:<17} {0:>9} not measured: {why}')
            continue
        per_s = statistics.median(r["per_s"] for r in good)
        us = statistics.median(r["server_us_per_unit"] for r in good)
        wire = statistics.median(r["wire_per_payload_received"] for r in good)
        missing = max(r["errors"].get("broadcast_missing", 0) for r in good)
        if server == "ringws":
            base = us
        vs = f"{us / base:.2f}x" if base else "-"
        print(f'{part:<10} {server:<17} {len(good):>6}/{len(mine):<2} {per_s:>11.0f} {us:>11.3f} {vs:>9} {wire:>15.3f}'
              + (f"  (up to {missing} deliveries missing after the drain)" if missing else ""))
PY
rm -f "$RESULTS"
