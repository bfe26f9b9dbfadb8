"""HTTP/1.1 framing of the server's own HTTP implementation (src/http/http_parse.c,
http_server.c), over raw sockets: chunked request bodies, Expect: 100-continue,
HTTP/1.0 connection handling, every framing error's status, long pipelines that
mix small replies (sent by the completing instance thread) with large ones
(handed back to the event loop), slow clients and clients that vanish mid-request.
Each case checks that the server keeps serving."""
import json
import socket
import struct
import time

import pytest

from conftest import SLOW, metric_value, write_model
from httputil import assert_still_serving, identity, infer_body, read_responses


@pytest.fixture
def server(repo, server_factory):
    write_model(repo, "identity", identity())
    return server_factory(repo, "--http-max-input-size=1048576", "--http-thread-count=2")


def body_for(values):
    return infer_body([{"name": "INPUT0", "datatype": "INT32", "shape": [1, len(values)], "data": values}])


def request(body, extra=b"", path=b"/v2/models/identity/infer", version=b"HTTP/1.1"):
    return (b"POST " + path + b" " + version + b"\r\nHost: x\r\n" + extra +
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


def connect(server):
    s = socket.create_connection(("127.0.0.1", server.http_port), timeout=10 * SLOW)
    return s


def read_until_closed(sock):
    sock.settimeout(10 * SLOW)
    data = b""
    while True:
        c = sock.recv(65536)
        if not c:
            return data
        data += c


def test_chunked_request_body(server):
    body = body_for([4, 5, 6])
    chunks = b"".join(b"%x;name=v\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
    req = (b"POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
           chunks + b"0\r\nX-Trailer: ignored\r\n\r\n")
    s = connect(server)
    try:
        # Byte by byte for the first 40 bytes, then the rest: every split of the framing.
        for i in range(40):
            s.sendall(req[i:i + 1])
        s.sendall(req[40:])
        r = read_responses(s, 1)[0]
        assert r.status == 200, r.body
        assert r.json()["outputs"][0]["data"] == [4, 5, 6]
        # The connection stays usable.
        s.sendall(request(body_for([1])))
        assert read_responses(s, 1)[0].json()["outputs"][0]["data"] == [1]
    finally:
        s.close()


def test_malformed_chunked_body_is_400_and_closes(server):
    s = connect(server)
    try:
        s.sendall(b"POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"zz\r\n")
        data = read_until_closed(s)
        assert data.startswith(b"HTTP/1.1 400 "), data
        assert b"chunk size" in data
        assert b"Connection: close" in data
    finally:
        s.close()
    assert_still_serving(server)


def test_chunked_body_over_the_limit_is_refused(server):
    s = connect(server)
    try:
        s.sendall(b"POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        block = b"x" * 65536
        for _ in range(20):  # 1.25 MiB against a 1 MiB limit
            s.sendall(b"%x\r\n%s\r\n" % (len(block), block))
        s.sendall(b"0\r\n\r\n")
        r = read_responses(s, 1)[0]
        assert r.status == 400
        assert "1048576" in r.json()["error"]
    finally:
        s.close()
    assert_still_serving(server)


def test_expect_100_continue(server):
    body = body_for([7, 8, 9])
    s = connect(server)
    try:
        s.sendall(b"POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        s.settimeout(5 * SLOW)
        interim = s.recv(4096)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", interim
        s.sendall(body)
        r = read_responses(s, 1)[0]
        assert r.status == 200
        assert r.json()["outputs"][0]["data"] == [7, 8, 9]
    finally:
        s.close()


def test_expect_100_continue_over_the_limit_is_refused_before_the_body(server):
    s = connect(server)
    try:
        s.sendall(b"POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 5000000\r\n\r\n")
        data = read_until_closed(s)  # no body sent: the answer comes anyway, then the close
        assert data.startswith(b"HTTP/1.1 400 "), data
        assert b"5000000" in data and b"1048576" in data
    finally:
        s.close()
    assert_still_serving(server)


def test_http10_closes_unless_keep_alive(server):
    s = connect(server)
    try:
        s.sendall(b"GET /v2/health/live HTTP/1.0\r\n\r\n")
        data = read_until_closed(s)
        assert data.startswith(b"HTTP/1.1 200 "), data
        assert b"Connection: close" in data
    finally:
        s.close()
    s = connect(server)
    try:
        for i in range(3):
            s.sendall(request(body_for([i]), extra=b"Connection: keep-alive\r\n", version=b"HTTP/1.0"))
            r = read_responses(s, 1)[0]
            assert r.status == 200
            assert ("Connection", "keep-alive") in r.headers
    finally:
        s.close()


def test_connection_close_is_honoured(server):
    s = connect(server)
    try:
        s.sendall(request(body_for([3]), extra=b"Connection: close\r\n"))
        data = read_until_closed(s)
        assert data.startswith(b"HTTP/1.1 200 ")
        assert data.endswith(b"}")
    finally:
        s.close()


@pytest.mark.parametrize("raw,status,fragment", [
    (b"GARBAGE\r\n\r\n", 400, b"request line"),
    (b"GET / HTTP/2.0\r\n\r\n", 505, b"version"),
    (b"GET /v2 HTTP/1.1\r\nBad Header\r\n\r\n", 400, b"header"),
    (b"GET /v2 HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400, b"folding"),
    (b"POST /v2/models/identity/infer HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400,
     b"Content-Length"),
    (b"POST /v2/models/identity/infer HTTP/1.1\r\nContent-Length: -3\r\n\r\n", 400, b"Content-Length"),
    (b"POST /v2/models/identity/infer HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501, b"Transfer-Encoding"),
    (b"POST /v2/models/identity/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400,
     b"Transfer-Encoding"),
    (b"POST /v2/models/identity/infer HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 3\r\n\r\n", 417, b"Expect"),
    (b"GET /v2 HTTP/1.1\r\nX: " + b"a" * 40000 + b"\r\n\r\n", 431, b"too large"),
    (b"GET /" + b"a" * 40000 + b" HTTP/1.1\r\n\r\n", 414, b"too long"),
], ids=["garbage", "http2", "bad-header", "folding", "two-lengths", "negative-length", "gzip-transfer",
        "chunked-and-length", "expect", "huge-header", "huge-target"])
def test_framing_errors(server, raw, status, fragment):
    s = connect(server)
    try:
        s.sendall(raw)
        data = read_until_closed(s)
    finally:
        s.close()
    line = data.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1.1 %d " % status), data[:200]
    body = data.split(b"\r\n\r\n", 1)[1]
    assert fragment in json.loads(body)["error"].encode(), body
    assert_still_serving(server)


def test_long_pipeline_mixing_small_and_large_replies(server):
    # Small replies are written by the instance thread that completes the
    # request; ones over 64 KiB, and any reply while more requests are
    # already buffered, go back to the event loop. Order must hold throughout.
    big = list(range(30000))  # 120 KB of INT32 output
    reqs, expect = b"", []
    for i in range(60):
        values = big if i % 10 == 3 else [i, i + 1]
        binary = i % 10 == 3
        body = infer_body([{"name": "INPUT0", "datatype": "INT32", "shape": [1, len(values)], "data": values}],
                          outputs=[{"name": "OUTPUT0", "parameters": {"binary_data": binary}}])
        reqs += request(body)
        expect.append((values, binary))
    s = connect(server)
    try:
        s.sendall(reqs)
        resps = read_responses(s, len(expect), timeout=30)
    finally:
        s.close()
    for r, (values, binary) in zip(resps, expect):
        assert r.status == 200
        if binary:
            n = int(r.header("Inference-Header-Content-Length"))
            raw = r.body[n:]
            assert list(struct.unpack("<%di" % len(values), raw)) == values
        else:
            assert r.json()["outputs"][0]["data"] == values


def test_many_connections_at_once(server):
    socks = [connect(server) for _ in range(200)]
    try:
        for i, s in enumerate(socks):
            s.sendall(request(body_for([i])))
        for i, s in enumerate(socks):
            r = read_responses(s, 1)[0]
            assert r.json()["outputs"][0]["data"] == [i]
    finally:
        for s in socks:
            s.close()


def test_slow_client_body_in_pieces(server):
    body = body_for(list(range(50)))
    req = request(body)
    s = connect(server)
    try:
        for i in range(0, len(req), 37):
            s.sendall(req[i:i + 37])
            time.sleep(0.005)
        r = read_responses(s, 1)[0]
        assert r.json()["outputs"][0]["data"] == list(range(50))
    finally:
        s.close()


def test_clients_that_vanish_mid_request(server):
    body = body_for([1, 2, 3])
    for cut in (5, 40, len(request(body)) - 3):
        s = connect(server)
        s.sendall(request(body)[:cut])
        s.close()
    # A client that resets the connection with a request in flight.
    s = connect(server)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.sendall(request(body) * 5)
    s.close()
    assert_still_serving(server)


def copied(server):
    text = server.metrics()
    return tuple(metric_value(text, "imagen_tensor_copy_bytes_total", {"protocol": "http", "direction": d})
                 for d in ("input", "output"))


def test_large_binary_request_and_response_round_trip(server):
    # The body is received in place and the output sent from the response's
    # memory: of 800 KB each way, only the bytes that arrived with the head
    # (at most one read buffer) are copied.
    n = 200000  # 800 KB each way: the body arrives in many reads, the reply in many writes
    values = bytes(range(256)) * (n * 4 // 256)
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, n],
                                     "parameters": {"binary_data_size": len(values)}}],
                         "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}).encode()
    body = header + values
    in_before, out_before = copied(server)
    s = connect(server)
    try:
        for _ in range(2):
            s.sendall(request(body, extra=b"Inference-Header-Content-Length: %d\r\n" % len(header)))
            r = read_responses(s, 1, timeout=30)[0]
            assert r.status == 200
            k = int(r.header("Inference-Header-Content-Length"))
            assert r.body[k:] == values
    finally:
        s.close()
    in_after, out_after = copied(server)
    assert out_after - out_before == 0
    assert in_after - in_before <= 2 * 64 * 1024, in_after - in_before


def test_keep_alive_connections_survive_sustained_load(server):
    # Replies written by instance threads stamp the connections' activity
    # clock while their loops run idle sweeps: no busy connection may be
    # taken for an idle one and closed.
    import threading
    deadline = time.time() + 4
    failures = []

    def client(k):
        s = connect(server)
        try:
            req = request(body_for([k]))
            n = 0
            while time.time() < deadline:
                s.sendall(req * 4)  # a little pipelining keeps both paths busy
                for r in read_responses(s, 4):
                    assert r.status == 200
                n += 4
        except Exception as e:  # noqa: BLE001 (reported below)
            failures.append(f"connection {k} after {n} requests: {e!r}")
        finally:
            s.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures


def test_binary_request_arriving_in_pieces_around_the_json_header(server):
    # The server receives the JSON header and the tensor bytes into separate
    # buffers as they arrive; the boundary may fall anywhere in a read.
    values = list(range(-50, 50))
    blob = struct.pack("<%di" % len(values), *values)
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, len(values)],
                                     "parameters": {"binary_data_size": len(blob)}}],
                         "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}).encode()
    req = request(header + blob, extra=b"Inference-Header-Content-Length: %d\r\n" % len(header))
    head_len = len(req) - len(header) - len(blob)
    s = connect(server)
    try:
        for cut in (head_len + 1, head_len + len(header) - 1, head_len + len(header), head_len + len(header) + 1,
                    len(req) - 1):
            s.sendall(req[:cut])
            time.sleep(0.02)
            s.sendall(req[cut:])
            r = read_responses(s, 1)[0]
            assert r.status == 200, (cut, r.body)
            k = int(r.header("Inference-Header-Content-Length"))
            assert r.body[k:] == blob, cut
    finally:
        s.close()


def test_raw_binary_request_in_pieces(repo, server_factory):
    write_model(repo, "raw", identity(name="raw", dtype="TYPE_UINT8", max_batch_size=0, dims="[ -1 ]"))
    s = server_factory(repo)
    data = bytes(range(256)) * 300
    req = (b"POST /v2/models/raw/infer HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: 0\r\n"
           b"Content-Length: %d\r\n\r\n" % len(data)) + data
    sock = connect(s)
    try:
        for cut in (len(req) - len(data) - 1, len(req) - len(data) + 7, len(req) - 1):
            sock.sendall(req[:cut])
            time.sleep(0.02)
            sock.sendall(req[cut:])
            r = read_responses(sock, 1)[0]
            assert r.status == 200, r.body
            k = int(r.header("Inference-Header-Content-Length"))
            assert r.body[k:] == data
    finally:
        sock.close()
