#!/usr/bin/env bash
# End to end: upscale x2 of N 512x512 JPEG photos through the whole pipeline,
# imagen submit -> sqlite queue -> two imagen-worker processes (--concurrency 1
# each) -> imagen-server (gRPC, the bundled `upscale` model) -> JPEG files,
# all on this machine.
#
#   bench/pipeline.sh
#
# Method: make N distinct 512x512 JPEGs (crops, flips and tone changes of the
# skimage photos, /usr/bin/python3 + PIL), start the server, submit every job
# first, then start both workers and take the time; poll the workers'
# /metrics (imagen_worker_jobs_total; bash /dev/tcp, no fork) until every job
# is done (or failed), take the time, and check with `imagen queues --json`. CPU seconds
# (utime + stime from /proc/<pid>/stat) of the server and of the workers over
# that interval, and of the whole machine from /proc/stat.
#
# The limit: when nothing waits, jobs/s = cores / (CPU seconds per job, server
# + workers). The ratio of the measured rate to that limit is the figure the
# issue targets (>= 85 %). Where the rest goes is read from the workers'
# imagen_worker_stage_seconds (per stage) and the server's nv_inference_*
# duration counters (queue, compute), printed as a breakdown per job.
#
# Environment (defaults): N (200), WORKERS (2), POLL (0.25 s between
# `imagen queues` polls), SHM (off: tensors in the gRPC messages, the server's
# default; on: the server with --allow-client-shm=true, workers --shm on),
# CONCURRENCY (1: job threads per worker), IMAGEN_SERVER_BIN, IMAGEN_WORKER_BIN, IMAGEN_CLI_BIN
# (without them the three are built as Release in build-bench/).
# Prints a table; raw numbers in bench/results/pipeline-<timestamp>.{txt,json}.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

N=${N:-200}
WORKERS=${WORKERS:-2}
POLL=${POLL:-0.25}
SHM=${SHM:-off}
CONCURRENCY=${CONCURRENCY:-1}
NPROC=$(nproc)
CLK_TCK=$(getconf CLK_TCK)

need curl
bench_init pipeline

ensure_worker_bins

# utime + stime of a process, in clock ticks.
cpu_ticks() {
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
# busy and total jiffies of the whole machine (all cores), "busy total".
machine_ticks() {
    awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat
}

# Jobs finished (done + failed + dead) on a queue, as `imagen queues` counts
# them: the check at the end.
finished_jobs() {
    "$CLI_BIN" queues --queue "$1" --json |
        awk -F': *' '/"(done|failed|dead)"/ { gsub(/[^0-9]/, "", $2); s += $2 } END { print s + 0 }'
}
# Sets FINISHED to the jobs the workers report done, failed or dead on their
# /metrics, read by bash itself over /dev/tcp: on two cores a fork + exec of
# imagen (its libraries take ~35 ms to load) four times a second would take
# a visible share of the CPU being measured.
metrics_finished() {
    local port line total=0 v
    for port in "$@"; do
        { exec {mfd}<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
        printf 'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&"$mfd"
        while IFS= read -r -t 5 line <&"$mfd"; do
            if [[ $line == imagen_worker_jobs_total*result=\"done\"* ||
                $line == imagen_worker_jobs_total*result=\"failed\"* ||
                $line == imagen_worker_jobs_total*result=\"dead\"* ]]; then
                v=${line##* }
                v=${v%$'\r'}
                total=$((total + ${v%%.*}))
            fi
        done
        exec {mfd}<&-
    done
    FINISHED=$total
}
# script_cpu <file>: CPU seconds of this shell and its reaped children (the
# poller's own cost: the workers and the server are reaped only after the
# run). `times` runs in this shell (a command substitution would report the
# subshell's own), its output parsed afterwards.
script_cpu() {
    times >"$1"
}
cpu_of_times() {
    awk '{ for (i = 1; i <= NF; i++) { split($i, p, /[ms]/); t += p[1] * 60 + p[2] } } END { printf "%.3f", t }' "$1"
}

# ---- inputs ---------------------------------------------------------------------------------
mkdir -p "$WORK/in" "$WORK/out"
"$PY" - "$WORK/in" "$N" <<'EOF'
import random, sys
import numpy as np
from PIL import Image, ImageEnhance
from skimage import data

out, n = sys.argv[1], int(sys.argv[2])
photos = [Image.fromarray(f()).convert("RGB") for f in
          (data.astronaut, data.coffee, data.chelsea, data.rocket, data.coins, data.camera)]
rng = random.Random(1)
for i in range(n):
    src = photos[i % len(photos)]
    # a random crop, scaled to 512x512: every input differs in content
    w, h = src.size
    side = rng.randint(min(w, h) // 2, min(w, h))
    x, y = rng.randint(0, w - side), rng.randint(0, h - side)
    img = src.crop((x, y, x + side, y + side)).resize((512, 512), Image.LANCZOS)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.7, 1.3))
    img.save(f"{out}/photo{i:05d}.jpg", quality=90)
EOF
in_bytes=$(du -sb "$WORK/in" | cut -f1)

# ---- server ---------------------------------------------------------------------------------
repo=$WORK/models
mkdir -p "$repo"
cp -r "$ROOT/models/upscale" "$repo/"
http_port=$(free_port)
grpc_port=$(free_port)
metrics_port=$(free_port)
start_server "$WORK/server.log" --model-repository="$repo" --http-address=127.0.0.1 --http-port="$http_port" \
    --grpc-address=127.0.0.1 --grpc-port="$grpc_port" --metrics-port="$metrics_port" \
    --allow-client-shm="$([ "$SHM" = on ] && echo true || echo false)"
wait_ready "$http_port" "$SERVER_PID"

queue=sqlite://$WORK/queue.db
"$CLI_BIN" submit --queue "$queue" --op upscale --param scale=2 --out "$WORK/out" "$WORK/in" >"$WORK/submit.txt" ||
    die "imagen submit failed"
submitted=$(wc -l <"$WORK/submit.txt")
[ "$submitted" -eq "$N" ] || die "submitted $submitted jobs, expected $N"

echo "server   imagen-server, model upscale as bundled in models/ (1 CPU instance, dynamic batching), gRPC on 127.0.0.1"
echo "workers  $WORKERS x imagen-worker --concurrency $CONCURRENCY --shm $SHM, queue $queue"
echo "jobs     $N x upscale scale=2 of 512x512 JPEG (q90, $((in_bytes / N / 1024)) KiB average) -> 1024x1024 JPEG"
echo "method   jobs submitted first; time from starting the workers to the last job done (the workers' /metrics read by bash"
echo "         every ${POLL}s, checked with imagen queues --json at the end);"
echo "         CPU = utime+stime from /proc/<pid>/stat over that interval; machine CPU from /proc/stat"
echo

worker_ports=()
for i in $(seq 1 "$WORKERS"); do
    worker_ports+=("$(free_port)")
done
curl -sf "http://127.0.0.1:$metrics_port/metrics" >"$WORK/server-metrics-before.txt"
server_cpu0=$(cpu_ticks "$SERVER_PID")
# a fork-free pause between polls: a read with a timeout on a pipe that never
# gets data
exec {PAUSE_FD}<> <(:)
script_cpu "$WORK/times0"
read -r mbusy0 mtotal0 < <(machine_ticks)
t0=$(now_us)
worker_pids=()
for i in $(seq 1 "$WORKERS"); do
    wport=${worker_ports[$((i - 1))]}
    "$WORKER_BIN" --queue "$queue" --server "grpc://127.0.0.1:$grpc_port" --ops upscale --concurrency "$CONCURRENCY" --shm "$SHM" \
        --metrics-address 127.0.0.1 --metrics-port "$wport" --name "bench-$i" >"$WORK/worker-$i.log" 2>&1 &
    worker_pids+=("$!")
    track_pid "$!"
done

while :; do
    FINISHED=0
    metrics_finished "${worker_ports[@]}" || true
    [ "$FINISHED" -ge "$N" ] && break
    for pid in "${worker_pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || { tail -20 "$WORK"/worker-*.log; die "a worker exited during the run"; }
    done
    check_alive "$SERVER_PID" "$WORK/server.log" "during the run"
    read -r -t "$POLL" -u "$PAUSE_FD" _ || true
done
t1=$(now_us)
read -r mbusy1 mtotal1 < <(machine_ticks)
script_cpu "$WORK/times1"
poll_cpu0=$(cpu_of_times "$WORK/times0")
poll_cpu1=$(cpu_of_times "$WORK/times1")
server_cpu1=$(cpu_ticks "$SERVER_PID")
worker_cpu=0
for i in "${!worker_pids[@]}"; do
    worker_cpu=$((worker_cpu + $(cpu_ticks "${worker_pids[$i]}")))
    curl -sf "http://127.0.0.1:${worker_ports[$i]}/metrics" >"$WORK/worker-metrics-$((i + 1)).txt"
done
curl -sf "http://127.0.0.1:$metrics_port/metrics" >"$WORK/server-metrics-after.txt"
"$CLI_BIN" queues --queue "$queue" --json >"$WORK/counts.json"
[ "$(finished_jobs "$queue")" -ge "$N" ] || die "the workers report $N jobs finished, the queue fewer"
grep -h "worker ready in" "$WORK"/worker-*.log >"$WORK/ready.txt" || true

"$PY" - "$WORK" "$RESULT_JSON" "$META_JSON" <<EOF
import glob, json, re, sys
work, result_json, meta_json = sys.argv[1:4]
N, workers, nproc, tck = $N, $WORKERS * $CONCURRENCY, $NPROC, $CLK_TCK
wall = ($t1 - $t0) / 1e6
server_cpu = ($server_cpu1 - $server_cpu0) / tck
worker_cpu = $worker_cpu / tck
machine_busy = ($mbusy1 - $mbusy0) / tck
machine_total = ($mtotal1 - $mtotal0) / tck
counts = json.load(open(f"{work}/counts.json"))
done = sum(c["done"] for c in counts)
failed = sum(c["failed"] + c["dead"] for c in counts)

def metrics(path):
    out = {}
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r'^(\w+)(\{[^}]*\})?\s+(\S+)', line)
        if m:
            out[(m.group(1), m.group(2) or "")] = out.get((m.group(1), m.group(2) or ""), 0) + float(m.group(3))
    return out

stages = ["fetch", "decode", "pre", "infer", "post", "encode", "write", "total"]
stage_ms = {}
for s in stages:
    tot = cnt = 0.0
    for p in glob.glob(f"{work}/worker-metrics-*.txt"):
        m = metrics(p)
        tot += sum(v for (k, l), v in m.items() if k == "imagen_worker_stage_seconds_sum" and f'stage="{s}"' in l)
        cnt += sum(v for (k, l), v in m.items() if k == "imagen_worker_stage_seconds_count" and f'stage="{s}"' in l)
    stage_ms[s] = 1000 * tot / cnt if cnt else 0.0

b, a = metrics(f"{work}/server-metrics-before.txt"), metrics(f"{work}/server-metrics-after.txt")
def delta(name):
    return sum(v for (k, l), v in a.items() if k == name and 'model="upscale"' in l) - \
           sum(v for (k, l), v in b.items() if k == name and 'model="upscale"' in l)
srv = {k: delta(k) for k in ("nv_inference_request_success", "nv_inference_count", "nv_inference_exec_count",
                             "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                             "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
                             "nv_inference_compute_output_duration_us")}
reqs = srv["nv_inference_request_success"] or 1
execs = srv["nv_inference_exec_count"] or 1

rate = done / wall
cpu_per_job = (server_cpu + worker_cpu) / N
limit = nproc / cpu_per_job
ratio = rate / limit
ours = server_cpu + worker_cpu
poller = $poll_cpu1 - $poll_cpu0
others = max(0.0, machine_busy - ours - poller)
idle = max(0.0, machine_total - machine_busy)
ready = [float(x) for x in re.findall(r"worker ready in ([0-9.]+) ms", open(f"{work}/ready.txt").read())]

print(f"{'jobs':>6} {'done':>6} {'failed':>6} {'wall s':>8} {'jobs/s':>8} {'worker CPU s/job':>17} "
      f"{'server CPU s/job':>17} {'limit jobs/s':>13} {'of limit':>9}")
print(f"{N:>6} {done:>6} {failed:>6} {wall:>8.2f} {rate:>8.2f} {worker_cpu / N:>17.4f} "
      f"{server_cpu / N:>17.4f} {limit:>13.2f} {100 * ratio:>8.1f}%")
print(f"target: >= 85 % of the CPU-bound limit ({nproc} cores / {cpu_per_job:.4f} CPU s per job): "
      f"{'met' if ratio >= 0.85 else 'MISSED'}")
# On a shared machine the other processes' CPU is not ours to use: the rate
# against the core-seconds they left over tells the pipeline's own idle time
# apart from the machine's load.
avail = machine_total - others - poller
ratio_avail = ours / avail if avail > 0 else 0.0
print(f"against the CPU the other processes left ({avail:.2f} of {machine_total:.2f} core-seconds): "
      f"{100 * ratio_avail:.1f} % of it used by the server and the workers")
print()
print(f"where the machine's CPU went over the run ({machine_total:.1f} core-seconds = {nproc} cores x {wall:.2f} s):")
print(f"  workers {worker_cpu:7.2f} s ({100 * worker_cpu / machine_total:5.1f} %)   server {server_cpu:7.2f} s "
      f"({100 * server_cpu / machine_total:5.1f} %)   this script's poller {poller:5.2f} s   other processes {others:6.2f} s "
      f"({100 * others / machine_total:5.1f} %)   idle {idle:6.2f} s ({100 * idle / machine_total:5.1f} %)")
print()
print("one job as the worker sees it (mean ms per job, imagen_worker_stage_seconds):")
print("  " + "  ".join(f"{s} {stage_ms[s]:.1f}" for s in stages))
print(f"  per worker thread: {wall * workers / N * 1000:.1f} ms of wall time per job, of which 'total' "
      f"{stage_ms['total']:.1f} ms inside the job and {wall * workers / N * 1000 - stage_ms['total']:.1f} ms "
      "between jobs (pull, ack, status writes)")
cycle = wall * workers / N
print(f"  {workers} job thread(s) x {1000 * cpu_per_job:.1f} ms of CPU per job (worker + server) / {1000 * cycle:.1f} ms "
      f"per job cycle = {workers * cpu_per_job / cycle:.2f} of {nproc} cores kept busy: a job is one chain "
      "(worker, then server, then worker), so fewer chains than cores, or chains that wait, leave cores idle")
print(f"the server (upscale model, deltas over the run): {int(srv['nv_inference_request_success'])} requests, "
      f"{int(srv['nv_inference_count'])} images/tiles, {int(srv['nv_inference_exec_count'])} executions "
      f"({srv['nv_inference_count'] / execs:.2f} per execution)")
print(f"  per request: queue {srv['nv_inference_queue_duration_us'] / reqs / 1000:.2f} ms, "
      f"compute input {srv['nv_inference_compute_input_duration_us'] / reqs / 1000:.2f} ms, "
      f"infer {srv['nv_inference_compute_infer_duration_us'] / reqs / 1000:.2f} ms, "
      f"output {srv['nv_inference_compute_output_duration_us'] / reqs / 1000:.2f} ms, "
      f"request total {srv['nv_inference_request_duration_us'] / reqs / 1000:.2f} ms")
print(f"  per job: {reqs / N:.2f} requests, queue {srv['nv_inference_queue_duration_us'] / N / 1000:.1f} ms, "
      f"server request time {srv['nv_inference_request_duration_us'] / N / 1000:.1f} ms "
      f"(worker infer stage {stage_ms['infer']:.1f} ms: the rest is gRPC, copies and the client)")
if ready:
    print(f"workers ready in {', '.join(f'{r:.1f}' for r in ready)} ms (process start to first pull)")

meta = json.load(open(meta_json))
meta.update({"jobs": N, "done": done, "failed": failed, "workers": $WORKERS, "concurrency": $CONCURRENCY,
             "shm": "$SHM", "wall_s": wall, "jobs_per_s": rate,
             "worker_cpu_s": worker_cpu, "server_cpu_s": server_cpu, "worker_cpu_s_per_job": worker_cpu / N,
             "server_cpu_s_per_job": server_cpu / N, "cpu_bound_limit_jobs_per_s": limit,
             "ratio_of_limit": ratio, "machine_busy_s": machine_busy, "machine_total_s": machine_total,
             "other_cpu_s": others, "poller_cpu_s": poller, "idle_cpu_s": idle, "ratio_of_cpu_left": ratio_avail, "worker_stage_ms": stage_ms, "server": srv,
             "worker_ready_ms": ready})
json.dump(meta, open(result_json, "w"), indent=2)
EOF
echo
echo "raw: $RESULT_TXT"
echo "     $RESULT_JSON"
