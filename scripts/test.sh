#!/usr/bin/env bash
# Runs every test of the project: unit, property, integration and conformance tests (cargo), then interop
# with real clients (Python websockets, Node ws, headless Chromium). Installs what it needs by itself,
# idempotently (a venv and npm packages under scripts/, Debian's chromium if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --all-targets
# Before the workspace tests: a sim-ring build leaves a non-serving target/debug/ringws, which they rebuild.
cargo test -p ringws --features sim-ring --test worker_sim
cargo test --workspace
bash scripts/check_deploy.sh
bash scripts/interop.sh
