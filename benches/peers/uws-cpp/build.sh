#!/usr/bin/env bash
# Builds the C++ uWebSockets peers: uws-echo (echo.cpp) and uws-broadcast (broadcast.cpp), and uWebSockets'
# own load_test client (benchmarks/load_test.c), from the uWebSockets and uSockets sources that the
# crates.io crate libuwebsockets-sys 0.0.10 ships (uWebSockets and uSockets are Apache-2.0; nothing of them
# is kept in this repository). The crate is downloaded from static.crates.io and its sha256 checked against
# the one crates.io's index lists. uSockets is built as its own Makefile does by default: epoll, no TLS
# (LIBUS_NO_SSL); the servers without zlib (UWS_NO_ZLIB: they never compress); -O3 -march=native -flto, the
# flags of uWebSockets' own build.
#
# Usage: benches/peers/uws-cpp/build.sh [OUT]   (default OUT: target/uws-cpp in the repository; env CC,
#        CXX). Prints the three binaries' paths. Re-running reuses the checked download.
# Needs: curl, tar, sha256sum, a C compiler and a C++20 compiler (gcc/g++ 12 builds it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
OUT=${1:-$repo/target/uws-cpp}
CC=${CC:-gcc}; CXX=${CXX:-g++}
VERSION=0.0.10
SHA256=d51e3baec29ccd68a26e61be5376c35a778f7ebd8584041e7c535e1a80786873
URL=https://static.crates.io/crates/libuwebsockets-sys/libuwebsockets-sys-$VERSION.crate
crate=$OUT/libuwebsockets-sys-$VERSION.crate
src=$OUT/libuwebsockets-sys-$VERSION/uWebSockets
mkdir -p "$OUT"
if ! echo "$SHA256  $crate" | sha256sum -c --status 2>/dev/null; then
    curl -sSfL --retry 3 -o "$crate.part" "$URL"
    if ! echo "$SHA256  $crate.part" | sha256sum -c --status; then
        echo "build.sh: $URL does not have sha256 $SHA256" >&2
        rm -f "$crate.part"
        exit 1
    fi
    mv "$crate.part" "$crate"
    rm -rf "$OUT/libuwebsockets-sys-$VERSION"
fi
[ -d "$src" ] || tar -xzf "$crate" -C "$OUT"

FLAGS=(-O3 -march=native -flto=auto)
obj=$OUT/obj
rm -rf "$obj"; mkdir -p "$obj"
# uSockets: the C files of its default build (the other event loops and TLS compile to nothing here).
for c in "$src"/uSockets/src/*.c "$src"/uSockets/src/eventing/*.c "$src"/uSockets/src/crypto/*.c; do
    "$CC" "${FLAGS[@]}" -DLIBUS_NO_SSL -std=c11 -I"$src/uSockets/src" -c "$c" -o "$obj/$(basename "$c" .c).o"
done
CXXFLAGS=(-std=c++20 "${FLAGS[@]}" -DLIBUS_NO_SSL -DUWS_NO_ZLIB -I"$src/src" -I"$src/uSockets/src")
"$CXX" "${CXXFLAGS[@]}" "$here/echo.cpp" "$obj"/*.o -o "$OUT/uws-echo"
"$CXX" "${CXXFLAGS[@]}" "$here/broadcast.cpp" "$obj"/*.o -o "$OUT/uws-broadcast"
# uWebSockets' load generator (closed loop, one message in flight per connection; 20 B, or >= 64 KiB).
"$CC" "${FLAGS[@]}" -DLIBUS_NO_SSL -std=gnu11 -I"$src/uSockets/src" "$src/benchmarks/load_test.c" "$obj"/*.o \
    -o "$OUT/load_test"
printf '%s\n' "$OUT/uws-echo" "$OUT/uws-broadcast" "$OUT/load_test"
