#!/usr/bin/env bash
# ws:// against wss:// on the same server build, and full against resumed TLS handshakes: runs
# `tls_bench compare` (examples/tls_bench.rs: the server under `taskset -c 0`, the client under
# `taskset -c 1`) for each size and each build, builds alternating within a round, and prints the server's
# CPU per echoed message and per connection with the wss/ws ratios and resumed/full.
#
# Usage: scripts/tls_bench.sh [size-bytes ...]   (default 1024 16384)
#   env: BINS="target/release/ringws [other builds]" ROUNDS=2 DUR=5 C=16 DEPTH=4
#        TLS_BENCH=target/release/examples/tls_bench
# Build first: cargo build --release -p ringws --bins --examples
set -euo pipefail
cd "$(dirname "$0")/.."
TLS_BENCH=${TLS_BENCH:-target/release/examples/tls_bench}
read -r -a BINS <<<"${BINS:-target/release/ringws}"
ROUNDS=${ROUNDS:-2}; DUR=${DUR:-5}; C=${C:-16}; DEPTH=${DEPTH:-4}
SIZES=("$@"); [ ${#SIZES[@]} -eq 0 ] && SIZES=(1024 16384)
for f in "$TLS_BENCH" "${BINS[@]}"; do
  [ -x "$f" ] || { echo "tls_bench.sh: $f missing (cargo build --release -p ringws --bins --examples)" >&2; exit 2; }
done
echo "tls_bench.sh $(date -u '+%F %T') UTC, $(git rev-parse --short HEAD), load average $(cut -d' ' -f1-3 /proc/loadavg)"
RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT
for round in $(seq 1 "$ROUNDS"); do
  for size in "${SIZES[@]}"; do
    for bin in "${BINS[@]}"; do
      taskset -c 1 "$TLS_BENCH" compare "$bin" -c "$C" -s "$size" --depth "$DEPTH" -d "$DUR" --no-probe |
        sed "s|^|bin=$bin round=$round |" | tee -a "$RESULTS"
    done
  done
done
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$RESULTS" <<'EOF'
import re, sys, statistics
rows = [dict(re.findall(r"(\w+)=(\S+)", line)) for line in open(sys.argv[1])]
def med(bin, **want):
    v = [float(r.get("cpu_us_per_msg") or r["cpu_us_per_connection"]) for r in rows
         if r["bin"] == bin and all(r.get(k) == w for k, w in want.items())]
    return statistics.median(v) if v else float("nan")
for bin in dict.fromkeys(r["bin"] for r in rows):
    for size in dict.fromkeys(r["size"] for r in rows if "size" in r):
        ws, wss = med(bin, mode="echo", scheme="ws", size=size), med(bin, mode="echo", scheme="wss", size=size)
        print(f"{bin} echo {size:>6} B: ws {ws:6.2f} us/msg, wss {wss:6.2f} us/msg, wss/ws {wss / ws:.2f} (medians)")
    ws = med(bin, mode="handshakes", scheme="ws")
    full = med(bin, mode="handshakes", scheme="wss", resume="false")
    resumed = med(bin, mode="handshakes", scheme="wss", resume="true")
    print(f"{bin} connections: ws {ws:.1f} us, wss full {full:.1f} us, wss resumed {resumed:.1f} us, "
          f"resumed/full {resumed / full:.2f} (server CPU per connection, medians)")
EOF
