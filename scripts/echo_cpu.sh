#!/usr/bin/env bash
# Server CPU per echoed message: ringws (--workers 1) against the fastwebsockets comparison echo server, in
# the same run, same load (ringws-loadgen echo, closed loop), server pinned to CPU 0 and the load generator
# to CPU 1. Prints messages, server CPU seconds (utime+stime from /proc) and microseconds per message.
#
# Usage: scripts/echo_cpu.sh [size-bytes ...]   (env: C=connections DEPTH=in-flight per connection DUR=s)
# Needs: target/release/ringws, target/release/ringws-loadgen, benches/peers/target/release/fastwebsockets-echo
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
LOADGEN=${LOADGEN:-target/release/ringws-loadgen}
PEER=${PEER:-benches/peers/target/release/fastwebsockets-echo}
C=${C:-50}; DEPTH=${DEPTH:-4}; DUR=${DUR:-5}
SIZES=("$@"); [ ${#SIZES[@]} -eq 0 ] && SIZES=(32 1024 16384)

run() { # size name cmd...
  local size=$1 name=$2; shift 2
  local out; out=$(mktemp)
  start_listening --cpu 0 "$out" "$@"
  local pid=$BG_PID port=$LISTEN_PORT
  local t0; t0=$(cpu_ticks "$pid")
  local json; json=$(taskset -c 1 "$LOADGEN" echo --url "ws://127.0.0.1:$port/" -c "$C" -t 1 -s "$size" \
    --depth "$DEPTH" -d "$DUR" -q --json /dev/stdout 2>/dev/null)
  local t1; t1=$(cpu_ticks "$pid")
  stop_pid "$pid"; rm -f "$out"
  python3 -c '
import json, sys
j = json.loads(sys.argv[1][sys.argv[1].index("{"):])
msgs, ticks = j["received"], int(sys.argv[2])
hz = 100
print(f"{sys.argv[3]:>16} size={sys.argv[4]:>6} msgs={msgs:>9} server_cpu_s={ticks/hz:6.2f} cpu_us_per_msg={ticks/hz*1e6/max(msgs,1):6.2f}")
' "$json" $((t1 - t0)) "$name" "$size"
}

for size in "${SIZES[@]}"; do
  run "$size" ringws target/release/ringws serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin
  run "$size" fastwebsockets "$PEER" --port 0
done
