"""The Prometheus endpoint on the metrics port (spec §6): families, labels,
flags, and agreement with the /stats JSON after a known number of requests."""
import re
import subprocess

import pytest

from conftest import SERVER_BIN, write_model
from httputil import identity, infer_body, metric_value, timed_config

LABELS = {"model": "identity", "version": "1"}


def run_requests(server, n):
    for i in range(n):
        r = server.post("/v2/models/identity/infer", body=infer_body(
            [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 2], "data": [i, i]}]))
        assert r.status == 200


def families(text):
    helps = re.findall(r"^# HELP (\S+) ", text, re.M)
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    return helps, types


@pytest.fixture
def server(repo, server_factory):
    write_model(repo, "identity", identity())
    return server_factory(repo)


def test_metrics_content_type_and_paths(server):
    r = server.request("GET", "/metrics", port=server.metrics_port)
    assert r.status == 200
    assert r.header("Content-Type") == "text/plain; charset=utf-8"
    assert server.request("GET", "/metrics/", port=server.metrics_port).status == 200
    assert server.request("POST", "/metrics", port=server.metrics_port).status == 405
    assert server.request("GET", "/other", port=server.metrics_port).status == 404


def test_every_family_once_with_help_and_type(server):
    text = server.metrics()
    helps, types = families(text)
    assert len(helps) == len(set(helps))
    for name, kind in [("nv_inference_request_success", "counter"), ("nv_inference_request_failure", "counter"),
                       ("nv_inference_count", "counter"), ("nv_inference_exec_count", "counter"),
                       ("nv_inference_request_duration_us", "counter"),
                       ("nv_inference_queue_duration_us", "counter"),
                       ("nv_inference_compute_input_duration_us", "counter"),
                       ("nv_inference_compute_infer_duration_us", "counter"),
                       ("nv_inference_compute_output_duration_us", "counter"),
                       ("nv_inference_pending_request_count", "gauge"), ("nv_model_load_duration_secs", "gauge"),
                       ("nv_cpu_utilization", "gauge"), ("nv_cpu_memory_total_bytes", "gauge"),
                       ("nv_cpu_memory_used_bytes", "gauge")]:
        assert name in helps, name
        assert types[name] == kind, name
    assert "nv_inference_first_response_histogram_ms" not in types
    for reason in ("REJECTED", "CANCELED", "BACKEND", "OTHER"):
        assert metric_value(text, "nv_inference_request_failure", dict(LABELS, reason=reason)) == 0
    assert metric_value(text, "nv_cpu_memory_total_bytes", {}) > 0
    assert 0.0 <= metric_value(text, "nv_cpu_utilization", {}) <= 1.0


def test_counters_agree_with_stats(server):
    run_requests(server, 5)
    text = server.metrics()
    s = server.get("/v2/models/identity/stats").json()["model_stats"][0]
    st = s["inference_stats"]
    assert metric_value(text, "nv_inference_request_success", LABELS) == 5 == st["success"]["count"]
    assert metric_value(text, "nv_inference_count", LABELS) == s["inference_count"] == 5
    assert metric_value(text, "nv_inference_exec_count", LABELS) == s["execution_count"]
    assert metric_value(text, "nv_inference_request_duration_us", LABELS) == st["success"]["ns"] // 1000
    assert metric_value(text, "nv_inference_queue_duration_us", LABELS) == st["queue"]["ns"] // 1000
    assert metric_value(text, "nv_inference_compute_infer_duration_us", LABELS) == st["compute_infer"]["ns"] // 1000
    assert metric_value(text, "nv_inference_pending_request_count", LABELS) == 0


def test_metric_tags_become_labels(repo, server_factory):
    write_model(repo, "identity", identity(extra='metric_tags { key: "team" value: "vi\\\\sion" }'))
    s = server_factory(repo)
    run_requests(s, 1)
    text = s.metrics()
    assert 'nv_inference_count{_team="vi\\\\sion",model="identity",version="1"} 1' in text


def test_counter_latencies_off_and_histogram_on(repo, server_factory):
    write_model(repo, "identity", identity())
    s = server_factory(repo, "--metrics-config=counter_latencies=false", "--metrics-config=histogram_latencies=true")
    run_requests(s, 3)
    text = s.metrics()
    _, types = families(text)
    assert "nv_inference_request_duration_us" not in types
    assert types["nv_inference_first_response_histogram_ms"] == "histogram"
    h = "nv_inference_first_response_histogram_ms"
    assert metric_value(text, h + "_count", LABELS) == 3
    assert metric_value(text, h + "_bucket", dict(LABELS, le="+Inf")) == 3
    assert metric_value(text, h + "_bucket", dict(LABELS, le="100")) == 3
    assert metric_value(text, h + "_sum", LABELS) is not None


def test_cpu_metrics_can_be_disabled(repo, server_factory):
    write_model(repo, "identity", identity())
    s = server_factory(repo, "--allow-cpu-metrics=false")
    assert "nv_cpu_utilization" not in s.metrics()


def test_unloaded_model_keeps_counters(repo, server_factory):
    write_model(repo, "identity", identity())
    s = server_factory(repo, "--model-control-mode=explicit", "--load-model=identity")
    run_requests(s, 2)
    assert s.post("/v2/repository/models/identity/unload").status == 200
    assert metric_value(s.metrics(), "nv_inference_request_success", LABELS) == 2


def test_latency_summaries(repo, server_factory):
    write_model(repo, "identity", identity())
    write_model(repo, "timed", timed_config(fixed_us=20000, max_batch_size=0).replace("dims: [ -1 ]", "dims: [ 3 ]"))
    s = server_factory(repo, "--metrics-config=summary_latencies=true")
    text = s.metrics()
    _, types = families(text)
    phases = ["request", "queue", "compute_input", "compute_infer", "compute_output"]
    for p in phases:
        assert types[f"nv_inference_{p}_summary_us"] == "summary"
    timed = {"model": "timed", "version": "1"}
    # Before any request: count 0 and NaN quantiles (no observations).
    assert metric_value(text, "nv_inference_compute_infer_summary_us_count", timed) == 0
    assert re.search(r'^nv_inference_compute_infer_summary_us\{model="timed",quantile="0.5",version="1"\} NaN$',
                     text, re.M)
    for _ in range(10):
        r = s.post("/v2/models/timed/infer", body=infer_body(
            [{"name": "INPUT0", "datatype": "INT32", "shape": [3], "data": [1, 2, 3]}]))
        assert r.status == 200
    text = s.metrics()
    for p in phases:
        assert metric_value(text, f"nv_inference_{p}_summary_us_count", timed) == 10
    for q in ("0.5", "0.9", "0.95", "0.99", "0.999"):
        v = metric_value(text, "nv_inference_compute_infer_summary_us", dict(timed, quantile=q))
        assert 20000 * 0.97 <= v <= 20000 * 1.25, (q, v)  # the timed model sleeps 20 ms, a little more under load
        req = metric_value(text, "nv_inference_request_summary_us", dict(timed, quantile=q))
        assert req >= v * 0.97
    infer_sum = metric_value(text, "nv_inference_compute_infer_summary_us_sum", timed)
    stats = s.get("/v2/models/timed/stats").json()["model_stats"][0]["inference_stats"]
    assert abs(infer_sum - stats["compute_infer"]["ns"] / 1000) < 1  # the same observations as /stats


def test_latency_summary_quantiles_flag(repo, server_factory):
    write_model(repo, "identity", identity())
    s = server_factory(repo, "--metrics-config=summary_latencies=true",
                       "--metrics-config=summary_quantiles=0.25:0.05,0.75:0.01")
    run_requests(s, 3)
    text = s.metrics()
    qs = set(re.findall(r'^nv_inference_queue_summary_us\{model="identity",quantile="([^"]+)"', text, re.M))
    assert qs == {"0.25", "0.75"}


@pytest.mark.parametrize("value", ["0.5", "1.5:0.1", "0.5:0.1,", "x:0.1", "0.5:0.1,0.6:0.1,0.7:0.1,0.8:0.1,"
                                   "0.9:0.1,0.91:0.1,0.92:0.1,0.93:0.1,0.94:0.1"])
def test_bad_summary_quantiles_are_refused(repo, value):
    write_model(repo, "identity", identity())
    p = subprocess.run([SERVER_BIN, f"--model-repository={repo}", f"--metrics-config=summary_quantiles={value}"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    assert "summary_quantiles" in p.stderr
