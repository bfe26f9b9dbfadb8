#!/usr/bin/env bash
# Start-up time: from exec of imagen-server to the first 200 from
# /v2/health/ready, with a repository of MODELS small identity models, beside
# the time to exec /bin/true (the floor of starting any process) measured the
# same way, and beside `imagen-server --version` (the same binary's process
# start and dynamic linking, without serving).
#
#   bench/startup.sh
#
# Each start-up: take the time (bash's EPOCHREALTIME, no fork), start the
# server in the background, poll /v2/health/ready in a tight loop until it
# answers 200, take the time, then stop the server (SIGTERM) and time its exit.
# Two pollers, alternating, one start-up each per run: curl (a fork+exec per
# poll, so its resolution is about one curl, which is printed too) and bash's
# own /dev/tcp (no fork; a poll every ~0.5 ms so that the poller leaves the
# server the CPU; finer resolution). Fresh ports every start-up.
# When hyperfine is installed, /bin/true is cross-checked with `hyperfine -N`.
#
# Environment (defaults): RUNS (20), MODELS (10), IMAGEN_SERVER_BIN.
# Prints a table; raw numbers in bench/results/startup-<timestamp>.{txt,json}.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

RUNS=${RUNS:-20}
MODELS=${MODELS:-10}

need curl
bench_init startup

repo=$WORK/models
for i in $(seq -f %02g 0 $((MODELS - 1))); do
    write_model "$repo" "identity_$i" \
        'max_batch_size: 8' \
        'input [ { name: "INPUT0", data_type: TYPE_INT32, dims: [ 16 ] } ]' \
        'output [ { name: "OUTPUT0", data_type: TYPE_INT32, dims: [ 16 ] } ]' \
        'instance_group [ { count: 1, kind: KIND_CPU } ]' \
        'parameters { key: "operation" value: { string_value: "identity" } }'
done
echo "server   imagen-server on $MODELS identity models (1 CPU instance each), default flags otherwise"
echo "method   bash EPOCHREALTIME before exec; poll until 200 with curl -sf back to back, and with bash /dev/tcp every 0.5 ms; $RUNS runs each"
echo

: >"$WORK/ready.us"
: >"$WORK/polls.count"
: >"$WORK/ready-tcp.us"
: >"$WORK/polls-tcp.count"
: >"$WORK/stop.us"
: >"$WORK/tcp-runs.txt"
: >"$WORK/true.us"
: >"$WORK/version.us"
: >"$WORK/curl.us"

# One fork-free poll: bash opens the TCP connection itself, sends the request
# and reads the status line. Succeeds on a 200.
tcp_ready() {
    local line=""
    { printf 'GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3 &&
        IFS= read -r -t 2 line <&3; } 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    [[ $line == "HTTP/1.1 200"* ]]
}
# A fork-free pause between /dev/tcp polls (read with a timeout on a pipe that
# never gets data): without it the poller spins on one of the cores the
# server needs while it starts.
exec {PAUSE_FD}<> <(:)
pause() {
    read -r -t "$1" -u "$PAUSE_FD" _ || true
}
curl_ready() {
    curl -sf -o /dev/null "http://127.0.0.1:$1/v2/health/ready"
}

# start_once <poller> <run>: one start-up; appends to <poller>'s files.
start_once() {
    local poller=$1 run=$2 http_port metrics_port flags t0 t1 pid polls=0 s0 s1
    http_port=$(free_port)
    metrics_port=$(free_port)
    flags=$(server_flags "$repo" "$http_port" "$metrics_port")
    t0=$(now_us)
    # shellcheck disable=SC2086
    "$SERVER_BIN" $flags >"$WORK/server-$poller-$run.log" 2>&1 &
    pid=$!
    track_pid "$pid"
    until "${poller}_ready" "$http_port"; do
        polls=$((polls + 1))
        if [ "$poller" = tcp ]; then pause 0.0005; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$WORK/server-$poller-$run.log"
            die "imagen-server exited before it was ready (run $run)"
        fi
        if [ "$polls" -gt 100000 ]; then
            die "imagen-server not ready after $polls polls (run $run)"
        fi
    done
    t1=$(now_us)
    if [ "$poller" = curl ]; then
        echo $((t1 - t0)) >>"$WORK/ready.us"
        echo $((polls + 1)) >>"$WORK/polls.count"
        # one more curl against the ready server: the poll's resolution
        s0=$(now_us)
        curl_ready "$http_port"
        s1=$(now_us)
        echo $((s1 - s0)) >>"$WORK/curl.us"
    else
        echo "$t0 $t1 $WORK/server-$poller-$run.log" >>"$WORK/tcp-runs.txt"
        echo $((t1 - t0)) >>"$WORK/ready-tcp.us"
        echo $((polls + 1)) >>"$WORK/polls-tcp.count"
    fi
    # SIGTERM to exit, idle server
    s0=$(now_us)
    kill -TERM "$pid"
    wait "$pid" || true
    s1=$(now_us)
    echo $((s1 - s0)) >>"$WORK/stop.us"
}

for run in $(seq 1 "$RUNS"); do
    start_once curl "$run"
    start_once tcp "$run"
    # the floor, measured with the same clock
    f0=$(now_us)
    /bin/true
    f1=$(now_us)
    echo $((f1 - f0)) >>"$WORK/true.us"
    # the same binary doing nothing: process start + dynamic linking
    f0=$(now_us)
    "$SERVER_BIN" --version >/dev/null
    f1=$(now_us)
    echo $((f1 - f0)) >>"$WORK/version.us"
done

if command -v hyperfine >/dev/null 2>&1; then
    hyperfine -N --warmup 20 --runs 200 --export-json "$WORK/hyperfine-true.json" /bin/true \
        >"$WORK/hyperfine.txt" 2>&1 || rm -f "$WORK/hyperfine-true.json"
fi

"$PY" "$BENCH_DIR/report.py" startup "$WORK" "$RESULT_JSON" --models "$MODELS"
echo
echo "raw: $RESULT_TXT"
echo "     $RESULT_JSON"
