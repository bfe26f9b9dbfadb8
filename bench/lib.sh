# Shared helpers for the bench/*.sh scripts; sourced, never run.
#
# What it provides:
#   bench_init <name>        work dir, result file names, the run header (commit, build,
#                            machine, date); everything printed afterwards is also
#                            copied to bench/results/<name>-<timestamp>.txt
#   ensure_server            sets SERVER_BIN (IMAGEN_SERVER_BIN, else builds build-bench/
#                            as Release) and SERVER_BUILD_TYPE
#   free_port                prints a free TCP port on 127.0.0.1
#   start_server <log> args  starts imagen-server in the background, sets SERVER_PID
#   wait_ready <port> <pid>  polls /v2/health/ready until 200 (or the process dies)
#   track_pid <pid>          the EXIT trap stops this process (TERM, then KILL)
#   rss_kib <pid>            VmRSS of a process in KiB
#   ensure_worker_bins       sets WORKER_BIN and CLI_BIN (IMAGEN_WORKER_BIN / IMAGEN_CLI_BIN,
#                            else imagen-worker and imagen built next to the server)
#
# Environment: IMAGEN_SERVER_BIN (a server binary to use instead of building one),
# BENCH_RESULTS (results directory, default bench/results).

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
PY=/usr/bin/python3 # the Debian interpreter; another python3 may come first on PATH
RESULTS_DIR=${BENCH_RESULTS:-$BENCH_DIR/results}
BENCH_PIDS=()
WORK=""

# Microseconds since the epoch, without forking when bash has EPOCHREALTIME.
now_us() {
    if [ -n "${EPOCHREALTIME:-}" ]; then
        local t=${EPOCHREALTIME/[.,]/}
        echo "$t"
    else
        echo $(($(date +%s%N) / 1000))
    fi
}

track_pid() {
    BENCH_PIDS+=("$1")
}

# Stops one process: SIGTERM, up to 5 s, then SIGKILL.
stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "bench: pid $pid still running 5 s after SIGTERM; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
    local pid
    for pid in "${BENCH_PIDS[@]+"${BENCH_PIDS[@]}"}"; do
        stop_pid "$pid"
    done
    if [ -n "$WORK" ] && [ -d "$WORK" ] && [ -z "${BENCH_KEEP_WORK:-}" ]; then
        rm -rf "$WORK"
    fi
}

die() {
    echo "$BENCH_NAME: $*" >&2
    exit 1
}

need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 ||
            die "'$tool' not found; install it (apt-get install nginx-light wrk nghttp2-client hyperfine curl)"
    done
}

free_port() {
    "$PY" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# Sets SERVER_BIN and SERVER_BUILD_TYPE. Without IMAGEN_SERVER_BIN, builds the
# server as Release in build-bench/ (incremental; a no-op when up to date).
ensure_server() {
    if [ -n "${IMAGEN_SERVER_BIN:-}" ]; then
        SERVER_BIN=$IMAGEN_SERVER_BIN
    else
        if [ ! -f "$ROOT/build-bench/CMakeCache.txt" ]; then
            cmake -S "$ROOT" -B "$ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release >/dev/null ||
                die "cmake configure of build-bench/ failed"
        fi
        cmake --build "$ROOT/build-bench" -j "$(nproc)" --target imagen-server >"$WORK/build.log" 2>&1 ||
            { tail -20 "$WORK/build.log" >&2; die "building imagen-server in build-bench/ failed"; }
        SERVER_BIN=$ROOT/build-bench/imagen-server
    fi
    [ -x "$SERVER_BIN" ] || die "server binary '$SERVER_BIN' is not executable"
    local cache
    cache="$(dirname "$SERVER_BIN")/CMakeCache.txt"
    SERVER_BUILD_TYPE=unknown
    if [ -f "$cache" ]; then
        SERVER_BUILD_TYPE=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$cache")
        [ -n "$SERVER_BUILD_TYPE" ] || SERVER_BUILD_TYPE="(none)"
    fi
}

# start_server <log file> <server flags...>: sets SERVER_PID.
start_server() {
    local log=$1
    shift
    "$SERVER_BIN" "$@" >"$log" 2>&1 &
    SERVER_PID=$!
    track_pid "$SERVER_PID"
}

# wait_ready <port> <pid> [seconds]: polls until /v2/health/ready answers 200.
wait_ready() {
    local port=$1 pid=$2 limit=${3:-30} i
    for i in $(seq 1 $((limit * 20))); do
        if ! kill -0 "$pid" 2>/dev/null; then
            die "imagen-server (pid $pid) exited during start-up; see its log above"
        fi
        if curl -sf -o /dev/null "http://127.0.0.1:$port/v2/health/ready"; then
            return 0
        fi
        sleep 0.05
    done
    die "imagen-server not ready after ${limit}s"
}

# check_alive <pid> <log> <what>: dies with the exit status, the signal and the
# log's tail when the server is gone.
check_alive() {
    local pid=$1 log=$2 what=$3 status=0
    kill -0 "$pid" 2>/dev/null && return 0
    wait "$pid" 2>/dev/null || status=$?
    echo "$BENCH_NAME: imagen-server (pid $pid) is gone $what: exit status $status" \
        "$([ "$status" -gt 128 ] && echo "(signal $((status - 128)): $(kill -l $((status - 128)) 2>/dev/null))")" >&2
    echo "--- last lines of its log ($log):" >&2
    tail -20 "$log" >&2
    exit 1
}

# Sets WORKER_BIN and CLI_BIN: the given binaries, else built next to the server.
ensure_worker_bins() {
    if [ -n "${IMAGEN_WORKER_BIN:-}" ] && [ -n "${IMAGEN_CLI_BIN:-}" ]; then
        WORKER_BIN=$IMAGEN_WORKER_BIN
        CLI_BIN=$IMAGEN_CLI_BIN
    else
        local dir
        dir=$(dirname "$SERVER_BIN")
        [ -f "$dir/CMakeCache.txt" ] || dir=$ROOT/build-bench
        cmake --build "$dir" -j "$(nproc)" --target imagen imagen-worker >"$WORK/build-worker.log" 2>&1 ||
            { tail -20 "$WORK/build-worker.log"; die "building imagen and imagen-worker in $dir failed"; }
        WORKER_BIN=${IMAGEN_WORKER_BIN:-$dir/imagen-worker}
        CLI_BIN=${IMAGEN_CLI_BIN:-$dir/imagen}
    fi
    [ -x "$WORKER_BIN" ] || die "worker binary '$WORKER_BIN' is not executable"
    [ -x "$CLI_BIN" ] || die "CLI binary '$CLI_BIN' is not executable"
}

rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# bench_init <name>: creates $WORK, sets RESULT_TXT/RESULT_JSON/META_JSON, starts
# copying stdout to RESULT_TXT and prints the header.
bench_init() {
    BENCH_NAME=$1
    WORK=$(mktemp -d "/tmp/imagen-bench-$BENCH_NAME.XXXXXX")
    trap bench_cleanup EXIT
    set -o errtrace
    trap 'echo "$BENCH_NAME: command failed (status $?, line $LINENO): $BASH_COMMAND" >&2' ERR
    trap 'exit 130' INT
    trap 'exit 143' TERM
    mkdir -p "$RESULTS_DIR"
    local ts
    ts=$(date -u +%Y%m%dT%H%M%SZ)
    RESULT_TXT=$RESULTS_DIR/$BENCH_NAME-$ts.txt
    RESULT_JSON=$RESULTS_DIR/$BENCH_NAME-$ts.json
    ensure_server
    exec > >(tee "$RESULT_TXT") 2>&1
    BENCH_COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if ! git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null; then
        BENCH_COMMIT="$BENCH_COMMIT (working tree modified)"
    fi
    BENCH_CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
    BENCH_NPROC=$(nproc)
    BENCH_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    BENCH_OS=$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-unknown}")
    BENCH_KERNEL=$(uname -r)
    BENCH_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
    BENCH_MEM=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    echo "== $BENCH_NAME  ($BENCH_DATE)"
    echo "commit   $BENCH_COMMIT"
    echo "build    $SERVER_BUILD_TYPE  ($SERVER_BIN)"
    echo "machine  $BENCH_NPROC cores, $BENCH_CPU, $BENCH_MEM RAM, $BENCH_OS, Linux $BENCH_KERNEL"
    echo "load     loadavg $BENCH_LOAD at start (anything else running on the machine skews the figures)"
    META_JSON=$WORK/meta.json
    "$PY" - "$META_JSON" <<EOF
import json, sys
json.dump({"benchmark": "$BENCH_NAME", "date": "$BENCH_DATE", "commit": """$BENCH_COMMIT""",
           "build_type": "$SERVER_BUILD_TYPE", "server_bin": "$SERVER_BIN",
           "nproc": $BENCH_NPROC, "cpu": """$BENCH_CPU""", "memory": "$BENCH_MEM",
           "os": """$BENCH_OS""", "kernel": "$BENCH_KERNEL",
           "loadavg_at_start": "$BENCH_LOAD"}, open(sys.argv[1], "w"))
EOF
}

# Common server flags: loopback only, no gRPC, info logs kept in the log file.
server_flags() {
    local repo=$1 http_port=$2 metrics_port=$3
    echo "--model-repository=$repo --http-address=127.0.0.1 --http-port=$http_port" \
        "--metrics-port=$metrics_port --allow-grpc=false"
}

# Writes an imageops model: write_model <repo> <name> <config body lines...>
write_model() {
    local repo=$1 name=$2
    shift 2
    mkdir -p "$repo/$name/1"
    {
        echo "name: \"$name\""
        echo 'backend: "imageops"'
        printf '%s\n' "$@"
    } >"$repo/$name/config.pbtxt"
}
