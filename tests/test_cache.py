"""Tests of geomatch.data.cache: the on-disk feature cache and grid frames."""
import json
import os

import numpy as np
import pytest

from geomatch.data.cache import FeatureCache, filename_to_key, grid_frame, key_to_filename


def _manifest(**kw):
    m = dict(backbone="dinov2_vitb14", weights_sha256="ab" * 32, resolution=[518, 518],
             preprocess="resize", grid=[4, 3], dim=5, dtype="float16")
    m.update(kw)
    return m


def test_put_get_memmap_dtype_shape(tmp_path, rng):
    cache = FeatureCache.create(tmp_path / "c", _manifest())
    x = rng.standard_normal((4, 3, 5))
    cache.put("cat/img 1", x)
    cache.put("cat/img 1", -x, flipped=True)
    got = cache.get("cat/img 1")
    assert isinstance(got, np.memmap)
    assert got.dtype == np.float16 and got.shape == (4, 3, 5)
    assert not got.flags.writeable
    np.testing.assert_array_equal(got, x.astype(np.float16))
    np.testing.assert_array_equal(cache.get("cat/img 1", flipped=True), (-x).astype(np.float16))
    assert cache.has("cat/img 1") and cache.has("cat/img 1", flipped=True)
    assert not cache.has("cat/img 2")
    assert cache.keys() == ["cat/img 1"] and cache.keys(True) == ["cat/img 1"]
    with pytest.raises(KeyError, match="cat/img 2"):
        cache.get("cat/img 2")
    c32 = FeatureCache.create(tmp_path / "c32", _manifest(dtype="float32"))
    c32.put("a", x)
    assert c32.get("a").dtype == np.float32
    np.testing.assert_array_equal(c32.get("a"), x.astype(np.float32))


def test_put_validates(tmp_path):
    cache = FeatureCache.create(tmp_path / "c", _manifest())
    with pytest.raises(ValueError, match=r"shape \(4, 3, 5\)"):
        cache.put("a", np.zeros((3, 4, 5)))
    bad = np.zeros((4, 3, 5))
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        cache.put("a", bad)
    with pytest.raises(ValueError, match="non-finite"):      # overflows float16
        cache.put("a", np.full((4, 3, 5), 1e6))
    with pytest.raises(TypeError, match="features"):
        cache.put("a", np.zeros((4, 3, 5), dtype=bool))
    with pytest.raises(TypeError, match="key"):
        cache.put("", np.zeros((4, 3, 5)))
    assert cache.keys() == []


def test_key_file_names_are_reversible():
    for key in ["cat/2008_000123", "a b/c%d", ".hidden", "x@flip", "ü/ö"]:
        for flipped in (False, True):
            name = key_to_filename(key, flipped)
            assert "/" not in name and not name.startswith(".")
            assert filename_to_key(name) == (key, flipped)
    assert filename_to_key(".tmp-abc.npy") is None
    assert filename_to_key("index.json") is None


def test_leftover_tmp_file_ignored_and_index(tmp_path):
    cache = FeatureCache.create(tmp_path / "c", _manifest())
    cache.put("cat/a", np.ones((4, 3, 5)))
    # an interrupted writer leaves a temporary file behind
    with open(os.path.join(cache.path, "features", ".tmp-xyz.npy"), "wb") as f:
        f.write(b"\x93NUMPY garbage")
    cache.close()
    again = FeatureCache.open(tmp_path / "c")
    assert again.keys(None) == ["cat/a"]
    with open(tmp_path / "c" / "index.json") as f:
        idx = json.load(f)
    assert idx == {"entries": [{"key": "cat/a", "flipped": False}]}


def test_resume_same_manifest(tmp_path):
    m = _manifest()
    c1 = FeatureCache.create(tmp_path / "c", m)
    c1.put("k1", np.ones((4, 3, 5)))
    c2 = FeatureCache.create(tmp_path / "c", dict(m, geomatch_version="9.9"))
    assert c2.keys() == ["k1"]
    c2.put("k2", np.zeros((4, 3, 5)))
    assert sorted(FeatureCache.open(tmp_path / "c").keys()) == ["k1", "k2"]


def test_manifest_mismatch_lists_fields(tmp_path):
    FeatureCache.create(tmp_path / "c", _manifest())
    with pytest.raises(ValueError) as ei:
        FeatureCache.create(tmp_path / "c", _manifest(dim=6, preprocess="pad"))
    msg = str(ei.value)
    assert "dim" in msg and "preprocess" in msg and "backbone" not in msg
    assert str(tmp_path / "c") in msg


def test_manifest_validation(tmp_path):
    with pytest.raises(ValueError, match="missing fields"):
        FeatureCache.create(tmp_path / "a", {"backbone": "x"})
    with pytest.raises(ValueError, match="dtype"):
        FeatureCache.create(tmp_path / "b", _manifest(dtype="float64"))
    with pytest.raises(ValueError, match="grid"):
        FeatureCache.create(tmp_path / "c", _manifest(grid=[0, 3]))
    with pytest.raises(ValueError, match="square"):
        FeatureCache.create(tmp_path / "d", _manifest(preprocess="pad", resolution=[518, 700]))
    m = FeatureCache.create(tmp_path / "e", _manifest()).manifest
    assert m["grid"] == [4, 3] and m["resolution"] == [518, 518] and "geomatch_version" in m


def test_open_missing_path(tmp_path):
    p = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        FeatureCache.open(p)
    with pytest.raises(TypeError):
        FeatureCache(str(p), {})


def test_grid_frame_resize():
    assert grid_frame((640, 480), _manifest()) == (0.0, 0.0, 640.0, 480.0)


def test_grid_frame_pad_geoaware_convention():
    m = _manifest(preprocess="pad", resolution=[840, 840])
    # landscape 500x375: scale 840/500 = 1.68; new_h = round(630) = 630; offset (840-630)//2 = 105
    x0, y0, fw, fh = grid_frame((500, 375), m)
    assert (x0, fw, fh) == (0.0, 500.0, 500.0)
    assert y0 == pytest.approx(-105 / 1.68)
    # portrait 300x451: scale 840/451; new_w = round(558.76...) = 559; offset (840-559)//2 = 140
    x0, y0, fw, fh = grid_frame((300, 451), m)
    assert y0 == 0.0 and fw == fh == 451.0
    assert x0 == pytest.approx(-140 * 451 / 840)
    # a keypoint mapped by the GeoAware-SC formula (x*scale + off) lands where the frame says
    x, y = 123.0, 45.0
    u = (x - x0) / fw * 840
    assert u == pytest.approx(x * 840 / 451 + 140)
    v = (y - y0) / fh * 840
    assert v == pytest.approx(y * 840 / 451)
    # half-to-even rounding: 16x7 at S=8 -> 8*7/16 = 3.5 -> 4 (even), offset 2
    _, y0, _, _ = grid_frame((16, 7), _manifest(preprocess="pad", resolution=[8, 8]))
    assert y0 == pytest.approx(-2 / 0.5)
    # 16x5 at S=8 -> 2.5 -> 2, offset 3
    _, y0, _, _ = grid_frame((16, 5), _manifest(preprocess="pad", resolution=[8, 8]))
    assert y0 == pytest.approx(-3 / 0.5)
    assert grid_frame((64, 64), m) == (0.0, 0.0, 64.0, 64.0)
    with pytest.raises(ValueError, match="image_size"):
        grid_frame((0, 5), m)


@pytest.mark.parametrize("content", [b"junk", b"", b"\x93NUMPY\x01\x00"])
def test_a_damaged_feature_file_is_named(tmp_path, rng, content):
    """QA: a damaged entry gave numpy's 'This file contains pickled (object)
    data...' without the file."""
    cache = FeatureCache.create(tmp_path / "c", _manifest())
    cache.put("cat/a", rng.standard_normal((4, 3, 5)))
    fn = os.path.join(cache.path, "features", key_to_filename("cat/a"))
    assert os.path.isfile(fn)
    with open(fn, "wb") as f:
        f.write(content)
    with pytest.raises(ValueError) as ei:
        cache.get("cat/a")
    assert fn in str(ei.value) and "pickle" not in str(ei.value)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_read_is_get(tmp_path, rng, dtype):
    """read() gives get()'s values, into ``out`` when given, for every entry:
    the first through get()'s checks, later ones through the learnt header;
    a file with another (valid) header is read as well."""
    cache = FeatureCache.create(tmp_path / "c", _manifest(dtype=dtype))
    xs = {f"k{i}": rng.standard_normal((4, 3, 5)) for i in range(4)}
    for k, x in xs.items():
        cache.put(k, x)
        cache.put(k, -x, flipped=True)
    out = np.empty((4, 3, 5), dtype)
    for k in xs:
        for flipped in (False, True):
            ref = np.asarray(cache.get(k, flipped))
            got = cache.read(k, flipped)
            assert got.dtype == np.dtype(dtype) and got.flags.c_contiguous
            np.testing.assert_array_equal(got, ref)
            assert cache.read(k, flipped, out=out) is out
            np.testing.assert_array_equal(out, ref)
    assert cache._npy_header is not None
    # an entry written with a longer (version 2.0) header: not the learnt one
    with open(cache._file("k1", False), "wb") as f:
        np.lib.format.write_array(f, (2 * xs["k1"]).astype(dtype), version=(2, 0))
    np.testing.assert_array_equal(cache.read("k1"), (2 * xs["k1"]).astype(dtype))


def test_read_errors(tmp_path, rng):
    cache = FeatureCache.create(tmp_path / "c", _manifest())
    for k in ("a", "b"):
        cache.put(k, rng.standard_normal((4, 3, 5)))
    cache.read("a")
    with pytest.raises(KeyError, match="'zz'"):
        cache.read("zz")
    for bad in (np.empty((4, 3, 5), np.float32), np.empty((4, 3, 4), np.float16),
                np.empty((4, 3, 5, 2), np.float16)[..., 0], np.empty(60, np.float16), [0]):
        with pytest.raises(ValueError, match="out must be"):
            cache.read("a", out=bad)
    ro = np.empty((4, 3, 5), np.float16)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out must be"):
        cache.read("a", out=ro)
    fn = cache._file("b", False)                   # truncated after the header
    with open(fn, "rb") as f:
        data = f.read()
    with open(fn, "wb") as f:
        f.write(data[:-7])
    with pytest.raises(ValueError, match="damaged"):
        cache.read("b")
