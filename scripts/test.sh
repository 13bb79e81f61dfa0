#!/usr/bin/env bash
# Runs every test of the project: unit, property, integration and conformance tests (cargo), then interop
# with real clients (Python websockets, Node ws, headless Chromium). Installs what it needs by itself,
# idempotently (a venv and npm packages under scripts/, Debian's chromium and redis-server if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

# tests/broker_*.rs start redis-server processes of their own (free ports, stopped by PID): they fail,
# never skip, without it. On a real system the package also starts a service on 6379; the tests never use it.
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    echo "test.sh: installing redis-server" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
fi

cargo build --workspace --all-targets
# Before the workspace tests: a sim-ring build leaves a non-serving target/debug/ringws, which they rebuild.
cargo test -p ringws --features sim-ring --test worker_sim
cargo test --workspace
bash scripts/check_deploy.sh
bash scripts/interop.sh
