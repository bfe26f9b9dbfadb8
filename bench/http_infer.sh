#!/usr/bin/env bash
# HTTP inference throughput and latency of imagen-server beside nginx, in one run.
#
#   bench/http_infer.sh
#
# Model: `identity16`, imageops `identity` on a 16-element INT32 vector,
# max_batch_size 8 with dims [16] (requests carry shape [1,16]), no
# dynamic_batching, one CPU instance: every request executes alone, so the
# statistics' compute_infer is the cost of one identity call.
# Load: wrk over keep-alive HTTP/1.1 on 127.0.0.1, POSTing the same JSON body,
# at each concurrency in CONCURRENCIES; nginx (one worker per core, access_log
# off) answers the same POST with a fixed 200 body of the same bytes as
# imagen's response. Each point: WARMUP s unmeasured, then DURATION s measured.
# Server overhead comes from GET /v2/models/identity16/stats deltas around
# each measured point: (success.ns - compute_infer.ns) / success.count, and
# at p50 from the nv_inference_*_summary_us quantiles read after each run
# (the server runs with summary_latencies; they cover the last minute).
#
# REPEAT > 1 measures every point that many times, alternating imagen and
# nginx; the table shows the run with the median rate and the min-max range.
#
# Environment (defaults): CONCURRENCIES ("1 16 64"), DURATION (10), WARMUP (2), REPEAT (1),
# HTTP_THREADS (number of cores: one HTTP event loop per core),
# IMAGEN_SERVER_BIN (else build-bench/ is built as Release).
# Prints a table; raw numbers in bench/results/http_infer-<timestamp>.{txt,json}.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

CONCURRENCIES=${CONCURRENCIES:-"1 16 64"}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
REPEAT=${REPEAT:-1}
HTTP_THREADS=${HTTP_THREADS:-$(nproc)}
MODEL=identity16

need wrk nginx curl
bench_init http_infer
NPROC=$(nproc)

# --- model repository -------------------------------------------------------
repo=$WORK/models
write_model "$repo" "$MODEL" \
    'max_batch_size: 8' \
    'input [ { name: "INPUT0", data_type: TYPE_INT32, dims: [ 16 ] } ]' \
    'output [ { name: "OUTPUT0", data_type: TYPE_INT32, dims: [ 16 ] } ]' \
    'instance_group [ { count: 1, kind: KIND_CPU } ]' \
    'parameters { key: "operation" value: { string_value: "identity" } }'
body=$WORK/body.json
printf '%s' '{"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"INT32","data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}]}' >"$body"

# --- imagen-server ----------------------------------------------------------
http_port=$(free_port)
metrics_port=$(free_port)
# shellcheck disable=SC2046
start_server "$WORK/server.log" $(server_flags "$repo" "$http_port" "$metrics_port") \
    --http-thread-count="$HTTP_THREADS" --metrics-config=summary_latencies=true
imagen_pid=$SERVER_PID
wait_ready "$http_port" "$imagen_pid"
url=http://127.0.0.1:$http_port/v2/models/$MODEL/infer
stats_url=http://127.0.0.1:$http_port/v2/models/$MODEL/stats
code=$(curl -s -o "$WORK/response.json" -w '%{http_code}' -X POST --data-binary @"$body" "$url")
[ "$code" = 200 ] || { cat "$WORK/response.json"; die "infer answered $code, expected 200"; }

# --- nginx ------------------------------------------------------------------
ngx=$WORK/nginx
mkdir -p "$ngx"
nginx_port=$(free_port)
resp_body=$(cat "$WORK/response.json")
resp_body=${resp_body//\\/\\\\}
resp_body=${resp_body//&/\\&}
resp_body=${resp_body//|/\\|}
sed -e "s|@WORKERS@|$NPROC|" -e "s|@PORT@|$nginx_port|" -e "s|@PREFIX@|$ngx|g" \
    -e "s|@BODY@|$resp_body|" "$BENCH_DIR/nginx.conf.in" >"$ngx/nginx.conf"
nginx -p "$ngx" -e "$ngx/error.log" -c "$ngx/nginx.conf" &
nginx_pid=$!
track_pid "$nginx_pid"
for _ in $(seq 1 100); do
    curl -sf -o /dev/null -X POST --data-binary @"$body" "http://127.0.0.1:$nginx_port/" && break
    kill -0 "$nginx_pid" 2>/dev/null || { cat "$ngx/error.log"; die "nginx exited"; }
    sleep 0.05
done
nginx_url=http://127.0.0.1:$nginx_port/v2/models/$MODEL/infer
nginx_bytes=$(curl -s -X POST --data-binary @"$body" "$nginx_url" | wc -c)

echo "server   imagen-server --http-thread-count=$HTTP_THREADS; model $MODEL (identity, INT32 [1,16]," \
    "max_batch_size 8, no dynamic batching, 1 CPU instance)"
echo "peer     nginx $(nginx -v 2>&1 | sed 's|.*nginx/||'), worker_processes $NPROC, fixed 200 body" \
    "of $nginx_bytes bytes (imagen's response: $(wc -c <"$WORK/response.json") bytes)"
echo "client   $({ wrk -v 2>&1 || true; } | head -1 | cut -d' ' -f1-2), keep-alive, ${DURATION}s per point after ${WARMUP}s warm-up, $REPEAT run(s) each," \
    "request body $(wc -c <"$body") bytes"
echo

# CPU time (utime+stime, clock ticks) of a process and its children threads;
# for nginx the master and its workers.
cpu_ticks() {
    local total=0 p
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] || continue
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
nginx_pids() {
    echo "$nginx_pid $(pgrep -P "$nginx_pid" | tr '\n' ' ')"
}

export WRK_BODY_FILE=$body
# run_point <label> <c> <repeat> <url> <pids...>
run_point() {
    local label=$1 c=$2 r=$3 target=$4
    shift 4
    local t=$((c < NPROC ? c : NPROC)) out=$WORK/$label-c$c-r$r
    wrk -t"$t" -c"$c" -d"${WARMUP}s" --timeout 5s -s "$BENCH_DIR/wrk/post.lua" "$target" >"$out.warmup" 2>&1 || true
    if [ "$label" = imagen ]; then
        check_alive "$imagen_pid" "$WORK/server.log" "before the c$c run $r"
        curl -sf "$stats_url" >"$out.stats-before" || die "stats request failed before the c$c run"
    fi
    cpu_ticks "$@" >"$out.cpu-before"
    wrk -t"$t" -c"$c" -d"${DURATION}s" --timeout 5s --latency -s "$BENCH_DIR/wrk/post.lua" "$target" >"$out.wrk" 2>&1 ||
        { cat "$out.wrk"; die "wrk failed against $label at c$c"; }
    cpu_ticks "$@" >"$out.cpu-after"
    if [ "$label" = imagen ]; then
        check_alive "$imagen_pid" "$WORK/server.log" "after the c$c run $r"
        curl -sf "$stats_url" >"$out.stats-after" || die "stats request failed after the c$c run"
        curl -sf "http://127.0.0.1:$metrics_port/metrics" >"$out.metrics-after" ||
            die "metrics request failed after the c$c run"
    fi
    echo "  measured $label c=$c run $r: $(sed -n 's/^Requests\/sec:[[:space:]]*//p' "$out.wrk") req/s"
}

for c in $CONCURRENCIES; do
    for r in $(seq 1 "$REPEAT"); do
        run_point imagen "$c" "$r" "$url" "$imagen_pid"
        # shellcheck disable=SC2046
        run_point nginx "$c" "$r" "$nginx_url" $(nginx_pids)
        check_alive "$imagen_pid" "$WORK/server.log" "after the nginx c$c run $r (imagen idle)"
    done
done
echo

check_alive "$imagen_pid" "$WORK/server.log" "at the end"
"$PY" "$BENCH_DIR/report.py" http_infer "$WORK" "$RESULT_JSON" \
    --concurrencies "$CONCURRENCIES" --repeat "$REPEAT" --http-threads "$HTTP_THREADS" --clk-tck "$(getconf CLK_TCK)"

if grep -Eq '^(error|warning) ' "$WORK/server.log"; then
    echo
    echo "server log warnings/errors:"
    grep -E '^(error|warning) ' "$WORK/server.log" | sort | uniq -c | sort -rn | head -20
fi
echo
echo "raw: $RESULT_TXT"
echo "     $RESULT_JSON"
