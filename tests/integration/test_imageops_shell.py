"""The checks every image operation shares (src/backends/imageops/image_op.c):
bad images and controls are a 400 naming the input and the server goes on
serving; bad configs leave the model UNAVAILABLE with a reason; the bundled
repository serves all five operations with the documented interface."""
import json
import os

import numpy as np
import pytest

from conftest import write_model
from imageutil import BUNDLED_MODELS, bundled_server, infer_image, infer_raw  # noqa: F401

OPERATIONS = ("upscale", "enhance", "background_remove", "style_comic", "style_aged")


def bundled_config(op, **params):
    """The bundled config of `op` with parameters replaced."""
    with open(os.path.join(BUNDLED_MODELS, op, "config.pbtxt")) as f:
        text = f.read()
    for k, v in params.items():
        text = text.replace(f'{{ key: "{k}",', f'{{ key: "{k}_unused",', 1)
        text = text.rstrip() + f'\nparameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n'
    return text


def assert_400(resp, *fragments):
    assert resp.status == 400, (resp.status, resp.body[:300])
    err = json.loads(resp.body)["error"]
    for f in fragments:
        assert f in err, (f, err)


def gradient(h, w):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1).astype(np.uint8)


def test_bundled_repository_serves_the_five_operations(bundled_server):
    index = {m["name"]: m for m in bundled_server.post("/v2/repository/index").json()}
    for op in OPERATIONS:
        assert index[op]["state"] == "READY", index[op]
        meta = bundled_server.get(f"/v2/models/{op}").json()
        inputs = {t["name"]: t for t in meta["inputs"]}
        assert inputs["IMAGE"] == {"name": "IMAGE", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}
        outputs = {t["name"]: t for t in meta["outputs"]}
        assert outputs["IMAGE"]["shape"] == [-1, -1, -1, 4 if op == "background_remove" else 3]
        cfg = bundled_server.get(f"/v2/models/{op}/config").json()
        assert cfg["max_batch_size"] == 4
        assert cfg["dynamic_batching"]["preferred_batch_size"] == [2, 4]
        assert cfg["dynamic_batching"]["preserve_ordering"] is True
        for name, t in inputs.items():
            if name != "IMAGE":
                assert t["shape"] == [-1, 1], t
    assert set(index["background_remove"] and
               {t["name"] for t in bundled_server.get("/v2/models/background_remove").json()["outputs"]}) == \
        {"IMAGE", "MASK"}


@pytest.mark.parametrize("op", OPERATIONS)
def test_small_image_round_trip(bundled_server, op):
    img = gradient(9, 13)
    out = infer_image(bundled_server, op, img)
    scale = 2 if op == "upscale" else 1
    channels = 4 if op == "background_remove" else 3
    assert out["IMAGE"].shape == (9 * scale, 13 * scale, channels)
    assert out["IMAGE"].dtype == np.uint8


@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("shape,fragments", [
    ((1, 8, 3), ["'IMAGE'", "8x1", "at least 2"]),
    ((8, 1, 3), ["'IMAGE'", "1x8", "at least 2"]),
    ((0, 5, 3), ["'IMAGE'", "at least 2"]),
])
def test_too_small_images_are_rejected(bundled_server, op, shape, fragments):
    assert_400(infer_raw(bundled_server, op, np.zeros(shape, np.uint8)), op, *fragments)


@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("channels", [1, 4])
def test_wrong_channel_count_is_rejected(bundled_server, op, channels):
    assert_400(infer_raw(bundled_server, op, np.zeros((4, 4, channels), np.uint8)), "'IMAGE'")


@pytest.mark.parametrize("op", OPERATIONS)
def test_wrong_image_datatype_is_rejected(bundled_server, op):
    body = {"inputs": [{"name": "IMAGE", "datatype": "FP32", "shape": [1, 2, 2, 3], "data": [0.0] * 12}]}
    assert_400(bundled_server.post(f"/v2/models/{op}/infer", body=body), "IMAGE")


@pytest.mark.parametrize("op,control,value,dtype", [
    ("upscale", "SCALE", 1, np.int32),
    ("upscale", "SCALE", 5, np.int32),
    ("upscale", "SCALE", -2, np.int32),
    ("enhance", "STRENGTH", -0.5, np.float32),
    ("enhance", "STRENGTH", float("nan"), np.float32),
    ("enhance", "STRENGTH", 2.5, np.float32),
    ("style_comic", "STRENGTH", 1.5, np.float32),
    ("style_comic", "COLORS", 1, np.int32),
    ("style_comic", "COLORS", 65, np.int32),
    ("style_aged", "STRENGTH", float("inf"), np.float32),
    ("style_aged", "SEED", -1, np.int64),
    ("style_aged", "DUST", 2.0, np.float32),
])
def test_out_of_range_controls_name_the_input(bundled_server, op, control, value, dtype):
    assert_400(infer_raw(bundled_server, op, gradient(6, 6), {control: (value, dtype)}), f"'{control}'")
    # and the model goes on serving
    assert infer_image(bundled_server, op, gradient(6, 6))["IMAGE"].shape[0] >= 6


def test_control_with_wrong_datatype_is_rejected(bundled_server):
    assert_400(infer_raw(bundled_server, "upscale", gradient(6, 6), {"SCALE": (2.0, np.float32)}), "SCALE")


def test_controls_must_agree_within_one_request(bundled_server):
    imgs = np.stack([gradient(6, 6)] * 2)
    assert_400(infer_raw(bundled_server, "upscale", imgs, {"SCALE": ([2, 4], np.int32)}), "'SCALE'",
               "same value for every image")
    out = infer_image(bundled_server, "upscale", imgs, {"SCALE": ([4, 4], np.int32)})
    assert out["IMAGE"].shape == (2, 24, 24, 3)


def test_size_limits_come_from_the_config(repo, server_factory):
    write_model(repo, "upscale", bundled_config("upscale", max_side=64, max_megapixels=1))
    write_model(repo, "enhance", bundled_config("enhance", max_side=64))
    s = server_factory(repo)
    assert_400(infer_raw(s, "enhance", np.zeros((65, 10, 3), np.uint8)), "'IMAGE'", "10x65", "64 per side",
               "max_side")
    assert infer_image(s, "enhance", np.zeros((64, 10, 3), np.uint8))["IMAGE"].shape == (64, 10, 3)
    # the output is bounded too: 40x40 upscaled 2x would be 80 per side
    assert_400(infer_raw(s, "upscale", np.zeros((40, 40, 3), np.uint8)), "output 'IMAGE'", "80x80")
    assert infer_image(s, "upscale", np.zeros((32, 32, 3), np.uint8))["IMAGE"].shape == (64, 64, 3)


def test_megapixel_limit_comes_from_the_config(repo, server_factory):
    write_model(repo, "style_aged", bundled_config("style_aged", max_megapixels=1))
    s = server_factory(repo)
    assert_400(infer_raw(s, "style_aged", np.zeros((1000, 1001, 3), np.uint8)), "'IMAGE'", "1001x1000",
               "1 megapixels", "max_megapixels")
    assert infer_image(s, "style_aged", np.zeros((1000, 1000, 3), np.uint8))["IMAGE"].shape == (1000, 1000, 3)


def test_default_limit_is_16384_per_side(bundled_server):
    # a 16385 x 2 image is small in bytes but over the default side limit
    assert_400(infer_raw(bundled_server, "enhance", np.zeros((2, 16385, 3), np.uint8)), "16385x2", "16384")


@pytest.mark.parametrize("change,fragments", [
    (('data_type: TYPE_UINT8, dims: [ -1, -1, 3 ] }', 'data_type: TYPE_FP32, dims: [ -1, -1, 3 ] }'),
     ["'IMAGE'", "TYPE_UINT8"]),
    (('{ name: "STRENGTH", data_type: TYPE_FP32', '{ name: "GAIN", data_type: TYPE_FP32'),
     ["no input 'GAIN'", "STRENGTH"]),
    (('{ name: "STRENGTH", data_type: TYPE_FP32', '{ name: "STRENGTH", data_type: TYPE_INT32'),
     ["'STRENGTH'", "TYPE_FP32"]),
    (('{ key: "max_side",       value: { string_value: "16384" } }',
      '{ key: "max_side",       value: { string_value: "big" } }'), ["max_side"]),
])
def test_bad_configs_make_the_model_unavailable(repo, server_factory, change, fragments):
    text = bundled_config("enhance")
    assert change[0] in text
    write_model(repo, "enhance", text.replace(change[0], change[1], 1))
    write_model(repo, "style_aged", bundled_config("style_aged"))
    s = server_factory(repo, "--exit-on-error=false", wait_ready=False)
    index = {m["name"]: m for m in s.post("/v2/repository/index").json()}
    assert index["enhance"]["state"] == "UNAVAILABLE", index
    for f in fragments:
        assert f in index["enhance"]["reason"], (f, index["enhance"])
    assert index["style_aged"]["state"] == "READY"
