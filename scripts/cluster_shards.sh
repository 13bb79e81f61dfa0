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
# (`ringws_broker_publishes_dropped_total`: its queue to Redis was full), messages B counted lost, and
# messages its worker inbox had no room for (`ringws_handoff_drops_total`).
#
# What it shows on a small box: whether the cross-node rate is bound by one Redis (then two shards carry
# about twice as much) or by something else (the publishing node, the load generator, the cores shared by
# every process here); the per-message CPU of each Redis is what capacity planning needs either way.
#
# Bounded: every process it starts is stopped by PID on exit (trap). Usage: scripts/cluster_shards.sh
# (env: SUBS=10 SIZE=64 RATE=400000 PUBLISHERS=4 DUR=4, RINGWS=path, LOADGEN=path; default: release builds)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
RINGWS=${RINGWS:-target/release/ringws}; LOADGEN=${LOADGEN:-target/release/ringws-loadgen}
SUBS=${SUBS:-10}; SIZE=${SIZE:-64}; RATE=${RATE:-400000}; PUBLISHERS=${PUBLISHERS:-4}; DUR=${DUR:-4}
require_executable "cargo build --release -p ringws -p ringws-loadgen" "$RINGWS" "$LOADGEN"
command -v redis-server >/dev/null || { echo "cluster_shards.sh: redis-server is not on PATH (apt-get install redis-server)" >&2; exit 2; }

PIDS=()
TMP=$(mktemp -d)
cleanup() {
    stop_pid "${PIDS[@]}"
    rm -rf "$TMP"
}
trap cleanup EXIT

echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD) load $(cut -d' ' -f1-3 /proc/loadavg)"
for shards in 1 2; do
    REDIS_PORTS=(); REDIS_PIDS=(); BROKERS=()
    for i in $(seq "$shards"); do
        port=$(free_port)
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >"$TMP/redis$i.log" 2>&1 &
        REDIS_PIDS+=($!); PIDS+=($!); REDIS_PORTS+=("$port"); BROKERS+=(--broker "redis://127.0.0.1:$port")
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
    a0=$(cpu_ticks "$A_PID"); b0=$(cpu_ticks "$B_PID"); rc0=(); for p in "${REDIS_PIDS[@]}"; do rc0+=("$(cpu_ticks "$p")"); done
    t0=$(date +%s.%N)
    pubs=()
    for topic in "${TOPICS[@]}"; do
        "$LOADGEN" broadcast --url "ws://127.0.0.1:$A_PORT/" --topic "$topic" -c 1 --publishers "$PUBLISHERS" \
            -s "$SIZE" --rate "$RATE" -d "$DUR" -t 1 -q >/dev/null 2>&1 &
        pubs+=($!); PIDS+=($!)
    done
    for p in "${pubs[@]}"; do wait "$p" || true; done
    sleep 0.5 # what is still crossing Redis
    t1=$(date +%s.%N)
    r1=$(metric_sum "$B_PORT" ringws_broker_received_total); d1=$(metric_sum "$B_PORT" ringws_deliveries_total)
    dr1=$(metric_sum "$A_PORT" ringws_broker_publishes_dropped_total); l1=$(metric_sum "$B_PORT" ringws_broker_messages_lost_total)
    h1=$(metric_sum "$B_PORT" ringws_handoff_drops_total)
    a1=$(cpu_ticks "$A_PID"); b1=$(cpu_ticks "$B_PID"); rc1=(); for p in "${REDIS_PIDS[@]}"; do rc1+=("$(cpu_ticks "$p")"); done
    python3 - "$shards" "$t0" "$t1" "$r0" "$r1" "$d0" "$d1" "$dr0" "$dr1" "$l0" "$l1" "$a0" "$a1" "$b0" "$b1" \
        "$(getconf CLK_TCK)" "${rc0[*]}" "${rc1[*]}" "${TOPICS[*]}" "$h0" "$h1" <<'EOF'
import sys
(shards, t0, t1, r0, r1, d0, d1, dr0, dr1, l0, l1, a0, a1, b0, b1, tck, rc0, rc1, topics, h0, h1) = sys.argv[1:]
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
      f"dropped at B's inbox {float(h1) - float(h0):.0f}")
EOF
    stop_pid "${PIDS[@]}"; PIDS=()
done
