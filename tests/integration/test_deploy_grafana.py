"""The Grafana dashboard (deploy/grafana/imagen.json) against the metrics the
programs really export.

The dashboard is only useful if every query names metrics and labels that
exist, and a renamed metric fails silently in Grafana (an empty panel). So
the test loads the JSON, pulls every PromQL expression out of it (panel
targets and the templating variables), extracts the metric names, label
names and literal label values each one uses, and checks them against a
real scrape of a running imagen-server (after inferences through the
bundled image models, so every per-model family is present) and a running
imagen-worker (after it has done a job of every operation).
"""
import json
import os
import re
import subprocess

import pytest
from PIL import Image

from conftest import ROOT, SERVER_BIN, SLOW, WRAPPER, Server
from imageutil import BUNDLED_MODELS
from workerutil import Worker

DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "imagen.json")
CLI_BIN = os.environ.get("IMAGEN_CLI_BIN", os.path.join(os.path.dirname(SERVER_BIN), "imagen"))
OPERATIONS = ("upscale", "enhance", "background_remove", "style_comic", "style_aged")

# PromQL words that look like identifiers but are not metric names.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}
# Labels Prometheus adds at scrape time (not in the programs' output).
TARGET_LABELS = {"instance", "job"}


# ---- PromQL parsing (just enough for the dashboard's expressions) ----------

def _strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def metric_names(expr):
    """Metric names an expression selects: identifiers outside label
    matchers, grouping clauses and range brackets that are not followed by
    '(' (a function or aggregation) and are not PromQL keywords."""
    e = _strip_strings(expr)
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # range and subquery durations
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![a-zA-Z0-9_:])(?!\s*\()", e):
        word = m.group(1)
        if word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def selectors(expr):
    """(metric, [(label, op, value)]) for every `metric{...}` in the expression."""
    out = []
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}", expr):
        matchers = re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', m.group(2))
        out.append((m.group(1), matchers))
    return out


def grouping_labels(expr):
    """Labels named in by (...), without (...), on (...) and ignoring (...)."""
    labels = set()
    for m in re.finditer(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", _strip_strings(expr)):
        labels.update(x.strip() for x in m.group(1).split(",") if x.strip())
    return labels


def balanced(expr):
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for ch in _strip_strings(expr):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack


def test_metric_name_extraction():
    """The parser the dashboard check relies on, on the shapes it meets."""
    e = ('sum by (model, le) (rate(nv_x_bucket{model=~"$model", le!="1"}[$__rate_interval]))\n'
         '/ on (model) sum by (model) (rate(nv_y[5m])) / 1000 > 0 and bool up')
    assert metric_names(e) == {"nv_x_bucket", "nv_y", "up"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(h_bucket[1m])))") == {"h_bucket"}
    assert metric_names("count(imagen_worker_start_time_seconds)") == {"imagen_worker_start_time_seconds"}
    assert selectors('a{x="1", y=~"$v"} + b') == [("a", [("x", "=", "1"), ("y", "=~", "$v")])]
    assert grouping_labels(e) == {"model", "le"}
    assert balanced(e) and not balanced("sum(rate(x[5m])")


# ---- the dashboard ------------------------------------------------------------

def load_dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def all_panels(dash):
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])  # collapsed rows keep their panels inside


def expressions(dash):
    """(where, expr) for every PromQL expression: panel targets and the
    label_values() queries of the templating variables."""
    out = []
    for p in all_panels(dash):
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} target {t.get('refId')}", t["expr"]))
    for v in dash["templating"]["list"]:
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)", q.strip())
        assert m, f"variable {v['name']}: unexpected query {q!r}"
        out.append((f"variable {v['name']}", f"sum by ({m.group(2)}) ({m.group(1)})"))
    return out


def test_dashboard_structure():
    dash = load_dashboard()
    assert dash["uid"] and dash["title"]
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"model", "op"} <= names
    ids = [p["id"] for p in all_panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in all_panels(dash):
        if p["type"] == "row":
            continue
        # Every panel and target reads the datasource chosen at import.
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p["targets"], f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
    exprs = [e for where, e in expressions(dash) if where.startswith("panel ")]
    for where, e in expressions(dash):
        assert balanced(e), f"{where}: unbalanced brackets in {e!r}"
    # Per-model panels follow the model variable, per-operation ones the op variable.
    for e in exprs:
        if "nv_inference_" in e:
            assert '$model' in e, e
        if re.search(r"imagen_worker_(jobs_total|jobs_in_flight|stage_seconds|queue_jobs)", e):
            assert '$op' in e, e


def test_dashboard_covers_the_issue():
    """The panels the deployment needs are there: request rate, failures by
    reason, queue and compute time, batch sizes, pending requests, worker
    jobs by result, queue depth and dead letters, stage durations."""
    text = "\n".join(e for _, e in expressions(load_dashboard()))
    for needle in ("nv_inference_request_success", "nv_inference_request_failure",
                   "by (model, reason)", "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us",
                   "nv_inference_exec_count", "nv_inference_pending_request_count", "imagen_worker_jobs_total",
                   'state="queued"', 'state="dead"', "imagen_worker_stage_seconds_sum",
                   "imagen_worker_server_available"):
        assert needle in text, needle


# ---- the real scrape ------------------------------------------------------------

def parse_scrape(text):
    """sample name -> list of label dicts, from Prometheus text format."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+\S+$", line)
        assert m, f"unparsable metrics line {line!r}"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        samples.setdefault(m.group(1), []).append(labels)
    return samples


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """Samples of one server (with the latency histogram on) and one worker
    that has run a job of every operation through it."""
    tmp = tmp_path_factory.mktemp("grafana")
    server = Server(BUNDLED_MODELS, ["--metrics-config=histogram_latencies=true"])
    worker = None
    try:
        queue = f"sqlite://{tmp}/queue.db"
        worker = Worker(queue, f"grpc://127.0.0.1:{server.grpc_port}", args=["--max-attempts=1"])
        img = tmp / "photo.png"
        Image.new("RGB", (48, 32), (180, 120, 60)).save(img)
        for op in OPERATIONS:
            p = subprocess.run(WRAPPER + [CLI_BIN, "submit", "--queue", queue, "--op", op, "--out", str(tmp / "out"),
                                          "--wait", str(img)], capture_output=True, text=True, timeout=120 * SLOW)
            assert p.returncode == 0, f"submit {op}: {p.stdout}{p.stderr}\n{worker.log()}"
        # One dead job, so the dead-letter series carry a non-zero value too.
        subprocess.run(WRAPPER + [CLI_BIN, "submit", "--queue", queue, "--op", "enhance", "--out",
                                  str(tmp / "out"), "http://127.0.0.1:9/unreachable.png"],
                       check=True, capture_output=True, timeout=60 * SLOW)
        worker.wait_metric("imagen_worker_queue_jobs", {"op": "enhance", "state": "dead"}, lambda v: v >= 1)
        samples = parse_scrape(server.metrics())
        for name, rows in parse_scrape(worker.metrics()).items():
            samples.setdefault(name, []).extend(rows)
        yield samples
    finally:
        if worker is not None:
            assert worker.stop() == 0, worker.log()
        assert server.stop() == 0, server.log()


def test_scrape_has_the_model_families(scraped):
    # The check below is only as good as the scrape: the image models must
    # have served requests, and the histogram must be on.
    served = {r["model"] for r in scraped["nv_inference_request_success"]}
    assert set(OPERATIONS) <= served
    assert "nv_inference_first_response_histogram_ms_bucket" in scraped
    assert {r["op"] for r in scraped["imagen_worker_jobs_total"]} >= set(OPERATIONS)


def test_every_expression_names_exported_metrics_and_labels(scraped):
    problems = []
    for where, expr in expressions(load_dashboard()):
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: no metric found in {expr!r}")
        for name in sorted(names):
            if name not in scraped:
                problems.append(f"{where}: metric {name} is not exported by imagen-server or imagen-worker")
        known = {label for n in names if n in scraped for row in scraped[n] for label in row} | TARGET_LABELS
        for label in sorted(grouping_labels(expr) - known):
            problems.append(f"{where}: label {label!r} is not a label of {sorted(names)}")
        for name, matchers in selectors(expr):
            rows = scraped.get(name, [])
            for label, op, value in matchers:
                if not any(label in r for r in rows) and label not in TARGET_LABELS:
                    problems.append(f"{where}: {name} has no label {label!r}")
                elif op == "=" and "$" not in value and not any(r.get(label) == value for r in rows):
                    problems.append(f"{where}: {name} has no series with {label}=\"{value}\"")
                elif op == "=~" and "$" not in value:
                    for alt in value.split("|"):
                        if re.fullmatch(r"[A-Za-z0-9_]+", alt) and not any(r.get(label) == alt for r in rows):
                            problems.append(f"{where}: {name} has no series with {label}=\"{alt}\"")
    assert not problems, "\n".join(problems)
