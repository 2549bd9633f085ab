"""Benchmark: PASCAL-Part part segmentation (``geomatch seg-eval``) per image.

Writes (once, reused afterwards) a PASCAL-Part tree in the published layout
(``.mat`` annotations made with scipy.io.savemat, 500x375 JPEGs) of one
category with 17 parts, and a cache of random 37x37x768 float32 feature maps;
then times the annotation index, reading one label map, and
``evaluate_segmentation`` at full and grid resolution (training on every
image, testing on every image: the per-image figure covers both passes).
The peer is GECO's own order of work for the full-resolution prediction, in
PyTorch on the CPU: upsample the 768-channel features to the image
(``F.interpolate``), then project, normalise and score every pixel.

    OMP_NUM_THREADS=2 taskset -c 0,1 python benchmarks/bench_seg.py [--images N] [--dir DIR]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

os.environ.setdefault("GEOMATCH_NO_PROGRESS", "1")

from geomatch.data.cache import FeatureCache  # noqa: E402
from geomatch.data.pascalparts import PascalParts, part_table  # noqa: E402
from geomatch.eval.segmentation import NearestCentroid, evaluate_segmentation  # noqa: E402
from geomatch.testing.timing import fmt_time, median_time  # noqa: E402

W, H, GRID, DIM = 500, 375, (37, 37), 768


def make_tree(base: str, n: int, seed: int = 0) -> str:
    """PASCAL-Part layout with ``n`` single-object cat images and their cache."""
    import scipy.io as sio
    from PIL import Image

    root = os.path.join(base, "PASCAL-VOC")
    ann = os.path.join(root, "Parts", "Annotations_Part")
    img = os.path.join(root, "VOCdevkit", "VOC2010", "JPEGImages")
    if os.path.isdir(ann) and len(os.listdir(ann)) == n:
        return root
    os.makedirs(ann, exist_ok=True)
    os.makedirs(img, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = part_table("cat").names
    cache = FeatureCache.create(os.path.join(base, "cache"), {
        "backbone": "random", "weights_sha256": "0", "resolution": [518, 518],
        "preprocess": "resize", "grid": list(GRID), "dim": DIM, "dtype": "float32"})
    for i in range(n):
        name = f"2008_{i:06d}"
        obj = np.zeros((H, W), np.uint8)
        obj[30:345, 30:470] = 1
        parts = np.zeros((1, len(names)), dtype=[("part_name", "O"), ("mask", "O")])
        for j, pname in enumerate(names):
            m = np.zeros((H, W), np.uint8)
            y, x = int(rng.integers(40, 300)), int(rng.integers(40, 420))
            m[y:y + int(rng.integers(10, 70)), x:x + int(rng.integers(10, 80))] = 1
            parts[0, j]["part_name"] = pname
            parts[0, j]["mask"] = m
        objects = np.zeros((1, 1), dtype=[("class", "O"), ("class_ind", "O"), ("mask", "O"),
                                          ("parts", "O")])
        objects[0, 0]["class"], objects[0, 0]["class_ind"] = "cat", 8
        objects[0, 0]["mask"], objects[0, 0]["parts"] = obj, parts
        sio.savemat(os.path.join(ann, f"{name}.mat"),
                    {"anno": {"imname": name, "objects": objects}})
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(
            os.path.join(img, f"{name}.jpg"))
        cache.put(f"cat/{name}", rng.standard_normal(GRID + (DIM,)).astype(np.float32))
    cache.close()
    return root


def torch_peer(feats: np.ndarray, clf: NearestCentroid, fg: np.ndarray):
    """GECO's order: upsample D channels to the image, project every pixel."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(feats.transpose(2, 0, 1)))[None]
    up = torch.nn.functional.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)
    x = up[0].permute(1, 2, 0).reshape(-1, DIM)
    comps = torch.from_numpy(clf.components.astype(np.float32))
    cents = torch.from_numpy(clf.centroids.astype(np.float32))
    p = x @ comps.T
    p = p / p.norm(dim=-1, keepdim=True)
    s = p @ (cents / cents.norm(dim=-1, keepdim=True)).T
    return s.argmax(1).reshape(H, W).numpy()[fg]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "geomatch-bench-seg"))
    args = ap.parse_args()
    from _limits import print_machine
    print_machine()
    root = make_tree(args.dir, args.images)
    cache_dir = os.path.join(args.dir, "cache")
    n = args.images

    def index():
        PascalParts(root, progress=False).images("test")

    t_index = median_time(index, repeat=3) / n
    ds = PascalParts(root, progress=False)
    rec = ds.images("test")[0]
    t_labels = median_time(lambda: ds.part_labels(rec), repeat=7)
    rows = [["index the annotations", fmt_time(t_index) + " / file", ""],
            ["read one label map (part_labels)", fmt_time(t_labels), ""]]
    res = {}
    for resolution in ("full", "grid"):
        t0 = time.perf_counter()
        res[resolution] = evaluate_segmentation(ds, cache_dir, categories=["cat"],
                                                resolution=resolution, progress=False)
        el = time.perf_counter() - t0
        rows.append([f"seg-eval {resolution}: {n} training + {n} test images",
                     fmt_time(el), fmt_time(el / (2 * n)) + " / image"])
    try:
        import torch  # noqa: F401
    except ImportError:
        torch = None
    if torch is not None:
        cache = FeatureCache.open(cache_dir)
        feats = np.asarray(cache.get(rec.key), np.float32)
        lab = ds.part_labels(rec)
        fg = lab > 0
        clf = NearestCentroid.fit(feats.reshape(-1, DIM), np.arange(GRID[0] * GRID[1]) % 17, 17,
                                  32)
        from geomatch.eval.segmentation import _predict_full
        from geomatch.geometry import grid_frame

        frame = grid_frame(rec.size, cache.manifest)
        t_ours = median_time(lambda: _predict_full(clf, feats, fg, frame), repeat=5)
        t_peer = median_time(lambda: torch_peer(feats, clf, fg), repeat=5)
        rows.append(["full-resolution prediction of one image (geomatch)", fmt_time(t_ours), ""])
        rows.append(["same, GECO's order in PyTorch (upsample 768 channels first)",
                     fmt_time(t_peer), f"{t_peer / t_ours:.1f}x geomatch's time"])
    print("\n| step | time | per unit / ratio |\n|---|---:|---:|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    m = res["full"].categories["cat"]
    print(f"\nfull-resolution metrics on random features: acc {m['acc']:.3f} (background "
          f"pixels count as correct), m_iou {m['m_iou']:.3f}")


if __name__ == "__main__":
    main()
