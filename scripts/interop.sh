#!/usr/bin/env bash
# Interop with real clients: Python `websockets`, Node `ws`, and headless Chromium on the demo page (its
# plain chat in browser.mjs; the pub/sub chat on web/ringws.js, with history, presence and recovery, in
# browser_chat.mjs; the same chat on two nodes joined through Redis, one restarted while the other takes
# publications, in browser_cluster.mjs; a page whose WebSocket upgrade is blocked, receiving over SSE and
# resuming through Last-Event-ID after a restart, in browser_sse.mjs).
#
# Installs what it needs, idempotently: a venv in scripts/.venv (pip), npm packages in
# scripts/interop/node_modules, and Debian's chromium and redis-server only if they are missing. Starts the
# servers it tests itself on ephemeral ports (read from the `ringws listening on IP:PORT` line), by PID,
# and stops them by PID. Screenshots go to artifacts/. Exits non-zero on any failure.
#
# RINGWS_INTEROP_SERVER: the server command to test instead of target/debug/ringws (built here), e.g. the
# referee: "scripts/.venv/bin/python scripts/interop/referee_server.py".
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ROOT=$PWD
ARTIFACTS=$ROOT/artifacts
LOGS=$ARTIFACTS/interop-logs
mkdir -p "$ARTIFACTS" "$LOGS"

log() { printf 'interop: %s\n' "$*"; }

# --- install ---------------------------------------------------------------------------------------
if [ ! -x scripts/.venv/bin/python ]; then
    log "creating scripts/.venv"
    python3 -m venv scripts/.venv
fi
if ! scripts/.venv/bin/python -c 'import websockets, cryptography' 2>/dev/null; then
    log "installing Python packages"
    scripts/.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/interop/requirements.txt
fi
if [ ! -d scripts/interop/node_modules/ws ] || [ ! -d scripts/interop/node_modules/playwright-core ]; then
    log "installing npm packages"
    (cd scripts/interop && npm ci --no-audit --no-fund --loglevel=error)
fi
if [ ! -x /usr/bin/chromium ]; then
    log "installing chromium"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
if [ -z "${RINGWS_INTEROP_SERVER:-}" ] && ! command -v redis-server >/dev/null; then
    log "installing redis-server"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
fi

# The Python client echoes messages up to 8 MiB: ringws gets room for them (its default is 1 MiB); a server
# given in RINGWS_INTEROP_SERVER takes no ringws flags.
SERVER_FLAGS=()
if [ -n "${RINGWS_INTEROP_SERVER:-}" ]; then
    read -r -a SERVER <<<"$RINGWS_INTEROP_SERVER"
else
    cargo build --quiet --bin ringws
    SERVER=("$ROOT/target/debug/ringws")
    SERVER_FLAGS=(--max-message-size 16MiB)
fi

# --- servers, started and stopped by PID -----------------------------------------------------------
PIDS=()
cleanup() {
    stop_pid "${PIDS[@]}"
}
trap cleanup EXIT

# start_server MODE: starts a server on an ephemeral port; sets SERVER_ADDR (empty if it did not start).
start_server() {
    local mode=$1 out=$LOGS/server-$1.out
    start_bg --err "$LOGS/server-$mode.err" "$out" "${SERVER[@]}" serve --bind 127.0.0.1 --port 0 --mode "$mode" "${SERVER_FLAGS[@]}"
    local pid=$BG_PID
    PIDS+=("$pid")
    SERVER_ADDR=
    if await_listening "$pid" "$out" 20; then
        SERVER_ADDR=$LISTEN_ADDR
        log "$mode server pid $pid on $SERVER_ADDR"
    else
        unset 'PIDS[${#PIDS[@]}-1]'
    fi
    return 0
}

FAILED=0
start_server echo
ECHO_ADDR=$SERVER_ADDR
if [ -z "$ECHO_ADDR" ]; then
    log "FAIL: the echo server did not start (see $LOGS/server-echo.err)"
    exit 1
fi
start_server broadcast
BROADCAST_ADDR=$SERVER_ADDR
if [ -z "$BROADCAST_ADDR" ]; then
    # Only a server that does not know the mode is skipped; one that knows it and fails is a failure.
    if grep -q "invalid value 'broadcast'" "$LOGS/server-broadcast.err" 2>/dev/null; then
        log "SKIP: this server has no broadcast mode: broadcast checks are skipped, the browser test runs in echo mode"
    else
        log "FAIL: the broadcast server did not start (see $LOGS/server-broadcast.err)"
        exit 1
    fi
fi

# --- clients ---------------------------------------------------------------------------------------
log "Python websockets client"
PY_ARGS=(--echo "ws://$ECHO_ADDR/")
if [ -n "$BROADCAST_ADDR" ]; then
    PY_ARGS+=(--broadcast "ws://$BROADCAST_ADDR/")
else
    PY_ARGS+=(--skip-broadcast "the server has no broadcast mode")
fi
scripts/.venv/bin/python scripts/interop/python_client.py "${PY_ARGS[@]}" | tee "$LOGS/python.out" || FAILED=1

# wss:// needs the ringws binary itself (it starts its own TLS servers with a fresh test certificate).
: >"$LOGS/python-wss.out"
if [ -z "${RINGWS_INTEROP_SERVER:-}" ]; then
    log "Python websockets client over wss://"
    scripts/.venv/bin/python scripts/interop/python_wss.py "${SERVER[@]}" | tee "$LOGS/python-wss.out" || FAILED=1
fi

# --compression context also needs the ringws binary (its own server with that flag).
: >"$LOGS/python-context.out"
if [ -z "${RINGWS_INTEROP_SERVER:-}" ]; then
    log "Python websockets client, --compression context"
    scripts/.venv/bin/python scripts/interop/python_context.py "${SERVER[@]}" | tee "$LOGS/python-context.out" || FAILED=1
fi

log "Node ws client"
node scripts/interop/node_client.mjs "ws://$ECHO_ADDR/" | tee "$LOGS/node.out" || FAILED=1

log "headless Chromium on the demo page"
BROWSER_MODE=broadcast
[ -z "$BROADCAST_ADDR" ] && BROWSER_MODE=echo
timeout 180 node scripts/interop/browser.mjs --mode "$BROWSER_MODE" --artifacts "$ARTIFACTS" -- "${SERVER[@]}" \
    | tee "$LOGS/browser.out" || FAILED=1

# The pub/sub chat needs the ringws binary itself (--mode pubsub with history, presence and auth).
: >"$LOGS/browser-chat.out"
if [ -z "${RINGWS_INTEROP_SERVER:-}" ]; then
    log "headless Chromium on the pub/sub chat (web/ringws.js)"
    timeout 240 node scripts/interop/browser_chat.mjs --artifacts "$ARTIFACTS" -- "${SERVER[@]}" \
        | tee "$LOGS/browser-chat.out" || FAILED=1
fi

# Two nodes through Redis (its own redis-server on a free port, and its own nodes), the ringws binary itself.
: >"$LOGS/browser-cluster.out"
if [ -z "${RINGWS_INTEROP_SERVER:-}" ]; then
    log "headless Chromium on the chat across two nodes (Redis), one restarted"
    timeout 240 node scripts/interop/browser_cluster.mjs --artifacts "$ARTIFACTS" -- "${SERVER[@]}" \
        | tee "$LOGS/browser-cluster.out" || FAILED=1
fi

# A page whose WebSocket is blocked (a proxy refuses the upgrade): SSE, and Last-Event-ID after a restart.
: >"$LOGS/browser-sse.out"
if [ -z "${RINGWS_INTEROP_SERVER:-}" ]; then
    log "headless Chromium with the WebSocket blocked: SSE fallback, resumed after a restart"
    timeout 240 node scripts/interop/browser_sse.mjs --artifacts "$ARTIFACTS" -- "${SERVER[@]}" \
        | tee "$LOGS/browser-sse.out" || FAILED=1
fi

# The servers must still be alive after every client.
for pid in "${PIDS[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        log "FAIL: server pid $pid exited during the interop run"
        FAILED=1
    fi
done

# Totals over the clients (each prints `N passed, N failed` as its last line).
PASSED_TOTAL=$(cat "$LOGS"/{python,python-wss,python-context,node,browser,browser-chat,browser-cluster,browser-sse}.out | grep -c '^ok ' || true)
FAILED_TOTAL=$(cat "$LOGS"/{python,python-wss,python-context,node,browser,browser-chat,browser-cluster,browser-sse}.out | grep -c '^FAIL ' || true)
SKIPPED_TOTAL=$(cat "$LOGS"/{python,python-wss,python-context,node,browser,browser-chat,browser-cluster,browser-sse}.out | grep -c '^SKIP ' || true)
if [ "$FAILED" -ne 0 ] && [ "$FAILED_TOTAL" -eq 0 ]; then
    FAILED_TOTAL=1 # a client or server died without reporting a check
fi
echo "interop: $PASSED_TOTAL passed, $FAILED_TOTAL failed, $SKIPPED_TOTAL skipped"

if [ "$FAILED" -ne 0 ]; then
    log "FAILED (server logs in $LOGS)"
    exit 1
fi
log "all interop checks passed"
