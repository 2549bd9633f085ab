"""Side by side with GeoAware-SC's official scoring on identical predictions.

Generates a synthetic SPair-71k folder (geomatch.demo.synthetic), random
cached features of the 840-pixel padded images, runs ``geomatch eval
--protocol geoaware-sc`` (grid argmax: GeoAware-SC's feature pipeline is not
part of geomatch), then hands the same predicted points, mapped into the
840-pixel padded frame as GeoAware-SC stores them, to its own scoring code
(``utils/eval_spair.py``: ``convert_all_results``, ``get_std_result``,
``get_img_result``) imported from a local checkout of ``Junyi42/GeoAware-SC``.
Prints per-point, per-image and per-image geometry-aware PCK from both.
Needs torch and scipy (``loguru`` and ``pandas`` are stubbed: unused here).

    python benchmarks/compare_official_geoaware.py --geoaware /path/to/GeoAware-SC
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import types

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--geoaware", required=True, help="checkout of Junyi42/GeoAware-SC")
    ap.add_argument("--pairs", type=int, default=30, help="pairs per category")
    args = ap.parse_args()
    from geomatch.data import load_dataset
    from geomatch.data.cache import FeatureCache, grid_frame
    from geomatch.demo.synthetic import generate_spair_like
    from geomatch.eval import evaluate as E

    tmp = tempfile.mkdtemp()
    root = os.path.join(tmp, "SPair-71k")
    generate_spair_like(root, n_images_per_category=40, n_pairs=args.pairs,
                        categories=["car", "cat", "dog"])
    ds = load_dataset("spair", root)
    pairs = ds.pairs("test")
    man = dict(backbone="keypoint-blobs", weights_sha256="", resolution=[840, 840],
               preprocess="pad", grid=[60, 60], dim=32, dtype="float32")
    cache = FeatureCache.create(os.path.join(tmp, "cache"), man)
    rng = np.random.default_rng(0)
    images = {p.src.key: p.src for p in pairs}
    images.update({p.trg.key: p.trg for p in pairs})
    for key, rec in sorted(images.items()):
        # noise plus a strong e_k at the patch of each visible keypoint k (and a
        # weaker one next to it), so that most keypoints match and some do not
        f = rng.normal(0, 0.6, (60, 60, 32)).astype(np.float32)
        x0, y0, fw, _ = grid_frame(rec.size, man)
        for k in np.flatnonzero(rec.visible):
            c, r = ((rec.keypoints[k] - (x0, y0)) * (60 / fw)).astype(int).clip(0, 59)
            f[r, c, k] += 3.0
            f[r, min(c + 1, 59), k] += 1.5
        cache.put(key, f)
    res = E.evaluate(ds, "test", cache, protocol="geoaware-sc", mode="grid-argmax",
                     progress=False, workers=1)

    sys.modules.setdefault("loguru", types.SimpleNamespace(logger=logging.getLogger("x")))
    sys.modules.setdefault("pandas", types.ModuleType("pandas"))   # PF-Pascal loading only
    sys.path.insert(0, args.geoaware)
    import torch
    from utils import eval_spair

    results = []
    for p in res.predictions:
        x0, y0, fw, _ = grid_frame(p.trg_size, man)
        scale = 840 / fw
        pred = np.zeros((30, 2), np.float32)
        v = ~np.isnan(p.pred[:, 0])
        pred[:len(v)][v] = (p.pred[v] - (x0, y0)) * scale   # GeoAware-SC's (x, y), 840 px
        cat, s, t = p.category, p.src_key.split("/")[1], p.trg_key.split("/")[1]
        results.append({"src_fn": os.path.join(root, "JPEGImages", cat, f"{s}.jpg"),
                        "trg_fn": os.path.join(root, "JPEGImages", cat, f"{t}.jpg"),
                        "src_kpts_pred": pred, "resize_resolution": 840})
    conv = eval_spair.convert_all_results(results)
    std, _ = eval_spair.get_std_result(conv)
    img, _ = eval_spair.get_img_result(conv)
    geo, _ = eval_spair.get_img_result(conv, geo=True)
    ov = res.overall
    print(f"{res.n_pairs} pairs, alphas {res.alphas}")
    for name, theirs, mine in (("per point", std, ov["pck_point"]),
                               ("per image", img, ov["pck_image"]),
                               ("per image, geometry-aware", geo, ov["pck_geo_image"])):
        t = [round(100 * float(x), 4) for x in torch.as_tensor(theirs)]
        m = [round(100 * x, 4) for x in mine]
        print(f"{name:28s} GeoAware-SC {t}  geomatch {m}  equal: {t == m}")


if __name__ == "__main__":
    main()
