#!/usr/bin/env bash
# The kernel's floor under a closed-loop echo client on loopback: CPU per echo of `echo_floor` (an io_uring
# client that checks nothing and sends prebuilt frames; loadgen/examples/echo_floor.rs) next to
# `ringws-loadgen echo` (io_uring engine, every echo checked) and, for each, the server's CPU per echo. Same
# session, alternating, ROUNDS rounds, each run against a fresh `ringws serve --workers 1 --no-pin` pinned to
# CPU 0 with the client pinned to CPU 1. Prints one line per run and the medians.
#
# Usage: scripts/echo_floor.sh        (env: ROUNDS=3 DUR=5 C=100 SIZE=20 DEPTH=8; SIZE <= 125)
# Needs: cargo build --release --workspace --all-targets
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
SERVER=target/release/ringws; LOADGEN=target/release/ringws-loadgen; FLOOR=target/release/examples/echo_floor
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-5}; C=${C:-100}; SIZE=${SIZE:-20}; DEPTH=${DEPTH:-8}
require_executable "cargo build --release --workspace --all-targets" "$SERVER" "$LOADGEN" "$FLOOR"
HZ=$(getconf CLK_TCK)
RESULTS=$(mktemp)
SERVER_PID=""
cleanup() {
  stop_pid "$SERVER_PID"
  rm -f "$RESULTS"
}
trap cleanup EXIT

run_one() { # client round
  local client=$1 out port t0 t1 msgs cpu
  out=$(mktemp)
  start_listening --cpu 0 "$out" "$SERVER" serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin
  SERVER_PID=$BG_PID; port=$LISTEN_PORT
  rm -f "$out"
  t0=$(cpu_ticks "$SERVER_PID")
  if [ "$client" = floor ]; then
    local line
    line=$(timeout $((DUR + 60)) taskset -c 1 "$FLOOR" "127.0.0.1:$port" "$C" "$DUR" "$SIZE" "$DEPTH")
    msgs=$(sed -E 's/^echo floor: ([0-9]+) echoes.*/\1/' <<<"$line")
    cpu=$(sed -E 's/.*CPU ([0-9.]+)s.*/\1/' <<<"$line")
  else
    local json
    json=$(timeout $((DUR + 60)) taskset -c 1 "$LOADGEN" echo --url "ws://127.0.0.1:$port/" -c "$C" -s "$SIZE" \
      --depth "$DEPTH" -t 1 -d "$DUR" --engine uring -q --json - 2>/dev/null)
    read -r msgs cpu < <(python3 -c 'import json,sys; j=json.loads(sys.stdin.read()); print(j["received"], j["cpu"]["user_s"]+j["cpu"]["sys_s"])' <<<"$json")
  fi
  t1=$(cpu_ticks "$SERVER_PID")
  stop_pid "$SERVER_PID"; SERVER_PID=""
  python3 - "$client" "$msgs" "$cpu" "$((t1 - t0))" "$HZ" "$DUR" <<'PY' | tee -a "$RESULTS"
import sys
client, msgs, cpu, ticks, hz, dur = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
server = ticks / hz
print(f"{client:8} msgs/s {msgs / dur:>10.0f}  server us/msg {server * 1e6 / msgs:6.3f}  client us/msg {cpu * 1e6 / msgs:6.3f}  client/server {cpu / server:5.2f}x")
PY
}

echo "echo floor: $C connections, $SIZE B, depth $DEPTH, $DUR s, $ROUNDS rounds ($(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg))"
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then order="floor loadgen"; else order="loadgen floor"; fi
  for client in $order; do run_one "$client"; done
done
python3 - "$RESULTS" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    client = line.split()[0]
    nums = [float(x.rstrip("x")) for x in re.findall(r"([0-9.]+x?)(?=\s|$)", line)]
    rows.setdefault(client, []).append(nums)
for client, runs in rows.items():
    med = [statistics.median(col) for col in zip(*runs)]
    print(f"median {client:8} server us/msg {med[1]:6.3f}  client us/msg {med[2]:6.3f}  client/server {med[3]:5.2f}x")
PY
