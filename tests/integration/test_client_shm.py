"""System shared memory through the C client library and `imagen infer
--shm` (spec §1.13) over both protocols, against a real imagen-server on
this machine: results equal the socket path, a 12-megapixel image makes the
trip, a server without --allow-client-shm gives a clear error, and no
/dev/shm object is left behind, errors included.

IMAGEN_CLI_BIN: the `imagen` binary (default: next to IMAGEN_SERVER_BIN).
"""
import json
import os

import numpy as np
import pytest

from conftest import write_model
from httputil import add_sub_config, identity
from imageutil import BUNDLED_MODELS
from test_client_cli import EXIT_SERVER, PROTOCOLS, cli, ok, url


def shm_objects():
    """The imagen client's objects in /dev/shm (keys /imagen_<pid>_...)."""
    return {n for n in os.listdir("/dev/shm") if n.startswith("imagen_")}


@pytest.fixture
def no_leftovers():
    before = shm_objects()
    yield
    assert shm_objects() - before == set()


def write_models(repo):
    write_model(repo, "identity", identity())
    write_model(repo, "add_sub", add_sub_config(dtype="TYPE_FP32", dims="[ 4 ]"))


@pytest.fixture
def shm_server(repo, server_factory):
    write_models(repo)
    return server_factory(repo, "--allow-client-shm=true")


def regions(server):
    return json.loads(server.get("/v2/systemsharedmemory/status").body)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_shm_add_sub_equals_socket(shm_server, proto, tmp_path, no_leftovers):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.full((3, 4), 0.5, dtype=np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    common = ["--url", url(shm_server, proto), "infer", "add_sub", "--input", f"INPUT0={tmp_path / 'a.npy'}",
              "--input", f"INPUT1={tmp_path / 'b.npy'}"]
    ok(*common, "--output-dir", tmp_path / "plain")
    p = ok(*common, "--output-dir", tmp_path / "shm", "--shm")
    assert f"OUTPUT0 FP32 [3,4] {tmp_path / 'shm'}/OUTPUT0.npy" in p.stdout
    for name in ("OUTPUT0", "OUTPUT1"):
        np.testing.assert_array_equal(np.load(tmp_path / "shm" / f"{name}.npy"),
                                      np.load(tmp_path / "plain" / f"{name}.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "shm" / "OUTPUT1.npy"), a - b)
    assert regions(shm_server) == []  # unregistered at the end


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("shape", [(1, 16), (2, 1000)])
def test_shm_identity_named_output_and_repeat(shm_server, proto, shape, tmp_path, no_leftovers):
    x = np.random.default_rng(5).integers(-2**31, 2**31 - 1, size=shape, dtype=np.int32)
    np.save(tmp_path / "x.npy", x)
    ok("--url", url(shm_server, proto), "infer", "identity", "--input", f"INPUT0={tmp_path / 'x.npy'}",
       "--output", "OUTPUT0", "--output-dir", tmp_path / "o", "--shm")
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "OUTPUT0.npy"), x)
    # The asynchronous path with the same region for every request.
    p = ok("--url", url(shm_server, proto), "infer", "identity", "--input", f"INPUT0={tmp_path / 'x.npy'}",
           "--output-dir", tmp_path / "r", "--shm", "--repeat", 8, "--concurrency", 4)
    assert "8 requests, 0 failed" in p.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "r" / "OUTPUT0.npy"), x)
    assert regions(shm_server) == []


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_shm_12_megapixel_image(server_factory, proto, tmp_path, no_leftovers):
    s = server_factory(BUNDLED_MODELS, "--allow-client-shm=true")
    img = np.random.default_rng(11).integers(0, 256, size=(1, 3000, 4000, 3), dtype=np.uint8)
    np.save(tmp_path / "img.npy", img)
    common = ["--url", url(s, proto), "--timeout", "240", "infer", "style_aged", "--input",
              f"IMAGE={tmp_path / 'img.npy'}", "--npy"]
    p = ok(*common, "--output-dir", tmp_path / "shm", "--shm", timeout=240)
    assert "IMAGE UINT8 [1,3000,4000,3]" in p.stdout
    ok(*common, "--output-dir", tmp_path / "plain", timeout=240)
    out = np.load(tmp_path / "shm" / "IMAGE.npy")
    assert out.shape == img.shape
    np.testing.assert_array_equal(out, np.load(tmp_path / "plain" / "IMAGE.npy"))
    assert regions(s) == []


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_shm_disabled_server_is_clear_error(repo, server_factory, proto, tmp_path, no_leftovers):
    write_models(repo)
    s = server_factory(repo)  # no --allow-client-shm
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.int32))
    p = cli("--url", url(s, proto), "infer", "identity", "--input", f"INPUT0={tmp_path / 'x.npy'}", "--shm")
    assert p.returncode == EXIT_SERVER, p.stderr
    assert "UNSUPPORTED" in p.stderr
    assert "--allow-client-shm=true" in p.stderr
    assert not (tmp_path / "OUTPUT0.npy").exists()


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_shm_server_error_cleans_up(shm_server, proto, tmp_path, no_leftovers):
    # Rejected by the server after the region is registered: wrong datatype.
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.int64))
    p = cli("--url", url(shm_server, proto), "infer", "identity", "--input", f"INPUT0={tmp_path / 'x.npy'}",
            "--shm")
    assert p.returncode == EXIT_SERVER, p.stderr
    assert "data-type" in p.stderr or "datatype" in p.stderr
    # Unknown model: fails before any region exists.
    p = cli("--url", url(shm_server, proto), "infer", "nosuch", "--input", f"INPUT0={tmp_path / 'x.npy'}",
            "--shm")
    assert p.returncode == EXIT_SERVER, p.stderr
    assert regions(shm_server) == []
