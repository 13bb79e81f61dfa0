#!/usr/bin/env bash
# Runs every test of the project. Installs what it needs by itself (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --all-targets
cargo test --workspace
