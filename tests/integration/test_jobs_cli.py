"""The job commands of `imagen` (submit, status, jobs, requeue, queues) on a
real queue, without a worker: what is published, what is refused before
anything is published, how jobs are listed and counted, and the default
queue URL. The pipeline tests (test_pipeline.py) run the same commands with
workers.
"""
import json
import os
import subprocess

import pytest
from PIL import Image

from conftest import SERVER_BIN, SLOW, WRAPPER

CLI_BIN = os.environ.get("IMAGEN_CLI_BIN", os.path.join(os.path.dirname(SERVER_BIN), "imagen"))
EXIT_OK, EXIT_SERVER, EXIT_USAGE, EXIT_CONNECT, EXIT_FILE = 0, 1, 2, 3, 4


def cli(*args, env=None, timeout=60.0):
    return subprocess.run(WRAPPER + [CLI_BIN] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout * SLOW, env=env)


def ok(*args, **kw):
    p = cli(*args, **kw)
    assert p.returncode == EXIT_OK, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


@pytest.fixture
def queue(tmp_path):
    return f"sqlite://{tmp_path}/q/queue.db"


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for name, size in (("b", (40, 30)), ("a", (20, 20))):
        Image.new("RGB", size, (200, 100, 50)).save(d / f"{name}.png")
    (d / "notes.txt").write_text("not an image")
    return d


def jobs(queue, *extra):
    return json.loads(ok("jobs", "--queue", queue, "--json", *extra).stdout)


def test_submit_directory_publishes_a_job_per_image(queue, photos, tmp_path):
    p = ok("submit", "--queue", queue, "--op", "upscale", "--param", "scale=3", "--param", "format=webp",
           "--out", tmp_path / "out" / "deep", photos)
    lines = [ln.split(" ", 2) for ln in p.stdout.splitlines()]
    # Directory entries in name order; text files skipped.
    assert [ln[2] for ln in lines] == [str(photos / "a.png"), str(photos / "b.png")]
    assert all(ln[1] == "upscale" and len(ln[0]) == 24 for ln in lines)
    assert (tmp_path / "out" / "deep").is_dir()  # made like mkdir -p
    listed = jobs(queue)
    assert {j["id"] for j in listed} == {ln[0] for ln in lines}
    j = listed[0]
    assert j["state"] == "queued" and j["attempts"] == 0
    assert j["spec"]["params"] == {"scale": 3}
    assert j["spec"]["format"] == "webp"
    assert j["spec"]["output"] == str(tmp_path / "out" / "deep")

    st = ok("status", "--queue", queue, lines[0][0])
    assert f"id:        {lines[0][0]}" in st.stdout
    assert "state:     queued" in st.stdout
    q = ok("queues", "--queue", queue, "--json")
    assert json.loads(q.stdout) == [{"op": "upscale", "queued": 2, "running": 0, "done": 0, "failed": 0,
                                     "dead": 0}]


def test_inline_input_carries_the_bytes(queue, photos, tmp_path):
    ok("submit", "--queue", queue, "--op", "enhance", "--inline", "--out", tmp_path, photos / "a.png")
    j = jobs(queue)[0]
    # The listing does not print the bytes, only how many there are.
    assert "input_data" not in j["spec"]
    assert j["spec"]["input_data_bytes"] >= os.path.getsize(photos / "a.png")
    assert j["spec"]["input_name"] == str(photos / "a.png")


@pytest.mark.parametrize("args, needle", [
    (["--op", "sharpen"], "unknown operation 'sharpen'"),
    ([], "--op is required"),
    (["--op", "upscale", "--param", "scale=5"], "scale=5 is out of range [2, 4]"),
    (["--op", "upscale", "--param", "strength=1"], "upscale has no parameter 'strength'"),
    (["--op", "upscale", "--param", "scale"], "--param wants NAME=VALUE"),
    (["--op", "background_remove", "--param", "format=jpeg"], "cannot hold the alpha channel"),
    (["--op", "enhance", "--param", "quality=101"], "quality '101'"),
])
def test_bad_submissions_publish_nothing(queue, photos, args, needle):
    p = cli("submit", "--queue", queue, *args, photos)
    assert p.returncode == EXIT_USAGE, p.stderr
    assert needle in p.stderr
    assert p.stdout == ""
    assert cli("jobs", "--queue", queue, "--json").stdout.strip() in ("", "[]")


def test_missing_input_and_bad_queue(queue, tmp_path, photos):
    p = cli("submit", "--queue", queue, "--op", "enhance", tmp_path / "nope.jpg")
    assert p.returncode == EXIT_FILE and "nope.jpg" in p.stderr
    p = cli("submit", "--queue", queue, "--op", "enhance", tmp_path)  # a directory without images
    assert p.returncode == EXIT_FILE and "has no image files" in p.stderr
    p = cli("submit", "--queue", "mysql://x", "--op", "enhance", photos)
    assert p.returncode == EXIT_USAGE and "queue URL 'mysql://x' is not supported" in p.stderr
    p = cli("submit", "--queue", queue, "--op", "enhance", "--out", "https://bucket/x", photos)
    assert p.returncode == EXIT_USAGE and "an output URL takes one input" in p.stderr


def test_jobs_filters_and_status_errors(queue, photos, tmp_path):
    ok("submit", "--queue", queue, "--op", "enhance", "--out", tmp_path, photos)
    ok("submit", "--queue", queue, "--op", "style_comic", "--param", "colors=4", "--out", tmp_path, photos / "a.png")
    assert len(jobs(queue)) == 3
    assert [j["op"] for j in jobs(queue, "--op", "style_comic")] == ["style_comic"]
    assert len(jobs(queue, "--limit", "1")) == 1
    assert jobs(queue, "--state", "done") == []
    assert len(jobs(queue, "--state", "queued")) == 3
    p = cli("jobs", "--queue", queue, "--state", "finished")
    assert p.returncode == EXIT_USAGE and "unknown state 'finished'" in p.stderr
    p = cli("status", "--queue", queue, "0" * 24)
    assert p.returncode == EXIT_SERVER and "0" * 24 in p.stderr
    # Only failed or dead jobs can be requeued.
    queued = jobs(queue)[0]["id"]
    p = cli("requeue", "--queue", queue, queued)
    assert p.returncode == EXIT_SERVER and queued in p.stderr
    p = ok("requeue", "--queue", queue, "--dead")
    assert p.stdout.strip() == "requeued 0 dead jobs"
    p = cli("requeue", "--queue", queue)
    assert p.returncode == EXIT_USAGE


def test_default_queue_is_imagen_queue_then_the_data_directory(photos, tmp_path):
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    env.pop("IMAGEN_QUEUE", None)
    env.pop("XDG_DATA_HOME", None)
    ok("submit", "--op", "enhance", "--out", tmp_path, photos / "a.png", env=env)
    assert (tmp_path / "home" / ".local" / "share" / "imagen" / "queue.db").is_file()
    env["IMAGEN_QUEUE"] = f"sqlite://{tmp_path}/env/queue.db"
    ok("submit", "--op", "enhance", "--out", tmp_path, photos / "a.png", env=env)
    assert (tmp_path / "env" / "queue.db").is_file()
    assert len(json.loads(ok("jobs", "--json", env=env).stdout)) == 1


def test_help_lists_the_job_commands():
    p = ok("--help")
    for cmd in ("submit", "status", "jobs", "requeue", "queues"):
        assert f"  {cmd} " in p.stdout
    p = ok("submit", "--help")
    assert "--param NAME=VALUE" in p.stdout and "--queue URL" in p.stdout
