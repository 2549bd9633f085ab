"""End-to-end tests of geomatch.eval.evaluate on a tiny fake dataset and cache.

Images are 80x60 with an 8x6 feature grid (10x10-pixel patches).  Each
keypoint k sits at a patch centre whose feature is the one-hot vector e_k;
every other patch holds e_3 (background).  With argmax matching on the grid,
a keypoint lands exactly on the target patch holding its feature, so the
expected scores can be worked out by hand (see the comments).
"""
import csv
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

import geomatch as gm
from geomatch.eval import evaluate as E
from geomatch.data.cache import FeatureCache

W, H, GW, GH, D = 80, 60, 8, 6, 4
# keypoints: 0 left eye, 1 right eye, 2 nose; patches (row, col)
PATCH = {0: (2, 2), 1: (2, 5), 2: (4, 3)}
FLIP = np.array([1, 0, 2])
NAN = float("nan")


def _centre(rc):
    r, c = rc
    return (c + 0.5) * W / GW, (r + 0.5) * H / GH


def _feat(layout):
    """layout: patch -> keypoint whose one-hot feature it holds."""
    f = np.zeros((GH, GW, D), np.float32)
    f[..., 3] = 1.0
    for rc, k in layout.items():
        f[rc] = 0.0
        f[rc][k] = 1.0
    return f


def grid_argmax_transfer(src_feat, trg_feat, src_kps, src_size, trg_size, *, mode="grid-argmax"):
    """Slow, obvious argmax on the patch grid; returns target patch centres."""
    sh, sw = src_feat.shape[:2]
    th, tw = trg_feat.shape[:2]
    t = trg_feat.reshape(-1, trg_feat.shape[2]).astype(np.float64)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    out = []
    for x, y in np.asarray(src_kps, np.float64):
        r = min(int(y * sh / src_size[1]), sh - 1)
        c = min(int(x * sw / src_size[0]), sw - 1)
        q = src_feat[r, c].astype(np.float64)
        j = int(np.argmax(t @ (q / np.linalg.norm(q))))
        out.append(((j % tw + 0.5) * trg_size[0] / tw, (j // tw + 0.5) * trg_size[1] / th))
    return np.array(out)


def _records():
    from geomatch.data.base import ImageRecord, PairRecord

    return ImageRecord, PairRecord


class FakeDataset:
    name = "fake"

    def __init__(self, root):
        self.root = root
        self.skipped = ["broken pair"]
        self.images = {}
        self._pairs = []
        ImageRecord, PairRecord = _records()
        self._img_cls = ImageRecord
        self._pair_cls = PairRecord

    def add_image(self, cat, name, visible, layout):
        kps = np.array([_centre(PATCH[k]) if visible[k] else (NAN, NAN) for k in range(3)],
                       np.float32)
        path = os.path.join(self.root, f"{cat}_{name}.png")
        from PIL import Image

        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[..., 0] = np.linspace(0, 255, W, dtype=np.uint8)[None]
        rgb[..., 2] = np.linspace(0, 255, H, dtype=np.uint8)[:, None]
        Image.fromarray(rgb).save(path)
        rec = self._img_cls(dataset="fake", category=cat, key=f"{cat}/{name}", path=path,
                            size=(W, H), keypoints=kps, visible=np.array(visible, bool),
                            bbox=np.array([0, 0, 80, 60], np.float32), mask_path=None)
        self.images[rec.key] = (rec, _feat(layout))
        return rec

    def add_pair(self, cat, pid, src, trg):
        self._pairs.append(self._pair_cls(
            dataset="fake", split="test", category=cat, pair_id=pid, src=src, trg=trg,
            keypoint_names=("left eye", "right eye", "nose"), flip_perm=FLIP.copy(), meta={}))

    def pairs(self, split, categories=None, subsample=None, seed=0):
        assert split == "test"
        out = [p for p in self._pairs if categories is None or p.category in categories]
        return out[:subsample] if subsample else out


MANIFEST = dict(backbone="fake", weights_sha256="0" * 64, resolution=[84, 112],
                preprocess="resize", grid=[GH, GW], dim=D, dtype="float16")


@pytest.fixture
def setup(tmp_path):
    ds = FakeDataset(str(tmp_path))
    normal = {PATCH[k]: k for k in range(3)}
    swapped = {PATCH[0]: 1, PATCH[1]: 0, PATCH[2]: 2}
    no_right_eye = {PATCH[0]: 0, PATCH[2]: 2}
    d0 = ds.add_image("dog", "i0", [1, 1, 1], normal)
    d1 = ds.add_image("dog", "i1", [1, 1, 1], normal)
    d3 = ds.add_image("dog", "i3", [1, 1, 1], swapped)
    c0 = ds.add_image("cat", "c0", [1, 1, 1], normal)
    c1 = ds.add_image("cat", "c1", [1, 0, 1], no_right_eye)
    ds.add_pair("dog", "p0", d0, d1)   # 3/3 correct
    ds.add_pair("dog", "p1", d0, d3)   # eyes swapped (2x n11_bar), nose correct: 1/3
    ds.add_pair("cat", "p2", c0, c1)   # left eye correct (n10), nose (n1x); right eye -> n01
    cache = FeatureCache.create(tmp_path / "cache", MANIFEST)
    for key, (_, f) in ds.images.items():
        cache.put(key, f)
    return ds, cache


def _check_expected(res):
    # per point: dog 4/6, cat 2/2, all 6/8; per image: dog (1 + 1/3)/2, cat 1, all 7/9
    cats = res.categories
    np.testing.assert_allclose(cats["dog"]["pck_point"], [4 / 6] * 3)
    np.testing.assert_allclose(cats["dog"]["pck_image"], [2 / 3] * 3)
    np.testing.assert_allclose(cats["cat"]["pck_point"], [1.0] * 3)
    np.testing.assert_allclose(res.overall["pck_point"], [0.75] * 3)
    np.testing.assert_allclose(res.overall["pck_image"], [7 / 9] * 3)
    np.testing.assert_allclose(res.overall["pck_point_catmean"], [5 / 6] * 3)
    np.testing.assert_allclose(res.overall["pck_image_catmean"], [5 / 6] * 3)
    bd = res.overall["breakdown"]
    expect = {"11": 4, "11_hat": 2, "11_tilde": 0, "11_bar": 2, "10": 1, "10_hat": 1,
              "1x": 3, "1x_hat": 3, "01": 1, "01_bar": 0, "00": 0}
    for key, v in expect.items():
        assert bd[key] == [v] * 3, key
    np.testing.assert_allclose(res.overall["pck_breakdown"], [0.75] * 3)
    # geometry-aware (eye pair): dog p0 2/2, dog p1 0/2, cat none (one eye in target)
    np.testing.assert_allclose(res.overall["pck_geo"], [0.5] * 3)
    assert res.overall["n_geo_points"] == 4


def test_evaluate_end_to_end(setup, tmp_path):
    ds, cache = setup
    out = tmp_path / "out"
    res = E.evaluate(ds, "test", cache, mode="grid-argmax", out_dir=out, progress=False,
                     transfer=grid_argmax_transfer)
    assert res.n_pairs == 3 and res.skipped == 1
    _check_expected(res)
    md = res.to_markdown()
    assert "| dog | 2 | 6 | 66.67 | 66.67 | 66.67 |" in md
    assert "| cat | 1 | 2 | 100.00 |" in md
    # JSON and CSV parse back
    with open(out / "results.json") as f:
        doc = json.load(f)
    assert doc["n_pairs"] == 3 and doc["skipped"] == 1
    assert doc["config"]["mode"] == "grid-argmax"
    assert doc["summary"]["overall"]["pck_point"] == pytest.approx([0.75] * 3)
    assert sorted(p["pair_id"] for p in doc["pairs"]) == ["p0", "p1", "p2"]
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["category"] for r in rows] == ["cat", "dog", "all", "mean"]
    assert float(rows[1]["pck_point@0.1"]) == pytest.approx(400 / 6)
    assert float(rows[2]["pck_image@0.05"]) == pytest.approx(700 / 9)
    assert float(rows[3]["pck_point@0.15"]) == pytest.approx(500 / 6)
    assert rows[3]["n_pairs"] == ""
    assert (out / "results.md").read_text().startswith("## fake test")


def test_workers_give_identical_results(setup):
    ds, cache = setup
    one = E.evaluate(ds, "test", cache, mode="grid-argmax", progress=False,
                     transfer=grid_argmax_transfer, workers=1)
    two = E.evaluate(ds, "test", cache, mode="grid-argmax", progress=False,
                     transfer=grid_argmax_transfer, workers=2)
    _check_expected(two)
    assert one.summary == two.summary
    assert [r.pair_id for r in two.pair_results] == ["p0", "p1", "p2"]
    with pytest.raises(ValueError, match="workers"):
        E.evaluate(ds, "test", cache, workers=0, transfer=grid_argmax_transfer)


def test_head_categories_subsample(setup):
    ds, cache = setup
    calls = []

    def head(f):
        calls.append(f.shape)
        assert f.dtype == np.float32
        return f[..., ::-1] * 2.0        # permuting channels keeps the argmax geometry

    res = E.evaluate(ds, "test", cache, head=head, categories=["dog"], subsample=1,
                     mode="grid-argmax", progress=False, transfer=grid_argmax_transfer)
    assert res.n_pairs == 1 and list(res.categories) == ["dog"]
    np.testing.assert_allclose(res.overall["pck_point"], [1.0] * 3)
    assert calls == [(GH, GW, D)] * 2


def test_pad_frame_mapping():
    seen = {}

    def spy(src_feat, trg_feat, src_kps, src_size, trg_size, *, mode):
        seen.update(kps=np.array(src_kps), ssize=src_size, tsize=trg_size)
        return np.array([[40.0, 40.0]])

    img = SimpleNamespace(keypoints=np.array([[10.0, 5.0]], np.float32), visible=np.array([True]),
                          size=(80, 40))
    pair = SimpleNamespace(src=img, trg=img)
    # pad to S=8: scale .1, content height round(4) = 4 px, offset 2 px = 20 original px
    man = dict(MANIFEST, preprocess="pad", resolution=[8, 8])
    pred = E.transfer_pair(pair, None, None, man, mode="grid-argmax", transfer=spy)
    np.testing.assert_allclose(seen["kps"], [[10.0, 25.0]])
    assert seen["ssize"] == (80, 80) and seen["tsize"] == (80, 80)
    np.testing.assert_allclose(pred, [[40.0, 20.0]])


def test_missing_features_and_bad_arguments(setup, tmp_path):
    ds, cache = setup
    bare = FeatureCache.create(tmp_path / "bare", MANIFEST)
    bare.put("dog/i0", ds.images["dog/i0"][1])
    with pytest.raises(FileNotFoundError, match="bare"):
        E.evaluate(ds, "test", bare, progress=False, transfer=grid_argmax_transfer)
    with pytest.raises(ValueError, match="mode"):
        E.evaluate(ds, "test", cache, mode="nearest", transfer=grid_argmax_transfer)
    with pytest.raises(ValueError, match="threshold"):
        E.evaluate(ds, "test", cache, threshold="box", transfer=grid_argmax_transfer)
    with pytest.raises(ValueError, match="no pairs"):
        E.evaluate(ds, "test", cache, categories=["cow"], transfer=grid_argmax_transfer)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        E.evaluate(ds, "test", tmp_path / "nowhere", transfer=grid_argmax_transfer)


def test_figures(setup, tmp_path):
    ds, cache = setup
    out = tmp_path / "figs"
    res = E.evaluate(ds, "test", cache, mode="grid-argmax", out_dir=out, figures=True,
                     progress=False, transfer=grid_argmax_transfer)
    assert len(res.figures) == 3
    from PIL import Image

    for p in res.figures:
        assert os.path.dirname(p) == str(out / "figures")
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 300


def test_cli(setup, tmp_path, monkeypatch, capsys):
    ds, cache = setup
    import geomatch.data as dmod

    monkeypatch.setattr(dmod, "load_dataset", lambda name, root: ds)
    from geomatch.cli import main

    out = tmp_path / "cli"
    rc = main(["eval", "--dataset", "fake", "--root", str(tmp_path), "--cache", cache.path,
               "--mode", "grid-argmax", "--out", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| dog | 2 | 6 | 66.67 |" in text and "results.json" in text
    with open(out / "results.json") as f:
        assert json.load(f)["summary"]["overall"]["pck_point"] == pytest.approx([0.75] * 3)
    rc = main(["eval", "--dataset", "fake", "--root", str(tmp_path), "--cache",
               str(tmp_path / "missing-cache"), "--out", str(out)])
    assert rc == 1
    assert "missing-cache" in capsys.readouterr().err


@pytest.mark.parametrize("mode", [m for m in E.MODES if m != "grid-argmax-corner"])
def test_evaluate_with_geomatch_transfer(setup, mode):
    """The same split through the package's own transfer_keypoints."""
    ds, cache = setup
    threads_before = gm.get_num_threads()
    res = E.evaluate(ds, "test", cache, mode=mode, progress=False, workers=2)
    assert gm.get_num_threads() == threads_before
    cats = res.categories
    np.testing.assert_allclose(cats["dog"]["pck_point"], [4 / 6] * 3)
    np.testing.assert_allclose(cats["cat"]["pck_point"], [1.0] * 3)
    np.testing.assert_allclose(res.overall["pck_image"], [7 / 9] * 3)
    bd = res.overall["breakdown"]
    assert bd["11_bar"] == [2, 2, 2] and bd["11_hat"] == [2, 2, 2]
    for r in res.pair_results:
        assert r.n_points == 3 or r.category == "cat"


def test_cli_on_synthetic_spair(tmp_path, capsys):
    """The real SPair loader on a synthetic SPair-layout folder, random cached features."""
    from geomatch.data import load_dataset
    from geomatch.demo.synthetic import generate_spair_like
    from geomatch.cli import main

    root = tmp_path / "spair"
    generate_spair_like(root, n_images_per_category=6, n_pairs=3, categories=["dog"])
    ds = load_dataset("spair", root)
    pairs = ds.pairs("test")
    assert pairs
    man = dict(MANIFEST, grid=[7, 7], dim=8, preprocess="pad", resolution=[98, 98])
    cache = FeatureCache.create(tmp_path / "cache", man)
    rng = np.random.default_rng(0)
    for key in sorted({p.src.key for p in pairs} | {p.trg.key for p in pairs}):
        cache.put(key, rng.standard_normal((7, 7, 8)))
    out = tmp_path / "out"
    rc = main(["eval", "--dataset", "spair", "--root", str(root), "--cache", cache.path,
               "--out", str(out), "--figures", "--no-progress", "--workers", "2"])
    assert rc == 0
    assert "### PCK per point" in capsys.readouterr().out
    with open(out / "results.json") as f:
        doc = json.load(f)
    assert doc["n_pairs"] == len(pairs) and doc["skipped"] == int(ds.skipped.count)
    by_id = {p.pair_id: p for p in pairs}
    for r in doc["pairs"]:
        p = by_id[r["pair_id"]]
        assert r["n_points"] == int((p.src.visible & p.trg.visible).sum())
    pts = doc["summary"]["overall"]["n_points"]
    assert pts == sum(int((p.src.visible & p.trg.visible).sum()) for p in pairs)
    assert doc["config"]["preprocess"] == "pad"
    assert doc["figures"] and all(os.path.isfile(f) for f in doc["figures"])


def test_head_checkpoint_path(setup, tmp_path):
    """--head PATH loads geomatch.model.head lazily and embeds every image once."""
    from geomatch.model import head as head_mod

    ds, cache = setup
    cfg = head_mod.HeadConfig(in_dim=D, dim=8, out_dim=6, num_heads=2, num_blocks=1, mlp_dim=16)
    head = head_mod.AttentionHead(cfg, seed=0)
    path = tmp_path / "head.npz"
    head.save(path)
    seen, feats = [], []

    def spy(src_feat, trg_feat, *a, **k):
        seen.append((src_feat.shape, trg_feat.shape))
        feats.append(np.array(src_feat))
        return grid_argmax_transfer(src_feat, trg_feat, *a, **k)

    res = E.evaluate(ds, "test", cache, head=str(path), mode="grid-argmax", progress=False,
                     transfer=spy, workers=1)
    assert res.config["head"] == str(path)
    assert seen and all(s == ((GH, GW, 6), (GH, GW, 6)) for s in seen)
    # the features handed to the transfer are the head's output (first pair: dog/i0)
    ref = head(ds.images["dog/i0"][1].astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(feats[0], ref, rtol=1e-5, atol=1e-6)


def test_per_image_geometry_aware_and_ratios(setup):
    ds, cache = setup
    res = E.evaluate(ds, "test", cache, mode="grid-argmax", progress=False, workers=1,
                     transfer=grid_argmax_transfer)
    ov = res.overall
    # eye pair geometry-aware in dog p0 (2/2 correct) and dog p1 (0/2); cat p2
    # has one eye in the target: per image (1 + 0) / 2; 2 of 3 scored pairs,
    # 4 of 8 scored points
    np.testing.assert_allclose(ov["pck_geo_image"], [0.5] * 3)
    assert ov["n_geo_pairs"] == 2
    assert ov["geo_pair_ratio"] == pytest.approx(2 / 3)
    assert ov["geo_point_ratio"] == pytest.approx(0.5)
    np.testing.assert_allclose(res.categories["dog"]["pck_geo_image"], [0.5] * 3)
    assert res.categories["cat"]["pck_geo_image"] == [None] * 3
    # keypoint ids: dog eyes 1/2 each, nose 2/2
    by_kp = res.categories["dog"]["by_keypoint"]
    assert {k: (v["n_points"], v["pck_point"][0]) for k, v in by_kp.items()} == \
        {"0": (2, 0.5), "1": (2, 0.5), "2": (2, 1.0)}


def test_choices_the_dataset_cannot_support(setup, tmp_path):
    ds, cache = setup
    # GeoAware-SC's sampling needs its geometry groups (SPair-71k, AP-10K, PF-Pascal)
    with pytest.raises(ValueError, match="select 'geoaware'"):
        E.evaluate(ds, "test", cache, select="geoaware", transfer=grid_argmax_transfer)
    # GECO's empty-pair counting needs Dataset.pairs(keep_empty=True)
    with pytest.raises(ValueError, match="empty_pairs"):
        E.evaluate(ds, "test", cache, empty_pairs="count", transfer=grid_argmax_transfer)
    # the test-time flip needs flipped features
    with pytest.raises(FileNotFoundError, match="flipped"):
        E.evaluate(ds, "test", cache, test_flip="mutual-nn", transfer=grid_argmax_transfer)
    with pytest.raises(ValueError, match="protocol"):
        E.evaluate(ds, "test", cache, protocol="GECO", transfer=grid_argmax_transfer)
    assert not any(tmp_path.glob("eval-*"))


def test_rescore_rejects_other_files(tmp_path):
    from geomatch.eval.predictions import load_predictions

    bad = tmp_path / "predictions.npz"
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a geomatch predictions file"):
        load_predictions(bad)
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="text.npz"):
        load_predictions(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_predictions(tmp_path / "nowhere.npz")


def test_rescore_reproduces_the_run(setup, tmp_path):
    from geomatch.eval.predictions import rescore

    ds, cache = setup
    res = E.evaluate(ds, "test", cache, mode="grid-argmax", out_dir=tmp_path / "r",
                     progress=False, transfer=grid_argmax_transfer, workers=1)
    again = rescore(tmp_path / "r" / "predictions.npz", out_dir=tmp_path / "again")
    assert again.summary == res.summary
    with open(tmp_path / "again" / "results.json") as f:
        assert json.load(f)["summary"]["overall"]["pck_point"] == pytest.approx([0.75] * 3)
    # other alphas from the file alone: the swapped eyes are 30 px off (T = 80)
    wide = rescore(tmp_path / "r" / "predictions.npz", alphas=[0.5])
    assert wide.overall["pck_point"] == [1.0]
