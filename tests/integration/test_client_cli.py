"""The `imagen` command and, through it, the C client library (src/client/)
against a real imagen-server over both protocols: health, models, metadata,
infer (.npy and PNG), load/unload, stats, errors, exit codes, --help, and
the library's asynchronous path (`infer --repeat --concurrency`).

IMAGEN_CLI_BIN: the `imagen` binary (default: next to IMAGEN_SERVER_BIN).
"""
import json
import os
import subprocess

import numpy as np
import pytest

from conftest import SERVER_BIN, SLOW, WRAPPER, free_port, write_model
from httputil import add_sub_config, identity
from imageutil import bundled_server  # noqa: F401 (fixture)

CLI_BIN = os.environ.get("IMAGEN_CLI_BIN", os.path.join(os.path.dirname(SERVER_BIN), "imagen"))
PROTOCOLS = ("http", "grpc")

EXIT_OK, EXIT_SERVER, EXIT_USAGE, EXIT_CONNECT, EXIT_FILE = 0, 1, 2, 3, 4


def url(server, proto):
    port = server.http_port if proto == "http" else server.grpc_port
    return f"{proto}://127.0.0.1:{port}"


def cli(*args, timeout=60.0):
    """Runs `imagen args...`; returns the CompletedProcess (text)."""
    p = subprocess.run(WRAPPER + [CLI_BIN] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout * SLOW)
    return p


def ok(*args, **kw):
    p = cli(*args, **kw)
    assert p.returncode == EXIT_OK, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


@pytest.fixture
def server(repo, server_factory):
    write_model(repo, "identity", identity())
    write_model(repo, "add_sub", add_sub_config(dtype="TYPE_FP32", dims="[ 4 ]"))
    return server_factory(repo)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_health(server, proto):
    p = ok("--url", url(server, proto), "health")
    assert p.stdout.splitlines() == ["live: true", "ready: true"]


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_models_lists_states(server, proto):
    p = ok("--url", url(server, proto), "models")
    rows = {line.split()[0]: line.split()[1:] for line in p.stdout.splitlines()[1:]}
    assert rows["identity"][:2] == ["1", "READY"]
    assert rows["add_sub"][:2] == ["1", "READY"]
    index = json.loads(ok("--url", url(server, proto), "models", "--json").stdout)
    assert {"name": "identity", "version": "1", "state": "READY"} in index


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_metadata_and_config(server, proto):
    meta = json.loads(ok("--url", url(server, proto), "metadata", "add_sub").stdout)
    assert meta["name"] == "add_sub"
    assert meta["versions"] == ["1"]
    assert meta["inputs"][0] == {"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]}
    assert [o["name"] for o in meta["outputs"]] == ["OUTPUT0", "OUTPUT1"]
    config = json.loads(ok("--url", url(server, proto), "config", "add_sub").stdout)
    assert config["name"] == "add_sub"
    assert config["max_batch_size"] == 8
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["input"][0]["dims"] == [4]


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_infer_npy_add_sub(server, proto, tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.full((3, 4), 0.5, dtype=np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    out = tmp_path / "out"
    p = ok("--url", url(server, proto), "infer", "add_sub", "--input", f"INPUT0={tmp_path / 'a.npy'}",
           "--input", f"INPUT1={tmp_path / 'b.npy'}", "--output-dir", out)
    assert f"OUTPUT0 FP32 [3,4] {out}/OUTPUT0.npy" in p.stdout
    np.testing.assert_array_equal(np.load(out / "OUTPUT0.npy"), a + b)
    np.testing.assert_array_equal(np.load(out / "OUTPUT1.npy"), a - b)


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("shape", [(1, 16), (2, 1000), (1, 0)])
def test_infer_npy_identity(server, proto, shape, tmp_path):
    x = np.random.default_rng(7).integers(-2**31, 2**31 - 1, size=shape, dtype=np.int32)
    np.save(tmp_path / "x.npy", x)
    ok("--url", url(server, proto), "infer", "identity", "--input", f"INPUT0={tmp_path / 'x.npy'}",
       "--output-dir", tmp_path / "o", "--output", "OUTPUT0")
    y = np.load(tmp_path / "o" / "OUTPUT0.npy")
    assert y.dtype == np.int32 and y.shape == x.shape
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_infer_async_repeat_concurrency(server, proto, tmp_path):
    """Concurrent asynchronous infers through the library's infer_async."""
    x = np.arange(64, dtype=np.int32).reshape(4, 16)
    np.save(tmp_path / "x.npy", x)
    p = ok("--url", url(server, proto), "infer", "identity", "--input", f"INPUT0={tmp_path / 'x.npy'}",
           "--output-dir", tmp_path, "--repeat", 64, "--concurrency", 8)
    assert "64 requests, 0 failed, concurrency 8" in p.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "OUTPUT0.npy"), x)
    stats = json.loads(ok("--url", url(server, proto), "stats", "identity").stdout)
    assert stats["model_stats"][0]["inference_stats"]["success"]["count"] == 64


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_infer_png_through_image_model(bundled_server, proto, tmp_path):  # noqa: F811
    from PIL import Image
    img = (np.random.default_rng(3).random((48, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "in.png")
    p = ok("--url", url(bundled_server, proto), "infer", "upscale", "--input", f"IMAGE={tmp_path / 'in.png'}",
           "--output-dir", tmp_path / "o")
    assert "IMAGE UINT8 [1,96,128,3]" in p.stdout
    out = np.asarray(Image.open(tmp_path / "o" / "IMAGE.png"))
    assert out.shape == (96, 128, 3)
    # Against the same request with .npy in and out: the PNG path loses nothing.
    np.save(tmp_path / "in.npy", img[None])
    ok("--url", url(bundled_server, proto), "infer", "upscale", "--input", f"IMAGE={tmp_path / 'in.npy'}",
       "--output-dir", tmp_path / "n", "--npy")
    np.testing.assert_array_equal(np.load(tmp_path / "n" / "IMAGE.npy")[0], out)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_load_unload_explicit(repo, server_factory, proto):
    write_model(repo, "identity", identity())
    s = server_factory(repo, "--model-control-mode=explicit")
    u = url(s, proto)
    assert "identity" not in ok("--url", u, "models", "--ready").stdout
    assert ok("--url", u, "load", "identity").stdout.strip() == "identity: loaded"
    assert s.get("/v2/models/identity/ready").status == 200
    assert "READY" in ok("--url", u, "models").stdout
    assert ok("--url", u, "unload", "identity").stdout.strip() == "identity: unloaded"
    assert s.get("/v2/models/identity/ready").status != 200
    # Loading something that is not in the repository is the server's error.
    p = cli("--url", u, "load", "missing_model")
    assert p.returncode == EXIT_SERVER
    assert "missing_model" in p.stderr


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_load_needs_explicit_mode(server, proto):
    p = cli("--url", url(server, proto), "unload", "identity")
    assert p.returncode == EXIT_SERVER
    assert "UNAVAILABLE" in p.stderr


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_stats_all_and_one(server, proto):
    all_stats = json.loads(ok("--url", url(server, proto), "stats").stdout)
    assert {m["name"] for m in all_stats["model_stats"]} >= {"identity", "add_sub"}
    one = json.loads(ok("--url", url(server, proto), "stats", "add_sub").stdout)
    assert [m["name"] for m in one["model_stats"]] == ["add_sub"]
    assert one["model_stats"][0]["inference_count"] == 0


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_unknown_model_is_server_error(server, proto, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.int32))
    p = cli("--url", url(server, proto), "infer", "nosuch", "--input", f"INPUT0={tmp_path / 'x.npy'}")
    assert p.returncode == EXIT_SERVER
    assert "INVALID_ARG" in p.stderr and "Request for unknown model: 'nosuch' is not found" in p.stderr
    p = cli("--url", url(server, proto), "metadata", "nosuch")
    assert p.returncode == EXIT_SERVER
    assert "nosuch" in p.stderr


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_wrong_datatype_is_server_error(server, proto, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.int64))
    p = cli("--url", url(server, proto), "infer", "identity", "--input", f"INPUT0={tmp_path / 'x.npy'}")
    assert p.returncode == EXIT_SERVER
    assert "data-type" in p.stderr or "datatype" in p.stderr


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_cannot_connect(proto):
    p = cli("--url", f"{proto}://127.0.0.1:{free_port()}", "--timeout", "10", "health")
    assert p.returncode == EXIT_CONNECT, p.stderr
    assert "cannot connect" in p.stderr


def test_local_file_errors(server, tmp_path):
    p = cli("--url", url(server, "http"), "infer", "identity", "--input", f"INPUT0={tmp_path / 'none.npy'}")
    assert p.returncode == EXIT_FILE
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    p = cli("--url", url(server, "http"), "infer", "identity", "--input", f"INPUT0={tmp_path / 'bad.npy'}")
    assert p.returncode == EXIT_FILE
    assert "not a .npy file" in p.stderr


@pytest.mark.parametrize("argv", [
    [], ["bogus"], ["metadata"], ["metadata", "a", "b"], ["infer", "m"], ["infer", "m", "--input", "noequals"],
    ["health", "--nope"], ["--url", "ftp://x", "health"], ["--timeout", "soon", "health"],
    ["infer", "m", "--input", "A=x.npy", "--repeat", "0"],
])
def test_usage_errors(argv):
    p = cli(*argv)
    assert p.returncode == EXIT_USAGE, (argv, p.stdout, p.stderr)


@pytest.mark.parametrize("command", ["health", "models", "metadata", "config", "infer", "load", "unload", "stats"])
def test_help_of_each_subcommand(command):
    p = ok(command, "--help")
    assert p.stdout.startswith("Usage: imagen")
    assert f" {command}" in p.stdout.splitlines()[0]
    assert "--help" in p.stdout


def test_main_help_documents_exit_codes():
    p = ok("--help")
    for command in ("health", "models", "metadata", "infer", "load", "unload", "stats"):
        assert f"  {command} " in p.stdout
    assert "3  cannot connect" in p.stdout
