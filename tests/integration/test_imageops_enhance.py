"""The bundled `enhance` model (imageops operation `enhance`): white balance,
levels, noise reduction, local contrast and sharpening of an RGB image.

Quality tests run the skimage photos through a real server and assert what
the issue asks: no new clipped highlights, neutral greys stay neutral, a
second application changes the image much less than the first, a colour
cast is reduced, noise goes down, a flat photo gains contrast. The others
cover STRENGTH, bad controls, determinism and batching."""
import numpy as np
import pytest
from scipy import ndimage

from conftest import Server
from imageutil import (BUNDLED_MODELS, bundled_server, infer_image, infer_raw, laplacian_variance,  # noqa: F401
                       luma, photo, photos, psnr)

MODEL = "enhance"


def enhance(server, image, strength=None):
    controls = None if strength is None else {"STRENGTH": (strength, np.float32)}
    return infer_image(server, MODEL, image, controls)["IMAGE"]


def mean_abs_diff(a, b):
    return float(np.abs(np.asarray(a, np.int32) - np.asarray(b, np.int32)).mean())


def clipped_fraction(img):
    """Fraction of pixels with any channel at 255."""
    return float((np.asarray(img) == 255).any(axis=-1).mean())


def cast(img, ref):
    """How far the colour balance of `img` is from that of `ref`: the change
    of log(mean R / mean G) plus that of log(mean B / mean G)."""
    m = np.asarray(img, np.float64).reshape(-1, 3).mean(axis=0)
    r = np.asarray(ref, np.float64).reshape(-1, 3).mean(axis=0)
    return abs(np.log(m[0] / m[1]) - np.log(r[0] / r[1])) + abs(np.log(m[2] / m[1]) - np.log(r[2] / r[1]))


def smooth(img, sigma=1.5):
    f = np.asarray(img, np.float64)
    out = np.stack([ndimage.gaussian_filter(f[..., c], sigma) for c in range(3)], axis=-1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def add_noise(img, sigma, seed=1):
    noise = np.random.default_rng(seed).normal(0.0, sigma, img.shape)
    return np.clip(np.rint(img + noise), 0, 255).astype(np.uint8)


def grey_chart():
    """Grey ramps and patches on a mid-grey ground, with six saturated
    patches (grey +- 64 per channel, so their edges do not tilt the white
    balance either way). Returns the image and a mask of its grey pixels."""
    img = np.full((240, 360, 3), 128, np.uint8)
    img[:40] = np.linspace(10, 245, 360).astype(np.uint8)[None, :, None]
    img[200:] = np.linspace(245, 10, 360).astype(np.uint8)[None, :, None]
    colours = [(192, 64, 64), (64, 192, 64), (64, 64, 192), (64, 192, 192), (192, 64, 192), (192, 192, 64)]
    for k, c in enumerate(colours):
        img[60:120, 10 + k * 58:50 + k * 58] = c
    for k, v in enumerate([30, 70, 110, 150, 190, 230]):
        img[140:180, 10 + k * 58:50 + k * 58] = v
    grey = (img[..., 0] == img[..., 1]) & (img[..., 1] == img[..., 2])
    return img, grey


def random_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---- controls ---------------------------------------------------------------

def test_strength_zero_returns_the_input_exactly(bundled_server):
    for img in (random_image(37, 53), photo("coffee")):
        out = enhance(bundled_server, img, 0.0)
        assert np.array_equal(out, img)


@pytest.mark.parametrize("value,dtype,expect", [
    (-1.0, np.float32, "must be from 0 to 2"),
    (3.0, np.float32, "must be from 0 to 2"),
    (float("nan"), np.float32, "must be from 0 to 2"),
    (1, np.int32, "expects 'FP32'"),
])
def test_bad_strength_is_rejected_and_the_server_keeps_serving(bundled_server, value, dtype, expect):
    img = random_image(8, 9)
    r = infer_raw(bundled_server, MODEL, img, {"STRENGTH": (value, dtype)})
    assert r.status == 400, r.body
    msg = r.json()["error"]
    assert "STRENGTH" in msg and expect in msg, msg
    assert enhance(bundled_server, img).shape == img.shape


def local_contrast(img, size=16):
    """Mean standard deviation of luma over size x size windows."""
    y = luma(img)
    m = ndimage.uniform_filter(y, size)
    m2 = ndimage.uniform_filter(y * y, size)
    return float(np.sqrt(np.maximum(m2 - m * m, 0.0)).mean())


def test_strength_scales_the_change(bundled_server):
    img = photo("chelsea")
    out = {s: enhance(bundled_server, img, s) for s in (0.25, 0.5, 1.0, 1.5, 2.0)}
    change = {s: mean_abs_diff(o, img) for s, o in out.items()}
    # Up to 1 STRENGTH blends with the input: the change is proportional.
    assert change[0.5] == pytest.approx(change[1.0] / 2, rel=0.05)
    assert change[0.25] == pytest.approx(change[1.0] / 4, rel=0.1)
    # Above 1 the stages run stronger: more local contrast.
    contrast = [local_contrast(out[s]) for s in (1.0, 1.5, 2.0)]
    assert local_contrast(img) < contrast[0] < contrast[1] < contrast[2], contrast


@pytest.mark.parametrize("h,w", [(2, 2), (2, 7), (9, 2), (3, 3), (17, 31), (64, 48)])
def test_small_and_odd_sizes(bundled_server, h, w):
    img = random_image(h, w, seed=h * 100 + w)
    for s in (None, 2.0):
        out = enhance(bundled_server, img, s)
        assert out.shape == img.shape and out.dtype == np.uint8


def test_flat_grey_image_stays_flat_and_grey(bundled_server):
    img = np.full((40, 60, 3), 97, np.uint8)
    out = enhance(bundled_server, img)
    assert (out == out[0, 0, 0]).all(), np.unique(out)


# ---- determinism and batching ----------------------------------------------

def test_deterministic_and_batch_equals_singles(bundled_server):
    a, b = random_image(70, 90, seed=1), smooth(random_image(70, 90, seed=2), 3.0)
    single_a, single_b = enhance(bundled_server, a), enhance(bundled_server, b)
    assert np.array_equal(enhance(bundled_server, a), single_a)
    batch = enhance(bundled_server, np.stack([a, b]))
    assert np.array_equal(batch[0], single_a)
    assert np.array_equal(batch[1], single_b)


@pytest.mark.heavy
def test_output_does_not_depend_on_the_thread_count():
    img = add_noise(photo("astronaut"), 8)  # noisy: the denoising path runs too
    outs = []
    for threads in (1, 3):
        s = Server(BUNDLED_MODELS, args=[f"--cpu-threads={threads}"])
        try:
            outs.append(enhance(s, img))
        finally:
            assert s.stop() == 0, s.log()
    assert np.array_equal(outs[0], outs[1])


# ---- quality -----------------------------------------------------------------

@pytest.mark.heavy
def test_no_new_clipped_highlights(bundled_server):
    for name, img in photos().items():
        for s in (1.0, 2.0):
            out = enhance(bundled_server, img, s)
            assert clipped_fraction(out) <= clipped_fraction(img) + 0.0005, (name, s)
            # The pixels that are 255 were clipped in the input already.
            new = (out == 255).any(axis=-1) & ~(img == 255).any(axis=-1)
            assert not new.any(), (name, s, int(new.sum()))


def test_neutral_greys_stay_neutral(bundled_server):
    img, grey = grey_chart()
    out = enhance(bundled_server, img).astype(np.int32)
    g = out[grey]
    assert np.abs(g[:, 0] - g[:, 1]).max() <= 2
    assert np.abs(g[:, 1] - g[:, 2]).max() <= 2
    assert mean_abs_diff(out, img) > 2.0  # it did enhance the chart


@pytest.mark.heavy
def test_second_application_changes_much_less_than_the_first(bundled_server):
    # Every stage moves the image toward a target it then meets, so the
    # second pass finds little left to do: measured 0.04 to 0.27 of the
    # first pass's change on these photos; 0.35 leaves room for rounding.
    for name, img in photos().items():
        once = enhance(bundled_server, img)
        twice = enhance(bundled_server, once)
        first, second = mean_abs_diff(once, img), mean_abs_diff(twice, once)
        assert first > 3.0, name
        assert second <= 0.35 * first, (name, first, second)


@pytest.mark.heavy
def test_colour_cast_is_reduced(bundled_server):
    ref = photo("astronaut")
    ref_out = enhance(bundled_server, ref)
    for gains in ((1.2, 1.0, 0.8), (0.85, 1.0, 1.2)):
        tinted = np.clip(ref * np.array(gains), 0, 255).astype(np.uint8)
        before = cast(tinted, ref)
        after = cast(enhance(bundled_server, tinted), ref_out)
        assert after <= 0.7 * before, (gains, before, after)  # measured 0.53 and 0.58


@pytest.mark.heavy
def test_noise_goes_down(bundled_server):
    # Compared with enhancing the clean photo, enhancing the noisy one must
    # land closer than the noisy input was to the clean one.
    for name, gain in (("chelsea", 1.0), ("coffee", 0.5)):  # measured +2.1 and +1.2 dB
        clean = smooth(photo(name))
        noisy = add_noise(clean, 10)
        before = psnr(noisy, clean)
        after = psnr(enhance(bundled_server, noisy), enhance(bundled_server, clean))
        assert after >= before + gain, (name, before, after)


@pytest.mark.heavy
def test_flat_photo_gains_contrast(bundled_server):
    img = photo("astronaut")
    flat = np.rint(img * 0.4 + 0.3 * 255).astype(np.uint8)
    out = enhance(bundled_server, flat)
    assert luma(out).std() >= 1.5 * luma(flat).std()
    assert laplacian_variance(luma(out)) >= 3 * laplacian_variance(luma(flat))


@pytest.mark.heavy
def test_soft_photo_gets_sharper(bundled_server):
    soft = smooth(photo("chelsea"), 1.2)
    out = enhance(bundled_server, soft)
    assert laplacian_variance(luma(out)) >= 1.5 * laplacian_variance(luma(soft))


@pytest.mark.heavy
def test_flat_dark_sky_is_not_made_noisy(bundled_server):
    # The dusk sky of `rocket` is smooth but carries faint JPEG blocking and
    # noise; stretching its few levels of tones apart made it blotchy. On
    # the sky pixels of the top-left 320x200 (where the input is locally
    # smooth, away from the tower), the fine-scale luma variation (luma
    # minus its 5x5 box mean) grew 5.3x before tones narrower than a few
    # levels were kept from being spread; measured 1.30x now. Over the whole
    # crop the tower's edges dominate (1.26x before, 1.05x now). The crop's
    # mean RGB goes from (38, 53, 84) to (37, 54, 71): blue, B/R 1.9.
    img = photo("rocket")
    out = enhance(bundled_server, img)
    y_in, y_out = luma(img[:200, :320]), luma(out[:200, :320])
    mean = ndimage.uniform_filter(y_in, 9)
    sd = np.sqrt(np.maximum(ndimage.uniform_filter(y_in * y_in, 9) - mean * mean, 0.0))
    sky = sd < 3.0
    assert sky.mean() > 0.5
    fine_in = (y_in - ndimage.uniform_filter(y_in, 5))[sky].std()
    fine_out = (y_out - ndimage.uniform_filter(y_out, 5))[sky].std()
    assert fine_out <= 1.5 * fine_in, (fine_in, fine_out)
    # The sky stays blue.
    m = out[:200, :320].reshape(-1, 3).mean(axis=0)
    assert m[2] > 1.5 * m[0], m
