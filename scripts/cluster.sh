#!/usr/bin/env bash
# Two ringws nodes joined through Redis (`--broker`): cross-node deliveries/s and CPU per cross-node
# delivery, next to the single-node figures of the same run.
#
# One redis-server (its own free port, no persistence) and two `ringws serve --mode broadcast --workers 1
# --broker redis://...` nodes, A pinned to CPU 0 and B to CPU 1. Each case holds SUBS idle subscribers
# (`ringws-loadgen connect`, which reads what it is sent) on one node and runs one publisher
# (`ringws-loadgen broadcast -c 1 --publishers 1`, its one subscriber on the publisher's node) on node A:
#   local: the subscribers on A too (every delivery is local to A; B gets the messages from Redis but has
#          no subscriber);
#   cross: the subscribers on B (every one of their deliveries came through Redis).
# For each case the script reads, before and after the publish phase, the CPU time (/proc/PID/stat) of
# both nodes and of Redis and the nodes' `ringws_deliveries_total` and broker counters, and prints
# deliveries/s and CPU ns per delivery on the subscribers' node (the figure the design is judged by: a
# message from Redis is decoded once and shared like a local publish), plus the publisher node's and
# Redis's CPU per published message. The loadgen's subscribers on the subscribers' node are counted by the
# server (`ringws_deliveries_total`), which also shows drops and slow-consumer closes (expected 0).
#
# Then one validated case (`spread`, SPREAD_DUR seconds): the loadgen's own subscribers and publishers
# over both nodes (`--url` given twice: round robin, about SUBS/20 subscribers and one publisher per node),
# so that half of every subscriber's messages crossed Redis and the loadgen checks each delivery (missing,
# duplicates, order) and times it (publish to delivery, local and cross-node deliveries together).
#
# Bounded: every process it starts is stopped by PID on exit (trap), each case lasts DUR seconds plus the
# ramp. Usage: scripts/cluster.sh   (env: SUBS=1000 SIZE=64 RATE=2000 (publishes/s) DUR=4 SPREAD_DUR=3,
# RINGWS=path, LOADGEN=path; default: the release builds)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
RINGWS=${RINGWS:-target/release/ringws}; LOADGEN=${LOADGEN:-target/release/ringws-loadgen}
SUBS=${SUBS:-1000}; SIZE=${SIZE:-64}; RATE=${RATE:-2000}; DUR=${DUR:-4}; SPREAD_DUR=${SPREAD_DUR:-3}
require_executable "cargo build --release --workspace" "$RINGWS" "$LOADGEN"
command -v redis-server >/dev/null || { echo "cluster.sh: redis-server is not on PATH (apt-get install redis-server)" >&2; exit 2; }

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

node() { # node CPU OUT: starts a node, sets BG_PID and LISTEN_PORT
    start_listening --cpu "$1" "$2" "$RINGWS" serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin \
        --mode broadcast --broadcast-include-sender false --max-backpressure 64MiB --idle-timeout 0 \
        --broker "redis://127.0.0.1:$REDIS_PORT"
    PIDS+=("$BG_PID")
}
node 0 "$TMP/a.out"; A_PID=$BG_PID; A_PORT=$LISTEN_PORT
node 1 "$TMP/b.out"; B_PID=$BG_PID; B_PORT=$LISTEN_PORT
for _ in $(seq 100); do
    [ "$(redis-cli -p "$REDIS_PORT" PUBSUB NUMSUB 'ringws:#broadcast' | tail -n1)" = 2 ] && break
    sleep 0.05
done

run_case() { # run_case NAME SUB_PORT SUB_PID
    local name=$1 sub_port=$2 sub_pid=$3 hold=$((DUR + 4)) t0 t1
    taskset -c 1 "$LOADGEN" connect --url "ws://127.0.0.1:$sub_port/" -c "$SUBS" --hold "$hold" -q \
        >/dev/null 2>&1 &
    local conn_pid=$!
    PIDS+=("$conn_pid")
    for _ in $(seq 200); do
        [ "$(metric_sum "$sub_port" ringws_websockets_open)" -ge "$SUBS" ] && break
        sleep 0.05
    done
    local d0 p0 a0 b0 r0 l0 s0
    d0=$(metric_sum "$sub_port" ringws_deliveries_total); p0=$(metric_sum "$A_PORT" ringws_broker_published_total)
    l0=$(metric_sum "$sub_port" ringws_broker_messages_lost_total)
    s0=$(metric_sum "$sub_port" ringws_slow_consumer_closes_total)
    a0=$(cpu_ticks "$A_PID"); b0=$(cpu_ticks "$sub_pid"); r0=$(cpu_ticks "$REDIS_PID"); t0=$(date +%s.%N)
    taskset -c 0 "$LOADGEN" broadcast --url "ws://127.0.0.1:$A_PORT/" -c 1 --publishers 1 -s "$SIZE" \
        --rate "$RATE" -d "$DUR" -t 1 -q >/dev/null 2>&1 || true
    sleep 0.5 # the last messages cross Redis
    local d1 p1 a1 b1 r1 l1 s1
    d1=$(metric_sum "$sub_port" ringws_deliveries_total); p1=$(metric_sum "$A_PORT" ringws_broker_published_total)
    l1=$(metric_sum "$sub_port" ringws_broker_messages_lost_total)
    s1=$(metric_sum "$sub_port" ringws_slow_consumer_closes_total)
    a1=$(cpu_ticks "$A_PID"); b1=$(cpu_ticks "$sub_pid"); r1=$(cpu_ticks "$REDIS_PID"); t1=$(date +%s.%N)
    stop_pid "$conn_pid"
    python3 - "$name" "$t0" "$t1" "$d0" "$d1" "$p0" "$p1" "$a0" "$a1" "$b0" "$b1" "$r0" "$r1" "$l0" "$l1" \
        "$s0" "$s1" "$(getconf CLK_TCK)" "$SUBS" "$SIZE" <<'EOF'
import sys
name, t0, t1, d0, d1, p0, p1, a0, a1, b0, b1, r0, r1, l0, l1, s0, s1, tck, subs, size = sys.argv[1:]
secs = float(t1) - float(t0); tck = float(tck)
deliveries = float(d1) - float(d0); published = float(p1) - float(p0)
sub_cpu = (float(b1) - float(b0)) / tck; pub_cpu = (float(a1) - float(a0)) / tck
redis_cpu = (float(r1) - float(r0)) / tck
per = lambda cpu, n: f"{cpu * 1e9 / n:,.0f}" if n else "n/a"
print(f"{name:>5}: subs={subs} size={size} published={published:.0f} deliveries={deliveries:.0f} "
      f"({deliveries / secs:,.0f}/s) subscribers' node ns/delivery={per(sub_cpu, deliveries)} "
      f"publisher node ns/publish={per(pub_cpu, published)} redis ns/publish={per(redis_cpu, published)} "
      f"lost={float(l1) - float(l0):.0f} slow_consumer_closes={float(s1) - float(s0):.0f}")
EOF
}

echo "redis 127.0.0.1:$REDIS_PORT, node A :$A_PORT (publisher), node B :$B_PORT"
run_case local "$A_PORT" "$A_PID"
run_case cross "$B_PORT" "$B_PID"

# spread: every delivery checked by the loadgen, across the two nodes (an even count of subscribers).
spread_subs=$(((SUBS / 10 + 1) / 2 * 2))
"$LOADGEN" broadcast --url "ws://127.0.0.1:$A_PORT/" --url "ws://127.0.0.1:$B_PORT/" -c "$spread_subs" \
    --publishers 2 -s "$SIZE" -r "$RATE" -d "$SPREAD_DUR" -t 1 -q --json "$TMP/spread.json" >/dev/null 2>&1 || true
python3 - "$TMP/spread.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
b, lat = r["broadcast"], r["latency"]
per_url = ", ".join(f"{u['url']} {u['subscribers']}+{u['publishers']}" for u in r["urls"])
print(f"spread: {per_url} (subscribers+publishers) published={b['published']} delivered={b['delivered']} "
      f"of {b['expected']} missing={b['missing']} duplicates={b['duplicates']} "
      f"out_of_order={b['out_of_order']} errors={r['errors_total']} "
      f"latency p50={lat['p50_us']:.0f}us p99={lat['p99_us']:.0f}us max={lat['max_us']:.0f}us")
sys.exit(0 if r["errors_total"] == 0 else 1)
EOF
