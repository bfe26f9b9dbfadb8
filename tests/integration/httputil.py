"""Helpers for the HTTP/metrics integration tests: model configs, binary
tensor framing (spec §1.10) and raw-socket HTTP for keep-alive/pipelining."""
import http.client
import json
import socket
import struct

from conftest import SLOW, Response, identity_config, metric_value  # noqa: F401 (re-exported)


def add_sub_config(name="add_sub", dtype="TYPE_INT32", dims="[ 4 ]", max_batch_size=8, extra=""):
    return f"""
name: "{name}"
backend: "imageops"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT0" data_type: {dtype} dims: {dims} }},
        {{ name: "INPUT1" data_type: {dtype} dims: {dims} }} ]
output [ {{ name: "OUTPUT0" data_type: {dtype} dims: {dims} }},
         {{ name: "OUTPUT1" data_type: {dtype} dims: {dims} }} ]
parameters {{ key: "operation" value: {{ string_value: "add_sub" }} }}
{extra}
"""


def timed_config(name="timed", fixed_us=200000, max_batch_size=8, extra=""):
    return f"""
name: "{name}"
backend: "imageops"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT0" data_type: TYPE_INT32 dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_INT32 dims: [ -1 ] }} ]
parameters {{ key: "operation" value: {{ string_value: "timed" }} }}
parameters {{ key: "fixed_us" value: {{ string_value: "{fixed_us}" }} }}
{extra}
"""


def identity(name="identity", dtype="TYPE_INT32", dims="[ -1 ]", max_batch_size=8, extra=""):
    return identity_config(name=name, dtype=dtype, dims=dims, max_batch_size=max_batch_size, extra=extra)


def infer_body(inputs, outputs=None, **top):
    body = dict(top)
    body["inputs"] = inputs
    if outputs is not None:
        body["outputs"] = outputs
    return json.dumps(body).encode()


def binary_request(header, blobs):
    """Returns (body, headers) for a request with binary tensors."""
    h = json.dumps(header).encode()
    body = h + b"".join(blobs)
    return body, {"Inference-Header-Content-Length": str(len(h)), "Content-Type": "application/octet-stream"}


def split_binary_response(resp):
    """Returns (json_header, rest_bytes) of a response using the binary extension."""
    n = resp.header("Inference-Header-Content-Length")
    if n is None:
        return json.loads(resp.body), b""
    n = int(n)
    return json.loads(resp.body[:n]), resp.body[n:]


def bytes_tensor(items):
    return b"".join(struct.pack("<I", len(x)) + x for x in items)


def parse_bytes_tensor(data):
    out, off = [], 0
    while off < len(data):
        (n,) = struct.unpack_from("<I", data, off)
        out.append(data[off + 4: off + 4 + n])
        off += 4 + n
    return out


def assert_error(resp, status, *fragments):
    assert resp.status == status, (resp.status, resp.body)
    body = resp.json()
    assert set(body.keys()) == {"error"}, body
    for frag in fragments:
        assert frag in body["error"], (frag, body["error"])


def assert_still_serving(server, model="identity"):
    r = server.post(f"/v2/models/{model}/infer",
                    body={"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 2], "data": [7, 8]}]})
    assert r.status == 200, r.body
    assert r.json()["outputs"][0]["data"] == [7, 8]


def raw_http(port, data, timeout=10.0):
    """Sends raw bytes and reads until the peer closes or the timeout."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    try:
        s.sendall(data)
        chunks = []
        while True:
            try:
                c = s.recv(65536)
            except socket.timeout:
                break
            if not c:
                break
            chunks.append(c)
        return b"".join(chunks)
    finally:
        s.close()


def read_responses(sock, count, timeout=10.0):
    """Reads `count` HTTP/1.1 responses (Content-Length framed) from sock."""
    sock.settimeout(timeout * SLOW)
    buf = b""
    out = []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            c = sock.recv(65536)
            if not c:
                raise AssertionError(f"connection closed after {len(out)} responses")
            buf += c
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = [tuple(x.split(": ", 1)) for x in lines[1:]]
        length = 0
        for k, v in headers:
            if k.lower() == "content-length":
                length = int(v)
        while len(buf) < length:
            c = sock.recv(65536)
            if not c:
                raise AssertionError("connection closed mid-body")
            buf += c
        out.append(Response(status, headers, buf[:length]))
        buf = buf[length:]
    return out


def connection(server, timeout=30.0):
    return http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=timeout * SLOW)
