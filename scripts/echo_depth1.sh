#!/usr/bin/env bash
# Echo with one message in flight per connection, against the server's floor: server CPU per echo of ringws,
# of `tcp_echo_floor` (a raw TCP echo through ringws's own reactor, examples/tcp_echo_floor.rs, driven with
# `ringws-loadgen --floor`) and of uWebSockets.js (benches/peers/node/uws-echo.mjs), with the same client
# in the same run. Each run: a fresh server pinned to CPU 0 (`ringws serve --workers 1 --no-pin`), the
# loadgen pinned to CPU 1 (`echo -c C --depth DEPTH -t 1 --engine uring`); server CPU from /proc over the
# loadgen's whole run, and its resident memory at the end. Rounds alternate the order of the servers. Prints
# one line per run, then per size the medians and the ratios ringws / floor and ringws / uWebSockets.js of
# server CPU per echo.
#
# Usage: scripts/echo_depth1.sh   (env: ROUNDS=3 DUR=5 C=100 DEPTH=1 SIZES="20 1024 16384 65536"
#        SERVERS="ringws floor uws" BIN=target/release OUT=target/echo_depth1/<stamp>
#        RINGWS_ARGS="" extra `ringws serve` options, FLOOR_ARGS="" extra tcp_echo_floor options (it takes
#        --recv-buffer-size and --recv-buffers as the server does); with SERVERS containing ringws-b,
#        RINGWS_B (a second ringws binary, default BIN's) and RINGWS_B_ARGS make a before/after pair in the
#        same run, and floor-b with FLOOR_B (a second tcp_echo_floor binary, default BIN's) and FLOOR_B_ARGS
#        the floor's)
# Needs: cargo build --release -p ringws -p ringws-loadgen --bins --example tcp_echo_floor; node (npm ci in
# benches/peers/node is done here when node_modules is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
BIN=${BIN:-target/release}
RINGWS=$BIN/ringws; LOADGEN=$BIN/ringws-loadgen; FLOOR=$BIN/examples/tcp_echo_floor
RINGWS_B=${RINGWS_B:-$RINGWS}; FLOOR_B=${FLOOR_B:-$FLOOR}
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-5}; C=${C:-100}; DEPTH=${DEPTH:-1}
SIZES=${SIZES:-"20 1024 16384 65536"}
SERVERS=${SERVERS:-"ringws floor uws"}
RINGWS_ARGS=${RINGWS_ARGS:-}; RINGWS_B_ARGS=${RINGWS_B_ARGS:-}
FLOOR_ARGS=${FLOOR_ARGS:-}; FLOOR_B_ARGS=${FLOOR_B_ARGS:-}
OUT=${OUT:-target/echo_depth1/$(date -u +%Y%m%dT%H%M%SZ)}
NODE_PEERS=benches/peers/node
require_executable "cargo build --release -p ringws -p ringws-loadgen --bins --example tcp_echo_floor" \
    "$RINGWS" "$LOADGEN" "$FLOOR" "$RINGWS_B" "$FLOOR_B"
if [[ " $SERVERS " == *" uws "* && ! -d "$NODE_PEERS/node_modules" ]]; then
    (cd "$NODE_PEERS" && npm ci --no-audit --no-fund >&2)
fi
[[ " $SERVERS " == *" uwscpp "* ]] && scripts/peers/uws_cpp.sh build >/dev/null
mkdir -p "$OUT"
HZ=$(getconf CLK_TCK)
ROWS=$OUT/rows.txt
: >"$ROWS"
SERVER_PID=""
trap 'stop_pid "$SERVER_PID"' EXIT

run_one() { # server size round
    local server=$1 size=$2 round=$3 log="$OUT/server-$1.log" json="$OUT/$1-$2-r$3.json" cmd floor=() t0 t1
    # shellcheck disable=SC2206 # the extra options are words on purpose
    case $server in
        ringws) cmd=("$RINGWS" serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin $RINGWS_ARGS) ;;
        ringws-b) cmd=("$RINGWS_B" serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin $RINGWS_B_ARGS) ;;
        floor) cmd=("$FLOOR" --port 0 $FLOOR_ARGS); floor=(--floor) ;;
        floor-b) cmd=("$FLOOR_B" --port 0 $FLOOR_B_ARGS); floor=(--floor) ;;
        uws) cmd=(node "$NODE_PEERS/uws-echo.mjs" --port 0) ;;
        uwscpp) cmd=(scripts/peers/uws_cpp.sh echo --port 0) ;;
        *) echo "unknown server $server" >&2; exit 2 ;;
    esac
    start_listening --cpu 0 --err "$log" "$log.out" "${cmd[@]}"
    SERVER_PID=$BG_PID
    t0=$(cpu_ticks "$SERVER_PID")
    timeout $((DUR + 60)) taskset -c 1 "$LOADGEN" echo --url "ws://$LISTEN_ADDR/" -c "$C" -s "$size" \
        --depth "$DEPTH" -t 1 -d "$DUR" --engine uring -q --json "$json" "${floor[@]}" >/dev/null 2>&1 || true
    t1=$(cpu_ticks "$SERVER_PID"); rss=$(rss_kib "$SERVER_PID")
    stop_pid "$SERVER_PID"; SERVER_PID=""
    python3 - "$json" "$server" "$size" "$((t1 - t0))" "$HZ" "$rss" <<'PY' | tee -a "$ROWS"
import json, sys
path, server, size, ticks, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rss = int(sys.argv[6])
try:
    r = json.load(open(path))
except (OSError, ValueError):
    print(f"{server:9} {size:>6} B  no report (loadgen failed)", file=sys.stderr)
    sys.exit(0)
msgs, errors = r["received"], r["errors_total"]
cpu = ticks / hz
lg = r["cpu"]["user_s"] + r["cpu"]["sys_s"]
us = cpu * 1e6 / msgs if msgs else float("nan")
print(f"{server:9} {size:>6} B  msgs/s {r['throughput_per_s']:>9.0f}  server us/msg {us:8.3f}  "
      f"server busy {cpu / r['elapsed_s'] * 100:4.0f}%  loadgen us/msg {lg * 1e6 / max(msgs, 1):7.3f}  errors {errors}  "
      f"rss {rss} KiB")
PY
}

echo "echo depth $DEPTH against the floor: $C connections, sizes $SIZES, $DUR s, $ROUNDS rounds, servers $SERVERS"
echo "($(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), load $(cut -d' ' -f1-3 /proc/loadavg)), output in $OUT"
echo "ringws: $RINGWS $RINGWS_ARGS; ringws-b: $RINGWS_B $RINGWS_B_ARGS; floor: $FLOOR $FLOOR_ARGS; floor-b: $FLOOR_B $FLOOR_B_ARGS"
read -r -a servers <<<"$SERVERS"
for round in $(seq "$ROUNDS"); do
    # Rotate the order each round, so no server always runs first or last.
    n=${#servers[@]}; shift_by=$(((round - 1) % n)); order=("${servers[@]:shift_by}" "${servers[@]:0:shift_by}")
    for size in $SIZES; do
        for server in "${order[@]}"; do run_one "$server" "$size" "$round"; done
    done
done
python3 - "$ROWS" "$SIZES" <<'PY' | tee "$OUT/medians.txt"
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+)\s+(\d+) B\s+msgs/s\s+(\d+)\s+server us/msg\s+([0-9.na]+)", line)
    if m:
        runs.setdefault((m[1], int(m[2])), []).append((float(m[3]), float(m[4])))
# (server us per echo, msgs/s) medians
med = {k: (statistics.median(us for _, us in v), statistics.median(rate for rate, _ in v)) for k, v in runs.items()}
servers = list(dict.fromkeys(s for s, _ in runs))
print("\nmedians: server CPU per echo (us), msgs/s")
header = f"{'size':>7} " + " ".join(f"{s:>20}" for s in servers)
if "floor" in servers:
    header += f" {'ringws/floor':>13}"
if "uws" in servers:
    header += f" {'ringws/uws':>11}"
if "ringws-b" in servers:
    header += f" {'b/ringws':>9}"
if "floor-b" in servers:
    header += f" {'b/floor-b':>10}"
print(header)
for size in map(int, sys.argv[2].split()):
    cells, row = [], f"{size:>7} "
    for s in servers:
        us, rate = med.get((s, size), (float("nan"), 0))
        cells.append(f"{us:8.3f} {rate:>10.0f}/s")
    row += " ".join(f"{c:>20}" for c in cells)
    ringws = med.get(("ringws", size), (float("nan"), 0))[0]
    for other, width in (("floor", 13), ("uws", 11)):
        if other in servers:
            row += f" {ringws / med.get((other, size), (float('nan'), 0))[0]:>{width}.3f}x"
    if "ringws-b" in servers:
        row += f" {med.get(('ringws-b', size), (float('nan'), 0))[0] / ringws:>8.3f}x"
    if "floor-b" in servers:
        b = med.get(("ringws-b", size), (float("nan"), 0))[0]
        row += f" {b / med.get(('floor-b', size), (float('nan'), 0))[0]:>9.3f}x"
    print(row)
PY
