"""Nearest-centroid part segmentation (GECO's PASCAL-Part evaluation): metrics
against hand-worked confusion matrices and a plain transcription of GECO's
formulas, the classifier against independent references, and
``geomatch extract`` + ``geomatch seg-eval`` end to end on a generated
PASCAL-Part tree with random DINOv2 weights."""
import json
import os

import numpy as np
import pytest

pytest.importorskip("scipy.io", reason="PASCAL-Part annotations are MATLAB files")

from geomatch.cli import main  # noqa: E402
from geomatch.eval.segmentation import (METRIC_KEYS, NearestCentroid,  # noqa: E402
                                        confusion_matrix, part_metrics, training_indices)
from test_pascalparts import add_image, box, make_root  # noqa: E402
from test_backbone_extract import SMALL, _random_state  # noqa: E402


# --------------------------------------------------------------------------
# an independent transcription of GECO's metric code (loops, as GECO writes
# them in src/evaluation/segmentation_metrics.py and segmentation.py)

def ref_acc(c):
    s = sum(sum(r) for r in c)
    return sum(c[i][i] for i in range(len(c))) / s if s > 1e-20 else 0.0


def ref_prec(c):
    vals = [c[i][i] / sum(c[i]) for i in range(len(c)) if sum(c[i]) > 1e-20]
    return sum(vals) / len(vals) if vals else 0


def ref_rec(c):
    n = len(c)
    vals = []
    for j in range(n):
        col = sum(c[i][j] for i in range(n))
        if col > 1e-20:
            vals.append(c[j][j] / col)
    return sum(vals) / len(vals) if vals else 0


def ref_iou(c):
    n = len(c)
    vals = []
    for i in range(n):
        d = sum(c[i]) + sum(c[k][i] for k in range(n)) - c[i][i]
        if d > 1e-20:
            vals.append(c[i][i] / d)
    return sum(vals) / len(vals) if vals else 0


def ref_metrics(conf, oriented):
    conf = [[float(v) for v in row] for row in np.asarray(conf)]
    n = len(conf)
    out = {}
    for suffix, allowed in (("", [True] * n), ("_geo", [True] + list(oriented))):
        n_gt = [sum(conf[i][j] for i in range(n)) if allowed[j] else 0 for j in range(n)]
        keep = [j for j in range(n) if n_gt[j] != 0]
        sub = [[conf[i][j] for j in keep] for i in keep]
        norm = [[sub[a][b] / n_gt[keep[b]] for b in range(len(keep))] for a in range(len(keep))]
        for name, c in (("", sub), ("_precnorm", norm)):
            out["acc" + name + suffix] = ref_acc(c)
            out["m_prcn" + name + suffix] = ref_prec(c)
            out["m_rcll" + name + suffix] = ref_rec(c)
            out["m_iou" + name + suffix] = ref_iou(c)
    return out


# --------------------------------------------------------------------------
# metrics

def test_confusion_matrix_rows_are_predictions():
    pred = np.array([0, 1, 1, 2, 2, 2])
    gt = np.array([0, 1, 2, 2, 2, 1])
    np.testing.assert_array_equal(confusion_matrix(pred, gt, 3),
                                  [[1, 0, 0], [0, 1, 1], [0, 1, 2]])
    with pytest.raises(ValueError, match="labels must lie"):
        confusion_matrix(np.array([3]), np.array([0]), 3)


def _assert_hand_worked(conf_rows, oriented, expected):
    """part_metrics of the matrix ``conf_rows`` (rows: prediction, columns:
    annotation) equals the hand-worked values ``expected`` (metric -> value)."""
    m = part_metrics(np.array(conf_rows), oriented)
    assert set(m) == set(METRIC_KEYS)
    for key, value in expected.items():
        assert m[key] == pytest.approx(value), key


def test_hand_worked_matrix_with_a_part_absent_from_the_ground_truth():
    # bkg, A, B, C (C never annotated): C's row and column go (its 3 predicted
    # pixels leave the matrix); precnorm divides the columns by all annotated
    # pixels of the class (10, 10, 8); geo keeps background and A only (C is
    # oriented but never annotated)
    _assert_hand_worked([[10, 0, 0, 0], [0, 6, 2, 0], [0, 3, 4, 0], [0, 1, 2, 0]],
                        [True, False, True], {
        "acc": 20 / 25,
        "m_prcn": (1 + 6 / 8 + 4 / 7) / 3,
        "m_rcll": (1 + 6 / 9 + 4 / 6) / 3,
        "m_iou": (1 + 6 / 11 + 4 / 9) / 3,
        "acc_precnorm": 2.1 / 2.65,
        "m_prcn_precnorm": (1 + 0.6 / 0.85 + 0.5 / 0.8) / 3,
        "m_rcll_precnorm": (1 + 0.6 / 0.9 + 0.5 / 0.75) / 3,
        "m_iou_precnorm": (1 + 0.6 / 1.15 + 0.5 / 1.05) / 3,
        "acc_geo": 1.0,
        "m_iou_precnorm_geo": 1.0,
    })


def test_hand_worked_oriented_pair():
    # bkg, L, R, torso; L and R oriented; L often taken for R; precnorm_geo:
    # columns over all annotated L (5) and R (8) pixels
    _assert_hand_worked([[50, 0, 0, 0], [0, 2, 3, 1], [0, 2, 5, 0], [0, 1, 0, 9]],
                        [True, True, False], {
        "acc_geo": (50 + 2 + 5) / (50 + 2 + 3 + 2 + 5),
        "m_rcll_geo": (1 + 2 / 4 + 5 / 8) / 3,
        "m_prcn_geo": (1 + 2 / 5 + 5 / 7) / 3,
        "m_iou_geo": (1 + 2 / (5 + 4 - 2) + 5 / (7 + 8 - 5)) / 3,
        "m_rcll_precnorm_geo": (1 + 0.4 / 0.8 + 0.625 / 1.0) / 3,
    })


def test_empty_foreground_and_empty_matrix():
    only_bkg = np.array([[7, 0, 0], [0, 0, 0], [0, 0, 0]])
    m = part_metrics(only_bkg, [True, True])
    assert all(m[k] == 1.0 for k in METRIC_KEYS)
    m = part_metrics(np.zeros((3, 3), np.int64), [True, True])
    assert all(m[k] == 0.0 for k in METRIC_KEYS)


def test_one_part_category_matrix():
    conf = np.array([[4, 0], [0, 3]])
    m = part_metrics(conf, [False])
    assert m["acc"] == 1.0 and m["acc_geo"] == 1.0


@pytest.mark.parametrize("seed", range(12))
def test_metrics_match_the_transcription_of_geco(seed):
    rng = np.random.default_rng(seed)
    p = int(rng.integers(1, 7))
    conf = rng.integers(0, 20, (p + 1, p + 1)) * (rng.random((p + 1, p + 1)) < 0.6)
    conf[:, rng.integers(0, p + 1)] = 0          # a class never annotated
    if seed % 3 == 0:
        conf[rng.integers(0, p + 1), :] = 0      # a class never predicted
    oriented = rng.random(p) < 0.5
    got = part_metrics(conf, oriented)
    want = ref_metrics(conf, oriented)
    for k in METRIC_KEYS:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k


# --------------------------------------------------------------------------
# the classifier

def ref_fit_scores(x_train, y_train, n_parts, k, x_test):
    """Plain NumPy: PCA by SVD of the centred normalised features, projections
    without centring, per-part coordinate-wise medians, cosine scores."""
    x = x_train / np.linalg.norm(x_train, axis=1, keepdims=True)
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    comps = vt[:k]
    pr = x @ comps.T
    pr /= np.linalg.norm(pr, axis=1, keepdims=True)
    scores = np.zeros((x_test.shape[0], n_parts))
    pt = x_test @ comps.T
    pt /= np.linalg.norm(pt, axis=1, keepdims=True)
    for c in np.unique(y_train):
        med = np.median(pr[y_train == c], axis=0)
        scores[:, c] = pt @ (med / np.linalg.norm(med))
    return scores


def test_nearest_centroid_matches_reference_and_scores_absent_parts_zero():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((90, 12)) + 3 * np.eye(12)[rng.integers(0, 4, 90)]
    y = rng.integers(0, 4, 90)
    y[y == 2] = 1                                   # part 2 never seen in training
    clf = NearestCentroid.fit(x, y, 5, n_components=6)
    xt = rng.standard_normal((40, 12))
    got = clf.scores(xt)
    np.testing.assert_allclose(got, ref_fit_scores(x, y, 5, 6, xt), atol=1e-10)
    assert np.all(got[:, [2, 4]] == 0)
    np.testing.assert_array_equal(clf.present, [0, 1, 3])
    assert clf.predict(xt).shape == (40,)


def test_centroid_is_the_median_not_the_mean():
    # one outlier drags the mean but not the median
    x = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, -0.1], [-1.0, 50.0], [0.0, 1.0], [0.1, 1.0]])
    y = np.array([0, 0, 0, 0, 1, 1])
    clf = NearestCentroid.fit(x, y, 2, n_components=2)
    proj = clf.project(x / np.linalg.norm(x, axis=1, keepdims=True))
    proj /= np.linalg.norm(proj, axis=1, keepdims=True)
    np.testing.assert_allclose(clf.centroids[0], np.median(proj[:4], axis=0), atol=1e-12)
    assert not np.allclose(clf.centroids[0], proj[:4].mean(axis=0), atol=1e-3)


def test_nearest_centroid_matches_scikit_learn():
    sk = pytest.importorskip("sklearn", reason="scikit-learn is GECO's own implementation")
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestCentroid as SkNC

    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 20)) + 2 * np.eye(20)[rng.integers(0, 5, 200)]
    y = rng.integers(0, 5, 200)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    comps = PCA(n_components=8).fit(xn).components_
    pr = xn @ comps.T
    pr /= np.linalg.norm(pr, axis=1, keepdims=True)
    cents = SkNC(metric="manhattan").fit(pr, y).centroids_
    xt = rng.standard_normal((30, 20))
    pt = xt @ comps.T
    pt /= np.linalg.norm(pt, axis=1, keepdims=True)
    want = pt @ (cents / np.linalg.norm(cents, axis=1, keepdims=True)).T
    got = NearestCentroid.fit(x, y, 5, n_components=8).scores(xt)
    np.testing.assert_allclose(got, want, atol=1e-8)
    assert sk.__version__


def test_classifier_bad_input():
    x = np.ones((3, 4))
    with pytest.raises(ValueError, match="n_components"):
        NearestCentroid.fit(x, np.array([0, 1, 0]), 2, n_components=5)
    with pytest.raises(ValueError, match="non-empty"):
        NearestCentroid.fit(np.zeros((0, 4)), np.zeros(0, int), 2, n_components=1)
    with pytest.raises(ValueError, match="labels"):
        NearestCentroid.fit(x, np.array([0, 2, 0]), 2, n_components=1)


def test_training_subset_is_gecos_seeded_permutation():
    np.random.seed(0)
    want = np.random.permutation(np.arange(0, 150))[:100]
    np.testing.assert_array_equal(training_indices(150, 100, 0), want)
    np.testing.assert_array_equal(np.sort(training_indices(7, 100)), np.arange(7))


# --------------------------------------------------------------------------
# end to end: geomatch extract + geomatch seg-eval

BIRD = ("head", "leye", "reye", "beak", "torso", "neck", "lwing", "rwing", "lleg", "lfoot",
        "rleg", "rfoot", "tail")


def _bird_parts(h, w, rng):
    """Part boxes with random extents; returns [(name, mask)] and the label map
    an annotator-independent rule gives (highest part index wins)."""
    y = int(rng.integers(2, 5))
    x = int(rng.integers(2, 6))
    parts = [("head", box(h, w, y, y + 10, x, x + 14)),
             ("leye", box(h, w, y + 2, y + 5, x + 2, x + 6)),
             ("reye", box(h, w, y + 2, y + 5, x + 8, x + 12)),
             ("torso", box(h, w, y + 10, h - 3, x, w - 4)),
             ("lwing", box(h, w, y + 12, h - 6, x, x + 6)),
             ("rwing", box(h, w, y + 12, h - 6, w - 12, w - 6))]
    lab = np.zeros((h, w), np.int64)
    for name, m in sorted(parts, key=lambda p: BIRD.index(p[0])):
        lab[m] = BIRD.index(name) + 1
    return parts, lab


@pytest.fixture
def tree(tmp_path):
    root = make_root(tmp_path)
    rng = np.random.default_rng(7)
    labels = {}
    for i in range(6):
        w, h = int(rng.integers(36, 60)), int(rng.integers(30, 50))
        parts, lab = _bird_parts(h, w, rng)
        name = f"2009_{i:06d}"
        add_image(root, name, [("bird", box(h, w, 1, h - 1, 1, w - 1), parts)], (w, h), seed=i)
        labels[f"bird/{name}"] = lab
    # a bird without annotated parts: an empty foreground (background pixels only)
    add_image(root, "2009_000006", [("bird", box(32, 40, 1, 31, 1, 39), [])], (40, 32), seed=6)
    labels["bird/2009_000006"] = np.zeros((32, 40), np.int64)
    # a bottle (two parts, none oriented) and a boat (no parts: not evaluated)
    for i in range(3):
        w, h = 40, 44
        name = f"2010_{i:06d}"
        add_image(root, name, [("bottle", box(h, w, 2, 40, 10, 30),
                                [("cap", box(h, w, 2, 10 + i, 14, 26)),
                                 ("body", box(h, w, 10 + i, 40, 10, 30))])], (w, h), seed=10 + i)
        lab = np.zeros((h, w), np.int64)
        lab[2:10 + i, 14:26] = 1
        lab[10 + i:40, 10:30] = 2
        labels[f"bottle/{name}"] = lab
    add_image(root, "2011_000000", [("boat", box(20, 20, 2, 18, 2, 18), [])], (20, 20))
    return root, labels


def _torch_up(feat, size):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for interpolate")
    t = torch.from_numpy(np.ascontiguousarray(feat.transpose(2, 0, 1), dtype=np.float64))[None]
    up = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return up[0].numpy().transpose(1, 2, 0)


def _reference_confusion(cache, labels, keys, n_parts, k, resolution):
    """GECO's pipeline written out with torch's interpolate and NumPy."""
    n = len(keys)
    np.random.seed(0)
    train = np.random.permutation(np.arange(0, n))[:100]
    xs, ys = [], []
    for i in train:
        f = np.asarray(cache.get(keys[i]), np.float64)
        lab = labels[keys[i]]
        onehot = np.stack([lab == c + 1 for c in range(n_parts)], axis=-1).astype(np.float64)
        soft = _torch_up(onehot, f.shape[:2])
        fg = soft.sum(-1) > 0
        xs.append(f[fg])
        ys.append(np.argmax(soft[fg], axis=1))
    x, y = np.concatenate(xs), np.concatenate(ys)
    conf = np.zeros((n_parts + 1, n_parts + 1), np.int64)
    for key in keys:
        f = np.asarray(cache.get(key), np.float64)
        lab = labels[key]
        if resolution == "full":
            gt = lab
            feats = _torch_up(f, lab.shape)
        else:
            onehot = np.stack([lab == c + 1 for c in range(n_parts)], -1).astype(np.float64)
            soft = _torch_up(onehot, f.shape[:2])
            fg = soft.sum(-1) > 0
            gt = np.where(fg, np.argmax(soft, -1) + 1, 0)
            feats = f
        fg = gt > 0
        pred = np.zeros_like(gt)
        pred[fg] = np.argmax(ref_fit_scores(x, y, n_parts, k, feats[fg]), axis=1) + 1
        for a, b in zip(pred.ravel(), gt.ravel()):
            conf[a, b] += 1
    return conf


@pytest.mark.parametrize("resolution", ["full", "grid"])
def test_extract_and_seg_eval_end_to_end(tree, weights, tmp_path, capsys, resolution):
    from geomatch.data.cache import FeatureCache
    from geomatch.data.pascalparts import part_table

    root, labels = tree
    cache_dir = tmp_path / "cache"
    assert main(["--threads", "1", "extract", "--dataset", "pascalparts", "--root", str(root),
                 "--weights", str(weights), "--out", str(cache_dir), "--size", "112",
                 "--no-flip"]) == 0
    assert "11 images featurized" in capsys.readouterr().out
    out = tmp_path / "seg"
    assert main(["seg-eval", "--dataset", "pascalparts", "--root", str(root), "--cache",
                 str(cache_dir), "--out", str(out), "--n-components", "6", "--resolution",
                 resolution, "--figures", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| bird | 7 | 13 |" in printed and "| bottle | 3 | 2 |" in printed
    res = json.loads((out / "results.json").read_text())
    assert set(res["categories"]) == {"bird", "bottle"}
    assert "boat" in res["skipped"] and "tvmonitor" in res["skipped"]
    cache = FeatureCache.open(cache_dir)
    for cat, n_parts in (("bird", 13), ("bottle", 2)):
        keys = sorted(k for k in labels if k.startswith(cat + "/"))
        want = _reference_confusion(cache, labels, keys, n_parts, 6, resolution)
        np.testing.assert_array_equal(res["confusion"][cat], want)
        ref = ref_metrics(want, part_table(cat).oriented)
        for k in METRIC_KEYS:
            assert res["categories"][cat][k] == pytest.approx(ref[k], abs=1e-12), (cat, k)
    for k in METRIC_KEYS:
        assert res["mean"][k] == pytest.approx(
            (res["categories"]["bird"][k] + res["categories"]["bottle"][k]) / 2)
    # the pixel count of the full-resolution matrix is every pixel of every image
    total = sum(labels[k].size for k in labels if k.startswith("bird/"))
    if resolution == "full":
        assert np.sum(res["confusion"]["bird"]) == total
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("category,n_test,n_train,n_parts,acc,")
    assert [ln.split(",")[0] for ln in csv_lines[1:]] == ["bird", "bottle", "mean"]
    assert (out / "results.md").read_text().startswith("## PASCAL-Part")
    figs = sorted(os.listdir(out / "figures"))
    assert figs == ["bird_2009_000000.png", "bottle_2010_000000.png"]


def test_seg_eval_on_a_padded_cache(tree, weights, tmp_path):
    """GeoAware-SC padding: the grid covers a square frame around the image;
    every image pixel is still predicted and counted once."""
    from geomatch.backbone import load_dinov2
    from geomatch.backbone.extract import extract_features
    from geomatch.data import load_dataset
    from geomatch.eval.segmentation import evaluate_segmentation

    root, labels = tree
    ds = load_dataset("pascalparts", root, progress=False)
    extract_features(ds.images("test", ["bird"]), load_dinov2(weights), tmp_path / "c",
                     preprocess="pad", size=112, flip=False, progress=False)
    for resolution in ("full", "grid"):
        res = evaluate_segmentation(ds, tmp_path / "c", categories=["bird"], n_components=4,
                                    resolution=resolution, progress=False)
        conf = res.confusion["bird"]
        if resolution == "full":
            assert conf.sum() == sum(v.size for k, v in labels.items() if k.startswith("bird"))
            # annotated pixels per class are those of the label maps
            want = np.bincount(np.concatenate([v.ravel() for k, v in labels.items()
                                               if k.startswith("bird")]), minlength=14)
            np.testing.assert_array_equal(conf.sum(axis=0), want)
        else:
            # only cells whose centre lies on the image count: along the short
            # side the image spans [off, off + 112 * short / long] of the input,
            # off = (112 - round(112 * short / long)) // 2 (GeoAware-SC)
            n = 0
            for rec in ds.images("test", ["bird"]):
                w, h = rec.size
                short, long = min(w, h), max(w, h)
                off = (112 - int(np.around(112 * short / long))) // 2
                centres = (np.arange(8) + 0.5) * 14
                inside = np.sum((centres >= off) & (centres <= off + 112 * short / long))
                n += 8 * int(inside)
            assert conf.sum() == n < 7 * 64
        assert 0 < res.categories["bird"]["acc"] <= 1


def test_seg_eval_with_a_head(tree, weights, tmp_path, capsys):
    from geomatch.backbone import load_dinov2
    from geomatch.backbone.extract import extract_features
    from geomatch.data import load_dataset
    from geomatch.eval.segmentation import evaluate_segmentation
    from geomatch.model.head import AttentionHead, HeadConfig

    root, _ = tree
    ds = load_dataset("pascalparts", root, progress=False)
    extract_features(ds.images("test", ["bottle"]), load_dinov2(weights), tmp_path / "c",
                     size=56, flip=False, progress=False)
    head = AttentionHead(HeadConfig(in_dim=128, dim=8, out_dim=6, num_heads=2, num_blocks=1,
                                    mlp_dim=16), seed=1)
    res = evaluate_segmentation(ds, tmp_path / "c", head=head, categories=["bottle"],
                                n_components=3, progress=False)
    assert list(res.categories) == ["bottle"] and res.config["head"] is not None
    assert res.categories["bottle"]["n_train"] == 3


def test_seg_eval_same_result_for_every_thread_count(tree, weights, tmp_path):
    import geomatch as gm
    from geomatch.backbone import load_dinov2
    from geomatch.backbone.extract import extract_features
    from geomatch.data import load_dataset
    from geomatch.eval.segmentation import evaluate_segmentation

    root, _ = tree
    ds = load_dataset("pascalparts", root, progress=False)
    extract_features(ds.images("test", ["bird"]), load_dinov2(weights), tmp_path / "c",
                     size=112, flip=False, progress=False)
    prev = gm.get_num_threads()
    try:
        out = []
        for n in (1, 2, 3):
            gm.set_num_threads(n)
            res = evaluate_segmentation(ds, tmp_path / "c", categories=["bird"],
                                        n_components=8, progress=False)
            out.append((res.confusion["bird"], res.categories["bird"]))
    finally:
        gm.set_num_threads(prev)
    for conf, m in out[1:]:
        np.testing.assert_array_equal(conf, out[0][0])
        assert m == out[0][1]


# --------------------------------------------------------------------------
# bad input on the command line: one line on stderr, nothing written

def _fail(argv, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def _extracted(tree, weights, tmp_path, capsys):
    """(root, cache) of the tree's features at 56 px, no flipped copies."""
    root, _ = tree
    cache_dir = tmp_path / "cache"
    assert main(["extract", "--dataset", "pascalparts", "--root", str(root), "--weights",
                 str(weights), "--out", str(cache_dir), "--size", "56", "--no-flip"]) == 0
    capsys.readouterr()
    return root, cache_dir


def test_seg_eval_errors(tree, weights, tmp_path, capsys):
    root, cache_dir = _extracted(tree, weights, tmp_path, capsys)
    out = tmp_path / "seg"
    base = ["seg-eval", "--root", str(root), "--cache", str(cache_dir), "--out", str(out),
            "--n-components", "3", "--no-progress"]
    # a cache lacking an image
    from geomatch.data.cache import key_to_filename
    (cache_dir / "features" / key_to_filename("bird/2009_000003")).unlink()
    err = _fail(base, capsys)
    assert "bird/2009_000003" in err and str(cache_dir) in err
    assert not out.exists()
    # a category without parts, one with a single part
    assert "'boat'" in _fail(base + ["--categories", "boat"], capsys)
    assert "'tvmonitor'" in _fail(base + ["--categories", "tvmonitor"], capsys)
    assert "unknown category" in _fail(base + ["--categories", "unicorn"], capsys)
    assert "'horse'" in _fail(base + ["--categories", "horse"], capsys)   # no image
    # missing annotations
    err = _fail(["seg-eval", "--root", str(tmp_path / "nowhere"), "--cache", str(cache_dir),
                 "--out", str(out)], capsys)
    assert "nowhere" in err
    # an annotation whose image is missing: extract names the image file, and
    # so does seg-eval when it would draw it (before anything is written)
    (root / "VOCdevkit" / "VOC2010" / "JPEGImages" / "2010_000000.jpg").unlink()
    err = _fail(base + ["--categories", "bottle", "--figures", "1"], capsys)
    assert "2010_000000.jpg" in err and not out.exists()
    err = _fail(["extract", "--dataset", "pascalparts", "--root", str(root), "--weights",
                 str(weights), "--out", str(tmp_path / "cache2"), "--size", "56"], capsys)
    assert "2010_000000.jpg" in err
    # PCA larger than the training features
    err = _fail(base[:-3] + ["--categories", "bottle", "--n-components", "100000",
                            "--no-progress"], capsys)
    assert "n_components" in err
    assert not out.exists()


# --------------------------------------------------------------------------
# runtime and memory

def test_profile_prints_gecos_table(weights, tmp_path, capsys):
    from geomatch.model.head import AttentionHead, HeadConfig

    head = AttentionHead(HeadConfig(in_dim=128, dim=8, out_dim=6, num_heads=2, num_blocks=1,
                                    mlp_dim=16), seed=0)
    head_path = tmp_path / "head.npz"
    head.save(head_path)
    assert main(["--threads", "1", "profile", "--weights", str(weights), "--head",
                 str(head_path), "--images", "3", "--pairs", "2", "--size", "56",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:4] == ["model", "size featurizer (MB)", "size refiner (MB)",
                          "runtime (ms/img)"]
    row = dict(zip(header, [c.strip() for c in lines[2].strip("|").split("|")]))
    n_backbone = sum(int(np.prod(a.shape)) for a in _random_state(SMALL).values())
    n_head = sum(int(np.asarray(a).size) for a in head.parameters().values())
    assert row["n_params featurizer"] == f"{n_backbone:,}"
    assert row["n_params refiner"] == f"{n_head:,}"
    assert float(row["size featurizer (MB)"]) == pytest.approx(n_backbone * 4 / 2 ** 20,
                                                               abs=1e-3)
    assert float(row["runtime (ms/img)"]) > 0 and float(row["matching (ms/pair)"]) > 0
    assert float(row["peak RSS (MB)"]) > 10 and row["threads"] == "1"
    assert "2 images" in out and "2 pairs" in out


def test_profile_counts_lora_factors(weights, tmp_path, capsys):
    torch = pytest.importorskip("torch", reason="GECO's LoRA checkpoints are torch files")
    d, r = SMALL.embed_dim, 3
    lora = {f"w_a_{j:03d}": torch.randn(r, d) * 0.01 for j in range(2 * SMALL.depth)}
    lora.update({f"w_b_{j:03d}": torch.randn(d, r) * 0.01 for j in range(2 * SMALL.depth)})
    path = tmp_path / "lora.pth"
    torch.save(lora, path)
    assert main(["profile", "--weights", str(weights), "--lora", str(path), "--images", "2",
                 "--pairs", "1", "--size", "56", "--no-progress"]) == 0
    out = capsys.readouterr().out
    n = sum(int(np.prod(a.shape)) for a in _random_state(SMALL).values()) + 4 * SMALL.depth * r * d
    assert f"| {n:,} |" in out and "+ LoRA" in out
    assert "absent.pth" in _fail(["profile", "--weights", str(tmp_path / "absent.pth")],
                                 capsys)


def test_profile_on_dataset_images(tree, weights, capsys):
    root, _ = tree
    assert main(["profile", "--weights", str(weights), "--dataset", "pascalparts", "--root",
                 str(root), "--images", "3", "--pairs", "1", "--size", "56",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "2 images (resize 56, grid 4x4x128)" in out
    assert "--dataset and --root" in _fail(["profile", "--weights", str(weights), "--dataset",
                                            "pascalparts"], capsys)


def test_nothing_to_evaluate(tmp_path):
    from geomatch.data import load_dataset
    from geomatch.data.cache import FeatureCache
    from geomatch.eval.segmentation import evaluate_segmentation

    root = make_root(tmp_path)
    add_image(root, "2011_000001", [("boat", box(20, 20, 2, 18, 2, 18), [])], (20, 20))
    FeatureCache.create(tmp_path / "c", {"backbone": "x", "weights_sha256": "0",
                                         "resolution": [56, 56], "preprocess": "resize",
                                         "grid": [4, 4], "dim": 8, "dtype": "float32"})
    ds = load_dataset("pascalparts", root, progress=False)
    with pytest.raises(ValueError, match="no PASCAL-Part category to evaluate"):
        evaluate_segmentation(ds, tmp_path / "c", out_dir=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="resolution"):
        evaluate_segmentation(ds, tmp_path / "c", resolution="half")
    with pytest.raises(ValueError, match="figures need out_dir"):
        evaluate_segmentation(ds, tmp_path / "c", figures=2)


def test_part_map_figure_legend_names_the_parts_shown():
    import matplotlib.pyplot as plt
    from geomatch.eval.plotting import plot_part_maps

    img = np.zeros((20, 30, 3), np.uint8)
    gt = np.zeros((20, 30), int)
    gt[2:8, 2:9] = 2
    pred = np.zeros((20, 30), int)
    pred[10:12, 10:12] = 3
    fig = plot_part_maps(img, gt, pred, ["head", "leye", "reye"], title="t")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    plt.close(fig)
    assert labels == ["leye", "reye"]
    with pytest.raises(ValueError, match="labels must lie"):
        plot_part_maps(img, gt, gt + 5, ["head", "leye", "reye"])


def test_seg_eval_head_of_another_feature_dimension_names_the_head(tree, weights, tmp_path,
                                                                    capsys):
    """QA: the error said only 'feat has 128 channels, the head expects 64'."""
    from geomatch.model.head import AttentionHead, HeadConfig

    root, cache_dir = _extracted(tree, weights, tmp_path, capsys)
    head = tmp_path / "head64.npz"
    AttentionHead(HeadConfig(in_dim=64, dim=32, out_dim=16, num_heads=1, mlp_dim=32)).save(head)
    out = tmp_path / "seg"
    err = _fail(["seg-eval", "--root", str(root), "--cache", str(cache_dir), "--out", str(out),
                 "--n-components", "3", "--no-progress", "--head", str(head)], capsys)
    assert "head64.npz" in err and "64" in err and "128" in err
    assert not out.exists()


def test_seg_eval_no_progress_silences_every_bar(tree, weights, tmp_path, capsys, monkeypatch):
    """QA: the loader's 'index PASCAL-Part' bar ignored --no-progress."""
    root, cache_dir = _extracted(tree, weights, tmp_path, capsys)
    monkeypatch.delenv("GEOMATCH_NO_PROGRESS", raising=False)
    assert main(["seg-eval", "--root", str(root), "--cache", str(cache_dir), "--out",
                 str(tmp_path / "seg"), "--n-components", "3", "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_profile_counts_lora_factors_of_a_safetensors_file(weights, tmp_path, capsys):
    """QA: profile read --lora only as a torch file."""
    from safetensors.numpy import save_file

    d, r = SMALL.embed_dim, 2
    rng = np.random.default_rng(1)
    lora = {f"w_a_{j:03d}": (0.01 * rng.normal(size=(r, d))).astype(np.float32)
            for j in range(2 * SMALL.depth)}
    lora.update({f"w_b_{j:03d}": (0.01 * rng.normal(size=(d, r))).astype(np.float32)
                 for j in range(2 * SMALL.depth)})
    path = tmp_path / "lora.safetensors"
    save_file(lora, str(path))
    assert main(["profile", "--weights", str(weights), "--lora", str(path), "--images", "2",
                 "--pairs", "1", "--size", "56", "--no-progress"]) == 0
    out = capsys.readouterr().out
    n = sum(int(np.prod(a.shape)) for a in _random_state(SMALL).values()) + 4 * SMALL.depth * r * d
    assert f"| {n:,} |" in out


def test_seg_eval_too_many_components_names_the_option_and_category(tree, weights, tmp_path,
                                                                     capsys):
    """QA: 'n_components must be between 1 and min(n_samples, n_features) = 24,
    got 32' named neither --n-components nor the category."""
    root, cache_dir = _extracted(tree, weights, tmp_path, capsys)
    out = tmp_path / "seg"
    err = _fail(["seg-eval", "--root", str(root), "--cache", str(cache_dir), "--out", str(out),
                 "--n-components", "1000", "--no-progress"], capsys)
    assert "--n-components" in err and "'bird'" in err
    assert not out.exists()
