#!/usr/bin/env bash
# One Redis against two (`--broker` given twice: topics spread over them by rendezvous hashing): the
# cross-node message rate two ringws nodes reach through one shard and through two, in the same run, with
# each Redis's CPU per message.
#
# For SHARDS in 1 2: that many redis-servers (own free ports, no persistence) and two `ringws serve --mode
# pubsub --workers 1` nodes joined through all of them, A pinned to CPU 0 and B to CPU 1. Two topics are
# chosen so that with two shards each lives on its own Redis (read back from Redis: `PUBSUB CHANNELS`).
# Node B holds SUBS idle subscribers of each topic (`ringws-loadgen connect`, which reads what it is sent);
# on node A, one `ringws-loadgen broadcast --topic T` per topic publishes SIZE-byte messages as fast as it
# is let (RATE publishes/s asked, PUBLISHERS connections each) for DUR seconds. Printed per case: messages
# node B received from Redis per second (`ringws_broker_received_total`), deliveries per second on B, each
# Redis's CPU per message it carried, and both nodes' CPU per message; publishes node A dropped
# (`ringws_broker_publishes_dropped_total`: its queue to Redis was full), messages B counted lost,
# messages its worker inbox had no room for (`ringws_handoff_drops_total`), and the links each node reset
# (`ringws_broker_resets_total`: Redis dropping node B over its output-buffer limit shows there).
#
# What it shows on a small box: whether the cross-node rate is bound by one Redis (then two shards carry
# about twice as much) or by something else (the publishing node, the load generator, the cores shared by
# every process here); the per-message CPU of each Redis is what capacity planning needs either way.
#
# Node A's CPU is also split by thread (the worker, the broker publisher threads, the subscriber threads:
# ns per cross-node message each), which says whether its publishing or its worker binds, next to the
# machine's idle share (none left: the box binds, not Redis). ROUNDS > 1 repeats one shard then two,
# alternating, and ends with the median of each and their ratio. PERF=DIR records `perf record -g` of node
# A over each publishing window into DIR/a-SHARDS-ROUND.data (it costs CPU: not for the rate figures).
#
# Bounded: every process it starts is stopped by PID on exit (trap). Usage: scripts/cluster_shards.sh
# (env: SUBS=10 SIZE=64 RATE=400000 PUBLISHERS=4 DUR=4 ROUNDS=1 PERF= REDIS_CPU=, RINGWS=path, LOADGEN=path;
# default: release builds). REDIS_CPU=P limits each Redis to P % of a core (a cgroup each; root): see below.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
RINGWS=${RINGWS:-target/release/ringws}; LOADGEN=${LOADGEN:-target/release/ringws-loadgen}
SUBS=${SUBS:-10}; SIZE=${SIZE:-64}; RATE=${RATE:-400000}; PUBLISHERS=${PUBLISHERS:-4}; DUR=${DUR:-4}
ROUNDS=${ROUNDS:-1}; PERF=${PERF:-}; REDIS_CPU=${REDIS_CPU:-}
require_executable "cargo build --release -p ringws -p ringws-loadgen" "$RINGWS" "$LOADGEN"
command -v redis-server >/dev/null || { echo "cluster_shards.sh: redis-server is not on PATH (apt-get install redis-server)" >&2; exit 2; }

PIDS=()
CGROUPS=()
TMP=$(mktemp -d)
cleanup() {
    stop_pid "${PIDS[@]}"
    for group in "${CGROUPS[@]}"; do rmdir "$group" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

# REDIS_CPU=P: each redis-server in a cgroup of its own (cgroup v1 `cpu`, or v2) limited to P % of one core,
# so that Redis, not the nodes or the shared cores, binds the rate: what sharding is for. Needs root.
limit_cpu() { # limit_cpu PID NAME
    [ -n "$REDIS_CPU" ] || return 0
    local group
    if [ -w /sys/fs/cgroup/cpu ]; then
        group=/sys/fs/cgroup/cpu/$2-$$
        mkdir -p "$group"
        echo 100000 > "$group/cpu.cfs_period_us"
        echo $((REDIS_CPU * 1000)) > "$group/cpu.cfs_quota_us"
    elif [ -w /sys/fs/cgroup/cgroup.procs ]; then
        group=/sys/fs/cgroup/$2-$$
        mkdir -p "$group"
        echo "$((REDIS_CPU * 1000)) 100000" > "$group/cpu.max"
    else
        echo "cluster_shards.sh: REDIS_CPU needs a writable cgroup cpu controller (root)" >&2
        exit 2
    fi
    echo "$1" > "$group/cgroup.procs"
    CGROUPS+=("$group")
}

# idle_ticks: the machine's idle CPU time so far, all cores (clock ticks, /proc/stat: idle + iowait).
idle_ticks() {
    awk '$1 == "cpu" {print $5 + $6}' /proc/stat
}

# thread_ticks PID: "WORKER PUB SUB" CPU ticks of PID's threads by role (the broker's threads summed).
thread_ticks() {
    local w=0 p=0 s=0 t name ticks
    for t in /proc/"$1"/task/*; do
        name=$(cat "$t/comm" 2>/dev/null) || continue
        ticks=$(sed 's/^.*) //' "$t/stat" 2>/dev/null | awk '{print $12 + $13}') || continue
        case $name in
            ringws-worker*) w=$((w + ticks)) ;;
            ringws-broker-p*) p=$((p + ticks)) ;;
            ringws-broker-s*) s=$((s + ticks)) ;;
        esac
    done
    echo "$w $p $s"
}

echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD) load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
for shards in 1 2; do
    REDIS_PORTS=(); REDIS_PIDS=(); BROKERS=()
    for i in $(seq "$shards"); do
        port=$(free_port)
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >"$TMP/redis$i.log" 2>&1 &
        REDIS_PIDS+=($!); PIDS+=($!); REDIS_PORTS+=("$port"); BROKERS+=(--broker "redis://127.0.0.1:$port")
        limit_cpu "$!" "ringws-bench-redis$i-r$round"
        for _ in $(seq 100); do
            [ "$(redis-cli -p "$port" PING 2>/dev/null)" = PONG ] && break
            sleep 0.05
        done
    done
    node() { # node CPU OUT: sets BG_PID and LISTEN_PORT
        start_listening --cpu "$1" "$2" "$RINGWS" serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin \
            --mode pubsub --max-backpressure 64MiB --idle-timeout 0 "${BROKERS[@]}"
        PIDS+=("$BG_PID")
    }
    node 0 "$TMP/a$shards.out"; A_PID=$BG_PID; A_PORT=$LISTEN_PORT
    node 1 "$TMP/b$shards.out"; B_PID=$BG_PID; B_PORT=$LISTEN_PORT

    # Two topics, one on each Redis when there are two: subscribe node B to candidates, read Redis back.
    candidates=(); for i in $(seq 0 15); do candidates+=("bench$i"); done
    query=$(printf 'topic=%s&' "${candidates[@]}")
    "$LOADGEN" connect --url "ws://127.0.0.1:$B_PORT/ws?${query%&}" -c 1 --hold 3 -q >/dev/null 2>&1 &
    probe=$!; PIDS+=("$probe")
    # With one shard both topics are on it; with two, the first candidate on each.
    TOPICS=()
    for _ in $(seq 60); do
        TOPICS=()
        if [ "$shards" = 1 ]; then
            mapfile -t TOPICS < <(redis-cli -p "${REDIS_PORTS[0]}" PUBSUB CHANNELS 'ringws:bench*' | sort | head -n2 | sed 's/^ringws://')
        else
            for port in "${REDIS_PORTS[@]}"; do
                t=$(redis-cli -p "$port" PUBSUB CHANNELS 'ringws:bench*' | sort | head -n1)
                [ -n "$t" ] && TOPICS+=("${t#ringws:}")
            done
        fi
        [ "${#TOPICS[@]}" = 2 ] && break
        sleep 0.05
    done
    stop_pid "$probe"
    [ "${#TOPICS[@]}" = 2 ] || { echo "could not place two topics (${TOPICS[*]})" >&2; exit 1; }

    for topic in "${TOPICS[@]}"; do
        "$LOADGEN" connect --url "ws://127.0.0.1:$B_PORT/ws?topic=$topic" -c "$SUBS" --hold $((DUR + 6)) -q \
            >/dev/null 2>&1 &
        PIDS+=($!)
    done
    for _ in $(seq 200); do
        [ "$(metric_sum "$B_PORT" ringws_websockets_open)" -ge $((2 * SUBS)) ] && break
        sleep 0.05
    done
    sleep 0.3
    r0=$(metric_sum "$B_PORT" ringws_broker_received_total); d0=$(metric_sum "$B_PORT" ringws_deliveries_total)
    dr0=$(metric_sum "$A_PORT" ringws_broker_publishes_dropped_total); l0=$(metric_sum "$B_PORT" ringws_broker_messages_lost_total)
    h0=$(metric_sum "$B_PORT" ringws_handoff_drops_total)
    rsa0=$(metric_sum "$A_PORT" ringws_broker_resets_total); rsb0=$(metric_sum "$B_PORT" ringws_broker_resets_total)
    at0=$(thread_ticks "$A_PID"); idle0=$(idle_ticks)
    a0=$(cpu_ticks "$A_PID"); b0=$(cpu_ticks "$B_PID"); rc0=(); for p in "${REDIS_PIDS[@]}"; do rc0+=("$(cpu_ticks "$p")"); done
    t0=$(date +%s.%N)
    pubs=()
    for topic in "${TOPICS[@]}"; do
        "$LOADGEN" broadcast --url "ws://127.0.0.1:$A_PORT/" --topic "$topic" -c 1 --publishers "$PUBLISHERS" \
            -s "$SIZE" --rate "$RATE" -d "$DUR" -t 1 -q >/dev/null 2>&1 &
        pubs+=($!); PIDS+=($!)
    done
    perf_pid=""
    if [ -n "$PERF" ]; then
        mkdir -p "$PERF"
        perf record -g -q -o "$PERF/a-$shards-$round.data" -p "$A_PID" >/dev/null 2>&1 &
        perf_pid=$!; PIDS+=("$perf_pid")
    fi
    for p in "${pubs[@]}"; do wait "$p" || true; done
    [ -z "$perf_pid" ] || { kill -INT "$perf_pid" 2>/dev/null || true; wait "$perf_pid" 2>/dev/null || true; }
    sleep 0.5 # what is still crossing Redis
    t1=$(date +%s.%N)
    r1=$(metric_sum "$B_PORT" ringws_broker_received_total); d1=$(metric_sum "$B_PORT" ringws_deliveries_total)
    dr1=$(metric_sum "$A_PORT" ringws_broker_publishes_dropped_total); l1=$(metric_sum "$B_PORT" ringws_broker_messages_lost_total)
    h1=$(metric_sum "$B_PORT" ringws_handoff_drops_total)
    rsa1=$(metric_sum "$A_PORT" ringws_broker_resets_total); rsb1=$(metric_sum "$B_PORT" ringws_broker_resets_total)
    at1=$(thread_ticks "$A_PID"); idle1=$(idle_ticks)
    a1=$(cpu_ticks "$A_PID"); b1=$(cpu_ticks "$B_PID"); rc1=(); for p in "${REDIS_PIDS[@]}"; do rc1+=("$(cpu_ticks "$p")"); done
    python3 - "$shards" "$t0" "$t1" "$r0" "$r1" "$d0" "$d1" "$dr0" "$dr1" "$l0" "$l1" "$a0" "$a1" "$b0" "$b1" \
        "$(getconf CLK_TCK)" "${rc0[*]}" "${rc1[*]}" "${TOPICS[*]}" "$h0" "$h1" "$at0" "$at1" "$TMP/results" "$idle0" "$idle1" "$(nproc)" \
        "$((rsa1 - rsa0))/$((rsb1 - rsb0))" <<'EOF'
import sys
(shards, t0, t1, r0, r1, d0, d1, dr0, dr1, l0, l1, a0, a1, b0, b1, tck, rc0, rc1, topics, h0, h1, at0, at1,
 results, idle0, idle1, cores, resets) = sys.argv[1:]
secs = float(t1) - float(t0); tck = float(tck)
received = float(r1) - float(r0); deliveries = float(d1) - float(d0)
per = lambda ticks, n: f"{ticks / tck * 1e9 / n:,.0f}" if n else "n/a"
redis = [float(b) - float(a) for a, b in zip(rc0.split(), rc1.split())]
# Each Redis carried the messages of its topics; with one shard, all of them.
share = received / len(redis)
print(f"shards={shards} topics={topics.replace(' ', ',')}: cross-node messages {received:.0f} "
      f"({received / secs:,.0f}/s), deliveries on B {deliveries / secs:,.0f}/s; "
      f"ns/message: node A {per(float(a1) - float(a0), received)}, node B {per(float(b1) - float(b0), received)}, "
      + ", ".join(f"redis{i + 1} {per(r, share)} ({r / tck / secs * 100:.0f}% of a core)" for i, r in enumerate(redis))
      + f"; dropped at A (queue to Redis full) {float(dr1) - float(dr0):.0f}, lost at B {float(l1) - float(l0):.0f}, "
      f"dropped at B's inbox {float(h1) - float(h0):.0f}, links reset A/B {resets}")
threads = [float(b) - float(a) for a, b in zip(at0.split(), at1.split())]
print("    node A by thread, ns/message (share of a core): " + ", ".join(
    f"{role} {per(t, received)} ({t / tck / secs * 100:.0f}%)"
    for role, t in zip(("worker", "broker publishers", "broker subscribers"), threads))
    + f"; the machine's {cores} cores idle {(float(idle1) - float(idle0)) / tck / secs / float(cores) * 100:.0f}%")
with open(results, "a") as f:
    f.write(f"{shards} {received / secs} {(float(a1) - float(a0)) / tck * 1e9 / max(received, 1)}\n")
EOF
    stop_pid "${PIDS[@]}"; PIDS=()
done
done
python3 - "$TMP/results" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
med = {}
for shards in ("1", "2"):
    rates = [float(r[1]) for r in rows if r[0] == shards]
    ns = [float(r[2]) for r in rows if r[0] == shards]
    med[shards] = statistics.median(rates)
    print(f"median of {len(rates)}, shards={shards}: {med[shards]:,.0f} cross-node messages/s "
          f"(each: {', '.join(f'{r:,.0f}' for r in rates)}), node A {statistics.median(ns):,.0f} ns/message")
print(f"two shards / one: {med['2'] / med['1']:.2f}x")
EOF
