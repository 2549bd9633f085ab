"""geomatch.demo.synthetic (SPair-71k-layout toy dataset) and the weight-free
LocalAppearanceFeaturizer."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geomatch.demo import synthetic as syn
from geomatch.data import tables
from geomatch.demo.featurizers import LocalAppearanceFeaturizer

SIZE = (160, 120)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("spair_like")
    return syn.generate_spair_like(root, n_images_per_category=8, n_pairs=6, seed=3,
                                   size=SIZE)


def all_files(root):
    return sorted(p.relative_to(root) for p in Path(root).rglob("*") if p.is_file())


def test_deterministic_for_a_seed(data, tmp_path):
    again = syn.generate_spair_like(tmp_path / "a", n_images_per_category=8, n_pairs=6,
                                    seed=3, size=SIZE)
    root = data["root"]
    assert all_files(root) == all_files(again["root"])
    for rel in all_files(root):
        assert (root / rel).read_bytes() == (again["root"] / rel).read_bytes(), rel
    other = syn.generate_spair_like(tmp_path / "b", n_images_per_category=8, n_pairs=6,
                                    seed=4, size=SIZE)
    name = data["images"]["car"][0]
    a = (root / "JPEGImages" / "car" / f"{name}.jpg").read_bytes()
    b = (other["root"] / "JPEGImages" / "car" / f"{name}.jpg").read_bytes()
    assert a != b


def test_layout_files_present(data):
    root = data["root"]
    for cat in syn.CATEGORIES:
        names = data["images"][cat]
        assert len(names) == 8
        for n in names:
            for sub, ext in (("JPEGImages", "jpg"), ("ImageAnnotation", "json"),
                             ("Segmentation", "png")):
                assert (root / sub / cat / f"{n}.{ext}").is_file()
    for split in ("trn", "val", "test"):
        listed = (root / "Layout" / "large" / f"{split}.txt").read_text().split()
        assert listed == data["pairs"][split] and len(listed) > 0
        files = sorted(p.stem for p in (root / "PairAnnotation" / split).glob("*.json"))
        assert files == sorted(listed)
        for name in listed:       # <id>-<src>-<trg>:<cat>
            head, cat = name.split(":")
            pid, src, trg = head.split("-")
            assert len(pid) == 6 and cat in syn.CATEGORIES and src != trg
    # splits use disjoint images
    used = {s: {n.split(":")[0].split("-")[i] for n in data["pairs"][s] for i in (1, 2)}
            for s in ("trn", "val", "test")}
    assert not used["trn"] & used["test"] and not used["trn"] & used["val"]
    assert not used["val"] & used["test"]


def test_image_annotation_fields(data):
    root = data["root"]
    for cat in syn.CATEGORIES:
        k = len(syn.keypoint_names(cat))
        for n in data["images"][cat]:
            ann = json.loads((root / "ImageAnnotation" / cat / f"{n}.json").read_text())
            assert ann["image_width"] == SIZE[0] and ann["image_height"] == SIZE[1]
            assert ann["category"] == cat and ann["filename"] == f"{n}.jpg"
            assert set(ann["kps"]) == {str(i) for i in range(30)}
            assert all(ann["kps"][str(i)] is None for i in range(k, 30))
            x1, y1, x2, y2 = ann["bndbox"]
            assert 0 <= x1 < x2 < SIZE[0] and 0 <= y1 < y2 < SIZE[1]
            assert ann["azimuth_id"] in range(8)
            for i in range(k):
                p = ann["kps"][str(i)]
                if p is not None:
                    assert len(p) == 2 and 0 <= p[0] < SIZE[0] and 0 <= p[1] < SIZE[1]
                    assert x1 <= p[0] <= x2 and y1 <= p[1] <= y2


def test_some_parts_occluded(data):
    root = data["root"]
    n_null = n_vis = 0
    for cat in syn.CATEGORIES:
        k = len(syn.keypoint_names(cat))
        for n in data["images"][cat]:
            ann = json.loads((root / "ImageAnnotation" / cat / f"{n}.json").read_text())
            vals = [ann["kps"][str(i)] for i in range(k)]
            n_null += sum(v is None for v in vals)
            n_vis += sum(v is not None for v in vals)
    assert n_null > 0 and n_vis > n_null / 3


def read_pair_like_geoaware(root, split, name):
    """An independent reader following GeoAware-SC's / GECO's SPair loaders:
    kps_ids as int strings, src_kps/trg_kps lists of [x, y], imsize [W, H, 3],
    bndbox [x1, y1, x2, y2], image kps read for keys "0".."29"."""
    pair = json.loads((root / "PairAnnotation" / split / f"{name}.json").read_text())
    cat = pair["category"]
    ids = [int(i) for i in pair["kps_ids"]]
    src_kps = np.asarray(pair["src_kps"], dtype=np.float32).reshape(-1, 2)
    trg_kps = np.asarray(pair["trg_kps"], dtype=np.float32).reshape(-1, 2)
    src_ann = json.loads((root / "ImageAnnotation" / cat /
                          pair["src_imname"].replace(".jpg", ".json")).read_text())
    full = np.zeros((30, 3), np.float32)
    for i in range(30):
        p = src_ann["kps"][str(i)]
        if p is not None:
            full[i] = (p[0], p[1], 1)
    return pair, ids, src_kps, trg_kps, full


def test_pair_annotation_fields(data):
    root = data["root"]
    for split in ("trn", "val", "test"):
        for name in data["pairs"][split]:
            pair, ids, sk, tk, full = read_pair_like_geoaware(root, split, name)
            cat = name.split(":")[1]
            assert pair["category"] == cat
            assert pair["src_imname"] == name.split(":")[0].split("-")[1] + ".jpg"
            assert pair["src_imsize"] == [SIZE[0], SIZE[1], 3]
            assert len(ids) == len(sk) == len(tk) >= 1
            assert all(isinstance(i, str) for i in pair["kps_ids"])
            for key in ("mirror", "viewpoint_variation", "scale_variation", "truncation",
                        "occlusion"):
                assert isinstance(pair[key], int)
            assert pair["mirror"] in (0, 1) and pair["viewpoint_variation"] in (0, 1, 2)
            # the pair lists exactly the keypoints visible in both images
            trg_ann = json.loads((root / "ImageAnnotation" / cat /
                                  pair["trg_imname"].replace(".jpg", ".json")).read_text())
            both = [i for i in range(30) if full[i, 2] and trg_ann["kps"][str(i)] is not None]
            assert ids == both
            np.testing.assert_array_equal(sk, full[ids, :2])
            assert pair["src_bndbox"] == json.loads(
                (root / "ImageAnnotation" / cat / pair["src_imname"].replace(".jpg", ".json"))
                .read_text())["bndbox"]


def test_images_and_masks_load(data):
    root = data["root"]
    for cat in syn.CATEGORIES:
        for n in data["images"][cat]:
            with Image.open(root / "JPEGImages" / cat / f"{n}.jpg") as im:
                assert im.mode == "RGB" and im.size == SIZE
            with Image.open(root / "Segmentation" / cat / f"{n}.png") as m:
                mask = np.asarray(m)
            assert mask.shape == (SIZE[1], SIZE[0]) and set(np.unique(mask)) <= {0, 255}
            ann = json.loads((root / "ImageAnnotation" / cat / f"{n}.json").read_text())
            ys, xs = np.nonzero(mask)
            assert [xs.min(), ys.min(), xs.max(), ys.max()] == ann["bndbox"]
            for i in range(len(syn.keypoint_names(cat))):    # visible kps lie on the object
                p = ann["kps"][str(i)]
                if p is not None:
                    assert mask[p[1], p[0]] == 255


def test_keypoint_tables():
    assert set(syn.CATEGORIES) <= set(tables.SPAIR_CATEGORIES)
    for cat in syn.CATEGORIES:
        names = syn.keypoint_names(cat)
        flip = syn.flip_permutation(cat)
        assert names == tables.SPAIR_KEYPOINT_NAMES[cat]
        assert flip.dtype == np.int64 and len(flip) == len(names) <= 30
        np.testing.assert_array_equal(flip, tables.flip_permutation(
            len(names), tables.SPAIR_LR_PAIRS[cat]))
        drawn = syn.drawn_keypoints(cat)
        assert len(drawn) >= 10
        # the toy models draw twins in pairs: a drawn part's twin is drawn
        assert set(flip[list(drawn)]) == set(drawn)
        assert sum(flip[i] != i for i in drawn) >= 6
    with pytest.raises(ValueError, match="category"):
        syn.keypoint_names("quadruped")


def test_only_drawn_keypoints_annotated(data):
    root = data["root"]
    for cat in syn.CATEGORIES:
        drawn = set(syn.drawn_keypoints(cat))
        seen = set()
        for n in data["images"][cat]:
            ann = json.loads((root / "ImageAnnotation" / cat / f"{n}.json").read_text())
            seen |= {int(k) for k, v in ann["kps"].items() if v is not None}
        assert seen <= drawn and len(seen) >= len(drawn) // 2


def test_read_by_the_spair_loader(data):
    from geomatch.data import load_dataset
    ds = load_dataset("spair", data["root"])
    assert sorted(ds.categories) == sorted(syn.CATEGORIES)
    for split in ("trn", "val", "test"):
        pairs = ds.pairs(split)
        assert len(pairs) == len(data["pairs"][split])
        for pr in pairs:
            pj = json.loads((data["root"] / "PairAnnotation" / split /
                             f"{pr.pair_id}.json").read_text())
            ids = [int(i) for i in pj["kps_ids"]]
            assert sorted(np.nonzero(pr.mutual_visible)[0].tolist()) == ids
            np.testing.assert_array_equal(pr.src.keypoints[ids], pj["src_kps"])
            np.testing.assert_array_equal(pr.trg.keypoints[ids], pj["trg_kps"])
            np.testing.assert_array_equal(pr.flip_perm, syn.flip_permutation(pr.category))
            assert pr.src.mask_path is not None and pr.src.size == SIZE


def test_keypoint_table_file(data):
    table = json.loads((data["root"] / "keypoints.json").read_text())
    for cat in syn.CATEGORIES:
        assert table[cat]["names"] == list(syn.keypoint_names(cat))
        assert table[cat]["flip"] == syn.flip_permutation(cat).tolist()


@pytest.mark.parametrize("kwargs, exc, word", [
    ({"n_images_per_category": 3}, ValueError, "n_images_per_category"),
    ({"n_pairs": 0}, ValueError, "n_pairs"),
    ({"size": (10, 10)}, ValueError, "size"),
    ({"size": "big"}, TypeError, "size"),
    ({"categories": ["horse"]}, ValueError, "category"),
])
def test_bad_arguments(tmp_path, kwargs, exc, word):
    with pytest.raises(exc, match=word):
        syn.generate_spair_like(tmp_path, **kwargs)


# ---- featurizer -------------------------------------------------------------

def test_featurizer_shape_dtype(data):
    f = LocalAppearanceFeaturizer(grid=(12, 16), patch=6)
    path = data["root"] / "JPEGImages" / "dog" / f"{data['images']['dog'][0]}.jpg"
    out = f(path)
    assert out.shape == (12, 16, f.dim) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, f(Image.open(path)), atol=0)
    # blocks are unit-norm (or zero)
    block = f.dim // 3
    norms = np.linalg.norm(out[..., :block], axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_featurizer_mirror_twins_identical(data):
    """Mirroring the image mirrors the descriptor grid, so the descriptor at a
    left part equals the one at the mirrored position in the mirrored image,
    where the drawing shows its (identically drawn) right twin."""
    f = LocalAppearanceFeaturizer(grid=(15, 20), patch=8)
    root = data["root"]
    checked = 0
    for cat in syn.CATEGORIES:
        flip = syn.flip_permutation(cat)
        for n in data["images"][cat][:4]:
            im = Image.open(root / "JPEGImages" / cat / f"{n}.jpg").resize(f.input_size)
            a = f(im)
            b = f(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
            np.testing.assert_allclose(b[:, ::-1], a, atol=1e-6)
            ann = json.loads((root / "ImageAnnotation" / cat / f"{n}.json").read_text())
            sx, sy = f.input_size[0] / SIZE[0], f.input_size[1] / SIZE[1]
            for k in np.nonzero(flip != np.arange(len(flip)))[0]:
                p = ann["kps"][str(k)]
                if p is None:
                    continue
                r, c = int(p[1] * sy) // f.patch, int(p[0] * sx) // f.patch
                np.testing.assert_allclose(a[r, c], b[r, f.grid[1] - 1 - c], atol=1e-6)
                checked += 1
    assert checked > 0


def test_featurizer_tells_parts_apart(data):
    """Sanity: descriptors are not constant -- different parts differ."""
    f = LocalAppearanceFeaturizer(grid=(15, 20), patch=8)
    out = f(np.asarray(Image.open(data["root"] / "JPEGImages" / "car" /
                                  f"{data['images']['car'][0]}.jpg")))
    flat = out.reshape(-1, out.shape[-1])
    assert np.unique(flat.round(4), axis=0).shape[0] > 20


@pytest.mark.parametrize("arg, exc, word", [
    ("/nonexistent/x.jpg", FileNotFoundError, "x.jpg"),
    (np.zeros((5, 5, 2)), ValueError, "image"),
    (np.full((8, 8, 3), np.nan), ValueError, "image"),
    (np.zeros((8, 8, 3), dtype=np.int32), TypeError, "image"),
    (42, TypeError, "image"),
])
def test_featurizer_bad_input(arg, exc, word):
    with pytest.raises(exc, match=word):
        LocalAppearanceFeaturizer(grid=(2, 2))(arg)


# Checked by the validation both featurizers share (grid, patch, radii).
COMMON_BAD_PARAMETERS = [
    ({"grid": (0, 3)}, ValueError, "grid"),
    ({"grid": 5}, TypeError, "grid"),
    ({"patch": 1}, ValueError, "patch"),
    ({"patch": 2.5}, TypeError, "patch"),
    ({"neighbourhoods": (0,)}, ValueError, "neighbourhoods"),
]


@pytest.mark.parametrize("kwargs, exc, word", COMMON_BAD_PARAMETERS + [
    ({"colour_bins": 0}, ValueError, "colour_bins"),
    ({"colour_bins": 257}, ValueError, "colour_bins"),
])
def test_featurizer_bad_parameters(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        LocalAppearanceFeaturizer(**kwargs)


# ---------------------------------------------------------------------------
# the 3-D world and the part-colour featurizer

from geomatch.demo import world as W  # noqa: E402
from geomatch.demo.featurizers import PartColourFeaturizer  # noqa: E402


def test_camera_rotation_conventions():
    """Azimuth 0 faces image-right showing the right side, 270 deg faces the
    camera; elevation tilts the near side down (written out independently)."""
    def cam(phi_deg, theta_deg=0.0):
        return W.Camera(math.radians(phi_deg), math.radians(theta_deg), 0.0, 10.0, 50.0, 50.0)

    fwd, up, right = np.eye(3)
    R = cam(0).rotation()
    np.testing.assert_allclose(R @ fwd, [1, 0, 0], atol=1e-12)     # nose to image-right
    np.testing.assert_allclose(R @ right, [0, 0, 1], atol=1e-12)   # right side to the camera
    R = cam(270).rotation()
    np.testing.assert_allclose(R @ fwd, [0, 0, 1], atol=1e-12)     # facing the camera
    np.testing.assert_allclose(R @ right, [-1, 0, 0], atol=1e-12)  # its right on the image left
    t = math.radians(30)
    R = cam(0, 30).rotation()
    np.testing.assert_allclose(R @ right, [0, -math.sin(t), math.cos(t)], atol=1e-12)
    np.testing.assert_allclose(R @ up, [0, math.cos(t), math.sin(t)], atol=1e-12)
    c = cam(0)
    px = c.to_pixels(np.array([1.0, 2.0]))
    np.testing.assert_allclose(px, [60.0, 30.0])                  # y grows downwards
    np.testing.assert_allclose(c.to_camera_plane(*px), [1.0, 2.0])


def test_render_marks_only_seen_parts_visible():
    rng = np.random.default_rng(0)
    n_vis = n_hidden = 0
    for i in range(12):
        out = W.render("dog", np.random.default_rng([5, i]), (128, 96))
        image, mask, kps, info = out
        assert image.shape == (96, 128, 3) and image.dtype == np.uint8
        assert mask.shape == (96, 128) and mask.any()
        x1, y1, x2, y2 = info["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max(), ys.max())
        assert set(kps) == set(W.PART_NAMES["dog"])
        for name, p in kps.items():
            if p is None:
                n_hidden += 1
                continue
            n_vis += 1
            assert 0 <= p[0] < 128 and 0 <= p[1] < 96
            assert mask[p[1], p[0]]           # on the object, not on background or occluder
        # facing the camera (within the spread), camera above
        d = (math.degrees(info["phi"]) - 270.0 + 180.0) % 360.0 - 180.0
        assert abs(d) <= W.AZIMUTH_SPREAD + 1e-9
        assert W.ELEVATION[0] <= math.degrees(info["theta"]) <= W.ELEVATION[1]
    del rng
    assert n_vis > 3 * n_hidden > 0       # most parts seen, some hidden


def test_rendered_right_twin_is_on_the_image_left_of_the_pair():
    """Facing the camera, a right part projects left of its left twin (the
    rule the head has to learn), checked on the annotations."""
    checked = 0
    for i in range(20):
        out = W.render("cat", np.random.default_rng([9, i]), (128, 96))
        _, _, kps, info = out
        for right, left in (("right eye", "left eye"), ("right ear", "left ear")):
            if kps[right] is not None and kps[left] is not None and abs(info["phi"] - 1.5 * math.pi) < 0.9:
                # roll is within 10 deg, so the order along x survives
                assert kps[right][0] <= kps[left][0] + 1
                checked += 1
    assert checked >= 5


def test_part_colour_featurizer_is_mirror_symmetric_and_finds_parts():
    f = PartColourFeaturizer(grid=(12, 16), patch=8)
    image, _, kps, _ = W.render("car", np.random.default_rng([1, 2]), f.input_size)
    a = f(image)
    b = f(np.ascontiguousarray(image[:, ::-1]))
    assert a.shape == (12, 16, f.dim) and a.dtype == np.float32
    np.testing.assert_allclose(b[:, ::-1], a, atol=1e-5)


def test_part_colour_features_find_the_part_or_its_twin():
    """Across two images of a category, the most similar target patch of a
    source keypoint's descriptor lies on that part or on its mirror twin for
    most keypoints."""
    f = PartColourFeaturizer(grid=(12, 16), patch=8)
    twin = {}
    for n in W.PART_NAMES["cat"]:
        other = n.replace("right", "@").replace("left", "right").replace("@", "left")
        twin[n] = other if other in W.PART_NAMES["cat"] else n
    hits = total = 0
    for i in range(6):
        _, _, ks, _ = src = W.render("cat", np.random.default_rng([3, i]), f.input_size)
        _, _, kt, _ = trg = W.render("cat", np.random.default_rng([4, i]), f.input_size)
        fs, ft = f(src[0]), f(trg[0])
        flat = ft.reshape(-1, f.dim)
        for n, p in ks.items():
            if p is None or kt[n] is None:
                continue
            j = int(np.argmax(flat @ fs[p[1] // 8, p[0] // 8]))
            r, c = divmod(j, 16)
            near = [q for q in (kt[n], kt[twin[n]]) if q is not None
                    and abs(q[1] // 8 - r) <= 1 and abs(q[0] // 8 - c) <= 1]
            hits += bool(near)
            total += 1
    assert total > 20 and hits >= 0.6 * total


@pytest.mark.parametrize("kwargs, exc, word", COMMON_BAD_PARAMETERS + [
    ({"prototypes": 1}, ValueError, "prototypes"),
    ({"prototypes": 9}, ValueError, "prototypes"),
    ({"sigma": 0.0}, ValueError, "sigma"),
    ({"sigma": float("nan")}, ValueError, "sigma"),
])
def test_part_colour_featurizer_bad_parameters(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        PartColourFeaturizer(**kwargs)


def test_model_rejects_unknown_category():
    with pytest.raises(ValueError, match="category"):
        W.model("horse")
