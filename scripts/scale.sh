#!/usr/bin/env bash
# Connection scaling run: TARGET (default 100000) concurrent WebSocket connections to ringws in broadcast
# mode on this machine, held with pings, then one broadcast that every connection must receive. Prints
# connections reached, failures by reason, server and load generator memory per connection, kernel socket
# memory, connect rate and broadcast time. Bounded in time and memory; stops every process it started.
#
# Usage: scripts/scale.sh [TARGET] [options of scripts/scale/run.py, e.g. --hold 60 --json out.json]
set -euo pipefail
cd "$(dirname "$0")/.."
nice -n 10 cargo build --release --workspace --quiet
exec nice -n 10 python3 scripts/scale/run.py "$@"
