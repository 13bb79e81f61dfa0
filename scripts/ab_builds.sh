#!/usr/bin/env bash
# Two ringws builds side by side, in one run: server CPU per echoed message at depth 1 and depth 8, and
# msgs/s, alternating the builds round by round (A, B, A, B, ...), so that the machine's noise falls on both.
# Each echo row: `ringws serve --workers 1` pinned to CPU 0, `ringws-loadgen echo` (closed loop, the same
# load generator binary for both builds) pinned to CPU 1; server CPU = utime + stime from /proc over the
# loadgen's run. Prints one line per run and, per row, the medians and the ratio B/A.
#
# Usage: scripts/ab_builds.sh A_BIN B_BIN
#        (env: LOADGEN=path ROUNDS=5 DUR=5 C=100 ROWS="d1-20 d1-1024 d1-16384 d8-20 d8-1024")
#   A_BIN, B_BIN: two ringws binaries (e.g. a release build of an earlier commit, and target/release/ringws).
#   Row dD-S: depth D messages in flight per connection, S-byte messages.
# Fanout and idle memory take the other scripts with RINGWS=path: scripts/fanout.sh, scripts/idle_rss.py.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
[ $# -eq 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
A=$1; B=$2
LOADGEN=${LOADGEN:-target/release/ringws-loadgen}
ROUNDS=${ROUNDS:-5}; DUR=${DUR:-5}; C=${C:-100}
ROWS=${ROWS:-"d1-20 d1-1024 d1-16384 d8-20 d8-1024"}
require_executable "build it with cargo build --release" "$A" "$B" "$LOADGEN"
HZ=$(getconf CLK_TCK)
RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT

# run BUILD_NAME BIN DEPTH SIZE: one echo run; appends "row build us_per_msg msgs_per_s" to RESULTS.
run() {
    local name=$1 bin=$2 depth=$3 size=$4 out json t0 t1
    out=$(mktemp)
    start_listening --cpu 0 "$out" "$bin" serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin
    local pid=$BG_PID port=$LISTEN_PORT
    t0=$(cpu_ticks "$pid")
    json=$(taskset -c 1 "$LOADGEN" echo --url "ws://127.0.0.1:$port/" -c "$C" -t 1 -s "$size" \
        --depth "$depth" -d "$DUR" -q --json /dev/stdout 2>/dev/null)
    t1=$(cpu_ticks "$pid")
    stop_pid "$pid"
    rm -f "$out"
    python3 - "$json" $((t1 - t0)) "$HZ" "d$depth-$size" "$name" "$DUR" >>"$RESULTS" <<'EOF'
import json, sys
raw, ticks, hz, row, name, dur = sys.argv[1:]
report = json.loads(raw[raw.index("{"):])
msgs, errors = report["received"], report.get("errors", 0)
if isinstance(errors, dict):
    errors = sum(v for v in errors.values() if isinstance(v, (int, float)))
cpu_s = int(ticks) / int(hz)
line = f"{row} {name} {cpu_s * 1e6 / max(msgs, 1):.3f} {msgs / float(dur):.0f}"
print(line)
print(f"{row:>9} {name} msgs={msgs:>9} errors={errors} server_cpu_s={cpu_s:6.2f} "
      f"us_per_msg={cpu_s * 1e6 / max(msgs, 1):.3f}", file=sys.stderr)
EOF
}

echo "A=$A B=$B loadgen=$LOADGEN rounds=$ROUNDS dur=${DUR}s conns=$C $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
    for row in $ROWS; do
        depth=${row%%-*}; depth=${depth#d}; size=${row#*-}
        if [ $((round % 2)) -eq 1 ]; then
            run A "$A" "$depth" "$size"; run B "$B" "$depth" "$size"
        else
            run B "$B" "$depth" "$size"; run A "$A" "$depth" "$size"
        fi
    done
done
python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    row, name, us, rate = line.split()
    rows.setdefault(row, {}).setdefault(name, []).append((float(us), float(rate)))
print(f"{'row':>9} {'A us/msg':>9} {'B us/msg':>9} {'B/A cpu':>8} {'A msgs/s':>10} {'B msgs/s':>10}")
for row, builds in rows.items():
    a_us = statistics.median(u for u, _ in builds["A"]); b_us = statistics.median(u for u, _ in builds["B"])
    a_r = statistics.median(r for _, r in builds["A"]); b_r = statistics.median(r for _, r in builds["B"])
    print(f"{row:>9} {a_us:9.3f} {b_us:9.3f} {b_us / a_us:7.2f}x {a_r:10.0f} {b_r:10.0f}")
EOF
