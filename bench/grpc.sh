#!/usr/bin/env bash
# gRPC performance of imagen-server, in one run, with imagen-loadgen
# (bench/loadgen.c) as the client of every measurement:
#
#   bench/grpc.sh
#
# 1. ModelInfer of identity_int32 (models/: INT32 [-1], max_batch_size 8,
#    dynamic batching; requests of shape [1,16]) at each concurrency of
#    CONCURRENCIES against imagen-server and against imagen-bench-grpc-echo
#    (bench/grpc_echo.c: a bare ModelInfer echo on the same gRPC C core with
#    the same number of completion-queue threads, the ceiling), alternating
#    per point; the ratio server/echo (target >= 80 %) and the CPU time per
#    request of each process (utime+stime from /proc/<pid>/stat).
# 2. A 1024x1024x3 UINT8 identity round trip (`identity_u8`, imageops
#    identity, UINT8 [-1,-1,3], no batching) over gRPC, HTTP with the binary
#    tensor extension, and system shared memory on both protocols, at
#    concurrency 1 and 16: latency, MB/s (payload both ways) and the tensor
#    bytes the server's frontends copied per request, from the
#    imagen_tensor_copy_bytes_total / imagen_tensor_copy_requests_total
#    deltas on the metrics port. The echo service's gRPC figures at the same
#    size are shown as the library's ceiling.
# 3. Server VmRSS: idle before the 1024^2 runs, peak during each c=16 run
#    (sampled every 50 ms), and SETTLE seconds after the last one; compared
#    with idle + 16 x 2 x payload. With shared memory the tensors are pages
#    of the client's regions, which count in the server's VmRSS once touched
#    (RssShmem) though the client owns them: those rows are judged by the
#    server's own growth, RssAnon.
#
# Environment (defaults): CONCURRENCIES ("1 16 64"), DURATION (10), WARMUP (2),
# REPEAT (1), BIG_DURATION (5), BIG_CONCURRENCIES ("1 16"), GRPC_THREADS (2,
# the server's --grpc-infer-thread-count default and the echo's --threads),
# SETTLE (3), MEMORY_ONLY (0; 1 = only the c=16 1024^2 runs of imagen-server
# and the memory table: no small-tensor points, no c=1, no echo), IMAGEN_SERVER_BIN (else build-bench/ is built as Release); the
# tools are built in the server binary's build directory.
# Prints markdown tables; raw numbers in bench/results/grpc-<timestamp>.{txt,json}.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

CONCURRENCIES=${CONCURRENCIES:-"1 16 64"}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
REPEAT=${REPEAT:-1}
BIG_DURATION=${BIG_DURATION:-5}
BIG_CONCURRENCIES=${BIG_CONCURRENCIES:-"1 16"}
GRPC_THREADS=${GRPC_THREADS:-2}
SETTLE=${SETTLE:-3}
MEMORY_ONLY=${MEMORY_ONLY:-0}
if [ "$MEMORY_ONLY" = 1 ]; then
    CONCURRENCIES=""
    BIG_CONCURRENCIES=16
fi
export SETTLE MEMORY_ONLY # read by the report
PAYLOAD=$((1024 * 1024 * 3))

need curl
bench_init grpc

# --- the tools, built beside the server -------------------------------------
build_dir=$(dirname "$SERVER_BIN")
if [ -f "$build_dir/CMakeCache.txt" ]; then
    cmake --build "$build_dir" -j "$(nproc)" --target imagen-loadgen imagen-bench-grpc-echo >"$WORK/tools.log" 2>&1 ||
        { tail -20 "$WORK/tools.log" >&2; die "building imagen-loadgen and imagen-bench-grpc-echo in $build_dir failed"; }
fi
LOADGEN=$build_dir/imagen-loadgen
ECHO_BIN=$build_dir/imagen-bench-grpc-echo
[ -x "$LOADGEN" ] && [ -x "$ECHO_BIN" ] || die "imagen-loadgen / imagen-bench-grpc-echo not found in $build_dir"

# --- models ------------------------------------------------------------------
repo=$WORK/models
mkdir -p "$repo"
cp -r "$ROOT/models/identity_int32" "$repo/"
write_model "$repo" identity_u8 \
    'max_batch_size: 0' \
    'input [ { name: "INPUT0", data_type: TYPE_UINT8, dims: [ -1, -1, 3 ] } ]' \
    'output [ { name: "OUTPUT0", data_type: TYPE_UINT8, dims: [ -1, -1, 3 ] } ]' \
    'parameters { key: "operation" value: { string_value: "identity" } }'

# --- imagen-server and the echo service --------------------------------------
http_port=$(free_port)
grpc_port=$(free_port)
metrics_port=$(free_port)
start_server "$WORK/server.log" --model-repository="$repo" --http-address=127.0.0.1 --http-port="$http_port" \
    --grpc-address=127.0.0.1 --grpc-port="$grpc_port" --metrics-port="$metrics_port" \
    --grpc-infer-thread-count="$GRPC_THREADS" --allow-client-shm=true
imagen_pid=$SERVER_PID
wait_ready "$http_port" "$imagen_pid"

echo_port=$(free_port)
"$ECHO_BIN" --port "$echo_port" --threads "$GRPC_THREADS" >"$WORK/echo.log" 2>&1 &
echo_pid=$!
track_pid "$echo_pid"
for _ in $(seq 1 100); do
    grep -q '^listening on' "$WORK/echo.log" && break
    kill -0 "$echo_pid" 2>/dev/null || { cat "$WORK/echo.log"; die "imagen-bench-grpc-echo exited"; }
    sleep 0.05
done
grep -q '^listening on' "$WORK/echo.log" || die "imagen-bench-grpc-echo not listening after 5 s"

echo "server   imagen-server --grpc-infer-thread-count=$GRPC_THREADS --allow-client-shm=true"
echo "peer     imagen-bench-grpc-echo --threads $GRPC_THREADS (gRPC C core $(pkg-config --modversion grpc 2>/dev/null || echo '?'), the server's library)"
echo "client   imagen-loadgen (one thread, one completion queue / one curl multi), ${DURATION}s per point after" \
    "${WARMUP}s warm-up, $REPEAT run(s) each; 1024^2 runs ${BIG_DURATION}s after ${WARMUP}s"
echo

# rss_pair <pid>: "VmRSS RssAnon" in KiB. RssAnon leaves out the client's
# shared-memory regions the server maps (they count in VmRSS once touched).
rss_pair() {
    awk '/^VmRSS:/ { r = $2 } /^RssAnon:/ { a = $2 } END { print r, a }' "/proc/$1/status"
}

cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# copy_counters <file>: the copy counters from the metrics port, one line:
# grpc_in grpc_out http_in http_out grpc_requests http_requests
copy_counters() {
    curl -sf "http://127.0.0.1:$metrics_port/metrics" | awk '
        /^imagen_tensor_copy_bytes_total\{protocol="grpc",direction="input"\}/ { gi = $2 }
        /^imagen_tensor_copy_bytes_total\{protocol="grpc",direction="output"\}/ { go = $2 }
        /^imagen_tensor_copy_bytes_total\{protocol="http",direction="input"\}/ { hi = $2 }
        /^imagen_tensor_copy_bytes_total\{protocol="http",direction="output"\}/ { ho = $2 }
        /^imagen_tensor_copy_requests_total\{protocol="grpc"\}/ { gr = $2 }
        /^imagen_tensor_copy_requests_total\{protocol="http"\}/ { hr = $2 }
        END { printf "%.0f %.0f %.0f %.0f %.0f %.0f\n", gi, go, hi, ho, gr, hr }' >"$1" ||
        die "reading the copy counters from the metrics port failed"
}

# run_lg <out prefix> <pid measured> <sample rss: 0|1> <loadgen args...>:
# runs one loadgen point; writes <prefix>.csv, .out, .cpu (ticks before/after)
# and, when sampling, .rss ("VmRSS RssAnon" in KiB every 50 ms).
run_lg() {
    local out=$1 pid=$2 sample=$3 lg status=0
    shift 3
    echo "$(cpu_ticks "$pid")" >"$out.cpu"
    "$LOADGEN" "$@" --csv "$out.csv" >"$out.out" 2>&1 &
    lg=$!
    track_pid "$lg"
    if [ "$sample" = 1 ]; then
        : >"$out.rss"
        while kill -0 "$lg" 2>/dev/null; do
            rss_pair "$pid" >>"$out.rss"
            sleep 0.05
        done
    fi
    wait "$lg" || status=$?
    echo "$(cpu_ticks "$pid")" >>"$out.cpu"
    if [ "$status" != 0 ]; then
        cat "$out.out"
        die "imagen-loadgen failed ($status): $*"
    fi
    sed -n '3p' "$out.out" | sed "s|^|  $(basename "$out"): |"
}

# --- 1. identity_int32 beside the echo service --------------------------------
echo "1. identity_int32 [1,16] ModelInfer, imagen-server vs echo"
for c in $CONCURRENCIES; do
    for r in $(seq 1 "$REPEAT"); do
        check_alive "$imagen_pid" "$WORK/server.log" "before the c$c run $r"
        run_lg "$WORK/small-server-c$c-r$r" "$imagen_pid" 0 --url "grpc://127.0.0.1:$grpc_port" \
            --model identity_int32 --input-shape 1,16 --datatype INT32 --concurrency "$c" \
            --duration "$DURATION" --warmup "$WARMUP"
        run_lg "$WORK/small-echo-c$c-r$r" "$echo_pid" 0 --url "grpc://127.0.0.1:$echo_port" \
            --model identity_int32 --input-shape 1,16 --datatype INT32 --concurrency "$c" \
            --duration "$DURATION" --warmup "$WARMUP"
    done
done
echo

# --- 2 and 3. 1024x1024x3 round trips, copies, memory -------------------------
echo "2. identity_u8 1024x1024x3 round trips"
sleep "$SETTLE" # the server trims free heap after 2 s without inference
rss_pair "$imagen_pid" >"$WORK/rss-idle"
big=(--model identity_u8 --input-shape 1024,1024,3 --datatype UINT8 --duration "$BIG_DURATION" --warmup "$WARMUP")
for c in $BIG_CONCURRENCIES; do
    sample=$([ "$c" = 16 ] && echo 1 || echo 0)
    for mode in grpc http grpc-shm http-shm; do
        case $mode in
        grpc) args=(--url "grpc://127.0.0.1:$grpc_port") ;;
        http) args=(--url "http://127.0.0.1:$http_port") ;;
        grpc-shm) args=(--url "grpc://127.0.0.1:$grpc_port" --shm) ;;
        http-shm) args=(--url "http://127.0.0.1:$http_port" --shm) ;;
        esac
        check_alive "$imagen_pid" "$WORK/server.log" "before the 1024^2 $mode c$c run"
        copy_counters "$WORK/big-$mode-c$c.copies"
        run_lg "$WORK/big-$mode-c$c" "$imagen_pid" "$sample" "${args[@]}" "${big[@]}" --concurrency "$c"
        copy_counters "$WORK/big-$mode-c$c.copies-after"
    done
    [ "$MEMORY_ONLY" = 1 ] ||
        run_lg "$WORK/big-echo-c$c" "$echo_pid" 0 --url "grpc://127.0.0.1:$echo_port" "${big[@]}" --concurrency "$c"
done
sleep "$SETTLE"
rss_pair "$imagen_pid" >"$WORK/rss-after"
check_alive "$imagen_pid" "$WORK/server.log" "at the end"
echo

# --- report -------------------------------------------------------------------
"$PY" - "$WORK" "$RESULT_JSON" "$META_JSON" "$CONCURRENCIES" "$REPEAT" "$BIG_CONCURRENCIES" "$PAYLOAD" \
    "$(getconf CLK_TCK)" <<'EOF'
import csv, json, os, statistics, sys

work, result_json, meta_json, concs, repeat, big_concs, payload, clk = sys.argv[1:9]
concs, big_concs = concs.split(), big_concs.split()
repeat, payload, clk = int(repeat), int(payload), int(clk)


def row(prefix):
    with open(prefix + ".csv") as f:
        r = list(csv.DictReader(f))[0]
    with open(prefix + ".cpu") as f:
        before, after = (int(x) for x in f.read().split())
    req = int(r["requests"])
    r["cpu_us_per_req"] = (after - before) / clk * 1e6 / req if req else None
    return r


def median_run(label, c):
    runs = [row(f"{work}/small-{label}-c{c}-r{i}") for i in range(1, repeat + 1)]
    runs.sort(key=lambda r: float(r["rps"]))
    return runs[len(runs) // 2], min(float(r["rps"]) for r in runs), max(float(r["rps"]) for r in runs)


out = {"meta": json.load(open(meta_json)), "small": [], "big": [], "memory": {}}
if concs:
    print("| conc | imagen req/s | echo req/s | imagen/echo | imagen p50 µs | echo p50 µs | imagen p99 µs |"
          " echo p99 µs | imagen CPU µs/req | echo CPU µs/req | errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for c in concs:
    s, smin, smax = median_run("server", c)
    e, emin, emax = median_run("echo", c)
    ratio = float(s["rps"]) / float(e["rps"]) if float(e["rps"]) else 0
    rng = f" ({smin:,.0f}–{smax:,.0f} / {emin:,.0f}–{emax:,.0f})" if repeat > 1 else ""
    print(f"| {c} | {float(s['rps']):,.0f} | {float(e['rps']):,.0f} | **{ratio:.0%}**{rng} | {s['p50_us']} |"
          f" {e['p50_us']} | {s['p99_us']} | {e['p99_us']} | {s['cpu_us_per_req']:.1f} |"
          f" {e['cpu_us_per_req']:.1f} | {s['errors']}/{e['errors']} |")
    out["small"].append({"concurrency": int(c), "server": s, "echo": e, "ratio": ratio,
                         "server_rps_range": [smin, smax], "echo_rps_range": [emin, emax]})
if concs:
    print()
print(f"1024x1024x3 UINT8 ({payload:,} bytes each way)")
print()
print("| transport | conc | req/s | p50 µs | p90 µs | p99 µs | MB/s | copied in B/req | copied out B/req |"
      " copies of payload in/out | errors |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for c in big_concs:
    for mode in ("grpc", "http", "grpc-shm", "http-shm", "echo"):
        prefix = f"{work}/big-{mode}-c{c}"
        if mode == "echo" and os.environ.get("MEMORY_ONLY") == "1":
            continue
        r = row(prefix)
        cin = cout = None
        if mode != "echo":
            a = [int(x) for x in open(prefix + ".copies").read().split()]
            b = [int(x) for x in open(prefix + ".copies-after").read().split()]
            d = [y - x for x, y in zip(a, b)]
            g = mode.startswith("grpc")
            reqs = d[4] if g else d[5]
            if reqs:
                cin = (d[0] if g else d[2]) / reqs
                cout = (d[1] if g else d[3]) / reqs
        label = {"grpc": "gRPC", "http": "HTTP binary", "grpc-shm": "gRPC + system shm",
                 "http-shm": "HTTP + system shm", "echo": "gRPC echo (ceiling)"}[mode]
        copies = f"{cin / payload:.2f} / {cout / payload:.2f}" if cin is not None else "—"
        print(f"| {label} | {c} | {float(r['rps']):,.1f} | {r['p50_us']} | {r['p90_us']} | {r['p99_us']} |"
              f" {float(r['mb_per_s']):,.0f} | {'—' if cin is None else f'{cin:,.0f}'} |"
              f" {'—' if cout is None else f'{cout:,.0f}'} | {copies} | {r['errors']} |")
        out["big"].append({"mode": mode, "concurrency": int(c), "row": r, "copied_in_per_req": cin,
                           "copied_out_per_req": cout})
print()
idle, idle_anon = (int(x) / 1024 for x in open(f"{work}/rss-idle").read().split())
after, after_anon = (int(x) / 1024 for x in open(f"{work}/rss-after").read().split())
budget = idle + 16 * 2 * payload / 1048576
print(f"Server memory (MiB): idle VmRSS {idle:.1f} (RssAnon {idle_anon:.1f});"
      f" budget at c=16 = idle + 16 x 2 x payload = {budget:.1f}")
print()
print("| transport at c=16 | peak VmRSS | peak − idle | within budget | peak RssAnon | RssAnon − idle |"
      " RssAnon − idle per request, in payloads |")
print("|---|---:|---:|---|---:|---:|---:|")
for mode in ("grpc", "http", "grpc-shm", "http-shm"):
    path = f"{work}/big-{mode}-c16.rss"
    if not os.path.exists(path):
        continue
    pairs = [tuple(int(x) for x in line.split()) for line in open(path) if len(line.split()) == 2]
    peak = max(p[0] for p in pairs) / 1024 if pairs else 0
    peak_anon = max(p[1] for p in pairs) / 1024 if pairs else 0
    # With shared memory the tensors live in the client's regions: once the
    # server touches them they count in its VmRSS too (as RssShmem), but
    # they are the client's memory, so the server's own growth is RssAnon's.
    own = (peak_anon - idle_anon) if mode.endswith("-shm") else (peak - idle)
    within = own <= budget - idle
    print(f"| {mode} | {peak:.1f} | {peak - idle:+.1f} | {'yes' if within else '**no**'}"
          f"{' (RssAnon)' if mode.endswith('-shm') else ''} |"
          f" {peak_anon:.1f} | {peak_anon - idle_anon:+.1f} |"
          f" {(peak_anon - idle_anon) / 16 / (payload / 1048576):.2f} |")
    out["memory"][mode] = {"peak_mib": peak, "peak_anon_mib": peak_anon, "samples": len(pairs),
                           "own_growth_mib": own, "within_budget": within}
print(f"| after, {os.environ.get('SETTLE', '3')} s idle | {after:.1f} | {after - idle:+.1f} | |"
      f" {after_anon:.1f} | {after_anon - idle_anon:+.1f} | |")
out["memory"].update({"idle_mib": idle, "idle_anon_mib": idle_anon, "after_mib": after,
                      "after_anon_mib": after_anon, "budget_mib": budget})
json.dump(out, open(result_json, "w"), indent=1)
EOF

if grep -Eq '^(error|warning) ' "$WORK/server.log"; then
    echo
    echo "server log warnings/errors:"
    grep -E '^(error|warning) ' "$WORK/server.log" | sort | uniq -c | sort -rn | head -20
fi
echo
echo "raw: $RESULT_TXT"
echo "     $RESULT_JSON"
