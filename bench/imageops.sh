#!/usr/bin/env bash
# Image operations: megapixels per second of output for upscale (x2, x4),
# enhance, style_comic, style_aged and background_remove at 512x512 and
# 2048x2048, each beside the closest libvips command (Pillow where libvips
# has none, the 10 MP/s target for background_remove) on the same image in
# the same run, and the peak working memory of one execution against
# input + output bytes. See bench/imageops.py for how each side is timed.
#
#   bench/imageops.sh            (SIZES=512,2048 RUNS=5 by default)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

need vips
bench_init imageops
BENCH_BIN=${IMAGEN_BENCH_IMAGEOPS_BIN:-}
if [ -z "$BENCH_BIN" ]; then
    cmake --build "$ROOT/build-bench" -j "$(nproc)" --target imagen-bench-imageops >"$WORK/build-bench.log" 2>&1 ||
        { tail -20 "$WORK/build-bench.log" >&2; die "building imagen-bench-imageops failed"; }
    BENCH_BIN=$ROOT/build-bench/imagen-bench-imageops
fi
echo "vips     $(vips --version)"
echo
META_JSON=$META_JSON "$PY" "$BENCH_DIR/imageops.py" "$BENCH_BIN" "$RESULT_JSON"
