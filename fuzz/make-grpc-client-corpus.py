#!/usr/bin/python3
"""Writes the seed corpus of fuzz_grpc_client (fuzz/corpus/grpc_client/):
what a server sends on a connection to answer the client's first stream,
a ModelInfer, made with python3-h2 playing both ends.

    /usr/bin/python3 fuzz/make-grpc-client-corpus.py [out-dir]
"""
import os
import struct
import sys

import h2.config
import h2.connection
import h2.errors


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def infer_response(outputs, raw, name=b"identity", version=b"1", rid=b""):
    """A ModelInferResponse (spec §2.3): outputs are (name, datatype, shape)."""
    msg = field(1, 2, name) + field(2, 2, version)
    if rid:
        msg += field(3, 2, rid)
    for oname, dtype, shape in outputs:
        packed = b"".join(varint(d & 0xFFFFFFFFFFFFFFFF) for d in shape)
        msg += field(5, 2, field(1, 2, oname) + field(2, 2, dtype) + field(3, 2, packed))
    for r in raw:
        msg += field(6, 2, r)
    return msg


def framed(msg, compressed=0):
    return struct.pack(">BI", compressed, len(msg)) + msg


def server_bytes(answer):
    """The server's side of a connection whose client opened stream 1;
    answer(conn) sends the frames of the reply."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path",
                        "/inference.GRPCInferenceService/ModelInfer"), (":authority", "x"),
                        ("content-type", "application/grpc"), ("te", "trailers")])
    client.send_data(1, framed(b"\x0a\x08identity"), end_stream=True)
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    answer(server)
    return server.data_to_send()


OK_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]
ONE = infer_response([(b"OUTPUT0", b"INT32", [1, 1])], [struct.pack("<i", 7)])
TWO = infer_response([(b"OUTPUT0", b"INT32", [1, 2]), (b"OUTPUT1", b"UINT8", [3])],
                     [struct.pack("<ii", 7, -7), b"\x01\x02\x03"], rid=b"req-1")


def full(msg, chunk=None):
    def answer(s):
        s.send_headers(1, OK_HEADERS)
        body = framed(msg)
        step = chunk or len(body)
        for i in range(0, len(body), step):
            s.send_data(1, body[i:i + step])
        s.send_headers(1, [("grpc-status", "0")], end_stream=True)
    return answer


def trailers_only(status, message):
    def answer(s):
        s.send_headers(1, OK_HEADERS + [("grpc-status", status), ("grpc-message", message)], end_stream=True)
    return answer


def http_error(s):
    s.send_headers(1, [(":status", "503"), ("content-type", "text/plain")])
    s.send_data(1, b"busy", end_stream=True)


def reset(s):
    s.reset_stream(1, h2.errors.ErrorCodes.REFUSED_STREAM)


def goaway(s):
    full(ONE)(s)
    s.close_connection(last_stream_id=1)


SEEDS = {
    "ok-one-output": full(ONE),
    "ok-two-outputs": full(TWO),
    "ok-one-byte-frames": full(ONE, chunk=1),
    "ok-empty-raw": full(infer_response([(b"OUTPUT0", b"INT32", [1, 0])], [b""])),
    "trailers-only-error": trailers_only("5", "model 'identity' not found: 100%25 %E2%80%94"),
    "http-503": http_error,
    "rst-refused": reset,
    "ok-then-goaway": goaway,
    "compressed": lambda s: (s.send_headers(1, OK_HEADERS), s.send_data(1, framed(ONE, 1)),
                             s.send_headers(1, [("grpc-status", "0")], end_stream=True)),
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus",
                                                             "grpc_client")
    os.makedirs(out, exist_ok=True)
    for name, answer in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(server_bytes(answer))


if __name__ == "__main__":
    main()
