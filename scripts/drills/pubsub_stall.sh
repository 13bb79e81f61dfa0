#!/usr/bin/env bash
# What a stalled pub/sub worker leaves behind: a `--mode pubsub --workers 2` server under the soak drill's
# pub/sub load (4,500 subscribers, 2 publishers at 20 messages/s of 128 bytes), stopped with SIGSTOP for
# STALL seconds at 26 s and at 46 s (every subscriber's queue then takes a burst), VmRSS printed every 2 s
# for 80 s, then once the load has ended. docs/RELIABILITY.md ("The pub/sub server's steps") keeps results.
#
# Usage: RINGWS=target/release/ringws LOADGEN=target/release/ringws-loadgen scripts/drills/pubsub_stall.sh
#        (env: SUBS=4500 STALL=2)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
RINGWS=${RINGWS:-target/release/ringws}
LOADGEN=${LOADGEN:-target/release/ringws-loadgen}
SUBS=${SUBS:-4500}
STALL=${STALL:-2}
require_executable "cargo build --release -p ringws -p ringws-loadgen" "$RINGWS" "$LOADGEN"
WORK=$(mktemp -d)
SRV="" LG=""
cleanup() {
    [ -n "$SRV" ] && kill -CONT "$SRV" 2>/dev/null
    stop_pid $LG $SRV
    rm -rf "$WORK"
}
trap cleanup EXIT
start_listening "$WORK/srv.out" "$RINGWS" serve --mode pubsub --workers 2 --bind 127.0.0.1 --port 0
SRV=$BG_PID
start_bg "$WORK/lg.out" "$LOADGEN" broadcast --url "ws://$LISTEN_ADDR/" --topic stall -c "$SUBS" --publishers 2 \
    --rate 20 -s 128 -d 75 -q --json "$WORK/lg.json"
LG=$BG_PID
printf 'seconds rss_kib\n'
for t in $(seq 0 2 78); do
    if [ "$t" = 26 ] || [ "$t" = 46 ]; then
        kill -STOP "$SRV"; sleep "$STALL"; kill -CONT "$SRV"
        echo "# stalled ${STALL} s"
    fi
    printf '%s %s\n' "$t" "$(rss_kib "$SRV")"
    sleep 2
done
wait "$LG" || true
LG=""
sleep 2
printf 'after %s\n' "$(rss_kib "$SRV")"
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print('loadgen errors', sum(r.get('errors',{}).values()) if isinstance(r.get('errors'),dict) else r.get('errors'))" "$WORK/lg.json"
