"""imagen-worker as a real process for the pipeline and reliability tests.

Worker starts `imagen-worker` with its /healthz and /metrics on a free
loopback port, its log in a temporary file, and waits until it answers
/healthz (so the job loop is running). Tests then stop it with a signal
(stop: SIGTERM and wait, kill: SIGKILL), read its log and its metrics, and
poll until something holds (wait_until, wait_log, wait_metric) rather than
sleeping.

The `worker_factory` fixture makes workers and, at teardown, stops every one
still running with SIGTERM and requires exit status 0 (a clean drain is part
of every test); import it into a test module to use it.

Environment:
  IMAGEN_WORKER_BIN   path of the worker binary (default: next to
                      IMAGEN_SERVER_BIN, i.e. build/imagen-worker)
"""
import http.client
import os
import re
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import SERVER_BIN, SLOW, WRAPPER, free_port, metric_value

WORKER_BIN = os.environ.get("IMAGEN_WORKER_BIN", os.path.join(os.path.dirname(SERVER_BIN), "imagen-worker"))

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


def wait_until(predicate, timeout=30.0, interval=0.02, what="condition"):
    """Polls predicate() until it returns a true value (returned) or the
    timeout (scaled by SLOW) passes (AssertionError naming `what`)."""
    deadline = time.time() + timeout * SLOW
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout * SLOW:.1f} s waiting for {what}")
        time.sleep(interval)


def run_worker(*args, env=None, timeout=30.0):
    """Runs imagen-worker to completion (for --help, --check-config, usage
    errors); returns the CompletedProcess with text stdout/stderr."""
    return subprocess.run(WRAPPER + [WORKER_BIN] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout * SLOW, env=env)


class Worker:
    """A running imagen-worker process.

    queue_url: the queue (sqlite:///... or redis://...); server_url: the
    gRPC URL of imagen-server (e.g. f"grpc://127.0.0.1:{server.grpc_port}");
    ops: list of operation names (None = the worker's default, all);
    args: further flags. metrics=False runs without the HTTP endpoint
    (readiness is then read from the log)."""

    def __init__(self, queue_url, server_url, ops=None, concurrency=1, args=(), env=None, metrics=True,
                 wait_ready=True, name=None):
        self.queue_url = queue_url
        self.metrics_port = free_port() if metrics else 0
        self.log_path = tempfile.mktemp(prefix="imagen-worker-", suffix=".log")
        cmd = WRAPPER + [
            WORKER_BIN,
            f"--queue={queue_url}",
            f"--server={server_url}",
            f"--concurrency={concurrency}",
            f"--metrics-port={self.metrics_port}",
            "--metrics-address=127.0.0.1",
        ]
        if ops:
            cmd.append("--ops=" + ",".join(ops))
        if name:
            cmd.append(f"--name={name}")
        cmd += [str(a) for a in args]
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.started_at = time.time()
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=full_env)
        self.pid = self.proc.pid
        self.returncode = None
        if wait_ready:
            self.wait_ready()

    # -- lifecycle --------------------------------------------------------
    def wait_ready(self, timeout=20.0):
        """Waits until /healthz answers 200 (or, without metrics, until the
        log says "worker ready"). Fails at once if the process exits."""
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"imagen-worker exited with {self.proc.returncode}:\n{self.log()}")
            if self.metrics_port:
                try:
                    return self.healthz()[0] == 200
                except OSError:
                    return False
            return "worker ready" in self.log()
        wait_until(ready, timeout, what="imagen-worker to become ready")
        return self

    def running(self):
        return self.proc.poll() is None

    def send_signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=60.0):
        """Sends `sig` (SIGTERM: drain, finish and ack the jobs in hand) and
        waits for the exit; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"imagen-worker did not exit on {sig}:\n{self.log()}")
        return self._finish()

    def kill(self):
        """SIGKILL: the worker vanishes mid-job; its leases must expire."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return self._finish()

    def wait_exit(self, timeout=30.0):
        self.proc.wait(timeout=timeout * SLOW)
        return self._finish()

    def _finish(self):
        self.returncode = self.proc.returncode
        if not self.logf.closed:
            self.logf.close()
        return self.returncode

    # -- log ----------------------------------------------------------------
    def log(self):
        if not self.logf.closed:
            self.logf.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_log(self, pattern, timeout=30.0):
        """Waits until the log matches the regular expression; returns the match."""
        rx = re.compile(pattern)
        return wait_until(lambda: rx.search(self.log()), timeout, what=f"worker log to match {pattern!r}")

    def ready_ms(self):
        """Milliseconds from process start to the first pull, as the worker
        logged it ("worker ready in X ms")."""
        m = self.wait_log(r"worker ready in ([0-9.]+) ms")
        return float(m.group(1))

    def job_lines(self):
        """The per-job log lines as dicts: id, op, state, total_ms, attempts."""
        out = []
        for m in re.finditer(r"job ([0-9a-f]{24}) op=(\S+) state=(\S+) total_ms=([0-9.]+) attempts=(\d+)",
                             self.log()):
            out.append({"id": m.group(1), "op": m.group(2), "state": m.group(3), "total_ms": float(m.group(4)),
                        "attempts": int(m.group(5))})
        return out

    # -- HTTP: /healthz and /metrics ---------------------------------------
    def _get(self, path, timeout=10.0):
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=timeout * SLOW)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read().decode(errors="replace")
        finally:
            conn.close()

    def healthz(self):
        """(status, body): (200, "ok\\n") while running, (503, "draining\\n") after SIGTERM."""
        return self._get("/healthz")

    def metrics(self):
        status, body = self._get("/metrics")
        assert status == 200, body
        return body

    def metric(self, name, labels=None):
        """The value of one sample, or None when absent."""
        return metric_value(self.metrics(), name, labels or {})

    def jobs_total(self, op, result):
        """imagen_worker_jobs_total{op,result} (0 when absent)."""
        return self.metric("imagen_worker_jobs_total", {"op": op, "result": result}) or 0.0

    def wait_metric(self, name, labels, predicate, timeout=30.0):
        """Polls /metrics until predicate(value) holds; returns the value."""
        def check():
            v = self.metric(name, labels)
            return (v,) if v is not None and predicate(v) else None
        return wait_until(check, timeout, what=f"{name}{labels} to satisfy the predicate")[0]

    # -- resources --------------------------------------------------------------
    def rss_kib(self):
        """VmRSS of the process in KiB (from /proc)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return None


@pytest.fixture
def worker_factory():
    """worker_factory(queue_url, server_url, ops=None, concurrency=1, args=(), ...) -> Worker.

    Every worker still running at the end of the test gets SIGTERM and must
    exit with status 0."""
    workers = []

    def make(*args, **kw):
        w = Worker(*args, **kw)
        workers.append(w)
        return w

    yield make
    for w in workers:
        if w.running():
            rc = w.stop()
            assert rc == EXIT_OK, f"worker exit status {rc}:\n{w.log()}"
        else:
            w._finish()
