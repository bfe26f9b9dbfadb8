"""The Kubernetes manifests (deploy/k8s) against the programs they run.

Every kustomization (base, its parts, every overlay) is rendered with
`kubectl kustomize`, and the rendered objects are checked for what a cluster
would only show at run time:

- every imagen-server / imagen-worker container's arguments are accepted by
  the real binary's --check-config, and the server started with them (ports
  moved to free ones, /models pointed at a copy of models/) serves the probe
  paths the manifests use; the worker likewise serves /healthz;
- probe ports == the port flags == the named containerPorts == the
  prometheus.io/port annotation; Service targetPorts exist in the pods they
  select; the workers' --queue and --server name real Services and ports;
- KEDA triggers name the queue's real stream and consumer group (read from
  src/queue/queue_redis.c) and the Redis Service; every ScaledObject, HPA and
  PodDisruptionBudget targets or selects something;
- grace periods cover the drain they have to allow for;
- yamllint is clean on the sources and on the rendered output.

Environment: IMAGEN_SERVER_BIN (and the worker next to it, IMAGEN_WORKER_BIN)
as for the rest of the suite; kubectl (or $KUBECTL) and yamllint on PATH.
"""
import glob
import http.client
import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT, SERVER_BIN, SLOW, free_ports
from workerutil import WORKER_BIN, wait_until

K8S = os.path.join(ROOT, "deploy", "k8s")
KUBECTL = os.environ.get("KUBECTL") or shutil.which("kubectl")
YAMLLINT = shutil.which("yamllint")
NAMESPACE = "imagen"
OPS = ["upscale", "enhance", "background_remove", "style_comic", "style_aged"]
# The longest job a worker may be finishing when it is told to stop: the
# figure deploy/k8s/base/workers/workers.yaml derives (100 MP at ~30 MP/s,
# ten times slower on a throttled pod, plus a slow PUT).
LONGEST_JOB_SECONDS = 120

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl (Debian package kubernetes-client) is not installed")


def kustomizations():
    """Every directory under deploy/k8s holding a kustomization.yaml,
    relative to deploy/k8s (base, base/core, ..., overlays/local, ...)."""
    found = []
    for path in glob.glob(os.path.join(K8S, "**", "kustomization.yaml"), recursive=True):
        found.append(os.path.relpath(os.path.dirname(path), K8S))
    return sorted(found)


KUSTOMIZATIONS = kustomizations()
# What a cluster is deployed from; the others are parts they are built of.
DEPLOYABLE = ["base"] + [k for k in KUSTOMIZATIONS if k.startswith("overlays/")]

_rendered = {}


def render_text(name):
    if name not in _rendered:
        r = subprocess.run([KUBECTL, "kustomize", os.path.join(K8S, name)], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, f"kubectl kustomize deploy/k8s/{name} failed:\n{r.stderr}"
        _rendered[name] = r.stdout
    return _rendered[name]


def render(name):
    return [d for d in yaml.safe_load_all(render_text(name)) if d]


def of_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def by_name(objs, kind, name):
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
    return found[0]


def workloads(objs):
    return [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]


def containers(pod_spec):
    return list(pod_spec.get("containers", []))


def program(container):
    """'imagen-server', 'imagen-worker' or None, from the container's command."""
    cmd = container.get("command") or []
    if cmd and os.path.basename(cmd[0]) in ("imagen-server", "imagen-worker"):
        return os.path.basename(cmd[0])
    return None


def imagen_containers(objs, prog):
    """(workload, pod spec, container) for every container running `prog`."""
    out = []
    for w in workloads(objs):
        spec = w["spec"]["template"]["spec"]
        for c in containers(spec):
            if program(c) == prog:
                out.append((w, spec, c))
    return out


def flag(args, name):
    """Value of --name=value or --name value in args (the last one wins, as in
    both programs' parsers); None when absent."""
    value = None
    for i, a in enumerate(args):
        if a.startswith(f"--{name}="):
            value = a.split("=", 1)[1]
        elif a == f"--{name}" and i + 1 < len(args):
            value = args[i + 1]
    return value


def with_flag(args, name, value):
    """args with every --name replaced by --name=value (added when absent)."""
    out, skip = [], False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a.startswith(f"--{name}="):
            continue
        if a == f"--{name}":
            skip = True
            continue
        out.append(a)
    return out + [f"--{name}={value}"]


def port_by_name(container, name):
    for p in container.get("ports", []):
        if p.get("name") == name:
            return p["containerPort"]
    return None


def resolve_port(container, port):
    """A probe's or Service's port (number or name) as a number."""
    if isinstance(port, int):
        return port
    if str(port).isdigit():
        return int(port)
    return port_by_name(container, port)


def http_probes(container):
    return {kind: container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe") if kind in container}


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def pod_templates(objs):
    return [(w, w["spec"]["template"]) for w in workloads(objs)]


def test_kustomizations_found():
    assert "base" in KUSTOMIZATIONS
    for overlay in ("local", "gke", "monitoring", "worker-single", "object-storage", "server-hpa-pending"):
        assert f"overlays/{overlay}" in KUSTOMIZATIONS


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_renders(name):
    objs = render(name)
    assert objs, f"deploy/k8s/{name} renders nothing"
    for o in objs:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == NAMESPACE, f"{o['kind']}/{o['metadata']['name']} in {name}"
        assert o["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "imagen", \
            f"{o['kind']}/{o['metadata']['name']} in {name} lacks app.kubernetes.io/part-of"


@pytest.mark.skipif(YAMLLINT is None, reason="yamllint is not installed")
def test_yamllint_sources():
    r = subprocess.run([YAMLLINT, "--strict", "-c", os.path.join(ROOT, ".yamllint"), K8S], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(YAMLLINT is None, reason="yamllint is not installed")
@pytest.mark.parametrize("name", DEPLOYABLE)
def test_yamllint_rendered(name, tmp_path):
    path = tmp_path / "rendered.yaml"
    path.write_text(render_text(name))
    r = subprocess.run([YAMLLINT, "--strict", "-c", os.path.join(ROOT, ".yamllint"), str(path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_base_has_every_operation():
    objs = render("base")
    served = []
    for w, _, c in imagen_containers(objs, "imagen-worker"):
        served += flag(c["args"], "ops").split(",")
    assert sorted(served) == sorted(OPS), "one worker Deployment per operation"
    # The worker's own list of operations is the same set.
    r = subprocess.run([WORKER_BIN, "--help"], capture_output=True, text=True, timeout=30 * SLOW)
    listed = re.findall(r"^\s{20,}(\w+)\s{2,}\S", r.stdout, re.M)
    assert sorted(listed) == sorted(OPS), r.stdout


# ---- the programs accept their arguments ---------------------------------------


def copy_repository(tmp_path):
    """A copy of the source tree's models/ (what /models holds in a cluster)."""
    repo = tmp_path / "models"
    shutil.copytree(os.path.join(ROOT, "models"), repo)
    return str(repo)


def server_args_for_test(args, repo):
    return [a.replace("=/models", "=" + repo) if a.startswith("--model-repository") else a for a in args]


@pytest.mark.parametrize("name", DEPLOYABLE)
def test_server_args_accepted(name, tmp_path):
    repo = copy_repository(tmp_path)
    found = imagen_containers(render(name), "imagen-server")
    assert found, f"no imagen-server container in {name}"
    for w, _, c in found:
        assert flag(c["args"], "model-repository") == "/models"
        args = server_args_for_test(c["args"], repo)
        r = subprocess.run([SERVER_BIN] + args + ["--check-config"], capture_output=True, text=True,
                           timeout=30 * SLOW)
        assert r.returncode == 0, f"{name} {w['metadata']['name']}: {shlex.join(args)}\n{r.stderr}"


@pytest.mark.parametrize("name", DEPLOYABLE)
def test_worker_args_accepted(name):
    objs = render(name)
    found = imagen_containers(objs, "imagen-worker")
    assert found, f"no imagen-worker container in {name}"
    for w, _, c in found:
        r = subprocess.run([WORKER_BIN] + c["args"] + ["--check-config"], capture_output=True, text=True,
                           timeout=30 * SLOW)
        assert r.returncode == 0, f"{name} {w['metadata']['name']}: {shlex.join(c['args'])}\n{r.stderr}"
        effective = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
        assert effective["ops"].replace(" ", "") == flag(c["args"], "ops")
        assert int(effective["metrics_port"]) == int(flag(c["args"], "metrics-port"))
        # The queue and the server are Services of this deployment, on the
        # ports those Services expose.
        queue = re.fullmatch(r"redis://([^:/]+):(\d+)", effective["queue"])
        assert queue, effective["queue"]
        assert service_port(objs, queue.group(1), int(queue.group(2))), effective["queue"]
        server = re.fullmatch(r"grpc://([^:/]+):(\d+)", effective["server"])
        assert server, effective["server"]
        port = service_port(objs, server.group(1), int(server.group(2)))
        assert port and port.get("name") == "grpc", effective["server"]
        # ... and that port reaches the server's --grpc-port.
        (_, _, sc), = imagen_containers(objs, "imagen-server")
        assert resolve_port(sc, port["targetPort"]) == int(flag(sc["args"], "grpc-port"))


def service_port(objs, name, port):
    for s in of_kind(objs, "Service"):
        if s["metadata"]["name"] == name:
            for p in s["spec"]["ports"]:
                if p["port"] == port:
                    return p
    return None


# ---- ports and probes match the flags --------------------------------------------


@pytest.mark.parametrize("name", DEPLOYABLE)
def test_server_ports_and_probes(name):
    for w, spec, c in imagen_containers(render(name), "imagen-server"):
        where = f"{name} {w['metadata']['name']}"
        args = c["args"]
        http_port, grpc_port, metrics_port = (int(flag(args, f) or d) for f, d in
                                              (("http-port", 8000), ("grpc-port", 8001), ("metrics-port", 8002)))
        assert port_by_name(c, "http") == http_port, where
        assert port_by_name(c, "grpc") == grpc_port, where
        assert port_by_name(c, "metrics") == metrics_port, where
        probes = http_probes(c)
        assert set(probes) == {"startupProbe", "readinessProbe", "livenessProbe"}, where
        expected_paths = {"startupProbe": "/v2/health/ready", "readinessProbe": "/v2/health/ready",
                          "livenessProbe": "/v2/health/live"}
        for kind, probe in probes.items():
            assert probe["httpGet"]["path"] == expected_paths[kind], f"{where} {kind}"
            assert resolve_port(c, probe["httpGet"]["port"]) == http_port, f"{where} {kind}"
        annotations = w["spec"]["template"]["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) == metrics_port, where
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], where
        # Grace period: the preStop pause plus the server's own drain limit.
        pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
        assert os.path.basename(pre_stop[0]) == "sleep", where
        drain = int(flag(args, "exit-timeout-secs") or 30)
        assert spec["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain, where


@pytest.mark.parametrize("name", DEPLOYABLE)
def test_worker_ports_probes_and_grace(name):
    for w, spec, c in imagen_containers(render(name), "imagen-worker"):
        where = f"{name} {w['metadata']['name']}"
        metrics_port = int(flag(c["args"], "metrics-port") or 8090)
        assert port_by_name(c, "metrics") == metrics_port, where
        probes = http_probes(c)
        assert {"readinessProbe", "livenessProbe"} <= set(probes), where
        for kind, probe in probes.items():
            assert probe["httpGet"]["path"] == "/healthz", f"{where} {kind}"
            assert resolve_port(c, probe["httpGet"]["port"]) == metrics_port, f"{where} {kind}"
        annotations = w["spec"]["template"]["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) == metrics_port, where
        assert spec["terminationGracePeriodSeconds"] >= LONGEST_JOB_SECONDS, where
        # The worker drains on SIGTERM; a preStop pause would only delay it.
        assert "preStop" not in c.get("lifecycle", {}), where


@pytest.mark.parametrize("name", DEPLOYABLE)
def test_every_pod_is_annotated_for_prometheus(name):
    for w, template in pod_templates(render(name)):
        annotations = template["metadata"].get("annotations", {})
        where = f"{name} {w['kind']}/{w['metadata']['name']}"
        assert annotations.get("prometheus.io/scrape") == "true", where
        assert annotations.get("prometheus.io/path") == "/metrics", where
        ports = [p["containerPort"] for c in containers(template["spec"]) for p in c.get("ports", [])]
        assert int(annotations["prometheus.io/port"]) in ports, where


@pytest.mark.parametrize("name", DEPLOYABLE)
def test_services_reach_container_ports(name):
    objs = render(name)
    for s in of_kind(objs, "Service"):
        selected = [t for _, t in pod_templates(objs) if selects(s["spec"]["selector"], t["metadata"]["labels"])]
        assert selected, f"{name} Service {s['metadata']['name']} selects no pod"
        for p in s["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            for t in selected:
                found = [resolve_port(c, target) for c in containers(t["spec"])]
                assert any(found), f"{name} Service {s['metadata']['name']} port {p['name']}: no container port " \
                                   f"{target}"


@pytest.mark.parametrize("name", DEPLOYABLE)
def test_disruption_budgets_select_pods(name):
    objs = render(name)
    budgets = of_kind(objs, "PodDisruptionBudget")
    assert budgets
    for b in budgets:
        selector = b["spec"]["selector"]["matchLabels"]
        matching = [w for w, t in pod_templates(objs) if selects(selector, t["metadata"]["labels"])]
        assert matching, f"{name} PodDisruptionBudget {b['metadata']['name']} selects nothing"
    # Every workload is covered by some budget.
    for w, t in pod_templates(objs):
        assert any(selects(b["spec"]["selector"]["matchLabels"], t["metadata"]["labels"]) for b in budgets), \
            f"{name} {w['metadata']['name']} has no PodDisruptionBudget"


# ---- autoscaling ---------------------------------------------------------------------


def queue_names():
    """The Redis driver's stream key prefix and consumer group, from its source."""
    with open(os.path.join(ROOT, "src", "queue", "queue_redis.c")) as f:
        src = f.read()
    prefix = re.search(r"local P = '([^']*)'", src).group(1)
    stream = re.search(r"local function qkey\(op\) return P \.\. '([^']*)' \.\. op end", src).group(1)
    group = re.search(r"'XREADGROUP', 'GROUP', '([^']*)'", src).group(1)
    return prefix + stream, group


def test_queue_names_from_source():
    assert queue_names() == ("imagen:q:", "imagen")


@pytest.mark.parametrize("name", [n for n in DEPLOYABLE if n != "overlays/local"])
def test_keda_triggers_match_the_queue(name):
    objs = render(name)
    stream_prefix, group = queue_names()
    scaled = of_kind(objs, "ScaledObject")
    assert scaled, f"{name} has no ScaledObject"
    redis_svc = by_name(objs, "Service", "redis")
    redis_port = redis_svc["spec"]["ports"][0]["port"]
    covered = set()
    for so in scaled:
        target = by_name(objs, "Deployment", so["spec"]["scaleTargetRef"]["name"])
        (c,) = [c for c in containers(target["spec"]["template"]["spec"]) if program(c) == "imagen-worker"]
        ops = flag(c["args"], "ops").split(",")
        streams = set()
        for t in so["spec"]["triggers"]:
            assert t["type"] == "redis-streams"
            m = t["metadata"]
            assert m["consumerGroup"] == group
            assert m["stream"].startswith(stream_prefix)
            streams.add(m["stream"][len(stream_prefix):])
            # KEDA runs in its own namespace: the Redis Service by full name.
            assert m["address"] == f"redis.{NAMESPACE}.svc.cluster.local:{redis_port}"
            assert ("pendingEntriesCount" in m) != ("streamLength" in m)
        assert streams == set(ops), f"{so['metadata']['name']}: triggers on {streams}, worker serves {ops}"
        # Both measures for every stream: pending entries and stream length.
        kinds = {(t["metadata"]["stream"], "pendingEntriesCount" in t["metadata"]) for t in so["spec"]["triggers"]}
        assert len(kinds) == 2 * len(ops)
        assert so["spec"]["minReplicaCount"] >= 1
        covered.add(target["metadata"]["name"])
    workers = {w["metadata"]["name"] for w, _, _ in imagen_containers(objs, "imagen-worker")}
    assert covered == workers, "every worker Deployment has a ScaledObject"


def test_local_has_no_crd_objects():
    kinds = {o["kind"] for o in render("overlays/local")}
    assert "ScaledObject" not in kinds and "ServiceMonitor" not in kinds
    for w in workloads(render("overlays/local")):
        assert w["spec"]["replicas"] == 1
        for c in containers(w["spec"]["template"]["spec"]):
            assert "nvidia.com/gpu" not in c.get("resources", {}).get("limits", {})


@pytest.mark.parametrize("name", DEPLOYABLE)
def test_hpa_targets_the_server(name):
    objs = render(name)
    for hpa in of_kind(objs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = by_name(objs, ref["kind"], ref["name"])
        assert imagen_containers([target], "imagen-server")
        assert hpa["spec"]["minReplicas"] >= 1


def test_gke_overlay():
    objs = render("overlays/gke")
    (w, spec, c), = imagen_containers(objs, "imagen-server")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-tesla-t4"
    assert spec["nodeSelector"]["cloud.google.com/gke-spot"] == "true"
    assert {t["key"] for t in spec["tolerations"]} == {"nvidia.com/gpu", "cloud.google.com/gke-spot"}
    assert flag(c["args"], "model-config-name") == "gpu"


def test_monitoring_overlay():
    objs = render("overlays/monitoring")
    monitors = of_kind(objs, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"imagen-server", "imagen-workers"}
    for m in monitors:
        services = [s for s in of_kind(objs, "Service") if selects(m["spec"]["selector"]["matchLabels"],
                                                                    s["metadata"].get("labels", {}))]
        assert services, f"ServiceMonitor {m['metadata']['name']} selects no Service"
        for e in m["spec"]["endpoints"]:
            for s in services:
                assert e["port"] in [p["name"] for p in s["spec"]["ports"]], m["metadata"]["name"]


def test_redis_is_durable():
    objs = render("base")
    redis = by_name(objs, "StatefulSet", "redis")
    (c,) = [c for c in containers(redis["spec"]["template"]["spec"]) if c["name"] == "redis"]
    args = c["args"]
    pairs = dict(zip(args[::2], args[1::2]))
    assert pairs["--appendonly"] == "yes"
    assert pairs["--appendfsync"] in ("everysec", "always")
    assert pairs["--maxmemory-policy"] == "noeviction"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts[pairs["--dir"]] in [t["metadata"]["name"] for t in redis["spec"]["volumeClaimTemplates"]]
    assert by_name(objs, "Service", "redis")["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("name", DEPLOYABLE)
def test_images_are_tagged(name):
    for w in workloads(render(name)):
        for c in containers(w["spec"]["template"]["spec"]):
            if program(c):
                assert re.fullmatch(r"imagen/(server|worker):[\w.-]+", c["image"]), f"{name}: {c['image']}"


# ---- the programs serve what the manifests probe ----------------------------------


def http_get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5 * SLOW)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    except OSError:
        return None, ""
    finally:
        conn.close()


class Running:
    """A process started from rendered arguments; stopped with SIGTERM."""

    def __init__(self, argv, log_path):
        self.log_path = log_path
        self.logf = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT)

    def log(self):
        self.logf.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30 * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        return self.proc.returncode


def wait_status(proc, port, path, what):
    def ok():
        if proc.proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.proc.returncode}:\n{proc.log()}")
        return http_get(port, path)[0] == 200
    wait_until(ok, timeout=20.0, what=f"{what} to answer 200 on {path}")


def gpu_repository(tmp_path):
    """models/ with configs/gpu.pbtxt made by the command in the gke
    overlay's README (the code block that writes them)."""
    with open(os.path.join(K8S, "overlays", "gke", "README.md")) as f:
        blocks = re.findall(r"```\n(.*?)```", f.read(), re.S)
    (script,) = [b for b in blocks if "configs/gpu.pbtxt" in b and "sed" in b]
    shutil.copytree(os.path.join(ROOT, "models"), tmp_path / "models")
    r = subprocess.run(["bash", "-euc", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for op in OPS:
        with open(tmp_path / "models" / op / "configs" / "gpu.pbtxt") as f:
            assert "KIND_GPU" in f.read(), op
    return str(tmp_path / "models")


@pytest.mark.parametrize("name", ["base", "overlays/local", "overlays/gke", "overlays/worker-single"])
def test_programs_serve_the_probes(name, tmp_path):
    """The server and the workers, started with the rendered arguments (ports
    moved to free ones, /models on a copy of models/, the queue on a sqlite
    file), answer 200 on every probe path and on /metrics, and export the
    metric the custom-metric HPA scales on."""
    objs = render(name)
    (w, _, sc), = imagen_containers(objs, "imagen-server")
    repo = gpu_repository(tmp_path) if name == "overlays/gke" else copy_repository(tmp_path)
    http_port, grpc_port, metrics_port = free_ports(3)
    args = server_args_for_test(sc["args"], repo)
    args = with_flag(with_flag(with_flag(args, "http-port", http_port), "grpc-port", grpc_port), "metrics-port",
                     metrics_port)
    server = Running([SERVER_BIN] + args + ["--http-address=127.0.0.1"], str(tmp_path / "server.log"))
    workers = []
    try:
        for probe in http_probes(sc).values():
            wait_status(server, http_port, probe["httpGet"]["path"], "imagen-server")
        status, text = http_get(metrics_port, w["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"])
        assert status == 200
        assert re.search(r"^nv_inference_pending_request_count\{", text, re.M)
        if name == "overlays/gke":
            assert "asks for KIND_GPU" in server.log()

        for i, (ww, _, wc) in enumerate(imagen_containers(objs, "imagen-worker")):
            port = free_ports(1)[0]
            wargs = with_flag(wc["args"], "queue", f"sqlite://{tmp_path}/queue.db")
            wargs = with_flag(wargs, "server", f"grpc://127.0.0.1:{grpc_port}")
            wargs = with_flag(wargs, "metrics-port", port) + ["--metrics-address=127.0.0.1"]
            worker = Running([WORKER_BIN] + wargs, str(tmp_path / f"worker{i}.log"))
            workers.append(worker)
            for probe in http_probes(wc).values():
                wait_status(worker, port, probe["httpGet"]["path"], ww["metadata"]["name"])
            status, text = http_get(port, ww["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"])
            assert status == 200 and "imagen_worker_queue_jobs" in text
    finally:
        codes = [wk.stop() for wk in workers]
        code = server.stop()
    assert codes == [0] * len(workers), [wk.log() for wk in workers]
    assert code == 0, server.log()


def test_object_storage_overlay():
    """/models is an emptyDir the init container fills, and the base's PVC
    is gone (nothing would ever bind or use it)."""
    objs = render("overlays/object-storage")
    assert not of_kind(objs, "PersistentVolumeClaim")
    (w, spec, c), = imagen_containers(objs, "imagen-server")
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == flag(c["args"], "model-repository")]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume and "persistentVolumeClaim" not in volume
    (init,) = spec["initContainers"]
    assert any(m["name"] == mount["name"] and m["mountPath"] == "/models" for m in init["volumeMounts"])
    assert "rsync" in init["command"] and "$(MODEL_SOURCE)" in init["command"]
    source = by_name(objs, "ConfigMap", "imagen-model-source")
    assert source["data"]["MODEL_SOURCE"].startswith("gs://")
    assert init["envFrom"][0]["configMapRef"]["name"] == "imagen-model-source"
