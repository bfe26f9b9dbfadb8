"""Model repository (spec §3.10, §4, §1.8): version folders and version
policies, routing to the highest READY version, model control modes none /
poll / explicit and the repository API, parallel loading, failed models and
readiness, KIND_GPU fallback, --model-config-name and backend auto-complete."""
import json
import os
import shutil
import time

import pytest

from conftest import SLOW
from schedutil import (Call, assert_echo, assert_error, identity_model, index_entries, index_entry, infer,
                       model_config, op_config, ready_versions, repo_index, timed_config, wait_for, write_model)


def metadata_versions(server, name):
    r = server.get(f"/v2/models/{name}")
    assert r.status == 200, (r.status, r.body)
    return sorted(r.json()["versions"], key=int)


# ---------------------------------------------------------------------------
# Versions (§4.1, §4.3)
# ---------------------------------------------------------------------------

def test_only_canonical_numeric_version_folders_are_versions(repo, server_factory):
    # "03" (leading zero) and "abc" are ignored; "0" alone is version 0.
    identity_model(repo, "vers", extra="version_policy: { all { } }", versions=("0", "1", "3", "03", "abc"))
    s = server_factory(repo)
    assert ready_versions(s, "vers") == [0, 1, 3]
    assert metadata_versions(s, "vers") == ["0", "1", "3"]


@pytest.mark.parametrize("policy,expected", [
    ("", [3]),
    ("version_policy: { latest: { num_versions: 2 } }", [2, 3]),
    ("version_policy: { all { } }", [1, 2, 3]),
    ("version_policy: { specific: { versions: [ 1, 3, 5 ] } }", [1, 3]),
], ids=["default-latest-1", "latest-2", "all", "specific"])
def test_version_policy_selects_loaded_versions(repo, server_factory, policy, expected):
    identity_model(repo, "vp", extra=policy, versions=(1, 2, 3))
    s = server_factory(repo)
    assert ready_versions(s, "vp") == expected
    assert metadata_versions(s, "vp") == [str(v) for v in expected]
    for v in expected:
        assert s.get(f"/v2/models/vp/versions/{v}/ready").status == 200


@pytest.mark.parametrize("policy,versions", [
    ("version_policy: { specific: { versions: [ 5 ] } }", (1, 2)),
    ("", ()),
], ids=["policy-matches-no-folder", "no-version-folder"])
def test_model_without_any_selected_version_fails(repo, server_factory, policy, versions):
    identity_model(repo, "empty", extra=policy, versions=versions)
    identity_model(repo, "good")
    s = server_factory(repo, "--exit-on-error=false", wait_ready=False)
    entry = index_entry(s, "empty")
    assert entry.get("state") == "UNAVAILABLE", entry
    assert "at least one version must be available under the version policy of model 'empty'" \
        in entry.get("reason", ""), entry
    assert s.get("/v2/health/ready").status == 400
    assert_echo(infer(s, "good"))


def test_metadata_with_version_lists_only_that_version(repo, server_factory):
    identity_model(repo, "multi", extra="version_policy: { all { } }", versions=(1, 2))
    s = server_factory(repo)
    r = s.get("/v2/models/multi/versions/1")
    assert r.status == 200, r.body
    assert r.json()["versions"] == ["1"]
    assert metadata_versions(s, "multi") == ["1", "2"]


def test_request_without_version_uses_highest_ready_version(repo, server_factory):
    identity_model(repo, "routed", extra="version_policy: { latest: { num_versions: 2 } }", versions=(1, 2, 3))
    s = server_factory(repo)
    r = infer(s, "routed", value=9)
    assert_echo(r, value=9)
    assert r.json()["model_version"] == "3"
    r = infer(s, "routed", version=2, value=9)
    assert_echo(r, value=9)
    assert r.json()["model_version"] == "2"
    assert_error(infer(s, "routed", version=1), 404, "'routed' version 1 is not found")


def test_model_name_must_match_folder(repo, server_factory):
    write_model(repo, "alpha", op_config("beta", "identity"))
    identity_model(repo, "good")
    s = server_factory(repo, "--exit-on-error=false", wait_ready=False)
    entry = index_entry(s, "alpha")
    assert entry["state"] == "UNAVAILABLE", entry
    assert "beta" in entry.get("reason", ""), entry
    assert not index_entries(s, "beta")
    assert_echo(infer(s, "good"))


# ---------------------------------------------------------------------------
# Poll mode (§4.4)
# ---------------------------------------------------------------------------

POLL = ("--model-control-mode=poll", "--repository-poll-secs=1")


def test_poll_loads_added_model(repo, server_factory):
    identity_model(repo, "first")
    s = server_factory(repo, *POLL)
    assert_error(infer(s, "second"), 400, "'second'")
    identity_model(repo, "second")
    wait_for(lambda: s.get("/v2/models/second/ready").status == 200, timeout=5.0, what="'second' loaded")
    assert_echo(infer(s, "second", value=4), value=4)
    assert index_entry(s, "second")["state"] == "READY"


def test_poll_loads_added_version(repo, server_factory):
    mdir = identity_model(repo, "growing", versions=(1,))
    s = server_factory(repo, *POLL)
    assert infer(s, "growing").json()["model_version"] == "1"
    os.makedirs(os.path.join(mdir, "2"))
    wait_for(lambda: ready_versions(s, "growing") == [2], timeout=5.0, what="version 2 replacing version 1")
    r = infer(s, "growing", value=5)
    assert_echo(r, value=5)
    assert r.json()["model_version"] == "2"
    assert metadata_versions(s, "growing") == ["2"]


def test_poll_unloads_removed_model(repo, server_factory):
    identity_model(repo, "first")
    mdir = identity_model(repo, "doomed")
    s = server_factory(repo, *POLL)
    assert_echo(infer(s, "doomed"))
    shutil.rmtree(mdir)
    wait_for(lambda: s.get("/v2/models/doomed/ready").status != 200, timeout=5.0, what="'doomed' unloaded")
    assert_error(infer(s, "doomed"), 404, "'doomed' has no available versions")
    assert not [e for e in index_entries(s, "doomed") if e.get("state") == "READY"]
    assert_echo(infer(s, "first"))
    # An unloaded model does not make the server unready (strict readiness).
    assert s.get("/v2/health/ready").status == 200


def test_poll_reloads_model_moved_out_and_back_unchanged(repo, tmp_path, server_factory):
    # mv keeps names, sizes and modification times: the folder looks exactly
    # as before, and must still load again once it is back.
    mdir = identity_model(repo, "wanderer")
    s = server_factory(repo, *POLL)
    parked = str(tmp_path / "parked")
    shutil.move(mdir, parked)
    wait_for(lambda: s.get("/v2/models/wanderer/ready").status != 200, timeout=5.0, what="'wanderer' unloaded")
    shutil.move(parked, mdir)
    wait_for(lambda: s.get("/v2/models/wanderer/ready").status == 200, timeout=5.0, what="'wanderer' reloaded")
    assert_echo(infer(s, "wanderer"))
    assert s.get("/v2/health/ready").status == 200


def test_poll_removing_failed_model_makes_server_ready(repo, server_factory):
    identity_model(repo, "good")
    bad = write_model(repo, "bad", "this is not a config")
    s = server_factory(repo, *POLL, "--exit-on-error=false", wait_ready=False)
    assert s.get("/v2/health/ready").status == 400
    shutil.rmtree(bad)
    wait_for(lambda: s.get("/v2/health/ready").status == 200, timeout=5.0, what="server ready")


def test_explicit_load_of_missing_model_leaves_readiness_alone(repo, server_factory):
    identity_model(repo, "good")
    s = server_factory(repo, "--model-control-mode=explicit", "--load-model=good")
    assert_error(s.post("/v2/repository/models/typo/load"), 400, "no model directory named 'typo'")
    assert s.get("/v2/health/ready").status == 200
    assert not index_entries(s, "typo")


def test_explicit_unload_of_failed_model_makes_server_ready(repo, server_factory):
    identity_model(repo, "good")
    write_model(repo, "bad", "max_batch_size: -1")
    s = server_factory(repo, "--model-control-mode=explicit", "--load-model=good")
    assert s.post("/v2/repository/models/bad/load").status != 200
    assert s.get("/v2/health/ready").status == 400
    assert s.post("/v2/repository/models/bad/unload").status == 200
    assert s.get("/v2/health/ready").status == 200


def test_poll_reloads_edited_config(repo, server_factory):
    identity_model(repo, "edited", max_batch_size=8)
    s = server_factory(repo, *POLL)
    assert model_config(s, "edited")["max_batch_size"] == 8
    time.sleep(1.1)  # a new mtime second, whatever the file system's granularity
    identity_model(repo, "edited", max_batch_size=4)
    wait_for(lambda: model_config(s, "edited")["max_batch_size"] == 4, timeout=5.0, what="reloaded config")
    assert_error(infer(s, "edited", batch=5), 400, "batch-size must be <= 4")
    assert_echo(infer(s, "edited", batch=4), batch=4)


def test_poll_broken_edit_keeps_old_version_serving(repo, server_factory):
    mdir = identity_model(repo, "stable", max_batch_size=8)
    s = server_factory(repo, *POLL)
    time.sleep(1.1)
    with open(os.path.join(mdir, "config.pbtxt"), "w") as f:
        f.write('name: "stable"\nmax_batch_size: [[[\n')
    wait_for(lambda: "config.pbtxt:2:" in s.log(), timeout=5.0, what="the failed reload in the log")
    assert_echo(infer(s, "stable", batch=8), batch=8)
    assert model_config(s, "stable")["max_batch_size"] == 8
    assert s.get("/v2/models/stable/ready").status == 200
    assert ready_versions(s, "stable") == [1]


# ---------------------------------------------------------------------------
# Explicit mode and the repository API (§1.8, §4.4)
# ---------------------------------------------------------------------------

EXPLICIT = "--model-control-mode=explicit"


def test_explicit_mode_loads_only_named_models(repo, server_factory):
    identity_model(repo, "wanted")
    identity_model(repo, "other")
    s = server_factory(repo, EXPLICIT, "--load-model=wanted")
    assert_echo(infer(s, "wanted"))
    assert index_entry(s, "wanted")["state"] == "READY"
    assert index_entry(s, "other") == {"name": "other"}
    assert_error(infer(s, "other"), 400, "'other'")


def test_explicit_load_and_unload_api(repo, server_factory):
    identity_model(repo, "lazy")
    s = server_factory(repo, EXPLICIT)
    assert index_entry(s, "lazy") == {"name": "lazy"}
    r = s.post("/v2/repository/models/lazy/load")
    assert r.status == 200, r.body
    assert_echo(infer(s, "lazy", value=3), value=3)
    assert index_entry(s, "lazy")["state"] == "READY"
    r = s.post("/v2/repository/models/lazy/unload")
    assert r.status == 200, r.body
    assert s.get("/v2/models/lazy/ready").status == 400
    entry = index_entry(s, "lazy")
    assert (entry["state"], entry.get("reason")) == ("UNAVAILABLE", "unloaded"), entry
    assert_error(infer(s, "lazy"), 404, "'lazy' has no available versions")
    assert_error(s.get("/v2/models/lazy/stats"), 400, "'lazy' is not available")
    assert s.get("/v2/health/ready").status == 200


def test_explicit_load_with_config_override(repo, server_factory):
    identity_model(repo, "overridden", max_batch_size=8)
    s = server_factory(repo, EXPLICIT, "--load-model=overridden")
    assert model_config(s, "overridden")["max_batch_size"] == 8
    cfg = {"name": "overridden", "backend": "imageops", "max_batch_size": 2,
           "input": [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [-1]}],
           "output": [{"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": [-1]}],
           "parameters": {"operation": {"string_value": "identity"}}}
    r = s.post("/v2/repository/models/overridden/load", body={"parameters": {"config": json.dumps(cfg)}})
    assert r.status == 200, r.body
    assert model_config(s, "overridden")["max_batch_size"] == 2
    assert_error(infer(s, "overridden", batch=3), 400, "batch-size must be <= 2")
    assert_echo(infer(s, "overridden", batch=2), batch=2)


def test_reload_lets_in_flight_request_finish(repo, server_factory):
    # A 600 ms request is executing when the model is reloaded with a new
    # config; the load returns, the request still succeeds, and later
    # requests see the new config.
    write_model(repo, "swapped", timed_config("swapped", fixed_us=600000, max_batch_size=8))
    s = server_factory(repo, EXPLICIT, "--load-model=swapped")
    slow = Call(s, "swapped", tag=3)
    time.sleep(0.1 * SLOW)
    write_model(repo, "swapped", timed_config("swapped", fixed_us=1000, max_batch_size=4))
    r = s.post("/v2/repository/models/swapped/load")
    assert r.status == 200, r.body
    assert_echo(slow.result(), value=3)
    assert model_config(s, "swapped")["max_batch_size"] == 4
    assert_echo(infer(s, "swapped", batch=4), batch=4)
    assert index_entry(s, "swapped")["state"] == "READY"


def test_explicit_load_with_bad_config_override_keeps_old_version(repo, server_factory):
    identity_model(repo, "kept", max_batch_size=8)
    s = server_factory(repo, EXPLICIT, "--load-model=kept")
    bad = json.dumps({"name": "kept", "backend": "imageops", "max_batch_size": 2, "bogus_field": 1})
    r = s.post("/v2/repository/models/kept/load", body={"parameters": {"config": bad}})
    assert_error(r, 400, "bogus_field")
    assert model_config(s, "kept")["max_batch_size"] == 8
    assert_echo(infer(s, "kept", batch=8), batch=8)
    assert index_entry(s, "kept")["state"] == "READY"


def test_explicit_load_reports_failure_then_loads_fixed_model(repo, server_factory):
    write_model(repo, "fixme", 'name: "fixme"\nbackend: "imageops"\nmax_batch_size 8\n')
    s = server_factory(repo, EXPLICIT, "--load-model=fixme", "--exit-on-error=false", wait_ready=False)
    entry = index_entry(s, "fixme")
    assert entry.get("state") == "UNAVAILABLE" and "config.pbtxt:3:16" in entry.get("reason", ""), entry
    r = s.post("/v2/repository/models/fixme/load")
    assert_error(r, 400, "config.pbtxt:3:16")
    identity_model(repo, "fixme")
    r = s.post("/v2/repository/models/fixme/load")
    assert r.status == 200, r.body
    assert index_entry(s, "fixme")["state"] == "READY"
    assert_echo(infer(s, "fixme"))


def test_index_ready_filter(repo, server_factory):
    identity_model(repo, "loaded")
    identity_model(repo, "idle")
    s = server_factory(repo, EXPLICIT, "--load-model=loaded")
    assert repo_index(s, {"ready": True}) == [{"name": "loaded", "version": "1", "state": "READY"}]
    assert sorted(e["name"] for e in repo_index(s, {"ready": False})) == ["idle", "loaded"]
    assert_error(s.post("/v2/repository/index", body={"ready": "yes"}), 400)


def test_explicit_load_model_star_loads_all(repo, server_factory):
    for name in ("m1", "m2", "m3"):
        identity_model(repo, name)
    s = server_factory(repo, EXPLICIT, "--load-model=*")
    for name in ("m1", "m2", "m3"):
        assert index_entry(s, name)["state"] == "READY"
        assert_echo(infer(s, name))


@pytest.mark.parametrize("mode", ["none", "poll"])
@pytest.mark.parametrize("action", ["load", "unload"])
def test_repository_api_rejected_outside_explicit_mode(repo, server_factory, mode, action):
    identity_model(repo, "fixed")
    s = server_factory(repo, f"--model-control-mode={mode}")
    assert_error(s.post(f"/v2/repository/models/fixed/{action}"), 503, "not allowed")
    assert_echo(infer(s, "fixed"))


def test_models_load_in_parallel(repo, server_factory):
    # Ten models whose warmup sleeps 300 ms, four load threads: about three
    # rounds (0.9 s), far from the 3 s a serial load would take.
    warm = """model_warmup [ { name: "w" batch_size: 1
      inputs { key: "INPUT0" value: { data_type: TYPE_INT32 dims: [ 2 ] zero_data: true } } } ]"""
    for i in range(10):
        write_model(repo, f"w{i}", timed_config(f"w{i}", fixed_us=300000, extra=warm))
    t0 = time.monotonic()
    s = server_factory(repo, "--model-load-thread-count=4")
    elapsed = time.monotonic() - t0
    assert elapsed < 2.4 * SLOW, f"10 x 300 ms warmups on 4 threads took {elapsed:.2f} s"
    assert elapsed >= 0.85, f"10 x 300 ms warmups on 4 threads took only {elapsed:.2f} s"
    assert ready_versions(s, "w9") == [1]


# ---------------------------------------------------------------------------
# Failed models (§4.4, §1.3)
# ---------------------------------------------------------------------------

BAD_MODELS = {
    "unknown-operation": (op_config("bad", "nosuch_op"), "nosuch_op"),
    "missing-backend": (op_config("bad", "identity").replace('"imageops"', '"nosuch_backend"'), "nosuch_backend"),
    "malformed": ('name: "bad"\nbackend: "imageops"\nmax_batch_size 8\n', "config.pbtxt:3:16"),
    "impossible-dims": (op_config("bad", "identity", dims="[ -2 ]"), "INPUT0"),
}


@pytest.mark.parametrize("kind", list(BAD_MODELS))
def test_failed_model_listed_unavailable_while_others_serve(repo, server_factory, kind):
    cfg, fragment = BAD_MODELS[kind]
    write_model(repo, "bad", cfg)
    identity_model(repo, "good")
    s = server_factory(repo, "--exit-on-error=false", wait_ready=False)
    entry = index_entry(s, "bad")
    assert entry["state"] == "UNAVAILABLE", entry
    assert fragment in entry.get("reason", ""), entry
    assert index_entry(s, "good")["state"] == "READY"
    assert_echo(infer(s, "good", value=6), value=6)
    assert infer(s, "bad").status != 200


def test_exit_on_error_default_exits_with_the_reason(repo, server_factory):
    write_model(repo, "bad", op_config("bad", "nosuch_op"))
    identity_model(repo, "good")
    s = server_factory(repo, expect_fail=True)
    rc = s.wait_exit()
    assert rc != 0
    assert "nosuch_op" in s.log()


@pytest.mark.parametrize("strict,status", [("true", 400), ("false", 200)])
def test_strict_readiness_with_a_failed_model(repo, server_factory, strict, status):
    write_model(repo, "bad", op_config("bad", "nosuch_op"))
    identity_model(repo, "good")
    s = server_factory(repo, "--exit-on-error=false", f"--strict-readiness={strict}", wait_ready=False)
    r = s.get("/v2/health/ready")
    assert r.status == status
    assert r.body == b""
    assert s.get("/v2/health/live").status == 200
    assert_echo(infer(s, "good"))


# ---------------------------------------------------------------------------
# Instance kind, config selection, auto-complete
# ---------------------------------------------------------------------------

def test_kind_gpu_falls_back_to_cpu_with_one_warning(repo, server_factory):
    identity_model(repo, "gpu", extra="instance_group [ { count: 2, kind: KIND_GPU } ]")
    s = server_factory(repo)
    assert_echo(infer(s, "gpu"))
    lines = [ln for ln in s.log().splitlines() if "KIND_GPU" in ln]
    assert len(lines) == 1, lines
    assert lines[0].startswith("warning"), lines
    assert "'gpu'" in lines[0], lines


def test_model_config_name_selects_alternate_config(repo, server_factory):
    identity_model(repo, "alt", max_batch_size=8)
    write_model(repo, "alt", None, files={"configs/small.pbtxt": op_config("alt", "identity", max_batch_size=2)})
    identity_model(repo, "plain", max_batch_size=8)
    s = server_factory(repo, "--model-config-name=small")
    assert model_config(s, "alt")["max_batch_size"] == 2
    assert model_config(s, "plain")["max_batch_size"] == 8
    assert_error(infer(s, "alt", batch=3), 400, "batch-size must be <= 2")


ADD_SUB_NO_IO = """
name: "autoadd"
backend: "imageops"
parameters { key: "operation" value: { string_value: "add_sub" } }
"""


def test_auto_complete_fills_add_sub_tensors(repo, server_factory):
    write_model(repo, "autoadd", ADD_SUB_NO_IO)
    s = server_factory(repo, "--strict-model-config=false")
    cfg = model_config(s, "autoadd")
    assert [(t["name"], t["data_type"], t["dims"]) for t in cfg["input"]] == [
        ("INPUT0", "TYPE_FP32", [-1]), ("INPUT1", "TYPE_FP32", [-1])]
    assert [(t["name"], t["data_type"], t["dims"]) for t in cfg["output"]] == [
        ("OUTPUT0", "TYPE_FP32", [-1]), ("OUTPUT1", "TYPE_FP32", [-1])]
    assert cfg["max_batch_size"] == 0
    r = s.post("/v2/models/autoadd/infer", body={"inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [3], "data": [1, 2, 3]},
        {"name": "INPUT1", "datatype": "FP32", "shape": [3], "data": [10, 20, 30]}]})
    assert r.status == 200, r.body
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outs == {"OUTPUT0": [11, 22, 33], "OUTPUT1": [-9, -18, -27]}


def test_strict_model_config_disables_auto_complete(repo, server_factory):
    write_model(repo, "autoadd", ADD_SUB_NO_IO)
    s = server_factory(repo, "--strict-model-config=true", "--exit-on-error=false", wait_ready=False)
    entry = index_entry(s, "autoadd")
    if entry.get("state") == "READY":
        assert model_config(s, "autoadd")["input"] == []
    else:
        assert entry.get("state") == "UNAVAILABLE", entry
