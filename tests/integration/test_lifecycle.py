"""Process lifecycle: graceful shutdown on SIGTERM/SIGINT drains in-flight
requests and exits 0; --exit-timeout-secs bounds the drain (exit 1); a
second signal during the drain exits at once (exit 1)."""
import signal
import threading
import time

import pytest

from conftest import SLOW, identity_config, write_model


def timed_model(repo, name, fixed_us, instances=1):
    cfg = identity_config(name=name, dtype="TYPE_FP32", max_batch_size=0, dims="[ 2 ]", extra=f"""
parameters {{ key: "fixed_us" value: {{ string_value: "{fixed_us}" }} }}
instance_group [ {{ count: {instances}, kind: KIND_CPU }} ]
""").replace('string_value: "identity"', 'string_value: "timed"')
    write_model(repo, name, cfg)


def read_log(server):
    """The server's log; usable after Server.stop() closed its file."""
    with open(server.log_path, "rb") as f:
        return f.read().decode(errors="replace")


def wait_pending(server, model, n, timeout=10.0):
    """Waits until nv_inference_pending_request_count of `model` reaches n."""
    prefix = f'nv_inference_pending_request_count{{model="{model}",'
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        for line in server.metrics().splitlines():
            if line.startswith(prefix) and float(line.rsplit(" ", 1)[1]) >= n:
                return
        time.sleep(0.01)
    raise AssertionError(f"{model}: fewer than {n} requests pending after {timeout * SLOW} s")


class Client(threading.Thread):
    """Sends one inference request to `model` and records the outcome."""

    def __init__(self, server, model, value):
        super().__init__(daemon=True)
        self.server, self.model, self.value = server, model, value
        self.status = None
        self.body = None
        self.error = None
        self.start()

    def run(self):
        body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2], "data": [self.value, -self.value]}]}
        try:
            r = self.server.post(f"/v2/models/{self.model}/infer", body=body, timeout=60)
            self.status, self.body = r.status, r.json()
        except Exception as e:  # connection reset when the server exits first
            self.error = e


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_inflight_requests(repo, server_factory, sig):
    # One instance, 400 ms per request: when the signal arrives one request is
    # executing and the others are still queued; all must complete. (Under a
    # slow wrapper every duration is stretched alike.)
    timed_model(repo, "slow", int(400000 * SLOW))
    s = server_factory(repo)
    clients = []
    for i in range(3):
        clients.append(Client(s, "slow", float(i + 1)))
        time.sleep(0.05 * SLOW)
    wait_pending(s, "slow", 2)  # one executing, two queued
    t0 = time.monotonic()
    rc = s.stop(sig)
    elapsed = time.monotonic() - t0
    assert rc == 0, read_log(s)
    for i, c in enumerate(clients):
        c.join(timeout=30 * SLOW)
        assert c.error is None, (c.error, read_log(s))
        assert c.status == 200, (c.body, read_log(s))
        assert c.body["outputs"][0]["data"] == [float(i + 1), -float(i + 1)]
    assert elapsed >= 0.4, "the server exited before its in-flight requests finished"


def test_idle_server_exits_promptly(repo, server_factory):
    write_model(repo, "identity", identity_config())
    s = server_factory(repo)
    t0 = time.monotonic()
    assert s.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 5 * SLOW


def test_exit_timeout_bounds_the_drain(repo, server_factory):
    # A 20 s request and --exit-timeout-secs=1: the server gives up after about
    # a second and exits with status 1, like tritonserver.
    timed_model(repo, "very_slow", 20000000)
    s = server_factory(repo, "--exit-timeout-secs=1")
    c = Client(s, "very_slow", 1.0)
    time.sleep(0.3 * SLOW)
    t0 = time.monotonic()
    rc = s.stop(signal.SIGTERM, timeout=15)
    elapsed = time.monotonic() - t0
    log = read_log(s)
    assert rc == 1, log
    assert 0.9 <= elapsed < 8 * SLOW, elapsed
    assert "exit timeout" in log
    c.join(timeout=5)
    assert c.status != 200


def test_second_signal_exits_immediately(repo, server_factory):
    timed_model(repo, "very_slow", 20000000)
    s = server_factory(repo, "--exit-timeout-secs=60")
    c = Client(s, "very_slow", 1.0)
    time.sleep(0.3 * SLOW)
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5 * SLOW)
    assert s.proc.poll() is None, "the drain should still be waiting for the request"
    t0 = time.monotonic()
    rc = s.stop(signal.SIGINT, timeout=10)
    assert rc == 1, read_log(s)
    assert time.monotonic() - t0 < 3 * SLOW
    c.join(timeout=5)


def test_requests_after_signal_are_refused(repo, server_factory):
    timed_model(repo, "slow", int(600000 * SLOW))
    s = server_factory(repo)
    c = Client(s, "slow", 1.0)
    time.sleep(0.2 * SLOW)
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1 * SLOW)
    try:
        r = s.post("/v2/models/slow/infer", body={"inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}, timeout=5)
        assert r.status != 200, "a request accepted after SIGTERM"
    except OSError:
        pass  # the listening socket is already closed
    c.join(timeout=10 * SLOW)
    assert c.status == 200, (c.error, s.log())
    assert s.wait_exit() == 0, s.log()
