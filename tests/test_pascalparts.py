"""PASCAL-Part loader: tiny datasets written in the published .mat layout
(scipy.io.savemat), GECO's part tables, label maps and grid masks."""
import numpy as np
import pytest
from PIL import Image

sio = pytest.importorskip("scipy.io", reason="PASCAL-Part annotations are MATLAB files")

from geomatch.data import load_dataset  # noqa: E402
from geomatch.data.pascalparts import PascalParts, part_table  # noqa: E402
from geomatch.ops.resample import grid_to_image, image_to_grid, sample  # noqa: E402


# --------------------------------------------------------------------------
# writing the published format

def write_anno(path, imname, objects):
    """``anno`` struct: imname, objects(class, class_ind, mask, parts(part_name, mask))."""
    ob = np.zeros((1, len(objects)), dtype=[("class", "O"), ("class_ind", "O"),
                                            ("mask", "O"), ("parts", "O")])
    for i, (cls, mask, parts) in enumerate(objects):
        pa = np.zeros((1, len(parts)), dtype=[("part_name", "O"), ("mask", "O")])
        for j, (name, pm) in enumerate(parts):
            pa[0, j]["part_name"] = name
            pa[0, j]["mask"] = np.asarray(pm, dtype=np.uint8)
        ob[0, i]["class"] = cls
        ob[0, i]["class_ind"] = 1
        ob[0, i]["mask"] = np.asarray(mask, dtype=np.uint8)
        ob[0, i]["parts"] = pa
    sio.savemat(str(path), {"anno": {"imname": imname, "objects": ob}})


def make_root(tmp_path):
    root = tmp_path / "PASCAL-VOC"
    (root / "Parts" / "Annotations_Part").mkdir(parents=True)
    (root / "VOCdevkit" / "VOC2010" / "JPEGImages").mkdir(parents=True)
    return root


def add_image(root, name, objects, size, seed=0):
    w, h = size
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
        root / "VOCdevkit" / "VOC2010" / "JPEGImages" / f"{name}.jpg")
    write_anno(root / "Parts" / "Annotations_Part" / f"{name}.mat", name, objects)


def box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.fixture
def root(tmp_path):
    r = make_root(tmp_path)
    H, W = 12, 16
    obj = box(H, W, 2, 10, 2, 14)
    # bird: head overlaps leye (leye has the higher index and wins), object
    # pixels outside every part stay background
    add_image(r, "2008_000002", [("bird", obj, [("head", box(H, W, 2, 6, 2, 8)),
                                                ("leye", box(H, W, 3, 5, 3, 5)),
                                                ("torso", box(H, W, 6, 10, 2, 12))])], (W, H))
    # listed in reverse name order on purpose: the loader sorts names
    add_image(r, "2008_000001", [("bird", obj, [("torso", box(H, W, 2, 10, 2, 14))])], (W, H))
    # two objects: left out
    add_image(r, "2008_000003", [("bird", obj, []), ("cat", obj, [])], (W, H))
    # VOC's name of the dining table; a class without part definitions
    add_image(r, "2008_000004", [("diningtable", obj, [])], (W, H))
    # an object without annotated parts: empty foreground
    add_image(r, "2008_000005", [("cat", obj, [])], (W, H))
    return r


# --------------------------------------------------------------------------
# index and records

def test_index_single_object_images_sorted(root):
    ds = load_dataset("pascalparts", root)
    assert isinstance(ds, PascalParts)
    assert [r.key for r in ds.images("test", ["bird"])] == ["bird/2008_000001", "bird/2008_000002"]
    # GECO's split argument is unused: train and test are the same list
    assert [r.key for r in ds.images("train", ["bird"])] == ["bird/2008_000001",
                                                              "bird/2008_000002"]
    assert [r.key for r in ds.images("test", ["table"])] == ["table/2008_000004"]
    assert ds.multi_object_images == ["2008_000003"]
    rec = ds.images("test", ["bird"])[1]
    assert rec.size == (16, 12)
    assert rec.path == root / "VOCdevkit" / "VOC2010" / "JPEGImages" / "2008_000002.jpg"
    np.testing.assert_array_equal(rec.bbox, [2, 2, 13, 9])
    assert rec.num_keypoints == 0
    assert ds.pairs("test") == []
    keys = [r.key for r in ds.images_of_splits(["train", "test"])]
    assert len(keys) == len(set(keys)) == 4


# --------------------------------------------------------------------------
# part tables, checked against GECO's permutation lists (part2ind.py),
# transcribed here: 1-based index of each part's twin over indices 1..max.

def _geco_oriented(perm_1based, valid_indices):
    """GECO: PART_WITH_ORIENTATION = perm moves the part, restricted to valid parts."""
    perm = np.asarray(perm_1based) - 1
    moved = perm != np.arange(len(perm))
    return moved[np.asarray(sorted(valid_indices)) - 1]


def test_bird_table():
    t = part_table("bird")
    assert t.names == ("head", "leye", "reye", "beak", "torso", "neck", "lwing", "rwing",
                       "lleg", "lfoot", "rleg", "rfoot", "tail")
    geco_perm = [1, 3, 2, 4, 5, 6, 8, 7, 11, 12, 9, 10, 13]
    np.testing.assert_array_equal(t.oriented, _geco_oriented(geco_perm, range(1, 14)))
    np.testing.assert_array_equal(t.flip_perm, np.asarray(geco_perm) - 1)


def test_person_and_horse_tables():
    t = part_table("person")
    perm = list(range(1, 25))
    for a, b in [(2, 3), (4, 5), (6, 7), (13, 16), (14, 17), (15, 18), (19, 22), (20, 23),
                 (21, 24)]:
        perm[a - 1], perm[b - 1] = b, a
    np.testing.assert_array_equal(t.oriented, _geco_oriented(perm, range(1, 25)))
    assert t.names[t.flip_perm[t.names.index("lhand")]] == "rhand"
    h = part_table("horse")
    # indices 7, 8 (horns) are not horse parts: 17 body parts + 4 hoofs
    assert h.num_parts == 21 and "lhorn" not in h.names
    assert h.indices[-4:] == (30, 31, 32, 33)
    assert h.names[h.flip_perm[h.names.index("lfho")]] == "rfho"
    assert not h.oriented[h.names.index("torso")] and h.oriented[h.names.index("rbho")]


def test_geco_quirks_kept_for_the_geo_metrics():
    # train: GECO maps cfrontside_10 -> cbackside_10 but not back, so only
    # cfrontside_10 counts as oriented
    t = part_table("train")
    assert t.oriented[t.names.index("cfrontside_10")]
    assert not t.oriented[t.names.index("cbackside_10")]
    assert t.oriented[t.names.index("cbackside_9")] and t.oriented[t.names.index("hleftside")]
    # motorbike: GECO swaps headlight_1 and headlight_2
    m = part_table("motorbike")
    assert m.oriented[m.names.index("headlight_1")] and not m.oriented[
        m.names.index("headlight_3")]
    # cat: legs mirror left/right (GECO's permutation pairs leg and paw, the
    # oriented set is the same)
    c = part_table("cat")
    assert c.names[c.flip_perm[c.names.index("lfleg")]] == "rfleg"
    assert c.oriented.sum() == 12 and "muzzle" not in c.names
    assert "muzzle" in part_table("dog").names
    for cat in ("bottle", "pottedplant"):
        assert part_table(cat).num_parts == 2 and not part_table(cat).oriented.any()
    assert part_table("tvmonitor").names == ("screen",)
    for cat in ("boat", "chair", "table", "sofa"):
        t = part_table(cat)
        assert t.names == ("fg",) and not t.has_parts
    a = part_table("aeroplane")
    assert a.num_parts == 25 and a.names[5] == "engine_1" and a.indices[5] == 11
    assert part_table("car").num_parts == 9 + 10 + 10 + 10 + 20
    with pytest.raises(ValueError, match="diningtable"):
        part_table("diningtable")


# --------------------------------------------------------------------------
# label maps and grid masks

def test_part_labels(root):
    ds = PascalParts(root)
    rec = ds.images("test", ["bird"])[1]
    lab = ds.part_labels(rec)
    want = np.zeros((12, 16), np.int32)
    want[2:6, 2:8] = 1          # head
    want[6:10, 2:12] = 5        # torso
    want[3:5, 3:5] = 2          # leye over head
    np.testing.assert_array_equal(lab, want)
    # object without parts: all background; class without parts: the object mask
    cat = ds.images("test", ["cat"])[0]
    assert not ds.part_labels(cat).any()
    tab = ds.images("test", ["table"])[0]
    np.testing.assert_array_equal(ds.part_labels(tab), box(12, 16, 2, 10, 2, 14).astype(int))


def _torch_bilinear(x, size):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for interpolate")
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))[None]
    return torch.nn.functional.interpolate(t, size=size, mode="bilinear",
                                           align_corners=False)[0].numpy()


def test_grid_masks_match_torch_interpolate(root):
    ds = PascalParts(root)
    rec = ds.images("test", ["bird"])[1]
    lab = ds.part_labels(rec)
    onehot = np.stack([(lab == k + 1) for k in range(13)]).astype(np.float64)
    for grid in [(4, 4), (5, 7), (12, 16), (20, 30)]:
        got = ds.grid_part_scores(rec, grid)
        want = _torch_bilinear(onehot, grid).transpose(1, 2, 0)
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_resample_matches_torch():
    rng = np.random.default_rng(3)
    for n_in, n_out in [(4, 37), (37, 500), (9, 5), (6, 6), (1, 4)]:
        x = rng.standard_normal((1, n_in))
        want = _torch_bilinear(x[None], (1, n_out))[0, 0]
        np.testing.assert_allclose(grid_to_image(n_out, n_in).matrix() @ x[0], want,
                                   atol=1e-12)
        np.testing.assert_allclose(image_to_grid(n_out, n_in).matrix() @ x[0], want,
                                   atol=1e-12)
    # 2-D, whole grid and chosen pixels, several channels: PyTorch to rounding
    x = rng.standard_normal((5, 7, 3))
    want = _torch_bilinear(x.transpose(2, 0, 1), (23, 31)).transpose(1, 2, 0)
    ty, tx = grid_to_image(23, 5), grid_to_image(31, 7)
    np.testing.assert_allclose(sample(x, ty, tx), want, rtol=0, atol=1e-12)
    ys, xs = np.array([0, 22, 7]), np.array([30, 0, 11])
    np.testing.assert_allclose(sample(x, ty, tx, ys, xs), want[ys, xs], rtol=0, atol=1e-12)


def test_grid_masks_on_a_padded_frame():
    # 8x4 image (W x H) in a 4x4 grid covering the square [0, 8] x [-2, 6]:
    # grid rows 0 and 3 lie on the padding and must be empty
    from geomatch.data.pascalparts import soft_grid_masks

    lab = np.ones((4, 8), np.int32)
    soft = soft_grid_masks(lab, 1, (4, 4), (0.0, -2.0, 8.0, 8.0))
    np.testing.assert_allclose(soft[..., 0], [[0] * 4, [1] * 4, [1] * 4, [0] * 4])


# --------------------------------------------------------------------------
# bad input

def test_missing_folders_and_files(tmp_path, root):
    with pytest.raises(FileNotFoundError, match="Annotations_Part"):
        PascalParts(tmp_path)
    empty = make_root(tmp_path / "e")
    with pytest.raises(FileNotFoundError, match="no .mat file"):
        PascalParts(empty).images("test")
    ds = PascalParts(root)
    rec = ds.images("test", ["bird"])[0]
    (root / "Parts" / "Annotations_Part" / "2008_000001.mat").unlink()
    with pytest.raises(FileNotFoundError, match="2008_000001.mat"):
        ds.part_labels(rec)


def test_malformed_annotations(tmp_path):
    r = make_root(tmp_path)
    obj = box(6, 6, 1, 5, 1, 5)
    add_image(r, "a", [("bird", obj, [("wing", obj)])], (6, 6))
    ds = PascalParts(r)
    with pytest.raises(ValueError, match=r"a\.mat.*'wing'"):
        ds.part_labels(ds.images("test", ["bird"])[0])
    add_image(r, "b", [("unicorn", obj, [])], (6, 6))
    with pytest.raises(ValueError, match=r"b\.mat.*unicorn"):
        PascalParts(r).images("test")
    (r / "Parts" / "Annotations_Part" / "b.mat").write_bytes(b"not a mat file")
    with pytest.raises(ValueError, match=r"b\.mat"):
        PascalParts(r).images("test")


def test_resample_matrices_on_an_offset_frame():
    # 4-pixel image axis inside a 3-cell grid spanning [-2.5, 6.5]: pixel j's
    # centre sits at grid coordinate j / 3 + 0.5; cell i's centre at image
    # coordinate 3 i - 1.5 (cells 0 and 2 lie on padding)
    up = grid_to_image(4, 3, -2.5, 9.0).matrix()
    np.testing.assert_allclose(up, [[0.5, 0.5, 0], [1 / 6, 5 / 6, 0], [0, 5 / 6, 1 / 6],
                                    [0, 0.5, 0.5]], atol=1e-12)
    down = image_to_grid(3, 4, -2.5, 9.0).matrix()
    np.testing.assert_allclose(down, [[0, 0, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 0, 0]],
                               atol=1e-12)
    with pytest.raises(ValueError, match="n_grid"):
        image_to_grid(0, 4)
    with pytest.raises(ValueError, match="extent"):
        grid_to_image(4, 3, 0.0, -1.0)


# GECO's PART_PERMUTATION assignments (part2ind.py), as "PERM[a - 1] = b"
# pairs over indices 1..n, written out from the file for every category that
# has a permutation; PART_WITH_ORIENTATION = entries that differ from identity.
def _both(*pairs):
    return [p for a, b in pairs for p in ((a, b), (b, a))]


GECO_ASSIGNMENTS = {
    "aeroplane": (30, _both((3, 4))),
    "bicycle": (20, _both((1, 2))),
    "bottle": (2, []),
    "bus": (60, _both((1, 4), (2, 3), (6, 7), (8, 9))),
    "car": (60, _both((1, 4), (2, 3), (6, 7), (8, 9))),
    "cat": (17, _both((2, 3), (4, 5), (9, 10), (11, 12), (13, 15), (14, 16))),
    "dog": (18, _both((2, 3), (4, 5), (9, 10), (11, 12), (13, 15), (14, 16))),
    "cow": (19, _both((2, 3), (4, 5), (11, 13), (12, 14), (15, 17), (16, 18), (7, 8))),
    "sheep": (19, _both((2, 3), (4, 5), (11, 13), (12, 14), (15, 17), (16, 18), (7, 8))),
    "horse": (33, _both((2, 3), (4, 5), (11, 13), (12, 14), (15, 17), (16, 18), (30, 31),
                        (32, 33))),
    "motorbike": (20, _both((1, 2), (11, 12))),
    "pottedplant": (2, []),
    "train": (80, _both((2, 5), (3, 4)) + _both(*[(40 + k, 50 + k) for k in range(1, 11)])
              + _both(*[(30 + k, 60 + k) for k in range(1, 10)]) + [(40, 70)]),
}


@pytest.mark.parametrize("category", sorted(GECO_ASSIGNMENTS))
def test_oriented_parts_follow_gecos_permutations(category):
    n, assignments = GECO_ASSIGNMENTS[category]
    perm = list(range(1, n + 1))
    for a, b in assignments:
        perm[a - 1] = b
    t = part_table(category)
    assert max(t.indices) == n
    np.testing.assert_array_equal(t.oriented, _geco_oriented(perm, t.indices))
    # the twin table is an involution
    np.testing.assert_array_equal(t.flip_perm[t.flip_perm], np.arange(t.num_parts))
