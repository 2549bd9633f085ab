"""Evaluation protocols (GECO, GeoAware-SC) on a hand-built SPair-71k folder.

The folder has the published layout (ImageAnnotation / PairAnnotation /
JPEGImages) with one category, ``car`` (30 keypoints; left/right pairs 0-1,
and GECO's csv also pairs the front/back parts 4-8 and 5-9).  Images are
140 x 140, the cache uses the "resize" frame with a 10 x 10 grid, so a patch
is 14 pixels and the grid-argmax centre of patch (r, c) is the pixel
(14 c + 6.5, 14 r + 6.5); GECO's corner pixel is (14 c, 14 r).  Keypoint k
sits at a patch centre whose feature is the one-hot e_k; other patches hold
e_31, so matching is exact and every expected count below is worked out by
hand in the comments.

Pair A (000001-s1-t1, azimuths 0 and 5: difference 3, mirror 1)
    source: keypoints 0 (patch 5,5), 1 (patch 8,1), 4 (patch 2,2), 8 (patch 2,7),
    5 on the border pixel (0, 139) (patch 9,0);
    target: 0 (patch 5,5), 4 (2,2), 8 (2,7), 5 (9,9); features at the patches of 4 and
    8 swapped (front/back confusion); keypoint 1 absent (its query finds no
    e_1: all cosines 0, the first patch (0,0) wins: pixel (6.5, 6.5)).
    Predictions (grid-argmax): 0 -> (76.5, 76.5) correct, 4 -> (104.5, 34.5)
    = keypoint 8 (70 px away), 8 -> (34.5, 34.5) = keypoint 4, 5 -> (132.5,
    132.5) correct, 1 -> (6.5, 6.5).
Pair B (000002-s2-t2, azimuths 2 and 3: difference 1, mirror 0)
    source: keypoint 2 only; target: keypoint 3 only, at patch (0, 0): no
    co-visible keypoint.  Keypoint 2 finds no e_2, lands on (6.5, 6.5) =
    keypoint 3, its counterpart.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from geomatch.data import load_dataset
from geomatch.data.cache import FeatureCache
from geomatch.eval import evaluate as E
from geomatch.eval.predictions import load_predictions, rescore
from geomatch.eval.protocols import DEFAULTS, parse_select, resolve_options

S, G, D = 140, 10, 32


def _c(r, c):
    return [14 * c + 6.5, 14 * r + 6.5]


IMAGES = {
    # name: (azimuth, {keypoint: (x, y)}, {patch: feature channel})
    "s1": (0, {0: _c(5, 5), 1: _c(8, 1), 4: _c(2, 2), 8: _c(2, 7), 5: [0.0, 139.0]},
           {(5, 5): 0, (8, 1): 1, (2, 2): 4, (2, 7): 8, (9, 0): 5}),
    "t1": (5, {0: _c(5, 5), 4: _c(2, 2), 8: _c(2, 7), 5: _c(9, 9)},
           {(5, 5): 0, (2, 2): 8, (2, 7): 4, (9, 9): 5}),
    "s2": (2, {2: _c(3, 3)}, {(3, 3): 2}),
    "t2": (3, {3: _c(0, 0)}, {(0, 0): 3}),
}
BOX = [10, 10, 110, 60]    # T(bbox) = 100; T(image) = 140


def _write_spair(root):
    for sub in ("JPEGImages/car", "ImageAnnotation/car", "PairAnnotation/test"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for name, (az, kps, _) in IMAGES.items():
        Image.new("RGB", (S, S), (90, 90, 90)).save(os.path.join(root, "JPEGImages/car",
                                                                 f"{name}.jpg"))
        ann = {"kps": {str(k): (kps[k] if k in kps else None) for k in range(30)},
               "bndbox": BOX, "image_width": S, "image_height": S, "azimuth_id": az}
        with open(os.path.join(root, "ImageAnnotation/car", f"{name}.json"), "w") as f:
            json.dump(ann, f)
    for pid, (s, t) in {"000001-s1-t1": ("s1", "t1"), "000002-s2-t2": ("s2", "t2")}.items():
        pj = {"src_imname": f"{s}.jpg", "trg_imname": f"{t}.jpg", "category": "car",
              "src_bndbox": BOX, "trg_bndbox": BOX, "src_imsize": [S, S, 3],
              "trg_imsize": [S, S, 3], "mirror": 0, "viewpoint_variation": 0}
        with open(os.path.join(root, "PairAnnotation/test", f"{pid}:car.json"), "w") as f:
            json.dump(pj, f)


def _features(layout):
    f = np.zeros((G, G, D), np.float32)
    f[..., 31] = 1.0
    for (r, c), ch in layout.items():
        f[r, c] = 0.0
        f[r, c, ch] = 1.0
    return f


@pytest.fixture
def spair(tmp_path):
    root = tmp_path / "SPair-71k"
    _write_spair(str(root))
    man = dict(backbone="fake", weights_sha256="0" * 64, resolution=[S, S], preprocess="resize",
               grid=[G, G], dim=D, dtype="float32")
    cache = FeatureCache.create(tmp_path / "cache", man)
    for name, (_, _, layout) in IMAGES.items():
        cache.put(f"car/{name}", _features(layout))
        cache.put(f"car/{name}", _features(layout)[:, ::-1], flipped=True)
    return load_dataset("spair", root), cache, tmp_path


def _bd(res):
    return {k: v[0] for k, v in res.overall["breakdown"].items()}


def test_geco_protocol_counts_by_hand(spair):
    ds, cache, tmp = spair
    # explicit mode overrides the preset's upsample-argmax
    res = E.evaluate(ds, "test", cache, protocol="geco", mode="grid-argmax", progress=False,
                     workers=1, out_dir=tmp / "geco")
    o = res.options
    assert (o["threshold"], o["compare"], o["flip_table"], o["empty_pairs"]) == \
        ("image", "le", "geco", "count")
    assert o["sources"]["mode"] == "explicit" and o["sources"]["threshold"] == "protocol geco"
    assert res.n_pairs == 2 and res.skipped == 0
    # 4-8 are counterparts in GECO's table: both land on each other (n11_bar);
    # 0 (counterpart 1 hidden) and 5 (counterpart 9 hidden) are n10 and correct;
    # 1 (hidden, counterpart 0 visible) and pair B's 2 (counterpart 3) are n01,
    # and pair B's prediction lands on keypoint 3: one n01_bar.
    assert _bd(res) == {"11": 2, "11_hat": 0, "11_tilde": 0, "11_bar": 2, "10": 2,
                        "10_hat": 2, "1x": 0, "1x_hat": 0, "01": 2, "01_bar": 1, "00": 0}
    np.testing.assert_allclose(res.overall["pck_point"], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(res.overall["pck_breakdown"], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(res.overall["pck_image"], [0.5, 0.5, 0.5])   # pair A only
    assert res.overall["n_pairs_scored"] == 1
    meta, preds = load_predictions(tmp / "geco" / "predictions.npz")
    a = preds[0]
    assert a.pair_id == "000001-s1-t1:car"
    np.testing.assert_array_equal(a.pred[[0, 1, 4, 5, 8]],
                                  [[76.5, 76.5], [6.5, 6.5], [104.5, 34.5], [132.5, 132.5],
                                   [34.5, 34.5]])
    assert np.isnan(a.pred[2]).all()


def test_default_choices_and_lr_table(spair):
    ds, cache, _ = spair
    res = E.evaluate(ds, "test", cache, mode="grid-argmax", progress=False, workers=1)
    assert res.options["protocol"] is None
    assert all(v == "default" for k, v in res.options["sources"].items() if k != "mode")
    # pair B (no co-visible keypoint) is skipped; with the left/right table 4, 8
    # and 5 have no counterpart (n1x, only 5 correct); 0 is n10; 1 is n01
    assert res.n_pairs == 1 and res.skipped == 1
    assert _bd(res) == {"11": 0, "11_hat": 0, "11_tilde": 0, "11_bar": 0, "10": 1,
                        "10_hat": 1, "1x": 3, "1x_hat": 1, "01": 1, "01_bar": 0, "00": 0}
    # T(bbox) = 100: the 70-pixel errors stay wrong at every alpha
    np.testing.assert_allclose(res.overall["pck_point"], [0.5, 0.5, 0.5])
    # breakdowns: azimuth bins 0 and 5 -> difference 3, mirror (0..3 vs 4..7)
    assert list(res.summary["by_azimuth"]) == ["3"]
    assert list(res.summary["by_mirror"]) == ["1"]
    by_kp = res.categories["car"]["by_keypoint"]
    assert {k: v["pck_point"][0] for k, v in by_kp.items()} == \
        {"0": 1.0, "4": 0.0, "5": 1.0, "8": 0.0}


def test_geco_corner_pixels_and_first_n(spair):
    ds, cache, tmp = spair
    res = E.evaluate(ds, "test", cache, protocol="geco", mode="grid-argmax-corner",
                     select="first:1", progress=False, workers=1)
    assert res.n_pairs == 1          # the first pair of the category in file order
    p = res.predictions[0]
    # corner pixel floor(14 c), floor(14 r) of the matched patch
    np.testing.assert_array_equal(p.pred[[0, 1, 4, 5, 8]],
                                  [[70, 70], [0, 0], [98, 28], [126, 126], [28, 28]])
    # 0 and 5 are 6.5*sqrt(2) = 9.19 px off; T = 140: alpha*T = 7, 14, 21
    np.testing.assert_allclose(res.overall["pck_point"], [0.0, 0.5, 0.5])


def test_boundary_le_lt_and_padded_frame():
    from geomatch.eval.metrics import evaluate_pair

    sv = tv = np.array([True])
    gt = np.array([[100.0, 20.0]])
    pred = np.array([[110.0, 20.0]])                 # 10 px: exactly 0.1 * 100
    kw = dict(src_visible=sv, trg_visible=tv, alphas=(0.1, 0.125))
    le = evaluate_pair(pred, gt, 100.0, compare="le", **kw)
    lt = evaluate_pair(pred, gt, 100.0, compare="lt", **kw)
    assert le.n_correct.tolist() == [1, 1] and lt.n_correct.tolist() == [0, 1]
    # 0.125 * 80 = 10 exactly in binary: <= holds, < does not
    le = evaluate_pair(pred, gt, 80.0, compare="le", **kw)
    lt = evaluate_pair(pred, gt, 80.0, compare="lt", **kw)
    assert le.n_correct.tolist() == [0, 1] and lt.n_correct.tolist() == [0, 0]
    # GeoAware-SC's 840 frame of a 420-wide image: distances and T doubled
    lt2 = evaluate_pair(pred, gt, 80.0, compare="lt", scale=840 / 420, **kw)
    assert lt2.n_correct.tolist() == [0, 0]
    near = np.array([[109.0, 20.0]])
    assert evaluate_pair(near, gt, 80.0, compare="lt", scale=2.0, **kw).n_correct.tolist() == [0, 1]


def test_geoaware_preset_and_per_image_geo(spair):
    ds, cache, _ = spair
    res = E.evaluate(ds, "test", cache, protocol="geoaware-sc", mode="grid-argmax",
                     progress=False, workers=1)
    o = res.options
    assert (o["frame"], o["compare"], o["alphas"], o["threshold"]) == \
        ("pad:840", "lt", [0.1, 0.05, 0.01], "bbox")
    assert o["headline"] == ["pck_image", "pck_geo_image"] and o["pixel"] == "stride"
    # GeoAware-SC's pixel of patch g: g * 14 + 7 (input = image here), not 14 g + 6.5
    np.testing.assert_array_equal(res.predictions[0].pred[[0, 4, 5]],
                                  [[77, 77], [105, 35], [133, 133]])
    # geometry-aware in pair A: group [4, 8] (both visible in the target);
    # [0, 1] and [5, 9] have one member in the target.  Both 4 and 8 are wrong.
    ov = res.overall
    assert ov["n_geo_points"] == 2 and ov["n_geo_pairs"] == 1
    assert ov["pck_geo_image"] == [0.0, 0.0, 0.0]
    assert ov["geo_pair_ratio"] == 1.0 and ov["geo_point_ratio"] == 0.5
    # 0.01 * T = 1 px (6 px in the 840 frame): exact matches stay correct
    np.testing.assert_allclose(ov["pck_image"], [0.5, 0.5, 0.5])


def test_predictions_rescore_agree(spair):
    ds, cache, tmp = spair
    res = E.evaluate(ds, "test", cache, protocol="geco", progress=False, workers=1,
                     out_dir=tmp / "run")
    again = rescore(tmp / "run" / "predictions.npz", dataset="spair", split="test")
    assert again.summary == res.summary
    # scoring choices can change: the lr table turns n11 into n1x
    lr = rescore(tmp / "run" / "predictions.npz", flip_table="lr")
    assert lr.overall["breakdown"]["11"] == [0, 0, 0]
    with pytest.raises(ValueError, match="split"):
        rescore(tmp / "run" / "predictions.npz", split="trn")
    with pytest.raises(ValueError, match="mode"):
        rescore(tmp / "run" / "predictions.npz", mode="grid-argmax")


def test_test_time_flip_takes_the_better_pose(spair):
    ds, cache, tmp = spair
    # the flipped source features of s1 are the mirror image of the target's
    # (the same set of descriptors: mutual-NN distance 0); the unflipped ones
    # get a little positive noise (distance > 0, same argmax)
    noise = 0.01 * np.random.default_rng(0).random((G, G, D))
    cache.put("car/s1", _features(IMAGES["s1"][2]) + noise)
    cache.put("car/s1", _features(IMAGES["t1"][2])[:, ::-1], flipped=True)
    res = E.evaluate(ds, "test", cache, mode="grid-argmax", test_flip="mutual-nn",
                     progress=False, workers=1)
    p = res.predictions[0]
    assert p.flipped
    # left/right table of car: 0 <-> 1.  Keypoint 0's mirrored counterpart (1) is
    # not co-visible, so it keeps its prediction; keypoints without counterpart
    # (4, 8, 5) are transferred from the mirrored source: keypoint 4 at x = 34.5
    # is mirrored to 140 - 34.5 = 105.5 (patch 2,7), which holds e_8 there, found
    # at the target's patch (2,2): keypoint 4's own place (the confusion is
    # gone); 8 likewise.  Keypoint 5 (x = 0 -> 140, clipped to the last column)
    # finds background and lands on the first patch.
    np.testing.assert_array_equal(p.pred[[0, 4, 8, 5]], [[76.5, 76.5], [34.5, 34.5],
                                                         [104.5, 34.5], [6.5, 6.5]])


@pytest.mark.parametrize("flip_wins", [False, True])
def test_masked_test_time_flip_decides_as_get_distance(spair, flip_wins):
    torch = pytest.importorskip("torch", reason="the reference distance is written in torch")
    from test_pose_distance import _official_masked

    ds, cache, tmp = spair
    noise = 0.01 * np.random.default_rng(0).random((G, G, D))
    src = _features(IMAGES["s1"][2]) + noise
    trg = _features(IMAGES["t1"][2])
    src_flip = trg[:, ::-1] + 0.02
    if flip_wins:            # no exact zeros, flipped source ~ target
        trg = trg + 0.05
        src_flip = trg + 0.001
    cache.put("car/s1", src)
    cache.put("car/s1", src_flip, flipped=True)
    cache.put("car/t1", trg)
    res = E.evaluate(ds, "test", cache, mode="grid-argmax", test_flip="masked",
                     progress=False, workers=1)
    # no mask files: the box (inclusive pixel bounds) is the mask, in the image
    # frame ("resize"); the flipped source's mask is its mirror image
    m = np.zeros((S, S))
    m[BOX[1]:BOX[3] + 1, BOX[0]:BOX[2] + 1] = 1.0
    T = torch.tensor
    d0 = _official_masked(T(src), T(trg), T(m), T(m))
    d1 = _official_masked(T(np.ascontiguousarray(src_flip)), T(trg),
                          T(m[:, ::-1].copy()), T(m))
    assert (d1 < d0) == flip_wins
    assert res.predictions[0].flipped == flip_wins


def test_pose_distance_by_hand():
    e0, e1 = np.eye(2)
    src = np.stack([e0, e1])[None]                    # (1, 2, 2)
    trg = np.stack([e0, (e0 + e1) / np.sqrt(2)])[None]
    # mutual nearest neighbours: only source patch 0 (distance 0)
    assert E.pose_distance(src, trg, "mutual-nn") == 0.0
    # masked: a 1x2 grid "resized" to 1x2 is itself; inputs are normalised first
    a = 2.0 * np.array([[[0.6, 0.8], [0.8, 0.6]]])
    b = np.array([[[0.6, 0.8], [0.0, 1.0]]])       # the exact 0 becomes -100000
    fg = np.ones((1, 2), bool)
    # a0 -> b0: 0; a1 -> b0: |(0.2, -0.2)|; b1 = (-1e5, 1) is far from both
    assert E.pose_distance(a, b, "masked", fg, fg) == pytest.approx(0.1 * np.sqrt(2))
    # target background cells are (-1e5, -1e5), never nearest here
    b = np.array([[[0.0, 1.0], [0.8, 0.6]]])
    assert E.pose_distance(a, b, "masked", np.array([[True, False]]),
                           np.array([[False, True]])) == pytest.approx(0.2 * np.sqrt(2))
    # no source foreground: the official mean over nothing (NaN, never flips)
    assert np.isnan(E.pose_distance(a, b, "masked", np.zeros((1, 2), bool), fg))


def test_options_and_select_parsing():
    assert resolve_options().mode == DEFAULTS["mode"] == "upsample-argmax"
    o = resolve_options("geco", "ap10k")
    assert o.mode == "grid-argmax-corner" and o.flip_table == "lr"   # AP-10K has one table
    assert resolve_options("geco", "spair", threshold="bbox").sources["threshold"] == "explicit"
    assert parse_select("first:5") == ("first", 5, None)
    assert parse_select("random:3:7") == ("random", 3, 7)
    assert parse_select("geoaware") == ("geoaware", 20, 42)
    for bad in ("first:0", "some", "random:x"):
        with pytest.raises(ValueError, match="select"):
            parse_select(bad)
    with pytest.raises(ValueError, match="protocol"):
        resolve_options("gecko", "spair")
    with pytest.raises(ValueError, match="flip_table"):
        resolve_options(None, "cub", flip_table="geco")


def _cli(args, cwd):
    env = dict(os.environ, GEOMATCH_NO_PROGRESS="1",
               PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.run([sys.executable, "-m", "geomatch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


def test_cli_flags_override_preset_in_any_order(spair):
    from geomatch.cli import build_parser

    p = build_parser()
    for argv in (["--protocol", "geco", "--threshold", "bbox"],
                 ["--threshold", "bbox", "--protocol", "geco"]):
        a = p.parse_args(["eval", "--dataset", "spair", "--root", "r", "--cache", "c", *argv])
        o = resolve_options(a.protocol, a.dataset, threshold=a.threshold)
        assert o.threshold == "bbox" and o.compare == "le" and o.flip_table == "geco"


def test_cli_errors_and_rescore(spair):
    ds, cache, tmp = spair
    root = str(ds.root)
    out = tmp / "cli-out"
    base = ["eval", "--dataset", "spair", "--root", root, "--cache", cache.path,
            "--out", str(out), "--workers", "1"]
    for extra, flag in ((["--protocol", "gecko"], "--protocol"),
                        (["--compare", "lte"], "--compare"),
                        (["--select", "first:0"], "--select"),
                        (["--threshold-frame", "pad:x"], "--threshold-frame")):
        r = _cli(base + extra, tmp)
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and flag in lines[0] and "Traceback" not in r.stderr
        assert not out.exists()            # nothing half-written
    r = _cli(base + ["--protocol", "geco", "--mode", "grid-argmax"], tmp)
    assert r.returncode == 0, r.stderr
    assert "| threshold | image | protocol geco |" in r.stdout
    r2 = _cli(["rescore", str(out / "predictions.npz"), "--dataset", "spair"], tmp)
    assert r2.returncode == 0, r2.stderr
    with open(out / "results.json") as f:
        pck = json.load(f)["summary"]["overall"]["pck_point"]
    assert pck == [0.5, 0.5, 0.5]
    r3 = _cli(["rescore", str(out / "predictions.npz"), "--dataset", "ap10k"], tmp)
    assert r3.returncode == 1 and len(r3.stderr.strip().splitlines()) == 1
    assert "predictions.npz" in r3.stderr


def test_grid_cell_corner_by_hand():
    from geomatch.ops.transfer import grid_cell_corner

    # W = 61 over w = 6 columns: 5 * 61 / 6 = 50.83 -> 50; H = 47 over h = 5: 4 * 9.4 = 37.6 -> 37
    np.testing.assert_array_equal(grid_cell_corner([[5, 4], [0, 0]], (5, 6), (61, 47)),
                                  [[50, 37], [0, 0]])
    with pytest.raises(ValueError, match="cell"):
        grid_cell_corner([1, 2, 3], (5, 6), (61, 47))


def test_geco_on_ap10k_takes_the_corner_pixel(tmp_path):
    """AP-10K in its published layout through the CLI: --protocol geco selects
    the no-upsampling corner pixel.  Images 70 x 42, grid 6 x 7 (patches of
    10 x 7 px).  Keypoint 0: source patch (1, 1), target e_0 at patch (4, 5),
    target ground truth at that patch's centre (54.5, 31): corner pixel
    (floor(5 * 10), floor(4 * 7)) = (50, 28), 5.41 px away; T = 70 (image):
    wrong at 0.05 (3.5 px), right at 0.1 and 0.15.  Keypoint 1 (source patch (3, 3)) sits on the
    target's border pixel (0, 0), in patch (0, 0): corner (0, 0), exact."""
    root = tmp_path / "ap-10k"
    kps = {"1": {0: (15, 10), 1: (35, 25)}, "2": {0: (54.5, 31.0), 1: (0.0, 0.0)}}
    layout = {"1": {(1, 1): 0, (3, 3): 1}, "2": {(4, 5): 0, (0, 0): 1}}
    for i, pts in kps.items():
        name = f"00000000000{i}"
        os.makedirs(root / "JPEGImages/Felidae/cat", exist_ok=True)
        os.makedirs(root / "ImageAnnotation/Felidae/cat", exist_ok=True)
        Image.new("RGB", (70, 42)).save(root / "JPEGImages/Felidae/cat" / f"{name}.jpg")
        flat = []
        for k in range(17):
            flat += [*pts[k], 2] if k in pts else [0, 0, 0]
        with open(root / "ImageAnnotation/Felidae/cat" / f"{name}.json", "w") as f:
            json.dump({"id": int(i), "image_id": int(i), "keypoints": flat,
                       "bbox": [1, 1, 60, 40], "num_keypoints": 2, "width": 70, "height": 42,
                       "file_name": f"{name}.jpg", "name": "cat", "supercategory": "Felidae"}, f)
    os.makedirs(root / "PairAnnotation/test", exist_ok=True)
    rel = "data/ap-10k/ImageAnnotation/Felidae/cat/{}.json"
    with open(root / "PairAnnotation/test/000000000001-000000000002:cat.json", "w") as f:
        json.dump({"src_json_path": rel.format("000000000001"),
                   "trg_json_path": rel.format("000000000002")}, f)
    man = dict(backbone="fake", weights_sha256="0" * 64, resolution=[84, 98], preprocess="resize",
               grid=[6, 7], dim=32, dtype="float32")
    cache = FeatureCache.create(tmp_path / "cache", man)
    for i in ("1", "2"):
        f = np.zeros((6, 7, D), np.float32)
        f[..., 31] = 1.0
        for (r, c), ch in layout[i].items():
            f[r, c] = 0.0
            f[r, c, ch] = 1.0
        cache.put(f"Felidae/cat/00000000000{i}", f)
    out = tmp_path / "out"
    r = _cli(["eval", "--protocol", "geco", "--dataset", "ap10k", "--root", str(root),
              "--cache", cache.path, "--out", str(out), "--workers", "1"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "| mode | grid-argmax-corner | protocol geco |" in r.stdout
    _, preds = load_predictions(out / "predictions.npz")
    np.testing.assert_array_equal(preds[0].pred[:2], [[50, 28], [0, 0]])
    with open(out / "results.json") as f:
        assert json.load(f)["summary"]["overall"]["pck_point"] == [0.5, 1.0, 1.0]
