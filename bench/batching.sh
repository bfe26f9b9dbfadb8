#!/usr/bin/env bash
# Dynamic batching gain: the same `timed` model with and without dynamic_batching,
# served by one imagen-server, loaded in turn by wrk at the same concurrency.
#
#   bench/batching.sh
#
# Both models: imageops `timed` (sleeps fixed_us + per_item_us x batch size),
# fixed_us 2000, per_item_us 250, max_batch_size 8, FP32 dims [-1], one CPU
# instance. `timed_plain` has no dynamic_batching (one request per execution);
# `timed_dynamic` has `dynamic_batching { }` (whatever is queued when the
# instance frees up runs together, up to 8). Requests: JSON FP32 shape [1,16].
# The batch-size histogram is the delta of the statistics' batch_stats over
# the measured run.
#
# Environment (defaults): CONCURRENCY (16), DURATION (10), WARMUP (2),
# FIXED_US (2000), PER_ITEM_US (250), IMAGEN_SERVER_BIN.
# Prints a table; raw numbers in bench/results/batching-<timestamp>.{txt,json}.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

CONCURRENCY=${CONCURRENCY:-16}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
FIXED_US=${FIXED_US:-2000}
PER_ITEM_US=${PER_ITEM_US:-250}
NPROC=$(nproc)

need wrk curl
bench_init batching

repo=$WORK/models
for name in timed_plain timed_dynamic; do
    sched=()
    [ "$name" = timed_dynamic ] && sched=('dynamic_batching { }')
    write_model "$repo" "$name" \
        'max_batch_size: 8' \
        'input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]' \
        'output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]' \
        'instance_group [ { count: 1, kind: KIND_CPU } ]' \
        "${sched[@]+"${sched[@]}"}" \
        'parameters [' \
        '  { key: "operation", value: { string_value: "timed" } },' \
        "  { key: \"fixed_us\", value: { string_value: \"$FIXED_US\" } }," \
        "  { key: \"per_item_us\", value: { string_value: \"$PER_ITEM_US\" } }" \
        ']'
done
body=$WORK/body.json
printf '%s' '{"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"FP32","data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}]}' >"$body"

http_port=$(free_port)
metrics_port=$(free_port)
# shellcheck disable=SC2046
start_server "$WORK/server.log" $(server_flags "$repo" "$http_port" "$metrics_port") --http-thread-count="$NPROC"
wait_ready "$http_port" "$SERVER_PID"
base=http://127.0.0.1:$http_port/v2/models

echo "server   imagen-server --http-thread-count=$NPROC; models timed_plain and timed_dynamic"
echo "client   $({ wrk -v 2>&1 || true; } | head -1 | cut -d' ' -f1-2), c=$CONCURRENCY, ${DURATION}s per model after ${WARMUP}s warm-up"
echo

export WRK_BODY_FILE=$body
t=$((CONCURRENCY < NPROC ? CONCURRENCY : NPROC))
for name in timed_plain timed_dynamic; do
    code=$(curl -s -o "$WORK/$name.first" -w '%{http_code}' -X POST --data-binary @"$body" "$base/$name/infer")
    [ "$code" = 200 ] || { cat "$WORK/$name.first"; die "$name infer answered $code"; }
    wrk -t"$t" -c"$CONCURRENCY" -d"${WARMUP}s" --timeout 10s -s "$BENCH_DIR/wrk/post.lua" "$base/$name/infer" \
        >"$WORK/$name.warmup" 2>&1 || true
    check_alive "$SERVER_PID" "$WORK/server.log" "before the $name run"
    curl -sf "$base/$name/stats" >"$WORK/$name.stats-before" || die "stats request failed before $name"
    wrk -t"$t" -c"$CONCURRENCY" -d"${DURATION}s" --timeout 10s --latency -s "$BENCH_DIR/wrk/post.lua" \
        "$base/$name/infer" >"$WORK/$name.wrk" 2>&1 || { cat "$WORK/$name.wrk"; die "wrk failed on $name"; }
    check_alive "$SERVER_PID" "$WORK/server.log" "after the $name run"
    curl -sf "$base/$name/stats" >"$WORK/$name.stats-after" || die "stats request failed after $name"
    echo "  measured $name: $(sed -n 's/^Requests\/sec:[[:space:]]*//p' "$WORK/$name.wrk") req/s"
done
echo

"$PY" "$BENCH_DIR/report.py" batching "$WORK" "$RESULT_JSON" --single timed_plain --dyn timed_dynamic \
    --concurrency "$CONCURRENCY" --fixed-us "$FIXED_US" --per-item-us "$PER_ITEM_US"

if grep -Eq '^(error|warning) ' "$WORK/server.log"; then
    echo
    echo "server log warnings/errors:"
    grep -E '^(error|warning) ' "$WORK/server.log" | sort | uniq -c | sort -rn | head -20
fi
echo
echo "raw: $RESULT_TXT"
echo "     $RESULT_JSON"
