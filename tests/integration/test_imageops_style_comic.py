"""style_comic (src/backends/imageops/op_style_comic.c): flat colours and
dark outlines.

Checks on synthetic images, where the expected output is known (a flat image
stays flat, two flat halves keep their colours and get ink on the dark side
of the edge), and on the skimage photos (distinct colours drop at least
tenfold, COLORS bounds the palette, the ink lies on the photo's edges and
the strong edges get ink); that STRENGTH 0 is the identity and 0.5 the
half-way blend; that the bytes do not depend on the thread count or on
batching; and that bad controls are a 400 naming the input while the server
goes on serving.

The op's contract the measures rely on: at STRENGTH 1 every pixel is a
palette colour or the ink, and the ink is strictly darker than every palette
colour, so the ink pixels are exactly those of the output's darkest colour.
"""
import json
import math
import os

import numpy as np
import pytest
from scipy import ndimage
from skimage import feature

from conftest import write_model
from imageutil import BUNDLED_MODELS, bundled_server, infer_image, infer_raw, luma, photo, photos  # noqa: F401

MODEL = "style_comic"
CONTROL_TYPES = {"STRENGTH": np.float32, "COLORS": np.int32}


def comic(server, image, **controls):
    """The op's output for `image` (HxWx3 or NxHxWx3) with controls by name."""
    ctrl = {k: (v, CONTROL_TYPES[k]) for k, v in controls.items()}
    return infer_image(server, MODEL, image, ctrl)["IMAGE"]


def distinct_colours(img):
    return np.unique(img.reshape(-1, 3), axis=0)


def ink_mask(out):
    """The pixels of the output's darkest colour, after checking that this
    colour is strictly darker than every other one (the ink contract)."""
    colours, index = np.unique(out.reshape(-1, 3), axis=0, return_inverse=True)
    lum = luma(colours)
    order = np.argsort(lum)
    if len(colours) > 1:
        assert lum[order[0]] < lum[order[1]], colours[order[:2]]
    return index.reshape(out.shape[:2]) == order[0]


def gradient(h, w):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (3 * x + 5 * y) % 256], -1).astype(np.uint8)


def textured(h, w):
    """A photo tiled to h x w: real edges and texture for the byte-exact tests."""
    p = photo("astronaut")
    reps = (-(-h // p.shape[0]), -(-w // p.shape[1]), 1)
    return np.ascontiguousarray(np.tile(p, reps)[:h, :w])


# ---- identity, blending and determinism -------------------------------------

def test_strength_zero_returns_the_input_exactly(bundled_server):
    img = gradient(61, 83)
    assert np.array_equal(comic(bundled_server, img, STRENGTH=0.0, COLORS=5), img)


def test_strength_half_is_the_half_way_blend(bundled_server):
    img = textured(96, 160)
    full = comic(bundled_server, img, STRENGTH=1.0).astype(np.float64)
    half = comic(bundled_server, img, STRENGTH=0.5).astype(np.float64)
    want = np.floor(img + 0.5 * (full - img) + 0.5)
    assert np.abs(half - want).max() <= 1.0
    # Neither end: most pixels moved, and none past the comic colour.
    assert (half != img).any(-1).mean() > 0.5
    lo, hi = np.minimum(img, full), np.maximum(img, full)
    assert ((half >= lo - 1) & (half <= hi + 1)).all()


def test_same_request_same_bytes(bundled_server):
    img = textured(128, 200)
    a = comic(bundled_server, img, COLORS=12)
    b = comic(bundled_server, img, COLORS=12)
    assert np.array_equal(a, b)


def test_result_does_not_depend_on_the_thread_count(repo, server_factory, bundled_server):
    with open(os.path.join(BUNDLED_MODELS, MODEL, "config.pbtxt")) as f:
        write_model(repo, MODEL, f.read())
    # 301 rows: strips of 148 rows and uneven pool chunks; 1100 columns:
    # a width that is not a multiple of the 64-pixel search blocks.
    img = textured(301, 1100)
    want = comic(bundled_server, img, COLORS=16)
    for threads in (1, 3):
        s = server_factory(repo, f"--cpu-threads={threads}")
        assert np.array_equal(comic(s, img, COLORS=16), want), threads


def test_batch_of_two_equals_the_single_requests(bundled_server):
    a = textured(120, 150)
    b = np.ascontiguousarray(gradient(120, 150)[::-1])
    batch = comic(bundled_server, np.stack([a, b]), COLORS=6)
    assert np.array_equal(batch[0], comic(bundled_server, a, COLORS=6))
    assert np.array_equal(batch[1], comic(bundled_server, b, COLORS=6))


# ---- synthetic images -------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 2), (2, 257), (257, 2), (3, 5), (37, 513)])
def test_tiny_and_narrow_images(bundled_server, shape):
    img = textured(*shape)
    out = comic(bundled_server, img, COLORS=4)
    assert out.shape == img.shape
    assert len(distinct_colours(out)) <= 5


def test_flat_image_stays_flat(bundled_server):
    img = np.empty((40, 50, 3), np.uint8)
    img[...] = (200, 120, 40)
    out = comic(bundled_server, img)
    assert len(distinct_colours(out)) == 1
    # One palette colour, the input's, up to the YCbCr round trip; no ink.
    assert np.abs(out[0, 0].astype(int) - img[0, 0]).max() <= 2


def test_two_flat_halves_keep_their_colours_and_ink_the_dark_side(bundled_server):
    h, w = 64, 96
    light, dark = np.array([220, 200, 170]), np.array([60, 40, 90])
    img = np.empty((h, w, 3), np.uint8)
    img[:, :w // 2] = light
    img[:, w // 2:] = dark
    out = comic(bundled_server, img, COLORS=8).astype(int)
    # COLORS is an upper bound: two colours in, two palette colours out.
    colours = distinct_colours(out)
    assert len(colours) == 3, colours
    assert np.abs(out[:, :w // 2 - 4] - light).max() <= 2
    assert np.abs(out[:, w // 2 + 4:] - dark).max() <= 2
    # The ink is a line of 1 to 3 columns on the dark side of the edge,
    # along its whole length, darker than the dark half.
    ink = ink_mask(out)
    cols = np.flatnonzero(ink.any(0))
    assert cols.min() >= w // 2 and cols.max() <= w // 2 + 3, cols
    assert ink[:, w // 2:w // 2 + 4].any(1).all()
    assert luma(out[ink][0]) < luma(dark)


# ---- photos -----------------------------------------------------------------

@pytest.mark.heavy
def test_photos_lose_distinct_colours_tenfold(bundled_server):
    for name, img in photos().items():
        out = comic(bundled_server, img)
        n_in, n_out = len(distinct_colours(img)), len(distinct_colours(out))
        # Default COLORS 8 plus the ink; the photos have 32k to 113k colours
        # (measured ratios 3600 to 12600).
        assert n_out <= 9, (name, n_out)
        assert n_in >= 10 * n_out, (name, n_in, n_out)


@pytest.mark.heavy
def test_colors_bounds_the_palette(bundled_server):
    img = photo("astronaut")
    counts = []
    for k in (2, 8, 32, 64):
        n = len(distinct_colours(comic(bundled_server, img, COLORS=k)))
        # A palette of k colours plus the ink (measured exactly k + 1).
        assert n <= k + 1, (k, n)
        counts.append(n)
    assert counts == sorted(counts) and counts[0] < counts[-1], counts


@pytest.mark.heavy
def test_outlines_sit_on_the_photo_edges(bundled_server):
    for name, img in photos().items():
        out = comic(bundled_server, img)
        ink = ink_mask(out)
        # Lines are drawn, but thin: measured 1.1% (chelsea) to 7.1%
        # (astronaut) of the pixels.
        assert 0.005 < ink.mean() < 0.15, (name, ink.mean())
        # The ink lies on edges: Canny (sigma 1.5) on the input's luma marks
        # the gradient maxima, and the ink sits on the dark side of an edge,
        # 1 to 3 pixels from its maximum at this size. Measured 98.3% to
        # 99.5% within 3 pixels, where a random pixel is within 3 pixels of
        # an edge 19% (rocket) to 43% (astronaut) of the time.
        grey = luma(img) / 255.0
        edges = feature.canny(grey, sigma=1.5)
        near_edge = ndimage.distance_transform_edt(~edges) <= 3
        on_edges = near_edge[ink].mean()
        assert on_edges > 0.9, (name, on_edges)
        assert on_edges > near_edge.mean() + 0.4, (name, on_edges, near_edge.mean())
        # And the strong edges are drawn: of the Canny pixels with gradient
        # above 0.6 (luma units per pixel after smoothing), measured 66%
        # (chelsea's soft fur) to 86% have ink within 2 pixels.
        strong = feature.canny(grey, sigma=1.5, low_threshold=0.3, high_threshold=0.6)
        near_ink = ndimage.distance_transform_edt(~ink) <= 2
        drawn = near_ink[strong].mean()
        assert drawn > 0.5, (name, drawn)


# ---- bad input --------------------------------------------------------------

@pytest.mark.parametrize("name,value,dtype", [
    ("STRENGTH", 1.5, np.float32),
    ("STRENGTH", -0.1, np.float32),
    ("STRENGTH", math.nan, np.float32),
    ("STRENGTH", 1, np.int32),
    ("COLORS", 1, np.int32),
    ("COLORS", 65, np.int32),
    ("COLORS", -8, np.int32),
    ("COLORS", 8.0, np.float32),
])
def test_bad_controls_are_a_400_naming_the_input(bundled_server, name, value, dtype):
    resp = infer_raw(bundled_server, MODEL, gradient(16, 16), {name: (value, dtype)})
    assert resp.status == 400, (resp.status, resp.body[:300])
    assert name in json.loads(resp.body)["error"]
    # Still serving.
    assert comic(bundled_server, gradient(16, 16)).shape == (16, 16, 3)
