"""The systemd units (deploy/systemd) against the programs they start.

- `systemd-analyze verify` finds nothing to say about either unit (the
  template verified as one instance per operation), with ExecStart pointed
  at the binaries under test (skipped where systemd-analyze is missing);
- each ExecStart, expanded the way systemd does (%i, ${VAR} as one word,
  $VAR split at spaces, Environment= then the example EnvironmentFiles), is
  accepted by the real binary's --check-config, and the server and a worker
  started from it (ports moved to free ones) answer their health checks;
- restart policy, KillSignal=SIGTERM and stop timeouts that cover a drain;
- the README documents the sqlite / Redis choice.

Environment: IMAGEN_SERVER_BIN and IMAGEN_WORKER_BIN as for the rest of the
suite.
"""
import os
import re
import shutil
import subprocess

import pytest

from conftest import ROOT, SERVER_BIN, SLOW, free_ports
from test_deploy_k8s import LONGEST_JOB_SECONDS, OPS, Running, flag, http_get, wait_status, with_flag
from workerutil import EXIT_USAGE, WORKER_BIN

SYSTEMD = os.path.join(ROOT, "deploy", "systemd")
SERVER_UNIT = os.path.join(SYSTEMD, "imagen-server.service")
WORKER_UNIT = os.path.join(SYSTEMD, "imagen-worker@.service")
ANALYZE = shutil.which("systemd-analyze")
INSTALL_PREFIX = "/usr/local/bin/"


def parse_unit(path):
    """{section: [(key, value), ...]} with continuation lines joined; keys
    repeat (Environment=, EnvironmentFile=), so values are kept in order."""
    sections, current, pending = {}, None, ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if pending:
                line = pending + " " + line.strip()
                pending = ""
            elif not line.strip() or line.lstrip().startswith(("#", ";")):
                continue
            if line.endswith("\\"):
                pending = line[:-1].rstrip()
                continue
            m = re.fullmatch(r"\[(\w+)\]", line.strip())
            if m:
                current = sections.setdefault(m.group(1), [])
                continue
            key, value = line.split("=", 1)
            current.append((key.strip(), value.strip()))
    return sections


def values(unit, section, key):
    return [v for k, v in unit[section] if k == key]


def one(unit, section, key):
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}= appears {len(found)} times"
    return found[0]


def read_env_file(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                key, value = line.split("=", 1)
                env[key] = value
    return env


def example_env_file(unit_path):
    """EnvironmentFile path -> the example in deploy/systemd that stands for it."""
    return {"/etc/imagen/imagen.env": os.path.join(SYSTEMD, "imagen.env.example"),
            "/etc/imagen/worker-%i.env": os.path.join(SYSTEMD, "worker.env.example")}[unit_path]


def environment(unit):
    """The environment systemd gives ExecStart: Environment= lines, then the
    EnvironmentFiles (which override them), here their examples."""
    env = {}
    for value in values(unit, "Service", "Environment"):
        key, v = value.split("=", 1)
        env[key] = v
    for path in values(unit, "Service", "EnvironmentFile"):
        env.update(read_env_file(example_env_file(path.lstrip("-"))))
    return env


def exec_start(unit, instance=None):
    """ExecStart as argv, expanded as systemd does: specifiers first, then
    ${VAR} as one argument and $VAR split at whitespace."""
    line = one(unit, "Service", "ExecStart")
    if instance is not None:
        line = line.replace("%i", instance)
    assert "%" not in line, line
    env = environment(unit)
    argv = []
    for word in line.split():
        m = re.fullmatch(r"\$(\w+)", word)
        if m:
            argv += env.get(m.group(1), "").split()
            continue
        argv.append(re.sub(r"\$\{(\w+)\}", lambda v: env[v.group(1)], word))
    return argv


def test_units_exist_and_are_templated():
    assert os.path.exists(SERVER_UNIT) and os.path.exists(WORKER_UNIT)
    assert "--ops=%i" in one(parse_unit(WORKER_UNIT), "Service", "ExecStart")


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path):
    bindir = os.path.dirname(SERVER_BIN) + "/"
    paths = []
    with open(SERVER_UNIT) as f:
        server = f.read().replace(INSTALL_PREFIX, bindir)
    (tmp_path / "imagen-server.service").write_text(server)
    paths.append(str(tmp_path / "imagen-server.service"))
    with open(WORKER_UNIT) as f:
        worker = f.read().replace(INSTALL_PREFIX, os.path.dirname(WORKER_BIN) + "/")
    (tmp_path / "imagen-worker@.service").write_text(worker)
    for op in OPS:
        instance = tmp_path / f"imagen-worker@{op}.service"
        instance.symlink_to("imagen-worker@.service")
        paths.append(str(instance))
    r = subprocess.run([ANALYZE, "verify"] + paths, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    # verify reports unknown keys and unparsable values on stderr and still
    # exits 0; anything it says about these files is a finding.
    said = [line for line in (r.stdout + r.stderr).splitlines() if "imagen" in line]
    assert r.returncode == 0 and not said, r.stdout + r.stderr


def test_server_exec_start_accepted(tmp_path):
    argv = exec_start(parse_unit(SERVER_UNIT))
    assert argv[0] == INSTALL_PREFIX + "imagen-server"
    assert flag(argv, "model-repository") == read_env_file(example_env_file("/etc/imagen/imagen.env"))[
        "IMAGEN_MODEL_REPOSITORY"]
    args = with_flag(argv[1:], "model-repository", os.path.join(ROOT, "models"))
    r = subprocess.run([SERVER_BIN] + args + ["--check-config"], capture_output=True, text=True, timeout=30 * SLOW)
    assert r.returncode == 0, f"{args}\n{r.stderr}"


@pytest.mark.parametrize("op", OPS)
def test_worker_exec_start_accepted(op):
    argv = exec_start(parse_unit(WORKER_UNIT), op)
    assert argv[0] == INSTALL_PREFIX + "imagen-worker"
    r = subprocess.run([WORKER_BIN] + argv[1:] + ["--check-config"], capture_output=True, text=True,
                       timeout=30 * SLOW)
    assert r.returncode == 0, f"{argv}\n{r.stderr}"
    effective = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
    assert effective["ops"] == op
    assert effective["queue"] == "sqlite:///var/lib/imagen/queue.db"
    assert effective["metrics_port"] == "8090"


def test_units_start_and_answer(tmp_path):
    """The server and a worker started from the units' ExecStart (ports and
    paths moved into the test's reach) become healthy and stop with 0."""
    http_port, grpc_port, metrics_port, worker_port = free_ports(4)
    sargs = exec_start(parse_unit(SERVER_UNIT))[1:]
    sargs = with_flag(sargs, "model-repository", os.path.join(ROOT, "models"))
    for name, port in (("http-port", http_port), ("grpc-port", grpc_port), ("metrics-port", metrics_port)):
        sargs = with_flag(sargs, name, port)
    server = Running([SERVER_BIN] + sargs + ["--http-address=127.0.0.1"], str(tmp_path / "server.log"))
    worker = None
    try:
        wait_status(server, http_port, "/v2/health/ready", "imagen-server")
        wargs = exec_start(parse_unit(WORKER_UNIT), "enhance")[1:]
        wargs = with_flag(wargs, "queue", f"sqlite://{tmp_path}/queue.db")
        wargs = with_flag(wargs, "server", f"grpc://127.0.0.1:{grpc_port}")
        wargs = with_flag(wargs, "metrics-port", worker_port) + ["--metrics-address=127.0.0.1"]
        worker = Running([WORKER_BIN] + wargs, str(tmp_path / "worker.log"))
        wait_status(worker, worker_port, "/healthz", "imagen-worker")
        assert http_get(worker_port, "/metrics")[0] == 200
    finally:
        wcode = worker.stop() if worker else 0
        scode = server.stop()
    assert wcode == 0, worker.log()
    assert scode == 0, server.log()


@pytest.mark.parametrize("path", [SERVER_UNIT, WORKER_UNIT])
def test_restart_and_stop_policy(path):
    unit = parse_unit(path)
    assert one(unit, "Service", "Restart") in ("on-failure", "always")
    # Exit 2 is a bad flag in both programs: restarting repeats it.
    assert str(EXIT_USAGE) in one(unit, "Service", "RestartPreventExitStatus").split()
    assert one(unit, "Service", "KillSignal") == "SIGTERM"
    timeout = int(one(unit, "Service", "TimeoutStopSec"))
    argv = exec_start(unit, "upscale")
    if path == SERVER_UNIT:
        # The server drains for --exit-timeout-secs, then exits.
        assert timeout > int(flag(argv, "exit-timeout-secs") or 30)
    else:
        assert timeout >= LONGEST_JOB_SECONDS
    assert one(unit, "Install", "WantedBy") == "multi-user.target"


def test_worker_ports_in_readme_are_distinct():
    with open(os.path.join(SYSTEMD, "README.md")) as f:
        text = f.read()
    ports = dict(re.findall(r"(\w+) (\d{4})\b", text.split("The workers' ports:")[1].split("(`curl")[0]))
    assert sorted(ports) == sorted(OPS)
    assert len(set(ports.values())) == len(OPS)
    assert "8090" in ports.values()


def test_readme_documents_the_queue_choice():
    with open(os.path.join(SYSTEMD, "README.md")) as f:
        text = f.read()
    section = text.split("## Queue: sqlite or Redis")[1]
    for needle in ("sqlite:///var/lib/imagen/queue.db", "redis://", "appendonly yes", "appendfsync",
                   "maxmemory-policy noeviction"):
        assert needle in section, needle
    # The default the README describes is the units' own.
    env = environment(parse_unit(WORKER_UNIT))
    assert env["IMAGEN_QUEUE"] == "sqlite:///var/lib/imagen/queue.db"
