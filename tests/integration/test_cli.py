"""Command-line flags of imagen-server: --help, --version, --check-config,
error messages and exit status 2 for bad flags, and what the flags change in
a running server (endpoint lines, log format and file, server id)."""
import json
import os
import socket
import subprocess
import time

import pytest

from conftest import SERVER_BIN, SLOW, identity_config, write_model


def run_cli(*args, timeout=30):
    """Runs the binary directly (no wrapper: these paths only parse flags)."""
    p = subprocess.run([SERVER_BIN, *args], capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


HELP_FLAGS = [
    "--model-repository", "--model-store", "--model-control-mode", "--repository-poll-secs", "--load-model",
    "--model-config-name", "--strict-model-config", "--disable-auto-complete-config", "--strict-readiness",
    "--exit-on-error", "--exit-timeout-secs", "--id", "--allow-http", "--http-port", "--http-address",
    "--http-thread-count", "--http-max-input-size", "--reuse-http-port", "--allow-grpc", "--grpc-port",
    "--grpc-address", "--allow-metrics", "--metrics-port", "--metrics-address", "--allow-cpu-metrics",
    "--allow-gpu-metrics", "--metrics-interval-ms", "--metrics-config", "--log-verbose", "--log-info",
    "--log-warning", "--log-error", "--log-format", "--log-file", "--backend-directory", "--backend-config",
    "--model-load-thread-count", "--cpu-threads", "--check-config", "--help", "--version",
]


def test_help_lists_every_flag():
    rc, out, err = run_cli("--help")
    assert rc == 0, err
    for flag in HELP_FLAGS:
        assert flag in out, flag
    assert "none|poll|explicit" in out
    assert "default|ISO8601|json" in out


def test_readme_shows_current_help():
    from conftest import ROOT
    rc, out, _ = run_cli("--help")
    assert rc == 0
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert out.rstrip("\n") in readme, "README.md's Flags section must be the output of imagen-server --help"


def test_help_needs_no_repository():
    rc, out, _ = run_cli("--http-port=1", "--help")
    assert rc == 0 and "Usage:" in out


def test_version():
    rc, out, _ = run_cli("--version")
    assert rc == 0
    assert out.startswith("imagen-server ")


def test_check_config_prints_nothing():
    rc, out, err = run_cli("--model-repository=/nonexistent", "--check-config")
    assert (rc, out, err) == (0, "", "")


@pytest.mark.parametrize("args", [
    ["--model-store=/m", "--model-repository", "/n"],
    ["--model-repository", "/m", "--http-port", "9000", "--allow-http", "off", "--log-verbose=1"],
    ["--model-repository=/m", "--allow-http=TRUE", "--strict-readiness=0", "--exit-on-error", "Off"],
    ["--model-repository=/m", "--disable-auto-complete-config", "--reuse-http-port"],
    ["--model-repository=/m", "--model-control-mode=explicit", "--load-model=*"],
    ["--model-repository=/m", "--model-control-mode", "EXPLICIT", "--load-model", "a", "--load-model=b"],
    ["--model-repository=/m", "--http-max-input-size=16m", "--log-format=ISO8601", "--log-format=json"],
    ["--model-repository=/m", "--metrics-config", "counter_latencies=false", "--metrics-config",
     "histogram_latencies=true", "--metrics-config=summary_latencies=true"],
    ["--model-repository=/m", "--backend-config=python,shm-default-byte-size=1048576",
     "--backend-config=default-max-batch-size=4", "--cpu-threads=2", "--strict-model-config=true"],
])
def test_accepted_flag_forms(args):
    rc, out, err = run_cli(*args, "--check-config")
    assert (rc, out, err) == (0, "", "")


def assert_usage_error(args, *fragments):
    rc, out, err = run_cli(*args)
    assert rc == 2, (rc, out, err)
    assert out == ""
    assert err.count("\n") == 1, err  # exactly one line
    for f in fragments:
        assert f in err, err


def test_unknown_flag():
    assert_usage_error(["--model-repository=/m", "--no-such-flag=1"], "--no-such-flag")


def test_unknown_flag_with_check_config():
    assert_usage_error(["--model-repository=/m", "--check-config", "--bogus"], "--bogus")


def test_bad_bool_value():
    assert_usage_error(["--model-repository=/m", "--strict-readiness=maybe"], "--strict-readiness", "maybe",
                       "true|false|on|off|1|0")


def test_bad_bool_value_space_form():
    assert_usage_error(["--model-repository=/m", "--allow-http", "perhaps"], "--allow-http", "perhaps")


def test_bad_int_value():
    assert_usage_error(["--model-repository=/m", "--http-port=http"], "--http-port", "http")
    assert_usage_error(["--model-repository=/m", "--http-port=65536"], "--http-port", "65535")


def test_repository_poll_secs_must_be_positive():
    assert_usage_error(["--model-repository=/m", "--repository-poll-secs=0"], "--repository-poll-secs")


def test_bad_enum_value_lists_choices():
    assert_usage_error(["--model-repository=/m", "--model-control-mode=sometimes"], "--model-control-mode",
                       "none|poll|explicit")
    assert_usage_error(["--model-repository=/m", "--log-format=xml"], "--log-format", "default|ISO8601|json")


def test_missing_value():
    assert_usage_error(["--model-repository=/m", "--http-port"], "--http-port")


def test_missing_repository():
    assert_usage_error(["--http-port=8000"], "--model-repository")


def test_load_model_star_must_be_alone():
    assert_usage_error(["--model-repository=/m", "--model-control-mode=explicit", "--load-model=*",
                        "--load-model=other"], "--load-model", "*")


def test_bad_metrics_config():
    assert_usage_error(["--model-repository=/m", "--metrics-config=bogus_key=1"], "--metrics-config", "bogus_key")


def test_bad_backend_config():
    assert_usage_error(["--model-repository=/m", "--backend-config=novalue"], "--backend-config")


def test_positional_argument_rejected():
    assert_usage_error(["--model-repository=/m", "stray"], "stray")


# ---- flags seen by a running server --------------------------------------

@pytest.fixture
def simple_repo(repo):
    write_model(repo, "identity", identity_config())
    return repo


def wait_for_text(read, text, timeout=5.0):
    """Polls read() until it contains text (the endpoint answers a moment
    before its start-up line is written); returns the last read."""
    deadline = time.time() + timeout * SLOW
    while True:
        got = read()
        if text in got or time.time() > deadline:
            return got
        time.sleep(0.02)


def test_started_lines(simple_repo, server_factory):
    s = server_factory(simple_repo)
    log = wait_for_text(s.log, "Started HTTPService")
    assert f"Started HTTPService at 127.0.0.1:{s.http_port}" in log, log
    assert f"Started Metrics Service at 127.0.0.1:{s.metrics_port}" in log, log
    assert f"Started GRPCInferenceService at 0.0.0.0:{s.grpc_port}" in log, log


def test_no_grpc_line_when_disabled(simple_repo, server_factory):
    s = server_factory(simple_repo, "--allow-grpc=false")
    assert "GRPCInferenceService" not in s.log()


def test_server_id(simple_repo, server_factory):
    s = server_factory(simple_repo, "--id=imagen-test")
    r = s.get("/v2")
    assert r.status == 200
    assert r.json()["name"] == "imagen-test"


def test_metrics_can_be_disabled(simple_repo, server_factory):
    s = server_factory(simple_repo, "--allow-metrics=false")
    with pytest.raises(OSError):
        s.request("GET", "/metrics", port=s.metrics_port, timeout=2.0)
    assert "Metrics Service" not in s.log()


def test_log_format_json(simple_repo, server_factory):
    from conftest import WRAPPER
    if WRAPPER:
        pytest.skip("the wrapper writes its own lines into the log")
    s = server_factory(simple_repo, "--log-format=json")
    lines = [line for line in s.log().splitlines() if line.strip()]
    assert lines
    for line in lines:
        obj = json.loads(line)
        assert {"level", "time", "component", "message"} <= set(obj)


def test_log_file(simple_repo, server_factory, tmp_path):
    path = tmp_path / "server.log"
    s = server_factory(simple_repo, f"--log-file={path}")
    assert "Started HTTPService" in wait_for_text(path.read_text, "Started HTTPService")
    assert "Started HTTPService" not in s.log()


def test_log_info_off(simple_repo, server_factory):
    s = server_factory(simple_repo, "--log-info=false")
    assert "Started HTTPService" not in s.log()


def test_bind_failure_names_address(simple_repo, server_factory):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        s = server_factory(simple_repo, f"--http-port={port}", expect_fail=True)
        assert s.wait_exit() == 1
        assert f"127.0.0.1:{port}" in s.log()


def test_unopenable_log_file_fails(simple_repo, server_factory):
    s = server_factory(simple_repo, "--log-file=/nonexistent-dir/x.log", expect_fail=True)
    assert s.wait_exit() == 1
    assert "/nonexistent-dir/x.log" in s.log()


def test_missing_repository_directory_fails(tmp_path, server_factory):
    s = server_factory(tmp_path / "does-not-exist", expect_fail=True)
    assert s.wait_exit() == 1
    assert os.path.basename(str(tmp_path / "does-not-exist")) in s.log()
