"""The main job of `make run`: the sample photos through the whole pipeline.

Writes python3-skimage's astronaut, coffee, chelsea and rocket to
OUT_DIR/photos/ (three JPEGs and one PNG), submits one job per photo to each
of the five operations with `imagen submit` on the queue QUEUE_URL, waits
until a running imagen-worker has finished them all, and prints a table of
job id, operation, input, state and milliseconds per stage (the worker's
own timings, stored with each job). Results are in OUT_DIR/<operation>/,
with a before/after contact sheet per operation in OUT_DIR.

  run-jobs.py IMAGEN_BIN QUEUE_URL OUT_DIR [TIMEOUT_SECONDS]

Exit status 1 when a job failed or did not finish in time."""
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np
from PIL import Image, ImageDraw
from skimage import data

PHOTOS = (("astronaut", "jpg"), ("coffee", "jpg"), ("chelsea", "png"), ("rocket", "jpg"))
# (operation, --param values)
JOBS = (
    ("upscale", ["scale=2"]),
    ("enhance", []),
    ("background_remove", []),
    ("style_comic", []),
    ("style_aged", ["seed=1"]),
)
STAGES = ("fetch_ms", "decode_ms", "pre_ms", "infer_ms", "post_ms", "encode_ms", "write_ms", "total_ms")


def run(cmd, quiet=False):
    """Runs a command, printed as typed; returns its stdout."""
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if not quiet and p.stdout:
        print(p.stdout, end="" if p.stdout.endswith("\n") else "\n")
    if p.returncode != 0:
        raise SystemExit(f"command failed with status {p.returncode}")
    return p.stdout


def write_photos(directory):
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, ext in PHOTOS:
        img = np.asarray(getattr(data, name)())
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        path = os.path.join(directory, f"{name}.{ext}")
        Image.fromarray(np.ascontiguousarray(img[..., :3]).astype(np.uint8)).save(path, quality=92)
        paths.append(path)
    return paths


def thumbnail(path, cell):
    """An RGB thumbnail no larger than cell x cell; RGBA over a checkerboard."""
    im = Image.open(path)
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
    imagen, queue, out_dir = sys.argv[1], sys.argv[2], os.path.abspath(sys.argv[3])
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 600.0
    photos = write_photos(os.path.join(out_dir, "photos"))

    submitted = {}  # id -> (op, input path)
    for op, params in JOBS:
        cmd = [imagen, "submit", "--queue", queue, "--op", op, "--out", os.path.join(out_dir, op)]
        for p in params:
            cmd += ["--param", p]
        for line in run(cmd + photos).splitlines():
            job_id, _, path = line.split(" ", 2)
            submitted[job_id] = (op, path)

    print(f"\nwaiting for the worker to finish {len(submitted)} jobs", end="", flush=True)
    deadline = time.monotonic() + timeout
    jobs = {}
    while True:
        out = subprocess.run([imagen, "jobs", "--queue", queue, "--json", "--limit", "10000"],
                             stdout=subprocess.PIPE, text=True, check=True).stdout
        jobs = {j["id"]: j for j in json.loads(out) if j["id"] in submitted}
        if all(j["state"] in ("done", "failed", "dead") for j in jobs.values()) and len(jobs) == len(submitted):
            break
        if time.monotonic() > deadline:
            print(f"\n{sum(j['state'] not in ('done', 'failed', 'dead') for j in jobs.values())} jobs did not "
                  f"finish in {timeout:.0f} s")
            return 1
        print(".", end="", flush=True)
        time.sleep(0.5)
    print("\n")

    head = f"{'job id':<24}  {'operation':<17}  {'input':<13}  {'state':<6}" + "".join(
        f"  {s[:-3]:>6}" for s in STAGES)
    print(head + "   (milliseconds per stage)")
    print("-" * len(head))
    failures = 0
    for job_id, (op, path) in submitted.items():
        j = jobs[job_id]
        t = j.get("timings", {})
        cells = "".join(f"  {t.get(s, 0):>6.0f}" for s in STAGES)
        print(f"{job_id:<24}  {op:<17}  {os.path.basename(path):<13}  {j['state']:<6}{cells}")
        if j["state"] != "done":
            failures += 1
            print(f"{'':<26}{j.get('error', '')}")

    for op, _ in JOBS:
        pairs = [(path, jobs[i]["output"]) for i, (o, path) in submitted.items()
                 if o == op and jobs[i]["state"] == "done"]
        if pairs:
            contact_sheet(pairs, op, os.path.join(out_dir, f"contact-{op}.png"))
    print(f"\nresults: {os.path.relpath(out_dir)}/<operation>/, contact sheets: "
          f"{os.path.relpath(out_dir)}/contact-<operation>.png")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
