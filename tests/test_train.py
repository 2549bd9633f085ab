"""Tests of the training loop (geomatch.model.train) on generated data.

The generated "animals" live directly in feature space (a 12 x 12 grid of
24-d features, 10-pixel patches): a body, a head at the front, a tail, and two
pairs of mirror-twin paws whose features are identical (left and right front
paws share one vector, back paws another).  Which paw is left follows only
from the layout: for an animal heading +x the left paws are above the body,
for one heading -x below.  Raw features therefore confuse left and right about
half the time; a head that sees the whole grid can learn to tell them apart.
"""
import csv
import os

import numpy as np
import pytest

from geomatch.model import train as T
from geomatch.data.base import PairRecord, make_image_record
from geomatch.model.head import AttentionHead, HeadConfig, load_head

G, PX, D = 12, 10, 24
NAMES = ("head", "tail", "left front paw", "right front paw", "left back paw",
         "right back paw")
FLIP = np.array([0, 1, 3, 2, 5, 4])


class DictCache:
    """In-memory stand-in for FeatureCache (flipped maps are mirrored grids)."""

    def __init__(self, feats, drop=()):
        self.feats = feats
        self.drop = set(drop)
        self.path = "<memory>"
        self.manifest = {"preprocess": "resize", "resolution": [G * 14, G * 14],
                         "grid": [G, G], "dim": D}

    def has(self, key, flipped=False):
        return key in self.feats and (key, flipped) not in self.drop

    def get(self, key, flipped=False):
        if not self.has(key, flipped):
            raise KeyError(key)
        f = self.feats[key]
        return np.ascontiguousarray(f[:, ::-1]) if flipped else f


def make_data(n_images=40, n_pairs=120, seed=0, noise=0.35, jitter=1):
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(5, D))
    basis *= 3.0 / np.linalg.norm(basis, axis=1, keepdims=True)
    body, headv, tailv, fpaw, bpaw = basis
    feats, recs = {}, []
    for i in range(n_images):
        s = 1 if rng.random() < 0.5 else -1
        cx, cy = 6 + rng.integers(-jitter, jitter + 1, size=2)
        f = rng.normal(0, noise, (G, G, D))
        for dx in range(-2, 3):
            for dy in range(-1, 2):
                f[cy + dy, cx + dx] += body
        parts = [(3 * s, 0, headv), (-3 * s, 0, tailv), (s, -2 * s, fpaw), (s, 2 * s, fpaw),
                 (-s, -2 * s, bpaw), (-s, 2 * s, bpaw)]
        kps = np.zeros((6, 2))
        for k, (dx, dy, v) in enumerate(parts):
            r, c = cy + dy, cx + dx
            f[r, c] += v
            kps[k] = (c * PX + PX / 2, r * PX + PX / 2)
        vis = rng.random(6) < 0.85
        vis[2:4] = True if i % 3 else vis[2:4]  # many pairs with both twins visible
        key = f"animal/{i:03d}"
        feats[key] = f.astype(np.float32)
        bbox = [(cx - 3) * PX, (cy - 2) * PX, (cx + 4) * PX - 1, (cy + 3) * PX - 1]
        recs.append(make_image_record("synthetic", "animal", key, f"/nonexistent/{key}.jpg",
                                      (G * PX, G * PX), kps, vis, bbox))
    pairs = []
    for j in range(n_pairs):
        a, b = rng.choice(n_images, 2, replace=False)
        if not (recs[a].visible & recs[b].visible).any():
            continue
        pairs.append(PairRecord("synthetic", "trn", "animal", f"p{j}", recs[a], recs[b],
                                NAMES, FLIP.copy()))
    return pairs, DictCache(feats)


SMALL = HeadConfig(in_dim=D, dim=32, out_dim=32, num_heads=4, num_blocks=1, mlp_dim=64,
                   attn_dim=32, pos_gain_init=1.0)


def _run(tmp_path, pairs, val, cache, name, **kw):
    opts = dict(head_config=SMALL, lr=3e-3, batch_pairs=4, steps=12, seed=3, val_every=6,
                progress=False)
    opts.update(kw)
    return T.train(pairs, cache, tmp_path / name, val_pairs=val, **opts)


def test_training_resolves_left_right_and_raises_pck(tmp_path):
    train_pairs, cache = make_data(n_images=48, n_pairs=160, seed=0, jitter=0)
    val_pairs, vcache = make_data(n_images=24, n_pairs=60, seed=1, jitter=0)
    cache.feats.update({"val/" + k: v for k, v in vcache.feats.items()})
    # validation images under their own keys
    val = []
    for p in val_pairs:
        s = make_image_record("synthetic", "animal", "val/" + p.src.key, p.src.path, p.src.size,
                              p.src.keypoints, p.src.visible, p.src.bbox)
        t = make_image_record("synthetic", "animal", "val/" + p.trg.key, p.trg.path, p.trg.size,
                              p.trg.keypoints, p.trg.visible, p.trg.bbox)
        val.append(PairRecord("synthetic", "val", "animal", p.pair_id, s, t, NAMES, FLIP.copy()))
    raw = T.validate(val, cache, None)
    assert raw["n11"] > 50
    # GECO's loss weights; the pair swap on, the flip augmentation off (it is
    # exercised in test_flip_augmentation_*; with it the head needs more steps)
    res = _run(tmp_path, train_pairs, val, cache, "run", steps=100, val_every=50, lr=1e-3,
               flip_aug=False)
    trained = T.validate(val, cache, res.head)
    print("raw", raw, "trained", trained)
    assert trained["confusion"] <= 0.5 * raw["confusion"]
    assert trained["pck"] > raw["pck"]
    # outputs of the run
    assert (tmp_path / "run" / "last.npz").exists() and (tmp_path / "run" / "best.npz").exists()
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert len(rows) == 100 and rows[-1]["val_pck"] != ""
    first = np.mean([float(r["loss"]) for r in rows[:20]])
    last = np.mean([float(r["loss"]) for r in rows[-20:]])
    assert last < first
    best = load_head(tmp_path / "run" / "best.npz")
    assert T.validate(val, cache, best)["pck"] == pytest.approx(res.best_val)


def test_same_seed_same_weights_and_resume_continues_exactly(tmp_path):
    pairs, cache = make_data(n_images=12, n_pairs=30, seed=5)
    val = pairs[:4]
    a = _run(tmp_path, pairs, val, cache, "a", steps=8, val_every=4)
    b = _run(tmp_path, pairs, val, cache, "b", steps=8, val_every=4)
    for k, v in a.head.parameters().items():
        np.testing.assert_array_equal(v, b.head.parameters()[k])
    c = _run(tmp_path, pairs, val, cache, "c", steps=8, val_every=4, seed=4)
    assert any(not np.array_equal(v, c.head.parameters()[k])
               for k, v in a.head.parameters().items())
    # stop after 4 steps, resume to 8: identical to the uninterrupted run
    _run(tmp_path, pairs, val, cache, "d", steps=4, val_every=4)
    d = _run(tmp_path, pairs, val, cache, "d", steps=8, val_every=4,
             resume=tmp_path / "d" / "last.npz")
    for k, v in a.head.parameters().items():
        np.testing.assert_allclose(d.head.parameters()[k], v, rtol=0, atol=0)
    rows = list(csv.DictReader(open(tmp_path / "d" / "log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))


def test_flip_augmentation_mirrors_keypoints_and_relabels():
    pairs, cache = make_data(n_images=6, n_pairs=10, seed=2)
    p = pairs[0]
    masks = T._MaskStore(cache.manifest)
    plain = T.prepare_pair(p, (G, G), cache.manifest, masks)
    fl = T.prepare_pair(p, (G, G), cache.manifest, masks, flip_src=True)
    W = G * PX
    for k in range(6):
        j = FLIP[k]
        if p.src.visible[j]:
            x, y = p.src.keypoints[j]
            r, c = int(y // PX), int((W - 1 - x) // PX)
            assert fl.src_patch[k] == r * G + c
            # the mirrored keypoint lands on the mirrored patch of its twin
            assert fl.src_patch[k] == (plain.src_patch[j] // G) * G + (G - 1 - plain.src_patch[j] % G)
        else:
            assert fl.src_patch[k] == -1
    np.testing.assert_array_equal(fl.src_fg, plain.src_fg[:, ::-1])
    sw = T.prepare_pair(p, (G, G), cache.manifest, masks, swap=True)
    np.testing.assert_array_equal(sw.src_patch, plain.trg_patch)
    assert sw.src_key == p.trg.key


def test_errors_before_any_step(tmp_path):
    pairs, cache = make_data(n_images=8, n_pairs=12, seed=4)
    val = pairs[:2]
    # cache missing an image (or its flipped features)
    k = pairs[0].src.key
    bad = DictCache(cache.feats, drop=[(k, True)])
    with pytest.raises(ValueError, match="flipped features.*" + k.split("/")[1]):
        _run(tmp_path, pairs, val, bad, "e1")
    bad = DictCache({kk: v for kk, v in cache.feats.items() if kk != k})
    with pytest.raises(ValueError, match="misses features"):
        _run(tmp_path, pairs, val, bad, "e2")
    assert not (tmp_path / "e1" / "log.csv").exists()
    # keypoint table not fitting the dataset
    p = pairs[1]
    broken = PairRecord(p.dataset, p.split, p.category, "broken", p.src, p.trg, NAMES,
                        np.array([0, 1, 3, 2, 5]))
    with pytest.raises(ValueError, match="broken.*keypoint table"):
        _run(tmp_path, pairs + [broken], val, cache, "e3")
    broken = PairRecord(p.dataset, p.split, p.category, "broken2", p.src, p.trg, NAMES,
                        np.array([0, 1, 3, 2, 4, 4]))
    with pytest.raises(ValueError, match="broken2.*flip_perm"):
        _run(tmp_path, pairs + [broken], val, cache, "e4")
    # feature channels not fitting the head
    with pytest.raises(ValueError, match="expects"):
        _run(tmp_path, pairs, val, cache, "e5",
             head_config=HeadConfig(in_dim=D + 1, dim=32, out_dim=32, num_heads=2, mlp_dim=64,
                                    attn_dim=32))
    # checkpoint of another architecture
    _run(tmp_path, pairs, val, cache, "ok", steps=2, val_every=2)
    other = HeadConfig(in_dim=D, dim=16, out_dim=32, num_heads=2, mlp_dim=64, attn_dim=32)
    with pytest.raises(ValueError, match="last.npz.*architecture"):
        _run(tmp_path, pairs, val, cache, "e6", head_config=other,
             resume=tmp_path / "ok" / "last.npz")
    # a plain head file is not a training checkpoint
    AttentionHead(SMALL).save(tmp_path / "plain.npz")
    with pytest.raises(ValueError, match="plain.npz.*not a training checkpoint"):
        _run(tmp_path, pairs, val, cache, "e7", resume=tmp_path / "plain.npz")
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        _run(tmp_path, pairs, val, cache, "e8", resume=tmp_path / "nothere.npz")


def test_cli_train_parser_and_missing_root(tmp_path, capsys):
    from geomatch.cli import main

    rc = main(["train", "--dataset", "spair", "--root", str(tmp_path / "no_root"),
               "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
               "--steps", "1"])
    assert rc == 1
    assert "no_root" in capsys.readouterr().err


def test_cli_train_end_to_end_on_synthetic_spair(tmp_path, capsys):
    """geomatch train on the SPair-format synthetic data with a real FeatureCache
    (segmentation masks, flipped features), then --resume, then a cache with a
    missing flipped entry."""
    from PIL import Image

    from geomatch.data.cache import FeatureCache
    from geomatch.cli import main
    from geomatch.data import load_dataset
    from geomatch.demo.featurizers import LocalAppearanceFeaturizer
    from geomatch.demo.synthetic import generate_spair_like

    root = tmp_path / "spair"
    generate_spair_like(root, n_images_per_category=8, n_pairs=4, categories=["dog"],
                        size=(96, 72))
    ds = load_dataset("spair", root)
    fz = LocalAppearanceFeaturizer(grid=(8, 8), patch=8)
    manifest = dict(backbone="local-appearance", weights_sha256="", resolution=[64, 64],
                    preprocess="resize", grid=[8, 8], dim=fz.dim, dtype="float32")
    cpath = tmp_path / "cache"
    with FeatureCache.create(cpath, manifest) as cache:
        for split in ("trn", "val"):
            for rec in ds.images(split):
                img = Image.open(rec.path).convert("RGB")
                cache.put(rec.key, fz(img))
                cache.put(rec.key, fz(img.transpose(Image.FLIP_LEFT_RIGHT)), flipped=True)
    args = ["train", "--dataset", "spair", "--root", str(root), "--cache", str(cpath),
            "--batch-pairs", "2", "--val-subset", "3", "--val-every", "2",
            "--head-config", '{"dim": 16, "out_dim": 16, "num_heads": 2, "mlp_dim": 16, '
                             '"attn_dim": 16}']
    assert main(args + ["--out", str(tmp_path / "run"), "--steps", "2"]) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    for name in ("last.npz", "best.npz", "log.csv", "curves.png"):
        assert (tmp_path / "run" / name).exists(), name
    assert load_head(tmp_path / "run" / "last.npz").config.in_dim == fz.dim
    assert main(args + ["--out", str(tmp_path / "run"), "--steps", "4",
                        "--resume", str(tmp_path / "run" / "last.npz")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    # a flipped entry missing from the cache: clear error, nothing trained
    key = ds.pairs("trn")[0].src.key
    import os
    from geomatch.data.cache import key_to_filename
    os.remove(cpath / "features" / key_to_filename(key, flipped=True))
    assert main(args + ["--out", str(tmp_path / "run2"), "--steps", "2"]) == 1
    err = capsys.readouterr().err
    assert "flipped features" in err and "cache" in err
    assert not (tmp_path / "run2" / "last.npz").exists()


def test_retain_freed_memory_sets_glibc_thresholds_once():
    # run in a fresh interpreter: the thresholds are process-wide
    import platform
    import subprocess
    import sys

    code = ("from geomatch.runtime.memory import retain_freed_memory as r; "
            "print(r(), r())")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert out.stdout.split() == (["True", "True"] if glibc else ["False", "False"])
    # the user's own choice wins
    env["MALLOC_TRIM_THRESHOLD_"] = "1000000"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.split() == ["False", "False"]


def test_pairs_per_category_epochs():
    """GECO's num_el: every (dataset, category) gives min(N, size) pairs per
    epoch, drawn in turn from permutations, so a small category is seen whole
    before any of its pairs repeats."""
    from types import SimpleNamespace

    pairs = [SimpleNamespace(dataset="a", category="x", i=i) for i in range(3)] + \
            [SimpleNamespace(dataset="a", category="y", i=i) for i in range(5)] + \
            [SimpleNamespace(dataset="b", category="x", i=i) for i in range(1)]
    n, order = T._epoch_order(pairs, 2, seed=0)
    assert n == 2 + 2 + 1
    seen_x = []
    for e in range(2):
        idx = order(e)
        assert len(idx) == n
        groups = [(pairs[i].dataset, pairs[i].category) for i in idx]
        assert groups.count(("a", "x")) == 2 and groups.count(("a", "y")) == 2
        assert groups.count(("b", "x")) == 1
        seen_x += [int(i) for i in idx if pairs[i].dataset == "a" and pairs[i].category == "x"]
    # epochs 0 and 1 draw 4 times from (a, x): draws 1-3 are one permutation
    assert len(set(seen_x[:2])) == 2 and set(seen_x) == {0, 1, 2}
    n_all, order_all = T._epoch_order(pairs, None, seed=0)
    assert n_all == 9 and sorted(order_all(0).tolist()) == list(range(9))
    with pytest.raises(ValueError, match="pairs_per_category"):
        T._epoch_order(pairs, 0, seed=0)


def test_resolve_train_options_geco_preset():
    o = T.resolve_train_options("geco", lr=5e-4)
    assert (o["batch_pairs"], o["epochs"], o["pairs_per_category"]) == (6, 8.0, 800)
    assert o["lr"] == 5e-4 and o["sources"]["lr"] == "explicit"
    assert o["sources"]["batch_pairs"] == "protocol geco"
    assert T.resolve_train_options()["batch_pairs"] == 4
    with pytest.raises(ValueError, match="protocol"):
        T.resolve_train_options("geoaware")


def test_cli_train_several_datasets(tmp_path, capsys):
    """Two SPair-format folders (different categories), one cache each, in one run."""
    from PIL import Image

    from geomatch.cli import main
    from geomatch.data import load_dataset
    from geomatch.data.cache import FeatureCache
    from geomatch.demo.featurizers import LocalAppearanceFeaturizer
    from geomatch.demo.synthetic import generate_spair_like

    fz = LocalAppearanceFeaturizer(grid=(8, 8), patch=8)
    manifest = dict(backbone="local-appearance", weights_sha256="", resolution=[64, 64],
                    preprocess="resize", grid=[8, 8], dim=fz.dim, dtype="float32")
    roots, caches, keys = [], [], []
    for name, cat in (("a", "dog"), ("b", "car")):
        root = tmp_path / name
        generate_spair_like(root, n_images_per_category=6, n_pairs=3, categories=[cat],
                            size=(96, 72))
        ds = load_dataset("spair", root)
        with FeatureCache.create(tmp_path / f"cache-{name}", manifest) as cache:
            for split in ("trn", "val"):
                for rec in ds.images(split):
                    img = Image.open(rec.path).convert("RGB")
                    cache.put(rec.key, fz(img))
                    cache.put(rec.key, fz(img.transpose(Image.FLIP_LEFT_RIGHT)), flipped=True)
        roots.append(str(root))
        caches.append(str(tmp_path / f"cache-{name}"))
        keys += [p.src.key for p in ds.pairs("trn")]
    args = ["train", "--dataset", "spair", "spair", "--root", *roots, "--cache", *caches,
            "--protocol", "geco", "--pairs-per-category", "2", "--batch-pairs", "2",
            "--steps", "3", "--val-subset", "2", "--out", str(tmp_path / "run"),
            "--head-config", '{"dim": 16, "out_dim": 16, "num_heads": 2, "mlp_dim": 16, '
                             '"attn_dim": 16}']
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "pairs_per_category=2 (explicit)" in out and "lr=0.0001 (protocol geco)" in out
    assert "trained 3 steps" in out
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    # epoch = 2 pairs of dog + 2 of car = 4 pairs: 3 steps of 2 pairs = 1.5 epochs
    assert rows[-1]["epoch"] == "1.5000"
    assert main(args[:4] + ["--root", roots[0], "--cache", *caches, "--out",
                            str(tmp_path / "run2"), "--steps", "1"]) == 1
    assert "--root" in capsys.readouterr().err
