"""Throughput and working memory of the five image operations, each beside
the closest libvips command (or Pillow where libvips has none) on the same
image in the same run. Called by bench/imageops.sh, which builds the
in-process benchmark program and prints the run header.

  imageops.py BENCH_BIN RESULT_JSON [--sizes 512,2048] [--runs N]

Our side: imagen-bench-imageops (the core request path without sockets),
median of RUNS after one warm-up; working memory from one cold execution
in a fresh process (see imageops_bench.c). Peers: the `vips` command line on
.v files in /dev/shm, median of RUNS, minus the median of `vips copy` on the
same files (so the peer is not charged for starting the program, loading
and saving); Pillow peers are timed in this process. MP/s counts output
pixels."""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageFilter
from skimage import data

# (label, model, imagen inputs, peer kind, peer description)
CASES = [
    ("upscale x2", "upscale", ["SCALE=2"], "vips", "vips resize 2 --kernel lanczos3"),
    ("upscale x4", "upscale", ["SCALE=4"], "vips", "vips resize 4 --kernel lanczos3"),
    ("enhance", "enhance", [], "vips", "vips hist_local 64 64 + vips sharpen"),
    ("style_comic", "style_comic", [], "pillow", "Pillow SMOOTH_MORE + median cut 8 + FIND_EDGES"),
    ("style_aged", "style_aged", ["SEED=7"], "vips", "vips recomb (sepia matrix)"),
    ("background_remove", "background_remove", [], "limit", "10 MP/s target (no libvips/Pillow equivalent)"),
]
LIMIT_MP_S = 10.0

SEPIA = "3 3\n0.393 0.769 0.189\n0.349 0.686 0.168\n0.272 0.534 0.131\n"


def run_vips(args, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(["vips"] + args, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def net(t, base):
    """Command time minus the `vips copy` baseline; None when the difference
    is under a fifth of the command's time (start-up noise would decide it)."""
    return t - base if t - base >= 0.2 * t else None


def vips_peer(label, work, size, runs):
    src = os.path.join(work, f"in{size}.v")
    out = os.path.join(work, "peer-out.v")
    tmp = os.path.join(work, "peer-tmp.v")
    base = run_vips(["copy", src, out], runs)
    if label.startswith("upscale"):
        s = label[-1]
        t = run_vips(["resize", src, out, s, "--kernel", "lanczos3"], runs)
        return net(t, base), size * size * int(s) ** 2
    if label == "enhance":
        t1 = run_vips(["hist_local", src, tmp, "64", "64", "--max-slope", "3"], runs)
        t2 = run_vips(["sharpen", tmp, out], runs)
        n1, n2 = net(t1, base), net(t2, base)
        return (n1 + n2 if n1 is not None and n2 is not None else None), size * size
    if label == "style_aged":
        mat = os.path.join(work, "sepia.mat")
        with open(mat, "w") as f:
            f.write(SEPIA)
        t = run_vips(["recomb", src, out, mat], runs)
        return net(t, base), size * size
    raise ValueError(label)


def pillow_peer(label, img, runs):
    im = Image.fromarray(img)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        q = im.filter(ImageFilter.SMOOTH_MORE).quantize(8, method=Image.Quantize.MEDIANCUT).convert("RGB")
        edges = im.convert("L").filter(ImageFilter.FIND_EDGES)
        q.paste((0, 0, 0), mask=edges.point(lambda v: 255 if v > 64 else 0))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), img.shape[0] * img.shape[1]


def imagen_run(bench, model, inputs, ppm, runs, memory=False):
    cmd = [bench, "--repository", REPO, "--model", model, "--image", ppm]
    for i in inputs:
        cmd += ["--input", i]
    cmd += ["--memory"] if memory else ["--runs", str(runs)]
    p = subprocess.run(cmd, check=True, capture_output=True, text=True)
    line = p.stdout.strip().splitlines()[-1]
    return dict(kv.split("=", 1) for kv in line.split())


def main():
    global REPO
    ap = argparse.ArgumentParser()
    ap.add_argument("bench")
    ap.add_argument("result_json")
    ap.add_argument("--sizes", default=os.environ.get("SIZES", "512,2048"))
    ap.add_argument("--runs", type=int, default=int(os.environ.get("RUNS", "5")))
    ap.add_argument("--repository", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    work = tempfile.mkdtemp(prefix="imagen-bench-imageops.", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    rows = []
    try:
        # The bundled configs let the batcher wait 100 ms for a second image;
        # one request at a time would time that wait, not the operation.
        REPO = os.path.join(work, "models")
        for _, model, _, _, _ in CASES:
            os.makedirs(os.path.join(REPO, model, "1"), exist_ok=True)
            with open(os.path.join(os.path.abspath(a.repository), model, "config.pbtxt")) as f:
                text = f.read()
            with open(os.path.join(REPO, model, "config.pbtxt"), "w") as f:
                f.write(text.replace("max_queue_delay_microseconds: 100000", "max_queue_delay_microseconds: 0"))
        photo = Image.fromarray(data.astronaut())
        imgs = {}
        for size in sizes:
            im = photo.resize((size, size), Image.LANCZOS)
            imgs[size] = np.asarray(im)
            ppm = os.path.join(work, f"in{size}.ppm")
            im.save(ppm)
            subprocess.run(["vips", "copy", ppm, os.path.join(work, f"in{size}.v")], check=True)
        print(f"input: skimage astronaut resized (Lanczos) to {', '.join(f'{s}x{s}' for s in sizes)}; "
              f"median of {a.runs} runs after one warm-up")
        print()
        hdr = (f"{'operation':<18} {'input':>9} {'imagen s':>9} {'MP/s':>7}  {'peer':<52} {'peer s':>8} "
               f"{'MP/s':>7} {'ratio':>6}  {'work/(in+out)':>13}")
        print(hdr)
        print("-" * len(hdr))
        for label, model, inputs, kind, desc in CASES:
            for size in sizes:
                ppm = os.path.join(work, f"in{size}.ppm")
                ours = imagen_run(a.bench, model, inputs, ppm, a.runs)
                mem = imagen_run(a.bench, model, inputs, ppm, a.runs, memory=True)
                ow, oh = (int(x) for x in ours["out"].split("x"))
                our_s = float(ours["median_s"])
                our_mp = ow * oh / 1e6 / our_s
                if kind == "vips":
                    peer_s, peer_px = vips_peer(label, work, size, a.runs)
                    peer_mp = peer_px / 1e6 / peer_s if peer_s is not None else None
                elif kind == "pillow":
                    peer_s, peer_px = pillow_peer(label, imgs[size], a.runs)
                    peer_mp = peer_px / 1e6 / peer_s
                else:
                    peer_s, peer_mp = float("nan"), LIMIT_MP_S
                ratio = our_mp / peer_mp if peer_mp is not None else None
                work_ratio = float(mem["working_over_io"])
                if peer_mp is None:
                    peer_cols = f"{'n/a':>8} {'n/a':>7} {'n/a':>6}"
                elif kind == "limit":
                    peer_cols = f"{'-':>8} {peer_mp:>7.1f} {ratio:>6.2f}"
                else:
                    peer_cols = f"{peer_s:>8.4f} {peer_mp:>7.1f} {ratio:>6.2f}"
                print(f"{label:<18} {size:>4}x{size:<4} {our_s:>9.4f} {our_mp:>7.1f}  {desc:<52} "
                      f"{peer_cols}  {work_ratio:>13.2f}")
                sys.stdout.flush()
                rows.append({"operation": label, "model": model, "inputs": inputs, "size": size,
                             "imagen_s": our_s, "imagen_mp_s": our_mp, "peer": desc, "peer_kind": kind,
                             "peer_s": None if kind == "limit" else peer_s, "peer_mp_s": peer_mp,
                             "ratio": ratio, "working_mib": float(mem["working_mib"]),
                             "io_mib": float(mem["io_mib"]), "working_over_io": work_ratio})
        print()
        print("ratio = imagen MP/s / peer MP/s (>= 1: imagen as fast or faster; for 'limit' rows, vs 10 MP/s).")
        print("n/a: the peer's time is within its command's start-up noise (under 1/5 above `vips copy`).")
        print("work/(in+out) = peak working memory of one execution over input + output bytes (target <= 3).")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta = {}
    meta_path = os.environ.get("META_JSON")
    if meta_path and os.path.exists(meta_path):
        meta = json.load(open(meta_path))
    json.dump({"meta": meta, "rows": rows}, open(a.result_json, "w"), indent=1)


if __name__ == "__main__":
    main()
