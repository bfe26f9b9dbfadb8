"""background_remove: the bundled model against synthetic composites whose
true alpha is known, plus its output contract (RGB untouched, MASK equal to
the alpha), determinism across pool sizes, batching, and bad input.

Composites: a CC0 texture or photo (skimage: brick, grass and gravel are
CC0 textures; chelsea and coffee are CC0 photos) inside a known silhouette
(skimage's horse, CC0; a head-and-shoulders bust that runs off the bottom
edge as portraits do; a rounder blob), over a plain, a gradient or a lightly
textured backdrop. Masks are drawn at twice the size and area-averaged, so
the truth has antialiased edges like a real photo.

The issue's targets are IoU >= 0.9 (alpha >= 0.5 against truth >= 0.5) and
alpha MAE <= 0.05. The model measures IoU 0.992-0.999 and MAE 0.0008-0.0058
on these composites at 384x512 (0.998 and 0.0031 on the 1200x1600 one), so
the tests also hold a regression margin (IoU >= 0.97, MAE <= 0.02) well
inside the targets. The 96x128 composite of the quick tests measures 0.957
and 0.014 (its working image is 48x64) and is held to the targets only.
"""
import numpy as np
import pytest

from conftest import Server
from imageutil import BUNDLED_MODELS, bundled_server, infer_image, infer_raw, photo  # noqa: F401

MODEL = "background_remove"
TARGET_IOU, TARGET_MAE = 0.9, 0.05
REGRESSION_IOU, REGRESSION_MAE = 0.97, 0.02


# ---- composites ---------------------------------------------------------

def _resize(img, h, w):
    from skimage import transform
    return transform.resize(np.asarray(img, np.float64), (h, w), order=1, anti_aliasing=False)


def truth_alpha(shape, h, w, supersample=2):
    """Silhouette `shape` as an antialiased alpha in [0, 1] of h x w."""
    from skimage import data
    hs, ws = h * supersample, w * supersample
    yy, xx = np.mgrid[0:hs, 0:ws]
    if shape == "horse":  # the horse is black on white: invert it
        horse = ~data.horse()
        mh = int(hs * 0.8)
        mw = int(mh * horse.shape[1] / horse.shape[0])
        m = _resize(horse, mh, mw) > 0.5
        full = np.zeros((hs, ws), bool)
        y0, x0 = (hs - mh) // 2, (ws - mw) // 2
        full[y0:y0 + mh, x0:x0 + mw] = m
    elif shape == "bust":  # head and shoulders, cut by the bottom edge
        head = ((yy - hs * 0.40) / (hs * 0.22)) ** 2 + ((xx - ws * 0.5) / (hs * 0.17)) ** 2 < 1
        body = ((yy - hs * 1.05) / (hs * 0.35)) ** 2 + ((xx - ws * 0.5) / (ws * 0.36)) ** 2 < 1
        full = head | body
    elif shape == "blob":
        head = ((yy - hs * 0.38) / (hs * 0.2)) ** 2 + ((xx - ws * 0.5) / (hs * 0.16)) ** 2 < 1
        body = (((yy - hs * 0.95) / (hs * 0.3)) ** 2 + ((xx - ws * 0.5) / (ws * 0.33)) ** 2 < 1) & (yy < hs * 0.9)
        full = head | body
    else:
        raise ValueError(shape)
    return full.reshape(h, supersample, w, supersample).mean(axis=(1, 3))


def foreground(kind, h, w):
    """Subject texture in [0, 1], h x w x 3."""
    from skimage import data
    if kind in ("chelsea", "coffee"):
        return _resize(getattr(data, kind)() / 255.0, h, w)
    tint = {"brick": (1.0, 0.55, 0.4), "grass": (0.6, 1.0, 0.45)}[kind]
    grey = getattr(data, kind)() / 255.0
    return _resize(grey[..., None] * np.asarray(tint), h, w)


def background(kind, h, w):
    """Backdrop in [0, 1], h x w x 3."""
    from skimage import data
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w], np.float64)[:, None, None]
    if kind == "plain":
        return np.broadcast_to(np.array([0.30, 0.55, 0.75]), (h, w, 3))
    if kind == "white":
        return np.broadcast_to(np.array([0.93, 0.93, 0.92]), (h, w, 3))
    if kind == "gradient":
        top, bottom = np.array([0.85, 0.88, 0.95]), np.array([0.35, 0.45, 0.60])
        t = (0.7 * yy + 0.3 * xx)[..., None]
        return top * (1 - t) + bottom * t
    if kind == "textured":  # a beige backdrop with low-contrast gravel
        g = _resize(data.gravel() / 255.0, h, w)
        return np.clip(np.array([0.80, 0.78, 0.70]) + 0.12 * (g - g.mean())[..., None], 0, 1)
    raise ValueError(kind)


def composite(shape, fg, bg, h=384, w=512, supersample=2):
    """(uint8 image, true alpha) of subject `fg` in silhouette `shape` over `bg`."""
    a = truth_alpha(shape, h, w, supersample)[..., None]
    img = a * foreground(fg, h, w) + (1 - a) * background(bg, h, w)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), a[..., 0]


def iou_mae(alpha_u8, truth):
    alpha = alpha_u8.astype(np.float64) / 255.0
    got, want = alpha >= 0.5, truth >= 0.5
    iou = float((got & want).sum() / max(1, (got | want).sum()))
    return iou, float(np.abs(alpha - truth).mean())


def check_contract(img, out):
    """IMAGE is the input plus an alpha channel; MASK is that alpha."""
    assert out["IMAGE"].shape == img.shape[:2] + (4,)
    assert out["MASK"].shape == img.shape[:2] + (1,)
    assert np.array_equal(out["IMAGE"][..., :3], img)
    assert np.array_equal(out["IMAGE"][..., 3], out["MASK"][..., 0])


# ---- quality --------------------------------------------------------------

COMPOSITES = [
    ("horse", "chelsea", "plain"),
    ("horse", "chelsea", "gradient"),
    ("horse", "chelsea", "textured"),
    ("horse", "brick", "white"),
    ("horse", "coffee", "white"),
    ("horse", "brick", "gradient"),
    ("blob", "grass", "textured"),
    ("bust", "chelsea", "gradient"),  # subject crosses the frame edge
    ("bust", "brick", "textured"),
]


@pytest.mark.heavy
@pytest.mark.parametrize("shape,fg,bg", COMPOSITES, ids=["-".join(c) for c in COMPOSITES])
def test_composite_quality(bundled_server, shape, fg, bg):
    img, truth = composite(shape, fg, bg)
    out = infer_image(bundled_server, MODEL, img)
    check_contract(img, out)
    iou, mae = iou_mae(out["MASK"][..., 0], truth)
    assert iou >= TARGET_IOU and mae <= TARGET_MAE, (iou, mae)
    assert iou >= REGRESSION_IOU and mae <= REGRESSION_MAE, (iou, mae)


@pytest.mark.heavy
def test_large_composite_quality(bundled_server):
    """At 1200x1600 the working image is ~4x smaller per side than the
    photo: the guided-filter refinement must still put the edge right."""
    img, truth = composite("horse", "coffee", "gradient", 1200, 1600, supersample=1)
    out = infer_image(bundled_server, MODEL, img)
    check_contract(img, out)
    iou, mae = iou_mae(out["MASK"][..., 0], truth)
    assert iou >= REGRESSION_IOU and mae <= REGRESSION_MAE, (iou, mae)


@pytest.mark.heavy
def test_alpha_edge_is_soft(bundled_server):
    """Inside and outside are solid; the edge has intermediate alpha
    (measured: 99.7% of the inside at 255, 96.9% of the outside at 0, 95.7%
    of the antialiased truth edge strictly between)."""
    img, truth = composite("horse", "chelsea", "plain")
    alpha = infer_image(bundled_server, MODEL, img)["MASK"][..., 0]
    inside, outside = np.mean(alpha[truth == 1.0] == 255), np.mean(alpha[truth == 0.0] == 0)
    edge = (truth > 0.0) & (truth < 1.0)
    soft = np.mean((alpha[edge] > 0) & (alpha[edge] < 255))
    assert inside > 0.95 and outside > 0.95 and soft > 0.5, (inside, outside, soft)


@pytest.mark.heavy
def test_real_photo_coffee(bundled_server):
    """skimage's coffee (CC0): a cup on a saucer on a wooden table, not a
    plain backdrop, but the table's grain differs from the cup and saucer
    enough. The cup, the coffee and both sides of the saucer are kept and
    the table corners are removed (measured: 100%, 100%, 99% and 0%)."""
    img = photo("coffee")
    out = infer_image(bundled_server, MODEL, img)
    check_contract(img, out)
    fg = out["MASK"][..., 0] >= 128
    assert fg[130:200, 230:330].mean() >= 0.9  # the coffee in the cup
    assert fg[220:260, 100:140].mean() >= 0.8  # saucer, left
    assert fg[180:240, 420:460].mean() >= 0.8  # saucer, right
    assert fg[0:120, 470:600].mean() <= 0.05  # table, top right
    assert fg[300:400, 0:100].mean() <= 0.05  # table, bottom left


# ---- contract -------------------------------------------------------------

def small_composite(shape="horse", fg="brick", bg="plain"):
    return composite(shape, fg, bg, 96, 128)


def test_small_composite_and_contract(bundled_server):
    img, truth = small_composite()
    out = infer_image(bundled_server, MODEL, img)
    check_contract(img, out)
    iou, mae = iou_mae(out["MASK"][..., 0], truth)
    assert iou >= TARGET_IOU and mae <= TARGET_MAE, (iou, mae)


def test_deterministic_across_requests_and_pool_sizes(bundled_server):
    # 240x320: big enough for the two-level path (coarse rounds, fine cut)
    img, _ = composite("bust", "chelsea", "textured", 240, 320)
    first = infer_image(bundled_server, MODEL, img)["IMAGE"]
    assert np.array_equal(first, infer_image(bundled_server, MODEL, img)["IMAGE"])
    for threads in (1, 3):
        s = Server(BUNDLED_MODELS, args=[f"--cpu-threads={threads}"])
        try:
            other = infer_image(s, MODEL, img)["IMAGE"]
        finally:
            assert s.stop() == 0
        assert np.array_equal(first, other), f"--cpu-threads={threads} changed the output"


def test_batch_equals_singles(bundled_server):
    a, _ = small_composite("horse", "chelsea", "gradient")
    b, _ = small_composite("blob", "grass", "white")
    batch = infer_image(bundled_server, MODEL, np.stack([a, b]))
    assert batch["IMAGE"].shape == (2, 96, 128, 4)
    for i, img in enumerate((a, b)):
        single = infer_image(bundled_server, MODEL, img)
        assert np.array_equal(batch["IMAGE"][i], single["IMAGE"])
        assert np.array_equal(batch["MASK"][i], single["MASK"])


def test_mask_only(bundled_server):
    img, _ = small_composite()
    both = infer_image(bundled_server, MODEL, img)
    only = infer_image(bundled_server, MODEL, img, outputs=["MASK"])
    assert set(only) == {"MASK"}
    assert np.array_equal(only["MASK"], both["MASK"])


@pytest.mark.parametrize("name,img", [
    ("plain", np.full((120, 160, 3), (40, 90, 200), np.uint8)),
    ("black", np.zeros((64, 64, 3), np.uint8)),
    ("two-halves", np.concatenate([np.full((60, 40, 3), 30, np.uint8), np.full((60, 40, 3), 220, np.uint8)], 1)),
    ("2x2", np.arange(12, dtype=np.uint8).reshape(2, 2, 3)),
    ("2x300", np.full((2, 300, 3), 128, np.uint8)),
    ("300x3", np.full((300, 3, 3), 7, np.uint8)),
])
def test_no_subject_is_all_background(bundled_server, name, img):
    """Nothing differs from the border (or no inside is left): alpha 0."""
    out = infer_image(bundled_server, MODEL, img)
    check_contract(img, out)
    assert not out["MASK"].any()


def test_subject_filling_most_of_the_frame(bundled_server):
    img = np.pad(np.full((100, 140, 3), 200, np.uint8), ((6, 6), (6, 6), (0, 0)), constant_values=20)
    truth = np.zeros(img.shape[:2], bool)
    truth[6:106, 6:146] = True
    alpha = infer_image(bundled_server, MODEL, img)["MASK"][..., 0]
    iou = ((alpha >= 128) & truth).sum() / ((alpha >= 128) | truth).sum()
    assert iou >= 0.95, iou


@pytest.mark.parametrize("img,controls,needle", [
    (np.zeros((8, 8, 4), np.uint8), None, "'IMAGE'"),
    (np.zeros((1, 8, 3), np.uint8), None, "'IMAGE'"),
    (np.zeros((8, 8, 3), np.uint8), {"STRENGTH": (1.0, np.float32)}, "'STRENGTH'"),
])
def test_bad_input_is_400_and_server_keeps_serving(bundled_server, img, controls, needle):
    r = infer_raw(bundled_server, MODEL, img, controls)
    assert r.status == 400, (r.status, r.body[:300])
    assert needle in r.body.decode(), r.body[:300]
    good, _ = small_composite()
    check_contract(good, infer_image(bundled_server, MODEL, good))
