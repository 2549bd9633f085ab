"""Size of the HTML viewer and the effect of its float16 features.

    python benchmarks/bench_viewer.py [--weights W] [--points 20] [--browser]

1. Page size for two 518 x 518 photos (matplotlib's grace_hopper.jpg and
   a mirrored crop of it) with ViT-B/14 feature maps (37 x 37 x 768 each), in
   float16 (default) and float32.
2. How often float16 features change the upsample-argmax answer: a Matcher
   with ViT-B/14 weights (random values unless --weights is given) matches
   an N x N grid of source points with float32 and float16 features; the
   share of identical answers and the distance of the others are printed.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def photos():
    import matplotlib.cbook as cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        im = Image.open(f).convert("RGB")
    a = np.asarray(im.resize((518, 518), Image.BILINEAR))
    w, h = im.size
    b = np.asarray(im.crop((w // 10, h // 12, w, h)).transpose(Image.FLIP_LEFT_RIGHT)
                   .resize((518, 518), Image.BILINEAR))
    return a, b


def random_vitb(seed=0):
    from geomatch.backbone.dinov2 import DinoV2, DinoV2Config

    cfg = DinoV2Config.from_name("vitb14")
    rng = np.random.default_rng(seed)
    state = {}
    for k, shape in cfg.expected_shapes().items():
        if k.endswith(("norm1.weight", "norm2.weight")) or k == "norm.weight":
            state[k] = np.ones(shape, np.float32)
        elif k.endswith(".bias") or "norm" in k:
            state[k] = np.zeros(shape, np.float32)
        elif "ls1" in k or "ls2" in k:
            state[k] = np.full(shape, 0.1, np.float32)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            state[k] = (rng.normal(size=shape) / np.sqrt(max(fan_in, 1))).astype(np.float32)
    return DinoV2(cfg, state, source="random ViT-B/14")


def browser_times(page_path, clicks=10):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        br = pw.chromium.launch(executable_path=os.environ.get("GEOMATCH_CHROMIUM",
                                                               "/usr/bin/chromium"),
                                args=["--no-sandbox"])
        try:
            pg = br.new_page()
            t0 = time.perf_counter()
            pg.goto("file://" + os.path.abspath(page_path))
            pg.wait_for_selector(".gm-viewer[data-ready='1']", timeout=120000)
            ready = time.perf_counter() - t0
            box = pg.locator("canvas.gm-src").bounding_box()
            t0 = time.perf_counter()
            for i in range(clicks):
                pg.mouse.click(box["x"] + 10 + 30 * i, box["y"] + 20 + 25 * i)
            pg.wait_for_function(f"document.querySelectorAll('li.gm-match').length == {clicks}")
            per_click = (time.perf_counter() - t0) / clicks
        finally:
            br.close()
    print(f"  in headless Chromium: ready after {ready:.2f} s, {per_click * 1e3:.0f} ms per click")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None, help="DINOv2 ViT-B/14 weights (default: random)")
    ap.add_argument("--points", type=int, default=20, help="grid side N (default: 20)")
    ap.add_argument("--browser", action="store_true",
                    help="also time the page in headless Chromium (default: off)")
    args = ap.parse_args()
    import geomatch as gm
    from _limits import print_machine
    print_machine(gm.get_num_threads())
    from geomatch.match.viewer import Viewer

    a, b = photos()
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(37, 37, 768)).astype(np.float32) for _ in range(2)]
    frame = (0.0, 0.0, 518.0, 518.0)
    with tempfile.TemporaryDirectory() as d:
        for prec in ("float16", "float32"):
            p = Viewer(a, b, feats[0], feats[1], frame, frame, precision=prec).save(
                os.path.join(d, f"v-{prec}.html"))
            print(f"viewer.html, two 518-px photos, ViT-B/14 maps, {prec}: "
                  f"{os.path.getsize(p) / 1e6:.2f} MB")
            if prec == "float16" and args.browser:
                browser_times(p)

    t0 = time.perf_counter()
    m = gm.Matcher(args.weights if args.weights else random_vitb(), model="vitb14"
                   if args.weights else None)
    m.features(a)
    m.features(b)
    print(f"features of both photos: {time.perf_counter() - t0:.1f} s "
          f"({m.backbone_name}, {'given' if args.weights else 'random'} weights)")
    n = args.points
    pts = np.array([[x, y] for y in np.linspace(5, 512, n) for x in np.linspace(5, 512, n)])
    full = m.match(a, b, pts).points
    half = m.match(a, b, pts, quantize="float16").points
    same = np.all(full == half, axis=1)
    dist = np.linalg.norm(full - half, axis=1)
    print(f"float16 vs float32 features, {len(pts)} points: {same.mean():.1%} identical; "
          f"others {dist[~same].mean() if (~same).any() else 0:.1f} px away on average "
          f"(max {dist.max():.1f} px; a 518-px image)")


if __name__ == "__main__":
    main()
