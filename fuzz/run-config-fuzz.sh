#!/bin/sh
# Builds the config.pbtxt fuzz target with clang (libFuzzer + ASan + UBSan)
# and runs it for the given number of seconds (default 60) on a writable copy
# of the seed corpus.
#   usage: fuzz/run-config-fuzz.sh [seconds] [build-dir] [corpus-dir]
set -eu
secs=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${2:-$root/build-fuzz}
corpus=${3:-/tmp/fuzz-config-corpus}

CC=clang cmake -S "$root" -B "$build" -DIMAGEN_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target fuzz_config -j2
mkdir -p "$corpus"
cp -n "$root"/fuzz/corpus/config/*.pbtxt "$corpus"/ 2>/dev/null || true
mkdir -p "$build/fuzz-artifacts"
exec timeout $((secs + 60)) "$build/fuzz/fuzz_config" -max_total_time="$secs" -max_len=8192 \
    -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$build/fuzz-artifacts/" "$corpus"
