"""POST .../infer over HTTP (spec §1.9-§1.11): JSON tensors per datatype,
the binary tensor extension both ways, raw binary requests, classification,
compression, keep-alive and pipelining, and the bad-input list. Every error
case checks the status, a message fragment naming the fault, and that the
server still serves afterwards."""
import gzip
import json
import socket
import struct
import threading
import time
import zlib

import pytest

from conftest import SLOW, write_model
from httputil import (add_sub_config, assert_error, assert_still_serving, binary_request, bytes_tensor,
                      connection, identity, infer_body, parse_bytes_tensor, read_responses,
                      split_binary_response, timed_config)


@pytest.fixture
def server(repo, server_factory):
    write_model(repo, "identity", identity())
    write_model(repo, "id_fp32", identity(name="id_fp32", dtype="TYPE_FP32"))
    write_model(repo, "id_bool", identity(name="id_bool", dtype="TYPE_BOOL"))
    write_model(repo, "id_bytes", identity(name="id_bytes", dtype="TYPE_STRING"))
    write_model(repo, "id_uint8", identity(name="id_uint8", dtype="TYPE_UINT8"))
    write_model(repo, "id_fp16", identity(name="id_fp16", dtype="TYPE_FP16"))
    write_model(repo, "id_nobatch", identity(name="id_nobatch", max_batch_size=0, dims="[ 4 ]"))
    write_model(repo, "add_sub", add_sub_config())
    write_model(repo, "add_sub_fp32", add_sub_config(name="add_sub_fp32", dtype="TYPE_FP32"))
    write_model(repo, "classify",
                'name: "classify"\nbackend: "imageops"\nmax_batch_size: 0\n'
                'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
                'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "labels.txt" } ]\n'
                'parameters { key: "operation" value: { string_value: "identity" } }\n',
                files={"labels.txt": "cat\ndog\nbird\nfish\n"})
    return server_factory(repo, "--http-max-input-size=1048576")


def infer(server, model, body, headers=None):
    return server.post(f"/v2/models/{model}/infer", body=body, headers=headers)


def inp(name="INPUT0", dtype="INT32", shape=(1, 3), data=None, **params):
    d = {"name": name, "datatype": dtype, "shape": list(shape)}
    if data is not None:
        d["data"] = data
    if params:
        d["parameters"] = params
    return d


# ---- JSON tensors -------------------------------------------------------------

def test_infer_int32_nested_and_flat(server):
    for data in ([[1, 2, 3]], [1, 2, 3]):
        r = infer(server, "identity", infer_body([inp(data=data)]))
        assert r.status == 200, r.body
        assert r.header("Content-Type") == "application/json"
        body = r.json()
        assert list(body.keys()) == ["model_name", "model_version", "outputs"]
        assert body["model_name"] == "identity" and body["model_version"] == "1"
        assert body["outputs"] == [{"name": "OUTPUT0", "datatype": "INT32", "shape": [1, 3], "data": [1, 2, 3]}]


def test_infer_fp32(server):
    r = infer(server, "id_fp32", infer_body([inp(dtype="FP32", shape=(1, 3), data=[0.5, -1.25, 3])]))
    assert r.status == 200, r.body
    assert r.json()["outputs"][0]["data"] == [0.5, -1.25, 3.0]


def test_infer_bool(server):
    r = infer(server, "id_bool", infer_body([inp(dtype="BOOL", shape=(1, 3), data=[True, False, True])]))
    assert r.status == 200, r.body
    assert r.json()["outputs"][0]["data"] == [True, False, True]


def test_infer_bytes(server):
    data = ["hello", "", "w\u00f6rld \"quoted\""]
    r = infer(server, "id_bytes", infer_body([inp(dtype="BYTES", shape=(1, 3), data=data)]))
    assert r.status == 200, r.body
    out = r.json()["outputs"][0]
    assert out["datatype"] == "BYTES"
    assert out["data"] == data


def test_infer_uint8(server):
    r = infer(server, "id_uint8", infer_body([inp(dtype="UINT8", shape=(1, 4), data=[0, 1, 254, 255])]))
    assert r.status == 200, r.body
    assert r.json()["outputs"][0]["data"] == [0, 1, 254, 255]


def test_infer_add_sub(server):
    body = infer_body([inp("INPUT0", shape=(1, 4), data=[1, 2, 3, 4]), inp("INPUT1", shape=(1, 4), data=[1, 1, 1, 1])])
    r = infer(server, "add_sub", body)
    assert r.status == 200, r.body
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outs == {"OUTPUT0": [2, 3, 4, 5], "OUTPUT1": [0, 1, 2, 3]}


def test_infer_add_sub_fp32_requested_output_only(server):
    body = infer_body([inp("INPUT0", "FP32", (1, 4), [1, 2, 3, 4]), inp("INPUT1", "FP32", (1, 4), [0.5] * 4)],
                      outputs=[{"name": "OUTPUT1"}])
    r = infer(server, "add_sub_fp32", body)
    assert r.status == 200, r.body
    outs = r.json()["outputs"]
    assert [o["name"] for o in outs] == ["OUTPUT1"]
    assert outs[0]["data"] == [0.5, 1.5, 2.5, 3.5]


def test_request_id_echoed_only_when_non_empty(server):
    r = infer(server, "identity", infer_body([inp(data=[1, 2, 3])], id="req-42"))
    assert list(r.json().keys())[0] == "id" and r.json()["id"] == "req-42"
    r = infer(server, "identity", infer_body([inp(data=[1, 2, 3])], id=""))
    assert "id" not in r.json()


def test_request_parameters(server):
    ok = infer(server, "identity", infer_body([inp(data=[1, 2, 3])], parameters={
        "priority": 0, "timeout": 1000000, "sequence_id": 0, "my_key": "x", "my_int": 3, "my_bool": True}))
    assert ok.status == 200, ok.body
    assert_error(infer(server, "identity", infer_body([inp(data=[1, 2, 3])], parameters={"triton_x": 1})),
                 400, "triton_")
    assert_error(infer(server, "identity", infer_body([inp(data=[1, 2, 3])], parameters={"priority": "high"})),
                 400, "priority")
    assert_error(infer(server, "identity", infer_body([inp(data=[1, 2, 3])], id=5)), 400, "'id'")
    assert_still_serving(server)


def test_infer_with_version_in_path(server):
    r = infer(server, "identity/versions/1", infer_body([inp(data=[1, 2, 3])]))
    assert r.status == 200
    assert_error(infer(server, "identity/versions/9", infer_body([inp(data=[1, 2, 3])])), 404)


# ---- binary tensor extension ----------------------------------------------------

def test_binary_input_and_output(server):
    blob = struct.pack("<3i", 5, 6, 7)
    body, headers = binary_request({"inputs": [inp(binary_data_size=len(blob))],
                                    "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}, [blob])
    r = infer(server, "identity", body, headers)
    assert r.status == 200, r.body
    assert r.header("Content-Type") == "application/octet-stream"
    header, rest = split_binary_response(r)
    out = header["outputs"][0]
    assert out == {"name": "OUTPUT0", "datatype": "INT32", "shape": [1, 3],
                   "parameters": {"binary_data_size": 12}}
    assert rest == blob


def test_binary_data_output_covers_only_unlisted_outputs(server):
    body = infer_body([inp("INPUT0", shape=(1, 4), data=[1, 2, 3, 4]), inp("INPUT1", shape=(1, 4), data=[1] * 4)],
                      outputs=[{"name": "OUTPUT0"}, {"name": "OUTPUT1", "parameters": {"binary_data": True}}],
                      parameters={"binary_data_output": True})
    r = infer(server, "add_sub", body)
    header, rest = split_binary_response(r)
    outs = {o["name"]: o for o in header["outputs"]}
    assert outs["OUTPUT0"]["data"] == [2, 3, 4, 5]
    assert outs["OUTPUT1"]["parameters"] == {"binary_data_size": 16}
    assert rest == struct.pack("<4i", 0, 1, 2, 3)
    r = infer(server, "add_sub", infer_body(json.loads(body)["inputs"], parameters={"binary_data_output": True}))
    header, rest = split_binary_response(r)
    assert all("data" not in o for o in header["outputs"])
    assert len(rest) == 32


def test_binary_bytes_input_mixed_with_json(server):
    blob = bytes_tensor([b"ab", b"\x00\xff"])
    body, headers = binary_request({"inputs": [inp(dtype="BYTES", shape=(1, 2), binary_data_size=len(blob))],
                                    "parameters": {"binary_data_output": True}}, [blob])
    r = infer(server, "id_bytes", body, headers)
    assert r.status == 200, r.body
    header, rest = split_binary_response(r)
    assert header["outputs"][0]["parameters"]["binary_data_size"] == len(blob)
    assert parse_bytes_tensor(rest) == [b"ab", b"\x00\xff"]


def test_binary_blobs_consumed_in_inputs_order(server):
    a, b = struct.pack("<4i", 10, 20, 30, 40), struct.pack("<4i", 1, 2, 3, 4)
    body, headers = binary_request({"inputs": [inp("INPUT1", shape=(1, 4), binary_data_size=16),
                                               inp("INPUT0", shape=(1, 4), binary_data_size=16)]}, [b, a])
    r = infer(server, "add_sub", body, headers)
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outs["OUTPUT1"] == [9, 18, 27, 36]


def test_fp16_travels_binary_only(server):
    blob = b"\x00\x3c\x00\x40"  # 1.0, 2.0
    body, headers = binary_request({"inputs": [inp(dtype="FP16", shape=(1, 2), binary_data_size=4)],
                                    "parameters": {"binary_data_output": True}}, [blob])
    r = infer(server, "id_fp16", body, headers)
    assert r.status == 200, r.body
    assert split_binary_response(r)[1] == blob
    assert_error(infer(server, "id_fp16", infer_body([inp(dtype="FP16", shape=(1, 2), data=[1, 2])])),
                 400, "FP16", "JSON")
    body, headers = binary_request({"inputs": [inp(dtype="FP16", shape=(1, 2), binary_data_size=4)]}, [blob])
    assert_error(infer(server, "id_fp16", body, headers), 400, "FP16", "JSON")


def test_raw_binary_request(server):
    blob = struct.pack("<4i", 1, 2, 3, 4)
    r = infer(server, "identity", blob, {"Inference-Header-Content-Length": "0"})
    assert r.status == 200, r.body
    header, rest = split_binary_response(r)
    assert header["outputs"][0]["shape"] == [1, 4]
    assert rest == blob


def test_raw_binary_request_needs_single_input(server):
    assert_error(infer(server, "add_sub", b"\x00" * 16, {"Inference-Header-Content-Length": "0"}), 400,
                 "Raw request", "2 inputs")


def test_raw_binary_request_bytes(server):
    r = infer(server, "id_bytes", b"raw payload", {"Inference-Header-Content-Length": "0"})
    if r.status == 200:
        header, rest = split_binary_response(r)
        assert parse_bytes_tensor(rest) == [b"raw payload"]
    else:
        assert_error(r, 400, "shape")


# ---- classification -----------------------------------------------------------

def test_classification_with_labels(server):
    body = infer_body([inp(dtype="FP32", shape=(4,), data=[0.1, 3.3, 0.5, 2.0])],
                      outputs=[{"name": "OUTPUT0", "parameters": {"classification": 2}}])
    r = infer(server, "classify", body)
    assert r.status == 200, r.body
    out = r.json()["outputs"][0]
    assert out["datatype"] == "BYTES"
    assert out["shape"] == [2]
    assert out["data"] == ["3.300000:1:dog", "2.000000:3:fish"]


def test_classification_integer_values_batched(server):
    body = infer_body([inp(shape=(2, 3), data=[[1, 9, 5], [7, 2, 8]])],
                      outputs=[{"name": "OUTPUT0", "parameters": {"classification": 5}}])
    r = infer(server, "identity", body)
    assert r.status == 200, r.body
    out = r.json()["outputs"][0]
    assert out["shape"] == [2, 3]
    assert out["data"] == ["9:1", "5:2", "1:0", "8:2", "7:0", "2:1"]


def test_classification_binary(server):
    body = infer_body([inp(dtype="FP32", shape=(4,), data=[0.1, 3.3, 0.5, 2.0])],
                      outputs=[{"name": "OUTPUT0", "parameters": {"classification": 1, "binary_data": True}}])
    header, rest = split_binary_response(infer(server, "classify", body))
    assert header["outputs"][0]["datatype"] == "BYTES"
    assert parse_bytes_tensor(rest) == [b"3.300000:1:dog"]


# ---- compression ----------------------------------------------------------------

def test_gzip_and_deflate_requests(server):
    raw = infer_body([inp(data=[4, 5, 6])])
    for enc, data in (("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw))):
        r = infer(server, "identity", data, {"Content-Encoding": enc})
        assert r.status == 200, (enc, r.body)
        assert r.json()["outputs"][0]["data"] == [4, 5, 6]


def test_unknown_content_encoding_is_400(server):
    assert_error(infer(server, "identity", infer_body([inp(data=[1, 2, 3])]), {"Content-Encoding": "br"}),
                 400, "Content-Encoding")
    assert_error(infer(server, "identity", b"\x1f\x8bnot gzip at all", {"Content-Encoding": "gzip"}),
                 400, "decompress")
    assert_still_serving(server)


def test_gzip_response(server):
    r = infer(server, "identity", infer_body([inp(data=[4, 5, 6])]), {"Accept-Encoding": "gzip"})
    assert r.status == 200
    assert r.header("Content-Encoding") == "gzip"
    assert json.loads(gzip.decompress(r.body))["outputs"][0]["data"] == [4, 5, 6]
    r = infer(server, "identity", infer_body([inp(data=[4, 5, 6])]), {"Accept-Encoding": "gzip;q=0.1, deflate"})
    assert r.header("Content-Encoding") == "deflate"
    assert json.loads(zlib.decompress(r.body))["outputs"][0]["data"] == [4, 5, 6]


def test_gzip_binary_response_keeps_uncompressed_header_length(server):
    body = infer_body([inp(data=[4, 5, 6])], parameters={"binary_data_output": True})
    r = infer(server, "identity", body, {"Accept-Encoding": "gzip"})
    plain = gzip.decompress(r.body)
    n = int(r.header("Inference-Header-Content-Length"))
    assert json.loads(plain[:n])["outputs"][0]["parameters"]["binary_data_size"] == 12
    assert plain[n:] == struct.pack("<3i", 4, 5, 6)


def test_zip_bomb_is_rejected(server):
    bomb = gzip.compress(b"[" + b" " * (8 << 20) + b"]")
    assert len(bomb) < 1048576
    assert_error(infer(server, "identity", bomb, {"Content-Encoding": "gzip"}), 400, "1048576")
    assert_still_serving(server)


# ---- keep-alive and pipelining ---------------------------------------------------

def test_keep_alive_several_requests_on_one_connection(server):
    conn = connection(server)
    try:
        for i in range(5):
            conn.request("POST", "/v2/models/identity/infer", body=infer_body([inp(data=[i, i, i])]))
            r = conn.getresponse()
            assert r.status == 200
            assert json.loads(r.read())["outputs"][0]["data"] == [i, i, i]
        conn.request("GET", "/v2/models/nope")
        r = conn.getresponse()
        assert r.status == 400
        r.read()
        conn.request("GET", "/v2/health/ready")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_pipelined_requests_on_raw_socket(server):
    reqs = b""
    for i in range(4):
        body = infer_body([inp(data=[i, i + 1, i + 2])])
        reqs += (b"POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    reqs += b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    s = socket.create_connection(("127.0.0.1", server.http_port))
    try:
        s.sendall(reqs)
        resps = read_responses(s, 5)
    finally:
        s.close()
    for i in range(4):
        assert resps[i].status == 200
        assert resps[i].json()["outputs"][0]["data"] == [i, i + 1, i + 2]
    assert resps[4].status == 200


def test_concurrent_slow_requests_do_not_block_other_connections(repo, server_factory):
    write_model(repo, "identity", identity())
    write_model(repo, "timed", timed_config(fixed_us=300000, extra="instance_group [ { count: 4 kind: KIND_CPU } ]"))
    s = server_factory(repo, "--http-thread-count=1")
    results = []

    def slow():
        results.append(s.post("/v2/models/timed/infer", body=infer_body([inp(data=[1, 2, 3])])).status)

    threads = [threading.Thread(target=slow) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.05 * SLOW)
    t0 = time.time()
    assert s.get("/v2/health/live").status == 200
    assert time.time() - t0 < 0.25 * SLOW
    for t in threads:
        t.join()
    assert results == [200, 200, 200]


def test_client_disconnect_cancels_queued_request(repo, server_factory):
    # The first request must still run while the second is queued and its
    # client leaves, also under valgrind (SLOW), so its duration scales too.
    write_model(repo, "timed", timed_config(fixed_us=int(500000 * SLOW), max_batch_size=0,
                                            extra="instance_group [ { count: 1 kind: KIND_CPU } ]")
                .replace("dims: [ -1 ]", "dims: [ 3 ]"))
    s = server_factory(repo)
    body = json.dumps({"inputs": [inp(shape=(3,), data=[1, 2, 3])]}).encode()
    head = b"POST /v2/models/timed/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    keep = socket.create_connection(("127.0.0.1", s.http_port))
    keep.sendall(head + body)  # occupies the only instance
    time.sleep(0.1 * SLOW)
    gone = socket.create_connection(("127.0.0.1", s.http_port))
    gone.sendall(head + body)  # queued behind it
    time.sleep(0.1 * SLOW)
    gone.close()
    assert read_responses(keep, 1, timeout=5)[0].status == 200
    keep.close()
    time.sleep(0.6 * SLOW)
    stats = s.get("/v2/models/timed/stats").json()["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] == 1
    assert stats["inference_stats"]["fail"]["count"] == 1
    assert 'reason="CANCELED",version="1"} 1' in s.metrics()


# ---- bad input ------------------------------------------------------------------------

@pytest.mark.parametrize("body,fragment", [
    (b"{", "failed to parse the request JSON"),
    (b'{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,3],"data":[1,2', "failed to parse"),
    (b"", "failed to parse"),
    (b"[1,2]", "expected an object"),
    (b'{"inputs":{}}', "'inputs'"),
    (b'{"inputs":[{"datatype":"INT32","shape":[1],"data":[1]}]}', "'name'"),
    (b'{"inputs":[{"name":"INPUT0","datatype":"INT32","data":[1]}]}', "'shape'"),
    (b'{"inputs":[{"name":"INPUT0","shape":[1,1],"data":[1]}]}', "'datatype'"),
    (b'{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,1]}]}', "only one of"),
    (b'{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,1],"data":[1],'
     b'"parameters":{"binary_data_size":4}}]}', "only one of"),
    (b'{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,3],"data":[1,"a",3]}]}', "INPUT0"),
    (b'{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,3],"data":[1.5,2,3]}]}', "integer"),
    (b'{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,1],"data":' + b"[" * 150 + b"1" + b"]" * 150
     + b"}]}", "nesting"),
    (b'{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,1],"data":[1]}],"outputs":[{"name":"NOPE"}]}',
     "NOPE"),
    (b'{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,1],"data":[1],'
     b'"parameters":{"shared_memory_region":"r"}}]}', "shared memory"),
])
def test_malformed_requests(server, body, fragment):
    r = infer(server, "identity", body)
    assert r.status in (400, 501), r.body
    assert fragment in r.json()["error"], r.json()
    assert_still_serving(server)


@pytest.mark.parametrize("dtype,fragment", [("STRING", "STRING"), ("fp32", "fp32"), ("FP32", "FP32"),
                                            ("NOPE", "NOPE")])
def test_wrong_datatype(server, dtype, fragment):
    r = infer(server, "identity", infer_body([inp(dtype=dtype, data=[1, 2, 3])]))
    assert_error(r, 400, fragment, "INPUT0")
    assert_still_serving(server)


@pytest.mark.parametrize("shape,data", [((1, 4), [1, 2, 3]), ((1, 2), [1, 2, 3]), ((0, 3), [1]),
                                        ((1, 3), [[1, 2], [3, 4]])])
def test_element_count_mismatch(server, shape, data):
    r = infer(server, "identity", infer_body([inp(shape=shape, data=data)]))
    assert_error(r, 400, "does not match", "INPUT0")
    assert_still_serving(server)


@pytest.mark.parametrize("shape,fragment", [
    ([1, -3], "non-negative"), ([1, 1.5], "non-negative"), ([1, 2 ** 40, 2 ** 20], "INPUT0"),
    ([1] * 20, "dimensions"), ([2 ** 62, 2 ** 62], "INPUT0"), ([1, 100000000], "INPUT0"),
])
def test_negative_or_absurd_dims(server, shape, fragment):
    r = infer(server, "identity", infer_body([inp(shape=shape, data=[1])]))
    assert_error(r, 400, fragment)
    assert_still_serving(server)


def test_absurd_binary_dims(server):
    body, headers = binary_request({"inputs": [inp(shape=[1, 2 ** 40], binary_data_size=8)]}, [b"\x00" * 8])
    r = infer(server, "identity", body, headers)
    assert r.status == 400
    assert "INPUT0" in r.json()["error"]
    assert_still_serving(server)


@pytest.mark.parametrize("value,fragment", [("999999", "exceeds"), ("-1", "Inference-Header-Content-Length"),
                                            ("abc", "Inference-Header-Content-Length"),
                                            ("", "Inference-Header-Content-Length"),
                                            ("99999999999999999999999", "Inference-Header-Content-Length")])
def test_bad_inference_header_content_length(server, value, fragment):
    body = infer_body([inp(data=[1, 2, 3])])
    assert_error(infer(server, "identity", body, {"Inference-Header-Content-Length": value}), 400, fragment)
    assert_still_serving(server)


def test_binary_data_short(server):
    body, headers = binary_request({"inputs": [inp(binary_data_size=12)]}, [b"\x00" * 8])
    assert_error(infer(server, "identity", body, headers), 400, "unexpected size for input 'INPUT0'")
    assert_still_serving(server)


def test_binary_data_leftover(server):
    body, headers = binary_request({"inputs": [inp(binary_data_size=12)]}, [b"\x00" * 16])
    assert_error(infer(server, "identity", body, headers), 400, "unexpected additional input data")
    assert_still_serving(server)


def test_binary_size_not_matching_shape(server):
    body, headers = binary_request({"inputs": [inp(binary_data_size=8)]}, [b"\x00" * 8])
    r = infer(server, "identity", body, headers)
    assert r.status == 400
    assert "INPUT0" in r.json()["error"]
    assert_still_serving(server)


def test_binary_input_without_header_is_rejected(server):
    blob = struct.pack("<3i", 1, 2, 3)
    body = json.dumps({"inputs": [inp(binary_data_size=12)]}).encode() + blob
    r = infer(server, "identity", body)
    assert r.status == 400
    assert "failed to parse" in r.json()["error"] or "unexpected size" in r.json()["error"]
    assert_still_serving(server)


def test_body_over_max_input_size(server):
    big = b'{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,1],"data":[1]}],"pad":"' + \
        b"x" * (1048576 + 10) + b'"}'
    assert_error(infer(server, "identity", big), 400, "1048576", "--http-max-input-size")
    assert_still_serving(server)


def test_json_input_over_max_input_size(server):
    n = 300000  # 1.2 MB decoded as INT32, over the 1 MiB limit
    body = b'{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,%d],"data":[' % n + b"0," * (n - 1) + b"0]}]}"
    assert len(body) < 1048576
    assert_error(infer(server, "identity", body), 400, "1048576")
    assert_still_serving(server)


def test_unknown_model_and_version(server):
    assert_error(infer(server, "nope", infer_body([inp(data=[1, 2, 3])])), 400, "Request for unknown model",
                 "'nope'")
    r = infer(server, "identity/versions/3", infer_body([inp(data=[1, 2, 3])]))
    assert r.status in (400, 404, 503)
    assert "identity" in r.json()["error"]
    assert_still_serving(server)


def test_unknown_input_name(server):
    r = infer(server, "identity", infer_body([inp(name="NOPE", data=[1, 2, 3])]))
    assert r.status == 400
    assert "NOPE" in r.json()["error"]
    assert_still_serving(server)


def test_many_concurrent_keep_alive_clients(server):
    errors = []

    def client(k):
        conn = connection(server)
        try:
            for i in range(100):
                body = infer_body([inp(data=[k, i, k + i])], id=f"{k}-{i}")
                conn.request("POST", "/v2/models/identity/infer", body=body,
                             headers={"Accept-Encoding": "gzip"} if i % 3 == 0 else {})
                r = conn.getresponse()
                data = r.read()
                if r.getheader("Content-Encoding") == "gzip":
                    data = gzip.decompress(data)
                out = json.loads(data)
                if r.status != 200 or out["id"] != f"{k}-{i}" or out["outputs"][0]["data"] != [k, i, k + i]:
                    errors.append((k, i, r.status, out))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((k, repr(e)))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stats = server.get("/v2/models/identity/stats").json()["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] == 1200
