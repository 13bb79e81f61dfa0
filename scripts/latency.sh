#!/usr/bin/env bash
# Echo latency in open loop, ringws next to uWebSockets.js (benches/peers/node/uws-echo.mjs) in one run.
# For each round and size: first each server's capacity (closed loop, the same C connections, --depth
# DEPTH), then open loop (`--rate`: latency from the intended send time, coordinated omission corrected) at
# LOADS percent of EACH server's own capacity, then, as a second view, every server at the same absolute
# rates (LOADS percent of the lowest capacity of the round; a server whose capacity that is has run them
# already). Each run: a fresh server pinned to CPU 0 (`ringws serve --workers 1 --no-pin`), the loadgen
# pinned to CPU 1 (`-t 1 --engine uring`), an HdrHistogram interval log (`--hist-log`) per open-loop run.
# Rounds alternate the order of the servers. Prints one line per run, then the medians over rounds of
# p50/p99/p99.9 per size, server and load, and draws with scripts/plot.py one percentile spectrum per size
# and view (all servers and loads on one chart, rounds merged).
#
# Usage: scripts/latency.sh   (env: ROUNDS=3 DUR=5 C=100 DEPTH=1 SIZES="20 1024" LOADS="25 50 75"
#        SERVERS="ringws uws" BIN=target/release OUT=target/latency/<stamp> RINGWS_ARGS="" PLOT=1)
# Needs: cargo build --release -p ringws -p ringws-loadgen --bins; node (npm ci in benches/peers/node is
# done here when node_modules is missing); plot.py installs matplotlib into scripts/.venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
BIN=${BIN:-target/release}
RINGWS=$BIN/ringws; LOADGEN=$BIN/ringws-loadgen
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-5}; C=${C:-100}; DEPTH=${DEPTH:-1}
SIZES=${SIZES:-"20 1024"}; LOADS=${LOADS:-"25 50 75"}
SERVERS=${SERVERS:-"ringws uws"}
RINGWS_ARGS=${RINGWS_ARGS:-}; PLOT=${PLOT:-1}
OUT=${OUT:-target/latency/$(date -u +%Y%m%dT%H%M%SZ)}
NODE_PEERS=benches/peers/node
require_executable "cargo build --release -p ringws -p ringws-loadgen --bins" "$RINGWS" "$LOADGEN"
if [[ " $SERVERS " == *" uws "* && ! -d "$NODE_PEERS/node_modules" ]]; then
    (cd "$NODE_PEERS" && npm ci --no-audit --no-fund >&2)
fi
mkdir -p "$OUT"
HZ=$(getconf CLK_TCK)
ROWS=$OUT/rows.txt
: >"$ROWS"
SERVER_PID=""
trap 'stop_pid "$SERVER_PID"' EXIT

# run_one SERVER SIZE ROUND VIEW LOAD RATE: one loadgen run (RATE empty: closed loop, capacity). Prints the
# run's line (also appended to the rows) and sets LAST_RATE to its echoes per second.
run_one() {
    local server=$1 size=$2 round=$3 view=$4 load=$5 rate=$6 log="$OUT/server-$1.log" cmd name
    name="$size-$server-$view$load-r$round"
    # shellcheck disable=SC2206 # the extra options are words on purpose
    case $server in
        ringws) cmd=("$RINGWS" serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin $RINGWS_ARGS) ;;
        uws) cmd=(node "$NODE_PEERS/uws-echo.mjs" --port 0) ;;
        *) echo "unknown server $server" >&2; exit 2 ;;
    esac
    local mode=(--depth "$DEPTH")
    [ -n "$rate" ] && mode=(--rate "$rate" --hist-log "$OUT/$name.hlog")
    start_listening --cpu 0 --err "$log" "$log.out" "${cmd[@]}"
    SERVER_PID=$BG_PID
    local t0 t1
    t0=$(cpu_ticks "$SERVER_PID")
    timeout $((DUR + 60)) taskset -c 1 "$LOADGEN" echo --url "ws://$LISTEN_ADDR/" -c "$C" -s "$size" \
        "${mode[@]}" -t 1 -d "$DUR" --engine uring -q --json "$OUT/$name.json" >/dev/null 2>&1 || true
    t1=$(cpu_ticks "$SERVER_PID")
    stop_pid "$SERVER_PID"; SERVER_PID=""
    LAST_RATE=$(python3 - "$OUT/$name.json" "$server" "$size" "$view" "$load" "${rate:-0}" "$((t1 - t0))" "$HZ" <<'PY' | tee -a "$ROWS" | tee /dev/stderr | sed -n 's/.* achieved \([0-9]*\)\/s.*/\1/p'
import json, sys
path, server, size, view, load, rate, ticks, hz = sys.argv[1:]
try:
    r = json.load(open(path))
except (OSError, ValueError):
    print(f"{size:>5} B {server:6} {view}{load:>3}  no report (loadgen failed)")
    sys.exit(0)
l = r["latency"]
print(f"{size:>5} B {server:6} {view}{load:>3}  rate {float(rate):>8.0f}/s  achieved {r['throughput_per_s']:.0f}/s  "
      f"p50 {l['p50_us']:8.1f}  p99 {l['p99_us']:8.1f}  p99.9 {l['p999_us']:8.1f}  max {l['max_us']:8.1f} us  "
      f"errors {r['errors_total']}  server busy {int(ticks) / int(hz) / r['elapsed_s'] * 100:.0f}%  "
      f"loadgen busy {(r['cpu']['user_s'] + r['cpu']['sys_s']) / r['elapsed_s'] * 100:.0f}%")
PY
)
}

echo "echo latency, open loop: $C connections, depth $DEPTH for capacity, sizes $SIZES, loads $LOADS %, $DUR s," \
    "$ROUNDS rounds, servers $SERVERS"
echo "($(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), load $(cut -d' ' -f1-3 /proc/loadavg)), output in $OUT"
read -r -a servers <<<"$SERVERS"
for round in $(seq "$ROUNDS"); do
    n=${#servers[@]}; shift_by=$(((round - 1) % n)); order=("${servers[@]:shift_by}" "${servers[@]:0:shift_by}")
    for size in $SIZES; do
        declare -A capacity=()
        for server in "${order[@]}"; do
            run_one "$server" "$size" "$round" cap 100 ""
            capacity[$server]=${LAST_RATE:-0}
        done
        lowest=""
        for server in "${order[@]}"; do
            if [ -z "$lowest" ] || [ "${capacity[$server]}" -lt "${capacity[$lowest]}" ]; then lowest=$server; fi
        done
        for load in $LOADS; do
            for server in "${order[@]}"; do
                run_one "$server" "$size" "$round" own "$load" $((capacity[$server] * load / 100))
            done
        done
        # The same absolute rates for every server: the lowest capacity's, which that server ran above.
        for load in $LOADS; do
            for server in "${order[@]}"; do
                if [ "$server" = "$lowest" ]; then
                    cp "$OUT/$size-$server-own$load-r$round.hlog" "$OUT/$size-$server-abs$load-r$round.hlog" || true
                    grep -E "^ *$size B $server +own +$load " "$ROWS" | tail -n1 | sed 's/ own / abs /' >>"$ROWS"
                    continue
                fi
                run_one "$server" "$size" "$round" abs "$load" $((capacity[$lowest] * load / 100))
            done
        done
        unset capacity
    done
done
python3 - "$ROWS" <<'PY' | tee "$OUT/medians.txt"
import re, statistics, sys
runs = {}
pat = re.compile(r"\s*(\d+) B (\S+)\s+(cap|own|abs)\s*(\d+)\s+rate\s+(\d+)/s\s+achieved (\d+)/s\s+p50\s+([0-9.]+)\s+p99\s+([0-9.]+)\s+p99.9\s+([0-9.]+)")
for line in open(sys.argv[1]):
    m = pat.match(line)
    if m:
        key = (int(m[1]), m[3], int(m[4]), m[2])
        runs.setdefault(key, []).append([float(m[i]) for i in range(5, 10)])
print("\nmedians over rounds (latency in us; own = percent of the server's own capacity, abs = percent of the")
print("lowest capacity of the round, the same absolute rate for every server; the lowest server's abs runs are its own runs)")
print(f"{'size':>6} {'view':>4} {'load':>4} {'server':>7} {'rate/s':>9} {'achieved/s':>11} {'p50':>8} {'p99':>8} {'p99.9':>8}")
for key in sorted(runs, key=lambda k: (k[0], {"cap": 0, "own": 1, "abs": 2}[k[1]], k[2], k[3])):
    med = [statistics.median(col) for col in zip(*runs[key])]
    size, view, load, server = key
    if view == "cap":
        print(f"{size:>6} {view:>4} {'':>4} {server:>7} {'closed':>9} {med[1]:>11.0f} {med[2]:>8.1f} {med[3]:>8.1f} {med[4]:>8.1f}")
    else:
        print(f"{size:>6} {view:>4} {load:>3}% {server:>7} {med[0]:>9.0f} {med[1]:>11.0f} {med[2]:>8.1f} {med[3]:>8.1f} {med[4]:>8.1f}")
PY
if [ "$PLOT" = 1 ]; then
    for size in $SIZES; do
        for view in own abs; do
            logs=()
            for f in "$OUT/$size"-*-"$view"*-r*.hlog; do [ -e "$f" ] && logs+=(--hist-log "$f"); done
            [ ${#logs[@]} -gt 0 ] || continue
            python3 scripts/plot.py --spectrum-chart "latency-$size-$view" --title \
                "echo $size B, $C connections, open loop at % of $([ "$view" = own ] && echo "each server's own" || echo "the lowest") capacity (rounds merged)" \
                "${logs[@]}" -o "$OUT" || echo "plot.py failed (charts skipped)" >&2
        done
    done
fi
