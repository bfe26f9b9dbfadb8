"""Builds the two detail sheets of docs/contact-sheets/ from a running
imagen-server (the whole-photo sheets come from `make run`, out/contact-*.png):

  upscale-detail.jpg         1:1 crops: area-downscaled 4x, then Pillow bicubic,
                             imagen upscale, and the original
  background_remove-composites.jpg   the test suite's composites (a CC0
                             texture or photo inside a known mask) and their cut-outs

  /usr/bin/python3 docs/make-sheets.py http://localhost:8000
"""
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

import test_imageops_background_remove as bgr  # noqa: E402
from conftest import Server  # noqa: E402,F401
from imageutil import area_downscale, decode_outputs, infer_raw, photo  # noqa: E402


class Remote:
    """The part of conftest.Server that infer_raw uses, for a given URL."""

    def __init__(self, url):
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        self.http_port = int(port)
        self._server = Server.__new__(Server)
        self._server.http_port = self.http_port

    def post(self, path, **kw):
        return self._server.request("POST", path, **kw)


def labelled(img, text):
    im = Image.fromarray(img).convert("RGB")
    canvas = Image.new("RGB", (im.width, im.height + 16), "white")
    canvas.paste(im, (0, 16))
    ImageDraw.Draw(canvas).text((2, 2), text, fill="black")
    return canvas


def row(images, gap=8):
    w = sum(i.width for i in images) + gap * (len(images) - 1)
    h = max(i.height for i in images)
    out = Image.new("RGB", (w, h), "white")
    x = 0
    for i in images:
        out.paste(i, (x, 0))
        x += i.width + gap
    return out


def column(rows, gap=8):
    w = max(r.width for r in rows)
    out = Image.new("RGB", (w, sum(r.height for r in rows) + gap * (len(rows) - 1)), "white")
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height + gap
    return out


def checker(rgba):
    h, w = rgba.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    board = np.where(((yy // 12 + xx // 12) % 2)[..., None] == 1, 200, 255).astype(np.float64)
    a = rgba[..., 3:4] / 255.0
    return (rgba[..., :3] * a + board * (1 - a)).astype(np.uint8)


def upscale_detail(server, path):
    crops = [("astronaut", 8, 44, 40), ("coffee", 20, 30, 40), ("chelsea", 15, 25, 40)]  # (name, y, x, side) in the small image
    rows = []
    for name, y0, x0, n in crops:
        small = area_downscale(photo(name), 4)
        out = decode_outputs(infer_raw(server, "upscale", small, {"SCALE": (4, np.int32)}))["IMAGE"][0]
        bic = np.asarray(Image.fromarray(small).resize((small.shape[1] * 4, small.shape[0] * 4), Image.BICUBIC))
        orig = photo(name)
        y, x, s = y0 * 4, x0 * 4, n * 4
        nearest = np.asarray(Image.fromarray(small[y0:y0 + n, x0:x0 + n]).resize((s, s), Image.NEAREST))
        rows.append(row([labelled(nearest, f"{name}: input, area /4"),
                         labelled(bic[y:y + s, x:x + s], "Pillow bicubic x4"),
                         labelled(out[y:y + s, x:x + s], "imagen upscale x4"),
                         labelled(orig[y:y + s, x:x + s], "original")]))
    column(rows).save(path, quality=85, optimize=True)


def composites(server, path):
    rows = []
    for shape, fg, bg in bgr.COMPOSITES[::2]:
        img, truth = bgr.composite(shape, fg, bg)
        out = decode_outputs(infer_raw(server, "background_remove", img))["IMAGE"][0]
        thumb = lambda a: np.asarray(Image.fromarray(a).resize((256, 192), Image.LANCZOS))  # noqa: E731
        rows.append(row([labelled(thumb(img), f"{shape} / {fg} / {bg}"), labelled(thumb(checker(out)), "cut-out")]))
    column(rows).save(path, quality=85, optimize=True)


def main():
    server = Remote(sys.argv[1] if len(sys.argv) > 1 else "http://localhost:8000")
    out = os.path.join(HERE, "contact-sheets")
    os.makedirs(out, exist_ok=True)
    upscale_detail(server, os.path.join(out, "upscale-detail.jpg"))
    composites(server, os.path.join(out, "background_remove-composites.jpg"))


if __name__ == "__main__":
    main()
