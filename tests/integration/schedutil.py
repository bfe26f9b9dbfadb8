"""Helpers for the scheduler, repository and config-file integration tests:
imageops model configs, concurrent inference clients that record when and in
which order they finished, statistics and metrics readers, and polling."""
import json
import socket
import threading
import time

from conftest import SLOW, metric_value, write_model  # noqa: F401  (re-exported for the tests)


# ---------------------------------------------------------------------------
# Model configs
# ---------------------------------------------------------------------------

def op_config(name, operation, max_batch_size=8, dtype="TYPE_INT32", dims="[ -1 ]", extra="", params=None):
    """An imageops model with one INPUT0 -> OUTPUT0 pair and `operation`."""
    lines = [f'parameters {{ key: "operation" value: {{ string_value: "{operation}" }} }}']
    for k, v in (params or {}).items():
        lines.append(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}')
    return f"""
name: "{name}"
backend: "imageops"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT0" data_type: {dtype} dims: {dims} }} ]
output [ {{ name: "OUTPUT0" data_type: {dtype} dims: {dims} }} ]
{chr(10).join(lines)}
{extra}
"""


def timed_config(name, fixed_us=20000, per_item_us=0, max_batch_size=8, dims="[ -1 ]", extra=""):
    """An imageops `timed` model: identity that sleeps
    fixed_us + per_item_us x (sum of the batch's request batch sizes)."""
    # Under valgrind (SLOW > 1) everything the client waits for is scaled;
    # the model's own execution time scales with it so orderings hold.
    params = {"fixed_us": int(fixed_us * SLOW)}
    if per_item_us:
        params["per_item_us"] = int(per_item_us * SLOW)
    return op_config(name, "timed", max_batch_size=max_batch_size, dims=dims, extra=extra, params=params)


def identity_model(repo, name, max_batch_size=8, dims="[ -1 ]", extra="", versions=(1,)):
    return write_model(repo, name, op_config(name, "identity", max_batch_size=max_batch_size, dims=dims,
                                             extra=extra), versions=versions)


def timed_model(repo, name, fixed_us=20000, per_item_us=0, max_batch_size=8, dims="[ -1 ]", extra="",
                versions=(1,)):
    return write_model(repo, name, timed_config(name, fixed_us, per_item_us, max_batch_size, dims, extra),
                       versions=versions)


# ---------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------

def infer_body(batch=1, width=2, value=1, params=None, batched=True):
    """An INT32 INPUT0 of shape [batch, width] (or [width] when not batched)
    filled with `value`, so every response can be matched to its request."""
    shape = [batch, width] if batched else [width]
    n = batch * width if batched else width
    body = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": shape, "data": [value] * n}]}
    if params:
        body["parameters"] = params
    return body


def infer(server, model, batch=1, width=2, value=1, params=None, version=None, batched=True, timeout=30.0):
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version is not None else "") + "/infer"
    return server.post(path, body=infer_body(batch, width, value, params, batched), timeout=timeout)


def assert_echo(resp, batch=1, width=2, value=1, batched=True):
    """The response of an identity/timed model to infer_body(batch, width, value)."""
    assert resp.status == 200, (resp.status, resp.body)
    out = resp.json()["outputs"][0]
    assert out["name"] == "OUTPUT0", out
    assert out["shape"] == ([batch, width] if batched else [width]), out
    assert out["data"] == [value] * (batch * width if batched else width), out


def assert_error(resp, status, *fragments):
    assert resp.status == status, (resp.status, resp.body)
    body = resp.json()
    assert set(body.keys()) == {"error"}, body
    for frag in fragments:
        assert frag in body["error"], (frag, body["error"])


class Call(threading.Thread):
    """One inference request on its own thread.

    Records the response, monotonic start/end times and, through the shared
    `order` list, the position in which it completed."""

    def __init__(self, server, model, tag, order=None, batch=1, width=2, value=None, params=None,
                 version=None, batched=True, start=True):
        super().__init__(daemon=True)
        self.server, self.model, self.tag = server, model, tag
        self.order = order if order is not None else []
        self.batch, self.width, self.params, self.version, self.batched = batch, width, params, version, batched
        self.value = value if value is not None else (tag if isinstance(tag, int) else 1)
        self.resp = None
        self.error = None
        self.t_start = self.t_end = None
        if start:
            self.start()

    def run(self):
        self.t_start = time.monotonic()
        try:
            self.resp = infer(self.server, self.model, self.batch, self.width, self.value, self.params,
                              self.version, self.batched, timeout=60.0)
        except Exception as e:  # noqa: BLE001 - reported by result()
            self.error = e
        self.t_end = time.monotonic()
        self.order.append(self.tag)

    def result(self, timeout=30.0):
        self.join(timeout * SLOW)
        assert not self.is_alive(), f"request {self.tag!r} did not complete"
        assert self.error is None, (self.tag, self.error)
        return self.resp

    @property
    def elapsed(self):
        return self.t_end - self.t_start

    def done(self):
        return self.t_end is not None


# ---------------------------------------------------------------------------
# Statistics and metrics
# ---------------------------------------------------------------------------

def model_stats(server, model, version=None):
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version is not None else "") + "/stats"
    r = server.get(path)
    assert r.status == 200, (r.status, r.body)
    stats = r.json()["model_stats"]
    assert len(stats) == 1, stats
    return stats[0]


def batch_sizes(server, model, version=None):
    """{executed batch size: number of executions} from /stats batch_stats."""
    st = model_stats(server, model, version)
    return {b["batch_size"]: b["compute_infer"]["count"] for b in st["batch_stats"]}


def model_metric(server, name, model, version="1", **labels):
    labels.update(model=model, version=str(version))
    return metric_value(server.metrics(), name, labels)


def failures(server, model, reason, version="1"):
    return model_metric(server, "nv_inference_request_failure", model, version, reason=reason)


def wait_for(pred, timeout=5.0, interval=0.02, what="condition"):
    """Polls pred() until it returns a truthy value; returns it or fails."""
    deadline = time.monotonic() + timeout * SLOW
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last value {last!r})")


def wait_pending(server, model, n, version="1", timeout=5.0):
    """Waits until `n` requests of the model are queued (accepted but not yet
    started: nv_inference_pending_request_count)."""
    wait_for(lambda: model_metric(server, "nv_inference_pending_request_count", model, version) == n,
             timeout=timeout, interval=0.01, what=f"{n} pending requests of '{model}'")


def submit_in_order(server, model, specs, order):
    """Starts one Call per spec (a dict of Call keyword arguments with at
    least 'tag'), each only once the previous one is queued, so queue order
    equals submission order. It does not wait after the last one: that one
    may end an IMAGEN_DELAY_SCHEDULER hold and start execution at once."""
    calls = []
    base = int(model_metric(server, "nv_inference_pending_request_count", model) or 0)
    for i, spec in enumerate(specs):
        calls.append(Call(server, model, order=order, **spec))
        if i + 1 < len(specs):
            wait_pending(server, model, base + i + 1)
    return calls


def start_blocker(server, model, batch=1, order=None, tag="blocker", settle=0.1):
    """Starts a request that keeps the model's only instance busy, and waits
    until it has left the queue (is executing)."""
    c = Call(server, model, tag, order, batch=batch)
    time.sleep(settle * SLOW)
    wait_pending(server, model, 0)
    assert not c.done(), "the blocking request finished too early for the test to mean anything"
    return c


# ---------------------------------------------------------------------------
# Repository
# ---------------------------------------------------------------------------

def repo_index(server, body=None):
    r = server.post("/v2/repository/index", body=body if body is not None else b"")
    assert r.status == 200, (r.status, r.body)
    return r.json()


def index_entries(server, name):
    return [e for e in repo_index(server) if e.get("name") == name]


def ready_versions(server, name):
    return sorted(int(e["version"]) for e in index_entries(server, name) if e.get("state") == "READY")


def index_entry(server, name):
    """The single index entry of a model that has one version entry."""
    entries = index_entries(server, name)
    assert len(entries) == 1, entries
    return entries[0]


def model_config(server, name):
    r = server.get(f"/v2/models/{name}/config")
    assert r.status == 200, (r.status, r.body)
    return r.json()


def raw_infer(port, model, body):
    """Sends an infer request on a raw socket and returns the open socket
    without reading the response; closing it plays a client that gives up
    while its request is queued."""
    payload = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
    s.sendall((f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload)
    return s
