# shellcheck shell=bash
# Shell helpers the scripts share: start a server in the background by PID (pinned to a CPU if asked), read
# its `... listening on IP:PORT` line with a timeout (failing loudly), stop it by PID, and read a process's
# CPU time and resident memory from /proc.
#
# Source it (`. "$(dirname "$0")/lib.sh"`); it defines functions only: it sets no shell options, starts
# nothing and installs no trap. It never stops a process by name, only by the PID it was given.
#
# The listening line is ringws's `ringws listening on IP:PORT`; the comparison servers under benches/peers
# print the same `listening on IP:PORT` words, so every server a script starts is read the same way.

# start_bg [--cpu CPU] [--err FILE] OUT CMD...: starts CMD in the background with stdout to OUT and stderr
# to FILE (default /dev/null), pinned to CPU if given (and non-empty). Sets BG_PID.
start_bg() {
    local cpu="" err=/dev/null
    while [ $# -gt 0 ]; do
        case $1 in
            --cpu) cpu=$2; shift 2 ;;
            --err) err=$2; shift 2 ;;
            *) break ;;
        esac
    done
    local out=$1
    shift
    if [ -n "$cpu" ]; then
        taskset -c "$cpu" "$@" >"$out" 2>"$err" &
    else
        "$@" >"$out" 2>"$err" &
    fi
    BG_PID=$!
}

# await_listening PID OUT [SECONDS]: waits up to SECONDS (default 10) for a `listening on IP:PORT` line in
# the file OUT, written by process PID. Sets LISTEN_ADDR (IP:PORT) and LISTEN_PORT. If PID exits first or
# the time runs out, says so on stderr, stops PID and returns 1 (so `set -e` scripts end there).
await_listening() {
    local pid=$1 out=$2 seconds=${3:-10} tries
    LISTEN_ADDR=""
    LISTEN_PORT=""
    tries=$((seconds * 20))
    for _ in $(seq "$tries"); do
        LISTEN_ADDR=$(sed -n 's/^.*listening on \([0-9.]*:[0-9]*\).*$/\1/p' "$out" 2>/dev/null | head -n1)
        if [ -n "$LISTEN_ADDR" ]; then
            LISTEN_PORT=${LISTEN_ADDR##*:}
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "server pid $pid exited before printing its listening line (stdout in $out)" >&2
            stop_pid "$pid"
            return 1
        fi
        sleep 0.05
    done
    echo "server pid $pid printed no listening line within ${seconds} s (stdout in $out)" >&2
    stop_pid "$pid"
    return 1
}

# start_listening [--cpu CPU] [--err FILE] [--timeout SECONDS] OUT CMD...: start_bg, then await_listening.
# Sets BG_PID, LISTEN_ADDR and LISTEN_PORT; on failure the process is already stopped and BG_PID is empty.
start_listening() {
    local opts=() seconds=10
    while [ $# -gt 0 ]; do
        case $1 in
            --cpu | --err) opts+=("$1" "$2"); shift 2 ;;
            --timeout) seconds=$2; shift 2 ;;
            *) break ;;
        esac
    done
    start_bg "${opts[@]}" "$@"
    if ! await_listening "$BG_PID" "$1" "$seconds"; then
        BG_PID=""
        return 1
    fi
}

# stop_pid PID...: SIGTERM to each PID, then waits for it (quiet when it is already gone or not our child).
stop_pid() {
    local pid
    for pid in "$@"; do
        [ -n "$pid" ] || continue
        kill "$pid" 2>/dev/null || true
    done
    for pid in "$@"; do
        [ -n "$pid" ] || continue
        wait "$pid" 2>/dev/null || true
    done
}

# cpu_ticks PID: user + system CPU time of PID so far, in clock ticks (`getconf CLK_TCK` per second), from
# /proc/PID/stat (fields 14 and 15, counted after the command name, which may hold spaces).
cpu_ticks() {
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# rss_kib PID: resident memory of PID (VmRSS of /proc/PID/status), in KiB.
rss_kib() {
    awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

# free_port: a TCP port free on 127.0.0.1 right now (for a server that cannot take --port 0).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# metric_sum PORT NAME: NAME's value in http://127.0.0.1:PORT/metrics, summed over its series (workers,
# labels); 0 when absent.
metric_sum() {
    curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 {s += $2} END {print s + 0}'
}

# require_executable HINT FILE...: exits 2 naming the first FILE that is not executable, with HINT (how to
# build it).
require_executable() {
    local hint=$1 bin
    shift
    for bin in "$@"; do
        [ -x "$bin" ] || { echo "missing $bin: $hint" >&2; exit 2; }
    done
}
