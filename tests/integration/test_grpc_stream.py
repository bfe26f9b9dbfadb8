"""ModelStreamInfer (spec §2.3) over real gRPC against a real imagen-server:
many requests on one stream (ids and triton_final_response echoed),
in-band errors with the stream staying open, `triton_grpc_error` ending the
stream with a status, shared-memory inputs/outputs, client cancellation of a
stream to a slow model, many concurrent streams, and SIGTERM with a stream
open. Responses follow completion order, so tests match them by id."""
import concurrent.futures
import queue
import signal
import threading
import time

import grpc
import numpy as np
import pytest

from conftest import SLOW, identity_config, write_model
from grpcutil import Client, infer_request
from httputil import add_sub_config, timed_config
from test_shm import Region, shm_input, shm_output


@pytest.fixture
def served(repo, server_factory):
    write_model(repo, "identity", identity_config())
    write_model(repo, "add_sub", add_sub_config())
    s = server_factory(repo, "--allow-client-shm=true")
    c = Client(s.grpc_port)
    yield s, c
    c.close()


def ident_req(pb, i, model="identity", n=4):
    data = np.arange(i, i + n, dtype=np.int32).reshape(1, n)
    return infer_request(pb, model, [("INPUT0", "INT32", [1, n], data.tobytes())], id=f"r{i}"), data


def add_sub_req(pb, i):
    a = np.full((1, 4), i, dtype=np.int32)
    b = np.arange(4, dtype=np.int32).reshape(1, 4)
    req = infer_request(pb, "add_sub", [("INPUT0", "INT32", [1, 4], a.tobytes()),
                                        ("INPUT1", "INT32", [1, 4], b.tobytes())], id=f"r{i}")
    return req, (a + b, a - b)


def by_id(responses):
    out = {}
    for r in responses:
        rid = r.infer_response.id
        assert rid not in out, f"two responses for {rid}"
        out[rid] = r
    return out


def check_final(r):
    p = r.infer_response.parameters["triton_final_response"]
    assert p.WhichOneof("parameter_choice") == "bool_param"
    assert p.bool_param is True


def raw_by_name(ir):
    return {o.name: ir.raw_output_contents[k] for k, o in enumerate(ir.outputs)}


class Feeder:
    """A request iterator the test feeds by hand; the stream stays open
    until close() (half-close) is called."""

    _END = object()

    def __init__(self):
        self.q = queue.Queue()

    def put(self, req):
        self.q.put(req)

    def close(self):
        self.q.put(self._END)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.q.get()
        if item is self._END:
            raise StopIteration
        return item


def test_many_requests_on_one_stream(served):
    s, c = served
    pb = c.pb
    reqs, expect = [], {}
    for i in range(60):
        if i % 3 == 2:
            req, (add, sub) = add_sub_req(pb, i)
            expect[f"r{i}"] = ("add_sub", {"OUTPUT0": add, "OUTPUT1": sub})
        else:
            req, data = ident_req(pb, i)
            expect[f"r{i}"] = ("identity", {"OUTPUT0": data})
        reqs.append(req)
    got = by_id(c.stub.ModelStreamInfer(iter(reqs), timeout=60 * SLOW))
    assert sorted(got) == sorted(expect)
    for rid, (model, outs) in expect.items():
        r = got[rid]
        assert r.error_message == ""
        ir = r.infer_response
        assert (ir.model_name, ir.model_version) == (model, "1")
        check_final(r)
        raw = raw_by_name(ir)
        assert sorted(raw) == sorted(outs)
        for name, arr in outs.items():
            assert raw[name] == arr.tobytes(), (rid, name)


def test_empty_stream_ends_ok(served):
    s, c = served
    assert list(c.stub.ModelStreamInfer(iter([]), timeout=30 * SLOW)) == []


def test_in_band_errors_keep_the_stream_open(served):
    s, c = served
    pb = c.pb
    good1, d1 = ident_req(pb, 1)
    unknown = infer_request(pb, "no_such_model", [("INPUT0", "INT32", [1, 4], b"\0" * 16)], id="bad-model")
    bad_input = infer_request(pb, "identity", [("INPUT0", "FP32", [1, 4], b"\0" * 16)], id="bad-input")
    bad_param = infer_request(pb, "identity", [("INPUT0", "INT32", [1, 4], b"\0" * 16)], id="bad-param")
    bad_param.parameters["triton_x"].bool_param = True
    good2, d2 = ident_req(pb, 2)
    got = by_id(c.stub.ModelStreamInfer(iter([good1, unknown, bad_input, bad_param, good2]),
                                        timeout=30 * SLOW))
    assert sorted(got) == ["bad-input", "bad-model", "bad-param", "r1", "r2"]
    assert "unknown model" in got["bad-model"].error_message
    assert "no_such_model" in got["bad-model"].error_message
    assert "INPUT0" in got["bad-input"].error_message
    assert "reserved" in got["bad-param"].error_message
    for rid in ("bad-model", "bad-input", "bad-param"):
        assert len(got[rid].infer_response.outputs) == 0
    for rid, data in (("r1", d1), ("r2", d2)):
        assert got[rid].error_message == ""
        check_final(got[rid])
        assert got[rid].infer_response.raw_output_contents[0] == data.tobytes()
    # A message that is not a ModelInferRequest is an in-band error too.
    fn = c.channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                 request_serializer=lambda b: b,
                                 response_deserializer=pb.ModelStreamInferResponse.FromString)
    out = list(fn(iter([b"\xff\xff\xff\xff\x0f\x0a", good1.SerializeToString()]), timeout=30 * SLOW))
    assert len(out) == 2
    assert sum("failed to parse" in r.error_message for r in out) == 1
    assert sum(r.infer_response.id == "r1" and r.error_message == "" for r in out) == 1


@pytest.mark.parametrize("bad,code,fragment", [
    ("model", grpc.StatusCode.INVALID_ARGUMENT, "unknown model"),
    ("input", grpc.StatusCode.INVALID_ARGUMENT, "INPUT0"),
    ("version", grpc.StatusCode.NOT_FOUND, "identity"),
])
def test_triton_grpc_error_ends_the_stream(served, bad, code, fragment):
    s, c = served
    pb = c.pb
    good, _ = ident_req(pb, 1)
    if bad == "model":
        req = infer_request(pb, "no_such_model", [("INPUT0", "INT32", [1, 4], b"\0" * 16)], id="bad")
    elif bad == "input":
        req = infer_request(pb, "identity", [("INPUT0", "FP32", [1, 4], b"\0" * 16)], id="bad")
    else:
        req = infer_request(pb, "identity", [("INPUT0", "INT32", [1, 4], b"\0" * 16)], id="bad",
                            model_version="7")
    feeder = Feeder()
    feeder.put(good)
    call = c.stub.ModelStreamInfer(feeder, metadata=(("triton_grpc_error", "true"),), timeout=30 * SLOW)
    first = next(call)
    assert first.infer_response.id == "r1" and first.error_message == ""
    feeder.put(req)
    with pytest.raises(grpc.RpcError) as ei:
        next(call)
    assert ei.value.code() == code, (ei.value.code(), ei.value.details())
    assert fragment in ei.value.details()
    feeder.close()
    # Without the header the same error is in-band.
    out = list(c.stub.ModelStreamInfer(iter([req, good]), metadata=(("triton_grpc_error", "false"),),
                                       timeout=30 * SLOW))
    assert sorted(r.infer_response.id for r in out) == ["bad", "r1"]
    assert fragment in by_id(out)["bad"].error_message


def test_stream_with_shared_memory(served):
    s, c = served
    pb = c.pb
    r = Region(4096)
    try:
        c.stub.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(name="st", key=r.key,
                                                                               byte_size=4096))
        reqs = []
        for i in range(4):
            a = np.full(4, i, dtype=np.int32)
            r.write(64 * i, a.tobytes())
            req = pb.ModelInferRequest(model_name="identity", id=f"s{i}")
            shm_input(pb, req, "INPUT0", "INT32", [1, 4], "st", 16, 64 * i)
            shm_output(req, "OUTPUT0", "st", 16, 1024 + 64 * i)
            reqs.append(req)
        got = by_id(c.stub.ModelStreamInfer(iter(reqs), timeout=30 * SLOW))
        assert sorted(got) == [f"s{i}" for i in range(4)]
        for i in range(4):
            assert got[f"s{i}"].error_message == ""
            assert got[f"s{i}"].infer_response.raw_output_contents[0] == b""
            assert np.frombuffer(r.read(1024 + 64 * i, 16), np.int32).tolist() == [i] * 4
        # An output region too small fails after the model ran: in-band with
        # the model echoed, or the stream's status with triton_grpc_error.
        small = pb.ModelInferRequest(model_name="identity", id="small")
        shm_input(pb, small, "INPUT0", "INT32", [1, 4], "st", 16)
        shm_output(small, "OUTPUT0", "st", 8, 2048)
        got = by_id(c.stub.ModelStreamInfer(iter([small, reqs[0]]), timeout=30 * SLOW))
        assert "at least 16 bytes" in got["small"].error_message
        assert got["small"].infer_response.model_name == "identity"
        assert got["s0"].error_message == ""
        feeder = Feeder()
        feeder.put(small)
        call = c.stub.ModelStreamInfer(feeder, metadata=(("triton_grpc_error", "true"),), timeout=30 * SLOW)
        with pytest.raises(grpc.RpcError) as ei:
            next(call)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at least 16 bytes" in ei.value.details()
        feeder.close()
        c.stub.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest(name="st"))
    finally:
        r.close()


def test_many_concurrent_streams(served):
    s, c = served
    pb = c.pb

    def one(k):
        reqs, want = [], {}
        for i in range(20):
            req, data = ident_req(pb, 100 * k + i)
            reqs.append(req)
            want[f"r{100 * k + i}"] = data.tobytes()
        got = by_id(c.stub.ModelStreamInfer(iter(reqs), timeout=60 * SLOW))
        return sorted(got) == sorted(want) and all(
            got[rid].infer_response.raw_output_contents[0] == want[rid] for rid in want)

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        assert all(ex.map(one, range(24)))
    assert c.stub.ServerLive(pb.ServerLiveRequest()).live is True


def test_cancel_stream_to_slow_model(repo, server_factory):
    write_model(repo, "slow", timed_config(name="slow", fixed_us=int(400000 * SLOW), max_batch_size=1))
    s = server_factory(repo)
    c = Client(s.grpc_port)
    pb = c.pb
    data = np.zeros((1, 4), dtype=np.int32).tobytes()
    feeder = Feeder()
    for i in range(5):
        feeder.put(infer_request(pb, "slow", [("INPUT0", "INT32", [1, 4], data)], id=f"q{i}"))
    call = c.stub.ModelStreamInfer(feeder, timeout=60 * SLOW)
    time.sleep(0.2 * SLOW)
    call.cancel()
    with pytest.raises(grpc.RpcError) as ei:
        list(call)
    assert ei.value.code() == grpc.StatusCode.CANCELLED
    feeder.close()
    time.sleep(0.8 * SLOW)
    m = c.stub.ModelStatistics(pb.ModelStatisticsRequest(name="slow")).model_stats[0]
    # The one executing finished; the queued ones were dropped, not run.
    assert m.inference_stats.success.count <= 2, m
    assert m.execution_count <= 2, m
    assert c.stub.ServerLive(pb.ServerLiveRequest()).live is True
    # The server still streams afterwards.
    out = list(c.stub.ModelStreamInfer(iter([infer_request(pb, "slow", [("INPUT0", "INT32", [1, 4], data)],
                                                           id="after")]), timeout=30 * SLOW))
    assert [r.infer_response.id for r in out] == ["after"] and out[0].error_message == ""
    c.close()


def test_deadline_on_stream(repo, server_factory):
    write_model(repo, "slow", timed_config(name="slow", fixed_us=int(300000 * SLOW), max_batch_size=1))
    s = server_factory(repo)
    c = Client(s.grpc_port)
    pb = c.pb
    data = np.zeros((1, 4), dtype=np.int32).tobytes()
    reqs = [infer_request(pb, "slow", [("INPUT0", "INT32", [1, 4], data)], id=f"d{i}") for i in range(4)]
    with pytest.raises(grpc.RpcError) as ei:
        list(c.stub.ModelStreamInfer(iter(reqs), timeout=0.5 * SLOW))
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(0.8 * SLOW)
    m = c.stub.ModelStatistics(pb.ModelStatisticsRequest(name="slow")).model_stats[0]
    assert m.inference_stats.success.count <= 3, m
    assert c.stub.ServerLive(pb.ServerLiveRequest()).live is True
    c.close()


def _drain(call, into):
    try:
        for r in call:
            into.append(r)
    except grpc.RpcError as e:
        into.append(e)


def test_sigterm_with_stream_open(served):
    """An idle open stream does not hold up shutdown: it ends with
    UNAVAILABLE and the server exits 0 well before the drain timeout."""
    s, c = served
    pb = c.pb
    feeder = Feeder()
    req, data = ident_req(pb, 1)
    feeder.put(req)
    call = c.stub.ModelStreamInfer(feeder, timeout=60 * SLOW)
    first = next(call)
    assert first.infer_response.raw_output_contents[0] == data.tobytes()
    rest = []
    t = threading.Thread(target=_drain, args=(call, rest))
    t.start()
    t0 = time.time()
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait_exit(timeout=30) == 0, s.log()
    assert time.time() - t0 < 4 * SLOW
    t.join(timeout=30 * SLOW)
    feeder.close()
    assert not t.is_alive()
    assert len(rest) == 1 and isinstance(rest[0], grpc.RpcError), rest
    assert rest[0].code() == grpc.StatusCode.UNAVAILABLE, rest[0]


def test_sigterm_drains_stream_requests_in_flight(repo, server_factory):
    write_model(repo, "slow", timed_config(name="slow", fixed_us=int(300000 * SLOW), max_batch_size=1,
                                           extra="instance_group [ { count: 2 kind: KIND_CPU } ]"))
    s = server_factory(repo)
    c = Client(s.grpc_port)
    pb = c.pb
    data = np.arange(4, dtype=np.int32).reshape(1, 4).tobytes()
    feeder = Feeder()
    for i in range(2):
        feeder.put(infer_request(pb, "slow", [("INPUT0", "INT32", [1, 4], data)], id=f"t{i}"))
    call = c.stub.ModelStreamInfer(feeder, timeout=60 * SLOW)
    rest = []
    t = threading.Thread(target=_drain, args=(call, rest))
    t.start()
    time.sleep(0.1 * SLOW)
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait_exit(timeout=30) == 0, s.log()
    t.join(timeout=30 * SLOW)
    feeder.close()
    assert not t.is_alive()
    # Both requests were read before the signal: their responses arrive,
    # then the stream ends because the server exits.
    ok = [r for r in rest if not isinstance(r, grpc.RpcError)]
    assert sorted(r.infer_response.id for r in ok) == ["t0", "t1"], rest
    assert all(r.infer_response.raw_output_contents[0] == data for r in ok)
    assert isinstance(rest[-1], grpc.RpcError) and rest[-1].code() == grpc.StatusCode.UNAVAILABLE, rest
    c.close()


def test_large_requests_on_one_stream(served):
    """Messages above 4 MiB on a stream, with small ones between them: each
    request's raw inputs are used in place in its own received message."""
    s, c = served
    reqs, want = [], {}
    for i, n in enumerate([1_500_000, 4, 1_200_000, 16]):
        req, data = ident_req(c.pb, i * 10, n=n)
        reqs.append(req)
        want[f"r{i * 10}"] = data
    got = by_id(c.stub.ModelStreamInfer(iter(reqs), timeout=60 * SLOW))
    assert set(got) == set(want)
    for rid, data in want.items():
        r = got[rid]
        assert r.error_message == ""
        check_final(r)
        assert r.infer_response.raw_output_contents[0] == data.tobytes()
