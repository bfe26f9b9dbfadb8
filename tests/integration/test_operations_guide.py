"""docs/operations.md is executable: its commands must be ones the project
really supports, and the log lines it quotes must be what the programs log.

The guide marks every `sh` block (see its introduction):
  <!-- test: run -->                  run here against a real server and worker
  <!-- test: run expect="REGEX" -->   ... and the output must match REGEX
  <!-- test: skip (reason) -->        needs Kubernetes, Docker or systemd

Run blocks execute in document order with `bash -e -o pipefail` in a
directory holding photo.jpg and a `models` link to the bundled repository,
with localhost:8000/8001/8002 (server) and localhost:8090 (worker) replaced
by the test's ports, IMAGEN_URL and IMAGEN_QUEUE set, and the programs first
on PATH. The queue holds one dead-lettered job beforehand, so the
troubleshooting commands have something to find.

Skip blocks are checked statically: imagen-server and imagen-worker lines
must pass the program's --check-config, imagen lines must name a real
command and only its flags, and every deploy/ path the guide names exists.

The quoted failure messages (models that do not load, a worker that cannot
reach the server) are reproduced here and compared with the guide.
"""
import os
import re
import shlex
import stat
import subprocess

import pytest
from PIL import Image

from conftest import ROOT, SERVER_BIN, SLOW, WRAPPER, Server, free_ports, identity_config, write_model
from imageutil import BUNDLED_MODELS
from workerutil import WORKER_BIN, Worker, wait_until

GUIDE = os.path.join(ROOT, "docs", "operations.md")
CLI_BIN = os.environ.get("IMAGEN_CLI_BIN", os.path.join(os.path.dirname(SERVER_BIN), "imagen"))
PROGRAMS = {"imagen-server": SERVER_BIN, "imagen-worker": WORKER_BIN, "imagen": CLI_BIN}
MARKER = re.compile(r'^<!-- test: (run|skip)\b(?: expect="((?:[^"\\]|\\.)*)")?(?: \(([^)]*)\))? -->$')
CONTROL = {"|", "||", "&&", ";", "&"}


# ---- reading the guide ---------------------------------------------------------

def guide_text():
    with open(GUIDE) as f:
        return f.read()


def blocks():
    """Every fenced `sh` block: dict(kind, expect, reason, body, line, heading)."""
    out = []
    lines = guide_text().splitlines()
    heading = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.strip() == "```sh":
            start = i
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            prev = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            m = MARKER.match(prev)
            out.append({"kind": m.group(1) if m else None,
                        "expect": m.group(2).replace('\\"', '"') if m and m.group(2) else None,
                        "reason": m.group(3) if m else None, "marker": prev,
                        "body": "\n".join(lines[start + 1:j]), "line": start + 1, "heading": heading})
            i = j
        i += 1
    return out


def simple_commands(body):
    """Each simple command of a shell block as a token list (continuations
    joined, comments dropped, split at | || && ; &, leading VAR=value dropped)."""
    out = []
    for line in body.replace("\\\n", " ").splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        lex.commenters = "#"
        cmd = []
        for tok in list(lex) + [";"]:
            if tok in CONTROL:
                while cmd and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", cmd[0]):
                    cmd.pop(0)
                if cmd:
                    out.append(cmd)
                cmd = []
            else:
                cmd.append(tok)
    return out


def run_blocks():
    return [b for b in blocks() if b["kind"] == "run"]


def test_every_sh_block_is_marked():
    bad = [f"line {b['line']}: {b['marker']!r}" for b in blocks() if b["kind"] is None]
    assert not bad, "sh blocks without a <!-- test: run|skip --> marker:\n" + "\n".join(bad)
    skips = [b for b in blocks() if b["kind"] == "skip"]
    assert all(b["reason"] for b in skips), "a skip marker must say why: <!-- test: skip (reason) -->"


def test_guide_covers_the_issue():
    """The runnable part exercises what the deployment issue asks the guide
    to show: health, model status, metrics, statistics, jobs and requeue."""
    text = "\n".join(b["body"] for b in run_blocks())
    for needle in ("/v2/health/live", "/v2/health/ready", "imagen health", "imagen models", ":8002/metrics",
                   ":8090/metrics", "/healthz", "imagen stats", "imagen submit", "imagen queues",
                   "imagen jobs --state dead", "imagen requeue --dead", "/v2/repository/index"):
        assert needle in text, needle
    headings = {b["heading"] for b in blocks()}
    for h in ("Verify", "Scale", "A model does not load", "Inference is slow", "The worker cannot reach the server",
              "Jobs are stuck or dead-lettered"):
        assert h in headings or h in guide_text(), h


# ---- static checks ------------------------------------------------------------

def program_help(*args):
    p = subprocess.run([CLI_BIN] + list(args) + ["--help"], capture_output=True, text=True, timeout=30 * SLOW)
    assert p.returncode == 0, p.stderr
    return p.stdout


def check_imagen_line(cmd):
    """Problems with an `imagen ...` command line: unknown command or flag."""
    commands = re.findall(r"^  ([a-z]+)\s{2,}", program_help().split("Commands:")[1].split("Global flags")[0], re.M)
    args = cmd[1:]
    sub = None
    flags = []
    k = 0
    while k < len(args):
        a = args[k]
        if a in ("--url", "--timeout"):
            k += 2
            continue
        if a.startswith("--"):
            flags.append(a.split("=", 1)[0])
        elif sub is None:
            sub = a
        k += 1
    if sub not in commands:
        return [f"{' '.join(cmd)}: {sub!r} is not an imagen command ({', '.join(commands)})"]
    help_text = program_help(sub)
    return [f"{' '.join(cmd)}: {f} is not a flag of `imagen {sub}`" for f in flags
            if f not in ("--url", "--timeout", "--help") and not re.search(re.escape(f) + r"\b", help_text)]


def check_config(cmd):
    """Problems with an imagen-server/imagen-worker line: its flags must pass
    the program's own parser (--check-config; /models is the bundled one)."""
    prog = PROGRAMS[os.path.basename(cmd[0])]
    args = [a.replace("=/models", "=" + BUNDLED_MODELS) if a.startswith("--model-repository") else a for a in cmd[1:]]
    p = subprocess.run(WRAPPER + [prog] + args + ["--check-config"], capture_output=True, text=True,
                       timeout=30 * SLOW)
    if p.returncode != 0:
        return [f"{' '.join(cmd)} --check-config: exit {p.returncode}: {p.stderr.strip()}"]
    return []


def test_program_lines_pass_the_programs_parsers():
    problems = []
    seen = 0
    for b in blocks():
        for cmd in simple_commands(b["body"]):
            if cmd[0] in ("kubectl", "docker") and "--" in cmd:
                cmd = cmd[cmd.index("--") + 1:]  # the command run inside the container
            name = os.path.basename(cmd[0])
            if name in ("imagen-server", "imagen-worker"):
                seen += 1
                problems += check_config(cmd)
            elif name == "imagen":
                seen += 1
                problems += check_imagen_line(cmd)
    assert seen >= 15, f"only {seen} program lines found: is the guide's block parser broken?"
    assert not problems, "\n".join(problems)


def test_static_checks_can_fail():
    assert check_imagen_line(["imagen", "requeue", "--all"]), "an unknown flag must be reported"
    assert check_imagen_line(["imagen", "restart"]), "an unknown command must be reported"
    assert check_config(["imagen-worker", "--concurrency=zero"]), "a bad worker flag must be reported"
    assert simple_commands("A=1 imagen jobs --state dead | grep x # note\nimagen queues") == [
        ["imagen", "jobs", "--state", "dead"], ["grep", "x"], ["imagen", "queues"]]


def test_deploy_paths_exist():
    # deploy/imagen-... is a kubectl resource (a Deployment), not a path.
    paths = set(re.findall(r"\bdeploy/(?!imagen-)[A-Za-z0-9_./-]*[A-Za-z0-9_/]", guide_text()))
    assert paths
    missing = sorted(p for p in paths if not os.path.exists(os.path.join(ROOT, p)))
    assert not missing, f"the guide names paths that do not exist: {missing}"


# ---- running the run blocks ------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A server on the bundled models and a worker on a sqlite queue with one
    dead-lettered job, a bin directory with the three programs, and the
    working directory the blocks run in."""
    tmp = tmp_path_factory.mktemp("ops")
    bindir = tmp / "bin"
    bindir.mkdir()
    for name, path in PROGRAMS.items():
        script = bindir / name
        script.write_text("#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in WRAPPER + [path]) + ' "$@"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    work = tmp / "work"
    work.mkdir()
    Image.new("RGB", (64, 48), (180, 120, 60)).save(work / "photo.jpg", quality=90)
    os.symlink(BUNDLED_MODELS, work / "models")
    queue = f"sqlite://{tmp}/queue.db"
    server = Server(BUNDLED_MODELS)
    worker = None
    try:
        grpc_url = f"grpc://127.0.0.1:{server.grpc_port}"
        # One attempt: a transient failure dead-letters the job at once.
        worker = Worker(queue, grpc_url, args=["--max-attempts=1"])
        env = dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '')}", IMAGEN_URL=grpc_url,
                   IMAGEN_QUEUE=queue)
        unreachable = f"http://127.0.0.1:{free_ports(1)[0]}/photo.png"
        subprocess.run([str(bindir / "imagen"), "submit", "--op", "enhance", "--out", str(tmp / "out"), unreachable],
                       check=True, env=env, capture_output=True, timeout=60 * SLOW)
        worker.wait_metric("imagen_worker_queue_jobs", {"op": "enhance", "state": "dead"}, lambda v: v >= 1)
        subs = {"localhost:8000": f"127.0.0.1:{server.http_port}",
                "localhost:8001": f"127.0.0.1:{server.grpc_port}",
                "localhost:8002": f"127.0.0.1:{server.metrics_port}",
                "localhost:8090": f"127.0.0.1:{worker.metrics_port}",
                "/tmp/imagen-check": str(tmp / "imagen-check")}
        yield {"env": env, "cwd": str(work), "subs": subs, "server": server, "worker": worker}
    finally:
        if worker is not None:
            assert worker.stop() == 0, worker.log()
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize("index", range(len(run_blocks())),
                         ids=[f"line{b['line']}" for b in run_blocks()])
def test_run_block(site, index):
    b = run_blocks()[index]
    script = b["body"]
    for old, new in site["subs"].items():
        script = script.replace(old, new)
    p = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=site["cwd"], env=site["env"],
                       capture_output=True, text=True, timeout=120 * SLOW)
    report = (f"block at docs/operations.md:{b['line']} ({b['heading']}):\n{script}\n"
              f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    assert p.returncode == 0, report
    if b["expect"]:
        assert re.search(b["expect"], p.stdout), f"output does not match {b['expect']!r}\n" + report


# ---- the quoted failures ------------------------------------------------------------

BROKEN_MODELS = {
    # name: (config.pbtxt or None, version dirs)
    "broken": ('name: "broken"\nbackend: "imageops"\nmax_batch_size: 8\n'
               'input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ -1 ] ]\n', (1,)),
    "nobackend": (identity_config("nobackend").replace('"imageops"', '"onnxruntime"'), (1,)),
    "noversion": (identity_config("noversion"), ()),
    "badop": (identity_config("badop").replace('"identity"', '"sharpen"'), (1,)),
    "wrongname": (identity_config("something_else"), (1,)),
}


def logged_messages(log, repo):
    """'component: message' of every log line, the repository path shown as /models."""
    return [m.group(1).replace(str(repo), "/models")
            for m in re.finditer(r"^\w+ \S+ (\w+: .*)$", log, re.M)]


def test_model_load_failures_are_quoted_as_logged(server_factory, tmp_path):
    repo = tmp_path / "models"
    for name, (config, versions) in BROKEN_MODELS.items():
        write_model(repo, name, config, versions=versions)
    write_model(repo, "gpu", identity_config("gpu", extra="instance_group [ { count: 1, kind: KIND_GPU } ]"))
    guide = guide_text()

    # Default --exit-on-error: one line per failed model, then exit 1.
    s = server_factory(repo, expect_fail=True)
    assert s.wait_exit() == 1, s.log()
    msgs = logged_messages(s.log(), repo)
    failures = [m for m in msgs if "failed to load" in m or "failed to create server" in m or "KIND_GPU" in m]
    assert len(failures) == len(BROKEN_MODELS) + 2, s.log()
    for m in failures:
        assert m in guide, f"the guide does not quote this log line as logged:\n{m}"

    # --exit-on-error=false: live, not ready, and the index carries the reasons.
    s = server_factory(repo, "--exit-on-error=false", wait_ready=False)
    assert s.get("/v2/health/ready").status != 200
    p = subprocess.run(WRAPPER + [CLI_BIN, "--url", f"http://127.0.0.1:{s.http_port}", "models"], capture_output=True,
                       text=True, timeout=30 * SLOW)
    assert p.returncode == 0, p.stderr
    rows = [ln.replace(str(repo), "/models").rstrip() for ln in p.stdout.splitlines() if "UNAVAILABLE" in ln]
    assert len(rows) == len(BROKEN_MODELS), p.stdout
    for row in rows:
        reason = re.split(r"UNAVAILABLE\s+", row, maxsplit=1)[1]
        assert reason in guide, f"the guide does not quote this index reason:\n{reason}"
    for row in rows:
        if row.startswith(("badop ", "broken ")):
            assert row in guide, f"the guide's `imagen models` sample differs from the real output:\n{row}"

    # No repository at all.
    s = server_factory(tmp_path / "absent", expect_fail=True)
    assert s.wait_exit() == 1
    msgs = logged_messages(s.log(), tmp_path / "absent")
    opened = [m for m in msgs if "failed to open model repository" in m]
    assert opened, s.log()
    reason = opened[0].split("failed to create server: ", 1)[1]
    assert reason in guide, f"the guide does not quote:\n{reason}"


def normalise_addresses(text):
    text = re.sub(r"grpc://[A-Za-z0-9.-]+:\d+", "grpc://HOST:PORT", text)
    return re.sub(r"ipv4:[0-9.]+:\d+", "ipv4:ADDR", text)


def test_worker_outage_is_quoted_as_logged(tmp_path):
    """A worker whose server is down logs the quoted warning, reports
    imagen_worker_server_available 0, stays healthy and holds its job; when
    the server comes up it logs the quoted recovery line and finishes."""
    http_port, grpc_port, metrics_port = free_ports(3)
    queue = f"sqlite://{tmp_path}/queue.db"
    img = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(img)
    worker = Worker(queue, f"grpc://127.0.0.1:{grpc_port}", ops=["enhance"])
    server = None
    try:
        subprocess.run(WRAPPER + [CLI_BIN, "submit", "--queue", queue, "--op", "enhance", "--out",
                                  str(tmp_path / "out"), str(img)], check=True, capture_output=True, timeout=60 * SLOW)
        down = worker.wait_log(r"worker: inference server unavailable; holding jobs and pausing pulls: .*")
        assert worker.metric("imagen_worker_server_available") == 0
        assert worker.healthz()[0] == 200
        assert worker.wait_metric("imagen_worker_queue_jobs", {"op": "enhance", "state": "running"}, lambda v: v == 1)
        guide = normalise_addresses(guide_text())
        assert normalise_addresses(down.group(0)) in guide, f"the guide does not quote:\n{down.group(0)}"

        server = Server(BUNDLED_MODELS, ports=(http_port, grpc_port, metrics_port))
        up = worker.wait_log(r"worker: inference server \S+ answers again")
        assert normalise_addresses(up.group(0)) in guide, f"the guide does not quote:\n{up.group(0)}"
        wait_until(lambda: worker.jobs_total("enhance", "done") == 1, what="the held job to finish")
        assert worker.jobs_total("enhance", "failed") == 0 and worker.jobs_total("enhance", "retried") == 0
    finally:
        assert worker.stop() == 0, worker.log()
        if server is not None:
            assert server.stop() == 0, server.log()
