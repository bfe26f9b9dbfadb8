#!/usr/bin/env bash
# Starts build/imagen-server on the bundled models/ repository on the
# standard ports (HTTP 8000, gRPC 8001, metrics 8002), shows the repository index, then
# pushes the sample photos through the five image models
# (scripts/run-photos.py: PNG results and contact sheets in out/, a table of
# timings), then keeps serving until Ctrl-C (or for RUN_SECONDS seconds when
# that is set). Used by `make run`.
#
#   IMAGEN_SERVER_BIN  server binary (default build/imagen-server)
#   RUN_SECONDS        stop after this many seconds instead of waiting for Ctrl-C
#   HTTP_PORT, GRPC_PORT, METRICS_PORT   ports (default 8000, 8001, 8002)
#   OUT_DIR            where the photo job writes (default out)
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${IMAGEN_SERVER_BIN:-build/imagen-server}
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

cmd=("$bin" --model-repository=models --http-port="$http_port" --grpc-port="$grpc_port" --metrics-port="$metrics_port")
echo "+ ${cmd[*]} &"
# Its own session: Ctrl-C reaches only this script, which forwards exactly
# one SIGTERM (a second signal would make the server skip the drain).
setsid "${cmd[@]}" &
pid=$!

stop_server() {
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
printf '\n$ /usr/bin/python3 scripts/run-photos.py %s %s\n' "$base" "${OUT_DIR:-out}"
/usr/bin/python3 scripts/run-photos.py "$base" "${OUT_DIR:-out}" || echo "(photo job exit status $?)"
printf '\n$ curl -s localhost:%s/metrics | grep -E "^nv_inference_(request_success|exec_count)"\n' "$metrics_port"
curl -s "localhost:$metrics_port/metrics" | grep -E '^nv_inference_(request_success|exec_count)' || true

echo
if [ -n "${RUN_SECONDS:-}" ]; then
    echo "imagen-server (pid $pid) serving $base for ${RUN_SECONDS}s (RUN_SECONDS)"
    sleep "$RUN_SECONDS" &
    wait $! || true
    stop_server
else
    echo "imagen-server (pid $pid) serving $base and localhost:$metrics_port/metrics; press Ctrl-C to stop"
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
