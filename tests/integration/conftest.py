"""Shared fixtures for the integration suite.

Every test talks to a real `imagen-server` process started on free ports
with a model repository the test writes into a temporary directory.

Environment:
  IMAGEN_SERVER_BIN   path of the server binary (default: build/imagen-server)
  IMAGEN_TEST_WRAPPER command prefix, e.g. "valgrind --error-exitcode=99 ..."
"""
import http.client
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVER_BIN = os.environ.get("IMAGEN_SERVER_BIN", os.path.join(ROOT, "build", "imagen-server"))
WRAPPER = shlex.split(os.environ.get("IMAGEN_TEST_WRAPPER", ""))
# Valgrind makes start-up and every request many times slower.
SLOW = 20.0 if WRAPPER else 1.0


def pytest_configure(config):
    config.addinivalue_line("markers", "timing: compares durations against fixed bounds; skipped under a "
                            "wrapper such as valgrind, which slows the server by a factor the test cannot know")
    config.addinivalue_line("markers", "heavy: processes whole photos or many jobs; skipped under valgrind, "
                            "where one photo takes minutes (the ASan run still covers it)")


def pytest_collection_modifyitems(config, items):
    if not WRAPPER:
        return
    skip = pytest.mark.skip(reason="timing bounds do not hold under " + WRAPPER[0])
    skip_heavy = pytest.mark.skip(reason="whole-photo processing is too slow under " + WRAPPER[0])
    for item in items:
        if "timing" in item.keywords:
            item.add_marker(skip)
        elif "heavy" in item.keywords:
            item.add_marker(skip_heavy)


def free_ports(count):
    """`count` distinct free ports: every socket stays open until all are
    chosen, so the kernel cannot hand the same port out twice."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port():
    return free_ports(1)[0]


def write_model(repo, name, config, versions=(1,), files=None):
    """Creates <repo>/<name>/config.pbtxt and numeric version folders.

    files: optional {relative path: bytes or str} written under the model dir.
    config None writes no config.pbtxt.
    """
    mdir = os.path.join(str(repo), name)
    os.makedirs(mdir, exist_ok=True)
    if config is not None:
        with open(os.path.join(mdir, "config.pbtxt"), "w") as f:
            f.write(config)
    for v in versions:
        os.makedirs(os.path.join(mdir, str(v)), exist_ok=True)
    for rel, data in (files or {}).items():
        path = os.path.join(mdir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
    return mdir


def identity_config(name="identity", dtype="TYPE_INT32", dims="[ -1 ]", max_batch_size=8, extra=""):
    return f"""
name: "{name}"
backend: "imageops"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT0" data_type: {dtype} dims: {dims} }} ]
output [ {{ name: "OUTPUT0" data_type: {dtype} dims: {dims} }} ]
parameters {{ key: "operation" value: {{ string_value: "identity" }} }}
{extra}
"""


def metric_value(text, name, labels):
    """Value of sample `name{labels}` in Prometheus text; labels is a dict that
    must match exactly. None when there is no such sample."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if got == labels:
            return float(m.group(4))
    return None


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


class Server:
    """A running imagen-server process."""

    def __init__(self, repo, args=(), env=None, wait_ready=True, expect_fail=False, ports=None):
        """ports: (http, grpc, metrics) to reuse, e.g. to restart a server
        where its clients expect it; default three free ports."""
        self.repo = str(repo)
        self.http_port, self.grpc_port, self.metrics_port = ports or free_ports(3)
        self.log_path = tempfile.mktemp(prefix="imagen-server-", suffix=".log")
        cmd = WRAPPER + [
            SERVER_BIN,
            f"--model-repository={self.repo}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--http-address=127.0.0.1",
        ] + list(args)
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=full_env)
        self.returncode = None
        if expect_fail:
            return
        self._wait_live(ready=wait_ready)

    # -- lifecycle --------------------------------------------------------
    def _wait_live(self, ready, timeout=20.0):
        deadline = time.time() + timeout * SLOW
        path = "/v2/health/ready" if ready else "/v2/health/live"
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"imagen-server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                r = self.request("GET", path, timeout=1.0 * SLOW)
                if r.status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"imagen-server did not become {'ready' if ready else 'live'}:\n{self.log()}")

    def log(self):
        if not self.logf.closed:
            self.logf.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("imagen-server did not exit on " + str(sig))
        self.returncode = self.proc.returncode
        self.logf.close()
        return self.returncode

    def wait_exit(self, timeout=20.0):
        self.returncode = self.proc.wait(timeout=timeout * SLOW)
        return self.returncode

    # -- HTTP helpers -----------------------------------------------------
    def request(self, method, path, body=None, headers=None, port=None, timeout=30.0):
        conn = http.client.HTTPConnection("127.0.0.1", port or self.http_port, timeout=timeout * SLOW)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            elif isinstance(body, str):
                body = body.encode()
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Response(r.status, r.getheaders(), r.read())
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def metrics(self):
        r = self.request("GET", "/metrics", port=self.metrics_port)
        assert r.status == 200, r.body
        return r.body.decode()


@pytest.fixture
def repo(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    return d


@pytest.fixture
def server_factory():
    """server_factory(repo, *args, env=None, wait_ready=True, expect_fail=False) -> Server.

    Every server still running at the end of the test gets SIGTERM and must
    exit with status 0 (graceful shutdown is part of every test)."""
    servers = []

    def make(repo, *args, **kw):
        s = Server(repo, args, **kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        if s.proc.poll() is None:
            rc = s.stop()
            assert rc == 0, f"server exit status {rc}:\n{s.log()}"
        elif s.returncode is None:
            s.returncode = s.proc.returncode
        if WRAPPER and s.returncode == 0 and "valgrind" in WRAPPER[0]:
            # The leak summary proves the wrapper really ran; definite leaks
            # already turned the exit status non-zero (--error-exitcode).
            log = s.log()
            assert "definitely lost: 0 bytes" in log or "All heap blocks were freed" in log, log
