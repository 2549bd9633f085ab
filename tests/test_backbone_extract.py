"""Backbone preprocessing (GECO resize, GeoAware-SC pad, flips, coordinate
frames) and the ``geomatch extract`` command on a tiny SPair-71k tree."""
import json

import numpy as np
import pytest
from PIL import Image

from geomatch.backbone import DinoV2, DinoV2Config, load_dinov2
from geomatch.backbone.preprocess import make_frame, preprocess_image
from geomatch.data.cache import FeatureCache, grid_frame
from geomatch.cli import main

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _image(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_resize_mode_is_pil_bilinear_stretch_and_imagenet_normalization():
    arr = _image(50, 30)
    px, frame = preprocess_image(arr, "resize", 56)
    want = np.asarray(Image.fromarray(arr).resize((56, 56), Image.BILINEAR)) / 255.0
    np.testing.assert_allclose(px, (want - MEAN) / STD, atol=1e-5)
    assert px.dtype == np.float32 and frame.grid == (4, 4)
    np.testing.assert_allclose(frame.to_input([[50, 30], [0, 0]]), [[56, 56], [0, 0]])
    np.testing.assert_allclose(frame.to_input([25, 15]), [28, 28])


@pytest.mark.parametrize("w,h", [(60, 30), (30, 61), (45, 45)])
def test_pad_mode_matches_geoaware_convention(w, h):
    arr = _image(w, h, 1)
    s = 84
    px, frame = preprocess_image(arr, "pad", s)
    # GeoAware-SC: long side -> s, short side -> np.around(s * short / long),
    # Lanczos, centred at (s - short) // 2 on a black canvas
    if h <= w:
        nw, nh = s, int(np.around(s * h / w))
        ox, oy = 0, (s - nh) // 2
    else:
        nw, nh = int(np.around(s * w / h)), s
        ox, oy = (s - nw) // 2, 0
    canvas = np.zeros((s, s, 3), np.uint8)
    canvas[oy:oy + nh, ox:ox + nw] = np.asarray(Image.fromarray(arr).resize((nw, nh),
                                                                            Image.LANCZOS))
    np.testing.assert_allclose(px, (canvas / 255.0 - MEAN) / STD, atol=1e-5)
    # keypoints: uniform scale s / max(W, H) plus the paste offset
    k = s / max(w, h)
    np.testing.assert_allclose(frame.to_input([[3.0, 7.0]]), [[3 * k + ox, 7 * k + oy]])
    # the same convention as the feature cache's grid_frame
    x0, y0, fw, fh = grid_frame((w, h), {"preprocess": "pad", "resolution": [s, s]})
    np.testing.assert_allclose(frame.to_input([[x0, y0], [x0 + fw, y0 + fh]]),
                               [[0, 0], [s, s]], atol=1e-9)


def test_flip_and_roundtrip():
    arr = _image(40, 20, 2)
    px, frame = preprocess_image(arr, "pad", 56)
    pxf, framef = preprocess_image(arr, "pad", 56, flip=True)
    np.testing.assert_array_equal(pxf, px[:, ::-1])
    pts = np.array([[1.5, 2.0], [39.0, 19.0], [20.0, 10.0]])
    np.testing.assert_allclose(framef.to_input(pts)[:, 0], 56 - frame.to_input(pts)[:, 0])
    for f in (frame, framef, make_frame((40, 20), "resize", 42)):
        np.testing.assert_allclose(f.to_image(f.to_input(pts)), pts, atol=1e-12)
    assert framef.flip() == frame


def test_preprocess_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        preprocess_image(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match="preprocess mode"):
        preprocess_image(_image(10, 10), "crop")
    with pytest.raises(ValueError, match="multiple of 14"):
        preprocess_image(_image(10, 10), "resize", 50)
    with pytest.raises(ValueError, match="uint8"):
        preprocess_image(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="xy"):
        make_frame((10, 10)).to_input([1, 2, 3])


# ---------------------------------------------------------------------------
# geomatch extract on a tiny SPair-71k


SMALL = DinoV2Config(embed_dim=128, depth=2, num_heads=2, pos_grid=4)


def _random_state(cfg, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in cfg.expected_shapes().items():
        a = rng.standard_normal(shape) / np.sqrt(shape[-1])
        if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
            a = 1 + 0.1 * a
        out[name] = a.astype(np.float32)
    return out


def make_spair_tree(tmp_path):
    """A tiny SPair-71k tree under ``tmp_path`` (three images, two test pairs),
    in the real on-disk format; the ``spair`` fixture of conftest.py."""
    root = tmp_path / "SPair-71k"
    imgs = {("cat", "a1"): (40, 30), ("cat", "a2"): (30, 44), ("dog", "b1"): (50, 50)}
    for (cat, name), (w, h) in imgs.items():
        p = root / "JPEGImages" / cat / f"{name}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_image(w, h, len(name) + w)).save(p)
        ann = {"filename": f"{name}.jpg", "image_width": w, "image_height": h,
               "bndbox": [1, 1, w - 2, h - 2], "azimuth_id": 0,
               "kps": {str(i): ([5, 6] if i < 2 else None) for i in range(30)}}
        a = root / "ImageAnnotation" / cat / f"{name}.json"
        a.parent.mkdir(parents=True, exist_ok=True)
        a.write_text(json.dumps(ann))
    pairs = [("1", "cat", "a1", "a2"), ("2", "dog", "b1", "b1")]
    (root / "Layout" / "large").mkdir(parents=True)
    names = [f"{i}-{s}-{t}:{c}" for i, c, s, t in pairs]
    (root / "Layout" / "large" / "test.txt").write_text("\n".join(names))
    for (i, c, s, t), name in zip(pairs, names):
        ws, hs = imgs[c, s]
        wt, ht = imgs[c, t]
        d = {"pair_id": int(i), "src_imname": f"{s}.jpg", "trg_imname": f"{t}.jpg",
             "src_imsize": [ws, hs, 3], "trg_imsize": [wt, ht, 3],
             "src_bndbox": [1, 1, ws - 2, hs - 2], "trg_bndbox": [1, 1, wt - 2, ht - 2],
             "category": c, "kps_ids": [0, 1], "src_kps": [[5, 6], [5, 6]],
             "trg_kps": [[5, 6], [5, 6]], "mirror": 0, "viewpoint_variation": 0}
        p = root / "PairAnnotation" / "test" / f"{name}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(d))
    return root


def make_weights_file(tmp_path):
    """Random weights of the ``SMALL`` DINOv2 in a safetensors file under
    ``tmp_path``; the ``weights`` fixture of conftest.py."""
    from safetensors.numpy import save_file

    path = tmp_path / "small.safetensors"
    save_file(_random_state(SMALL), str(path))
    return path


def test_extract_cli_end_to_end(spair, weights, tmp_path, capsys):
    out = tmp_path / "cache"
    argv = ["--threads", "1", "extract", "--dataset", "spair", "--root", str(spair),
            "--weights", str(weights), "--out", str(out), "--preprocess", "pad",
            "--size", "112", "--split", "test"]
    assert main(argv) == 0
    assert "3 images featurized" in capsys.readouterr().out
    cache = FeatureCache.open(out)
    m = cache.manifest
    assert m["grid"] == [8, 8] and m["dim"] == 128 and m["preprocess"] == "pad"
    assert m["resolution"] == [112, 112] and m["dtype"] == "float32"
    assert len(m["weights_sha256"]) == 64
    assert sorted(cache.keys()) == ["cat/a1", "cat/a2", "dog/b1"]
    assert sorted(cache.keys(flipped=True)) == ["cat/a1", "cat/a2", "dog/b1"]
    model = load_dinov2(weights)
    img = spair / "JPEGImages" / "cat" / "a2.jpg"
    for flipped in (False, True):
        px, _ = preprocess_image(img, "pad", 112, flip=flipped)
        np.testing.assert_allclose(cache.get("cat/a2", flipped=flipped), model.features(px),
                                   rtol=1e-5, atol=1e-5)
    # resumable: nothing left to compute
    assert main(argv) == 0
    assert "0 images featurized" in capsys.readouterr().out
    # different settings are refused by the cache
    assert main(argv + ["--dtype", "float16"]) == 1
    assert "dtype" in capsys.readouterr().err


def test_extract_cli_errors(spair, weights, tmp_path, capsys):
    base = ["extract", "--dataset", "spair", "--root", str(spair), "--out",
            str(tmp_path / "c")]
    assert main(base + ["--weights", str(tmp_path / "absent.pth")]) == 1
    assert "absent.pth" in capsys.readouterr().err
    assert main(base + ["--weights", str(weights), "--model", "vitb14"]) == 1
    assert "weights do not match" in capsys.readouterr().err


def test_float16_cache_and_resize_default(spair, weights, tmp_path):
    from geomatch.backbone.extract import extract_features
    from geomatch.data import load_dataset

    recs = load_dataset("spair", spair).images("test")[:1]
    model = DinoV2(SMALL, _random_state(SMALL))
    res = extract_features(recs, model, tmp_path / "c16", dtype="float16", size=56,
                           flip=False, progress=False)
    assert res["computed"] == 1
    cache = FeatureCache.open(tmp_path / "c16")
    assert cache.get(recs[0].key).dtype == np.float16 and cache.shape == (4, 4, 128)
    assert not cache.has(recs[0].key, flipped=True)
