#!/bin/sh
# Builds one fuzz target with clang (libFuzzer + ASan + UBSan) and runs it
# for the given number of seconds (default 60) on a writable copy of its seed
# corpus (fuzz/corpus/<name>/).
#   usage: fuzz/run-fuzz.sh config|job_spec|http|jsondoc|grpc_client [seconds] [build-dir] [corpus-dir]
set -eu
name=${1:?usage: fuzz/run-fuzz.sh config|job_spec|http|jsondoc|grpc_client [seconds] [build-dir] [corpus-dir]}
secs=${2:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${3:-$root/build-fuzz}
corpus=${4:-/tmp/fuzz-$name-corpus}
case $name in
config) max_len=8192 ;;
job_spec) max_len=4096 ;;
http) max_len=4096 ;;
jsondoc) max_len=4096 ;;
grpc_client) max_len=16384 ;;
*) echo "run-fuzz.sh: unknown target '$name' (config, job_spec, http, jsondoc, grpc_client)" >&2; exit 2 ;;
esac

CC=clang cmake -S "$root" -B "$build" -DIMAGEN_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target "fuzz_$name" -j2
mkdir -p "$corpus"
cp -n "$root"/fuzz/corpus/"$name"/* "$corpus"/ 2>/dev/null || true
mkdir -p "$build/fuzz-artifacts"
exec timeout $((secs + 60)) "$build/fuzz/fuzz_$name" -max_total_time="$secs" -max_len="$max_len" \
    -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$build/fuzz-artifacts/$name-" "$corpus"
