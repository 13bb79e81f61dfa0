#!/usr/bin/env bash
# Echo and broadcast benchmark: ringws side by side with uWebSockets (uWebSockets.js), fastwebsockets,
# tokio-tungstenite and Node ws echo servers, same run, same load generator (ringws-loadgen).
#
# Builds release binaries, then for each server: starts it pinned to CPU $SERVER_CPU (ringws with one
# worker; the others single-threaded: Rust peers on a current-thread runtime, Node peers on Node's one
# event loop), runs ringws-loadgen pinned to CPU $LOADGEN_CPU for the
# standard scenarios, reads the server's CPU time (utime + stime from /proc/PID/stat) before and after each
# scenario, and stops the server. Prints one table and writes every figure to a JSON file.
#
# Environment (all optional):
#   DURATION=5        seconds per scenario          DEPTH=8            closed-loop pipeline depth
#   SERVER_CPU=0      CPU for the server            LOADGEN_CPU=1      CPU for the load generator
#   SERVERS="ringws uws fastwebsockets tungstenite nodews"   OUT=target/bench   output directory
#   SCENARIOS="echo-100-20B echo-100-1KiB echo-1000-20B echo-1000-1KiB echo-100-20B-d1 open-50pct
#              broadcast-1000 broadcast-1000-r500"
#
# The closed-loop scenarios run DEPTH messages in flight per connection (peak throughput). Open-loop messages
# each go out alone, so open-50pct runs at half the peak of echo-100-20B-d1 (closed loop, depth 1).
# broadcast-1000: one publisher at 1000 msgs/s of 64 B to 1000 subscribers (1M deliveries/s asked);
# broadcast-1000-r500: the same at 500 msgs/s (0.5M deliveries/s), a rate uWebSockets.js also sustains here.
#
# uws is benches/peers/node/uws-echo.mjs (and, for broadcast-1000, benches/peers/uws/server.js, which
# publishes every message to every other connection like `ringws serve --mode broadcast`); nodews is
# benches/peers/node/ws-echo.mjs. Both need Node and `npm ci` in benches/peers/node (done here when
# node_modules is missing). The table's "vs uws" column is the server CPU per message over uWebSockets' in the
# same scenario (the product target for ringws echo is <= 0.70x). A load average above 1.5 before the run or
# before a server's scenarios is printed as a warning: figures taken on a busy machine are noisy.
#
# Bounded: every loadgen run has a timeout; every process started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DURATION=${DURATION:-5}
DEPTH=${DEPTH:-8}
SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
SERVERS=${SERVERS:-"ringws uws fastwebsockets tungstenite nodews"}
SCENARIOS=${SCENARIOS:-"echo-100-20B echo-100-1KiB echo-1000-20B echo-1000-1KiB echo-100-20B-d1 open-50pct broadcast-1000 broadcast-1000-r500"}
OUT=${OUT:-target/bench}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUN_DIR="$OUT/$STAMP"
mkdir -p "$RUN_DIR"
TICKS=$(getconf CLK_TCK)
NODE_PEERS=benches/peers/node

loadavg() { cut -d' ' -f1 /proc/loadavg; }
# warn_if_busy WHEN: prints a warning (and records it) when the 1-minute load average is above 1.5.
warn_if_busy() {
    local l
    l=$(loadavg)
    echo "{\"when\": \"$1\", \"loadavg_1m\": $l}" >>"$RUN_DIR/load.jsonl"
    if awk -v l="$l" 'BEGIN { exit !(l > 1.5) }'; then
        echo "WARNING: load average $l > 1.5 $1: the machine is busy, figures are noisy" >&2
    fi
}
warn_if_busy "before the run"

echo "== building (release, nice 10)" >&2
nice -n 10 cargo build --release -p ringws -p ringws-loadgen >&2
# Only the Rust peers named in SERVERS (the peers' crate is a build of its own, minutes when cold).
PEER_BINS=()
for server in $SERVERS; do
    case $server in
        tungstenite) PEER_BINS+=(--bin tungstenite-echo) ;;
        fastwebsockets) PEER_BINS+=(--bin fastwebsockets-echo) ;;
    esac
done
if ((${#PEER_BINS[@]})); then
    nice -n 10 cargo build --release --manifest-path benches/peers/Cargo.toml "${PEER_BINS[@]}" >&2
fi
if [[ " $SERVERS " == *" uws "* || " $SERVERS " == *" nodews "* ]] && [[ ! -d "$NODE_PEERS/node_modules" ]]; then
    echo "== npm ci in $NODE_PEERS" >&2
    (cd "$NODE_PEERS" && npm ci --no-audit --no-fund >&2)
fi

RINGWS=target/release/ringws
LOADGEN=target/release/ringws-loadgen
PEERS=benches/peers/target/release

SERVER_PID=""
SERVER_ADDR=""
cleanup() {
    stop_pid "$SERVER_PID"
    SERVER_PID=""
}
trap cleanup EXIT INT TERM

# start_server NAME [MODE]: starts the server pinned to SERVER_CPU, sets SERVER_PID and SERVER_ADDR.
start_server() {
    local name=$1 mode=${2:-echo} log="$RUN_DIR/server-$1-$2.log" cmd
    case $name in
        ringws) cmd=("$RINGWS" serve --bind 127.0.0.1 --port 0 --workers 1 --no-pin --mode "$mode") ;;
        tungstenite) cmd=("$PEERS/tungstenite-echo" --port 0) ;;
        fastwebsockets) cmd=("$PEERS/fastwebsockets-echo" --port 0) ;;
        uws) if [[ $mode == broadcast ]]; then
                 # The pub/sub reference server resolves uWebSockets.js from this directory's install.
                 cmd=(env NODE_PATH="$NODE_PEERS/node_modules" node benches/peers/uws/server.js 0)
             else
                 cmd=(node "$NODE_PEERS/uws-echo.mjs" --port 0)
             fi ;;
        nodews) cmd=(node "$NODE_PEERS/ws-echo.mjs" --port 0) ;;
        *) echo "unknown server $name" >&2; return 1 ;;
    esac
    start_bg --cpu "$SERVER_CPU" --err "$log" "$log.out" "${cmd[@]}"
    SERVER_PID=$BG_PID
    if ! await_listening "$SERVER_PID" "$log.out" 10; then
        echo "$name did not start; see $log" >&2
        SERVER_PID=""
        return 1
    fi
    SERVER_ADDR=$LISTEN_ADDR
}

server_ticks() {
    cpu_ticks "$SERVER_PID"
}

# run_scenario SERVER SCENARIO ARGS...: one loadgen run; appends a JSON line to the results.
run_scenario() {
    local server=$1 scenario=$2
    shift 2
    local json="$RUN_DIR/$server-$scenario.json" before after status=0
    before=$(server_ticks)
    timeout $((${DURATION%.*} + 90)) taskset -c "$LOADGEN_CPU" "$LOADGEN" "$@" --url "ws://$SERVER_ADDR/" \
        --threads 1 --quiet --json "$json" >/dev/null || status=$?
    after=$(server_ticks)
    if [[ ! -s "$json" ]]; then
        echo "   $server $scenario: loadgen failed (exit $status), no report" >&2
        return 0
    fi
    python3 - "$json" "$server" "$scenario" "$before" "$after" "$TICKS" "$status" >>"$RUN_DIR/rows.jsonl" <<'EOF'
import json, sys
path, server, scenario, before, after, ticks, status = sys.argv[1:]
r = json.load(open(path))
units = r["broadcast"]["delivered"] if r.get("broadcast") else r["received"]
server_cpu = (int(after) - int(before)) / int(ticks)
loadgen_cpu = r["cpu"]["user_s"] + r["cpu"]["sys_s"]
print(json.dumps({
    "server": server, "scenario": scenario, "msgs_per_s": r["throughput_per_s"], "messages": units,
    "server_cpu_s": server_cpu, "server_us_per_msg": server_cpu * 1e6 / max(units, 1),
    "server_busy": server_cpu / max(r["elapsed_s"], 1e-9), "run_s": r["run_s"],
    "loadgen_cpu_s": loadgen_cpu, "loadgen_us_per_msg": loadgen_cpu * 1e6 / max(units, 1),
    "p50_us": r["latency"]["p50_us"], "p99_us": r["latency"]["p99_us"], "p999_us": r["latency"]["p999_us"],
    "errors": r["errors_total"], "loadgen_exit": int(status), "mode": r["mode"], "report": path,
}))
EOF
    echo "   $server $scenario done" >&2
}

peak_of() { # peak_of SERVER: closed-loop depth-1 msgs/s of echo-100-20B-d1 for SERVER in this run
    python3 - "$RUN_DIR/rows.jsonl" "$1" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
peak = [r["msgs_per_s"] for r in rows if r["server"] == sys.argv[2] and r["scenario"] == "echo-100-20B-d1"]
print(int(peak[0]) if peak else 0)
EOF
}

has() { [[ " $SCENARIOS " == *" $1 "* ]]; }

touch "$RUN_DIR/rows.jsonl"
for server in $SERVERS; do
    echo "== $server" >&2
    warn_if_busy "before $server"
    start_server "$server" echo || continue
    has echo-100-20B && run_scenario "$server" echo-100-20B echo -c 100 -s 20 -d "$DURATION" --depth "$DEPTH"
    has echo-100-1KiB && run_scenario "$server" echo-100-1KiB echo -c 100 -s 1024 -d "$DURATION" --depth "$DEPTH"
    has echo-1000-20B && run_scenario "$server" echo-1000-20B echo -c 1000 -s 20 -d "$DURATION" --depth "$DEPTH"
    has echo-1000-1KiB && run_scenario "$server" echo-1000-1KiB echo -c 1000 -s 1024 -d "$DURATION" --depth "$DEPTH"
    has echo-100-20B-d1 && run_scenario "$server" echo-100-20B-d1 echo -c 100 -s 20 -d "$DURATION" --depth 1
    if has open-50pct; then
        peak=$(peak_of "$server")
        if [[ "$peak" -gt 0 ]]; then
            run_scenario "$server" open-50pct echo -c 100 -s 20 -d "$DURATION" --rate $((peak / 2))
        else
            echo "   $server open-50pct skipped: needs echo-100-20B-d1 (the peak) in the same run" >&2
        fi
    fi
    cleanup
    for bc in broadcast-1000:1000 broadcast-1000-r500:500; do
        name=${bc%%:*} rate=${bc##*:}
        has "$name" || continue
        if [[ "$server" != ringws && "$server" != uws ]]; then
            echo "   $server $name skipped: this comparison server only echoes" >&2
        elif [[ "$server" == ringws ]] && ! "$RINGWS" serve --help 2>/dev/null | grep -q -- "broadcast"; then
            echo "   ringws $name skipped: this ringws has no --mode broadcast" >&2
        else
            start_server "$server" broadcast || continue
            run_scenario "$server" "$name" broadcast -c 1000 --publishers 1 -r "$rate" -s 64 -d "$DURATION"
            cleanup
        fi
    done
done

python3 - "$RUN_DIR" "$DURATION" "$DEPTH" "$SERVER_CPU" "$LOADGEN_CPU" <<'EOF'
import json, os, platform, sys, time
run_dir, duration, depth, server_cpu, loadgen_cpu = sys.argv[1:]
rows = [json.loads(l) for l in open(os.path.join(run_dir, "rows.jsonl")) if l.strip()]
load = [json.loads(l) for l in open(os.path.join(run_dir, "load.jsonl")) if l.strip()]
base = {r["scenario"]: r for r in rows if r["server"] == "ringws"}
uws = {r["scenario"]: r for r in rows if r["server"] == "uws"}
def ratio(a, b):
    return a / b if b else None
def fmt(x):
    return f"{x:.2f}x" if x is not None else "-"
print(f"scenario            server          msgs/s   srv us/msg  vs ringws    vs uws  srv busy  lg us/msg  lg/srv"
      f"    p50 us    p99 us  errors")
for r in rows:
    b, u = base.get(r["scenario"]), uws.get(r["scenario"])
    r["server_cpu_vs_ringws"] = ratio(r["server_us_per_msg"], b["server_us_per_msg"]) if b else None
    r["msgs_per_s_vs_ringws"] = ratio(r["msgs_per_s"], b["msgs_per_s"]) if b else None
    r["server_cpu_vs_uws"] = ratio(r["server_us_per_msg"], u["server_us_per_msg"]) if u else None
    r["msgs_per_s_vs_uws"] = ratio(r["msgs_per_s"], u["msgs_per_s"]) if u else None
    r["loadgen_vs_server_cpu"] = ratio(r["loadgen_us_per_msg"], r["server_us_per_msg"])
    print(f'{r["scenario"]:<19} {r["server"]:<15} {r["msgs_per_s"]:>8.0f} {r["server_us_per_msg"]:>11.3f} '
          f'{fmt(r["server_cpu_vs_ringws"]):>10} {fmt(r["server_cpu_vs_uws"]):>9} {r["server_busy"] * 100:>8.0f}% '
          f'{r["loadgen_us_per_msg"]:>10.3f} {fmt(r["loadgen_vs_server_cpu"]):>7} {r["p50_us"]:>9.1f} '
          f'{r["p99_us"]:>9.1f} {r["errors"]:>7}')
side = []
for sc, b in base.items():
    u = uws.get(sc)
    if u:
        side.append({"scenario": sc, "ringws_us_per_msg": b["server_us_per_msg"], "uws_us_per_msg": u["server_us_per_msg"],
                     "ringws_over_uws_cpu": ratio(b["server_us_per_msg"], u["server_us_per_msg"]),
                     "ringws_over_uws_msgs_per_s": ratio(b["msgs_per_s"], u["msgs_per_s"]),
                     "errors": b["errors"] + u["errors"]})
if side:
    print("\nringws / uWebSockets, server CPU per message (echo target <= 0.70x; broadcast-1000 is per delivery,"
          " its fanout target >= 1.5x is on deliveries/s at saturation, which this fixed-rate row does not measure)")
    for x in side:
        print(f'  {x["scenario"]:<19} {x["ringws_us_per_msg"]:.3f} / {x["uws_us_per_msg"]:.3f} us = '
              f'{fmt(x["ringws_over_uws_cpu"])}   msgs/s ratio {fmt(x["ringws_over_uws_msgs_per_s"])}'
              f'{"   ERRORS " + str(x["errors"]) if x["errors"] else ""}')
busy = [l for l in load if l["loadavg_1m"] > 1.5]
if busy:
    print(f"\nWARNING: load average above 1.5 at {len(busy)} of {len(load)} checks "
          f"(max {max(l['loadavg_1m'] for l in busy)}): noisy run")
summary = {
    "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "machine": {"kernel": platform.release(), "cpus": os.cpu_count()},
    "settings": {"duration_s": float(duration), "depth": int(depth), "server_cpu": int(server_cpu),
                 "loadgen_cpu": int(loadgen_cpu)},
    "load": load,
    "notes": "vs ringws / vs uws = server CPU per message relative to ringws / uWebSockets.js in the same scenario "
             "(higher = more CPU per message); srv busy = server CPU time over the loadgen's whole run (ramp + run "
             "+ drain; 100% = one core); lg/srv = load generator CPU per message over the server's",
    "ringws_vs_uws": side,
    "rows": rows,
}
with open(os.path.join(run_dir, "results.json"), "w") as f:
    json.dump(summary, f, indent=2)
print(f"\nresults: {os.path.join(run_dir, 'results.json')}")
EOF
