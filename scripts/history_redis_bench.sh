#!/usr/bin/env bash
# The cost of history across nodes: one node (`ringws serve --mode pubsub --workers 1 --broker`, CPU 0) and
# its own redis-server (free port, no persistence), one pub/sub topic, the load generator's one publisher
# and SUBS raw subscribers of it on the same node (`ringws-loadgen broadcast --topic`, CPU 1) at RATE
# publishes/s for DUR s, with and without `--history-size` (alternating, ROUNDS rounds). Without history a
# publish goes to Redis (PUBLISH) and to the local subscribers at once; with it, through the history script
# (offset, stream, PUBLISH) and back from Redis to every node, this one included. Prints, per case: the
# node's CPU per publish, Redis's CPU per publish, deliveries/s, and what the loadgen counted (missing,
# duplicates, out of order) and the publishes the node dropped because its queue to Redis was full (Redis
# slower than RATE), medians at the end.
#
# Usage: scripts/history_redis_bench.sh   (env: RATE=20000 DUR=4 SUBS=10 SIZE=64 ROUNDS=3 HISTORY=1000
#                                          RINGWS=path LOADGEN=path)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
RINGWS=${RINGWS:-target/release/ringws}; LOADGEN=${LOADGEN:-target/release/ringws-loadgen}
RATE=${RATE:-20000}; DUR=${DUR:-4}; SUBS=${SUBS:-10}; SIZE=${SIZE:-64}; ROUNDS=${ROUNDS:-3}
HISTORY=${HISTORY:-1000}
require_executable "cargo build --release --workspace" "$RINGWS" "$LOADGEN"
command -v redis-server >/dev/null || { echo "history_redis_bench.sh: redis-server is not on PATH (apt-get install redis-server)" >&2; exit 2; }
PIDS=()
TMP=$(mktemp -d)
cleanup() {
    stop_pid "${PIDS[@]}"
    rm -rf "$TMP"
}
trap cleanup EXIT

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$TMP/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
for _ in $(seq 100); do
    [ "$(redis-cli -p "$REDIS_PORT" PING 2>/dev/null)" = PONG ] && break
    sleep 0.05
done

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo ?), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# RATE=$RATE DUR=$DUR SUBS=$SUBS SIZE=$SIZE HISTORY=$HISTORY"
results="$TMP/results"
for round in $(seq "$ROUNDS"); do
    for variant in plain history; do
        extra=()
        [ "$variant" = history ] && extra=(--history-size "$HISTORY")
        start_listening --cpu 0 "$TMP/node.out" "$RINGWS" serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin \
            --mode pubsub --max-backpressure 64MiB --idle-timeout 0 --broker "redis://127.0.0.1:$REDIS_PORT" \
            "${extra[@]}"
        node_pid=$BG_PID; port=$LISTEN_PORT
        for _ in $(seq 100); do
            [ "$(metric_sum "$port" ringws_broker_up)" -ge 1 ] && break
            sleep 0.05
        done
        p0=$(metric_sum "$port" ringws_messages_in_total); d0=$(metric_sum "$port" ringws_deliveries_total)
        x0=$(metric_sum "$port" ringws_broker_publishes_dropped_total)
        n0=$(cpu_ticks "$node_pid"); r0=$(cpu_ticks "$REDIS_PID"); t0=$(date +%s.%N)
        report=$(taskset -c 1 "$LOADGEN" broadcast --url "ws://127.0.0.1:$port/" --topic "bench.$variant.$round" \
            -c "$SUBS" --publishers 1 -s "$SIZE" --rate "$RATE" -d "$DUR" -t 1 2>&1 || true)
        p1=$(metric_sum "$port" ringws_messages_in_total); d1=$(metric_sum "$port" ringws_deliveries_total)
        x1=$(metric_sum "$port" ringws_broker_publishes_dropped_total)
        n1=$(cpu_ticks "$node_pid"); r1=$(cpu_ticks "$REDIS_PID"); t1=$(date +%s.%N)
        stop_pid "$node_pid"
        python3 - "$variant" "$round" "$t0" "$t1" "$p0" "$p1" "$d0" "$d1" "$n0" "$n1" "$r0" "$r1" \
            "$(getconf CLK_TCK)" "$results" "$report" "$((x1 - x0))" <<'PY'
import re, sys
variant, rnd, t0, t1, p0, p1, d0, d1, n0, n1, r0, r1, tck, results, report, dropped = sys.argv[1:]
secs = float(t1) - float(t0); tck = float(tck)
published = float(p1) - float(p0); deliveries = float(d1) - float(d0)
node = (float(n1) - float(n0)) / tck; redis = (float(r1) - float(r0)) / tck
def field(name):
    m = re.search(rf"{name}\D*([0-9][0-9,]*)", report)
    return m.group(1).replace(",", "") if m else "?"
line = (f"{variant:>8} round {rnd}: published {published:,.0f} ({published / secs:,.0f}/s), deliveries "
        f"{deliveries / secs:,.0f}/s, node {node * 1e9 / max(published, 1):,.0f} ns/publish, redis "
        f"{redis * 1e9 / max(published, 1):,.0f} ns/publish; loadgen missing {field('missing')}, "
        f"duplicates {field('duplicate')}, out of order {field('out of order')}; dropped at the node (queue to "
        f"Redis full) {dropped}")
print(line)
with open(results, "a") as f:
    f.write(f"{variant} {node * 1e9 / max(published, 1)} {redis * 1e9 / max(published, 1)}\n")
PY
    done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for variant in ("plain", "history"):
    node = [float(r[1]) for r in rows if r[0] == variant]
    redis = [float(r[2]) for r in rows if r[0] == variant]
    med[variant] = (statistics.median(node), statistics.median(redis))
    print(f"median {variant:>8}: node {med[variant][0]:,.0f} ns/publish, redis {med[variant][1]:,.0f} ns/publish")
print(f"history / plain: node {med['history'][0] / med['plain'][0]:.2f}x, redis {med['history'][1] / med['plain'][1]:.2f}x")
PY
