"""gRPC helpers for the integration tests.

The Python stubs are generated AT TEST TIME from the project's own proto/
files with python3-grpc-tools (`python3 -m grpc_tools.protoc`) into a
temporary directory, once per test session, so the tests exercise exactly
the message shapes and field numbers the server was built from. Debian 12's
grpc_tools (1.14) output imports with Debian's python3-protobuf (4.21) as
is; if a future pairing does not, set
PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python before running pytest.
"""
import importlib
import os
import subprocess
import sys
import tempfile

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
MAX_MESSAGE = 2**31 - 1

_modules = None


def stubs():
    """Returns (grpc_service_pb2, grpc_service_pb2_grpc, model_config_pb2,
    health_pb2, health_pb2_grpc), generating them on first use."""
    global _modules
    if _modules is not None:
        return _modules
    out = tempfile.mkdtemp(prefix="imagen-grpc-stubs-")
    protos = ["grpc_service.proto", "model_config.proto", "health.proto"]
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={out}",
           f"--grpc_python_out={out}"] + [os.path.join(PROTO_DIR, p) for p in protos]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"grpc_tools.protoc failed: {r.stderr}")
    sys.path.insert(0, out)
    names = ["grpc_service_pb2", "grpc_service_pb2_grpc", "model_config_pb2", "health_pb2", "health_pb2_grpc"]
    _modules = tuple(importlib.import_module(n) for n in names)
    return _modules


class Client:
    """A channel to one server with both services' stubs."""

    def __init__(self, port):
        pb, pb_grpc, mc, hpb, hpb_grpc = stubs()
        self.pb, self.mc, self.hpb = pb, mc, hpb
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{port}",
            options=[("grpc.max_send_message_length", MAX_MESSAGE),
                     ("grpc.max_receive_message_length", MAX_MESSAGE)])
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.health = hpb_grpc.HealthStub(self.channel)

    def close(self):
        self.channel.close()

    def unary(self, method, request, response_cls, timeout=30):
        """Calls any method by name (including ones the stub may lack)."""
        fn = self.channel.unary_unary(f"/inference.GRPCInferenceService/{method}",
                                      request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=response_cls.FromString)
        return fn(request, timeout=timeout)


def infer_request(pb, model, inputs, outputs=(), raw=True, **fields):
    """Builds a ModelInferRequest. inputs: [(name, datatype, shape, raw_bytes
    or a {contents_field: values} dict)]."""
    req = pb.ModelInferRequest(model_name=model, **fields)
    for name, dtype, shape, data in inputs:
        t = req.inputs.add(name=name, datatype=dtype, shape=list(shape))
        if isinstance(data, dict):
            for field, values in data.items():
                getattr(t.contents, field).extend(values)
        else:
            req.raw_input_contents.append(data)
    for o in outputs:
        req.outputs.add(name=o)
    return req


def assert_rpc_error(excinfo, code, *fragments):
    e = excinfo.value
    assert e.code() == code, (e.code(), e.details())
    for f in fragments:
        assert f in e.details(), (f, e.details())
