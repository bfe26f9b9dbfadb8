"""The gRPC frontend (spec §2) over real gRPC against a real imagen-server:
every served rpc, error statuses, ModelInfer with raw and typed contents,
batching, concurrency, cancellation and deadlines, and a clean exit on
SIGTERM with calls in flight. Stubs come from proto/ at test time (grpcutil)."""
import concurrent.futures
import json
import signal
import struct
import subprocess
import time

import grpc
import numpy as np
import pytest

from conftest import SERVER_BIN, SLOW, identity_config, write_model
from grpcutil import Client, assert_rpc_error, infer_request
from httputil import add_sub_config, bytes_tensor, parse_bytes_tensor, timed_config


@pytest.fixture
def served(repo, server_factory):
    """A server with identity (INT32, batching) and add_sub models, and a client."""
    write_model(repo, "identity", identity_config())
    write_model(repo, "add_sub", add_sub_config())
    s = server_factory(repo)
    c = Client(s.grpc_port)
    yield s, c
    c.close()


def test_health_and_server_metadata(served):
    s, c = served
    pb = c.pb
    assert c.stub.ServerLive(pb.ServerLiveRequest()).live is True
    assert c.stub.ServerReady(pb.ServerReadyRequest()).ready is True
    h = c.health.Check(c.hpb.HealthCheckRequest(service=""))
    assert h.status == c.hpb.HealthCheckResponse.SERVING
    md = c.stub.ServerMetadata(pb.ServerMetadataRequest())
    assert md.name == "triton"
    assert md.version == "2.73.0dev"
    assert "model_repository" in md.extensions and "statistics" in md.extensions


def test_model_ready_metadata_config(served):
    s, c = served
    pb = c.pb
    assert c.stub.ModelReady(pb.ModelReadyRequest(name="identity")).ready is True
    assert c.stub.ModelReady(pb.ModelReadyRequest(name="identity", version="1")).ready is True
    assert c.stub.ModelReady(pb.ModelReadyRequest(name="identity", version="7")).ready is False
    md = c.stub.ModelMetadata(pb.ModelMetadataRequest(name="add_sub"))
    assert md.name == "add_sub" and list(md.versions) == ["1"] and md.platform == "imageops"
    assert [(t.name, t.datatype, list(t.shape)) for t in md.inputs] == [
        ("INPUT0", "INT32", [-1, 4]), ("INPUT1", "INT32", [-1, 4])]
    assert [t.name for t in md.outputs] == ["OUTPUT0", "OUTPUT1"]
    cfg = c.stub.ModelConfig(pb.ModelConfigRequest(name="identity")).config
    assert cfg.name == "identity" and cfg.max_batch_size == 8 and cfg.backend == "imageops"
    assert cfg.input[0].name == "INPUT0" and cfg.input[0].data_type == c.mc.TYPE_INT32
    assert list(cfg.input[0].dims) == [-1]
    assert cfg.parameters["operation"].string_value == "identity"
    # The same config over HTTP, field by field where both carry it.
    http_cfg = s.get("/v2/models/identity/config").json()
    assert http_cfg["max_batch_size"] == cfg.max_batch_size
    assert http_cfg["instance_group"][0]["count"] == cfg.instance_group[0].count


@pytest.mark.parametrize("rpc,req", [
    ("ModelReady", "ModelReadyRequest"), ("ModelMetadata", "ModelMetadataRequest"),
    ("ModelConfig", "ModelConfigRequest")])
def test_unknown_model_is_invalid_argument(served, rpc, req):
    s, c = served
    with pytest.raises(grpc.RpcError) as ei:
        getattr(c.stub, rpc)(getattr(c.pb, req)(name="nope"))
    assert_rpc_error(ei, grpc.StatusCode.INVALID_ARGUMENT, "Request for unknown model: 'nope' is not found")


def test_bad_version_string(served):
    s, c = served
    with pytest.raises(grpc.RpcError) as ei:
        c.stub.ModelMetadata(c.pb.ModelMetadataRequest(name="identity", version="x1"))
    assert_rpc_error(ei, grpc.StatusCode.INVALID_ARGUMENT, "version should be an integral value")


def test_infer_raw_identity(served):
    s, c = served
    data = np.arange(16, dtype=np.int32).reshape(1, 16)
    req = infer_request(c.pb, "identity", [("INPUT0", "INT32", data.shape, data.tobytes())], id="req-7")
    r = c.stub.ModelInfer(req)
    assert r.model_name == "identity" and r.model_version == "1" and r.id == "req-7"
    assert len(r.outputs) == 1 and len(r.raw_output_contents) == 1
    o = r.outputs[0]
    assert (o.name, o.datatype, list(o.shape)) == ("OUTPUT0", "INT32", [1, 16])
    assert not o.HasField("contents")
    np.testing.assert_array_equal(np.frombuffer(r.raw_output_contents[0], dtype=np.int32).reshape(1, 16), data)


def test_infer_large_message(served):
    """Above gRPC's 4 MiB default: the server allows INT32_MAX both ways."""
    s, c = served
    data = np.arange(3 * 1024 * 1024, dtype=np.int32).reshape(1, -1)  # 12 MiB
    r = c.stub.ModelInfer(infer_request(c.pb, "identity", [("INPUT0", "INT32", data.shape, data.tobytes())]))
    assert r.raw_output_contents[0] == data.tobytes()


TYPED = [
    ("TYPE_INT32", "INT32", "int_contents", [1, -2, 3, 2**31 - 1], "<i4"),
    ("TYPE_INT8", "INT8", "int_contents", [1, -2, 127, -128], "<i1"),
    ("TYPE_INT16", "INT16", "int_contents", [1, -2, 300, -300], "<i2"),
    ("TYPE_INT64", "INT64", "int64_contents", [1, -2, 2**40, -(2**62)], "<i8"),
    ("TYPE_UINT8", "UINT8", "uint_contents", [0, 1, 200, 255], "<u1"),
    ("TYPE_UINT16", "UINT16", "uint_contents", [0, 1, 60000, 7], "<u2"),
    ("TYPE_UINT32", "UINT32", "uint_contents", [0, 1, 2**32 - 1, 7], "<u4"),
    ("TYPE_UINT64", "UINT64", "uint64_contents", [0, 1, 2**64 - 1, 7], "<u8"),
    ("TYPE_FP32", "FP32", "fp32_contents", [0.5, -1.25, 3.0, 1e10], "<f4"),
    ("TYPE_FP64", "FP64", "fp64_contents", [0.1, -1.25, 3.0, 1e300], "<f8"),
    ("TYPE_BOOL", "BOOL", "bool_contents", [True, False, True, True], "|b1"),
]


@pytest.mark.parametrize("cfg_type,dtype,field,values,np_type", TYPED)
def test_infer_typed_contents(repo, server_factory, cfg_type, dtype, field, values, np_type):
    write_model(repo, "ident", identity_config(name="ident", dtype=cfg_type))
    s = server_factory(repo)
    c = Client(s.grpc_port)
    r = c.stub.ModelInfer(infer_request(c.pb, "ident", [("INPUT0", dtype, [1, 4], {field: values})]))
    assert r.outputs[0].datatype == dtype and list(r.outputs[0].shape) == [1, 4]
    got = np.frombuffer(r.raw_output_contents[0], dtype=np.dtype(np_type))
    np.testing.assert_array_equal(got, np.array(values, dtype=np.dtype(np_type)))
    c.close()


def test_infer_bytes_contents_and_raw(repo, server_factory):
    write_model(repo, "strs", identity_config(name="strs", dtype="TYPE_STRING"))
    s = server_factory(repo)
    c = Client(s.grpc_port)
    items = [b"hello", b"", b"\x00\xffbinary"]
    r = c.stub.ModelInfer(infer_request(c.pb, "strs", [("INPUT0", "BYTES", [1, 3], {"bytes_contents": items})]))
    assert r.outputs[0].datatype == "BYTES"
    assert parse_bytes_tensor(r.raw_output_contents[0]) == items
    r = c.stub.ModelInfer(infer_request(c.pb, "strs", [("INPUT0", "BYTES", [1, 3], bytes_tensor(items))]))
    assert parse_bytes_tensor(r.raw_output_contents[0]) == items
    c.close()


def test_infer_two_inputs_and_output_order(served):
    s, c = served
    a = np.array([[1, 2, 3, 4]], dtype=np.int32)
    b = np.array([[10, 20, 30, 40]], dtype=np.int32)
    req = infer_request(c.pb, "add_sub", [("INPUT0", "INT32", [1, 4], a.tobytes()),
                                          ("INPUT1", "INT32", [1, 4], b.tobytes())], outputs=["OUTPUT1", "OUTPUT0"])
    r = c.stub.ModelInfer(req)
    assert len(r.outputs) == 2 == len(r.raw_output_contents)
    got = {o.name: np.frombuffer(r.raw_output_contents[i], dtype=np.int32) for i, o in enumerate(r.outputs)}
    np.testing.assert_array_equal(got["OUTPUT0"], (a + b).ravel())
    np.testing.assert_array_equal(got["OUTPUT1"], (a - b).ravel())
    # Only the requested output comes back.
    r = c.stub.ModelInfer(infer_request(c.pb, "add_sub", [("INPUT0", "INT32", [1, 4], a.tobytes()),
                                                          ("INPUT1", "INT32", [1, 4], b.tobytes())],
                                        outputs=["OUTPUT1"]))
    assert [o.name for o in r.outputs] == ["OUTPUT1"] and len(r.raw_output_contents) == 1


def test_infer_parameters(served):
    s, c = served
    pb = c.pb
    data = np.arange(4, dtype=np.int32).reshape(1, 4).tobytes()
    req = infer_request(pb, "identity", [("INPUT0", "INT32", [1, 4], data)])
    req.parameters["priority"].int64_param = 1
    req.parameters["timeout"].int64_param = 10_000_000
    req.parameters["custom"].string_param = "x"
    req.parameters["flag"].bool_param = True
    req.parameters["ratio"].double_param = 0.5
    assert c.stub.ModelInfer(req).raw_output_contents[0] == data
    bad = [("triton_foo", "bool_param", True, "reserved for Triton usage"),
           ("custom_u64", "uint64_param", 5, "invalid type"),
           ("priority", "string_param", "high", "'priority'"),
           ("timeout", "double_param", 1.5, "'timeout'"),
           ("sequence_start", "int64_param", 1, "'sequence_start'")]
    for key, field, value, fragment in bad:
        req = infer_request(pb, "identity", [("INPUT0", "INT32", [1, 4], data)])
        setattr(req.parameters[key], field, value)
        with pytest.raises(grpc.RpcError) as ei:
            c.stub.ModelInfer(req)
        assert_rpc_error(ei, grpc.StatusCode.INVALID_ARGUMENT, fragment)


def test_infer_errors(served):
    s, c = served
    pb = c.pb
    data = np.arange(4, dtype=np.int32).tobytes()
    cases = [
        # unknown model
        (infer_request(pb, "nope", [("INPUT0", "INT32", [1, 4], data)]),
         grpc.StatusCode.INVALID_ARGUMENT, "Request for unknown model: 'nope' is not found"),
        # contents while raw_input_contents is used
        (infer_request(pb, "add_sub", [("INPUT0", "INT32", [1, 4], data),
                                       ("INPUT1", "INT32", [1, 4], {"int_contents": [1, 2, 3, 4]})]),
         grpc.StatusCode.INVALID_ARGUMENT, "contents field must not be specified"),
        # fewer raw entries than inputs
        (pb.ModelInferRequest(model_name="identity",
                              inputs=[pb.ModelInferRequest.InferInputTensor(name="INPUT0", datatype="INT32",
                                                                            shape=[1, 4])]),
         grpc.StatusCode.INVALID_ARGUMENT, "unable to find data for input tensor 'INPUT0'"),
        # more raw entries than inputs
        (infer_request(pb, "identity", [("INPUT0", "INT32", [1, 4], data)], raw_input_contents=[data]),
         grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents"),
        # wrong byte size
        (infer_request(pb, "identity", [("INPUT0", "INT32", [1, 4], data[:12])]),
         grpc.StatusCode.INVALID_ARGUMENT, "INPUT0"),
        # typed element count not matching the shape
        (infer_request(pb, "identity", [("INPUT0", "INT32", [1, 4], {"int_contents": [1, 2]})]),
         grpc.StatusCode.INVALID_ARGUMENT, "unexpected number of elements"),
        # wrong datatype name
        (infer_request(pb, "identity", [("INPUT0", "INT33", [1, 4], data)]),
         grpc.StatusCode.INVALID_ARGUMENT, "INT33"),
        # huge declared shape
        (infer_request(pb, "identity", [("INPUT0", "INT32", [2**40, 2**40], data)]),
         grpc.StatusCode.INVALID_ARGUMENT, "exceeds the limit"),
        # unknown output
        (infer_request(pb, "identity", [("INPUT0", "INT32", [1, 4], data)], outputs=["NOPE"]),
         grpc.StatusCode.INVALID_ARGUMENT, "NOPE"),
        # shared memory is off
        (infer_request(pb, "identity", [("INPUT0", "INT32", [1, 4], data)]),
         None, None),
    ]
    shm = cases[-1][0]
    shm.inputs[0].parameters["shared_memory_region"].string_param = "r"
    cases[-1] = (shm, grpc.StatusCode.UNIMPLEMENTED, "shared memory is disabled")
    for req, code, fragment in cases:
        with pytest.raises(grpc.RpcError) as ei:
            c.stub.ModelInfer(req)
        assert_rpc_error(ei, code, fragment)
    # The server is still fine.
    assert c.stub.ServerReady(pb.ServerReadyRequest()).ready is True


def test_garbage_message_is_invalid_argument(served):
    s, c = served
    fn = c.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                               request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as ei:
        fn(b"\xff\xff\xff\xff\x0f\x0a")
    assert_rpc_error(ei, grpc.StatusCode.INVALID_ARGUMENT, "failed to parse")


def test_unimplemented_rpcs(served):
    s, c = served
    pb = c.pb
    # SystemSharedMemory* are served (tests/integration/test_shm.py).
    for method, req, resp in [("CudaSharedMemoryStatus", pb.CudaSharedMemoryStatusRequest(),
                               pb.CudaSharedMemoryStatusResponse),
                              ("TraceSetting", pb.TraceSettingRequest(), pb.TraceSettingResponse)]:
        with pytest.raises(grpc.RpcError) as ei:
            c.unary(method, req, resp)
        assert_rpc_error(ei, grpc.StatusCode.UNIMPLEMENTED, method)
    # ModelStreamInfer is served (tests/integration/test_grpc_stream.py).
    fn = c.channel.unary_unary("/inference.GRPCInferenceService/NoSuchRpc",
                               request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as ei:
        fn(b"", timeout=10)
    assert_rpc_error(ei, grpc.StatusCode.UNIMPLEMENTED, "NoSuchRpc")


def test_statistics(served):
    s, c = served
    pb = c.pb
    data = np.arange(4, dtype=np.int32).reshape(1, 4).tobytes()
    for _ in range(3):
        c.stub.ModelInfer(infer_request(pb, "identity", [("INPUT0", "INT32", [1, 4], data)]))
    st = c.stub.ModelStatistics(pb.ModelStatisticsRequest(name="identity"))
    assert len(st.model_stats) == 1
    m = st.model_stats[0]
    assert m.name == "identity" and m.version == "1"
    assert m.inference_count == 3 and m.inference_stats.success.count == 3
    assert m.inference_stats.queue.count == 3 and m.last_inference > 0
    assert sum(b.compute_infer.count for b in m.batch_stats) == m.execution_count
    every = c.stub.ModelStatistics(pb.ModelStatisticsRequest())
    assert sorted(x.name for x in every.model_stats) == ["add_sub", "identity"]
    http = s.get("/v2/models/identity/stats").json()["model_stats"][0]
    assert http["inference_count"] == m.inference_count
    with pytest.raises(grpc.RpcError) as ei:
        c.stub.ModelStatistics(pb.ModelStatisticsRequest(name="nope"))
    assert_rpc_error(ei, grpc.StatusCode.INVALID_ARGUMENT, "nope")


def test_repository_explicit_mode(repo, server_factory):
    write_model(repo, "identity", identity_config())
    write_model(repo, "other", identity_config(name="other"))
    s = server_factory(repo, "--model-control-mode=explicit", "--load-model=identity")
    c = Client(s.grpc_port)
    pb = c.pb
    idx = c.stub.RepositoryIndex(pb.RepositoryIndexRequest())
    rows = {m.name: m for m in idx.models}
    assert rows["identity"].state == "READY" and rows["identity"].version == "1"
    assert rows["other"].state == ""
    ready = c.stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True))
    assert [m.name for m in ready.models] == ["identity"]
    c.stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="other"))
    assert c.stub.ModelReady(pb.ModelReadyRequest(name="other")).ready is True
    req = pb.RepositoryModelUnloadRequest(model_name="other")
    req.parameters["unload_dependents"].bool_param = False
    c.stub.RepositoryModelUnload(req)
    assert c.stub.ModelReady(pb.ModelReadyRequest(name="other")).ready is False
    # A config override through the load parameters.
    req = pb.RepositoryModelLoadRequest(model_name="other")
    req.parameters["config"].string_param = (
        '{"name":"other","backend":"imageops","max_batch_size":4,'
        '"input":[{"name":"INPUT0","data_type":"TYPE_INT32","dims":[-1]}],'
        '"output":[{"name":"OUTPUT0","data_type":"TYPE_INT32","dims":[-1]}],'
        '"parameters":{"operation":{"string_value":"identity"}}}')
    c.stub.RepositoryModelLoad(req)
    assert c.stub.ModelConfig(pb.ModelConfigRequest(name="other")).config.max_batch_size == 4
    with pytest.raises(grpc.RpcError) as ei:
        c.stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="missing"))
    assert ei.value.code() != grpc.StatusCode.OK
    with pytest.raises(grpc.RpcError) as ei:
        c.stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(repository_name="r", model_name="other"))
    assert_rpc_error(ei, grpc.StatusCode.UNIMPLEMENTED, "repository_name")
    c.close()


def test_repository_control_refused_outside_explicit_mode(served):
    s, c = served
    with pytest.raises(grpc.RpcError) as ei:
        c.stub.RepositoryModelUnload(c.pb.RepositoryModelUnloadRequest(model_name="identity"))
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE


def test_log_settings(served):
    s, c = served
    pb = c.pb
    r = c.stub.LogSettings(pb.LogSettingsRequest())
    assert r.settings["log_info"].bool_param is True
    assert r.settings["log_format"].string_param == "default"
    req = pb.LogSettingsRequest()
    req.settings["log_verbose_level"].uint32_param = 2
    req.settings["log_format"].string_param = "ISO8601"
    r = c.stub.LogSettings(req)
    assert r.settings["log_verbose_level"].uint32_param == 2
    assert r.settings["log_format"].string_param == "ISO8601"
    req = pb.LogSettingsRequest()
    req.settings["log_verbose_level"].uint32_param = 0
    req.settings["log_format"].string_param = "default"
    c.stub.LogSettings(req)
    bad = pb.LogSettingsRequest()
    bad.settings["log_file"].string_param = "/tmp/x"
    with pytest.raises(grpc.RpcError) as ei:
        c.stub.LogSettings(bad)
    assert_rpc_error(ei, grpc.StatusCode.UNIMPLEMENTED, "log file")


def test_concurrent_calls_are_batched(repo, server_factory):
    extra = f"dynamic_batching {{ max_queue_delay_microseconds: {int(200000 * SLOW)} }}"
    write_model(repo, "identity", identity_config(extra=extra))
    s = server_factory(repo)
    c = Client(s.grpc_port)
    pb = c.pb
    n = 64
    futures = []
    for i in range(n):
        data = np.full((1, 8), i, dtype=np.int32)
        req = infer_request(pb, "identity", [("INPUT0", "INT32", [1, 8], data.tobytes())], id=str(i))
        futures.append(c.stub.ModelInfer.future(req, timeout=60 * SLOW))
    for i, f in enumerate(futures):
        r = f.result()
        assert r.id == str(i)
        np.testing.assert_array_equal(np.frombuffer(r.raw_output_contents[0], dtype=np.int32), np.full(8, i))
    m = c.stub.ModelStatistics(pb.ModelStatisticsRequest(name="identity")).model_stats[0]
    assert m.inference_count == n
    assert m.execution_count < n  # several requests per batch
    assert max(b.batch_size for b in m.batch_stats) > 1
    c.close()


def test_many_parallel_clients(served):
    s, c = served
    pb = c.pb

    def one(i):
        cl = Client(s.grpc_port)
        try:
            a = np.full((1, 4), i, dtype=np.int32)
            r = cl.stub.ModelInfer(infer_request(pb, "add_sub", [("INPUT0", "INT32", [1, 4], a.tobytes()),
                                                                 ("INPUT1", "INT32", [1, 4], a.tobytes())]),
                                   timeout=60 * SLOW)
            out = {o.name: np.frombuffer(r.raw_output_contents[k], dtype=np.int32) for k, o in enumerate(r.outputs)}
            return bool((out["OUTPUT0"] == 2 * i).all() and (out["OUTPUT1"] == 0).all())
        finally:
            cl.close()

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        assert all(ex.map(one, range(48)))


def _timed(repo, name, fixed_us):
    write_model(repo, name, timed_config(name=name, fixed_us=fixed_us, max_batch_size=1))


def test_deadline_expired_while_queued(repo, server_factory):
    _timed(repo, "slow", int(400000 * SLOW))
    s = server_factory(repo)
    c = Client(s.grpc_port)
    pb = c.pb
    data = np.zeros((1, 4), dtype=np.int32).tobytes()
    req = infer_request(pb, "slow", [("INPUT0", "INT32", [1, 4], data)])
    first = c.stub.ModelInfer.future(req, timeout=30 * SLOW)
    time.sleep(0.1 * SLOW)
    with pytest.raises(grpc.RpcError) as ei:
        c.stub.ModelInfer(req, timeout=0.1 * SLOW)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert first.result().raw_output_contents[0] == data
    time.sleep(0.6 * SLOW)
    m = c.stub.ModelStatistics(pb.ModelStatisticsRequest(name="slow")).model_stats[0]
    # The expired request was dropped from the queue, never executed.
    assert m.inference_stats.success.count == 1
    assert m.execution_count == 1
    c.close()


def test_client_cancel_while_queued(repo, server_factory):
    _timed(repo, "slow", int(400000 * SLOW))
    s = server_factory(repo)
    c = Client(s.grpc_port)
    pb = c.pb
    data = np.zeros((1, 4), dtype=np.int32).tobytes()
    req = infer_request(pb, "slow", [("INPUT0", "INT32", [1, 4], data)])
    first = c.stub.ModelInfer.future(req, timeout=30 * SLOW)
    time.sleep(0.1 * SLOW)
    second = c.stub.ModelInfer.future(req, timeout=30 * SLOW)
    time.sleep(0.05 * SLOW)
    assert second.cancel()
    assert first.result().raw_output_contents[0] == data
    time.sleep(0.6 * SLOW)
    m = c.stub.ModelStatistics(pb.ModelStatisticsRequest(name="slow")).model_stats[0]
    assert m.inference_stats.success.count == 1
    assert c.stub.ServerLive(pb.ServerLiveRequest()).live is True
    c.close()


def test_sigterm_drains_calls_in_flight(repo, server_factory):
    _timed(repo, "slow", int(300000 * SLOW))
    write_model(repo, "slow", timed_config(name="slow", fixed_us=int(300000 * SLOW), max_batch_size=1,
                                           extra="instance_group [ { count: 2 kind: KIND_CPU } ]"))
    s = server_factory(repo)
    c = Client(s.grpc_port)
    pb = c.pb
    data = np.arange(4, dtype=np.int32).reshape(1, 4).tobytes()
    futures = [c.stub.ModelInfer.future(infer_request(pb, "slow", [("INPUT0", "INT32", [1, 4], data)]),
                                        timeout=30 * SLOW) for _ in range(4)]
    time.sleep(0.1 * SLOW)
    s.proc.send_signal(signal.SIGTERM)
    for f in futures:
        assert f.result().raw_output_contents[0] == data
    assert s.wait_exit() == 0, s.log()
    c.close()


def test_allow_grpc_false(repo, server_factory):
    write_model(repo, "identity", identity_config())
    s = server_factory(repo, "--allow-grpc=false")
    c = Client(s.grpc_port)
    with pytest.raises(grpc.RpcError) as ei:
        c.stub.ServerLive(c.pb.ServerLiveRequest(), timeout=2)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    c.close()


def test_grpc_port_in_use_fails_startup(repo, server_factory):
    write_model(repo, "identity", identity_config())
    a = server_factory(repo)
    b = server_factory(repo, f"--grpc-port={a.grpc_port}", expect_fail=True)
    assert b.wait_exit() != 0
    assert "GRPC" in b.log() or "gRPC" in b.log()


def test_bytes_helper_roundtrip():
    assert parse_bytes_tensor(bytes_tensor([b"a", b"bc"])) == [b"a", b"bc"]
    assert struct.calcsize("<I") == 4


def _many_io_config(name, n):
    ins = ", ".join(f'{{ name: "INPUT{k}" data_type: TYPE_UINT8 dims: [ -1 ] }}' for k in range(n))
    outs = ", ".join(f'{{ name: "OUTPUT{k}" data_type: TYPE_UINT8 dims: [ -1 ] }}' for k in range(n))
    return f"""
name: "{name}"
backend: "imageops"
max_batch_size: 0
input [ {ins} ]
output [ {outs} ]
parameters {{ key: "operation" value: {{ string_value: "identity" }} }}
"""


def test_infer_many_raw_inputs(repo, server_factory):
    """Each raw_input_contents entry is used in place in the received
    message: many entries of different sizes (one empty, some above 4 MiB in
    total) come back byte for byte, each paired with its own input."""
    n = 32
    write_model(repo, "many", _many_io_config("many", n))
    s = server_factory(repo)
    c = Client(s.grpc_port)
    rng = np.random.default_rng(7)
    blobs = [rng.integers(0, 256, size=k * 37 + (300000 if k % 5 == 0 else 0), dtype=np.uint8).tobytes()
             for k in range(n)]
    blobs[3] = b""
    inputs = [(f"INPUT{k}", "UINT8", [len(b)], b) for k, b in enumerate(blobs)]
    r = c.stub.ModelInfer(infer_request(c.pb, "many", inputs, id="many-1"))
    assert r.id == "many-1" and len(r.outputs) == n
    got = {o.name: r.raw_output_contents[i] for i, o in enumerate(r.outputs)}
    for k, b in enumerate(blobs):
        assert got[f"OUTPUT{k}"] == b, k
    c.close()


def test_infer_raw_contents_between_other_fields(repo, server_factory):
    """Protobuf allows fields in any order (and a message may be sent as
    concatenated parts): raw_input_contents before, between and after the
    other fields, the message above 4 MiB."""
    write_model(repo, "add_sub", add_sub_config(dims="[ -1 ]", max_batch_size=0))
    s = server_factory(repo)
    c = Client(s.grpc_port)
    pb = c.pb
    a = np.arange(600000, dtype=np.int32).reshape(1, -1)
    b = np.full((1, 600000), 3, dtype=np.int32)
    first = pb.ModelInferRequest()
    first.raw_input_contents.append(a.tobytes())
    middle = pb.ModelInferRequest(model_name="add_sub", id="mixed")
    middle.inputs.add(name="INPUT0", datatype="INT32", shape=[600000])
    last = pb.ModelInferRequest()
    last.raw_input_contents.append(b.tobytes())
    tail = pb.ModelInferRequest()
    tail.inputs.add(name="INPUT1", datatype="INT32", shape=[600000])
    tail.outputs.add(name="OUTPUT0")
    wire = first.SerializeToString() + middle.SerializeToString() + last.SerializeToString() + \
        tail.SerializeToString()
    assert len(wire) > 4 * 1024 * 1024
    fn = c.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                               request_serializer=lambda x: x,
                               response_deserializer=pb.ModelInferResponse.FromString)
    r = fn(wire, timeout=30 * SLOW)
    assert r.id == "mixed" and [o.name for o in r.outputs] == ["OUTPUT0"]
    np.testing.assert_array_equal(np.frombuffer(r.raw_output_contents[0], dtype=np.int32), (a + b).ravel())
    c.close()


def test_infer_malformed_wire_is_invalid_argument(served):
    """A truncated raw_input_contents field or one with the wrong wire type
    is rejected before anything is used."""
    s, c = served
    fn = c.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                               request_serializer=lambda x: x,
                               response_deserializer=c.pb.ModelInferResponse.FromString)
    for wire in (b"\x0a\x08identity\x3a\x10abc", b"\x0a\x08identity\x38\x01"):
        with pytest.raises(grpc.RpcError) as ei:
            fn(wire, timeout=30 * SLOW)
        assert_rpc_error(ei, grpc.StatusCode.INVALID_ARGUMENT, "failed to parse the request message")


def test_grpc_infer_thread_count(repo, server_factory):
    """One completion-queue thread still serves parallel calls (it never
    runs a model); values outside 1..64 are refused at startup."""
    write_model(repo, "identity", identity_config())
    s = server_factory(repo, "--grpc-infer-thread-count=1")
    c = Client(s.grpc_port)
    data = np.arange(8, dtype=np.int32).reshape(1, 8)

    def one(i):
        r = c.stub.ModelInfer(infer_request(c.pb, "identity", [("INPUT0", "INT32", data.shape, data.tobytes())]),
                              timeout=30 * SLOW)
        return r.raw_output_contents[0] == data.tobytes()

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        assert all(ex.map(one, range(32)))
    c.close()
    for bad in ("0", "65", "x"):
        p = subprocess.run([SERVER_BIN, f"--model-repository={repo}", f"--grpc-infer-thread-count={bad}"],
                           capture_output=True, timeout=30 * SLOW)
        assert p.returncode == 2 and b"--grpc-infer-thread-count" in p.stderr, (bad, p.returncode, p.stderr)


# ---- classification (spec §1.11, §2.3) ----------------------------------------------

CLASSIFY_CONFIG = ('name: "classify"\nbackend: "imageops"\nmax_batch_size: 0\n'
                   'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
                   'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "labels.txt" } ]\n'
                   'parameters { key: "operation" value: { string_value: "identity" } }\n')


@pytest.fixture
def cls_served(repo, server_factory):
    """classify (FP32 [4], no batching, labels), identity (INT32, batching)
    and BYTES / FP16 identities; the server serves HTTP too."""
    write_model(repo, "classify", CLASSIFY_CONFIG, files={"labels.txt": "cat\ndog\nbird\nfish\n"})
    write_model(repo, "identity", identity_config())
    write_model(repo, "id_bytes", identity_config(name="id_bytes", dtype="TYPE_STRING"))
    write_model(repo, "id_fp16", identity_config(name="id_fp16", dtype="TYPE_FP16"))
    s = server_factory(repo)
    c = Client(s.grpc_port)
    yield s, c
    c.close()


def _classify_request(pb, model, dtype, values, k, kind="int64_param"):
    req = infer_request(pb, model, [("INPUT0", dtype, values.shape, values.tobytes())])
    o = req.outputs.add(name="OUTPUT0")
    setattr(o.parameters["classification"], kind, k)
    return req


def _http_classify(s, model, dtype, values, k):
    body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": dtype, "shape": list(values.shape),
                                   "data": values.flatten().tolist()}],
                       "outputs": [{"name": "OUTPUT0", "parameters": {"classification": k}}]})
    r = s.post(f"/v2/models/{model}/infer", body=body.encode())
    assert r.status == 200, r.body
    return r.json()["outputs"][0]


def _grpc_classify(c, model, dtype, values, k):
    r = c.stub.ModelInfer(_classify_request(c.pb, model, dtype, values, k))
    assert len(r.outputs) == 1 and len(r.raw_output_contents) == 1
    o = r.outputs[0]
    return o, [b.decode() for b in parse_bytes_tensor(r.raw_output_contents[0])]


def test_classification_with_labels(cls_served):
    s, c = cls_served
    values = np.array([0.1, 3.3, 0.5, 2.0], dtype=np.float32)
    o, strings = _grpc_classify(c, "classify", "FP32", values, 2)
    assert (o.name, o.datatype, list(o.shape)) == ("OUTPUT0", "BYTES", [2])
    assert not o.HasField("contents")
    assert strings == ["3.300000:1:dog", "2.000000:3:fish"]


def test_classification_without_labels_batched(cls_served):
    s, c = cls_served
    values = np.array([[1, 9, 5], [7, 2, 8]], dtype=np.int32)
    o, strings = _grpc_classify(c, "identity", "INT32", values, 5)
    assert (o.datatype, list(o.shape)) == ("BYTES", [2, 3])
    assert strings == ["9:1", "5:2", "1:0", "8:2", "7:0", "2:1"]
    o, strings = _grpc_classify(c, "identity", "INT32", values, 1)
    assert list(o.shape) == [2, 1] and strings == ["9:1", "8:2"]


@pytest.mark.parametrize("k,expect", [
    (1, ["3.300000:1:dog"]),
    (4, ["3.300000:1:dog", "2.000000:3:fish", "0.500000:2:bird", "0.100000:0:cat"]),
    (1000, ["3.300000:1:dog", "2.000000:3:fish", "0.500000:2:bird", "0.100000:0:cat"]),
])
def test_classification_class_count_bounds(cls_served, k, expect):
    s, c = cls_served
    values = np.array([0.1, 3.3, 0.5, 2.0], dtype=np.float32)
    o, strings = _grpc_classify(c, "classify", "FP32", values, k)
    assert list(o.shape) == [len(expect)] and strings == expect


def test_classification_zero_means_plain_output(cls_served):
    s, c = cls_served
    values = np.array([0.1, 3.3, 0.5, 2.0], dtype=np.float32)
    r = c.stub.ModelInfer(_classify_request(c.pb, "classify", "FP32", values, 0))
    assert (r.outputs[0].datatype, list(r.outputs[0].shape)) == ("FP32", [4])
    np.testing.assert_array_equal(np.frombuffer(r.raw_output_contents[0], dtype=np.float32), values)


def test_classification_errors(cls_served):
    s, c = cls_served
    pb = c.pb
    f32 = np.array([0.1, 3.3, 0.5, 2.0], dtype=np.float32)
    cases = [
        (_classify_request(pb, "classify", "FP32", f32, -1), "non-negative int64_param"),
        (_classify_request(pb, "classify", "FP32", f32, 2, kind="uint64_param"), "int64_param"),
        (_classify_request(pb, "classify", "FP32", f32, "2", kind="string_param"), "int64_param"),
        (_classify_request(pb, "id_fp16", "FP16", np.array([[1, 2]], dtype=np.float16), 1),
         "unsupported type 'FP16'"),
    ]
    bytes_req = infer_request(pb, "id_bytes", [("INPUT0", "BYTES", [1, 2], bytes_tensor([b"ab", b"c"]))])
    bytes_req.outputs.add(name="OUTPUT0").parameters["classification"].int64_param = 1
    cases.append((bytes_req, "unsupported type 'BYTES'"))
    for req, fragment in cases:
        with pytest.raises(grpc.RpcError) as ei:
            c.stub.ModelInfer(req)
        assert_rpc_error(ei, grpc.StatusCode.INVALID_ARGUMENT, fragment)
    assert c.stub.ServerReady(pb.ServerReadyRequest()).ready is True


def test_classification_matches_http(cls_served):
    s, c = cls_served
    cases = [
        ("classify", "FP32", np.array([0.1, 3.3, 0.5, 2.0], dtype=np.float32), 3),
        ("classify", "FP32", np.array([-1.5, 2.0, 2.0, 0.0], dtype=np.float32), 4),
        ("identity", "INT32", np.array([[1, 9, 5, -4], [7, 2, 8, 8]], dtype=np.int32), 3),
        ("identity", "INT32", np.array([[3]], dtype=np.int32), 2),
    ]
    for model, dtype, values, k in cases:
        o, strings = _grpc_classify(c, model, dtype, values, k)
        h = _http_classify(s, model, dtype, values, k)
        assert (o.datatype, list(o.shape), strings) == (h["datatype"], h["shape"], h["data"]), (model, k)


def test_classification_stream(cls_served):
    s, c = cls_served
    values = np.array([0.1, 3.3, 0.5, 2.0], dtype=np.float32)
    (resp,) = list(c.stub.ModelStreamInfer(iter([_classify_request(c.pb, "classify", "FP32", values, 1)])))
    assert resp.error_message == ""
    r = resp.infer_response
    assert (r.outputs[0].datatype, list(r.outputs[0].shape)) == ("BYTES", [1])
    assert parse_bytes_tensor(r.raw_output_contents[0]) == [b"3.300000:1:dog"]
