#!/usr/bin/env bash
# ws:// against wss:// on the same server build, and full against resumed TLS handshakes: runs
# `tls_bench compare` (examples/tls_bench.rs: the server under `taskset -c 0`, the client under
# `taskset -c 1`) for each size and each build, builds alternating within a round, and prints the server's
# CPU per echoed message and per connection with the wss/ws ratios and resumed/full.
#
# Usage: scripts/tls_bench.sh [size-bytes ...]   (default 1024 16384)
#   env: BINS="target/release/ringws [other builds]" ROUNDS=2 DUR=5 C=16 DEPTH=4 SUITES="default"
#        (SUITES: `tls_bench --suite` values, e.g. "aes128 aes256"; HANDSHAKES=0: echo only)
#        TLS_BENCH=target/release/examples/tls_bench
#
#        scripts/tls_bench.sh handshakes
#   TLS handshakes against uWebSockets.js's SSLApp (benches/peers/uws/server.js, UWS_MODE=echo) in one run:
#   one fresh self-signed ECDSA P-256 certificate for every server, each ringws build in BINS
#   (`serve --workers 1 --no-pin`) and the SSLApp started once under `taskset -c 0`, then per round each
#   server in turn gets `tls_bench handshakes` (C=4 threads, full, then --resume) under `taskset -c 1`;
#   prints connections/s and the server's CPU (utime + stime of /proc/PID/stat) per connection, medians.
#   env: BINS, ROUNDS=3, DUR=5, C=4, NODE_MODULES=benches/peers/node/node_modules (npm ci there first)
# Build first: cargo build --release -p ringws --bins --examples
set -euo pipefail
cd "$(dirname "$0")/.."
TLS_BENCH=${TLS_BENCH:-target/release/examples/tls_bench}
if [ "${1:-}" = handshakes ]; then
  read -r -a BINS <<<"${BINS:-target/release/ringws}"
  ROUNDS=${ROUNDS:-3}; DUR=${DUR:-5}; C=${C:-4}
  NODE_MODULES=${NODE_MODULES:-benches/peers/node/node_modules}
  for f in "$TLS_BENCH" "${BINS[@]}"; do
    [ -x "$f" ] || { echo "tls_bench.sh: $f missing" >&2; exit 2; }
  done
  [ -d "$NODE_MODULES/@trufflesuite/uws-js-unofficial" ] ||
    { echo "tls_bench.sh: no uWebSockets.js in $NODE_MODULES (cd benches/peers/node && npm ci)" >&2; exit 2; }
  DIR=$(mktemp -d)
  PIDS=()
  trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"' EXIT
  "$TLS_BENCH" cert "$DIR" >/dev/null
  free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
  wait_port() {
    for _ in $(seq 100); do
      python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' "$1" 2>/dev/null && return 0
      sleep 0.1
    done
    echo "tls_bench.sh: nothing listens on port $1" >&2; exit 1
  }
  NAMES=(); PORTS=()
  for bin in "${BINS[@]}"; do
    port=$(free_port)
    taskset -c 0 "$bin" serve --bind 127.0.0.1 --port "$port" --workers 1 --no-pin --idle-timeout 0 \
      --tls-cert "$DIR/cert.pem" --tls-key "$DIR/key.pem" >/dev/null 2>&1 &
    PIDS+=($!); NAMES+=("$bin"); PORTS+=("$port"); wait_port "$port"
  done
  port=$(free_port)
  UWS_MODE=echo UWS_CERT="$DIR/cert.pem" UWS_KEY="$DIR/key.pem" NODE_PATH="$NODE_MODULES" \
    taskset -c 0 node benches/peers/uws/server.js "$port" >/dev/null 2>&1 &
  PIDS+=($!); NAMES+=(uws-sslapp); PORTS+=("$port"); wait_port "$port"
  ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
  echo "tls_bench.sh handshakes $(date -u '+%F %T') UTC, $(git rev-parse --short HEAD), load average $(cut -d' ' -f1-3 /proc/loadavg)"
  RESULTS=$DIR/results
  for round in $(seq 1 "$ROUNDS"); do
    for resume in full --resume; do
      for i in "${!NAMES[@]}"; do
        RESUME=(); [ "$resume" = --resume ] && RESUME=(--resume)
        t0=$(ticks "${PIDS[$i]}")
        line=$(taskset -c 1 "$TLS_BENCH" handshakes "127.0.0.1:${PORTS[$i]}" --ca "$DIR/cert.pem" "${RESUME[@]}" -c "$C" -d "$DUR")
        t1=$(ticks "${PIDS[$i]}")
        echo "server=${NAMES[$i]} round=$round $line server_ticks=$((t1 - t0))" | tee -a "$RESULTS"
      done
    done
  done
  echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
  python3 - "$RESULTS" <<'EOF'
import re, sys, statistics
rows = [dict(re.findall(r"(\w+)=(\S+)", line)) for line in open(sys.argv[1])]
for server in dict.fromkeys(r["server"] for r in rows):
    for resume in ("false", "true"):
        rs = [r for r in rows if r["server"] == server and r["resume"] == resume]
        rate = statistics.median(float(r["rate"]) for r in rs)
        cpu = statistics.median(int(r["server_ticks"]) * 1e4 / max(1, int(r["connections"])) for r in rs)
        resumed = sum(int(r["resumed"]) for r in rs) / max(1, sum(int(r["connections"]) for r in rs))
        print(f"{server} {'resumed' if resume == 'true' else 'full'}: {rate:.0f} connections/s, "
              f"server CPU {cpu:.1f} us per connection, {100 * resumed:.0f} % resumed (medians of {len(rs)})")
EOF
  exit 0
fi
read -r -a BINS <<<"${BINS:-target/release/ringws}"
ROUNDS=${ROUNDS:-2}; DUR=${DUR:-5}; C=${C:-16}; DEPTH=${DEPTH:-4}
read -r -a SUITES <<<"${SUITES:-default}"
EXTRA=(); [ "${HANDSHAKES:-1}" = 0 ] && EXTRA=(--no-handshakes)
SIZES=("$@"); [ ${#SIZES[@]} -eq 0 ] && SIZES=(1024 16384)
for f in "$TLS_BENCH" "${BINS[@]}"; do
  [ -x "$f" ] || { echo "tls_bench.sh: $f missing (cargo build --release -p ringws --bins --examples)" >&2; exit 2; }
done
echo "tls_bench.sh $(date -u '+%F %T') UTC, $(git rev-parse --short HEAD), load average $(cut -d' ' -f1-3 /proc/loadavg)"
RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT
for round in $(seq 1 "$ROUNDS"); do
  for size in "${SIZES[@]}"; do
    for suite in "${SUITES[@]}"; do
      for bin in "${BINS[@]}"; do
        SUITE=(); [ "$suite" != default ] && SUITE=(--suite "$suite")
        taskset -c 1 "$TLS_BENCH" compare "$bin" -c "$C" -s "$size" --depth "$DEPTH" -d "$DUR" --no-probe \
          "${SUITE[@]}" "${EXTRA[@]}" | sed "s|^|bin=$bin round=$round |" | tee -a "$RESULTS"
      done
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
    for suite in dict.fromkeys(r["suite"] for r in rows if "suite" in r):
        for size in dict.fromkeys(r["size"] for r in rows if "size" in r):
            ws = med(bin, mode="echo", scheme="ws", size=size, suite=suite)
            wss = med(bin, mode="echo", scheme="wss", size=size, suite=suite)
            print(f"{bin} echo {size:>6} B, client suite {suite}: ws {ws:6.2f} us/msg, wss {wss:6.2f} us/msg, "
                  f"wss/ws {wss / ws:.2f} (medians)")
    if not any(r["mode"] == "handshakes" and r["bin"] == bin for r in rows):
        continue
    ws = med(bin, mode="handshakes", scheme="ws")
    full = med(bin, mode="handshakes", scheme="wss", resume="false")
    resumed = med(bin, mode="handshakes", scheme="wss", resume="true")
    print(f"{bin} connections: ws {ws:.1f} us, wss full {full:.1f} us, wss resumed {resumed:.1f} us, "
          f"resumed/full {resumed / full:.2f} (server CPU per connection, medians)")
EOF
