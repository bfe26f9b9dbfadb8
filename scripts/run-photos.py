"""The main job of `make run`: pushes the sample photos (python3-skimage's
astronaut, coffee, chelsea and rocket) through the five image models of a
running imagen-server over HTTP (binary tensors), writes each result as a
PNG under OUT_DIR/<operation>/ plus a before/after contact sheet per
operation, and prints a table of operation, input, output and milliseconds.

  run-photos.py BASE_URL OUT_DIR

Round-trip milliseconds include the HTTP transfer and the dynamic batcher's
wait for company (max_queue_delay_microseconds); compute milliseconds are
the model's own execution, read from the server's statistics before and
after each request."""
import http.client
import json
import os
import sys
import time
import urllib.parse

import numpy as np
from PIL import Image, ImageDraw
from skimage import data

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
# (operation, model, controls as name -> (value, datatype, numpy dtype))
JOBS = [
    ("upscale x2", "upscale", {"SCALE": (2, "INT32", np.int32)}),
    ("enhance", "enhance", {}),
    ("background_remove", "background_remove", {}),
    ("style_comic", "style_comic", {}),
    ("style_aged", "style_aged", {"SEED": (1, "INT64", np.int64)}),
]


class Client:
    def __init__(self, base):
        u = urllib.parse.urlparse(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=600)

    def request(self, method, path, body=None, headers=None):
        self.conn.request(method, path, body=body, headers=headers or {})
        r = self.conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()

    def compute_ns(self, model):
        status, _, body = self.request("GET", f"/v2/models/{model}/stats")
        if status != 200:
            return 0
        st = json.loads(body)["model_stats"]
        return sum(int(s["inference_stats"]["compute_infer"]["ns"]) for s in st)

    def infer(self, model, img, controls):
        tensors = [("IMAGE", "UINT8", img[None])]
        for name, (value, dt, npdt) in controls.items():
            tensors.append((name, dt, np.array([[value]], dtype=npdt)))
        header = {"inputs": [{"name": n, "datatype": dt, "shape": list(a.shape),
                              "parameters": {"binary_data_size": a.nbytes}} for n, dt, a in tensors],
                  "parameters": {"binary_data_output": True}}
        h = json.dumps(header).encode()
        body = h + b"".join(np.ascontiguousarray(a).tobytes() for _, _, a in tensors)
        status, headers, resp = self.request("POST", f"/v2/models/{model}/infer", body,
                                             {"Inference-Header-Content-Length": str(len(h)),
                                              "Content-Type": "application/octet-stream"})
        if status != 200:
            raise RuntimeError(f"{model}: HTTP {status}: {resp[:300].decode(errors='replace')}")
        n = int(headers.get("Inference-Header-Content-Length"))
        out_header = json.loads(resp[:n])
        off, outputs = n, {}
        for o in out_header["outputs"]:
            size = o["parameters"]["binary_data_size"]
            outputs[o["name"]] = np.frombuffer(resp[off:off + size], np.uint8).reshape(o["shape"])[0]
            off += size
        return outputs


def photo(name):
    img = np.asarray(getattr(data, name)())
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def thumbnail(img, cell):
    """An RGB thumbnail no larger than cell x cell; RGBA over a checkerboard."""
    im = Image.fromarray(img)
    im.thumbnail((cell, cell), Image.LANCZOS)
    if im.mode != "RGBA":
        return im.convert("RGB")
    board = Image.new("RGB", im.size, "white")
    d = ImageDraw.Draw(board)
    for by in range(0, im.size[1], 16):
        for bx in range(0, im.size[0], 16):
            if (bx // 16 + by // 16) % 2:
                d.rectangle([bx, by, bx + 15, by + 15], fill=(200, 200, 200))
    board.paste(im, mask=im.split()[3])
    return board


def contact_sheet(pairs, title, path, cell=320):
    """One row per photo: input | output, thumbnails at most cell pixels."""
    rows = [(thumbnail(b, cell), thumbnail(a, cell)) for b, a in pairs]
    heights = [max(x.size[1], y.size[1]) for x, y in rows]
    sheet = Image.new("RGB", (2 * cell + 30, sum(heights) + 10 * len(rows) + 30), "white")
    ImageDraw.Draw(sheet).text((10, 8), f"{title}: before | after", fill="black")
    y = 30
    for (before, after), h in zip(rows, heights):
        sheet.paste(before, (10, y))
        sheet.paste(after, (20 + cell, y))
        y += h + 10
    sheet.save(path)


def main():
    base, out_dir = sys.argv[1], sys.argv[2]
    client = Client(base)
    photos = {n: photo(n) for n in PHOTOS}
    print(f"{'operation':<18} {'input':<18} {'output':<12} {'round trip ms':>13} {'compute ms':>10}  file")
    print("-" * 100)
    failures = 0
    for label, model, controls in JOBS:
        d = os.path.join(out_dir, model)
        os.makedirs(d, exist_ok=True)
        pairs = []
        for name, img in photos.items():
            before = client.compute_ns(model)
            t0 = time.perf_counter()
            try:
                out = client.infer(model, img, controls)
            except RuntimeError as e:
                print(f"{label:<18} {name} {img.shape[1]}x{img.shape[0]}: {e}")
                failures += 1
                continue
            ms = (time.perf_counter() - t0) * 1000
            compute_ms = (client.compute_ns(model) - before) / 1e6
            result = out["IMAGE"]
            path = os.path.join(d, f"{name}.png")
            Image.fromarray(result).save(path)
            pairs.append((img, result))
            size_in = f"{name} {img.shape[1]}x{img.shape[0]}"
            print(f"{label:<18} {size_in:<18} {result.shape[1]}x{result.shape[0]:<7} {ms:>13.1f} "
                  f"{compute_ms:>10.1f}  {os.path.relpath(path)}")
        if pairs:
            contact_sheet(pairs, label, os.path.join(out_dir, f"contact-{model}.png"))
    print(f"\ncontact sheets: {os.path.relpath(out_dir)}/contact-<model>.png")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
