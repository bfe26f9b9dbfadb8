"""Backends: the imageops operations (identity, add_sub, timed), model load
failures reported by the repository index, and an external backend loaded
from --backend-directory."""
import json
import os
import struct
import time

import numpy as np
import pytest

from conftest import SERVER_BIN, identity_config, write_model

# (protocol datatype, config enum, numpy dtype or None for BYTES, JSON-capable)
DATATYPES = [
    ("BOOL", "TYPE_BOOL", np.bool_, True),
    ("UINT8", "TYPE_UINT8", np.uint8, True),
    ("UINT16", "TYPE_UINT16", np.uint16, True),
    ("UINT32", "TYPE_UINT32", np.uint32, True),
    ("UINT64", "TYPE_UINT64", np.uint64, True),
    ("INT8", "TYPE_INT8", np.int8, True),
    ("INT16", "TYPE_INT16", np.int16, True),
    ("INT32", "TYPE_INT32", np.int32, True),
    ("INT64", "TYPE_INT64", np.int64, True),
    ("FP16", "TYPE_FP16", np.float16, False),
    ("FP32", "TYPE_FP32", np.float32, True),
    ("FP64", "TYPE_FP64", np.float64, True),
    ("BYTES", "TYPE_STRING", None, True),
    ("BF16", "TYPE_BF16", None, False),
]


def model_name(dt):
    return "identity_" + dt.lower()


def sample(dt, npdt, n=6):
    """Values of datatype `dt` as (JSON list, raw little-endian bytes)."""
    if dt == "BYTES":
        # Binary elements may hold any byte; the JSON ones stay printable.
        vals = [b"", b"a", b"hello", b"\x00\xffbin", b"x" * 300, b"end"][:n]
        raw = b"".join(struct.pack("<I", len(v)) + v for v in vals)
        return ["", "a", "hello", "with space", "x" * 300, "end"][:n], raw
    if dt == "BF16":
        bits = np.array([0x3F80, 0xC000, 0x0000, 0x7F7F, 0x0001, 0x4049][:n], dtype="<u2")
        return None, bits.tobytes()
    if dt == "BOOL":
        arr = np.array([True, False, True, True, False, False][:n])
    elif npdt in (np.float16, np.float32, np.float64):
        arr = np.array([0.0, -1.5, 3.25, 1e3, -2.0, 0.125][:n], dtype=npdt)
    else:
        info = np.iinfo(npdt)
        arr = np.array([0, 1, info.max, info.min, 7, info.max - 1][:n], dtype=npdt)
    return arr.tolist(), arr.astype(np.dtype(npdt).newbyteorder("<")).tobytes()


@pytest.fixture(scope="module")
def all_types_server(tmp_path_factory):
    """One server with an identity model per datatype (module-scoped: it is
    started once, and its clean exit is asserted at the end)."""
    from conftest import Server

    repo = tmp_path_factory.mktemp("models")
    for dt, enum, _, _ in DATATYPES:
        write_model(repo, model_name(dt), identity_config(name=model_name(dt), dtype=enum))
    s = Server(repo)
    yield s
    rc = s.stop()
    assert rc == 0, s.log()


def infer_binary(server, model, inputs, outputs=None):
    """inputs: [(name, datatype, shape, raw bytes)] -> (status, json, {output: bytes})."""
    header = {
        "inputs": [
            {"name": n, "datatype": dt, "shape": list(shape), "parameters": {"binary_data_size": len(raw)}}
            for n, dt, shape, raw in inputs
        ],
        "outputs": [{"name": o, "parameters": {"binary_data": True}} for o in (outputs or ["OUTPUT0"])],
    }
    hdr = json.dumps(header).encode()
    body = hdr + b"".join(raw for _, _, _, raw in inputs)
    r = server.post(f"/v2/models/{model}/infer", body=body,
                    headers={"Inference-Header-Content-Length": str(len(hdr)),
                             "Content-Type": "application/octet-stream"})
    if r.status != 200:
        return r.status, r.json(), {}
    n = int(r.header("Inference-Header-Content-Length") or len(r.body))
    js = json.loads(r.body[:n])
    blobs, off = {}, n
    for out in js["outputs"]:
        size = out.get("parameters", {}).get("binary_data_size")
        if size is not None:
            blobs[out["name"]] = r.body[off:off + size]
            off += size
    return r.status, js, blobs


@pytest.mark.parametrize("dt,enum,npdt,json_ok", DATATYPES, ids=[d[0] for d in DATATYPES])
def test_identity_binary_every_datatype(all_types_server, dt, enum, npdt, json_ok):
    _, raw = sample(dt, npdt)
    status, js, blobs = infer_binary(all_types_server, model_name(dt), [("INPUT0", dt, [2, 3], raw)])
    assert status == 200, js
    out = js["outputs"][0]
    assert out["name"] == "OUTPUT0"
    assert out["datatype"] == dt
    assert out["shape"] == [2, 3]
    assert blobs["OUTPUT0"] == raw


@pytest.mark.parametrize("dt,enum,npdt,json_ok", [d for d in DATATYPES if d[3]], ids=[d[0] for d in DATATYPES if d[3]])
def test_identity_json_every_datatype(all_types_server, dt, enum, npdt, json_ok):
    values, _ = sample(dt, npdt)
    body = {"inputs": [{"name": "INPUT0", "datatype": dt, "shape": [1, len(values)], "data": values}]}
    r = all_types_server.post(f"/v2/models/{model_name(dt)}/infer", body=body)
    assert r.status == 200, r.body
    js = r.json()
    assert js["model_name"] == model_name(dt)
    out = js["outputs"][0]
    assert out["name"] == "OUTPUT0" and out["datatype"] == dt and out["shape"] == [1, len(values)]
    if dt in ("FP32", "FP64"):
        assert np.allclose(out["data"], values)
    else:
        assert out["data"] == values


def test_identity_empty_tensor(all_types_server):
    status, js, blobs = infer_binary(all_types_server, "identity_int32", [("INPUT0", "INT32", [1, 0], b"")])
    assert status == 200, js
    assert js["outputs"][0]["shape"] == [1, 0]
    assert blobs.get("OUTPUT0", b"") == b""


def test_identity_pairs_by_name_then_position(repo, server_factory):
    # OUTPUT<k> copies INPUT<k> regardless of order; other names pair by position.
    write_model(repo, "by_name", """
backend: "imageops"
max_batch_size: 0
input [ { name: "INPUT1" data_type: TYPE_INT32 dims: [ 2 ] },
        { name: "INPUT0" data_type: TYPE_INT32 dims: [ 2 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 2 ] },
         { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 2 ] } ]
parameters { key: "operation" value: { string_value: "identity" } }
""")
    write_model(repo, "by_position", """
backend: "imageops"
max_batch_size: 0
input [ { name: "a" data_type: TYPE_FP32 dims: [ 2 ] }, { name: "b" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] }, { name: "y" data_type: TYPE_STRING dims: [ 1 ] } ]
parameters { key: "operation" value: { string_value: "identity" } }
""")
    s = server_factory(repo)
    r = s.post("/v2/models/by_name/infer", body={"inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [2], "data": [1, 2]},
        {"name": "INPUT1", "datatype": "INT32", "shape": [2], "data": [3, 4]}]})
    assert r.status == 200, r.body
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outs == {"OUTPUT0": [1, 2], "OUTPUT1": [3, 4]}

    r = s.post("/v2/models/by_position/infer", body={"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [2], "data": [0.5, 1.5]},
        {"name": "b", "datatype": "BYTES", "shape": [1], "data": ["text"]}]})
    assert r.status == 200, r.body
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outs == {"x": [0.5, 1.5], "y": ["text"]}


def add_sub_config(name, dtype, dims="[ -1 ]", max_batch_size=8):
    return f"""
name: "{name}"
backend: "imageops"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT0" data_type: {dtype} dims: {dims} }}, {{ name: "INPUT1" data_type: {dtype} dims: {dims} }} ]
output [ {{ name: "OUTPUT0" data_type: {dtype} dims: {dims} }}, {{ name: "OUTPUT1" data_type: {dtype} dims: {dims} }} ]
parameters {{ key: "operation" value: {{ string_value: "add_sub" }} }}
"""


def test_add_sub_int32_and_fp32(repo, server_factory):
    write_model(repo, "add_sub_i32", add_sub_config("add_sub_i32", "TYPE_INT32"))
    write_model(repo, "add_sub_f32", add_sub_config("add_sub_f32", "TYPE_FP32", dims="[ 4 ]"))
    s = server_factory(repo)

    a = np.array([[1, -5, 2147483647, -2147483648], [0, 10, 20, 30]], dtype=np.int32)
    b = np.array([[2, 5, 1, 1], [-1, -10, 5, 100]], dtype=np.int32)
    r = s.post("/v2/models/add_sub_i32/infer", body={"inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [2, 4], "data": a.tolist()},
        {"name": "INPUT1", "datatype": "INT32", "shape": [2, 4], "data": b.tolist()}]})
    assert r.status == 200, r.body
    outs = {o["name"]: o for o in r.json()["outputs"]}
    with np.errstate(over="ignore"):
        assert outs["OUTPUT0"]["data"] == (a + b).flatten().tolist()  # wraps like int32
        assert outs["OUTPUT1"]["data"] == (a - b).flatten().tolist()
    assert outs["OUTPUT0"]["shape"] == [2, 4] and outs["OUTPUT0"]["datatype"] == "INT32"

    x = np.array([[0.5, -1.25, 3.0, 1e6]], dtype=np.float32)
    y = np.array([[0.25, 0.25, -3.0, 1.0]], dtype=np.float32)
    status, js, blobs = infer_binary(s, "add_sub_f32", [("INPUT0", "FP32", [1, 4], x.tobytes()),
                                                         ("INPUT1", "FP32", [1, 4], y.tobytes())],
                                     outputs=["OUTPUT0", "OUTPUT1"])
    assert status == 200, js
    assert np.array_equal(np.frombuffer(blobs["OUTPUT0"], dtype="<f4"), (x + y).flatten())
    assert np.array_equal(np.frombuffer(blobs["OUTPUT1"], dtype="<f4"), (x - y).flatten())


def test_add_sub_only_requested_output(repo, server_factory):
    write_model(repo, "add_sub", add_sub_config("add_sub", "TYPE_INT32"))
    s = server_factory(repo)
    r = s.post("/v2/models/add_sub/infer", body={
        "inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 2], "data": [5, 6]},
                   {"name": "INPUT1", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]}],
        "outputs": [{"name": "OUTPUT1"}]})
    assert r.status == 200, r.body
    outs = r.json()["outputs"]
    assert [o["name"] for o in outs] == ["OUTPUT1"]
    assert outs[0]["data"] == [4, 4]


def test_add_sub_shape_mismatch_is_invalid_arg(repo, server_factory):
    write_model(repo, "add_sub", add_sub_config("add_sub", "TYPE_FP32"))
    s = server_factory(repo)
    r = s.post("/v2/models/add_sub/infer", body={"inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
        {"name": "INPUT1", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]})
    assert r.status == 400, r.body
    err = r.json()["error"]
    assert "INPUT0" in err and "INPUT1" in err and "shape" in err


def test_add_sub_auto_complete(repo, server_factory):
    # No inputs or outputs: the backend fills INPUT0/INPUT1/OUTPUT0/OUTPUT1 FP32 [-1].
    write_model(repo, "add_sub_auto", """
backend: "imageops"
parameters { key: "operation" value: { string_value: "add_sub" } }
""")
    s = server_factory(repo)
    r = s.get("/v2/models/add_sub_auto/config")
    assert r.status == 200, r.body
    cfg = r.json()
    assert [t["name"] for t in cfg["input"]] == ["INPUT0", "INPUT1"]
    assert [t["name"] for t in cfg["output"]] == ["OUTPUT0", "OUTPUT1"]
    assert all(t["data_type"] == "TYPE_FP32" and t["dims"] == [-1] for t in cfg["input"] + cfg["output"])
    assert cfg["max_batch_size"] == 0
    r = s.post("/v2/models/add_sub_auto/infer", body={"inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [3], "data": [1, 2, 3]},
        {"name": "INPUT1", "datatype": "FP32", "shape": [3], "data": [1, 1, 1]}]})
    assert r.status == 200, r.body
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outs == {"OUTPUT0": [2, 3, 4], "OUTPUT1": [0, 1, 2]}


def timed_config(name, fixed_us, per_item_us=None, extra=""):
    per_item = f'parameters {{ key: "per_item_us" value: {{ string_value: "{per_item_us}" }} }}' \
        if per_item_us is not None else ""
    return identity_config(name=name, dtype="TYPE_FP32", extra=f"""
parameters {{ key: "fixed_us" value: {{ string_value: "{fixed_us}" }} }}
{per_item}
{extra}
""").replace('string_value: "identity"', 'string_value: "timed"')


def test_timed_takes_at_least_its_duration(repo, server_factory):
    write_model(repo, "timed", timed_config("timed", 200000, 50000))
    s = server_factory(repo)
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}]}
    t0 = time.monotonic()
    r = s.post("/v2/models/timed/infer", body=body)
    elapsed = time.monotonic() - t0
    assert r.status == 200, r.body
    assert r.json()["outputs"][0]["data"] == [1, 2, 3, 4, 5, 6]
    assert elapsed >= 0.2 + 2 * 0.05  # fixed_us + per_item_us x batch size 2


def repository_index(server):
    r = server.post("/v2/repository/index", body={})
    assert r.status == 200, r.body
    return {e["name"]: e for e in r.json()}


def assert_unavailable(server, model, *fragments):
    entry = repository_index(server)[model]
    assert entry.get("state") == "UNAVAILABLE", entry
    for f in fragments:
        assert f in entry.get("reason", ""), entry


@pytest.mark.parametrize("operation,fragments", [
    ("blur_everything", ["blur_everything", "identity", "add_sub", "timed"]),
    (None, ["operation", "identity"]),
])
def test_bad_operation_makes_model_unavailable(repo, server_factory, operation, fragments):
    cfg = identity_config(name="bad")
    if operation is None:
        cfg = cfg.replace('parameters { key: "operation" value: { string_value: "identity" } }', "")
    else:
        cfg = cfg.replace('"identity"', f'"{operation}"')
    write_model(repo, "bad", cfg)
    write_model(repo, "good", identity_config(name="good"))
    s = server_factory(repo, "--exit-on-error=false", wait_ready=False)
    assert_unavailable(s, "bad", "bad", *fragments)
    assert repository_index(s)["good"]["state"] == "READY"


def test_bad_timed_parameter_names_it(repo, server_factory):
    write_model(repo, "slow", timed_config("slow", "abc"))
    s = server_factory(repo, "--exit-on-error=false", wait_ready=False)
    assert_unavailable(s, "slow", "fixed_us", "abc")


def test_missing_backend_makes_model_unavailable(repo, server_factory):
    write_model(repo, "ghost", identity_config(name="ghost").replace('"imageops"', '"nosuchbackend"'))
    write_model(repo, "good", identity_config(name="good"))
    s = server_factory(repo, "--exit-on-error=false", wait_ready=False)
    assert_unavailable(s, "ghost", "nosuchbackend")
    assert repository_index(s)["good"]["state"] == "READY"


def test_bad_model_fails_startup_with_exit_on_error(repo, server_factory):
    write_model(repo, "bad", identity_config(name="bad").replace('"identity"', '"nope"'))
    s = server_factory(repo, expect_fail=True)
    assert s.wait_exit() == 1
    assert "nope" in s.log()


ECHO_DIR = os.path.join(os.path.dirname(SERVER_BIN), "test-backends")


@pytest.mark.skipif(not os.path.exists(os.path.join(ECHO_DIR, "echo", "libimagen_echo.so")),
                    reason="libimagen_echo.so not built")
def test_backend_directory_loads_shared_object(repo, server_factory):
    write_model(repo, "echo_model", """
backend: "echo"
max_batch_size: 4
input [ { name: "IN" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_STRING dims: [ -1 ] } ]
""")
    s = server_factory(repo, f"--backend-directory={ECHO_DIR}")
    r = s.post("/v2/models/echo_model/infer", body={"inputs": [
        {"name": "IN", "datatype": "BYTES", "shape": [1, 2], "data": ["hello", "echo"]}]})
    assert r.status == 200, r.body
    out = r.json()["outputs"][0]
    assert out["name"] == "OUT" and out["data"] == ["hello", "echo"]


def test_external_backend_missing_without_directory(repo, server_factory):
    write_model(repo, "echo_model", """
backend: "echo"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
""")
    s = server_factory(repo, "--exit-on-error=false", wait_ready=False)
    assert_unavailable(s, "echo_model", "echo")
