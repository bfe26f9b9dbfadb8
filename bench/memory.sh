#!/usr/bin/env bash
# Memory: resident size (VmRSS from /proc/<pid>/status) of imagen-server
#   1. idle, with MODELS small identity models loaded;
#   2. after REQUESTS keep-alive infer requests at concurrency CONCURRENCY, and
#      again after a second batch of REQUESTS (a steady climb means a leak, a
#      one-time step means allocator and connection warm-up);
#   3. with INFLIGHT requests of PAYLOAD_MIB MiB each held in flight by a slow
#      `timed` model (one instance, no batching: one executing, the rest
#      queued), on a fresh server: (RSS in flight - RSS idle) / INFLIGHT is the
#      cost of one in-flight request, compared with its payload.
#
#   bench/memory.sh
#
# With gdb installed (MALLOC_PROBE=1, the default), glibc's malloc_stats() is
# read at each point (live heap bytes) and malloc_trim(0) is called at the end,
# to tell a leak from memory the allocator keeps.
# Load generator: h2load --h1 (Debian nghttp2-client; exact request count);
# without it, wrk is run in 10 s slices until the count is reached.
# In-flight clients: one curl per request, binary tensor data (the
# Inference-Header-Content-Length extension), killed with the server at the end.
#
# Environment (defaults): MODELS (10), REQUESTS (1000000), CONCURRENCY (64),
# ROUNDS (2), INFLIGHT (64), PAYLOAD_MIB (1), MALLOC_PROBE (1), IMAGEN_SERVER_BIN.
# Prints a table; raw numbers in bench/results/memory-<timestamp>.{txt,json}.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

MODELS=${MODELS:-10}
REQUESTS=${REQUESTS:-1000000}
CONCURRENCY=${CONCURRENCY:-64}
ROUNDS=${ROUNDS:-2}
INFLIGHT=${INFLIGHT:-64}
PAYLOAD_MIB=${PAYLOAD_MIB:-1}
HOLD_US=60000000 # the slow model's execution: far longer than the measurement
NPROC=$(nproc)

need curl
USE_GDB=0
if [ "${MALLOC_PROBE:-1}" = 1 ] && command -v gdb >/dev/null 2>&1; then USE_GDB=1; fi
if command -v h2load >/dev/null 2>&1; then LOAD_TOOL=h2load; else need wrk; LOAD_TOOL=wrk; fi
bench_init memory

status_kib() { # status_kib <pid> <field>
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# With gdb present: glibc's own count of live heap bytes, to tell a leak
# (live bytes grow) from memory the allocator keeps after free (RSS grows,
# live bytes do not). malloc_stats() prints to the server's stderr, which is
# its log file; the bytes it appends there are parsed. Prints -1 without gdb.
malloc_in_use() { # malloc_in_use <pid> <log>
    local pid=$1 log=$2 size
    if [ "$USE_GDB" != 1 ]; then
        echo -1
        return
    fi
    size=$(stat -c %s "$log")
    gdb -p "$pid" -batch -ex 'call (void)malloc_stats()' >/dev/null 2>&1 || { echo -1; return; }
    tail -c +$((size + 1)) "$log" | awk '/^Total/ { t = 1 } t && /^in use bytes/ { print $NF; exit }' | grep . || echo -1
}

# --- part 1 and 2: idle, then after REQUESTS x ROUNDS ----------------------
repo=$WORK/models
for i in $(seq -f %02g 0 $((MODELS - 1))); do
    write_model "$repo" "identity_$i" \
        'max_batch_size: 8' \
        'input [ { name: "INPUT0", data_type: TYPE_INT32, dims: [ 16 ] } ]' \
        'output [ { name: "OUTPUT0", data_type: TYPE_INT32, dims: [ 16 ] } ]' \
        'instance_group [ { count: 1, kind: KIND_CPU } ]' \
        'parameters { key: "operation" value: { string_value: "identity" } }'
done
body=$WORK/body.json
printf '%s' '{"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"INT32","data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}]}' >"$body"

http_port=$(free_port)
metrics_port=$(free_port)
# shellcheck disable=SC2046
start_server "$WORK/server.log" $(server_flags "$repo" "$http_port" "$metrics_port") --http-thread-count="$NPROC"
pid=$SERVER_PID
wait_ready "$http_port" "$pid"
url=http://127.0.0.1:$http_port/v2/models/identity_00/infer
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$body" "$url")
[ "$code" = 200 ] || die "infer answered $code"
sleep 1
idle=$(status_kib "$pid" VmRSS)
idle_hwm=$(status_kib "$pid" VmHWM)
idle_anon=$(status_kib "$pid" RssAnon)
idle_inuse=$(malloc_in_use "$pid" "$WORK/server.log")
echo "server   imagen-server --http-thread-count=$NPROC, $MODELS identity models; threads: $(status_kib "$pid" Threads)"
echo "load     $LOAD_TOOL, $REQUESTS requests x $ROUNDS rounds at c=$CONCURRENCY on identity_00"
echo "idle     VmRSS $idle KiB"

rounds_json=$WORK/rounds.jsonl
: >"$rounds_json"
cum=0
for round in $(seq 1 "$ROUNDS"); do
    out=$WORK/load-$round.txt
    if [ "$LOAD_TOOL" = h2load ]; then
        h2load --h1 -n "$REQUESTS" -c "$CONCURRENCY" -t "$NPROC" -d "$body" \
            -H 'content-type: application/json' "$url" >"$out" 2>&1 ||
            { tail -20 "$out"; die "h2load failed (round $round)"; }
    else
        export WRK_BODY_FILE=$body
        done_n=0
        : >"$out"
        while [ "$done_n" -lt "$REQUESTS" ]; do
            wrk -t"$NPROC" -c"$CONCURRENCY" -d10s -s "$BENCH_DIR/wrk/post.lua" "$url" >>"$out" 2>&1
            done_n=$("$PY" -c 'import json,re,sys
print(sum(json.loads(m)["requests"] for m in re.findall(r"^WRK_JSON (.*)$", open(sys.argv[1]).read(), re.M)))' "$out")
        done
    fi
    check_alive "$pid" "$WORK/server.log" "after load round $round"
    cum=$((cum + REQUESTS))
    # Let connections close, and let the idle server return free heap pages
    # (it does so every 2 s while nothing is in flight).
    sleep 3
    rss=$(status_kib "$pid" VmRSS)
    hwm=$(status_kib "$pid" VmHWM)
    anon=$(status_kib "$pid" RssAnon)
    inuse=$(malloc_in_use "$pid" "$WORK/server.log")
    echo "round $round: VmRSS $rss KiB, VmHWM $hwm KiB ($(grep -E 'finished in|^requests:|^status codes:' "$out" | tr '\n' ' '))"
    printf '{"round": %d, "requests_cum": %d, "rss_kib": %d, "hwm_kib": %d, "anon_kib": %d, "malloc_in_use": %d, "load_file": "%s"}\n' \
        "$round" "$cum" "$rss" "$hwm" "$anon" "$inuse" "$out" >>"$rounds_json"
done
# Give the allocator's free memory back, then look again: what remains is in use.
trim_rss=-1
trim_inuse=-1
if [ "$USE_GDB" = 1 ]; then
    gdb -p "$pid" -batch -ex 'call (int)malloc_trim(0)' >/dev/null 2>&1 || true
    trim_rss=$(status_kib "$pid" VmRSS)
    trim_inuse=$(malloc_in_use "$pid" "$WORK/server.log")
    echo "after malloc_trim(0): VmRSS $trim_rss KiB, malloc in use $trim_inuse bytes"
fi
stats_after=$WORK/stats-after.json
curl -sf "http://127.0.0.1:$http_port/v2/models/identity_00/stats" >"$stats_after" || true
stop_pid "$pid"
echo

# --- part 3: in-flight requests --------------------------------------------
repo2=$WORK/models-slow
write_model "$repo2" slow \
    'max_batch_size: 0' \
    'input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]' \
    'output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]' \
    'instance_group [ { count: 1, kind: KIND_CPU } ]' \
    'parameters [' \
    '  { key: "operation", value: { string_value: "timed" } },' \
    "  { key: \"fixed_us\", value: { string_value: \"$HOLD_US\" } }," \
    '  { key: "per_item_us", value: { string_value: "0" } }' \
    ']'
payload=$((PAYLOAD_MIB * 1048576))
elems=$((payload / 4))
req=$WORK/slow-request.bin
hdr="{\"inputs\":[{\"name\":\"INPUT0\",\"shape\":[$elems],\"datatype\":\"FP32\",\"parameters\":{\"binary_data_size\":$payload}}],\"outputs\":[{\"name\":\"OUTPUT0\",\"parameters\":{\"binary_data\":true}}]}"
printf '%s' "$hdr" >"$req"
head -c "$payload" /dev/urandom >>"$req"
hdr_len=${#hdr}

http_port=$(free_port)
metrics_port=$(free_port)
# shellcheck disable=SC2046
start_server "$WORK/server-slow.log" $(server_flags "$repo2" "$http_port" "$metrics_port") \
    --http-thread-count="$NPROC" --exit-timeout-secs=1
pid=$SERVER_PID
wait_ready "$http_port" "$pid"
sleep 1
idle2=$(status_kib "$pid" VmRSS)
for i in $(seq 1 "$INFLIGHT"); do
    curl -s -o /dev/null --max-time 300 -H "Inference-Header-Content-Length: $hdr_len" \
        -H 'Content-Type: application/octet-stream' --data-binary @"$req" \
        "http://127.0.0.1:$http_port/v2/models/slow/infer" &
    track_pid $!
done
# Wait until the core holds them all: 1 executing + INFLIGHT-1 pending.
pending=0
for _ in $(seq 1 600); do
    pending=$(curl -s "http://127.0.0.1:$metrics_port/metrics" |
        awk '/^nv_inference_pending_request_count\{.*model="slow"/ { print int($NF) }')
    pending=${pending:-0}
    [ "$pending" -ge $((INFLIGHT - 1)) ] && break
    sleep 0.1
done
sleep 1
inflight_rss=$(status_kib "$pid" VmRSS)
echo "in flight: $INFLIGHT x $PAYLOAD_MIB MiB, pending $pending, VmRSS $inflight_rss KiB (idle $idle2 KiB)"
[ "$pending" -ge $((INFLIGHT - 1)) ] ||
    echo "warning: only $pending requests pending (expected $((INFLIGHT - 1))); the figure below undercounts"
# The held requests would take INFLIGHT x 60 s to finish: end the server now.
{ kill -KILL "$pid" && wait "$pid"; } 2>/dev/null || true
echo

"$PY" - "$WORK/memory.json" <<EOF
import json, sys
rounds = [json.loads(l) for l in open("$rounds_json")]
json.dump({"load_tool": "$LOAD_TOOL", "idle_rss_kib": $idle, "idle_hwm_kib": $idle_hwm, "idle_anon_kib": $idle_anon,
           "idle_malloc_in_use": $idle_inuse, "trim_rss_kib": $trim_rss, "trim_malloc_in_use": $trim_inuse, "rounds": rounds,
           "requests_per_round": $REQUESTS,
           "inflight": {"n": $INFLIGHT, "payload_bytes": $payload, "fixed_us": $HOLD_US, "pending": $pending,
                        "idle_rss_kib": $idle2, "inflight_rss_kib": $inflight_rss}}, open(sys.argv[1], "w"))
EOF
"$PY" "$BENCH_DIR/report.py" memory "$WORK" "$RESULT_JSON" --models "$MODELS" --concurrency "$CONCURRENCY"

for log in "$WORK/server.log" "$WORK/server-slow.log"; do
    if grep -Eq '^(error|warning) ' "$log"; then
        echo
        echo "server log warnings/errors ($(basename "$log")):"
        grep -E '^(error|warning) ' "$log" | sort | uniq -c | sort -rn | head -20
    fi
done
echo
echo "raw: $RESULT_TXT"
echo "     $RESULT_JSON"
