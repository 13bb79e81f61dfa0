#!/usr/bin/env bash
# The C++ uWebSockets peers for the benchmark scripts: builds them once (benches/peers/uws-cpp/build.sh:
# uWebSockets and uSockets from the crates.io crate libuwebsockets-sys 0.0.10, epoll, one thread, no TLS)
# and runs one of them in place of this script (exec: the PID a caller started is the server's, so its
# CPU in /proc is the server's).
#
# Usage: scripts/peers/uws_cpp.sh build                   builds if a binary is missing; prints their paths
#        scripts/peers/uws_cpp.sh echo [--port PORT]      echo server (benches/peers/uws-cpp/echo.cpp)
#        scripts/peers/uws_cpp.sh broadcast [PORT [samples]]   broadcast server (broadcast.cpp)
#        scripts/peers/uws_cpp.sh load_test ARGS...       uWebSockets' benchmarks/load_test
# Both servers print "uws-cpp listening on 127.0.0.1:PORT" (scripts/lib.sh's start_listening reads it).
# Env: UWS_CPP_DIR (default target/uws-cpp in the repository) where the binaries are built and looked for.
# A caller that measures should run `build` first, so that no compiler runs inside a measured window.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=${UWS_CPP_DIR:-$repo/target/uws-cpp}
what=${1:-}
[ $# -gt 0 ] && shift
built() { [ -x "$dir/uws-echo" ] && [ -x "$dir/uws-broadcast" ] && [ -x "$dir/load_test" ]; }
ensure_built() { built || "$repo/benches/peers/uws-cpp/build.sh" "$dir" >/dev/null; }
case $what in
    build) ensure_built; printf '%s\n' "$dir/uws-echo" "$dir/uws-broadcast" "$dir/load_test" ;;
    echo) ensure_built; exec "$dir/uws-echo" "$@" ;;
    broadcast) ensure_built; exec "$dir/uws-broadcast" "$@" ;;
    load_test) ensure_built; exec "$dir/load_test" "$@" ;;
    *) echo "usage: $0 build | echo [--port PORT] | broadcast [PORT [samples]] | load_test ARGS..." >&2; exit 2 ;;
esac
