"""The C client library's gRPC wire (src/client/h2_channel.c) against a
scripted HTTP/2 peer (python3-h2) that answers the way a test says: split
frames, trailers-only errors, percent-encoded messages, non-gRPC answers,
resets, GOAWAY, a connection that dies under a reused call, and silence
past the deadline; and a large round trip through a real imagen-server.

The client is driven through the `imagen` command: `health` makes two
calls (ServerLive, then ServerReady) on one client, so the second one runs
on the connection the first one put back.
"""
import resource
import socket
import struct
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import numpy as np
import pytest

from conftest import SLOW, WRAPPER, write_model
from grpcutil import stubs
from httputil import identity
from test_client_cli import CLI_BIN, EXIT_CONNECT, EXIT_OK, EXIT_SERVER, cli, url  # noqa: F401


def sanitized(binary):
    """AddressSanitizer reserves terabytes of address space: no RLIMIT_AS."""
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def live_msg(live=True):
    return stubs()[0].ServerLiveResponse(live=live).SerializeToString()


def ready_msg(ready=True):
    return stubs()[0].ServerReadyResponse(ready=ready).SerializeToString()


def framed(msg, compressed=False):
    return struct.pack(">BI", 1 if compressed else 0, len(msg)) + msg


class H2Peer:
    """Listens on a free port; every call that arrives goes to
    answer(peer, conn, stream_id, method, request) with the connection's
    h2 state, and whatever that leaves in conn.data_to_send() is sent. An
    answer may set peer.close_now to drop the connection after that."""

    def __init__(self, answer, early=None):
        self.answer = answer
        # early(peer, conn, stream_id, method) -> True: answered as soon as
        # the request's headers came; its body is then never read.
        self.early = early
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.connections = 0
        self.calls = []  # (connection number, method)
        self.close_now = False
        self.stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def url(self):
        return f"grpc://127.0.0.1:{self.port}"

    def _accept(self):
        while not self.stop:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(s, self.connections), daemon=True).start()

    def _serve(self, s, number):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        bodies, methods, early = {}, {}, set()
        try:
            while True:
                data = s.recv(1 << 16)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        methods[ev.stream_id] = dict(ev.headers)[":path"].rsplit("/", 1)[1]
                        bodies[ev.stream_id] = b""
                        if self.early and self.early(self, conn, ev.stream_id, methods[ev.stream_id]):
                            early.add(ev.stream_id)
                    elif isinstance(ev, h2.events.DataReceived) and ev.stream_id in early:
                        pass  # never read: no WINDOW_UPDATE either
                    elif isinstance(ev, h2.events.DataReceived):
                        bodies[ev.stream_id] += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamReset):
                        pass
                    elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id not in early:
                        method = methods[ev.stream_id]
                        self.calls.append((number, method))
                        self.answer(self, conn, ev.stream_id, method, bodies[ev.stream_id][5:])
                s.sendall(conn.data_to_send())
                if self.close_now:
                    self.close_now = False
                    return
        except (OSError, h2.exceptions.ProtocolError):
            return
        finally:
            s.close()

    def close(self):
        self.stop = True
        self.lsock.close()


@pytest.fixture
def peer_factory():
    peers = []

    def make(answer, early=None):
        p = H2Peer(answer, early)
        peers.append(p)
        return p

    yield make
    for p in peers:
        p.close()


def reply(conn, sid, msg, status=0, message=None, chunk=None):
    """A complete gRPC answer: headers, the message (in DATA frames of
    `chunk` bytes when given), trailers."""
    conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    body = framed(msg)
    step = chunk or len(body)
    for i in range(0, len(body), step):
        conn.send_data(sid, body[i:i + step])
    trailers = [("grpc-status", str(status))]
    if message is not None:
        trailers.append(("grpc-message", message))
    conn.send_headers(sid, trailers, end_stream=True)


def answer_health(peer, conn, sid, method, request, **kw):
    reply(conn, sid, live_msg() if method == "ServerLive" else ready_msg(), **kw)


def health(peer, *extra, timeout=30):
    return cli("--url", peer.url(), "--timeout", "20", *extra, "health", timeout=timeout)


def assert_healthy(p):
    assert p.returncode == EXIT_OK, p.stderr
    assert p.stdout.split() == ["live:", "true", "ready:", "true"]


def test_two_calls_share_one_connection(peer_factory):
    peer = peer_factory(answer_health)
    assert_healthy(health(peer))
    assert peer.calls == [(1, "ServerLive"), (1, "ServerReady")]


def test_message_split_into_one_byte_frames(peer_factory):
    peer = peer_factory(lambda p, c, sid, m, r: answer_health(p, c, sid, m, r, chunk=1))
    assert_healthy(health(peer))


def test_trailers_only_error_with_percent_encoded_message(peer_factory):
    def answer(peer, conn, sid, method, request):
        conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "9"),
                                ("grpc-message", "not ready: 100%25 sure %E2%80%94 %C3%BCn%C3%AFcode %zz")],
                          end_stream=True)

    p = health(peer_factory(answer))
    assert p.returncode == EXIT_SERVER, p.stderr
    # FAILED_PRECONDITION (9) is UNAVAILABLE in the spec's table; a malformed escape stays as sent.
    assert "not ready: 100% sure \u2014 \u00fcn\u00efcode %zz" in p.stderr


def test_http_error_without_grpc_status(peer_factory):
    def answer(peer, conn, sid, method, request):
        conn.send_headers(sid, [(":status", "503"), ("content-type", "text/plain")])
        conn.send_data(sid, b"busy", end_stream=True)

    p = health(peer_factory(answer))
    assert p.returncode == EXIT_SERVER
    assert "HTTP status 503" in p.stderr and "not a gRPC response" in p.stderr


@pytest.mark.parametrize("how, words", [
    ("compressed", "compressed"),
    ("two messages", "second response message"),
    ("no status", "without a grpc-status"),
    ("ok without message", "no response message"),
    ("grpc-encoding", "compressed response"),
    ("3 GB announced", "no response message"),  # memory follows what arrives, not the prefix
])
def test_unusable_answers_are_clear_errors(peer_factory, how, words):
    def answer(peer, conn, sid, method, request):
        conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")] +
                          ([("grpc-encoding", "gzip")] if how == "grpc-encoding" else []))
        if how == "compressed":
            conn.send_data(sid, framed(live_msg(), compressed=True))
        elif how == "two messages":
            conn.send_data(sid, framed(live_msg()) + framed(live_msg()))
        elif how in ("no status", "grpc-encoding"):
            conn.send_data(sid, framed(live_msg()))
        elif how == "3 GB announced":
            conn.send_data(sid, struct.pack(">BI", 0, 3 << 30) + b"\x08\x01")
        if how == "no status":
            conn.end_stream(sid)
        else:
            conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)

    peer = peer_factory(answer)
    if how == "3 GB announced" and not WRAPPER and not sanitized(CLI_BIN):
        # 1 GiB of address space: allocating what the prefix announced would fail.
        def limit():
            resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

        p = subprocess.run([CLI_BIN, "--url", peer.url(), "--timeout", "20", "health"], capture_output=True,
                           text=True, timeout=30 * SLOW, preexec_fn=limit)
    else:
        p = health(peer)
    assert p.returncode == EXIT_SERVER, p.stderr
    assert words in p.stderr


def test_refused_stream_is_tried_once_more(peer_factory):
    """REFUSED_STREAM means the server did nothing with the call: it runs
    once more, on a new connection, and only once."""
    def answer(peer, conn, sid, method, request):
        if method == "ServerLive" and peer.connections == 1:
            conn.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        answer_health(peer, conn, sid, method, request)

    peer = peer_factory(answer)
    assert_healthy(health(peer))
    assert peer.calls == [(1, "ServerLive"), (2, "ServerLive"), (2, "ServerReady")]

    def refuse(peer, conn, sid, method, request):
        conn.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)

    peer = peer_factory(refuse)
    p = health(peer)
    assert p.returncode == EXIT_SERVER
    assert "refused the stream" in p.stderr
    assert peer.calls == [(1, "ServerLive"), (2, "ServerLive")]


@pytest.mark.parametrize("code, name", [(h2.errors.ErrorCodes.CANCEL, "CANCELLED"),
                                        (h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, "UNAVAILABLE"),
                                        (h2.errors.ErrorCodes.INTERNAL_ERROR, "INTERNAL")])
def test_reset_stream_maps_to_grpc_codes(peer_factory, code, name):
    def answer(peer, conn, sid, method, request):
        conn.reset_stream(sid, code)

    p = health(peer_factory(answer))
    assert p.returncode == EXIT_SERVER
    assert f"error: {name}:" in p.stderr and "was reset" in p.stderr, p.stderr


def test_answer_before_the_request_is_read(peer_factory, tmp_path):
    """A server that refuses a large request from its headers alone and
    never reads the body: its error comes back at once, not a timeout."""
    def early(peer, conn, sid, method):
        conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "8"),
                                ("grpc-message", "request too large")], end_stream=True)
        return True

    peer = peer_factory(lambda *a: None, early=early)
    np.save(tmp_path / "big.npy", np.zeros((1, 4 << 20), dtype=np.uint8))
    t0 = time.monotonic()
    p = cli("--url", peer.url(), "--timeout", "20", "infer", "identity", "--input", f"INPUT0={tmp_path / 'big.npy'}",
            timeout=60)
    assert p.returncode == EXIT_SERVER, p.stderr
    assert "request too large" in p.stderr
    assert time.monotonic() - t0 < 10 * SLOW


def test_connection_lost_under_a_reused_call_is_retried_once(peer_factory):
    """The second call finds the connection the first one put back dead
    (the peer drops it on receiving the call, as a restarted server's old
    connection would): it runs again on a new connection."""
    def answer(peer, conn, sid, method, request):
        if method == "ServerReady" and peer.connections == 1:
            peer.close_now = True
            return
        answer_health(peer, conn, sid, method, request)

    peer = peer_factory(answer)
    assert_healthy(health(peer))
    assert peer.calls == [(1, "ServerLive"), (1, "ServerReady"), (2, "ServerReady")]


def test_connection_lost_on_a_fresh_connection_is_not_retried(peer_factory):
    def answer(peer, conn, sid, method, request):
        peer.close_now = True

    peer = peer_factory(answer)
    p = health(peer)
    assert p.returncode == EXIT_CONNECT, p.stderr
    assert "cannot connect" in p.stderr and "connection was closed" in p.stderr
    assert peer.connections == 1


def test_goaway_after_a_call_moves_the_next_to_a_new_connection(peer_factory):
    def answer(peer, conn, sid, method, request):
        answer_health(peer, conn, sid, method, request)
        if method == "ServerLive":
            conn.close_connection(last_stream_id=sid)

    peer = peer_factory(answer)
    assert_healthy(health(peer))
    assert peer.calls == [(1, "ServerLive"), (2, "ServerReady")]


def test_silent_peer_times_out(peer_factory):
    peer = peer_factory(lambda *a: None)
    t0 = time.monotonic()
    p = cli("--url", peer.url(), "--timeout", "1", "health", timeout=30)
    elapsed = time.monotonic() - t0
    assert p.returncode != EXIT_OK
    assert "timed out after 1000 ms" in p.stderr
    assert elapsed < 10 * SLOW, elapsed


def test_peer_that_is_not_http2(server_factory, repo):
    """The server's HTTP/1.1 port answers the HTTP/2 preface with a 400:
    a protocol error, at once."""
    write_model(repo, "identity", identity())
    s = server_factory(repo)
    p = cli("--url", f"grpc://127.0.0.1:{s.http_port}", "--timeout", "20", "health", timeout=30)
    # No gRPC server there: a connect error, as the worker treats an outage.
    assert p.returncode == EXIT_CONNECT, p.stderr
    assert "cannot connect" in p.stderr and "HTTP/2 protocol error" in p.stderr


def test_peer_that_accepts_and_closes(tmp_path):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    port = lsock.getsockname()[1]

    def close_all():
        for _ in range(4):
            try:
                s, _ = lsock.accept()
            except OSError:
                return
            s.close()

    threading.Thread(target=close_all, daemon=True).start()
    try:
        p = cli("--url", f"grpc://127.0.0.1:{port}", "--timeout", "20", "health", timeout=30)
    finally:
        lsock.close()
    assert p.returncode == EXIT_CONNECT, p.stderr
    assert "connection was closed" in p.stderr


@pytest.mark.parametrize("target, words", [
    ("grpc://[::1", "malformed IPv6"),
    ("grpc://host:port", "port must be a number"),
    ("grpc://no-such-host.invalid:8001", "cannot resolve"),
])
def test_bad_targets(target, words):
    p = cli("--url", target, "--timeout", "5", "health", timeout=30)
    assert p.returncode != EXIT_OK
    assert words in p.stderr, p.stderr


def test_large_round_trip_through_the_server(server_factory, repo, tmp_path):
    """48 MiB each way: flow control in both directions and a message
    longer than any window."""
    write_model(repo, "identity", identity(dtype="TYPE_UINT8"))
    s = server_factory(repo)
    data = np.random.default_rng(7).integers(0, 256, size=(1, 48 << 20), dtype=np.uint8)
    np.save(tmp_path / "in.npy", data)
    p = cli("--url", url(s, "grpc"), "infer", "identity", "--input", f"INPUT0={tmp_path / 'in.npy'}",
            "--output-dir", tmp_path / "out", timeout=120)
    assert p.returncode == EXIT_OK, p.stderr
    out = np.load(tmp_path / "out" / "OUTPUT0.npy")
    assert out.shape == data.shape and np.array_equal(out, data)
