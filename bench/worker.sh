#!/usr/bin/env bash
# imagen-worker start-up time and memory, against a real imagen-server and a
# sqlite queue in a temporary directory:
#   1. start-up: exec of imagen-worker -> its "worker ready in X ms" log line
#      (process start to the first pull), median of RUNS, beside exec of
#      /bin/true and `imagen-worker --help` timed the same way, and beside the
#      worker's own logged figure;
#   2. memory idle: VmRSS, Pss (smaps_rollup) and RssAnon of a worker at
#      --concurrency 2 that has pulled nothing yet (libvips' shared libraries
#      dominate VmRSS; Pss and RssAnon say what the worker itself costs);
#   3. memory under 12-megapixel photos: peak VmRSS (VmHWM) of that worker
#      while it runs PHOTOS 4000x3000 JPEGs through OP (enhance) at
#      --concurrency 2, beside the bound 2 x (decoded RGB + encoded + result);
#      once with the tensors in the gRPC messages (--shm off; the server's
#      default refuses client shared memory) and once in system shared memory
#      (--shm on; the server here runs with --allow-client-shm=true);
#   4. growth: JOBS small 64x64 JPEG jobs through a fresh worker at
#      --concurrency 2 (--shm auto), VmRSS sampled every SAMPLE_EVERY jobs,
#      first vs last.
#
#   bench/worker.sh
#
# Start-up timing: bash's EPOCHREALTIME before the exec, the worker's stderr
# read line by line by the script itself (no fork per poll) until the ready
# line, then SIGTERM. The server runs for the whole script so that the worker
# finds it; the queue is empty (the first pull is what "ready" marks).
#
# Environment (defaults): RUNS (20), PHOTOS (6), OP (enhance), JOBS (10000),
# SAMPLE_EVERY (1000), SETTLE (2 s idle before the idle reading),
# IMAGEN_SERVER_BIN, IMAGEN_WORKER_BIN, IMAGEN_CLI_BIN (without them the three
# are built as Release in build-bench/).
# Prints tables; raw numbers in bench/results/worker-<timestamp>.{txt,json}.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

RUNS=${RUNS:-20}
PHOTOS=${PHOTOS:-6}
OP=${OP:-enhance}
JOBS=${JOBS:-10000}
SAMPLE_EVERY=${SAMPLE_EVERY:-1000}
SETTLE=${SETTLE:-2}
NPROC=$(nproc)

need curl
bench_init worker

ensure_worker_bins

# "<field> kB" of /proc/<pid>/<file>, in KiB (0 when absent).
proc_kib() {
    awk -v f="$3:" '$1 == f { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/$2"
}

# Jobs finished (done + failed + dead) on a queue; awk rather than python3
# so that the poll costs the machine little.
finished_jobs() {
    "$CLI_BIN" queues --queue "$1" --json |
        awk -F': *' '/"(done|failed|dead)"/ { gsub(/[^0-9]/, "", $2); s += $2 } END { print s + 0 }'
}

# ---- server ---------------------------------------------------------------------------------
repo=$WORK/models
mkdir -p "$repo"
cp -r "$ROOT/models/$OP" "$repo/"
http_port=$(free_port)
grpc_port=$(free_port)
metrics_port=$(free_port)
start_server "$WORK/server.log" --model-repository="$repo" --http-address=127.0.0.1 --http-port="$http_port" \
    --grpc-address=127.0.0.1 --grpc-port="$grpc_port" --metrics-port="$metrics_port" --allow-client-shm=true
wait_ready "$http_port" "$SERVER_PID"
server_url=grpc://127.0.0.1:$grpc_port

echo "server   imagen-server with the bundled $OP model, gRPC on 127.0.0.1; sqlite queues in a temporary directory"
echo "start-up exec -> 'worker ready' on the worker's stderr (read by bash, no fork per poll), empty queue; $RUNS runs"
echo

# ---- 1. start-up ----------------------------------------------------------------------------
: >"$WORK/ready.us"
: >"$WORK/ready-logged.ms"
: >"$WORK/true.us"
: >"$WORK/help.us"
for run in $(seq 1 "$RUNS"); do
    queue=sqlite://$WORK/startup-$run.db
    t0=$(now_us)
    coproc WORKER { exec "$WORKER_BIN" --queue "$queue" --server "$server_url" --ops "$OP" --metrics-port 0 2>&1; }
    # shellcheck disable=SC2153 # WORKER_PID is set by coproc
    wpid=$WORKER_PID
    # bash drops WORKER once the coprocess is reaped: read through a copy
    exec {wfd}<&"${WORKER[0]}"
    track_pid "$wpid"
    line=""
    while IFS= read -r -t 30 line <&"$wfd"; do
        [[ $line == *"worker ready in "* ]] && break
    done
    t1=$(now_us)
    [[ $line == *"worker ready in "* ]] || die "no 'worker ready' line from imagen-worker (run $run); last line: $line"
    echo $((t1 - t0)) >>"$WORK/ready.us"
    logged=${line##*worker ready in }
    echo "${logged%% ms*}" >>"$WORK/ready-logged.ms"
    kill -TERM "$wpid"
    # drain its output so that it never blocks on a full pipe while stopping
    cat <&"$wfd" >/dev/null || true
    wait "$wpid" 2>/dev/null || true
    exec {wfd}<&-
    f0=$(now_us)
    /bin/true
    f1=$(now_us)
    echo $((f1 - f0)) >>"$WORK/true.us"
    f0=$(now_us)
    "$WORKER_BIN" --help >/dev/null
    f1=$(now_us)
    echo $((f1 - f0)) >>"$WORK/help.us"
done

# ---- inputs ---------------------------------------------------------------------------------
mkdir -p "$WORK/photos" "$WORK/small" "$WORK/out-small"
"$PY" - "$WORK/photos" "$PHOTOS" "$WORK/small" <<'EOF'
import random, sys
import numpy as np
from PIL import Image
from skimage import data

photos_dir, n, small_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sources = [Image.fromarray(f()).convert("RGB") for f in (data.astronaut, data.coffee, data.chelsea, data.rocket)]
rng = np.random.default_rng(1)
for i in range(n):
    # 4000x3000 with sensor-like noise, so that the JPEG is photo-sized (a
    # smooth upscaled image would compress to a fraction of a real photo)
    img = np.asarray(sources[i % len(sources)].resize((4000, 3000), Image.BICUBIC), dtype=np.int16)
    img = img + rng.normal(0, 6, img.shape).astype(np.int16)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(f"{photos_dir}/photo{i:02d}.jpg", quality=92)
r = random.Random(2)
for i in range(100):
    src = sources[i % len(sources)]
    x, y = r.randint(0, src.size[0] - 128), r.randint(0, src.size[1] - 128)
    src.crop((x, y, x + 128, y + 128)).resize((64, 64), Image.LANCZOS).save(f"{small_dir}/s{i:03d}.jpg", quality=90)
EOF
photo_bytes=$(du -sb "$WORK/photos" | cut -f1)

# ---- 2 + 3. idle, then 12-megapixel photos at --concurrency 2 -------------------------------
# photo_run <shm mode>: a fresh worker (--shm off: tensors in the gRPC
# messages, the server's default; --shm on: system shared memory, which the
# server here allows) reads idle for SETTLE s, then runs the photos. Appends
# "mode idle_rss idle_anon idle_file idle_pss idle_pss_anon hwm peak_rss
# peak_anon peak_shmem after_rss after_anon after_shmem wall_us done out_bytes
# again_rss again_anon" to photos.txt (after: as the last job ends; again:
# SETTLE s later, the queue empty all along).
: >"$WORK/photos.txt"
photo_run() {
    local mode=$1 queue wport wpid r t0 t1
    local idle_rss idle_anon idle_file idle_pss idle_pss_anon peak=0 peak_anon=0 peak_shmem=0
    queue=sqlite://$WORK/photos-$mode.db
    mkdir -p "$WORK/out-photos-$mode"
    wport=$(free_port)
    "$WORKER_BIN" --queue "$queue" --server "$server_url" --ops "$OP" --concurrency 2 --shm "$mode" \
        --metrics-address 127.0.0.1 --metrics-port "$wport" >"$WORK/worker-photos-$mode.log" 2>&1 &
    wpid=$!
    track_pid "$wpid"
    for _ in $(seq 1 200); do
        grep -q "worker ready in" "$WORK/worker-photos-$mode.log" && break
        kill -0 "$wpid" 2>/dev/null || { cat "$WORK/worker-photos-$mode.log"; die "imagen-worker exited at start-up"; }
        sleep 0.05
    done
    sleep "$SETTLE"
    idle_rss=$(proc_kib "$wpid" status VmRSS)
    idle_anon=$(proc_kib "$wpid" status RssAnon)
    idle_file=$(proc_kib "$wpid" status RssFile)
    idle_pss=$(proc_kib "$wpid" smaps_rollup Pss)
    idle_pss_anon=$(proc_kib "$wpid" smaps_rollup Pss_Anon)
    "$CLI_BIN" submit --queue "$queue" --op "$OP" --param format=jpeg --out "$WORK/out-photos-$mode" \
        "$WORK/photos" >"$WORK/submit-photos-$mode.txt" || die "imagen submit of the photos failed"
    t0=$(now_us)
    while [ "$(finished_jobs "$queue")" -lt "$PHOTOS" ]; do
        kill -0 "$wpid" 2>/dev/null ||
            { tail -20 "$WORK/worker-photos-$mode.log"; die "imagen-worker exited during the photos"; }
        check_alive "$SERVER_PID" "$WORK/server.log" "during the photos"
        r=$(proc_kib "$wpid" status VmRSS)
        [ "$r" -gt "$peak" ] && peak=$r
        r=$(proc_kib "$wpid" status RssAnon)
        [ "$r" -gt "$peak_anon" ] && peak_anon=$r
        r=$(proc_kib "$wpid" status RssShmem)
        [ "$r" -gt "$peak_shmem" ] && peak_shmem=$r
        sleep 0.1
    done
    t1=$(now_us)
    local after
    after="$(proc_kib "$wpid" status VmRSS) $(proc_kib "$wpid" status RssAnon) $(proc_kib "$wpid" status RssShmem)"
    # Idle again: the queue has been empty for SETTLE s.
    sleep "$SETTLE"
    echo "$mode $idle_rss $idle_anon $idle_file $idle_pss $idle_pss_anon $(proc_kib "$wpid" status VmHWM)" \
        "$peak $peak_anon $peak_shmem $after $((t1 - t0))" \
        "$(grep -c "state=done" "$WORK/worker-photos-$mode.log" || true)" \
        "$(du -sb "$WORK/out-photos-$mode" | cut -f1)" \
        "$(proc_kib "$wpid" status VmRSS) $(proc_kib "$wpid" status RssAnon)" >>"$WORK/photos.txt"
    stop_pid "$wpid"
}
photo_run off
photo_run on

# ---- 4. growth over JOBS small jobs ---------------------------------------------------------
queue=sqlite://$WORK/small.db
small_files=("$WORK"/small/*.jpg)
list=()
for ((i = 0; i < JOBS; i++)); do
    list+=("${small_files[i % ${#small_files[@]}]}")
done
g_submit0=$(now_us)
# in slices: one argument list of 10,000 paths is fine, a larger JOBS may not be
for ((i = 0; i < JOBS; i += 2000)); do
    "$CLI_BIN" submit --queue "$queue" --op "$OP" --param format=jpeg --out "$WORK/out-small" \
        "${list[@]:i:2000}" >>"$WORK/submit-small.txt" || die "imagen submit of the small images failed"
done
g_submit1=$(now_us)
unset list
wport=$(free_port)
"$WORKER_BIN" --queue "$queue" --server "$server_url" --ops "$OP" --concurrency 2 --metrics-address 127.0.0.1 \
    --metrics-port "$wport" >"$WORK/worker-small.log" 2>&1 &
wpid=$!
track_pid "$wpid"
g0=$(now_us)
: >"$WORK/growth.txt"
next=$SAMPLE_EVERY
while :; do
    done_now=$(finished_jobs "$queue")
    while [ "$done_now" -ge "$next" ] && [ "$next" -le "$JOBS" ]; do
        echo "$next $done_now $(proc_kib "$wpid" status VmRSS) $(proc_kib "$wpid" status RssAnon)" >>"$WORK/growth.txt"
        next=$((next + SAMPLE_EVERY))
    done
    [ "$done_now" -ge "$JOBS" ] && break
    kill -0 "$wpid" 2>/dev/null || { tail -20 "$WORK/worker-small.log"; die "imagen-worker exited during the small jobs"; }
    check_alive "$SERVER_PID" "$WORK/server.log" "during the small jobs"
    sleep 0.2
done
g1=$(now_us)
small_hwm=$(proc_kib "$wpid" status VmHWM)
sleep "$SETTLE"
small_again="$(proc_kib "$wpid" status VmRSS) $(proc_kib "$wpid" status RssAnon)"
curl -sf "http://127.0.0.1:$wport/metrics" >"$WORK/worker-small-metrics.txt" || true
stop_pid "$wpid"

"$PY" - "$WORK" "$RESULT_JSON" "$META_JSON" <<EOF
import json, re, statistics as st, sys
work, result_json, meta_json = sys.argv[1:4]
def nums(name, kind=float):
    return [kind(x) for x in open(f"{work}/{name}").read().split()]
ready, logged, true, helpx = nums("ready.us"), nums("ready-logged.ms"), nums("true.us"), nums("help.us")
med = st.median
print(f"{'start-up (median of $RUNS)':<44} {'ms':>8} {'min':>8} {'max':>8}")
for name, v, scale in (("exec -> 'worker ready' line", ready, 1e3), ("worker's own figure (start -> first pull)", logged, 1),
                       ("exec of imagen-worker --help", helpx, 1e3), ("exec of /bin/true", true, 1e3)):
    print(f"{name:<44} {med(v) / scale:>8.2f} {min(v) / scale:>8.2f} {max(v) / scale:>8.2f}")
print(f"reference: the system this replaces started workers in under 30 s; "
      f"imagen-worker: {med(ready) / 1e3:.1f} ms = {30e3 / (med(ready) / 1e3):,.0f}x faster than 30 s")
print()

MiB = 1024.0
runs = {}
for l in open(f"{work}/photos.txt"):
    f = l.split()
    runs[f[0]] = dict(zip("idle_rss idle_anon idle_file idle_pss idle_pss_anon hwm peak peak_anon peak_shmem "
                          "after_rss after_anon after_shmem wall_us done out_bytes again_rss again_anon".split(),
                          map(int, f[1:])))
idle = runs["off"]
print(f"idle worker (--concurrency 2, $OP, after ${SETTLE}s): VmRSS {idle['idle_rss'] / MiB:.2f} MiB "
      f"(RssFile {idle['idle_file'] / MiB:.2f}, RssAnon {idle['idle_anon'] / MiB:.2f}), Pss "
      f"{idle['idle_pss'] / MiB:.2f} MiB (Pss_Anon {idle['idle_pss_anon'] / MiB:.2f})   target VmRSS <= 30 MiB: "
      f"{'met' if idle['idle_rss'] <= 30 * 1024 else 'MISSED'}")

photos, photo_bytes = $PHOTOS, $photo_bytes
rgb = 4000 * 3000 * 3
enc_in = photo_bytes / photos
enc_out = runs["off"]["out_bytes"] / max(1, runs["off"]["done"])
bound = 2 * (rgb + enc_in + rgb + enc_out) / 1048576
print(f"12 MP photos: {photos} x 4000x3000 JPEG ({enc_in / 1048576:.2f} MiB each) -> $OP -> JPEG "
      f"({enc_out / 1048576:.2f} MiB), one worker at --concurrency 2")
print(f"bound 2 x (decoded RGB {rgb / 1048576:.1f} + encoded in {enc_in / 1048576:.1f} + result RGB "
      f"{rgb / 1048576:.1f} + encoded out {enc_out / 1048576:.1f}) = {bound:.1f} MiB above idle")
print(f"{'tensors':<26} {'done':>5} {'wall s':>7} {'idle':>7} {'VmHWM':>7} {'above idle':>11} {'/ bound':>8} "
      f"{'max Anon':>9} {'max Shmem':>10} {'after':>7} {'after Anon':>11} {'idle again':>11} {'its Anon':>9}  (MiB)")
for mode, label in (("off", "gRPC messages (--shm off)"), ("on", "shared memory (--shm on)")):
    r = runs[mode]
    above = (r["hwm"] - r["idle_rss"]) / MiB
    print(f"{label:<26} {r['done']:>5} {r['wall_us'] / 1e6:>7.1f} {r['idle_rss'] / MiB:>7.1f} {r['hwm'] / MiB:>7.1f} "
          f"{above:>11.1f} {above / bound:>8.2f} {r['peak_anon'] / MiB:>9.1f} {r['peak_shmem'] / MiB:>10.1f} "
          f"{r['after_rss'] / MiB:>7.1f} {r['after_anon'] / MiB:>11.1f} {r['again_rss'] / MiB:>11.1f} "
          f"{r['again_anon'] / MiB:>9.1f}")
print(f"after: as the last photo is done; idle again: ${SETTLE} s later, with the queue empty")

g = [list(map(int, l.split())) for l in open(f"{work}/growth.txt")]
wall_g = ($g1 - $g0) / 1e6
print()
print(f"growth: $JOBS x 64x64 JPEG -> $OP, one worker at --concurrency 2, {wall_g:.1f} s ({$JOBS / wall_g:.1f} jobs/s; "
      f"submitting took {($g_submit1 - $g_submit0) / 1e6:.1f} s)")
print(f"{'jobs':>8} {'VmRSS MiB':>10} {'RssAnon MiB':>12}")
for want, got, rss, anon in g:
    print(f"{want:>8} {rss / MiB:>10.2f} {anon / MiB:>12.2f}")
if len(g) >= 2:
    d = (g[-1][2] - g[0][2]) / MiB
    print(f"first sample -> last: {d:+.2f} MiB VmRSS ({100 * d / (g[0][2] / MiB):+.1f} %), "
          f"RssAnon {(g[-1][3] - g[0][3]) / MiB:+.2f} MiB; VmHWM {$small_hwm / MiB:.2f} MiB")
again = list(map(int, "$small_again".split()))
print(f"idle again ${SETTLE} s after the last job: VmRSS {again[0] / MiB:.2f} MiB (RssAnon {again[1] / MiB:.2f})")

meta = json.load(open(meta_json))
meta.update({"op": "$OP", "runs": $RUNS, "ready_us": ready, "ready_logged_ms": logged, "true_us": true,
             "help_us": helpx, "ready_median_ms": med(ready) / 1e3, "photos": photos,
             "photo_bytes_each": enc_in, "result_bytes_each": enc_out, "photo_runs_kib": runs,
             "photos_bound_mib": bound,
             "growth_jobs": $JOBS, "growth_wall_s": wall_g, "growth_samples": g, "growth_vmhwm_kib": $small_hwm,
             "growth_idle_again_kib": again})
json.dump(meta, open(result_json, "w"), indent=2)
EOF
echo
echo "raw: $RESULT_TXT"
echo "     $RESULT_JSON"
