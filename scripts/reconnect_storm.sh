#!/usr/bin/env bash
# A reconnect storm: N clients (one `ringws-loadgen connect --reconnect` process) with the browser client's
# reconnect policy (full jitter, base 500 ms, cap 30 s: `web/ringws.js`) hold connections to one
# `ringws serve --workers 2`; the server is restarted (SIGTERM, every connection closed with 1001, then a
# new server on the same port as soon as the old one exited), and the clients come back by themselves.
# Sampling the new server's /metrics every 50 ms, it prints the time from the stop until all N are open
# again (and until half, 90 %, 99 %), the peak rate of new connections per second (over windows of at
# least 100 ms),
# and the restart gap itself. Bounded: the load generator holds for HOLD seconds and everything it starts is
# stopped by PID on exit.
#
# Usage: scripts/reconnect_storm.sh   (env: N=10000 HOLD=60 BASE=500 CAP=30000 JITTER=full
#                                      RINGWS=path LOADGEN=path; default: the release builds)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
RINGWS=${RINGWS:-target/release/ringws}; LOADGEN=${LOADGEN:-target/release/ringws-loadgen}
N=${N:-10000}; HOLD=${HOLD:-60}; BASE=${BASE:-500}; CAP=${CAP:-30000}; JITTER=${JITTER:-full}
require_executable "cargo build --release -p ringws -p ringws-loadgen" "$RINGWS" "$LOADGEN"
PIDS=()
TMP=$(mktemp -d)
cleanup() {
    stop_pid "${PIDS[@]}"
    rm -rf "$TMP"
}
trap cleanup EXIT

PORT=$(free_port)
serve() {
    start_listening "$TMP/server.out" "$RINGWS" serve --bind 127.0.0.1 --port "$PORT" --workers 2 --no-pin \
        --idle-timeout 0 --max-connections-per-worker $((N + 1000))
    PIDS+=("$BG_PID")
}
serve
SERVER=$BG_PID
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo ?), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# N=$N backoff: base ${BASE} ms, cap ${CAP} ms, jitter $JITTER; server --workers 2 on 127.0.0.1:$PORT"
"$LOADGEN" connect --url "ws://127.0.0.1:$PORT/" -c "$N" --hold "$HOLD" --reconnect --backoff-base "$BASE" \
    --backoff-cap "$CAP" --backoff-jitter "$JITTER" -q >"$TMP/loadgen.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 600); do
    [ "$(metric_sum "$PORT" ringws_websockets_open)" -ge "$N" ] && break
    sleep 0.1
done
open=$(metric_sum "$PORT" ringws_websockets_open)
[ "$open" -ge "$N" ] || { echo "reconnect_storm.sh: only $open of $N connections opened" >&2; exit 1; }
echo "all $N open; restarting the server"

stopped=$(date +%s%N)
kill "$SERVER"
wait "$SERVER" 2>/dev/null || true
exited=$(date +%s%N)
serve
started=$(date +%s%N)
samples="$TMP/samples"
# The new server starts from nothing: the first burst counts from its start.
echo "$started 0 0" >"$samples"
deadline=$((HOLD - 5))
while :; do
    now=$(date +%s%N)
    echo "$now $(metric_sum "$PORT" ringws_websockets_open) $(metric_sum "$PORT" ringws_websockets_total)" >>"$samples"
    [ "$(tail -n1 "$samples" | cut -d' ' -f2)" -ge "$N" ] && break
    [ $(((now - stopped) / 1000000000)) -ge "$deadline" ] && break
    sleep 0.05
done
python3 - "$samples" "$N" "$stopped" "$exited" "$started" <<'PY'
import sys
path, n, stopped, exited, started = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:])
rows = [tuple(map(int, l.split())) for l in open(path)]
ms = lambda t: (t - stopped) / 1e6
print(f"old server exited {ms(exited):,.0f} ms after the stop; new one listening at {ms(started):,.0f} ms")
for share in (0.5, 0.9, 0.99, 1.0):
    want = n * share
    hit = next((t for t, o, _ in rows if o >= want), None)
    print(f"{share:>5.0%} of {n} open again: " + (f"{ms(hit):,.0f} ms after the stop" if hit else "not within the run"))
# Over windows of at least 100 ms (from each sample to the first one 100 ms or more later).
peak, best, width = 0.0, None, 0
for i in range(len(rows)):
    j = next((j for j in range(i + 1, len(rows)) if rows[j][0] - rows[i][0] >= 100_000_000), None)
    if j is None:
        break
    rate = (rows[j][2] - rows[i][2]) / ((rows[j][0] - rows[i][0]) / 1e9)
    if rate > peak:
        peak, best, width = rate, rows[i][0], (rows[j][0] - rows[i][0]) / 1e6
if best:
    print(f"peak new connections: {peak:,.0f}/s (over {width:,.0f} ms from {ms(best):,.0f} ms)")
PY
