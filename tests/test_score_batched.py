"""score_predictions scores a category's pairs together; every PairResult must
equal evaluate_pair's for the same pair (an independent per-pair path), and
bad input must still raise evaluate_pair's errors."""
import dataclasses

import numpy as np
import pytest

from geomatch.eval import evaluate as E
from geomatch.eval import metrics as M
from geomatch.eval.predictions import Prediction
from geomatch.eval.protocols import EvalOptions


def _preds(n=60, seed=0, cats=("aeroplane", "cat", "x")):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        cat = cats[i % len(cats)]
        k = {"aeroplane": 25, "cat": 15}.get(cat, 9)
        perm = np.arange(k)
        perm[:4] = [1, 0, 3, 2]
        w, h = int(rng.integers(100, 500)), int(rng.integers(100, 500))
        gt = rng.uniform(0, [w, h], (k, 2))
        pred = gt + rng.normal(0, 20, (k, 2))
        pred[rng.random(k) < 0.1] = np.nan
        sv, tv = rng.random(k) < 0.7, rng.random(k) < 0.7
        gt[~tv] = np.nan
        if i % 7 == 0:   # exact ties with alpha * T
            pred[0] = gt[0] + [0.1 * max(w, h) if np.isfinite(gt[0, 0]) else 0, 0]
        out.append(Prediction(
            dataset="spair" if cat != "x" else "other", split="test", category=cat,
            pair_id=f"{i}", src_key="s", trg_key="t", src_kps=gt.copy(), trg_kps=gt, pred=pred,
            src_vis=sv, trg_vis=tv, flip_perm=perm,
            trg_bbox=np.array([0, 0, rng.uniform(10, w), rng.uniform(10, h)]),
            trg_size=(w, h), src_size=(w, h), azimuth_diff=int(i % 5) if i % 3 else None,
            mirror=i % 2, flipped=False))
    return out


def _same(r, q):
    for f in dataclasses.fields(q):
        x, y = getattr(r, f.name), getattr(q, f.name)
        if isinstance(y, dict):
            assert x.keys() == y.keys()
            for key in y:
                assert x[key].dtype == y[key].dtype and np.array_equal(x[key], y[key]), key
        elif isinstance(y, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), f.name
        else:
            assert x == y and type(x) is type(y), f.name


@pytest.mark.parametrize("threshold", ["bbox", "image"])
@pytest.mark.parametrize("compare", ["le", "lt"])
@pytest.mark.parametrize("frame", ["original", "pad:840"])
def test_batched_scores_equal_evaluate_pair(threshold, compare, frame):
    opts = EvalOptions(threshold=threshold, compare=compare, frame=frame,
                       alphas=(0.05, 0.1, 0.15))
    preds = _preds()
    acc = E.score_predictions(preds, opts)
    assert len(acc.results) == len(preds)
    for p, r in zip(preds, acc.results):
        t = (M.bbox_threshold(p.trg_bbox) if threshold == "bbox"
             else M.image_threshold(p.trg_size))
        q = M.evaluate_pair(p.pred, p.trg_kps, float(t), src_visible=p.src_vis,
                            trg_visible=p.trg_vis, flip_perm=p.flip_perm,
                            groups=M.geo_groups(p.dataset, p.category, p.flip_perm),
                            alphas=opts.alphas, category=p.category, pair_id=p.pair_id,
                            compare=compare,
                            scale=840 / max(p.trg_size) if frame != "original" else 1.0,
                            azimuth_diff=p.azimuth_diff, mirror=p.mirror)
        _same(r, q)


def test_bad_input_still_raises():
    opts = EvalOptions()
    preds = _preds(12)
    bad = preds[4]
    bad.trg_kps[np.flatnonzero(bad.trg_vis)[0]] = np.nan
    with pytest.raises(ValueError, match="trg_kps"):
        E.score_predictions(preds, opts)
    preds = _preds(12)
    preds[5] = dataclasses.replace(preds[5], trg_bbox=np.array([0, 0, 0, 0.0]))
    with pytest.raises(ValueError, match="bbox"):
        E.score_predictions(preds, opts)
    preds = _preds(12)
    preds[2] = dataclasses.replace(preds[2], src_vis=preds[2].src_vis.astype(int))
    with pytest.raises(TypeError, match="src_visible"):
        E.score_predictions(preds, opts)


def _loop_stats(results, na):
    """A literal per-pair loop (the accumulator's figures before they were
    computed over arrays)."""
    n_points = sum(r.n_points for r in results)
    n_correct = np.zeros(na, np.int64)
    per_image, per_geo, n_geo, geo_c = [], [], 0, np.zeros(na, np.int64)
    for r in results:
        n_correct += r.n_correct
        if r.n_points:
            per_image.append(r.n_correct / r.n_points)
        if r.n_geo:
            n_geo += r.n_geo
            geo_c += r.n_geo_correct
            per_geo.append(r.n_geo_correct / r.n_geo)
    kp = {}
    for r in results:
        for j, kid in enumerate(r.kp_ids.tolist()):
            n, c = kp.get(kid, (0, np.zeros(na, np.int64)))
            kp[kid] = (n + 1, c + r.kp_correct[:, j])
    return dict(n_points=n_points,
                pck_point=(n_correct / n_points).tolist(),
                pck_image=np.mean(per_image, axis=0).tolist(),
                n_geo_points=n_geo, n_geo_pairs=len(per_geo),
                pck_geo_image=np.mean(per_geo, axis=0).tolist() if per_geo else [None] * na,
                pck_geo=(geo_c / n_geo).tolist() if n_geo else [None] * na,
                by_kp={str(k): {"n_points": kp[k][0], "pck_point": (kp[k][1] / kp[k][0]).tolist()}
                       for k in sorted(kp)})


def test_accumulator_figures_equal_a_loop():
    acc = E.score_predictions(_preds(200, seed=3), EvalOptions())
    na = len(acc.alphas)
    for cat in [None] + acc.categories():
        res = [r for r in acc.results if cat is None or r.category == cat]
        got = M.PCKAccumulator._stats(res, na)
        ref = _loop_stats(res, na)
        for key in ("n_points", "pck_point", "pck_image", "n_geo_points", "n_geo_pairs",
                    "pck_geo", "pck_geo_image"):
            assert got[key] == ref[key], (cat, key)
        assert M.PCKAccumulator._by_keypoint(res, na) == ref["by_kp"]
