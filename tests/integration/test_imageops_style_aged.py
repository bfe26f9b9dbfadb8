"""style_aged (src/backends/imageops/op_style_aged.c): an old photograph.

Checks the look on flat greys, where each effect can be measured alone
(sepia warmth, vignette, film grain and its mid-tone peak, dust specks and
scratches), and on the skimage photos (lower contrast and saturation, warm
cast, picture kept); that SEED fixes the bytes whatever the thread count and
batching; that STRENGTH 0 is the identity; and that bad controls are a 400
naming the input while the server goes on serving."""
import json
import math
import os

import numpy as np
import pytest
from scipy import ndimage

from conftest import write_model
from imageutil import BUNDLED_MODELS, area_downscale, bundled_server, infer_image, infer_raw, luma, photos  # noqa: F401

MODEL = "style_aged"
CONTROL_TYPES = {"STRENGTH": np.float32, "SEED": np.int64, "DUST": np.float32, "SEPIA": np.float32}


def aged(server, image, **controls):
    """The op's output for `image` (HxWx3 or NxHxWx3) with controls by name."""
    ctrl = {k: (v, CONTROL_TYPES[k]) for k, v in controls.items()}
    return infer_image(server, MODEL, image, ctrl)["IMAGE"]


def grey(h, w, level=128):
    return np.full((h, w, 3), level, np.uint8)


def gradient(h, w):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (3 * x + 5 * y) % 256], -1).astype(np.uint8)


def saturation(img):
    """Mean over pixels of max - min over the channels, in [0, 255]."""
    f = np.asarray(img, np.float64)
    return float((f.max(-1) - f.min(-1)).mean())


def centre(img, half=32):
    h, w = img.shape[:2]
    return img[h // 2 - half:h // 2 + half, w // 2 - half:w // 2 + half]


# ---- identity and determinism ---------------------------------------------

def copy_bundled_model(repo):
    with open(os.path.join(BUNDLED_MODELS, MODEL, "config.pbtxt")) as f:
        write_model(repo, MODEL, f.read())


def test_strength_zero_returns_the_input_exactly(bundled_server):
    img = gradient(61, 83)
    out = aged(bundled_server, img, STRENGTH=0.0, DUST=1.0, SEED=7)
    assert np.array_equal(out, img)


def test_all_four_controls_in_one_request(repo, server_factory):
    # Five inputs in one request; on a server of its own, so that a crash
    # (seen under ASan) cannot take the other tests' server down.
    copy_bundled_model(repo)
    s = server_factory(repo)
    img = gradient(40, 50)
    assert np.array_equal(aged(s, img, STRENGTH=0.0, DUST=1.0, SEPIA=0.3, SEED=7), img)
    out = aged(s, img, STRENGTH=0.8, DUST=1.0, SEPIA=0.3, SEED=7)
    assert np.array_equal(out, aged(s, img, STRENGTH=0.8, DUST=1.0, SEPIA=0.3, SEED=7))
    assert not np.array_equal(out, img)


def test_same_seed_same_bytes_other_seed_other_grain(bundled_server):
    img = gradient(96, 128)
    a = aged(bundled_server, img, SEED=11, DUST=1.0)
    b = aged(bundled_server, img, SEED=11, DUST=1.0)
    c = aged(bundled_server, img, SEED=12, DUST=1.0)
    assert np.array_equal(a, b)
    changed = float((a != c).any(-1).mean())
    assert changed > 0.5, changed
    # The default seed is 0, and the largest seed is accepted.
    assert np.array_equal(aged(bundled_server, img), aged(bundled_server, img, SEED=0))
    top = aged(bundled_server, img, SEED=2**53)
    assert not np.array_equal(top, a)


def test_result_does_not_depend_on_the_thread_count(repo, server_factory, bundled_server):
    copy_bundled_model(repo)
    # 1100 columns: more than two 512-column blocks; 301 rows: uneven chunks.
    img = gradient(301, 1100)
    want = aged(bundled_server, img, SEED=5, DUST=1.0, SEPIA=0.6)
    for threads in (1, 3):
        s = server_factory(repo, f"--cpu-threads={threads}")
        assert np.array_equal(aged(s, img, SEED=5, DUST=1.0, SEPIA=0.6), want), threads


def test_batch_of_two_equals_the_single_requests(bundled_server):
    a, b = gradient(70, 90), np.ascontiguousarray(gradient(70, 90)[::-1, ::-1])
    batch = aged(bundled_server, np.stack([a, b]), SEED=3, DUST=0.5)
    assert batch.shape == (2, 70, 90, 3)
    assert np.array_equal(batch[0], aged(bundled_server, a, SEED=3, DUST=0.5))
    assert np.array_equal(batch[1], aged(bundled_server, b, SEED=3, DUST=0.5))


@pytest.mark.parametrize("shape", [(2, 2), (2, 3), (3, 2), (5, 1030), (600, 7)])
def test_tiny_and_narrow_images(bundled_server, shape):
    img = gradient(*shape)
    a = aged(bundled_server, img, DUST=1.0, SEED=9)
    assert a.shape == img.shape
    assert np.array_equal(a, aged(bundled_server, img, DUST=1.0, SEED=9))


# ---- the look, one effect at a time ---------------------------------------

def test_flat_grey_turns_warm_sepia(bundled_server):
    # Measured on 128 grey: centre mean RGB about (141, 130, 110).
    r, g, b = centre(aged(bundled_server, grey(256, 256))).reshape(-1, 3).mean(0)
    assert r - g > 6 and g - b > 12, (r, g, b)
    # SEPIA 0 (faded colour print) is warm too, but less so.
    r0, g0, b0 = centre(aged(bundled_server, grey(256, 256), SEPIA=0.0)).reshape(-1, 3).mean(0)
    assert r0 > g0 > b0 and r0 - b0 < (r - b) * 0.75, (r0, g0, b0)


def test_blacks_are_lifted_and_whites_dulled(bundled_server):
    # The faded curve maps black to about 0.10 and white to about 0.88.
    black = luma(centre(aged(bundled_server, grey(256, 256, 0)))).mean()
    white = luma(centre(aged(bundled_server, grey(256, 256, 255)))).mean()
    assert 15 < black < 40 and 205 < white < 235, (black, white)


def test_vignette_darkens_the_corners(bundled_server):
    lum = luma(aged(bundled_server, grey(256, 256)))
    mid = lum[96:160, 96:160].mean()
    corners = np.mean([lum[:32, :32].mean(), lum[:32, -32:].mean(), lum[-32:, :32].mean(), lum[-32:, -32:].mean()])
    # Measured: centre 131, corners 100.
    assert mid - corners > 20, (mid, corners)
    assert mid - corners < 45, (mid, corners)


def test_grain_is_present_and_peaks_in_the_mid_tones(bundled_server):
    # Grain std in 8-bit levels, measured 7.4 on mid-grey, 5.6 on 30 and 220;
    # the centre patch is flat enough that the vignette adds almost nothing.
    std = {v: luma(centre(aged(bundled_server, grey(256, 256, v)))).std() for v in (30, 128, 220)}
    assert 5.5 < std[128] < 10.0, std
    assert std[30] < 0.9 * std[128] and std[220] < 0.9 * std[128], std
    assert std[30] > 3.0 and std[220] > 3.0, std
    # Monochrome grain: the channels move together.
    out = centre(aged(bundled_server, grey(256, 256))).reshape(-1, 3).astype(np.float64)
    assert np.corrcoef(out[:, 0], out[:, 2])[0, 1] > 0.9
    # Clumped, not per-pixel: neighbours correlate.
    lum = luma(centre(aged(bundled_server, grey(256, 256))))
    d = lum - lum.mean()
    neighbour = float((d[:, 1:] * d[:, :-1]).mean() / d.var())
    assert 0.2 < neighbour < 0.9, neighbour


def test_grain_keeps_its_size_on_large_images(bundled_server):
    # Above a 1024-pixel short side the grain cells grow with the image, so
    # the grain does not vanish when the picture is viewed downscaled.
    small = luma(centre(aged(bundled_server, grey(512, 512)), 64))
    large = luma(centre(aged(bundled_server, grey(2048, 2048)), 256))
    # The same quarter of each, shown 32x32: grain of a fixed pixel size
    # would average much more away on the large image (std ratio 0.29 in a
    # simulation); cells twice as big keep more (measured 0.57).
    small_down = small.reshape(32, 4, 32, 4).mean(axis=(1, 3)).std()
    large_down = large.reshape(32, 16, 32, 16).mean(axis=(1, 3)).std()
    assert large_down > 0.37 * small_down, (small_down, large_down)


def blobs(mask):
    return ndimage.label(mask)[1]


def test_dust_adds_specks_and_scratches(bundled_server):
    img = grey(512, 512)
    clean = luma(aged(bundled_server, img, SEED=3))
    dusty = luma(aged(bundled_server, img, SEED=3, DUST=1.0))
    half = luma(aged(bundled_server, img, SEED=3, DUST=0.5))
    diff = dusty - clean
    changed = np.abs(diff) > 12
    # Sparse: measured 1.2% of the pixels.
    assert 0.002 < changed.mean() < 0.05, changed.mean()
    # Measured 130 blobs: 88 bright (dust on a negative), 42 dark.
    n_bright, n_dark = blobs(diff > 12), blobs(diff < -12)
    assert n_bright >= 40 and n_dark >= 12, (n_bright, n_dark)
    # Scratches: columns where a long vertical run of pixels changed.
    runs = changed.sum(axis=0)
    assert (runs > 100).sum() >= 1, np.sort(runs)[-5:]
    # Less DUST draws a subset of the same dust.
    half_changed = np.abs(half - clean) > 12
    assert blobs(half_changed) < blobs(changed)
    assert (half_changed & ~changed).mean() < 0.0005


# ---- photos ---------------------------------------------------------------

@pytest.mark.heavy
def test_photos_fade_desaturate_and_warm(bundled_server):
    for name, img in photos().items():
        lum_in = luma(img)
        for sepia in (1.0, 0.0):
            out = aged(bundled_server, img, SEPIA=sepia)
            lum_out = luma(out)
            # Measured contrast ratios 0.76 to 0.84.
            assert lum_out.std() < 0.9 * lum_in.std(), (name, sepia, lum_in.std(), lum_out.std())
            # Measured saturation ratios 0.37 to 0.66 (sepia), 0.20 to 0.68 (faded).
            assert saturation(out) < 0.75 * saturation(img), (name, sepia, saturation(img), saturation(out))
            r, g, b = out.reshape(-1, 3).mean(0)
            if sepia == 1.0:
                assert r > g + 5 and g > b + 10, (name, r, g, b)
            else:
                assert r > b, (name, r, g, b)
            # The picture is still there: luma follows the input's once the
            # grain is averaged away (measured 0.90 for the flat, vignetted
            # chelsea to 0.99).
            corr = np.corrcoef(luma(area_downscale(img, 4)).ravel(), luma(area_downscale(out, 4)).ravel())[0, 1]
            assert corr > 0.85, (name, sepia, corr)


@pytest.mark.heavy
def test_strength_scales_the_effect(bundled_server):
    img = photos()["chelsea"]
    half = aged(bundled_server, img, STRENGTH=0.5)
    full = aged(bundled_server, img, STRENGTH=1.0)
    assert saturation(full) < saturation(half) < saturation(img)
    assert luma(full).std() < luma(half).std() < luma(img).std()
    # Half strength sits between the input and the full effect.
    err_half = np.abs(half.astype(int) - img).mean()
    err_full = np.abs(full.astype(int) - img).mean()
    assert 0.3 * err_full < err_half < 0.7 * err_full, (err_half, err_full)


# ---- bad input ------------------------------------------------------------

@pytest.mark.parametrize("name,value,dtype", [
    ("STRENGTH", 1.5, np.float32),
    ("STRENGTH", -0.1, np.float32),
    ("STRENGTH", math.nan, np.float32),
    ("STRENGTH", 1, np.int32),
    ("DUST", 2.0, np.float32),
    ("DUST", -0.5, np.float32),
    ("DUST", math.inf, np.float32),
    ("SEPIA", 1.01, np.float32),
    ("SEED", -1, np.int64),
    ("SEED", 2**53 + 2, np.int64),
    ("SEED", 3.0, np.float32),
])
def test_bad_controls_are_a_400_naming_the_input(bundled_server, name, value, dtype):
    resp = infer_raw(bundled_server, MODEL, gradient(16, 16), {name: (value, dtype)})
    assert resp.status == 400, (resp.status, resp.body[:300])
    assert name in json.loads(resp.body)["error"]
    # Still serving.
    assert aged(bundled_server, gradient(16, 16)).shape == (16, 16, 3)
