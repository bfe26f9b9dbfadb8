"""The whole pipeline with real processes: `imagen submit` publishes jobs,
`imagen-worker` runs them against a real imagen-server over gRPC, on the
sqlite queue and on a real redis-server. Then the reliability rules: a
worker killed with SIGKILL loses no job and duplicates no output; a server
or redis restart loses nothing and fails nothing; bad inputs fail at once
with a clear message while the other jobs go on; SIGTERM finishes and acks
the job in hand.
"""
import json
import os
import random
import signal
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from conftest import SERVER_BIN, SLOW, WRAPPER, Server, free_port
from imageutil import BUNDLED_MODELS
from redisutil import RedisServer
from workerutil import run_worker, wait_until, worker_factory  # noqa: F401 (fixture)

CLI_BIN = os.environ.get("IMAGEN_CLI_BIN", os.path.join(os.path.dirname(SERVER_BIN), "imagen"))
QUEUES = ("sqlite", "redis")


def cli(*args, timeout=120.0):
    return subprocess.run(WRAPPER + [CLI_BIN] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout * SLOW)


def ok(*args, **kw):
    p = cli(*args, **kw)
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def photo_like(w, h, seed=0):
    """A smooth image with edges and texture, so every operation has work."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w * 200 + 30, y / h * 180 + 40, (x + y) / (w + h) * 120 + 60], axis=-1)
    img[h // 4:3 * h // 4, w // 3:2 * w // 3] = (220, 60, 40)  # a subject on a plain-ish background
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_photos(directory, n, w=160, h=120, ext="jpg"):
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = directory / f"p{i:03d}.{ext}"
        Image.fromarray(photo_like(w, h, i)).save(p, quality=90)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def server():
    s = Server(BUNDLED_MODELS)
    yield s
    assert s.stop() == 0, s.log()


@pytest.fixture(params=QUEUES)
def queue(request, tmp_path):
    """A fresh, empty queue URL of each kind."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path}/queue.db"
        return
    r = RedisServer(tmp_path / "redis")
    request.node.redis = r
    yield r.url()
    r.close()


@pytest.fixture
def workers(worker_factory):
    """Starts workers; at the end every one still running must drain and exit 0."""
    return worker_factory


def grpc_url(server):
    return f"grpc://127.0.0.1:{server.grpc_port}"


def submit(queue, op, inputs, out, *params, wait=False):
    args = ["submit", "--queue", queue, "--op", op, "--out", out]
    for p in params:
        args += ["--param", p]
    if wait:
        args.append("--wait")
    p = ok(*args, *inputs, timeout=300.0)
    return [line.split()[0] for line in p.stdout.splitlines()]


def job(queue, job_id):
    return json.loads(ok("status", "--queue", queue, "--json", job_id).stdout)


def all_jobs(queue):
    return json.loads(ok("jobs", "--queue", queue, "--json", "--limit", "100000").stdout)


def wait_all_final(queue, n, timeout=120.0):
    def final():
        js = all_jobs(queue)
        return js if len(js) == n and all(j["state"] in ("done", "failed", "dead") for j in js) else None
    return wait_until(final, timeout, interval=0.2, what=f"{n} jobs to finish")


def outputs_in(directory):
    """Result files, not the hidden temporary files of interrupted writes."""
    return sorted(p for p in os.listdir(directory) if not p.startswith("."))


# ---- end to end ------------------------------------------------------------------


def test_every_operation_end_to_end(server, queue, workers, tmp_path):
    photos = write_photos(tmp_path / "in", 2)
    png = tmp_path / "in" / "rgba.png"
    rgba = np.dstack([photo_like(96, 64, 7), np.full((64, 96), 255, np.uint8)])
    rgba[:, :20, 3] = 0  # a transparent strip the result must keep
    Image.fromarray(rgba, "RGBA").save(png)
    w = workers(queue, grpc_url(server), concurrency=2)
    expect = {}  # job id -> (op, input path)
    for op, params in (("upscale", ["scale=2"]), ("enhance", []), ("background_remove", []),
                       ("style_comic", ["colors=6"]), ("style_aged", ["seed=3", "format=webp"])):
        for jid in submit(queue, op, photos + [png], tmp_path / "out" / op, *params):
            expect[jid] = op
    jobs = {j["id"]: j for j in wait_all_final(queue, len(expect))}
    for jid, op in expect.items():
        j = jobs[jid]
        assert j["state"] == "done", j
        assert j["attempts"] == 1
        src = j["spec"]["input"]
        out = j["output"]
        assert os.path.dirname(out) == str(tmp_path / "out" / op)
        assert os.path.basename(out).startswith(os.path.basename(src).rsplit(".", 1)[0] + "." + jid + ".")
        im_in, im_out = Image.open(src), Image.open(out)
        factor = 2 if op == "upscale" else 1
        assert im_out.size == (im_in.size[0] * factor, im_in.size[1] * factor), (op, src)
        # Format: the job's, else the input's, PNG when the result has alpha.
        has_alpha = op == "background_remove" or src.endswith(".png")
        if op == "style_aged":
            assert im_out.format == "WEBP"
        elif has_alpha or src.endswith(".png"):
            assert im_out.format == "PNG" and im_out.mode == "RGBA", (op, src, im_out.mode)
        else:
            assert im_out.format == "JPEG", (op, src)
        if src.endswith("rgba.png") and op in ("enhance", "style_comic"):
            a = np.asarray(im_out)[..., 3]
            assert a[:, :20].max() == 0 and a[:, 20:].min() == 255  # the input's alpha kept
        t = j["timings"]
        for stage in ("fetch_ms", "decode_ms", "infer_ms", "encode_ms", "write_ms", "total_ms"):
            assert stage in t and t[stage] >= 0, (stage, t)
        assert t["total_ms"] >= t["infer_ms"]
    # Counts by operation, and the worker's own metrics agree.
    counts = {c["op"]: c for c in json.loads(ok("queues", "--queue", queue, "--json").stdout)}
    assert all(counts[op]["done"] == 3 and counts[op]["queued"] == 0 for op in set(expect.values()))
    assert w.jobs_total("upscale", "done") == 3
    assert w.healthz()[0] == 200


def test_submit_wait_and_inline_input(server, workers, tmp_path):
    queue = f"sqlite://{tmp_path}/queue.db"
    (photo,) = write_photos(tmp_path / "in", 1, 64, 48, "png")
    workers(queue, grpc_url(server), ops=["enhance"])
    p = ok("submit", "--queue", queue, "--op", "enhance", "--inline", "--wait", "--out", tmp_path / "out", photo)
    jid, op, state = p.stdout.split()[:3]
    assert (op, state) == ("enhance", "done")
    out = job(queue, jid)["output"]
    assert Image.open(out).size == (64, 48)


# ---- reliability ------------------------------------------------------------------


@pytest.mark.heavy  # many jobs or a 4800x3600 result; timing-sensitive under valgrind
@pytest.mark.parametrize("kills", [1, 3])
def test_worker_killed_mid_jobs_loses_and_duplicates_nothing(server, queue, workers, tmp_path, kills):
    n = 24
    photos = write_photos(tmp_path / "in", n, 320, 240)
    ids = submit(queue, "upscale", photos, tmp_path / "out", "scale=3")
    done_before = 0
    for k in range(kills):
        # Short leases so the killed worker's jobs come back quickly.
        w = workers(queue, grpc_url(server), ops=["upscale"], concurrency=2, args=["--lease-seconds=1"],
                    name=f"doomed-{k}")
        target = done_before + max(1, (n - done_before) // (kills + 1 - k) // 2)
        w.wait_metric("imagen_worker_jobs_total", {"op": "upscale", "result": "done"},
                      lambda v, t=target - done_before: v >= t, timeout=120)
        w.kill()
        done_before = sum(j["state"] == "done" for j in all_jobs(queue))
    workers(queue, grpc_url(server), ops=["upscale"], concurrency=2, name="survivor")
    jobs = wait_all_final(queue, n, timeout=180)
    assert sorted(j["id"] for j in jobs) == sorted(ids)
    assert all(j["state"] == "done" for j in jobs), [j for j in jobs if j["state"] != "done"]
    # Exactly one output per job, named by the job, whatever was redelivered.
    files = outputs_in(tmp_path / "out")
    assert len(files) == n
    assert sorted(f.split(".")[1] for f in files) == sorted(ids)
    for j in jobs:
        assert Image.open(j["output"]).size == (960, 720)
    # Attempts are recorded: every job at least once; kill -9 mid-job makes
    # some run again unless every kill landed between jobs.
    assert all(j["attempts"] >= 1 for j in jobs)
    assert sum(j["attempts"] for j in jobs) >= n


@pytest.mark.heavy  # many jobs or a 4800x3600 result; timing-sensitive under valgrind
def test_server_down_while_jobs_queued(queue, workers, tmp_path):
    ports = tuple(free_port() for _ in range(3))
    s = Server(BUNDLED_MODELS, ports=ports)
    w = workers(queue, f"grpc://127.0.0.1:{ports[1]}", ops=["enhance"], concurrency=2)
    s.stop()
    ids = submit(queue, "enhance", write_photos(tmp_path / "in", 6), tmp_path / "out")
    w.wait_metric("imagen_worker_server_available", {}, lambda v: v == 0, timeout=30)
    time.sleep(1.5 * SLOW)  # a real outage: several of the worker's retries
    js = all_jobs(queue)
    assert not any(j["state"] in ("failed", "dead") for j in js), js
    s2 = Server(BUNDLED_MODELS, ports=ports)
    try:
        jobs = wait_all_final(queue, len(ids), timeout=60)
        assert all(j["state"] == "done" for j in jobs), jobs
        assert all(j["attempts"] == 1 for j in jobs), "an outage must not use up attempts"
        assert w.jobs_total("enhance", "failed") == 0
    finally:
        assert w.stop() == 0, w.log()
        assert s2.stop() == 0


@pytest.mark.heavy  # many jobs or a 4800x3600 result; timing-sensitive under valgrind
def test_redis_restarted_mid_run_loses_no_job(server, workers, tmp_path):
    r = RedisServer(tmp_path / "redis")
    try:
        queue = r.url()
        n = 20
        ids = submit(queue, "style_aged", write_photos(tmp_path / "in", n, 256, 192), tmp_path / "out")
        w = workers(queue, grpc_url(server), ops=["style_aged"], concurrency=2)
        w.wait_metric("imagen_worker_jobs_total", {"op": "style_aged", "result": "done"}, lambda v: v >= 3,
                      timeout=60)
        r.restart("kill")  # a crash; the AOF (fsync always) holds every acknowledged write
        jobs = wait_all_final(queue, n, timeout=120)
        assert sorted(j["id"] for j in jobs) == sorted(ids)
        assert all(j["state"] == "done" for j in jobs), jobs
        assert len(outputs_in(tmp_path / "out")) == n
        assert w.stop() == 0, w.log()
    finally:
        r.close()


def test_bad_inputs_fail_clearly_and_the_rest_go_on(server, queue, workers, tmp_path):
    d = tmp_path / "in"
    good = write_photos(d, 2, 96, 64)
    corrupt = d / "corrupt.jpg"
    corrupt.write_bytes(bytes(random.Random(1).getrandbits(8) for _ in range(5000)))
    whole = d / "whole.png"
    Image.fromarray(photo_like(200, 150)).save(whole)
    truncated = d / "truncated.png"
    truncated.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])
    huge = d / "huge.png"  # 108 megapixels, beyond the models' 100
    Image.new("L", (12000, 9000), 128).save(huge)
    closed_port = free_port()
    w = workers(queue, grpc_url(server), ops=["enhance"], args=["--max-attempts=2"])
    expect = {}
    for path, needle in ((corrupt, "corrupt.jpg"), (truncated, "truncated.png"), (huge, "megapixels")):
        (jid,) = submit(queue, "enhance", [path], tmp_path / "out")
        expect[jid] = ("failed", needle, 1)
    (jid,) = submit(queue, "enhance", ["http://nonexistent.invalid/x.jpg"], tmp_path / "out")
    expect[jid] = ("failed", "nonexistent.invalid", 1)
    (jid,) = submit(queue, "enhance", [f"http://127.0.0.1:{closed_port}/x.jpg"], tmp_path / "out")
    expect[jid] = ("dead", f"127.0.0.1:{closed_port}", 2)  # refused: transient, retried with backoff, then dead
    for jid in submit(queue, "enhance", good, tmp_path / "out"):
        expect[jid] = ("done", None, 1)
    jobs = {j["id"]: j for j in wait_all_final(queue, len(expect), timeout=120)}
    for jid, (state, needle, attempts) in expect.items():
        j = jobs[jid]
        assert j["state"] == state, j
        assert j["attempts"] == attempts, j  # no retry storm: permanent failures run once
        if needle:
            assert needle in j["error"], j
    assert len(outputs_in(tmp_path / "out")) == 2
    assert w.jobs_total("enhance", "failed") == 4
    p = cli("status", "--queue", queue, next(i for i, e in expect.items() if e[0] == "failed"))
    assert p.returncode == 1 and "error:" in p.stdout


@pytest.mark.heavy  # many jobs or a 4800x3600 result; timing-sensitive under valgrind
def test_sigterm_finishes_and_acks_the_job_in_hand(server, queue, workers, tmp_path):
    (big,) = write_photos(tmp_path / "in", 1, 1200, 900)
    w = workers(queue, grpc_url(server), ops=["upscale"])
    (jid,) = submit(queue, "upscale", [big], tmp_path / "out", "scale=4")
    wait_until(lambda: job(queue, jid)["state"] == "running", 30, what="the job to start")
    w.send_signal(signal.SIGTERM)
    wait_until(lambda: w.healthz()[0] == 503 if w.running() else True, 10, what="/healthz to say draining")
    assert w.stop() == 0, w.log()
    j = job(queue, jid)
    assert j["state"] == "done" and j["attempts"] == 1, j
    assert Image.open(j["output"]).size == (4800, 3600)


def test_sigterm_while_idle_exits_at_once(workers, tmp_path):
    w = workers(f"sqlite://{tmp_path}/queue.db", "grpc://127.0.0.1:1")
    t0 = time.time()
    assert w.stop() == 0
    assert time.time() - t0 < 5 * SLOW


# ---- the program ------------------------------------------------------------------


def test_worker_flags(tmp_path):
    p = run_worker("--help")
    assert p.returncode == 0
    for flag in ("--ops", "--queue", "--server", "--concurrency", "--max-attempts", "--lease-seconds",
                 "--metrics-port", "--check-config"):
        assert flag in p.stdout
    p = run_worker("--ops=upscale,sharpen", "--check-config")
    assert p.returncode == 2 and "sharpen" in p.stderr
    p = run_worker("--concurrency=0", "--check-config")
    assert p.returncode == 2 and "concurrency" in p.stderr
    p = run_worker("--queue=mysql://x", "--check-config")
    assert p.returncode == 2 and "mysql://x" in p.stderr
    p = run_worker(f"--queue=sqlite://{tmp_path}/q.db", "--ops=upscale,enhance", "--concurrency=3",
                   "--check-config")
    assert p.returncode == 0, p.stderr
    assert "upscale,enhance" in p.stdout and "3" in p.stdout
    assert not os.path.exists(tmp_path / "q.db")  # --check-config opens nothing
