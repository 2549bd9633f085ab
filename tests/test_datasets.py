"""Dataset loaders on tiny datasets written in the real on-disk formats."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from geomatch.data import ImageRecord, PairRecord, load_dataset
from geomatch.data import tables as T


def savemat(*args, **kwargs):
    sio = pytest.importorskip(
        "scipy.io", reason="the PF-PASCAL fixtures are written with scipy.io.savemat (test extra)")
    return sio.savemat(*args, **kwargs)


def _jpeg(path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 60, 30)).save(path, "JPEG")


def _json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _nan_rows_equal(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and np.array_equal(np.isnan(a), np.isnan(b)) and \
        np.allclose(np.nan_to_num(a), np.nan_to_num(b), atol=1e-4)


# ===========================================================================
# SPair-71k
# ===========================================================================

# per image: category, size (W, H), bndbox, {kp index: (x, y)}
SPAIR_IMAGES = {
    ("cat", "2008_000001"): ((40, 30), [2, 3, 35, 28], {0: (5.5, 6.0), 1: (10, 7), 4: (20, 15), 13: (30, 25)}),
    ("cat", "2008_000002"): ((50, 40), [1, 1, 45, 39], {0: (7, 8), 1: (12.25, 9), 14: (40, 30)}),
    ("cat", "2008_000003"): ((32, 32), [0, 0, 31, 31], {6: (3, 3), 7: (4, 4), 14: (20, 21)}),
    ("bottle", "2009_000010"): ((20, 60), [4, 5, 15, 55], {0: (8, 6), 1: (12, 6), 9: (10, 50)}),
    ("bottle", "2009_000011"): ((24, 64), [3, 2, 20, 60], {0: (9, 7), 9: (11, 55)}),
}
# pair files: split -> [(id, cat, src, trg, extra fields)]
SPAIR_PAIRS = {
    "trn": [("1", "cat", "2008_000001", "2008_000002", {"mirror": 0}),
            ("2", "bottle", "2009_000010", "2009_000011", {"mirror": 1})],
    "test": [("10", "cat", "2008_000001", "2008_000002", {"mirror": 0, "viewpoint_variation": 1}),
             ("11", "cat", "2008_000002", "2008_000001", {"mirror": 1, "viewpoint_variation": 0}),
             ("12", "cat", "2008_000001", "2008_000003", {"mirror": 0, "viewpoint_variation": 2}),
             ("13", "cat", "2008_000003", "2008_000002", {"mirror": 0, "viewpoint_variation": 2}),
             ("14", "bottle", "2009_000011", "2009_000010", {"mirror": 0, "viewpoint_variation": 0})],
}


def _spair_pair_name(pid, cat, src, trg):
    return f"{pid}-{src}-{trg}:{cat}"


@pytest.fixture
def spair_root(tmp_path):
    root = tmp_path / "SPair-71k"
    for (cat, name), (size, box, kps) in SPAIR_IMAGES.items():
        _jpeg(root / "JPEGImages" / cat / f"{name}.jpg", size)
        ann = {"filename": f"{name}.jpg", "image_width": size[0], "image_height": size[1],
               "bndbox": box, "azimuth_id": 3,
               "kps": {str(i): (list(kps[i]) if i in kps else None) for i in range(30)}}
        _json(root / "ImageAnnotation" / cat / f"{name}.json", ann)
    seg = root / "Segmentation" / "cat" / "2008_000001.png"
    seg.parent.mkdir(parents=True)
    Image.new("L", (40, 30), 1).save(seg)
    for split, pairs in SPAIR_PAIRS.items():
        (root / "Layout" / "large").mkdir(parents=True, exist_ok=True)
        (root / "Layout" / "large" / f"{split}.txt").write_text(
            "\n".join(_spair_pair_name(p, c, s, t) for p, c, s, t, _ in pairs))
        for pid, cat, src, trg, extra in pairs:
            (ssize, sbox, skps), (tsize, tbox, tkps) = SPAIR_IMAGES[cat, src], SPAIR_IMAGES[cat, trg]
            ids = sorted(set(skps) & set(tkps))
            # pair boxes differ from the image ones on purpose: the pair's win
            data = {"pair_id": int(pid), "src_imname": f"{src}.jpg", "trg_imname": f"{trg}.jpg",
                    "src_imsize": [*ssize, 3], "trg_imsize": [*tsize, 3],
                    "src_bndbox": [v + 1 for v in sbox], "trg_bndbox": [v + 2 for v in tbox],
                    "category": cat, "kps_ids": ids,
                    "src_kps": [list(skps[i]) for i in ids], "trg_kps": [list(tkps[i]) for i in ids],
                    **extra}
            _json(root / "PairAnnotation" / split / f"{_spair_pair_name(pid, cat, src, trg)}.json", data)
    return root


def _expected_kps(kps, k):
    out = np.full((k, 2), np.nan)
    for i, xy in kps.items():
        out[i] = xy
    return out


def test_spair_pairs_field_by_field(spair_root):
    ds = load_dataset("spair", spair_root)
    assert ds.name == "spair" and ds.root == spair_root
    assert ds.categories == ["bottle", "cat"]
    assert set(ds.splits) == {"trn", "val", "test"}
    pairs = ds.pairs("test")
    # pair 12 (cat 1 -> cat 3) shares no visible keypoint: skipped and counted
    got = [p.pair_id for p in pairs]
    assert got == ["14-2009_000011-2009_000010:bottle", "10-2008_000001-2008_000002:cat",
                   "11-2008_000002-2008_000001:cat", "13-2008_000003-2008_000002:cat"]
    assert ds.skipped.count == 1
    assert ds.skipped.reasons == [("12-2008_000001-2008_000003:cat", "no mutually visible keypoint")]
    table = {_spair_pair_name(p, c, s, t): (c, s, t, e) for p, c, s, t, e in SPAIR_PAIRS["test"]}
    for p in pairs:
        assert isinstance(p, PairRecord)
        cat, src, trg, extra = table[p.pair_id]
        k = len(T.SPAIR_KEYPOINT_NAMES[cat])
        assert (p.dataset, p.split, p.category) == ("spair", "test", cat)
        assert p.keypoint_names == T.SPAIR_KEYPOINT_NAMES[cat]
        assert p.flip_perm.dtype == np.int64
        assert np.array_equal(p.flip_perm, T.flip_permutation(k, T.SPAIR_LR_PAIRS[cat]))
        assert p.meta["mirror"] == extra["mirror"]
        assert p.meta["viewpoint_variation"] == extra["viewpoint_variation"]
        for rec, name, shift in ((p.src, src, 1), (p.trg, trg, 2)):
            size, box, kps = SPAIR_IMAGES[cat, name]
            assert isinstance(rec, ImageRecord)
            assert rec.dataset == "spair" and rec.category == cat
            assert rec.key == f"{cat}/{name}"
            assert rec.path == spair_root / "JPEGImages" / cat / f"{name}.jpg"
            assert rec.size == size
            assert rec.keypoints.dtype == np.float32 and rec.keypoints.shape == (k, 2)
            assert _nan_rows_equal(rec.keypoints, _expected_kps(kps, k))
            assert rec.visible.dtype == bool
            assert rec.visible.tolist() == [i in kps for i in range(k)]
            assert rec.bbox.dtype == np.float32
            assert rec.bbox.tolist() == [v + shift for v in box]
            seg = spair_root / "Segmentation" / cat / f"{name}.png"
            assert rec.mask_path == (seg if seg.exists() else None)
        assert p.mutual_visible.tolist() == [i in p.meta["kps_ids"] for i in range(k)]


def test_spair_images_split_and_category_selection(spair_root):
    ds = load_dataset("spair", spair_root)
    imgs = ds.images("test", categories=["cat"])
    assert [r.key for r in imgs] == ["cat/2008_000001", "cat/2008_000002", "cat/2008_000003"]
    r = imgs[2]
    size, box, kps = SPAIR_IMAGES["cat", "2008_000003"]
    assert r.bbox.tolist() == box and r.size == size
    assert r.mask_path is None and imgs[0].mask_path is not None
    assert [r.key for r in ds.images("train")] == [
        "bottle/2009_000010", "bottle/2009_000011", "cat/2008_000001", "cat/2008_000002"]
    trn = ds.pairs("train", categories="bottle")  # "train" is an alias of "trn"
    assert [p.pair_id for p in trn] == ["2-2009_000010-2009_000011:bottle"]
    assert trn[0].split == "trn" and ds.skipped.count == 0
    assert [p.pair_id for p in ds.iter_pairs("test", categories=["bottle"])] == [
        "14-2009_000011-2009_000010:bottle"]
    with pytest.raises(ValueError, match="unknown split"):
        ds.pairs("nope")
    # several splits: each image once, at its first split
    assert [r.key for r in ds.images_of_splits(["train", "test"], categories=["cat"])] == [
        "cat/2008_000001", "cat/2008_000002", "cat/2008_000003"]
    assert [r.key for r in ds.images_of_splits(["train", "test"])] == [
        "bottle/2009_000010", "bottle/2009_000011", "cat/2008_000001", "cat/2008_000002",
        "cat/2008_000003"]
    with pytest.raises(ValueError, match="unknown category 'dog'"):
        ds.pairs("test", categories=["dog"])
    with pytest.raises(FileNotFoundError, match="PairAnnotation"):
        ds.pairs("val")   # split folder absent in this tiny copy
    # records are read-only and images are shared between pairs
    with pytest.raises(ValueError):
        imgs[0].keypoints[0, 0] = 1.0


def test_spair_geco_flip_table(spair_root):
    ds = load_dataset("spair", spair_root, flip_table="geco")
    assert np.array_equal(ds.flip_perm("cat"), T.flip_permutation(15, T.SPAIR_LR_PAIRS["cat"]))
    assert ds.keypoint_names("bottle") == T.SPAIR_KEYPOINT_NAMES["bottle"]
    with pytest.raises(ValueError, match="flip_table"):
        load_dataset("spair", spair_root, flip_table="x")


def test_subsample_is_deterministic(spair_root):
    ds = load_dataset("spair", spair_root)
    names = [_spair_pair_name(p, c, s, t) for p, c, s, t, _ in SPAIR_PAIRS["test"]]
    order = sorted(names, key=lambda n: (n.split(":")[1], n))   # by category, then file
    for seed in (0, 1, 7):
        a = [p.pair_id for p in ds.pairs("test", subsample=3, seed=seed)]
        b = [p.pair_id for p in ds.pairs("test", subsample=3, seed=seed)]
        assert a == b
        idx = np.sort(np.random.default_rng(seed).choice(5, 3, replace=False))
        expected = [order[i] for i in idx if order[i] != "12-2008_000001-2008_000003:cat"]
        assert a == expected
        assert ds.skipped.count == 3 - len(expected)
    # GeoAware-SC sampling: RandomState(seed).choice(n, k) per category
    got = [p.pair_id for p in ds.pairs("test", categories=["cat"], subsample=6,
                                       seed=42, sampling="geoaware")]
    cat_files = sorted(n for n in names if n.endswith(":cat"))
    draw = [cat_files[i] for i in np.random.RandomState(42).choice(4, 6)]
    assert got == [n for n in draw if n != "12-2008_000001-2008_000003:cat"]
    # per category: at most n pairs of each
    per = ds.pairs("test", subsample=1, per_category=True, seed=3)
    assert sorted({p.category for p in per} | {"cat"}) == ["bottle", "cat"]
    assert len(per) + ds.skipped.count == 2
    assert len(ds.pairs("test", subsample=100)) == 4
    with pytest.raises(ValueError, match="subsample"):
        ds.pairs("test", subsample=-1)
    with pytest.raises(ValueError, match="sampling"):
        ds.pairs("test", subsample=1, sampling="bad")


def test_spair_errors(spair_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_dataset("spair", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="ImageAnnotation"):
        load_dataset("spair", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet", spair_root)
    with pytest.raises(TypeError, match="split_kind"):
        load_dataset("SPair-71k", spair_root, split_kind="x")
    load_dataset("spair", spair_root)
    pair = spair_root / "PairAnnotation" / "test" / "14-2009_000011-2009_000010:bottle.json"
    good = pair.read_text()
    pair.write_text("{not json")
    with pytest.raises(ValueError, match=r"14-2009_000011-2009_000010:bottle\.json.*invalid JSON"):
        load_dataset("spair", spair_root).pairs("test", categories="bottle")
    data = json.loads(good)
    del data["trg_bndbox"]
    pair.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="missing field 'trg_bndbox'"):
        load_dataset("spair", spair_root).pairs("test", categories="bottle")
    data = json.loads(good)
    data["src_bndbox"] = "wide"
    pair.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"bottle\.json.*src_bndbox"):
        load_dataset("spair", spair_root).pairs("test", categories="bottle")
    pair.write_text(good)
    ann = spair_root / "ImageAnnotation" / "bottle" / "2009_000010.json"
    data = json.loads(ann.read_text())
    data["kps"]["0"] = ["a", 2]
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"2009_000010\.json.*kps"):
        load_dataset("spair", spair_root).pairs("test", categories="bottle")
    data["kps"]["0"] = None
    data["kps"]["12"] = [1, 2]          # bottle has 10 keypoints
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="keypoint 12"):
        load_dataset("spair", spair_root).pairs("test", categories="bottle")
    del data["kps"]["12"]
    del data["image_width"]
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="image_width"):
        load_dataset("spair", spair_root).images("test", categories="bottle")
    data["image_width"] = 20
    ann.write_text(json.dumps(data))
    (spair_root / "JPEGImages" / "bottle" / "2009_000010.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"2009_000010\.jpg"):
        load_dataset("spair", spair_root).pairs("test", categories="bottle")


# ===========================================================================
# PF-PASCAL
# ===========================================================================

NAN = np.nan
PF_MATS = {  # (class, stem): (size, kps rows (K=5 for cat), bbox)
    ("cat", "2009_000001"): ((60, 40), [[1, 2], [NAN, NAN], [10, 11], [20, 21], [NAN, NAN]], [1, 2, 50, 38]),
    ("cat", "2009_000002"): ((64, 48), [[3, 4], [5, 6], [12, 13], [NAN, NAN], [30, 31]], [0, 0, 60, 45]),
    ("cat", "2009_000003"): ((30, 30), [[NAN, NAN], [5, 5], [NAN, NAN], [NAN, NAN], [7, 7]], None),
    ("dog", "2009_000010"): ((40, 40), [[1, 1], [2, 2], [3, 3]], [0, 0, 39, 39]),
    ("dog", "2009_000011"): ((44, 40), [[4, 4], [5, 5], [NAN, NAN]], [1, 1, 40, 39]),
}


def _pf_row(cat, a, b, with_points=True, points=None):
    rel = lambda s: f"PF-dataset-PASCAL/JPEGImages/{s}.jpg"
    cid = T.PFPASCAL_CLASSES.index(cat) + 1
    if not with_points:
        return [rel(a), rel(b), str(cid), "0"]
    ka, kb = np.array(PF_MATS[cat, a][1]), np.array(PF_MATS[cat, b][1])
    m = ~np.isnan(ka).any(1) & ~np.isnan(kb).any(1)
    pa, pb = (ka[m], kb[m]) if points is None else points
    f = lambda v: ";".join(f"{x:g}" for x in v)
    return [rel(a), rel(b), str(cid), f(pa[:, 0]), f(pa[:, 1]), f(pb[:, 0]), f(pb[:, 1])]


@pytest.fixture
def pf_root(tmp_path):
    root = tmp_path / "PF-dataset-PASCAL"
    for (cat, stem), (size, kps, box) in PF_MATS.items():
        _jpeg(root / "JPEGImages" / f"{stem}.jpg", size)
        (root / "Annotations" / cat).mkdir(parents=True, exist_ok=True)
        d = {"kps": np.array(kps, dtype=np.float64)}
        if box is not None:
            d["bbox"] = np.array([box], dtype=np.float64)
        savemat(root / "Annotations" / cat / f"{stem}.mat", d)
    hdr = ["source_image", "target_image", "class", "XA", "YA", "XB", "YB"]
    rows = [_pf_row("cat", "2009_000001", "2009_000002"),
            _pf_row("cat", "2009_000001", "2009_000003"),      # no shared keypoint
            _pf_row("dog", "2009_000011", "2009_000010"),
            _pf_row("cat", "2009_000003", "2009_000002")]
    for split, rr in (("test", rows), ("val", rows[:1])):
        with open(root / f"{split}_pairs_pf_pascal.csv", "w", newline="") as fh:
            csv.writer(fh).writerows([hdr, *rr])
    with open(root / "train_pairs_pf_pascal.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["source_image", "target_image", "class", "flip"],
                                  _pf_row("dog", "2009_000010", "2009_000011", False)])
    return root


def test_pfpascal_pairs_field_by_field(pf_root):
    ds = load_dataset("pfpascal", pf_root)
    assert ds.categories == list(T.PFPASCAL_CLASSES) and len(ds.categories) == 20
    assert ds.keypoint_names("cat") == tuple(f"keypoint {i}" for i in range(5))
    assert ds.flip_perm("dog").tolist() == [0, 1, 2]
    pairs = ds.pairs("test")
    assert [p.pair_id for p in pairs] == ["2009_000001-2009_000002:cat",
                                          "2009_000003-2009_000002:cat",
                                          "2009_000011-2009_000010:dog"]
    assert ds.skipped.count == 1 and ds.skipped.reasons[0][0] == "2009_000001-2009_000003:cat"
    for p in pairs:
        assert p.meta["kp_index"] == "annotation"
        for rec, stem in ((p.src, p.pair_id.split("-")[0]),
                          (p.trg, p.pair_id.split("-")[1].split(":")[0])):
            size, kps, box = PF_MATS[p.category, stem]
            assert rec.path == pf_root / "JPEGImages" / f"{stem}.jpg"
            assert rec.size == size and rec.key == f"{p.category}/{stem}"
            assert _nan_rows_equal(rec.keypoints, kps)
            assert rec.visible.tolist() == (~np.isnan(np.array(kps)).any(1)).tolist()
            assert rec.bbox.tolist() == (box if box is not None else [0, 0, *size])
            assert rec.mask_path is None
    assert pairs[0].mutual_visible.tolist() == [True, False, True, False, False]
    tr = ds.pairs("train")
    assert len(tr) == 1 and tr[0].category == "dog" and tr[0].split == "train"
    assert tr[0].meta["flip"] == "0"
    assert _nan_rows_equal(tr[0].trg.keypoints, PF_MATS["dog", "2009_000011"][1])
    assert [r.key for r in ds.images("test", categories=["cat"])] == [
        "cat/2009_000001", "cat/2009_000002", "cat/2009_000003"]
    assert [p.pair_id for p in ds.pairs("val")] == ["2009_000001-2009_000002:cat"]


def test_pfpascal_user_tables(pf_root):
    ds = load_dataset("pfpascal", pf_root, keypoint_names={"dog": ["l", "r", "c"]},
                      flip_pairs={"dog": [(0, 1)]})
    assert ds.keypoint_names("dog") == ("l", "r", "c")
    assert ds.flip_perm("dog").tolist() == [1, 0, 2]
    p, = ds.pairs("test", categories="dog")
    assert p.keypoint_names == ("l", "r", "c") and p.flip_perm.tolist() == [1, 0, 2]
    with pytest.raises(ValueError, match="3 keypoints"):
        load_dataset("pfpascal", pf_root, keypoint_names={"dog": ["a"]}).keypoint_names("dog")
    with pytest.raises(ValueError, match="flip_pairs"):
        load_dataset("pfpascal", pf_root, flip_pairs={"unicorn": []})


def test_pfpascal_csv_points_and_mismatch(pf_root):
    # csv coordinates are the protocol's: they replace the .mat rows
    pts = (np.array([[1.5, 2.5], [10.5, 11.0]]), np.array([[3.25, 4.0], [12.0, 13.5]]))
    row = _pf_row("cat", "2009_000001", "2009_000002", points=pts)
    hdr = ["source_image", "target_image", "class", "XA", "YA", "XB", "YB"]
    with open(pf_root / "test_pairs_pf_pascal.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([hdr, row])
    p, = load_dataset("pfpascal", pf_root).pairs("test")
    assert p.src.keypoints[[0, 2]].tolist() == pts[0].tolist()
    assert p.trg.keypoints[[0, 2]].tolist() == pts[1].tolist()
    assert p.src.keypoints[3].tolist() == [20, 21]   # src-only keypoint stays
    # points that disagree with the .mat files: kept in csv order, with a warning
    bad = (np.array([[50.0, 2.0]]), np.array([[1.0, 1.0]]))
    with open(pf_root / "test_pairs_pf_pascal.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([hdr, _pf_row("cat", "2009_000001", "2009_000002", points=bad)])
    with pytest.warns(RuntimeWarning, match="csv order"):
        p, = load_dataset("pfpascal", pf_root).pairs("test")
    assert p.meta["kp_index"] == "csv-order"
    assert p.src.visible.tolist() == [True, False, False, False, False]
    assert p.src.keypoints[0].tolist() == [50, 2] and p.trg.keypoints[0].tolist() == [1, 1]


def test_pfpascal_errors(pf_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="test_pairs_pf_pascal.csv"):
        load_dataset("pfpascal", tmp_path).pairs("test")
    hdr = ["source_image", "target_image", "class", "XA", "YA", "XB", "YB"]
    csvp = pf_root / "test_pairs_pf_pascal.csv"
    for row, msg in ((["a.jpg", "b.jpg", "99", "1", "1", "1", "1"], "class id 99"),
                     (["a.jpg", "b.jpg", "8", "1;x", "1", "1", "1"], "XA"),
                     (["a.jpg", "b.jpg", "8", "1;2", "1", "1", "1"], "same length"),
                     (["a.jpg", "b.jpg"], "columns")):
        with open(csvp, "w", newline="") as fh:
            csv.writer(fh).writerows([hdr, row])
        with pytest.raises(ValueError, match=msg) as ei:
            load_dataset("pfpascal", pf_root).pairs("test")
        assert "test_pairs_pf_pascal.csv" in str(ei.value)
    with open(csvp, "w", newline="") as fh:
        csv.writer(fh).writerows([hdr, _pf_row("cat", "2009_000001", "2009_000002")])
    mat = pf_root / "Annotations" / "cat" / "2009_000002.mat"
    savemat(mat, {"points": np.zeros((2, 2))})
    with pytest.raises(ValueError, match=r"2009_000002\.mat.*'kps'"):
        load_dataset("pfpascal", pf_root).pairs("test")
    mat.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"2009_000002\.mat"):
        load_dataset("pfpascal", pf_root).pairs("test")
    mat.unlink()
    (pf_root / "JPEGImages" / "2009_000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="2009_000001.jpg"):
        load_dataset("pfpascal", pf_root).pairs("test")


# ===========================================================================
# AP-10K
# ===========================================================================

AP_IMAGES = {  # (family, species, id): (size, bbox ltwh, {kp: (x, y, v)})
    ("Felidae", "cat", "000000000001"): ((50, 40), [2, 3, 40, 30], {0: (5, 6, 2), 2: (8, 9, 2), 5: (20, 21, 2), 16: (30, 31, 1)}),  # v=1: labelled, counts as visible
    ("Felidae", "cat", "000000000002"): ((60, 45), [1, 1, 50, 40], {0: (7, 7, 2), 2: (9, 9, 2), 8: (25, 26, 2)}),
    ("Felidae", "lion", "000000000003"): ((64, 48), [0, 0, 60, 44], {2: (10, 10, 2), 5: (11, 12, 2), 10: (3, 4, 2), 16: (40, 41, 2)}),
    ("Canidae", "dog", "000000000004"): ((40, 40), [5, 5, 30, 30], {1: (4, 4, 2), 3: (6, 6, 2), 10: (9, 9, 2)}),
}


def _ap_rel(fam, sp, i):
    return f"data/ap-10k/ImageAnnotation/{fam}/{sp}/{i}.json"


@pytest.fixture
def ap_root(tmp_path):
    root = tmp_path / "ap-10k"
    for (fam, sp, i), (size, box, kps) in AP_IMAGES.items():
        _jpeg(root / "JPEGImages" / fam / sp / f"{i}.jpg", size)
        flat = []
        for k in range(17):
            flat += list(kps.get(k, (0, 0, 0)))
        _json(root / "ImageAnnotation" / fam / sp / f"{i}.json",
              {"id": int(i), "image_id": int(i), "keypoints": flat, "bbox": box,
               "num_keypoints": len(kps), "width": size[0], "height": size[1],
               "file_name": f"{i}.jpg", "name": sp, "supercategory": fam})
    pairs = {
        "trn": [("Felidae", "cat", "000000000001", "Felidae", "cat", "000000000002", "cat")],
        "test": [("Felidae", "cat", "000000000002", "Felidae", "cat", "000000000001", "cat")],
        "test_cross_species": [("Felidae", "cat", "000000000001", "Felidae", "lion", "000000000003", "Felidae")],
        "test_cross_family": [("Felidae", "lion", "000000000003", "Canidae", "dog", "000000000004", "all"),
                              ("Felidae", "cat", "000000000001", "Canidae", "dog", "000000000004", "all")],
    }
    for split, rows in pairs.items():
        for f1, s1, i1, f2, s2, i2, cat in rows:
            _json(root / "PairAnnotation" / split / f"{i1}-{i2}:{cat}.json",
                  {"src_json_path": _ap_rel(f1, s1, i1), "trg_json_path": _ap_rel(f2, s2, i2)})
    return root


def _check_ap_record(rec, root, fam, sp, i):
    size, (l, t, w, h), kps = AP_IMAGES[fam, sp, i]
    assert rec.dataset == "ap10k" and rec.category == sp
    assert rec.key == f"{fam}/{sp}/{i}"
    assert rec.path == root / "JPEGImages" / fam / sp / f"{i}.jpg"
    assert rec.size == size
    assert rec.bbox.tolist() == [l, t, l + w, t + h]
    exp = np.full((17, 2), np.nan)
    for k, (x, y, _) in kps.items():
        exp[k] = (x, y)
    assert _nan_rows_equal(rec.keypoints, exp)
    assert rec.visible.tolist() == [k in kps for k in range(17)]


def test_ap10k_split_kinds(ap_root):
    ds = load_dataset("ap10k", ap_root)
    assert ds.categories == ["cat", "dog", "lion"]
    assert ds.keypoint_names("lion") == T.AP10K_KEYPOINT_NAMES
    assert ds.flip_perm("cat").tolist() == T.flip_permutation(17, T.AP10K_LR_PAIRS).tolist()
    p, = ds.pairs("test")
    assert (p.pair_id, p.category, p.split) == ("000000000002-000000000001:cat", "cat", "test")
    _check_ap_record(p.src, ap_root, "Felidae", "cat", "000000000002")
    _check_ap_record(p.trg, ap_root, "Felidae", "cat", "000000000001")
    assert p.mutual_visible.tolist() == [k in (0, 2) for k in range(17)]
    assert [q.pair_id for q in ds.pairs("train")] == ["000000000001-000000000002:cat"]
    assert ds.pairs("test", categories=["lion"]) == []

    cs = load_dataset("ap10k", ap_root, split_kind="cross-species")
    assert cs.categories == ["Felidae"] and cs.splits == ("val", "test")
    p, = cs.pairs("test")
    assert p.category == "Felidae" and p.src.category == "cat" and p.trg.category == "lion"
    assert p.meta["src_species"] == "cat" and p.meta["trg_species"] == "lion"
    _check_ap_record(p.trg, ap_root, "Felidae", "lion", "000000000003")

    cf = load_dataset("ap10k", ap_root, split_kind="cross-family")
    assert cf.categories == ["all"]
    pairs = cf.pairs("test")
    # cat 1 vs dog 4 share no visible keypoint
    assert [q.pair_id for q in pairs] == ["000000000003-000000000004:all"]
    assert cf.skipped.count == 1 and cf.skipped.reasons[0][0] == "000000000001-000000000004:all"
    assert pairs[0].meta["trg_family"] == "Canidae"
    assert [r.key for r in cf.images("test")] == [
        "Canidae/dog/000000000004", "Felidae/cat/000000000001", "Felidae/lion/000000000003"]
    with pytest.raises(ValueError, match="unknown split 'trn'"):
        cf.pairs("trn")
    with pytest.raises(ValueError, match="split_kind"):
        load_dataset("ap10k", ap_root, split_kind="cross-genus")


def test_ap10k_errors(ap_root):
    ann = ap_root / "ImageAnnotation" / "Felidae" / "cat" / "000000000002.json"
    data = json.loads(ann.read_text())
    data["keypoints"] = data["keypoints"][:-3]
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"000000000002\.json.*'keypoints'.*51"):
        load_dataset("ap10k", ap_root).pairs("test")
    del data["keypoints"]
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="missing field 'keypoints'"):
        load_dataset("ap10k", ap_root).pairs("test")
    ann.unlink()
    with pytest.raises(FileNotFoundError, match=r"000000000002\.json"):
        load_dataset("ap10k", ap_root).pairs("test")
    pair = ap_root / "PairAnnotation" / "trn" / "000000000001-000000000002:cat.json"
    pair.write_text(json.dumps({"src_json_path": 3}))
    with pytest.raises(ValueError, match="src_json_path"):
        load_dataset("ap10k", ap_root).pairs("trn")
    with pytest.raises(FileNotFoundError, match="val"):
        load_dataset("ap10k", ap_root).pairs("val")


# ===========================================================================
# CUB-200-2011
# ===========================================================================

CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
# image id: (class id, train?, size, bbox xywh, {part id: (x, y, visible)})
CUB_IMAGES = {
    1: (1, 0, (50, 40), (1, 2, 40, 30), {1: (5, 5, 1), 7: (10, 11, 1), 11: (12, 13, 1), 9: (60, 5, 1)}),
    2: (1, 0, (60, 40), (0, 0, 50, 35), {1: (6, 6, 1), 7: (14, 15, 1), 14: (30, 20, 1)}),
    3: (1, 0, (40, 40), (3, 3, 30, 30), {2: (8, 8, 1), 13: (20, 20, 1)}),
    4: (1, 1, (40, 30), (2, 2, 30, 20), {1: (3, 3, 1)}),
    5: (2, 0, (45, 45), (5, 5, 35, 35), {4: (9, 9, 1), 15: (10, 12, 1)}),
    6: (2, 0, (45, 40), (4, 4, 30, 30), {4: (7, 8, 1)}),
    7: (2, 1, (30, 30), (1, 1, 20, 20), {4: (5, 5, 1)}),
}


def _cub_rel(iid):
    cls = CUB_CLASSES[CUB_IMAGES[iid][0] - 1]
    return f"{cls}/{cls.split('.')[1]}_{iid:04d}.jpg"


@pytest.fixture
def cub_root(tmp_path):
    root = tmp_path / "CUB_200_2011"
    root.mkdir()
    (root / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CUB_CLASSES)))
    lines = {"images.txt": [], "image_class_labels.txt": [], "train_test_split.txt": [],
             "bounding_boxes.txt": [], "parts/part_locs.txt": []}
    for iid, (cid, tr, size, box, parts) in CUB_IMAGES.items():
        _jpeg(root / "images" / _cub_rel(iid), size)
        lines["images.txt"].append(f"{iid} {_cub_rel(iid)}")
        lines["image_class_labels.txt"].append(f"{iid} {cid}")
        lines["train_test_split.txt"].append(f"{iid} {tr}")
        lines["bounding_boxes.txt"].append(f"{iid} " + " ".join(f"{v:.1f}" for v in box))
        for pid in range(1, 16):
            x, y, v = parts.get(pid, (0, 0, 0))
            lines["parts/part_locs.txt"].append(f"{iid} {pid} {x:.1f} {y:.1f} {v}")
    (root / "parts").mkdir()
    (root / "parts" / "parts.txt").write_text(
        "".join(f"{i + 1} {n}\n" for i, n in enumerate(T.CUB_PART_NAMES)))
    for name, ls in lines.items():
        (root / name).write_text("\n".join(ls) + "\n")
    seg = root / "segmentations" / _cub_rel(2).replace(".jpg", ".png")
    seg.parent.mkdir(parents=True)
    Image.new("L", (60, 40), 255).save(seg)
    return root


def test_cub_records_and_pairs(cub_root):
    ds = load_dataset("cub", cub_root, pairs_per_species=None)
    assert ds.categories == CUB_CLASSES and set(ds.splits) == {"train", "test"}
    assert ds.keypoint_names(CUB_CLASSES[0]) == T.CUB_PART_NAMES
    assert ds.flip_perm(CUB_CLASSES[1]).tolist() == [0, 1, 2, 3, 4, 5, 10, 11, 12, 9, 6, 7, 8, 13, 14]
    imgs = {r.key: r for r in ds.images("test")}
    assert sorted(imgs) == sorted(_cub_rel(i)[:-4] for i in (1, 2, 3, 5, 6))
    for iid in (1, 2, 3, 5, 6):
        cid, _, size, (x, y, w, h), parts = CUB_IMAGES[iid]
        r = imgs[_cub_rel(iid)[:-4]]
        assert r.dataset == "cub" and r.category == CUB_CLASSES[cid - 1]
        assert r.path == cub_root / "images" / _cub_rel(iid) and r.size == size
        assert r.bbox.tolist() == [x, y, x + w, y + h]
        # visible flag 1 and inside the image (part 9 of image 1 lies outside)
        vis = [pid in parts and parts[pid][0] <= size[0] for pid in range(1, 16)]
        assert r.visible.tolist() == vis
        exp = np.full((15, 2), np.nan)
        for pid, (px, py, _) in parts.items():
            if vis[pid - 1]:
                exp[pid - 1] = (px, py)
        assert _nan_rows_equal(r.keypoints, exp)
        seg = cub_root / "segmentations" / _cub_rel(iid).replace(".jpg", ".png")
        assert r.mask_path == (seg if seg.exists() else None)
    pairs = ds.pairs("test")
    # all ordered pairs of distinct images within each species: 3*2 + 2*1;
    # 1-3, 3-1, 2-3, 3-2 share no visible part
    # in order: by source image, then target image (row-major over the n x n grid)
    got = [(p.meta["src_image_id"], p.meta["trg_image_id"]) for p in pairs]
    assert got == [(1, 2), (2, 1), (5, 6), (6, 5)]
    assert ds.skipped.count == 4
    for p in pairs:
        assert p.src.category == p.trg.category == p.category
    assert ds.pairs("train") == []    # one training image per species


def test_cub_pair_drawing_is_seeded(cub_root):
    a = [p.pair_id for p in load_dataset("cub", cub_root, pairs_per_species=2).pairs("test")]
    b = [p.pair_id for p in load_dataset("cub", cub_root, pairs_per_species=2).pairs("test")]
    assert a == b
    ds = load_dataset("cub", cub_root, pairs_per_species=2, pair_seed=5)
    ds.pairs("test", categories=[CUB_CLASSES[0]])
    assert len(ds.pairs("test", categories=[CUB_CLASSES[0]])) + ds.skipped.count == 2
    with pytest.raises(ValueError, match="pairs_per_species"):
        load_dataset("cub", cub_root, pairs_per_species=0)


@pytest.mark.parametrize("seed", [0, 5, 11])
def test_cub_pair_drawing_follows_the_documented_rule(cub_root, seed):
    # The rule (geomatch/data/cub.py): the n(n-1) ordered pairs of distinct
    # images of a species, enumerated by source then target, of which
    # pairs_per_species are drawn without replacement by
    # numpy.random.default_rng([pair_seed, class id, 0 train / 1 test]),
    # kept in enumeration order; pairs sharing no visible part are skipped.
    ids = [1, 2, 3]                                   # CUB_CLASSES[0]'s test images
    ordered = [(a, b) for a in ids for b in ids if a != b]
    rng = np.random.default_rng([seed, 1, 1])
    flat = np.sort(rng.choice(len(ordered), size=2, replace=False))
    no_shared = {(1, 3), (3, 1), (2, 3), (3, 2)}
    expected = [ordered[f] for f in flat if ordered[f] not in no_shared]
    ds = load_dataset("cub", cub_root, pairs_per_species=2, pair_seed=seed)
    got = [(p.meta["src_image_id"], p.meta["trg_image_id"])
           for p in ds.pairs("test", categories=[CUB_CLASSES[0]])]
    assert got == expected


def test_cub_errors(cub_root):
    (cub_root / "bounding_boxes.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError, match=r"bounding_boxes\.txt.*line 1"):
        load_dataset("cub", cub_root).pairs("test")
    (cub_root / "bounding_boxes.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"bounding_boxes\.txt"):
        load_dataset("cub", cub_root).pairs("test")
    (cub_root / "classes.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"classes\.txt"):
        load_dataset("cub", cub_root)
