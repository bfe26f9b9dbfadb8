#!/usr/bin/env bash
# Runs every benchmark in turn (make bench calls this):
#   http_infer.sh, batching.sh, startup.sh, memory.sh, imageops.sh, grpc.sh,
#   pipeline.sh, worker.sh, queue.sh
# Each prints its own table and saves bench/results/<name>-<timestamp>.{txt,json}.
# The server is built once as Release in build-bench/ unless IMAGEN_SERVER_BIN
# names a binary. Each script's environment knobs pass through (DURATION,
# REQUESTS, RUNS, ...). Exit status: 0 when all ran, else the number that failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

if [ -z "${IMAGEN_SERVER_BIN:-}" ]; then
    if [ ! -f "$root/build-bench/CMakeCache.txt" ]; then
        cmake -S "$root" -B "$root/build-bench" -DCMAKE_BUILD_TYPE=Release
    fi
    cmake --build "$root/build-bench" -j "$(nproc)" --target imagen-server
    export IMAGEN_SERVER_BIN=$root/build-bench/imagen-server
fi

failed=()
for b in http_infer batching startup memory imageops grpc pipeline worker queue; do
    echo
    if ! "$here/$b.sh"; then
        echo "run-all.sh: $b.sh failed" >&2
        failed+=("$b")
    fi
done
echo
if [ ${#failed[@]} -gt 0 ]; then
    echo "run-all.sh: failed: ${failed[*]}"
    exit ${#failed[@]}
fi
echo "run-all.sh: all benchmarks ran; results in ${BENCH_RESULTS:-$here/results}/"
