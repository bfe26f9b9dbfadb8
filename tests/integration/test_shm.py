"""System shared memory (spec §1.13, §2.2) over HTTP and gRPC: the registry
endpoints, tensors read from and written to client regions, bounds checks,
and unregistering while a request is in flight."""
import concurrent.futures
import json
import mmap
import os
import struct
import time
import uuid

import grpc
import numpy as np
import pytest

from conftest import identity_config, write_model
from grpcutil import Client, assert_rpc_error
from httputil import add_sub_config, assert_error, infer_body, timed_config

DISABLED = "shared memory is disabled"


class Region:
    """A POSIX shm object made by the test (/dev/shm/<name>), mapped here."""

    def __init__(self, size):
        self.name = f"imagen_test_{uuid.uuid4().hex[:12]}"
        self.key = "/" + self.name
        self.path = "/dev/shm/" + self.name
        self.f = open(self.path, "w+b")
        self.f.truncate(size)
        self.map = mmap.mmap(self.f.fileno(), size)
        self.size = size

    def write(self, offset, data):
        self.map[offset:offset + len(data)] = data

    def read(self, offset, n):
        return bytes(self.map[offset:offset + n])

    def close(self):
        self.map.close()
        self.f.close()
        os.unlink(self.path)


@pytest.fixture
def regions():
    made = []

    def make(size):
        r = Region(size)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def shm_server(repo, server_factory):
    write_model(repo, "identity", identity_config())
    write_model(repo, "add_sub", add_sub_config())
    write_model(repo, "timed", timed_config(fixed_us=1000000))
    write_model(repo, "image", identity_config(name="image", dtype="TYPE_UINT8", dims="[ -1, -1, 3 ]",
                                               max_batch_size=0))
    return server_factory(repo, "--allow-client-shm=true")


def register(server, name, key, byte_size, offset=0):
    return server.post(f"/v2/systemsharedmemory/region/{name}/register",
                       body={"key": key, "offset": offset, "byte_size": byte_size})


def shm_params(region, byte_size, offset=0):
    p = {"shared_memory_region": region, "shared_memory_byte_size": byte_size}
    if offset:
        p["shared_memory_offset"] = offset
    return p


# ---------------------------------------------------------------- disabled

def test_disabled_by_default(repo, server_factory, regions):
    write_model(repo, "identity", identity_config())
    s = server_factory(repo)
    r = regions(64)
    assert s.get("/v2/systemsharedmemory/status").json() == []
    assert_error(s.get("/v2/systemsharedmemory/region/x/status"), 404, "Unable to find")
    assert_error(register(s, "x", r.key, 64), 501, DISABLED)
    assert_error(s.post("/v2/systemsharedmemory/unregister"), 501, DISABLED)
    body = infer_body([{"name": "INPUT0", "datatype": "INT32", "shape": [1, 4],
                        "parameters": shm_params("x", 16)}])
    assert_error(s.post("/v2/models/identity/infer", body=body), 501, DISABLED)
    assert "system_shared_memory" not in s.get("/v2").json()["extensions"]
    c = Client(s.grpc_port)
    pb = c.pb
    assert len(c.stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest()).regions) == 0
    with pytest.raises(grpc.RpcError) as e:
        c.stub.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(name="x", key=r.key, byte_size=64))
    assert_rpc_error(e, grpc.StatusCode.UNIMPLEMENTED, DISABLED)
    with pytest.raises(grpc.RpcError) as e:
        c.stub.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest())
    assert_rpc_error(e, grpc.StatusCode.UNIMPLEMENTED, DISABLED)
    c.close()


# ---------------------------------------------------------------- HTTP registry

def test_http_register_status_unregister(shm_server, regions):
    s = shm_server
    r = regions(8192)
    assert register(s, "a", r.key, 4096).status == 200
    assert register(s, "b", r.key, 100, offset=5000).status == 200
    st = s.get("/v2/systemsharedmemory/status").json()
    assert st == [{"name": "a", "key": r.key, "offset": 0, "byte_size": 4096},
                  {"name": "b", "key": r.key, "offset": 5000, "byte_size": 100}]
    assert s.get("/v2/systemsharedmemory/region/b/status").json() == [st[1]]
    assert "system_shared_memory" in s.get("/v2").json()["extensions"]
    assert_error(register(s, "a", r.key, 16), 400, "shared memory region 'a' already in manager")
    assert s.post("/v2/systemsharedmemory/region/a/unregister").status == 200
    assert_error(s.get("/v2/systemsharedmemory/region/a/status"), 404, "Unable to find system shared memory region")
    assert s.post("/v2/systemsharedmemory/unregister").status == 200
    assert s.get("/v2/systemsharedmemory/status").json() == []
    # CUDA shared memory stays unsupported
    assert s.get("/v2/cudasharedmemory/status").json() == []
    assert s.post("/v2/cudasharedmemory/region/c/register",
                  body={"raw_handle": {"b64": ""}, "device_id": 0, "byte_size": 4}).status == 501


def test_http_register_errors(shm_server, regions):
    s = shm_server
    r = regions(4096)
    assert_error(register(s, "x", r.key, 4097), 400, "exceeds the size")
    assert_error(register(s, "x", r.key, 1, offset=4096), 400, "exceeds the size")
    assert_error(register(s, "x", "/imagen_no_such_object", 16), 500, "Unable to open shared memory region")
    assert_error(s.post("/v2/systemsharedmemory/region/x/register", body={"key": r.key}), 400, "byte_size")
    assert_error(s.post("/v2/systemsharedmemory/region/x/register", body={"byte_size": 4}), 400, "key")
    assert_error(register(s, "x", r.key, -1), 400)
    # 2^64-1 does not even parse as a JSON integer here; either way a 400
    raw = b'{"key":"%s","offset":18446744073709551615,"byte_size":16}' % r.key.encode()
    assert_error(s.post("/v2/systemsharedmemory/region/x/register", body=raw), 400)
    assert s.get("/v2/systemsharedmemory/status").json() == []


# ---------------------------------------------------------------- HTTP inference

def test_http_inputs_and_outputs_through_regions(shm_server, regions):
    s = shm_server
    r = regions(4096)
    a = np.arange(4, dtype=np.int32)
    b = np.array([10, 20, 30, 40], dtype=np.int32)
    r.write(0, a.tobytes())
    r.write(16, b.tobytes())
    assert register(s, "io", r.key, 4096).status == 200
    body = infer_body(
        [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 4], "parameters": shm_params("io", 16)},
         {"name": "INPUT1", "datatype": "INT32", "shape": [1, 4], "parameters": shm_params("io", 16, 16)}],
        [{"name": "OUTPUT0", "parameters": shm_params("io", 16, 64)},
         {"name": "OUTPUT1", "parameters": shm_params("io", 16, 128)}])
    resp = s.post("/v2/models/add_sub/infer", body=body)
    assert resp.status == 200, resp.body
    out = resp.json()["outputs"]
    assert sorted(o["name"] for o in out) == ["OUTPUT0", "OUTPUT1"]
    for o in out:
        assert set(o) == {"name", "datatype", "shape"}
        assert o["shape"] == [1, 4]
    assert np.frombuffer(r.read(64, 16), np.int32).tolist() == (a + b).tolist()
    assert np.frombuffer(r.read(128, 16), np.int32).tolist() == (a - b).tolist()
    # mixed: shm input, JSON output
    body = infer_body([{"name": "INPUT0", "datatype": "INT32", "shape": [1, 4], "parameters": shm_params("io", 16)}])
    resp = s.post("/v2/models/identity/infer", body=body)
    assert resp.json()["outputs"][0]["data"] == a.tolist()


def test_http_infer_errors(shm_server, regions):
    s = shm_server
    r = regions(4096)
    assert register(s, "e", r.key, 64).status == 200

    def inp(params, **extra):
        d = {"name": "INPUT0", "datatype": "INT32", "shape": [1, 4], "parameters": params}
        d.update(extra)
        return d

    def post(inputs, outputs=None):
        return s.post("/v2/models/identity/infer", body=infer_body(inputs, outputs))

    assert_error(post([inp(shm_params("nope", 16))]), 404, "Unable to find shared memory region: 'nope'")
    assert_error(post([inp(shm_params("e", 16, 56))]), 400, "Invalid offset + byte size")
    assert_error(post([inp(shm_params("e", 65))]), 400, "Invalid offset + byte size")
    # offset 2^64-1 (and a size that would wrap around with it)
    raw = (b'{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,4],"parameters":'
           b'{"shared_memory_region":"e","shared_memory_byte_size":16,"shared_memory_offset":18446744073709551615}}]}')
    assert_error(s.post("/v2/models/identity/infer", body=raw), 400, "Invalid offset + byte size")
    raw = (b'{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,4],"parameters":'
           b'{"shared_memory_region":"e","shared_memory_byte_size":18446744073709551615,"shared_memory_offset":1}}]}')
    assert_error(s.post("/v2/models/identity/infer", body=raw), 400, "Invalid offset + byte size")
    assert_error(post([inp(shm_params("e", 16), data=[1, 2, 3, 4])]), 400, "Input must set only one of")
    assert_error(post([inp({"shared_memory_region": "e"})]), 400, "shared_memory_byte_size")
    assert_error(post([inp(shm_params("e", 12))]), 400)  # byte size does not match the shape
    ok_in = [inp(shm_params("e", 16))]
    assert_error(post(ok_in, [{"name": "OUTPUT0", "parameters": dict(shm_params("e", 16, 16), binary_data=True)}]),
                 400, "binary_data")
    assert_error(post(ok_in, [{"name": "OUTPUT0", "parameters": dict(shm_params("e", 16, 16), classification=1)}]),
                 400, "classification")
    assert_error(post(ok_in, [{"name": "OUTPUT0", "parameters": shm_params("e", 8, 16)}]), 400,
                 "should be at least 16 bytes")
    assert post(ok_in).status == 200


def test_http_unregister_while_in_flight(shm_server, regions):
    s = shm_server
    r = regions(4096)
    data = np.arange(16, dtype=np.int32)
    r.write(0, data.tobytes())
    assert register(s, "busy", r.key, 4096).status == 200
    body = infer_body([{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "parameters": shm_params("busy", 64)}],
                      [{"name": "OUTPUT0", "parameters": shm_params("busy", 64, 1024)}])
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(s.post, "/v2/models/timed/infer", body=body)
        time.sleep(0.3)
        assert s.post("/v2/systemsharedmemory/region/busy/unregister").status == 200
        assert s.get("/v2/systemsharedmemory/status").json() == []
        resp = fut.result(timeout=30)
    assert resp.status == 200, resp.body
    assert np.frombuffer(r.read(1024, 64), np.int32).tolist() == data.tolist()
    # the name is gone for new requests; the server is still fine
    assert_error(s.post("/v2/models/timed/infer", body=body), 404, "Unable to find shared memory region")
    assert s.get("/v2/health/live").status == 200


def test_http_large_image_without_socket_bytes(shm_server, regions):
    s = shm_server
    h, w = 3000, 4000  # 12 megapixels, 36 MB
    n = h * w * 3
    r = regions(2 * n)
    img = np.random.default_rng(1).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    r.write(0, img.tobytes())
    assert register(s, "img", r.key, 2 * n).status == 200
    body = infer_body([{"name": "INPUT0", "datatype": "UINT8", "shape": [h, w, 3], "parameters": shm_params("img", n)}],
                      [{"name": "OUTPUT0", "parameters": shm_params("img", n, n)}])
    assert len(body) < 1024  # the pixels never travel through the socket
    resp = s.post("/v2/models/image/infer", body=body, timeout=120)
    assert resp.status == 200, resp.body
    assert len(resp.body) < 1024
    assert resp.json()["outputs"][0]["shape"] == [h, w, 3]
    assert r.read(n, n) == img.tobytes()


# ---------------------------------------------------------------- gRPC

def shm_input(pb, req, name, dtype, shape, region, size, offset=0):
    t = req.inputs.add(name=name, datatype=dtype, shape=list(shape))
    t.parameters["shared_memory_region"].string_param = region
    t.parameters["shared_memory_byte_size"].int64_param = size
    if offset:
        t.parameters["shared_memory_offset"].int64_param = offset
    return t


def shm_output(req, name, region, size, offset=0):
    o = req.outputs.add(name=name)
    o.parameters["shared_memory_region"].string_param = region
    o.parameters["shared_memory_byte_size"].int64_param = size
    if offset:
        o.parameters["shared_memory_offset"].int64_param = offset
    return o


def test_grpc_registry_and_inference(shm_server, regions):
    s = shm_server
    c = Client(s.grpc_port)
    pb = c.pb
    r = regions(4096)
    a = np.arange(4, dtype=np.int32)
    b = np.array([5, 5, 5, 5], dtype=np.int32)
    r.write(0, a.tobytes())
    r.write(16, b.tobytes())
    c.stub.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(name="g", key=r.key, byte_size=4096))
    st = c.stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest())
    assert list(st.regions) == ["g"]
    assert (st.regions["g"].key, st.regions["g"].offset, st.regions["g"].byte_size) == (r.key, 0, 4096)
    # shared with HTTP
    assert s.get("/v2/systemsharedmemory/region/g/status").json()[0]["key"] == r.key
    with pytest.raises(grpc.RpcError) as e:
        c.stub.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(name="g", key=r.key, byte_size=16))
    assert_rpc_error(e, grpc.StatusCode.ALREADY_EXISTS, "already in manager")
    with pytest.raises(grpc.RpcError) as e:
        c.stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest(name="zz"))
    assert_rpc_error(e, grpc.StatusCode.NOT_FOUND, "Unable to find system shared memory region")
    md = c.stub.ServerMetadata(pb.ServerMetadataRequest())
    assert "system_shared_memory" in md.extensions

    req = pb.ModelInferRequest(model_name="add_sub")
    shm_input(pb, req, "INPUT0", "INT32", [1, 4], "g", 16)
    t = req.inputs.add(name="INPUT1", datatype="INT32", shape=[1, 4])  # raw, mixed with shm
    req.raw_input_contents.append(b.tobytes())
    del t
    shm_output(req, "OUTPUT0", "g", 16, 256)
    req.outputs.add(name="OUTPUT1")
    resp = c.stub.ModelInfer(req)
    names = [o.name for o in resp.outputs]
    assert sorted(names) == ["OUTPUT0", "OUTPUT1"]
    assert len(resp.raw_output_contents) == 2
    raw = dict(zip(names, resp.raw_output_contents))
    assert raw["OUTPUT0"] == b""
    assert np.frombuffer(raw["OUTPUT1"], np.int32).tolist() == (a - b).tolist()
    assert np.frombuffer(r.read(256, 16), np.int32).tolist() == (a + b).tolist()

    c.stub.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest(name="g"))
    assert len(c.stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest()).regions) == 0
    c.close()


def test_grpc_errors(shm_server, regions):
    s = shm_server
    c = Client(s.grpc_port)
    pb = c.pb
    r = regions(4096)
    with pytest.raises(grpc.RpcError) as e:
        c.stub.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(name="x", key=r.key, byte_size=5000))
    assert_rpc_error(e, grpc.StatusCode.INVALID_ARGUMENT, "exceeds the size")
    with pytest.raises(grpc.RpcError) as e:
        c.stub.SystemSharedMemoryRegister(
            pb.SystemSharedMemoryRegisterRequest(name="x", key=r.key, offset=2**64 - 1, byte_size=2))
    assert_rpc_error(e, grpc.StatusCode.INVALID_ARGUMENT, "out of range")
    c.stub.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(name="x", key=r.key, byte_size=64))

    def infer(region, size, offset=0, use_uint=False):
        req = pb.ModelInferRequest(model_name="identity")
        t = shm_input(pb, req, "INPUT0", "INT32", [1, 4], region, size, 0 if use_uint else offset)
        if use_uint:
            t.parameters["shared_memory_offset"].uint64_param = offset
        return c.stub.ModelInfer(req)

    for args, code, frag in [(("nope", 16), grpc.StatusCode.NOT_FOUND, "Unable to find shared memory region"),
                             (("x", 16, 56), grpc.StatusCode.INVALID_ARGUMENT, "Invalid offset + byte size"),
                             (("x", 16, 2**64 - 1, True), grpc.StatusCode.INVALID_ARGUMENT, "Invalid offset"),
                             (("x", 16, -1), grpc.StatusCode.INVALID_ARGUMENT, "non-negative")]:
        with pytest.raises(grpc.RpcError) as e:
            infer(*args)
        assert_rpc_error(e, code, frag)
    assert len(infer("x", 16).outputs) == 1
    c.close()


def test_grpc_unregister_while_in_flight(shm_server, regions):
    s = shm_server
    c = Client(s.grpc_port)
    pb = c.pb
    r = regions(4096)
    data = np.arange(8, dtype=np.int32)
    r.write(0, data.tobytes())
    c.stub.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(name="busy", key=r.key, byte_size=4096))
    req = pb.ModelInferRequest(model_name="timed")
    shm_input(pb, req, "INPUT0", "INT32", [1, 8], "busy", 32)
    shm_output(req, "OUTPUT0", "busy", 32, 2048)
    fut = c.stub.ModelInfer.future(req, timeout=30)
    time.sleep(0.3)
    c.stub.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest())
    resp = fut.result()
    assert resp.raw_output_contents[0] == b""
    assert np.frombuffer(r.read(2048, 32), np.int32).tolist() == data.tolist()
    assert c.stub.ServerLive(pb.ServerLiveRequest()).live
    c.close()
