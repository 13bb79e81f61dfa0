#!/usr/bin/env bash
# CPU per echoed message of the load generator against ringws's own, for each loadgen I/O engine (io_uring,
# epoll), run alternately in the same session. Each run starts a fresh server pinned to CPU 0
# (`ringws serve --workers 1 --no-pin`) and one loadgen thread pinned to CPU 1, and prints: messages/s,
# server us/msg (utime+stime from /proc/PID/stat over the loadgen's whole run), loadgen us/msg (its own
# getrusage, the "cpu" of its --json report, over the same run), loadgen/server ratio, server busy %
# (server CPU / wall time of the run). Then the medians per row and engine, and io_uring/epoll ratios.
#
# Usage: scripts/loadgen_cpu.sh            (env: ROUNDS=3 DUR=5 RATE=20000 ROWS="d8-100 d8-1000 ..."
#                                                ENGINES="uring epoll" SCHEMES="ws" SERVER_CPU=0 LOADGEN_CPU=1)
# SCHEMES="ws wss" (or SCHEME=wss) also runs each row over wss://: the server gets --tls-cert/--tls-key
# (TLS_CERT/TLS_KEY, or an ECDSA P-256 certificate for 127.0.0.1 made with openssl in a temporary
# directory), the loadgen --ca-cert; rows over wss are labelled ENGINE-wss, with wss/ws ratios at the end.
# Rows: d8-100 (100 conns, 20 B, depth 8), d8-1000 (1000 conns, 20 B, depth 8), d8-100-1k (100 conns,
# 1 KiB, depth 8), d1-100 (100 conns, 20 B, depth 1), open-100 (100 conns, 20 B, open loop at RATE msg/s),
# connect-2000 (not a default: `connect -c 2000 --hold 1`; msg/s is then connects/s of the ramp and the
# us/msg columns are CPU per connection, over the whole run).
# Needs target/release/ringws and target/release/ringws-loadgen (cargo build --release --workspace).
# Bounded: every loadgen run has a time limit; every server is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
SERVER=${SERVER:-target/release/ringws}
LOADGEN=${LOADGEN:-target/release/ringws-loadgen}
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-5}; RATE=${RATE:-20000}
ROWS=${ROWS:-"d8-100 d8-1000 d8-100-1k d1-100 open-100"}
ENGINES=${ENGINES:-"uring epoll"}
SCHEMES=${SCHEMES:-${SCHEME:-ws}}
SERVER_CPU=${SERVER_CPU:-0}; LOADGEN_CPU=${LOADGEN_CPU:-1}
require_executable "cargo build --release --workspace" "$SERVER" "$LOADGEN"
HZ=$(getconf CLK_TCK)
RESULTS=$(mktemp)
SERVER_PID=""
CERT_DIR=""
cleanup() {
  stop_pid "$SERVER_PID"
  rm -f "$RESULTS"
  if [ -n "$CERT_DIR" ]; then rm -rf "$CERT_DIR"; fi
}
trap cleanup EXIT
case " $SCHEMES " in
  *" wss "*)
    if [ -z "${TLS_CERT:-}" ]; then
      CERT_DIR=$(mktemp -d)
      TLS_CERT=$CERT_DIR/cert.pem; TLS_KEY=$CERT_DIR/key.pem
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1 \
        -addext "subjectAltName=IP:127.0.0.1" -addext "basicConstraints=critical,CA:FALSE" \
        -keyout "$TLS_KEY" -out "$TLS_CERT" 2>/dev/null || { echo "openssl could not make a certificate" >&2; exit 2; }
    fi ;;
esac

row_args() { # row -> loadgen scenario and arguments
  case $1 in
    d8-100) echo "echo -c 100 -s 20 --depth 8" ;;
    d8-1000) echo "echo -c 1000 -s 20 --depth 8" ;;
    d8-100-1k) echo "echo -c 100 -s 1024 --depth 8" ;;
    d1-100) echo "echo -c 100 -s 20 --depth 1" ;;
    open-100) echo "echo -c 100 -s 20 -r $RATE" ;;
    connect-2000) echo "connect -c 2000 --hold 1" ;;
    *) echo "unknown row $1" >&2; exit 2 ;;
  esac
}

run_one() { # row engine round scheme
  local row=$1 engine=$2 round=$3 scheme=${4:-ws} out json t0 t1 port label=$2
  local server_tls=() loadgen_tls=()
  if [ "$scheme" = wss ]; then
    server_tls=(--tls-cert "$TLS_CERT" --tls-key "$TLS_KEY"); loadgen_tls=(--ca-cert "$TLS_CERT"); label=$engine-wss
  fi
  out=$(mktemp)
  start_listening --cpu "$SERVER_CPU" "$out" "$SERVER" serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin "${server_tls[@]}"
  SERVER_PID=$BG_PID; port=$LISTEN_PORT
  rm -f "$out"
  t0=$(cpu_ticks "$SERVER_PID")
  # shellcheck disable=SC2046
  json=$(timeout $((DUR + 60)) taskset -c "$LOADGEN_CPU" "$LOADGEN" $(row_args "$row") \
    --url "$scheme://127.0.0.1:$port/" "${loadgen_tls[@]}" -t 1 -d "$DUR" --engine "$engine" -q --json - 2>/dev/null || true)
  t1=$(cpu_ticks "$SERVER_PID")
  stop_pid "$SERVER_PID"; SERVER_PID=""
  python3 - "$json" "$((t1 - t0))" "$HZ" "$row" "$label" "$round" >>"$RESULTS" <<'EOF'
import json, sys
text, ticks, hz, row, engine, rnd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:]
try:
    j = json.loads(text[text.index("{"):])
except ValueError:
    print(f"{row}\t{engine}\t{rnd}\tfailed")
    sys.exit(0)
connect = j["scenario"] == "connect"
msgs = max(j["ramp"]["connected"] if connect else j["received"], 1)
rate = j["ramp"]["connects_per_s"] if connect else j["throughput_per_s"]
server_s = ticks / hz
loadgen_s = j["cpu"]["user_s"] + j["cpu"]["sys_s"]
print("\t".join(str(v) for v in [
    row, engine, rnd, rate, server_s * 1e6 / msgs, loadgen_s * 1e6 / msgs,
    100 * server_s / j["elapsed_s"], 100 * loadgen_s / j["elapsed_s"], j["errors_total"]]))
EOF
  tail -n 1 "$RESULTS" | awk -F'\t' '$4 == "failed" { printf "%-10s %-9s round %s  FAILED\n", $1, $2, $3; next }
    { printf "%-10s %-9s round %s  %9.0f msg/s  server %6.3f us/msg  loadgen %6.3f us/msg  ratio %5.2fx  server busy %3.0f%%  loadgen busy %3.0f%%  errors %d\n",
      $1, $2, $3, $4, $5, $6, $6 / $5, $7, $8, $9 }'
}

echo "loadgen_cpu.sh: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
echo "server: taskset -c $SERVER_CPU $SERVER serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin"
echo "loadgen: taskset -c $LOADGEN_CPU $LOADGEN <row> -t 1 -d $DUR --engine <engine>; $ROUNDS rounds; schemes: $SCHEMES"
for row in $ROWS; do
  for round in $(seq "$ROUNDS"); do
    # Alternate which engine goes first, so that drift over time does not favour one.
    order=$ENGINES
    if [ $((round % 2)) -eq 0 ]; then order=$(echo "$ENGINES" | tr ' ' '\n' | tac | tr '\n' ' '); fi
    for engine in $order; do
      for scheme in $SCHEMES; do run_one "$row" "$engine" "$round" "$scheme"; done
    done
  done
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    if len(f) < 9:
        continue
    rows.setdefault(f[0], {}).setdefault(f[1], []).append([float(x) for x in f[3:9]])
print()
print("medians per row and engine (loadgen/server ratio = median loadgen us/msg / median server us/msg)")
print(f"{'row':<10} {'engine':<9} {'msg/s':>9} {'server us/msg':>14} {'loadgen us/msg':>15} {'ratio':>6} {'server busy':>12}")
for row, engines in rows.items():
    med = {}
    for engine, runs in engines.items():
        m = [statistics.median(col) for col in zip(*runs)]
        med[engine] = m
        print(f"{row:<10} {engine:<9} {m[0]:>9.0f} {m[1]:>14.3f} {m[2]:>15.3f} {m[2] / m[1]:>5.2f}x {m[3]:>11.0f}%")
    if "uring" in med and "epoll" in med:
        print(f"{row:<10} uring/epoll loadgen us/msg: {med['uring'][2] / med['epoll'][2]:.2f}x")
    for engine in ("uring", "epoll"):
        if engine in med and engine + "-wss" in med:
            ws, wss = med[engine], med[engine + "-wss"]
            print(f"{row:<10} {engine} wss/ws: server us/msg {wss[1] / ws[1]:.2f}x, loadgen us/msg {wss[2] / ws[2]:.2f}x")
EOF
