"""KServe v2 HTTP endpoints other than inference (spec §1.1-§1.8): health,
metadata, readiness, config, statistics, the repository extension, routing
errors and odd path segments, against a real imagen-server."""
import json

import pytest

from conftest import write_model
from httputil import add_sub_config, assert_error, assert_still_serving, identity, raw_http


@pytest.fixture
def server(repo, server_factory):
    write_model(repo, "identity", identity())
    write_model(repo, "add_sub", add_sub_config(extra="version_policy: { all: {} }"), versions=(1, 2))
    return server_factory(repo)


# ---- health and server metadata ------------------------------------------

def test_health_live_and_ready_have_empty_bodies(server):
    for path in ("/v2/health/live", "/v2/health/ready"):
        r = server.get(path)
        assert r.status == 200
        assert r.body == b""


def test_health_ready_is_400_when_a_model_failed(repo, server_factory):
    write_model(repo, "identity", identity())
    write_model(repo, "broken", 'name: "broken"\nbackend: "imageops"\nmax_batch_size: 0\n'
                'input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
                'output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
                'parameters { key: "operation" value: { string_value: "no_such_op" } }\n')
    s = server_factory(repo, "--exit-on-error=false", wait_ready=False)
    r = s.get("/v2/health/ready")
    assert r.status == 400
    assert r.body == b""
    assert s.get("/v2/health/live").status == 200


def test_server_metadata(server):
    r = server.get("/v2")
    assert r.status == 200
    assert r.header("Content-Type") == "application/json"
    body = r.json()
    assert list(body.keys()) == ["name", "version", "extensions"]
    assert body["name"] == "triton"
    assert body["version"] == "2.73.0dev"
    assert "binary_tensor_data" in body["extensions"]
    assert "classification" in body["extensions"]
    assert "model_repository(unload_dependents)" in body["extensions"]
    assert "logging" in body["extensions"]
    for absent in ("system_shared_memory", "cuda_shared_memory", "trace"):
        assert absent not in body["extensions"]


def test_server_metadata_uses_id_flag(repo, server_factory):
    write_model(repo, "identity", identity())
    s = server_factory(repo, "--id=imagen-test")
    assert s.get("/v2").json()["name"] == "imagen-test"


# ---- model metadata, readiness, config -----------------------------------

def test_model_metadata_shape_has_batch_dim(server):
    r = server.get("/v2/models/identity")
    assert r.status == 200
    body = r.json()
    assert list(body.keys()) == ["name", "versions", "platform", "inputs", "outputs"]
    assert body["name"] == "identity"
    assert body["versions"] == ["1"]
    assert body["platform"] == "imageops"
    assert body["inputs"] == [{"name": "INPUT0", "datatype": "INT32", "shape": [-1, -1]}]
    assert body["outputs"] == [{"name": "OUTPUT0", "datatype": "INT32", "shape": [-1, -1]}]


def test_model_metadata_lists_all_ready_versions(server):
    assert server.get("/v2/models/add_sub").json()["versions"] == ["1", "2"]
    assert server.get("/v2/models/add_sub/versions/1").json()["versions"] == ["1"]


def test_model_metadata_unknown_model_is_400(server):
    assert_error(server.get("/v2/models/nope"), 400, "Request for unknown model", "'nope'")


def test_model_ready(server):
    r = server.get("/v2/models/identity/ready")
    assert r.status == 200 and r.body == b""
    assert server.get("/v2/models/identity/versions/1/ready").status == 200
    assert_error(server.get("/v2/models/identity/versions/7/ready"), 400, "Model version not ready")
    assert_error(server.get("/v2/models/nope/ready"), 400, "Model version not ready")


def test_model_config_json_shape(server):
    r = server.get("/v2/models/add_sub/config")
    assert r.status == 200
    cfg = r.json()
    assert cfg["name"] == "add_sub"
    assert cfg["max_batch_size"] == 8
    assert [i["name"] for i in cfg["input"]] == ["INPUT0", "INPUT1"]
    assert cfg["input"][0]["data_type"] == "TYPE_INT32"
    assert cfg["input"][0]["dims"] == [4]
    assert cfg["parameters"]["operation"]["string_value"] == "add_sub"


def test_version_segment_must_be_digits(server):
    assert_error(server.get("/v2/models/identity/versions/abc"), 404, "Not Found")
    assert_error(server.get("/v2/models/identity/versions/-1/ready"), 404, "Not Found")


def test_version_overflowing_int64_is_400(server):
    assert_error(server.get("/v2/models/identity/versions/99999999999999999999"), 400,
                 "99999999999999999999")
    assert_still_serving(server)


# ---- statistics -------------------------------------------------------------

def test_stats_fields(server):
    assert_still_serving(server)
    r = server.get("/v2/models/identity/stats")
    assert r.status == 200
    stats = r.json()["model_stats"]
    assert len(stats) == 1
    s = stats[0]
    assert list(s.keys()) == ["name", "version", "last_inference", "inference_count", "execution_count",
                              "inference_stats", "response_stats", "batch_stats", "memory_usage"]
    assert s["name"] == "identity" and s["version"] == "1"
    assert s["inference_count"] == 1 and s["execution_count"] == 1
    assert set(s["inference_stats"].keys()) == {"success", "fail", "queue", "compute_input", "compute_infer",
                                                "compute_output", "cache_hit", "cache_miss"}
    assert s["inference_stats"]["success"]["count"] == 1
    assert s["inference_stats"]["queue"]["count"] == 1
    assert s["last_inference"] > 1_600_000_000_000
    assert s["batch_stats"][0]["batch_size"] == 1
    assert s["memory_usage"] == []


def test_stats_all_models(server):
    r = server.get("/v2/models/stats")
    assert r.status == 200
    names = sorted((s["name"], s["version"]) for s in r.json()["model_stats"])
    assert names == [("add_sub", "1"), ("add_sub", "2"), ("identity", "1")]


def test_stats_one_version(server):
    stats = server.get("/v2/models/add_sub/versions/2/stats").json()["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [("add_sub", "2")]


def test_stats_unknown_model_is_400(server):
    r = server.get("/v2/models/nope/stats")
    assert r.status == 400
    assert "nope" in r.json()["error"]


# ---- repository extension -------------------------------------------------

def test_repository_index(server):
    r = server.post("/v2/repository/index")
    assert r.status == 200
    rows = r.json()
    assert {"name": "identity", "version": "1", "state": "READY"} in rows
    assert {"name": "add_sub", "version": "2", "state": "READY"} in rows


def test_repository_index_ready_filter_and_type_check(server):
    assert all(row["state"] == "READY" for row in server.post("/v2/repository/index", body={"ready": True}).json())
    assert_error(server.post("/v2/repository/index", body={"ready": "yes"}), 400, "ready")
    assert_error(server.post("/v2/repository/index", body="{not json"), 400, "failed to parse")
    assert server.post("/v2/repository/myrepo/index").status == 200


def test_load_unload_rejected_in_none_mode(server):
    assert_error(server.post("/v2/repository/models/identity/unload"), 503)
    assert_error(server.post("/v2/repository/models/identity/load"), 503)
    assert server.get("/v2/models/identity/ready").status == 200


def test_load_and_unload_in_explicit_mode(repo, server_factory):
    write_model(repo, "identity", identity())
    write_model(repo, "other", identity(name="other"))
    s = server_factory(repo, "--model-control-mode=explicit", "--load-model=identity")
    index = s.post("/v2/repository/index").json()
    assert {"name": "other"} in index
    r = s.post("/v2/repository/models/other/load")
    assert r.status == 200 and r.body == b""
    assert s.get("/v2/models/other/ready").status == 200
    assert_still_serving(s, "other")
    r = s.post("/v2/repository/models/other/unload", body={"parameters": {"unload_dependents": True}})
    assert r.status == 200
    assert s.get("/v2/models/other/ready").status == 400
    rows = s.post("/v2/repository/index").json()
    assert {"name": "other", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"} in rows
    assert_error(s.post("/v2/repository/models/other/unload",
                        body={"parameters": {"unload_dependents": "yes"}}), 400, "unload_dependents")


def test_load_with_config_override(repo, server_factory):
    write_model(repo, "identity", identity())
    s = server_factory(repo, "--model-control-mode=explicit", "--load-model=identity")
    cfg = {"name": "identity", "backend": "imageops", "max_batch_size": 4,
           "input": [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [-1]}],
           "output": [{"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": [-1]}],
           "parameters": {"operation": {"string_value": "identity"}}}
    r = s.post("/v2/repository/models/identity/load", body={"parameters": {"config": json.dumps(cfg)}})
    assert r.status == 200, r.body
    assert s.get("/v2/models/identity/config").json()["max_batch_size"] == 4
    assert_error(s.post("/v2/repository/models/identity/load", body={"parameters": {"config": {"a": 1}}}),
                 400, "config")


def test_load_with_repository_name_is_unsupported(repo, server_factory):
    write_model(repo, "identity", identity())
    s = server_factory(repo, "--model-control-mode=explicit", "--load-model=identity")
    assert_error(s.post("/v2/repository/myrepo/models/identity/load"), 501, "repository_name")
    assert_error(s.post("/v2/repository/myrepo/models/identity/unload"), 501, "repository_name")


# ---- routing errors ---------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("POST", "/v2"), ("POST", "/v2/health/live"), ("GET", "/v2/models/identity/infer"),
    ("DELETE", "/v2/models/identity"), ("GET", "/v2/repository/index"), ("PUT", "/v2/models/stats"),
])
def test_wrong_method_is_405(server, method, path):
    assert_error(server.request(method, path), 405, "Method Not Allowed")


@pytest.mark.parametrize("path", [
    "/", "/v1", "/v2/", "/v2/health", "/v2/models", "/v2/models/identity/", "/v2/models/identity/foo",
    "/v2/models/identity/versions/1/generate", "/v2/models/identity/generate_stream", "/v2/trace/setting",
    "/v2/models/identity/trace/setting", "/v2/models//ready",
])
def test_unknown_path_is_404(server, path):
    assert_error(server.request("POST" if "generate" in path else "GET", path), 404, "Not Found")


def test_shared_memory_is_disabled(server):
    r = server.get("/v2/systemsharedmemory/status")
    assert r.status == 200 and r.json() == []
    assert_error(server.post("/v2/systemsharedmemory/region/r0/register", body={"key": "/k", "byte_size": 4}),
                 501, "--allow-client-shm=true")
    assert_error(server.post("/v2/cudasharedmemory/unregister"), 501, "shared memory is disabled")


def test_logging_get(server):
    r = server.get("/v2/logging")
    assert r.status == 200
    body = r.json()
    assert set(body) == {"log_file", "log_info", "log_warning", "log_error", "log_verbose_level", "log_format"}


def test_logging_post_changes_settings_and_rejects_log_file(server):
    r = server.post("/v2/logging", body={"log_verbose_level": 1, "log_info": False})
    assert r.status == 200
    assert r.json()["log_verbose_level"] == 1 and r.json()["log_info"] is False
    assert server.get("/v2/logging").json()["log_verbose_level"] == 1
    assert_error(server.post("/v2/logging", body={"log_file": "/tmp/x"}), 501, "log file")
    assert_error(server.post("/v2/logging", body={"log_verbose_level": "a"}), 400, "log_verbose_level")
    server.post("/v2/logging", body={"log_verbose_level": 0, "log_info": True})


@pytest.mark.parametrize("segment", [
    "%2e%2e", "a%2Fb", "%00", "%zz", "na%20me", "%ff%fe", "x" * 3000, "%25", "\u00e9".encode().decode("latin-1"),
])
def test_odd_model_names_give_unknown_model(server, segment):
    quoted = segment if segment.isascii() else "%C3%A9"
    r = server.get(f"/v2/models/{quoted}")
    assert_error(r, 400, "Request for unknown model")
    r = server.post(f"/v2/models/{quoted}/infer", body={"inputs": []})
    assert_error(r, 400, "Request for unknown model")
    assert_still_serving(server)


def test_garbage_request_line_does_not_hurt(server):
    out = raw_http(server.http_port, b"GARBAGE /v2/models/\x01\x02 HTTP/1.1\r\nHost: x\r\n\r\n", timeout=2)
    assert out == b"" or out.startswith(b"HTTP/1.1 4")
    assert_still_serving(server)
