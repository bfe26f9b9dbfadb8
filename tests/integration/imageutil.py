"""Helpers for the image-operation tests: a server on the bundled models/
repository, binary-tensor inference of UINT8 images over real HTTP, the
skimage sample photos and the quality measures the tests assert on."""
import json
import os

import numpy as np
import pytest

from conftest import Server

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUNDLED_MODELS = os.path.join(ROOT, "models")
PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket")

_NP_TO_KSERVE = {np.uint8: "UINT8", np.int32: "INT32", np.int64: "INT64", np.float32: "FP32"}
_KSERVE_TO_NP = {"UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64, "FP32": np.float32}


@pytest.fixture(scope="module")
def bundled_server():
    """One imagen-server on the bundled models/ repository for a test module."""
    s = Server(BUNDLED_MODELS)
    yield s
    rc = s.stop()
    assert rc == 0, f"server exit status {rc}:\n{s.log()}"


def infer_raw(server, model, image, controls=None, outputs=None, timeout=300.0):
    """POSTs one request with binary tensors. `image` is HxWxC or NxHxWxC
    uint8 (a single image gets batch dim 1); `controls` maps input name to a
    scalar (or a list of N scalars) and numpy dtype, e.g.
    {"SCALE": (4, np.int32)}. Returns the Response."""
    image = np.ascontiguousarray(image)
    if image.ndim == 3:
        image = image[None]
    n = image.shape[0]
    tensors = [("IMAGE", image)]
    for name, (value, dtype) in (controls or {}).items():
        values = value if isinstance(value, (list, tuple)) else [value] * n
        tensors.append((name, np.asarray(values, dtype=dtype).reshape(n, 1)))
    inputs = []
    for name, arr in tensors:
        dt = _NP_TO_KSERVE[arr.dtype.type]
        inputs.append({"name": name, "datatype": dt, "shape": list(arr.shape),
                       "parameters": {"binary_data_size": arr.nbytes}})
    header = {"inputs": inputs}
    if outputs is not None:
        header["outputs"] = [{"name": o, "parameters": {"binary_data": True}} for o in outputs]
    else:
        header["parameters"] = {"binary_data_output": True}
    h = json.dumps(header).encode()
    body = h + b"".join(arr.tobytes() for _, arr in tensors)
    return server.post(f"/v2/models/{model}/infer", body=body, timeout=timeout,
                       headers={"Inference-Header-Content-Length": str(len(h)),
                                "Content-Type": "application/octet-stream"})


def decode_outputs(resp):
    """Output name → numpy array of a successful binary response."""
    assert resp.status == 200, (resp.status, resp.body[:500])
    n = int(resp.header("Inference-Header-Content-Length"))
    header = json.loads(resp.body[:n])
    off = n
    out = {}
    for o in header["outputs"]:
        size = o["parameters"]["binary_data_size"]
        arr = np.frombuffer(resp.body[off:off + size], dtype=_KSERVE_TO_NP[o["datatype"]])
        out[o["name"]] = arr.reshape(o["shape"])
        off += size
    return out


def infer_image(server, model, image, controls=None, outputs=None, timeout=300.0):
    """Like infer_raw, for a request that must succeed: returns name → array
    with the batch dimension kept when `image` had one, dropped otherwise."""
    res = decode_outputs(infer_raw(server, model, image, controls, outputs, timeout))
    if np.asarray(image).ndim == 3:
        res = {k: v[0] for k, v in res.items()}
    return res


def photo(name):
    """An skimage sample photo as HxWx3 uint8 (grey photos are stacked)."""
    from skimage import data
    img = np.asarray(getattr(data, name)())
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def photos():
    return {n: photo(n) for n in PHOTO_NAMES}


# ---- measures -----------------------------------------------------------

def luma(img):
    """BT.601 luma in [0, 255] as float64."""
    f = np.asarray(img, dtype=np.float64)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def psnr(a, b, peak=255.0):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else 10.0 * np.log10(peak * peak / mse)


def laplacian_variance(grey):
    """Variance of the 4-neighbour Laplacian (a sharpness measure)."""
    g = np.asarray(grey, np.float64)
    lap = (g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1])
    return float(lap.var())


def area_downscale(img, factor):
    """Box-filter (area) downscale by an integer factor, cropping the rest."""
    h, w = img.shape[0] // factor * factor, img.shape[1] // factor * factor
    f = np.asarray(img[:h, :w], np.float64)
    f = f.reshape(h // factor, factor, w // factor, factor, -1).mean(axis=(1, 3))
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)
