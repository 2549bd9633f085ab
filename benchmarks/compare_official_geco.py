"""Side by side with GECO's official evaluation code on identical features.

Generates a synthetic SPair-71k folder (geomatch.demo.synthetic), random
cached features, runs ``geomatch eval --protocol geco`` (upsampled argmax and
the no-upsampling corner pixel), and feeds the same pairs and features to
GECO's own ``ArgmaxMatcher`` and ``update_counters_pck_alpha``
(``src/matcher/argmaxmatcher.py``, ``src/evaluation/pck.py``) imported from a
local checkout of ``reginehartwig/geco``.  Prints how many predicted pixels and
counters agree.  Needs torch (and matplotlib, which GECO's module imports).

    python benchmarks/compare_official_geco.py --geco /path/to/geco [--pairs 40]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np


def official(geco, pairs, cache, perm_of, upsample):
    sys.path.insert(0, geco)
    import torch
    from src.evaluation.pck import update_counters_pck_alpha
    from src.matcher.argmaxmatcher import ArgmaxMatcher

    matcher = ArgmaxMatcher()
    keys = ("10", "01", "11", "00", "1x", "1x_hat", "10_hat", "11_hat", "11_overline",
            "01_overline", "11_tilde")
    totals = {a: dict.fromkeys(keys, 0) for a in (0.05, 0.1, 0.15)}
    preds = {}
    for p in pairs:
        perm = perm_of(p)
        k = len(perm)
        orient = perm != np.arange(k)
        ds = type("D", (), {"pck_symm": True, "KP_WITH_ORIENTATION": orient})()

        def kps3(rec):
            out = np.zeros((k, 3), np.float32)
            out[rec.visible, 0] = rec.keypoints[rec.visible, 1]     # GECO: (y, x, vis)
            out[rec.visible, 1] = rec.keypoints[rec.visible, 0]
            out[rec.visible, 2] = 1
            return torch.tensor(out)

        src_kps, trg_kps = kps3(p.src), kps3(p.trg)
        symm = trg_kps[perm].clone()
        symm[~torch.tensor(orient), 2] = 0
        data = {"src_kps": src_kps, "trg_kps": trg_kps, "trg_kps_symm_only": symm}
        sft = torch.tensor(np.asarray(cache.get(p.src.key), np.float32)).permute(2, 0, 1)[None]
        tft = torch.tensor(np.asarray(cache.get(p.trg.key), np.float32)).permute(2, 0, 1)[None]
        ssize = torch.tensor([p.src.size[1], p.src.size[0]])
        tsize = torch.tensor([p.trg.size[1], p.trg.size[0]])
        thr = max(p.trg.size)
        out = np.full((k, 2), np.nan)
        for idx in range(k):
            if src_kps[idx][2] == 0:
                continue
            f0, f1, fsize = matcher.prepare_one_to_all(sft, tft, src_kps[idx], ssize, tsize,
                                                       upsample)
            heat, prob = matcher(f0, f1)
            pt, _ = matcher.get_one_trg_point(heat[0], prob[0], fsize, tsize)
            out[idx] = (pt[1], pt[0])
            mv = trg_kps[idx][2] > 0.5
            sv = symm[idx][2] > 0.5
            for a, tot in totals.items():
                n_img = dict.fromkeys(keys, 0)
                n_img, _ = update_counters_pck_alpha(ds, idx, data, pt, thr, a, mv, sv, n_img)
                for key in keys:
                    tot[key] += n_img[key]
        preds[p.pair_id] = out
    return preds, totals


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--geco", required=True, help="checkout of reginehartwig/geco")
    ap.add_argument("--pairs", type=int, default=30, help="pairs per category")
    args = ap.parse_args()
    from geomatch.data import load_dataset
    from geomatch.data.cache import FeatureCache
    from geomatch.demo.synthetic import generate_spair_like
    from geomatch.eval import evaluate as E

    tmp = tempfile.mkdtemp()
    root = os.path.join(tmp, "spair")
    generate_spair_like(root, n_images_per_category=40, n_pairs=args.pairs,
                        categories=["car", "cat", "dog"])
    ds = load_dataset("spair", root)
    pairs = ds.pairs("test", keep_empty=True)
    man = dict(backbone="random", weights_sha256="", resolution=[518, 518], preprocess="resize",
               grid=[12, 12], dim=16, dtype="float32")
    cache = FeatureCache.create(os.path.join(tmp, "cache"), man)
    rng = np.random.default_rng(0)
    for key in sorted({p.src.key for p in pairs} | {p.trg.key for p in pairs}):
        cache.put(key, rng.standard_normal((12, 12, 16)).astype(np.float32))
    for mode, upsample in (("upsample-argmax", True), ("grid-argmax-corner", False)):
        res = E.evaluate(ds, "test", cache, protocol="geco", mode=mode, progress=False,
                         workers=1)
        mine = {p.pair_id: p for p in res.predictions}
        theirs, totals = official(args.geco, pairs, cache,
                                  lambda p: mine[p.pair_id].flip_perm, upsample)
        n = same = 0
        for pid, pred in theirs.items():
            v = ~np.isnan(pred[:, 0])
            n += int(v.sum())
            same += int(np.all(pred[v] == mine[pid].pred[v], axis=1).sum())
        bd = res.overall["breakdown"]
        names = {"11_overline": "11_bar", "01_overline": "01_bar"}
        agree = all(bd[names.get(k, k)][i] == totals[a][k]
                    for i, a in enumerate((0.05, 0.1, 0.15)) for k in totals[a])
        print(f"{mode}: {res.n_pairs} pairs, predicted pixels equal {same}/{n}; "
              f"all breakdown counters equal at 0.05/0.1/0.15: {agree}; "
              f"PCK (geomatch) {[round(100 * x, 2) for x in res.overall['pck_point']]}")


if __name__ == "__main__":
    main()
