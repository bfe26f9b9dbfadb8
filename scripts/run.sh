#!/usr/bin/env bash
# The main job (`make run`): the whole pipeline on one machine.
#
# Starts build/imagen-server on the bundled models/ repository (HTTP 8000,
# gRPC 8001, metrics 8002), shows the repository index, starts one
# build/imagen-worker for all five operations on a sqlite queue in OUT_DIR,
# submits the sample photos to every operation with `imagen submit`
# (scripts/run-jobs.py: results and contact sheets in OUT_DIR, a table of
# job id, operation, state and milliseconds per stage), shows the queues
# and the worker's metrics, then keeps serving until Ctrl-C (or for
# RUN_SECONDS seconds when that is set).
#
#   BUILD_DIR          where the programs are (default build)
#   RUN_SECONDS        stop after this many seconds instead of waiting for Ctrl-C
#   HTTP_PORT, GRPC_PORT, METRICS_PORT, WORKER_PORT   ports (default 8000, 8001, 8002, 8090)
#   OUT_DIR            where the jobs write (default out)
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD_DIR:-build}
bin=$build/imagen-server
worker_port=${WORKER_PORT:-8090}
out=${OUT_DIR:-out}
queue="sqlite://$(pwd)/$out/queue.db"
http_port=${HTTP_PORT:-8000}
grpc_port=${GRPC_PORT:-8001}
metrics_port=${METRICS_PORT:-8002}
base="http://localhost:$http_port"

# Prints a command as it would be typed (arguments quoted where needed),
# then runs it.
show() {
    local arg shown=()
    for arg in "$@"; do
        if [[ $arg =~ ^[A-Za-z0-9_./:=@%+-]+$ ]]; then
            shown+=("$arg")
        else
            shown+=("'${arg//\'/\'\\\'\'}'")
        fi
    done
    printf '\n$ %s\n' "${shown[*]}"
    "$@" || echo "(exit status $?)"
    echo
}

# --allow-client-shm: the worker runs on this machine and hands images over
# through /dev/shm instead of the socket.
cmd=("$bin" --model-repository=models --http-port="$http_port" --grpc-port="$grpc_port" --metrics-port="$metrics_port"
     --allow-client-shm=true)
echo "+ ${cmd[*]} &"
# Its own session: Ctrl-C reaches only this script, which forwards exactly
# one SIGTERM (a second signal would make the server skip the drain).
setsid "${cmd[@]}" &
pid=$!

worker_pid=
stop_worker() {
    if [ -n "$worker_pid" ] && kill -0 "$worker_pid" 2>/dev/null; then
        kill -TERM "$worker_pid" 2>/dev/null || true
        wait "$worker_pid" 2>/dev/null || true
    fi
}
stop_server() {
    stop_worker
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
    fi
}
trap stop_server INT TERM
trap 'stop_server; wait "$pid" 2>/dev/null || true' EXIT

printf 'waiting for %s/v2/health/ready' "$base"
for _ in $(seq 1 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo
        wait "$pid" || status=$?
        echo "imagen-server exited during start-up (status ${status:-0})" >&2
        trap - EXIT
        exit 1
    fi
    if curl -sf -o /dev/null "$base/v2/health/ready"; then
        break
    fi
    printf '.'
    sleep 0.1
done
echo

show curl -s "$base/v2"
show curl -s -X POST "$base/v2/repository/index"
# A fresh queue per run, so the table shows this run's jobs only.
mkdir -p "$out"
rm -f "$out/queue.db" "$out/queue.db-wal" "$out/queue.db-shm"
wcmd=("$build/imagen-worker" --queue "$queue" --server "grpc://localhost:$grpc_port" --concurrency 2
      --metrics-port "$worker_port")
# The worker logs a line per job; they go to a file so the job table stays
# readable (tail -f out/worker.log to watch them).
echo "+ ${wcmd[*]} >$out/worker.log 2>&1 &"
setsid "${wcmd[@]}" >"$out/worker.log" 2>&1 &
worker_pid=$!

printf '\n$ /usr/bin/python3 scripts/run-jobs.py %s %s %s\n' "$build/imagen" "$queue" "$out"
/usr/bin/python3 scripts/run-jobs.py "$build/imagen" "$queue" "$out" || echo "(job run exit status $?)"
show "$build/imagen" queues --queue "$queue"
printf '$ curl -s localhost:%s/metrics | grep -E "^imagen_worker_jobs_total"\n' "$worker_port"
curl -s "localhost:$worker_port/metrics" | grep -E '^imagen_worker_jobs_total' || true
printf '\n$ curl -s localhost:%s/metrics | grep -E "^nv_inference_(request_success|exec_count)"\n' "$metrics_port"
curl -s "localhost:$metrics_port/metrics" | grep -E '^nv_inference_(request_success|exec_count)' || true

echo
if [ -n "${RUN_SECONDS:-}" ]; then
    echo "imagen-server (pid $pid) and imagen-worker (pid $worker_pid) running for ${RUN_SECONDS}s (RUN_SECONDS)"
    sleep "$RUN_SECONDS" &
    wait $! || true
    stop_server
else
    echo "imagen-server (pid $pid) serving $base and localhost:$metrics_port/metrics, imagen-worker (pid $worker_pid)"
    echo "on $queue: try $build/imagen submit --queue $queue --op enhance --wait PHOTO; press Ctrl-C to stop"
fi
# wait returns early (status > 128) when a trapped signal arrives; wait
# again until the server itself has exited.
while :; do
    if wait "$pid"; then status=0; else status=$?; fi
    if [ "$status" -le 128 ] || ! kill -0 "$pid" 2>/dev/null; then
        break
    fi
done
trap - EXIT
echo "imagen-server exited with status $status"
exit "$status"
