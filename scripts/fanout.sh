#!/usr/bin/env bash
# Broadcast fanout: delivered messages/s and server CPU per delivered message, for 1, 100, 1000 and 10000
# subscribers and two payload sizes. ringws --mode broadcast --workers 1 pinned to CPU 0, ringws-loadgen
# (one publisher, one thread) pinned to CPU 1; the publish rate is set so that about 150k deliveries/s are
# asked for. CPU = utime + stime of the server from /proc.
#
# Usage: scripts/fanout.sh   (env: SUBS="1 100 1000 10000" SIZES="64 1024" DUR=s)
# Needs: target/release/ringws and target/release/ringws-loadgen (LOADGEN=path to override).
set -euo pipefail
cd "$(dirname "$0")/.."
LOADGEN=${LOADGEN:-target/release/ringws-loadgen}
SUBS=${SUBS:-"1 100 1000 10000"}; SIZES=${SIZES:-"64 1024"}; DUR=${DUR:-4}
for size in $SIZES; do
  for subs in $SUBS; do
    rate=$((150000 / subs)); [ "$rate" -gt 20000 ] && rate=20000; [ "$rate" -lt 5 ] && rate=5
    out=$(mktemp)
    taskset -c 0 target/release/ringws serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin --mode broadcast \
      --idle-timeout 0 >"$out" 2>/dev/null &
    pid=$!
    for _ in $(seq 100); do grep -q "listening on" "$out" && break; sleep 0.1; done
    port=$(sed 's/.*://' "$out")
    t0=$(awk '{print $14+$15}' /proc/$pid/stat)
    json=$(taskset -c 1 "$LOADGEN" broadcast --url "ws://127.0.0.1:$port/" -c "$subs" --publishers 1 -s "$size" \
      --rate "$rate" -d "$DUR" -t 1 -q --json /dev/stdout 2>/dev/null || true)
    t1=$(awk '{print $14+$15}' /proc/$pid/stat)
    kill "$pid"; wait "$pid" 2>/dev/null || true; rm -f "$out"
    python3 -c '
import json, sys
raw, ticks, subs, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
j = json.loads(raw[raw.index("{"):])
c = j.get("counters", {})
delivered = c.get("delivered", j.get("received", 0))
run_s = j.get("run_s", 1) or 1
cpu = ticks / 100
published = c.get("published", j.get("sent"))
expected = int(published or 0) * int(subs)
dup, ooo, err = c.get("duplicates"), c.get("out_of_order"), j.get("errors_total")
check = f"expected={expected} duplicates={dup} out_of_order={ooo} errors={err}"
published = c.get("published", j.get("sent"))
print(f"subs={subs:>6} size={size:>5} published={published} delivered={delivered} "
      f"delivered_per_s={delivered/run_s:,.0f} server_cpu_s={cpu:.2f} "
      f"server_ns_per_delivery={cpu*1e9/max(delivered,1):.0f} {check}")
' "$json" $((t1 - t0)) "$subs" "$size"
  done
done
