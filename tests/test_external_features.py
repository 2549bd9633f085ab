"""Bring your own features: write_features and the GECO / GeoAware-SC importers.

The per-image files are written here the way those projects write them
(torch.save of a (1, D, h, w) tensor) with random values."""
import numpy as np
import pytest

import geomatch as gm
from geomatch.data.cache import FeatureCache


def test_write_features_from_any_source(tmp_path):
    rng = np.random.default_rng(0)
    maps = {f"cat/img{i}": rng.normal(size=(6, 6, 20)).astype(np.float32) for i in range(3)}
    manifest = gm.datasets.feature_manifest(backbone="my-model", dim=20, grid=(6, 6),
                                            preprocess="pad", resolution=(84, 84),
                                            dtype="float16", note="from my script")
    cache = gm.datasets.write_features(tmp_path / "c", maps, manifest)
    c = FeatureCache.open(cache.path)
    assert c.keys() == ["cat/img0", "cat/img1", "cat/img2"]
    m = c.manifest
    assert (m["backbone"], m["grid"], m["dim"], m["dtype"], m["preprocess"], m["note"]) == \
        ("my-model", [6, 6], 20, "float16", "pad", "from my script")
    np.testing.assert_array_equal(c.get("cat/img1"), maps["cat/img1"].astype(np.float16))
    # channel-first maps from an iterable, as the flipped images
    gm.datasets.write_features(tmp_path / "c", ((k, v.transpose(2, 0, 1)) for k, v in
                                                maps.items()), manifest, flipped=True,
                               layout="chw")
    np.testing.assert_array_equal(FeatureCache.open(cache.path).get("cat/img2", flipped=True),
                                  maps["cat/img2"].astype(np.float16))
    with pytest.raises(ValueError, match="looks channel-first"):
        gm.datasets.write_features(tmp_path / "c", {"x/y": np.zeros((20, 6, 6))}, manifest)
    with pytest.raises(ValueError, match="preprocess"):
        gm.datasets.feature_manifest(backbone="m", dim=4, grid=(2, 2), preprocess="crop")


def test_import_geco_and_geoaware_files(tmp_path):
    torch = pytest.importorskip("torch", reason="writing the files as GECO/GeoAware-SC do")
    g = torch.Generator().manual_seed(0)
    geco = tmp_path / "geco" / "spair" / "dinov2lora_518_upft1"
    geo = tmp_path / "SPair-71k" / "features"
    want = {}
    for cat, name in (("cat", "2008_000123"), ("dog", "2009_004567")):
        (geco / cat).mkdir(parents=True, exist_ok=True)
        (geo / cat).mkdir(parents=True, exist_ok=True)
        t = torch.randn(1, 32, 37, 37, generator=g)
        torch.save(t, geco / cat / f"{name}.pth")
        want[("geco", f"{cat}/{name}")] = t[0].permute(1, 2, 0).numpy()
        for suffix, flip in (("_dino", False), ("_dino_flip", True)):
            t = torch.randn(1, 24, 60, 60, generator=g)
            torch.save(t, geo / cat / f"{name}{suffix}.pt")
            want[("geo", f"{cat}/{name}", flip)] = t[0].permute(1, 2, 0).numpy()

    res = gm.datasets.import_geco_features(geco, tmp_path / "c_geco")
    assert (res["images"], res["flipped"], res["grid"], res["dim"]) == (2, 0, [37, 37], 32)
    c = FeatureCache.open(res["cache"])
    assert c.manifest["preprocess"] == "resize" and c.manifest["resolution"] == [518, 518]
    np.testing.assert_array_equal(c.get("cat/2008_000123"), want[("geco", "cat/2008_000123")])

    res = gm.datasets.import_geoaware_features(geo, tmp_path / "c_geo")
    assert (res["images"], res["flipped"], res["grid"], res["dim"]) == (2, 2, [60, 60], 24)
    c = FeatureCache.open(res["cache"])
    assert c.manifest["preprocess"] == "pad" and c.manifest["resolution"] == [840, 840]
    np.testing.assert_array_equal(c.get("dog/2009_004567"),
                                  want[("geo", "dog/2009_004567", False)])
    np.testing.assert_array_equal(c.get("dog/2009_004567", flipped=True),
                                  want[("geo", "dog/2009_004567", True)])

    with pytest.raises(ValueError, match="no GECO feature files"):
        gm.datasets.import_geco_features(tmp_path / "SPair-71k", tmp_path / "c3")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        gm.datasets.import_geoaware_features(tmp_path / "nowhere", tmp_path / "c4")


def test_a_failed_first_write_leaves_no_cache_behind(tmp_path):
    """QA: a refused first map left an empty cache with the wrong manifest, so
    the corrected call was refused with 'exists with a different manifest'."""
    wrong = gm.datasets.feature_manifest(backbone="mine", dim=64, grid=(8, 8),
                                         preprocess="resize", resolution=(112, 112))
    right = gm.datasets.feature_manifest(backbone="mine", dim=32, grid=(8, 8),
                                         preprocess="resize", resolution=(112, 112))
    maps = {"cat/a": np.ones((8, 8, 32), np.float32)}
    out = tmp_path / "cache"
    with pytest.raises(ValueError, match="cat/a"):
        gm.datasets.write_features(out, maps, wrong, progress=False)
    assert not out.exists()
    cache = gm.datasets.write_features(out, maps, right, progress=False)
    np.testing.assert_array_equal(cache.get("cat/a"), maps["cat/a"])
    # a cache that already held maps is kept as it is when a later write fails
    with pytest.raises(ValueError, match="cat/b"):
        gm.datasets.write_features(out, {"cat/b": np.ones((8, 8, 5), np.float32)}, right,
                                   progress=False)
    assert sorted(FeatureCache.open(out).keys()) == ["cat/a"]


def test_a_failed_import_leaves_no_cache_behind(tmp_path):
    torch = pytest.importorskip("torch", reason="GECO's feature files are torch files")
    src = tmp_path / "geco" / "cat"
    src.mkdir(parents=True)
    torch.save(torch.zeros(1, 16, 4, 4), src / "a.pth")
    torch.save(torch.zeros(1, 16, 4, 5), src / "b.pth")
    out = tmp_path / "cache"
    with pytest.raises(ValueError, match="b.pth"):
        gm.datasets.import_geco_features(tmp_path / "geco", out, progress=False)
    # a.pth was stored before b.pth failed: the partial cache stays, resumable
    assert sorted(FeatureCache.open(out).keys()) == ["cat/a"]
    # the first file is refused: no empty cache with its manifest is left
    torch.save(torch.full((1, 16, 4, 4), float("nan")), src / "a.pth")
    with pytest.raises(ValueError, match="a.pth"):
        gm.datasets.import_geco_features(tmp_path / "geco", tmp_path / "c2", progress=False)
    assert not (tmp_path / "c2").exists()
