"""A head records the features it was trained on; evaluation refuses other
features unless forced (issue 14, item 5)."""
import hashlib
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from geomatch.data import load_dataset
from geomatch.data.cache import FeatureCache
from geomatch.eval.evaluate import evaluate
from geomatch.model.head import AttentionHead, HeadConfig, load_head
from geomatch.model.train import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MANIFEST = dict(backbone="dinov2_vitb14", weights_sha256="aa" * 32, resolution=[28, 28],
                preprocess="resize", grid=[2, 2], dim=4, dtype="float32")
CFG = HeadConfig(in_dim=4, dim=8, out_dim=6, num_heads=2, num_blocks=1, mlp_dim=16)


def _fill(path, manifest, ds, seed):
    rng = np.random.default_rng(seed)
    with FeatureCache.create(path, manifest) as c:
        for split in ("trn", "val", "test"):
            for rec in ds.images(split):
                c.put(rec.key, rng.standard_normal((2, 2, 4)).astype(np.float32))
                c.put(rec.key, rng.standard_normal((2, 2, 4)).astype(np.float32), flipped=True)
    return FeatureCache.open(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from geomatch.demo.synthetic import generate_spair_like

    d = tmp_path_factory.mktemp("fp")
    generate_spair_like(d / "spair", n_images_per_category=6, n_pairs=2, categories=["dog"],
                        size=(64, 48))
    ds = load_dataset("spair", d / "spair")
    a = _fill(d / "cache_a", MANIFEST, ds, 0)
    # the same backbone and dimension, other weights
    b = _fill(d / "cache_b", dict(MANIFEST, weights_sha256="bb" * 32), ds, 1)
    res = train(ds, a, d / "run", steps=1, batch_pairs=1, head_config=CFG, val_subset=0,
                progress=False)
    return d, ds, a, b, res


def test_trained_head_records_the_manifest_fingerprint(setup):
    d, ds, a, b, res = setup
    # every manifest field but geomatch_version, with the cache's default engine
    fields = dict(MANIFEST, engine="c")
    expected = hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":"))
                              .encode()).hexdigest()
    head = load_head(res.last_path)
    assert head.trained_on["fingerprint"] == expected
    assert head.trained_on["fields"]["weights_sha256"] == "aa" * 32
    # save/load keeps it
    head.save(d / "copy.npz")
    assert load_head(d / "copy.npz").trained_on["fingerprint"] == expected


def test_evaluation_refuses_other_features(setup):
    d, ds, a, b, res = setup
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(ds, "test", a, head=str(res.last_path), mode="grid-argmax", progress=False)
    with pytest.raises(ValueError) as ei:
        evaluate(ds, "test", b, head=str(res.last_path), mode="grid-argmax", progress=False)
    msg = str(ei.value)
    assert "weights_sha256" in msg and "aa" * 32 in msg and "bb" * 32 in msg
    assert str(res.last_path) in msg and "force" in msg
    # a loaded head object carries its record too
    with pytest.raises(ValueError, match="weights_sha256"):
        evaluate(ds, "test", b, head=load_head(res.last_path), mode="grid-argmax",
                 progress=False)
    with pytest.warns(UserWarning, match="weights_sha256"):
        r = evaluate(ds, "test", b, head=str(res.last_path), mode="grid-argmax",
                     progress=False, force=True)
    assert r.summary


def test_resume_on_other_features_refused(setup):
    d, ds, a, b, res = setup
    with pytest.raises(ValueError, match="weights_sha256"):
        train(ds, b, d / "run_b", steps=2, batch_pairs=1, head_config=CFG, val_subset=0,
              progress=False, resume=res.last_path)


def test_old_head_file_warns_untrained_head_does_not(setup):
    d, ds, a, b, res = setup
    fresh = d / "fresh.npz"
    AttentionHead(CFG, seed=0).save(fresh)
    z = dict(np.load(fresh))
    meta = json.loads(str(z["__meta__"]))
    assert meta["features"] is None          # never trained on a cache: nothing to check
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(ds, "test", a, head=str(fresh), mode="grid-argmax", progress=False)
    # a file as geomatch wrote it before heads recorded their features
    del meta["features"]
    z["__meta__"] = np.array(json.dumps(meta))
    old = d / "old.npz"
    np.savez(old, **z)
    with pytest.warns(UserWarning, match="does not record the features"):
        evaluate(ds, "test", a, head=str(old), mode="grid-argmax", progress=False)


def test_cli_force(setup):
    d, ds, a, b, res = setup
    env = dict(os.environ, PYTHONPATH=ROOT, GEOMATCH_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    base = [sys.executable, "-m", "geomatch", "eval", "--dataset", "spair", "--root",
            str(d / "spair"), "--cache", b.path, "--head", str(res.last_path),
            "--mode", "grid-argmax", "--no-progress"]
    r = subprocess.run(base + ["--out", str(d / "ev1")], capture_output=True, text=True,
                       timeout=180, env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "--force" in r.stderr
    r = subprocess.run(base + ["--out", str(d / "ev2"), "--force"], capture_output=True,
                       text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(d / "ev2" / "results.json")


def test_head_file_declaring_a_huge_array_is_refused_before_allocating(tmp_path):
    """A tiny .npz whose .npy header declares a 10 GB parameter: refused from
    the sizes, in a subprocess limited to 3 GB of address space."""
    import io
    import zipfile

    from memlimit import read_with_memory_limit

    path = tmp_path / "huge.npz"
    AttentionHead(CFG, seed=0).save(path)
    hdr = io.BytesIO()
    np.lib.format.write_array_header_1_0(hdr, {"descr": "<f4", "fortran_order": False,
                                               "shape": (50000, 50000)})
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("param/extra.npy", b"\x93NUMPY\x01\x00" + hdr.getvalue()[8:] + b"\0" * 64)
    out = read_with_memory_limit("geomatch.model.head.load_head", path)
    assert "VALUEERROR" in out and "huge.npz" in out, out
    assert "param/extra.npy" in out and "allocate" not in out, out


def test_protocol_evaluation_checks_the_head_too(setup):
    # the check sits before pair selection, so a protocol preset does not bypass it
    d, ds, a, b, res = setup
    with pytest.raises(ValueError, match="weights_sha256"):
        evaluate(ds, "test", b, protocol="geco", head=str(res.last_path), progress=False)
    with pytest.warns(UserWarning, match="weights_sha256"):
        r = evaluate(ds, "test", b, protocol="geco", head=str(res.last_path), progress=False,
                     force=True)
    assert r.config["options"]["mode"] == r.config["mode"]


def test_multi_dataset_training_refuses_caches_of_other_features(setup):
    # one head file records one set of features: caches of two datasets must agree
    d, ds, a, b, res = setup
    with pytest.raises(ValueError) as ei:
        train((ds, ds), (a, b), d / "run_ab", steps=1, batch_pairs=1, head_config=CFG,
              val_subset=0, progress=False)
    msg = str(ei.value)
    assert "weights_sha256" in msg and str(b.path) in msg and str(a.path) in msg
    r = train((ds, ds), (a, a), d / "run_aa", steps=1, batch_pairs=1, head_config=CFG,
              val_subset=0, progress=False)
    assert load_head(r.last_path).trained_on == load_head(res.last_path).trained_on
