"""imagen-loadgen (bench/loadgen.c) against a real server: a short sweep over
gRPC and HTTP, with and without system shared memory, must write one sane
CSV row per concurrency (requests and rate > 0, ordered percentiles, no
errors), and a model that does not exist must make it fail.

IMAGEN_LOADGEN_BIN: the imagen-loadgen binary (default: next to IMAGEN_SERVER_BIN).
"""
import csv
import os
import subprocess

import pytest

from conftest import SERVER_BIN, SLOW, identity_config, write_model

LOADGEN_BIN = os.environ.get("IMAGEN_LOADGEN_BIN", os.path.join(os.path.dirname(SERVER_BIN), "imagen-loadgen"))
COLUMNS = ["concurrency", "protocol", "requests", "rps", "p50_us", "p90_us", "p99_us", "mb_per_s", "errors"]

pytestmark = pytest.mark.skipif(not os.access(LOADGEN_BIN, os.X_OK),
                                reason=f"imagen-loadgen not built at {LOADGEN_BIN}")


@pytest.fixture
def server(repo, server_factory):
    write_model(repo, "identity_int32", identity_config("identity_int32", extra="dynamic_batching { }"))
    write_model(repo, "identity_u8", identity_config("identity_u8", dtype="TYPE_UINT8", dims="[ -1, -1, 3 ]",
                                                     max_batch_size=0))
    return server_factory(repo, "--grpc-address=127.0.0.1", "--allow-client-shm=true")


def run_loadgen(server, tmp_path, protocol, *args):
    port = server.grpc_port if protocol == "grpc" else server.http_port
    out = tmp_path / f"{protocol}.csv"
    cmd = [LOADGEN_BIN, "--url", f"{protocol}://127.0.0.1:{port}", "--duration", "0.5", "--warmup", "0.2",
           "--csv", str(out)] + list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60 * SLOW)
    rows = list(csv.DictReader(open(out))) if out.exists() else []
    return proc, rows


def check_rows(rows, concurrencies, protocol):
    assert [int(r["concurrency"]) for r in rows] == concurrencies
    for r in rows:
        assert list(r.keys()) == COLUMNS
        assert r["protocol"] == protocol
        assert int(r["requests"]) > 0
        assert float(r["rps"]) > 0
        assert 0 < int(r["p50_us"]) <= int(r["p90_us"]) <= int(r["p99_us"])
        assert float(r["mb_per_s"]) > 0
        assert int(r["errors"]) == 0


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sweep_small_tensor(server, tmp_path, protocol):
    proc, rows = run_loadgen(server, tmp_path, protocol, "--model", "identity_int32", "--input-shape", "1,16",
                             "--concurrency", "1,4")
    assert proc.returncode == 0, proc.stderr
    check_rows(rows, [1, 4], protocol)
    # The human-readable table has one line per step too.
    assert len([line for line in proc.stdout.splitlines() if line.strip().startswith(("1 ", "4 "))]) == 2


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("shm", [False, True])
def test_image_sized_tensor(server, tmp_path, protocol, shm):
    args = ["--model", "identity_u8", "--datatype", "UINT8", "--input-shape", "64,64,3", "--concurrency", "2"]
    proc, rows = run_loadgen(server, tmp_path, protocol, *args, *(["--shm"] if shm else []))
    assert proc.returncode == 0, proc.stderr
    check_rows(rows, [2], protocol + ("-shm" if shm else ""))
    # MB/s is the payload both ways at the measured rate.
    r = rows[0]
    assert float(r["mb_per_s"]) == pytest.approx(float(r["rps"]) * 2 * 64 * 64 * 3 / 1e6, rel=0.01)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_unknown_model_fails(server, tmp_path, protocol):
    proc, rows = run_loadgen(server, tmp_path, protocol, "--model", "no_such_model", "--concurrency", "1")
    assert proc.returncode == 1
    assert "failed request" in proc.stderr
    assert len(rows) == 1 and int(rows[0]["errors"]) > 0 and int(rows[0]["requests"]) == 0


def test_bad_options(tmp_path):
    for args in (["--model", "m"], ["--url", "ftp://x:1", "--model", "m"],
                 ["--url", "grpc://127.0.0.1:1", "--model", "m", "--concurrency", "0"],
                 ["--url", "grpc://127.0.0.1:1", "--model", "m", "--datatype", "BYTES"]):
        proc = subprocess.run([LOADGEN_BIN] + args, capture_output=True, text=True, timeout=10)
        assert proc.returncode == 2, args
